//! End-to-end: `hetsim analyze --html` opened in a real headless Chromium (Debian's `chromium`),
//! as a person would see it: the page renders without console errors, every chart holds the
//! series the result tables say it should, a sort header and a scenario box work, names from
//! the YAML show as written, and a screenshot is saved.
//!
//! The page writes what it drew into `<pre id="hetsim-check">` (analysis/src/html/report.js);
//! `chromium --headless --dump-dom` prints the DOM after its scripts ran. Without chromium the
//! tests say "skipped" and pass, unless `HETSIM_REQUIRE_BROWSER=1` (CI sets it).
#![cfg(feature = "analysis")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn hetsim(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_hetsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the hetsim binary runs");
    assert!(
        o.status.success(),
        "hetsim {args:?}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hetsim-html-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Debian's chromium (`HETSIM_CHROMIUM` names another binary). None: the test is skipped, or
/// fails where `HETSIM_REQUIRE_BROWSER=1`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HETSIM_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() && std::env::var("HETSIM_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!(
            "HETSIM_REQUIRE_BROWSER=1 but no chromium on PATH: install Debian's chromium \
             (apt-get install chromium)"
        );
    }
    if found.is_none() {
        eprintln!(
            "skipped: install Debian's chromium (apt-get install chromium) to run the browser test"
        );
    }
    found
}

