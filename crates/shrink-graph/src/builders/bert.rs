//! BERT encoders (e.g. sentence-transformers' all-MiniLM-L6-v2) from
//! `config.json` + `model.safetensors`.
//!
//! The graph follows Hugging Face's `BertModel` in eval mode op for op:
//!
//! ```text
//! input_ids ─Gather(word)─┐
//!         positions ─Slice(pos)─Add─Add(type row)─LayerNorm─┐
//!                                                          │ ×L: self-attention
//!                                                          │     + residual + LN,
//!                                                          │     GELU MLP
//!                                                          │     + residual + LN
//! attention_mask ─Cast─(1-m)·(-10000)─Unsqueeze─▶ scores  ▼
//!                              last_hidden_state [B,S,H]
//!  masked mean over S ─ L2 normalise ─▶ sentence_embedding [B,H]
//! ```
//!
//! Linear weights are stored transposed (`[in, out]`) so each projection is a
//! plain `MatMul` + `Add`, the form the quantization passes recognise.

use super::{GraphBuilder, Weights};
use crate::safetensors::SafeTensors;
use crate::{Attr, Dim, Graph, GraphError, Result, ValueInfo};
use serde::Deserialize;
use shrink_tensor::{DType, Tensor};
use std::path::Path;

/// The fields of a Hugging Face BERT `config.json` the encoder needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}

impl BertConfig {
    /// Parses and checks `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<BertConfig> {
        let path = path.as_ref();
        let file_err = |msg: String| GraphError::File {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|source| GraphError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let c: BertConfig = serde_json::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        c.check().map_err(file_err)?;
        Ok(c)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_python") {
            return Err(format!(
                "hidden_act '{}' is not supported (only the exact, erf-based 'gelu')",
                self.hidden_act
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Choices that change the graph's interface.
#[derive(Debug, Clone, Default)]
pub struct BertOptions {
    /// Adds a `token_type_ids` input; without it every token is segment 0
    /// (the sentence-encoder case) and row 0 of the type embeddings is a constant.
    pub token_type_ids: bool,
}

/// The additive attention bias for padded positions. Hugging Face's original
/// value: large enough that `exp` underflows to exactly 0 in f32, small enough
/// not to wreck the value range that activation calibration sees.
const MASK_BIAS: f32 = -10000.0;

/// Builds the encoder with `input_ids`/`attention_mask` inputs (i64 [batch, seq]).
pub fn bert_encoder(config: &BertConfig, weights: &dyn Weights) -> Result<Graph> {
    bert_encoder_with(config, weights, &BertOptions::default())
}

/// Reads `config.json` and `model.safetensors` from a model directory and builds the encoder.
pub fn load_sentence_encoder(model_dir: impl AsRef<Path>) -> Result<Graph> {
    let dir = model_dir.as_ref();
    let config = BertConfig::from_file(dir.join("config.json"))?;
    let weights = SafeTensors::open(dir.join("model.safetensors"))?;
    let mut g = bert_encoder(&config, &weights)?;
    g.metadata.insert(
        "source".into(),
        dir.join("model.safetensors").display().to_string(),
    );
    Ok(g)
}

/// Resolves checkpoint names with or without the `bert.` prefix, and the old
/// `gamma`/`beta` LayerNorm names.
struct Names<'a> {
    w: &'a dyn Weights,
    prefix: &'static str,
}

impl Names<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let alt = full
            .strip_suffix(".weight")
            .filter(|s| s.ends_with("LayerNorm"))
            .map(|s| format!("{s}.gamma"))
            .or_else(|| {
                full.strip_suffix(".bias")
                    .filter(|s| s.ends_with("LayerNorm"))
                    .map(|s| format!("{s}.beta"))
            });
        let key = match alt {
            Some(a) if !self.w.contains(&full) && self.w.contains(&a) => a,
            _ => full,
        };
        let t = self.w.get(&key)?;
        if !t.dtype().is_float() {
            return Err(GraphError::Invalid(format!(
                "weight '{key}' is {}, expected a float tensor",
                t.dtype()
            )));
        }
        Ok(if t.dtype() == DType::F32 {
            t
        } else {
            t.cast(DType::F32)
        })
    }

    /// A weight checked against the shape the config implies.
    fn shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.shape() != shape {
            return Err(GraphError::Invalid(format!(
                "weight '{}{name}' has shape {:?}, the config implies {shape:?}",
                self.prefix,
                t.shape()
            )));
        }
        Ok(t)
    }

