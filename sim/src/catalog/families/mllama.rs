//! Llama-3.2-Vision (`mllama`): a tiled ViT whose output reaches the decoder through
//! cross-attention layers, not through the decoder's context.
//!
//! Absent keys take transformers' defaults (5.24.0): `MllamaTextConfig` (4096 wide, 40 layers, 32
//! heads, 8 KV heads, MLP 14,336, vocabulary 128,256, untied embeddings, cross-attention at layers
//! 3, 8, 13, 18, 23, 28, 33, 38) and `MllamaVisionConfig` (1280 wide, 32 local and 8 global
//! layers, 16 heads (`attention_heads`), MLP 5120, 448-px tiles of 14-px patches, 4 tiles, taps
//! of hidden states 3, 7, 15, 23, 30, output 7680 wide). The published 11B-Vision-Instruct config
//! states the widths and the 560-px tile but leaves the cross-attention layers, the taps and the
//! tile count to these defaults.

use serde_json::{Map, Value};

use super::fields::{indices, object, uint_or};
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, check_vit_heads, checked};
use crate::error::InputError;

/// `MllamaTextConfig`'s cross-attention layers when the config lists none.
const DEFAULT_CROSS_LAYERS: [u64; 8] = [3, 8, 13, 18, 23, 28, 33, 38];
/// `MllamaVisionConfig`'s `intermediate_layers_indices` when the config lists none.
const DEFAULT_TAPS: [u64; 5] = [3, 7, 15, 23, 30];

pub fn parse(name: &str, top: &Map<String, Value>) -> Result<HfModel, InputError> {
    let text = object(top, "text_config")?;
    let vision = object(top, "vision_config")?;
    let llm = text_decoder(text).map_err(|e| e.context("text_config"))?;
    let (vit, rule, taps, output) = tiled_vision(vision).map_err(|e| e.context("vision_config"))?;
    checked(ModelSpec {
        name: name.to_string(),
        vision: Some(VisionSpec {
            vit,
            tokens: rule,
            projector: ProjectorSpec::Linear {
                input: output,
                output: llm.hidden,
            },
            window: None,
            deepstack: Vec::new(),
            feature_taps: taps,
        }),
        llm,
    })
}

fn text_decoder(c: &Map<String, Value>) -> Result<LlmSpec, InputError> {
    let layers = uint_or(c, "num_hidden_layers", 40)?;
    let hidden = uint_or(c, "hidden_size", 4096)?;
    let heads = uint_or(c, "num_attention_heads", 32)?;
    let kv_heads = uint_or(c, "num_key_value_heads", 8)?;
    // MllamaTextCrossAttention and MllamaTextSelfAttention take hidden / heads as the head size.
    if hidden % heads != 0 || heads % kv_heads != 0 {
        return Err(InputError::new(format!(
            "fields `hidden_size` = {hidden}, `num_attention_heads` = {heads}, `num_key_value_heads` = {kv_heads}: \
             the heads must divide the width and the KV heads the heads"
        )));
    }
    let cross = indices(c, "cross_attention_layers", &DEFAULT_CROSS_LAYERS)?;
    if cross.is_empty()
        || cross.windows(2).any(|p| p[0] >= p[1])
        || cross[cross.len() - 1] >= layers
    {
        return Err(InputError::new(format!(
            "field `cross_attention_layers` = {cross:?}: must list at least one layer, in increasing order, each below \
             `num_hidden_layers` = {layers}"
        )));
    }
    if c.get("tie_word_embeddings") == Some(&Value::Bool(true)) {
        return Err(InputError::new(
            "field `tie_word_embeddings` = true: mllama's embedding has 8 more rows than its LM head, so they cannot be tied",
        ));
    }
    Ok(LlmSpec {
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        intermediate: uint_or(c, "intermediate_size", 14_336)?,
        vocab: uint_or(c, "vocab_size", 128_256)?,
        tied_embeddings: false,
        qkv_bias: false,
        qk_norm: false,
        norms_per_layer: 2,
        sliding: None,
        moe: None,
        cross_attention: Some(CrossAttention {
            layers: cross,
            added_embeddings: 8,
        }),
        mla: None,
    })
}

