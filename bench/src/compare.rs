//! `veddb-bench compare A.json B.json [--svg FILE]`: B against A, series by series.

use std::path::Path;

use argh::FromArgs;

use crate::report::{self, format_ns, Report, Series};
use crate::svg;

/// Compare two --json results: per series (same scenario and op) the ratios B/A of ops/s, p50 and p99.
#[derive(FromArgs)]
#[argh(subcommand, name = "compare")]
pub struct CompareArgs {
    #[argh(positional)]
    /// the baseline (A)
    pub a: String,
    #[argh(positional)]
    /// the candidate (B)
    pub b: String,
    #[argh(option)]
    /// plot the latency percentile curves of both as SVG to this file
    pub svg: Option<String>,
}

/// One series found in both files.
#[derive(Debug, PartialEq)]
pub struct Pair<'a> {
    pub a: &'a Series,
    pub b: &'a Series,
}

impl Pair<'_> {
    pub fn ops_ratio(&self) -> f64 {
        ratio(self.b.ops_per_sec, self.a.ops_per_sec)
    }
    pub fn p50_ratio(&self) -> f64 {
        ratio(self.b.p50_ns as f64, self.a.p50_ns as f64)
    }
    pub fn p99_ratio(&self) -> f64 {
        ratio(self.b.p99_ns as f64, self.a.p99_ns as f64)
    }
}

fn ratio(b: f64, a: f64) -> f64 {
    if a > 0.0 {
        b / a
    } else {
        f64::NAN
    }
}

/// The comparison: series matched by scenario and op (the n-th of a name in A with the n-th in
/// B), and those only in one file.
pub struct Comparison<'a> {
    pub pairs: Vec<Pair<'a>>,
    pub only_a: Vec<&'a Series>,
    pub only_b: Vec<&'a Series>,
}

pub fn compare<'a>(a: &'a Report, b: &'a Report) -> Comparison<'a> {
    let mut taken = vec![false; b.results.len()];
    let mut pairs = Vec::new();
    let mut only_a = Vec::new();
    for series in &a.results {
        let found = b.results.iter().enumerate().position(|(i, other)| {
            !taken[i] && other.scenario == series.scenario && other.op == series.op
        });
        match found {
            Some(i) => {
                taken[i] = true;
                pairs.push(Pair {
                    a: series,
                    b: &b.results[i],
                });
            }
            None => only_a.push(series),
        }
    }
    let only_b = b
        .results
        .iter()
        .zip(&taken)
        .filter(|(_, &taken)| !taken)
        .map(|(series, _)| series)
        .collect();
    Comparison {
        pairs,
        only_a,
        only_b,
    }
}

/// The comparison as a text table.
pub fn table(comparison: &Comparison) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<26} {:>12} {:>12} {:>7}  {:>9} {:>9} {:>7}  {:>9} {:>9} {:>7}",
        "scenario",
        "op",
        "A ops/s",
        "B ops/s",
        "B/A",
        "A p50",
        "B p50",
        "B/A",
        "A p99",
        "B p99",
        "B/A"
    );
    for pair in &comparison.pairs {
        let _ = writeln!(
            out,
            "{:<10} {:<26} {:>12.0} {:>12.0} {:>6.2}x  {:>9} {:>9} {:>6.2}x  {:>9} {:>9} {:>6.2}x",
            pair.a.scenario,
            pair.a.op,
            pair.a.ops_per_sec,
            pair.b.ops_per_sec,
            pair.ops_ratio(),
            format_ns(pair.a.p50_ns),
            format_ns(pair.b.p50_ns),
            pair.p50_ratio(),
            format_ns(pair.a.p99_ns),
            format_ns(pair.b.p99_ns),
            pair.p99_ratio(),
        );
    }
    for (which, list) in [("A", &comparison.only_a), ("B", &comparison.only_b)] {
        for series in list.iter() {
            let _ = writeln!(out, "only in {which}: {}", series.name());
        }
    }
    out
}

