use super::*;
use crate::{Node, ValueInfo};
use proptest::prelude::*;
use shrink_tensor::TensorData;

/// A Gemm graph with a pruned, weight-shared f32 weight, an int8 QDQ weight
/// with its scale/zero-point, an int4 tensor and a bias.
pub(super) fn sample_graph() -> Graph {
    let mut g = Graph {
        name: "sample".into(),
        ..Graph::default()
    };
    g.opsets.insert(String::new(), 17);
    g.inputs.push(ValueInfo::new(
        "x",
        DType::F32,
        vec![crate::Dim::Symbol("batch".into()), crate::Dim::Known(64)],
    ));
    g.outputs.push(ValueInfo::new(
        "y",
        DType::F32,
        vec![crate::Dim::Symbol("batch".into()), crate::Dim::Known(32)],
    ));
    let levels = [-0.5f32, -0.25, 0.125, 0.375, 0.75];
    let w: Vec<f32> = (0..32 * 64)
        .map(|i| {
            let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            if h % 10 < 8 {
                0.0
            } else {
                levels[(h / 10 % 5) as usize]
            }
        })
        .collect();
    g.initializers
        .insert("w".into(), Tensor::from_vec(vec![32, 64], w).unwrap());
    g.initializers.insert(
        "b".into(),
        Tensor::from_vec(vec![32], (0..32).map(|i| i as f32 * 0.01).collect()).unwrap(),
    );
    let q: Vec<i8> = (0..32 * 64).map(|i| ((i * 7 % 15) as i8) - 7).collect();
    g.initializers
        .insert("wq".into(), Tensor::from_vec(vec![32, 64], q).unwrap());
    g.initializers.insert(
        "wq_scale".into(),
        Tensor::from_vec(vec![32], vec![0.01f32; 32]).unwrap(),
    );
    g.initializers.insert(
        "wq_zero".into(),
        Tensor::from_vec(vec![32], vec![0i8; 32]).unwrap(),
    );
    g.initializers.insert(
        "nib".into(),
        Tensor::new(vec![5], TensorData::I4(vec![-8, -1, 0, 3, 7])).unwrap(),
    );
    g.nodes.push(
        Node::new(
            "dq",
            "DequantizeLinear",
            &["wq", "wq_scale", "wq_zero"],
            &["wdq"],
        )
        .with("axis", crate::Attr::Int(0)),
    );
    g.nodes
        .push(Node::new("add", "Add", &["w", "wdq"], &["wsum"]));
    g.nodes.push(
        Node::new("fc", "Gemm", &["x", "wsum", "b"], &["y"]).with("transB", crate::Attr::Int(1)),
    );
    g.metadata.insert("note".into(), "kept".into());
    g
}

fn all_encodings(g: &mut Graph) {
    g.encodings
        .insert("w".into(), Encoding::deep_compression(3));
    g.encodings
        .insert("wq".into(), Encoding::Packed { bits: 4 });
    g.encodings
        .insert("nib".into(), Encoding::BitPlanes { bits: 4 });
    g.encodings.insert(
        "b".into(),
        Encoding::Codebook {
            bits: 6,
            fp16: false,
        },
    );
}

#[test]
fn graph_round_trips_with_every_kind_of_tensor() {
    let mut g = sample_graph();
    all_encodings(&mut g);
    let (bytes, info) = to_shrink_bytes(&g, &Provenance::new().with_recipe("[x]")).unwrap();
    assert!(info.check_sizes());
    assert_eq!(info.file_bytes, bytes.len());
    let back = from_shrink_bytes(&bytes).unwrap();
    assert!(back.check_sizes());
    assert_eq!(back.provenance.recipe.as_deref(), Some("[x]"));
    assert_eq!(
        back.provenance.tool,
        format!("shrink {}", env!("CARGO_PKG_VERSION"))
    );
    // the encodings come back resolved (index bits chosen), the rest identical
    let mut resolved = g.clone();
    resolved.encodings = info.graph.encodings.clone();
    // the ONNX graph section names shrink as producer, as ONNX export does
    resolved
        .metadata
        .insert("producer_name".into(), "shrink".into());
    resolved
        .metadata
        .insert("producer_version".into(), env!("CARGO_PKG_VERSION").into());
    assert!(back.graph == resolved, "graph changed in the round trip");
    assert_eq!(
        back.graph.encodings["w"].index_bits().map(|b| b > 0),
        Some(true)
    );
    // re-saving the loaded graph gives the same bytes (deterministic)
    let (again, _) = to_shrink_bytes(&back.graph, &back.provenance).unwrap();
    assert_eq!(again, bytes);
    // per-tensor accounting matches the writer's
    assert_eq!(back.tensors, info.tensors);
    let w = back.tensors.iter().find(|t| t.name == "w").unwrap();
    assert_eq!(
        w.nonzero,
        g.initializers["w"]
            .to_f32_vec()
            .iter()
            .filter(|x| **x != 0.0)
            .count()
    );
}

