//! Predicted against measured: simulator rows (`source = sim`) joined with harness rows
//! (`source = exec`) of the same scenario, per scenario metric and per request.
//!
//! Error % is `hetsim_sim::compare::error_pct`: (predicted − measured) / measured × 100, positive
//! where the simulator is pessimistic about a latency (or optimistic about a throughput).

use std::collections::BTreeMap;

use hetsim_sim::compare::error_pct;
use hetsim_sim::error::InputError;
use hetsim_sim::records::{RequestStatus, Source};
use polars::prelude::*;

use crate::columns::{f64s, texts, u64s};
use crate::load::Results;
use crate::metrics::{Metrics, Scenario, input};
use crate::table::{Show, Table, Value};

pub const SIM: &str = Source::Sim.as_str();
pub const EXEC: &str = Source::Exec.as_str();

/// A scenario-level metric compared: key, label, unit, how to read it.
struct Metric {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    get: fn(&Metrics) -> Option<f64>,
}

const METRICS: &[Metric] = &[
    Metric {
        key: "throughput_rps",
        label: "throughput",
        unit: "req/s",
        get: Metrics::throughput_rps,
    },
    Metric {
        key: "output_tokens_per_s",
        label: "output tokens/s",
        unit: "tok/s",
        get: Metrics::output_tokens_per_s,
    },
    Metric {
        key: "goodput_rps",
        label: "goodput",
        unit: "req/s",
        get: Metrics::goodput_rps,
    },
    Metric {
        key: "ttft_p50_s",
        label: "TTFT p50",
        unit: "s",
        get: |m| m.ttft[0],
    },
    Metric {
        key: "ttft_p99_s",
        label: "TTFT p99",
        unit: "s",
        get: |m| m.ttft[2],
    },
    Metric {
        key: "tpot_p50_s",
        label: "TPOT p50",
        unit: "s",
        get: |m| m.tpot[0],
    },
    Metric {
        key: "tpot_p99_s",
        label: "TPOT p99",
        unit: "s",
        get: |m| m.tpot[2],
    },
    Metric {
        key: "e2e_p50_s",
        label: "E2E p50",
        unit: "s",
        get: |m| m.e2e[0],
    },
    Metric {
        key: "e2e_p99_s",
        label: "E2E p99",
        unit: "s",
        get: |m| m.e2e[2],
    },
    Metric {
        key: "bytes_per_request",
        label: "bytes moved per request",
        unit: "B",
        get: Metrics::bytes_per_request,
    },
    Metric {
        key: "tokens_per_dollar",
        label: "tokens per dollar",
        unit: "tok/$",
        get: Metrics::tokens_per_dollar,
    },
];

