//! A hardware profile: what `hetsim calibrate` measured on a GPU machine, in a form `hetsim run`
//! uses in place of datasheet defaults. The file is YAML; the types below document it.
//!
//! The simulator reads only the summary numbers (efficiencies, overheads, link bandwidths); the
//! measured points are kept so a reader can see what the summary came from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bounds::Bound;
use crate::catalog::Dtype;
use crate::error::InputError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    /// What was measured, in words ("2× NVIDIA H200, driver 580.159.04").
    pub machine: String,
    /// When (ISO date).
    pub date: String,
    /// The command that produced the file.
    pub command: String,
    #[serde(default)]
    pub gpus: Vec<GpuProfile>,
    #[serde(default)]
    pub links: Vec<LinkProfile>,
    /// Measured phase times of a real engine (`hetsim calibrate --model`), used in place of the
    /// roofline for instances of that model on that GPU at tp = 1.
    #[serde(default)]
    pub phases: Vec<PhaseProfile>,
    /// The operator model fitted to `phases` and the GEMM probes (`sim::fit`): the performance
    /// of every GPU without a phase table of its own, from its datasheet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_fit: Option<crate::fit::OperatorFit>,
}

/// Phase times of one model on one GPU type, measured on a grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseProfile {
    /// Catalog model name (e.g. `llava-1.5-7b`).
    pub model: String,
    pub catalog_gpu: String,
    pub dtype: String,
    /// Vision encoder + projector over a batch of images of one size (`EncodePoint::size`).
    pub encode: Vec<EncodePoint>,
    /// One prefill step over `sequences` prompts of `tokens` new tokens in all, no cached context.
    pub prefill: Vec<PrefillPoint>,
    /// One decode step of `batch` sequences of `context` tokens each.
    pub decode: Vec<DecodePoint>,
    /// How much slower compute-bound steps (encode, prefill) run under sustained load, by the
    /// share of recent time spent on them; the times above are from rest. Empty in profiles
    /// measured before 2026-12-03: then no slowdown is applied.
    #[serde(default)]
    pub sustained: Vec<SustainedPoint>,
    /// On an SM partition of a GPU (`H200-SXM@40sm`): how much slower each phase's step runs
    /// while the sibling partition runs a sustained load (`sim::interference`). Absent from
    /// profiles that did not measure it: then the run's summary says interference is unmodelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interference: Vec<InterferencePoint>,
    /// Steps that encode images and prefill their prompts in one go, as a colocated engine
    /// serves a new request, timed as served. Such a step pays once what the `encode` and
    /// `prefill` points each paid as steps of their own: 0.28 ms for one request on an H100
    /// (exec/results/2026-12-07-h100-combined-step). Absent from profiles measured before
    /// 2026-12-07: then the two are added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encode_prefill: Vec<EncodePrefillPoint>,
}

impl PhaseProfile {
    /// The dtype the table was measured at (checked when the profile was read).
    pub fn dtype(&self) -> Dtype {
        Dtype::parse(&self.dtype).unwrap_or(Dtype::Bf16)
    }

