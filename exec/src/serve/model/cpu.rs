//! The CPU reference: a plain f32 forward pass of `model::llava`, written for clarity, not speed.
//! It is what the GPU forward is checked against (`selftest`), and it is itself checked against
//! candle-transformers' LLaVA in CI (`tests/candle_reference.rs`).

use super::host::{HostWeights, IMAGE_TOKEN};
use super::llava::{DecoderLayer, LlavaConfig, LlmConfig};
use crate::error::{Error, Result};

/// y[m, n] = x[m, k] · w[n, k]ᵀ (+ b[n])
pub fn linear(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        let xi = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wj = &w[j * k..(j + 1) * k];
            let mut acc = 0f32;
            for t in 0..k {
                acc += xi[t] * wj[t];
            }
            y[i * n + j] = acc + b.map_or(0.0, |b| b[j]);
        }
    }
    y
}

pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = xr.iter().sum::<f32>() / d as f32;
        let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..d {
            yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
        }
    }
    y
}

pub fn rms_norm(x: &[f32], w: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..d {
            yr[i] = xr[i] * inv * w[i];
        }
    }
    y
}

pub fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).exp())
}

pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// erf in f64 (Abramowitz–Stegun 7.1.26 is too coarse for a 1e-4 check; this is the series /
/// continued-fraction pair with ~1e-15 relative error).
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let ax = x.abs();
    let r = if ax == 0.0 {
        // The series' stopping rule compares with the sum, which is 0 here.
        0.0
    } else if ax < 2.5 {
        // Maclaurin series
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0f64;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz)
        let tiny = 1e-300;
        let mut f = ax;
        let mut c = ax;
        let mut d = 0f64;
        for i in 1..200 {
            let an = i as f64 / 2.0;
            d = ax + an * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = ax + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
    };
    (if x < 0.0 { -r } else { r }) as f32
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Rotary frequencies θ^(−2i/d), i < d/2, of a head of d values (the GPU kernel reads the same
/// table, so both sides rotate by the same angles).
pub fn rope_inv_freq(d: usize, theta: f32) -> Vec<f64> {
    (0..d / 2)
        .map(|i| 1.0 / (theta as f64).powf((2 * i) as f64 / d as f64))
        .collect()
}

/// Rotary embedding, LLaMA's "rotate half" form, in place on one head vector at `pos`.
pub fn rope(v: &mut [f32], pos: usize, theta: f32) {
    rope_sections(v, [pos; 3], [v.len() / 2, 0, 0], theta);
}

/// Rotary embedding whose frequencies take their angle from one of three positions: the first
/// `sections[0]` frequencies from `pos[0]`, the next `sections[1]` from `pos[1]`, the rest from
/// `pos[2]` (Qwen2-VL's M-RoPE: temporal, row, column). Pairs (i, i + d/2) rotate together.
pub fn rope_sections(v: &mut [f32], pos: [usize; 3], sections: [usize; 3], theta: f32) {
    let half = v.len() / 2;
    for (i, inv_freq) in rope_inv_freq(v.len(), theta).into_iter().enumerate() {
        let axis = if i < sections[0] {
            0
        } else if i < sections[0] + sections[1] {
            1
        } else {
            2
        };
        let a = pos[axis] as f64 * inv_freq;
        let (s, c) = (a.sin() as f32, a.cos() as f32);
        let (x0, x1) = (v[i], v[i + half]);
        v[i] = x0 * c - x1 * s;
        v[i + half] = x1 * c + x0 * s;
    }
}

/// Softmax attention of `nq` query rows over `nk` key rows for one head; row i may see keys
/// `0..=i + (nk - nq)` when causal (queries are the last nq positions).
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nq: usize,
    nk: usize,
    d: usize,
    causal: bool,
) -> Vec<f32> {
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; nq * d];
    let mut s = vec![0f32; nk];
    for i in 0..nq {
        let visible = if causal { i + (nk - nq) + 1 } else { nk };
        let qi = &q[i * d..(i + 1) * d];
        let mut max = f32::NEG_INFINITY;
        for j in 0..visible {
            s[j] = qi
                .iter()
                .zip(&k[j * d..(j + 1) * d])
                .map(|(a, b)| a * b)
                .sum::<f32>()
                * scale;
            max = max.max(s[j]);
        }
        let mut sum = 0f32;
        for sj in s.iter_mut().take(visible) {
            *sj = (*sj - max).exp();
            sum += *sj;
        }
        let o = &mut out[i * d..(i + 1) * d];
        for j in 0..visible {
            let p = s[j] / sum;
            for t in 0..d {
                o[t] += p * v[j * d + t];
            }
        }
    }
    out
}

