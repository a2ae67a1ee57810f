//! `hetsim cost` and `hetsim plan` end to end, on the shipped files and on bad budgets/targets.

use std::process::{Command, Output};

fn hetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs")
}

#[test]
fn cost_reproduces_the_capex_saving_and_tracks_the_simulator() {
    let o = hetsim(&["cost", "experiments/paper-budget.yaml"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 1 − 38,000 / 64,000 = 0.406, beside the paper's 0.406.
    let row = text
        .lines()
        .find(|l| l.starts_with("modality-2x4090+2xA100  ") && l.contains("homogeneous-4xA100"))
        .unwrap();
    assert!(row.contains("0.406"), "{row}");
    // Every deployment: closed-form capacity within 10 % of the simulator's.
    let mut checked = 0;
    for l in text
        .lines()
        .skip_while(|l| !l.starts_with("scenario"))
        .skip(2)
        .take_while(|l| !l.is_empty())
    {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let err: f64 = cols[cols.len() - 3].parse().unwrap();
        assert!(err.abs() < 10.0, "{l}");
        checked += 1;
    }
    assert_eq!(checked, 4);
    assert!(
        text.contains("What decides it"),
        "names the assumption: {text}"
    );
    let stealing = text
        .lines()
        .find(|l| {
            l.starts_with("modality-stealing-2x4090+2xA100") && l.contains("homogeneous-4xA100")
        })
        .unwrap();
    assert!(
        stealing.contains("0.810") && stealing.contains("0.370"),
        "reported numbers beside ours: {stealing}"
    );
}

#[test]
fn plan_beats_the_papers_cluster_and_writes_every_candidate() {
    let out = std::env::temp_dir().join(format!("hetsim-plan-{}.parquet", std::process::id()));
    let o = hetsim(&[
        "plan",
        "experiments/plans/paper-budget.yaml",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = std::fs::File::open(&out).unwrap();
    let batches: Vec<_> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let header = text.lines().next().unwrap();
    assert!(header.contains(&format!("{rows} candidates")), "{header}");
    let b = &batches[0];
    let col = |name: &str| b.column_by_name(name).unwrap().clone();
    let tpd = col("tokens_per_dollar");
    let tpd = tpd
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .unwrap();
    let best = col("best");
    let best = best
        .as_any()
        .downcast_ref::<arrow_array::BooleanArray>()
        .unwrap();
    let reference = col("reference");
    let reference = reference
        .as_any()
        .downcast_ref::<arrow_array::BooleanArray>()
        .unwrap();
    let best_i = (0..b.num_rows()).find(|i| best.value(*i)).unwrap();
    let ref_i = (0..b.num_rows()).find(|i| reference.value(*i)).unwrap();
    assert!(
        tpd.value(best_i) >= tpd.value(ref_i),
        "best {} vs paper {}",
        tpd.value(best_i),
        tpd.value(ref_i)
    );
    assert!(
        text.contains("against reference `paper-heterogeneous`"),
        "{text}"
    );
    std::fs::remove_file(out).unwrap();
}

fn plan_with(name: &str, replace: &[(&str, &str)]) -> (i32, String) {
    let mut text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("experiments/plans/paper-budget.yaml"),
    )
    .unwrap();
    for (a, b) in replace {
        assert!(text.contains(a), "{a}");
        text = text.replace(a, b);
    }
    let p = std::env::temp_dir().join(format!("hetsim-plan-{name}-{}.yaml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    let o = hetsim(&["plan", p.to_str().unwrap()]);
    std::fs::remove_file(p).unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_budget_too_small_names_the_cheapest_feasible_cost() {
    let (code, err) = plan_with("budget", &[("capex_usd: 38000", "capex_usd: 5000")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no cluster within the budget ($5000 to buy)")
            && err.contains("the cheapest that does is"),
        "{err}"
    );
}

#[test]
fn unreachable_targets_name_the_bottleneck_phase() {
    let (code, err) = plan_with("tpot", &[("tpot_s: 0.1", "tpot_s: 0.002")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("decode is the bottleneck"), "{err}");
    let (code, err) = plan_with("ttft", &[("ttft_s: 1.0", "ttft_s: 0.005")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("prefill is the bottleneck"), "{err}");
}
