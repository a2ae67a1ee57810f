//! Hugging Face `config.json`: a model whose sizes are sane, or an error naming the key; the
//! sizes of an accepted model are then used the way the simulator uses them (no overflow).
#![no_main]

use hetsim_sim::catalog::{Dtype, HfModel, models::parse_hf_config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match parse_hf_config("fuzz", &value) {
        Ok(HfModel::Model(m)) => {
            let _ = m.image_tokens(640, 480);
            let _ = m.image_tokens(1, 32768);
            let _ = m.llm_weight_bytes(Dtype::Fp32) + m.vision_weight_bytes(Dtype::Fp32);
            let _ = m.llm.kv_bytes(10_000_000, Dtype::Fp32);
            let _ = m.emb_bytes(10_000_000, Dtype::Fp32);
        }
        Ok(HfModel::VisionOnly { tokens, .. }) => {
            let _ = tokens.tokens(640, 480);
        }
        Err(_) => {}
    }
});
