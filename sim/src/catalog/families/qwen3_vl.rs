//! Qwen3-VL (`qwen3_vl`, dense, and `qwen3_vl_moe`): Qwen2-VL's dynamic resolution with 16-px
//! patches merged 2 × 2, a ViT with full attention and learned (interpolated) positions,
//! DeepStack taps, and a Qwen3 decoder under `text_config` (q and k RMS-normalised per head),
//! whose MLPs in the MoE variant are mixtures of experts in every layer.
//!
//! Absent keys take transformers' defaults (5.24.0, unchanged in 5.25.0): `Qwen3VLTextConfig`
//! (4096 wide, 32 layers, 32 heads of 128, 32 KV heads, MLP 22016, vocabulary 151,936) and
//! `Qwen3VLVisionConfig` (depth 27, 1152 wide, 16 heads, MLP 4304, patch 16, merge 2, temporal
//! patch 2, output 3584, DeepStack taps at layers 8, 16, 24); for the MoE variant
//! `Qwen3VLMoeTextConfig` (2048 wide, 24 layers, 16 heads of hidden / heads, KV heads = heads,
//! 60 experts of width 1408 with 4 per token, vocabulary 151,936; 5.25.0) and
//! `Qwen3VLMoeVisionConfig` (the dense tower's defaults). A model whose `mlp_only_layers` or
//! `decoder_sparse_step` leave some layers dense is refused: hetsim models an MoE decoder as
//! experts in every layer.

use serde_json::{Map, Value};

use super::fields::{object, uint_or};
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, check_vit_heads, checked, kv_heads};
use crate::error::InputError;

/// The Qwen3-VL processor's pixel range (`preprocessor_config.json` `size`: shortest_edge 65,536,
/// longest_edge 16,777,216 pixels): the processor's own setting, not in config.json.
pub const QWEN3_MIN_PIXELS: u64 = 65_536;
pub const QWEN3_MAX_PIXELS: u64 = 16_777_216;

pub fn parse(
    name: &str,
    top: &Map<String, Value>,
    model_type: &str,
) -> Result<HfModel, InputError> {
    let text = object(top, "text_config")?;
    let v = object(top, "vision_config")?;
    let text_model = if model_type == "qwen3_vl_moe" {
        moe_text_decoder(text)
    } else {
        text_decoder(text, &DENSE)
    };
    let mut llm = text_model.map_err(|e| e.context("text_config"))?;
    if let Some(Value::Bool(tied)) = top.get("tie_word_embeddings") {
        llm.tied_embeddings = *tied;
    }
    let vision = vision(v, llm.hidden).map_err(|e| e.context("vision_config"))?;
    checked(ModelSpec {
        name: name.to_string(),
        vision: Some(vision),
        llm,
    })
}

/// transformers' defaults for the keys a Qwen3-VL text config leaves out (None: KV heads =
/// heads, head size = hidden / heads), and the key of the MLP's (or each expert's) width.
struct TextDefaults {
    layers: u64,
    hidden: u64,
    heads: u64,
    kv_heads: Option<u64>,
    head_dim: Option<u64>,
    mlp_key: &'static str,
    mlp: u64,
}

/// `Qwen3VLTextConfig`: Qwen3's head size is its own (128), not hidden / heads.
const DENSE: TextDefaults = TextDefaults {
    layers: 32,
    hidden: 4096,
    heads: 32,
    kv_heads: Some(32),
    head_dim: Some(128),
    mlp_key: "intermediate_size",
    mlp: 22016,
};

/// `Qwen3VLMoeTextConfig` (5.25.0).
const MOE: TextDefaults = TextDefaults {
    layers: 24,
    hidden: 2048,
    heads: 16,
    kv_heads: None,
    head_dim: None,
    mlp_key: "moe_intermediate_size",
    mlp: 1408,
};

fn text_decoder(c: &Map<String, Value>, d: &TextDefaults) -> Result<LlmSpec, InputError> {
    let hidden = uint_or(c, "hidden_size", d.hidden)?;
    let heads = uint_or(c, "num_attention_heads", d.heads)?;
    if heads == 0 {
        return Err(InputError::new(
            "field `num_attention_heads` = 0: must be at least 1",
        ));
    }
    Ok(LlmSpec {
        layers: uint_or(c, "num_hidden_layers", d.layers)?,
        hidden,
        heads,
        kv_heads: kv_heads(c, heads, d.kv_heads.unwrap_or(heads))?,
        head_dim: uint_or(c, "head_dim", d.head_dim.unwrap_or(hidden / heads))?,
        intermediate: uint_or(c, d.mlp_key, d.mlp)?,
        vocab: uint_or(c, "vocab_size", 151_936)?,
        tied_embeddings: c
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        qkv_bias: c
            .get("attention_bias")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        qk_norm: true,
        norms_per_layer: 2,
        sliding: None,
        moe: None,
        cross_attention: None,
        mla: None,
    })
}

/// `Qwen3VLMoeTextConfig`: the dense decoder's attention, experts in every layer's MLP.
fn moe_text_decoder(c: &Map<String, Value>) -> Result<LlmSpec, InputError> {
    let sparse_step = uint_or(c, "decoder_sparse_step", 1)?;
    if sparse_step != 1 {
        return Err(InputError::new(format!(
            "field `decoder_sparse_step` = {sparse_step}: hetsim models experts in every layer (1)"
        )));
    }
    match c.get("mlp_only_layers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(other) => {
            return Err(InputError::new(format!(
                "field `mlp_only_layers` = {}: hetsim models experts in every layer ([])",
                crate::bounds::excerpt(&other.to_string())
            )));
        }
    }
    let experts = uint_or(c, "num_experts", 60)?;
    let active = uint_or(c, "num_experts_per_tok", 4)?;
    if active == 0 || active > experts {
        return Err(InputError::new(format!(
            "field `num_experts_per_tok` = {active}: must be 1 … `num_experts` = {experts}"
        )));
    }
    Ok(LlmSpec {
        moe: Some(Moe::every_layer(experts, active)),
        ..text_decoder(c, &MOE)?
    })
}

