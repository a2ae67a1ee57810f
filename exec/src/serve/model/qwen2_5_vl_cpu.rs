//! The CPU reference of `model::qwen2_5_vl`: a plain f32 forward, written for clarity, not
//! speed. It is held to transformers' `Qwen2_5_VLForConditionalGeneration` on the same weights
//! in CI (`tests/qwen2_5_vl_transformers.rs`, outputs recorded by
//! `tests/fixtures/qwen2_5_vl/reference.py`).

use super::cpu::{
    CpuKv, Decoder, add_into, argmax, attend, columns, gelu_erf, linear, rms_norm, rope_inv_freq,
    swiglu,
};
use super::host::{Checkpoint, mix64, random_tensor, round_bf16, uniform, write_tensors};
use super::qwen2_5_vl::{
    IMAGE_TOKEN, ImageGrid, Qwen25VlConfig, Qwen25VlWeights, merge_block_order, mrope_positions,
    patchify, published_layout_name, tensor_specs, windows,
};
use crate::error::{Error, Result, io_err};
use std::path::Path;

pub type HostWeights = Qwen25VlWeights<Vec<f32>>;

/// One resized, normalised image: its patch grid and pixels [3, rows·14, cols·14].
pub struct Image {
    pub grid: ImageGrid,
    pub pixels: Vec<f32>,
}

/// Vision tower + merger over one image: its LLM embedding rows, [tokens, d], in raster order
/// of the merged grid.
pub fn encode_image(c: &Qwen25VlConfig, w: &HostWeights, img: &Image) -> Result<Vec<f32>> {
    let v = &c.vision;
    let (dv, hd, mu) = (v.hidden, v.head_dim(), v.merge_unit());
    let g = img.grid;
    let n = g.patches();
    let patches = patchify(c, g, &img.pixels)?;
    let x = linear(&patches, &w.patch_embed, None, n, dv, v.patch_dim());
    let pos: Vec<(usize, usize)> = merge_block_order(g, v.merge).collect();
    // Regroup whole merge blocks into window order; rotary positions travel with their rows.
    let win = windows(c, g);
    let mut xs = Vec::with_capacity(n * dv);
    let mut ps = Vec::with_capacity(n);
    for &unit in &win.order {
        xs.extend_from_slice(&x[unit * mu * dv..(unit + 1) * mu * dv]);
        ps.extend_from_slice(&pos[unit * mu..(unit + 1) * mu]);
    }
    let mut x = xs;
    let window_spans: Vec<usize> = win.sizes.iter().map(|s| s * mu).collect();
    for (bi, b) in w.blocks.iter().enumerate() {
        let spans = if v.full_attention_blocks.contains(&bi) {
            vec![n]
        } else {
            window_spans.clone()
        };
        let h = rms_norm(&x, &b.norm1, dv, v.eps);
        let mut qkv = linear(&h, &b.qkv_w, Some(&b.qkv_b), n, 3 * dv, dv);
        for (row, &(r, col)) in qkv.chunks_mut(3 * dv).zip(&ps) {
            for head in row[..2 * dv].chunks_mut(hd) {
                rope_vision(head, r, col, v.rope_theta);
            }
        }
        let mut attn = vec![0f32; n * dv];
        for head in 0..v.heads {
            let q = columns(&qkv, 3 * dv, head * hd, hd);
            let k = columns(&qkv, 3 * dv, dv + head * hd, hd);
            let vv = columns(&qkv, 3 * dv, 2 * dv + head * hd, hd);
            let mut start = 0;
            for &len in &spans {
                let span = start * hd..(start + len) * hd;
                let o = attend(
                    &q[span.clone()],
                    &k[span.clone()],
                    &vv[span],
                    len,
                    len,
                    hd,
                    false,
                );
                for i in 0..len {
                    attn[(start + i) * dv + head * hd..][..hd]
                        .copy_from_slice(&o[i * hd..(i + 1) * hd]);
                }
                start += len;
            }
        }
        add_into(
            &mut x,
            &linear(&attn, &b.proj_w, Some(&b.proj_b), n, dv, dv),
        );
        let h = rms_norm(&x, &b.norm2, dv, v.eps);
        let gu = linear(
            &h,
            &b.gate_up_w,
            Some(&b.gate_up_b),
            n,
            2 * v.intermediate,
            dv,
        );
        let a = swiglu(&gu, v.intermediate);
        add_into(
            &mut x,
            &linear(&a, &b.down_w, Some(&b.down_b), n, dv, v.intermediate),
        );
    }
    // Merger: each merge block's rows are consecutive, so [n, dv] reads as [n/4, 4·dv].
    let (dm, d, tokens) = (v.merged_dim(), c.llm.hidden, n / mu);
    let h = rms_norm(&x, &w.merger_norm, dv, v.eps);
    let mut h = linear(&h, &w.merger1_w, Some(&w.merger1_b), tokens, dm, dm);
    h.iter_mut().for_each(|a| *a = gelu_erf(*a));
    let merged = linear(&h, &w.merger2_w, Some(&w.merger2_b), tokens, d, dm);
    let mut out = vec![0f32; tokens * d];
    for (j, &unit) in win.order.iter().enumerate() {
        out[unit * d..(unit + 1) * d].copy_from_slice(&merged[j * d..(j + 1) * d]);
    }
    Ok(out)
}

