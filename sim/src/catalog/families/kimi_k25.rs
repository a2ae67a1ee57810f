//! Kimi-K2.5 (`kimi_k25`): the MoonViT tower at native resolution (`navit_resize`: at most
//! 16,384 patches of 14 px, 512 a side, padded to whole 28-px tokens), its patch merger (each
//! 2 × 2 block of patches one token: LayerNorm, the four patches side by side, Linear · GELU ·
//! Linear), and a DeepSeek-V3 decoder (`text_config`, `model_type` `kimi_k2` or `deepseek_v3`):
//! multi-head latent attention in every layer, a dense SwiGLU MLP in the first
//! `first_k_dense_replace` layers and in the others a mixture of routed experts beside shared
//! ones.
//!
//! Absent keys take transformers 5.25.0's defaults. `DeepseekV3Config`: 7168 wide, 61 layers, 128
//! heads (KV heads = heads), q_lora_rank 1536 (null: one `q_proj`), kv_lora_rank 512,
//! qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128, 256 routed experts of
//! `moe_intermediate_size` 2048 with 8 per token, 1 shared expert, the first 3 layers dense of
//! `intermediate_size` 18432, vocabulary 129,280, no attention biases. `Kimi_K25VisionConfig`:
//! 1152 wide, 27 layers, 16 heads, MLP 4304, patch 14, a learned 64 × 64 position grid, merge
//! 2 × 2. `Kimi_K25Config`: `projection_hidden_size` 1152 (the projector's LayerNorm, over the
//! tower's width) and `tie_word_embeddings` true — the top-level key ties the LM head
//! (Kimi-K2.5's config says false).
//!
//! The published config names the tower's sizes as the checkpoint's remote code does
//! (`vt_hidden_size`, `vt_num_hidden_layers`, `init_pos_emb_height`, …), which transformers
//! 5.25.0 does not read: it builds the tower from `hidden_size`, `num_hidden_layers`, … and their
//! defaults. Where a config gives a remote-code size that differs from what transformers builds,
//! it is refused: the two would be different towers.

use serde_json::{Map, Value, json};

use super::fields::{count_or, flag_or, object_or, uint_or};
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, checked_tower};
use crate::error::InputError;

/// `media_proc_cfg.in_patch_limit` and `patch_limit_on_one_side` of Kimi-K2.5's
/// `preprocessor_config.json` (transformers' `Kimi_K25ImageProcessor`: `max_patches` and
/// `size.max_height`, whose defaults they equal): the processor's own settings, not in
/// config.json.
pub const KIMI_MAX_PATCHES: u64 = 16_384;
pub const KIMI_MAX_SIDE_PATCHES: u64 = 512;
/// The processor's `patch_size` and `merge_kernel_size` (the same file): a tower of another patch
/// or merge would come with another processor, which hetsim does not know.
const PROCESSOR_PATCH: u64 = 14;
const PROCESSOR_MERGE: u64 = 2;

pub fn parse(name: &str, top: &Map<String, Value>) -> Result<HfModel, InputError> {
    let defaults = json!({});
    let text = object_or(top, "text_config", &defaults)?;
    let vision = object_or(top, "vision_config", &defaults)?;
    let mut llm = text_decoder(text).map_err(|e| e.context("text_config"))?;
    // Kimi_K25ForConditionalGeneration ties its head by the top-level key (default true); the
    // text config's own does not reach it.
    llm.tied_embeddings = flag_or(top, "tie_word_embeddings", true)?;
    let (vit, merge) = tower(vision).map_err(|e| e.context("vision_config"))?;
    // Kimi_K25MultimodalProjection: LayerNorm(projection_hidden_size) over each patch, then the
    // merge² patches as one vector; the norm must be the tower's width.
    let norm = uint_or(top, "projection_hidden_size", 1152)?;
    if norm != vit.hidden {
        return Err(InputError::new(format!(
            "field `projection_hidden_size` = {norm} is not the tower's width {}: the projector's \
             LayerNorm normalises each patch",
            vit.hidden
        )));
    }
    let stated = |field: &str, want: u64| match vision.get(field) {
        Some(v) if v.as_u64() != Some(want) => Err(InputError::new(format!(
            "field `vision_config.{field}` = {}: the projector maps {} to the text model's {}",
            crate::bounds::excerpt(&v.to_string()),
            vit.hidden,
            llm.hidden
        ))),
        _ => Ok(()),
    };
    stated("mm_hidden_size", vit.hidden)?;
    stated("text_hidden_size", llm.hidden)?;
    let tokens = VisualTokenRule::Navit {
        patch: vit.patch,
        merge,
        max_patches: KIMI_MAX_PATCHES,
        max_side: KIMI_MAX_SIDE_PATCHES,
    };
    let projector = ProjectorSpec::PatchMerger {
        vit_hidden: vit.hidden,
        merge,
        output: llm.hidden,
        norm: Norm::Layer,
    };
    checked_tower(name, vit, tokens, projector, llm)
}

