//! Fine-tuning through shrink-train under pruning masks and codebooks, the
//! empirical Fisher, and the Deep Compression pipeline end to end (short
//! runs; bench/prune_deep_compression.sh has the full ones).

use shrink_compress::deep_compression::{deep_compression, DeepCompressionOptions};
use shrink_compress::kmeans::{weight_share, ShareOptions};
use shrink_compress::prune::finetune::{finetune, fisher_diagonal, Constraint, FinetuneOptions};
use shrink_compress::prune::magnitude::{magnitude_prune, PruneOptions, Scope};
use shrink_compress::prune::mask::masks_of;
use shrink_compress::prune::prunable_weights;
use shrink_compress::prune::sensitivity::evaluate;
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
    // The report's file also carries the pass records as provenance.
    assert!(rep.file_bytes >= bytes.len());
}
