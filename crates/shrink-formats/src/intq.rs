//! Integer formats intQ, Q in 1..=16: `x ≈ scale · (q − zero_point)`.
//!
//! * **Scheme** — symmetric narrow (`q ∈ [−(2^(Q−1)−1), 2^(Q−1)−1]`, zero point 0,
//!   the range kernels like because negation never overflows), symmetric full
//!   (`q ∈ [−2^(Q−1), 2^(Q−1)−1]`), or affine (`q ∈ [0, 2^Q−1]` with a zero point so
//!   that a one-sided range such as post-ReLU activations uses every code).
//! * **Granularity** — one scale per tensor, per channel along any axis, or per
//!   group of `G` consecutive elements along an axis (one scale per group per
//!   position of the other axes).
//! * **Scale** — from the data (min/max of each slot) or from a given range.
//!
//! Encoding divides in f64: `x / scale` for f32 operands is never within f64
//! rounding of a half-integer unless it is one, so rounding the f64 quotient is
//! correctly rounded (no double-rounding ties).
//!
//! Scale slot layout: the scale tensor has the shape of the input with the
//! axis length `A` replaced by `A` (per channel: only that axis kept, so the
//! scales are indexed by channel) or `A/G` (per group: all axes kept).

use crate::rounding::{Rounder, Rounding};
use crate::{check_shape, Format, FormatError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    SymmetricNarrow,
    SymmetricFull,
    Affine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Granularity {
    PerTensor,
    PerChannel { axis: usize },
    PerGroup { axis: usize, group: usize },
}

/// Everything needed to turn codes back into values; serialisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantParams {
    pub bits: u32,
    pub scheme: Scheme,
    pub granularity: Granularity,
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
}

/// Where scales come from when encoding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ScaleSource {
    /// Min/max of each scale slot's values.
    Data,
    /// One fixed range for every slot (e.g. from calibration).
    Range { min: f32, max: f32 },
}

/// An intQ format: how to choose parameters and how to round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantConfig {
    pub bits: u32,
    pub scheme: Scheme,
    pub granularity: Granularity,
    pub rounding: Rounding,
    pub source: ScaleSource,
}

/// The `Format` type for intQ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntQ(pub QuantConfig);

impl IntQ {
    /// Symmetric narrow-range, scale from data, nearest-even: the usual weight format.
    pub fn symmetric(bits: u32, granularity: Granularity) -> IntQ {
        IntQ(QuantConfig {
            bits,
            scheme: Scheme::SymmetricNarrow,
            granularity,
            rounding: Rounding::NearestEven,
            source: ScaleSource::Data,
        })
    }
}

/// Codes with their parameters and shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizedTensor {
    pub shape: Vec<usize>,
    pub params: QuantParams,
    pub codes: Vec<i32>,
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=16).contains(&bits) {
        Ok(())
    } else {
        Err(FormatError::Bits(bits))
    }
}

/// Inclusive code range of a scheme.
pub fn code_range(bits: u32, scheme: Scheme) -> Result<(i32, i32)> {
    check_bits(bits)?;
    let half = 1i32 << (bits - 1);
    match scheme {
        Scheme::SymmetricNarrow if bits < 2 => Err(FormatError::Invalid(
            "symmetric narrow range needs at least 2 bits (1 bit leaves only the code 0)".into(),
        )),
        Scheme::SymmetricNarrow => Ok((-(half - 1), half - 1)),
        Scheme::SymmetricFull => Ok((-half, half - 1)),
        Scheme::Affine => Ok((0, (1i32 << bits) - 1)),
    }
}

/// Maps each flat element index to its scale slot without division in the hot loop.
pub(crate) struct SlotMap {
    outer: usize,
    axis_len: usize,
    inner: usize,
    kind: Granularity,
}

