//! Central-difference checks of every op's backward (shrink_train::gradcheck):
//! random seeded inputs, small shapes, inputs kept away from kinks (ReLU at
//! 0, Clip bounds, max-pool ties) so the numeric derivative is defined.

use shrink_graph::{Attr, Node};
use shrink_tensor::Tensor;
use shrink_train::gradcheck::{check_node, uniform, GradCheck};
use shrink_train::Mode;

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
    Node::new(format!("{op}_under_test"), op, inputs, outputs)
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

/// Uniform values with |x| ≥ margin (away from the kink at 0).
fn away_from_zero(shape: &[usize], seed: u64, margin: f32) -> Tensor {
    let t = uniform(shape, -1.0, 1.0, seed);
    let v: Vec<f32> = t
        .to_f32_vec()
        .iter()
        .map(|&x| x.signum() * (margin + x.abs()))
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

#[track_caller]
fn check(n: &Node, inputs: &[Tensor], wrt: &[usize], cfg: &GradCheck) {
    let r = check_node(n, inputs, wrt, cfg).unwrap_or_else(|e| panic!("{}: {e}", n.op_type));
    assert!(r.checked > 0, "{}: nothing checked", n.op_type);
    assert!(
        r.passed,
        "{} gradient mismatch: {:?} (max abs err {})",
        n.op_type, r.worst, r.max_abs_err
    );
}

fn cfg() -> GradCheck {
    GradCheck::default()
}

#[test]
fn conv_dense_padded_with_bias() {
    let n = node("Conv", &["x", "w", "b"], &["y"]).with("pads", ints(&[1, 1, 1, 1]));
    let x = uniform(&[2, 3, 6, 5], -1.0, 1.0, 1);
    let w = uniform(&[4, 3, 3, 3], -0.5, 0.5, 2);
    let b = uniform(&[4], -0.5, 0.5, 3);
    check(&n, &[x, w, b], &[0, 1, 2], &cfg());
}

#[test]
fn conv_stride_dilation_asymmetric_pads() {
    let n = node("Conv", &["x", "w"], &["y"])
        .with("strides", ints(&[2, 1]))
        .with("dilations", ints(&[1, 2]))
        .with("pads", ints(&[0, 2, 1, 1]));
    let x = uniform(&[2, 2, 7, 8], -1.0, 1.0, 4);
    let w = uniform(&[3, 2, 3, 2], -0.5, 0.5, 5);
    check(&n, &[x, w], &[0, 1], &cfg());
}

#[test]
fn conv_groups_and_pointwise() {
    let n = node("Conv", &["x", "w", "b"], &["y"])
        .with("group", Attr::Int(2))
        .with("pads", ints(&[1, 0, 1, 0]));
    let x = uniform(&[2, 4, 5, 5], -1.0, 1.0, 6);
    let w = uniform(&[6, 2, 3, 1], -0.5, 0.5, 7);
    let b = uniform(&[6], -0.5, 0.5, 8);
    check(&n, &[x, w, b], &[0, 1, 2], &cfg());
    let n = node("Conv", &["x", "w"], &["y"]);
    let x = uniform(&[3, 5, 4, 3], -1.0, 1.0, 9);
    let w = uniform(&[7, 5, 1, 1], -0.5, 0.5, 10);
    check(&n, &[x, w], &[0, 1], &cfg());
}

#[test]
fn conv_depthwise_strided_and_same_padding() {
    let n = node("Conv", &["x", "w", "b"], &["y"])
        .with("group", Attr::Int(3))
        .with("strides", ints(&[2, 2]))
        .with("pads", ints(&[1, 1, 1, 1]));
    let x = uniform(&[2, 3, 7, 6], -1.0, 1.0, 11);
    let w = uniform(&[3, 1, 3, 3], -0.5, 0.5, 12);
    let b = uniform(&[3], -0.5, 0.5, 13);
    check(&n, &[x, w, b], &[0, 1, 2], &cfg());
    let n = node("Conv", &["x", "w"], &["y"])
        .with("group", Attr::Int(3))
        .with("auto_pad", Attr::String("SAME_UPPER".into()))
        .with("strides", ints(&[2, 2]));
    let x = uniform(&[1, 3, 6, 6], -1.0, 1.0, 14);
    let w = uniform(&[3, 1, 3, 3], -0.5, 0.5, 15);
    check(&n, &[x, w], &[0, 1], &cfg());
}

#[test]
fn conv_one_dimensional() {
    let n = node("Conv", &["x", "w", "b"], &["y"])
        .with("pads", ints(&[2, 1]))
        .with("strides", ints(&[2]));
    let x = uniform(&[2, 3, 9], -1.0, 1.0, 16);
    let w = uniform(&[2, 3, 4], -0.5, 0.5, 17);
    let b = uniform(&[2], -0.5, 0.5, 18);
    check(&n, &[x, w, b], &[0, 1, 2], &cfg());
}

#[test]
fn gemm_all_transposes_alpha_beta() {
    for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let n = node("Gemm", &["a", "b", "c"], &["y"])
            .with("transA", Attr::Int(ta))
            .with("transB", Attr::Int(tb))
            .with("alpha", Attr::Float(0.7))
            .with("beta", Attr::Float(1.3));
        let (m, k, nn) = (3, 4, 5);
        let sa = if ta == 1 { [k, m] } else { [m, k] };
        let a = uniform(&sa, -1.0, 1.0, 20 + ta as u64);
        let sb = if tb == 1 { [nn, k] } else { [k, nn] };
        let b = uniform(&sb, -1.0, 1.0, 30 + tb as u64);
        let c = uniform(&[nn], -1.0, 1.0, 40);
        check(&n, &[a, b, c], &[0, 1, 2], &cfg());
    }
    let n = node("Gemm", &["a", "b", "c"], &["y"]).with("transB", Attr::Int(1));
    let c = uniform(&[3, 1], -1.0, 1.0, 41);
    check(
        &n,
        &[
            uniform(&[3, 4], -1.0, 1.0, 42),
            uniform(&[2, 4], -1.0, 1.0, 43),
            c,
        ],
        &[0, 1, 2],
        &cfg(),
    );
}

