'use strict';
// Server-streaming Subscribe, bidi Batch, and deadlines through @grpc/grpc-js.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  grpc,
  useServer,
  unary,
  expectStatus,
  eventually,
  StreamReader,
  deadlineIn,
  uniquePrefix,
  b,
  loadProtos,
  STREAM_TIMEOUT_MS,
} = require('./helpers');

const ctx = useServer({ before, after });
const call = (method, request, options) => unary(ctx.db, method, request, options);

const CODE = grpc.status;

test('Subscribe receives published messages in order, then the client cancels', async () => {
  const topic = b(uniquePrefix('sub'));
  const stream = ctx.db.Subscribe({ topic }, { deadline: deadlineIn(STREAM_TIMEOUT_MS * 2) });
  const reader = new StreamReader(stream);

  const first = await reader.next();
  assert.equal(first.subscribed, true, 'first message confirms the subscription');
  assert.equal(first.message.length, 0);

  const sent = [];
  for (let i = 0; i < 25; i += 1) {
    const message = i === 7 ? Buffer.from([0, 0xff, 0x10]) : b(`message ${i} ${'·'.repeat(i)}`);
    sent.push(message);
    const published = await call('Publish', { topic, message });
    assert.equal(published.receivers, 1, `publish ${i} reached the one subscriber`);
  }
  for (let i = 0; i < sent.length; i += 1) {
    const received = await reader.next();
    assert.equal(received.subscribed, false, `message ${i}`);
    assert.deepEqual(received.message, sent[i], `message ${i} in order`);
    assert.equal(received.dropped, '0', `message ${i}: nothing dropped`);
  }

  stream.cancel();
  const { error, extra } = await reader.finalError();
  assert.deepEqual(extra, [], 'no messages after the ones published');
  assert.ok(error, 'the cancelled call ends with an error');
  assert.equal(error.code, CODE.CANCELLED, error.details);

  // The server notices the cancellation: publishes eventually reach nobody.
  await eventually(async () => {
    const published = await call('Publish', { topic, message: b('after cancel') });
    return published.receivers === 0;
  }, 'a publish after the cancellation reports receivers 0', 60_000);
});

test('two subscribers on one topic both receive', async () => {
  const topic = b(uniquePrefix('sub2'));
  const readers = [];
  for (let i = 0; i < 2; i += 1) {
    const stream = ctx.db.Subscribe({ topic }, { deadline: deadlineIn(STREAM_TIMEOUT_MS * 2) });
    const reader = new StreamReader(stream);
    assert.equal((await reader.next()).subscribed, true);
    readers.push(reader);
  }
  const published = await call('Publish', { topic, message: b('to both') });
  assert.equal(published.receivers, 2);
  for (const reader of readers) {
    assert.deepEqual((await reader.next()).message, b('to both'));
    reader.call.cancel();
    const { error } = await reader.finalError();
    assert.equal(error.code, CODE.CANCELLED);
  }
  await eventually(
    async () => (await call('Publish', { topic, message: b('x') })).receivers === 0,
    'receivers back to 0 after both cancelled',
    60_000,
  );
});

test('Subscribe with a 500 ms deadline and no publishes ends with DEADLINE_EXCEEDED', async () => {
  const topic = b(uniquePrefix('deadline'));
  const stream = ctx.db.Subscribe({ topic }, { deadline: new Date(Date.now() + 500) });
  const reader = new StreamReader(stream);
  const { error, extra } = await reader.finalError();
  // The confirmation may or may not arrive before the deadline; nothing else can.
  for (const message of extra) assert.equal(message.subscribed, true, JSON.stringify(message));
  assert.ok(extra.length <= 1, `${extra.length} messages`);
  assert.ok(error, 'the call ends with an error');
  assert.equal(error.code, CODE.DEADLINE_EXCEEDED, `${error.code}: ${error.details}`);
  // The connection is still good.
  assert.deepEqual(await call('Ping', {}), {});
});

