//! The `shrink` command line: parse, call the libraries, print.
//!
//! Each subcommand lives in its own module under `cmd/` with an `Args` struct
//! (clap) and a `run(args) -> anyhow::Result<()>`.

use clap::{Parser, Subcommand};

mod cmd;

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
    /// List the ops the runtime implements.
    Ops,
    /// Sentence embeddings with a BERT sentence encoder (all-MiniLM-L6-v2 by default).
    Embed(cmd::embed::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ops => cmd::ops::run(),
        Command::Embed(args) => cmd::embed::run(args),
    }
}
