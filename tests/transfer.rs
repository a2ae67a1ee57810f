//! `hetsim transfer` end to end: the paper's numbers from every output format, every published
//! config, and bad input.

use std::process::{Command, Output};

fn hetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .output()
        .expect("runs")
}

fn json(args: &[&str]) -> Vec<serde_json::Value> {
    let o = hetsim(&[args, &["--format", "json"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn cut<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["cut"] == name)
        .unwrap_or_else(|| panic!("no cut {name}"))
}

#[test]
fn reproduces_the_paper_numbers() {
    let rows = json(&[
        "transfer",
        "llava-1.5-7b",
        "--image",
        "336x336",
        "--prompt-tokens",
        "128",
    ]);
    assert_eq!(cut(&rows, "modality_boundary")["bytes"], 4_718_592);
    assert_eq!(cut(&rows, "prefill_decode_kv")["bytes"], 369_098_752u64);
    let r = cut(&rows, "prefill_decode_kv")["ratio_to_modality"]
        .as_f64()
        .unwrap();
    assert_eq!(format!("{r:.1}"), "78.2");
    assert_eq!(cut(&rows, "pre_projector")["smallest"], true);
    // Every layer of the ViT and of the LLM appears in machine-readable output.
    assert_eq!(
        rows.iter().filter(|r| r["kind"] == "vision_layer").count(),
        23
    );
    assert_eq!(rows.iter().filter(|r| r["kind"] == "llm_layer").count(), 31);

    let deep = json(&[
        "transfer",
        "llava-1.5-7b",
        "--image",
        "336x336",
        "--prompt-tokens",
        "128",
        "--layers",
        "80",
    ]);
    let r = cut(&deep, "prefill_decode_kv")["ratio_to_modality"]
        .as_f64()
        .unwrap();
    assert_eq!(format!("{r:.1}"), "195.6");

    let qwen = json(&[
        "transfer",
        "qwen2.5-vl-7b",
        "--visual-tokens",
        "576",
        "--context",
        "704",
    ]);
    let r = cut(&qwen, "prefill_decode_kv")["ratio_to_modality"]
        .as_f64()
        .unwrap();
    assert_eq!(format!("{r:.1}"), "9.8");

    let sizes = json(&["transfer", "qwen2.5-vl-7b", "--view", "image-sizes"]);
    let vga = sizes
        .iter()
        .find(|r| r["width"] == 640 && r["height"] == 480)
        .unwrap();
    assert_eq!(vga["llm_tokens"], 391);
}

#[test]
fn depth_sweep_is_linear_for_mha_and_gqa() {
    for model in ["llava-1.5-7b", "qwen2.5-vl-7b"] {
        let rows = json(&[
            "transfer",
            model,
            "--view",
            "depth",
            "--visual-tokens",
            "576",
            "--context",
            "704",
        ]);
        let per_layer: Vec<f64> = rows
            .iter()
            .map(|r| r["R_per_layer"].as_f64().unwrap())
            .collect();
        assert!(
            per_layer.len() >= 5 && per_layer.iter().all(|p| (p - per_layer[0]).abs() < 1e-9),
            "{model}: {per_layer:?}"
        );
    }
}

#[test]
fn every_published_config_prints_its_table() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-configs");
    let mut n = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            let o = hetsim(&["transfer", p.to_str().unwrap()]);
            assert!(
                o.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("layer"),
                "{}",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 8);
}

#[test]
fn csv_and_parquet_carry_the_same_rows() {
    let o = hetsim(&["transfer", "llava-1.5-7b", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        csv.starts_with("model,cut,kind,stage_based,bytes,"),
        "{csv}"
    );
    let out = std::env::temp_dir().join(format!("hetsim-transfer-{}.parquet", std::process::id()));
    let o = hetsim(&[
        "transfer",
        "llava-1.5-7b",
        "--format",
        "parquet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = std::fs::File::open(&out).unwrap();
    let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, csv.lines().count() - 1);
    std::fs::remove_file(out).unwrap();
}

#[test]
fn bad_input_is_named() {
    let dir = std::env::temp_dir().join(format!("hetsim-transfer-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 10}"#).unwrap();
    for (args, says) in [
        (
            vec!["transfer", cfg.to_str().unwrap()],
            "num_attention_heads",
        ),
        (
            vec!["transfer", "llava-1.5-7b", "--image", "0x480"],
            "1 to 100,000",
        ),
        (
            vec!["transfer", "llava-1.5-7b", "--image", "640by480"],
            "WIDTHxHEIGHT",
        ),
        (
            vec!["transfer", "llava-1.5-7b", "--context", "999999999999"],
            "`--context` = 999999999999: allowed [0, 10000000] tokens",
        ),
        (
            vec!["transfer", "llava-1.5-7b", "--dtype", "int3"],
            "unknown dtype",
        ),
        (
            vec!["transfer", "llava-1.5-7b", "--links", "pcie9"],
            "unknown link `pcie9`",
        ),
        (
            vec!["transfer", "llava-1.5-7b", "--layers", "0"],
            "`--layers` = 0: allowed [1, 1024] layers",
        ),
        (
            vec!["transfer", "llava-1.5-7b", "--format", "parquet"],
            "needs --out",
        ),
    ] {
        let o = hetsim(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
