//! The bf16 GPU forward of `model::qwen2_5_vl` on the same kernels and products as LLaVA's:
//! the ViT + merger (`encode`) here, the decoder through [`DecoderPass`] (q/k/v biases in the
//! product's epilogue, M-RoPE's three position planes in `rope_kv_append`).
//!
//! The ViT's heads are 80 wide; the attention kernel is built for 64 and 128. So the ViT's
//! weights are held with each head padded to 128: `qkv` gets 48 zero rows (and zero biases)
//! after each head's 80, `proj` 48 zero columns after each head's 80. The padded dimensions
//! carry zeros through q·k and p·v, so every result is the unpadded model's; the cost is 60 %
//! more work in the qkv product and the attention (exec/REPORT.md has the time it takes).

use super::forward::{DecoderPass, TokenInputs, random_buffer, rmsnorm};
use super::kernels::{FLASH_ROWS, Kernels, check_decode_group, flash_attn_kernel};
use super::kv_pool::KvPool;
use super::products::Products;
use super::products::{padded_row_counts, padded_rows};
use super::scratch::Scratch;
use super::tensor::{DTensor, upload_bf16, upload_f32, upload_f64, upload_i32};
use crate::cuda::device::{DeviceBuffer, Gpu, Stream};
use crate::cuda::kernels::grid_for;
use crate::error::{Error, Result};
use crate::kargs;
use crate::serve::model::cpu::rope_inv_freq;
use crate::serve::model::host::tensor_seed;
use crate::serve::model::llava::TensorSpec;
use crate::serve::model::qwen2_5_vl::{
    ImageGrid, Qwen25VlConfig, Qwen25VlWeights, VisionBlock, merge_block_order, windows,
};
use crate::serve::model::qwen2_5_vl_cpu::HostWeights;

/// Width the ViT's heads are held at (the attention kernel's).
pub const VIT_HEAD: usize = 128;

/// The ViT MLP's width as held: rounded up to a multiple of 64, so that the down product's K
/// keeps rows 16-byte aligned (Qwen2.5-VL-7B's 3,420 is not: cuBLASLt ran that product at 26 %
/// of its peak, `exec/results/2026-12-03-h200-qwen2.5-vl-first-run/`).
pub fn held_intermediate(c: &Qwen25VlConfig) -> usize {
    c.vision.intermediate.next_multiple_of(64)
}

/// A ViT tensor held wider than the checkpoint's: viewed as [outer][groups][used][inner], each
/// group's `used` rows become `held`, zero-filled. The attention's heads (80 → 128) and the
/// MLP's width (3,420 → 3,456); the zeros change no result.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pad {
    outer: usize,
    groups: usize,
    used: usize,
    held: usize,
    inner: usize,
}

impl Pad {
    /// The padding of our tensor `spec` (None: held as it is).
    fn of(c: &Qwen25VlConfig, spec: &TensorSpec) -> Option<Pad> {
        let (h, dv, hd) = (c.vision.heads, c.vision.hidden, c.vision.head_dim());
        let (i, ip) = (c.vision.intermediate, held_intermediate(c));
        let field = spec.name.strip_prefix('v')?.split_once('.')?.1;
        let pad = |outer, groups, used, held, inner| Pad {
            outer,
            groups,
            used,
            held,
            inner,
        };
        let p = match field {
            "qkv_w" => pad(1, 3 * h, hd, VIT_HEAD, dv),
            "qkv_b" => pad(1, 3 * h, hd, VIT_HEAD, 1),
            "proj_w" => pad(dv, h, hd, VIT_HEAD, 1),
            "gate_up_w" => pad(1, 2, i, ip, dv),
            "gate_up_b" => pad(1, 2, i, ip, 1),
            "down_w" => pad(dv, 1, i, ip, 1),
            _ => return None,
        };
        (p.used != p.held).then_some(p)
    }

    fn padded_shape(&self, spec: &TensorSpec) -> Vec<usize> {
        let mut shape = spec.shape.clone();
        let axis = if self.outer == 1 { 0 } else { shape.len() - 1 };
        shape[axis] = self.groups * self.held;
        shape
    }

    fn pad(&self, v: &[f32]) -> Vec<f32> {
        let (rows, k, kp) = self.rows();
        let mut out = vec![0f32; rows * kp];
        for (r, row) in v.chunks(k).enumerate() {
            out[r * kp..r * kp + k].copy_from_slice(row);
        }
        out
    }