/// The ViT's rotary on one head vector of d values: transformers builds its table for a head
/// of d/2 (frequencies θ^(−2i/(d/2)), i < d/4) and lays it out as the row's angles then the
/// column's, so pair (i, i + d/2) turns by row · f_i for i < d/4 and column · f_(i − d/4) after.
fn rope_vision(v: &mut [f32], row: usize, col: usize, theta: f32) {
    let half = v.len() / 2;
    let inv = rope_inv_freq(half, theta);
    let quarter = inv.len();
    for i in 0..half {
        let a = if i < quarter {
            row as f64 * inv[i]
        } else {
            col as f64 * inv[i - quarter]
        };
        let (s, c) = (a.sin() as f32, a.cos() as f32);
        let (x0, x1) = (v[i], v[i + half]);
        v[i] = x0 * c - x1 * s;
        v[i + half] = x1 * c + x0 * s;
    }
}

/// Input embeddings of a prompt: token rows, each `IMAGE_TOKEN` replaced by the next image's.
pub fn embed_prompt(
    c: &Qwen25VlConfig,
    w: &HostWeights,
    prompt: &[i32],
    images: &[Vec<f32>],
) -> Result<Vec<f32>> {
    let d = c.llm.hidden;
    let mut out = Vec::new();
    let mut next = images.iter();
    for &t in prompt {
        if t == IMAGE_TOKEN {
            let e = next.next().ok_or_else(|| {
                Error::Invalid(format!(
                    "prompt has more image tokens than images ({})",
                    images.len()
                ))
            })?;
            out.extend_from_slice(e);
        } else if t < 0 || t as usize >= c.llm.vocab {
            return Err(Error::Invalid(format!(
                "token {t} outside the vocabulary 0..{}",
                c.llm.vocab
            )));
        } else {
            out.extend_from_slice(&w.embed[t as usize * d..(t as usize + 1) * d]);
        }
    }
    Ok(out)
}

/// What a greedy generation produced: the tokens, the logits each was chosen from, and the
/// logits of every prompt position (the prefill's).
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
    pub prefill_logits: Vec<f32>,
}

/// Encode the images, prefill the prompt, decode greedily until `out_tokens` tokens.
pub fn generate(
    c: &Qwen25VlConfig,
    w: &HostWeights,
    images: &[Image],
    prompt: &[i32],
    out_tokens: usize,
) -> Result<Generation> {
    let emb = images
        .iter()
        .map(|i| encode_image(c, w, i))
        .collect::<Result<Vec<_>>>()?;
    let grids: Vec<ImageGrid> = images.iter().map(|i| i.grid).collect();
    let x = embed_prompt(c, w, prompt, &emb)?;
    let (positions, mut next) = mrope_positions(c, prompt, &grids)?;
    let lm = Decoder {
        layers: &w.layers,
        norm: &w.norm,
        lm_head: w.output(),
    };
    let mut kv = CpuKv::default();
    let all = lm.forward(&c.llm, &x, &positions, &mut kv);
    let v = c.llm.vocab;
    let mut logits = vec![all[all.len() - v..].to_vec()];
    let mut tokens = vec![argmax(&logits[0]) as u32];
    while tokens.len() < out_tokens {
        let t = *tokens.last().unwrap_or(&0) as usize;
        let x = w.embed[t * c.llm.hidden..(t + 1) * c.llm.hidden].to_vec();
        let l = lm.forward(&c.llm, &x, &[[next; 3]], &mut kv);
        next += 1;
        tokens.push(argmax(&l) as u32);
        logits.push(l);
    }
    Ok(Generation {
        tokens,
        logits,
        prefill_logits: all,
    })
}

