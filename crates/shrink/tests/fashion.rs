//! The five shared Fashion-MNIST models on shrink's fp32 runtime, checked
//! against independent references: PyTorch's logits on 256 test images and
//! the fp32 / ONNX Runtime int8 accuracies on all 10k test images.

use shrink_data::{Dataset, Split};
use shrink_graph::onnx;
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use std::path::PathBuf;

const MODELS: &[&str] = &[
    "lenet300100",
    "lenet5",
    "lenet5_bn",
    "mobilenetv2_tiny",
    "mobilenetv2_tiny_relu",
];

fn shared() -> PathBuf {
    shrink_data::shared_data_dir().expect("shared/data not found (set SHRINK_SHARED)")
}

fn json(name: &str) -> serde_json::Value {
    let p = shared().join("fashion").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn sample_x() -> Tensor {
    let x = shrink_data::npy::read_npy(shared().join("fashion/test_sample_x.npy")).unwrap();
    let n = x.shape()[0];
    let v: Vec<f32> = x
        .as_slice::<u8>()
        .unwrap()
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    Tensor::from_vec(vec![n, 1, 28, 28], v).unwrap()
}

/// Top-1 accuracy in percent over the 10k test images.
fn accuracy(path: &std::path::Path) -> (usize, usize) {
    let g = onnx::load(path).unwrap();
    let s = Session::new(g, SessionOptions::default()).unwrap();
    let ds = Dataset::open("fashion-mnist", Split::Test).unwrap();
    let (mut correct, mut n) = (0, 0);
    for b in ds.batches(500) {
        let (x, y) = b.unwrap();
        let logits = s.run(vec![x]).unwrap().remove(0);
        let l = logits.as_slice::<f32>().unwrap();
        for (i, &label) in y.iter().enumerate() {
            let row = &l[i * 10..i * 10 + 10];
            let argmax = (0..10)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                .unwrap();
            correct += (argmax as i64 == label) as usize;
            n += 1;
        }
    }
    (correct, n)
}

#[test]
fn logits_match_pytorch_within_1e4() {
    let x = sample_x();
    for m in [
        "lenet300100",
        "lenet5",
        "lenet5_bn",
        "mobilenetv2_tiny",
        "mobilenetv2_tiny_relu",
    ] {
        let g = onnx::load(shared().join(format!("fashion/{m}.onnx"))).unwrap();
        let s = Session::new(g, SessionOptions::default()).unwrap();
        let got = s.run(vec![x.clone()]).unwrap().remove(0);
        let want =
            shrink_data::npy::read_npy(shared().join(format!("fashion/{m}_sample_logits.npy")))
                .unwrap();
        assert_eq!(got.shape(), want.shape(), "{m}");
        let (a, b) = (
            got.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap(),
        );
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max <= 1e-4, "{m}: max |shrink - pytorch| = {max}");
    }
}

#[test]
fn bn_nodes_models_match_folded_ones() {
    let x = sample_x();
    for m in ["lenet5_bn", "mobilenetv2_tiny", "mobilenetv2_tiny_relu"] {
        let g = onnx::load(shared().join(format!("fashion/{m}.bn_nodes.onnx"))).unwrap();
        let s = Session::new(g, SessionOptions::default()).unwrap();
        let got = s.run(vec![x.clone()]).unwrap().remove(0);
        let want =
            shrink_data::npy::read_npy(shared().join(format!("fashion/{m}_sample_logits.npy")))
                .unwrap();
        let (a, b) = (
            got.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap(),
        );
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max <= 1e-4, "{m}.bn_nodes: max |shrink - pytorch| = {max}");
    }
}

#[test]
fn fp32_accuracy_reproduces_reference_exactly() {
    let fp32 = json("fp32.json");
    for m in MODELS {
        let want = fp32[m]["ort_fp32_acc"].as_f64().unwrap();
        let (correct, n) = accuracy(&shared().join(format!("fashion/{m}.onnx")));
        assert_eq!(n, 10_000);
        assert_eq!(
            correct,
            (want * 100.0).round() as usize,
            "{m}: {correct}/10000 vs {want}%"
        );
    }
}

#[test]
fn onnx_runtime_quantized_models_reach_ort_accuracy() {
    let peers = json("peers.json");
    let mut cases: Vec<(String, String, f64)> = MODELS
        .iter()
        .map(|m| {
            (
                format!("{m}.int8_qdq_pc.onnx"),
                m.to_string(),
                peers[m]["ort_static_int8_qdq_per_channel"]
                    .as_f64()
                    .unwrap(),
            )
        })
        .collect();
    cases.push((
        "lenet300100.int8_dynamic.onnx".into(),
        "lenet300100".into(),
        peers["lenet300100"]["ort_dynamic_int8_per_tensor"]
            .as_f64()
            .unwrap(),
    ));
    for (file, _m, want) in cases {
        let (correct, n) = accuracy(&shared().join("fashion").join(&file));
        let acc = 100.0 * correct as f64 / n as f64;
        assert!(
            (acc - want).abs() <= 0.05 + 1e-9,
            "{file}: shrink {acc:.2}% vs ORT {want:.2}%"
        );
    }
}
