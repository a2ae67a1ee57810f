//! Real replay of an experiment's trace on the GPU: open-loop arrivals at the trace's timestamps
//! into the LLaVA engine, every request's times recorded in the shared schema (`source = exec`).
//!
//! Colocated deployments (one instance serving everything on one GPU) replay on `Engine` as it
//! is. Modality- and stage-level replays need an encoder-only and a prefill-only worker handing
//! embeddings or KV to a second GPU's engine; they are not built yet and are refused by name.

use std::collections::BTreeMap;
use std::time::Duration;

use hetsim_sim::cluster::Role;
use hetsim_sim::experiment::{Scenario, Strategy};
use hetsim_sim::records::RequestRecord;

use crate::device::Gpu;
use crate::engine::{Engine, EngineConfig, EventKind, Request};
use crate::error::{Error, Result};
use crate::model::gpu::GpuModel;
use crate::model::llava::LlavaConfig;

/// Whether this harness can replay the scenario for real, and if not, why.
pub fn replayable(s: &Scenario) -> std::result::Result<(), String> {
    let one_gpu = s.cluster.instances.len() == 1
        && s.cluster.instances[0].role == Role::All
        && s.cluster.instances[0].tp() == 1;
    if s.strategy != Strategy::Colocated || !one_gpu {
        return Err(format!(
            "{}: only colocated deployments on one GPU replay for real so far ({} with {} instance(s) needs the disaggregated workers)",
            s.name,
            s.strategy.name(),
            s.cluster.instances.len()
        ));
    }
    Ok(())
}

/// Times of one request on the engine's clock.
#[derive(Default)]
struct Seen {
    encoded: Option<f64>,
    first: Option<f64>,
    finished: Option<f64>,
}

/// Serves the scenario's requests on GPU `gpu` with random weights of the exact architecture.
pub fn replay(s: &Scenario, gpu: usize) -> Result<Vec<RequestRecord>> {
    replayable(s).map_err(Error::Invalid)?;
    let c = LlavaConfig::builtin(&s.model.name, Some(s.model.llm.layers as usize))?;
    let mut source = s
        .workload
        .requests(s.seed)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut reqs = Vec::new();
    while let Some(r) = source
        .next_request()
        .map_err(|e| Error::Invalid(e.to_string()))?
    {
        reqs.push(r);
    }
    // The engine's prompt is [BOS, IMAGE × n, text…]: BOS is one of the trace's text tokens, so
    // its context is the simulator's (visual + prompt tokens).
    let to_engine = |r: &hetsim_sim::workload::Request| {
        let mut q = Request::synthetic(
            r.id,
            r.images.len(),
            (r.prompt_tokens as usize).saturating_sub(1),
            r.output_tokens as usize,
            c.llm.vocab,
        );
        q.images = r.images.clone();
        q
    };
    let longest = reqs
        .iter()
        .map(|r| {
            1 + r.images.len() * c.image_tokens()
                + r.prompt_tokens as usize
                + r.output_tokens as usize
        })
        .max()
        .unwrap_or(1);
    let max_batch = (s.engine.max_batch as usize).clamp(1, 256);
    let cfg = EngineConfig {
        max_batch,
        max_context: longest,
        prefill_tokens: s.engine.token_budget as usize,
        encode_batch: s.engine.encoder_batch_images as usize,
        kv_blocks: None,
        graphs: true,
        seed: s.seed,
    };
    let mut engine = Engine::new(GpuModel::random(&c, Gpu::open(gpu)?, s.seed)?, cfg)?;
    warm_up(&mut engine, &c, max_batch)?;

    let t0 = engine.now();
    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    let mut next = 0;
    while next < reqs.len() || !engine.is_idle() {
        let now = engine.now() - t0;
        while next < reqs.len() && reqs[next].arrival_ns as f64 * 1e-9 <= now {
            engine.submit(to_engine(&reqs[next]))?;
            seen.insert(reqs[next].id, Seen::default());
            next += 1;
        }
        if engine.is_idle() {
            // Open loop: nothing to do until the next arrival.
            let wait = reqs[next].arrival_ns as f64 * 1e-9 - (engine.now() - t0);
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
            continue;
        }
        let (_, events) = engine.step()?;
        for e in events {
            let Some(r) = seen.get_mut(&e.id) else {
                continue;
            };
            let t = e.t - t0;
            match e.kind {
                EventKind::EncodeDone => r.encoded = Some(t),
                EventKind::FirstToken => r.first = Some(t),
                EventKind::Token => {}
                EventKind::Finished => {
                    r.first.get_or_insert(t);
                    r.finished = Some(t);
                }
            }
        }
    }
    let model = &s.model;
    Ok(reqs
        .iter()
        .map(|r| {
            let t = &seen[&r.id];
            let arrival = r.arrival_ns as f64 * 1e-9;
            let visual: u64 = r
                .images
                .iter()
                .map(|&(w, h)| {
                    model
                        .image_tokens(w as u64, h as u64)
                        .map_or(0, |t| t.llm_tokens)
                })
                .sum();
            let out = r.output_tokens as u64;
            let ttft = t.first.map(|f| f - arrival);
            let e2e = t.finished.map(|f| f - arrival);
            let tpot = match (t.first, t.finished) {
                (Some(f), Some(d)) if out > 1 => Some((d - f) / (out - 1) as f64),
                _ => None,
            };
            RequestRecord {
                scenario: s.name.clone(),
                strategy: s.strategy.name(),
                request_id: r.id,
                status: if t.finished.is_some() {
                    "finished".into()
                } else {
                    "dropped:engine".into()
                },
                arrival_s: arrival,
                n_images: r.images.len() as u64,
                visual_tokens: visual,
                prompt_tokens: r.prompt_tokens as u64,
                output_tokens: out,
                emb_bytes: 0,
                kv_bytes: 0,
                ttft_s: ttft,
                tpot_s: tpot,
                e2e_s: e2e,
                encode_start_s: None,
                encode_end_s: t.encoded,
                emb_transfer_start_s: None,
                emb_transfer_end_s: None,
                prefill_start_s: None,
                prefill_end_s: t.first,
                kv_transfer_start_s: None,
                kv_transfer_end_s: None,
                decode_start_s: t.first,
                finish_s: t.finished,
                encoder_instance: Some(0),
                prefill_instance: Some(0),
                decode_instance: Some(0),
                preemptions: 0,
                source: "exec",
            }
        })
        .collect())
}

