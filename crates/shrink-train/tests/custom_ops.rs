//! The ai.shrink training ops: forward against independent references (the
//! runtime's QuantizeLinear → DequantizeLinear, TWN's formula), and their
//! *defined* gradients against central differences of the surrogate each
//! straight-through estimator stands for.

use shrink_formats::intq::Scheme;
use shrink_graph::{Attr, Graph, Node, ValueInfo};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use shrink_train::gradcheck::{check_node, check_node_with, uniform, GradCheck};
use shrink_train::insert::{
    insert_detach, insert_fake_quant, insert_lsq, insert_mask, FakeQuantSpec, Ste,
};
use shrink_train::{
    BackwardCtx, DiffOp, Executor, Forward, ForwardCtx, Mode, OpRegistry, ParamFilter, ParamStore,
    SHRINK_DOMAIN,
};
use std::sync::Arc;

fn shrink_node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
    let mut n = Node::new(format!("{op}_under_test"), op, inputs, outputs);
    n.domain = SHRINK_DOMAIN.into();
    n
}

/// One-node graph whose inputs are initializers (the first one trainable).
fn one_node(n: &Node, inputs: &[Tensor]) -> Graph {
    let mut g = Graph::default();
    g.opsets.insert(String::new(), 17);
    g.opsets.insert(SHRINK_DOMAIN.into(), 1);
    for (name, t) in n.inputs.iter().zip(inputs) {
        g.initializers.insert(name.clone(), t.clone());
    }
    g.nodes.push(n.clone());
    g.outputs.push(ValueInfo::unknown(n.outputs[0].clone()));
    g
}

/// Forward output and the gradients of `wrt` for output gradient `r`.
fn run(n: &Node, inputs: &[Tensor], wrt: &[&str], r: &Tensor) -> (Tensor, Vec<Tensor>) {
    let g = one_node(n, inputs);
    let names = wrt.iter().map(|s| s.to_string()).collect();
    let mut p = ParamStore::from_graph(&g, &ParamFilter::Names(names)).unwrap();
    let mut e = Executor::new(&g).unwrap();
    let y = e.forward(&mut p, &[], Mode::Train).unwrap().remove(0);
    let gr = e.backward(&p, std::slice::from_ref(r)).unwrap();
    (y, wrt.iter().map(|w| gr.get(w).unwrap().clone()).collect())
}

/// Central difference of an elementwise surrogate `f`, times `r`.
fn fd_elementwise(x: &[f32], r: &[f32], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let h = 1e-4;
    x.iter()
        .zip(r)
        .map(|(&v, &r)| (f(v as f64 + h) - f(v as f64 - h)) / (2.0 * h) * r as f64)
        .collect()
}

fn assert_close(a: &[f32], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x as f64 - y).abs() <= tol,
            "{what}[{i}]: analytic {x}, numeric {y}"
        );
    }
}

/// Values that are not within 1e-3 of a rounding boundary `(k + ½)·s` or
/// a clamp boundary, so the surrogates are differentiable there.
fn off_boundaries(n: usize, seed: u64, s: f32, lo: f32, hi: f32) -> Tensor {
    let v: Vec<f32> = uniform(&[n], lo, hi, seed)
        .to_f32_vec()
        .into_iter()
        .map(|x| {
            let frac = (x / s).fract().abs();
            if (frac - 0.5).abs() < 0.05 {
                x + 0.1 * s
            } else {
                x
            }
        })
        .collect();
    Tensor::from_vec(vec![n], v).unwrap()
}

