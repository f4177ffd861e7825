//! (ops of this family are added here)

pub(super) fn register(_r: &mut super::Registry) {}
