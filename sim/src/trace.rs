//! Trace files: hetsim's JSONL and CSV, and the public Splitwise/Vidur and Azure text traces.
//! `traces/README.md` documents the formats. Rows are read one at a time; errors name the file
//! and the row (1-based, counting the header as row 1 in CSV files, as a spreadsheet does).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bounds::{Bound, MAX_SIM_SECONDS, Num, excerpt};
use crate::error::InputError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceFormat {
    /// From the extension (.jsonl) or the CSV header.
    #[default]
    Auto,
    Jsonl,
    /// `arrival_s,prompt_tokens,output_tokens,images` with images as `640x480;336x336`.
    Csv,
    /// Vidur/Splitwise: `arrived_at,num_prefill_tokens,num_decode_tokens`.
    Splitwise,
    /// Azure LLM inference: `TIMESTAMP,ContextTokens,GeneratedTokens`.
    Azure,
}

/// One row, as the file gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    pub arrival_s: f64,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// `None` for text-only formats: the workload may attach images.
    pub images: Option<Vec<(u32, u32)>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    arrival_s: f64,
    prompt_tokens: u32,
    output_tokens: u32,
    #[serde(default)]
    images: Vec<(u32, u32)>,
}

pub struct TraceReader {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    format: TraceFormat,
    line_no: u64,
    rows: u64,
    last_arrival: f64,
    line: String,
}

/// A row longer than this is no trace row (a binary file, or one without line breaks).
const MAX_ROW_BYTES: u64 = 1 << 20;
/// Arrival times a seconds-based trace may give (JSONL, CSV, Splitwise).
const ARRIVAL_S: Bound = Bound::closed(0.0, MAX_SIM_SECONDS, "s");
/// Azure timestamps: years whose epoch seconds stay exact in f64 to well under a microsecond.
const YEARS: std::ops::RangeInclusive<i64> = 1970..=2200;

impl TraceReader {
    pub fn open(path: &Path, format: TraceFormat) -> Result<TraceReader, InputError> {
        let file = crate::input::open(path, "trace", crate::input::MAX_TRACE_BYTES)?;
        TraceReader::from_reader(path, BufReader::new(file), format)
    }

    /// Reads the rows of `reader` as the trace file `path` (its name decides `auto` and appears in
    /// errors): the fuzz targets feed rows from memory.
    pub fn from_reader(
        path: &Path,
        reader: impl BufRead + Send + 'static,
        format: TraceFormat,
    ) -> Result<TraceReader, InputError> {
        let is_jsonl = format == TraceFormat::Jsonl
            || (format == TraceFormat::Auto
                && path
                    .extension()
                    .is_some_and(|e| e == "jsonl" || e == "json"));
        let mut reader = TraceReader {
            path: path.to_path_buf(),
            reader: Box::new(reader),
            format: TraceFormat::Jsonl,
            line_no: 0,
            rows: 0,
            last_arrival: f64::NEG_INFINITY,
            line: String::new(),
        };
        if !is_jsonl {
            reader.format = reader.read_header(format)?;
        }
        Ok(reader)
    }

    /// Reads the CSV header (row 1) and returns the format it names.
    fn read_header(&mut self, asked: TraceFormat) -> Result<TraceFormat, InputError> {
        if !self.read_line()? {
            return Err(InputError::new(format!(
                "trace {}: empty file, expected a CSV header",
                self.path.display()
            )));
        }
        let header = self.line.trim();
        let cols: Vec<&str> = header.split(',').map(str::trim).collect();
        let detected = match cols.as_slice() {
            ["arrival_s", "prompt_tokens", "output_tokens", "images"] => TraceFormat::Csv,
            ["arrived_at", "num_prefill_tokens", "num_decode_tokens"] => TraceFormat::Splitwise,
            ["TIMESTAMP", "ContextTokens", "GeneratedTokens"] => TraceFormat::Azure,
            _ => {
                return Err(InputError::new(format!(
                    "trace {}: header `{}` is not a known format; expected `arrival_s,prompt_tokens,output_tokens,images`, \
                     `arrived_at,num_prefill_tokens,num_decode_tokens` (Splitwise/Vidur) or \
                     `TIMESTAMP,ContextTokens,GeneratedTokens` (Azure)",
                    self.path.display(),
                    excerpt(header)
                )));
            }
        };
        if asked != TraceFormat::Auto && asked != detected {
            return Err(InputError::new(format!(
                "trace {}: `format: {asked:?}` was asked for but the header says {detected:?}",
                self.path.display()
            )));
        }
        Ok(detected)
    }

