//! Dev-only: runs /tmp/nnfix/*.txt (converted ONNX backend node tests).
use shrink_graph::{Attr, Graph, Node, ValueInfo};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::{DType, Tensor, TensorData};

fn parse_tensor(toks: &[&str]) -> Option<Tensor> {
    let dt = toks[0];
    let rank: usize = toks[1].parse().ok()?;
    let shape: Vec<usize> = toks[2..2 + rank]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let vals = &toks[2 + rank..];
    let f = || {
        vals.iter()
            .map(|s| s.parse::<f64>().unwrap())
            .collect::<Vec<f64>>()
    };
    let i = || {
        vals.iter()
            .map(|s| s.parse::<i64>().unwrap())
            .collect::<Vec<i64>>()
    };
    let ti = || Tensor::from_vec(shape.clone(), i()).unwrap();
    Some(match dt {
        "f32" => Tensor::from_vec(shape.clone(), f()).ok()?.cast(DType::F32),
        "f64" => Tensor::from_vec(shape.clone(), f()).ok()?,
        "f16" => Tensor::from_vec(shape.clone(), f()).ok()?.cast(DType::F16),
        "u8" => ti().cast(DType::U8),
        "i8" => ti().cast(DType::I8),
        "u16" => ti().cast(DType::U16),
        "i16" => ti().cast(DType::I16),
        "i32" => ti().cast(DType::I32),
        "i64" => ti(),
        "u4" => Tensor::new(
            shape.clone(),
            TensorData::U4(i().iter().map(|&x| x as u8).collect()),
        )
        .unwrap(),
        "i4" => Tensor::new(
            shape.clone(),
            TensorData::I4(i().iter().map(|&x| x as i8).collect()),
        )
        .unwrap(),
        "bool" => ti().cast(DType::Bool),
        _ => return None,
    })
}

fn run_one(text: &str) -> Result<(), String> {
    let mut node = Node::default();
    let mut g = Graph::default();
    let mut feeds = vec![];
    let mut expect = vec![];
    for line in text.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks[0] {
            "op" => {
                node.op_type = toks[1].into();
                if toks[2] != "-" {
                    node.domain = toks[2].into();
                }
                node.name = "n".into();
            }
            "opset" => {
                g.opsets.insert(String::new(), toks[1].parse().unwrap());
            }
            "attr" => {
                let name = toks[1].to_string();
                let v = &toks[3..];
                let a = match toks[2] {
                    "int" => Attr::Int(v[0].parse().unwrap()),
                    "float" => Attr::Float(v[0].parse().unwrap()),
                    "ints" => Attr::Ints(v.iter().map(|s| s.parse().unwrap()).collect()),
                    "floats" => Attr::Floats(v.iter().map(|s| s.parse().unwrap()).collect()),
                    "string" => Attr::String(v.join(" ")),
                    "strings" => Attr::Strings(v.iter().map(|s| s.to_string()).collect()),
                    k => return Err(format!("attr kind {k}")),
                };
                node.attrs.insert(name, a);
            }
            "nodeinputs" => {
                node.inputs = toks[1..]
                    .iter()
                    .map(|s| {
                        if *s == "-" {
                            String::new()
                        } else {
                            s.to_string()
                        }
                    })
                    .collect()
            }
            "nodeoutputs" => {
                node.outputs = toks[1..]
                    .iter()
                    .map(|s| {
                        if *s == "-" {
                            String::new()
                        } else {
                            s.to_string()
                        }
                    })
                    .collect()
            }
            "input" => {
                let t = parse_tensor(&toks[2..])
                    .ok_or(format!("unsupported input dtype {}", toks[2]))?;
                g.inputs.push(ValueInfo::unknown(toks[1]));
                feeds.push((toks[1].to_string(), t));
            }
            "output" => {
                let t = parse_tensor(&toks[2..])
                    .ok_or(format!("unsupported output dtype {}", toks[2]))?;
                g.outputs.push(ValueInfo::unknown(toks[1]));
                expect.push(t);
            }
            _ => {}
        }
    }
    g.nodes.push(node);
    let s = Session::new(g, SessionOptions { threads: 2 }).map_err(|e| e.to_string())?;
    let got = s.run_named(feeds).map_err(|e| e.to_string())?;
    for (k, (a, b)) in got.iter().zip(&expect).enumerate() {
        if a.shape() != b.shape() {
            return Err(format!(
                "output {k}: shape {:?} vs {:?}",
                a.shape(),
                b.shape()
            ));
        }
        if a.dtype() != b.dtype() {
            return Err(format!("output {k}: dtype {} vs {}", a.dtype(), b.dtype()));
        }
        let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
        for (i, (x, y)) in av.iter().zip(&bv).enumerate() {
            let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-4 + 1e-3 * y.abs();
            if !ok {
                return Err(format!("output {k}[{i}]: got {x}, want {y}"));
            }
        }
    }
    Ok(())
}

#[test]
fn nnfix() {
    let filter = std::env::var("NNFIX").unwrap_or_default();
    let mut names: Vec<_> = std::fs::read_dir("/tmp/nnfix")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let (mut pass, mut fail) = (0, 0);
    for p in names {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if !name.contains(&filter) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        match std::panic::catch_unwind(|| run_one(&text)) {
            Ok(Ok(())) => {
                pass += 1;
                println!("PASS {name}");
            }
            Ok(Err(e)) => {
                fail += 1;
                println!("FAIL {name}: {}", &e[..e.len().min(300)]);
            }
            Err(_) => {
                fail += 1;
                println!("PANIC {name}");
            }
        }
    }
    println!("pass {pass} fail {fail}");
}
