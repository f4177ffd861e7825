//! `shrink prune`: unstructured (magnitude, global or per layer), N:M, or
//! structured pruning with physical removal; writes the pruned ONNX model
//! and, with `--eval`, accuracy before and after on the test set.

use crate::model;
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use shrink_compress::deep_compression::{deep_compression, DeepCompressionOptions};
use shrink_compress::kmeans::ShareOptions;
use shrink_compress::prune::finetune::{finetune, Constraint, Distill, FinetuneOptions};
use shrink_compress::prune::magnitude::{magnitude_prune, PruneOptions, Scope};
use shrink_compress::prune::mask::masks_of;
use shrink_compress::prune::nm::nm_prune;
use shrink_compress::prune::sensitivity::evaluate;
use shrink_compress::prune::structured::{prune_channels, ChannelOptions, Criterion};
use shrink_compress::PassRecord;
use shrink_data::{Dataset, Split};
use shrink_graph::analysis::{layer_stats, totals};
use shrink_graph::container::{save_shrink, Provenance};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
    /// Output ONNX file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Unstructured magnitude pruning to this sparsity (fraction of weights zeroed).
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Threshold scope for --sparsity: per-layer or global.
    #[arg(long, default_value = "per-layer")]
    pub scope: String,
    /// N:M pattern, e.g. 2:4.
    #[arg(long)]
    pub nm: Option<String>,
    /// Structured pruning (physical removal) down to this fraction of the MACs.
    #[arg(long)]
    pub macs: Option<f64>,
    /// Filter importance for --macs: l1 or l2.
    #[arg(long, default_value = "l1")]
    pub criterion: String,
    /// With --macs, also remove Gemm neurons.
    #[arg(long)]
    pub neurons: bool,
    /// Print top-1 accuracy before and after on the test split of this dataset.
    #[arg(long)]
    pub eval: Option<String>,
    /// Deep Compression on this dataset (train split fine-tunes, test split
    /// scores): prune to --sparsity, masked fine-tune, k-means, centroid
    /// fine-tune, Huffman/CSR storage; writes a .shrink file and the table.
    #[arg(long)]
    pub deep_compression: Option<String>,
    /// Codebook bits of Gemm weights (Deep Compression).
    #[arg(long, default_value_t = 5)]
    pub bits: u32,
    /// Codebook bits of Conv weights (Deep Compression).
    #[arg(long, default_value_t = 8)]
    pub conv_bits: u32,
    /// Epochs of masked fine-tuning (Deep Compression; also after --macs when --eval is given).
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Epochs of centroid fine-tuning (Deep Compression).
    #[arg(long, default_value_t = 1)]
    pub centroid_epochs: usize,
    /// Fine-tuning learning rate (Adam, cosine-annealed).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Deep Compression: prune in this many AGP steps, fine-tuning --epochs after each.
    #[arg(long, default_value_t = 1)]
    pub prune_steps: usize,
    /// Fine-tune a structurally pruned model (--macs) on this dataset's train split.
    #[arg(long)]
    pub finetune: Option<String>,
    /// Fine-tuning: at most this many training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// With --macs: round kept channel counts to multiples of this (SIMD
    /// width, e.g. 8) in groups wider than it.
    #[arg(long, default_value_t = 0)]
    pub align: usize,
    /// Distil from the unpruned model while fine-tuning, at this temperature.
    #[arg(long)]
    pub distill: Option<f32>,
    /// Weight of the distillation loss (with --distill).
    #[arg(long, default_value_t = 0.5)]
    pub distill_alpha: f32,
    /// Deep Compression: per-tensor sparsity target, NAME=FRACTION (repeatable);
    /// listed tensors leave the global pool.
    #[arg(long = "target", value_name = "NAME=FRACTION")]
    pub targets: Vec<String>,
    /// Deep Compression: per-tensor codebook bits, NAME=BITS (repeatable).
    #[arg(long = "layer-bits", value_name = "NAME=BITS")]
    pub layer_bits: Vec<String>,
    /// Deep Compression: extra masked fine-tuning epochs at the final sparsity.
    #[arg(long, default_value_t = 0)]
    pub final_epochs: usize,
    /// Deep Compression: centroid fine-tuning learning rate (default: --lr / 10).
    #[arg(long)]
    pub centroid_lr: Option<f64>,
    /// Deep Compression: codebook bits of biases.
    #[arg(long, default_value_t = 6)]
    pub bias_bits: u32,
    /// Deep Compression: keep f32 centroids (default: rounded to fp16, stored at 16 bits).
    #[arg(long)]
    pub f32_centroids: bool,
    /// Threads for fine-tuning and evaluation (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `NAME=VALUE` pairs of a repeatable flag.
fn pairs<T: std::str::FromStr>(
    flag: &str,
    items: &[String],
) -> Result<std::collections::BTreeMap<String, T>> {
    items
        .iter()
        .map(|it| {
            let (k, v) = it
                .rsplit_once('=')
                .with_context(|| format!("{flag} '{it}': expected NAME=VALUE"))?;
            let v = v
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{flag} '{it}': '{v}' is not a valid value"))?;
            Ok((k.to_string(), v))
        })
        .collect()
}

