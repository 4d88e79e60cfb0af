'use strict';
// Shared helpers of the VedDB Node.js interop suite (see README.md).
//
// * loadProtos(): wire/proto/veddb.proto and health.proto, loaded at run time with
//   @grpc/proto-loader (keepCase, uint64/int64 as decimal strings, bytes as Buffer).
// * startServer(): spawns veddb-server (env VEDDB_SERVER, default
//   <repo>/target/debug/veddb-server) with --port 0 and a 4 MiB --grpc-message-bytes-max
//   (MESSAGE_LIMIT), reads the port from its stderr log
//   line, waits until a Ping succeeds (up to 30 s); server.stop() sends SIGTERM to that
//   child's pid only and waits for it to exit.
// * Promise wrappers for unary calls, a queue reader for streams, status assertions.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const HERE = __dirname;
const REPO_ROOT = path.resolve(HERE, '..', '..', '..', '..');
const PROTO_DIR = path.join(REPO_ROOT, 'wire', 'proto');
const DEFAULT_SERVER = path.join(REPO_ROOT, 'target', 'debug', 'veddb-server');

// Generous limits: these tests check behaviour, never speed.
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 30_000;
const CALL_TIMEOUT_MS = 30_000;
const EVENTUALLY_MS = 30_000;
const STREAM_TIMEOUT_MS = 60_000;

const MiB = 1024 * 1024;
const MESSAGE_LIMIT = 4 * MiB;

const LISTEN_RE = /gRPC listening on every core address=([0-9.]+|\[[0-9a-fA-F:]+\]):(\d+)/;
// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;]*[A-Za-z]/g;

const CLIENT_OPTIONS = {
  // Let the server's 4 MiB limit be what is tested, not grpc-js's own limits.
  'grpc.max_send_message_length': -1,
  'grpc.max_receive_message_length': -1,
  // Never send loopback traffic through an HTTP proxy named in the environment.
  'grpc.enable_http_proxy': 0,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
};

// --------------------------------------------------------------------------- protos

let protoCache = null;

function loadProtos() {
  if (protoCache) return protoCache;
  for (const name of ['veddb.proto', 'health.proto']) {
    const file = path.join(PROTO_DIR, name);
    if (!fs.existsSync(file)) throw new Error(`missing proto file ${file}`);
  }
  const options = {
    keepCase: true,
    longs: String,
    enums: String,
    bytes: Buffer,
    defaults: true,
    oneofs: true,
    includeDirs: [PROTO_DIR],
  };
  const veddbDef = protoLoader.loadSync('veddb.proto', options);
  const healthDef = protoLoader.loadSync('health.proto', options);
  const veddb = grpc.loadPackageDefinition(veddbDef).veddb.v1;
  const health = grpc.loadPackageDefinition(healthDef).grpc.health.v1;
  protoCache = { veddb, health };
  return protoCache;
}

// --------------------------------------------------------------------------- server

