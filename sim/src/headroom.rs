//! Whether a simulated deployment keeps up with its arrivals, and the highest arrival rate it
//! serves within its SLO, found by simulation (`hetsim run --capacity`, `cost`, `plan`).
//!
//! A run "meets its SLO" only when it also keeps up: p99 TTFT and TPOT under their targets say
//! nothing about a queue that grows without bound, and the summary's throughput counts the drain
//! after the last arrival, so a healthy deployment looks short of its offered rate. The rules
//! (docs/plan.md states them for users):
//!
//! - **Horizon**: at least [`MIN_REQUESTS`] requests, and an arrival window at least
//!   [`HORIZON_E2E`] times the median end-to-end latency of the middle third of the arrivals, so
//!   the first third (the warm-up from an empty cluster) is over before the judged window begins.
//! - **Throughput**: over the last two thirds of the arrival window (after the first third's
//!   warm-up, up to the last arrival, no drain), the requests finished fall short of the requests
//!   that arrived by more than three standard deviations of a Poisson count (`3 √A`): a cluster
//!   that keeps up finishes as many as arrive, up to the change in its backlog.
//! - **Latency growth**: the median end-to-end latency of the last third of the arrivals exceeds
//!   [`GROWTH`] times that of the middle third (a request never finished counts as infinitely late).

use crate::engine::{RunResult, simulate};
use crate::error::{Error, InputError};
use crate::experiment::Scenario;
use crate::records::{RecordSink, RequestRecord, RequestStatus, TransferRecord};
use crate::stats::nearest_rank;

/// Fewer requests cannot resolve a shortfall of a few tens of per cent.
pub const MIN_REQUESTS: u64 = 300;
/// Arrival window in units of the median end-to-end latency.
pub const HORIZON_E2E: f64 = 6.0;
/// Median end-to-end latency of the last third over the middle third beyond which it grows.
pub const GROWTH: f64 = 1.25;

/// Each request's arrival and finish (None: dropped or not done), in arrival order.
#[derive(Debug, Default)]
pub struct Timeline {
    requests: Vec<(f64, Option<f64>)>,
}

impl RecordSink for Timeline {
    fn request(&mut self, r: &RequestRecord) -> Result<(), Error> {
        let done = r.status == RequestStatus::Finished;
        self.requests
            .push((r.arrival_s, r.finish_s.filter(|_| done)));
        Ok(())
    }
    fn transfer(&mut self, _: &TransferRecord) -> Result<(), Error> {
        Ok(())
    }
}

impl Timeline {
    pub fn from_pairs(mut requests: Vec<(f64, Option<f64>)>) -> Timeline {
        requests.sort_by(|a, b| a.0.total_cmp(&b.0));
        Timeline { requests }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    KeepsUp,
    FallsBehind,
    LatencyGrows,
    /// Too few requests or too short a window to tell; this many would do.
    ShortHorizon {
        needed_requests: u64,
    },
}

/// How a run kept up with its arrivals, with the numbers behind the verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sustain {
    pub verdict: Verdict,
    /// Realised arrival rate over the judged window (the last two thirds of the arrivals).
    pub arrival_rps: f64,
    /// Requests finished per second over the same window.
    pub completion_rps: f64,
    /// Median end-to-end latency of the last third of the arrivals over the middle third's.
    pub e2e_growth: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    nearest_rank(&v, 0.5).unwrap_or(f64::NAN)
}

/// Judges a run's timeline by the rules in the module documentation.
pub fn sustain(t: &Timeline) -> Sustain {
    let mut rows = t.requests.clone();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = rows.len();
    let short = |needed: u64| Sustain {
        verdict: Verdict::ShortHorizon {
            needed_requests: needed,
        },
        arrival_rps: f64::NAN,
        completion_rps: f64::NAN,
        e2e_growth: f64::NAN,
    };
    if (n as u64) < MIN_REQUESTS {
        return short(MIN_REQUESTS);
    }
    let k = n / 3;
    let (t_first, t_k, t_last) = (rows[0].0, rows[k].0, rows[n - 1].0);
    let e2e = |r: &[(f64, Option<f64>)]| {
        median(
            r.iter()
                .map(|(a, f)| f.map_or(f64::INFINITY, |f| f - a))
                .collect(),
        )
    };
    let (middle, last) = (e2e(&rows[k..2 * k]), e2e(&rows[2 * k..]));
    let window = t_last - t_k;
    let arrived = (n - 1 - k) as f64;
    let finished = rows
        .iter()
        .filter_map(|r| r.1)
        .filter(|f| *f > t_k && *f <= t_last)
        .count() as f64;
    let sustain = |verdict| Sustain {
        verdict,
        arrival_rps: arrived / window,
        completion_rps: finished / window,
        e2e_growth: last / middle,
    };
    if arrived - finished > 3.0 * arrived.sqrt() || !middle.is_finite() {
        return sustain(Verdict::FallsBehind);
    }
    if last > GROWTH * middle {
        return sustain(Verdict::LatencyGrows);
    }
    let span = t_last - t_first;
    if span < HORIZON_E2E * middle {
        let needed = (n as f64 * HORIZON_E2E * middle / span.max(1e-9)).ceil() as u64;
        return Sustain {
            verdict: Verdict::ShortHorizon {
                needed_requests: needed,
            },
            ..sustain(Verdict::KeepsUp)
        };
    }
    sustain(Verdict::KeepsUp)
}

