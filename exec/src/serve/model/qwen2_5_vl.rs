//! Qwen2.5-VL: a window-attention ViT with 2-D rotary positions → a 2×2 patch merger → the
//! Qwen2 decoder (LLaMA with q/k/v biases, GQA) under multimodal rotary positions (M-RoPE).
//!
//! This file is the model *definition*: shapes, weights (generic over where a tensor lives),
//! their checkpoint names, and the processor's geometry (how an image becomes patches, windows
//! and positions). `qwen2_5_vl_cpu` runs it in f32 as the reference.
//!
//! Data flow of one image (7B shapes; transformers 5.24 `modeling_qwen2_5_vl.py`):
//!
//! ```text
//! image [3, H, W]   H, W: smart_resize to multiples of 28 within [min_pixels, max_pixels]
//!   → patches [h·w, 3·2·14·14 = 1176]   h = H/14, w = W/14; in 2×2 merge-block order, the frame
//!                                        repeated over the temporal patch of 2
//!   · patch_embed [1280, 1176]ᵀ          (conv 2×14×14, stride = kernel, no bias)
//!   → rows regrouped into windows of 4×4 merged tokens (8×8 patches = 112 px), 2-D RoPE by
//!     (row, column): the first 20 of a head's 40 frequencies by row, the last 20 by column
//!   → 32 blocks:  x += proj(attn(rope(qkv(rmsnorm(x)))))    16 heads × 80, inside each window;
//!                                                            blocks 7, 15, 23, 31 over the image
//!                 x += down(silu(gate(rmsnorm(x))) · up(rmsnorm(x)))   1280 → 3420 → 1280, biases
//!   → merger: rmsnorm; each merge block's 4 rows as one [5120]; Linear 5120 → 5120, GELU(erf),
//!     Linear 5120 → 3584
//!   → back from window order to raster order: image embedding [h·w/4, 3584]
//! prompt: … <|vision_start|> <|image_pad|> × h·w/4 <|vision_end|> …
//!   → 28 decoder layers (Qwen2): x += o(attn(mrope(qkv(rmsnorm(x)) + bias)))   28 heads × 128, 4 KV
//!                                x += down(silu(gate(rmsnorm(x))) · up(rmsnorm(x)))  3584 → 18944
//!     M-RoPE: of a head's 64 frequencies, 16 turn by a token's temporal position, 24 by its row,
//!     24 by its column; a text token's three positions are its index, an image token's are
//!     (start, start + row, start + column) and the text after an image resumes at
//!     start + max(rows, columns)
//!   → norm → lm_head (3B: tied to the embedding table) → logits
//! ```
//!
//! Fused layouts as for LLaVA: attention projections as one `qkv` (rows `[q; k; v]`, biases
//! likewise), gated MLPs as one `gate_up` (rows `[gate; up]`).

use super::llava::{DecoderLayer, Init, LlmConfig, TensorSpec};
use crate::error::{Error, Result};
use hetsim_sim::catalog::{VisualTokenRule, builtin_model};

/// The vision tower's shapes and the processor's geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenVisionConfig {
    pub depth: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Patch side in pixels (14).
    pub patch: usize,
    /// Frames per patch (2): a still image is repeated to fill it.
    pub temporal_patch: usize,
    /// Side of the block of patches merged into one LLM token (2).
    pub merge: usize,
    /// Window side in pixels (112).
    pub window: usize,
    /// Blocks that attend over the whole image.
    pub full_attention_blocks: Vec<usize>,
    /// The merger's output width: the LLM's hidden size.
    pub out_hidden: usize,
    pub channels: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub eps: f32,
    pub rope_theta: f32,
}

impl QwenVisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
    /// One patch flattened: channels · temporal · patch² (1176).
    pub fn patch_dim(&self) -> usize {
        self.channels * self.temporal_patch * self.patch * self.patch
    }
    /// Patches per LLM token (4).
    pub fn merge_unit(&self) -> usize {
        self.merge * self.merge
    }
    /// The merger's input width (5120).
    pub fn merged_dim(&self) -> usize {
        self.hidden * self.merge_unit()
    }
    /// Window side in merged tokens (4).
    pub fn window_tokens(&self) -> usize {
        self.window / self.merge / self.patch
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Qwen25VlConfig {
    pub name: String,
    pub vision: QwenVisionConfig,
    pub llm: LlmConfig,
    /// lm_head shares the embedding table (3B).
    pub tied: bool,
}

/// An image's patch grid after the processor's resize (one frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGrid {
    pub rows: usize,
    pub cols: usize,
}

