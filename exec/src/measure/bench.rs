//! Engine speed against the physical floor measured in the same run (`hetsim exec bench`), and
//! the phase profiler (`hetsim calibrate --model`): encode / prefill / decode times on a grid,
//! written as the simulator's `PhaseProfile`.

use crate::cuda::device::Gpu;
use crate::cuda::gemm::Lt;
use crate::cuda::timeline::OpTime;
use crate::error::Result;
use crate::kargs;
use crate::measure::probes::compute::{self, GemmBuffers, GemmShape, ProbeKernels};
use crate::profile::{
    DecodePoint, EncodePoint, EncodePrefillPoint, PhaseProfile, PrefillPoint, SustainedPoint,
};
use crate::serve::engine::{Engine, EngineConfig, Pace, Request, StepKind};
use crate::serve::model::gpu::served::ImageSize;
use crate::serve::model::gpu::{
    DecoderPass, ProductRace, SKINNY_MAX_M, ServedConfig, SmallProducts,
};
use crate::serve::model::llava::{LlavaConfig, LlmConfig};

/// The two ceilings everything is compared with, measured on this GPU now.
#[derive(Debug, Clone, Copy)]
pub struct Floors {
    /// Device copy, (read + write) / time, the better of our kernel and cuMemcpyDtoD.
    pub copy_gbs: f64,
    /// bf16 GEMM 8192³ through cuBLASLt, best heuristic candidate.
    pub gemm_tflops: f64,
}

pub fn measure_floors(gpu: &Gpu) -> Result<Floors> {
    let pk = ProbeKernels::load(gpu)?;
    let lt = Lt::new()?;
    let s = gpu.stream()?;
    let hbm = compute::hbm_bandwidth(gpu, &pk, &s, 1 << 30, gpu.info.sms)?;
    let n = 8192;
    let bufs = GemmBuffers::new(gpu, &pk, &s, n, n, n, gpu.info.sms)?;
    let p = compute::time_gemm(
        gpu,
        &lt,
        &bufs,
        &s,
        &GemmShape {
            phase: "peak".into(),
            op: "square".into(),
            m: n,
            n,
            k: n,
        },
    )?;
    Ok(Floors {
        copy_gbs: hbm.kernel_gbs.max(hbm.memcpy_gbs),
        gemm_tflops: p.tflops,
    })
}

/// FLOPs of the vision tower + projector over `images` images.
pub fn encode_flops(c: &LlavaConfig, images: usize) -> f64 {
    let v = &c.vision;
    let (t, d, i) = (v.positions() as f64, v.hidden as f64, v.intermediate as f64);
    let per_layer = 2.0 * t * (4.0 * d * d + 2.0 * d * i) + 4.0 * t * t * d;
    let np = v.patches() as f64;
    let dl = c.llm.hidden as f64;
    let patch = 2.0 * np * v.patch_dim() as f64 * d;
    let proj = 2.0 * np * (d * dl + dl * dl);
    images as f64 * (per_layer * v.layers_run as f64 + patch + proj)
}

/// FLOPs of a prefill of `seqs` prompts of `tokens` each (causal attention: half the square),
/// logits of the last token of each.
pub fn prefill_flops(l: &LlmConfig, seqs: usize, tokens: usize) -> f64 {
    let d = l.hidden as f64;
    let lin = (l.qkv_dim() as f64 + l.q_dim() as f64) * d + 3.0 * l.intermediate as f64 * d;
    let n = (seqs * tokens) as f64;
    let attn = 2.0 * 2.0 * l.q_dim() as f64 * (tokens as f64).powi(2) / 2.0 * seqs as f64;
    l.layers as f64 * (2.0 * n * lin + attn) + 2.0 * seqs as f64 * d * l.vocab as f64
}

/// Bytes a decode step must read at least: the decoder's weights once, and every sequence's K
/// and V.
pub fn decode_bytes(pass: &DecoderPass, batch: usize, context: usize) -> f64 {
    let l = pass.llm;
    pass.weight_bytes() as f64 + (batch * context * 2 * l.layers * l.kv_dim() * 2) as f64
}

