//! How far to trust a prediction: the interval the measured errors justify, by where each
//! instance's performance model came from.
//!
//! The widths are the 80th percentile of |error| over the latency metrics (TTFT, TPOT and e2e at
//! p50/p90/p99) and throughput of the repository's replays, each simulated again by the current
//! simulator (the test below), so a prediction's interval covers about four measured points in
//! five:
//! - `measured`: the instance's GPU has its own phase table, calibrated on that machine: 4.5 %
//!   over 470 points — every recorded LLaVA and Qwen2.5-VL validation with its own table, light
//!   load to past capacity, H100 and H200, whole GPUs and green-context partitions
//!   (exec/results/2026-11-21-h100-validate, …-h200x4-validate, 2026-12-03-h200-same-lease,
//!   …-green-split/validate-measured, 2026-12-04-h200-qwen-validate, 2026-12-07-h100-same-lease,
//!   2026-12-07-h100-combined-step, 2026-12-07-h100-prompt-point, 2026-12-08-h100-rested-probe).
//!   It was 2.3 % while only the 2026-11-21 light-load records were counted.
//! - `same-arch`: the operator model fitted on another GPU of the same architecture (or the
//!   defaults, which were set on Hopper measurements, on a Hopper GPU): 10.8 % over 260 points
//!   (`hetsim fit` H100 → H200 and H200 → H100 replays on the tables of 2026-11-21 and on the
//!   same-lease tables of 2026-12-03 (H200) and 2026-12-07 (H100), exec/REPORT.md "Across
//!   GPUs", and the whole H200's fit predicting two green-context partitions of it,
//!   exec/results/2026-12-03-h200-green-split/validate-fit).
//! - `other-arch`: fitted on another architecture, or the defaults on a non-Hopper GPU. Nothing
//!   here measured that (only Hopper GPUs were lent), so the width is an assumption: twice
//!   `same-arch`, 21.6 %.
//!
//! The widths do not cover what the simulator leaves out and says it does: SM partitions of one
//! GPU without a measured interference table (`interference::notes`, printed under `run`'s
//! table). On the recorded H200 split their steps were up to 31 % short (the encoder's), the
//! request metrics 2–3 % (exec/REPORT.md, green-context partitions).

use serde::Serialize;

use crate::catalog::{GpuSpec, gpu_by_name};
use crate::fit::OperatorFit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Basis {
    Measured,
    SameArchitecture,
    OtherArchitecture,
}

/// The architecture the built-in defaults were set on (`perf::Efficiency`).
const DEFAULTS_ARCH: &str = "Hopper";

impl Basis {
    /// Where an instance's model comes from: its own phase table (`measured`, tp 1 only), else
    /// the profile's operator fit, else the defaults.
    pub fn of(gpu: &GpuSpec, tp: u64, measured: bool, fit: Option<&OperatorFit>) -> Basis {
        if measured && tp == 1 {
            return Basis::Measured;
        }
        let from = match fit {
            Some(f) => gpu_by_name(&f.catalog_gpu).map(|g| g.arch),
            None => Some(DEFAULTS_ARCH),
        };
        if from == Some(gpu.arch) {
            Basis::SameArchitecture
        } else {
            Basis::OtherArchitecture
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Basis::Measured => "measured",
            Basis::SameArchitecture => "same-arch",
            Basis::OtherArchitecture => "other-arch",
        }
    }

    /// Half-width of the interval, percent of the predicted value.
    pub fn error_pct(self) -> f64 {
        match self {
            Basis::Measured => 4.5,
            Basis::SameArchitecture => 10.8,
            Basis::OtherArchitecture => 21.6,
        }
    }
}

/// A deployment is as uncertain as its least certain instance.
pub fn least_certain(instances: &[Basis]) -> Basis {
    instances
        .iter()
        .copied()
        .max()
        .unwrap_or(Basis::OtherArchitecture)
}

