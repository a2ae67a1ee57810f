//! Llama 4 (`llama4`: Llama-4-Scout-17B-16E; Maverick by its config): a tiled ViT whose tiles'
//! patches are pixel-shuffled 2 × 2 and projected into the decoder's context, and a decoder of
//! mixture-of-experts MLPs (a shared expert beside the routed ones) whose attention is chunked in
//! three layers of every four.
//!
//! Absent keys take transformers 5.25.0's defaults. `Llama4TextConfig`: 5120 wide, 48 layers, 40
//! heads of 128, 8 KV heads (null: as many as the heads; a null `head_dim`: hidden / heads),
//! vocabulary 202,048, untied embeddings, 16 experts of width `intermediate_size` 8192 with 1 per
//! token and a shared expert of the same width, experts in every layer
//! (`interleave_moe_layer_step` 1; other layers' MLPs are `intermediate_size_mlp` 16384 wide),
//! 8192-token attention chunks on every layer that uses RoPE (`no_rope_layers`, by default every
//! 4th layer is a full-attention NoPE layer), no attention biases, q/k norms without weights.
//! `Llama4VisionConfig`: 768 wide, 34 layers, 16 heads, MLP 5632, 448-px tiles of 14-px patches,
//! pixel-shuffle ratio 0.5, adapter 4096 → 4096, output 7680 (so a config without a
//! `vision_config` is refused: its adapter does not fit its tower). An absent `text_config` or
//! `vision_config` is that class with every default (`Llama4Config.sub_configs_defaults`).

use serde_json::{Map, Value, json};

use super::fields::{flag_or, indices, local_layers, object_or, uint_or};
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, checked_tower, clip_weights, head_dim, kv_heads};
use crate::error::InputError;

/// `Llama4ImageProcessor`'s `max_patches` (tiles of a canvas) in Llama-4-Scout's
/// `preprocessor_config.json`, the class default too: the processor's own setting, not in
/// config.json.
pub const LLAMA4_MAX_TILES: u64 = 16;

pub fn parse(name: &str, top: &Map<String, Value>) -> Result<HfModel, InputError> {
    let defaults = json!({});
    let text = object_or(top, "text_config", &defaults)?;
    let vision = object_or(top, "vision_config", &defaults)?;
    let llm = text_decoder(text).map_err(|e| e.context("text_config"))?;
    let (vit, tokens, projector) =
        vision_model(vision, llm.hidden).map_err(|e| e.context("vision_config"))?;
    checked_tower(name, vit, tokens, projector, llm)
}

