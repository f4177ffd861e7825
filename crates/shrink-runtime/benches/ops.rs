//! Conv and MatMul at the shapes of the models shrink is measured on
//! (LeNet-5 and MobileNetV2-tiny on Fashion-MNIST, MiniLM-L6), each run as a
//! one-node session so the numbers line up with ONNX Runtime running the
//! same single-node model.
//!
//! `cargo bench -p shrink-runtime --bench ops` (`-- conv` to filter).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use shrink_graph::{Attr, Graph, Node, ValueInfo};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;

/// Deterministic values in [-1, 1) (a fixed LCG, no RNG dependency).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), values(n, seed)).expect("shape matches data")
}

/// A one-node graph reading runtime input `x` and initializers `weights`.
fn session(node: Node, weights: Vec<(&str, Tensor)>, threads: usize) -> Session {
    let mut g = Graph::default();
    g.opsets.insert(String::new(), 17);
    g.inputs.push(ValueInfo::unknown("x"));
    g.outputs.push(ValueInfo::unknown("y"));
    for (name, t) in weights {
        g.initializers.insert(name.to_string(), t);
    }
    g.nodes.push(node);
    Session::new(
        g,
        SessionOptions {
            threads,
            ..Default::default()
        },
    )
    .expect("bench graph is valid")
}

/// (name, C, H=W, M, kernel, stride, pad, group)
type ConvCase = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const CONVS: &[ConvCase] = &[
    ("lenet5_conv1", 1, 28, 6, 5, 1, 2, 1),
    ("lenet5_conv2", 6, 14, 16, 5, 1, 0, 1),
    ("mbv2_stem", 1, 28, 16, 3, 1, 1, 1),
    ("mbv2_dw16_28", 16, 28, 16, 3, 1, 1, 16),
    ("mbv2_pw16to64_28", 16, 28, 64, 1, 1, 0, 1),
    ("mbv2_dw64_28_s2", 64, 28, 64, 3, 2, 1, 64),
    ("mbv2_pw64to24_14", 64, 14, 24, 1, 1, 0, 1),
    ("mbv2_pw32to128_7", 32, 7, 128, 1, 1, 0, 1),
];

fn conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group.sample_size(10);
    for &(name, ch, hw, m, k, s, p, g) in CONVS {
        for batch in [1usize, 256] {
            let node = Node::new("conv", "Conv", &["x", "w", "b"], &["y"])
                .with("kernel_shape", Attr::Ints(vec![k as i64; 2]))
                .with("strides", Attr::Ints(vec![s as i64; 2]))
                .with("pads", Attr::Ints(vec![p as i64; 4]))
                .with("group", Attr::Int(g as i64));
            let sess = session(
                node,
                vec![("w", tensor(&[m, ch / g, k, k], 1)), ("b", tensor(&[m], 2))],
                1,
            );
            let x = tensor(&[batch, ch, hw, hw], 3);
            group.bench_function(format!("{name}/b{batch}"), |b| {
                b.iter_batched(
                    || x.clone(),
                    |x| sess.run(vec![x]).expect("conv runs"),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    // (name, A shape, B shape): MiniLM projections and attention, LeNet-5 fc1.
    let cases: &[(&str, Vec<usize>, Vec<usize>)] = &[
        ("minilm_qkv_128", vec![1, 128, 384], vec![384, 384]),
        ("minilm_ffn_up_128", vec![1, 128, 384], vec![384, 1536]),
        (
            "minilm_scores_128",
            vec![1, 12, 128, 32],
            vec![1, 12, 32, 128],
        ),
        ("lenet5_fc1_b256", vec![256, 400], vec![400, 120]),
        ("lenet5_fc1_b1", vec![1, 400], vec![400, 120]),
    ];
    for (name, a, b) in cases {
        for threads in [1usize, 2] {
            let node = Node::new("mm", "MatMul", &["x", "w"], &["y"]);
            let sess = session(node, vec![("w", tensor(b, 4))], threads);
            let x = tensor(a, 5);
            group.bench_function(format!("{name}/t{threads}"), |bch| {
                bch.iter_batched(
                    || x.clone(),
                    |x| sess.run(vec![x]).expect("matmul runs"),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, conv, matmul);
criterion_main!(benches);
