//! One module per subcommand.

pub mod ops;
