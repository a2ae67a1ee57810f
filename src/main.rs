//! The `hetsim` command: parses arguments, calls the library, prints. No domain logic here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hetsim_sim::catalog::{BUILTIN_MODELS, Dtype, GPUS, LINKS, builtin_model};
use hetsim_sim::error::Error;
use hetsim_sim::experiment::load_experiment;
use hetsim_sim::run::{Progress, comparison_table, run_experiment};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "hetsim", version, about = "Simulate multimodal-LLM serving on heterogeneous GPU clusters", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate every scenario of an experiment file; write parquet results and print a comparison
    Run {
        /// Experiment YAML (see docs/experiment.md)
        experiment: PathBuf,
        /// Directory for summary/requests/transfers/instances/links.parquet
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// RNG seed, overriding the file's
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Tables and figures from result directories: comparison, latency–throughput curves,
    /// transfers, links, cost, and predicted against measured when exec rows are present
    #[cfg(feature = "analysis")]
    Analyze {
        /// Result directories (`hetsim run --out DIR` or the GPU harness); repeated runs of a
        /// scenario are pooled, sim and exec rows compared
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Directory for the tables (markdown, CSV) and figures (SVG, PNG) [default: RESULTS/analysis]
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// List the built-in models, GPUs and links
    Catalog,
    /// Print the result schema (markdown)
    Schema,
}

struct Bar {
    bar: Option<ProgressBar>,
    total: usize,
}

impl Progress for Bar {
    fn scenario(&mut self, index: usize, name: &str, requests: Option<u64>) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let b = ProgressBar::new(requests.unwrap_or(0));
        b.set_style(
            ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} requests ({elapsed})")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_prefix(format!("[{}/{}] {name}", index + 1, self.total));
        self.bar = Some(b);
    }
    fn done(&mut self, requests: u64) {
        if let Some(b) = &self.bar {
            b.set_position(requests);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Input(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e @ Error::Output(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Run {
            experiment,
            out,
            seed,
        } => {
            let exp = load_experiment(&experiment, seed)?;
            let started = std::time::Instant::now();
            let mut bar = Bar {
                bar: None,
                total: exp.scenarios.len(),
            };
            let result = run_experiment(&exp, out.as_deref(), &mut bar)?;
            if let Some(b) = bar.bar.take() {
                b.finish_and_clear();
            }
            println!(
                "{} — {} scenarios, ranked by tokens per dollar\n",
                exp.name,
                exp.scenarios.len()
            );
            print!("{}", comparison_table(&result.runs));
            for f in &result.files {
                println!("wrote {}", f.display());
            }
            eprintln!("simulated in {:.2} s", started.elapsed().as_secs_f64());
        }
        #[cfg(feature = "analysis")]
        Command::Analyze { results, out } => {
            let report = hetsim_analysis::analyze(&results, out.as_deref())?;
            print!("{}", report.text);
            println!(
                "wrote {} files (tables as markdown and CSV, figures as SVG and PNG) to {}",
                report.files.len(),
                report.out.display()
            );
        }
        Command::Catalog => print_catalog(),
        Command::Schema => print!("{}", hetsim_sim::records::schema_markdown()),
    }
    Ok(())
}

fn print_catalog() {
    println!("models (or give the path of a Hugging Face config.json):");
    println!(
        "  {:<16} {:>7} {:>6} {:>5} {:>6} {:>7} {:>9} {:>12}",
        "name", "params", "layers", "d", "heads", "kv", "vision", "KV/token"
    );
    for name in BUILTIN_MODELS {
        let m = builtin_model(name).expect("built-in");
        let params = (m.llm.params() + m.vision.as_ref().map_or(0, |v| v.params())) as f64 / 1e9;
        let vision = match &m.vision {
            Some(v) => format!("{}L×{}", v.vit.layers, v.vit.hidden),
            None => "-".to_string(),
        };
        println!(
            "  {:<16} {:>6.2}B {:>6} {:>5} {:>6} {:>7} {:>9} {:>9} KiB",
            name,
            params,
            m.llm.layers,
            m.llm.hidden,
            m.llm.heads,
            m.llm.kv_heads,
            vision,
            m.llm.kv_bytes_per_token(Dtype::Bf16) / 1024
        );
    }
    println!("\nGPUs (datasheet; sources in sim/src/catalog/gpu.rs):");
    println!(
        "  {:<15} {:>6} {:>8} {:>9} {:>6} {:>8} {:>6} {:>8}",
        "name", "GiB", "GB/s", "TFLOP/s", "W", "price$", "$/h", "NVLink"
    );
    for g in &GPUS {
        let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
        println!(
            "  {:<15} {:>6.0} {:>8.0} {:>9.1} {:>6.0} {:>8} {:>6} {:>8}",
            g.name,
            g.memory_gib,
            g.mem_bw_gbs,
            g.tflops_16bit,
            g.power_w,
            opt(g.price_usd, 0),
            opt(g.cloud_usd_per_hour, 2),
            g.nvlink.unwrap_or("-")
        );
    }
    println!("\nlinks (per direction):");
    println!(
        "  {:<18} {:>8} {:>6} {:>9} {:>8}",
        "name", "peak GB/s", "eff", "latency", "staged"
    );
    for l in &LINKS {
        println!(
            "  {:<18} {:>8.2} {:>6.2} {:>7.1}µs {:>8}",
            l.name,
            l.peak_gbs,
            l.efficiency,
            l.latency_us,
            if l.host_staged { "yes" } else { "" }
        );
    }
}
