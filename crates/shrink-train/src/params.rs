//! The weights a training run reads and updates, kept apart from the graph
//! so the optimiser mutates plain tensors and the graph is written once at
//! the end ([`ParamStore::write_into`]).

use crate::ops::{standard_registry, OpRegistry};
use crate::{Result, TrainError};
use indexmap::IndexMap;
use shrink_graph::Graph;
use shrink_tensor::{DType, Tensor};
use std::collections::HashSet;
use std::sync::Arc;

/// Which f32 initializers are trainable. Buffers (inputs an op declares
/// non-trainable, such as BatchNorm running statistics or a pruning mask)
/// never are, whatever the filter says.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamFilter {
    /// Every f32 initializer.
    All,
    /// Exactly these names (each must exist).
    Names(Vec<String>),
    /// Names matching any of these globs (`*` matches any run of characters).
    Patterns(Vec<String>),
    /// Everything except what the inner filter selects.
    Exclude(Box<ParamFilter>),
}

impl ParamFilter {
    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            ParamFilter::All => true,
            ParamFilter::Names(v) => v.iter().any(|n| n == name),
            ParamFilter::Patterns(v) => v.iter().any(|p| glob(p, name)),
            ParamFilter::Exclude(f) => !f.matches(name),
        }
    }
}

/// Glob match with `*` only (any run, possibly empty).
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !rest.starts_with(first) {
        return false;
    }
    rest = &rest[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Every f32 initializer of a graph (weights and buffers), in initializer
/// order, with which are trainable.
///
/// Tensors are shared with the executor's tape by reference count;
/// [`ParamStore::get_mut`] copies one only if a recorded tape still holds
/// it (it does not after [`crate::Executor::backward`]).
#[derive(Debug, Clone)]
pub struct ParamStore {
    params: IndexMap<String, Arc<Tensor>>,
    trainable: HashSet<String>,
}

impl ParamStore {
    /// Takes every f32 initializer; `trainable` picks the trainable ones,
    /// buffers excluded. A name in [`ParamFilter::Names`] that is not an f32
    /// initializer is an error.
    pub fn from_graph(g: &Graph, trainable: &ParamFilter) -> Result<ParamStore> {
        ParamStore::from_graph_with(g, trainable, standard_registry())
    }

    /// [`ParamStore::from_graph`] with the buffer declarations of a custom registry.
    pub fn from_graph_with(
        g: &Graph,
        trainable: &ParamFilter,
        registry: &OpRegistry,
    ) -> Result<ParamStore> {
        let buffers = buffer_names(g, registry);
        let mut params = IndexMap::new();
        let mut set = HashSet::new();
        for (name, t) in &g.initializers {
            if t.dtype() != DType::F32 {
                continue;
            }
            if trainable.matches(name) && !buffers.contains(name.as_str()) {
                set.insert(name.clone());
            }
            params.insert(name.clone(), Arc::new(t.clone()));
        }
        if let ParamFilter::Names(names) = trainable {
            for n in names {
                if !params.contains_key(n) {
                    return Err(TrainError::Param {
                        name: n.clone(),
                        msg: "not a float32 initializer of the graph".into(),
                    });
                }
                if buffers.contains(n.as_str()) {
                    return Err(TrainError::Param {
                        name: n.clone(),
                        msg:
                            "is a buffer (e.g. BatchNorm running statistic or mask), not trainable"
                                .into(),
                    });
                }
            }
        }
        Ok(ParamStore {
            params,
            trainable: set,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.params.get(name).map(|t| &**t)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.params.get_mut(name).map(Arc::make_mut)
    }

    /// Replaces a parameter's value (same shape and dtype).
    pub fn set(&mut self, name: &str, value: Tensor) -> Result<()> {
        let slot = self.params.get_mut(name).ok_or_else(|| TrainError::Param {
            name: name.into(),
            msg: "no such parameter".into(),
        })?;
        if slot.shape() != value.shape() || slot.dtype() != value.dtype() {
            return Err(TrainError::Param {
                name: name.into(),
                msg: format!(
                    "new value {:?} {} does not match {:?} {}",
                    value.shape(),
                    value.dtype(),
                    slot.shape(),
                    slot.dtype()
                ),
            });
        }
        *slot = Arc::new(value);
        Ok(())
    }

    pub(crate) fn shared(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.params.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    /// All names (trainable or not), in initializer order.
    pub fn names(&self) -> Vec<&str> {
        self.params.keys().map(String::as_str).collect()
    }

    /// Trainable names, in initializer order.
    pub fn trainable_names(&self) -> Vec<&str> {
        self.params
            .keys()
            .filter(|n| self.trainable.contains(*n))
            .map(String::as_str)
            .collect()
    }

    pub fn is_trainable(&self, name: &str) -> bool {
        self.trainable.contains(name)
    }

    /// Marks a parameter (not a buffer) trainable or frozen.
    pub fn set_trainable(&mut self, name: &str, on: bool) -> Result<()> {
        if !self.params.contains_key(name) {
            return Err(TrainError::Param {
                name: name.into(),
                msg: "no such parameter".into(),
            });
        }
        if on {
            self.trainable.insert(name.to_string());
        } else {
            self.trainable.remove(name);
        }
        Ok(())
    }

    /// Number of trainable scalars.
    pub fn trainable_len(&self) -> usize {
        self.trainable_names()
            .iter()
            .map(|n| self.params[*n].len())
            .sum()
    }

    /// (name, tensor) in initializer order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.params.iter().map(|(n, t)| (n.as_str(), &**t))
    }

    /// Writes every parameter and buffer back into the graph's initializers.
    pub fn write_into(&self, g: &mut Graph) -> Result<()> {
        for (name, t) in &self.params {
            match g.initializers.get_mut(name) {
                Some(slot) => *slot = (**t).clone(),
                None => {
                    return Err(TrainError::Param {
                        name: name.clone(),
                        msg: "the graph has no initializer of that name".into(),
                    })
                }
            }
        }
        Ok(())
    }
}

/// Initializer names some op uses as a buffer input.
fn buffer_names<'g>(g: &'g Graph, registry: &OpRegistry) -> HashSet<&'g str> {
    let mut out = HashSet::new();
    for n in &g.nodes {
        if let Some(op) = registry.get(&n.domain, &n.op_type) {
            for &i in op.buffer_inputs() {
                if let Some(name) = n.input(i) {
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("fc*.weight", "fc1.weight"));
        assert!(glob("*", "anything"));
        assert!(glob("*.bias", "conv1.bias"));
        assert!(!glob("*.bias", "conv1.weight"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("ab*ba", "aba"));
    }
}
