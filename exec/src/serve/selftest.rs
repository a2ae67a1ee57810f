//! `hetsim exec selftest`: every kernel of `kernels/llava.cu` and the whole LLaVA and
//! Qwen2.5-VL forwards on the GPU against their f32 CPU references (`model::cpu`,
//! `model::qwen2_5_vl_cpu`) on small random models; then the engine end to end (continuous
//! batching, graphs against direct launches).

use crate::cuda::device::Gpu;
use crate::cuda::device::Stream;
use crate::error::{Error, Result};
use crate::kargs;
use crate::serve::engine::{Engine, EngineConfig, EventKind, Request};
use crate::serve::model::cpu;
use crate::serve::model::gpu::products::{Operands, gemv};
use crate::serve::model::gpu::{
    Attn, DecoderPass, FLASH_ROWS, GpuModel, KV_BLOCK, KvPool, QwenGpu, Scratch, ServedModel,
    TokenInputs, download_bf16, download_f32, download_i32, upload_bf16, upload_f64, upload_i32,
};
use crate::serve::model::host::{self, IMAGE_TOKEN, round_bf16, uniform};
use crate::serve::model::llava::LlavaConfig;
use crate::serve::model::qwen2_5_vl::{
    IMAGE_TOKEN as QWEN_IMAGE, ImageGrid, Qwen25VlConfig, mrope_positions,
};
use crate::serve::model::qwen2_5_vl_cpu as qcpu;

pub struct Check {
    pub name: String,
    pub error: f64,
    pub limit: f64,
    pub note: String,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.error.is_finite() && self.error <= self.limit
    }
}

pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| round_bf16(scale * uniform(seed, i)))
        .collect()
}

const LIMIT: f64 = 1e-2;

fn check(out: &mut Vec<Check>, name: &str, got: &[f32], want: &[f32], note: &str) {
    eprintln!("  {name}: rel. err {:.2e}", rel_err(got, want));
    out.push(Check {
        name: name.into(),
        error: rel_err(got, want),
        limit: LIMIT,
        note: note.into(),
    });
}

