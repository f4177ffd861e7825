//! Differentiable execution of a shrink [`Graph`](shrink_graph::Graph):
//! a tape of forward ops over the runtime's fp32 kernels, a backward for
//! each, and the custom ops compression needs (fake quantisation with
//! straight-through estimators, learned step size, pruning masks, sign and
//! ternary STE) as first-class tape entries.

pub mod clip;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod zoo;
