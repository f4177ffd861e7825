//! Run-time CPU feature detection and the instruction-set levels kernels pick from.
//!
//! Detection happens once (`is_x86_feature_detected!`) and is cached. Each
//! kernel family asks [`best`] for the highest level it has an implementation
//! for; tests and benchmarks can force a lower level to compare paths on the
//! same machine.

use std::sync::OnceLock;

/// An instruction-set level a kernel can be compiled for, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, any CPU: the reference and the portable fallback.
    Scalar,
    /// x86-64 AVX2 + FMA + POPCNT (Haswell and later, Zen 1 and later).
    Avx2,
    /// AVX-512 F/BW/VL/DQ + VNNI + VPOPCNTDQ (Ice Lake, Zen 4 and later).
    Avx512,
    /// [`Isa::Avx512`] plus AVX512_BF16 (`vdpbf16ps`).
    Avx512Bf16,
}

/// What this CPU supports, detected once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub avx2_fma: bool,
    pub popcnt: bool,
    pub avx512: bool,
    pub avx512_vnni: bool,
    pub avx512_vpopcntdq: bool,
    pub avx512_bf16: bool,
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    use std::arch::is_x86_feature_detected as has;
    let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq");
    Features {
        avx2_fma: has!("avx2") && has!("fma"),
        popcnt: has!("popcnt"),
        avx512,
        avx512_vnni: avx512 && has!("avx512vnni"),
        avx512_vpopcntdq: avx512 && has!("avx512vpopcntdq"),
        avx512_bf16: avx512 && has!("avx512bf16"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features {
        avx2_fma: false,
        popcnt: false,
        avx512: false,
        avx512_vnni: false,
        avx512_vpopcntdq: false,
        avx512_bf16: false,
    }
}

/// The features of the running CPU (detected on first call).
pub fn features() -> Features {
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(detect)
}

/// The highest [`Isa`] level the running CPU supports in full.
pub fn best() -> Isa {
    let f = features();
    if f.avx512 && f.avx512_vnni && f.avx512_vpopcntdq && f.avx2_fma {
        if f.avx512_bf16 {
            Isa::Avx512Bf16
        } else {
            Isa::Avx512
        }
    } else if f.avx2_fma && f.popcnt {
        Isa::Avx2
    } else {
        Isa::Scalar
    }
}

/// All levels this CPU can run, lowest first (for tests comparing every path).
pub fn available() -> Vec<Isa> {
    let top = best();
    [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16]
        .into_iter()
        .filter(|&i| i <= top)
        .collect()
}

/// `requested` lowered to what the CPU supports, so forcing a level is always safe.
pub fn clamp(requested: Isa) -> Isa {
    requested.min(best())
}