/// Kernel-by-kernel checks on random data.
fn kernels(m: &GpuModel, out: &mut Vec<Check>) -> Result<()> {
    let g = &m.gpu;
    let s = g.stream()?;
    let k = &m.k;
    let (rows, d) = (7usize, 256usize);
    let x = rand_vec(rows * d, 1, 2.0);
    let dx = upload_bf16(g, &x)?;
    let dy = g.alloc(rows * d * 2)?;
    let (px, py, eps) = (dx.ptr, dy.ptr, 1e-5f32);
    // Norms at the model's widths (a warp per row, 8 rows a block: 256, CLIP's 1024; 4 warps, 2
    // rows: 7B's 4096; 5 warps: 13B's 5120), one too wide for registers (33,280: re-read per
    // pass by 256 threads) and one not a multiple of 8 (the plain path); 9 rows, so the last block is partly empty.
    for nd in [256usize, 1024, 4096, 5120, 33_280, 250] {
        let nr = 9usize;
        let (x, w, b) = (
            rand_vec(nr * nd, 11, 2.0),
            rand_vec(nd, 12, 1.0),
            rand_vec(nd, 13, 0.5),
        );
        let (dx, dw, db) = (
            upload_bf16(g, &x)?,
            upload_bf16(g, &w)?,
            upload_bf16(g, &b)?,
        );
        let dy = g.alloc(nr * nd * 2)?;
        let (px, pw, pb, py) = (dx.ptr, dw.ptr, db.ptr, dy.ptr);
        let (r32, d32) = (nr as u32, nd as u32);
        let nl = crate::serve::model::gpu::NormLaunch::new(nr, nd);
        let group = nl.group;
        // SAFETY: rmsnorm(x, w, y, rows, d, eps, group): dx and dy hold nr × nd bf16 and dw nd,
        // uploaded above and alive until the synchronize.
        unsafe {
            k.get("rmsnorm").launch(
                nl.grid,
                nl.block,
                &s,
                &mut kargs![px, pw, py, r32, d32, eps, group],
            )
        }?;
        s.synchronize()?;
        let shape = format!("{nr}×{nd}");
        check(
            out,
            "rmsnorm",
            &download_bf16(&dy, nr * nd)?,
            &cpu::rms_norm(&x, &w, nd, eps),
            &shape,
        );
        // SAFETY: layernorm(x, w, b, y, rows, d, eps, group): dx and dy hold nr × nd bf16, dw and
        // db nd, uploaded above and alive until the synchronize.
        unsafe {
            k.get("layernorm").launch(
                nl.grid,
                nl.block,
                &s,
                &mut kargs![px, pw, pb, py, r32, d32, eps, group],
            )
        }?;
        s.synchronize()?;
        check(
            out,
            "layernorm",
            &download_bf16(&dy, nr * nd)?,
            &cpu::layer_norm(&x, &w, &b, nd, eps),
            &shape,
        );
    }
    let n = (rows * d) as u64;
    let x2 = rand_vec(rows * d, 4, 2.0);
    let dx2 = upload_bf16(g, &x2)?;
    let px2 = dx2.ptr;
    // SAFETY: add(a, b, out, u64 n): dx, dx2 and dy hold rows × d = n bf16 and live until the
    // synchronize.
    unsafe { k.get("add").launch(8, 256, &s, &mut kargs![px, px2, py, n]) }?;
    s.synchronize()?;
    let want: Vec<f32> = x.iter().zip(&x2).map(|(a, b)| a + b).collect();
    check(
        out,
        "residual add",
        &download_bf16(&dy, rows * d)?,
        &want,
        "",
    );
    for (name, f) in [
        ("gelu_erf", cpu::gelu_erf as fn(f32) -> f32),
        ("quick_gelu", cpu::quick_gelu),
    ] {
        let t = upload_bf16(g, &x)?;
        let pt = t.ptr;
        // SAFETY: the named kernel's parameters are listed beside it in kernels/llava.cu and match
        // these arguments in order and type; every buffer was uploaded or allocated above with the
        // sizes the CPU reference uses and lives until the synchronize.
        unsafe { k.get(name).launch(8, 256, &s, &mut kargs![pt, n]) }?;
        s.synchronize()?;
        let want: Vec<f32> = x.iter().map(|v| f(*v)).collect();
        check(out, name, &download_bf16(&t, rows * d)?, &want, "in place");
    }
    let inter = 128usize;
    let (i32_, r32) = (inter as u32, rows as u32);
    // SAFETY: silu_mul(gu, out, n, inter): dx holds rows × 2·inter bf16 and dy rows × inter (rows ×
    // d each, d ≥ 2·inter), alive until the synchronize.
    unsafe {
        k.get("silu_mul")
            .launch(8, 256, &s, &mut kargs![px, py, r32, i32_])
    }?;
    s.synchronize()?;
    let want: Vec<f32> = x
        .chunks(2 * inter)
        .flat_map(|r| {
            (0..inter)
                .map(|i| cpu::silu(r[i]) * r[inter + i])
                .collect::<Vec<_>>()
        })
        .collect();
    check(
        out,
        "silu·mul",
        &download_bf16(&dy, rows * inter)?,
        &want,
        "",
    );
    // rope on 2 q heads + 1 k head of 128, M-RoPE (Qwen2-VL's sections 16/24/24 over three
    // planes of positions up to 3000), and the rotated k and the v written to cache slots (row
    // 3: slot −1, a padding row, writes nothing). LLaMA's one position per token is the full
    // forward's check.
    let (heads, kvh, hd) = (2usize, 1usize, 128usize);
    let stride = (heads + 2 * kvh) * hd; // q, q, k, v
    let q = rand_vec(rows * stride, 5, 1.0);
    let sections = [16usize, 24, 24];
    let pos3 = |i: i32| [i * 431, i * 431 + 3 * i, i * 431 + 7 - i];
    let pos: Vec<i32> = (0..3)
        .flat_map(|plane| (0..rows as i32).map(move |i| pos3(i)[plane]))
        .collect();
    let slots: Vec<i32> = (0..rows as i32)
        .map(|i| if i == 3 { -1 } else { (i * 7 + 2) % 40 })
        .collect();
    let pool_elems = 3 * 2 * kvh * KV_BLOCK * hd;
    let dpool = upload_bf16(g, &vec![0f32; pool_elems])?;
    let theta = 10_000f32;
    let (dq, dp, dsl, dfreq) = (
        upload_bf16(g, &q)?,
        upload_i32(g, &pos)?,
        upload_i32(g, &slots)?,
        upload_f64(g, &cpu::rope_inv_freq(hd, theta))?,
    );
    let (pq, pp, psl, ppool, pf, st, hh, kh, hd32) = (
        dq.ptr,
        dp.ptr,
        dsl.ptr,
        dpool.ptr,
        dfreq.ptr,
        stride as u32,
        heads as u32,
        kvh as u32,
        hd as u32,
    );
    let (s0, s1) = (sections[0] as u32, sections[1] as u32);
    // SAFETY: rope_kv_append(qkv, pos, slots, pool, inv_freq, n, stride, heads, kv_heads,
    // head_dim, plane, sec0, sec1): dq is [rows, stride] bf16, dp 3 planes of rows i32, dsl
    // rows i32 naming slots inside dpool's pool_elems, dfreq hd / 2 f64; all live until the
    // synchronize.
    unsafe {
        k.get("rope_kv_append").launch(
            8,
            256,
            &s,
            &mut kargs![pq, pp, psl, ppool, pf, r32, st, hh, kh, hd32, r32, s0, s1],
        )
    }?;
    s.synchronize()?;
    let mut want = q.clone();
    let mut want_pool = vec![0f32; pool_elems];
    for (i, r) in want.chunks_mut(stride).enumerate() {
        for h in r[..(heads + kvh) * hd].chunks_mut(hd) {
            cpu::rope_sections(h, pos3(i as i32).map(|p| p as usize), sections, theta);
        }
        if slots[i] >= 0 {
            let (blk, slot) = (slots[i] as usize / KV_BLOCK, slots[i] as usize % KV_BLOCK);
            for kv in 0..2 {
                let from = &r[(heads + kv * kvh) * hd..][..hd];
                want_pool[((blk * 2 + kv) * kvh * KV_BLOCK + slot) * hd..][..hd]
                    .copy_from_slice(from);
            }
        }
    }
    check(
        out,
        "rope_kv_append: q, k rotated",
        &download_bf16(&dq, rows * stride)?,
        &want,
        "M-RoPE, 3 planes, positions 0…2604",
    );
    check(
        out,
        "rope_kv_append: k, v in their cache slots",
        &download_bf16(&dpool, pool_elems)?,
        &want_pool,
        "6 slots in 3 blocks, one padding row",
    );
    // argmax
    // Rows of 1,000 (16-byte loads) and a last row of 999 whose start is not 16-byte aligned
    // (one by one).
    let logits: Vec<f32> = rand_vec(3 * 1000, 6, 5.0);
    let dl = g.alloc(3 * 1000 * 4)?;
    dl.copy_from_host(
        &logits
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )?;
    let da = g.alloc(16)?;
    let (pl, pa, v32) = (dl.ptr, da.ptr, 1000u32);
    let (pl2, pa2, v2) = (dl.ptr + 4, da.ptr + 12, 999u32);
    // SAFETY: argmax_rows(const float* x, int* out, u32 n), a block per row: dl holds 3 × 1000
    // f32 (the second launch reads 999 of them from the second value on) and da 4 i32, alive
    // until the synchronize.
    unsafe {
        k.get("argmax_rows")
            .launch(3, 1024, &s, &mut kargs![pl, pa, v32])?;
        k.get("argmax_rows")
            .launch(1, 1024, &s, &mut kargs![pl2, pa2, v2])
    }?;
    s.synchronize()?;
    let got = download_i32(&da, 4)?;
    let mut want: Vec<i32> = logits.chunks(1000).map(|r| cpu::argmax(r) as i32).collect();
    want.push(cpu::argmax(&logits[1..1000]) as i32);
    out.push(Check {
        name: "argmax".into(),
        error: if got == want { 0.0 } else { 1.0 },
        limit: 0.0,
        note: format!("{got:?}"),
    });
    // Small-M product (decode batches ≤ 8): our gemv kernel, accumulating into Y.
    let (mm, nn, kk) = (1usize, 37usize, 264usize);
    let xv = rand_vec(mm * kk, 31, 1.0);
    let wv = rand_vec(nn * kk, 32, 1.0);
    let yv = rand_vec(mm * nn, 33, 1.0);
    let wt = crate::serve::model::gpu::DTensor {
        buf: upload_bf16(g, &wv)?,
        shape: vec![nn, kk],
    };
    let bv = rand_vec(nn, 34, 0.5);
    let (dxv, dyv, dbv) = (
        upload_bf16(g, &xv)?,
        upload_bf16(g, &yv)?,
        upload_bf16(g, &bv)?,
    );
    let acc = crate::cuda::gemm::Epilogue {
        accumulate: true,
        bias: true,
        ..Default::default()
    };
    let p = Operands {
        x: dxv.ptr,
        w: &wt,
        bias: dbv.ptr,
        y: dyv.ptr,
        m: mm,
        ep: acc,
    };
    gemv(&m.k, &s, &p)?;
    s.synchronize()?;
    let mut want = cpu::linear(&xv, &wv, Some(&bv), mm, nn, kk);
    want.iter_mut().zip(&yv).for_each(|(a, b)| *a += b);
    check(
        out,
        "gemv (M = 1), Y += X·Wᵀ + b",
        &download_bf16(&dyv, mm * nn)?,
        &want,
        "1×37×264",
    );
    skinny_products(m, out)?;
    attention(m, out)
}

