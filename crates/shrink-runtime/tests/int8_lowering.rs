//! Integer lowering on random QDQ graphs and edge cases: the integer kernels
//! must equal the scalar simulation bit for bit, and the simulation must be
//! within 1 LSB of the float QDQ evaluation (the runtime's reference Q/DQ
//! ops, ONNX Runtime's semantics) of the same single layer.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_graph::{Attr, Graph, Node, ValueInfo};
use shrink_runtime::lower::lower_with_report;
use shrink_runtime::{QdqMode, Session, SessionOptions};
use shrink_tensor::{DType, Tensor, TensorData};

/// Activation quantisation: scale, zero point, u8 (false) or i8 (true).
#[derive(Clone, Copy, Debug)]
struct Act {
    scale: f32,
    zero: i64,
    signed: bool,
}

impl Act {
    fn zp(&self) -> Tensor {
        if self.signed {
            Tensor::scalar(self.zero as i8)
        } else {
            Tensor::scalar(self.zero as u8)
        }
    }
}

struct Builder {
    g: Graph,
    rng: ChaCha8Rng,
    n: usize,
}

impl Builder {
    fn new(seed: u64) -> Self {
        let mut g = Graph::default();
        g.opsets.insert(String::new(), 21);
        Builder {
            g,
            rng: ChaCha8Rng::seed_from_u64(seed),
            n: 0,
        }
    }
    fn name(&mut self, p: &str) -> String {
        self.n += 1;
        format!("{p}{}", self.n)
    }
    fn init(&mut self, p: &str, t: Tensor) -> String {
        let n = self.name(p);
        self.g.initializers.insert(n.clone(), t);
        n
    }
    fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.name(&op.to_lowercase());
        let mut n = Node::new(self.name("n"), op, inputs, &[out.as_str()]);
        for (k, v) in attrs {
            n = n.with(k, v.clone());
        }
        self.g.nodes.push(n);
        out
    }
    /// Q then DQ of `x` with `a`; returns (quantised, dequantised).
    fn qdq(&mut self, x: &str, a: Act) -> (String, String) {
        let s = self.init("s", Tensor::scalar(a.scale));
        let z = self.init("z", a.zp());
        let q = self.node("QuantizeLinear", &[x, &s, &z], &[]);
        let d = self.node("DequantizeLinear", &[&q, &s, &z], &[]);
        (q, d)
    }
    fn input(&mut self, shape: &[usize]) -> String {
        let n = self.name("x");
        self.g.inputs.push(ValueInfo::unknown(n.clone()));
        let _ = shape;
        n
    }
    /// DQ of a random weight of `shape` (`dt` I8/U8/I4/U4), per tensor or
    /// per channel along `axis`; returns (dequantised name, scales).
    fn weight(
        &mut self,
        shape: &[usize],
        dt: DType,
        per_channel: bool,
        axis: usize,
    ) -> (String, Vec<f32>) {
        let len: usize = shape.iter().product();
        let (lo, hi, zero) = match dt {
            DType::I8 => (-128i64, 127i64, 0i64),
            DType::U8 => (0, 255, self.rng.gen_range(100..160)),
            DType::I4 => (-8, 7, 0),
            _ => (0, 15, 8),
        };
        let v: Vec<i64> = (0..len).map(|_| self.rng.gen_range(lo..=hi)).collect();
        let data = match dt {
            DType::I8 => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            DType::I4 => TensorData::I4(v.iter().map(|&x| x as i8).collect()),
            _ => TensorData::U4(v.iter().map(|&x| x as u8).collect()),
        };
        let nch = if per_channel { shape[axis] } else { 1 };
        let scales: Vec<f32> = (0..nch).map(|_| self.rng.gen_range(0.002..0.03)).collect();
        let zdata = match dt {
            DType::I8 => TensorData::I8(vec![zero as i8; nch]),
            DType::U8 => TensorData::U8(vec![zero as u8; nch]),
            DType::I4 => TensorData::I4(vec![zero as i8; nch]),
            _ => TensorData::U4(vec![zero as u8; nch]),
        };
        let sshape = if per_channel { vec![nch] } else { vec![] };
        let w = self.init("w", Tensor::new(shape.to_vec(), data).unwrap());
        let s = self.init(
            "ws",
            Tensor::from_vec(sshape.clone(), scales.clone()).unwrap(),
        );
        let z = self.init("wz", Tensor::new(sshape, zdata).unwrap());
        let d = self.node(
            "DequantizeLinear",
            &[&w, &s, &z],
            &[("axis", Attr::Int(axis as i64))],
        );
        (d, scales)
    }
    /// DQ of a random i32 bias with scale `sx·sw[c]`.
    fn bias(&mut self, n: usize, sx: f32, sw: &[f32]) -> String {
        let v: Vec<i32> = (0..n).map(|_| self.rng.gen_range(-3000..3000)).collect();
        let s: Vec<f32> = (0..n)
            .map(|c| sx * sw[if sw.len() == 1 { 0 } else { c }])
            .collect();
        let b = self.init("b", Tensor::from_vec(vec![n], v).unwrap());
        let s = self.init("bs", Tensor::from_vec(vec![n], s).unwrap());
        let z = self.init("bz", Tensor::from_vec(vec![n], vec![0i32; n]).unwrap());
        self.node("DequantizeLinear", &[&b, &s, &z], &[("axis", Attr::Int(0))])
    }
    fn finish(mut self, y: &str) -> Graph {
        self.g.outputs.push(ValueInfo::unknown(y.to_string()));
        self.g
    }
}

