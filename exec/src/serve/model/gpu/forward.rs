//! The forward pass: the model on one GPU (weights, kernels, product plans) and the three
//! passes the engine runs — vision tower + projector (`encode`), token embedding with image rows
//! spliced in (`embed`), the decoder over packed prompts or one token per sequence (`decoder`),
//! and the logits of chosen rows (`logits`). Every function only *queues* work on a stream;
//! nothing synchronises, so the decode step can be captured into a CUDA graph.
//!
//! Inputs and outputs are device addresses (`u64`) of the shapes each function's comment gives;
//! the functions cannot check them, and the `SAFETY` notes at their launches rely on them. They
//! are the engine's and the selftest's to get right (both size them from the same config).

use super::kernels::{
    FLASH_ROWS, Kernels, NormLaunch, check_decode_group, decode_launch, flash_attn_kernel,
};
use super::kv_pool::KvPool;
use super::products::Products;
use super::scratch::Scratch;
use super::tensor::{DTensor, upload_bf16, upload_f64};
use crate::cuda::device::{DeviceBuffer, Gpu, Stream};
use crate::cuda::gemm::Epilogue;
use crate::cuda::kernels::grid_for;
use crate::error::{Error, Result};
use crate::kargs;
use crate::serve::model::cpu;
use crate::serve::model::host::{Checkpoint, HostWeights, flatten, tensor_seed};
use crate::serve::model::llava::{
    DecoderLayer, Init, LlavaConfig, LlavaWeights, LlmConfig, TensorSpec, new_layout_name,
};
use std::path::Path;

/// Device addresses of a decoder pass's scratch (0: not used by this kind of pass).
#[derive(Default)]
struct DecoderBuffers {
    h: u64,
    qkv: u64,
    attn: u64,
    gu: u64,
    act: u64,
    part_o: u64,
    part_ml: u64,
    done: u64,
}

/// How the decoder's attention sees its context.
pub enum Attn {
    /// Prompts packed back to back with no padding; no earlier context.
    Prefill {
        cu_seqlens: u64,
        seqs: usize,
        max_len: usize,
    },
    /// One new token per sequence; K/V through block tables ([batch, max_blocks] i32) and
    /// context lengths (i32, including the new token; 0 = padding row).
    Decode {
        tables: u64,
        ctx: u64,
        max_blocks: usize,
    },
}

/// Per-token inputs of a decoder pass (device i32 arrays of length n).
pub struct TokenInputs {
    /// i32 positions: one per token, or (M-RoPE, `planes`) three planes of n: temporal, row,
    /// column.
    pub positions: u64,
    pub planes: bool,
    /// block·16 + slot for each token's K/V; −1 skips (padding)
    pub slots: u64,
}

pub struct GpuModel {
    pub cfg: LlavaConfig,
    pub w: LlavaWeights<DTensor>,
    pub k: Kernels,
    pub products: Products,
    /// The decoder's rotary frequencies (f64 [head_dim / 2], `cpu::rope_inv_freq`).
    rope_inv_freq: DeviceBuffer,
    pub gpu: Gpu,
}

impl GpuModel {
    fn new(cfg: LlavaConfig, gpu: Gpu, w: LlavaWeights<DTensor>, k: Kernels) -> Result<GpuModel> {
        check_decode_group(&cfg.name, cfg.llm.heads, cfg.llm.kv_heads)?;
        if cfg.llm.head_dim != 128 {
            return Err(Error::Invalid(format!(
                "decoder head_dim {} : the engine's decode attention is built for 128",
                cfg.llm.head_dim
            )));
        }
        if cfg.vision.head_dim() != 64 && cfg.vision.head_dim() != 128 {
            return Err(Error::Invalid(format!(
                "vision head_dim {}: the attention kernel is built for 64 or 128",
                cfg.vision.head_dim()
            )));
        }
        let products = Products::new(&gpu, &k)?;
        let rope_inv_freq = upload_f64(
            &gpu,
            &cpu::rope_inv_freq(cfg.llm.head_dim, cfg.llm.rope_theta),
        )?;
        Ok(GpuModel {
            cfg,
            w,
            k,
            products,
            rope_inv_freq,
            gpu,
        })
    }