/// `gemm_skinny` (decode products of 2…64 rows): each row count's tile of m16 rows, every
/// epilogue, and grids that share column tiles among blocks in every way the kernel handles (one
/// block for the whole product, a block per iteration, ranges ending inside tiles), each against
/// the CPU product and run twice for the same bits.
fn skinny_products(m: &GpuModel, out: &mut Vec<Check>) -> Result<()> {
    use crate::cuda::gemm::Epilogue;
    let g = &m.gpu;
    let s = g.stream()?;
    let cases = [
        // (m, n, k, blocks, bias, accumulate, f32 out)
        (2usize, 256usize, 128usize, 1u32, false, false, false),
        (17, 384, 640, 7, true, false, false),
        (33, 256, 1024, 32, false, true, false),
        (64, 512, 1536, 13, true, true, false),
        (64, 128, 4096, 1000, false, false, true),
        (9, 640, 192, 4, true, true, true),
    ];
    for (i, (mm, nn, kk, blocks, bias, acc, f32o)) in cases.into_iter().enumerate() {
        let seed = 40 + 4 * i as u64;
        let (xv, wv, yv, bv) = (
            rand_vec(mm * kk, seed, 1.0),
            rand_vec(nn * kk, seed + 1, 1.0),
            rand_vec(mm * nn, seed + 2, 4.0),
            rand_vec(nn, seed + 3, 2.0),
        );
        let wt = crate::serve::model::gpu::DTensor {
            buf: upload_bf16(g, &wv)?,
            shape: vec![nn, kk],
        };
        let (dx, db) = (upload_bf16(g, &xv)?, upload_bf16(g, &bv)?);
        let upload_y = || -> Result<crate::cuda::device::DeviceBuffer> {
            if f32o {
                let d = g.alloc(mm * nn * 4)?;
                d.copy_from_host(&yv.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())?;
                Ok(d)
            } else {
                upload_bf16(g, &yv)
            }
        };
        let ep = Epilogue {
            bias,
            accumulate: acc,
            out_f32: f32o,
        };
        let pb = if bias { db.ptr } else { 0 };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let dy = upload_y()?;
            let p = Operands {
                x: dx.ptr,
                w: &wt,
                bias: pb,
                y: dy.ptr,
                m: mm,
                ep,
            };
            let Some(r) = m.products.skinny_on_grid(&m.k, &s, blocks, &p) else {
                eprintln!("  gemm_skinny: not run (this GPU cannot grant its shared memory)");
                return Ok(());
            };
            r?;
            s.synchronize()?;
            runs.push(if f32o {
                download_f32(&dy, mm * nn)?
            } else {
                download_bf16(&dy, mm * nn)?
            });
        }
        let mut want = cpu::linear(&xv, &wv, bias.then_some(&bv[..]), mm, nn, kk);
        if acc {
            want.iter_mut().zip(&yv).for_each(|(a, b)| *a += b);
        }
        let what = format!("gemm_skinny ({mm} × {nn} × {kk}, {blocks} blocks, {ep:?})");
        check(
            out,
            &what,
            &runs[0],
            &want,
            "stream-K over the grid's blocks",
        );
        let same = runs[0]
            .iter()
            .zip(&runs[1])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        out.push(Check {
            name: format!("{what}: same bits twice"),
            error: if same { 0.0 } else { 1.0 },
            limit: 0.0,
            note: "partial sums added in block order".into(),
        });
    }
    Ok(())
}

