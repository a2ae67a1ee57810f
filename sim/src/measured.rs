//! A `PhaseModel` from measured phase times (`hetsim calibrate --model`): piecewise-linear
//! interpolation over the measured grid, linear extrapolation beyond it. It replaces the roofline's
//! times for instances of the measured model on the measured GPU at tp = 1; the FLOPs and bytes
//! of the work (for MFU and MBU) are still the roofline's count, which does not depend on timing.

use crate::catalog::{ImageTokens, ModelSpec};
use crate::perf::{BatchShape, PhaseModel, Roofline, Work};
use crate::profile::PhaseProfile;

pub struct MeasuredPhases {
    /// Per measured image size: (ViT tokens per image, [(ViT tokens in the step, seconds)] by
    /// tokens), by tokens per image.
    encode: Vec<(f64, Vec<(f64, f64)>)>,
    /// (total new tokens, seconds), by tokens.
    prefill: Vec<(f64, f64)>,
    /// Per measured context: (context, [(batch, seconds)] by batch), by context.
    decode: Vec<(f64, Vec<(f64, f64)>)>,
    /// Per probed step length (seconds from rest; 0 where the profile did not record it):
    /// (step seconds, [(duty, slowdown)] by duty from (0, 1)) of compute-bound steps under
    /// sustained load, by step seconds.
    sustained: Vec<(f64, Vec<(f64, f64)>)>,
    /// (images, seconds) a step that encodes the images and prefills their prompts saves over
    /// the two measured apart, by images.
    shared: Vec<(f64, f64)>,
    /// Counts the FLOPs and HBM bytes of the work (its times are not used).
    count: Roofline,
}

/// Linear interpolation through sorted points, extended along the end segments; never negative.
fn interp(points: &[(f64, f64)], x: f64) -> f64 {
    match points {
        [] => 0.0,
        [(_, y)] => *y,
        _ => {
            let i = points
                .partition_point(|p| p.0 < x)
                .clamp(1, points.len() - 1);
            let ((x0, y0), (x1, y1)) = (points[i - 1], points[i]);
            let y = if x1 == x0 {
                y1
            } else {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            };
            y.max(0.0)
        }
    }
}

/// Sorts by x and averages equal x.
fn line(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64, f64)> = Vec::new();
    for (x, y) in pts {
        match out.last_mut() {
            Some(last) if last.0 == x => {
                last.1 += y;
                last.2 += 1.0;
            }
            _ => out.push((x, y, 1.0)),
        }
    }
    out.into_iter().map(|(x, y, n)| (x, y / n)).collect()
}

impl MeasuredPhases {
    pub fn new(model: &ModelSpec, p: &PhaseProfile, count: Roofline) -> MeasuredPhases {
        // (ViT tokens per image, ViT tokens in the step, seconds) of each encode point, by the
        // model's own image-token rule at the size the point was measured at. The profile was
        // checked against the catalog model of this name when it was read (every size has
        // tokens, and a text-only model has no encode points), so none is left out here.
        let encode: Vec<(f64, f64, f64)> = p
            .encode
            .iter()
            .filter_map(|e| {
                let (w, h) = e.size();
                let t = model.image_tokens(w, h).ok()?.encoder_tokens as f64;
                Some((t, t * e.images as f64, e.seconds))
            })
            .collect();
        let mut m = MeasuredPhases {
            encode: table(&encode),
            prefill: line(
                p.prefill
                    .iter()
                    .map(|e| (e.tokens as f64, e.seconds))
                    .collect(),
            ),
            shared: Vec::new(),
            decode: table(
                &p.decode
                    .iter()
                    .map(|d| (d.context as f64, d.batch as f64, d.seconds))
                    .collect::<Vec<_>>(),
            ),
            sustained: {
                let at = |s: &crate::profile::SustainedPoint| s.step_seconds.unwrap_or(0.0);
                let rest = p.sustained.iter().map(|s| (at(s), 0.0, 1.0));
                let load = p.sustained.iter().map(|s| (at(s), s.duty, s.slowdown));
                table(&rest.chain(load).collect::<Vec<_>>())
            },
            count,
        };
        // Each combined step against the tables' encode and prefill at its own shape. A
        // saving below zero is noise around none (the combined step does not cost more than
        // its parts), kept so the line is not biased up.
        let shared = p
            .encode_prefill
            .iter()
            .filter_map(|c| {
                let image = model.image_tokens(c.width, c.height).ok()?;
                let images = vec![image; c.images as usize];
                // Its prompts as equal as the tokens allow (the probe's are equal).
                let mut batch = BatchShape::default();
                let (each, left) = (c.tokens / c.images, c.tokens % c.images);
                for j in 0..c.images {
                    batch.add_prefill_chunk(0, each + u64::from(j < left), true);
                }
                let apart = m.encode_s(&images) + m.forward_s(&batch);
                Some((c.images as f64, apart - c.seconds))
            })
            .collect();
        m.shared = line(shared);
        m
    }

