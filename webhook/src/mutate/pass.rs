//! One pass of the engine over a pod: what an earlier pass injected, what this one injects, the operations so far
//! and the warnings.

use crate::diagnostics::Warning;

use super::marker::Marker;
use super::patch::Ops;

/// One pass of the engine over a pod: what an earlier pass injected (`old`), what this one injects (`marker`), the
/// operations so far and the warnings.
pub(super) struct Pass<'a> {
    pub(super) old: &'a Marker<'a>,
    pub(super) marker: Marker<'a>,
    pub(super) ops: Ops,
    pub(super) warnings: Vec<Warning>,
}

impl<'a> Pass<'a> {
    /// A pass over a pod of `containers` containers.
    pub(super) fn new(old: &'a Marker<'a>, warnings: Vec<Warning>, containers: usize) -> Self {
        Pass {
            old,
            marker: Marker::default(),
            ops: Ops::for_containers(containers),
            warnings,
        }
    }
}
