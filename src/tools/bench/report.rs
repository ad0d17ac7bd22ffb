//! Turns the raw results of a harness run into the side-by-side table, CSV and JSON.
//!
//! `bench/run.sh` appends one tab-separated line per measured value,
//! `benchmark <TAB> side <TAB> repetition <TAB> key <TAB> value`, where side is `stock` or
//! `ctdb-rs`. The key `status` carries what happened to a repetition (`ok`,
//! `not available: why`, `failed: why`); every other key with a numeric value is a metric.

use super::output::format_number;
use super::stats::{median, spread_pct};
use std::fmt::Write as _;

/// Which daemon a measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Stock,
    CtdbRs,
}

impl Side {
    pub const ALL: [Side; 2] = [Side::Stock, Side::CtdbRs];

    pub fn name(self) -> &'static str {
        match self {
            Side::Stock => "stock",
            Side::CtdbRs => "ctdb-rs",
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "stock" => Some(Side::Stock),
            "ctdb-rs" | "ctdb_rs" | "rs" => Some(Side::CtdbRs),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Stock => 0,
            Side::CtdbRs => 1,
        }
    }
}

/// Whether a bigger number is better, judged from the metric's unit suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Rates: `_per_s`.
    Higher,
    /// Times, CPU and memory: `_us`, `_ms`, `_s`, `_pct`, `_kb`.
    Lower,
    /// No unit: a parameter or a count (`clients`, `total_msgs`), shown but not judged.
    Neither,
}

impl Goal {
    pub fn of(metric: &str) -> Goal {
        if metric.ends_with("_per_s") {
            Goal::Higher
        } else if ["_us", "_ms", "_s", "_pct", "_kb"]
            .iter()
            .any(|unit| metric.ends_with(unit))
        {
            Goal::Lower
        } else {
            Goal::Neither
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Goal::Higher => "higher",
            Goal::Lower => "lower",
            Goal::Neither => "none",
        }
    }
}

/// All values of one metric on one side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub values: Vec<f64>,
}

impl Series {
    pub fn median(&self) -> Option<f64> {
        median(&self.values)
    }
    pub fn min(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::min)
    }
    pub fn max(&self) -> Option<f64> {
        self.values.iter().copied().reduce(f64::max)
    }
    pub fn spread_pct(&self) -> Option<f64> {
        spread_pct(&self.values)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub metric: String,
    pub sides: [Series; 2],
}

impl MetricRow {
    pub fn side(&self, side: Side) -> &Series {
        &self.sides[side.index()]
    }

    pub fn goal(&self) -> Goal {
        Goal::of(&self.metric)
    }

    /// ctdb-rs median over stock median.
    pub fn ratio(&self) -> Option<f64> {
        let stock = self.side(Side::Stock).median()?;
        let rs = self.side(Side::CtdbRs).median()?;
        (stock != 0.0).then(|| rs / stock)
    }

    /// How many times better ctdb-rs is (above 1) or worse (below 1), whichever way the
    /// metric points.
    pub fn gain(&self) -> Option<f64> {
        let ratio = self.ratio()?;
        match self.goal() {
            Goal::Higher => Some(ratio),
            Goal::Lower => (ratio != 0.0).then(|| 1.0 / ratio),
            Goal::Neither => None,
        }
    }
}

/// What happened to the repetitions of one benchmark on one side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideStatus {
    pub ok: usize,
    /// Non-ok statuses in the order they were recorded.
    pub problems: Vec<String>,
}

