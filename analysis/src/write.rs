//! Output: everything is first written into a staging directory inside the output directory and
//! only then renamed into place, so a failure (a plot that cannot be drawn, a full disk) never
//! leaves a mix of new and old files.

use std::path::{Path, PathBuf};

use crate::plots::{self, Figure};
use crate::table::Table;

/// Every file stem `analyze` can write. Files of these names that this run did not write are
/// removed, so an output directory never mixes this run's tables with an older run's (validation
/// tables left from a run that had exec rows, say).
const STEMS: [&str; 21] = [
    "report",
    "comparison",
    "curves",
    "transfers",
    "links",
    "cost",
    "validation",
    "validation_requests",
    "validation_summary",
    "latency_throughput_ttft",
    "latency_throughput_tpot",
    "slo_attainment",
    "tokens_per_dollar",
    "link_utilization",
    "latency_cdf_ttft",
    "latency_cdf_tpot",
    "latency_over_time_ttft",
    "latency_over_time_tpot",
    "transfer_bytes",
    "cost_breakdown",
    "predicted_vs_measured",
];
const EXTENSIONS: [&str; 4] = ["csv", "md", "svg", "png"];

pub fn write_all(
    out: &Path,
    tables: &[Table],
    figures: &[(&'static str, Figure)],
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let staging = out.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let result = stage(&staging, tables, figures).and_then(|names| {
        let mut files = Vec::new();
        for name in &names {
            let to = out.join(name);
            std::fs::rename(staging.join(name), &to)
                .map_err(|e| format!("{}: {e}", to.display()))?;
            files.push(to);
        }
        for stem in STEMS {
            for ext in EXTENSIONS {
                let name = format!("{stem}.{ext}");
                if !names.contains(&name) {
                    let stale = out.join(&name);
                    if stale.is_file() {
                        std::fs::remove_file(&stale)
                            .map_err(|e| format!("{}: {e}", stale.display()))?;
                    }
                }
            }
        }
        Ok(files)
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Writes every file into `dir`; returns their names.
fn stage(
    dir: &Path,
    tables: &[Table],
    figures: &[(&'static str, Figure)],
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    // One markdown file with every table, for reading; one CSV per table, for scripts.
    let mut md = String::from("# hetsim analysis\n\n");
    for t in tables {
        md.push_str(&t.to_markdown());
        md.push('\n');
    }
    let put = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    put("report.md", &md)?;
    names.push("report.md".to_string());
    for t in tables {
        let name = format!("{}.csv", t.name);
        put(&name, &t.to_csv())?;
        names.push(name);
        let name = format!("{}.md", t.name);
        put(&name, &t.to_markdown())?;
        names.push(name);
    }
    for (stem, fig) in figures {
        for p in plots::render(fig, dir, stem)? {
            names.push(
                p.file_name()
                    .expect("render names files")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    debug_assert!(
        names
            .iter()
            .all(|n| STEMS.iter().any(|s| n.starts_with(&format!("{s}.")))),
        "a written file is missing from STEMS: {names:?}"
    );
    Ok(names)
}
