//! Reading the pod: its containers (init containers first, with their JSON pointers), the ServiceAccount it runs
//! as and the SecretProviderClass it names.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use wi_contract::*;

use super::denial::Denial;
use super::values::{json_type, string_map};

/// The pod's object, labels and annotations, read once.
pub(super) struct PodParts<'a> {
    pub(super) object: &'a Map<String, Value>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
}

impl<'a> PodParts<'a> {
    pub(super) fn read(pod: &'a Value) -> Result<Self, Denial> {
        let object = pod
            .as_object()
            .ok_or_else(|| Denial::MalformedPod(format!("expected a JSON object, found {}", json_type(pod))))?;
        let metadata = match object.get("metadata") {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                return Err(Denial::MalformedPod(format!(
                    "metadata is {}, not an object",
                    json_type(other)
                )));
            }
        };
        Ok(PodParts {
            object,
            labels: string_map(metadata.and_then(|m| m.get("labels"))),
            annotations: string_map(metadata.and_then(|m| m.get("annotations"))),
        })
    }

    /// `spec`, which a pod must have.
    pub(super) fn spec(&self) -> Result<&'a Map<String, Value>, Denial> {
        match self.object.get("spec") {
            Some(Value::Object(spec)) => Ok(spec),
            Some(other) => Err(Denial::MalformedPod(format!(
                "spec is {}, not an object",
                json_type(other)
            ))),
            None => Err(Denial::MalformedPod("spec is missing".to_owned())),
        }
    }
}

/// A container as the engine sees it: where it is in the pod and its fields.
pub(super) struct ContainerRef<'a> {
    /// `/spec/containers/0` and the like.
    pub(super) pointer: String,
    pub(super) name: &'a str,
    pub(super) object: &'a Map<String, Value>,
}

/// The ServiceAccount a pod runs as: `spec.serviceAccountName`, then the deprecated `spec.serviceAccount`, then
/// `default`, as the API server's ServiceAccount admission fills it in.
pub fn service_account_name(pod: &Value) -> &str {
    ["/spec/serviceAccountName", "/spec/serviceAccount"]
        .iter()
        .find_map(|p| pod.pointer(p).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or("default")
}

/// The SecretProviderClass a pod names in [`SECRET_PROVIDER_CLASS_ANNOTATION`], if any.
pub fn secret_provider_class_name(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(SECRET_PROVIDER_CLASS_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(super) fn containers_of(spec: &Map<String, Value>) -> Result<Vec<ContainerRef<'_>>, Denial> {
    let mut out = Vec::new();
    for key in ["initContainers", "containers"] {
        let list = match spec.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list,
            Some(other) => {
                return Err(Denial::MalformedPod(format!(
                    "spec.{key} is {}, not a list",
                    json_type(other)
                )));
            }
        };
        for (i, c) in list.iter().enumerate() {
            let object = c
                .as_object()
                .ok_or_else(|| Denial::MalformedPod(format!("spec.{key}[{i}] is {}, not an object", json_type(c))))?;
            let name = object.get("name").and_then(Value::as_str).unwrap_or_default();
            for field in ["env", "volumeMounts"] {
                if let Some(v) = object.get(field)
                    && !(v.is_array() || v.is_null())
                {
                    return Err(Denial::MalformedPod(format!(
                        "spec.{key}[{i}].{field} is {}, not a list",
                        json_type(v)
                    )));
                }
            }
            out.push(ContainerRef {
                pointer: format!("/spec/{key}/{i}"),
                name,
                object,
            });
        }
    }
    if let Some(v) = spec.get("volumes")
        && !(v.is_array() || v.is_null())
    {
        return Err(Denial::MalformedPod(format!(
            "spec.volumes is {}, not a list",
            json_type(v)
        )));
    }
    Ok(out)
}