impl SlotMap {
    pub(crate) fn new(shape: &[usize], g: Granularity) -> Result<SlotMap> {
        let (axis, group) = match g {
            Granularity::PerTensor => {
                return Ok(SlotMap {
                    outer: 1,
                    axis_len: 1,
                    inner: shape.iter().product(),
                    kind: g,
                })
            }
            Granularity::PerChannel { axis } => (axis, 1),
            Granularity::PerGroup { axis, group } => (axis, group),
        };
        if axis >= shape.len() {
            return Err(FormatError::Axis {
                axis,
                rank: shape.len(),
            });
        }
        if group == 0 || !shape[axis].is_multiple_of(group) {
            return Err(FormatError::Group {
                group,
                len: shape[axis],
            });
        }
        Ok(SlotMap {
            outer: shape[..axis].iter().product(),
            axis_len: shape[axis],
            inner: shape[axis + 1..].iter().product(),
            kind: g,
        })
    }

    pub(crate) fn slots(&self) -> usize {
        match self.kind {
            Granularity::PerTensor => 1,
            Granularity::PerChannel { .. } => self.axis_len,
            Granularity::PerGroup { group, .. } => self.outer * self.axis_len / group * self.inner,
        }
    }

    /// Calls `f(slot, flat_index)` for every element, in memory order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let mut flat = 0;
        for o in 0..self.outer {
            for a in 0..self.axis_len {
                for i in 0..self.inner {
                    let slot = match self.kind {
                        Granularity::PerTensor => 0,
                        Granularity::PerChannel { .. } => a,
                        Granularity::PerGroup { group, .. } => {
                            (o * (self.axis_len / group) + a / group) * self.inner + i
                        }
                    };
                    f(slot, flat);
                    flat += 1;
                }
            }
        }
    }
}

impl QuantParams {
    /// Parameters for a `[min, max]` range (widened to include 0 so zero is exact).
    pub fn from_range(bits: u32, scheme: Scheme, min: f32, max: f32) -> Result<(f32, i32)> {
        let (qmin, qmax) = code_range(bits, scheme)?;
        if !min.is_finite() || !max.is_finite() || min > max {
            return Err(FormatError::Invalid(format!(
                "range [{min}, {max}] must be finite with min <= max"
            )));
        }
        let (lo, hi) = (min.min(0.0) as f64, max.max(0.0) as f64);
        let (scale, zp) = match scheme {
            Scheme::SymmetricNarrow => (lo.abs().max(hi) / qmax as f64, 0),
            // Full range: 2^Q levels spread over [−m, m] like PyTorch's symmetric observer.
            Scheme::SymmetricFull => (2.0 * lo.abs().max(hi) / (qmax - qmin) as f64, 0),
            Scheme::Affine => {
                let s = (hi - lo) / (qmax - qmin) as f64;
                let zp = if s > 0.0 {
                    (qmin as f64 - lo / s).round_ties_even() as i32
                } else {
                    0
                };
                (s, zp.clamp(qmin, qmax))
            }
        };
        // An all-zero slot gets scale 1: every code decodes exactly to 0 anyway.
        let scale = if scale > 0.0 { scale as f32 } else { 1.0 };
        Ok((scale, zp))
    }

    /// Checks bits, scale count and scale values against a shape.
    pub fn validate(&self, shape: &[usize]) -> Result<()> {
        code_range(self.bits, self.scheme)?;
        let slots = SlotMap::new(shape, self.granularity)?.slots();
        if self.scale.len() != slots || self.zero_point.len() != slots {
            return Err(FormatError::Invalid(format!(
                "{:?} over shape {shape:?} needs {slots} scales and zero points, got {} and {}",
                self.granularity,
                self.scale.len(),
                self.zero_point.len()
            )));
        }
        for (index, &value) in self.scale.iter().enumerate() {
            if !value.is_finite() || value == 0.0 {
                return Err(FormatError::Scale { index, value });
            }
        }
        Ok(())
    }

    /// Codes for `values` under these parameters.
    pub fn quantize(
        &self,
        values: &[f32],
        shape: &[usize],
        rounding: Rounding,
    ) -> Result<Vec<i32>> {
        check_shape(values.len(), shape, "quantize")?;
        self.validate(shape)?;
        let (qmin, qmax) = code_range(self.bits, self.scheme)?;
        let map = SlotMap::new(shape, self.granularity)?;
        let mut r = Rounder::new(rounding);
        let mut codes = vec![0i32; values.len()];
        map.for_each(|slot, i| {
            let v = values[i] as f64 / self.scale[slot] as f64;
            let q = r.round(v) + self.zero_point[slot] as f64;
            // NaN becomes the zero point (`as` maps NaN to 0 before the shift).
            codes[i] = if q.is_nan() {
                self.zero_point[slot]
            } else {
                q.clamp(qmin as f64, qmax as f64) as i32
            };
        });
        Ok(codes)
    }