fn distill_of(g: &shrink_graph::Graph, args: &Args) -> Option<Distill> {
    args.distill.map(|temperature| Distill {
        teacher: g.clone(),
        temperature,
        alpha: args.distill_alpha,
    })
}

pub fn run(args: Args) -> Result<()> {
    let g = model::load(&args.model)?;
    if let Some(spec) = &args.deep_compression {
        return run_deep_compression(&g, spec, &args);
    }
    let mut records: Vec<PassRecord> = Vec::new();
    let mut cur = g.clone();
    if let Some(s) = args.sparsity {
        let scope: Scope = args.scope.parse().map_err(anyhow::Error::msg)?;
        let opts = PruneOptions {
            sparsity: s,
            scope,
            ..Default::default()
        };
        let (p, r) = magnitude_prune(&cur, &opts)?;
        cur = p;
        records.push(r);
    }
    if let Some(nm) = &args.nm {
        let (n, m) = nm
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .with_context(|| format!("--nm '{nm}': expected N:M such as 2:4"))?;
        let (p, r) = nm_prune(&cur, n, m, &[])?;
        cur = p;
        records.push(r);
    }
    if let Some(f) = args.macs {
        let criterion: Criterion = args.criterion.parse().map_err(anyhow::Error::msg)?;
        let opts = ChannelOptions {
            macs_fraction: f,
            criterion,
            neurons: args.neurons,
            align: args.align,
            ..Default::default()
        };
        let (p, r) = prune_channels(&cur, &opts)?;
        cur = p;
        records.push(r);
    }
    if let Some(spec) = &args.finetune {
        let mut train = Dataset::open(spec, Split::Train)?;
        if let Some(n) = args.train_limit {
            train = train.take(n);
        }
        let opts = FinetuneOptions {
            epochs: args.epochs,
            lr: args.lr,
            threads: args.threads,
            distill: distill_of(&g, &args),
            ..Default::default()
        };
        let masks = masks_of(&cur);
        let r = finetune(&mut cur, &train, &opts, Constraint::Masks(&masks))?;
        println!(
            "fine-tuned {} steps, loss {:.4} → {:.4}",
            r.steps, r.first_loss, r.last_loss
        );
    }
    if records.is_empty() {
        bail!("nothing to do: give --sparsity, --nm or --macs");
    }
    for r in &records {
        println!("{}:", r.pass);
        for c in &r.changes {
            println!("  {c}");
        }
    }
    let (a, b) = (totals(&layer_stats(&g)), totals(&layer_stats(&cur)));
    println!(
        "params {} → {}, MACs {} → {}",
        a.params,
        b.params,
        a.macs.map_or("?".into(), |m| m.to_string()),
        b.macs.map_or("?".into(), |m| m.to_string())
    );
    if let Some(spec) = &args.eval {
        let data = Dataset::open(spec, Split::Test)?;
        let before = evaluate(&g, &data, 256, args.threads)?;
        let after = evaluate(&cur, &data, 256, args.threads)?;
        println!(
            "top-1 on {} test images: {:.2}% → {:.2}%",
            data.len(),
            before.accuracy,
            after.accuracy
        );
    }
    shrink_graph::onnx::save(&cur, &args.output)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

fn run_deep_compression(g: &shrink_graph::Graph, spec: &str, args: &Args) -> Result<()> {
    let mut train = Dataset::open(spec, Split::Train)?;
    if let Some(n) = args.train_limit {
        train = train.take(n);
    }
    let test = Dataset::open(spec, Split::Test)?;
    let scope: Scope = args.scope.parse().map_err(anyhow::Error::msg)?;
    let ft = |epochs: usize, lr: f64| {
        (epochs > 0).then(|| FinetuneOptions {
            epochs,
            lr,
            threads: args.threads,
            ..Default::default()
        })
    };
    let opts = DeepCompressionOptions {
        prune: PruneOptions {
            sparsity: args.sparsity.unwrap_or(0.92),
            scope,
            targets: pairs("--target", &args.targets)?,
            ..Default::default()
        },
        prune_steps: args.prune_steps,
        finetune: ft(args.epochs, args.lr),
        final_finetune: ft(args.final_epochs, args.lr),
        share: ShareOptions {
            bits: args.bits,
            conv_bits: Some(args.conv_bits),
            bits_per_layer: pairs("--layer-bits", &args.layer_bits)?,
            ..Default::default()
        },
        centroid_finetune: ft(
            args.centroid_epochs,
            args.centroid_lr.unwrap_or(args.lr * 0.1),
        ),
        bias_bits: Some(args.bias_bits),
        fp16_centroids: !args.f32_centroids,
        distill: args.distill.map(|t| (t, args.distill_alpha)),
        threads: args.threads,
        ..Default::default()
    };
    let (out, report) = deep_compression(g, &train, &test, &opts)?;
    print!("{}", report.table());
    // Same provenance as the report's size: the table and records are printed, not stored.
    let prov = Provenance::new().note("pipeline", "deep-compression");
    let file = save_shrink(&out, &prov, &args.output)?;
    eprintln!(
        "wrote {} ({} bytes)",
        args.output.display(),
        file.file_bytes
    );
    Ok(())
}