    /// Random weights with the exact shapes, generated on the GPU (seeded; nothing downloaded).
    pub fn random(cfg: &LlavaConfig, gpu: Gpu, seed: u64) -> Result<GpuModel> {
        let k = Kernels::load(&gpu)?;
        let s = gpu.stream()?;
        let mut index = 0usize;
        let w = LlavaWeights::build(cfg, |spec: &TensorSpec| {
            let n = spec.shape.iter().product::<usize>();
            let zero = spec
                .padded_cols()
                .map(|(used, held)| (spec.shape[0], used, held));
            let buf = random_buffer(&k, &gpu, &s, n, spec.init, tensor_seed(seed, index), zero)?;
            index += 1;
            Ok(DTensor {
                buf,
                shape: spec.shape.clone(),
            })
        })?;
        s.synchronize()?;
        GpuModel::new(cfg.clone(), gpu, w, k)
    }

    /// Upload host weights (f32, rounded to bf16).
    pub fn from_host(cfg: &LlavaConfig, gpu: Gpu, hw: &HostWeights) -> Result<GpuModel> {
        let k = Kernels::load(&gpu)?;
        let flat = flatten(hw);
        let mut it = flat.into_iter();
        let w = LlavaWeights::build(cfg, |spec| {
            let v = it
                .next()
                .ok_or_else(|| Error::Check("host weights shorter than the model".into()))?;
            Ok(DTensor {
                buf: upload_bf16(&gpu, v)?,
                shape: spec.shape.clone(),
            })
        })?;
        GpuModel::new(cfg.clone(), gpu, w, k)
    }

    /// Load a safetensors checkpoint (file or folder) straight to the GPU, one tensor at a time.
    pub fn load(cfg: &LlavaConfig, gpu: Gpu, path: &Path) -> Result<GpuModel> {
        let k = Kernels::load(&gpu)?;
        let ck = Checkpoint::open(path)?;
        let w = LlavaWeights::build(cfg, |spec| {
            let v = ck.read_spec(spec, new_layout_name)?;
            Ok(DTensor {
                buf: upload_bf16(&gpu, &v)?,
                shape: spec.shape.clone(),
            })
        })?;
        GpuModel::new(cfg.clone(), gpu, w, k)
    }

    pub fn weight_bytes(&self) -> u64 {
        flatten(&self.w).iter().map(|t| t.elems() as u64 * 2).sum()
    }

    fn grid(&self, n: u64) -> u32 {
        grid_for(n, 256, self.gpu.info.sms)
    }