test('the server enforces grpc-timeout itself (500m, no client-side deadline)', async () => {
  // With a call deadline grpc-js also times the call out locally, so the status above may
  // be grpc-js's own. Here grpc-js has no deadline and just forwards the header: the
  // DEADLINE_EXCEEDED can only come from the server.
  const topic = b(uniquePrefix('srvdeadline'));
  const metadata = new grpc.Metadata();
  metadata.set('grpc-timeout', '500m');
  const stream = ctx.db.Subscribe({ topic }, metadata, {});
  const reader = new StreamReader(stream);
  let outcome;
  try {
    outcome = await reader.finalError(STREAM_TIMEOUT_MS);
  } catch (error) {
    stream.cancel();
    throw new Error(`the server did not end the call after grpc-timeout 500m: ${error.message}`);
  }
  const { error, extra } = outcome;
  for (const message of extra) assert.equal(message.subscribed, true, JSON.stringify(message));
  assert.ok(error, 'the call ends with an error');
  assert.equal(error.code, CODE.DEADLINE_EXCEEDED, `${error.code}: ${error.details}`);
  assert.ok(!/Deadline exceeded after/.test(error.details), `a server status: ${error.details}`);
});

test('a unary call with an ample deadline succeeds', async () => {
  assert.deepEqual(await call('Ping', {}, { deadline: deadlineIn(120_000) }), {});
});

test('Batch ping-pong: 20 requests, each answered before the next, one error inside', async () => {
  const prefix = uniquePrefix('batch');
  const key = b(`${prefix}k`);
  const counter = b(`${prefix}counter`);
  const text = b(`${prefix}text`);
  const stream = ctx.db.Batch({ deadline: deadlineIn(STREAM_TIMEOUT_MS * 2) });
  const reader = new StreamReader(stream);

  let setVersion = null;
  const steps = [
    [{ ping: {} }, (r) => assert.equal(r.op, 'ping')],
    [{ set: { key, value: b('v1') } }, (r) => {
      assert.equal(r.op, 'set');
      assert.equal(r.set.stored, true);
      setVersion = r.set.version;
    }],
    [{ get: { key } }, (r) => {
      assert.equal(r.op, 'get');
      assert.deepEqual(r.get.value, b('v1'));
      assert.equal(r.get.version, setVersion);
    }],
    [{ cas: { key, expected_version: '999999999', value: b('no') } }, (r) => {
      assert.equal(r.status.code, CODE.FAILED_PRECONDITION);
      assert.equal(r.status.message, `version mismatch: the current version is ${setVersion}`);
      assert.equal(r.op, undefined);
    }, 'error'],
    [() => ({ cas: { key, expected_version: setVersion, value: b('v2') } }), (r) => {
      assert.equal(r.op, 'cas');
      assert.ok(BigInt(r.cas.version) > BigInt(setVersion));
    }],
    [{ get: { key: b(`${prefix}missing`) } }, (r) => {
      assert.equal(r.status.code, CODE.NOT_FOUND);
      assert.equal(r.status.message, `key not found: ${prefix}missing`);
    }, 'error'],
    [{ incr: { key: counter, delta: 3 } }, (r) => assert.equal(r.incr.value, '3')],
    [{ incr: { key: counter, delta: -10 } }, (r) => assert.equal(r.incr.value, '-7')],
    [{ set: { key: text, value: b('abc') } }, (r) => assert.equal(r.set.stored, true)],
    [{ incr: { key: text, delta: 1 } }, (r) => {
      assert.equal(r.status.code, CODE.INVALID_ARGUMENT);
      assert.ok(r.status.message.length > 0);
    }, 'error'],
    [{ expire: { key, ttl_ms: 600_000 } }, (r) => assert.equal(r.expire.applied, true)],
    [{ ttl: { key } }, (r) => {
      assert.equal(r.ttl.exists, true);
      assert.equal(r.ttl.persistent, false);
    }],
    [{ expire: { key, persist: true } }, (r) => assert.equal(r.expire.applied, true)],
    [{ mset: { pairs: [{ key: b(`${prefix}m1`), value: b('1') }, { key: b(`${prefix}m2`), value: b('2') }] } },
      (r) => assert.equal(r.op, 'mset')],
    [{ mget: { keys: [b(`${prefix}m1`), b(`${prefix}nope`), b(`${prefix}m2`)] } }, (r) => {
      assert.deepEqual(r.mget.values.map((v) => v.found), [true, false, true]);
      assert.deepEqual(r.mget.values[2].value, b('2'));
    }],
    [{ scan: { prefix: b(`${prefix}m`), count: 10 } }, (r) => {
      assert.deepEqual(r.scan.keys.map(String).sort(), [`${prefix}m1`, `${prefix}m2`]);
    }],
    [{ publish: { topic: b(`${prefix}topic`), message: b('hi') } }, (r) => assert.equal(r.publish.receivers, 0)],
    [{}, (r) => {
      // A BatchRequest with no op: an error answer, not the end of the stream.
      assert.equal(r.status.code, CODE.INVALID_ARGUMENT);
    }, 'error'],
    [{ delete: { key } }, (r) => assert.equal(r.delete.existed, true)],
    [{ get: { key: counter } }, (r) => assert.deepEqual(r.get.value, b('-7'))],
  ];
  assert.equal(steps.length, 20);

  for (let i = 0; i < steps.length; i += 1) {
    const [request, check, kind] = steps[i];
    const message = typeof request === 'function' ? request() : request;
    assert.ok(stream.write(message) !== undefined);
    const response = await reader.next();
    try {
      assert.ok(response.status, 'every BatchResponse carries a status');
      if (kind !== 'error') {
        assert.equal(response.status.code, 0, `status ${JSON.stringify(response.status)}`);
      } else {
        assert.notEqual(response.status.code, 0);
      }
      check(response);
    } catch (error) {
      error.message = `step ${i} (${JSON.stringify(message)}): ${error.message}\n` +
        `response: ${JSON.stringify(response)}`;
      throw error;
    }
  }

  stream.end();
  const { error, extra } = await reader.finalError();
  assert.deepEqual(extra, [], 'no extra responses');
  assert.equal(error, null, `the stream ends OK, got ${error && `${error.code}: ${error.details}`}`);
  const status = await reader.finalStatus();
  assert.equal(status.code, CODE.OK);
});

