//! Data-free quantisation of the shared Fashion-MNIST models, measured on
//! the test set with fp32 in the same run:
//! `cargo run --release -p shrink-compress --example ptq_dfq_fashion -- [IMAGES] [MODEL…]`
//! (bench/ptq_dfq.sh runs it on all 10k images and all five models).

use shrink_compress::bias_correct::{WeightGranularity, WeightQuant};
use shrink_compress::cle::{equalize_cross_layer, CleOptions};
use shrink_compress::dfq::{dfq_pipeline, simulate_quantized, top1_accuracy, DfqOptions};
use shrink_compress::fold_bn::fold_batchnorm;
use shrink_data::{Dataset, Split};
use shrink_graph::onnx;
use std::path::PathBuf;

fn fashion_dir() -> PathBuf {
    if let Ok(s) = std::env::var("SHRINK_SHARED") {
        return PathBuf::from(s).join("data/fashion");
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/data/fashion"))
        .find(|c| c.join("lenet5.onnx").is_file())
        .unwrap_or_else(|| PathBuf::from("/work/shared/data/fashion"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    let threads = 0;
    let dir = fashion_dir();
    println!("images: {images}");
    println!("| model | variant | top-1 % | Δ vs fp32 (pt) |");
    println!("|---|---|---|---|");
    for m in &models {
        let fp32 = onnx::load(dir.join(format!("{m}.onnx")))?;
        let bn_path = dir.join(format!("{m}.bn_nodes.onnx"));
        let source = if bn_path.is_file() {
            onnx::load(&bn_path)?
        } else {
            fp32.clone()
        };
        let base = top1_accuracy(&fp32, &data, images, 250, threads)?;
        println!("| {m} | fp32 | {base:.2} | |");
        let report =
            |name: &str, acc: f64| println!("| {m} | {name} | {acc:.2} | {:+.2} |", acc - base);
        let relu6_variants: &[bool] = if m == "mobilenetv2_tiny" {
            &[false, true]
        } else {
            &[false]
        };
        for &r6 in relu6_variants {
            let tag = if r6 { " +relu6→relu" } else { "" };
            let mut w8pc = DfqOptions {
                relu6_to_relu: r6,
                ..DfqOptions::default()
            };
            // Overrides for exploring the options (documented in bench/ptq_dfq.sh).
            match std::env::var("DFQ_CLE").as_deref() {
                Ok("off") => w8pc.cle = None,
                Ok("conv") => {
                    w8pc.cle = Some(CleOptions {
                        include_gemm: false,
                        ..CleOptions::default()
                    })
                }
                _ => {}
            }
            if let Some(n) = std::env::var("DFQ_NSIGMA")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                w8pc.ranges.n_sigma = n;
            }
            if std::env::var("DFQ_ABSORB_PAD").is_ok() {
                w8pc.absorb = Some(shrink_compress::bias_absorb::AbsorbOptions {
                    through_padding: true,
                    ..Default::default()
                });
            }
            if std::env::var("DFQ_STATIC").is_ok() {
                w8pc.loose_ranges = shrink_compress::dfq::LooseRanges::Static;
            }
            if std::env::var("DFQ_NO_BC").is_ok() {
                w8pc.bias_correction = false;
            }
            let (q, recs) = dfq_pipeline(&source, &w8pc)?;
            if std::env::var("DFQ_VERBOSE").is_ok() {
                for r in &recs {
                    eprintln!("{}: {:?}", r.pass, r.metrics);
                }
                let p = shrink_compress::dfq::dfq_prepare(&source, &w8pc)?;
                for (name, r) in p.ranges.tensors.iter() {
                    eprintln!("  range {name}: {:?}", r.merged());
                }
            }
            report(
                &format!("DFQ W8A8 per-channel{tag}"),
                top1_accuracy(&q, &data, images, 250, threads)?,
            );
            let w8pt = DfqOptions {
                weights: WeightQuant::new(8, WeightGranularity::PerTensor),
                ..w8pc.clone()
            };
            let (q, _) = dfq_pipeline(&source, &w8pt)?;
            report(
                &format!("DFQ W8A8 per-tensor{tag}"),
                top1_accuracy(&q, &data, images, 250, threads)?,
            );
            let w4pt = DfqOptions {
                weights: WeightQuant::new(4, WeightGranularity::PerTensor),
                ..w8pc.clone()
            };
            let (q, _) = dfq_pipeline(&source, &w4pt)?;
            report(
                &format!("DFQ W4A8 per-tensor{tag}"),
                top1_accuracy(&q, &data, images, 250, threads)?,
            );
        }
        // Naive per-tensor W4 (weights only, no DFQ) and after CLE only:
        // the two numbers cle.json / peers.json report.
        let w4 = WeightQuant::new(4, WeightGranularity::PerTensor);
        let (naive, _) = simulate_quantized(&fp32, &w4, None)?;
        report(
            "naive W4 per-tensor (weights only)",
            top1_accuracy(&naive, &data, images, 250, threads)?,
        );
        let (folded, _, _) = fold_batchnorm(&source)?;
        let (eq, rec) = equalize_cross_layer(&folded, &CleOptions::default(), None)?;
        let (cle_w4, _) = simulate_quantized(&eq, &w4, None)?;
        report(
            &format!(
                "CLE ({} pairs) + W4 per-tensor (weights only)",
                rec.metrics["pairs"]
            ),
            top1_accuracy(&cle_w4, &data, images, 250, threads)?,
        );
    }
    Ok(())
}
