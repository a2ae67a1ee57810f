//! Stand-alone entry to the GPU harness (until `hetsim` mounts `hetsim_exec::cli`).

use clap::{Parser, Subcommand};
use hetsim_exec::cli;

#[derive(Parser)]
#[command(
    name = "hetsim-exec",
    about = "hetsim's GPU harness: probes, calibrate, transfer validation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List GPUs, how they are linked, and whether NVRTC and cuBLASLt load.
    Info,
    /// Measure this machine and write a hardware profile.
    Calibrate(cli::CalibrateArgs),
    /// Ship real KV caches and embeddings between GPUs, bit-exact, timed.
    ValidateTransfer(cli::ValidateTransferArgs),
}

fn main() {
    let c = Cli::parse();
    let r = match &c.cmd {
        Cmd::Info => cli::info(),
        Cmd::Calibrate(a) => cli::calibrate(a),
        Cmd::ValidateTransfer(a) => cli::validate_transfer(a),
    };
    std::process::exit(cli::exit_code(r));
}
