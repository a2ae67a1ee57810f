//! Interference between SM partitions of one GPU: sibling partitions (green contexts,
//! `catalog::partition`) have SMs of their own but one memory system (HBM, L2), so while both
//! are busy each step's memory-bound part runs slower than it does alone.
//!
//! The model. A step's time alone is `T`; its memory-bound part is the share of `T` its HBM bytes
//! take at the memory system's bandwidth `B`: `own / B`, where `own` = bytes / `T` is the step's
//! HBM demand alone (bytes: the roofline's count of the work, `perf::Work::bytes`). While a
//! sibling draws `sibling` bytes/s, that part is stretched by `k(sibling)`:
//!
//! ```text
//! slowdown = 1 + own / B · (k(sibling) − 1) = 1 + own · e(sibling),   e = (k − 1) / B
//! ```
//!
//! `e(sibling)` is what a measurement gives (`profile::InterferencePoint`): a probe times a
//! step of each phase on one partition alone and beside a sustained load on the other, and
//! `e = (slowdown − 1) / own`. `B` cancels, so the model needs no bandwidth figure; between the
//! measured loads `e` is interpolated linearly in the sibling's demand (0 with the sibling
//! idle), and held at the highest measured load beyond it. So the slowdown grows with how much of
//! the step is memory traffic and with how hard the sibling streams, as in the record: an encode
//! slowed ×1.43–1.48 beside the LLM partition's decode (2.9 TB/s), ×1.17–1.19 beside its prefill
//! (0.9 TB/s), a decode ×1.09–1.11 beside an encode (0.25 TB/s)
//! (exec/results/2026-12-03-h200-green-split/steps). Beside a prefill, both partitions are
//! compute-bound and share one power budget too; a measured point holds whatever the cause, at
//! that sibling demand.
//!
//! Why not derive `k` from the roofline alone. The simplest derivation, the sibling's traffic as
//! background leaving `B − sibling` to the step (`k = B / (B − sibling)`), gives the recorded
//! encode beside the decode's 2915 GB/s ×1.19 with `B` the profile's measured 4237 GB/s (the
//! record: ×1.48), ×1.28 with the 3881 GB/s measured on 2026-11-21, and has no bound as the
//! sibling nears `B`. Without a measured table the simulator therefore does not model
//! interference and says so (`notes`).
//!
//! In the event loop a step's time is fixed when it starts (`engine`): the slowdown is decided
//! by the siblings' steps in flight at that moment, each drawing its bytes over its scheduled
//! time, summed: over the whole step if that sibling has work queued after its step (it will run
//! another), else only until its step ends. Not a rate integration like `network`'s shared ports: that would retime steps in
//! flight whenever a sibling starts or stops, and the engine hands a step's end to the KV
//! hand-off and the scheduler when it starts. The state at the start is what the record shows to
//! matter: an encode that started while the LLM partition decoded overlapped it for 95–98 % of
//! its time (the LLM runs steps back to back), one that started beside an idle LLM ran as fast as
//! alone (median ×1.00).

use serde::{Deserialize, Serialize};

use crate::cluster::Role;
use crate::experiment::{Experiment, Scenario};
use crate::profile::InterferencePoint;

/// The kind of step: what runs on a partition, and what a probe runs on its sibling as the load
/// (`decode`: a memory-bound loop; `encode`: a compute-bound one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Encode,
    Prefill,
    Decode,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Encode, Phase::Prefill, Phase::Decode];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Encode => "encode",
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }

    /// An LLM forward: prefill if it has prompt tokens (compute-bound), else decode.
    pub fn of_forward(prefill_tokens: u64) -> Phase {
        if prefill_tokens > 0 {
            Phase::Prefill
        } else {
            Phase::Decode
        }
    }
}

/// One partition's measured interference, by phase: (sibling demand B/s, excess slowdown per
/// own demand s/B), by sibling demand, from (0, 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interference {
    by_phase: [Vec<(f64, f64)>; 3],
}