/// The size of the images the LLaVA bench and the interference probe time encode with (LLaVA-1.5
/// resizes every image to 336²: any size costs the same; Qwen2.5-VL encodes 644×476) and, where
/// a profile's encode point names no size, the size it was measured at
/// (`hetsim_sim::profile::EncodePoint::size`).
pub const PROFILE_IMAGE: ImageSize = hetsim_sim::profile::DEFAULT_ENCODE_SIZE;

/// What `bench` measured: the floors, a row per point, and how each batch-1 product fared in
/// each kernel (which the engine chose from).
pub struct BenchReport {
    pub floors: Floors,
    pub rows: Vec<BenchRow>,
    pub products: Vec<ProductRow>,
}

pub struct ProductRow {
    pub shape: (usize, usize, usize),
    pub race: ProductRace,
    /// Weight bytes ÷ copy bandwidth.
    pub floor_s: f64,
}

pub struct BenchRow {
    pub phase: String,
    pub shape: String,
    pub seconds: f64,
    pub floor_s: f64,
    /// decode: time / floor; prefill, encode: fraction of GEMM peak
    pub figure: f64,
    pub target: Option<(String, bool)>,
}

/// A decode step of `batch` sequences of `context` tokens as engine `e` serves it, against the
/// floor of reading the weights and that KV cache once at `bw` bytes/s; `target` is the most
/// times the floor the step may take.
pub fn engine_decode_row(
    e: &mut Engine,
    batch: usize,
    context: usize,
    iters: usize,
    bw: f64,
    shape: String,
    target: Option<f64>,
) -> Result<BenchRow> {
    let t = e.time_decode(batch, context, iters)?;
    let floor = decode_bytes(&e.model.pass(), batch, context) / bw;
    let r = t / floor;
    Ok(BenchRow {
        phase: "decode".into(),
        shape,
        seconds: t,
        floor_s: floor,
        figure: r,
        target: target.map(|x| (format!("≤ {x}× floor"), r <= x)),
    })
}

/// An engine over random weights of `c` whose KV pool holds `max_batch` sequences of
/// `kv_context` tokens (filled with random values so attention sees real numbers).
pub fn bench_engine(
    c: &ServedConfig,
    gpu: Gpu,
    max_batch: usize,
    max_context: usize,
    kv_context: usize,
) -> Result<Engine> {
    let m = c.random(gpu, 42)?;
    let blocks = max_batch * (kv_context.div_ceil(crate::serve::model::gpu::KV_BLOCK) + 1) + 64;
    let e = Engine::new(
        m,
        EngineConfig {
            max_batch,
            max_context,
            prefill_tokens: 16384,
            encode_batch: 32,
            kv_blocks: Some(blocks),
            graphs: true,
            hand_off: false,
            seed: 1,
        },
    )?;
    e.fill_kv_random()?;
    Ok(e)
}

/// Runs the bench's points; `only` keeps one phase (`decode`, `prefill` or `encode`), for
/// profiling one phase at a time.
pub fn bench(
    c: &LlavaConfig,
    gpu_index: usize,
    iters: usize,
    only: Option<&str>,
) -> Result<BenchReport> {
    let runs = |phase: &str| only.is_none_or(|o| o == phase);
    let gpu = Gpu::open(gpu_index)?;
    let floors = measure_floors(&gpu)?;

    let mut e = bench_engine(&ServedConfig::Llava(c.clone()), gpu, 64, 1024, 704)?;
    let mut rows = Vec::new();
    let peak = floors.gemm_tflops * 1e12;
    let bw = floors.copy_gbs * 1e9;
    let decode_points: &[(usize, Option<f64>)] = if runs("decode") {
        &[(1, Some(1.3)), (8, None), (32, None), (64, Some(1.15))]
    } else {
        &[]
    };
    for &(batch, target) in decode_points {
        let shape = format!("batch {batch}, context 700");
        rows.push(engine_decode_row(
            &mut e, batch, 700, iters, bw, shape, target,
        )?);
    }
    let targeted: Vec<usize> = decode_points
        .iter()
        .filter(|p| p.1.is_some())
        .map(|p| p.0)
        .collect();
    rows.extend(kernel_choice_rows(&mut e, &targeted, 700, iters, bw)?);
    let products = product_rows(&e, bw);
    let prefill_points: &[(usize, usize, Option<f64>)] = if runs("prefill") {
        &[(1, 704, None), (8, 704, Some(0.65))]
    } else {
        &[]
    };
    for &(seqs, tokens, target) in prefill_points {
        let t = e.time_prefill(seqs, tokens, iters.clamp(1, 10), Pace::BackToBack)?;
        let f = prefill_flops(e.model.llm(), seqs, tokens);
        let eff = f / t / peak;
        rows.push(BenchRow {
            phase: "prefill".into(),
            shape: format!("{seqs} × {tokens} tokens"),
            seconds: t,
            floor_s: f / peak,
            figure: eff,
            target: target.map(|x| (format!("≥ {:.0} % of GEMM peak", x * 100.0), eff >= x)),
        });
    }
    let encode_points: &[(usize, Option<f64>)] = if runs("encode") {
        &[(1, None), (32, Some(0.55))]
    } else {
        &[]
    };
    for &(images, target) in encode_points {
        let t = e.time_encode(images, PROFILE_IMAGE, iters.clamp(1, 10), Pace::BackToBack)?;
        let f = encode_flops(c, images);
        let eff = f / t / peak;
        rows.push(BenchRow {
            phase: "encode".into(),
            shape: format!("{images} images"),
            seconds: t,
            floor_s: f / peak,
            figure: eff,
            target: target.map(|x| (format!("≥ {:.0} % of GEMM peak", x * 100.0), eff >= x)),
        });
    }
    Ok(BenchReport {
        floors,
        rows,
        products,
    })
}

