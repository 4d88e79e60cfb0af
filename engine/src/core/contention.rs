//! Whether other threads wait for this core's CPU: the kernel's count of the time the core's
//! thread spent runnable but not running (`/proc/thread-self/schedstat`, its second field),
//! sampled at a coarse interval while the core spins. A core that busy-waits on a CPU another
//! thread needs (a client process, a gRPC client, anything else the machine runs) takes the CPU
//! from it for a whole scheduler slice; while such waiting is seen, the core yields between
//! polls instead (see `CoreContext::gives_way`).

use std::time::{Duration, Instant};

/// How often a spinning core looks (a read of the file costs a few microseconds).
const SAMPLE_EVERY: Duration = Duration::from_millis(4);
/// Run-queue delay above this share of the time between two looks means another thread
/// competes for the CPU all along: one that does gets about half of it from a spinning core.
/// (Short wake-ups of the process's own background threads stay far below: giving way for
/// them would cost every request a `sched_yield`, about 1 µs here.)
const CONTENDED_PERMILLE: u128 = 250;
/// Once seen, the core gives way for at least this long (and as long as it is seen again).
const GIVE_WAY_FOR: Duration = Duration::from_millis(20);

/// The sampler of one core thread (made on that thread: the file names the thread that opens
/// it).
pub(super) struct Contention {
    #[cfg(target_os = "linux")]
    file: Option<std::fs::File>,
    /// The previous sample: when, and the run-queue delay then (ns).
    last: Option<(Instant, u64)>,
    /// Giving way until then.
    until: Option<Instant>,
}

impl Contention {
    pub(super) fn new() -> Contention {
        Contention {
            #[cfg(target_os = "linux")]
            file: std::fs::File::open("/proc/thread-self/schedstat").ok(),
            last: None,
            until: None,
        }
    }

    /// Whether to give way now; samples the run-queue delay when one is due.
    pub(super) fn contended(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|(at, _)| now.saturating_duration_since(at) >= SAMPLE_EVERY);
        if due {
            let delay = self.run_delay_ns();
            self.observe(now, delay);
        }
        self.until.is_some_and(|until| now < until)
    }

    /// Takes a sample: the run-queue delay (ns) at `now`, if known.
    fn observe(&mut self, now: Instant, delay: Option<u64>) {
        let Some(delay) = delay else {
            return;
        };
        if let Some((at, previous)) = self.last {
            let elapsed = now.saturating_duration_since(at).as_nanos().max(1);
            let waited = u128::from(delay.saturating_sub(previous));
            if waited * 1000 > elapsed * CONTENDED_PERMILLE {
                self.until = Some(now + GIVE_WAY_FOR);
            }
        }
        self.last = Some((now, delay));
    }

    /// The core goes to sleep: the next spin starts a fresh sample (a sleep's time is no
    /// evidence either way), and what was seen before still counts until it expires.
    pub(super) fn parked(&mut self) {
        self.last = None;
    }

    /// The thread's run-queue delay so far (ns), or `None` where the kernel does not say.
    fn run_delay_ns(&mut self) -> Option<u64> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::FileExt;
            let file = self.file.as_ref()?;
            let mut buf = [0u8; 96];
            let n = file.read_at(&mut buf, 0).ok()?;
            parse_run_delay(&buf[..n])
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }
}

/// The second field of a schedstat line: "time on CPU, time waiting on a run queue, slices".
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_run_delay(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock as _;

    #[test]
    fn the_run_queue_delay_is_the_second_field() {
        assert_eq!(parse_run_delay(b"123456 7890 12\n"), Some(7890));
        assert_eq!(parse_run_delay(b"123456\n"), None);
        assert_eq!(parse_run_delay(b"a b c"), None);
    }

    #[test]
    fn waiting_behind_others_is_seen_and_forgotten_later() {
        let mut contention = Contention {
            #[cfg(target_os = "linux")]
            file: None,
            last: None,
            until: None,
        };
        let start = crate::clock::SystemClock.monotonic();
        let ms = Duration::from_millis;
        // Without a file nothing is known: never contended.
        assert!(!contention.contended(start));
        // Alone but for short wake-ups: 200 µs of run-queue delay in 4 ms (5 %).
        contention.observe(start, Some(1_000_000));
        contention.observe(start + ms(4), Some(1_200_000));
        assert!(!contention.contended(start + ms(4)));
        // Behind another thread: 2 ms of delay in 4 ms.
        contention.observe(start + ms(8), Some(3_200_000));
        assert!(contention.until.is_some());
        assert!(contention.contended(start + ms(8)));
        // Alone again: still giving way until the window ends, then spinning.
        contention.observe(start + ms(12), Some(3_200_000));
        assert!(contention.contended(start + ms(12)));
        assert!(!contention.contended(start + ms(8) + GIVE_WAY_FOR));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_thread_has_a_schedstat_line() {
        let mut contention = Contention::new();
        assert!(contention.run_delay_ns().is_some());
    }
}
