//! Summaries of HDR histograms, the text table and the JSON file.
//!
//! The JSON file (`--json FILE`) is a [`Report`]:
//! - `settings`: the scenario's options (`scenario`, `op`, `keys`, ..., `rate` when open loop);
//! - `machine`: `cpu_model`, `cpus`, `kernel`;
//! - `results`: one [`Series`] per measurement: `scenario`, `op`, `latency_of`, `ops_per_sec`,
//!   `p50_ns`, `p90_ns`, `p99_ns`, `p999_ns`, `max_ns`, `count`, `errors`, `mode` (`closed` or
//!   `open`), `open_loop` (open loop only: the target rate and how far behind the senders fell)
//!   and `curve`, the latency percentile curve as `[percentile, ns]` pairs (percentiles spaced
//!   evenly on the "nines" scale, 0 to 100) to plot later (`veddb-bench compare --svg`).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::open_loop::OpenLoopSummary;

/// A fresh histogram for nanosecond latencies (1 ns .. 60 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// One measured series.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Series {
    pub scenario: String,
    pub op: String,
    /// What the latency figures measure, in words.
    pub latency_of: String,
    pub ops_per_sec: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub count: u64,
    pub errors: u64,
    /// `closed` (each sender waits for an answer before the next request) or `open` (requests
    /// at a fixed rate, latency from their intended send time).
    #[serde(default = "closed")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoopSummary>,
    /// The latency percentile curve: `[percentile, ns]` pairs, percentile ascending from 0
    /// (the minimum) to 100 (the maximum). Empty in files from before it existed.
    #[serde(default)]
    pub curve: Vec<(f64, u64)>,
    /// Value bytes moved per second (`ops_per_sec` times the mean value size), for the series
    /// whose every operation reads or writes one value (GET, SET and their mix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_bytes_per_sec: Option<f64>,
}

fn closed() -> String {
    "closed".into()
}

/// Points per factor of ten of the "nines" scale in [`percentile_curve`].
const CURVE_POINTS_PER_NINE: u32 = 20;
/// The curve's last point before the maximum: 99.9999 %.
const CURVE_MAX_NINES: u32 = 6;

/// The latency percentile curve of a histogram: `[percentile, ns]` at percentiles evenly spaced
/// on the "nines" scale (`-log10(1 - p / 100)`: 0, 90, 99, 99.9 % are 0, 1, 2, 3), up to where
/// the samples still resolve them (1 / count), then the maximum at 100.
pub fn percentile_curve(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    let count = histogram.len();
    if count == 0 {
        return Vec::new();
    }
    let resolved = (count as f64).log10().min(f64::from(CURVE_MAX_NINES));
    let steps = (resolved * f64::from(CURVE_POINTS_PER_NINE)).floor() as u32;
    let mut curve: Vec<(f64, u64)> = (0..=steps)
        .map(|step| {
            let nines = f64::from(step) / f64::from(CURVE_POINTS_PER_NINE);
            let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
            // Rounded to 1e-6 % for a readable file.
            let percentile = (percentile * 1e6).round() / 1e6;
            (percentile, histogram.value_at_quantile(percentile / 100.0))
        })
        .collect();
    curve.push((100.0, histogram.max()));
    curve
}

/// `-log10(1 - p / 100)`: 90 % is 1 nine, 99.9 % three; 100 % is infinite.
pub fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

impl Series {
    pub fn new(
        scenario: &str,
        op: &str,
        latency_of: &str,
        histogram: &Histogram<u64>,
        operations: u64,
        seconds: f64,
        errors: u64,
    ) -> Series {
        Series {
            scenario: scenario.into(),
            op: op.into(),
            latency_of: latency_of.into(),
            ops_per_sec: if seconds > 0.0 {
                operations as f64 / seconds
            } else {
                0.0
            },
            p50_ns: histogram.value_at_quantile(0.50),
            p90_ns: histogram.value_at_quantile(0.90),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            max_ns: histogram.max(),
            count: operations,
            errors,
            mode: closed(),
            open_loop: None,
            curve: percentile_curve(histogram),
            value_bytes_per_sec: None,
        }
    }

    /// Records the value bytes each operation moves (see [`Series::value_bytes_per_sec`]).
    pub fn with_value_bytes(mut self, bytes_per_op: usize) -> Series {
        self.value_bytes_per_sec = Some(self.ops_per_sec * bytes_per_op as f64);
        self
    }