    /// Vision tower + projector: pixels [images, 3, S, S] bf16 → embeddings [images·np, d] bf16.
    pub fn encode(
        &self,
        s: &Stream,
        pixels: u64,
        images: usize,
        out: u64,
        sc: &mut Scratch,
    ) -> Result<()> {
        let v = &self.cfg.vision;
        let g = &self.gpu;
        let (dv, np, npos) = (v.hidden, v.patches(), v.positions());
        let rows = images * npos;
        let kp = v.patch_dim_padded();
        let patches = sc.get(g, "v_patches", images * np * kp * 2)?;
        let pe = sc.get(g, "v_pe", images * np * dv * 2)?;
        let x = sc.get(g, "v_x", rows * dv * 2)?;
        let h = sc.get(g, "v_h", rows * dv * 2)?;
        let qkv = sc.get(g, "v_qkv", rows * 3 * dv * 2)?;
        let attn = sc.get(g, "v_attn", rows * dv * 2)?;
        let f = sc.get(g, "v_f", rows * v.intermediate * 2)?;
        let cu: Vec<i32> = (0..=images).map(|i| (i * npos) as i32).collect();
        let cu_key = sc.get(g, "v_cu", cu.len() * 4)?;
        let cu_raw: Vec<u8> = cu.iter().flat_map(|x| x.to_le_bytes()).collect();
        crate::cuda::device::ck!(
            cudarc::driver::sys::cuMemcpyHtoDAsync_v2(
                cu_key,
                cu_raw.as_ptr() as *const std::ffi::c_void,
                cu_raw.len(),
                s.raw
            ),
            "cuMemcpyHtoDAsync(cu_seqlens)"
        )?;
        // The copy reads host memory that must live until it is done.
        s.synchronize()?;
        let (im, ch, size, p, kp32) = (
            images as u32,
            v.channels as u32,
            v.image_size as u32,
            v.patch as u32,
            kp as u32,
        );
        // SAFETY: im2col(px, out, images, ch, size, p, kp): `pixels` holds [images, ch, size, size]
        // bf16 (the caller's contract) and `patches` was sized images·np·kp bf16 above.
        unsafe {
            self.k.get("im2col").launch(
                self.grid((images * np * kp) as u64),
                256,
                s,
                &mut kargs![pixels, patches, im, ch, size, p, kp32],
            )
        }?;
        self.gemm(
            s,
            patches,
            &self.w.patch_embed,
            pe,
            images * np,
            None,
            false,
            false,
        )?;
        let (np32, dv32) = (np as u32, dv as u32);
        let (cls, pos) = (self.w.class_embed.ptr(), self.w.pos_embed.ptr());
        // SAFETY: clip_embed(patch_out, cls, pos, out, images, np, d): pe is [images·np, dv], h is
        // [images·(np+1), dv] (sized above), cls and pos are the model's [dv] and [np+1, dv]
        // weights.
        unsafe {
            self.k.get("clip_embed").launch(
                self.grid((rows * dv) as u64),
                256,
                s,
                &mut kargs![pe, cls, pos, h, im, np32, dv32],
            )
        }?;
        self.layernorm(s, h, &self.w.pre_ln_w, &self.w.pre_ln_b, x, rows, dv)?;
        let hd = v.head_dim();
        let attn_k = flash_attn_kernel(hd);
        for l in &self.w.vision {
            self.layernorm(s, x, &l.ln1_w, &l.ln1_b, h, rows, dv)?;
            self.gemm(s, h, &l.qkv_w, qkv, rows, Some(&l.qkv_b), false, false)?;
            let (stride, heads, k_off, v_off) =
                ((3 * dv) as u32, v.heads as u32, dv as u32, (2 * dv) as u32);
            let (causal, scale) = (0i32, 1.0f32 / (hd as f32).sqrt());
            // SAFETY: flash_attn_d64/d128(qkv, out, cu, stride, out_stride, heads, kv_heads, k_off,
            // v_off, causal, scale): qkv is [rows, 3·dv], attn [rows, dv], cu holds images+1 i32
            // (copied above); the grid covers npos rows per image in FLASH_ROWS blocks.
            unsafe {
                self.k.get(attn_k).launch3(
                    (npos.div_ceil(FLASH_ROWS) as u32, heads, im),
                    128,
                    s,
                    &mut kargs![
                        qkv, attn, cu_key, stride, dv32, heads, heads, k_off, v_off, causal, scale
                    ],
                )
            }?;
            self.gemm(s, attn, &l.o_w, x, rows, Some(&l.o_b), true, false)?;
            self.layernorm(s, x, &l.ln2_w, &l.ln2_b, h, rows, dv)?;
            self.gemm(s, h, &l.fc1_w, f, rows, Some(&l.fc1_b), false, false)?;
            let nf = (rows * v.intermediate) as u64;
            // SAFETY: quick_gelu(bf16* x, u64 n) in place on f, which was sized rows × intermediate
            // bf16 above.
            unsafe {
                self.k
                    .get("quick_gelu")
                    .launch(self.grid(nf), 256, s, &mut kargs![f, nf])
            }?;
            self.gemm(s, f, &l.fc2_w, x, rows, Some(&l.fc2_b), true, false)?;
        }
        // SAFETY: drop_cls(x, out, images, np, d): x is [images·(np+1), dv], h at least [images·np,
        // dv] (both sized above for rows = images·(np+1)).
        unsafe {
            self.k.get("drop_cls").launch(
                self.grid((images * np * dv) as u64),
                256,
                s,
                &mut kargs![x, h, im, np32, dv32],
            )
        }?;
        let d = self.cfg.llm.hidden;
        let p1 = sc.get(g, "v_p1", images * np * d * 2)?;
        self.gemm(
            s,
            h,
            &self.w.proj1_w,
            p1,
            images * np,
            Some(&self.w.proj1_b),
            false,
            false,
        )?;
        let n1 = (images * np * d) as u64;
        // SAFETY: gelu_erf(bf16* x, u64 n) in place on p1, sized images·np·d bf16 above.
        unsafe {
            self.k
                .get("gelu_erf")
                .launch(self.grid(n1), 256, s, &mut kargs![p1, n1])
        }?;
        self.gemm(
            s,
            p1,
            &self.w.proj2_w,
            out,
            images * np,
            Some(&self.w.proj2_b),
            false,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn layernorm(
        &self,
        s: &Stream,
        x: u64,
        w: &DTensor,
        b: &DTensor,
        y: u64,
        rows: usize,
        d: usize,
    ) -> Result<()> {
        let (wp, bp, d32, eps) = (w.ptr(), b.ptr(), d as u32, self.cfg.vision.eps);
        let (r32, nl) = (rows as u32, NormLaunch::new(rows, d));
        let group = nl.group;
        // SAFETY: layernorm(x, w, b, y, rows, d, eps, group): x and y hold rows × d bf16 (the
        // callers' scratch), w and b are [d] weights; the launch shape is NormLaunch's for (rows,
        // d).
        unsafe {
            self.k.get("layernorm").launch(
                nl.grid,
                nl.block,
                s,
                &mut kargs![x, wp, bp, y, r32, d32, eps, group],
            )
        }
    }

    /// The decoder's passes over this model's layers.
    pub fn pass(&self) -> DecoderPass<'_> {
        DecoderPass {
            k: &self.k,
            products: &self.products,
            gpu: &self.gpu,
            llm: &self.cfg.llm,
            embed: &self.w.embed,
            layers: &self.w.layers,
            norm: &self.w.norm,
            output: &self.w.lm_head,
            inv_freq: self.rope_inv_freq.ptr,
        }
    }
}

/// A decoder's passes (LLaVA's Vicuna, Qwen2): the layers, final norm and output projection of
/// one model, with the kernels and products they run on. Each only queues work (see the top).
pub struct DecoderPass<'a> {
    pub k: &'a Kernels,
    pub products: &'a Products,
    pub gpu: &'a Gpu,
    pub llm: &'a LlmConfig,
    pub embed: &'a DTensor,
    pub layers: &'a [DecoderLayer<DTensor>],
    pub norm: &'a DTensor,
    /// lm_head, or the embedding table where a model ties them.
    pub output: &'a DTensor,
    /// The rotary frequencies (f64 [head_dim / 2], `cpu::rope_inv_freq`).
    pub inv_freq: u64,
}

