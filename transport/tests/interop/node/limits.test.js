'use strict';
// Large values and the 4 MiB message limit (the server's; the client's own limits are off).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  grpc,
  useServer,
  unary,
  expectStatus,
  loadProtos,
  StreamReader,
  deadlineIn,
  uniquePrefix,
  b,
  patternBytes,
  MESSAGE_LIMIT,
  STREAM_TIMEOUT_MS,
} = require('./helpers');

const ctx = useServer({ before, after });
const call = (method, request, options) => unary(ctx.db, method, request, options);
const CODE = grpc.status;

/** The encoded size of a request message of `method`, as grpc-js will send it. */
function requestBytes(method, request) {
  return loadProtos().veddb.VedDb.service[method].requestSerialize(request).length;
}

async function roundTrip(key, value) {
  const set = await call('Set', { key, value });
  assert.equal(set.stored, true);
  const got = await call('Get', { key });
  assert.equal(got.value.length, value.length);
  assert.ok(got.value.equals(value), 'the value read back is the value written');
  assert.equal(got.version, set.version);
  assert.equal((await call('Delete', { key })).existed, true);
}

test('a 271828-byte value round-trips', async () => {
  await roundTrip(b(`${uniquePrefix('e')}k`), patternBytes(271828, 271828));
});

test('a value near 4 MiB (4 MiB - 1 KiB) round-trips', async () => {
  await roundTrip(b(`${uniquePrefix('near')}k`), patternBytes(MESSAGE_LIMIT - 1024, 7));
});

test('a SetRequest of exactly 4 MiB is accepted', async () => {
  const key = b(`${uniquePrefix('exact')}k`);
  // Field overhead: key tag+len (2 bytes), value tag (1) + 4-byte length varint.
  let value = patternBytes(MESSAGE_LIMIT - key.length - 7, 11);
  assert.equal(requestBytes('Set', { key, value }), MESSAGE_LIMIT);
  await roundTrip(key, value);
  value = null;
});

test('a value over 4 MiB is RESOURCE_EXHAUSTED, and the server goes on', async () => {
  const key = b(`${uniquePrefix('over')}k`);
  const value = patternBytes(MESSAGE_LIMIT - key.length - 6, 13);
  assert.equal(requestBytes('Set', { key, value }), MESSAGE_LIMIT + 1);
  const error = await expectStatus(
    call('Set', { key, value }),
    CODE.RESOURCE_EXHAUSTED,
    'Set of a 4 MiB + 1 byte message',
  );
  assert.ok(error.details.length > 0, 'the status carries a message');
  await expectStatus(call('Get', { key }), CODE.NOT_FOUND, 'nothing was stored');

  // Clearly over: 5 MiB.
  await expectStatus(
    call('Set', { key, value: patternBytes(5 * 1024 * 1024, 17) }),
    CODE.RESOURCE_EXHAUSTED,
    'Set of a 5 MiB value',
  );
  // The server and this connection still work.
  assert.deepEqual(await call('Ping', {}), {});
  await roundTrip(key, b('small'));
});

test('a response over 4 MiB (MGet of two 3 MiB values) is RESOURCE_EXHAUSTED', async () => {
  const prefix = uniquePrefix('bigresp');
  const keys = [b(`${prefix}a`), b(`${prefix}b`)];
  for (const key of keys) await call('Set', { key, value: patternBytes(3 * 1024 * 1024, 23) });
  await expectStatus(call('MGet', { keys }), CODE.RESOURCE_EXHAUSTED, 'MGet answer of ~6 MiB');
  // Each one alone is fine.
  const one = await call('MGet', { keys: [keys[0]] });
  assert.equal(one.values[0].value.length, 3 * 1024 * 1024);
  for (const key of keys) await call('Delete', { key });
  assert.deepEqual(await call('Ping', {}), {});
});

test('a Batch request over 4 MiB ends the stream with RESOURCE_EXHAUSTED', async () => {
  const prefix = uniquePrefix('bigbatch');
  const stream = ctx.db.Batch({ deadline: deadlineIn(STREAM_TIMEOUT_MS) });
  const reader = new StreamReader(stream);
  stream.write({ set: { key: b(`${prefix}small`), value: b('v') } });
  const first = await reader.next();
  assert.equal(first.status.code, 0);
  stream.write({ set: { key: b(`${prefix}big`), value: patternBytes(MESSAGE_LIMIT + 10, 29) } });
  const { error, extra } = await reader.finalError();
  assert.deepEqual(extra, []);
  assert.ok(error, 'the stream ends with an error');
  assert.equal(error.code, CODE.RESOURCE_EXHAUSTED, `${error.code}: ${error.details}`);
  assert.deepEqual(await call('Ping', {}), {});
});