test('Batch: many requests written at once are answered in order', async () => {
  const prefix = uniquePrefix('batchpipe');
  const stream = ctx.db.Batch({ deadline: deadlineIn(STREAM_TIMEOUT_MS * 2) });
  const reader = new StreamReader(stream);
  const n = 500;
  for (let i = 0; i < n; i += 1) stream.write({ incr: { key: b(`${prefix}c`), delta: 1 } });
  stream.end();
  for (let i = 0; i < n; i += 1) {
    const response = await reader.next();
    assert.equal(response.status.code, 0);
    assert.equal(response.incr.value, String(i + 1), `response ${i} in order`);
  }
  const { error } = await reader.finalError();
  assert.equal(error, null);
});

test('Batch: exists answers in place among other ops, an empty key is an error answer', async () => {
  const prefix = uniquePrefix('batchexists');
  const key = b(`${prefix}k`);
  const stream = ctx.db.Batch({ deadline: deadlineIn(STREAM_TIMEOUT_MS * 2) });
  const reader = new StreamReader(stream);
  const requests = [
    { exists: { key } },
    { set: { key, value: b('v') } },
    { exists: { key } },
    { exists: { key: b('') } },
    { delete: { key } },
    { exists: { key } },
  ];
  for (const request of requests) stream.write(request);
  stream.end();
  const responses = [];
  for (let i = 0; i < requests.length; i += 1) responses.push(await reader.next());
  assert.deepEqual(responses[0].exists, { exists: false }, 'before the set');
  assert.equal(responses[1].set.stored, true);
  assert.deepEqual(responses[2].exists, { exists: true }, 'after the set');
  assert.equal(responses[3].status.code, CODE.INVALID_ARGUMENT, 'an empty key');
  assert.equal(responses[3].op, undefined);
  assert.equal(responses[4].delete.existed, true);
  assert.deepEqual(responses[5].exists, { exists: false }, 'after the delete');
  for (const i of [0, 1, 2, 4, 5]) assert.equal(responses[i].status.code, 0, `response ${i}`);
  const { error, extra } = await reader.finalError();
  assert.deepEqual(extra, [], 'no extra responses');
  assert.equal(error, null);
});

