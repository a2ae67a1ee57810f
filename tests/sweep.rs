//! `hetsim sweep` end to end on this machine: shards merge to the table one process writes, byte
//! for byte; a shard killed with SIGKILL mid-way resumes and changes nothing; the shard comes from
//! a job array's environment; bad input is exit code 2. (tests/slurm.rs runs the same sweep
//! through a real Slurm.)

mod common;

use common::{hetsim, ok, s};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SWEEP: &str = "tests/fixtures/sweep-ci.yaml";

/// The one shard=<i> directory of shard `i` under a sweep's --out.
fn shard_dir(out: &Path, i: u64) -> PathBuf {
    let sweep = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sweep=")
        })
        .unwrap();
    sweep.join(format!("shard={i}"))
}

fn parts_listed(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map_or(0, |m| m["parts"].as_array().unwrap().len())
}

#[test]
fn shards_merge_to_the_single_process_table_and_a_killed_shard_resumes() {
    let t = tempfile::tempdir().unwrap();
    let one = t.path().join("one");
    ok(hetsim(
        &["sweep", SWEEP, "--out", s(&one), "--shard", "0/1"],
        &[],
    ));
    let one_table = t.path().join("one.parquet");
    let said = ok(hetsim(
        &["sweep", "merge", s(&one), "--out", s(&one_table)],
        &[],
    ));
    assert!(said.contains("(2048 scenarios)"), "{said}");

    let four = t.path().join("four");
    for i in [0, 1, 3] {
        ok(hetsim(
            &[
                "sweep",
                SWEEP,
                "--out",
                s(&four),
                "--shard",
                &format!("{i}/4"),
            ],
            &[],
        ));
    }
    let st = ok(hetsim(&["sweep", "status", s(&four)], &[]));
    assert!(
        st.contains("1536 of 2048 scenarios done") && st.contains("incomplete: shards 2"),
        "{st}"
    );
    // Shard 2 killed (SIGKILL) once it has listed a part, then run again.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args([
            "sweep",
            SWEEP,
            "--out",
            s(&four),
            "--shard",
            "2/4",
            "--part-scenarios",
            "8",
            "--threads",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while parts_listed(&shard_dir(&four, 2)) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no part listed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let st = ok(hetsim(&["sweep", "status", s(&four)], &[]));
    assert!(st.contains("partial"), "killed mid-way: {st}");
    let e = hetsim(
        &[
            "sweep",
            "merge",
            s(&four),
            "--out",
            s(&t.path().join("x.parquet")),
        ],
        &[],
    );
    assert_eq!(e.status.code(), Some(2));
    let again = ok(hetsim(
        &["sweep", SWEEP, "--out", s(&four), "--shard", "2/4"],
        &[],
    ));
    assert!(!again.contains(" 0 done before"), "{again}");
    let st = ok(hetsim(&["sweep", "status", s(&four)], &[]));
    assert!(
        st.contains("complete") && !st.contains("incomplete"),
        "{st}"
    );
    let four_table = t.path().join("four.parquet");
    ok(hetsim(
        &["sweep", "merge", s(&four), "--out", s(&four_table)],
        &[],
    ));
    assert_eq!(
        std::fs::read(&one_table).unwrap(),
        std::fs::read(&four_table).unwrap(),
        "four shards, one killed and resumed, merge to the single process's table byte for byte"
    );
}

#[test]
fn the_shard_comes_from_the_job_arrays_environment() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "5"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "1024"),
        ("SLURM_ARRAY_TASK_COUNT", "1024"),
        ("SLURM_CPUS_PER_TASK", "1"),
    ];
    let o = hetsim(&["sweep", SWEEP, "--out", s(&out)], &slurm);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ok(o);
    assert!(
        err.contains("shard 4/1024 (Slurm job array): 2 of them, 1 threads"),
        "{err}"
    );
    let o = hetsim(
        &["sweep", SWEEP, "--out", s(&out)],
        &[("JOB_COMPLETION_INDEX", "3")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give --shards N"));
    let o = hetsim(
        &["sweep", SWEEP, "--out", s(&out), "--shards", "512"],
        &[("JOB_COMPLETION_INDEX", "3")],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    // This directory's sweep ran as 1024 shards: another count is refused, not mixed in.
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("started as 1024 shards"), "{err}");
}

#[test]
fn bad_sweep_input_is_exit_code_2_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(SWEEP)).unwrap();
    let bad = t.path().join("bad.yaml");
    std::fs::write(
        &bad,
        text.replace("values: [1, 2, 3,", "values: [1, two, 3,"),
    )
    .unwrap();
    let o = hetsim(&["sweep", s(&bad), "--out", s(&t.path().join("out"))], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("axes[1] `rate`"),
        "{err}"
    );
    for args in [
        vec!["sweep", SWEEP, "--out", "x", "--shard", "4/4"],
        vec!["sweep", SWEEP, "--out", "x", "--part-scenarios", "0"],
        vec!["sweep", "status", s(t.path())],
    ] {
        let o = hetsim(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn the_kubernetes_manifest_runs_one_shard_per_completion_index() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/sweep-indexed-job.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let completions = lines
        .iter()
        .find_map(|l| l.strip_prefix("completions: "))
        .expect("completions");
    let shards = lines
        .iter()
        .position(|l| *l == "- --shards")
        .map(|i| lines[i + 1].trim_start_matches("- ").trim_matches('"'))
        .expect("--shards");
    assert_eq!(
        completions, shards,
        "--shards must be the Job's completions"
    );
    assert!(lines.contains(&"completionMode: Indexed"));
    // The Kubernetes schema, where the validator is installed (pip install kubernetes-validate).
    match Command::new("kubernetes-validate")
        .args(["-k", "1.31.0", "--strict"])
        .arg(&path)
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => eprintln!(
            "skipped the schema check: pip install kubernetes-validate to validate the manifest"
        ),
    }
}
