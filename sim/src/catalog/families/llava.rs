//! LLaVA-1.5 (`llava` with a CLIP tower), Pixtral-12B (`llava` with a `pixtral` tower) and
//! LLaVA-NeXT (`llava_next`, CLIP tiles by `image_grid_pinpoints`).
//!
//! Absent keys take transformers' defaults (5.24.0, the version the zoo fixtures were made with):
//! `LlavaConfig` / `LlavaNextConfig` read `text_config` as the config class of its own
//! `model_type` (`LlamaConfig` when it has none) and `vision_config` as `CLIPVisionConfig` unless
//! its `model_type` says `pixtral` (`PixtralVisionConfig`). Each default used is named below.

use serde_json::{Map, Value};

use super::fields::{flag_or, int_or, object, uint_or};
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, checked_tower, head_dim, kv_heads};
use crate::error::InputError;

/// `LlavaNextConfig.image_grid_pinpoints` when the config gives none, as (height, width).
const NEXT_PINPOINTS: [(u64, u64); 5] =
    [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];

/// `PixtralImageProcessor`'s `size.longest_edge` (also Pixtral-12B's `preprocessor_config.json`):
/// the processor's own setting, not in config.json.
pub const PIXTRAL_LONGEST_EDGE: u64 = 1024;

/// `model_type` `llava` or `llava_next`.
pub fn parse(
    name: &str,
    top: &Map<String, Value>,
    model_type: &str,
) -> Result<HfModel, InputError> {
    let text = object(top, "text_config")?;
    let vision = object(top, "vision_config")?;
    let llm = text_decoder(text, "llama").map_err(|e| e.context("text_config"))?;
    let feature_layer = int_or(top, "vision_feature_layer", -2)?;
    let strategy = match top.get("vision_feature_select_strategy") {
        None | Some(Value::Null) => "default",
        Some(Value::String(s)) if s == "default" || s == "full" => s.as_str(),
        Some(v) => {
            return Err(InputError::new(format!(
                "field `vision_feature_select_strategy` = {v}: allowed \"default\" (drop CLS) or \"full\""
            )));
        }
    };
    let tower = vision
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("clip_vision_model");
    let (vit, tokens) = match (model_type, tower, strategy) {
        ("llava", "clip_vision_model", "default") => {
            clip_vision(vision, feature_layer).map_err(|e| e.context("vision_config"))?
        }
        ("llava_next", "clip_vision_model", "default") => {
            let (vit, square) =
                clip_vision(vision, feature_layer).map_err(|e| e.context("vision_config"))?;
            let VisualTokenRule::FixedSquare { image_size, patch } = square else {
                unreachable!("clip_vision gives a fixed square")
            };
            let pinpoints = pinpoints(top, image_size)?;
            (
                vit,
                VisualTokenRule::AnyRes {
                    tile: image_size,
                    patch,
                    pinpoints,
                },
            )
        }
        // Pixtral has no CLS token: `default` would drop a real patch.
        // The LLaVA wrapper of Pixtral-12B merges no patches (PixtralProcessor spatial_merge_size 1).
        ("llava", "pixtral", "full") => {
            pixtral_vision(vision, feature_layer, PIXTRAL_LONGEST_EDGE, 1)
                .map_err(|e| e.context("vision_config"))?
        }
        (_, "clip_vision_model" | "pixtral", _) => {
            return Err(InputError::new(format!(
                "a `{model_type}` config with a `{tower}` vision tower and vision_feature_select_strategy \
                 `{strategy}` is not supported: hetsim reads llava + clip_vision_model (default), \
                 llava_next + clip_vision_model (default) and llava + pixtral (full)"
            )));
        }
        (_, other, _) => {
            return Err(InputError::new(format!(
                "vision_config.model_type `{other}` is not supported in a `{model_type}` config: \
                 hetsim reads clip_vision_model, and pixtral under llava"
            )));
        }
    };
    // `LlavaConfig` / `LlavaNextConfig.multimodal_projector_bias`: true unless the config says.
    let projector = ProjectorSpec::Mlp2xGelu {
        input: vit.hidden,
        output: llm.hidden,
        bias: flag_or(top, "multimodal_projector_bias", true)?,
    };
    checked_tower(name, vit, tokens, projector, llm)
}