#[test]
fn matmul_batched_broadcast_and_vectors() {
    let n = node("MatMul", &["a", "b"], &["y"]);
    check(
        &n,
        &[
            uniform(&[2, 1, 3, 4], -1.0, 1.0, 50),
            uniform(&[3, 4, 2], -1.0, 1.0, 51),
        ],
        &[0, 1],
        &cfg(),
    );
    check(
        &n,
        &[
            uniform(&[4], -1.0, 1.0, 52),
            uniform(&[4, 3], -1.0, 1.0, 53),
        ],
        &[0, 1],
        &cfg(),
    );
    check(
        &n,
        &[
            uniform(&[2, 3, 4], -1.0, 1.0, 54),
            uniform(&[4], -1.0, 1.0, 55),
        ],
        &[0, 1],
        &cfg(),
    );
}

#[test]
fn activations() {
    let x = away_from_zero(&[3, 4, 5], 60, 0.05);
    for op in [
        "Relu", "Sigmoid", "Tanh", "Erf", "Neg", "Abs", "Softplus", "Exp",
    ] {
        check(&node(op, &["x"], &["y"]), &[x.clone()], &[0], &cfg());
    }
    check(
        &node("LeakyRelu", &["x"], &["y"]).with("alpha", Attr::Float(0.1)),
        &[x.clone()],
        &[0],
        &cfg(),
    );
    check(
        &node("Elu", &["x"], &["y"]).with("alpha", Attr::Float(0.8)),
        &[x.clone()],
        &[0],
        &cfg(),
    );
    // HardSigmoid kinks at ±2.5, HardSwish at ±3: inputs straddle neither.
    let wide = away_from_zero(&[40], 61, 0.05);
    let spread: Vec<f32> = wide
        .to_f32_vec()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i % 4 == 0 {
                v.signum() * (3.3 + v.abs())
            } else {
                v * 2.0
            }
        })
        .collect();
    let spread = Tensor::from_vec(vec![40], spread).unwrap();
    check(
        &node("HardSigmoid", &["x"], &["y"]),
        &[spread.clone()],
        &[0],
        &cfg(),
    );
    check(&node("HardSwish", &["x"], &["y"]), &[spread], &[0], &cfg());
    let pos = uniform(&[3, 5], 0.5, 2.0, 62);
    for op in ["Sqrt", "Log", "Reciprocal"] {
        check(&node(op, &["x"], &["y"]), &[pos.clone()], &[0], &cfg());
    }
    let mut gelu = cfg();
    gelu.opset = 20;
    check(&node("Gelu", &["x"], &["y"]), &[x.clone()], &[0], &gelu);
    check(
        &node("Gelu", &["x"], &["y"]).with("approximate", Attr::String("tanh".into())),
        &[x],
        &[0],
        &gelu,
    );
}