    /// As a matrix of (rows, used columns, held columns).
    fn rows(&self) -> (usize, usize, usize) {
        (
            self.outer * self.groups,
            self.used * self.inner,
            self.held * self.inner,
        )
    }
}

/// The model on one GPU.
pub struct QwenGpu {
    pub cfg: Qwen25VlConfig,
    pub w: Qwen25VlWeights<DTensor>,
    pub k: Kernels,
    pub products: Products,
    pub gpu: Gpu,
    /// The decoder's rotary frequencies (f64 [head_dim / 2]).
    rope_inv_freq: DeviceBuffer,
    /// The ViT's (f32 [head_dim / 4]: a half-width head's table, `qwen2_5_vl_cpu::rope_vision`).
    vit_inv_freq: DeviceBuffer,
}

impl QwenGpu {
    fn new(
        cfg: Qwen25VlConfig,
        gpu: Gpu,
        w: Qwen25VlWeights<DTensor>,
        k: Kernels,
    ) -> Result<QwenGpu> {
        check_decode_group(&cfg.name, cfg.llm.heads, cfg.llm.kv_heads)?;
        let hd = cfg.vision.head_dim();
        if cfg.llm.head_dim != 128 || hd > VIT_HEAD || !hd.is_multiple_of(16) {
            return Err(Error::Invalid(format!(
                "{}: head dims {} (decoder) and {hd} (ViT): the engine takes 128, and a multiple of 16 up to 128",
                cfg.name, cfg.llm.head_dim
            )));
        }
        Ok(QwenGpu {
            products: Products::new(&gpu, &k)?,
            rope_inv_freq: upload_f64(&gpu, &rope_inv_freq(cfg.llm.head_dim, cfg.llm.rope_theta))?,
            vit_inv_freq: upload_f32(
                &gpu,
                &rope_inv_freq(hd / 2, cfg.vision.rope_theta)
                    .iter()
                    .map(|&f| f as f32)
                    .collect::<Vec<_>>(),
            )?,
            cfg,
            w,
            k,
            gpu,
        })
    }

    /// Upload host weights (f32, rounded to bf16), the ViT's tensors padded (`Pad`).
    pub fn from_host(cfg: &Qwen25VlConfig, gpu: Gpu, hw: &HostWeights) -> Result<QwenGpu> {
        let k = Kernels::load(&gpu)?;
        let mut values = hw.tensors().into_iter();
        let w = Qwen25VlWeights::build(cfg, |spec| {
            let v = values
                .next()
                .ok_or_else(|| Error::Check("host weights shorter than the model".into()))?;
            let (v, shape) = match Pad::of(cfg, spec) {
                Some(p) => (p.pad(v), p.padded_shape(spec)),
                None => (v.clone(), spec.shape.clone()),
            };
            Ok(DTensor {
                buf: upload_bf16(&gpu, &v)?,
                shape,
            })
        })?;
        QwenGpu::new(cfg.clone(), gpu, w, k)
    }

    /// Random weights with the exact shapes (the ViT's padding zeros), generated on
    /// the GPU: for timing; nothing downloaded.
    pub fn random(cfg: &Qwen25VlConfig, gpu: Gpu, seed: u64) -> Result<QwenGpu> {
        let k = Kernels::load(&gpu)?;
        let s = gpu.stream()?;
        let mut index = 0usize;
        let w = Qwen25VlWeights::build(cfg, |spec: &TensorSpec| {
            let pad = Pad::of(cfg, spec);
            let shape = pad.map_or(spec.shape.clone(), |p| p.padded_shape(spec));
            let n = shape.iter().product::<usize>();
            let zero = pad.map(|p| p.rows());
            let buf = random_buffer(&k, &gpu, &s, n, spec.init, tensor_seed(seed, index), zero)?;
            index += 1;
            Ok(DTensor { buf, shape })
        })?;
        s.synchronize()?;
        QwenGpu::new(cfg.clone(), gpu, w, k)
    }

    /// Weight bytes on the GPU (the ViT's padding included).
    pub fn weight_bytes(&self) -> u64 {
        self.w.tensors().iter().map(|t| t.elems() as u64 * 2).sum()
    }

