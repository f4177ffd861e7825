//! `shrink formats MODEL`: how well each numeric format represents each
//! layer's weights (SQNR in dB; ~6 dB per bit) — the table a chip architect
//! reads to pick a format per layer.

use crate::model;
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use serde::Serialize;
use shrink_formats::{
    Bf16, Binary, DynFormat, ErrorStats, Flex16, Fp16, Granularity, IntQ, Posit, Ternary,
};
use shrink_graph::{Graph, Node};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx) or model directory.
    pub model: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One weight tensor of a compute layer.
struct LayerWeight<'a> {
    node: &'a Node,
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
    /// The output-channel axis (per-channel scales run along it).
    channel_axis: usize,
}

#[derive(Serialize)]
struct Row {
    node: String,
    op: String,
    weight: String,
    shape: Vec<usize>,
    /// Per format: SQNR (dB; null when exact), MSE, max abs error.
    results: Vec<(String, ErrorStats)>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    formats: Vec<String>,
    layers: Vec<Row>,
}

fn weights(g: &Graph) -> Result<Vec<LayerWeight<'_>>> {
    let mut out = Vec::new();
    for n in &g.nodes {
        if !matches!(
            n.op_type.as_str(),
            "Conv" | "Gemm" | "MatMul" | "ConvTranspose"
        ) {
            continue;
        }
        let Some(wname) = n.input(1) else { continue };
        let Some(t) = g.initializers.get(wname) else {
            continue;
        };
        if !t.dtype().is_float() || t.rank() < 2 || t.is_empty() {
            continue;
        }
        let channel_axis = match n.op_type.as_str() {
            "Conv" => 0,
            "ConvTranspose" => 1,
            "Gemm" => {
                let tb = n
                    .attr_int("transB", 0)
                    .with_context(|| format!("node '{}'", n.name))?;
                if tb != 0 {
                    0
                } else {
                    1
                }
            }
            _ => t.rank() - 1,
        };
        out.push(LayerWeight {
            node: n,
            name: wname.to_string(),
            shape: t.shape().to_vec(),
            values: t.to_f32_vec(),
            channel_axis,
        });
    }
    Ok(out)
}

fn formats_for(axis: usize) -> Result<Vec<Box<dyn DynFormat>>> {
    let ch = Granularity::PerChannel { axis };
    let mut f: Vec<Box<dyn DynFormat>> = vec![
        Box::new(Fp16::default()),
        Box::new(Bf16::default()),
        // the 2022 posit standard fixes es = 2 for every width
        Box::new(Posit::new(8, 2)?),
        Box::new(Posit::new(16, 2)?),
        Box::new(Flex16::default()),
    ];
    for bits in [8, 6, 4, 3, 2] {
        f.push(Box::new(IntQ::symmetric(bits, Granularity::PerTensor)));
        f.push(Box::new(IntQ::symmetric(bits, ch)));
    }
    f.push(Box::new(Ternary::twn(ch)));
    f.push(Box::new(Binary::xnor_along(axis)));
    Ok(f)
}

fn short(name: &str) -> String {
    name.replace("/channel0", "/ch")
        .replace("/channel1", "/ch")
        .replace("/tensor", "/t")
        .replace("/channel2", "/ch")
        .replace("/channel3", "/ch")
}

pub fn run(args: Args) -> Result<()> {
    let g = model::load(&args.model)?;
    let ws = weights(&g)?;
    if ws.is_empty() {
        anyhow::bail!(
            "{}: no Conv/Gemm/MatMul layer with a float weight initializer",
            args.model.display()
        );
    }
    let mut rows = Vec::new();
    let mut names = Vec::new();
    for w in &ws {
        let fs = formats_for(w.channel_axis)?;
        names = fs.iter().map(|f| short(&f.name())).collect();
        let mut results = Vec::new();
        for f in &fs {
            let e = ErrorStats::of(f.as_ref(), &w.values, &w.shape).with_context(|| {
                format!(
                    "weight '{}' of node '{}' as {}",
                    w.name,
                    w.node.name,
                    f.name()
                )
            })?;
            results.push((short(&f.name()), e));
        }
        rows.push(Row {
            node: w.node.name.clone(),
            op: w.node.op_type.clone(),
            weight: w.name.clone(),
            shape: w.shape.clone(),
            results,
        });
    }
    if args.json {
        let r = Report {
            model: args.model.display().to_string(),
            formats: names,
            layers: rows,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("SQNR (dB) of each layer's weights per format (higher is better; ~6 dB per bit; /t per tensor, /ch per output channel)");
    let lw = rows
        .iter()
        .map(|r| r.weight.len())
        .max()
        .unwrap_or(6)
        .max(6);
    print!("{:<lw$} {:>12}", "weight", "shape");
    for n in &names {
        print!(" {:>w$}", n, w = n.len().max(6));
    }
    println!();
    for r in &rows {
        let shape = r
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        print!("{:<lw$} {:>12}", r.weight, shape);
        for (n, e) in &r.results {
            let w = n.len().max(6);
            if e.sqnr_db.is_finite() {
                print!(" {:>w$.1}", e.sqnr_db);
            } else {
                print!(" {:>w$}", "exact");
            }
        }
        println!();
    }
    Ok(())
}