impl ImageGrid {
    pub fn patches(&self) -> usize {
        self.rows * self.cols
    }
}

/// The image placeholder in a prompt given to our forward passes: each one stands for the next
/// image's tokens (transformers' prompts repeat `<|image_pad|>` that many times instead).
pub const IMAGE_TOKEN: i32 = -200;

impl Qwen25VlConfig {
    /// A built-in Qwen2.5-VL of the simulator's catalog (its shapes), optionally with another
    /// decoder depth. The constants the catalog does not hold are the published configs'
    /// (`tests/fixtures/hf-configs/qwen2.5-vl-7b-instruct.json`: rms_norm_eps 1e-6, rope_theta
    /// 1e6, mrope_section [16, 24, 24], window_size 112, temporal_patch_size 2; the ViT's RMSNorm
    /// eps 1e-6 and rotary theta 10000 are fixed in transformers' modeling code).
    pub fn builtin(name: &str, layers: Option<usize>) -> Result<Qwen25VlConfig> {
        let known = "qwen2.5-vl-3b, qwen2.5-vl-7b, qwen2.5-vl-32b, qwen2.5-vl-72b";
        let spec = builtin_model(name)
            .filter(|_| name.starts_with("qwen2.5-vl-"))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--model {name}: not a built-in Qwen2.5-VL ({known})"
                ))
            })?;
        let v = spec
            .vision
            .as_ref()
            .ok_or_else(|| Error::Check(format!("{name}: catalog entry has no vision tower")))?;
        let VisualTokenRule::Dynamic {
            patch,
            merge,
            min_pixels,
            max_pixels,
        } = v.tokens
        else {
            return Err(Error::Check(format!(
                "{name}: catalog entry is not dynamic-resolution"
            )));
        };
        let window = v.window.as_ref().ok_or_else(|| {
            Error::Check(format!("{name}: catalog entry has no window attention"))
        })?;
        let l = &spec.llm;
        let layers = match layers {
            Some(0) => return Err(Error::Invalid("--layers must be at least 1".into())),
            Some(n) => n,
            None => l.layers as usize,
        };
        let window_side_patches = (window.window_patches as f64).sqrt() as usize;
        Ok(Qwen25VlConfig {
            name: name.to_string(),
            vision: QwenVisionConfig {
                depth: v.vit.layers as usize,
                hidden: v.vit.hidden as usize,
                heads: v.vit.heads as usize,
                intermediate: v.vit.intermediate as usize,
                patch: patch as usize,
                temporal_patch: 2,
                merge: merge as usize,
                window: window_side_patches * patch as usize,
                full_attention_blocks: window
                    .full_attention_blocks
                    .iter()
                    .map(|&b| b as usize)
                    .collect(),
                out_hidden: l.hidden as usize,
                channels: 3,
                min_pixels: min_pixels as usize,
                max_pixels: max_pixels as usize,
                eps: 1e-6,
                rope_theta: 10_000.0,
            },
            llm: LlmConfig {
                layers,
                hidden: l.hidden as usize,
                heads: l.heads as usize,
                kv_heads: l.kv_heads as usize,
                head_dim: l.head_dim as usize,
                intermediate: l.intermediate as usize,
                vocab: l.vocab as usize,
                eps: 1e-6,
                rope_theta: 1_000_000.0,
                qkv_bias: true,
                mrope: Some([16, 24, 24]),
            },
            tied: l.tied_embeddings,
        })
    }

    /// A tiny Qwen2.5-VL for tests: every path of the real one (windows and full-attention
    /// blocks, GQA, q/k/v biases, M-RoPE sections) with the real head dims (80 in the ViT, 128 in
    /// the decoder), small enough for an f32 CPU forward in well under a second.
    pub fn tiny() -> Qwen25VlConfig {
        Qwen25VlConfig {
            name: "qwen2.5-vl-tiny".into(),
            vision: QwenVisionConfig {
                depth: 3,
                hidden: 160,
                heads: 2,
                intermediate: 192,
                patch: 14,
                temporal_patch: 2,
                merge: 2,
                window: 112,
                full_attention_blocks: vec![1],
                out_hidden: 256,
                channels: 3,
                min_pixels: 56 * 56,
                max_pixels: 28 * 28 * 256,
                eps: 1e-6,
                rope_theta: 10_000.0,
            },
            llm: LlmConfig {
                layers: 2,
                hidden: 256,
                heads: 2,
                kv_heads: 1,
                head_dim: 128,
                intermediate: 384,
                vocab: 1000,
                eps: 1e-6,
                rope_theta: 1_000_000.0,
                qkv_bias: true,
                mrope: Some([16, 24, 24]),
            },
            tied: false,
        }
    }

    /// The patch grid of a `width × height` image after the processor's smart_resize (the same
    /// rule as the simulator's `VisualTokenRule::Dynamic`, which is held to transformers'
    /// processor on seven sizes in `sim/tests/zoo.rs`).
    pub fn grid(&self, width: usize, height: usize) -> Result<ImageGrid> {
        let v = &self.vision;
        let rule = VisualTokenRule::Dynamic {
            patch: v.patch as u64,
            merge: v.merge as u64,
            min_pixels: v.min_pixels as u64,
            max_pixels: v.max_pixels as u64,
        };
        let t = rule
            .tokens(width as u64, height as u64)
            .map_err(|e| Error::Invalid(format!("image {width}×{height}: {e}")))?;
        Ok(ImageGrid {
            rows: t.resized_height as usize / v.patch,
            cols: t.resized_width as usize / v.patch,
        })
    }

    /// LLM tokens of an image of this grid.
    pub fn image_tokens(&self, g: ImageGrid) -> usize {
        g.patches() / self.vision.merge_unit()
    }

    /// Parameters of the weights we hold.
    pub fn params(&self) -> u64 {
        tensor_specs(self)
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum()
    }
}