/// `DeepseekV3Config` (the `kimi_k2` text config is one, renamed).
fn text_decoder(c: &Map<String, Value>) -> Result<LlmSpec, InputError> {
    let model_type = c
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("deepseek_v3");
    if !matches!(model_type, "deepseek_v3" | "kimi_k2") {
        return Err(InputError::new(format!(
            "field `model_type` = `{model_type}`: a `kimi_k25` text model is read as deepseek_v3 (or kimi_k2)"
        )));
    }
    let layers = uint_or(c, "num_hidden_layers", 61)?;
    let hidden = uint_or(c, "hidden_size", 7168)?;
    let heads = uint_or(c, "num_attention_heads", 128)?;
    // kv_b_proj gives every query head its own key and value: the config's KV heads are the
    // heads (DeepseekV3Config's default, None, becomes them).
    let kv_heads = match c.get("num_key_value_heads") {
        None | Some(Value::Null) => heads,
        Some(_) => uint_or(c, "num_key_value_heads", heads)?,
    };
    if kv_heads != heads {
        return Err(InputError::new(format!(
            "field `num_key_value_heads` = {kv_heads}: multi-head latent attention expands a key and a value for each of the \
             {heads} heads (`num_attention_heads`)"
        )));
    }
    if flag_or(c, "attention_bias", false)? {
        return Err(InputError::new(
            "field `attention_bias` = true: biases on MLA's projections are not modelled (false is)",
        ));
    }
    let q_lora_rank = match c.get("q_lora_rank") {
        Some(Value::Null) => None,
        _ => Some(uint_or(c, "q_lora_rank", 1536)?),
    };
    let mla = Mla {
        q_lora_rank,
        kv_lora_rank: uint_or(c, "kv_lora_rank", 512)?,
        qk_nope_head_dim: uint_or(c, "qk_nope_head_dim", 128)?,
        qk_rope_head_dim: uint_or(c, "qk_rope_head_dim", 64)?,
        v_head_dim: uint_or(c, "v_head_dim", 128)?,
    };
    // The remote code's `moe_layer_freq` (experts in every k-th layer) is not read by
    // transformers, which puts experts in every layer after the dense ones.
    let freq = uint_or(c, "moe_layer_freq", 1)?;
    if freq != 1 {
        return Err(InputError::new(format!(
            "field `moe_layer_freq` = {freq}: transformers 5.25.0 puts experts in every layer from \
             `first_k_dense_replace` on (1); the checkpoint's own code would differ"
        )));
    }
    let dense = count_or(c, "first_k_dense_replace", 3, layers)?;
    let moe_width = uint_or(c, "moe_intermediate_size", 2048)?;
    let dense_width = uint_or(c, "intermediate_size", 18432)?;
    let moe = if dense < layers {
        let experts = uint_or(c, "n_routed_experts", 256)?;
        let active = uint_or(c, "num_experts_per_tok", 8)?;
        if active > experts {
            return Err(InputError::new(format!(
                "field `num_experts_per_tok` = {active} is more than `n_routed_experts` = {experts}"
            )));
        }
        // DeepseekV3MoE: the routed experts, and `n_shared_experts` shared ones as one SwiGLU
        // of their summed width.
        let shared = count_or(c, "n_shared_experts", 1, 1 << 10)? * moe_width;
        Some(Moe {
            experts,
            active,
            shared,
            dense_layers: dense,
            dense_intermediate: dense_width,
        })
    } else {
        None
    };
    Ok(LlmSpec {
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim: mla.qk_head_dim(),
        intermediate: if moe.is_some() {
            moe_width
        } else {
            dense_width
        },
        vocab: uint_or(c, "vocab_size", 129_280)?,
        tied_embeddings: flag_or(c, "tie_word_embeddings", false)?,
        qkv_bias: false,
        qk_norm: false,
        norms_per_layer: 2,
        sliding: None,
        moe,
        cross_attention: None,
        mla: Some(mla),
    })
}

