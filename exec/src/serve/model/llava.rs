//! LLaVA-1.5: CLIP ViT-L/14-336 vision tower → mlp2x_gelu projector → LLaMA decoder.
//!
//! This file is the model *definition*: its shapes, its weights (one struct, generic over where a
//! tensor lives: `Vec<f32>` on the CPU, a bf16 device buffer on the GPU) and their names in the
//! Hugging Face LLaVA checkpoints. The two forward passes that run it are `model::cpu` (plain
//! f32, the reference) and `model::gpu` (bf16, our kernels + cuBLASLt).
//!
//! Data flow of one request (7B shapes):
//!
//! ```text
//! image [3, 336, 336]
//!   → patches [576, 3·14·14]  · patch_embedding [1024, 588]ᵀ        (conv 14×14 stride 14)
//!   → [CLS; patches] [577, 1024] + position_embedding [577, 1024]
//!   → pre_layrnorm
//!   → 23 of the 24 encoder layers (LLaVA takes the penultimate layer's output):
//!        x += out_proj(attn(qkv(layer_norm1(x))))     16 heads × 64, full attention
//!        x += fc2(quick_gelu(fc1(layer_norm2(x))))    1024 → 4096 → 1024
//!   → drop CLS: [576, 1024]
//!   → linear_1 [4096, 1024] · GELU(erf) · linear_2 [4096, 4096]: image embedding [576, 4096]
//! prompt tokens with the image token → its 576 embedding rows spliced in: [s, 4096]
//!   → 32 decoder layers:
//!        x += o_proj(attn(rope(qkv(rmsnorm(x)))))     32 heads × 128 (GQA: n_kv heads for K, V)
//!        x += down(silu(gate(rmsnorm(x))) · up(rmsnorm(x)))   4096 → 11008 → 4096
//!   → norm → lm_head [32064, 4096] → logits; greedy: argmax
//! ```
//!
//! Fused layouts (so one GEMM does what the checkpoint splits in three or two): attention
//! projections are stored as one `qkv` matrix, rows `[q; k; v]`; the decoder MLP as one `gate_up`
//! matrix, rows `[gate; up]`. The loaders concatenate the checkpoint's tensors.

use crate::error::{Error, Result};
use hetsim_sim::catalog::{ProjectorSpec, VisualTokenRule, builtin_model};

/// CLIP vision tower shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Layers in the checkpoint.
    pub layers: usize,
    /// Layers run: LLaVA reads the penultimate layer, so `layers - 1`.
    pub layers_run: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub image_size: usize,
    pub patch: usize,
    pub channels: usize,
    pub eps: f32,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
    pub fn patches(&self) -> usize {
        (self.image_size / self.patch).pow(2)
    }
    /// Patches plus CLS.
    pub fn positions(&self) -> usize {
        self.patches() + 1
    }
    /// One patch flattened: channels · patch · patch (588 for CLIP-L/14).
    pub fn patch_dim(&self) -> usize {
        self.channels * self.patch * self.patch
    }
    /// The patch GEMM's K, rounded up to 8 elements so that rows stay 16-byte aligned for
    /// cuBLASLt's fast paths; the extra columns are zeros on both sides.
    pub fn patch_dim_padded(&self) -> usize {
        self.patch_dim().div_ceil(8) * 8
    }
}

/// LLaMA decoder shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub eps: f32,
    pub rope_theta: f32,
    /// q/k/v projections with biases (Qwen2), stored fused as `qkv_b`.
    pub qkv_bias: bool,
    /// Multimodal RoPE (Qwen2-VL's M-RoPE): how many of the `head_dim / 2` rotary frequencies
    /// take a token's temporal, row and column position. `None`: every frequency takes the
    /// token's index (LLaMA).
    pub mrope: Option<[usize; 3]>,
}

