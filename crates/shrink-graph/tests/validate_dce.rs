//! validate() accepts every real model we have and names node and value for
//! each kind of breakage; eliminate_dead_nodes() removes exactly the dead part.

mod common;

use shrink_graph::{
    eliminate_dead_nodes, onnx, validate, Attr, DType, Dim, Graph, Node, Tensor, ValueInfo,
};

fn lenet5() -> Graph {
    onnx::load(common::fashion("lenet5.onnx")).unwrap()
}

fn err(g: &Graph) -> String {
    validate(g)
        .expect_err("graph should be invalid")
        .to_string()
}

#[test]
fn real_models_validate() {
    for e in std::fs::read_dir(common::fashion_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "onnx") {
            let g = onnx::load(&p).unwrap();
            validate(&g).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
    let mut n = 0;
    for dir in common::backend_node_tests() {
        if let Ok(g) = onnx::load(dir.join("model.onnx")) {
            validate(&g).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            n += 1;
        }
    }
    assert!(n > 1200);
}

#[test]
fn dangling_input_names_node_and_value() {
    let mut g = lenet5();
    let i = g.nodes.iter().position(|n| n.op_type == "Gemm").unwrap();
    g.nodes[i].inputs[0] = "nowhere".into();
    let e = err(&g);
    assert!(
        e.contains(&g.nodes[i].name) && e.contains("'nowhere'"),
        "{e}"
    );
}

#[test]
fn duplicate_producer_is_reported() {
    let mut g = lenet5();
    let out = g.nodes[0].outputs[0].clone();
    let last = g.nodes.len() - 1;
    g.nodes[last].outputs[0] = out.clone();
    let e = err(&g);
    assert!(e.contains(&out) && e.contains("also produced"), "{e}");
}

#[test]
fn cycle_and_misorder_are_told_apart() {
    // a = Relu(b); b = Relu(a): a cycle.
    let mut g = Graph::default();
    g.inputs
        .push(ValueInfo::new("x", DType::F32, vec![Dim::Known(2)]));
    g.nodes.push(Node::new("r1", "Relu", &["b"], &["a"]));
    g.nodes.push(Node::new("r2", "Relu", &["a"], &["b"]));
    g.outputs.push(ValueInfo::unknown("b"));
    let e = err(&g);
    assert!(e.contains("cycle") && e.contains("'r1'"), "{e}");

    // Same nodes without the cycle but in the wrong order.
    let mut g = lenet5();
    g.nodes.swap(0, 1);
    let e = err(&g);
    assert!(e.contains("topological order"), "{e}");
    g.sort_topologically().unwrap();
    validate(&g).unwrap();
}

#[test]
fn output_never_produced() {
    let mut g = lenet5();
    g.outputs[0].name = "ghost".into();
    let e = err(&g);
    assert!(e.contains("'ghost'") && e.contains("never produced"), "{e}");
}

#[test]
fn dtype_mismatch_is_found_by_inference() {
    let mut g = Graph::default();
    g.inputs
        .push(ValueInfo::new("x", DType::F32, vec![Dim::Known(3)]));
    g.initializers.insert(
        "k".into(),
        Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap(),
    );
    // The f32 operand reaches Add through Relu: only inference knows its type.
    g.nodes.push(Node::new("relu", "Relu", &["x"], &["r"]));
    g.nodes.push(Node::new("add", "Add", &["r", "k"], &["y"]));
    g.outputs.push(ValueInfo::unknown("y"));
    let e = err(&g);
    assert!(
        e.contains("'add'") && e.contains("f32") && e.contains("i64"),
        "{e}"
    );
}

#[test]
fn constant_without_value() {
    let mut g = Graph::default();
    g.nodes.push(Node::new("c", "Constant", &[], &["y"]));
    g.outputs.push(ValueInfo::unknown("y"));
    let e = err(&g);
    assert!(e.contains("'c'") && e.contains("no value"), "{e}");
    g.nodes[0]
        .attrs
        .insert("value_float".into(), Attr::Float(1.0));
    validate(&g).unwrap();
}

/// If with a branch that reads an outer value: fine; with a misspelt
/// capture, the error names the subgraph and the value.
#[test]
fn subgraph_captures_follow_scope() {
    let branch = |read: &str| {
        let mut b = Graph::default();
        b.nodes.push(Node::new("id", "Identity", &[read], &["o"]));
        b.outputs.push(ValueInfo::unknown("o"));
        b
    };
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::new("c", DType::Bool, vec![]));
    g.inputs
        .push(ValueInfo::new("x", DType::F32, vec![Dim::Known(2)]));
    g.nodes.push(
        Node::new("if", "If", &["c"], &["y"])
            .with("then_branch", Attr::Graph(Box::new(branch("x"))))
            .with("else_branch", Attr::Graph(Box::new(branch("x")))),
    );
    g.outputs.push(ValueInfo::unknown("y"));
    validate(&g).unwrap();
    g.nodes[0]
        .attrs
        .insert("else_branch".into(), Attr::Graph(Box::new(branch("xx"))));
    let e = err(&g);
    assert!(e.contains("'xx'") && e.contains("if.else_branch"), "{e}");
}