    fn decode_s(&self, batch: f64, context: f64) -> f64 {
        interp2(&self.decode, context, batch)
    }
}

/// Points (outer, inner, y) as one line over `inner` per value of `outer`, by outer.
fn table(points: &[(f64, f64, f64)]) -> Vec<(f64, Vec<(f64, f64)>)> {
    let mut outers: Vec<f64> = points.iter().map(|p| p.0).collect();
    outers.sort_by(f64::total_cmp);
    outers.dedup();
    outers
        .into_iter()
        .map(|o| {
            let pts = points
                .iter()
                .filter(|p| p.0 == o)
                .map(|p| (p.1, p.2))
                .collect();
            (o, line(pts))
        })
        .collect()
}

/// Interpolation over a `table`: along each line at `inner`, then between the lines at `outer`.
fn interp2(table: &[(f64, Vec<(f64, f64)>)], outer: f64, inner: f64) -> f64 {
    let across: Vec<(f64, f64)> = table
        .iter()
        .map(|(o, pts)| (*o, interp(pts, inner)))
        .collect();
    interp(&across, outer)
}

impl PhaseModel for MeasuredPhases {
    /// Interpolated between the measured duties (and no slowdown at duty 0), held at the last
    /// measured duty beyond it, on each probed step length; between the lengths by the step's,
    /// held at the shortest and longest beyond them; never a speed-up.
    fn sustained_slowdown(&self, duty: f64, step_s: f64) -> f64 {
        let on_line = |pts: &[(f64, f64)]| {
            let last = pts.last().map_or(0.0, |p| p.0);
            interp(pts, duty.clamp(0.0, last))
        };
        let across: Vec<(f64, f64)> = self
            .sustained
            .iter()
            .map(|(len, pts)| (*len, on_line(pts)))
            .collect();
        let (Some(first), Some(last)) = (across.first(), across.last()) else {
            return 1.0;
        };
        interp(&across, step_s.clamp(first.0, last.0)).max(1.0)
    }

    /// Read at the step's images along the measured combined steps, held at the nearest end
    /// beyond them: the saving is a step's fixed cost, which does not grow without bound.
    fn shared_step_s(&self, images: &[ImageTokens], batch: &BatchShape) -> f64 {
        let (Some(first), Some(last)) = (self.shared.first(), self.shared.last()) else {
            return 0.0;
        };
        if images.is_empty() || batch.prefill_tokens == 0 {
            return 0.0;
        }
        let n = (images.len() as f64).clamp(first.0, last.0);
        interp(&self.shared, n)
            .min(self.encode_s(images))
            .min(self.forward_s(batch))
    }

    fn encode_work(&self, images: &[ImageTokens]) -> Work {
        if images.is_empty() {
            return Work::default();
        }
        // A step's time is read at its ViT tokens on the line of each measured image size, then
        // interpolated between the sizes at the step's token-weighted tokens per image,
        // Σ tᵢ² / Σ tᵢ. Why: the ViT's products cost the same per token at any size, but its
        // full-attention blocks (Qwen2.5-VL: 4 of 32) cost tᵢ² per image, so a step costs about
        // a·Σ tᵢ + b·Σ tᵢ² = Σ tᵢ · (a + b·t*) — on the line of size t*, which for images all
        // of one size is that size. With one measured size (LLaVA, whose every image is 577
        // tokens, and older profiles) this is the time at the step's ViT tokens along that
        // size's line: other sizes scale by ViT tokens.
        let total: f64 = images.iter().map(|i| i.encoder_tokens as f64).sum();
        let squares: f64 = images
            .iter()
            .map(|i| (i.encoder_tokens as f64).powi(2))
            .sum();
        Work {
            seconds: interp2(&self.encode, squares / total, total),
            ..self.count.encode_work(images)
        }
    }

