//! The load tool's output: one `key=value` per line, which `bench/run.sh` collects.
//!
//! Keys are lower-case with underscores and end in their unit (`_us`, `_s`, `_per_s`, `_pct`,
//! `_kb`) so that the report can tell which direction is better without a schema. Values are
//! plain decimal numbers or, for labels, single words.

use std::fmt::Write as _;

/// An ordered list of `key=value` results.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyValues {
    entries: Vec<(String, String)>,
}

impl KeyValues {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn number(&mut self, key: &str, value: f64) -> &mut Self {
        self.entries.push((key.to_string(), format_number(value)));
        self
    }

    pub fn count(&mut self, key: &str, value: u64) -> &mut Self {
        self.entries.push((key.to_string(), value.to_string()));
        self
    }

    /// A label; whitespace would break the line format, so it becomes `_`.
    pub fn label(&mut self, key: &str, value: &str) -> &mut Self {
        let clean: String = value
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        self.entries.push((key.to_string(), clean));
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// One `key=value` per line, each line ending in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.entries {
            let _ = writeln!(out, "{k}={v}");
        }
        out
    }
}

/// Up to three decimals, trailing zeros dropped: `12.5`, `3`, `0.125`.
pub fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return "nan".to_string();
    }
    let s = format!("{value:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.1254), "0.125");
        assert_eq!(format_number(-0.0001), "0");
        assert_eq!(format_number(f64::NAN), "nan");
        assert_eq!(format_number(1_234_567.0), "1234567");
    }

    #[test]
    fn renders_one_pair_per_line() {
        let mut kv = KeyValues::new();
        kv.number("p50_us", 31.25)
            .count("count", 10)
            .label("node", "remote 1");
        assert_eq!(kv.render(), "p50_us=31.25\ncount=10\nnode=remote_1\n");
        assert_eq!(kv.get("count"), Some("10"));
        assert_eq!(kv.get("missing"), None);
    }
}
