//! Where the tests' real models live.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared fashion models: `$SHRINK_SHARED/data/fashion`, else the first
/// `shared/data/fashion` found beside the workspace or one of its ancestors
/// (CI lays a copy of shared/ beside the clone).
pub fn fashion_dir() -> PathBuf {
    if let Ok(s) = std::env::var("SHRINK_SHARED") {
        return PathBuf::from(s).join("data/fashion");
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for anc in here.ancestors() {
        let cand = anc.join("shared/data/fashion");
        if cand.join("lenet5.onnx").is_file() {
            return cand;
        }
    }
    panic!(
        "fashion models not found: set SHRINK_SHARED to the shared/ directory \
         (it must hold data/fashion/*.onnx)"
    );
}

pub fn fashion(name: &str) -> PathBuf {
    fashion_dir().join(name)
}

/// `$SHRINK_CACHE/onnx-backend/node` (default ~/.cache/shrink).
pub fn backend_node_dir() -> PathBuf {
    let cache = std::env::var("SHRINK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME is not set")).join(".cache/shrink")
        });
    let d = cache.join("onnx-backend/node");
    assert!(
        d.is_dir(),
        "{} is missing: run scripts/fetch-assets onnx",
        d.display()
    );
    d
}

/// Every node test directory holding a model.onnx, sorted.
pub fn backend_node_tests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(backend_node_dir())
        .expect("read backend node dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    v
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh, empty scratch directory for one test (removed by [`TempDir`]'s drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("shrink-graph-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Models of the backend data's other suites: light/*.onnx (real CNNs with
/// weights replaced by ConstantOfShape), simple/, pytorch-converted/ and
/// pytorch-operator/ (one model.onnx per test directory).
pub fn backend_other_models() -> Vec<PathBuf> {
    let root = backend_node_dir()
        .parent()
        .expect("onnx-backend dir")
        .to_path_buf();
    let mut v = Vec::new();
    for suite in ["light", "simple", "pytorch-converted", "pytorch-operator"] {
        let Ok(rd) = std::fs::read_dir(root.join(suite)) else {
            continue;
        };
        for e in rd {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "onnx") {
                v.push(p);
            } else if p.join("model.onnx").is_file() {
                v.push(p.join("model.onnx"));
            }
        }
    }
    v.sort();
    v
}

/// `$SHRINK_CACHE/minilm` (all-MiniLM-L6-v2 config, tokenizer, safetensors).
pub fn minilm_dir() -> PathBuf {
    let cache = std::env::var("SHRINK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME is not set")).join(".cache/shrink")
        });
    let d = cache.join("minilm");
    assert!(
        d.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-assets minilm",
        d.display()
    );
    d
}