    /// The decoder's passes.
    pub fn pass(&self) -> DecoderPass<'_> {
        DecoderPass {
            k: &self.k,
            products: &self.products,
            gpu: &self.gpu,
            llm: &self.cfg.llm,
            embed: &self.w.embed,
            layers: &self.w.layers,
            norm: &self.w.norm,
            output: self.w.output(),
            inv_freq: self.rope_inv_freq.ptr,
        }
    }

    /// A KV pool of `blocks` blocks for this decoder.
    pub fn kv_pool(&self, blocks: usize) -> Result<KvPool> {
        KvPool::new(&self.gpu, &self.cfg.llm, blocks)
    }

    fn grid(&self, n: u64) -> u32 {
        grid_for(n, 256, self.gpu.info.sms)
    }

    /// One of the encoder's products on an encode's scratch, at the rows `b` says (the ViT's
    /// padded patch rows, or the merger's padded token rows): its input, weight, output, bias
    /// and residual add, written once for the encode and its warm-up.
    fn encode_product(&self, s: &Stream, b: &EncodeBuffers, p: EncodeProduct) -> Result<()> {
        let w = &self.w;
        let (x, weight, y, bias, accumulate, rows) = match p {
            EncodeProduct::PatchEmbed => (b.patches, &w.patch_embed, b.x, None, false, b.rows),
            EncodeProduct::Qkv(blk) => (b.h, &blk.qkv_w, b.qkv, Some(&blk.qkv_b), false, b.rows),
            EncodeProduct::Proj(blk) => (b.attn, &blk.proj_w, b.x, Some(&blk.proj_b), true, b.rows),
            EncodeProduct::GateUp(blk) => (
                b.h,
                &blk.gate_up_w,
                b.gu,
                Some(&blk.gate_up_b),
                false,
                b.rows,
            ),
            EncodeProduct::Down(blk) => (b.act, &blk.down_w, b.x, Some(&blk.down_b), true, b.rows),
            EncodeProduct::Merger1 => {
                (b.h, &w.merger1_w, b.m1, Some(&w.merger1_b), false, b.merged)
            }
            EncodeProduct::Merger2 => (
                b.m1,
                &w.merger2_w,
                b.m2,
                Some(&w.merger2_b),
                false,
                b.merged,
            ),
        };
        self.products
            .gemm(&self.k, s, x, weight, y, rows, bias, accumulate, false)
    }

    /// The scratch of an encode of `n` patches, each buffer sized for the padded rows its
    /// products run at (`padded_rows`: of the patches for the ViT, of the merged tokens for
    /// the merger, which reads `h` as [merged, 4·dv]).
    fn encode_buffers(&self, n: usize, sc: &mut Scratch) -> Result<EncodeBuffers> {
        let (v, g) = (&self.cfg.vision, &self.gpu);
        let (dv, h, mu) = (v.hidden, v.heads, v.merge_unit());
        let (rows, merged) = (padded_rows(n), padded_rows(n / mu));
        let inter = held_intermediate(&self.cfg);
        Ok(EncodeBuffers {
            rows,
            merged,
            patches: sc.get(g, "q_patches", rows * v.patch_dim() * 2)?,
            x: sc.get(g, "q_x", rows * dv * 2)?,
            h: sc.get(g, "q_h", rows.max(merged * mu) * dv * 2)?,
            qkv: sc.get(g, "q_qkv", rows * 3 * h * VIT_HEAD * 2)?,
            attn: sc.get(g, "q_attn", rows * h * VIT_HEAD * 2)?,
            gu: sc.get(g, "q_gu", rows * 2 * inter * 2)?,
            act: sc.get(g, "q_act", rows * inter * 2)?,
            m1: sc.get(g, "q_m1", merged * v.merged_dim() * 2)?,
            m2: sc.get(g, "q_m2", merged * self.cfg.llm.hidden * 2)?,
        })
    }

    /// Plans and first runs, before serving, of the ViT's and merger's products at every
    /// padded row count an encode of up to `patches` patches meets (see `padded_rows`), on the
    /// scratch such an encode uses. One block's weights stand for all: the blocks share shapes.
    pub fn warm_encode_products(&self, s: &Stream, patches: usize, sc: &mut Scratch) -> Result<()> {
        let mut b = self.encode_buffers(patches, sc)?;
        let blk = &self.w.blocks[0];
        for rows in padded_row_counts(patches) {
            b.rows = rows;
            for p in EncodeProduct::of_block(blk) {
                self.encode_product(s, &b, p)?;
            }
            self.encode_product(s, &b, EncodeProduct::PatchEmbed)?;
        }
        for merged in padded_row_counts(patches / self.cfg.vision.merge_unit()) {
            b.merged = merged;
            self.encode_product(s, &b, EncodeProduct::Merger1)?;
            self.encode_product(s, &b, EncodeProduct::Merger2)?;
        }
        s.synchronize()
    }

    /// ViT + merger over images of these grids, whose pixels ([3, rows·14, cols·14] bf16, the
    /// processor's resized and normalised image) are at `pixels`: their LLM embedding rows,
    /// image after image, each in raster order of its merged grid, into `out` ([Σ tokens, d]).
    pub fn encode(
        &self,
        s: &Stream,
        grids: &[ImageGrid],
        pixels: &[u64],
        out: u64,
        sc: &mut Scratch,
    ) -> Result<()> {
        if grids.len() != pixels.len() || grids.is_empty() {
            return Err(Error::Check(format!(
                "encode: {} grids for {} images",
                grids.len(),
                pixels.len()
            )));
        }
        let c = &self.cfg;
        let v = &c.vision;
        let g = &self.gpu;
        let (dv, hd, h, mu) = (v.hidden, v.head_dim(), v.heads, v.merge_unit());
        // Host side: each patch's (row, col) in window order, the attention segments (whole
        // images; windows) and where each merged row goes back to raster order.
        let mut rc = Vec::new();
        let (mut cu_full, mut cu_win) = (vec![0i32], vec![0i32]);
        let mut back = Vec::new();
        let mut max_window = 0;
        let mut base = Vec::with_capacity(grids.len());
        for &grid in grids {
            let order: Vec<(usize, usize)> = merge_block_order(grid, v.merge).collect();
            let win = windows(c, grid);
            let first = rc.len() / 2;
            base.push(first);
            for &unit in &win.order {
                for &(r, col) in &order[unit * mu..(unit + 1) * mu] {
                    rc.extend([r as i32, col as i32]);
                }
            }
            let t0 = first / mu;
            let mut raster = vec![0i32; win.order.len()];
            for (j, &unit) in win.order.iter().enumerate() {
                raster[unit] = (t0 + j) as i32;
            }
            back.extend(raster);
            for &size in &win.sizes {
                cu_win.push(cu_win[cu_win.len() - 1] + (size * mu) as i32);
                max_window = max_window.max(size * mu);
            }
            cu_full.push(cu_full[cu_full.len() - 1] + grid.patches() as i32);
        }
        let n = rc.len() / 2;
        let tokens = n / mu;
        let max_image = grids.iter().map(|g| g.patches()).max().unwrap_or(0);
        let (d_rc, d_full, d_win, d_back) = (
            upload_i32(g, &rc)?,
            upload_i32(g, &cu_full)?,
            upload_i32(g, &cu_win)?,
            upload_i32(g, &back)?,
        );
        let k = v.patch_dim();
        let (qkv_w, attn_w) = (3 * h * VIT_HEAD, h * VIT_HEAD);
        let inter = held_intermediate(c);
        let b = self.encode_buffers(n, sc)?;
        let (patches, x, hb, qkv, attn, gu, act) =
            (b.patches, b.x, b.h, b.qkv, b.attn, b.gu, b.act);
        for ((&grid, &px), &first) in grids.iter().zip(pixels).zip(&base) {
            let (rows, ch, height, width, p, frames) = (
                grid.patches() as u32,
                v.channels as u32,
                (grid.rows * v.patch) as u32,
                (grid.cols * v.patch) as u32,
                v.patch as u32,
                v.temporal_patch as u32,
            );
            let (rcp, outp) = (
                d_rc.ptr + (first * 2 * 4) as u64,
                patches + (first * k * 2) as u64,
            );
            // SAFETY: qwen_patchify(px, rc, out, n, ch, height, width, p, frames): `px` is the
            // caller's [ch, height, width] bf16 image, rc holds this image's rows·cols (row, col)
            // pairs from `first` on (uploaded above), out its rows of the patches scratch.
            unsafe {
                self.k.get("qwen_patchify").launch(
                    self.grid(grid.patches() as u64 * k as u64),
                    256,
                    s,
                    &mut kargs![px, rcp, outp, rows, ch, height, width, p, frames],
                )
            }?;
        }
        self.encode_product(s, &b, EncodeProduct::PatchEmbed)?;
        let (n32, stride, heads2, head_stride, rot) = (
            n as u32,
            qkv_w as u32,
            (2 * h) as u32,
            VIT_HEAD as u32,
            hd as u32,
        );
        let (heads, k_off, v_off, out_stride) =
            (h as u32, attn_w as u32, (2 * attn_w) as u32, attn_w as u32);
        let (causal, scale, freqs) = (0i32, 1.0f32 / (hd as f32).sqrt(), self.vit_inv_freq.ptr);
        for (bi, blk) in self.w.blocks.iter().enumerate() {
            rmsnorm(&self.k, s, x, &blk.norm1, hb, n, dv, v.eps)?;
            self.encode_product(s, &b, EncodeProduct::Qkv(blk))?;
            let rcp = d_rc.ptr;
            // SAFETY: rope_2d(qkv, rc, inv_freq, n, stride, heads, head_stride, rot): qkv is the
            // [n, stride] scratch, its first 2·h heads (q, k) VIT_HEAD apart; rc n pairs,
            // inv_freq hd / 4 f32 (both uploaded above / at load); hd / 2 is a multiple of 8
            // (checked at load).
            unsafe {
                self.k.get("rope_2d").launch(
                    self.grid((n * 2 * h * hd / 16) as u64),
                    256,
                    s,
                    &mut kargs![qkv, rcp, freqs, n32, stride, heads2, head_stride, rot],
                )
            }?;
            let (cu, segments, longest) = if v.full_attention_blocks.contains(&bi) {
                (d_full.ptr, grids.len(), max_image)
            } else {
                (d_win.ptr, cu_win.len() - 1, max_window)
            };
            // SAFETY: flash_attn_d128(qkv, out, cu, stride, out_stride, heads, kv_heads, k_off,
            // v_off, causal, scale): qkv is [n, 3·h·128], attn [n, h·128] (scratch above), cu
            // holds segments+1 i32 summing to n (uploaded above); the grid covers the longest
            // segment in FLASH_ROWS blocks.
            unsafe {
                self.k.get(flash_attn_kernel(VIT_HEAD)).launch3(
                    (longest.div_ceil(FLASH_ROWS) as u32, heads, segments as u32),
                    128,
                    s,
                    &mut kargs![
                        qkv, attn, cu, stride, out_stride, heads, heads, k_off, v_off, causal,
                        scale
                    ],
                )
            }?;
            self.encode_product(s, &b, EncodeProduct::Proj(blk))?;
            rmsnorm(&self.k, s, x, &blk.norm2, hb, n, dv, v.eps)?;
            self.encode_product(s, &b, EncodeProduct::GateUp(blk))?;
            let inter32 = inter as u32;
            // SAFETY: silu_mul(gu, out, n, inter): gu is [n, 2·inter] and act [n, inter] bf16
            // (scratch above; inter the held width, zero columns past the model's).
            unsafe {
                self.k.get("silu_mul").launch(
                    self.grid((n * inter) as u64),
                    256,
                    s,
                    &mut kargs![gu, act, n32, inter32],
                )
            }?;
            self.encode_product(s, &b, EncodeProduct::Down(blk))?;
        }
        // Merger: a merge block's rows are consecutive, so [n, dv] is [n/4, 4·dv].
        let (dm, d) = (v.merged_dim(), c.llm.hidden);
        rmsnorm(&self.k, s, x, &self.w.merger_norm, hb, n, dv, v.eps)?;
        let (m1, m2) = (b.m1, b.m2);
        self.encode_product(s, &b, EncodeProduct::Merger1)?;
        let nm = (tokens * dm) as u64;
        // SAFETY: gelu_erf(bf16* x, u64 n) in place on m1, sized tokens · 4·dv bf16 above.
        unsafe {
            self.k
                .get("gelu_erf")
                .launch(self.grid(nm), 256, s, &mut kargs![m1, nm])
        }?;
        self.encode_product(s, &b, EncodeProduct::Merger2)?;
        let (t32, d32, backp) = (tokens as u32, d as u32, d_back.ptr);
        // SAFETY: gather_rows(x, idx, out, m, d): m2 is [tokens, d] in window order, back holds
        // tokens i32 (each a row of m2), out the caller's [tokens, d].
        unsafe {
            self.k.get("gather_rows").launch(
                self.grid((tokens * d) as u64),
                256,
                s,
                &mut kargs![m2, backp, out, t32, d32],
            )
        }?;
        // The index arrays above are read by queued work: keep them until it has run.
        s.synchronize()
    }
}

