//! What a run counts and the rows it writes: latency histograms, goodput, bytes shipped,
//! per-instance tallies and the invariant counters, every `RequestRecord` and `TransferRecord`,
//! and at the end the `RunResult` (summary, instance and link rows).

use super::{Instance, Kind, Req, Transfer, secs};
use crate::error::Error;
use crate::experiment::Scenario;
use crate::network::Network;
use crate::perf::peak_flops;
use crate::records::{
    DropReason, InstanceRecord, LinkRecord, RecordSink, RequestRecord, RequestStatus, Source,
    SummaryRecord, TransferKind, TransferRecord,
};
use crate::scheduler::Sequence;
use crate::stats::LogHistogram;

/// What the invariant checks saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invariants {
    pub arrived: u64,
    pub finished: u64,
    pub dropped: u64,
    /// Requests still in flight when the event queue ran dry (always 0 unless the engine is wrong).
    pub stalled: u64,
    /// Bytes of every flow started.
    pub bytes_sent: u64,
    /// Bytes the network moved for the flows that completed (started bytes less what was left).
    pub bytes_received: u64,
    /// Most bytes any flow still had to move when its completion came (≈ 0).
    pub max_flow_remaining_bytes: f64,
    /// Most KV blocks in use on any instance as a share of its capacity (≤ 1).
    pub peak_kv_fraction: f64,
    /// KV blocks still in use (held or reserved) on all instances at the end (0 once every
    /// request finished or was dropped).
    pub kv_blocks_left: u64,
    /// Instances with a step, a queue or a running sequence left at the end (0 unless the run
    /// stopped at its horizon).
    pub busy_instances_left: u64,
}

pub struct RunResult {
    pub summary: SummaryRecord,
    pub instances: Vec<InstanceRecord>,
    pub links: Vec<LinkRecord>,
    pub invariants: Invariants,
    /// The run under vLLM `bench serve`'s names.
    pub bench: crate::bench_serve::BenchServe,
}

/// Work one instance did.
#[derive(Debug, Clone, Default)]
pub(super) struct InstanceTally {
    pub busy_ns: u64,
    pub steps: u64,
    /// FLOPs and HBM bytes per GPU of the instance, over every step.
    pub flops: f64,
    pub hbm_bytes: f64,
    /// Σ step occupancy × step time, ns: over `busy_ns`, the mean share of the batch filled.
    pub occupied_ns: f64,
    pub images_encoded: u64,
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
    pub preemptions: u64,
}

pub(super) struct Accounting<'a> {
    s: &'a Scenario,
    sink: &'a mut dyn RecordSink,
    pub inv: Invariants,
    pub tally: Vec<InstanceTally>,
    ttft: LogHistogram,
    tpot: LogHistogram,
    e2e: LogHistogram,
    /// Gaps between consecutive tokens of a request (vLLM's ITL).
    itl: LogHistogram,
    /// Text and visual tokens of finished prompts.
    input_tokens: u64,
    visual_tokens: u64,
    /// Finished requests that met both SLOs, and their output tokens.
    good: u64,
    good_tokens: u64,
    output_tokens: u64,
    emb_bytes: u64,
    kv_bytes: u64,
}

