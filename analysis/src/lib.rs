//! `hetsim analyze`: polars (lazy) over the result parquet of one or many `hetsim run` (or GPU
//! harness) directories — comparison tables in the terminal, markdown and CSV, and figures as SVG
//! and PNG. It reads result files only; it knows the schema (`hetsim_sim::records`), not the
//! engine.
//!
//! Modules: `load` (open and check the tables), `metrics` (the pooled polars queries), `tables`
//! (comparison, curves, transfers, links, cost), `compare` (predicted against measured),
//! `figures` + `plots` (what to draw, and drawing it), `table` (rendering), `html` (the
//! interactive report of `--html`, from the same tables and figures), `write` (output).

mod columns;
pub mod compare;
pub mod figures;
pub mod html;
pub mod load;
pub mod metrics;
pub mod plots;
mod png;
pub mod table;
pub mod tables;
mod write;

use std::path::{Path, PathBuf};

use hetsim_sim::error::{Error, InputError};

use crate::table::{Show, Table, Value};

pub use polars;

/// What `analyze` produced.
pub struct Report {
    /// The terminal view: comparison, transfers, and the validation summary when exec rows exist.
    pub text: String,
    /// Every table, in the order written.
    pub tables: Vec<Table>,
    /// Files written (markdown, CSV, SVG, PNG, and report.html with `html`).
    pub files: Vec<PathBuf>,
    /// The directory they are in.
    pub out: PathBuf,
}

/// The default output directory: `analysis/` inside the first results directory.
pub fn default_out(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.first().map(|d| d.join("analysis"))
}

/// Reads the result directories, computes every table and figure, writes them to `out` (default:
/// `RESULTS_DIR/analysis`), with `html` also one self-contained interactive `report.html`, and
/// returns what to print. Bad input is `Error::Input` (exit code 2) and nothing is written; a
/// failed write is `Error::Output`.
pub fn analyze(dirs: &[PathBuf], out: Option<&Path>, html: bool) -> Result<Report, Error> {
    let results = load::load(dirs)?;
    let scenarios = metrics::scenarios(&results)?;
    if scenarios.is_empty() {
        return Err(InputError::new(format!(
            "{}: the summary tables hold no scenario",
            results.runs.join(", ")
        ))
        .into());
    }
    let per = tables::per_scenario(&results, &scenarios)?;
    let points = tables::curve_points(&results, &scenarios)?;
    let cost_rows = tables::cost_rows(&results, &scenarios, &per)?;

    let comparison = tables::comparison(&scenarios, &per);
    let transfers = tables::transfers(&results, &scenarios, &per)?;
    let mut out_tables = vec![comparison];
    if !points.is_empty() {
        out_tables.push(tables::curves(&points));
    }
    out_tables.push(transfers);
    out_tables.push(tables::links(&results, &scenarios)?);
    out_tables.push(tables::cost(&cost_rows));

    let mut figs = figures::Figures::default();
    figures::latency_throughput(&points, &scenarios, &mut figs);
    figures::against_rate(&points, &mut figs);
    let traces = tables::trace_latencies(&results, &scenarios)?;
    figures::trace_latency(&traces, &scenarios, &mut figs);
    figures::transfer_bytes(&scenarios, &per, &mut figs);
    figures::cost_breakdown(&cost_rows, &per, &mut figs);

    let has_exec = scenarios.iter().any(|s| s.source == compare::EXEC);
    let pairs = compare::scenario_pairs(&scenarios, &per);
    let mut notes = String::new();
    if has_exec && pairs.is_empty() {
        notes.push_str(
            "note: exec rows are present but no scenario has both sim and exec rows: \
             nothing to compare (give the simulator's results directory too)\n\n",
        );
    }
    if !pairs.is_empty() {
        out_tables.push(compare::scenario_table(&pairs));
        out_tables.push(compare::request_table(&results, &scenarios)?);
        out_tables.push(summarise_validation(&pairs, &scenarios));
        figures::predicted_measured(&pairs, &mut figs);
    }

    let mut text = notes;
    if let Some((first, _)) = results.renamed.first() {
        // One line, however many names: which, and under which prefixes they now appear.
        let mut prefixes: Vec<&str> = Vec::new();
        for (_, to) in &results.renamed {
            for n in to {
                let p = &n[..n.find('/').map_or(0, |i| i + 1)];
                if !prefixes.contains(&p) {
                    prefixes.push(p);
                }
            }
        }
        text.push_str(&format!(
            "note: {} scenario name(s), e.g. `{first}`, mean different deployments in different \
             directories; they are kept apart, prefixed with the directory: {}\n\n",
            results.renamed.len(),
            prefixes.join(", ")
        ));
    }
    let by_name = |n: &str| out_tables.iter().find(|t| t.name == n);
    for name in ["comparison", "transfers", "validation_summary"] {
        if let Some(t) = by_name(name) {
            text.push_str(&t.to_terminal());
            text.push('\n');
        }
    }

    let out = match out {
        Some(o) => o.to_path_buf(),
        None => default_out(dirs).expect("load checked dirs is not empty"),
    };
    if !figs.skipped.is_empty() {
        let why: Vec<String> = figs
            .skipped
            .iter()
            .map(|(stem, why)| format!("{stem} ({why})"))
            .collect();
        text.push_str(&format!("figures left out: {}\n", why.join(", ")));
    }
    let page = html.then(|| {
        html::page(&html::Page {
            runs: &results.runs,
            tables: &out_tables,
            figures: &figs,
        })
    });
    let files = write::write_all(&out, &out_tables, &figs.drawn, page.as_deref())?;
    Ok(Report {
        text,
        tables: out_tables,
        files,
        out,
    })
}

