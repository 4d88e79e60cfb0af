//! `veddb-bench`: VedDB's benchmark harness.
//!
//! Scenarios so far: `shard` (one shard in-process, no I/O), `forward` (GETs that one core
//! forwards to another over the engine's inbox mesh), `grpc` (gRPC load on a running server:
//! VedDB, or the tonic peer in `bench/tonic-peer/`) and `local` (shared memory). Every run prints
//! p50/p90/p99/p99.9/max and throughput, and `--json FILE` writes every figure with the settings,
//! the machine and each series' latency percentile curve; `--svg FILE` plots those curves.
//!
//! Load is closed-loop by default (each sender waits for its answer, then sends again); with
//! `--rate OPS` it is open-loop: requests at fixed intended times, latency measured from them
//! (see `open_loop.rs`). `veddb-bench compare A.json B.json [--svg FILE]` compares two runs.

mod compare;
mod grpc_bench;
mod local_bench;
mod nats_bench;
mod open_loop;
mod progress;
mod pubsub_bench;
mod redis_bench;
mod report;
mod ring_bench;
mod svg;
mod workload;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;
use bytes::Bytes;
use hdrhistogram::Histogram;
use veddb_engine::{available_cpus, Engine, EngineConfig};
use veddb_shard::{Config, Shard};
use veddb_wire::{shard_for_key, Request, Response, SetOptions};

use open_loop::{Clock, MonotonicClock, OpenLoopSummary, Pacer, PacerStats, Recorder};
use progress::Progress;
use report::{histogram, Machine, Report, Series};
use workload::{parse_duration, Distribution, Op, Rng, ValueSize, Workload};