    pub fn dequantize(&self, codes: &[i32], shape: &[usize]) -> Result<Vec<f32>> {
        check_shape(codes.len(), shape, "dequantize")?;
        self.validate(shape)?;
        let map = SlotMap::new(shape, self.granularity)?;
        let mut out = vec![0f32; codes.len()];
        map.for_each(|slot, i| {
            out[i] = ((codes[i] - self.zero_point[slot]) as f64 * self.scale[slot] as f64) as f32;
        });
        Ok(out)
    }
}

impl QuantConfig {
    /// Chooses scales and zero points for `values`.
    pub fn params_for(&self, values: &[f32], shape: &[usize]) -> Result<QuantParams> {
        check_shape(values.len(), shape, "choose quantization parameters for")?;
        code_range(self.bits, self.scheme)?;
        let map = SlotMap::new(shape, self.granularity)?;
        let n = map.slots();
        let (mut lo, mut hi) = (vec![0f32; n], vec![0f32; n]);
        match self.source {
            ScaleSource::Range { min, max } => {
                lo.fill(min);
                hi.fill(max);
            }
            ScaleSource::Data => map.for_each(|s, i| {
                let v = values[i];
                if v.is_finite() {
                    lo[s] = lo[s].min(v);
                    hi[s] = hi[s].max(v);
                }
            }),
        }
        let mut scale = Vec::with_capacity(n);
        let mut zero_point = Vec::with_capacity(n);
        for s in 0..n {
            let (sc, zp) = QuantParams::from_range(self.bits, self.scheme, lo[s], hi[s])?;
            scale.push(sc);
            zero_point.push(zp);
        }
        Ok(QuantParams {
            bits: self.bits,
            scheme: self.scheme,
            granularity: self.granularity,
            scale,
            zero_point,
        })
    }
}

impl Format for IntQ {
    type Encoded = QuantizedTensor;
    fn name(&self) -> String {
        let g = match self.0.granularity {
            Granularity::PerTensor => "tensor".to_string(),
            Granularity::PerChannel { axis } => format!("channel{axis}"),
            Granularity::PerGroup { axis, group } => format!("group{group}@{axis}"),
        };
        let s = match self.0.scheme {
            Scheme::SymmetricNarrow => "",
            Scheme::SymmetricFull => "/full",
            Scheme::Affine => "/affine",
        };
        format!("int{}/{g}{s}", self.0.bits)
    }
    fn bits_per_value(&self) -> f64 {
        self.0.bits as f64
    }
    fn encode(&self, values: &[f32], shape: &[usize]) -> Result<QuantizedTensor> {
        let params = self.0.params_for(values, shape)?;
        let codes = params.quantize(values, shape, self.0.rounding)?;
        Ok(QuantizedTensor {
            shape: shape.to_vec(),
            params,
            codes,
        })
    }
    fn decode(&self, e: &QuantizedTensor) -> Result<Vec<f32>> {
        e.params.dequantize(&e.codes, &e.shape)
    }
}

/// 1.5·2^52: adding and subtracting it rounds an f64 of magnitude < 2^51 to the
/// nearest integer, ties to even, with plain adds the compiler vectorises
/// (`round_ties_even` would be a libm call on baseline x86-64).
const RNE_MAGIC: f64 = 6_755_399_441_055_744.0;

