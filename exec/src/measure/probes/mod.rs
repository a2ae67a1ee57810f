//! Probes: measured link and compute numbers. Every number comes from CUDA events (or, for
//! host-synchronous pageable copies, the host clock), after warm-up, as the median of repeats.

pub mod compute;
pub mod green;
pub mod link;
