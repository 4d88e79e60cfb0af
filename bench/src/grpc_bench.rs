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
//!
//! Closed loop by default: each stream sends its next call when the previous one is answered.
//! With `--rate OPS` the load is open-loop: the streams share OPS requests per second on a fixed
//! schedule (a stream whose previous call is still in flight sends its overdue calls as soon as
//! it can), and latency runs from each call's intended send time.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
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

use crate::open_loop::{self, Clock, MonotonicClock, OpenLoopSummary, Pacer, PacerStats, Recorder};
use crate::progress::{Counter, Progress};
use crate::report::{histogram, Series};
use crate::workload::{parse_duration, Distribution, Op, Rng, ValueSize, Workload};

const GET_PATH: &str = "/veddb.v1.VedDb/Get";
const SET_PATH: &str = "/veddb.v1.VedDb/Set";
const MSET_PATH: &str = "/veddb.v1.VedDb/MSet";

/// Keys per MSET while preloading.
const PRELOAD_CHUNK: usize = 2048;
/// Concurrent SETs per connection while preloading a server without MSET.
const PRELOAD_DEPTH: usize = 64;

/// Load on a running gRPC server (VedDB, or the tonic peer with --unary): closed loop, or open loop with --rate.
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
    #[argh(option, default = "String::from(\"64\")")]
    /// value size in bytes, or a range MIN..MAX of uniformly random sizes (default 64)
    pub value_size: String,
    #[argh(option, default = "String::from(\"uniform\")")]
    /// key distribution: uniform or zipf (default uniform)
    pub distribution: String,
    #[argh(option, default = "0.99")]
    /// skew of --distribution zipf: key k has weight 1/k^theta (default 0.99)
    pub zipf_theta: f64,
    #[argh(option)]
    /// open loop: this many requests per second over all streams, latency from each call's
    /// intended send time (default: closed loop)
    pub rate: Option<f64>,
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
    #[argh(option)]
    /// plot the latency percentiles as SVG to this file
    pub svg: Option<String>,
}

