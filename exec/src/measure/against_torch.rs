//! Our Qwen2.5-VL passes side by side with transformers' own forward of the same shapes
//! (`hetsim exec bench --model qwen2.5-vl-7b --against torch.json`, issue 20's "not slower at
//! any shape"). `exec/scripts/torch-qwen2.5-vl-forward.py` writes the file: per pass and
//! attention implementation (eager, sdpa) the median seconds, or why it has none. Here it is
//! read, checked against the bench it is put beside (same model, decoder depth, device), and
//! joined to the bench's rows by phase and shape label.

use super::bench::{BenchReport, BenchRow};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// transformers' attention implementations, in the columns' order.
pub const IMPLEMENTATIONS: [&str; 2] = ["eager", "sdpa"];

/// `torch.json` as the script writes it.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TorchRun {
    pub what: String,
    /// Our name of the model (`qwen2.5-vl-7b`, `qwen2.5-vl-tiny`).
    pub model: String,
    /// Decoder layers of the model transformers ran.
    pub layers: usize,
    /// The device's name as the driver gives it (`NVIDIA H200`), or `cpu`.
    pub device: String,
    pub torch: String,
    pub transformers: String,
    pub date: String,
    pub points: Vec<TorchPoint>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TorchPoint {
    pub phase: String,
    /// The words of the bench row's shape it times: the row's shape is this label, or this
    /// label followed by ", " or " (" and our own notes.
    pub shape: String,
    pub implementation: String,
    /// Median seconds and the passes it is the median of; absent where `error` says why.
    pub seconds: Option<f64>,
    pub iterations: Option<usize>,
    pub error: Option<String>,
}

/// What one implementation did at one point.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Seconds(f64),
    Failed(String),
}

impl TorchPoint {
    fn outcome(&self) -> Option<Outcome> {
        match (self.seconds, self.iterations, &self.error) {
            (Some(s), Some(n), None) if s > 0.0 && s.is_finite() && n > 0 => {
                Some(Outcome::Seconds(s))
            }
            (None, None, Some(e)) => Some(Outcome::Failed(e.clone())),
            _ => None,
        }
    }
}

/// One bench row with transformers' times beside it.
#[derive(Debug, Clone)]
pub struct JoinedRow {
    pub phase: String,
    pub shape: String,
    pub ours_s: f64,
    /// In [`IMPLEMENTATIONS`]' order; `None` where the file has no point of that implementation.
    pub torch: [Option<Outcome>; 2],
}

impl JoinedRow {
    /// The faster of the implementations that ran.
    pub fn fastest_torch_s(&self) -> Option<f64> {
        self.torch
            .iter()
            .filter_map(|o| match o {
                Some(Outcome::Seconds(s)) => Some(*s),
                _ => None,
            })
            .reduce(f64::min)
    }

    /// Whether ours is not slower than the faster implementation (`None`: none ran).
    pub fn not_slower(&self) -> Option<bool> {
        self.fastest_torch_s().map(|t| self.ours_s <= t)
    }
}

/// Reads and checks `torch.json` (before the bench runs, so a bad file costs no GPU time).
pub fn read(path: &Path) -> Result<TorchRun> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Invalid(format!(
            "--against {}: cannot read it ({e}); exec/scripts/torch-qwen2.5-vl-forward.py writes it",
            path.display()
        ))
    })?;
    parse(&text).map_err(|e| Error::Invalid(format!("--against {}: {e}", path.display())))
}

