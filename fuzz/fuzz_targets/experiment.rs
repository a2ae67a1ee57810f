//! Experiment YAML: any text is an experiment or an `InputError`, never a panic. Relative paths
//! inside resolve under a directory that does not exist, so the fuzzer reads no files of ours.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("/nonexistent-fuzz-dir/exp.yaml");
        let _ = hetsim_sim::experiment::parse_experiment(text, path, None);
    }
});
