//! Mistral 3 (`mistral3`, Mistral-Small-3.1): Pixtral's tower with 14-px patches and Pixtral's
//! processor at a longest edge of 1540 px, each 2×2 block of patches merged into one token
//! (`Mistral3PatchMerger`) before the projector, a break token per row of merged tokens and an
//! end token; a Mistral decoder.
//!
//! Absent keys take transformers 5.25.0's `Mistral3Config` defaults: `spatial_merge_size` 2,
//! `vision_feature_layer` −1, `multimodal_projector_bias` false. A `text_config` or
//! `vision_config` that is given is read as the config class of its own `model_type`, `mistral`
//! (`MistralConfig`) and `pixtral` (`PixtralVisionConfig`) when it names none; one that is absent
//! (or null) is built from `Mistral3Config.sub_configs_defaults`, Mistral-Small-3.1's own shapes
//! (their size keys: `text_defaults`, `vision_defaults` in `parse`). One default is not taken: `tie_word_embeddings`
//! (`Mistral3Config`: true) — see `parse`.

use serde_json::{Map, Value, json};

use super::fields::{flag_or, int_or, object_or, uint_or};
use super::llava::{pixtral_vision, text_decoder};
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, checked_tower};
use crate::error::InputError;

/// `PixtralImageProcessor`'s `size.longest_edge` in Mistral-Small-3.1's
/// `preprocessor_config.json` (the class default is 1024): the processor's own setting, not in
/// config.json. The tower's rotary table covers `image_size / patch` patches per side, so a tower
/// of another `image_size` would come with another processor, which hetsim does not know.
pub const MISTRAL3_LONGEST_EDGE: u64 = 1540;

