//! The zoo's architectures are the shared references' architectures: loading
//! PyTorch's trained weights into a freshly built zoo graph reproduces
//! PyTorch's logits, and parameter counts match what PyTorch reported.

use shrink_data::npy::read_npy;
use shrink_graph::Graph;
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use shrink_train::zoo;
use std::path::PathBuf;

fn fashion_dir() -> PathBuf {
    shrink_data::shared_data_dir()
        .expect("shared/data not found: set $SHRINK_SHARED to the shared/ directory")
        .join("fashion")
}

/// PyTorch's parameter count: weights and biases, BatchNorm γ and β; not the
/// running statistics or op constants.
fn trainable_count(g: &Graph) -> usize {
    g.initializers
        .iter()
        .filter(|(n, t)| !n.contains("running_") && t.rank() > 0)
        .map(|(_, t)| t.len())
        .sum()
}

fn sample_inputs(n: usize) -> Tensor {
    let x = read_npy(fashion_dir().join("test_sample_x.npy")).unwrap();
    let px: Vec<f32> = x.to_f32_vec()[..n * 784]
        .iter()
        .map(|&p| p / 255.0)
        .collect();
    Tensor::from_vec(vec![n, 1, 28, 28], px).unwrap()
}

fn run(g: Graph, x: &Tensor) -> Vec<f32> {
    let s = Session::new(g, SessionOptions { threads: 1 }).unwrap();
    s.run(vec![x.clone()]).unwrap().remove(0).to_f32_vec()
}

#[test]
fn zoo_models_with_pytorch_weights_reproduce_pytorch_logits() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fashion_dir().join("fp32.json")).unwrap())
            .unwrap();
    let x = sample_inputs(64);
    for name in [
        "lenet300100",
        "lenet5",
        "lenet5_bn",
        "mobilenetv2_tiny",
        "mobilenetv2_tiny_relu",
    ] {
        let mut g = zoo::build(name, 0).unwrap();
        assert_eq!(
            trainable_count(&g) as u64,
            json[name]["params"].as_u64().unwrap(),
            "{name}: parameter count"
        );
        let weights =
            shrink_graph::safetensors::load(fashion_dir().join(format!("{name}.safetensors")))
                .unwrap();
        let mut ours: Vec<&str> = g
            .initializers
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with("relu6."))
            .collect();
        let mut theirs: Vec<&str> = weights
            .keys()
            .map(String::as_str)
            .filter(|n| !n.ends_with("num_batches_tracked"))
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}: parameter names");
        for (k, t) in &weights {
            if let Some(slot) = g.initializers.get_mut(k) {
                assert_eq!(slot.shape(), t.shape(), "{name}: {k}");
                *slot = t.clone();
            }
        }
        let logits = run(g, &x);
        let want = read_npy(fashion_dir().join(format!("{name}_sample_logits.npy")))
            .unwrap()
            .to_f32_vec();
        let max_diff = logits
            .iter()
            .zip(&want[..logits.len()])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-4, "{name}: max |ours - torch| = {max_diff}");
    }
}

#[test]
fn every_model_runs_exports_and_reimports() {
    let dir = std::env::temp_dir().join(format!("shrink-zoo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in zoo::MODELS {
        let g = zoo::build(name, 1).unwrap();
        shrink_graph::validate(&g).unwrap();
        let [c, h, w] = zoo::input_shape(name).unwrap();
        let n = 2 * c * h * w;
        let x = Tensor::from_vec(
            vec![2, c, h, w],
            (0..n).map(|i| ((i * 37 % 101) as f32) / 101.0).collect(),
        )
        .unwrap();
        let out = run(g.clone(), &x);
        assert_eq!(out.len(), 20, "{name}: logits [2, 10]");
        assert!(out.iter().all(|v| v.is_finite()), "{name}");
        let path = dir.join(format!("{name}.onnx"));
        shrink_graph::onnx::save(&g, &path).unwrap();
        let back = shrink_graph::onnx::load(&path).unwrap();
        assert_eq!(run(back, &x), out, "{name}: ONNX round trip");
    }
    // ResNet-20 (option-B shortcuts): 0.27M parameters, as in the paper's table 6.
    let r = trainable_count(&zoo::build("resnet20", 0).unwrap());
    assert!(
        (270_000..=280_000).contains(&r),
        "resnet20 has {r} parameters"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