test('Batch cancelled by the client after the first response', async () => {
  const prefix = uniquePrefix('batchcancel');
  const stream = ctx.db.Batch({ deadline: deadlineIn(STREAM_TIMEOUT_MS * 2) });
  const reader = new StreamReader(stream);
  stream.write({ set: { key: b(`${prefix}k`), value: b('v') } });
  const first = await reader.next();
  assert.equal(first.status.code, 0);
  assert.equal(first.set.stored, true);

  stream.cancel();
  const { error } = await reader.finalError();
  assert.ok(error, 'the cancelled call ends with an error');
  assert.equal(error.code, CODE.CANCELLED, `${error.code}: ${error.details}`);

  // The server and the connection are fine afterwards, and the write happened.
  assert.deepEqual((await call('Get', { key: b(`${prefix}k`) })).value, b('v'));
  const again = ctx.db.Batch({ deadline: deadlineIn(STREAM_TIMEOUT_MS) });
  const againReader = new StreamReader(again);
  again.write({ ping: {} });
  assert.equal((await againReader.next()).op, 'ping');
  again.end();
  assert.equal((await againReader.finalError()).error, null);
});

test('Batch with no requests (immediate half-close) ends OK', async () => {
  const stream = ctx.db.Batch({ deadline: deadlineIn(STREAM_TIMEOUT_MS) });
  const reader = new StreamReader(stream);
  stream.end();
  const { error, extra } = await reader.finalError();
  assert.deepEqual(extra, []);
  assert.equal(error, null);
});

test('health Check: SERVING for "" and veddb.v1.VedDb, NOT_FOUND for an unknown service', async () => {
  for (const service of ['', 'veddb.v1.VedDb']) {
    const response = await unary(ctx.health, 'Check', { service });
    assert.equal(response.status, 'SERVING', `service ${JSON.stringify(service)}`);
  }
  await expectStatus(
    unary(ctx.health, 'Check', { service: 'no.such.Service' }),
    CODE.NOT_FOUND,
    'Check of an unknown service',
  );
});

test('health Watch: first message SERVING, then the client cancels', async () => {
  const stream = ctx.health.Watch({ service: '' }, { deadline: deadlineIn(STREAM_TIMEOUT_MS) });
  const reader = new StreamReader(stream);
  const first = await reader.next();
  assert.equal(first.status, 'SERVING');
  stream.cancel();
  const { error } = await reader.finalError();
  assert.ok(error);
  assert.equal(error.code, CODE.CANCELLED);
});

test('health Watch of an unknown service: SERVICE_UNKNOWN', async () => {
  const stream = ctx.health.Watch({ service: 'no.such.Service' }, { deadline: deadlineIn(STREAM_TIMEOUT_MS) });
  const reader = new StreamReader(stream);
  const first = await reader.next();
  assert.equal(first.status, 'SERVICE_UNKNOWN');
  stream.cancel();
  await reader.finalError();
});

test('an unknown method is UNIMPLEMENTED', async () => {
  // A generic client on its own channel (closing it leaves ctx.db's channel alone).
  const client = new grpc.Client(ctx.server.address, grpc.credentials.createInsecure(), {
    'grpc.enable_http_proxy': 0,
  });
  const raw = (path) =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        path,
        (arg) => arg,
        (buffer) => buffer,
        Buffer.alloc(0),
        new grpc.Metadata(),
        { deadline: deadlineIn() },
        (error, response) => (error ? reject(error) : resolve(response)),
      );
    });
  try {
    await expectStatus(raw('/veddb.v1.VedDb/NoSuchMethod'), CODE.UNIMPLEMENTED, 'unknown method');
    await expectStatus(raw('/no.such.Service/Get'), CODE.UNIMPLEMENTED, 'unknown service');
    // The same raw client reaches a real method.
    const pong = await raw('/veddb.v1.VedDb/Ping');
    assert.equal(pong.length, 0);
  } finally {
    client.close();
  }
});

test('a compressed request (gzip) is UNIMPLEMENTED', async () => {
  const { veddb } = loadProtos();
  // Its own channel: compression is a channel option.
  const client = new veddb.VedDb(ctx.server.address, grpc.credentials.createInsecure(), {
    'grpc.enable_http_proxy': 0,
    'grpc.default_compression_algorithm': 2, // gzip
  });
  try {
    await expectStatus(
      unary(client, 'Set', { key: b(uniquePrefix('gzip')), value: b('v'.repeat(1000)) }),
      CODE.UNIMPLEMENTED,
      'Set sent with grpc-encoding gzip',
    );
  } finally {
    client.close();
  }
  // Uncompressed calls on the main channel are unaffected.
  assert.deepEqual(await call('Ping', {}), {});
});
