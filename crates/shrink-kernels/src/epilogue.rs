//! The fused epilogue of the integer GEMMs: i32 accumulators → output.
//!
//! Applied per output element `acc` in column `j`, in this exact order (the
//! SIMD path performs the same IEEE operations, so it is bit-identical):
//!
//! ```text
//! v = fma(acc as f32, scale[j], bias[j])      // scale: len 1 or N; bias: 0 if absent
//! v = min(max(v, lo), hi)                     // ReLU = (0, +inf), ReLU6, clip ...
//! f32 output: v
//! u8/i8 output: r = round_half_even(v); r = clamp(r, qmin - zo, qmax - zo); q = r + zo
//! ```
//!
//! For a requantising GEMM pass `scale = s_a·s_w[j]/s_out`, `bias = b[j]/s_out`
//! and `zo` the output zero point; for an f32 output pass `scale = s_a·s_w[j]`.
//! `I32` output skips the epilogue and writes the (zero-point-corrected) sums.

use crate::{KernelError, Result};

/// How accumulators become outputs; see the module doc for the formula.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Multiplier, one per output column or a single one for all.
    pub scale: &'a [f32],
    /// Added after scaling, one per output column.
    pub bias: Option<&'a [f32]>,
    /// Lower clip applied in the scaled float domain.
    pub lo: f32,
    /// Upper clip applied in the scaled float domain.
    pub hi: f32,
    /// Output zero point (quantised outputs only).
    pub out_zero: i32,
}

const ONE: [f32; 1] = [1.0];

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Epilogue {
            scale: &ONE,
            bias: None,
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
            out_zero: 0,
        }
    }
}

impl<'a> Epilogue<'a> {
    /// Scale only (per channel or a single value), no bias, no clip.
    pub fn scaled(scale: &'a [f32]) -> Self {
        Epilogue {
            scale,
            ..Default::default()
        }
    }
    /// Adds a per-column bias.
    pub fn with_bias(mut self, bias: &'a [f32]) -> Self {
        self.bias = Some(bias);
        self
    }
    /// Clips to `[0, +inf)`.
    pub fn relu(mut self) -> Self {
        self.lo = 0.0;
        self
    }
    /// Clips to `[lo, hi]`.
    pub fn clip(mut self, lo: f32, hi: f32) -> Self {
        self.lo = lo;
        self.hi = hi;
        self
    }
    /// Sets the output zero point of a quantised output.
    pub fn out_zero(mut self, zo: i32) -> Self {
        self.out_zero = zo;
        self
    }

