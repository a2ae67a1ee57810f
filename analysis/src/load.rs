//! Opening result directories: every table of every directory is checked against the public
//! schema (`hetsim_sim::records`, the same column lists `docs/schema.md` is generated from) before
//! anything is computed, so a wrong file is reported by name instead of failing deep in a query.

use std::path::{Path, PathBuf};

use hetsim_sim::error::InputError;
use hetsim_sim::records::{
    Column, ColumnType, InstanceRecord, LinkRecord, RequestRecord, Row, SummaryRecord,
    TransferRecord,
};
use polars::prelude::*;

/// All result tables of all directories, one lazy frame per table. Each frame holds exactly the
/// schema's columns plus `run`: the directory the row came from, as the user wrote it.
#[derive(Clone)]
pub struct Results {
    pub summary: LazyFrame,
    pub requests: LazyFrame,
    pub transfers: LazyFrame,
    pub instances: LazyFrame,
    pub links: LazyFrame,
    /// The directories, in the order given.
    pub runs: Vec<String>,
}

const TABLES: [(&str, &[Column]); 5] = [
    (SummaryRecord::TABLE, SummaryRecord::COLUMNS),
    (RequestRecord::TABLE, RequestRecord::COLUMNS),
    (TransferRecord::TABLE, TransferRecord::COLUMNS),
    (InstanceRecord::TABLE, InstanceRecord::COLUMNS),
    (LinkRecord::TABLE, LinkRecord::COLUMNS),
];

/// Opens the result tables of `dirs` (each written by `hetsim run --out DIR` or the GPU harness).
pub fn load(dirs: &[PathBuf]) -> Result<Results, InputError> {
    if dirs.is_empty() {
        return Err(InputError::new(
            "no results directory given (the directory `hetsim run --out DIR` wrote)",
        ));
    }
    let mut seen: Vec<(PathBuf, &Path)> = Vec::new();
    let mut frames: [Vec<LazyFrame>; 5] = Default::default();
    for dir in dirs {
        let meta = std::fs::metadata(dir).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "no such directory".to_string()
            } else {
                e.to_string()
            };
            InputError::new(format!("{}: {why}", dir.display()))
        })?;
        if !meta.is_dir() {
            return Err(InputError::new(format!(
                "{}: not a directory (give the directory `hetsim run --out DIR` wrote)",
                dir.display()
            )));
        }
        // The same directory twice would count every run twice in pooled numbers.
        let canonical = dir
            .canonicalize()
            .map_err(|e| InputError::new(format!("{}: {e}", dir.display())))?;
        if let Some((_, first)) = seen.iter().find(|(c, _)| *c == canonical) {
            return Err(InputError::new(format!(
                "{}: given twice (also as {})",
                dir.display(),
                first.display()
            )));
        }
        seen.push((canonical, dir));
        let label = dir.display().to_string();
        for (i, (table, columns)) in TABLES.iter().enumerate() {
            frames[i].push(scan(dir, table, columns, &label)?);
        }
    }
    let [summary, requests, transfers, instances, links] =
        frames.map(|f| concat(f, UnionArgs::default()).expect("frames of one schema concatenate"));
    Ok(Results {
        summary,
        requests,
        transfers,
        instances,
        links,
        runs: dirs.iter().map(|d| d.display().to_string()).collect(),
    })
}

fn polars_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Utf8 => DataType::String,
        ColumnType::UInt64 => DataType::UInt64,
        ColumnType::Float64 => DataType::Float64,
    }
}

fn scan(dir: &Path, table: &str, columns: &[Column], label: &str) -> Result<LazyFrame, InputError> {
    let path = dir.join(format!("{table}.parquet"));
    if !path.is_file() {
        return Err(InputError::new(format!(
            "{}: no {table}.parquet (a results directory holds summary, requests, transfers, \
             instances and links.parquet, as `hetsim run --out DIR` writes them)",
            dir.display()
        )));
    }
    let unreadable = |e: PolarsError| {
        InputError::new(format!(
            "{}: not a readable parquet file: {e}",
            path.display()
        ))
    };
    let pl_path = PlRefPath::try_from_path(&path).map_err(unreadable)?;
    // No globbing: a directory name may hold `[` or `*`.
    let args = ScanArgsParquet {
        glob: false,
        ..Default::default()
    };
    let mut lf = LazyFrame::scan_parquet(pl_path, args).map_err(unreadable)?;
    let schema = lf.collect_schema().map_err(unreadable)?;
    for c in columns {
        let want = polars_type(c.ty);
        match schema.get(c.name) {
            None => {
                return Err(InputError::new(format!(
                    "{}: column `{}` is missing (not the {table} table of docs/schema.md)",
                    path.display(),
                    c.name
                )));
            }
            Some(got) if *got != want => {
                return Err(InputError::new(format!(
                    "{}: column `{}` is {got}, the schema says {want} (docs/schema.md)",
                    path.display(),
                    c.name
                )));
            }
            Some(_) => {}
        }
    }
    // Extra columns are dropped so that files of a newer writer still line up with older ones.
    let mut keep: Vec<Expr> = columns.iter().map(|c| col(c.name)).collect();
    keep.push(lit(label).alias("run"));
    Ok(lf.select(keep))
}
