//! Thin CLI layer the `hetsim` binary can mount: clap `Args` structs and `run` functions.
//! Errors go to stderr; `exit_code` maps them (2: bad input or no CUDA; 1: a failed run).

use crate::cuda::device;
use crate::cuda::green::GreenCtx;
use crate::error::{Error, Result};
use crate::measure::against_torch;
use crate::measure::bench;
use crate::measure::calibrate;
use crate::measure::probes::green;
use crate::measure::report;
use crate::measure::validate;
use crate::serve::kv::ModelShape;
use crate::serve::model::LlavaConfig;
use crate::serve::model::gpu::ServedConfig;
use crate::serve::model::qwen2_5_vl::Qwen25VlConfig;
use crate::serve::selftest;
use crate::util;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct CalibrateArgs {
    /// Where to write the hardware profile (YAML) that `hetsim run` reads.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write every measurement as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the markdown report here (it is printed to stdout in any case).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Fewer shapes and sizes: a smoke test of a minute or less.
    #[arg(long)]
    pub quick: bool,
    /// Skip the green-context (SM partition) probes.
    #[arg(long)]
    pub no_green: bool,
    /// Skip the link probes.
    #[arg(long)]
    pub no_links: bool,
    /// With --no-links: copy the `links` of this profile (an earlier `calibrate` of the same
    /// machine) into the one written, so it is complete for `hetsim validate`.
    #[arg(long, value_name = "PROFILE", requires = "no_links")]
    pub links_from: Option<PathBuf>,
    /// Skip the compute probes.
    #[arg(long)]
    pub no_compute: bool,
    /// GPUs for the compute probes, comma-separated (default: first GPU of each model).
    #[arg(long, value_delimiter = ',')]
    pub gpu: Option<Vec<usize>>,
    /// Also run the phase profiler for this model (LLaVA-1.5 or Qwen2.5-VL: encode, prefill,
    /// decode on a grid) on the first GPU and write its `phases` into the profile.
    #[arg(long)]
    pub model: Option<String>,
    /// Decoder depth for the phase profiler (default: the model's own).
    #[arg(long)]
    pub layers: Option<usize>,
    /// With --model: also profile the phases on the two green-context partitions of the GPU
    /// that a split of this many SMs makes (the split and the SMs that remain), one at a time,
    /// as the simulator's `<GPU>@<SMs>sm` GPUs (`partitions:` in an experiment's node), and
    /// each phase's step on each beside a sustained decode and encode loop on the other (the
    /// phase table's `interference`).
    #[arg(long, value_name = "SMS", requires = "model")]
    pub split: Option<u32>,
}