/// The int8 fast path: symmetric narrow, per output channel (rows of a
/// row-major `[rows, cols]` matrix), nearest-even. Same codes as
/// [`QuantParams::quantize`] with `PerChannel { axis: 0 }`; written as a
/// straight loop over each row so it vectorises.
pub fn quantize_i8_per_channel(
    values: &[f32],
    cols: usize,
    scales: &[f32],
    out: &mut [i8],
) -> Result<()> {
    let rows = scales.len();
    check_shape(values.len(), &[rows, cols], "quantize")?;
    check_shape(out.len(), &[rows, cols], "quantize into")?;
    for (index, &value) in scales.iter().enumerate() {
        if !value.is_finite() || value == 0.0 {
            return Err(FormatError::Scale { index, value });
        }
    }
    for ((x, o), &s) in values
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .zip(scales)
    {
        // Multiplying by the f64 reciprocal rounds the same as dividing: the
        // error (≤ 2^−45 for |q| ≤ 128) is far below the least distance of
        // x/s from a half-integer it is not equal to (≥ 2^−26 for f32 x, s),
        // and a multiply vectorises where a divide does not keep up.
        let inv = 1.0 / s as f64;
        for (xi, oi) in x.iter().zip(o.iter_mut()) {
            let v = (*xi as f64 * inv).clamp(-127.0, 127.0);
            *oi = ((v + RNE_MAGIC) - RNE_MAGIC) as i32 as i8;
        }
    }
    Ok(())
}

/// Per-row symmetric int8 scales (`max|row| / 127`, 1 for an all-zero row).
pub fn i8_scales_per_row(values: &[f32], cols: usize) -> Result<Vec<f32>> {
    if cols == 0 || values.is_empty() || !values.len().is_multiple_of(cols) {
        return Err(FormatError::Empty("choose int8 scales for"));
    }
    Ok(values
        .chunks_exact(cols)
        .map(|r| {
            let m = r.iter().fold(0f32, |m, &x| m.max(x.abs()));
            if m > 0.0 && m.is_finite() {
                (m as f64 / 127.0) as f32
            } else {
                1.0
            }
        })
        .collect())
}

