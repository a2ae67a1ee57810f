//! Mixtral (`mixtral`): a Mistral decoder whose MLPs are mixtures of experts.
//!
//! Absent keys take transformers' `MixtralConfig` defaults (5.24.0): 4096 wide, 32 layers, 32
//! heads, 8 KV heads, experts of MLP width 14336, 8 experts with 2 per token, vocabulary 32,000,
//! no sliding window.

use serde_json::{Map, Value};

use super::fields::uint_or;
use crate::catalog::model::*;
use crate::catalog::models::{HfModel, checked};
use crate::error::InputError;

pub fn parse(name: &str, c: &Map<String, Value>) -> Result<HfModel, InputError> {
    if !c.get("sliding_window").is_none_or(Value::is_null) {
        return Err(InputError::new(format!(
            "field `sliding_window` = {}: hetsim models Mixtral with full attention (null) only",
            c["sliding_window"]
        )));
    }
    let experts = uint_or(c, "num_local_experts", 8)?;
    let active = uint_or(c, "num_experts_per_tok", 2)?;
    if active > experts {
        return Err(InputError::new(format!(
            "field `num_experts_per_tok` = {active} is more than `num_local_experts` = {experts}"
        )));
    }
    // MixtralConfig's attention and widths are MistralConfig's: experts of MLP width 14336.
    let llm = LlmSpec {
        moe: Some(Moe::every_layer(experts, active)),
        cross_attention: None,
        mla: None,
        ..super::llava::llama_style(c, 14336, Some(8))?
    };
    checked(ModelSpec {
        name: name.to_string(),
        vision: None,
        llm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixtral_8x7b_keeps_all_experts_and_runs_two() {
        let m = crate::catalog::models::fixture::model("mixtral-8x7b-instruct-v0.1.json");
        // Mixtral-8x7B is 46.7 B parameters: 32 · (8 · 3 · 4096 · 14336 + attention) + embeddings.
        assert_eq!(m.llm.params(), 46_702_792_704);
        // A token runs 2 of the 8 experts: 2 · 3 · 4096 · 14336 MLP parameters per layer.
        assert_eq!(m.llm.active_mlp_params(), 2 * 3 * 4096 * 14336);
        let moe = m.llm.moe.unwrap();
        assert_eq!(moe.experts_touched(1.0), 2.0);
        assert!((moe.experts_touched(4096.0) - 8.0).abs() < 1e-9);
        // KV is as a dense Mistral's: 2 · 32 · 8 · 128 · 2 B a token.
        assert_eq!(m.llm.kv_bytes(1, Dtype::Bf16), 131_072);
    }
}
