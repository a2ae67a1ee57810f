//! Predicted against measured: the same metrics computed the same way from the request rows of
//! both sources (`source = sim` and `source = exec`), per scenario, with the error of the
//! prediction. `hetsim validate` prints this; analysis reads the same rows.

use std::collections::BTreeMap;

use crate::records::{RequestRecord, RequestStatus, Source, SummaryRecord};
use crate::stats::nearest_rank;
use crate::table::{Table, Value};

/// The error of a prediction, in %: (predicted − measured) / measured × 100, so positive means
/// the simulator is pessimistic about a latency (or optimistic about a throughput). None where
/// there is nothing to divide by or either side is not a number. The one definition: `validate`,
/// `validate transfer` and `analyze` all call it (analysis's polars form is tested against it).
pub fn error_pct(predicted: f64, measured: f64) -> Option<f64> {
    (measured != 0.0 && predicted.is_finite() && measured.is_finite())
        .then(|| (predicted - measured) / measured * 100.0)
}

/// Metrics of one scenario's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub values: Vec<(&'static str, f64)>,
}

fn quantile(mut v: Vec<f64>, q: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    // Exact: the simulator's summary is within 0.05 % of it (`stats`).
    nearest_rank(&v, q)
}

/// TTFT, TPOT and end-to-end p50/p90/p99, throughput and bytes moved per request.
pub fn metrics(rows: &[&RequestRecord]) -> Metrics {
    let done: Vec<&&RequestRecord> = rows
        .iter()
        .filter(|r| r.status == RequestStatus::Finished)
        .collect();
    let col = |f: &dyn Fn(&RequestRecord) -> Option<f64>| {
        done.iter().filter_map(|r| f(r)).collect::<Vec<f64>>()
    };
    let mut values = Vec::new();
    for (name, data) in [
        ("ttft", col(&|r| r.ttft_s)),
        ("tpot", col(&|r| r.tpot_s)),
        ("e2e", col(&|r| r.e2e_s)),
    ] {
        for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
            if let Some(v) = quantile(data.clone(), q) {
                values.push((metric_name(name, label), v));
            }
        }
    }
    let first = rows
        .iter()
        .map(|r| r.arrival_s)
        .fold(f64::INFINITY, f64::min);
    let last = done
        .iter()
        .filter_map(|r| r.finish_s)
        .fold(f64::NEG_INFINITY, f64::max);
    if last > first {
        values.push(("throughput_rps", done.len() as f64 / (last - first)));
    }
    if !rows.is_empty() {
        let bytes: u64 = rows.iter().map(|r| r.emb_bytes + r.kv_bytes).sum();
        values.push(("bytes_per_request", bytes as f64 / rows.len() as f64));
    }
    Metrics { values }
}

fn metric_name(m: &str, q: &str) -> &'static str {
    match (m, q) {
        ("ttft", "p50") => "ttft_p50_s",
        ("ttft", "p90") => "ttft_p90_s",
        ("ttft", "p99") => "ttft_p99_s",
        ("tpot", "p50") => "tpot_p50_s",
        ("tpot", "p90") => "tpot_p90_s",
        ("tpot", "p99") => "tpot_p99_s",
        ("e2e", "p50") => "e2e_p50_s",
        ("e2e", "p90") => "e2e_p90_s",
        _ => "e2e_p99_s",
    }
}

