//! The tables: scenario comparison, latency–throughput curves, transfers and links by strategy,
//! and the cost breakdown. Numbers come from `metrics` (pooled) or from small polars queries here.

use std::collections::{BTreeMap, BTreeSet};

use hetsim_sim::error::InputError;
use polars::prelude::*;

use crate::columns::{f64s, texts, u64s};
use crate::load::Results;
use crate::metrics::{self, Metrics, Scenario, input};
use crate::table::{Show, Table, Value};

const MS: Show = Show::Fixed {
    scale: 1e3,
    decimals: 0,
};
const S2: Show = Show::Fixed {
    scale: 1.0,
    decimals: 2,
};

fn num(v: Option<f64>) -> Value {
    Value::Num(v.filter(|x| x.is_finite()))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// A point of a latency–throughput curve: every scenario of a curve at one offered rate, pooled.
#[derive(Debug, Clone)]
pub struct CurvePoint {
    pub curve: String,
    pub source: String,
    pub strategy: String,
    pub rate_rps: f64,
    pub m: Metrics,
}

/// The finished requests of the scenarios that replay a trace (no offered rate), per curve and
/// source, as (arrival, latency) in seconds, in arrival order: trace replays have no rate sweep,
/// so their latency is drawn as a distribution and over the replay.
#[derive(Debug, Clone)]
pub struct TraceLatency {
    pub curve: String,
    pub source: String,
    pub ttft: Vec<(f64, f64)>,
    /// Requests of more than one output token.
    pub tpot: Vec<(f64, f64)>,
}

pub fn trace_latencies(
    r: &Results,
    scenarios: &[Scenario],
) -> Result<Vec<TraceLatency>, InputError> {
    let traced: BTreeSet<(&str, &str)> = scenarios
        .iter()
        .filter(|s| s.rate_rps.is_none())
        .map(|s| (s.scenario.as_str(), s.source.as_str()))
        .collect();
    if traced.is_empty() {
        return Ok(Vec::new());
    }
    let df = r
        .requests
        .clone()
        .filter(col("ttft_s").is_not_null())
        .select([
            col("scenario"),
            col("source"),
            col("arrival_s"),
            col("ttft_s"),
            col("tpot_s"),
        ])
        .sort(["arrival_s"], SortMultipleOptions::default())
        .collect()
        .map_err(input("requests"))?;
    let get = || -> PolarsResult<Vec<TraceLatency>> {
        let (scenario, source) = (texts(&df, "scenario")?, texts(&df, "source")?);
        let (arrival, ttft, tpot) = (
            f64s(&df, "arrival_s")?,
            f64s(&df, "ttft_s")?,
            f64s(&df, "tpot_s")?,
        );
        let mut by: BTreeMap<(String, String), TraceLatency> = BTreeMap::new();
        for i in 0..df.height() {
            if !traced.contains(&(scenario[i].as_str(), source[i].as_str())) {
                continue;
            }
            let curve = metrics::curve_name(&scenario[i]);
            let t = by
                .entry((curve.clone(), source[i].clone()))
                .or_insert_with(|| TraceLatency {
                    curve,
                    source: source[i].clone(),
                    ttft: Vec::new(),
                    tpot: Vec::new(),
                });
            let (Some(a), Some(f)) = (arrival[i], ttft[i]) else {
                continue;
            };
            t.ttft.push((a, f));
            if let Some(p) = tpot[i] {
                t.tpot.push((a, p));
            }
        }
        Ok(by.into_values().collect())
    };
    get().map_err(input("requests"))
}

/// Scenario rows in reading order: by curve, then offered rate, then name; sim before exec.
pub fn ordered(scenarios: &[Scenario]) -> Vec<&Scenario> {
    let mut v: Vec<&Scenario> = scenarios.iter().collect();
    v.sort_by(|a, b| {
        metrics::curve_name(&a.scenario)
            .cmp(&metrics::curve_name(&b.scenario))
            .then(
                a.rate_rps
                    .unwrap_or(f64::NAN)
                    .total_cmp(&b.rate_rps.unwrap_or(f64::NAN)),
            )
            .then(a.scenario.cmp(&b.scenario))
            .then(b.source.cmp(&a.source))
    });
    v
}

pub fn per_scenario(
    r: &Results,
    scenarios: &[Scenario],
) -> Result<BTreeMap<(String, String), Metrics>, InputError> {
    let pairs: Vec<(String, String, String)> = scenarios
        .iter()
        .map(|s| (s.scenario.clone(), s.source.clone(), s.scenario.clone()))
        .collect();
    metrics::aggregate(r, &pairs)
}

pub fn comparison(scenarios: &[Scenario], per: &BTreeMap<(String, String), Metrics>) -> Table {
    let links: BTreeSet<&String> = per.values().flat_map(|m| m.link_bytes.keys()).collect();
    let mut t = Table::new(
        "comparison",
        "Scenario comparison",
        "One row per scenario and source (sim = simulated, exec = measured). Repeated runs of a \
         scenario are pooled: counts, bytes, time and dollars summed, rates as ratios of sums, \
         latency percentiles (nearest rank) over all finished requests. SLO = share of arrived \
         requests meeting both TTFT and TPOT targets. Bytes per link from the transfers table.",
    );
    let c = crate::table::column;
    t.columns = vec![
        c("scenario", "scenario", Show::Plain),
        c("source", "src", Show::Plain),
        c("strategy", "strategy", Show::Plain).file_only(),
        c("model", "model", Show::Plain).file_only(),
        c("gpus", "GPUs", Show::Plain).file_only(),
        c("rate_rps", "rate req/s", Show::Plain).file_only(),
        c("runs", "runs", Show::Plain),
        c("requests", "requests", Show::Plain).file_only(),
        c("finished", "done", Show::Plain),
        c("dropped", "dropped", Show::Plain).file_only(),
        c("duration_s", "duration s", S2).file_only(),
        c("throughput_rps", "req/s", S2),
        c("output_tokens", "output tokens", Show::Plain).file_only(),
        c(
            "output_tokens_per_s",
            "tok/s",
            Show::Fixed {
                scale: 1.0,
                decimals: 0,
            },
        ),
        c("goodput_rps", "goodput req/s", S2),
        c("slo_attainment", "SLO", Show::Percent { decimals: 0 }),
    ];
    for (lat, label) in [("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E")] {
        for (_, q) in metrics::QUANTILES {
            let col = c(&format!("{lat}_{q}_s"), &format!("{label} {q} ms"), MS);
            // The terminal keeps p50 and p99; p90 lives in the files.
            t.columns.push(if q == "p90" || lat == "e2e" && q == "p50" {
                col.file_only()
            } else {
                col
            });
        }
    }
    t.columns.extend([
        c("emb_bytes", "embedding bytes", Show::Bytes).file_only(),
        c("kv_bytes", "KV bytes", Show::Bytes).file_only(),
        c("bytes_per_request", "moved/req", Show::Bytes),
    ]);
    for l in &links {
        t.columns
            .push(c(&format!("bytes_{l}"), &format!("on {l}"), Show::Bytes));
    }
    t.columns.extend([
        c("busiest_port", "busiest port", Show::Plain).file_only(),
        c(
            "busiest_port_utilization",
            "busiest port",
            Show::Percent { decimals: 1 },
        ),
        c("pricing", "pricing", Show::Plain).file_only(),
        c("usd_per_hour", "$/h", S2),
        c(
            "cost_usd",
            "cost $",
            Show::Fixed {
                scale: 1.0,
                decimals: 4,
            },
        )
        .file_only(),
        c(
            "tokens_per_dollar",
            "tokens/$",
            Show::Fixed {
                scale: 1.0,
                decimals: 0,
            },
        ),
    ]);
    for s in ordered(scenarios) {
        let m = per
            .get(&(s.scenario.clone(), s.source.clone()))
            .cloned()
            .unwrap_or_default();
        let mut row = vec![
            text(&s.scenario),
            text(&s.source),
            text(&s.strategy),
            text(&s.model),
            text(&s.gpus),
            num(s.rate_rps),
            Value::Int(Some(s.runs)),
            Value::Int(Some(m.requests)),
            Value::Int(Some(m.finished)),
            Value::Int(Some(m.dropped)),
            num(Some(m.duration_s)),
            num(m.throughput_rps()),
            Value::Int(Some(m.output_tokens)),
            num(m.output_tokens_per_s()),
            num(m.goodput_rps()),
            num(m.slo_attainment()),
        ];
        for lat in [&m.ttft, &m.tpot, &m.e2e] {
            row.extend(lat.iter().map(|v| num(*v)));
        }
        row.extend([
            Value::Int(Some(m.emb_bytes)),
            Value::Int(Some(m.kv_bytes)),
            num(m.bytes_per_request()),
        ]);
        for l in &links {
            row.push(Value::Int(Some(m.link_bytes.get(*l).copied().unwrap_or(0))));
        }
        let (port, util) = match &m.busiest_port {
            Some((p, u)) => (text(p), num(Some(*u))),
            None => (text("-"), num(None)),
        };
        row.extend([
            port,
            util,
            text(&s.pricing),
            num(Some(m.usd_per_hour)),
            num(Some(m.cost_usd)),
            num(m.tokens_per_dollar()),
        ]);
        t.push(row);
    }
    t
}

/// Curve points: scenarios grouped by curve name (see `metrics::curve_name`), source and rate.
/// Scenarios without an offered rate (trace replay) are on no curve.
pub fn curve_points(r: &Results, scenarios: &[Scenario]) -> Result<Vec<CurvePoint>, InputError> {
    // Group ids are indices into `keys`; the meaning stays on the Rust side.
    let mut keys: Vec<(String, String, u64)> = Vec::new(); // curve, strategy, rate bits
    let mut pairs = Vec::new();
    for s in scenarios {
        let Some(rate) = s.rate_rps else { continue };
        let key = (
            metrics::curve_name(&s.scenario),
            s.strategy.clone(),
            rate.to_bits(),
        );
        let id = match keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                keys.push(key);
                keys.len() - 1
            }
        };
        pairs.push((s.scenario.clone(), s.source.clone(), id.to_string()));
    }
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let pooled = metrics::aggregate(r, &pairs)?;
    let mut points: Vec<CurvePoint> = pooled
        .into_iter()
        .map(|((id, source), m)| {
            let i: usize = id.parse().expect("group ids are indices");
            let (curve, strategy, rate) = keys[i].clone();
            CurvePoint {
                curve,
                source,
                strategy,
                rate_rps: f64::from_bits(rate),
                m,
            }
        })
        .collect();
    points.sort_by(|a, b| {
        a.curve
            .cmp(&b.curve)
            .then(b.source.cmp(&a.source))
            .then(a.rate_rps.total_cmp(&b.rate_rps))
    });
    Ok(points)
}

