//! Simulator speed: `cargo bench -p hetsim-sim --bench simulate` prints requests simulated per
//! second of wall time for each strategy of the pcie experiment at a loaded rate, with 50,000
//! requests each (rows go to a null sink: this measures the engine, not parquet).

use std::path::Path;
use std::time::Instant;

use hetsim_sim::engine::simulate;
use hetsim_sim::experiment::load_experiment;
use hetsim_sim::records::NullSink;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("experiments/pcie.yaml")).expect("pcie.yaml");
    let text = text.replace("requests: 600", "requests: 50000").replace("rate: [4, 16, 32, 48]", "rate: [24]");
    let path = std::env::temp_dir().join("hetsim-bench-pcie.yaml");
    std::fs::write(&path, text).expect("temp file");
    let exp = load_experiment(&path, None).expect("valid experiment");
    println!("{:<36} {:>9} {:>9} {:>12} {:>14}", "scenario", "requests", "wall s", "requests/s", "sim s / wall s");
    for s in &exp.scenarios {
        let t = Instant::now();
        let run = simulate(s, &mut NullSink, &mut |_| {}).expect("runs");
        let wall = t.elapsed().as_secs_f64();
        println!(
            "{:<36} {:>9} {:>9.3} {:>12.0} {:>14.0}",
            s.name,
            run.summary.requests,
            wall,
            run.summary.requests as f64 / wall,
            run.summary.duration_s / wall
        );
    }
}
