//! Activation observers: from the values a tensor takes on calibration data
//! to the `[min, max]` range its quantiser should cover.
//!
//! | kind | range |
//! |---|---|
//! | min-max | extremes seen over all samples |
//! | moving-average min-max | exponential average of per-batch extremes (PyTorch's `MovingAverageMinMaxObserver`, constant 0.01) |
//! | percentile | the `p`-th percentile of the values (both tails for affine, of \|x\| for symmetric) |
//! | MSE | the clipping of the min-max range that minimises the expected quantisation error |
//! | entropy | TensorRT's KL-divergence threshold over a 2048-bin histogram of \|x\| |
//!
//! Histogram observers need the final extent of the data before they can bin
//! it, so calibration runs twice (see [`super::driver`]): pass one records
//! extremes, pass two fills histograms over that fixed extent. This keeps the
//! histograms exact instead of re-binning them every time a batch widens the
//! range.

use crate::ranges::TensorRange;
use crate::{CompressError, Result};
use serde::{Deserialize, Serialize};
use shrink_formats::intq::code_range;
use shrink_formats::{QuantParams, Scheme};

/// How an observer turns values into a range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ObserverKind {
    MinMax,
    /// `ema += momentum · (batch extreme − ema)`, the first batch initialising it.
    MovingAverage {
        momentum: f32,
    },
    /// Percentile in (0, 100], e.g. 99.99.
    Percentile {
        percentile: f64,
    },
    Mse,
    Entropy,
}

impl ObserverKind {
    /// Parses recipe spellings: `minmax`, `moving-average[:M]`, `percentile[:P]`, `mse`, `entropy`/`kl`.
    pub fn parse(s: &str) -> Option<ObserverKind> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |d: f64| -> Option<f64> { arg.map_or(Some(d), |a| a.parse().ok()) };
        Some(match name {
            "minmax" | "min-max" => ObserverKind::MinMax,
            "moving-average" | "ema" => ObserverKind::MovingAverage {
                momentum: num(0.01)? as f32,
            },
            "percentile" => ObserverKind::Percentile {
                percentile: num(99.99)?,
            },
            "mse" => ObserverKind::Mse,
            "entropy" | "kl" => ObserverKind::Entropy,
            _ => return None,
        })
    }

    pub const NAMES: &'static [&'static str] = &[
        "minmax",
        "moving-average[:momentum]",
        "percentile[:p]",
        "mse",
        "entropy",
    ];

    fn histogram(self) -> Option<HistKind> {
        match self {
            ObserverKind::MinMax | ObserverKind::MovingAverage { .. } => None,
            ObserverKind::Entropy => Some(HistKind::Abs),
            ObserverKind::Percentile { .. } | ObserverKind::Mse => Some(HistKind::Signed),
        }
    }
}

/// Everything an observer needs to know about the quantiser it serves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObserverConfig {
    pub kind: ObserverKind,
    /// One range per channel along this axis (1 for NCHW activations), or one per tensor.
    pub axis: Option<usize>,
    /// Symmetric ranges `[-a, a]` (a one-sided tensor keeps `[0, a]`) or affine `[min, max]`.
    pub symmetric: bool,
    /// Bit width of the target quantiser (MSE and entropy optimise for it).
    pub bits: u32,
    /// Histogram bins (TensorRT uses 2048).
    pub bins: usize,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            kind: ObserverKind::MinMax,
            axis: None,
            symmetric: false,
            bits: 8,
            bins: 2048,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HistKind {
    /// Bins over `[0, max|x|]`.
    Abs,
    /// Bins over `[min, max]`.
    Signed,
}

/// Statistics of one scale slot (the whole tensor or one channel).
#[derive(Debug, Clone)]
struct Slot {
    min: f32,
    max: f32,
    ema: Option<(f32, f32)>,
    hist: Vec<u64>,
    lo: f32,
    hi: f32,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            ema: None,
            hist: Vec::new(),
            lo: 0.0,
            hi: 0.0,
        }
    }
}