/// Whether `a ± a_pct %` and `b ± b_pct %` overlap: two predictions their errors cannot order.
pub fn overlap(a: f64, a_pct: f64, b: f64, b_pct: f64) -> bool {
    let (lo_a, hi_a) = (a * (1.0 - a_pct / 100.0), a * (1.0 + a_pct / 100.0));
    let (lo_b, hi_b) = (b * (1.0 - b_pct / 100.0), b * (1.0 + b_pct / 100.0));
    lo_a <= hi_b && lo_b <= hi_a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::gpu_by_name;
    use crate::fit::{ProfileTable, fit};
    use crate::profile::HardwareProfile;
    use std::path::{Path, PathBuf};

    fn repo(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
    }

    fn p80(mut errs: Vec<f64>) -> f64 {
        errs.sort_by(f64::total_cmp);
        crate::stats::nearest_rank(&errs, 0.8).unwrap()
    }

    /// |error| of each latency and throughput metric of a recorded replay, the experiment
    /// simulated again now on `profile` (so the widths are the current simulator's, not the one
    /// of the day of the record), for the scenarios `keep` selects.
    fn replay_errors(
        exp: &str,
        profile: HardwareProfile,
        csv: &str,
        keep: fn(&str) -> bool,
    ) -> Vec<f64> {
        let c = crate::fit::replay_check(&repo(exp), profile, &repo(csv)).unwrap();
        c.table
            .rows
            .iter()
            .filter(|r| matches!(&r[0], crate::table::Value::Str(s) if keep(s)))
            .map(|r| match r[4] {
                crate::table::Value::F64(e) => e.abs(),
                _ => unreachable!("error_pct is a number"),
            })
            .collect()
    }

    fn load(p: &str) -> HardwareProfile {
        HardwareProfile::load(&repo(p)).unwrap()
    }

    /// Prints where a set of errors came from and how wide it is (`--nocapture`).
    fn noted(basis: Basis, what: &str, errs: Vec<f64>) -> Vec<f64> {
        let w = p80(errs.clone());
        eprintln!(
            "{}: {what}: {} points, p80 {w:.2}",
            basis.name(),
            errs.len()
        );
        errs
    }

    /// `errs` are `points` errors whose 80th percentile is `basis`'s width.
    fn assert_width(basis: Basis, errs: Vec<f64>, points: usize) {
        let w = p80(noted(basis, "all", errs.clone()));
        assert_eq!(errs.len(), points, "{} points", basis.name());
        assert!(
            (w - basis.error_pct()).abs() < 0.05,
            "{} p80 {w}",
            basis.name()
        );
    }

    /// `profile` with its phase tables replaced by the operator fit on `from`'s table of `gpu`.
    fn fitted(
        from: &HardwareProfile,
        gpu: Option<&str>,
        profile: &HardwareProfile,
    ) -> HardwareProfile {
        let f = fit(&ProfileTable::of(from, "from", gpu).unwrap().measurements()).unwrap();
        let mut target = profile.clone();
        target.phases.clear();
        target.operator_fit = Some(f);
        target
    }

    /// The widths are what the committed records give: recomputed here, so a new record or a
    /// model change that moves them fails until the constants follow.
    #[test]
    fn widths_are_the_80th_percentile_of_the_recorded_errors() {
        let all = |_: &str| true;
        let modality = |s: &str| s.starts_with("modality");
        // Every replay whose GPUs had phase tables measured on that machine (the same lease, or
        // the same GPU model on another lease: 2026-11-21 nvlink/pcie), at every load recorded.
        let calibrated = [
            (
                "exec/results/2026-11-21-h100-validate/experiment.yaml",
                "profiles/h100-2026-11-21-llava-1.5-7b.yaml",
                "exec/results/2026-11-21-h100-validate/val/comparison.csv",
            ),
            (
                "experiments/validate-nvlink.yaml",
                "profiles/h200x4-2026-11-21-llava-1.5-7b.yaml",
                "exec/results/2026-11-21-h200x4-validate/nv/comparison.csv",
            ),
            (
                "experiments/validate-pcie.yaml",
                "profiles/h200x4-2026-11-21-llava-1.5-7b.yaml",
                "exec/results/2026-11-21-h200x4-validate/pc/comparison.csv",
            ),
            (
                "exec/results/2026-12-03-h200-same-lease/experiment.yaml",
                "exec/results/2026-12-03-h200-same-lease/profile.yaml",
                "exec/results/2026-12-03-h200-same-lease/validate-h200/comparison.csv",
            ),
            (
                "experiments/validate-green.yaml",
                "profiles/h200-2026-12-03-llava-1.5-7b-split40.yaml",
                "exec/results/2026-12-03-h200-green-split/validate-measured/comparison.csv",
            ),
            (
                "experiments/validate-qwen.yaml",
                "exec/results/2026-12-04-h200-qwen-validate/profile.yaml",
                "exec/results/2026-12-04-h200-qwen-validate/validate-qwen/comparison.csv",
            ),
            (
                "exec/results/2026-12-07-h100-same-lease/validate-h100-loads.yaml",
                "exec/results/2026-12-07-h100-same-lease/profile.yaml",
                "exec/results/2026-12-07-h100-same-lease/validate-colocated/comparison.csv",
            ),
            (
                "exec/results/2026-12-07-h100-combined-step/rested-prefill/validate-h100-loads.yaml",
                "exec/results/2026-12-07-h100-combined-step/rested-prefill/profile.yaml",
                "exec/results/2026-12-07-h100-combined-step/rested-prefill/validate-colocated/comparison.csv",
            ),
            (
                "exec/results/2026-12-07-h100-prompt-point/pace-and-loads/experiment.yaml",
                "exec/results/2026-12-07-h100-prompt-point/pace-and-loads/profile.yaml",
                "exec/results/2026-12-07-h100-prompt-point/pace-and-loads/validate-colocated/comparison.csv",
            ),
            (
                "exec/results/2026-12-08-h100-rested-probe/experiment.yaml",
                "exec/results/2026-12-08-h100-rested-probe/profile.yaml",
                "exec/results/2026-12-08-h100-rested-probe/validate-colocated/comparison.csv",
            ),
            (
                "exec/results/2026-12-07-h100-combined-step/rested-prefill/validate-green-h100.yaml",
                "profiles/h100-2026-12-07-llava-1.5-7b-split40.yaml",
                "exec/results/2026-12-07-h100-combined-step/rested-prefill/validate-green/comparison.csv",
            ),
        ];
        let mut measured = Vec::new();
        for (exp, profile, csv) in calibrated {
            let e = replay_errors(exp, load(profile), csv, all);
            measured.extend(noted(Basis::Measured, csv, e));
        }
        assert_width(Basis::Measured, measured, 470);

        // The operator model fitted on one GPU predicting another's replays (leave one GPU
        // out), both ways, on the tables of 2026-11-21 and on the same-lease tables of
        // 2026-12-03 (H200) and 2026-12-07 (H100).
        let h100 = load("profiles/h100-2026-11-21-llava-1.5-7b.yaml");
        let h200 = load("profiles/h200x4-2026-11-21-llava-1.5-7b.yaml");
        let h100_new = load("exec/results/2026-12-07-h100-same-lease/profile.yaml");
        let h200_new = load("exec/results/2026-12-03-h200-same-lease/profile.yaml");
        let across_gpus = [
            (fitted(&h200, None, &h100), calibrated[0]),
            (fitted(&h100, None, &h200), calibrated[1]),
            (fitted(&h100, None, &h200), calibrated[2]),
            (fitted(&h200_new, None, &h100_new), calibrated[6]),
            (
                fitted(&h100_new, Some("H100-SXM"), &h200_new),
                calibrated[3],
            ),
        ];
        let mut across = Vec::new();
        for (target, (exp, _, csv)) in across_gpus {
            let e = replay_errors(exp, target, csv, all);
            across.extend(noted(Basis::SameArchitecture, csv, e));
        }
        // The fit on the whole H200 predicting two green-context partitions of it (an
        // encoder on 40 SMs, the LLM on 92): the modality rows of that validation, whose
        // partitions had no phase table of their own.
        let e = replay_errors(
            "experiments/validate-green.yaml",
            load("profiles/h200-2026-12-03-llava-1.5-7b.yaml"),
            "exec/results/2026-12-03-h200-green-split/validate-fit/comparison.csv",
            modality,
        );
        across.extend(noted(
            Basis::SameArchitecture,
            "green partitions on the whole GPU's fit",
            e,
        ));
        assert_width(Basis::SameArchitecture, across, 260);
        assert_eq!(
            Basis::OtherArchitecture.error_pct(),
            2.0 * Basis::SameArchitecture.error_pct()
        );
    }

    /// A fitted profile on an experiment: the measured GPU keeps its table, another Hopper
    /// is `same-arch`, an Ada card `other-arch`, and the fit is what their instances run on.
    #[test]
    fn a_fitted_profile_sets_each_instances_basis_and_model() {
        let mut profile =
            HardwareProfile::load(&repo("profiles/h100-2026-11-21-llava-1.5-7b.yaml")).unwrap();
        let f = fit(&ProfileTable::of(&profile, "h100", None)
            .unwrap()
            .measurements())
        .unwrap();
        profile.operator_fit = Some(f.clone());
        let dir = tempfile::tempdir().unwrap();
        let exp = dir.path().join("e.yaml");
        std::fs::write(
            &exp,
            "name: t\nseed: 1\ndefaults:\n  model: llava-1.5-7b\n  cluster:\n    nodes: [{name: n, gpus: [{gpu: H100-SXM, count: 1}, {gpu: H200-SXM, count: 1}, {gpu: L4, count: 1}]}]\n  workload: {requests: 20, arrival: {process: poisson, rate: 2}, images: {count: 1, width: 640, height: 480}, prompt_tokens: 20, output_tokens: 16}\n  slo: {ttft_s: 1, tpot_s: 0.1}\n  pricing: {mode: rental}\nscenarios:\n  - name: mixed\n    deployment:\n      strategy: colocated\n      instances: [{role: all, gpu: H100-SXM}, {role: all, gpu: H200-SXM}, {role: all, gpu: L4}]\n",
        )
        .unwrap();
        let e = crate::experiment::load_experiment_on(&exp, None, Some(profile), false).unwrap();
        let s = &e.scenarios[0];
        assert_eq!(
            s.basis,
            [
                Basis::Measured,
                Basis::SameArchitecture,
                Basis::OtherArchitecture
            ]
        );
        assert_eq!(s.efficiency[1], f.efficiency);
        assert_eq!(s.efficiency[2], f.efficiency);
        let run =
            crate::engine::simulate(s, &mut crate::records::MemorySink::default(), &mut |_| {})
                .unwrap();
        assert_eq!(run.summary.prediction_basis, "other-arch");
        assert_eq!(run.summary.prediction_error_pct, Some(21.6));
    }

    #[test]
    fn basis_follows_where_the_model_came_from() {
        let h200 = gpu_by_name("H200-SXM").unwrap();
        let l4 = gpu_by_name("L4").unwrap();
        assert_eq!(Basis::of(h200, 1, true, None), Basis::Measured);
        assert_eq!(Basis::of(h200, 2, true, None), Basis::SameArchitecture);
        assert_eq!(Basis::of(h200, 1, false, None), Basis::SameArchitecture);
        assert_eq!(Basis::of(l4, 1, false, None), Basis::OtherArchitecture);
        assert!(overlap(100.0, 12.0, 120.0, 12.0));
        assert!(!overlap(100.0, 2.3, 110.0, 2.3));
    }
}
