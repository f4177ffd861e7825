//! Short f32 copies, inlined instead of a libc `memmove` call.
//!
//! Building packed GEMM panels (im2col) moves rows of a few dozen floats at
//! a time; through `copy_from_slice` each becomes a `memmove` call whose
//! fixed cost dominated LeNet's convolutions. Here a run of up to a few
//! dozen floats is two or three masked 16-lane moves.

use crate::cpu::{self, Isa};
use crate::{check_len, Result};
use std::sync::OnceLock;

/// `dst.copy_from_slice(src)` for short runs (any length works).
#[inline]
pub fn copy_short(dst: &mut [f32], src: &[f32]) -> Result<()> {
    check_len("copy_short destination", src.len(), dst.len())?;
    static AVX512: OnceLock<bool> = OnceLock::new();
    if *AVX512.get_or_init(|| cpu::best() >= Isa::Avx512) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: AVX-512F checked at run time; lengths equal (above).
            unsafe { avx512::copy(dst, src) };
            return Ok(());
        }
    }
    dst.copy_from_slice(src);
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F available; `dst.len() == src.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn copy(dst: &mut [f32], src: &[f32]) {
        let n = src.len();
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        let mut i = 0;
        // SAFETY: every access is below n (full vectors) or masked to it.
        unsafe {
            while i + 16 <= n {
                _mm512_storeu_ps(d.add(i), _mm512_loadu_ps(s.add(i)));
                i += 16;
            }
            if i < n {
                let m: __mmask16 = (1u16 << (n - i)) - 1;
                _mm512_mask_storeu_ps(d.add(i), m, _mm512_maskz_loadu_ps(m, s.add(i)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_and_nothing_else() {
        let src: Vec<f32> = (0..100).map(|v| v as f32 + 0.5).collect();
        for n in 0..=70 {
            let mut dst = vec![f32::NAN; 80];
            copy_short(&mut dst[3..3 + n], &src[7..7 + n]).unwrap();
            assert!(dst[..3].iter().all(|v| v.is_nan()), "n={n}");
            assert_eq!(&dst[3..3 + n], &src[7..7 + n], "n={n}");
            assert!(dst[3 + n..].iter().all(|v| v.is_nan()), "n={n}");
        }
        let mut d = [0f32; 3];
        assert!(copy_short(&mut d, &src[..4]).is_err());
    }
}
