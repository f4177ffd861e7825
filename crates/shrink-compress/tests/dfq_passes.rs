//! The data-free passes on the shared Fashion models: each checked against an
//! independent reference (the exporter's own BN folding, the fp32 function
//! itself, the reference CLE in cle.json, measured activation statistics).

mod dfq_support;

use dfq_support::*;
use shrink_compress::bias_absorb::{absorb_high_bias, AbsorbOptions};
use shrink_compress::bias_correct::{
    analytic_means, correct_bias, empirical_means, WeightGranularity, WeightQuant,
};
use shrink_compress::cle::{equalize_cross_layer, find_pairs, CleOptions};
use shrink_compress::dfq::simulate_quantized;
use shrink_compress::fold_bn::{fold_batchnorm, BnStats, ChannelStats};
use shrink_compress::linear_layer::LinearLayer;
use shrink_compress::ranges_bn::{ranges_from_bn, BnRangeOptions};
use shrink_compress::relu6::{relu6_to_relu, Relu6Scope};
use shrink_graph::{Attr, Graph, Node, ValueInfo};
use shrink_tensor::Tensor;

const BN_MODELS: [&str; 3] = ["lenet5_bn", "mobilenetv2_tiny", "mobilenetv2_tiny_relu"];

#[test]
fn bn_folding_matches_the_function_and_the_exporters_folding() {
    let x = images(64);
    for m in BN_MODELS {
        let src = model(&format!("{m}.bn_nodes.onnx"));
        let (folded, rec, stats) = fold_batchnorm(&src).unwrap();
        assert!(
            folded
                .nodes
                .iter()
                .all(|n| n.op_type != "BatchNormalization"),
            "{m}: BN left after folding: {:?}",
            rec.changes
        );
        let bns = src
            .nodes
            .iter()
            .filter(|n| n.op_type == "BatchNormalization")
            .count();
        assert_eq!(rec.metrics["folded"], bns as f64, "{m}");
        assert_eq!(stats.values.len(), bns, "{m}");
        let (a, b) = (run(&folded, &x), run(&src, &x));
        assert!(
            max_abs_diff(&a, &b) <= 1e-5 * (1.0 + b.iter().fold(0f32, |m, v| m.max(v.abs()))),
            "{m}: folded outputs differ by {}",
            max_abs_diff(&a, &b)
        );
        // The exporter folded the same BNs: same layers in the same order.
        let exported = model(&format!("{m}.onnx"));
        let ours = LinearLayer::all(&folded);
        let theirs = LinearLayer::all(&exported);
        assert_eq!(ours.len(), theirs.len(), "{m}");
        for (o, t) in ours.iter().zip(&theirs) {
            assert_eq!(o.weight_shape, t.weight_shape, "{m}: {}", o.name);
            let (wo, wt) = (o.weight_values(&folded), t.weight_values(&exported));
            let scale = wt.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&wo, &wt) <= 2e-6 * scale,
                "{m}: weights of {} differ",
                o.name
            );
            let (bo, bt) = (o.bias_values(&folded), t.bias_values(&exported));
            let scale = bt.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&bo, &bt) <= 2e-6 * scale,
                "{m}: bias of {} differs",
                o.name
            );
        }
    }
}

