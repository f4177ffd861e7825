//! Hardware cost model: what a precision choice costs in energy and area.
//!
//! Starts from Horowitz's 45 nm table ([`horowitz`]), extends it to other
//! widths and formats by stated scaling laws ([`precision`]), adds memory
//! energy by level and size ([`memory`]), and prices a model's layers
//! ([`workload`], [`model`]) — the energy = MACs × MAC energy + traffic ×
//! access energy model of Moons et al. 2017, whose minimum-energy bit-width
//! exploration is [`sweep`].

pub mod horowitz;
pub mod memory;
pub mod model;
pub mod precision;
pub mod sweep;
pub mod workload;

pub use memory::MemoryConfig;
pub use model::{estimate, Assignment, Breakdown, EnergyReport, LayerEnergy};
pub use precision::Precision;
pub use sweep::{sweep, SweepCell, SweepResult};
pub use workload::{layer_work, LayerWork};

#[derive(Debug, thiserror::Error)]
pub enum EnergyError {
    #[error("unknown precision '{0}' (expected fp32, fp16, bf16, intN with N in 1..=32, positN[eE], flex16)")]
    Precision(String),
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("invalid memory size '{0}' (examples: 256KiB, 1MiB, 32768)")]
    Size(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = EnergyError> = std::result::Result<T, E>;
