//! The model an engine serves: LLaVA-1.5 or Qwen2.5-VL on one GPU. The engine is the same for
//! both (`serve::engine`); what differs is asked here: how an image becomes LLM tokens, how it
//! is encoded, and the decoder's positions (one per token, or M-RoPE's three).

use super::forward::{DecoderPass, GpuModel};
use super::kernels::Kernels;
use super::products::Products;
use super::qwen2_5_vl::QwenGpu;
use super::scratch::Scratch;
use crate::cuda::device::{Gpu, Stream};
use crate::error::{Error, Result};
use crate::serve::kv::ModelShape;
use crate::serve::model::llava::{LlavaConfig, LlmConfig};
use crate::serve::model::qwen2_5_vl::{self, ImageGrid, Qwen25VlConfig};

/// The built-in models the engine serves, by family (the simulator's catalog names).
pub const LLAVA_MODELS: [&str; 2] = ["llava-1.5-7b", "llava-1.5-13b"];
pub const QWEN_MODELS: [&str; 4] = [
    "qwen2.5-vl-3b",
    "qwen2.5-vl-7b",
    "qwen2.5-vl-32b",
    "qwen2.5-vl-72b",
];

/// The configuration of the model an engine serves, before any GPU work: what `--model` and a
/// scenario's model name resolve to. `random` puts it on a GPU as the `ServedModel`.
#[derive(Debug, Clone, PartialEq)]
pub enum ServedConfig {
    Llava(LlavaConfig),
    Qwen(Qwen25VlConfig),
}

impl ServedConfig {
    /// A built-in model of either family, optionally with another decoder depth.
    pub fn builtin(name: &str, layers: Option<usize>) -> Result<ServedConfig> {
        if LLAVA_MODELS.contains(&name) {
            LlavaConfig::builtin(name, layers).map(ServedConfig::Llava)
        } else if QWEN_MODELS.contains(&name) {
            Qwen25VlConfig::builtin(name, layers).map(ServedConfig::Qwen)
        } else {
            Err(Error::Invalid(format!(
                "model {name}: not a model the engine serves (built-in: {}, {})",
                LLAVA_MODELS.join(", "),
                QWEN_MODELS.join(", ")
            )))
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ServedConfig::Llava(c) => &c.name,
            ServedConfig::Qwen(c) => &c.name,
        }
    }

    pub fn llm(&self) -> &LlmConfig {
        match self {
            ServedConfig::Llava(c) => &c.llm,
            ServedConfig::Qwen(c) => &c.llm,
        }
    }

    /// LLM tokens one image of this size becomes (LLaVA-1.5: 576 at any size).
    pub fn image_tokens(&self, (w, h): ImageSize) -> Result<usize> {
        match self {
            ServedConfig::Llava(c) => Ok(c.image_tokens()),
            ServedConfig::Qwen(c) => Ok(c.image_tokens(c.grid(w as usize, h as usize)?)),
        }
    }

    /// Random weights of this model on `gpu` (the same seed gives the same weights).
    pub fn random(&self, gpu: Gpu, seed: u64) -> Result<ServedModel> {
        Ok(match self {
            ServedConfig::Llava(c) => GpuModel::random(c, gpu, seed)?.into(),
            ServedConfig::Qwen(c) => QwenGpu::random(c, gpu, seed)?.into(),
        })
    }
}

pub enum ServedModel {
    Llava(GpuModel),
    Qwen(QwenGpu),
}

impl From<GpuModel> for ServedModel {
    fn from(m: GpuModel) -> Self {
        ServedModel::Llava(m)
    }
}

impl From<QwenGpu> for ServedModel {
    fn from(m: QwenGpu) -> Self {
        ServedModel::Qwen(m)
    }
}

/// An image as a request brings it (its size in pixels, width × height).
pub type ImageSize = (u32, u32);

impl ServedModel {
    pub fn name(&self) -> &str {
        match self {
            ServedModel::Llava(m) => &m.cfg.name,
            ServedModel::Qwen(m) => &m.cfg.name,
        }
    }

