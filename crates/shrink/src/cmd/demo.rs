//! `shrink demo`: the whole pipeline on an embedded model and real data, with
//! no network and no set-up — LeNet-5-BN trained on Fashion-MNIST and the
//! first 256 images of the Fashion-MNIST test set are compiled into the binary.

use crate::cmd::{eval, inspect};
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use shrink_data::Dataset;
use shrink_graph::analysis::layer_stats;
use shrink_runtime::{Session, SessionOptions};
use std::time::Instant;

const MODEL: &[u8] = include_bytes!("../../assets/lenet5_bn.onnx");
const IMAGES: &[u8] = include_bytes!("../../assets/test_sample_x.npy");
const LABELS: &[u8] = include_bytes!("../../assets/test_sample_y.npy");

#[derive(ClapArgs)]
pub struct Args {
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

fn rule(title: &str) {
    println!(
        "\n── {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}

pub fn run(args: Args) -> Result<()> {
    println!("shrink demo: LeNet-5 with BatchNorm (embedded, trained on Fashion-MNIST),");
    println!("evaluated on the first 256 Fashion-MNIST test images (embedded).");

    let g = shrink_graph::onnx::from_bytes(MODEL, None).context("embedded model")?;
    rule("the model");
    inspect::print_table(&g, &layer_stats(&g), false);

    let images = shrink_data::npy::parse_npy(IMAGES)
        .map_err(anyhow::Error::msg)
        .context("embedded images")?;
    let labels = shrink_data::npy::parse_npy(LABELS)
        .map_err(anyhow::Error::msg)
        .context("embedded labels")?;
    let ds = Dataset::new(images, labels.to_i64_vec()).map_err(anyhow::Error::msg)?;

    let session = Session::new(
        g,
        SessionOptions {
            threads: args.threads,
            ..Default::default()
        },
    )?;
    rule("fp32 accuracy (shrink runtime)");
    let ev = eval::evaluate(&session, &ds, 64, false)?;
    println!(
        "top-1 {:.2}% ({}/{}), top-5 {:.2}% on {} real test images",
        ev.top1, ev.top1_correct, ev.samples, ev.top5, ev.samples
    );
    println!("(on all 10k test images this model scores 90.91%: `shrink eval` reproduces it after scripts/fetch-assets)");

    rule(&format!("fp32 latency ({} threads)", session.threads()));
    for batch in [1usize, 256] {
        let x = ds.inputs(0, batch.min(ds.len()))?;
        session.run(vec![x.clone()])?;
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 0.5 || times.len() < 5 {
            let t0 = Instant::now();
            session.run(vec![x.clone()])?;
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let med = times[times.len() / 2];
        println!(
            "batch {batch:>3}: median {:>8.3} ms per batch, {:>7.1} µs per image, {:>8.0} images/s",
            med * 1e3,
            med * 1e6 / batch as f64,
            batch as f64 / med
        );
    }
    rule("what bit width would cost (45 nm energy model, 256 KiB SRAM)");
    let layers = shrink_energy::layer_work(session.graph())?;
    let mem = shrink_energy::MemoryConfig {
        sram_bytes: 256 << 10,
        dram_pj_per_64b: 1300.0,
    };
    let mut fp32_total = None;
    println!(
        "{:<16} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "weights/acts", "compute nJ", "on-chip nJ", "off-chip nJ", "total nJ", "× less"
    );
    for (w, a) in [
        ("fp32", "fp32"),
        ("int8", "int8"),
        ("int4", "int8"),
        ("int2", "int2"),
    ] {
        let asg = shrink_energy::Assignment::uniform(w.parse()?, a.parse()?);
        let r = shrink_energy::estimate(&layers, &asg, &mem);
        let total = r.total.total_pj();
        let base = *fp32_total.get_or_insert(total);
        println!(
            "{:<16} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>9.1}×",
            format!("{w}/{a}"),
            r.total.compute_pj / 1e3,
            r.total.onchip_pj / 1e3,
            r.total.offchip_pj / 1e3,
            total / 1e3,
            base / total
        );
    }
    println!("(`shrink energy MODEL --sweep` explores every width; `shrink formats MODEL` shows what each format does to the weights)");

    println!("\nNext: `shrink inspect`, `shrink eval`, `shrink bench` on your own ONNX models (see README).");
    Ok(())
}
