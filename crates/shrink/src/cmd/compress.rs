//! `shrink compress MODEL --recipe R [--calib DATASET[:N]] [--eval DATASET[:N]] -o OUT`:
//! runs a compression recipe and reports accuracy, size and estimated energy
//! against the fp32 model, all measured in the same run.
//!
//! Calibration images are the first N (default 512) of NumPy's
//! `RandomState(1234).permutation` of the training split — the images ONNX
//! Runtime's baselines in `peers.json` calibrated on, so the comparison is
//! like for like. The output (.onnx, or the .shrink container with the recipe
//! and pass records as provenance) is written once, atomically, after every pass
//! succeeded: a failed run leaves no file behind.

use crate::model;
use anyhow::{bail, Context as _, Result};
use clap::Args as ClapArgs;
use shrink_compress::calib::sample::numpy_permutation;
use shrink_compress::mixed::{accuracy, outputs};
use shrink_compress::quantize::{stored_bytes, weight_bits};
use shrink_compress::recipe::{CalibData, Context, ProvenanceLevel, Recipe};
use shrink_data::{Dataset, Split};
use shrink_energy::{estimate, layer_work, Assignment, MemoryConfig, Precision};
use shrink_graph::container::{save_shrink_with, Provenance};
use shrink_graph::Graph;
use shrink_tensor::{DType, Tensor};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
    /// Recipe file (TOML), e.g. recipes/int8-calibrated.toml, or the name of
    /// a shipped recipe (int8-calibrated, int8-calibrated-huffman, int8-dfq,
    /// w4a8-mixed, mixed-30pct, deep-compression, deep-compression-lenet5).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Calibration data: dataset spec with an optional sample count, e.g.
    /// fashion-mnist:512 (training split, NumPy-seeded sample).
    #[arg(long)]
    pub calib: Option<String>,
    /// Evaluation data (test split), e.g. fashion-mnist or fashion-mnist:1000.
    #[arg(long, visible_alias = "dataset")]
    pub eval: Option<String>,
    /// Output model: .onnx (the QDQ graph) or .shrink (container, sub-8-bit codes packed).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Seed of the calibration sample permutation.
    #[arg(long, default_value_t = 1234)]
    pub calib_seed: u32,
    /// Write the QOperator form (QuantizeLinear at the input, QLinearConv,
    /// com.microsoft QGemm/QLinearAdd/QLinearGlobalAveragePool, pooling and
    /// reshapes on the u8 codes, DequantizeLinear at the output) instead of
    /// QDQ; fails if a weighted layer has no QOperator form.
    #[arg(long)]
    pub qoperator: bool,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the closing report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `SPEC[:N]` → (spec, N) when the last `:` part is a number.
fn split_count(s: &str) -> (String, Option<usize>) {
    if let Some((head, tail)) = s.rsplit_once(':') {
        if let Ok(n) = tail.parse::<usize>() {
            return (head.to_string(), Some(n));
        }
    }
    (s.to_string(), None)
}

fn batches_of(ds: &Dataset, batch: usize) -> Result<(Vec<Tensor>, Vec<i64>)> {
    let mut xs = Vec::new();
    for b in ds.batches(batch) {
        xs.push(b?.0);
    }
    Ok((xs, ds.labels.clone()))
}

/// Calibration sample: `permutation(seed)[..n]` of the training split.
fn calibration(spec: &str, seed: u32, batch: usize) -> Result<CalibData> {
    let (spec, n) = split_count(spec);
    let train = Dataset::open(&spec, Split::Train)?;
    let n = n.unwrap_or(512).min(train.len());
    if n == 0 {
        bail!("--calib {spec}: zero calibration samples");
    }
    let order = numpy_permutation(seed, train.len());
    let per: usize = train.image_shape().iter().product();
    let mut images = Vec::with_capacity(n * per);
    let mut labels = Vec::with_capacity(n);
    for &i in &order[..n] {
        let one = train.range(i, i + 1);
        images.extend(one.images.to_f32_vec());
        labels.push(one.labels[0]);
    }
    let mut shape = vec![n];
    shape.extend_from_slice(train.image_shape());
    let picked = Dataset::new(Tensor::from_vec(shape, images)?, labels)
        .map_err(anyhow::Error::msg)?
        .with_scaling(train.scaling.clone());
    let (batches, labels) = batches_of(&picked, batch)?;
    Ok(CalibData { batches, labels })
}

