//! The planner's and the sweep's throughput per core: `cargo bench -p hetsim-sim --bench sweep`
//! prints scenarios per second on one thread, closed form (the planner's screening of every
//! candidate of experiments/plans/paper-budget.yaml) and simulated (the planner's survivors at the
//! offered rate; a shard of experiments/sweeps/paper-grid.yaml and of tests/fixtures/sweep-ci.yaml,
//! parquet parts included). docs/sweep.md records the numbers.

use std::path::Path;
use std::time::Instant;

use hetsim_sim::sweep::{Shard, load_sweep, run_shard};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one thread");
    let plan =
        hetsim_sim::experiment::load_plan(&root.join("experiments/plans/paper-budget.yaml"), None)
            .expect("valid plan");
    let r = one
        .install(|| hetsim_sim::plan::search(&plan, false, &|_, _| {}))
        .expect("plan runs");
    println!(
        "{:<58} {:>9} {:>9} {:>12}",
        "on one thread", "scenarios", "wall s", "scenarios/s"
    );
    let row = |what: &str, n: usize, s: f64| {
        println!("{what:<58} {n:>9} {s:>9.3} {:>12.1}", n as f64 / s);
    };
    row(
        "plan paper-budget: closed form (every candidate)",
        r.candidates,
        r.screen_seconds,
    );
    row(
        "plan paper-budget: simulated (survivors, 600 requests)",
        r.simulated,
        r.simulate_seconds,
    );
    for (file, shards, what) in [
        (
            "experiments/sweeps/paper-grid.yaml",
            50,
            "sweep paper-grid: shard 0/50 (60 requests)",
        ),
        (
            "tests/fixtures/sweep-ci.yaml",
            4,
            "sweep sweep-ci: shard 0/4 (20 requests)",
        ),
    ] {
        let sweep = load_sweep(&root.join(file), None, false).expect("valid sweep");
        let out = tempfile::tempdir().expect("temp dir");
        let shard = Shard::new(0, shards).expect("a shard");
        let t = Instant::now();
        let run = run_shard(&sweep, out.path(), shard, 256, 1, &mut |_, _| {}).expect("runs");
        row(what, run.assigned as usize, t.elapsed().as_secs_f64());
    }
}