/// Markdown table of one pass: `passes` passes were recorded, so times are divided by it.
pub fn breakdown_table(title: &str, ops: &[OpTime], passes: usize) -> String {
    let total: f64 = ops.iter().map(|o| o.ms).sum();
    let p = passes.max(1) as f64;
    let mut s = format!(
        "{title}: {:.3} ms per pass\n\n| operation | calls per pass | ms per pass | share |\n|---|---|---|---|\n",
        total / p
    );
    for o in ops {
        s += &format!(
            "| {} | {} | {:.3} | {:.1} % |\n",
            o.label,
            o.calls as f64 / p,
            o.ms / p,
            100.0 * o.ms / total.max(f64::MIN_POSITIVE)
        );
    }
    s
}

/// Per-operation GPU time of one pass at the bench's target points (`--breakdown`): decode
/// batch 1 and 64 at context 700 (kernel by kernel: graphs off), prefill 8 × 704, encode 32
/// images. Markdown tables.
pub fn breakdown(c: &LlavaConfig, gpu_index: usize, only: Option<&str>) -> Result<String> {
    let runs = |phase: &str| only.is_none_or(|o| o == phase);
    let gpu = Gpu::open(gpu_index)?;
    let name = gpu.info.name.clone();
    let mut e = bench_engine(&ServedConfig::Llava(c.clone()), gpu, 64, 1024, 704)?;
    e.cfg.graphs = false;
    let mut out = format!(
        "{} ({} decoder layers), bf16, {name}\n\n",
        c.name, c.llm.layers
    );
    // Each timing call below runs two passes (a warm-up and one timed), both recorded.
    let mut one = |e: &mut Engine, title: String, f: &dyn Fn(&mut Engine) -> Result<f64>| {
        f(e)?;
        crate::cuda::timeline::open();
        let run = f(e);
        let ops = crate::cuda::timeline::close(&e.stream)?;
        run?;
        out += &breakdown_table(&title, &ops, 2);
        out += "\n";
        Ok::<(), crate::error::Error>(())
    };
    if runs("decode") {
        for b in [1usize, 64] {
            one(&mut e, format!("decode, batch {b}, context 700"), &|e| {
                e.time_decode(b, 700, 1)
            })?;
        }
    }
    if runs("prefill") {
        one(&mut e, "prefill, 8 × 704 tokens".into(), &|e| {
            e.time_prefill(8, 704, 1, Pace::BackToBack)
        })?;
    }
    if runs("encode") {
        one(&mut e, "encode, 32 images".into(), &|e| {
            e.time_encode(32, PROFILE_IMAGE, 1, Pace::BackToBack)
        })?;
    }
    Ok(out)
}