/// VedDB benchmark harness.
#[derive(FromArgs)]
struct Top {
    #[argh(subcommand)]
    scenario: Scenario,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Scenario {
    Shard(ShardArgs),
    Forward(ForwardArgs),
    Grpc(grpc_bench::GrpcArgs),
    Local(local_bench::LocalArgs),
    Compare(compare::CompareArgs),
    Redis(redis_bench::RedisArgs),
    Nats(nats_bench::NatsArgs),
    Pubsub(pubsub_bench::PubsubArgs),
    Ring(ring_bench::RingArgs),
}

/// One shard in-process on one core: the cost of the data structures alone.
#[derive(FromArgs)]
#[argh(subcommand, name = "shard")]
struct ShardArgs {
    #[argh(option, default = "String::from(\"get,set\")")]
    /// operations to measure, comma-separated: get, set, mix (default get,set)
    op: String,
    #[argh(option, default = "0.8")]
    /// share of GETs in `mix` (default 0.8)
    get_ratio: f64,
    #[argh(option, default = "100_000")]
    /// number of distinct keys (default 100000)
    keys: usize,
    #[argh(option, default = "16")]
    /// key size in bytes (default 16)
    key_size: usize,
    #[argh(option, default = "String::from(\"64\")")]
    /// value size in bytes, or a range MIN..MAX of uniformly random sizes (default 64)
    value_size: String,
    #[argh(option, default = "String::from(\"uniform\")")]
    /// key distribution: uniform or zipf (default uniform)
    distribution: String,
    #[argh(option, default = "0.99")]
    /// skew of --distribution zipf: key k has weight 1/k^theta (default 0.99)
    zipf_theta: f64,
    #[argh(option)]
    /// open loop: this many requests per second in total, latency from each one's intended
    /// send time (default: closed loop)
    rate: Option<f64>,
    #[argh(option, default = "String::from(\"3s\")")]
    /// measured time per operation (default 3s)
    duration: String,
    #[argh(option, default = "String::from(\"500ms\")")]
    /// warm-up time per operation (default 500ms)
    warmup: String,
    #[argh(option, default = "0")]
    /// CPU to pin the benchmark thread to (default 0); with --cores N, cores use CPUs PIN..PIN+N
    pin: usize,
    #[argh(option, default = "1")]
    /// independent shards, one per thread and CPU, measured together (default 1): the sum of
    /// their ops/s and their merged latencies
    cores: usize,
    #[argh(option)]
    /// write the results as JSON to this file
    json: Option<String>,
    #[argh(option)]
    /// plot the latency percentiles as SVG to this file
    svg: Option<String>,
}

/// GETs forwarded from core to core over the engine's inbox mesh.
#[derive(FromArgs)]
#[argh(subcommand, name = "forward")]
struct ForwardArgs {
    #[argh(option, default = "String::from(\"get\")")]
    /// operations: get, set or mix (default get)
    op: String,
    #[argh(option, default = "0.8")]
    /// share of GETs in `mix` (default 0.8)
    get_ratio: f64,
    #[argh(option, default = "2")]
    /// engine cores (default 2)
    cores: usize,
    #[argh(option, default = "String::from(\"1,64\")")]
    /// requests in flight per core, comma-separated to measure several (default 1,64)
    depth: String,
    #[argh(switch)]
    /// only core 0 sends (default: every core sends to the next one, so all are busy)
    one_way: bool,
    #[argh(option, default = "100_000")]
    /// number of distinct keys (default 100000)
    keys: usize,
    #[argh(option, default = "16")]
    /// key size in bytes (default 16)
    key_size: usize,
    #[argh(option, default = "String::from(\"64\")")]
    /// value size in bytes, or a range MIN..MAX of uniformly random sizes (default 64)
    value_size: String,
    #[argh(option, default = "String::from(\"uniform\")")]
    /// key distribution: uniform or zipf (default uniform)
    distribution: String,
    #[argh(option, default = "0.99")]
    /// skew of --distribution zipf: key k has weight 1/k^theta (default 0.99)
    zipf_theta: f64,
    #[argh(option)]
    /// open loop: this many requests per second in total, latency from each one's intended
    /// send time (default: closed loop)
    rate: Option<f64>,
    #[argh(option, default = "String::from(\"3s\")")]
    /// measured time per depth (default 3s)
    duration: String,
    #[argh(option, default = "String::from(\"500ms\")")]
    /// warm-up time per depth (default 500ms)
    warmup: String,
    #[argh(option, default = "50")]
    /// engine spin window in microseconds (default 50)
    spin_us: u64,
    #[argh(option)]
    /// write the results as JSON to this file
    json: Option<String>,
    #[argh(option)]
    /// plot the latency percentiles as SVG to this file
    svg: Option<String>,
}

/// `veddb-bench --compare A.json B.json [...]` is the `compare` subcommand spelled as an option
/// (as scripts outside the project call it).
fn arguments() -> Vec<String> {
    let mut arguments: Vec<String> = std::env::args().collect();
    if arguments.get(1).map(String::as_str) == Some("--compare") {
        arguments[1] = "compare".into();
    }
    arguments
}

fn main() {
    let arguments = arguments();
    let strings: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let command = std::path::Path::new(strings[0])
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("veddb-bench");
    let top: Top = match Top::from_args(&[command], &strings[1..]) {
        Ok(top) => top,
        Err(early_exit) => {
            match early_exit.status {
                Ok(()) => println!("{}", early_exit.output),
                Err(()) => eprintln!(
                    "{}\nRun {command} --help for more information.",
                    early_exit.output
                ),
            }
            std::process::exit(if early_exit.status.is_ok() { 0 } else { 2 });
        }
    };
    // Before the run: a scenario that pins the main thread (shard) would leave one CPU visible.
    let machine = Machine::current();
    let outcome = run(top.scenario);
    match outcome {
        Ok((settings, results, json)) => {
            report::print_table(&results);
            // A scenario that takes `--svg FILE` records it in its settings.
            let svg = settings
                .get("svg")
                .and_then(|path| path.as_str())
                .map(String::from);
            let report = Report {
                settings,
                machine,
                results,
            };
            if let Some(path) = json {
                if let Err(error) = report::write_json(&path, &report) {
                    eprintln!("veddb-bench: cannot write {path}: {error}");
                    std::process::exit(1);
                }
                println!("wrote {path}");
            }
            if let Some(path) = svg {
                if let Err(error) = std::fs::write(&path, svg::report_plot(&report)) {
                    eprintln!("veddb-bench: cannot write {path}: {error}");
                    std::process::exit(1);
                }
                println!("wrote {path}");
            }
        }
        Err(message) => {
            eprintln!("veddb-bench: {message}");
            std::process::exit(2);
        }
    }
}

/// Runs the scenario: its settings, its results and where to write them as JSON.
fn run(scenario: Scenario) -> Result<(serde_json::Value, Vec<Series>, Option<String>), String> {
    match scenario {
        Scenario::Compare(args) => compare_and_exit(&args),
        Scenario::Shard(args) => {
            run_shard(&args).map(|results| (settings_shard(&args), results, args.json))
        }
        Scenario::Forward(args) => {
            run_forward(&args).map(|results| (settings_forward(&args), results, args.json))
        }
        Scenario::Grpc(args) => {
            grpc_bench::run(&args).map(|results| (grpc_bench::settings(&args), results, args.json))
        }
        Scenario::Local(args) => local_bench::run(&args)
            .map(|results| (local_bench::settings(&args), results, args.json)),
        Scenario::Redis(args) => redis_bench::run(&args)
            .map(|results| (redis_bench::settings(&args), results, args.json)),
        Scenario::Nats(args) => {
            nats_bench::run(&args).map(|results| (nats_bench::settings(&args), results, args.json))
        }
        Scenario::Pubsub(args) => pubsub_bench::run(&args)
            .map(|results| (pubsub_bench::settings(&args), results, args.json)),
        Scenario::Ring(args) => {
            ring_bench::run(&args).map(|results| (ring_bench::settings(&args), results, args.json))
        }
    }
}

/// `veddb-bench compare`: prints the comparison, then exits (2 on an error).
fn compare_and_exit(args: &compare::CompareArgs) -> ! {
    if let Err(message) = compare::run(args) {
        eprintln!("veddb-bench: {message}");
        std::process::exit(2);
    }
    std::process::exit(0);
}

fn settings_shard(args: &ShardArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "shard", "op": args.op, "get_ratio": args.get_ratio, "keys": args.keys,
        "key_size": args.key_size, "value_size": args.value_size,
        "distribution": args.distribution, "zipf_theta": args.zipf_theta, "rate": args.rate,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "duration": args.duration, "warmup": args.warmup, "pin": args.pin, "cores": args.cores, "svg": args.svg,
    })
}