/// Why a simulated run does not serve its load within the SLO.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Miss {
    Drops,
    Ttft,
    Tpot,
    FallsBehind,
    LatencyGrows,
    ShortHorizon,
}

impl Miss {
    pub const ALL: [Miss; 6] = [
        Miss::Drops,
        Miss::Ttft,
        Miss::Tpot,
        Miss::FallsBehind,
        Miss::LatencyGrows,
        Miss::ShortHorizon,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Miss::Drops => "missed-drops",
            Miss::Ttft => "missed-ttft",
            Miss::Tpot => "missed-tpot",
            Miss::FallsBehind => "falls-behind",
            Miss::LatencyGrows => "latency-grows",
            Miss::ShortHorizon => "short-horizon",
        }
    }
}

/// A run within its SLO: nothing dropped, p99 TTFT and TPOT under the targets, and keeping up.
pub fn judge(s: &Scenario, run: &RunResult, keep: &Sustain) -> Result<(), Miss> {
    let sum = &run.summary;
    if sum.dropped > 0 {
        Err(Miss::Drops)
    } else if sum.ttft_p99_s.is_none_or(|t| t > s.slo.ttft_s) {
        Err(Miss::Ttft)
    } else if sum.tpot_p99_s.is_some_and(|t| t > s.slo.tpot_s) {
        Err(Miss::Tpot)
    } else {
        match keep.verdict {
            Verdict::KeepsUp => Ok(()),
            Verdict::FallsBehind => Err(Miss::FallsBehind),
            Verdict::LatencyGrows => Err(Miss::LatencyGrows),
            Verdict::ShortHorizon { .. } => Err(Miss::ShortHorizon),
        }
    }
}

/// A simulated run with its keep-up verdict.
pub struct Judged {
    pub run: RunResult,
    pub sustain: Sustain,
    pub verdict: Result<(), Miss>,
}

/// A run whose horizon is too short to judge is simulated again with up to this many times its
/// requests.
pub const HORIZON_EXTENSION: u64 = 10;

/// Simulates `s` and judges it; when the horizon is too short to tell, simulates once more with
/// as many requests as the rule asks for (at most `max_requests`).
pub fn simulate_judged(s: &Scenario, max_requests: u64) -> Result<Judged, Error> {
    let once = |s: &Scenario| -> Result<Judged, Error> {
        let mut t = Timeline::default();
        let run = simulate(s, &mut t, &mut |_| {})?;
        let sustain = sustain(&t);
        let verdict = judge(s, &run, &sustain);
        Ok(Judged {
            run,
            sustain,
            verdict,
        })
    };
    let first = once(s)?;
    if let Verdict::ShortHorizon { needed_requests } = first.sustain.verdict
        && s.workload.trace.is_none()
        && s.workload.requests.is_some_and(|r| r < needed_requests)
    {
        let mut longer = s.clone();
        longer.workload.requests = Some(needed_requests.min(max_requests));
        return once(&longer);
    }
    Ok(first)
}

/// The requests per second a scenario's workload offers: its arrival rate, or for a trace the
/// realised rate of its (scaled) timestamps.
pub fn offered_rate(s: &Scenario) -> Result<f64, InputError> {
    match &s.workload.arrival {
        Some(a) => Ok(a.rate()),
        None => Ok(trace_arrivals(s)?.1),
    }
}

/// A trace's requests (as many as the scenario replays) and their realised arrival rate.
fn trace_arrivals(s: &Scenario) -> Result<(u64, f64), InputError> {
    let mut src = s.workload.requests(s.seed)?;
    let (mut n, mut first, mut last) = (0u64, f64::INFINITY, f64::NEG_INFINITY);
    while let Some(r) = src.next_request()? {
        let t = r.arrival_ns as f64 * 1e-9;
        n += 1;
        first = first.min(t);
        last = last.max(t);
    }
    if n < 2 || last <= first {
        return Err(InputError::new(format!(
            "{}: the trace has no arrival rate (fewer than two distinct arrival times)",
            s.name
        )));
    }
    Ok((n, (n - 1) as f64 / (last - first)))
}

