//! Deep Compression (Han, Mao & Dally 2016) end to end: prune → masked
//! fine-tune → per-layer k-means weight sharing → centroid fine-tune →
//! storage as relative-index CSR + codebook + Huffman in the `.shrink`
//! container, with the paper's table of per-layer sizes.
//!
//! Sizes are measured, not estimated: every column comes from encoding the
//! tensor with the container's own encoder (`P`: CSR with f32 values, `P+Q`:
//! CSR with codebook indices, `P+Q+H`: the same Huffman-coded), and the total
//! is the byte length of the whole `.shrink` file (header, graph, provenance,
//! tables, biases — every stored byte).

use crate::kmeans::{share_tensor, weight_share, Codebook, Init, ShareOptions};
use crate::prune::finetune::{finetune, Constraint, Distill, FinetuneOptions};
use crate::prune::magnitude::{magnitude_prune, PruneOptions};
use crate::prune::mask::masks_of;
use crate::prune::schedule::Agp;
use crate::prune::sensitivity::evaluate;
use crate::prune::{pass_error, prunable_weights};
use crate::{PassRecord, Result};
use shrink_data::Dataset;
use shrink_graph::container::{encode_tensor, to_shrink_bytes, Encoding, Provenance};
use shrink_graph::Graph;
use shrink_tensor::Tensor;

/// Every knob of the pipeline.
#[derive(Debug, Clone)]
pub struct DeepCompressionOptions {
    pub prune: PruneOptions,
    /// Pruning steps: 1 prunes at once; n > 1 follows the AGP schedule
    /// (Zhu & Gupta) to `prune.sparsity` (and each per-layer target) in n
    /// steps, fine-tuning after each.
    pub prune_steps: usize,
    /// Masked fine-tuning after (each) pruning step (None: skip).
    pub finetune: Option<FinetuneOptions>,
    /// Extra masked fine-tuning at the final sparsity, after the last step
    /// (None: skip). The highest sparsity is where accuracy is lost, so it
    /// gets the longest recovery.
    pub final_finetune: Option<FinetuneOptions>,
    pub share: ShareOptions,
    /// Centroid fine-tuning after sharing (None: skip).
    pub centroid_finetune: Option<FinetuneOptions>,
    /// Biases shared into a codebook of this many bits (None: stored as f32).
    /// They join the weights' codebooks before centroid fine-tuning, so the
    /// fine-tune adapts their centroids too; each bias is stored coded only
    /// when that is smaller than plain f32.
    pub bias_bits: Option<u32>,
    /// Round every codebook (weights and biases) to fp16 after centroid
    /// fine-tuning and store the centroids at 16 bits: half the table bytes,
    /// a relative change of at most 2⁻¹¹ per weight.
    pub fp16_centroids: bool,
    /// Distil from the unpruned input model in every fine-tuning stage:
    /// `(temperature, alpha)`, see [`Distill`].
    pub distill: Option<(f32, f32)>,
    pub eval_batch: usize,
    pub threads: usize,
}

impl Default for DeepCompressionOptions {
    fn default() -> Self {
        DeepCompressionOptions {
            prune: PruneOptions {
                sparsity: 0.92,
                ..Default::default()
            },
            prune_steps: 1,
            finetune: Some(FinetuneOptions::default()),
            final_finetune: None,
            share: ShareOptions::default(),
            centroid_finetune: Some(FinetuneOptions {
                epochs: 1,
                lr: 1e-4,
                ..Default::default()
            }),
            bias_bits: Some(6),
            fp16_centroids: true,
            distill: None,
            eval_batch: 500,
            threads: 0,
        }
    }
}

/// One row of the paper's table.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    pub tensor: String,
    pub params: usize,
    /// Fraction of weights kept.
    pub kept: f64,
    /// Codebook bits per stored weight.
    pub weight_bits: u32,
    /// Relative index bits chosen.
    pub index_bits: u32,
    pub dense_bytes: usize,
    /// Bytes after pruning (CSR, f32 values).
    pub p_bytes: usize,
    /// After pruning + quantisation (CSR, codebook indices + codebook).
    pub pq_bytes: usize,
    /// After pruning + quantisation + Huffman (where Huffman is smaller:
    /// a tiny layer's code tables can outweigh their gain) — as stored.
    pub pqh_bytes: usize,
}