/// Flash attention (full d64, causal varlen d128) and paged decode attention.
fn attention(m: &GpuModel, out: &mut Vec<Check>) -> Result<()> {
    let g = &m.gpu;
    let s = g.stream()?;
    for (hd, causal, lens, heads, kvh) in [
        (64usize, false, vec![17usize, 300, 65], 2usize, 2usize),
        (128, true, vec![70, 5, 200], 4, 2),
    ] {
        let n: usize = lens.iter().sum();
        let stride = (heads + 2 * kvh) * hd;
        let qkv = rand_vec(n * stride, 7 + hd as u64, 2.0);
        let cu: Vec<i32> = std::iter::once(0)
            .chain(lens.iter().scan(0, |a, l| {
                *a += *l as i32;
                Some(*a)
            }))
            .collect();
        let (dq, dc) = (upload_bf16(g, &qkv)?, upload_i32(g, &cu)?);
        let o = g.alloc(n * heads * hd * 2)?;
        let max_len = *lens.iter().max().unwrap_or(&1);
        let (pq, po, pc) = (dq.ptr, o.ptr, dc.ptr);
        let (st, os, h32, kv32) = (stride as u32, (heads * hd) as u32, heads as u32, kvh as u32);
        let (ko, vo) = ((heads * hd) as u32, ((heads + kvh) * hd) as u32);
        let (c32, scale) = (causal as i32, 1.0f32 / (hd as f32).sqrt());
        let name = crate::serve::model::gpu::flash_attn_kernel(hd);
        // SAFETY: the named kernel's parameters are listed beside it in kernels/llava.cu and match
        // these arguments in order and type; every buffer was uploaded or allocated above with the
        // sizes the CPU reference uses and lives until the synchronize.
        unsafe {
            m.k.get(name).launch3(
                (max_len.div_ceil(FLASH_ROWS) as u32, h32, lens.len() as u32),
                128,
                &s,
                &mut kargs![pq, po, pc, st, os, h32, kv32, ko, vo, c32, scale],
            )
        }?;
        s.synchronize()?;
        let want = cpu_attention(&qkv, &lens, heads, kvh, hd, causal);
        check(
            out,
            &format!(
                "{name} ({})",
                if causal {
                    "causal varlen"
                } else {
                    "full, per image"
                }
            ),
            &download_bf16(&o, n * heads * hd)?,
            &want,
            &format!("lengths {lens:?}"),
        );
    }
    // Paged decode: 4 sequences, contexts 1, 300, 530 (spans 1–3 partitions) and 0 (a batch's
    // padding row: zeros); MHA (a group of
    // 1: LLaVA) and GQA groups of 2 (the tiny models), 5 (Qwen2.5-VL-32B), 7 (-7B) and 16 (the
    // tensor-core kernel's whole tile).
    let hd = 128usize;
    for (heads, kvh) in [(2usize, 2usize), (4, 2), (10, 2), (14, 2), (32, 2)] {
        let ctx = [1usize, 300, 530, 0];
        let nseq = ctx.len();
        let stride = (heads + 2 * kvh) * hd;
        let max_blocks = 34usize;
        let nblocks = nseq * max_blocks;
        // Random pool, scattered block tables.
        let pool_elems = nblocks * 2 * kvh * KV_BLOCK * hd;
        let pool = rand_vec(pool_elems, 21, 2.0);
        let dpool = upload_bf16(g, &pool)?;
        let mut tables = vec![0i32; nseq * max_blocks];
        for (i, t) in tables.iter_mut().enumerate() {
            *t = ((i * 37 + 11) % nblocks) as i32;
        }
        let q = rand_vec(nseq * stride, 22, 2.0);
        let (dq, dt, dc) = (
            upload_bf16(g, &q)?,
            upload_i32(g, &tables)?,
            upload_i32(g, &ctx.iter().map(|c| *c as i32).collect::<Vec<_>>())?,
        );
        let scale = 1.0f32 / (hd as f32).sqrt();
        // Every launch the engine makes: short partitions (small batches), long ones (large
        // batches), and for grouped-query heads partitions sized from the wave (4 sequences × 2
        // KV heads of it held back for the sequences' last partitions): unbounded (partitions
        // of 256 tokens), 2 blocks more (831 tokens × 2 KV heads over 2: one partition a
        // sequence) and 4 more (448 tokens: the 530-token sequence over two). The batch given
        // to decode_launch only picks the kernel; the grid has the 4 sequences here.
        use crate::serve::model::gpu::{DECODE_PART, decode_launch};
        let max_parts = 530usize.div_ceil(DECODE_PART);
        let mut launches = vec![
            decode_launch(1, heads, kvh, max_parts, m.k.decode_gqa_slots),
            decode_launch(64, heads, kvh, max_parts, u32::MAX as usize),
        ];
        if heads > kvh {
            launches.push(decode_launch(64, heads, kvh, max_parts, (nseq + 1) * kvh));
            launches.push(decode_launch(64, heads, kvh, max_parts, (nseq + 2) * kvh));
            // The two-stage kernel that runs where a GPU cannot grant the three stages.
            let two = launches.len() - 1;
            launches.push(crate::serve::model::gpu::kernels::DecodeLaunch {
                kernel: "decode_attn_gqa2",
                ..launches[two]
            });
        }
        let mut got = Vec::new();
        for dl in launches {
            let po = g.alloc(nseq * heads * max_parts * 128 * 4)?;
            let pml = g.alloc(nseq * heads * max_parts * 2 * 4)?;
            let done = g.alloc(nseq * heads * 4)?;
            done.memset_async(0, &s)?;
            let o = g.alloc(nseq * heads * hd * 2)?;
            let (pq, pt, pc, pp, ppo, pm, pd, poo) = (
                dq.ptr, dt.ptr, dc.ptr, dpool.ptr, po.ptr, pml.ptr, done.ptr, o.ptr,
            );
            let wave = dl.wave;
            let (st, h32, kv32, mb, mp, p32, qd) = (
                stride as u32,
                heads as u32,
                kvh as u32,
                max_blocks as u32,
                max_parts as u32,
                dl.part as u32,
                (heads * hd) as u32,
            );
            // Twice, the output cleared before each: the second launch only merges if the first
            // left the counters at zero.
            for _ in 0..2 {
                o.memset_async(0, &s)?;
                // SAFETY: DECODE_ATTN_ARGS of kernels/llava.cu in order and type; po / pml / done hold
                // nseq × heads × max_parts partial results (decode_launch never launches more
                // partitions), dt nseq × max_blocks block ids inside dpool, dc nseq contexts ≤ 530 =
                // max_blocks·16 bounds; all alive until the synchronize.
                unsafe {
                    m.k.get(dl.kernel).launch3(
                        (
                            (heads / dl.heads_per_block) as u32,
                            nseq as u32,
                            dl.partitions as u32,
                        ),
                        128,
                        &s,
                        &mut kargs![
                            pq, pt, pc, pp, ppo, pm, pd, poo, st, h32, kv32, mb, mp, p32, qd,
                            scale, wave
                        ],
                    )
                }?;
            }
            s.synchronize()?;
            got.push((dl, download_bf16(&o, nseq * heads * hd)?));
        }
        let mut want = vec![0f32; nseq * heads * hd];
        for b in 0..nseq {
            for h in 0..heads {
                let g2 = h / (heads / kvh);
                let row = |t: usize, kv: usize| {
                    let blk = tables[b * max_blocks + t / KV_BLOCK] as usize;
                    let off = (((blk * 2 + kv) * kvh + g2) * KV_BLOCK + t % KV_BLOCK) * hd;
                    &pool[off..off + hd]
                };
                let qh = &q[b * stride + h * hd..][..hd];
                let sc: Vec<f32> = (0..ctx[b])
                    .map(|t| qh.iter().zip(row(t, 0)).map(|(a, b)| a * b).sum::<f32>() * scale)
                    .collect();
                let mx = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = sc.iter().map(|v| (v - mx).exp()).collect();
                let sum: f32 = e.iter().sum();
                for (t, p) in e.iter().enumerate() {
                    for (dd, v) in row(t, 1).iter().enumerate() {
                        want[(b * heads + h) * hd + dd] += p / sum * v;
                    }
                }
            }
        }
        for (dl, o) in got {
            check(
                out,
                &format!(
                    "{} (paged, parts ≥ {}, wave {}, heads {heads}/{kvh})",
                    dl.kernel, dl.part, dl.wave
                ),
                &o,
                &want,
                &format!(
                    "contexts 1, 300, 530, 0; scattered blocks; {heads} heads over {kvh} KV heads"
                ),
            );
        }
    }
    Ok(())
}

