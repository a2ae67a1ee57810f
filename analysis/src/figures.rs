//! Which figures, from which numbers: turns the computed tables into `plots` inputs.

use std::collections::BTreeMap;

use hetsim_sim::stats::nearest_rank;

use crate::compare::{self, EXEC, Pair};
use crate::metrics::{Metrics, Scenario, curve_name};
use crate::plots::{BarChart, Figure, LineChart, Reference, Series, tick};
use crate::tables::{CostRow, CurvePoint, NO_INSTANCE_ROWS, TraceLatency, UNUSED_GPUS};

/// What `analyze` draws, and the figures it left out with the reason: a figure with nothing to
/// show would read as "zero" or "unused".
#[derive(Default)]
pub struct Figures {
    pub drawn: Vec<(&'static str, Figure)>,
    pub skipped: Vec<(&'static str, &'static str)>,
}

impl Figures {
    fn add(&mut self, stem: &'static str, fig: Figure) {
        self.drawn.push((stem, fig));
    }

    fn skip(&mut self, stem: &'static str, why: &'static str) {
        self.skipped.push((stem, why));
    }
}

/// A curve's deployment and result set: `analyze` prefixes a name that means different
/// deployments in different directories with the directory (`DIR/name`).
fn deployment_and_directory(curve: &str) -> (&str, Option<&str>) {
    match curve.split_once('/') {
        Some((dir, name)) => (name, Some(dir)),
        None => (curve, None),
    }
}

/// Colour and marker follow the deployment, the line pattern the result set (directory, then
/// simulated before measured), so one deployment from two directories, or simulated and
/// measured, reads as one colour in two patterns.
struct Styles<'a> {
    deployments: Vec<&'a str>,
    sets: Vec<(Option<&'a str>, bool)>,
    /// Measured rows present: labels say which source a series is.
    sources: bool,
}

impl<'a> Styles<'a> {
    /// From (curve, source) in drawing order.
    fn new(curves: impl Iterator<Item = (&'a str, &'a str)>) -> Styles<'a> {
        let mut st = Styles {
            deployments: Vec::new(),
            sets: Vec::new(),
            sources: false,
        };
        for (curve, source) in curves {
            let (deployment, dir) = deployment_and_directory(curve);
            if !st.deployments.contains(&deployment) {
                st.deployments.push(deployment);
            }
            if !st.sets.contains(&(dir, source == EXEC)) {
                st.sets.push((dir, source == EXEC));
            }
            st.sources |= source == EXEC;
        }
        st.sets.sort();
        st
    }

    fn series(&self, curve: &str, source: &str, points: Vec<(f64, f64)>) -> Series {
        let (deployment, dir) = deployment_and_directory(curve);
        let set = (dir, source == EXEC);
        Series {
            label: if self.sources {
                format!("{curve} ({source})")
            } else {
                curve.to_string()
            },
            points,
            style: position(&self.deployments, &deployment),
            pattern: position(&self.sets, &set),
            measured: source == EXEC,
            markers_only: false,
            marker_every: 1,
            notes: Vec::new(),
        }
    }
}

fn position<T: PartialEq>(v: &[T], x: &T) -> usize {
    v.iter().position(|y| y == x).unwrap_or(0)
}