impl DecoderPass<'_> {
    fn grid(&self, n: u64) -> u32 {
        grid_for(n, 256, self.gpu.info.sms)
    }

    /// Bytes of the decoder's weights a decode step reads: every layer's, the final norm and
    /// the output projection (the embedding table only in the rows it gathers, ignored).
    pub fn weight_bytes(&self) -> u64 {
        let layers: usize = self
            .layers
            .iter()
            .flat_map(|l| l.tensors())
            .map(|t| t.elems())
            .sum();
        ((layers + self.norm.elems() + self.output.elems()) * 2) as u64
    }

    /// Plans for every product of a decode step of `m` rows (`Products::tune`).
    pub fn tune_decode_plans(&self, s: &Stream, m: usize) -> Result<()> {
        let weights = decode_products(self.layers, self.output);
        self.products.tune(self.gpu, self.k, s, m, weights)
    }

    /// Input rows: token embeddings with image rows spliced in (i32 arrays of length n; an
    /// image row index ≥ 0 replaces the token).
    pub fn embed(
        &self,
        s: &Stream,
        tokens: u64,
        img_rows: u64,
        images: u64,
        out: u64,
        n: usize,
    ) -> Result<()> {
        let dv = (self.llm.hidden / 8) as u32;
        let (table, n32) = (self.embed.ptr(), n as u32);
        // SAFETY: embed_splice(tokens, img_row, table, img, out, n, dv): tokens and img_row hold n
        // i32, out n × hidden bf16, images the rows img_row names (the caller's contract); table is
        // the [vocab, hidden] embedding.
        unsafe {
            self.k.get("embed_splice").launch(
                self.grid(n as u64 * dv as u64),
                256,
                s,
                &mut kargs![tokens, img_rows, table, images, out, n32, dv],
            )
        }
    }

    /// Reserves the scratch of a decode step of up to n rows, so that steps of n or fewer
    /// (and graphs captured from them) never allocate.
    pub fn decoder_scratch(
        &self,
        sc: &mut Scratch,
        n: usize,
        max_parts: usize,
        s: &Stream,
    ) -> Result<()> {
        self.decoder_buffers(sc, n, max_parts, true, s).map(|_| ())
    }

    fn decoder_buffers(
        &self,
        sc: &mut Scratch,
        n: usize,
        max_parts: usize,
        decode: bool,
        s: &Stream,
    ) -> Result<DecoderBuffers> {
        let l = self.llm;
        let g = self.gpu;
        let mut b = DecoderBuffers {
            h: sc.get(g, "d_h", n * l.hidden * 2)?,
            qkv: sc.get(g, "d_qkv", n * l.qkv_dim() * 2)?,
            attn: sc.get(g, "d_attn", n * l.q_dim() * 2)?,
            gu: sc.get(g, "d_gu", n * 2 * l.intermediate * 2)?,
            act: sc.get(g, "d_act", n * l.intermediate * 2)?,
            ..DecoderBuffers::default()
        };
        // Partial results of split decode attention and the count of each (sequence, head)'s
        // finished partitions (not used by prefill, which must not grow them: decode graphs
        // hold their addresses).
        if decode {
            let parts = n * l.heads * max_parts.max(1);
            b.part_o = sc.get(g, "d_po", parts * 128 * 4)?;
            b.part_ml = sc.get(g, "d_pml", parts * 2 * 4)?;
            b.done = sc.get_zeroed(g, "d_done", n * l.heads * 4, s)?;
        }
        Ok(b)
    }

    /// The decoder over n tokens whose input rows are in `x` ([n, d], updated in place: the
    /// residual stream). K/V of every token go to the pool.
    #[allow(clippy::too_many_arguments)]
    pub fn decoder(
        &self,
        s: &Stream,
        x: u64,
        n: usize,
        inp: &TokenInputs,
        attn_kind: &Attn,
        pool: &KvPool,
        sc: &mut Scratch,
        max_parts: usize,
    ) -> Result<()> {
        let l = self.llm;
        let decode = matches!(attn_kind, Attn::Decode { .. });
        let DecoderBuffers {
            h,
            qkv,
            attn,
            gu,
            act,
            part_o: po,
            part_ml: pml,
            done,
        } = self.decoder_buffers(sc, n, max_parts, decode, s)?;
        let (n32, stride, hd) = (n as u32, l.qkv_dim() as u32, l.head_dim as u32);
        let (heads, kvh) = (l.heads as u32, l.kv_heads as u32);
        let (rot, freqs) = (l.heads + l.kv_heads, self.inv_freq);
        let k_off = l.q_dim() as u32;
        let v_off = (l.q_dim() + l.kv_dim()) as u32;
        let pos = inp.positions;
        let slots = inp.slots;
        let plane = if inp.planes { n32 } else { 0 };
        let [sec0, sec1, _] = l.mrope.unwrap_or([l.head_dim / 2, 0, 0]).map(|x| x as u32);
        let scale = 1.0f32 / (l.head_dim as f32).sqrt();
        for (li, lw) in self.layers.iter().enumerate() {
            rmsnorm(self.k, s, x, &lw.attn_norm, h, n, l.hidden, l.eps)?;
            self.products.gemm(
                self.k,
                s,
                h,
                &lw.qkv,
                qkv,
                n,
                lw.qkv_b.as_ref(),
                false,
                false,
            )?;
            let layer = pool.layer(li);
            // SAFETY: rope_kv_append(qkv, pos, slots, pool, inv_freq, n, stride, heads, kv_heads,
            // head_dim, plane, sec0, sec1): qkv is the [n, qkv_dim] scratch above, pos (n or 3·n
            // with planes) and slots n i32 (the caller's TokenInputs), `layer` one layer of
            // `pool`, whose slots the block tables name; inv_freq is [head_dim / 2] f64.
            unsafe {
                self.k.get("rope_kv_append").launch(
                    self.grid((n * (rot * l.head_dim / 16 + l.kv_heads * l.head_dim / 8)) as u64),
                    256,
                    s,
                    &mut kargs![
                        qkv, pos, slots, layer, freqs, n32, stride, heads, kvh, hd, plane, sec0,
                        sec1
                    ],
                )
            }?;
            match attn_kind {
                Attn::Prefill {
                    cu_seqlens,
                    seqs,
                    max_len,
                } => {
                    let (cu, causal, qd) = (*cu_seqlens, 1i32, l.q_dim() as u32);
                    // SAFETY: flash_attn(qkv, out, cu, stride, out_stride, heads, kv_heads, k_off,
                    // v_off, causal, scale): qkv is [n, qkv_dim] and attn [n, q_dim] (scratch
                    // above), cu holds seqs+1 i32 summing to n (the caller's Attn::Prefill); the
                    // grid covers max_len rows per sequence.
                    unsafe {
                        self.k.get(flash_attn_kernel(l.head_dim)).launch3(
                            (max_len.div_ceil(FLASH_ROWS) as u32, heads, *seqs as u32),
                            128,
                            s,
                            &mut kargs![
                                qkv, attn, cu, stride, qd, heads, kvh, k_off, v_off, causal, scale
                            ],
                        )
                    }?;
                }
                Attn::Decode {
                    tables,
                    ctx,
                    max_blocks,
                } => {
                    let (t, c, mb, mp) = (*tables, *ctx, *max_blocks as u32, max_parts as u32);
                    // The partial results keep the stride of the shortest partition.
                    let dl =
                        decode_launch(n, l.heads, l.kv_heads, max_parts, self.k.decode_gqa_slots);
                    let kernel = self.k.get(dl.kernel);
                    let (launched, head_blocks) =
                        (dl.partitions as u32, (l.heads / dl.heads_per_block) as u32);
                    let (part, qd, wave) = (dl.part as u32, l.q_dim() as u32, dl.wave);
                    // SAFETY: decode_attn_short / _g1 / _gqa (DECODE_ATTN_ARGS) in
                    // kernels/llava.cu, in order and type, heads / kv_heads ≤ DECODE_GROUP_MAX
                    // (checked at load); no partition index reaches max_parts; po / pml /
                    // done were sized for n × heads × max_parts (decoder_buffers), tables and ctx
                    // hold n × max_blocks and n i32 (the caller's Attn::Decode), `layer` is one
                    // layer of `pool`. A block per (G query heads, sequence, partition).
                    unsafe {
                        kernel.launch3(
                            (head_blocks, n32, launched),
                            128,
                            s,
                            &mut kargs![
                                qkv, t, c, layer, po, pml, done, attn, stride, heads, kvh, mb, mp,
                                part, qd, scale, wave
                            ],
                        )
                    }?;
                }
            }
            self.products
                .gemm(self.k, s, attn, &lw.o, x, n, None, true, false)?;
            rmsnorm(self.k, s, x, &lw.mlp_norm, h, n, l.hidden, l.eps)?;
            self.products
                .gemm(self.k, s, h, &lw.gate_up, gu, n, None, false, false)?;
            let inter = l.intermediate as u32;
            // SAFETY: silu_mul(gu, out, n, inter): gu is [n, 2·intermediate] and act [n,
            // intermediate] bf16, both sized in decoder_buffers.
            unsafe {
                self.k.get("silu_mul").launch(
                    self.grid((n * l.intermediate) as u64),
                    256,
                    s,
                    &mut kargs![gu, act, n32, inter],
                )
            }?;
            self.products
                .gemm(self.k, s, act, &lw.down, x, n, None, true, false)?;
        }
        Ok(())
    }

    /// Logits (f32 [m, vocab]) of rows `rows` (i32 [m]) of the residual stream x, and their
    /// argmax (i32 [m]).
    #[allow(clippy::too_many_arguments)]
    pub fn logits(
        &self,
        s: &Stream,
        x: u64,
        rows: u64,
        m: usize,
        logits: u64,
        argmax: u64,
        sc: &mut Scratch,
    ) -> Result<()> {
        let (d, l) = (self.llm.hidden, self.llm);
        let sel = sc.get(self.gpu, "l_sel", m * d * 2)?;
        let hn = sc.get(self.gpu, "l_norm", m * d * 2)?;
        let (m32, d32) = (m as u32, d as u32);
        // SAFETY: gather_rows(x, idx, out, m, d): x is the caller's [≥ max idx + 1, d] residual
        // stream, rows holds m i32, sel was sized m × d bf16 above.
        unsafe {
            self.k.get("gather_rows").launch(
                self.grid((m * d) as u64),
                256,
                s,
                &mut kargs![x, rows, sel, m32, d32],
            )
        }?;
        rmsnorm(self.k, s, sel, self.norm, hn, m, d, l.eps)?;
        self.products
            .gemm(self.k, s, hn, self.output, logits, m, None, false, true)?;
        let v = l.vocab as u32;
        // SAFETY: argmax_rows(const float* x, int* out, u32 n), one block of up to 32 warps per
        // row: logits holds m × vocab f32 and argmax m i32 (the caller's contract).
        unsafe {
            self.k
                .get("argmax_rows")
                .launch(m32, 1024, s, &mut kargs![logits, argmax, v])
        }
    }
}