function serverBinary() {
  const binary = process.env.VEDDB_SERVER || DEFAULT_SERVER;
  try {
    fs.accessSync(binary, fs.constants.X_OK);
  } catch {
    throw new Error(
      `veddb-server binary not found or not executable at ${binary}: ` +
        'build it (cargo build -p veddb-server) or point VEDDB_SERVER at it',
    );
  }
  return binary;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class VedDbServer {
  constructor(binary) {
    this.binary = binary;
    this.child = null;
    this.port = 0;
    this.log = [];
    this.exit = null; // { code, signal } once exited
    this.exited = null; // Promise resolved on exit
    this.onProcessExit = null;
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  logTail(lines = 60) {
    return this.log.slice(-lines).join('\n') || '(empty log)';
  }

  async start() {
    // The message limit is given explicitly so that the suites check it at gRPC's usual
    // 4 MiB (the server's default follows --value-bytes-max: 16 MiB + 128 KiB).
    const args = ['--cores', '2', '--port', '0', '--spin-us', '10',
      '--grpc-message-bytes-max', String(MESSAGE_LIMIT)];
    const child = spawn(this.binary, args, {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
    // If the test process dies without running the after() hooks, do not leave this
    // child behind (SIGTERM to its pid only).
    this.onProcessExit = () => {
      if (this.exit === null && child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGTERM');
        } catch {
          /* already gone */
        }
      }
    };
    process.once('exit', this.onProcessExit);

    const portFound = new Promise((resolve, reject) => {
      let buffered = '';
      const onLine = (raw) => {
        const line = raw.replace(ANSI_RE, '');
        this.log.push(line);
        if (this.log.length > 500) this.log.shift();
        const match = LISTEN_RE.exec(line);
        if (match && this.port === 0) {
          this.port = Number(match[2]);
          resolve(this.port);
        }
      };
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk) => {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          onLine(buffered.slice(0, newline));
          buffered = buffered.slice(newline + 1);
        }
      });
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk) => {
        for (const line of chunk.split('\n')) if (line) this.log.push(`[stdout] ${line}`);
      });
      child.once('error', reject);
      this.exited.then((exit) =>
        reject(new Error(`veddb-server exited (${JSON.stringify(exit)}) before listening`)),
      );
      setTimeout(
        () => reject(new Error(`no "gRPC listening" log line within ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      ).unref();
    });

    const started = Date.now();
    try {
      await portFound;
      await this.waitReady(READY_TIMEOUT_MS - (Date.now() - started));
    } catch (error) {
      await this.stop().catch(() => {});
      error.message += `\nserver log:\n${this.logTail()}`;
      throw error;
    }
    return this;
  }

  async waitReady(budgetMs) {
    const { veddb } = loadProtos();
    const deadline = Date.now() + Math.max(budgetMs, 1000);
    let lastError = 'no attempt';
    while (Date.now() < deadline) {
      if (this.exit !== null) throw new Error(`veddb-server exited: ${JSON.stringify(this.exit)}`);
      const client = new veddb.VedDb(this.address, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
      try {
        await unary(client, 'Ping', {}, { deadline: Date.now() + 1000 });
        return;
      } catch (error) {
        lastError = `${error.code}: ${error.details}`;
      } finally {
        client.close();
      }
      await sleep(100);
    }
    throw new Error(`no successful Ping within ${READY_TIMEOUT_MS} ms (last: ${lastError})`);
  }

  /** SIGTERM to this child's pid only; waits for the exit and returns { code, signal }. */
  async stop() {
    const child = this.child;
    if (child === null) return null;
    if (this.exit === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
    }
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
    });
    let exit = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (exit === null) {
      // Did not stop after SIGTERM: force it (same pid) and report.
      process.kill(child.pid, 'SIGKILL');
      await this.exited;
      exit = { code: null, signal: 'SIGKILL', hung: true };
    }
    if (this.onProcessExit) process.removeListener('exit', this.onProcessExit);
    return exit;
  }
}

async function startServer() {
  const server = new VedDbServer(serverBinary());
  await server.start();
  return server;
}

/** A VedDb client and a Health client sharing one channel. */
function makeClients(address) {
  const { veddb, health } = loadProtos();
  const db = new veddb.VedDb(address, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
  const hc = new health.Health(address, grpc.credentials.createInsecure(), {
    ...CLIENT_OPTIONS,
    channelOverride: db.getChannel(),
  });
  return { db, health: hc };
}

/**
 * Registers before/after hooks (node:test) that start one server for the file and stop
 * it at the end (expecting exit code 0 after SIGTERM). Returns a context filled in by
 * before(): { server, db, health }.
 */
function useServer({ before, after }) {
  const ctx = { server: null, db: null, health: null };
  before(async () => {
    ctx.server = await startServer();
    Object.assign(ctx, makeClients(ctx.server.address));
  });
  after(async () => {
    if (ctx.health) ctx.health.close();
    if (ctx.db) ctx.db.close();
    if (ctx.server) {
      const exit = await ctx.server.stop();
      assert.deepEqual(
        exit,
        { code: 0, signal: null },
        `veddb-server did not exit cleanly after SIGTERM; log:\n${ctx.server.logTail()}`,
      );
    }
  });
  return ctx;
}

// --------------------------------------------------------------------------- calls

function deadlineIn(ms = CALL_TIMEOUT_MS) {
  return new Date(Date.now() + ms);
}

/** Calls a unary method; resolves with the response, rejects with the ServiceError. */
function unary(client, method, request, options = {}) {
  return new Promise((resolve, reject) => {
    const opts = { deadline: deadlineIn(), ...options };
    client[method](request, new grpc.Metadata(), opts, (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

/** Checks that `promise` rejects with gRPC status `code`; returns the error. */
async function expectStatus(promise, code, what = '') {
  let response;
  try {
    response = await promise;
  } catch (error) {
    assert.equal(
      error.code,
      code,
      `${what}: expected ${codeName(code)}, got ${codeName(error.code)}: ${JSON.stringify(error.details)}`,
    );
    return error;
  }
  assert.fail(`${what}: expected ${codeName(code)}, got a response: ${JSON.stringify(response)}`);
}

function codeName(code) {
  const entry = Object.entries(grpc.status).find(([, value]) => value === code);
  return entry ? entry[0] : String(code);
}

/**
 * Reads a client stream (server-streaming or bidi call) one message at a time.
 * next() resolves with the next message, or rejects with the call's error, or with
 * an Error('end of stream') once the server ended the stream; `status` holds the final
 * status when it arrived.
 */
class StreamReader {
  constructor(call) {
    this.call = call;
    this.messages = [];
    this.waiters = [];
    this.error = null;
    this.ended = false;
    this.status = null;
    call.on('data', (message) => {
      this.messages.push(message);
      this.flush();
    });
    call.on('error', (error) => {
      this.error = error;
      this.flush();
    });
    call.on('end', () => {
      this.ended = true;
      this.flush();
    });
    call.on('status', (status) => {
      this.status = status;
      this.flush();
    });
  }

  flush() {
    while (this.waiters.length > 0) {
      const waiter = this.waiters[0];
      if (this.messages.length > 0) {
        this.waiters.shift();
        clearTimeout(waiter.timer);
        waiter.resolve(this.messages.shift());
      } else if (this.error !== null) {
        this.waiters.shift();
        clearTimeout(waiter.timer);
        waiter.reject(this.error);
      } else if (this.ended) {
        this.waiters.shift();
        clearTimeout(waiter.timer);
        waiter.reject(new Error('end of stream'));
      } else {
        return;
      }
    }
  }

  next(timeoutMs = STREAM_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject, timer: null };
      waiter.timer = setTimeout(() => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(new Error(`no stream message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
      this.flush();
    });
  }

  /** Resolves with the error that ended the call (after any remaining messages). */
  async finalError(timeoutMs = STREAM_TIMEOUT_MS) {
    const extra = [];
    for (;;) {
      try {
        extra.push(await this.next(timeoutMs));
      } catch (error) {
        if (error.message === 'end of stream') return { error: null, extra };
        if (typeof error.code === 'number') return { error, extra };
        throw error;
      }
    }
  }

  /** Resolves with the final status once it arrived. */
  finalStatus(timeoutMs = STREAM_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      if (this.status !== null) return resolve(this.status);
      const timer = setTimeout(
        () => reject(new Error(`no final status within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.call.once('status', (status) => {
        clearTimeout(timer);
        resolve(status);
      });
    });
  }
}

/** Polls `predicate` (may be async) until it returns true; fails after `timeoutMs`. */
async function eventually(predicate, what, timeoutMs = EVENTUALLY_MS) {
  const deadline = Date.now() + timeoutMs;
  let delay = 20;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}`);
    await sleep(delay);
    delay = Math.min(delay * 2, 500);
  }
}

// --------------------------------------------------------------------------- data

let uniqueCounter = 0;
/** A key / topic prefix unique to this process and call. */
function uniquePrefix(name) {
  uniqueCounter += 1;
  return `it:node:${name}:${process.pid}:${uniqueCounter}:${Date.now().toString(36)}:`;
}

const b = (text) => Buffer.from(text, 'utf8');

/** Deterministic pseudo-random bytes (xorshift32), so a failure is reproducible. */
function patternBytes(length, seed = 0x9e3779b9) {
  const out = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 1) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

module.exports = {
  grpc,
  REPO_ROOT,
  MiB,
  MESSAGE_LIMIT,
  CALL_TIMEOUT_MS,
  EVENTUALLY_MS,
  STREAM_TIMEOUT_MS,
  loadProtos,
  startServer,
  makeClients,
  useServer,
  deadlineIn,
  unary,
  expectStatus,
  codeName,
  StreamReader,
  eventually,
  sleep,
  uniquePrefix,
  b,
  patternBytes,
};
