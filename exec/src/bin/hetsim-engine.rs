//! `hetsim-engine`: stand-alone runner of the engine's commands for the GPU machine, before the `hetsim` binary
//! mounts them: `engine selftest …`, `engine bench …`, `engine calibrate …` take the same
//! arguments as `hetsim exec selftest`, `hetsim exec bench` and `hetsim calibrate`.

use clap::{Parser, Subcommand};
use hetsim_exec::cli;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Selftest(cli::SelftestArgs),
    Bench(cli::BenchArgs),
    Calibrate(cli::CalibrateArgs),
}

fn main() {
    let r = match &Args::parse().cmd {
        Cmd::Selftest(a) => cli::selftest(a),
        Cmd::Bench(a) => cli::bench(a),
        Cmd::Calibrate(a) => cli::calibrate(a),
    };
    std::process::exit(cli::exit_code(r));
}
