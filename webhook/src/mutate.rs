//! The mutation engine: a pure function from a pod (as the API server sent it) and what it refers to, to an
//! RFC 6902 patch plus warnings, or a denial.
//!
//! The pod is handled as `serde_json::Value` so that fields this crate does not know (a newer API version, another
//! webhook's additions) are never touched, and the patch only ever adds or replaces: no `remove` op is emitted.
//! What the engine injected is recorded in the `workload-identity.rs/injected` annotation, so a second pass
//! (reinvocation) adds nothing, and a pass with a changed ServiceAccount replaces what this webhook injected
//! before while leaving what the user wrote alone.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::Config;
// Booleans are read by value with `wi_contract::parse_bool`, as Go's `strconv.ParseBool` reads them (upstream read
// the proxy annotation by key presence, so `"false"` injected), the one parser of the webhook and the sidecar.
use wi_contract::*;

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

fn object_identity(object: &Value, expected: &'static str) -> Result<(String, String), ObjectError> {
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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum ClassLookup<'a> {
    /// The class object.
    Found(&'a Value),
    /// No such class in the pod's namespace (or no SecretProviderClass CRD in the cluster).
    #[default]
    NotFound,
    /// The lookup failed; the message says why. The pod is still injected: the CSI driver reads the class itself.
    Failed(&'a str),
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
    pub warnings: Vec<String>,
}

/// Why a pod is refused. Every message names the annotation, container or path at fault.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Denial {
    /// An invariant of the webhook broke (a bug): refused with 500 rather than answered with an empty value.
    #[error("internal error, please report it: {0}")]
    Internal(String),
    /// The object is not a pod the engine can read (only possible with hand-made input: the API server decodes
    /// pods before admission).
    #[error("malformed pod: {0}")]
    MalformedPod(String),
    /// The token lifetime annotation is not a number of seconds in range.
    #[error(
        "annotation {TOKEN_EXPIRATION_ANNOTATION} on {on} is {value:?}: expected a whole number of seconds \
         from {MIN_TOKEN_EXPIRATION} to {MAX_TOKEN_EXPIRATION}"
    )]
    InvalidTokenExpiration {
        /// Where the annotation was read: `pod` or `ServiceAccount NS/NAME`.
        on: String,
        /// The value found.
        value: String,
    },
    /// Some other annotation has a value the engine cannot use.
    #[error("annotation {key} on the pod is {value:?}: {expected}")]
    InvalidAnnotation {
        /// The annotation key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A container already mounts another volume where the webhook needs to mount one.
    #[error(
        "container {container:?} already mounts volume {existing:?} at {path}, where the webhook mounts \
         {volume:?}: remove that mount{hint}"
    )]
    MountPathConflict {
        /// The container.
        container: String,
        /// The mount path.
        path: String,
        /// The user's volume mounted there.
        existing: String,
        /// The webhook's volume.
        volume: &'static str,
        /// What else can be done.
        hint: &'static str,
    },
    /// The pod has its own volume under a name the webhook reserves, with other contents.
    #[error("the pod already has a volume named {0:?} that the webhook did not inject; rename it")]
    VolumeNameConflict(&'static str),
    /// `secrets-delivery: sidecar` needs the SecretProviderClass at admission: `wi-sidecar` is configured from it.
    #[error(
        "{SECRETS_DELIVERY_ANNOTATION}: \"sidecar\" configures wi-sidecar from SecretProviderClass {class:?} in \
         namespace {namespace:?}, which {why}"
    )]
    SecretProviderClassUnavailable {
        /// The class named by the pod.
        class: String,
        /// The pod's namespace.
        namespace: String,
        /// What went wrong, with what to do.
        why: String,
    },
    /// The SecretProviderClass cannot configure `wi-sidecar`; the message names the field.
    #[error("SecretProviderClass {class:?} cannot configure wi-sidecar: {error}")]
    InvalidSecretProviderClass {
        /// The class named by the pod.
        class: String,
        /// What is wrong with it, naming the parameter.
        error: String,
    },
    /// The pod has its own container under the name of the injected sidecar.
    #[error("the pod already has a container named {0:?} that the webhook did not inject; rename it")]
    ContainerNameConflict(&'static str),
    /// A container of the pod declares the port the injected sidecar listens on (the pod's network is shared).
    #[error(
        "container {container:?} declares port {port}, where the injected {SIDECAR_CONTAINER} serves /readyz and \
         /metrics (containers of a pod share one network); use another port or \"csi\" delivery"
    )]
    PortConflict {
        /// The container.
        container: String,
        /// The port.
        port: u16,
    },
}

/// What the webhook injected into a pod, stored in the [`INJECTED_ANNOTATION`] annotation as compact JSON.
///
/// Only what is recorded here is ever replaced on a later pass; everything else belongs to the user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    /// Env var names injected, by container name (container names are unique across a pod's containers and init
    /// containers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, BTreeSet<String>>,
    /// Volume mounts injected, by container name, as volume names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    mounts: BTreeMap<String, BTreeSet<String>>,
    /// Volumes injected.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    volumes: BTreeSet<String>,
    /// Containers injected whole (the `wi-sidecar` native sidecar).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    containers: BTreeSet<String>,
}

impl Marker {
    fn owns_env(&self, container: &str, name: &str) -> bool {
        self.env.get(container).is_some_and(|names| names.contains(name))
    }

    fn owns_mount(&self, container: &str, volume: &str) -> bool {
        self.mounts.get(container).is_some_and(|vols| vols.contains(volume))
    }
}

/// Who writes the Key Vault objects into the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The Secrets Store CSI driver, from a CSI volume.
    Csi,
    /// The injected `wi-sidecar`, into an in-memory emptyDir.
    Sidecar,
}

/// How the Key Vault objects reach the pod, from the pod's annotations.
#[derive(Debug)]
struct SecretsPlan {
    class: String,
    delivery: Delivery,
    mount_path: String,
    /// `None`: every targeted container.
    containers: Option<BTreeSet<String>>,
}

/// A container as the engine sees it: where it is in the pod and its fields.
struct ContainerRef<'a> {
    /// `/spec/containers/0` and the like.
    pointer: String,
    name: &'a str,
    object: &'a Map<String, Value>,
}

/// Computes the patch for a pod. See the module docs.
pub fn mutate(pod: &Value, inputs: &Inputs<'_>, config: &Config) -> Result<Mutation, Denial> {
    let pod_obj = pod
        .as_object()
        .ok_or_else(|| Denial::MalformedPod(format!("expected a JSON object, found {}", json_type(pod))))?;
    let metadata = match pod_obj.get("metadata") {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            return Err(Denial::MalformedPod(format!(
                "metadata is {}, not an object",
                json_type(other)
            )));
        }
    };
    let labels = string_map(metadata.and_then(|m| m.get("labels")));
    let annotations = string_map(metadata.and_then(|m| m.get("annotations")));
    let mut warnings = Vec::new();

    if !opted_in(&labels, inputs.namespace_labels, &mut warnings) {
        return Ok(Mutation {
            patch: Patch(Vec::new()),
            warnings,
        });
    }

    let spec = match pod_obj.get("spec") {
        Some(Value::Object(spec)) => spec,
        Some(other) => {
            return Err(Denial::MalformedPod(format!(
                "spec is {}, not an object",
                json_type(other)
            )));
        }
        None => return Err(Denial::MalformedPod("spec is missing".to_owned())),
    };
    let containers = containers_of(spec)?;
    let sa = inputs.service_account;

    let expiration = token_expiration(&annotations, sa)?;
    let skip = name_list(annotations.get(SKIP_CONTAINERS_ANNOTATION));
    warn_unknown_names(SKIP_CONTAINERS_ANNOTATION, &skip, &containers, &mut warnings);
    check_proxy_annotations(&annotations, &mut warnings)?;
    let plan = secrets_plan(&annotations, &containers, &mut warnings)?;
    warn_lookalikes(&annotations, &labels, sa, &mut warnings);

    let client_id = non_empty(sa.annotations.get(CLIENT_ID_ANNOTATION));
    let tenant_id = non_empty(sa.annotations.get(TENANT_ID_ANNOTATION)).or(non_empty(config.tenant_id.as_ref()));
    warn_identity(sa, client_id, tenant_id, &mut warnings);
    if let Some(plan) = &plan {
        warn_secret_provider_class(plan, inputs.secret_provider_class, sa, client_id, &mut warnings);
    }

    let (old_marker, marker_warning) = read_marker(annotations.get(INJECTED_ANNOTATION));
    warnings.extend(marker_warning);

    // The token file: ours, or where the pod's own token volume puts it (a pod written for upstream may name the
    // file otherwise); AZURE_FEDERATED_TOKEN_FILE must name a file that exists.
    let token_file_name = own_token_file_name(spec, &old_marker, &config.audience);
    let token_file_path = format!("{TOKEN_MOUNT_PATH}/{token_file_name}");
    let authority_host = config.cloud.authority_host();
    let desired_env: Vec<(&str, &str)> = [
        (ENV_CLIENT_ID, client_id),
        (ENV_TENANT_ID, tenant_id),
        (ENV_FEDERATED_TOKEN_FILE, Some(token_file_path.as_str())),
        (ENV_AUTHORITY_HOST, Some(authority_host.as_str())),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
    .collect();
    let mut marker = Marker::default();
    let mut ops = Ops::default();

    // The sidecar's container, when `sidecar` delivery asks for one; checked before anything else is patched.
    let sidecar = match &plan {
        Some(plan) if plan.delivery == Delivery::Sidecar => Some(sidecar_container(
            plan,
            inputs.secret_provider_class,
            &sa.namespace,
            &containers,
            &desired_env,
            &old_marker,
            config,
        )?),
        _ => None,
    };

    let token_mount = json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true});
    let secrets_mount = plan
        .as_ref()
        .map(|p| json!({"name": SECRETS_VOLUME, "mountPath": p.mount_path, "readOnly": true}));

    for container in &containers {
        if old_marker.containers.contains(container.name) {
            // Injected whole by an earlier pass: brought up to date below, not injected into.
            continue;
        }
        let targeted = !skip.contains(container.name);
        if targeted {
            // A container that mounts the token volume itself sees the file under its own mount path.
            let own_path = own_token_mount(container, &old_marker, &token_file_name, &mut warnings);
            let env: Vec<(&str, &str)> = desired_env
                .iter()
                .map(|&(name, value)| match &own_path {
                    Some(path) if name == ENV_FEDERATED_TOKEN_FILE => (name, path.as_str()),
                    _ => (name, value),
                })
                .collect();
            inject_env(container, &env, &old_marker, &mut marker, &mut ops)?;
            inject_mount(
                container,
                &token_mount,
                &old_marker,
                &mut marker,
                &mut ops,
                &mut warnings,
            )?;
        }
        if let (Some(plan), Some(mount)) = (&plan, &secrets_mount) {
            let wanted = plan
                .containers
                .as_ref()
                .map_or(targeted, |names| names.contains(container.name));
            if wanted {
                inject_mount(container, mount, &old_marker, &mut marker, &mut ops, &mut warnings)?;
            }
        }
    }

    let any_token_mount = sidecar.is_some()
        || marker.mounts.values().any(|v| v.contains(TOKEN_VOLUME))
        || containers.iter().any(|c| mount_index(c.object, TOKEN_VOLUME).is_some());
    if any_token_mount {
        let volume = json!({
            "name": TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": config.audience,
                "expirationSeconds": expiration,
                "path": TOKEN_FILE,
            }}]},
        });
        inject_volume(spec, volume, &old_marker, &mut marker, &mut ops, &mut warnings)?;
    }
    if let Some(plan) = &plan {
        let volume = match plan.delivery {
            Delivery::Csi => json!({
                "name": SECRETS_VOLUME,
                "csi": {
                    "driver": CSI_DRIVER,
                    "readOnly": true,
                    "volumeAttributes": {"secretProviderClass": plan.class},
                },
            }),
            Delivery::Sidecar => json!({
                "name": SECRETS_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": SIDECAR_VOLUME_SIZE_LIMIT},
            }),
        };
        inject_volume(spec, volume, &old_marker, &mut marker, &mut ops, &mut warnings)?;
    }

    let mut ops = ops.finish();
    if let Some(container) = sidecar {
        // Last of the container operations: inserting at the head of initContainers shifts the indices the
        // operations above were computed with.
        inject_sidecar(spec, container, &old_marker, &mut marker, &mut ops);
    }
    if marker != old_marker {
        // Serializing a struct of maps and sets of strings cannot fail; if it did, refuse rather than write "".
        let value = serde_json::to_string(&marker)
            .map_err(|e| Denial::Internal(format!("cannot record what was injected: {e}")))?;
        set_map_entry(
            pod_obj,
            &["metadata", "annotations"],
            INJECTED_ANNOTATION,
            Value::String(value),
            &mut ops,
        );
    }

    Ok(Mutation {
        patch: Patch(ops),
        warnings,
    })
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