/// Observes one tensor over calibration batches.
#[derive(Debug, Clone)]
pub struct Observer {
    pub config: ObserverConfig,
    name: String,
    slots: Vec<Slot>,
}

/// `(outer, channels, inner)` of a shape split at `axis`.
fn split(shape: &[usize], axis: Option<usize>) -> Option<(usize, usize, usize)> {
    match axis {
        None => Some((1, 1, shape.iter().product())),
        Some(a) if a < shape.len() => Some((
            shape[..a].iter().product(),
            shape[a],
            shape[a + 1..].iter().product(),
        )),
        Some(_) => None,
    }
}

impl Observer {
    pub fn new(name: impl Into<String>, config: ObserverConfig) -> Result<Observer> {
        let name = name.into();
        let bad = |msg: String| CompressError::Tensor {
            pass: "calibrate".into(),
            tensor: name.clone(),
            msg,
        };
        if config.kind.histogram().is_some() && config.bins < 16 {
            return Err(bad(format!("{} histogram bins are too few (at least 16)", config.bins)));
        }
        if !(2..=16).contains(&config.bits) {
            return Err(bad(format!("bits must be in 2..=16, got {}", config.bits)));
        }
        if let ObserverKind::Percentile { percentile } = config.kind {
            if !(percentile > 0.0 && percentile <= 100.0) {
                return Err(bad(format!("percentile must be in (0, 100], got {percentile}")));
            }
        }
        if let ObserverKind::MovingAverage { momentum } = config.kind {
            if !(momentum > 0.0 && momentum <= 1.0) {
                return Err(bad(format!("momentum must be in (0, 1], got {momentum}")));
            }
        }
        Ok(Observer {
            config,
            name,
            slots: Vec::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn needs_histogram(&self) -> bool {
        self.config.kind.histogram().is_some()
    }

    fn layout(&mut self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        let (o, c, i) = split(shape, self.config.axis).ok_or_else(|| CompressError::Tensor {
            pass: "calibrate".into(),
            tensor: self.name.clone(),
            msg: format!(
                "per-channel axis {:?} is out of range for shape {shape:?}",
                self.config.axis
            ),
        })?;
        if self.slots.is_empty() {
            self.slots = vec![Slot::new(); c];
        } else if self.slots.len() != c {
            return Err(CompressError::Tensor {
                pass: "calibrate".into(),
                tensor: self.name.clone(),
                msg: format!(
                    "channel count changed between batches ({} then {c})",
                    self.slots.len()
                ),
            });
        }
        Ok((o, c, i))
    }

    /// Pass one: extremes (and their moving averages) of one batch.
    pub fn observe(&mut self, values: &[f32], shape: &[usize]) -> Result<()> {
        let (outer, c, inner) = self.layout(shape)?;
        let mut batch = vec![(f32::INFINITY, f32::NEG_INFINITY); c];
        for o in 0..outer {
            for (ch, b) in batch.iter_mut().enumerate() {
                let start = (o * c + ch) * inner;
                for &v in &values[start..start + inner] {
                    if v.is_finite() {
                        b.0 = b.0.min(v);
                        b.1 = b.1.max(v);
                    }
                }
            }
        }
        for (s, &(lo, hi)) in self.slots.iter_mut().zip(&batch) {
            if lo > hi {
                continue;
            }
            s.min = s.min.min(lo);
            s.max = s.max.max(hi);
            if let ObserverKind::MovingAverage { momentum } = self.config.kind {
                s.ema = Some(match s.ema {
                    None => (lo, hi),
                    Some((a, b)) => (a + momentum * (lo - a), b + momentum * (hi - b)),
                });
            }
        }
        Ok(())
    }

    /// Between the passes: fixes each slot's histogram extent from pass one.
    pub fn begin_histograms(&mut self) {
        let Some(kind) = self.config.kind.histogram() else {
            return;
        };
        for s in &mut self.slots {
            let (min, max) = if s.min <= s.max {
                (s.min, s.max)
            } else {
                (0.0, 0.0)
            };
            (s.lo, s.hi) = match kind {
                HistKind::Abs => (0.0, min.abs().max(max.abs())),
                HistKind::Signed => (min, max),
            };
            s.hist = vec![0; self.config.bins];
        }
    }

    /// Pass two: bins one batch.
    pub fn observe_histogram(&mut self, values: &[f32], shape: &[usize]) -> Result<()> {
        let Some(kind) = self.config.kind.histogram() else {
            return Ok(());
        };
        let (outer, c, inner) = self.layout(shape)?;
        let bins = self.config.bins;
        for o in 0..outer {
            for ch in 0..c {
                let s = &mut self.slots[ch];
                let width = (s.hi - s.lo) as f64;
                if width <= 0.0 {
                    // Constant slot: everything in bin 0.
                    s.hist[0] += inner as u64;
                    continue;
                }
                let k = bins as f64 / width;
                let start = (o * c + ch) * inner;
                for &v in &values[start..start + inner] {
                    if !v.is_finite() {
                        continue;
                    }
                    let x = match kind {
                        HistKind::Abs => v.abs() as f64,
                        HistKind::Signed => v as f64,
                    };
                    let b = ((x - s.lo as f64) * k).floor().clamp(0.0, (bins - 1) as f64) as usize;
                    s.hist[b] += 1;
                }
            }
        }
        Ok(())
    }

    /// The range each slot's quantiser should cover.
    pub fn range(&self) -> Result<TensorRange> {
        if self.slots.is_empty() || self.slots.iter().all(|s| s.min > s.max) {
            return Err(CompressError::Tensor {
                pass: "calibrate".into(),
                tensor: self.name.clone(),
                msg: "no finite value was observed".into(),
            });
        }
        let mut min = Vec::with_capacity(self.slots.len());
        let mut max = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let (lo, hi) = self.slot_range(s)?;
            let (lo, hi) = if self.config.symmetric {
                let a = lo.abs().max(hi.abs());
                (if lo >= 0.0 { 0.0 } else { -a }, a)
            } else {
                (lo, hi)
            };
            min.push(lo);
            max.push(hi);
        }
        Ok(TensorRange {
            min,
            max,
            axis: self.config.axis,
        })
    }

    fn slot_range(&self, s: &Slot) -> Result<(f32, f32)> {
        if s.min > s.max {
            return Ok((0.0, 0.0));
        }
        let needs_hist = self.needs_histogram();
        if needs_hist && s.hist.is_empty() {
            return Err(CompressError::Tensor {
                pass: "calibrate".into(),
                tensor: self.name.clone(),
                msg: "histogram observer used without its second pass".into(),
            });
        }
        let width = (s.hi - s.lo) as f64 / self.config.bins as f64;
        Ok(match self.config.kind {
            ObserverKind::MinMax => (s.min, s.max),
            ObserverKind::MovingAverage { .. } => s.ema.unwrap_or((s.min, s.max)),
            ObserverKind::Percentile { percentile } => {
                if self.config.symmetric {
                    // Percentile of |x|: a signed histogram folds onto |x| bins of the same width.
                    let t = abs_percentile(&s.hist, s.lo as f64, width, percentile);
                    ((-t).max(s.min as f64) as f32, t.min(s.max as f64) as f32)
                } else {
                    let (lo, hi) = two_tail_percentile(&s.hist, s.lo as f64, width, percentile);
                    (lo as f32, hi as f32)
                }
            }
            ObserverKind::Mse => {
                let (lo, hi) = mse_range(
                    &s.hist,
                    s.lo as f64,
                    width,
                    s.min,
                    s.max,
                    self.config.bits,
                    self.config.symmetric,
                    MSE_STEPS,
                )?;
                (lo, hi)
            }
            ObserverKind::Entropy => {
                let levels = if self.config.symmetric || s.min < 0.0 {
                    1usize << (self.config.bits - 1)
                } else {
                    1usize << self.config.bits
                };
                let t = kl_threshold(&s.hist, levels.min(s.hist.len())) as f64 * width;
                ((-t).max(s.min as f64) as f32, t.min(s.max as f64) as f32)
            }
        })
    }
}

/// Candidate clippings the MSE observer tries: `α·range` for `α = k/MSE_STEPS`.
pub const MSE_STEPS: usize = 100;

/// Percentile `p` of |x| from a signed histogram starting at `lo`.
fn abs_percentile(hist: &[u64], lo: f64, width: f64, p: f64) -> f64 {
    let mut pts: Vec<(f64, u64)> = hist
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(b, &c)| {
            let (a, z) = (lo + b as f64 * width, lo + (b + 1) as f64 * width);
            (a.abs().max(z.abs()), c)
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = pts.iter().map(|p| p.1).sum();
    let want = (p / 100.0 * total as f64).ceil() as u64;
    let mut acc = 0;
    for (x, c) in &pts {
        acc += c;
        if acc >= want {
            return *x;
        }
    }
    pts.last().map_or(0.0, |p| p.0)
}

/// Lower `(100−p)` and upper `p` percentiles, as bin edges (the lower edge of
/// the bin holding the low tail's cut, the upper edge of the high one's).
fn two_tail_percentile(hist: &[u64], lo: f64, width: f64, p: f64) -> (f64, f64) {
    let total: u64 = hist.iter().sum();
    let tail = ((100.0 - p) / 100.0 * total as f64).floor() as u64;
    let mut acc = 0;
    let mut first = 0;
    for (b, &c) in hist.iter().enumerate() {
        acc += c;
        if acc > tail {
            first = b;
            break;
        }
    }
    let mut acc = 0;
    let mut last = hist.len() - 1;
    for (b, &c) in hist.iter().enumerate().rev() {
        acc += c;
        if acc > tail {
            last = b;
            break;
        }
    }
    (lo + first as f64 * width, lo + (last + 1) as f64 * width)
}

/// Expected squared error of quantising the histogram's bin centres with the
/// quantiser for `[lo, hi]`.
pub fn histogram_mse(
    hist: &[u64],
    hist_lo: f64,
    width: f64,
    bits: u32,
    scheme: Scheme,
    lo: f32,
    hi: f32,
) -> Result<f64> {
    let (qmin, qmax) = code_range(bits, scheme)?;
    let (s, zp) = QuantParams::from_range(bits, scheme, lo, hi)?;
    let s = s as f64;
    let mut err = 0.0;
    for (b, &c) in hist.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let x = hist_lo + (b as f64 + 0.5) * width;
        let q = ((x / s).round_ties_even() + zp as f64).clamp(qmin as f64, qmax as f64);
        let d = (q - zp as f64) * s - x;
        err += c as f64 * d * d;
    }
    Ok(err)
}

/// The clipping `α·[min, max]` (α = k/steps, k = 1..=steps) with the least
/// histogram MSE; ties keep the widest range.
#[allow(clippy::too_many_arguments)]
pub fn mse_range(
    hist: &[u64],
    hist_lo: f64,
    width: f64,
    min: f32,
    max: f32,
    bits: u32,
    symmetric: bool,
    steps: usize,
) -> Result<(f32, f32)> {
    let scheme = if symmetric {
        Scheme::SymmetricNarrow
    } else {
        Scheme::Affine
    };
    let (min, max) = if symmetric {
        let a = min.abs().max(max.abs());
        (if min >= 0.0 { 0.0 } else { -a }, a)
    } else {
        (min, max)
    };
    let mut best = (f64::INFINITY, min, max);
    for k in (1..=steps).rev() {
        let a = k as f32 / steps as f32;
        let (lo, hi) = (min * a, max * a);
        let e = histogram_mse(hist, hist_lo, width, bits, scheme, lo, hi)?;
        if e < best.0 {
            best = (e, lo, hi);
        }
    }
    Ok((best.1, best.2))
}

/// Replaces zeros by `eps` and takes the same mass from the non-zero bins
/// (MXNet's `_smooth_distribution`), so KL stays finite.
fn smooth(p: &mut [f64], eps: f64) -> bool {
    let zeros = p.iter().filter(|&&x| x == 0.0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return false;
    }
    let eps1 = eps * zeros as f64 / nonzeros as f64;
    for x in p.iter_mut() {
        if *x == 0.0 {
            *x = eps;
        } else {
            *x -= eps1;
        }
    }
    true
}

/// TensorRT's entropy calibration on a histogram of |x|: the number of bins
/// `i` (from `levels` to all) whose clipped distribution P (outliers folded
/// into bin `i−1`) loses the least information, in KL divergence, when
/// quantised to `levels` levels (Q: each level's mass spread evenly over its
/// non-empty bins). Returns `i`; the threshold is `i · bin width`.
pub fn kl_threshold(hist: &[u64], levels: usize) -> usize {
    let n = hist.len();
    let levels = levels.clamp(1, n);
    let mut best = (f64::INFINITY, n);
    for i in levels..=n {
        let sliced = &hist[..i];
        let mut p: Vec<f64> = sliced.iter().map(|&c| c as f64).collect();
        p[i - 1] += hist[i..].iter().map(|&c| c as f64).sum::<f64>();
        let merged = i / levels;
        let mut q = vec![0f64; i];
        for j in 0..levels {
            let start = j * merged;
            let stop = if j == levels - 1 { i } else { start + merged };
            let chunk = &sliced[start..stop];
            let nz = chunk.iter().filter(|&&c| c != 0).count();
            if nz == 0 {
                continue;
            }
            let avg = chunk.iter().map(|&c| c as f64).sum::<f64>() / nz as f64;
            for (k, &c) in chunk.iter().enumerate() {
                if c != 0 {
                    q[start + k] = avg;
                }
            }
        }
        if !smooth(&mut p, 1e-4) || !smooth(&mut q, 1e-4) {
            continue;
        }
        let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(&a, _)| a > 0.0)
            .map(|(&a, &b)| {
                let (a, b) = (a / sp, b / sq);
                a * (a / b).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_per_channel_and_moving_average() {
        let cfg = ObserverConfig {
            axis: Some(1),
            ..Default::default()
        };
        let mut o = Observer::new("t", cfg).unwrap();
        // [N=1, C=2, 2]
        o.observe(&[1.0, -2.0, 5.0, 3.0], &[1, 2, 2]).unwrap();
        o.observe(&[4.0, 0.0, 1.0, 7.0], &[1, 2, 2]).unwrap();
        let r = o.range().unwrap();
        assert_eq!(r.min, vec![-2.0, 1.0]);
        assert_eq!(r.max, vec![4.0, 7.0]);
        let mut m = Observer::new(
            "t",
            ObserverConfig {
                kind: ObserverKind::MovingAverage { momentum: 0.5 },
                ..Default::default()
            },
        )
        .unwrap();
        m.observe(&[0.0, 2.0], &[2]).unwrap();
        m.observe(&[-2.0, 6.0], &[2]).unwrap();
        let r = m.range().unwrap();
        assert_eq!((r.min[0], r.max[0]), (-1.0, 4.0));
    }

    #[test]
    fn bad_configs_are_errors() {
        let c = ObserverConfig {
            kind: ObserverKind::Percentile { percentile: 0.0 },
            ..Default::default()
        };
        assert!(Observer::new("x", c).is_err());
        let mut o = Observer::new(
            "x",
            ObserverConfig {
                axis: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        let e = o.observe(&[1.0], &[1]).unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("axis"), "{e}");
    }
}
