//! Green contexts as a probe: the same kernels timed on a partition of the GPU's SMs
//! (`cuda::green`), to see what a smaller GPU of the same architecture (fewer SMs, same HBM)
//! made of a large one runs at; and how much a partition's steps slow while the other partition
//! runs a sustained load (`interference`, `sim::interference`'s measured table).

use crate::cuda::device::Gpu;
use crate::cuda::gemm::Lt;
use crate::cuda::green::GreenCtx;
use crate::error::Result;
use crate::measure::bench::{PROFILE_IMAGE, PROFILE_PACE, bench_engine};
use crate::measure::probes::compute::{self, GemmBuffers, GemmShape, ProbeKernels};
use crate::profile::InterferencePoint;
use crate::serve::engine::{Engine, Pace};
use crate::serve::model::gpu::ServedConfig;
use hetsim_sim::catalog::partition::partition;
use hetsim_sim::catalog::{Dtype, GpuSpec, ModelSpec};
use hetsim_sim::error::InputError;
use hetsim_sim::interference::Phase;
use hetsim_sim::perf::{BatchShape, Efficiency, PhaseModel, Roofline};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreenPoint {
    pub requested_sms: u32,
    pub sms: u32,
    pub gemm: Vec<compute::GemmPoint>,
    pub hbm_gbs: f64,
}

/// Time `shapes` and the HBM copy kernel at each SM count (the full GPU through its primary
/// context is measured by the caller). Events and kernels run inside the green context.
pub fn sweep(
    gpu: &Gpu,
    lt: &Lt,
    sm_counts: &[u32],
    shapes: &[GemmShape],
    hbm_bytes: usize,
) -> Result<Vec<GreenPoint>> {
    let mut out = Vec::new();
    for &want in sm_counts {
        let g = GreenCtx::new(gpu, want)?;
        g.bind()?;
        // Events and the module are made while the green context is current, so the timing and
        // the kernels belong to it.
        let gview = g.view(gpu);
        let pk = ProbeKernels::load(&gview)?;
        let mut gemm = Vec::new();
        for shape in shapes {
            let bufs = GemmBuffers::new(&gview, &pk, &g.stream, shape.m, shape.n, shape.k, g.sms)?;
            gview.bind()?;
            gemm.push(compute::time_gemm(&gview, lt, &bufs, &g.stream, shape)?);
        }
        let hbm = compute::hbm_bandwidth(&gview, &pk, &g.stream, hbm_bytes, g.sms)?;
        out.push(GreenPoint {
            requested_sms: want,
            sms: g.sms,
            gemm,
            hbm_gbs: hbm.kernel_gbs,
        });
        drop(pk);
        gpu.bind()?;
    }
    Ok(out)
}

/// The step of each phase the interference probe times on the measured partition: one image (a
/// served request's), one prompt of one image and a question, a decode batch of 16 at that
/// context.
const PROBE_ENCODE_IMAGES: usize = 1;
const PROBE_PREFILL: (usize, usize) = (1, 640);
const PROBE_DECODE: (usize, usize) = (16, 704);
/// The sibling's sustained loads: decode steps of 32 sequences (memory-bound: the weights and
/// the KV streamed every step) or encodes of 8 images (compute-bound), back to back.
const LOAD_DECODE: (usize, usize) = (32, 704);
const LOAD_ENCODE_IMAGES: usize = 8;
/// Runs of each timed step; the median is kept.
const PROBE_ITERS: usize = 10;
/// Steps the load runs per timing call: the host's work between calls (inputs written, a
/// synchronisation) leaves the sibling idle for a moment, one call in `LOAD_ITERS + 1` steps.
const LOAD_ITERS: usize = 8;

/// A step's shape: what the probe times, and what the load repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepShape {
    Encode { images: usize },
    Prefill { seqs: usize, tokens: usize },
    Decode { batch: usize, context: usize },
}

impl StepShape {
    pub fn phase(self) -> Phase {
        match self {
            StepShape::Encode { .. } => Phase::Encode,
            StepShape::Prefill { .. } => Phase::Prefill,
            StepShape::Decode { .. } => Phase::Decode,
        }
    }

    /// The probe's step of `phase`, and the load loop of `load`.
    pub fn probe(phase: Phase) -> StepShape {
        match phase {
            Phase::Encode => StepShape::Encode {
                images: PROBE_ENCODE_IMAGES,
            },
            Phase::Prefill => StepShape::Prefill {
                seqs: PROBE_PREFILL.0,
                tokens: PROBE_PREFILL.1,
            },
            Phase::Decode => StepShape::Decode {
                batch: PROBE_DECODE.0,
                context: PROBE_DECODE.1,
            },
        }
    }

