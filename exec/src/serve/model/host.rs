//! Weights on the host: random (seeded, rounded to bf16 so the GPU holds the same numbers) and
//! safetensors checkpoints in the Hugging Face LLaVA naming (read and, for tests, written).

use super::llava::{LlavaConfig, LlavaWeights, TensorSpec, new_layout_name, tensor_specs};
use crate::error::{Error, Result, io_err};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub type HostWeights = LlavaWeights<Vec<f32>>;

/// The image placeholder in a prompt (LLaVA's `IMAGE_TOKEN_INDEX`): each one is replaced by the
/// next image's embedding rows.
pub const IMAGE_TOKEN: i32 = -200;

/// f32 → bf16 bits, round to nearest even (NaN stays NaN).
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    ((b + round) >> 16) as u16
}

pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

pub fn round_bf16(x: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(x))
}

/// splitmix64: the same mixer as the kernels use.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Uniform in [-1, 1) from a seed and an index (24 random bits, as the GPU fill).
pub fn uniform(seed: u64, i: u64) -> f32 {
    let r = mix64(seed ^ i.wrapping_mul(0x9E3779B97F4A7C15));
    (r >> 40) as f32 * (1.0 / 16_777_216.0) * 2.0 - 1.0
}

/// Seed of tensor number `index` of a model seeded with `seed`.
pub fn tensor_seed(seed: u64, index: usize) -> u64 {
    mix64(seed.wrapping_add((index as u64 + 1).wrapping_mul(0xD1B54A32D192ED03)))
}

/// Random weights with the model's exact shapes, every value a bf16 number.
pub fn random(c: &LlavaConfig, seed: u64) -> Result<HostWeights> {
    let mut index = 0usize;
    LlavaWeights::build(c, |s: &TensorSpec| {
        index += 1;
        Ok(random_tensor(s, seed, index - 1))
    })
}

/// Tensor number `index` of a model seeded with `seed`: uniform by its `Init`, rounded to bf16
/// (the GPU's `fill_uniform` draws the same numbers), padding columns zero.
pub fn random_tensor(s: &TensorSpec, seed: u64, index: usize) -> Vec<f32> {
    let ts = tensor_seed(seed, index);
    let (scale, offset) = s.init.scale_offset();
    let n: usize = s.shape.iter().product();
    let mut v: Vec<f32> = (0..n as u64)
        .map(|i| round_bf16(offset + scale * uniform(ts, i)))
        .collect();
    // Padding columns must be zero: they meet zero inputs, but NaN·0 is NaN.
    if let Some((k, kp)) = s.padded_cols() {
        for row in v.chunks_mut(kp) {
            row[k..].fill(0.0);
        }
    }
    v
}

/// Safetensors files opened (memory-mapped) for reading by name.
pub struct Checkpoint {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
    /// tensor name → file index
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// `path` is one `.safetensors` file or a folder of them (sharded checkpoints).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut f: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| io_err(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            f.sort();
            if f.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: no .safetensors files in this folder",
                    path.display()
                )));
            }
            f
        } else {
            vec![path.to_path_buf()]
        };
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let file = std::fs::File::open(f).map_err(|e| io_err(f, e))?;
            // SAFETY: the file is opened read-only and not modified while mapped (our own
            // process never writes checkpoints it reads).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(f, e))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| {
                Error::Invalid(format!("{}: not a safetensors file: {e}", f.display()))
            })?;
            for n in st.names() {
                index.insert(n.to_string(), i);
            }
            maps.push((f.clone(), map));
        }
        Ok(Checkpoint { maps, index })
    }

    /// A tensor as f32, stored under the first of `names` the checkpoint holds (a name in each
    /// layout transformers has used).
    pub fn get(&self, names: &[String], shape: &[usize]) -> Result<Vec<f32>> {
        let Some((key, fi)) = names
            .iter()
            .find_map(|n| self.index.get(n).map(|&i| (n.as_str(), i)))
        else {
            return Err(Error::Invalid(format!(
                "checkpoint has no tensor `{}`",
                names.join("` nor `")
            )));
        };
        let (path, map) = &self.maps[fi];
        let st = SafeTensors::deserialize(map)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let t = st
            .tensor(key)
            .map_err(|e| Error::Invalid(format!("{}: {key}: {e}", path.display())))?;
        if t.shape() != shape {
            return Err(Error::Invalid(format!(
                "{}: `{key}` has shape {:?}, the model needs {shape:?}",
                path.display(),
                t.shape()
            )));
        }
        to_f32(&t).map_err(|m| Error::Invalid(format!("{}: `{key}`: {m}", path.display())))
    }

    /// Our tensor `s`: its checkpoint parts read (each under its name or `alias(name)`) and
    /// stacked by rows, padded to our width where we hold it wider.
    pub fn read_spec(&self, s: &TensorSpec, alias: impl Fn(&str) -> String) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(s.shape.iter().product());
        for (name, shape) in &s.parts {
            out.extend(self.get(&[name.clone(), alias(name)], shape)?);
        }
        if let Some((k, kp)) = s.padded_cols() {
            let mut padded = vec![0f32; s.shape[0] * kp];
            for (r, row) in out.chunks(k).enumerate() {
                padded[r * kp..r * kp + k].copy_from_slice(row);
            }
            out = padded;
        }
        Ok(out)
    }
}

fn to_f32(t: &TensorView) -> std::result::Result<Vec<f32>, String> {
    let d = t.data();
    Ok(match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?} not supported (f32, bf16, f16)")),
    })
}

