//! Open-loop load: requests at a fixed rate, latency from the time each was *meant* to be sent.
//!
//! A closed loop (one request, its answer, the next request) sends nothing while the server
//! stalls, so a stall shows up as one slow request instead of all the requests that would have
//! queued behind it: the load generator coordinates with the server and omits the bad samples
//! ("coordinated omission"). An open loop fixes the send times in advance: with a total rate R
//! spread over S senders, sender s sends its request i at `t0 + (s + i * S) / R` (so the S
//! senders together send one request every 1/R). A sender that falls behind (the previous answer
//! came late) never skips a slot: it sends the overdue requests at once, one after the other, and
//! each one's latency runs from its intended time, so the wait it spent in the backlog counts.
//!
//! [`Pacer`] is that schedule, on nanoseconds of a [`Clock`] (a real one, or a fake one in the
//! tests). [`wait_sync`] and [`wait_async`] wait for the next slot on a thread or in a task.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Nanoseconds since an origin.
pub trait Clock {
    fn now_ns(&self) -> u64;
}

/// The monotonic clock, from an origin every sender of a run shares.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new(origin: Instant) -> MonotonicClock {
        MonotonicClock { origin }
    }

    pub fn starting_now() -> MonotonicClock {
        MonotonicClock::new(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeClock(std::cell::Cell<u64>);

#[cfg(test)]
impl FakeClock {
    pub fn set(&self, ns: u64) {
        assert!(ns >= self.0.get(), "time goes forward");
        self.0.set(ns);
    }
    pub fn advance(&self, ns: u64) {
        self.0.set(self.0.get() + ns);
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now_ns(&self) -> u64 {
        self.0.get()
    }
}

/// Buckets of [`PacerStats::delays`]: bucket 0 counts sends on time, bucket b (1..) sends late
/// by `2^(b-1)..2^b` ns, the last one everything from about half a second on.
const DELAY_BUCKETS: usize = 32;

/// How far behind its schedule a sender fell.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PacerStats {
    /// Slots sent.
    pub sent: u64,
    /// Slots sent while the next slot was already due too (the sender was behind).
    pub late: u64,
    /// The most slots due and not yet sent at one send (1: on time).
    pub max_backlog: u64,
    /// The longest time from a slot's intended time to its actual send.
    pub max_delay_ns: u64,
    /// Sends by how late they went out (the load generator's own lateness: waking up, or
    /// waiting for the previous answer), in powers of two (see [`DELAY_BUCKETS`]).
    pub delays: [u64; DELAY_BUCKETS],
}

impl PacerStats {
    pub fn merge(&mut self, other: &PacerStats) {
        self.sent += other.sent;
        self.late += other.late;
        self.max_backlog = self.max_backlog.max(other.max_backlog);
        self.max_delay_ns = self.max_delay_ns.max(other.max_delay_ns);
        for (mine, theirs) in self.delays.iter_mut().zip(&other.delays) {
            *mine += theirs;
        }
    }

    fn record_delay(&mut self, delay_ns: u64) {
        let bucket = (64 - delay_ns.leading_zeros() as usize).min(DELAY_BUCKETS - 1);
        self.delays[bucket] += 1;
    }

    /// An upper bound of the `quantile` (0..=1) of the send delays: 0, or a power of two
    /// (at most twice the true value), capped by the maximum.
    pub fn delay_quantile_ns(&self, quantile: f64) -> u64 {
        let total: u64 = self.delays.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, &count) in self.delays.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return match bucket {
                    0 => 0,
                    b => (1u64 << b).saturating_sub(1).min(self.max_delay_ns),
                };
            }
        }
        self.max_delay_ns
    }
}

/// One sender's schedule in an open-loop run.
#[derive(Clone, Debug)]
pub struct Pacer {
    t0_ns: u64,
    /// Nanoseconds between two slots of the whole run (1 / total rate).
    step_ns: f64,
    senders: u64,
    sender: u64,
    /// The next slot to send.
    next: u64,
    stats: PacerStats,
    /// Slots intended before this time (the warm-up) are not in the stats.
    stats_from_ns: u64,
}

impl Pacer {
    /// Sender `sender` of `senders` that together send `rate` requests per second from `t0_ns`.
    pub fn new(t0_ns: u64, rate: f64, senders: usize, sender: usize) -> Pacer {
        assert!(rate > 0.0 && rate.is_finite(), "the rate must be positive");
        assert!(sender < senders, "sender {sender} of {senders}");
        Pacer {
            t0_ns,
            step_ns: 1e9 / rate,
            senders: senders as u64,
            sender: sender as u64,
            next: 0,
            stats: PacerStats::default(),
            stats_from_ns: 0,
        }
    }