pub fn curves(points: &[CurvePoint]) -> Table {
    let mut t = Table::new(
        "curves",
        "Latency–throughput and SLO attainment against offered rate",
        "Scenarios grouped by name without the rate and seed matrix values; each row pools every \
         run and seed of a curve at one offered rate.",
    );
    let c = crate::table::column;
    t.columns = vec![
        c("curve", "curve", Show::Plain),
        c("source", "src", Show::Plain),
        c("strategy", "strategy", Show::Plain),
        c("rate_rps", "rate req/s", Show::Plain),
        c("rows", "runs", Show::Plain),
        c("throughput_rps", "req/s", S2),
        c("goodput_rps", "goodput req/s", S2),
        c("slo_attainment", "SLO", Show::Percent { decimals: 1 }),
        c("ttft_p50_s", "TTFT p50 ms", MS),
        c("ttft_p99_s", "TTFT p99 ms", MS),
        c("tpot_p50_s", "TPOT p50 ms", MS),
        c("tpot_p99_s", "TPOT p99 ms", MS),
        c("e2e_p99_s", "E2E p99 ms", MS),
        c(
            "busiest_port_utilization",
            "busiest port",
            Show::Percent { decimals: 1 },
        ),
        c(
            "tokens_per_dollar",
            "tokens/$",
            Show::Fixed {
                scale: 1.0,
                decimals: 0,
            },
        ),
    ];
    for p in points {
        let m = &p.m;
        t.push(vec![
            text(&p.curve),
            text(&p.source),
            text(&p.strategy),
            num(Some(p.rate_rps)),
            Value::Int(Some(m.rows)),
            num(m.throughput_rps()),
            num(m.goodput_rps()),
            num(m.slo_attainment()),
            num(m.ttft[0]),
            num(m.ttft[2]),
            num(m.tpot[0]),
            num(m.tpot[2]),
            num(m.e2e[2]),
            num(m.busiest_port.as_ref().map(|(_, u)| *u)),
            num(m.tokens_per_dollar()),
        ]);
    }
    t
}

