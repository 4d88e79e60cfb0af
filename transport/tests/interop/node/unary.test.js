'use strict';
// The 15 unary VedDb RPCs, with their semantics, through @grpc/grpc-js.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  grpc,
  useServer,
  unary,
  expectStatus,
  eventually,
  uniquePrefix,
  b,
} = require('./helpers');

const ctx = useServer({ before, after });
const call = (method, request, options) => unary(ctx.db, method, request, options);
const big = (value) => BigInt(value);

test('Ping answers an empty PingResponse', async () => {
  const response = await call('Ping', {});
  assert.deepEqual(response, {});
});

test('Set then Get returns the value and the version of the write', async () => {
  const key = b(`${uniquePrefix('setget')}k`);
  const first = await call('Set', { key, value: b('one') });
  assert.equal(first.stored, true);
  assert.ok(big(first.version) > 0n, `version ${first.version}`);

  const got = await call('Get', { key });
  assert.deepEqual(got.value, b('one'));
  assert.equal(got.version, first.version);

  const second = await call('Set', { key, value: b('two') });
  assert.equal(second.stored, true);
  assert.ok(big(second.version) > big(first.version), `${second.version} > ${first.version}`);
  const got2 = await call('Get', { key });
  assert.deepEqual(got2.value, b('two'));
  assert.equal(got2.version, second.version);
});

test('binary keys and values (NUL, 0xFF, empty value) round-trip', async () => {
  const key = Buffer.concat([b(uniquePrefix('binary')), Buffer.from([0, 1, 0xfe, 0xff, 0])]);
  const value = Buffer.from([0, 0xff, 0x80, 0x7f, 0, 10, 13]);
  await call('Set', { key, value });
  assert.deepEqual((await call('Get', { key })).value, value);

  const emptyKey = b(`${uniquePrefix('binary')}empty-value`);
  const set = await call('Set', { key: emptyKey, value: Buffer.alloc(0) });
  assert.equal(set.stored, true);
  const got = await call('Get', { key: emptyKey });
  assert.equal(got.value.length, 0);
  assert.equal(got.version, set.version);
});

test('Set NX (IF_ABSENT) and XX (IF_PRESENT)', async () => {
  const prefix = uniquePrefix('nxxx');
  const key = b(`${prefix}k`);

  const xxAbsent = await call('Set', { key, value: b('x'), condition: 'SET_CONDITION_IF_PRESENT' });
  assert.equal(xxAbsent.stored, false);
  assert.equal(xxAbsent.version, '0');
  await expectStatus(call('Get', { key }), grpc.status.NOT_FOUND, 'Get after XX on absent key');

  const nxAbsent = await call('Set', { key, value: b('nx'), condition: 'SET_CONDITION_IF_ABSENT' });
  assert.equal(nxAbsent.stored, true);
  assert.ok(big(nxAbsent.version) > 0n);

  const nxPresent = await call('Set', { key, value: b('nx2'), condition: 'SET_CONDITION_IF_ABSENT' });
  assert.equal(nxPresent.stored, false);
  assert.equal(nxPresent.version, '0');
  assert.deepEqual((await call('Get', { key })).value, b('nx'));

  const xxPresent = await call('Set', { key, value: b('xx'), condition: 'SET_CONDITION_IF_PRESENT' });
  assert.equal(xxPresent.stored, true);
  assert.ok(big(xxPresent.version) > big(nxAbsent.version));
  const got = await call('Get', { key });
  assert.deepEqual(got.value, b('xx'));
  assert.equal(got.version, xxPresent.version);
});

