//! Closed-form capacity: how many requests per second each phase of a request can sustain on a
//! GPU, and so what a deployment can serve, from the same performance model the engine uses.
//! `docs/cost-model.md` derives it; `hetsim cost` prints it beside the simulated result.
//!
//! A request is encoded once, prefilled once and decoded for `o − 1` steps. With per-request
//! times `t_E`, `t_P`, `t_D` on an instance (each amortised over the batch the engine would form),
//! a pool of instances doing phase X serves `Σ 1 / t_X` requests per second, and a deployment
//! serves the minimum over its pools (and over the links between them).

use crate::catalog::{Dtype, ImageTokens, ModelSpec};
use crate::cluster::Role;
use crate::engine_spec::EngineSpec;
use crate::experiment::{Scenario, Slo};
use crate::kv::MemoryPlan;
use crate::perf::{BatchShape, PhaseModel, Work};

/// The average request of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMix {
    pub images: f64,
    /// One representative image's tokens (the mean over the sample).
    pub image: ImageTokens,
    pub visual_tokens: f64,
    pub prompt_tokens: f64,
    pub output_tokens: f64,
}

impl RequestMix {
    /// Means over the first `n` requests the workload would produce.
    pub fn of(s: &Scenario, n: u64) -> Result<RequestMix, crate::error::InputError> {
        let mut src = s.workload.requests(s.seed)?;
        let (mut k, mut imgs, mut vis, mut enc, mut proj, mut prompt, mut out) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let (mut tiles, mut feat) = (0u64, 0u64);
        while k < n
            && let Some(r) = src.next_request()?
        {
            k += 1;
            imgs += r.images.len() as u64;
            for &(w, h) in &r.images {
                let t = s.model.image_tokens(w as u64, h as u64)?;
                vis += t.llm_tokens;
                enc += t.encoder_tokens;
                proj += t.projector_tokens;
                tiles += t.tiles;
                feat += t.feature_tokens;
            }
            prompt += r.prompt_tokens as u64;
            out += r.output_tokens as u64;
        }
        let k = k.max(1) as f64;
        let per_image = |x: u64| {
            if imgs > 0 {
                (x as f64 / imgs as f64).round() as u64
            } else {
                0
            }
        };
        Ok(RequestMix {
            images: imgs as f64 / k,
            image: ImageTokens {
                resized_width: 0,
                resized_height: 0,
                tiles: per_image(tiles).max(1),
                encoder_tokens: per_image(enc),
                projector_tokens: per_image(proj),
                feature_tokens: per_image(feat),
                llm_tokens: per_image(vis),
            },
            visual_tokens: vis as f64 / k,
            prompt_tokens: prompt as f64 / k,
            output_tokens: out as f64 / k,
        })
    }

    pub fn context(&self) -> f64 {
        self.visual_tokens + self.prompt_tokens
    }
}

/// Per-request work of each phase on one instance (time, FLOPs and HBM bytes per GPU), and the
/// decode batch behind the decode share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseTimes {
    pub encode: Work,
    pub prefill: Work,
    pub decode: Work,
    pub decode_batch: u64,
    /// Step time of that decode batch (what TPOT is made of).
    pub decode_step_s: f64,
}

/// Per-request phase times on an instance with `perf` and `memory`, for the `mix` workload.
///
/// Encode: a full encoder batch, divided by the requests in it. Prefill: as many whole prompts as
/// fit the token budget in one step, divided by their number (a prompt longer than the budget:
/// the sum of its chunks). Decode: the largest batch that fits
/// the KV memory, `max_batch` and the TPOT target, over `o − 1` steps, divided by the batch.
pub fn phase_times(
    perf: &dyn PhaseModel,
    memory: Option<&MemoryPlan>,
    mix: &RequestMix,
    engine: &EngineSpec,
    slo: &Slo,
) -> PhaseTimes {
    let encode = if mix.images > 0.0 {
        let per_batch = (engine.encoder_batch_images as f64 / mix.images)
            .floor()
            .max(1.0) as usize;
        let imgs = ((per_batch as f64 * mix.images).round() as usize).max(1);
        perf.encode_work(&vec![mix.image; imgs]) * (1.0 / per_batch as f64)
    } else {
        Work::default()
    };
    let ctx = mix.context().round().max(1.0) as u64;
    let prefill = if ctx > engine.token_budget {
        // Longer than a step's budget: prefilled in chunks, each attending to the context before
        // it (pricing one budget's worth, as before, was up to 2.4× optimistic on HD images).
        let mut work = Work::default();
        let mut cached = 0;
        while cached < ctx {
            let new = (ctx - cached).min(engine.token_budget);
            let mut chunk = BatchShape::default();
            chunk.add_prefill_chunk(cached, new, cached + new == ctx);
            work += perf.forward_work(&chunk);
            cached += new;
        }
        work
    } else {
        let prompts = (engine.token_budget / ctx).clamp(1, engine.max_batch);
        let mut batch = BatchShape::default();
        for _ in 0..prompts {
            batch.add_prefill_chunk(0, ctx, true);
        }
        perf.forward_work(&batch) * (1.0 / prompts as f64)
    };

    let steps = (mix.output_tokens - 1.0).max(0.0);
    let mean_ctx = (mix.context() + mix.output_tokens / 2.0).round() as u64;
    let step = |b: u64| {
        let mut d = BatchShape::default();
        for _ in 0..b {
            d.add_decode(mean_ctx);
        }
        perf.forward_work(&d)
    };
    let kv_limit = memory.map_or(engine.max_batch, |m| {
        let per_request = (mix.context() + mix.output_tokens).ceil() as u64;
        (m.kv_tokens(engine.block_tokens) / per_request.max(1)).max(1)
    });
    let mut b = engine.max_batch.min(kv_limit).max(1);
    // The largest batch whose step meets the TPOT target (a smaller batch only costs throughput).
    while b > 1 && step(b).seconds > slo.tpot_s {
        b = (b * 3 / 4).max(1);
    }
    let one_step = step(b);
    PhaseTimes {
        encode,
        prefill,
        decode: one_step * (steps / b as f64),
        decode_batch: b,
        decode_step_s: one_step.seconds,
    }
}