/// `image_grid_pinpoints` as (height, width) pairs, each a whole number of tiles.
fn pinpoints(top: &Map<String, Value>, tile: u64) -> Result<Vec<(u64, u64)>, InputError> {
    let points: Vec<(u64, u64)> = match top.get("image_grid_pinpoints") {
        None | Some(Value::Null) => NEXT_PINPOINTS.to_vec(),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|p| match p.as_array().map(|x| x.as_slice()) {
                Some([h, w]) => match (h.as_u64(), w.as_u64()) {
                    (Some(h), Some(w)) if h > 0 && w > 0 && h <= 1 << 14 && w <= 1 << 14 => Ok((h, w)),
                    _ => Err(()),
                },
                _ => Err(()),
            })
            .collect::<Result<_, ()>>()
            .map_err(|()| {
                InputError::new(
                    "field `image_grid_pinpoints`: each entry must be [height, width], positive integers up to 16384",
                )
            })?,
        Some(v) => {
            return Err(InputError::new(format!(
                "field `image_grid_pinpoints` = {}: must be a non-empty list of [height, width]",
                crate::bounds::excerpt(&v.to_string())
            )));
        }
    };
    if let Some(&(h, w)) = points.iter().find(|(h, w)| h % tile != 0 || w % tile != 0) {
        return Err(InputError::new(format!(
            "field `image_grid_pinpoints` has [{h}, {w}]: each side must be a multiple of the vision tile, {tile} px"
        )));
    }
    Ok(points)
}

/// A `text_config` by its own `model_type` (`default_type` when it has none: `llama` under
/// LLaVA, `mistral` under Mistral 3): the families' published configs leave sizes out wherever
/// they equal the class defaults (LLaVA-1.5-7B gives none, LLaVA-NeXT-Mistral no hidden size or
/// depth, Pixtral no head count).
pub(super) fn text_decoder(
    c: &Map<String, Value>,
    default_type: &str,
) -> Result<LlmSpec, InputError> {
    let model_type = c
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or(default_type);
    // (intermediate_size, num_key_value_heads default or None = num_attention_heads)
    let (intermediate, kv_default) = match model_type {
        // LlamaConfig: 4096 wide, 32 layers, 32 heads, MLP 11008, KV heads = heads, vocab 32000.
        "llama" => (11008, None),
        // MistralConfig: as LLaMA but MLP 14336 and 8 KV heads, and a 4096-token sliding window.
        "mistral" => {
            match c.get("sliding_window") {
                Some(Value::Null) => {}
                None => {
                    return Err(InputError::new(
                        "a mistral text_config without `sliding_window` takes MistralConfig's default, a 4096-token \
                         sliding window, and hetsim does not model sliding-window attention yet: set it to null \
                         if the checkpoint attends to the whole context",
                    ));
                }
                Some(v) => {
                    return Err(InputError::new(format!(
                        "field `sliding_window` = {v}: hetsim does not model sliding-window attention yet (null: full attention)"
                    )));
                }
            }
            (14336, Some(8))
        }
        other => {
            return Err(InputError::new(format!(
                "text_config.model_type `{other}` is not supported: hetsim reads llama and mistral text models here"
            )));
        }
    };
    llama_style(c, intermediate, kv_default)
}

/// A LLaMA-style decoder (LLaMA, Mistral, Mixtral's attention and shape) with its class's
/// defaults for absent keys: 4096 wide, 32 layers, 32 heads, vocabulary 32,000, and the
/// class's MLP width and KV heads (None: as many as the attention heads). Full attention, dense.
pub(super) fn llama_style(
    c: &Map<String, Value>,
    intermediate: u64,
    kv_default: Option<u64>,
) -> Result<LlmSpec, InputError> {
    let hidden = uint_or(c, "hidden_size", 4096)?;
    let heads = uint_or(c, "num_attention_heads", 32)?;
    Ok(LlmSpec {
        layers: uint_or(c, "num_hidden_layers", 32)?,
        hidden,
        heads,
        kv_heads: kv_heads(c, heads, kv_default.unwrap_or(heads))?,
        head_dim: head_dim(c, hidden, heads)?,
        intermediate: uint_or(c, "intermediate_size", intermediate)?,
        vocab: uint_or(c, "vocab_size", 32000)?,
        tied_embeddings: flag_or(c, "tie_word_embeddings", false)?,
        qkv_bias: false,
        qk_norm: false,
        norms_per_layer: 2,
        sliding: None,
        moe: None,
        cross_attention: None,
        mla: None,
    })
}