fn run(g: &Graph, qdq: QdqMode, threads: usize, x: &Tensor) -> Tensor {
    Session::new(g.clone(), SessionOptions { threads, qdq })
        .unwrap()
        .run(vec![x.clone()])
        .unwrap()
        .remove(0)
}

/// Lowers, runs all three modes, checks integer == simulate bit for bit and
/// simulate within 1 LSB of float on (almost) every code.
fn check(name: &str, g: Graph, x: &Tensor, lowered_ops: &[&str]) {
    let (lg, report) = lower_with_report(g.clone(), QdqMode::Integer).unwrap();
    assert!(
        report.fallbacks.is_empty(),
        "{name}: {:?}",
        report.fallbacks
    );
    for op in lowered_ops {
        assert!(
            lg.nodes.iter().any(|n| n.op_type == *op),
            "{name}: no {op} in {:?}",
            lg.nodes.iter().map(|n| &n.op_type).collect::<Vec<_>>()
        );
    }
    let sim = run(&g, QdqMode::Simulate, 1, x);
    assert!(matches!(sim.dtype(), DType::U8 | DType::I8), "{name}");
    for threads in [1, 2] {
        let int = run(&g, QdqMode::Integer, threads, x);
        assert_eq!(int.shape(), sim.shape(), "{name}");
        assert_eq!(
            int.data(),
            sim.data(),
            "{name}: integer ≠ simulate ({threads} threads)"
        );
    }
    let flt = run(&g, QdqMode::Float, 1, x);
    let (a, b) = (sim.to_i64_vec(), flt.to_i64_vec());
    let far = a
        .iter()
        .zip(&b)
        .filter(|(p, q)| (*p - *q).abs() > 1)
        .count();
    let off = a.iter().zip(&b).filter(|(p, q)| p != q).count();
    assert_eq!(far, 0, "{name}: codes more than 1 LSB from float QDQ");
    assert!(
        off * 50 <= a.len().max(50),
        "{name}: {off}/{} codes differ from float QDQ",
        a.len()
    );
}

fn random_input(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec(
        shape.to_vec(),
        (0..n).map(|_| rng.gen_range(lo..hi)).collect::<Vec<f32>>(),
    )
    .unwrap()
}