#[test]
fn every_single_byte_flip_is_detected() {
    let mut g = sample_graph();
    all_encodings(&mut g);
    let (bytes, _) = to_shrink_bytes(&g, &Provenance::new()).unwrap();
    for i in (0..bytes.len()).step_by(3) {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(from_shrink_bytes(&b).is_err(), "flip at byte {i}");
    }
    for cut in (0..bytes.len()).step_by(7) {
        assert!(from_shrink_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn errors_name_file_and_section() {
    let dir = std::env::temp_dir().join(format!("shrink-container-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.shrink");
    let g = sample_graph();
    let info = save_shrink(&g, &Provenance::new(), &path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        info.file_bytes
    );
    assert!(is_shrink_file(&path));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1; // inside the last tensor ("nib")
    std::fs::write(&path, &bytes).unwrap();
    let e = load_shrink(&path).map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("m.shrink") && e.contains("tensor 'nib'") && e.contains("checksum"),
        "{e}"
    );
    // a failing save leaves neither the destination nor a temporary file
    let out = dir.join("bad.shrink");
    let mut g = sample_graph();
    g.encodings.insert(
        "w".into(),
        Encoding::Codebook {
            bits: 2,
            fp16: false,
        },
    );
    let e = save_shrink(&g, &Provenance::new(), &out)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.shrink") && e.contains("tensor 'w'"), "{e}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn try_enc_on(g: &Graph, name: &str, e: Encoding) -> String {
    let mut g = g.clone();
    g.encodings.insert(name.into(), e);
    to_shrink_bytes(&g, &Provenance::new())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn refusals_are_clear() {
    let g = sample_graph();
    let try_enc = |name: &str, e: Encoding| {
        let mut g = g.clone();
        g.encodings.insert(name.into(), e);
        to_shrink_bytes(&g, &Provenance::new())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(try_enc("wq", Encoding::Packed { bits: 3 }).contains("does not fit 3-bit"));
    assert!(try_enc("w", Encoding::Packed { bits: 4 }).contains("integer tensor"));
    assert!(try_enc(
        "b",
        Encoding::Codebook {
            bits: 4,
            fp16: false
        }
    )
    .contains("distinct values"));
    assert!(try_enc(
        "b",
        Encoding::Codebook {
            bits: 6,
            fp16: true
        }
    )
    .contains("fp16"));
    let mut g2 = g.clone();
    g2.encodings.insert("nope".into(), Encoding::Dense);
    assert!(to_shrink_bytes(&g2, &Provenance::new())
        .map(|_| ())
        .unwrap_err()
        .to_string()
        .contains("'nope'"));
    assert!(from_shrink_bytes(b"not a shrink file").is_err());
    // an integer tensor too wide for 4-bit codes names the element
    let mut g3 = g.clone();
    g3.initializers.insert(
        "wq".into(),
        Tensor::from_vec(vec![2], vec![3i8, 100]).unwrap(),
    );
    assert!(try_enc_on(&g3, "wq", Encoding::Packed { bits: 4 }).contains("element 1 = 100"));
}

/// The encoding of a random tensor decodes to the same bits, and the stored
/// payload of fixed-width encodings has exactly the size the format says.
fn round_trip(t: &Tensor, enc: &Encoding) -> std::result::Result<EncodedTensor, String> {
    let e = encode_tensor(t, enc).map_err(|e| e.to_string())?;
    let (data, _) = decode_tensor(t.dtype(), t.shape(), &e.encoding, &e.payload).unwrap();
    let back = Tensor::new(t.shape().to_vec(), data).unwrap();
    assert_eq!(
        elements::to_patterns(back.data()).unwrap(),
        elements::to_patterns(t.data()).unwrap(),
        "{enc}"
    );
    Ok(e)
}

fn sparse_f32(rows: usize, cols: usize, density: f64, levels: usize, seed: u64) -> Tensor {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            if (next() % 10_000) as f64 / 10_000.0 < density {
                (next() % levels as u64) as f32 * 0.1 - 0.7
            } else {
                0.0
            }
        })
        .map(|x| if x == 0.0 { 0.05 } else { x })
        .map(|x| if (x * 100.0).round() == 5.0 { 0.0 } else { x })
        .collect();
    Tensor::from_vec(vec![rows, cols], v).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sparse_codebook_huffman_round_trip(rows in 1usize..20, cols in 1usize..80, density in 0.0f64..1.0, levels in 1usize..15, seed in any::<u64>(), b in 0u8..9, cm in any::<bool>()) {
        let t = sparse_f32(rows, cols, density, levels, seed);
        for values in [Encoding::Dense, Encoding::Codebook { bits: 4, fp16: false }, Encoding::Codebook { bits: 4, fp16: true }] {
            let csr = Encoding::Csr { index_bits: b, values: Box::new(values.clone()), column_major: cm };
            for enc in [csr.clone(), Encoding::Huffman { inner: Box::new(csr) }] {
                match round_trip(&t, &enc) {
                    Ok(e) if !enc.is_huffman() => {
                        // exact size: entries × (index bits + value bits) in the streams
                        let entries = e.streams[0].symbols;
                        let ib = e.encoding.index_bits().unwrap() as usize;
                        prop_assert_eq!(e.streams[0].stored_bytes, (entries * ib).div_ceil(8));
                        if b == 0 {
                            // the chosen width is no worse than any other
                            for other in 1..=16u8 {
                                let alt = Encoding::Csr { index_bits: other, values: Box::new(values.clone()), column_major: cm };
                                if let Ok(a) = encode_tensor(&t, &alt) {
                                    prop_assert!(e.payload.len() <= a.payload.len(), "{} vs {}", e.payload.len(), a.payload.len());
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    // fp16 centroids of non-fp16 values and full codebooks are refused, never wrong
                    Err(msg) => prop_assert!(msg.contains("fp16") || msg.contains("codebook") || msg.contains("no relative"), "{}", msg),
                }
            }
        }
    }

    #[test]
    fn integer_encodings_round_trip(v in proptest::collection::vec(-8i8..8, 1..300), bits in 4u8..=8) {
        let t = Tensor::from_vec(vec![v.len()], v.clone()).unwrap();
        for enc in [
            Encoding::Dense,
            Encoding::Packed { bits },
            Encoding::Packed { bits: 0 },
            Encoding::BitPlanes { bits },
            Encoding::Codebook { bits: 4, fp16: false },
            Encoding::Huffman { inner: Box::new(Encoding::Packed { bits }) },
            Encoding::Huffman { inner: Box::new(Encoding::Dense) },
            Encoding::Csr { index_bits: 3, values: Box::new(Encoding::Packed { bits }), column_major: false },
            Encoding::Huffman { inner: Box::new(Encoding::Csr { index_bits: 0, values: Box::new(Encoding::Packed { bits: 4 }), column_major: false }) },
        ] {
            let e = round_trip(&t, &enc).unwrap();
            if let Encoding::Packed { bits: b } = e.encoding {
                // one length varint + exactly ⌈n·b/8⌉ bytes
                let k = (v.len() * b as usize).div_ceil(8);
                prop_assert_eq!(e.payload.len(), k + if k < 128 { 1 } else { 2 });
            }
        }
        let u: Vec<u8> = v.iter().map(|&x| (x + 8) as u8).collect();
        let t = Tensor::from_vec(vec![u.len()], u).unwrap();
        round_trip(&t, &Encoding::Packed { bits: 4 }).unwrap();
        round_trip(&t, &Encoding::BitPlanes { bits: 4 }).unwrap();
    }
}

#[test]
fn all_dtypes_dense_round_trip() {
    use half::{bf16, f16};
    let ts = vec![
        Tensor::from_vec(vec![3], vec![1.5f32, -0.0, f32::NAN]).unwrap(),
        Tensor::from_vec(vec![2], vec![1.5f64, -2.0]).unwrap(),
        Tensor::from_vec(vec![2], vec![f16::from_f32(1.5), f16::NEG_ZERO]).unwrap(),
        Tensor::from_vec(vec![1], vec![bf16::from_f32(3.0)]).unwrap(),
        Tensor::from_vec(vec![2], vec![i64::MIN, 5i64]).unwrap(),
        Tensor::from_vec(vec![2], vec![u16::MAX, 1u16]).unwrap(),
        Tensor::from_vec(vec![3], vec![true, false, true]).unwrap(),
        Tensor::new(vec![3], TensorData::U4(vec![15, 0, 9])).unwrap(),
        Tensor::new(vec![2], TensorData::String(vec!["a".into(), "bé".into()])).unwrap(),
        Tensor::new(vec![0], TensorData::F32(vec![])).unwrap(),
    ];
    for t in ts {
        let e = encode_tensor(&t, &Encoding::Dense).unwrap();
        let (d, _) = decode_tensor(t.dtype(), t.shape(), &e.encoding, &e.payload).unwrap();
        match (d, t.data()) {
            (TensorData::F32(a), TensorData::F32(b)) => assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            ),
            (d, b) => assert_eq!(&d, b),
        }
    }
}

/// The sample graph with a QDQ bias: int32 codes, scale `s_x · s_w[c]`
/// (fp16-exact weight scales), zero points all 0.
fn compact_graph() -> Graph {
    let mut g = sample_graph();
    let sw: Vec<f32> = (0..32)
        .map(|c| half::f16::from_f32(0.003 + c as f32 * 1.7e-4).to_f32())
        .collect();
    let sx = 0.023_517_f32;
    g.initializers.insert(
        "wq_scale".into(),
        Tensor::from_vec(vec![32], sw.clone()).unwrap(),
    );
    g.initializers.insert(
        "x_scale".into(),
        Tensor::from_vec(vec![], vec![sx]).unwrap(),
    );
    g.initializers.insert(
        "bq".into(),
        Tensor::from_vec(
            vec![32],
            (0..32).map(|i| i * 91 - 1400).collect::<Vec<i32>>(),
        )
        .unwrap(),
    );
    g.initializers.insert(
        "bq_scale".into(),
        Tensor::from_vec(vec![32], sw.iter().map(|&s| sx * s).collect()).unwrap(),
    );
    g.initializers.insert(
        "bq_zero".into(),
        Tensor::from_vec(vec![32], vec![0i32; 32]).unwrap(),
    );
    g.encodings.insert("wq_scale".into(), Encoding::Fp16);
    g.encodings.insert("wq_zero".into(), Encoding::Constant);
    g.encodings.insert("bq_zero".into(), Encoding::Constant);
    g.encodings.insert(
        "bq_scale".into(),
        Encoding::Product {
            a: "x_scale".into(),
            b: "wq_scale".into(),
        },
    );
    g
}

fn without_producer(back: &Graph) -> Graph {
    let mut b = back.clone();
    b.metadata.remove("producer_name");
    b.metadata.remove("producer_version");
    b
}

#[test]
fn version_2_encodings_and_bundle_round_trip_bit_exactly() {
    let g = compact_graph();
    for bundle_below in [0, 200] {
        let opts = WriteOptions { bundle_below };
        let (bytes, info) = to_shrink_bytes_with(&g, &Provenance::new(), &opts).unwrap();
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
        assert!(info.check_sizes());
        let back = from_shrink_bytes(&bytes).unwrap();
        assert!(back.check_sizes());
        assert_eq!(back.version, 2);
        assert_eq!(back.tensors, info.tensors);
        assert_eq!(back.bundle_bytes, info.bundle_bytes);
        let b = without_producer(&back.graph);
        for (k, t) in &g.initializers {
            let u = &b.initializers[k];
            assert_eq!(u.dtype(), t.dtype(), "{k}");
            assert_eq!(u.shape(), t.shape(), "{k}");
            let (p, q) = (
                elements::to_patterns(t.data()).unwrap(),
                elements::to_patterns(u.data()).unwrap(),
            );
            assert_eq!(p, q, "{k} changed");
        }
        assert_eq!(b.encodings, info.graph.encodings);
        // what the derived and constant tensors cost
        let cost = |n: &str| {
            info.tensors
                .iter()
                .find(|t| t.name == n)
                .unwrap()
                .stored_bytes
        };
        let plain = to_shrink_bytes(&sample_graph(), &Provenance::new())
            .unwrap()
            .1;
        let plain_zero = plain
            .tensors
            .iter()
            .find(|t| t.name == "wq_zero")
            .unwrap()
            .stored_bytes;
        assert!(cost("wq_zero") < plain_zero, "constant is smaller");
        if bundle_below == 0 {
            assert!(cost("bq_scale") < 64, "a product stores no elements");
            assert_eq!(info.bundle_bytes, 0);
        } else {
            assert!(info.bundle_bytes > 0);
            let in_bundle = info.tensors.iter().filter(|t| t.bundled).count();
            assert!(in_bundle >= 5, "{in_bundle} bundled");
            // one deflated section is smaller than the sections it replaces
            let unbundled = to_shrink_bytes(&g, &Provenance::new()).unwrap().1;
            assert!(info.file_bytes < unbundled.file_bytes);
        }
        // deterministic re-save
        let (again, _) = to_shrink_bytes_with(&back.graph, &back.provenance, &opts).unwrap();
        assert_eq!(again, bytes);
        // every corruption is caught
        for i in (0..bytes.len()).step_by(5) {
            let mut c = bytes.clone();
            c[i] ^= 0x04;
            assert!(from_shrink_bytes(&c).is_err(), "flip at byte {i}");
        }
        for cut in (0..bytes.len()).step_by(11) {
            assert!(from_shrink_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn version_1_files_are_still_written_and_read() {
    let g = sample_graph();
    let (bytes, info) = to_shrink_bytes(&g, &Provenance::new()).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
    assert_eq!(info.version, 1);
    assert_eq!(from_shrink_bytes(&bytes).unwrap().version, 1);
    // a future version is refused with a clear message
    let mut b = bytes.clone();
    b[8] = 3;
    let e = from_shrink_bytes(&b).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("version 3"), "{e}");
}

#[test]
fn version_2_refusals_are_clear() {
    let g = compact_graph();
    let e = try_enc_on(&g, "b", Encoding::Fp16);
    assert!(e.contains("tensor 'b'") && e.contains("fp16"), "{e}");
    let e = try_enc_on(&g, "wq", Encoding::Constant);
    assert!(
        e.contains("tensor 'wq'") && e.contains("not a constant"),
        "{e}"
    );
    let wrong = Encoding::Product {
        a: "x_scale".into(),
        b: "b".into(),
    };
    let e = try_enc_on(&g, "bq_scale", wrong);
    assert!(e.contains("differs"), "{e}");
    let missing = Encoding::Product {
        a: "nope".into(),
        b: "wq_scale".into(),
    };
    let e = try_enc_on(&g, "bq_scale", missing);
    assert!(
        e.contains("'nope'") && e.contains("not a stored tensor"),
        "{e}"
    );
    // a product of a product
    let mut g2 = g.clone();
    g2.initializers.insert(
        "p2".into(),
        Tensor::from_vec(
            vec![32],
            g.initializers["bq_scale"]
                .to_f32_vec()
                .iter()
                .map(|v| v * 0.5)
                .collect(),
        )
        .unwrap(),
    );
    g2.initializers.insert(
        "half".into(),
        Tensor::from_vec(vec![], vec![0.5f32]).unwrap(),
    );
    let e = try_enc_on(
        &g2,
        "p2",
        Encoding::Product {
            a: "bq_scale".into(),
            b: "half".into(),
        },
    );
    assert!(e.contains("itself derived"), "{e}");
}