#[test]
fn bn_statistics_describe_the_folded_pre_activations() {
    // mean = β and std = |γ| per channel: the measured statistics of the
    // folded conv's outputs on real images are close to them.
    let src = model("lenet5_bn.bn_nodes.onnx");
    let (mut g, _, stats) = fold_batchnorm(&src).unwrap();
    let name = "/bn2/BatchNormalization_output_0";
    let s = stats.get(name).expect("stats of bn2's output");
    g.outputs.push(ValueInfo::unknown(name));
    let sess = shrink_runtime::Session::new(g, Default::default()).unwrap();
    let outs = sess.run(vec![images(256)]).unwrap();
    let t = &outs[1];
    let (n, c) = (t.shape()[0], t.shape()[1]);
    let plane: usize = t.shape()[2..].iter().product();
    let v = t.to_f32_vec();
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|b| v[(b * c + ch) * plane..(b * c + ch + 1) * plane].to_vec())
            .map(|x| x as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let std = (vals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
        let (bm, bs) = (s.mean[ch] as f64, s.std[ch] as f64);
        assert!(
            (mean - bm).abs() < 0.25 * bs,
            "channel {ch}: mean {mean} vs β {bm}"
        );
        assert!(
            (std / bs - 1.0).abs() < 0.25,
            "channel {ch}: std {std} vs |γ| {bs}"
        );
    }
}

#[test]
fn bn_without_a_foldable_producer_stays() {
    // Relu → BN: nothing to fold into.
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::unknown("x"));
    g.outputs.push(ValueInfo::unknown("y"));
    for (k, v) in [("s", 2.0f32), ("b", 0.5), ("m", 0.1), ("v", 4.0)] {
        g.initializers
            .insert(k.into(), Tensor::from_vec(vec![1], vec![v]).unwrap());
    }
    g.nodes.push(Node::new("r", "Relu", &["x"], &["h"]));
    g.nodes.push(Node::new(
        "bn",
        "BatchNormalization",
        &["h", "s", "b", "m", "v"],
        &["y"],
    ));
    let (out, rec, stats) = fold_batchnorm(&g).unwrap();
    assert_eq!(out.nodes.len(), 2);
    assert_eq!(rec.metrics["kept"], 1.0);
    assert_eq!(stats.get("y").unwrap().mean, vec![0.5]);
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn bn_folds_into_grouped_conv_transpose_and_gemm() {
    // ConvTranspose W [I=4, O/group=3, 2, 2] with 2 groups → 6 output
    // channels; Gemm without transB (W [I, O]). Both followed by BN.
    let t = |s: Vec<usize>, v: Vec<f32>| Tensor::from_vec(s, v).unwrap();
    let bn_params = |g: &mut Graph, p: &str, c: usize, seed: u64| {
        let v = values(4 * c, seed);
        g.initializers.insert(
            format!("{p}s"),
            t(vec![c], v[..c].iter().map(|x| 1.0 + x).collect()),
        );
        g.initializers
            .insert(format!("{p}b"), t(vec![c], v[c..2 * c].to_vec()));
        g.initializers
            .insert(format!("{p}m"), t(vec![c], v[2 * c..3 * c].to_vec()));
        g.initializers.insert(
            format!("{p}v"),
            t(vec![c], v[3 * c..].iter().map(|x| 0.5 + x.abs()).collect()),
        );
    };
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::unknown("x"));
    g.outputs.push(ValueInfo::unknown("y"));
    g.initializers
        .insert("wt".into(), t(vec![4, 3, 2, 2], values(48, 1)));
    g.initializers.insert("bt".into(), t(vec![6], values(6, 2)));
    bn_params(&mut g, "n1", 6, 3);
    g.initializers.insert(
        "shape".into(),
        Tensor::from_vec(vec![2], vec![2i64, -1]).unwrap(),
    );
    g.initializers
        .insert("wg".into(), t(vec![6 * 4 * 4, 5], values(480, 4)));
    bn_params(&mut g, "n2", 5, 5);
    g.nodes.push(
        Node::new("ct", "ConvTranspose", &["x", "wt", "bt"], &["c"])
            .with("group", Attr::Int(2))
            .with("strides", Attr::Ints(vec![2, 2])),
    );
    g.nodes.push(Node::new(
        "bn1",
        "BatchNormalization",
        &["c", "n1s", "n1b", "n1m", "n1v"],
        &["cb"],
    ));
    g.nodes
        .push(Node::new("r", "Reshape", &["cb", "shape"], &["f"]));
    g.nodes.push(Node::new("fc", "Gemm", &["f", "wg"], &["z"]));
    g.nodes.push(
        Node::new(
            "bn2",
            "BatchNormalization",
            &["z", "n2s", "n2b", "n2m", "n2v"],
            &["y"],
        )
        .with("epsilon", Attr::Float(1e-3)),
    );
    let (folded, rec, _) = fold_batchnorm(&g).unwrap();
    assert_eq!(rec.metrics["folded"], 2.0, "{:?}", rec.changes);
    assert!(folded
        .nodes
        .iter()
        .all(|n| n.op_type != "BatchNormalization"));
    let x = t(vec![2, 4, 2, 2], values(32, 6));
    let (a, b) = (run(&folded, &x), run(&g, &x));
    assert!(max_rel_diff(&a, &b) < 1e-5, "{}", max_rel_diff(&a, &b));
}

