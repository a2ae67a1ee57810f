//! Runs an experiment's scenarios and writes their results, or nothing if any fails.

use std::path::{Path, PathBuf};

use crate::bench_serve;
use crate::capacity::{RequestMix, deployment_capacity};
use crate::engine::{RunResult, simulate};
use crate::error::Error;
use crate::error::InputError;
use crate::experiment::{Experiment, base_name};
use crate::headroom::{Capacity, MIN_REQUESTS, Miss, capacity_search, offered_rate};
use crate::output::ResultWriter;
use crate::records::{NullSink, Source};
use crate::table::{Table, Value};
use crate::timeline::{self, TimelineSink, TimelineWriter, TraceOptions};

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

/// Runs every scenario; with `out`, writes the result tables there, and with `trace` too a
/// timeline per scenario (`timeline::file_name`).
pub fn run_experiment(
    exp: &Experiment,
    out: Option<&Path>,
    trace: Option<TraceOptions>,
    progress: &mut dyn Progress,
) -> Result<ExperimentResult, Error> {
    if trace.is_some() && out.is_none() {
        return Err(InputError::new(
            "--trace writes each scenario's timeline into the result directory: give --out DIR too",
        )
        .into());
    }
    let mut writer = match out {
        Some(dir) => Some(ResultWriter::create(dir)?),
        None => None,
    };
    let mut runs = Vec::with_capacity(exp.scenarios.len());
    for (i, s) in exp.scenarios.iter().enumerate() {
        progress.scenario(i, &s.name, s.workload.requests);
        let mut null = NullSink;
        let run = match (writer.as_mut(), trace) {
            (Some(w), Some(opts)) => {
                let name = timeline::file_name(i, &s.name, Source::Sim);
                let mut timeline = TimelineWriter::create(
                    &w.staged_path(&name),
                    &s.name,
                    Source::Sim,
                    &timeline::instance_names(s),
                    opts,
                )?;
                let mut sink = TimelineSink {
                    rows: w,
                    timeline: &mut timeline,
                };
                let run = simulate(s, &mut sink, &mut |n| progress.done(n))?;
                timeline.finish()?;
                w.record(&name);
                run
            }
            (Some(w), None) => simulate(s, w, &mut |n| progress.done(n))?,
            (None, _) => simulate(s, &mut null, &mut |n| progress.done(n))?,
        };
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
        Some(mut w) => {
            let bench: Vec<_> = runs.iter().map(|r| r.bench.clone()).collect();
            w.add_file(bench_serve::FILE, bench_serve::file(&bench))?;
            w.commit()?
        }
        None => Vec::new(),
    };
    Ok(ExperimentResult { runs, files })
}