#[test]
fn clip_as_relu6_and_with_attributes() {
    // Values at distance ≥ 0.05 from both bounds 0 and 6.
    let v: Vec<f32> = uniform(&[30], 0.0, 1.0, 70)
        .to_f32_vec()
        .iter()
        .enumerate()
        .map(|(i, &u)| match i % 3 {
            0 => -0.05 - u,
            1 => 0.05 + 5.9 * u * 0.98,
            _ => 6.05 + u,
        })
        .collect();
    let x = Tensor::from_vec(vec![30], v).unwrap();
    let n = node("Clip", &["x", "lo", "hi"], &["y"]);
    check(
        &n,
        &[x.clone(), Tensor::scalar(0f32), Tensor::scalar(6f32)],
        &[0],
        &cfg(),
    );
    let mut old = cfg();
    old.opset = 6;
    let n = node("Clip", &["x"], &["y"])
        .with("min", Attr::Float(0.0))
        .with("max", Attr::Float(6.0));
    check(&n, &[x], &[0], &old);
}

#[test]
fn softmax_and_log_softmax() {
    let x = uniform(&[2, 3, 4], -2.0, 2.0, 80);
    for op in ["Softmax", "LogSoftmax"] {
        check(&node(op, &["x"], &["y"]), &[x.clone()], &[0], &cfg());
        check(
            &node(op, &["x"], &["y"]).with("axis", Attr::Int(1)),
            &[x.clone()],
            &[0],
            &cfg(),
        );
        let mut old = cfg();
        old.opset = 11;
        check(
            &node(op, &["x"], &["y"]).with("axis", Attr::Int(1)),
            &[x.clone()],
            &[0],
            &old,
        );
    }
}

#[test]
fn max_pool_plain_padded_and_ceil() {
    let x = uniform(&[2, 2, 6, 7], -1.0, 1.0, 90);
    let n = node("MaxPool", &["x"], &["y"])
        .with("kernel_shape", ints(&[2, 2]))
        .with("strides", ints(&[2, 2]));
    check(&n, &[x.clone()], &[0], &cfg());
    let n = node("MaxPool", &["x"], &["y"])
        .with("kernel_shape", ints(&[3, 3]))
        .with("pads", ints(&[1, 1, 1, 1]))
        .with("strides", ints(&[2, 2]))
        .with("ceil_mode", Attr::Int(1));
    check(&n, &[x], &[0], &cfg());
}

#[test]
fn average_pools() {
    let x = uniform(&[2, 3, 5, 6], -1.0, 1.0, 100);
    for include in [0, 1] {
        let n = node("AveragePool", &["x"], &["y"])
            .with("kernel_shape", ints(&[3, 3]))
            .with("pads", ints(&[1, 1, 1, 1]))
            .with("strides", ints(&[2, 2]))
            .with("count_include_pad", Attr::Int(include));
        check(&n, &[x.clone()], &[0], &cfg());
    }
    check(
        &node("GlobalAveragePool", &["x"], &["y"]),
        &[x],
        &[0],
        &cfg(),
    );
}