/// One series per curve (and source), one point per offered rate.
fn curve_series(
    points: &[CurvePoint],
    y: impl Fn(&CurvePoint) -> Option<f64>,
    x: impl Fn(&CurvePoint) -> Option<f64>,
) -> Vec<Series> {
    let styles = Styles::new(points.iter().map(|p| (p.curve.as_str(), p.source.as_str())));
    let mut out: Vec<Series> = Vec::new();
    for p in points {
        let (Some(xv), Some(yv)) = (x(p), y(p)) else {
            continue;
        };
        let note = format!("offered {} req/s", tick(p.rate_rps));
        let mut s = styles.series(&p.curve, &p.source, vec![(xv, yv)]);
        s.notes.push(note.clone());
        match out.iter_mut().find(|o| o.label == s.label) {
            Some(o) => {
                o.points.push((xv, yv));
                o.notes.push(note);
            }
            None => out.push(s),
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
        references: Vec::new(),
    }
}

/// One grey line per distinct SLO target of the scenarios (`value` in the figure's unit).
fn slo_lines(values: impl Iterator<Item = Option<f64>>, name: &str, unit: &str) -> Vec<Reference> {
    let mut out: Vec<Reference> = Vec::new();
    for y in values.flatten() {
        if !out.iter().any(|r| r.y == y) {
            out.push(Reference {
                y,
                label: format!("{name} SLO ({} {unit})", tick(y)),
            });
        }
    }
    out.sort_by(|a, b| a.y.total_cmp(&b.y));
    out
}

/// Latency against achieved throughput, one point per offered rate: where a deployment's latency
/// takes off is its capacity; the SLO lines say where it stops meeting its targets.
pub fn latency_throughput(points: &[CurvePoint], scenarios: &[Scenario], out: &mut Figures) {
    if points.is_empty() {
        return;
    }
    let curved = || scenarios.iter().filter(|s| s.rate_rps.is_some());
    let thr = |p: &CurvePoint| p.m.throughput_rps();
    let mut ttft = line(
        "Throughput (req/s)",
        "TTFT p99 (s)",
        curve_series(points, |p| p.m.ttft[2], thr),
    );
    ttft.y_log = true;
    ttft.references = slo_lines(curved().map(|s| s.slo_ttft_s), "TTFT", "s");
    let mut tpot = line(
        "Throughput (req/s)",
        "TPOT p99 (ms)",
        curve_series(points, |p| p.m.tpot[2].map(|v| v * 1e3), thr),
    );
    tpot.y_log = true;
    tpot.references = slo_lines(
        curved().map(|s| s.slo_tpot_s.map(|v| v * 1e3)),
        "TPOT",
        "ms",
    );
    out.add("latency_throughput_ttft", Figure::Line(ttft));
    out.add("latency_throughput_tpot", Figure::Line(tpot));
}

/// Against the offered rate: SLO attainment, Tokens/$ and the busiest link's utilisation (left
/// out when no run moved a byte over a link: an all-zero figure would read as idle links).
pub fn against_rate(points: &[CurvePoint], out: &mut Figures) {
    if points.is_empty() {
        return;
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
    out.add("slo_attainment", Figure::Line(slo));
    out.add("tokens_per_dollar", Figure::Line(tpd));
    if points
        .iter()
        .any(|p| p.m.busiest_port.as_ref().is_some_and(|(_, u)| *u > 0.0))
    {
        out.add("link_utilization", Figure::Line(link));
    } else {
        out.skip("link_utilization", "no run moved data over a link");
    }
}

/// Bytes shipped per request by strategy, embedding against KV, on a log axis: the two differ by
/// about two orders of magnitude, which is the point of the figure.
pub fn transfer_bytes(
    scenarios: &[Scenario],
    per: &BTreeMap<(String, String), Metrics>,
    out: &mut Figures,
) {
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
        return out.skip("transfer_bytes", "no request shipped embeddings or KV");
    }
    out.add(
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
    );
}

/// $/hour of each deployment split by GPU type (and GPUs no instance used). Scenarios of one
/// curve share a deployment, so each curve is one bar. Left out when no instance row has a cost
/// (results that give only a total, as the GPU harness's): every bar would be "unused".
pub fn cost_breakdown(
    rows: &[CostRow],
    per: &BTreeMap<(String, String), Metrics>,
    out: &mut Figures,
) {
    if !rows
        .iter()
        .any(|r| r.gpu != UNUSED_GPUS && r.gpu != NO_INSTANCE_ROWS && r.cost_usd > 0.0)
    {
        return out.skip("cost_breakdown", "no instance has a cost of its own");
    }
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
    out.add(
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
    );
}

/// Predicted (x) against measured (y) for the latency percentiles of every compared scenario,
/// with y = x and ±25 %.
pub fn predicted_measured(pairs: &[Pair], out: &mut Figures) {
    let mut series: Vec<Series> = Vec::new();
    for (k, metric) in compare::PLOTTED.iter().enumerate() {
        let (points, notes): (Vec<(f64, f64)>, Vec<String>) = pairs
            .iter()
            .filter(|p| p.metric == *metric)
            .filter_map(|p| Some(((p.predicted?, p.measured?), p.scenario.clone())))
            .filter(|((a, b), _)| *a > 0.0 && *b > 0.0)
            .unzip();
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
            pattern: 0,
            measured: false,
            markers_only: true,
            marker_every: 1,
            notes,
        });
    }
    if series.is_empty() {
        return out.skip("predicted_vs_measured", "no latency measured on both sides");
    }
    out.add(
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
            references: Vec::new(),
        }),
    );
}

