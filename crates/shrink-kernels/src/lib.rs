//! CPU kernels over plain slices: packed weights, shapes, nothing of graphs.
//!
//! Every kernel family has a scalar reference (`*::reference`) that the SIMD
//! paths must equal bit for bit (integer kernels) and a portable path that
//! always works. The SIMD path is picked at run time from the CPU's features
//! ([`cpu::Isa`]), never at compile time only, so one binary runs everywhere.
//!
//! Families:
//! - [`int8`]: u8 activations × s8 weights → i32, AVX-512 VNNI `vpdpbusd`,
//!   AVX2 (`vpmaddwd`, which cannot saturate), scalar; fused epilogue.
//! - [`f32gemm`]: f32 GEMM (our AVX-512 panel kernel; the `gemm` crate
//!   where AVX-512 is missing).
//! - [`bf16gemm`]: bf16 weights, `vdpbf16ps` (AVX512_BF16) or widened to f32.
//! - [`binary`]: XNOR-popcount GEMM on bit-packed {−1,+1}.
//! - [`binary_connect`]: binary weights × u8/f32 activations, additions only;
//!   [`ternary`]: two-mask ternary weights × binary or u8 activations.
//! - [`bitserial`]: any w_bits × a_bits in 1..=8 as weighted sums of
//!   AND-popcount products over bit planes (BISMO).
//! - [`int4`]: int4 weights × u8 activations, per-channel or per-group scales.
//! - [`activation`]: vectorised exp / erf (GELU, Softmax).
//! - [`directconv`]: direct f32 conv for few output channels (LeNet).
//! - [`dwconv`]: depthwise 3×3 f32 planes with fused bias and clamp;
//!   [`nhwc`]: channels-last depthwise 3×3 and 1×1 convs (MobileNet blocks).
//! - [`conv`]: Conv2d (im2col over the GEMMs, 1×1 fast path, depthwise
//!   f32 and int8); [`pool`] and [`eltwise`]: what the runtime needs around it.
//! - [`quantize`]: f32 → int8 per output channel; [`bitplanes`]: byte codes
//!   → bit planes (`vptestmb`: one plane word per instruction).
//! - [`huffman`]: canonical Huffman codec, 4 interleaved streams, multi-symbol tables.
//! - [`peak`]: register-only probes of the per-core peak of each format.

pub mod activation;
pub mod bf16gemm;
pub mod binary;
pub mod binary_connect;
pub mod bitplanes;
pub mod bits;
pub mod bitserial;
pub mod conv;
pub mod cpu;
pub mod directconv;
pub mod dwconv;
pub mod eltwise;
pub mod epilogue;
pub mod f32gemm;
pub mod huffman;
pub mod int4;
pub mod int8;
pub mod memory;
pub mod movement;
pub mod nhwc;
pub mod peak;
pub mod pool;
pub mod quantize;
mod scratch;
pub mod ternary;
mod tiling;

/// Errors from kernel entry points: shapes and buffer lengths that do not agree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    /// A buffer has the wrong length for the given shape.
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A parameter is outside what the kernel supports.
    #[error("{what}: {why}")]
    Unsupported { what: &'static str, why: String },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, KernelError>;

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Length {
            what,
            expected,
            got,
        })
    }
}