/// Per metric over the compared scenarios: how many, mean and worst error. Also says which
/// scenarios have only one side, since a silent gap would read as agreement.
fn summarise_validation(pairs: &[compare::Pair], scenarios: &[metrics::Scenario]) -> Table {
    let mut t = Table::new(
        "validation_summary",
        "Predicted against measured: error per metric over the compared scenarios",
        "",
    );
    let c = crate::table::column;
    let pct = Show::SignedPercent { decimals: 1 };
    let abs = Show::PercentUnits { decimals: 1 };
    t.columns = vec![
        c("metric", "metric", Show::Plain),
        c("scenarios", "scenarios", Show::Plain),
        c("mean_error_pct", "mean error", pct),
        c("mean_abs_error_pct", "mean |error|", abs),
        c("max_abs_error_pct", "max |error|", abs),
        c("worst_scenario", "worst scenario", Show::Plain),
    ];
    // Metric order as in the per-scenario table (pairs are scenario-major).
    let mut metrics: Vec<&str> = Vec::new();
    for p in pairs {
        if !metrics.contains(&p.metric) {
            metrics.push(p.metric);
        }
    }
    for m in metrics {
        let errs: Vec<(f64, &str)> = pairs
            .iter()
            .filter(|p| p.metric == m)
            .filter_map(|p| Some((p.error_pct()?, p.scenario.as_str())))
            .collect();
        let n = errs.len();
        let mean = (n > 0).then(|| errs.iter().map(|e| e.0).sum::<f64>() / n as f64);
        let mean_abs = (n > 0).then(|| errs.iter().map(|e| e.0.abs()).sum::<f64>() / n as f64);
        let worst = errs.iter().max_by(|a, b| a.0.abs().total_cmp(&b.0.abs()));
        t.push(vec![
            Value::Text(m.to_string()),
            Value::Int(Some(n as u64)),
            Value::Num(mean),
            Value::Num(mean_abs),
            Value::Num(worst.map(|w| w.0.abs())),
            // With no error anywhere, no scenario is the worst.
            Value::Text(
                worst
                    .filter(|w| w.0 != 0.0)
                    .map_or("-".into(), |w| w.1.to_string()),
            ),
        ]);
    }
    let one_sided: Vec<&str> = scenarios
        .iter()
        .filter(|s| {
            let other = if s.source == compare::EXEC {
                compare::SIM
            } else {
                compare::EXEC
            };
            !scenarios
                .iter()
                .any(|o| o.scenario == s.scenario && o.source == other)
        })
        .map(|s| s.scenario.as_str())
        .collect();
    if !one_sided.is_empty() {
        t.note = format!(
            "Not compared (only one of sim and exec): {}.",
            one_sided.join(", ")
        );
        t.title = format!("{} ({} scenarios not compared)", t.title, one_sided.len());
    }
    t
}
