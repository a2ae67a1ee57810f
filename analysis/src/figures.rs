//! Which figures, from which numbers: turns the computed tables into `plots` inputs.

use std::collections::BTreeMap;

use crate::compare::{self, EXEC, Pair};
use crate::metrics::{Metrics, Scenario, curve_name};
use crate::plots::{BarChart, Figure, LineChart, Series};
use crate::tables::{CostRow, CurvePoint, UNUSED_GPUS};

/// Curves in a stable order, each with a colour/marker index; the exec series of a curve keeps
/// its sim series' style and is dashed.
fn curve_series(
    points: &[CurvePoint],
    y: impl Fn(&CurvePoint) -> Option<f64>,
    x: impl Fn(&CurvePoint) -> Option<f64>,
) -> Vec<Series> {
    let mut names: Vec<&str> = points.iter().map(|p| p.curve.as_str()).collect();
    names.dedup();
    let sources = points.iter().any(|p| p.source == EXEC);
    let mut out: Vec<Series> = Vec::new();
    for p in points {
        let style = names.iter().position(|n| *n == p.curve).unwrap_or(0);
        let label = if sources {
            format!("{} ({})", p.curve, p.source)
        } else {
            p.curve.clone()
        };
        let (Some(xv), Some(yv)) = (x(p), y(p)) else {
            continue;
        };
        match out.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((xv, yv)),
            None => out.push(Series {
                label,
                points: vec![(xv, yv)],
                style,
                dashed: p.source == EXEC,
                markers_only: false,
            }),
        }
    }
    // Points stay in offered-rate order (the input order): past saturation a higher rate can
    // give less throughput, and the curve should show that hook rather than hide it.
    out
}

fn line(x: &str, y: &str, series: Vec<Series>) -> LineChart {
    LineChart {
        x_label: x.into(),
        y_label: y.into(),
        x_log: false,
        y_log: false,
        y_from_zero: false,
        y_max: None,
        series,
        identity_band: None,
    }
}

/// Latency against achieved throughput, one point per offered rate: where a deployment's latency
/// takes off is its capacity.
pub fn latency_throughput(points: &[CurvePoint]) -> Vec<(&'static str, Figure)> {
    if points.is_empty() {
        return Vec::new();
    }
    let thr = |p: &CurvePoint| p.m.throughput_rps();
    let mut ttft = line(
        "Throughput (req/s)",
        "TTFT p99 (s)",
        curve_series(points, |p| p.m.ttft[2], thr),
    );
    ttft.y_log = true;
    let mut tpot = line(
        "Throughput (req/s)",
        "TPOT p99 (ms)",
        curve_series(points, |p| p.m.tpot[2].map(|v| v * 1e3), thr),
    );
    tpot.y_log = true;
    vec![
        ("latency_throughput_ttft", Figure::Line(ttft)),
        ("latency_throughput_tpot", Figure::Line(tpot)),
    ]
}

/// Against the offered rate: SLO attainment, Tokens/$ and the busiest link's utilisation.
pub fn against_rate(points: &[CurvePoint]) -> Vec<(&'static str, Figure)> {
    if points.is_empty() {
        return Vec::new();
    }
    let rate = |p: &CurvePoint| Some(p.rate_rps);
    let mut slo = line(
        "Offered load (req/s)",
        "SLO attainment (%)",
        curve_series(points, |p| p.m.slo_attainment().map(|v| v * 100.0), rate),
    );
    slo.y_from_zero = true;
    slo.y_max = Some(100.0);
    let mut tpd = line(
        "Offered load (req/s)",
        "Tokens per dollar (millions)",
        curve_series(points, |p| p.m.tokens_per_dollar().map(|v| v / 1e6), rate),
    );
    tpd.y_from_zero = true;
    let util = |m: &Metrics| m.busiest_port.as_ref().map_or(0.0, |(_, u)| *u * 100.0);
    let mut link = line(
        "Offered load (req/s)",
        "Busiest link utilisation (%)",
        curve_series(points, |p| Some(util(&p.m)), rate),
    );
    link.y_from_zero = true;
    vec![
        ("slo_attainment", Figure::Line(slo)),
        ("tokens_per_dollar", Figure::Line(tpd)),
        ("link_utilization", Figure::Line(link)),
    ]
}