/// Whether the pod asked to be injected, decided before anything is looked up: its own `use` label, else its
/// namespace's; with the warnings for a label that is neither `"true"` nor `"false"`. A pod that did not ask is
/// allowed unchanged with these warnings, whatever its ServiceAccount (the engine does not read it then).
pub fn opt_in(pod: &Value, namespace_labels: Option<&BTreeMap<String, String>>) -> (bool, Vec<String>) {
    let labels = string_map(pod.pointer("/metadata/labels"));
    let mut warnings = Vec::new();
    let opted = opted_in(&labels, namespace_labels, &mut warnings);
    (opted, warnings)
}

fn opted_in(
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

fn containers_of(spec: &Map<String, Value>) -> Result<Vec<ContainerRef<'_>>, Denial> {
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

fn token_expiration(annotations: &BTreeMap<String, String>, sa: &ServiceAccount) -> Result<i64, Denial> {
    // An empty value is no value, as upstream reads it: the pod's falls back to the ServiceAccount's, then the default.
    let (on, value) = match (
        non_empty(annotations.get(TOKEN_EXPIRATION_ANNOTATION)),
        non_empty(sa.annotations.get(TOKEN_EXPIRATION_ANNOTATION)),
    ) {
        (Some(v), _) => ("pod".to_owned(), v),
        (None, Some(v)) => (format!("ServiceAccount {}/{}", sa.namespace, sa.name), v),
        (None, None) => return Ok(DEFAULT_TOKEN_EXPIRATION),
    };
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|s| (MIN_TOKEN_EXPIRATION..=MAX_TOKEN_EXPIRATION).contains(s))
        .ok_or_else(|| Denial::InvalidTokenExpiration {
            on,
            value: value.to_owned(),
        })
}

fn check_proxy_annotations(annotations: &BTreeMap<String, String>, warnings: &mut Vec<String>) -> Result<(), Denial> {
    let inject = match annotations.get(INJECT_PROXY_SIDECAR_ANNOTATION) {
        None => false,
        Some(v) => parse_bool(v).ok_or_else(|| Denial::InvalidAnnotation {
            key: INJECT_PROXY_SIDECAR_ANNOTATION,
            value: v.clone(),
            expected: "expected \"true\" or \"false\"",
        })?,
    };
    if let Some(port) = annotations.get(PROXY_SIDECAR_PORT_ANNOTATION)
        && !port.trim().parse::<u16>().is_ok_and(|p| p >= 1)
    {
        return Err(Denial::InvalidAnnotation {
            key: PROXY_SIDECAR_PORT_ANNOTATION,
            value: port.clone(),
            expected: "expected a port number from 1 to 65535",
        });
    }
    if inject {
        warnings.push(format!(
            "{INJECT_PROXY_SIDECAR_ANNOTATION}: the token proxy sidecar is not available in this version; \
             the pod gets the workload identity env and token as usual"
        ));
    }
    Ok(())
}