/// Parses `torch.json` and checks every point: a known phase and implementation, a time or an
/// error (not both), each (phase, shape, implementation) once.
pub fn parse(text: &str) -> std::result::Result<TorchRun, String> {
    let run: TorchRun = serde_json::from_str(text).map_err(|e| format!("not a torch.json: {e}"))?;
    if run.points.is_empty() {
        return Err("no points".into());
    }
    for (i, p) in run.points.iter().enumerate() {
        let at = format!(
            "points[{i}] ({} {}, {})",
            p.phase, p.shape, p.implementation
        );
        if !["decode", "prefill", "encode"].contains(&p.phase.as_str()) {
            return Err(format!(
                "{at}: phase {:?} is none of decode, prefill, encode",
                p.phase
            ));
        }
        if !IMPLEMENTATIONS.contains(&p.implementation.as_str()) {
            return Err(format!(
                "{at}: implementation {:?} is none of {}",
                p.implementation,
                IMPLEMENTATIONS.join(", ")
            ));
        }
        if p.outcome().is_none() {
            return Err(format!(
                "{at}: needs seconds > 0 and iterations ≥ 1, or an error instead of both (got seconds {:?}, iterations {:?}, error {:?})",
                p.seconds, p.iterations, p.error
            ));
        }
        if run.points[..i].iter().any(|q| {
            (&q.phase, &q.shape, &q.implementation) == (&p.phase, &p.shape, &p.implementation)
        }) {
            return Err(format!("{at}: appears twice"));
        }
    }
    Ok(run)
}

/// Checks that `run` timed the model the bench runs (a 7B bench beside a tiny or shallower
/// transformers run would compare different work).
pub fn check_model(run: &TorchRun, model: &str, layers: usize) -> Result<()> {
    if run.model != model || run.layers != layers {
        return Err(Error::Invalid(format!(
            "--against: torch.json timed {} with {} decoder layers, the bench runs {model} with {layers}",
            run.model, run.layers
        )));
    }
    Ok(())
}

/// Whether bench shape `row` is the one torch `label` names.
fn names(row: &str, label: &str) -> bool {
    row.strip_prefix(label)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(", ") || rest.starts_with(" ("))
}

/// The bench's rows that transformers timed, with its times, in the bench's order. `device` is
/// the bench's device name: times from another device do not compare. Every torch point must
/// name exactly one bench row.
pub fn join(report: &BenchReport, run: &TorchRun, device: &str) -> Result<Vec<JoinedRow>> {
    if run.device != device {
        return Err(Error::Invalid(format!(
            "--against: torch.json was timed on {:?}, the bench on {device:?}",
            run.device
        )));
    }
    let matches = |p: &TorchPoint, r: &BenchRow| r.phase == p.phase && names(&r.shape, &p.shape);
    for p in &run.points {
        let n = report.rows.iter().filter(|r| matches(p, r)).count();
        if n != 1 {
            let shapes: Vec<String> = report
                .rows
                .iter()
                .map(|r| format!("{} {}", r.phase, r.shape))
                .collect();
            return Err(Error::Invalid(format!(
                "--against: torch.json's {} point {:?} names {n} of the bench's rows, not one (the bench's rows: {})",
                p.phase,
                p.shape,
                shapes.join("; ")
            )));
        }
    }
    Ok(report
        .rows
        .iter()
        .filter_map(|r| {
            let torch = IMPLEMENTATIONS.map(|imp| {
                run.points
                    .iter()
                    .find(|p| p.implementation == imp && matches(p, r))
                    .and_then(TorchPoint::outcome)
            });
            torch.iter().any(Option::is_some).then(|| JoinedRow {
                phase: r.phase.clone(),
                shape: r.shape.clone(),
                ours_s: r.seconds,
                torch,
            })
        })
        .collect())
}

