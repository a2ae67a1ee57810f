//! The operator model fitted to one GPU's measurements, and how well it carries to another.
//!
//! `hetsim calibrate --model` measures a phase table (encode, prefill, decode on a grid) and GEMM
//! probes on the machine it runs on. The table alone predicts only that GPU. Fitted through the
//! roofline's operators ([`Efficiency`]: GEMM efficiency at full waves and its K dependence,
//! attention efficiency, the fraction of HBM bandwidth memory-bound kernels reach, per-kernel and
//! per-step overheads), the same measurements predict any GPU from its datasheet (SM count,
//! clocks, tensor rate, bandwidth): [`OperatorFit`]. `hetsim fit` fits a profile and, given the
//! table of another GPU, prints how far the prediction lands from it (leave one GPU out).
//!
//! Two stages, so each parameter is set by the measurement that sees it: the GEMM probes fix
//! `gemm` and `gemm_k_half` (the probe times single products back to back, at the launch
//! overhead the profile measured); the phase table then fixes attention, memory and the
//! overheads with the GEMM parameters held. Both minimise the sum of squared log errors (every
//! point weighs by its relative error) by Nelder–Mead over transformed parameters, from fixed
//! starts: deterministic.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::catalog::{Dtype, GpuSpec, ModelSpec, builtin_model, gpu_by_name};
use crate::compare::{Comparison, error_pct, metrics};
use crate::engine::simulate;
use crate::error::{Error, InputError};
use crate::experiment::load_experiment_on;
use crate::perf::{BatchShape, Efficiency, PhaseModel, Roofline};
use crate::profile::{GpuProfile, HardwareProfile, PhaseProfile};
use crate::records::{MemorySink, RequestRecord};
use crate::stats::nearest_rank;
use crate::table::{Table, Value};

/// Operator parameters fitted on one GPU's measurements, for use on any GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorFit {
    /// Where the measurements came from.
    pub catalog_gpu: String,
    pub model: String,
    pub dtype: String,
    pub efficiency: Efficiency,
    /// Fixed cost of one product timed alone by calibrate's GEMM probe, µs: launch, the
    /// library's tail and the event pair, which the engine's graphs and streams overlap. It
    /// describes the probe, not the model, and is used only to compare with GEMM probes.
    pub probe_overhead_us: f64,
    /// Median |error| of the fit on its own measurements, percent, by phase.
    pub residuals: Vec<PhaseError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseError {
    pub phase: String,
    pub points: usize,
    pub median_abs_error_pct: f64,
    pub max_abs_error_pct: f64,
}

/// One measured point of a phase table and the model's prediction of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointError {
    /// `gemm`, `encode`, `prefill` or `decode`.
    pub phase: &'static str,
    /// The shape in words (`m=577 n=3072 k=1024`, `images=8`, `sequences=4 tokens=2816`, …).
    pub shape: String,
    pub measured_s: f64,
    pub predicted_s: f64,
}

impl PointError {
    pub fn error_pct(&self) -> f64 {
        (self.predicted_s - self.measured_s) / self.measured_s * 100.0
    }
}

/// A phase table's point, in the form the operator model evaluates.
enum Shape {
    Gemm {
        m: u64,
        n: u64,
        k: u64,
    },
    /// `images` images of `size` (width, height) each.
    Encode {
        images: u64,
        size: (u64, u64),
    },
    Prefill {
        sequences: u64,
        tokens: u64,
    },
    Decode {
        batch: u64,
        context: u64,
    },
}