fn secrets_plan(
    annotations: &BTreeMap<String, String>,
    containers: &[ContainerRef<'_>],
    warnings: &mut Vec<String>,
) -> Result<Option<SecretsPlan>, Denial> {
    let dependents = [
        SECRETS_DELIVERY_ANNOTATION,
        SECRETS_MOUNT_PATH_ANNOTATION,
        SECRETS_CONTAINERS_ANNOTATION,
    ];
    let Some(raw_class) = annotations.get(SECRET_PROVIDER_CLASS_ANNOTATION) else {
        for key in dependents.iter().filter(|k| annotations.contains_key(**k)) {
            warnings.push(format!(
                "annotation {key} has no effect without {SECRET_PROVIDER_CLASS_ANNOTATION}"
            ));
        }
        return Ok(None);
    };
    let class = raw_class.trim();
    if !is_dns_subdomain(class) {
        return Err(Denial::InvalidAnnotation {
            key: SECRET_PROVIDER_CLASS_ANNOTATION,
            value: raw_class.clone(),
            expected: "expected the name of a SecretProviderClass in the pod's namespace",
        });
    }
    let delivery = match annotations.get(SECRETS_DELIVERY_ANNOTATION).map(|v| v.trim()) {
        None | Some("csi") => Delivery::Csi,
        Some("sidecar") => Delivery::Sidecar,
        Some(_) => {
            return Err(Denial::InvalidAnnotation {
                key: SECRETS_DELIVERY_ANNOTATION,
                value: annotations
                    .get(SECRETS_DELIVERY_ANNOTATION)
                    .cloned()
                    .unwrap_or_default(),
                expected: "expected \"csi\" or \"sidecar\"",
            });
        }
    };
    let mount_path = match annotations.get(SECRETS_MOUNT_PATH_ANNOTATION) {
        None => DEFAULT_SECRETS_MOUNT_PATH.to_owned(),
        Some(raw) => {
            let path = normalize_path(raw.trim());
            let valid = path.starts_with('/')
                && path != "/"
                && !path.split('/').any(|c| c == ".." || c == ".")
                && !path.contains(':');
            if !valid {
                return Err(Denial::InvalidAnnotation {
                    key: SECRETS_MOUNT_PATH_ANNOTATION,
                    value: raw.clone(),
                    expected: "expected an absolute directory path other than / with no . or .. elements",
                });
            }
            path
        }
    };
    if mount_path == TOKEN_MOUNT_PATH {
        return Err(Denial::InvalidAnnotation {
            key: SECRETS_MOUNT_PATH_ANNOTATION,
            value: mount_path,
            expected: "this is where the workload identity token is mounted; choose another path",
        });
    }
    let containers_filter = annotations
        .get(SECRETS_CONTAINERS_ANNOTATION)
        .map(|v| name_list(Some(v)));
    if let Some(names) = &containers_filter {
        warn_unknown_names(SECRETS_CONTAINERS_ANNOTATION, names, containers, warnings);
    }
    Ok(Some(SecretsPlan {
        class: class.to_owned(),
        delivery,
        mount_path,
        containers: containers_filter,
    }))
}

fn warn_unknown_names(
    key: &str,
    names: &BTreeSet<String>,
    containers: &[ContainerRef<'_>],
    warnings: &mut Vec<String>,
) {
    for name in names {
        if !containers.iter().any(|c| c.name == name) {
            warnings.push(format!(
                "annotation {key} names container {name:?}, which the pod does not have"
            ));
        }
    }
}

fn warn_identity(sa: &ServiceAccount, client_id: Option<&str>, tenant_id: Option<&str>, warnings: &mut Vec<String>) {
    let who = format!("ServiceAccount {}/{}", sa.namespace, sa.name);
    match client_id {
        None => warnings.push(format!(
            "{who} has no {CLIENT_ID_ANNOTATION} annotation, so AZURE_CLIENT_ID is not injected"
        )),
        Some(id) if uuid::Uuid::try_parse(id).is_err() => warnings.push(format!(
            "{who}: {CLIENT_ID_ANNOTATION} {id:?} is not a UUID; Entra ID client ids are UUIDs"
        )),
        Some(_) => {}
    }
    match tenant_id {
        None => warnings.push(format!(
            "no tenant: {who} has no {TENANT_ID_ANNOTATION} and the webhook no --tenant-id; AZURE_TENANT_ID not injected"
        )),
        Some(id) if uuid::Uuid::try_parse(id).is_err() => {
            warnings.push(format!("tenant id {id:?} is not a UUID; Entra ID tenant ids are UUIDs"))
        }
        Some(_) => {}
    }
}

fn warn_secret_provider_class(
    plan: &SecretsPlan,
    spc: ClassLookup<'_>,
    sa: &ServiceAccount,
    client_id: Option<&str>,
    warnings: &mut Vec<String>,
) {
    let spc = match spc {
        ClassLookup::Found(spc) => spc,
        ClassLookup::NotFound => {
            warnings.push(format!(
                "SecretProviderClass {:?} was not found in namespace {:?}: the secrets volume cannot mount until it exists",
                plan.class, sa.namespace
            ));
            return;
        }
        ClassLookup::Failed(why) => {
            warnings.push(format!(
                "SecretProviderClass {:?} could not be checked: {why}",
                plan.class
            ));
            return;
        }
    };
    let name = &plan.class;
    if let Some(provider) = spc.pointer("/spec/provider").and_then(Value::as_str)
        && provider != "azure"
    {
        warnings.push(format!(
            "SecretProviderClass {name:?} has provider {provider:?}; workload identity needs provider \"azure\""
        ));
    }
    let params = string_map(spc.pointer("/spec/parameters"));
    let is_true = |k: &str| params.get(k).and_then(|v| parse_bool(v)).unwrap_or(false);
    if is_true("useVMManagedIdentity") {
        warnings.push(format!(
            "SecretProviderClass {name:?} sets useVMManagedIdentity: the node's identity, shared by every pod \
             on the node, reads the vault, not this pod's workload identity; set clientID instead"
        ));
    } else if is_true("usePodIdentity") {
        warnings.push(format!(
            "SecretProviderClass {name:?} sets usePodIdentity (AAD pod identity, deprecated); set clientID and \
             remove usePodIdentity to use workload identity"
        ));
    } else {
        match (non_empty(params.get("clientID")), client_id) {
            (None, _) => warnings.push(format!(
                "SecretProviderClass {name:?} has no clientID parameter: the CSI driver cannot use workload identity"
            )),
            (Some(spc_id), Some(sa_id)) if !spc_id.eq_ignore_ascii_case(sa_id) => warnings.push(format!(
                "SecretProviderClass {name:?} clientID {spc_id} differs from the ServiceAccount's client id {sa_id}"
            )),
            _ => {}
        }
    }
    if non_empty(params.get("keyvaultName")).is_none() {
        warnings.push(format!("SecretProviderClass {name:?} has no keyvaultName parameter"));
    }
}

/// Keys under the upstream or project prefix that are not in the contract are nearly always typos (`client_id`),
/// or a key on the wrong object (client-id on the pod, the `use` label written as an annotation).
fn warn_lookalikes(
    pod_annotations: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    sa: &ServiceAccount,
    warnings: &mut Vec<String>,
) {
    const SA_KEYS: &[&str] = &[CLIENT_ID_ANNOTATION, TENANT_ID_ANNOTATION, TOKEN_EXPIRATION_ANNOTATION];
    const POD_KEYS: &[&str] = &[
        TOKEN_EXPIRATION_ANNOTATION,
        SKIP_CONTAINERS_ANNOTATION,
        INJECT_PROXY_SIDECAR_ANNOTATION,
        PROXY_SIDECAR_PORT_ANNOTATION,
        SECRET_PROVIDER_CLASS_ANNOTATION,
        SECRETS_DELIVERY_ANNOTATION,
        SECRETS_MOUNT_PATH_ANNOTATION,
        SECRETS_CONTAINERS_ANNOTATION,
        INJECTED_ANNOTATION,
    ];
    let sa_name = format!("ServiceAccount {}/{}", sa.namespace, sa.name);
    // (keys, the keys the webhook reads there, annotation or label, on what)
    type Check<'a> = (&'a BTreeMap<String, String>, &'a [&'a str], &'a str, &'a str);
    let checks: [Check<'_>; 4] = [
        (&sa.annotations, SA_KEYS, "annotation", sa_name.as_str()),
        (&sa.labels, &[], "label", sa_name.as_str()),
        (pod_annotations, POD_KEYS, "annotation", "the pod"),
        (pod_labels, &[USE_LABEL], "label", "the pod"),
    ];
    for (map, known, what, on) in checks {
        for key in map.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let Some(suffix) = contract_suffix(key) else {
                continue;
            };
            let all = SA_KEYS.iter().chain(POD_KEYS).chain([&USE_LABEL]);
            let exact = all.clone().find(|k| **k == key.as_str());
            let similar = all
                .clone()
                .find(|k| contract_suffix(k).is_some_and(|s| edit_distance(&squash(s), &squash(suffix)) <= 2));
            let advice = match (exact, similar) {
                (Some(k), _) | (None, Some(k)) if *k == USE_LABEL => format!("{USE_LABEL} must be a pod label"),
                (Some(k), _) if SA_KEYS.contains(k) && !POD_KEYS.contains(k) => {
                    format!("{k} belongs on the ServiceAccount")
                }
                (Some(k), _) if POD_KEYS.contains(k) => format!("{k} belongs on the pod (the pod template)"),
                (Some(k), _) => format!("{k} must be an annotation"),
                (None, Some(k)) => format!("did you mean {k}?"),
                (None, None) => "it is not a key the webhook reads".to_owned(),
            };
            warnings.push(format!("{what} {key} on {on} is ignored: {advice}"));
        }
    }
}

