//! The `grpc` scenario: a closed-loop gRPC load generator for a running server.
//!
//! Three request modes, all on the same h2 client ([`GrpcConnection`], on compio):
//! - default: each request is one `Batch` call carrying one message ([`GrpcConnection::execute`]);
//! - `--batch N`: each call pipelines N requests on one `Batch` stream (the fast path);
//! - `--unary`: each request is a real unary `/veddb.v1.VedDb/Get` or `/Set` call, so the same
//!   client also drives servers that implement only those two RPCs (the tonic peer in
//!   `bench/tonic-peer/`).
//!
//! `--clients` connections each carry `--depth` concurrent streams; each stream has one call in
//! flight at a time. All of it runs on one client thread (`--pin` pins it).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Instant;

use argh::FromArgs;
use bytes::Bytes;
use hdrhistogram::Histogram;
use prost::Message;
use veddb_client::grpc::GrpcConnection;
use veddb_client::ClientError;
use veddb_wire::grpc::Code;
use veddb_wire::proto::v1;
use veddb_wire::{Request, Response, SetOptions};

use crate::report::{histogram, Series};
use crate::workload::{parse_duration, Op, Rng, Workload};

const GET_PATH: &str = "/veddb.v1.VedDb/Get";
const SET_PATH: &str = "/veddb.v1.VedDb/Set";
const MSET_PATH: &str = "/veddb.v1.VedDb/MSet";

/// Keys per MSET while preloading.
const PRELOAD_CHUNK: usize = 2048;
/// Concurrent SETs per connection while preloading a server without MSET.
const PRELOAD_DEPTH: usize = 64;

/// Closed-loop load on a running gRPC server (VedDB, or the tonic peer with --unary).
#[derive(FromArgs)]
#[argh(subcommand, name = "grpc")]
pub struct GrpcArgs {
    #[argh(option, default = "String::from(\"127.0.0.1:50051\")")]
    /// server address, HOST:PORT (default 127.0.0.1:50051)
    pub addr: String,
    #[argh(option, default = "String::from(\"get\")")]
    /// operations, comma-separated to measure several in turn: get, set, mix (default get)
    pub op: String,
    #[argh(option, default = "0.8")]
    /// share of GETs in `mix` (default 0.8)
    pub get_ratio: f64,
    #[argh(option, default = "100_000")]
    /// number of distinct keys, preloaded before measuring (default 100000)
    pub keys: usize,
    #[argh(option, default = "16")]
    /// key size in bytes (default 16)
    pub key_size: usize,
    #[argh(option, default = "64")]
    /// value size in bytes (default 64)
    pub value_size: usize,
    #[argh(option, default = "1")]
    /// HTTP/2 connections (default 1)
    pub clients: usize,
    #[argh(option, default = "1")]
    /// concurrent streams per connection, each with one call in flight (default 1)
    pub depth: usize,
    #[argh(option, default = "0")]
    /// requests pipelined per `Batch` call (execute_many); 0: one request per call (default 0)
    pub batch: usize,
    #[argh(switch)]
    /// one real unary Get/Set RPC per request (works against the tonic peer)
    pub unary: bool,
    #[argh(option, default = "String::from(\"3s\")")]
    /// measured time per operation (default 3s)
    pub duration: String,
    #[argh(option, default = "String::from(\"500ms\")")]
    /// warm-up time per operation (default 500ms)
    pub warmup: String,
    #[argh(option)]
    /// CPU to pin the client thread to (default: not pinned)
    pub pin: Option<usize>,
    #[argh(option)]
    /// write the results as JSON to this file
    pub json: Option<String>,
}

pub fn settings(args: &GrpcArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "grpc", "addr": args.addr, "op": args.op, "get_ratio": args.get_ratio,
        "keys": args.keys, "key_size": args.key_size, "value_size": args.value_size,
        "clients": args.clients, "depth": args.depth, "batch": args.batch, "unary": args.unary,
        "duration": args.duration, "warmup": args.warmup, "pin": args.pin,
    })
}

