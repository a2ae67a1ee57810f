//! `hetsim plan`: search cluster compositions under a budget and latency targets.
//!
//! Every candidate is a single node of single-GPU instances: GPU types and counts per pool and a
//! strategy. The closed-form model (`capacity`) prunes what cannot fit, cannot keep up with the
//! offered rate, or cannot meet the latency targets even alone; the simulator scores every
//! survivor, in parallel on all cores, or across the shards of a job array (`simulate_shard`,
//! `merge_shards`). Objective: Tokens/$ at the offered rate, subject to the
//! p99 TTFT and TPOT targets (the plan's `slo`), no dropped request, and keeping up with the
//! offered rate (`headroom`: a p99 under target says nothing about a queue that grows).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use crate::capacity::{RequestMix, deployment_capacity};
use crate::catalog::LinkKind;
use crate::catalog::resolve_link;
use crate::catalog::{GpuSpec, resolve_gpu};
use crate::cluster::Role;
use crate::cost::PricingMode;
use crate::error::{Error, InputError};
use crate::experiment::{Plan, PoolSpec, Strategy, check_fabric, holds, tp_splits_heads};
use crate::headroom::{
    Capacity, HORIZON_EXTENSION, Judged, Miss, capacity_search, offered_rate, simulate_judged,
};
use crate::table::{Table, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub strategy: Strategy,
    pub pools: Vec<PoolSpec>,
    /// Encoder GPUs also serve LLM work (modality only).
    pub work_stealing: bool,
    /// The node's fabric; None: from the GPUs.
    pub fabric: Option<String>,
    pub reference: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    OverBudget,
    /// The model does not fit a GPU of some pool.
    NoFit,
    /// Predicted capacity below the offered rate.
    TooSlow,
    /// Even alone, a request would miss a target: the phase named.
    SloUnreachable(&'static str),
    /// A pool's tensor parallelism cannot be: `heads` (the degree does not divide the attention
    /// heads of what the pool holds) or `no-nvlink` (TP > 1 outside an NVLink domain: its
    /// all-reduce on every layer would cross PCIe).
    TpUnsupported(&'static str),
    /// The searched fabric cannot join these GPUs (an NVLink generation they lack, peer-to-peer
    /// PCIe for GPUs without it).
    FabricUnfit,
    /// Simulated, and missed a target, dropped requests or did not keep up.
    Missed(Miss),
    Feasible,
}

impl Status {
    pub fn label(&self) -> String {
        match self {
            Status::OverBudget => "pruned:budget".into(),
            Status::NoFit => "pruned:memory".into(),
            Status::TooSlow => "pruned:capacity".into(),
            Status::SloUnreachable(p) => format!("pruned:slo-{p}"),
            Status::TpUnsupported(why) => format!("pruned:tp-{why}"),
            Status::FabricUnfit => "pruned:fabric".into(),
            Status::Missed(m) => format!("simulated:{}", m.label()),
            Status::Feasible => "feasible".into(),
        }
    }
}

pub struct Scored {
    pub candidate: Candidate,
    /// Purchase price; None in rental mode where the catalog has none (nothing needs it there).
    pub capex_usd: Option<f64>,
    pub usd_per_hour: f64,
    pub predicted_rps: Option<f64>,
    pub bottleneck: Option<String>,
    pub status: Status,
    /// What the simulation of a survivor gave.
    pub run: Option<PlanRun>,
}

/// What the planner keeps of a simulated candidate: the figures it ranks and reports by. A
/// shard of a sharded plan (`simulate_shard`) hands exactly these to the merge, so a merged plan
/// is the single-process one.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRun {
    pub ttft_p99_s: Option<f64>,
    pub tpot_p99_s: Option<f64>,
    pub e2e_p99_s: Option<f64>,
    pub throughput_rps: f64,
    pub tokens_per_dollar: f64,
    pub prediction_error_pct: Option<f64>,
    /// How the run kept up with its arrivals over the judged window (`headroom::Sustain`).
    pub arrival_rps: f64,
    pub completion_rps: f64,
    pub e2e_growth: f64,
    /// Mean utilisation of each of the candidate's pools, in pool order.
    pub pool_busy: Vec<f64>,
}

impl PlanRun {
    fn of(c: &Candidate, judged: &Judged) -> PlanRun {
        let sum = &judged.run.summary;
        let pool_busy = c
            .pools
            .iter()
            .map(|p| {
                let u: Vec<f64> = judged
                    .run
                    .instances
                    .iter()
                    .filter(|i| i.role == p.role.name() && i.gpu == p.gpu)
                    .map(|i| i.utilization)
                    .collect();
                u.iter().sum::<f64>() / u.len().max(1) as f64
            })
            .collect();
        PlanRun {
            ttft_p99_s: sum.ttft_p99_s,
            tpot_p99_s: sum.tpot_p99_s,
            e2e_p99_s: sum.e2e_p99_s,
            throughput_rps: sum.throughput_rps,
            tokens_per_dollar: sum.tokens_per_dollar,
            prediction_error_pct: sum.prediction_error_pct,
            arrival_rps: judged.sustain.arrival_rps,
            completion_rps: judged.sustain.completion_rps,
            e2e_growth: judged.sustain.e2e_growth,
            pool_busy,
        }
    }
}

pub struct PlanResult {
    pub scored: Vec<Scored>,
    pub pareto: Vec<usize>,
    pub best: Option<usize>,
    pub candidates: usize,
    pub simulated: usize,
    pub seconds: f64,
    /// Wall time of the closed-form screening of every candidate, and of simulating the
    /// survivors at the offered rate (before the headroom search): the planner's two speeds.
    pub screen_seconds: f64,
    pub simulate_seconds: f64,
    /// Threads the screening and simulation ran on.
    pub threads: usize,
    pub notes: Vec<String>,
    /// The best plan's capacity within the SLO (found by simulation), and the offered rate.
    pub best_capacity: Option<(Capacity, f64)>,
}

/// What the plan ranks "cheapest" by: the figure its pricing mode charges.
fn cheapness(plan: &Plan, s: &Scored) -> f64 {
    match plan.template().pricing.mode {
        PricingMode::Capex => s.capex_usd.unwrap_or(f64::INFINITY),
        PricingMode::Rental => s.usd_per_hour,
    }
}

/// Every GPU the plan may use must have a price in its pricing mode (and a purchase price if the
/// budget caps capex): otherwise its candidates could neither be ranked nor kept in budget.
fn check_prices(plan: &Plan) -> Result<(), InputError> {
    let pricing = &plan.template().pricing;
    let mode = match pricing.mode {
        PricingMode::Capex => "capex",
        PricingMode::Rental => "rental",
    };
    let from_refs = plan
        .references
        .iter()
        .flat_map(|r| r.pools.iter().map(|p| &p.gpu));
    for name in plan.search.gpus.iter().chain(from_refs) {
        let g = resolve_gpu(name)?;
        let priced = pricing
            .usd_per_second(g, false)
            .and_then(|_| match plan.budget.capex_usd {
                Some(_) => pricing.purchase_usd(g, false).map(|_| ()),
                None => Ok(()),
            });
        priced.map_err(|e| {
            e.context(format!(
                "plan in `{mode}` pricing mode: every GPU it may use needs a price ({})",
                g.name
            ))
        })?;
    }
    Ok(())
}

/// At most `inventory[g]` GPUs of each listed type (types not listed: no limit).
fn within_inventory(plan: &Plan, pools: &[PoolSpec]) -> bool {
    plan.inventory.iter().all(|(gpu, owned)| {
        pools
            .iter()
            .filter(|p| p.gpu == *gpu)
            .map(PoolSpec::gpus)
            .sum::<u32>()
            <= *owned
    })
}

/// Ways to give `pools` pools (in order) at least one instance each, an instance of pool k
/// taking `tps[k]` GPUs, with at most `max` GPUs in all.
fn fillings(tps: &[u64], max: u64) -> u64 {
    match tps.split_first() {
        None => 1,
        Some((&tp, rest)) => (1..=max / tp)
            .map(|n| fillings(rest, max - n * tp))
            .fold(0u64, u64::saturating_add),
    }
}

/// How many candidates `enumerate` would list before the inventory filter, without listing them
/// (sums over the TP degrees only, saturating), so a search too large to enumerate is refused
/// before it starts.
pub fn candidate_count(plan: &Plan) -> u64 {
    // As `enumerate` counts types: by catalog name (load_plan resolved every one).
    let mut names: Vec<&str> = plan
        .search
        .gpus
        .iter()
        .filter_map(|g| resolve_gpu(g).ok())
        .map(|g| g.name)
        .collect();
    names.sort_unstable();
    names.dedup();
    let types = names.len() as u64;
    let max = u64::from(plan.search.max_gpus);
    let tps: Vec<u64> = plan.search.tp.iter().map(|t| u64::from(*t)).collect();
    let vision = plan.template().model.vision.is_some();
    // Pools of `n` roles, each of any type and TP degree.
    let split = |n: usize| {
        let mut sum = 0u64;
        let mut pick = vec![0usize; n];
        loop {
            let chosen: Vec<u64> = pick.iter().map(|&i| tps[i]).collect();
            sum = sum.saturating_add(fillings(&chosen, max));
            let Some(k) = (0..n).rev().find(|&k| pick[k] + 1 < tps.len()) else {
                break;
            };
            pick[k] += 1;
            pick[k + 1..].iter_mut().for_each(|p| *p = 0);
        }
        sum.saturating_mul(types.pow(n as u32))
    };
    // Colocated: non-empty multisets of (type, TP) choices of at most `max` GPUs, by a table
    // of ways to take exactly g GPUs.
    let colocated = {
        let mut ways = vec![0u64; max as usize + 1];
        ways[0] = 1;
        for _ in 0..types {
            for &tp in &tps {
                for g in tp as usize..=max as usize {
                    ways[g] = ways[g].saturating_add(ways[g - tp as usize]);
                }
            }
        }
        ways[1..].iter().fold(0u64, |a, w| a.saturating_add(*w))
    };
    let references = plan.references.len() as u64;
    plan.search.strategies.iter().fold(references, |sum, s| {
        let n = match s {
            _ if s.has_encoder_pool() && !vision => 0,
            Strategy::Colocated => colocated,
            Strategy::Modality => split(2).saturating_mul(plan.search.work_stealing.len() as u64),
            Strategy::Stage => split(2),
            Strategy::Epd => split(3),
        };
        sum.saturating_add(n.saturating_mul(plan.search.fabric.each().len() as u64))
    })
}

/// Every composition the search space allows: pools of each strategy's roles, each of any GPU
/// type and TP degree and at least one instance, at most `max_gpus` GPUs in all; `modality` once
/// per work-stealing setting.
pub fn enumerate(plan: &Plan) -> Result<Vec<Candidate>, InputError> {
    let mut types: Vec<&'static GpuSpec> = Vec::new();
    for g in &plan.search.gpus {
        let spec = resolve_gpu(g)?;
        if !types.iter().any(|t| t.name == spec.name) {
            types.push(spec);
        }
    }
    // A pool's choice: (type, TP degree), types outer.
    let choices: Vec<(&'static GpuSpec, u32)> = types
        .iter()
        .flat_map(|g| plan.search.tp.iter().map(move |t| (*g, *t)))
        .collect();
    let max = plan.search.max_gpus;
    let vision = plan.template().model.vision.is_some();
    let fabrics = plan.search.fabric.each();
    let mut out = Vec::new();
    let pool = |role, (g, tp): (&GpuSpec, u32), count| PoolSpec {
        role,
        gpu: g.name.to_string(),
        count,
        tp,
    };
    for &strategy in &plan.search.strategies {
        if strategy.has_encoder_pool() && !vision {
            continue;
        }
        let stealing: &[bool] = if strategy == Strategy::Modality {
            &plan.search.work_stealing
        } else {
            &[false]
        };
        let mut push = |pools: Vec<PoolSpec>| {
            if !within_inventory(plan, &pools) {
                return;
            }
            for fabric in &fabrics {
                for &work_stealing in stealing {
                    let mut name = candidate_name(strategy, &pools, work_stealing);
                    if let (Some(f), true) = (fabric, fabrics.len() > 1) {
                        name = format!("{name} @{f}");
                    }
                    out.push(Candidate {
                        name,
                        strategy,
                        pools: pools.clone(),
                        work_stealing,
                        fabric: fabric.map(str::to_string),
                        reference: false,
                    })
                }
            }
        };
        if strategy == Strategy::Colocated {
            // Every multiset of choices up to max_gpus, each GPU serving whole requests.
            let mut counts = vec![0u32; choices.len()];
            let gpus = |counts: &[u32]| -> u32 {
                counts.iter().zip(&choices).map(|(n, (_, tp))| n * tp).sum()
            };
            loop {
                let mut k = 0;
                while k < counts.len() {
                    counts[k] += 1;
                    if gpus(&counts) <= max {
                        break;
                    }
                    counts[k] = 0;
                    k += 1;
                }
                if k == counts.len() {
                    break;
                }
                push(
                    choices
                        .iter()
                        .zip(&counts)
                        .filter(|(_, n)| **n > 0)
                        .map(|(c, n)| pool(Role::All, *c, *n))
                        .collect(),
                );
            }
            continue;
        }
        // One pool per role, in the strategy's order: every choice and count for each.
        let roles = match strategy {
            Strategy::Modality => &[Role::Encoder, Role::Llm][..],
            Strategy::Stage => &[Role::Prefill, Role::Decode][..],
            Strategy::Epd => &[Role::Encoder, Role::Prefill, Role::Decode][..],
            Strategy::Colocated => unreachable!("handled above"),
        };
        let mut pools: Vec<PoolSpec> = Vec::new();
        fill(&choices, roles, max, &mut pools, &mut push);
    }
    for r in &plan.references {
        out.push(Candidate {
            name: r.name.clone(),
            strategy: r.strategy,
            pools: r.pools.clone(),
            work_stealing: r.work_stealing,
            fabric: r.fabric.clone(),
            reference: true,
        });
    }
    Ok(out)
}

/// Extends `pools` with a pool for each of `roles` (every choice, at least one instance, within
/// `left` GPUs), calling `push` with each full set.
fn fill(
    choices: &[(&'static GpuSpec, u32)],
    roles: &[Role],
    left: u32,
    pools: &mut Vec<PoolSpec>,
    push: &mut dyn FnMut(Vec<PoolSpec>),
) {
    let Some((&role, rest)) = roles.split_first() else {
        push(pools.clone());
        return;
    };
    for &(g, tp) in choices {
        // Leave at least one GPU for each later pool.
        let room = left.saturating_sub(rest.len() as u32);
        for count in 1..=room / tp {
            pools.push(PoolSpec {
                role,
                gpu: g.name.to_string(),
                count,
                tp,
            });
            fill(choices, rest, left - count * tp, pools, push);
            pools.pop();
        }
    }
}

fn candidate_name(strategy: Strategy, pools: &[PoolSpec], work_stealing: bool) -> String {
    let pools: Vec<String> = pools
        .iter()
        .map(|p| match p.tp {
            1 => format!("{}:{}×{}", p.role.name(), p.count, p.gpu),
            tp => format!("{}:{}×{}(tp{tp})", p.role.name(), p.count, p.gpu),
        })
        .collect();
    format!(
        "{} {}{}",
        strategy.name(),
        pools.join(" "),
        if work_stealing { " +stealing" } else { "" }
    )
}

fn capex_of(plan: &Plan, c: &Candidate) -> Option<f64> {
    let pricing = &plan.template().pricing;
    let mut total = 0.0;
    for p in &c.pools {
        // Plans are single nodes; NVLink premium only where the candidate's fabric is NVLink.
        let on_nvlink = c.fabric.as_deref().is_some_and(|f| f.starts_with("nvlink"));
        let gpu = resolve_gpu(&p.gpu).ok()?;
        total += pricing.purchase_usd(gpu, on_nvlink).ok()? * f64::from(p.gpus());
    }
    Some(total)
}

/// Closed-form screening of one candidate (no simulation).
fn screen(plan: &Plan, mix: &RequestMix, c: &Candidate, rate: f64, within_budget: bool) -> Scored {
    let capex = capex_of(plan, c);
    let mut scored = Scored {
        candidate: c.clone(),
        capex_usd: capex,
        usd_per_hour: f64::NAN,
        predicted_rps: None,
        bottleneck: None,
        status: Status::NoFit,
        run: None,
    };
    let model = &plan.template().model;
    let splits = |p: &PoolSpec| {
        let (vision, llm) = holds(model, c.strategy, p.role, c.work_stealing);
        tp_splits_heads(model, u64::from(p.tp), vision, llm).is_ok()
    };
    if !c.pools.iter().all(splits) {
        scored.status = Status::TpUnsupported("heads");
        return scored;
    }
    if let Some(f) = &c.fabric {
        let gpus: Option<Vec<&'static GpuSpec>> =
            c.pools.iter().map(|p| resolve_gpu(&p.gpu).ok()).collect();
        let fits = resolve_link(f)
            .ok()
            .zip(gpus)
            .is_some_and(|(l, g)| check_fabric(l, &g).is_ok());
        if !fits {
            scored.status = Status::FabricUnfit;
            return scored;
        }
    }
    let Ok(s) = plan.scenario(
        &c.name,
        c.strategy,
        &c.pools,
        c.work_stealing,
        c.fabric.as_deref(),
    ) else {
        return scored;
    };
    if s.cluster
        .instances
        .iter()
        .any(|i| i.tp() > 1 && s.cluster.nodes[i.node].fabric.kind != LinkKind::NvLink)
    {
        scored.status = Status::TpUnsupported("no-nvlink");
        return scored;
    }
    scored.usd_per_hour = s
        .cluster
        .usd_per_second(&s.pricing)
        .map_or(f64::INFINITY, |x| x * 3600.0);
    let over = plan
        .budget
        .capex_usd
        .is_some_and(|b| capex.is_none_or(|c| c > b))
        || plan
            .budget
            .usd_per_hour
            .is_some_and(|b| scored.usd_per_hour > b);
    let cap = deployment_capacity(&s, mix);
    scored.predicted_rps = Some(cap.requests_per_s);
    scored.bottleneck = Some(cap.bottleneck.clone());
    // A request alone: encode + prefill against TTFT, one decode step against TPOT.
    let alone_ttft = cap
        .instances
        .iter()
        .filter(|(r, _)| matches!(r, Role::All | Role::Llm | Role::Prefill))
        .map(|(_, t)| t.prefill.seconds + t.encode.seconds)
        .fold(f64::INFINITY, f64::min);
    let decode_step = min_decode_step(&s);
    // Targets a request misses even alone come first: more GPUs cannot fix them.
    scored.status = if alone_ttft > s.slo.ttft_s {
        Status::SloUnreachable("prefill")
    } else if decode_step.is_finite() && decode_step > s.slo.tpot_s {
        Status::SloUnreachable("decode")
    } else if over && within_budget {
        Status::OverBudget
    } else if cap.requests_per_s < rate {
        Status::TooSlow
    } else {
        Status::Feasible
    };
    scored
}

/// Fastest possible decode step (batch 1, 512 tokens of context) among the instances that
/// decode; infinite when none does.
fn min_decode_step(s: &crate::experiment::Scenario) -> f64 {
    let mut best = f64::INFINITY;
    for (i, spec) in s.cluster.instances.iter().enumerate() {
        if matches!(spec.role, Role::All | Role::Llm | Role::Decode) {
            let mut b = crate::perf::BatchShape::default();
            b.add_decode(512);
            best = best.min(s.phase_model(i).forward_s(&b));
        }
    }
    best
}

/// The candidate as a scenario, with the requests of the plan's workload.
fn candidate_scenario(
    plan: &Plan,
    c: &Candidate,
) -> Result<(crate::experiment::Scenario, u64), InputError> {
    let s = plan.scenario(
        &c.name,
        c.strategy,
        &c.pools,
        c.work_stealing,
        c.fabric.as_deref(),
    )?;
    let requests = s.workload.requests.unwrap_or(0);
    Ok((s, requests))
}

fn simulate_candidate(plan: &Plan, c: &Candidate) -> Result<Judged, Error> {
    let (s, requests) = candidate_scenario(plan, c)?;
    simulate_judged(&s, HORIZON_EXTENSION * requests)
}

fn outcome(c: &Candidate, judged: &Judged) -> (PlanRun, Status) {
    let status = match judged.verdict {
        Ok(()) => Status::Feasible,
        Err(m) => Status::Missed(m),
    };
    (PlanRun::of(c, judged), status)
}

fn record(scored: &mut Scored, judged: Judged) {
    let (run, status) = outcome(&scored.candidate, &judged);
    scored.run = Some(run);
    scored.status = status;
}

/// Simulation progress: `done` of `total` candidates simulated so far (called from any thread).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Every candidate screened in closed form, the offered rate, and the survivors to simulate.
struct Screened {
    started: Instant,
    rate: f64,
    mix: RequestMix,
    scored: Vec<Scored>,
    survivors: Vec<usize>,
    screen_seconds: f64,
}

/// `allow_large` lifts the limit on the candidates enumerated (`work::MAX_PLAN_CANDIDATES`).
fn screen_all(plan: &Plan, allow_large: bool) -> Result<Screened, Error> {
    let started = Instant::now();
    crate::work::within(
        "candidates",
        candidate_count(plan),
        crate::work::MAX_PLAN_CANDIDATES,
        allow_large,
    )
    .map_err(|e| {
        e.context(format!(
            "{}: search (gpus × max_gpus × strategies)",
            plan.file()
        ))
    })?;
    let t = plan.template();
    check_prices(plan)?;
    let rate = offered_rate(t)?;
    let mix = RequestMix::of(t, 2000)?;
    let candidates = enumerate(plan)?;
    let screening = Instant::now();
    let scored: Vec<Scored> = candidates
        .par_iter()
        .map(|c| screen(plan, &mix, c, rate, true))
        .collect();
    let screen_seconds = screening.elapsed().as_secs_f64();
    let survivors: Vec<usize> = (0..scored.len())
        .filter(|&i| scored[i].status == Status::Feasible)
        .collect();
    Ok(Screened {
        started,
        rate,
        mix,
        scored,
        survivors,
        screen_seconds,
    })
}

/// Simulates the candidates `which` (indices into `scored`) in parallel.
fn simulate_all(
    plan: &Plan,
    scored: &[Scored],
    which: &[usize],
    progress: Progress,
) -> Result<Vec<(usize, PlanRun, Status)>, Error> {
    let done = AtomicUsize::new(0);
    progress(0, which.len());
    let runs: Vec<(usize, Result<Judged, Error>)> = which
        .par_iter()
        .map(|&i| {
            let r = simulate_candidate(plan, &scored[i].candidate);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, which.len());
            (i, r)
        })
        .collect();
    runs.into_iter()
        .map(|(i, r)| {
            let (run, status) = outcome(&scored[i].candidate, &r?);
            Ok((i, run, status))
        })
        .collect()
}

/// `allow_large` lifts the limit on the candidates enumerated (`work::MAX_PLAN_CANDIDATES`).
pub fn search(plan: &Plan, allow_large: bool, progress: Progress) -> Result<PlanResult, Error> {
    let mut sc = screen_all(plan, allow_large)?;
    let simulating = Instant::now();
    let runs = simulate_all(plan, &sc.scored, &sc.survivors, progress)?;
    let simulate_seconds = simulating.elapsed().as_secs_f64();
    for (i, run, status) in runs {
        sc.scored[i].run = Some(run);
        sc.scored[i].status = status;
    }
    finish(plan, sc, simulate_seconds)
}

/// The answer from screened candidates whose survivors have been simulated: the budget's and
/// targets' verdicts when nothing is feasible, else the ranking, the Pareto front, the
/// references' comparison and the best plan's headroom.
fn finish(plan: &Plan, sc: Screened, simulate_seconds: f64) -> Result<PlanResult, Error> {
    let Screened {
        started,
        rate,
        mix,
        mut scored,
        survivors,
        screen_seconds,
    } = sc;
    let simulated = survivors.len();
    let mut notes = Vec::new();
    let feasible = |s: &Scored| s.status == Status::Feasible && s.run.is_some();
    if !scored.iter().any(|s| feasible(s) && !s.candidate.reference) {
        // Nothing within budget: is it the budget, or the targets? Try the over-budget candidates,
        // cheapest first, to name the cheapest feasible cost.
        let mut over: Vec<usize> = (0..scored.len())
            .filter(|&i| scored[i].status == Status::OverBudget)
            .collect();
        for &i in &over {
            scored[i] = screen(plan, &mix, &scored[i].candidate, rate, false);
        }
        over.retain(|&i| scored[i].status == Status::Feasible);
        over.sort_by(|a, b| {
            cheapness(plan, &scored[*a])
                .total_cmp(&cheapness(plan, &scored[*b]))
                .then(scored[*a].candidate.name.cmp(&scored[*b].candidate.name))
        });
        for i in over {
            let judged = simulate_candidate(plan, &scored[i].candidate)?;
            record(&mut scored[i], judged);
            if scored[i].status == Status::Feasible {
                let c = &scored[i];
                let price = match (plan.template().pricing.mode, c.capex_usd) {
                    (PricingMode::Capex, Some(capex)) => format!(
                        "by purchase price (capex mode), is `{}` at ${capex:.0} (${:.2}/h)",
                        c.candidate.name, c.usd_per_hour
                    ),
                    _ => format!(
                        "by rental price (rental mode), is `{}` at ${:.2}/h",
                        c.candidate.name, c.usd_per_hour
                    ),
                };
                return Err(InputError::new(format!(
                    "{}: budget: no cluster within the budget ({}) meets the targets at {rate} req/s; the cheapest that does, {price}",
                    plan.file(),
                    budget_text(plan),
                ))
                .into());
            }
        }
        return Err(InputError::new(unreachable_targets(plan, &scored, rate))
            .context(format!("{}: defaults.slo", plan.file()))
            .into());
    }
    // Best Tokens/$ first; the Pareto front of Tokens/$ against p99 TTFT and p99 TPOT.
    let mut order: Vec<usize> = (0..scored.len())
        .filter(|&i| feasible(&scored[i]))
        .collect();
    let key = |i: usize| {
        let s = scored[i].run.as_ref().expect("feasible ones ran");
        let p99 = |v: Option<f64>| v.unwrap_or(f64::INFINITY);
        (s.tokens_per_dollar, p99(s.ttft_p99_s), p99(s.tpot_p99_s))
    };
    order.sort_by(|a, b| {
        let (ta, fa, pa) = key(*a);
        let (tb, fb, pb) = key(*b);
        tb.total_cmp(&ta)
            .then(fa.total_cmp(&fb))
            .then(pa.total_cmp(&pb))
            .then(scored[*a].candidate.name.cmp(&scored[*b].candidate.name))
    });
    let pareto: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| !order.iter().any(|&j| dominates(key(j), key(i))))
        .collect();
    let best = order
        .iter()
        .copied()
        .find(|&i| !scored[i].candidate.reference);
    if let Some(b) = best {
        for r in (0..scored.len()).filter(|&i| scored[i].candidate.reference) {
            notes.push(versus_reference(&scored[b], &scored[r]));
        }
    }
    // Headroom of the best plan: it passed at the offered rate, so the search climbs from there.
    let best_capacity = match best {
        Some(b) => {
            let (s, requests) = candidate_scenario(plan, &scored[b].candidate)?;
            capacity_search(&s, rate, requests)?.map(|c| (c, rate))
        }
        None => None,
    };
    Ok(PlanResult {
        candidates: scored.len(),
        scored,
        pareto,
        best,
        simulated,
        seconds: started.elapsed().as_secs_f64(),
        screen_seconds,
        simulate_seconds,
        threads: rayon::current_num_threads(),
        notes,
        best_capacity,
    })
}

/// Whether `a` is at least as good as `b` in Tokens/$ (higher) and both p99s (lower), and
/// better in one.
fn dominates(a: (f64, f64, f64), b: (f64, f64, f64)) -> bool {
    a.0 >= b.0 && a.1 <= b.1 && a.2 <= b.2 && (a.0 > b.0 || a.1 < b.1 || a.2 < b.2)
}

/// Why the candidates not feasible were rejected: one row per reason and strategy, with how
/// many and the first such candidate.
pub fn rejections_table(r: &PlanResult) -> Table {
    let mut groups: std::collections::BTreeMap<(String, &'static str), (u64, &str)> =
        Default::default();
    for s in r.scored.iter().filter(|s| s.status != Status::Feasible) {
        let e = groups
            .entry((s.status.label(), s.candidate.strategy.name()))
            .or_insert((0, &s.candidate.name));
        e.0 += 1;
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let mut t = Table::new(&["rejected as", "strategy", "candidates", "for example"]);
    for ((label, strategy), (n, example)) in rows {
        t.push(vec![
            Value::Str(label),
            Value::Str(strategy.into()),
            Value::U64(n),
            Value::Str(example.to_string()),
        ]);
    }
    t
}

fn budget_text(plan: &Plan) -> String {
    let mut parts = Vec::new();
    if let Some(c) = plan.budget.capex_usd {
        parts.push(format!("${c:.0} to buy"));
    }
    if let Some(h) = plan.budget.usd_per_hour {
        parts.push(format!("${h:.2}/h"));
    }
    parts.join(", ")
}

/// Which phase keeps every cluster from the targets.
fn unreachable_targets(plan: &Plan, scored: &[Scored], rate: f64) -> String {
    let slo = &plan.template().slo;
    let count = |f: &dyn Fn(&Status) -> bool| scored.iter().filter(|s| f(&s.status)).count();
    let prefill = count(&|s| {
        matches!(
            s,
            Status::SloUnreachable("prefill") | Status::Missed(Miss::Ttft)
        )
    });
    let decode = count(&|s| {
        matches!(
            s,
            Status::SloUnreachable("decode") | Status::Missed(Miss::Tpot)
        )
    });
    let slow = count(&|s| {
        matches!(
            s,
            Status::TooSlow | Status::Missed(Miss::FallsBehind | Miss::LatencyGrows)
        )
    });
    let phase = if decode >= prefill && decode > 0 {
        format!(
            "decode is the bottleneck: TPOT p99 ≤ {:.0} ms is out of reach ({decode} candidates miss it)",
            slo.tpot_s * 1e3
        )
    } else if prefill > 0 {
        format!(
            "prefill is the bottleneck: TTFT p99 ≤ {:.0} ms is out of reach ({prefill} candidates miss it)",
            slo.ttft_s * 1e3
        )
    } else {
        format!(
            "throughput is the bottleneck: {slow} candidates cannot serve {rate} req/s with at most {} GPUs",
            plan.search.max_gpus
        )
    };
    format!(
        "no cluster in the search space meets the targets at {rate} req/s, at any price: {phase}"
    )
}

/// Why the best plan beats a hand-given cluster: cost per hour and how busy each pool is.
fn versus_reference(best: &Scored, reference: &Scored) -> String {
    let pools = |s: &Scored| {
        let run = s.run.as_ref();
        s.candidate
            .pools
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let busy = run.map(|r| r.pool_busy[k]);
                format!(
                    "{}×{} {} {}",
                    p.count,
                    p.gpu,
                    p.role.name(),
                    busy.map_or("-".to_string(), |b| format!("{:.0} % busy", b * 100.0))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let tpd = |s: &Scored| s.run.as_ref().map_or(f64::NAN, |r| r.tokens_per_dollar);
    let err = |s: &Scored| {
        s.run
            .as_ref()
            .and_then(|r| r.prediction_error_pct)
            .unwrap_or(0.0)
    };
    let verdict = match reference.status {
        Status::Feasible => format!(
            "{:+.0} % Tokens/$ ({} the predictions' intervals, ±{:.0} % and ±{:.0} %)",
            100.0 * (tpd(best) / tpd(reference) - 1.0),
            if crate::trust::overlap(tpd(best), err(best), tpd(reference), err(reference)) {
                "within"
            } else {
                "beyond"
            },
            err(best),
            err(reference)
        ),
        ref other => format!("the reference is {}", other.label()),
    };
    format!(
        "best `{}` (${:.2}/h: {}) against reference `{}` (${:.2}/h: {}): {verdict} at the same offered load. The best plan pays \
         for fewer idle GPU-hours: Tokens/$ at a fixed rate is the rate over the dollars of the GPUs that carry it.",
        best.candidate.name,
        best.usd_per_hour,
        pools(best),
        reference.candidate.name,
        reference.usd_per_hour,
        pools(reference)
    )
}

/// A plan run as shards (`hetsim plan --shard I/N --shard-out DIR`, or a job array's shard):
/// every shard screens every candidate in closed form (cheap, and the same everywhere), then
/// simulates the survivors whose rank among them is its index modulo the count, and writes what
/// the planner keeps of each (`PlanRun`) to `DIR/shard-<I>-of-<N>.parquet`. `merge_shards`
/// reads them all back into the single-process answer. A shard whose file is already there for
/// the same plan is not run again (resume after pre-emption); the file appears whole or not at
/// all.
pub fn simulate_shard(
    plan: &Plan,
    allow_large: bool,
    shard: crate::sweep::Shard,
    dir: &Path,
    progress: Progress,
) -> Result<ShardDone, Error> {
    let id = plan_id(plan)?;
    let path = shard_path(dir, shard);
    if path.is_file() && read_shard(&path, &id).is_ok() {
        return Ok(ShardDone {
            path,
            simulated: 0,
            resumed: true,
        });
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Output(format!("{}: cannot create: {e}", dir.display())))?;
    let sc = screen_all(plan, allow_large)?;
    let mine: Vec<usize> = sc
        .survivors
        .iter()
        .enumerate()
        .filter(|(k, _)| *k as u64 % shard.count == shard.index)
        .map(|(_, &i)| i)
        .collect();
    let runs = simulate_all(plan, &sc.scored, &mine, progress)?;
    let mut t = Table::new(&SHARD_COLUMNS);
    for (i, run, status) in &runs {
        let opt = |v: Option<f64>| v.map_or(Value::Null, Value::F64);
        let busy: Vec<String> = run.pool_busy.iter().map(|b| b.to_string()).collect();
        t.push(vec![
            Value::Str(id.clone()),
            Value::U64(*i as u64),
            Value::Str(sc.scored[*i].candidate.name.clone()),
            Value::Str(status.label()),
            opt(run.ttft_p99_s),
            opt(run.tpot_p99_s),
            opt(run.e2e_p99_s),
            Value::F64(run.throughput_rps),
            Value::F64(run.tokens_per_dollar),
            opt(run.prediction_error_pct),
            Value::F64(run.arrival_rps),
            Value::F64(run.completion_rps),
            Value::F64(run.e2e_growth),
            Value::Str(busy.join(",")),
        ]);
    }
    use crate::table::Kind;
    let (s, u, f) = (Kind::Str, Kind::U64, Kind::F64);
    t.write_parquet_as(&path, &[s, u, s, s, f, f, f, f, f, f, f, f, f, s])?;
    Ok(ShardDone {
        path,
        simulated: runs.len(),
        resumed: false,
    })
}

/// What a shard did: its file, how many candidates it simulated, or that it was already done.
pub struct ShardDone {
    pub path: PathBuf,
    pub simulated: usize,
    pub resumed: bool,
}

const SHARD_COLUMNS: [&str; 14] = [
    "plan_id",
    "candidate",
    "name",
    "status",
    "ttft_p99_s",
    "tpot_p99_s",
    "e2e_p99_s",
    "throughput_rps",
    "tokens_per_dollar",
    "error_pct",
    "arrival_rps",
    "completion_rps",
    "e2e_growth",
    "pool_busy",
];

/// The plan's identity in its shards' files: its file's text, the seed and hetsim's version.
fn plan_id(plan: &Plan) -> Result<String, InputError> {
    let text = std::fs::read(plan.file())
        .map_err(|e| InputError::new(format!("{}: cannot read: {e}", plan.file())))?;
    let mut bytes = text;
    bytes.extend_from_slice(format!("\0{}\0{}", plan.seed(), env!("CARGO_PKG_VERSION")).as_bytes());
    Ok(format!("{:016x}", crate::sweep::fnv1a64(&bytes)))
}

fn shard_path(dir: &Path, shard: crate::sweep::Shard) -> PathBuf {
    dir.join(format!("shard-{}-of-{}.parquet", shard.index, shard.count))
}

/// One shard's simulated candidates: (candidate index, name, run, status).
fn read_shard(path: &Path, id: &str) -> Result<Vec<(usize, String, PlanRun, Status)>, InputError> {
    let (t, _) = Table::read_parquet(path)?;
    let bad = |what: String| InputError::new(format!("{}: {what}", path.display()));
    if t.columns != SHARD_COLUMNS {
        return Err(bad(format!(
            "columns {:?}: not a shard of `hetsim plan` (expected {SHARD_COLUMNS:?})",
            t.columns
        )));
    }
    let mut out = Vec::new();
    for (r, row) in t.rows.iter().enumerate() {
        let at = |what: &str| bad(format!("row {r}: {what}"));
        let text = |c: usize| match &row[c] {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(at(SHARD_COLUMNS[c])),
        };
        let num = |c: usize| match row[c] {
            Value::F64(x) => Ok(Some(x)),
            Value::Null => Ok(None),
            _ => Err(at(SHARD_COLUMNS[c])),
        };
        let need = |c: usize| num(c)?.ok_or_else(|| at(SHARD_COLUMNS[c]));
        if text(0)? != id {
            return Err(bad(format!(
                "written for another plan (id {}, this plan's is {id}: another plan file, seed \
                 or hetsim version); run its shards again",
                text(0)?
            )));
        }
        let Value::U64(index) = row[1] else {
            return Err(at("candidate"));
        };
        let label = text(3)?;
        let status = if label == Status::Feasible.label() {
            Status::Feasible
        } else {
            Miss::ALL
                .into_iter()
                .map(Status::Missed)
                .find(|s| s.label() == label)
                .ok_or_else(|| at(&format!("status `{label}`")))?
        };
        let pool_busy = text(13)?
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse::<f64>().map_err(|_| at("pool_busy")))
            .collect::<Result<Vec<f64>, InputError>>()?;
        out.push((
            index as usize,
            text(2)?,
            PlanRun {
                ttft_p99_s: num(4)?,
                tpot_p99_s: num(5)?,
                e2e_p99_s: num(6)?,
                throughput_rps: need(7)?,
                tokens_per_dollar: need(8)?,
                prediction_error_pct: num(9)?,
                arrival_rps: need(10)?,
                completion_rps: need(11)?,
                e2e_growth: need(12)?,
                pool_busy,
            },
            status,
        ));
    }
    Ok(out)
}

/// The answer of a plan whose survivors the shards in `dir` simulated: the same as `search`
/// on one machine. Refused while a shard is missing, or when the shards disagree with the plan.
pub fn merge_shards(plan: &Plan, allow_large: bool, dir: &Path) -> Result<PlanResult, Error> {
    let id = plan_id(plan)?;
    let mut sc = screen_all(plan, allow_large)?;
    let mut files: Vec<(u64, u64, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| InputError::new(format!("{}: cannot read: {e}", dir.display())))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let parsed = name
            .strip_prefix("shard-")
            .and_then(|n| n.strip_suffix(".parquet"))
            .and_then(|n| n.split_once("-of-"))
            .and_then(|(i, n)| Some((i.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
        if let Some((i, n)) = parsed {
            files.push((i, n, e.path()));
        }
    }
    files.sort();
    let counts: std::collections::BTreeSet<u64> = files.iter().map(|f| f.1).collect();
    let count = match counts.iter().collect::<Vec<_>>().as_slice() {
        [n] => **n,
        [] => {
            return Err(InputError::new(format!(
                "{}: no shard files (shard-I-of-N.parquet): run `hetsim plan … --shard I/N --shard-out {}` first",
                dir.display(),
                dir.display()
            ))
            .into());
        }
        many => {
            return Err(InputError::new(format!(
                "{}: shards of different counts ({many:?}): one plan run has one shard count",
                dir.display()
            ))
            .into());
        }
    };
    let missing: Vec<String> = (0..count)
        .filter(|i| !files.iter().any(|f| f.0 == *i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(InputError::new(format!(
            "{}: shard(s) {} of {count} are missing: run them (`--shard I/{count}`), then merge",
            dir.display(),
            missing.join(", ")
        ))
        .into());
    }
    let mut filled = vec![false; sc.scored.len()];
    for (_, _, path) in &files {
        for (i, name, run, status) in read_shard(path, &id)? {
            let ok = sc.survivors.contains(&i) && sc.scored[i].candidate.name == name && !filled[i];
            if !ok {
                return Err(InputError::new(format!(
                    "{}: candidate {i} (`{name}`) is not a survivor of this plan's screening, or is \
                     in two shards: the shards were written for another plan",
                    path.display()
                ))
                .into());
            }
            filled[i] = true;
            sc.scored[i].run = Some(run);
            sc.scored[i].status = status;
        }
    }
    if let Some(&i) = sc.survivors.iter().find(|&&i| !filled[i]) {
        return Err(InputError::new(format!(
            "{}: candidate {i} (`{}`) was simulated by no shard: the shards were written for another plan",
            dir.display(),
            sc.scored[i].candidate.name
        ))
        .into());
    }
    finish(plan, sc, 0.0)
}

/// Every candidate as a table (for parquet / CSV).
pub fn candidates_table(r: &PlanResult) -> Table {
    let mut t = Table::new(&[
        "candidate",
        "strategy",
        "reference",
        "work_stealing",
        "gpu_count",
        "capex_usd",
        "usd_per_hour",
        "predicted_rps",
        "bottleneck",
        "status",
        "ttft_p99_s",
        "tpot_p99_s",
        "e2e_p99_s",
        "throughput_rps",
        "arrival_rps",
        "completion_rps",
        "e2e_growth",
        "tokens_per_dollar",
        "error_pct",
        "pareto",
        "best",
    ]);
    for (i, s) in r.scored.iter().enumerate() {
        let sum = s.run.as_ref();
        let f = |v: Option<f64>| v.map_or(Value::Null, Value::F64);
        t.push(vec![
            Value::Str(s.candidate.name.clone()),
            Value::Str(s.candidate.strategy.name().into()),
            Value::Bool(s.candidate.reference),
            Value::Bool(s.candidate.work_stealing),
            Value::U64(s.candidate.pools.iter().map(|p| u64::from(p.gpus())).sum()),
            f(s.capex_usd),
            f(s.usd_per_hour.is_finite().then_some(s.usd_per_hour)),
            f(s.predicted_rps),
            s.bottleneck.clone().map_or(Value::Null, Value::Str),
            Value::Str(s.status.label()),
            f(sum.and_then(|x| x.ttft_p99_s)),
            f(sum.and_then(|x| x.tpot_p99_s)),
            f(sum.and_then(|x| x.e2e_p99_s)),
            f(sum.map(|x| x.throughput_rps)),
            f(sum.map(|k| k.arrival_rps).filter(|x| x.is_finite())),
            f(sum.map(|k| k.completion_rps).filter(|x| x.is_finite())),
            f(sum.map(|k| k.e2e_growth).filter(|x| x.is_finite())),
            f(sum.map(|x| x.tokens_per_dollar)),
            f(sum.and_then(|x| x.prediction_error_pct)),
            Value::Bool(r.pareto.contains(&i)),
            Value::Bool(r.best == Some(i)),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_fill_nodes_in_order_and_a_tp_group_stays_in_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../experiments/plans/paper-budget-wide.yaml");
        let mut plan = crate::experiment::load_plan(&path, None).unwrap();
        plan.search.gpus_per_node = Some(4);
        plan.search.network = Some("ib-ndr".into());
        let pool = |role, count, tp| PoolSpec {
            role,
            gpu: "A100-SXM-80GB".into(),
            count,
            tp,
        };
        // Prefill 1×TP1 and decode 3×TP2 on nodes of 4: node0 takes the prefill GPU and one
        // decode group (3 GPUs); the next group would make 5, so node1 takes the other two (4).
        let s = plan
            .scenario(
                "x",
                Strategy::Stage,
                &[pool(Role::Prefill, 1, 1), pool(Role::Decode, 3, 2)],
                false,
                None,
            )
            .unwrap();
        let sizes: Vec<usize> = s.cluster.nodes.iter().map(|n| n.gpus.len()).collect();
        assert_eq!(sizes, [3, 4]);
        let nodes: Vec<usize> = s.cluster.instances.iter().map(|i| i.node).collect();
        assert_eq!(nodes, [0, 0, 1, 1]);
        assert_eq!(s.cluster.network.name, "ib-ndr");
        assert!(
            s.cluster
                .nodes
                .iter()
                .all(|n| n.fabric.kind == LinkKind::NvLink),
            "A100-SXM nodes default to their NVLink"
        );
    }

    #[test]
    fn the_closed_form_count_is_what_enumerate_lists() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../experiments/plans/paper-budget.yaml");
        let mut plan = crate::experiment::load_plan(&path, None).unwrap();
        for (max_gpus, tp, stealing) in [
            (1, vec![1], vec![false]),
            (2, vec![1], vec![false]),
            (3, vec![1], vec![false]),
            (6, vec![1], vec![false]),
            (6, vec![1, 2], vec![false, true]),
            (8, vec![1, 2, 4], vec![true]),
        ] {
            plan.search.max_gpus = max_gpus;
            plan.search.fabric = match max_gpus {
                8 => crate::experiment::Fabrics::Many(vec!["pcie4".into(), "nvlink3".into()]),
                _ => crate::experiment::Fabrics::Default,
            };
            plan.search.tp = tp.clone();
            plan.search.work_stealing = stealing.clone();
            assert_eq!(
                candidate_count(&plan),
                enumerate(&plan).unwrap().len() as u64,
                "max_gpus {max_gpus}, tp {tp:?}, stealing {stealing:?}"
            );
        }
        // By hand: 3 types, TP {1, 2}, at most 4 GPUs, stage only. Prefill na×TP ta and decode
        // nb×TP tb with na·ta + nb·tb ≤ 4: TP 1/1: (1,1..3), (2,1..2), (3,1) = 6; TP 1/2:
        // (1,1), (2,1) = 2; TP 2/1: 2; TP 2/2: (1,1) = 1; 11 layouts × 3² type pairs = 99.
        plan.search.max_gpus = 4;
        plan.search.fabric = crate::experiment::Fabrics::Default;
        plan.search.tp = vec![1, 2];
        plan.search.strategies = vec![Strategy::Stage];
        let refs = plan.references.len() as u64;
        assert_eq!(candidate_count(&plan), 99 + refs);
    }
}