/// The part after a contract prefix, compared case-insensitively.
fn contract_suffix(key: &str) -> Option<&str> {
    let lower = key.to_ascii_lowercase();
    [UPSTREAM_PREFIX, PROJECT_PREFIX]
        .iter()
        .find(|p| lower.starts_with(*p))
        .map(|p| &key[p.len()..])
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Levenshtein distance, for "did you mean" on short annotation keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn read_marker(value: Option<&String>) -> (Marker, Option<String>) {
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

fn inject_env(
    container: &ContainerRef<'_>,
    desired: &[(&str, &str)],
    old: &Marker,
    marker: &mut Marker,
    ops: &mut Ops,
) -> Result<(), Denial> {
    let name = container.name;
    let env: &[Value] = container
        .object
        .get("env")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let entry_name = |e: &Value| e.get("name").and_then(Value::as_str).map(str::to_owned);
    let mut owned = BTreeSet::new();
    let mut new_env: Vec<Value> = Vec::with_capacity(env.len() + desired.len());
    let mut replaced = Vec::new();
    let mut dropped = false;
    for (i, entry) in env.iter().enumerate() {
        let Some(var) = entry_name(entry) else {
            new_env.push(entry.clone());
            continue;
        };
        if !old.owns_env(name, &var) {
            new_env.push(entry.clone());
            continue;
        }
        match desired.iter().find(|(n, _)| *n == var) {
            // Injected before and still wanted: bring the value up to date.
            Some((n, v)) => {
                let want = json!({"name": n, "value": v});
                if !contains(entry, &want) || entry.get("valueFrom").is_some() {
                    replaced.push((i, want.clone()));
                }
                if owned.insert(var) {
                    new_env.push(want);
                }
            }
            // Injected before, no longer wanted (e.g. the new ServiceAccount has no client id).
            None => dropped = true,
        }
    }
    let mut added = Vec::new();
    for (n, v) in desired {
        let present = env.iter().any(|e| entry_name(e).as_deref() == Some(*n));
        if !present {
            added.push(json!({"name": n, "value": v}));
            owned.insert((*n).to_owned());
        }
    }
    let env_ptr = format!("{}/env", container.pointer);
    if dropped {
        new_env.extend(added);
        ops.ops.push(replace(&env_ptr, Value::Array(new_env)));
    } else {
        for (i, value) in replaced {
            ops.ops.push(replace(&format!("{env_ptr}/{i}"), value));
        }
        ops.append(&env_ptr, container.object.get("env"), added);
    }
    if !owned.is_empty() {
        marker.env.insert(name.to_owned(), owned);
    }
    Ok(())
}

fn inject_mount(
    container: &ContainerRef<'_>,
    want: &Value,
    old: &Marker,
    marker: &mut Marker,
    ops: &mut Ops,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let volume = reserved_name(want);
    let path = want["mountPath"].as_str().unwrap_or_default();
    let mounts: &[Value] = container
        .object
        .get("volumeMounts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let owned = old.owns_mount(container.name, volume);
    let existing = mount_index(container.object, volume);

    for m in mounts {
        let other = m.get("name").and_then(Value::as_str).unwrap_or_default();
        let other_path = m.get("mountPath").and_then(Value::as_str).map(normalize_path);
        if other != volume && other_path.as_deref() == Some(path) {
            return Err(Denial::MountPathConflict {
                container: container.name.to_owned(),
                path: path.to_owned(),
                existing: other.to_owned(),
                volume,
                hint: if volume == SECRETS_VOLUME {
                    ", or choose another path with workload-identity.rs/secrets-mount-path"
                } else {
                    ""
                },
            });
        }
    }
    match existing {
        Some(i) if owned => {
            if !contains(&mounts[i], want) {
                ops.ops.push(replace(
                    &format!("{}/volumeMounts/{i}", container.pointer),
                    want.clone(),
                ));
            }
        }
        Some(i) => {
            // The user mounted our volume themselves (e.g. a pod written for the upstream webhook): keep it.
            let user_path = mounts[i].get("mountPath").and_then(Value::as_str).unwrap_or_default();
            if normalize_path(user_path) != path {
                warnings.push(format!(
                    "container {:?} mounts {volume} at {user_path}, not {path}: left as written",
                    container.name
                ));
            }
            return Ok(());
        }
        None => ops.append(
            &format!("{}/volumeMounts", container.pointer),
            container.object.get("volumeMounts"),
            vec![want.clone()],
        ),
    }
    marker
        .mounts
        .entry(container.name.to_owned())
        .or_default()
        .insert(volume.to_owned());
    Ok(())
}

fn inject_volume(
    spec: &Map<String, Value>,
    want: Value,
    old: &Marker,
    marker: &mut Marker,
    ops: &mut Ops,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let volume = reserved_name(&want);
    let volumes: &[Value] = spec.get("volumes").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let existing = volumes
        .iter()
        .position(|v| v.get("name").and_then(Value::as_str) == Some(volume));
    match existing {
        Some(i) if old.volumes.contains(volume) => {
            if !contains(&volumes[i], &want) {
                ops.ops.push(replace(&format!("/spec/volumes/{i}"), want));
            }
        }
        // The user's own volume, identical to ours: used as it is, and stays theirs.
        Some(i) if contains(&volumes[i], &want) => return Ok(()),
        Some(i) => {
            if volume == SECRETS_VOLUME {
                return Err(Denial::VolumeNameConflict(SECRETS_VOLUME));
            }
            let is_token = volumes[i]
                .pointer("/projected/sources")
                .and_then(Value::as_array)
                .is_some_and(|sources| {
                    sources.iter().any(|s| {
                        s.pointer("/serviceAccountToken/audience")
                            == want.pointer("/projected/sources/0/serviceAccountToken/audience")
                    })
                });
            if !is_token {
                warnings.push(format!(
                    "the pod's own volume {volume} is not a projected service account token for audience {}: \
                     left as written, Azure SDKs will fail to sign in",
                    want.pointer("/projected/sources/0/serviceAccountToken/audience")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ));
            }
            return Ok(());
        }
        None => ops.append("/spec/volumes", spec.get("volumes"), vec![want]),
    }
    marker.volumes.insert(volume.to_owned());
    Ok(())
}

/// The `wi-sidecar` native sidecar for `sidecar` delivery, configured from the SecretProviderClass: its
/// parameters (object names, never values) go into `WI_SECRETS_CONFIG`, checked here with the sidecar's own parser
/// so that a class it would refuse is refused at admission, naming the parameter, instead of a pod stuck in Init.
fn sidecar_container(
    plan: &SecretsPlan,
    class: ClassLookup<'_>,
    namespace: &str,
    containers: &[ContainerRef<'_>],
    identity_env: &[(&str, &str)],
    old: &Marker,
    config: &Config,
) -> Result<Value, Denial> {
    let unavailable = |why: String| Denial::SecretProviderClassUnavailable {
        class: plan.class.clone(),
        namespace: namespace.to_owned(),
        why,
    };
    let spc = match class {
        ClassLookup::Found(spc) => spc,
        ClassLookup::NotFound => return Err(unavailable("does not exist: create it before the pod".to_owned())),
        ClassLookup::Failed(why) => {
            return Err(unavailable(format!("could not be read ({why}); retry the request")));
        }
    };
    wi_contract::spc::from_value(spc).map_err(|e| Denial::InvalidSecretProviderClass {
        class: plan.class.clone(),
        error: e.to_string(),
    })?;
    let port = config.sidecar.admin_port;
    for c in containers {
        if c.name == SIDECAR_CONTAINER && !old.containers.contains(SIDECAR_CONTAINER) {
            return Err(Denial::ContainerNameConflict(SIDECAR_CONTAINER));
        }
        if c.name == SIDECAR_CONTAINER {
            continue;
        }
        let ports = c
            .object
            .get("ports")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        if ports
            .iter()
            .any(|p| p.get("containerPort").and_then(Value::as_u64) == Some(u64::from(port)))
        {
            return Err(Denial::PortConflict {
                container: c.name.to_owned(),
                port,
            });
        }
    }
    let parameters = spc.pointer("/spec/parameters").cloned().unwrap_or(Value::Null);
    let mut env: Vec<Value> = identity_env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let sidecar = &config.sidecar;
    env.extend([
        json!({"name": ENV_SECRETS_CONFIG, "value": parameters.to_string()}),
        json!({"name": ENV_SECRETS_DIR, "value": plan.mount_path}),
        json!({"name": ENV_ROTATION_INTERVAL, "value": sidecar.rotation_interval}),
        json!({"name": ENV_ADMIN_LISTEN, "value": format!("0.0.0.0:{port}")}),
    ]);
    env.extend(
        sidecar
            .env
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value})),
    );
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
            "periodSeconds": period,
            "failureThreshold": failures,
        })
    };
    Ok(json!({
        "name": SIDECAR_CONTAINER,
        "image": sidecar.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [SIDECAR_RUN],
        // A native sidecar: started before the app containers, which wait for its startup probe (the first
        // complete sync), kept running beside them, stopped after them.
        "restartPolicy": "Always",
        "env": env,
        "ports": [{"name": "wi-sidecar", "containerPort": port, "protocol": "TCP"}],
        "startupProbe": probe("/readyz", 1, 300),
        "livenessProbe": probe("/healthz", 10, 3),
        "resources": {
            "requests": {"cpu": sidecar.cpu_request, "memory": sidecar.memory_request},
            "limits": {"memory": sidecar.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true},
            {"name": SECRETS_VOLUME, "mountPath": plan.mount_path},
        ],
    }))
}

/// Puts the sidecar first among the init containers (so that the pod's own init containers, too, start after the
/// first sync), or brings the one an earlier pass injected up to date.
fn inject_sidecar(
    spec: &Map<String, Value>,
    want: Value,
    old: &Marker,
    marker: &mut Marker,
    ops: &mut Vec<PatchOperation>,
) {
    let init: &[Value] = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let existing = init
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_CONTAINER));
    match existing {
        // Only ours reaches here: a container of that name not in the marker was denied.
        Some(i) if old.containers.contains(SIDECAR_CONTAINER) => {
            if !contains(&init[i], &want) {
                ops.push(replace(&format!("/spec/initContainers/{i}"), want));
            }
        }
        _ if init.is_empty() => ops.push(add("/spec/initContainers", Value::Array(vec![want]))),
        _ => ops.push(add("/spec/initContainers/0", want)),
    }
    marker.containers.insert(SIDECAR_CONTAINER.to_owned());
}

/// The constant name of a volume or mount the webhook injects.
fn reserved_name(want: &Value) -> &'static str {
    if want["name"] == TOKEN_VOLUME {
        TOKEN_VOLUME
    } else {
        SECRETS_VOLUME
    }
}

/// The file name of the token in the pod's own `azure-identity-token` volume (one the webhook did not inject): the
/// `path` of its service account token source for `audience`. [`TOKEN_FILE`] otherwise.
fn own_token_file_name(spec: &Map<String, Value>, old: &Marker, audience: &str) -> String {
    if old.volumes.contains(TOKEN_VOLUME) {
        return TOKEN_FILE.to_owned();
    }
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("name").and_then(Value::as_str) == Some(TOKEN_VOLUME))
        .filter_map(|v| v.pointer("/projected/sources").and_then(Value::as_array))
        .flatten()
        .filter_map(|source| source.get("serviceAccountToken"))
        .find(|token| token.get("audience").and_then(Value::as_str) == Some(audience))
        .and_then(|token| token.get("path").and_then(Value::as_str))
        .map(|path| path.trim_matches('/'))
        .filter(|path| !path.is_empty())
        .map_or_else(|| TOKEN_FILE.to_owned(), str::to_owned)
}

/// Where the container sees the token when it mounts the token volume itself (a mount the webhook did not inject):
/// under its own mount path, or the mount path itself for a `subPath` mount of the file. `None`: at
/// [`TOKEN_MOUNT_PATH`], the webhook's mount.
fn own_token_mount(
    container: &ContainerRef<'_>,
    old: &Marker,
    file_name: &str,
    warnings: &mut Vec<String>,
) -> Option<String> {
    if old.owns_mount(container.name, TOKEN_VOLUME) {
        return None;
    }
    let mount = container
        .object
        .get("volumeMounts")
        .and_then(Value::as_array)?
        .get(mount_index(container.object, TOKEN_VOLUME)?)?;
    let path = mount.get("mountPath").and_then(Value::as_str)?.trim_end_matches('/');
    match mount
        .get("subPath")
        .and_then(Value::as_str)
        .map(|p| p.trim_matches('/'))
    {
        None | Some("") => Some(format!("{path}/{file_name}")),
        Some(sub) if sub == file_name => Some(path.to_owned()),
        Some(sub) => {
            warnings.push(format!(
                "container {:?} mounts {sub:?} of {TOKEN_VOLUME}, which holds the token as {file_name:?}: the token \
                 is not in that mount, Azure SDKs will fail to sign in",
                container.name
            ));
            None
        }
    }
}

fn mount_index(container: &Map<String, Value>, volume: &str) -> Option<usize> {
    container
        .get("volumeMounts")
        .and_then(Value::as_array)?
        .iter()
        .position(|m| m.get("name").and_then(Value::as_str) == Some(volume))
}

/// The operations of one patch. Appends are gathered per list and emitted last, so that two additions to a
/// list the pod does not have yet (a token and a secrets mount) become one `add` of the whole list.
#[derive(Default)]
struct Ops {
    ops: Vec<PatchOperation>,
    /// List pointer, whether the list exists, items to append.
    appends: Vec<(String, bool, Vec<Value>)>,
}

impl Ops {
    fn append(&mut self, pointer: &str, current: Option<&Value>, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        match self.appends.iter_mut().find(|(p, _, _)| p == pointer) {
            Some((_, _, pending)) => pending.extend(items),
            None => self
                .appends
                .push((pointer.to_owned(), matches!(current, Some(Value::Array(_))), items)),
        }
    }

    fn finish(self) -> Vec<PatchOperation> {
        let mut ops = self.ops;
        for (pointer, exists, items) in self.appends {
            if exists {
                ops.extend(items.into_iter().map(|item| add(&format!("{pointer}/-"), item)));
            } else {
                // Absent or null: an `add` onto an existing member replaces it (RFC 6902).
                ops.push(add(&pointer, Value::Array(items)));
            }
        }
        ops
    }
}

