//! What the DFQ tests share: the shared Fashion models and test images.
#![allow(dead_code)]

use shrink_data::{Dataset, Split};
use shrink_graph::{onnx, Graph};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use std::path::PathBuf;

pub fn fashion(name: &str) -> PathBuf {
    let p = shrink_data::shared_data_dir()
        .expect("shared/data not found (set SHRINK_SHARED to the shared/ directory)")
        .join("fashion")
        .join(name);
    assert!(p.is_file(), "shared model {} is missing", p.display());
    p
}

pub fn model(name: &str) -> Graph {
    onnx::load(fashion(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

pub fn test_set() -> Dataset {
    Dataset::open("fashion-mnist", Split::Test).unwrap_or_else(|e| {
        panic!("Fashion-MNIST is missing ({e}); run scripts/fetch-assets fashion")
    })
}

/// The first `n` test images as a model input `[n, 1, 28, 28]`.
pub fn images(n: usize) -> Tensor {
    test_set().inputs(0, n).expect("test images")
}

pub fn run(g: &Graph, x: &Tensor) -> Vec<f32> {
    let s = Session::new(
        g.clone(),
        SessionOptions {
            threads: 0,
            ..Default::default()
        },
    )
    .expect("session");
    s.run(vec![x.clone()]).expect("run")[0].to_f32_vec()
}

/// Largest `|a − b| / (1 + |b|)`.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
