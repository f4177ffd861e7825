//! `shrink embed`: sentence embeddings from a BERT sentence encoder directory
//! (config.json, model.safetensors, tokenizer.json), run on the shrink runtime.

use anyhow::Context;
use shrink_data::Tokenizer;
use shrink_graph::builders::bert::load_sentence_encoder;
use shrink_runtime::{Session, SessionOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (default: $SHRINK_CACHE/minilm).
    pub model_dir: Option<PathBuf>,
    /// A text to embed; repeat for several (pairwise cosines are printed).
    #[arg(long = "text", required = true)]
    pub texts: Vec<String>,
    /// Print JSON: every embedding in full, and the cosine matrix.
    #[arg(long)]
    pub json: bool,
    /// Kernel threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Values shown per embedding in the text output.
const SHOWN: usize = 8;

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args
        .model_dir
        .clone()
        .unwrap_or_else(|| shrink_data::cache_dir().join("minilm"));
    anyhow::ensure!(
        dir.is_dir(),
        "model directory {} does not exist; run scripts/fetch-assets minilm",
        dir.display()
    );
    let tokenizer = Tokenizer::from_file(&dir)?;
    let graph = load_sentence_encoder(&dir)
        .with_context(|| format!("building the encoder from {}", dir.display()))?;
    let session = Session::new(
        graph,
        SessionOptions {
            threads: args.threads,
            ..Default::default()
        },
    )?;
    let enc = tokenizer.encode_batch(&args.texts)?;
    let outputs = session.run_named(vec![
        ("input_ids".into(), enc.input_ids),
        ("attention_mask".into(), enc.attention_mask),
    ])?;
    let emb = &outputs[1];
    let dim = emb.shape()[1];
    let values = emb.as_slice::<f32>()?;
    let rows: Vec<&[f32]> = values.chunks(dim).collect();
    let cos: Vec<Vec<f64>> = rows
        .iter()
        .map(|a| rows.iter().map(|b| cosine(a, b)).collect())
        .collect();

    if args.json {
        let items: Vec<serde_json::Value> = args
            .texts
            .iter()
            .zip(&rows)
            .map(|(t, r)| serde_json::json!({"text": t, "norm": norm(r), "embedding": r}))
            .collect();
        let out = serde_json::json!({
            "model": dir.display().to_string(),
            "dim": dim,
            "embeddings": items,
            "cosine": cos,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for (i, (t, r)) in args.texts.iter().zip(&rows).enumerate() {
        let head: Vec<String> = r.iter().take(SHOWN).map(|v| format!("{v:+.5}")).collect();
        println!("[{i}] {t:?}");
        println!(
            "    dim {dim}, norm {:.6}, first {SHOWN}: [{} ...]",
            norm(r),
            head.join(", ")
        );
    }
    if rows.len() > 1 {
        println!("cosine similarities:");
        for (i, row) in cos.iter().enumerate() {
            for (j, c) in row.iter().enumerate().skip(i + 1) {
                println!("    [{i}] ~ [{j}]: {c:.6}");
            }
        }
    }
    Ok(())
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}
