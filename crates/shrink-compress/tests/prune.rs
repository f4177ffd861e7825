//! Pruning passes against independent references: PyTorch's pruning of the
//! shared LeNet-300-100 (peers.json), brute-force scalar implementations,
//! the AGP formula, and — for physical removal — the original graph with the
//! same channels zeroed.

use shrink_compress::prune::magnitude::{magnitude_prune, obd_prune, PruneOptions, Scope};
use shrink_compress::prune::mask::{apply_masks, masks_of};
use shrink_compress::prune::nm::nm_prune;
use shrink_compress::prune::schedule::Agp;
use shrink_compress::prune::sensitivity::{evaluate, sensitivity_scan, targets_from_scan};
use shrink_compress::prune::structured::{
    aligned_keep, channel_groups, prune_channels, prune_kernels, remove_channels,
    remove_residual_branches, residual_branches, uniform_plan, zero_channels, ChannelOptions,
    Criterion,
};
use shrink_compress::prune::{prunable_weights, sparsity};
use shrink_data::{Dataset, Split};
use shrink_graph::analysis::{layer_stats, totals};
use shrink_graph::Graph;
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fashion_dir() -> PathBuf {
    shrink_data::shared_data_dir()
        .map(|d| d.join("fashion"))
        .unwrap_or_else(|| PathBuf::from("/work/shared/data/fashion"))
}

fn model(name: &str) -> Graph {
    let p = fashion_dir().join(name);
    shrink_graph::onnx::load(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shared Fashion-MNIST models missing?)",
            p.display()
        )
    })
}

fn test_set() -> Dataset {
    Dataset::open("fashion-mnist", Split::Test)
        .unwrap_or_else(|e| panic!("{e} (run scripts/fetch-assets)"))
}