fn strategy_groups(scenarios: &[Scenario]) -> Vec<(String, String, String)> {
    scenarios
        .iter()
        .map(|s| (s.scenario.clone(), s.source.clone(), s.strategy.clone()))
        .collect()
}

/// Transfer bytes by strategy, kind and link (transfers table). Strategies that ship nothing get
/// a row saying so, so the table shows every strategy compared.
pub fn transfers(
    r: &Results,
    scenarios: &[Scenario],
    per: &BTreeMap<(String, String), Metrics>,
) -> Result<Table, InputError> {
    let groups = metrics::grouping(&strategy_groups(scenarios))?;
    let df = r
        .transfers
        .clone()
        .join(
            groups,
            [col("scenario"), col("source")],
            [col("scenario"), col("source")],
            JoinArgs::new(JoinType::Inner),
        )
        .group_by([col("group"), col("source"), col("kind"), col("link")])
        .agg([
            len().alias("transfers"),
            col("bytes").sum().alias("bytes"),
            col("bytes").mean().alias("mean_bytes"),
            (col("end_s") - col("start_s")).mean().alias("mean_s"),
            (col("start_s") - col("ready_s")).mean().alias("wait_s"),
        ])
        .sort(
            ["group", "source", "kind", "link"],
            SortMultipleOptions::default(),
        )
        .collect()
        .map_err(input("transfers"))?;
    // Requests that arrived in the scenarios of each (strategy, source) that shipped over each
    // link: the denominator of bytes per request (pooled experiments may differ in links).
    let used = r
        .transfers
        .clone()
        .select([col("scenario"), col("source"), col("link")])
        .unique(None, UniqueKeepStrategy::First)
        .collect()
        .map_err(input("transfers"))?;
    let (us, uo, ul) = (
        texts(&used, "scenario").map_err(input("transfers"))?,
        texts(&used, "source").map_err(input("transfers"))?,
        texts(&used, "link").map_err(input("transfers"))?,
    );
    let mut arrived: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for s in scenarios {
        let m = per.get(&(s.scenario.clone(), s.source.clone()));
        for i in (0..used.height()).filter(|&i| us[i] == s.scenario && uo[i] == s.source) {
            *arrived
                .entry((s.strategy.clone(), s.source.clone(), ul[i].clone()))
                .or_default() += m.map_or(0, |m| m.requests);
        }
    }
    let mut t = Table::new(
        "transfers",
        "Transfer bytes by strategy",
        "Every transfer of every scenario of a strategy. bytes/request divides by all requests \
         that arrived in those of its scenarios that used the link; wait = ready until the first \
         byte left.",
    );
    let c = crate::table::column;
    t.columns = vec![
        c("strategy", "strategy", Show::Plain),
        c("source", "src", Show::Plain),
        c("kind", "kind", Show::Plain),
        c("link", "link", Show::Plain),
        c("transfers", "transfers", Show::Plain),
        c("bytes", "bytes", Show::Bytes),
        c("bytes_per_transfer", "per transfer", Show::Bytes),
        c("bytes_per_request", "per request", Show::Bytes),
        c(
            "transfer_s_mean",
            "mean time ms",
            Show::Fixed {
                scale: 1e3,
                decimals: 2,
            },
        ),
        c(
            "wait_s_mean",
            "mean wait ms",
            Show::Fixed {
                scale: 1e3,
                decimals: 2,
            },
        ),
    ];
    let get = || -> PolarsResult<Vec<Vec<Value>>> {
        let (g, s, k, l) = (
            texts(&df, "group")?,
            texts(&df, "source")?,
            texts(&df, "kind")?,
            texts(&df, "link")?,
        );
        let (n, b) = (u64s(&df, "transfers")?, u64s(&df, "bytes")?);
        let (mean, secs, wait) = (
            f64s(&df, "mean_bytes")?,
            f64s(&df, "mean_s")?,
            f64s(&df, "wait_s")?,
        );
        let mut rows = Vec::new();
        for i in 0..df.height() {
            let req = arrived
                .get(&(g[i].clone(), s[i].clone(), l[i].clone()))
                .copied();
            rows.push(vec![
                text(&g[i]),
                text(&s[i]),
                text(&k[i]),
                text(&l[i]),
                Value::Int(Some(n[i])),
                Value::Int(Some(b[i])),
                num(mean[i]),
                num(req.filter(|&r| r > 0).map(|r| b[i] as f64 / r as f64)),
                num(secs[i]),
                num(wait[i]),
            ]);
        }
        Ok(rows)
    };
    let rows = get().map_err(input("transfers"))?;
    let shipped: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Text(a), Value::Text(b)) => (a.clone(), b.clone()),
            _ => unreachable!("text columns"),
        })
        .collect();
    for row in rows {
        t.push(row);
    }
    let compared: std::collections::BTreeSet<(String, String)> = scenarios
        .iter()
        .map(|s| (s.strategy.clone(), s.source.clone()))
        .collect();
    for (strategy, source) in &compared {
        if !shipped.contains(&(strategy.clone(), source.clone())) {
            t.push(vec![
                text(strategy),
                text(source),
                text("none"),
                text("-"),
                Value::Int(Some(0)),
                Value::Int(Some(0)),
                num(None),
                num(Some(0.0)),
                num(None),
                num(None),
            ]);
        }
    }
    // By strategy, sim before exec (as in the comparison), then kind and link.
    t.rows.sort_by_key(|r| {
        let text = |i: usize| crate::table::show(&r[i], Show::Plain);
        (text(0), text(1) != "sim", text(2), text(3))
    });
    Ok(t)
}