    pub(crate) fn check(&self, n: usize) -> Result<()> {
        if self.scale.len() != 1 && self.scale.len() != n {
            return Err(KernelError::Length {
                what: "epilogue scale (1 or N)",
                expected: n,
                got: self.scale.len(),
            });
        }
        if let Some(b) = self.bias {
            crate::check_len("epilogue bias", n, b.len())?;
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn scale_at(&self, j: usize) -> f32 {
        if self.scale.len() == 1 {
            self.scale[0]
        } else {
            self.scale[j]
        }
    }

    #[inline]
    pub(crate) fn bias_at(&self, j: usize) -> f32 {
        self.bias.map_or(0.0, |b| b[j])
    }

    /// The float value of one element (before quantisation).
    #[inline]
    pub fn float(&self, acc: i32, j: usize) -> f32 {
        let v = (acc as f32).mul_add(self.scale_at(j), self.bias_at(j));
        v.max(self.lo).min(self.hi)
    }

    /// The quantised value of one element in `[qmin, qmax]`.
    #[inline]
    pub fn quant(&self, acc: i32, j: usize, qmin: i32, qmax: i32) -> i32 {
        let r = self.float(acc, j).round_ties_even();
        let r = r
            .max((qmin - self.out_zero) as f32)
            .min((qmax - self.out_zero) as f32);
        r as i32 + self.out_zero
    }
}

/// Where GEMM results go: a row-major `M×N` buffer of one of four types.
#[derive(Debug)]
pub enum Output<'a> {
    /// Raw (zero-point-corrected) accumulators; the epilogue is not applied.
    I32(&'a mut [i32]),
    /// Dequantised float values.
    F32(&'a mut [f32]),
    /// Requantised unsigned bytes.
    U8(&'a mut [u8]),
    /// Requantised signed bytes.
    I8(&'a mut [i8]),
}

impl Output<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Output::I32(o) => o.len(),
            Output::F32(o) => o.len(),
            Output::U8(o) => o.len(),
            Output::I8(o) => o.len(),
        }
    }
    pub(crate) fn ptr(&mut self) -> OutPtr {
        match self {
            Output::I32(o) => OutPtr::I32(o.as_mut_ptr()),
            Output::F32(o) => OutPtr::F32(o.as_mut_ptr()),
            Output::U8(o) => OutPtr::U8(o.as_mut_ptr()),
            Output::I8(o) => OutPtr::I8(o.as_mut_ptr()),
        }
    }
}

/// A raw view of an [`Output`] so threads can write disjoint tiles of it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OutPtr {
    I32(*mut i32),
    F32(*mut f32),
    U8(*mut u8),
    I8(*mut i8),
}

// SAFETY: an OutPtr is only created from a live `&mut` buffer that outlives the
// parallel region, and every task writes a disjoint set of elements of it.
unsafe impl Send for OutPtr {}
// SAFETY: as above; shared references only copy the pointer value.
unsafe impl Sync for OutPtr {}

/// Writes `acc[0..w]` (columns `j0..j0+w` of row `i`, row stride `n`) through
/// the epilogue, scalar version.
///
/// # Safety
/// `out` must be valid for writes of elements `i*n + j0 .. i*n + j0 + w`.
pub(crate) unsafe fn store_scalar(
    ep: &Epilogue,
    acc: &[i32],
    out: OutPtr,
    i: usize,
    n: usize,
    j0: usize,
) {
    let base = i * n + j0;
    for (t, &a) in acc.iter().enumerate() {
        let j = j0 + t;
        // SAFETY: the caller guarantees `base + t` is inside the buffer.
        unsafe {
            match out {
                OutPtr::I32(p) => *p.add(base + t) = a,
                OutPtr::F32(p) => *p.add(base + t) = ep.float(a, j),
                OutPtr::U8(p) => *p.add(base + t) = ep.quant(a, j, 0, 255) as u8,
                OutPtr::I8(p) => *p.add(base + t) = ep.quant(a, j, -128, 127) as i8,
            }
        }
    }
}

/// AVX-512 version of [`store_scalar`] for up to 16 columns in one register.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{Epilogue, OutPtr};
    use std::arch::x86_64::*;

    /// Stores 16 (or `w < 16`, masked) accumulators of row `i` at column `j0`.
    ///
    /// # Safety
    /// CPU must support AVX-512 F/BW; `out` valid for `i*n+j0 .. i*n+j0+w`;
    /// `ep.scale`/`ep.bias` valid for columns `j0..j0+w` (checked by callers).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn store16(
        ep: &Epilogue,
        acc: __m512i,
        out: OutPtr,
        i: usize,
        n: usize,
        j0: usize,
        w: usize,
    ) {
        let m: __mmask16 = if w >= 16 { 0xFFFF } else { (1u16 << w) - 1 };
        let base = i * n + j0;
        // SAFETY: all loads and stores are masked to the `w` valid columns,
        // which the caller guarantees are in bounds.
        unsafe {
            if let OutPtr::I32(p) = out {
                _mm512_mask_storeu_epi32(p.add(base) as *mut _, m, acc);
                return;
            }
            let s = if ep.scale.len() == 1 {
                _mm512_set1_ps(ep.scale[0])
            } else {
                _mm512_maskz_loadu_ps(m, ep.scale.as_ptr().add(j0))
            };
            let b = match ep.bias {
                Some(b) => _mm512_maskz_loadu_ps(m, b.as_ptr().add(j0)),
                None => _mm512_setzero_ps(),
            };
            let v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), s, b);
            let v = _mm512_min_ps(
                _mm512_max_ps(v, _mm512_set1_ps(ep.lo)),
                _mm512_set1_ps(ep.hi),
            );
            let (qmin, qmax) = match out {
                OutPtr::F32(p) => {
                    _mm512_mask_storeu_ps(p.add(base), m, v);
                    return;
                }
                OutPtr::U8(_) => (0, 255),
                _ => (-128, 127),
            };
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let r = _mm512_max_ps(r, _mm512_set1_ps((qmin - ep.out_zero) as f32));
            let r = _mm512_min_ps(r, _mm512_set1_ps((qmax - ep.out_zero) as f32));
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(r), _mm512_set1_epi32(ep.out_zero));
            match out {
                OutPtr::U8(p) => _mm512_mask_cvtepi32_storeu_epi8(p.add(base) as *mut _, m, q),
                OutPtr::I8(p) => _mm512_mask_cvtepi32_storeu_epi8(p.add(base) as *mut _, m, q),
                _ => {}
            }
        }
    }
}
