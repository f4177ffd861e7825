//! The safetensors reader against a file whose element bytes PyTorch produced
//! (fixtures/make_safetensors_fixture.py) and against the real MiniLM checkpoint.

use shrink_graph::safetensors::SafeTensors;
use shrink_tensor::{bf16, f16, DType};
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dtypes.safetensors")
}

fn base(n: usize) -> impl Iterator<Item = f64> {
    (0..n).map(|i| i as f64)
}

#[test]
fn reads_every_dtype_as_pytorch_wrote_it() {
    let st = SafeTensors::open(fixture()).unwrap();
    assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
    assert_eq!(st.tensors().len(), 10);
    let info = st.info("t.f32").unwrap();
    assert_eq!((info.dtype, info.shape.clone()), (DType::F32, vec![2, 3]));

    let f32s: Vec<f32> = base(6).map(|v| (v * 0.75 - 2.0) as f32).collect();
    assert_eq!(
        st.tensor("t.f32").unwrap().as_slice::<f32>().unwrap(),
        &f32s[..]
    );
    let f64s: Vec<f64> = base(3).map(|v| v * 0.75 - 2.0).collect();
    assert_eq!(
        st.tensor("t.f64").unwrap().as_slice::<f64>().unwrap(),
        &f64s[..]
    );
    let f16s: Vec<f16> = base(4)
        .map(|v| f16::from_f64(v * 0.75 - 2.0 + 0.1))
        .collect();
    let t = st.tensor("t.f16").unwrap();
    assert_eq!(t.shape(), &[2, 2]);
    assert_eq!(t.as_slice::<f16>().unwrap(), &f16s[..]);
    let bf16s: Vec<bf16> = base(5)
        .map(|v| bf16::from_f64(v * 0.75 - 2.0 + 0.1))
        .collect();
    assert_eq!(
        st.tensor("t.bf16").unwrap().as_slice::<bf16>().unwrap(),
        &bf16s[..]
    );
    let ints: Vec<i64> = (0..4).map(|i| i * 3 - 5).collect();
    assert_eq!(
        st.tensor("t.i64").unwrap().as_slice::<i64>().unwrap(),
        &ints[..]
    );
    let i32s: Vec<i32> = ints.iter().map(|&v| v as i32).collect();
    assert_eq!(
        st.tensor("t.i32").unwrap().as_slice::<i32>().unwrap(),
        &i32s[..]
    );
    assert_eq!(
        st.tensor("t.i16").unwrap().as_slice::<i16>().unwrap(),
        &[-5, -2, 1]
    );
    assert_eq!(
        st.tensor("t.i8").unwrap().as_slice::<i8>().unwrap(),
        &[-5, -2, 1, 4]
    );
    assert_eq!(
        st.tensor("t.u8").unwrap().as_slice::<u8>().unwrap(),
        &[0, 3, 6, 9, 12, 15]
    );
    assert_eq!(
        st.tensor("t.bool").unwrap().as_slice::<bool>().unwrap(),
        &[false, true, false]
    );
    // Our writer's bytes read back identically, tensor for tensor.
    let all = st.load_all().unwrap();
    let refs: Vec<(&str, &shrink_tensor::Tensor)> =
        all.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bytes = shrink_graph::safetensors::to_bytes(&refs).unwrap();
    let p = std::env::temp_dir().join(format!("shrink-st-rt-{}.safetensors", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    let again = SafeTensors::open(&p).unwrap().load_all().unwrap();
    assert_eq!(again, all);
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn lists_the_minilm_checkpoint() {
    let cache = std::env::var_os("SHRINK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/shrink"));
    let path = cache.join("minilm/model.safetensors");
    assert!(
        path.is_file(),
        "{} missing; run scripts/fetch-assets minilm",
        path.display()
    );
    let st = SafeTensors::open(&path).unwrap();
    // 5 embedding tensors + position_ids, 16 per layer × 6, pooler weight + bias.
    assert_eq!(st.tensors().len(), 6 + 16 * 6 + 2);
    let w = st.info("embeddings.word_embeddings.weight").unwrap();
    assert_eq!((w.dtype, w.shape.clone()), (DType::F32, vec![30522, 384]));
    let q = st
        .info("encoder.layer.5.attention.self.query.weight")
        .unwrap();
    assert_eq!(q.shape, vec![384, 384]);
    // position_ids are, by construction in BertEmbeddings, arange(512).
    let pos = st.tensor("embeddings.position_ids").unwrap();
    assert_eq!(pos.shape(), &[1, 512]);
    assert_eq!(pos.to_i64_vec(), (0..512).collect::<Vec<i64>>());
    let params: usize = st
        .tensors()
        .iter()
        .filter(|i| i.dtype == DType::F32)
        .map(|i| i.shape.iter().product::<usize>())
        .sum();
    // The model card's 22.7M parameters (pooler included).
    assert_eq!((params as f64 / 1e5).round(), 227.0, "{params}");
}
