//! The `shrink` command line: parse, call the libraries, print.
//!
//! Each subcommand lives in its own module under `cmd/` with an `Args` struct
//! (clap) and a `run(args) -> anyhow::Result<()>`.

use clap::{Parser, Subcommand};

mod cmd;
mod model;

#[derive(Parser)]
#[command(
    name = "shrink",
    version,
    about = "Make trained neural networks smaller, faster and cheaper in energy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline on an embedded model and embedded real test images.
    Demo(cmd::demo::Args),
    /// Per layer: op, shapes, parameters, MACs, bytes; totals.
    Inspect(cmd::inspect::Args),
    /// Run a model on inputs from .npy files.
    Run(cmd::run::Args),
    /// Classification accuracy (top-1, top-5, confusion matrix) on a dataset.
    Eval(cmd::eval::Args),
    /// Latency and throughput on this machine.
    Bench(cmd::bench::Args),
    /// Compress a model with a recipe (calibration, quantisation, mixed precision).
    Compress(cmd::compress::Args),
    /// Write a model as ONNX (a .shrink model is decoded).
    Export(cmd::export::Args),
    /// Store a model in a .shrink container with chosen encodings.
    Encode(cmd::encode::Args),
    /// SQNR of each layer's weights under every numeric format.
    Formats(cmd::formats::Args),
    /// Energy per inference on a 45 nm accelerator model; --sweep for bit widths × SRAM.
    Energy(cmd::energy::Args),
    /// List the ops the runtime implements.
    Ops,
    /// Prune: magnitude (per layer/global), N:M, or structured with physical removal.
    Prune(cmd::prune::Args),
    /// Train a model-zoo network from scratch and write it as ONNX.
    Train(cmd::train::Args),
    /// Fine-tune an existing model (optionally some weights only, optionally distilling).
    Finetune(cmd::finetune::Args),
    /// Sentence embeddings with a BERT sentence encoder (all-MiniLM-L6-v2 by default).
    Embed(cmd::embed::Args),
}

fn main() -> std::process::ExitCode {
    // Behave like a Unix tool when piped into `head`: exit quietly on EPIPE.
    sigpipe::reset();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, without the
            // backtrace anyhow would add when RUST_BACKTRACE is set.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Compress(a) => cmd::compress::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Encode(a) => cmd::encode::run(a),
        Command::Formats(a) => cmd::formats::run(a),
        Command::Energy(a) => cmd::energy::run(a),
        Command::Ops => cmd::ops::run(),
        Command::Embed(args) => cmd::embed::run(args),
        Command::Prune(a) => cmd::prune::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Finetune(a) => cmd::finetune::run(a),
    }
}
