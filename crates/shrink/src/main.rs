//! The `shrink` command line: parse, call the libraries, print.

use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ops => {
            for name in shrink_runtime::Registry::standard().names() {
                println!("{name}");
            }
        }
    }
    Ok(())
}
