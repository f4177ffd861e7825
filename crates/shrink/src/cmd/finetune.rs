//! `shrink finetune`: continue training an existing model (any ONNX file the
//! runtime and the tape executor support) on a dataset, optionally only some
//! of its weights and optionally distilling from the original model.

use super::train::{finish, Recipe, Summary};
use crate::model;
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use shrink_train::trainer::{self, Distill};
use shrink_train::ParamFilter;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
    /// Dataset spec: fashion-mnist, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, npz:FILE.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    #[command(flatten)]
    pub recipe: Recipe,
    /// Learning rate (smaller than from scratch: the model is already trained).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Train only the weights whose names match these globs (`*` = any run of
    /// characters; comma-separated or repeated); everything else stays frozen.
    #[arg(long, value_delimiter = ',')]
    pub trainable: Vec<String>,
    /// Distil from the unmodified input model (Hinton KD + cross-entropy).
    #[arg(long)]
    pub distill: bool,
    /// Distillation temperature.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f32,
    /// Weight of the distillation term (the cross-entropy gets 1 − alpha).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Output ONNX file (default: MODEL with `.finetuned.onnx`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let mut g = model::load(&args.model)?;
    let mut cfg = args.recipe.config(args.epochs, args.lr)?;
    if !args.trainable.is_empty() {
        cfg.trainable = ParamFilter::Patterns(args.trainable.clone());
    }
    if args.distill {
        cfg.distill = Some(Distill {
            teacher: g.clone(),
            temperature: args.temperature,
            alpha: args.alpha,
        });
    }
    let (train, test) = args.recipe.datasets(&args.dataset)?;
    let before = trainer::accuracy(&g, &test, 500, args.recipe.threads)
        .with_context(|| format!("evaluating {} on {}", args.model.display(), args.dataset))?;
    if !args.recipe.json {
        eprintln!("test accuracy before fine-tuning: {before:.2}%");
    }
    let report = trainer::fit(&mut g, &train, Some(&test), &cfg)
        .with_context(|| format!("fine-tuning {}", args.model.display()))?;
    let accuracy = match report.epochs.last().and_then(|e| e.eval_accuracy) {
        Some(a) => a,
        None => trainer::accuracy(&g, &test, 500, args.recipe.threads)?,
    };
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.model.with_extension("finetuned.onnx"));
    let summary = Summary {
        model: args.model.display().to_string(),
        dataset: args.dataset.clone(),
        output: output.display().to_string(),
        threads: args.recipe.threads,
        batch: args.recipe.batch,
        trainable_params: report.trainable_params,
        accuracy_before: Some(before),
        accuracy,
        resumed_at: report.resumed_at,
        stopped_early: report.stopped_early,
        epochs: Vec::new(),
    };
    finish(&args.recipe, &g, &report, summary, &output)
}
