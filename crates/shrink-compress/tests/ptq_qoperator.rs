//! The QOperator form (`shrink compress --qoperator`): structure against the
//! graph ONNX Runtime's `quantize_static(quant_format=QOperator)` writes for
//! the same models, and numerics against the QDQ graph it was rewritten from.
//!
//! Numerics are checked bit for bit: shrink runs the QDQ graph through its
//! integer planner (and through the planner's scalar reference), and the
//! QOperator graph through QLinearConv / com.microsoft QGemm, QLinearAdd,
//! QLinearGlobalAveragePool — both compute COMMON §2's canonical
//! requantisation (i32 accumulation, `m = (s_x·s_w)/s_y` in f32, f32 product
//! rounded half to even), so every u8 code and therefore every dequantised
//! logit must be identical, not merely within a quantisation step.

mod ptq_common;
use ptq_common::*;
use shrink_compress::calib::{calibrate, CalibConfig, ObserverConfig};
use shrink_compress::qoperator::{float_compute_nodes, to_qoperator, to_qoperator_complete};
use shrink_compress::quantize::{activation_tensors, insert_qdq, QuantPlan};
use shrink_graph::Graph;
use shrink_runtime::{QdqMode, Session, SessionOptions};
use shrink_tensor::{DType, Tensor};
use std::collections::BTreeMap;

fn qdq(g: &Graph, plan: &QuantPlan) -> Graph {
    let c = calib(128);
    let r = calibrate(
        g,
        &activation_tensors(g),
        &c.batches,
        &CalibConfig {
            observer: ObserverConfig::default(),
            threads: 0,
        },
        |_| {},
    )
    .unwrap();
    insert_qdq(g, plan, &r).unwrap().0
}