    /// Accounts only the slots intended from `from_ns` on in [`Pacer::stats`] (the measured
    /// window; being behind during the warm-up is not reported).
    pub fn account_from(mut self, from_ns: u64) -> Pacer {
        self.stats_from_ns = from_ns;
        self
    }

    /// When slot `slot` of this sender is meant to be sent.
    pub fn intended_ns(&self, slot: u64) -> u64 {
        let global = (self.sender + slot * self.senders) as f64;
        self.t0_ns + (global * self.step_ns) as u64
    }

    /// When the next slot is meant to be sent.
    pub fn next_intended_ns(&self) -> u64 {
        self.intended_ns(self.next)
    }

    /// Nanoseconds between two slots of this sender.
    #[cfg(test)]
    pub fn period_ns(&self) -> f64 {
        self.step_ns * self.senders as f64
    }

    /// Slots due by `now_ns` (intended at or before it) and not sent yet.
    pub fn backlog(&self, now_ns: u64) -> u64 {
        self.due_by(now_ns).saturating_sub(self.next)
    }

    /// How many of this sender's slots are intended at or before `now_ns`.
    fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.intended_ns(0) {
            return 0;
        }
        // An estimate from the rate, then exact against `intended_ns` (which rounds).
        let mut due = (((now_ns - self.t0_ns) as f64 / self.step_ns - self.sender as f64)
            / self.senders as f64)
            .floor()
            .max(0.0) as u64
            + 1;
        while self.intended_ns(due) <= now_ns {
            due += 1;
        }
        while due > 0 && self.intended_ns(due - 1) > now_ns {
            due -= 1;
        }
        due
    }

    /// Nanoseconds until the next slot is due (0: due now, or overdue).
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        self.next_intended_ns().saturating_sub(now_ns)
    }

    /// Takes the next slot, sent at `now_ns`: returns its intended time (the start of the
    /// request's latency). A sender behind its schedule takes the overdue slots one by one, as
    /// fast as it can send them; none is skipped.
    pub fn take(&mut self, now_ns: u64) -> u64 {
        let intended = self.next_intended_ns();
        self.next += 1;
        if intended < self.stats_from_ns {
            return intended;
        }
        let backlog = self.backlog(now_ns) + 1;
        self.stats.sent += 1;
        self.stats.max_backlog = self.stats.max_backlog.max(backlog);
        if backlog >= 2 {
            self.stats.late += 1;
        }
        let delay = now_ns.saturating_sub(intended);
        self.stats.max_delay_ns = self.stats.max_delay_ns.max(delay);
        self.stats.record_delay(delay);
        intended
    }

    /// The intended times of the slots due by `now_ns` that were never sent (a run that ends
    /// while a sender is behind): each is a request that waited at least `now_ns - intended`.
    pub fn unsent(&self, now_ns: u64) -> impl Iterator<Item = u64> + '_ {
        (self.next..self.due_by(now_ns)).map(|slot| self.intended_ns(slot))
    }

    pub fn stats(&self) -> PacerStats {
        self.stats
    }
}

/// The latency of a request meant for `intended_ns` and answered at `done_ns` (at least 1 ns).
pub fn latency_ns(intended_ns: u64, done_ns: u64) -> u64 {
    done_ns.saturating_sub(intended_ns).max(1)
}

/// What one open-loop sender recorded: the latencies of the requests intended within the
/// measured window `[from_ns, until_ns)`.
pub struct Recorder {
    pub from_ns: u64,
    pub until_ns: u64,
    pub histogram: Histogram<u64>,
    /// Requests answered (intended within the window).
    pub operations: u64,
    /// Requests due within the window but never sent before the run ended.
    pub unsent: u64,
}

impl Recorder {
    pub fn new(from_ns: u64, until_ns: u64) -> Recorder {
        Recorder {
            from_ns,
            until_ns,
            histogram: crate::report::histogram(),
            operations: 0,
            unsent: 0,
        }
    }

    /// Whether a request intended at `intended_ns` is measured.
    pub fn measures(&self, intended_ns: u64) -> bool {
        (self.from_ns..self.until_ns).contains(&intended_ns)
    }

    /// Records `requests` answered at `done_ns` that were meant for `intended_ns`; returns
    /// whether they were measured.
    pub fn record(&mut self, intended_ns: u64, done_ns: u64, requests: u64) -> bool {
        if !self.measures(intended_ns) {
            return false;
        }
        self.histogram
            .saturating_record(latency_ns(intended_ns, done_ns));
        self.operations += requests;
        true
    }