fn settings_forward(args: &ForwardArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "forward", "op": args.op, "get_ratio": args.get_ratio, "cores": args.cores,
        "depth": args.depth, "one_way": args.one_way, "keys": args.keys, "key_size": args.key_size,
        "value_size": args.value_size, "distribution": args.distribution,
        "zipf_theta": args.zipf_theta, "rate": args.rate,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "duration": args.duration, "warmup": args.warmup, "spin_us": args.spin_us, "svg": args.svg,
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Operations per timed batch in the `shard` scenario (one clock read per batch, not per op).
const SHARD_BATCH: u64 = 64;

/// One operation on the shard; `true` when the answer is not what a preloaded key gives.
fn shard_op(shard: &mut Shard, workload: &Workload, op: Op, rng: &mut Rng, now: u64) -> bool {
    let key = workload.key(rng);
    let response = match op.pick(rng) {
        Op::Get => shard.handle(Request::Get { key }, now),
        _ => shard.handle(
            Request::Set {
                key,
                value: workload.value(rng),
                options: SetOptions::default(),
            },
            now,
        ),
    };
    matches!(response, Response::Error(_) | Response::NotFound)
}

/// One shard's figures for one operation: the series and what it was made from.
struct ShardPart {
    series: Series,
    histogram: Histogram<u64>,
    seconds: f64,
}

fn run_shard(args: &ShardArgs) -> Result<Vec<Series>, String> {
    if args.cores == 0 || args.cores > available_cpus() * 4 {
        return Err(format!(
            "--cores must be between 1 and {}, not {}",
            available_cpus() * 4,
            args.cores
        ));
    }
    if args.cores == 1 {
        return Ok(run_shard_on(args, args.pin)?
            .into_iter()
            .map(|part| part.series)
            .collect());
    }
    if args.rate.is_some() {
        return Err(
            "--rate with --cores above 1 is not supported: run one core per process".into(),
        );
    }
    // N shards on N threads, each pinned to its own CPU, started together.
    let parts: Vec<Result<Vec<ShardPart>, String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.cores)
            .map(|core| {
                let pin = (args.pin + core) % available_cpus();
                scope.spawn(move || run_shard_on(args, pin))
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err("a core panicked".into()))
            })
            .collect()
    });
    let mut merged: Vec<(Series, Histogram<u64>, u64, u64, f64)> = Vec::new();
    for part in parts {
        for (index, part) in part?.into_iter().enumerate() {
            if merged.len() <= index {
                merged.push((part.series.clone(), histogram(), 0, 0, 0.0));
            }
            let entry = &mut merged[index];
            entry
                .1
                .add(&part.histogram)
                .map_err(|error| error.to_string())?;
            entry.2 += part.series.count;
            entry.3 += part.series.errors;
            entry.4 = entry.4.max(part.seconds);
        }
    }
    Ok(merged
        .into_iter()
        .map(|(first, histogram, count, errors, seconds)| {
            Series::new(
                "shard",
                &first.op,
                &format!(
                    "mean per operation over batches of 64 back-to-back operations, {} independent shards on {} cores, in-process",
                    args.cores, args.cores
                ),
                &histogram,
                count,
                seconds,
                errors,
            )
        })
        .collect())
}