/// Random pixels in [-1, 1] (what a normalised image looks like) of an image of this grid,
/// [3, rows·patch, cols·patch], bf16 values.
pub fn random_image(c: &Qwen25VlConfig, g: ImageGrid, seed: u64) -> Vec<f32> {
    let n = c.vision.channels * g.patches() * c.vision.patch * c.vision.patch;
    (0..n as u64)
        .map(|i| round_bf16(uniform(mix64(seed ^ 0x5157), i)))
        .collect()
}

/// Random weights with the model's exact shapes, every value a bf16 number (`host::random_tensor`).
pub fn random(c: &Qwen25VlConfig, seed: u64) -> Result<HostWeights> {
    let mut index = 0usize;
    Qwen25VlWeights::build(c, |s| {
        index += 1;
        Ok(random_tensor(s, seed, index - 1))
    })
}

/// Load a checkpoint (a `.safetensors` file or a folder of them) in either transformers layout.
pub fn load(c: &Qwen25VlConfig, path: &Path) -> Result<HostWeights> {
    let ck = Checkpoint::open(path)?;
    Qwen25VlWeights::build(c, |s| ck.read_spec(s, published_layout_name))
}

/// Write `w` as a Hugging Face checkpoint folder that transformers' `from_pretrained` loads:
/// `model.safetensors` (f32, transformers ≥ 5 names) and `config.json`.
pub fn write_checkpoint(c: &Qwen25VlConfig, w: &HostWeights, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    write_tensors(
        &tensor_specs(c),
        &w.tensors(),
        &[],
        &dir.join("model.safetensors"),
    )?;
    let json = serde_json::to_string_pretty(&hf_config(c))
        .map_err(|e| Error::Check(format!("config.json: {e}")))?;
    let path = dir.join("config.json");
    std::fs::write(&path, json).map_err(|e| io_err(&path, e))
}

/// Token ids of the special tokens in a config written by `write_checkpoint`: the last ids of
/// the vocabulary (the published ones, 151652…151656, are past a test model's vocabulary).
pub fn special_tokens(c: &Qwen25VlConfig) -> SpecialTokens {
    let v = c.llm.vocab as i32;
    SpecialTokens {
        image_pad: v - 1,
        vision_end: v - 2,
        vision_start: v - 3,
        video_pad: v - 4,
        end_of_text: v - 5,
    }
}

pub struct SpecialTokens {
    pub image_pad: i32,
    pub vision_end: i32,
    pub vision_start: i32,
    pub video_pad: i32,
    /// bos and eos (`<|endoftext|>` in the published configs).
    pub end_of_text: i32,
}

/// The model as a transformers `Qwen2_5_VLConfig` (the published configs' flat layout).
pub fn hf_config(c: &Qwen25VlConfig) -> serde_json::Value {
    let (v, l, t) = (&c.vision, &c.llm, special_tokens(c));
    serde_json::json!({
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "hidden_act": "silu",
        "hidden_size": l.hidden,
        "intermediate_size": l.intermediate,
        "num_attention_heads": l.heads,
        "num_hidden_layers": l.layers,
        "num_key_value_heads": l.kv_heads,
        "max_position_embeddings": 32768,
        "rms_norm_eps": l.eps,
        "rope_theta": l.rope_theta,
        "rope_scaling": {"type": "mrope", "mrope_section": l.mrope},
        "use_sliding_window": false,
        "tie_word_embeddings": c.tied,
        "vocab_size": l.vocab,
        "image_token_id": t.image_pad,
        "video_token_id": t.video_pad,
        "vision_start_token_id": t.vision_start,
        "vision_end_token_id": t.vision_end,
        "bos_token_id": t.end_of_text,
        "eos_token_id": t.end_of_text,
        "torch_dtype": "float32",
        "vision_config": {
            "depth": v.depth,
            "hidden_act": "silu",
            "hidden_size": v.hidden,
            "intermediate_size": v.intermediate,
            "num_heads": v.heads,
            "in_chans": v.channels,
            "out_hidden_size": v.out_hidden,
            "patch_size": v.patch,
            "spatial_merge_size": v.merge,
            "temporal_patch_size": v.temporal_patch,
            "window_size": v.window,
            "fullatt_block_indexes": v.full_attention_blocks,
            "tokens_per_second": 2
        }
    })
}