/// Sets `key` in the map found by following `path` from `root`, creating missing maps on the way.
fn set_map_entry(root: &Map<String, Value>, path: &[&str], key: &str, value: Value, ops: &mut Vec<PatchOperation>) {
    let mut node = Some(root);
    let mut tokens: Vec<&str> = Vec::new();
    for (depth, segment) in path.iter().enumerate() {
        match node.and_then(|n| n.get(*segment)).and_then(Value::as_object) {
            Some(child) => {
                tokens.push(segment);
                node = Some(child);
            }
            None => {
                // Build the rest of the path as one nested object.
                let mut nested = json!({ key: value });
                for seg in path[depth + 1..].iter().rev() {
                    nested = json!({ *seg: nested });
                }
                tokens.push(segment);
                ops.push(PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(tokens),
                    value: nested,
                }));
                return;
            }
        }
    }
    let exists = node.is_some_and(|n| n.contains_key(key));
    tokens.push(key);
    let path = PointerBuf::from_tokens(tokens);
    ops.push(if exists {
        PatchOperation::Replace(ReplaceOperation { path, value })
    } else {
        PatchOperation::Add(AddOperation { path, value })
    });
}

fn add(pointer: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer_buf(pointer),
        value,
    })
}

fn replace(pointer: &str, value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: pointer_buf(pointer),
        value,
    })
}

/// Pointers built here are made of field names and indices, none of which need escaping.
fn pointer_buf(pointer: &str) -> PointerBuf {
    PointerBuf::from_tokens(pointer.split('/').skip(1))
}

