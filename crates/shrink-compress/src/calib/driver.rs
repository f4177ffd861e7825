//! The calibration driver: runs the fp32 model over calibration batches and
//! feeds every activation tensor that will be quantised to its observer.
//!
//! The runtime frees intermediates as soon as their last reader has run, so
//! the driver runs a copy of the graph whose outputs are the observed tensors;
//! the graph's own inputs are observed straight from the batch.

use super::observer::{Observer, ObserverConfig};
use crate::ranges::ActivationRanges;
use crate::{CompressError, Result};
use shrink_graph::{Graph, ValueInfo};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::{DType, Tensor};

/// What to calibrate with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibConfig {
    pub observer: ObserverConfig,
    /// Runtime threads (0: one per core).
    pub threads: usize,
}

/// Observes `tensors` of `graph` over `batches` (inputs of the graph's single
/// runtime input) and returns their ranges. A tensor that never takes a
/// finite value is an error naming it.
pub fn calibrate(
    graph: &Graph,
    tensors: &[String],
    batches: &[Tensor],
    config: &CalibConfig,
    mut progress: impl FnMut(usize),
) -> Result<ActivationRanges> {
    let err = |msg: String| CompressError::Pass {
        pass: "calibrate".into(),
        msg,
    };
    if batches.is_empty() {
        return Err(err("no calibration samples were given".into()));
    }
    let runtime_inputs: Vec<String> = graph
        .inputs
        .iter()
        .filter(|i| !graph.initializers.contains_key(&i.name))
        .map(|i| i.name.clone())
        .collect();
    if runtime_inputs.len() != 1 {
        return Err(err(format!(
            "calibration feeds one input; the model has {}: {runtime_inputs:?}",
            runtime_inputs.len()
        )));
    }
    let input = &runtime_inputs[0];
    let produced: std::collections::HashSet<&str> = graph
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(String::as_str))
        .collect();
    let mut observed = Vec::new();
    for t in tensors {
        if t != input && !produced.contains(t.as_str()) {
            return Err(err(format!(
                "tensor '{t}' is neither the input nor produced by a node"
            )));
        }
        observed.push(t.clone());
    }
    let mut probe = graph.clone();
    probe.outputs = observed
        .iter()
        .filter(|t| *t != input)
        .map(|t| ValueInfo::unknown(t.clone()))
        .collect();
    let session = Session::new(
        probe,
        SessionOptions {
            threads: config.threads,
            ..Default::default()
        },
    )?;
    let mut observers: Vec<Observer> = observed
        .iter()
        .map(|t| Observer::new(t.clone(), config.observer))
        .collect::<Result<_>>()?;
    let histograms = observers.iter().any(Observer::needs_histogram);
    for pass in 0..if histograms { 2 } else { 1 } {
        if pass == 1 {
            observers.iter_mut().for_each(Observer::begin_histograms);
        }
        for x in batches {
            let outs = session.run(vec![x.clone()])?;
            let mut outs = outs.into_iter();
            for o in observers.iter_mut() {
                let t = if o.name() == input {
                    x.clone()
                } else {
                    outs.next()
                        .ok_or_else(|| err("runtime returned fewer outputs".into()))?
                };
                if !t.dtype().is_float() {
                    continue;
                }
                let t = if t.dtype() == DType::F32 {
                    t
                } else {
                    t.cast(DType::F32)
                };
                let v = t.as_slice::<f32>()?;
                if pass == 0 {
                    o.observe(v, t.shape())?;
                } else {
                    o.observe_histogram(v, t.shape())?;
                }
            }
            progress(x.shape().first().copied().unwrap_or(1));
        }
    }
    let mut ranges = ActivationRanges::new();
    for o in &observers {
        if o.needs_histogram() || o.range().is_ok() {
            ranges.insert(o.name(), o.range()?);
        }
    }
    Ok(ranges)
}