fn ops(g: &Graph) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in &g.nodes {
        let k = if n.domain.is_empty() {
            n.op_type.clone()
        } else {
            format!("{}.{}", n.domain, n.op_type)
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn run(g: &Graph, mode: QdqMode, xs: &[Tensor]) -> Vec<f32> {
    let s = Session::new(
        g.clone(),
        SessionOptions {
            threads: 0,
            qdq: mode,
        },
    )
    .unwrap();
    xs.iter()
        .flat_map(|x| s.run(vec![x.clone()]).unwrap().remove(0).to_f32_vec())
        .collect()
}

/// Same node list as ORT's QOperator quantiser for these models: Q at the
/// input, QLinearConv per Conv, com.microsoft QGemm per Gemm, QLinearAdd per
/// residual Add, QLinearGlobalAveragePool, MaxPool/Flatten on u8, DQ at the
/// output; no float Conv/Gemm and no other Q/DQ left.
#[test]
fn qoperator_structure_matches_onnx_runtime_qoperator_form() {
    for name in ["lenet5_bn", "mobilenetv2_tiny"] {
        let g = model(name);
        let (qo, rec) = to_qoperator_complete(&qdq(&g, &QuantPlan::int8())).unwrap();
        assert!(float_compute_nodes(&qo).is_empty(), "{name}");
        assert_eq!(qo.opsets.get("com.microsoft"), Some(&1), "{name}");
        let fp = ops(&g);
        let got = ops(&qo);
        let count = |m: &BTreeMap<String, usize>, k: &str| m.get(k).copied().unwrap_or(0);
        assert_eq!(count(&got, "QLinearConv"), count(&fp, "Conv"), "{name}");
        assert_eq!(
            count(&got, "com.microsoft.QGemm"),
            count(&fp, "Gemm"),
            "{name}"
        );
        assert_eq!(
            count(&got, "com.microsoft.QLinearAdd"),
            count(&fp, "Add"),
            "{name}"
        );
        assert_eq!(
            count(&got, "com.microsoft.QLinearGlobalAveragePool"),
            count(&fp, "GlobalAveragePool"),
            "{name}"
        );
        assert_eq!(count(&got, "MaxPool"), count(&fp, "MaxPool"), "{name}");
        assert_eq!(count(&got, "QuantizeLinear"), 1, "{name}: only the input");
        assert_eq!(
            count(&got, "DequantizeLinear"),
            1,
            "{name}: only the output"
        );
        for k in ["Relu", "Clip", "Conv", "Gemm"] {
            assert_eq!(count(&got, k), 0, "{name}: {k} left");
        }
        // Weights stay int8 codes; every bias an int32 in the accumulator.
        for n in qo.nodes.iter().filter(|n| n.op_type == "QLinearConv") {
            assert_eq!(qo.initializers[&n.inputs[3]].dtype(), DType::I8);
            assert_eq!(qo.initializers[&n.inputs[8]].dtype(), DType::I32);
        }
        assert!(
            rec.changes.iter().all(|c| !c.starts_with("kept")),
            "{name}: {:?}",
            rec.changes
        );
        // The rewrite is a valid ONNX file for ORT (round trip through the writer).
        let bytes = shrink_graph::onnx::to_bytes(&qo).unwrap();
        let back = shrink_graph::onnx::from_bytes(&bytes, None).unwrap();
        assert_eq!(ops(&back), got, "{name}");
    }
}

/// On real test images the QOperator graph gives the QDQ graph's u8 logits
/// exactly, in integer and simulated lowering alike.
#[test]
fn qoperator_runs_to_the_same_codes_as_the_qdq_graph() {
    let (xs, _) = test_set(250);
    for name in ["lenet300100", "lenet5_bn", "mobilenetv2_tiny_relu"] {
        let q = qdq(&model(name), &QuantPlan::int8());
        let (qo, _) = to_qoperator_complete(&q).unwrap();
        let want = run(&q, QdqMode::Integer, &xs);
        let sim = run(&q, QdqMode::Simulate, &xs);
        let got = run(&qo, QdqMode::Integer, &xs);
        assert_eq!(want, sim, "{name}: planner vs its scalar reference");
        let off = want.iter().zip(&got).filter(|(a, b)| a != b).count();
        assert_eq!(off, 0, "{name}: {off} of {} logits differ", want.len());
        // And the codes are not trivial: the logits take many values.
        let mut distinct: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() > 50,
            "{name}: {} distinct logits",
            distinct.len()
        );
    }
}

/// Sub-8-bit weights (int4 codes in i8 tensors) convert too; a pattern with
/// no QOperator form stays in QDQ form and the complete form is refused with
/// the layer named.
#[test]
fn low_bit_weights_convert_and_unconvertible_layers_are_named() {
    let g = model("lenet5_bn");
    let mut plan = QuantPlan::int8();
    plan.weights = shrink_compress::quantize::WeightFormat::int(4);
    let q = qdq(&g, &plan);
    let (qo, _) = to_qoperator_complete(&q).unwrap();
    let (xs, _) = test_set(250);
    assert_eq!(
        run(&q, QdqMode::Integer, &xs),
        run(&qo, QdqMode::Integer, &xs)
    );
    // Break one Gemm's pattern: its output is also a graph output, so the
    // float value must stay.
    let mut bad = q.clone();
    let gemm = bad
        .nodes
        .iter()
        .find(|n| n.op_type == "Gemm")
        .unwrap()
        .clone();
    bad.outputs
        .push(shrink_graph::ValueInfo::unknown(gemm.outputs[0].clone()));
    let (partial, rec) = to_qoperator(&bad).unwrap();
    assert_eq!(float_compute_nodes(&partial), vec![gemm.name.clone()]);
    assert!(rec
        .changes
        .iter()
        .any(|c| c.starts_with("kept") && c.contains(&gemm.name)));
    let e = to_qoperator_complete(&bad).unwrap_err().to_string();
    assert!(
        e.contains(&gemm.name) && e.contains("no QOperator form"),
        "{e}"
    );
}
