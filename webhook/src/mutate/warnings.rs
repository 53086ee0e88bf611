//! Warnings about what would break at run time without refusing the pod: an identity without client or tenant
//! id, a SecretProviderClass in another identity mode, container names that match nothing, look-alike keys.

use crate::diagnostics::{Code, Subject, Warning};
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use wi_contract::spc::{self, ConfigError};
use wi_contract::*;

use super::inputs::{ClassLookup, ServiceAccount};
use super::pod::ContainerRef;
use super::values::{non_empty, string_map};

pub(super) fn warn_unknown_names(
    key: &str,
    names: &BTreeSet<String>,
    containers: &[ContainerRef<'_>],
    warnings: &mut Vec<Warning>,
) {
    for name in names {
        if !containers.iter().any(|c| c.name == name) {
            warnings.push(Warning::new(
                Code::UnknownContainer,
                Subject::Pod,
                format!("annotation {key} names container {name:?}, which the pod does not have"),
            ));
        }
    }
}

/// The identity the ServiceAccount (or the webhook's default tenant) gives: client id and tenant id present and
/// UUIDs.
pub(crate) fn warn_identity(
    sa: &ServiceAccount,
    client_id: Option<&str>,
    tenant_id: Option<&str>,
    warnings: &mut Vec<Warning>,
) {
    match client_id {
        None => warnings.push(Warning::new(
            Code::NoClientId,
            Subject::ServiceAccount,
            format!("{sa} has no {CLIENT_ID_ANNOTATION} annotation, so AZURE_CLIENT_ID is not injected"),
        )),
        Some(id) if uuid::Uuid::try_parse(id).is_err() => warnings.push(Warning::new(
            Code::ClientIdNotUuid,
            Subject::ServiceAccount,
            format!("{sa}: {CLIENT_ID_ANNOTATION} {id:?} is not a UUID; Entra ID client ids are UUIDs"),
        )),
        Some(_) => {}
    }
    match tenant_id {
        None => warnings.push(Warning::new(
            Code::NoTenant,
            Subject::ServiceAccount,
            format!(
                "no tenant: {sa} has no {TENANT_ID_ANNOTATION} annotation and the webhook was started without \
                 --tenant-id; AZURE_TENANT_ID is not injected"
            ),
        )),
        Some(id) if uuid::Uuid::try_parse(id).is_err() => warnings.push(Warning::new(
            Code::TenantIdNotUuid,
            Subject::ServiceAccount,
            format!("tenant id {id:?} is not a UUID; Entra ID tenant ids are UUIDs"),
        )),
        Some(_) => {}
    }
}

/// The class named `class` (in the pod's namespace, the ServiceAccount's), as the lookup found it.
pub(super) fn warn_secret_provider_class(
    class: &str,
    spc: ClassLookup<'_>,
    sa: &ServiceAccount,
    identity: (Option<&str>, Option<&str>),
    sidecar: bool,
    warnings: &mut Vec<Warning>,
) {
    match spc {
        ClassLookup::Found(spc) => {
            check_class(class, spc, identity, false, warnings);
            if sidecar {
                warn_unsynced_secret_objects(class, spc, warnings);
            }
        }
        ClassLookup::NotFound => warnings.push(Warning::new(
            Code::ClassNotFound,
            Subject::SecretProviderClass(class.to_owned()),
            format!(
                "SecretProviderClass {:?} was not found in namespace {:?}: the secrets volume cannot mount until it \
                 exists",
                class, sa.namespace
            ),
        )),
        ClassLookup::Failed(why) => warnings.push(Warning::new(
            Code::ClassUnreadable,
            Subject::SecretProviderClass(class.to_owned()),
            format!("SecretProviderClass {class:?} could not be checked: {why}"),
        )),
    }
}

/// A class whose `secretObjects` nothing syncs: with sidecar delivery there is no CSI driver mount to sync them,
/// and without the sync annotation `wi-controller` leaves the class alone.
fn warn_unsynced_secret_objects(class: &str, spc: &Value, warnings: &mut Vec<Warning>) {
    let annotated = spc
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SYNC_SERVICE_ACCOUNT_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|v| !v.trim().is_empty());
    let names: Vec<String> = wi_contract::secret_objects::parse(spc)
        .into_iter()
        .flatten()
        .map(|o| o.secret_name)
        .collect();
    if annotated || names.is_empty() {
        return;
    }
    warnings.push(Warning::new(
        Code::SecretObjectsNotSynced,
        Subject::SecretProviderClass(class.to_owned()),
        format!(
            "SecretProviderClass {class:?} lists secretObjects (Secret {}), which sidecar delivery does not make: \
             annotate the class {SYNC_SERVICE_ACCOUNT_ANNOTATION}: <ServiceAccount> to have wi-controller sync them \
             with that ServiceAccount's identity",
            names.join(", ")
        ),
    ));
}