/// Closed-form capacity of a scenario's deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentCapacity {
    /// Requests per second the deployment can sustain.
    pub requests_per_s: f64,
    /// What limits it: a pool (`encoder`, `llm`, …) or a link.
    pub bottleneck: String,
    /// Per instance: its phase times.
    pub instances: Vec<(Role, PhaseTimes)>,
}

/// Sums `1 / t` over each pool's instances for the phases its role runs, and takes the minimum
/// over pools and over the links the strategy ships data on.
pub fn deployment_capacity(s: &Scenario, mix: &RequestMix) -> DeploymentCapacity {
    let enc_pool = s.strategy.has_encoder_pool();
    let mut pools: Vec<(Role, f64)> = Vec::new();
    let mut instances = Vec::new();
    for (i, spec) in s.cluster.instances.iter().enumerate() {
        let perf = s.phase_model(i);
        let mem = (spec.role != Role::Encoder || s.work_stealing).then(|| &s.memory[i]);
        let t = phase_times(perf.as_ref(), mem, mix, &s.engine, &s.slo);
        // (compute-bound, decode) seconds per request of what this role runs.
        let (compute, decode) = match spec.role {
            Role::Encoder => (t.encode.seconds, 0.0),
            Role::All => (t.encode.seconds + t.prefill.seconds, t.decode.seconds),
            Role::Llm => (t.prefill.seconds, t.decode.seconds),
            Role::Prefill => (
                t.prefill.seconds + if enc_pool { 0.0 } else { t.encode.seconds },
                0.0,
            ),
            Role::Decode => (0.0, t.decode.seconds),
        };
        // At saturation the GPU never rests: its compute-bound steps run at the slowdown of
        // their share of its time (`PhaseModel::sustained_slowdown`, 1 without a measurement),
        // each as long as one request's compute.
        let duty = if compute + decode > 0.0 {
            compute / (compute + decode)
        } else {
            0.0
        };
        let per_request = compute * perf.sustained_slowdown(duty, compute) + decode;
        let rate = if per_request > 0.0 {
            1.0 / per_request
        } else {
            f64::INFINITY
        };
        match pools.iter_mut().find(|(r, _)| *r == spec.role) {
            Some((_, total)) => *total += rate,
            None => pools.push((spec.role, rate)),
        }
        instances.push((spec.role, t));
    }
    if s.work_stealing {
        // Stealing encoders encode every request (λ·t_E of their time in all) and serve LLM work
        // with the rest: λ ≤ C_llm + Σ (1 − λ·t_E/n) / T_pd  ⇒  λ ≤ (C_llm + n/T_pd) / (1 + t_E/T_pd).
        let enc: Vec<&PhaseTimes> = instances
            .iter()
            .filter(|(r, _)| *r == Role::Encoder)
            .map(|(_, t)| t)
            .collect();
        let n = enc.len() as f64;
        let t_e = enc.iter().map(|t| t.encode.seconds).sum::<f64>() / n;
        let t_pd = enc
            .iter()
            .map(|t| t.prefill.seconds + t.decode.seconds)
            .sum::<f64>()
            / n;
        if let Some((_, llm)) = pools.iter_mut().find(|(r, _)| *r == Role::Llm) {
            *llm = (*llm + n / t_pd) / (1.0 + t_e / t_pd);
        }
    }
    let (mut best, mut what) = (f64::INFINITY, String::new());
    for (role, rate) in &pools {
        if *rate < best {
            best = *rate;
            what = format!("{} pool", role.name());
        }
    }
    // Links: the bytes each request ships over the fabric between the pools.
    let fabric = s.cluster.nodes[0].fabric;
    let bw = s
        .cluster
        .ports
        .iter()
        .find(|p| p.link.name == fabric.name)
        .map_or(fabric.effective_bytes_per_s(), |p| p.bytes_per_s);
    let emb = s.model.emb_bytes(mix.visual_tokens.round() as u64, s.dtype) as f64;
    let kv = s.model.llm.kv_bytes(mix.context().round() as u64, s.dtype) as f64;
    let shipped = match s.strategy {
        crate::experiment::Strategy::Colocated => 0.0,
        crate::experiment::Strategy::Modality => emb,
        crate::experiment::Strategy::Stage => kv,
        crate::experiment::Strategy::Epd => emb.max(kv),
    };
    // Each sending GPU has its own port: the link bound scales with the senders.
    let senders = s
        .cluster
        .instances
        .iter()
        .filter(|i| matches!(i.role, Role::Encoder | Role::Prefill))
        .count()
        .max(1) as f64;
    if shipped > 0.0 && senders * bw / shipped < best {
        best = senders * bw / shipped;
        what = format!("{} link", fabric.name);
    }
    DeploymentCapacity {
        requests_per_s: best,
        bottleneck: what,
        instances,
    }
}