fn cpu_attention(
    qkv: &[f32],
    lens: &[usize],
    heads: usize,
    kvh: usize,
    hd: usize,
    causal: bool,
) -> Vec<f32> {
    let stride = (heads + 2 * kvh) * hd;
    let mut out = Vec::new();
    let mut base = 0;
    for &len in lens {
        let mut o = vec![0f32; len * heads * hd];
        for h in 0..heads {
            let g = h / (heads / kvh);
            for i in 0..len {
                let q = &qkv[(base + i) * stride + h * hd..][..hd];
                let vis = if causal { i + 1 } else { len };
                let sc: Vec<f32> = (0..vis)
                    .map(|j| {
                        let k = &qkv[(base + j) * stride + (heads + g) * hd..][..hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = sc.iter().map(|v| (v - mx).exp()).collect();
                let sum: f32 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    let v = &qkv[(base + j) * stride + (heads + kvh + g) * hd..][..hd];
                    for dd in 0..hd {
                        o[(i * heads + h) * hd + dd] += p / sum * v[dd];
                    }
                }
            }
        }
        out.extend(o);
        base += len;
    }
    out
}

/// The whole forward on the GPU (bf16) against the CPU (f32): image embeddings, prefill logits,
/// then decode steps fed the CPU's tokens (so every step's logits are comparable).
fn forward(m: &GpuModel, w: &host::HostWeights, out: &mut Vec<Check>) -> Result<()> {
    let c = &m.cfg;
    let g = &m.gpu;
    let s = g.stream()?;
    let images = [host::random_image(c, 1), host::random_image(c, 2)];
    let prompt = vec![1, 45, IMAGE_TOKEN, 300, 7, IMAGE_TOKEN, 99, 12, 5];
    let steps = 8;
    let want = cpu::generate(c, w, &images, &prompt, steps)?;
    // encode
    let px: Vec<f32> = images.concat();
    let dpx = upload_bf16(g, &px)?;
    let np = c.image_tokens();
    let d = c.llm.hidden;
    let emb = g.alloc(2 * np * d * 2)?;
    let mut sc = Scratch::new();
    m.encode(&s, dpx.ptr, 2, emb.ptr, &mut sc)?;
    s.synchronize()?;
    let want_emb = cpu::encode(c, w, &images)?;
    check(
        out,
        "encode: vision tower + projector",
        &download_bf16(&emb, 2 * np * d)?,
        &want_emb,
        "2 images",
    );
    // prefill
    let mut tok = Vec::new();
    let mut img_rows = Vec::new();
    let mut img = 0;
    for &t in &prompt {
        if t == IMAGE_TOKEN {
            for r in 0..np {
                tok.push(0);
                img_rows.push((img * np + r) as i32);
            }
            img += 1;
        } else {
            tok.push(t);
            img_rows.push(-1);
        }
    }
    let positions: Vec<[usize; 3]> = (0..tok.len()).map(|p| [p; 3]).collect();
    let (n, pass) = (tok.len(), m.pass());
    let prompt = Prompt {
        tokens: &tok,
        img_rows: &img_rows,
        images: emb.ptr,
        positions: &positions,
        planes: false,
        next: n,
    };
    decoder_check(
        &pass,
        &s,
        &prompt,
        &want.logits,
        &want.tokens,
        "forward",
        out,
    )
}

/// A prompt as the decoder takes it: tokens with image rows spliced in (row ≥ 0 of `images`
/// replaces the token), positions (one per token, or M-RoPE planes), and the position of the
/// first generated token.
struct Prompt<'a> {
    tokens: &'a [i32],
    img_rows: &'a [i32],
    images: u64,
    positions: &'a [[usize; 3]],
    planes: bool,
    next: usize,
}

/// Prefill of the prompt, then decode steps fed the CPU's tokens (so every step's logits are
/// comparable), against the CPU's logits and greedy tokens.
fn decoder_check(
    pass: &DecoderPass,
    s: &Stream,
    p: &Prompt,
    want_logits: &[Vec<f32>],
    want_tokens: &[u32],
    what: &str,
    out: &mut Vec<Check>,
) -> Result<()> {
    let g = pass.gpu;
    let (n, steps, d) = (p.tokens.len(), want_tokens.len(), pass.llm.hidden);
    let mut sc = Scratch::new();
    let blocks = (n + steps).div_ceil(KV_BLOCK);
    let pool = KvPool::new(g, pass.llm, blocks + 3)?;
    // A scattered block table: block i of the request is pool block (i·2 + 1) mod blocks+3.
    let table: Vec<i32> = (0..blocks)
        .map(|i| ((i * 2 + 1) % (blocks + 3)) as i32)
        .collect();
    let slot = |q: usize| table[q / KV_BLOCK] * KV_BLOCK as i32 + (q % KV_BLOCK) as i32;
    let pos: Vec<i32> = if p.planes {
        (0..3)
            .flat_map(|a| p.positions.iter().map(move |q| q[a] as i32))
            .collect()
    } else {
        p.positions.iter().map(|q| q[0] as i32).collect()
    };
    let slots: Vec<i32> = (0..n).map(slot).collect();
    let (dt, di, dp, ds) = (
        upload_i32(g, p.tokens)?,
        upload_i32(g, p.img_rows)?,
        upload_i32(g, &pos)?,
        upload_i32(g, &slots)?,
    );
    let dcu = upload_i32(g, &[0, n as i32])?;
    let dlast = upload_i32(g, &[n as i32 - 1])?;
    let x = g.alloc(n * d * 2)?;
    pass.embed(s, dt.ptr, di.ptr, p.images, x.ptr, n)?;
    let inp = TokenInputs {
        positions: dp.ptr,
        planes: p.planes,
        slots: ds.ptr,
    };
    let attn = Attn::Prefill {
        cu_seqlens: dcu.ptr,
        seqs: 1,
        max_len: n,
    };
    pass.decoder(s, x.ptr, n, &inp, &attn, &pool, &mut sc, 1)?;
    let v = pass.llm.vocab;
    let logits = g.alloc(v * 4)?;
    let am = g.alloc(4)?;
    pass.logits(s, x.ptr, dlast.ptr, 1, logits.ptr, am.ptr, &mut sc)?;
    s.synchronize()?;
    let mut worst = rel_err(&download_f32(&logits, v)?, &want_logits[0]);
    let mut got_tokens = vec![download_i32(&am, 1)?[0] as u32];
    let max_blocks = blocks;
    let parts = (n + steps).div_ceil(crate::serve::model::gpu::DECODE_PART);
    let dtab = upload_i32(g, &table)?;
    let xd = g.alloc(d * 2)?;
    let row0 = upload_i32(g, &[0])?;
    let minus1 = upload_i32(g, &[-1])?;
    for step in 1..steps {
        let q = n + step - 1;
        let t = want_tokens[step - 1] as i32;
        let (dtok, dpos, dslot, dctx) = (
            upload_i32(g, &[t])?,
            upload_i32(g, &[(p.next + step - 1) as i32])?,
            upload_i32(g, &[slot(q)])?,
            upload_i32(g, &[q as i32 + 1])?,
        );
        pass.embed(s, dtok.ptr, minus1.ptr, 0, xd.ptr, 1)?;
        let inp = TokenInputs {
            positions: dpos.ptr,
            planes: false,
            slots: dslot.ptr,
        };
        let attn = Attn::Decode {
            tables: dtab.ptr,
            ctx: dctx.ptr,
            max_blocks,
        };
        pass.decoder(s, xd.ptr, 1, &inp, &attn, &pool, &mut sc, parts)?;
        pass.logits(s, xd.ptr, row0.ptr, 1, logits.ptr, am.ptr, &mut sc)?;
        s.synchronize()?;
        worst = worst.max(rel_err(&download_f32(&logits, v)?, &want_logits[step]));
        got_tokens.push(download_i32(&am, 1)?[0] as u32);
    }
    out.push(Check {
        name: format!("{what}: prefill + decode logits"),
        error: worst,
        limit: LIMIT,
        note: format!("{n} prompt tokens, {steps} steps, worst step"),
    });
    let same = got_tokens
        .iter()
        .zip(want_tokens)
        .filter(|(a, b)| a == b)
        .count();
    out.push(Check {
        name: format!("{what}: greedy tokens (GPU = CPU)"),
        error: (steps - same) as f64,
        limit: 0.0,
        note: format!("{same}/{steps} equal; GPU {got_tokens:?}"),
    });
    Ok(())
}

/// Qwen2.5-VL's forward on the GPU (bf16) against its CPU reference (f32) on a tiny random
/// model: the ViT + merger of two images of different grids (windows cut short, a
/// full-attention block), then prefill (M-RoPE planes) and decode.
fn qwen_forward(gpu: usize, seed: u64, out: &mut Vec<Check>) -> Result<()> {
    let c = Qwen25VlConfig::tiny();
    let w = qcpu::random(&c, seed)?;
    let m = QwenGpu::from_host(&c, Gpu::open(gpu)?, &w)?;
    let g = &m.gpu;
    let s = g.stream()?;
    let grids = [
        ImageGrid { rows: 10, cols: 14 },
        ImageGrid { rows: 6, cols: 4 },
    ];
    let images: Vec<qcpu::Image> = grids
        .iter()
        .enumerate()
        .map(|(i, &grid)| qcpu::Image {
            grid,
            pixels: qcpu::random_image(&c, grid, seed + i as u64),
        })
        .collect();
    let t = qcpu::special_tokens(&c);
    let prompt = vec![
        1,
        45,
        t.vision_start,
        QWEN_IMAGE,
        t.vision_end,
        300,
        7,
        t.vision_start,
        QWEN_IMAGE,
        t.vision_end,
        99,
        12,
        5,
    ];
    let steps = 6;
    let want = qcpu::generate(&c, &w, &images, &prompt, steps)?;
    let d = c.llm.hidden;
    let tokens: Vec<usize> = grids.iter().map(|&gr| c.image_tokens(gr)).collect();
    let total: usize = tokens.iter().sum();
    let px: Vec<_> = images
        .iter()
        .map(|i| upload_bf16(g, &i.pixels))
        .collect::<Result<_>>()?;
    let emb = g.alloc(total * d * 2)?;
    let mut sc = Scratch::new();
    let ptrs: Vec<u64> = px.iter().map(|b| b.ptr).collect();
    m.encode(&s, &grids, &ptrs, emb.ptr, &mut sc)?;
    let want_emb: Vec<f32> = images
        .iter()
        .map(|i| qcpu::encode_image(&c, &w, i))
        .collect::<Result<Vec<_>>>()?
        .concat();
    check(
        out,
        "qwen2.5-vl encode: ViT + merger",
        &download_bf16(&emb, total * d)?,
        &want_emb,
        "2 images, 35 + 6 tokens",
    );
    let (mut tok, mut img_rows) = (Vec::new(), Vec::new());
    let mut images_seen = 0;
    for &p in &prompt {
        if p == QWEN_IMAGE {
            let first: usize = tokens[..images_seen].iter().sum();
            for r in 0..tokens[images_seen] {
                tok.push(0);
                img_rows.push((first + r) as i32);
            }
            images_seen += 1;
        } else {
            tok.push(p);
            img_rows.push(-1);
        }
    }
    let (positions, next) = mrope_positions(&c, &prompt, &grids)?;
    let p = Prompt {
        tokens: &tok,
        img_rows: &img_rows,
        images: emb.ptr,
        positions: &positions,
        planes: true,
        next,
    };
    decoder_check(
        &m.pass(),
        &s,
        &p,
        &want.logits,
        &want.tokens,
        "qwen2.5-vl forward",
        out,
    )
}

/// The engine end to end: requests of different lengths join and leave; graphs and direct
/// launches must produce the same tokens, every request its exact number of tokens.
fn engine(gpu: usize, c: &LlavaConfig, w: &host::HostWeights, out: &mut Vec<Check>) -> Result<()> {
    let requests: Vec<Request> = [5usize, 1, 9, 3, 7, 2]
        .iter()
        .enumerate()
        .map(|(i, &o)| Request::synthetic(i as u64, i % 2, 3 + 4 * i, o, c.llm.vocab))
        .collect();
    let model = || {
        Ok(ServedModel::from(GpuModel::from_host(
            c,
            Gpu::open(gpu)?,
            w,
        )?))
    };
    continuous_batching("engine", &model, &requests, out)?;
    hand_off(gpu, c, w, out)
}

/// Runs `requests` through an engine of `model()` with direct launches, then with graphs: the
/// tokens must be equal, every request its exact number of them.
fn continuous_batching(
    what: &str,
    model: &dyn Fn() -> Result<ServedModel>,
    requests: &[Request],
    out: &mut Vec<Check>,
) -> Result<()> {
    let mut runs = Vec::new();
    for graphs in [false, true] {
        let cfg = EngineConfig {
            max_batch: 4,
            max_context: 256,
            prefill_tokens: 64,
            encode_batch: 2,
            kv_blocks: Some(64),
            graphs,
            hand_off: false,
            seed: 3,
        };
        let mut e = Engine::new(model()?, cfg)?;
        for r in requests {
            e.submit(r.clone())?;
        }
        eprintln!("  {what}, graphs {graphs}: running");
        let ev = e.run_to_completion()?;
        let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); requests.len()];
        let mut bad = 0usize;
        let mut finished = 0usize;
        let mut last_t = 0.0;
        for x in &ev {
            if x.t < last_t {
                bad += 1;
            }
            last_t = x.t;
            match x.kind {
                EventKind::FirstToken | EventKind::Token => {
                    tokens[x.id as usize].push(x.token.unwrap_or(u32::MAX))
                }
                EventKind::Finished => finished += 1,
                EventKind::EncodeDone | EventKind::KvImported => {}
            }
        }
        for (r, t) in requests.iter().zip(&tokens) {
            if t.len() != r.output_tokens {
                bad += 1;
            }
        }
        if finished != requests.len() {
            bad += 1;
        }
        runs.push((bad, tokens));
    }
    let same = runs[0].1 == runs[1].1;
    out.push(Check {
        name: format!("{what}: continuous batching, graphs = direct"),
        error: (runs[0].0 + runs[1].0 + usize::from(!same)) as f64,
        limit: 0.0,
        note: format!(
            "{} requests, batch ≤ 4; tokens equal: {same}",
            requests.len()
        ),
    });
    Ok(())
}

