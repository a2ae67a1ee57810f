//! Qwen2.5-VL-7B's passes on random weights against the floors measured in the same run
//! (`hetsim exec bench --model qwen2.5-vl-7b`): issue 20's speed lines. Decode is timed as the
//! serving engine runs it (a CUDA graph per step's batch bucket), then once more kernel by
//! kernel straight through `DecoderPass` for the per-operation breakdown; prefill and encode run
//! straight through `QwenGpu`.

use super::bench::{
    BenchReport, BenchRow, bench_engine, breakdown_table, engine_decode_row, kernel_choice_rows,
    measure_floors, prefill_flops, product_rows,
};
use crate::cuda::device::{Event, Gpu, Stream};
use crate::error::Result;
use crate::serve::model::gpu::{
    Attn, DECODE_PART, KV_BLOCK, Scratch, ServedConfig, ServedModel, TokenInputs, upload_bf16,
    upload_i32,
};
use crate::serve::model::qwen2_5_vl::{ImageGrid, Qwen25VlConfig, windows};
use crate::serve::model::qwen2_5_vl_cpu::random_image;

/// Useful FLOPs of the ViT + merger over images of these grids (the padding of the heads to 128
/// is not counted: it is our cost, not the model's).
pub fn encode_flops(c: &Qwen25VlConfig, grids: &[ImageGrid]) -> f64 {
    let v = &c.vision;
    let (dv, i, mu) = (v.hidden as f64, v.intermediate as f64, v.merge_unit());
    let mut f = 0.0;
    for &g in grids {
        let n = g.patches() as f64;
        // q·kᵀ and p·v over each attention segment: windows in most blocks, the image in some.
        let window_sq: f64 = windows(c, g)
            .sizes
            .iter()
            .map(|&s| ((s * mu) as f64).powi(2))
            .sum();
        let full = v.full_attention_blocks.len() as f64;
        let windowed = v.depth as f64 - full;
        let attn = 4.0 * dv * (full * n * n + windowed * window_sq);
        let linear = 2.0 * n * (4.0 * dv * dv + 3.0 * dv * i) * v.depth as f64;
        let patch = 2.0 * n * v.patch_dim() as f64 * dv;
        let (t, dm, d) = (n / mu as f64, v.merged_dim() as f64, c.llm.hidden as f64);
        let merger = 2.0 * t * (dm * dm + dm * d);
        f += attn + linear + patch + merger;
    }
    f
}

/// GPU time per operation of one run of `run` (after a warm-up), as a markdown table.
fn breakdown(s: &Stream, title: &str, mut run: impl FnMut() -> Result<()>) -> Result<String> {
    run()?;
    crate::cuda::timeline::open();
    let ran = run();
    let ops = crate::cuda::timeline::close(s)?;
    ran?;
    Ok(breakdown_table(title, &ops, 1) + "\n")
}

/// Median seconds of `iters` runs of `run` after one warm-up, by events on `s`.
fn time(gpu: &Gpu, s: &Stream, iters: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    run()?;
    s.synchronize()?;
    let (e0, e1) = (Event::timing(gpu)?, Event::timing(gpu)?);
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        e0.record(s)?;
        run()?;
        e1.record(s)?;
        t.push(e0.elapsed_ms(&e1)? * 1e-3);
    }
    Ok(crate::stats::median(&t))
}

