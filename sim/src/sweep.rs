//! `hetsim sweep`: a sweep file expands to scenarios in a fixed order (the cartesian product of
//! its axes over a base scenario); a stateless worker runs one shard of them and writes
//! hive-partitioned parquet that `merge` turns into one table (`docs/sweep.md`).
//!
//! Layout under `--out DIR`:
//!
//! ```text
//! DIR/sweep=<id>/sweep.json                        what the sweep is: scenarios, shards, axes
//! DIR/sweep=<id>/shard=<i>/part-<seq>.parquet      one row per scenario, written atomically
//! DIR/sweep=<id>/shard=<i>/manifest.json           the parts that count, with their scenarios' hashes
//! ```
//!
//! A part counts once the shard's manifest lists it, and the manifest is rewritten (atomically)
//! only after the part is on disk: a run killed at any moment leaves either a listed, complete
//! part or an unlisted file, which the next run of the shard removes before it starts. So a
//! re-run does exactly the scenarios not yet listed (resume after pre-emption), and the merged
//! table is the same however often shards were killed.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value as Tree;

use crate::engine::simulate;
use crate::error::{Error, InputError};
use crate::experiment::{check_scenario_tree, resolve_scenario_tree};
use crate::output::write_atomically;
use crate::profile::HardwareProfile;
use crate::publish::out_err;
use crate::records::{Cell, ColumnType, NullSink, Row, SummaryRecord};
use crate::table::{Kind, Table, Value};
use crate::work::{MAX_REQUESTS, MAX_SWEEP_SCENARIOS};

const SWEEP_FORMAT: &str = "hetsim-sweep/1";
const SHARD_FORMAT: &str = "hetsim-sweep-shard/1";
const SWEEP_FILE: &str = "sweep.json";
const MANIFEST: &str = "manifest.json";
/// Held (flock) by the process running a shard, so two runs of one shard never interleave.
const LOCK: &str = ".lock";

// ---- hashing ----

/// 64-bit FNV-1a (Fowler–Noll–Vo): stable across platforms, releases and builds, unlike std's
/// `DefaultHasher`, which promises neither.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's output function of the state `x` (one step from `x`): spreads a hash's bits so
/// that seeds of neighbouring scenarios are unrelated.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `tree` as compact JSON with every map's keys sorted: the same text for the same tree whatever
/// order the file wrote its keys in, and whatever serde_json's map type.
pub fn canonical_json(tree: &Tree) -> String {
    fn write(t: &Tree, out: &mut String) {
        match t {
            Tree::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Tree::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Tree::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(tree, &mut out);
    out
}

/// The content hash of one scenario: FNV-1a over its resolved fields (canonical JSON), this
/// binary's version and the sweep's seed, each followed by a zero byte.
pub fn scenario_hash(tree: &Tree, seed: u64) -> u64 {
    let text = format!(
        "{}\0{}\0{seed}\0",
        canonical_json(tree),
        env!("CARGO_PKG_VERSION")
    );
    fnv1a64(text.as_bytes())
}

// ---- the sweep file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    name: String,
    #[serde(default)]
    #[allow(dead_code)] // free text for the reader of the file
    description: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    profile: Option<PathBuf>,
    base: Tree,
    axes: Vec<AxisFields>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisFields {
    name: String,
    /// Dotted path of the field every value sets (`workload.arrival.rate`); absent when each
    /// value is a labelled patch.
    #[serde(default)]
    field: Option<String>,
    values: Vec<Tree>,
}

/// One value of an axis: what it sets, and what the table shows for it.
#[derive(Debug, Clone)]
struct Level {
    shown: Value,
    sets: Vec<(Vec<String>, Tree)>,
}

#[derive(Debug, Clone)]
struct Axis {
    name: String,
    kind: Kind,
    levels: Vec<Level>,
}

/// A validated sweep file.
pub struct Sweep {
    pub name: String,
    /// Content hash of the whole definition (hex): the `sweep=<id>` directory.
    pub id: String,
    pub seed: u64,
    pub scenarios: u64,
    file: String,
    base_dir: PathBuf,
    profile: Option<HardwareProfile>,
    base: Tree,
    axes: Vec<Axis>,
}

/// One point of the sweep: its place in the order, its fields, hash and derived seed.
pub struct Point {
    pub index: u64,
    pub tree: Tree,
    pub hash: u64,
    pub seed: u64,
    levels: Vec<usize>,
}

/// Sets `value` at `path` in `tree`, creating maps on the way; numeric segments index lists.
fn set_at(tree: &mut Tree, path: &[String], value: Tree) -> Result<(), String> {
    let Some((last, head)) = path.split_last() else {
        *tree = value;
        return Ok(());
    };
    let mut at = tree;
    for (depth, seg) in head.iter().enumerate() {
        at = step(at, seg, &path[..=depth])?;
    }
    match at {
        Tree::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Tree::Array(items) => {
            let n = items.len();
            let slot = last
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get_mut(i))
                .ok_or_else(|| {
                    format!(
                        "`{}` indexes a list of {n} entries: give 0 to {}",
                        path.join("."),
                        n.saturating_sub(1)
                    )
                })?;
            *slot = value;
            Ok(())
        }
        _ => Err(format!(
            "`{}` is not a map or list in the base, so `{last}` cannot be set in it",
            path[..path.len() - 1].join(".")
        )),
    }
}

fn step<'a>(at: &'a mut Tree, seg: &str, so_far: &[String]) -> Result<&'a mut Tree, String> {
    match at {
        Tree::Object(m) => Ok(m
            .entry(seg.to_string())
            .or_insert_with(|| Tree::Object(Default::default()))),
        Tree::Array(items) => {
            let n = items.len();
            seg.parse::<usize>()
                .ok()
                .and_then(|i| items.get_mut(i))
                .ok_or_else(|| {
                    format!(
                        "`{}` indexes a list of {n} entries: give 0 to {}",
                        so_far.join("."),
                        n.saturating_sub(1)
                    )
                })
        }
        _ => Err(format!(
            "`{}` is not a map or list in the base",
            so_far[..so_far.len() - 1].join(".")
        )),
    }
}

