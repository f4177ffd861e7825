//! shrink-energy (under construction)