impl Shape {
    fn phase(&self) -> &'static str {
        match self {
            Shape::Gemm { .. } => "gemm",
            Shape::Encode { .. } => "encode",
            Shape::Prefill { .. } => "prefill",
            Shape::Decode { .. } => "decode",
        }
    }

    fn describe(&self) -> String {
        match self {
            Shape::Gemm { m, n, k } => format!("m={m} n={n} k={k}"),
            Shape::Encode {
                images,
                size: (w, h),
            } => {
                let (dw, dh) = crate::profile::DEFAULT_ENCODE_SIZE;
                if (*w, *h) == (u64::from(dw), u64::from(dh)) {
                    format!("images={images}")
                } else {
                    format!("images={images} width={w} height={h}")
                }
            }
            Shape::Prefill { sequences, tokens } => {
                format!("sequences={sequences} tokens={tokens}")
            }
            Shape::Decode { batch, context } => format!("batch={batch} context={context}"),
        }
    }
}

/// The measurements of one GPU that a fit uses or a prediction is held against.
pub struct Measurements<'a> {
    pub gpu: &'static GpuSpec,
    pub model: &'a ModelSpec,
    pub dtype: Dtype,
    pub phases: &'a PhaseProfile,
    /// The GEMM probe points and the launch overhead they were timed at (absent: none).
    pub probe: Option<&'a GpuProfile>,
}

impl Measurements<'_> {
    fn points(&self) -> Vec<(Shape, f64)> {
        let mut v = Vec::new();
        for g in self.probe.iter().flat_map(|p| &p.gemm_points) {
            let flops = 2.0 * (g.m * g.n * g.k) as f64;
            v.push((
                Shape::Gemm {
                    m: g.m,
                    n: g.n,
                    k: g.k,
                },
                flops / (g.tflops * 1e12),
            ));
        }
        for e in &self.phases.encode {
            v.push((
                Shape::Encode {
                    images: e.images,
                    size: e.size(),
                },
                e.seconds,
            ));
        }
        for p in &self.phases.prefill {
            v.push((
                Shape::Prefill {
                    sequences: p.sequences,
                    tokens: p.tokens,
                },
                p.seconds,
            ));
        }
        for d in &self.phases.decode {
            v.push((
                Shape::Decode {
                    batch: d.batch,
                    context: d.context,
                },
                d.seconds,
            ));
        }
        v
    }
}

/// The operator model's time for `shape` on `gpu` with parameters `eff`.
fn predict(
    shape: &Shape,
    model: &ModelSpec,
    dtype: Dtype,
    gpu: &GpuSpec,
    eff: Efficiency,
    probe_overhead_us: f64,
) -> Result<f64, InputError> {
    let r = Roofline::new(model, dtype, gpu, eff, 1, None);
    Ok(match *shape {
        Shape::Gemm { m, n, k } => {
            // The probe's products run alone: the engine's per-kernel overhead is replaced by
            // the probe's own.
            let probe = Roofline::new(
                model,
                dtype,
                gpu,
                Efficiency {
                    kernel_overhead_us: probe_overhead_us,
                    ..eff
                },
                1,
                None,
            );
            probe.gemm(m as f64, k as f64, n as f64).seconds
        }
        Shape::Encode {
            images,
            size: (w, h),
        } => {
            let img = model.image_tokens(w, h)?;
            r.encode_s(&vec![img; images as usize])
        }
        Shape::Prefill { sequences, tokens } => {
            let mut b = BatchShape::default();
            let per = tokens / sequences.max(1);
            for i in 0..sequences {
                let n = if i + 1 == sequences {
                    tokens - per * (sequences - 1)
                } else {
                    per
                };
                b.add_prefill_chunk(0, n, true);
            }
            r.forward_s(&b)
        }
        Shape::Decode { batch, context } => {
            let mut b = BatchShape::default();
            for _ in 0..batch {
                b.add_decode(context);
            }
            r.forward_s(&b)
        }
    })
}

fn sq_log_error(
    points: &[(Shape, f64)],
    m: &Measurements,
    eff: Efficiency,
    probe_us: f64,
) -> Result<f64, InputError> {
    let mut sum = 0.0;
    for (shape, measured) in points {
        let p = predict(shape, m.model, m.dtype, m.gpu, eff, probe_us)?;
        sum += (p / measured).ln().powi(2);
    }
    Ok(sum)
}

