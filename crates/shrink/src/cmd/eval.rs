//! `shrink eval`: classification accuracy of a model on a labelled dataset.

use crate::model;
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use shrink_data::{Dataset, Split};
use shrink_runtime::{Session, SessionOptions};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
    /// Dataset spec: fashion-mnist, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, npz:FILE.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Evaluate on the training split instead of the test split.
    #[arg(long)]
    pub train: bool,
    /// Only the first N samples.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Top-1/top-5 accuracy and the confusion matrix (rows: true class).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub samples: usize,
    pub top1_correct: usize,
    pub top5_correct: usize,
    pub top1: f64,
    pub top5: f64,
    pub classes: usize,
    pub confusion: Vec<Vec<usize>>,
}

impl Evaluation {
    pub fn new(classes: usize) -> Evaluation {
        Evaluation {
            samples: 0,
            top1_correct: 0,
            top5_correct: 0,
            top1: 0.0,
            top5: 0.0,
            classes,
            confusion: vec![vec![0; classes]; classes],
        }
    }

    /// Adds a batch of logits `[B, classes]` with labels. Ties go to the lower
    /// class index, as numpy's and PyTorch's argmax do.
    pub fn add(&mut self, logits: &[f32], labels: &[i64]) -> Result<()> {
        let c = self.classes;
        if logits.len() != labels.len() * c {
            bail!(
                "model produced {} values for {} samples of {c} classes",
                logits.len(),
                labels.len()
            );
        }
        for (i, &label) in labels.iter().enumerate() {
            let row = &logits[i * c..(i + 1) * c];
            let label = usize::try_from(label)
                .ok()
                .filter(|&l| l < c)
                .with_context(|| format!("label {label} outside 0..{c}"))?;
            let mut order: Vec<usize> = (0..c).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            self.top1_correct += (order[0] == label) as usize;
            self.top5_correct += order.iter().take(5).any(|&k| k == label) as usize;
            self.confusion[label][order[0]] += 1;
            self.samples += 1;
        }
        self.top1 = 100.0 * self.top1_correct as f64 / self.samples.max(1) as f64;
        self.top5 = 100.0 * self.top5_correct as f64 / self.samples.max(1) as f64;
        Ok(())
    }
}

/// Runs `session` over `ds` with a progress bar.
pub fn evaluate(session: &Session, ds: &Dataset, batch: usize, quiet: bool) -> Result<Evaluation> {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(ds.len() as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")?
            .progress_chars("=> "),
    );
    pb.set_message("evaluating");
    let mut ev: Option<Evaluation> = None;
    for b in ds.batches(batch) {
        let (x, y) = b?;
        let out = session.run(vec![x])?.remove(0);
        let classes = *out
            .shape()
            .last()
            .context("model output has no class dimension")?;
        let e = ev.get_or_insert_with(|| Evaluation::new(classes));
        e.add(&out.to_f32_vec(), &y)?;
        pb.inc(y.len() as u64);
        pb.set_message(format!("top-1 {:.2}%", e.top1));
    }
    pb.finish_and_clear();
    ev.context("the dataset is empty")
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
    let split = if args.train {
        Split::Train
    } else {
        Split::Test
    };
    let mut ds = Dataset::open(&args.dataset, split)?;
    if let Some(n) = args.limit {
        ds = ds.take(n);
    }
    let ev = evaluate(&session, &ds, args.batch, args.json)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ev)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} samples)",
        args.model.display(),
        args.dataset,
        ev.samples
    );
    println!("  top-1 {:.2}%   top-5 {:.2}%", ev.top1, ev.top5);
    println!("\n  confusion matrix (rows: true class, columns: predicted)");
    print!("      ");
    for j in 0..ev.classes {
        print!("{j:>6}");
    }
    println!();
    for (i, row) in ev.confusion.iter().enumerate() {
        print!("  {i:>3} ");
        for v in row {
            print!("{v:>6}");
        }
        println!();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_and_confusion_count_correctly() {
        let mut e = Evaluation::new(6);
        // sample 0: class 2 best; sample 1: label 5 ranked 6th (outside top-5).
        let logits = [0.0, 1.0, 9.0, 2.0, 3.0, 4.0, 9.0, 8.0, 7.0, 6.0, 5.0, 0.0];
        e.add(&logits, &[2, 5]).unwrap();
        assert_eq!((e.top1_correct, e.top5_correct), (1, 1));
        assert_eq!(e.confusion[2][2], 1);
        assert_eq!(e.confusion[5][0], 1);
        assert!(e.add(&logits, &[2]).is_err());
        assert!(e.add(&logits[..6], &[7]).is_err());
    }
}
