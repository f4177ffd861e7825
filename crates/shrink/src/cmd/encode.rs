//! `shrink encode`: store a model in a `.shrink` container with chosen
//! encodings (the storage step on its own; `shrink compress` runs it after
//! its passes).

use crate::model;
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use shrink_graph::container::{save_shrink, Provenance};
use shrink_graph::Encoding;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx, .shrink) or model directory.
    pub model: PathBuf,
    /// Output .shrink file (written atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Encoding of every weight (initializers of rank ≥ 2), e.g. `dc5`,
    /// `huffman:csr:codebook5`, `packed4`, `codebook6h`.
    #[arg(long)]
    pub weights: Option<String>,
    /// Encoding of one tensor, `NAME=ENCODING`; repeatable, wins over --weights.
    #[arg(long = "tensor", value_name = "NAME=ENCODING")]
    pub tensors: Vec<String>,
    /// Recipe file to record in the provenance.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let mut g = model::load(&args.model)?;
    if let Some(spec) = &args.weights {
        let enc = Encoding::parse(spec).map_err(anyhow::Error::msg)?;
        let names: Vec<String> = g
            .initializers
            .iter()
            .filter(|(_, t)| t.rank() >= 2)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            g.encodings.insert(n, enc.clone());
        }
    }
    for spec in &args.tensors {
        let Some((name, enc)) = spec.split_once('=') else {
            bail!("--tensor {spec}: write NAME=ENCODING");
        };
        if !g.initializers.contains_key(name) {
            bail!("--tensor {spec}: the model has no initializer '{name}'");
        }
        let enc = Encoding::parse(enc).map_err(anyhow::Error::msg)?;
        g.encodings.insert(name.to_string(), enc);
    }
    let mut prov = Provenance::new().with_source(&args.model)?;
    if let Some(r) = &args.recipe {
        let text =
            std::fs::read_to_string(r).with_context(|| format!("reading {}", r.display()))?;
        prov = prov.with_recipe(text);
    }
    let info = save_shrink(&g, &prov, &args.output)?;
    let fp32: usize = info.tensors.iter().map(|t| 4 * t.numel()).sum();
    eprintln!(
        "wrote {} ({} bytes: tensors {}, graph {}, provenance {}, header {}; {:.2}× smaller than fp32 weights)",
        args.output.display(),
        info.file_bytes,
        info.tensor_bytes(),
        info.graph_bytes,
        info.provenance_bytes,
        info.header_bytes,
        fp32 as f64 / info.file_bytes as f64
    );
    Ok(())
}