impl Interference {
    pub fn new(points: &[InterferencePoint]) -> Interference {
        let mut by_phase: [Vec<(f64, f64)>; 3] = Default::default();
        for (i, phase) in Phase::ALL.into_iter().enumerate() {
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.phase == phase)
                .map(|p| (p.sibling_gbs * 1e9, (p.slowdown - 1.0) / (p.own_gbs * 1e9)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts.insert(0, (0.0, 0.0));
            by_phase[i] = pts;
        }
        Interference { by_phase }
    }

    /// Whether `phase` has a measurement.
    pub fn measured(&self, phase: Phase) -> bool {
        !self.by_phase[phase as usize].is_empty()
    }

    /// How much slower a step of `phase` drawing `own` bytes/s alone runs beside siblings drawing
    /// `sibling` bytes/s: 1 for an unmeasured phase or an idle sibling, never a speed-up.
    pub fn slowdown(&self, phase: Phase, own: f64, sibling: f64) -> f64 {
        let pts = &self.by_phase[phase as usize];
        let Some(&(last, _)) = pts.last() else {
            return 1.0;
        };
        (1.0 + own * interp(pts, sibling.min(last))).max(1.0)
    }
}

/// The HBM demand a sibling's step in flight puts on a step of `own_s` seconds starting `now`:
/// its bytes over its scheduled time, over the whole step if the sibling `continues` (it has
/// work queued after this step), else only for the part of the step before it ends. Times in
/// seconds.
pub fn sibling_demand(
    bytes: f64,
    start: f64,
    end: f64,
    now: f64,
    own_s: f64,
    continues: bool,
) -> f64 {
    if end <= start || own_s <= 0.0 {
        return 0.0;
    }
    let share = if continues {
        1.0
    } else {
        ((end - now) / own_s).clamp(0.0, 1.0)
    };
    share * bytes / (end - start)
}

/// Linear interpolation through points sorted by x, `x` within them.
fn interp(pts: &[(f64, f64)], x: f64) -> f64 {
    let i = pts.partition_point(|p| p.0 < x).clamp(1, pts.len() - 1);
    let ((x0, y0), (x1, y1)) = (pts[i - 1], pts[i]);
    if x1 == x0 {
        y1
    } else {
        y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    }
}

/// For each instance of `s`, the instances on other partitions of the same GPU. A partitioned
/// GPU is the only GPU of its node (`experiment`), so they are the node's other instances on
/// partitions.
pub fn siblings(s: &Scenario) -> Vec<Vec<usize>> {
    let inst = &s.cluster.instances;
    inst.iter()
        .map(|a| {
            inst.iter()
                .filter(|b| {
                    b.id != a.id
                        && b.node == a.node
                        && a.gpu.partition_of.is_some()
                        && b.gpu.partition_of.is_some()
                })
                .map(|b| b.id)
                .collect()
        })
        .collect()
}

/// The interference model of instance `i` of `s`: its phase table's measured points.
pub fn of_instance(s: &Scenario, i: usize) -> Interference {
    s.measured_phases[i]
        .as_ref()
        .map_or_else(Interference::default, |t| {
            Interference::new(&t.interference)
        })
}

/// The phases instance `i` of `s` runs: encode where it holds the vision encoder, prefill and
/// decode where it holds the LLM (a prefill or decode instance only its own).
fn phases_run(s: &Scenario, i: usize) -> Vec<Phase> {
    let role = s.cluster.instances[i].role;
    let (vision, llm) = crate::experiment::holds(&s.model, s.strategy, role, s.work_stealing);
    let mut out = Vec::new();
    if vision {
        out.push(Phase::Encode);
    }
    if llm && role != Role::Decode {
        out.push(Phase::Prefill);
    }
    if llm && role != Role::Prefill {
        out.push(Phase::Decode);
    }
    out
}

/// What a run's summary says of the interference it does not model: one line per scenario with
/// an instance on a partition that runs a phase its profile has no interference measurement of.
pub fn notes(exp: &Experiment) -> Option<String> {
    let mut lines = Vec::new();
    for s in &exp.scenarios {
        let sib = siblings(s);
        let missing: Vec<String> = (0..s.cluster.instances.len())
            .filter(|&i| !sib[i].is_empty())
            .filter_map(|i| {
                let m = of_instance(s, i);
                let phases: Vec<&str> = phases_run(s, i)
                    .into_iter()
                    .filter(|p| !m.measured(*p))
                    .map(Phase::name)
                    .collect();
                (!phases.is_empty()).then(|| {
                    format!(
                        "#{i} {} ({})",
                        s.cluster.instances[i].gpu.name,
                        phases.join(", ")
                    )
                })
            })
            .collect();
        if !missing.is_empty() {
            lines.push(format!(
                "{}: interference between partitions of one GPU unmodelled for {} (the profile \
                 has no `interference` points of these phases: `hetsim calibrate --split` \
                 measures them); those steps are timed as if the other partition were idle (on \
                 the H200 an encode beside the LLM partition's decode took 1.43–1.48× its time \
                 alone: sim/src/interference.rs)",
                s.name,
                missing.join(", ")
            ));
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(
        phase: Phase,
        load: Phase,
        own: f64,
        sibling: f64,
        slowdown: f64,
    ) -> InterferencePoint {
        InterferencePoint {
            phase,
            load,
            own_gbs: own,
            sibling_gbs: sibling,
            slowdown,
        }
    }

    #[test]
    fn slowdown_scales_with_own_demand_and_the_siblings() {
        let m = Interference::new(&[
            point(Phase::Encode, Phase::Decode, 360.0, 3000.0, 1.45),
            point(Phase::Encode, Phase::Prefill, 360.0, 900.0, 1.18),
        ]);
        let gbs = 1e9;
        // At a measured point, the measured step: its slowdown.
        assert!((m.slowdown(Phase::Encode, 360.0 * gbs, 3000.0 * gbs) - 1.45).abs() < 1e-12);
        // Twice the own demand: twice the excess, 1 + 2 × 0.45.
        assert!((m.slowdown(Phase::Encode, 720.0 * gbs, 3000.0 * gbs) - 1.90).abs() < 1e-12);
        // Between the loads: e = 0.18/360 + (0.45 − 0.18)/360 × (1950 − 900)/(3000 − 900),
        // slowdown 1 + 0.18 + 0.27 × 0.5 = 1.315.
        assert!((m.slowdown(Phase::Encode, 360.0 * gbs, 1950.0 * gbs) - 1.315).abs() < 1e-12);
        // Below the lightest load, towards 1 at an idle sibling: 1 + 0.18 × 450/900.
        assert!((m.slowdown(Phase::Encode, 360.0 * gbs, 450.0 * gbs) - 1.09).abs() < 1e-12);
        assert_eq!(m.slowdown(Phase::Encode, 360.0 * gbs, 0.0), 1.0);
        // Held beyond the heaviest load measured.
        assert!((m.slowdown(Phase::Encode, 360.0 * gbs, 9000.0 * gbs) - 1.45).abs() < 1e-12);
        // Unmeasured phases are not slowed, and say so.
        assert!(m.measured(Phase::Encode) && !m.measured(Phase::Decode));
        assert_eq!(m.slowdown(Phase::Decode, 3000.0 * gbs, 3000.0 * gbs), 1.0);
        // A measured speed-up (noise) is not applied.
        let fast = Interference::new(&[point(Phase::Decode, Phase::Encode, 3000.0, 360.0, 0.98)]);
        assert_eq!(fast.slowdown(Phase::Decode, 3000.0 * gbs, 360.0 * gbs), 1.0);
    }

    #[test]
    fn a_sibling_draws_for_the_whole_step_only_if_it_goes_on() {
        // 24 GB over an 8 ms step: 3 TB/s, over all of a 4 ms step if the sibling goes on.
        assert!((sibling_demand(24e9, 0.0, 0.008, 0.006, 0.004, true) - 3e12).abs() < 1.0);
        // Else for the 2 ms of it left: half of the 4 ms step, 1.5 TB/s.
        assert!((sibling_demand(24e9, 0.0, 0.008, 0.006, 0.004, false) - 1.5e12).abs() < 1.0);
        // All of a short step that ends before the sibling's does.
        assert!((sibling_demand(24e9, 0.0, 0.008, 0.001, 0.004, false) - 3e12).abs() < 1.0);
        assert_eq!(sibling_demand(24e9, 0.0, 0.0, 0.0, 0.004, true), 0.0);
    }

    #[test]
    fn forwards_are_prefill_with_prompt_tokens() {
        assert_eq!(Phase::of_forward(1), Phase::Prefill);
        assert_eq!(Phase::of_forward(0), Phase::Decode);
    }
}
