//! The `ring` scenario: what a message round trip between two CPUs costs at the bottom of the
//! local path, with nothing of VedDB's above it. Two threads pinned to two CPUs bounce one
//! message back and forth, in five layouts:
//!
//! - `one line`: the message and a sequence word in one cache line each way (a ring with a
//!   sequence word per slot): one line crosses per message, the floor;
//! - `two lines`: the message in one line and a separate counter line each way (the layout of
//!   [`ByteRing`] before layout version 2: data, then a tail counter of its own), with raw
//!   atomics;
//! - `slotted ring`: one-line slots moving through a ring, a sequence word per slot (the
//!   consumer waits on the slot itself; no counter line);
//! - `counter ring`: messages moving through a ring, a counter line of its own each way
//!   (the old ByteRing's pattern with raw atomics);
//! - `ByteRing`: the real ring of `veddb_shm` over a shared-memory segment, a 25-byte request
//!   (a GET of a 16-byte key) and a 38-byte answer (a value in shared memory), with every
//!   check of its hostile-peer protocol: since layout version 2 the consumer waits on the
//!   frame header at its head (the slotted ring's pattern with variable-length frames).
//!
//! Latency is one round trip, timed with the CPU's time-stamp counter where there is one
//! (about 13 ns to read here, against 33 ns for the clock), calibrated against the clock over
//! the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use argh::FromArgs;
use veddb_shm::{ByteRing, Segment};

use crate::report::{histogram, Series};

/// Round trips of one message between two pinned CPUs: one cache line per message, two
/// (a separate counter), and the real ByteRing.
#[derive(FromArgs)]
#[argh(subcommand, name = "ring")]
pub struct RingArgs {
    /// round trips per layout (default 2000000)
    #[argh(option, default = "2_000_000")]
    pub round_trips: u64,
    /// CPU of the echoing thread (default 0)
    #[argh(option, default = "0")]
    pub echo_cpu: usize,
    /// CPU of the timing thread (default 1)
    #[argh(option, default = "1")]
    pub timing_cpu: usize,
    /// bytes of each ByteRing's data area (default 1048576, the server's default)
    #[argh(option, default = "1 << 20")]
    pub ring_bytes: usize,
    /// write the results as JSON to this file
    #[argh(option)]
    pub json: Option<String>,
}

pub fn settings(args: &RingArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "ring", "round_trips": args.round_trips,
        "echo_cpu": args.echo_cpu, "timing_cpu": args.timing_cpu, "ring_bytes": args.ring_bytes,
    })
}

fn pin(cpu: usize) {
    let _ = compio::runtime::RuntimeBuilder::new()
        .thread_affinity(std::collections::HashSet::from([cpu]))
        .build();
}

/// A time stamp: the TSC where there is one, else nanoseconds of the clock.
#[inline]
fn stamp(origin: Instant) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = origin;
        // SAFETY: RDTSC has no preconditions on x86_64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        origin.elapsed().as_nanos() as u64
    }
}

#[repr(C, align(128))]
#[derive(Default)]
struct Line([AtomicU64; 8]);

/// Both directions' lines: `message` (word 0 a sequence, word 1 the message) and a separate
/// `counter` line, each way.
#[derive(Default)]
struct Lines {
    request: Line,
    request_counter: Line,
    answer: Line,
    answer_counter: Line,
}

/// A layout of raw atomics: the timing thread's round trip, the echo thread's loop (until
/// stopped).
trait Layout: Send + Sync + 'static {
    fn round_trip(&self, i: u64);
    fn echo(&self, stop: &AtomicBool);
}

/// The message in a fixed line each way, published by a word in that same line (`one line`)
/// or in a line of its own (`two lines`).
struct FixedLines {
    lines: Lines,
    separate_counter: bool,
}

impl FixedLines {
    fn new(separate_counter: bool) -> FixedLines {
        FixedLines {
            lines: Lines::default(),
            separate_counter,
        }
    }

    /// The words that publish a request and an answer.
    fn published(&self) -> (&AtomicU64, &AtomicU64) {
        let l = &self.lines;
        if self.separate_counter {
            (&l.request_counter.0[0], &l.answer_counter.0[0])
        } else {
            (&l.request.0[0], &l.answer.0[0])
        }
    }
}

impl Layout for FixedLines {
    fn round_trip(&self, i: u64) {
        let (request, answer) = self.published();
        self.lines.request.0[1].store(i, Ordering::Relaxed);
        request.store(i, Ordering::Release);
        while answer.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        assert_eq!(self.lines.answer.0[1].load(Ordering::Relaxed), i + 1);
    }