/// x signed, z_x, y signed, z_y, s_y, weight dtype, per channel, fused activation.
type Variant = (bool, i64, bool, i64, f32, DType, bool, &'static str);

struct ConvCase {
    c: usize,
    hw: (usize, usize),
    oc: usize,
    k: (usize, usize),
    stride: usize,
    pad: usize,
    dil: usize,
    group: usize,
}

#[test]
fn conv_integer_equals_simulation_across_shapes_types_and_zero_points() {
    let cases = [
        ConvCase {
            c: 3,
            hw: (9, 7),
            oc: 5,
            k: (3, 3),
            stride: 1,
            pad: 1,
            dil: 1,
            group: 1,
        },
        ConvCase {
            c: 16,
            hw: (6, 6),
            oc: 24,
            k: (1, 1),
            stride: 1,
            pad: 0,
            dil: 1,
            group: 1,
        },
        ConvCase {
            c: 7,
            hw: (5, 11),
            oc: 13,
            k: (1, 1),
            stride: 1,
            pad: 0,
            dil: 1,
            group: 1,
        },
        ConvCase {
            c: 6,
            hw: (10, 10),
            oc: 6,
            k: (3, 3),
            stride: 2,
            pad: 1,
            dil: 1,
            group: 6,
        },
        ConvCase {
            c: 9,
            hw: (7, 7),
            oc: 9,
            k: (3, 3),
            stride: 1,
            pad: 1,
            dil: 1,
            group: 9,
        },
        ConvCase {
            c: 4,
            hw: (8, 9),
            oc: 6,
            k: (2, 3),
            stride: 1,
            pad: 1,
            dil: 1,
            group: 2,
        },
        ConvCase {
            c: 1,
            hw: (28, 28),
            oc: 6,
            k: (5, 5),
            stride: 1,
            pad: 2,
            dil: 1,
            group: 1,
        },
        ConvCase {
            c: 5,
            hw: (9, 9),
            oc: 3,
            k: (3, 3),
            stride: 2,
            pad: 0,
            dil: 2,
            group: 1,
        },
        ConvCase {
            c: 8,
            hw: (4, 4),
            oc: 33,
            k: (1, 1),
            stride: 2,
            pad: 0,
            dil: 1,
            group: 1,
        },
    ];
    let mut seed = 100;
    for (ci, cc) in cases.iter().enumerate() {
        // (x signed, zx, y signed, zy, y scale, weight dtype, per channel, act)
        let variants: [Variant; 7] = [
            (false, 0, false, 0, 0.05, DType::I8, true, "relu"),
            (false, 255, false, 255, 0.05, DType::I8, true, ""),
            (false, 128, false, 3, 0.002, DType::I8, false, "clip"),
            (true, -128, true, 127, 0.05, DType::I8, true, ""),
            (true, 127, true, -128, 0.04, DType::U8, false, "relu"),
            (true, 5, false, 128, 0.03, DType::I4, true, ""),
            (false, 77, true, 0, 0.03, DType::U4, false, "clip"),
        ];
        for (vi, &(xs, zx, ys, zy, sy, wdt, pc, act)) in variants.iter().enumerate() {
            seed += 1;
            let mut b = Builder::new(seed);
            let n = if vi % 2 == 0 { 1 } else { 3 };
            let shape = [n, cc.c, cc.hw.0, cc.hw.1];
            let x = b.input(&shape);
            let ax = Act {
                scale: 0.02,
                zero: zx,
                signed: xs,
            };
            let (_, xd) = b.qdq(&x, ax);
            let (wd, sw) = b.weight(&[cc.oc, cc.c / cc.group, cc.k.0, cc.k.1], wdt, pc, 0);
            let bias = b.bias(cc.oc, ax.scale, &sw);
            let p = cc.pad as i64;
            let attrs = [
                (
                    "kernel_shape",
                    Attr::Ints(vec![cc.k.0 as i64, cc.k.1 as i64]),
                ),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("strides", Attr::Ints(vec![cc.stride as i64; 2])),
                ("dilations", Attr::Ints(vec![cc.dil as i64; 2])),
                ("group", Attr::Int(cc.group as i64)),
            ];
            let mut y = b.node("Conv", &[&xd, &wd, &bias], &attrs);
            match act {
                "relu" => y = b.node("Relu", &[&y], &[]),
                "clip" => {
                    let lo = b.init("lo", Tensor::scalar(-0.5f32));
                    let hi = b.init("hi", Tensor::scalar(1.5f32));
                    y = b.node("Clip", &[&y, &lo, &hi], &[]);
                }
                _ => {}
            }
            let (yq, _) = b.qdq(
                &y,
                Act {
                    scale: sy,
                    zero: zy,
                    signed: ys,
                },
            );
            let g = b.finish(&yq);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let input = random_input(&mut rng, &shape, -3.0, 3.0);
            check(
                &format!("conv case {ci} variant {vi}"),
                g,
                &input,
                &["QConv"],
            );
        }
    }
}

#[test]
fn gemm_and_matmul_integer_equal_simulation() {
    let mut seed = 500;
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 784, 300),
        (3, 33, 17),
        (16, 100, 10),
        (5, 7, 64),
    ] {
        for &(trans_b, matmul, xs, zx, zy, wdt) in &[
            (true, false, false, 0i64, 0i64, DType::I8),
            (false, false, true, -128, 127, DType::I8),
            (false, true, false, 255, 255, DType::U8),
            (true, false, true, 100, -100, DType::I4),
        ] {
            seed += 1;
            let mut b = Builder::new(seed);
            let shape: Vec<usize> = if matmul { vec![2, m, k] } else { vec![m, k] };
            let x = b.input(&shape);
            let ax = Act {
                scale: 0.03,
                zero: zx,
                signed: xs,
            };
            let (_, xd) = b.qdq(&x, ax);
            let wshape = if trans_b { [n, k] } else { [k, n] };
            let axis = if trans_b { 0 } else { 1 };
            let (wd, sw) = b.weight(&wshape, wdt, seed % 2 == 0, axis);
            let y = if matmul {
                b.node("MatMul", &[&xd, &wd], &[])
            } else {
                let bias = b.bias(n, ax.scale, &sw);
                b.node(
                    "Gemm",
                    &[&xd, &wd, &bias],
                    &[("transB", Attr::Int(trans_b as i64))],
                )
            };
            let (yq, _) = b.qdq(
                &y,
                Act {
                    scale: 0.08,
                    zero: zy,
                    signed: zy < 0 || xs,
                },
            );
            let g = b.finish(&yq);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let input = random_input(&mut rng, &shape, -4.0, 4.0);
            check(
                &format!("gemm m={m} k={k} n={n} tb={trans_b} mm={matmul}"),
                g,
                &input,
                &["QGemm"],
            );
        }
    }
}