    /// The next line into `self.line` (false at the end of the file), at most `MAX_ROW_BYTES`.
    fn read_line(&mut self) -> Result<bool, InputError> {
        self.line.clear();
        self.line_no += 1;
        let n = (&mut self.reader)
            .take(MAX_ROW_BYTES)
            .read_line(&mut self.line)
            .map_err(|e| self.err(format!("cannot read: {e}")))?;
        if n as u64 == MAX_ROW_BYTES && !self.line.ends_with('\n') {
            return Err(self.err(format!(
                "longer than {} MiB: not a trace row (is this a text trace?)",
                MAX_ROW_BYTES >> 20
            )));
        }
        Ok(n > 0)
    }

    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// The row number errors give for the last row read (a CSV header is row 1).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    pub fn next_row(&mut self) -> Result<Option<TraceRow>, InputError> {
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            if self.line.trim().is_empty() {
                continue;
            }
            let row = self.parse()?;
            if row.arrival_s < self.last_arrival {
                return Err(self.err(format!(
                    "arrival {} is before the previous row's {}: rows must be in arrival order",
                    Num(row.arrival_s),
                    Num(self.last_arrival)
                )));
            }
            self.last_arrival = row.arrival_s;
            self.rows += 1;
            return Ok(Some(row));
        }
    }

    fn err(&self, msg: String) -> InputError {
        InputError::new(format!(
            "trace {} row {}: {msg}",
            self.path.display(),
            self.line_no
        ))
    }

    fn parse(&self) -> Result<TraceRow, InputError> {
        let line = self.line.trim();
        let row = match self.format {
            TraceFormat::Jsonl => {
                let r: JsonRow =
                    serde_json::from_str(line).map_err(|e| self.err(excerpt(&e.to_string())))?;
                TraceRow {
                    arrival_s: r.arrival_s,
                    prompt_tokens: r.prompt_tokens,
                    output_tokens: r.output_tokens,
                    images: Some(r.images),
                }
            }
            _ => {
                let cols: Vec<&str> = line.split(',').map(str::trim).collect();
                let want = if self.format == TraceFormat::Csv {
                    4
                } else {
                    3
                };
                if cols.len() != want {
                    return Err(self.err(format!("{} columns, expected {want}", cols.len())));
                }
                let tokens = |i: usize, name: &str| -> Result<u32, InputError> {
                    cols[i].parse::<u32>().map_err(|_| {
                        self.err(format!(
                            "`{name}` = `{}` is not a whole number of tokens",
                            excerpt(cols[i])
                        ))
                    })
                };
                let arrival_s = match self.format {
                    TraceFormat::Azure => parse_timestamp(cols[0]).map_err(|why| {
                        self.err(format!("`TIMESTAMP` = `{}`: {why}", excerpt(cols[0])))
                    })?,
                    _ => {
                        let field = if self.format == TraceFormat::Csv {
                            "arrival_s"
                        } else {
                            "arrived_at"
                        };
                        let v = cols[0].parse::<f64>().map_err(|_| {
                            self.err(format!(
                                "`{field}` = `{}` is not a number of seconds",
                                excerpt(cols[0])
                            ))
                        })?;
                        ARRIVAL_S
                            .check(field, v)
                            .map_err(|e| self.err(e.message().to_string()))?
                    }
                };
                let (p, o) = match self.format {
                    TraceFormat::Csv => ("prompt_tokens", "output_tokens"),
                    TraceFormat::Splitwise => ("num_prefill_tokens", "num_decode_tokens"),
                    _ => ("ContextTokens", "GeneratedTokens"),
                };
                let images = if self.format == TraceFormat::Csv {
                    Some(parse_images(cols[3]).ok_or_else(|| {
                        self.err(format!(
                            "`images` = `{}`: expected sizes like `640x480;336x336`, or empty",
                            excerpt(cols[3])
                        ))
                    })?)
                } else {
                    None
                };
                TraceRow {
                    arrival_s,
                    prompt_tokens: tokens(1, p)?,
                    output_tokens: tokens(2, o)?,
                    images,
                }
            }
        };
        if self.format == TraceFormat::Jsonl {
            ARRIVAL_S
                .check("arrival_s", row.arrival_s)
                .map_err(|e| self.err(e.message().to_string()))?;
        }
        if row.output_tokens == 0 {
            return Err(
                self.err("output tokens = 0: every request generates at least one token".into())
            );
        }
        if let Some((w, h)) = row
            .images
            .iter()
            .flatten()
            .find(|(w, h)| *w == 0 || *h == 0)
        {
            return Err(self.err(format!("image {w}x{h}: sides must be at least 1 pixel")));
        }
        Ok(row)
    }
}

fn parse_images(s: &str) -> Option<Vec<(u32, u32)>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(';')
        .map(|one| {
            let (w, h) = one.split_once(['x', 'X'])?;
            Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
        })
        .collect()
}