impl SideStatus {
    /// One line: `ok`, `ok, 1 failed (why)`, or the first problem when nothing succeeded.
    pub fn summary(&self) -> String {
        match (self.ok, self.problems.first()) {
            (0, None) => "not run".to_string(),
            (_, None) => "ok".to_string(),
            (0, Some(first)) => first.clone(),
            (_, Some(first)) => format!("ok, {} failed ({first})", self.problems.len()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkResult {
    pub name: String,
    pub status: [SideStatus; 2],
    pub metrics: Vec<MetricRow>,
}

impl BenchmarkResult {
    pub fn status(&self, side: Side) -> &SideStatus {
        &self.status[side.index()]
    }

    fn metric_mut(&mut self, metric: &str) -> &mut MetricRow {
        let index = match self.metrics.iter().position(|m| m.metric == metric) {
            Some(i) => i,
            None => {
                self.metrics.push(MetricRow {
                    metric: metric.to_string(),
                    sides: Default::default(),
                });
                self.metrics.len() - 1
            }
        };
        &mut self.metrics[index]
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Run description (`key`, `value`), in the order given.
    pub meta: Vec<(String, String)>,
    pub benchmarks: Vec<BenchmarkResult>,
    /// Lines of the raw file that did not parse.
    pub skipped_lines: usize,
    /// Metrics shown in the table, per benchmark; a benchmark not listed shows all.
    pub headline: Vec<(String, Vec<String>)>,
}

impl Report {
    fn benchmark_mut(&mut self, name: &str) -> &mut BenchmarkResult {
        let index = match self.benchmarks.iter().position(|b| b.name == name) {
            Some(i) => i,
            None => {
                self.benchmarks.push(BenchmarkResult {
                    name: name.to_string(),
                    status: Default::default(),
                    metrics: Vec::new(),
                });
                self.benchmarks.len() - 1
            }
        };
        &mut self.benchmarks[index]
    }

    /// Reads the raw tab-separated lines.
    pub fn from_raw(raw: &str) -> Report {
        let mut report = Report::default();
        for line in raw.lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            let [benchmark, side, _rep, key, value] = fields.as_slice() else {
                report.skipped_lines += 1;
                continue;
            };
            let Some(side) = Side::parse(side) else {
                report.skipped_lines += 1;
                continue;
            };
            let bench = report.benchmark_mut(benchmark);
            if *key == "status" {
                let status = &mut bench.status[side.index()];
                if *value == "ok" {
                    status.ok += 1;
                } else {
                    status.problems.push(value.to_string());
                }
            } else if let Ok(number) = value.trim().parse::<f64>() {
                if number.is_finite() {
                    bench.metric_mut(key).sides[side.index()]
                        .values
                        .push(number);
                }
            }
        }
        report
    }

    fn shown<'a>(&self, benchmark: &'a BenchmarkResult) -> Vec<&'a MetricRow> {
        match self.headline.iter().find(|(b, _)| *b == benchmark.name) {
            Some((_, keys)) if !keys.is_empty() => keys
                .iter()
                .filter_map(|k| benchmark.metrics.iter().find(|m| &m.metric == k))
                .collect(),
            _ => benchmark.metrics.iter().collect(),
        }
    }

    /// The human-readable side-by-side table.
    pub fn table(&self) -> String {
        let header = [
            "benchmark",
            "metric",
            "stock",
            "ctdb-rs",
            "ratio",
            "gain",
            "spread stock/rs",
            "n",
        ];
        let mut rows: Vec<[String; 8]> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        for bench in &self.benchmarks {
            let cell = |row: &MetricRow, side: Side| match row.side(side).median() {
                Some(m) => short_number(m),
                None => "n/a".to_string(),
            };
            let shown = self.shown(bench);
            if shown.is_empty() {
                rows.push([
                    bench.name.clone(),
                    "-".into(),
                    "n/a".into(),
                    "n/a".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "0/0".into(),
                ]);
            }
            for row in shown {
                let spread = |side: Side| match row.side(side).spread_pct() {
                    Some(s) => format!("{s:.0}%"),
                    None => "-".to_string(),
                };
                rows.push([
                    bench.name.clone(),
                    row.metric.clone(),
                    cell(row, Side::Stock),
                    cell(row, Side::CtdbRs),
                    row.ratio()
                        .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
                    row.gain()
                        .map_or_else(|| "-".into(), |g| format!("{g:.2}x")),
                    format!("{}/{}", spread(Side::Stock), spread(Side::CtdbRs)),
                    format!(
                        "{}/{}",
                        row.side(Side::Stock).values.len(),
                        row.side(Side::CtdbRs).values.len()
                    ),
                ]);
            }
            for side in Side::ALL {
                let status = bench.status(side);
                if !status.problems.is_empty() || status.ok == 0 {
                    notes.push(format!(
                        "{}: {}: {}",
                        bench.name,
                        side.name(),
                        status.summary()
                    ));
                }
            }
        }
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (key, value) in &self.meta {
            let _ = writeln!(out, "# {key}: {value}");
        }
        let line = |out: &mut String, cells: &[String]| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths.iter()).enumerate() {
                // Names left-aligned, numbers right-aligned.
                if i < 2 {
                    let _ = write!(text, "{cell:<w$}  ");
                } else {
                    let _ = write!(text, "{cell:>w$}  ");
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&mut out, &header.map(String::from));
        line(&mut out, &widths.map(|w| "-".repeat(w)));
        for row in &rows {
            line(&mut out, row);
        }
        if !notes.is_empty() {
            let _ = writeln!(out);
            for note in notes {
                let _ = writeln!(out, "{note}");
            }
        }
        let _ = writeln!(
            out,
            "\nratio = ctdb-rs median / stock median; gain > 1 means ctdb-rs is better \
             (_per_s: higher is better; _us, _s, _pct, _kb: lower); spread = (max-min)/median \
             over the repetitions; n = repetitions stock/ctdb-rs"
        );
        out
    }

    /// One row per metric, both sides side by side.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "benchmark,metric,goal,stock_median,stock_min,stock_max,stock_spread_pct,stock_n,\
             ctdb_rs_median,ctdb_rs_min,ctdb_rs_max,ctdb_rs_spread_pct,ctdb_rs_n,ratio,gain,\
             stock_status,ctdb_rs_status\n",
        );
        let num = |v: Option<f64>| v.map(format_number).unwrap_or_default();
        for bench in &self.benchmarks {
            let statuses = format!(
                "{},{}",
                csv_field(&bench.status(Side::Stock).summary()),
                csv_field(&bench.status(Side::CtdbRs).summary())
            );
            if bench.metrics.is_empty() {
                let _ = writeln!(out, "{},,,,,,,0,,,,,0,,,{statuses}", csv_field(&bench.name));
            }
            for row in &bench.metrics {
                let mut cells = vec![
                    csv_field(&bench.name),
                    csv_field(&row.metric),
                    row.goal().name().to_string(),
                ];
                for side in Side::ALL {
                    let s = row.side(side);
                    cells.extend([
                        num(s.median()),
                        num(s.min()),
                        num(s.max()),
                        num(s.spread_pct()),
                        s.values.len().to_string(),
                    ]);
                }
                cells.push(num(row.ratio()));
                cells.push(num(row.gain()));
                let _ = writeln!(out, "{},{statuses}", cells.join(","));
            }
        }
        out
    }

