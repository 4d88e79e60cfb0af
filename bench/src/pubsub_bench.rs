//! The `pubsub` scenario: one publisher fanning out to `--subscribers` subscribers, each on its
//! own connection and thread, over VedDB's shared memory (`--transport local`), VedDB's gRPC
//! (`grpc`), Redis PUBLISH/SUBSCRIBE (`redis`, the RESP client of `redis_bench`) or NATS (`nats`,
//! the client of `nats_bench`; `veddb-bench nats` runs the same thing).
//!
//! How it measures (the same for every transport):
//! - Every message starts with a 16-byte header: the publish time in nanoseconds since an
//!   `Instant` shared by all the benchmark's threads (little-endian u64, stamped just before
//!   the message is handed to the client library), then the message's sequence number. A
//!   subscriber reads the clock when the message reaches it, so the latency is publish to
//!   receive, per delivery, on one monotonic clock.
//! - The publisher sends bursts of `--burst` messages (one write, or one pipelined batch), and
//!   before each burst it waits until the slowest subscriber has seen a sequence number within
//!   `--window` of the last one the burst will send. A publisher that outruns its subscribers
//!   therefore waits instead of filling server queues, and the throughput is what the
//!   subscribers really received. `--window 1 --burst 1` measures unloaded latency (one message
//!   in flight); larger windows measure throughput (and the latency then includes queueing).
//! - Throughput is deliveries per second: messages received by all subscribers during the
//!   measurement, divided by the time from the first measured publish to the last measured
//!   receipt. The publish rate is reported as a second series.
//! - Losses: each subscriber expects every message published while measuring; what it did not
//!   receive (expected − received) is counted in `errors`. Messages VedDB's slow-subscriber
//!   policy dropped (reported with the next message) are such losses; their count is printed.
//! - After the measurement the publisher waits for the subscribers to drain, then publishes an
//!   end marker (sequence number `u64::MAX`) until every subscriber has stopped.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use argh::FromArgs;
use bytes::Bytes;
use hdrhistogram::Histogram;
use veddb_client::Client;
use veddb_wire::grpc_client::SubscribeEvent;
use veddb_wire::{Request, Response};

use crate::redis_bench::{pin_thread, RespConnection, Value};
use crate::report::{histogram, Series};
use crate::workload::parse_duration;

/// Bytes of the header every message starts with: publish time, then sequence number.
pub const HEADER: usize = 16;
/// The sequence number of the end marker.
pub const END: u64 = u64::MAX;

/// How long the publisher waits for the subscribers to subscribe.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the window wait lasts without any subscriber progress before publishing anyway
/// (a message lost at the end of a burst must not stop the run).
const STALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the end marker is repeated before the subscribers are given up.
const END_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting publisher lets its connection answer the server (NATS PINGs).
const IDLE_EVERY: Duration = Duration::from_millis(50);
/// A subscriber connection idle this long (no message at all) fails.
pub const SUBSCRIBER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes the header: publish time (ns since the shared base) and sequence number.
pub fn stamp(message: &mut [u8], sent_ns: u64, sequence: u64) {
    message[..8].copy_from_slice(&sent_ns.to_le_bytes());
    message[8..HEADER].copy_from_slice(&sequence.to_le_bytes());
}

/// Reads the header back: `(sent_ns, sequence)`, `None` for a message too short to carry one.
pub fn read_stamp(message: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_le_bytes(message.get(..8)?.try_into().ok()?);
    let sequence = u64::from_le_bytes(message.get(8..HEADER)?.try_into().ok()?);
    Some((sent, sequence))
}

/// A counter alone on its cache line (one per subscriber, written on every message).
#[repr(align(64))]
struct Padded(AtomicU64);

/// What the publisher and the subscribers of one run share.
pub struct Shared {
    base: Instant,
    /// The first sequence number measured (`u64::MAX` while warming up).
    measure_from: AtomicU64,
    /// Per subscriber: the highest sequence number seen, plus one.
    seen: Vec<Padded>,
    ready: AtomicUsize,
    failed: AtomicBool,
}

