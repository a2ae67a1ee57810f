//! The partitions' interference (`sim::interference`) checked on the recorded green-split run:
//! one H200 split into 40 + 92 SMs, the encoder on the small partition, the LLM on the other,
//! every step of both logged (exec/results/2026-12-03-h200-green-split/steps/).
//!
//! The profile of that run has phase tables measured on each partition alone and no
//! interference table: the probe that measures one (`hetsim calibrate --split`) has not run on a
//! GPU yet. So the numbers the model needs are derived here from the record itself, from the
//! light-load scenario's steps that ran beside a sibling's step for ≥ 90 % of their time (as the
//! probe's sustained load would), and kept out of the shipped profile. The half-load scenario is
//! then a check on numbers it did not give.

use std::path::{Path, PathBuf};

use hetsim_sim::experiment::{Experiment, load_experiment_on};
use hetsim_sim::interference::{Interference, Phase, sibling_demand};
use hetsim_sim::perf::BatchShape;
use hetsim_sim::profile::{HardwareProfile, InterferencePoint};
use hetsim_sim::records::{RecordSink, RequestRecord, TransferRecord};
use hetsim_sim::table::Value;
use hetsim_sim::timeline::StepSpan;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

const RECORD: &str = "exec/results/2026-12-03-h200-green-split/steps";
const PROFILE: &str = "profiles/h200-2026-12-03-llava-1.5-7b-split40.yaml";
/// The scenario the interference numbers are derived from; the other one checks them.
const FROM: &str = "modality-green-light";

/// One logged step: its phase, when it ran, and the roofline's HBM bytes of its work.
#[derive(Debug, Clone)]
struct Step {
    scenario: String,
    instance: usize,
    phase: Phase,
    start: f64,
    measured: f64,
    /// The simulator's time for it alone (the partition's own phase table).
    alone: f64,
    bytes: f64,
}

impl Step {
    fn end(&self) -> f64 {
        self.start + self.measured
    }
    /// HBM demand alone, and as it ran.
    fn own(&self) -> f64 {
        self.bytes / self.alone
    }
    fn drawn(&self) -> f64 {
        self.bytes / self.measured
    }
}

fn load(profile: HardwareProfile) -> Experiment {
    load_experiment_on(
        &repo(&format!("{RECORD}/experiment.yaml")),
        None,
        Some(profile),
        false,
    )
    .unwrap()
}

fn steps(exp: &Experiment) -> Vec<Step> {
    // The record keeps its step log gzipped.
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(repo(&format!("{RECORD}/validate-steps/steps.csv.gz")))
        .output()
        .expect("gzip runs");
    assert!(out.status.success(), "gzip -dc steps.csv.gz");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let num = |name: &str| f[col(name)].parse::<f64>().unwrap();
        let s = exp.scenarios.iter().find(|s| s.name == f[0]).unwrap();
        let instance = num("instance") as usize;
        let perf = s.phase_model(instance);
        let img = s.model.image_tokens(640, 480).unwrap();
        let (seqs, tokens) = (num("prefill_seqs") as u64, num("prefill_tokens") as u64);
        let (batch, context) = (num("decode_batch") as u64, num("decode_context") as u64);
        let (phase, work) = if num("images") > 0.0 && instance == 0 {
            (
                Phase::Encode,
                perf.encode_work(&vec![img; num("images") as usize]),
            )
        } else {
            let mut b = BatchShape::default();
            for k in 0..seqs {
                // The step logs the prompts' tokens together: split evenly, the rest to the first.
                let each = tokens / seqs + u64::from(k < tokens % seqs);
                b.add_prefill_chunk(0, each, true);
            }
            b.decode_seqs = batch;
            b.decode_ctx_tokens = context;
            b.logits += batch;
            (Phase::of_forward(tokens), perf.forward_work(&b))
        };
        // The logged prediction is the same phase table's: the record and the model agree.
        let logged = num("predicted_s");
        assert!(
            (work.seconds - logged).abs() < 1e-3 * logged,
            "{line}: {} against the logged {logged}",
            work.seconds
        );
        out.push(Step {
            scenario: f[0].to_string(),
            instance,
            phase,
            start: num("start_s"),
            measured: num("measured_s"),
            alone: work.seconds,
            bytes: work.bytes,
        });
    }
    out
}

/// The sibling's step in flight when `s` started, if any.
fn beside<'a>(all: &'a [Step], s: &Step) -> Option<&'a Step> {
    all.iter().find(|o| {
        o.scenario == s.scenario
            && o.instance != s.instance
            && o.start <= s.start
            && s.start < o.end()
    })
}