fn peers() -> serde_json::Value {
    let p = fashion_dir().join("peers.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("peers.json")).expect("json")
}

/// The 256 sample images as model inputs.
fn sample_inputs() -> Tensor {
    let x = shrink_data::npy::read_npy(fashion_dir().join("test_sample_x.npy")).expect("sample");
    let v: Vec<f32> = x.to_f32_vec().iter().map(|p| p / 255.0).collect();
    Tensor::from_vec(vec![256, 1, 28, 28], v).unwrap()
}

fn run(g: &Graph, x: &Tensor) -> Vec<f32> {
    let s = Session::new(
        g.clone(),
        SessionOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .expect("session");
    s.run(vec![x.clone()]).expect("run")[0].to_f32_vec()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn weights(g: &Graph, name: &str) -> Vec<f32> {
    g.initializers[name].to_f32_vec()
}

fn macs(g: &Graph) -> u64 {
    totals(&layer_stats(g)).macs.expect("MACs known")
}

/// Per-layer magnitude pruning of LeNet-300-100 at 90% reproduces PyTorch's
/// `l1_unstructured` (peers.json: 35.41% top-1 without retraining), and the
/// global threshold reproduces `global_unstructured` (kept fractions and
/// 38.67%).
#[test]
fn magnitude_matches_pytorch_on_lenet300100() {
    let g = model("lenet300100.onnx");
    let p = peers();
    let data = test_set();
    let ref_layer = p["lenet300100"]["pruning_90"]["per_layer"]["no_retrain"]
        .as_f64()
        .unwrap();
    let ref_global = &p["lenet300100"]["pruning_90"]["global"];

    let (pl, rec) = magnitude_prune(
        &g,
        &PruneOptions {
            sparsity: 0.9,
            ..Default::default()
        },
    )
    .unwrap();
    for w in prunable_weights(&g) {
        let kept = rec.metrics[&format!("kept.{}", w.tensor)];
        assert!((kept - 0.1).abs() < 1e-4, "{}: kept {kept}", w.tensor);
    }
    let acc = evaluate(&pl, &data, 1000, 0).unwrap().accuracy;
    assert!(
        (acc - ref_layer).abs() <= 0.02,
        "per-layer 90%: {acc} vs PyTorch {ref_layer}"
    );

    let opts = PruneOptions {
        sparsity: 0.9,
        scope: Scope::Global,
        ..Default::default()
    };
    let (gl, rec) = magnitude_prune(&g, &opts).unwrap();
    for (t, kept) in ref_global["kept_fraction"].as_object().unwrap() {
        let ours = rec.metrics[&format!("kept.{t}")];
        assert!(
            (ours - kept.as_f64().unwrap()).abs() < 6e-5,
            "{t}: {ours} vs {kept}"
        );
    }
    assert!((sparsity(&gl) - 0.9).abs() < 1e-5);
    let acc = evaluate(&gl, &data, 1000, 0).unwrap().accuracy;
    let r = ref_global["no_retrain"].as_f64().unwrap();
    assert!((acc - r).abs() <= 0.02, "global 90%: {acc} vs PyTorch {r}");
}

/// Brute force: every kept |w| ≥ every pruned |w| within a layer, exactly
/// round(s·n) zeros, masks re-apply, OBD with h = 1 equals magnitude.
#[test]
fn magnitude_properties_and_obd() {
    let g = model("lenet5.onnx");
    for s in [0.0, 0.3, 0.77, 1.0] {
        let (pg, _) = magnitude_prune(
            &g,
            &PruneOptions {
                sparsity: s,
                ..Default::default()
            },
        )
        .unwrap();
        for w in prunable_weights(&g) {
            let orig = weights(&g, &w.tensor);
            let new = weights(&pg, &w.tensor);
            let zeros = new.iter().filter(|x| **x == 0.0).count();
            assert_eq!(
                zeros,
                (s * orig.len() as f64).round() as usize,
                "{} at {s}",
                w.tensor
            );
            let max_pruned = orig
                .iter()
                .zip(&new)
                .filter(|(_, n)| **n == 0.0)
                .map(|(o, _)| o.abs())
                .fold(0.0, f32::max);
            let min_kept = orig
                .iter()
                .zip(&new)
                .filter(|(_, n)| **n != 0.0)
                .map(|(o, _)| o.abs())
                .fold(f32::INFINITY, f32::min);
            assert!(
                max_pruned <= min_kept,
                "{}: pruned {max_pruned} > kept {min_kept}",
                w.tensor
            );
            for (o, n) in orig.iter().zip(&new) {
                assert!(*n == 0.0 || n == o, "kept weights are unchanged");
            }
        }
    }
    // OBD with a unit Hessian is magnitude (½w² orders like |w|).
    let ones: BTreeMap<String, Tensor> = prunable_weights(&g)
        .into_iter()
        .map(|w| {
            let shape = g.initializers[&w.tensor].shape().to_vec();
            let n: usize = shape.iter().product();
            (w.tensor, Tensor::from_vec(shape, vec![1.0f32; n]).unwrap())
        })
        .collect();
    let opts = PruneOptions {
        sparsity: 0.6,
        ..Default::default()
    };
    let (a, _) = magnitude_prune(&g, &opts).unwrap();
    let (b, _) = obd_prune(&g, &ones, &opts).unwrap();
    assert_eq!(a.initializers, b.initializers);
    // A Hessian that makes the first half of fc1 precious protects it.
    let mut h = ones.clone();
    let fc1 = h.get_mut("fc1.weight").unwrap();
    let n = fc1.len();
    let v: Vec<f32> = (0..n).map(|i| if i < n / 2 { 1e6 } else { 1.0 }).collect();
    *fc1 = Tensor::from_vec(fc1.shape().to_vec(), v).unwrap();
    // 40% of fc1 is less than its unprotected half.
    let opts40 = PruneOptions {
        sparsity: 0.4,
        ..Default::default()
    };
    let (c, _) = obd_prune(&g, &h, &opts40).unwrap();
    let w = weights(&c, "fc1.weight");
    let orig = weights(&g, "fc1.weight");
    let hv: Vec<f32> = (0..n).map(|i| if i < n / 2 { 1e6 } else { 1.0 }).collect();
    // Brute-force reference: the 40% smallest ½·h·w², ties by position.
    let sal: Vec<f64> = orig
        .iter()
        .zip(&hv)
        .map(|(w, h)| 0.5 * (*h as f64) * (*w as f64).powi(2))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| sal[a].total_cmp(&sal[b]).then(a.cmp(&b)));
    let k = (0.4 * n as f64).round() as usize;
    let expect: std::collections::BTreeSet<usize> = order[..k].iter().copied().collect();
    let got: std::collections::BTreeSet<usize> = (0..n).filter(|&i| w[i] == 0.0).collect();
    // f32 vs f64 saliency may order near-ties differently; allow a handful.
    let diff = expect.symmetric_difference(&got).count();
    assert!(
        diff <= 4,
        "{diff} weights differ from the brute-force OBD choice"
    );
    let protected = (0..n / 2).filter(|&i| w[i] == 0.0).count();
    let unprotected = (n / 2..n).filter(|&i| w[i] == 0.0).count();
    assert!(
        protected * 100 < unprotected,
        "large h protects: {protected} vs {unprotected}"
    );
    // Masks: perturb, re-apply, same zeros.
    let masks = masks_of(&a);
    let mut perturbed = a.clone();
    for w in prunable_weights(&g) {
        let v: Vec<f32> = weights(&a, &w.tensor).iter().map(|x| x + 0.5).collect();
        let shape = a.initializers[&w.tensor].shape().to_vec();
        perturbed
            .initializers
            .insert(w.tensor.clone(), Tensor::from_vec(shape, v).unwrap());
    }
    apply_masks(&mut perturbed, &masks).unwrap();
    assert_eq!(masks_of(&perturbed), masks);
    // Bad input is an error, not a panic.
    assert!(magnitude_prune(
        &g,
        &PruneOptions {
            sparsity: 1.5,
            ..Default::default()
        }
    )
    .is_err());
}

/// 2:4: every group of 4 consecutive inputs of an output row keeps its 2
/// largest magnitudes (brute force over the group).
#[test]
fn two_four_pattern() {
    let g = model("lenet5.onnx");
    let (pg, rec) = nm_prune(&g, 2, 4, &[]).unwrap();
    for w in prunable_weights(&g) {
        let l = w.layout;
        let orig = weights(&g, &w.tensor);
        let new = weights(&pg, &w.tensor);
        for o in 0..l.outputs {
            for start in (0..l.inputs).step_by(4) {
                let idx: Vec<usize> = (start..(start + 4).min(l.inputs))
                    .map(|i| l.index(o, i))
                    .collect();
                let kept: Vec<usize> = idx.iter().copied().filter(|&i| new[i] != 0.0).collect();
                assert!(kept.len() <= 2, "{} row {o} group {start}", w.tensor);
                for &i in &idx {
                    let bigger = idx
                        .iter()
                        .filter(|&&j| orig[j].abs() > orig[i].abs())
                        .count();
                    if bigger < 2 && orig[i] != 0.0 {
                        assert_eq!(new[i], orig[i], "{}: a top-2 weight was dropped", w.tensor);
                    }
                }
            }
        }
    }
    assert!((rec.metrics["sparsity"] - 0.5).abs() < 0.02);
    assert!(nm_prune(&g, 3, 2, &[]).is_err());
}

/// AGP against the closed form of Zhu & Gupta.
#[test]
fn agp_schedule() {
    let a = Agp::new(0.0, 0.9, 100, 10, 50).unwrap();
    assert_eq!(a.sparsity_at(0), 0.0);
    assert_eq!(a.sparsity_at(100), 0.0);
    assert!((a.sparsity_at(350) - 0.9 * (1.0 - 0.125)).abs() < 1e-12);
    assert!((a.sparsity_at(600) - 0.9).abs() < 1e-12);
    assert!((a.sparsity_at(10_000) - 0.9).abs() < 1e-12);
    let t = a.targets();
    assert_eq!(t.len(), 11);
    assert_eq!(t[0].0, 100);
    assert_eq!(t[10].0, 600);
    for w in t.windows(2) {
        assert!(w[1].1 >= w[0].1);
        // Increments shrink: the cubic front-loads pruning.
        if w[0].0 > 100 {
            let prev = a.sparsity_at(w[0].0) - a.sparsity_at(w[0].0 - 50);
            assert!(w[1].1 - w[0].1 <= prev + 1e-12);
        }
    }
    assert!(a.prunes_at(150) && !a.prunes_at(151) && !a.prunes_at(650));
    assert!(Agp::new(0.0, 1.2, 0, 1, 1).is_err());
}

/// Physical removal equals zeroing, the graph shrinks, shapes infer.
fn check_structured(name: &str, expect_residual: bool) {
    let g = model(name);
    let x = sample_inputs();
    let groups = channel_groups(&g).unwrap();
    assert!(
        groups.iter().any(|grp| grp.prunable()),
        "{name}: no prunable group"
    );
    assert_eq!(
        groups.iter().any(|grp| grp.residual && grp.prunable()),
        expect_residual,
        "{name}"
    );
    let opts = ChannelOptions {
        macs_fraction: 0.5,
        ..Default::default()
    };
    let plan = uniform_plan(
        &g,
        &groups,
        0.5,
        &ChannelOptions {
            neurons: true,
            ..opts.clone()
        },
    )
    .unwrap();
    assert!(!plan.is_empty());
    let (pg, _) = remove_channels(&g, &groups, &plan).unwrap();
    let zg = zero_channels(&g, &groups, &plan).unwrap();
    let a = run(&pg, &x);
    let b = run(&zg, &x);
    let d = max_abs_diff(&a, &b);
    assert!(d <= 1e-5, "{name}: pruned vs zeroed differ by {d}");
    assert!(macs(&pg) < macs(&g));
    shrink_graph::validate(&pg).unwrap();
    // Every Conv/Gemm weight count drops or stays; param total drops.
    assert!(totals(&layer_stats(&pg)).params < totals(&layer_stats(&g)).params);

    // To a MACs budget.
    let (p50, rec) = prune_channels(&g, &opts).unwrap();
    let m = macs(&p50) as f64 / macs(&g) as f64;
    assert!(m <= 0.5 && m > 0.3, "{name}: {m} of the MACs left");
    assert!((rec.metrics["macs_fraction"] - m).abs() < 1e-9);
    assert_eq!(run(&p50, &x).len(), 256 * 10);
}

#[test]
fn structured_lenet5_bn_nodes() {
    check_structured("lenet5_bn.bn_nodes.onnx", false);
    // BatchNorm parameters follow their channels.
    let g = model("lenet5_bn.bn_nodes.onnx");
    let (pg, _) = prune_channels(&g, &ChannelOptions::default()).unwrap();
    for n in pg
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
    {
        let c = pg.initializers[&n.inputs[1]].len();
        for p in &n.inputs[2..] {
            assert_eq!(pg.initializers[p].len(), c);
        }
    }
}

#[test]
fn structured_lenet5_folded() {
    check_structured("lenet5.onnx", false);
}

#[test]
fn structured_mobilenetv2_tiny() {
    check_structured("mobilenetv2_tiny.bn_nodes.onnx", true);
    check_structured("mobilenetv2_tiny.onnx", true);
    // Residual groups tie several sources.
    let g = model("mobilenetv2_tiny.onnx");
    let groups = channel_groups(&g).unwrap();
    let tied = groups
        .iter()
        .filter(|grp| grp.residual)
        .map(|grp| grp.sources.len())
        .max()
        .unwrap();
    assert!(tied >= 2, "an Add ties the channels of two producers");
}

/// Rounding kept widths to a SIMD multiple: exhaustively over small
/// groups, a multiple of `align` within [align, channels], nearest to the
/// unrounded count, and never wider when fewer channels are asked for
/// (what keeps the MACs bisection valid).
#[test]
fn aligned_keep_rounds_to_nearest_multiple() {
    for align in [4usize, 8, 16] {
        for channels in 1..=72usize {
            let mut prev = 0;
            for keep in 1..=channels {
                let k = aligned_keep(channels, keep, align);
                if channels < align {
                    assert_eq!(k, keep);
                } else {
                    assert!(
                        k.is_multiple_of(align) || k == channels,
                        "{channels} {keep} {align}: {k}"
                    );
                    assert!((align..=channels).contains(&k));
                    let nearest = (align..=channels)
                        .step_by(align)
                        .min_by_key(|m| (m.abs_diff(keep), usize::MAX - m))
                        .unwrap();
                    if keep <= channels / align * align {
                        assert_eq!(k, nearest, "{channels} {keep} {align}");
                    }
                }
                assert!(k >= prev, "monotone in keep");
                prev = k;
            }
        }
    }
}

/// MobileNetV2-tiny at 50% of the MACs with widths aligned to 8: every
/// pruned Conv keeps a multiple of 8 filters, the budget holds, and the
/// pruned graph equals the zeroed one (physical removal is exact).
#[test]
fn structured_aligned_mobilenetv2_tiny() {
    let g = model("mobilenetv2_tiny.onnx");
    let opts = ChannelOptions {
        macs_fraction: 0.5,
        align: 8,
        ..Default::default()
    };
    let (pg, _) = prune_channels(&g, &opts).unwrap();
    let m = macs(&pg) as f64 / macs(&g) as f64;
    assert!(m <= 0.5 && m > 0.3, "{m} of the MACs left");
    let mut pruned = 0;
    for n in pg.nodes.iter().filter(|n| n.op_type == "Conv") {
        let before = g.initializers[&n.inputs[1]].shape()[0];
        let after = pg.initializers[&n.inputs[1]].shape()[0];
        if after < before {
            pruned += 1;
            assert!(after.is_multiple_of(8), "{}: {before} → {after}", n.name);
        }
    }
    assert!(pruned >= 10, "{pruned} convs pruned");
    assert_eq!(run(&pg, &sample_inputs()).len(), 256 * 10);
}

/// Neurons of an MLP: rows of one Gemm and columns of the next.
#[test]
fn structured_neurons_lenet300100() {
    let g = model("lenet300100.onnx");
    let x = sample_inputs();
    let groups = channel_groups(&g).unwrap();
    let prunable: Vec<usize> = groups
        .iter()
        .filter(|g| g.prunable())
        .map(|g| g.channels)
        .collect();
    assert_eq!(prunable, vec![300, 100], "hidden layers; the logits stay");
    let opts = ChannelOptions {
        neurons: true,
        ..Default::default()
    };
    let plan = uniform_plan(&g, &groups, 0.4, &opts).unwrap();
    let (pg, _) = remove_channels(&g, &groups, &plan).unwrap();
    assert_eq!(pg.initializers["fc1.weight"].shape(), &[180, 784]);
    assert_eq!(pg.initializers["fc2.weight"].shape(), &[60, 180]);
    assert_eq!(pg.initializers["fc3.weight"].shape(), &[10, 60]);
    let zg = zero_channels(&g, &groups, &plan).unwrap();
    assert!(max_abs_diff(&run(&pg, &x), &run(&zg, &x)) <= 1e-5);
}

/// Removing a residual branch equals zeroing the branch's last conv.
#[test]
fn residual_branch_removal() {
    let g = model("mobilenetv2_tiny.onnx");
    let x = sample_inputs();
    let branches = residual_branches(&g);
    assert_eq!(branches.len(), 4, "{branches:?}");
    let br = &branches[1];
    let (pg, rec) = remove_residual_branches(&g, std::slice::from_ref(&br.add)).unwrap();
    assert!(rec.metrics["macs_after"] < rec.metrics["macs_before"]);
    // The branch (its Clip-bound Constants included) and the Add are gone.
    assert_eq!(pg.nodes.len() + br.nodes.len() + 1, g.nodes.len());
    // Reference: the branch's output conv zeroed → Add(x, 0) = x.
    let mut zg = g.clone();
    let last = g.nodes.iter().find(|n| n.outputs[0] == br.branch).unwrap();
    for t in &last.inputs[1..] {
        let shape = zg.initializers[t].shape().to_vec();
        zg.initializers
            .insert(t.clone(), Tensor::zeros(shrink_tensor::DType::F32, shape));
    }
    assert!(max_abs_diff(&run(&pg, &x), &run(&zg, &x)) <= 1e-5);
    assert!(remove_residual_branches(&g, &["nope".into()]).is_err());
}

/// Kernel pruning zeros whole kh×kw kernels.
#[test]
fn kernel_granularity() {
    let g = model("lenet5.onnx");
    let (pg, _) = prune_kernels(&g, 0.5, Criterion::L2).unwrap();
    let w = weights(&pg, "conv2.weight");
    let kernels: Vec<&[f32]> = w.chunks(25).collect();
    let zero = kernels
        .iter()
        .filter(|k| k.iter().all(|x| *x == 0.0))
        .count();
    assert_eq!(zero, 48);
    assert!(kernels
        .iter()
        .all(|k| k.iter().all(|x| *x == 0.0) || k.iter().all(|x| *x != 0.0)));
}

/// The scan: a layer pruned to 0% changes nothing (KL 0, base accuracy);
/// targets respect the budget.
#[test]
fn sensitivity_scan_lenet300100() {
    let g = model("lenet300100.onnx");
    let data = test_set().take(1000);
    let (base, scan) = sensitivity_scan(&g, &data, &[0.0, 0.5, 0.95, 0.99], 500, 0).unwrap();
    assert_eq!(scan.len(), 3);
    for l in &scan {
        assert_eq!(l.points[0].accuracy, base);
        assert!(l.points[0].kl.abs() < 1e-9);
        assert!(
            l.points[3].kl > l.points[1].kl,
            "{}: more pruning, more drift",
            l.tensor
        );
    }
    let t = targets_from_scan(base, &scan, 1.0);
    for l in &scan {
        let s = t[&l.tensor];
        let p = l.points.iter().find(|p| p.sparsity == s).unwrap();
        assert!(base - p.accuracy <= 1.0);
    }
    // Without retraining, the wide hidden layers take 50% within a point but
    // the 1000-weight classifier does not (Han et al.: the last layer is the
    // fragile one).
    assert!(t["fc1.weight"] >= 0.5 && t["fc2.weight"] >= 0.5, "{t:?}");
    assert_eq!(t["fc3.weight"], 0.0, "{t:?}");
}
