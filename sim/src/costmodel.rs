//! `hetsim cost`: the closed-form cost model beside the simulator, scenario by scenario.
//! `docs/cost-model.md` derives what is computed here.

use crate::capacity::{
    DeploymentCapacity, PhaseTimes, RequestMix, deployment_capacity, tier_times,
};
use crate::catalog::GpuSpec;
use crate::engine::simulate;
use crate::error::Error;
use crate::experiment::{Experiment, Scenario, Strategy, base_name};
use crate::headroom::{Capacity, MIN_REQUESTS, at_rate, capacity_search};
use crate::records::MemorySink;
use crate::table::{Table, Value};

/// One scenario: predicted and simulated capacity and Tokens/$.
pub struct ScenarioCost {
    pub name: String,
    pub scenario: Scenario,
    pub capex_usd: f64,
    pub usd_per_hour: f64,
    pub mix: RequestMix,
    pub capacity: DeploymentCapacity,
    /// Capacity the simulator reaches at saturation; NaN where the run is too short to reach it.
    pub simulated_rps: f64,
    pub simulated_tokens_per_dollar: f64,
    /// The highest rate served within the SLO and keeping up (`headroom`), where measurable.
    pub slo_capacity: Option<Capacity>,
    /// Requests the saturation run replayed.
    pub saturation_requests: u64,
}

impl ScenarioCost {
    pub fn predicted_tokens_per_dollar(&self) -> f64 {
        self.capacity.requests_per_s * self.mix.output_tokens * 3600.0 / self.usd_per_hour
    }
}

pub struct CostReport {
    pub tiers: Table,
    pub deployments: Table,
    pub versus: Table,
    pub placements: Table,
    pub notes: Vec<String>,
}

/// Predicts each scenario's capacity, then simulates it at 1.5× that rate (`requests` requests;
/// a trace's own requests with its timestamps compressed to that rate) to measure the capacity
/// the engine actually reaches. Tokens/$ here are at saturation: the deployment's best, not what
/// a given offered rate yields.
pub fn evaluate(s: &Scenario, requests: u64) -> Result<ScenarioCost, Error> {
    let mix = RequestMix::of(s, 2000)?;
    let capacity = deployment_capacity(s, &mix);
    let sat = at_rate(s, 1.5 * capacity.requests_per_s, Some(requests))?;
    let mut rows = MemorySink::default();
    let run = simulate(&sat, &mut rows, &mut |_| {})?;
    // Capacity is the rate tokens come out while requests still arrive faster than they can be
    // served, over the second half of the arrivals (the first half fills the batches; after the
    // last arrival the backlog drains unevenly, fast instances idling first).
    let end = rows
        .requests
        .iter()
        .map(|r| r.arrival_s)
        .fold(0.0, f64::max);
    let tokens_by = |t: f64| -> f64 {
        rows.requests
            .iter()
            .filter_map(|r| {
                let first = r.prefill_end_s.filter(|f| *f <= t)?;
                let step = r.tpot_s.unwrap_or(f64::INFINITY);
                Some((1.0 + ((t - first) / step).floor()).min(r.output_tokens as f64))
            })
            .sum()
    };
    let mean_out = rows
        .requests
        .iter()
        .map(|r| r.output_tokens as f64)
        .sum::<f64>()
        / rows.requests.len().max(1) as f64;
    let tokens_per_s = if end > 0.0 {
        (tokens_by(end) - tokens_by(end / 2.0)) / (end / 2.0)
    } else {
        run.summary.output_tokens_per_s
    };
    // Too few requests (a short trace) never fill the batches: no saturation to read.
    let measured = run.summary.requests >= MIN_REQUESTS;
    let simulated_rps = if measured {
        tokens_per_s / mean_out
    } else {
        f64::NAN
    };
    let slo_capacity = if measured {
        capacity_search(s, simulated_rps, requests)?
    } else {
        None
    };
    Ok(ScenarioCost {
        name: base_name(&s.name).to_string(),
        capex_usd: s.cluster.purchase_usd(&s.pricing).unwrap_or(f64::NAN),
        usd_per_hour: run.summary.usd_per_hour,
        simulated_rps,
        simulated_tokens_per_dollar: simulated_rps * mean_out * 3600.0 / run.summary.usd_per_hour,
        slo_capacity,
        saturation_requests: run.summary.requests,
        scenario: s.clone(),
        mix,
        capacity,
    })
}

/// A figure, or an empty cell where it could not be measured.
fn finite(v: f64) -> Value {
    if v.is_finite() {
        Value::F64(v)
    } else {
        Value::Null
    }
}