fn text_decoder(c: &Map<String, Value>) -> Result<LlmSpec, InputError> {
    let layers = uint_or(c, "num_hidden_layers", 48)?;
    let hidden = uint_or(c, "hidden_size", 5120)?;
    let heads = uint_or(c, "num_attention_heads", 40)?;
    // Llama4TextConfig.__post_init__ turns a null KV-head count into the heads and a null head
    // size into hidden / heads; absent, they are 8 and 128.
    let null = |field: &str| c.get(field) == Some(&Value::Null);
    let kv_default = if null("num_key_value_heads") {
        heads
    } else {
        8
    };
    let head_dim = if null("head_dim") {
        head_dim(c, hidden, heads)?
    } else {
        uint_or(c, "head_dim", 128)?
    };
    // Llama4TextAttention puts `attention_bias` on q, k, v and o; hetsim counts q, k and v's.
    if c.get("attention_bias") == Some(&Value::Bool(true)) {
        return Err(InputError::new(
            "field `attention_bias` = true: Llama 4's biased output projection is not modelled (false is)",
        ));
    }
    let intermediate = uint_or(c, "intermediate_size", 8192)?;
    let dense_intermediate = uint_or(c, "intermediate_size_mlp", 16384)?;
    let sparse = moe_layers(c, layers)?;
    let moe = if sparse > 0 {
        let experts = uint_or(c, "num_local_experts", 16)?;
        let active = uint_or(c, "num_experts_per_tok", 1)?;
        if active > experts {
            return Err(InputError::new(format!(
                "field `num_experts_per_tok` = {active} is more than `num_local_experts` = {experts}"
            )));
        }
        // Llama4TextMoe: the routed experts and a shared expert, both of `intermediate_size`.
        Some(Moe {
            experts,
            active,
            shared: intermediate,
            dense_layers: layers - sparse,
            dense_intermediate,
        })
    } else {
        None
    };
    let chunked = chunked_layers(c, layers)?;
    Ok(LlmSpec {
        layers,
        hidden,
        heads,
        kv_heads: kv_heads(c, heads, kv_default)?,
        head_dim,
        // A decoder without experts is its dense MLPs.
        intermediate: if moe.is_some() {
            intermediate
        } else {
            dense_intermediate
        },
        vocab: uint_or(c, "vocab_size", 202_048)?,
        // Llama4ForCausalLM ties its head by the text config's own key; the top-level
        // `tie_word_embeddings` does not reach it (transformers 5.25.0).
        tied_embeddings: flag_or(c, "tie_word_embeddings", false)?,
        qkv_bias: false,
        // `use_qk_norm` is an L2 norm without weights (Llama4TextWeightlessRMSNorm).
        qk_norm: false,
        norms_per_layer: 2,
        sliding: chunked,
        moe,
        cross_attention: None,
        mla: None,
    })
}

/// How many layers have experts: `moe_layers` when given, else every
/// `interleave_moe_layer_step`-th layer from the step's own (`range(step − 1, L, step)`).
fn moe_layers(c: &Map<String, Value>, layers: u64) -> Result<u64, InputError> {
    if c.get("moe_layers").is_none_or(Value::is_null) {
        return Ok(layers / uint_or(c, "interleave_moe_layer_step", 1)?);
    }
    let mut listed = indices(c, "moe_layers", &[])?;
    listed.sort_unstable();
    listed.dedup();
    if let Some(i) = listed.iter().find(|&&i| i >= layers) {
        return Err(InputError::new(format!(
            "field `moe_layers` has {i}: layers run from 0 to `num_hidden_layers` − 1 = {}",
            layers - 1
        )));
    }
    Ok(listed.len() as u64)
}

/// The chunked-attention layers: those `layer_types` names so, or else those `no_rope_layers`
/// gives RoPE (1; empty or absent: all but every `no_rope_layer_interval`-th, default 4), while
/// `attention_chunk_size` (default 8192) is not null.
fn chunked_layers(
    c: &Map<String, Value>,
    layers: u64,
) -> Result<Option<SlidingWindow>, InputError> {
    let chunk = match c.get("attention_chunk_size") {
        Some(Value::Null) => None,
        _ => Some(uint_or(c, "attention_chunk_size", 8192)?),
    };
    let count = match (local_layers(c, layers, "chunked_attention")?, chunk) {
        (Some(n), Some(_)) => n,
        (Some(0), None) => 0,
        (Some(_), None) => {
            return Err(InputError::new(
                "field `layer_types` has \"chunked_attention\" while `attention_chunk_size` is null",
            ));
        }
        (None, None) => 0,
        (None, Some(_)) => match c.get("no_rope_layers") {
            Some(Value::Array(rope)) if !rope.is_empty() => {
                if (rope.len() as u64) < layers {
                    return Err(InputError::new(format!(
                        "field `no_rope_layers` lists {} layers: it needs one entry (1 RoPE, 0 NoPE) per layer, {layers}",
                        rope.len()
                    )));
                }
                let mut with_rope = 0;
                for r in &rope[..layers as usize] {
                    match r.as_u64() {
                        Some(1) => with_rope += 1,
                        Some(0) => {}
                        _ => {
                            return Err(InputError::new(format!(
                                "field `no_rope_layers` has {r}: allowed 1 (RoPE, chunked attention) or 0 (NoPE, full attention)"
                            )));
                        }
                    }
                }
                with_rope
            }
            None | Some(Value::Null) | Some(Value::Array(_)) => {
                layers - layers / uint_or(c, "no_rope_layer_interval", 4)?
            }
            Some(v) => {
                return Err(InputError::new(format!(
                    "field `no_rope_layers` = {}: must list 1 or 0 per layer",
                    crate::bounds::excerpt(&v.to_string())
                )));
            }
        },
    };
    Ok(chunk.filter(|_| count > 0).map(|window| SlidingWindow {
        window,
        layers: count,
        kind: WindowKind::Chunked,
    }))
}