/// A summary row for measured requests: request-derived fields from `rows`, the deployment's
/// description and price from the simulated row of the same scenario (same cluster, same prices).
pub fn summarize_measured(sim: &SummaryRecord, rows: &[&RequestRecord]) -> SummaryRecord {
    let done: Vec<&&RequestRecord> = rows
        .iter()
        .filter(|r| r.status == RequestStatus::Finished)
        .collect();
    let q = |f: &dyn Fn(&RequestRecord) -> Option<f64>, p: f64| {
        quantile(done.iter().filter_map(|r| f(r)).collect(), p)
    };
    let first = rows
        .iter()
        .map(|r| r.arrival_s)
        .fold(f64::INFINITY, f64::min);
    let last = rows
        .iter()
        .filter_map(|r| r.finish_s)
        .fold(f64::NEG_INFINITY, f64::max);
    let duration = if last > first { last - first } else { 0.0 };
    let per_s = |x: f64| if duration > 0.0 { x / duration } else { 0.0 };
    let output: u64 = done.iter().map(|r| r.output_tokens).sum();
    let good: Vec<&&&RequestRecord> = done
        .iter()
        .filter(|r| {
            r.ttft_s.is_some_and(|t| t <= sim.slo_ttft_s)
                && r.tpot_s.is_none_or(|t| t <= sim.slo_tpot_s)
        })
        .collect();
    let good_tokens: u64 = good.iter().map(|r| r.output_tokens).sum();
    let good = good.len() as f64;
    let bytes = |f: &dyn Fn(&RequestRecord) -> u64| rows.iter().map(|r| f(r)).sum::<u64>();
    let cost = sim.usd_per_hour * duration / 3600.0;
    SummaryRecord {
        requests: rows.len() as u64,
        finished: done.len() as u64,
        dropped: (rows.len() - done.len()) as u64,
        duration_s: duration,
        throughput_rps: per_s(done.len() as f64),
        output_tokens: output,
        output_tokens_per_s: per_s(output as f64),
        goodput_rps: per_s(good),
        good_output_tokens: good_tokens,
        slo_attainment: if rows.is_empty() {
            0.0
        } else {
            good / rows.len() as f64
        },
        ttft_p50_s: q(&|r| r.ttft_s, 0.5),
        ttft_p90_s: q(&|r| r.ttft_s, 0.9),
        ttft_p99_s: q(&|r| r.ttft_s, 0.99),
        tpot_p50_s: q(&|r| r.tpot_s, 0.5),
        tpot_p90_s: q(&|r| r.tpot_s, 0.9),
        tpot_p99_s: q(&|r| r.tpot_s, 0.99),
        e2e_p50_s: q(&|r| r.e2e_s, 0.5),
        e2e_p90_s: q(&|r| r.e2e_s, 0.9),
        e2e_p99_s: q(&|r| r.e2e_s, 0.99),
        emb_bytes: bytes(&|r| r.emb_bytes),
        kv_bytes: bytes(&|r| r.kv_bytes),
        bytes_sent: bytes(&|r| r.emb_bytes + r.kv_bytes),
        bytes_received: bytes(&|r| r.emb_bytes + r.kv_bytes),
        busiest_link: None,
        busiest_link_utilization: 0.0,
        cost_usd: cost,
        tokens_per_dollar: if cost > 0.0 {
            output as f64 / cost
        } else {
            0.0
        },
        good_tokens_per_dollar: if cost > 0.0 {
            good_tokens as f64 / cost
        } else {
            0.0
        },
        // The harness measures requests, not its GPUs' busy time, FLOPs or bytes.
        utilization: None,
        mfu: None,
        mbu: None,
        batch_occupancy: None,
        prediction_error_pct: None,
        source: Source::Exec,
        ..sim.clone()
    }
}

pub struct Comparison {
    /// scenario, metric, predicted, measured, error_pct.
    pub table: Table,
    /// Median of |error| over every metric of every scenario, percent.
    pub median_abs_error_pct: Option<f64>,
}