/// Bytes shipped per request by strategy, embedding against KV, on a log axis: the two differ by
/// about two orders of magnitude, which is the point of the figure.
pub fn transfer_bytes(
    scenarios: &[Scenario],
    per: &BTreeMap<(String, String), Metrics>,
) -> Option<(&'static str, Figure)> {
    let mut by: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for s in scenarios {
        if let Some(m) = per.get(&(s.scenario.clone(), s.source.clone())) {
            let e = by
                .entry((s.strategy.clone(), s.source.clone()))
                .or_default();
            e.0 += m.emb_bytes;
            e.1 += m.kv_bytes;
            e.2 += m.requests;
        }
    }
    let sources = by.keys().any(|(_, s)| s == EXEC);
    let mut categories = Vec::new();
    let mut values = Vec::new();
    for ((strategy, source), (emb, kv, n)) in &by {
        if *n == 0 {
            continue;
        }
        categories.push(if sources {
            format!("{strategy} ({source})")
        } else {
            strategy.clone()
        });
        values.push(vec![
            *emb as f64 / *n as f64 / 1e6,
            *kv as f64 / *n as f64 / 1e6,
        ]);
    }
    if values.iter().flatten().all(|v| *v <= 0.0) {
        return None;
    }
    Some((
        "transfer_bytes",
        Figure::Bar(BarChart {
            x_label: "Shipped per request (MB, log scale)".into(),
            categories,
            keys: vec!["embeddings".into(), "KV cache".into()],
            values,
            stacked: false,
            x_log: true,
            value_suffix: " MB".into(),
        }),
    ))
}

/// $/hour of each deployment split by GPU type (and GPUs no instance used). Scenarios of one
/// curve share a deployment, so each curve is one bar.
pub fn cost_breakdown(
    rows: &[CostRow],
    per: &BTreeMap<(String, String), Metrics>,
) -> Option<(&'static str, Figure)> {
    let sources = rows.iter().any(|r| r.source == EXEC);
    let mut gpus: Vec<String> = Vec::new();
    let mut cost: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut duration: BTreeMap<String, f64> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut counted: Vec<(String, String)> = Vec::new();
    for r in rows {
        let name = curve_name(&r.scenario);
        let name = if sources {
            format!("{name} ({})", r.source)
        } else {
            name
        };
        if !order.contains(&name) {
            order.push(name.clone());
        }
        if r.gpu != UNUSED_GPUS && !gpus.contains(&r.gpu) {
            gpus.push(r.gpu.clone());
        }
        *cost
            .entry(name.clone())
            .or_default()
            .entry(r.gpu.clone())
            .or_default() += r.cost_usd;
        let key = (r.scenario.clone(), r.source.clone());
        if !counted.contains(&key) {
            if let Some(m) = per.get(&key) {
                *duration.entry(name).or_default() += m.duration_s;
            }
            counted.push(key);
        }
    }
    gpus.sort();
    if cost
        .values()
        .flat_map(|m| m.keys())
        .any(|g| g == UNUSED_GPUS)
    {
        gpus.push(UNUSED_GPUS.to_string());
    }
    if order.is_empty() {
        return None;
    }
    let values: Vec<Vec<f64>> = order
        .iter()
        .map(|name| {
            let d = duration.get(name).copied().unwrap_or(0.0);
            gpus.iter()
                .map(|g| {
                    let c = cost[name].get(g).copied().unwrap_or(0.0);
                    if d > 0.0 { c / d * 3600.0 } else { 0.0 }
                })
                .collect()
        })
        .collect();
    Some((
        "cost_breakdown",
        Figure::Bar(BarChart {
            x_label: "Cost ($/h)".into(),
            categories: order,
            keys: gpus,
            values,
            stacked: true,
            x_log: false,
            value_suffix: String::new(),
        }),
    ))
}

/// Predicted (x) against measured (y) for the latency percentiles of every compared scenario,
/// with y = x and ±25 %.
pub fn predicted_measured(pairs: &[Pair]) -> Option<(&'static str, Figure)> {
    let mut series: Vec<Series> = Vec::new();
    for (k, metric) in compare::PLOTTED.iter().enumerate() {
        let points: Vec<(f64, f64)> = pairs
            .iter()
            .filter(|p| p.metric == *metric)
            .filter_map(|p| Some((p.predicted?, p.measured?)))
            .filter(|(a, b)| *a > 0.0 && *b > 0.0)
            .collect();
        if points.is_empty() {
            continue;
        }
        let label = pairs
            .iter()
            .find(|p| p.metric == *metric)
            .map_or(metric.to_string(), |p| p.label.to_string());
        series.push(Series {
            label,
            points,
            style: k,
            dashed: false,
            markers_only: true,
        });
    }
    if series.is_empty() {
        return None;
    }
    Some((
        "predicted_vs_measured",
        Figure::Line(LineChart {
            x_label: "Predicted by hetsim (s)".into(),
            y_label: "Measured on GPUs (s)".into(),
            x_log: true,
            y_log: true,
            y_from_zero: false,
            y_max: None,
            series,
            identity_band: Some(0.25),
        }),
    ))
}