pub fn settings(args: &GrpcArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "grpc", "addr": args.addr, "op": args.op, "get_ratio": args.get_ratio,
        "keys": args.keys, "key_size": args.key_size, "value_size": args.value_size,
        "distribution": args.distribution, "zipf_theta": args.zipf_theta, "rate": args.rate,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "clients": args.clients, "depth": args.depth, "batch": args.batch, "unary": args.unary,
        "duration": args.duration, "warmup": args.warmup, "pin": args.pin, "svg": args.svg,
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
    /// Open loop: the measured window, its latencies and answered requests (instead of
    /// `histogram` and `operations`), and how far behind the streams fell.
    open: Option<OpenShared>,
    /// Completed requests, for the progress line.
    counter: Arc<Counter>,
    /// Requests answered with an unexpected status, or lost to a broken call.
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

struct OpenShared {
    clock: MonotonicClock,
    /// Calls per second over all streams.
    calls_per_sec: f64,
    streams: usize,
    recorder: RefCell<Recorder>,
    stats: RefCell<PacerStats>,
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
    workload: Rc<Workload>,
    op: Op,
    mode: Mode,
    seed: u64,
    /// This worker's stream number, `0..clients * depth`.
    stream: usize,
}

pub fn run(args: &GrpcArgs) -> Result<Vec<Series>, String> {
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    let rate = open_loop::check_rate(args.rate)?;
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
    let workload = Workload::with(
        args.keys,
        args.key_size,
        ValueSize::parse(&args.value_size)?,
        Distribution::parse(&args.distribution, args.zipf_theta)?,
    )?;
    let mut builder = compio::runtime::RuntimeBuilder::new();
    if let Some(cpu) = args.pin {
        builder.thread_affinity(HashSet::from([cpu]));
    }
    let runtime = builder
        .build()
        .map_err(|error| format!("cannot create the client runtime: {error}"))?;
    let progress = Progress::start();
    let counter = progress.counter();
    let results = runtime.block_on(async {
        let mut connections = Vec::with_capacity(args.clients);
        for _ in 0..args.clients {
            connections.push(
                GrpcConnection::connect(address)
                    .await
                    .map_err(|error| format!("cannot connect to {address}: {error}"))?,
            );
        }
        preload(&connections, &workload, args.unary).await?;
        let workload = Rc::new(workload);
        let streams = args.clients * args.depth;
        let mut results = Vec::new();
        for op in ops {
            let origin = Instant::now();
            let (from, until) = (
                warmup.as_nanos() as u64,
                (warmup + duration).as_nanos() as u64,
            );
            let shared = Rc::new(Shared {
                phase: Cell::new(WARMING),
                histogram: RefCell::new(histogram()),
                operations: Cell::new(0),
                open: rate.map(|rate| OpenShared {
                    clock: MonotonicClock::new(origin),
                    calls_per_sec: rate / mode.requests_per_call() as f64,
                    streams,
                    recorder: RefCell::new(Recorder::new(from, until)),
                    stats: RefCell::new(PacerStats::default()),
                }),
                counter: counter.clone(),
                errors: Cell::new(0),
                first_error: RefCell::new(None),
            });
            let mut tasks = Vec::with_capacity(streams);
            for (c, connection) in connections.iter().enumerate() {
                for d in 0..args.depth {
                    let worker = Worker {
                        connection: connection.clone(),
                        workload: workload.clone(),
                        op,
                        mode,
                        seed: (c * args.depth + d) as u64 + 1,
                        stream: c * args.depth + d,
                    };
                    tasks.push(compio::runtime::spawn(work(worker, shared.clone())));
                }
            }
            let name = format!("{} {}", op.name(), mode_name(mode));
            progress.phase(&format!("{name} warm-up"), warmup);
            compio::time::sleep(warmup.saturating_sub(origin.elapsed())).await;
            shared.phase.set(MEASURING);
            progress.phase(&name, duration);
            let started = Instant::now();
            compio::time::sleep((warmup + duration).saturating_sub(origin.elapsed())).await;
            shared.phase.set(STOPPING);
            let seconds = match rate {
                Some(_) => duration.as_secs_f64(),
                None => started.elapsed().as_secs_f64(),
            };
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
            let name = format!(
                "{} {} c={} d={}",
                op.name(),
                mode_name(mode),
                args.clients,
                args.depth
            );
            let series = match (&shared.open, rate) {
                (Some(open), Some(rate)) => {
                    let recorder = open.recorder.borrow();
                    Series::new(
                        "grpc",
                        &name,
                        &format!("{latency_of}, from its intended send time (open loop)"),
                        &recorder.histogram,
                        recorder.operations,
                        seconds,
                        shared.errors.get(),
                    )
                    .with_open_loop(OpenLoopSummary::new(
                        rate,
                        streams,
                        &open.stats.borrow(),
                        recorder.unsent,
                    ))
                }
                _ => Series::new(
                    "grpc",
                    &name,
                    &latency_of,
                    &shared.histogram.borrow(),
                    shared.operations.get(),
                    seconds,
                    shared.errors.get(),
                ),
            };
            results.push(series);
        }
        Ok(results)
    });
    progress.finish();
    results
}

fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::Execute => "batch=1".into(),
        Mode::Batch(n) => format!("batch={n}"),
        Mode::Unary => "unary".into(),
    }
}