/// Joins the two sources' rows on scenario and compares every metric both have.
pub fn compare(rows: &[RequestRecord]) -> Comparison {
    let mut by: BTreeMap<(&str, Source), Vec<&RequestRecord>> = BTreeMap::new();
    for r in rows {
        by.entry((r.scenario.as_str(), r.source))
            .or_default()
            .push(r);
    }
    let scenarios: Vec<&str> = by
        .keys()
        .map(|k| k.0)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut table = Table::new(&["scenario", "metric", "predicted", "measured", "error_pct"]);
    let mut errors = Vec::new();
    for s in scenarios {
        let (Some(sim), Some(exec)) = (by.get(&(s, Source::Sim)), by.get(&(s, Source::Exec)))
        else {
            continue;
        };
        let (p, m) = (metrics(sim), metrics(exec));
        for (name, pv) in &p.values {
            if let Some((_, mv)) = m.values.iter().find(|(n, _)| n == name) {
                let err = error_pct(*pv, *mv);
                if let Some(e) = err {
                    errors.push(e.abs());
                }
                table.push(vec![
                    Value::Str(s.to_string()),
                    Value::Str(name.to_string()),
                    Value::F64(*pv),
                    Value::F64(*mv),
                    err.map_or(Value::Null, Value::F64),
                ]);
            }
        }
    }
    Comparison {
        table,
        median_abs_error_pct: quantile(errors, 0.5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Strategy;

    fn row(scenario: &str, source: Source, id: u64, ttft: f64, tpot: f64) -> RequestRecord {
        RequestRecord {
            scenario: scenario.into(),
            strategy: Strategy::Modality,
            request_id: id,
            status: RequestStatus::Finished,
            arrival_s: id as f64,
            n_images: 1,
            visual_tokens: 576,
            prompt_tokens: 20,
            output_tokens: 11,
            emb_bytes: 4_718_592,
            kv_bytes: 0,
            ttft_s: Some(ttft),
            tpot_s: Some(tpot),
            e2e_s: Some(ttft + 10.0 * tpot),
            encode_start_s: None,
            encode_end_s: None,
            emb_transfer_start_s: None,
            emb_transfer_end_s: None,
            prefill_start_s: None,
            prefill_end_s: None,
            kv_transfer_start_s: None,
            kv_transfer_end_s: None,
            decode_start_s: None,
            finish_s: Some(id as f64 + ttft + 10.0 * tpot),
            encoder_instance: None,
            prefill_instance: None,
            decode_instance: None,
            preemptions: 0,
            source,
        }
    }

    #[test]
    fn error_is_signed_and_relative_to_the_measurement() {
        // 110 ms predicted against 100 ms measured: 10 % pessimistic; 90 ms: 10 % optimistic.
        assert!((error_pct(0.110, 0.100).unwrap() - 10.0).abs() < 1e-9);
        assert!((error_pct(0.090, 0.100).unwrap() + 10.0).abs() < 1e-9);
        assert_eq!(error_pct(1.0, 0.0), None);
        assert_eq!(error_pct(f64::NAN, 1.0), None);
    }

    #[test]
    fn errors_are_prediction_over_measurement() {
        let mut rows = Vec::new();
        for i in 0..100 {
            rows.push(row("a", Source::Sim, i, 0.110, 0.010));
            rows.push(row("a", Source::Exec, i, 0.100, 0.010));
            rows.push(row("only-sim", Source::Sim, i, 0.1, 0.01));
        }
        let c = compare(&rows);
        let get = |m: &str| {
            c.table
                .rows
                .iter()
                .find(|r| r[1] == Value::Str(m.into()))
                .unwrap()[4]
                .clone()
        };
        match get("ttft_p50_s") {
            Value::F64(e) => assert!((e - 10.0).abs() < 1e-9, "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(get("tpot_p99_s"), Value::F64(0.0));
        assert!(
            c.table.rows.iter().all(|r| r[0] == Value::Str("a".into())),
            "scenarios without both sources are left out"
        );
        assert!(c.median_abs_error_pct.is_some());
    }

    #[test]
    fn measured_summary_is_recomputed_from_its_rows() {
        let rows: Vec<RequestRecord> = (0..10)
            .map(|i| row("a", Source::Exec, i, 0.1 + i as f64 * 0.01, 0.01))
            .collect();
        let refs: Vec<&RequestRecord> = rows.iter().collect();
        let sim = SummaryRecord {
            scenario: "a".into(),
            strategy: Strategy::Colocated,
            rate_rps: Some(1.0),
            slo_ttft_s: 0.155,
            slo_tpot_s: 0.05,
            usd_per_hour: 3.6,
            ..crate::records::tests::summary()
        };
        let m = summarize_measured(&sim, &refs);
        assert_eq!(
            (m.source, m.requests, m.finished, m.output_tokens),
            (Source::Exec, 10, 10, 110)
        );
        // Arrivals 0…9 s; the last finishes at 9 + 0.19 + 0.1.
        assert!((m.duration_s - 9.29).abs() < 1e-9);
        assert!((m.cost_usd - 3.6 * 9.29 / 3600.0).abs() < 1e-12);
        // TTFT ≤ 0.155 s: requests 0…5.
        assert!((m.slo_attainment - 0.6).abs() < 1e-12);
        assert_eq!(m.ttft_p50_s, Some(0.14));
    }
}