    fn echo(&self, stop: &AtomicBool) {
        let (request, answer) = self.published();
        let mut seen = 0;
        while !stop.load(Ordering::Relaxed) {
            let sequence = request.load(Ordering::Acquire);
            if sequence == seen {
                std::hint::spin_loop();
                continue;
            }
            seen = sequence;
            let message = self.lines.request.0[1].load(Ordering::Relaxed);
            self.lines.answer.0[1].store(message + 1, Ordering::Relaxed);
            answer.store(sequence, Ordering::Release);
        }
    }
}

/// A ring of one-line slots each way, a sequence word per slot: message `i` goes to slot
/// `i % SLOTS`, published by storing `i` in the slot's sequence word (the consumer waits for
/// it there: no counter line at all). One line per message, moving through the ring.
struct Slotted {
    requests: Vec<Line>,
    answers: Vec<Line>,
}

const SLOTS: usize = 1024;

impl Slotted {
    fn new() -> Slotted {
        Slotted {
            requests: (0..SLOTS).map(|_| Line::default()).collect(),
            answers: (0..SLOTS).map(|_| Line::default()).collect(),
        }
    }
}

impl Layout for Slotted {
    fn round_trip(&self, i: u64) {
        let slot = i as usize % SLOTS;
        self.requests[slot].0[1].store(i, Ordering::Relaxed);
        self.requests[slot].0[0].store(i, Ordering::Release);
        let answer = &self.answers[slot];
        while answer.0[0].load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        assert_eq!(answer.0[1].load(Ordering::Relaxed), i + 1);
    }

    fn echo(&self, stop: &AtomicBool) {
        let mut next = 1u64;
        while !stop.load(Ordering::Relaxed) {
            let slot = next as usize % SLOTS;
            let request = &self.requests[slot];
            if request.0[0].load(Ordering::Acquire) != next {
                std::hint::spin_loop();
                continue;
            }
            let message = request.0[1].load(Ordering::Relaxed);
            self.answers[slot].0[1].store(message + 1, Ordering::Relaxed);
            self.answers[slot].0[0].store(next, Ordering::Release);
            next += 1;
        }
    }
}

/// A counter ring of raw atomics: messages 48 bytes apart moving through 64 KiB, a counter in
/// a line of its own each way: the pattern of memory accesses of ByteRing before layout
/// version 2, without its code, which tells the pattern's cost from the code's.
struct CounterRing {
    requests: Vec<AtomicU64>,
    request_tail: Line,
    answers: Vec<AtomicU64>,
    answer_tail: Line,
}

const WORDS: usize = 8192;

impl CounterRing {
    fn new() -> CounterRing {
        CounterRing {
            requests: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            request_tail: Line::default(),
            answers: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            answer_tail: Line::default(),
        }
    }
}

impl Layout for CounterRing {
    fn round_trip(&self, i: u64) {
        let at = (i as usize * 6) % WORDS;
        self.requests[at].store(i, Ordering::Relaxed);
        self.request_tail.0[0].store(i, Ordering::Release);
        while self.answer_tail.0[0].load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        assert_eq!(self.answers[at].load(Ordering::Relaxed), i + 1);
    }

    fn echo(&self, stop: &AtomicBool) {
        let mut seen = 0;
        while !stop.load(Ordering::Relaxed) {
            let tail = self.request_tail.0[0].load(Ordering::Acquire);
            if tail == seen {
                std::hint::spin_loop();
                continue;
            }
            seen = tail;
            let at = (tail as usize * 6) % WORDS;
            let message = self.requests[at].load(Ordering::Relaxed);
            self.answers[at].store(message + 1, Ordering::Relaxed);
            self.answer_tail.0[0].store(tail, Ordering::Release);
        }
    }
}

/// The real rings: requests one way, answers the other, in one segment.
struct Rings {
    request: ByteRing,
    answer: ByteRing,
    segment: Arc<Segment>,
}

const REQUEST_BYTES: usize = 25;
const ANSWER_BYTES: usize = 38;

impl Rings {
    fn new(ring_bytes: usize) -> Result<Rings, String> {
        let segment = Segment::create("veddb-bench-ring", 512 + 2 * ring_bytes)
            .map_err(|error| format!("cannot create a segment: {error}"))?;
        Ok(Rings {
            request: ByteRing {
                head_offset: 0,
                data_offset: 256,
                size: ring_bytes,
            },
            answer: ByteRing {
                head_offset: 256 + ring_bytes,
                data_offset: 512 + ring_bytes,
                size: ring_bytes,
            },
            segment: Arc::new(segment),
        })
    }

