//! Calibration: activation ranges from real data.
//!
//! [`observer`] turns the values one tensor takes into a range (min-max,
//! moving average, percentile, MSE-optimal, entropy); [`driver`] runs the fp32
//! model over calibration batches and feeds the observers; [`sample`] picks
//! calibration images the way the ONNX Runtime baselines did.

pub mod driver;
pub mod observer;
pub mod sample;

pub use driver::{calibrate, CalibConfig};
pub use observer::{Observer, ObserverConfig, ObserverKind};