test('Set with ttl_ms, Ttl, keep_ttl, and expiry', async () => {
  const prefix = uniquePrefix('ttl');
  const key = b(`${prefix}k`);

  assert.deepEqual(await call('Ttl', { key }), { exists: false, persistent: false, remaining_ms: '0' });

  await call('Set', { key, value: b('v') });
  assert.deepEqual(await call('Ttl', { key }), { exists: true, persistent: true, remaining_ms: '0' });

  await call('Set', { key, value: b('v'), ttl_ms: 600_000 });
  const ttl = await call('Ttl', { key });
  assert.equal(ttl.exists, true);
  assert.equal(ttl.persistent, false);
  assert.ok(big(ttl.remaining_ms) > 0n && big(ttl.remaining_ms) <= 600_000n, ttl.remaining_ms);

  // keep_ttl: a new value keeps the expiry; without it the expiry is cleared.
  await call('Set', { key, value: b('kept'), keep_ttl: true });
  const kept = await call('Ttl', { key });
  assert.equal(kept.persistent, false, 'keep_ttl kept the expiry');
  assert.ok(big(kept.remaining_ms) > 0n && big(kept.remaining_ms) <= 600_000n);
  assert.deepEqual((await call('Get', { key })).value, b('kept'));

  await call('Set', { key, value: b('cleared') });
  assert.equal((await call('Ttl', { key })).persistent, true, 'plain Set cleared the expiry');

  // A short TTL: the key disappears.
  const short = b(`${prefix}short`);
  await call('Set', { key: short, value: b('v'), ttl_ms: 150 });
  await eventually(async () => {
    try {
      await call('Get', { key: short });
      return false;
    } catch (error) {
      assert.equal(error.code, grpc.status.NOT_FOUND, error.details);
      return true;
    }
  }, 'the key with ttl_ms=150 expires');
  assert.deepEqual(await call('Ttl', { key: short }), { exists: false, persistent: false, remaining_ms: '0' });
});

test('Expire sets, removes (persist) and applies (ttl_ms 0) an expiry', async () => {
  const prefix = uniquePrefix('expire');
  const key = b(`${prefix}k`);

  assert.equal((await call('Expire', { key, ttl_ms: 10_000 })).applied, false, 'missing key');

  await call('Set', { key, value: b('v') });
  // persist on a key without expiry: nothing removed.
  assert.equal((await call('Expire', { key, persist: true })).applied, false, 'persist without expiry');

  assert.equal((await call('Expire', { key, ttl_ms: 600_000 })).applied, true);
  const ttl = await call('Ttl', { key });
  assert.equal(ttl.exists, true);
  assert.equal(ttl.persistent, false);
  assert.ok(big(ttl.remaining_ms) > 0n && big(ttl.remaining_ms) <= 600_000n);

  // persist removes the expiry (ttl_ms is ignored).
  assert.equal((await call('Expire', { key, ttl_ms: 1, persist: true })).applied, true);
  assert.deepEqual(await call('Ttl', { key }), { exists: true, persistent: true, remaining_ms: '0' });
  assert.deepEqual((await call('Get', { key })).value, b('v'));

  // ttl_ms 0 expires the key now.
  assert.equal((await call('Expire', { key, ttl_ms: 0 })).applied, true);
  await expectStatus(call('Get', { key }), grpc.status.NOT_FOUND, 'Get after Expire ttl_ms=0');
  assert.equal((await call('Ttl', { key })).exists, false);
});

test('Delete reports whether the key existed', async () => {
  const key = b(`${uniquePrefix('delete')}k`);
  assert.equal((await call('Delete', { key })).existed, false);
  await call('Set', { key, value: b('v') });
  assert.equal((await call('Delete', { key })).existed, true);
  assert.equal((await call('Delete', { key })).existed, false);
  await expectStatus(call('Get', { key }), grpc.status.NOT_FOUND, 'Get after Delete');
});

test('Exists reports whether the key exists (missing, set, deleted, expired)', async () => {
  const prefix = uniquePrefix('exists');
  const key = b(`${prefix}k`);
  assert.deepEqual(await call('Exists', { key }), { exists: false });
  await call('Set', { key, value: b('v') });
  assert.deepEqual(await call('Exists', { key }), { exists: true });
  assert.equal((await call('Delete', { key })).existed, true);
  assert.equal((await call('Exists', { key })).exists, false, 'deleted');
  await call('Set', { key, value: b('v'), ttl_ms: 300 });
  await eventually(async () => !(await call('Exists', { key })).exists, 'a 300 ms TTL expires');
  await expectStatus(call('Exists', { key: b('') }), grpc.status.INVALID_ARGUMENT, 'Exists of an empty key');
});