pub fn parse(name: &str, top: &Map<String, Value>) -> Result<HfModel, InputError> {
    // Mistral3Config.sub_configs_defaults, the keys that set sizes: the sub-configs a config
    // without them gets.
    let text_defaults = json!({
        "model_type": "mistral", "head_dim": 128, "hidden_size": 5120, "intermediate_size": 32768,
        "num_attention_heads": 32, "num_hidden_layers": 40, "num_key_value_heads": 8,
        "sliding_window": null, "vocab_size": 131072
    });
    let vision_defaults = json!({
        "model_type": "pixtral", "intermediate_size": 4096, "hidden_size": 1024, "patch_size": 14,
        "image_size": 1540, "num_hidden_layers": 24, "num_attention_heads": 16
    });
    let text = object_or(top, "text_config", &text_defaults)?;
    let vision = object_or(top, "vision_config", &vision_defaults)?;
    let mut llm = text_decoder(text, "mistral").map_err(|e| e.context("text_config"))?;
    // Mistral3ForConditionalGeneration ties its LM head to the embedding by the top-level
    // `tie_word_embeddings`, whose Mistral3Config default is true; Mistral-Small-3.1's config
    // leaves it out, yet its checkpoint holds `lm_head.weight` apart from the embedding, and
    // from_pretrained then keeps the two (PreTrainedModel.tie_weights does not tie tensors that
    // are both present and differ). hetsim counts the weights a server holds: a separate head
    // unless the config says `true`.
    llm.tied_embeddings = top.get("tie_word_embeddings") == Some(&Value::Bool(true));
    let tower = vision
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("pixtral");
    if tower != "pixtral" {
        return Err(InputError::new(format!(
            "vision_config.model_type `{tower}` is not supported in a `mistral3` config: hetsim reads pixtral"
        )));
    }
    // PixtralVisionConfig's image_size default is 1024.
    let image_size = uint_or(vision, "image_size", 1024)?;
    if image_size != MISTRAL3_LONGEST_EDGE {
        return Err(InputError::new(format!(
            "field `vision_config.image_size` = {image_size}: hetsim knows Mistral 3's processor for \
             {MISTRAL3_LONGEST_EDGE}-px towers only (longest_edge {MISTRAL3_LONGEST_EDGE}, Mistral-Small-3.1's \
             preprocessor_config.json)"
        )));
    }
    let merge = uint_or(top, "spatial_merge_size", 2)?;
    let feature_layer = int_or(top, "vision_feature_layer", -1)?;
    let (vit, tokens) = pixtral_vision(vision, feature_layer, MISTRAL3_LONGEST_EDGE, merge)
        .map_err(|e| e.context("vision_config"))?;
    let bias = flag_or(top, "multimodal_projector_bias", false)?;
    let projector = ProjectorSpec::MergedMlp {
        vit_hidden: vit.hidden,
        merge,
        output: llm.hidden,
        bias,
    };
    checked_tower(name, vit, tokens, projector, llm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::models::parse_hf_config;

    fn small() -> ModelSpec {
        crate::catalog::models::fixture::model("mistral-small-3.1-24b-instruct-2503.json")
    }

    #[test]
    fn mistral_small_merges_2x2_patches_and_breaks_rows() {
        let m = small();
        let v = m.vision.as_ref().unwrap();
        assert_eq!(
            (v.vit.hidden, v.vit.layers_run, v.vit.patch),
            (1024, 24, 14)
        );
        // 640×480 in 28-px tokens: 23 × 18 (480 / 28 = 17.1, a partial row counts), a break per
        // row, the last an end token; the tower sees 4 patches per token.
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!(
            (t.feature_tokens, t.llm_tokens, t.encoder_tokens),
            (18 * 23, 18 * 24, 4 * 18 * 23)
        );
        // 4032×3024 scales to fit 1540 px (1540 × 1155), then to whole tokens: 55 × 42.
        let t = m.image_tokens(4032, 3024).unwrap();
        assert_eq!((t.resized_width, t.resized_height), (1540, 1176));
        assert_eq!(t.feature_tokens, 55 * 42);
        // RMSNorm 1024, merger 4096 → 1024, linear_1 1024 → 5120, linear_2 5120², no biases.
        assert_eq!(
            v.projector.params(),
            1024 + 4096 * 1024 + 1024 * 5120 + 5120 * 5120
        );
        // 40 layers of 8 KV heads of 128: 163,840 B a token in bf16; the LM head is its own.
        assert_eq!(m.llm.kv_bytes(1, Dtype::Bf16), 163_840);
        assert!(!m.llm.tied_embeddings);
    }

    #[test]
    fn absent_sub_configs_are_mistral_small_and_odd_ones_are_refused() {
        let whole = small();
        let bare = match parse_hf_config("x", &json!({"model_type": "mistral3"})).unwrap() {
            HfModel::Model(m) => *m,
            other => panic!("{other:?}"),
        };
        assert_eq!((bare.llm, bare.vision), (whole.llm, whole.vision));
        let refused = |c: Value| parse_hf_config("x", &c).unwrap_err().to_string();
        // A given vision_config takes PixtralVisionConfig's defaults: a 1024-px tower.
        let e = refused(json!({"model_type": "mistral3", "vision_config": {}}));
        assert!(e.contains("image_size") && e.contains("1540"), "{e}");
        // A given text_config is a MistralConfig: a 4096-token window unless it says null.
        let e = refused(json!({"model_type": "mistral3", "text_config": {}}));
        assert!(e.contains("sliding window") && e.contains("4096"), "{e}");
        let e =
            refused(json!({"model_type": "mistral3", "vision_config": {"model_type": "siglip"}}));
        assert!(e.contains("siglip"), "{e}");
        let e =
            refused(json!({"model_type": "mistral3", "text_config": {"model_type": "mistral4"}}));
        assert!(e.contains("mistral4"), "{e}");
        let e = refused(json!({"model_type": "mistral3", "vision_feature_layer": [-1, -2]}));
        assert!(e.contains("vision_feature_layer"), "{e}");
    }
}