#[test]
fn pools_add_and_pass_through_integer_equal_simulation() {
    for (seed, signed, za, zb) in [
        (900u64, false, 0i64, 255i64),
        (901, true, -128, 127),
        (902, false, 128, 3),
    ] {
        let mut b = Builder::new(seed);
        let shape = [2, 5, 9, 7];
        let x = b.input(&shape);
        let a0 = Act {
            scale: 0.03,
            zero: za,
            signed,
        };
        let (_, xd) = b.qdq(&x, a0);
        // MaxPool with padding keeps the parameters.
        let mp = b.node(
            "MaxPool",
            &[&xd],
            &[
                ("kernel_shape", Attr::Ints(vec![3, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 0, 1, 1])),
            ],
        );
        let (_, mpd) = b.qdq(&mp, a0);
        // Residual add of two differently quantised tensors (one broadcast).
        let a1 = Act {
            scale: 0.05,
            zero: zb,
            signed,
        };
        let x2 = b.init("c", {
            let mut r = ChaCha8Rng::seed_from_u64(seed + 7);
            Tensor::from_vec(
                vec![2, 5, 5, 4],
                (0..200)
                    .map(|_| r.gen_range(-2.0f32..2.0))
                    .collect::<Vec<f32>>(),
            )
            .unwrap()
        });
        let (_, x2d) = b.qdq(&x2, a1);
        let add = b.node("Add", &[&mpd, &x2d], &[]);
        let relu = b.node("Relu", &[&add], &[]);
        let (_, addd) = b.qdq(
            &relu,
            Act {
                scale: 0.04,
                zero: if signed { -20 } else { 20 },
                signed,
            },
        );
        let one = b.init("c1", {
            let mut r = ChaCha8Rng::seed_from_u64(seed + 8);
            Tensor::from_vec(
                vec![1, 5, 1, 1],
                (0..5)
                    .map(|_| r.gen_range(-1.0f32..1.0))
                    .collect::<Vec<f32>>(),
            )
            .unwrap()
        });
        let (_, oned) = b.qdq(&one, a1);
        let addb = b.node("Add", &[&addd, &oned], &[]);
        let ab = Act {
            scale: 0.06,
            zero: 0,
            signed,
        };
        let (_, abd) = b.qdq(&addb, ab);
        let gap = b.node("GlobalAveragePool", &[&abd], &[]);
        let (_, gd) = b.qdq(
            &gap,
            Act {
                scale: 0.01,
                zero: if signed { 127 } else { 0 },
                signed,
            },
        );
        let fl = b.node("Flatten", &[&gd], &[("axis", Attr::Int(1))]);
        let (fq, _) = b.qdq(
            &fl,
            Act {
                scale: 0.01,
                zero: if signed { 127 } else { 0 },
                signed,
            },
        );
        let g = b.finish(&fq);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let input = random_input(&mut rng, &shape, -2.0, 6.0);
        check(
            &format!("pool/add chain seed {seed}"),
            g,
            &input,
            &["QMaxPool", "QAdd", "QGlobalAveragePool"],
        );
    }
}

