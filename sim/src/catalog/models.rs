//! Built-in models and the Hugging Face `config.json` reader.
//!
//! Built-in shapes are written out here (readable, no file needed at run time) and checked in tests
//! against the configs published with the checkpoints (`tests/fixtures/hf-configs/`, with their sources).
//! Qwen2.5-VL-32B/72B have no stored config here: their numbers come from the model cards
//! (hidden 5120/8192, 64/80 layers, 40/64 heads, 8 KV heads) and are marked as such.

use std::path::Path;

use serde_json::{Map, Value};

use super::families::fields::{object, uint, uint_or};
use super::model::*;
use crate::error::InputError;

const CLIP_L_336: VitSpec = VitSpec {
    layers: 24,
    layers_run: 23,
    hidden: 1024,
    heads: 16,
    intermediate: 4096,
    gated_mlp: false,
    patch: 14,
    patch_input: 3,
    weights: clip_weights(336, 14),
};

/// CLIP's tower: LayerNorms (one before the layers, one after), biases everywhere but the patch
/// embedding, a class token and a learned position per patch and for the class token.
pub const fn clip_weights(image_size: u64, patch: u64) -> VitWeights {
    let side = image_size / patch;
    VitWeights {
        norm: Norm::Layer,
        attention_bias: true,
        mlp_bias: true,
        patch_bias: false,
        learned_vectors: 1 + side * side + 1,
        outer_norms: 2,
        gates: 0,
    }
}

/// Qwen2-VL / Qwen2.5-VL's tower: biases on every projection but the patch embedding, rotary
/// positions only; Qwen2-VL's norms are LayerNorms, Qwen2.5-VL's RMSNorms.
const fn qwen_weights(norm: Norm) -> VitWeights {
    VitWeights {
        norm,
        attention_bias: true,
        mlp_bias: true,
        patch_bias: false,
        learned_vectors: 0,
        outer_norms: 0,
        gates: 0,
    }
}

fn llava(name: &str, llm: LlmSpec) -> ModelSpec {
    let d = llm.hidden;
    ModelSpec {
        name: name.to_string(),
        vision: Some(VisionSpec {
            vit: CLIP_L_336,
            tokens: VisualTokenRule::FixedSquare {
                image_size: 336,
                patch: 14,
            },
            projector: ProjectorSpec::Mlp2xGelu {
                input: 1024,
                output: d,
                bias: true,
            },
            window: None,
            deepstack: Vec::new(),
            feature_taps: Vec::new(),
        }),
        llm,
    }
}

/// Qwen2.5-VL's processor defaults (`preprocessor_config.json`): 56×56 ≤ pixels ≤ 28·28·16384.
pub const QWEN_MIN_PIXELS: u64 = 3136;
pub const QWEN_MAX_PIXELS: u64 = 12_845_056;

fn qwen25_vl(name: &str, vit_intermediate: u64, llm: LlmSpec) -> ModelSpec {
    let d = llm.hidden;
    ModelSpec {
        name: name.to_string(),
        vision: Some(VisionSpec {
            vit: VitSpec {
                layers: 32,
                layers_run: 32,
                hidden: 1280,
                heads: 16,
                intermediate: vit_intermediate,
                gated_mlp: true,
                patch: 14,
                patch_input: 3 * 2,
                weights: qwen_weights(Norm::Rms),
            },
            tokens: VisualTokenRule::Dynamic {
                patch: 14,
                merge: 2,
                min_pixels: QWEN_MIN_PIXELS,
                max_pixels: QWEN_MAX_PIXELS,
            },
            projector: ProjectorSpec::PatchMerger {
                vit_hidden: 1280,
                merge: 2,
                output: d,
                norm: Norm::Rms,
            },
            // window_size 112 px = 8×8 patches of 14 px.
            window: Some(WindowAttention {
                window_patches: 64,
                full_attention_blocks: vec![7, 15, 23, 31],
            }),
            deepstack: Vec::new(),
            feature_taps: Vec::new(),
        }),
        llm,
    }
}

fn llama(
    layers: u64,
    hidden: u64,
    heads: u64,
    kv_heads: u64,
    intermediate: u64,
    vocab: u64,
) -> LlmSpec {
    LlmSpec {
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        intermediate,
        vocab,
        tied_embeddings: false,
        qkv_bias: false,
        qk_norm: false,
        norms_per_layer: 2,
        sliding: None,
        moe: None,
        cross_attention: None,
        mla: None,
    }
}

