//! The `hetsim` command: parses arguments, calls the library, prints. No domain logic here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hetsim_sim::catalog::resolve_link;
use hetsim_sim::catalog::{BUILTIN_MODELS, Dtype, GPUS, LINKS, builtin_model};
use hetsim_sim::error::{Error, InputError};
use hetsim_sim::experiment::{load_experiment_sized, load_experiment_with_profile};
use hetsim_sim::run::{Progress, comparison_table, run_experiment};
use hetsim_sim::timeline::TraceOptions;
use hetsim_sim::transfer::{TransferQuery, View, parse_size, transfer_report};
use hetsim_sim::work::MAX_REQUESTS;
use indicatif::{ProgressBar, ProgressStyle};

/// Writes to standard output; a closed pipe (`hetsim … | head`) ends the program quietly, as
/// other command-line tools do, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }};
}

macro_rules! sayln {
    () => { say!("\n") };
    ($($arg:tt)*) => {{ say!($($arg)*); say!("\n"); }};
}

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
        /// Also find each scenario's capacity: the highest rate served within its SLO and keeping
        /// up (bisection by simulation), and the margin at the asked rate
        #[arg(long)]
        capacity: bool,
        /// Run even past the size limits (1,000 scenarios, 10 million requests)
        #[arg(long)]
        allow_large: bool,
        #[command(flatten)]
        trace: TraceArgs,
    },
    /// Bytes at every place a model can be cut across two devices, and their time over links
    Transfer(TransferArgs),
    /// Fit the operator model to a profile's phase table and GEMM probes (what carries to other
    /// GPUs); with --against, predict other GPUs' measured tables from the fit (leave one GPU out)
    Fit(FitArgs),
    /// Closed-form cost model beside the simulator: capacity and Tokens/$ of each scenario,
    /// per-phase cost of each GPU type, cheapest homogeneous and heterogeneous placements
    Cost {
        /// Experiment YAML
        experiment: PathBuf,
        /// Requests simulated per scenario at saturation
        #[arg(long, default_value_t = 2000)]
        requests: u64,
        /// RNG seed, overriding the file's
        #[arg(long)]
        seed: Option<u64>,
        /// Run even past the size limits (1,000 scenarios, 10 million requests)
        #[arg(long)]
        allow_large: bool,
    },
    /// Search cluster compositions under a budget and p99 latency targets: closed form prunes,
    /// the simulator scores the rest in parallel; prints the Pareto front and the best plan
    Plan {
        /// Plan YAML (see docs/plan.md)
        plan: PathBuf,
        /// Write every candidate here (parquet)
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// RNG seed, overriding the file's
        #[arg(long)]
        seed: Option<u64>,
        /// Search even past the limit of 50,000 candidates
        #[arg(long)]
        allow_large: bool,
        /// Run one shard of the plan's simulations into this folder (docs/plan.md, "Sharded");
        /// the shard is `--shard I/N`, or a Slurm job array's / Kubernetes Indexed Job's
        #[arg(long, value_name = "DIR", conflicts_with = "merge")]
        shard_out: Option<PathBuf>,
        /// With --shard-out: this shard of that many (`I/N`)
        #[arg(long, value_name = "I/N", requires = "shard_out")]
        shard: Option<String>,
        /// With --shard-out in a Kubernetes Indexed Job: the Job's `completions`
        #[arg(long, value_name = "N", requires = "shard_out")]
        shards: Option<u64>,
        /// Answer from the shards in this folder (every one of them written) instead of
        /// simulating here
        #[arg(long, value_name = "DIR")]
        merge: Option<PathBuf>,
    },
    /// Run a sweep file's scenarios, or one shard of them (`--shard I/N`, or from a Slurm job
    /// array's or Kubernetes Indexed Job's environment), into hive-partitioned parquet; resumes
    /// what a killed run left; `merge` makes one table, `status` says what is missing
    Sweep(SweepArgs),
    /// Tables and figures from result directories: comparison, latency–throughput curves,
    /// transfers, links, cost, and predicted against measured when exec rows are present
    /// (needs a build with `--features analysis`)
    Analyze {
        /// Result directories (`hetsim run --out DIR` or the GPU harness); repeated runs of a
        /// scenario are pooled, sim and exec rows compared
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Directory for the tables (markdown, CSV) and figures (SVG, PNG) [default: RESULTS/analysis]
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Also write report.html: every table and figure in one self-contained, interactive
        /// page (sortable tables, hover for values, scenarios to show and hide; no network)
        #[arg(long)]
        html: bool,
    },
    /// List the built-in models, GPUs and links
    Catalog,
    /// On a GPU machine: list GPUs, how they are linked, and whether NVRTC and cuBLASLt load
    GpuInfo,
    /// On a GPU machine: measure links, GEMM efficiency, HBM bandwidth and launch overhead into a
    /// hardware profile that `hetsim run` accepts (`profile:` in an experiment)
    Calibrate(hetsim_exec::cli::CalibrateArgs),
    /// On a GPU machine: replay an experiment's trace for real and simulate the same, then
    /// compare TTFT, TPOT, end-to-end latency, throughput and bytes (`validate transfer`: links)
    Validate(ValidateArgs),
    /// On a GPU machine: the real engine, LLaVA-1.5 and Qwen2.5-VL (exec/README.md)
    #[command(subcommand)]
    Exec(ExecCommand),
    /// Print the result schema (markdown)
    Schema,
}

