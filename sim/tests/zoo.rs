//! The model zoo against transformers: every record file in tests/fixtures/zoo/ (made by
//! groundtruth.py from each family's own processor and a random-weight model) must be
//! reproduced exactly from the family's config: visual tokens, feature rows and bytes, and the
//! KV-cache bytes of the whole prompt (for Llama-3.2-Vision also the cross-attention layers' KV,
//! the tiles each image is cut into and the projector's input; for Mistral 3 the projector's
//! input, its patches before the merge, and the LLM's parameters with a tied head; for Llama 4
//! each image's canvas and tiles, the projector's input and the chunked layers' KV; for Kimi-K2.5
//! the projector's input and the MLA latent transformers caches, and the per-head keys and values
//! its attention expands from it).

use std::path::PathBuf;

use hetsim_sim::catalog::{Dtype, LlmSpec, VisualTokenRule, WindowKind, resolve_model};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("record field `{field}` missing in {v}"))
}

#[test]
fn every_family_matches_transformers_on_every_fixture_size() {
    let dir = repo().join("tests/fixtures/zoo");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "no record files in {}", dir.display());
    for file in files {
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(fixture["dtype"], "bf16", "{}", file.display());
        let config = repo().join(fixture["config"].as_str().unwrap());
        let model = resolve_model(config.to_str().unwrap()).unwrap();
        assert_eq!(
            model.llm.layers,
            u(&fixture, "num_hidden_layers"),
            "{}",
            file.display()
        );
        let kinds = &fixture["layer_kinds"];
        let local = |kind: WindowKind| {
            model
                .llm
                .sliding
                .filter(|w| w.kind == kind)
                .map_or(0, |w| w.layers)
        };
        assert_eq!(
            (
                model.llm.full_attention_layers(),
                local(WindowKind::Sliding),
                local(WindowKind::Chunked),
                model.llm.cross_attention_layers()
            ),
            (
                kinds["full_attention"].as_u64().unwrap_or(0),
                kinds["sliding_attention"].as_u64().unwrap_or(0),
                kinds["chunked_attention"].as_u64().unwrap_or(0),
                kinds["cross_attention"].as_u64().unwrap_or(0)
            ),
            "layer kinds, {}",
            file.display()
        );
        if let Some(params) = fixture["params"].as_u64() {
            // Every parameter of the model transformers builds (all experts of an MoE).
            assert_eq!(model.llm.params(), params, "parameters, {}", file.display());
        }
        if let Some(params) = fixture["params_if_tied"].as_u64() {
            // Mistral 3: what transformers builds from the config alone, its default tying the LM
            // head to the embedding (the checkpoint's own head is `params`).
            let tied = LlmSpec {
                tied_embeddings: true,
                ..model.llm.clone()
            };
            assert_eq!(tied.params(), params, "tied parameters, {}", file.display());
        }
        if let Some(latent) = fixture["latent_kv_bytes_per_token_per_layer"].as_u64() {
            // Kimi-K2.5: the MLA latent a server caches (what transformers caches too), and the
            // per-head keys and values transformers' attention expands from it.
            let mla = model.llm.mla.expect("an MLA record is of an MLA model");
            let b = Dtype::Bf16.bytes();
            assert_eq!(model.llm.kv_width() * b, latent, "{}", file.display());
            assert_eq!(
                mla.expanded_width(model.llm.heads) * b,
                u(&fixture, "expanded_kv_bytes_per_token_per_layer"),
                "{}",
                file.display()
            );
            assert_eq!(
                (mla.kv_lora_rank, mla.qk_rope_head_dim, model.llm.heads),
                (
                    u(&fixture, "kv_lora_rank"),
                    u(&fixture, "qk_rope_head_dim"),
                    u(&fixture, "num_attention_heads")
                ),
                "{}",
                file.display()
            );
        }
        if let Some(params) = fixture["vision_params"].as_u64() {
            let vision = model.vision.as_ref().map_or(0, |v| v.params());
            assert_eq!(vision, params, "vision parameters, {}", file.display());
        }
        let records = fixture["records"].as_array().unwrap();
        assert!(records.len() >= 4);
        for r in records {
            let at = format!("{} {}", file.display(), r["images"]);
            let (mut visual, mut features, mut projected) = (0, 0, 0);
            let (mut tiles, mut canvas) = (Vec::new(), Vec::new());
            for img in r["images"].as_array().unwrap() {
                let t = model
                    .image_tokens(u(img, "width"), u(img, "height"))
                    .unwrap();
                visual += t.llm_tokens;
                features += t.feature_tokens;
                projected += t.projector_tokens;
                match model.vision.as_ref().map(|v| &v.tokens) {
                    // Mllama: the canvas's tiles (the padding to max_tiles aside).
                    Some(&VisualTokenRule::Tiled { tile, .. }) => tiles.push(Value::from(
                        (t.resized_width / tile) * (t.resized_height / tile),
                    )),
                    // Llama 4: the tiles the tower runs (the global one too) and the canvas.
                    Some(&VisualTokenRule::TiledGlobal { tile, .. }) => {
                        tiles.push(Value::from(t.tiles));
                        canvas.push(Value::from(vec![
                            t.resized_height / tile,
                            t.resized_width / tile,
                        ]));
                    }
                    _ => {}
                }
            }
            if let Some(want) = r.get("tiles") {
                assert_eq!(&Value::from(tiles), want, "tiles per image, {at}");
            }
            if let Some(want) = r.get("canvas") {
                assert_eq!(&Value::from(canvas), want, "canvas per image, {at}");
            }
            if let Some(width) = r.get("projector_input_width") {
                let p = &model.vision.as_ref().unwrap().projector;
                assert_eq!(p.input_width(), width.as_u64().unwrap(), "{at}");
                assert_eq!(
                    projected * p.input_width() * Dtype::Bf16.bytes(),
                    u(r, "projector_input_bytes"),
                    "projector input bytes, {at}"
                );
            }
            assert_eq!(visual, u(r, "visual_tokens"), "visual tokens, {at}");
            assert_eq!(features, u(r, "feature_tokens"), "feature rows, {at}");
            assert_eq!(
                model.llm.hidden,
                u(r, "feature_width"),
                "feature width, {at}"
            );
            assert_eq!(
                model.emb_bytes(features, Dtype::Bf16),
                u(r, "feature_bytes"),
                "embedding bytes, {at}"
            );
            let context = visual + u(r, "text_tokens");
            assert_eq!(context, u(r, "input_tokens"), "{at}");
            let kv = model.llm.kv_bytes(context, Dtype::Bf16)
                + model.llm.cross_kv_bytes(features, Dtype::Bf16);
            assert_eq!(kv, u(r, "kv_bytes_full"), "KV bytes, {at}");
            if let Some(expanded) = r.get("kv_expanded_bytes_by_layer_kind") {
                let mla = model.llm.mla.expect("MLA");
                // The cache holds keys of the latent's rank and values of the rotary key's.
                let shapes = &r["kv_cache_shapes"];
                assert_eq!(
                    (shapes["keys"][3].as_u64(), shapes["values"][3].as_u64()),
                    (Some(mla.kv_lora_rank), Some(mla.qk_rope_head_dim)),
                    "cache shapes, {at}"
                );
                assert_eq!(
                    mla.expanded_width(model.llm.heads) * Dtype::Bf16.bytes() * context,
                    u(expanded, "full_attention"),
                    "expanded keys and values, {at}"
                );
            }
            for (kind, bytes) in r["kv_bytes_by_layer_kind"].as_object().unwrap() {
                let layer = match kind.as_str() {
                    "full_attention" => model.llm.layer_kv_bytes(false, context, Dtype::Bf16),
                    // Chunked layers are cached as sliding windows of the chunk.
                    "sliding_attention" | "chunked_attention" => {
                        model.llm.layer_kv_bytes(true, context, Dtype::Bf16)
                    }
                    // A cross-attention layer caches the vision states' keys and values.
                    "cross_attention" => model.llm.cross_layer_kv_bytes(features, Dtype::Bf16),
                    other => panic!("unknown layer kind {other}, {at}"),
                };
                assert_eq!(
                    layer,
                    bytes.as_u64().unwrap(),
                    "{kind} layer KV bytes, {at}"
                );
            }
        }
    }
}

