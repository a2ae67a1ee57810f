//! Real replay of an experiment's trace on the GPU: open-loop arrivals at the trace's timestamps
//! into the LLaVA engine, every request's times recorded in the shared schema (`source = exec`).
//!
//! * Colocated deployments (one instance serving everything on one GPU) replay on `Engine` as it
//!   is.
//! * Modality-level deployments of one encoder and one LLM instance (tp 1, each on its own GPU)
//!   replay on two engines: the encoder's engine only encodes (`Engine::encode_ready`), its
//!   embeddings `[images·576, d]` bf16 are shipped to the LLM's GPU over the scenario's fabric
//!   (NVLink: `cuMemcpyPeerAsync` with peer access on; PCIe: GPU → pinned host → GPU, chunked and
//!   double-buffered, `probes::link::Stager`), and the LLM's engine takes them with
//!   `Engine::submit_encoded` (the request skips encoding) and prefills and decodes as before.
//!   One host thread per GPU: the encoder thread takes the arrivals, encodes, ships (and waits
//!   for each copy, so its times are the copy's own) and hands the request over a channel; the
//!   LLM thread serves what it has been handed.
//! * Stage-level deployments (prefill → decode, KV shipped) are not built and are refused by
//!   name.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use hetsim_sim::catalog::LinkKind;
use hetsim_sim::cluster::Role;
use hetsim_sim::experiment::{Scenario, Strategy};
use hetsim_sim::records::{RequestRecord, TransferRecord};

use crate::device::{DeviceBuffer, Event, Gpu, Stream};
use crate::engine::{Engine, EngineConfig, EventKind, Request};
use crate::error::{Error, Result};
use crate::model::gpu::{GpuModel, KV_BLOCK};
use crate::model::llava::LlavaConfig;
use crate::probes::link::{Stager, staged_chunk};

