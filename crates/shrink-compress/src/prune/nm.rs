//! N:M semi-structured sparsity (2:4 for sparse tensor cores): in every
//! group of M consecutive inputs of an output row, only the N largest |w|
//! survive.
//!
//! Groups run along the weight's reduction dimension in storage order — for
//! a Conv `[O, I, kh, kw]` that is the im2col order `(i, kh, kw)` the GEMM
//! walks, for Gemm/MatMul the K index. A trailing partial group (K not a
//! multiple of M) keeps at most N as well.

use super::{f32_weights, pass_error, prunable_weights, set_f32, Layout};
use crate::{PassRecord, Result};
use shrink_graph::Graph;

/// Applies N:M to one weight tensor in place; returns how many it zeroed.
pub fn nm_prune_tensor(w: &mut [f32], layout: &Layout, n: usize, m: usize) -> usize {
    let mut zeroed = 0;
    let mut group: Vec<usize> = Vec::with_capacity(m);
    for o in 0..layout.outputs {
        let mut start = 0;
        while start < layout.inputs {
            let end = (start + m).min(layout.inputs);
            group.clear();
            group.extend((start..end).map(|i| layout.index(o, i)));
            // Largest first; ties keep the earlier input.
            group.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()).then(a.cmp(&b)));
            for &idx in group.iter().skip(n) {
                if w[idx] != 0.0 {
                    zeroed += 1;
                }
                w[idx] = 0.0;
            }
            start = end;
        }
    }
    zeroed
}

/// N:M pruning of every prunable weight except `exclude` (e.g. the first
/// conv, whose K = 9 or 25 wastes a group, is often left dense).
pub fn nm_prune(g: &Graph, n: usize, m: usize, exclude: &[String]) -> Result<(Graph, PassRecord)> {
    let pass = "nm-prune";
    if n == 0 || m == 0 || n > m {
        return Err(pass_error(pass, format!("need 0 < N ≤ M, got {n}:{m}")));
    }
    let mut out = g.clone();
    let mut rec = PassRecord::new(pass).option("n", n).option("m", m);
    let (mut zeros, mut total) = (0usize, 0usize);
    for w in prunable_weights(g) {
        if exclude.contains(&w.tensor) {
            continue;
        }
        let mut v = f32_weights(g, pass, &w.tensor)?.to_vec();
        let z = nm_prune_tensor(&mut v, &w.layout, n, m);
        zeros += v.iter().filter(|x| **x == 0.0).count();
        total += v.len();
        rec.change(format!(
            "{} ({} '{}'): {n}:{m}, zeroed {z}",
            w.tensor, w.op, w.node
        ));
        set_f32(&mut out, &w.tensor, v)?;
    }
    rec.metric(
        "sparsity",
        if total == 0 {
            0.0
        } else {
            zeros as f64 / total as f64
        },
    );
    Ok((out, rec))
}