    /// Everything, including every repetition's value.
    pub fn json(&self) -> String {
        let mut out = String::from("{\n  \"run\": {");
        for (i, (key, value)) in self.meta.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{sep}\n    {}: {}",
                json_string(key),
                json_string(value)
            );
        }
        out.push_str("\n  },\n  \"benchmarks\": [");
        for (bi, bench) in self.benchmarks.iter().enumerate() {
            let sep = if bi == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{sep}\n    {{\n      \"name\": {},\n      \"status\": {{\"stock\": {}, \
                 \"ctdb-rs\": {}}},\n      \"metrics\": [",
                json_string(&bench.name),
                json_string(&bench.status(Side::Stock).summary()),
                json_string(&bench.status(Side::CtdbRs).summary()),
            );
            for (mi, row) in bench.metrics.iter().enumerate() {
                let sep = if mi == 0 { "" } else { "," };
                let _ = write!(
                    out,
                    "{sep}\n        {{\"metric\": {}, \"goal\": \"{}\", \"stock\": {}, \
                     \"ctdb-rs\": {}, \"ratio\": {}, \"gain\": {}}}",
                    json_string(&row.metric),
                    row.goal().name(),
                    json_series(row.side(Side::Stock)),
                    json_series(row.side(Side::CtdbRs)),
                    json_number(row.ratio()),
                    json_number(row.gain()),
                );
            }
            if !bench.metrics.is_empty() {
                out.push_str("\n      ");
            }
            out.push_str("]\n    }");
        }
        if !self.benchmarks.is_empty() {
            out.push_str("\n  ");
        }
        out.push_str("]\n}\n");
        out
    }
}

/// About three significant digits, for the table.
pub fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format_number(v),
        _ => "null".to_string(),
    }
}

