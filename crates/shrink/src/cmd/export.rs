//! `shrink export`: write a model as ONNX (so it runs in other tools).

use crate::model;
use anyhow::Result;
use clap::Args as ClapArgs;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx) or model directory (config.json + model.safetensors).
    pub model: PathBuf,
    /// Output ONNX file (written atomically).
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let g = model::load(&args.model)?;
    shrink_graph::onnx::save(&g, &args.output)?;
    let size = std::fs::metadata(&args.output)?.len();
    eprintln!(
        "wrote {} ({} nodes, {:.1} KiB)",
        args.output.display(),
        g.nodes.len(),
        size as f64 / 1024.0
    );
    Ok(())
}
