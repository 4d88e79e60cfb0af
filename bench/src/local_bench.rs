//! The `local` scenario: closed-loop load through shared memory on a running instance
//! (`veddb-server --create --name NAME`).
//!
//! `--clients` threads each attach their own session; each sends `--depth` requests (to their
//! owning cores' rings) before it waits for their answers, so `--depth 1` measures the round
//! trip of one request and larger depths measure pipelined throughput. GETs read the value in
//! place (`get_view`, no copy) unless `--copy`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use argh::FromArgs;
use hdrhistogram::Histogram;
use veddb_client::local::{GetResult, LocalConnection};
use veddb_wire::{Request, Response, SetOptions};

use crate::report::{histogram, Series};
use crate::workload::{parse_duration, Op, Rng, Workload};

/// Keys per MSET while preloading.
const PRELOAD_CHUNK: usize = 1024;

/// Closed-loop load through shared memory on a running local instance.
#[derive(FromArgs)]
#[argh(subcommand, name = "local")]
pub struct LocalArgs {
    #[argh(option, default = "String::from(\"veddb_main\")")]
    /// instance name (veddb-server --create --name NAME; default veddb_main)
    pub instance: String,
    #[argh(option, default = "String::from(\"get,set\")")]
    /// operations, comma-separated to measure several in turn: get, set, mix (default get,set)
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
    /// client threads, one session each (default 1)
    pub clients: usize,
    #[argh(option, default = "1")]
    /// requests in flight per client: sent together, then awaited (default 1)
    pub depth: usize,
    #[argh(switch)]
    /// GET copies the value out (execute) instead of reading it in place (get_view)
    pub copy: bool,
    #[argh(option, default = "String::from(\"3s\")")]
    /// measured time per operation (default 3s)
    pub duration: String,
    #[argh(option, default = "String::from(\"500ms\")")]
    /// warm-up time per operation (default 500ms)
    pub warmup: String,
    #[argh(option)]
    /// CPU to pin the client threads to (each thread pins itself; default: not pinned)
    pub pin: Option<usize>,
    #[argh(option)]
    /// write the results as JSON to this file
    pub json: Option<String>,
}

pub fn settings(args: &LocalArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "local", "instance": args.instance, "op": args.op,
        "get_ratio": args.get_ratio, "keys": args.keys, "key_size": args.key_size,
        "value_size": args.value_size, "clients": args.clients, "depth": args.depth,
        "copy": args.copy, "duration": args.duration, "warmup": args.warmup, "pin": args.pin,
    })
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

struct Outcome {
    histogram: Histogram<u64>,
    operations: u64,
    errors: u64,
    seconds: f64,
}

fn pin_thread(cpu: usize) {
    let _ = compio::runtime::RuntimeBuilder::new()
        .thread_affinity(std::collections::HashSet::from([cpu]))
        .build();
}