/// Runs headless chromium on `page` with `extra` flags, in a fresh profile, killed after two
/// minutes.
fn browse(chromium: &Path, page: &Path, fragment: &str, extra: &[&str]) -> Output {
    // One profile per browser: the tests run in parallel in one process, and two chromiums on
    // one profile refuse to start (its SingletonLock).
    static BROWSERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BROWSERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = temp(&format!("profile-{n}"));
    let url = format!("file://{}{fragment}", page.display());
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            // Lets the page's promises (drawing, the self-test) settle before the dump.
            "--virtual-time-budget=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let pid = child.id();
    let start = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if start.elapsed() > Duration::from_secs(120) {
            // Our own child, by its id.
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("chromium ran over two minutes on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = waiter.join().unwrap().expect("chromium's output");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium on {url}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the page says it drew (`#hetsim-check`), and the browser's log.
fn rendered(chromium: &Path, page: &Path) -> (Value, String) {
    let out = browse(chromium, page, "#hetsim-check", &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let open = "<pre id=\"hetsim-check\" hidden=\"\">";
    let start = dom.find(open).unwrap_or_else(|| {
        panic!(
            "no #hetsim-check in the dumped DOM:\n{}",
            &dom[..dom.len().min(2000)]
        )
    }) + open.len();
    let end = start + dom[start..].find("</pre>").expect("end of #hetsim-check");
    // The DOM serialiser escapes &, < and > in text.
    let json = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!("#hetsim-check is not JSON ({e}): {json:?}\nbrowser log:\n{log}")
    });
    (v, dom + "\n" + &log)
}

/// No error in the page's own record or the browser's console log.
fn no_errors(check: &Value, log: &str) {
    assert_eq!(check["errors"], serde_json::json!([]), "page errors");
    for line in log.lines() {
        let bad = line.contains("Uncaught")
            || (line.contains("CONSOLE") && line.to_lowercase().contains("error"));
        assert!(!bad, "console: {line}");
    }
}

fn plot<'a>(check: &'a Value, id: &str) -> &'a Value {
    check["plots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no chart {id} in {check}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap_or("").to_string())
        .collect()
}

/// The curve (deployment) of a scenario name: the rate sweep's `[rate=…]` removed.
fn curve(scenario: &str) -> String {
    scenario.split('[').next().unwrap().to_string()
}

/// The first column of a CSV file written by `analyze` (names here hold no comma).
fn first_column(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

#[test]
fn the_pcie_report_renders_in_a_browser_with_every_series() {
    let Some(chromium) = chromium() else { return };
    let res = temp("pcie");
    hetsim(&[
        "run",
        "experiments/pcie.yaml",
        "--out",
        res.to_str().unwrap(),
    ]);
    let out = temp("pcie-analysis");
    let stdout = hetsim(&[
        "analyze",
        res.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--html",
    ]);
    let page = out.join("report.html");
    assert!(
        stdout.contains(&format!("report: {}", page.display())),
        "{stdout}"
    );
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"report.html\""), "{manifest}");
    let size = std::fs::metadata(&page).unwrap().len();
    eprintln!("{}: {size} bytes", page.display());

    let (check, log) = rendered(&chromium, &page);
    no_errors(&check, &log);

    // What the result tables say the charts must show.
    let scenarios = first_column(&out.join("comparison.csv"));
    let mut curves: Vec<String> = Vec::new();
    for s in &scenarios {
        if !curves.contains(&curve(s)) {
            curves.push(curve(s));
        }
    }
    assert_eq!(curves.len(), 4, "{curves:?}");
    for id in [
        "fig-latency_throughput_ttft",
        "fig-latency_throughput_tpot",
        "fig-slo_attainment",
        "fig-tokens_per_dollar",
        "fig-link_utilization",
    ] {
        let p = plot(&check, id);
        let legend = strings(&p["legend"]);
        for c in &curves {
            assert!(legend.contains(c), "{id}: no {c} in the legend {legend:?}");
        }
        // One point per offered rate in each scenario's trace.
        let traces = strings(&p["traces"]);
        for (name, n) in traces.iter().zip(p["points"].as_array().unwrap()) {
            if curves.contains(name) {
                let rates = scenarios.iter().filter(|s| curve(s) == *name).count();
                assert_eq!(n.as_u64(), Some(rates as u64), "{id}: {name}");
            }
        }
    }
    // The SLO lines where the latency charts are.
    assert!(
        strings(&plot(&check, "fig-latency_throughput_ttft")["legend"])
            .contains(&"TTFT SLO (1 s)".to_string())
    );
    assert!(
        strings(&plot(&check, "fig-latency_throughput_tpot")["legend"])
            .contains(&"TPOT SLO (100 ms)".to_string())
    );
    assert_eq!(
        strings(&plot(&check, "fig-transfer_bytes")["legend"]),
        ["embeddings", "KV cache"]
    );
    let cost = strings(&plot(&check, "fig-cost_breakdown")["legend"]);
    for gpu in ["A100-PCIe-80GB", "RTX-4090"] {
        assert!(cost.contains(&gpu.to_string()), "{cost:?}");
    }
    // Every trace of every chart drawn into its SVG.
    let plots = check["plots"].as_array().unwrap();
    assert_eq!(plots.len(), 7, "{check}");
    for p in plots {
        assert_eq!(
            p["drawn"].as_u64().unwrap() as usize,
            p["traces"].as_array().unwrap().len(),
            "{}",
            p["id"]
        );
        assert!(p["svg"].as_u64().unwrap() >= 1, "{}", p["id"]);
    }
    let comparison = check["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "comparison")
        .expect("the comparison table");
    assert_eq!(comparison["rows"].as_u64(), Some(scenarios.len() as u64));
    // The self-test's clicks: a numeric column sorted both ways, a scenario hidden everywhere
    // and shown again.
    assert_eq!(check["sort"]["ascending"], true, "{}", check["sort"]);
    assert_eq!(check["sort"]["descending"], true, "{}", check["sort"]);
    assert_eq!(check["toggle"]["hidden"], true, "{}", check["toggle"]);
    assert_eq!(check["toggle"]["shown"], true, "{}", check["toggle"]);
    assert!(
        check["toggle"]["traces"].as_u64().unwrap() >= 5,
        "{}",
        check["toggle"]
    );

    let shot = out.join("screenshot.png");
    browse(
        &chromium,
        &page,
        "",
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,3000",
            "--hide-scrollbars",
        ],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    // A blank page compresses to a few kB; the table and charts do not.
    assert!(png.len() > 50_000, "{} bytes: blank?", png.len());
    eprintln!("screenshot: {}", shot.display());
}

/// Scenario names from the YAML, with HTML in them, show as written in the legend and the
/// table, and run nothing.
#[test]
fn names_from_the_yaml_show_as_written() {
    let Some(chromium) = chromium() else { return };
    let names = [
        "<img src=x onerror=\"window.hetsimErrors.push('ran')\">",
        "</script><b>bold</b> & 'q'",
    ];
    let mut yaml = String::from(
        "name: html-names\nseed: 1\ndefaults:\n  model: llava-1.5-7b\n  dtype: bf16\n  workload:\n    \
         requests: 30\n    arrival: {process: poisson, rate: 2}\n    images: {count: 1, width: 336, height: 336}\n    \
         prompt_tokens: 20\n    output_tokens: 8\n  slo: {ttft_s: 1.0, tpot_s: 0.1}\n  \
         pricing: {mode: capex, lifetime_years: 3, gpu_price_usd: {A100-PCIe-80GB: 16000}}\nscenarios:\n",
    );
    for n in names {
        let quoted = serde_json::to_string(n).unwrap();
        yaml.push_str(&format!(
            "  - name: {quoted}\n    cluster:\n      nodes:\n        - {{name: box, gpus: [{{gpu: A100-PCIe-80GB, count: 1}}], fabric: pcie4}}\n    \
             deployment:\n      strategy: colocated\n      instances:\n        - {{role: all, gpu: A100-PCIe-80GB, count: 1}}\n"
        ));
    }
    let dir = temp("names");
    std::fs::create_dir_all(&dir).unwrap();
    let exp = dir.join("names.yaml");
    std::fs::write(&exp, yaml).unwrap();
    let res = dir.join("results");
    hetsim(&["run", exp.to_str().unwrap(), "--out", res.to_str().unwrap()]);
    let out = dir.join("analysis");
    // Without the flag, no page.
    let plain = hetsim(&[
        "analyze",
        res.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!out.join("report.html").exists(), "{plain}");
    assert!(!plain.contains("report.html"), "{plain}");
    hetsim(&[
        "analyze",
        res.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--html",
    ]);

    let (check, dom) = rendered(&chromium, &out.join("report.html"));
    no_errors(&check, &dom);
    let legend = strings(&plot(&check, "fig-slo_attainment")["legend"]);
    for n in names {
        assert!(legend.contains(&n.to_string()), "{n:?} not in {legend:?}");
    }
    // Neither name became an element.
    assert!(!dom.contains("<img src=\"x\""), "an <img> from a name");
    assert!(!dom.contains("<b>bold</b>"), "a <b> from a name");
    assert!(dom.contains("&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp; 'q'"));
}