/// Mllama's learned `hidden`-wide vectors: the class token, a position for each of a tile's
/// patches and its class token, and tables indexed by aspect ratio (one per ratio the processor
/// cuts by, plus the padding id 0): a position per patch of each tile slot, and one vector per
/// tile slot before and after the local layers.
fn learned_vectors(side: u64, max_tiles: u64) -> u64 {
    let positions = side * side + 1;
    let ratios = (1..=max_tiles)
        .map(|w| (1..=max_tiles).filter(|h| w * h <= max_tiles).count() as u64)
        .sum::<u64>();
    1 + positions + (ratios + 1) * max_tiles * positions + 2 * (ratios + 1) * max_tiles
}

/// `MllamaVisionConfig`: the encoder, its tiling rule, its taps and its output width.
fn tiled_vision(
    c: &Map<String, Value>,
) -> Result<(VitSpec, VisualTokenRule, Vec<u64>, u64), InputError> {
    let local = uint_or(c, "num_hidden_layers", 32)?;
    let global = uint_or(c, "num_global_layers", 8)?;
    let hidden = uint_or(c, "hidden_size", 1280)?;
    let tile = uint_or(c, "image_size", 448)?;
    let patch = uint_or(c, "patch_size", 14)?;
    let max_tiles = uint_or(c, "max_num_tiles", 4)?;
    if tile % patch != 0 || max_tiles > 16 {
        return Err(InputError::new(format!(
            "fields `image_size` = {tile}, `patch_size` = {patch}, `max_num_tiles` = {max_tiles}: the patch must divide \
             the tile, and at most 16 tiles are allowed"
        )));
    }
    // The image processor cuts by every (w, h) with w · h ≤ max tiles; a model listing other
    // ratios would disagree with it about the tiles.
    if let Some(listed) = c.get("supported_aspect_ratios").filter(|v| !v.is_null()) {
        let mut all = Vec::new();
        for w in 1..=max_tiles {
            for h in (1..=max_tiles).filter(|h| w * h <= max_tiles) {
                all.push(serde_json::json!([w, h]));
            }
        }
        if listed != &Value::Array(all) {
            return Err(InputError::new(format!(
                "field `supported_aspect_ratios` = {}: hetsim models the processor's ratios, every (w, h) with \
                 w · h ≤ `max_num_tiles` = {max_tiles}",
                crate::bounds::excerpt(&listed.to_string())
            )));
        }
    }
    let taps = indices(c, "intermediate_layers_indices", &DEFAULT_TAPS)?;
    if let Some(t) = taps.iter().find(|&&t| t > local) {
        return Err(InputError::new(format!(
            "field `intermediate_layers_indices` has {t}: hidden states run from 0 (the patch embeddings) to \
             `num_hidden_layers` = {local}"
        )));
    }
    // The vision model concatenates the last state with each tap's; the projector is built for
    // `vision_output_dim` and fails on any other width.
    let output = uint_or(c, "vision_output_dim", 7680)?;
    if output != hidden * (1 + taps.len() as u64) {
        return Err(InputError::new(format!(
            "field `vision_output_dim` = {output}: the vision output is `hidden_size` × (1 + taps) = {hidden} × {} = {}",
            1 + taps.len(),
            hidden * (1 + taps.len() as u64)
        )));
    }
    let vit = VitSpec {
        // The global layers run after the local ones, on the same tokens.
        layers: local + global,
        layers_run: local + global,
        hidden,
        // transformers reads `attention_heads` (a `num_attention_heads` key is not its field).
        heads: uint_or(c, "attention_heads", 16)?,
        intermediate: uint_or(c, "intermediate_size", 5120)?,
        gated_mlp: false,
        patch,
        patch_input: uint_or(c, "num_channels", 3)?,
        weights: VitWeights {
            norm: Norm::Layer,
            attention_bias: false,
            mlp_bias: true,
            patch_bias: false,
            learned_vectors: learned_vectors(tile / patch, max_tiles),
            // Before and after the local layers.
            outer_norms: 2,
            // One on each of the three position tables, two (attention, MLP) per global layer.
            gates: 3 + 2 * global,
        },
    };
    check_vit_heads(&vit)?;
    Ok((
        vit,
        VisualTokenRule::Tiled {
            tile,
            patch,
            max_tiles,
        },
        taps,
        output,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::models::parse_hf_config;

    fn eleven_b() -> ModelSpec {
        crate::catalog::models::fixture::model("llama-3.2-11b-vision-instruct.json")
    }

    #[test]
    fn eleven_b_cross_attention_kv_and_tiles() {
        let m = eleven_b();
        let l = &m.llm;
        // 40 layers, 8 of them cross-attention (the defaults): 32 attend to the context.
        assert_eq!(
            (l.full_attention_layers(), l.cross_attention_layers()),
            (32, 8)
        );
        // Per context token: 2 · 32 · 8 · 128 · 2 B = 131,072.
        assert_eq!(l.kv_bytes_per_token(Dtype::Bf16), 131_072);
        // Every image: 4 tiles (padding included) of 40² + 1 tokens = 6,404 vision states; one
        // cross layer keeps 2 · 8 · 128 · 2 · 6404 = 26,230,784 B, all eight 209,846,272 B.
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!((t.feature_tokens, t.llm_tokens), (6404, 1));
        assert_eq!(l.cross_kv_bytes(6404, Dtype::Bf16), 8 * 26_230_784);
        // 640×480 fits 2 tiles side by side (scale min(1120/640, 560/480) = 1.17, the least
        // upscaling); 4032×3024 has to shrink: 2×2 keeps the most of it (scale 0.37).
        assert_eq!((t.resized_width, t.resized_height), (1120, 560));
        let big = m.image_tokens(4032, 3024).unwrap();
        assert_eq!((big.resized_width, big.resized_height), (1120, 1120));
        // The projector takes 1280 × (1 + 5 taps) = 7680 values per state into the LLM's 4096.
        let v = m.vision.as_ref().unwrap();
        assert_eq!(
            (v.projector.input_width(), v.projector.output_width()),
            (7680, 4096)
        );
        assert_eq!(v.projector.params(), 7680 * 4096 + 4096);
    }

    #[test]
    fn tiled_canvas_follows_the_processor() {
        // A square picks one tile (scale 560/336 = 1.67, the least upscaling); so does a tiny one.
        assert_eq!(optimal_tiled_canvas(336, 336, 4, 560), (560, 560));
        assert_eq!(optimal_tiled_canvas(32, 24, 4, 560), (560, 560));
        // 480×1280 (tall): 3 and 4 tiles stacked both upscale by min(560/480, 1680/1280) = 1.17;
        // the smaller area wins: 1680 high, 560 wide.
        assert_eq!(optimal_tiled_canvas(480, 1280, 4, 560), (1680, 560));
        // 1280×720: every canvas shrinks it; 2×2 least (min(1120/1280, 1120/720) = 0.875).
        assert_eq!(optimal_tiled_canvas(1280, 720, 4, 560), (1120, 1120));
    }

    #[test]
    fn bad_mllama_configs_name_the_field() {
        let base = serde_json::json!({"model_type": "mllama",
            "text_config": {"num_hidden_layers": 4, "cross_attention_layers": [1, 5]},
            "vision_config": {}});
        let e = parse_hf_config("x", &base).unwrap_err().to_string();
        assert!(
            e.contains("cross_attention_layers") && e.contains("below"),
            "{e}"
        );
        let bad_width = serde_json::json!({"model_type": "mllama", "text_config": {},
            "vision_config": {"vision_output_dim": 4096}});
        let e = parse_hf_config("x", &bad_width).unwrap_err().to_string();
        assert!(e.contains("vision_output_dim") && e.contains("7680"), "{e}");
        let ratios = serde_json::json!({"model_type": "mllama", "text_config": {},
            "vision_config": {"supported_aspect_ratios": [[1, 1], [1, 2]]}});
        let e = parse_hf_config("x", &ratios).unwrap_err().to_string();
        assert!(e.contains("supported_aspect_ratios"), "{e}");
    }
}