/// The bench's table for model `name` of `layers` decoder layers.
pub fn bench_table(name: &str, layers: usize, device: &str, report: &BenchReport) -> String {
    let (floors, rows) = (&report.floors, &report.rows);
    let mut s = format!(
        "{name} ({layers} decoder layers), bf16, {device}\nmeasured floors: device copy {:.0} GB/s, bf16 GEMM 8192³ {:.1} TFLOP/s\n\n",
        floors.copy_gbs, floors.gemm_tflops
    );
    s += "| phase | shape | time ms | floor ms | time / floor | % of GEMM peak | target | met |\n|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let (ratio, eff) = if r.phase == "decode" {
            (format!("{:.3}", r.figure), "".to_string())
        } else {
            (
                format!("{:.3}", r.seconds / r.floor_s),
                format!("{:.1} %", r.figure * 100.0),
            )
        };
        let (t, met) = match &r.target {
            Some((t, m)) => (t.clone(), if *m { "yes" } else { "NO" }.to_string()),
            None => (String::new(), String::new()),
        };
        s += &format!(
            "| {} | {} | {:.3} | {:.3} | {ratio} | {eff} | {t} | {met} |\n",
            r.phase,
            r.shape,
            r.seconds * 1e3,
            r.floor_s * 1e3,
        );
    }
    if !report.products.is_empty() {
        s += "\ndecode products, each timed alone from a cold L2 (µs, median of 5; the engine runs the faster):\n\n| m × n × k | our kernel | ours | cuBLASLt (tuned) | its candidates | its k split | floor | faster |\n|---|---|---|---|---|---|---|---|\n";
        for p in &report.products {
            let (m, n, k) = p.shape;
            s += &format!(
                "| {m} × {n} × {k} | {} | {:.1} | {:.1} | {} | {} | {:.1} | {} |\n",
                p.race.ours.name(),
                p.race.ours_s * 1e6,
                p.race.cublaslt_s * 1e6,
                p.race.cublaslt_candidates,
                p.race.cublaslt_split_k,
                p.floor_s * 1e6,
                p.race.winner()
            );
        }
    }
    s
}

/// The decode steps of `batches` again with every product our kernels take in ours, then in
/// cuBLASLt: what choosing per shape buys. The engine chooses per shape again afterwards.
pub fn kernel_choice_rows(
    e: &mut Engine,
    batches: &[usize],
    context: usize,
    iters: usize,
    bw: f64,
) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for (how, label) in [
        (SmallProducts::Ours, "our product kernels only"),
        (SmallProducts::CuBlasLt, "cuBLASLt only"),
    ] {
        e.set_small_products(how);
        for &batch in batches.iter().filter(|&&b| b <= SKINNY_MAX_M) {
            let shape = format!("batch {batch}, context {context}, {label}");
            rows.push(engine_decode_row(
                e, batch, context, iters, bw, shape, None,
            )?);
        }
    }
    e.set_small_products(SmallProducts::Fastest);
    Ok(rows)
}

/// Every decode product raced so far, with its floor (weight bytes ÷ copy bandwidth).
pub fn product_rows(e: &Engine, bw: f64) -> Vec<ProductRow> {
    e.model
        .products()
        .product_races()
        .into_iter()
        .map(|((m, n, k), race)| ProductRow {
            shape: (m, n, k),
            race,
            floor_s: (n * k * 2) as f64 / bw,
        })
        .collect()
}

/// Grid of the phase profiler.
pub struct PhaseGrid {
    pub encode: Vec<usize>,
    /// Requests (one image each, at the first encode size) a served step encodes and prefills.
    pub encode_prefill: Vec<usize>,
    /// Image sizes each encode batch size is timed at.
    pub encode_sizes: Vec<ImageSize>,
    pub prefill: Vec<(usize, usize)>,
    pub decode_batch: Vec<usize>,
    pub decode_context: Vec<usize>,
    /// Shares of time on prefill at which the sustained-load slowdown is measured.
    pub sustained_duty: Vec<f64>,
    /// The prefills (prompts, tokens each) it is measured with: steps of different lengths.
    pub sustained_prefill: Vec<(usize, usize)>,
}