/// The bench's rows and, for each phase's largest point, the GPU time per operation of one pass
/// (markdown).
pub fn bench(c: &Qwen25VlConfig, gpu_index: usize, iters: usize) -> Result<(BenchReport, String)> {
    let gpu = Gpu::open(gpu_index)?;
    let floors = measure_floors(&gpu)?;
    let (peak, bw) = (floors.gemm_tflops * 1e12, floors.copy_gbs * 1e9);
    let mut rows = Vec::new();
    // Decode: batch 1 and 64, 1,024 tokens of context each (the KV pool's contents do not change
    // the time), in an engine sized for sequences of 2,048 tokens.
    let context = 1024usize;
    let batches = [(1usize, 1.25), (64, 1.15)];
    let mut e = bench_engine(&ServedConfig::Qwen(c.clone()), gpu, 64, 2048, context)?;
    for (batch, target) in batches {
        let shape = format!("batch {batch}, context {context}, serving engine (CUDA graphs)");
        let target = Some(target);
        rows.push(engine_decode_row(
            &mut e, batch, context, iters, bw, shape, target,
        )?);
    }
    rows.extend(kernel_choice_rows(
        &mut e,
        &batches.map(|b| b.0),
        context,
        iters,
        bw,
    )?);
    let products = product_rows(&e, bw);
    // The rest runs straight through the engine's model.
    let ServedModel::Qwen(m) = &e.model else {
        unreachable!("bench_engine serves the config it is given, here Qwen2.5-VL")
    };
    let gpu = &m.gpu;
    let s = gpu.stream()?;
    let mut sc = Scratch::new();
    let mut ops = String::new();
    let pass = m.pass();
    let l = &c.llm;
    let per = context.div_ceil(KV_BLOCK) + 1;
    let pool = m.kv_pool(64 * per + 8)?;
    for (batch, _) in batches {
        let tables: Vec<i32> = (0..(batch * per) as i32).collect();
        let ctx = vec![context as i32 + 1; batch];
        let tokens: Vec<i32> = (0..batch as i32).map(|i| i + 2).collect();
        let slots: Vec<i32> = (0..batch)
            .map(|i| ((i * per) * KV_BLOCK + context) as i32)
            .collect();
        let (dt, dtab, dctx, dpos, dslot, dimg) = (
            upload_i32(gpu, &tokens)?,
            upload_i32(gpu, &tables)?,
            upload_i32(gpu, &ctx)?,
            upload_i32(gpu, &vec![context as i32; batch])?,
            upload_i32(gpu, &slots)?,
            upload_i32(gpu, &vec![-1; batch])?,
        );
        let rows_i: Vec<i32> = (0..batch as i32).collect();
        let drows = upload_i32(gpu, &rows_i)?;
        let x = gpu.alloc(batch * l.hidden * 2)?;
        let logits = gpu.alloc(batch * l.vocab * 4)?;
        let am = gpu.alloc(batch * 4)?;
        let parts = (context + 1).div_ceil(DECODE_PART);
        pass.decoder_scratch(&mut sc, batch, parts, &s)?;
        pass.tune_decode_plans(&s, batch)?;
        let inp = TokenInputs {
            positions: dpos.ptr,
            planes: false,
            slots: dslot.ptr,
        };
        let attn = Attn::Decode {
            tables: dtab.ptr,
            ctx: dctx.ptr,
            max_blocks: per,
        };
        let mut step = || {
            pass.embed(&s, dt.ptr, dimg.ptr, 0, x.ptr, batch)?;
            pass.decoder(&s, x.ptr, batch, &inp, &attn, &pool, &mut sc, parts)?;
            pass.logits(&s, x.ptr, drows.ptr, batch, logits.ptr, am.ptr, &mut sc)
        };
        ops += &breakdown(
            &s,
            &format!("decode, batch {batch}, context {context}, kernel by kernel"),
            &mut step,
        )?;
    }
    // Prefill: 8 prompts of 1,024 tokens packed.
    let (seqs, tokens) = (8usize, 1024usize);
    let n = seqs * tokens;
    let ppool = m.kv_pool(n / KV_BLOCK + 8)?;
    let cu: Vec<i32> = (0..=seqs).map(|i| (i * tokens) as i32).collect();
    let pos: Vec<i32> = (0..n).map(|i| (i % tokens) as i32).collect();
    let slots: Vec<i32> = (0..n as i32).collect();
    let toks: Vec<i32> = (0..n).map(|i| (i * 7 % 1000) as i32 + 2).collect();
    let last: Vec<i32> = (1..=seqs).map(|i| (i * tokens - 1) as i32).collect();
    let (dcu, dpos, dslot, dt, dimg, dlast) = (
        upload_i32(gpu, &cu)?,
        upload_i32(gpu, &pos)?,
        upload_i32(gpu, &slots)?,
        upload_i32(gpu, &toks)?,
        upload_i32(gpu, &vec![-1; n])?,
        upload_i32(gpu, &last)?,
    );
    let x = gpu.alloc(n * l.hidden * 2)?;
    let logits = gpu.alloc(seqs * l.vocab * 4)?;
    let am = gpu.alloc(seqs * 4)?;
    let inp = TokenInputs {
        positions: dpos.ptr,
        planes: false,
        slots: dslot.ptr,
    };
    let attn = Attn::Prefill {
        cu_seqlens: dcu.ptr,
        seqs,
        max_len: tokens,
    };
    let t = time(gpu, &s, iters.clamp(1, 10), || {
        pass.embed(&s, dt.ptr, dimg.ptr, 0, x.ptr, n)?;
        pass.decoder(&s, x.ptr, n, &inp, &attn, &ppool, &mut sc, 1)?;
        pass.logits(&s, x.ptr, dlast.ptr, seqs, logits.ptr, am.ptr, &mut sc)
    })?;
    let f = prefill_flops(l, seqs, tokens);
    let eff = f / t / peak;
    rows.push(BenchRow {
        phase: "prefill".into(),
        shape: format!("{seqs} × {tokens} tokens"),
        seconds: t,
        floor_s: f / peak,
        figure: eff,
        target: Some(("≥ 75 % of GEMM peak".into(), eff >= 0.75)),
    });
    // Encode: 16 images of 1280 × 720 (smart_resize: 1288 × 728, 52 × 92 patches each).
    let grid = c.grid(1280, 720)?;
    let px = upload_bf16(gpu, &random_image(c, grid, 5))?;
    for images in [1usize, 16] {
        let grids = vec![grid; images];
        let ptrs = vec![px.ptr; images];
        let tokens: usize = grids.iter().map(|&g| c.image_tokens(g)).sum();
        let out = gpu.alloc(tokens * l.hidden * 2)?;
        let mut pass_once = || m.encode(&s, &grids, &ptrs, out.ptr, &mut sc);
        let t = time(gpu, &s, iters.clamp(1, 10), &mut pass_once)?;
        if images == 16 {
            ops += &breakdown(&s, "encode, 16 images of 1280 × 720", &mut pass_once)?;
        }
        let f = encode_flops(c, &grids);
        let eff = f / t / peak;
        rows.push(BenchRow {
            phase: "encode".into(),
            shape: format!("{images} images of 1280 × 720 ({tokens} tokens)"),
            seconds: t,
            floor_s: f / peak,
            figure: eff,
            target: (images == 16).then(|| ("≥ 50 % of GEMM peak".into(), eff >= 0.5)),
        });
    }
    Ok((
        BenchReport {
            floors,
            rows,
            products,
        },
        ops,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_flops_of_one_1280x720_image() {
        // 52 × 92 patches = 4,784, 26 × 46 merged tokens in windows of 4 × 4: 6 × 11 whole
        // windows (64 patches), 6 + 11 of 4 × 2 or 2 × 4 (32), one of 2 × 2 (16); by hand:
        // linear 2·4784·(4·1280² + 3·1280·3420)·32, patches 2·4784·1176·1280, merger
        // 2·1196·(5120² + 5120·3584), attention 4·1280·(4 full blocks · 4784² + 28 · Σ window²):
        // 6.66e12 in all.
        let c = Qwen25VlConfig::builtin("qwen2.5-vl-7b", None).unwrap();
        let g = c.grid(1280, 720).unwrap();
        let w = windows(&c, g);
        let sq: usize = w.sizes.iter().map(|s| (s * 4).pow(2)).sum();
        assert_eq!(sq, 66 * 64 * 64 + 17 * 32 * 32 + 16 * 16);
        let n = 4784f64;
        let want = 2.0 * n * (4.0 * 1280f64.powi(2) + 3.0 * 1280.0 * 3420.0) * 32.0
            + 2.0 * n * 1176.0 * 1280.0
            + 2.0 * 1196.0 * (5120f64.powi(2) + 5120.0 * 3584.0)
            + 4.0 * 1280.0 * (4.0 * n * n + 28.0 * sq as f64);
        let got = encode_flops(&c, &[g]);
        assert!((got - want).abs() / want < 1e-12, "{got} vs {want}");
        assert!((6.0e12..7.0e12).contains(&got), "{got}");
    }
}