impl LlmConfig {
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// Width of the fused qkv activation.
    pub fn qkv_dim(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlavaConfig {
    pub name: String,
    pub vision: VisionConfig,
    pub llm: LlmConfig,
    /// Projector input (vision hidden) → output (LLM hidden).
    pub projector_in: usize,
}

impl LlavaConfig {
    /// A built-in LLaVA model of the simulator's catalog, optionally with another decoder depth
    /// (for depth sweeps: the O(L) claim).
    pub fn builtin(name: &str, layers: Option<usize>) -> Result<LlavaConfig> {
        let spec = builtin_model(name).ok_or_else(|| {
            Error::Invalid(format!(
                "--model {name}: not a built-in model (LLaVA-1.5 models: llava-1.5-7b, llava-1.5-13b)"
            ))
        })?;
        let v = spec.vision.as_ref().ok_or_else(|| {
            Error::Invalid(format!("--model {name}: text-only, the engine runs LLaVA"))
        })?;
        let (image_size, patch) = match v.tokens {
            VisualTokenRule::FixedSquare { image_size, patch } => (image_size, patch),
            _ => {
                return Err(Error::Invalid(format!(
                    "--model {name}: only fixed-square vision towers are in the engine; it runs LLaVA-1.5"
                )));
            }
        };
        let projector_in = match v.projector {
            ProjectorSpec::Mlp2xGelu {
                input, bias: true, ..
            } => input as usize,
            _ => {
                return Err(Error::Invalid(format!(
                    "--model {name}: only the biased MLP projector is in the engine; it runs LLaVA-1.5"
                )));
            }
        };
        if v.vit.gated_mlp || v.window.is_some() {
            return Err(Error::Invalid(format!(
                "--model {name}: not a CLIP vision tower"
            )));
        }
        let l = &spec.llm;
        if l.qkv_bias || l.tied_embeddings {
            return Err(Error::Invalid(format!(
                "--model {name}: not a LLaMA decoder (qkv bias / tied embeddings)"
            )));
        }
        let layers = match layers {
            Some(0) => return Err(Error::Invalid("--layers must be at least 1".into())),
            Some(n) => n,
            None => l.layers as usize,
        };
        Ok(LlavaConfig {
            name: name.to_string(),
            vision: VisionConfig {
                layers: v.vit.layers as usize,
                layers_run: v.vit.layers_run as usize,
                hidden: v.vit.hidden as usize,
                heads: v.vit.heads as usize,
                intermediate: v.vit.intermediate as usize,
                image_size: image_size as usize,
                patch: patch as usize,
                channels: 3,
                eps: 1e-5,
            },
            llm: LlmConfig {
                layers,
                hidden: l.hidden as usize,
                heads: l.heads as usize,
                kv_heads: l.kv_heads as usize,
                head_dim: l.head_dim as usize,
                intermediate: l.intermediate as usize,
                vocab: l.vocab as usize,
                // LLaVA-1.5 / Vicuna-1.5 config.json: rms_norm_eps 1e-5, rope_theta 10000.
                eps: 1e-5,
                rope_theta: 10_000.0,
                qkv_bias: false,
                mrope: None,
            },
            projector_in,
        })
    }

    /// A tiny LLaVA for tests: every code path of the real one (GQA, several heads, CLS, a
    /// skipped last vision layer), small enough for an f32 CPU forward in milliseconds.
    /// Head dims are the real ones (64 for the ViT, 128 for the decoder) because the GPU
    /// attention kernels are built for them.
    pub fn tiny() -> LlavaConfig {
        LlavaConfig {
            name: "llava-tiny".into(),
            vision: VisionConfig {
                layers: 3,
                layers_run: 2,
                hidden: 128,
                heads: 2,
                intermediate: 256,
                image_size: 56,
                patch: 14,
                channels: 3,
                eps: 1e-5,
            },
            llm: LlmConfig {
                layers: 2,
                hidden: 256,
                heads: 2,
                kv_heads: 1,
                head_dim: 128,
                intermediate: 512,
                vocab: 1000,
                eps: 1e-5,
                rope_theta: 10_000.0,
                qkv_bias: false,
                mrope: None,
            },
            projector_in: 128,
        }
    }

    /// Image tokens one image contributes (576 for LLaVA-1.5).
    pub fn image_tokens(&self) -> usize {
        self.vision.patches()
    }

    /// The shapes that decide transfer sizes (KV cache and embeddings on the wire).
    pub fn transfer_shape(&self) -> crate::serve::kv::ModelShape {
        crate::serve::kv::ModelShape {
            layers: self.llm.layers,
            kv_heads: self.llm.kv_heads,
            head_dim: self.llm.head_dim,
            hidden: self.llm.hidden,
            visual_tokens: self.image_tokens(),
        }
    }

    /// Parameters of the weights we hold (vision layers not run are not loaded).
    pub fn params(&self) -> u64 {
        tensor_specs(self)
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum()
    }
}

/// One weight tensor: our name for it, its shape, how to initialise it at random, and where its
/// parts live in a Hugging Face checkpoint (several parts are concatenated along rows).
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Checkpoint tensors (name, shape) whose rows, in order, make this tensor. The one
    /// exception is `patch_embed`: a conv kernel [dv, 3, p, p] held as [dv, padded 3·p·p].
    pub parts: Vec<(String, Vec<usize>)>,
}

/// Random initialisation (uniform), chosen so that activations keep unit scale through any depth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Uniform in ±√(3 / fan_in): variance 1/fan_in.
    Linear { fan_in: usize },
    /// Norm gains: uniform in [0.8, 1.2].
    Gain,
    /// Biases, embeddings: uniform in ±scale.
    Uniform(f32),
}