/// Columns `[off, off + d)` of every row of a row-major [n, width] matrix.
pub fn columns(x: &[f32], width: usize, off: usize, d: usize) -> Vec<f32> {
    x.chunks(width)
        .flat_map(|r| r[off..off + d].to_vec())
        .collect()
}

pub fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Vision tower + projector over images ([3, size, size] each): [images · patches, d].
pub fn encode(c: &LlavaConfig, w: &HostWeights, images: &[Vec<f32>]) -> Result<Vec<f32>> {
    let v = &c.vision;
    let (dv, np, npos) = (v.hidden, v.patches(), v.positions());
    let (p, side) = (v.patch, v.image_size / v.patch);
    let (k, kp) = (v.patch_dim(), v.patch_dim_padded());
    let mut out = Vec::new();
    for (n, img) in images.iter().enumerate() {
        if img.len() != v.channels * v.image_size * v.image_size {
            return Err(Error::Invalid(format!(
                "image {n} has {} values, the model takes {}×{}×{}",
                img.len(),
                v.channels,
                v.image_size,
                v.image_size
            )));
        }
        // Patches flattened as the conv kernel is: [channel][row][col].
        let mut patches = vec![0f32; np * kp];
        for py in 0..side {
            for px in 0..side {
                let row = &mut patches[(py * side + px) * kp..][..k];
                for ch in 0..v.channels {
                    for y in 0..p {
                        for x in 0..p {
                            row[(ch * p + y) * p + x] =
                                img[(ch * v.image_size + py * p + y) * v.image_size + px * p + x];
                        }
                    }
                }
            }
        }
        let pe = linear(&patches, &w.patch_embed, None, np, dv, kp);
        let mut x = vec![0f32; npos * dv];
        x[..dv].copy_from_slice(&w.class_embed);
        x[dv..].copy_from_slice(&pe);
        add_into(&mut x, &w.pos_embed);
        let mut x = layer_norm(&x, &w.pre_ln_w, &w.pre_ln_b, dv, v.eps);
        let hd = v.head_dim();
        for l in &w.vision {
            let h = layer_norm(&x, &l.ln1_w, &l.ln1_b, dv, v.eps);
            let qkv = linear(&h, &l.qkv_w, Some(&l.qkv_b), npos, 3 * dv, dv);
            let mut attn = vec![0f32; npos * dv];
            for head in 0..v.heads {
                let q = columns(&qkv, 3 * dv, head * hd, hd);
                let kk = columns(&qkv, 3 * dv, dv + head * hd, hd);
                let vv = columns(&qkv, 3 * dv, 2 * dv + head * hd, hd);
                let o = attend(&q, &kk, &vv, npos, npos, hd, false);
                for i in 0..npos {
                    attn[i * dv + head * hd..][..hd].copy_from_slice(&o[i * hd..(i + 1) * hd]);
                }
            }
            add_into(&mut x, &linear(&attn, &l.o_w, Some(&l.o_b), npos, dv, dv));
            let h = layer_norm(&x, &l.ln2_w, &l.ln2_b, dv, v.eps);
            let mut f = linear(&h, &l.fc1_w, Some(&l.fc1_b), npos, v.intermediate, dv);
            f.iter_mut().for_each(|a| *a = quick_gelu(*a));
            add_into(
                &mut x,
                &linear(&f, &l.fc2_w, Some(&l.fc2_b), npos, dv, v.intermediate),
            );
        }
        let feats = &x[dv..]; // drop CLS
        let d = c.llm.hidden;
        let mut h = linear(feats, &w.proj1_w, Some(&w.proj1_b), np, d, dv);
        h.iter_mut().for_each(|a| *a = gelu_erf(*a));
        out.extend(linear(&h, &w.proj2_w, Some(&w.proj2_b), np, d, d));
    }
    Ok(out)
}