/// The simulator ships an image as its LLM tokens' embeddings and a request's KV as its
/// context's; a cross-attention model needs neither and both of something else, so a scenario of
/// one is refused (exit 2) rather than simulated with wrong bytes.
#[test]
fn a_cross_attention_model_is_refused_by_the_simulator_not_miscounted() {
    let yaml = "name: x\nseed: 1\ndefaults:\n  model: ../tests/fixtures/hf-configs/llama-3.2-11b-vision-instruct.json\n  \
        cluster:\n    nodes: [{name: n, gpus: [{gpu: H100-SXM, count: 2}], fabric: nvlink4}]\n  deployment:\n    \
        strategy: modality\n    instances: [{role: encoder, gpu: H100-SXM}, {role: llm, gpu: H100-SXM}]\n  workload:\n    \
        requests: 4\n    arrival: {process: poisson, rate: 4}\n    images: {count: 1, width: 640, height: 480}\n    \
        prompt_tokens: 20\n    output_tokens: 16\nscenarios: [{name: s}]\n";
    let e =
        hetsim_sim::experiment::parse_experiment(yaml, &repo().join("experiments/x.yaml"), None)
            .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cross-attention layers, which the simulator does not model yet")
            && msg.contains("hetsim transfer"),
        "{msg}"
    );
}