#[test]
fn relu6_replacement_opens_the_pairs_cle_needs() {
    let (g, _, _) = fold_batchnorm(&model("mobilenetv2_tiny.bn_nodes.onnx")).unwrap();
    assert_eq!(find_pairs(&g, true).len(), 0, "ReLU6 blocks every pair");
    let (r, rec) = relu6_to_relu(&g, Relu6Scope::BetweenLayers).unwrap();
    // 15 Clip(0,6): 13 sit between two layers; the stem's (read by an Add
    // too) and the last conv's (read by pooling) stay.
    assert_eq!(rec.metrics["replaced"], 13.0);
    assert_eq!(r.nodes.iter().filter(|n| n.op_type == "Clip").count(), 2);
    assert_eq!(find_pairs(&r, true).len(), 13);
    let (all, rec) = relu6_to_relu(&g, Relu6Scope::All).unwrap();
    assert_eq!(rec.metrics["replaced"], 15.0);
    assert_eq!(all.nodes.iter().filter(|n| n.op_type == "Clip").count(), 0);
}

/// Per pair, the largest |log(r1_i / r2_i)| over channels.
fn worst_imbalance(g: &Graph) -> f64 {
    let mut worst = 0f64;
    for p in find_pairs(g, true) {
        let r1 = p.first.out_ranges(&p.first.weight_values(g));
        let r2 = p.second.in_ranges(&p.second.weight_values(g));
        for (a, b) in r1.iter().zip(&r2) {
            if *a > 0.0 && *b > 0.0 {
                worst = worst.max((*a as f64 / *b as f64).ln().abs());
            }
        }
    }
    worst
}

#[test]
fn cle_keeps_the_function_and_balances_every_pair() {
    let x = images(64);
    let (g, _, mut stats) = fold_batchnorm(&model("mobilenetv2_tiny_relu.bn_nodes.onnx")).unwrap();
    let before = stats.clone();
    let (eq, rec) = equalize_cross_layer(&g, &CleOptions::default(), Some(&mut stats)).unwrap();
    // cle.json: the reference equalised 13 pairs of this model (and none of
    // mobilenetv2_tiny, ReLU6, nor lenet5_bn, whose pairs are Gemm or cross a
    // MaxPool).
    assert_eq!(rec.metrics["conv_pairs"], 13.0);
    assert_eq!(rec.metrics["converged"], 1.0, "{:?}", rec.metrics);
    assert!(rec.metrics["range_ratio_after"] > rec.metrics["range_ratio_before"] + 0.05);
    assert!(worst_imbalance(&g) > 1.0);
    assert!(
        worst_imbalance(&eq) < 1e-4,
        "imbalance {}",
        worst_imbalance(&eq)
    );
    let (a, b) = (run(&eq, &x), run(&g, &x));
    assert!(
        max_rel_diff(&a, &b) < 1e-4,
        "CLE changed outputs by {}",
        max_rel_diff(&a, &b)
    );
    // BN statistics were rescaled with the channels.
    assert!(stats != before);
    for (name, s) in &stats.values {
        let b = &before.values[name];
        for c in 0..s.mean.len() {
            let ratio = s.std[c] as f64 / b.std[c].max(1e-30) as f64;
            if b.std[c] > 0.0 {
                assert!(
                    (s.mean[c] as f64 - b.mean[c] as f64 * ratio).abs()
                        < 1e-3 * (1.0 + b.mean[c].abs() as f64)
                );
            }
        }
    }
    for m in ["mobilenetv2_tiny", "lenet5_bn"] {
        let (g, _, _) = fold_batchnorm(&model(&format!("{m}.bn_nodes.onnx"))).unwrap();
        let (_, rec) = equalize_cross_layer(&g, &CleOptions::default(), None).unwrap();
        assert_eq!(rec.metrics["conv_pairs"], 0.0, "{m}");
    }
}