impl<'a> Accounting<'a> {
    pub fn new(s: &'a Scenario, sink: &'a mut dyn RecordSink) -> Accounting<'a> {
        Accounting {
            s,
            sink,
            inv: Invariants::default(),
            tally: vec![InstanceTally::default(); s.cluster.instances.len()],
            ttft: LogHistogram::default(),
            tpot: LogHistogram::default(),
            e2e: LogHistogram::default(),
            itl: LogHistogram::default(),
            input_tokens: 0,
            visual_tokens: 0,
            good: 0,
            good_tokens: 0,
            output_tokens: 0,
            emb_bytes: 0,
            kv_bytes: 0,
        }
    }

    /// Requests finished or dropped so far.
    pub fn done(&self) -> u64 {
        self.inv.finished + self.inv.dropped
    }

    /// A request produced its last token at `now`.
    pub fn finished(&mut self, r: &Req, seq: &Sequence, now: u64) -> Result<(), Error> {
        self.inv.finished += 1;
        let output_tokens = seq.output_tokens;
        let arrival = r.r.arrival_ns;
        let first = r
            .first_token
            .expect("a finished request has its first token");
        let ttft = secs(first - arrival);
        let e2e = secs(now - arrival);
        let tpot = (output_tokens > 1).then(|| secs(now - first) / (output_tokens - 1) as f64);
        self.ttft.record(ttft);
        self.e2e.record(e2e);
        if let Some(t) = tpot {
            self.tpot.record(t);
        }
        if ttft <= self.s.slo.ttft_s && tpot.is_none_or(|t| t <= self.s.slo.tpot_s) {
            self.good += 1;
            self.good_tokens += output_tokens;
        }
        self.output_tokens += output_tokens;
        self.input_tokens += u64::from(r.r.prompt_tokens);
        self.visual_tokens += r.visual;
        self.request_row(
            r,
            seq,
            RequestStatus::Finished,
            Some((ttft, tpot, e2e, now)),
        )
    }

    pub fn dropped(&mut self, r: &Req, seq: &Sequence, reason: DropReason) -> Result<(), Error> {
        self.inv.dropped += 1;
        self.request_row(r, seq, RequestStatus::Dropped(reason), None)
    }

    /// `lat`: TTFT, TPOT, end to end and the finish time of a finished request.
    fn request_row(
        &mut self,
        r: &Req,
        seq: &Sequence,
        status: RequestStatus,
        lat: Option<(f64, Option<f64>, f64, u64)>,
    ) -> Result<(), Error> {
        let o = |t: Option<u64>| t.map(secs);
        let rec = RequestRecord {
            scenario: self.s.name.clone(),
            strategy: self.s.strategy,
            request_id: r.r.id,
            status,
            arrival_s: secs(r.r.arrival_ns),
            n_images: r.r.images.len() as u64,
            visual_tokens: r.visual,
            prompt_tokens: r.r.prompt_tokens as u64,
            output_tokens: r.r.output_tokens as u64,
            emb_bytes: r.emb_bytes,
            kv_bytes: r.kv_bytes,
            ttft_s: lat.map(|l| l.0),
            tpot_s: lat.and_then(|l| l.1),
            e2e_s: lat.map(|l| l.2),
            encode_start_s: o(r.encode_start),
            encode_end_s: o(r.encode_end),
            emb_transfer_start_s: o(r.emb_start),
            emb_transfer_end_s: o(r.emb_end),
            prefill_start_s: o(r.prefill_start),
            prefill_end_s: o(r.first_token),
            kv_transfer_start_s: o(r.kv_start),
            kv_transfer_end_s: o(r.kv_end),
            decode_start_s: o(r.decode_start),
            finish_s: lat.map(|l| secs(l.3)),
            encoder_instance: r.encoder.map(|x| x as u64),
            prefill_instance: r.prefill_inst.map(|x| x as u64),
            decode_instance: r.decode_inst.map(|x| x as u64),
            preemptions: seq.preemptions,
            source: Source::Sim,
        };
        self.sink.request(&rec)
    }

    /// The last flow of a transfer arrived at `now`.
    /// `n` requests' next tokens came `gap_ns` after their previous ones.
    pub fn token_gaps(&mut self, gap_ns: u64, n: u64) {
        self.itl.record_n(secs(gap_ns), n);
    }

    pub fn step(&mut self, s: &crate::timeline::StepSpan) -> Result<(), Error> {
        self.sink.step(s)
    }

    pub fn transfer_done(&mut self, t: &Transfer, now: u64) -> Result<(), Error> {
        match t.kind {
            Kind::Embedding => self.emb_bytes += t.bytes,
            Kind::Kv => self.kv_bytes += t.bytes,
        }
        self.sink.transfer(&TransferRecord {
            scenario: self.s.name.clone(),
            request_id: t.req,
            kind: match t.kind {
                Kind::Embedding => TransferKind::Embedding,
                Kind::Kv => TransferKind::Kv,
            },
            src_instance: t.src as u64,
            dst_instance: t.dst as u64,
            link: t.link,
            bytes: t.bytes,
            flows: t.flows.len() as u64,
            ready_s: secs(t.ready_ns),
            start_s: secs(t.start_ns),
            end_s: secs(now),
            source: Source::Sim,
        })
    }

    /// The run ended at `now`: summary, instance and link rows, and what the invariants saw.
    pub fn finish(self, now: u64, inst: &[Instance], net: &Network) -> RunResult {
        let s = self.s;
        let duration_ns = now.max(1);
        let duration = secs(duration_ns);
        let mut inv = self.inv.clone();
        inv.bytes_sent = net.bytes_sent;
        inv.bytes_received = net.bytes_received;
        inv.max_flow_remaining_bytes = net.max_remaining_at_completion;
        let mut instances = Vec::new();
        let mut usd_per_s_total = 0.0;
        // Over all instances: busy GPU-time, the most work it could hold, the work done, and the
        // batch filled; each a share of its ceiling.
        let share = |done: f64, most: f64| if most > 0.0 { done / most } else { 0.0 };
        let mut busy_gpu_s = 0.0;
        let (mut most_flops, mut most_bytes, mut done_flops, mut done_bytes) = (0.0, 0.0, 0.0, 0.0);
        let (mut occupied_s, mut busy_s_total) = (0.0, 0.0);
        for (i, ((x, t), spec)) in inst
            .iter()
            .zip(&self.tally)
            .zip(&s.cluster.instances)
            .enumerate()
        {
            let kv = &x.sched.kv;
            let usd_per_s: f64 = spec
                .gpus
                .iter()
                .map(|g| {
                    s.pricing
                        .usd_per_second(spec.gpu, s.cluster.on_nvlink(*g))
                        .expect("prices checked by the experiment")
                })
                .sum();
            if kv.total_blocks > 0 {
                inv.peak_kv_fraction = inv
                    .peak_kv_fraction
                    .max(kv.peak_used as f64 / kv.total_blocks as f64);
            }
            inv.kv_blocks_left += kv.used_blocks();
            inv.busy_instances_left += u64::from(!x.is_idle());
            let busy_s = secs(t.busy_ns);
            let gpus = spec.tp() as f64;
            let peak = peak_flops(spec.gpu, s.dtype) * busy_s;
            let bandwidth = spec.gpu.mem_bw_gbs * 1e9 * busy_s;
            busy_gpu_s += busy_s * gpus;
            most_flops += peak * gpus;
            most_bytes += bandwidth * gpus;
            done_flops += t.flops * gpus;
            done_bytes += t.hbm_bytes * gpus;
            occupied_s += t.occupied_ns * 1e-9;
            busy_s_total += busy_s;
            instances.push(InstanceRecord {
                scenario: s.name.clone(),
                instance_id: i as u64,
                role: x.role.name(),
                gpu: spec.gpu.name,
                tp: spec.tp(),
                node: s.cluster.nodes[spec.node].name.clone(),
                busy_s,
                utilization: t.busy_ns as f64 / duration_ns as f64,
                mfu: share(t.flops, peak),
                mbu: share(t.hbm_bytes, bandwidth),
                batch_occupancy: share(t.occupied_ns, t.busy_ns as f64),
                steps: t.steps,
                images_encoded: t.images_encoded,
                prefill_tokens: t.prefill_tokens,
                decode_tokens: t.decode_tokens,
                kv_capacity_tokens: kv.total_blocks * kv.block_tokens,
                peak_kv_tokens: kv.peak_used * kv.block_tokens,
                preemptions: t.preemptions,
                weight_gib_per_gpu: s.memory[i].weight_bytes / (1u64 << 30) as f64,
                cost_usd: usd_per_s * duration,
                source: Source::Sim,
            });
        }
        // Every GPU of the cluster is paid for, used by an instance or not.
        usd_per_s_total += s
            .cluster
            .usd_per_second(&s.pricing)
            .expect("prices checked by the experiment");
        let links: Vec<LinkRecord> = s
            .cluster
            .ports
            .iter()
            .zip(&net.usage)
            .filter(|(_, u)| u.bytes > 0)
            .map(|(p, u)| LinkRecord {
                scenario: s.name.clone(),
                port: p.name.clone(),
                link: p.link.name,
                bytes: u.bytes,
                busy_s: secs(u.busy_ns),
                utilization: u.bytes as f64 / (p.bytes_per_s * duration),
                source: Source::Sim,
            })
            .collect();
        let busiest = links.iter().max_by(|a, b| {
            a.utilization
                .total_cmp(&b.utilization)
                .then(b.port.cmp(&a.port))
        });
        let cost = usd_per_s_total * duration;
        let least_certain = crate::trust::least_certain(&s.basis);
        let q = |h: &LogHistogram, p: f64| h.quantile(p);
        let summary = SummaryRecord {
            scenario: s.name.clone(),
            strategy: s.strategy,
            model: s.model.name.clone(),
            gpus: super::gpu_mix(s),
            gpu_count: super::used_gpus(s).len() as u64,
            cluster_gpu_count: s.cluster.gpus.len() as u64,
            rate_rps: s.workload.arrival.as_ref().map(|a| a.rate()),
            seed: s.seed,
            requests: inv.arrived,
            finished: inv.finished,
            dropped: inv.dropped,
            duration_s: duration,
            throughput_rps: inv.finished as f64 / duration,
            output_tokens: self.output_tokens,
            output_tokens_per_s: self.output_tokens as f64 / duration,
            goodput_rps: self.good as f64 / duration,
            good_output_tokens: self.good_tokens,
            slo_attainment: if inv.arrived > 0 {
                self.good as f64 / inv.arrived as f64
            } else {
                0.0
            },
            slo_ttft_s: s.slo.ttft_s,
            slo_tpot_s: s.slo.tpot_s,
            ttft_p50_s: q(&self.ttft, 0.5),
            ttft_p90_s: q(&self.ttft, 0.9),
            ttft_p99_s: q(&self.ttft, 0.99),
            tpot_p50_s: q(&self.tpot, 0.5),
            tpot_p90_s: q(&self.tpot, 0.9),
            tpot_p99_s: q(&self.tpot, 0.99),
            e2e_p50_s: q(&self.e2e, 0.5),
            e2e_p90_s: q(&self.e2e, 0.9),
            e2e_p99_s: q(&self.e2e, 0.99),
            emb_bytes: self.emb_bytes,
            kv_bytes: self.kv_bytes,
            bytes_sent: inv.bytes_sent,
            bytes_received: inv.bytes_received,
            busiest_link: busiest.map(|l| l.port.clone()),
            busiest_link_utilization: busiest.map_or(0.0, |l| l.utilization),
            pricing: match s.pricing.mode {
                crate::cost::PricingMode::Capex => "capex",
                crate::cost::PricingMode::Rental => "rental",
            },
            usd_per_hour: usd_per_s_total * 3600.0,
            cost_usd: cost,
            tokens_per_dollar: if cost > 0.0 {
                self.output_tokens as f64 / cost
            } else {
                0.0
            },
            good_tokens_per_dollar: if cost > 0.0 {
                self.good_tokens as f64 / cost
            } else {
                0.0
            },
            utilization: Some(
                busy_gpu_s / (super::used_gpus(s).len() as f64 * duration).max(1e-12),
            ),
            mfu: Some(share(done_flops, most_flops)),
            mbu: Some(share(done_bytes, most_bytes)),
            batch_occupancy: Some(share(occupied_s, busy_s_total)),
            prediction_basis: least_certain.name(),
            prediction_error_pct: Some(least_certain.error_pct()),
            source: Source::Sim,
        };
        let lat = crate::bench_serve::Latencies {
            ttft: self.ttft,
            tpot: self.tpot,
            itl: self.itl,
            e2el: self.e2e,
        };
        let bench = crate::bench_serve::BenchServe::new(
            &summary,
            self.input_tokens,
            self.visual_tokens,
            &lat,
        );
        RunResult {
            summary,
            instances,
            links,
            invariants: inv,
            bench,
        }
    }
}