/// The joined rows as a markdown table, then each failed point's error.
pub fn table(run: &TorchRun, rows: &[JoinedRow]) -> String {
    let mut s = format!(
        "against transformers {} (torch {}), Qwen2_5_VLForConditionalGeneration on random weights, bf16, {}, {}\n\n",
        run.transformers, run.torch, run.device, run.date
    );
    s += "| phase | shape | ours ms | eager ms | sdpa ms | ours ÷ faster | not slower |\n|---|---|---|---|---|---|---|\n";
    let mut errors = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .torch
            .iter()
            .zip(IMPLEMENTATIONS)
            .map(|(o, imp)| match o {
                Some(Outcome::Seconds(t)) => format!("{:.3}", t * 1e3),
                Some(Outcome::Failed(e)) => {
                    errors += &format!("* {imp}, {} {}: {e}\n", r.phase, r.shape);
                    "failed".into()
                }
                None => "–".into(),
            })
            .collect();
        let (ratio, verdict) = match (r.fastest_torch_s(), r.not_slower()) {
            (Some(t), Some(ok)) => (
                format!("{:.3}", r.ours_s / t),
                if ok { "yes" } else { "NO" }.to_string(),
            ),
            _ => ("–".into(), "–".into()),
        };
        s += &format!(
            "| {} | {} | {:.3} | {} | {} | {ratio} | {verdict} |\n",
            r.phase,
            r.shape,
            r.ours_s * 1e3,
            cells[0],
            cells[1]
        );
    }
    if !errors.is_empty() {
        s += "\nfailed points:\n\n";
        s += &errors;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::bench::Floors;

    /// Written by `exec/scripts/torch-qwen2.5-vl-forward.py --tiny` on the CPU.
    const TINY: &str = include_str!("../../tests/fixtures/against_torch/torch-tiny.json");

    fn row(phase: &str, shape: &str, seconds: f64) -> BenchRow {
        BenchRow {
            phase: phase.into(),
            shape: shape.into(),
            seconds,
            floor_s: seconds / 2.0,
            figure: 2.0,
            target: None,
        }
    }

    /// A bench of the tiny model at the script's tiny shapes, in our bench's words, plus a row
    /// transformers did not time.
    fn tiny_bench() -> BenchReport {
        BenchReport {
            floors: Floors {
                copy_gbs: 1.0,
                gemm_tflops: 1.0,
            },
            rows: vec![
                row(
                    "decode",
                    "batch 1, context 64, serving engine (CUDA graphs)",
                    1.0e-3,
                ),
                row(
                    "decode",
                    "batch 4, context 64, serving engine (CUDA graphs)",
                    2.0e-3,
                ),
                row(
                    "decode",
                    "batch 16, context 64, serving engine (CUDA graphs)",
                    2.0e-3,
                ),
                row("prefill", "2 × 64 tokens", 1.0e-3),
                row("encode", "1 images of 224 × 168 (48 tokens)", 1.0e-3),
                row("encode", "2 images of 224 × 168 (96 tokens)", 1.0),
            ],
            products: Vec::new(),
        }
    }

    #[test]
    fn the_scripts_tiny_run_parses_and_joins() {
        let run = parse(TINY).unwrap();
        check_model(&run, "qwen2.5-vl-tiny", 2).unwrap();
        let rows = join(&tiny_bench(), &run, "cpu").unwrap();
        let shapes: Vec<&str> = rows.iter().map(|r| r.shape.as_str()).collect();
        // Every row but batch 16, which the script does not time, in the bench's order.
        assert_eq!(
            shapes,
            [
                "batch 1, context 64, serving engine (CUDA graphs)",
                "batch 4, context 64, serving engine (CUDA graphs)",
                "2 × 64 tokens",
                "1 images of 224 × 168 (48 tokens)",
                "2 images of 224 × 168 (96 tokens)",
            ]
        );
        for r in &rows {
            assert!(
                r.torch
                    .iter()
                    .all(|o| matches!(o, Some(Outcome::Seconds(_)))),
                "{r:?}"
            );
        }
        // A second per 2-image encode is slower than transformers' CPU milliseconds.
        assert_eq!(rows[4].not_slower(), Some(false));
        let t = table(&run, &rows);
        assert!(
            t.contains("| encode | 2 images of 224 × 168 (96 tokens) | 1000.000 |"),
            "{t}"
        );
        assert!(t.contains("| NO |"), "{t}");
    }

    #[test]
    fn verdict_against_the_faster_implementation_that_ran() {
        let r = |eager, sdpa| JoinedRow {
            phase: "decode".into(),
            shape: "batch 1, context 1024".into(),
            ours_s: 0.010,
            torch: [eager, sdpa],
        };
        let (s, f) = (Outcome::Seconds, |m: &str| Outcome::Failed(m.into()));
        // Faster than eager (12 ms) but not than sdpa (9 ms): slower.
        let a = r(Some(s(0.012)), Some(s(0.009)));
        assert_eq!(a.fastest_torch_s(), Some(0.009));
        assert_eq!(a.not_slower(), Some(false));
        // Equal to the faster is not slower.
        assert_eq!(r(Some(s(0.010)), Some(s(0.011))).not_slower(), Some(true));
        // Only sdpa ran: it is the one compared.
        assert_eq!(
            r(Some(f("OutOfMemoryError")), Some(s(0.011))).not_slower(),
            Some(true)
        );
        // Neither ran: no verdict, and the table says why.
        let none = r(Some(f("OutOfMemoryError: 2 GiB")), None);
        assert_eq!(none.not_slower(), None);
        let run = parse(TINY).unwrap();
        let t = table(&run, &[none]);
        assert!(
            t.contains("| decode | batch 1, context 1024 | 10.000 | failed | – | – | – |"),
            "{t}"
        );
        assert!(
            t.contains("* eager, decode batch 1, context 1024: OutOfMemoryError: 2 GiB"),
            "{t}"
        );
    }

    #[test]
    fn an_error_point_parses_and_a_half_point_does_not() {
        let mut v: serde_json::Value = serde_json::from_str(TINY).unwrap();
        v["points"][0] = serde_json::json!({
            "phase": "decode", "shape": "batch 1, context 64", "implementation": "eager",
            "error": "OutOfMemoryError: CUDA out of memory"
        });
        let run = parse(&v.to_string()).unwrap();
        let rows = join(&tiny_bench(), &run, "cpu").unwrap();
        assert!(matches!(rows[0].torch[0], Some(Outcome::Failed(_))));
        v["points"][0]["seconds"] = serde_json::json!(0.1);
        let e = parse(&v.to_string()).unwrap_err();
        assert!(
            e.contains("points[0] (decode batch 1, context 64, eager)"),
            "{e}"
        );
        assert!(e.contains("or an error instead of both"), "{e}");
    }

    #[test]
    fn bad_files_are_refused_naming_what_is_wrong() {
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(TINY).unwrap();
            f(&mut v);
            parse(&v.to_string()).unwrap_err()
        };
        let e = edit(&|v| v["points"][1]["implementation"] = "flash_attention_2".into());
        assert!(
            e.contains("implementation \"flash_attention_2\" is none of eager, sdpa"),
            "{e}"
        );
        let e = edit(&|v| v["points"][1]["phase"] = "generate".into());
        assert!(e.contains("phase \"generate\""), "{e}");
        let e = edit(&|v| v["points"][1]["seconds"] = (-1.0).into());
        assert!(e.contains("points[1]"), "{e}");
        let e = edit(&|v| v["points"][1] = v["points"][0].clone());
        assert!(
            e.contains("points[1] (decode batch 1, context 64, eager): appears twice"),
            "{e}"
        );
        let e = edit(&|v| v["iters"] = 3.into());
        assert!(e.contains("unknown field `iters`"), "{e}");
        assert!(parse("[]").unwrap_err().starts_with("not a torch.json"));
        let missing = read(Path::new("/nonexistent/torch.json")).unwrap_err();
        assert_eq!(missing.exit_code(), 2);
        assert!(
            missing.to_string().contains("/nonexistent/torch.json"),
            "{missing}"
        );
    }

    #[test]
    fn another_model_device_or_unknown_shape_is_refused() {
        let run = parse(TINY).unwrap();
        let e = check_model(&run, "qwen2.5-vl-7b", 28).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("qwen2.5-vl-tiny with 2 decoder layers"),
            "{e}"
        );
        assert!(check_model(&run, "qwen2.5-vl-tiny", 1).is_err());
        let e = join(&tiny_bench(), &run, "NVIDIA H200").unwrap_err();
        assert!(e.to_string().contains("timed on \"cpu\""), "{e}");
        let mut bench = tiny_bench();
        bench.rows[3].shape = "2 × 128 tokens".into();
        let e = join(&bench, &run, "cpu").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains("prefill point \"2 × 64 tokens\" names 0"),
            "{e}"
        );
    }

    #[test]
    fn a_label_names_its_row_and_no_longer_one() {
        assert!(names(
            "batch 1, context 1024, serving engine (CUDA graphs)",
            "batch 1, context 1024"
        ));
        assert!(names("8 × 1024 tokens", "8 × 1024 tokens"));
        assert!(names(
            "16 images of 1280 × 720 (19136 tokens)",
            "16 images of 1280 × 720"
        ));
        assert!(!names("16 images of 1280 × 720", "1 images of 1280 × 720"));
        assert!(!names("batch 1, context 10240", "batch 1, context 1024"));
    }
}