#[test]
fn cle_helps_per_tensor_w4_like_the_reference() {
    // cle.json: naive per-tensor W4 90.33 → 90.76 after CLE (10k images).
    // Here on the first 2000: CLE must not lose, and must cut the logits'
    // error against fp32.
    let data = test_set().take(2000);
    let x = data.inputs(0, 256).unwrap();
    let (g, _, _) = fold_batchnorm(&model("mobilenetv2_tiny_relu.bn_nodes.onnx")).unwrap();
    let (eq, _) = equalize_cross_layer(&g, &CleOptions::default(), None).unwrap();
    let w4 = WeightQuant::new(4, WeightGranularity::PerTensor);
    let (naive, _) = simulate_quantized(&g, &w4, None).unwrap();
    let (cle, _) = simulate_quantized(&eq, &w4, None).unwrap();
    let acc = |g: &Graph| shrink_compress::dfq::top1_accuracy(g, &data, 2000, 250, 0).unwrap();
    let (a_naive, a_cle) = (acc(&naive), acc(&cle));
    assert!(a_cle >= a_naive, "CLE {a_cle} < naive {a_naive}");
    let fp = run(&g, &x);
    let mse = |v: &[f32]| {
        v.iter()
            .zip(&fp)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
    };
    assert!(mse(&run(&cle, &x)) < 0.7 * mse(&run(&naive, &x)));
}

/// x → Gemm(2→2) → Relu → Gemm(2→1), with BN-like statistics for the first
/// output: channel 0 ~ N(5, 1) (c = 2 absorbable), channel 1 ~ N(0, 1).
fn tiny_mlp() -> (Graph, BnStats) {
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::unknown("x"));
    g.outputs.push(ValueInfo::unknown("y"));
    let t = |s: Vec<usize>, v: Vec<f32>| Tensor::from_vec(s, v).unwrap();
    g.initializers
        .insert("w1".into(), t(vec![2, 2], vec![1.0, 0.5, -0.25, 2.0]));
    g.initializers
        .insert("b1".into(), t(vec![2], vec![5.0, 0.0]));
    g.initializers
        .insert("w2".into(), t(vec![1, 2], vec![0.75, -1.5]));
    g.initializers.insert("b2".into(), t(vec![1], vec![0.1]));
    g.nodes
        .push(Node::new("fc1", "Gemm", &["x", "w1", "b1"], &["h"]).with("transB", Attr::Int(1)));
    g.nodes.push(Node::new("relu", "Relu", &["h"], &["a"]));
    g.nodes
        .push(Node::new("fc2", "Gemm", &["a", "w2", "b2"], &["y"]).with("transB", Attr::Int(1)));
    let mut stats = BnStats::default();
    stats.values.insert(
        "h".into(),
        ChannelStats {
            mean: vec![5.0, 0.0],
            std: vec![1.0, 1.0],
        },
    );
    (g, stats)
}

