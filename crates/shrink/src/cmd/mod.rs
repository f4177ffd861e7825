//! One module per subcommand.

pub mod bench;
pub mod embed;
pub mod eval;
pub mod export;
pub mod ops;
pub mod run;
