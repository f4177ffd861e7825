//! shrink-kernels (under construction)