/// The latency metrics drawn in the predicted-against-measured plot.
pub const PLOTTED: [&str; 4] = ["ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "e2e_p50_s"];

/// One compared scenario metric.
#[derive(Debug, Clone)]
pub struct Pair {
    pub scenario: String,
    pub metric: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub predicted: Option<f64>,
    pub measured: Option<f64>,
}

impl Pair {
    pub fn error_pct(&self) -> Option<f64> {
        error_pct(self.predicted?, self.measured?)
    }
}

/// Scenario metrics of every scenario that has both sim and exec rows, in scenario order.
pub fn scenario_pairs(
    scenarios: &[Scenario],
    per: &BTreeMap<(String, String), Metrics>,
) -> Vec<Pair> {
    let mut out = Vec::new();
    for s in crate::tables::ordered(scenarios) {
        if s.source != SIM {
            continue;
        }
        let (Some(sim), Some(exec)) = (
            per.get(&(s.scenario.clone(), SIM.to_string())),
            per.get(&(s.scenario.clone(), EXEC.to_string())),
        ) else {
            continue;
        };
        for m in METRICS {
            out.push(Pair {
                scenario: s.scenario.clone(),
                metric: m.key,
                label: m.label,
                unit: m.unit,
                predicted: (m.get)(sim),
                measured: (m.get)(exec),
            });
        }
    }
    out
}

pub fn scenario_table(pairs: &[Pair]) -> Table {
    let mut t = Table::new(
        "validation",
        "Predicted (sim) against measured (exec), per scenario",
        "Error % = (predicted − measured) / measured × 100. Same pooling as the comparison table.",
    );
    let c = crate::table::column;
    let g = Show::Fixed {
        scale: 1.0,
        decimals: 4,
    };
    t.columns = vec![
        c("scenario", "scenario", Show::Plain),
        c("metric", "metric", Show::Plain),
        c("unit", "unit", Show::Plain),
        c("predicted", "predicted", g),
        c("measured", "measured", g),
        c("error_pct", "error", Show::SignedPercent { decimals: 1 }),
    ];
    for p in pairs {
        t.push(vec![
            Value::Text(p.scenario.clone()),
            Value::Text(p.metric.to_string()),
            Value::Text(p.unit.to_string()),
            Value::Num(p.predicted),
            Value::Num(p.measured),
            Value::Num(p.error_pct()),
        ]);
    }
    t
}

/// Per-request quantities compared: the latencies and the phase durations the simulator models,
/// so a latency error can be traced to the phase that causes it.
const REQUEST_METRICS: [(&str, &str); 7] = [
    ("ttft_s", "TTFT"),
    ("tpot_s", "TPOT"),
    ("e2e_s", "E2E"),
    ("encode_s", "encode"),
    ("emb_transfer_s", "embedding transfer"),
    ("prefill_s", "prefill"),
    ("kv_transfer_s", "KV transfer"),
];

fn request_frame(r: &Results, source: &str, suffix: &str) -> LazyFrame {
    let span = |a: &str, b: &str| col(b) - col(a);
    let mut means: Vec<Expr> = Vec::new();
    for (m, _) in REQUEST_METRICS {
        let e = match m {
            "encode_s" => span("encode_start_s", "encode_end_s"),
            "emb_transfer_s" => span("emb_transfer_start_s", "emb_transfer_end_s"),
            "prefill_s" => span("prefill_start_s", "prefill_end_s"),
            "kv_transfer_s" => span("kv_transfer_start_s", "kv_transfer_end_s"),
            _ => col(m),
        };
        // Repeated runs of a request are averaged before the join, so each request counts once.
        means.push(e.mean().alias(format!("{m}{suffix}")));
    }
    r.requests
        .clone()
        .filter(
            col("source")
                .eq(lit(source))
                .and(col("status").eq(lit(RequestStatus::Finished.as_str()))),
        )
        .group_by([col("scenario"), col("request_id")])
        .agg(means)
}

/// `error_pct` over columns, for per-request errors: rows it gives no error (a measured 0 or a
/// missing value) are left out.
fn error_pct_expr(predicted: Expr, measured: Expr) -> Expr {
    ((predicted.clone() - measured.clone()) / measured.clone() * lit(100.0)).filter(
        measured
            .clone()
            .neq(lit(0.0))
            .and(predicted.is_not_null())
            .and(measured.is_not_null()),
    )
}

/// Per scenario and request metric: requests matched on (scenario, request_id) among finished
/// sim and exec rows, mean predicted and measured, and the spread of per-request errors.
pub fn request_table(r: &Results, scenarios: &[Scenario]) -> Result<Table, InputError> {
    let keys = [col("scenario"), col("request_id")];
    let joined = request_frame(r, SIM, "").join(
        request_frame(r, EXEC, "_exec"),
        keys.clone(),
        keys,
        JoinArgs::new(JoinType::Inner),
    );
    let mut aggs = vec![len().alias("matched")];
    for (m, _) in REQUEST_METRICS {
        let measured = col(format!("{m}_exec"));
        let err = error_pct_expr(col(m), measured.clone());
        aggs.extend([
            col(m).mean().alias(format!("{m}_pred")),
            measured.clone().mean().alias(format!("{m}_meas")),
            err.clone().median().alias(format!("{m}_err_median")),
            err.clone().abs().median().alias(format!("{m}_abs_median")),
            err.abs()
                .quantile(lit(0.9), crate::metrics::QUANTILE_METHOD)
                .alias(format!("{m}_abs_p90")),
        ]);
    }
    let df = joined
        .group_by([col("scenario")])
        .agg(aggs)
        .sort(["scenario"], SortMultipleOptions::default())
        .collect()
        .map_err(input("requests, sim joined with exec"))?;
    let mut t = Table::new(
        "validation_requests",
        "Predicted (sim) against measured (exec), per request",
        "Finished requests matched on scenario and request_id (repeats averaged first). Phase \
         times: encode = encode_end − encode_start, and so on. Errors are per request, in %.",
    );
    let c = crate::table::column;
    let ms = Show::Fixed {
        scale: 1e3,
        decimals: 2,
    };
    let pct = Show::SignedPercent { decimals: 1 };
    let abs = Show::PercentUnits { decimals: 1 };
    t.columns = vec![
        c("scenario", "scenario", Show::Plain),
        c("metric", "metric", Show::Plain),
        c("matched", "requests", Show::Plain),
        c("predicted_mean_s", "predicted mean ms", ms),
        c("measured_mean_s", "measured mean ms", ms),
        c("error_of_means_pct", "error of means", pct),
        c("error_median_pct", "median error", pct),
        c("abs_error_median_pct", "median |error|", abs),
        c("abs_error_p90_pct", "p90 |error|", abs),
    ];
    let mut get = || -> PolarsResult<()> {
        let sc = texts(&df, "scenario")?;
        let n = u64s(&df, "matched")?;
        for (m, label) in REQUEST_METRICS {
            let pred = f64s(&df, &format!("{m}_pred"))?;
            let meas = f64s(&df, &format!("{m}_meas"))?;
            let med = f64s(&df, &format!("{m}_err_median"))?;
            let abs = f64s(&df, &format!("{m}_abs_median"))?;
            let p90 = f64s(&df, &format!("{m}_abs_p90"))?;
            for i in 0..df.height() {
                // A phase neither side has (no KV transfer in a colocated run) is no row.
                if pred[i].is_none() && meas[i].is_none() {
                    continue;
                }
                t.push(vec![
                    Value::Text(sc[i].clone()),
                    Value::Text(label.to_string()),
                    Value::Int(Some(n[i])),
                    Value::Num(pred[i]),
                    Value::Num(meas[i]),
                    Value::Num(match (pred[i], meas[i]) {
                        (Some(p), Some(m)) => error_pct(p, m),
                        _ => None,
                    }),
                    Value::Num(med[i]),
                    Value::Num(abs[i]),
                    Value::Num(p90[i]),
                ]);
            }
        }
        Ok(())
    };
    get().map_err(input("requests, sim joined with exec"))?;
    // Scenario-major, in the comparison table's order (rate 4 before rate 16); the stable sort
    // keeps the metric order within a scenario.
    let order: Vec<&str> = crate::tables::ordered(scenarios)
        .iter()
        .map(|s| s.scenario.as_str())
        .collect();
    let rank = |r: &Vec<Value>| match &r[0] {
        Value::Text(s) => order.iter().position(|o| o == s).unwrap_or(usize::MAX),
        _ => usize::MAX,
    };
    t.rows.sort_by_key(rank);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The polars form of the error and the simulator's `error_pct` agree on the same rows,
    /// including which rows have no error.
    #[test]
    fn polars_error_is_the_simulators_error_pct() {
        let predicted = [
            Some(0.110),
            Some(0.090),
            Some(1.0),
            None,
            Some(0.2),
            Some(3.5),
        ];
        let measured = [
            Some(0.100),
            Some(0.100),
            Some(0.0),
            Some(1.0),
            None,
            Some(2.5),
        ];
        let df = df!("p" => predicted, "m" => measured).unwrap();
        let got = df
            .lazy()
            .select([error_pct_expr(col("p"), col("m")).alias("err")])
            .collect()
            .unwrap();
        let got = f64s(&got, "err").unwrap();
        let want: Vec<Option<f64>> = predicted
            .iter()
            .zip(&measured)
            .filter_map(|(p, m)| error_pct((*p)?, (*m)?))
            .map(Some)
            .collect();
        assert_eq!(got.len(), 3);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.unwrap() - w.unwrap()).abs() < 1e-9,
                "{got:?} against {want:?}"
            );
        }
        // Hand-checked: 110 against 100 is +10 %, 90 against 100 is −10 %, 3.5 against 2.5 is +40 %.
        assert!((want[2].unwrap() - 40.0).abs() < 1e-9);
    }
}