fn split_path(p: &str) -> Result<Vec<String>, String> {
    let segs: Vec<String> = p.split('.').map(str::to_string).collect();
    if segs.iter().any(String::is_empty) {
        return Err(format!(
            "field `{p}`: give a dotted path such as `workload.arrival.rate`"
        ));
    }
    Ok(segs)
}

/// The column names every sweep row has before its axes, and the summary's after them.
const FIXED_COLUMNS: [&str; 4] = ["index", "hash", "status", "reason"];

fn axis(i: usize, a: &AxisFields) -> Result<Axis, String> {
    let at = format!("axes[{i}] `{}`", a.name);
    if a.name.is_empty()
        || !a
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "axes[{i}].name `{}`: give letters, digits and `_` (it names the column `axis_{}`)",
            a.name, a.name
        ));
    }
    if a.values.is_empty() {
        return Err(format!("{at}: `values` is empty: give at least one"));
    }
    let mut levels = Vec::new();
    let kind = match &a.field {
        Some(field) => {
            let path = split_path(field).map_err(|e| format!("{at}: {e}"))?;
            let kind_of = |v: &Tree| match v {
                Tree::Number(_) => Some(Kind::F64),
                Tree::String(_) => Some(Kind::Str),
                Tree::Bool(_) => Some(Kind::Bool),
                _ => None,
            };
            let kind = kind_of(&a.values[0]);
            for (j, v) in a.values.iter().enumerate() {
                if kind_of(v).is_none() || kind_of(v) != kind {
                    return Err(format!(
                        "{at}: values[{j}] = {v}: the values of a `field` axis are all numbers, all \
                         strings or all booleans; to set blocks, give labelled values \
                         `{{label: …, set: {{field: value, …}}}}` and no `field`"
                    ));
                }
                let shown = match v {
                    Tree::Number(n) => Value::F64(n.as_f64().expect("a JSON number")),
                    Tree::String(s) => Value::Str(s.clone()),
                    Tree::Bool(b) => Value::Bool(*b),
                    _ => unreachable!("checked above"),
                };
                levels.push(Level {
                    shown,
                    sets: vec![(path.clone(), v.clone())],
                });
            }
            kind.expect("checked above")
        }
        None => {
            for (j, v) in a.values.iter().enumerate() {
                let bad = || {
                    format!(
                        "{at}: values[{j}]: an axis without `field` takes labelled values \
                         `{{label: NAME, set: {{dotted.field: value, …}}}}`"
                    )
                };
                let Tree::Object(m) = v else {
                    return Err(bad());
                };
                let (Some(Tree::String(label)), Some(Tree::Object(set)), 2) =
                    (m.get("label"), m.get("set"), m.len())
                else {
                    return Err(bad());
                };
                // An empty `set` is the base as written (one value of the axis usually is).
                let mut keys: Vec<&String> = set.keys().collect();
                keys.sort();
                let mut sets = Vec::new();
                for k in keys {
                    let path = split_path(k).map_err(|e| format!("{at}: values[{j}]: {e}"))?;
                    sets.push((path, set[k].clone()));
                }
                if levels
                    .iter()
                    .any(|l: &Level| l.shown == Value::Str(label.clone()))
                {
                    return Err(format!("{at}: label `{label}` is used twice"));
                }
                levels.push(Level {
                    shown: Value::Str(label.clone()),
                    sets,
                });
            }
            Kind::Str
        }
    };
    Ok(Axis {
        name: a.name.clone(),
        kind,
        levels,
    })
}

/// Reads and checks a sweep file. `seed` overrides the file's; `allow_large` lifts the limit on
/// the scenarios it expands to (`work::MAX_SWEEP_SCENARIOS`).
pub fn load_sweep(path: &Path, seed: Option<u64>, allow_large: bool) -> Result<Sweep, InputError> {
    let text = crate::input::read_text(path, "sweep")?;
    parse_sweep(&text, path, seed, allow_large)
}

