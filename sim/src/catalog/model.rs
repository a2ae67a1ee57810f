//! Model architectures: the shapes that decide FLOPs, bytes moved and bytes shipped.
//!
//! A multimodal model is a vision encoder (ViT), a projector into the LLM's hidden size, and a
//! LLaMA-style decoder. Only shapes live here; the cost of running them is `perf`'s business.

use crate::error::InputError;

/// Bytes per element of the tensors a model keeps and ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    Fp32,
    Bf16,
    Fp16,
    Fp8,
}

impl Dtype {
    pub const ALL: [Dtype; 4] = [Dtype::Fp32, Dtype::Bf16, Dtype::Fp16, Dtype::Fp8];

    pub fn bytes(self) -> u64 {
        match self {
            Dtype::Fp32 => 4,
            Dtype::Bf16 | Dtype::Fp16 => 2,
            Dtype::Fp8 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Fp32 => "fp32",
            Dtype::Bf16 => "bf16",
            Dtype::Fp16 => "fp16",
            Dtype::Fp8 => "fp8",
        }
    }

    pub fn parse(s: &str) -> Result<Dtype, InputError> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                InputError::new(format!(
                    "unknown dtype `{s}`: allowed fp32, bf16, fp16, fp8"
                ))
            })
    }
}

/// The LLaMA-family decoder (LLaMA, Vicuna, Qwen2): RMSNorm, rotary attention with optional GQA,
/// SwiGLU MLP.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmSpec {
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub intermediate: u64,
    pub vocab: u64,
    pub tied_embeddings: bool,
    /// Qwen2 puts biases on q, k and v; LLaMA has none. Tiny, but it keeps the parameter count exact.
    pub qkv_bias: bool,
    /// Qwen3 and Gemma 3 RMS-normalise each head's query and key (a weight of `head_dim` each).
    pub qk_norm: bool,
    /// RMSNorms of `hidden` weights in each decoder layer: 2 (before attention and before the
    /// MLP) for LLaMA-style layers; Gemma 3 also normalises each block's output, 4.
    pub norms_per_layer: u64,
    /// Layers that attend only to a window of recent tokens (Gemma 3's local layers) or within
    /// chunks of the context (Llama 4's chunked layers); the others attend to the whole context.
    pub sliding: Option<SlidingWindow>,
    /// Mixture-of-experts MLPs (Mixtral): every expert's weights are resident, each token runs
    /// `active` of them. `intermediate` is then each expert's width.
    pub moe: Option<Moe>,
    /// Layers that attend to the image instead of the context (Llama-3.2-Vision).
    pub cross_attention: Option<CrossAttention>,
    /// Multi-head latent attention (DeepSeek-V3, Kimi-K2.5) in every layer, in place of per-head
    /// q, k, v and o projections: `heads` query heads of `head_dim` = nope + rope, and a cache of
    /// one compressed latent per token. `kv_heads` is then `heads` (what the config says and
    /// tensor parallelism splits).
    pub mla: Option<Mla>,
}

/// Multi-head latent attention (`DeepseekV3Attention`): the query through a low-rank
/// `q_a_proj` · RMSNorm · `q_b_proj` (or one `q_proj` without `q_lora_rank`); keys and values
/// through one shared latent, `kv_a_proj_with_mqa` (d → kv_lora_rank + qk_rope_head_dim: the
/// latent and one rotary key shared by every head), RMSNorm over the latent, and `kv_b_proj`
/// (kv_lora_rank → heads · (qk_nope_head_dim + v_head_dim)) expanding it into each head's
/// non-rotary key and value; `o_proj` from heads · v_head_dim.
///
/// What a serving engine caches per token and layer is the latent and the rotary key,
/// `kv_lora_rank` + `qk_rope_head_dim` values (vLLM's and SGLang's MLA backends; transformers
/// 5.25.0 caches the same two tensors, "while latent KV is still compressed"), not per-head keys
/// and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mla {
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
}

impl Mla {
    /// Values one token leaves in one layer's cache: the latent and the shared rotary key.
    pub fn latent_width(&self) -> u64 {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// A query (or key) head's width: the non-rotary and the rotary part.
    pub fn qk_head_dim(&self) -> u64 {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Values of the per-head keys and values `kv_b_proj` expands one token's latent into for
    /// `heads` heads, `heads · (qk_nope + qk_rope + v_head)`: what an MHA cache of the same model
    /// would hold, and what transformers' attention rebuilds from the cache at every forward.
    pub fn expanded_width(&self, heads: u64) -> u64 {
        heads * (self.qk_head_dim() + self.v_head_dim)
    }

    /// Parameters of one layer's attention for `heads` heads of a `hidden`-wide decoder: the
    /// projections (no biases) and the two latent RMSNorms' weights.
    pub fn params(&self, hidden: u64, heads: u64) -> u64 {
        let q_out = heads * self.qk_head_dim();
        let q = match self.q_lora_rank {
            Some(r) => hidden * r + r + r * q_out,
            None => hidden * q_out,
        };
        let kv = hidden * self.latent_width()
            + self.kv_lora_rank
            + self.kv_lora_rank * heads * (self.qk_nope_head_dim + self.v_head_dim);
        q + kv + heads * self.v_head_dim * hidden
    }
}

/// Cross-attention decoder layers (Llama-3.2-Vision, `mllama`): at these layers the decoder's
/// queries attend to the projected vision states, not to the context. Their KV cache holds the
/// vision states' keys and values, computed once per request in prefill; the context's tokens
/// leave nothing in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossAttention {
    /// Indices (from 0) of the cross-attention layers among the decoder's `layers`.
    pub layers: Vec<u64>,
    /// Rows the token embedding has beyond `vocab` (mllama: `vocab_size + 8`, the image token and
    /// seven reserved ones; its LM head has `vocab_size` rows).
    pub added_embeddings: u64,
}

/// Mixture-of-experts MLPs: in every decoder layer but `dense_layers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moe {
    pub experts: u64,
    /// Experts each token is routed to (`num_experts_per_tok`).
    pub active: u64,
    /// Width of a shared expert every token runs beside its routed ones (Llama 4's
    /// `shared_expert`, a SwiGLU MLP); 0 where there is none.
    pub shared: u64,
    /// Decoder layers whose MLP is a dense SwiGLU of `dense_intermediate` instead of the mixture
    /// (Llama-4-Maverick's every other layer); 0 where every layer has experts.
    pub dense_layers: u64,
    pub dense_intermediate: u64,
}