#[derive(Subcommand)]
enum ExecCommand {
    /// Every kernel and the whole forward pass on the GPU against the CPU reference (bf16,
    /// relative error ≤ 1e-2, greedy tokens equal)
    Selftest(hetsim_exec::cli::SelftestArgs),
    /// Encode, prefill and decode speed of the engine against the floors measured in the same run
    Bench(hetsim_exec::cli::BenchArgs),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ValidateArgs {
    #[command(subcommand)]
    what: Option<ValidateCommand>,
    /// Experiment YAML (experiments/validate-*.yaml); its profile calibrates the simulator
    experiment: Option<PathBuf>,
    /// Directory for both sources' rows (requests.parquet with source = sim and exec) and comparison.csv
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// GPU to replay on
    #[arg(long, default_value_t = 0)]
    gpu: usize,
    /// RNG seed, overriding the file's
    #[arg(long)]
    seed: Option<u64>,
    /// Hardware profile for the simulator, in place of the file's `profile:` (e.g. one
    /// `hetsim calibrate --model` just wrote on this machine)
    #[arg(long, value_name = "PATH")]
    profile: Option<PathBuf>,
    /// The simulated and the real replay's timeline of each scenario (same tracks)
    #[command(flatten)]
    trace: TraceArgs,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SweepArgs {
    #[command(subcommand)]
    what: Option<SweepCommand>,
    /// Sweep YAML (see docs/sweep.md)
    sweep: Option<PathBuf>,
    /// Directory for sweep=<id>/shard=<i>/part-*.parquet (shared by every shard)
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Run shard I of N (scenarios with index ≡ I mod N) [default: from SLURM_ARRAY_TASK_ID /
    /// JOB_COMPLETION_INDEX, else the whole sweep as 0/1]
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Shards in all, with JOB_COMPLETION_INDEX (the Indexed Job's `completions`)
    #[arg(long, value_name = "N")]
    shards: Option<u64>,
    /// RNG seed, overriding the file's (part of every scenario's hash)
    #[arg(long)]
    seed: Option<u64>,
    /// Scenarios per part file: what a killed run loses at most
    #[arg(long, default_value_t = 256, value_name = "N")]
    part_scenarios: usize,
    /// Threads [default: SLURM_CPUS_PER_TASK, else the cores this process may use]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Run even past the limit of 10 million scenarios
    #[arg(long)]
    allow_large: bool,
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Every shard's parts as one table, in scenario order (refused while scenarios are missing)
    Merge {
        /// The sweep's --out directory
        dir: PathBuf,
        /// The merged table (parquet)
        #[arg(long, short)]
        out: PathBuf,
        /// Which sweep=<id>, where the directory holds several
        #[arg(long, value_name = "ID")]
        sweep: Option<String>,
    },
    /// Scenarios done and missing per shard
    Status {
        /// The sweep's --out directory
        dir: PathBuf,
        /// Which sweep=<id>, where the directory holds several
        #[arg(long, value_name = "ID")]
        sweep: Option<String>,
    },
}

#[derive(clap::Args)]
struct TraceArgs {
    /// Also write each scenario's timeline (Chrome Trace Event JSON, opens in Perfetto) into
    /// --out: steps per instance, transfers per route, request flows, KV and queue counters
    #[arg(long)]
    trace: bool,
    /// Keep only what overlaps FROM:TO seconds of the run on the timelines
    #[arg(long, value_name = "FROM:TO", requires = "trace")]
    trace_window: Option<String>,
    /// Keep the transfers and flows of one request in N on the timelines
    #[arg(long, value_name = "N", requires = "trace")]
    trace_sample: Option<u64>,
}

impl TraceArgs {
    fn options(&self) -> Result<Option<TraceOptions>, InputError> {
        self.trace
            .then(|| TraceOptions::parse(self.trace_window.as_deref(), self.trace_sample))
            .transpose()
    }
}

#[derive(Subcommand)]
enum ValidateCommand {
    /// Ship real KV caches and embeddings between GPUs (paged, gathered, scattered, checksummed),
    /// time them, and compare with the simulator's link model
    Transfer(hetsim_exec::cli::ValidateTransferArgs),
}

#[derive(clap::Args)]
struct TransferArgs {
    /// Built-in model names or Hugging Face config.json paths
    #[arg(required = true)]
    models: Vec<String>,
    /// An image of the request, WIDTHxHEIGHT (repeat for several; default one 640x480)
    #[arg(long = "image", value_name = "WxH")]
    images: Vec<String>,
    /// A text-only request
    #[arg(long, conflicts_with = "images")]
    no_images: bool,
    /// Text tokens of the prompt
    #[arg(long, default_value_t = 128)]
    prompt_tokens: u64,
    /// Force the number of visual tokens (instead of the model's rule for the images)
    #[arg(long)]
    visual_tokens: Option<u64>,
    /// Context at the prefill/decode cut (default: visual + prompt tokens)
    #[arg(long)]
    context: Option<u64>,
    /// Tokens generated (pipeline cuts are crossed by every decode step)
    #[arg(long, default_value_t = 128)]
    output_tokens: u64,
    /// fp32, bf16, fp16 or fp8
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Replace the LLM's depth
    #[arg(long)]
    layers: Option<u64>,
    /// Links to time each cut over
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pcie4-host-staged,pcie4,pcie5,nvlink3,nvlink4,100gbe"
    )]
    links: Vec<String>,
    /// cuts: every cut of the model; depth: R against depth; image-sizes: visual tokens by size
    #[arg(long, value_enum, default_value = "cuts")]
    view: ViewArg,
    /// Depths for --view depth
    #[arg(long, value_delimiter = ',', default_value = "8,16,24,32,40,48,64,80")]
    depths: Vec<u64>,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    format: FormatArg,
    /// Write to this file instead of standard output (required for parquet)
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Compute even past the limit of 100,000 table cells
    #[arg(long)]
    allow_large: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ViewArg {
    Cuts,
    Depth,
    ImageSizes,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum FormatArg {
    Table,
    Csv,
    Json,
    Parquet,
}

/// Common image sizes for the dynamic-resolution table.
const IMAGE_SIZES: [&str; 9] = [
    "224x224",
    "336x336",
    "448x448",
    "640x480",
    "800x600",
    "1024x768",
    "1280x720",
    "1920x1080",
    "3840x2160",
];

#[derive(clap::Args)]
struct FitArgs {
    /// Profile with one phase table (`hetsim calibrate --model`): the GPU to fit on
    profile: PathBuf,
    /// Profile of another GPU with its own phase table: predicted from the fit and compared
    #[arg(long)]
    against: Vec<PathBuf>,
    /// With one --against: EXPERIMENT=COMPARISON_CSV, a `hetsim validate` of that GPU. The
    /// experiment is simulated on the fit (the --against profile's links, none of its phases)
    /// and held against the measured column
    #[arg(long)]
    replay: Vec<String>,
    /// The phase table to fit when PROFILE holds several (a `hetsim calibrate --split` profile
    /// holds the whole GPU's and both partitions'): its GPU, e.g. H100-SXM or H100-SXM@40sm
    #[arg(long)]
    gpu: Option<String>,
    /// The phase table of each --against profile to predict, by its GPU, where one holds several
    #[arg(long)]
    against_gpu: Option<String>,
    /// Print every measured point beside its prediction, not only the summary by phase
    #[arg(long)]
    points: bool,
    /// Write PROFILE with the fit added (`operator_fit:`), for `hetsim run` on other GPUs
    #[arg(long, short)]
    out: Option<PathBuf>,
}

fn fit(a: FitArgs) -> Result<(), Error> {
    use hetsim_sim::fit::{
        ProfileTable, evaluate, fit_markdown, points_table, replay_check, summarize,
    };
    use hetsim_sim::profile::HardwareProfile;
    if !a.replay.is_empty() && a.against.len() != 1 {
        return Err(InputError::new(
            "--replay needs exactly one --against: the GPU the replay ran on",
        )
        .into());
    }
    let mut profile = HardwareProfile::load(&a.profile)?;
    let table = ProfileTable::of(&profile, &a.profile.display().to_string(), a.gpu.as_deref())?;
    let f = hetsim_sim::fit::fit(&table.measurements())?;
    say!("{}", fit_markdown(&f));
    if a.points {
        sayln!();
        say!(
            "{}",
            points_table(&evaluate(&table.measurements(), &f)?).to_text(2)
        );
    }
    for other in &a.against {
        let mut target = HardwareProfile::load(other)?;
        let t = ProfileTable::of(
            &target,
            &other.display().to_string(),
            a.against_gpu.as_deref(),
        )?;
        let points = evaluate(&t.measurements(), &f)?;
        sayln!(
            "\n## {} on {} predicted from the fit on {} ({})\n",
            t.phases.model,
            t.gpu.name,
            f.catalog_gpu,
            other.display()
        );
        sayln!("| phase | points | median abs error % | max abs error % |\n|---|---|---|---|");
        for r in summarize(&points) {
            sayln!(
                "| {} | {} | {:.1} | {:.1} |",
                r.phase,
                r.points,
                r.median_abs_error_pct,
                r.max_abs_error_pct
            );
        }
        if a.points {
            sayln!();
            say!("{}", points_table(&points).to_text(2));
        }
        target.phases.clear();
        target.operator_fit = Some(f.clone());
        for r in &a.replay {
            let Some((exp, csv)) = r.split_once('=') else {
                return Err(InputError::new(format!(
                    "--replay {r}: expected EXPERIMENT=COMPARISON_CSV"
                ))
                .into());
            };
            let c = replay_check(exp.as_ref(), target.clone(), csv.as_ref())?;
            sayln!(
                "\n### replay {exp} simulated on the fit, against {csv}: median |error| {:.1} % over {} metrics\n",
                c.median_abs_error_pct.unwrap_or(f64::NAN),
                c.table.rows.len()
            );
            let t = c.table;
            say!("{}", t.to_text(4));
        }
    }
    if let Some(out) = &a.out {
        profile.operator_fit = Some(f);
        hetsim_sim::output::write_atomically(out, profile.to_yaml())?;
        sayln!("\nwrote {}", out.display());
    }
    Ok(())
}

/// The shard this process runs: `--shard I/N`, else a job array's (Slurm, or a Kubernetes
/// Indexed Job with `--shards N`), else all of it (`whole` says what that is); and where it came
/// from.
fn shard_of(
    shard: Option<&str>,
    shards: Option<u64>,
    whole: &str,
) -> Result<(hetsim_sim::sweep::Shard, String), Error> {
    use hetsim_sim::sweep::Shard;
    let env = |k: &str| std::env::var(k).ok();
    Ok(match (shard, Shard::from_env(&env, shards)?) {
        (Some(s), _) => (Shard::parse(s)?, "--shard".to_string()),
        (None, Some((s, from))) => (s, from.to_string()),
        (None, None) if shards.is_some() => {
            return Err(InputError::new(
                "--shards N needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job); elsewhere give --shard I/N",
            )
            .into());
        }
        (None, None) => (
            Shard::new(0, 1)?,
            format!("no --shard and no job array: {whole}"),
        ),
    })
}

fn sweep(a: SweepArgs) -> Result<(), Error> {
    use hetsim_sim::sweep::{load_sweep, merge, run_shard, status};
    match a.what {
        Some(SweepCommand::Merge { dir, out, sweep }) => {
            let rows = merge(&dir, sweep.as_deref(), &out)?;
            sayln!("wrote {} ({rows} scenarios)", out.display());
            return Ok(());
        }
        Some(SweepCommand::Status { dir, sweep }) => {
            let st = status(&dir, sweep.as_deref())?;
            sayln!(
                "sweep `{}` ({}): {} of {} scenarios done over {} shards",
                st.name,
                st.id,
                st.done(),
                st.scenarios,
                st.shards.len()
            );
            say!("{}", st.table().to_text(0));
            match st.missing() {
                m if m.is_empty() => sayln!("complete"),
                m => sayln!("incomplete: shards {m}"),
            }
            return Ok(());
        }
        None => {}
    }
    let (Some(file), Some(out)) = (a.sweep, a.out) else {
        return Err(InputError::new(
            "give a sweep file and --out DIR (`hetsim sweep SWEEP.yaml --out DIR`), or `merge` / `status`",
        )
        .into());
    };
    if a.part_scenarios == 0 {
        return Err(InputError::new("--part-scenarios 0: give at least 1").into());
    }
    let (shard, from) = shard_of(a.shard.as_deref(), a.shards, "the whole sweep")?;
    let threads = match a.threads {
        Some(0) => return Err(InputError::new("--threads 0: give at least 1").into()),
        Some(n) => n,
        None => match std::env::var("SLURM_CPUS_PER_TASK") {
            Ok(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    InputError::new(format!(
                        "SLURM_CPUS_PER_TASK=`{v}`: expected a whole number ≥ 1"
                    ))
                })?,
            Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    };
    let sweep = load_sweep(&file, a.seed, a.allow_large)?;
    let started = std::time::Instant::now();
    eprintln!(
        "sweep `{}` ({}): {} scenarios; shard {}/{} ({from}): {} of them, {threads} threads",
        sweep.name,
        sweep.id,
        sweep.scenarios,
        shard.index,
        shard.count,
        shard.len(sweep.scenarios)
    );
    let r = run_shard(
        &sweep,
        &out,
        shard,
        a.part_scenarios,
        threads,
        &mut |done, all| {
            eprintln!(
                "shard {}/{}: {done} of {all} done ({:.1} s)",
                shard.index,
                shard.count,
                started.elapsed().as_secs_f64()
            )
        },
    )?;
    sayln!(
        "shard {}/{}: {} scenarios: {} simulated, {} rejected, {} done before; {}",
        shard.index,
        shard.count,
        r.assigned,
        r.simulated,
        r.rejected,
        r.skipped,
        r.dir.display()
    );
    Ok(())
}

fn transfer(a: TransferArgs) -> Result<(), Error> {
    let sizes = |list: &[String]| {
        list.iter()
            .map(|s| parse_size(s))
            .collect::<Result<Vec<_>, _>>()
    };
    let images = if a.no_images {
        Vec::new()
    } else if a.images.is_empty() {
        vec![(640, 480)]
    } else {
        sizes(&a.images)?
    };
    let links = a
        .links
        .iter()
        .map(|l| resolve_link(l))
        .collect::<Result<Vec<_>, _>>()?;
    let view = match a.view {
        ViewArg::Cuts => View::Cuts,
        ViewArg::Depth => View::Depth,
        ViewArg::ImageSizes => View::ImageSizes,
    };
    let query = TransferQuery {
        models: a.models,
        sizes: if a.images.is_empty() {
            sizes(&IMAGE_SIZES.map(String::from))?
        } else {
            images.clone()
        },
        images,
        prompt_tokens: a.prompt_tokens,
        visual_tokens: a.visual_tokens,
        context_tokens: a.context,
        output_tokens: a.output_tokens,
        dtype: Dtype::parse(&a.dtype)?,
        layers: a.layers,
        links,
        view,
        depths: a.depths,
    };
    query.check(a.allow_large)?;
    let report = transfer_report(&query, a.format == FormatArg::Table)?;
    let mut all = hetsim_sim::table::Table {
        columns: report.tables[0].columns.clone(),
        rows: Vec::new(),
    };
    for t in &report.tables {
        if t.columns == all.columns {
            all.rows.extend(t.rows.iter().cloned());
        }
    }
    let text = match a.format {
        FormatArg::Table => {
            let mut s = String::new();
            for t in &report.tables {
                s.push_str(&t.to_text(3));
                s.push('\n');
            }
            for n in &report.notes {
                s.push_str(&format!("• {n}\n"));
            }
            s
        }
        FormatArg::Csv => all.to_csv(),
        FormatArg::Json => all.to_json(),
        FormatArg::Parquet => {
            let out = a
                .out
                .as_ref()
                .ok_or_else(|| InputError::new("--format parquet needs --out FILE"))?;
            all.write_parquet(out)?;
            sayln!("wrote {}", out.display());
            return Ok(());
        }
    };
    match &a.out {
        Some(path) => hetsim_sim::output::write_atomically(path, &text)?,
        None => say!("{text}"),
    }
    Ok(())
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

/// On SIGINT or SIGTERM, removes this run's staging directories and temporary files and exits
/// 128 + the signal (130, 143), as shells report a process a signal ended. A thread waits for
/// the signal, so the cleanup runs outside the signal handler.
fn clean_up_on_signal() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    hetsim_sim::publish::abandon_all_and_exit(128 + sig);
                }
            });
        }
        // Without the handler a signal still ends the run; the next run sweeps what it left.
        Err(e) => eprintln!("warning: cannot handle SIGINT/SIGTERM: {e}"),
    }
}