#[test]
fn high_bias_absorption_is_exact_above_the_threshold() {
    let (g, mut stats) = tiny_mlp();
    let (out, rec) = absorb_high_bias(&g, &mut stats, &AbsorbOptions::default()).unwrap();
    assert_eq!(rec.metrics["pairs"], 1.0);
    assert_eq!(out.initializers["b1"].to_f32_vec(), vec![3.0, 0.0]);
    // b2 += w2[:,0]·c = 0.75·2.
    assert!((out.initializers["b2"].to_f32_vec()[0] - 1.6).abs() < 1e-6);
    assert_eq!(stats.get("h").unwrap().mean, vec![3.0, 0.0]);
    // Inputs keeping channel 0's pre-activation ≥ 2: identical outputs.
    let x = Tensor::from_vec(vec![3, 2], vec![0.0, 0.0, 1.0, -1.0, -2.0, 1.5]).unwrap();
    assert!(max_abs_diff(&run(&out, &x), &run(&g, &x)) < 1e-6);
    // Below the threshold (pre-activation 5 − 4 = 1 < 2) it differs.
    let far = Tensor::from_vec(vec![1, 2], vec![-4.0, 0.0]).unwrap();
    assert!(max_abs_diff(&run(&out, &far), &run(&g, &far)) > 0.1);
}

#[test]
fn analytic_input_means_match_measured_ones() {
    // E[x] of each layer input from BN statistics alone (clipped-normal
    // mean after ReLU, sums through residual Adds, kept by pooling) against
    // the mean measured on 256 test images.
    let (g, _, stats) = fold_batchnorm(&model("mobilenetv2_tiny_relu.bn_nodes.onnx")).unwrap();
    let analytic = analytic_means(&g, &stats);
    let measured = empirical_means(&g, &[images(256)], 0).unwrap();
    let mut compared = 0;
    for l in LinearLayer::all(&g) {
        let x = l.input(&g);
        let (Some(a), Some(m)) = (analytic.get(x), measured.get(x)) else {
            continue;
        };
        let err = a
            .iter()
            .zip(m)
            .map(|(p, q)| (p - q).abs())
            .fold(0f64, f64::max);
        let mean_err = a.iter().zip(m).map(|(p, q)| (p - q).abs()).sum::<f64>() / m.len() as f64;
        // The Gaussian model of a BN output is an approximation; these
        // activations are O(1) (BN-normalised), so absolute errors compare.
        assert!(
            mean_err < 0.1 && err < 0.25,
            "{}: mean error {mean_err}, max {err}",
            l.name
        );
        compared += 1;
    }
    // Every layer but the stem (it reads the image).
    assert_eq!(compared, LinearLayer::all(&g).len() - 1);
}

/// Σ over output channels of |mean(y_q − y)| of `layer`'s output when only
/// that layer's weights are quantised (`q` holds them), measured on `x`.
fn output_bias(g: &Graph, q: &Graph, layer: &LinearLayer, x: &Tensor) -> f64 {
    let probe = |g: &Graph| -> Vec<f32> {
        let mut p = g.clone();
        p.outputs = vec![ValueInfo::unknown(layer.output(g))];
        run(&p, x)
    };
    let (a, b) = (probe(q), probe(g));
    let c = layer.out_channels;
    let n = a.len() / c / x.shape()[0];
    let mut per = vec![0f64; c];
    for (i, (p, r)) in a.iter().zip(&b).enumerate() {
        per[(i / n) % c] += (p - r) as f64;
    }
    per.iter().map(|v| (v / (a.len() / c) as f64).abs()).sum()
}