impl Moe {
    /// Experts in every layer, no shared expert (Mixtral, Qwen3-VL-MoE).
    pub fn every_layer(experts: u64, active: u64) -> Moe {
        Moe {
            experts,
            active,
            shared: 0,
            dense_layers: 0,
            dense_intermediate: 0,
        }
    }

    /// Distinct experts a step of `tokens` tokens reads, expected under uniform routing:
    /// `E · (1 − (1 − 1/E)^(tokens · k))`. Decode of one token reads k; a large prefill reads all.
    pub fn experts_touched(&self, tokens: f64) -> f64 {
        let e = self.experts as f64;
        let picks = tokens * self.active as f64;
        (e * (1.0 - (1.0 - 1.0 / e).powf(picks)))
            .max(self.active as f64)
            .min(e)
    }
}

/// Local attention in some of a decoder's layers: a sliding window, or chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Sliding: tokens a query attends to, itself included (config `sliding_window`). Chunked:
    /// the chunk (`attention_chunk_size`); a query attends to the earlier tokens of its chunk,
    /// from 1 (the chunk's first) to `window`.
    pub window: u64,
    /// How many of the decoder's layers are local.
    pub layers: u64,
    pub kind: WindowKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Gemma 3's local layers.
    Sliding,
    /// Llama 4's chunked-attention layers (`layer_types` `chunked_attention`).
    Chunked,
}

impl SlidingWindow {
    /// Tokens of a local layer's KV cache after `context` tokens: the last `window − 1` (the
    /// next query brings its own), as transformers' `DynamicSlidingWindowLayer` keeps them. A
    /// chunked layer is cached in the same layer class with the chunk as its window, so it too
    /// keeps `window − 1` tokens past the first chunk, where its next query needs only those of
    /// its own chunk (`context mod window`); a server that frees the others (vLLM's chunked
    /// local attention) holds fewer, which is not modelled.
    pub fn cached(&self, context: u64) -> u64 {
        context.min(self.window - 1)
    }
}