#[test]
fn fake_quant_forward_equals_runtime_qdq_bit_for_bit() {
    // Per-tensor u8 affine (zero point 3) and per-channel i8 symmetric.
    let x = uniform(&[3, 4, 5], -2.0, 2.0, 1);
    for (scales, zeros, signed, axis) in [
        (vec![0.02f32], vec![3i64], false, None),
        (vec![0.01f32, 0.03, 0.005], vec![0, 0, 0], true, Some(0i64)),
    ] {
        let shape = if scales.len() == 1 {
            vec![]
        } else {
            vec![scales.len()]
        };
        let s = Tensor::from_vec(shape.clone(), scales.clone()).unwrap();
        let zf =
            Tensor::from_vec(shape.clone(), zeros.iter().map(|&z| z as f32).collect()).unwrap();
        let mut fq = shrink_node("FakeQuant", &["x", "s", "z"], &["y"])
            .with("bits", Attr::Int(8))
            .with("signed", Attr::Int(signed as i64));
        if let Some(a) = axis {
            fq = fq.with("axis", Attr::Int(a));
        }
        let (y, _) = run(
            &fq,
            &[x.clone(), s.clone(), zf],
            &["x"],
            &uniform(x.shape(), 0.0, 1.0, 2),
        );
        // Reference: the runtime's QuantizeLinear → DequantizeLinear.
        let zq = if signed {
            Tensor::from_vec(shape.clone(), zeros.iter().map(|&z| z as i8).collect()).unwrap()
        } else {
            Tensor::from_vec(shape.clone(), zeros.iter().map(|&z| z as u8).collect()).unwrap()
        };
        let mut g = Graph::default();
        g.opsets.insert(String::new(), 17);
        g.inputs.push(ValueInfo::unknown("x"));
        g.initializers.insert("s".into(), s);
        g.initializers.insert("z".into(), zq);
        let mut q = Node::new("q", "QuantizeLinear", &["x", "s", "z"], &["q"]);
        let mut d = Node::new("d", "DequantizeLinear", &["q", "s", "z"], &["y"]);
        if let Some(a) = axis {
            q = q.with("axis", Attr::Int(a));
            d = d.with("axis", Attr::Int(a));
        }
        g.nodes = vec![q, d];
        g.outputs.push(ValueInfo::unknown("y"));
        let want = Session::new(g, SessionOptions::default())
            .unwrap()
            .run(vec![x.clone()])
            .unwrap()
            .remove(0);
        assert_eq!(y.to_f32_vec(), want.to_f32_vec(), "signed={signed}");
    }
}

#[test]
fn fake_quant_straight_through_gradients() {
    let s = 0.05f32;
    let x = off_boundaries(64, 3, s, -8.0, 8.0); // 4-bit signed range is ±0.4
    let r = uniform(&[64], -1.0, 1.0, 4);
    let st = Tensor::scalar(s);
    for (ste, z) in [("clipped", 0.0f32), ("clipped", 2.0), ("plain", 1.0)] {
        let n = shrink_node("FakeQuant", &["x", "s", "z"], &["y"])
            .with("bits", Attr::Int(4))
            .with("ste", Attr::String(ste.into()));
        let (_, g) = run(&n, &[x.clone(), st.clone(), Tensor::scalar(z)], &["x"], &r);
        let (lo, hi) = (-8.0 - z as f64 - 0.5, 7.0 - z as f64 + 0.5);
        let surrogate = |v: f64| {
            if ste == "plain" {
                v
            } else {
                v.clamp(lo * s as f64, hi * s as f64)
            }
        };
        let num = fd_elementwise(&x.to_f32_vec(), &r.to_f32_vec(), surrogate);
        assert_close(&g[0].to_f32_vec(), &num, 1e-3, ste);
    }
}

