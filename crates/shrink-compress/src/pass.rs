//! What every pass returns besides the new graph: a record a user can read
//! (and a report can print) of what it changed and by how much.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The record of one pass run over one graph.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassRecord {
    /// Pass name as written in recipes (e.g. `fold-batchnorm`, `cle`).
    pub pass: String,
    /// The options it ran with, as `key = value` strings (recipe syntax).
    pub options: BTreeMap<String, String>,
    /// One line per change, naming the node or tensor it touched.
    pub changes: Vec<String>,
    /// Scalar results (e.g. `iterations`, `max_range_ratio`, `nodes_removed`).
    pub metrics: BTreeMap<String, f64>,
}

impl PassRecord {
    pub fn new(pass: &str) -> PassRecord {
        PassRecord {
            pass: pass.to_string(),
            ..PassRecord::default()
        }
    }

    pub fn option(mut self, key: &str, value: impl ToString) -> PassRecord {
        self.options.insert(key.to_string(), value.to_string());
        self
    }

    pub fn change(&mut self, line: impl Into<String>) {
        self.changes.push(line.into());
    }

    pub fn metric(&mut self, key: &str, value: f64) {
        self.metrics.insert(key.to_string(), value);
    }
}
