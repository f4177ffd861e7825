//! Differentiable execution of a shrink [`Graph`](shrink_graph::Graph):
//! a tape of forward ops over the runtime's fp32 kernels, a backward for
//! each, and the custom ops compression needs (fake quantisation with
//! straight-through estimators, learned step size, pruning masks, sign and
//! ternary STE) as first-class tape entries.
//!
//! # The API in one screen
//!
//! ```text
//! let mut params = ParamStore::from_graph(&g, &ParamFilter::All)?;   // f32 initializers
//! let mut exec = Executor::new(&g)?;              // fails naming a node whose op has no backward
//! let out = exec.forward(&mut params, &[("input", &x)], Mode::Train)?;  // records the tape
//! let grads = exec.backward(&params, &[dloss_dlogits])?;              // name -> gradient
//! for (name, g) in grads.iter() { /* optimiser updates params.get_mut(name) */ }
//! params.write_into(&mut g)?;                     // trained weights back into the graph
//! ```
//!
//! - [`ParamStore`]: every f32 initializer of the graph, by name, in
//!   initializer order, with a flag saying which are trainable
//!   ([`ParamFilter`] picks them). Buffers (BatchNorm running statistics,
//!   pruning masks, fake-quant scales: inputs an op declares non-trainable
//!   through [`DiffOp::buffer_inputs`]) are never trainable; BatchNorm's
//!   running statistics are updated in place by a [`Mode::Train`] forward.
//! - [`Executor`]: runs the graph in node order. [`Mode::Train`] records the
//!   tape (each node's inputs, outputs and whatever its op saved) and makes
//!   BatchNorm use batch statistics and Dropout drop (seeded by
//!   [`Executor::set_seed`] and the step count, so runs are reproducible);
//!   [`Mode::Eval`] is inference. [`Executor::backward`] walks the tape in
//!   reverse and returns [`Grads`]: one gradient per trainable parameter (zero
//!   where the parameter did not influence the outputs).
//! - Ops: one extension point, the [`DiffOp`] trait, registered in an
//!   [`OpRegistry`] keyed by (domain, op type). [`OpRegistry::standard`] holds
//!   every ONNX op the CNN and BERT models use, plus the custom ops of domain
//!   [`SHRINK_DOMAIN`] (`FakeQuant`, `LsqQuant`, `Mask`, `SignSte`,
//!   `TernarySte`, `Detach`; see [`custom`]). [`insert`] puts those around
//!   given weights or activations. Forward of most ops is the runtime's own
//!   kernel (so training and inference agree to the bit); backward is ours.
//! - [`gradcheck`]: the central-difference checker every op is tested with,
//!   public so ops added later are checked the same way.

pub mod custom;
mod error;
mod executor;
pub mod gradcheck;
pub mod insert;
pub mod ops;
mod params;

pub use error::{Result, TrainError};
pub use executor::{Executor, Grads};
pub use ops::{BackwardCtx, DiffOp, Forward, ForwardCtx, Mode, OpRegistry};
pub use params::{ParamFilter, ParamStore};

/// Domain of shrink's own training ops (`FakeQuant`, `LsqQuant`, `Mask`, …).
pub const SHRINK_DOMAIN: &str = "ai.shrink";

pub mod checkpoint;
pub mod clip;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod trainer;
pub mod zoo;
