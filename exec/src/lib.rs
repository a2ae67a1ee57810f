//! hetsim's GPU harness: it measures real GPUs so the simulator can be calibrated and checked.
//!
//! CUDA is loaded at run time (cudarc, `dynamic-loading`): the crate builds and its tests run
//! on machines without CUDA, where every GPU entry point returns `Error::NoDriver`.
//!
//! Three parts, each using only the ones before it:
//!
//! * [`cuda`]: the CUDA layer (devices, buffers, streams, kernels, cuBLASLt, staged copies).
//!   Knows no model and no measurement.
//! * [`serve`]: the LLaVA model on our kernels, the scheduler and engine that serve it, the
//!   paged KV layout, trace replay, selftest. Uses `cuda`.
//! * [`measure`]: probes, calibrate, bench (phase tables), transfer validation, reports. Uses
//!   `cuda`, and `serve`'s model, engine and KV layout for phase timing and real KV transfers.
//!
//! Beside them: [`cli`] (clap arguments and entry points for the `hetsim` binary), and the leaf
//! helpers every part may use: [`error`], [`stats`] (medians and fits of timings), [`util`].

pub mod cli;
pub mod cuda;
pub mod error;
pub mod measure;
/// The hardware profile type is the simulator's (`hetsim_sim::profile`): calibrate writes what
/// `hetsim run` reads.
pub use hetsim_sim::profile;
pub mod serve;
pub mod stats;
pub mod util;

pub use error::{Error, Result};

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file under `dir` with its text.
    fn sources(dir: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(sources(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
        out
    }

    #[test]
    fn each_part_uses_only_the_parts_before_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for (part, banned) in [
            ("cuda", &["crate::serve", "crate::measure"][..]),
            ("serve", &["crate::measure"][..]),
        ] {
            for (file, text) in sources(&src.join(part)) {
                for b in banned {
                    assert!(!text.contains(b), "{file} uses {b}");
                }
            }
        }
    }
}