/// Whether the sibling went on from its step `o` to another within `s` (timed alone): the
/// record's sign of what the engine reads as the sibling having work queued.
fn goes_on(all: &[Step], s: &Step, o: &Step) -> bool {
    all.iter().any(|n| {
        n.scenario == o.scenario
            && n.instance == o.instance
            && n.start >= o.end()
            && n.start < s.start + s.alone
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What the record implies a probe would measure: per phase and sibling load, the median
/// slowdown of the `FROM` steps that the sibling's steps of that load covered for ≥ 90 % of
/// their time, and the sibling's demand over that time.
fn implied(all: &[Step]) -> Vec<InterferencePoint> {
    let mut out = Vec::new();
    for phase in Phase::ALL {
        for load in Phase::ALL {
            // (step, the sibling's demand over it) for the steps the load covered.
            let covered: Vec<(&Step, f64)> = all
                .iter()
                .filter(|s| s.scenario == FROM && s.phase == phase)
                .filter_map(|s| {
                    let (mut time, mut bytes) = (0.0, 0.0);
                    for o in all.iter().filter(|o| {
                        o.scenario == s.scenario && o.instance != s.instance && o.phase == load
                    }) {
                        let t = (o.end().min(s.end()) - o.start.max(s.start)).max(0.0);
                        time += t;
                        bytes += t * o.drawn();
                    }
                    (time >= 0.9 * s.measured).then(|| (s, bytes / time))
                })
                .collect();
            if covered.len() < 5 {
                continue;
            }
            out.push(InterferencePoint {
                phase,
                load,
                own_gbs: median(covered.iter().map(|(s, _)| s.own() / 1e9).collect()),
                sibling_gbs: median(covered.iter().map(|(_, d)| d / 1e9).collect()),
                slowdown: median(covered.iter().map(|(s, _)| s.measured / s.alone).collect()),
            });
        }
    }
    out
}

fn with_interference(
    mut p: HardwareProfile,
    points: &[InterferencePoint],
    split: &[&str],
) -> HardwareProfile {
    for t in p
        .phases
        .iter_mut()
        .filter(|t| split.contains(&t.catalog_gpu.as_str()))
    {
        let encoder = t.catalog_gpu.ends_with("@40sm");
        t.interference = points
            .iter()
            .filter(|q| (q.phase == Phase::Encode) == encoder)
            .cloned()
            .collect();
    }
    p
}

/// Median error of the prediction per (scenario, phase), percent.
fn errors(all: &[Step], predict: impl Fn(&Step) -> f64) -> Vec<(String, Phase, f64)> {
    let mut out = Vec::new();
    for sc in ["modality-green-light", "modality-green-half"] {
        for phase in Phase::ALL {
            let e: Vec<f64> = all
                .iter()
                .filter(|s| s.scenario == sc && s.phase == phase)
                .map(|s| (predict(s) - s.measured) / s.measured * 100.0)
                .collect();
            out.push((sc.to_string(), phase, median(e)));
        }
    }
    out
}

#[derive(Default)]
struct Spans(Vec<StepSpan>);

impl RecordSink for Spans {
    fn request(&mut self, _: &RequestRecord) -> Result<(), hetsim_sim::error::Error> {
        Ok(())
    }
    fn transfer(&mut self, _: &TransferRecord) -> Result<(), hetsim_sim::error::Error> {
        Ok(())
    }
    fn step(&mut self, s: &StepSpan) -> Result<(), hetsim_sim::error::Error> {
        self.0.push(s.clone());
        Ok(())
    }
}

#[test]
fn interference_brings_the_recorded_partition_steps_in() {
    let shipped = HardwareProfile::load(&repo(PROFILE)).unwrap();
    assert!(
        shipped.phases.iter().all(|t| t.interference.is_empty()),
        "the shipped profile holds no interference numbers until the probe measures them"
    );
    let exp = load(shipped.clone());
    let all = steps(&exp);
    let points = implied(&all);
    for p in &points {
        eprintln!(
            "implied: {} beside {}: own {:.0} GB/s, sibling {:.0} GB/s, ×{:.3}",
            p.phase.name(),
            p.load.name(),
            p.own_gbs,
            p.sibling_gbs,
            p.slowdown
        );
    }
    let found: Vec<(Phase, Phase)> = points.iter().map(|p| (p.phase, p.load)).collect();
    assert_eq!(
        found,
        [
            (Phase::Encode, Phase::Prefill),
            (Phase::Encode, Phase::Decode),
            (Phase::Decode, Phase::Encode)
        ],
        "a prefill step (~21 ms) is never covered by the 4–6 ms encodes: no prefill point"
    );
    let model = [
        Interference::new(&points[..2]),
        Interference::new(&points[2..]),
    ];
    let before = errors(&all, |s| s.alone);
    // Each step as the engine decides it: the sibling's step in flight at its start, drawing its
    // bytes over the time it ran, for all of the step if the sibling went on to another.
    let after = errors(&all, |s| {
        let sibling = beside(&all, s).map_or(0.0, |o| {
            sibling_demand(
                o.bytes,
                o.start,
                o.end(),
                s.start,
                s.alone,
                goes_on(&all, s, o),
            )
        });
        s.alone * model[s.instance].slowdown(s.phase, s.own(), sibling)
    });
    for ((sc, phase, b), (_, _, a)) in before.iter().zip(&after) {
        eprintln!("{sc} {}: median error {b:+.1} % → {a:+.1} %", phase.name());
        let limit = if *phase == Phase::Encode { 10.0 } else { 3.0 };
        assert!(
            a.abs() <= limit,
            "{sc} {}: {a:+.1} % (limit ±{limit} %)",
            phase.name()
        );
        if *phase == Phase::Encode {
            assert!(*b < -25.0, "{sc}: the record's encode miss was {b:+.1} %");
        }
    }

    // The engine, re-simulating the runs: its encode steps against the measured ones.
    let split = ["H200-SXM@40sm", "H200-SXM@92sm"];
    let profile = with_interference(shipped.clone(), &points, &split);
    let exp_with = load(profile.clone());
    // What is left unmodelled, the run says: the LLM partition's prefill.
    let note = hetsim_sim::interference::notes(&exp_with).unwrap();
    assert!(
        note.contains("unmodelled for #1 H200-SXM@92sm (prefill) ("),
        "{note}"
    );
    for (plain, with) in exp.scenarios.iter().zip(&exp_with.scenarios) {
        let measured = median(
            all.iter()
                .filter(|s| s.scenario == plain.name && s.phase == Phase::Encode)
                .map(|s| s.measured)
                .collect(),
        );
        let mut simulated = Vec::new();
        for s in [plain, with] {
            let mut spans = Spans::default();
            hetsim_sim::engine::simulate(s, &mut spans, &mut |_| {}).unwrap();
            simulated.push(median(
                spans
                    .0
                    .iter()
                    .filter(|x| x.instance == 0)
                    .map(|x| x.end_s - x.start_s)
                    .collect(),
            ));
        }
        let err = |t: f64| (t - measured) / measured * 100.0;
        eprintln!(
            "{} re-simulated: encode step median {:+.1} % → {:+.1} %",
            plain.name,
            err(simulated[0]),
            err(simulated[1])
        );
        assert!(
            err(simulated[1]).abs() <= 10.0,
            "{}: {:+.1} %",
            plain.name,
            err(simulated[1])
        );
    }

    // The requests: latency metrics of the re-simulated runs against the measured ones.
    let measured = repo(&format!("{RECORD}/validate-steps/comparison.csv"));
    let experiment = repo(&format!("{RECORD}/experiment.yaml"));
    let check =
        |p: HardwareProfile| hetsim_sim::fit::replay_check(&experiment, p, &measured).unwrap();
    let (b, a) = (check(shipped), check(profile));
    eprintln!("before:\n{}after:\n{}", b.table.to_csv(), a.table.to_csv());
    let (mb, ma) = (
        b.median_abs_error_pct.unwrap(),
        a.median_abs_error_pct.unwrap(),
    );
    eprintln!("request metrics: median |error| {mb:.2} % → {ma:.2} %");
    // The encode is a fifth of a light-load TTFT: the one metric that shows it, −7 % before.
    let error = |c: &hetsim_sim::compare::Comparison, scenario: &str, metric: &str| {
        let row = c
            .table
            .rows
            .iter()
            .find(|r| {
                matches!((&r[0], &r[1]), (Value::Str(s), Value::Str(m)) if s == scenario && m == metric)
            })
            .unwrap();
        match row[4] {
            Value::F64(e) => e,
            _ => panic!("error_pct is a number"),
        }
    };
    let (tb, ta) = (error(&b, FROM, "ttft_p50_s"), error(&a, FROM, "ttft_p50_s"));
    assert!(
        tb < -5.0 && ta.abs() <= 2.0,
        "TTFT p50 at light load: {tb:+.1} % → {ta:+.1} %"
    );
    // The rest of the request metrics' error is the LLM partition's (its tables' +2 %): the
    // interference leaves their median where it was, within half a point.
    assert!(ma <= mb + 0.5, "request metrics: {mb:.2} % → {ma:.2} %");
}