/// Fits the operator parameters to one GPU's measurements.
pub fn fit(m: &Measurements) -> Result<OperatorFit, InputError> {
    let all = m.points();
    let (gemm, table): (Vec<_>, Vec<_>) = all.into_iter().partition(|(s, _)| s.phase() == "gemm");
    if table.is_empty() {
        return Err(InputError::new(format!(
            "the phase table of {} on {} is empty: nothing to fit",
            m.phases.model, m.phases.catalog_gpu
        )));
    }
    let mut eff = Efficiency::default();
    // Without probes the GEMM parameters keep their defaults; the probe's launch cost starts
    // its overhead.
    let mut probe_us = m.probe.map_or(0.0, |p| p.launch_overhead_us).max(0.5);
    if !gemm.is_empty() {
        // x = (logit gemm, ln k_half, ln probe µs)
        let best = nelder_mead(
            |x| {
                let e = Efficiency {
                    gemm: logistic(x[0]),
                    gemm_k_half: x[1].exp(),
                    ..eff
                };
                sq_log_error(&gemm, m, e, x[2].exp()).unwrap_or(f64::INFINITY)
            },
            &[logit(eff.gemm), eff.gemm_k_half.ln(), probe_us.ln()],
        );
        eff.gemm = logistic(best[0]);
        eff.gemm_k_half = best[1].exp();
        probe_us = best[2].exp();
    }
    // x = (logit attention, logit memory, ln kernel µs, ln step µs)
    let best = nelder_mead(
        |x| {
            let e = Efficiency {
                attention: logistic(x[0]),
                memory: logistic(x[1]),
                kernel_overhead_us: x[2].exp(),
                step_overhead_us: x[3].exp(),
                ..eff
            };
            sq_log_error(&table, m, e, probe_us).unwrap_or(f64::INFINITY)
        },
        &[
            logit(eff.attention),
            logit(eff.memory),
            eff.kernel_overhead_us.ln(),
            eff.step_overhead_us.ln(),
        ],
    );
    eff.attention = logistic(best[0]);
    eff.memory = logistic(best[1]);
    eff.kernel_overhead_us = best[2].exp();
    eff.step_overhead_us = best[3].exp();
    let mut f = OperatorFit {
        catalog_gpu: m.gpu.name.to_string(),
        model: m.model.name.clone(),
        dtype: m.dtype.name().to_string(),
        efficiency: eff,
        probe_overhead_us: probe_us,
        residuals: Vec::new(),
    };
    f.residuals = summarize(&evaluate(m, &f)?);
    Ok(f)
}

/// Every measured point of `m` beside the prediction of `fit` (made on any GPU) for `m`'s GPU.
pub fn evaluate(m: &Measurements, fit: &OperatorFit) -> Result<Vec<PointError>, InputError> {
    m.points()
        .into_iter()
        .map(|(shape, measured_s)| {
            Ok(PointError {
                phase: shape.phase(),
                shape: shape.describe(),
                measured_s,
                predicted_s: predict(
                    &shape,
                    m.model,
                    m.dtype,
                    m.gpu,
                    fit.efficiency,
                    fit.probe_overhead_us,
                )?,
            })
        })
        .collect()
}

/// Median and largest |error| by phase, in the order gemm, encode, prefill, decode.
pub fn summarize(points: &[PointError]) -> Vec<PhaseError> {
    ["gemm", "encode", "prefill", "decode"]
        .iter()
        .filter_map(|phase| {
            let errs: Vec<f64> = points
                .iter()
                .filter(|p| p.phase == *phase)
                .map(|p| p.error_pct().abs())
                .collect();
            let mut errs = errs;
            errs.sort_by(f64::total_cmp);
            Some(PhaseError {
                phase: phase.to_string(),
                points: errs.len(),
                median_abs_error_pct: nearest_rank(&errs, 0.5)?,
                max_abs_error_pct: *errs.last()?,
            })
        })
        .collect()
}

