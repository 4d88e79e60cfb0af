//! The `local` scenario: load through shared memory on a running instance
//! (`veddb-server --create --name NAME`).
//!
//! `--clients` threads each attach their own session; each sends `--depth` requests (to their
//! owning cores' rings) before it waits for their answers, so `--depth 1` measures the round
//! trip of one request and larger depths measure pipelined throughput. GETs read the value in
//! place (`get_view`, no copy) unless `--copy`.
//!
//! With `--rate OPS` the load is open-loop: the client threads share OPS requests per second on
//! a fixed schedule, and each request's latency runs from its intended send time. A thread that
//! is behind sends its overdue requests together, up to `--depth` in one pipelined batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::open_loop::{self, Clock, MonotonicClock, OpenLoopSummary, Pacer, PacerStats, Recorder};
use crate::progress::{Counter, Progress};

use argh::FromArgs;
use hdrhistogram::Histogram;
use veddb_client::local::{GetResult, LocalConnection, Submitted, SPIN_DEFAULT};
use veddb_wire::{Request, Response, SetOptions};

use crate::report::{histogram, Series};
use crate::workload::{parse_duration, Distribution, Op, Rng, ValueSize, Workload};

/// Keys per MSET while preloading.
const PRELOAD_CHUNK: usize = 1024;

/// Load through shared memory on a running local instance: closed loop, or open loop with --rate.
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
    /// open loop: this many requests per second over all clients, latency from each request's
    /// intended send time (default: closed loop)
    pub rate: Option<f64>,
    #[argh(option, default = "1")]
    /// client threads, one session each (default 1)
    pub clients: usize,
    #[argh(option, default = "1")]
    /// requests in flight per client: sent together, then awaited (default 1); with
    /// --sessions, per session, each replaced as soon as it is answered
    pub depth: usize,
    #[argh(option, default = "1")]
    /// sessions per client thread (default 1): above 1, each thread drives that many sessions
    /// as an event loop (like redis-benchmark's connections), `--depth` requests in flight on
    /// each, and latency is per request, sent to answered (closed loop only)
    pub sessions: usize,
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
    #[argh(option)]
    /// plot the latency percentiles as SVG to this file
    pub svg: Option<String>,
}

pub fn settings(args: &LocalArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "local", "instance": args.instance, "op": args.op,
        "get_ratio": args.get_ratio, "keys": args.keys, "key_size": args.key_size,
        "value_size": args.value_size, "distribution": args.distribution,
        "zipf_theta": args.zipf_theta, "rate": args.rate,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "clients": args.clients, "depth": args.depth, "sessions": args.sessions,
        "copy": args.copy,
        "duration": args.duration, "warmup": args.warmup, "pin": args.pin, "svg": args.svg,
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
    /// Open loop only.
    stats: PacerStats,
    unsent: u64,
}

/// An open-loop client's share of the schedule.
#[derive(Clone, Copy)]
struct Schedule {
    clock: MonotonicClock,
    rate: f64,
    clients: usize,
    from: u64,
    until: u64,
}

fn pin_thread(cpu: usize) {
    let _ = compio::runtime::RuntimeBuilder::new()
        .thread_affinity(std::collections::HashSet::from([cpu]))
        .build();
}

