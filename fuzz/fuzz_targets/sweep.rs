//! Sweep files (`hetsim sweep`): validated or refused; an accepted sweep's first scenarios expand
//! to the same point (tree, hash, seed) every time, each a valid index.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/nonexistent-fuzz-dir/sweep.yaml");
    if let Ok(sweep) = hetsim_sim::sweep::parse_sweep(text, path, None, false) {
        for i in 0..sweep.scenarios.min(16) {
            let (Ok(a), Ok(b)) = (sweep.point(i), sweep.point(i)) else {
                continue;
            };
            assert_eq!((a.hash, a.seed, &a.tree), (b.hash, b.seed, &b.tree));
        }
    }
});