/// `n` bf16 drawn as `host::random_tensor` draws them (`fill_uniform`), and in `zero` =
/// (rows, used, held) columns `used..held` of each of `rows` rows zeroed (padding: it meets
/// zero inputs, but NaN·0 is NaN). Queued on `s`; the caller synchronises before use.
pub fn random_buffer(
    k: &Kernels,
    gpu: &Gpu,
    s: &Stream,
    n: usize,
    init: Init,
    seed: u64,
    zero: Option<(usize, usize, usize)>,
) -> Result<DeviceBuffer> {
    let buf = gpu.alloc(n * 2)?;
    let (scale, offset) = init.scale_offset();
    let (p, n64) = (buf.ptr, n as u64);
    // SAFETY: fill_uniform(bf16* p, u64 n, u64 seed, float scale, float offset); `buf` holds
    // the n bf16 and is returned to the caller, who synchronises `s` before reading it.
    unsafe {
        k.get("fill_uniform").launch(
            grid_for(n64, 256, gpu.info.sms),
            256,
            s,
            &mut kargs![p, n64, seed, scale, offset],
        )
    }?;
    if let Some((rows, used, held)) = zero {
        let (rows, used, held) = (rows as u64, used as u32, held as u32);
        // SAFETY: zero_cols(bf16* p, u64 rows, u32 k, u32 kp): `buf` is rows × held bf16 (the
        // caller's contract: n = rows · held).
        unsafe {
            k.get("zero_cols").launch(
                grid_for(rows * (held - used) as u64, 256, gpu.info.sms),
                256,
                s,
                &mut kargs![p, rows, used, held],
            )
        }?;
    }
    Ok(buf)
}

