//! `shrink inspect`: what a model is made of, layer by layer.

use crate::model;
use anyhow::Result;
use clap::Args as ClapArgs;
use serde_json::json;
use shrink_graph::analysis::{layer_stats, totals, LayerStats};
use shrink_graph::{Dim, Graph};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx) or model directory.
    pub model: PathBuf,
    /// Also list weight-only nodes (e.g. DequantizeLinear of stored weights).
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn shape_str(s: &Option<Vec<Dim>>) -> String {
    match s {
        None => "?".into(),
        Some(d) => format!(
            "[{}]",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// Prints the per-layer table and totals of `g` to stdout.
pub fn print_table(g: &Graph, layers: &[LayerStats], all: bool) {
    println!(
        "{:<32} {:<20} {:<22} {:<22} {:>9} {:>9} {:>10}",
        "node", "op", "input", "output", "params", "MACs", "bytes"
    );
    for l in layers.iter().filter(|l| all || !l.weight_only) {
        let first_in = l.input_shapes.first().cloned().flatten();
        let first_out = l.output_shapes.first().cloned().flatten();
        let mut name = l.name.clone();
        if name.len() > 31 {
            name = format!("…{}", &name[name.len() - 30..]);
        }
        println!(
            "{:<32} {:<20} {:<22} {:<22} {:>9} {:>9} {:>10}",
            name,
            l.op_type,
            shape_str(&first_in),
            shape_str(&first_out),
            human(l.params),
            l.macs.map(human).unwrap_or_else(|| "?".into()),
            human(l.weight_bytes)
        );
    }
    let t = totals(layers);
    println!(
        "\ntotal: {} nodes, {} parameters ({} bytes as stored), {} MACs per sample, opset {}",
        g.nodes.len(),
        human(t.params),
        human(t.weight_bytes),
        t.macs.map(human).unwrap_or_else(|| "?".into()),
        g.opset()
    );
}

pub fn run(args: Args) -> Result<()> {
    let g = model::load(&args.model)?;
    let layers = layer_stats(&g);
    if args.json {
        let t = totals(&layers);
        let v = json!({
            "model": args.model.display().to_string(),
            "opset": g.opset(),
            "inputs": g.inputs.iter().filter(|i| !g.initializers.contains_key(&i.name)).map(|i| json!({
                "name": i.name, "dtype": i.dtype.map(|d| d.name()), "shape": shape_str(&i.shape)})).collect::<Vec<_>>(),
            "outputs": g.outputs.iter().map(|i| json!({
                "name": i.name, "dtype": i.dtype.map(|d| d.name()), "shape": shape_str(&i.shape)})).collect::<Vec<_>>(),
            "layers": layers.iter().map(|l| json!({
                "name": l.name,
                "op": l.op_type,
                "inputs": l.input_shapes.iter().map(shape_str).collect::<Vec<_>>(),
                "outputs": l.output_shapes.iter().map(shape_str).collect::<Vec<_>>(),
                "params": l.params,
                "macs": l.macs,
                "weight_bytes": l.weight_bytes,
                "output_elements": l.output_elements,
                "weight_only": l.weight_only,
            })).collect::<Vec<_>>(),
            "totals": {"params": t.params, "weight_bytes": t.weight_bytes, "macs": t.macs, "output_elements": t.output_elements, "nodes": g.nodes.len()},
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}", args.model.display());
    for i in g
        .inputs
        .iter()
        .filter(|i| !g.initializers.contains_key(&i.name))
    {
        println!(
            "  input  {}: {} {}",
            i.name,
            i.dtype.map(|d| d.name()).unwrap_or("?"),
            shape_str(&i.shape)
        );
    }
    for o in &g.outputs {
        println!(
            "  output {}: {} {}",
            o.name,
            o.dtype.map(|d| d.name()).unwrap_or("?"),
            shape_str(&o.shape)
        );
    }
    println!();
    print_table(&g, &layers, args.all);
    Ok(())
}