#[test]
fn unmatched_patterns_stay_in_float_and_are_reported() {
    let mut b = Builder::new(7);
    let x = b.input(&[1, 4]);
    let a = Act {
        scale: 0.02,
        zero: 0,
        signed: false,
    };
    let (_, xd) = b.qdq(&x, a);
    // Gemm with alpha ≠ 1: no integer pattern.
    let (wd, sw) = b.weight(&[3, 4], DType::I8, false, 0);
    let bias = b.bias(3, a.scale, &sw);
    let y = b.node(
        "Gemm",
        &[&xd, &wd, &bias],
        &[("transB", Attr::Int(1)), ("alpha", Attr::Float(0.5))],
    );
    let (yq, _) = b.qdq(&y, a);
    let g = b.finish(&yq);
    let (lg, report) = lower_with_report(g.clone(), QdqMode::Integer).unwrap();
    assert_eq!(report.fallbacks.len(), 1, "{report:?}");
    assert!(report.fallbacks[0].2.contains("alpha"), "{report:?}");
    assert!(lg.nodes.iter().any(|n| n.op_type == "Gemm"));
    let input = Tensor::from_vec(vec![1, 4], vec![0.1f32, -0.5, 2.0, 1.0]).unwrap();
    let s = Session::new(
        g,
        SessionOptions {
            threads: 1,
            qdq: QdqMode::Integer,
        },
    )
    .unwrap();
    let (out, timing) = s.run_profiled(vec![(x, input)]).unwrap();
    assert_eq!(out[0].dtype(), DType::U8);
    let gemm = timing.iter().find(|t| t.op == "Gemm").unwrap();
    assert_eq!(gemm.kernel, "f32 fallback");
}
