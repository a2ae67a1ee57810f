//! Crash safety of the binary: `kill -9` and SIGINT at random moments of `run`, `plan` and
//! `analyze` never leave a partial result set, SIGINT leaves no temporary file at all, and a
//! re-run afterwards succeeds and sweeps what a killed run left. A full disk and a read-only
//! output directory are exit code 1 naming the path.
//!
//! The kill moments come from a seed printed on failure; `HETSIM_SEED=N` replays one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

fn hetsim() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hetsim"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run_to_end(args: &[&str]) -> Output {
    hetsim()
        .args(args)
        .output()
        .expect("the hetsim binary runs")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Moments to kill at: splitmix64 from a seed that is fresh each run unless `HETSIM_SEED` is set.
struct Moments(u64);

impl Moments {
    fn new(test: &str) -> Moments {
        let seed = std::env::var("HETSIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                t.as_nanos() as u64 ^ u64::from(std::process::id())
            });
        // Printed always: cargo shows it only for a failing test, which is when it matters.
        println!("{test}: HETSIM_SEED={seed}");
        Moments(seed)
    }

    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }

    /// A moment within a command that takes `typical`: half anywhere, half near its end, where
    /// the tables are closed and the directory is published.
    fn within(&mut self, typical: Duration) -> Duration {
        let u = self.unit();
        let share = if self.unit() < 0.5 {
            u * 1.05
        } else {
            0.8 + 0.25 * u
        };
        typical.mul_f64(share)
    }
}

#[derive(Clone, Copy, Debug)]
enum Signal {
    Kill,
    Int,
}