pub fn parse_sweep(
    text: &str,
    path: &Path,
    seed: Option<u64>,
    allow_large: bool,
) -> Result<Sweep, InputError> {
    let file = path.display().to_string();
    let fail = |e: String| InputError::new(format!("{}: {e}", path.display()));
    let f: SweepFile = serde_saphyr::from_str(text)
        .map_err(|e| InputError::new(format!("{file}: invalid sweep: {e}")))?;
    if f.name.is_empty() {
        return Err(fail("`name` is empty: name the sweep".into()));
    }
    let Tree::Object(base_map) = &f.base else {
        return Err(fail(
            "`base` is a scenario's fields (model, cluster, deployment, workload, …) as a map"
                .into(),
        ));
    };
    if base_map.contains_key("name") {
        return Err(fail(
            "base.name: a sweep names its scenarios `<sweep name>#<index>`; remove it".into(),
        ));
    }
    if f.axes.is_empty() {
        return Err(fail(
            "`axes` is empty: give at least one (a sweep of one scenario is `hetsim run`)".into(),
        ));
    }
    let mut axes = Vec::new();
    for (i, a) in f.axes.iter().enumerate() {
        if axes.iter().any(|x: &Axis| x.name == a.name) {
            return Err(fail(format!("axes[{i}]: name `{}` is used twice", a.name)));
        }
        axes.push(axis(i, a).map_err(fail)?);
    }
    let scenarios = axes
        .iter()
        .try_fold(1u64, |n, a| n.checked_mul(a.levels.len() as u64))
        .ok_or_else(|| fail("the product of the axes passes 2⁶⁴ scenarios".into()))?;
    crate::work::within("scenarios", scenarios, MAX_SWEEP_SCENARIOS, allow_large)
        .map_err(|e| e.context(format!("{file}: the product of the axes")))?;
    let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let profile = match &f.profile {
        Some(p) => Some(
            HardwareProfile::load(&base_dir.join(p))
                .map_err(|e| e.context(format!("{file}: profile")))?,
        ),
        None => None,
    };
    let seed = seed.or(f.seed).unwrap_or(0);
    let definition = serde_json::json!({
        "name": f.name,
        "seed": seed,
        "profile": f.profile,
        "base": f.base,
        "axes": f.axes.iter().map(|a| serde_json::json!({"name": a.name, "field": a.field, "values": a.values})).collect::<Vec<_>>(),
    });
    let id = format!(
        "{:016x}",
        fnv1a64(
            format!(
                "{}\0{}\0",
                canonical_json(&definition),
                env!("CARGO_PKG_VERSION")
            )
            .as_bytes()
        )
    );
    let sweep = Sweep {
        name: f.name,
        id,
        seed,
        scenarios,
        file,
        base_dir,
        profile,
        base: f.base,
        axes,
    };
    // Every value of every axis, with the others at their first: what the file says has a
    // scenario's shape (field names and types). What a combination cannot be (a model that does
    // not fit a GPU) is that scenario's row, `rejected` with the reason.
    let first = sweep.tree(&vec![0; sweep.axes.len()]).map_err(&fail)?;
    check_scenario_tree(&first).map_err(|e| {
        fail(format!(
            "scenario 0 (the base with every axis at its first value): {e}"
        ))
    })?;
    for (ai, a) in sweep.axes.iter().enumerate() {
        for (li, l) in a.levels.iter().enumerate().skip(1) {
            let mut levels = vec![0; sweep.axes.len()];
            levels[ai] = li;
            let tree = sweep.tree(&levels).map_err(&fail)?;
            check_scenario_tree(&tree).map_err(|e| {
                fail(format!(
                    "axes[{ai}] `{}` value {}: {e}",
                    a.name,
                    shown_text(&l.shown)
                ))
            })?;
        }
    }
    Ok(sweep)
}

fn shown_text(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("`{s}`"),
        Value::F64(x) => x.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::U64(x) => x.to_string(),
        Value::Null => "null".into(),
    }
}

impl Sweep {
    fn tree(&self, levels: &[usize]) -> Result<Tree, String> {
        let mut tree = self.base.clone();
        for (a, &l) in self.axes.iter().zip(levels) {
            for (path, v) in &a.levels[l].sets {
                set_at(&mut tree, path, v.clone())
                    .map_err(|e| format!("axis `{}`: {e}", a.name))?;
            }
        }
        Ok(tree)
    }

    /// The scenario at `index` of the expansion order: axes in file order, the first varying
    /// slowest and the last fastest (nested loops, the first axis outermost).
    pub fn point(&self, index: u64) -> Result<Point, InputError> {
        assert!(index < self.scenarios, "an index of the sweep");
        let mut levels = vec![0; self.axes.len()];
        let mut rest = index;
        for (a, slot) in self.axes.iter().zip(levels.iter_mut()).rev() {
            let n = a.levels.len() as u64;
            *slot = (rest % n) as usize;
            rest /= n;
        }
        let tree = self
            .tree(&levels)
            .map_err(|e| InputError::new(format!("{}: {e}", self.file)))?;
        let hash = scenario_hash(&tree, self.seed);
        Ok(Point {
            index,
            tree,
            hash,
            seed: splitmix64(hash),
            levels,
        })
    }

    /// The table's columns and their types: index, hash, status, reason, one per axis, then the
    /// summary's (all nullable: a rejected scenario has none).
    pub fn columns(&self) -> (Vec<String>, Vec<Kind>) {
        let mut names: Vec<String> = FIXED_COLUMNS.iter().map(|c| c.to_string()).collect();
        let mut kinds = vec![Kind::U64, Kind::Str, Kind::Str, Kind::Str];
        for a in &self.axes {
            names.push(format!("axis_{}", a.name));
            kinds.push(a.kind);
        }
        for c in SummaryRecord::COLUMNS {
            names.push(c.name.to_string());
            kinds.push(match c.ty {
                ColumnType::Utf8 => Kind::Str,
                ColumnType::UInt64 => Kind::U64,
                ColumnType::Float64 => Kind::F64,
            });
        }
        (names, kinds)
    }

    /// Simulates one point: its row. A scenario the combination makes invalid is a row too,
    /// `rejected` with the reason; a failure that is not the input's is an error.
    pub fn evaluate(&self, p: &Point) -> Result<Vec<Value>, Error> {
        let name = format!("{}#{}", self.name, p.index);
        let resolved = resolve_scenario_tree(
            &p.tree,
            &name,
            &self.file,
            &self.base_dir,
            self.profile.as_ref(),
            p.seed,
        )
        .and_then(|s| crate::work::within("requests", s.requests, MAX_REQUESTS, false).map(|()| s));
        let summary = match resolved {
            Ok(s) => match simulate(&s, &mut NullSink, &mut |_| {}) {
                Ok(run) => Ok(run.summary),
                Err(Error::Input(e)) => Err(e),
                Err(e) => return Err(e),
            },
            Err(e) => Err(e),
        };
        let mut row = vec![Value::U64(p.index), Value::Str(format!("{:016x}", p.hash))];
        match &summary {
            Ok(_) => row.extend([Value::Str("simulated".into()), Value::Null]),
            Err(e) => row.extend([Value::Str("rejected".into()), Value::Str(e.to_string())]),
        }
        for (a, &l) in self.axes.iter().zip(&p.levels) {
            row.push(a.levels[l].shown.clone());
        }
        match &summary {
            Ok(s) => row.extend(s.cells().into_iter().map(|c| match c {
                Cell::Str(v) => v.map_or(Value::Null, |x| Value::Str(x.to_string())),
                Cell::U64(v) => v.map_or(Value::Null, Value::U64),
                Cell::F64(v) => v.map_or(Value::Null, Value::F64),
            })),
            Err(_) => row.extend(SummaryRecord::COLUMNS.iter().map(|_| Value::Null)),
        }
        Ok(row)
    }
}

