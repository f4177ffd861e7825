//! QDQ insertion against ONNX Runtime's own `quantize_static` output for the
//! same models and calibration images (shared/data/fashion/*.int8_qdq_pc.onnx),
//! and accuracy of the quantised models on real test images (fast versions of
//! the BENCHMARKS runs: 1000 test images, 128 calibration images).

mod ptq_common;
use ptq_common::*;
use shrink_compress::calib::{calibrate, CalibConfig, ObserverConfig};
use shrink_compress::mixed::{accuracy, outputs};
use shrink_compress::quantize::{
    activation_tensors, insert_qdq, stored_bytes, weight_bits, ActFormat, QuantPlan, SimFormat,
    WeightFormat,
};
use shrink_compress::ActivationRanges;
use shrink_graph::Graph;
use std::collections::BTreeMap;

fn ranges(g: &Graph, n: usize) -> ActivationRanges {
    let c = calib(n);
    calibrate(
        g,
        &activation_tensors(g),
        &c.batches,
        &CalibConfig {
            observer: ObserverConfig::default(),
            threads: 0,
        },
        |_| {},
    )
    .unwrap()
}

fn op_counts(g: &Graph) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in &g.nodes {
        *m.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    m
}

/// Same graph pattern, same weight codes and the same activation scales as
/// ORT's quantize_static (min-max, 512 images, per-channel int8 weights).
#[test]
fn lenet5_bn_matches_onnx_runtime_quantize_static() {
    let g = model("lenet5_bn");
    let ort = shrink_graph::onnx::load(fashion_dir().join("lenet5_bn.int8_qdq_pc.onnx")).unwrap();
    let (q, rec) = insert_qdq(&g, &QuantPlan::int8(), &ranges(&g, 512)).unwrap();
    assert_eq!(op_counts(&q), op_counts(&ort));
    assert_eq!(rec.metrics["activations_folded"], 4.0);
    let mut compared = (0, 0);
    for (name, t) in &ort.initializers {
        let Some(ours) = q.initializers.get(name) else {
            continue;
        };
        assert_eq!(ours.dtype(), t.dtype(), "{name}");
        assert_eq!(ours.shape(), t.shape(), "{name}");
        let (a, b) = (ours.to_f64_vec(), t.to_f64_vec());
        if name.ends_with("_scale") {
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-4 * y.abs(), "{name}: {x} vs {y}");
            }
            compared.0 += 1;
        } else {
            // Codes may differ by one where the fp32 runtime and ORT disagree
            // in the last bit of a tie; nowhere else.
            let off = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            assert!(
                a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1.0) && off * 1000 <= a.len(),
                "{name}: {off} of {} codes differ",
                a.len()
            );
            compared.1 += 1;
        }
    }
    // 9 activation + 5 weight + 5 bias scales; 5 weight + 5 bias code tensors (+ zero points).
    assert!(compared.0 >= 19 && compared.1 >= 10, "{compared:?}");
}

#[test]
fn mobilenet_qdq_pattern_matches_onnx_runtime() {
    let g = model("mobilenetv2_tiny");
    let ort =
        shrink_graph::onnx::load(fashion_dir().join("mobilenetv2_tiny.int8_qdq_pc.onnx")).unwrap();
    let (q, rec) = insert_qdq(&g, &QuantPlan::int8(), &ranges(&g, 128)).unwrap();
    assert_eq!(op_counts(&q), op_counts(&ort));
    // Every ReLU6 folds into its u8 quantiser: the 15 Clips are gone.
    assert_eq!(rec.metrics["activations_folded"], 15.0);
    // Bias scale is s_x · s_w[c] for the first conv.
    let b = q.initializers["onnx::Conv_233_quantized_scale"].to_f32_vec();
    let sx = q.initializers["input_scale"].to_f32_vec()[0];
    let sw = q.initializers["onnx::Conv_232_scale"].to_f32_vec();
    for (c, (&bs, &s)) in b.iter().zip(&sw).enumerate() {
        assert_eq!(bs, sx * s, "channel {c}");
    }
}

fn loss(name: &str, plan: &QuantPlan, calib_n: usize, test_n: usize) -> (f64, f64, Graph) {
    let g = model(name);
    let r = ranges(&g, calib_n);
    let (q, _) = insert_qdq(&g, plan, &r).unwrap();
    let (xs, ys) = test_set(test_n);
    let fp = accuracy(&outputs(&g, &xs, 0).unwrap(), &ys).unwrap();
    let qa = accuracy(&outputs(&q, &xs, 0).unwrap(), &ys).unwrap();
    (fp, qa, q)
}

#[test]
fn int8_calibrated_keeps_accuracy() {
    for name in ["lenet300100", "lenet5_bn", "mobilenetv2_tiny"] {
        let (fp, qa, q) = loss(name, &QuantPlan::int8(), 128, 1000);
        assert!(fp - qa <= 0.2, "{name}: fp32 {fp} int8 {qa}");
        let ratio = stored_bytes(&model(name)) / stored_bytes(&q);
        assert!(ratio > 3.5, "{name}: only {ratio:.2}x smaller");
    }
}

#[test]
fn sub_8_bit_weights_are_hinted_and_bounded() {
    let mut plan = QuantPlan::int8();
    plan.weights = WeightFormat::int(4);
    let (fp, qa, q) = loss("lenet5_bn", &plan, 128, 1000);
    // peers.json: naive per-channel W4 on lenet5_bn loses 2.2 pt (88.75 vs 90.91).
    assert!(fp - qa <= 3.0, "fp32 {fp} W4A8 {qa}");
    let bits = weight_bits(&q);
    assert_eq!(bits.len(), 5);
    for (name, b) in &bits {
        assert_eq!(*b, 4);
        let codes = q.initializers[name].to_f64_vec();
        assert!(codes.iter().all(|&c| (-7.0..=7.0).contains(&c)), "{name}");
    }
    // Packed 4-bit storage: under 60% of the int8 model.
    let (_, _, q8) = loss("lenet5_bn", &QuantPlan::int8(), 128, 10);
    assert!(stored_bytes(&q) < 0.6 * stored_bytes(&q8));
}

#[test]
fn simulated_float_formats() {
    for (f, tol) in [
        (SimFormat::Fp16, 0.1),
        (SimFormat::Bf16, 0.5),
        (SimFormat::Posit16, 0.1),
        (SimFormat::Flex16, 0.1),
        (SimFormat::Posit8, 3.0),
    ] {
        let plan = QuantPlan {
            weights: WeightFormat::Sim(f),
            activations: ActFormat::Sim(f),
            ..QuantPlan::int8()
        };
        let (fp, qa, q) = loss("lenet5_bn", &plan, 128, 1000);
        assert!((fp - qa).abs() <= tol, "{f:?}: fp32 {fp} vs {qa}");
        let fake = q.nodes.iter().filter(|n| n.op_type == "FakeQuant").count();
        let casts = q.nodes.iter().filter(|n| n.op_type == "Cast").count();
        match f {
            SimFormat::Fp16 | SimFormat::Bf16 => assert!(casts > 0 && fake == 0),
            _ => assert!(fake > 0 && casts == 0),
        }
    }
}