fn qwen2(
    layers: u64,
    hidden: u64,
    heads: u64,
    kv_heads: u64,
    intermediate: u64,
    vocab: u64,
    tied: bool,
) -> LlmSpec {
    LlmSpec {
        tied_embeddings: tied,
        qkv_bias: true,
        ..llama(layers, hidden, heads, kv_heads, intermediate, vocab)
    }
}

/// Names of the built-in models, in catalog order.
pub const BUILTIN_MODELS: [&str; 10] = [
    "llava-1.5-7b",
    "llava-1.5-13b",
    "qwen2.5-vl-3b",
    "qwen2.5-vl-7b",
    "qwen2.5-vl-32b",
    "qwen2.5-vl-72b",
    "vicuna-7b-v1.5",
    "llama-2-7b",
    "llama-2-13b",
    "llama-3.1-8b",
];

pub fn builtin_model(name: &str) -> Option<ModelSpec> {
    let text = |name: &str, llm| ModelSpec {
        name: name.to_string(),
        vision: None,
        llm,
    };
    Some(match name {
        "llava-1.5-7b" => llava(name, llama(32, 4096, 32, 32, 11008, 32064)),
        "llava-1.5-13b" => llava(name, llama(40, 5120, 40, 40, 13824, 32064)),
        "qwen2.5-vl-3b" => qwen25_vl(name, 3420, qwen2(36, 2048, 16, 2, 11008, 151936, true)),
        "qwen2.5-vl-7b" => qwen25_vl(name, 3420, qwen2(28, 3584, 28, 4, 18944, 152064, false)),
        "qwen2.5-vl-32b" => qwen25_vl(name, 3456, qwen2(64, 5120, 40, 8, 27648, 152064, false)),
        "qwen2.5-vl-72b" => qwen25_vl(name, 3456, qwen2(80, 8192, 64, 8, 29568, 152064, false)),
        "vicuna-7b-v1.5" | "llama-2-7b" => text(name, llama(32, 4096, 32, 32, 11008, 32000)),
        "llama-2-13b" => text(name, llama(40, 5120, 40, 40, 13824, 32000)),
        "llama-3.1-8b" => text(name, llama(32, 4096, 32, 8, 14336, 128256)),
        _ => return None,
    })
}

/// What a Hugging Face `config.json` describes.
#[derive(Debug, Clone, PartialEq)]
pub enum HfModel {
    /// An LLM, with or without a vision side.
    Model(Box<ModelSpec>),
    /// A vision encoder alone (a CLIP checkpoint): it has cuts inside it, but nothing to serve.
    VisionOnly {
        name: String,
        vit: VitSpec,
        tokens: VisualTokenRule,
    },
}