pub fn cost_report(exp: &Experiment, requests: u64) -> Result<CostReport, Error> {
    // Capacity does not depend on the offered rate: one evaluation per scenario base name.
    let mut seen = Vec::new();
    let mut costs = Vec::new();
    for s in &exp.scenarios {
        let b = base_name(&s.name);
        if !seen.contains(&b) {
            seen.push(b);
            costs.push(evaluate(s, requests)?);
        }
    }
    let compare = exp.compare.clone().unwrap_or_default();
    let base_idx = compare
        .baseline
        .as_ref()
        .and_then(|b| costs.iter().position(|c| &c.name == b))
        .unwrap_or(0);
    let mut notes = Vec::new();

    let mut deployments = Table::new(&[
        "scenario",
        "strategy",
        "gpus",
        "capex_usd",
        "usd_per_hour",
        "predicted_rps",
        "bottleneck",
        "simulated_rps",
        "error_pct",
        "slo_capacity_rps",
        "predicted_tokens_per_dollar",
        "simulated_tokens_per_dollar",
        "basis",
        "interval_pct",
    ]);
    for c in &costs {
        if c.scenario.workload.trace.is_some() {
            notes.push(if c.simulated_rps.is_finite() {
                format!(
                    "{}: a trace, replayed at saturation as the others: its {} requests with their timestamps compressed to \
                     offer 1.5 × the predicted capacity (the trace's own rate says nothing about capacity)",
                    c.name, c.saturation_requests
                )
            } else {
                format!(
                    "{}: the trace holds {} requests, too few to reach saturation (at least {MIN_REQUESTS}): no simulated \
                     capacity to compare the closed form with",
                    c.name, c.saturation_requests
                )
            });
        }
        if let Some(cap) = c.slo_capacity.as_ref().filter(|cap| cap.per_seed.len() > 1) {
            notes.push(format!(
                "{}: SLO capacity over {} seeds, spread {:.2} req/s",
                c.name,
                cap.per_seed.len(),
                cap.spread()
            ));
        }
        deployments.push(vec![
            Value::Str(c.name.clone()),
            Value::Str(c.scenario.strategy.name().into()),
            Value::Str(crate::engine::gpu_mix(&c.scenario)),
            Value::F64(c.capex_usd),
            Value::F64(c.usd_per_hour),
            Value::F64(c.capacity.requests_per_s),
            Value::Str(c.capacity.bottleneck.clone()),
            finite(c.simulated_rps),
            finite(100.0 * (c.capacity.requests_per_s - c.simulated_rps) / c.simulated_rps),
            c.slo_capacity
                .as_ref()
                .map_or(Value::Null, |cap| Value::F64(cap.requests_per_s)),
            Value::F64(c.predicted_tokens_per_dollar()),
            finite(c.simulated_tokens_per_dollar),
            Value::Str(crate::trust::least_certain(&c.scenario.basis).name().into()),
            Value::F64(crate::trust::least_certain(&c.scenario.basis).error_pct()),
        ]);
    }

    let base = &costs[base_idx];
    let mut versus = Table::new(&[
        "scenario",
        "vs",
        "capex_saving",
        "throughput_ratio_predicted",
        "throughput_ratio_simulated",
        "tokens_per_dollar_gain_predicted",
        "tokens_per_dollar_gain_simulated",
        "reported_capex_saving",
        "reported_throughput_ratio",
        "reported_tokens_per_dollar_gain",
    ]);
    for c in costs.iter().filter(|c| c.name != base.name) {
        let rep = compare.reported.get(&c.name);
        let opt = |v: Option<f64>| v.map_or(Value::Null, Value::F64);
        let sim_ratio = c.simulated_rps / base.simulated_rps;
        versus.push(vec![
            Value::Str(c.name.clone()),
            Value::Str(base.name.clone()),
            Value::F64(1.0 - c.capex_usd / base.capex_usd),
            Value::F64(c.capacity.requests_per_s / base.capacity.requests_per_s),
            finite(sim_ratio),
            Value::F64(c.predicted_tokens_per_dollar() / base.predicted_tokens_per_dollar() - 1.0),
            finite(c.simulated_tokens_per_dollar / base.simulated_tokens_per_dollar - 1.0),
            opt(rep.and_then(|r| r.capex_saving)),
            opt(rep.and_then(|r| r.throughput_ratio)),
            opt(rep.and_then(|r| r.tokens_per_dollar_gain)),
        ]);
        if let Some(reported) = rep.and_then(|r| r.throughput_ratio) {
            notes.push(explain_gap(base, c, reported, sim_ratio));
        }
    }

    // Phase costs per GPU type, and the cheapest placement of the phases at the baseline's rate.
    let lambda = base.scenario.rate.unwrap_or(base.capacity.requests_per_s);
    let mut tiers_seen: Vec<&'static GpuSpec> = Vec::new();
    for c in &costs {
        for g in &c.scenario.cluster.gpus {
            if !tiers_seen.iter().any(|t| t.name == g.spec.name) {
                tiers_seen.push(g.spec);
            }
        }
    }
    let s0 = &base.scenario;
    let mut tiers = Vec::new();
    for g in tiers_seen {
        let usd_h = s0
            .pricing
            .usd_per_second(g, false)
            .map(|x| x * 3600.0)
            .unwrap_or(f64::NAN);
        tiers.push((
            g,
            usd_h,
            tier_times(&s0.model, s0.dtype, g, &s0.engine, &s0.slo, &base.mix),
        ));
    }
    let mut tier_table = Table::new(&[
        "gpu",
        "usd_per_hour",
        "encode_gflop",
        "prefill_gflop",
        "decode_gb",
        "encode_ms",
        "prefill_ms",
        "decode_ms",
        "decode_batch",
        "usd_per_M_encode",
        "usd_per_M_prefill",
        "usd_per_M_decode",
    ]);
    let per_m = |usd_h: f64, t: f64| usd_h / 3600.0 * t * 1e6;
    for (g, usd_h, t) in &tiers {
        match t {
            Some(t) => tier_table.push(vec![
                Value::Str(g.name.into()),
                Value::F64(*usd_h),
                Value::F64(t.encode.flops * 1e-9),
                Value::F64(t.prefill.flops * 1e-9),
                Value::F64(t.decode.bytes * 1e-9),
                Value::F64(t.encode.seconds * 1e3),
                Value::F64(t.prefill.seconds * 1e3),
                Value::F64(t.decode.seconds * 1e3),
                Value::U64(t.decode_batch),
                Value::F64(per_m(*usd_h, t.encode.seconds)),
                Value::F64(per_m(*usd_h, t.prefill.seconds)),
                Value::F64(per_m(*usd_h, t.decode.seconds)),
            ]),
            None => tier_table.push(vec![
                Value::Str(format!("{} (model does not fit)", g.name)),
                Value::F64(*usd_h),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ]),
        }
    }
    let fitting: Vec<(&'static GpuSpec, f64, PhaseTimes)> = tiers
        .iter()
        .filter_map(|(g, c, t)| t.map(|t| (*g, *c, t)))
        .collect();
    let (placements, placement_notes) =
        placements(&fitting, lambda, base.scenario.model.vision.is_some());
    notes.extend(placement_notes);
    Ok(CostReport {
        tiers: tier_table,
        deployments,
        versus,
        placements,
        notes,
    })
}

/// Cheapest whole-GPU deployments at `lambda` requests/s: each tier alone, and every split of
/// the phases across two or three tiers.
fn placements(
    tiers: &[(&'static GpuSpec, f64, PhaseTimes)],
    lambda: f64,
    has_vision: bool,
) -> (Table, Vec<String>) {
    let mut t = Table::new(&[
        "placement",
        "strategy",
        "gpus",
        "usd_per_hour",
        "continuous_usd_per_hour",
    ]);
    let mut notes = Vec::new();
    // (name, strategy, gpu list, whole-GPU $/h, continuous $/h)
    let mut rows: Vec<(String, Strategy, String, f64, f64)> = Vec::new();
    let pool = |g: &GpuSpec, c: f64, secs: f64| {
        let n = (lambda * secs).ceil().max(1.0);
        (n, n * c, lambda * secs * c, format!("{}×{}", n, g.name))
    };
    for (g, c, tt) in tiers {
        let (_, whole, cont, gpus) = pool(
            g,
            *c,
            tt.encode.seconds + tt.prefill.seconds + tt.decode.seconds,
        );
        rows.push((
            format!("all on {}", g.name),
            Strategy::Colocated,
            gpus,
            whole,
            cont,
        ));
    }
    for (h, ch, th) in tiers {
        for (g, cg, tg) in tiers {
            if h.name == g.name {
                continue;
            }
            if has_vision {
                let e = pool(h, *ch, th.encode.seconds);
                let pd = pool(g, *cg, tg.prefill.seconds + tg.decode.seconds);
                rows.push((
                    format!("encode on {}, LLM on {}", h.name, g.name),
                    Strategy::Modality,
                    format!("{} + {}", e.3, pd.3),
                    e.1 + pd.1,
                    e.2 + pd.2,
                ));
            }
            let ep = pool(h, *ch, th.encode.seconds + th.prefill.seconds);
            let d = pool(g, *cg, tg.decode.seconds);
            rows.push((
                format!("prefill on {}, decode on {}", h.name, g.name),
                Strategy::Stage,
                format!("{} + {}", ep.3, d.3),
                ep.1 + d.1,
                ep.2 + d.2,
            ));
        }
    }
    rows.sort_by(|a, b| a.3.total_cmp(&b.3).then(a.0.cmp(&b.0)));
    for r in &rows {
        t.push(vec![
            Value::Str(r.0.clone()),
            Value::Str(r.1.name().into()),
            Value::Str(r.2.clone()),
            Value::F64(r.3),
            Value::F64(r.4),
        ]);
    }
    let hom = rows
        .iter()
        .filter(|r| r.1 == Strategy::Colocated)
        .min_by(|a, b| a.3.total_cmp(&b.3));
    let het = rows
        .iter()
        .filter(|r| r.1 != Strategy::Colocated)
        .min_by(|a, b| a.3.total_cmp(&b.3));
    let hom_c = rows
        .iter()
        .filter(|r| r.1 == Strategy::Colocated)
        .map(|r| r.4)
        .fold(f64::INFINITY, f64::min);
    let het_c = rows
        .iter()
        .filter(|r| r.1 != Strategy::Colocated)
        .map(|r| r.4)
        .fold(f64::INFINITY, f64::min);
    if let (Some(hom), Some(het)) = (hom, het) {
        notes.push(format!(
            "at {lambda:.1} req/s: cheapest homogeneous = {} ({}) at ${:.2}/h; cheapest heterogeneous = {} ({}) at ${:.2}/h: {} {:.1} %",
            hom.0,
            hom.2,
            hom.3,
            het.0,
            het.2,
            het.3,
            if het.3 < hom.3 { "heterogeneous saves" } else { "heterogeneous costs more by" },
            100.0 * (1.0 - het.3 / hom.3).abs()
        ));
        notes.push(format!(
            "condition: heterogeneous is cost-optimal when some phase is cheapest per request on a different tier than the rest \
             (c_h · t_X(h) < c_g · t_X(g)) and that saving exceeds the rounding of an extra pool to whole GPUs; \
             without rounding (large λ) the best split saves {:.1} % here",
            100.0 * (1.0 - het_c / hom_c)
        ));
    }
    (t, notes)
}

/// Why a reported throughput ratio differs from ours: how much work the cheaper GPUs would have
/// to carry to reach it, against how much the strategy gives them.
fn explain_gap(base: &ScenarioCost, c: &ScenarioCost, reported: f64, simulated: f64) -> String {
    // The baseline's GPU type, and how many of them the compared deployment keeps.
    let base_gpu = base.scenario.cluster.instances[0].gpu.name;
    let base_gpus = base.scenario.cluster.gpus.len() as f64;
    let same = c
        .scenario
        .cluster
        .gpus
        .iter()
        .filter(|g| g.spec.name == base_gpu)
        .count() as f64;
    let needed = 1.0 - (same / base_gpus) / reported;
    let (_, t) = &base.capacity.instances[0];
    let encode_share = t.encode.seconds / (t.encode.seconds + t.prefill.seconds + t.decode.seconds);
    // Per-request LLM time on the other GPU types of the deployment, where they can hold the LLM.
    let others: Vec<String> = c
        .scenario
        .cluster
        .instances
        .iter()
        .zip(&c.capacity.instances)
        .filter(|(i, (_, t))| i.gpu.name != base_gpu && t.decode.seconds > 0.0)
        .map(|(i, (_, t))| {
            format!(
                "{:.0} ms on a {}",
                1e3 * (t.prefill.seconds + t.decode.seconds),
                i.gpu.name
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let speed = if others.is_empty() {
        "here they serve none of it".to_string()
    } else {
        format!(
            "a request's LLM work takes {} against {:.0} ms on a {base_gpu}",
            others.join(", "),
            1e3 * (t.prefill.seconds + t.decode.seconds)
        )
    };
    format!(
        "{}: the source reports {:.0} % of {}'s throughput; we get {:.0} %. With {same} of the {base_gpus} {base_gpu}s left, the other \
         GPUs must serve about {:.0} % of the requests to reach {:.0} %, and encoding is only {:.1} % of a request's GPU time on a \
         {base_gpu}; {speed}. What decides it: how much LLM work the cheap GPUs take (none in a strict modality split; what idle \
         time allows with `work_stealing`), how fast they do it (an RTX 4090 holds the weights and only ~5 GB of KV, so its decode \
         batches are small), and whether the baseline engine is as efficient as the roofline assumes (the paper's baseline is \
         vLLM v0.3, against which it reports up to +54 % from its own engine).",
        c.name,
        100.0 * reported,
        base.name,
        100.0 * simulated,
        100.0 * needed.max(0.0),
        100.0 * reported,
        100.0 * encode_share,
    )
}