pub fn run(args: &LocalArgs) -> Result<Vec<Series>, String> {
    let ops = Op::parse_list(&args.op, args.get_ratio)?;
    if args.clients == 0 || args.clients > 256 {
        return Err("--clients must be between 1 and 256".into());
    }
    if args.depth == 0 || args.depth > 4096 {
        return Err("--depth must be between 1 and 4096".into());
    }
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    let workload = Arc::new(Workload::new(args.keys, args.key_size, args.value_size)?);
    // Preload every key.
    {
        let connection = LocalConnection::connect(&args.instance).map_err(|error| {
            format!("cannot attach to the instance {:?}: {error}", args.instance)
        })?;
        for chunk in workload.keys.chunks(PRELOAD_CHUNK) {
            let pairs = chunk
                .iter()
                .map(|key| (key.clone(), workload.value.clone()))
                .collect();
            match connection.execute(Request::MSet { pairs }) {
                Ok(Response::Ok) => {}
                Ok(other) => return Err(format!("preload: unexpected answer {other:?}")),
                Err(error) => return Err(format!("preload: {error}")),
            }
        }
    }
    let mut results = Vec::new();
    for op in ops {
        let phase = Arc::new(AtomicU8::new(WARMING));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for client in 0..args.clients {
            let (phase, outcomes, workload) = (phase.clone(), outcomes.clone(), workload.clone());
            let (instance, depth, copy, pin) =
                (args.instance.clone(), args.depth, args.copy, args.pin);
            threads.push(std::thread::spawn(move || -> Result<(), String> {
                if let Some(cpu) = pin {
                    pin_thread(cpu);
                }
                let connection = LocalConnection::connect(&instance)
                    .map_err(|error| format!("client {client}: {error}"))?;
                let outcome = client_loop(&connection, &workload, op, depth, copy, client, &phase);
                outcomes.lock().unwrap().push(outcome);
                Ok(())
            }));
        }
        std::thread::sleep(warmup);
        phase.store(MEASURING, Ordering::SeqCst);
        std::thread::sleep(duration);
        phase.store(STOPPING, Ordering::SeqCst);
        for thread in threads {
            thread
                .join()
                .map_err(|_| "a client thread panicked".to_string())??;
        }
        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
        let mut merged = histogram();
        let (mut operations, mut errors, mut seconds) = (0, 0, 0.0f64);
        for outcome in &outcomes {
            merged
                .add(&outcome.histogram)
                .map_err(|error| error.to_string())?;
            operations += outcome.operations;
            errors += outcome.errors;
            seconds = seconds.max(outcome.seconds);
        }
        let latency_of = if args.depth == 1 {
            "one request, send to answer".to_string()
        } else {
            format!("a pipelined batch of {} requests", args.depth)
        };
        let name = if args.copy || op == Op::Set {
            op.name()
        } else {
            format!("{} (in place)", op.name())
        };
        results.push(Series::new(
            "local",
            &name,
            &latency_of,
            &merged,
            operations,
            seconds,
            errors,
        ));
    }
    Ok(results)
}

fn client_loop(
    connection: &LocalConnection,
    workload: &Workload,
    op: Op,
    depth: usize,
    copy: bool,
    client: usize,
    phase: &AtomicU8,
) -> Outcome {
    let mut rng = Rng::new(0x5eed ^ (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut histogram = histogram();
    let (mut operations, mut errors) = (0u64, 0u64);
    let mut started: Option<Instant> = None;
    let mut batch = Vec::with_capacity(depth);
    loop {
        let now_phase = phase.load(Ordering::Relaxed);
        if now_phase == STOPPING {
            break;
        }
        if now_phase == MEASURING && started.is_none() {
            started = Some(Instant::now());
        }
        batch.clear();
        for _ in 0..depth {
            let key = workload.keys[rng.below(workload.keys.len())].clone();
            batch.push(match op.pick(&mut rng) {
                Op::Get => Request::Get { key },
                _ => Request::Set {
                    key,
                    value: workload.value.clone(),
                    options: SetOptions::default(),
                },
            });
        }
        let t0 = Instant::now();
        let failed = if depth == 1 {
            match batch.pop().expect("one request") {
                Request::Get { key } if !copy => match connection.get_view(key) {
                    Ok(GetResult::View(view)) => {
                        std::hint::black_box(view.bytes().first());
                        0
                    }
                    Ok(_) => 0,
                    Err(_) => 1,
                },
                request => match connection.execute(request) {
                    Ok(Response::Error(_)) | Err(_) => 1,
                    Ok(_) => 0,
                },
            }
        } else {
            match connection.execute_many(&batch) {
                Ok(responses) => responses
                    .iter()
                    .filter(|response| matches!(response, Response::Error(_)))
                    .count() as u64,
                Err(_) => depth as u64,
            }
        };
        let elapsed = t0.elapsed();
        if started.is_some() {
            let _ = histogram.record(elapsed.as_nanos().max(1) as u64);
            operations += depth as u64;
            errors += failed;
        }
    }
    Outcome {
        histogram,
        operations,
        errors,
        seconds: started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_before_attaching() {
        let args = |extra: &[&str]| {
            let mut all = vec!["--instance", "none-such"];
            all.extend_from_slice(extra);
            LocalArgs::from_args(&["local"], &all).expect("parses")
        };
        assert!(run(&args(&["--clients", "0"]))
            .unwrap_err()
            .contains("--clients"));
        assert!(run(&args(&["--depth", "0"]))
            .unwrap_err()
            .contains("--depth"));
        assert!(run(&args(&["--op", "nope"])).unwrap_err().contains("--op"));
        // A missing instance is a clear error.
        let error = run(&args(&["--duration", "10ms"])).unwrap_err();
        assert!(error.contains("none-such"), "{error}");
    }
}