/// A latency a trace replay's figures show: TTFT in s, TPOT in ms.
struct TraceMetric {
    name: &'static str,
    unit: &'static str,
    /// Seconds to the figure's unit.
    scale: f64,
    rows: fn(&TraceLatency) -> &[(f64, f64)],
    slo_s: fn(&Scenario) -> Option<f64>,
    stems: [&'static str; 2],
}

const TRACE_METRICS: [TraceMetric; 2] = [
    TraceMetric {
        name: "TTFT",
        unit: "s",
        scale: 1.0,
        rows: |t| &t.ttft,
        slo_s: |s| s.slo_ttft_s,
        stems: ["latency_cdf_ttft", "latency_over_time_ttft"],
    },
    TraceMetric {
        name: "TPOT",
        unit: "ms",
        scale: 1e3,
        rows: |t| &t.tpot,
        slo_s: |s| s.slo_tpot_s,
        stems: ["latency_cdf_tpot", "latency_over_time_tpot"],
    },
];

/// Trace replays have no offered rate, so no latency–throughput curve: their latency is shown as
/// a distribution (CDF of TTFT and TPOT) and over the replay (p99 per window of arrivals,
/// against the SLO).
pub fn trace_latency(traces: &[TraceLatency], scenarios: &[Scenario], out: &mut Figures) {
    let styles = Styles::new(traces.iter().map(|t| (t.curve.as_str(), t.source.as_str())));
    for m in &TRACE_METRICS {
        let (mut cdfs, mut windows) = (Vec::new(), Vec::new());
        for t in traces.iter().filter(|t| !(m.rows)(t).is_empty()) {
            let rows = (m.rows)(t);
            let mut sorted: Vec<f64> = rows.iter().map(|r| r.1 * m.scale).collect();
            sorted.sort_by(f64::total_cmp);
            // 100 quantiles draw the curve; a marker every tenth names it in grey print.
            let cdf = (1..=100)
                .map(|q| {
                    (
                        nearest_rank(&sorted, q as f64 / 100.0).expect("a replay with latencies"),
                        q as f64,
                    )
                })
                .collect();
            let mut s = styles.series(&t.curve, &t.source, cdf);
            s.marker_every = 10;
            cdfs.push(s);
            windows.push(styles.series(&t.curve, &t.source, p99_windows(rows, m.scale)));
        }
        if cdfs.is_empty() {
            continue;
        }
        let mut cdf = line(
            &format!("{} ({})", m.name, m.unit),
            "Requests at or below (%)",
            cdfs,
        );
        cdf.x_log = true;
        cdf.y_from_zero = true;
        cdf.y_max = Some(100.0);
        let mut time = line(
            "Arrival time (s)",
            &format!("{} p99 per window ({})", m.name, m.unit),
            windows,
        );
        time.y_log = true;
        let traced = scenarios.iter().filter(|s| s.rate_rps.is_none());
        time.references = slo_lines(
            traced.map(|s| (m.slo_s)(s).map(|v| v * m.scale)),
            m.name,
            m.unit,
        );
        out.add(m.stems[0], Figure::Line(cdf));
        out.add(m.stems[1], Figure::Line(time));
    }
}

/// Windows over the replay: 30 of equal length (fewer when there are few requests, at least
/// 20 requests a window on average), each a point at its middle with the p99 of the latencies
/// of the requests that arrived in it. `rows`: (arrival, latency) in seconds; latencies are
/// multiplied by `scale`.
fn p99_windows(rows: &[(f64, f64)], scale: f64) -> Vec<(f64, f64)> {
    let (t0, t1) = rows
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| {
            (a.min(r.0), b.max(r.0))
        });
    let n = (rows.len() / 20).clamp(1, 30);
    let width = ((t1 - t0) / n as f64).max(1e-9);
    let mut bins: Vec<Vec<f64>> = vec![Vec::new(); n];
    for &(t, v) in rows {
        let k = (((t - t0) / width) as usize).min(n - 1);
        bins[k].push(v * scale);
    }
    bins.into_iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(k, mut b)| {
            b.sort_by(f64::total_cmp);
            (
                t0 + (k as f64 + 0.5) * width,
                nearest_rank(&b, 0.99).expect("a non-empty window"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(curve: &str, source: &str, rate: f64) -> CurvePoint {
        CurvePoint {
            curve: curve.into(),
            source: source.into(),
            strategy: "colocated".into(),
            rate_rps: rate,
            m: Metrics {
                requests: 10,
                finished: 10,
                duration_s: 10.0,
                ..Default::default()
            },
        }
    }

    #[test]
    fn colour_follows_the_deployment_and_pattern_the_directory() {
        let points = [
            point("runA/b-stage", "sim", 4.0),
            point("runA/c-modality", "sim", 4.0),
            point("runB/b-stage", "sim", 4.0),
            point("runB/c-modality", "sim", 4.0),
            point("runB/c-modality", "exec", 4.0),
        ];
        let series = curve_series(&points, |p| Some(p.rate_rps), |p| Some(p.rate_rps));
        let look: Vec<(usize, usize, bool)> = series
            .iter()
            .map(|s| (s.style, s.pattern, s.measured))
            .collect();
        // b-stage blue in both directories, c-modality vermillion; runA solid, runB dashed,
        // runB's measured rows a third pattern with hollow markers.
        assert_eq!(
            look,
            vec![
                (0, 0, false),
                (1, 0, false),
                (0, 1, false),
                (1, 1, false),
                (1, 2, true)
            ]
        );
    }

    #[test]
    fn windows_hold_the_p99_of_their_arrivals() {
        // 40 requests over 0..39 s: two windows of 19.5 s; latency = arrival / 100.
        let rows: Vec<(f64, f64)> = (0..40).map(|i| (i as f64, i as f64 / 100.0)).collect();
        let w = p99_windows(&rows, 1.0);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0], (9.75, 0.19));
        assert_eq!(w[1], (29.25, 0.39));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0], 0.5), Some(2.0));
    }
}
