//! hetsim's simulator: everything needed to turn an experiment file into result rows, and no GPU
//! code. See ARCHITECTURE.md at the repository root for the map.

pub mod catalog;
pub mod cluster;
pub mod error;
pub mod kv;
pub mod network;
pub mod perf;
pub mod profile;
pub mod trace;
pub mod workload;
