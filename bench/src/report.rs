//! Summaries of HDR histograms, the text table and the JSON file.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

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
        }
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

fn format_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        _ => format!("{:.1} ms", ns as f64 / 1e6),
    }
}

pub fn print_table(results: &[Series]) {
    println!(
        "{:<10} {:<22} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7}",
        "scenario", "op", "ops/s", "p50", "p90", "p99", "p99.9", "max", "count", "errors"
    );
    for s in results {
        println!(
            "{:<10} {:<22} {:>14.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7}",
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
