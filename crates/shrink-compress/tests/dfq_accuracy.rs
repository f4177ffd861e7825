//! Acceptance of data-free quantisation, fast version: the first 1000
//! Fashion-MNIST test images (bench/ptq_dfq.sh runs all 10k), fp32 measured
//! in the same run, real thresholds from issue #6. The quantised models are
//! the canonical QDQ graphs of the `quantize` pass fed with data-free ranges.

mod dfq_support;

use dfq_support::*;
use shrink_compress::bias_correct::{WeightGranularity, WeightQuant};
use shrink_compress::dfq::{dfq_pipeline, simulate_quantized, top1_accuracy, DfqOptions};
use shrink_data::Dataset;
use shrink_graph::Graph;

const IMAGES: usize = 1000;

fn source(m: &str) -> Graph {
    let bn = format!("{m}.bn_nodes.onnx");
    let has_bn =
        shrink_data::shared_data_dir().is_some_and(|d| d.join("fashion").join(&bn).is_file());
    model(&if has_bn { bn } else { format!("{m}.onnx") })
}

/// Accuracy of the DFQ model; one image per run when some ranges are
/// measured at run time (as deployed), else batches of 250.
fn dfq_accuracy(src: &Graph, opts: &DfqOptions, data: &Dataset) -> f64 {
    let (q, recs) = dfq_pipeline(src, opts).unwrap();
    let quantize = recs
        .iter()
        .find(|r| r.pass == "quantize")
        .expect("a quantize record");
    assert!(quantize.metrics["activations_quantised"] > 0.0);
    let dynamic = recs
        .iter()
        .find(|r| r.pass == "dynamic-activations")
        .map_or(0.0, |r| r.metrics["activations_dynamic"]);
    top1_accuracy(&q, data, IMAGES, if dynamic > 0.0 { 1 } else { 250 }, 0).unwrap()
}

#[test]
fn data_free_int8_loses_at_most_0_3_points_on_every_model() {
    let data = test_set().take(IMAGES);
    for m in [
        "lenet300100",
        "lenet5",
        "lenet5_bn",
        "mobilenetv2_tiny",
        "mobilenetv2_tiny_relu",
    ] {
        let fp32 = top1_accuracy(&model(&format!("{m}.onnx")), &data, IMAGES, 250, 0).unwrap();
        let int8 = dfq_accuracy(&source(m), &DfqOptions::default(), &data);
        assert!(
            int8 >= fp32 - 0.3,
            "{m}: DFQ int8 {int8:.2}% vs fp32 {fp32:.2}%"
        );
    }
}

#[test]
fn w4a8_per_tensor_dfq_beats_naive_w4_on_the_relu_mobilenet() {
    let data = test_set().take(IMAGES);
    let w4 = WeightQuant::new(4, WeightGranularity::PerTensor);
    let (naive, _) = simulate_quantized(&model("mobilenetv2_tiny_relu.onnx"), &w4, None).unwrap();
    let naive = top1_accuracy(&naive, &data, IMAGES, 250, 0).unwrap();
    let opts = DfqOptions {
        weights: w4,
        ..DfqOptions::default()
    };
    let dfq = dfq_accuracy(&source("mobilenetv2_tiny_relu"), &opts, &data);
    assert!(
        dfq > naive,
        "W4A8 DFQ {dfq:.2}% vs naive W4 (weights only) {naive:.2}%"
    );
}

#[test]
fn relu6_to_relu_is_what_lets_dfq_work_at_4_bits_on_the_relu6_mobilenet() {
    let data = test_set().take(IMAGES);
    let src = source("mobilenetv2_tiny");
    let w4 = WeightQuant::new(4, WeightGranularity::PerTensor);
    let base = DfqOptions {
        weights: w4,
        ..DfqOptions::default()
    };
    let without = dfq_accuracy(&src, &base, &data);
    let with = dfq_accuracy(
        &src,
        &DfqOptions {
            relu6_to_relu: true,
            ..base
        },
        &data,
    );
    // Measured on 2000 images: 84.2% without, 90.4% with.
    assert!(
        with > without + 3.0,
        "ReLU6→ReLU: {without:.2}% → {with:.2}%"
    );
}

#[test]
fn the_qdq_weights_are_the_ones_bias_correction_assumed() {
    // Bias correction subtracts (W_q − W)·E[x] for the W_q of its own weight
    // format; the `quantize` pass must produce exactly those W_q.
    use shrink_compress::dfq::dfq_prepare;
    use shrink_compress::linear_layer::LinearLayer;
    let src = source("mobilenetv2_tiny_relu");
    for wq in [
        WeightQuant::new(4, WeightGranularity::PerTensor),
        WeightQuant::new(8, WeightGranularity::PerChannel),
    ] {
        let opts = DfqOptions {
            weights: wq,
            ..DfqOptions::default()
        };
        let prepared = dfq_prepare(&src, &opts).unwrap().graph;
        let (q, _) = dfq_pipeline(&src, &opts).unwrap();
        let layers = LinearLayer::all(&prepared);
        for l in &layers {
            let want = wq.fake_quantize(l, &l.weight_values(&prepared)).unwrap();
            let node = q
                .nodes
                .iter()
                .find(|n| n.name == l.name)
                .expect("layer kept");
            let dq = q
                .nodes
                .iter()
                .find(|n| n.op_type == "DequantizeLinear" && n.outputs[0] == node.inputs[1])
                .unwrap_or_else(|| panic!("{}: weight not dequantised", l.name));
            let codes = q.initializers[&dq.inputs[0]].to_f32_vec();
            let scale = q.initializers[&dq.inputs[1]].to_f32_vec();
            let per = codes.len() / scale.len();
            for (i, (&c, &w)) in codes.iter().zip(&want).enumerate() {
                let s = scale[if scale.len() == 1 { 0 } else { i / per }];
                assert!(
                    (c * s - w).abs() <= 1e-6 * w.abs().max(s),
                    "{} [{i}]: {} vs {w}",
                    l.name,
                    c * s
                );
            }
        }
    }
}

#[test]
fn the_int8_dfq_recipe_runs_the_pipeline_and_rejects_bad_options() {
    use shrink_compress::recipe::{Context, Recipe};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/int8-dfq.toml");
    let recipe = Recipe::load(&path).unwrap();
    let src = source("lenet5_bn");
    let (g, recs) = recipe.run(&src, &mut Context::new(None)).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].metrics["cle.conv_pairs"], 0.0);
    assert_eq!(recs[0].metrics["fold-batchnorm.folded"], 2.0);
    let (want, _) = dfq_pipeline(&src, &DfqOptions::default()).unwrap();
    let x = images(32);
    assert_eq!(run(&g, &x), run(&want, &x));
    let bad = Recipe::parse("[[pass]]\nname = \"dfq\"\nweights = \"int9\"\n", "bad.toml").unwrap();
    let err = bad
        .run(&src, &mut Context::new(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pass[0].weights") && err.contains("int9"),
        "{err}"
    );
}