/// The processor's patches of one resized, normalised image `pixels` ([3, rows·patch,
/// cols·patch]): [patches, patch_dim], patches in merge-block order (each 2×2 block's four
/// patches row by row, blocks row by row), each flattened as the conv kernel is,
/// [channel][frame][y][x], the image repeated in every frame.
pub fn patchify(c: &Qwen25VlConfig, g: ImageGrid, pixels: &[f32]) -> Result<Vec<f32>> {
    let v = &c.vision;
    let (p, m) = (v.patch, v.merge);
    let (height, width) = (g.rows * p, g.cols * p);
    if pixels.len() != v.channels * height * width {
        return Err(Error::Invalid(format!(
            "image has {} values, its {}×{} patch grid takes {}×{height}×{width}",
            pixels.len(),
            g.rows,
            g.cols,
            v.channels
        )));
    }
    if !g.rows.is_multiple_of(m) || !g.cols.is_multiple_of(m) {
        return Err(Error::Invalid(format!(
            "patch grid {}×{} is not a whole number of {m}×{m} merge blocks",
            g.rows, g.cols
        )));
    }
    let k = v.patch_dim();
    let mut out = vec![0f32; g.patches() * k];
    for (i, (r, col)) in merge_block_order(g, m).enumerate() {
        let row = &mut out[i * k..(i + 1) * k];
        for ch in 0..v.channels {
            for t in 0..v.temporal_patch {
                for y in 0..p {
                    for x in 0..p {
                        row[((ch * v.temporal_patch + t) * p + y) * p + x] =
                            pixels[(ch * height + r * p + y) * width + col * p + x];
                    }
                }
            }
        }
    }
    Ok(out)
}

/// (row, column) of every patch in merge-block order: the ViT's 2-D rotary positions.
pub fn merge_block_order(g: ImageGrid, m: usize) -> impl Iterator<Item = (usize, usize)> {
    let (br, bc) = (g.rows / m, g.cols / m);
    (0..br).flat_map(move |bh| {
        (0..bc).flat_map(move |bw| {
            (0..m).flat_map(move |ih| (0..m).map(move |iw| (bh * m + ih, bw * m + iw)))
        })
    })
}

/// How the ViT groups an image's merged tokens into attention windows (transformers'
/// `get_vision_window_index`): windows of `window_tokens`² merged tokens laid over the grid of
/// merged tokens from its top-left corner (the last row and column of windows may be cut
/// short), windows row by row, tokens row by row inside each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// Merged-token index (raster over the merged grid) at each place of the window order.
    pub order: Vec<usize>,
    /// Merged tokens in each window, in order (empty windows left out).
    pub sizes: Vec<usize>,
}

