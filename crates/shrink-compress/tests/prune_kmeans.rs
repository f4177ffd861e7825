//! k-means weight sharing against a plain scalar Lloyd implementation and
//! the fixed-point properties of k-means.

use shrink_compress::kmeans::{
    centroid_step, initial_centroids, kmeans_1d, share_tensor, weight_share, Init, ShareOptions,
};
use shrink_compress::prune::magnitude::{magnitude_prune, PruneOptions};
use shrink_compress::prune::prunable_weights;
use shrink_graph::Graph;
use std::collections::BTreeSet;

fn model(name: &str) -> Graph {
    let p = shrink_data::shared_data_dir()
        .map(|d| d.join("fashion").join(name))
        .unwrap_or_else(|| format!("/work/shared/data/fashion/{name}").into());
    shrink_graph::onnx::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Deterministic pseudo-random values (xorshift), roughly bell-shaped.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((next() + next() + next() - 1.5) * 0.2) as f32)
        .collect()
}

/// Textbook Lloyd: assign each value to the nearest centroid by linear scan,
/// recompute means, until nothing moves.
fn reference_lloyd(v: &[f32], mut c: Vec<f32>) -> Vec<f32> {
    loop {
        let label = |x: f32, c: &[f32]| {
            let mut best = 0;
            for j in 1..c.len() {
                if (x - c[j]).abs() < (x - c[best]).abs() {
                    best = j;
                }
            }
            best
        };
        let mut sum = vec![0.0f64; c.len()];
        let mut cnt = vec![0usize; c.len()];
        for &x in v {
            let l = label(x, &c);
            sum[l] += x as f64;
            cnt[l] += 1;
        }
        let new: Vec<f32> = (0..c.len())
            .map(|j| {
                if cnt[j] > 0 {
                    (sum[j] / cnt[j] as f64) as f32
                } else {
                    c[j]
                }
            })
            .collect();
        if new == c {
            return c;
        }
        c = new;
    }
}

#[test]
fn lloyd_matches_reference_and_is_a_fixed_point() {
    for (seed, k) in [(1u64, 4usize), (2, 16), (3, 32)] {
        let v = values(3000, seed);
        let mut sorted = v.clone();
        sorted.sort_by(f32::total_cmp);
        let init = initial_centroids(&sorted, k, Init::Linear, 0);
        // Linear init: evenly spaced over [min, max].
        assert_eq!(init[0], sorted[0]);
        assert_eq!(*init.last().unwrap(), *sorted.last().unwrap());
        let (c, labels, _) = kmeans_1d(&v, k, Init::Linear, 0, 1000);
        let mut r = reference_lloyd(&v, init);
        r.sort_by(f32::total_cmp);
        r.dedup();
        assert_eq!(c.len(), r.len());
        for (a, b) in c.iter().zip(&r) {
            assert!((a - b).abs() <= 1e-6, "seed {seed} k {k}: {a} vs {b}");
        }
        // Each value sits at its nearest centroid; each centroid is its members' mean.
        for (x, &l) in v.iter().zip(&labels) {
            let d = (x - c[l as usize]).abs();
            assert!(c.iter().all(|cc| (x - cc).abs() >= d - 1e-7));
        }
        for (j, cj) in c.iter().enumerate() {
            let m: Vec<f64> = v
                .iter()
                .zip(&labels)
                .filter(|(_, &l)| l as usize == j)
                .map(|(x, _)| *x as f64)
                .collect();
            let mean = m.iter().sum::<f64>() / m.len() as f64;
            assert!((mean as f32 - cj).abs() <= 1e-6);
        }
    }
}

