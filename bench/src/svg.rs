//! A latency percentile plot as a hand-written SVG: x is the percentile on the "nines" scale
//! (0, 90, 99, 99.9, 99.99 % equally spaced), y the latency on a log scale, one line per series
//! and a legend.

use std::fmt::Write;

use crate::report::{format_ns, nines, Report};

/// One line of the plot: its name and `(percentile, ns)` points.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, u64)>,
}

/// The plot area's width; the legend to its right is as wide as its longest entry.
const PLOT_WIDTH: f64 = 580.0;
const HEIGHT: f64 = 600.0;
const LEFT: f64 = 80.0;
/// About the width of one character of the legend (12 px sans-serif).
const CHAR_WIDTH: f64 = 7.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 60.0;
/// The x axis ends at 99.99 %.
const X_NINES: f64 = 4.0;
/// Tableau's 10 colours.
const COLOURS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// Dash patterns for lines beyond the tenth colour.
const DASHES: [&str; 3] = ["", "6 3", "2 3"];

/// Escapes text for SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A decade of the latency axis: `100 ns`, `1 µs`, `10 ms`, `1 s`.
fn axis_label(ns: f64) -> String {
    let (value, unit) = match ns {
        ns if ns < 1e3 => (ns, "ns"),
        ns if ns < 1e6 => (ns / 1e3, "µs"),
        ns if ns < 1e9 => (ns / 1e6, "ms"),
        ns => (ns / 1e9, "s"),
    };
    format!("{value:.0} {unit}")
}

