//! Masks keep pruned weights at zero while fine-tuning: an optimiser step
//! moves every weight, so after each step the mask is re-applied (or the
//! graph routes weights through `ai.shrink::Mask`).

use super::{f32_weights, prunable_weights, set_f32, tensor_error};
use crate::Result;
use shrink_graph::Graph;
use std::collections::BTreeMap;

/// Per weight tensor: `true` where the weight survives.
pub type Masks = BTreeMap<String, Vec<bool>>;

/// The masks of a pruned graph: nonzero prunable weights survive.
pub fn masks_of(g: &Graph) -> Masks {
    prunable_weights(g)
        .into_iter()
        .filter_map(|w| {
            let v = g.initializers[&w.tensor].as_slice::<f32>().ok()?;
            Some((w.tensor, v.iter().map(|x| *x != 0.0).collect()))
        })
        .collect()
}

/// Zeros every masked-out weight of `g`; returns how many were nonzero.
pub fn apply_masks(g: &mut Graph, masks: &Masks) -> Result<usize> {
    let mut changed = 0;
    for (name, m) in masks {
        let mut v = f32_weights(g, "apply-masks", name)?.to_vec();
        if v.len() != m.len() {
            return Err(tensor_error(
                "apply-masks",
                name,
                format!("mask has {} entries for {} weights", m.len(), v.len()),
            ));
        }
        for (x, keep) in v.iter_mut().zip(m) {
            if !keep && *x != 0.0 {
                *x = 0.0;
                changed += 1;
            }
        }
        set_f32(g, name, v)?;
    }
    Ok(changed)
}

/// Zeros masked-out entries of a flat buffer (a parameter held by a trainer).
pub fn apply_mask_slice(values: &mut [f32], mask: &[bool]) {
    for (x, keep) in values.iter_mut().zip(mask) {
        if !keep {
            *x = 0.0;
        }
    }
}