/// Per-layer precisions of a (possibly QDQ) graph, read from its structure:
/// weights behind a DequantizeLinear are integers (width from the storage
/// hint, else 8), behind a Cast from fp16/bf16 those; activations behind a
/// DequantizeLinear are 8-bit integers.
fn assignment(g: &Graph) -> Assignment {
    let producers: HashMap<&str, usize> = g.producers();
    let bits = weight_bits(g);
    let mut asg = Assignment::uniform(Precision::Fp32, Precision::Fp32);
    for n in &g.nodes {
        if !["Conv", "Gemm", "MatMul"].contains(&n.op_type.as_str()) {
            continue;
        }
        let via = |i: usize| {
            n.input(i)
                .and_then(|x| producers.get(x))
                .map(|&p| &g.nodes[p])
        };
        let w = match via(1) {
            Some(p) if p.op_type == "DequantizeLinear" => {
                Precision::Int(p.input(0).and_then(|c| bits.get(c)).copied().unwrap_or(8))
            }
            Some(p) if p.op_type == "Cast" => {
                match p
                    .input(0)
                    .and_then(|c| g.initializers.get(c))
                    .map(|t| t.dtype())
                {
                    Some(DType::F16) => Precision::Fp16,
                    Some(DType::BF16) => Precision::Bf16,
                    _ => Precision::Fp32,
                }
            }
            _ => Precision::Fp32,
        };
        let a = match via(0) {
            Some(p) if p.op_type == "DequantizeLinear" => Precision::Int(8),
            _ => Precision::Fp32,
        };
        asg.overrides.push((n.name.clone(), w, a));
    }
    asg
}

pub(crate) fn energy_nj(g: &Graph) -> Result<f64> {
    let layers = layer_work(g)?;
    Ok(
        estimate(&layers, &assignment(g), &MemoryConfig::new(256 * 1024))
            .total
            .total_pj()
            / 1000.0,
    )
}