#[test]
fn lsq_gradients_follow_esser_et_al() {
    let x = off_boundaries(40, 5, 0.1, -1.2, 1.2);
    let r = uniform(&[40], -1.0, 1.0, 6);
    let s = 0.1f64;
    let n = shrink_node("LsqQuant", &["x", "s"], &["y"]).with("bits", Attr::Int(4));
    let (y, g) = run(&n, &[x.clone(), Tensor::scalar(s as f32)], &["x", "s"], &r);
    let (qmin, qmax) = (-8.0f64, 7.0f64);
    let xv: Vec<f64> = x.to_f64_vec();
    // Forward: round(clamp(x/s))·s.
    for (a, &v) in y.to_f32_vec().iter().zip(&xv) {
        let want = ((v / s).clamp(qmin, qmax)).round() * s;
        assert!((*a as f64 - want).abs() < 1e-6);
    }
    // dx: FD of the straight-through surrogate s·clamp(x/s) (rounding as identity).
    let num = fd_elementwise(&x.to_f32_vec(), &r.to_f32_vec(), |v| {
        s * (v / s).clamp(qmin, qmax)
    });
    assert_close(&g[0].to_f32_vec(), &num, 1e-3, "dx");
    // ds: FD in s of Σ r·s·(clamp(x/s) + δ) with the rounding offset δ frozen
    // at the base point, times LSQ's gradient scale 1/√(N·Qp).
    let rv = r.to_f64_vec();
    let delta: Vec<f64> = xv
        .iter()
        .map(|&v| {
            let c = (v / s).clamp(qmin, qmax);
            c.round() - c
        })
        .collect();
    let l = |s2: f64| -> f64 {
        xv.iter()
            .zip(&rv)
            .zip(&delta)
            .map(|((&v, &r), &d)| r * s2 * ((v / s2).clamp(qmin, qmax) + d))
            .sum()
    };
    let h = 1e-6;
    let num_s = (l(s + h) - l(s - h)) / (2.0 * h) / (40.0 * qmax).sqrt();
    let a = g[1].to_f32_vec()[0] as f64;
    assert!(
        (a - num_s).abs() <= 1e-4 + 1e-3 * num_s.abs(),
        "ds: analytic {a}, numeric {num_s}"
    );
}

#[test]
fn mask_sign_ternary_and_detach() {
    let x = uniform(&[4, 6], -2.0, 2.0, 7);
    let mask = Tensor::from_vec(
        vec![4, 6],
        (0..24).map(|i| (i % 3 != 0) as i32 as f32).collect(),
    )
    .unwrap();
    // Mask is linear: its backward passes an ordinary central-difference check.
    let r = check_node(
        &shrink_node("Mask", &["x", "m"], &["y"]),
        &[x.clone(), mask.clone()],
        &[0],
        &GradCheck::default(),
    )
    .unwrap();
    assert!(r.passed, "{r:?}");
    let g = one_node(
        &shrink_node("Mask", &["x", "m"], &["y"]),
        &[x.clone(), mask],
    );
    let p = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
    assert_eq!(p.trainable_names(), vec!["x"], "the mask is a buffer");

    // SignSte: ±1 forward, gradient of hardtanh.
    let xs = off_boundaries(30, 8, 1.0, -2.0, 2.0);
    let rr = uniform(&[30], -1.0, 1.0, 9);
    let (y, gs) = run(
        &shrink_node("SignSte", &["x"], &["y"]),
        std::slice::from_ref(&xs),
        &["x"],
        &rr,
    );
    for (a, b) in y.to_f32_vec().iter().zip(xs.to_f32_vec()) {
        assert_eq!(*a, if b >= 0.0 { 1.0 } else { -1.0 });
    }
    let num = fd_elementwise(&xs.to_f32_vec(), &rr.to_f32_vec(), |v| v.clamp(-1.0, 1.0));
    assert_close(&gs[0].to_f32_vec(), &num, 1e-3, "sign");

    // TernarySte: TWN threshold 0.7·mean|x| and scale α; identity gradient.
    let (y, gt) = run(
        &shrink_node("TernarySte", &["x"], &["y"]),
        std::slice::from_ref(&xs),
        &["x"],
        &rr,
    );
    let xv = xs.to_f64_vec();
    let delta = 0.7 * xv.iter().map(|v| v.abs()).sum::<f64>() / xv.len() as f64;
    let big: Vec<f64> = xv
        .iter()
        .filter(|v| v.abs() > delta)
        .map(|v| v.abs())
        .collect();
    let alpha = big.iter().sum::<f64>() / big.len() as f64;
    for (a, &v) in y.to_f32_vec().iter().zip(&xv) {
        let want = if v > delta {
            alpha
        } else if v < -delta {
            -alpha
        } else {
            0.0
        };
        assert!(
            (*a as f64 - want).abs() < 1e-6,
            "ternary of {v}: {a} vs {want}"
        );
    }
    let num = fd_elementwise(&xs.to_f32_vec(), &rr.to_f32_vec(), |v| v);
    assert_close(&gt[0].to_f32_vec(), &num, 1e-3, "ternary");

    // Detach stops the gradient: w → Detach → Mul(w) gets only the direct path.
    let mut g = Graph::default();
    g.opsets.insert(String::new(), 17);
    g.initializers.insert("w".into(), x.clone());
    g.nodes.push(Node::new("m", "Mul", &["w", "w"], &["y"]));
    g.outputs.push(ValueInfo::unknown("y"));
    let d = insert_detach(&mut g, "w").unwrap();
    g.nodes[1].inputs[1] = "w".into(); // Mul(detached w, w)
    assert_eq!(g.nodes[1].inputs[0], d);
    let mut p = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
    let mut e = Executor::new(&g).unwrap();
    e.forward(&mut p, &[], Mode::Train).unwrap();
    let ones = Tensor::from_vec(vec![4, 6], vec![1f32; 24]).unwrap();
    let gr = e.backward(&p, &[ones]).unwrap();
    // d(w_detached·w)/dw = w_detached only.
    assert_eq!(gr.get("w").unwrap().to_f32_vec(), x.to_f32_vec());
}

