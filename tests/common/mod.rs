//! What the tests of sharded runs (`tests/sweep.rs`, `tests/plan_shards.rs`) share: the binary
//! run from the repository's root, outside any job array unless a test gives one.

use std::path::Path;
use std::process::{Command, Output};

/// `hetsim ARGS` with `env` and none of the job-array variables this machine may have set.
pub fn hetsim(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_CPUS_PER_TASK")
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the hetsim binary runs")
}

/// Its standard output, once it has succeeded.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