/// A GPU type's per-request phase times when it runs the whole model alone (tp = 1).
pub fn tier_times(
    model: &ModelSpec,
    dtype: Dtype,
    gpu: &'static crate::catalog::GpuSpec,
    engine: &EngineSpec,
    slo: &Slo,
    mix: &RequestMix,
) -> Option<PhaseTimes> {
    let perf = crate::perf::Roofline::new(model, dtype, gpu, engine.efficiency, 1, None);
    let mem = MemoryPlan::new(model, dtype, gpu, 1, true, true, engine).ok()?;
    Some(phase_times(&perf, Some(&mem), mix, engine, slo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::load_experiment;

    #[test]
    fn a_prompt_longer_than_the_token_budget_is_priced_whole() {
        // Qwen2.5-VL-7B, two 1080p images: 5,220 tokens of context against a 2,048-token budget.
        // Chunks of 2048, 2048 and 1124 tokens after 0, 2048 and 4096 cached attend to
        // 2048·1024.5 + 2048·3072.5 + 1124·4658.5 = 13,626,810 pairs = 5220·5221/2, the whole
        // prompt's; the linear layers see the same 5,220 tokens. So the FLOPs equal one
        // 5,220-token pass (before: those of 2,048 tokens, 2.5× too few), and the time is at least it.
        let model = crate::catalog::builtin_model("qwen2.5-vl-7b").unwrap();
        let gpu = crate::catalog::gpu_by_name("A100-PCIe-80GB").unwrap();
        let mix = RequestMix {
            images: 0.0,
            image: ImageTokens {
                resized_width: 0,
                resized_height: 0,
                tiles: 0,
                encoder_tokens: 0,
                projector_tokens: 0,
                feature_tokens: 0,
                llm_tokens: 0,
            },
            visual_tokens: 5200.0,
            prompt_tokens: 20.0,
            output_tokens: 128.0,
        };
        let perf =
            crate::perf::Roofline::new(&model, Dtype::Bf16, gpu, Default::default(), 1, None);
        let at = |budget| {
            let engine = EngineSpec {
                token_budget: budget,
                ..EngineSpec::default()
            };
            phase_times(&perf, None, &mix, &engine, &Slo::default()).prefill
        };
        let (chunked, whole) = (at(2048), at(8192));
        assert!(
            (chunked.flops / whole.flops - 1.0).abs() < 1e-12,
            "{chunked:?} {whole:?}"
        );
        assert!(chunked.seconds >= whole.seconds, "{chunked:?} {whole:?}");
        assert!(
            chunked.seconds < 1.2 * whole.seconds,
            "{chunked:?} {whole:?}"
        );
    }

    #[test]
    fn closed_form_capacity_tracks_the_simulator() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/pcie.yaml");
        let exp = load_experiment(&path, None).unwrap();
        for s in exp.scenarios.iter().filter(|s| s.rate == Some(48.0)) {
            let mix = RequestMix::of(s, 500).unwrap();
            assert_eq!(mix.visual_tokens, 576.0);
            let cap = deployment_capacity(s, &mix);
            assert!(
                cap.requests_per_s.is_finite() && cap.requests_per_s > 1.0,
                "{}: {cap:?}",
                s.name
            );
        }
    }

    /// A profile that measured a sustained-load slowdown lowers the closed-form capacity of a
    /// colocated GPU by about that factor on its compute-bound share, and only there.
    #[test]
    fn capacity_pays_the_sustained_slowdown() {
        use crate::profile::HardwareProfile;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let exp = root.join("experiments/validate-h200.yaml");
        let profile =
            HardwareProfile::load(&root.join("profiles/h200-2026-12-03-llava-1.5-7b.yaml"))
                .unwrap();
        let mut rested = profile.clone();
        rested.phases[0].sustained.clear();
        let cap = |p: HardwareProfile| {
            let e = crate::experiment::load_experiment_on(&exp, None, Some(p), false).unwrap();
            let s = &e.scenarios[0];
            deployment_capacity(s, &RequestMix::of(s, 500).unwrap()).requests_per_s
        };
        let (hot, cold) = (cap(profile.clone()), cap(rested));
        let slowdown = profile.phases[0].sustained[0].slowdown;
        assert!(hot < cold, "{hot} vs {cold}");
        assert!(
            cold / hot < slowdown,
            "{hot} vs {cold}: only the compute share slows"
        );
    }
}