/// What the pipeline did, with the figures of each stage.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepCompressionReport {
    pub rows: Vec<LayerRow>,
    pub fp32_accuracy: f64,
    pub pruned_accuracy: f64,
    pub finetuned_accuracy: Option<f64>,
    pub shared_accuracy: f64,
    pub final_accuracy: f64,
    /// All initializers as f32.
    pub dense_bytes: usize,
    /// The `.shrink` file's length.
    pub file_bytes: usize,
    /// Bytes of the file's header, graph section, provenance section, and
    /// tensors other than the weights (biases), as stored.
    pub overhead: (usize, usize, usize, usize),
    pub records: Vec<PassRecord>,
}

impl DeepCompressionReport {
    pub fn compression(&self) -> f64 {
        self.dense_bytes as f64 / self.file_bytes.max(1) as f64
    }

    /// The paper-style table (Han et al. 2016, Tables 2–3).
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{:<14}{:>9}{:>8}{:>7}{:>7}{:>11}{:>10}{:>10}{:>10}{:>8}\n",
            "layer",
            "weights",
            "kept",
            "w.bits",
            "i.bits",
            "dense B",
            "P B",
            "P+Q B",
            "P+Q+H B",
            "ratio"
        ));
        for r in &self.rows {
            s.push_str(&format!(
                "{:<14}{:>9}{:>7.1}%{:>7}{:>7}{:>11}{:>10}{:>10}{:>10}{:>7.1}×\n",
                r.tensor,
                r.params,
                100.0 * r.kept,
                r.weight_bits,
                r.index_bits,
                r.dense_bytes,
                r.p_bytes,
                r.pq_bytes,
                r.pqh_bytes,
                r.dense_bytes as f64 / r.pqh_bytes.max(1) as f64
            ));
        }
        let sum = |f: fn(&LayerRow) -> usize| self.rows.iter().map(f).sum::<usize>();
        let kept: f64 = self
            .rows
            .iter()
            .map(|r| r.kept * r.params as f64)
            .sum::<f64>()
            / sum(|r| r.params).max(1) as f64;
        s.push_str(&format!(
            "{:<14}{:>9}{:>7.1}%{:>7}{:>7}{:>11}{:>10}{:>10}{:>10}{:>7.1}×\n",
            "weights",
            sum(|r| r.params),
            100.0 * kept,
            "",
            "",
            sum(|r| r.dense_bytes),
            sum(|r| r.p_bytes),
            sum(|r| r.pq_bytes),
            sum(|r| r.pqh_bytes),
            sum(|r| r.dense_bytes) as f64 / sum(|r| r.pqh_bytes).max(1) as f64
        ));
        s.push_str(&format!(
            "whole model: {} B fp32 → {} B .shrink file (every byte: header, graph, biases, tables) = {:.1}× compression\n",
            self.dense_bytes,
            self.file_bytes,
            self.compression()
        ));
        s.push_str(&format!(
            "  of which: weights {} B (table entries included), biases {} B, graph {} B, header {} B, provenance {} B\n",
            self.file_bytes - self.overhead.0 - self.overhead.1 - self.overhead.2 - self.overhead.3,
            self.overhead.3,
            self.overhead.1,
            self.overhead.0,
            self.overhead.2
        ));
        s.push_str(&format!(
            "top-1: fp32 {:.2}%, pruned {:.2}%{}, shared {:.2}%, final {:.2}% ({:+.2} pt)\n",
            self.fp32_accuracy,
            self.pruned_accuracy,
            self.finetuned_accuracy
                .map(|a| format!(", fine-tuned {a:.2}%"))
                .unwrap_or_default(),
            self.shared_accuracy,
            self.final_accuracy,
            self.final_accuracy - self.fp32_accuracy
        ));
        s
    }
}