/// How each worker turns requests into calls.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One `Batch` call with one message per request.
    Execute,
    /// One `Batch` call with this many messages.
    Batch(usize),
    /// One unary Get/Set call per request.
    Unary,
}

impl Mode {
    fn requests_per_call(self) -> usize {
        match self {
            Mode::Batch(n) => n,
            _ => 1,
        }
    }
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

/// What the workers of one measurement share (one thread: cells, no locks).
struct Shared {
    phase: Cell<u8>,
    histogram: RefCell<Histogram<u64>>,
    /// Requests answered while measuring.
    operations: Cell<u64>,
    /// Requests answered with an unexpected status, or lost to a broken call.
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

impl Shared {
    fn error(&self, count: u64, what: impl FnOnce() -> String) {
        self.errors.set(self.errors.get() + count);
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(what());
        }
    }
}

struct Worker {
    connection: GrpcConnection,
    keys: Rc<Vec<Bytes>>,
    value: Bytes,
    op: Op,
    mode: Mode,
    seed: u64,
}

pub fn run(args: &GrpcArgs) -> Result<Vec<Series>, String> {
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    let ops = Op::parse_list(&args.op, args.get_ratio)?;
    if args.clients == 0 || args.clients > 1024 {
        return Err("--clients must be between 1 and 1024".into());
    }
    if args.depth == 0 || args.depth > 4096 {
        return Err("--depth must be between 1 and 4096".into());
    }
    if args.batch > 65_536 {
        return Err("--batch is at most 65536".into());
    }
    if args.unary && args.batch > 0 {
        return Err(
            "--unary and --batch exclude each other (unary calls carry one request)".into(),
        );
    }
    let mode = match (args.unary, args.batch) {
        (true, _) => Mode::Unary,
        (false, 0) => Mode::Execute,
        (false, n) => Mode::Batch(n),
    };
    let address: SocketAddr = args
        .addr
        .to_socket_addrs()
        .map_err(|error| format!("bad --addr `{}`: {error}", args.addr))?
        .next()
        .ok_or_else(|| format!("--addr `{}` resolves to no address", args.addr))?;
    let workload = Workload::new(args.keys, args.key_size, args.value_size)?;
    let mut builder = compio::runtime::RuntimeBuilder::new();
    if let Some(cpu) = args.pin {
        builder.thread_affinity(HashSet::from([cpu]));
    }
    let runtime = builder
        .build()
        .map_err(|error| format!("cannot create the client runtime: {error}"))?;
    runtime.block_on(async move {
        let mut connections = Vec::with_capacity(args.clients);
        for _ in 0..args.clients {
            connections.push(
                GrpcConnection::connect(address)
                    .await
                    .map_err(|error| format!("cannot connect to {address}: {error}"))?,
            );
        }
        preload(&connections, &workload, args.unary).await?;
        let keys = Rc::new(workload.keys);
        let mut results = Vec::new();
        for op in ops {
            let shared = Rc::new(Shared {
                phase: Cell::new(WARMING),
                histogram: RefCell::new(histogram()),
                operations: Cell::new(0),
                errors: Cell::new(0),
                first_error: RefCell::new(None),
            });
            let mut tasks = Vec::with_capacity(args.clients * args.depth);
            for (c, connection) in connections.iter().enumerate() {
                for d in 0..args.depth {
                    let worker = Worker {
                        connection: connection.clone(),
                        keys: keys.clone(),
                        value: workload.value.clone(),
                        op,
                        mode,
                        seed: (c * args.depth + d) as u64 + 1,
                    };
                    tasks.push(compio::runtime::spawn(work(worker, shared.clone())));
                }
            }
            compio::time::sleep(warmup).await;
            shared.phase.set(MEASURING);
            let started = Instant::now();
            compio::time::sleep(duration).await;
            shared.phase.set(STOPPING);
            let seconds = started.elapsed().as_secs_f64();
            for task in tasks {
                let _ = task.await;
            }
            if let Some(error) = shared.first_error.borrow().as_ref() {
                eprintln!(
                    "veddb-bench: {} {}: {} errors; the first: {error}",
                    op.name(),
                    mode_name(mode),
                    shared.errors.get()
                );
            }
            let latency_of = match mode {
                Mode::Batch(n) => format!(
                    "one Batch call of {n} pipelined requests, first byte sent to trailers \
                     received (ops/s counts requests)"
                ),
                Mode::Execute => {
                    "one Batch call with one request, sent to trailers received".into()
                }
                Mode::Unary => "one unary call, sent to trailers received".into(),
            };
            results.push(Series::new(
                "grpc",
                &format!(
                    "{} {} c={} d={}",
                    op.name(),
                    mode_name(mode),
                    args.clients,
                    args.depth
                ),
                &latency_of,
                &shared.histogram.borrow(),
                shared.operations.get(),
                seconds,
                shared.errors.get(),
            ));
        }
        Ok(results)
    })
}

fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::Execute => "batch=1".into(),
        Mode::Batch(n) => format!("batch={n}"),
        Mode::Unary => "unary".into(),
    }
}

