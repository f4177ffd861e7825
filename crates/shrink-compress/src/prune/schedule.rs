//! Gradual pruning schedules.
//!
//! Automated Gradual Pruning (Zhu & Gupta 2017): sparsity rises from s_i to
//! s_f over n pruning steps spaced Δt apart starting at t0,
//! s_t = s_f + (s_i − s_f)·(1 − (t − t0)/(n·Δt))³ — fast at first, while
//! the network has many redundant weights, slowly near the end, so
//! fine-tuning between steps can recover.

use super::{check_fraction, pass_error};
use crate::Result;

/// An AGP schedule over optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agp {
    pub initial: f64,
    pub target: f64,
    /// First step that prunes (t0).
    pub start: usize,
    /// Number of pruning steps (n).
    pub steps: usize,
    /// Optimiser steps between pruning steps (Δt).
    pub interval: usize,
}

impl Agp {
    pub fn new(
        initial: f64,
        target: f64,
        start: usize,
        steps: usize,
        interval: usize,
    ) -> Result<Agp> {
        check_fraction("agp", "initial sparsity", initial)?;
        check_fraction("agp", "final sparsity", target)?;
        if steps == 0 || interval == 0 {
            return Err(pass_error("agp", "steps and interval must be at least 1"));
        }
        Ok(Agp {
            initial,
            target,
            start,
            steps,
            interval,
        })
    }

    /// Sparsity in force at optimiser step `t` (held at s_i before t0 and at
    /// s_f after t0 + n·Δt).
    pub fn sparsity_at(&self, t: usize) -> f64 {
        let span = (self.steps * self.interval) as f64;
        let progress = (t.saturating_sub(self.start) as f64 / span).min(1.0);
        self.target + (self.initial - self.target) * (1.0 - progress).powi(3)
    }

    /// Whether step `t` is a pruning step (t0, t0 + Δt, …, t0 + n·Δt).
    pub fn prunes_at(&self, t: usize) -> bool {
        t >= self.start
            && t <= self.start + self.steps * self.interval
            && (t - self.start) / self.interval * self.interval == t - self.start
    }

    /// The `(step, sparsity)` targets of every pruning step, in order.
    pub fn targets(&self) -> Vec<(usize, f64)> {
        (0..=self.steps)
            .map(|k| {
                let t = self.start + k * self.interval;
                (t, self.sparsity_at(t))
            })
            .collect()
    }
}
