//! Plan files (`hetsim plan`): validated or refused, and the candidates of an accepted plan
//! counted in closed form (enumerated too when few).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/nonexistent-fuzz-dir/plan.yaml");
    if let Ok(plan) = hetsim_sim::experiment::parse_plan(text, path, None) {
        let n = hetsim_sim::plan::candidate_count(&plan);
        if n <= 500 {
            let listed = hetsim_sim::plan::enumerate(&plan).map(|c| c.len() as u64);
            assert!(listed.is_ok_and(|l| l <= n), "{n} counted");
        }
    }
});