impl LlmSpec {
    pub fn q_dim(&self) -> u64 {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> u64 {
        self.kv_heads * self.head_dim
    }

    /// Values one context token leaves in one self-attention layer's cache: its keys and values,
    /// `2 · n_kv · d_head`, or with multi-head latent attention the latent and the shared rotary
    /// key, `kv_lora_rank + qk_rope_head_dim` (one "head", whatever the heads).
    pub fn kv_width(&self) -> u64 {
        match self.mla {
            Some(m) => m.latent_width(),
            None => 2 * self.kv_dim(),
        }
    }

    /// Bytes of the cache for one context token across the layers that attend to the context:
    /// `(L − L_cross) · kv_width · b`, `kv_width` = `2 · n_kv · d_head` (MLA: the latent's width)
    /// (while the context is shorter than any sliding window; past it, see `kv_bytes`).
    pub fn kv_bytes_per_token(&self, dtype: Dtype) -> u64 {
        (self.layers - self.cross_attention_layers()) * self.kv_width() * dtype.bytes()
    }

    /// Cache bytes one context token takes on each GPU of a `tp`-way tensor-parallel instance, as
    /// the KV pool reserves them (every layer's blocks): the KV heads are split across the GPUs
    /// (a GPU keeps at least one), while an MLA latent, shared by every head, is kept whole on
    /// each (vLLM and SGLang replicate it under tensor parallelism).
    pub fn kv_bytes_per_token_per_gpu(&self, tp: u64, dtype: Dtype) -> u64 {
        let width = match self.mla {
            Some(m) => m.latent_width(),
            None => 2 * self.kv_heads.div_ceil(tp) * self.head_dim,
        };
        self.layers * width * dtype.bytes()
    }

    /// Layers that attend to the whole context.
    pub fn full_attention_layers(&self) -> u64 {
        self.layers - self.sliding.map_or(0, |w| w.layers) - self.cross_attention_layers()
    }

    /// Layers that attend to the image's vision states instead of the context.
    pub fn cross_attention_layers(&self) -> u64 {
        self.cross_attention
            .as_ref()
            .map_or(0, |c| c.layers.len() as u64)
    }

    /// K and V of one cross-attention layer for `vision_tokens` rows of vision states:
    /// `2 · n_kv · d_head · b · N_vision`.
    pub fn cross_layer_kv_bytes(&self, vision_tokens: u64, dtype: Dtype) -> u64 {
        2 * self.kv_dim() * dtype.bytes() * vision_tokens
    }

    /// K and V of every cross-attention layer (none without them): `L_cross · 2 · n_kv · d_head ·
    /// b · N_vision`, computed in prefill from the vision states and kept for every decode step.
    pub fn cross_kv_bytes(&self, vision_tokens: u64, dtype: Dtype) -> u64 {
        self.cross_attention_layers() * self.cross_layer_kv_bytes(vision_tokens, dtype)
    }

    /// `D_KV = kv_width · b · (L_full · s + L_sliding · min(s, W − 1))` (`kv_width` = `2 · n_kv ·
    /// d_head`, or an MLA latent's): the context's KV; sliding layers keep only their window,
    /// cross-attention layers none (see `cross_kv_bytes`).
    pub fn kv_bytes(&self, context_tokens: u64, dtype: Dtype) -> u64 {
        let sliding = self.sliding.map_or(0, |w| w.layers);
        self.full_attention_layers() * self.layer_kv_bytes(false, context_tokens, dtype)
            + sliding * self.layer_kv_bytes(true, context_tokens, dtype)
    }

    /// K and V (MLA: the latent) of one layer after `context_tokens`: a sliding layer
    /// (`sliding`) keeps its window.
    pub fn layer_kv_bytes(&self, sliding: bool, context_tokens: u64, dtype: Dtype) -> u64 {
        let tokens = match self.sliding {
            Some(w) if sliding => w.cached(context_tokens),
            _ => context_tokens,
        };
        self.kv_width() * dtype.bytes() * tokens
    }

    /// The same decoder at another depth, with the same share of sliding and of dense-MLP layers
    /// (rounded down) and the cross-attention layers that fall within the new depth.
    pub fn with_layers(&self, layers: u64) -> LlmSpec {
        LlmSpec {
            layers,
            sliding: self.sliding.map(|w| SlidingWindow {
                layers: w.layers * layers / self.layers,
                ..w
            }),
            moe: self.moe.map(|m| Moe {
                dense_layers: m.dense_layers * layers / self.layers,
                ..m
            }),
            cross_attention: self.cross_attention.as_ref().map(|c| CrossAttention {
                layers: c.layers.iter().copied().filter(|&i| i < layers).collect(),
                ..c.clone()
            }),
            ..self.clone()
        }
    }

    /// A decoder layer's parameters besides its MLP: attention, its biases and q/k norms, the
    /// layer's norms.
    pub fn block_params(&self) -> u64 {
        let d = self.hidden;
        if let Some(m) = self.mla {
            return m.params(d, self.heads) + self.norms_per_layer * d;
        }
        let attn = d * (self.q_dim() + 2 * self.kv_dim()) + self.q_dim() * d;
        let bias = if self.qkv_bias {
            self.q_dim() + 2 * self.kv_dim()
        } else {
            0
        };
        let qk_norm = if self.qk_norm { 2 * self.head_dim } else { 0 };
        attn + bias + qk_norm + self.norms_per_layer * d
    }

    /// Decoder layers with experts and layers with a dense MLP: (L, 0) for an MoE decoder with
    /// experts in every layer, (0, L) for a dense one.
    pub fn mlp_layers(&self) -> (u64, u64) {
        match self.moe {
            Some(m) => (self.layers - m.dense_layers, m.dense_layers),
            None => (0, self.layers),
        }
    }

    /// Parameters of one layer's MLP, `sparse` (the mixture: a router of d × E, every expert, the
    /// shared expert) or dense, each a SwiGLU of gate, up and down projections.
    pub fn mlp_params(&self, sparse: bool) -> u64 {
        let d = self.hidden;
        match self.moe {
            Some(m) if sparse => {
                m.experts * 3 * d * self.intermediate + d * m.experts + 3 * d * m.shared
            }
            Some(m) => 3 * d * m.dense_intermediate,
            None => 3 * d * self.intermediate,
        }
    }

    /// The SwiGLU widths a token runs through in one layer's MLP, `sparse` or dense: its routed
    /// experts' and the shared expert's, or the dense MLP's.
    pub fn active_mlp_width(&self, sparse: bool) -> u64 {
        match self.moe {
            Some(m) if sparse => self.intermediate * m.active + m.shared,
            Some(m) => m.dense_intermediate,
            None => self.intermediate,
        }
    }

    /// The widest SwiGLU a token runs through in any of the decoder's layers.
    pub fn peak_active_mlp_width(&self) -> u64 {
        let (sparse, dense) = self.mlp_layers();
        let width = |s: bool, layers: u64| {
            if layers > 0 {
                self.active_mlp_width(s)
            } else {
                0
            }
        };
        width(true, sparse).max(width(false, dense))
    }

    /// MLP parameters a token runs through in a layer with experts (in any layer of a dense
    /// decoder).
    pub fn active_mlp_params(&self) -> u64 {
        3 * self.hidden * self.active_mlp_width(self.moe.is_some())
    }

    pub fn params(&self) -> u64 {
        let added = self
            .cross_attention
            .as_ref()
            .map_or(0, |c| c.added_embeddings);
        let embed = (self.vocab + added) * self.hidden;
        let head = if self.tied_embeddings {
            0
        } else {
            self.vocab * self.hidden
        };
        // A cross-attention layer has what a self-attention layer has, plus RMSNorms on its
        // queries and keys (d_head each) and two tanh gates (one value each).
        let cross = self.cross_attention_layers() * (2 * self.head_dim + 2);
        let (sparse, dense) = self.mlp_layers();
        let mlps = sparse * self.mlp_params(true) + dense * self.mlp_params(false);
        embed + self.layers * self.block_params() + mlps + cross + self.hidden + head
    }
}

/// A ViT vision tower as the serving engine runs it (up to the feature layer the LLM consumes).
#[derive(Debug, Clone, PartialEq)]
pub struct VitSpec {
    /// Layers in the checkpoint.
    pub layers: u64,
    /// Layers actually run: LLaVA takes the penultimate layer's output, so 23 of CLIP-L's 24.
    pub layers_run: u64,
    pub hidden: u64,
    pub heads: u64,
    pub intermediate: u64,
    /// SwiGLU MLP (Qwen2.5-VL) rather than fc1-GELU-fc2 (CLIP).
    pub gated_mlp: bool,
    pub patch: u64,
    /// Input channels × temporal patch: the patch-embedding input width is `channels · patch²`.
    pub patch_input: u64,
    pub weights: VitWeights,
}

/// A normalisation layer over `width` channels: LayerNorm learns a weight and a bias per
/// channel, RMSNorm only a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Layer,
    Rms,
}