pub fn windows(c: &Qwen25VlConfig, g: ImageGrid) -> Windows {
    let v = &c.vision;
    let (rows, cols) = (g.rows / v.merge, g.cols / v.merge);
    let ws = v.window_tokens();
    let mut order = Vec::with_capacity(rows * cols);
    let mut sizes = Vec::new();
    for wr in 0..rows.div_ceil(ws) {
        for wc in 0..cols.div_ceil(ws) {
            let before = order.len();
            for r in wr * ws..((wr + 1) * ws).min(rows) {
                for col in wc * ws..((wc + 1) * ws).min(cols) {
                    order.push(r * cols + col);
                }
            }
            sizes.push(order.len() - before);
        }
    }
    Windows { order, sizes }
}

/// M-RoPE positions of a prompt (`IMAGE_TOKEN` once per image, `grids` in the same order), as
/// transformers' `get_rope_index` computes them, and the position the next token takes.
pub fn mrope_positions(
    c: &Qwen25VlConfig,
    prompt: &[i32],
    grids: &[ImageGrid],
) -> Result<(Vec<[usize; 3]>, usize)> {
    let m = c.vision.merge;
    let mut out = Vec::new();
    let mut next = 0usize;
    let mut images = grids.iter();
    for &t in prompt {
        if t == IMAGE_TOKEN {
            let g = images.next().ok_or_else(|| {
                Error::Invalid(format!(
                    "prompt has more image tokens than images ({})",
                    grids.len()
                ))
            })?;
            let (rows, cols) = (g.rows / m, g.cols / m);
            for r in 0..rows {
                for col in 0..cols {
                    out.push([next, next + r, next + col]);
                }
            }
            next += rows.max(cols);
        } else {
            out.push([next; 3]);
            next += 1;
        }
    }
    Ok((out, next))
}

/// Weights of one ViT block.
#[derive(Debug)]
pub struct VisionBlock<T> {
    pub norm1: T,     // [dv]
    pub qkv_w: T,     // [3·dv, dv]
    pub qkv_b: T,     // [3·dv]
    pub proj_w: T,    // [dv, dv]
    pub proj_b: T,    // [dv]
    pub norm2: T,     // [dv]
    pub gate_up_w: T, // [2·I_v, dv]   rows: gate_proj, up_proj
    pub gate_up_b: T, // [2·I_v]
    pub down_w: T,    // [dv, I_v]
    pub down_b: T,    // [dv]
}

#[derive(Debug)]
pub struct Qwen25VlWeights<T> {
    pub patch_embed: T, // [dv, 1176]   conv weight [dv, 3, 2, 14, 14] flattened
    pub blocks: Vec<VisionBlock<T>>,
    pub merger_norm: T, // [dv]           merger.ln_q
    pub merger1_w: T,   // [4·dv, 4·dv]
    pub merger1_b: T,   // [4·dv]
    pub merger2_w: T,   // [d, 4·dv]
    pub merger2_b: T,   // [d]
    pub embed: T,       // [V, d]
    pub layers: Vec<DecoderLayer<T>>,
    pub norm: T, // [d]
    /// `None` when tied to `embed`.
    pub lm_head: Option<T>, // [V, d]
}

const V: &str = "model.visual";
const L: &str = "model.language_model";

/// A checkpoint name in the published Qwen2.5-VL layout (`visual.…`, `model.layers.…`) for one
/// in transformers ≥ 5's (`model.visual.…`, `model.language_model.…`), which `tensor_specs` uses.
pub fn published_layout_name(name: &str) -> String {
    if let Some(r) = name.strip_prefix("model.visual.") {
        format!("visual.{r}")
    } else if let Some(r) = name.strip_prefix("model.language_model.") {
        format!("model.{r}")
    } else {
        name.to_string()
    }
}