pub fn run(args: &LocalArgs) -> Result<Vec<Series>, String> {
    let ops = Op::parse_list(&args.op, args.get_ratio)?;
    let rate = open_loop::check_rate(args.rate)?;
    if args.clients == 0 || args.clients > 256 {
        return Err("--clients must be between 1 and 256".into());
    }
    if args.depth == 0 || args.depth > 4096 {
        return Err("--depth must be between 1 and 4096".into());
    }
    if args.sessions == 0 || args.sessions > 1024 {
        return Err("--sessions must be between 1 and 1024".into());
    }
    if args.sessions > 1 && rate.is_some() {
        return Err("--sessions above 1 runs a closed loop only; leave out --rate".into());
    }
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    let workload = Arc::new(Workload::with(
        args.keys,
        args.key_size,
        ValueSize::parse(&args.value_size)?,
        Distribution::parse(&args.distribution, args.zipf_theta)?,
    )?);
    // Preload every key.
    {
        let connection = LocalConnection::connect(&args.instance).map_err(|error| {
            format!("cannot attach to the instance {:?}: {error}", args.instance)
        })?;
        for pairs in workload.preload_chunks(PRELOAD_CHUNK) {
            match connection.execute(Request::MSet { pairs }) {
                Ok(Response::Ok) => {}
                Ok(other) => return Err(format!("preload: unexpected answer {other:?}")),
                Err(error) => return Err(format!("preload: {error}")),
            }
        }
    }
    let progress = Progress::start();
    let counters: Vec<Arc<Counter>> = (0..args.clients).map(|_| progress.counter()).collect();
    let mut results = Vec::new();
    for op in ops {
        let phase = Arc::new(AtomicU8::new(WARMING));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let origin = Instant::now();
        let schedule = rate.map(|rate| Schedule {
            clock: MonotonicClock::new(origin),
            rate,
            clients: args.clients,
            from: warmup.as_nanos() as u64,
            until: (warmup + duration).as_nanos() as u64,
        });
        let mut threads = Vec::new();
        for (client, counter) in counters.iter().enumerate() {
            let (phase, outcomes, workload) = (phase.clone(), outcomes.clone(), workload.clone());
            let (instance, depth, copy, pin, sessions) = (
                args.instance.clone(),
                args.depth,
                args.copy,
                args.pin,
                args.sessions,
            );
            let counter = counter.clone();
            threads.push(std::thread::spawn(move || -> Result<(), String> {
                if let Some(cpu) = pin {
                    pin_thread(cpu);
                }
                let connections = (0..sessions)
                    .map(|_| LocalConnection::connect(&instance))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| format!("client {client}: {error}"))?;
                let connection = &connections[0];
                let client = Client {
                    connection,
                    workload: &workload,
                    op,
                    depth,
                    copy,
                    client,
                    counter: &counter,
                };
                let outcome = match schedule {
                    None if sessions > 1 => client.event_loop(&connections, &phase)?,
                    None => client.closed_loop(&phase),
                    Some(schedule) => client.open_loop(schedule),
                };
                outcomes.lock().unwrap().push(outcome);
                Ok(())
            }));
        }
        let name = if args.copy || op == Op::Set || args.sessions > 1 {
            op.name()
        } else {
            format!("{} (in place)", op.name())
        };
        progress.phase(&format!("{name} warm-up"), warmup);
        std::thread::sleep(warmup.saturating_sub(origin.elapsed()));
        phase.store(MEASURING, Ordering::SeqCst);
        progress.phase(&name, duration);
        std::thread::sleep((warmup + duration).saturating_sub(origin.elapsed()));
        phase.store(STOPPING, Ordering::SeqCst);
        for thread in threads {
            thread
                .join()
                .map_err(|_| "a client thread panicked".to_string())??;
        }
        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
        let mut merged = histogram();
        let (mut operations, mut errors, mut seconds) = (0, 0, 0.0f64);
        let (mut stats, mut unsent) = (PacerStats::default(), 0);
        for outcome in &outcomes {
            merged
                .add(&outcome.histogram)
                .map_err(|error| error.to_string())?;
            operations += outcome.operations;
            errors += outcome.errors;
            seconds = seconds.max(outcome.seconds);
            stats.merge(&outcome.stats);
            unsent += outcome.unsent;
        }
        let series = match rate {
            None => {
                let latency_of = if args.sessions > 1 {
                    format!(
                        "one request, sent to answered ({} sessions per client thread, {} in \
                         flight on each)",
                        args.sessions, args.depth
                    )
                } else if args.depth == 1 {
                    "one request, send to answer".to_string()
                } else {
                    format!("a pipelined batch of {} requests", args.depth)
                };
                Series::new(
                    "local",
                    &name,
                    &latency_of,
                    &merged,
                    operations,
                    seconds,
                    errors,
                )
            }
            Some(rate) => Series::new(
                "local",
                &name,
                &format!(
                    "one request, from its intended send time (open loop) to its answer; \
                     overdue requests go out together, up to {} per batch",
                    args.depth
                ),
                &merged,
                operations,
                duration.as_secs_f64(),
                errors,
            )
            .with_open_loop(OpenLoopSummary::new(rate, args.clients, &stats, unsent)),
        };
        results.push(series.with_value_bytes(workload.value_size.mean()));
    }
    progress.finish();
    Ok(results)
}

/// A closed-loop client's measured window: it follows the phase and starts its clock when
/// measuring begins.
#[derive(Default)]
struct Window {
    started: Option<Instant>,
}

impl Window {
    /// False once the phase is STOPPING.
    fn go_on(&mut self, phase: &AtomicU8) -> bool {
        match phase.load(Ordering::Relaxed) {
            STOPPING => false,
            MEASURING => {
                self.started.get_or_insert_with(Instant::now);
                true
            }
            _ => true,
        }
    }

    fn measuring(&self) -> bool {
        self.started.is_some()
    }

