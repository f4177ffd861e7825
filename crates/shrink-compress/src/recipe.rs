//! Recipes: an ordered list of passes with their options, in TOML.
//!
//! ```toml
//! name = "int8-calibrated"
//! [[pass]]
//! name = "calibrate"
//! observer = "minmax"
//! [[pass]]
//! name = "quantize"
//! weights = "int8"
//! granularity = "channel"
//! activations = "u8"
//! ```
//!
//! Every pass is one entry of [`PASSES`] (name, what it needs, function), so
//! adding a pass is one line. The runner checks the whole recipe before
//! running anything — unknown passes and options, bad bit widths, passes that
//! need calibration data or activation ranges nobody provides — and every
//! error names the recipe file and the field (`pass[1].weights`).

use crate::calib::{calibrate, CalibConfig, ObserverConfig, ObserverKind};
use crate::mixed::{
    choose_compact_encodings, choose_encodings, plan_bytes, search, search_widths, sensitivities,
    width_costs, Budget, Metric, SensitivityData, SizeModel,
};
use crate::quantize::{
    activation_tensors, insert_qdq, stored_bytes, ActFormat, QuantPlan, WeightFormat,
    WeightGranularity,
};
use crate::ranges::ActivationRanges;
use crate::{CompressError, PassRecord, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use shrink_formats::Scheme;
use shrink_graph::{Dim, Graph};
use shrink_tensor::Tensor;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A parsed recipe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "pass", default)]
    pub passes: Vec<toml::Table>,
    /// What the written `.shrink` file records about how it was made.
    #[serde(default)]
    pub provenance: ProvenanceLevel,
    /// How the `.shrink` file is laid out: `standard` (a section per
    /// tensor, format version 1 unless an encoding needs 2) or `compact`
    /// (small tensors in one deflated bundle, version 2; see
    /// [`crate::mixed::COMPACT_LAYOUT`]).
    #[serde(default)]
    pub layout: Layout,
    /// The file it came from (for error messages); not a TOML field.
    #[serde(skip)]
    pub file: String,
    /// The recipe's own text, for provenance; not a TOML field.
    #[serde(skip)]
    pub text: String,
}

/// The recipes shipped in `recipes/`, built into the binary so that
/// `--recipe int8-calibrated` works wherever `shrink` is installed, not only
/// in a checkout.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "int8-calibrated",
        include_str!("../../../recipes/int8-calibrated.toml"),
    ),
    (
        "int8-calibrated-huffman",
        include_str!("../../../recipes/int8-calibrated-huffman.toml"),
    ),
    ("int8-dfq", include_str!("../../../recipes/int8-dfq.toml")),
    (
        "w4a8-mixed",
        include_str!("../../../recipes/w4a8-mixed.toml"),
    ),
    (
        "mixed-30pct",
        include_str!("../../../recipes/mixed-30pct.toml"),
    ),
    (
        "deep-compression",
        include_str!("../../../recipes/deep-compression.toml"),
    ),
    (
        "deep-compression-lenet5",
        include_str!("../../../recipes/deep-compression-lenet5.toml"),
    ),
];

/// How much provenance `shrink compress` stores in a `.shrink` file.
///
/// `full` (the default) keeps the recipe text and every pass record, so a file
/// explains itself. For models of a few kilobytes that record can be a quarter
/// of the file (Deep Compression's per-layer records on LeNet-5: ~1.5 KB of a
/// 5.8 KB file), so size-critical recipes ask for `minimal`: tool version,
/// source model hash, recipe name and the accuracy line — the pass records are
/// still printed and written to `--json`, just not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvenanceLevel {
    #[default]
    Full,
    Minimal,
}

/// `layout` of a recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Standard,
    Compact,
}

impl Layout {
    /// The container's write options for this layout.
    pub fn write_options(self) -> shrink_graph::container::WriteOptions {
        match self {
            Layout::Standard => Default::default(),
            Layout::Compact => crate::mixed::COMPACT_LAYOUT,
        }
    }
}

/// Calibration images (model inputs, batched) and their labels.
#[derive(Debug, Clone)]
pub struct CalibData {
    pub batches: Vec<Tensor>,
    pub labels: Vec<i64>,
}