/// Input embeddings of a prompt: token rows from the table, each `IMAGE_TOKEN` replaced by the
/// next image's rows of `image_emb` ([images · patches, d]).
pub fn embed_prompt(
    c: &LlavaConfig,
    w: &HostWeights,
    prompt: &[i32],
    image_emb: &[f32],
) -> Result<Vec<f32>> {
    let d = c.llm.hidden;
    let rows = c.image_tokens() * d;
    let mut out = Vec::new();
    let mut img = 0;
    for &t in prompt {
        if t == IMAGE_TOKEN {
            let part = image_emb.get(img * rows..(img + 1) * rows).ok_or_else(|| {
                Error::Invalid(format!("prompt has more image tokens than images ({img}+)"))
            })?;
            out.extend_from_slice(part);
            img += 1;
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

/// A request's KV cache on the CPU: per layer, K and V rows [tokens, kv_dim].
#[derive(Default)]
pub struct CpuKv {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl CpuKv {
    pub fn len(&self, l: &LlmConfig) -> usize {
        self.k.first().map_or(0, |k| k.len() / l.kv_dim())
    }
    pub fn is_empty(&self) -> bool {
        self.k.first().is_none_or(|k| k.is_empty())
    }
}

/// LLaVA's decoder over `x` ([n, d] new tokens after the `kv` context), appending to `kv`.
/// Returns the logits of every new position, [n, vocab].
pub fn decoder(c: &LlavaConfig, w: &HostWeights, x: &[f32], kv: &mut CpuKv) -> Vec<f32> {
    let past = kv.len(&c.llm);
    let positions: Vec<[usize; 3]> = (past..past + x.len() / c.llm.hidden)
        .map(|p| [p; 3])
        .collect();
    let lm = Decoder {
        layers: &w.layers,
        norm: &w.norm,
        lm_head: &w.lm_head,
    };
    lm.forward(&c.llm, x, &positions, kv)
}

/// The weights of a LLaMA-style decoder (LLaVA's Vicuna, Qwen2), borrowed from a model's.
pub struct Decoder<'a> {
    pub layers: &'a [DecoderLayer<Vec<f32>>],
    pub norm: &'a [f32],
    /// The output projection (the embedding table where a model ties them).
    pub lm_head: &'a [f32],
}

impl Decoder<'_> {
    /// The decoder over `x` ([n, d] new tokens after the `kv` context) at `positions` (one
    /// triple per token: equal for text; Qwen2-VL's images differ), appending to `kv`.
    /// Returns the logits of every new position, [n, vocab].
    pub fn forward(
        &self,
        l: &LlmConfig,
        x: &[f32],
        positions: &[[usize; 3]],
        kv: &mut CpuKv,
    ) -> Vec<f32> {
        let d = l.hidden;
        let n = x.len() / d;
        assert_eq!(positions.len(), n, "one position per token");
        if kv.k.is_empty() {
            kv.k = vec![Vec::new(); l.layers];
            kv.v = vec![Vec::new(); l.layers];
        }
        let past = kv.len(l);
        let sections = l.mrope.unwrap_or([l.head_dim / 2, 0, 0]);
        let (hd, qd, kvd) = (l.head_dim, l.q_dim(), l.kv_dim());
        let mut x = x.to_vec();
        for (li, lw) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &lw.attn_norm, d, l.eps);
            let mut qkv = linear(&h, &lw.qkv, lw.qkv_b.as_deref(), n, l.qkv_dim(), d);
            for (row, &pos) in qkv.chunks_mut(l.qkv_dim()).zip(positions) {
                for head in row[..qd + kvd].chunks_mut(hd) {
                    rope_sections(head, pos, sections, l.rope_theta);
                }
                kv.k[li].extend_from_slice(&row[qd..qd + kvd]);
                kv.v[li].extend_from_slice(&row[qd + kvd..]);
            }
            let total = past + n;
            let mut attn = vec![0f32; n * qd];
            let group = l.heads / l.kv_heads;
            for head in 0..l.heads {
                let kvh = head / group;
                let q = columns(&qkv, l.qkv_dim(), head * hd, hd);
                let k = columns(&kv.k[li], kvd, kvh * hd, hd);
                let v = columns(&kv.v[li], kvd, kvh * hd, hd);
                let o = attend(&q, &k, &v, n, total, hd, true);
                for i in 0..n {
                    attn[i * qd + head * hd..][..hd].copy_from_slice(&o[i * hd..(i + 1) * hd]);
                }
            }
            add_into(&mut x, &linear(&attn, &lw.o, None, n, d, qd));
            let h = rms_norm(&x, &lw.mlp_norm, d, l.eps);
            let gu = linear(&h, &lw.gate_up, None, n, 2 * l.intermediate, d);
            let a = swiglu(&gu, l.intermediate);
            add_into(&mut x, &linear(&a, &lw.down, None, n, d, l.intermediate));
        }
        let h = rms_norm(&x, self.norm, d, l.eps);
        linear(&h, self.lm_head, None, n, l.vocab, d)
    }
}

