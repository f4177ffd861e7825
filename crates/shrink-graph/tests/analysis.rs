//! layer_stats against hand-computed figures (the textbook LeNet counts, the
//! ONNX backend tests' small ops) and a Python reference over the fashion
//! models (fixture from scripts/onnx-fixtures.py).

mod common;

use serde_json::Value;
use shrink_graph::analysis::{layer_stats, totals};
use shrink_graph::{onnx, Dim};

#[test]
fn lenet_totals_match_hand_counts() {
    // 784*300+300 + 300*100+100 + 100*10+10 params; 784*300 + 300*100 + 100*10 MACs.
    let g = onnx::load(common::fashion("lenet300100.onnx")).unwrap();
    let t = totals(&layer_stats(&g));
    assert_eq!(t.params, 266_610);
    assert_eq!(t.weight_bytes, 266_610 * 4);
    assert_eq!(t.macs, Some(266_200));

    // conv1 6*28*28*25 + conv2 16*10*10*150 + 400*120 + 120*84 + 84*10.
    let g = onnx::load(common::fashion("lenet5.onnx")).unwrap();
    let layers = layer_stats(&g);
    let t = totals(&layers);
    assert_eq!(t.params, 61_706);
    assert_eq!(t.macs, Some(416_520));
    let conv1 = layers.iter().find(|l| l.op_type == "Conv").unwrap();
    assert_eq!(conv1.macs, Some(117_600));
    assert_eq!(conv1.params, 6 * 25 + 6);
    assert_eq!(
        conv1.output_shapes[0],
        Some(vec![
            Dim::Symbol("N".into()),
            Dim::Known(6),
            Dim::Known(28),
            Dim::Known(28)
        ])
    );
    assert_eq!(conv1.output_elements, Some(6 * 28 * 28));
}

#[test]
fn fashion_macs_match_python_reference() {
    let text = std::fs::read_to_string(common::fixture("fashion_onnx.json")).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    for (file, want) in fx["models"].as_object().unwrap() {
        let g = onnx::load(common::fashion(file)).unwrap();
        let layers = layer_stats(&g);
        let macs = want["macs"].as_object().unwrap();
        for (name, m) in macs {
            let l = layers.iter().find(|l| &l.name == name).unwrap();
            assert_eq!(l.macs, m.as_u64(), "{file}: {name}");
        }
        let t = totals(&layers);
        let want_total: u64 = macs.values().map(|m| m.as_u64().unwrap()).sum();
        assert_eq!(t.macs, Some(want_total), "{file}");
        // Every initializer element is counted exactly once.
        let elements: u64 = want["initializers"]
            .as_object()
            .unwrap()
            .values()
            .map(|t| {
                t["dims"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product::<u64>()
            })
            .sum();
        assert_eq!(t.params, elements, "{file}");
    }
}

#[test]
fn quantized_conv_owns_its_int8_weights() {
    let fp = layer_stats(&onnx::load(common::fashion("lenet5.onnx")).unwrap());
    let q = layer_stats(&onnx::load(common::fashion("lenet5.int8_qdq_pc.onnx")).unwrap());
    let conv_fp = fp.iter().find(|l| l.op_type == "Conv").unwrap();
    let conv_q = q.iter().find(|l| l.op_type == "Conv").unwrap();
    // Weights + bias, plus per-channel scales and zero points.
    assert!(conv_q.params >= conv_fp.params, "{conv_q:?}");
    // int8 weights and int32 bias: far less than the f32 bytes.
    assert!(conv_q.weight_bytes < conv_fp.weight_bytes, "{conv_q:?}");
    for l in q.iter().filter(|l| l.weight_only) {
        assert_eq!((l.params, l.macs), (0, Some(0)), "{}", l.name);
    }
}

#[test]
fn backend_ops_macs_by_hand() {
    let macs = |test: &str| {
        let g = onnx::load(common::backend_node_dir().join(test).join("model.onnx")).unwrap();
        layer_stats(&g)[0].macs
    };
    // X [1,1,3,3], W [1,2,3,3]: 9 inputs each scatter into 2*3*3 outputs.
    assert_eq!(macs("test_convtranspose"), Some(162));
    // [2,3,4] x [2,4,3]: 18 outputs of 4 MACs.
    assert_eq!(macs("test_matmul_3d"), Some(72));
    // seq 1, batch 3, I 2, H 3: 4H*(I+H) per sequence = 60.
    assert_eq!(macs("test_lstm_defaults"), Some(180));
    // GRU, H 5: 3H*(I+H) = 105 per sequence.
    assert_eq!(macs("test_gru_defaults"), Some(315));
}

/// MiniLM-L6 (d = 384, FFN 1536, 6 layers) at sequence length s = 128, per
/// sequence: per layer 4·d²·s (Q, K, V, output projections) + 2·d·4d·s (FFN)
/// + 2·s²·d (scores and weighted sum over 12 heads of 32) MACs.
#[test]
fn minilm_macs_match_the_transformer_formula() {
    let g = shrink_graph::builders::bert::load_sentence_encoder(common::minilm_dir()).unwrap();
    // Shapes stay symbolic: batch and seq flow through all 227 nodes.
    let mut typed = g.clone();
    shrink_graph::infer_shapes(&mut typed).unwrap();
    let types = shrink_graph::value_types(&typed);
    for n in &typed.nodes {
        for o in &n.outputs {
            let s = types[o.as_str()]
                .shape
                .as_ref()
                .unwrap_or_else(|| panic!("{o}: no shape"));
            assert!(!s.contains(&Dim::Symbol("?".into())), "{o}: {s:?}");
        }
    }
    assert_eq!(
        totals(&layer_stats(&g)).macs,
        None,
        "seq unbound: MACs unknown"
    );

    let (d, s, layers) = (384u64, 128u64, 6u64);
    let per_layer = 4 * d * d * s + 2 * d * 4 * d * s + 2 * s * s * d;
    let dims = std::collections::HashMap::from([("seq".to_string(), s as usize)]);
    let t = totals(&shrink_graph::analysis::layer_stats_with(&g, &dims));
    assert_eq!(t.macs, Some(layers * per_layer));
    // 22.7M parameters, as published for all-MiniLM-L6-v2 (pooler excluded here).
    assert!((22_000_000..23_000_000).contains(&t.params), "{}", t.params);
}