/// A profile's one phase table with what the fit needs beside it (the model, the GPU's
/// datasheet, the GEMM probes), owned.
pub struct ProfileTable {
    pub gpu: &'static GpuSpec,
    pub model: ModelSpec,
    pub dtype: Dtype,
    pub phases: PhaseProfile,
    pub probe: Option<GpuProfile>,
}

impl ProfileTable {
    /// The phase table of `profile` for the GPU named `gpu` (a catalog name, e.g. `H100-SXM` or
    /// a partition `H100-SXM@40sm`), or its only table when `gpu` is `None`; named `what` in
    /// errors. A `--split` calibration holds three tables (the whole GPU and both partitions),
    /// so there the GPU must be named.
    pub fn of(
        profile: &HardwareProfile,
        what: &str,
        gpu: Option<&str>,
    ) -> Result<ProfileTable, InputError> {
        let held = || -> String {
            profile
                .phases
                .iter()
                .map(|p| format!("{} on {}", p.model, p.catalog_gpu))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let phases = match gpu {
            Some(name) => profile
                .phases
                .iter()
                .find(|p| p.catalog_gpu == name)
                .ok_or_else(|| {
                    InputError::new(format!(
                        "{what}: no phase table for GPU `{name}`; it holds {}",
                        if profile.phases.is_empty() {
                            "none (`hetsim calibrate --model` measures one)".to_string()
                        } else {
                            held()
                        }
                    ))
                })?,
            None => match profile.phases.as_slice() {
                [one] => one,
                [] => {
                    return Err(InputError::new(format!(
                        "{what}: a fit needs a profile with a phase table (`hetsim calibrate \
                         --model`), this one has none"
                    )));
                }
                _ => {
                    return Err(InputError::new(format!(
                        "{what}: this profile has {} phase tables ({}): name the one to use \
                         by its GPU",
                        profile.phases.len(),
                        held()
                    )));
                }
            },
        };
        let gpu = gpu_by_name(&phases.catalog_gpu).ok_or_else(|| {
            InputError::new(format!(
                "{what}: phases.catalog_gpu = `{}` is not a catalog GPU (`hetsim catalog` lists them): \
                 the fit needs its datasheet",
                phases.catalog_gpu
            ))
        })?;
        let model = builtin_model(&phases.model).ok_or_else(|| {
            InputError::new(format!(
                "{what}: phases.model = `{}` is not a built-in model (`hetsim catalog` lists them)",
                phases.model
            ))
        })?;
        let dtype =
            Dtype::parse(&phases.dtype).map_err(|e| e.context(format!("{what}: phases.dtype")))?;
        Ok(ProfileTable {
            gpu,
            model,
            dtype,
            probe: profile.gpu(gpu.name).cloned(),
            phases: phases.clone(),
        })
    }

    pub fn measurements(&self) -> Measurements<'_> {
        Measurements {
            gpu: self.gpu,
            model: &self.model,
            dtype: self.dtype,
            phases: &self.phases,
            probe: self.probe.as_ref(),
        }
    }
}

/// The fitted parameters and the fit's residuals, as markdown.
pub fn fit_markdown(f: &OperatorFit) -> String {
    let e = &f.efficiency;
    let mut s = format!(
        "## Operator fit: {} on {} ({})\n\n\
         | gemm | gemm_k_half | attention | memory | kernel_overhead_us | step_overhead_us | probe_overhead_us |\n\
         |---|---|---|---|---|---|---|\n\
         | {:.3} | {:.1} | {:.3} | {:.3} | {:.2} | {:.0} | {:.2} |\n\n\
         | phase | points | median abs error % | max abs error % |\n|---|---|---|---|\n",
        f.model,
        f.catalog_gpu,
        f.dtype,
        e.gemm,
        e.gemm_k_half,
        e.attention,
        e.memory,
        e.kernel_overhead_us,
        e.step_overhead_us,
        f.probe_overhead_us
    );
    for r in &f.residuals {
        s += &format!(
            "| {} | {} | {:.1} | {:.1} |\n",
            r.phase, r.points, r.median_abs_error_pct, r.max_abs_error_pct
        );
    }
    s
}

