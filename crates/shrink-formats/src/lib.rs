//! shrink-formats (under construction)