impl Norm {
    pub fn params(self, width: u64) -> u64 {
        match self {
            Norm::Layer => 2 * width,
            Norm::Rms => width,
        }
    }
}

/// What a tower's parameter count depends on beyond its widths: the encoder's resident weights
/// are exact only with these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitWeights {
    /// The norms inside and around the layers (Pixtral and Qwen2.5-VL: RMSNorm; CLIP, SigLIP,
    /// Qwen3-VL and Mllama: LayerNorm).
    pub norm: Norm,
    /// Biases on q, k, v and the output projection (Pixtral and Mllama have none).
    pub attention_bias: bool,
    /// Biases on the MLP's projections (all three of a gated MLP).
    pub mlp_bias: bool,
    /// A bias on the patch embedding (SigLIP, Qwen3-VL).
    pub patch_bias: bool,
    /// Learned `hidden`-wide vectors added to or beside the patches: CLIP's class token and
    /// position table, SigLIP's positions, Qwen3-VL's interpolated position grid, Mllama's
    /// per-tile and per-aspect-ratio tables. 0 where positions are rotary only.
    pub learned_vectors: u64,
    /// Norms outside the layers (CLIP: pre and post; SigLIP: post; Pixtral: pre).
    pub outer_norms: u64,
    /// Learned scalar gates (Mllama: on its position tables and its global layers' blocks).
    pub gates: u64,
}

impl VitSpec {
    pub fn layer_params(&self) -> u64 {
        let (d, i, w) = (self.hidden, self.intermediate, self.weights);
        let attn = 4 * d * d + if w.attention_bias { 4 * d } else { 0 };
        let mlp = match (self.gated_mlp, w.mlp_bias) {
            (true, bias) => 3 * d * i + if bias { 2 * i + d } else { 0 },
            (false, bias) => 2 * d * i + if bias { i + d } else { 0 },
        };
        attn + mlp + 2 * w.norm.params(d)
    }

    pub fn params(&self) -> u64 {
        let (d, w) = (self.hidden, self.weights);
        let patch_bias = if w.patch_bias { d } else { 0 };
        self.patch_input * self.patch * self.patch * d
            + patch_bias
            + w.learned_vectors * d
            + w.outer_norms * w.norm.params(d)
            + w.gates
            + self.layers * self.layer_params()
    }
}

/// How an image becomes LLM tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum VisualTokenRule {
    /// LLaVA-1.5: every image is resized (padded) to a fixed square; `(image/patch)²` patch tokens
    /// reach the LLM, the CLS token is dropped (`vision_feature_select_strategy: default`).
    FixedSquare { image_size: u64, patch: u64 },
    /// Qwen2.5-VL: sides rounded to multiples of `patch · merge` within [min_pixels, max_pixels],
    /// then each `merge × merge` block of patches becomes one LLM token.
    Dynamic {
        patch: u64,
        merge: u64,
        min_pixels: u64,
        max_pixels: u64,
    },
    /// LLaVA-NeXT "anyres" (transformers `LlavaNextProcessor`): the image is fitted to the best of
    /// `pinpoints` (height, width) and cut into `tile`-pixel tiles, each encoded on its own, plus
    /// the whole image resized to one tile. The tiles' features lose the rows or columns that were
    /// padding, and each remaining row ends with a learned newline token.
    AnyRes {
        tile: u64,
        patch: u64,
        pinpoints: Vec<(u64, u64)>,
    },
    /// Pixtral and Mistral 3 (transformers `PixtralProcessor`): the image keeps its own
    /// resolution, scaled down only to fit `longest_edge`, in tokens of `patch · merge` pixels
    /// (`merge × merge` patches, merged by Mistral 3's projector; a partial token counts);
    /// each row of patches ends with a break token and the last with an end token. Those are
    /// text tokens: the LLM's input has `rows · (cols + 1)` tokens, of which `rows · cols` are
    /// vision features.
    NativeResolution {
        longest_edge: u64,
        patch: u64,
        merge: u64,
    },
    /// Gemma 3 (transformers `Gemma3Processor`, pan-and-scan off, as the checkpoints' processors
    /// ship): every image is resized to `image_size` square; its `(image/patch)²` patches are
    /// average-pooled to `tokens` features, which the LLM sees between a begin-of-image and an
    /// end-of-image token.
    Pooled {
        image_size: u64,
        patch: u64,
        tokens: u64,
    },
    /// Llama-3.2-Vision (transformers `MllamaImageProcessor`): the image is fitted to the best
    /// canvas of at most `max_tiles` tiles of `tile` pixels (`get_optimal_tiled_canvas`), and
    /// padded with empty tiles to `max_tiles`; the encoder runs every tile (the padding too) as
    /// `(tile/patch)² + 1` tokens (CLS kept), and all of them reach the cross-attention layers.
    /// The LLM's input holds one `<|image|>` token per image.
    Tiled {
        tile: u64,
        patch: u64,
        max_tiles: u64,
    },
    /// Llama 4 (transformers `Llama4ImageProcessor`, `Llama4Processor`): the image is fitted to
    /// the best canvas of at most `max_tiles` tiles of `tile` pixels (the same choice as
    /// `Tiled`, in float32) and cut into its tiles, plus a global tile (the whole image resized
    /// to one) when there is more than one. The encoder runs each tile as its own sequence of
    /// `(tile/patch)² + 1` tokens (CLS kept, dropped after the last layer); each tile's patches
    /// are pixel-shuffled `merge × merge` into `(tile/patch/merge)²` features. The LLM's input
    /// holds the features as `<|patch|>` tokens, and as text `<|image_start|>`, one separator
    /// after each canvas tile (when there are several), `<|image|>` before the global tile's and
    /// `<|image_end|>`.
    TiledGlobal {
        tile: u64,
        patch: u64,
        merge: u64,
        max_tiles: u64,
    },
    /// Kimi-K2.5 (transformers `Kimi_K25ImageProcessor.navit_resize`): the image keeps its own
    /// resolution, scaled down only to at most `max_patches` patches of `patch` pixels and
    /// `max_side` patches a side, then padded with zeros to whole tokens of `patch · merge`
    /// pixels. The encoder runs every patch of the padded image; each `merge × merge` block is
    /// one feature and one `<|media_pad|>` token of the LLM's input.
    Navit {
        patch: u64,
        merge: u64,
        max_patches: u64,
        max_side: u64,
    },
}

