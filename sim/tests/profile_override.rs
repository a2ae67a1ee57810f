//! A hardware profile given on the command line (`hetsim validate --profile`) replaces the one an
//! experiment file names, so a fresh calibration is checked against a shipped experiment without
//! editing it.

use std::path::{Path, PathBuf};

use hetsim_sim::experiment::{load_experiment, load_experiment_with_profile};

/// A file of the repository, from its root.
fn repo(f: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(f)
}

/// Launch overhead of every scenario's first instance, µs: the profile's measured one.
fn launch_us(exp: &hetsim_sim::experiment::Experiment) -> Vec<f64> {
    exp.scenarios
        .iter()
        .map(|s| s.efficiency[0].kernel_overhead_us)
        .collect()
}

#[test]
fn a_profile_given_replaces_the_files_profile() {
    let file = repo("experiments/validate-nvlink.yaml");
    // The file's profile: the 4×H200 calibration with the engine's phase table.
    let own = load_experiment(&file, None).unwrap();
    assert!(own.scenarios.iter().all(|s| s.measured_phases[0].is_some()));
    assert!(
        launch_us(&own).iter().all(|&us| us == 2.4289162),
        "{:?}",
        launch_us(&own)
    );
    // The 2×H200 calibration: links and compute, no phase table.
    let given = repo("profiles/h200x2-2026-11-21.yaml");
    let other = load_experiment_with_profile(&file, None, Some(&given)).unwrap();
    assert_eq!(other.scenarios.len(), own.scenarios.len());
    assert!(
        other
            .scenarios
            .iter()
            .all(|s| s.measured_phases[0].is_none())
    );
    assert!(
        launch_us(&other).iter().all(|&us| us == 2.8647156000000003),
        "{:?}",
        launch_us(&other)
    );
}

#[test]
fn a_missing_profile_names_the_option() {
    let file = repo("experiments/validate-nvlink.yaml");
    let e = load_experiment_with_profile(&file, None, Some(Path::new("no-such-profile.yaml")))
        .unwrap_err();
    assert!(
        e.message()
            .starts_with("--profile: cannot read profile no-such-profile.yaml"),
        "{e}"
    );
}
