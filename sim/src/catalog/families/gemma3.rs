//! Gemma 3 (`gemma3`): a SigLIP tower whose patches are pooled to a fixed number of tokens, and a
//! decoder whose layers mostly attend to a sliding window.
//!
//! Absent keys take transformers' defaults (5.24.0): `Gemma3TextConfig` (2304 wide, 26 layers, 8
//! heads of 256, 4 KV heads, MLP 9216, vocabulary 262,208, tied embeddings, a 4096-token window,
//! every 6th layer full attention unless `layer_types` lists them) and `SiglipVisionConfig` (768
//! wide, 12 layers, 12 heads, MLP 3072, 224 px in 16-px patches); `Gemma3Config` 256 tokens per
//! image. Gemma-3-4B's published config leaves out the head counts, head size, vocabulary and layer
//! pattern.

use serde_json::{Map, Value};

use super::fields::{flag_or, local_layers, object, uint_or};
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, check_vit_heads, checked, kv_heads};
use crate::error::InputError;

pub fn parse(name: &str, top: &Map<String, Value>) -> Result<HfModel, InputError> {
    let text = object(top, "text_config")?;
    let vision = object(top, "vision_config")?;
    let mut llm = text_decoder(text).map_err(|e| e.context("text_config"))?;
    if let Some(Value::Bool(tied)) = top.get("tie_word_embeddings") {
        llm.tied_embeddings = *tied;
    }
    let image_size = uint_or(vision, "image_size", 224)?;
    let vit = siglip_vision(vision, image_size).map_err(|e| e.context("vision_config"))?;
    let tokens = uint_or(top, "mm_tokens_per_image", 256)?;
    // The projector pools (image/patch)² patches with a square kernel to √tokens per side.
    let side = image_size / vit.patch;
    let per_side = tokens.isqrt();
    if per_side * per_side != tokens || side % per_side != 0 || side * vit.patch != image_size {
        return Err(InputError::new(format!(
            "field `mm_tokens_per_image` = {tokens} with {image_size}-px images in {}-px patches: the tokens must be a \
             square whose side divides the {side} patches per side",
            vit.patch
        )));
    }
    checked(ModelSpec {
        name: name.to_string(),
        vision: Some(VisionSpec {
            tokens: VisualTokenRule::Pooled {
                image_size,
                patch: vit.patch,
                tokens,
            },
            projector: ProjectorSpec::PooledLinear {
                vit_hidden: vit.hidden,
                output: llm.hidden,
            },
            vit,
            window: None,
            deepstack: Vec::new(),
            feature_taps: Vec::new(),
        }),
        llm,
    })
}

fn text_decoder(c: &Map<String, Value>) -> Result<LlmSpec, InputError> {
    if c.get("use_bidirectional_attention") == Some(&Value::Bool(true)) {
        return Err(InputError::new(
            "field `use_bidirectional_attention` = true (an embedding model's attention) is not modelled",
        ));
    }
    let layers = uint_or(c, "num_hidden_layers", 26)?;
    let heads = uint_or(c, "num_attention_heads", 8)?;
    let window = match c.get("sliding_window") {
        None => 4096,
        Some(Value::Null) => {
            return Err(InputError::new(
                "field `sliding_window` = null: Gemma 3's local layers need a window",
            ));
        }
        Some(_) => uint_or(c, "sliding_window", 4096)?,
    };
    let sliding_layers = match local_layers(c, layers, "sliding_attention")? {
        Some(sliding) => sliding,
        None => {
            // Gemma3TextConfig: layer i (from 0) is full attention when (i + 1) % pattern == 0.
            let pattern = uint_or(c, "sliding_window_pattern", 6)?;
            layers - layers / pattern
        }
    };
    let hidden = uint_or(c, "hidden_size", 2304)?;
    Ok(LlmSpec {
        layers,
        hidden,
        heads,
        kv_heads: kv_heads(c, heads, 4)?,
        // Gemma's head size is its own (256), not hidden / heads.
        head_dim: uint_or(c, "head_dim", 256)?,
        intermediate: uint_or(c, "intermediate_size", 9216)?,
        vocab: uint_or(c, "vocab_size", 262_208)?,
        tied_embeddings: flag_or(c, "tie_word_embeddings", true)?,
        qkv_bias: flag_or(c, "attention_bias", false)?,
        qk_norm: true,
        norms_per_layer: 4,
        sliding: (sliding_layers > 0).then_some(SlidingWindow {
            window,
            layers: sliding_layers,
            kind: WindowKind::Sliding,
        }),
        moe: None,
        cross_attention: None,
        mla: None,
    })
}

/// `SiglipVisionConfig`; Gemma 3 takes the last layer's output.
fn siglip_vision(c: &Map<String, Value>, image_size: u64) -> Result<VitSpec, InputError> {
    let layers = uint_or(c, "num_hidden_layers", 12)?;
    let patch = uint_or(c, "patch_size", 16)?;
    let vit = VitSpec {
        layers,
        layers_run: layers,
        hidden: uint_or(c, "hidden_size", 768)?,
        heads: uint_or(c, "num_attention_heads", 12)?,
        intermediate: uint_or(c, "intermediate_size", 3072)?,
        gated_mlp: false,
        patch,
        patch_input: uint_or(c, "num_channels", 3)?,
        // LayerNorms (one after the layers), biases everywhere, a learned position per patch.
        weights: VitWeights {
            norm: Norm::Layer,
            attention_bias: true,
            mlp_bias: true,
            patch_bias: true,
            learned_vectors: (image_size / patch).pow(2),
            outer_norms: 1,
            gates: 0,
        },
    };
    check_vit_heads(&vit)?;
    Ok(vit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_3_4b_defaults_windows_and_pooled_tokens() {
        let m = crate::catalog::models::fixture::model("gemma-3-4b-it.json");
        let l = &m.llm;
        // Gemma3TextConfig defaults fill what the 4B config leaves out.
        assert_eq!(
            (l.heads, l.kv_heads, l.head_dim, l.vocab),
            (8, 4, 256, 262_208)
        );
        // 34 layers, every 6th full: 5 full, 29 within a 1024-token window.
        assert_eq!(
            l.sliding,
            Some(SlidingWindow {
                window: 1024,
                layers: 29,
                kind: WindowKind::Sliding
            })
        );
        // 4 KiB per token and layer (2 · 4 · 256 · 2 B). At 1,293 tokens the sliding layers keep
        // 1,023: 4096 · (5 · 1293 + 29 · 1023) = 147,996,672.
        assert_eq!(l.kv_bytes(1293, Dtype::Bf16), 147_996_672);
        assert_eq!(l.kv_bytes(500, Dtype::Bf16), 4096 * 34 * 500);
        let t = m.image_tokens(4032, 3024).unwrap();
        assert_eq!(
            (t.encoder_tokens, t.feature_tokens, t.llm_tokens),
            (4096, 256, 258)
        );
    }
}