/// Qwen2.5-VL in the engine: requests with images of different sizes (so different token
/// counts and M-RoPE position shifts) batched as LLaVA's are; and one request alone against
/// the CPU reference on the same pixels (the engine's random pixels are the host's `uniform`
/// draws), which checks the engine's prefill positions and its decode positions after an image.
fn qwen_engine(gpu: usize, seed: u64, out: &mut Vec<Check>) -> Result<()> {
    let c = Qwen25VlConfig::tiny();
    let w = qcpu::random(&c, seed)?;
    let model = || {
        Ok(ServedModel::from(QwenGpu::from_host(
            &c,
            Gpu::open(gpu)?,
            &w,
        )?))
    };
    // 112 × 84 px: 6 × 8 patches, 12 tokens; 56 × 84: 6 × 4, 6 tokens; 300 × 200 (resized to
    // 308 × 196: 14 × 22 patches, 77 tokens).
    let sizes = [(112u32, 84u32), (56, 84), (300, 200)];
    let requests: Vec<Request> = [5usize, 1, 9, 3, 7, 2]
        .iter()
        .enumerate()
        .map(|(i, &o)| {
            let mut r = Request::synthetic(i as u64, i % 3, 3 + 4 * i, o, c.llm.vocab - 8);
            r.images = (0..i % 3).map(|k| sizes[(i + k) % 3]).collect();
            r
        })
        .collect();
    continuous_batching("qwen2.5-vl engine", &model, &requests, out)?;
    // One request alone: text, two images, text.
    let steps = 6;
    let t = qcpu::special_tokens(&c);
    let prompt = vec![
        1,
        t.vision_start,
        IMAGE_TOKEN,
        t.vision_end,
        40,
        t.vision_start,
        IMAGE_TOKEN,
        t.vision_end,
        41,
        42,
    ];
    let req = Request {
        id: 0,
        images: vec![sizes[0], sizes[2]],
        prompt: prompt.clone(),
        output_tokens: steps,
    };
    let cfg = EngineConfig {
        max_batch: 4,
        max_context: 256,
        prefill_tokens: 256,
        encode_batch: 2,
        kv_blocks: Some(64),
        graphs: true,
        hand_off: false,
        seed: 9,
    };
    let mut e = Engine::new(model()?, cfg)?;
    e.submit(req)?;
    let got: Vec<u32> = e
        .run_to_completion()?
        .iter()
        .filter_map(|x| x.token)
        .collect();
    // The engine's first encode draws pixels from mix64(seed): the images back to back.
    let grids: Vec<ImageGrid> = [sizes[0], sizes[2]]
        .iter()
        .map(|&(w, h)| c.grid(w as usize, h as usize))
        .collect::<Result<_>>()?;
    let px_seed = host::mix64(9);
    let mut at = 0u64;
    let images: Vec<qcpu::Image> = grids
        .iter()
        .map(|&grid| {
            let n = (3 * grid.patches() * c.vision.patch * c.vision.patch) as u64;
            let pixels = (at..at + n)
                .map(|i| round_bf16(uniform(px_seed, i)))
                .collect();
            at += n;
            qcpu::Image { grid, pixels }
        })
        .collect();
    let qprompt: Vec<i32> = prompt
        .iter()
        .map(|&t| if t == IMAGE_TOKEN { QWEN_IMAGE } else { t })
        .collect();
    let want = qcpu::generate(&c, &w, &images, &qprompt, steps)?;
    let same = got.iter().zip(&want.tokens).filter(|(a, b)| a == b).count();
    out.push(Check {
        name: "qwen2.5-vl engine: one request = CPU reference".into(),
        error: (steps - same) as f64 + got.len().abs_diff(steps) as f64,
        limit: 0.0,
        note: format!(
            "{same}/{steps} greedy tokens equal; images 12 + 77 tokens; GPU {got:?}, CPU {:?}",
            want.tokens
        ),
    });
    Ok(())
}

