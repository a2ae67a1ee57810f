//! A small typed table for command output: printed aligned, or written as CSV, JSON or parquet
//! from the same rows, so every format says the same thing.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

use crate::error::{Error, InputError};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    U64(u64),
    F64(f64),
    Bool(bool),
    Null,
}

impl Value {
    fn text(&self, precision: usize) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::U64(v) => v.to_string(),
            Value::F64(v) => format!("{v:.precision$}"),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Value>) {
        assert_eq!(
            row.len(),
            self.columns.len(),
            "a row of the table has one value per column"
        );
        self.rows.push(row);
    }

    /// Aligned text: numbers right, text left; floats with `precision` decimals.
    pub fn to_text(&self, precision: usize) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|v| v.text(precision)).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                cells
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([self.columns[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // Right-align numbers, and text that reads as one ("600/600", "57 %"); the rest left.
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|c| {
                self.rows.iter().zip(&cells).all(|(r, t)| match &r[c] {
                    Value::Str(_) => t[c]
                        .chars()
                        .all(|ch| ch.is_ascii_digit() || "./%-,".contains(ch)),
                    Value::Bool(_) => false,
                    _ => true,
                })
            })
            .collect();
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(c, v)| {
                    let pad = " ".repeat(widths[c] - v.chars().count());
                    if numeric[c] {
                        format!("{pad}{v}")
                    } else {
                        format!("{v}{pad}")
                    }
                })
                .collect();
            parts.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.columns);
        out.push('\n');
        out.push_str(
            &widths
                .iter()
                .map(|w| "─".repeat(*w))
                .collect::<Vec<_>>()
                .join("  "),
        );
        out.push('\n');
        for r in &cells {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }

    /// RFC 4180 CSV, full precision.
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = self
            .columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for r in &self.rows {
            let cells: Vec<String> = r
                .iter()
                .map(|v| match v {
                    Value::F64(x) => format!("{x}"),
                    other => quote(&other.text(0)),
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    /// A JSON array of objects, one per row.
    pub fn to_json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let map = self
                    .columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| {
                        let j = match v {
                            Value::Str(s) => serde_json::Value::from(s.clone()),
                            Value::U64(x) => serde_json::Value::from(*x),
                            Value::F64(x) => serde_json::Value::from(*x),
                            Value::Bool(b) => serde_json::Value::from(*b),
                            Value::Null => serde_json::Value::Null,
                        };
                        (c.clone(), j)
                    })
                    .collect::<serde_json::Map<_, _>>();
                serde_json::Value::Object(map)
            })
            .collect();
        serde_json::to_string_pretty(&rows).expect("plain values serialise") + "\n"
    }

    /// Parquet, column types from the values (a column of numbers and nulls is numeric).
    pub fn write_parquet(&self, path: &Path) -> Result<(), Error> {
        let kinds: Vec<Kind> = (0..self.columns.len())
            .map(|c| {
                self.rows
                    .iter()
                    .find_map(|r| Kind::of(&r[c]))
                    .unwrap_or(Kind::Str)
            })
            .collect();
        self.write_parquet_as(path, &kinds)
    }

    /// Parquet with the column types given (a value of another type is written as null): files
    /// written in pieces (`hetsim sweep`'s parts) share one schema even where a piece's column is
    /// all null.
    pub fn write_parquet_as(&self, path: &Path, kinds: &[Kind]) -> Result<(), Error> {
        assert_eq!(kinds.len(), self.columns.len(), "one type per column");
        let err = |e: &dyn std::fmt::Display| Error::Output(format!("{}: {e}", path.display()));
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (c, (name, kind)) in self.columns.iter().zip(kinds).enumerate() {
            let col = self.rows.iter().map(|r| &r[c]);
            let array: ArrayRef = match kind {
                Kind::U64 => {
                    let mut b = UInt64Builder::new();
                    col.for_each(|v| {
                        b.append_option(if let Value::U64(x) = v {
                            Some(*x)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
                Kind::F64 => {
                    let mut b = Float64Builder::new();
                    col.for_each(|v| {
                        b.append_option(if let Value::F64(x) = v {
                            Some(*x)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
                Kind::Bool => {
                    let mut b = BooleanBuilder::new();
                    col.for_each(|v| {
                        b.append_option(if let Value::Bool(x) = v {
                            Some(*x)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
                Kind::Str => {
                    let mut b = StringBuilder::new();
                    col.for_each(|v| {
                        b.append_option(if let Value::Str(x) = v {
                            Some(x.as_str())
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
            };
            fields.push(Field::new(name, kind.data_type(), true));
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| err(&e))?;
        // A command's table is small: encoded in memory, then written whole or not at all.
        let mut w = ArrowWriter::try_new(Vec::new(), schema, None).map_err(|e| err(&e))?;
        w.write(&batch).map_err(|e| err(&e))?;
        let bytes = w.into_inner().map_err(|e| err(&e))?;
        crate::output::write_atomically(path, bytes)
    }

    /// Reads a parquet file `write_parquet_as` wrote (string, uint64, float64 and boolean
    /// columns), with its column types.
    pub fn read_parquet(path: &Path) -> Result<(Table, Vec<Kind>), InputError> {
        use arrow_array::{Array, BooleanArray, Float64Array, StringArray, UInt64Array};
        let err = |e: &dyn std::fmt::Display| {
            InputError::new(format!(
                "{}: cannot read as a parquet table: {e}",
                path.display()
            ))
        };
        // Regular file and size checked; parquet reads by offset, so the plain file is handed on.
        let file =
            crate::input::open(path, "parquet table", crate::input::MAX_TABLE_BYTES)?.into_inner();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(&e))?;
        let schema = builder.schema().clone();
        let reader = builder.build().map_err(|e| err(&e))?;
        let mut kinds = Vec::new();
        for f in schema.fields() {
            kinds.push(match f.data_type() {
                DataType::Utf8 => Kind::Str,
                DataType::UInt64 => Kind::U64,
                DataType::Float64 => Kind::F64,
                DataType::Boolean => Kind::Bool,
                other => {
                    return Err(err(&format!(
                        "column `{}` is {other}; hetsim tables hold string, uint64, float64 and boolean columns",
                        f.name()
                    )));
                }
            });
        }
        let mut table = Table {
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            rows: Vec::new(),
        };
        for batch in reader {
            let batch = batch.map_err(|e| err(&e))?;
            let first = table.rows.len();
            table
                .rows
                .extend((0..batch.num_rows()).map(|_| Vec::with_capacity(kinds.len())));
            for (array, kind) in batch.columns().iter().zip(&kinds) {
                let rows = &mut table.rows[first..];
                let any = array.as_any();
                // The downcasts match the schema just read.
                match kind {
                    Kind::Str => {
                        let a = any.downcast_ref::<StringArray>().expect("utf8 column");
                        for (i, r) in rows.iter_mut().enumerate() {
                            r.push(if a.is_null(i) {
                                Value::Null
                            } else {
                                Value::Str(a.value(i).to_string())
                            });
                        }
                    }
                    Kind::U64 => {
                        let a = any.downcast_ref::<UInt64Array>().expect("uint64 column");
                        for (i, r) in rows.iter_mut().enumerate() {
                            r.push(if a.is_null(i) {
                                Value::Null
                            } else {
                                Value::U64(a.value(i))
                            });
                        }
                    }
                    Kind::F64 => {
                        let a = any.downcast_ref::<Float64Array>().expect("float64 column");
                        for (i, r) in rows.iter_mut().enumerate() {
                            r.push(if a.is_null(i) {
                                Value::Null
                            } else {
                                Value::F64(a.value(i))
                            });
                        }
                    }
                    Kind::Bool => {
                        let a = any.downcast_ref::<BooleanArray>().expect("boolean column");
                        for (i, r) in rows.iter_mut().enumerate() {
                            r.push(if a.is_null(i) {
                                Value::Null
                            } else {
                                Value::Bool(a.value(i))
                            });
                        }
                    }
                }
            }
        }
        Ok((table, kinds))
    }
}

/// The type of a table column in parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    U64,
    F64,
    Bool,
}

impl Kind {
    /// The type a value implies; none for a null.
    pub fn of(v: &Value) -> Option<Kind> {
        match v {
            Value::Str(_) => Some(Kind::Str),
            Value::U64(_) => Some(Kind::U64),
            Value::F64(_) => Some(Kind::F64),
            Value::Bool(_) => Some(Kind::Bool),
            Value::Null => None,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Str => DataType::Utf8,
            Kind::U64 => DataType::UInt64,
            Kind::F64 => DataType::Float64,
            Kind::Bool => DataType::Boolean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["cut", "bytes", "ratio", "stage_based"]);
        t.push(vec![
            Value::Str("a,b".into()),
            Value::U64(10),
            Value::F64(1.5),
            Value::Bool(true),
        ]);
        t.push(vec![
            Value::Str("c".into()),
            Value::U64(2000),
            Value::Null,
            Value::Bool(false),
        ]);
        t
    }

    #[test]
    fn every_format_carries_the_same_rows() {
        let t = sample();
        assert_eq!(
            t.to_csv(),
            "cut,bytes,ratio,stage_based\n\"a,b\",10,1.5,true\nc,2000,,false\n"
        );
        let j: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
        assert_eq!(j[1]["bytes"], 2000);
        assert!(j[1]["ratio"].is_null());
        let text = t.to_text(2);
        assert_eq!(
            text.lines().nth(2).unwrap(),
            "a,b     10   1.50  true",
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        t.write_parquet(&p).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let batches: Vec<_> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .unwrap()
                .build()
                .unwrap()
                .collect();
        let b = batches[0].as_ref().unwrap();
        assert_eq!(
            (b.num_rows(), b.schema().field(1).data_type().clone()),
            (2, DataType::UInt64)
        );
    }
}
