//! `hetsim plan` as shards: each shard simulates its share of the survivors into a folder, and
//! the merge answers what one process does — the same candidates table byte for byte and the
//! same printed front, best plan and notes. A shard already written is not run again, a damaged
//! one is; a missing shard or one of another plan is refused with exit code 2.

mod common;

use common::{hetsim, ok, s};
use std::process::Output;

const PLAN: &str = "tests/fixtures/plan-shards.yaml";

fn refused(o: Output) -> String {
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The printed answer without its first line (timings or where the shards were) and the
/// `wrote …` line.
fn answer(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("wrote "))
        .collect()
}

#[test]
fn shards_merge_to_the_single_process_plan() {
    let t = tempfile::tempdir().unwrap();
    let (one, merged, dir) = (
        t.path().join("one.parquet"),
        t.path().join("merged.parquet"),
        t.path().join("shards"),
    );
    let single = ok(hetsim(&["plan", PLAN, "--out", s(&one)], &[]));

    // Shards 0 and 1 by flag, shard 2 from a Slurm job array's environment.
    for i in 0..2 {
        let out = ok(hetsim(
            &[
                "plan",
                PLAN,
                "--shard",
                &format!("{i}/3"),
                "--shard-out",
                s(&dir),
            ],
            &[],
        ));
        assert!(out.contains("candidates simulated"), "{out}");
    }
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ];
    let out = ok(hetsim(&["plan", PLAN, "--shard-out", s(&dir)], &slurm));
    assert!(out.contains("shard 2/3 (Slurm job array)"), "{out}");

    let from_shards = ok(hetsim(
        &["plan", PLAN, "--merge", s(&dir), "--out", s(&merged)],
        &[],
    ));
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(&merged).unwrap()
    );
    assert_eq!(answer(&single), answer(&from_shards));
    assert!(from_shards.contains("Pareto front"), "{from_shards}");

    // Written shards are not run again; a damaged one is.
    let again = ok(hetsim(
        &["plan", PLAN, "--shard", "1/3", "--shard-out", s(&dir)],
        &[],
    ));
    assert!(again.contains("already done"), "{again}");
    std::fs::write(dir.join("shard-1-of-3.parquet"), b"cut short by a kill").unwrap();
    let redone = ok(hetsim(
        &["plan", PLAN, "--shard", "1/3", "--shard-out", s(&dir)],
        &[],
    ));
    assert!(redone.contains("candidates simulated"), "{redone}");
    let again = ok(hetsim(
        &["plan", PLAN, "--merge", s(&dir), "--out", s(&merged)],
        &[],
    ));
    assert_eq!(answer(&again), answer(&single));
}

#[test]
fn a_missing_or_foreign_shard_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("shards");
    ok(hetsim(
        &["plan", PLAN, "--shard", "0/2", "--shard-out", s(&dir)],
        &[],
    ));
    let e = refused(hetsim(&["plan", PLAN, "--merge", s(&dir)], &[]));
    assert!(e.contains("shard(s) 1 of 2 are missing"), "{e}");
    // Shard 1 of the same plan with another seed: another plan.
    ok(hetsim(
        &[
            "plan",
            PLAN,
            "--seed",
            "9",
            "--shard",
            "1/2",
            "--shard-out",
            s(&dir),
        ],
        &[],
    ));
    let e = refused(hetsim(&["plan", PLAN, "--merge", s(&dir)], &[]));
    assert!(e.contains("written for another plan"), "{e}");
    let e = refused(hetsim(
        &["plan", PLAN, "--merge", s(&t.path().join("none"))],
        &[],
    ));
    assert!(e.contains("cannot read"), "{e}");
}