/// The scenario with its arrivals at `rate` requests per second: a new rate for a synthetic
/// process; for a trace, its timestamps compressed or stretched (same requests, same burst shape).
pub fn at_rate(s: &Scenario, rate: f64, requests: Option<u64>) -> Result<Scenario, InputError> {
    let mut out = s.clone();
    match (&s.workload.arrival, &mut out.workload.trace) {
        (Some(a), _) => {
            out.workload.arrival = Some(a.with_rate(rate));
            if requests.is_some() {
                out.workload.requests = requests;
            }
        }
        (None, Some(t)) => t.time_scale *= offered_rate(s)? / rate,
        (None, None) => unreachable!("validated: a workload has arrivals or a trace"),
    }
    Ok(out)
}

/// Relative width of the bracket at which the capacity search stops.
pub const TOLERANCE: f64 = 0.02;
/// A p99 rests on the `n / 100` slowest requests; below this many, one seed is not enough.
pub const P99_SAMPLES: u64 = 10;
/// Seeds simulated at each rate when a run's p99 rests on fewer than [`P99_SAMPLES`] requests.
pub const SEEDS_FEW_SAMPLES: u64 = 3;

/// The highest arrival rate a deployment serves within its SLO (and keeping up).
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Per seed: the highest rate that passed (0 when even the lowest tried failed).
    pub per_seed: Vec<(u64, f64)>,
    /// The lowest over the seeds: what every seed served.
    pub requests_per_s: f64,
    /// What stopped it just above that rate, on the seed that set it.
    pub limit: Option<Miss>,
    /// Requests per simulation.
    pub requests: u64,
}

impl Capacity {
    /// Highest minus lowest per-seed capacity.
    pub fn spread(&self) -> f64 {
        let (lo, hi) = self
            .per_seed
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), (_, c)| {
                (lo.min(*c), hi.max(*c))
            });
        hi - lo
    }

    /// How far above (+) or below (−) the asked rate the capacity lies, as a fraction of it.
    pub fn margin(&self, asked: f64) -> f64 {
        self.requests_per_s / asked - 1.0
    }
}