/// Pixel size an image is resized to before patching, and the token counts that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageTokens {
    pub resized_width: u64,
    pub resized_height: u64,
    /// Sequences the encoder runs the image as (LLaVA-NeXT: its tiles and the base image).
    pub tiles: u64,
    /// Tokens through the ViT (patches, plus CLS where the encoder has one), over all tiles.
    pub encoder_tokens: u64,
    /// Tokens entering the projector (LLaVA drops CLS; Qwen's merger takes every patch).
    pub projector_tokens: u64,
    /// Rows of vision features the LLM receives (what the modality boundary ships).
    pub feature_tokens: u64,
    /// Tokens the image takes in the LLM's input: the features plus any text tokens the
    /// processor puts between them (Pixtral's row breaks).
    pub llm_tokens: u64,
}

impl VisualTokenRule {
    pub fn tokens(&self, width: u64, height: u64) -> Result<ImageTokens, InputError> {
        if width == 0 || height == 0 {
            return Err(InputError::new(format!(
                "image size {width}×{height}: both sides must be at least 1 pixel"
            )));
        }
        match self {
            &VisualTokenRule::FixedSquare { image_size, patch } => {
                let side = image_size / patch;
                Ok(ImageTokens {
                    resized_width: image_size,
                    resized_height: image_size,
                    tiles: 1,
                    encoder_tokens: side * side + 1,
                    projector_tokens: side * side,
                    feature_tokens: side * side,
                    llm_tokens: side * side,
                })
            }
            &VisualTokenRule::Dynamic {
                patch,
                merge,
                min_pixels,
                max_pixels,
            } => {
                let (w, h) =
                    qwen_smart_resize(width, height, patch * merge, min_pixels, max_pixels)?;
                let patches = (w / patch) * (h / patch);
                Ok(ImageTokens {
                    resized_width: w,
                    resized_height: h,
                    tiles: 1,
                    encoder_tokens: patches,
                    projector_tokens: patches,
                    feature_tokens: patches / (merge * merge),
                    llm_tokens: patches / (merge * merge),
                })
            }
            VisualTokenRule::AnyRes {
                tile,
                patch,
                pinpoints,
            } => Ok(anyres_tokens(width, height, *tile, *patch, pinpoints)),
            &VisualTokenRule::Pooled {
                image_size,
                patch,
                tokens,
            } => {
                let patches = (image_size / patch).pow(2);
                Ok(ImageTokens {
                    resized_width: image_size,
                    resized_height: image_size,
                    tiles: 1,
                    encoder_tokens: patches,
                    projector_tokens: patches,
                    feature_tokens: tokens,
                    llm_tokens: tokens + 2,
                })
            }
            &VisualTokenRule::NativeResolution {
                longest_edge,
                patch,
                merge,
            } => native_resolution_tokens(width, height, longest_edge, patch, merge),
            &VisualTokenRule::Tiled {
                tile,
                patch,
                max_tiles,
            } => {
                let (canvas_h, canvas_w) =
                    tiled_canvas(width, height, max_tiles, tile, Scales::Float64);
                let per_tile = (tile / patch).pow(2) + 1;
                Ok(ImageTokens {
                    resized_width: canvas_w,
                    resized_height: canvas_h,
                    // The tiles attend to each other: one sequence through the encoder.
                    tiles: 1,
                    encoder_tokens: max_tiles * per_tile,
                    projector_tokens: max_tiles * per_tile,
                    feature_tokens: max_tiles * per_tile,
                    llm_tokens: 1,
                })
            }
            &VisualTokenRule::TiledGlobal {
                tile,
                patch,
                merge,
                max_tiles,
            } => Ok(tiled_global_tokens(
                width, height, tile, patch, merge, max_tiles,
            )),
            &VisualTokenRule::Navit {
                patch,
                merge,
                max_patches,
                max_side,
            } => Ok(navit_tokens(
                width,
                height,
                patch,
                merge,
                max_patches,
                max_side,
            )),
        }
    }
}

/// Kimi-K2.5's token count (`navit_resize`, `Kimi_K25Processor.replace_image_token`), with the
/// processor's own float operations so the truncations agree to the pixel.
fn navit_tokens(
    width: u64,
    height: u64,
    patch: u64,
    merge: u64,
    max_patches: u64,
    max_side: u64,
) -> ImageTokens {
    let (w, h) = (width as f64, height as f64);
    // max(1.0, side // patch): whole patches, at least one.
    let patches = ((height / patch).max(1) * (width / patch).max(1)) as f64;
    let limit = (max_side * patch) as f64;
    let scale = 1f64
        .min((max_patches as f64 / patches).sqrt())
        .min(limit / h)
        .min(limit / w);
    // Python's int() truncates; the side is at least 1 and at most the per-side limit.
    let new_h = ((h * scale) as u64).clamp(1, max_side * patch);
    let new_w = ((w * scale) as u64).clamp(1, max_side * patch);
    let step = patch * merge;
    let (pad_h, pad_w) = (new_h.div_ceil(step) * step, new_w.div_ceil(step) * step);
    let grid = (pad_h / patch) * (pad_w / patch);
    let tokens = grid / (merge * merge);
    ImageTokens {
        resized_width: pad_w,
        resized_height: pad_h,
        tiles: 1,
        encoder_tokens: grid,
        projector_tokens: grid,
        feature_tokens: tokens,
        llm_tokens: tokens,
    }
}