    fn outcome(&self, histogram: Histogram<u64>, operations: u64, errors: u64) -> Outcome {
        Outcome {
            histogram,
            operations,
            errors,
            seconds: self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            stats: PacerStats::default(),
            unsent: 0,
        }
    }
}

/// One client thread's session and workload.
struct Client<'a> {
    connection: &'a LocalConnection,
    workload: &'a Workload,
    op: Op,
    depth: usize,
    copy: bool,
    client: usize,
    counter: &'a Counter,
}

impl Client<'_> {
    fn rng(&self) -> Rng {
        Rng::new(0x5eed ^ (self.client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// `n` requests of the workload into `batch`.
    fn fill(&self, batch: &mut Vec<Request>, n: usize, rng: &mut Rng) {
        batch.clear();
        for _ in 0..n {
            let key = self.workload.key(rng);
            batch.push(match self.op.pick(rng) {
                Op::Get => Request::Get { key },
                _ => Request::Set {
                    key,
                    value: self.workload.value(rng),
                    options: SetOptions::default(),
                },
            });
        }
    }

    /// Sends the batch (one request alone, or pipelined) and waits for the answers: returns
    /// how many failed.
    fn send(&self, batch: &mut Vec<Request>) -> u64 {
        let requests = batch.len() as u64;
        let failed = if batch.len() == 1 {
            match batch.pop().expect("one request") {
                Request::Get { key } if !self.copy => match self.connection.get_view(key) {
                    Ok(GetResult::View(view)) => {
                        std::hint::black_box(view.bytes().first());
                        0
                    }
                    Ok(_) => 0,
                    Err(_) => 1,
                },
                request => match self.connection.execute(request) {
                    Ok(Response::Error(_)) | Err(_) => 1,
                    Ok(_) => 0,
                },
            }
        } else {
            match self.connection.execute_many(batch) {
                Ok(responses) => responses
                    .iter()
                    .filter(|response| matches!(response, Response::Error(_)))
                    .count() as u64,
                Err(_) => batch.len() as u64,
            }
        };
        self.counter.add(requests);
        failed
    }

    /// Pipelined GETs read in place: `depth` keys, their views, the next `depth`, until the
    /// phase is STOPPING (the keys borrowed from the workload: nothing is built per request).
    fn closed_loop_views(&self, phase: &AtomicU8) -> Outcome {
        let mut rng = self.rng();
        let mut histogram = histogram();
        let (mut operations, mut errors) = (0u64, 0u64);
        let mut window = Window::default();
        let mut keys: Vec<&[u8]> = Vec::with_capacity(self.depth);
        while window.go_on(phase) {
            keys.clear();
            keys.extend((0..self.depth).map(|_| self.workload.key_ref(&mut rng)));
            let t0 = Instant::now();
            let failed = match self.connection.get_view_many(&keys) {
                Ok(results) => {
                    for result in &results {
                        if let GetResult::View(view) = result {
                            std::hint::black_box(view.bytes().first());
                        }
                    }
                    0
                }
                Err(_) => keys.len() as u64,
            };
            let elapsed = t0.elapsed();
            self.counter.add(keys.len() as u64);
            if window.measuring() {
                let _ = histogram.record(elapsed.as_nanos().max(1) as u64);
                operations += self.depth as u64;
                errors += failed;
            }
        }
        window.outcome(histogram, operations, errors)
    }

    /// `depth` requests, their answers, the next `depth`, until the phase is STOPPING.
    fn closed_loop(&self, phase: &AtomicU8) -> Outcome {
        if self.op == Op::Get && !self.copy && self.depth > 1 {
            return self.closed_loop_views(phase);
        }
        let mut rng = self.rng();
        let mut histogram = histogram();
        let (mut operations, mut errors) = (0u64, 0u64);
        let mut window = Window::default();
        let mut batch = Vec::with_capacity(self.depth);
        while window.go_on(phase) {
            self.fill(&mut batch, self.depth, &mut rng);
            let t0 = Instant::now();
            let failed = self.send(&mut batch);
            let elapsed = t0.elapsed();
            if window.measuring() {
                let _ = histogram.record(elapsed.as_nanos().max(1) as u64);
                operations += self.depth as u64;
                errors += failed;
            }
        }
        window.outcome(histogram, operations, errors)
    }

    /// `--sessions` above 1: keeps `depth` requests in flight on each session, replacing each
    /// as soon as it is answered, until the phase is STOPPING. Spins briefly when nothing
    /// arrived, then sleeps on the session of the oldest request until its core answers.
    fn event_loop(
        &self,
        sessions: &[LocalConnection],
        phase: &AtomicU8,
    ) -> Result<Outcome, String> {
        let mut rng = self.rng();
        let mut histogram = histogram();
        let (mut operations, mut errors) = (0u64, 0u64);
        let mut window = Window::default();
        let mut batch = Vec::with_capacity(1);
        let failure = |session: usize, error: veddb_client::ClientError| {
            format!("client {} session {session}: {error}", self.client)
        };
        let mut in_flight: Vec<VecDeque<(Submitted, Instant)>> = Vec::new();
        for (index, session) in sessions.iter().enumerate() {
            let mut queue = VecDeque::with_capacity(self.depth);
            for _ in 0..self.depth {
                self.fill(&mut batch, 1, &mut rng);
                let request = batch.pop().expect("one request");
                let submitted = session
                    .submit(request)
                    .map_err(|error| failure(index, error))?;
                queue.push_back((submitted, Instant::now()));
            }
            in_flight.push(queue);
        }
        let mut idle_since = Instant::now();
        while window.go_on(phase) {
            let mut answered = 0u64;
            for (index, session) in sessions.iter().enumerate() {
                let queue = &mut in_flight[index];
                while let Some((submitted, sent)) = queue.front() {
                    let Some(response) = session
                        .try_complete(submitted)
                        .map_err(|error| failure(index, error))?
                    else {
                        break;
                    };
                    let elapsed = sent.elapsed();
                    queue.pop_front();
                    answered += 1;
                    if window.measuring() {
                        let _ = histogram.record(elapsed.as_nanos().max(1) as u64);
                        operations += 1;
                        errors += u64::from(matches!(response, Response::Error(_)));
                    }
                    self.fill(&mut batch, 1, &mut rng);
                    let request = batch.pop().expect("one request");
                    let submitted = session
                        .submit(request)
                        .map_err(|error| failure(index, error))?;
                    queue.push_back((submitted, Instant::now()));
                }
            }
            if answered > 0 {
                self.counter.add(answered);
                idle_since = Instant::now();
            } else if idle_since.elapsed() > SPIN_DEFAULT {
                // Sleep on the oldest request's session, a millisecond at most (another
                // session's answer does not wake this thread).
                let oldest = in_flight
                    .iter()
                    .enumerate()
                    .filter_map(|(index, queue)| queue.front().map(|front| (index, front)))
                    .min_by_key(|(_, (_, sent))| *sent);
                if let Some((index, (submitted, _))) = oldest {
                    sessions[index].wait_for_answers(submitted, Duration::from_millis(1));
                }
            } else {
                std::hint::spin_loop();
            }
        }
        Ok(window.outcome(histogram, operations, errors))
    }

    /// Requests at this client's intended times until the end of the window; overdue ones go
    /// out together, up to `depth` per batch, each timed from its own intended time.
    fn open_loop(&self, schedule: Schedule) -> Outcome {
        let clock = schedule.clock;
        let mut rng = self.rng();
        let mut pacer =
            Pacer::new(0, schedule.rate, schedule.clients, self.client).account_from(schedule.from);
        let mut recorder = Recorder::new(schedule.from, schedule.until);
        let mut errors = 0;
        let mut batch = Vec::with_capacity(self.depth);
        let mut intended = Vec::with_capacity(self.depth);
        while pacer.next_intended_ns() < schedule.until {
            let now = open_loop::wait_sync(&pacer, &clock);
            if now >= schedule.until {
                recorder.finish(&pacer, now);
                break;
            }
            let n = pacer.backlog(now).clamp(1, self.depth as u64) as usize;
            intended.clear();
            intended.extend((0..n).map(|_| pacer.take(now)));
            self.fill(&mut batch, n, &mut rng);
            let failed = self.send(&mut batch);
            let done = clock.now_ns();
            let mut measured = false;
            for &slot in &intended {
                measured |= recorder.record(slot, done, 1);
            }
            if measured {
                errors += failed;
            }
        }
        Outcome {
            histogram: recorder.histogram,
            operations: recorder.operations,
            errors,
            seconds: (schedule.until - schedule.from) as f64 / 1e9,
            stats: pacer.stats(),
            unsent: recorder.unsent,
        }
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
        assert!(run(&args(&["--sessions", "0"]))
            .unwrap_err()
            .contains("--sessions"));
        assert!(run(&args(&["--sessions", "4", "--rate", "1000"]))
            .unwrap_err()
            .contains("--sessions"));
        // A missing instance is a clear error.
        let error = run(&args(&["--duration", "10ms"])).unwrap_err();
        assert!(error.contains("none-such"), "{error}");
    }
}
