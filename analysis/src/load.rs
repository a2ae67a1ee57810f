//! Opening result directories: every table of every directory is checked against the public
//! schema (`hetsim_sim::records`, the same column lists `docs/schema.md` is generated from) before
//! anything is computed, so a wrong file is reported by name instead of failing deep in a query.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hetsim_sim::error::InputError;
use hetsim_sim::publish::{Contents, MANIFEST, Manifest};
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
    /// Scenario names that meant different deployments in different directories, and what
    /// they were renamed to (see `disambiguate`).
    pub renamed: Vec<(String, Vec<String>)>,
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
        complete(dir)?;
        let label = dir.display().to_string();
        for (i, (table, columns)) in TABLES.iter().enumerate() {
            frames[i].push(scan(dir, table, columns, &label)?);
        }
    }
    let [summary, requests, transfers, instances, links] =
        frames.map(|f| concat(f, UnionArgs::default()).expect("frames of one schema concatenate"));
    disambiguate(Results {
        summary,
        requests,
        transfers,
        instances,
        links,
        runs: dirs.iter().map(|d| d.display().to_string()).collect(),
        renamed: Vec::new(),
    })
}

/// A directory is read only when its manifest (written last, `hetsim_sim::publish`) says it is
/// a complete set of result tables: a run killed half way leaves none to read.
fn complete(dir: &Path) -> Result<(), InputError> {
    let manifest = Manifest::read(dir, Contents::Results)?;
    for (table, _) in TABLES {
        let file = format!("{table}.parquet");
        if !manifest.files.iter().any(|f| f.name == file) {
            return Err(InputError::new(format!(
                "{}: does not list {file}: not a complete set of result tables",
                dir.join(MANIFEST).display()
            )));
        }
    }
    Ok(())
}

