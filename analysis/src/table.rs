//! A small table type rendered three ways: aligned text for the terminal, markdown, and CSV.
//! CSV keeps raw values in the schema's units (seconds, bytes, dollars) with full precision, so a
//! script can reuse them; the terminal and markdown show rounded numbers in readable units.

use std::fmt::Write as _;

/// One value. Numbers stay numbers until rendering, so CSV loses nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(Option<u64>),
    Num(Option<f64>),
}

/// How the terminal and markdown show a numeric column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Show {
    /// As is (text, integers).
    Plain,
    /// `decimals` after the point, after multiplying by `scale` (1e3 for seconds → ms).
    Fixed { scale: f64, decimals: usize },
    /// A share in 0..1 shown as a percentage.
    Percent { decimals: usize },
    /// A signed percentage already in percent.
    SignedPercent { decimals: usize },
    /// A percentage already in percent, no sign (magnitudes of errors).
    PercentUnits { decimals: usize },
    /// Bytes in the largest unit that keeps the number ≥ 1 (B, kB, MB, GB, TB; decimal).
    Bytes,
}

#[derive(Debug, Clone)]
pub struct TableColumn {
    /// CSV header: machine-readable, the unit in the suffix (`ttft_p99_s`).
    pub key: String,
    /// Terminal / markdown header, unit spelled out (`TTFT p99 ms`).
    pub header: String,
    pub show: Show,
    /// Shown in the terminal (CSV and markdown always hold every column).
    pub terminal: bool,
}

impl TableColumn {
    pub fn new(key: impl Into<String>, header: impl Into<String>, show: Show) -> Self {
        TableColumn {
            key: key.into(),
            header: header.into(),
            show,
            terminal: true,
        }
    }

    /// Kept out of the terminal view, which must fit a wide terminal.
    pub fn file_only(mut self) -> Self {
        self.terminal = false;
        self
    }
}

/// `TableColumn::new` for borrowed strings (a plain fn, so one binding serves every call).
pub fn column(key: &str, header: &str, show: Show) -> TableColumn {
    TableColumn::new(key, header, show)
}

#[derive(Debug, Clone)]
pub struct Table {
    /// File stem: `comparison` → comparison.csv, comparison.md.
    pub name: &'static str,
    pub title: String,
    pub columns: Vec<TableColumn>,
    pub rows: Vec<Vec<Value>>,
    /// A sentence under the markdown title: what the rows are, how numbers were computed.
    pub note: String,
}

impl Table {
    pub fn new(name: &'static str, title: impl Into<String>, note: impl Into<String>) -> Self {
        Table {
            name,
            title: title.into(),
            columns: Vec::new(),
            rows: Vec::new(),
            note: note.into(),
        }
    }

    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width in {}", self.name);
        self.rows.push(row);
    }

    pub fn column_index(&self, key: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.key == key)
    }

    /// Text columns are left-aligned, numbers right-aligned.
    fn is_text(&self, c: usize) -> bool {
        self.rows.iter().any(|r| matches!(r[c], Value::Text(_)))
    }

    fn shown(&self, row: &[Value], c: usize) -> String {
        show(&row[c], self.columns[c].show)
    }

    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| csv_field(&c.key)).collect();
        out.push_str(&header.join(","));
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|v| match v {
                    Value::Text(s) => csv_field(s),
                    Value::Int(Some(i)) => i.to_string(),
                    // Rust's f64 Display is the shortest string that parses back to the same
                    // number, so CSV readers get the exact value.
                    Value::Num(Some(x)) => x.to_string(),
                    Value::Int(None) | Value::Num(None) => String::new(),
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.title);
        if !self.note.is_empty() {
            let _ = writeln!(out, "{}\n", self.note);
        }
        let esc = |s: &str| s.replace('|', "\\|");
        let headers: Vec<String> = self.columns.iter().map(|c| esc(&c.header)).collect();
        let _ = writeln!(out, "| {} |", headers.join(" | "));
        let rules: Vec<&str> = (0..self.columns.len())
            .map(|c| if self.is_text(c) { "---" } else { "---:" })
            .collect();
        let _ = writeln!(out, "|{}|", rules.join("|"));
        for row in &self.rows {
            let cells: Vec<String> = (0..self.columns.len())
                .map(|c| esc(&self.shown(row, c)))
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }

    /// Aligned columns: text left, numbers right.
    pub fn to_terminal(&self) -> String {
        let cols: Vec<usize> = (0..self.columns.len())
            .filter(|&c| self.columns[c].terminal)
            .collect();
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| cols.iter().map(|&c| self.shown(r, c)).collect())
            .collect();
        let widths: Vec<usize> = cols
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.columns[c].header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |vals: Vec<&str>| {
            let parts: Vec<String> = vals
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let pad = " ".repeat(widths[i] - v.chars().count());
                    if self.is_text(cols[i]) {
                        format!("{v}{pad}")
                    } else {
                        format!("{pad}{v}")
                    }
                })
                .collect();
            parts.join("  ").trim_end().to_string()
        };
        let mut out = format!("{}\n\n", self.title);
        out.push_str(&line(
            cols.iter()
                .map(|&c| self.columns[c].header.as_str())
                .collect(),
        ));
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
        out.push_str(&rule.join("  "));
        out.push('\n');
        for r in &cells {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
            out.push('\n');
        }
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn show(v: &Value, how: Show) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Int(None) | Value::Num(None) => "-".to_string(),
        Value::Int(Some(i)) => match how {
            Show::Bytes => bytes(*i as f64),
            _ => i.to_string(),
        },
        Value::Num(Some(x)) => match how {
            Show::Plain => x.to_string(),
            Show::Fixed { scale, decimals } => format!("{:.*}", decimals, x * scale),
            Show::Percent { decimals } => format!("{:.*}%", decimals, x * 100.0),
            Show::SignedPercent { decimals } => format!("{:+.*}%", decimals, x),
            Show::PercentUnits { decimals } => format!("{:.*}%", decimals, x),
            Show::Bytes => bytes(*x),
        },
    }
}

/// Decimal units (1 MB = 1e6 B), as link bandwidths are quoted.
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v.abs() >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("t", "T", "");
        t.columns = vec![
            TableColumn::new("name", "name", Show::Plain),
            TableColumn::new(
                "lat_s",
                "lat ms",
                Show::Fixed {
                    scale: 1e3,
                    decimals: 1,
                },
            ),
            TableColumn::new("b", "bytes", Show::Bytes),
        ];
        t.push(vec![
            Value::Text("a,b".into()),
            Value::Num(Some(0.012345)),
            Value::Int(Some(4_718_592)),
        ]);
        t.push(vec![
            Value::Text("c|d".into()),
            Value::Num(None),
            Value::Int(Some(12)),
        ]);
        t
    }

    #[test]
    fn csv_keeps_raw_values_and_quotes_commas() {
        let csv = sample().to_csv();
        assert_eq!(csv, "name,lat_s,b\n\"a,b\",0.012345,4718592\nc|d,,12\n");
    }

    #[test]
    fn markdown_and_terminal_show_units() {
        let t = sample();
        let md = t.to_markdown();
        assert!(md.contains("| a,b | 12.3 | 4.72 MB |"), "{md}");
        assert!(md.contains("| c\\|d | - | 12 B |"), "{md}");
        let term = t.to_terminal();
        assert!(term.contains("a,b     12.3  4.72 MB"), "{term}");
        assert!(term.contains("c|d        -     12 B"), "{term}");
    }
}