pub fn run(args: Args) -> Result<()> {
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    if !matches!(ext, "onnx" | "shrink") {
        bail!(
            "{}: unknown output format (expected .onnx or .shrink)",
            args.output.display()
        );
    }
    let g = model::load(&args.model)?;
    let recipe = Recipe::resolve(&args.recipe)?;
    let calib = args
        .calib
        .as_deref()
        .map(|s| calibration(s, args.calib_seed, args.batch))
        .transpose()
        .context("loading calibration data")?;
    let mut ctx = Context::new(calib);
    ctx.threads = args.threads;
    ctx.progress = std::io::stderr().is_terminal() && !args.json;
    // Everything a recipe can get wrong is checked before any work.
    recipe.check(&g, &ctx)?;
    let (q, mut records) = recipe.run(&g, &mut ctx)?;
    // The QOperator form is a rewrite of the finished QDQ graph; accuracy is
    // reported for both (they run the same integer arithmetic).
    let qop = if args.qoperator {
        let (qo, rec) = shrink_compress::qoperator::to_qoperator_complete(&q)
            .with_context(|| format!("{}: QOperator form", args.model.display()))?;
        records.push(rec);
        Some(qo)
    } else {
        None
    };
    for r in &records {
        if r.pass == "deep-compression" && !args.json {
            r.changes.iter().for_each(|l| println!("{l}"));
        }
        if !args.json {
            eprintln!(
                "pass {:<16} {} change(s) {}",
                r.pass,
                r.changes.len(),
                r.metrics
                    .iter()
                    .filter(|(k, _)| !k.contains('/'))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    let eval = match &args.eval {
        None => None,
        Some(s) => {
            let (spec, n) = split_count(s);
            let mut ds = Dataset::open(&spec, Split::Test)?;
            if let Some(n) = n {
                ds = ds.take(n);
            }
            let (xs, labels) = batches_of(&ds, 256)?;
            let fp = accuracy(&outputs(&g, &xs, args.threads)?, &labels)?;
            let qa = accuracy(&outputs(&q, &xs, args.threads)?, &labels)?;
            let qo = qop
                .as_ref()
                .map(|qo| accuracy(&outputs(qo, &xs, args.threads)?, &labels))
                .transpose()?;
            Some((fp, qa, labels.len(), qo))
        }
    };
    let written = qop.as_ref().unwrap_or(&q);
    // A .shrink file's size is what it really takes on disk (codebooks,
    // sparse indices and Huffman coding included), not a bits-per-weight estimate.
    let mut file_bytes = None;
    if ext == "shrink" {
        let mut prov = Provenance::new().with_source(&args.model)?;
        match recipe.provenance {
            ProvenanceLevel::Full => {
                prov = prov.with_recipe(recipe.text.clone());
                for r in &records {
                    prov = prov.with_pass(r)?;
                }
            }
            ProvenanceLevel::Minimal => prov = prov.note("recipe", recipe.name.clone()),
        }
        if let Some((f, qa, n, _)) = eval {
            prov = prov.note(
                "accuracy",
                format!("fp32 {f:.2}% → {qa:.2}% on {n} test images"),
            );
        }
        file_bytes = Some(
            save_shrink_with(written, &prov, &args.output, &recipe.layout.write_options())
                .with_context(|| format!("writing {}", args.output.display()))?
                .file_bytes as f64,
        );
    } else {
        shrink_graph::onnx::save(written, &args.output)
            .with_context(|| format!("writing {}", args.output.display()))?;
    }
    let (fs, qs) = (
        stored_bytes(&g),
        file_bytes.unwrap_or_else(|| stored_bytes(&q)),
    );
    let (fe, qe) = (energy_nj(&g)?, energy_nj(&q)?);
    if args.json {
        let v = serde_json::json!({
            "model": args.model.display().to_string(),
            "recipe": args.recipe.display().to_string(),
            "output": args.output.display().to_string(),
            "accuracy": eval.map(|(f, q, n, qo)| serde_json::json!({"fp32": f, "compressed": q, "samples": n, "qoperator": qo})),
            "format": if qop.is_some() { "qoperator" } else { "qdq" },
            "bytes": {"fp32": fs, "compressed": qs},
            "energy_nj": {"fp32": fe, "compressed": qe},
            "passes": records,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} → {} ({})",
        args.model.display(),
        args.output.display(),
        recipe.name
    );
    println!(
        "{:<22}{:>14}{:>14}{:>14}",
        "", "fp32", "compressed", "change"
    );
    if let Some((f, qa, n, qo)) = eval {
        if let Some(qo) = qo {
            println!(
                "{:<22}{:>14.2}{:>14.2}{:>+14.2}",
                "accuracy % QOperator",
                f,
                qo,
                qo - f
            );
        }
        println!(
            "{:<22}{:>14.2}{:>14.2}{:>+14.2}",
            format!("accuracy % ({n})"),
            f,
            qa,
            qa - f
        );
    }
    println!(
        "{:<22}{:>14.0}{:>14.0}{:>13.2}x",
        "size (bytes)",
        fs,
        qs,
        fs / qs.max(1.0)
    );
    println!(
        "{:<22}{:>14.1}{:>14.1}{:>13.2}x",
        "energy (nJ, est.)",
        fe,
        qe,
        fe / qe.max(1e-12)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(recipe: &std::path::Path, out: &std::path::Path) -> Args {
        let model = shrink_data::shared_data_dir()
            .expect("shared/data not found (set $SHRINK_SHARED)")
            .join("fashion/lenet5_bn.onnx");
        Args {
            model,
            recipe: recipe.to_path_buf(),
            calib: Some("fashion-mnist:64".into()),
            eval: None,
            output: out.to_path_buf(),
            calib_seed: 1234,
            qoperator: false,
            batch: 64,
            threads: 0,
            json: true,
        }
    }

    #[test]
    fn failed_run_leaves_no_output_and_success_writes_a_model() {
        let dir = std::env::temp_dir().join(format!("shrink-compress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("q.onnx");
        // Fails only after calibration ran: no W4/W8 mix fits in 1 byte.
        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            "[[pass]]\nname = \"calibrate\"\n[[pass]]\nname = \"mixed-precision\"\nbytes = 1\nsamples = 16\n",
        )
        .unwrap();
        let e = format!("{:#}", run(args(&bad, &out)).unwrap_err());
        assert!(e.contains("unreachable") && e.contains("bad.toml"), "{e}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            left,
            vec!["bad.toml".to_string()],
            "a failed run left files behind"
        );
        // A bad recipe fails before any work, naming the field.
        std::fs::write(&bad, "[[pass]]\nname = \"quantize\"\nweights = \"int12\"\n").unwrap();
        let e = format!("{:#}", run(args(&bad, &out)).unwrap_err());
        assert!(e.contains("pass[0].weights") && e.contains("12"), "{e}");
        assert!(!out.exists());
        // The shipped int8 recipe writes a model that loads and runs.
        let good =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/int8-calibrated.toml");
        run(args(&good, &out)).unwrap();
        let q = shrink_graph::onnx::load(&out).unwrap();
        assert!(q.nodes.iter().any(|n| n.op_type == "QuantizeLinear"));
        // --qoperator writes the QOperator form of the same model.
        let mut a = args(&good, &out);
        a.qoperator = true;
        run(a).unwrap();
        let q = shrink_graph::onnx::load(&out).unwrap();
        assert!(q.nodes.iter().any(|n| n.op_type == "QLinearConv"));
        assert!(!q
            .nodes
            .iter()
            .any(|n| n.op_type == "Conv" || n.op_type == "Gemm"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn minimal_provenance_stores_less_and_the_same_tensors() {
        let dir = std::env::temp_dir().join(format!("shrink-prov-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shipped = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/int8-calibrated.toml"),
        )
        .unwrap();
        let (full, minimal) = (dir.join("full.toml"), dir.join("minimal.toml"));
        std::fs::write(&full, &shipped).unwrap();
        std::fs::write(&minimal, format!("provenance = \"minimal\"\n{shipped}")).unwrap();
        let (fo, mo) = (dir.join("full.shrink"), dir.join("minimal.shrink"));
        run(args(&full, &fo)).unwrap();
        run(args(&minimal, &mo)).unwrap();
        let (f, m) = (
            shrink_graph::container::read_shrink(&fo).unwrap(),
            shrink_graph::container::read_shrink(&mo).unwrap(),
        );
        assert!(f.provenance.recipe.is_some() && !f.provenance.passes.is_empty());
        assert!(m.provenance.recipe.is_none() && m.provenance.passes.is_empty());
        assert!(m.provenance.source_sha256.is_some());
        assert!(m.provenance_bytes < f.provenance_bytes);
        assert_eq!(
            std::fs::metadata(&fo).unwrap().len() - f.provenance_bytes as u64,
            std::fs::metadata(&mo).unwrap().len() - m.provenance_bytes as u64,
            "only the provenance section may differ"
        );
        // A shipped recipe by name stores the same tensors as its file.
        let named = dir.join("named.shrink");
        run(args(std::path::Path::new("int8-calibrated"), &named)).unwrap();
        let n = shrink_graph::container::read_shrink(&named).unwrap();
        assert_eq!(n.provenance.recipe.as_deref(), Some(shipped.as_str()));
        assert_eq!(
            std::fs::metadata(&named).unwrap().len() - n.provenance_bytes as u64,
            std::fs::metadata(&fo).unwrap().len() - f.provenance_bytes as u64,
        );
        let e = format!(
            "{:#}",
            run(args(std::path::Path::new("int9"), &named)).unwrap_err()
        );
        assert!(e.contains("shipped") && e.contains("int8-dfq"), "{e}");
        // An unknown level is refused up front, naming the field.
        std::fs::write(&minimal, format!("provenance = \"none\"\n{shipped}")).unwrap();
        let e = format!("{:#}", run(args(&minimal, &mo)).unwrap_err());
        assert!(
            e.contains("provenance") && e.contains("minimal.toml"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