    /// Marks the series as an open-loop measurement.
    pub fn with_open_loop(mut self, open_loop: OpenLoopSummary) -> Series {
        self.mode = "open".into();
        self.open_loop = Some(open_loop);
        self
    }

    /// `scenario op`: how the series is named in plots and comparisons.
    pub fn name(&self) -> String {
        format!("{} {}", self.scenario, self.op)
    }

    /// The percentile curve, or for a file without one the few percentiles it has.
    pub fn curve_or_summary(&self) -> Vec<(f64, u64)> {
        if !self.curve.is_empty() || self.count == 0 {
            return self.curve.clone();
        }
        vec![
            (50.0, self.p50_ns),
            (90.0, self.p90_ns),
            (99.0, self.p99_ns),
            (99.9, self.p999_ns),
            (100.0, self.max_ns),
        ]
    }
}

/// The machine the figures come from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
}

impl Machine {
    pub fn current() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("model name")
                        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|_| std::env::consts::OS.into());
        Machine {
            cpu_model,
            cpus: veddb_engine::available_cpus(),
            kernel,
        }
    }
}

/// The JSON file: settings, machine, results.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub settings: serde_json::Value,
    pub machine: Machine,
    pub results: Vec<Series>,
}

pub fn format_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        _ => format!("{:.1} ms", ns as f64 / 1e6),
    }
}

pub fn print_table(results: &[Series]) {
    // The op column fits the longest name (at least 22 wide, as before).
    let width = results
        .iter()
        .map(|s| s.op.chars().count())
        .max()
        .unwrap_or(0)
        .max(22);
    println!(
        "{:<10} {:<width$} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7}",
        "scenario", "op", "ops/s", "p50", "p90", "p99", "p99.9", "max", "count", "errors"
    );
    for s in results {
        println!(
            "{:<10} {:<width$} {:>14.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7}",
            s.scenario,
            s.op,
            s.ops_per_sec,
            format_ns(s.p50_ns),
            format_ns(s.p90_ns),
            format_ns(s.p99_ns),
            format_ns(s.p999_ns),
            format_ns(s.max_ns),
            s.count,
            s.errors
        );
    }
    for s in results {
        println!("  {} {}: latency = {}", s.scenario, s.op, s.latency_of);
    }
    for s in results {
        if let Some(bytes) = s.value_bytes_per_sec {
            println!(
                "  {} {}: {:.3} GB/s of values",
                s.scenario,
                s.op,
                bytes / 1e9
            );
        }
    }
    for s in results {
        if let Some(open) = &s.open_loop {
            let behind = if open.late_sends > 0 || open.unsent > 0 {
                format!(
                    "; BEHIND: {} requests sent late, backlog up to {}, {} never sent",
                    open.late_sends, open.max_backlog, open.unsent
                )
            } else {
                String::new()
            };
            println!(
                "  {} {}: open loop at {:.0} ops/s over {} sender{} (latency from the intended \
                 send time): achieved {:.0} ops/s; sent late by p50 < {}, p99 < {}, max {}\
                 {behind}",
                s.scenario,
                s.op,
                open.target_ops_per_sec,
                open.senders,
                if open.senders == 1 { "" } else { "s" },
                s.ops_per_sec,
                format_ns(open.send_delay_p50_ns + 1),
                format_ns(open.send_delay_p99_ns + 1),
                format_ns(open.max_send_delay_ns),
            );
        }
    }
}

pub fn read_json(path: &str) -> Result<Report, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read {path}: {error}"))?;
    serde_json::from_str(&text)
        .map_err(|error| format!("{path} is not a veddb-bench report: {error}"))
}