/// ViT layers run to reach `vision_feature_layer` (hidden_states has layers + 1 entries, the
/// embeddings first; index -1 is the last layer).
fn layers_run(layers: u64, feature_layer: i64) -> Result<u64, InputError> {
    let run = if feature_layer < 0 {
        layers as i64 + 1 + feature_layer
    } else {
        feature_layer
    };
    if run < 1 || run > layers as i64 {
        return Err(InputError::new(format!(
            "field `vision_feature_layer` = {feature_layer} selects no layer of a {layers}-layer encoder"
        )));
    }
    Ok(run as u64)
}

/// `CLIPVisionConfig` (defaults are the ViT-B/32 ones, as in transformers).
pub fn clip_vision(
    c: &Map<String, Value>,
    feature_layer: i64,
) -> Result<(VitSpec, VisualTokenRule), InputError> {
    let layers = uint_or(c, "num_hidden_layers", 12)?;
    let patch = uint_or(c, "patch_size", 32)?;
    let image_size = uint_or(c, "image_size", 224)?;
    if image_size % patch != 0 {
        return Err(InputError::new(format!(
            "field `image_size` = {image_size} is not a multiple of `patch_size` = {patch}"
        )));
    }
    Ok((
        VitSpec {
            layers,
            layers_run: layers_run(layers, feature_layer)?,
            hidden: uint_or(c, "hidden_size", 768)?,
            heads: uint_or(c, "num_attention_heads", 12)?,
            intermediate: uint_or(c, "intermediate_size", 3072)?,
            gated_mlp: false,
            patch,
            patch_input: uint_or(c, "num_channels", 3)?,
            weights: crate::catalog::models::clip_weights(image_size, patch),
        },
        VisualTokenRule::FixedSquare { image_size, patch },
    ))
}

