//! Integer execution of the shared ONNX Runtime-quantised Fashion-MNIST
//! models: every QDQ pattern lowered, the integer kernels bit-identical to
//! the scalar simulation of the canonical arithmetic on every quantised
//! tensor, close to the float QDQ evaluation (ONNX Runtime's semantics), and
//! at ONNX Runtime's accuracy on the 10k test images.

use shrink_data::{Dataset, Split};
use shrink_graph::{onnx, Graph, ValueInfo};
use shrink_runtime::lower::{lower_with_report, DOMAIN};
use shrink_runtime::{QdqMode, Session, SessionOptions};
use shrink_tensor::{DType, Tensor};
use std::path::PathBuf;

const MODELS: &[&str] = &[
    "lenet300100",
    "lenet5",
    "lenet5_bn",
    "mobilenetv2_tiny",
    "mobilenetv2_tiny_relu",
];

fn fashion(file: &str) -> PathBuf {
    shrink_data::shared_data_dir()
        .expect("shared/data not found (set SHRINK_SHARED)")
        .join("fashion")
        .join(file)
}

fn sample_x() -> Tensor {
    let x = shrink_data::npy::read_npy(fashion("test_sample_x.npy")).unwrap();
    let n = x.shape()[0];
    let v: Vec<f32> = x
        .as_slice::<u8>()
        .unwrap()
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    Tensor::from_vec(vec![n, 1, 28, 28], v).unwrap()
}

fn session(g: Graph, qdq: QdqMode) -> Session {
    Session::new(g, SessionOptions { threads: 1, qdq }).unwrap()
}

/// Names of every quantised (u8/i8) value a lowered graph computes.
fn quantised_values(g: &Graph) -> Vec<String> {
    g.nodes
        .iter()
        .filter(|n| {
            n.domain == DOMAIN
                || n.op_type == "QuantizeLinear"
                || matches!(
                    n.op_type.as_str(),
                    "Flatten" | "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Concat"
                ) && n.inputs.first().is_some_and(|x| {
                    g.nodes.iter().any(|p| {
                        p.outputs.contains(x)
                            && (p.domain == DOMAIN || p.op_type == "QuantizeLinear")
                    })
                })
        })
        .map(|n| n.outputs[0].clone())
        .collect()
}

/// Runs `g` (already lowered, or float) with the named values as extra outputs.
fn run_with(g: &Graph, names: &[String], x: &Tensor) -> Vec<Tensor> {
    let mut g = g.clone();
    g.outputs = names
        .iter()
        .map(|n| ValueInfo::unknown(n.clone()))
        .collect();
    session(g, QdqMode::Float).run(vec![x.clone()]).unwrap()
}

