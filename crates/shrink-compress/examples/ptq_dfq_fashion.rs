//! Data-free quantisation of the shared Fashion-MNIST models, measured on
//! the test set with fp32 in the same run:
//! `cargo run --release -p shrink-compress --example ptq_dfq_fashion -- [IMAGES] [MODEL…]`
//! (bench/ptq_dfq.sh runs it on all 10k images and all five models).
//!
//! Environment overrides, for exploring the options: `DFQ_CLE=off|all`
//! (no equalisation / also Gemm pairs), `DFQ_NSIGMA=n` (BN range β ± nγ),
//! `DFQ_ABSORB_PAD=1` (absorb high biases into padded convs too),
//! `DFQ_NO_BC=1` (no bias correction), `DFQ_VERBOSE=1` (pass metrics, ranges).

use shrink_compress::bias_absorb::AbsorbOptions;
use shrink_compress::bias_correct::{WeightGranularity, WeightQuant};
use shrink_compress::cle::{equalize_cross_layer, CleOptions};
use shrink_compress::dfq::{
    dfq_pipeline, dfq_prepare, simulate_quantized, top1_accuracy, DfqOptions, LooseRanges,
};
use shrink_compress::fold_bn::fold_batchnorm;
use shrink_compress::relu6::{relu6_to_relu, Relu6Scope};
use shrink_data::{Dataset, Split};
use shrink_graph::{onnx, Graph};
use std::path::PathBuf;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn fashion_dir() -> PathBuf {
    shrink_data::shared_data_dir()
        .map(|d| d.join("fashion"))
        .unwrap_or_else(|| PathBuf::from("/work/shared/data/fashion"))
}

/// The pipeline options for one row, with the environment overrides.
fn options(weights: WeightQuant, relu6_to_relu: bool) -> DfqOptions {
    let mut o = DfqOptions {
        weights,
        relu6_to_relu,
        ..DfqOptions::default()
    };
    match std::env::var("DFQ_CLE").as_deref() {
        Ok("off") => o.cle = None,
        Ok("all") => {
            o.cle = Some(CleOptions {
                include_gemm: true,
                ..CleOptions::default()
            })
        }
        _ => {}
    }
    if let Some(n) = std::env::var("DFQ_NSIGMA")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.ranges.n_sigma = n;
    }
    if std::env::var("DFQ_ABSORB_PAD").is_ok() {
        o.absorb = Some(AbsorbOptions {
            through_padding: true,
            ..AbsorbOptions::default()
        });
    }
    if std::env::var("DFQ_NO_BC").is_ok() {
        o.bias_correction = false;
    }
    o
}

/// Quantises with DFQ and evaluates. Models with run-time (dynamic) ranges
/// are evaluated one image at a time, as deployed, so that no image's
/// quantisation sees another image's range.
fn dfq_row(
    src: &Graph,
    opts: &DfqOptions,
    data: &Dataset,
    images: usize,
) -> BoxResult<(f64, String)> {
    let (q, recs) = dfq_pipeline(src, opts)?;
    if std::env::var("DFQ_VERBOSE").is_ok() {
        for r in &recs {
            eprintln!("{}: {:?}", r.pass, r.metrics);
        }
        for (name, r) in dfq_prepare(src, opts)?.ranges.tensors.iter() {
            eprintln!("  range {name}: {:?}", r.merged());
        }
    }
    let dynamic = recs
        .last()
        .and_then(|r| r.metrics.get("activations_dynamic").copied())
        .unwrap_or(0.0);
    let batch = if dynamic > 0.0 { 1 } else { 250 };
    let note = if dynamic > 0.0 {
        format!(", {dynamic} tensors with run-time ranges")
    } else {
        String::new()
    };
    Ok((top1_accuracy(&q, data, images, batch, 0)?, note))
}

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let images: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut models: Vec<String> = args.iter().skip(1).cloned().collect();
    if models.is_empty() {
        models = [
            "lenet300100",
            "lenet5",
            "lenet5_bn",
            "mobilenetv2_tiny",
            "mobilenetv2_tiny_relu",
        ]
        .map(String::from)
        .to_vec();
    }
    let data = Dataset::open("fashion-mnist", Split::Test)?;
    let dir = fashion_dir();
    println!("images: {images}");
    println!("| model | variant | top-1 % | Δ vs fp32 (pt) |");
    println!("|---|---|---|---|");
    for m in &models {
        let fp32 = onnx::load(dir.join(format!("{m}.onnx")))?;
        let bn_path = dir.join(format!("{m}.bn_nodes.onnx"));
        let has_bn = bn_path.is_file();
        let source = if has_bn {
            onnx::load(&bn_path)?
        } else {
            fp32.clone()
        };
        let base = top1_accuracy(&fp32, &data, images, 250, 0)?;
        println!("| {m} | fp32 | {base:.2} | |");
        let report =
            |name: &str, acc: f64| println!("| {m} | {name} | {acc:.2} | {:+.2} |", acc - base);
        let relu6_variants: &[bool] = if m == "mobilenetv2_tiny" {
            &[false, true]
        } else {
            &[false]
        };
        for &r6 in relu6_variants {
            let tag = if r6 { ", ReLU6→ReLU" } else { "" };
            if r6 {
                // The replacement changes the fp32 function: its own effect.
                let (folded, _, _) = fold_batchnorm(&source)?;
                let (relu, rec) = relu6_to_relu(&folded, Relu6Scope::BetweenLayers)?;
                report(
                    &format!(
                        "fp32 with ReLU6→ReLU ({} replaced)",
                        rec.metrics["replaced"]
                    ),
                    top1_accuracy(&relu, &data, images, 250, 0)?,
                );
            }
            for (label, wq) in [
                (
                    "W8A8 per-channel",
                    WeightQuant::new(8, WeightGranularity::PerChannel),
                ),
                (
                    "W8A8 per-tensor",
                    WeightQuant::new(8, WeightGranularity::PerTensor),
                ),
                (
                    "W4A8 per-tensor",
                    WeightQuant::new(4, WeightGranularity::PerTensor),
                ),
            ] {
                let (acc, note) = dfq_row(&source, &options(wq, r6), &data, images)?;
                report(&format!("DFQ {label}{tag}{note}"), acc);
            }
        }
        if !has_bn {
            // No BN: every activation range is an interval bound; static QDQ
            // with those bounds, next to the run-time ranges above.
            let st = DfqOptions {
                loose_ranges: LooseRanges::Static,
                ..options(WeightQuant::new(8, WeightGranularity::PerChannel), false)
            };
            let (acc, _) = dfq_row(&source, &st, &data, images)?;
            report("DFQ W8A8 per-channel, static interval-bound ranges", acc);
        }
        // Naive per-tensor W4 (weights only, no DFQ) and after CLE only: the
        // two numbers peers.json / cle.json report.
        let w4 = WeightQuant::new(4, WeightGranularity::PerTensor);
        let (naive, _) = simulate_quantized(&fp32, &w4, None)?;
        report(
            "naive W4 per-tensor (weights only)",
            top1_accuracy(&naive, &data, images, 250, 0)?,
        );
        let (folded, _, _) = fold_batchnorm(&source)?;
        let (eq, rec) = equalize_cross_layer(&folded, &CleOptions::default(), None)?;
        let (cle_w4, _) = simulate_quantized(&eq, &w4, None)?;
        report(
            &format!(
                "CLE ({} pairs) + W4 per-tensor (weights only)",
                rec.metrics["pairs"]
            ),
            top1_accuracy(&cle_w4, &data, images, 250, 0)?,
        );
    }
    Ok(())
}