/// Labels for the two files in a plot: their names, or A and B when those are the same.
fn labels(a: &str, b: &str) -> (String, String) {
    let stem = |path: &str| {
        Path::new(path)
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (sa, sb) = (stem(a), stem(b));
    if sa.is_empty() || sb.is_empty() || sa == sb {
        ("A".into(), "B".into())
    } else {
        (format!("A {sa}"), format!("B {sb}"))
    }
}

/// The plot of every matched series of both files (A's lines, then B's).
pub fn plot(comparison: &Comparison, a_path: &str, b_path: &str) -> String {
    let (la, lb) = labels(a_path, b_path);
    let mut lines = Vec::new();
    for pair in &comparison.pairs {
        lines.push(svg::Line {
            name: format!("{la}: {}", pair.a.name()),
            points: pair.a.curve_or_summary(),
        });
        lines.push(svg::Line {
            name: format!("{lb}: {}", pair.b.name()),
            points: pair.b.curve_or_summary(),
        });
    }
    svg::percentile_plot(
        "veddb-bench compare: latency by percentile",
        &format!("A = {a_path}, B = {b_path}"),
        &lines,
    )
}

pub fn run(args: &CompareArgs) -> Result<(), String> {
    let a = report::read_json(&args.a)?;
    let b = report::read_json(&args.b)?;
    let comparison = compare(&a, &b);
    if comparison.pairs.is_empty() {
        print!("{}", table(&comparison));
        return Err(format!(
            "{} and {} have no series in common (same scenario and op)",
            args.a, args.b
        ));
    }
    println!("A = {} ({})", args.a, a.machine.cpu_model);
    println!("B = {} ({})", args.b, b.machine.cpu_model);
    print!("{}", table(&comparison));
    if let Some(path) = &args.svg {
        std::fs::write(path, plot(&comparison, &args.a, &args.b))
            .map_err(|error| format!("cannot write {path}: {error}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{histogram, Machine};

    fn series(scenario: &str, op: &str, ops: u64, base: u64) -> Series {
        let mut h = histogram();
        for v in 1..=1000 {
            h.record(base * v).unwrap();
        }
        Series::new(scenario, op, "test", &h, ops, 1.0, 0)
    }

    fn write(dir: &Path, name: &str, results: Vec<Series>) -> String {
        let report = Report {
            settings: serde_json::json!({"scenario": "test"}),
            machine: Machine::current(),
            results,
        };
        let path = dir.join(name).to_string_lossy().into_owned();
        report::write_json(&path, &report).unwrap();
        path
    }

    #[test]
    fn two_small_files_compare_series_by_series() {
        let dir = std::env::temp_dir().join(format!("veddb-bench-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = write(
            &dir,
            "before.json",
            vec![
                series("shard", "get", 1000, 10),
                series("shard", "set", 500, 20),
                series("shard", "get", 10, 1), // a second `shard get`: matched with B's second
                series("local", "get", 100, 1),
            ],
        );
        let b = write(
            &dir,
            "after.json",
            vec![
                series("shard", "set", 1000, 10),
                series("shard", "get", 2000, 5),
                series("shard", "get", 30, 1),
                series("grpc", "get", 100, 1),
            ],
        );
        let (ra, rb) = (
            report::read_json(&a).unwrap(),
            report::read_json(&b).unwrap(),
        );
        let comparison = compare(&ra, &rb);
        assert_eq!(comparison.pairs.len(), 3);
        let get = &comparison.pairs[0];
        assert_eq!((get.a.op.as_str(), get.b.op.as_str()), ("get", "get"));
        assert_eq!(get.ops_ratio(), 2.0);
        assert!((get.p50_ratio() - 0.5).abs() < 0.01, "{}", get.p50_ratio());
        assert!((get.p99_ratio() - 0.5).abs() < 0.01);
        let set = &comparison.pairs[1];
        assert_eq!(set.ops_ratio(), 2.0);
        assert!((set.p50_ratio() - 0.5).abs() < 0.01);
        assert_eq!(comparison.pairs[2].ops_ratio(), 3.0);
        assert_eq!(comparison.only_a.len(), 1);
        assert_eq!(comparison.only_b[0].scenario, "grpc");
        let text = table(&comparison);
        assert!(text.contains("2.00x") && text.contains("0.50x") && text.contains("3.00x"));
        assert!(text.contains("only in A: local get") && text.contains("only in B: grpc get"));

        let svg_path = dir.join("cmp.svg").to_string_lossy().into_owned();
        run(&CompareArgs {
            a: a.clone(),
            b: b.clone(),
            svg: Some(svg_path.clone()),
        })
        .unwrap();
        let plot = std::fs::read_to_string(&svg_path).unwrap();
        let text = svg::tests::check_well_formed(&plot).unwrap();
        for name in [
            "A before: shard get",
            "B after: shard get",
            "B after: shard set",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        // Nothing in common is an error.
        let c = write(&dir, "other.json", vec![series("forward", "get", 1, 1)]);
        assert!(run(&CompareArgs {
            a: a.clone(),
            b: c,
            svg: None
        })
        .unwrap_err()
        .contains("no series in common"));
        assert!(run(&CompareArgs {
            a,
            b: dir.join("missing.json").to_string_lossy().into_owned(),
            svg: None
        })
        .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_from_before_the_curve_still_compare_and_plot() {
        // A result written before `mode` and `curve` existed.
        let old = r#"{"settings": {}, "machine": {"cpu_model": "x", "cpus": 2, "kernel": "6"},
            "results": [{"scenario": "grpc", "op": "get unary c=1 d=1", "latency_of": "call",
            "ops_per_sec": 1000.0, "p50_ns": 50000, "p90_ns": 60000, "p99_ns": 90000,
            "p999_ns": 120000, "max_ns": 400000, "count": 3000, "errors": 0}]}"#;
        let a: Report = serde_json::from_str(old).unwrap();
        assert_eq!(a.results[0].mode, "closed");
        assert!(a.results[0].curve.is_empty());
        let b = a.clone();
        let comparison = compare(&a, &b);
        assert_eq!(comparison.pairs.len(), 1);
        assert_eq!(comparison.pairs[0].ops_ratio(), 1.0);
        let plot = plot(&comparison, "x/run.json", "y/run.json");
        let text = svg::tests::check_well_formed(&plot).unwrap();
        assert!(text.contains("A: grpc get unary c=1 d=1"));
        assert!(plot.contains("<polyline"));
    }
}