impl TensorSpec {
    /// (checkpoint columns, our columns) of a 2-D tensor we hold with zero columns appended
    /// (the patch embedding's K rounded up to 8); `None` when we hold it as stored.
    pub fn padded_cols(&self) -> Option<(usize, usize)> {
        let stored: usize = self
            .parts
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        match self.shape[..] {
            [rows, cols] if rows * cols != stored => Some((stored / rows, cols)),
            _ => None,
        }
    }
}

impl<T> DecoderLayer<T> {
    /// The layer's tensors in `tensor_specs` order.
    pub fn tensors(&self) -> Vec<&T> {
        let mut v = vec![&self.attn_norm, &self.qkv];
        v.extend(&self.qkv_b);
        v.extend([&self.o, &self.mlp_norm, &self.gate_up, &self.down]);
        v
    }
}

impl Init {
    /// (scale, offset): value = offset + scale · u, u uniform in [-1, 1).
    pub fn scale_offset(self) -> (f32, f32) {
        match self {
            Init::Linear { fan_in } => ((3.0 / fan_in as f32).sqrt(), 0.0),
            Init::Gain => (0.2, 1.0),
            Init::Uniform(s) => (s, 0.0),
        }
    }
}

/// Weights of one CLIP encoder layer.
#[derive(Debug)]
pub struct VisionLayer<T> {
    pub ln1_w: T, // [dv]
    pub ln1_b: T, // [dv]
    pub qkv_w: T, // [3·dv, dv]   rows: q_proj, k_proj, v_proj
    pub qkv_b: T, // [3·dv]
    pub o_w: T,   // [dv, dv]     out_proj
    pub o_b: T,   // [dv]
    pub ln2_w: T, // [dv]
    pub ln2_b: T, // [dv]
    pub fc1_w: T, // [I_v, dv]
    pub fc1_b: T, // [I_v]
    pub fc2_w: T, // [dv, I_v]
    pub fc2_b: T, // [dv]
}

/// Weights of one LLaMA / Qwen2 decoder layer.
#[derive(Debug)]
pub struct DecoderLayer<T> {
    pub attn_norm: T,     // [d]           input_layernorm
    pub qkv: T,           // [(H + 2·H_kv)·D, d]   rows: q_proj, k_proj, v_proj
    pub qkv_b: Option<T>, // [(H + 2·H_kv)·D]  Qwen2's q/k/v biases
    pub o: T,             // [d, H·D]
    pub mlp_norm: T,      // [d]           post_attention_layernorm
    pub gate_up: T,       // [2·I, d]      rows: gate_proj, up_proj
    pub down: T,          // [d, I]
}

#[derive(Debug)]
pub struct LlavaWeights<T> {
    pub patch_embed: T, // [dv, patch_dim_padded]  conv weight [dv, 3, 14, 14] flattened, zero-padded
    pub class_embed: T, // [dv]
    pub pos_embed: T,   // [positions, dv]
    pub pre_ln_w: T,    // [dv]
    pub pre_ln_b: T,    // [dv]
    pub vision: Vec<VisionLayer<T>>, // layers_run of them
    pub proj1_w: T,     // [d, dv]
    pub proj1_b: T,     // [d]
    pub proj2_w: T,     // [d, d]
    pub proj2_b: T,     // [d]
    pub embed: T,       // [V, d]
    pub layers: Vec<DecoderLayer<T>>,
    pub norm: T,    // [d]
    pub lm_head: T, // [V, d]
}

const V: &str = "vision_tower.vision_model";
const P: &str = "multi_modal_projector";
const L: &str = "language_model";

