//! `--latency`: PING round trips one after another, summed up in a live line (min, p50, p99,
//! max), like `redis-cli --latency`.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use veddb_client::Client;

use crate::interrupt::Interrupt;
use crate::output::{Format, Out};
use crate::{Failure, Outcome};

/// The pause between two PINGs when `--interval` is not given (redis-cli's).
pub const INTERVAL_DEFAULT: Duration = Duration::from_millis(10);
/// How often the line is rewritten on a terminal.
const TERMINAL_REFRESH: Duration = Duration::from_millis(100);
/// How often a line is written elsewhere (a pipe, a file).
const PIPE_REFRESH: Duration = Duration::from_secs(1);
/// The longest round trip the histogram holds exactly; longer ones count as this long.
const ROUND_TRIP_NS_MAX: u64 = 60_000_000_000;

/// Round trips measured so far.
struct Samples {
    histogram: Histogram<u64>,
}

impl Samples {
    fn new() -> Samples {
        Samples {
            // 1 ns to 60 s at 3 significant digits: bounds that are valid by construction.
            histogram: Histogram::new_with_bounds(1, ROUND_TRIP_NS_MAX, 3)
                .expect("valid histogram bounds"),
        }
    }

    fn record(&mut self, round_trip: Duration) {
        let ns = u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX);
        self.histogram
            .saturating_record(ns.clamp(1, ROUND_TRIP_NS_MAX));
    }

    /// (min, p50, p99, max) in microseconds.
    fn summary_us(&self) -> [f64; 4] {
        let us = |ns: u64| ns as f64 / 1000.0;
        [
            us(self.histogram.min()),
            us(self.histogram.value_at_quantile(0.50)),
            us(self.histogram.value_at_quantile(0.99)),
            us(self.histogram.max()),
        ]
    }

    /// The line, in the output's format.
    fn line(&self, format: Format) -> String {
        let count = self.histogram.len();
        let [min, p50, p99, max] = self.summary_us();
        match format {
            Format::Human => format!(
                "min {min:.1} us  p50 {p50:.1} us  p99 {p99:.1} us  max {max:.1} us  ({count} samples)"
            ),
            Format::Raw => format!("{min:.1} {p50:.1} {p99:.1} {max:.1} {count}"),
            Format::Json => json!({
                "samples": count,
                "min_us": min,
                "p50_us": p50,
                "p99_us": p99,
                "max_us": max,
            })
            .to_string(),
        }
    }
}

/// Measures PING round trips until Ctrl-C or `samples_max` of them, `interval` apart. On a
/// terminal one line is rewritten in place; elsewhere a line is written every second and at
/// the end.
pub fn run(
    client: &Client,
    out: &mut Out,
    interval: Duration,
    samples_max: Option<u64>,
    interrupt: &Interrupt,
) -> Result<Outcome, Failure> {
    let mut samples = Samples::new();
    let refresh = if out.terminal {
        TERMINAL_REFRESH
    } else {
        PIPE_REFRESH
    };
    let mut shown = Instant::now();
    let outcome = loop {
        if samples_max.is_some_and(|max| samples.histogram.len() >= max) {
            break Outcome::Done;
        }
        let started = Instant::now();
        client.ping().map_err(Failure::Refused)?;
        samples.record(started.elapsed());
        if shown.elapsed() >= refresh {
            shown = Instant::now();
            if out.terminal {
                out.rewrite_line(&samples.line(out.format))?;
            } else {
                out.line(&samples.line(out.format))?;
                out.flush()?;
            }
        }
        if interrupt.sleep(interval) {
            break Outcome::Interrupted;
        }
    };
    if samples.histogram.is_empty() {
        return Ok(outcome);
    }
    if out.terminal {
        out.rewrite_line(&samples.line(out.format))?;
        out.line("")?;
    } else {
        out.line(&samples.line(out.format))?;
    }
    out.flush()?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_min_percentiles_and_max_in_microseconds() {
        let mut samples = Samples::new();
        for us in 1..=100u64 {
            samples.record(Duration::from_micros(us));
        }
        let [min, p50, p99, max] = samples.summary_us();
        assert!((min - 1.0).abs() < 0.01, "{min}");
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!((p99 - 99.0).abs() < 0.1, "{p99}");
        assert!((max - 100.0).abs() < 0.1, "{max}");
        assert_eq!(
            samples.line(Format::Human),
            "min 1.0 us  p50 50.0 us  p99 99.0 us  max 100.0 us  (100 samples)"
        );
        assert_eq!(samples.line(Format::Raw), "1.0 50.0 99.0 100.0 100");
        let json: serde_json::Value = serde_json::from_str(&samples.line(Format::Json)).unwrap();
        assert_eq!(json["samples"], 100);
        // Beyond the histogram's range: counted at its top, not lost.
        samples.record(Duration::from_secs(3600));
        assert_eq!(samples.histogram.len(), 101);
    }
}
