//! Readers for the fields of a Hugging Face config: each names the field and what is allowed
//! when the value is missing or out of range.

use serde_json::{Map, Value};

use crate::error::InputError;

pub fn object<'a>(
    c: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a Map<String, Value>, InputError> {
    c.get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| InputError::new(format!("missing object field `{field}`")))
}

pub fn uint(c: &Map<String, Value>, field: &str) -> Result<u64, InputError> {
    match c.get(field) {
        None => Err(InputError::new(format!(
            "missing field `{field}`, which the size calculation needs"
        ))),
        Some(v) => positive(field, v),
    }
}

pub fn uint_or(c: &Map<String, Value>, field: &str, default: u64) -> Result<u64, InputError> {
    match c.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => positive(field, v),
    }
}

/// The largest value hetsim accepts for a size field: well past every published checkpoint,
/// and small enough that the parameter and byte counts built from them (products of up to four
/// fields) cannot wrap u64 before `ModelSpec::check_sizes` sees them.
fn size_limit(field: &str) -> u64 {
    match field {
        "num_hidden_layers" | "depth" | "head_dim" | "patch_size" => 1 << 10,
        "spatial_merge_size" | "in_chans" | "temporal_patch_size" | "num_channels" => 1 << 4,
        "image_size" | "window_size" => 1 << 14,
        "intermediate_size" => 1 << 18,
        "vocab_size" => 1 << 22,
        // hidden sizes and head counts
        _ => 1 << 16,
    }
}

fn positive(field: &str, v: &Value) -> Result<u64, InputError> {
    let max = size_limit(field);
    match v.as_u64() {
        Some(n) if n > 0 && n <= max => Ok(n),
        _ => Err(InputError::new(format!(
            "field `{field}` = {}: must be a positive integer up to {max}",
            crate::bounds::excerpt(&v.to_string())
        ))),
    }
}

pub fn int_or(c: &Map<String, Value>, field: &str, default: i64) -> Result<i64, InputError> {
    match c.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| InputError::new(format!("field `{field}` = {v}: must be an integer"))),
    }
}