/// One stream. Closed loop: a call, its answer, the next call, until the phase is STOPPING.
/// Open loop: a call at each of the stream's intended times (at once when overdue), until the
/// end of the measured window.
async fn work(worker: Worker, shared: Rc<Shared>) {
    let mut rng = Rng::new(worker.seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let per_call = worker.mode.requests_per_call();
    let mut batch = Vec::with_capacity(per_call);
    let mut pacer = shared.open.as_ref().map(|open| {
        let from = open.recorder.borrow().from_ns;
        Pacer::new(0, open.calls_per_sec, open.streams, worker.stream).account_from(from)
    });
    loop {
        // Open loop: the intended time of this call.
        let mut intended = None;
        match (&shared.open, pacer.as_mut()) {
            (Some(open), Some(pacer)) => {
                let until = open.recorder.borrow().until_ns;
                if pacer.next_intended_ns() >= until {
                    break;
                }
                let now = open_loop::wait_async(pacer, &open.clock).await;
                if now >= until {
                    open.recorder.borrow_mut().finish(pacer, now);
                    break;
                }
                intended = Some(pacer.take(now));
            }
            _ => {
                if shared.phase.get() == STOPPING {
                    break;
                }
            }
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
        shared.counter.add(per_call as u64);
        let measuring = match (&shared.open, intended) {
            (Some(open), Some(intended)) => {
                let mut recorder = open.recorder.borrow_mut();
                match outcome {
                    Ok(_) => recorder.record(intended, open.clock.now_ns(), per_call as u64),
                    Err(_) => recorder.measures(intended),
                }
            }
            _ => shared.phase.get() == MEASURING,
        };
        let closed = shared.open.is_none();
        match outcome {
            Ok(bad) => {
                if measuring && closed {
                    shared
                        .histogram
                        .borrow_mut()
                        .saturating_record(elapsed.max(1));
                    shared
                        .operations
                        .set(shared.operations.get() + per_call as u64);
                }
                if measuring && bad > 0 {
                    shared.errors.set(shared.errors.get() + bad);
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
                break;
            }
        }
    }
    if let (Some(open), Some(pacer)) = (&shared.open, &pacer) {
        open.stats.borrow_mut().merge(&pacer.stats());
    }
}

fn request(worker: &Worker, rng: &mut Rng) -> Request {
    let key = worker.workload.key(rng);
    match worker.op.pick(rng) {
        Op::Get => Request::Get { key },
        _ => Request::Set {
            key,
            value: worker.workload.value(rng),
            options: SetOptions::default(),
        },
    }
}

/// One unary Get or Set; `Ok(true)` when the answer is not what a preloaded key gives.
async fn unary_call(worker: &Worker, rng: &mut Rng) -> Result<bool, ClientError> {
    let key = worker.workload.key(rng);
    match worker.op.pick(rng) {
        Op::Get => {
            let message = v1::GetRequest { key }.encode_to_vec();
            let answer = worker.connection.unary_raw(GET_PATH, message).await?;
            let response = v1::GetResponse::decode(answer)
                .map_err(|error| ClientError::Protocol(format!("bad GetResponse: {error}")))?;
            Ok(!worker.workload.value_size.contains(response.value.len()))
        }
        _ => {
            let message = v1::SetRequest {
                key,
                value: worker.workload.value(rng),
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
    let mut chunks = workload.preload_chunks(PRELOAD_CHUNK);
    if !unary {
        for pairs in chunks {
            match connection.execute(Request::MSet { pairs }).await {
                Ok(Response::Ok) => {}
                Ok(other) => return Err(format!("preloading the keys: MSET answered {other:?}")),
                Err(error) => return Err(format!("preloading the keys: {error}")),
            }
        }
        return Ok(());
    }
    let mset = |chunk: Vec<(Bytes, Bytes)>| {
        v1::MSetRequest {
            pairs: chunk
                .into_iter()
                .map(|(key, value)| v1::KeyValue { key, value })
                .collect(),
        }
        .encode_to_vec()
    };
    let first = chunks.next().unwrap_or_default();
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
                    for (index, key) in keys.iter().enumerate().skip(i).step_by(lanes) {
                        let message = v1::SetRequest {
                            key: key.clone(),
                            value: workload.preload_value(index),
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
