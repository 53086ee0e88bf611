//! The ownership record: what the webhook injected, kept in the `workload-identity.rs/injected` annotation so that
//! a later pass replaces only that and leaves what the user wrote alone.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::PatchOperation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::denial::Denial;
use super::patch::set_map_entry;
use wi_contract::*;

/// What the webhook injected into a pod, stored in the [`INJECTED_ANNOTATION`] annotation as compact JSON.
///
/// Only what is recorded here is ever replaced on a later pass; everything else belongs to the user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Marker {
    /// Env var names injected, by container name (container names are unique across a pod's containers and init
    /// containers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) env: BTreeMap<String, BTreeSet<String>>,
    /// Volume mounts injected, by container name, as volume names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) mounts: BTreeMap<String, BTreeSet<String>>,
    /// Volumes injected.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) volumes: BTreeSet<String>,
    /// Containers injected whole (the `wi-sidecar` native sidecar).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) containers: BTreeSet<String>,
}

impl Marker {
    pub(super) fn owns_env(&self, container: &str, name: &str) -> bool {
        self.env.get(container).is_some_and(|names| names.contains(name))
    }

    pub(super) fn owns_mount(&self, container: &str, volume: &str) -> bool {
        self.mounts.get(container).is_some_and(|vols| vols.contains(volume))
    }
}

pub(super) fn read_marker(value: Option<&String>) -> (Marker, Option<String>) {
    match value {
        None => (Marker::default(), None),
        Some(v) => match serde_json::from_str(v) {
            Ok(marker) => (marker, None),
            Err(_) => (
                Marker::default(),
                Some(format!(
                    "annotation {INJECTED_ANNOTATION} is not what this webhook writes; it is rewritten"
                )),
            ),
        },
    }
}

/// Records what this pass injected in the pod's annotation, when it differs from what was recorded.
pub(super) fn record(
    pod: &Map<String, Value>,
    old: &Marker,
    marker: &Marker,
    ops: &mut Vec<PatchOperation>,
) -> Result<(), Denial> {
    if marker == old {
        return Ok(());
    }
    // Serializing a struct of maps and sets of strings cannot fail; if it did, refuse rather than write "".
    let value =
        serde_json::to_string(marker).map_err(|e| Denial::Internal(format!("cannot record what was injected: {e}")))?;
    set_map_entry(
        pod,
        &["metadata", "annotations"],
        INJECTED_ANNOTATION,
        Value::String(value),
        ops,
    );
    Ok(())
}
