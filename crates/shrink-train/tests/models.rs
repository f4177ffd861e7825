//! The training executor on the real Fashion-MNIST models of shared/data:
//! inference-mode forward equals the runtime's Session, training-mode
//! BatchNorm matches batch statistics, whole-model gradients agree with
//! central differences, and a few SGD steps lower the loss.

use shrink_graph::{onnx, Graph};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use shrink_train::{Executor, Mode, ParamFilter, ParamStore};
use std::path::PathBuf;

fn fashion(name: &str) -> PathBuf {
    let dir = shrink_data::shared_data_dir().expect(
        "shared/data (with fashion/) not found: set SHRINK_SHARED to the directory holding data/",
    );
    dir.join("fashion").join(name)
}

fn model(name: &str) -> Graph {
    onnx::load(fashion(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The first `n` sample images as float32 [n,1,28,28] = pixel/255.
fn images(n: usize) -> Tensor {
    let x = shrink_data::npy::read_npy(fashion("test_sample_x.npy")).unwrap();
    let v: Vec<f32> = x.to_f32_vec()[..n * 784]
        .iter()
        .map(|&p| p / 255.0)
        .collect();
    Tensor::from_vec(vec![n, 1, 28, 28], v).unwrap()
}

fn labels(n: usize) -> Vec<usize> {
    let y = shrink_data::npy::read_npy(fashion("test_sample_y.npy")).unwrap();
    y.to_i64_vec()[..n].iter().map(|&v| v as usize).collect()
}

const MODELS: &[&str] = &[
    "lenet300100.onnx",
    "lenet5.onnx",
    "lenet5_bn.onnx",
    "lenet5_bn.bn_nodes.onnx",
    "mobilenetv2_tiny.onnx",
    "mobilenetv2_tiny.bn_nodes.onnx",
    "mobilenetv2_tiny_relu.onnx",
    "mobilenetv2_tiny_relu.bn_nodes.onnx",
];

#[test]
fn eval_forward_equals_the_runtime_session() {
    let x = images(16);
    for name in MODELS {
        let g = model(name);
        let input = g.inputs[0].name.clone();
        let sess = Session::new(g.clone(), SessionOptions::default()).unwrap();
        let want = sess.run_named(vec![(input.clone(), x.clone())]).unwrap();
        let mut params = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
        let mut exec = Executor::new(&g).unwrap();
        let got = exec
            .forward(&mut params, &[(&input, &x)], Mode::Eval)
            .unwrap();
        assert_eq!(got.len(), want.len());
        let (a, b) = (got[0].to_f32_vec(), want[0].to_f32_vec());
        let err = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            err <= 1e-5,
            "{name}: max |train executor − session| = {err}"
        );
        // Recording (Mode::Train off) does not change inference outputs either.
        let rec = exec
            .forward_recorded(&mut params, &[(&input, &x)], Mode::Eval)
            .unwrap();
        assert_eq!(rec[0], got[0], "{name}: recorded eval forward differs");
    }
}

/// Softmax cross-entropy (mean over the batch) and its gradient.
fn cross_entropy(logits: &Tensor, y: &[usize]) -> (f64, Tensor) {
    let l = logits.to_f32_vec();
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    let mut grad = vec![0f32; n * c];
    let mut loss = 0f64;
    for i in 0..n {
        let row = &l[i * c..][..c];
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        loss += z.ln() + m - row[y[i]] as f64;
        for j in 0..c {
            let p = ((row[j] as f64 - m).exp() / z) as f32;
            grad[i * c + j] = (p - if j == y[i] { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    (loss / n as f64, Tensor::from_vec(vec![n, c], grad).unwrap())
}

#[test]
fn train_batch_norm_uses_batch_statistics_and_updates_running_ones() {
    let g = model("lenet5_bn.bn_nodes.onnx");
    let input = g.inputs[0].name.clone();
    let bn = g
        .nodes
        .iter()
        .find(|n| n.op_type == "BatchNormalization")
        .expect("a BatchNormalization node")
        .clone();
    let mut params = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
    // Running statistics are buffers, never trainable.
    assert!(!params.is_trainable(&bn.inputs[3]));
    assert!(!params.is_trainable(&bn.inputs[4]));
    assert!(params.is_trainable(&bn.inputs[1]));
    // Expose the BN output and its input to compare with hand-computed statistics.
    let mut g2 = g.clone();
    g2.outputs
        .push(shrink_graph::ValueInfo::unknown(bn.inputs[0].clone()));
    g2.outputs
        .push(shrink_graph::ValueInfo::unknown(bn.outputs[0].clone()));
    let mut exec = Executor::new(&g2).unwrap();
    let x = images(32);
    let m0 = params.get(&bn.inputs[3]).unwrap().to_f32_vec();
    let v0 = params.get(&bn.inputs[4]).unwrap().to_f32_vec();
    let outs = exec
        .forward(&mut params, &[(&input, &x)], Mode::Train)
        .unwrap();
    let (xin, yout) = (&outs[1], &outs[2]);
    let (n, c) = (xin.shape()[0], xin.shape()[1]);
    let hw: usize = xin.shape()[2..].iter().product();
    let xv = xin.to_f64_vec();
    let yv = yout.to_f64_vec();
    let gamma = params.get(&bn.inputs[1]).unwrap().to_f64_vec();
    let beta = params.get(&bn.inputs[2]).unwrap().to_f64_vec();
    let eps = bn.attr_float("epsilon", 1e-5).unwrap() as f64;
    let mom = bn.attr_float("momentum", 0.9).unwrap() as f64;
    let m1 = params.get(&bn.inputs[3]).unwrap().to_f64_vec();
    let v1 = params.get(&bn.inputs[4]).unwrap().to_f64_vec();
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|b| xv[(b * c + ch) * hw..][..hw].to_vec())
            .collect();
        let cnt = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / cnt;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cnt;
        for b in 0..n {
            for i in 0..hw {
                let at = (b * c + ch) * hw + i;
                let want = gamma[ch] * (xv[at] - mean) / (var + eps).sqrt() + beta[ch];
                assert!((yv[at] - want).abs() < 1e-4, "BN output channel {ch}");
            }
        }
        let want_m = mom * m0[ch] as f64 + (1.0 - mom) * mean;
        let want_v = mom * v0[ch] as f64 + (1.0 - mom) * var * cnt / (cnt - 1.0);
        assert!((m1[ch] - want_m).abs() < 1e-5, "running mean channel {ch}");
        assert!(
            (v1[ch] - want_v).abs() < 1e-4 * want_v.abs().max(1.0),
            "running var channel {ch}"
        );
    }
}

#[test]
fn whole_model_gradients_match_central_differences() {
    // LeNet-5 with BN nodes: conv, BN (train), relu, maxpool, gemm, flatten.
    let g = model("lenet5_bn.bn_nodes.onnx");
    let input = g.inputs[0].name.clone();
    let x = images(8);
    let y = labels(8);
    let mut params = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
    let mut exec = Executor::new(&g).unwrap();
    let out = exec
        .forward(&mut params, &[(&input, &x)], Mode::Train)
        .unwrap();
    let (_, dl) = cross_entropy(&out[0], &y);
    let grads = exec.backward(&params, &[dl]).unwrap();
    let base = params.clone();
    let mut loss_at = |p: &mut ParamStore| -> f64 {
        let out = exec.forward(p, &[(&input, &x)], Mode::Train).unwrap();
        cross_entropy(&out[0], &y).0
    };
    let mut checked = 0;
    for name in base.trainable_names() {
        let gv = grads.get(name).unwrap().to_f32_vec();
        // The element with the largest gradient and one more.
        let big = (0..gv.len())
            .max_by(|&a, &b| gv[a].abs().total_cmp(&gv[b].abs()))
            .unwrap();
        for j in [big, gv.len() / 2] {
            // Small enough that few ReLU/max-pool kinks are crossed.
            let eps = 1e-3f32;
            let mut p = base.clone();
            let v0 = p.get(name).unwrap().to_f32_vec()[j];
            p.get_mut(name).unwrap().as_mut_slice::<f32>().unwrap()[j] = v0 + eps;
            let lp = loss_at(&mut p);
            let mut p = base.clone();
            p.get_mut(name).unwrap().as_mut_slice::<f32>().unwrap()[j] = v0 - eps;
            let lm = loss_at(&mut p);
            let num = (lp - lm) / (2.0 * eps as f64);
            let a = gv[j] as f64;
            assert!(
                (a - num).abs() <= 1e-4 + 1e-2 * a.abs().max(num.abs()),
                "{name}[{j}]: analytic {a}, numeric {num}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 16, "checked {checked} elements");
}

#[test]
fn sgd_steps_lower_the_loss_and_write_back() {
    for name in ["lenet5.onnx", "mobilenetv2_tiny.bn_nodes.onnx"] {
        let mut g = model(name);
        let input = g.inputs[0].name.clone();
        let x = images(64);
        let y = labels(64);
        let mut params = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
        let mut exec = Executor::new(&g).unwrap();
        let mut losses = Vec::new();
        for _ in 0..6 {
            let out = exec
                .forward(&mut params, &[(&input, &x)], Mode::Train)
                .unwrap();
            let (l, dl) = cross_entropy(&out[0], &y);
            losses.push(l);
            let grads = exec.backward(&params, &[dl]).unwrap();
            for (n, gr) in grads.iter() {
                let p = params.get_mut(n).unwrap().as_mut_slice::<f32>().unwrap();
                for (w, d) in p.iter_mut().zip(gr.as_slice::<f32>().unwrap()) {
                    *w -= 0.01 * d;
                }
            }
        }
        eprintln!("{name}: {losses:?}");
        assert!(
            losses.last().unwrap() < &(losses[0] * 0.9),
            "{name}: loss did not fall: {losses:?}"
        );
        params.write_into(&mut g).unwrap();
        let first = params.trainable_names()[0].to_string();
        assert_eq!(g.initializers[&first], *params.get(&first).unwrap());
    }
}

#[test]
fn frozen_parameters_get_no_update_and_filters_select_by_pattern() {
    let g = model("lenet5.onnx");
    let all = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
    let names = all.trainable_names();
    assert!(!names.is_empty());
    let some = ParamStore::from_graph(&g, &ParamFilter::Patterns(vec!["*bias*".into()])).unwrap();
    for n in some.trainable_names() {
        assert!(n.contains("bias"), "{n}");
    }
    let rest = ParamStore::from_graph(
        &g,
        &ParamFilter::Exclude(Box::new(ParamFilter::Patterns(vec!["*bias*".into()]))),
    )
    .unwrap();
    assert_eq!(
        some.trainable_names().len() + rest.trainable_names().len(),
        names.len()
    );
    let err = ParamStore::from_graph(&g, &ParamFilter::Names(vec!["no_such_weight".into()]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_weight"), "{err}");
}

#[test]
fn unsupported_op_is_named() {
    let mut g = model("lenet5.onnx");
    g.nodes[0].op_type = "Sin".into();
    let name = g.nodes[0].name.clone();
    let err = Executor::new(&g)
        .err()
        .expect("Sin has no backward")
        .to_string();
    assert!(err.contains("Sin") && err.contains(&name), "{err}");
}