/// `Llama4VisionModel` and its adapter, and the multimodal projector into the LLM's width.
fn vision_model(
    c: &Map<String, Value>,
    llm_hidden: u64,
) -> Result<(VitSpec, VisualTokenRule, ProjectorSpec), InputError> {
    let hidden = uint_or(c, "hidden_size", 768)?;
    let layers = uint_or(c, "num_hidden_layers", 34)?;
    let intermediate = uint_or(c, "intermediate_size", 5632)?;
    let tile = uint_or(c, "image_size", 448)?;
    let patch = uint_or(c, "patch_size", 14)?;
    let ratio = match c.get("pixel_shuffle_ratio") {
        None | Some(Value::Null) => 0.5,
        Some(v) => v.as_f64().unwrap_or(f64::NAN),
    };
    // The shuffle folds 1/ratio × 1/ratio patches into one token. Its reshapes take int() of
    // the grid's side times the ratio: exact for a power of two.
    let merge = (1.0 / ratio).round();
    if !(1.0..=16.0).contains(&merge) || merge * ratio != 1.0 || !(merge as u64).is_power_of_two() {
        return Err(InputError::new(format!(
            "field `pixel_shuffle_ratio` = {}: hetsim reads 1, 1/2, 1/4, 1/8 or 1/16 (0.5: 2 × 2 patches a token)",
            crate::bounds::excerpt(&c["pixel_shuffle_ratio"].to_string())
        )));
    }
    let merge = merge as u64;
    if !tile.is_multiple_of(patch) || !(tile / patch).is_multiple_of(merge) {
        return Err(InputError::new(format!(
            "fields `image_size` = {tile}, `patch_size` = {patch}: the patches must tile the image, and {merge} × {merge} \
             of them a shuffled token"
        )));
    }
    // The adapter's first Linear takes `intermediate_size` inputs, the shuffle hands it
    // hidden · merge² values; its second is square in `projector_output_dim` and takes the
    // first's `projector_input_dim` outputs; the projector takes `vision_output_dim`. A model
    // whose shapes disagree builds but cannot run.
    let adapter_in = uint_or(c, "projector_input_dim", 4096)?;
    let adapter = uint_or(c, "projector_output_dim", 4096)?;
    let output = uint_or(c, "vision_output_dim", 7680)?;
    if intermediate != hidden * merge * merge || adapter_in != adapter || output != adapter {
        return Err(InputError::new(format!(
            "fields `hidden_size` = {hidden}, `intermediate_size` = {intermediate}, `projector_input_dim` = {adapter_in}, \
             `projector_output_dim` = {adapter}, `vision_output_dim` = {output}: the pixel shuffle hands the adapter \
             hidden · {} = {} values a token, which must be `intermediate_size`, and the adapter's width must be \
             `projector_input_dim` = `projector_output_dim` = `vision_output_dim`",
            merge * merge,
            hidden * merge * merge
        )));
    }
    let vit = VitSpec {
        layers,
        // The model runs every layer (`vision_feature_layer` is not Llama4VisionConfig's).
        layers_run: layers,
        hidden,
        heads: uint_or(c, "num_attention_heads", 16)?,
        intermediate,
        gated_mlp: false,
        patch,
        patch_input: uint_or(c, "num_channels", 3)?,
        // CLIP's weight layout: LayerNorms before and after the layers, biases in the layers, an
        // unbiased patch Linear, a class token and a position per patch and for it.
        weights: clip_weights(tile, patch),
    };
    Ok((
        vit,
        VisualTokenRule::TiledGlobal {
            tile,
            patch,
            merge,
            max_tiles: LLAMA4_MAX_TILES,
        },
        // `multi_modal_projector_bias` reaches neither the adapter nor the projector: both are
        // built without biases (transformers 5.25.0).
        ProjectorSpec::ShuffledMlpLinear {
            vit_hidden: hidden,
            merge,
            adapter,
            output: llm_hidden,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::models::parse_hf_config;

    fn scout_config() -> Value {
        crate::catalog::models::fixture::config("llama-4-scout-17b-16e-instruct.json")
    }

    fn model(c: &Value) -> Result<ModelSpec, InputError> {
        match parse_hf_config("x", c)? {
            HfModel::Model(m) => Ok(*m),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scout_tiles_shuffles_and_chunks() {
        let m = model(&scout_config()).unwrap();
        let l = &m.llm;
        // 36 of 48 layers attend in 8192-token chunks (`no_rope_layers` [] means every 4th is a
        // full-attention NoPE layer); 4 KiB a token and layer (2 · 8 · 128 · 2 B).
        assert_eq!(
            l.sliding,
            Some(SlidingWindow {
                window: 8192,
                layers: 36,
                kind: WindowKind::Chunked
            })
        );
        assert_eq!(l.full_attention_layers(), 12);
        assert_eq!(l.kv_bytes(1, Dtype::Bf16), 48 * 4096);
        // Past the chunk, a chunked layer's cache stays at 8191 tokens.
        assert_eq!(
            l.kv_bytes(10_000, Dtype::Bf16),
            4096 * (12 * 10_000 + 36 * 8191)
        );
        // A token runs 1 of 16 experts and the shared expert, both 8192 wide.
        let moe = l.moe.unwrap();
        assert_eq!(
            (moe.experts, moe.active, moe.shared, moe.dense_layers),
            (16, 1, 8192, 0)
        );
        assert_eq!(l.active_mlp_params(), 3 * 5120 * (8192 + 8192));
        assert!(!l.tied_embeddings);
        // 640×480 fits 2 × 2 tiles: 4 and the global tile, 144 features each, 4 separators and
        // <|image_start|>, <|image|>, <|image_end|>.
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!((t.resized_width, t.resized_height, t.tiles), (672, 672, 5));
        assert_eq!(
            (t.encoder_tokens, t.feature_tokens, t.llm_tokens),
            (5 * 577, 5 * 144, 5 * 144 + 4 + 3)
        );
        // One tile: no global tile, no separators.
        let t = m.image_tokens(336, 336).unwrap();
        assert_eq!((t.tiles, t.feature_tokens, t.llm_tokens), (1, 144, 147));
        // 4032×3024 shrinks least onto 3 × 4 tiles (scale 1/3; 3 × 5 and 4 × 4 tie, larger).
        let t = m.image_tokens(4032, 3024).unwrap();
        assert_eq!(
            (t.resized_width, t.resized_height, t.tiles),
            (1344, 1008, 13)
        );
        let v = m.vision.as_ref().unwrap();
        // The adapter (5632 → 4096 → 4096) and the projector (4096 → 5120), no biases.
        assert_eq!(
            v.projector.params(),
            5632 * 4096 + 4096 * 4096 + 4096 * 5120
        );
        assert_eq!(v.projector.input_width(), 4096);
    }

    #[test]
    fn maverick_shapes_interleave_dense_and_expert_layers() {
        // Scout's config with Maverick's text shapes (every other layer with 128 experts, no
        // q/k norm): transformers 5.25.0 builds 400,711,848,960 language-model parameters on
        // the meta device (24 dense layers of MLP 16384, 24 of 128 experts and a shared one).
        let mut c = scout_config();
        let t = c["text_config"].as_object_mut().unwrap();
        t.insert("interleave_moe_layer_step".into(), 2.into());
        t.insert("num_local_experts".into(), 128.into());
        t.insert("use_qk_norm".into(), false.into());
        let m = model(&c).unwrap();
        assert_eq!(m.llm.mlp_layers(), (24, 24));
        assert_eq!(m.llm.params(), 400_711_848_960);
        assert_eq!(m.llm.peak_active_mlp_width(), 16384);
        // The same layers given as a list; without experts the decoder is dense.
        let t = c["text_config"].as_object_mut().unwrap();
        let odd: Vec<u64> = (1..48).step_by(2).collect();
        t.insert("moe_layers".into(), json!(odd));
        assert_eq!(model(&c).unwrap().llm.params(), 400_711_848_960);
        let t = c["text_config"].as_object_mut().unwrap();
        t.insert("moe_layers".into(), json!([]));
        let dense = model(&c).unwrap().llm;
        assert!(dense.moe.is_none());
        assert_eq!(dense.intermediate, 16384);
    }

    #[test]
    fn layer_kinds_follow_transformers() {
        let kinds = |edit: Value| {
            let mut c = scout_config();
            let t = c["text_config"].as_object_mut().unwrap();
            for (k, v) in edit.as_object().unwrap() {
                t.insert(k.clone(), v.clone());
            }
            model(&c).map(|m| m.llm.sliding.map_or(0, |w| w.layers))
        };
        // No chunk: every layer attends to the whole context.
        assert_eq!(kinds(json!({"attention_chunk_size": null})).unwrap(), 0);
        assert_eq!(kinds(json!({"no_rope_layer_interval": 2})).unwrap(), 24);
        let mut rope = vec![1; 48];
        rope[0] = 0;
        assert_eq!(kinds(json!({ "no_rope_layers": rope })).unwrap(), 47);
        let e = kinds(json!({"no_rope_layers": [1, 0]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_rope_layers") && e.contains("48"), "{e}");
        let mut types = vec!["full_attention"; 48];
        types[5] = "chunked_attention";
        assert_eq!(kinds(json!({ "layer_types": types })).unwrap(), 1);
        types[6] = "sliding_attention";
        let e = kinds(json!({ "layer_types": types }))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sliding_attention"), "{e}");
    }

    #[test]
    fn shapes_a_llama4_model_cannot_run_are_refused() {
        // The default vision config (768 wide, output 7680) does not fit its own adapter.
        let e = model(&json!({"model_type": "llama4"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vision_config") && e.contains("intermediate_size"),
            "{e}"
        );
        let refused = |section: &str, field: &str, v: Value| {
            let mut c = scout_config();
            c[section].as_object_mut().unwrap().insert(field.into(), v);
            model(&c).unwrap_err().to_string()
        };
        assert!(refused("vision_config", "pixel_shuffle_ratio", json!(0.3)).contains("0.3"));
        assert!(refused("vision_config", "vision_output_dim", json!(5120)).contains("5120"));
        assert!(refused("text_config", "attention_bias", json!(true)).contains("attention_bias"));
        assert!(refused("text_config", "moe_layers", json!([3, 48])).contains("48"));
        assert!(refused("text_config", "num_experts_per_tok", json!(17)).contains("17"));
        // The text config's own key ties the head; the top-level one does not reach it.
        let mut c = scout_config();
        c["tie_word_embeddings"] = true.into();
        assert!(!model(&c).unwrap().llm.tied_embeddings);
        c["text_config"]["tie_word_embeddings"] = true.into();
        assert!(model(&c).unwrap().llm.tied_embeddings);
    }
}