impl PhaseGrid {
    /// The grid for model `c`: the same for both families but for the image sizes, the
    /// longest decode context and the prompt of one image.
    pub fn full(c: &ServedConfig) -> Result<PhaseGrid> {
        let mut prefill = vec![
            // Dense where prompts of one image lie: the time bends from memory-bound to
            // compute-bound there, and the simulator interpolates linearly between points.
            (1, 128),
            (1, 256),
            (1, 384),
            (1, 512),
            (1, 576),
            (1, 640),
            (1, 704),
            (1, 1024),
            (1, 2048),
            (2, 1408),
            (4, 2816),
            (8, 5632),
            (16, 11264),
        ];
        // And at the prompt of one profile image and a short question, which the combined-step
        // probe serves: the time is not linear between grid points there. On an H100, LLaVA's
        // 597-token prompt prefilled in 12.80 ms, faster than its 576-token neighbour's 13.22 ms,
        // where the line between 576 and 640 said 13.53 ms; the served one-image prefills ran
        // 0.4-0.7 ms under the table (exec/results/2026-12-07-h100-prompt-point).
        let one_image = 1 + PROBE_TEXT_TOKENS + c.image_tokens(PROFILE_IMAGE)?;
        if let Err(at) = prefill.binary_search(&(1, one_image)) {
            prefill.insert(at, (1, one_image));
        }
        Ok(PhaseGrid {
            encode: vec![1, 2, 4, 8, 16, 32],
            encode_prefill: vec![1, 2, 4],
            encode_sizes: encode_sizes(c),
            prefill,
            decode_batch: vec![1, 2, 4, 8, 16, 32, 64],
            decode_context: match c {
                ServedConfig::Llava(_) => vec![256, 704, 1024],
                // Qwen2.5-VL's contexts reach ~1,700 tokens with one large image (1280×960 is
                // 1,564 LLM tokens): measured there rather than extrapolated from 1,024.
                ServedConfig::Qwen(_) => vec![256, 704, 1024, 2048],
            },
            sustained_duty: vec![1.0, 0.7, 0.4],
            // The one-image prompt's step (13 ms for LLaVA-1.5-7B on an H100) and eight of
            // them (≈100 ms): served one-image steps slowed 2.6 % from light load to 90 % of
            // capacity, where the long prefills' line said 6–7 % at that duty
            // (exec/results/2026-12-08-h100-rested-probe).
            sustained_prefill: vec![(1, one_image), SUSTAINED_LONG_PREFILL],
        })
    }
    pub fn quick(c: &ServedConfig) -> PhaseGrid {
        PhaseGrid {
            encode: vec![1, 8],
            encode_prefill: vec![1],
            encode_sizes: encode_sizes(c),
            prefill: vec![(1, 704), (4, 2816)],
            decode_batch: vec![1, 16],
            decode_context: vec![704],
            sustained_duty: vec![1.0],
            sustained_prefill: vec![SUSTAINED_LONG_PREFILL],
        }
    }
}

/// The image sizes the profiler times encode at. LLaVA-1.5 resizes every image to 336²: one
/// size. Qwen2.5-VL encodes each image at its own resolution, and a step's time is not the
/// same per ViT token at every size (its 4 full-attention blocks cost the square of each
/// image's tokens, and small images make small products): two sizes, 640×480 (1,564 ViT
/// tokens) and 1280×720 (4,784), bracket the mixed sizes of experiments/validate-qwen.yaml, and
/// the simulator interpolates between them by tokens per image (`hetsim_sim::measured`).
fn encode_sizes(c: &ServedConfig) -> Vec<ImageSize> {
    match c {
        ServedConfig::Llava(_) => vec![PROFILE_IMAGE],
        ServedConfig::Qwen(_) => vec![PROFILE_IMAGE, (1280, 720)],
    }
}

/// How the phase profiler times encode and prefill points: each run from rest, as a served
/// request's encode and prefill start (decode points run back to back, as decode steps do).
pub const PROFILE_PACE: Pace = Pace::Rested(PROFILE_REST);

/// The idle time before each of the profiler's encode and prefill points and each round of its
/// combined-step probe.
const PROFILE_REST: std::time::Duration = std::time::Duration::from_millis(100);