fn run_shard_on(args: &ShardArgs, pin: usize) -> Result<Vec<ShardPart>, String> {
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    let rate = open_loop::check_rate(args.rate)?;
    let workload = Workload::with(
        args.keys,
        args.key_size,
        ValueSize::parse(&args.value_size)?,
        Distribution::parse(&args.distribution, args.zipf_theta)?,
    )?;
    let ops = Op::parse_list(&args.op, args.get_ratio)?;
    let runtime = compio::runtime::RuntimeBuilder::new()
        .thread_affinity(HashSet::from([pin]))
        .build()
        .map_err(|error| format!("cannot create a runtime pinned to CPU {pin}: {error}"))?;
    let progress = Progress::start();
    let counter = progress.counter();
    let results = runtime.block_on(async {
        let budget = workload.data_bytes() * 4 + (256 << 20);
        let mut shard = Shard::new(0, Config { memory_bytes_limit: budget, ..Config::default() });
        let now = unix_ms();
        for (i, key) in workload.keys.iter().enumerate() {
            shard.handle(
                Request::Set { key: key.clone(), value: workload.preload_value(i), options: SetOptions::default() },
                now,
            );
        }
        let mut results = Vec::new();
        for op in ops {
            let mut rng = Rng::new(42);
            if let Some(rate) = rate {
                // Open loop: one operation per slot, each timed from its intended time.
                let clock = MonotonicClock::starting_now();
                let from = warmup.as_nanos() as u64;
                let until = from + duration.as_nanos() as u64;
                let mut pacer = Pacer::new(0, rate, 1, 0).account_from(from);
                let mut recorder = Recorder::new(from, until);
                let mut errors = 0;
                let mut measuring = false;
                progress.phase(&format!("{} warm-up", op.name()), warmup);
                while pacer.next_intended_ns() < until {
                    let now = open_loop::wait_sync(&pacer, &clock);
                    if now >= until {
                        recorder.finish(&pacer, now);
                        break;
                    }
                    if !measuring && now >= from {
                        measuring = true;
                        progress.phase(&op.name(), duration);
                    }
                    let intended = pacer.take(now);
                    let failed = shard_op(&mut shard, &workload, op, &mut rng, unix_ms());
                    if recorder.record(intended, clock.now_ns(), 1) && failed {
                        errors += 1;
                    }
                    counter.add(1);
                }
                results.push(ShardPart {
                    series: Series::new(
                        "shard",
                        &op.name(),
                        "one operation, from its intended send time (open loop) to done, one core, in-process",
                        &recorder.histogram,
                        recorder.operations,
                        duration.as_secs_f64(),
                        errors,
                    )
                    .with_open_loop(OpenLoopSummary::new(rate, 1, &pacer.stats(), recorder.unsent)),
                    histogram: recorder.histogram.clone(),
                    seconds: duration.as_secs_f64(),
                });
                continue;
            }
            let mut run = |shard: &mut Shard, until: Instant, histogram: Option<&mut Histogram<u64>>| -> (u64, u64) {
                let mut done = 0u64;
                let mut errors = 0u64;
                let mut histogram = histogram;
                while Instant::now() < until {
                    let started = Instant::now();
                    let now = unix_ms();
                    for _ in 0..SHARD_BATCH {
                        if shard_op(shard, &workload, op, &mut rng, now) {
                            errors += 1;
                        }
                    }
                    if let Some(histogram) = histogram.as_deref_mut() {
                        let per_op = started.elapsed().as_nanos() as u64 / SHARD_BATCH;
                        histogram.saturating_record(per_op.max(1));
                    }
                    done += SHARD_BATCH;
                    counter.add(SHARD_BATCH);
                }
                (done, errors)
            };
            progress.phase(&format!("{} warm-up", op.name()), warmup);
            run(&mut shard, Instant::now() + warmup, None);
            progress.phase(&op.name(), duration);
            let mut measured = histogram();
            let started = Instant::now();
            let (done, errors) = run(&mut shard, started + duration, Some(&mut measured));
            let seconds = started.elapsed().as_secs_f64();
            results.push(ShardPart {
                series: Series::new(
                    "shard",
                    &op.name(),
                    "mean per operation over batches of 64 back-to-back operations, one core, in-process",
                    &measured,
                    done,
                    seconds,
                    errors,
                ),
                histogram: measured,
                seconds,
            });
        }
        Ok(results)
    });
    progress.finish();
    results
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

/// What the tasks of one core measured (all of them record into it).
struct CoreResult {
    /// Latencies and answered requests (the window matters in open loop only).
    recorder: Recorder,
    errors: u64,
    /// Open loop only.
    stats: PacerStats,
}

impl CoreResult {
    fn new(from: u64, until: u64) -> CoreResult {
        CoreResult {
            recorder: Recorder::new(from, until),
            errors: 0,
            stats: PacerStats::default(),
        }
    }

    fn merge(&mut self, other: &CoreResult) -> Result<(), String> {
        let (a, b) = (&mut self.recorder, &other.recorder);
        a.histogram.add(&b.histogram).map_err(|e| e.to_string())?;
        a.operations += b.operations;
        a.unsent += b.unsent;
        self.errors += other.errors;
        self.stats.merge(&other.stats);
        Ok(())
    }
}

/// One forwarding task's closed loop: a request to a key of the next core, its answer, the next.
#[allow(clippy::too_many_arguments)]
async fn forward_closed(
    context: veddb_engine::CoreContext,
    targets: Arc<Vec<Bytes>>,
    workload: Arc<Workload>,
    op: Op,
    seed: u64,
    phase: Arc<AtomicU8>,
    shared: Rc<RefCell<CoreResult>>,
    counter: Arc<progress::Counter>,
) {
    let sampler = workload.distribution.sampler(targets.len());
    let mut rng = Rng::new(seed);
    loop {
        let now_phase = phase.load(Ordering::Relaxed);
        if now_phase == STOPPING {
            break;
        }
        let request = forward_request(&targets, &sampler, &workload, op, &mut rng);
        let started = Instant::now();
        let response = context.execute(request).await;
        let elapsed = started.elapsed().as_nanos() as u64;
        counter.add(1);
        if now_phase == MEASURING {
            let mut result = shared.borrow_mut();
            result.recorder.histogram.saturating_record(elapsed.max(1));
            result.recorder.operations += 1;
            if !matches!(response, Response::Value { .. } | Response::Stored { .. }) {
                result.errors += 1;
            }
        }
    }
}

/// One forwarding task's open loop: sender `sender` of `senders` sharing `rate`, on the run's
/// clock, measuring the requests intended in `[from, until)`.
#[allow(clippy::too_many_arguments)]
async fn forward_open(
    context: veddb_engine::CoreContext,
    targets: Arc<Vec<Bytes>>,
    workload: Arc<Workload>,
    op: Op,
    seed: u64,
    (clock, rate, senders, sender, from, until): (MonotonicClock, f64, usize, usize, u64, u64),
    shared: Rc<RefCell<CoreResult>>,
    counter: Arc<progress::Counter>,
) {
    let sampler = workload.distribution.sampler(targets.len());
    let mut rng = Rng::new(seed);
    let mut pacer = Pacer::new(0, rate, senders, sender).account_from(from);
    debug_assert_eq!(shared.borrow().recorder.until_ns, until);
    while pacer.next_intended_ns() < until {
        let now = open_loop::wait_async(&pacer, &clock).await;
        if now >= until {
            shared.borrow_mut().recorder.finish(&pacer, now);
            break;
        }
        let request = forward_request(&targets, &sampler, &workload, op, &mut rng);
        let intended = pacer.take(now);
        let response = context.execute(request).await;
        counter.add(1);
        let mut result = shared.borrow_mut();
        if result.recorder.record(intended, clock.now_ns(), 1)
            && !matches!(response, Response::Value { .. } | Response::Stored { .. })
        {
            result.errors += 1;
        }
    }
    shared.borrow_mut().stats.merge(&pacer.stats());
}

fn forward_request(
    targets: &[Bytes],
    sampler: &workload::KeySampler,
    workload: &Workload,
    op: Op,
    rng: &mut Rng,
) -> Request {
    let key = targets[sampler.sample(rng)].clone();
    match op.pick(rng) {
        Op::Get => Request::Get { key },
        _ => Request::Set {
            key,
            value: workload.value(rng),
            options: SetOptions::default(),
        },
    }
}

fn run_forward(args: &ForwardArgs) -> Result<Vec<Series>, String> {
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    let rate = open_loop::check_rate(args.rate)?;
    if args.cores < 2 {
        return Err("forward needs at least 2 cores".into());
    }
    let depths: Vec<usize> = args
        .depth
        .split(',')
        .map(|d| d.trim().parse().map_err(|_| format!("bad --depth `{d}`")))
        .collect::<Result<_, _>>()?;
    if depths.iter().any(|&d| d == 0 || d > 4096) {
        return Err("--depth must be between 1 and 4096".into());
    }
    let ops = Op::parse_list(&args.op, args.get_ratio)?;
    if ops.len() != 1 {
        return Err("forward measures one --op at a time".into());
    }
    let op = ops[0];
    let workload = Arc::new(Workload::with(
        args.keys,
        args.key_size,
        ValueSize::parse(&args.value_size)?,
        Distribution::parse(&args.distribution, args.zipf_theta)?,
    )?);
    let engine = Engine::start(EngineConfig {
        cores: args.cores,
        memory_bytes_limit: workload.data_bytes() * 4 + (512 << 20),
        spin: Duration::from_micros(args.spin_us),
        ..EngineConfig::default()
    })
    .map_err(|error| error.to_string())?;
    let shard_count = engine.shard_count();
    // Load the keys (MSET scatters them to their owners).
    for pairs in workload.preload_chunks(4096) {
        if engine.call(Request::MSet { pairs }) != Response::Ok {
            return Err("loading the keys failed".into());
        }
    }
    // Each sending core targets the keys of the next core, so every request is forwarded.
    let mut owned: Vec<Vec<Bytes>> = vec![Vec::new(); shard_count as usize];
    for key in &workload.keys {
        owned[shard_for_key(key, shard_count) as usize].push(key.clone());
    }
    let senders: Vec<usize> = if args.one_way {
        vec![0]
    } else {
        (0..args.cores).collect()
    };
    let progress = Progress::start();
    let counters: Vec<_> = senders.iter().map(|_| progress.counter()).collect();
    let mut results = Vec::new();
    for depth in depths {
        let phase = Arc::new(AtomicU8::new(WARMING));
        let collected = Arc::new(Mutex::new(Vec::<CoreResult>::new()));
        let finished = Arc::new(AtomicUsize::new(0));
        let origin = Instant::now();
        let (from, until) = (
            warmup.as_nanos() as u64,
            (warmup + duration).as_nanos() as u64,
        );
        for (s, &core) in senders.iter().enumerate() {
            let targets = Arc::new(owned[(core + 1) % args.cores].clone());
            let workload = workload.clone();
            let phase = phase.clone();
            let collected = collected.clone();
            let finished = finished.clone();
            let counter = counters[s].clone();
            let sender_count = senders.len() * depth;
            engine.run_on(core, move |context| {
                let shared = Rc::new(RefCell::new(CoreResult::new(from, until)));
                let live = Rc::new(std::cell::Cell::new(depth));
                for task in 0..depth {
                    let seed = core as u64 * 7919 + task as u64 + 1;
                    let (context, targets, workload) =
                        (context.clone(), targets.clone(), workload.clone());
                    let (phase, shared, counter) = (phase.clone(), shared.clone(), counter.clone());
                    let (live, collected, finished) =
                        (live.clone(), collected.clone(), finished.clone());
                    compio::runtime::spawn(async move {
                        match rate {
                            None => {
                                forward_closed(
                                    context,
                                    targets,
                                    workload,
                                    op,
                                    seed,
                                    phase,
                                    shared.clone(),
                                    counter,
                                )
                                .await
                            }
                            Some(rate) => {
                                let schedule = (
                                    MonotonicClock::new(origin),
                                    rate,
                                    sender_count,
                                    s * depth + task,
                                    from,
                                    until,
                                );
                                forward_open(
                                    context,
                                    targets,
                                    workload,
                                    op,
                                    seed,
                                    schedule,
                                    shared.clone(),
                                    counter,
                                )
                                .await
                            }
                        }
                        live.set(live.get() - 1);
                        if live.get() == 0 {
                            let result = std::mem::replace(
                                &mut *shared.borrow_mut(),
                                CoreResult::new(from, until),
                            );
                            collected.lock().expect("collector").push(result);
                            finished.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                    .detach();
                }
            });
        }
        let name = format!("{} depth={depth}", op.name());
        progress.phase(&format!("{name} warm-up"), warmup);
        std::thread::sleep(warmup.saturating_sub(origin.elapsed()));
        phase.store(MEASURING, Ordering::SeqCst);
        progress.phase(&name, duration);
        let started = Instant::now();
        std::thread::sleep((warmup + duration).saturating_sub(origin.elapsed()));
        phase.store(STOPPING, Ordering::SeqCst);
        let seconds = match rate {
            Some(_) => duration.as_secs_f64(),
            None => started.elapsed().as_secs_f64(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while finished.load(Ordering::SeqCst) < senders.len() {
            if Instant::now() > deadline {
                return Err("senders did not finish".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut merged = CoreResult::new(from, until);
        for result in collected.lock().expect("collector").drain(..) {
            merged.merge(&result)?;
        }
        let mode = if args.one_way { "one-way" } else { "all cores" };
        let series = Series::new(
            "forward",
            &format!("{} depth={depth} {mode}", op.name()),
            match rate {
                None => "request sent to answer received, per operation, forwarded to another core",
                Some(_) => "request's intended send time (open loop) to answer received, per operation, forwarded to another core",
            },
            &merged.recorder.histogram,
            merged.recorder.operations,
            seconds,
            merged.errors,
        );
        results.push(match rate {
            None => series,
            Some(rate) => series.with_open_loop(OpenLoopSummary::new(
                rate,
                senders.len() * depth,
                &merged.stats,
                merged.recorder.unsent,
            )),
        });
    }
    progress.finish();
    engine.shutdown();
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_args(extra: &[&str]) -> ShardArgs {
        let mut all = vec!["--keys", "1000", "--duration", "50ms", "--warmup", "10ms"];
        all.extend_from_slice(extra);
        ShardArgs::from_args(&["shard"], &all).expect("parses")
    }

    #[test]
    fn shard_cores_add_up_and_are_checked() {
        assert!(run_shard(&shard_args(&["--cores", "0"]))
            .unwrap_err()
            .contains("--cores"));
        assert!(run_shard(&shard_args(&["--cores", "2", "--rate", "1000"]))
            .unwrap_err()
            .contains("--rate"));
        let results = run_shard(&shard_args(&["--cores", "2", "--op", "get"])).unwrap();
        assert_eq!(results.len(), 1);
        let series = &results[0];
        assert!(series.count > 0 && series.errors == 0, "{series:?}");
        assert!(series.latency_of.contains("2 independent shards"));
    }
}
