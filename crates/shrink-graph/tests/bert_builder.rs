//! Structure of the BERT builder's graph on a tiny random checkpoint: the
//! interface, standard ops only, valid dataflow order, weights transposed,
//! checkpoint naming variants, and errors for broken checkpoints. (Numbers are
//! checked end to end against sentence-transformers in crates/shrink/tests/minilm.rs.)

use indexmap::IndexMap;
use shrink_graph::builders::bert::{bert_encoder, bert_encoder_with, BertConfig, BertOptions};
use shrink_graph::{DType, Dim, Graph, Tensor};
use std::collections::HashSet;

fn tiny_config() -> BertConfig {
    serde_json::from_str(
        r#"{"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
            "max_position_embeddings": 10, "vocab_size": 20, "type_vocab_size": 2}"#,
    )
    .unwrap()
}

/// Deterministic pseudo-random weights with the shapes of a BERT checkpoint.
fn tiny_weights(c: &BertConfig, prefix: &str) -> IndexMap<String, Tensor> {
    let mut state = 0x2545f4914f6cdd1du64;
    let mut rand = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    };
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, o, n_in) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            shapes.push((format!("{p}.{name}.weight"), vec![o, n_in]));
            shapes.push((format!("{p}.{name}.bias"), vec![o]));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}.{ln}.weight"), vec![h]));
            shapes.push((format!("{p}.{ln}.bias"), vec![h]));
        }
    }
    shapes
        .into_iter()
        .map(|(n, s)| {
            let len = s.iter().product();
            (
                format!("{prefix}{n}"),
                Tensor::from_vec(s, rand(len)).unwrap(),
            )
        })
        .collect()
}

const ONNX_OPS: &[&str] = &[
    "Gather",
    "Shape",
    "Slice",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "LayerNormalization",
    "Cast",
    "Unsqueeze",
    "MatMul",
    "Reshape",
    "Transpose",
    "Softmax",
    "Erf",
    "Identity",
    "ReduceSum",
    "Max",
    "Sqrt",
];

/// Every node input is a graph input, an initializer, or an earlier output.
fn assert_ordered(g: &Graph) {
    let mut known: HashSet<&str> = g.inputs.iter().map(|i| i.name.as_str()).collect();
    known.extend(g.initializers.keys().map(String::as_str));
    for n in &g.nodes {
        for i in &n.inputs {
            assert!(
                known.contains(i.as_str()),
                "node {} reads {i} before it exists",
                n.name
            );
        }
        known.extend(n.outputs.iter().map(String::as_str));
    }
    for o in &g.outputs {
        assert!(
            known.contains(o.name.as_str()),
            "output {} is never produced",
            o.name
        );
    }
}

#[test]
fn graph_interface_and_structure() {
    let c = tiny_config();
    let w = tiny_weights(&c, "");
    let g = bert_encoder(&c, &w).unwrap();
    assert_eq!(g.input_names(), ["input_ids", "attention_mask"]);
    for i in &g.inputs {
        assert_eq!(i.dtype, Some(DType::I64));
        assert!(matches!(
            i.shape.as_deref(),
            Some([Dim::Symbol(_), Dim::Symbol(_)])
        ));
    }
    assert_eq!(
        g.output_names(),
        ["last_hidden_state", "sentence_embedding"]
    );
    assert_eq!(g.outputs[1].shape.as_ref().unwrap()[1], Dim::Known(8));
    assert_eq!(g.opset(), 17);
    for n in &g.nodes {
        assert!(
            ONNX_OPS.contains(&n.op_type.as_str()),
            "non-standard op {}",
            n.op_type
        );
        assert!(n.domain.is_empty());
    }
    assert_ordered(&g);
    // One Softmax and one Erf per layer; 6 projections per layer.
    let count = |op: &str| g.nodes.iter().filter(|n| n.op_type == op).count();
    assert_eq!(count("Softmax"), 2);
    assert_eq!(count("Erf"), 2);
    assert_eq!(count("LayerNormalization"), 1 + 2 * 2);
    assert_eq!(count("MatMul"), 2 * (6 + 2));
    // Linear weights are stored [in, out]: the transpose of PyTorch's [out, in].
    let torch = w["encoder.layer.1.intermediate.dense.weight"]
        .as_slice::<f32>()
        .unwrap();
    let stored = &g.initializers["encoder.layer.1.intermediate.dense.weight"];
    assert_eq!(stored.shape(), &[8, 16]);
    let s = stored.as_slice::<f32>().unwrap();
    for o in 0..16 {
        for i in 0..8 {
            assert_eq!(s[i * 16 + o], torch[o * 8 + i]);
        }
    }
    // Without a token_type_ids input, row 0 of the type table is a constant.
    let row0 = &g.initializers["embeddings.token_type_embeddings.row0"];
    assert_eq!(
        row0.as_slice::<f32>().unwrap(),
        &w["embeddings.token_type_embeddings.weight"]
            .as_slice::<f32>()
            .unwrap()[..8]
    );
}