/// Whether this harness can replay the scenario for real, and if not, why.
pub fn replayable(s: &Scenario) -> std::result::Result<(), String> {
    let inst = &s.cluster.instances;
    match s.strategy {
        Strategy::Colocated => {
            if inst.len() == 1 && inst[0].role == Role::All && inst[0].tp() == 1 {
                Ok(())
            } else {
                Err(format!(
                    "{}: colocated replay serves one instance of tp 1 on one GPU ({} instance(s) given)",
                    s.name,
                    inst.len()
                ))
            }
        }
        Strategy::Modality => {
            let roles: Vec<Role> = inst.iter().map(|i| i.role).collect();
            if inst.len() != 2 || !roles.contains(&Role::Encoder) || !roles.contains(&Role::Llm) {
                return Err(format!(
                    "{}: modality replay serves one encoder and one llm instance (given: {})",
                    s.name,
                    roles
                        .iter()
                        .map(|r| r.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if inst.iter().any(|i| i.tp() != 1) {
                return Err(format!(
                    "{}: modality replay serves instances of tp 1 only",
                    s.name
                ));
            }
            if inst[0].gpus[0] == inst[1].gpus[0] || inst[0].node != inst[1].node {
                return Err(format!(
                    "{}: modality replay needs the encoder and the llm on two GPUs of one node",
                    s.name
                ));
            }
            if s.work_stealing {
                return Err(format!(
                    "{}: modality replay has no work stealing (the encoder only encodes)",
                    s.name
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "{}: {} deployments do not replay for real yet (the prefill worker shipping KV to a decode worker is not built)",
            s.name,
            other.name()
        )),
    }
}

/// Times of one request on the replay's clock (seconds since the first arrival could happen).
#[derive(Default, Clone)]
struct Seen {
    encode_start: Option<f64>,
    encoded: Option<f64>,
    tx_start: Option<f64>,
    tx_end: Option<f64>,
    emb_bytes: u64,
    first: Option<f64>,
    finished: Option<f64>,
}

/// What a real replay produced.
pub struct Replayed {
    pub requests: Vec<RequestRecord>,
    /// Embedding shipments (modality-level only).
    pub transfers: Vec<TransferRecord>,
}

/// The engine's request for a trace request. The engine's prompt is [BOS, IMAGE × n, text…]:
/// BOS is one of the trace's text tokens, so its context is the simulator's (visual + prompt
/// tokens).
fn to_engine(r: &hetsim_sim::workload::Request, c: &LlavaConfig) -> Request {
    let mut q = Request::synthetic(
        r.id,
        r.images.len(),
        (r.prompt_tokens as usize).saturating_sub(1),
        r.output_tokens as usize,
        c.llm.vocab,
    );
    q.images = r.images.clone();
    q
}

fn arrival_s(r: &hetsim_sim::workload::Request) -> f64 {
    r.arrival_ns as f64 * 1e-9
}

/// Serves the scenario's requests with random weights of the exact architecture: colocated on
/// GPU `gpu`; modality-level on GPUs `gpu` + the cluster's GPU index of each instance.
pub fn replay(s: &Scenario, gpu: usize) -> Result<Replayed> {
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
    let (seen, transfers, instances) = if s.strategy == Strategy::Modality {
        let (seen, transfers) = replay_modality(s, gpu, &reqs, &c, &cfg)?;
        let enc = s
            .cluster
            .instances
            .iter()
            .position(|i| i.role == Role::Encoder);
        let llm = s.cluster.instances.iter().position(|i| i.role == Role::Llm);
        (seen, transfers, (enc.unwrap_or(0), llm.unwrap_or(1)))
    } else {
        (replay_colocated(&reqs, gpu, &c, &cfg)?, Vec::new(), (0, 0))
    };
    let requests = reqs
        .iter()
        .map(|r| {
            let t = seen.get(&r.id).cloned().unwrap_or_default();
            record(s, r, &t, instances)
        })
        .collect();
    Ok(Replayed {
        requests,
        transfers,
    })
}

fn record(
    s: &Scenario,
    r: &hetsim_sim::workload::Request,
    t: &Seen,
    (enc, llm): (usize, usize),
) -> RequestRecord {
    let model = &s.model;
    let arrival = arrival_s(r);
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
        emb_bytes: t.emb_bytes,
        kv_bytes: 0,
        ttft_s: ttft,
        tpot_s: tpot,
        e2e_s: e2e,
        encode_start_s: t.encode_start,
        encode_end_s: t.encoded,
        emb_transfer_start_s: t.tx_start,
        emb_transfer_end_s: t.tx_end,
        prefill_start_s: None,
        prefill_end_s: t.first,
        kv_transfer_start_s: None,
        kv_transfer_end_s: None,
        decode_start_s: t.first,
        finish_s: t.finished,
        encoder_instance: Some(enc as u64),
        prefill_instance: Some(llm as u64),
        decode_instance: Some(llm as u64),
        preemptions: 0,
        source: "exec",
    }
}

/// Applies an engine's events to the requests' times; `off` turns the engine's clock into the
/// replay's.
fn note(seen: &mut BTreeMap<u64, Seen>, events: Vec<crate::engine::EngineEvent>, off: f64) {
    for e in events {
        let Some(r) = seen.get_mut(&e.id) else {
            continue;
        };
        let t = e.t - off;
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

fn replay_colocated(
    reqs: &[hetsim_sim::workload::Request],
    gpu: usize,
    c: &LlavaConfig,
    cfg: &EngineConfig,
) -> Result<BTreeMap<u64, Seen>> {
    let mut engine = Engine::new(GpuModel::random(c, Gpu::open(gpu)?, cfg.seed)?, cfg.clone())?;
    warm_up(&mut engine, c, cfg.max_batch)?;

    let t0 = engine.now();
    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    let mut next = 0;
    while next < reqs.len() || !engine.is_idle() {
        let now = engine.now() - t0;
        while next < reqs.len() && arrival_s(&reqs[next]) <= now {
            engine.submit(to_engine(&reqs[next], c))?;
            seen.insert(reqs[next].id, Seen::default());
            next += 1;
        }
        if engine.is_idle() {
            // Open loop: nothing to do until the next arrival.
            let wait = arrival_s(&reqs[next]) - (engine.now() - t0);
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
            continue;
        }
        let (_, events) = engine.step()?;
        note(&mut seen, events, t0);
    }
    Ok(seen)
}

/// One request handed from the encoder's thread to the LLM's: its embeddings on the LLM's GPU,
/// complete.
struct Shipped {
    req: Request,
    emb: Option<DeviceBuffer>,
    times: Seen,
}

/// Device buffers and the request travel between the two host threads; each thread binds its
/// own GPU's context before it uses the driver, and a buffer is only read by the receiving
/// thread after the sending thread synchronised the copy that wrote it.
struct SendShipped(Box<Shipped>);
unsafe impl Send for SendShipped {}

/// How embeddings cross from the encoder's GPU to the LLM's.
enum Link {
    /// cuMemcpyPeerAsync on a stream of the source GPU, peer access enabled both ways.
    Peer(Stream),
    /// GPU → pinned host → GPU in chunks, two streams, 4 slots of 16 MiB.
    Staged(Stager, Event),
}

impl Link {
    fn ship(&self, src: &DeviceBuffer, dst: &DeviceBuffer) -> Result<()> {
        match self {
            Link::Peer(st) => {
                crate::device::copy_peer_async(dst, src, src.bytes, st)?;
                st.synchronize()
            }
            Link::Staged(stager, start) => {
                start.record(&stager.d2h)?;
                let chunk = staged_chunk(src.bytes, stager.slot_bytes);
                stager.enqueue(src.ptr, dst.ptr, src.bytes, chunk, start)?;
                stager.h2d.synchronize()
            }
        }
    }
}

#[allow(clippy::type_complexity)]
fn replay_modality(
    s: &Scenario,
    gpu: usize,
    reqs: &[hetsim_sim::workload::Request],
    c: &LlavaConfig,
    cfg: &EngineConfig,
) -> Result<(BTreeMap<u64, Seen>, Vec<TransferRecord>)> {
    let inst = &s.cluster.instances;
    let (Some(ei), Some(li)) = (
        inst.iter().position(|i| i.role == Role::Encoder),
        inst.iter().position(|i| i.role == Role::Llm),
    ) else {
        return Err(Error::Invalid(format!(
            "{}: no encoder or no llm instance",
            s.name
        )));
    };
    let enc_ord = gpu + inst[ei].gpus[0];
    let llm_ord = gpu + inst[li].gpus[0];
    let fabric = s.cluster.nodes[inst[li].node].fabric;
    let nvlink = fabric.kind == LinkKind::NvLink;
    eprintln!(
        "  encoder on GPU {enc_ord}, llm on GPU {llm_ord}, embeddings over {} ({})",
        fabric.name,
        if nvlink {
            "peer copy"
        } else {
            "GPU → pinned host → GPU"
        }
    );
    let barrier = Barrier::new(2);
    let t0cell: OnceLock<Instant> = OnceLock::new();
    let (tx, rx) = mpsc::channel::<SendShipped>();

    let encoder = || -> Result<()> {
        let tx = tx;
        let setup = (|| -> Result<(Gpu, Gpu, Link, Engine)> {
            let eg = Gpu::open(enc_ord)?;
            let lg = Gpu::open(llm_ord)?;
            let link = if nvlink {
                eg.enable_peer_access(&lg)?;
                lg.enable_peer_access(&eg)?;
                Link::Peer(eg.stream()?)
            } else {
                Link::Staged(Stager::new(&eg, &lg, 16 << 20, 4)?, Event::sync_only(&eg)?)
            };
            // Encode only: a KV pool of one request, no decode graphs.
            let ecfg = EngineConfig {
                max_batch: 1,
                kv_blocks: Some(cfg.max_context.div_ceil(KV_BLOCK)),
                graphs: false,
                ..cfg.clone()
            };
            let mut enc = Engine::new(GpuModel::random(c, Gpu::open(enc_ord)?, cfg.seed)?, ecfg)?;
            // Warm-up: every encode batch size up to 8 and the largest, then one shipment.
            let eb = cfg.encode_batch.max(1);
            let mut id = u64::MAX;
            for n in (1..=eb.min(8)).chain(std::iter::once(eb)) {
                for _ in 0..n {
                    enc.submit(Request::synthetic(id, 1, 8, 1, c.llm.vocab))?;
                    id -= 1;
                }
                while !enc.is_idle() {
                    let (_, out) = enc.encode_ready()?;
                    for (_, emb) in out {
                        if let Some(src) = emb {
                            let dst = lg.alloc(src.bytes)?;
                            eg.bind()?;
                            link.ship(&src, &dst)?;
                            // Freeing binds the buffer's context: bind the encoder's again.
                            drop(dst);
                            eg.bind()?;
                        }
                    }
                }
            }
            eg.bind()?;
            Ok((eg, lg, link, enc))
        })();
        barrier.wait();
        let (eg, lg, link, mut enc) = setup?;
        eg.bind()?;
        let t0 = *t0cell.get_or_init(Instant::now);
        let off = t0.duration_since(enc.started()).as_secs_f64();
        let now = || t0.elapsed().as_secs_f64();
        let mut next = 0;
        loop {
            while next < reqs.len() && arrival_s(&reqs[next]) <= now() {
                enc.submit(to_engine(&reqs[next], c))?;
                next += 1;
            }
            if enc.is_idle() {
                if next == reqs.len() {
                    return Ok(());
                }
                let wait = arrival_s(&reqs[next]) - now();
                if wait > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(wait));
                }
                continue;
            }
            let start = now();
            let (events, out) = enc.encode_ready()?;
            let end = events.first().map_or(start, |e| e.t - off);
            for (req, emb) in out {
                let mut times = Seen::default();
                let dst = match emb {
                    None => None,
                    Some(src) => {
                        times.encode_start = Some(start);
                        times.encoded = Some(end);
                        let dst = lg.alloc(src.bytes)?;
                        eg.bind()?;
                        let a = now();
                        link.ship(&src, &dst)?;
                        times.tx_start = Some(a);
                        times.tx_end = Some(now());
                        times.emb_bytes = src.bytes as u64;
                        Some(dst)
                    }
                };
                let msg = SendShipped(Box::new(Shipped {
                    req,
                    emb: dst,
                    times,
                }));
                if tx.send(msg).is_err() {
                    // The LLM's thread has stopped (an error there); it reports why.
                    return Ok(());
                }
            }
        }
    };

    let serve = |rx: mpsc::Receiver<SendShipped>| -> Result<BTreeMap<u64, Seen>> {
        let setup = (|| -> Result<Engine> {
            let mut llm = Engine::new(
                GpuModel::random(c, Gpu::open(llm_ord)?, cfg.seed)?,
                cfg.clone(),
            )?;
            warm_up(&mut llm, c, cfg.max_batch)?;
            Ok(llm)
        })();
        barrier.wait();
        let mut llm = setup?;
        llm.model.gpu.bind()?;
        let t0 = *t0cell.get_or_init(Instant::now);
        let off = t0.duration_since(llm.started()).as_secs_f64();
        let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
        loop {
            let got = if llm.is_idle() {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break, // the encoder is done and everything is served
                }
            } else {
                match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => {
                        let (_, events) = llm.step()?;
                        note(&mut seen, events, off);
                        continue;
                    }
                }
            };
            let m = got.0;
            seen.insert(m.req.id, m.times);
            llm.model.gpu.bind()?;
            llm.submit_encoded(m.req, m.emb)?;
        }
        Ok(seen)
    };

    let (seen, enc_result) = std::thread::scope(|sc| {
        let h = sc.spawn(encoder);
        let seen = serve(rx);
        let enc = h
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("the encoder thread panicked".into())));
        (seen, enc)
    });
    // The encoder's error first: it explains an LLM thread that stopped for want of requests.
    enc_result?;
    let seen = seen?;
    let transfers = reqs
        .iter()
        .filter_map(|r| {
            let t = seen.get(&r.id)?;
            Some(TransferRecord {
                scenario: s.name.clone(),
                request_id: r.id,
                kind: "embedding",
                src_instance: ei as u64,
                dst_instance: li as u64,
                link: fabric.name,
                bytes: t.emb_bytes,
                flows: 1,
                ready_s: t.encoded?,
                start_s: t.tx_start?,
                end_s: t.tx_end?,
                source: "exec",
            })
        })
        .collect();
    Ok((seen, transfers))
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
                let Replayed {
                    requests: measured,
                    transfers,
                } = replay(s, gpu)?;
                if let Some(w) = writer.as_mut() {
                    for t in &transfers {
                        w.transfers.append(t).map_err(sim_err)?;
                    }
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
    use hetsim_sim::experiment::{load_experiment, parse_experiment};

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn colocated_and_modality_replay_stage_is_refused_by_name() {
        for f in ["validate-pcie.yaml", "validate-nvlink.yaml"] {
            let exp = load_experiment(&root().join("experiments").join(f), None).unwrap();
            assert_eq!(exp.scenarios.len(), 6, "{f}");
            for s in &exp.scenarios {
                match s.strategy {
                    Strategy::Colocated | Strategy::Modality => {
                        assert!(replayable(s).is_ok(), "{}: {:?}", s.name, replayable(s))
                    }
                    _ => {
                        let why = replayable(s).unwrap_err();
                        assert!(why.contains("stage") && why.contains("KV"), "{why}");
                    }
                }
            }
        }
    }

    fn scenario(deployment: &str) -> Scenario {
        let deployment: String = deployment.lines().map(|l| format!("      {l}\n")).collect();
        let text = format!(
            "name: t\nseed: 1\ndefaults:\n  model: llava-1.5-7b\n  cluster:\n    nodes: [{{name: box, gpus: [{{gpu: H200-SXM, count: 4}}], fabric: nvlink4}}]\n  workload:\n    requests: 4\n    arrival: {{process: poisson, rate: 2}}\n    images: {{count: 1, width: 640, height: 480}}\n    prompt_tokens: 20\n    output_tokens: 8\nscenarios:\n  - name: s\n    deployment:\n{deployment}"
        );
        let exp = parse_experiment(&text, std::path::Path::new("t.yaml"), None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        exp.scenarios.into_iter().next().unwrap()
    }

    #[test]
    fn modality_shapes_outside_one_encoder_one_llm_are_refused() {
        let ok = scenario(
            "  strategy: modality\n  instances: [{role: encoder, gpu: H200-SXM}, {role: llm, gpu: H200-SXM}]\n",
        );
        assert!(replayable(&ok).is_ok(), "{:?}", replayable(&ok));
        for (dep, want) in [
            (
                "  strategy: modality\n  instances: [{role: encoder, gpu: H200-SXM}, {role: llm, gpu: H200-SXM, tp: 2}]\n",
                "tp 1",
            ),
            (
                "  strategy: modality\n  instances: [{role: encoder, gpu: H200-SXM, count: 2}, {role: llm, gpu: H200-SXM}]\n",
                "one encoder and one llm",
            ),
            (
                "  strategy: modality\n  work_stealing: true\n  instances: [{role: encoder, gpu: H200-SXM}, {role: llm, gpu: H200-SXM}]\n",
                "work stealing",
            ),
            (
                "  strategy: colocated\n  instances: [{role: all, gpu: H200-SXM, count: 2}]\n",
                "one instance",
            ),
        ] {
            let s = scenario(dep);
            let why = replayable(&s).unwrap_err();
            assert!(why.contains(want), "{dep}: {why}");
        }
    }

    #[test]
    fn replay_refuses_before_touching_a_gpu() {
        let s = scenario(
            "  strategy: stage\n  instances: [{role: prefill, gpu: H200-SXM}, {role: decode, gpu: H200-SXM}]\n",
        );
        match replay(&s, 0) {
            Err(Error::Invalid(why)) => assert!(why.contains("stage"), "{why}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("stage replay should be refused"),
        }
    }
}
