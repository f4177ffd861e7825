//! `shrink bench`: latency and throughput of a model on this machine.

use crate::model;
use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use serde_json::json;
use shrink_graph::{Dim, Graph};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::{DType, Tensor};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx) or model directory.
    pub model: PathBuf,
    /// Batch size (the first symbolic dimension of each input).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Length of other symbolic dimensions (sequence length for text models).
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Measure for at least this many seconds.
    #[arg(long, default_value_t = 2.0)]
    pub min_time: f64,
    /// Print a per-layer time table.
    #[arg(long)]
    pub per_layer: bool,
    /// How QDQ (quantised) graphs run: integer kernels, the scalar simulation, or float.
    #[arg(long, default_value = "integer")]
    pub qdq: shrink_runtime::QdqMode,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Feed real examples instead of synthetic values: the first BATCH
    /// test-split images of this dataset spec (e.g. fashion-mnist). Kernels
    /// that skip zero activations run at their real-data speed only here.
    #[arg(long)]
    pub data: Option<String>,
}

/// The model's one runtime input filled with the first `batch` test
/// images of `spec`, scaled as `shrink eval` scales them.
fn data_inputs(g: &Graph, spec: &str, batch: usize) -> Result<Vec<(String, Tensor)>> {
    let runtime: Vec<_> = g
        .inputs
        .iter()
        .filter(|i| !g.initializers.contains_key(&i.name))
        .collect();
    let [input] = runtime.as_slice() else {
        bail!(
            "--data feeds one image input, the model has {} runtime inputs",
            runtime.len()
        );
    };
    let ds = shrink_data::Dataset::open(spec, shrink_data::Split::Test)?;
    if batch > ds.len() {
        bail!(
            "--data {spec}: batch {batch} is larger than its {} test images",
            ds.len()
        );
    }
    let x = ds.inputs(0, batch)?;
    if let Some(dims) = &input.shape {
        let fits = dims.len() == x.shape().len()
            && dims.iter().zip(x.shape()).all(|(d, &n)| match d {
                Dim::Known(k) => *k == n,
                Dim::Symbol(_) => true,
            });
        if !fits {
            bail!(
                "--data {spec}: images {:?} do not fit input '{}' {:?}",
                x.shape(),
                input.name,
                dims
            );
        }
    }
    Ok(vec![(input.name.clone(), x)])
}

/// Deterministic inputs of the right dtype and shape: symbolic batch →
/// `batch`, other symbols → `seq`; masks are ones, other integers small ids.
pub fn synth_inputs(g: &Graph, batch: usize, seq: usize) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for info in g
        .inputs
        .iter()
        .filter(|i| !g.initializers.contains_key(&i.name))
    {
        let dims = info.shape.clone().unwrap_or_default();
        let shape: Vec<usize> = dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Known(n) => *n,
                Dim::Symbol(_) if i == 0 => batch,
                Dim::Symbol(_) => seq,
            })
            .collect();
        let n: usize = shape.iter().product();
        let dtype = info.dtype.unwrap_or(DType::F32);
        let t = match dtype {
            DType::F32 => Tensor::from_vec(
                shape,
                (0..n)
                    .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                    .collect(),
            )?,
            DType::I64 if info.name.contains("mask") => Tensor::from_vec(shape, vec![1i64; n])?,
            DType::I64 => Tensor::from_vec(
                shape,
                (0..n).map(|i| 1000 + (i as i64 * 37) % 5000).collect(),
            )?,
            DType::I32 => Tensor::from_vec(shape, vec![1i32; n])?,
            other => bail!(
                "input '{}': cannot synthesise {other} data for benchmarking",
                info.name
            ),
        };
        out.push((info.name.clone(), t));
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<()> {
    let g = model::load(&args.model)?;
    let inputs = match &args.data {
        Some(spec) => data_inputs(&g, spec, args.batch)?,
        None => synth_inputs(&g, args.batch, args.seq)?,
    };
    let session = Session::new(
        g,
        SessionOptions {
            threads: args.threads,
            qdq: args.qdq,
        },
    )?;
    // The whole loop runs on the session's pool: a run then skips the
    // hand-off between the calling thread and the pool (Session::in_pool).
    let mut times = session.in_pool(|| -> Result<Vec<f64>> {
        // Warm-up: first runs touch fresh memory and fill caches.
        for _ in 0..2 {
            session.run_named(inputs.clone())?;
        }
        let mut times = Vec::new();
        let budget = Duration::from_secs_f64(args.min_time);
        let start = Instant::now();
        while start.elapsed() < budget || times.len() < 5 {
            // The copy of the inputs that `run_named` consumes is made
            // outside the timed region (a peer's run borrows its feeds).
            let feeds = inputs.clone();
            let t0 = Instant::now();
            session.run_named(feeds)?;
            times.push(t0.elapsed().as_secs_f64());
        }
        Ok(times)
    })?;
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let p10 = times[times.len() / 10];
    let p90 = times[(times.len() * 9) / 10];
    let layers = if args.per_layer {
        let mut acc: Vec<(String, String, String, f64)> = Vec::new();
        let reps = 10;
        for r in 0..reps {
            let (_, t) = session.run_profiled(inputs.clone())?;
            for (i, nt) in t.into_iter().enumerate() {
                if r == 0 {
                    let k = if nt.kernel.is_empty() {
                        "f32".into()
                    } else {
                        nt.kernel
                    };
                    acc.push((nt.node, nt.op, k, 0.0));
                }
                acc[i].3 += nt.time.as_secs_f64() / reps as f64;
            }
        }
        acc
    } else {
        Vec::new()
    };
    if args.json {
        let v = json!({
            "model": args.model.display().to_string(),
            "batch": args.batch,
            "data": args.data.as_deref().unwrap_or("synthetic"),
            "threads": session.threads(),
            "runs": times.len(),
            "median_s": median,
            "p10_s": p10,
            "p90_s": p90,
            "items_per_s": args.batch as f64 / median,
            "layers": layers.iter().map(|(n, o, k, t)| json!({"node": n, "op": o, "kernel": k, "mean_s": t})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: batch {} ({}), {} threads, {} runs",
        args.model.display(),
        args.batch,
        args.data.as_deref().unwrap_or("synthetic inputs"),
        session.threads(),
        times.len()
    );
    println!(
        "  latency median {:.3} ms (p10 {:.3}, p90 {:.3}); throughput {:.1} items/s",
        median * 1e3,
        p10 * 1e3,
        p90 * 1e3,
        args.batch as f64 / median
    );
    if !layers.is_empty() {
        let total: f64 = layers.iter().map(|l| l.3).sum();
        let kw = layers
            .iter()
            .map(|l| l.2.chars().count())
            .max()
            .unwrap_or(0)
            .max(24);
        println!(
            "\n  {:<40} {:<20} {:<kw$} {:>10} {:>7}",
            "node", "op", "kernel", "ms", "%"
        );
        for (n, o, k, t) in &layers {
            println!(
                "  {:<40} {:<20} {:<kw$} {:>10.4} {:>6.1}%",
                n,
                o,
                k,
                t * 1e3,
                100.0 * t / total
            );
        }
    }
    Ok(())
}
