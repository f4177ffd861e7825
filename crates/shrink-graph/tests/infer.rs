//! Shape inference against onnx's own shape inference (fashion models,
//! fixture from scripts/onnx-fixtures.py) and against the real output shapes
//! of the ONNX backend node tests.

mod common;

use serde_json::Value;
use shrink_graph::{infer_shapes, onnx, value_types, DType, Dim, Graph};

/// Forgets every inferred or declared type except the graph inputs'.
fn strip_types(g: &mut Graph) {
    g.value_info.clear();
    for o in &mut g.outputs {
        o.dtype = None;
        o.shape = None;
    }
}

#[test]
fn lenet5_conv_keeps_symbolic_batch() {
    let mut g = onnx::load(common::fashion("lenet5.onnx")).unwrap();
    strip_types(&mut g);
    infer_shapes(&mut g).unwrap();
    let n = Dim::Symbol("N".into());
    let k = Dim::Known;
    let conv1 = g.nodes.iter().find(|n| n.op_type == "Conv").unwrap();
    let vi = &g.value_info[&conv1.outputs[0]];
    assert_eq!(vi.dtype, Some(DType::F32));
    assert_eq!(vi.shape, Some(vec![n.clone(), k(6), k(28), k(28)]));
    assert_eq!(g.outputs[0].shape, Some(vec![n, k(10)]));
}

#[test]
fn fashion_models_match_onnx_shape_inference() {
    let text = std::fs::read_to_string(common::fixture("fashion_onnx.json")).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let mut compared = 0;
    for (file, want) in fx["models"].as_object().unwrap() {
        let mut g = onnx::load(common::fashion(file)).unwrap();
        strip_types(&mut g);
        infer_shapes(&mut g).unwrap();
        let types = value_types(&g);
        for (name, w) in want["inferred"].as_object().unwrap() {
            let got = types
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{file}: {name} not inferred"));
            let code = w["elem_type"].as_i64().unwrap();
            if code != 0 {
                assert_eq!(
                    got.dtype.map(|d| d.onnx_code() as i64),
                    Some(code),
                    "{file}: {name}"
                );
            }
            let Some(dims) = w["dims"].as_array() else {
                continue;
            };
            let shape = got
                .shape
                .as_ref()
                .unwrap_or_else(|| panic!("{file}: {name}: no shape"));
            assert_eq!(shape.len(), dims.len(), "{file}: {name}: rank");
            for (d, wd) in shape.iter().zip(dims) {
                match (wd.as_u64(), wd.as_str()) {
                    (Some(v), _) => assert_eq!(
                        d,
                        &Dim::Known(v as usize),
                        "{file}: {name}: {shape:?} vs {dims:?}"
                    ),
                    // onnx names its own unknowns unk__N; only real symbols must agree.
                    (_, Some(s)) if !s.starts_with("unk__") => {
                        assert_eq!(
                            d,
                            &Dim::Symbol(s.into()),
                            "{file}: {name}: {shape:?} vs {dims:?}"
                        )
                    }
                    _ => {}
                }
            }
            compared += 1;
        }
    }
    assert!(compared > 500, "only {compared} values compared");
}

/// For every backend node test, inferred output types (when fully inferred)
/// equal the stored expected outputs'.
#[test]
fn backend_node_outputs_match_inferred_shapes() {
    let (mut exact, mut partial, mut unknown, mut mismatches) = (0, 0, 0, Vec::new());
    for dir in common::backend_node_tests() {
        let Ok(mut g) = onnx::load(dir.join("model.onnx")) else {
            continue;
        };
        strip_types(&mut g);
        infer_shapes(&mut g).unwrap();
        for (i, out) in g.outputs.iter().enumerate() {
            let pb = dir.join(format!("test_data_set_0/output_{i}.pb"));
            let Ok(t) = onnx::load_tensor_pb(&pb) else {
                continue;
            };
            let want: Vec<Dim> = t.shape().iter().map(|&d| Dim::Known(d)).collect();
            let what = format!("{}: output {i} '{}'", dir.display(), out.name);
            match (&out.shape, out.dtype) {
                (Some(s), _) if s.iter().all(|d| d.known().is_some()) => {
                    if *s != want {
                        mismatches.push(format!("{what}: inferred {s:?}, expected {want:?}"));
                        continue;
                    }
                    if let Some(d) = out.dtype {
                        let stored = t.dtype();
                        if d != stored && (d, stored) != (DType::BF16, DType::U16) {
                            mismatches.push(format!("{what}: inferred {d}, stored {stored}"));
                            continue;
                        }
                    }
                    exact += 1;
                }
                (Some(s), _) if s.len() == want.len() => partial += 1,
                (Some(s), _) => mismatches.push(format!(
                    "{what}: inferred rank {}, expected {want:?}",
                    s.len()
                )),
                // Mostly ops whose shape depends on a runtime input (Reshape,
                // Resize, Reduce* with axes fed as graph inputs) or ops out of scope.
                (None, _) => unknown += 1,
            }
        }
    }
    eprintln!("backend outputs: {exact} exact, {partial} partial, {unknown} unknown");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(exact >= 880, "only {exact} outputs fully inferred");
}

/// Inference and statistics on hostile attribute values (every int
/// attribute of every backend model set to an extreme) return, never panic.
#[test]
fn extreme_attributes_never_panic() {
    use shrink_graph::{analysis, Attr};
    for dir in common::backend_node_tests() {
        let Ok(g) = onnx::load(dir.join("model.onnx")) else {
            continue;
        };
        for v in [i64::MAX, i64::MIN, 0, -1, 1 << 40] {
            let mut h = g.clone();
            for n in &mut h.nodes {
                for a in n.attrs.values_mut() {
                    match a {
                        Attr::Int(x) => *x = v,
                        Attr::Ints(xs) => xs.iter_mut().for_each(|x| *x = v),
                        _ => {}
                    }
                }
            }
            infer_shapes(&mut h).unwrap();
            let _ = analysis::layer_stats(&h);
            let _ = shrink_graph::validate(&h);
        }
    }
}