#[test]
fn inserted_fake_quant_and_lsq_run_on_a_real_model() {
    let dir = shrink_data::shared_data_dir().expect("shared/data not found (set SHRINK_SHARED)");
    let g0 = shrink_graph::onnx::load(dir.join("fashion/lenet5.onnx")).unwrap();
    let w = g0
        .nodes
        .iter()
        .find(|n| n.op_type == "Gemm")
        .map(|n| n.inputs[1].clone())
        .unwrap();
    let wt = g0.initializers[&w].clone();
    // Per-channel int8 fake quant of the first Gemm's weight…
    let spec = FakeQuantSpec::symmetric_max(&wt, 8, Some(0), Ste::Clipped).unwrap();
    let mut g = g0.clone();
    let out = insert_fake_quant(&mut g, &w, &spec).unwrap();
    // …equals the original model with the weight replaced by its QDQ values.
    let mut qg = Graph::default();
    qg.opsets.insert(String::new(), 17);
    qg.inputs.push(ValueInfo::unknown("w"));
    let sc = Tensor::from_vec(vec![spec.scale.len()], spec.scale.clone()).unwrap();
    qg.initializers.insert("s".into(), sc);
    qg.initializers.insert(
        "z".into(),
        Tensor::from_vec(vec![spec.scale.len()], vec![0i8; spec.scale.len()]).unwrap(),
    );
    qg.nodes.push(
        Node::new("q", "QuantizeLinear", &["w", "s", "z"], &["q"]).with("axis", Attr::Int(0)),
    );
    qg.nodes.push(
        Node::new("d", "DequantizeLinear", &["q", "s", "z"], &["y"]).with("axis", Attr::Int(0)),
    );
    qg.outputs.push(ValueInfo::unknown("y"));
    let wq = Session::new(qg, SessionOptions::default())
        .unwrap()
        .run(vec![wt])
        .unwrap()
        .remove(0);
    let mut g_ref = g0.clone();
    g_ref.initializers.insert(w.clone(), wq);
    let x = uniform(&[4, 1, 28, 28], 0.0, 1.0, 10);
    let input = g0.inputs[0].name.clone();
    let want = Session::new(g_ref, SessionOptions::default())
        .unwrap()
        .run(vec![x.clone()])
        .unwrap()
        .remove(0);
    let mut p = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
    assert!(
        !p.is_trainable(&format!("{out}_scale")),
        "fake-quant scale is a buffer"
    );
    let mut e = Executor::new(&g).unwrap();
    let got = e
        .forward(&mut p, &[(&input, &x)], Mode::Eval)
        .unwrap()
        .remove(0);
    let err = got
        .to_f32_vec()
        .iter()
        .zip(want.to_f32_vec())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err <= 1e-5, "fake-quant model vs QDQ weights: {err}");
    // LSQ on the same weight: the step size is trainable and gets a gradient.
    let mut g2 = g0.clone();
    let lsq = insert_lsq(
        &mut g2,
        &w,
        4,
        Scheme::SymmetricNarrow,
        Some(0),
        &g0.initializers[&w],
    )
    .unwrap();
    let mut p = ParamStore::from_graph(&g2, &ParamFilter::All).unwrap();
    let scale = format!("{lsq}_scale");
    assert!(p.is_trainable(&scale));
    let mut e = Executor::new(&g2).unwrap();
    let y = e
        .forward(&mut p, &[(&input, &x)], Mode::Train)
        .unwrap()
        .remove(0);
    let gr = e
        .backward(
            &p,
            &[Tensor::from_vec(y.shape().to_vec(), vec![1f32; y.len()]).unwrap()],
        )
        .unwrap();
    let gs = gr.get(&scale).unwrap().to_f32_vec();
    assert!(gs.iter().all(|v| v.is_finite()) && gs.iter().any(|&v| v != 0.0));
    // Masking half of the weight zeroes the gradient there.
    let mut g3 = g0.clone();
    let n = g0.initializers[&w].len();
    let m = Tensor::from_vec(
        g0.initializers[&w].shape().to_vec(),
        (0..n).map(|i| (i % 2) as f32).collect(),
    )
    .unwrap();
    insert_mask(&mut g3, &w, m).unwrap();
    let mut p = ParamStore::from_graph(&g3, &ParamFilter::All).unwrap();
    let mut e = Executor::new(&g3).unwrap();
    let y = e
        .forward(&mut p, &[(&input, &x)], Mode::Train)
        .unwrap()
        .remove(0);
    let gr = e
        .backward(
            &p,
            &[Tensor::from_vec(y.shape().to_vec(), vec![1f32; y.len()]).unwrap()],
        )
        .unwrap();
    let gw = gr.get(&w).unwrap().to_f32_vec();
    assert!(gw.iter().step_by(2).all(|&v| v == 0.0));
    assert!(gw.iter().skip(1).step_by(2).any(|&v| v != 0.0));
}