#[test]
fn bias_correction_removes_the_layers_output_bias() {
    // Per layer (others in fp32): quantising W to per-tensor 4 bits shifts
    // the output means; analytic correction (BN statistics only) and
    // empirical correction (means of other images) must remove most of it.
    let x = images(256);
    let (g, _, stats) = fold_batchnorm(&model("mobilenetv2_tiny_relu.bn_nodes.onnx")).unwrap();
    let wq = WeightQuant::new(4, WeightGranularity::PerTensor);
    let analytic = analytic_means(&g, &stats);
    let other = test_set().inputs(1000, 1512).unwrap();
    let measured = empirical_means(&g, &[other], 0).unwrap();
    let (ga, rec) = correct_bias(&g, &analytic, &wq, "analytic").unwrap();
    assert_eq!(
        rec.metrics["corrected"], 22.0,
        "all but the stem: {:?}",
        rec.changes
    );
    let (ge, rec) = correct_bias(&g, &measured, &wq, "empirical").unwrap();
    assert_eq!(rec.metrics["corrected"], 23.0);
    let layers = LinearLayer::all(&g);
    let (mut before, mut after_a, mut after_e) = (0.0, 0.0, 0.0);
    // A pointwise conv, a depthwise conv, the residual-fed conv, the classifier.
    for k in [2, 4, 8, 22] {
        let l = &layers[k];
        // Only this layer quantised, with its bias from `src`.
        let quant = |src: &Graph| {
            let mut q = g.clone();
            l.set_weight(&mut q, wq.fake_quantize(l, &l.weight_values(&g)).unwrap())
                .unwrap();
            l.clone().set_bias(&mut q, l.bias_values(src)).unwrap();
            q
        };
        let (b0, ba, be) = (
            output_bias(&g, &quant(&g), l, &x),
            output_bias(&g, &quant(&ga), l, &x),
            output_bias(&g, &quant(&ge), l, &x),
        );
        assert!(
            ba < 0.7 * b0 && be < 0.5 * b0,
            "{}: {b0} -> analytic {ba}, empirical {be}",
            l.name
        );
        before += b0;
        after_a += ba;
        after_e += be;
    }
    assert!(
        after_a < 0.5 * before && after_e < 0.3 * before,
        "{before} -> {after_a}, {after_e}"
    );
}

#[test]
fn data_free_ranges_cover_real_activations() {
    let x = images(256);
    for (m, bn) in [
        ("lenet300100.onnx", false),
        ("lenet5_bn.bn_nodes.onnx", true),
        ("mobilenetv2_tiny_relu.bn_nodes.onnx", true),
    ] {
        let (g, _, stats) = fold_batchnorm(&model(m)).unwrap();
        let (r, _) = ranges_from_bn(&g, &stats, &BnRangeOptions::default()).unwrap();
        let mut probe = g.clone();
        let names: Vec<String> = g
            .nodes
            .iter()
            .filter(|n| n.op_type == "Relu")
            .map(|n| n.outputs[0].clone())
            .collect();
        for n in &names {
            probe.outputs.push(ValueInfo::unknown(n));
        }
        let sess = shrink_runtime::Session::new(probe, Default::default()).unwrap();
        let outs = sess.run(vec![x.clone()]).unwrap();
        for (k, n) in names.iter().enumerate() {
            let vals = outs[k + 1].to_f32_vec();
            let seen = vals.iter().copied().fold(0f32, f32::max);
            let range = r
                .ranges
                .get(n)
                .unwrap_or_else(|| panic!("{m}: no range for {n}"));
            let (lo, hi) = range.merged();
            assert!(lo <= 0.0, "{m} {n}");
            if r.bound_only.contains(n) {
                // Interval arithmetic from the input domain is a guarantee.
                assert!(
                    seen <= hi * (1.0 + 1e-5),
                    "{m} {n}: {seen} above bound {hi}"
                );
            } else {
                assert!(bn);
                // β + 6γ clips only rare outliers (heavy-tailed depthwise
                // channels reach beyond) without being absurdly wide.
                let clipped = vals.iter().filter(|&&v| v > hi).count() as f64 / vals.len() as f64;
                assert!(clipped < 1e-3, "{m} {n}: {clipped} of values above {hi}");
                assert!(hi <= 10.0 * seen, "{m} {n}: seen {seen}, range {hi}");
            }
        }
    }
}