impl CalibData {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` samples (whole batches, the last one cut).
    pub fn take(&self, n: usize) -> CalibData {
        let mut out = CalibData {
            batches: Vec::new(),
            labels: self.labels[..n.min(self.labels.len())].to_vec(),
        };
        let mut left = n;
        for b in &self.batches {
            if left == 0 {
                break;
            }
            let bn = b.shape()[0];
            if bn <= left {
                out.batches.push(b.clone());
                left -= bn;
            } else {
                let per = b.len() / bn.max(1);
                let v = b.to_f32_vec()[..left * per].to_vec();
                let mut shape = b.shape().to_vec();
                shape[0] = left;
                out.batches
                    .push(Tensor::from_vec(shape, v).expect("slice of a valid batch"));
                left = 0;
            }
        }
        out
    }
}

/// What passes share while a recipe runs.
pub struct Context {
    pub calib: Option<CalibData>,
    pub ranges: Option<ActivationRanges>,
    /// BatchNorm statistics kept by `fold-batchnorm` for the DFQ passes.
    pub bn_stats: Option<crate::fold_bn::BnStats>,
    /// Tensors the quantiser must leave in float (data-free ranges that are
    /// only interval bounds, with `loose_ranges = "dynamic"`).
    pub float_tensors: BTreeSet<String>,
    /// Weight format of the recipe's `quantize` pass, for passes before it
    /// that must know it (bias correction).
    pub weight_hint: Option<WeightFormat>,
    pub threads: usize,
    /// The model the recipe started from (set by [`Recipe::run`]): the fp32
    /// weights and distillation teacher of `qat`.
    pub source: Option<Graph>,
    /// Show progress bars (off in tests and when output is not a terminal).
    pub progress: bool,
}

impl Context {
    pub fn new(calib: Option<CalibData>) -> Context {
        Context {
            calib,
            ranges: None,
            bn_stats: None,
            float_tensors: BTreeSet::new(),
            weight_hint: None,
            threads: 0,
            source: None,
            progress: false,
        }
    }

    fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        let pb = if self.progress {
            ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} ({eta})")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(msg.to_string());
        pb
    }
}

/// Options of one pass with the recipe location, for typed access with errors
/// that say where.
pub struct Options<'a> {
    pub file: &'a str,
    pub index: usize,
    pub table: &'a toml::Table,
}

impl Options<'_> {
    pub fn err(&self, key: &str, msg: impl Into<String>) -> CompressError {
        CompressError::Recipe {
            file: self.file.to_string(),
            field: if key.is_empty() {
                format!("pass[{}]", self.index)
            } else {
                format!("pass[{}].{key}", self.index)
            },
            msg: msg.into(),
        }
    }

    pub fn str<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::String(s)) => Ok(s),
            Some(v) => Err(self.err(key, format!("expected a string, found {}", v.type_str()))),
        }
    }

    pub fn int(&self, key: &str, default: i64) -> Result<i64> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(i)) => Ok(*i),
            Some(v) => Err(self.err(key, format!("expected an integer, found {}", v.type_str()))),
        }
    }

    pub fn float_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Float(f)) => Ok(Some(*f)),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(v) => Err(self.err(key, format!("expected a number, found {}", v.type_str()))),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(self.err(
                key,
                format!("expected true or false, found {}", v.type_str()),
            )),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.table.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.err(key, "expected an array of strings"))
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("expected an array, found {}", v.type_str()))),
        }
    }

    /// Rejects keys the pass does not know, listing the ones it does.
    fn check_keys(&self, known: &[&str]) -> Result<()> {
        for k in self.table.keys() {
            if k != "name" && !known.contains(&k.as_str()) {
                return Err(self.err(
                    k,
                    format!("unknown option; valid options: {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// A pass as the runner sees it.
pub type PassFn = fn(&Graph, &Options, &mut Context) -> Result<(Graph, PassRecord)>;

/// What a pass needs before it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// Calibration images (`--calib`).
    CalibData,
    /// Activation ranges from an earlier pass when quantising activations to integers.
    Ranges,
    /// Both.
    CalibDataAndRanges,
}

/// One registered pass.
pub struct PassEntry {
    pub name: &'static str,
    pub needs: Needs,
    /// Options it accepts (checked before anything runs).
    pub options: &'static [&'static str],
    /// Whether it provides activation ranges to later passes.
    pub gives_ranges: bool,
    pub run: PassFn,
}

/// Every pass a recipe may name.
pub const PASSES: &[PassEntry] = &[
    PassEntry {
        name: "calibrate",
        needs: Needs::CalibData,
        options: &[
            "observer",
            "samples",
            "per_channel",
            "symmetric",
            "bits",
            "bins",
        ],
        gives_ranges: true,
        run: pass_calibrate,
    },
    PassEntry {
        name: "quantize",
        needs: Needs::Ranges,
        options: &[
            "weights",
            "granularity",
            "scheme",
            "activations",
            "skip",
            "layers",
            "mse_clip_bits",
            "fp16_scales",
        ],
        gives_ranges: false,
        run: pass_quantize,
    },
    PassEntry {
        name: "dfq",
        needs: Needs::Nothing,
        options: crate::dfq::RECIPE_OPTIONS,
        gives_ranges: false,
        run: crate::dfq::recipe_pass,
    },
    PassEntry {
        name: "mixed-precision",
        needs: Needs::CalibDataAndRanges,
        options: &[
            "high",
            "low",
            "granularity",
            "activations",
            "metric",
            "samples",
            "size_budget",
            "bytes",
            "energy_budget",
            "skip",
            "widths",
            "size_model",
            "mse_clip_bits",
            "bias_correction",
            "low_scheme",
            "fp16_scales",
            "size_margin",
        ],
        gives_ranges: false,
        run: pass_mixed,
    },
    PassEntry {
        name: "qat",
        needs: Needs::Nothing,
        options: &[
            "data",
            "samples",
            "epochs",
            "lr",
            "batch",
            "seed",
            "max_steps",
            "distill",
            "temperature",
            "alpha",
        ],
        gives_ranges: false,
        run: pass_qat,
    },
    PassEntry {
        name: "entropy-code",
        needs: Needs::Nothing,
        options: &[],
        gives_ranges: false,
        run: pass_entropy_code,
    },
    // Data-free quantisation (Nagel et al. 2019), passes of crate::dfq's pipeline.
    PassEntry {
        name: "fold-batchnorm",
        needs: Needs::Nothing,
        options: &[],
        gives_ranges: false,
        run: dfq_passes::fold_batchnorm,
    },
    PassEntry {
        name: "relu6-to-relu",
        needs: Needs::Nothing,
        options: &["enabled", "scope"],
        gives_ranges: false,
        run: dfq_passes::relu6_to_relu,
    },
    PassEntry {
        name: "cle",
        needs: Needs::Nothing,
        options: &["max_iterations", "tolerance", "include_gemm"],
        gives_ranges: false,
        run: dfq_passes::cle,
    },
    PassEntry {
        name: "bias-absorption",
        needs: Needs::Nothing,
        options: &["n_sigma", "through_padding"],
        gives_ranges: false,
        run: dfq_passes::bias_absorption,
    },
    PassEntry {
        name: "bias-correction",
        needs: Needs::Nothing,
        options: &["source"],
        gives_ranges: false,
        run: dfq_passes::bias_correction,
    },
    PassEntry {
        name: "ranges-from-bn",
        needs: Needs::Nothing,
        options: &["n_sigma", "input_range", "loose_ranges"],
        gives_ranges: true,
        run: dfq_passes::ranges_from_bn,
    },
    PassEntry {
        name: "deep-compression",
        needs: Needs::Nothing,
        options: crate::deep_compression::RECIPE_OPTIONS,
        gives_ranges: false,
        run: crate::deep_compression::recipe_pass,
    },
];

/// Names of the registered passes, for error messages.
pub fn pass_names() -> Vec<&'static str> {
    PASSES.iter().map(|p| p.name).collect()
}

impl Recipe {
    /// Reads and parses a recipe file; errors name the file.
    /// A recipe file, or — when no such file exists and `spec` is a bare
    /// name like `int8-dfq` (optionally with `.toml`) — the shipped recipe of
    /// that name. An unknown name lists the shipped ones.
    pub fn resolve(spec: impl AsRef<Path>) -> Result<Recipe> {
        let path = spec.as_ref();
        let bare = path.components().count() == 1;
        if path.exists() || !bare {
            return Recipe::load(path);
        }
        let name = path.to_string_lossy();
        let name = name.strip_suffix(".toml").unwrap_or(&name);
        match SHIPPED.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Recipe::parse(text, &format!("recipes/{n}.toml (built in)")),
            None => Err(CompressError::Recipe {
                file: path.display().to_string(),
                field: String::new(),
                msg: format!(
                    "no such file, and not a shipped recipe; shipped: {}",
                    SHIPPED
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Recipe> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CompressError::Recipe {
            file: file.clone(),
            field: String::new(),
            msg: format!("cannot read: {e}"),
        })?;
        Recipe::parse(&text, &file)
    }

    /// Parses recipe text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Recipe> {
        let mut r: Recipe = toml::from_str(text).map_err(|e| CompressError::Recipe {
            file: file.to_string(),
            field: String::new(),
            msg: e.to_string().trim().to_string(),
        })?;
        r.file = file.to_string();
        r.text = text.to_string();
        if r.passes.is_empty() {
            return Err(CompressError::Recipe {
                file: file.to_string(),
                field: "pass".into(),
                msg: "the recipe lists no passes ([[pass]] tables)".into(),
            });
        }
        Ok(r)
    }

    fn entry(&self, i: usize) -> Result<&'static PassEntry> {
        let t = &self.passes[i];
        let o = Options {
            file: &self.file,
            index: i,
            table: t,
        };
        let name = match t.get("name") {
            Some(toml::Value::String(s)) => s.as_str(),
            Some(_) => return Err(o.err("name", "expected a string")),
            None => return Err(o.err("name", "missing: every [[pass]] needs a name")),
        };
        PASSES.iter().find(|p| p.name == name).ok_or_else(|| {
            o.err(
                "name",
                format!(
                    "unknown pass '{name}'; valid passes: {}",
                    pass_names().join(", ")
                ),
            )
        })
    }

    /// Checks everything that can be checked before running: pass names,
    /// option names and values, and that calibration data and ranges are
    /// there for the passes that need them.
    pub fn check(&self, g: &Graph, ctx: &Context) -> Result<()> {
        let mut have_ranges = ctx.ranges.is_some();
        for i in 0..self.passes.len() {
            let e = self.entry(i)?;
            let o = Options {
                file: &self.file,
                index: i,
                table: &self.passes[i],
            };
            o.check_keys(e.options)?;
            let needs_data = matches!(e.needs, Needs::CalibData | Needs::CalibDataAndRanges);
            if needs_data && ctx.calib.as_ref().is_none_or(|c| c.is_empty()) {
                return Err(o.err(
                    "",
                    format!(
                        "pass '{}' needs calibration data: pass --calib DATASET[:N]",
                        e.name
                    ),
                ));
            }
            if needs_data {
                check_input_shape(g, ctx.calib.as_ref().expect("checked"), &o)?;
            }
            // Validate values now so a typo fails before minutes of calibration.
            match e.name {
                "quantize" => {
                    let plan = plan_from(&o, "weights")?;
                    if plan.activations.integer().is_some() && !have_ranges {
                        return Err(o.err(
                            "activations",
                            format!(
                                "{:?} activations need ranges: put 'calibrate' (or a data-free \
                                 range pass) before 'quantize'",
                                plan.activations
                            ),
                        ));
                    }
                }
                "mixed-precision" => {
                    plan_from(&o, "high")?;
                    weight_format(&o, "low", "int4")?;
                    low_widths(&o)?;
                    size_model(&o)?;
                    if !have_ranges {
                        return Err(o.err(
                            "",
                            "needs activation ranges: put 'calibrate' before 'mixed-precision'",
                        ));
                    }
                    budget_option(&o)?;
                }
                "calibrate" => {
                    observer_config(&o)?;
                }
                _ => {}
            }
            have_ranges |= e.gives_ranges;
        }
        Ok(())
    }

    /// Runs the passes in order; returns the final graph and one record per pass.
    pub fn run(&self, g: &Graph, ctx: &mut Context) -> Result<(Graph, Vec<PassRecord>)> {
        self.check(g, ctx)?;
        for i in 0..self.passes.len() {
            if self.entry(i)?.name == "quantize" {
                let o = Options {
                    file: &self.file,
                    index: i,
                    table: &self.passes[i],
                };
                ctx.weight_hint = Some(weight_format(&o, "weights", "int8")?);
            }
        }
        if ctx.source.is_none() {
            ctx.source = Some(g.clone());
        }
        let mut g = g.clone();
        let mut records = Vec::new();
        for i in 0..self.passes.len() {
            let e = self.entry(i)?;
            let o = Options {
                file: &self.file,
                index: i,
                table: &self.passes[i],
            };
            let (next, rec) = (e.run)(&g, &o, ctx)?;
            g = next;
            records.push(rec);
        }
        Ok((g, records))
    }
}

/// The model's single runtime input must accept the calibration images.
fn check_input_shape(g: &Graph, data: &CalibData, o: &Options) -> Result<()> {
    let inputs: Vec<_> = g
        .inputs
        .iter()
        .filter(|i| !g.initializers.contains_key(&i.name))
        .collect();
    let Some(first) = data.batches.first() else {
        return Ok(());
    };
    if inputs.len() != 1 {
        return Err(o.err(
            "",
            format!(
                "model/dataset mismatch: calibration feeds one image tensor, the model has {} inputs",
                inputs.len()
            ),
        ));
    }
    let Some(dims) = &inputs[0].shape else {
        return Ok(());
    };
    let shape = first.shape();
    let fits = dims.len() == shape.len()
        && dims.iter().zip(shape).skip(1).all(|(d, &s)| match d {
            Dim::Known(v) => *v == s,
            _ => true,
        });
    if !fits {
        let want: Vec<String> = dims
            .iter()
            .map(|d| d.known().map_or("?".to_string(), |v| v.to_string()))
            .collect();
        return Err(o.err(
            "",
            format!(
                "model/dataset mismatch: calibration batches are {shape:?} but model input '{}' is [{}]",
                inputs[0].name,
                want.join(", ")
            ),
        ));
    }
    Ok(())
}

fn observer_config(o: &Options) -> Result<ObserverConfig> {
    let spec = o.str("observer", "minmax")?;
    let kind = ObserverKind::parse(spec).ok_or_else(|| {
        o.err(
            "observer",
            format!(
                "unknown observer '{spec}'; valid: {}",
                ObserverKind::NAMES.join(", ")
            ),
        )
    })?;
    let bits = o.int("bits", 8)?;
    if !(2..=16).contains(&bits) {
        return Err(o.err("bits", format!("must be in 2..=16, got {bits}")));
    }
    let bins = o.int("bins", 2048)?;
    if bins < 16 {
        return Err(o.err("bins", format!("must be at least 16, got {bins}")));
    }
    Ok(ObserverConfig {
        kind,
        axis: o.bool("per_channel", false)?.then_some(1),
        symmetric: o.bool("symmetric", false)?,
        bits: bits as u32,
        bins: bins as usize,
    })
}

fn granularity(o: &Options) -> Result<WeightGranularity> {
    let s = o.str("granularity", "channel")?;
    Ok(match s {
        "tensor" => WeightGranularity::Tensor,
        "channel" => WeightGranularity::Channel,
        g => match g
            .strip_prefix("group:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n > 0 => WeightGranularity::Group(n),
            _ => {
                return Err(o.err(
                    "granularity",
                    format!("'{s}' is not one of tensor, channel, group:N"),
                ))
            }
        },
    })
}

pub(crate) fn weight_format(o: &Options, key: &str, default: &str) -> Result<WeightFormat> {
    let s = o.str(key, default)?;
    let scheme = match o.str("scheme", "symmetric")? {
        "symmetric" => Scheme::SymmetricNarrow,
        "symmetric-full" => Scheme::SymmetricFull,
        other => {
            return Err(o.err(
                "scheme",
                format!("'{other}' is not a weight scheme (symmetric, symmetric-full)"),
            ))
        }
    };
    let f = WeightFormat::parse(s, granularity(o)?, scheme).ok_or_else(|| {
        o.err(
            key,
            format!("unknown weight format '{s}' (fp32, int2..int8, fp16, bf16, posit8, posit16, flex16+5)"),
        )
    })?;
    if let WeightFormat::Int { bits, .. } = f {
        if !(2..=8).contains(&bits) {
            return Err(o.err(
                key,
                format!("invalid bit width {bits}: weights take 2..=8 bits"),
            ));
        }
    }
    Ok(f)
}

fn plan_from(o: &Options, weights_key: &str) -> Result<QuantPlan> {
    let weights = weight_format(o, weights_key, "int8")?;
    let a = o.str("activations", "u8")?;
    let activations = ActFormat::parse(a).ok_or_else(|| {
        o.err(
            "activations",
            format!("unknown activation format '{a}' (u8, i8, fp32, fp16, bf16, posit8, posit16, flex16+5)"),
        )
    })?;
    let mut layers = BTreeMap::new();
    if let Some(v) = o.table.get("layers") {
        let t = v
            .as_table()
            .ok_or_else(|| o.err("layers", "expected a table of node name = format"))?;
        for (node, f) in t {
            let s = f
                .as_str()
                .ok_or_else(|| o.err("layers", format!("'{node}': expected a format string")))?;
            let f = WeightFormat::parse(s, granularity(o)?, Scheme::SymmetricNarrow)
                .ok_or_else(|| o.err("layers", format!("'{node}': unknown format '{s}'")))?;
            if let WeightFormat::Int { bits, .. } = f {
                if !(2..=8).contains(&bits) {
                    return Err(o.err(
                        "layers",
                        format!("'{node}': invalid bit width {bits}: weights take 2..=8 bits"),
                    ));
                }
            }
            layers.insert(node.clone(), f);
        }
    }
    let mse_clip_bits = o.int("mse_clip_bits", 0)?;
    if !(0..=8).contains(&mse_clip_bits) {
        return Err(o.err(
            "mse_clip_bits",
            format!("must be 0 (off) to 8, got {mse_clip_bits}"),
        ));
    }
    Ok(QuantPlan {
        weights,
        activations,
        layers,
        skip: o.strings("skip")?.into_iter().collect::<BTreeSet<_>>(),
        float_tensors: BTreeSet::new(),
        mse_clip_bits: mse_clip_bits as u32,
        fp16_scales: o.bool("fp16_scales", false)?,
    })
}

fn budget_option(o: &Options) -> Result<(Option<f64>, Option<f64>, Option<f64>)> {
    let size = o.float_opt("size_budget")?;
    let bytes = o.float_opt("bytes")?;
    let energy = o.float_opt("energy_budget")?;
    let n = [size, bytes, energy].iter().filter(|x| x.is_some()).count();
    if n != 1 {
        return Err(o.err(
            "size_budget",
            "give exactly one budget: size_budget (fraction of the high-width model's bytes), \
             bytes, or energy_budget (fraction of its energy)",
        ));
    }
    for (k, v) in [("size_budget", size), ("energy_budget", energy)] {
        if let Some(v) = v {
            if !(v > 0.0 && v <= 1.0) {
                return Err(o.err(k, format!("must be a fraction in (0, 1], got {v}")));
            }
        }
    }
    Ok((size, bytes, energy))
}

fn pass_calibrate(g: &Graph, o: &Options, ctx: &mut Context) -> Result<(Graph, PassRecord)> {
    let cfg = observer_config(o)?;
    let data = ctx.calib.as_ref().expect("checked by Recipe::check");
    let samples = o.int("samples", data.len() as i64)?;
    if samples <= 0 {
        return Err(o.err("samples", format!("must be positive, got {samples}")));
    }
    let data = data.take(samples as usize);
    let tensors = activation_tensors(g);
    let passes = if cfg.kind == ObserverKind::MinMax
        || matches!(cfg.kind, ObserverKind::MovingAverage { .. })
    {
        1
    } else {
        2
    };
    let pb = ctx.bar((data.len() * passes) as u64, "calibrating");
    let ranges = calibrate(
        g,
        &tensors,
        &data.batches,
        &CalibConfig {
            observer: cfg,
            threads: ctx.threads,
        },
        |n| pb.inc(n as u64),
    )?;
    pb.finish_and_clear();
    let mut rec = PassRecord::new("calibrate")
        .option("observer", o.str("observer", "minmax")?)
        .option("samples", data.len());
    rec.metric("tensors", ranges.len() as f64);
    rec.metric("samples", data.len() as f64);
    ctx.ranges = Some(ranges);
    Ok((g.clone(), rec))
}

fn pass_quantize(g: &Graph, o: &Options, ctx: &mut Context) -> Result<(Graph, PassRecord)> {
    let mut plan = plan_from(o, "weights")?;
    plan.float_tensors.extend(ctx.float_tensors.iter().cloned());
    let empty = ActivationRanges::new();
    let ranges = ctx.ranges.as_ref().unwrap_or(&empty);
    insert_qdq(g, &plan, ranges)
}

/// `widths = ["int4", "int3", "int2"]`: the lower widths a multi-width
/// search may give a layer (empty: the single `low` width).
fn low_widths(o: &Options) -> Result<Vec<WeightFormat>> {
    let scheme = match o.str("low_scheme", "symmetric")? {
        "symmetric" => Scheme::SymmetricNarrow,
        "symmetric-full" => Scheme::SymmetricFull,
        other => {
            return Err(o.err(
                "low_scheme",
                format!("'{other}' is not a weight scheme (symmetric, symmetric-full)"),
            ))
        }
    };
    let mut v = Vec::new();
    for s in o.strings("widths")? {
        match WeightFormat::parse(&s, granularity(o)?, scheme) {
            Some(f @ WeightFormat::Int { bits, .. }) if (2..8).contains(&bits) => v.push(f),
            _ => {
                return Err(o.err(
                    "widths",
                    format!("'{s}' is not an integer width below 8 (int2..int7)"),
                ))
            }
        }
    }
    Ok(v)
}

fn size_model(o: &Options) -> Result<SizeModel> {
    match o.str("size_model", "nominal")? {
        "nominal" => Ok(SizeModel::Nominal),
        "encoded" => Ok(SizeModel::Encoded),
        "compact" => Ok(SizeModel::Compact),
        m => Err(o.err(
            "size_model",
            format!(
                "'{m}' is not nominal, encoded (the container's bytes, Huffman where smaller) \
                 or compact (encoded with version-2 quantisation parameters)"
            ),
        )),
    }
}

/// Quantisation-aware fine-tuning of the QDQ model (crate::qat) on the
/// training split of `data`, distilled from the recipe's source model.
fn pass_qat(g: &Graph, o: &Options, ctx: &mut Context) -> Result<(Graph, PassRecord)> {
    let spec = o.str("data", "fashion-mnist")?;
    let mut data = shrink_data::Dataset::open(spec, shrink_data::Split::Train)
        .map_err(|e| o.err("data", e.to_string()))?;
    let samples = o.int("samples", data.len() as i64)?;
    if samples <= 0 {
        return Err(o.err("samples", format!("must be positive, got {samples}")));
    }
    data = data.take(samples as usize);
    let positive = |key: &str, default: i64| -> Result<usize> {
        let v = o.int(key, default)?;
        if v <= 0 {
            return Err(o.err(key, format!("must be positive, got {v}")));
        }
        Ok(v as usize)
    };
    let lr = o.float_opt("lr")?.unwrap_or(1e-4);
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(o.err("lr", format!("must be positive, got {lr}")));
    }
    let source = ctx.source.clone();
    let distill = match (o.bool("distill", true)?, &source) {
        (true, Some(teacher)) => Some(crate::prune::finetune::Distill {
            teacher: teacher.clone(),
            temperature: o.float_opt("temperature")?.unwrap_or(4.0) as f32,
            alpha: o.float_opt("alpha")?.unwrap_or(0.5) as f32,
        }),
        _ => None,
    };
    let opts = crate::prune::finetune::FinetuneOptions {
        epochs: positive("epochs", 1)?,
        batch: positive("batch", 64)?,
        lr,
        seed: o.int("seed", 0)? as u64,
        max_steps: match o.int("max_steps", 0)? {
            0 => None,
            n if n > 0 => Some(n as usize),
            n => return Err(o.err("max_steps", format!("must be positive, got {n}"))),
        },
        threads: ctx.threads,
        distill,
    };
    let (mut q, mut rec, _) = crate::qat::qat(g, source.as_ref(), &data, &opts)?;
    // New codes, new best encodings (in the family the input used).
    if g.encodings.values().any(|e| e.needs_v2()) {
        choose_compact_encodings(&mut q);
        rec.metric("compact_bytes", crate::mixed::compact_bytes(&q));
    } else if g.encodings.values().any(|e| e.is_huffman()) {
        choose_encodings(&mut q);
    }
    rec.metric("encoded_bytes", crate::mixed::encoded_bytes(&q));
    Ok((q, rec))
}

/// Stores every tensor in the smaller of its plain and Huffman-coded form.
fn pass_entropy_code(g: &Graph, _o: &Options, _ctx: &mut Context) -> Result<(Graph, PassRecord)> {
    let mut q = g.clone();
    let (saved, huff) = choose_encodings(&mut q);
    let mut rec = PassRecord::new("entropy-code");
    rec.metric("bytes_saved", saved);
    rec.metric("huffman_tensors", huff as f64);
    rec.metric("encoded_bytes", crate::mixed::encoded_bytes(&q));
    Ok((q, rec))
}

/// Multi-width mixed precision (`widths`), sized by `size_model`.
fn pass_mixed_widths(
    g: &Graph,
    o: &Options,
    ctx: &mut Context,
    lows: Vec<WeightFormat>,
) -> Result<(Graph, PassRecord)> {
    let plan = plan_from(o, "high")?;
    let model = size_model(o)?;
    let metric = match o.str("metric", "kl")? {
        "kl" => Metric::Kl,
        "accuracy" => Metric::Accuracy,
        m => return Err(o.err("metric", format!("'{m}' is not kl or accuracy"))),
    };
    let ranges = ctx.ranges.clone().expect("checked by Recipe::check");
    let data = ctx.calib.as_ref().expect("checked by Recipe::check");
    let samples = o.int("samples", data.len() as i64)?;
    if samples <= 0 {
        return Err(o.err("samples", format!("must be positive, got {samples}")));
    }
    let data = data.take(samples as usize);
    let (size, bytes, energy) = budget_option(o)?;
    if energy.is_some() {
        return Err(o.err(
            "energy_budget",
            "a multi-width search ('widths') takes a size budget",
        ));
    }
    // The compact model is measured against the int8 model as the standard
    // container stores it (int8-calibrated-huffman: f32 scales, a section
    // per tensor), whole file: the budget for the tensor payloads is the
    // fraction of that file less what the compact file takes besides them
    // (header, graph, bundle framing), so the written file meets it.
    let mut file_metrics = Vec::new();
    let (high_bytes, overhead) = if model == SizeModel::Compact {
        let reference = QuantPlan {
            fp16_scales: false,
            ..plan.clone()
        };
        let (mut rq, _) = insert_qdq(g, &reference, &ranges)?;
        choose_encodings(&mut rq);
        let prov = shrink_graph::container::Provenance::new();
        let ref_file = shrink_graph::container::to_shrink_bytes(&rq, &prov)?
            .1
            .file_bytes as f64;
        let (mut cq, _) = insert_qdq(g, &plan, &ranges)?;
        choose_compact_encodings(&mut cq);
        let cfile = shrink_graph::container::to_shrink_bytes_with(
            &cq,
            &prov,
            &crate::mixed::COMPACT_LAYOUT,
        )?
        .1
        .file_bytes as f64;
        let overhead = cfile - crate::mixed::compact_bytes(&cq);
        file_metrics.push(("reference_file_bytes", ref_file));
        file_metrics.push(("high_compact_file_bytes", cfile));
        file_metrics.push(("compact_overhead_bytes", overhead));
        (ref_file, overhead)
    } else {
        (plan_bytes(g, &plan, &ranges, model)?, 0.0)
    };
    // Later passes re-learn codes (QAT) and with them the Huffman sizes:
    // `size_margin` (a fraction of the reference) is kept free for that.
    let margin = o.float_opt("size_margin")?.unwrap_or(0.0);
    if !(0.0..0.5).contains(&margin) {
        return Err(o.err("size_margin", format!("must lie in [0, 0.5), got {margin}")));
    }
    let budget = match (size, bytes) {
        (Some(f), _) => (f - margin) * high_bytes - overhead,
        (_, Some(b)) => b,
        _ => unreachable!("budget_option checked one budget"),
    };
    // Unreachable budgets fail before minutes of sensitivity runs.
    let mut lowest = plan.clone();
    if let Some(w) = lows.iter().min_by_key(|w| w.bits()) {
        for (l, _) in crate::quantize::weighted_layers(g) {
            if !plan.skip.contains(&l) {
                lowest.layers.insert(l, *w);
            }
        }
    }
    let floor = plan_bytes(g, &lowest, &ranges, model)?;
    if floor > budget {
        return Err(o.err(
            "",
            format!(
                "budget {budget:.0} B is unreachable: with every layer at {} bits the model still takes {floor:.0} B ({:.1}% of the {high_bytes:.0} B of the high-width model)",
                lows.iter().map(|w| w.bits()).min().unwrap_or(8),
                100.0 * floor / high_bytes
            ),
        ));
    }
    let layers = crate::quantize::weighted_layers(g).len();
    let pb = ctx.bar(layers as u64, "layer sensitivity");
    let costs = width_costs(
        g,
        &plan,
        &ranges,
        &lows,
        metric,
        model,
        &SensitivityData {
            batches: &data.batches,
            labels: Some(&data.labels),
            threads: ctx.threads,
        },
        |_| pb.inc(1),
    )?;
    pb.finish_and_clear();
    let (chosen, mut rec) = search_widths(g, &plan, &ranges, &lows, &costs, model, budget)
        .map_err(|e| o.err("", e.to_string()))?;
    rec.metric("high_bytes", high_bytes);
    for (k, v) in file_metrics {
        rec.metric(k, v);
    }
    rec.metric(
        "high_nominal_bytes",
        plan_bytes(g, &plan, &ranges, SizeModel::Nominal)?,
    );
    for c in &costs {
        rec.metric(&format!("damage/{}/w{}", c.layer, c.bits), c.damage);
        rec.metric(&format!("bytes/{}/w{}", c.layer, c.bits), c.bytes);
    }
    for (l, _) in crate::quantize::weighted_layers(g) {
        rec.metric(&format!("bits/{l}"), chosen.weight_format(&l).bits() as f64);
    }
    let corrected = if o.bool("bias_correction", false)? {
        let (gc, done) =
            crate::mixed::correct_low_bit_biases(g, &chosen, &ranges, &data.batches, ctx.threads)?;
        for l in &done {
            rec.change(format!("'{l}': empirical bias correction (W_q − W)·E[x]"));
        }
        rec.metric("bias_corrected", done.len() as f64);
        gc
    } else {
        g.clone()
    };
    let (mut q, qrec) = insert_qdq(&corrected, &chosen, &ranges)?;
    for c in qrec.changes {
        rec.change(c);
    }
    if model == SizeModel::Encoded {
        let (_, huff) = choose_encodings(&mut q);
        rec.metric("huffman_tensors", huff as f64);
    }
    if model == SizeModel::Compact {
        let (_, huff) = choose_compact_encodings(&mut q);
        rec.metric("huffman_tensors", huff as f64);
        rec.metric("compact_bytes", crate::mixed::compact_bytes(&q));
    }
    rec.metric("encoded_bytes", crate::mixed::encoded_bytes(&q));
    Ok((q, rec))
}

fn pass_mixed(g: &Graph, o: &Options, ctx: &mut Context) -> Result<(Graph, PassRecord)> {
    let lows = low_widths(o)?;
    if !lows.is_empty() || size_model(o)? == SizeModel::Encoded {
        let lows = if lows.is_empty() {
            vec![weight_format(o, "low", "int4")?]
        } else {
            lows
        };
        return pass_mixed_widths(g, o, ctx, lows);
    }
    let plan = plan_from(o, "high")?;
    let low = weight_format(o, "low", "int4")?;
    let metric = match o.str("metric", "kl")? {
        "kl" => Metric::Kl,
        "accuracy" => Metric::Accuracy,
        m => return Err(o.err("metric", format!("'{m}' is not kl or accuracy"))),
    };
    let ranges = ctx.ranges.clone().expect("checked by Recipe::check");
    let data = ctx.calib.as_ref().expect("checked by Recipe::check");
    let samples = o.int("samples", data.len() as i64)?;
    if samples <= 0 {
        return Err(o.err("samples", format!("must be positive, got {samples}")));
    }
    let data = data.take(samples as usize);
    let layers = crate::quantize::weighted_layers(g).len();
    let pb = ctx.bar(layers as u64, "layer sensitivity");
    let sens = sensitivities(
        g,
        &plan,
        &ranges,
        low,
        metric,
        &SensitivityData {
            batches: &data.batches,
            labels: Some(&data.labels),
            threads: ctx.threads,
        },
        |_| pb.inc(1),
    )?;
    pb.finish_and_clear();
    let (size, bytes, energy) = budget_option(o)?;
    let budget = if let Some(f) = size {
        Budget::Bytes(f * stored_bytes(&insert_qdq(g, &plan, &ranges)?.0))
    } else if let Some(b) = bytes {
        Budget::Bytes(b)
    } else {
        let f = energy.expect("one budget");
        let widths: Vec<(String, u32)> = crate::quantize::weighted_layers(g)
            .into_iter()
            .map(|(n, _)| {
                let b = plan.weight_format(&n).bits();
                (n, b)
            })
            .collect();
        Budget::EnergyPj(f * crate::mixed::energy_pj(g, &widths, plan.activations.bits())?)
    };
    let (chosen, mut rec) =
        search(g, &plan, &ranges, low, &sens, budget).map_err(|e| o.err("", e.to_string()))?;
    for s in &sens {
        rec.metric(&format!("damage/{}", s.layer), s.damage);
    }
    let (q, qrec) = insert_qdq(g, &chosen, &ranges)?;
    for c in qrec.changes {
        rec.change(c);
    }
    for (k, v) in qrec.metrics {
        rec.metric(&k, v);
    }
    Ok((q, rec))
}

/// The data-free passes (crate::dfq's steps) behind the recipe interface:
/// BatchNorm statistics travel in the [`Context`] from `fold-batchnorm` to
/// the passes that need them.
mod dfq_passes {
    use super::{Context, Options};
    use crate::bias_absorb::{absorb_high_bias, AbsorbOptions};
    use crate::bias_correct::{self, analytic_means, correct_bias, empirical_means, WeightQuant};
    use crate::cle::{equalize_cross_layer, CleOptions};
    use crate::quantize::{WeightFormat, WeightGranularity};
    use crate::ranges_bn::BnRangeOptions;
    use crate::relu6::Relu6Scope;
    use crate::{PassRecord, Result};
    use shrink_graph::Graph;

    fn stats<'c>(o: &Options, ctx: &'c mut Context) -> Result<&'c mut crate::fold_bn::BnStats> {
        ctx.bn_stats.as_mut().ok_or_else(|| {
            o.err(
                "",
                "needs BatchNorm statistics: put 'fold-batchnorm' before it",
            )
        })
    }

    pub(super) fn fold_batchnorm(
        g: &Graph,
        _o: &Options,
        ctx: &mut Context,
    ) -> Result<(Graph, PassRecord)> {
        let (g, rec, stats) = crate::fold_bn::fold_batchnorm(g)?;
        ctx.bn_stats = Some(stats);
        Ok((g, rec))
    }

    pub(super) fn relu6_to_relu(
        g: &Graph,
        o: &Options,
        _ctx: &mut Context,
    ) -> Result<(Graph, PassRecord)> {
        if !o.bool("enabled", true)? {
            return Ok((
                g.clone(),
                PassRecord::new("relu6-to-relu").option("enabled", false),
            ));
        }
        let scope = match o.str("scope", "between-layers")? {
            "between-layers" => Relu6Scope::BetweenLayers,
            "all" => Relu6Scope::All,
            s => return Err(o.err("scope", format!("'{s}' is not between-layers or all"))),
        };
        crate::relu6::relu6_to_relu(g, scope)
    }

    pub(super) fn cle(g: &Graph, o: &Options, ctx: &mut Context) -> Result<(Graph, PassRecord)> {
        let d = CleOptions::default();
        let opts = CleOptions {
            max_iterations: o.int("max_iterations", d.max_iterations as i64)?.max(1) as usize,
            tolerance: o.float_opt("tolerance")?.unwrap_or(d.tolerance),
            include_gemm: o.bool("include_gemm", d.include_gemm)?,
        };
        equalize_cross_layer(g, &opts, ctx.bn_stats.as_mut())
    }

    pub(super) fn bias_absorption(
        g: &Graph,
        o: &Options,
        ctx: &mut Context,
    ) -> Result<(Graph, PassRecord)> {
        let d = AbsorbOptions::default();
        let opts = AbsorbOptions {
            n_sigma: o.float_opt("n_sigma")?.map_or(d.n_sigma, |v| v as f32),
            through_padding: o.bool("through_padding", d.through_padding)?,
        };
        absorb_high_bias(g, stats(o, ctx)?, &opts)
    }

    pub(super) fn bias_correction(
        g: &Graph,
        o: &Options,
        ctx: &mut Context,
    ) -> Result<(Graph, PassRecord)> {
        // Correct for the weight format the recipe's quantize pass will use.
        let wq = match ctx.weight_hint {
            Some(WeightFormat::Int {
                bits,
                granularity,
                scheme,
            }) => WeightQuant {
                bits,
                scheme,
                granularity: match granularity {
                    WeightGranularity::Tensor => bias_correct::WeightGranularity::PerTensor,
                    WeightGranularity::Channel => bias_correct::WeightGranularity::PerChannel,
                    WeightGranularity::Group(n) => bias_correct::WeightGranularity::PerGroup(n),
                },
            },
            _ => WeightQuant::new(8, bias_correct::WeightGranularity::PerChannel),
        };
        match o.str("source", "analytic")? {
            "analytic" => {
                let means = analytic_means(g, stats(o, ctx)?);
                correct_bias(g, &means, &wq, "analytic (BN statistics)")
            }
            "empirical" => {
                let data = ctx.calib.as_ref().ok_or_else(|| {
                    o.err(
                        "source",
                        "empirical bias correction needs calibration data: pass --calib DATASET[:N]",
                    )
                })?;
                let means = empirical_means(g, &data.batches, ctx.threads)?;
                correct_bias(g, &means, &wq, "empirical (calibration data)")
            }
            s => Err(o.err("source", format!("'{s}' is not analytic or empirical"))),
        }
    }

    pub(super) fn ranges_from_bn(
        g: &Graph,
        o: &Options,
        ctx: &mut Context,
    ) -> Result<(Graph, PassRecord)> {
        let d = BnRangeOptions::default();
        let input_range = match o.table.get("input_range") {
            None => d.input_range,
            Some(v) => {
                let a = v
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| o.err("input_range", "expected [min, max]"))?;
                let f = |x: &toml::Value| {
                    x.as_float()
                        .or_else(|| x.as_integer().map(|i| i as f64))
                        .ok_or_else(|| o.err("input_range", "expected numbers"))
                };
                Some((f(&a[0])? as f32, f(&a[1])? as f32))
            }
        };
        let opts = BnRangeOptions {
            n_sigma: o.float_opt("n_sigma")?.map_or(d.n_sigma, |v| v as f32),
            input_range,
            ..d
        };
        let dynamic = match o.str("loose_ranges", "dynamic")? {
            "dynamic" => true,
            "static" => false,
            s => return Err(o.err("loose_ranges", format!("'{s}' is not dynamic or static"))),
        };
        let (r, rec) = crate::ranges_bn::ranges_from_bn(g, stats(o, ctx)?, &opts)?;
        if dynamic {
            // No dynamic quantiser in the QDQ export yet: those tensors stay float.
            ctx.float_tensors = r.bound_only.clone();
        }
        ctx.ranges = Some(r.ranges);
        Ok((g.clone(), rec))
    }
}
