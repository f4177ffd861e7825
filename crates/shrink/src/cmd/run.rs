//! `shrink run`: run a model on inputs from .npy files.

use crate::model;
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use shrink_runtime::{Session, SessionOptions};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx) or model directory.
    pub model: PathBuf,
    /// Input .npy file; `NAME=FILE` to bind a named input (repeat for several).
    #[arg(long, required = true)]
    pub input: Vec<String>,
    /// Output file: .npy (first output) or .npz (all outputs, by name).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub fn run(args: Args) -> Result<()> {
    let g = model::load(&args.model)?;
    let session = Session::new(
        g,
        SessionOptions {
            threads: args.threads,
            ..Default::default()
        },
    )?;
    let wanted: Vec<String> = session
        .runtime_inputs()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut inputs = Vec::new();
    for (i, spec) in args.input.iter().enumerate() {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (n.to_string(), f.to_string()),
            None => (
                wanted.get(i).cloned().with_context(|| {
                    format!("the model takes {} inputs, got more", wanted.len())
                })?,
                spec.clone(),
            ),
        };
        let t =
            shrink_data::npy::read_npy(&file).with_context(|| format!("reading input '{name}'"))?;
        inputs.push((name, t));
    }
    let outputs = session.run_named(inputs)?;
    let names: Vec<String> = session
        .graph()
        .outputs
        .iter()
        .map(|o| o.name.clone())
        .collect();
    match &args.output {
        Some(p) if p.extension().is_some_and(|e| e == "npz") => {
            let pairs: Vec<(&str, &shrink_tensor::Tensor)> = names
                .iter()
                .map(String::as_str)
                .zip(outputs.iter())
                .collect();
            shrink_data::npy::write_npz(p, &pairs, true)?;
        }
        Some(p) => {
            if outputs.len() > 1 {
                eprintln!(
                    "note: the model has {} outputs; writing the first ('{}'), use .npz for all",
                    outputs.len(),
                    names[0]
                );
            }
            shrink_data::npy::write_npy(p, &outputs[0])?;
        }
        None => {}
    }
    if outputs.is_empty() {
        bail!("the model produced no outputs");
    }
    for (n, t) in names.iter().zip(&outputs) {
        let v = t.to_f64_vec();
        let preview: Vec<String> = v.iter().take(8).map(|x| format!("{x:.5}")).collect();
        println!(
            "{n}: {} {:?} [{}{}]",
            t.dtype(),
            t.shape(),
            preview.join(", "),
            if v.len() > 8 { ", …" } else { "" }
        );
    }
    Ok(())
}