test('Cas: success, FAILED_PRECONDITION with the current version, expected 0, NOT_FOUND', async () => {
  const prefix = uniquePrefix('cas');
  const key = b(`${prefix}k`);

  // expected_version 0: only if absent.
  const created = await call('Cas', { key, expected_version: 0, value: b('v1') });
  assert.ok(big(created.version) > 0n);
  const got = await call('Get', { key });
  assert.deepEqual(got.value, b('v1'));
  assert.equal(got.version, created.version);

  // expected 0 on an existing key: mismatch.
  const exists = await expectStatus(
    call('Cas', { key, expected_version: 0, value: b('nope') }),
    grpc.status.FAILED_PRECONDITION,
    'Cas expected 0 on an existing key',
  );
  assert.equal(exists.details, `version mismatch: the current version is ${created.version}`);

  // The right version: stored, new version.
  const swapped = await call('Cas', { key, expected_version: created.version, value: b('v2') });
  assert.ok(big(swapped.version) > big(created.version));
  assert.deepEqual((await call('Get', { key })).value, b('v2'));

  // The stale version: FAILED_PRECONDITION naming the current one; value unchanged.
  const stale = await expectStatus(
    call('Cas', { key, expected_version: created.version, value: b('v3') }),
    grpc.status.FAILED_PRECONDITION,
    'Cas with a stale version',
  );
  assert.equal(stale.details, `version mismatch: the current version is ${swapped.version}`);
  const after = await call('Get', { key });
  assert.deepEqual(after.value, b('v2'));
  assert.equal(after.version, swapped.version);

  // A non-zero expected version on a missing key: NOT_FOUND.
  const missing = b(`${prefix}missing`);
  const notFound = await expectStatus(
    call('Cas', { key: missing, expected_version: 7, value: b('x') }),
    grpc.status.NOT_FOUND,
    'Cas on a missing key',
  );
  assert.equal(notFound.details, `key not found: ${prefix}missing`);

  // ttl_ms on Cas sets an expiry; ttl_ms 0 keeps the current one.
  const withTtl = await call('Cas', { key, expected_version: swapped.version, value: b('v4'), ttl_ms: 600_000 });
  assert.equal((await call('Ttl', { key })).persistent, false);
  await call('Cas', { key, expected_version: withTtl.version, value: b('v5') });
  const ttl = await call('Ttl', { key });
  assert.equal(ttl.persistent, false, 'Cas with ttl_ms 0 kept the expiry');
  assert.ok(big(ttl.remaining_ms) > 0n);
});

test('Incr: missing key counts as 0, negative deltas, INVALID_ARGUMENT on non-integers', async () => {
  const prefix = uniquePrefix('incr');
  const key = b(`${prefix}n`);

  const first = await call('Incr', { key, delta: 5 });
  assert.equal(first.value, '5');
  assert.ok(big(first.version) > 0n);
  const second = await call('Incr', { key, delta: -7 });
  assert.equal(second.value, '-2');
  assert.ok(big(second.version) > big(first.version));
  const got = await call('Get', { key });
  assert.deepEqual(got.value, b('-2'));
  assert.equal(got.version, second.version);

  // int64 beyond 2^53 travels exactly (longs as strings).
  const large = await call('Incr', { key, delta: '9007199254740993' });
  assert.equal(large.value, '9007199254740991');

  const text = b(`${prefix}text`);
  await call('Set', { key: text, value: b('not a number') });
  await expectStatus(call('Incr', { key: text, delta: 1 }), grpc.status.INVALID_ARGUMENT, 'Incr on text');
  assert.deepEqual((await call('Get', { key: text })).value, b('not a number'));

  const max = b(`${prefix}max`);
  await call('Set', { key: max, value: b('9223372036854775807') });
  await expectStatus(call('Incr', { key: max, delta: 1 }), grpc.status.INVALID_ARGUMENT, 'Incr overflow');
  assert.deepEqual((await call('Get', { key: max })).value, b('9223372036854775807'));
});

test('MSet then MGet of 200 keys (with missing keys in between)', async () => {
  const prefix = uniquePrefix('multi');
  const pairs = [];
  for (let i = 0; i < 200; i += 1) {
    pairs.push({ key: b(`${prefix}${String(i).padStart(3, '0')}`), value: b(`value-${i}-${'x'.repeat(i)}`) });
  }
  assert.deepEqual(await call('MSet', { pairs }), {});

  const keys = [];
  for (let i = 0; i < 200; i += 1) {
    keys.push(pairs[i].key);
    if (i % 50 === 0) keys.push(b(`${prefix}missing-${i}`));
  }
  const response = await call('MGet', { keys });
  assert.equal(response.values.length, keys.length);
  let p = 0;
  for (let i = 0; i < keys.length; i += 1) {
    const entry = response.values[i];
    if (keys[i].toString().includes('missing-')) {
      assert.equal(entry.found, false, `entry ${i}`);
      assert.equal(entry.value.length, 0);
      assert.equal(entry.version, '0');
    } else {
      assert.equal(entry.found, true, `entry ${i}`);
      assert.deepEqual(entry.value, pairs[p].value, `entry ${i}`);
      assert.ok(big(entry.version) > 0n);
      p += 1;
    }
  }
  assert.equal(p, 200);

  // The versions MGet reports are those Get reports.
  const one = await call('Get', { key: pairs[123].key });
  const again = await call('MGet', { keys: [pairs[123].key] });
  assert.equal(again.values[0].version, one.version);
});

