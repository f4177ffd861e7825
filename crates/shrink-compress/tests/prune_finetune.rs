//! Fine-tuning through shrink-train under pruning masks and codebooks, the
//! empirical Fisher, and the Deep Compression pipeline end to end (short
//! runs; bench/prune_deep_compression.sh has the full ones).

use shrink_compress::deep_compression::{deep_compression, DeepCompressionOptions};
use shrink_compress::kmeans::{weight_share, ShareOptions};
use shrink_compress::prune::finetune::{
    finetune, fisher_diagonal, Constraint, Distill, FinetuneOptions,
};
use shrink_compress::prune::magnitude::{magnitude_prune, PruneOptions, Scope};
use shrink_compress::prune::mask::masks_of;
use shrink_compress::prune::prunable_weights;
use shrink_compress::prune::sensitivity::{evaluate, kl_divergence};
use shrink_data::{Dataset, Split};
use shrink_graph::container::{from_shrink_bytes, to_shrink_bytes, Provenance};
use shrink_graph::Graph;
use std::collections::BTreeSet;

fn model(name: &str) -> Graph {
    let p = shrink_data::shared_data_dir()
        .map(|d| d.join("fashion").join(name))
        .unwrap_or_else(|| format!("/work/shared/data/fashion/{name}").into());
    shrink_graph::onnx::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn split(s: Split, n: usize) -> Dataset {
    Dataset::open("fashion-mnist", s)
        .unwrap_or_else(|e| panic!("{e} (run scripts/fetch-assets)"))
        .take(n)
}

/// 90% global pruning costs ~50 points (peers.json: 38.67%); a short masked
/// fine-tune recovers most of it and every pruned weight stays exactly zero.
#[test]
fn masked_finetune_recovers_and_keeps_zeros() {
    let g = model("lenet300100.onnx");
    let train = split(Split::Train, 6000);
    let test = split(Split::Test, 2000);
    let opts = PruneOptions {
        sparsity: 0.9,
        scope: Scope::Global,
        ..Default::default()
    };
    let (mut p, _) = magnitude_prune(&g, &opts).unwrap();
    let before = evaluate(&p, &test, 500, 0).unwrap().accuracy;
    let masks = masks_of(&p);
    let ft = FinetuneOptions {
        epochs: 1,
        batch: 64,
        ..Default::default()
    };
    let r = finetune(&mut p, &train, &ft, Constraint::Masks(&masks)).unwrap();
    assert_eq!(r.steps, 6000usize.div_ceil(64));
    let after = evaluate(&p, &test, 500, 0).unwrap().accuracy;
    assert!(before < 50.0 && after > 80.0, "{before} → {after}");
    assert_eq!(
        masks_of(&p),
        masks,
        "pruned weights stay zero, survivors stay nonzero"
    );
}

/// Distillation wiring. With α = 0 the distillation term is weighted out,
/// so a run is bit-identical to plain cross-entropy fine-tuning. With α = 1
/// the labels are out and only the teacher counts: distilled from a teacher
/// whose classes are rotated (fc3's rows rolled by one), the student learns
/// the rotation — its KL from that teacher on held-out images falls by more
/// than half — while the same steps on hard labels leave it far away.
#[test]
fn distillation_pulls_the_student_to_the_teacher() {
    let g = model("lenet300100.onnx");
    let train = split(Split::Train, 1000);
    let test = split(Split::Test, 1000);
    let kd = |teacher: &Graph, alpha: f32| FinetuneOptions {
        epochs: 1,
        batch: 100,
        distill: Some(Distill {
            teacher: teacher.clone(),
            temperature: 2.0,
            alpha,
        }),
        ..Default::default()
    };
    let (mut a, mut b) = (g.clone(), g.clone());
    finetune(&mut a, &train, &kd(&g, 0.0), Constraint::None).unwrap();
    let plain = FinetuneOptions {
        distill: None,
        ..kd(&g, 0.0)
    };
    finetune(&mut b, &train, &plain, Constraint::None).unwrap();
    for (name, t) in &a.initializers {
        assert_eq!(b.initializers[name].to_f32_vec(), t.to_f32_vec(), "{name}");
    }
    assert_ne!(
        a.initializers["fc1.weight"].to_f32_vec(),
        g.initializers["fc1.weight"].to_f32_vec()
    );

    // The rotated teacher: class c's logit is the original class c−1's.
    let mut rotated = g.clone();
    for name in ["fc3.weight", "fc3.bias"] {
        let t = &g.initializers[name];
        let v = t.to_f32_vec();
        let row = v.len() / 10;
        let mut r = v.clone();
        for c in 0..10 {
            let src = (c + 9) % 10;
            r[c * row..(c + 1) * row].copy_from_slice(&v[src * row..(src + 1) * row]);
        }
        rotated.initializers.insert(
            name.into(),
            shrink_tensor::Tensor::from_vec(t.shape().to_vec(), r).unwrap(),
        );
    }
    let teacher = evaluate(&rotated, &test, 500, 0).unwrap();
    let kl = |gr: &Graph| {
        let e = evaluate(gr, &test, 500, 0).unwrap();
        kl_divergence(&teacher.logits, &e.logits, e.classes)
    };
    let before = kl(&g);
    let (mut ce, mut st) = (g.clone(), g.clone());
    finetune(&mut ce, &train, &plain, Constraint::None).unwrap();
    finetune(&mut st, &train, &kd(&rotated, 1.0), Constraint::None).unwrap();
    let (after_ce, after_kd) = (kl(&ce), kl(&st));
    assert!(
        after_kd < 0.5 * before && after_kd < 0.5 * after_ce,
        "KL from the rotated teacher {before} → {after_kd} distilled, {after_ce} on hard labels"
    );
    assert!(finetune(&mut st, &train, &kd(&g, 1.5), Constraint::None).is_err());
}

/// Centroid fine-tuning moves weights but keeps each layer on its codebook.
#[test]
fn centroid_finetune_keeps_codebooks() {
    let g = model("lenet300100.onnx");
    let train = split(Split::Train, 2000);
    let (p, _) = magnitude_prune(
        &g,
        &PruneOptions {
            sparsity: 0.9,
            scope: Scope::Global,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut s, _, mut books) = weight_share(
        &p,
        &ShareOptions {
            bits: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let before = s.clone();
    let ft = FinetuneOptions {
        epochs: 1,
        batch: 100,
        lr: 1e-3,
        ..Default::default()
    };
    finetune(&mut s, &train, &ft, Constraint::Codebooks(&mut books)).unwrap();
    for w in prunable_weights(&g) {
        let a = s.initializers[&w.tensor].to_f32_vec();
        let b = before.initializers[&w.tensor].to_f32_vec();
        assert_ne!(a, b, "{}: centroids moved", w.tensor);
        let distinct: BTreeSet<u32> = a.iter().map(|x| x.to_bits()).collect();
        assert!(
            distinct.len() <= 16,
            "{}: {} values",
            w.tensor,
            distinct.len()
        );
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(*x == 0.0, *y == 0.0);
        }
        // Weights sharing a centroid before still share one after.
        let book = &books[&w.tensor];
        let nz: Vec<f32> = a.iter().copied().filter(|x| *x != 0.0).collect();
        for (v, l) in nz.iter().zip(&book.labels) {
            assert_eq!(*v, book.centroids[*l as usize]);
        }
    }
}

/// The empirical Fisher of fc1 is exactly zero in the columns of input
/// pixels that are zero in every image seen (∂L/∂W[o,i] = δ_o·x_i) and
/// positive somewhere in every other column.
#[test]
fn fisher_diagonal_follows_inputs() {
    let g = model("lenet300100.onnx");
    let data = split(Split::Test, 256);
    let f = fisher_diagonal(&g, &data, 128, 2).unwrap();
    let fc1 = f["fc1.weight"].to_f32_vec();
    let x = data.inputs(0, 256).unwrap().to_f32_vec();
    let mut checked_zero = 0;
    for i in 0..784 {
        let active = (0..256).any(|n| x[n * 784 + i] != 0.0);
        let col_max = (0..300).map(|o| fc1[o * 784 + i]).fold(0.0f32, f32::max);
        if active {
            assert!(col_max > 0.0, "pixel {i}");
        } else {
            assert_eq!(col_max, 0.0, "pixel {i}");
            checked_zero += 1;
        }
    }
    assert!(checked_zero > 0, "some border pixels are always zero");
    assert!(f.values().all(|t| t.to_f32_vec().iter().all(|v| *v >= 0.0)));
}

/// The whole pipeline, short: sizes come from the container and add up,
/// the file decodes to the very weights, and it compresses > 30×.
#[test]
fn deep_compression_short_run() {
    let g = model("lenet300100.onnx");
    let train = split(Split::Train, 3000);
    let test = split(Split::Test, 1000);
    let quick = FinetuneOptions {
        epochs: 1,
        batch: 100,
        ..Default::default()
    };
    let opts = DeepCompressionOptions {
        prune: PruneOptions {
            sparsity: 0.92,
            scope: Scope::Global,
            ..Default::default()
        },
        prune_steps: 2,
        finetune: Some(quick.clone()),
        centroid_finetune: Some(FinetuneOptions { lr: 1e-4, ..quick }),
        ..Default::default()
    };
    let (out, rep) = deep_compression(&g, &train, &test, &opts).unwrap();
    let table = rep.table();
    assert!(
        table.contains("fc1.weight") && table.contains("compression"),
        "{table}"
    );
    for r in &rep.rows {
        assert!(r.p_bytes > r.pq_bytes && r.pq_bytes >= r.pqh_bytes, "{r:?}");
        assert!(r.kept < 0.5);
    }
    assert!(rep.final_accuracy > rep.pruned_accuracy + 20.0, "{table}");
    let (bytes, file) = to_shrink_bytes(&out, &Provenance::new()).unwrap();
    assert!(file.check_sizes());
    let back = from_shrink_bytes(&bytes).unwrap().graph;
    for (name, t) in &out.initializers {
        assert_eq!(
            back.initializers[name].to_f32_vec(),
            t.to_f32_vec(),
            "{name}"
        );
    }
    assert!(rep.compression() > 30.0, "{table}");
    // Codebooks are stored at fp16: every shared value is exactly an fp16,
    // and the biases of the Gemms are codebook-coded (smaller than f32).
    for w in prunable_weights(&out) {
        for x in out.initializers[&w.tensor].to_f32_vec() {
            assert_eq!(half::f16::from_f32(x).to_f32(), x, "{}", w.tensor);
        }
    }
    assert!(out.encodings["fc1.bias"].codebook_bits().is_some());
    // The report's file also carries the pass records as provenance.
    assert!(rep.file_bytes >= bytes.len());
}

/// The LeNet-5 recipe's knobs, short: a per-layer target holds exactly
/// (conv1 keeps 60% of its 150 weights), per-layer bits cap the distinct
/// values, the final fine-tune runs, and the report's file size is the
/// length of the bytes the container writes for the returned graph.
#[test]
fn deep_compression_lenet5_targets_and_bits() {
    let g = model("lenet5.onnx");
    let train = split(Split::Train, 2000);
    let test = split(Split::Test, 1000);
    let quick = FinetuneOptions {
        epochs: 1,
        batch: 100,
        ..Default::default()
    };
    let opts = DeepCompressionOptions {
        prune: PruneOptions {
            sparsity: 0.94,
            scope: Scope::Global,
            targets: [("conv1.weight".to_string(), 0.4)].into(),
            ..Default::default()
        },
        prune_steps: 2,
        finetune: Some(quick.clone()),
        final_finetune: Some(quick.clone()),
        share: ShareOptions {
            bits: 4,
            conv_bits: Some(5),
            bits_per_layer: [("fc3.weight".to_string(), 3)].into(),
            ..Default::default()
        },
        centroid_finetune: Some(FinetuneOptions { lr: 1e-4, ..quick }),
        bias_bits: Some(5),
        ..Default::default()
    };
    let (out, rep) = deep_compression(&g, &train, &test, &opts).unwrap();
    let row = |t: &str| rep.rows.iter().find(|r| r.tensor == t).unwrap();
    assert_eq!(row("conv1.weight").kept, 0.6);
    assert_eq!(row("fc3.weight").weight_bits, 3);
    let distinct = |t: &str| {
        let mut v: Vec<u32> = out.initializers[t]
            .to_f32_vec()
            .iter()
            .filter(|x| **x != 0.0)
            .map(|x| x.to_bits())
            .collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    assert!(distinct("fc3.weight") <= 7, "3 bits: zero + 7 centroids");
    assert!(distinct("fc1.weight") <= 15);
    assert!(distinct("fc1.bias") <= 32);
    let overall: usize = rep
        .rows
        .iter()
        .map(|r| (r.kept * r.params as f64).round() as usize)
        .sum();
    assert!(
        (overall as f64 / 61470.0 - 0.06).abs() < 0.005,
        "{overall} kept"
    );
    let prov = Provenance::new().note("pipeline", "deep-compression");
    let (bytes, file) = to_shrink_bytes(&out, &prov).unwrap();
    assert_eq!(bytes.len(), rep.file_bytes);
    assert!(file.check_sizes());
    assert!(rep.compression() > 35.0, "{}", rep.table());
}
