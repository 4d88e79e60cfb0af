//! `veddb-bench`: VedDB's benchmark harness.
//!
//! Scenarios so far: `shard` (one shard in-process, no I/O), `forward` (GETs that one core
//! forwards to another over the engine's inbox mesh) and `grpc` (closed-loop gRPC load on a
//! running server: VedDB, or the tonic peer in `bench/tonic-peer/`). Every run prints
//! p50/p90/p99/p99.9/max and throughput, and `--json FILE` writes every figure with the settings
//! and the machine.

mod grpc_bench;
mod local_bench;
mod report;
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
use veddb_engine::{Engine, EngineConfig};
use veddb_shard::{Config, Shard};
use veddb_wire::{shard_for_key, Request, Response, SetOptions};

use report::{histogram, Machine, Report, Series};
use workload::{parse_duration, Op, Rng, Workload};

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
    #[argh(option, default = "64")]
    /// value size in bytes (default 64)
    value_size: usize,
    #[argh(option, default = "String::from(\"3s\")")]
    /// measured time per operation (default 3s)
    duration: String,
    #[argh(option, default = "String::from(\"500ms\")")]
    /// warm-up time per operation (default 500ms)
    warmup: String,
    #[argh(option, default = "0")]
    /// CPU to pin the benchmark thread to (default 0)
    pin: usize,
    #[argh(option)]
    /// write the results as JSON to this file
    json: Option<String>,
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
    #[argh(option, default = "64")]
    /// value size in bytes (default 64)
    value_size: usize,
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
}