    /// At the end of the run (`now_ns`, at or after `until_ns`): the slots the sender never got
    /// to within the window enter the histogram with the time they had waited so far (a lower
    /// bound), and count as unsent, not as operations.
    pub fn finish(&mut self, pacer: &Pacer, now_ns: u64) {
        let until = self.until_ns;
        for intended in pacer.unsent(now_ns.min(until.saturating_sub(1))) {
            if self.measures(intended) {
                self.histogram
                    .saturating_record(latency_ns(intended, now_ns));
                self.unsent += 1;
            }
        }
    }
}

/// How close to a slot a sender stops sleeping and polls instead: a sleep can end this much
/// late (timer slack, the scheduler), and that lateness would count in every latency.
const POLL_BEFORE_NS: u64 = 100_000;

/// Blocks the thread until the pacer's next slot is due: sleeps while it is far, then yields
/// (so a client thread sharing a CPU with the server does not starve it). Returns the time.
pub fn wait_sync(pacer: &Pacer, clock: &impl Clock) -> u64 {
    loop {
        let now = clock.now_ns();
        let wait = pacer.wait_ns(now);
        if wait == 0 {
            return now;
        }
        if wait > POLL_BEFORE_NS {
            std::thread::sleep(Duration::from_nanos(wait - POLL_BEFORE_NS));
        } else {
            std::thread::yield_now();
        }
    }
}

/// Waits in a compio task until the pacer's next slot is due: sleeps on a timer while it is
/// far, then yields to the runtime until it is due (other tasks and I/O run meanwhile).
/// Returns the time.
pub async fn wait_async(pacer: &Pacer, clock: &impl Clock) -> u64 {
    loop {
        let now = clock.now_ns();
        let wait = pacer.wait_ns(now);
        if wait == 0 {
            return now;
        }
        if wait > POLL_BEFORE_NS {
            compio::time::sleep(Duration::from_nanos(wait - POLL_BEFORE_NS)).await;
        } else {
            yield_now().await;
        }
    }
}

/// Lets the runtime run its other tasks and poll its I/O once.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// The open-loop summary of a series.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpenLoopSummary {
    /// The requested rate (`--rate`), requests per second over all senders.
    pub target_ops_per_sec: f64,
    /// Senders sharing it.
    pub senders: usize,
    /// Requests sent while the sender was behind its schedule (the next one already due).
    pub late_sends: u64,
    /// The most requests one sender had due and unsent at once.
    pub max_backlog: u64,
    /// The longest a request waited from its intended time to its send.
    pub max_send_delay_ns: u64,
    /// The median and the 99th percentile of that wait (upper bounds, within a factor of 2):
    /// how late the load generator itself sent, which the latencies include.
    #[serde(default)]
    pub send_delay_p50_ns: u64,
    #[serde(default)]
    pub send_delay_p99_ns: u64,
    /// Requests due in the measured window and never sent (counted in the latencies with the
    /// time they had waited when the run ended, not in `count`).
    pub unsent: u64,
}

impl OpenLoopSummary {
    pub fn new(target: f64, senders: usize, stats: &PacerStats, unsent: u64) -> OpenLoopSummary {
        OpenLoopSummary {
            target_ops_per_sec: target,
            senders,
            late_sends: stats.late,
            max_backlog: stats.max_backlog,
            max_send_delay_ns: stats.max_delay_ns,
            send_delay_p50_ns: stats.delay_quantile_ns(0.5),
            send_delay_p99_ns: stats.delay_quantile_ns(0.99),
            unsent,
        }
    }
}

