//! Output: everything is first written into a staging directory beside the output directory,
//! which is then published whole (`hetsim_sim::publish`), so a failure or a kill (a plot that
//! cannot be drawn, a full disk, SIGKILL) never leaves a mix of new and old files.

use std::path::{Path, PathBuf};

use hetsim_sim::error::Error;
use hetsim_sim::publish::{Contents, StagedDir};

use crate::plots::{self, Figure};
use crate::table::Table;

/// Writes the tables, figures and the HTML report (`html`, when asked for) into a staging
/// directory and publishes it whole as `out` (replacing a previous analysis there), with a
/// manifest listing the files.
pub fn write_all(
    out: &Path,
    tables: &[Table],
    figures: &[(&'static str, Figure)],
    html: Option<&str>,
) -> Result<Vec<PathBuf>, Error> {
    let mut dir = StagedDir::create(out, Contents::Analysis)?;
    let names = stage(dir.path(), tables, figures, html).map_err(Error::Output)?;
    for name in &names {
        dir.record(name, None);
    }
    dir.commit()
}

/// Writes every file into `dir`; returns their names.
fn stage(
    dir: &Path,
    tables: &[Table],
    figures: &[(&'static str, Figure)],
    html: Option<&str>,
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
    if let Some(page) = html {
        put(crate::html::FILE, page)?;
        names.push(crate::html::FILE.to_string());
    }
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
    Ok(names)
}