/// Every tensor of the model, in the order `LlavaWeights::build` takes them.
pub fn tensor_specs(c: &LlavaConfig) -> Vec<TensorSpec> {
    let v = &c.vision;
    let l = &c.llm;
    let (dv, iv, d) = (v.hidden, v.intermediate, l.hidden);
    let mut out = Vec::new();
    // A tensor stored under one checkpoint name with the same shape.
    let mut one = |name: String, shape: Vec<usize>, init: Init, part: String| {
        out.push(TensorSpec {
            name,
            parts: vec![(part, shape.clone())],
            shape,
            init,
        })
    };
    one(
        "class_embed".into(),
        vec![dv],
        Init::Uniform(1.0),
        format!("{V}.embeddings.class_embedding"),
    );
    one(
        "pos_embed".into(),
        vec![v.positions(), dv],
        Init::Uniform(0.5),
        format!("{V}.embeddings.position_embedding.weight"),
    );
    one(
        "pre_ln_w".into(),
        vec![dv],
        Init::Gain,
        format!("{V}.pre_layrnorm.weight"),
    );
    one(
        "pre_ln_b".into(),
        vec![dv],
        Init::Uniform(0.1),
        format!("{V}.pre_layrnorm.bias"),
    );
    let lin = |fan_in| Init::Linear { fan_in };
    let bias = Init::Uniform(0.05);
    let mut vision_layers = Vec::new();
    for i in 0..v.layers_run {
        let p = format!("{V}.encoder.layers.{i}");
        let qkv = |s: &str, shape: Vec<usize>| {
            ["q_proj", "k_proj", "v_proj"]
                .iter()
                .map(|x| (format!("{p}.self_attn.{x}.{s}"), shape.clone()))
                .collect::<Vec<_>>()
        };
        let single = |n: &str, s: &[usize]| vec![(format!("{p}.{n}"), s.to_vec())];
        let ts = [
            (
                "ln1_w",
                vec![dv],
                Init::Gain,
                single("layer_norm1.weight", &[dv]),
            ),
            (
                "ln1_b",
                vec![dv],
                Init::Uniform(0.1),
                single("layer_norm1.bias", &[dv]),
            ),
            (
                "qkv_w",
                vec![3 * dv, dv],
                lin(dv),
                qkv("weight", vec![dv, dv]),
            ),
            ("qkv_b", vec![3 * dv], bias, qkv("bias", vec![dv])),
            (
                "o_w",
                vec![dv, dv],
                lin(dv),
                single("self_attn.out_proj.weight", &[dv, dv]),
            ),
            (
                "o_b",
                vec![dv],
                bias,
                single("self_attn.out_proj.bias", &[dv]),
            ),
            (
                "ln2_w",
                vec![dv],
                Init::Gain,
                single("layer_norm2.weight", &[dv]),
            ),
            (
                "ln2_b",
                vec![dv],
                Init::Uniform(0.1),
                single("layer_norm2.bias", &[dv]),
            ),
            (
                "fc1_w",
                vec![iv, dv],
                lin(dv),
                single("mlp.fc1.weight", &[iv, dv]),
            ),
            ("fc1_b", vec![iv], bias, single("mlp.fc1.bias", &[iv])),
            (
                "fc2_w",
                vec![dv, iv],
                lin(iv),
                single("mlp.fc2.weight", &[dv, iv]),
            ),
            ("fc2_b", vec![dv], bias, single("mlp.fc2.bias", &[dv])),
        ];
        for (n, shape, init, parts) in ts {
            vision_layers.push(TensorSpec {
                name: format!("v{i}.{n}"),
                shape,
                init,
                parts,
            });
        }
    }
    out.extend(vision_layers);
    let mut one = |name: &str, shape: Vec<usize>, init: Init, part: String| {
        out.push(TensorSpec {
            name: name.into(),
            parts: vec![(part, shape.clone())],
            shape,
            init,
        })
    };
    one(
        "proj1_w",
        vec![d, c.projector_in],
        lin(c.projector_in),
        format!("{P}.linear_1.weight"),
    );
    one("proj1_b", vec![d], bias, format!("{P}.linear_1.bias"));
    one(
        "proj2_w",
        vec![d, d],
        lin(d),
        format!("{P}.linear_2.weight"),
    );
    one("proj2_b", vec![d], bias, format!("{P}.linear_2.bias"));
    one(
        "embed",
        vec![l.vocab, d],
        Init::Uniform(1.0),
        format!("{L}.model.embed_tokens.weight"),
    );
    for i in 0..l.layers {
        let p = format!("{L}.model.layers.{i}");
        let single = |n: &str, s: &[usize]| vec![(format!("{p}.{n}"), s.to_vec())];
        let ts = [
            (
                "attn_norm",
                vec![d],
                Init::Gain,
                single("input_layernorm.weight", &[d]),
            ),
            (
                "qkv",
                vec![l.qkv_dim(), d],
                lin(d),
                vec![
                    (format!("{p}.self_attn.q_proj.weight"), vec![l.q_dim(), d]),
                    (format!("{p}.self_attn.k_proj.weight"), vec![l.kv_dim(), d]),
                    (format!("{p}.self_attn.v_proj.weight"), vec![l.kv_dim(), d]),
                ],
            ),
            (
                "o",
                vec![d, l.q_dim()],
                lin(l.q_dim()),
                single("self_attn.o_proj.weight", &[d, l.q_dim()]),
            ),
            (
                "mlp_norm",
                vec![d],
                Init::Gain,
                single("post_attention_layernorm.weight", &[d]),
            ),
            (
                "gate_up",
                vec![2 * l.intermediate, d],
                lin(d),
                vec![
                    (format!("{p}.mlp.gate_proj.weight"), vec![l.intermediate, d]),
                    (format!("{p}.mlp.up_proj.weight"), vec![l.intermediate, d]),
                ],
            ),
            (
                "down",
                vec![d, l.intermediate],
                lin(l.intermediate),
                single("mlp.down_proj.weight", &[d, l.intermediate]),
            ),
        ];
        for (n, shape, init, parts) in ts {
            out.push(TensorSpec {
                name: format!("l{i}.{n}"),
                shape,
                init,
                parts,
            });
        }
    }
    let mut one = |name: &str, shape: Vec<usize>, init: Init, part: String| {
        out.push(TensorSpec {
            name: name.into(),
            parts: vec![(part, shape.clone())],
            shape,
            init,
        })
    };
    one(
        "norm",
        vec![d],
        Init::Gain,
        format!("{L}.model.norm.weight"),
    );
    one(
        "lm_head",
        vec![l.vocab, d],
        lin(d),
        format!("{L}.lm_head.weight"),
    );
    // The patch embedding goes first: stored as a conv kernel, held as a zero-padded matrix.
    out.insert(
        0,
        TensorSpec {
            name: "patch_embed".into(),
            shape: vec![dv, v.patch_dim_padded()],
            init: Init::Linear {
                fan_in: v.patch_dim(),
            },
            parts: vec![(
                format!("{V}.embeddings.patch_embedding.weight"),
                vec![dv, v.channels, v.patch, v.patch],
            )],
        },
    );
    out
}

