//! Runs an experiment's scenarios and writes their results, or nothing if any fails.

use std::path::{Path, PathBuf};

use crate::engine::{RunResult, simulate};
use crate::error::Error;
use crate::experiment::Experiment;
use crate::output::ResultWriter;
use crate::records::{NullSink, RecordSink};

pub struct ExperimentResult {
    pub runs: Vec<RunResult>,
    /// The parquet files written (empty without an output directory).
    pub files: Vec<PathBuf>,
}

/// Observes progress: `scenario` starts with `requests` expected (if known), then `done` counts.
pub trait Progress {
    fn scenario(&mut self, index: usize, name: &str, requests: Option<u64>);
    fn done(&mut self, requests: u64);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn scenario(&mut self, _: usize, _: &str, _: Option<u64>) {}
    fn done(&mut self, _: u64) {}
}

pub fn run_experiment(
    exp: &Experiment,
    out: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<ExperimentResult, Error> {
    let mut writer = match out {
        Some(dir) => Some(ResultWriter::create(dir)?),
        None => None,
    };
    let mut runs = Vec::with_capacity(exp.scenarios.len());
    for (i, s) in exp.scenarios.iter().enumerate() {
        progress.scenario(i, &s.name, s.workload.requests);
        let mut null = NullSink;
        let sink: &mut dyn RecordSink = match writer.as_mut() {
            Some(w) => w,
            None => &mut null,
        };
        let run = simulate(s, sink, &mut |n| progress.done(n))?;
        if let Some(w) = writer.as_mut() {
            for r in &run.instances {
                w.instances.append(r)?;
            }
            for r in &run.links {
                w.links.append(r)?;
            }
            w.summary.append(&run.summary)?;
        }
        runs.push(run);
    }
    let files = match writer {
        Some(w) => w.commit()?,
        None => Vec::new(),
    };
    Ok(ExperimentResult { runs, files })
}

/// The comparison table printed at the end of `hetsim run`, best Tokens/$ first.
pub fn comparison_table(runs: &[RunResult]) -> String {
    let mut order: Vec<&RunResult> = runs.iter().collect();
    order.sort_by(|a, b| {
        b.summary
            .tokens_per_dollar
            .total_cmp(&a.summary.tokens_per_dollar)
            .then(a.summary.scenario.cmp(&b.summary.scenario))
    });
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}", v * 1e3));
    let header = [
        "#",
        "scenario",
        "gpus",
        "done",
        "req/s",
        "tok/s",
        "goodput",
        "TTFT p50/p99 ms",
        "TPOT p50/p99 ms",
        "MB moved/req",
        "busiest link",
        "$/h",
        "tokens/$",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (rank, r) in order.iter().enumerate() {
        let s = &r.summary;
        let moved = if s.requests > 0 {
            (s.emb_bytes + s.kv_bytes) as f64 / s.requests as f64 / 1e6
        } else {
            0.0
        };
        rows.push(vec![
            format!("{}", rank + 1),
            s.scenario.clone(),
            s.gpus.clone(),
            format!("{}/{}", s.finished, s.requests),
            format!("{:.2}", s.throughput_rps),
            format!("{:.0}", s.output_tokens_per_s),
            format!("{:.0}%", s.slo_attainment * 100.0),
            format!("{}/{}", ms(s.ttft_p50_s), ms(s.ttft_p99_s)),
            format!("{}/{}", ms(s.tpot_p50_s), ms(s.tpot_p99_s)),
            format!("{moved:.1}"),
            s.busiest_link.as_ref().map_or("-".to_string(), |l| {
                format!("{:.0}% {l}", s.busiest_link_utilization * 100.0)
            }),
            format!("{:.2}", s.usd_per_hour),
            format!("{:.0}", s.tokens_per_dollar),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let fmt_row = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(c, v)| {
                let pad = widths[c] - v.chars().count();
                // Text columns left-aligned, numbers right-aligned.
                if matches!(c, 1 | 2 | 10) {
                    format!("{v}{}", " ".repeat(pad))
                } else {
                    format!("{}{v}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = fmt_row(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "─".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.push('\n');
    for r in rows {
        out.push_str(&fmt_row(r));
        out.push('\n');
    }
    out
}