/// Compiles every kernel and captures every decode graph before the clock starts: requests with
/// output lengths 2 … max_batch + 1 make the batch shrink through every bucket.
fn warm_up(engine: &mut Engine, c: &LlavaConfig, max_batch: usize) -> Result<()> {
    for k in 0..max_batch {
        engine.submit(Request::synthetic(
            u64::MAX - k as u64,
            usize::from(k == 0),
            8,
            k + 2,
            c.llm.vocab,
        ))?;
    }
    engine.run_to_completion()?;
    Ok(())
}

/// What `hetsim validate` found.
pub struct Validation {
    /// scenario, metric, predicted, measured, error_pct.
    pub comparison: hetsim_sim::table::Table,
    pub median_abs_error_pct: Option<f64>,
    /// Scenarios simulated but not replayed, with the reason.
    pub skipped: Vec<String>,
    pub files: Vec<std::path::PathBuf>,
}

/// Simulates every scenario and replays those this harness can serve for real, on GPU `gpu`;
/// writes both sources' rows (and the comparison) under `out`.
pub fn validate(
    exp: &hetsim_sim::experiment::Experiment,
    out: Option<&std::path::Path>,
    gpu: usize,
) -> Result<Validation> {
    use hetsim_sim::output::ResultWriter;
    use hetsim_sim::records::MemorySink;
    let sim_err = |e: hetsim_sim::error::Error| Error::Invalid(e.to_string());
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut writer = match out {
        Some(dir) => Some(ResultWriter::create(dir).map_err(sim_err)?),
        None => None,
    };
    for s in &exp.scenarios {
        let mut sink = MemorySink::default();
        let run = hetsim_sim::engine::simulate(s, &mut sink, &mut |_| {}).map_err(sim_err)?;
        if let Some(w) = writer.as_mut() {
            for t in &sink.transfers {
                w.transfers.append(t).map_err(sim_err)?;
            }
            w.summary.append(&run.summary).map_err(sim_err)?;
        }
        rows.extend(sink.requests);
        match replayable(s) {
            Ok(()) => {
                eprintln!("replaying {} on GPU {gpu} …", s.name);
                let measured = replay(s, gpu)?;
                if let Some(w) = writer.as_mut() {
                    let refs: Vec<&RequestRecord> = measured.iter().collect();
                    w.summary
                        .append(&hetsim_sim::compare::summarize_measured(
                            &run.summary,
                            &refs,
                        ))
                        .map_err(sim_err)?;
                }
                rows.extend(measured);
            }
            Err(why) => skipped.push(why),
        }
    }
    let cmp = hetsim_sim::compare::compare(&rows);
    let mut files = Vec::new();
    if let (Some(mut w), Some(dir)) = (writer, out) {
        for r in &rows {
            w.requests.append(r).map_err(sim_err)?;
        }
        files = w.commit().map_err(sim_err)?;
        let csv = dir.join("comparison.csv");
        std::fs::write(&csv, cmp.table.to_csv())
            .map_err(|e| Error::Invalid(format!("{}: {e}", csv.display())))?;
        files.push(csv);
    }
    Ok(Validation {
        comparison: cmp.table,
        median_abs_error_pct: cmp.median_abs_error_pct,
        skipped,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hetsim_sim::experiment::load_experiment;

    #[test]
    fn only_colocated_one_gpu_scenarios_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let exp = load_experiment(&root.join("experiments/validate-pcie.yaml"), None).unwrap();
        for s in &exp.scenarios {
            let ok = replayable(s).is_ok();
            assert_eq!(ok, s.strategy == Strategy::Colocated, "{}", s.name);
        }
    }
}