    pub fn load(load: Phase) -> StepShape {
        match load {
            Phase::Decode => StepShape::Decode {
                batch: LOAD_DECODE.0,
                context: LOAD_DECODE.1,
            },
            _ => StepShape::Encode {
                images: LOAD_ENCODE_IMAGES,
            },
        }
    }

    /// The simulator's count of the HBM bytes this step moves (`perf::Work::bytes`: it does not
    /// depend on timing), on `gpu` with `model`.
    pub fn bytes(
        self,
        model: &ModelSpec,
        gpu: &'static GpuSpec,
    ) -> std::result::Result<f64, InputError> {
        let r = Roofline::new(model, Dtype::Bf16, gpu, Efficiency::default(), 1, None);
        Ok(match self {
            StepShape::Encode { images } => {
                let (w, h) = PROFILE_IMAGE;
                r.encode_work(&vec![model.image_tokens(w.into(), h.into())?; images])
                    .bytes
            }
            StepShape::Prefill { seqs, tokens } => {
                let mut b = BatchShape::default();
                for _ in 0..seqs {
                    b.add_prefill_chunk(0, (tokens / seqs) as u64, true);
                }
                r.forward_work(&b).bytes
            }
            StepShape::Decode { batch, context } => {
                let mut b = BatchShape::default();
                for _ in 0..batch {
                    b.add_decode(context as u64);
                }
                r.forward_work(&b).bytes
            }
        })
    }

    /// One timed step (the median of `iters`); encode and prefill from rest, as the phase
    /// table's are, unless `back_to_back` (a load loop).
    fn time(self, e: &mut Engine, iters: usize, back_to_back: bool) -> Result<f64> {
        let pace = if back_to_back {
            Pace::BackToBack
        } else {
            PROFILE_PACE
        };
        match self {
            StepShape::Encode { images } => e.time_encode(images, PROFILE_IMAGE, iters, pace),
            StepShape::Prefill { seqs, tokens } => e.time_prefill(seqs, tokens / seqs, iters, pace),
            StepShape::Decode { batch, context } => e.time_decode(batch, context, iters),
        }
    }
}

/// One phase's step timed alone and beside one load: the plain numbers an interference point is
/// made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    pub phase: Phase,
    pub load: Phase,
    pub alone_s: f64,
    pub beside_s: f64,
    /// The load's step time while the probe ran (median), and the HBM bytes of both steps.
    pub load_step_s: f64,
    pub own_bytes: f64,
    pub load_bytes: f64,
}

impl Timed {
    /// The profile's point: demands in GB/s (bytes over the measured times), slowdown = beside /
    /// alone.
    pub fn point(&self) -> InterferencePoint {
        InterferencePoint {
            phase: self.phase,
            load: self.load,
            own_gbs: self.own_bytes / self.alone_s / 1e9,
            sibling_gbs: self.load_bytes / self.load_step_s / 1e9,
            slowdown: self.beside_s / self.alone_s,
        }
    }
}