test('Scan follows cursors over 200 keys with a prefix', async () => {
  const prefix = uniquePrefix('scan');
  const pairs = [];
  for (let i = 0; i < 200; i += 1) pairs.push({ key: b(`${prefix}a:${i}`), value: b(String(i)) });
  // Keys outside the scanned prefix.
  for (let i = 0; i < 20; i += 1) pairs.push({ key: b(`${prefix}b:${i}`), value: b(String(i)) });
  await call('MSet', { pairs });

  const scanPrefix = b(`${prefix}a:`);
  const seen = [];
  let cursor = Buffer.alloc(0);
  let pages = 0;
  do {
    const page = await call('Scan', { cursor, prefix: scanPrefix, count: 17 });
    pages += 1;
    assert.ok(pages < 1000, 'Scan did not finish within 1000 pages');
    assert.ok(page.keys.length <= 17, `page of ${page.keys.length} keys with count 17`);
    for (const key of page.keys) {
      assert.ok(key.subarray(0, scanPrefix.length).equals(scanPrefix), `key ${key} outside the prefix`);
      seen.push(key.toString('latin1'));
    }
    cursor = page.cursor;
  } while (cursor.length > 0);

  const expected = pairs.slice(0, 200).map((pair) => pair.key.toString('latin1')).sort();
  assert.equal(new Set(seen).size, seen.length, 'Scan returned a key twice');
  assert.deepEqual([...seen].sort(), expected);
  assert.ok(pages >= Math.ceil(200 / 17), `${pages} pages`);

  // A prefix nothing matches: no keys, done at once.
  const none = await call('Scan', { cursor: Buffer.alloc(0), prefix: b(`${prefix}zzz`), count: 10 });
  assert.deepEqual(none.keys, []);
  assert.equal(none.cursor.length, 0);
});

test('Publish without subscribers reaches 0 receivers', async () => {
  const response = await call('Publish', { topic: b(uniquePrefix('nobody')), message: b('hello') });
  assert.deepEqual(response, { receivers: 0 });
});

test('Info reports 2 shards', async () => {
  const prefix = uniquePrefix('info');
  const pairs = [];
  for (let i = 0; i < 50; i += 1) pairs.push({ key: b(`${prefix}${i}`), value: b('v') });
  await call('MSet', { pairs });

  const info = await call('Info', {});
  assert.equal(info.shards.length, 2);
  assert.deepEqual(info.shards.map((shard) => shard.shard).sort(), [0, 1]);
  let keys = 0n;
  for (const shard of info.shards) {
    assert.ok(big(shard.memory_bytes_limit) > 0n, `shard ${shard.shard} memory limit`);
    assert.ok(big(shard.memory_bytes_used) <= big(shard.memory_bytes_limit));
    assert.ok(big(shard.ops) > 0n, `shard ${shard.shard} ops`);
    keys += big(shard.keys);
  }
  assert.ok(keys >= 50n, `${keys} keys in all`);
});

test('Snapshot without --data-dir is FAILED_PRECONDITION naming --data-dir', async () => {
  // The test server runs without --data-dir: persistence is off.
  const key = b(`${uniquePrefix('snapshot')}k`);
  await call('Set', { key, value: b('v') });
  const error = await expectStatus(
    call('Snapshot', {}),
    grpc.status.FAILED_PRECONDITION,
    'Snapshot without --data-dir',
  );
  assert.ok(error.details.includes('--data-dir'), error.details);
  // Nothing changed; the server keeps serving.
  assert.deepEqual((await call('Get', { key })).value, b('v'));
});

test('NOT_FOUND for a non-ASCII key carries exactly that key in its details', async () => {
  const keyText = 'clé ☺ 😈';
  const error = await expectStatus(
    call('Get', { key: b(keyText) }),
    grpc.status.NOT_FOUND,
    'Get of a missing non-ASCII key',
  );
  assert.equal(error.details, `key not found: ${keyText}`);
  assert.ok(error.details.endsWith(keyText));
});

test('an empty key is INVALID_ARGUMENT', async () => {
  await expectStatus(call('Set', { key: Buffer.alloc(0), value: b('v') }), grpc.status.INVALID_ARGUMENT, 'Set ""');
});