/// Runs the pipeline: `train` feeds fine-tuning, `test` measures accuracy.
/// Returns the compressed graph (with `encodings` set for the container) and
/// the report.
pub fn deep_compression(
    g: &Graph,
    train: &Dataset,
    test: &Dataset,
    opts: &DeepCompressionOptions,
) -> Result<(Graph, DeepCompressionReport)> {
    let acc = |gr: &Graph| -> Result<f64> {
        Ok(evaluate(gr, test, opts.eval_batch, opts.threads)?.accuracy)
    };
    let mut records = Vec::new();
    let fp32_accuracy = acc(g)?;
    // Every fine-tuning stage distils from the unpruned model when asked.
    let with_teacher = |ft: &FinetuneOptions| -> FinetuneOptions {
        FinetuneOptions {
            distill: opts.distill.map(|(temperature, alpha)| Distill {
                teacher: g.clone(),
                temperature,
                alpha,
            }),
            ..ft.clone()
        }
    };

    // Accuracy of one-shot pruning to the final target, without retraining.
    let pruned_accuracy = acc(&magnitude_prune(g, &opts.prune)?.0)?;
    let steps = opts.prune_steps.max(1);
    let agp = Agp::new(0.0, opts.prune.sparsity, 0, steps, 1)?;
    let mut cur = g.clone();
    let mut finetuned_accuracy = None;
    for step in 1..=steps {
        // AGP from 0 is linear in the final target, so scaling each
        // per-layer target by the same factor gives each layer its own AGP.
        let s = agp.sparsity_at(step);
        let f = if opts.prune.sparsity > 0.0 {
            s / opts.prune.sparsity
        } else {
            1.0
        };
        let po = PruneOptions {
            sparsity: s,
            targets: opts
                .prune
                .targets
                .iter()
                .map(|(k, v)| (k.clone(), v * f))
                .collect(),
            ..opts.prune.clone()
        };
        let (p, rec) = magnitude_prune(&cur, &po)?;
        records.push(rec);
        cur = p;
        let last = step == steps;
        let stages = [
            opts.finetune.clone(),
            if last {
                opts.final_finetune.clone()
            } else {
                None
            },
        ];
        for (k, ft) in stages.iter().enumerate() {
            let Some(ft) = ft else { continue };
            let masks = masks_of(&cur);
            let ft = FinetuneOptions {
                seed: ft.seed + (2 * step + k) as u64,
                ..with_teacher(ft)
            };
            let r = finetune(&mut cur, train, &ft, Constraint::Masks(&masks))?;
            let mut rec = PassRecord::new("finetune-masked")
                .option("epochs", ft.epochs)
                .option("lr", ft.lr)
                .option("sparsity", po.sparsity)
                .option("distill", ft.distill.is_some());
            rec.metric("steps", r.steps as f64);
            rec.metric("last_loss", r.last_loss);
            records.push(rec);
        }
    }
    if opts.finetune.is_some() || opts.final_finetune.is_some() {
        finetuned_accuracy = Some(acc(&cur)?);
    }

    let (shared, rec, mut books) = weight_share(&cur, &opts.share)?;
    records.push(rec);
    cur = shared;
    let weights: Vec<String> = prunable_weights(&cur)
        .into_iter()
        .map(|w| w.tensor)
        .collect();

    // Biases: a small codebook each, fine-tuned with the weights' centroids;
    // tiny tensors (a 6-channel conv bias) stay f32 when that is smaller.
    let mut biases = Vec::new();
    if let Some(bits) = opts.bias_bits {
        let names: Vec<String> = cur
            .nodes
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
            .filter_map(|n| n.input(2).map(String::from))
            .filter(|b| {
                cur.initializers
                    .get(b)
                    .is_some_and(|t| t.as_slice::<f32>().is_ok())
            })
            .collect();
        for b in names {
            if biases.contains(&b) || books.contains_key(&b) {
                continue;
            }
            let t = &cur.initializers[&b];
            let shape = t.shape().to_vec();
            let (v, book) = share_tensor(&t.to_f32_vec(), bits, Init::Linear, 0, 100);
            let trial: Vec<f32> = if opts.fp16_centroids {
                v.iter().map(|x| f16_round(*x)).collect()
            } else {
                v.clone()
            };
            let trial = Tensor::from_vec(shape.clone(), trial)?;
            let (_, coded_len) = smallest_bias_encoding(&trial, opts.fp16_centroids)?;
            let dense_len = encode_tensor(t, &Encoding::Dense)?.payload.len();
            if coded_len < dense_len {
                cur.initializers
                    .insert(b.clone(), Tensor::from_vec(shape, v)?);
                books.insert(b.clone(), book);
                biases.push(b);
            }
        }
    }
    let shared_accuracy = acc(&cur)?;

    if let Some(ft) = &opts.centroid_finetune {
        let ft = with_teacher(ft);
        let r = finetune(&mut cur, train, &ft, Constraint::Codebooks(&mut books))?;
        let mut rec = PassRecord::new("finetune-centroids")
            .option("epochs", ft.epochs)
            .option("lr", ft.lr)
            .option("distill", ft.distill.is_some());
        rec.metric("steps", r.steps as f64);
        rec.metric("last_loss", r.last_loss);
        records.push(rec);
    }
    if opts.fp16_centroids {
        for (name, book) in books.iter_mut() {
            round_book_to_f16(&mut cur, name, book)?;
        }
    }
    for b in &biases {
        let t = &cur.initializers[b];
        let (enc, coded_len) = smallest_bias_encoding(t, opts.fp16_centroids)?;
        let dense_len = encode_tensor(t, &Encoding::Dense)?.payload.len();
        if coded_len < dense_len {
            cur.encodings.insert(b.clone(), enc);
        }
    }
    let final_accuracy = acc(&cur)?;

    // Storage: every weight as Huffman(CSR(codebook)); the table's columns
    // encode each weight three ways with the container's encoder.
    let mut rows = Vec::new();
    for name in &weights {
        let t = cur.initializers[name].clone();
        let bits = books.get(name).map(|b| b.bits).unwrap_or(opts.share.bits);
        let enc_p = Encoding::Csr {
            index_bits: 0,
            values: Box::new(Encoding::Dense),
            column_major: false,
        };
        let book = Encoding::Codebook {
            bits: bits as u8,
            fp16: opts.fp16_centroids,
        };
        let enc_pq = Encoding::Csr {
            index_bits: 0,
            values: Box::new(book.clone()),
            column_major: false,
        };
        let enc_pqh = Encoding::Huffman {
            inner: Box::new(enc_pq.clone()),
        };
        let p = encode_tensor(&t, &enc_p)?;
        let pq = encode_tensor(&t, &enc_pq)?;
        let pqh = encode_tensor(&t, &enc_pqh)?;
        let v = t.to_f32_vec();
        rows.push(LayerRow {
            tensor: name.clone(),
            params: v.len(),
            kept: v.iter().filter(|x| **x != 0.0).count() as f64 / v.len().max(1) as f64,
            weight_bits: bits,
            index_bits: pqh.encoding.index_bits().unwrap_or(0) as u32,
            dense_bytes: t.nbytes(),
            p_bytes: p.payload.len(),
            pq_bytes: pq.payload.len(),
            pqh_bytes: pqh.payload.len().min(pq.payload.len()),
        });
        // A tiny layer's Huffman code tables can outweigh what they save:
        // store whichever is smaller.
        let stored = if pqh.payload.len() <= pq.payload.len() {
            enc_pqh
        } else {
            enc_pq
        };
        cur.encodings.insert(name.clone(), stored);
    }
    // The pass records stay in the report, not the file: a kilobyte of JSON
    // would be a sixth of a 40×-compressed LeNet-5.
    let prov = Provenance::new().note("pipeline", "deep-compression");
    let (bytes, file) = to_shrink_bytes(&cur, &prov)?;
    let weight_set: std::collections::HashSet<&String> = weights.iter().collect();
    let other_tensor_bytes: usize = file
        .tensors
        .iter()
        .filter(|t| !weight_set.contains(&t.name))
        .map(|t| t.stored_bytes)
        .sum();
    let overhead = (
        file.header_bytes,
        file.graph_bytes,
        file.provenance_bytes,
        other_tensor_bytes,
    );
    let dense_bytes = g.initializers.values().map(|t| t.len() * 4).sum();
    if !prunable_weights(&cur)
        .iter()
        .all(|w| cur.encodings.contains_key(&w.tensor))
    {
        return Err(pass_error(
            "deep-compression",
            "a weight has no storage encoding",
        ));
    }
    Ok((
        cur,
        DeepCompressionReport {
            rows,
            fp32_accuracy,
            pruned_accuracy,
            finetuned_accuracy,
            shared_accuracy,
            final_accuracy,
            dense_bytes,
            file_bytes: bytes.len(),
            overhead,
            records,
        },
    ))
}