    fn validate(&self) -> Result<(), InputError> {
        let model = crate::catalog::resolve_model(&self.model).map_err(|e| e.context("model"))?;
        let gpu =
            crate::catalog::resolve_gpu(&self.catalog_gpu).map_err(|e| e.context("catalog_gpu"))?;
        if !self.interference.is_empty() && gpu.partition_of.is_none() {
            return Err(InputError::new(format!(
                "`interference` on {}: it is measured on an SM partition of a GPU, named \
                 `<GPU>@<SMs>sm` (`hetsim calibrate --split`)",
                gpu.name
            )));
        }
        Dtype::parse(&self.dtype).map_err(|e| e.context("dtype"))?;
        // An empty table would make its phase free; a text-only model has nothing to encode.
        let encodes = model.vision.is_some();
        for (table, empty, wanted) in [
            ("encode", self.encode.is_empty(), encodes),
            ("prefill", self.prefill.is_empty(), true),
            ("decode", self.decode.is_empty(), true),
        ] {
            if empty && wanted {
                return Err(InputError::new(format!(
                    "`{table}` is empty: give at least one measured point"
                )));
            }
        }
        if !encodes && !self.encode.is_empty() {
            return Err(InputError::new(format!(
                "`encode`: `{}` is text-only and encodes no images; leave the table out",
                model.name
            )));
        }
        for (j, e) in self.encode.iter().enumerate() {
            COUNT.check_u64(&format!("encode[{j}].images"), e.images)?;
            STEP_SECONDS.check(&format!("encode[{j}].seconds"), e.seconds)?;
            match (e.width, e.height) {
                (Some(w), Some(h)) => {
                    IMAGE_SIDE.check_u64(&format!("encode[{j}].width"), w)?;
                    IMAGE_SIDE.check_u64(&format!("encode[{j}].height"), h)?;
                    model
                        .image_tokens(w, h)
                        .map_err(|e| e.context(format!("encode[{j}] (width {w}, height {h})")))?;
                }
                (None, None) => {}
                _ => {
                    return Err(InputError::new(format!(
                        "encode[{j}]: give both `width` and `height` of the images it encoded, or \
                         neither (then they were {}×{})",
                        DEFAULT_ENCODE_SIZE.0, DEFAULT_ENCODE_SIZE.1
                    )));
                }
            }
        }
        for (j, e) in self.prefill.iter().enumerate() {
            COUNT.check_u64(&format!("prefill[{j}].sequences"), e.sequences)?;
            COUNT.check_u64(&format!("prefill[{j}].tokens"), e.tokens)?;
            STEP_SECONDS.check(&format!("prefill[{j}].seconds"), e.seconds)?;
        }
        for (j, e) in self.decode.iter().enumerate() {
            COUNT.check_u64(&format!("decode[{j}].batch"), e.batch)?;
            CONTEXT.check_u64(&format!("decode[{j}].context"), e.context)?;
            STEP_SECONDS.check(&format!("decode[{j}].seconds"), e.seconds)?;
        }
        for (j, p) in self.sustained.iter().enumerate() {
            DUTY.check(&format!("sustained[{j}].duty"), p.duty)?;
            SLOWDOWN.check(&format!("sustained[{j}].slowdown"), p.slowdown)?;
            if let Some(s) = p.step_seconds {
                STEP_SECONDS.check(&format!("sustained[{j}].step_seconds"), s)?;
            }
            // A line without a length would be read as the shortest steps'.
            if p.step_seconds.is_some() != self.sustained[0].step_seconds.is_some() {
                return Err(InputError::new(format!(
                    "`sustained[{j}].step_seconds`: either every sustained point names the length \
                     of its probe's step or none does (then one line holds for every step)"
                )));
            }
        }
        if !encodes && !self.encode_prefill.is_empty() {
            return Err(InputError::new(format!(
                "`encode_prefill`: `{}` is text-only and encodes no images; leave the table out",
                model.name
            )));
        }
        for (j, e) in self.encode_prefill.iter().enumerate() {
            COUNT.check_u64(&format!("encode_prefill[{j}].images"), e.images)?;
            IMAGE_SIDE.check_u64(&format!("encode_prefill[{j}].width"), e.width)?;
            IMAGE_SIDE.check_u64(&format!("encode_prefill[{j}].height"), e.height)?;
            let image = model
                .image_tokens(e.width, e.height)
                .map_err(|err| err.context(format!("encode_prefill[{j}]")))?;
            // Every prompt holds its image's tokens: fewer tokens is not a step the engine runs.
            let least = e.images * image.llm_tokens;
            if e.tokens < least {
                return Err(InputError::new(format!(
                    "`encode_prefill[{j}].tokens` is {}: {} images of {}×{} alone are {least} \
                     prompt tokens for `{}`",
                    e.tokens, e.images, e.width, e.height, model.name
                )));
            }
            STEP_SECONDS.check(&format!("encode_prefill[{j}].seconds"), e.seconds)?;
        }
        for (j, p) in self.interference.iter().enumerate() {
            BANDWIDTH_GBS.check(&format!("interference[{j}].own_gbs"), p.own_gbs)?;
            BANDWIDTH_GBS.check(&format!("interference[{j}].sibling_gbs"), p.sibling_gbs)?;
            SLOWDOWN.check(&format!("interference[{j}].slowdown"), p.slowdown)?;
        }
        Ok(())
    }
}