/// The plot, as a complete SVG document.
pub fn percentile_plot(title: &str, subtitle: &str, lines: &[Line]) -> String {
    // Only points on the x axis (up to 99.99 %) are drawn; the maximum is in the legend.
    let drawn: Vec<Vec<(f64, u64)>> = lines
        .iter()
        .map(|line| {
            line.points
                .iter()
                .filter(|(p, _)| *p < 100.0 && nines(*p) <= X_NINES + 1e-9)
                .map(|&(p, ns)| (nines(p), ns.max(1)))
                .collect()
        })
        .collect();
    let values = drawn.iter().flatten().map(|&(_, ns)| ns);
    let (low, high) = values.fold((u64::MAX, 0), |(lo, hi), ns| (lo.min(ns), hi.max(ns)));
    let (y_min, y_max) = if high == 0 {
        (0.0, 3.0) // no data: 1 ns .. 1 µs
    } else {
        let lo = (low as f64).log10().floor();
        let hi = (high as f64).log10().ceil().max(lo + 1.0);
        (lo, hi)
    };
    let plot_w = PLOT_WIDTH;
    // The legend: a sample line, the name and "(max ...)".
    let longest = lines
        .iter()
        .map(|line| line.name.chars().count() + 16)
        .max()
        .unwrap_or(0);
    let subtitle_end = LEFT + CHAR_WIDTH * subtitle.chars().count() as f64;
    let width = (LEFT + plot_w + 60.0 + CHAR_WIDTH * longest as f64)
        .max(subtitle_end + 20.0)
        .max(900.0)
        .ceil();
    let plot_h = HEIGHT - TOP - BOTTOM;
    // Taller than usual when the legend needs it (20 px per entry).
    let height = HEIGHT.max(TOP + 20.0 * lines.len() as f64 + 20.0);
    let x = |n: f64| LEFT + n.clamp(0.0, X_NINES) / X_NINES * plot_w;
    let y = |ns: f64| TOP + plot_h - (ns.log10() - y_min) / (y_max - y_min) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        LEFT,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="42" fill="#555">{}</text>"##,
        LEFT,
        escape(subtitle)
    );
    // Grid and axes.
    svg.push_str("<g stroke=\"#ddd\" stroke-width=\"1\">\n");
    for decade in (y_min as i32)..=(y_max as i32) {
        for m in 1..10 {
            let v = f64::from(m) * 10f64.powi(decade);
            if v.log10() > y_max + 1e-9 {
                break;
            }
            let stroke = if m == 1 { "#bbb" } else { "#eee" };
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="{stroke}"/>"#,
                y(v),
                LEFT + plot_w
            );
        }
    }
    for n in 0..=(X_NINES as u32) {
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}"/>"#,
            x(f64::from(n)),
            TOP + plot_h
        );
    }
    svg.push_str("</g>\n");
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    // Tick labels.
    for decade in (y_min as i32)..=(y_max as i32) {
        let v = 10f64.powi(decade);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y(v) + 4.0,
            axis_label(v)
        );
    }
    for (n, label) in ["0%", "90%", "99%", "99.9%", "99.99%"].iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            x(n as f64),
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    // The lines and the legend.
    for (i, (line, points)) in lines.iter().zip(&drawn).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let dash = DASHES[(i / COLOURS.len()) % DASHES.len()];
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let name = escape(&line.name);
        if !points.is_empty() {
            let path: Vec<String> = points
                .iter()
                .map(|&(n, ns)| format!("{:.1},{:.1}", x(n), y(ns as f64)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"><title>{name}</title></polyline>"#,
                path.join(" ")
            );
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + plot_w + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/>"#,
            lx + 24.0
        );
        let max = line.points.iter().map(|&(_, ns)| ns).max().map_or_else(
            || "no data".to_string(),
            |ns| format!("max {}", format_ns(ns)),
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}">{name} <tspan fill="#777">({})</tspan></text>"##,
            lx + 30.0,
            ly + 4.0,
            escape(&max)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The plot of every series of a run (`--svg FILE`).
pub fn report_plot(report: &Report) -> String {
    let scenario = report
        .settings
        .get("scenario")
        .and_then(|s| s.as_str())
        .or_else(|| report.results.first().map(|s| s.scenario.as_str()))
        .unwrap_or("run");
    let mode = match report.settings.get("rate").and_then(|r| r.as_f64()) {
        Some(rate) => format!("open loop at {rate:.0} ops/s, latency from the intended send time"),
        None => "closed loop".into(),
    };
    let machine = &report.machine;
    let lines: Vec<Line> = report
        .results
        .iter()
        .map(|series| Line {
            name: series.name(),
            points: series.curve_or_summary(),
        })
        .collect();
    percentile_plot(
        &format!("veddb-bench {scenario}: latency by percentile"),
        &format!(
            "{mode}; {} ({} CPUs), kernel {}",
            machine.cpu_model, machine.cpus, machine.kernel
        ),
        &lines,
    )
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal well-formedness check: the document is one `<svg>` element, every element is
    /// closed in order, attribute quotes are balanced and no `<` or `&` stands alone in text.
    /// Returns the text content (what the reader sees), unescaped.
    pub fn check_well_formed(svg: &str) -> Result<String, String> {
        let body = svg.trim();
        if !body.starts_with("<svg") || !body.ends_with("</svg>") {
            return Err("not one <svg> element".into());
        }
        let mut stack: Vec<String> = Vec::new();
        let mut text = String::new();
        let mut rest = body;
        let mut closed_root = false;
        while let Some(open) = rest.find('<') {
            let content = &rest[..open];
            if closed_root && !content.trim().is_empty() {
                return Err("content after </svg>".into());
            }
            check_text(content)?;
            text.push_str(&unescape(content));
            let after = &rest[open + 1..];
            let close = tag_end(after).ok_or("unterminated tag")?;
            let tag = &after[..close];
            rest = &after[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                if stack.is_empty() {
                    closed_root = true;
                }
                continue;
            }
            if closed_root {
                return Err("a second root element".into());
            }
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == ':')
                .collect();
            if name.is_empty() {
                return Err(format!("bad tag <{tag}>"));
            }
            if tag.matches('"').count() & 1 == 1 {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        check_text(rest)?;
        if !stack.is_empty() {
            return Err(format!("unclosed elements {stack:?}"));
        }
        Ok(text)
    }

    /// The end of a tag (its `>`), skipping `>` inside quoted attribute values.
    fn tag_end(tag: &str) -> Option<usize> {
        let mut quoted = false;
        for (i, c) in tag.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '>' if !quoted => return Some(i),
                '<' if !quoted => return None,
                _ => {}
            }
        }
        None
    }

    fn check_text(text: &str) -> Result<(), String> {
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            rest = &rest[amp..];
            let end = rest.find(';').ok_or("a bare &")?;
            if !matches!(
                &rest[..=end],
                "&amp;" | "&lt;" | "&gt;" | "&quot;" | "&#39;"
            ) {
                return Err(format!("unknown entity {}", &rest[..=end]));
            }
            rest = &rest[end + 1..];
        }
        Ok(())
    }

    fn unescape(text: &str) -> String {
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    #[test]
    fn the_plot_is_well_formed_and_names_every_series() {
        let curve = |scale: u64| -> Vec<(f64, u64)> {
            (0..=80)
                .map(|step| {
                    let p = 100.0 * (1.0 - 10f64.powf(-f64::from(step) / 20.0));
                    (p, scale * (1 + step as u64))
                })
                .chain([(100.0, scale * 1000)])
                .collect()
        };
        let names = [
            "shard get",
            "grpc mix(80% get) batch=1 c=1 d=1",
            "local <odd> & \"quoted\" 'name'",
        ];
        let mut lines: Vec<Line> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Line {
                name: name.to_string(),
                points: curve(100 * (i as u64 + 1)),
            })
            .collect();
        // More lines than colours, and one without data.
        for i in 0..9 {
            lines.push(Line {
                name: format!("extra {i}"),
                points: curve(10),
            });
        }
        lines.push(Line {
            name: "empty".into(),
            points: Vec::new(),
        });
        let svg = percentile_plot("latency <by> percentile", "a & b", &lines);
        assert!(svg.starts_with("<svg"));
        let text = check_well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        for line in &lines {
            assert!(text.contains(&line.name), "{} is missing", line.name);
        }
        assert!(text.contains("latency <by> percentile") && text.contains("99.99%"));
        assert_eq!(svg.matches("<polyline").count(), lines.len() - 1);
        // No data at all still makes a valid (empty) plot.
        check_well_formed(&percentile_plot("t", "", &[])).unwrap();
    }

    #[test]
    fn axis_labels_name_the_decades() {
        let labels: Vec<String> = (0..11).map(|d| axis_label(10f64.powi(d))).collect();
        assert_eq!(
            labels,
            [
                "1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms",
                "1 s", "10 s"
            ]
        );
    }

    #[test]
    fn the_checker_catches_broken_documents() {
        for bad in [
            "<svg><g></svg>",
            "<svg><g></g>",
            "<g></g>",
            "<svg><text>a & b</text></svg>",
            "<svg><line x=\"1/></svg>",
            "<svg></svg><svg></svg>",
        ] {
            assert!(check_well_formed(bad).is_err(), "{bad}");
        }
        assert!(check_well_formed("<svg><g><line/></g><text>a &amp; b</text></svg>").is_ok());
    }
}