/// Device scratch of one encode (`QwenGpu::encode_buffers`).
struct EncodeBuffers {
    /// Rows the ViT's products run at, and the merger's.
    rows: usize,
    merged: usize,
    patches: u64,
    x: u64,
    h: u64,
    qkv: u64,
    attn: u64,
    gu: u64,
    act: u64,
    m1: u64,
    m2: u64,
}

/// The encoder's products (`QwenGpu::encode_product`): the patch embedding, a ViT block's four,
/// the merger's two.
#[derive(Clone, Copy)]
enum EncodeProduct<'a> {
    PatchEmbed,
    Qkv(&'a VisionBlock<DTensor>),
    Proj(&'a VisionBlock<DTensor>),
    GateUp(&'a VisionBlock<DTensor>),
    Down(&'a VisionBlock<DTensor>),
    Merger1,
    Merger2,
}

impl<'a> EncodeProduct<'a> {
    fn of_block(blk: &'a VisionBlock<DTensor>) -> [EncodeProduct<'a>; 4] {
        [
            EncodeProduct::Qkv(blk),
            EncodeProduct::Proj(blk),
            EncodeProduct::GateUp(blk),
            EncodeProduct::Down(blk),
        ]
    }
}

/// The decoder's inputs of a prefill: positions as M-RoPE's three planes (the buffer holds
/// them; keep it while the pass runs).
pub fn prefill_inputs(
    positions: &[[usize; 3]],
    slots: u64,
    gpu: &Gpu,
) -> Result<(DeviceBuffer, TokenInputs)> {
    let planes: Vec<i32> = (0..3)
        .flat_map(|a| positions.iter().map(move |p| p[a] as i32))
        .collect();
    let buf = upload_i32(gpu, &planes)?;
    let inp = TokenInputs {
        positions: buf.ptr,
        planes: true,
        slots,
    };
    Ok((buf, inp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::model::qwen2_5_vl::tensor_specs;

    #[test]
    fn vit_tensors_are_padded_with_zeros() {
        let c = Qwen25VlConfig::tiny();
        let (h, hd, dv) = (c.vision.heads, c.vision.head_dim(), c.vision.hidden);
        let specs = tensor_specs(&c);
        let find = |n: &str| specs.iter().find(|s| s.name == n).unwrap();
        // qkv: [3·dv, dv] → [3·h·128, dv]; the row of head g, dim j moves to g·128 + j.
        let qkv = find("v0.qkv_w");
        let pad = Pad::of(&c, qkv).unwrap();
        assert_eq!(pad.padded_shape(qkv), vec![3 * h * VIT_HEAD, dv]);
        let v: Vec<f32> = (0..3 * dv * dv).map(|i| (i / dv) as f32 + 1.0).collect();
        let p = pad.pad(&v);
        assert_eq!(p[(VIT_HEAD + 5) * dv], (hd + 5) as f32 + 1.0);
        assert!(p[hd * dv..VIT_HEAD * dv].iter().all(|&x| x == 0.0));
        // proj: [dv, dv] → [dv, h·128]; column g·80 + j moves to g·128 + j.
        let proj = find("v2.proj_w");
        let pad = Pad::of(&c, proj).unwrap();
        assert_eq!(pad.padded_shape(proj), vec![dv, h * VIT_HEAD]);
        let v: Vec<f32> = (0..dv * dv).map(|i| (i % dv) as f32 + 1.0).collect();
        let p = pad.pad(&v);
        let row1 = &p[h * VIT_HEAD..2 * h * VIT_HEAD];
        assert_eq!(row1[VIT_HEAD], hd as f32 + 1.0);
        assert!(row1[hd..VIT_HEAD].iter().all(|&x| x == 0.0));
        // The MLP: the tiny model's 200 → 256, gate and up each; down's columns likewise.
        let (i, ip) = (c.vision.intermediate, held_intermediate(&c));
        assert_eq!((i, ip), (200, 256));
        let gu = find("v1.gate_up_w");
        let pad = Pad::of(&c, gu).unwrap();
        assert_eq!(pad.padded_shape(gu), vec![2 * ip, dv]);
        let v: Vec<f32> = (0..2 * i * dv).map(|x| (x / dv) as f32 + 1.0).collect();
        let p = pad.pad(&v);
        assert_eq!(
            p[ip * dv],
            i as f32 + 1.0,
            "up's first row after gate's padding"
        );
        let down = find("v1.down_w");
        assert_eq!(Pad::of(&c, down).unwrap().padded_shape(down), vec![dv, ip]);
        assert!(Pad::of(&c, find("l0.qkv")).is_none());
        // 7B: 3,420 is held as 3,456.
        let c7 = Qwen25VlConfig::builtin("qwen2.5-vl-7b", None).unwrap();
        assert_eq!(held_intermediate(&c7), 3456);
    }
}