// ---- shards ----

/// Shard `index` of `count`: the scenarios whose index is `index` modulo `count` (round robin, so
/// expensive regions of an axis spread over every shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// `I/N`, as `--shard` takes it.
    pub fn parse(text: &str) -> Result<Shard, InputError> {
        let bad = || {
            InputError::new(format!(
                "--shard `{text}`: give I/N with 0 ≤ I < N, e.g. 3/64"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u64>().map_err(|_| bad())?,
            n.trim().parse::<u64>().map_err(|_| bad())?,
        );
        Shard::new(index, count).map_err(|_| bad())
    }

    pub fn new(index: u64, count: u64) -> Result<Shard, InputError> {
        if count == 0 || index >= count {
            return Err(InputError::new(format!(
                "shard {index} of {count}: give 0 ≤ index < count"
            )));
        }
        Ok(Shard { index, count })
    }

    /// The shard from the environment of a job array: Slurm's `SLURM_ARRAY_TASK_ID` (less
    /// `SLURM_ARRAY_TASK_MIN`: `--array=1-64` starts at 1) of `SLURM_ARRAY_TASK_COUNT`, or a
    /// Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` of `count` (the Job's `completions`,
    /// which Kubernetes does not put in the environment). None outside a job array.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        count: Option<u64>,
    ) -> Result<Option<(Shard, &'static str)>, InputError> {
        let num = |var: &str| -> Result<Option<u64>, InputError> {
            env(var)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        InputError::new(format!("{var}=`{v}`: expected a whole number"))
                    })
                })
                .transpose()
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let need = |var: &str| {
                num(var)?.ok_or_else(|| {
                    InputError::new(format!(
                        "SLURM_ARRAY_TASK_ID is set but {var} is not: run under Slurm 17.11 or later"
                    ))
                })
            };
            let min = need("SLURM_ARRAY_TASK_MIN")?;
            let tasks = need("SLURM_ARRAY_TASK_COUNT")?;
            let max = need("SLURM_ARRAY_TASK_MAX")?;
            // Task IDs ID - MIN must be 0..COUNT: a contiguous array with step 1.
            if num("SLURM_ARRAY_TASK_STEP")?.is_some_and(|s| s != 1) || max - min + 1 != tasks {
                return Err(InputError::new(format!(
                    "the Slurm array runs tasks {min}..={max} as {tasks} tasks: give a contiguous \
                     range such as --array=0-{} (no step, no list), so each task is one shard",
                    tasks.saturating_sub(1)
                )));
            }
            if let Some(c) = count
                && c != tasks
            {
                return Err(InputError::new(format!(
                    "--shards {c} but the Slurm array has {tasks} tasks: leave --shards out under Slurm"
                )));
            }
            return Ok(Some((Shard::new(id - min, tasks)?, "Slurm job array")));
        }
        if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            let n = count.ok_or_else(|| {
                InputError::new(
                    "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): give --shards N, the Job's `completions`",
                )
            })?;
            return Ok(Some((
                Shard::new(i, n).map_err(|e| e.context("JOB_COMPLETION_INDEX and --shards"))?,
                "Kubernetes Indexed Job",
            )));
        }
        Ok(None)
    }

    /// How many of `scenarios` this shard runs.
    pub fn len(self, scenarios: u64) -> u64 {
        scenarios.saturating_sub(self.index).div_ceil(self.count)
    }

    pub fn indices(self, scenarios: u64) -> impl Iterator<Item = u64> {
        (self.index..scenarios).step_by(self.count as usize)
    }
}

/// `sweep.json`: the sweep every shard of the directory belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepRecord {
    format: String,
    hetsim: String,
    name: String,
    id: String,
    seed: u64,
    scenarios: u64,
    shards: u64,
    axes: Vec<String>,
}

/// A shard's `manifest.json`: the parts that count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardManifest {
    format: String,
    hetsim: String,
    sweep: String,
    shard: u64,
    shards: u64,
    /// Scenarios this shard runs.
    assigned: u64,
    parts: Vec<PartRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartRecord {
    name: String,
    rows: u64,
    /// The scenarios in the part, in row order: their indices and content hashes (hex).
    indices: Vec<u64>,
    hashes: Vec<String>,
}

impl ShardManifest {
    fn done(&self) -> u64 {
        self.parts.iter().map(|p| p.rows).sum()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    what: &str,
) -> Result<Option<T>, InputError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let text = crate::input::read_text(path, what)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| InputError::new(format!("{}: not a hetsim {what}: {e}", path.display())))
}

fn to_json(v: &impl Serialize) -> String {
    serde_json::to_string_pretty(v).expect("plain records serialise") + "\n"
}

fn sweep_dir(out: &Path, id: &str) -> PathBuf {
    out.join(format!("sweep={id}"))
}

fn shard_dir(sweep_dir: &Path, shard: u64) -> PathBuf {
    sweep_dir.join(format!("shard={shard}"))
}

/// What one run of a shard did.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRun {
    pub shard: Shard,
    pub assigned: u64,
    /// Done by earlier runs (listed in the manifest) and skipped.
    pub skipped: u64,
    pub simulated: u64,
    pub rejected: u64,
    pub dir: PathBuf,
}