#[test]
fn batch_norm_train_and_eval() {
    let x = uniform(&[4, 3, 3, 2], -2.0, 2.0, 110);
    let gamma = uniform(&[3], 0.5, 1.5, 111);
    let beta = uniform(&[3], -0.5, 0.5, 112);
    let mean = uniform(&[3], -0.3, 0.3, 113);
    let var = uniform(&[3], 0.5, 1.5, 114);
    let n = node("BatchNormalization", &["x", "g", "b", "m", "v"], &["y"]);
    let ins = [x, gamma, beta, mean, var];
    check(&n, &ins, &[0, 1, 2], &cfg());
    let eval = GradCheck {
        mode: Mode::Eval,
        ..cfg()
    };
    check(&n, &ins, &[0, 1, 2], &eval);
    // BatchNorm1d: [N, C].
    let x2 = uniform(&[6, 3], -2.0, 2.0, 115);
    check(
        &n,
        &[
            x2,
            ins[1].clone(),
            ins[2].clone(),
            ins[3].clone(),
            ins[4].clone(),
        ],
        &[0, 1, 2],
        &cfg(),
    );
}

#[test]
fn layer_norm() {
    let n = node("LayerNormalization", &["x", "s", "b"], &["y"]).with("epsilon", Attr::Float(1e-5));
    let x = uniform(&[2, 3, 8], -2.0, 2.0, 120);
    let s = uniform(&[8], 0.5, 1.5, 121);
    let b = uniform(&[8], -0.5, 0.5, 122);
    check(&n, &[x.clone(), s.clone(), b.clone()], &[0, 1, 2], &cfg());
    let n = node("LayerNormalization", &["x", "s", "b"], &["y"]).with("axis", Attr::Int(1));
    let s2 = uniform(&[3, 8], 0.5, 1.5, 123);
    let b2 = uniform(&[3, 8], -0.5, 0.5, 124);
    check(&n, &[x, s2, b2], &[0, 1, 2], &cfg());
}

#[test]
fn broadcasting_arithmetic() {
    let a = uniform(&[2, 3, 4], -1.0, 1.0, 130);
    let b = uniform(&[3, 1], 0.5, 1.5, 131);
    for op in ["Add", "Sub", "Mul", "Div"] {
        check(
            &node(op, &["a", "b"], &["y"]),
            &[a.clone(), b.clone()],
            &[0, 1],
            &cfg(),
        );
    }
    let s = uniform(&[], 0.5, 1.5, 132);
    check(
        &node("Mul", &["a", "s"], &["y"]),
        &[a.clone(), s],
        &[0, 1],
        &cfg(),
    );
    let pos = uniform(&[2, 3], 0.5, 2.0, 133);
    check(
        &node("Pow", &["x", "e"], &["y"]),
        &[pos.clone(), Tensor::scalar(2.0f32)],
        &[0],
        &cfg(),
    );
    check(
        &node("Pow", &["x", "e"], &["y"]),
        &[pos, uniform(&[3], 0.5, 2.5, 134)],
        &[0, 1],
        &cfg(),
    );
    let cond = Tensor::from_vec(vec![3, 1], vec![true, false, true]).unwrap();
    check(
        &node("Where", &["c", "a", "b"], &["y"]),
        &[cond, a, uniform(&[4], -1.0, 1.0, 135)],
        &[1, 2],
        &cfg(),
    );
}

#[test]
fn reductions() {
    let x = uniform(&[2, 3, 4], -1.0, 1.0, 140);
    check(
        &node("ReduceMean", &["x"], &["y"]).with("axes", ints(&[1, -1])),
        &[x.clone()],
        &[0],
        &cfg(),
    );
    check(
        &node("ReduceMean", &["x"], &["y"]).with("keepdims", Attr::Int(0)),
        &[x.clone()],
        &[0],
        &cfg(),
    );
    check(
        &node("ReduceSum", &["x", "axes"], &["y"]).with("keepdims", Attr::Int(0)),
        &[x.clone(), i64s(&[0, 2])],
        &[0],
        &cfg(),
    );
    check(
        &node("ReduceSumSquare", &["x"], &["y"]).with("axes", ints(&[2])),
        &[x],
        &[0],
        &cfg(),
    );
}