/// `PixtralVisionConfig`: 1024 wide, 24 layers, 16 heads, SwiGLU MLP 4096, patch 16, RoPE-2D.
/// Pixtral-12B's config states none of the widths, which is how a reader with CLIP's defaults
/// took it for a 768-wide tower. Images keep their resolution up to the processor's
/// `longest_edge`, in tokens of `merge × merge` patches (`PixtralProcessor.spatial_merge_size`).
pub(super) fn pixtral_vision(
    c: &Map<String, Value>,
    feature_layer: i64,
    longest_edge: u64,
    merge: u64,
) -> Result<(VitSpec, VisualTokenRule), InputError> {
    let layers = uint_or(c, "num_hidden_layers", 24)?;
    let patch = uint_or(c, "patch_size", 16)?;
    Ok((
        VitSpec {
            layers,
            layers_run: layers_run(layers, feature_layer)?,
            hidden: uint_or(c, "hidden_size", 1024)?,
            heads: uint_or(c, "num_attention_heads", 16)?,
            intermediate: uint_or(c, "intermediate_size", 4096)?,
            gated_mlp: true,
            patch,
            patch_input: uint_or(c, "num_channels", 3)?,
            // RMSNorms (one before the layers), no biases, rotary positions.
            weights: VitWeights {
                norm: Norm::Rms,
                attention_bias: false,
                mlp_bias: false,
                patch_bias: false,
                learned_vectors: 0,
                outer_norms: 1,
                gates: 0,
            },
        },
        VisualTokenRule::NativeResolution {
            longest_edge,
            patch,
            merge,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::catalog::models::fixture::model as fixture;

    fn parsed(v: serde_json::Value) -> Result<HfModel, InputError> {
        crate::catalog::models::parse_hf_config("x", &v)
    }

    #[test]
    fn pixtral_tower_takes_pixtral_defaults_and_native_resolution() {
        let m = fixture("pixtral-12b.json");
        let v = m.vision.as_ref().unwrap();
        // PixtralVisionConfig defaults, not CLIP's 768 × 12.
        assert_eq!(
            (v.vit.hidden, v.vit.layers, v.vit.layers_run),
            (1024, 24, 24)
        );
        // Mistral-NeMo decoder: 40 layers, 32 heads (MistralConfig default) of 128, 8 KV heads.
        assert_eq!(
            (m.llm.layers, m.llm.heads, m.llm.kv_heads, m.llm.head_dim),
            (40, 32, 8, 128)
        );
        // 640×480 in 16-px patches: 40 × 30, plus a break per row (the last one the end token).
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!((t.feature_tokens, t.llm_tokens), (1200, 30 * 41));
        // 4032×3024 scales by 3.9375 to 1024×768: 64 × 48 patches.
        let t = m.image_tokens(4032, 3024).unwrap();
        assert_eq!(
            (t.resized_width, t.resized_height, t.llm_tokens),
            (1024, 768, 48 * 65)
        );
        // A partial patch counts: 641×479 → 41 × 30.
        assert_eq!(m.image_tokens(641, 479).unwrap().feature_tokens, 41 * 30);
        // 1×32768 scales by 32 to 0×1024: refused, not a panic.
        let e = m.image_tokens(1, 32768).unwrap_err().to_string();
        assert!(e.contains("under one pixel"), "{e}");
    }

    /// `multimodal_projector_bias` false drops the projector's two biases (2 × 4096 for the
    /// 7B); anything but a boolean is refused, not read as the default.
    #[test]
    fn projector_bias_follows_the_config() {
        let mut c = crate::catalog::models::fixture::config("llava-1.5-7b-hf.json");
        let vision_params = |c: &serde_json::Value| match parsed(c.clone()).unwrap() {
            HfModel::Model(m) => m.vision.unwrap().projector.params(),
            other => panic!("{other:?}"),
        };
        let biased = vision_params(&c);
        assert_eq!(biased, 1024 * 4096 + 4096 * 4096 + 2 * 4096);
        c["multimodal_projector_bias"] = false.into();
        assert_eq!(vision_params(&c), biased - 2 * 4096);
        c["multimodal_projector_bias"] = "no".into();
        let e = parsed(c.clone()).unwrap_err().to_string();
        assert!(
            e.contains("multimodal_projector_bias") && e.contains("true or false"),
            "{e}"
        );
        // The text model's flags are read as strictly (a string is not the default).
        c["multimodal_projector_bias"] = true.into();
        c["text_config"]["tie_word_embeddings"] = "false".into();
        let e = parsed(c).unwrap_err().to_string();
        assert!(
            e.contains("tie_word_embeddings") && e.contains("true or false"),
            "{e}"
        );
    }

    #[test]
    fn llava_next_anyres_by_hand() {
        let m = fixture("llava-v1.6-mistral-7b-hf.json");
        assert_eq!(
            (m.llm.hidden, m.llm.kv_heads, m.llm.intermediate),
            (4096, 8, 14336)
        );
        // 336×336 fits [336, 672] best (equal effective pixels, less waste than 672×672): 1 × 2
        // tiles, 24 × 48 patches, unpadded to 24 × 24, + 24 newlines + the 576-token base image.
        let t = m.image_tokens(336, 336).unwrap();
        assert_eq!((t.resized_width, t.resized_height), (672, 336));
        assert_eq!((t.tiles, t.llm_tokens), (3, 576 + 24 + 576));
        // 640×480 → 672×672 (2 × 2 tiles, 48 × 48 patches); 480·48/640 = 36 rows survive:
        // 36·48 + 36 + 576 = 2340.
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!(
            (t.tiles, t.llm_tokens, t.encoder_tokens),
            (5, 2340, 5 * 577)
        );
    }

    #[test]
    fn unsupported_towers_text_models_and_windows_are_refused() {
        let base = serde_json::json!({"model_type": "llava", "text_config": {}, "vision_config": {"model_type": "siglip_vision_model"}});
        let e = parsed(base).unwrap_err().to_string();
        assert!(
            e.contains("siglip_vision_model") && e.contains("pixtral"),
            "{e}"
        );
        let e = parsed(
            serde_json::json!({"model_type": "llava", "vision_config": {},
            "text_config": {"model_type": "mistral"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sliding window") && e.contains("4096"), "{e}");
        let e = parsed(
            serde_json::json!({"model_type": "llava", "vision_config": {"model_type": "pixtral"},
            "text_config": {}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pixtral") && e.contains("full"), "{e}");
        let e = parsed(serde_json::json!({"model_type": "internvl"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("internvl") && e.contains("llava_next") && e.contains("mllama"),
            "{e}"
        );
    }
}
