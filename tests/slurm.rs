//! `hetsim sweep` through a real Slurm (Debian's slurm-wlm): the test configures a one-node
//! cluster in a temporary directory (its own munge key and socket, state and spool directories,
//! ports), starts munged, slurmctld and slurmd as root, submits the shipped
//! `deploy/slurm/sweep.sbatch` as a 64-task job array running this build's binary, waits, merges,
//! and checks the merged table equals a single-process run byte for byte. Then it runs the sweep
//! as one array task, kills that task with SIGKILL through `scancel` once it has listed a part,
//! submits it again, and checks the resumed table is the same. Last, `deploy/slurm/plan.sbatch`
//! runs a small plan as an 8-task array, whose merged answer must be the single process's. The
//! daemons are stopped at the end (by the pids they wrote), whatever happens.
//!
//! Sandbox settings: no cgroups (`proctrack/linuxproc`, `task/none`), no accounting, so it runs
//! in a container. Without slurmctld on PATH, or not as root, the test says "skipped" and passes,
//! unless `HETSIM_REQUIRE_SLURM=1` (CI sets it). `HETSIM_SLURM_SWEEP` names another sweep file
//! (experiments/sweeps/paper-grid.yaml for the full-size run).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CI_SWEEP: &str = "tests/fixtures/sweep-ci.yaml";
const SBATCH: &str = "deploy/slurm/sweep.sbatch";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ok(what: &str, o: Output) -> String {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
        || Path::new("/usr/sbin").join(name).is_file()
}