/// Whether `actual` has everything `want` has. Extra fields in `actual` (defaults the API server filled in
/// between two passes, such as a projected volume's `defaultMode`) do not count as a difference.
fn contains(actual: &Value, want: &Value) -> bool {
    match (actual, want) {
        (Value::Object(a), Value::Object(w)) => w.iter().all(|(k, wv)| a.get(k).is_some_and(|av| contains(av, wv))),
        (Value::Array(a), Value::Array(w)) => a.len() == w.len() && a.iter().zip(w).all(|(av, wv)| contains(av, wv)),
        _ => actual == want,
    }
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn name_list(value: Option<&String>) -> BTreeSet<String> {
    value
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn normalize_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() && path.starts_with('/') {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// RFC 1123 subdomain, as Kubernetes object names are.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cloud;
    use rstest::rstest;

    const CLIENT: &str = "dc93f674-70ec-43e3-be7b-bf11ac753aa3";
    const OTHER_CLIENT: &str = "76adb878-a0df-48e0-a76d-cf5ee3bf0200";
    const TENANT: &str = "15c361b7-5906-4328-b3f0-4ff62413e436";

    fn sa(annotations: &[(&str, &str)]) -> ServiceAccount {
        ServiceAccount {
            name: "app-sa".into(),
            namespace: "apps".into(),
            annotations: annotations.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            labels: BTreeMap::new(),
        }
    }

    fn annotated_sa() -> ServiceAccount {
        sa(&[(CLIENT_ID_ANNOTATION, CLIENT)])
    }

    fn config() -> Config {
        Config {
            tenant_id: Some(TENANT.into()),
            ..Config::default()
        }
    }

    fn pod(annotations: Value, containers: Value) -> Value {
        json!({
            "metadata": {"name": "p", "namespace": "apps",
                         "labels": {USE_LABEL: "true"}, "annotations": annotations},
            "spec": {"serviceAccountName": "app-sa", "containers": containers},
        })
    }

    fn run(pod: &Value, sa: &ServiceAccount, spc: Option<&Value>) -> Result<Mutation, Denial> {
        let inputs = Inputs {
            namespace_labels: None,
            service_account: sa,
            secret_provider_class: spc.into(),
        };
        mutate(pod, &inputs, &config())
    }

    fn apply(pod: &Value, mutation: &Mutation) -> Value {
        let mut out = pod.clone();
        json_patch::patch(&mut out, &mutation.patch).unwrap();
        out
    }

    fn env_of(pod: &Value, container: usize) -> Vec<(String, String)> {
        pod["spec"]["containers"][container]["env"]
            .as_array()
            .map(|env| {
                env.iter()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap().to_owned(),
                            e["value"].as_str().unwrap_or("<valueFrom>").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn env_value(pod: &Value, container: usize, name: &str) -> Option<String> {
        env_of(pod, container)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    #[rstest]
    #[case(Some("true"), None, true)]
    #[case(Some("false"), Some("true"), false)]
    #[case(None, Some("true"), true)]
    #[case(None, Some("false"), false)]
    #[case(None, None, false)]
    #[case(Some("True"), None, false)]
    #[case(Some("yes"), Some("true"), true)]
    fn opt_in_by_pod_or_namespace_label(
        #[case] pod_label: Option<&str>,
        #[case] namespace_label: Option<&str>,
        #[case] injected: bool,
    ) {
        let mut p = pod(json!({}), json!([{"name": "app"}]));
        match pod_label {
            Some(v) => p["metadata"]["labels"][USE_LABEL] = json!(v),
            None => p["metadata"]["labels"] = json!({"app": "x"}),
        }
        let ns: BTreeMap<String, String> = namespace_label
            .map(|v| (USE_LABEL.to_owned(), v.to_owned()))
            .into_iter()
            .collect();
        let sa = annotated_sa();
        let inputs = Inputs {
            namespace_labels: Some(&ns),
            service_account: &sa,
            secret_provider_class: ClassLookup::NotFound,
        };
        let m = mutate(&p, &inputs, &config()).unwrap();
        assert_eq!(!m.patch.0.is_empty(), injected, "{m:?}");
    }

    #[test]
    fn a_pod_that_did_not_opt_in_is_left_alone_whatever_it_carries() {
        let p = json!({"metadata": {"annotations": {SECRET_PROVIDER_CLASS_ANNOTATION: "x"}}, "spec": "garbage"});
        let m = run(&p, &annotated_sa(), None).unwrap();
        assert!(m.patch.0.is_empty() && m.warnings.is_empty());
    }

    #[test]
    fn injects_env_mount_volume_and_marker() {
        let p = pod(
            json!({}),
            json!([{"name": "app", "env": [{"name": "A", "value": "1"}]}]),
        );
        let out = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
        assert_eq!(
            env_of(&out, 0),
            vec![
                ("A".into(), "1".into()),
                (ENV_CLIENT_ID.into(), CLIENT.into()),
                (ENV_TENANT_ID.into(), TENANT.into()),
                (ENV_FEDERATED_TOKEN_FILE.into(), TOKEN_FILE_PATH.into()),
                (ENV_AUTHORITY_HOST.into(), "https://login.microsoftonline.com/".into()),
            ]
        );
        assert_eq!(
            out["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}])
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
                "audience": DEFAULT_AUDIENCE, "expirationSeconds": 3600, "path": TOKEN_FILE}}]}}])
        );
        assert!(out["metadata"]["annotations"][INJECTED_ANNOTATION].is_string());
    }

    #[rstest]
    #[case(Cloud::UsGovernment, "https://login.microsoftonline.us/")]
    #[case(Cloud::China, "https://login.chinacloudapi.cn/")]
    fn authority_host_follows_the_cloud(#[case] cloud: Cloud, #[case] host: &str) {
        let p = pod(json!({}), json!([{"name": "app"}]));
        let sa = annotated_sa();
        let inputs = Inputs {
            namespace_labels: None,
            service_account: &sa,
            secret_provider_class: ClassLookup::NotFound,
        };
        let cfg = Config { cloud, ..config() };
        let out = apply(&p, &mutate(&p, &inputs, &cfg).unwrap());
        assert_eq!(env_value(&out, 0, ENV_AUTHORITY_HOST).as_deref(), Some(host));
    }

    #[test]
    fn sa_tenant_wins_over_the_default_and_empty_values_are_not_injected() {
        let p = pod(json!({}), json!([{"name": "app"}]));
        let other_tenant = "0b6d3d2a-9f5e-4f0e-9a55-1d2c3b4a5f60";
        let s = sa(&[(CLIENT_ID_ANNOTATION, "  "), (TENANT_ID_ANNOTATION, other_tenant)]);
        let m = run(&p, &s, None).unwrap();
        let out = apply(&p, &m);
        assert_eq!(env_value(&out, 0, ENV_CLIENT_ID), None);
        assert_eq!(env_value(&out, 0, ENV_TENANT_ID).as_deref(), Some(other_tenant));
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("has no azure.workload.identity/client-id")),
            "{m:?}"
        );
    }

    #[test]
    fn user_values_are_never_overridden() {
        let p = pod(
            json!({}),
            json!([{"name": "app", "env": [
                {"name": ENV_CLIENT_ID, "value": OTHER_CLIENT},
                {"name": ENV_TENANT_ID, "valueFrom": {"configMapKeyRef": {"name": "c", "key": "t"}}},
            ]}]),
        );
        let out = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
        let env = env_of(&out, 0);
        assert_eq!(env[0], (ENV_CLIENT_ID.into(), OTHER_CLIENT.into()));
        assert_eq!(env[1], (ENV_TENANT_ID.into(), "<valueFrom>".into()));
        assert_eq!(env.iter().filter(|(n, _)| n == ENV_CLIENT_ID).count(), 1);
        assert_eq!(env.iter().filter(|(n, _)| n == ENV_TENANT_ID).count(), 1);
    }

    #[test]
    fn skip_containers_are_untouched_and_init_containers_are_injected() {
        let mut p = pod(
            json!({SKIP_CONTAINERS_ANNOTATION: " sidecar ; ;istio-proxy"}),
            json!([{"name": "app"}, {"name": "sidecar"}, {"name": "istio-proxy"}]),
        );
        p["spec"]["initContainers"] = json!([{"name": "init", "restartPolicy": "Always"}]);
        let out = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
        assert!(env_value(&out, 0, ENV_CLIENT_ID).is_some());
        assert_eq!(out["spec"]["containers"][1], json!({"name": "sidecar"}));
        assert_eq!(out["spec"]["containers"][2], json!({"name": "istio-proxy"}));
        assert_eq!(out["spec"]["initContainers"][0]["restartPolicy"], "Always");
        assert_eq!(out["spec"]["initContainers"][0]["env"][0]["name"], ENV_CLIENT_ID);
    }

    #[test]
    fn ephemeral_containers_and_unknown_fields_pass_through() {
        let mut p = pod(json!({}), json!([{"name": "app", "x-future-field": {"a": [1, 2]}}]));
        p["spec"]["ephemeralContainers"] =
            json!([{"name": "debugger", "image": "busybox", "targetContainerName": "app"}]);
        p["spec"]["x-future-spec"] = json!(true);
        let m = run(&p, &annotated_sa(), None).unwrap();
        assert!(
            m.patch.0.iter().all(|op| !op.path().to_string().contains("ephemeral")),
            "{:?}",
            m.patch
        );
        let out = apply(&p, &m);
        assert_eq!(out["spec"]["ephemeralContainers"], p["spec"]["ephemeralContainers"]);
        assert_eq!(out["spec"]["x-future-spec"], true);
        assert_eq!(out["spec"]["containers"][0]["x-future-field"], json!({"a": [1, 2]}));
    }

    #[test]
    fn a_skip_list_naming_every_container_adds_nothing() {
        let p = pod(json!({SKIP_CONTAINERS_ANNOTATION: "app"}), json!([{"name": "app"}]));
        let m = run(&p, &annotated_sa(), None).unwrap();
        assert!(m.patch.0.is_empty(), "{:?}", m.patch);
    }

    #[rstest]
    #[case(json!({}), &[], 3600)]
    #[case(json!({TOKEN_EXPIRATION_ANNOTATION: "7200"}), &[], 7200)]
    #[case(json!({}), &[(TOKEN_EXPIRATION_ANNOTATION, "86400")], 86400)]
    #[case(json!({TOKEN_EXPIRATION_ANNOTATION: "3600"}), &[(TOKEN_EXPIRATION_ANNOTATION, "86400")], 3600)]
    // Empty is absent, as upstream reads it: the ServiceAccount's, then the default.
    #[case(json!({TOKEN_EXPIRATION_ANNOTATION: ""}), &[(TOKEN_EXPIRATION_ANNOTATION, "7200")], 7200)]
    #[case(json!({TOKEN_EXPIRATION_ANNOTATION: " "}), &[(TOKEN_EXPIRATION_ANNOTATION, "")], 3600)]
    fn token_expiration_from_pod_then_sa(
        #[case] annotations: Value,
        #[case] sa_annotations: &[(&str, &str)],
        #[case] expected: i64,
    ) {
        let p = pod(annotations, json!([{"name": "app"}]));
        let mut s = sa(sa_annotations);
        s.annotations.insert(CLIENT_ID_ANNOTATION.into(), CLIENT.into());
        let out = apply(&p, &run(&p, &s, None).unwrap());
        assert_eq!(
            out.pointer("/spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds"),
            Some(&json!(expected))
        );
    }

    #[rstest]
    #[case(json!({TOKEN_EXPIRATION_ANNOTATION: "3599"}), &[], "on pod is \"3599\"")]
    #[case(json!({TOKEN_EXPIRATION_ANNOTATION: "86401"}), &[], "on pod is \"86401\"")]
    #[case(json!({TOKEN_EXPIRATION_ANNOTATION: "1h"}), &[], "on pod is \"1h\"")]
    #[case(json!({}), &[(TOKEN_EXPIRATION_ANNOTATION, "-1")], "on ServiceAccount apps/app-sa is \"-1\"")]
    fn invalid_token_expiration_is_denied_naming_where(
        #[case] annotations: Value,
        #[case] sa_annotations: &[(&str, &str)],
        #[case] expected: &str,
    ) {
        let p = pod(annotations, json!([{"name": "app"}]));
        let err = run(&p, &sa(sa_annotations), None).unwrap_err().to_string();
        assert!(
            err.contains(expected) && err.contains("3600") && err.contains("86400"),
            "{err}"
        );
    }

    #[rstest]
    #[case("true", None, true)]
    #[case("false", None, false)]
    #[case("False", Some("8000"), false)]
    fn proxy_sidecar_is_read_by_value(#[case] value: &str, #[case] port: Option<&str>, #[case] warned: bool) {
        let mut annotations = json!({INJECT_PROXY_SIDECAR_ANNOTATION: value});
        if let Some(port) = port {
            annotations[PROXY_SIDECAR_PORT_ANNOTATION] = json!(port);
        }
        let p = pod(annotations, json!([{"name": "app"}]));
        let m = run(&p, &annotated_sa(), None).unwrap();
        assert!(!m.patch.0.is_empty());
        assert_eq!(
            m.warnings.iter().any(|w| w.contains("proxy sidecar is not available")),
            warned,
            "{m:?}"
        );
    }

    #[rstest]
    #[case(INJECT_PROXY_SIDECAR_ANNOTATION, "yes")]
    #[case(PROXY_SIDECAR_PORT_ANNOTATION, "0")]
    #[case(PROXY_SIDECAR_PORT_ANNOTATION, "65536")]
    #[case(PROXY_SIDECAR_PORT_ANNOTATION, "http")]
    fn invalid_proxy_annotations_are_denied(#[case] key: &str, #[case] value: &str) {
        let p = pod(json!({key: value}), json!([{"name": "app"}]));
        let err = run(&p, &annotated_sa(), None).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(value), "{err}");
    }

    fn spc(params: Value) -> Value {
        json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
               "metadata": {"name": "kv", "namespace": "apps"},
               "spec": {"provider": "azure", "parameters": params}})
    }

    fn good_spc() -> Value {
        spc(json!({"clientID": CLIENT, "keyvaultName": "kv1", "tenantId": TENANT, "objects": "array: []"}))
    }

    fn sidecar_spc() -> Value {
        spc(json!({"clientID": CLIENT, "keyvaultName": "kv1", "tenantId": TENANT,
                   "objects": "array:\n  - |\n    objectName: db-password\n    objectType: secret\n"}))
    }

    fn sidecar_pod(containers: Value) -> Value {
        pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", SECRETS_DELIVERY_ANNOTATION: "sidecar"}),
            containers,
        )
    }

    fn sidecar_env(container: &Value) -> BTreeMap<String, String> {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
            .collect()
    }

    #[test]
    fn sidecar_delivery_injects_a_native_sidecar_configured_from_the_class() {
        let mut p = sidecar_pod(json!([{"name": "app"}]));
        p["spec"]["initContainers"] = json!([{"name": "migrate"}]);
        let spc = sidecar_spc();
        let m = run(&p, &annotated_sa(), Some(&spc)).unwrap();
        let out = apply(&p, &m);
        let init = out["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init.len(), 2);
        assert_eq!(
            init[1]["name"], "migrate",
            "the pod's init container runs after the first sync"
        );
        assert_eq!(init[1]["volumeMounts"][1]["name"], SECRETS_VOLUME);
        let sidecar = &init[0];
        assert_eq!(sidecar["name"], SIDECAR_CONTAINER);
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["image"], crate::config::DEFAULT_SIDECAR_IMAGE);
        assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(sidecar["startupProbe"]["httpGet"]["port"], 9441);
        assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
        assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(sidecar["resources"]["limits"]["memory"], "64Mi");
        let env = sidecar_env(sidecar);
        assert_eq!(env[ENV_CLIENT_ID], CLIENT);
        assert_eq!(env[ENV_TENANT_ID], TENANT);
        assert_eq!(env[ENV_FEDERATED_TOKEN_FILE], TOKEN_FILE_PATH);
        assert_eq!(env[ENV_SECRETS_DIR], DEFAULT_SECRETS_MOUNT_PATH);
        assert_eq!(env[ENV_ROTATION_INTERVAL], "2m");
        // The class parameters, which the sidecar parses back into the same configuration.
        let cfg = wi_contract::spc::parse(&env[ENV_SECRETS_CONFIG]).unwrap();
        assert_eq!(cfg.keyvault_name, "kv1");
        assert_eq!(cfg.objects[0].name, "db-password");
        assert_eq!(
            sidecar["volumeMounts"],
            json!([{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true},
                   {"name": SECRETS_VOLUME, "mountPath": DEFAULT_SECRETS_MOUNT_PATH}])
        );
        // The app reads, never writes; the volume lives in memory.
        assert_eq!(
            out["spec"]["containers"][0]["volumeMounts"][1],
            json!({"name": SECRETS_VOLUME, "mountPath": DEFAULT_SECRETS_MOUNT_PATH, "readOnly": true})
        );
        let volumes = out["spec"]["volumes"].as_array().unwrap();
        let secrets = volumes.iter().find(|v| v["name"] == SECRETS_VOLUME).unwrap();
        assert_eq!(secrets["emptyDir"]["medium"], "Memory");
        assert!(volumes.iter().any(|v| v["name"] == TOKEN_VOLUME));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn sidecar_delivery_converges_on_a_second_pass_and_follows_settings() {
        let p = sidecar_pod(json!([{"name": "app"}]));
        let spc = sidecar_spc();
        let once = apply(&p, &run(&p, &annotated_sa(), Some(&spc)).unwrap());
        // The API server defaults probe and container fields between passes.
        let mut defaulted = once.clone();
        defaulted["spec"]["initContainers"][0]["startupProbe"]["timeoutSeconds"] = json!(1);
        defaulted["spec"]["initContainers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
        let again = run(&defaulted, &annotated_sa(), Some(&spc)).unwrap();
        assert!(again.patch.0.is_empty(), "{:?}", again.patch);

        // A new image in the webhook's settings replaces the sidecar it injected, in place.
        let mut cfg = config();
        cfg.sidecar.image = "registry.example/wi-sidecar:9".into();
        let sa = annotated_sa();
        let inputs = Inputs {
            namespace_labels: None,
            service_account: &sa,
            secret_provider_class: ClassLookup::Found(&spc),
        };
        let m = mutate(&defaulted, &inputs, &cfg).unwrap();
        assert_eq!(m.patch.0.len(), 1, "{:?}", m.patch);
        let out = apply(&defaulted, &m);
        assert_eq!(out["spec"]["initContainers"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["spec"]["initContainers"][0]["image"],
            "registry.example/wi-sidecar:9"
        );
    }

    #[test]
    fn sidecar_delivery_with_an_empty_init_list_and_skipped_apps_still_gets_the_token() {
        let mut p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", SECRETS_DELIVERY_ANNOTATION: "sidecar",
                   SKIP_CONTAINERS_ANNOTATION: "app", SECRETS_CONTAINERS_ANNOTATION: "app"}),
            json!([{"name": "app"}]),
        );
        p["spec"]["initContainers"] = json!(null);
        let spc = sidecar_spc();
        let out = apply(&p, &run(&p, &annotated_sa(), Some(&spc)).unwrap());
        assert_eq!(out["spec"]["initContainers"][0]["name"], SIDECAR_CONTAINER);
        assert!(out["spec"]["containers"][0].get("env").is_none());
        assert_eq!(out["spec"]["containers"][0]["volumeMounts"][0]["name"], SECRETS_VOLUME);
        let volumes = out["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.iter().any(|v| v["name"] == TOKEN_VOLUME), "{volumes:?}");
    }

    #[rstest]
    #[case(None, "does not exist")]
    #[case(Some(spc(json!({"clientID": CLIENT, "objects": "array: []"}))), "keyvaultName")]
    #[case(Some(spc(json!({"keyvaultName": "kv1", "objects": "array:\n  - |\n    objectName: a\n    objectType: blob\n"}))), "objectType")]
    #[case(Some(spc(json!({"keyvaultName": "kv1", "useVMManagedIdentity": "true", "objects": "array: []"}))), "useVMManagedIdentity")]
    fn sidecar_delivery_denies_a_class_it_cannot_use(#[case] class: Option<Value>, #[case] expected: &str) {
        let p = sidecar_pod(json!([{"name": "app"}]));
        let err = run(&p, &annotated_sa(), class.as_ref()).unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains("\"kv\""), "{err}");
    }

    #[test]
    fn sidecar_delivery_denies_an_unreadable_class_asking_for_a_retry() {
        let p = sidecar_pod(json!([{"name": "app"}]));
        let sa = annotated_sa();
        let inputs = Inputs {
            namespace_labels: None,
            service_account: &sa,
            secret_provider_class: ClassLookup::Failed("forbidden"),
        };
        let err = mutate(&p, &inputs, &config()).unwrap_err().to_string();
        assert!(err.contains("forbidden") && err.contains("retry"), "{err}");
    }

    #[rstest]
    #[case(json!([{"name": "app"}, {"name": "wi-sidecar"}]), "named \"wi-sidecar\"")]
    #[case(json!([{"name": "app", "ports": [{"containerPort": 9441}]}]), "port 9441")]
    fn sidecar_delivery_denies_name_and_port_conflicts(#[case] containers: Value, #[case] expected: &str) {
        let p = sidecar_pod(containers);
        let spc = sidecar_spc();
        let err = run(&p, &annotated_sa(), Some(&spc)).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }

    #[test]
    fn csi_delivery_adds_the_volume_and_read_only_mounts() {
        let p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", SKIP_CONTAINERS_ANNOTATION: "proxy"}),
            json!([{"name": "app"}, {"name": "proxy"}]),
        );
        let s = good_spc();
        let m = run(&p, &annotated_sa(), Some(&s)).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let out = apply(&p, &m);
        let volumes = out["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.contains(
            &json!({"name": SECRETS_VOLUME, "csi": {"driver": CSI_DRIVER, "readOnly": true,
            "volumeAttributes": {"secretProviderClass": "kv"}}})
        ));
        assert!(
            out["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": SECRETS_VOLUME, "mountPath": DEFAULT_SECRETS_MOUNT_PATH, "readOnly": true}))
        );
        assert_eq!(out["spec"]["containers"][1], json!({"name": "proxy"}));
    }

    #[test]
    fn secrets_containers_and_mount_path_choose_where_secrets_go() {
        let p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", SECRETS_CONTAINERS_ANNOTATION: "web;ghost",
                   SECRETS_MOUNT_PATH_ANNOTATION: "/etc/secrets/"}),
            json!([{"name": "app"}, {"name": "web"}]),
        );
        let s = good_spc();
        let m = run(&p, &annotated_sa(), Some(&s)).unwrap();
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("\"ghost\""));
        let out = apply(&p, &m);
        let mounts = |i: usize| out["spec"]["containers"][i]["volumeMounts"].clone();
        assert!(
            !mounts(0)
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == SECRETS_VOLUME)
        );
        assert!(
            mounts(1)
                .as_array()
                .unwrap()
                .contains(&json!({"name": SECRETS_VOLUME, "mountPath": "/etc/secrets", "readOnly": true}))
        );
    }

    #[test]
    fn a_mount_path_conflict_is_denied_naming_container_and_path() {
        let p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
            json!([{"name": "app", "volumeMounts": [{"name": "mine", "mountPath": "/mnt/secrets-store/"}]}]),
        );
        let err = run(&p, &annotated_sa(), Some(&good_spc())).unwrap_err();
        assert!(matches!(err, Denial::MountPathConflict { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("\"app\"") && msg.contains("/mnt/secrets-store") && msg.contains("\"mine\""),
            "{msg}"
        );
    }

    #[test]
    fn a_token_path_conflict_is_denied() {
        let p = pod(
            json!({}),
            json!([{"name": "app", "volumeMounts": [{"name": "t", "mountPath": TOKEN_MOUNT_PATH}]}]),
        );
        let msg = run(&p, &annotated_sa(), None).unwrap_err().to_string();
        assert!(msg.contains(TOKEN_MOUNT_PATH) && msg.contains("\"t\""), "{msg}");
    }

    #[rstest]
    #[case(SECRETS_DELIVERY_ANNOTATION, "nfs", "\"csi\" or \"sidecar\"")]
    #[case(SECRETS_MOUNT_PATH_ANNOTATION, "relative/path", "absolute")]
    #[case(SECRETS_MOUNT_PATH_ANNOTATION, "/mnt/../etc", "absolute")]
    #[case(SECRETS_MOUNT_PATH_ANNOTATION, "/", "absolute")]
    #[case(SECRETS_MOUNT_PATH_ANNOTATION, TOKEN_MOUNT_PATH, "token")]
    fn invalid_secrets_annotations_are_denied(#[case] key: &str, #[case] value: &str, #[case] expected: &str) {
        let p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", key: value}),
            json!([{"name": "app"}]),
        );
        let msg = run(&p, &annotated_sa(), Some(&good_spc())).unwrap_err().to_string();
        assert!(msg.contains(key) && msg.contains(expected), "{msg}");
    }

    #[test]
    fn an_invalid_class_name_is_denied() {
        let p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "Not_A_Name"}),
            json!([{"name": "app"}]),
        );
        let msg = run(&p, &annotated_sa(), None).unwrap_err().to_string();
        assert!(msg.contains("Not_A_Name"), "{msg}");
    }

    #[test]
    fn a_users_volume_under_the_secrets_name_is_a_conflict() {
        let mut p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
            json!([{"name": "app"}]),
        );
        p["spec"]["volumes"] = json!([{"name": SECRETS_VOLUME, "emptyDir": {}}]);
        let err = run(&p, &annotated_sa(), Some(&good_spc())).unwrap_err();
        assert_eq!(err, Denial::VolumeNameConflict(SECRETS_VOLUME));
    }

    #[rstest]
    #[case(None, "was not found in namespace \"apps\"")]
    #[case(Some(spc(json!({"useVMManagedIdentity": "true", "userAssignedIdentityID": CLIENT, "keyvaultName": "kv1"}))), "node's identity")]
    #[case(Some(spc(json!({"usePodIdentity": "true", "keyvaultName": "kv1"}))), "usePodIdentity")]
    #[case(Some(spc(json!({"keyvaultName": "kv1"}))), "no clientID")]
    #[case(Some(spc(json!({"clientID": OTHER_CLIENT, "keyvaultName": "kv1"}))), "differs from the ServiceAccount")]
    #[case(Some(spc(json!({"clientID": CLIENT}))), "no keyvaultName")]
    fn secret_provider_class_problems_are_warnings(#[case] class: Option<Value>, #[case] expected: &str) {
        let p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
            json!([{"name": "app"}]),
        );
        let m = run(&p, &annotated_sa(), class.as_ref()).unwrap();
        assert!(!m.patch.0.is_empty());
        assert!(m.warnings.iter().any(|w| w.contains(expected)), "{:?}", m.warnings);
    }

    #[rstest]
    #[case(&[("azure.workload.identity/client_id", CLIENT)], &[], "did you mean azure.workload.identity/client-id?")]
    #[case(&[("Azure.Workload.Identity/ClientID", CLIENT)], &[], "did you mean azure.workload.identity/client-id?")]
    #[case(&[(SKIP_CONTAINERS_ANNOTATION, "x")], &[], "belongs on the pod")]
    #[case(&[], &[(CLIENT_ID_ANNOTATION, CLIENT)], "belongs on the ServiceAccount")]
    #[case(&[], &[(USE_LABEL, "true")], "must be a pod label")]
    #[case(&[], &[("workload-identity.rs/secret-provider-clas", "kv")], "did you mean workload-identity.rs/secret-provider-class?")]
    fn look_alike_keys_are_warned_about(
        #[case] sa_annotations: &[(&str, &str)],
        #[case] pod_annotations: &[(&str, &str)],
        #[case] expected: &str,
    ) {
        let annotations: Map<String, Value> = pod_annotations.iter().map(|(k, v)| ((*k).into(), json!(v))).collect();
        let p = pod(Value::Object(annotations), json!([{"name": "app"}]));
        let m = run(&p, &sa(sa_annotations), None).unwrap();
        assert!(m.warnings.iter().any(|w| w.contains(expected)), "{:?}", m.warnings);
    }

    #[test]
    fn a_class_that_could_not_be_read_is_a_warning_that_says_why() {
        let p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
            json!([{"name": "app"}]),
        );
        let sa = annotated_sa();
        let inputs = Inputs {
            namespace_labels: None,
            service_account: &sa,
            secret_provider_class: ClassLookup::Failed("forbidden"),
        };
        let m = mutate(&p, &inputs, &config()).unwrap();
        assert_eq!(
            m.warnings,
            ["SecretProviderClass \"kv\" could not be checked: forbidden"]
        );
        assert!(
            apply(&p, &m)["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == SECRETS_VOLUME)
        );
    }

    #[test]
    fn a_client_id_that_is_not_a_uuid_is_injected_with_a_warning() {
        let p = pod(json!({}), json!([{"name": "app"}]));
        let m = run(&p, &sa(&[(CLIENT_ID_ANNOTATION, "my-app")]), None).unwrap();
        assert_eq!(env_value(&apply(&p, &m), 0, ENV_CLIENT_ID).as_deref(), Some("my-app"));
        assert!(m.warnings.iter().any(|w| w.contains("not a UUID")), "{:?}", m.warnings);
    }

    #[test]
    fn a_second_pass_is_empty_even_after_api_server_defaulting() {
        let p = pod(
            json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
            json!([{"name": "app", "env": null}]),
        );
        let s = good_spc();
        let mut out = apply(&p, &run(&p, &annotated_sa(), Some(&s)).unwrap());
        // Between two webhook passes the API server decodes and defaults the pod.
        out["spec"]["volumes"][0]["projected"]["defaultMode"] = json!(420);
        let again = run(&out, &annotated_sa(), Some(&s)).unwrap();
        assert!(again.patch.0.is_empty(), "{:?}", again.patch);
    }

    #[test]
    fn reinvocation_with_a_changed_sa_replaces_only_what_was_injected() {
        // Container "app" has the user's own client id; "worker" got the injected one.
        let p = pod(
            json!({}),
            json!([{"name": "app", "env": [{"name": ENV_CLIENT_ID, "value": OTHER_CLIENT}]}, {"name": "worker"}]),
        );
        let first = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
        let new_client = "0f3e5c1a-2b4d-4c6e-8f10-a1b2c3d4e5f6";
        let changed = sa(&[
            (CLIENT_ID_ANNOTATION, new_client),
            (TOKEN_EXPIRATION_ANNOTATION, "7200"),
        ]);
        let m = run(&first, &changed, None).unwrap();
        assert!(
            m.patch.0.iter().all(|op| matches!(op, PatchOperation::Replace(_))),
            "{:?}",
            m.patch
        );
        let second = apply(&first, &m);
        assert_eq!(env_value(&second, 0, ENV_CLIENT_ID).as_deref(), Some(OTHER_CLIENT));
        assert_eq!(env_value(&second, 1, ENV_CLIENT_ID).as_deref(), Some(new_client));
        assert_eq!(
            second.pointer("/spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds"),
            Some(&json!(7200))
        );
        assert!(run(&second, &changed, None).unwrap().patch.0.is_empty());
    }

    #[test]
    fn reinvocation_with_an_sa_that_lost_its_client_id_drops_the_stale_one_without_remove() {
        let p = pod(
            json!({}),
            json!([{"name": "app", "env": [{"name": "KEEP", "value": "1"}]}]),
        );
        let first = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
        let m = run(&first, &sa(&[]), None).unwrap();
        assert!(!m.patch.0.iter().any(|op| matches!(op, PatchOperation::Remove(_))));
        let second = apply(&first, &m);
        let names: Vec<String> = env_of(&second, 0).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["KEEP", ENV_TENANT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_AUTHORITY_HOST]
        );
        assert!(run(&second, &sa(&[]), None).unwrap().patch.0.is_empty());
    }

    #[test]
    fn a_users_own_token_volume_and_mount_are_kept() {
        let mut p = pod(
            json!({}),
            json!([{"name": "app", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}]}]),
        );
        p["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": DEFAULT_AUDIENCE, "expirationSeconds": 3600, "path": TOKEN_FILE}}]}}]);
        let m = run(&p, &annotated_sa(), None).unwrap();
        let out = apply(&p, &m);
        assert_eq!(out["spec"]["volumes"], p["spec"]["volumes"]);
        assert_eq!(
            out["spec"]["containers"][0]["volumeMounts"],
            p["spec"]["containers"][0]["volumeMounts"]
        );
        assert_eq!(env_of(&out, 0).len(), 4);
    }

    /// A pod's own token volume naming the file otherwise (upstream's test pod uses `my-projected-volume`): kept, and
    /// AZURE_FEDERATED_TOKEN_FILE names the file each container really sees, under the webhook's mount, under the
    /// container's own mount, or at a `subPath` mount of the file itself. Upstream points at its constant path, a file
    /// that does not exist then.
    #[test]
    fn the_token_env_names_the_file_of_the_pods_own_token_volume() {
        let mut p = pod(
            json!({}),
            json!([{"name": "plain"},
                   {"name": "mounted", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/var/run/secrets/tokens"}]},
                   {"name": "file", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/token", "subPath": "my-projected-volume"}]}]),
        );
        p["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": DEFAULT_AUDIENCE, "expirationSeconds": 3600, "path": "my-projected-volume"}}]}}]);
        let m = run(&p, &annotated_sa(), None).unwrap();
        let out = apply(&p, &m);
        assert_eq!(out["spec"]["volumes"], p["spec"]["volumes"], "the pod's volume is kept");
        let token_file = |i: usize| {
            env_of(&out, i)
                .into_iter()
                .find(|(name, _)| name == ENV_FEDERATED_TOKEN_FILE)
                .map(|(_, value)| value)
        };
        assert_eq!(
            token_file(0).as_deref(),
            Some("/var/run/secrets/azure/tokens/my-projected-volume")
        );
        assert_eq!(
            out["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}])
        );
        assert_eq!(
            token_file(1).as_deref(),
            Some("/var/run/secrets/tokens/my-projected-volume")
        );
        assert_eq!(token_file(2).as_deref(), Some("/token"));
        assert!(
            run(&out, &annotated_sa(), None).unwrap().patch.0.is_empty(),
            "a second pass adds nothing"
        );
    }

    #[test]
    fn a_subpath_mount_of_another_file_of_the_token_volume_is_warned_about() {
        let mut p = pod(
            json!({}),
            json!([{"name": "app", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/ca.crt", "subPath": "ca.crt"}]}]),
        );
        p["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "projected": {"sources": [
            {"serviceAccountToken": {"audience": DEFAULT_AUDIENCE, "expirationSeconds": 3600, "path": TOKEN_FILE}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}]);
        let m = run(&p, &annotated_sa(), None).unwrap();
        assert!(
            m.warnings.iter().any(|w| w.contains("the token is not in that mount")),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn a_users_token_volume_of_another_kind_is_kept_with_a_warning() {
        let mut p = pod(json!({}), json!([{"name": "app"}]));
        p["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "emptyDir": {}}]);
        let m = run(&p, &annotated_sa(), None).unwrap();
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("not a projected service account token")),
            "{:?}",
            m.warnings
        );
        assert_eq!(apply(&p, &m)["spec"]["volumes"], p["spec"]["volumes"]);
    }

    #[test]
    fn an_unreadable_marker_is_rewritten_with_a_warning() {
        let p = pod(json!({INJECTED_ANNOTATION: "garbage"}), json!([{"name": "app"}]));
        let m = run(&p, &annotated_sa(), None).unwrap();
        assert!(m.warnings.iter().any(|w| w.contains(INJECTED_ANNOTATION)));
        let out = apply(&p, &m);
        assert!(
            out["metadata"]["annotations"][INJECTED_ANNOTATION]
                .as_str()
                .unwrap()
                .starts_with('{')
        );
    }

    #[rstest]
    #[case(json!([1, 2]), "expected a JSON object")]
    #[case(json!({"metadata": {"labels": {USE_LABEL: "true"}}}), "spec is missing")]
    #[case(json!({"metadata": {"labels": {USE_LABEL: "true"}}, "spec": {"containers": {}}}), "spec.containers is an object")]
    #[case(json!({"metadata": {"labels": {USE_LABEL: "true"}}, "spec": {"containers": [{"name": "a", "env": "x"}]}}), "spec.containers[0].env is a string")]
    #[case(json!({"metadata": {"labels": {USE_LABEL: "true"}}, "spec": {"containers": [], "volumes": 3}}), "spec.volumes is a number")]
    fn malformed_pods_are_denied_with_the_field(#[case] p: Value, #[case] expected: &str) {
        let msg = run(&p, &annotated_sa(), None).unwrap_err().to_string();
        assert!(msg.contains(expected), "{msg}");
    }

    #[test]
    fn annotation_keys_with_slashes_are_escaped_in_the_patch() {
        let p = json!({"metadata": {"labels": {USE_LABEL: "true"}, "annotations": {"a": "b"}},
                       "spec": {"containers": [{"name": "app"}]}});
        let m = run(&p, &annotated_sa(), None).unwrap();
        let last = serde_json::to_value(m.patch.0.last().unwrap()).unwrap();
        assert_eq!(last["path"], "/metadata/annotations/workload-identity.rs~1injected");
        assert_eq!(apply(&p, &m)["metadata"]["annotations"]["a"], "b");
    }

    #[test]
    fn service_account_name_falls_back_like_the_api_server() {
        assert_eq!(
            service_account_name(&json!({"spec": {"serviceAccountName": "a", "serviceAccount": "b"}})),
            "a"
        );
        assert_eq!(service_account_name(&json!({"spec": {"serviceAccount": "b"}})), "b");
        assert_eq!(service_account_name(&json!({"spec": {}})), "default");
    }
}