/// Llama 4's token count (`get_best_fit`, `Llama4Processor._prompt_split_image`).
fn tiled_global_tokens(
    width: u64,
    height: u64,
    tile: u64,
    patch: u64,
    merge: u64,
    max_tiles: u64,
) -> ImageTokens {
    let (canvas_h, canvas_w) = tiled_canvas(width, height, max_tiles, tile, Scales::Float32);
    let canvas = (canvas_h / tile) * (canvas_w / tile);
    // The global tile, and a separator after each canvas tile, come with several.
    let (tiles, separators) = if canvas > 1 {
        (canvas + 1, canvas)
    } else {
        (1, 0)
    };
    let side = tile / patch;
    let features = tiles * (side / merge).pow(2);
    ImageTokens {
        resized_width: canvas_w,
        resized_height: canvas_h,
        tiles,
        encoder_tokens: tiles * (side * side + 1),
        // The projector (one Linear) takes the vision model's shuffled features.
        projector_tokens: features,
        feature_tokens: features,
        // <|image_start|>, <|image|>, <|image_end|>.
        llm_tokens: features + separators + 3,
    }
}

/// transformers' `get_optimal_tiled_canvas` (Mllama, numpy: float64): see `tiled_canvas`.
pub fn optimal_tiled_canvas(width: u64, height: u64, max_tiles: u64, tile: u64) -> (u64, u64) {
    tiled_canvas(width, height, max_tiles, tile, Scales::Float64)
}

/// The precision a processor compares canvas scales in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scales {
    /// Mllama's processor (numpy).
    Float64,
    /// Llama 4's `get_best_fit` (torch, integer sizes divided into the default float32).
    Float32,
}

/// transformers' `get_optimal_tiled_canvas` (Mllama) and `get_best_fit` (Llama 4): of the
/// canvases of (w, h) tiles with w · h ≤ `max_tiles`, the one needing the least upscaling (scale
/// = the smaller of the two sides' ratios); if every one must shrink the image, the one shrinking
/// it least; ties to the smallest area, then to the first in (w, h) order (two canvases of the
/// least area cannot tie: each side's scale is a different one's limit only where both are
/// whole tiles, one canvas). Returns (height, width) in pixels.
pub fn tiled_canvas(
    width: u64,
    height: u64,
    max_tiles: u64,
    tile: u64,
    precision: Scales,
) -> (u64, u64) {
    // get_all_supported_aspect_ratios lists (w, h); the processor reads each pair as (height,
    // width) of the canvas, as here.
    let mut canvases = Vec::new();
    for a in 1..=max_tiles {
        for b in 1..=max_tiles {
            if a * b <= max_tiles {
                canvases.push((a * tile, b * tile));
            }
        }
    }
    let scale = |&(h, w): &(u64, u64)| match precision {
        Scales::Float64 => (w as f64 / width as f64).min(h as f64 / height as f64),
        Scales::Float32 => f64::from((w as f32 / width as f32).min(h as f32 / height as f32)),
    };
    let scales: Vec<f64> = canvases.iter().map(scale).collect();
    let up = scales
        .iter()
        .copied()
        .filter(|&s| s >= 1.0)
        .reduce(f64::min);
    let chosen = up.unwrap_or_else(|| {
        scales
            .iter()
            .copied()
            .reduce(f64::max)
            .expect("max_tiles ≥ 1 gives a canvas")
    });
    let mut best = None;
    for (c, s) in canvases.iter().zip(&scales) {
        // numpy's argmin keeps the first of equal areas.
        if *s == chosen && best.is_none_or(|(h, w): (u64, u64)| c.0 * c.1 < h * w) {
            best = Some(*c);
        }
    }
    best.expect("the chosen scale is one of the canvases'")
}

/// transformers' `select_best_resolution`: the pinpoint (height, width) that keeps the most of the
/// image's pixels once scaled to fit, and of those the one that wastes the fewest. Returns
/// (height, width).
pub fn select_best_resolution(width: u64, height: u64, pinpoints: &[(u64, u64)]) -> (u64, u64) {
    let (w, h) = (width as f64, height as f64);
    let mut best = pinpoints[0];
    let (mut best_effective, mut best_wasted) = (0u64, u64::MAX);
    for &(ph, pw) in pinpoints {
        let scale = (pw as f64 / w).min(ph as f64 / h);
        // Python's int() truncates.
        let (dw, dh) = ((w * scale) as u64, (h * scale) as u64);
        let effective = (dw * dh).min(width * height);
        let wasted = pw * ph - effective;
        if effective > best_effective || (effective == best_effective && wasted < best_wasted) {
            (best, best_effective, best_wasted) = ((ph, pw), effective, wasted);
        }
    }
    best
}

/// LLaVA-NeXT's token count (`LlavaNextProcessor._get_number_of_features`, CLS dropped).
fn anyres_tokens(
    width: u64,
    height: u64,
    tile: u64,
    patch: u64,
    pinpoints: &[(u64, u64)],
) -> ImageTokens {
    let side = tile / patch;
    let (best_h, best_w) = select_best_resolution(width, height, pinpoints);
    let (rows, cols) = (best_h / tile, best_w / tile);
    let (mut cur_h, mut cur_w) = (side * rows, side * cols);
    // Python's int(round(x, 7)): round away float noise at the 7th decimal, then truncate.
    let trunc7 = |x: f64| ((x * 1e7).round_ties_even() / 1e7) as u64;
    let (w, h) = (width as f64, height as f64);
    if w / h > cur_w as f64 / cur_h as f64 {
        let new_h = trunc7(h * (cur_w as f64 / w));
        cur_h -= (cur_h - new_h) / 2 * 2;
    } else {
        let new_w = trunc7(w * (cur_h as f64 / h));
        cur_w -= (cur_w - new_w) / 2 * 2;
    }
    let tiles = 1 + rows * cols;
    let features = cur_h * cur_w + cur_h + side * side;
    ImageTokens {
        resized_width: best_w,
        resized_height: best_h,
        tiles,
        encoder_tokens: tiles * (side * side + 1),
        projector_tokens: tiles * side * side,
        feature_tokens: features,
        llm_tokens: features,
    }
}