/// One stream's closed loop: a call, its answer, the next call, until the phase is STOPPING.
async fn work(worker: Worker, shared: Rc<Shared>) {
    let mut rng = Rng::new(worker.seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let per_call = worker.mode.requests_per_call();
    let mut batch = Vec::with_capacity(per_call);
    loop {
        if shared.phase.get() == STOPPING {
            return;
        }
        let started = Instant::now();
        let outcome: Result<u64, ClientError> = match worker.mode {
            Mode::Unary => unary_call(&worker, &mut rng).await.map(u64::from),
            Mode::Execute | Mode::Batch(_) => {
                batch.clear();
                for _ in 0..per_call {
                    batch.push(request(&worker, &mut rng));
                }
                match worker
                    .connection
                    .execute_many(std::mem::take(&mut batch))
                    .await
                {
                    Ok(answers) => {
                        let mut bad = 0;
                        for answer in &answers {
                            if !matches!(
                                answer,
                                Ok(Response::Value { .. } | Response::Stored { .. })
                            ) {
                                bad += 1;
                                if shared.first_error.borrow().is_none() {
                                    shared.error(0, || format!("unexpected answer {answer:?}"));
                                }
                            }
                        }
                        Ok(bad)
                    }
                    Err(error) => Err(error),
                }
            }
        };
        let elapsed = started.elapsed().as_nanos() as u64;
        let measuring = shared.phase.get() == MEASURING;
        match outcome {
            Ok(bad) => {
                if measuring {
                    shared
                        .histogram
                        .borrow_mut()
                        .saturating_record(elapsed.max(1));
                    shared
                        .operations
                        .set(shared.operations.get() + per_call as u64);
                    if bad > 0 {
                        shared.errors.set(shared.errors.get() + bad);
                    }
                }
            }
            Err(ClientError::Status(status)) => {
                if measuring {
                    shared.error(per_call as u64, || format!("status {status}"));
                }
            }
            Err(error) => {
                // The connection is broken: this worker stops (the others notice on their own).
                shared.error(per_call as u64, || error.to_string());
                return;
            }
        }
    }
}

fn request(worker: &Worker, rng: &mut Rng) -> Request {
    let key = worker.keys[rng.below(worker.keys.len())].clone();
    match worker.op.pick(rng) {
        Op::Get => Request::Get { key },
        _ => Request::Set {
            key,
            value: worker.value.clone(),
            options: SetOptions::default(),
        },
    }
}

/// One unary Get or Set; `Ok(true)` when the answer is not what a preloaded key gives.
async fn unary_call(worker: &Worker, rng: &mut Rng) -> Result<bool, ClientError> {
    let key = worker.keys[rng.below(worker.keys.len())].clone();
    match worker.op.pick(rng) {
        Op::Get => {
            let message = v1::GetRequest { key }.encode_to_vec();
            let answer = worker.connection.unary_raw(GET_PATH, message).await?;
            let response = v1::GetResponse::decode(answer)
                .map_err(|error| ClientError::Protocol(format!("bad GetResponse: {error}")))?;
            Ok(response.value.len() != worker.value.len())
        }
        _ => {
            let message = v1::SetRequest {
                key,
                value: worker.value.clone(),
                ..Default::default()
            }
            .encode_to_vec();
            let answer = worker.connection.unary_raw(SET_PATH, message).await?;
            let response = v1::SetResponse::decode(answer)
                .map_err(|error| ClientError::Protocol(format!("bad SetResponse: {error}")))?;
            Ok(!response.stored)
        }
    }
}

/// Writes every key once. Through VedDB's `Batch` MSET, or with `unary` through the unary MSet
/// RPC, falling back to concurrent unary SETs where the server has no MSet (the tonic peer).
async fn preload(
    connections: &[GrpcConnection],
    workload: &Workload,
    unary: bool,
) -> Result<(), String> {
    let connection = &connections[0];
    let mut chunks = workload.keys.chunks(PRELOAD_CHUNK);
    if !unary {
        for chunk in chunks {
            let pairs = chunk
                .iter()
                .map(|key| (key.clone(), workload.value.clone()))
                .collect();
            match connection.execute(Request::MSet { pairs }).await {
                Ok(Response::Ok) => {}
                Ok(other) => return Err(format!("preloading the keys: MSET answered {other:?}")),
                Err(error) => return Err(format!("preloading the keys: {error}")),
            }
        }
        return Ok(());
    }
    let mset = |chunk: &[Bytes]| {
        v1::MSetRequest {
            pairs: chunk
                .iter()
                .map(|key| v1::KeyValue {
                    key: key.clone(),
                    value: workload.value.clone(),
                })
                .collect(),
        }
        .encode_to_vec()
    };
    let first = chunks.next().unwrap_or(&[]);
    match connection.unary_raw(MSET_PATH, mset(first)).await {
        Ok(_) => {
            for chunk in chunks {
                connection
                    .unary_raw(MSET_PATH, mset(chunk))
                    .await
                    .map_err(|error| format!("preloading the keys: {error}"))?;
            }
            Ok(())
        }
        Err(ClientError::Status(status)) if status.code == Code::Unimplemented => {
            // Concurrent unary SETs, PRELOAD_DEPTH streams per connection.
            let lanes = connections.len() * PRELOAD_DEPTH;
            let keys = &workload.keys;
            let lane = |i: usize| {
                let connection = &connections[i % connections.len()];
                async move {
                    for key in keys.iter().skip(i).step_by(lanes) {
                        let message = v1::SetRequest {
                            key: key.clone(),
                            value: workload.value.clone(),
                            ..Default::default()
                        }
                        .encode_to_vec();
                        connection
                            .unary_raw(SET_PATH, message)
                            .await
                            .map_err(|error| format!("preloading the keys with SET: {error}"))?;
                    }
                    Ok::<(), String>(())
                }
            };
            futures_util::future::join_all((0..lanes).map(lane))
                .await
                .into_iter()
                .collect()
        }
        Err(error) => Err(format!("preloading the keys with MSet: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_conflicts_are_refused() {
        let args = GrpcArgs::from_args(
            &["grpc"],
            &["--addr", "127.0.0.1:1", "--unary", "--batch", "8"],
        )
        .expect("parses");
        assert!(run(&args).unwrap_err().contains("exclude"));
        let args = GrpcArgs::from_args(&["grpc"], &["--depth", "0"]).expect("parses");
        assert!(run(&args).unwrap_err().contains("--depth"));
    }

    #[test]
    fn modes_count_requests_per_call() {
        assert_eq!(Mode::Batch(64).requests_per_call(), 64);
        assert_eq!(Mode::Execute.requests_per_call(), 1);
        assert_eq!(Mode::Unary.requests_per_call(), 1);
        assert_eq!(mode_name(Mode::Batch(64)), "batch=64");
    }
}
