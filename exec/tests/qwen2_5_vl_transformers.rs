//! Our Qwen2.5-VL CPU reference (`model::qwen2_5_vl_cpu`) against transformers'
//! `Qwen2_5_VLForConditionalGeneration` on a tiny config with the same random weights.
//!
//! The test writes the checkpoint (`model.safetensors` + `config.json`, the layout
//! `from_pretrained` reads) and the inputs (`inputs.json`, `inputs.safetensors`), loads the
//! checkpoint back through our loader, and runs the reference. transformers' outputs for these
//! exact files are recorded in `fixtures/qwen2_5_vl/transformers.json` by
//! `fixtures/qwen2_5_vl/reference.py` (its header says how): image features of both images, the
//! prefill's last logits and every greedy step's logits must agree to 1e-4 relative (f32 on both
//! sides), the greedy tokens exactly. The images go through transformers' own image processor
//! (resize off: ours takes resized pixels), so its patch order is checked too.

use hetsim_exec::serve::model::qwen2_5_vl::{IMAGE_TOKEN, ImageGrid, Qwen25VlConfig};
use hetsim_exec::serve::model::qwen2_5_vl_cpu::{
    self as qcpu, HostWeights, Image, encode_image, special_tokens,
};
use safetensors::{Dtype, tensor::TensorView};
use std::path::{Path, PathBuf};

const SEED: u64 = 11;
const STEPS: usize = 4;

/// Two images: 10 × 14 patches (5 × 7 merged tokens: windows of 16, 12, 4 and 3 tokens) and
/// 4 × 4 (one window), in a prompt with text before, between and after them.
fn case(c: &Qwen25VlConfig) -> (Vec<Image>, Vec<i32>) {
    let grids = [
        ImageGrid { rows: 10, cols: 14 },
        ImageGrid { rows: 4, cols: 4 },
    ];
    let images = grids
        .iter()
        .enumerate()
        .map(|(i, &g)| Image {
            grid: g,
            pixels: qcpu::random_image(c, g, SEED + i as u64),
        })
        .collect();
    let t = special_tokens(c);
    let prompt = vec![
        1,
        2,
        t.vision_start,
        IMAGE_TOKEN,
        t.vision_end,
        5,
        6,
        t.vision_start,
        IMAGE_TOKEN,
        t.vision_end,
        7,
        8,
        9,
    ];
    (images, prompt)
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Write the checkpoint and inputs the reference script reads.
fn write_case(c: &Qwen25VlConfig, w: &HostWeights, images: &[Image], prompt: &[i32], dir: &Path) {
    qcpu::write_checkpoint(c, w, dir).unwrap();
    let t = special_tokens(c);
    let input_ids: Vec<i32> = {
        let mut grids = images.iter().map(|i| i.grid);
        prompt
            .iter()
            .flat_map(|&tok| {
                if tok == IMAGE_TOKEN {
                    vec![t.image_pad; c.image_tokens(grids.next().unwrap())]
                } else {
                    vec![tok]
                }
            })
            .collect()
    };
    let inputs = serde_json::json!({
        "input_ids": input_ids,
        "grids": images.iter().map(|i| [i.grid.rows, i.grid.cols]).collect::<Vec<_>>(),
        "steps": STEPS,
    });
    std::fs::write(dir.join("inputs.json"), inputs.to_string()).unwrap();
    let bytes: Vec<Vec<u8>> = images
        .iter()
        .map(|i| i.pixels.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = images
        .iter()
        .zip(&bytes)
        .enumerate()
        .map(|(n, (i, b))| {
            let shape = vec![
                3,
                i.grid.rows * c.vision.patch,
                i.grid.cols * c.vision.patch,
            ];
            (
                format!("image{n}"),
                TensorView::new(Dtype::F32, shape, b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("inputs.safetensors")).unwrap();
}

#[test]
fn cpu_reference_matches_transformers_qwen2_5_vl() {
    let c = Qwen25VlConfig::tiny();
    let w = qcpu::random(&c, SEED).unwrap();
    let (images, prompt) = case(&c);
    // HETSIM_QWEN_REFERENCE_DIR keeps the files for reference.py; otherwise a temporary folder.
    let keep = std::env::var_os("HETSIM_QWEN_REFERENCE_DIR").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("hetsim-qwen-{}", std::process::id()))
    });
    write_case(&c, &w, &images, &prompt, &dir);
    // What we run is what we wrote: the checkpoint read back through the loader.
    let w = qcpu::load(&c, &dir).unwrap();
    if keep.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }

    let want: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/qwen2_5_vl/transformers.json")).unwrap();
    for (i, img) in images.iter().enumerate() {
        let ours = encode_image(&c, &w, img).unwrap();
        let e = rel_err(&ours, &floats(&want["image_features"][i]));
        eprintln!("image {i} features: relative error {e:.2e}");
        assert!(e < 1e-4, "image {i} features: relative error {e:.2e}");
    }
    let ours = qcpu::generate(&c, &w, &images, &prompt, STEPS).unwrap();
    let tokens: Vec<u64> = want["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(
        ours.tokens.iter().map(|&t| t as u64).collect::<Vec<_>>(),
        tokens,
        "greedy tokens"
    );
    for (s, l) in ours.logits.iter().enumerate() {
        let e = rel_err(l, &floats(&want["step_logits"][s]));
        eprintln!("step {s} logits: relative error {e:.2e}");
        assert!(e < 1e-4, "step {s} logits: relative error {e:.2e}");
    }
}