fn json_series(series: &Series) -> String {
    if series.values.is_empty() {
        return "null".to_string();
    }
    let values: Vec<String> = series.values.iter().map(|v| format_number(*v)).collect();
    format!(
        "{{\"n\": {}, \"median\": {}, \"min\": {}, \"max\": {}, \"spread_pct\": {}, \
         \"values\": [{}]}}",
        series.values.len(),
        json_number(series.median()),
        json_number(series.min()),
        json_number(series.max()),
        json_number(series.spread_pct()),
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "\
rtt-local\tstock\t1\tstatus\tok
rtt-local\tstock\t1\tp50_us\t30
rtt-local\tstock\t1\topcode\tPING
rtt-local\tctdb-rs\t1\tstatus\tok
rtt-local\tctdb-rs\t1\tp50_us\t10
rtt-local\tstock\t2\tstatus\tok
rtt-local\tstock\t2\tp50_us\t34
rtt-local\tctdb-rs\t2\tstatus\tok
rtt-local\tctdb-rs\t2\tp50_us\t12
ring\tstock\t1\tstatus\tok
ring\tstock\t1\tring_msgs_per_s\t6000
ring\tctdb-rs\t-\tstatus\tnot available: target/release/ctdbd missing
garbage line
cold-start\tstock\t1\tstatus\tfailed: timeout, \"60 s\"
";

    #[test]
    fn aggregates_per_benchmark_metric_and_side() {
        let r = Report::from_raw(RAW);
        assert_eq!(r.skipped_lines, 1);
        let names: Vec<&str> = r.benchmarks.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["rtt-local", "ring", "cold-start"]);
        let rtt = &r.benchmarks[0];
        assert_eq!(rtt.metrics.len(), 1, "labels are not metrics");
        let p50 = &rtt.metrics[0];
        assert_eq!(p50.side(Side::Stock).median(), Some(32.0));
        assert_eq!(p50.side(Side::CtdbRs).median(), Some(11.0));
        assert_eq!(p50.ratio(), Some(11.0 / 32.0));
        assert_eq!(p50.gain(), Some(32.0 / 11.0));
        assert_eq!(rtt.status(Side::Stock).summary(), "ok");
        let ring = &r.benchmarks[1];
        assert_eq!(ring.metrics[0].goal(), Goal::Higher);
        assert_eq!(ring.metrics[0].ratio(), None);
        assert_eq!(
            ring.status(Side::CtdbRs).summary(),
            "not available: target/release/ctdbd missing"
        );
        assert_eq!(r.benchmarks[2].status(Side::CtdbRs).summary(), "not run");
    }

    #[test]
    fn table_shows_unavailable_sides() {
        let r = Report::from_raw(RAW);
        let table = r.table();
        assert!(table.contains("ring: ctdb-rs: not available: target/release/ctdbd missing"));
        assert!(table.contains("2.91x"), "{table}");
        let ring_line = table.lines().find(|l| l.starts_with("ring ")).unwrap();
        assert!(
            ring_line.contains("6000") && ring_line.contains("n/a"),
            "{ring_line}"
        );
        assert!(table.contains("cold-start  -"), "{table}");
    }

    #[test]
    fn headline_selects_table_rows_only() {
        let mut r = Report::from_raw(&format!("{RAW}rtt-local\tstock\t1\tp99_us\t50\n"));
        r.headline = vec![("rtt-local".into(), vec!["p99_us".into()])];
        let table = r.table();
        assert!(table.contains("p99_us") && !table.contains("p50_us"));
        assert!(r.csv().contains("p50_us"));
    }

    #[test]
    fn csv_has_one_row_per_metric_and_quotes_text() {
        let csv = Report::from_raw(RAW).csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4, "{csv}");
        let columns = lines[0].split(',').count();
        assert_eq!(lines[1].split(',').count(), columns);
        assert!(lines[1].starts_with("rtt-local,p50_us,lower,32,30,34,12.5,2,11,10,12,"));
        assert!(
            lines[3].contains("\"failed: timeout, \"\"60 s\"\"\""),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn json_is_balanced_and_escaped() {
        let mut r = Report::from_raw(RAW);
        r.meta = vec![("note".into(), "a \"quoted\"\tvalue\n".into())];
        let json = r.json();
        assert!(
            json.contains(r#""note": "a \"quoted\"\tvalue\n""#),
            "{json}"
        );
        assert!(json.contains(r#""values": [30, 34]"#), "{json}");
        assert!(json.contains(r#""ctdb-rs": null"#), "{json}");
        let mut depth = 0i32;
        let mut in_string = false;
        let mut escaped = false;
        for c in json.chars() {
            if in_string {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
        }
        assert_eq!(depth, 0);
        assert!(!in_string);
        let empty = Report::default().json();
        assert_eq!(empty, "{\n  \"run\": {\n  },\n  \"benchmarks\": []\n}\n");
    }

    #[test]
    fn goals_follow_units() {
        assert_eq!(Goal::of("ring_msgs_per_s"), Goal::Higher);
        assert_eq!(Goal::of("p99_us"), Goal::Lower);
        assert_eq!(Goal::of("ok_s"), Goal::Lower);
        assert_eq!(Goal::of("cpu_pct"), Goal::Lower);
        assert_eq!(Goal::of("rss_max_kb"), Goal::Lower);
        assert_eq!(Goal::of("clients"), Goal::Neither);
        assert_eq!(Goal::of("total_msgs"), Goal::Neither);
        let row = MetricRow {
            metric: "count".into(),
            sides: [Series { values: vec![2.0] }, Series { values: vec![4.0] }],
        };
        assert_eq!(row.ratio(), Some(2.0));
        assert_eq!(row.gain(), None);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(1234.567), "1235");
        assert_eq!(short_number(12.345), "12.3");
        assert_eq!(short_number(1.2345), "1.23");
        assert_eq!(short_number(0.01234), "0.012");
    }
}
