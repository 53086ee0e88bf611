//! The pod's annotations read into decisions: the token lifetime, the proxy annotations (accepted, not
//! implemented) and the secrets plan (class, delivery, mount path, containers). Bad values are denials.

use crate::diagnostics::{Code, Subject, Warning};
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use wi_contract::*;

use super::denial::Denial;
use super::inputs::ServiceAccount;
use super::pod::ContainerRef;
use super::values::non_empty;
use super::warnings::warn_unknown_names;

/// Who writes the Key Vault objects into the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// The Secrets Store CSI driver, from a CSI volume.
    Csi,
    /// The injected `wi-sidecar`, into an in-memory emptyDir.
    Sidecar,
}

/// How the Key Vault objects reach the pod, from the pod's annotations.
#[derive(Debug)]
pub(super) struct SecretsPlan {
    pub(super) class: String,
    pub(super) delivery: Delivery,
    pub(super) mount_path: String,
    /// `None`: every targeted container.
    pub(super) containers: Option<BTreeSet<String>>,
}

impl SecretsPlan {
    /// The secrets volume: the CSI driver's, or the in-memory emptyDir the sidecar writes into.
    pub(super) fn volume(&self) -> Value {
        match self.delivery {
            Delivery::Csi => json!({
                "name": SECRETS_VOLUME,
                "csi": {
                    "driver": CSI_DRIVER,
                    "readOnly": true,
                    "volumeAttributes": {"secretProviderClass": self.class},
                },
            }),
            Delivery::Sidecar => json!({
                "name": SECRETS_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": SIDECAR_VOLUME_SIZE_LIMIT},
            }),
        }
    }
}

/// The token lifetime the pod gets: its own annotation, else its ServiceAccount's, else the default; a value out of
/// range is a denial naming where it was read.
pub(crate) fn token_expiration(annotations: &BTreeMap<String, String>, sa: &ServiceAccount) -> Result<i64, Denial> {
    // An empty value is no value, as upstream reads it: the pod's falls back to the ServiceAccount's, then the default.
    let (on, value) = match (
        non_empty(annotations.get(TOKEN_EXPIRATION_ANNOTATION)),
        non_empty(sa.annotations.get(TOKEN_EXPIRATION_ANNOTATION)),
    ) {
        (Some(v), _) => ("pod".to_owned(), v),
        (None, Some(v)) => (sa.to_string(), v),
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

pub(super) fn check_proxy_annotations(
    annotations: &BTreeMap<String, String>,
    warnings: &mut Vec<Warning>,
) -> Result<(), Denial> {
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
        warnings.push(Warning::new(
            Code::NoEffect,
            Subject::Pod,
            format!(
                "{INJECT_PROXY_SIDECAR_ANNOTATION}: the token proxy sidecar is not available in this version; \
                 the pod gets the workload identity env and token as usual"
            ),
        ));
    }
    Ok(())
}

pub(super) fn secrets_plan(
    annotations: &BTreeMap<String, String>,
    containers: &[ContainerRef<'_>],
    warnings: &mut Vec<Warning>,
) -> Result<Option<SecretsPlan>, Denial> {
    let dependents = [
        SECRETS_DELIVERY_ANNOTATION,
        SECRETS_MOUNT_PATH_ANNOTATION,
        SECRETS_CONTAINERS_ANNOTATION,
    ];
    let Some(raw_class) = annotations.get(SECRET_PROVIDER_CLASS_ANNOTATION) else {
        for key in dependents.iter().filter(|k| annotations.contains_key(**k)) {
            warnings.push(Warning::new(
                Code::NoEffect,
                Subject::Pod,
                format!("annotation {key} has no effect without {SECRET_PROVIDER_CLASS_ANNOTATION}"),
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
            path.to_owned()
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

pub(super) fn name_list(value: Option<&String>) -> BTreeSet<String> {
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

pub(super) fn normalize_path(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() && path.starts_with('/') {
        "/"
    } else {
        trimmed
    }
}

/// RFC 1123 subdomain, as Kubernetes object names are.
pub(super) fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}
