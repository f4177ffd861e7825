//! One module per subcommand.

pub mod bench;
pub mod eval;
pub mod export;
pub mod embed;
pub mod ops;
pub mod run;