/// silu(gate) · up of rows laid out `[gate; up]` ([n, 2·i] → [n, i]).
pub fn swiglu(gate_up: &[f32], i: usize) -> Vec<f32> {
    gate_up
        .chunks(2 * i)
        .flat_map(|r| {
            let (g, u) = r.split_at(i);
            g.iter()
                .zip(u)
                .map(|(g, u)| silu(*g) * u)
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

/// What a greedy generation produced: the tokens and, per generated token, the logits it was
/// chosen from (prefill's last position, then one per decode step).
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
}

/// Encode the images, prefill the prompt, decode greedily until `out_tokens` tokens.
pub fn generate(
    c: &LlavaConfig,
    w: &HostWeights,
    images: &[Vec<f32>],
    prompt: &[i32],
    out_tokens: usize,
) -> Result<Generation> {
    let emb = encode(c, w, images)?;
    let x = embed_prompt(c, w, prompt, &emb)?;
    let mut kv = CpuKv::default();
    let all = decoder(c, w, &x, &mut kv);
    let v = c.llm.vocab;
    let mut logits = vec![all[all.len() - v..].to_vec()];
    let mut tokens = vec![argmax(&logits[0]) as u32];
    while tokens.len() < out_tokens {
        let t = *tokens.last().unwrap_or(&0) as usize;
        let x = w.embed[t * c.llm.hidden..(t + 1) * c.llm.hidden].to_vec();
        let l = decoder(c, w, &x, &mut kv);
        tokens.push(argmax(&l) as u32);
        logits.push(l);
    }
    Ok(Generation { tokens, logits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.5f32, 0.520_499_9f32),
            (1.0, 0.842_700_8),
            (3.0, 0.999_977_9),
        ] {
            assert!((erf(x) - want).abs() < 1e-6, "{x}");
            assert!((erf(-x) + want).abs() < 1e-6);
        }
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn decode_with_cache_equals_full_prefill() {
        // The KV cache must not change the numbers: prefilling n tokens at once gives the same
        // last-position logits as prefilling n-1 and decoding one.
        let c = LlavaConfig::tiny();
        let w = super::super::host::random(&c, 3).unwrap();
        let d = c.llm.hidden;
        let toks = [5usize, 17, 3, 999, 42];
        let x: Vec<f32> = toks
            .iter()
            .flat_map(|t| w.embed[t * d..(t + 1) * d].to_vec())
            .collect();
        let full = decoder(&c, &w, &x, &mut CpuKv::default());
        let mut kv = CpuKv::default();
        decoder(&c, &w, &x[..4 * d], &mut kv);
        let last = decoder(&c, &w, &x[4 * d..], &mut kv);
        let v = c.llm.vocab;
        for (a, b) in full[4 * v..].iter().zip(&last) {
            assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn bad_prompts_are_errors() {
        let c = LlavaConfig::tiny();
        let w = super::super::host::random(&c, 3).unwrap();
        let e = embed_prompt(&c, &w, &[1, IMAGE_TOKEN], &[]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = embed_prompt(&c, &w, &[1000], &[]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