#[test]
fn reshape_family() {
    let x = uniform(&[2, 3, 4], -1.0, 1.0, 150);
    check(&node("Flatten", &["x"], &["y"]), &[x.clone()], &[0], &cfg());
    check(
        &node("Identity", &["x"], &["y"]),
        &[x.clone()],
        &[0],
        &cfg(),
    );
    check(
        &node("Reshape", &["x", "s"], &["y"]),
        &[x.clone(), i64s(&[4, -1])],
        &[0],
        &cfg(),
    );
    check(
        &node("Unsqueeze", &["x", "a"], &["y"]),
        &[x.clone(), i64s(&[0, 3])],
        &[0],
        &cfg(),
    );
    let x1 = uniform(&[2, 1, 4], -1.0, 1.0, 151);
    check(
        &node("Squeeze", &["x", "a"], &["y"]),
        &[x1, i64s(&[1])],
        &[0],
        &cfg(),
    );
    check(
        &node("Transpose", &["x"], &["y"]).with("perm", ints(&[2, 0, 1])),
        &[x],
        &[0],
        &cfg(),
    );
}

#[test]
fn concat_split_slice() {
    let a = uniform(&[2, 3], -1.0, 1.0, 160);
    let b = uniform(&[2, 1], -1.0, 1.0, 161);
    let c = uniform(&[2, 2], -1.0, 1.0, 162);
    check(
        &node("Concat", &["a", "b", "c"], &["y"]).with("axis", Attr::Int(1)),
        &[a, b, c],
        &[0, 1, 2],
        &cfg(),
    );
    let x = uniform(&[4, 6], -1.0, 1.0, 163);
    check(
        &node("Split", &["x", "s"], &["y0", "y1"]).with("axis", Attr::Int(1)),
        &[x.clone(), i64s(&[2, 4])],
        &[0],
        &cfg(),
    );
    check(
        &node("Slice", &["x", "st", "en", "ax", "sp"], &["y"]),
        &[
            x.clone(),
            i64s(&[3, 1]),
            i64s(&[0, 100]),
            i64s(&[0, 1]),
            i64s(&[-2, 2]),
        ],
        &[0],
        &cfg(),
    );
    check(
        &node("Expand", &["x", "s"], &["y"]),
        &[uniform(&[3, 1], -1.0, 1.0, 164), i64s(&[2, 3, 4])],
        &[0],
        &cfg(),
    );
    check(
        &node("Tile", &["x", "r"], &["y"]),
        &[x, i64s(&[2, 1])],
        &[0],
        &cfg(),
    );
}

#[test]
fn gather_embedding_and_inner_axis() {
    let table = uniform(&[5, 3], -1.0, 1.0, 170);
    let ids = Tensor::from_vec(vec![2, 3], vec![1i64, 4, 1, 0, -1, 2]).unwrap();
    check(
        &node("Gather", &["t", "i"], &["y"]),
        &[table.clone(), ids],
        &[0],
        &cfg(),
    );
    let ids = Tensor::from_vec(vec![2], vec![2i64, 2]).unwrap();
    check(
        &node("Gather", &["t", "i"], &["y"]).with("axis", Attr::Int(1)),
        &[table, ids],
        &[0],
        &cfg(),
    );
}

#[test]
fn dropout_with_a_replayed_mask() {
    let x = uniform(&[4, 8], -1.0, 1.0, 180);
    let n = node("Dropout", &["x", "r"], &["y", "mask"]);
    check(&n, &[x.clone(), Tensor::scalar(0.3f32)], &[0], &cfg());
    let eval = GradCheck {
        mode: Mode::Eval,
        ..cfg()
    };
    check(&n, &[x, Tensor::scalar(0.3f32)], &[0], &eval);
}