/// Reads a `config.json`; `name` is what hetsim will call the model (the file stem by default).
pub fn load_hf_config(path: &Path) -> Result<HfModel, InputError> {
    let text = crate::input::read_text(path, "model config")?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        InputError::new(format!(
            "{}: not valid JSON (line {}, column {}): {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })?;
    let name = path
        .parent()
        .filter(|_| path.file_name().is_some_and(|f| f == "config.json"))
        .and_then(|p| p.file_name())
        .or_else(|| path.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string());
    parse_hf_config(&name, &value).map_err(|e| e.context(path.display().to_string()))
}

pub fn parse_hf_config(name: &str, value: &Value) -> Result<HfModel, InputError> {
    let top = value
        .as_object()
        .ok_or_else(|| InputError::new("config.json must be a JSON object"))?;
    let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
    match model_type {
        "llava" | "llava_next" => super::families::llava::parse(name, top, model_type),
        "mistral3" => super::families::mistral3::parse(name, top),
        "gemma3" => super::families::gemma3::parse(name, top),
        "qwen3_vl" | "qwen3_vl_moe" => super::families::qwen3_vl::parse(name, top, model_type),
        "mixtral" => super::families::mixtral::parse(name, top),
        "mllama" => super::families::mllama::parse(name, top),
        "llama4" => super::families::llama4::parse(name, top),
        "kimi_k25" => super::families::kimi_k25::parse(name, top),
        "qwen2_5_vl" | "qwen2_vl" => {
            let llm = decoder(top, true)?;
            let v = object(top, "vision_config")?;
            let vision = qwen_vision(v, model_type).map_err(|e| e.context("vision_config"))?;
            checked(ModelSpec {
                name: name.to_string(),
                vision: Some(vision),
                llm,
            })
        }
        "clip" | "clip_vision_model" => {
            let vision = if model_type == "clip" {
                object(top, "vision_config")?
            } else {
                top
            };
            let (vit, tokens) = super::families::llava::clip_vision(vision, -1)?;
            check_vit_heads(&vit)?;
            Ok(HfModel::VisionOnly {
                name: name.to_string(),
                vit,
                tokens,
            })
        }
        "" => Err(InputError::new(
            "missing field `model_type`: hetsim needs it to know the architecture",
        )),
        _ if top.contains_key("num_hidden_layers") => {
            dense_full_attention(top, model_type)?;
            let qkv_bias = model_type == "qwen2";
            checked(ModelSpec {
                name: name.to_string(),
                vision: None,
                llm: decoder(top, qkv_bias)?,
            })
        }
        other => Err(InputError::new(format!(
            "model_type `{other}` is not supported: hetsim reads {}",
            super::families::KNOWN_MODEL_TYPES
        ))),
    }
}

/// Qwen2-VL / Qwen2.5-VL `vision_config`: a ViT with dynamic resolution and a patch merger.
fn qwen_vision(v: &Map<String, Value>, model_type: &str) -> Result<VisionSpec, InputError> {
    let merge = uint(v, "spatial_merge_size")?;
    let patch = uint(v, "patch_size")?;
    let hidden = uint(v, "hidden_size")?;
    let out = uint(v, "out_hidden_size")?;
    let window_px = uint_or(v, "window_size", 0)?;
    let norm = if model_type == "qwen2_5_vl" {
        Norm::Rms
    } else {
        Norm::Layer
    };
    let full: Vec<u64> = match v.get("fullatt_block_indexes") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    };
    let vit = VitSpec {
        layers: uint(v, "depth")?,
        layers_run: uint(v, "depth")?,
        hidden,
        heads: uint(v, "num_heads")?,
        intermediate: uint(v, "intermediate_size")?,
        gated_mlp: model_type == "qwen2_5_vl",
        patch,
        patch_input: uint_or(v, "in_chans", 3)? * uint_or(v, "temporal_patch_size", 2)?,
        weights: qwen_weights(norm),
    };
    let window = (window_px > 0).then(|| WindowAttention {
        window_patches: (window_px / patch).pow(2),
        full_attention_blocks: full,
    });
    if window_px > 0 && window_px < patch {
        return Err(InputError::new(format!(
            "field `window_size` = {window_px} is smaller than `patch_size` = {patch}: a window holds at least one patch"
        )));
    }
    check_vit_heads(&vit)?;
    Ok(VisionSpec {
        vit,
        tokens: VisualTokenRule::Dynamic {
            patch,
            merge,
            min_pixels: QWEN_MIN_PIXELS,
            max_pixels: QWEN_MAX_PIXELS,
        },
        projector: ProjectorSpec::PatchMerger {
            vit_hidden: hidden,
            merge,
            output: out,
            norm,
        },
        window,
        deepstack: Vec::new(),
        feature_taps: Vec::new(),
    })
}

/// A plain decoder is read as dense with full attention in every layer; a config that says
/// otherwise (experts, a compressed latent KV, sliding windows) would be silently wrong that way.
fn dense_full_attention(top: &Map<String, Value>, model_type: &str) -> Result<(), InputError> {
    let set = |k: &str| {
        top.get(k)
            .is_some_and(|v| !v.is_null() && v != &Value::from(0))
    };
    let what = if [
        "num_experts",
        "num_local_experts",
        "n_routed_experts",
        "moe_intermediate_size",
    ]
    .iter()
    .any(|k| set(k))
    {
        "mixture-of-experts layers"
    } else if set("kv_lora_rank") {
        "multi-head latent attention"
    } else if set("sliding_window") && top.get("use_sliding_window") != Some(&Value::Bool(false)) {
        "sliding-window attention"
    } else if top
        .get("layer_types")
        .and_then(Value::as_array)
        .is_some_and(|kinds| kinds.iter().any(|k| k != "full_attention"))
    {
        "per-layer attention kinds (`layer_types`)"
    } else {
        return Ok(());
    };
    Err(InputError::new(format!(
        "model_type `{model_type}` has {what}, which hetsim does not model for a plain decoder: it reads dense, \
         full-attention LLaMA-style decoders (and {})",
        super::families::KNOWN_MODEL_TYPES
    )))
}

/// A decoder whose config states every size (top-level text models, Qwen2.5-VL).
fn decoder(c: &Map<String, Value>, qkv_bias: bool) -> Result<LlmSpec, InputError> {
    let hidden = uint(c, "hidden_size")?;
    let heads = uint(c, "num_attention_heads")?;
    Ok(LlmSpec {
        layers: uint(c, "num_hidden_layers")?,
        hidden,
        heads,
        kv_heads: kv_heads(c, heads, heads)?,
        head_dim: head_dim(c, hidden, heads)?,
        intermediate: uint(c, "intermediate_size")?,
        vocab: uint(c, "vocab_size")?,
        tied_embeddings: c
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        qkv_bias,
        qk_norm: false,
        norms_per_layer: 2,
        sliding: None,
        moe: None,
        cross_attention: None,
        mla: None,
    })
}

/// Grouped-query attention: each KV head serves a whole number of query heads.
pub(crate) fn kv_heads(
    c: &Map<String, Value>,
    heads: u64,
    default: u64,
) -> Result<u64, InputError> {
    let kv = uint_or(c, "num_key_value_heads", default)?;
    if kv > heads || !heads.is_multiple_of(kv) {
        return Err(InputError::new(format!(
            "field `num_key_value_heads` = {kv} must divide `num_attention_heads` = {heads} (and so be at most it)"
        )));
    }
    Ok(kv)
}

/// A config without `head_dim` splits the hidden size evenly across the heads.
pub(crate) fn head_dim(c: &Map<String, Value>, hidden: u64, heads: u64) -> Result<u64, InputError> {
    if c.get("head_dim").is_none_or(Value::is_null)
        && (heads > hidden || !hidden.is_multiple_of(heads))
    {
        return Err(InputError::new(format!(
            "field `num_attention_heads` = {heads} must divide `hidden_size` = {hidden} when `head_dim` is not given"
        )));
    }
    uint_or(c, "head_dim", hidden / heads)
}

pub(crate) fn check_vit_heads(v: &VitSpec) -> Result<(), InputError> {
    if v.heads > v.hidden || !v.hidden.is_multiple_of(v.heads) {
        return Err(InputError::new(format!(
            "the vision encoder's {} heads must divide its `hidden_size` = {}",
            v.heads, v.hidden
        )));
    }
    Ok(())
}

/// A model read from a config, once its total sizes are known to be sane.
pub(crate) fn checked(m: ModelSpec) -> Result<HfModel, InputError> {
    m.check_sizes()?;
    Ok(HfModel::Model(Box::new(m)))
}

/// A tower with its token rule and projector (no window attention, DeepStack or taps) before a
/// decoder, checked as `checked` does and its heads as `check_vit_heads`.
pub(crate) fn checked_tower(
    name: &str,
    vit: VitSpec,
    tokens: VisualTokenRule,
    projector: ProjectorSpec,
    llm: LlmSpec,
) -> Result<HfModel, InputError> {
    check_vit_heads(&vit)?;
    checked(ModelSpec {
        name: name.to_string(),
        vision: Some(VisionSpec {
            vit,
            tokens,
            projector,
            window: None,
            deepstack: Vec::new(),
            feature_taps: Vec::new(),
        }),
        llm,
    })
}

/// The published configs the tests read (tests/fixtures/hf-configs/).
#[cfg(test)]
pub mod fixture {
    use super::*;
    use std::path::PathBuf;

    pub fn path(file: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/hf-configs")
            .join(file)
    }

    pub fn config(file: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path(file)).unwrap()).unwrap()
    }

    pub fn model(file: &str) -> ModelSpec {
        match load_hf_config(&path(file)).unwrap() {
            HfModel::Model(m) => *m,
            other => panic!("{file} gave {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{model as loaded, path as reference};
    use super::*;

    #[test]
    fn builtins_match_published_configs() {
        for (builtin, file) in [
            ("llava-1.5-7b", "llava-1.5-7b-hf.json"),
            ("llava-1.5-13b", "llava-1.5-13b-hf.json"),
            ("qwen2.5-vl-3b", "qwen2.5-vl-3b-instruct.json"),
            ("qwen2.5-vl-7b", "qwen2.5-vl-7b-instruct.json"),
            ("vicuna-7b-v1.5", "vicuna-7b-v1.5.json"),
            ("llama-2-7b", "llama-2-7b-hf.json"),
            ("llama-3.1-8b", "llama-3.1-8b.json"),
        ] {
            let b = builtin_model(builtin).unwrap();
            let f = loaded(file);
            assert_eq!(b.llm, f.llm, "{builtin} decoder");
            assert_eq!(b.vision, f.vision, "{builtin} vision side");
        }
    }

    #[test]
    fn every_builtin_resolves() {
        for name in BUILTIN_MODELS {
            assert_eq!(builtin_model(name).unwrap().name, name);
        }
    }

    #[test]
    fn llava_7b_shapes_and_bytes() {
        let m = builtin_model("llava-1.5-7b").unwrap();
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!((t.llm_tokens, t.encoder_tokens), (576, 577));
        // 576 × 4096 × 2
        assert_eq!(m.emb_bytes(576, Dtype::Bf16), 4_718_592);
        // 2 · 32 · 4096 · 704 · 2
        assert_eq!(m.llm.kv_bytes(704, Dtype::Bf16), 369_098_752);
        // LLaMA-2-7B is 6.74 B parameters; LLaVA's vocabulary adds 64 rows twice.
        assert_eq!(m.llm.params(), 6_738_415_616 + 2 * 64 * 4096);
        // CLIP ViT-L/14-336: 24 layers × 12,596,224 + patch 602,112 + (1 + 576 + 1)·1024 vectors
        // + pre/post LayerNorm 2·2048 = 303,507,456 (transformers counts the same; LLaVA-NeXT's
        // fixture tower is this plus projector and image newline). Projector 1024·4096+4096 +
        // 4096²+4096 = 20.98 M.
        let v = m.vision.as_ref().unwrap();
        assert_eq!(v.projector.params(), 20_979_712);
        assert_eq!(v.vit.params(), 303_507_456);
        assert_eq!(v.params(), 303_507_456 + 20_979_712);
    }

    #[test]
    fn qwen_dynamic_resolution() {
        let m = builtin_model("qwen2.5-vl-7b").unwrap();
        // 480 → 476 (17·28), 640 → 644 (23·28): 17 · 23 = 391 tokens.
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!(
            (
                t.resized_width,
                t.resized_height,
                t.llm_tokens,
                t.encoder_tokens
            ),
            (644, 476, 391, 1564)
        );
        // Ties round to even, as Python does: 42/28 = 1.5 → 2, 70/28 = 2.5 → 2.
        assert_eq!(
            qwen_smart_resize(70, 42, 28, 3136, QWEN_MAX_PIXELS).unwrap(),
            (56, 56)
        );
        // Too small: scaled up to at least 56×56.
        assert_eq!(m.image_tokens(10, 10).unwrap().llm_tokens, 4);
        // Too large: scaled down under max_pixels.
        let big = m.image_tokens(8000, 6000).unwrap();
        assert!(big.resized_width * big.resized_height <= QWEN_MAX_PIXELS);
        assert!(m.image_tokens(10_000, 10).is_err());
    }

    #[test]
    fn clip_config_is_vision_only() {
        match load_hf_config(&reference("clip-vit-large-patch14-336.json")).unwrap() {
            HfModel::VisionOnly { vit, tokens, .. } => {
                assert_eq!((vit.layers, vit.layers_run, vit.hidden), (24, 24, 1024));
                assert_eq!(
                    tokens,
                    VisualTokenRule::FixedSquare {
                        image_size: 336,
                        patch: 14
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn experts_latent_kv_and_windows_are_not_read_as_a_dense_decoder() {
        let dense = serde_json::json!({"model_type": "x", "num_hidden_layers": 2, "hidden_size": 64,
            "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100});
        let with = |k: &str, v: Value| {
            let mut c = dense.clone();
            c[k] = v;
            parse_hf_config("x", &c).map_err(|e| e.to_string())
        };
        assert!(
            with("num_local_experts", 8.into())
                .unwrap_err()
                .contains("mixture-of-experts")
        );
        assert!(
            with("kv_lora_rank", 512.into())
                .unwrap_err()
                .contains("latent")
        );
        assert!(
            with("sliding_window", 4096.into())
                .unwrap_err()
                .contains("sliding")
        );
        // Qwen2 states a window it does not use; an all-full layer list is a dense decoder too.
        let mut qwen = dense.clone();
        qwen["sliding_window"] = 32768.into();
        qwen["use_sliding_window"] = false.into();
        qwen["layer_types"] = serde_json::json!(["full_attention", "full_attention"]);
        assert!(parse_hf_config("x", &qwen).is_ok());
        assert!(with("num_experts", Value::Null).is_ok());
    }

    #[test]
    fn missing_fields_are_named() {
        let v: Value =
            serde_json::json!({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64});
        let e = parse_hf_config("x", &v).unwrap_err().to_string();
        assert!(e.contains("num_attention_heads"), "{e}");
        let v: Value = serde_json::json!({"model_type": "llama", "num_hidden_layers": 0, "hidden_size": 64,
            "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100});
        assert!(
            parse_hf_config("x", &v)
                .unwrap_err()
                .to_string()
                .contains("positive")
        );
    }
}
