//! Qwen3-VL (`qwen3_vl`, dense): Qwen2-VL's dynamic resolution with 16-px patches merged 2 × 2, a
//! ViT with full attention and learned (interpolated) positions, DeepStack taps, and a Qwen3
//! decoder under `text_config`.
//!
//! Absent keys take transformers' defaults (5.24.0): `Qwen3VLTextConfig` (4096 wide, 32 layers, 32
//! heads of 128, 32 KV heads, MLP 22016, vocabulary 151,936) and `Qwen3VLVisionConfig` (depth 27,
//! 1152 wide, 16 heads, MLP 4304, patch 16, merge 2, temporal patch 2, output 3584, DeepStack taps
//! at layers 8, 16, 24). The MoE variant (`qwen3_vl_moe`) is not read: hetsim does not model
//! mixture-of-experts layers yet.

use serde_json::{Map, Value};

use super::fields::{object, uint_or};
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, check_vit_heads, checked, kv_heads};
use crate::error::InputError;

/// The Qwen3-VL processor's pixel range (`preprocessor_config.json` `size`: shortest_edge 65,536,
/// longest_edge 16,777,216 pixels): the processor's own setting, not in config.json.
pub const QWEN3_MIN_PIXELS: u64 = 65_536;
pub const QWEN3_MAX_PIXELS: u64 = 16_777_216;

pub fn parse(name: &str, top: &Map<String, Value>) -> Result<HfModel, InputError> {
    let text = object(top, "text_config")?;
    let v = object(top, "vision_config")?;
    let mut llm = text_decoder(text).map_err(|e| e.context("text_config"))?;
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

fn text_decoder(c: &Map<String, Value>) -> Result<LlmSpec, InputError> {
    let heads = uint_or(c, "num_attention_heads", 32)?;
    Ok(LlmSpec {
        layers: uint_or(c, "num_hidden_layers", 32)?,
        hidden: uint_or(c, "hidden_size", 4096)?,
        heads,
        kv_heads: kv_heads(c, heads, 32)?,
        // Qwen3's head size is its own (128), not hidden / heads.
        head_dim: uint_or(c, "head_dim", 128)?,
        intermediate: uint_or(c, "intermediate_size", 22016)?,
        vocab: uint_or(c, "vocab_size", 151_936)?,
        tied_embeddings: c
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        qkv_bias: c
            .get("attention_bias")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        sliding: None,
        moe: None,
        cross_attention: None,
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
        },
        window: None,
        deepstack: taps,
        feature_taps: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::models::load_hf_config;
    use std::path::PathBuf;

    #[test]
    fn qwen3_vl_4b_patches_of_16_and_deepstack_bytes() {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/hf-configs/qwen3-vl-4b-instruct.json");
        let HfModel::Model(m) = load_hf_config(&p).unwrap() else {
            panic!("qwen3-vl is a model")
        };
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
}