/// Checks `--rate`: none (closed loop) or a positive number of requests per second.
pub fn check_rate(rate: Option<f64>) -> Result<Option<f64>, String> {
    match rate {
        None => Ok(None),
        Some(rate) if rate > 0.0 && rate <= 1e9 => Ok(Some(rate)),
        Some(rate) => Err(format!(
            "--rate must be above 0 and at most 1e9 requests per second, not {rate}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn intended_times_are_spread_over_the_senders() {
        // 1000/s over 4 senders from t0 = 5 ms: one request per ms overall, each sender every 4 ms.
        let pacers: Vec<Pacer> = (0..4).map(|s| Pacer::new(5 * MS, 1000.0, 4, s)).collect();
        for (s, pacer) in pacers.iter().enumerate() {
            assert_eq!(pacer.period_ns(), 4.0 * MS as f64);
            for i in 0..100u64 {
                assert_eq!(pacer.intended_ns(i), 5 * MS + (s as u64 + 4 * i) * MS);
            }
        }
        let mut all: Vec<u64> = pacers
            .iter()
            .flat_map(|p| (0..250).map(move |i| p.intended_ns(i)))
            .collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[1] - w[0] == MS));
        // Fractional rates do not drift: slot 1e6 of 3/s is at exactly 333333.33... s.
        let pacer = Pacer::new(0, 3.0, 1, 0);
        assert_eq!(pacer.intended_ns(1_000_000), 333_333_333_333_333);
    }

    #[test]
    fn a_sender_on_time_waits_and_has_no_backlog() {
        let clock = FakeClock::default();
        let mut pacer = Pacer::new(0, 1000.0, 1, 0);
        for i in 0..10 {
            assert_eq!(pacer.wait_ns(clock.now_ns()), 0, "slot {i} is due");
            assert_eq!(pacer.backlog(clock.now_ns()), 1);
            assert_eq!(pacer.take(clock.now_ns()), i * MS);
            clock.advance(MS / 4); // a quick answer
            assert_eq!(pacer.backlog(clock.now_ns()), 0);
            assert_eq!(pacer.wait_ns(clock.now_ns()), 3 * MS / 4);
            clock.set(pacer.next_intended_ns());
        }
        let stats = pacer.stats();
        assert_eq!(
            (
                stats.sent,
                stats.late,
                stats.max_backlog,
                stats.max_delay_ns
            ),
            (10, 0, 1, 0)
        );
        assert_eq!(stats.delays[0], 10, "all on time");
        assert_eq!(stats.delay_quantile_ns(0.99), 0);
    }

    #[test]
    fn a_stalled_sender_catches_up_without_skipping_and_counts_the_wait() {
        // 1000/s, one sender; the first answer takes 100 ms, every other one 0.1 ms.
        let clock = FakeClock::default();
        let mut pacer = Pacer::new(0, 1000.0, 1, 0);
        let mut recorder = Recorder::new(0, 200 * MS);
        let mut closed_loop = crate::report::histogram();
        while pacer.next_intended_ns() < 200 * MS {
            clock.set(clock.now_ns().max(pacer.next_intended_ns()));
            let sent = clock.now_ns();
            let intended = pacer.take(sent);
            clock.advance(if intended == 0 { 100 * MS } else { MS / 10 });
            assert!(recorder.record(intended, clock.now_ns(), 1));
            closed_loop.record(clock.now_ns() - sent).unwrap();
        }
        assert_eq!(recorder.operations, 200, "no slot skipped");
        let stats = pacer.stats();
        assert_eq!(stats.sent, 200);
        // At 100 ms slots 1..=100 were due: a backlog of 100 at the first catch-up send.
        assert_eq!(stats.max_backlog, 100);
        assert_eq!(stats.max_delay_ns, 100 * MS - MS);
        // Slot i (1..) is sent at 100 ms + (i - 1) * 0.1 ms until the sender is back on time.
        assert!(stats.late > 90 && stats.late < 112, "{}", stats.late);
        // Most sends were late (by up to 99 ms); the median by at least a few ms.
        assert!(
            stats.delay_quantile_ns(0.5) >= 4 * MS,
            "{}",
            stats.delay_quantile_ns(0.5)
        );
        assert_eq!(stats.delay_quantile_ns(1.0), stats.max_delay_ns);
        assert_eq!(
            stats.delay_quantile_ns(0.1),
            0,
            "the on-time sends after the catch-up"
        );
        // The open loop sees the stall in more than half of its requests (the 110 sent late)...
        let open = &recorder.histogram;
        assert_eq!(open.max(), open.highest_equivalent(100 * MS));
        assert!(
            open.value_at_quantile(0.5) > 5 * MS,
            "{}",
            open.value_at_quantile(0.5)
        );
        assert!(open.value_at_quantile(0.9) > 50 * MS);
        assert!(open.value_at_quantile(0.4) < MS);
        // ... the closed loop in one request alone (its p99 is the quick answer).
        assert!(closed_loop.value_at_quantile(0.99) <= MS / 10 + 100);
        assert_eq!(closed_loop.max(), closed_loop.highest_equivalent(100 * MS));
    }

    #[test]
    fn latency_runs_from_the_intended_time() {
        let clock = FakeClock::default();
        let mut pacer = Pacer::new(10 * MS, 200.0, 2, 1); // slots at 15 ms, 25 ms, 35 ms ...
        clock.set(40 * MS); // late: slots 0, 1 and 2 are due
        assert_eq!(pacer.backlog(clock.now_ns()), 3);
        assert_eq!(pacer.wait_ns(clock.now_ns()), 0);
        let mut latencies = Vec::new();
        for expected in [15 * MS, 25 * MS, 35 * MS] {
            let intended = pacer.take(clock.now_ns());
            assert_eq!(intended, expected);
            clock.advance(MS);
            latencies.push(latency_ns(intended, clock.now_ns()));
        }
        assert_eq!(latencies, [26 * MS, 17 * MS, 8 * MS]);
        assert_eq!(pacer.backlog(clock.now_ns()), 0);
        assert_eq!(pacer.wait_ns(clock.now_ns()), 2 * MS);
        assert_eq!(latency_ns(5, 5), 1, "never 0");
        let stats = pacer.stats();
        assert_eq!(
            (stats.late, stats.max_backlog, stats.max_delay_ns),
            (2, 3, 25 * MS)
        );
    }

    #[test]
    fn the_window_and_the_unsent_backlog_at_the_end() {
        // 1000/s from 0; warm-up until 10 ms, measured until 20 ms.
        let mut pacer = Pacer::new(0, 1000.0, 1, 0);
        let mut recorder = Recorder::new(10 * MS, 20 * MS);
        // On time until 14 ms (slots 0..=14 sent, answered at once).
        for slot in 0..=14 {
            let intended = pacer.take(slot * MS);
            assert_eq!(recorder.record(intended, slot * MS + 1000, 1), slot >= 10);
        }
        assert_eq!(recorder.operations, 5);
        // Then the server hangs: at 25 ms the run ends with slots 15..=19 of the window (and
        // 20..=25 after it) due and unsent.
        assert_eq!(pacer.backlog(25 * MS), 11);
        recorder.finish(&pacer, 25 * MS);
        assert_eq!(recorder.unsent, 5);
        assert_eq!(recorder.operations, 5);
        assert_eq!(recorder.histogram.len(), 10);
        // Slot 15 waited 10 ms when the run ended.
        assert_eq!(
            recorder.histogram.max(),
            recorder.histogram.highest_equivalent(10 * MS)
        );
        assert_eq!(pacer.unsent(25 * MS).count(), 11);
        assert_eq!(pacer.unsent(14 * MS).count(), 0);
    }

    #[test]
    fn the_warm_up_is_not_in_the_stats() {
        let mut pacer = Pacer::new(0, 1000.0, 1, 0).account_from(10 * MS);
        // Far behind during the warm-up: slots 0..=9 sent at 9.5 ms.
        for _ in 0..10 {
            pacer.take(9 * MS + MS / 2);
        }
        assert_eq!(pacer.stats(), PacerStats::default());
        for slot in 10..20 {
            pacer.take(slot * MS + 100);
        }
        let stats = pacer.stats();
        assert_eq!((stats.sent, stats.late, stats.max_backlog), (10, 0, 1));
        assert_eq!(stats.max_delay_ns, 100);
        // 100 ns late: bucket 7 (64..128 ns).
        assert_eq!(stats.delays[7], 10);
        assert_eq!(stats.delay_quantile_ns(0.5), 100, "capped by the maximum");
        let mut other = Pacer::new(0, 1000.0, 1, 0);
        other.take(7);
        let mut total = PacerStats::default();
        total.merge(&stats);
        total.merge(&other.stats());
        assert_eq!(
            (
                total.sent,
                total.late,
                total.max_backlog,
                total.max_delay_ns
            ),
            (11, 0, 1, 100)
        );
        assert_eq!(total.delays[3], 1, "7 ns late: bucket 3 (4..8 ns)");
        assert_eq!(total.delays.iter().sum::<u64>(), 11);
    }

    #[test]
    fn rates_are_checked() {
        assert_eq!(check_rate(None), Ok(None));
        assert_eq!(check_rate(Some(5e4)), Ok(Some(5e4)));
        assert!(check_rate(Some(0.0)).is_err());
        assert!(check_rate(Some(-1.0)).is_err());
        assert!(check_rate(Some(f64::NAN)).is_err());
    }

    #[test]
    fn the_real_wait_reaches_the_slot() {
        let clock = MonotonicClock::starting_now();
        let mut pacer = Pacer::new(clock.now_ns() + 2 * MS, 2000.0, 1, 0);
        for _ in 0..5 {
            let now = wait_sync(&pacer, &clock);
            let intended = pacer.take(now);
            assert!(now >= intended);
        }
        assert!(clock.now_ns() >= 4 * MS);
    }
}