    /// A mixed step is charged as its prefill plus its decode measured apart: an upper bound, as
    /// one step reads the weights once for both.
    fn forward_work(&self, batch: &BatchShape) -> Work {
        let mut s = 0.0;
        if batch.prefill_tokens > 0 {
            s += interp(&self.prefill, batch.prefill_tokens as f64);
        }
        if batch.decode_seqs > 0 {
            s += self.decode_s(
                batch.decode_seqs as f64,
                batch.decode_ctx_tokens as f64 / batch.decode_seqs as f64,
            );
        }
        Work {
            seconds: s,
            ..self.count.forward_work(batch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Dtype, builtin_model};
    use crate::profile::{DecodePoint, EncodePoint, PrefillPoint, SustainedPoint};

    fn profile() -> PhaseProfile {
        PhaseProfile {
            model: "llava-1.5-7b".into(),
            catalog_gpu: "H100-SXM".into(),
            dtype: "bf16".into(),
            encode: vec![
                EncodePoint {
                    images: 1,
                    seconds: 0.004,
                    width: None,
                    height: None,
                },
                EncodePoint {
                    images: 32,
                    seconds: 0.040,
                    width: None,
                    height: None,
                },
            ],
            prefill: vec![
                PrefillPoint {
                    sequences: 1,
                    tokens: 512,
                    seconds: 0.020,
                },
                PrefillPoint {
                    sequences: 8,
                    tokens: 4096,
                    seconds: 0.120,
                },
            ],
            decode: vec![
                DecodePoint {
                    batch: 1,
                    context: 512,
                    seconds: 0.0070,
                },
                DecodePoint {
                    batch: 64,
                    context: 512,
                    seconds: 0.0110,
                },
                DecodePoint {
                    batch: 1,
                    context: 2048,
                    seconds: 0.0074,
                },
                DecodePoint {
                    batch: 64,
                    context: 2048,
                    seconds: 0.0190,
                },
            ],
            sustained: vec![SustainedPoint {
                duty: 0.8,
                slowdown: 1.2,
                step_seconds: None,
            }],
            interference: vec![],
            encode_prefill: vec![],
        }
    }

    /// Lines probed at two step lengths: a step between them reads between the lines by its
    /// length, one shorter or longer than both the nearest line's, and each line is held beyond
    /// its last duty.
    #[test]
    fn the_sustained_slowdown_follows_the_step_length() {
        let m = builtin_model("llava-1.5-7b").unwrap();
        let gpu = crate::catalog::gpu_by_name("H100-SXM").unwrap();
        let count = Roofline::new(&m, Dtype::Bf16, gpu, Default::default(), 1, None);
        let mut prof = profile();
        let point = |duty, slowdown, step| SustainedPoint {
            duty,
            slowdown,
            step_seconds: Some(step),
        };
        prof.sustained = vec![
            point(0.4, 1.02, 0.013),
            point(1.0, 1.04, 0.013),
            point(0.4, 1.08, 0.113),
            point(1.0, 1.10, 0.113),
        ];
        let p = MeasuredPhases::new(&m, &prof, count);
        assert!((p.sustained_slowdown(0.4, 0.013) - 1.02).abs() < 1e-12);
        assert!((p.sustained_slowdown(0.4, 0.001) - 1.02).abs() < 1e-12);
        assert!((p.sustained_slowdown(0.4, 0.113) - 1.08).abs() < 1e-12);
        assert!((p.sustained_slowdown(0.4, 0.5) - 1.08).abs() < 1e-12);
        // Halfway in length: halfway between 1.02 and 1.08.
        assert!((p.sustained_slowdown(0.4, 0.063) - 1.05).abs() < 1e-12);
        // Halfway to the first duty on the short line, held past the last on the long one.
        assert!((p.sustained_slowdown(0.2, 0.013) - 1.01).abs() < 1e-12);
        assert!((p.sustained_slowdown(1.5, 0.113) - 1.10).abs() < 1e-12);
        assert_eq!(p.sustained_slowdown(0.0, 0.063), 1.0);
    }

    #[test]
    fn interpolates_and_extrapolates_the_grid() {
        let m = builtin_model("llava-1.5-7b").unwrap();
        let gpu = crate::catalog::gpu_by_name("H100-SXM").unwrap();
        let count = Roofline::new(&m, Dtype::Bf16, gpu, Default::default(), 1, None);
        let p = MeasuredPhases::new(&m, &profile(), count);
        let img = m.image_tokens(640, 480).unwrap();
        assert!((p.encode_s(&[img]) - 0.004).abs() < 1e-12);
        // 16 images: 0.004 + 0.036 · (16 − 1) / (32 − 1).
        assert!((p.encode_s(&vec![img; 16]) - (0.004 + 0.036 * 15.0 / 31.0)).abs() < 1e-12);
        // Beyond the grid: along the last segment.
        assert!((p.encode_s(&vec![img; 63]) - (0.040 + 0.036)).abs() < 1e-12);
        let mut b = BatchShape::default();
        b.add_prefill_chunk(0, 2304, true);
        assert!((p.forward_s(&b) - 0.070).abs() < 1e-12);
        let mut d = BatchShape::default();
        for _ in 0..64 {
            d.add_decode(1280);
        }
        // Context 1280 is halfway: (0.011 + 0.019) / 2.
        assert!((p.forward_s(&d) - 0.015).abs() < 1e-12);
        // Sustained load: none at rest, 1.1 halfway to the measured duty, held beyond it; one
        // line without a probed step length holds for any step.
        for step_s in [0.001, 0.015, 1.0] {
            assert_eq!(p.sustained_slowdown(0.0, step_s), 1.0);
            assert!((p.sustained_slowdown(0.4, step_s) - 1.1).abs() < 1e-12);
            assert!((p.sustained_slowdown(1.0, step_s) - 1.2).abs() < 1e-12);
        }
        // The work is the roofline's count: 64 decodes do 2 FLOPs per weight each, at least.
        let w = p.forward_work(&d);
        assert!(w.flops >= 64.0 * 2.0 * 6.5e9 && w.bytes >= 13e9, "{w:?}");
    }

    #[test]
    fn a_step_that_encodes_and_prefills_pays_its_own_cost_once() {
        let m = builtin_model("llava-1.5-7b").unwrap();
        let gpu = crate::catalog::gpu_by_name("H100-SXM").unwrap();
        let count = || Roofline::new(&m, Dtype::Bf16, gpu, Default::default(), 1, None);
        let img = m.image_tokens(640, 480).unwrap();
        let prompts = |n: u64, each: u64| {
            let mut b = BatchShape::default();
            for _ in 0..n {
                b.add_prefill_chunk(0, each, true);
            }
            b
        };
        // Apart, 1 image + 1 × 597 tokens: 0.004 + 0.020 + 0.100 · 85 / 3584 = 0.026372;
        // 4 images + 4 × 597: 0.004 + 0.036 · 3 / 31 + 0.020 + 0.100 · 1876 / 3584 = 0.079828.
        let mut p = profile();
        p.encode_prefill = [(1, 0.025372), (4, 0.077828)]
            .iter()
            .map(|&(images, seconds)| crate::profile::EncodePrefillPoint {
                images,
                width: 640,
                height: 480,
                tokens: images * 597,
                seconds,
            })
            .collect();
        let pm = MeasuredPhases::new(&m, &p, count());
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        let one = pm.shared_step_s(&[img], &prompts(1, 597));
        assert!(close(one, 0.001), "{one}");
        // Between the measured steps by images, held beyond the last.
        assert!(close(
            pm.shared_step_s(&[img; 2], &prompts(2, 597)),
            0.001 + 0.001 / 3.0
        ));
        assert!(close(
            pm.shared_step_s(&[img; 16], &prompts(16, 597)),
            0.002
        ));
        // The combined step comes back as measured.
        let four = pm.step_s(&[img; 4], &prompts(4, 597));
        assert!(close(four, 0.077828), "{four}");
        // Nothing is shared by a step that only encodes or only prefills or decodes.
        assert_eq!(pm.shared_step_s(&[], &prompts(1, 597)), 0.0);
        assert_eq!(pm.shared_step_s(&[img], &BatchShape::default()), 0.0);
        let mut decode = BatchShape::default();
        decode.add_decode(600);
        assert_eq!(pm.shared_step_s(&[img], &decode), 0.0);
        // Never more than a part: a tiny prefill saves at most its own time.
        let tiny = prompts(1, 1);
        assert!(pm.shared_step_s(&[img], &tiny) <= pm.forward_s(&tiny));
        // A profile without combined steps adds the parts, as before.
        let plain = MeasuredPhases::new(&m, &profile(), count());
        assert_eq!(plain.shared_step_s(&[img], &prompts(1, 597)), 0.0);
    }
}

#[cfg(test)]
mod qwen_tests {
    use super::*;
    use crate::catalog::{Dtype, builtin_model};
    use crate::profile::{DecodePoint, EncodePoint, PrefillPoint};

    fn enc(images: u64, seconds: f64, w: u64, h: u64) -> EncodePoint {
        EncodePoint {
            images,
            seconds,
            width: Some(w),
            height: Some(h),
        }
    }

    #[test]
    fn encode_interpolates_between_measured_sizes_by_tokens_per_image() {
        let m = builtin_model("qwen2.5-vl-7b").unwrap();
        let gpu = crate::catalog::gpu_by_name("H200-SXM").unwrap();
        let count = Roofline::new(&m, Dtype::Bf16, gpu, Default::default(), 1, None);
        let p = PhaseProfile {
            model: "qwen2.5-vl-7b".into(),
            catalog_gpu: "H200-SXM".into(),
            dtype: "bf16".into(),
            encode: vec![
                enc(1, 0.010, 640, 480),
                enc(4, 0.034, 640, 480),
                enc(1, 0.032, 1280, 720),
                enc(4, 0.120, 1280, 720),
            ],
            prefill: vec![PrefillPoint {
                sequences: 1,
                tokens: 512,
                seconds: 0.02,
            }],
            decode: vec![DecodePoint {
                batch: 1,
                context: 512,
                seconds: 0.007,
            }],
            sustained: vec![],
            interference: vec![],
            encode_prefill: vec![],
        };
        let pm = MeasuredPhases::new(&m, &p, count);
        let small = m.image_tokens(640, 480).unwrap();
        let large = m.image_tokens(1280, 720).unwrap();
        // 644×476 → 46×34 patches; 1288×728 → 92×52.
        assert_eq!((small.encoder_tokens, large.encoder_tokens), (1564, 4784));
        // The measured points come back.
        assert!((pm.encode_s(&[small]) - 0.010).abs() < 1e-12);
        assert!((pm.encode_s(&[large; 4]) - 0.120).abs() < 1e-12);
        // 3 large images: along the 1280×720 line, 0.032 + 0.088 · (14352 − 4784) / 14352.
        assert!((pm.encode_s(&[large; 3]) - 0.090_666_666_666_666_67).abs() < 1e-12);
        // One of each: 6348 ViT tokens, t* = (1564² + 4784²) / 6348 = 3990.67 per image. The
        // 640×480 line at 6348: 0.010 + 0.024 · 4784 / 4692 = 0.034471; the 1280×720 line:
        // 0.032 + 0.088 · 1564 / 14352 = 0.041590; between them at (3990.67 − 1564) / 3220:
        // 0.039836.
        let mixed = pm.encode_s(&[small, large]);
        assert!((mixed - 0.039_835_748_792_270_53).abs() < 1e-12, "{mixed}");
    }
}
