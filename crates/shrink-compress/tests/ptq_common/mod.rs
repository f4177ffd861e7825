//! Shared setup of the PTQ tests: the shared Fashion-MNIST models, the
//! calibration sample ONNX Runtime's baselines used, and test batches.
#![allow(dead_code)]

use shrink_compress::calib::sample::numpy_permutation;
use shrink_compress::recipe::CalibData;
use shrink_data::{Dataset, Split};
use shrink_graph::Graph;
use shrink_tensor::Tensor;
use std::path::PathBuf;

pub fn fashion_dir() -> PathBuf {
    shrink_data::shared_data_dir()
        .expect("shared/data/fashion not found: set $SHRINK_SHARED to the shared/ directory")
        .join("fashion")
}

pub fn model(name: &str) -> Graph {
    shrink_graph::onnx::load(fashion_dir().join(format!("{name}.onnx"))).unwrap()
}

fn open(split: Split) -> Dataset {
    Dataset::open("fashion-mnist", split)
        .unwrap_or_else(|e| panic!("{e} (run scripts/fetch-assets to download Fashion-MNIST)"))
}

/// The first `n` images of `RandomState(1234).permutation(60000)`, in batches of 128.
pub fn calib(n: usize) -> CalibData {
    let train = open(Split::Train);
    let order = numpy_permutation(1234, train.len());
    let mut batches = Vec::new();
    let mut labels = Vec::new();
    for chunk in order[..n].chunks(128) {
        let mut v = Vec::new();
        for &i in chunk {
            v.extend(train.inputs(i, i + 1).unwrap().to_f32_vec());
            labels.push(train.labels[i]);
        }
        batches.push(Tensor::from_vec(vec![chunk.len(), 1, 28, 28], v).unwrap());
    }
    CalibData { batches, labels }
}

/// The first `n` test images in batches of 250, with labels.
pub fn test_set(n: usize) -> (Vec<Tensor>, Vec<i64>) {
    let t = open(Split::Test).take(n);
    let xs = t.batches(250).map(|b| b.unwrap().0).collect();
    (xs, t.labels.clone())
}