/// Every point's prediction beside its measurement.
pub fn points_table(points: &[PointError]) -> Table {
    let mut t = Table::new(&["phase", "shape", "measured_ms", "predicted_ms", "error_pct"]);
    for p in points {
        t.push(vec![
            Value::Str(p.phase.to_string()),
            Value::Str(p.shape.clone()),
            Value::F64(p.measured_s * 1e3),
            Value::F64(p.predicted_s * 1e3),
            Value::F64(p.error_pct()),
        ]);
    }
    t
}

/// The metrics a replay check compares: latency percentiles and throughput (bytes moved match
/// by construction and say nothing of the performance model).
const REPLAY_METRICS: [&str; 10] = [
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p90_s",
    "tpot_p99_s",
    "e2e_p50_s",
    "e2e_p90_s",
    "e2e_p99_s",
    "throughput_rps",
];

/// Simulates `experiment` on `profile` and compares each scenario's metrics with the measured
/// column of a `hetsim validate` comparison (`comparison.csv`: scenario, metric, predicted,
/// measured, error_pct), in the form `hetsim validate` prints.
pub fn replay_check(
    experiment: &Path,
    profile: HardwareProfile,
    measured_csv: &Path,
) -> Result<Comparison, Error> {
    let measured = read_comparison(measured_csv)?;
    let exp = load_experiment_on(experiment, None, Some(profile), false)?;
    let mut table = Table::new(&["scenario", "metric", "predicted", "measured", "error_pct"]);
    let mut errors = Vec::new();
    for s in &exp.scenarios {
        let mut sink = MemorySink::default();
        simulate(s, &mut sink, &mut |_| {})?;
        let refs: Vec<&RequestRecord> = sink.requests.iter().collect();
        for (metric, predicted) in metrics(&refs).values {
            if !REPLAY_METRICS.contains(&metric) {
                continue;
            }
            if let Some(m) = measured
                .iter()
                .find(|(sc, me, _)| *sc == s.name && me == metric)
                && let Some(err) = error_pct(predicted, m.2)
            {
                errors.push(err.abs());
                table.push(vec![
                    Value::Str(s.name.clone()),
                    Value::Str(metric.to_string()),
                    Value::F64(predicted),
                    Value::F64(m.2),
                    Value::F64(err),
                ]);
            }
        }
    }
    errors.sort_by(f64::total_cmp);
    let Some(median) = nearest_rank(&errors, 0.5) else {
        return Err(Error::Input(InputError::new(format!(
            "{}: no scenario of {} has measured metrics there (scenario names must match)",
            measured_csv.display(),
            experiment.display()
        ))));
    };
    Ok(Comparison {
        table,
        median_abs_error_pct: Some(median),
    })
}