pub fn calibrate(a: &CalibrateArgs) -> Result<()> {
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Error::Invalid(format!(
            "--out {}: folder {} does not exist",
            a.out.display(),
            dir.display()
        )));
    }
    let opts = calibrate::Options {
        out: None,
        json: a.json.clone(),
        quick: a.quick,
        green: !a.no_green,
        links: !a.no_links,
        compute: !a.no_compute,
        gpus: a.gpu.clone(),
        command: util::command_line(),
    };
    // Check the model name before spending GPU time on the probes.
    let phase_model = a
        .model
        .as_deref()
        .map(|m| ServedConfig::builtin(m, a.layers))
        .transpose()?;
    // Read the link profile before spending GPU time, too.
    let links_from = a
        .links_from
        .as_deref()
        .map(|p| calibrate::read_links_from(p).map(|prof| (p, prof)))
        .transpose()?;
    let cal = calibrate::measure(&opts)?;
    let md = report::calibration_markdown(&cal);
    println!("{md}");
    if let Some(p) = &a.report {
        hetsim_sim::output::write_atomically(p, &md)?;
    }
    if let Some(p) = &a.json {
        let s =
            serde_json::to_string_pretty(&cal).map_err(|e| Error::Invalid(format!("JSON: {e}")))?;
        hetsim_sim::output::write_atomically(p, s)?;
    }
    let mut prof = calibrate::to_profile(&cal);
    if let Some((path, from)) = &links_from {
        prof = calibrate::with_links_from(prof, from, path);
    }
    if let Some(c) = phase_model {
        let gpu_index = a.gpu.as_ref().and_then(|g| g.first().copied()).unwrap_or(0);
        let gpu = device::Gpu::open(gpu_index)?;
        let catalog_gpu = crate::measure::catalog::gpu_spec(&gpu.info.name)
            .map(|g| g.name.to_string())
            .unwrap_or_else(|| gpu.info.name.clone());
        let grid = if a.quick {
            bench::PhaseGrid::quick(&c)
        } else {
            bench::PhaseGrid::full(&c)?
        };
        let whole = device::Gpu::open(gpu_index)?;
        let p = bench::phase_profile(&c, gpu, &catalog_gpu, &grid, 20)?;
        println!("{}", phase_markdown(&p));
        prof.phases
            .retain(|x| !(x.model == p.model && x.catalog_gpu == p.catalog_gpu));
        // The table predicts this GPU; fitted through the operators it predicts the others.
        // Fitted alone: the profile may hold other models' tables for this GPU.
        let just_this = hetsim_sim::profile::HardwareProfile {
            phases: vec![p.clone()],
            ..prof.clone()
        };
        prof.phases.push(p);
        match hetsim_sim::fit::ProfileTable::of(&just_this, "the new profile", None)
            .and_then(|t| hetsim_sim::fit::fit(&t.measurements()))
        {
            Ok(fit) => {
                println!("{}", hetsim_sim::fit::fit_markdown(&fit));
                prof.operator_fit = Some(fit);
            }
            Err(e) => eprintln!("no operator fit in the profile: {e}"),
        }
        if let Some(sms) = a.split {
            let invalid = |e: hetsim_sim::error::InputError| Error::Invalid(e.to_string());
            let parent = hetsim_sim::catalog::resolve_gpu(&catalog_gpu).map_err(invalid)?;
            let model = hetsim_sim::catalog::resolve_model(c.name()).map_err(invalid)?;
            let (small, rest) = GreenCtx::split(&whole, sms)?;
            for (part, is_small) in [(&small, true), (&rest, false)] {
                let spec =
                    hetsim_sim::catalog::partition::partition(parent, part.sms).map_err(invalid)?;
                eprintln!("phase profile on {} (the other partition idle)", spec.name);
                let mut p = bench::phase_profile(&c, part.view(&whole), spec.name, &grid, 20)?;
                // And how much its steps slow while the other partition is busy.
                let timed = green::interference(&c, &model, gpu_index, sms, is_small)?;
                p.interference = timed.iter().map(|t| t.point()).collect();
                println!("{}", phase_markdown(&p));
                prof.phases
                    .retain(|x| !(x.model == p.model && x.catalog_gpu == p.catalog_gpu));
                prof.phases.push(p);
            }
            whole.bind()?;
        }
    }
    calibrate::write_profile(&prof, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// The phase profile as markdown tables.
pub fn phase_markdown(p: &crate::profile::PhaseProfile) -> String {
    let mut s = format!(
        "## Phase profile: {} on {} ({})\n\n| encode images | size | ms |\n|---|---|---|\n",
        p.model, p.catalog_gpu, p.dtype
    );
    for e in &p.encode {
        let (w, h) = e.size();
        s += &format!("| {} | {w}×{h} | {:.3} |\n", e.images, e.seconds * 1e3);
    }
    s += "\n| prefill sequences | tokens | ms |\n|---|---|---|\n";
    for e in &p.prefill {
        s += &format!(
            "| {} | {} | {:.3} |\n",
            e.sequences,
            e.tokens,
            e.seconds * 1e3
        );
    }
    s += "\n| decode batch | context | ms |\n|---|---|---|\n";
    for e in &p.decode {
        s += &format!("| {} | {} | {:.3} |\n", e.batch, e.context, e.seconds * 1e3);
    }
    if !p.interference.is_empty() {
        s += "\n| step | sibling's load | own GB/s | sibling GB/s | slowdown |\n|---|---|---|---|---|\n";
        for i in &p.interference {
            s += &format!(
                "| {} | {} | {:.0} | {:.0} | {:.3} |\n",
                i.phase.name(),
                i.load.name(),
                i.own_gbs,
                i.sibling_gbs,
                i.slowdown
            );
        }
    }
    s
}

#[derive(clap::Args, Debug, Clone)]
pub struct SelftestArgs {
    /// GPU to test.
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Seed of the random test model.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Every engine kernel and the whole forward on the GPU against the CPU reference (tiny random
/// LLaVA), then the engine end to end. Prints a table; a failed check exits with code 2.
pub fn selftest(a: &SelftestArgs) -> Result<()> {
    let checks = selftest::run(a.gpu, a.seed)?;
    println!("{}", selftest::table(&checks));
    // A wrong result is something the user must act on (exit code 2), like bad input.
    selftest::failures(&checks).map_err(|e| Error::Invalid(e.to_string()))
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Built-in LLaVA-1.5 or Qwen2.5-VL model.
    #[arg(long, default_value = "llava-1.5-7b")]
    pub model: String,
    /// Decoder depth (default: the model's own).
    #[arg(long)]
    pub layers: Option<usize>,
    /// GPU to run on.
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Timed repeats per decode point (prefill and encode: at most 10).
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Only this phase's points (to profile one phase).
    #[arg(long, value_parser = ["decode", "prefill", "encode"])]
    pub only: Option<String>,
    /// Instead of timing: GPU time per operation of one pass at each target point.
    #[arg(long)]
    pub breakdown: bool,
    /// Also write the table here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Qwen2.5-VL only: transformers' times of the same passes
    /// (`exec/scripts/torch-qwen2.5-vl-forward.py`'s torch.json), put beside ours in a second
    /// table.
    #[arg(long)]
    pub against: Option<PathBuf>,
}

/// Engine speed against the floors measured in the same run; prints a table.
pub fn bench(a: &BenchArgs) -> Result<()> {
    if a.iters == 0 {
        return Err(Error::Invalid("--iters must be at least 1".into()));
    }
    if a.model.starts_with("qwen2.5-vl-") {
        if a.breakdown || a.only.is_some() {
            return Err(Error::Invalid(
                "--breakdown and --only are for LLaVA models; Qwen2.5-VL's bench times every phase"
                    .into(),
            ));
        }
        let c = Qwen25VlConfig::builtin(&a.model, a.layers)?;
        // Read and checked before the GPU time is spent.
        let torch = match &a.against {
            Some(p) => {
                let run = against_torch::read(p)?;
                against_torch::check_model(&run, &c.name, c.llm.layers)?;
                Some(run)
            }
            None => None,
        };
        let (report, ops) = crate::measure::bench_qwen::bench(&c, a.gpu, a.iters)?;
        let Some(run) = torch else {
            return print_bench(a, &c.name, c.llm.layers, &report, &ops);
        };
        let name = device::Gpu::open(a.gpu)?.info.name;
        // A join that fails still leaves our own table printed and written.
        return match against_torch::join(&report, &run, &name) {
            Ok(rows) => {
                let more = against_torch::table(&run, &rows) + "\n" + &ops;
                print_bench(a, &c.name, c.llm.layers, &report, &more)
            }
            Err(e) => {
                print_bench(a, &c.name, c.llm.layers, &report, &ops)?;
                Err(e)
            }
        };
    }
    if a.against.is_some() {
        return Err(Error::Invalid(
            "--against is for Qwen2.5-VL models (transformers' times of bench_qwen's passes)"
                .into(),
        ));
    }
    let c = LlavaConfig::builtin(&a.model, a.layers)?;
    if a.breakdown {
        let t = bench::breakdown(&c, a.gpu, a.only.as_deref())?;
        println!("{t}");
        if let Some(p) = &a.out {
            hetsim_sim::output::write_atomically(p, &t)?;
        }
        return Ok(());
    }
    let report = bench::bench(&c, a.gpu, a.iters, a.only.as_deref())?;
    print_bench(a, &c.name, c.llm.layers, &report, "")
}

/// The bench's table, then `more` (markdown), printed and written to `--out`.
fn print_bench(
    a: &BenchArgs,
    model: &str,
    layers: usize,
    report: &bench::BenchReport,
    more: &str,
) -> Result<()> {
    let name = device::Gpu::open(a.gpu)?.info.name;
    let t = bench::bench_table(
        model,
        layers,
        &format!("{name}, {}", util::now_utc()),
        report,
    ) + "\n"
        + more;
    println!("{t}");
    if let Some(p) = &a.out {
        hetsim_sim::output::write_atomically(p, &t)?;
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct ValidateTransferArgs {
    /// Model whose shapes to use (built in: llava-1.5-7b).
    #[arg(long, default_value = "llava-1.5-7b")]
    pub model: String,
    /// Model depths to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,48,64,80")]
    pub layers: Vec<usize>,
    /// Context tokens s of the request whose KV cache is shipped (576 visual + prompt).
    #[arg(long, default_value_t = 704)]
    pub context: usize,
    /// Timed repeats per case (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Source GPU.
    #[arg(long, default_value_t = 0)]
    pub src: usize,
    /// Destination GPU (on a one-GPU machine both are GPU 0: a host round trip).
    #[arg(long, default_value_t = 1)]
    pub dst: usize,
    /// Methods to run, comma-separated (nvlink_peer, pcie_p2p, pcie_staged_pinned, pcie_pageable).
    #[arg(long, value_delimiter = ',')]
    pub method: Option<Vec<String>>,
    /// Write the rows here (CSV, source = exec, with every stage's time).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the transfers as the simulator's result tables (parquet) into this folder.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Also write the markdown report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// A profile from `calibrate` on this machine: predict each transfer with its link model
    /// (latency + bytes / bandwidth) and report the error.
    #[arg(long)]
    pub profile: Option<PathBuf>,
}

pub fn model_shape(name: &str) -> Result<ModelShape> {
    match name.to_ascii_lowercase().as_str() {
        "llava-1.5-7b" | "llava-v1.5-7b" => Ok(ModelShape::LLAVA_15_7B),
        "llava-1.5-13b" | "llava-v1.5-13b" => Ok(ModelShape {
            layers: 40,
            kv_heads: 40,
            head_dim: 128,
            hidden: 5120,
            visual_tokens: 576,
        }),
        other => Err(Error::Invalid(format!(
            "--model {other}: known models are llava-1.5-7b, llava-1.5-13b"
        ))),
    }
}

pub fn validate_transfer(a: &ValidateTransferArgs) -> Result<()> {
    let shape = model_shape(&a.model)?;
    let profile = a
        .profile
        .as_deref()
        .map(calibrate::read_profile)
        .transpose()?;
    let opts = validate::Options {
        model_name: a.model.clone(),
        shape,
        layers: a.layers.clone(),
        context: a.context,
        repeats: a.repeats,
        src: a.src,
        dst: a.dst,
        methods: a.method.clone(),
        csv: a.csv.clone(),
        results: a.results.clone(),
        command: util::command_line(),
        seed: 42,
        profile,
    };
    let rows = validate::run(&opts)?;
    let md = report::validate_markdown(&rows, &opts.command);
    println!("{md}");
    if let Some(p) = &a.report {
        hetsim_sim::output::write_atomically(p, &md)?;
    }
    Ok(())
}

/// List GPUs and how they are connected.
pub fn info() -> Result<()> {
    device::init()?;
    let n = device::device_count()?;
    println!(
        "CUDA driver API version {}, {n} GPU(s)",
        device::driver_version()?
    );
    let gpus: Vec<device::Gpu> = (0..n).map(device::Gpu::open).collect::<Result<_>>()?;
    for g in &gpus {
        let i = &g.info;
        println!(
            "GPU {}: {} | {} SMs | {:.1} GiB | CC {}.{} | PCI {} | L2 {} MiB | SM {} MHz, mem {} MHz x {} bit",
            i.ordinal,
            i.name,
            i.sms,
            i.memory_bytes as f64 / (1u64 << 30) as f64,
            i.compute_capability.0,
            i.compute_capability.1,
            i.pci_bus_id,
            i.l2_bytes >> 20,
            i.sm_clock_mhz,
            i.mem_clock_mhz,
            i.mem_bus_bits
        );
    }
    for a in &gpus {
        for b in &gpus {
            if a.ordinal != b.ordinal {
                let p = device::peer_info(a, b)?;
                println!(
                    "GPU {} -> GPU {}: peer access {}, native atomics {}, perf rank {}, NVLink links {:?} => {}",
                    p.src,
                    p.dst,
                    p.can_access_peer,
                    p.native_atomics,
                    p.performance_rank,
                    p.nvlink_active_links,
                    p.kind
                );
            }
        }
    }
    match crate::cuda::libs::ensure_nvrtc() {
        Ok(()) => println!("NVRTC: ok"),
        Err(e) => println!("NVRTC: {e}"),
    }
    match crate::cuda::gemm::Lt::version() {
        Ok(v) => println!("cuBLASLt: version {v}"),
        Err(e) => println!("cuBLASLt: {e}"),
    }
    Ok(())
}

/// Print the error (if any) and give the process exit code.
pub fn exit_code(r: Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_is_invalid() {
        assert_eq!(model_shape("gpt-9").unwrap_err().exit_code(), 2);
        assert_eq!(
            model_shape("LLaVA-1.5-7B").unwrap(),
            ModelShape::LLAVA_15_7B
        );
    }

    #[test]
    fn bench_rejects_unknown_model_without_a_gpu() {
        let a = BenchArgs {
            model: "gpt-9".into(),
            layers: None,
            gpu: 0,
            iters: 1,
            only: None,
            breakdown: false,
            out: None,
            against: None,
        };
        assert_eq!(bench(&a).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn bench_refuses_a_bad_against_file_before_the_gpu() {
        let a = |model: &str, against: &str| BenchArgs {
            model: model.into(),
            layers: None,
            gpu: 0,
            iters: 1,
            only: None,
            breakdown: false,
            out: None,
            against: Some(PathBuf::from(against)),
        };
        let tiny = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/against_torch/torch-tiny.json"
        );
        for (model, file, says) in [
            (
                "qwen2.5-vl-7b",
                "/nonexistent/torch.json",
                "/nonexistent/torch.json",
            ),
            (
                "qwen2.5-vl-7b",
                tiny,
                "timed qwen2.5-vl-tiny with 2 decoder layers",
            ),
            ("llava-1.5-7b", tiny, "--against is for Qwen2.5-VL models"),
        ] {
            let e = bench(&a(model, file)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn calibrate_rejects_missing_out_folder() {
        let a = CalibrateArgs {
            out: PathBuf::from("/nonexistent-folder-xyz/p.yaml"),
            json: None,
            report: None,
            quick: true,
            no_green: true,
            no_links: true,
            links_from: None,
            no_compute: true,
            gpu: None,
            model: None,
            layers: None,
            split: None,
        };
        assert_eq!(calibrate(&a).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn links_from_needs_no_links_and_is_read_before_the_probes() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: CalibrateArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from([&["calibrate"], args].concat());
        assert!(parse(&["--out", "p.yaml", "--links-from", "l.yaml"]).is_err());
        let mut a = parse(&[
            "--out",
            "p.yaml",
            "--no-links",
            "--links-from",
            "missing.yaml",
        ])
        .unwrap()
        .a;
        a.no_compute = true;
        let e = calibrate(&a).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("missing.yaml"), "{e}");
        // (tests run in exec/)
        a.links_from = Some("../profiles/h100-2026-11-21-llava-1.5-7b.yaml".into());
        assert!(
            calibrate(&a)
                .unwrap_err()
                .to_string()
                .contains("has no links")
        );
    }
}