    /// A PyTorch `Linear` weight `[out, in]`, transposed to `[in, out]`.
    fn linear(&self, name: &str, n_in: usize, n_out: usize) -> Result<Tensor> {
        let w = self.shaped(name, &[n_out, n_in])?;
        let v = w.as_slice::<f32>()?;
        let mut t = vec![0f32; v.len()];
        for o in 0..n_out {
            for i in 0..n_in {
                t[i * n_out + o] = v[o * n_in + i];
            }
        }
        Ok(Tensor::from_vec(vec![n_in, n_out], t)?)
    }
}

fn ints(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).expect("1-d")
}

/// Builds the encoder; see the module docs for the graph's shape.
pub fn bert_encoder_with(
    config: &BertConfig,
    weights: &dyn Weights,
    options: &BertOptions,
) -> Result<Graph> {
    config.check().map_err(GraphError::Invalid)?;
    let prefix = if weights.contains("embeddings.word_embeddings.weight") {
        ""
    } else if weights.contains("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        return Err(GraphError::Invalid(
            "weights have neither 'embeddings.word_embeddings.weight' nor \
             'bert.embeddings.word_embeddings.weight': not a BERT checkpoint"
                .into(),
        ));
    };
    let w = Names { w: weights, prefix };
    let (h, inter, heads, dh) = (
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.head_dim(),
    );
    let eps = config.layer_norm_eps as f32;
    let mut b = GraphBuilder::new("bert_encoder", 17);

    let bs = || vec![Dim::Symbol("batch".into()), Dim::Symbol("seq".into())];
    let g = b.graph_mut();
    g.inputs.push(ValueInfo::new("input_ids", DType::I64, bs()));
    g.inputs
        .push(ValueInfo::new("attention_mask", DType::I64, bs()));
    if options.token_type_ids {
        g.inputs
            .push(ValueInfo::new("token_type_ids", DType::I64, bs()));
    }
    g.outputs.push(ValueInfo::new(
        "last_hidden_state",
        DType::F32,
        vec![
            Dim::Symbol("batch".into()),
            Dim::Symbol("seq".into()),
            Dim::Known(h),
        ],
    ));
    g.outputs.push(ValueInfo::new(
        "sentence_embedding",
        DType::F32,
        vec![Dim::Symbol("batch".into()), Dim::Known(h)],
    ));
    g.metadata
        .insert("producer".into(), "shrink builders::bert".into());

    // Shared constants.
    let one = b.constant("const.one", Tensor::scalar(1f32));
    let half = b.constant("const.half", Tensor::scalar(0.5f32));
    let sqrt2 = b.constant("const.sqrt2", Tensor::scalar(std::f32::consts::SQRT_2));
    let mask_bias = b.constant("const.mask_bias", Tensor::scalar(MASK_BIAS));
    let scale = b.constant("const.attn_scale", Tensor::scalar(1.0 / (dh as f32).sqrt()));
    let heads_shape = b.constant("const.heads_shape", ints(&[0, 0, heads as i64, dh as i64]));
    let merge_shape = b.constant("const.merge_shape", ints(&[0, 0, h as i64]));

    // Embeddings.
    let word = b.constant(
        "embeddings.word_embeddings.weight",
        w.shaped("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
    );
    let pos = b.constant(
        "embeddings.position_embeddings.weight",
        w.shaped(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?,
    );
    let types = w.shaped(
        "embeddings.token_type_embeddings.weight",
        &[config.type_vocab_size, h],
    )?;
    let x = b.op("Gather", &[&word, "input_ids"], "embeddings.word", vec![]);
    // Positions 0..seq: the first `seq` rows of the position table.
    let shape = b.op("Shape", &["input_ids"], "embeddings.ids_shape", vec![]);
    let idx1 = b.constant("const.index1", ints(&[1]));
    let seq = b.op(
        "Gather",
        &[&shape, &idx1],
        "embeddings.seq_len",
        vec![("axis", Attr::Int(0))],
    );
    let zero = b.constant("const.zero1", ints(&[0]));
    let pos_rows = b.op(
        "Slice",
        &[&pos, &zero, &seq, &zero],
        "embeddings.position",
        vec![],
    );
    let x = b.op("Add", &[&x, &pos_rows], "embeddings.word_pos", vec![]);
    let x = if options.token_type_ids {
        let t = b.constant("embeddings.token_type_embeddings.weight", types);
        let te = b.op(
            "Gather",
            &[&t, "token_type_ids"],
            "embeddings.token_type",
            vec![],
        );
        b.op("Add", &[&x, &te], "embeddings.sum", vec![])
    } else {
        let row0 = Tensor::from_vec(vec![h], types.as_slice::<f32>()?[..h].to_vec())?;
        let t = b.constant("embeddings.token_type_embeddings.row0", row0);
        b.op("Add", &[&x, &t], "embeddings.sum", vec![])
    };
    let mut x = layer_norm(&mut b, &w, &x, "embeddings.LayerNorm", eps)?;

    // Attention bias from the mask: (1 - mask) * -10000, shaped [B,1,1,S].
    let mask_f = b.op(
        "Cast",
        &["attention_mask"],
        "mask.float",
        vec![("to", Attr::Int(DType::F32.onnx_code() as i64))],
    );
    let inv = b.op("Sub", &[&one, &mask_f], "mask.inverted", vec![]);
    let bias = b.op("Mul", &[&inv, &mask_bias], "mask.bias", vec![]);
    let axes12 = b.constant("const.axes_1_2", ints(&[1, 2]));
    let bias = b.op("Unsqueeze", &[&bias, &axes12], "mask.bias4d", vec![]);

    for l in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        // Self-attention.
        let proj = |b: &mut GraphBuilder, x: &str, name: &str, n_in, n_out| -> Result<String> {
            let wt = b.constant(
                &format!("{p}.{name}.weight"),
                w.linear(&format!("{p}.{name}.weight"), n_in, n_out)?,
            );
            let bi = b.constant(
                &format!("{p}.{name}.bias"),
                w.shaped(&format!("{p}.{name}.bias"), &[n_out])?,
            );
            let mm = b.op("MatMul", &[x, &wt], &format!("{p}.{name}.matmul"), vec![]);
            Ok(b.op("Add", &[&mm, &bi], &format!("{p}.{name}.out"), vec![]))
        };
        let split = |b: &mut GraphBuilder, t: &str, name: &str, perm: &[i64]| -> String {
            let r = b.op(
                "Reshape",
                &[t, &heads_shape],
                &format!("{p}.attention.{name}.heads"),
                vec![],
            );
            b.op(
                "Transpose",
                &[&r],
                &format!("{p}.attention.{name}.transposed"),
                vec![("perm", Attr::Ints(perm.to_vec()))],
            )
        };
        let q = proj(&mut b, &x, "attention.self.query", h, h)?;
        let k = proj(&mut b, &x, "attention.self.key", h, h)?;
        let v = proj(&mut b, &x, "attention.self.value", h, h)?;
        let q = split(&mut b, &q, "q", &[0, 2, 1, 3]); // [B,nh,S,dh]
        let k = split(&mut b, &k, "k", &[0, 2, 3, 1]); // [B,nh,dh,S]
        let v = split(&mut b, &v, "v", &[0, 2, 1, 3]); // [B,nh,S,dh]
        let s = b.op(
            "MatMul",
            &[&q, &k],
            &format!("{p}.attention.scores"),
            vec![],
        );
        let s = b.op(
            "Mul",
            &[&s, &scale],
            &format!("{p}.attention.scaled"),
            vec![],
        );
        let s = b.op(
            "Add",
            &[&s, &bias],
            &format!("{p}.attention.masked"),
            vec![],
        );
        let probs = b.op(
            "Softmax",
            &[&s],
            &format!("{p}.attention.probs"),
            vec![("axis", Attr::Int(-1))],
        );
        let ctx = b.op(
            "MatMul",
            &[&probs, &v],
            &format!("{p}.attention.context"),
            vec![],
        );
        let ctx = b.op(
            "Transpose",
            &[&ctx],
            &format!("{p}.attention.context_t"),
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let ctx = b.op(
            "Reshape",
            &[&ctx, &merge_shape],
            &format!("{p}.attention.merged"),
            vec![],
        );
        let a = proj(&mut b, &ctx, "attention.output.dense", h, h)?;
        let a = b.op("Add", &[&a, &x], &format!("{p}.attention.residual"), vec![]);
        let a = layer_norm(
            &mut b,
            &w,
            &a,
            &format!("{p}.attention.output.LayerNorm"),
            eps,
        )?;
        // Feed-forward with exact GELU: 0.5·x·(1 + erf(x/√2)).
        let f = proj(&mut b, &a, "intermediate.dense", h, inter)?;
        let d = b.op("Div", &[&f, &sqrt2], &format!("{p}.gelu.div"), vec![]);
        let e = b.op("Erf", &[&d], &format!("{p}.gelu.erf"), vec![]);
        let e = b.op("Add", &[&e, &one], &format!("{p}.gelu.add"), vec![]);
        let m = b.op("Mul", &[&f, &e], &format!("{p}.gelu.mul"), vec![]);
        let g = b.op("Mul", &[&m, &half], &format!("{p}.gelu.out"), vec![]);
        let o = proj(&mut b, &g, "output.dense", inter, h)?;
        let o = b.op("Add", &[&o, &a], &format!("{p}.output.residual"), vec![]);
        x = layer_norm(&mut b, &w, &o, &format!("{p}.output.LayerNorm"), eps)?;
    }
    b.op("Identity", &[&x], "last_hidden_state", vec![]);

    // Mean over real tokens, then L2 normalisation (sentence-transformers'
    // Pooling(mean) + Normalize, clamps included).
    let axes2 = b.constant("const.axes_2", ints(&[2]));
    let axes1 = b.constant("const.axes_1", ints(&[1]));
    let m3 = b.op("Unsqueeze", &[&mask_f, &axes2], "pool.mask3d", vec![]);
    let masked = b.op("Mul", &["last_hidden_state", &m3], "pool.masked", vec![]);
    let keep0 = vec![("keepdims", Attr::Int(0))];
    let sum = b.op("ReduceSum", &[&masked, &axes1], "pool.sum", keep0.clone());
    let count = b.op("ReduceSum", &[&m3, &axes1], "pool.count", keep0);
    let min_count = b.constant("const.min_count", Tensor::scalar(1e-9f32));
    let count = b.op("Max", &[&count, &min_count], "pool.count_clamped", vec![]);
    let mean = b.op("Div", &[&sum, &count], "pool.mean", vec![]);
    let sq = b.op("Mul", &[&mean, &mean], "norm.squared", vec![]);
    let ss = b.op(
        "ReduceSum",
        &[&sq, &axes1],
        "norm.sum_squares",
        vec![("keepdims", Attr::Int(1))],
    );
    let n = b.op("Sqrt", &[&ss], "norm.length", vec![]);
    let min_norm = b.constant("const.min_norm", Tensor::scalar(1e-12f32));
    let n = b.op("Max", &[&n, &min_norm], "norm.length_clamped", vec![]);
    b.op("Div", &[&mean, &n], "sentence_embedding", vec![]);
    Ok(b.finish())
}

fn layer_norm(b: &mut GraphBuilder, w: &Names, x: &str, name: &str, eps: f32) -> Result<String> {
    let h = {
        let t = w.get(&format!("{name}.weight"))?;
        t.len()
    };
    let g = b.constant(
        &format!("{name}.weight"),
        w.shaped(&format!("{name}.weight"), &[h])?,
    );
    let be = b.constant(
        &format!("{name}.bias"),
        w.shaped(&format!("{name}.bias"), &[h])?,
    );
    Ok(b.op(
        "LayerNormalization",
        &[x, &g, &be],
        &format!("{name}.out"),
        vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
    ))
}