/// (scenario, metric, measured) of a `hetsim validate` comparison.csv.
fn read_comparison(path: &Path) -> Result<Vec<(String, String, f64)>, InputError> {
    let text = crate::input::read_text(path, "comparison")?;
    let mut lines = text.lines().enumerate();
    let header = "scenario,metric,predicted,measured,error_pct";
    match lines.next() {
        Some((_, h)) if h.trim() == header => {}
        _ => {
            return Err(InputError::new(format!(
                "{}:1: expected the header `{header}` of a `hetsim validate` comparison.csv",
                path.display()
            )));
        }
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').collect();
        let bad = |why: &str| InputError::new(format!("{}:{}: {why}", path.display(), i + 1));
        let [scenario, metric, _, measured, _] = f.as_slice() else {
            return Err(bad(
                "expected 5 comma-separated fields (names with commas are not read)",
            ));
        };
        if measured.is_empty() {
            continue;
        }
        let m: f64 = measured
            .parse()
            .map_err(|_| bad(&format!("measured = `{measured}` is not a number")))?;
        out.push((scenario.to_string(), metric.to_string(), m));
    }
    Ok(out)
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// Minimises `f` from `start` (Nelder–Mead, standard coefficients, initial steps of 0.5 in each
/// coordinate, 400 iterations per dimension or until the simplex's values agree to 1e-12).
fn nelder_mead(f: impl Fn(&[f64]) -> f64, start: &[f64]) -> Vec<f64> {
    let n = start.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = (0..=n)
        .map(|i| {
            let mut x = start.to_vec();
            if i > 0 {
                x[i - 1] += 0.5;
            }
            let v = f(&x);
            (x, v)
        })
        .collect();
    for _ in 0..400 * n {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (simplex[n].1 - simplex[0].1).abs() <= 1e-12 * (1.0 + simplex[0].1.abs()) {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|j| simplex[..n].iter().map(|p| p.0[j]).sum::<f64>() / n as f64)
            .collect();
        let towards = |t: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + t * (simplex[n].0[j] - centroid[j]))
                .collect()
        };
        let reflected = towards(-1.0);
        let fr = f(&reflected);
        if fr < simplex[0].1 {
            let expanded = towards(-2.0);
            let fe = f(&expanded);
            simplex[n] = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (reflected, fr);
        } else {
            let contracted = towards(0.5);
            let fc = f(&contracted);
            if fc < simplex[n].1 {
                simplex[n] = (contracted, fc);
            } else {
                let best = simplex[0].0.clone();
                for p in simplex.iter_mut().skip(1) {
                    p.0 = (0..n).map(|j| best[j] + 0.5 * (p.0[j] - best[j])).collect();
                    p.1 = f(&p.0);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{DecodePoint, EncodePoint, GemmPoint, PrefillPoint};

    #[test]
    fn nelder_mead_finds_a_quadratic_minimum() {
        let x = nelder_mead(
            |x| (x[0] - 1.5).powi(2) + 3.0 * (x[1] + 0.25).powi(2),
            &[0.0, 0.0],
        );
        assert!(
            (x[0] - 1.5).abs() < 1e-5 && (x[1] + 0.25).abs() < 1e-5,
            "{x:?}"
        );
    }

    /// A table generated by known parameters on one GPU is fitted back to them, and the fit
    /// predicts another GPU's table generated by the same parameters.
    #[test]
    fn recovers_known_parameters_and_carries_them_to_another_gpu() {
        let model = builtin_model("llava-1.5-7b").unwrap();
        let truth = Efficiency {
            gemm: 0.8,
            gemm_k_half: 90.0,
            attention: 0.4,
            memory: 0.88,
            kernel_overhead_us: 6.0,
            step_overhead_us: 450.0,
        };
        let table = |gpu: &'static GpuSpec| -> (PhaseProfile, GpuProfile) {
            let probe = GpuProfile {
                catalog_gpu: gpu.name.into(),
                reported_name: gpu.name.into(),
                gemm_tflops: 0.0,
                gemm_efficiency: 0.8,
                hbm_gbs: 0.0,
                memory_efficiency: 0.88,
                launch_overhead_us: 2.5,
                gemm_points: [(577, 3072, 1024), (4616, 1024, 4096), (18464, 4096, 1024)]
                    .iter()
                    .map(|&(m, n, k)| GemmPoint {
                        m,
                        n,
                        k,
                        tflops: 0.0,
                    })
                    .collect(),
            };
            let mut phases = PhaseProfile {
                model: model.name.clone(),
                catalog_gpu: gpu.name.into(),
                dtype: "bf16".into(),
                encode: [1, 8, 32]
                    .iter()
                    .map(|&images| EncodePoint {
                        images,
                        seconds: 0.0,
                        width: None,
                        height: None,
                    })
                    .collect(),
                prefill: [(1, 128), (1, 1024), (8, 5632)]
                    .iter()
                    .map(|&(sequences, tokens)| PrefillPoint {
                        sequences,
                        tokens,
                        seconds: 0.0,
                    })
                    .collect(),
                decode: [(1, 256), (16, 704), (64, 1024)]
                    .iter()
                    .map(|&(batch, context)| DecodePoint {
                        batch,
                        context,
                        seconds: 0.0,
                    })
                    .collect(),
                sustained: vec![],
                interference: vec![],
                encode_prefill: vec![],
            };
            let m = Measurements {
                gpu,
                model: &model,
                dtype: Dtype::Bf16,
                phases: &phases,
                probe: Some(&probe),
            };
            let truth_fit = OperatorFit {
                catalog_gpu: gpu.name.into(),
                model: model.name.clone(),
                dtype: "bf16".into(),
                efficiency: truth,
                probe_overhead_us: 7.0,
                residuals: vec![],
            };
            let truth_points = evaluate(&m, &truth_fit).unwrap();
            let mut probe = probe.clone();
            let (g, rest) = truth_points.split_at(3);
            for (gp, p) in probe.gemm_points.iter_mut().zip(g) {
                gp.tflops = 2.0 * (gp.m * gp.n * gp.k) as f64 / p.predicted_s / 1e12;
            }
            let mut it = rest.iter().map(|p| p.predicted_s);
            for e in &mut phases.encode {
                e.seconds = it.next().unwrap();
            }
            for p in &mut phases.prefill {
                p.seconds = it.next().unwrap();
            }
            for d in &mut phases.decode {
                d.seconds = it.next().unwrap();
            }
            (phases, probe)
        };
        let h100 = gpu_by_name("H100-SXM").unwrap();
        let l4 = gpu_by_name("L4").unwrap();
        let (phases, probe) = table(h100);
        let m = Measurements {
            gpu: h100,
            model: &model,
            dtype: Dtype::Bf16,
            phases: &phases,
            probe: Some(&probe),
        };
        let f = fit(&m).unwrap();
        for r in &f.residuals {
            assert!(r.max_abs_error_pct < 0.5, "{r:?}");
        }
        let (l4_phases, l4_probe) = table(l4);
        let other = Measurements {
            gpu: l4,
            model: &model,
            dtype: Dtype::Bf16,
            phases: &l4_phases,
            probe: Some(&l4_probe),
        };
        for p in evaluate(&other, &f).unwrap() {
            assert!(p.error_pct().abs() < 1.0, "{p:?}");
        }
    }
}

/// Leave one GPU out on the repository's own tables: H100 and H200 measured 11 minutes apart
/// on 2026-11-21 with one engine build (exec/REPORT.md, "Across GPUs").
#[cfg(test)]
mod across {
    use super::*;

    fn table(name: &str) -> ProfileTable {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../profiles")
            .join(name);
        ProfileTable::of(&HardwareProfile::load(&path).unwrap(), name, None).unwrap()
    }

    #[test]
    fn each_gpu_predicts_the_other_within_8_percent_median_per_phase() {
        let h100 = table("h100-2026-11-21-llava-1.5-7b.yaml");
        let h200 = table("h200x4-2026-11-21-llava-1.5-7b.yaml");
        for (from, to) in [(&h100, &h200), (&h200, &h100)] {
            let f = fit(&from.measurements()).unwrap();
            for r in summarize(&evaluate(&to.measurements(), &f).unwrap()) {
                assert!(
                    r.median_abs_error_pct <= 8.0,
                    "{} → {}: {r:?}",
                    from.gpu.name,
                    to.gpu.name
                );
            }
        }
    }
}
