//! Numeric formats: the vocabulary every other shrink layer speaks.
//!
//! Each format is one type implementing [`Format`]: encode a slice of f32 to
//! codes plus the parameters decoding needs (serialisable with serde), and
//! decode back. Adding a format touches one file. [`DynFormat`] is the
//! object-safe face used where a list of formats is compared (`shrink formats`).
//!
//! | module | format |
//! |---|---|
//! | [`float16`] | fp16 / bf16 (round-to-nearest-even or stochastic) |
//! | [`intq`] | integers of 1..=16 bits with scales per tensor / channel / group |
//! | [`binary`] | {−1,+1}·α (XNOR-Net) and {0,1} |
//! | [`ternary`] | {−α,0,+α} (TWN) and {−α_n,0,+α_p} (TTQ) |
//! | [`posit`] | posit⟨n,es⟩, n ≤ 32, es ≤ 4, with quire |
//! | [`flexpoint`] | flex16+5 with Autoflex exponent management |
//! | [`pack`] | bit planes, dense 1/2/4-bit packing, int4 nibbles |
//! | [`bitpack`] | fixed-width packing of codes at any width 1..=64 |
//! | [`sparse`] | relative-index sparse streams (Deep Compression CSR/CSC) |
//! | [`codebook`] | exact codebooks: centroids + indices (weight sharing) |
//! | [`metrics`] | MSE, SQNR, max abs error |

pub mod binary;
pub mod bitpack;
pub mod codebook;
pub mod flexpoint;
pub mod float16;
pub mod intq;
pub mod metrics;
pub mod pack;
pub mod posit;
pub mod rounding;
pub mod sparse;
pub mod ternary;

pub use binary::{Binary, BinaryKind};
pub use flexpoint::{Autoflex, Flex16, FlexTensor};
pub use float16::{Bf16, Fp16};
pub use intq::{Granularity, IntQ, QuantConfig, QuantParams, QuantizedTensor, Scheme};
pub use metrics::ErrorStats;
pub use pack::BitPlanes;
pub use posit::{Posit, Quire};
pub use rounding::{Rounding, SplitMix64};
pub use ternary::{Ternary, TernaryKind};

/// Errors of the format layer: every variant says which parameter is wrong and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormatError {
    #[error("bits must be in 1..=16 for integer formats, got {0}")]
    Bits(u32),
    #[error("posit⟨{n},{es}⟩: n must be in 2..=32 and es in 0..=4")]
    Posit { n: u32, es: u32 },
    #[error("scale {index} is {value}: scales must be finite and non-zero")]
    Scale { index: usize, value: f32 },
    #[error("empty tensor: nothing to {0}")]
    Empty(&'static str),
    #[error("shape {shape:?} holds {expected} values but {got} were given")]
    Shape {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("axis {axis} is out of range for rank {rank}")]
    Axis { axis: usize, rank: usize },
    #[error("group size {group} does not divide axis length {len}")]
    Group { group: usize, len: usize },
    #[error("invalid parameter: {0}")]
    Invalid(String),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// A numeric format: encode f32 values to codes with their parameters, decode back.
///
/// `shape` matters to formats whose parameters depend on layout (per-channel
/// scales); element-wise formats only check that it matches the slice length.
pub trait Format {
    /// Codes together with everything decoding needs; serialisable so an
    /// encoded tensor can be stored and read back.
    type Encoded: Clone + serde::Serialize + serde::de::DeserializeOwned;
    /// Short name as the CLI prints it, e.g. `int4/channel` or `posit⟨8,0⟩`.
    fn name(&self) -> String;
    /// Storage bits per value (scales and other side parameters excluded).
    fn bits_per_value(&self) -> f64;
    fn encode(&self, values: &[f32], shape: &[usize]) -> Result<Self::Encoded>;
    fn decode(&self, encoded: &Self::Encoded) -> Result<Vec<f32>>;
}

/// Object-safe view of a [`Format`]: what the comparison tables need.
pub trait DynFormat {
    fn name(&self) -> String;
    fn bits_per_value(&self) -> f64;
    /// Encode then decode: the values a model would compute with.
    fn round_trip(&self, values: &[f32], shape: &[usize]) -> Result<Vec<f32>>;
}

impl<F: Format> DynFormat for F {
    fn name(&self) -> String {
        Format::name(self)
    }
    fn bits_per_value(&self) -> f64 {
        Format::bits_per_value(self)
    }
    fn round_trip(&self, values: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        let e = self.encode(values, shape)?;
        self.decode(&e)
    }
}

/// Checks that `shape` describes `len` values and that there is at least one.
pub(crate) fn check_shape(values_len: usize, shape: &[usize], what: &'static str) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != values_len {
        return Err(FormatError::Shape {
            shape: shape.to_vec(),
            expected,
            got: values_len,
        });
    }
    if values_len == 0 {
        return Err(FormatError::Empty(what));
    }
    Ok(())
}