#[test]
fn dead_nodes_and_initializers_go() {
    let orig = lenet5();
    let mut g = orig.clone();
    // A dead chain: Relu(input) -> Mul(., w_dead); plus an unused initializer.
    g.initializers.insert(
        "w_dead".into(),
        Tensor::from_vec(vec![1], vec![2.0f32]).unwrap(),
    );
    g.initializers.insert(
        "unused".into(),
        Tensor::from_vec(vec![1], vec![3.0f32]).unwrap(),
    );
    g.inputs
        .push(ValueInfo::new("unused", DType::F32, vec![Dim::Known(1)]));
    g.nodes
        .insert(0, Node::new("dead_relu", "Relu", &["input"], &["d1"]));
    g.nodes
        .push(Node::new("dead_mul", "Mul", &["d1", "w_dead"], &["d2"]));
    validate(&g).unwrap();
    assert_eq!(eliminate_dead_nodes(&mut g), 2);
    assert_eq!(g, orig);
    assert_eq!(eliminate_dead_nodes(&mut g), 0);

    // On real models DCE keeps the graph valid and its interface intact.
    for dir in common::backend_node_tests() {
        if let Ok(mut g) = onnx::load(dir.join("model.onnx")) {
            let before = g.clone();
            let removed = eliminate_dead_nodes(&mut g);
            validate(&g).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            assert_eq!(g.outputs, before.outputs);
            assert!(before.nodes.len() - g.nodes.len() <= removed);
        }
    }
}

#[test]
fn dce_keeps_values_subgraphs_capture() {
    let mut then_b = Graph::default();
    then_b
        .nodes
        .push(Node::new("use_w", "Identity", &["w"], &["o"]));
    then_b.outputs.push(ValueInfo::unknown("o"));
    let mut else_b = Graph::default();
    else_b
        .nodes
        .push(Node::new("use_x", "Identity", &["x"], &["o"]));
    else_b.outputs.push(ValueInfo::unknown("o"));
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::new("c", DType::Bool, vec![]));
    g.inputs
        .push(ValueInfo::new("x", DType::F32, vec![Dim::Known(1)]));
    g.initializers
        .insert("w".into(), Tensor::from_vec(vec![1], vec![1.0f32]).unwrap());
    g.nodes.push(
        Node::new("if", "If", &["c"], &["y"])
            .with("then_branch", Attr::Graph(Box::new(then_b)))
            .with("else_branch", Attr::Graph(Box::new(else_b))),
    );
    g.outputs.push(ValueInfo::unknown("y"));
    assert_eq!(eliminate_dead_nodes(&mut g), 0);
    assert!(g.initializers.contains_key("w"));
    validate(&g).unwrap();
}