/// Measure the phase grid for a model on one GPU.
pub fn phase_profile(
    c: &ServedConfig,
    gpu: Gpu,
    catalog_gpu: &str,
    grid: &PhaseGrid,
    iters: usize,
) -> Result<PhaseProfile> {
    let max_batch = grid.decode_batch.iter().copied().max().unwrap_or(1);
    let max_ctx = grid.decode_context.iter().copied().max().unwrap_or(1) + 16;
    let max_prefill = grid.prefill.iter().map(|p| p.1 / p.0).max().unwrap_or(1);
    let mut e = bench_engine(c, gpu, max_batch, max_ctx.max(max_prefill), max_ctx)?;
    let mut encode = Vec::new();
    for &(w, h) in &grid.encode_sizes {
        for &n in &grid.encode {
            eprintln!("phase profile: encode {n} images of {w}×{h}");
            encode.push(EncodePoint {
                images: n as u64,
                seconds: e.time_encode(n, (w, h), iters.clamp(1, 10), PROFILE_PACE)?,
                width: Some(u64::from(w)),
                height: Some(u64::from(h)),
            });
        }
    }
    let mut prefill = Vec::new();
    for &(seqs, tokens) in &grid.prefill {
        let each = tokens / seqs;
        eprintln!("phase profile: prefill {seqs} × {each}");
        prefill.push(PrefillPoint {
            sequences: seqs as u64,
            tokens: (each * seqs) as u64,
            seconds: e.time_prefill(seqs, each, iters.clamp(1, 10), PROFILE_PACE)?,
        });
    }
    let size = grid.encode_sizes.first().copied().unwrap_or(PROFILE_IMAGE);
    let mut encode_prefill = Vec::new();
    for &n in &grid.encode_prefill {
        eprintln!("phase profile: served step encoding and prefilling {n} requests");
        encode_prefill.push(time_served_encode_prefill(
            &mut e,
            n,
            size,
            iters.clamp(1, 10),
        )?);
    }
    let mut sustained = Vec::new();
    for &shape in &grid.sustained_prefill {
        sustained.extend(sustained_slowdown(&mut e, shape, &grid.sustained_duty)?);
    }
    let mut decode = Vec::new();
    for &b in &grid.decode_batch {
        for &ctx in &grid.decode_context {
            eprintln!("phase profile: decode batch {b}, context {ctx}");
            decode.push(DecodePoint {
                batch: b as u64,
                context: ctx as u64,
                seconds: e.time_decode(b, ctx, iters)?,
            });
        }
    }
    for line in e.model.products().race_lines() {
        eprintln!("phase profile: decode product {line}");
    }
    Ok(PhaseProfile {
        model: c.name().to_string(),
        catalog_gpu: catalog_gpu.to_string(),
        dtype: "bf16".into(),
        encode,
        prefill,
        decode,
        sustained,
        // Measured beside a sibling partition's load by `probes::green::interference`.
        interference: Vec::new(),
        encode_prefill,
    })
}

/// Text tokens of each probe prompt beside its BOS and image: LLaVA's 597-token prompts of
/// experiments/validate-*.yaml (1 + 576 + 20).
const PROBE_TEXT_TOKENS: usize = 20;

/// Ids of the combined-step probe's requests, apart from any a caller submitted.
const PROBE_IDS: u64 = 1 << 40;

/// One served step that encodes `requests` new requests' images (one of `size` each) and
/// prefills their prompts, timed on the engine's clock as `hetsim validate` times a step
/// (`Engine::step`, host work and readback inside), median of `iters`. Each comes right after
/// a decode step of a request kept running meanwhile, where a colocated engine meets a new
/// request, and that decode step after the table's rest. The encode and prefill points time
/// each part as a step of its own; this is what the step pays once
/// (`PhaseProfile::encode_prefill`).
fn time_served_encode_prefill(
    e: &mut Engine,
    requests: usize,
    size: ImageSize,
    iters: usize,
) -> Result<EncodePrefillPoint> {
    let vocab = e.model.llm().vocab;
    let request = |id: u64, output_tokens: usize| Request {
        images: vec![size; 1],
        ..Request::synthetic(id, 1, PROBE_TEXT_TOKENS, output_tokens, vocab)
    };
    // Enough tokens that it decodes through every timed step; it finishes with the probe.
    let runner = PROBE_IDS;
    e.submit(request(runner, 2 * (iters + 1) + 8))?;
    let mut times = Vec::with_capacity(iters);
    let mut tokens = 0;
    while e.queued() > 0 {
        e.step()?;
    }
    let mut next = runner + 1;
    // The first round makes the step's plans (a new token count): not counted.
    for round in 0..=iters {
        // From the table's rest, as its encode and prefill points are, so that what the step
        // saves is not a clock's difference: back to back with one decode step between them,
        // the probe ran at a 75 % compute duty, and its one-image step took 15.06 ms on an
        // H100 that served it in 14.64 ms at light load and 15.00 ms at 90 % of capacity
        // (exec/results/2026-12-07-h100-prompt-point). A busy GPU's slowdown is the
        // sustained-load points'. A step reads back, so the GPU is idle from here.
        std::thread::sleep(PROFILE_REST);
        let (kind, _) = e.step()?;
        if !matches!(kind, StepKind::Decode { .. }) {
            return Err(crate::error::Error::Check(format!(
                "combined-step probe: expected a decode step of its running request, the \
                 engine ran {kind:?}"
            )));
        }
        for _ in 0..requests {
            e.submit(request(next, 1))?;
            next += 1;
        }
        let t0 = e.now();
        let (kind, _) = e.step()?;
        let t = e.now() - t0;
        match kind {
            StepKind::Prefill {
                seqs,
                tokens: n,
                images,
            } if seqs == requests && images == requests => tokens = n,
            other => {
                return Err(crate::error::Error::Check(format!(
                    "combined-step probe: {requests} new requests should be encoded and \
                     prefilled in one step, the engine ran {other:?}"
                )));
            }
        }
        if round > 0 {
            times.push(t);
        }
    }
    e.run_to_completion()?;
    Ok(EncodePrefillPoint {
        images: requests as u64,
        width: u64::from(size.0),
        height: u64::from(size.1),
        tokens: tokens as u64,
        seconds: crate::stats::median(&times),
    })
}