#[test]
fn inits_differ_and_are_seeded() {
    let v = values(5000, 9);
    let mut sorted = v.clone();
    sorted.sort_by(f32::total_cmp);
    let lin = initial_centroids(&sorted, 8, Init::Linear, 0);
    let den = initial_centroids(&sorted, 8, Init::Density, 0);
    let f1 = initial_centroids(&sorted, 8, Init::Forgy, 7);
    let f2 = initial_centroids(&sorted, 8, Init::Forgy, 7);
    let f3 = initial_centroids(&sorted, 8, Init::Forgy, 8);
    assert_eq!(f1, f2);
    assert_ne!(f1, f3);
    // Density: the j-th centroid is the (j+½)/k quantile.
    for (j, c) in den.iter().enumerate() {
        let q = sorted.iter().filter(|x| *x < c).count() as f64 / sorted.len() as f64;
        assert!((q - (j as f64 + 0.5) / 8.0).abs() < 0.01);
    }
    // Linear spans the extremes, density stays inside them.
    assert!(lin[0] < den[0] && lin[7] > den[7]);
    for c in &f1 {
        assert!(
            sorted.binary_search_by(|x| x.total_cmp(c)).is_ok(),
            "Forgy picks data points"
        );
    }
}

#[test]
fn shared_model_has_few_distinct_values_and_keeps_zeros() {
    let g = model("lenet300100.onnx");
    let (p, _) = magnitude_prune(
        &g,
        &PruneOptions {
            sparsity: 0.9,
            ..Default::default()
        },
    )
    .unwrap();
    let opts = ShareOptions {
        bits: 5,
        ..Default::default()
    };
    let (s, rec, books) = weight_share(&p, &opts).unwrap();
    for w in prunable_weights(&g) {
        let before = p.initializers[&w.tensor].to_f32_vec();
        let after = s.initializers[&w.tensor].to_f32_vec();
        let distinct: BTreeSet<u32> = after.iter().map(|x| x.to_bits()).collect();
        assert!(
            distinct.len() <= 32,
            "{}: {} values (zero included)",
            w.tensor,
            distinct.len()
        );
        // Linear centroids inside the pruned gap (−t, t) win no weights and
        // are dropped; most codes are still in use.
        assert!(
            distinct.len() >= 12,
            "{}: {} values, the codes are used",
            w.tensor,
            distinct.len()
        );
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(
                *b == 0.0,
                *a == 0.0,
                "zeros stay zero, nonzeros stay nonzero"
            );
        }
        let book = &books[&w.tensor];
        assert_eq!(
            book.labels.len(),
            before.iter().filter(|x| **x != 0.0).count()
        );
    }
    assert!(rec.metrics["rmse"] < 0.01);
    // Same seed, same result.
    let (s2, _, _) = weight_share(&p, &opts).unwrap();
    assert_eq!(s.initializers, s2.initializers);
}

#[test]
fn centroid_gradients_sum_per_cluster() {
    let w = vec![0.0, 0.2, 0.22, -0.3, 0.0, -0.28, 0.5];
    // 2 bits with zeros present: 3 centroids + the zero.
    let (shared, mut book) = share_tensor(&w, 2, Init::Linear, 0, 100);
    assert_eq!(book.centroids.len(), 3);
    let grad = vec![9.0, 1.0, 2.0, 0.5, 9.0, 0.25, -1.0];
    let before = book.centroids.clone();
    let out = centroid_step(&mut book, &shared, &grad, 0.1);
    // Cluster of 0.2/0.22 moves by -0.1·(1 + 2); of -0.3/-0.28 by -0.1·0.75; 0.5 by +0.1.
    let moved: Vec<f32> = book
        .centroids
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let mut expect = [-0.3f32, -0.075, 0.1];
    expect.sort_by(f32::total_cmp);
    let mut got: Vec<f32> = moved.iter().copied().filter(|d| d.abs() > 1e-9).collect();
    got.sort_by(f32::total_cmp);
    assert_eq!(got.len(), 3);
    for (g, e) in got.iter().zip(&expect) {
        assert!((g - e).abs() < 1e-6, "{got:?}");
    }
    assert_eq!(out[0], 0.0);
    assert_eq!(out[4], 0.0);
    assert_eq!(out[1], out[2]);
}
