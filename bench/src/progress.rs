//! A progress line on stderr while a benchmark runs: the phase, elapsed / total time and the
//! live rate. On a terminal it is one line rewritten in place (5 times a second); otherwise a
//! plain line at most once a second (logs, CI).
//!
//! ```ignore
//! let progress = Progress::start();
//! let counter = progress.counter(); // one per sending thread; add() as requests complete
//! progress.phase("get warm-up", warmup);
//! progress.phase("get", duration);
//! progress.finish();
//! ```

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Completed requests of one sender (its own cache line: senders do not share one).
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Phase {
    label: String,
    started: Instant,
    total: Duration,
}

struct Inner {
    counters: Mutex<Vec<Arc<Counter>>>,
    phase: Mutex<Option<Phase>>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Whether anything is on the terminal line (to clear it).
    drawn: AtomicBool,
}

impl Inner {
    fn total(&self) -> u64 {
        self.counters.lock().unwrap().iter().map(|c| c.get()).sum()
    }
}

pub struct Progress {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
    terminal: bool,
}

impl Progress {
    /// Starts the reporter thread (nothing is shown until the first phase).
    pub fn start() -> Progress {
        Progress::with(std::io::stderr().is_terminal())
    }

    fn with(terminal: bool) -> Progress {
        let inner = Arc::new(Inner {
            counters: Mutex::new(Vec::new()),
            phase: Mutex::new(None),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            drawn: AtomicBool::new(false),
        });
        let interval = if terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        let thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || report(&inner, interval, terminal))
                .ok()
        };
        Progress {
            inner,
            thread,
            terminal,
        }
    }

    /// A counter for one sender.
    pub fn counter(&self) -> Arc<Counter> {
        let counter = Arc::new(Counter::default());
        self.inner.counters.lock().unwrap().push(counter.clone());
        counter
    }

    /// A new phase that should last `total` (the line shows elapsed / total).
    pub fn phase(&self, label: &str, total: Duration) {
        *self.inner.phase.lock().unwrap() = Some(Phase {
            label: label.into(),
            started: Instant::now(),
            total,
        });
    }

    /// Stops the reporter and clears the line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        *self.inner.stop.lock().unwrap() = true;
        self.inner.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if self.terminal && self.inner.drawn.swap(false, Ordering::SeqCst) {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn report(inner: &Inner, interval: Duration, terminal: bool) {
    let mut last = (Instant::now(), inner.total());
    let mut stop = inner.stop.lock().unwrap();
    loop {
        if *stop {
            return;
        }
        let (guard, _) = inner.wake.wait_timeout(stop, interval).unwrap();
        stop = guard;
        if *stop {
            return;
        }
        let now = Instant::now();
        let total = inner.total();
        let rate = (total - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, total);
        let line = match inner.phase.lock().unwrap().as_ref() {
            Some(phase) => line(phase, now, rate),
            None => continue,
        };
        let mut stderr = std::io::stderr().lock();
        if terminal {
            let _ = write!(stderr, "\r\x1b[2K{line}");
            inner.drawn.store(true, Ordering::SeqCst);
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }
}

fn line(phase: &Phase, now: Instant, rate: f64) -> String {
    let elapsed = now.duration_since(phase.started).min(phase.total);
    format!(
        "veddb-bench: {} {:.1}s / {:.1}s  {} ops/s",
        phase.label,
        elapsed.as_secs_f64(),
        phase.total.as_secs_f64(),
        format_rate(rate)
    )
}

/// `1.23 M`, `45.6 k`, `789`.
pub fn format_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 1e4 {
        format!("{:.1} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_and_the_line_reads_well() {
        let progress = Progress::with(false);
        let (a, b) = (progress.counter(), progress.counter());
        a.add(5);
        b.add(7);
        a.add(1);
        assert_eq!(progress.inner.total(), 13);
        let phase = Phase {
            label: "get".into(),
            started: Instant::now() - Duration::from_millis(1500),
            total: Duration::from_secs(3),
        };
        assert_eq!(
            line(&phase, Instant::now(), 1_234_567.0),
            "veddb-bench: get 1.5s / 3.0s  1.23 M ops/s"
        );
        assert_eq!(format_rate(45_600.0), "45.6 k");
        assert_eq!(format_rate(789.2), "789");
        progress.phase("x", Duration::from_millis(10));
        // finish() returns at once, without waiting for the next tick.
        let started = Instant::now();
        progress.finish();
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