/// One line for users: capacity, margin at the asked rate, the seeds' spread and what limits it.
pub fn headroom_text(c: &Capacity, asked: f64) -> String {
    let seeds = if c.per_seed.len() > 1 {
        format!(
            "; per seed {} (spread {:.2} req/s: p99 of {} requests rests on {} samples)",
            c.per_seed
                .iter()
                .map(|(s, r)| format!("{s}: {r:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            c.spread(),
            c.requests,
            c.requests / 100
        )
    } else {
        String::new()
    };
    format!(
        "serves up to {:.2} req/s within the SLO, {:+.0} % against the asked {asked:.2} req/s{seeds}; above it: {} \
         (bisection to {:.0} %, {} requests a run)",
        c.requests_per_s,
        100.0 * c.margin(asked),
        c.limit.map_or("nothing failed", Miss::label),
        100.0 * TOLERANCE,
        c.requests
    )
}

/// Bisection over the arrival rate: starts from a guess (e.g. the closed form's capacity),
/// widens the bracket by doubling or halving until one rate passes and one fails, then halves it
/// until it is narrower than [`TOLERANCE`] of the passing rate. Each rate is simulated with
/// `requests` requests and seeds `seed, seed + 1, …` (see [`SEEDS_FEW_SAMPLES`]); every seed is
/// searched on its own and the capacity is the lowest. A trace is replayed with its own
/// requests, compressed or stretched in time; None when it holds fewer than [`MIN_REQUESTS`].
pub fn capacity_search(s: &Scenario, guess: f64, requests: u64) -> Result<Option<Capacity>, Error> {
    if !(guess > 0.0 && guess.is_finite()) {
        return Err(InputError::new(format!(
            "{}: no starting rate for the capacity search (closed form gives {guess})",
            s.name
        ))
        .into());
    }
    let requests = if s.workload.trace.is_some() {
        let (n, _) = trace_arrivals(s)?;
        if n < MIN_REQUESTS {
            return Ok(None);
        }
        n
    } else {
        requests.max(MIN_REQUESTS)
    };
    // A trace's arrivals do not depend on the seed.
    let seeds = if s.workload.trace.is_none() && requests / 100 < P99_SAMPLES {
        SEEDS_FEW_SAMPLES
    } else {
        1
    };
    let mut per_seed = Vec::new();
    let mut limit = None;
    let mut lowest = f64::INFINITY;
    for k in 0..seeds {
        let mut base = s.clone();
        base.seed = s.seed + k;
        let serves = |rate: f64| -> Result<Result<(), Miss>, Error> {
            let at = at_rate(&base, rate, Some(requests))?;
            Ok(simulate_judged(&at, HORIZON_EXTENSION * requests)?.verdict)
        };
        // Bracket: `lo` passes (or is 0), `hi` fails.
        let (mut lo, mut hi, mut miss);
        match serves(guess)? {
            Ok(()) => {
                lo = guess;
                hi = 2.0 * guess;
                miss = None;
                for _ in 0..8 {
                    match serves(hi)? {
                        Ok(()) => {
                            lo = hi;
                            hi *= 2.0;
                        }
                        Err(m) => {
                            miss = Some(m);
                            break;
                        }
                    }
                }
            }
            Err(m) => {
                hi = guess;
                miss = Some(m);
                lo = guess / 2.0;
                for _ in 0..8 {
                    match serves(lo)? {
                        Ok(()) => break,
                        Err(m) => {
                            hi = lo;
                            miss = Some(m);
                            lo /= 2.0;
                        }
                    }
                }
                if serves(lo)?.is_err() {
                    lo = 0.0;
                }
            }
        }
        while lo > 0.0 && (hi - lo) > TOLERANCE * lo {
            let mid = 0.5 * (lo + hi);
            match serves(mid)? {
                Ok(()) => lo = mid,
                Err(m) => {
                    hi = mid;
                    miss = Some(m);
                }
            }
        }
        if lo < lowest {
            lowest = lo;
            limit = miss;
        }
        per_seed.push((base.seed, lo));
    }
    Ok(Some(Capacity {
        per_seed,
        requests_per_s: lowest,
        limit,
        requests,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Poisson-like arrivals every 0.1 s for 60 s, each served in `service(i)` seconds.
    fn timeline(n: usize, service: impl Fn(usize) -> f64) -> Timeline {
        Timeline::from_pairs(
            (0..n)
                .map(|i| {
                    let a = i as f64 * 0.1;
                    (a, Some(a + service(i)))
                })
                .collect(),
        )
    }

    #[test]
    fn a_steady_cluster_keeps_up_even_though_it_drains_after_the_last_arrival() {
        // 10 req/s, 1 s each: 600 arrivals over 59.9 s; the summary's throughput would be
        // 600 / 60.9 s = 9.85 req/s, yet every request in the judged window finished on time.
        let k = sustain(&timeline(600, |_| 1.0));
        assert_eq!(k.verdict, Verdict::KeepsUp);
        // Window: arrivals 201..=599 (399 of them) over 39.9 s; finished in it: those that
        // arrived in (19.0, 58.9] → 399.
        assert!((k.arrival_rps - 399.0 / 39.9).abs() < 1e-9, "{k:?}");
        assert!((k.completion_rps - 399.0 / 39.9).abs() < 1e-9, "{k:?}");
        assert_eq!(k.e2e_growth, 1.0);
    }

    #[test]
    fn a_cluster_serving_80_percent_of_its_load_falls_behind() {
        // Served at 8 req/s while 10 arrive: request i leaves at i / 8 s + 1 s.
        let k = sustain(&timeline(600, |i| i as f64 / 8.0 - i as f64 * 0.1 + 1.0));
        assert_eq!(k.verdict, Verdict::FallsBehind, "{k:?}");
        // Finished in (20.0, 59.9]: i / 8 + 1 in that window → i from 153 to 471 (319), against
        // 399 arrivals: a shortfall of 80 > 3 √399 = 59.9.
        assert!((k.completion_rps - 319.0 / 39.9).abs() < 1e-9, "{k:?}");
    }

    #[test]
    fn a_slowly_growing_queue_is_caught_by_its_latency() {
        // Within 3 √A on throughput, but e2e doubles from the middle to the last third.
        let k = sustain(&timeline(600, |i| 1.0 + i as f64 / 200.0));
        assert_eq!(k.verdict, Verdict::LatencyGrows, "{k:?}");
        // Medians: request 299 (2.495 s) and request 499 (3.495 s).
        assert!((k.e2e_growth - 3.495 / 2.495).abs() < 1e-9, "{k:?}");
    }

    #[test]
    fn too_short_a_window_asks_for_more_requests() {
        assert_eq!(
            sustain(&timeline(100, |_| 1.0)).verdict,
            Verdict::ShortHorizon {
                needed_requests: 300
            }
        );
        // 59.9 s of arrivals, 20 s per request: ⌈6 × 20 / 59.9 × 600⌉ = ⌈1202.003⌉ = 1203 requests.
        assert_eq!(
            sustain(&timeline(600, |_| 20.0)).verdict,
            Verdict::ShortHorizon {
                needed_requests: 1203
            }
        );
    }

    #[test]
    fn an_unfinished_request_counts_as_late() {
        let mut t = timeline(600, |_| 1.0);
        for r in t.requests.iter_mut().skip(300) {
            r.1 = None;
        }
        assert_eq!(sustain(&t).verdict, Verdict::FallsBehind);
    }
}
