//! `shrink inspect`: what a model is made of, layer by layer.

use crate::model;
use anyhow::Result;
use clap::Args as ClapArgs;
use serde_json::json;
use shrink_graph::analysis::{layer_stats, totals, LayerStats};
use shrink_graph::container::{encode_tensor, read_shrink, StoredTensor};
use shrink_graph::Encoding;
use shrink_graph::{Dim, Graph};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx, .shrink) or model directory.
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
    if shrink_graph::container::is_shrink_file(&args.model) {
        return run_shrink(&args);
    }
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

/// Deep Compression's size columns for one tensor: bytes after pruning (P:
/// relative-index sparse, f32 values), + weight sharing (P+Q: codebook
/// indices), + Huffman (P+Q+H), each the exact size shrink would store.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct DcColumns {
    p: usize,
    pq: Option<usize>,
    pqh: Option<usize>,
}

fn dc_columns(t: &shrink_graph::Tensor, st: &StoredTensor) -> Option<DcColumns> {
    if !(st.encoding.is_sparse() || st.encoding.codebook_bits().is_some()) {
        return None;
    }
    let own = encode_tensor(t, &st.encoding).ok()?.payload.len();
    let overhead = st.stored_bytes.saturating_sub(own);
    let size = |e: Encoding| {
        encode_tensor(t, &e)
            .ok()
            .map(|x| x.payload.len() + overhead)
    };
    let csr = |values: Encoding| Encoding::Csr {
        index_bits: 0,
        values: Box::new(values),
        column_major: false,
    };
    let bits = st.encoding.codebook_bits().unwrap_or(0);
    let cb = Encoding::Codebook { bits, fp16: false };
    Some(DcColumns {
        p: size(csr(Encoding::Dense))?,
        pq: size(csr(cb.clone())),
        pqh: size(Encoding::Huffman {
            inner: Box::new(csr(cb)),
        }),
    })
}

fn opt(n: Option<usize>) -> String {
    n.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// `shrink inspect X.shrink`: per tensor how it is stored, byte for byte.
fn run_shrink(args: &Args) -> Result<()> {
    let f = read_shrink(&args.model)?;
    let g = &f.graph;
    let fp32_bytes: usize = f.tensors.iter().map(|t| 4 * t.numel()).sum();
    let rows: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t, dc_columns(&g.initializers[&t.name], t)))
        .collect();
    if args.json {
        let v = json!({
            "model": args.model.display().to_string(),
            "format_version": f.version,
            "file_bytes": f.file_bytes,
            "header_bytes": f.header_bytes,
            "graph_bytes": f.graph_bytes,
            "provenance_bytes": f.provenance_bytes,
            "tensor_bytes": f.tensor_bytes(),
            "bundle_bytes": f.bundle_bytes,
            "fp32_bytes": fp32_bytes,
            "compression_vs_fp32": fp32_bytes as f64 / f.file_bytes as f64,
            "provenance": f.provenance,
            "tensors": rows.iter().map(|(t, dc)| json!({
                "name": t.name,
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "encoding": t.encoding.to_string(),
                "encoding_spec": t.encoding,
                "elements": t.numel(),
                "nonzero": t.nonzero,
                "kept_percent": 100.0 * t.nonzero as f64 / t.numel().max(1) as f64,
                "stored_bytes": t.stored_bytes,
                "bundled": t.bundled,
                "bits_per_element": t.bits_per_element(),
                "index_bits": t.encoding.index_bits(),
                "codebook_bits": t.encoding.codebook_bits(),
                "bytes_after_p": dc.map(|d| d.p),
                "bytes_after_pq": dc.and_then(|d| d.pq),
                "bytes_after_pqh": dc.and_then(|d| d.pqh),
                "streams": t.streams,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} (.shrink v{}, {} bytes)",
        args.model.display(),
        f.version,
        f.file_bytes
    );
    println!(
        "\n{:<28} {:<6} {:<14} {:<26} {:>7} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "tensor",
        "dtype",
        "shape",
        "encoding",
        "kept%",
        "bits/w",
        "idx",
        "bytes",
        "P",
        "P+Q",
        "P+Q+H"
    );
    for (t, dc) in &rows {
        let mut name = t.name.clone();
        if name.chars().count() > 27 {
            name = format!(
                "…{}",
                name.chars()
                    .skip(name.chars().count() - 26)
                    .collect::<String>()
            );
        }
        let shape = format!("{:?}", t.shape).replace(' ', "");
        println!(
            "{:<28} {:<6} {:<14} {:<26} {:>7.2} {:>7.3} {:>5} {:>9} {:>9} {:>9} {:>9}",
            name,
            t.dtype.name(),
            shape,
            t.encoding.to_string(),
            100.0 * t.nonzero as f64 / t.numel().max(1) as f64,
            t.bits_per_element(),
            t.encoding
                .index_bits()
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            if t.bundled {
                format!("{}*", t.stored_bytes)
            } else {
                t.stored_bytes.to_string()
            },
            dc.map(|d| d.p.to_string()).unwrap_or_else(|| "-".into()),
            opt(dc.and_then(|d| d.pq)),
            opt(dc.and_then(|d| d.pqh)),
        );
    }
    let huff: Vec<_> = f
        .tensors
        .iter()
        .flat_map(|t| t.streams.iter().filter(|s| s.huffman).map(move |s| (t, s)))
        .collect();
    if !huff.is_empty() {
        println!("\nHuffman streams: coded size vs order-0 entropy");
        for (t, s) in huff {
            let h = s.entropy_bits.unwrap_or(0.0) / 8.0;
            println!(
                "  {:<28} {:<8} {:>8} symbols  entropy {:>9.1} B  stored {:>8} B  ({:+.2}%)",
                t.name,
                s.name,
                s.symbols,
                h,
                s.stored_bytes,
                if h > 0.0 {
                    100.0 * (s.stored_bytes as f64 / h - 1.0)
                } else {
                    0.0
                }
            );
        }
    }
    let bundled: Vec<_> = f.tensors.iter().filter(|t| t.bundled).collect();
    if !bundled.is_empty() {
        println!(
            "\n* in the bundle: {} tensors, {} bytes of records deflated to {} bytes (entry included)",
            bundled.len(),
            bundled.iter().map(|t| t.stored_bytes).sum::<usize>(),
            f.bundle_bytes
        );
    }
    println!(
        "\ntotal: {} bytes = tensors {} + graph {} + provenance {} + header {}; \
         fp32 weights {} bytes → {:.2}× smaller",
        f.file_bytes,
        f.tensor_bytes(),
        f.graph_bytes,
        f.provenance_bytes,
        f.header_bytes,
        fp32_bytes,
        fp32_bytes as f64 / f.file_bytes as f64
    );
    let p = &f.provenance;
    println!("provenance: {}", p.tool);
    if let (Some(file), Some(sha)) = (&p.source_file, &p.source_sha256) {
        println!("  source {file} (sha256 {sha})");
    } else if let Some(file) = &p.source_file {
        println!("  source {file}");
    }
    if let Some(r) = &p.recipe {
        println!("  recipe: {} lines", r.lines().count());
    }
    for pass in &p.passes {
        let name = pass.get("pass").and_then(|v| v.as_str()).unwrap_or("?");
        println!("  pass {name}");
    }
    for (k, v) in &p.notes {
        println!("  {k}: {v}");
    }
    if args.all {
        println!();
        print_table(g, &layer_stats(g), true);
    }
    Ok(())
}