/// Checkpoint names in the newer transformers layout (≥ 4.52: `model.vision_tower…`,
/// `model.language_model.layers…`, `lm_head`) for a name in the llava-hf layout.
pub fn new_layout_name(old: &str) -> String {
    if let Some(r) = old.strip_prefix("language_model.model.") {
        format!("model.language_model.{r}")
    } else if let Some(r) = old.strip_prefix("language_model.lm_head") {
        format!("lm_head{r}")
    } else {
        format!("model.{old}")
    }
}

impl<T> LlavaWeights<T> {
    /// Build the weights from a source of tensors, taken in `tensor_specs` order.
    pub fn build(c: &LlavaConfig, mut get: impl FnMut(&TensorSpec) -> Result<T>) -> Result<Self> {
        let specs = tensor_specs(c);
        let mut it = specs.iter();
        let mut next = || -> Result<T> {
            let s = it
                .next()
                .ok_or_else(|| Error::Check("tensor list shorter than the model".into()))?;
            get(s)
        };
        let patch_embed = next()?;
        let class_embed = next()?;
        let pos_embed = next()?;
        let pre_ln_w = next()?;
        let pre_ln_b = next()?;
        let mut vision = Vec::with_capacity(c.vision.layers_run);
        for _ in 0..c.vision.layers_run {
            vision.push(VisionLayer {
                ln1_w: next()?,
                ln1_b: next()?,
                qkv_w: next()?,
                qkv_b: next()?,
                o_w: next()?,
                o_b: next()?,
                ln2_w: next()?,
                ln2_b: next()?,
                fc1_w: next()?,
                fc1_b: next()?,
                fc2_w: next()?,
                fc2_b: next()?,
            });
        }
        let proj1_w = next()?;
        let proj1_b = next()?;
        let proj2_w = next()?;
        let proj2_b = next()?;
        let embed = next()?;
        let mut layers = Vec::with_capacity(c.llm.layers);
        for _ in 0..c.llm.layers {
            layers.push(DecoderLayer {
                attn_norm: next()?,
                qkv: next()?,
                qkv_b: None,
                o: next()?,
                mlp_norm: next()?,
                gate_up: next()?,
                down: next()?,
            });
        }
        let norm = next()?;
        let lm_head = next()?;
        Ok(LlavaWeights {
            patch_embed,
            class_embed,
            pos_embed,
            pre_ln_w,
            pre_ln_b,
            vision,
            proj1_w,
            proj1_b,
            proj2_w,
            proj2_b,
            embed,
            layers,
            norm,
            lm_head,
        })
    }
}