/// Link utilisation by strategy and catalog link (links table): one row per port direction
/// pooled over the strategy's scenarios.
pub fn links(r: &Results, scenarios: &[Scenario]) -> Result<Table, InputError> {
    let groups = metrics::grouping(&strategy_groups(scenarios))?;
    let df = r
        .links
        .clone()
        .join(
            groups,
            [col("scenario"), col("source")],
            [col("scenario"), col("source")],
            JoinArgs::new(JoinType::Inner),
        )
        .group_by([col("group"), col("source"), col("link")])
        .agg([
            col("port").n_unique().alias("ports"),
            col("scenario").n_unique().alias("scenarios"),
            col("bytes").sum().alias("bytes"),
            col("utilization").mean().alias("mean_util"),
            col("utilization").max().alias("max_util"),
            col("busy_s").sum().alias("busy_s"),
        ])
        .sort(["group", "source", "link"], SortMultipleOptions::default())
        .collect()
        .map_err(input("links"))?;
    let mut t = Table::new(
        "links",
        "Link utilisation by strategy",
        "Port directions that carried bytes (a host-staged PCIe copy crosses several ports, so \
         port bytes exceed transfer bytes). Utilization = bytes / (port bandwidth × run).",
    );
    let c = crate::table::column;
    t.columns = vec![
        c("strategy", "strategy", Show::Plain),
        c("source", "src", Show::Plain),
        c("link", "link", Show::Plain),
        c("ports", "ports", Show::Plain),
        c("scenarios", "scenarios", Show::Plain),
        c("bytes", "bytes", Show::Bytes),
        c("busy_s", "busy s", S2),
        c(
            "utilization_mean",
            "mean util",
            Show::Percent { decimals: 1 },
        ),
        c(
            "utilization_max",
            "peak util",
            Show::Percent { decimals: 1 },
        ),
    ];
    let mut get = || -> PolarsResult<()> {
        let (g, s, l) = (
            texts(&df, "group")?,
            texts(&df, "source")?,
            texts(&df, "link")?,
        );
        let (ports, scen, b) = (
            u64s(&df, "ports")?,
            u64s(&df, "scenarios")?,
            u64s(&df, "bytes")?,
        );
        let (mean, max, busy) = (
            f64s(&df, "mean_util")?,
            f64s(&df, "max_util")?,
            f64s(&df, "busy_s")?,
        );
        for i in 0..df.height() {
            t.push(vec![
                text(&g[i]),
                text(&s[i]),
                text(&l[i]),
                Value::Int(Some(ports[i])),
                Value::Int(Some(scen[i])),
                Value::Int(Some(b[i])),
                num(busy[i]),
                num(mean[i]),
                num(max[i]),
            ]);
        }
        Ok(())
    };
    get().map_err(input("links"))?;
    Ok(t)
}