fn main() {
    let top: Top = argh::from_env();
    let outcome = match top.scenario {
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
    };
    match outcome {
        Ok((settings, results, json)) => {
            report::print_table(&results);
            if let Some(path) = json {
                let report = Report {
                    settings,
                    machine: Machine::current(),
                    results,
                };
                if let Err(error) = report::write_json(&path, &report) {
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

fn settings_shard(args: &ShardArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "shard", "op": args.op, "get_ratio": args.get_ratio, "keys": args.keys,
        "key_size": args.key_size, "value_size": args.value_size, "duration": args.duration,
        "warmup": args.warmup, "pin": args.pin,
    })
}

fn settings_forward(args: &ForwardArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "forward", "op": args.op, "get_ratio": args.get_ratio, "cores": args.cores,
        "depth": args.depth, "one_way": args.one_way, "keys": args.keys, "key_size": args.key_size,
        "value_size": args.value_size, "duration": args.duration, "warmup": args.warmup,
        "spin_us": args.spin_us,
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Operations per timed batch in the `shard` scenario (one clock read per batch, not per op).
const SHARD_BATCH: u64 = 64;

fn run_shard(args: &ShardArgs) -> Result<Vec<Series>, String> {
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    let workload = Workload::new(args.keys, args.key_size, args.value_size)?;
    let ops = Op::parse_list(&args.op, args.get_ratio)?;
    let runtime = compio::runtime::RuntimeBuilder::new()
        .thread_affinity(HashSet::from([args.pin]))
        .build()
        .map_err(|error| {
            format!(
                "cannot create a runtime pinned to CPU {}: {error}",
                args.pin
            )
        })?;
    runtime.block_on(async move {
        let budget = (workload.keys.len() as u64) * (args.key_size + args.value_size) as u64 * 4 + (256 << 20);
        let mut shard = Shard::new(0, Config { memory_bytes_limit: budget, ..Config::default() });
        let now = unix_ms();
        for key in &workload.keys {
            shard.handle(Request::Set { key: key.clone(), value: workload.value.clone(), options: SetOptions::default() }, now);
        }
        let mut results = Vec::new();
        for op in ops {
            let mut rng = Rng::new(42);
            let mut run = |shard: &mut Shard, until: Instant, histogram: Option<&mut Histogram<u64>>| -> (u64, u64) {
                let mut done = 0u64;
                let mut errors = 0u64;
                let mut histogram = histogram;
                while Instant::now() < until {
                    let started = Instant::now();
                    let now = unix_ms();
                    for _ in 0..SHARD_BATCH {
                        let key = workload.keys[rng.below(workload.keys.len())].clone();
                        let response = match op.pick(&mut rng) {
                            Op::Get => shard.handle(Request::Get { key }, now),
                            _ => shard.handle(
                                Request::Set { key, value: workload.value.clone(), options: SetOptions::default() },
                                now,
                            ),
                        };
                        if matches!(response, Response::Error(_) | Response::NotFound) {
                            errors += 1;
                        }
                    }
                    if let Some(histogram) = histogram.as_deref_mut() {
                        let per_op = started.elapsed().as_nanos() as u64 / SHARD_BATCH;
                        histogram.saturating_record(per_op.max(1));
                    }
                    done += SHARD_BATCH;
                }
                (done, errors)
            };
            run(&mut shard, Instant::now() + warmup, None);
            let mut measured = histogram();
            let started = Instant::now();
            let (done, errors) = run(&mut shard, started + duration, Some(&mut measured));
            let seconds = started.elapsed().as_secs_f64();
            results.push(Series::new(
                "shard",
                &op.name(),
                "mean per operation over batches of 64 back-to-back operations, one core, in-process",
                &measured,
                done,
                seconds,
                errors,
            ));
        }
        Ok(results)
    })
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

struct CoreResult {
    histogram: Histogram<u64>,
    operations: u64,
    errors: u64,
}

fn run_forward(args: &ForwardArgs) -> Result<Vec<Series>, String> {
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
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
    let workload = Workload::new(args.keys, args.key_size, args.value_size)?;
    let engine = Engine::start(EngineConfig {
        cores: args.cores,
        memory_bytes_limit: (args.keys as u64) * (args.key_size + args.value_size) as u64 * 4
            + (512 << 20),
        spin: Duration::from_micros(args.spin_us),
        ..EngineConfig::default()
    })
    .map_err(|error| error.to_string())?;
    let shard_count = engine.shard_count();
    // Load the keys (MSET scatters them to their owners).
    for chunk in workload.keys.chunks(4096) {
        let pairs = chunk
            .iter()
            .map(|key| (key.clone(), workload.value.clone()))
            .collect();
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
    let mut results = Vec::new();
    for depth in depths {
        let phase = Arc::new(AtomicU8::new(WARMING));
        let collected = Arc::new(Mutex::new(Vec::<CoreResult>::new()));
        let finished = Arc::new(AtomicUsize::new(0));
        for &core in &senders {
            let targets = Arc::new(owned[(core + 1) % args.cores].clone());
            let value = workload.value.clone();
            let phase = phase.clone();
            let collected = collected.clone();
            let finished = finished.clone();
            engine.run_on(core, move |context| {
                let shared = Rc::new(RefCell::new(CoreResult {
                    histogram: histogram(),
                    operations: 0,
                    errors: 0,
                }));
                let live = Rc::new(std::cell::Cell::new(depth));
                for task in 0..depth {
                    let context = context.clone();
                    let targets = targets.clone();
                    let value = value.clone();
                    let phase = phase.clone();
                    let shared = shared.clone();
                    let live = live.clone();
                    let collected = collected.clone();
                    let finished = finished.clone();
                    compio::runtime::spawn(async move {
                        let mut rng = Rng::new(core as u64 * 7919 + task as u64 + 1);
                        loop {
                            let now_phase = phase.load(Ordering::Relaxed);
                            if now_phase == STOPPING {
                                break;
                            }
                            let key = targets[rng.below(targets.len())].clone();
                            let request = match op.pick(&mut rng) {
                                Op::Get => Request::Get { key },
                                _ => Request::Set {
                                    key,
                                    value: value.clone(),
                                    options: SetOptions::default(),
                                },
                            };
                            let started = Instant::now();
                            let response = context.execute(request).await;
                            let elapsed = started.elapsed().as_nanos() as u64;
                            if now_phase == MEASURING {
                                let mut result = shared.borrow_mut();
                                result.histogram.saturating_record(elapsed.max(1));
                                result.operations += 1;
                                if !matches!(
                                    response,
                                    Response::Value { .. } | Response::Stored { .. }
                                ) {
                                    result.errors += 1;
                                }
                            }
                        }
                        live.set(live.get() - 1);
                        if live.get() == 0 {
                            let result = std::mem::replace(
                                &mut *shared.borrow_mut(),
                                CoreResult {
                                    histogram: histogram(),
                                    operations: 0,
                                    errors: 0,
                                },
                            );
                            collected.lock().expect("collector").push(result);
                            finished.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                    .detach();
                }
            });
        }
        std::thread::sleep(warmup);
        phase.store(MEASURING, Ordering::SeqCst);
        let started = Instant::now();
        std::thread::sleep(duration);
        phase.store(STOPPING, Ordering::SeqCst);
        let seconds = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(60);
        while finished.load(Ordering::SeqCst) < senders.len() {
            if Instant::now() > deadline {
                return Err("senders did not finish".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut merged = histogram();
        let mut operations = 0;
        let mut errors = 0;
        for result in collected.lock().expect("collector").drain(..) {
            merged.add(&result.histogram).map_err(|e| e.to_string())?;
            operations += result.operations;
            errors += result.errors;
        }
        let mode = if args.one_way { "one-way" } else { "all cores" };
        results.push(Series::new(
            "forward",
            &format!("{} depth={depth} {mode}", op.name()),
            "request sent to answer received, per operation, forwarded to another core",
            &merged,
            operations,
            seconds,
            errors,
        ));
    }
    engine.shutdown();
    Ok(results)
}