    /// The timing end: pushes requests, reads answers.
    fn timing_end(&self) -> impl FnMut(u64) + Send + 'static {
        let mut requests = self
            .request
            .producer(self.segment.clone())
            .expect("a valid ring");
        let mut answers = self
            .answer
            .consumer(self.segment.clone())
            .expect("a valid ring");
        move |i| {
            let mut request = [0u8; REQUEST_BYTES];
            request[..8].copy_from_slice(&i.to_le_bytes());
            let pushed = requests.try_push(&request);
            assert_eq!(pushed, Ok(true), "the request ring is never full");
            let frame = loop {
                match answers.peek().expect("an honest ring") {
                    Some(frame) => break frame,
                    None => std::hint::spin_loop(),
                }
            };
            let mut answer = [0u8; ANSWER_BYTES];
            answers.copy_payload_into(&frame, &mut answer);
            answers.advance(frame);
            assert_eq!(answer[..8], (i + 1).to_le_bytes());
        }
    }

    /// The echoing end: reads requests, pushes answers, until `stop`.
    fn echo_end(&self) -> impl FnOnce(&AtomicBool) + Send + 'static {
        let mut requests = self
            .request
            .consumer(self.segment.clone())
            .expect("a valid ring");
        let mut answers = self
            .answer
            .producer(self.segment.clone())
            .expect("a valid ring");
        move |stop| {
            while !stop.load(Ordering::Relaxed) {
                let Some(frame) = requests.peek().expect("an honest ring") else {
                    std::hint::spin_loop();
                    continue;
                };
                let mut request = [0u8; REQUEST_BYTES];
                requests.copy_payload_into(&frame, &mut request);
                requests.advance(frame);
                let message = u64::from_le_bytes(request[..8].try_into().expect("8 bytes"));
                let mut answer = [0u8; ANSWER_BYTES];
                answer[..8].copy_from_slice(&(message + 1).to_le_bytes());
                let pushed = answers.try_push(&answer);
                assert_eq!(pushed, Ok(true), "the answer ring is never full");
            }
        }
    }
}

/// A layout's two ends: the timing thread's round trip, and the echo thread's loop.
type Ends = (
    Box<dyn FnMut(u64) + Send>,
    Box<dyn FnOnce(&AtomicBool) + Send>,
);

fn ends_of<L: Layout>(layout: L) -> Ends {
    let layout = Arc::new(layout);
    let echo = layout.clone();
    (
        Box::new(move |i| layout.round_trip(i)),
        Box::new(move |stop| echo.echo(stop)),
    )
}

fn measure(
    (mut round_trip, echo_loop): Ends,
    op: &str,
    latency_of: &str,
    args: &RingArgs,
) -> Result<Series, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let (stop, cpu) = (stop.clone(), args.echo_cpu);
        std::thread::spawn(move || {
            pin(cpu);
            echo_loop(&stop);
        })
    };
    let timing = {
        let (round_trips, cpu) = (args.round_trips, args.timing_cpu);
        std::thread::spawn(move || {
            pin(cpu);
            // Warm-up: a tenth of the round trips, untimed.
            let warmup = round_trips / 10 + 1;
            for i in 1..=warmup {
                round_trip(i);
            }
            let mut ticks = Vec::with_capacity(round_trips as usize);
            let origin = Instant::now();
            let first = stamp(origin);
            let mut last = first;
            for i in warmup + 1..=warmup + round_trips {
                round_trip(i);
                let now = stamp(origin);
                ticks.push(now - last);
                last = now;
            }
            (ticks, last - first, origin.elapsed())
        })
    };
    let outcome = timing.join();
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    let (ticks, total_ticks, elapsed) = outcome.map_err(|_| format!("{op}: a thread panicked"))?;
    let ns_per_tick = elapsed.as_nanos() as f64 / total_ticks.max(1) as f64;
    let mut latencies = histogram();
    for tick in ticks {
        let _ = latencies.record(((tick as f64 * ns_per_tick).round() as u64).max(1));
    }
    Ok(Series::new(
        "ring",
        op,
        latency_of,
        &latencies,
        args.round_trips,
        elapsed.as_secs_f64(),
        0,
    ))
}

pub fn run(args: &RingArgs) -> Result<Vec<Series>, String> {
    if args.round_trips == 0 {
        return Err("--round-trips must be at least 1".into());
    }
    if args.echo_cpu == args.timing_cpu {
        return Err("--echo-cpu and --timing-cpu must differ (each thread spins)".into());
    }
    let latency_of = "one round trip between the two CPUs";
    Ok(vec![
        measure(
            ends_of(FixedLines::new(false)),
            "one line",
            latency_of,
            args,
        )?,
        measure(
            ends_of(FixedLines::new(true)),
            "two lines",
            latency_of,
            args,
        )?,
        measure(ends_of(Slotted::new()), "slotted ring", latency_of, args)?,
        measure(
            ends_of(CounterRing::new()),
            "counter ring",
            latency_of,
            args,
        )?,
        {
            let rings = Rings::new(args.ring_bytes)?;
            let ends: Ends = (Box::new(rings.timing_end()), Box::new(rings.echo_end()));
            measure(ends, "ByteRing", latency_of, args)?
        },
    ])
}
