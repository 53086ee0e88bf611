//! The `wi-sidecar` native sidecar of `sidecar` delivery: built from the SecretProviderClass and the webhook's
//! settings, put first among the init containers.

use serde_json::{Map, Value, json};
use wi_contract::*;

use super::annotations::SecretsPlan;
use super::denial::Denial;
use super::inputs::ClassLookup;
use super::marker::Marker;
use super::patch::{OpList, contains};
use super::pod::ContainerRef;
use super::values::Fields as _;
use crate::config::Config;

/// The `wi-sidecar` native sidecar for `sidecar` delivery, configured from the SecretProviderClass: its
/// parameters (object names, never values) go into `WI_SECRETS_CONFIG`, checked here with the sidecar's own parser
/// so that a class it would refuse is refused at admission, naming the parameter, instead of a pod stuck in Init.
pub(super) fn sidecar_container(
    plan: &SecretsPlan,
    class: ClassLookup<'_>,
    namespace: &str,
    containers: &[ContainerRef<'_>],
    identity_env: &[(&str, &str)],
    old: &Marker<'_>,
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
            .field("ports")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        if ports
            .iter()
            .any(|p| p.field("containerPort").and_then(Value::as_u64) == Some(u64::from(port)))
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
pub(super) fn inject_sidecar(
    spec: &Map<String, Value>,
    want: Value,
    old: &Marker<'_>,
    marker: &mut Marker<'_>,
    ops: &mut OpList,
) -> Result<(), Denial> {
    let init: &[Value] = spec
        .field("initContainers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let existing = init
        .iter()
        .position(|c| c.field("name").and_then(Value::as_str) == Some(SIDECAR_CONTAINER));
    match existing {
        // Only ours reaches here: a container of that name not in the marker was denied.
        Some(i) if old.containers.contains(SIDECAR_CONTAINER) => {
            if !contains(&init[i], &want) {
                ops.replace(&format!("/spec/initContainers/{i}"), &want)?;
            }
        }
        _ if init.is_empty() => ops.add("/spec/initContainers", &[want])?,
        _ => ops.add("/spec/initContainers/0", &want)?,
    }
    marker.containers.insert(SIDECAR_CONTAINER.into());
    Ok(())
}