/// `2023-11-16 18:15:46.6805900` → seconds since the Unix epoch (UTC, proleptic Gregorian), or
/// what is wrong with it.
fn parse_timestamp(s: &str) -> Result<f64, String> {
    let shape = || "expected `YYYY-MM-DD HH:MM:SS[.fraction]`".to_string();
    let (date, time) = s.split_once([' ', 'T']).ok_or_else(shape)?;
    let whole = |p: Option<&str>| p.and_then(|p| p.parse::<i64>().ok()).ok_or_else(shape);
    let mut d = date.split('-');
    let (y, m, day) = (whole(d.next())?, whole(d.next())?, whole(d.next())?);
    let mut t = time.split(':');
    let (hh, mm) = (whole(t.next())?, whole(t.next())?);
    let ss = t
        .next()
        .and_then(|p| p.parse::<f64>().ok())
        .ok_or_else(shape)?;
    if d.next().is_some() || t.next().is_some() {
        return Err(shape());
    }
    let out_of = |what: &str, v: String, range: &str| Err(format!("{what} {v} is not in {range}"));
    if !YEARS.contains(&y) {
        return out_of("year", y.to_string(), "1970–2200");
    }
    if !(1..=12).contains(&m) {
        return out_of("month", m.to_string(), "1–12");
    }
    let days = days_in_month(y, m);
    if !(1..=days).contains(&day) {
        return Err(format!("day {day}: {y}-{m:02} has {days} days"));
    }
    if !(0..=23).contains(&hh) {
        return out_of("hour", hh.to_string(), "0–23");
    }
    if !(0..=59).contains(&mm) {
        return out_of("minute", mm.to_string(), "0–59");
    }
    // 60 and a fraction: a leap second.
    if !(0.0..61.0).contains(&ss) {
        return out_of("second", Num(ss).to_string(), "[0, 61)");
    }
    // Days from civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a trace file into `dir` (a temporary directory the test owns and drops).
    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    fn all(p: &Path) -> Result<Vec<TraceRow>, InputError> {
        let mut r = TraceReader::open(p, TraceFormat::Auto)?;
        std::iter::from_fn(|| r.next_row().transpose()).collect()
    }

    #[test]
    fn reads_the_public_splitwise_trace() {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces/splitwise_conv.csv");
        let rows = all(&p).unwrap();
        assert_eq!(rows.len(), 19_366);
        assert_eq!(
            rows[1],
            TraceRow {
                arrival_s: 4.314579,
                prompt_tokens: 396,
                output_tokens: 109,
                images: None
            }
        );
    }

    #[test]
    fn reads_every_format() {
        let d = tempfile::tempdir().unwrap();
        let j = write(
            &d,
            "a.jsonl",
            "{\"arrival_s\": 0.5, \"prompt_tokens\": 20, \"output_tokens\": 8, \"images\": [[640, 480]]}\n\n{\"arrival_s\": 1, \"prompt_tokens\": 5, \"output_tokens\": 1}\n",
        );
        let rows = all(&j).unwrap();
        assert_eq!(rows[0].images, Some(vec![(640, 480)]));
        assert_eq!(rows[1].images, Some(vec![]));
        let c = write(
            &d,
            "a.csv",
            "arrival_s,prompt_tokens,output_tokens,images\n0,20,128,640x480;336x336\n0.1,20,128,\n",
        );
        assert_eq!(
            all(&c).unwrap()[0].images,
            Some(vec![(640, 480), (336, 336)])
        );
        let a = write(
            &d,
            "az.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.0,10,2\n",
        );
        let rows = all(&a).unwrap();
        assert!((rows[1].arrival_s - rows[0].arrival_s - 3.31941).abs() < 1e-6);
        assert_eq!(parse_timestamp("1970-01-02 00:00:01"), Ok(86_401.0));
        assert_eq!(parse_timestamp("2024-02-29 00:00:00"), Ok(1_709_164_800.0));
    }

    #[test]
    fn bad_rows_are_named_by_number() {
        let d = tempfile::tempdir().unwrap();
        let c = write(
            &d,
            "bad.csv",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,2\n0.5,ten,2\n",
        );
        let e = all(&c).unwrap_err().to_string();
        assert!(
            e.contains("row 3") && e.contains("num_prefill_tokens"),
            "{e}"
        );
        let c = write(
            &d,
            "order.csv",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n1.0,10,2\n0.5,10,2\n",
        );
        assert!(all(&c).unwrap_err().to_string().contains("row 3"));
        let c = write(&d, "hdr.csv", "when,what\n");
        assert!(
            all(&c)
                .unwrap_err()
                .to_string()
                .contains("not a known format")
        );
        let e = TraceReader::open(Path::new("/nonexistent/t.csv"), TraceFormat::Auto)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("cannot read trace /nonexistent/t.csv")
        );
    }
}