/// How much each phase's step on one partition of GPU `ordinal` split at `split_sms` (the
/// split's own partition if `small`, else the SMs that remain) slows while the other partition
/// runs each sustained load. The load runs on its own host thread, which takes the other
/// partition's green context (one context is current on one thread at a time) and hands it back
/// when the load stops: the two are the two halves of one split, so no SM is in both.
pub fn interference(
    c: &ServedConfig,
    model: &ModelSpec,
    ordinal: usize,
    split_sms: u32,
    small: bool,
) -> Result<Vec<Timed>> {
    let invalid = |e: InputError| crate::error::Error::Invalid(e.to_string());
    let whole = Gpu::open(ordinal)?;
    let parent = crate::measure::catalog::gpu_spec(&whole.info.name).ok_or_else(|| {
        crate::error::Error::Invalid(format!("{}: not in the catalog", whole.info.name))
    })?;
    let (a, b) = GreenCtx::split(&whole, split_sms)?;
    let (part, mut other) = if small { (a, b) } else { (b, a) };
    let spec = partition(parent, part.sms).map_err(invalid)?;
    let sibling_spec = partition(parent, other.sms).map_err(invalid)?;
    part.bind()?;
    let mut e = bench_engine(
        c,
        part.view(&whole),
        PROBE_DECODE.0,
        1024,
        PROBE_DECODE.1 + 16,
    )?;
    let mut alone = Vec::new();
    for phase in Phase::ALL {
        let shape = StepShape::probe(phase);
        alone.push((shape, shape.time(&mut e, PROBE_ITERS, false)?));
    }
    let mut out = Vec::new();
    for load in [Phase::Decode, Phase::Encode] {
        let shape = StepShape::load(load);
        eprintln!(
            "interference on {}: {} load on {}",
            spec.name,
            load.name(),
            sibling_spec.name
        );
        let stop_flag = std::sync::atomic::AtomicBool::new(false);
        let stop = &stop_flag;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (back, beside, steps) = std::thread::scope(|s| {
            let runner = s.spawn(move || {
                let run = || -> Result<Vec<f64>> {
                    let gpu = Gpu::open(ordinal)?;
                    other.bind()?;
                    let mut le =
                        bench_engine(c, other.view(&gpu), LOAD_DECODE.0, 1024, LOAD_DECODE.1 + 16)?;
                    shape.time(&mut le, 1, true)?; // plans and graphs made before the probe
                    let _ = ready_tx.send(());
                    let mut steps = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        steps.push(shape.time(&mut le, LOAD_ITERS, true)?);
                    }
                    Ok(steps)
                };
                let steps = run();
                (other, steps)
            });
            // The load is running, or its thread failed (its error comes out of the join).
            let _ = ready_rx.recv();
            let beside: Result<Vec<f64>> = alone
                .iter()
                .map(|(probe, _)| probe.time(&mut e, PROBE_ITERS, false))
                .collect();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let joined = runner.join().map_err(|_| {
                crate::error::Error::Invalid("the interference probe's load thread panicked".into())
            });
            joined.map(|(back, steps)| (back, beside, steps))
        })?;
        other = back;
        let (beside, steps) = (beside?, steps?);
        if steps.is_empty() {
            return Err(crate::error::Error::Invalid(format!(
                "interference on {}: the {} load ran no step while the probe ran",
                spec.name,
                load.name()
            )));
        }
        let load_step_s = crate::stats::median(&steps);
        let load_bytes = shape.bytes(model, sibling_spec).map_err(invalid)?;
        for (&(probe, alone_s), beside_s) in alone.iter().zip(beside) {
            out.push(Timed {
                phase: probe.phase(),
                load,
                alone_s,
                beside_s,
                load_step_s,
                own_bytes: probe.bytes(model, spec).map_err(invalid)?,
                load_bytes,
            });
        }
    }
    // Destroying a green context makes it current first: the whole GPU is bound again last.
    drop(e);
    drop(other);
    drop(part);
    whole.bind()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_demands_over_the_measured_times_and_their_ratio() {
        let t = Timed {
            phase: Phase::Encode,
            load: Phase::Decode,
            alone_s: 0.004,
            beside_s: 0.0058,
            load_step_s: 0.008,
            own_bytes: 1.4e9,
            load_bytes: 24e9,
        };
        let p = t.point();
        // 1.4 GB / 4 ms = 350 GB/s; 24 GB / 8 ms = 3000 GB/s; 5.8 / 4 = 1.45.
        assert!((p.own_gbs - 350.0).abs() < 1e-9);
        assert!((p.sibling_gbs - 3000.0).abs() < 1e-9);
        assert!((p.slowdown - 1.45).abs() < 1e-12);
        assert_eq!((p.phase, p.load), (Phase::Encode, Phase::Decode));
    }

    #[test]
    fn the_probe_steps_and_loads_have_the_phases_they_are_named_for() {
        for phase in Phase::ALL {
            assert_eq!(StepShape::probe(phase).phase(), phase);
        }
        assert_eq!(StepShape::load(Phase::Decode).phase(), Phase::Decode);
        assert_eq!(StepShape::load(Phase::Encode).phase(), Phase::Encode);
        // The memory-bound load moves more bytes per second than the compute-bound one: the
        // roofline's count of a 32 × 704 decode is its weights (13.5 GB) and more.
        let m = hetsim_sim::catalog::resolve_model("llava-1.5-7b").unwrap();
        let gpu = hetsim_sim::catalog::gpu_by_name("H200-SXM@92sm").unwrap();
        let decode = StepShape::load(Phase::Decode).bytes(&m, gpu).unwrap();
        assert!(decode > 13.5e9, "{decode}");
    }
}
