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

/// A sub-config as given, or `defaults` where it is absent or null.
pub fn object_or<'a>(
    c: &'a Map<String, Value>,
    field: &str,
    defaults: &'a Value,
) -> Result<&'a Map<String, Value>, InputError> {
    match c.get(field) {
        None | Some(Value::Null) => Ok(defaults.as_object().expect("defaults are an object")),
        Some(Value::Object(c)) => Ok(c),
        Some(v) => Err(InputError::new(format!(
            "field `{field}` = {}: must be an object",
            crate::bounds::excerpt(&v.to_string())
        ))),
    }
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
        "intermediate_size" | "intermediate_size_mlp" => 1 << 18,
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

/// A count that may be 0 (dense layers, shared experts), `default` where it is absent or null;
/// at most `max`.
pub fn count_or(
    c: &Map<String, Value>,
    field: &str,
    default: u64,
    max: u64,
) -> Result<u64, InputError> {
    match c.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().filter(|&n| n <= max).ok_or_else(|| {
            InputError::new(format!(
                "field `{field}` = {}: must be an integer from 0 to {max}",
                crate::bounds::excerpt(&v.to_string())
            ))
        }),
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

/// A list of layer indices, or `default` when absent.
pub fn indices(
    c: &Map<String, Value>,
    field: &str,
    default: &[u64],
) -> Result<Vec<u64>, InputError> {
    match c.get(field) {
        None | Some(Value::Null) => Ok(default.to_vec()),
        Some(Value::Array(xs)) => xs
            .iter()
            .map(|x| {
                x.as_u64().ok_or_else(|| {
                    InputError::new(format!(
                        "field `{field}` has {x}: must list layer indices (integers from 0)"
                    ))
                })
            })
            .collect(),
        Some(v) => Err(InputError::new(format!(
            "field `{field}` = {}: must be a list of layer indices",
            crate::bounds::excerpt(&v.to_string())
        ))),
    }
}

/// A boolean field, `default` where it is absent or null; any other value is an error.
pub fn flag_or(c: &Map<String, Value>, field: &str, default: bool) -> Result<bool, InputError> {
    match c.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(InputError::new(format!(
            "field `{field}` = {}: must be true or false",
            crate::bounds::excerpt(&v.to_string())
        ))),
    }
}

/// How many of a decoder's `layers` `layer_types` marks `local` (Gemma 3's
/// `sliding_attention`, Llama 4's `chunked_attention`), every other one `full_attention`; None
/// when the config gives no list.
pub fn local_layers(
    c: &Map<String, Value>,
    layers: u64,
    local: &str,
) -> Result<Option<u64>, InputError> {
    match c.get("layer_types") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(kinds)) if kinds.len() as u64 == layers => {
            let mut count = 0;
            for k in kinds {
                match k.as_str() {
                    Some(kind) if kind == local => count += 1,
                    Some("full_attention") => {}
                    _ => {
                        return Err(InputError::new(format!(
                            "field `layer_types` has {k}: allowed \"{local}\" or \"full_attention\""
                        )));
                    }
                }
            }
            Ok(Some(count))
        }
        Some(v) => Err(InputError::new(format!(
            "field `layer_types` = {}: must list one kind per layer ({layers})",
            crate::bounds::excerpt(&v.to_string())
        ))),
    }
}