/// Starts `args`, sends `signal` after `after` (unless it finished), and waits for it.
fn interrupt(args: &[&str], after: Duration, signal: Signal) -> (u32, ExitStatus) {
    let mut child: Child = hetsim()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the hetsim binary starts");
    let pid = child.id();
    let start = Instant::now();
    while start.elapsed() < after {
        if let Some(status) = child.try_wait().unwrap() {
            return (pid, status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let name = match signal {
        Signal::Kill => "KILL",
        Signal::Int => "INT",
    };
    // `kill` of a process that just exited fails harmlessly: the status below says which.
    let _ = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status();
    (pid, child.wait().unwrap())
}

/// What a published directory's manifest says it holds, checked against what it holds.
fn assert_complete_dir(dir: &Path, format: &str) {
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .unwrap_or_else(|e| panic!("{}: a directory without manifest: {e}", dir.display()));
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["format"], format, "{}", dir.display());
    let listed: BTreeSet<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = names(dir)
        .into_iter()
        // `analyze` writes its default output inside the results it read.
        .filter(|n| n != "manifest.json" && n != "analysis")
        .collect();
    assert_eq!(listed, present, "{}: manifest against files", dir.display());
    if format == "hetsim-results/1" {
        for t in ["summary", "requests", "transfers", "instances", "links"] {
            assert!(listed.contains(&format!("{t}.parquet")), "{t}");
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The hidden entries in `parent` (staging directories, temporary files).
fn hidden(parent: &Path) -> Vec<String> {
    names(parent)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// After `signal` ended process `pid`: the target is absent or complete (`check`), and only the
/// killed process's hidden entries remain — none at all after SIGINT, which cleans up.
fn assert_whole_or_absent(
    parent: &Path,
    target: &Path,
    pid: u32,
    signal: Signal,
    status: ExitStatus,
    check: &dyn Fn(&Path),
) {
    use std::os::unix::process::ExitStatusExt;
    if target.exists() {
        check(target);
    }
    let left = hidden(parent);
    match signal {
        Signal::Kill => {
            let mine = format!("-{pid}");
            assert!(left.iter().all(|n| n.ends_with(&mine)), "{left:?}");
        }
        Signal::Int => {
            // 130 from the handler; 0 if it finished first; SIGINT itself if the signal came
            // before the handler was installed.
            assert!(
                matches!(status.code(), Some(130) | Some(0)) || status.signal() == Some(2),
                "{status:?}"
            );
            assert!(left.is_empty(), "SIGINT left {left:?}");
        }
    }
}

/// Kills `args` (writing `target` in `parent`) at random moments, two SIGKILLs to one SIGINT;
/// after each, a re-run succeeds and leaves the target complete (`check`) and nothing hidden.
fn check_kills(
    test: &str,
    parent: &Path,
    target: &Path,
    args: &[&str],
    tries: usize,
    check: &dyn Fn(&Path),
) {
    let mut moments = Moments::new(test);
    // One run to the end: how long it takes, and a previous result for the killed runs to replace.
    let start = Instant::now();
    ok(&run_to_end(args));
    let typical = start.elapsed();
    for i in 0..tries {
        let signal = if i % 3 == 2 {
            Signal::Int
        } else {
            Signal::Kill
        };
        let after = moments.within(typical);
        let (pid, status) = interrupt(args, after, signal);
        let at = format!("{test}: {signal:?} after {after:?} (typical {typical:?})");
        println!("{at}: {status:?}");
        assert_whole_or_absent(parent, target, pid, signal, status, check);
        ok(&run_to_end(args));
        check(target);
        assert!(hidden(parent).is_empty(), "{at}: {:?}", hidden(parent));
    }
}

#[test]
fn killed_runs_leave_a_whole_result_or_none() {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let args = [
        "run",
        "experiments/pcie.yaml",
        "--out",
        out.to_str().unwrap(),
    ];
    let check = |p: &Path| assert_complete_dir(p, "hetsim-results/1");
    check_kills("run", parent.path(), &out, &args, 6, &check);
}

#[test]
fn killed_plans_leave_a_whole_table_or_none() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("plan.parquet");
    let args = [
        "plan",
        "experiments/plans/paper-budget.yaml",
        "--out",
        out.to_str().unwrap(),
    ];
    let readable = |p: &Path| {
        let f = std::fs::File::open(p).unwrap();
        let r = SerializedFileReader::new(f).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(r.metadata().file_metadata().num_rows() > 0);
    };
    check_kills("plan", parent.path(), &out, &args, 3, &readable);
}

#[cfg(feature = "analysis")]
#[test]
fn killed_analyses_leave_a_whole_analysis_or_none() {
    let parent = tempfile::tempdir().unwrap();
    let res = parent.path().join("res");
    ok(&run_to_end(&[
        "run",
        "experiments/pcie.yaml",
        "--out",
        res.to_str().unwrap(),
    ]));
    let fig = parent.path().join("fig");
    let args = [
        "analyze",
        res.to_str().unwrap(),
        "--out",
        fig.to_str().unwrap(),
    ];
    let check = |p: &Path| assert_complete_dir(p, "hetsim-analysis/1");
    check_kills("analyze", parent.path(), &fig, &args, 5, &check);
    // The results it read are untouched.
    assert_complete_dir(&res, "hetsim-results/1");
}

#[test]
fn concurrent_runs_into_one_directory_leave_one_whole_result() {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let args = [
        "run",
        "experiments/pcie.yaml",
        "--out",
        out.to_str().unwrap(),
    ];
    let runs: Vec<Child> = (0..3)
        .map(|_| {
            hetsim()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<Option<i32>> = runs
        .into_iter()
        .map(|mut c| c.wait().unwrap().code())
        .collect();
    // Each sweeps beside the others' live staging directories without touching them; the last
    // rename wins, and one that finds another's result landing under it fails cleanly (exit 1).
    assert!(
        codes.iter().all(|c| matches!(c, Some(0) | Some(1))),
        "{codes:?}"
    );
    assert!(codes.contains(&Some(0)), "{codes:?}");
    assert_complete_dir(&out, "hetsim-results/1");
    assert!(
        hidden(parent.path()).is_empty(),
        "{:?}",
        hidden(parent.path())
    );
}

/// A small tmpfs mounted over a temporary directory, unmounted when dropped. Mounting needs root
/// (CI and the development machines run as root); elsewhere the test says so and does less.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs", at.to_str().unwrap()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(at.to_path_buf()))
    }

    fn remount(&self, options: &str) {
        let s = Command::new("mount")
            .args([
                "-o",
                &format!("remount,{options}"),
                self.0.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Exit code 1, the path and the system's reason in the message, no panic, nothing left.
fn assert_output_failure(o: &Output, path: &Path, reason: &str, dir: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains(reason), "{err}");
    assert!(names(dir).is_empty(), "{:?}", names(dir));
}

#[test]
fn a_full_disk_or_a_read_only_directory_is_exit_1_naming_the_path() {
    let root = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(root.path(), "size=256k") else {
        println!("cannot mount a tmpfs (not root?): disk-full and read-only cases not run");
        return;
    };
    let out = root.path().join("out");
    let o = run_to_end(&[
        "run",
        "experiments/pcie.yaml",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_output_failure(&o, root.path(), "No space left on device", root.path());

    disk.remount("ro");
    let o = run_to_end(&[
        "run",
        "experiments/pcie.yaml",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_output_failure(&o, &out, "Read-only file system", root.path());
    let table = root.path().join("cuts.csv");
    let o = run_to_end(&[
        "transfer",
        "llava-1.5-7b",
        "--format",
        "csv",
        "--out",
        table.to_str().unwrap(),
    ]);
    assert_output_failure(&o, &table, "Read-only file system", root.path());
    #[cfg(feature = "analysis")]
    {
        let scratch = tempfile::tempdir().unwrap();
        let res = scratch.path().join("res");
        ok(&run_to_end(&[
            "run",
            "experiments/trace-replay.yaml",
            "--out",
            res.to_str().unwrap(),
        ]));
        let fig = root.path().join("fig");
        let o = run_to_end(&[
            "analyze",
            res.to_str().unwrap(),
            "--out",
            fig.to_str().unwrap(),
        ]);
        assert_output_failure(&o, &fig, "Read-only file system", root.path());
    }
}
