//! Weight sharing ("trained quantisation", Han, Mao & Dally 2016): the
//! surviving (nonzero) weights of each layer are clustered by 1-D k-means
//! into 2^b centroids; each weight is replaced by its centroid, so a layer
//! stores a b-bit index per weight plus a small codebook.
//!
//! Initialisation matters more than anything else here: the paper found
//! *linear* initialisation (centroids evenly spaced over [min, max]) best,
//! because it keeps centroids on the rare large weights that matter most;
//! *Forgy* (random weights) and *density* (evenly spaced on the CDF) put
//! centroids where weights are dense instead. All three are offered, seeded.
//! Zeros are left out (they are pruned, and stored by position, not index).

use crate::prune::{f32_weights, pass_error, prunable_weights, set_f32, tensor_error};
use crate::{PassRecord, Result};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shrink_graph::Graph;
use std::collections::BTreeMap;

/// How the centroids start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// Evenly spaced over [min, max] of the weights (the paper's default).
    #[default]
    Linear,
    /// k distinct weights drawn at random (seeded).
    Forgy,
    /// Evenly spaced quantiles: the inverse CDF at (j + ½)/k.
    Density,
}

impl std::str::FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Init, String> {
        match s {
            "linear" => Ok(Init::Linear),
            "forgy" | "random" => Ok(Init::Forgy),
            "density" | "cdf" => Ok(Init::Density),
            _ => Err(format!(
                "unknown k-means init '{s}' (expected linear, forgy or density)"
            )),
        }
    }
}

/// A layer's codebook: `centroids[labels[j]]` is the j-th nonzero weight
/// (in storage order).
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    pub bits: u32,
    /// Ascending.
    pub centroids: Vec<f32>,
    /// One label per nonzero weight, in storage order.
    pub labels: Vec<u32>,
    /// Lloyd iterations run.
    pub iterations: usize,
}

/// Options of [`weight_share`].
#[derive(Debug, Clone)]
pub struct ShareOptions {
    /// Index bits per weight (k = 2^bits centroids) for layers not in `bits_per_layer`.
    pub bits: u32,
    /// Per-tensor bits (Han et al.: 8 for conv, 5 for fc in AlexNet).
    pub bits_per_layer: BTreeMap<String, u32>,
    /// Bits for Conv weights when not given per layer (falls back to `bits`).
    pub conv_bits: Option<u32>,
    pub init: Init,
    pub seed: u64,
    pub max_iterations: usize,
    pub exclude: Vec<String>,
}

impl Default for ShareOptions {
    fn default() -> Self {
        ShareOptions {
            bits: 5,
            bits_per_layer: BTreeMap::new(),
            conv_bits: None,
            init: Init::Linear,
            seed: 0,
            max_iterations: 100,
            exclude: Vec::new(),
        }
    }
}

/// Initial centroids (ascending) for `values` sorted ascending.
pub fn initial_centroids(sorted: &[f32], k: usize, init: Init, seed: u64) -> Vec<f32> {
    if sorted.is_empty() || k == 0 {
        return Vec::new();
    }
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    let mut c: Vec<f32> = match init {
        Init::Linear => {
            if k == 1 {
                vec![0.5 * (lo + hi)]
            } else {
                // The last is `hi` exactly (the formula may round past it).
                (0..k)
                    .map(|j| {
                        if j == k - 1 {
                            hi
                        } else {
                            lo + (hi - lo) * j as f32 / (k - 1) as f32
                        }
                    })
                    .collect()
            }
        }
        Init::Forgy => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let m = k.min(sorted.len());
            sample(&mut rng, sorted.len(), m)
                .into_iter()
                .map(|i| sorted[i])
                .collect()
        }
        Init::Density => (0..k)
            .map(|j| {
                let q = (j as f64 + 0.5) / k as f64;
                let pos = (q * sorted.len() as f64).floor() as usize;
                sorted[pos.min(sorted.len() - 1)]
            })
            .collect(),
    };
    c.sort_by(f32::total_cmp);
    c
}

/// Index of the centroid nearest to `x` (centroids ascending; ties go to
/// the lower centroid).
pub fn nearest(centroids: &[f32], x: f32) -> usize {
    let p = centroids.partition_point(|&c| c < x);
    if p == 0 {
        return 0;
    }
    if p == centroids.len() {
        return p - 1;
    }
    if (x - centroids[p - 1]) <= (centroids[p] - x) {
        p - 1
    } else {
        p
    }
}