/// `x` rounded to the nearest fp16 value (ties to even), back in f32.
fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Moves a codebook's centroids to fp16 values and rewrites the tensor's
/// nonzero weights from its labels, so the container can store 16-bit
/// centroids exactly. A centroid that would round to zero keeps the
/// smallest fp16 of its sign (zero means "pruned" to the sparse storage).
fn round_book_to_f16(g: &mut Graph, name: &str, book: &mut Codebook) -> Result<()> {
    for c in book.centroids.iter_mut() {
        let r = f16_round(*c);
        *c = if r == 0.0 && *c != 0.0 {
            half::f16::from_bits(1).to_f32().copysign(*c)
        } else {
            r
        };
    }
    let t = &g.initializers[name];
    let mut v = t.to_f32_vec();
    let mut j = 0;
    for x in v.iter_mut() {
        if *x != 0.0 {
            let l = *book.labels.get(j).ok_or_else(|| {
                pass_error(
                    "deep-compression",
                    format!("{name}: codebook labels out of step"),
                )
            })?;
            *x = book.centroids[l as usize];
            j += 1;
        }
    }
    let shape = t.shape().to_vec();
    g.initializers
        .insert(name.to_string(), Tensor::from_vec(shape, v)?);
    Ok(())
}

/// The cheapest exact codebook storage of a shared bias: the fewest index
/// bits that hold its distinct values, plain or Huffman-coded. Returns the
/// encoding and its payload length.
fn smallest_bias_encoding(t: &Tensor, fp16: bool) -> Result<(Encoding, usize)> {
    let v = t.to_f32_vec();
    let mut distinct: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let bits = (usize::BITS - (distinct.len().max(2) - 1).leading_zeros()) as u8;
    let plain = Encoding::Codebook { bits, fp16 };
    let huff = Encoding::Huffman {
        inner: Box::new(plain.clone()),
    };
    let a = encode_tensor(t, &plain)?.payload.len();
    let b = encode_tensor(t, &huff)?.payload.len();
    Ok(if b < a { (huff, b) } else { (plain, a) })
}