/// What would keep a SecretProviderClass from giving the pod its secrets with the workload identity `identity`
/// (client id, tenant id; `None` when unknown). `objects` parses the object list too (doctor does; admission
/// leaves that to the driver).
pub(crate) fn check_class(
    name: &str,
    spc: &Value,
    (client_id, tenant_id): (Option<&str>, Option<&str>),
    objects: bool,
    warnings: &mut Vec<Warning>,
) {
    let mut warn = |code, message| {
        warnings.push(Warning::new(
            code,
            Subject::SecretProviderClass(name.to_owned()),
            message,
        ))
    };
    if let Some(provider) = spc.pointer("/spec/provider").and_then(Value::as_str)
        && provider != "azure"
    {
        warn(
            Code::ProviderNotAzure,
            format!(
                "SecretProviderClass {name:?} has provider {provider:?}; workload identity needs provider \"azure\""
            ),
        );
        return;
    }
    let params = string_map(spc.pointer("/spec/parameters"));
    let is_true = |k: &str| params.get(k).and_then(|v| parse_bool(v)).unwrap_or(false);
    if is_true("useVMManagedIdentity") {
        warn(
            Code::NodeIdentity,
            format!(
                "SecretProviderClass {name:?} sets useVMManagedIdentity: the node's identity, shared by every pod \
                 on the node, reads the vault, not this pod's workload identity; set clientID instead"
            ),
        );
    } else if is_true("usePodIdentity") {
        warn(
            Code::PodIdentity,
            format!(
                "SecretProviderClass {name:?} sets usePodIdentity (AAD pod identity, deprecated); set clientID and \
                 remove usePodIdentity to use workload identity"
            ),
        );
    } else {
        match (non_empty(params.get("clientID")), client_id) {
            (None, _) => warn(
                Code::ClassWithoutClientId,
                format!(
                    "SecretProviderClass {name:?} has no clientID parameter: the CSI driver cannot use workload identity"
                ),
            ),
            (Some(spc_id), Some(sa_id)) if !spc_id.eq_ignore_ascii_case(sa_id) => warn(
                Code::ClientIdMismatch,
                format!(
                    "SecretProviderClass {name:?} clientID {spc_id} differs from the ServiceAccount's client id {sa_id}"
                ),
            ),
            _ => {}
        }
        let class_tenant = non_empty(params.get("tenantId")).or_else(|| non_empty(params.get("tenantID")));
        match (class_tenant, tenant_id) {
            (Some(class), Some(pod)) if !class.eq_ignore_ascii_case(pod) => warn(
                Code::TenantMismatch,
                format!("SecretProviderClass {name:?} tenantId {class} differs from the pod's tenant {pod}"),
            ),
            _ => {}
        }
    }
    // A parameter the class must have, checked with the contract's own parser.
    let mut required = |key: &str, code, check: &dyn Fn(&str) -> Result<(), ConfigError>| match non_empty(
        params.get(key),
    )
    .map(check)
    {
        None => warn(code, format!("SecretProviderClass {name:?} has no {key} parameter")),
        Some(Err(e)) => warn(code, format!("SecretProviderClass {name:?}: {e}")),
        Some(Ok(())) => {}
    };
    required("keyvaultName", Code::InvalidVaultName, &spc::check_keyvault_name);
    if objects {
        required("objects", Code::InvalidObjects, &|text| {
            spc::parse_objects(text).map(drop)
        });
    }
}

/// Keys under the upstream or project prefix that are not in the contract are nearly always typos (`client_id`),
/// or a key on the wrong object (client-id on the pod, the `use` label written as an annotation).
pub(crate) fn warn_lookalikes(
    pod_annotations: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    sa: &ServiceAccount,
    warnings: &mut Vec<Warning>,
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
    // (keys, the keys the webhook reads there, annotation or label, on the ServiceAccount or the pod)
    type Check<'a> = (&'a BTreeMap<String, String>, &'a [&'a str], &'a str, bool);
    let checks: [Check<'_>; 4] = [
        (&sa.annotations, SA_KEYS, "annotation", true),
        (&sa.labels, &[], "label", true),
        (pod_annotations, POD_KEYS, "annotation", false),
        (pod_labels, &[USE_LABEL], "label", false),
    ];
    for (map, known, what, on_account) in checks {
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
            let (subject, on) = match on_account {
                true => (Subject::ServiceAccount, sa.to_string()),
                false => (Subject::Pod, "the pod".to_owned()),
            };
            warnings.push(Warning::new(
                Code::LookAlikeKey,
                subject,
                format!("{what} {key} on {on} is ignored: {advice}"),
            ));
        }
    }
}

/// The part after a contract prefix, compared case-insensitively.
pub(super) fn contract_suffix(key: &str) -> Option<&str> {
    [UPSTREAM_PREFIX, PROJECT_PREFIX]
        .iter()
        .find(|p| key.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p)))
        .map(|p| &key[p.len()..])
}

pub(super) fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Levenshtein distance, for "did you mean" on short annotation keys.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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
