//! shrink-data (under construction)