/// Every tensor of the model, in the order `Qwen25VlWeights::build` takes them.
pub fn tensor_specs(c: &Qwen25VlConfig) -> Vec<TensorSpec> {
    let v = &c.vision;
    let l = &c.llm;
    let (dv, iv, dm, d) = (v.hidden, v.intermediate, v.merged_dim(), l.hidden);
    let lin = |fan_in| Init::Linear { fan_in };
    let bias = Init::Uniform(0.05);
    let gain = Init::Gain;
    let mut out = Vec::new();
    // Our tensor `name`, made of these checkpoint parts stacked by rows.
    let mut push =
        |name: String, shape: Vec<usize>, init: Init, parts: Vec<(String, Vec<usize>)>| {
            out.push(TensorSpec {
                name,
                shape,
                init,
                parts,
            })
        };
    let one = |n: String, s: &[usize]| vec![(n, s.to_vec())];
    push(
        "patch_embed".into(),
        vec![dv, v.patch_dim()],
        lin(v.patch_dim()),
        one(
            format!("{V}.patch_embed.proj.weight"),
            &[dv, v.channels, v.temporal_patch, v.patch, v.patch],
        ),
    );
    for i in 0..v.depth {
        let p = format!("{V}.blocks.{i}");
        let gate_up = |s: &str, shape: &[usize]| {
            ["gate_proj", "up_proj"]
                .iter()
                .map(|x| (format!("{p}.mlp.{x}.{s}"), shape.to_vec()))
                .collect::<Vec<_>>()
        };
        let ts = [
            (
                "norm1",
                vec![dv],
                gain,
                one(format!("{p}.norm1.weight"), &[dv]),
            ),
            (
                "qkv_w",
                vec![3 * dv, dv],
                lin(dv),
                one(format!("{p}.attn.qkv.weight"), &[3 * dv, dv]),
            ),
            (
                "qkv_b",
                vec![3 * dv],
                bias,
                one(format!("{p}.attn.qkv.bias"), &[3 * dv]),
            ),
            (
                "proj_w",
                vec![dv, dv],
                lin(dv),
                one(format!("{p}.attn.proj.weight"), &[dv, dv]),
            ),
            (
                "proj_b",
                vec![dv],
                bias,
                one(format!("{p}.attn.proj.bias"), &[dv]),
            ),
            (
                "norm2",
                vec![dv],
                gain,
                one(format!("{p}.norm2.weight"), &[dv]),
            ),
            (
                "gate_up_w",
                vec![2 * iv, dv],
                lin(dv),
                gate_up("weight", &[iv, dv]),
            ),
            ("gate_up_b", vec![2 * iv], bias, gate_up("bias", &[iv])),
            (
                "down_w",
                vec![dv, iv],
                lin(iv),
                one(format!("{p}.mlp.down_proj.weight"), &[dv, iv]),
            ),
            (
                "down_b",
                vec![dv],
                bias,
                one(format!("{p}.mlp.down_proj.bias"), &[dv]),
            ),
        ];
        for (n, shape, init, parts) in ts {
            push(format!("v{i}.{n}"), shape, init, parts);
        }
    }
    let m = format!("{V}.merger");
    push(
        "merger_norm".into(),
        vec![dv],
        gain,
        one(format!("{m}.ln_q.weight"), &[dv]),
    );
    push(
        "merger1_w".into(),
        vec![dm, dm],
        lin(dm),
        one(format!("{m}.mlp.0.weight"), &[dm, dm]),
    );
    push(
        "merger1_b".into(),
        vec![dm],
        bias,
        one(format!("{m}.mlp.0.bias"), &[dm]),
    );
    push(
        "merger2_w".into(),
        vec![d, dm],
        lin(dm),
        one(format!("{m}.mlp.2.weight"), &[d, dm]),
    );
    push(
        "merger2_b".into(),
        vec![d],
        bias,
        one(format!("{m}.mlp.2.bias"), &[d]),
    );
    push(
        "embed".into(),
        vec![l.vocab, d],
        Init::Uniform(1.0),
        one(format!("{L}.embed_tokens.weight"), &[l.vocab, d]),
    );
    for i in 0..l.layers {
        let p = format!("{L}.layers.{i}");
        let qkv = |s: &str, tail: &[usize]| {
            [
                ("q_proj", l.q_dim()),
                ("k_proj", l.kv_dim()),
                ("v_proj", l.kv_dim()),
            ]
            .iter()
            .map(|(x, rows)| {
                let mut shape = vec![*rows];
                shape.extend(tail);
                (format!("{p}.self_attn.{x}.{s}"), shape)
            })
            .collect::<Vec<_>>()
        };
        let gate_up = ["gate_proj", "up_proj"]
            .iter()
            .map(|x| (format!("{p}.mlp.{x}.weight"), vec![l.intermediate, d]))
            .collect::<Vec<_>>();
        let ts = [
            (
                "attn_norm",
                vec![d],
                gain,
                one(format!("{p}.input_layernorm.weight"), &[d]),
            ),
            ("qkv", vec![l.qkv_dim(), d], lin(d), qkv("weight", &[d])),
            ("qkv_b", vec![l.qkv_dim()], bias, qkv("bias", &[])),
            (
                "o",
                vec![d, l.q_dim()],
                lin(l.q_dim()),
                one(format!("{p}.self_attn.o_proj.weight"), &[d, l.q_dim()]),
            ),
            (
                "mlp_norm",
                vec![d],
                gain,
                one(format!("{p}.post_attention_layernorm.weight"), &[d]),
            ),
            ("gate_up", vec![2 * l.intermediate, d], lin(d), gate_up),
            (
                "down",
                vec![d, l.intermediate],
                lin(l.intermediate),
                one(format!("{p}.mlp.down_proj.weight"), &[d, l.intermediate]),
            ),
        ];
        for (n, shape, init, parts) in ts {
            push(format!("l{i}.{n}"), shape, init, parts);
        }
    }
    push(
        "norm".into(),
        vec![d],
        gain,
        one(format!("{L}.norm.weight"), &[d]),
    );
    if !c.tied {
        push(
            "lm_head".into(),
            vec![l.vocab, d],
            lin(d),
            one("lm_head.weight".into(), &[l.vocab, d]),
        );
    }
    out
}