/// Runs the scenarios of `shard` not yet done, `part_size` at a time (each part written, then
/// listed), on `threads` threads. `progress` hears after each part (done, assigned).
pub fn run_shard(
    sweep: &Sweep,
    out: &Path,
    shard: Shard,
    part_size: usize,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ShardRun, Error> {
    assert!(part_size > 0 && threads > 0, "checked by the caller");
    let sweep_dir = sweep_dir(out, &sweep.id);
    let dir = shard_dir(&sweep_dir, shard.index);
    std::fs::create_dir_all(&dir).map_err(|e| out_err(&dir, e))?;
    let record = SweepRecord {
        format: SWEEP_FORMAT.into(),
        hetsim: env!("CARGO_PKG_VERSION").into(),
        name: sweep.name.clone(),
        id: sweep.id.clone(),
        seed: sweep.seed,
        scenarios: sweep.scenarios,
        shards: shard.count,
        axes: sweep.axes.iter().map(|a| a.name.clone()).collect(),
    };
    let record_path = sweep_dir.join(SWEEP_FILE);
    match read_json::<SweepRecord>(&record_path, "sweep record")? {
        Some(r) if r.shards != shard.count => {
            return Err(InputError::new(format!(
                "{}: this sweep was started as {} shards; run it as {} shards too (or into another --out)",
                record_path.display(),
                r.shards,
                r.shards
            ))
            .into());
        }
        Some(r) if r != record => {
            return Err(InputError::new(format!(
                "{}: written by another sweep or hetsim version ({r:?})",
                record_path.display()
            ))
            .into());
        }
        Some(_) => {}
        // Every shard writes the same bytes; whichever rename lands last, the file is whole.
        None => write_atomically(&record_path, to_json(&record))?,
    }
    let lock_path = dir.join(LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| out_err(&lock_path, e))?;
    if lock.try_lock().is_err() {
        return Err(InputError::new(format!(
            "{}: shard {} of sweep `{}` is being run by another process; wait for it or stop it",
            dir.display(),
            shard.index,
            sweep.name
        ))
        .into());
    }
    let manifest_path = dir.join(MANIFEST);
    let mut manifest =
        read_json::<ShardManifest>(&manifest_path, "shard manifest")?.unwrap_or(ShardManifest {
            format: SHARD_FORMAT.into(),
            hetsim: env!("CARGO_PKG_VERSION").into(),
            sweep: sweep.id.clone(),
            shard: shard.index,
            shards: shard.count,
            assigned: shard.len(sweep.scenarios),
            parts: Vec::new(),
        });
    if manifest.format != SHARD_FORMAT
        || manifest.sweep != sweep.id
        || manifest.shard != shard.index
    {
        return Err(InputError::new(format!(
            "{}: a manifest of another sweep or shard",
            manifest_path.display()
        ))
        .into());
    }
    // Under the lock nothing else writes here: whatever the manifest does not list is what a
    // killed run left (a part written but not yet listed, a temporary file), and is redone.
    let listed: BTreeSet<String> = manifest.parts.iter().map(|p| p.name.clone()).collect();
    for entry in std::fs::read_dir(&dir).map_err(|e| out_err(&dir, e))? {
        let entry = entry.map_err(|e| out_err(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != MANIFEST && name != LOCK && !listed.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(|e| out_err(&entry.path(), e))?;
        }
    }
    // Done: its index listed with its hash. By index, because two axis values can make the same
    // scenario (same hash) at two indices; and by hash, so a listed row is of this scenario.
    let done: BTreeSet<(u64, &str)> = manifest
        .parts
        .iter()
        .flat_map(|p| {
            p.indices
                .iter()
                .copied()
                .zip(p.hashes.iter().map(String::as_str))
        })
        .collect();
    let mut todo = Vec::new();
    for i in shard.indices(sweep.scenarios) {
        let p = sweep.point(i)?;
        if !done.contains(&(i, format!("{:016x}", p.hash).as_str())) {
            todo.push(p);
        }
    }
    drop(done);
    let skipped = manifest.assigned - todo.len() as u64;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Internal(format!("cannot start {threads} threads: {e}")))?;
    let (columns, kinds) = sweep.columns();
    let mut run = ShardRun {
        shard,
        assigned: manifest.assigned,
        skipped,
        simulated: 0,
        rejected: 0,
        dir: dir.clone(),
    };
    let mut next_part = manifest.parts.len();
    for chunk in todo.chunks(part_size) {
        let rows: Vec<Vec<Value>> = pool.install(|| {
            chunk
                .par_iter()
                .map(|p| sweep.evaluate(p))
                .collect::<Result<_, Error>>()
        })?;
        for r in &rows {
            if r[2] == Value::Str("rejected".into()) {
                run.rejected += 1;
            } else {
                run.simulated += 1;
            }
        }
        let name = loop {
            let n = format!("part-{next_part:05}.parquet");
            next_part += 1;
            if !listed.contains(&n) {
                break n;
            }
        };
        let table = Table {
            columns: columns.clone(),
            rows,
        };
        table.write_parquet_as(&dir.join(&name), &kinds)?;
        manifest.parts.push(PartRecord {
            name,
            rows: chunk.len() as u64,
            indices: chunk.iter().map(|p| p.index).collect(),
            hashes: chunk.iter().map(|p| format!("{:016x}", p.hash)).collect(),
        });
        write_atomically(&manifest_path, to_json(&manifest))?;
        progress(manifest.done(), manifest.assigned);
    }
    if todo.is_empty() {
        // Still say the shard is complete when it was so already.
        progress(manifest.done(), manifest.assigned);
    }
    drop(lock);
    Ok(run)
}

// ---- status and merge ----

/// Where each shard of a sweep directory stands.
pub struct Status {
    pub name: String,
    pub id: String,
    pub scenarios: u64,
    pub shards: Vec<ShardStatus>,
}

pub struct ShardStatus {
    pub index: u64,
    pub assigned: u64,
    pub done: u64,
    pub parts: usize,
}

impl Status {
    pub fn done(&self) -> u64 {
        self.shards.iter().map(|s| s.done).sum()
    }

    /// Shards with scenarios not done, as ranges (`3, 17-19`).
    pub fn missing(&self) -> String {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for s in self.shards.iter().filter(|s| s.done < s.assigned) {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == s.index => *end = s.index,
                _ => ranges.push((s.index, s.index)),
            }
        }
        ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn table(&self) -> Table {
        let mut t = Table::new(&["shard", "assigned", "done", "parts", "state"]);
        for s in &self.shards {
            t.push(vec![
                Value::U64(s.index),
                Value::U64(s.assigned),
                Value::U64(s.done),
                Value::U64(s.parts as u64),
                Value::Str(
                    match (s.done, s.parts) {
                        (_, 0) if s.assigned > 0 => "not started",
                        (d, _) if d == s.assigned => "complete",
                        _ => "partial",
                    }
                    .into(),
                ),
            ]);
        }
        t
    }
}

/// The one `sweep=<id>` directory under `out` (or the one named `id`).
fn find_sweep(out: &Path, id: Option<&str>) -> Result<PathBuf, InputError> {
    let entries = std::fs::read_dir(out).map_err(|e| {
        InputError::new(format!(
            "cannot read sweep directory {}: {e}",
            out.display()
        ))
    })?;
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("sweep=")
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    match (id, ids.as_slice()) {
        (Some(want), _) if ids.iter().any(|i| i == want) => Ok(sweep_dir(out, want)),
        (Some(want), _) => {
            Err(
                crate::error::unknown_name("sweep", want, ids.iter().map(String::as_str))
                    .context(out.display()),
            )
        }
        (None, [one]) => Ok(sweep_dir(out, one)),
        (None, []) => Err(InputError::new(format!(
            "{}: no sweep=<id> directory: not the --out of `hetsim sweep`",
            out.display()
        ))),
        (None, many) => Err(InputError::new(format!(
            "{}: holds {} sweeps ({}): pick one with --sweep ID",
            out.display(),
            many.len(),
            many.join(", ")
        ))),
    }
}

fn read_record(dir: &Path) -> Result<SweepRecord, InputError> {
    let path = dir.join(SWEEP_FILE);
    let r: SweepRecord = read_json(&path, "sweep record")?.ok_or_else(|| {
        InputError::new(format!(
            "{}: missing: not a sweep directory",
            path.display()
        ))
    })?;
    if r.format != SWEEP_FORMAT {
        return Err(InputError::new(format!(
            "{}: format `{}`, expected `{SWEEP_FORMAT}`",
            path.display(),
            r.format
        )));
    }
    Ok(r)
}

fn read_manifests(
    dir: &Path,
    r: &SweepRecord,
) -> Result<Vec<(Shard, Option<ShardManifest>)>, InputError> {
    (0..r.shards)
        .map(|i| {
            let shard = Shard::new(i, r.shards)?;
            let m =
                read_json::<ShardManifest>(&shard_dir(dir, i).join(MANIFEST), "shard manifest")?;
            Ok((shard, m))
        })
        .collect()
}

pub fn status(out: &Path, id: Option<&str>) -> Result<Status, InputError> {
    let dir = find_sweep(out, id)?;
    let r = read_record(&dir)?;
    let shards = read_manifests(&dir, &r)?
        .into_iter()
        .map(|(shard, m)| ShardStatus {
            index: shard.index,
            assigned: shard.len(r.scenarios),
            done: m.as_ref().map_or(0, ShardManifest::done),
            parts: m.as_ref().map_or(0, |m| m.parts.len()),
        })
        .collect();
    Ok(Status {
        name: r.name,
        id: r.id,
        scenarios: r.scenarios,
        shards,
    })
}

/// Every listed part of every shard, in scenario order, as one table written to `to`. Refuses
/// a sweep with scenarios not done (naming the shards), so a merged table is always whole.
pub fn merge(out: &Path, id: Option<&str>, to: &Path) -> Result<u64, Error> {
    let dir = find_sweep(out, id)?;
    let r = read_record(&dir)?;
    let st = status(out, Some(&r.id))?;
    if st.done() < r.scenarios {
        return Err(InputError::new(format!(
            "{}: {} of {} scenarios done; shards not complete: {} (run them again: they resume; \
             `hetsim sweep status` lists them)",
            dir.display(),
            st.done(),
            r.scenarios,
            st.missing()
        ))
        .into());
    }
    let mut merged: Option<(Table, Vec<Kind>)> = None;
    for (shard, m) in read_manifests(&dir, &r)? {
        let Some(m) = m else { continue };
        for p in &m.parts {
            let path = shard_dir(&dir, shard.index).join(&p.name);
            let (t, kinds) = Table::read_parquet(&path)?;
            if t.rows.len() as u64 != p.rows {
                return Err(InputError::new(format!(
                    "{}: {} rows, the manifest lists {}",
                    path.display(),
                    t.rows.len(),
                    p.rows
                ))
                .into());
            }
            match merged.as_mut() {
                None => merged = Some((t, kinds)),
                Some((all, k)) if all.columns == t.columns && *k == kinds => {
                    all.rows.extend(t.rows)
                }
                Some(_) => {
                    return Err(InputError::new(format!(
                        "{}: its columns differ from the sweep's other parts",
                        path.display()
                    ))
                    .into());
                }
            }
        }
    }
    let (mut table, kinds) = merged.expect("a sweep has at least one scenario");
    let index = |row: &Vec<Value>| match row[0] {
        Value::U64(i) => i,
        _ => u64::MAX,
    };
    table.rows.sort_by_key(index);
    for (expect, row) in table.rows.iter().enumerate() {
        if index(row) != expect as u64 {
            return Err(InputError::new(format!(
                "{}: scenario {expect} is {} in the parts (each must be there once)",
                dir.display(),
                if index(row) > expect as u64 {
                    "missing"
                } else {
                    "repeated"
                }
            ))
            .into());
        }
    }
    table.write_parquet_as(to, &kinds)?;
    Ok(table.rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two deployments × three rates × two output lengths of a small LLaVA workload.
    pub(crate) const SMALL: &str = r#"
name: small
seed: 7
base:
  model: llava-1.5-7b
  workload:
    requests: 20
    arrival: {process: poisson, rate: 4}
    images: {count: 1, width: 640, height: 480}
    prompt_tokens: {dist: uniform, min: 15, max: 25}
    output_tokens: 32
  slo: {ttft_s: 1.0, tpot_s: 0.1}
  pricing: {mode: capex, gpu_price_usd: {A100-PCIe-80GB: 16000, RTX-4090: 3000}}
  cluster:
    nodes: [{name: box, gpus: [{gpu: A100-PCIe-80GB, count: 2}], fabric: pcie4}]
  deployment:
    strategy: colocated
    instances: [{role: all, gpu: A100-PCIe-80GB, count: 2}]
axes:
  - name: deployment
    values:
      - {label: colocated, set: {}}
      - label: stage
        set:
          deployment.strategy: stage
          deployment.instances:
            - {role: prefill, gpu: A100-PCIe-80GB, count: 1}
            - {role: decode, gpu: A100-PCIe-80GB, count: 1}
  - {name: rate, field: workload.arrival.rate, values: [2, 4, 8]}
  - {name: output_tokens, field: workload.output_tokens, values: [16, 32]}
"#;

    fn small() -> Sweep {
        parse_sweep(SMALL, Path::new("small.yaml"), None, false).unwrap()
    }

    #[test]
    fn fnv1a_and_splitmix_match_their_published_test_vectors() {
        // FNV-1a 64 test vectors (Noll's reference list); SplitMix64 from state 0 (Vigna's
        // reference implementation's first output).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn the_canonical_form_sorts_keys_at_every_depth() {
        let a: Tree =
            serde_json::from_str(r#"{"b": 1, "a": [true, null, {"y": 2.5, "x": "s"}]}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":[true,null,{"x":"s","y":2.5}],"b":1}"#
        );
        let b: Tree =
            serde_json::from_str(r#"{"a": [true, null, {"x": "s", "y": 2.5}], "b": 1}"#).unwrap();
        assert_eq!(scenario_hash(&a, 3), scenario_hash(&b, 3));
        assert_ne!(
            scenario_hash(&a, 3),
            scenario_hash(&a, 4),
            "the seed is hashed"
        );
    }

    #[test]
    fn the_first_axis_varies_slowest_and_the_last_fastest() {
        let s = small();
        assert_eq!(s.scenarios, 12);
        let levels: Vec<Vec<usize>> = (0..12).map(|i| s.point(i).unwrap().levels).collect();
        assert_eq!(levels[0], [0, 0, 0]);
        assert_eq!(levels[1], [0, 0, 1]);
        assert_eq!(levels[2], [0, 1, 0]);
        assert_eq!(levels[6], [1, 0, 0]);
        assert_eq!(levels[11], [1, 2, 1]);
        let p = s.point(9).unwrap(); // stage, rate 4, 32 tokens
        assert_eq!(p.tree["deployment"]["strategy"], "stage");
        assert_eq!(p.tree["workload"]["arrival"]["rate"], 4);
        assert_eq!(p.tree["workload"]["output_tokens"], 32);
        assert_eq!(p.seed, splitmix64(p.hash));
        let hashes: BTreeSet<u64> = (0..12).map(|i| s.point(i).unwrap().hash).collect();
        assert_eq!(hashes.len(), 12, "every scenario its own hash");
        // Key order in the file does not change a hash; another seed changes all of them.
        let reordered = SMALL.replace(
            "  slo: {ttft_s: 1.0, tpot_s: 0.1}",
            "  slo: {tpot_s: 0.1, ttft_s: 1.0}",
        );
        let r = parse_sweep(&reordered, Path::new("small.yaml"), None, false).unwrap();
        assert_eq!(r.point(5).unwrap().hash, s.point(5).unwrap().hash);
        let other = parse_sweep(SMALL, Path::new("small.yaml"), Some(8), false).unwrap();
        assert_ne!(other.point(5).unwrap().hash, s.point(5).unwrap().hash);
        assert_ne!(other.id, s.id);
    }

    #[test]
    fn shards_split_the_scenarios_evenly_and_once() {
        for (n, count) in [(12u64, 5u64), (100_000, 64), (3, 4)] {
            let mut seen = Vec::new();
            for i in 0..count {
                let sh = Shard::new(i, count).unwrap();
                let mine: Vec<u64> = sh.indices(n).collect();
                assert_eq!(mine.len() as u64, sh.len(n));
                assert!(mine.len() as u64 <= n.div_ceil(count));
                seen.extend(mine);
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(
            Shard::parse("3/64").unwrap(),
            Shard {
                index: 3,
                count: 64
            }
        );
        for bad in ["64/64", "1/0", "x/4", "3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shard_comes_from_slurm_or_an_indexed_job() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "64"),
            ("SLURM_ARRAY_TASK_COUNT", "64"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ]);
        let (s, _) = Shard::from_env(&slurm, None).unwrap().unwrap();
        assert_eq!(
            s,
            Shard {
                index: 4,
                count: 64
            }
        );
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        let e = Shard::from_env(&stepped, None).unwrap_err().to_string();
        assert!(e.contains("contiguous range"), "{e}");
        let k8s = env(&[("JOB_COMPLETION_INDEX", "7")]);
        let e = Shard::from_env(&k8s, None).unwrap_err().to_string();
        assert!(e.contains("--shards N"), "{e}");
        let (s, _) = Shard::from_env(&k8s, Some(8)).unwrap().unwrap();
        assert_eq!(s, Shard { index: 7, count: 8 });
        assert!(Shard::from_env(&k8s, Some(7)).is_err());
        assert!(Shard::from_env(&env(&[]), None).unwrap().is_none());
    }

    fn run(s: &Sweep, out: &Path, shard: Shard, part: usize) -> ShardRun {
        run_shard(s, out, shard, part, 2, &mut |_, _| {}).unwrap()
    }

    #[test]
    fn shards_merge_to_the_single_process_table_and_resume_after_a_kill() {
        let s = small();
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one");
        assert_eq!(run(&s, &one, Shard::new(0, 1).unwrap(), 5).simulated, 12);
        merge(&one, None, &dir.path().join("one.parquet")).unwrap();

        let many = dir.path().join("many");
        for i in [0, 2] {
            run(&s, &many, Shard::new(i, 3).unwrap(), 2);
        }
        let st = status(&many, None).unwrap();
        assert_eq!((st.done(), st.missing()), (8, "1".to_string()));
        let e = merge(&many, None, &dir.path().join("x.parquet")).unwrap_err();
        assert!(e.to_string().contains("shards not complete: 1"), "{e}");
        // Shard 1 killed after its first part: listed part kept, an unlisted part and a
        // temporary file left behind.
        let sh1 = Shard::new(1, 3).unwrap();
        let first = run_shard(&s, &many, sh1, 2, 2, &mut |_, _| {}).unwrap();
        assert_eq!(first.simulated, 4);
        let d = first.dir.clone();
        let mut m: ShardManifest =
            serde_json::from_str(&std::fs::read_to_string(d.join(MANIFEST)).unwrap()).unwrap();
        m.parts.truncate(1);
        std::fs::write(d.join(MANIFEST), to_json(&m)).unwrap();
        std::fs::write(d.join(".part-00001.parquet.tmp-99"), b"half").unwrap();
        let again = run(&s, &many, sh1, 2);
        assert_eq!((again.skipped, again.simulated), (2, 2));
        assert_eq!(
            run(&s, &many, sh1, 2).skipped,
            4,
            "a complete shard reruns nothing"
        );
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".lock",
                "manifest.json",
                "part-00000.parquet",
                "part-00001.parquet"
            ]
        );
        merge(&many, None, &dir.path().join("many.parquet")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("one.parquet")).unwrap(),
            std::fs::read(dir.path().join("many.parquet")).unwrap(),
            "byte for byte"
        );
        let (t, _) = Table::read_parquet(&dir.path().join("many.parquet")).unwrap();
        let col = |n: &str| t.columns.iter().position(|c| c == n).unwrap();
        assert_eq!(
            t.rows[9][col("axis_deployment")],
            Value::Str("stage".into())
        );
        assert_eq!(t.rows[9][col("axis_rate")], Value::F64(4.0));
        assert_eq!(t.rows[9][col("strategy")], Value::Str("stage".into()));
        assert_eq!(t.rows[9][col("status")], Value::Str("simulated".into()));

        let e = run_shard(&s, &many, Shard::new(0, 4).unwrap(), 2, 1, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("started as 3 shards"), "{e}");
    }

    #[test]
    fn two_indices_of_one_scenario_resume_each_by_its_index() {
        // The third rate repeats the first: indices 0 and 4 are the same scenario.
        let text = SMALL.replace("values: [2, 4, 8]", "values: [2, 4, 2]");
        let s = parse_sweep(&text, Path::new("small.yaml"), None, false).unwrap();
        assert_eq!(s.point(0).unwrap().hash, s.point(4).unwrap().hash);
        let dir = tempfile::tempdir().unwrap();
        let sh = Shard::new(0, 1).unwrap();
        let first = run(&s, dir.path(), sh, 1);
        let mut m: ShardManifest =
            serde_json::from_str(&std::fs::read_to_string(first.dir.join(MANIFEST)).unwrap())
                .unwrap();
        m.parts.truncate(1); // killed after index 0
        std::fs::write(first.dir.join(MANIFEST), to_json(&m)).unwrap();
        assert_eq!(run(&s, dir.path(), sh, 1).skipped, 1);
        merge(dir.path(), None, &dir.path().join("t.parquet")).unwrap();
    }

    #[test]
    fn a_combination_that_cannot_be_is_a_rejected_row_with_the_reason() {
        // 16 KV-cache-hungry sequences of a 7B model do not fit an RTX 4090 with 2 GiB left.
        let text = SMALL.replace(
            "  - {name: rate, field: workload.arrival.rate, values: [2, 4, 8]}",
            "  - {name: memory, field: engine.memory_utilization, values: [0.9, 0.01]}",
        );
        let s = parse_sweep(&text, Path::new("small.yaml"), None, false).unwrap();
        let row = s.evaluate(&s.point(2).unwrap()).unwrap();
        assert_eq!(row[2], Value::Str("rejected".into()));
        let Value::Str(reason) = &row[3] else {
            panic!("{row:?}")
        };
        assert!(reason.contains("small.yaml"), "{reason}");
        assert!(row[7..].iter().all(|v| *v == Value::Null));
    }

    #[test]
    fn bad_sweep_files_say_what_is_wrong() {
        let bad = |from: &str, to: &str| {
            let text = SMALL.replace(from, to);
            assert_ne!(text, SMALL, "{from}");
            parse_sweep(&text, Path::new("small.yaml"), None, false)
                .err()
                .unwrap_or_else(|| panic!("{to} accepted"))
                .to_string()
        };
        let e = bad("values: [2, 4, 8]", "values: [2, fast, 8]");
        assert!(e.contains("all numbers, all strings"), "{e}");
        let e = bad("values: [2, 4, 8]", "values: []");
        assert!(e.contains("`values` is empty"), "{e}");
        let e = bad(
            "field: workload.output_tokens",
            "field: workload.output_tokenz",
        );
        assert!(
            e.contains("scenario 0") && e.contains("unknown field `output_tokenz`"),
            "{e}"
        );
        let e = bad(
            "field: workload.output_tokens, values: [16, 32]",
            "field: workload.requests, values: [16, 2.5]",
        );
        assert!(e.contains("axes[2] `output_tokens` value 2.5"), "{e}");
        let e = bad("field: workload.arrival.rate", "field: model.rate");
        assert!(e.contains("`model` is not a map or list"), "{e}");
        let e = bad(
            "deployment.strategy: stage",
            "deployment.instances.5.gpu: x",
        );
        assert!(e.contains("indexes a list of 2 entries"), "{e}");
        let e = bad("name: output_tokens", "name: rate");
        assert!(e.contains("used twice"), "{e}");
        let e = bad("name: small\n", "name: small\nbase2: {}\n");
        assert!(e.contains("invalid sweep"), "{e}");
    }
}
