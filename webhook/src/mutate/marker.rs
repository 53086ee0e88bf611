//! The ownership record: what the webhook injected, kept in the `workload-identity.rs/injected` annotation so that
//! a later pass replaces only that and leaves what the user wrote alone.

use crate::diagnostics::{Code, Subject, Warning};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::denial::Denial;
use super::patch::{OpList, set_map_entry};
use wi_contract::*;

/// What the webhook injected into a pod, stored in the [`INJECTED_ANNOTATION`] annotation as compact JSON.
///
/// Only what is recorded here is ever replaced on a later pass; everything else belongs to the user. The names of
/// the one a pass builds are borrowed from the pod and the contract; the one read from the annotation owns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Marker<'a> {
    /// Env var names injected, by container name (container names are unique across a pod's containers and init
    /// containers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) env: BTreeMap<Cow<'a, str>, BTreeSet<Cow<'a, str>>>,
    /// Volume mounts injected, by container name, as volume names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) mounts: BTreeMap<Cow<'a, str>, BTreeSet<Cow<'a, str>>>,
    /// Volumes injected.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) volumes: BTreeSet<Cow<'a, str>>,
    /// Containers injected whole (the `wi-sidecar` native sidecar).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(super) containers: BTreeSet<Cow<'a, str>>,
}

impl Marker<'_> {
    pub(super) fn owns_env(&self, container: &str, name: &str) -> bool {
        self.env.get(container).is_some_and(|names| names.contains(name))
    }

    pub(super) fn owns_mount(&self, container: &str, volume: &str) -> bool {
        self.mounts.get(container).is_some_and(|vols| vols.contains(volume))
    }
}

pub(super) fn read_marker(value: Option<&String>) -> (Marker<'static>, Option<Warning>) {
    match value {
        None => (Marker::default(), None),
        Some(v) => match serde_json::from_str(v) {
            Ok(marker) => (marker, None),
            Err(_) => (
                Marker::default(),
                Some(Warning::new(
                    Code::InjectedRecord,
                    Subject::Pod,
                    format!("annotation {INJECTED_ANNOTATION} is not what this webhook writes; it is rewritten"),
                )),
            ),
        },
    }
}

/// Records what this pass injected in the pod's annotation, when it differs from what was recorded.
pub(super) fn record(
    pod: &Map<String, Value>,
    old: &Marker<'_>,
    marker: &Marker<'_>,
    ops: &mut OpList,
) -> Result<(), Denial> {
    if marker == old {
        return Ok(());
    }
    set_map_entry(
        pod,
        &["metadata", "annotations"],
        INJECTED_ANNOTATION,
        &|out| marker.write_literal(out),
        ops,
    )
}

impl Marker<'_> {
    /// Writes the marker's compact JSON quoted as a JSON string: the annotation's value as the patch carries it.
    /// Serializing maps and sets of strings cannot fail; if it did, refuse rather than write "".
    fn write_literal(&self, out: &mut Vec<u8>) -> Result<(), Denial> {
        let failed = |e: serde_json::Error| Denial::Internal(format!("cannot record what was injected: {e}"));
        let json = serde_json::to_string(self).map_err(failed)?;
        serde_json::to_writer(out, &json).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(marker: &Marker<'_>) -> String {
        let mut out = Vec::new();
        marker.write_literal(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_annotation_literal_is_the_quoted_serde_json() {
        let names = |names: &[&'static str]| names.iter().map(|n| Cow::Borrowed(*n)).collect::<BTreeSet<_>>();
        let mut markers = vec![Marker::default()];
        let mut full = Marker::default();
        full.env
            .insert("app".into(), names(&["AZURE_TENANT_ID", "AZURE_CLIENT_ID"]));
        full.env.insert("b-2".into(), names(&["AZURE_AUTHORITY_HOST"]));
        full.mounts
            .insert("app".into(), names(&["azure-identity-token", "secrets-store-inline"]));
        full.volumes = names(&["azure-identity-token"]);
        full.containers = names(&["wi-sidecar"]);
        markers.push(full.clone());
        markers.push(Marker {
            volumes: names(&["v"]),
            ..Default::default()
        });
        // Containers with the same names (copied from the one before), and one between them that differs.
        let mut repeated = Marker::default();
        for (container, vars) in [
            ("a", &["X", "Y"][..]),
            ("b", &["X", "Y"]),
            ("c", &["X"]),
            ("d", &["X", "Y"]),
        ] {
            repeated.env.insert(container.into(), names(vars));
            repeated
                .mounts
                .insert(container.into(), names(&["azure-identity-token"]));
        }
        markers.push(repeated);
        // Names that need escaping take the serde path.
        let mut odd = full.clone();
        odd.env.insert("quote\"d\\".into(), names(&["tab\t"]));
        markers.push(odd);
        for marker in &markers {
            let expected = serde_json::to_string(&serde_json::to_string(marker).unwrap()).unwrap();
            assert_eq!(literal(marker), expected);
            // And it reads back as the same marker.
            let text: String = serde_json::from_str(&literal(marker)).unwrap();
            assert_eq!(read_marker(Some(&text)).0, *marker);
        }
    }
}
