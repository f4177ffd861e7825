//! Micro-batching of lowered int8 graphs on the shared ONNX Runtime-quantised
//! Fashion-MNIST models: a batch larger than a slice runs in slices (the
//! lowered graph is batch-separable) and its logits are bit for bit those of
//! the same lowered graph run over the whole batch at once, in integer and
//! in simulated execution.

use shrink_graph::{onnx, ValueInfo};
use shrink_runtime::{QdqMode, Session, SessionOptions};
use shrink_tensor::Tensor;
use std::path::PathBuf;

fn fashion(file: &str) -> PathBuf {
    shrink_data::shared_data_dir()
        .expect("shared/data not found (set SHRINK_SHARED)")
        .join("fashion")
        .join(file)
}

/// The 256 shared sample images (plus 37 of them again: 293 = 9 slices
/// of 32 and a partial one), scaled to [0, 1] as in training.
fn sample_x() -> Tensor {
    let x = shrink_data::npy::read_npy(fashion("test_sample_x.npy")).unwrap();
    let px = x.as_slice::<u8>().unwrap();
    let mut v: Vec<f32> = px.iter().map(|&p| p as f32 / 255.0).collect();
    v.extend_from_within(..37 * 784);
    let n = v.len() / 784;
    Tensor::from_vec(vec![n, 1, 28, 28], v).unwrap()
}

#[test]
fn sliced_int8_runs_equal_whole_batch_runs_bit_for_bit() {
    let x = sample_x();
    for m in [
        "lenet5",
        "lenet5_bn",
        "lenet300100",
        "mobilenetv2_tiny",
        "mobilenetv2_tiny_relu",
    ] {
        let g = onnx::load(fashion(&format!("{m}.int8_qdq_pc.onnx"))).unwrap();
        // The scalar simulation of the MobileNets is slow; their integer
        // runs are checked (integer = simulate is tested in int8_exec.rs).
        let modes: &[QdqMode] = if m.starts_with("mobilenet") {
            &[QdqMode::Integer]
        } else {
            &[QdqMode::Integer, QdqMode::Simulate]
        };
        for &qdq in modes {
            for threads in [1, 2] {
                let opts = SessionOptions { threads, qdq };
                let sliced = Session::new(g.clone(), opts.clone()).unwrap();
                // An MLP is never sliced (its GEMMs lose rows, its few
                // hundred values per image stay in cache anyway).
                let mlp = m == "lenet300100";
                assert_eq!(sliced.micro_batched(), !mlp, "{m} ({qdq})");
                if mlp {
                    continue;
                }
                // An extra output of unknown type keeps the graph whole.
                let mut whole_g = g.clone();
                let extra = whole_g.nodes.last().unwrap().inputs[0].clone();
                whole_g.outputs.push(ValueInfo::unknown(extra));
                let whole = Session::new(whole_g, opts).unwrap();
                assert!(!whole.micro_batched(), "{m}");
                let a = sliced.run(vec![x.clone()]).unwrap().remove(0);
                let b = whole.run(vec![x.clone()]).unwrap().remove(0);
                assert_eq!(a.shape(), [x.shape()[0], 10], "{m}");
                assert_eq!(
                    a.data(),
                    b.data(),
                    "{m} ({qdq}, {threads} threads): sliced ≠ whole batch"
                );
            }
        }
    }
}

/// Float graphs slice too, and on two threads their slices run in parallel:
/// the logits agree with a whole-batch run to rounding (a kernel may tile a
/// smaller batch differently) and every image's class is the same.
#[test]
fn parallel_float_slices_equal_whole_batch_runs() {
    let x = sample_x();
    for m in ["lenet5_bn", "mobilenetv2_tiny"] {
        let g = onnx::load(fashion(&format!("{m}.onnx"))).unwrap();
        let opts = SessionOptions {
            threads: 2,
            qdq: QdqMode::Integer,
        };
        let sliced = Session::new(g.clone(), opts.clone()).unwrap();
        assert!(sliced.micro_batched(), "{m}");
        let mut whole_g = g.clone();
        let extra = whole_g.nodes.last().unwrap().inputs[0].clone();
        whole_g.outputs.push(ValueInfo::unknown(extra));
        let whole = Session::new(whole_g, opts).unwrap();
        assert!(!whole.micro_batched(), "{m}");
        let a = sliced.run(vec![x.clone()]).unwrap().remove(0);
        let b = whole.run(vec![x.clone()]).unwrap().remove(0);
        assert_eq!(a.shape(), b.shape(), "{m}");
        let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        let worst = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "{m}: logits differ by {worst}");
        let argmax = |r: &[f32]| {
            r.iter()
                .enumerate()
                .max_by(|p, q| p.1.total_cmp(q.1))
                .unwrap()
                .0
        };
        for (ra, rb) in a.chunks(10).zip(b.chunks(10)) {
            assert_eq!(argmax(ra), argmax(rb), "{m}");
        }
    }
}