/// Cost per scenario and GPU type (instances table), plus the GPUs no instance used, which the
/// summary's cost includes (every GPU of the cluster is paid for).
#[derive(Debug, Clone)]
pub struct CostRow {
    pub scenario: String,
    pub source: String,
    pub gpu: String,
    /// None where the results hold no instance rows for the scenario (unknown, not zero).
    pub instances: Option<u64>,
    pub gpus: Option<u64>,
    pub utilization: Option<f64>,
    pub cost_usd: f64,
    pub usd_per_hour: Option<f64>,
    pub share: Option<f64>,
}

/// Label of the cost row for GPUs that hold no instance.
pub const UNUSED_GPUS: &str = "unused GPUs";

/// Label of the cost row of a scenario whose results hold no instance rows at all (`hetsim
/// validate` and the GPU harness give only the summary's total): the whole cluster's cost, of
/// GPUs that may well have been busy, so not "unused".
pub const NO_INSTANCE_ROWS: &str = "all GPUs (no instance rows)";

pub fn cost_rows(
    r: &Results,
    scenarios: &[Scenario],
    per: &BTreeMap<(String, String), Metrics>,
) -> Result<Vec<CostRow>, InputError> {
    let df = r
        .instances
        .clone()
        .group_by([col("scenario"), col("source"), col("gpu")])
        .agg([
            // Instances of one run; summed over runs they would count repeats.
            (len() / col("run").n_unique()).alias("instances"),
            (col("tp").sum() / col("run").n_unique()).alias("gpus"),
            col("utilization").mean().alias("utilization"),
            col("cost_usd").sum().alias("cost_usd"),
        ])
        .sort(
            ["scenario", "source", "gpu"],
            SortMultipleOptions::default(),
        )
        .collect()
        .map_err(input("instances"))?;
    let mut by_scenario: BTreeMap<(String, String), Vec<CostRow>> = BTreeMap::new();
    let mut get = || -> PolarsResult<()> {
        let (sc, so, g) = (
            texts(&df, "scenario")?,
            texts(&df, "source")?,
            texts(&df, "gpu")?,
        );
        let (n, gpus) = (u64s(&df, "instances")?, u64s(&df, "gpus")?);
        let (util, cost) = (f64s(&df, "utilization")?, f64s(&df, "cost_usd")?);
        for i in 0..df.height() {
            by_scenario
                .entry((sc[i].clone(), so[i].clone()))
                .or_default()
                .push(CostRow {
                    scenario: sc[i].clone(),
                    source: so[i].clone(),
                    gpu: g[i].clone(),
                    instances: Some(n[i]),
                    gpus: Some(gpus[i]),
                    utilization: util[i],
                    cost_usd: cost[i].unwrap_or(0.0),
                    usd_per_hour: None,
                    share: None,
                });
        }
        Ok(())
    };
    get().map_err(input("instances"))?;
    let mut out = Vec::new();
    for s in ordered(scenarios) {
        let key = (s.scenario.clone(), s.source.clone());
        let Some(m) = per.get(&key) else { continue };
        let mut rows = by_scenario.remove(&key).unwrap_or_default();
        let used: f64 = rows.iter().map(|r| r.cost_usd).sum();
        // Summary cost counts every GPU; instance costs only the GPUs instances hold. Anything
        // above float noise is paid for GPUs that did nothing.
        let unused = m.cost_usd - used;
        if rows.is_empty() && m.cost_usd > 0.0 {
            // Nothing says which GPUs were used or how busy they were.
            rows.push(CostRow {
                scenario: s.scenario.clone(),
                source: s.source.clone(),
                gpu: NO_INSTANCE_ROWS.to_string(),
                instances: None,
                gpus: None,
                utilization: None,
                cost_usd: m.cost_usd,
                usd_per_hour: None,
                share: None,
            });
        } else if unused > 1e-9 * m.cost_usd.max(1e-12) {
            rows.push(CostRow {
                scenario: s.scenario.clone(),
                source: s.source.clone(),
                gpu: UNUSED_GPUS.to_string(),
                instances: Some(0),
                gpus: Some(0),
                utilization: Some(0.0),
                cost_usd: unused,
                usd_per_hour: None,
                share: None,
            });
        }
        for r in &mut rows {
            r.usd_per_hour = ratio(r.cost_usd * 3600.0, m.duration_s);
            r.share = ratio(r.cost_usd, m.cost_usd);
        }
        out.extend(rows);
    }
    Ok(out)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

pub fn cost(rows: &[CostRow]) -> Table {
    let mut t = Table::new(
        "cost",
        "Cost breakdown by GPU type",
        "Per scenario: the instances on each GPU type (instances table, cost_usd = their GPUs over \
         the run), and the GPUs of the cluster no instance used; where the results hold no instance \
         rows (validate, the GPU harness), one row of the whole cluster. Shares add up to the \
         scenario's cost_usd in the comparison table.",
    );
    let c = crate::table::column;
    t.columns = vec![
        c("scenario", "scenario", Show::Plain),
        c("source", "src", Show::Plain),
        c("gpu", "GPU", Show::Plain),
        c("instances", "instances", Show::Plain),
        c("gpus", "GPUs", Show::Plain),
        c(
            "utilization_mean",
            "mean busy",
            Show::Percent { decimals: 0 },
        ),
        c("usd_per_hour", "$/h", S2),
        c(
            "cost_usd",
            "cost $",
            Show::Fixed {
                scale: 1.0,
                decimals: 4,
            },
        ),
        c("share", "share", Show::Percent { decimals: 1 }),
    ];
    for r in rows {
        t.push(vec![
            text(&r.scenario),
            text(&r.source),
            text(&r.gpu),
            Value::Int(r.instances),
            Value::Int(r.gpus),
            num(r.utilization),
            num(r.usd_per_hour),
            num(Some(r.cost_usd)),
            num(r.share),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load;
    use crate::metrics::{pooling_fixture, scenarios};

    /// `hetsim validate` and the GPU harness write no instance rows: their cost is the whole
    /// cluster's, with the GPU count and how busy they were unknown, not "unused GPUs", 0 of
    /// them, 0 % busy.
    #[test]
    fn cost_without_instance_rows_is_the_whole_cluster_not_unused_gpus() {
        let root = tempfile::tempdir().unwrap();
        let r = load(&pooling_fixture(root.path())).unwrap();
        let sc = scenarios(&r).unwrap();
        let per = per_scenario(&r, &sc).unwrap();
        let rows = cost_rows(&r, &sc, &per).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.gpu, NO_INSTANCE_ROWS);
        assert_eq!(
            (row.instances, row.gpus, row.utilization),
            (None, None, None)
        );
        let m = &per[&(row.scenario.clone(), row.source.clone())];
        assert_eq!(row.cost_usd, m.cost_usd);
        assert_eq!(row.share, Some(1.0));
        let table = cost(&rows);
        let md = table.to_markdown();
        assert!(
            md.contains("| all GPUs (no instance rows) | - | - | - |"),
            "{md}"
        );
        // And no cost figure: no instance has a cost of its own.
        let mut figs = crate::figures::Figures::default();
        crate::figures::cost_breakdown(&rows, &per, &mut figs);
        assert!(figs.drawn.is_empty());
        assert_eq!(
            figs.skipped,
            vec![("cost_breakdown", "no instance has a cost of its own")]
        );
    }
}