/// The comparison table printed at the end of `hetsim run`, ranked by SLO-meeting output tokens
/// per dollar (a run that misses its SLO ranks by what it delivered within it), then Tokens/$.
/// `goodput` is requests/s meeting both SLOs, `SLO` the share of arrivals that did; `busy`, `MFU`,
/// `MBU` and `batch` (occupancy) are over the GPUs instances use (docs/schema.md defines each).
pub fn comparison_table(runs: &[RunResult]) -> String {
    let mut order: Vec<&RunResult> = runs.iter().collect();
    order.sort_by(|a, b| {
        let (a, b) = (&a.summary, &b.summary);
        b.good_tokens_per_dollar
            .total_cmp(&a.good_tokens_per_dollar)
            .then(b.tokens_per_dollar.total_cmp(&a.tokens_per_dollar))
            .then(a.scenario.cmp(&b.scenario))
    });
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}", v * 1e3));
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}", v * 100.0));
    let mut t = Table::new(&[
        "#",
        "scenario",
        "gpus",
        "done",
        "req/s",
        "goodput",
        "SLO",
        "tok/s",
        "TTFT p50/p99 ms",
        "TPOT p50/p99 ms",
        "busy/MFU/MBU/batch %",
        "MB moved/req",
        "busiest link",
        "$/h",
        "tokens/$",
        "SLO tokens/$",
        "± %",
    ]);
    for (rank, r) in order.iter().enumerate() {
        let s = &r.summary;
        let moved = if s.requests > 0 {
            (s.emb_bytes + s.kv_bytes) as f64 / s.requests as f64 / 1e6
        } else {
            0.0
        };
        let idle = s.cluster_gpu_count - s.gpu_count;
        t.push(vec![
            Value::U64(rank as u64 + 1),
            Value::Str(s.scenario.clone()),
            Value::Str(if idle > 0 {
                format!("{} (+{idle} idle)", s.gpus)
            } else {
                s.gpus.clone()
            }),
            Value::Str(format!("{}/{}", s.finished, s.requests)),
            Value::Str(format!("{:.2}", s.throughput_rps)),
            Value::Str(format!("{:.2}", s.goodput_rps)),
            Value::Str(format!("{:.0}%", s.slo_attainment * 100.0)),
            Value::Str(format!("{:.0}", s.output_tokens_per_s)),
            Value::Str(format!("{}/{}", ms(s.ttft_p50_s), ms(s.ttft_p99_s))),
            Value::Str(format!("{}/{}", ms(s.tpot_p50_s), ms(s.tpot_p99_s))),
            Value::Str(format!(
                "{}/{}/{}/{}",
                pct(s.utilization),
                pct(s.mfu),
                pct(s.mbu),
                pct(s.batch_occupancy)
            )),
            Value::Str(format!("{moved:.1}")),
            Value::Str(s.busiest_link.as_ref().map_or("-".to_string(), |l| {
                format!("{l} {:.0}%", s.busiest_link_utilization * 100.0)
            })),
            Value::Str(format!("{:.2}", s.usd_per_hour)),
            Value::Str(format!("{:.0}", s.tokens_per_dollar)),
            Value::Str(format!("{:.0}", s.good_tokens_per_dollar)),
            Value::Str(format!(
                "{:.0} {}",
                s.prediction_error_pct.unwrap_or(f64::NAN),
                s.prediction_basis
            )),
        ]);
    }
    let mut text = t.to_text(0);
    // Neighbours in the ranking that the prediction's error cannot order.
    let ties: Vec<String> = order
        .windows(2)
        .enumerate()
        .filter(|(_, w)| {
            let (a, b) = (&w[0].summary, &w[1].summary);
            crate::trust::overlap(
                a.good_tokens_per_dollar,
                a.prediction_error_pct.unwrap_or(0.0),
                b.good_tokens_per_dollar,
                b.prediction_error_pct.unwrap_or(0.0),
            ) && a.good_tokens_per_dollar > 0.0
        })
        .map(|(i, _)| format!("#{} and #{}", i + 1, i + 2))
        .collect();
    text.push_str(
        "\n± %: the interval around each predicted latency, throughput and Tokens/$ that covers ~80 % of \
         the recorded replays for where its performance model came from (measured phase table, \
         operator fit on the same or another architecture; sim/src/trust.rs).\n",
    );
    if !ties.is_empty() {
        text += &format!(
            "within each other's intervals, so not ordered by this prediction: {}\n",
            ties.join(", ")
        );
    }
    text
}

/// Each scenario's headroom (`hetsim run --capacity`): the highest arrival rate it serves within
/// its SLO and keeping up, found by simulation from the closed form's estimate, and the margin at
/// the rate it was asked to serve.
pub fn capacity_table(exp: &Experiment) -> Result<Table, Error> {
    let mut t = Table::new(&[
        "scenario",
        "asked req/s",
        "capacity req/s",
        "margin",
        "per seed",
        "spread",
        "above it",
    ]);
    // The matrix varies only the rate, which capacity does not depend on: one search per base name.
    let mut searched: Vec<(&str, Option<Capacity>)> = Vec::new();
    for s in &exp.scenarios {
        let asked = offered_rate(s)?;
        let base = base_name(&s.name);
        if !searched.iter().any(|(b, _)| *b == base) {
            let mix = RequestMix::of(s, 2000)?;
            let guess = deployment_capacity(s, &mix).requests_per_s;
            let requests = s.workload.requests.unwrap_or(2000);
            searched.push((base, capacity_search(s, guess, requests)?));
        }
        let found = searched.iter().find(|(b, _)| *b == base).map(|(_, c)| c);
        let row = match found.expect("searched above") {
            Some(c) => vec![
                Value::Str(s.name.clone()),
                Value::Str(format!("{asked:.2}")),
                Value::Str(format!("{:.2}", c.requests_per_s)),
                Value::Str(format!("{:+.0}%", 100.0 * c.margin(asked))),
                Value::Str(
                    c.per_seed
                        .iter()
                        .map(|(_, r)| format!("{r:.2}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                Value::Str(format!("{:.2}", c.spread())),
                Value::Str(c.limit.map_or("-", Miss::label).to_string()),
            ],
            None => vec![
                Value::Str(s.name.clone()),
                Value::Str(format!("{asked:.2}")),
                Value::Str("-".into()),
                Value::Str("-".into()),
                Value::Str("-".into()),
                Value::Str("-".into()),
                Value::Str(format!("trace under {MIN_REQUESTS} requests")),
            ],
        };
        t.push(row);
    }
    Ok(t)
}