// Ranges of what a profile may say: any real GPU or link lies well inside them.
const TFLOPS: Bound = Bound::above(0.0, 1e5, "TFLOP/s");
const EFFICIENCY: Bound = Bound::above(0.0, 1.2, "");
const BANDWIDTH_GBS: Bound = Bound::closed(1e-3, 1e6, "GB/s");
const LAUNCH_US: Bound = Bound::closed(0.0, 1e4, "µs");
const LATENCY_US: Bound = Bound::closed(0.0, 1e6, "µs");
/// One measured step: from a nanosecond to an hour.
const STEP_SECONDS: Bound = Bound::closed(1e-9, 3600.0, "s");
const COUNT: Bound = Bound::closed(1.0, 1e9, "");
const CONTEXT: Bound = Bound::closed(0.0, 1e9, "tokens");
const DUTY: Bound = Bound::closed(0.0, 1.0, "");
const SLOWDOWN: Bound = Bound::closed(0.1, 100.0, "");
/// An image side, as a workload's image sizes are bounded.
const IMAGE_SIDE: Bound = Bound::closed(1.0, 32768.0, "px");

/// A power-capped GPU lowers its clock when it stays busy with compute-bound work: at `duty`
/// (share of recent time in compute-bound steps, the rest in decode steps), such a step takes
/// `slowdown` × its time from rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SustainedPoint {
    pub duty: f64,
    pub slowdown: f64,
    /// Seconds the probe's compute step took from rest: the slowdown is that of steps this long.
    /// Short bursts slow less than long ones at the same duty (on an H100, one-image steps of
    /// 15 ms slowed 2.6 % from light load to 90 % of capacity, where 100 ms prefills at 40 %
    /// duty slowed 9 %: exec/results/2026-12-08-h100-rested-probe). Absent from profiles
    /// measured before 2026-12-08, whose one line holds for steps of any length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_seconds: Option<f64>,
}

/// A step of `phase` on a partition, timed alone and beside a sustained `load` loop on the sibling
/// partition: `slowdown` = beside / alone. `own_gbs` and `sibling_gbs` are the HBM demand of the
/// step alone and of the load's step (the roofline's bytes over the measured time, GB/s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterferencePoint {
    pub phase: crate::interference::Phase,
    pub load: crate::interference::Phase,
    pub own_gbs: f64,
    pub sibling_gbs: f64,
    pub slowdown: f64,
}

/// One step that encodes `images` images of `width` × `height` and prefills their prompts (one
/// image each) in the same step: `tokens` new tokens in all, image tokens included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodePrefillPoint {
    pub images: u64,
    pub width: u64,
    pub height: u64,
    pub tokens: u64,
    pub seconds: f64,
}

/// The image size (width, height in pixels) of an encode point that names none: every profile
/// before 2026-12-03 was measured at it, and LLaVA-1.5's are still (it resizes any image to 336²).
pub const DEFAULT_ENCODE_SIZE: (u32, u32) = (640, 480);

/// One encode step of `images` images, each `width` × `height` pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodePoint {
    pub images: u64,
    pub seconds: f64,
    /// Both or neither; absent: `DEFAULT_ENCODE_SIZE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
}