/// Load a checkpoint into host memory (f32).
pub fn load(c: &LlavaConfig, path: &Path) -> Result<HostWeights> {
    let ck = Checkpoint::open(path)?;
    LlavaWeights::build(c, |s| ck.read_spec(s, new_layout_name))
}

/// Split our tensors back into the checkpoint's and write them as one f32 safetensors file,
/// plus `extra` tensors (name, shape, values) the model does not hold (e.g. the unused last
/// vision layer, which other implementations expect to find).
pub fn write_safetensors(
    c: &LlavaConfig,
    w: &HostWeights,
    extra: &[(String, Vec<usize>, Vec<f32>)],
    path: &Path,
) -> Result<()> {
    write_tensors(&tensor_specs(c), &flatten(w), extra, path)
}

/// Our tensors (`specs`, `values` in the same order) as a checkpoint's: each split into its parts,
/// padding columns dropped, written as one f32 safetensors file with `extra` tensors after them.
pub fn write_tensors(
    specs: &[TensorSpec],
    values: &[&Vec<f32>],
    extra: &[(String, Vec<usize>, Vec<f32>)],
    path: &Path,
) -> Result<()> {
    if specs.len() != values.len() {
        return Err(Error::Check(format!(
            "{} tensors for {} specs",
            values.len(),
            specs.len()
        )));
    }
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (s, v) in specs.iter().zip(values) {
        let v: Vec<f32> = match s.padded_cols() {
            Some((k, kp)) => v.chunks(kp).flat_map(|r| r[..k].to_vec()).collect(),
            None => v.to_vec(),
        };
        let mut off = 0;
        for (name, shape) in &s.parts {
            let n: usize = shape.iter().product();
            let bytes = v[off..off + n]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            tensors.push((name.clone(), shape.clone(), bytes));
            off += n;
        }
    }
    for (name, shape, v) in extra {
        tensors.push((
            name.clone(),
            shape.clone(),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|t| (n.clone(), t))
                .map_err(|e| Error::Check(format!("{n}: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// The weights' tensors in `tensor_specs` order.
pub fn flatten<T>(w: &LlavaWeights<T>) -> Vec<&T> {
    let mut v = vec![
        &w.patch_embed,
        &w.class_embed,
        &w.pos_embed,
        &w.pre_ln_w,
        &w.pre_ln_b,
    ];
    for l in &w.vision {
        v.extend([
            &l.ln1_w, &l.ln1_b, &l.qkv_w, &l.qkv_b, &l.o_w, &l.o_b, &l.ln2_w, &l.ln2_b, &l.fc1_w,
            &l.fc1_b, &l.fc2_w, &l.fc2_b,
        ]);
    }
    v.extend([&w.proj1_w, &w.proj1_b, &w.proj2_w, &w.proj2_b, &w.embed]);
    for l in &w.layers {
        v.extend(l.tensors());
    }
    v.extend([&w.norm, &w.lm_head]);
    v
}

/// Random pixels in [-1, 1] (what a normalised image looks like), [3, size, size] per image.
pub fn random_image(c: &LlavaConfig, seed: u64) -> Vec<f32> {
    let n = c.vision.channels * c.vision.image_size * c.vision.image_size;
    (0..n as u64)
        .map(|i| round_bf16(uniform(mix64(seed ^ 0x1a2b), i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.5)), -2.5);
        // 1 + 2^-8 is halfway between two bf16 numbers: ties to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
    }

    #[test]
    fn specs_match_builder_and_7b_size() {
        let c = LlavaConfig::builtin("llava-1.5-7b", None).unwrap();
        // 7B decoder ≈ 6.74 G, CLIP-L (23 layers run) ≈ 0.29 G, projector ≈ 21 M.
        let p = c.params() as f64 / 1e9;
        assert!((6.9..7.2).contains(&p), "{p}");
        let tiny = LlavaConfig::tiny();
        let w = random(&tiny, 1).unwrap();
        let specs = tensor_specs(&tiny);
        let flat = flatten(&w);
        assert_eq!(flat.len(), specs.len());
        for (s, t) in specs.iter().zip(flat) {
            assert_eq!(s.shape.iter().product::<usize>(), t.len(), "{}", s.name);
        }
    }

    #[test]
    fn unknown_or_text_models_are_invalid() {
        assert_eq!(
            LlavaConfig::builtin("gpt-9", None).unwrap_err().exit_code(),
            2
        );
        assert_eq!(
            LlavaConfig::builtin("llama-2-7b", None)
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            LlavaConfig::builtin("llava-1.5-7b", Some(0))
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            LlavaConfig::builtin("llava-1.5-13b", Some(8))
                .unwrap()
                .llm
                .layers,
            8
        );
    }

    #[test]
    fn safetensors_round_trip_and_errors() {
        let c = LlavaConfig::tiny();
        let w = random(&c, 7).unwrap();
        let dir = std::env::temp_dir().join(format!("hetsim-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.safetensors");
        write_safetensors(&c, &w, &[], &path).unwrap();
        let back = load(&c, &path).unwrap();
        for (a, b) in flatten(&w).into_iter().zip(flatten(&back)) {
            assert_eq!(a, b);
        }
        // A model of another depth does not fit this checkpoint: a clear error, exit code 2.
        let mut bigger = c.clone();
        bigger.llm.layers = 3;
        let e = load(&bigger, &path).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("layers.2"), "{e}");
        let mut wider = c.clone();
        wider.llm.vocab = 1001;
        let e = load(&wider, &path).unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
        std::fs::write(dir.join("junk.safetensors"), b"not a checkpoint").unwrap();
        assert_eq!(
            load(&c, &dir.join("junk.safetensors"))
                .unwrap_err()
                .exit_code(),
            2
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
