//! One module per subcommand.

pub mod bench;
pub mod energy;
pub mod eval;
pub mod export;
pub mod formats;
pub mod embed;
pub mod ops;
pub mod run;