impl EncodePoint {
    /// The size of the images this point encoded (width, height).
    pub fn size(&self) -> (u64, u64) {
        match (self.width, self.height) {
            (Some(w), Some(h)) => (w, h),
            // Validation refuses one without the other.
            _ => (
                u64::from(DEFAULT_ENCODE_SIZE.0),
                u64::from(DEFAULT_ENCODE_SIZE.1),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefillPoint {
    pub sequences: u64,
    pub tokens: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodePoint {
    pub batch: u64,
    pub context: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuProfile {
    /// The catalog GPU this profile replaces the defaults of.
    pub catalog_gpu: String,
    /// The name the driver reported.
    pub reported_name: String,
    /// Best measured dense bf16 GEMM rate, TFLOP/s.
    pub gemm_tflops: f64,
    /// Measured GEMM rate / datasheet peak: η_compute for large matrix products.
    pub gemm_efficiency: f64,
    /// Device-to-device copy bandwidth, GB/s, counting bytes read plus written.
    pub hbm_gbs: f64,
    /// Measured HBM bandwidth / datasheet: η_memory.
    pub memory_efficiency: f64,
    /// Launch-to-launch time of an empty kernel, µs.
    pub launch_overhead_us: f64,
    #[serde(default)]
    pub gemm_points: Vec<GemmPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmPoint {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub tflops: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    /// The catalog link this replaces (e.g. `nvlink4`, `pcie5-host-staged`).
    pub catalog_link: String,
    /// Large-message bandwidth, GB/s per direction.
    pub bandwidth_gbs: f64,
    /// Small-message time, µs.
    pub latency_us: f64,
    #[serde(default)]
    pub points: Vec<LinkPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPoint {
    pub bytes: u64,
    pub gbs: f64,
}

impl HardwareProfile {
    pub fn load(path: &Path) -> Result<HardwareProfile, InputError> {
        let text = crate::input::read_text(path, "profile")?;
        HardwareProfile::from_yaml(&text).map_err(|e| e.context(path.display()))
    }

    /// A profile from its YAML text, checked.
    pub fn from_yaml(text: &str) -> Result<HardwareProfile, InputError> {
        let p: HardwareProfile =
            serde_saphyr::from_str(text).map_err(|e| InputError::new(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a profile is plain data and always serialises")
    }

    fn validate(&self) -> Result<(), InputError> {
        for (i, g) in self.gpus.iter().enumerate() {
            crate::catalog::resolve_gpu(&g.catalog_gpu)
                .map_err(|e| e.context(format!("gpus[{i}].catalog_gpu")))?;
            for (field, v, bound) in [
                ("gemm_tflops", g.gemm_tflops, TFLOPS),
                ("gemm_efficiency", g.gemm_efficiency, EFFICIENCY),
                ("hbm_gbs", g.hbm_gbs, BANDWIDTH_GBS),
                ("memory_efficiency", g.memory_efficiency, EFFICIENCY),
                ("launch_overhead_us", g.launch_overhead_us, LAUNCH_US),
            ] {
                bound.check(&format!("gpus[{i}].{field}"), v)?;
            }
        }
        for (i, p) in self.phases.iter().enumerate() {
            p.validate()
                .map_err(|e| e.context(format!("phases[{i}]")))?;
        }
        for (i, l) in self.links.iter().enumerate() {
            crate::catalog::resolve_link(&l.catalog_link)
                .map_err(|e| e.context(format!("links[{i}].catalog_link")))?;
            BANDWIDTH_GBS.check(&format!("links[{i}].bandwidth_gbs"), l.bandwidth_gbs)?;
            LATENCY_US.check(&format!("links[{i}].latency_us"), l.latency_us)?;
        }
        if let Some(f) = &self.operator_fit {
            crate::catalog::resolve_gpu(&f.catalog_gpu)
                .map_err(|e| e.context("operator_fit.catalog_gpu"))?;
            f.efficiency.validate("operator_fit.efficiency")?;
            LAUNCH_US.check("operator_fit.probe_overhead_us", f.probe_overhead_us)?;
        }
        Ok(())
    }

    pub fn gpu(&self, catalog_name: &str) -> Option<&GpuProfile> {
        self.gpus
            .iter()
            .find(|g| g.catalog_gpu.eq_ignore_ascii_case(catalog_name))
    }

    /// The phase table of `model` on `gpu` at `dtype`. A table of that model and GPU measured at
    /// another dtype only is an error, not a silent fall back to the roofline.
    pub fn phases(
        &self,
        model: &str,
        gpu: &str,
        dtype: Dtype,
    ) -> Result<Option<&PhaseProfile>, InputError> {
        let tables: Vec<(usize, &PhaseProfile)> = self
            .phases
            .iter()
            .enumerate()
            .filter(|(_, p)| p.model == model && p.catalog_gpu.eq_ignore_ascii_case(gpu))
            .collect();
        if let Some((_, p)) = tables.iter().find(|(_, p)| p.dtype() == dtype) {
            return Ok(Some(p));
        }
        match tables.first() {
            None => Ok(None),
            Some((i, p)) => Err(InputError::new(format!(
                "phases[{i}] measured `{model}` on {gpu} at dtype {}, and the scenario runs {}: calibrate at {} or set the scenario's `dtype: {}`",
                p.dtype().name(),
                dtype.name(),
                dtype.name(),
                p.dtype().name()
            ))),
        }
    }

    pub fn link(&self, catalog_name: &str) -> Option<&LinkProfile> {
        self.links
            .iter()
            .find(|l| l.catalog_link.eq_ignore_ascii_case(catalog_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_yaml() {
        let p = HardwareProfile {
            machine: "2× NVIDIA H200".into(),
            date: "2026-11-21".into(),
            command: "hetsim calibrate --out p.yaml".into(),
            operator_fit: None,
            gpus: vec![GpuProfile {
                catalog_gpu: "H200-SXM".into(),
                reported_name: "NVIDIA H200".into(),
                gemm_tflops: 790.0,
                gemm_efficiency: 0.8,
                hbm_gbs: 4300.0,
                memory_efficiency: 0.9,
                launch_overhead_us: 2.5,
                gemm_points: vec![GemmPoint {
                    m: 8192,
                    n: 8192,
                    k: 8192,
                    tflops: 790.0,
                }],
            }],
            links: vec![LinkProfile {
                catalog_link: "nvlink4".into(),
                bandwidth_gbs: 386.0,
                latency_us: 8.0,
                points: vec![LinkPoint {
                    bytes: 1 << 28,
                    gbs: 386.0,
                }],
            }],
            phases: vec![PhaseProfile {
                model: "llava-1.5-7b".into(),
                catalog_gpu: "H200-SXM".into(),
                dtype: "bf16".into(),
                encode: vec![EncodePoint {
                    images: 1,
                    seconds: 0.002,
                    width: None,
                    height: None,
                }],
                prefill: vec![PrefillPoint {
                    sequences: 1,
                    tokens: 704,
                    seconds: 0.02,
                }],
                decode: vec![DecodePoint {
                    batch: 1,
                    context: 700,
                    seconds: 0.007,
                }],
                sustained: vec![SustainedPoint {
                    duty: 1.0,
                    slowdown: 1.2,
                    step_seconds: None,
                }],
                interference: vec![],
                encode_prefill: vec![],
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, p.to_yaml()).unwrap();
        assert_eq!(HardwareProfile::load(&path).unwrap(), p);
        std::fs::write(&path, p.to_yaml().replace("nvlink4", "nvlink9")).unwrap();
        let e = HardwareProfile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("links[0].catalog_link") && e.contains("nvlink4"),
            "{e}"
        );
        // A dtype in capitals names the same table; another dtype is an error, not a miss.
        std::fs::write(&path, p.to_yaml().replace("dtype: bf16", "dtype: BF16")).unwrap();
        let upper = HardwareProfile::load(&path).unwrap();
        let found = upper
            .phases("llava-1.5-7b", "h200-sxm", Dtype::Bf16)
            .unwrap();
        assert_eq!(found.map(|t| t.decode.len()), Some(1));
        let e = upper
            .phases("llava-1.5-7b", "H200-SXM", Dtype::Fp8)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at dtype bf16, and the scenario runs fp8"),
            "{e}"
        );
        assert_eq!(
            upper.phases("llava-1.5-13b", "H200-SXM", Dtype::Fp8),
            Ok(None)
        );
        // A partition's table may say how it slows beside the other partition; the points'
        // demands and slowdown are checked, their phases named, and a whole GPU has none.
        let mut split = p.clone();
        let mut part = p.phases[0].clone();
        part.catalog_gpu = "H200-SXM@40sm".into();
        part.interference = vec![InterferencePoint {
            phase: crate::interference::Phase::Encode,
            load: crate::interference::Phase::Decode,
            own_gbs: 360.0,
            sibling_gbs: 3000.0,
            slowdown: 1.45,
        }];
        split.phases.push(part);
        std::fs::write(&path, split.to_yaml()).unwrap();
        assert_eq!(HardwareProfile::load(&path).unwrap(), split);
        for (from, to, expect) in [
            (
                "own_gbs: 360.0",
                "own_gbs: 0.0",
                "phases[1]: `interference[0].own_gbs`",
            ),
            (
                "sibling_gbs: 3000.0",
                "sibling_gbs: .nan",
                "phases[1]: `interference[0].sibling_gbs`",
            ),
            (
                "slowdown: 1.45",
                "slowdown: 1000.0",
                "phases[1]: `interference[0].slowdown`",
            ),
            ("load: decode", "load: idle", "unknown variant `idle`"),
            (
                "H200-SXM@40sm",
                "H200-SXM",
                "phases[1]: `interference` on H200-SXM",
            ),
        ] {
            let text = split.to_yaml();
            assert!(text.contains(from), "{from} in\n{text}");
            std::fs::write(&path, text.replace(from, to)).unwrap();
            let e = HardwareProfile::load(&path).unwrap_err().to_string();
            assert!(e.contains(expect), "{to}: {e}");
        }
        // The probed step length of a sustained-load point round-trips and is checked.
        let mut timed = p.clone();
        timed.phases[0].sustained[0].step_seconds = Some(0.015);
        std::fs::write(&path, timed.to_yaml()).unwrap();
        assert_eq!(HardwareProfile::load(&path).unwrap(), timed);
        let text = timed
            .to_yaml()
            .replace("step_seconds: 0.015", "step_seconds: -1.0");
        std::fs::write(&path, text).unwrap();
        let e = HardwareProfile::load(&path).unwrap_err().to_string();
        assert!(e.contains("`sustained[0].step_seconds`"), "{e}");
        let mut mixed = timed.clone();
        let mut untimed = mixed.phases[0].sustained[0].clone();
        untimed.step_seconds = None;
        mixed.phases[0].sustained.push(untimed);
        std::fs::write(&path, mixed.to_yaml()).unwrap();
        let e = HardwareProfile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("`sustained[1].step_seconds`: either every"),
            "{e}"
        );
    }

    #[test]
    fn encode_points_without_a_size_were_measured_at_640x480() {
        use crate::catalog::{Dtype, builtin_model, gpu_by_name};
        use crate::perf::{PhaseModel, Roofline};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let path = dir.join("h200-2026-12-03-llava-1.5-7b.yaml");
        let old = HardwareProfile::load(&path).unwrap();
        let mut named = old.clone();
        for e in &mut named.phases[0].encode {
            assert_eq!((e.width, e.height, e.size()), (None, None, (640, 480)));
            (e.width, e.height) = (Some(640), Some(480));
        }
        let named = HardwareProfile::from_yaml(&named.to_yaml()).unwrap();
        let m = builtin_model("llava-1.5-7b").unwrap();
        let gpu = gpu_by_name("H200-SXM").unwrap();
        let model = |p: &HardwareProfile| {
            let r = Roofline::new(&m, Dtype::Bf16, gpu, Default::default(), 1, None);
            crate::measured::MeasuredPhases::new(&m, &p.phases[0], r)
        };
        let img = m.image_tokens(1280, 720).unwrap();
        for n in [1, 3, 32, 50] {
            let images = vec![img; n];
            assert_eq!(
                model(&old).encode_s(&images),
                model(&named).encode_s(&images)
            );
        }
    }

    #[test]
    fn a_bad_encode_size_names_its_field() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../profiles/h200-2026-12-03-llava-1.5-7b.yaml");
        let good = HardwareProfile::load(&path).unwrap();
        for ((w, h), expect) in [
            ((Some(0), Some(480)), "encode[0].width"),
            ((Some(640), Some(40000)), "encode[0].height"),
            ((Some(640), None), "both `width` and `height`"),
        ] {
            let mut p = good.clone();
            (p.phases[0].encode[0].width, p.phases[0].encode[0].height) = (w, h);
            let e = HardwareProfile::from_yaml(&p.to_yaml()).unwrap_err();
            assert!(e.to_string().contains(expect), "{w:?}×{h:?}: {e}");
        }
        // A size the model's own rule refuses (Qwen2.5-VL: aspect ratio at most 200).
        let mut p = good.clone();
        p.phases[0].model = "qwen2.5-vl-7b".into();
        (p.phases[0].encode[0].width, p.phases[0].encode[0].height) = (Some(20000), Some(50));
        let e = HardwareProfile::from_yaml(&p.to_yaml())
            .unwrap_err()
            .to_string();
        assert!(e.contains("encode[0] (width 20000, height 50)"), "{e}");
    }
}