impl Shared {
    fn new(subscribers: usize) -> Shared {
        Shared {
            base: Instant::now(),
            measure_from: AtomicU64::new(u64::MAX),
            seen: (0..subscribers)
                .map(|_| Padded(AtomicU64::new(0)))
                .collect(),
            ready: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// The sequence number (plus one) that every subscriber has seen.
    fn slowest(&self) -> u64 {
        self.seen
            .iter()
            .map(|seen| seen.0.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

/// One subscriber's tally, fed by its transport's receive loop.
pub struct Recorder {
    shared: Arc<Shared>,
    index: usize,
    ready: bool,
    histogram: Histogram<u64>,
    /// Measured messages received.
    received: u64,
    /// Messages the server reported as dropped (any phase).
    dropped: u64,
    /// Messages without a valid header.
    malformed: u64,
    /// When the last measured message arrived (ns since the base).
    last_receipt_ns: u64,
}

impl Recorder {
    fn new(shared: Arc<Shared>, index: usize) -> Recorder {
        Recorder {
            shared,
            index,
            ready: false,
            histogram: histogram(),
            received: 0,
            dropped: 0,
            malformed: 0,
            last_receipt_ns: 0,
        }
    }

    /// The subscription is in place: the publisher may start.
    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.shared.ready.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Records one received message and `dropped` messages the server says it lost before it;
    /// `false` once the end marker arrives.
    pub fn on_message(&mut self, message: &[u8], dropped: u64) -> bool {
        let now = self.shared.now_ns();
        self.dropped += dropped;
        let Some((sent, sequence)) = read_stamp(message) else {
            self.malformed += 1;
            return true;
        };
        if sequence == END {
            return false;
        }
        let seen = &self.shared.seen[self.index].0;
        if sequence >= seen.load(Ordering::Relaxed) {
            seen.store(sequence + 1, Ordering::Release);
        }
        if sequence >= self.shared.measure_from.load(Ordering::Acquire) {
            self.histogram
                .saturating_record(now.saturating_sub(sent).max(1));
            self.received += 1;
            self.last_receipt_ns = now;
        }
        true
    }
}

/// The publishing side of a transport.
pub trait Publisher {
    /// Publishes the messages of `burst` (`burst.len() / message_size` of them, in order) to the
    /// topic. Returns the fewest receivers the server reported for one of them, when it reports
    /// them (Redis, VedDB).
    fn publish(&mut self, burst: &Bytes, message_size: usize) -> Result<Option<u64>, String>;
    /// Called every [`IDLE_EVERY`] or so: lets the connection answer the server.
    fn idle(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Called after the last measured message: returns once the server has taken everything.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// A subscriber's thread body: connect, subscribe, call [`Recorder::ready`], then feed every
/// message to [`Recorder::on_message`] until it returns `false`.
pub type SubscriberBody = Arc<dyn Fn(&mut Recorder) -> Result<(), String> + Send + Sync>;

/// One fan-out run.
#[derive(Debug)]
pub struct FanOut {
    /// The scenario name in the results (`pubsub` or `nats`).
    pub scenario: &'static str,
    /// The transport, for the series name.
    pub transport: String,
    pub subscribers: usize,
    pub message_size: usize,
    pub messages: Option<u64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub window: u64,
    pub burst: usize,
    pub pin: Option<usize>,
}

/// The options every fan-out command shares, checked.
#[allow(clippy::too_many_arguments)]
pub fn fan_out_config(
    scenario: &'static str,
    transport: &str,
    subscribers: usize,
    message_size: usize,
    messages: Option<u64>,
    duration: &str,
    warmup: &str,
    window: u64,
    burst: usize,
    pin: Option<usize>,
) -> Result<FanOut, String> {
    if subscribers == 0 || subscribers > 256 {
        return Err("--subscribers must be between 1 and 256".into());
    }
    if !(HEADER..=1 << 20).contains(&message_size) {
        return Err(format!(
            "--message-size must be between {HEADER} (the timestamp and sequence header) and 1048576"
        ));
    }
    if messages == Some(0) {
        return Err("--messages must be at least 1".into());
    }
    if burst == 0 || burst > 4096 {
        return Err("--burst must be between 1 and 4096".into());
    }
    if window < burst as u64 {
        return Err("--window must be at least --burst".into());
    }
    Ok(FanOut {
        scenario,
        transport: transport.into(),
        subscribers,
        message_size,
        messages,
        duration: parse_duration(duration)?,
        warmup: parse_duration(warmup)?,
        window,
        burst,
        pin,
    })
}

/// A topic name of this process (so that concurrent runs do not share one).
pub fn default_topic() -> String {
    format!("veddb-bench.fanout.{}", std::process::id())
}

type SubscriberThread = JoinHandle<(Recorder, Result<(), String>)>;

/// Runs one fan-out measurement: starts the subscribers, then publishes from this thread.
pub fn run_fan_out(
    config: &FanOut,
    connect_publisher: impl FnOnce() -> Result<Box<dyn Publisher>, String>,
    subscriber: SubscriberBody,
) -> Result<Vec<Series>, String> {
    let shared = Arc::new(Shared::new(config.subscribers));
    let mut threads: Vec<SubscriberThread> = Vec::new();
    for index in 0..config.subscribers {
        let (shared, body, pin) = (shared.clone(), subscriber.clone(), config.pin);
        threads.push(std::thread::spawn(move || {
            if let Some(cpu) = pin {
                pin_thread(cpu);
            }
            let mut recorder = Recorder::new(shared.clone(), index);
            let result = body(&mut recorder);
            if result.is_err() {
                shared.failed.store(true, Ordering::SeqCst);
            }
            (recorder, result)
        }));
    }
    if let Some(cpu) = config.pin {
        pin_thread(cpu);
    }
    let outcome = connect_publisher().and_then(|mut publisher| {
        let outcome = publish_all(config, &shared, &mut *publisher);
        // Whatever happened, stop the subscribers.
        end_subscribers(config, &shared, &mut *publisher, &threads);
        outcome
    });
    let recorders = collect(threads, &shared);
    let published = outcome?;
    let recorders = recorders?;
    Ok(summarize(config, &shared, &published, &recorders))
}

/// What the publisher measured.
struct Published {
    histogram: Histogram<u64>,
    measure_from: u64,
    /// Messages published while measuring.
    measured: u64,
    start_ns: u64,
    seconds: f64,
    /// Window waits that ended by timeout rather than by the subscribers catching up.
    stalls: u64,
}

/// The publisher's state between bursts.
struct Sender<'a> {
    config: &'a FanOut,
    shared: &'a Shared,
    publisher: &'a mut dyn Publisher,
    sequence: u64,
    last_idle: Instant,
    stalls: u64,
}

impl Sender<'_> {
    fn idle(&mut self) -> Result<(), String> {
        if self.last_idle.elapsed() >= IDLE_EVERY {
            self.publisher.idle()?;
            self.last_idle = Instant::now();
        }
        Ok(())
    }

    /// Waits until every subscriber has seen `target` messages (sequence numbers below it), or
    /// until none has progressed for [`STALL_TIMEOUT`] (then `false`).
    fn wait_for(&mut self, target: u64) -> Result<bool, String> {
        let mut spins = 0u32;
        let mut slowest = self.shared.slowest();
        let mut progressed = Instant::now();
        while slowest < target {
            if self.shared.failed.load(Ordering::Relaxed) {
                return Err("a subscriber failed".into());
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else if spins < 2048 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
            let now = self.shared.slowest();
            if now != slowest {
                slowest = now;
                progressed = Instant::now();
            } else if progressed.elapsed() >= STALL_TIMEOUT {
                return Ok(false);
            }
            if spins.is_multiple_of(64) {
                self.idle()?;
            }
        }
        Ok(true)
    }

    /// Publishes `count` messages as one burst once the window allows; returns how long handing
    /// them over took.
    fn burst(&mut self, count: usize) -> Result<Duration, String> {
        let target = (self.sequence + count as u64).saturating_sub(self.config.window);
        if !self.wait_for(target)? {
            self.stalls += 1;
        }
        self.idle()?;
        let size = self.config.message_size;
        let mut buffer = vec![b'x'; count * size];
        for (i, message) in buffer.chunks_exact_mut(size).enumerate() {
            stamp(message, self.shared.now_ns(), self.sequence + i as u64);
        }
        let buffer = Bytes::from(buffer);
        let started = Instant::now();
        let receivers = self.publisher.publish(&buffer, size)?;
        let took = started.elapsed();
        if let Some(receivers) = receivers {
            if receivers < self.config.subscribers as u64 {
                return Err(format!(
                    "a message reached {receivers} of {} subscribers",
                    self.config.subscribers
                ));
            }
        }
        self.sequence += count as u64;
        Ok(took)
    }
}

fn wait_ready(shared: &Shared, subscribers: usize) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while shared.ready.load(Ordering::SeqCst) < subscribers {
        if shared.failed.load(Ordering::SeqCst) {
            return Err("a subscriber failed to subscribe".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {subscribers} subscribers subscribed within {READY_TIMEOUT:?}",
                shared.ready.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn publish_all(
    config: &FanOut,
    shared: &Shared,
    publisher: &mut dyn Publisher,
) -> Result<Published, String> {
    wait_ready(shared, config.subscribers)?;
    let mut sender = Sender {
        config,
        shared,
        publisher,
        sequence: 0,
        last_idle: Instant::now(),
        stalls: 0,
    };
    let warm_until = Instant::now() + config.warmup;
    while Instant::now() < warm_until {
        sender.burst(config.burst)?;
    }
    let measure_from = sender.sequence;
    shared.measure_from.store(measure_from, Ordering::SeqCst);
    sender.stalls = 0;
    let mut histogram = histogram();
    let start_ns = shared.now_ns();
    let started = Instant::now();
    loop {
        let count = match config.messages {
            Some(total) => match total - (sender.sequence - measure_from) {
                0 => break,
                left => left.min(config.burst as u64) as usize,
            },
            None if started.elapsed() >= config.duration => break,
            None => config.burst,
        };
        let took = sender.burst(count)?;
        histogram.saturating_record(took.as_nanos().max(1) as u64);
    }
    let seconds = started.elapsed().as_secs_f64();
    sender.publisher.finish()?;
    // Let the subscribers drain (a lost last message only costs the stall timeout).
    let last = sender.sequence;
    sender.wait_for(last)?;
    Ok(Published {
        histogram,
        measure_from,
        measured: last - measure_from,
        start_ns,
        seconds,
        stalls: sender.stalls,
    })
}

/// Publishes the end marker until every subscriber thread has stopped (or the time is up).
fn end_subscribers(
    config: &FanOut,
    shared: &Shared,
    publisher: &mut dyn Publisher,
    threads: &[SubscriberThread],
) {
    let mut marker = vec![b'x'; config.message_size];
    stamp(&mut marker, shared.now_ns(), END);
    let marker = Bytes::from(marker);
    let deadline = Instant::now() + END_TIMEOUT;
    while Instant::now() < deadline && !threads.iter().all(|thread| thread.is_finished()) {
        if publisher.publish(&marker, config.message_size).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn collect(threads: Vec<SubscriberThread>, shared: &Shared) -> Result<Vec<Recorder>, String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !threads.iter().all(|thread| thread.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(stuck) = threads.iter().position(|thread| !thread.is_finished()) {
        shared.failed.store(true, Ordering::SeqCst);
        return Err(format!("subscriber {stuck} did not stop"));
    }
    let mut recorders = Vec::new();
    let mut first_error = None;
    for (index, thread) in threads.into_iter().enumerate() {
        match thread.join() {
            Ok((recorder, result)) => {
                if let Err(error) = result {
                    first_error.get_or_insert(format!("subscriber {index}: {error}"));
                }
                recorders.push(recorder);
            }
            Err(_) => {
                first_error.get_or_insert(format!("subscriber {index} panicked"));
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(recorders),
    }
}

fn summarize(
    config: &FanOut,
    shared: &Shared,
    published: &Published,
    recorders: &[Recorder],
) -> Vec<Series> {
    let mut merged = histogram();
    let (mut received, mut lost, mut dropped, mut malformed) = (0u64, 0u64, 0u64, 0u64);
    let mut last_receipt_ns = 0;
    let (mut fewest, mut most) = (u64::MAX, 0u64);
    for recorder in recorders {
        merged
            .add(&recorder.histogram)
            .expect("histograms with the same bounds merge");
        received += recorder.received;
        lost += published.measured.saturating_sub(recorder.received);
        dropped += recorder.dropped;
        malformed += recorder.malformed;
        last_receipt_ns = last_receipt_ns.max(recorder.last_receipt_ns);
        fewest = fewest.min(recorder.received);
        most = most.max(recorder.received);
    }
    let delivery_seconds = if last_receipt_ns > published.start_ns {
        (last_receipt_ns - published.start_ns) as f64 / 1e9
    } else {
        published.seconds
    };
    let name = format!(
        "{} 1→{} {}B",
        config.transport, config.subscribers, config.message_size
    );
    println!(
        "{} {name}: published {} measured messages from sequence {} ({:.0}/s), each of {} \
         subscribers received {fewest}..{most}; lost {lost} (server-reported drops {dropped}), \
         malformed {malformed}; window {}, burst {}, window waits that timed out {}; \
         {:.3} s from the first measured publish to the last receipt",
        config.scenario,
        published.measured,
        published.measure_from,
        published.measured as f64 / published.seconds.max(1e-9),
        config.subscribers,
        config.window,
        config.burst,
        published.stalls,
        delivery_seconds,
    );
    let _ = shared;
    vec![
        Series::new(
            config.scenario,
            &name,
            &format!(
                "publish to receive, per delivery (send time stamped in the message; the \
                 publisher stays at most {} messages ahead of the slowest subscriber, bursts of {})",
                config.window, config.burst
            ),
            &merged,
            received,
            delivery_seconds,
            lost + malformed,
        ),
        Series::new(
            config.scenario,
            &format!("{name} publish"),
            &format!(
                "handing one burst of up to {} messages to the server (replies read for Redis \
                 and VedDB, written for NATS), not counting the wait for the window",
                config.burst
            ),
            &published.histogram,
            published.measured,
            published.seconds,
            0,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The `pubsub` command and its VedDB and Redis transports

/// Pub/sub fan-out: one publisher, N subscribers, over VedDB local/gRPC, Redis or NATS.
#[derive(FromArgs)]
#[argh(subcommand, name = "pubsub")]
pub struct PubsubArgs {
    #[argh(option, default = "String::from(\"local\")")]
    /// local (VedDB shared memory), grpc (VedDB), redis or nats (default local)
    pub transport: String,
    #[argh(option, default = "String::from(\"veddb_main\")")]
    /// instance name for --transport local (VedDB shared memory; default veddb_main)
    pub instance: String,
    #[argh(option)]
    /// server HOST:PORT (defaults: grpc 127.0.0.1:50051, redis 127.0.0.1:6379, nats
    /// 127.0.0.1:4222)
    pub addr: Option<String>,
    #[argh(option)]
    /// unix socket path for --transport redis (instead of --addr)
    pub unix: Option<String>,
    #[argh(option)]
    /// topic (default veddb-bench.fanout.PID)
    pub topic: Option<String>,
    #[argh(option, default = "4")]
    /// subscribers, each on its own connection and thread (default 4)
    pub subscribers: usize,
    #[argh(option, default = "16")]
    /// message size in bytes, at least 16 (default 16)
    pub message_size: usize,
    #[argh(option)]
    /// measure this many messages instead of --duration
    pub messages: Option<u64>,
    #[argh(option, default = "String::from(\"3s\")")]
    /// measured time (default 3s)
    pub duration: String,
    #[argh(option, default = "String::from(\"500ms\")")]
    /// warm-up time (default 500ms)
    pub warmup: String,
    #[argh(option, default = "1024")]
    /// most messages the publisher may be ahead of the slowest subscriber (default 1024)
    pub window: u64,
    #[argh(option, default = "64")]
    /// messages per publish burst (default 64)
    pub burst: usize,
    #[argh(option)]
    /// CPU to pin the publisher and subscriber threads to (default: not pinned)
    pub pin: Option<usize>,
    #[argh(option)]
    /// write the results as JSON to this file
    pub json: Option<String>,
    #[argh(option)]
    /// plot the latency percentiles as SVG to this file
    pub svg: Option<String>,
}

pub fn settings(args: &PubsubArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "pubsub", "transport": args.transport, "instance": args.instance,
        "addr": args.addr, "unix": args.unix, "topic": args.topic,
        "subscribers": args.subscribers, "message_size": args.message_size,
        "messages": args.messages, "duration": args.duration, "warmup": args.warmup,
        "window": args.window, "burst": args.burst, "pin": args.pin, "svg": args.svg,
    })
}

pub fn run(args: &PubsubArgs) -> Result<Vec<Series>, String> {
    let config = fan_out_config(
        "pubsub",
        &args.transport,
        args.subscribers,
        args.message_size,
        args.messages,
        &args.duration,
        &args.warmup,
        args.window,
        args.burst,
        args.pin,
    )?;
    let topic = args.topic.clone().unwrap_or_else(default_topic);
    let addr = |default: &str| args.addr.clone().unwrap_or_else(|| default.into());
    match args.transport.as_str() {
        "local" => run_veddb(&config, VeddbTarget::Local(args.instance.clone()), topic),
        "grpc" => run_veddb(&config, VeddbTarget::Grpc(addr("127.0.0.1:50051")), topic),
        "redis" => run_redis(&config, addr("127.0.0.1:6379"), args.unix.clone(), topic),
        "nats" => crate::nats_bench::run_fan_out_nats(&config, &addr("127.0.0.1:4222"), &topic),
        other => Err(format!(
            "unknown --transport `{other}`: use local, grpc, redis or nats"
        )),
    }
}

#[derive(Clone)]
enum VeddbTarget {
    Local(String),
    Grpc(String),
}

impl VeddbTarget {
    fn connect(&self) -> Result<Client, String> {
        match self {
            VeddbTarget::Local(name) => Client::connect_local(name)
                .map_err(|error| format!("cannot attach to the instance {name:?}: {error}")),
            VeddbTarget::Grpc(addr) => Client::connect_grpc(addr)
                .map_err(|error| format!("cannot connect to {addr}: {error}")),
        }
    }
}

struct VeddbPublisher {
    client: Client,
    topic: Bytes,
}

impl Publisher for VeddbPublisher {
    fn publish(&mut self, burst: &Bytes, message_size: usize) -> Result<Option<u64>, String> {
        let mut requests: Vec<Request> = (0..burst.len() / message_size)
            .map(|i| Request::Publish {
                topic: self.topic.clone(),
                message: burst.slice(i * message_size..(i + 1) * message_size),
            })
            .collect();
        let answers = if requests.len() == 1 {
            vec![self.client.execute(requests.pop().expect("one request"))]
        } else {
            self.client
                .execute_many(requests)
                .map_err(|error| format!("publish: {error}"))?
        };
        let mut fewest = u64::MAX;
        for answer in answers {
            match answer {
                Ok(Response::Published { receivers }) => fewest = fewest.min(receivers.into()),
                Ok(other) => return Err(format!("publish: unexpected answer {other:?}")),
                Err(error) => return Err(format!("publish: {error}")),
            }
        }
        Ok(Some(fewest))
    }
}

fn run_veddb(config: &FanOut, target: VeddbTarget, topic: String) -> Result<Vec<Series>, String> {
    let topic = Bytes::from(topic);
    let subscriber: SubscriberBody = {
        let (target, topic) = (target.clone(), topic.clone());
        Arc::new(move |recorder: &mut Recorder| {
            let client = target.connect()?;
            let mut subscription = client
                .subscribe(topic.clone())
                .map_err(|error| format!("subscribe: {error}"))?;
            // The subscription is in place once `subscribe` returns, whatever the transport.
            recorder.ready();
            loop {
                match subscription.next() {
                    None => return Err("the server ended the subscription".into()),
                    Some(Err(error)) => return Err(error.to_string()),
                    Some(Ok(SubscribeEvent::Subscribed)) => {}
                    Some(Ok(SubscribeEvent::Message { message, dropped })) => {
                        if !recorder.on_message(&message, dropped) {
                            return Ok(());
                        }
                    }
                }
            }
        })
    };
    run_fan_out(
        config,
        || {
            Ok(Box::new(VeddbPublisher {
                client: target.connect()?,
                topic,
            }) as Box<dyn Publisher>)
        },
        subscriber,
    )
}

struct RedisPublisher {
    connection: RespConnection,
    channel: Vec<u8>,
}

impl Publisher for RedisPublisher {
    fn publish(&mut self, burst: &Bytes, message_size: usize) -> Result<Option<u64>, String> {
        let count = burst.len() / message_size;
        for message in burst.chunks_exact(message_size) {
            self.connection.queue(&[b"PUBLISH", &self.channel, message]);
        }
        self.connection
            .flush()
            .map_err(|error| format!("PUBLISH: {error}"))?;
        let mut fewest = u64::MAX;
        for _ in 0..count {
            match self.connection.read_value() {
                Ok(Value::Integer(receivers)) => fewest = fewest.min(receivers.max(0) as u64),
                Ok(other) => return Err(format!("PUBLISH answered {}", other.describe())),
                Err(error) => return Err(format!("PUBLISH: {error}")),
            }
        }
        Ok(Some(fewest))
    }
}

fn run_redis(
    config: &FanOut,
    addr: String,
    unix: Option<String>,
    channel: String,
) -> Result<Vec<Series>, String> {
    let subscriber: SubscriberBody = {
        let (addr, unix, channel) = (addr.clone(), unix.clone(), channel.clone());
        Arc::new(move |recorder: &mut Recorder| {
            let mut connection = RespConnection::connect(&addr, unix.as_deref())?;
            connection
                .stream
                .set_read_timeout(Some(SUBSCRIBER_IDLE_TIMEOUT))
                .map_err(|error| error.to_string())?;
            connection.queue(&[b"SUBSCRIBE", channel.as_bytes()]);
            connection.flush().map_err(|error| error.to_string())?;
            loop {
                let value = connection.read_value().map_err(|error| error.to_string())?;
                match &value {
                    Value::Array(Some(items)) => match items.as_slice() {
                        [Value::Bulk(Some(b"message")), _, Value::Bulk(Some(message))] => {
                            if !recorder.on_message(message, 0) {
                                return Ok(());
                            }
                        }
                        [Value::Bulk(Some(b"subscribe")), _, Value::Integer(_)] => recorder.ready(),
                        _ => return Err(format!("unexpected push {value:?}")),
                    },
                    other => return Err(format!("SUBSCRIBE answered {}", other.describe())),
                }
            }
        })
    };
    run_fan_out(
        config,
        || {
            Ok(Box::new(RedisPublisher {
                connection: RespConnection::connect(&addr, unix.as_deref())?,
                channel: channel.into_bytes(),
            }) as Box<dyn Publisher>)
        },
        subscriber,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips() {
        let mut message = vec![b'x'; 128];
        stamp(&mut message, 123_456_789_012, 42);
        assert_eq!(read_stamp(&message), Some((123_456_789_012, 42)));
        assert_eq!(&message[..8], &123_456_789_012u64.to_le_bytes());
        assert!(message[HEADER..].iter().all(|&b| b == b'x'));
        stamp(&mut message[..HEADER], u64::MAX - 1, END);
        assert_eq!(read_stamp(&message[..HEADER]), Some((u64::MAX - 1, END)));
        assert_eq!(read_stamp(&message[..HEADER - 1]), None);
        assert_eq!(read_stamp(b""), None);
    }

    #[test]
    fn the_recorder_measures_only_the_measured_phase() {
        let shared = Arc::new(Shared::new(2));
        let mut recorder = Recorder::new(shared.clone(), 1);
        let mut message = vec![0u8; HEADER];
        let mut send = |recorder: &mut Recorder, sequence: u64, dropped: u64| {
            stamp(&mut message, shared.now_ns(), sequence);
            recorder.on_message(&message, dropped)
        };
        assert!(send(&mut recorder, 0, 0));
        assert!(send(&mut recorder, 1, 0));
        assert_eq!(recorder.received, 0, "warm-up messages are not measured");
        shared.measure_from.store(2, Ordering::SeqCst);
        assert!(send(&mut recorder, 2, 0));
        assert!(send(&mut recorder, 5, 2));
        assert_eq!(recorder.received, 2);
        assert_eq!(recorder.dropped, 2);
        assert_eq!(recorder.histogram.len(), 2);
        assert_eq!(shared.seen[1].0.load(Ordering::SeqCst), 6);
        assert_eq!(shared.slowest(), 0, "subscriber 0 has seen nothing");
        assert!(recorder.on_message(b"short", 0));
        assert_eq!(recorder.malformed, 1);
        assert!(!send(&mut recorder, END, 0), "the end marker stops");
    }

    #[test]
    fn options_are_checked() {
        let check = |size: usize, window: u64, burst: usize| {
            fan_out_config("t", "x", 1, size, None, "1s", "0s", window, burst, None)
        };
        assert!(check(16, 1, 1).is_ok());
        assert!(check(15, 1, 1).unwrap_err().contains("--message-size"));
        assert!(check(16, 4, 8).unwrap_err().contains("--window"));
        assert!(check(16, 4, 0).unwrap_err().contains("--burst"));
        let args = PubsubArgs::from_args(&["pubsub"], &["--transport", "carrier-pigeon"]).unwrap();
        assert!(run(&args).unwrap_err().contains("--transport"));
    }

    /// An in-process transport: the whole fan-out machinery without a server.
    struct Loopback {
        queues: Vec<std::sync::mpsc::Sender<Vec<u8>>>,
    }

    impl Publisher for Loopback {
        fn publish(&mut self, burst: &Bytes, size: usize) -> Result<Option<u64>, String> {
            for message in burst.chunks_exact(size) {
                for queue in &self.queues {
                    let _ = queue.send(message.to_vec());
                }
            }
            Ok(Some(self.queues.len() as u64))
        }
    }

    #[test]
    fn a_loopback_fan_out_loses_nothing() {
        let subscribers = 3;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..subscribers)
            .map(|_| std::sync::mpsc::channel::<Vec<u8>>())
            .unzip();
        let receivers = Arc::new(std::sync::Mutex::new(receivers));
        let body: SubscriberBody = Arc::new(move |recorder: &mut Recorder| {
            let queue = receivers.lock().unwrap().pop().unwrap();
            recorder.ready();
            while recorder.on_message(&queue.recv().map_err(|e| e.to_string())?, 0) {}
            Ok(())
        });
        let config = fan_out_config(
            "pubsub",
            "loop",
            subscribers,
            32,
            Some(10_000),
            "1s",
            "20ms",
            256,
            16,
            None,
        )
        .unwrap();
        let series = run_fan_out(
            &config,
            move || Ok(Box::new(Loopback { queues: senders }) as Box<dyn Publisher>),
            body,
        )
        .unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].count, 30_000,
            "every subscriber got every message"
        );
        assert_eq!(series[0].errors, 0);
        assert_eq!(series[1].count, 10_000);
        assert!(series[0].ops_per_sec > 0.0 && series[0].p50_ns > 0);
    }

    #[test]
    fn messages_a_subscriber_misses_are_losses() {
        let subscribers = 2;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..subscribers)
            .map(|_| std::sync::mpsc::channel::<Vec<u8>>())
            .unzip();
        let receivers = Arc::new(std::sync::Mutex::new(receivers));
        // The first subscriber loses every tenth message (as a server dropping the oldest
        // would) and hears of it with the next one, as from VedDB's FETCH.
        let lossy = Arc::new(AtomicBool::new(true));
        let body: SubscriberBody = Arc::new(move |recorder: &mut Recorder| {
            let queue = receivers.lock().unwrap().pop().unwrap();
            let lossy = lossy.swap(false, Ordering::SeqCst);
            recorder.ready();
            let mut dropped = 0;
            loop {
                let message = queue.recv().map_err(|e| e.to_string())?;
                let (_, sequence) = read_stamp(&message).unwrap();
                if lossy && sequence != END && sequence % 10 == 3 {
                    dropped += 1;
                    continue;
                }
                if !recorder.on_message(&message, std::mem::take(&mut dropped)) {
                    return Ok(());
                }
            }
        });
        let config = fan_out_config(
            "pubsub",
            "loop",
            subscribers,
            16,
            Some(5_000),
            "1s",
            "0s",
            64,
            8,
            None,
        )
        .unwrap();
        let series = run_fan_out(
            &config,
            move || Ok(Box::new(Loopback { queues: senders }) as Box<dyn Publisher>),
            body,
        )
        .unwrap();
        assert_eq!(series[0].count, 10_000 - 500);
        assert_eq!(series[0].errors, 500, "expected minus received");
        assert_eq!(series[1].count, 5_000);
    }
}