/// Stage-level disaggregation: a prefill worker hands each request's KV (gathered from its
/// paged pool into one packed buffer) to a decode worker, which scatters it into its own pool.
/// One request at a time, so both sides compute exactly what one engine does: the tokens must
/// be equal to one engine's, bit for bit.
fn hand_off(
    gpu: usize,
    c: &LlavaConfig,
    w: &host::HostWeights,
    out: &mut Vec<Check>,
) -> Result<()> {
    let cfg = |hand_off, kv_blocks| EngineConfig {
        max_batch: 4,
        max_context: 256,
        prefill_tokens: 64,
        encode_batch: 2,
        kv_blocks: Some(kv_blocks),
        graphs: true,
        hand_off,
        seed: 3,
    };
    let open = || Gpu::open(gpu);
    let mut whole = Engine::new(GpuModel::from_host(c, open()?, w)?, cfg(false, 64))?;
    // Pools of different sizes: the blocks a request gets differ on each side.
    let mut pre = Engine::new(GpuModel::from_host(c, open()?, w)?, cfg(true, 40))?;
    let mut dec = Engine::new(GpuModel::from_host(c, open()?, w)?, cfg(false, 80))?;
    let packed = pre.model.gpu().alloc(pre.kv_bytes(256))?;
    let outs = [5usize, 1, 9, 3, 7, 2];
    let (mut equal, mut moved) = (0usize, 0usize);
    for (i, o) in outs.iter().enumerate() {
        let req = Request::synthetic(i as u64, i % 2, 3 + 4 * i, *o, c.llm.vocab);
        let tokens = |ev: Vec<crate::serve::engine::EngineEvent>| -> Vec<u32> {
            ev.into_iter().filter_map(|e| e.token).collect()
        };
        whole.submit(req.clone())?;
        let want = tokens(whole.run_to_completion()?);
        pre.submit(req)?;
        let mut got = Vec::new();
        while !pre.is_idle() {
            got.extend(tokens(pre.step()?.1));
            while let Some(h) = pre.hand_off(&packed)? {
                // The decode worker's own copy of the packed KV, as a link would deliver it.
                let kv = dec.model.gpu().alloc(h.kv_bytes)?;
                crate::cuda::device::copy_dtod_async(kv.ptr, packed.ptr, h.kv_bytes, &pre.stream)?;
                pre.stream.synchronize()?;
                dec.submit_prefilled(h, kv)?;
                moved += 1;
            }
        }
        got.extend(tokens(dec.run_to_completion()?));
        equal += usize::from(got == want && got.len() == *o);
    }
    let spent = dec.take_spent().len();
    out.push(Check {
        name: "engine: stage hand-off (KV gather → scatter) = one engine".into(),
        error: (outs.len() - equal + moved.abs_diff(spent)) as f64,
        limit: 0.0,
        note: format!(
            "{equal}/{} requests' tokens equal; {moved} KV hand-offs, {spent} buffers given back",
            outs.len()
        ),
    });
    Ok(())
}