/// The longer prefill the sustained-load probe repeats: 8 prompts of 600 tokens (LLaVA's one
/// image and a short question), compute-bound on every GPU the catalog holds.
const SUSTAINED_LONG_PREFILL: (usize, usize) = (8, 600);
/// Decode filler between the probe's prefills, as a serving engine's decode steps fill them.
const SUSTAINED_DECODE: (usize, usize) = (32, 704);
/// Seconds each duty runs; the slowdown is taken over its second half, after the power
/// controller has settled (on an H200 the clock fell over several seconds, with the power at
/// its cap: exec/results/2026-12-03-h200-ttft-tail/clocks.csv).
const SUSTAINED_WINDOW_S: f64 = 8.0;

/// How much slower a compute-bound step, the prefill of `prefill` (prompts, tokens each), runs
/// when the GPU has spent `duty` of its recent time on such steps (the rest on decode steps),
/// against the same step from rest: a GPU at its power cap lowers its clock. One point per duty:
/// the prefill repeated for SUSTAINED_WINDOW_S, two at a time, with decode steps between the
/// pairs in proportion; the median prefill time of the second half over the rested time, which
/// the point keeps as the length of step it holds for.
pub fn sustained_slowdown(
    e: &mut Engine,
    prefill: (usize, usize),
    duties: &[f64],
) -> Result<Vec<SustainedPoint>> {
    let (seqs, tokens) = prefill;
    let (batch, context) = SUSTAINED_DECODE;
    let rested = e.time_prefill(seqs, tokens, 5, PROFILE_PACE)?;
    let mut points = Vec::new();
    for &duty in duties {
        eprintln!(
            "phase profile: sustained load, {:.0} % prefill of {seqs} × {tokens}",
            duty * 100.0
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
        let start = std::time::Instant::now();
        let (mut prefill_s, mut late) = (0.0, Vec::new());
        while start.elapsed().as_secs_f64() < SUSTAINED_WINDOW_S {
            // time_prefill(…, 1, …) runs the prefill twice and reports the second.
            let t = e.time_prefill(seqs, tokens, 1, Pace::BackToBack)?;
            prefill_s += 2.0 * t;
            if start.elapsed().as_secs_f64() > SUSTAINED_WINDOW_S / 2.0 {
                late.push(t);
            }
            while prefill_s / start.elapsed().as_secs_f64() > duty {
                e.time_decode(batch, context, 4)?;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        points.push(SustainedPoint {
            duty: (prefill_s / elapsed).min(1.0),
            slowdown: crate::stats::median(&late) / rested,
            step_seconds: Some(rested),
        });
    }
    Ok(points)
}

impl Engine {
    /// Random values in the whole KV pool (timing runs read contexts nobody wrote).
    pub fn fill_kv_random(&self) -> Result<()> {
        let p = self.pool_ptr();
        let n = (self.pool_bytes() / 2) as u64;
        let g = self.model.gpu();
        let (seed, scale, off) = (77u64, 1.0f32, 0.0f32);
        // SAFETY: fill_uniform(bf16* p, u64 n, u64 seed, float scale, float offset) over the whole
        // pool, n = pool bytes / 2; the stream is synchronised before returning.
        unsafe {
            self.model.kernels().get("fill_uniform").launch(
                crate::cuda::kernels::grid_for(n, 256, g.info.sms),
                256,
                &self.stream,
                &mut kargs![p, n, seed, scale, off],
            )
        }?;
        self.stream.synchronize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LLaVA-1.5's one-image prompt (1 + 576 + 20 tokens) and Qwen2.5-VL's at 640×480 (1 + a
    /// 23 × 17 grid of merged patches + 20) are timed points, in token order.
    #[test]
    fn the_prefill_grid_times_the_one_image_prompt() {
        for (model, prompt) in [("llava-1.5-7b", 597), ("qwen2.5-vl-7b", 1 + 23 * 17 + 20)] {
            let c = ServedConfig::builtin(model, None).unwrap();
            let want = 1 + PROBE_TEXT_TOKENS + c.image_tokens(PROFILE_IMAGE).unwrap();
            assert_eq!(want, prompt, "{model}");
            let p = PhaseGrid::full(&c).unwrap().prefill;
            assert!(p.contains(&(1, prompt)), "{model}: {p:?}");
            assert!(p.windows(2).all(|w| w[0] < w[1]), "{model}: {p:?}");
        }
    }

    #[test]
    fn breakdown_table_divides_by_passes() {
        let ops = [
            OpTime {
                label: "b".into(),
                calls: 1,
                ms: 5.0,
            },
            OpTime {
                label: "a".into(),
                calls: 2,
                ms: 3.0,
            },
        ];
        let t = breakdown_table("x", &ops, 2);
        assert!(t.starts_with("x: 4.000 ms per pass"), "{t}");
        assert!(t.contains("| a | 1 | 1.500 | 37.5 % |"), "{t}");
    }

    #[test]
    fn flop_counts_match_hand_numbers() {
        let c = LlavaConfig::builtin("llava-1.5-7b", None).unwrap();
        // 7B prefill ≈ 2 · 6.5 G params · tokens (linear part) + attention.
        let f = prefill_flops(&c.llm, 8, 704);
        let lin = 2.0 * 5632.0 * 32.0 * (4.0 * 4096.0 * 4096.0 + 3.0 * 11008.0 * 4096.0);
        assert!(f > lin && f < lin * 1.05, "{f} vs {lin}");
        // CLIP-L/336, 23 layers: ≈ 0.35 TFLOP per image incl. projector
        let e = encode_flops(&c, 1) / 1e12;
        assert!((0.33..0.40).contains(&e), "{e}");
    }

    #[test]
    fn table_marks_targets_and_the_faster_product_kernel() {
        let c = LlavaConfig::builtin("llava-1.5-7b", None).unwrap();
        let report = BenchReport {
            floors: Floors {
                copy_gbs: 3000.0,
                gemm_tflops: 700.0,
            },
            rows: vec![BenchRow {
                phase: "decode".into(),
                shape: "batch 1, context 700".into(),
                seconds: 5.8e-3,
                floor_s: 4.5e-3,
                figure: 5.8 / 4.5,
                target: Some(("≤ 1.3× floor".into(), true)),
            }],
            products: vec![ProductRow {
                shape: (1, 4096, 4096),
                race: ProductRace {
                    ours: crate::serve::model::gpu::OurProduct::Gemv,
                    ours_s: 14e-6,
                    cublaslt_s: 15e-6,
                    cublaslt_candidates: 20,
                    cublaslt_split_k: 2,
                },
                floor_s: 4096.0 * 4096.0 * 2.0 / 3e12,
            }],
        };
        let t = bench_table(&c.name, c.llm.layers, "H100", &report);
        assert!(
            t.contains(
                "| decode | batch 1, context 700 | 5.800 | 4.500 | 1.289 |  | ≤ 1.3× floor | yes |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| 1 × 4096 × 4096 | gemv | 14.0 | 15.0 | 20 | 2 | 11.2 | gemv |"),
            "{t}"
        );
    }
}
