//! Our CPU reference (`model::cpu`) against candle-transformers' LLaVA on a tiny config: the same
//! random weights, written to a safetensors file in the llava-hf naming and loaded by both.
//! Logits of every generated token must agree (f32, relative error ≤ 1e-4) and the greedy
//! tokens must be the same.
//!
//! One deliberate difference in the configs: candle's `ClipVisionTower` with
//! `mm_vision_select_layer = -2` returns the output of the *last* encoder layer it holds (its
//! hidden-state list has no embedding entry but a pooled one at the end), whereas Hugging Face's
//! LLaVA returns the penultimate layer's. So candle is given `layers_run` (= layers − 1) encoder
//! layers, which makes both compute HF's penultimate-layer features.

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::Activation;
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use candle_transformers::models::llama::Cache;
use candle_transformers::models::llava::{LLaVA, config::LLaVAConfig};
use hetsim_exec::serve::model::cpu;
use hetsim_exec::serve::model::host::{self, IMAGE_TOKEN};
use hetsim_exec::serve::model::llava::LlavaConfig;

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn candle_config(c: &LlavaConfig) -> (LLaVAConfig, ClipVisionConfig) {
    let l = &c.llm;
    let json = serde_json::json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "hidden_size": l.hidden, "intermediate_size": l.intermediate,
        "num_attention_heads": l.heads, "num_hidden_layers": l.layers,
        "num_key_value_heads": l.kv_heads, "vocab_size": l.vocab,
        "rms_norm_eps": l.eps, "rope_theta": l.rope_theta,
        "max_position_embeddings": 256,
        "image_aspect_ratio": "square", "image_crop_resolution": c.vision.image_size,
        "image_grid_pinpoints": [], "image_split_resolution": c.vision.image_size,
        "mm_hidden_size": c.projector_in, "mm_patch_merge_type": "flat",
        "mm_projector_type": "mlp2x_gelu", "mm_use_im_start_end": false,
        "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
        "mm_vision_tower": null, "model_type": "llava",
        "tokenizer_model_max_length": null, "torch_dtype": "float32", "use_cache": true,
        "image_token_index": IMAGE_TOKEN, "hf": true, "tie_word_embeddings": false
    });
    let cfg: LLaVAConfig = serde_json::from_value(json).unwrap();
    let v = &c.vision;
    let clip = ClipVisionConfig {
        embed_dim: v.hidden,
        activation: Activation::QuickGelu,
        intermediate_size: v.intermediate,
        num_hidden_layers: v.layers_run,
        num_attention_heads: v.heads,
        projection_dim: v.hidden,
        num_channels: v.channels,
        image_size: v.image_size,
        patch_size: v.patch,
    };
    (cfg, clip)
}

#[test]
fn cpu_reference_matches_candle_llava() {
    let c = LlavaConfig::tiny();
    let w = host::random(&c, 11).unwrap();
    let dir = std::env::temp_dir().join(format!("hetsim-candle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-llava.safetensors");
    // Tensors candle needs that LLaVA-1.5 never uses: the post-layernorm (pooled output) and
    // the `image_newline` of LLaVA-NeXT.
    let dv = c.vision.hidden;
    let extra = vec![
        (
            "vision_tower.vision_model.post_layernorm.weight".to_string(),
            vec![dv],
            vec![1.0; dv],
        ),
        (
            "vision_tower.vision_model.post_layernorm.bias".to_string(),
            vec![dv],
            vec![0.0; dv],
        ),
        (
            "image_newline".to_string(),
            vec![c.llm.hidden],
            vec![0.0; c.llm.hidden],
        ),
    ];
    host::write_safetensors(&c, &w, &extra, &path).unwrap();

    // Ours: loaded back from the file (exercising the loader), then generate.
    let ours_w = host::load(&c, &path).unwrap();
    let image = host::random_image(&c, 5);
    let prompt = [1, 319, IMAGE_TOKEN, 7, 900, 13];
    let out_tokens = 6;
    let ours = cpu::generate(
        &c,
        &ours_w,
        std::slice::from_ref(&image),
        &prompt,
        out_tokens,
    )
    .unwrap();

    // candle
    let dev = Device::Cpu;
    let (cfg, clip) = candle_config(&c);
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &dev).unwrap() };
    let llava = LLaVA::load(vb, &cfg, Some(clip)).unwrap();
    let s = c.vision.image_size;
    let img = Tensor::from_vec(image.clone(), (1, 3, s, s), &dev).unwrap();
    let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let ids = Tensor::from_vec(ids, (1, prompt.len()), &dev).unwrap();
    let emb = llava
        .prepare_inputs_labels_for_multimodal(&ids, &[img], &[(s as u32, s as u32)])
        .unwrap();
    let mut cache = Cache::new(true, DType::F32, &cfg.to_llama_config(), &dev).unwrap();
    let mut pos = 0;
    let mut x = emb;
    let mut tokens = Vec::new();
    let mut all_logits = Vec::new();
    while tokens.len() < out_tokens {
        let n = x.dim(1).unwrap();
        let logits = llava.forward(&x, pos, &mut cache).unwrap();
        pos += n;
        let logits: Vec<f32> = logits.i(0).unwrap().to_vec1().unwrap();
        let t = cpu::argmax(&logits) as u32;
        tokens.push(t);
        all_logits.push(logits);
        let next = Tensor::from_vec(vec![t], (1, 1), &dev).unwrap();
        x = llava.llama.embed(&next).unwrap();
    }

    assert_eq!(
        ours.logits[0].len(),
        c.llm.vocab,
        "one row of logits per generated token"
    );
    for (i, (a, b)) in ours.logits.iter().zip(&all_logits).enumerate() {
        let e = rel_err(a, b);
        println!(
            "step {i}: token ours {} candle {}, logits rel. err {e:.2e}",
            ours.tokens[i], tokens[i]
        );
        assert!(
            e <= 1e-4,
            "step {i}: logits differ from candle: rel. err {e:.3e}"
        );
    }
    assert_eq!(ours.tokens, tokens, "greedy tokens differ from candle's");
    // The image must matter: a different image changes the first logits.
    let other = cpu::generate(&c, &ours_w, &[host::random_image(&c, 6)], &prompt, 1).unwrap();
    assert!(rel_err(&other.logits[0], &ours.logits[0]) > 1e-3);
    std::fs::remove_dir_all(&dir).ok();
}