pub fn run(gpu: usize, seed: u64) -> Result<Vec<Check>> {
    let c = LlavaConfig::tiny();
    let w = host::random(&c, seed)?;
    let m = GpuModel::from_host(&c, Gpu::open(gpu)?, &w)?;
    let mut out = Vec::new();
    eprintln!("selftest: kernels");
    kernels(&m, &mut out)?;
    eprintln!("selftest: forward");
    forward(&m, &w, &mut out)?;
    eprintln!("selftest: qwen2.5-vl forward");
    qwen_forward(gpu, seed, &mut out)?;
    eprintln!("selftest: engine");
    engine(gpu, &c, &w, &mut out)?;
    eprintln!("selftest: qwen2.5-vl engine");
    qwen_engine(gpu, seed, &mut out)?;
    Ok(out)
}

pub fn table(checks: &[Check]) -> String {
    let mut s =
        String::from("| check | rel. error | limit | result | note |\n|---|---|---|---|---|\n");
    for c in checks {
        s += &format!(
            "| {} | {:.2e} | {:.0e} | {} | {} |\n",
            c.name,
            c.error,
            c.limit,
            if c.ok() { "ok" } else { "FAIL" },
            c.note
        );
    }
    s
}

pub fn failures(checks: &[Check]) -> Result<()> {
    let bad: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok())
        .map(|c| c.name.as_str())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::Check(format!("selftest failed: {}", bad.join(", "))))
    }
}