/// Options the recipe pass `deep-compression` accepts.
pub const RECIPE_OPTIONS: &[&str] = &[
    "dataset",
    "sparsity",
    "scope",
    "prune_steps",
    "epochs",
    "lr",
    "bits",
    "conv_bits",
    "centroid_epochs",
    "bias_bits",
    "train_limit",
    "test_limit",
    "targets",
    "layer_bits",
    "final_epochs",
    "centroid_lr",
    "fp16_centroids",
    "distill_temperature",
    "distill_alpha",
];

/// A recipe sub-table `key = { "tensor" = number, … }` as a map.
fn number_table(
    o: &crate::recipe::Options,
    key: &str,
) -> Result<std::collections::BTreeMap<String, f64>> {
    let Some(v) = o.table.get(key) else {
        return Ok(Default::default());
    };
    let t = v
        .as_table()
        .ok_or_else(|| o.err(key, "expected a table of tensor = number"))?;
    t.iter()
        .map(|(k, v)| {
            let x = v
                .as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .ok_or_else(|| o.err(key, format!("{k}: expected a number, got {v}")))?;
            Ok((k.clone(), x))
        })
        .collect()
}

/// The recipe pass: runs [`deep_compression`] on the dataset the recipe
/// names (train split to fine-tune, test split to score) and returns the
/// graph with its storage encodings; the record's changes are the table.
pub fn recipe_pass(
    g: &Graph,
    o: &crate::recipe::Options,
    ctx: &mut crate::recipe::Context,
) -> Result<(Graph, PassRecord)> {
    use shrink_data::Split;
    let spec = o.str("dataset", "fashion-mnist")?;
    let mut train = Dataset::open(spec, Split::Train)?;
    let mut test = Dataset::open(spec, Split::Test)?;
    let limit = |key: &str| -> Result<Option<usize>> {
        let n = o.int(key, 0)?;
        if n < 0 {
            return Err(o.err(key, "must be ≥ 0"));
        }
        Ok((n > 0).then_some(n as usize))
    };
    if let Some(n) = limit("train_limit")? {
        train = train.take(n);
    }
    if let Some(n) = limit("test_limit")? {
        test = test.take(n);
    }
    let count = |key: &str, default: i64| -> Result<usize> {
        let n = o.int(key, default)?;
        usize::try_from(n).map_err(|_| o.err(key, "must be ≥ 0"))
    };
    let bits = |key: &str, default: i64| -> Result<u32> {
        let b = o.int(key, default)?;
        if (1..=16).contains(&b) {
            Ok(b as u32)
        } else {
            Err(o.err(key, format!("bits must be 1..=16, got {b}")))
        }
    };
    let lr = o.float_opt("lr")?.unwrap_or(1e-3);
    let ft = |epochs: usize, lr: f64| {
        (epochs > 0).then(|| FinetuneOptions {
            epochs,
            lr,
            threads: ctx.threads,
            ..Default::default()
        })
    };
    let mut bits_per_layer = std::collections::BTreeMap::new();
    for (k, b) in number_table(o, "layer_bits")? {
        if b.fract() != 0.0 || !(1.0..=16.0).contains(&b) {
            return Err(o.err("layer_bits", format!("{k}: bits must be 1..=16, got {b}")));
        }
        bits_per_layer.insert(k, b as u32);
    }
    let distill = match o.float_opt("distill_temperature")? {
        Some(t) => Some((
            t as f32,
            o.float_opt("distill_alpha")?.unwrap_or(0.5) as f32,
        )),
        None => None,
    };
    let opts = DeepCompressionOptions {
        prune: PruneOptions {
            sparsity: o.float_opt("sparsity")?.unwrap_or(0.92),
            scope: o
                .str("scope", "global")?
                .parse()
                .map_err(|e: String| o.err("scope", e))?,
            targets: number_table(o, "targets")?,
            ..Default::default()
        },
        prune_steps: count("prune_steps", 4)?.max(1),
        finetune: ft(count("epochs", 3)?, lr),
        final_finetune: ft(count("final_epochs", 0)?, lr),
        share: ShareOptions {
            bits: bits("bits", 5)?,
            conv_bits: Some(bits("conv_bits", 6)?),
            bits_per_layer,
            ..Default::default()
        },
        centroid_finetune: ft(
            count("centroid_epochs", 1)?,
            o.float_opt("centroid_lr")?.unwrap_or(lr * 0.1),
        ),
        bias_bits: Some(bits("bias_bits", 6)?),
        fp16_centroids: o.bool("fp16_centroids", true)?,
        distill,
        threads: ctx.threads,
        ..Default::default()
    };
    let (out, report) = deep_compression(g, &train, &test, &opts)?;
    let mut rec = PassRecord::new("deep-compression");
    for (k, v) in o.table {
        rec.options.insert(k.clone(), v.to_string());
    }
    for line in report.table().lines() {
        rec.change(line);
    }
    rec.metric("compression", report.compression());
    rec.metric("file_bytes", report.file_bytes as f64);
    rec.metric("fp32_accuracy", report.fp32_accuracy);
    rec.metric("final_accuracy", report.final_accuracy);
    Ok((out, rec))
}