/// A Relu whose backward is off by 50%: the checker must catch it.
struct WrongRelu;

impl DiffOp for WrongRelu {
    fn forward(
        &self,
        cx: &ForwardCtx,
        inputs: &[Option<&Tensor>],
    ) -> shrink_train::Result<Forward> {
        Ok(Forward::new(cx.runtime(inputs)?))
    }
    fn backward(
        &self,
        cx: &BackwardCtx,
        grads: &[Option<&Tensor>],
    ) -> shrink_train::Result<Vec<Option<Tensor>>> {
        let x = cx.input(0)?.to_f32_vec();
        let g = grads[0].unwrap().to_f32_vec();
        let d = x
            .iter()
            .zip(g)
            .map(|(&x, g)| if x > 0.0 { 1.5 * g } else { 0.0 })
            .collect();
        Ok(vec![Some(Tensor::from_vec(
            cx.input(0)?.shape().to_vec(),
            d,
        )?)])
    }
}

#[test]
fn the_checker_catches_a_wrong_backward() {
    let mut reg = OpRegistry::standard();
    reg.register("", "Relu", Arc::new(WrongRelu));
    let n = Node::new("r", "Relu", &["x"], &["y"]);
    let x = uniform(&[20], 0.1, 1.0, 11);
    let rep = check_node_with(
        &n,
        std::slice::from_ref(&x),
        &[0],
        &GradCheck::default(),
        &reg,
    )
    .unwrap();
    assert!(!rep.passed, "a 1.5× gradient passed: {rep:?}");
    let rep = check_node(&n, &[x], &[0], &GradCheck::default()).unwrap();
    assert!(rep.passed, "{rep:?}");
}