/// `Kimi_K25VisionConfig`: the tower and its merge.
fn tower(c: &Map<String, Value>) -> Result<(VitSpec, u64), InputError> {
    // (transformers' key, the remote code's, Kimi_K25VisionConfig's default)
    let read = |key: &str, remote: &str, default: u64| -> Result<u64, InputError> {
        let value = uint_or(c, key, default)?;
        match c.get(remote) {
            Some(v) if v.as_u64() != Some(value) => Err(InputError::new(format!(
                "field `{remote}` = {}, but transformers 5.25.0 builds the tower from `{key}` = {value}{}: the two differ",
                crate::bounds::excerpt(&v.to_string()),
                if c.contains_key(key) {
                    ""
                } else {
                    " (its default)"
                }
            ))),
            _ => Ok(value),
        }
    };
    let hidden = read("hidden_size", "vt_hidden_size", 1152)?;
    let layers = read("num_hidden_layers", "vt_num_hidden_layers", 27)?;
    let heads = read("num_attention_heads", "vt_num_attention_heads", 16)?;
    let intermediate = read("intermediate_size", "vt_intermediate_size", 4304)?;
    let grid_h = read("pos_emb_height", "init_pos_emb_height", 64)?;
    let grid_w = read("pos_emb_width", "init_pos_emb_width", 64)?;
    let patch = uint_or(c, "patch_size", 14)?;
    let merge = match c.get("merge_kernel_size") {
        None | Some(Value::Null) => PROCESSOR_MERGE,
        Some(Value::Array(k)) if k.len() == 2 && k[0] == k[1] && k[0].as_u64().is_some() => {
            k[0].as_u64().unwrap_or(0)
        }
        Some(v) => {
            return Err(InputError::new(format!(
                "field `merge_kernel_size` = {}: hetsim reads a square merge, [k, k]",
                crate::bounds::excerpt(&v.to_string())
            )));
        }
    };
    if (patch, merge) != (PROCESSOR_PATCH, PROCESSOR_MERGE) {
        return Err(InputError::new(format!(
            "`patch_size` = {patch}, `merge_kernel_size` = [{merge}, {merge}]: hetsim knows Kimi-K2.5's processor, \
             {PROCESSOR_PATCH}-px patches merged {PROCESSOR_MERGE} × {PROCESSOR_MERGE} (its preprocessor_config.json)"
        )));
    }
    let vit = VitSpec {
        layers,
        layers_run: layers,
        hidden,
        heads,
        intermediate,
        gated_mlp: false,
        patch,
        patch_input: 3,
        // LayerNorms with biases, biased q, k, v, output and MLP projections, a biased patch
        // embedding, the learned position grid (bicubically resampled to each image; the
        // temporal table is a fixed sinusoid) and the final LayerNorm.
        weights: VitWeights {
            norm: Norm::Layer,
            attention_bias: true,
            mlp_bias: true,
            patch_bias: true,
            learned_vectors: grid_h * grid_w,
            outer_norms: 1,
            gates: 0,
        },
    };
    Ok((vit, merge))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Map<String, Value> {
        match crate::catalog::models::fixture::config("kimi-k2.5.json") {
            Value::Object(top) => top,
            other => panic!("{other:?}"),
        }
    }

    fn kimi() -> ModelSpec {
        crate::catalog::models::fixture::model("kimi-k2.5.json")
    }

    #[test]
    fn kimi_k25_caches_the_latent_and_keeps_every_expert() {
        let m = kimi();
        let l = &m.llm;
        let mla = l.mla.unwrap();
        // 512 + 64 values a token and layer, 1,152 B in bf16 (64 heads' keys and values would
        // be 64 · (192 + 128) · 2 = 40,960 B).
        assert_eq!(l.kv_bytes(1, Dtype::Bf16), 61 * 1152);
        assert_eq!(mla.expanded_width(l.heads) * 2, 40_960);
        // The latent is whole on every GPU of a tensor-parallel instance.
        assert_eq!(l.kv_bytes_per_token_per_gpu(8, Dtype::Bf16), 61 * 1152);
        let moe = l.moe.unwrap();
        assert_eq!(
            (moe.experts, moe.active, moe.shared, moe.dense_layers),
            (384, 8, 2048, 1)
        );
        assert_eq!((moe.dense_intermediate, l.intermediate), (18432, 2048));
        assert!(!l.tied_embeddings);
        // A token runs 8 routed experts and the shared one: 9 · 3 · 7168 · 2048.
        assert_eq!(l.active_mlp_params(), 9 * 3 * 7168 * 2048);
    }

    #[test]
    fn kimi_k25_pads_to_whole_tokens_and_caps_the_patches() {
        let m = kimi();
        // 640×480: 480 → 504 (18 · 28), 640 → 644 (23 · 28): 18 · 23 = 414 tokens of 4 patches.
        let t = m.image_tokens(640, 480).unwrap();
        assert_eq!(
            (
                t.resized_width,
                t.resized_height,
                t.encoder_tokens,
                t.llm_tokens
            ),
            (644, 504, 1656, 414)
        );
        // 4032×3024 has 288 · 216 patches: scaled by √(16384 / 62208) to 2069×1551, padded to
        // 2072×1568, 74 · 56 tokens.
        let t = m.image_tokens(4032, 3024).unwrap();
        assert_eq!((t.resized_width, t.resized_height), (2072, 1568));
        assert_eq!(t.feature_tokens, 4144);
        // A 10,000-px-wide strip is held to 512 patches (7,168 px) a side.
        assert_eq!(m.image_tokens(10_000, 28).unwrap().resized_width, 7168);
        // A tiny image is one token of padding around it.
        assert_eq!(m.image_tokens(3, 2).unwrap().llm_tokens, 1);
    }

    fn edited(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut top = fixture();
        edit(&mut top);
        parse("k", &top).unwrap_err().to_string()
    }

    #[test]
    fn towers_and_decoders_it_would_misread_are_refused() {
        // The error of the fixture with `section.k` set to `v`.
        let set = |section: &str, k: &str, v: Value| {
            edited(|t| {
                t[section].as_object_mut().unwrap().insert(k.into(), v);
            })
        };
        let vision = |k: &str, v: Value| set("vision_config", k, v);
        let text = |k: &str, v: Value| set("text_config", k, v);
        let e = vision("vt_hidden_size", 1024.into());
        assert!(
            e.contains("vt_hidden_size") && e.contains("hidden_size"),
            "{e}"
        );
        let e = vision("merge_kernel_size", json!([2, 1]));
        assert!(e.contains("merge_kernel_size"), "{e}");
        let e = vision("patch_size", 16.into());
        assert!(e.contains("patch_size"), "{e}");
        assert!(text("attention_bias", true.into()).contains("attention_bias"));
        assert!(text("moe_layer_freq", 2.into()).contains("moe_layer_freq"));
        assert!(text("num_key_value_heads", 8.into()).contains("num_key_value_heads"));
        assert!(text("first_k_dense_replace", 62.into()).contains("first_k_dense_replace"));
        let e = edited(|t| {
            t.insert("projection_hidden_size".into(), 1024.into());
        });
        assert!(e.contains("projection_hidden_size"), "{e}");
    }

    #[test]
    fn absent_keys_take_transformers_defaults() {
        // No sub-configs: DeepseekV3Config's and Kimi_K25VisionConfig's defaults, a tied head.
        let HfModel::Model(m) = parse("k", json!({}).as_object().unwrap()).unwrap() else {
            panic!("a model")
        };
        let l = &m.llm;
        assert_eq!(
            (l.layers, l.hidden, l.heads, l.vocab),
            (61, 7168, 128, 129_280)
        );
        let moe = l.moe.unwrap();
        assert_eq!((moe.experts, moe.dense_layers), (256, 3));
        assert!(l.tied_embeddings);
        assert_eq!(m.vision.unwrap().vit.hidden, 1152);
        // A null q_lora_rank is one q_proj: d · heads · 192 in place of the low-rank pair.
        let mut top = fixture();
        top["text_config"]["q_lora_rank"] = Value::Null;
        let HfModel::Model(n) = parse("k", &top).unwrap() else {
            panic!("a model")
        };
        let with_lora = kimi().llm.block_params();
        assert_eq!(
            n.llm.block_params() - with_lora,
            7168 * 64 * 192 - (7168 * 1536 + 1536 + 1536 * 64 * 192)
        );
    }
}
