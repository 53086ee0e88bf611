//! What the engine is given and what it answers: the parts of a ServiceAccount and a Namespace it reads, the
//! SecretProviderClass as the caller found it, and the patch plus warnings of an admitted pod.

use crate::diagnostics::Warning;
use std::collections::BTreeMap;

use serde_json::Value;

use super::patch::Patch;
use super::values::{json_type, string_map};

/// The parts of a ServiceAccount the engine reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccount {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.labels`, read only to warn about annotations written as labels.
    pub labels: BTreeMap<String, String>,
}

/// `ServiceAccount NAMESPACE/NAME`, as messages name it.
impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAccount {}/{}", self.namespace, self.name)
    }
}

impl ServiceAccount {
    /// Reads a ServiceAccount object (JSON as the API server or `kubectl get -o json` gives it).
    pub fn from_object(object: &Value) -> Result<Self, ObjectError> {
        let (name, namespace) = object_identity(object, "ServiceAccount")?;
        Ok(ServiceAccount {
            name,
            namespace,
            annotations: string_map(object.pointer("/metadata/annotations")),
            labels: string_map(object.pointer("/metadata/labels")),
        })
    }
}

/// Reads the labels of a Namespace object.
pub fn namespace_labels(object: &Value) -> Result<BTreeMap<String, String>, ObjectError> {
    object_identity(object, "Namespace")?;
    Ok(string_map(object.pointer("/metadata/labels")))
}

/// An object given to the engine is not of the expected kind or has no name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    /// Not a JSON object at all.
    #[error("expected a {expected} object, found {found}")]
    NotAnObject {
        /// Kind expected.
        expected: &'static str,
        /// JSON type found.
        found: &'static str,
    },
    /// `kind` says something else.
    #[error("expected kind {expected}, found kind {found:?}")]
    WrongKind {
        /// Kind expected.
        expected: &'static str,
        /// Kind found.
        found: String,
    },
    /// `metadata.name` is missing.
    #[error("the {0} has no metadata.name")]
    NoName(&'static str),
}

pub(super) fn object_identity(object: &Value, expected: &'static str) -> Result<(String, String), ObjectError> {
    if !object.is_object() {
        return Err(ObjectError::NotAnObject {
            expected,
            found: json_type(object),
        });
    }
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != expected
    {
        return Err(ObjectError::WrongKind {
            expected,
            found: kind.to_owned(),
        });
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or(ObjectError::NoName(expected))?;
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok((name.to_owned(), namespace.to_owned()))
}

/// Everything the pod refers to, looked up by the caller (a cache, the API server, or files).
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Labels of the pod's namespace, for namespace-wide opt-in; `None` when unknown.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// The pod's ServiceAccount.
    pub service_account: &'a ServiceAccount,
    /// The SecretProviderClass the pod names, as the caller found it (ignored when the pod names none).
    pub secret_provider_class: ClassLookup<'a>,
}

/// What became of looking up the SecretProviderClass a pod names.
#[derive(Debug, Clone, Copy, Default)]
pub enum ClassLookup<'a> {
    /// The class object.
    Found(&'a Value),
    /// No such class in the pod's namespace (or no SecretProviderClass CRD in the cluster).
    #[default]
    NotFound,
    /// The lookup failed. The pod is still injected for CSI delivery (the driver reads the class itself); sidecar
    /// delivery, which is configured from the class, is denied.
    Failed(&'a (dyn std::error::Error + Send + Sync)),
}

impl<'a> From<Option<&'a Value>> for ClassLookup<'a> {
    fn from(value: Option<&'a Value>) -> Self {
        value.map_or(ClassLookup::NotFound, ClassLookup::Found)
    }
}

/// The engine's answer for a pod it admits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mutation {
    /// Add and replace operations against the pod; empty when nothing needs to change.
    pub patch: Patch,
    /// Problems the requester should fix, returned as admission warnings.
    pub warnings: Vec<Warning>,
}