/// RMSNorm of `rows` rows of `d` values: y = x / rms(x) · w.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm(
    k: &Kernels,
    s: &Stream,
    x: u64,
    w: &DTensor,
    y: u64,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let (wp, d32) = (w.ptr(), d as u32);
    let (r32, nl) = (rows as u32, NormLaunch::new(rows, d));
    let group = nl.group;
    // SAFETY: rmsnorm(x, w, y, rows, d, eps, group): x and y hold rows × d bf16 (the callers'
    // scratch), w is a [d] weight; the launch shape is NormLaunch's for (rows, d).
    unsafe {
        k.get("rmsnorm").launch(
            nl.grid,
            nl.block,
            s,
            &mut kargs![x, wp, y, r32, d32, eps, group],
        )
    }
}

impl GpuModel {
    /// Y[m, n] (= or +=) X[m, k] · W[n, k]ᵀ (+ bias): `Products::gemm` with this model's kernels.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        s: &Stream,
        x: u64,
        w: &DTensor,
        y: u64,
        m: usize,
        bias: Option<&DTensor>,
        accumulate: bool,
        out_f32: bool,
    ) -> Result<()> {
        self.products
            .gemm(&self.k, s, x, w, y, m, bias, accumulate, out_f32)
    }

    /// Plans for every product of a decode step of `m` rows (`Products::tune`).
    pub fn tune_decode_plans(&self, s: &Stream, m: usize) -> Result<()> {
        self.pass().tune_decode_plans(s, m)
    }
}

/// The products of a decode step: one layer's (every layer has the same shapes) and the output
/// projection, each with its epilogue.
pub fn decode_products<'a>(
    layers: &'a [DecoderLayer<DTensor>],
    output: &'a DTensor,
) -> Vec<(&'a DTensor, Epilogue)> {
    let Some(l) = layers.first() else {
        return Vec::new();
    };
    let plain = Epilogue::default();
    let acc = Epilogue {
        accumulate: true,
        ..plain
    };
    let f32o = Epilogue {
        out_f32: true,
        ..plain
    };
    let qkv = Epilogue {
        bias: l.qkv_b.is_some(),
        ..plain
    };
    vec![
        (&l.qkv, qkv),
        (&l.o, acc),
        (&l.gate_up, plain),
        (&l.down, acc),
        (output, f32o),
    ]
}