    pub fn gpu(&self) -> &Gpu {
        match self {
            ServedModel::Llava(m) => &m.gpu,
            ServedModel::Qwen(m) => &m.gpu,
        }
    }

    pub fn kernels(&self) -> &Kernels {
        match self {
            ServedModel::Llava(m) => &m.k,
            ServedModel::Qwen(m) => &m.k,
        }
    }

    pub fn products(&self) -> &Products {
        match self {
            ServedModel::Llava(m) => &m.products,
            ServedModel::Qwen(m) => &m.products,
        }
    }

    pub fn products_mut(&mut self) -> &mut Products {
        match self {
            ServedModel::Llava(m) => &mut m.products,
            ServedModel::Qwen(m) => &mut m.products,
        }
    }

    pub fn llm(&self) -> &LlmConfig {
        match self {
            ServedModel::Llava(m) => &m.cfg.llm,
            ServedModel::Qwen(m) => &m.cfg.llm,
        }
    }

    pub fn pass(&self) -> DecoderPass<'_> {
        match self {
            ServedModel::Llava(m) => m.pass(),
            ServedModel::Qwen(m) => m.pass(),
        }
    }

    /// The shapes that decide KV sizes (the KV layout is the decoder's: both families alike).
    /// `visual_tokens` is LLaVA's fixed 576; Qwen2.5-VL's depend on each image (`image_tokens`).
    pub fn kv_shape(&self) -> ModelShape {
        let l = self.llm();
        ModelShape {
            layers: l.layers,
            kv_heads: l.kv_heads,
            head_dim: l.head_dim,
            hidden: l.hidden,
            visual_tokens: match self {
                ServedModel::Llava(m) => m.cfg.image_tokens(),
                ServedModel::Qwen(_) => 1,
            },
        }
    }

    /// Qwen2.5-VL's patch grid of an image (after its processor's resize).
    fn grid(m: &QwenGpu, (w, h): ImageSize) -> Result<ImageGrid> {
        m.cfg.grid(w as usize, h as usize)
    }

    /// LLM tokens one image of this size becomes.
    pub fn image_tokens(&self, size: ImageSize) -> Result<usize> {
        match self {
            ServedModel::Llava(m) => Ok(m.cfg.image_tokens()),
            ServedModel::Qwen(m) => Ok(m.cfg.image_tokens(Self::grid(m, size)?)),
        }
    }

    /// Pixel values (bf16) the encoder takes for one image of this size: LLaVA's 336², Qwen's
    /// resized image.
    pub fn image_pixels(&self, size: ImageSize) -> Result<usize> {
        match self {
            ServedModel::Llava(m) => {
                let v = &m.cfg.vision;
                Ok(v.channels * v.image_size * v.image_size)
            }
            ServedModel::Qwen(m) => {
                let (g, v) = (Self::grid(m, size)?, &m.cfg.vision);
                Ok(v.channels * g.patches() * v.patch * v.patch)
            }
        }
    }

    /// Encodes `images` whose pixels lie back to back at `pixels` (`image_pixels` each): their
    /// LLM embedding rows, image after image, into `out` ([Σ image_tokens, d] bf16).
    pub fn encode(
        &self,
        s: &Stream,
        images: &[ImageSize],
        pixels: u64,
        out: u64,
        sc: &mut Scratch,
    ) -> Result<()> {
        match self {
            ServedModel::Llava(m) => m.encode(s, pixels, images.len(), out, sc),
            ServedModel::Qwen(m) => {
                let grids = images
                    .iter()
                    .map(|&i| Self::grid(m, i))
                    .collect::<Result<Vec<_>>>()?;
                let mut at = pixels;
                let mut ptrs = Vec::with_capacity(images.len());
                for &i in images {
                    ptrs.push(at);
                    at += (self.image_pixels(i)? * 2) as u64;
                }
                m.encode(s, &grids, &ptrs, out, sc)
            }
        }
    }

    /// Runs once, before serving, every encoder product shape that encodes of up to `images`
    /// images of at most `largest`'s patches can meet. LLaVA-1.5's shapes are fixed by the
    /// image count (every image is 336²): encoding each batch size once covers them.
    pub fn warm_encode_products(
        &self,
        s: &Stream,
        images: usize,
        largest: ImageSize,
        sc: &mut Scratch,
    ) -> Result<()> {
        match self {
            ServedModel::Llava(_) => Ok(()),
            ServedModel::Qwen(m) => {
                let patches = images * Self::grid(m, largest)?.patches();
                m.warm_encode_products(s, patches, sc)
            }
        }
    }

    /// The decoder's positions of a prompt (`image_token` once per image, `images` their
    /// sizes), as three planes' values per token (all equal for LLaVA's one position), and the
    /// position the first generated token takes.
    pub fn positions(
        &self,
        prompt: &[i32],
        image_token: i32,
        images: &[ImageSize],
    ) -> Result<(Vec<[usize; 3]>, usize)> {
        match self {
            ServedModel::Llava(m) => {
                let mut out = Vec::new();
                for &t in prompt {
                    let n = if t == image_token {
                        m.cfg.image_tokens()
                    } else {
                        1
                    };
                    for _ in 0..n {
                        out.push([out.len(); 3]);
                    }
                }
                let next = out.len();
                Ok((out, next))
            }
            ServedModel::Qwen(m) => {
                let grids = images
                    .iter()
                    .map(|&i| Self::grid(m, i))
                    .collect::<Result<Vec<_>>>()?;
                let prompt: Vec<i32> = prompt
                    .iter()
                    .map(|&t| {
                        if t == image_token {
                            qwen2_5_vl::IMAGE_TOKEN
                        } else {
                            t
                        }
                    })
                    .collect();
                qwen2_5_vl::mrope_positions(&m.cfg, &prompt, &grids)
            }
        }
    }

    /// Plans for every product of a decode step of `m` rows.
    pub fn tune_decode_plans(&self, s: &Stream, m: usize) -> Result<()> {
        self.pass().tune_decode_plans(s, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_name_of_both_families_resolves_and_others_are_refused() {
        for name in LLAVA_MODELS.iter().chain(&QWEN_MODELS) {
            let c = ServedConfig::builtin(name, Some(2)).unwrap();
            assert_eq!((c.name(), c.llm().layers), (*name, 2));
        }
        let llava = ServedConfig::builtin("llava-1.5-7b", None).unwrap();
        assert_eq!(llava.image_tokens((1280, 720)).unwrap(), 576);
        for bad in ["gpt-9", "llama-3-8b", "Qwen2.5-VL-7B"] {
            let e = ServedConfig::builtin(bad, None).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            assert!(
                msg.contains(bad) && msg.contains("llava-1.5-13b, qwen2.5-vl-3b"),
                "{msg}"
            );
        }
        assert!(ServedConfig::builtin("qwen2.5-vl-7b", Some(0)).is_err());
    }

    /// The simulator's catalog rule (what `hetsim run` charges) and the engine's grid (what it
    /// encodes) agree on LLM tokens and ViT patches.
    #[test]
    fn the_catalog_rule_and_the_engine_grid_agree_for_qwen() {
        let ServedConfig::Qwen(c) = ServedConfig::builtin("qwen2.5-vl-7b", None).unwrap() else {
            panic!("qwen2.5-vl-7b is a Qwen2.5-VL");
        };
        let spec = hetsim_sim::catalog::builtin_model("qwen2.5-vl-7b").unwrap();
        for (w, h) in [(640, 480), (1280, 720), (333, 999), (28, 28), (4000, 3000)] {
            let t = spec.image_tokens(w, h).unwrap();
            let g = c.grid(w as usize, h as usize).unwrap();
            assert_eq!(t.encoder_tokens as usize, g.patches(), "{w}×{h}");
            assert_eq!(t.llm_tokens as usize, c.image_tokens(g), "{w}×{h}");
        }
        // Hand numbers: 644×476 is 46×34 patches, 391 tokens; 1288×728 is 92×52, 1,196 tokens.
        let served = ServedConfig::Qwen(c);
        assert_eq!(served.image_tokens((640, 480)).unwrap(), 391);
        assert_eq!(served.image_tokens((1280, 720)).unwrap(), 1196);
    }
}