/// Whether Slurm can be started here; panics where it must (`HETSIM_REQUIRE_SLURM=1`).
fn slurm_available() -> bool {
    let uid = Command::new("id").arg("-u").output().ok();
    let is_root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing: Vec<&str> = [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scancel",
    ]
    .into_iter()
    .filter(|b| !on_path(b))
    .collect();
    let why = match (is_root, missing.is_empty()) {
        (true, true) => return true,
        (false, _) => "the test starts slurmd as root; run it as root".to_string(),
        (_, false) => format!(
            "{} not found: apt-get install slurm-wlm munge",
            missing.join(", ")
        ),
    };
    if std::env::var("HETSIM_REQUIRE_SLURM").as_deref() == Ok("1") {
        panic!("HETSIM_REQUIRE_SLURM=1 but {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// A one-node Slurm cluster of this machine, stopped on drop.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

fn sbin(name: &str) -> PathBuf {
    let p = Path::new("/usr/sbin").join(name);
    if p.is_file() { p } else { PathBuf::from(name) }
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let munge = dir.join("munge");
        for d in ["state", "spool", "log", "munge"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&munge, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = munge.join("munge.key");
        // Any 1 KiB of bytes is a key; it need not be secret for a cluster that lives one test.
        let bytes: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&key, bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        let socket = munge.join("munge.socket");
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            conf: dir.join("slurm.conf"),
        };
        ok(
            "munged",
            Command::new(sbin("munged"))
                .arg("--force")
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
                .arg(format!("--log-file={}", munge.join("munged.log").display()))
                .arg(format!("--seed-file={}", munge.join("seed").display()))
                .output()
                .unwrap(),
        );
        let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let mem_mb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            / 1024
            * 9
            / 10;
        // Ports of our own, so a system Slurm or a concurrent run of this test is not disturbed.
        let port = 20_000 + (std::process::id() % 20_000) as u16 * 2;
        let d = dir.display();
        let conf = format!(
            "ClusterName=hetsimtest\n\
             SlurmctldHost={host}\n\
             SlurmctldPort={port}\n\
             SlurmdPort={}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             AuthType=auth/munge\n\
             CredType=cred/munge\n\
             AuthInfo=socket={}\n\
             StateSaveLocation={d}/state\n\
             SlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\n\
             SlurmdLogFile={d}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             JobCompType=jobcomp/none\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\n\
             SchedulerType=sched/backfill\n\
             SchedulerParameters=sched_min_interval=0,bf_interval=1,batch_sched_delay=0\n\
             MpiDefault=none\n\
             ReturnToService=2\n\
             MaxArraySize=100001\n\
             NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN\n\
             PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            port + 1,
            socket.display()
        );
        std::fs::write(&cluster.conf, conf).unwrap();
        for daemon in ["slurmctld", "slurmd"] {
            ok(
                daemon,
                Command::new(sbin(daemon))
                    .arg("-f")
                    .arg(&cluster.conf)
                    .env("SLURM_CONF", &cluster.conf)
                    .output()
                    .unwrap(),
            );
        }
        let started = Instant::now();
        loop {
            let o = cluster
                .client("sinfo")
                .args(["-h", "-o", "%t"])
                .output()
                .unwrap();
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if state == "idle" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the node did not come up (state `{state}`): {}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    fn client(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("SLURM_CONF", &self.conf).current_dir(root());
        c
    }

    fn logs(&self) -> String {
        ["slurmctld.log", "slurmd.log"]
            .iter()
            .map(|f| {
                let t = std::fs::read_to_string(self.dir.join("log").join(f)).unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                format!(
                    "--- {f}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Submits the shipped sweep script as an array of `tasks`; returns the job id.
    fn submit(&self, tasks: u64, sweep: &Path, out: &Path, extra: &[&str]) -> String {
        self.submit_script(SBATCH, tasks, sweep, out, extra)
    }

    /// Submits shipped sbatch `script` as an array of `tasks` with its two arguments.
    fn submit_script(
        &self,
        script: &str,
        tasks: u64,
        file: &Path,
        out: &Path,
        extra: &[&str],
    ) -> String {
        let o = self
            .client("sbatch")
            .arg("--parsable")
            .arg(format!("--array=0-{}", tasks - 1))
            .arg(format!(
                "--output={}/log/task-%A_%a.out",
                self.dir.display()
            ))
            .arg(format!(
                "--export=ALL,HETSIM={}",
                env!("CARGO_BIN_EXE_hetsim")
            ))
            .arg(script)
            .arg(file)
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        ok("sbatch", o).trim().to_string()
    }

    /// Waits until job `id` has left the queue.
    fn wait(&self, id: &str, limit: Duration) {
        let started = Instant::now();
        loop {
            let o = self
                .client("squeue")
                .args(["-h", "-j", id])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&o.stdout).trim().is_empty() {
                return;
            }
            if started.elapsed() > limit {
                let _ = self.client("scancel").arg(id).status();
                panic!("job {id} still queued after {limit:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Task logs of job `id` that do not end in the sweep shard's summary line.
    fn failed_tasks(&self, id: &str) -> Vec<String> {
        self.failed_tasks_by(id, " scenarios: ")
    }

    /// Task logs of job `id` without `done` (the shard's summary line) or with an error.
    fn failed_tasks_by(&self, id: &str, done: &str) -> Vec<String> {
        let mut bad = Vec::new();
        for e in std::fs::read_dir(self.dir.join("log")).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(&format!("task-{id}_")) {
                let t = std::fs::read_to_string(&p).unwrap();
                if !t.contains(done) || t.contains("error:") {
                    bad.push(format!("{name}: {t}"));
                }
            }
        }
        bad
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pid_file in ["slurmd.pid", "slurmctld.pid", "munge/munged.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(pid_file)) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        // slurmctld saves its state on the way down; give the daemons a moment before the
        // temporary directory goes.
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn hetsim(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    ok(&format!("hetsim {args:?}"), o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn parts_listed(out: &Path) -> usize {
    let Some(sweep) = std::fs::read_dir(out).ok().and_then(|mut d| d.next()) else {
        return 0;
    };
    std::fs::read_to_string(sweep.unwrap().path().join("shard=0/manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map_or(0, |m| m["parts"].as_array().unwrap().len())
}

/// `deploy/slurm/plan.sbatch` as an 8-task array over a small plan: the merged answer is the
/// single process's, byte for byte.
fn plan_through_slurm(cluster: &Cluster, dir: &Path, limit: Duration) {
    let plan = root().join("tests/fixtures/plan-shards.yaml");
    let shards = dir.join("plan-shards");
    let job = cluster.submit_script("deploy/slurm/plan.sbatch", 8, &plan, &shards, &[]);
    cluster.wait(&job, limit);
    let bad = cluster.failed_tasks_by(&job, "candidates simulated");
    assert!(bad.is_empty(), "plan tasks failed:\n{}", bad.join("\n"));
    let (merged, one) = (
        dir.join("plan-merged.parquet"),
        dir.join("plan-one.parquet"),
    );
    hetsim(&["plan", s(&plan), "--merge", s(&shards), "--out", s(&merged)]);
    hetsim(&["plan", s(&plan), "--out", s(&one)]);
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&one).unwrap(),
        "the plan merged from the Slurm array differs from the single process's"
    );
    println!(
        "plan {}: 8 shards through Slurm merge to the single process's answer",
        plan.display()
    );
}

fn sweep_through_slurm(sweep: &Path, shards: u64, limit: Duration) {
    if !slurm_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&t.path().join("slurm"));

    let started = Instant::now();
    let out = t.path().join("array");
    let job = cluster.submit(shards, sweep, &out, &[]);
    cluster.wait(&job, limit);
    let array_s = started.elapsed().as_secs_f64();
    let bad = cluster.failed_tasks(&job);
    assert!(bad.is_empty(), "array tasks failed:\n{}", bad.join("\n"));
    let status = hetsim(&["sweep", "status", s(&out)]);
    assert!(
        status.contains("complete") && !status.contains("incomplete"),
        "{status}"
    );
    let array_table = t.path().join("array.parquet");
    let merged = hetsim(&["sweep", "merge", s(&out), "--out", s(&array_table)]);

    let started = Instant::now();
    let one = t.path().join("one");
    hetsim(&["sweep", s(sweep), "--out", s(&one), "--shard", "0/1"]);
    let one_s = started.elapsed().as_secs_f64();
    let one_table = t.path().join("one.parquet");
    hetsim(&["sweep", "merge", s(&one), "--out", s(&one_table)]);
    let same = std::fs::read(&array_table).unwrap() == std::fs::read(&one_table).unwrap();
    println!(
        "{}: {} shards through Slurm in {array_s:.1} s, one process in {one_s:.1} s; {}; \
         merged tables byte-identical: {same}",
        sweep.display(),
        shards,
        merged.trim()
    );
    assert!(
        same,
        "the array's merged table differs from the single process's"
    );

    // One task running the whole sweep, killed (SIGKILL) once it has listed a part, then
    // submitted again: it resumes, and the table is the same.
    let resumed = t.path().join("killed");
    let job = cluster.submit(
        1,
        sweep,
        &resumed,
        &["--part-scenarios", "16", "--threads", "1"],
    );
    let started = Instant::now();
    while parts_listed(&resumed) == 0 {
        assert!(
            started.elapsed() < limit,
            "no part listed\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(
        "scancel",
        cluster
            .client("scancel")
            .args(["--signal=KILL", "--full", &job])
            .output()
            .unwrap(),
    );
    cluster.wait(&job, limit);
    let status = hetsim(&["sweep", "status", s(&resumed)]);
    assert!(
        status.contains("incomplete: shards 0"),
        "killed mid-way: {status}"
    );
    let job = cluster.submit(1, sweep, &resumed, &[]);
    cluster.wait(&job, limit);
    let resumed_table = t.path().join("resumed.parquet");
    hetsim(&["sweep", "merge", s(&resumed), "--out", s(&resumed_table)]);
    assert_eq!(
        std::fs::read(&resumed_table).unwrap(),
        std::fs::read(&one_table).unwrap(),
        "the killed and resumed task's table differs from the single process's"
    );
    plan_through_slurm(&cluster, t.path(), limit);
    drop(cluster);
}

/// The CI sweep (2,048 scenarios) as 64 shards, then the plan. `HETSIM_SLURM_SWEEP` names
/// another sweep file, with an hour to finish: the full-size run is
/// `HETSIM_SLURM_SWEEP=experiments/sweeps/paper-grid.yaml cargo test --release --test slurm -- --nocapture`
/// (100,000 scenarios; docs/sweep.md has its numbers).
#[test]
fn a_sweep_as_a_slurm_job_array_merges_to_the_single_process_table() {
    let (sweep, limit) = match std::env::var_os("HETSIM_SLURM_SWEEP") {
        Some(f) => (root().join(PathBuf::from(f)), Duration::from_secs(3600)),
        None => (root().join(CI_SWEEP), Duration::from_secs(240)),
    };
    sweep_through_slurm(&sweep, 64, limit);
}