/// Inverse of [`quantize_i8_per_channel`].
pub fn dequantize_i8_per_channel(codes: &[i8], cols: usize, scales: &[f32], out: &mut [f32]) {
    for ((q, o), &s) in codes
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .zip(scales)
    {
        for (qi, oi) in q.iter().zip(o.iter_mut()) {
            *oi = *qi as f32 * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;

    fn randn(n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                // sum of uniforms: roughly Gaussian, enough for weights-like data
                ((0..4).map(|_| r.next_f64()).sum::<f64>() - 2.0) as f32
            })
            .collect()
    }

    /// Brute-force nearest code (ties to even) in exact f64 arithmetic.
    fn nearest(x: f32, s: f32, zp: i32, qmin: i32, qmax: i32) -> i32 {
        let mut best = qmin;
        let mut bd = f64::INFINITY;
        for q in qmin..=qmax {
            let d = (x as f64 - (q - zp) as f64 * s as f64).abs();
            if d < bd || (d == bd && (q - zp) % 2 == 0) {
                best = q;
                bd = d;
            }
        }
        best
    }

    #[test]
    fn every_code_round_trips_for_every_width_and_scheme() {
        for bits in 1..=16 {
            for scheme in [
                Scheme::SymmetricNarrow,
                Scheme::SymmetricFull,
                Scheme::Affine,
            ] {
                let Ok((qmin, qmax)) = code_range(bits, scheme) else {
                    assert_eq!((bits, scheme), (1, Scheme::SymmetricNarrow));
                    continue;
                };
                let zp = if scheme == Scheme::Affine {
                    (qmax + 1) / 3
                } else {
                    0
                };
                let p = QuantParams {
                    bits,
                    scheme,
                    granularity: Granularity::PerTensor,
                    scale: vec![0.037],
                    zero_point: vec![zp],
                };
                let codes: Vec<i32> = (qmin..=qmax).collect();
                let shape = [codes.len()];
                let vals = p.dequantize(&codes, &shape).unwrap();
                assert_eq!(
                    p.quantize(&vals, &shape, Rounding::NearestEven).unwrap(),
                    codes
                );
            }
        }
    }

    #[test]
    fn nearest_even_is_correctly_rounded() {
        let mut r = SplitMix64::new(5);
        for bits in [2, 3, 4, 8] {
            let (qmin, qmax) = code_range(bits, Scheme::SymmetricNarrow).unwrap();
            let s = 0.1f32;
            let p = QuantParams {
                bits,
                scheme: Scheme::SymmetricNarrow,
                granularity: Granularity::PerTensor,
                scale: vec![s],
                zero_point: vec![0],
            };
            let mut xs: Vec<f32> = (0..2000)
                .map(|_| (r.next_f64() * 30.0 - 15.0) as f32)
                .collect();
            // exact ties: (q + 0.5)·s computed in f32 may not be exact, so use scale 0.25
            let codes = p.quantize(&xs, &[xs.len()], Rounding::NearestEven).unwrap();
            for (x, q) in xs.iter().zip(&codes) {
                assert_eq!(*q, nearest(*x, s, 0, qmin, qmax), "x={x} bits={bits}");
            }
            let p2 = QuantParams {
                scale: vec![0.25],
                ..p
            };
            xs = (qmin..qmax).map(|q| (q as f32 + 0.5) * 0.25).collect();
            let codes = p2
                .quantize(&xs, &[xs.len()], Rounding::NearestEven)
                .unwrap();
            for (x, q) in xs.iter().zip(&codes) {
                assert_eq!(*q, nearest(*x, 0.25, 0, qmin, qmax), "tie x={x}");
                assert_eq!(q % 2, 0);
            }
        }
    }

    #[test]
    fn rounding_modes_on_ties() {
        let p = QuantParams {
            bits: 8,
            scheme: Scheme::SymmetricFull,
            granularity: Granularity::PerTensor,
            scale: vec![1.0],
            zero_point: vec![0],
        };
        let x = [2.5f32, -2.5, 0.7, -0.7];
        let q = |r| p.quantize(&x, &[4], r).unwrap();
        assert_eq!(q(Rounding::NearestEven), vec![2, -2, 1, -1]);
        assert_eq!(q(Rounding::NearestAway), vec![3, -3, 1, -1]);
        assert_eq!(q(Rounding::Floor), vec![2, -3, 0, -1]);
    }

    #[test]
    fn stochastic_rounding_is_unbiased_in_value() {
        let n = 1_000_000;
        let x: Vec<f32> = randn(n, 9);
        let cfg = QuantConfig {
            bits: 4,
            scheme: Scheme::SymmetricNarrow,
            granularity: Granularity::PerTensor,
            rounding: Rounding::Stochastic { seed: 11 },
            source: ScaleSource::Range {
                min: -2.0,
                max: 2.0,
            },
        };
        let e = IntQ(cfg).encode(&x, &[n]).unwrap();
        let d = IntQ(cfg).decode(&e).unwrap();
        let s = e.params.scale[0] as f64;
        let mean_err: f64 = x.iter().zip(&d).map(|(a, b)| (*b - *a) as f64).sum::<f64>() / n as f64;
        assert!(
            (mean_err / s).abs() < 1e-3,
            "mean error {mean_err} (scale {s})"
        );
        assert_eq!(
            IntQ(cfg).encode(&x, &[n]).unwrap(),
            e,
            "same seed, same codes"
        );
    }

    #[test]
    fn per_channel_and_per_group_slots() {
        // [2, 3, 4] tensor, channel axis 1: scale of channel c is max|x[:, c, :]| / 127.
        let x: Vec<f32> = (0..24).map(|i| (i as f32 - 11.0) * 0.5).collect();
        let shape = [2, 3, 4];
        let p = IntQ::symmetric(8, Granularity::PerChannel { axis: 1 })
            .0
            .params_for(&x, &shape)
            .unwrap();
        for c in 0..3 {
            let m = (0..2)
                .flat_map(|o| (0..4).map(move |i| o * 12 + c * 4 + i))
                .map(|i| x[i].abs())
                .fold(0f32, f32::max);
            assert_eq!(p.scale[c], (m as f64 / 127.0) as f32);
        }
        // groups of 2 along the last axis: 2*3*2 slots, slot of x[o,c,i] = (o*3+c)*2 + i/2
        let g = IntQ::symmetric(4, Granularity::PerGroup { axis: 2, group: 2 });
        let p = g.0.params_for(&x, &shape).unwrap();
        assert_eq!(p.scale.len(), 12);
        for slot in 0..12 {
            let m = x[2 * slot].abs().max(x[2 * slot + 1].abs());
            assert_eq!(
                p.scale[slot],
                if m > 0.0 {
                    (m as f64 / 7.0) as f32
                } else {
                    1.0
                }
            );
        }
        let d = g.decode(&g.encode(&x, &shape).unwrap()).unwrap();
        for (a, b) in x.iter().zip(&d) {
            assert!((a - b).abs() <= 5.5 / 7.0 / 2.0 + 1e-6);
        }
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<QuantParams>(&json).unwrap(), p);
    }

    #[test]
    fn affine_uses_the_whole_range() {
        let x: Vec<f32> = (0..256).map(|i| i as f32 / 255.0 * 6.0).collect();
        let f = IntQ(QuantConfig {
            bits: 8,
            scheme: Scheme::Affine,
            granularity: Granularity::PerTensor,
            rounding: Rounding::NearestEven,
            source: ScaleSource::Data,
        });
        let e = f.encode(&x, &[256]).unwrap();
        assert_eq!(e.params.zero_point, vec![0]);
        assert_eq!(e.codes, (0..256).collect::<Vec<i32>>());
    }

    #[test]
    fn fast_int8_path_matches_general_path() {
        let (rows, cols) = (37, 129);
        let mut x = randn(rows * cols, 3);
        // plant exact ties and near-ties of row 0's scale
        let s0 = i8_scales_per_row(&x, cols).unwrap()[0];
        for (j, k) in (0..20).enumerate() {
            let t = (k as f64 - 9.5) * s0 as f64;
            x[j + 1] = if j % 2 == 0 {
                t as f32
            } else {
                (t as f32).next_up()
            };
        }
        let scales = i8_scales_per_row(&x, cols).unwrap();
        let mut fast = vec![0i8; rows * cols];
        quantize_i8_per_channel(&x, cols, &scales, &mut fast).unwrap();
        let e = IntQ::symmetric(8, Granularity::PerChannel { axis: 0 })
            .encode(&x, &[rows, cols])
            .unwrap();
        assert_eq!(e.params.scale, scales);
        assert_eq!(fast.iter().map(|&q| q as i32).collect::<Vec<_>>(), e.codes);
        let mut back = vec![0f32; rows * cols];
        dequantize_i8_per_channel(&fast, cols, &scales, &mut back);
        assert_eq!(
            back,
            IntQ::symmetric(8, Granularity::PerChannel { axis: 0 })
                .decode(&e)
                .unwrap()
        );
    }

    #[test]
    fn invalid_parameters_are_clear_errors() {
        let x = [1.0f32, 2.0];
        assert_eq!(
            IntQ::symmetric(0, Granularity::PerTensor).encode(&x, &[2]),
            Err(FormatError::Bits(0))
        );
        assert_eq!(
            IntQ::symmetric(17, Granularity::PerTensor).encode(&x, &[2]),
            Err(FormatError::Bits(17))
        );
        assert_eq!(
            IntQ::symmetric(8, Granularity::PerTensor).encode(&[], &[0]),
            Err(FormatError::Empty("choose quantization parameters for"))
        );
        for bad in [0.0, f32::NAN] {
            let p = QuantParams {
                bits: 8,
                scheme: Scheme::SymmetricNarrow,
                granularity: Granularity::PerTensor,
                scale: vec![bad],
                zero_point: vec![0],
            };
            let e = p.quantize(&x, &[2], Rounding::NearestEven).unwrap_err();
            assert!(matches!(e, FormatError::Scale { index: 0, .. }));
            assert!(e.to_string().contains("finite and non-zero"));
        }
        assert!(matches!(
            IntQ::symmetric(8, Granularity::PerChannel { axis: 3 }).encode(&x, &[2]),
            Err(FormatError::Axis { axis: 3, rank: 1 })
        ));
        assert!(matches!(
            IntQ::symmetric(8, Granularity::PerGroup { axis: 0, group: 3 }).encode(&x, &[2]),
            Err(FormatError::Group { group: 3, len: 2 })
        ));
    }
}