fn vision(v: &Map<String, Value>, llm_hidden: u64) -> Result<VisionSpec, InputError> {
    let depth = uint_or(v, "depth", 27)?;
    let hidden = uint_or(v, "hidden_size", 1152)?;
    let patch = uint_or(v, "patch_size", 16)?;
    let merge = uint_or(v, "spatial_merge_size", 2)?;
    let out = uint_or(v, "out_hidden_size", 3584)?;
    if out != llm_hidden {
        return Err(InputError::new(format!(
            "field `out_hidden_size` = {out} is not the text model's hidden size {llm_hidden}: the merger feeds the LLM directly"
        )));
    }
    let taps: Vec<u64> = match v.get("deepstack_visual_indexes") {
        None | Some(Value::Null) => vec![8, 16, 24],
        Some(Value::Array(a)) => a.iter().map(|i| i.as_u64().unwrap_or(u64::MAX)).collect(),
        Some(_) => vec![u64::MAX],
    };
    if taps.iter().any(|&i| i >= depth) || !taps.is_sorted_by(|a, b| a < b) {
        return Err(InputError::new(format!(
            "field `deepstack_visual_indexes` = {}: must list distinct layers (from 0, increasing) of the {depth}-layer encoder",
            crate::bounds::excerpt(
                &v.get("deepstack_visual_indexes")
                    .map_or("[8, 16, 24] (default)".into(), |x| x.to_string())
            )
        )));
    }
    let vit = VitSpec {
        layers: depth,
        layers_run: depth,
        hidden,
        heads: uint_or(v, "num_heads", 16)?,
        intermediate: uint_or(v, "intermediate_size", 4304)?,
        gated_mlp: false,
        patch,
        patch_input: uint_or(v, "in_channels", 3)? * uint_or(v, "temporal_patch_size", 2)?,
        // LayerNorms, biases everywhere, and a learned position grid the tower interpolates to
        // each image's patches (beside its rotary positions).
        weights: VitWeights {
            norm: Norm::Layer,
            attention_bias: true,
            mlp_bias: true,
            patch_bias: true,
            learned_vectors: uint_or(v, "num_position_embeddings", 2304)?,
            outer_norms: 0,
            gates: 0,
        },
    };
    check_vit_heads(&vit)?;
    Ok(VisionSpec {
        vit,
        tokens: VisualTokenRule::Dynamic {
            patch,
            merge,
            min_pixels: QWEN3_MIN_PIXELS,
            max_pixels: QWEN3_MAX_PIXELS,
        },
        projector: ProjectorSpec::PatchMerger {
            vit_hidden: hidden,
            merge,
            output: out,
            norm: Norm::Layer,
        },
        window: None,
        deepstack: taps,
        feature_taps: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_vl_4b_patches_of_16_and_deepstack_bytes() {
        let m = crate::catalog::models::fixture::model("qwen3-vl-4b-instruct.json");
        // 640×480 in multiples of 32: 640 × 480 exactly, 20 × 15 merged tokens.
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!(
            (t.resized_width, t.resized_height, t.llm_tokens),
            (640, 480, 300)
        );
        // 336 / 32 = 10.5 rounds to even: 320 × 320, 100 tokens.
        assert_eq!(m.image_tokens(336, 336).unwrap().llm_tokens, 100);
        // The main features and three DeepStack sets: 4 · 300 · 2560 · 2 B.
        assert_eq!(m.emb_bytes(300, Dtype::Bf16), 4 * 300 * 2560 * 2);
        assert!(m.llm.tied_embeddings);
    }

    fn moe(edit: impl FnOnce(&mut Map<String, Value>)) -> Result<HfModel, InputError> {
        let Value::Object(mut top) =
            crate::catalog::models::fixture::config("qwen3-vl-30b-a3b-instruct.json")
        else {
            panic!("a config is an object")
        };
        edit(top["text_config"].as_object_mut().unwrap());
        parse("qwen3-vl-30b-a3b", &top, "qwen3_vl_moe")
    }

    #[test]
    fn qwen3_vl_30b_a3b_keeps_128_experts_and_runs_8() {
        let HfModel::Model(m) = moe(|_| {}).unwrap() else {
            panic!("qwen3-vl-moe is a model")
        };
        let moe = m.llm.moe.unwrap();
        assert_eq!((moe.experts, moe.active, m.llm.intermediate), (128, 8, 768));
        // A token runs 8 experts of 3 · 2048 · 768 parameters in each layer: 37.7 M.
        assert_eq!(m.llm.active_mlp_params(), 8 * 3 * 2048 * 768);
        // GQA KV: 2 · 48 layers · 4 heads · 128 · 2 B a token.
        assert_eq!(m.llm.kv_bytes(1, Dtype::Bf16), 98_304);
        assert!(!m.llm.tied_embeddings && m.llm.qk_norm);
    }

    #[test]
    fn a_qwen3_vl_moe_with_dense_layers_is_refused() {
        let e = moe(|t| {
            t.insert("mlp_only_layers".into(), serde_json::json!([0, 47]));
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("mlp_only_layers") && e.contains("[0,47]"), "{e}");
        let e = moe(|t| {
            t.insert("decoder_sparse_step".into(), serde_json::json!(2));
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("decoder_sparse_step") && e.contains('2'), "{e}");
        let e = moe(|t| {
            t.insert("num_experts_per_tok".into(), serde_json::json!(129));
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("num_experts_per_tok"), "{e}");
    }
}
