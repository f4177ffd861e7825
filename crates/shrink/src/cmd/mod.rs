//! One module per subcommand.

pub mod bench;
pub mod compress;
pub mod demo;
pub mod embed;
pub mod encode;
pub mod energy;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod formats;
pub mod inspect;
pub mod ops;
pub mod prune;
pub mod run;
pub mod train;
