//! Bounded work: what a command is about to do, estimated before it starts and refused past a
//! limit unless the user says `--allow-large`, so a typo (`requests: 1000000000000`) costs an
//! error, not hours or the machine's memory.

use crate::error::InputError;

/// Scenarios of one experiment after matrix expansion.
pub const MAX_SCENARIOS: u64 = 1_000;
/// Scenarios a sweep file expands to: a sweep is meant for a cluster (`--shard`), so its limit
/// is only a guard against a typo's product.
pub const MAX_SWEEP_SCENARIOS: u64 = 10_000_000;
/// Requests simulated by one command, over all its scenarios.
pub const MAX_REQUESTS: u64 = 10_000_000;
/// Cluster compositions `hetsim plan` enumerates.
pub const MAX_PLAN_CANDIDATES: u64 = 50_000;
/// Table cells `hetsim transfer` computes.
pub const MAX_TRANSFER_CELLS: u64 = 100_000;

/// Refuses `estimate` `what`s (e.g. "requests") past `limit` unless `allow_large`.
pub fn within(what: &str, estimate: u64, limit: u64, allow_large: bool) -> Result<(), InputError> {
    if estimate <= limit || allow_large {
        return Ok(());
    }
    Err(InputError::new(format!(
        "this would compute {estimate} {what}, over the limit of {limit}: it may take hours and much \
         memory; make it smaller, or pass --allow-large to run it anyway"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_unless_allowed() {
        assert!(within("requests", 10, 10, false).is_ok());
        let e = within("requests", 11, 10, false).unwrap_err().to_string();
        assert!(e.contains("11 requests, over the limit of 10") && e.contains("--allow-large"));
        assert!(within("requests", u64::MAX, 10, true).is_ok());
    }
}