/// Pixtral's token count (`get_resize_output_image_size` and `PixtralProcessor`).
fn native_resolution_tokens(
    width: u64,
    height: u64,
    longest_edge: u64,
    patch: u64,
    merge: u64,
) -> Result<ImageTokens, InputError> {
    let (mut w, mut h) = (width as f64, height as f64);
    let edge = longest_edge as f64;
    // The same float operations as the processor, so the floors agree to the pixel.
    let ratio = (h / edge).max(w / edge);
    if ratio > 1.0 {
        h = (h / ratio).floor();
        w = (w / ratio).floor();
    }
    if h < 1.0 || w < 1.0 {
        return Err(InputError::new(format!(
            "image {width}×{height}: scaled to fit {longest_edge} px its short side is under one pixel \
             (the processor would give it no patches)"
        )));
    }
    let step = patch * merge;
    let rows = (h as u64 - 1) / step + 1;
    let cols = (w as u64 - 1) / step + 1;
    let patches = rows * cols * merge * merge;
    Ok(ImageTokens {
        resized_width: cols * step,
        resized_height: rows * step,
        tiles: 1,
        encoder_tokens: patches,
        projector_tokens: patches,
        feature_tokens: rows * cols,
        llm_tokens: rows * (cols + 1),
    })
}

/// Qwen2-VL's `smart_resize` (transformers `image_processing_qwen2_vl.py`): round each side to the
/// nearest multiple of `factor` (Python's round, ties to even), then scale into the pixel range.
/// Returns (width, height).
pub fn qwen_smart_resize(
    width: u64,
    height: u64,
    factor: u64,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u64, u64), InputError> {
    let (w, h) = (width as f64, height as f64);
    if w.max(h) / w.min(h) > 200.0 {
        return Err(InputError::new(format!(
            "image {width}×{height}: aspect ratio over 200 is not allowed by Qwen2.5-VL's preprocessor"
        )));
    }
    let f = factor as f64;
    let round_even = |x: f64| x.round_ties_even();
    let mut h_bar = (round_even(h / f) * f).max(f);
    let mut w_bar = (round_even(w / f) * f).max(f);
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = ((h / beta / f).floor() * f).max(f);
        w_bar = ((w / beta / f).floor() * f).max(f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((w_bar as u64, h_bar as u64))
}

/// Maps vision features into the LLM's embedding space.
#[derive(Debug, Clone, PartialEq)]
pub enum ProjectorSpec {
    /// LLaVA `mlp2x_gelu`: Linear(d_vit → d) · GELU · Linear(d → d), biased when `bias`
    /// (`multimodal_projector_bias`).
    Mlp2xGelu { input: u64, output: u64, bias: bool },
    /// Qwen2.5-VL patch merger: norm (RMSNorm; Qwen3-VL: LayerNorm), concatenate merge²
    /// patches, Linear · GELU · Linear.
    PatchMerger {
        vit_hidden: u64,
        merge: u64,
        output: u64,
        norm: Norm,
    },
    /// Gemma 3: average-pool the patches, RMSNorm, one Linear (no bias) into the LLM's width.
    PooledLinear { vit_hidden: u64, output: u64 },
    /// Llama-3.2-Vision: one Linear with bias from the vision output (the last layer's states
    /// concatenated with the taps', `VisionSpec::feature_taps`) into the LLM's width.
    Linear { input: u64, output: u64 },
    /// Mistral 3 (`Mistral3MultiModalProjector`): RMSNorm over the ViT width, a patch merger
    /// (each `merge × merge` block of patches concatenated and brought back to the ViT width by
    /// one Linear without bias), then Linear · GELU · Linear into the LLM's width, biased when
    /// `bias` (`multimodal_projector_bias`).
    MergedMlp {
        vit_hidden: u64,
        merge: u64,
        output: u64,
        bias: bool,
    },
    /// Llama 4: the vision model's adapter (`Llama4VisionPixelShuffleMLP`: each `merge × merge`
    /// block of patches concatenated by the pixel shuffle, then Linear · GELU · Linear · GELU
    /// into `adapter` wide) and the multimodal projector (one Linear into the LLM's width), all
    /// without biases. transformers counts the adapter as the vision model's: what its
    /// projector receives, and a pre-projector cut ships, is the adapter's output.
    ShuffledMlpLinear {
        vit_hidden: u64,
        merge: u64,
        adapter: u64,
        output: u64,
    },
}

impl ProjectorSpec {
    pub fn params(&self) -> u64 {
        match *self {
            ProjectorSpec::Mlp2xGelu {
                input,
                output,
                bias,
            } => input * output + output * output + if bias { 2 * output } else { 0 },
            ProjectorSpec::PatchMerger {
                vit_hidden,
                merge,
                output,
                norm,
            } => {
                let wide = vit_hidden * merge * merge;
                norm.params(vit_hidden) + wide * wide + wide + wide * output + output
            }
            ProjectorSpec::PooledLinear { vit_hidden, output } => vit_hidden + vit_hidden * output,
            ProjectorSpec::Linear { input, output } => input * output + output,
            ProjectorSpec::MergedMlp {
                vit_hidden,
                merge,
                output,
                bias,
            } => {
                let biases = if bias { 2 * output } else { 0 };
                Norm::Rms.params(vit_hidden)
                    + vit_hidden * merge * merge * vit_hidden
                    + vit_hidden * output
                    + output * output
                    + biases
            }
            ProjectorSpec::ShuffledMlpLinear {
                vit_hidden,
                merge,
                adapter,
                output,
            } => vit_hidden * merge * merge * adapter + adapter * adapter + adapter * output,
        }
    }

    /// Width of one token entering the projector (what a pre-projector cut ships per ViT token).
    pub fn input_width(&self) -> u64 {
        match *self {
            ProjectorSpec::Mlp2xGelu { input, .. } | ProjectorSpec::Linear { input, .. } => input,
            ProjectorSpec::ShuffledMlpLinear { adapter, .. } => adapter,
            ProjectorSpec::PatchMerger { vit_hidden, .. }
            | ProjectorSpec::PooledLinear { vit_hidden, .. }
            | ProjectorSpec::MergedMlp { vit_hidden, .. } => vit_hidden,
        }
    }

    pub fn output_width(&self) -> u64 {
        match *self {
            ProjectorSpec::Mlp2xGelu { output, .. }
            | ProjectorSpec::PatchMerger { output, .. }
            | ProjectorSpec::PooledLinear { output, .. }
            | ProjectorSpec::Linear { output, .. }
            | ProjectorSpec::MergedMlp { output, .. }
            | ProjectorSpec::ShuffledMlpLinear { output, .. } => output,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionSpec {
    pub vit: VitSpec,
    pub tokens: VisualTokenRule,
    pub projector: ProjectorSpec,
    /// Qwen2.5-VL ViT: attention inside windows of `window_tokens` patches except at these blocks.
    pub window: Option<WindowAttention>,
    /// Qwen3-VL DeepStack: ViT layers (0-based) whose outputs go through a projector of their own
    /// each and are added to the LLM's first layers — feature sets beyond the main one that the
    /// vision side hands over.
    pub deepstack: Vec<u64>,
    /// Llama-3.2-Vision: hidden-state indices (0 the patch embeddings, k the output of layer k)
    /// whose states are concatenated with the last layer's as the projector's input. A cut inside
    /// the encoder after layer l ships those with index ≤ l as well.
    pub feature_taps: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowAttention {
    pub window_patches: u64,
    pub full_attention_blocks: Vec<u64>,
}

impl VisionSpec {
    /// Vision tower, projector(s) and learned separators: everything resident besides the LLM.
    pub fn params(&self) -> u64 {
        // LLaVA-NeXT learns the newline token that ends each row of tile features.
        let newline = match self.tokens {
            VisualTokenRule::AnyRes { .. } => self.projector.output_width(),
            _ => 0,
        };
        // Qwen3-VL's DeepStack mergers normalise after the shuffle, over merge² · d channels.
        let deepstack = match self.projector {
            ProjectorSpec::PatchMerger {
                vit_hidden,
                merge,
                norm,
                ..
            } => {
                self.projector.params() + norm.params(vit_hidden * merge * merge)
                    - norm.params(vit_hidden)
            }
            _ => self.projector.params(),
        };
        self.vit.params()
            + self.projector.params()
            + self.deepstack.len() as u64 * deepstack
            + newline
    }
}

/// A model hetsim can simulate: an optional vision side and a decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub vision: Option<VisionSpec>,
    pub llm: LlmSpec,
}

/// The most parameters a model may have: 10¹⁴, 250 times the largest published dense model.
pub const MAX_PARAMS: u64 = 100_000_000_000_000;
/// The most KV-cache bytes one token may take (fp32): 1 GiB, 2,000 times LLaMA-3.1-405B's.
pub const MAX_KV_BYTES_PER_TOKEN: u64 = 1 << 30;

impl ModelSpec {
    /// Refuses a model whose totals leave the range the simulator's arithmetic is exact in (the
    /// config reader's field limits keep each product inside u64 up to here).
    pub fn check_sizes(&self) -> Result<(), InputError> {
        let params = self.llm.params() + self.vision.as_ref().map_or(0, |v| v.params());
        if params > MAX_PARAMS {
            return Err(InputError::new(format!(
                "{} parameters: allowed at most {}",
                crate::bounds::Num(params as f64),
                crate::bounds::Num(MAX_PARAMS as f64)
            )));
        }
        let kv = self.llm.kv_bytes_per_token(Dtype::Fp32);
        if kv > MAX_KV_BYTES_PER_TOKEN {
            return Err(InputError::new(format!(
                "{kv} KV-cache bytes per token (fp32): allowed at most {MAX_KV_BYTES_PER_TOKEN}"
            )));
        }
        Ok(())
    }

    /// Tokens for one image, by this model's own rule.
    pub fn image_tokens(&self, width: u64, height: u64) -> Result<ImageTokens, InputError> {
        match &self.vision {
            Some(v) => v.tokens.tokens(width, height),
            None => Err(InputError::new(format!(
                "model `{}` is text-only: it takes no images",
                self.name
            ))),
        }
    }

    /// `D_emb = N_v · d · b`: the projector's output for `feature_tokens` rows of features (times
    /// the feature sets: Qwen3-VL's DeepStack hands over three more).
    pub fn emb_bytes(&self, feature_tokens: u64, dtype: Dtype) -> u64 {
        let sets = 1 + self.vision.as_ref().map_or(0, |v| v.deepstack.len() as u64);
        sets * feature_tokens * self.llm.hidden * dtype.bytes()
    }

    pub fn llm_weight_bytes(&self, dtype: Dtype) -> u64 {
        self.llm.params() * dtype.bytes()
    }

    pub fn vision_weight_bytes(&self, dtype: Dtype) -> u64 {
        self.vision.as_ref().map_or(0, |v| v.params()) * dtype.bytes()
    }
}