/// Two experiments may use the same scenario names for different deployments (pcie.yaml and
/// nvlink.yaml both have `a-colocated-4xA100[rate=4]`). Pooling them would be wrong, so where a
/// (scenario, source) has more than one deployment (strategy, model, GPUs, pricing, rate) across
/// directories, its rows are renamed `DIR/scenario` — DIR the directory's last path component,
/// `DIR1+DIR2` when repeats in several directories share a deployment. Names that agree are left
/// alone, so repeated runs still pool and sim rows still meet their exec rows.
fn disambiguate(mut r: Results) -> Result<Results, InputError> {
    let sig = ["strategy", "model", "gpus", "pricing", "rate_rps"];
    let mut cols = vec![col("run"), col("scenario"), col("source")];
    cols.extend(sig.iter().map(|c| col(*c).cast(DataType::String)));
    let df = r
        .summary
        .clone()
        .select(cols)
        .collect()
        .map_err(|e| InputError::new(format!("reading summary tables: {e}")))?;
    let text = |name: &str| -> Result<Vec<String>, InputError> {
        let c = df
            .column(name)
            .and_then(|c| c.cast(&DataType::String))
            .map_err(|e| InputError::new(format!("reading summary tables: {e}")))?;
        let c = c
            .str()
            .map_err(|e| InputError::new(format!("reading summary tables: {e}")))?;
        Ok(c.iter().map(|v| v.unwrap_or("null").to_string()).collect())
    };
    let (run, scenario, source) = (text("run")?, text("scenario")?, text("source")?);
    let sigs: Vec<Vec<String>> = sig.iter().map(|c| text(c)).collect::<Result<_, _>>()?;
    // The links a run's scenario shipped over are part of its deployment: experiments that
    // differ only in fabric (validate-nvlink, validate-pcie) must not pool.
    let reading = |e: PolarsError| InputError::new(format!("reading transfer tables: {e}"));
    let shipped = r
        .transfers
        .clone()
        .select([col("run"), col("scenario"), col("source"), col("link")])
        .unique(None, UniqueKeepStrategy::First)
        .collect()
        .map_err(reading)?;
    let mut links: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    {
        let t = |c: &str| crate::columns::texts(&shipped, c).map_err(reading);
        let (lr, ls, lo, ll) = (t("run")?, t("scenario")?, t("source")?, t("link")?);
        for i in 0..shipped.height() {
            links
                .entry((lr[i].clone(), ls[i].clone(), lo[i].clone()))
                .or_default()
                .insert(ll[i].clone());
        }
    }
    // (scenario, source) → deployment signature → runs holding it, all in first-seen order.
    type Groups = Vec<(Vec<String>, Vec<String>)>;
    let mut by_name: Vec<((String, String), Groups)> = Vec::new();
    for i in 0..df.height() {
        let key = (scenario[i].clone(), source[i].clone());
        let mut signature: Vec<String> = sigs.iter().map(|c| c[i].clone()).collect();
        signature.push(
            links
                .get(&(run[i].clone(), scenario[i].clone(), source[i].clone()))
                .map(|l| l.iter().cloned().collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
        );
        let at = match by_name.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                by_name.push((key, Vec::new()));
                by_name.len() - 1
            }
        };
        let groups = &mut by_name[at].1;
        match groups.iter_mut().find(|(s, _)| *s == signature) {
            Some((_, runs)) => runs.push(run[i].clone()),
            None => groups.push((signature, vec![run[i].clone()])),
        }
    }
    // Short directory names, unless two directories share one.
    let short = |run: &str| {
        std::path::Path::new(run)
            .file_name()
            .map_or(run.to_string(), |f| f.to_string_lossy().into_owned())
    };
    let shorts: Vec<String> = r.runs.iter().map(|d| short(d)).collect();
    let unique = (1..shorts.len()).all(|i| !shorts[..i].contains(&shorts[i]));
    let label = |run: &str| if unique { short(run) } else { run.to_string() };
    let (mut m_run, mut m_scenario, mut m_source, mut m_new) = (vec![], vec![], vec![], vec![]);
    for ((name, src), groups) in &by_name {
        if groups.len() < 2 {
            continue;
        }
        let mut names = Vec::new();
        for (_, runs) in groups {
            let labels: Vec<String> = runs.iter().map(|x| label(x)).collect();
            let new = format!("{}/{name}", labels.join("+"));
            for x in runs {
                m_run.push(x.clone());
                m_scenario.push(name.clone());
                m_source.push(src.clone());
                m_new.push(new.clone());
            }
            names.push(new);
        }
        r.renamed.push((format!("{name} ({src})"), names));
    }
    if m_run.is_empty() {
        return Ok(r);
    }
    let mapping = df!(
        "run" => m_run,
        "scenario" => m_scenario,
        "source" => m_source,
        "renamed" => m_new,
    )
    .map_err(|e| InputError::new(format!("renaming scenarios: {e}")))?
    .lazy();
    let keys = [col("run"), col("scenario"), col("source")];
    let rename = |lf: LazyFrame, columns: &[Column]| -> LazyFrame {
        let mut keep: Vec<Expr> = columns
            .iter()
            .map(|c| {
                if c.name == "scenario" {
                    when(col("renamed").is_not_null())
                        .then(col("renamed"))
                        .otherwise(col("scenario"))
                        .alias("scenario")
                } else {
                    col(c.name)
                }
            })
            .collect();
        keep.push(col("run"));
        lf.join(
            mapping.clone(),
            keys.clone(),
            keys.clone(),
            JoinArgs::new(JoinType::Left),
        )
        .select(keep)
    };
    r.summary = rename(r.summary, SummaryRecord::COLUMNS);
    r.requests = rename(r.requests, RequestRecord::COLUMNS);
    r.transfers = rename(r.transfers, TransferRecord::COLUMNS);
    r.instances = rename(r.instances, InstanceRecord::COLUMNS);
    r.links = rename(r.links, LinkRecord::COLUMNS);
    Ok(r)
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
