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
    /// Rewrite a quantised (QDQ) model into the QOperator form ONNX Runtime's
    /// quantiser writes (QLinearConv, com.microsoft QGemm/QLinearAdd/…).
    #[arg(long)]
    pub qoperator: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut g = model::load(&args.model)?;
    if args.qoperator {
        let (q, rec) = shrink_compress::qoperator::to_qoperator_complete(&g)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
        eprintln!("{} layer(s) rewritten to QOperator form", rec.changes.len());
        g = q;
    }
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