/// 1-D k-means (Lloyd) of `values` into at most `k` clusters from the given
/// initialisation. Returns ascending centroids, a label per value and the
/// iterations run. Empty clusters keep their centroid; duplicates merge at
/// the end so labels address distinct values.
pub fn kmeans_1d(
    values: &[f32],
    k: usize,
    init: Init,
    seed: u64,
    max_iterations: usize,
) -> (Vec<f32>, Vec<u32>, usize) {
    if values.is_empty() {
        return (Vec::new(), Vec::new(), 0);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let mut c = initial_centroids(&sorted, k, init, seed);
    let mut labels: Vec<usize> = values.iter().map(|&x| nearest(&c, x)).collect();
    let mut iterations = 0;
    while iterations < max_iterations {
        iterations += 1;
        let mut sum = vec![0.0f64; c.len()];
        let mut cnt = vec![0usize; c.len()];
        for (&x, &l) in values.iter().zip(&labels) {
            sum[l] += x as f64;
            cnt[l] += 1;
        }
        for j in 0..c.len() {
            if cnt[j] > 0 {
                c[j] = (sum[j] / cnt[j] as f64) as f32;
            }
        }
        c.sort_by(f32::total_cmp);
        let new: Vec<usize> = values.iter().map(|&x| nearest(&c, x)).collect();
        let changed = new != labels;
        labels = new;
        if !changed {
            break;
        }
    }
    // Drop unused and duplicate centroids, relabel.
    let mut used = vec![false; c.len()];
    for &l in &labels {
        used[l] = true;
    }
    let mut remap = vec![0u32; c.len()];
    let mut kept: Vec<f32> = Vec::new();
    for j in 0..c.len() {
        if !used[j] {
            continue;
        }
        if kept.last() != Some(&c[j]) {
            kept.push(c[j]);
        }
        remap[j] = (kept.len() - 1) as u32;
    }
    let labels = labels.into_iter().map(|l| remap[l]).collect();
    (kept, labels, iterations)
}

/// Clusters one weight tensor's nonzeros; returns the shared weights (zeros
/// stay zero) and the codebook. When the tensor has zeros, one of the 2^bits
/// codes is reserved for 0.0 (the sparse format's filler entries and any
/// dense storage need it), so 2^bits − 1 centroids are fitted and the layer
/// holds at most 2^bits distinct values, zero included.
pub fn share_tensor(
    w: &[f32],
    bits: u32,
    init: Init,
    seed: u64,
    max_iterations: usize,
) -> (Vec<f32>, Codebook) {
    let nz: Vec<f32> = w.iter().copied().filter(|x| *x != 0.0).collect();
    let k = (1usize << bits) - usize::from(nz.len() < w.len());
    let (centroids, labels, iterations) = kmeans_1d(&nz, k.max(1), init, seed, max_iterations);
    let mut out = w.to_vec();
    let mut j = 0;
    for x in out.iter_mut() {
        if *x != 0.0 {
            *x = centroids[labels[j] as usize];
            j += 1;
        }
    }
    (
        out,
        Codebook {
            bits,
            centroids,
            labels,
            iterations,
        },
    )
}

/// Per-layer weight sharing of every prunable weight: each ends with at most
/// 2^bits distinct values (zero included). Returns the codebooks by tensor name (the
/// container stores their labels as b-bit indices).
pub fn weight_share(
    g: &Graph,
    opts: &ShareOptions,
) -> Result<(Graph, PassRecord, BTreeMap<String, Codebook>)> {
    let pass = "weight-share";
    let mut out = g.clone();
    let mut rec = PassRecord::new(pass)
        .option("bits", opts.bits)
        .option("init", format!("{:?}", opts.init).to_lowercase())
        .option("seed", opts.seed);
    let mut books = BTreeMap::new();
    let mut sq_err = 0.0f64;
    let mut n_total = 0usize;
    for (li, w) in prunable_weights(g).into_iter().enumerate() {
        if opts.exclude.contains(&w.tensor) {
            continue;
        }
        let bits = opts
            .bits_per_layer
            .get(&w.tensor)
            .copied()
            .or(if w.op == "Conv" { opts.conv_bits } else { None })
            .unwrap_or(opts.bits);
        if !(1..=16).contains(&bits) {
            return Err(tensor_error(
                pass,
                &w.tensor,
                format!("bits must be 1..=16, got {bits}"),
            ));
        }
        let v = f32_weights(g, pass, &w.tensor)?;
        let (shared, book) = share_tensor(
            v,
            bits,
            opts.init,
            opts.seed.wrapping_add(li as u64),
            opts.max_iterations,
        );
        sq_err += v
            .iter()
            .zip(&shared)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
        n_total += v.len();
        rec.change(format!(
            "{}: {} nonzeros → {} centroids ({bits} bits), {} iterations",
            w.tensor,
            book.labels.len(),
            book.centroids.len(),
            book.iterations
        ));
        set_f32(&mut out, &w.tensor, shared)?;
        books.insert(w.tensor.clone(), book);
    }
    if n_total == 0 {
        return Err(pass_error(pass, "no weights to share"));
    }
    rec.metric("rmse", (sq_err / n_total as f64).sqrt());
    Ok((out, rec, books))
}

/// Centroid fine-tuning step: the gradient of a centroid is the sum of the
/// gradients of the weights sharing it (`grad` per weight in storage order;
/// zeros, being pruned, contribute nothing). Updates `book.centroids` by
/// `-lr · Σ grad` and returns the new per-weight values for `weights`.
pub fn centroid_step(book: &mut Codebook, weights: &[f32], grad: &[f32], lr: f32) -> Vec<f32> {
    let mut g = vec![0.0f64; book.centroids.len()];
    let mut j = 0;
    for (w, gr) in weights.iter().zip(grad) {
        if *w != 0.0 {
            g[book.labels[j] as usize] += *gr as f64;
            j += 1;
        }
    }
    for (c, gc) in book.centroids.iter_mut().zip(&g) {
        *c -= lr * *gc as f32;
    }
    let mut out = weights.to_vec();
    let mut j = 0;
    for x in out.iter_mut() {
        if *x != 0.0 {
            let v = book.centroids[book.labels[j] as usize];
            // A centroid that reached exactly zero would read as pruned.
            *x = if v == 0.0 { f32::MIN_POSITIVE } else { v };
            j += 1;
        }
    }
    out
}
