//! hetsim's simulator: everything needed to turn an experiment file into result rows, and no GPU
//! code. See ARCHITECTURE.md at the repository root for the map.

pub mod bench_serve;
pub mod bounds;
pub mod capacity;
pub mod catalog;
pub mod cluster;
pub mod compare;
pub mod cost;
pub mod costmodel;
pub mod engine;
pub mod engine_spec;
pub mod error;
pub mod experiment;
pub mod fit;
pub mod headroom;
pub mod input;
pub mod kv;
pub mod measured;
pub mod network;
pub mod output;
pub mod perf;
pub mod plan;
pub mod profile;
pub mod publish;
pub mod records;
pub mod run;
pub mod scheduler;
pub mod stats;
pub mod sweep;
pub mod table;
pub mod timeline;
pub mod trace;
pub mod transfer;
pub mod trust;
pub mod work;
pub mod workload;
