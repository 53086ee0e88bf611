//! Whether a pod asked to be injected: its own `azure.workload.identity/use` label, else its namespace's.

use crate::diagnostics::{Code, Subject, Warning};
use std::collections::BTreeMap;

use serde_json::Value;
use wi_contract::*;

use super::values::at;

/// Whether a pod asked to be injected, and the warnings about its `use` label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptIn {
    /// The pod is injected.
    pub opted_in: bool,
    /// A label that is neither `"true"` nor `"false"`, and what was made of it.
    pub warnings: Vec<Warning>,
}

/// Whether the pod asked to be injected, decided before anything is looked up: its own `use` label, else its
/// namespace's; with the warnings for a label that is neither `"true"` nor `"false"`. A pod that did not ask is
/// allowed unchanged with these warnings, whatever its ServiceAccount (the engine does not read it then). Decided
/// once: the admission path hands it to [`super::mutate_with`].
pub fn opt_in(pod: &Value, namespace_labels: Option<&BTreeMap<String, String>>) -> OptIn {
    let label = at(pod, &["metadata", "labels", USE_LABEL]).and_then(Value::as_str);
    let mut warnings = Vec::new();
    let opted_in = opted_in(label, namespace_labels, &mut warnings);
    OptIn { opted_in, warnings }
}

fn opted_in(
    label: Option<&str>,
    namespace_labels: Option<&BTreeMap<String, String>>,
    warnings: &mut Vec<Warning>,
) -> bool {
    let namespace_in = namespace_labels
        .and_then(|l| l.get(USE_LABEL))
        .is_some_and(|v| v == "true");
    match label {
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            warnings.push(Warning::new(
                Code::UseLabelValue,
                Subject::Pod,
                format!(
                    "label {USE_LABEL}={other:?} on the pod is neither \"true\" nor \"false\"; {}",
                    if namespace_in {
                        "the namespace label opts the pod in"
                    } else {
                        "the pod is not injected"
                    }
                ),
            ));
            namespace_in
        }
        None => namespace_in,
    }
}
