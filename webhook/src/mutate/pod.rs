//! Reading the pod: its containers (init containers first, with their JSON pointers), the ServiceAccount it runs
//! as and the SecretProviderClass it names.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use wi_contract::*;

use super::denial::Denial;
use super::values::{Fields as _, at, contract_string_map, json_type};

/// The pod's object, and the contract's keys of its labels and annotations (all the engine reads of them), read once.
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
        let metadata = match object.field("metadata") {
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
            labels: contract_string_map(metadata.and_then(|m| m.field("labels"))),
            annotations: contract_string_map(metadata.and_then(|m| m.field("annotations"))),
        })
    }

    /// `spec`, which a pod must have.
    pub(super) fn spec(&self) -> Result<&'a Map<String, Value>, Denial> {
        match self.object.field("spec") {
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
    /// `initContainers` or `containers`, and the container's place in that list: `/spec/containers/0` and the like.
    pub(super) list: &'static str,
    pub(super) position: usize,
    pub(super) name: &'a str,
    pub(super) object: &'a Map<String, Value>,
    /// Where the container is in [`containers_of`]'s list.
    pub(super) index: usize,
    /// `env` and `volumeMounts` as the pod has them (a list, null or absent), read once.
    pub(super) env: Option<&'a Value>,
    pub(super) mounts: Option<&'a Value>,
}

impl<'a> ContainerRef<'a> {
    /// `env`, empty when the pod has none.
    pub(super) fn env_list(&self) -> &'a [Value] {
        self.env.and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }

    /// `volumeMounts`, empty when the pod has none.
    pub(super) fn mount_list(&self) -> &'a [Value] {
        self.mounts.and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }

    /// Where the container mounts `volume`.
    pub(super) fn mount_index(&self, volume: &str) -> Option<usize> {
        self.mount_list()
            .iter()
            .position(|m| m.field("name").and_then(Value::as_str) == Some(volume))
    }

    /// The pointer to a field of the container: `/spec/containers/0/env` and the like.
    pub(super) fn child(&self, field: &str) -> String {
        let mut pointer = String::with_capacity(40 + field.len());
        pointer.push_str("/spec/");
        pointer.push_str(self.list);
        pointer.push('/');
        pointer.push_str(itoa::Buffer::new().format(self.position));
        pointer.push('/');
        pointer.push_str(field);
        pointer
    }
}

/// The ServiceAccount a pod runs as: `spec.serviceAccountName`, then the deprecated `spec.serviceAccount`, then
/// `default`, as the API server's ServiceAccount admission fills it in.
pub fn service_account_name(pod: &Value) -> &str {
    ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|key| {
            at(pod, &["spec", key])
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
}

/// The SecretProviderClass a pod names in [`SECRET_PROVIDER_CLASS_ANNOTATION`], if any.
pub fn secret_provider_class_name(pod: &Value) -> Option<&str> {
    at(pod, &["metadata", "annotations", SECRET_PROVIDER_CLASS_ANNOTATION])
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(super) fn containers_of(spec: &Map<String, Value>) -> Result<Vec<ContainerRef<'_>>, Denial> {
    let count = |key| spec.field(key).and_then(Value::as_array).map_or(0, Vec::len);
    let mut out = Vec::with_capacity(count("initContainers") + count("containers"));
    for key in ["initContainers", "containers"] {
        let list = match spec.field(key) {
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
            let name = object.field("name").and_then(Value::as_str).unwrap_or_default();
            let (env, mounts) = (object.field("env"), object.field("volumeMounts"));
            for (field, value) in [("env", env), ("volumeMounts", mounts)] {
                if let Some(v) = value
                    && !(v.is_array() || v.is_null())
                {
                    return Err(Denial::MalformedPod(format!(
                        "spec.{key}[{i}].{field} is {}, not a list",
                        json_type(v)
                    )));
                }
            }
            out.push(ContainerRef {
                list: key,
                position: i,
                name,
                object,
                index: out.len(),
                env,
                mounts,
            });
        }
    }
    if let Some(v) = spec.field("volumes")
        && !(v.is_array() || v.is_null())
    {
        return Err(Denial::MalformedPod(format!(
            "spec.volumes is {}, not a list",
            json_type(v)
        )));
    }
    Ok(out)
}

/// The pod a manifest describes: a Pod as it is, or the pod a workload controller would create from its template.
pub fn pod_of(manifest: Value) -> Result<Value, String> {
    let kind = manifest
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let template = match kind.as_str() {
        "Pod" => return Ok(manifest),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            manifest.pointer("/spec/template")
        }
        "CronJob" => manifest.pointer("/spec/jobTemplate/spec/template"),
        "" => return Err("the manifest has no kind; expected a Pod or a workload with a pod template".to_owned()),
        other => {
            return Err(format!(
                "kind {other} has no pod template; expected a Pod or a workload"
            ));
        }
    };
    let Some(template) = template.filter(|t| t.is_object()) else {
        return Err(format!("the {kind} has no pod template"));
    };
    let mut metadata = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let owner = manifest
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(kind.as_str());
    if let Some(meta) = metadata.as_object_mut() {
        meta.insert("generateName".to_owned(), Value::String(format!("{owner}-")));
        if let Some(ns) = manifest.pointer("/metadata/namespace") {
            meta.insert("namespace".to_owned(), ns.clone());
        }
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_pointer_is_what_format_writes() {
        let object = Map::new();
        for position in [0, 1, 9, 10, 99, 100, 12_345, usize::MAX] {
            let container = ContainerRef {
                list: "initContainers",
                position,
                name: "a",
                object: &object,
                index: 0,
                env: None,
                mounts: None,
            };
            assert_eq!(
                container.child("volumeMounts"),
                format!("/spec/initContainers/{position}/volumeMounts")
            );
        }
    }
}
