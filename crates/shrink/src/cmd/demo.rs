//! `shrink demo`: the whole pipeline on an embedded model and real data, with
//! no network and no set-up — LeNet-5-BN trained on Fashion-MNIST and the
//! first 256 images of the Fashion-MNIST test set are compiled into the binary.
//! It shows the product's main job end to end: the fp32 model, then the same
//! model compressed by a shipped recipe (int8, calibrated), with accuracy,
//! stored size, measured latency and estimated energy side by side.

use crate::cmd::{compress, eval, inspect};
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use shrink_data::Dataset;
use shrink_graph::analysis::layer_stats;
use shrink_runtime::{Session, SessionOptions};
use std::time::Instant;

const MODEL: &[u8] = include_bytes!("../../assets/lenet5_bn.onnx");
const IMAGES: &[u8] = include_bytes!("../../assets/test_sample_x.npy");
const LABELS: &[u8] = include_bytes!("../../assets/test_sample_y.npy");
const RECIPE: &str = include_str!("../../../../recipes/int8-calibrated.toml");
/// Embedded images used for calibration; the rest score the comparison, so
/// no image both sets a range and grades it.
const CALIB: usize = 64;

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

/// Median seconds per run of `session` on the first `batch` images.
fn median_latency(session: &Session, ds: &Dataset, batch: usize) -> Result<f64> {
    let x = ds.inputs(0, batch.min(ds.len()))?;
    // Measured as `shrink bench` measures: the loop runs on the session's
    // pool (no thread hand-off per run, which at batch 1 cost more than
    // LeNet's arithmetic and could rank int8 below fp32) and the input is
    // copied before the clock starts.
    let mut times = session.in_pool(|| -> Result<Vec<f64>> {
        session.run(vec![x.clone()])?;
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 0.5 || times.len() < 5 {
            let feed = vec![x.clone()];
            let t0 = Instant::now();
            session.run(feed)?;
            times.push(t0.elapsed().as_secs_f64());
        }
        Ok(times)
    })?;
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// Exact bytes of `g` stored as a `.shrink` container (nothing is written).
fn stored_bytes(g: &shrink_graph::Graph) -> Result<usize> {
    let prov = shrink_graph::container::Provenance::new();
    Ok(shrink_graph::container::to_shrink_bytes(g, &prov)?.0.len())
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
    let ds = Dataset::new(images.clone(), labels.to_i64_vec()).map_err(anyhow::Error::msg)?;

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
        let med = median_latency(&session, &ds, batch)?;
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

    compress_int8(&session, &images, &labels.to_i64_vec(), args.threads)?;

    println!("\nNext: `shrink inspect`, `shrink eval`, `shrink bench` on your own ONNX models (see README).");
    Ok(())
}

/// Compresses the model with `recipes/int8-calibrated.toml` (ranges from the
/// first [`CALIB`] embedded images) and compares it with fp32 on the others.
fn compress_int8(
    fp32: &Session,
    images: &shrink_tensor::Tensor,
    labels: &[i64],
    threads: usize,
) -> Result<()> {
    use shrink_compress::recipe::{CalibData, Context as RecipeContext, Recipe};
    rule("compress: int8, calibrated (recipes/int8-calibrated.toml)");
    let pixels = 28 * 28;
    let raw = images.as_slice::<u8>()?;
    let n = labels.len();
    let part = |a: usize, b: usize| -> Result<Dataset> {
        let t = shrink_tensor::Tensor::from_vec(
            vec![b - a, 28, 28],
            raw[a * pixels..b * pixels].to_vec(),
        )?;
        Dataset::new(t, labels[a..b].to_vec()).map_err(anyhow::Error::msg)
    };
    let (calib_ds, test_ds) = (part(0, CALIB)?, part(CALIB, n)?);
    let calib = CalibData {
        batches: vec![calib_ds.inputs(0, CALIB)?],
        labels: labels[..CALIB].to_vec(),
    };
    let recipe = Recipe::parse(RECIPE, "recipes/int8-calibrated.toml")?;
    let (q, _records) = recipe.run(fp32.graph(), &mut RecipeContext::new(Some(calib)))?;
    // Size and energy are read from the QDQ graph (the session lowers it).
    let (bq, jq) = (stored_bytes(&q)?, compress::energy_nj(&q)?);
    let int8 = Session::new(
        q,
        SessionOptions {
            threads,
            ..Default::default()
        },
    )?;
    let (ef, eq) = (
        eval::evaluate(fp32, &test_ds, 64, false)?,
        eval::evaluate(&int8, &test_ds, 64, false)?,
    );
    let (bf, jf) = (
        stored_bytes(fp32.graph())?,
        compress::energy_nj(fp32.graph())?,
    );
    let (lf1, lq1) = (
        median_latency(fp32, &test_ds, 1)?,
        median_latency(&int8, &test_ds, 1)?,
    );
    let (lf, lq) = (
        median_latency(fp32, &test_ds, 192)?,
        median_latency(&int8, &test_ds, 192)?,
    );
    let batch = test_ds.len().min(192) as f64;
    println!(
        "{:<10} {:>10} {:>14} {:>16} {:>18} {:>14}",
        "model", "top-1 %", "stored bytes", "µs/image b=1", "µs/image b=192", "energy nJ"
    );
    for (name, e, b, l1, l, j) in [
        ("fp32", &ef, bf, lf1, lf, jf),
        ("int8", &eq, bq, lq1, lq, jq),
    ] {
        println!(
            "{:<10} {:>10.2} {:>14} {:>16.1} {:>18.1} {:>14.1}",
            name,
            e.top1,
            b,
            l1 * 1e6,
            l * 1e6 / batch,
            j
        );
    }
    println!(
        "int8 vs fp32: {:.1}× smaller, speed {:.2}× / {:.2}× (batch 1 / {}), {:.1}× less energy, {:+.2} pt top-1 on {} held-out images",
        bf as f64 / bq as f64,
        lf1 / lq1,
        lf / lq,
        batch,
        jf / jq,
        eq.top1 - ef.top1,
        ef.samples
    );
    println!("(the int8 model runs on shrink's integer kernels; `shrink bench MODEL --per-layer` names each layer's kernel.");
    println!(" LeNet's 5×5 convs run on a direct VNNI int8 kernel: BENCHMARKS.md §4.1)");
    Ok(())
}
