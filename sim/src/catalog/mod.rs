//! What hetsim knows about the world: models, GPUs, links.

pub mod families;
pub mod gpu;
pub mod link;
pub mod model;
pub mod models;
pub mod partition;

pub use gpu::{GPUS, GpuSpec, gpu_by_name};
pub use link::{LINKS, LinkKind, LinkSpec, link_by_name};
pub use model::*;
pub use models::{BUILTIN_MODELS, HfModel, builtin_model, load_hf_config};

use std::path::Path;

use crate::error::{InputError, unknown_name};

/// A model by built-in name, or by the path of a Hugging Face `config.json` (relative to the
/// working directory).
pub fn resolve_model(name_or_path: &str) -> Result<ModelSpec, InputError> {
    resolve_model_in(name_or_path, Path::new(""))
}

/// As `resolve_model`, with a relative config path taken relative to `base` (the directory of
/// the experiment file that names it).
pub fn resolve_model_in(name_or_path: &str, base: &Path) -> Result<ModelSpec, InputError> {
    if let Some(m) = builtin_model(name_or_path) {
        return Ok(m);
    }
    let looks_like_path = name_or_path.ends_with(".json") || name_or_path.contains('/');
    if looks_like_path {
        return match load_hf_config(&base.join(name_or_path))? {
            HfModel::Model(m) => Ok(*m),
            HfModel::VisionOnly { name, .. } => Err(InputError::new(format!(
                "{name_or_path}: `{name}` is a vision encoder alone, with no language model to serve"
            ))),
        };
    }
    Err(unknown_name("model", name_or_path, BUILTIN_MODELS)
        .context("(or give the path of a config.json)"))
}

pub fn resolve_gpu(name: &str) -> Result<&'static GpuSpec, InputError> {
    if name.contains('@') {
        return partition::by_name(name);
    }
    gpu_by_name(name).ok_or_else(|| unknown_name("GPU", name, GPUS.iter().map(|g| g.name)))
}

pub fn resolve_link(name: &str) -> Result<&'static LinkSpec, InputError> {
    link_by_name(name).ok_or_else(|| unknown_name("link", name, LINKS.iter().map(|l| l.name)))
}