impl<T> Qwen25VlWeights<T> {
    /// Build the weights from a source of tensors, taken in `tensor_specs` order.
    pub fn build(
        c: &Qwen25VlConfig,
        mut get: impl FnMut(&TensorSpec) -> Result<T>,
    ) -> Result<Self> {
        let specs = tensor_specs(c);
        let mut it = specs.iter();
        let mut next = || -> Result<T> {
            let s = it
                .next()
                .ok_or_else(|| Error::Check("tensor list shorter than the model".into()))?;
            get(s)
        };
        let patch_embed = next()?;
        let mut blocks = Vec::with_capacity(c.vision.depth);
        for _ in 0..c.vision.depth {
            blocks.push(VisionBlock {
                norm1: next()?,
                qkv_w: next()?,
                qkv_b: next()?,
                proj_w: next()?,
                proj_b: next()?,
                norm2: next()?,
                gate_up_w: next()?,
                gate_up_b: next()?,
                down_w: next()?,
                down_b: next()?,
            });
        }
        let merger_norm = next()?;
        let merger1_w = next()?;
        let merger1_b = next()?;
        let merger2_w = next()?;
        let merger2_b = next()?;
        let embed = next()?;
        let mut layers = Vec::with_capacity(c.llm.layers);
        for _ in 0..c.llm.layers {
            layers.push(DecoderLayer {
                attn_norm: next()?,
                qkv: next()?,
                qkv_b: Some(next()?),
                o: next()?,
                mlp_norm: next()?,
                gate_up: next()?,
                down: next()?,
            });
        }
        let norm = next()?;
        let lm_head = if c.tied { None } else { Some(next()?) };
        Ok(Qwen25VlWeights {
            patch_embed,
            blocks,
            merger_norm,
            merger1_w,
            merger1_b,
            merger2_w,
            merger2_b,
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    /// The weights' tensors in `tensor_specs` order.
    pub fn tensors(&self) -> Vec<&T> {
        let mut v = vec![&self.patch_embed];
        for b in &self.blocks {
            v.extend([
                &b.norm1,
                &b.qkv_w,
                &b.qkv_b,
                &b.proj_w,
                &b.proj_b,
                &b.norm2,
                &b.gate_up_w,
                &b.gate_up_b,
                &b.down_w,
                &b.down_b,
            ]);
        }
        v.extend([
            &self.merger_norm,
            &self.merger1_w,
            &self.merger1_b,
            &self.merger2_w,
            &self.merger2_b,
            &self.embed,
        ]);
        for l in &self.layers {
            v.extend(l.tensors());
        }
        v.push(&self.norm);
        v.extend(&self.lm_head);
        v
    }

    /// The output projection: lm_head, or the embedding table where they are tied.
    pub fn output(&self) -> &T {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_7b_and_3b_sizes() {
        // Qwen2.5-VL-7B-Instruct's safetensors index: total_size 16,584,333,312 bytes of bf16
        // = 8,292,166,656 parameters (the model page's "8.29B"); 3B: "3.75B", tied lm_head.
        let c = Qwen25VlConfig::builtin("qwen2.5-vl-7b", None).unwrap();
        assert_eq!(c.params(), 8_292_166_656);
        assert_eq!(
            Qwen25VlConfig::builtin("qwen2.5-vl-3b", None)
                .unwrap()
                .params(),
            3_754_622_976
        );
        assert_eq!(c.vision.head_dim(), 80);
        assert_eq!(c.vision.patch_dim(), 1176);
        assert_eq!(c.vision.window_tokens(), 4);
        assert_eq!(c.vision.full_attention_blocks, vec![7, 15, 23, 31]);
        let c3 = Qwen25VlConfig::builtin("qwen2.5-vl-3b", None).unwrap();
        assert!(c3.tied);
        assert!(!tensor_specs(&c3).iter().any(|s| s.name == "lm_head"));
        for bad in ["llava-1.5-7b", "qwen2.5-vl-9b"] {
            assert_eq!(
                Qwen25VlConfig::builtin(bad, None).unwrap_err().exit_code(),
                2
            );
        }
    }

    #[test]
    fn grid_of_a_1280x720_image() {
        // smart_resize(720, 1280, 28): 728 × 1288 px → 52 × 92 patches → 1,196 LLM tokens.
        let c = Qwen25VlConfig::builtin("qwen2.5-vl-7b", None).unwrap();
        let g = c.grid(1280, 720).unwrap();
        assert_eq!(g, ImageGrid { rows: 52, cols: 92 });
        assert_eq!(c.image_tokens(g), 1196);
    }

    #[test]
    fn windows_cover_every_token_once() {
        // 6 × 10 merged tokens in windows of 4: 2 × 3 windows of 16, 8, 8, 4, 8, 4... row by row.
        let c = Qwen25VlConfig::builtin("qwen2.5-vl-7b", None).unwrap();
        let w = windows(&c, ImageGrid { rows: 12, cols: 20 });
        assert_eq!(w.sizes, vec![16, 16, 8, 8, 8, 4]);
        let mut seen = w.order.clone();
        seen.sort();
        assert_eq!(seen, (0..60).collect::<Vec<_>>());
        // The first window is the top-left 4 × 4 block of the 10-wide grid.
        assert_eq!(&w.order[..5], &[0, 1, 2, 3, 10]);
    }

    #[test]
    fn mrope_positions_of_text_and_an_image() {
        // Two text tokens, a 2 × 3 image (4 × 6 patches), one text token: the image's tokens
        // start at 2, its rows and columns add to the start, the text resumes at 2 + 3.
        let c = Qwen25VlConfig::tiny();
        let (pos, next) = mrope_positions(
            &c,
            &[5, 6, IMAGE_TOKEN, 7],
            &[ImageGrid { rows: 4, cols: 6 }],
        )
        .unwrap();
        assert_eq!(pos.len(), 2 + 6 + 1);
        assert_eq!(pos[2], [2, 2, 2]);
        assert_eq!(pos[4], [2, 2, 4]);
        assert_eq!(pos[5], [2, 3, 2]);
        assert_eq!(pos[8], [5, 5, 5]);
        assert_eq!(next, 6);
        assert_eq!(
            mrope_positions(&c, &[IMAGE_TOKEN], &[])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn patches_are_in_merge_block_order() {
        let c = Qwen25VlConfig::tiny();
        let g = ImageGrid { rows: 2, cols: 4 };
        let (h, w) = (28, 56);
        // Pixel value = its column's patch index: patch (r, col) holds 10·r + col everywhere.
        let px: Vec<f32> = (0..3 * h * w)
            .map(|i| {
                let (y, x) = ((i / w) % h, i % w);
                (10 * (y / 14) + x / 14) as f32
            })
            .collect();
        let p = patchify(&c, g, &px).unwrap();
        let k = c.vision.patch_dim();
        let firsts: Vec<f32> = p.chunks(k).map(|r| r[0]).collect();
        assert_eq!(firsts, vec![0.0, 1.0, 10.0, 11.0, 2.0, 3.0, 12.0, 13.0]);
        assert!(patchify(&c, g, &px[1..]).is_err());
    }
}
