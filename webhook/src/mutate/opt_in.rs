//! Whether a pod asked to be injected: its own `azure.workload.identity/use` label, else its namespace's.

use std::collections::BTreeMap;

use serde_json::Value;
use wi_contract::*;

use super::values::string_map;

/// Whether the pod asked to be injected, decided before anything is looked up: its own `use` label, else its
/// namespace's; with the warnings for a label that is neither `"true"` nor `"false"`. A pod that did not ask is
/// allowed unchanged with these warnings, whatever its ServiceAccount (the engine does not read it then).
pub fn opt_in(pod: &Value, namespace_labels: Option<&BTreeMap<String, String>>) -> (bool, Vec<String>) {
    let labels = string_map(pod.pointer("/metadata/labels"));
    let mut warnings = Vec::new();
    let opted = opted_in(&labels, namespace_labels, &mut warnings);
    (opted, warnings)
}

pub(super) fn opted_in(
    labels: &BTreeMap<String, String>,
    namespace_labels: Option<&BTreeMap<String, String>>,
    warnings: &mut Vec<String>,
) -> bool {
    let namespace_in = namespace_labels
        .and_then(|l| l.get(USE_LABEL))
        .is_some_and(|v| v == "true");
    match labels.get(USE_LABEL).map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            warnings.push(format!(
                "label {USE_LABEL}={other:?} on the pod is neither \"true\" nor \"false\"; {}",
                if namespace_in {
                    "the namespace label opts the pod in"
                } else {
                    "the pod is not injected"
                }
            ));
            namespace_in
        }
        None => namespace_in,
    }
}