#[test]
fn token_type_input_and_prefixed_checkpoints() {
    let c = tiny_config();
    let g = bert_encoder_with(
        &c,
        &tiny_weights(&c, ""),
        &BertOptions {
            token_type_ids: true,
        },
    )
    .unwrap();
    assert_eq!(
        g.input_names(),
        ["input_ids", "attention_mask", "token_type_ids"]
    );
    assert!(g
        .initializers
        .contains_key("embeddings.token_type_embeddings.weight"));
    assert_ordered(&g);
    // A `bert.`-prefixed checkpoint (BertForX) builds the same graph.
    let plain = bert_encoder(&c, &tiny_weights(&c, "")).unwrap();
    let prefixed = bert_encoder(&c, &tiny_weights(&c, "bert.")).unwrap();
    assert_eq!(plain, prefixed);
    // Old checkpoints name LayerNorm parameters gamma/beta.
    let old: IndexMap<String, Tensor> = tiny_weights(&c, "")
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            (k, v)
        })
        .collect();
    assert_eq!(bert_encoder(&c, &old).unwrap(), plain);
}

#[test]
fn broken_checkpoints_are_errors_naming_the_weight() {
    let c = tiny_config();
    let mut w = tiny_weights(&c, "");
    w.shift_remove("encoder.layer.1.output.dense.bias");
    let e = bert_encoder(&c, &w).unwrap_err().to_string();
    assert!(e.contains("encoder.layer.1.output.dense.bias"), "{e}");

    let mut w = tiny_weights(&c, "");
    w.insert(
        "encoder.layer.0.attention.self.key.weight".into(),
        Tensor::from_vec(vec![8, 7], vec![0f32; 56]).unwrap(),
    );
    let e = bert_encoder(&c, &w).unwrap_err().to_string();
    assert!(
        e.contains("attention.self.key.weight") && e.contains("[8, 7]"),
        "{e}"
    );

    let e = bert_encoder(&c, &IndexMap::new()).unwrap_err().to_string();
    assert!(e.contains("not a BERT checkpoint"), "{e}");

    let mut bad = tiny_config();
    bad.num_attention_heads = 3;
    assert!(bert_encoder(&bad, &tiny_weights(&c, "")).is_err());
    bad = tiny_config();
    bad.hidden_act = "relu".into();
    assert!(bert_encoder(&bad, &tiny_weights(&c, ""))
        .unwrap_err()
        .to_string()
        .contains("relu"));
}

#[test]
fn minilm_config_parses() {
    let cache = std::env::var_os("SHRINK_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/shrink")
        });
    let path = cache.join("minilm/config.json");
    assert!(
        path.is_file(),
        "{} missing; run scripts/fetch-assets minilm",
        path.display()
    );
    let c = BertConfig::from_file(&path).unwrap();
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.num_attention_heads),
        (384, 6, 12)
    );
    assert_eq!(
        (c.intermediate_size, c.vocab_size, c.max_position_embeddings),
        (1536, 30522, 512)
    );
    assert_eq!(c.layer_norm_eps, 1e-12);
    assert_eq!(c.head_dim(), 32);
    // A config that is not JSON names the file.
    let p = std::env::temp_dir().join(format!("shrink-bad-config-{}.json", std::process::id()));
    std::fs::write(&p, "{ not json").unwrap();
    assert!(BertConfig::from_file(&p)
        .unwrap_err()
        .to_string()
        .contains("shrink-bad-config"));
    std::fs::remove_file(&p).unwrap();
}