fn main() -> ExitCode {
    clean_up_on_signal();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The GPU harness reports its own errors and exit codes (2: bad input or no driver).
fn gpu_exit(r: hetsim_exec::Result<()>) -> ExitCode {
    ExitCode::from(hetsim_exec::cli::exit_code(r) as u8)
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Run {
            experiment,
            out,
            seed,
            capacity,
            allow_large,
            trace,
        } => {
            let trace = trace.options()?;
            let exp = load_experiment_sized(&experiment, seed, None, allow_large)?;
            let started = std::time::Instant::now();
            let mut bar = Bar {
                bar: None,
                total: exp.scenarios.len(),
            };
            let result = run_experiment(&exp, out.as_deref(), trace, &mut bar)?;
            if let Some(b) = bar.bar.take() {
                b.finish_and_clear();
            }
            sayln!(
                "{} — {} scenarios, ranked by SLO-meeting output tokens per dollar (SLO tokens/$)\n",
                exp.name,
                exp.scenarios.len()
            );
            say!("{}", comparison_table(&result.runs));
            if let Some(note) = hetsim_sim::interference::notes(&exp) {
                say!("{note}");
            }
            if capacity {
                sayln!(
                    "\ncapacity: the highest rate each scenario serves within its SLO and keeping up (bisection to {:.0} %)\n",
                    100.0 * hetsim_sim::headroom::TOLERANCE
                );
                say!("{}", hetsim_sim::run::capacity_table(&exp)?.to_text(2));
            }
            for f in &result.files {
                sayln!("wrote {}", f.display());
            }
            eprintln!("simulated in {:.2} s", started.elapsed().as_secs_f64());
        }
        Command::Transfer(a) => transfer(a)?,
        Command::Fit(a) => fit(a)?,
        Command::Plan {
            plan,
            out,
            seed,
            allow_large,
            shard_out,
            shard,
            shards,
            merge,
        } => {
            let plan = hetsim_sim::experiment::load_plan(&plan, seed)?;
            if let Some(dir) = shard_out {
                let (shard, from) = shard_of(shard.as_deref(), shards, "the whole plan")?;
                let done =
                    hetsim_sim::plan::simulate_shard(&plan, allow_large, shard, &dir, &|_, _| {})?;
                if done.resumed {
                    sayln!(
                        "shard {}/{} ({from}): already done, {}",
                        shard.index,
                        shard.count,
                        done.path.display()
                    );
                } else {
                    sayln!(
                        "shard {}/{} ({from}): {} candidates simulated, wrote {}",
                        shard.index,
                        shard.count,
                        done.simulated,
                        done.path.display()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            // On standard error, hidden when it is not a terminal.
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{wide_bar} {pos}/{len} candidates simulated ({elapsed}, ETA {eta})",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            let r = match &merge {
                Some(dir) => hetsim_sim::plan::merge_shards(&plan, allow_large, dir),
                None => hetsim_sim::plan::search(&plan, allow_large, &|done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                }),
            };
            bar.finish_and_clear();
            let r = r?;
            let table = hetsim_sim::plan::candidates_table(&r);
            let keep = |rows: &[usize]| hetsim_sim::table::Table {
                rows: rows.iter().map(|i| table.rows[*i].clone()).collect(),
                ..table.clone()
            };
            let front: Vec<usize> = r.pareto.clone();
            let refs: Vec<usize> = (0..r.scored.len())
                .filter(|i| r.scored[*i].candidate.reference)
                .collect();
            match &merge {
                Some(dir) => sayln!(
                    "{} — {} candidates, {} simulated by the shards in {}\n",
                    plan.name,
                    r.candidates,
                    r.simulated,
                    dir.display()
                ),
                None => sayln!(
                    "{} — {} candidates, {} simulated, in {:.2} s (closed form {:.0} candidates/s, \
                     simulation {:.1} candidates/s, on {} threads)\n",
                    plan.name,
                    r.candidates,
                    r.simulated,
                    r.seconds,
                    r.candidates as f64 / r.screen_seconds,
                    r.simulated as f64 / r.simulate_seconds,
                    r.threads
                ),
            }
            sayln!("Pareto front (Tokens/$ against p99 TTFT and p99 TPOT), best Tokens/$ first\n");
            say!("{}", keep(&front).to_text(3));
            let rejected = hetsim_sim::plan::rejections_table(&r);
            if !rejected.rows.is_empty() {
                sayln!("\nrejected, and why (docs/plan.md: each status)\n");
                say!("{}", rejected.to_text(0));
            }
            if !refs.is_empty() {
                sayln!("\nreferences\n");
                say!("{}", keep(&refs).to_text(3));
            }
            if let Some(b) = r.best {
                sayln!(
                    "\nbest plan (highest Tokens/$ at the offered rate among the feasible): {}",
                    r.scored[b].candidate.name
                );
            }
            if let Some((cap, asked)) = &r.best_capacity {
                sayln!(
                    "• headroom: {}",
                    hetsim_sim::headroom::headroom_text(cap, *asked)
                );
            }
            for n in &r.notes {
                sayln!("• {n}");
            }
            if let Some(out) = out {
                table.write_parquet(&out)?;
                sayln!("wrote {}", out.display());
            }
        }
        Command::Sweep(a) => sweep(a)?,
        Command::Cost {
            experiment,
            requests,
            seed,
            allow_large,
        } => {
            if requests == 0 {
                return Err(InputError::new("--requests 0: simulate at least one request").into());
            }
            let exp = load_experiment_sized(&experiment, seed, None, allow_large)?;
            let total = requests.saturating_mul(exp.scenarios.len() as u64);
            hetsim_sim::work::within("requests", total, MAX_REQUESTS, allow_large)
                .map_err(|e| e.context("--requests × scenarios"))?;
            let r = hetsim_sim::costmodel::cost_report(&exp, requests)?;
            sayln!(
                "{} — closed-form capacity against the simulator at saturation\n",
                exp.name
            );
            say!("{}", r.deployments.to_text(2));
            if !r.versus.rows.is_empty() {
                sayln!("\nagainst the baseline (fractions; gain = Tokens/$ ratio − 1)\n");
                say!("{}", r.versus.to_text(3));
            }
            sayln!("\nper-request phase time and cost on each GPU type (tp = 1)\n");
            say!("{}", r.tiers.to_text(2));
            sayln!("\ncheapest whole-GPU placements of the phases\n");
            say!(
                "{}",
                hetsim_sim::table::Table {
                    rows: r.placements.rows.iter().take(8).cloned().collect(),
                    ..r.placements.clone()
                }
                .to_text(2)
            );
            sayln!();
            for n in &r.notes {
                sayln!("• {n}");
            }
        }
        #[cfg(feature = "analysis")]
        Command::Analyze { results, out, html } => {
            let report = hetsim_analysis::analyze(&results, out.as_deref(), html)?;
            say!("{}", report.text);
            sayln!(
                "wrote {} files (tables as markdown and CSV, figures as SVG and PNG{}) to {}",
                report.files.len(),
                if html { ", the report as HTML" } else { "" },
                report.out.display()
            );
            if html {
                sayln!(
                    "report: {}",
                    report.out.join(hetsim_analysis::html::FILE).display()
                );
            }
        }
        // polars takes ~15 min to build on 2 cores, so the default build leaves `analyze` out;
        // the command still exists so that the user is told how to get it.
        #[cfg(not(feature = "analysis"))]
        Command::Analyze { .. } => {
            return Err(InputError::new(
                "this hetsim was built without `analyze` (the polars feature): run \
                 `cargo run --release --features analysis -- analyze …`, or install it with \
                 `cargo install --path . --features analysis`",
            )
            .into());
        }
        Command::Catalog => print_catalog(),
        Command::GpuInfo => return Ok(gpu_exit(hetsim_exec::cli::info())),
        Command::Calibrate(a) => return Ok(gpu_exit(hetsim_exec::cli::calibrate(&a))),
        Command::Validate(ValidateArgs {
            what: Some(ValidateCommand::Transfer(a)),
            ..
        }) => {
            return Ok(gpu_exit(hetsim_exec::cli::validate_transfer(&a)));
        }
        Command::Validate(ValidateArgs {
            what: None,
            experiment,
            out,
            gpu,
            seed,
            profile,
            trace,
        }) => {
            let trace = trace.options()?;
            let path = experiment.ok_or_else(|| {
                InputError::new("hetsim validate: give an experiment file (or `validate transfer`)")
            })?;
            let exp = load_experiment_with_profile(&path, seed, profile.as_deref())?;
            let v = match hetsim_exec::serve::replay::validate(&exp, out.as_deref(), trace, gpu) {
                Ok(v) => v,
                Err(e) => return Ok(gpu_exit(Err(e))),
            };
            sayln!(
                "{} — predicted (simulator, calibrated profile) against measured (real replay)\n",
                exp.name
            );
            say!("{}", v.comparison.to_text(4));
            for why in &v.skipped {
                sayln!("• not replayed: {why}");
            }
            match v.median_abs_error_pct {
                Some(m) => sayln!(
                    "\nverdict: median |error| {m:.1} % over {} metric(s) — {}",
                    v.comparison.rows.len(),
                    if m <= 10.0 {
                        "within the 10 % target"
                    } else {
                        "outside the 10 % target"
                    }
                ),
                None => sayln!("\nverdict: nothing was replayed, so nothing to compare"),
            }
            for f in &v.files {
                sayln!("wrote {}", f.display());
            }
        }
        Command::Exec(ExecCommand::Selftest(a)) => {
            return Ok(gpu_exit(hetsim_exec::cli::selftest(&a)));
        }
        Command::Exec(ExecCommand::Bench(a)) => return Ok(gpu_exit(hetsim_exec::cli::bench(&a))),
        Command::Schema => say!("{}", hetsim_sim::records::schema_markdown()),
    }
    Ok(ExitCode::SUCCESS)
}

/// A catalog price as the table prints it: the number, and "  [KEY], date" (or "-" and "").
fn quoted(q: Option<hetsim_sim::catalog::gpu::Quote>, decimals: usize) -> (String, String) {
    match q {
        Some(q) => (
            format!("{:.decimals$}", q.usd),
            format!("  [{}], {}", q.source, q.date),
        ),
        None => ("-".into(), String::new()),
    }
}

fn print_catalog() {
    sayln!("models (or give the path of a Hugging Face config.json):");
    sayln!(
        "  {:<16} {:>7} {:>6} {:>5} {:>6} {:>7} {:>9} {:>12}",
        "name",
        "params",
        "layers",
        "d",
        "heads",
        "kv",
        "vision",
        "KV/token"
    );
    for name in BUILTIN_MODELS {
        let m = builtin_model(name).expect("built-in");
        let params = (m.llm.params() + m.vision.as_ref().map_or(0, |v| v.params())) as f64 / 1e9;
        let vision = match &m.vision {
            Some(v) => format!("{}L×{}", v.vit.layers, v.vit.hidden),
            None => "-".to_string(),
        };
        sayln!(
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
    sayln!(
        "\nGPUs (datasheet; each price's source key [docs/reference/gpus_SOURCES.md] and the date it gives, n.d. = none):"
    );
    sayln!(
        "  {:<15} {:>6} {:>8} {:>9} {:>6} {:>8} {:>8} {:<24} {:>6} {:<24}",
        "name",
        "GiB",
        "GB/s",
        "TFLOP/s",
        "W",
        "NVLink",
        "price$",
        "  source, date",
        "$/h",
        "  source, date"
    );
    for g in &GPUS {
        let (price, price_src) = quoted(g.price_usd, 0);
        let (hourly, hourly_src) = quoted(g.cloud_usd_per_hour, 2);
        sayln!(
            "  {:<15} {:>6.0} {:>8.0} {:>9.1} {:>6.0} {:>8} {:>8} {:<24} {:>6} {:<24}",
            g.name,
            g.memory_gib,
            g.mem_bw_gbs,
            g.tflops_16bit,
            g.power_w,
            g.nvlink.unwrap_or("-"),
            price,
            price_src,
            hourly,
            hourly_src
        );
    }
    sayln!("\nlinks (per direction):");
    sayln!(
        "  {:<18} {:>8} {:>6} {:>9} {:>8}",
        "name",
        "peak GB/s",
        "eff",
        "latency",
        "staged"
    );
    for l in &LINKS {
        sayln!(
            "  {:<18} {:>8.2} {:>6.2} {:>7.1}µs {:>8}",
            l.name,
            l.peak_gbs,
            l.efficiency,
            l.latency_us,
            if l.host_staged { "yes" } else { "" }
        );
    }
}