pub fn write_json(path: &str, report: &Report) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).expect("report serializes");
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_keep_every_sample() {
        let mut a = histogram();
        let mut b = histogram();
        for v in 1..=1000u64 {
            a.record(v).unwrap();
            b.record(v + 1000).unwrap();
        }
        a.add(&b).unwrap();
        assert_eq!(a.len(), 2000);
        let series = Series::new("t", "get", "x", &a, 2000, 2.0, 0);
        assert_eq!(series.ops_per_sec, 1000.0);
        assert!((990..=1010).contains(&series.p50_ns), "{}", series.p50_ns);
        assert!(series.max_ns >= 2000);
    }

    #[test]
    fn histograms_of_client_threads_merge_into_the_whole() {
        // Four client threads record disjoint latency ranges; the merge equals one histogram
        // that saw every sample.
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut h = histogram();
                    for v in 0..10_000u64 {
                        h.record(1 + t * 1_000_000 + v * 13).unwrap();
                    }
                    h
                })
            })
            .collect();
        let mut merged = histogram();
        let mut whole = histogram();
        for (t, thread) in threads.into_iter().enumerate() {
            merged.add(thread.join().unwrap()).unwrap();
            for v in 0..10_000u64 {
                whole.record(1 + t as u64 * 1_000_000 + v * 13).unwrap();
            }
        }
        assert_eq!(merged.len(), 40_000);
        assert_eq!(merged, whole);
        let series = Series::new("t", "get", "x", &merged, 40_000, 1.0, 0);
        assert_eq!(series.curve, percentile_curve(&whole));
        // The median falls between the second and the third thread's ranges.
        assert!(series.p50_ns > 1_000_000 && series.p50_ns < 2_200_000);
        assert_eq!(series.max_ns, whole.max());
    }

    #[test]
    fn the_curve_spans_the_resolved_nines() {
        assert!(percentile_curve(&histogram()).is_empty());
        let mut h = histogram();
        for v in 1..=100_000u64 {
            h.record(v).unwrap();
        }
        let curve = percentile_curve(&h);
        // 5 nines resolved (100 000 samples), 20 points each, plus 0 and the maximum.
        assert_eq!(curve.len(), 5 * 20 + 2);
        assert_eq!(curve[0], (0.0, 1));
        assert_eq!(curve[20].0, 90.0);
        assert_eq!(curve[40].0, 99.0);
        assert_eq!(curve[100].0, 99.999);
        assert_eq!(*curve.last().unwrap(), (100.0, h.max()));
        assert!(curve
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!((99_000..=99_100).contains(&curve[40].1), "{:?}", curve[40]);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        // A handful of samples: only the nines they resolve.
        let mut small = histogram();
        small.record(5).unwrap();
        assert_eq!(percentile_curve(&small), vec![(0.0, 5), (100.0, 5)]);
    }

    #[test]
    fn json_round_trip_keeps_the_curve_and_the_open_loop_summary() {
        let mut h = histogram();
        for v in 1..=5000u64 {
            h.record(v * 100).unwrap();
        }
        let closed = Series::new("local", "get (in place)", "x", &h, 5000, 2.0, 0);
        let open = Series::new(
            "grpc",
            "mix(80% get) batch=1 c=1 d=1",
            "y",
            &h,
            5000,
            1.0,
            3,
        )
        .with_open_loop(OpenLoopSummary {
            target_ops_per_sec: 5000.0,
            senders: 4,
            late_sends: 7,
            max_backlog: 3,
            max_send_delay_ns: 250_000,
            send_delay_p50_ns: 1023,
            send_delay_p99_ns: 131_071,
            unsent: 1,
        });
        let report = Report {
            settings: serde_json::json!({"keys": 10, "rate": 5000.0}),
            machine: Machine::current(),
            results: vec![closed, open],
        };
        let path =
            std::env::temp_dir().join(format!("veddb-bench-report-{}.json", std::process::id()));
        let path = path.to_string_lossy().into_owned();
        write_json(&path, &report).unwrap();
        let back = read_json(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, report);
        assert!(back.results[0].curve.len() > 60);
        assert_eq!(back.results[1].mode, "open");
        let text = serde_json::to_string(&report).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["results"][0]["mode"], "closed");
        assert!(value["results"][0].get("open_loop").is_none());
        assert_eq!(value["results"][1]["open_loop"]["late_sends"], 7);
        let point = &value["results"][0]["curve"][20];
        assert_eq!(point[0], 90.0);
        assert!(point[1].as_u64().unwrap() > 0);
        for field in ["cpu_model", "cpus", "kernel"] {
            assert!(value["machine"].get(field).is_some(), "missing {field}");
        }
        assert!(read_json("/nonexistent/veddb.json").is_err());
    }

    #[test]
    fn json_round_trip() {
        let series = Series::new("shard", "get", "x", &histogram(), 0, 1.0, 0);
        let report = Report {
            settings: serde_json::json!({"keys": 10}),
            machine: Machine::current(),
            results: vec![series],
        };
        let text = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for field in [
            "scenario",
            "op",
            "ops_per_sec",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "p999_ns",
            "max_ns",
            "count",
            "errors",
        ] {
            assert!(value["results"][0].get(field).is_some(), "missing {field}");
        }
    }
}
