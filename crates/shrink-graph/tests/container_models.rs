//! The `.shrink` container on real models: every backend suite model and the
//! shared Fashion-MNIST models (fp32 and ONNX Runtime's int8 QDQ export) come
//! back from a save/load exactly — same ONNX bytes on re-export — with their
//! weights stored dense, entropy-coded or pruned + shared + Huffman-coded.

mod common;

use shrink_graph::container::{
    from_shrink_bytes, load_shrink, save_shrink, to_shrink_bytes, Provenance,
};
use shrink_graph::{onnx, Encoding, Graph, Tensor};

fn same_model(a: &Graph, b: &Graph, what: &str) {
    assert_eq!(
        a.initializers.keys().collect::<Vec<_>>(),
        b.initializers.keys().collect::<Vec<_>>(),
        "{what}: initializer order"
    );
    assert!(
        onnx::to_bytes(a).unwrap() == onnx::to_bytes(b).unwrap(),
        "{what}: the model changed in the .shrink round trip"
    );
}

#[test]
fn backend_models_round_trip_dense() {
    let models = common::backend_other_models();
    assert!(models.len() > 100, "only {} models", models.len());
    for path in &models {
        let what = path.display().to_string();
        let g = onnx::load(path).unwrap();
        let (bytes, info) = to_shrink_bytes(&g, &Provenance::new()).unwrap();
        assert!(info.check_sizes(), "{what}");
        let back = from_shrink_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(back.check_sizes(), "{what}");
        same_model(&g, &back.graph, &what);
    }
}

#[test]
fn fashion_models_round_trip_with_entropy_coded_int8_weights() {
    let dir = common::TempDir::new("container");
    for name in [
        "lenet5.onnx",
        "mobilenetv2_tiny.onnx",
        "lenet5_bn.int8_qdq_pc.onnx",
        "mobilenetv2_tiny_relu.int8_qdq_pc.onnx",
    ] {
        let src = common::fashion(name);
        let mut g = onnx::load(&src).unwrap();
        // int8 weight codes: Huffman over the bytes; everything else dense
        let int8: Vec<String> = g
            .initializers
            .iter()
            .filter(|(_, t)| t.dtype() == shrink_graph::DType::I8 && t.rank() >= 2)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &int8 {
            g.encodings.insert(
                n.clone(),
                Encoding::Huffman {
                    inner: Box::new(Encoding::Dense),
                },
            );
        }
        let out = dir.path().join(name.replace(".onnx", ".shrink"));
        let prov = Provenance::new()
            .with_source(&src)
            .unwrap()
            .with_recipe("[test]");
        let info = save_shrink(&g, &prov, &out).unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().len() as usize,
            info.file_bytes
        );
        let back = load_shrink(&out).unwrap();
        same_model(&g, &back, name);
        assert_eq!(back.encodings.len(), int8.len(), "{name}");
        let f = shrink_graph::container::read_shrink(&out).unwrap();
        assert_eq!(f.provenance.source_file.as_deref(), Some(name));
        assert_eq!(
            f.provenance.source_sha256.as_ref().map(|s| s.len()),
            Some(64)
        );
        if !int8.is_empty() {
            // entropy-coded int8 codes are smaller than their dense bytes
            let coded: usize = f
                .tensors
                .iter()
                .filter(|t| int8.contains(&t.name))
                .map(|t| t.stored_bytes)
                .sum();
            let dense: usize = int8.iter().map(|n| g.initializers[n].len()).sum();
            assert!(coded < dense, "{name}: {coded} ≥ {dense}");
        }
    }
}

/// LeNet-300-100 pruned to 90% per layer (magnitude) with 16 shared values per
/// layer, stored with Deep Compression's encodings: exact values back, and the
/// file is far smaller than the fp32 weights.
#[test]
fn pruned_shared_lenet300100_stores_small_and_exact() {
    let mut g = onnx::load(common::fashion("lenet300100.onnx")).unwrap();
    let names: Vec<String> = g
        .initializers
        .iter()
        .filter(|(_, t)| t.rank() == 2)
        .map(|(n, _)| n.clone())
        .collect();
    for n in &names {
        let t = &g.initializers[n];
        let v = t.to_f32_vec();
        let mut mags: Vec<f32> = v.iter().map(|x| x.abs()).collect();
        mags.sort_by(|a, b| b.total_cmp(a));
        let thr = mags[v.len() / 10 - 1];
        let hi = mags[0];
        // 16 uniform levels of magnitude, sign kept: a stand-in for k-means
        let q: Vec<f32> = v
            .iter()
            .map(|&x| {
                if x.abs() < thr {
                    0.0
                } else {
                    let level = ((x.abs() - thr) / (hi - thr) * 7.0).round();
                    x.signum() * (thr + level * (hi - thr) / 7.0)
                }
            })
            .collect();
        g.initializers
            .insert(n.clone(), Tensor::from_vec(t.shape().to_vec(), q).unwrap());
        g.encodings.insert(n.clone(), Encoding::deep_compression(4));
    }
    let (bytes, info) = to_shrink_bytes(&g, &Provenance::new()).unwrap();
    let back = from_shrink_bytes(&bytes).unwrap();
    same_model(&g, &back.graph, "lenet300100");
    assert!(back.check_sizes());
    let fp32: usize = 4 * g.initializers.values().map(|t| t.len()).sum::<usize>();
    assert!(
        info.file_bytes * 30 < fp32,
        "{} bytes vs {fp32} bytes of fp32 weights",
        info.file_bytes
    );
    for t in back.tensors.iter().filter(|t| names.contains(&t.name)) {
        let kept = t.nonzero as f64 / t.numel() as f64;
        assert!((kept - 0.1).abs() < 0.01, "{}: kept {kept}", t.name);
        // coded payload of the big streams within 2% of their order-0 entropy
        for s in t.streams.iter().filter(|s| s.symbols > 10_000) {
            let h = s.entropy_bits.unwrap() / 8.0;
            let payload = s.stored_bytes as f64;
            assert!(
                payload <= 1.02 * h + 200.0,
                "{} {}: {payload} vs {h}",
                t.name,
                s.name
            );
        }
    }
}