#[test]
fn integer_kernels_equal_simulation_bit_for_bit_on_every_quantised_tensor() {
    let x = sample_x();
    let mut summary = Vec::new();
    for m in MODELS {
        let g = onnx::load(fashion(&format!("{m}.int8_qdq_pc.onnx"))).unwrap();
        let (gi, report) = lower_with_report(g.clone(), QdqMode::Integer).unwrap();
        let (gs, _) = lower_with_report(g.clone(), QdqMode::Simulate).unwrap();
        assert!(
            report.fallbacks.is_empty(),
            "{m}: nodes left in float: {:?}",
            report.fallbacks
        );
        // Every compute node of the model was lowered.
        let compute = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm" | "MatMul"))
            .count();
        let lowered = gi
            .nodes
            .iter()
            .filter(|n| n.op_type == "QConv" || n.op_type == "QGemm")
            .count();
        assert_eq!(lowered, compute, "{m}: lowered Conv/Gemm");
        let names = quantised_values(&gi);
        assert!(names.len() > compute, "{m}: quantised values {names:?}");
        let ti = run_with(&gi, &names, &x);
        let ts = run_with(&gs, &names, &x);
        let tf = run_with(&g, &names, &x);
        let (mut total, mut differ, mut max_lsb) = (0usize, 0usize, 0i64);
        for (k, name) in names.iter().enumerate() {
            assert!(
                matches!(ti[k].dtype(), DType::U8 | DType::I8),
                "{m}: {name}"
            );
            assert_eq!(ti[k].shape(), ts[k].shape(), "{m}: {name}");
            assert_eq!(
                ti[k].data(),
                ts[k].data(),
                "{m}: {name}: integer ≠ simulate"
            );
            assert_eq!(ti[k].shape(), tf[k].shape(), "{m}: {name} vs float");
            let (a, b) = (ti[k].to_i64_vec(), tf[k].to_i64_vec());
            total += a.len();
            for (p, q) in a.iter().zip(&b) {
                if p != q {
                    differ += 1;
                    max_lsb = max_lsb.max((p - q).abs());
                }
            }
        }
        let frac = differ as f64 / total as f64;
        summary.push(format!(
            "{m}: {} tensors, {total} codes, {differ} differ from float QDQ ({:.4}%), max {max_lsb} LSB",
            names.len(),
            100.0 * frac
        ));
        // Float QDQ rounds in a different order; the codes rarely differ.
        assert!(
            frac < 0.01,
            "{m}: {:.3}% of codes differ from float",
            100.0 * frac
        );
    }
    println!("{}", summary.join("\n"));
}

/// Top-1 accuracy (%) over the 10k test images in the given mode.
fn accuracy(file: &str, qdq: QdqMode) -> f64 {
    let g = onnx::load(fashion(file)).unwrap();
    let s = session(g, qdq);
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
    assert_eq!(n, 10_000);
    100.0 * correct as f64 / n as f64
}

#[test]
fn integer_execution_reaches_ort_int8_accuracy() {
    let peers: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fashion("peers.json")).unwrap()).unwrap();
    let mut lines = Vec::new();
    for m in MODELS {
        let want = peers[m]["ort_static_int8_qdq_per_channel"]
            .as_f64()
            .unwrap();
        let got = accuracy(&format!("{m}.int8_qdq_pc.onnx"), QdqMode::Integer);
        lines.push(format!("{m}: integer {got:.2}% vs ORT {want:.2}%"));
        assert!(
            (got - want).abs() <= 0.05 + 1e-9,
            "{m}: integer {got:.2}% vs ORT {want:.2}%"
        );
    }
    println!("{}", lines.join("\n"));
}

/// On real images LeNet-300-100's first layer takes the zero-quad walk
/// (half of every image's pixels are 0), and its logits equal the scalar
/// simulation's exactly; synthetic dense inputs stay on the dense kernel.
#[test]
fn zero_quad_skipping_runs_on_real_images_and_is_exact() {
    let g = onnx::load(fashion("lenet300100.int8_qdq_pc.onnx")).unwrap();
    let x = sample_x();
    let integer = session(g.clone(), QdqMode::Integer);
    let name = integer.runtime_inputs()[0].to_string();
    let (yi, timings) = integer
        .run_profiled(vec![(name.clone(), x.clone())])
        .unwrap();
    let fc1 = timings.iter().find(|t| t.node == "/fc1/Gemm").unwrap();
    assert!(
        fc1.kernel.contains("zero quads skipped"),
        "fc1 ran {}",
        fc1.kernel
    );
    let ys = session(g.clone(), QdqMode::Simulate)
        .run(vec![x.clone()])
        .unwrap();
    assert_eq!(yi[0].data(), ys[0].data(), "logits: walk ≠ simulation");
    // Every pixel nonzero: the probe keeps the dense kernel.
    let dense = Tensor::from_vec(x.shape().to_vec(), vec![0.5f32; x.len()]).unwrap();
    let (_, timings) = integer.run_profiled(vec![(name, dense)]).unwrap();
    let fc1 = timings.iter().find(|t| t.node == "/fc1/Gemm").unwrap();
    assert!(!fc1.kernel.contains("skipped"), "fc1 ran {}", fc1.kernel);
}
