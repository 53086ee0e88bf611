//! Injecting the workload identity: the env vars, the token mount of each targeted container and the projected
//! token volume, bringing what an earlier pass injected up to date and keeping what the pod wrote itself.

use crate::diagnostics::{Code, Subject, Warning};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use wi_contract::*;

use super::annotations::SecretsPlan;
use super::annotations::normalize_path;
use super::denial::Denial;
use super::inputs::ServiceAccount;
use super::marker::Marker;
use super::pass::Pass;
use super::patch::{EnvVar, List, WantedMount, contains, encoding, raw, write_value};
use super::pod::ContainerRef;
use super::values::{Fields as _, non_empty};
use crate::config::Config;

/// Who the pod is in Azure: the client id from its ServiceAccount, the tenant id from it or the webhook's default.
pub(super) struct Identity<'a> {
    pub(super) client_id: Option<&'a str>,
    pub(super) tenant_id: Option<&'a str>,
}

impl<'a> Identity<'a> {
    pub(super) fn of(sa: &'a ServiceAccount, config: &'a Config) -> Self {
        Identity {
            client_id: non_empty(sa.annotations.get(CLIENT_ID_ANNOTATION)),
            tenant_id: non_empty(sa.annotations.get(TENANT_ID_ANNOTATION)).or(non_empty(config.tenant_id.as_ref())),
        }
    }

    /// The env vars every targeted container gets. The token file is ours, or where the pod's own token volume puts
    /// it (a pod written for upstream may name the file otherwise): AZURE_FEDERATED_TOKEN_FILE must name a file that
    /// exists. Each var's entry of a container's `env` is encoded once, into one buffer, for every container.
    pub(super) fn env<'s>(
        &self,
        spec: &'s Map<String, Value>,
        old: &Marker<'_>,
        config: &'a Config,
    ) -> Result<IdentityEnv<'a, 's>, Denial> {
        let token_file_name = own_token_file_name(spec, old, &config.audience);
        let token_file = match token_file_name.as_ref() {
            TOKEN_FILE => Cow::Borrowed(TOKEN_FILE_PATH),
            other => Cow::Owned(format!("{TOKEN_MOUNT_PATH}/{other}")),
        };
        let vars = [
            (ENV_CLIENT_ID, self.client_id.map(Cow::Borrowed)),
            (ENV_TENANT_ID, self.tenant_id.map(Cow::Borrowed)),
            (ENV_FEDERATED_TOKEN_FILE, Some(token_file)),
            (ENV_AUTHORITY_HOST, Some(config.cloud.authority_host())),
        ];
        let mut env = IdentityEnv {
            vars: Vec::with_capacity(vars.len()),
            json: Vec::with_capacity(256),
            token_file_name,
        };
        for (name, value) in vars.into_iter().filter_map(|(n, v)| Some((n, v?))) {
            let start = env.json.len();
            write_value(&mut env.json, &EnvVar { name, value: &value })?;
            let json = start..env.json.len();
            env.vars.push(EnvEntry { name, value, json });
        }
        Ok(env)
    }
}

/// The identity env vars, by name, and the name of the token file in the token volume.
pub(super) struct IdentityEnv<'a, 's> {
    /// The vars there are (at most the four of the contract).
    vars: Vec<EnvEntry<'a>>,
    /// Every var's entry, one after the other.
    json: Vec<u8>,
    token_file_name: Cow<'s, str>,
}

/// One identity env var, with where its entry of a container's `env` is in [`IdentityEnv::json`].
struct EnvEntry<'a> {
    name: &'static str,
    value: Cow<'a, str>,
    json: std::ops::Range<usize>,
}

/// An env var the engine wants a container to have: its entry already encoded when it is the same for every
/// container ([`super::patch::WantedMount`] is the same for a mount).
#[derive(Clone, Copy)]
pub(super) struct WantedEnv<'a> {
    name: &'static str,
    value: &'a str,
    json: Option<&'a [u8]>,
}

impl WantedEnv<'_> {
    fn encode(&self) -> Result<Box<RawValue>, Denial> {
        raw(&EnvVar {
            name: self.name,
            value: self.value,
        })
    }
}

impl IdentityEnv<'_, '_> {
    /// The vars as name and value.
    pub(super) fn pairs(&self) -> Vec<(&str, &str)> {
        self.vars.iter().map(|var| (var.name, var.value.as_ref())).collect()
    }

    /// The vars of a container that sees the token at `token_path` (its own mount of the token volume) when given.
    fn for_container<'c>(&'c self, token_path: Option<&'c str>) -> Vec<WantedEnv<'c>> {
        self.vars
            .iter()
            .map(|var| match token_path {
                Some(path) if var.name == ENV_FEDERATED_TOKEN_FILE => WantedEnv {
                    name: var.name,
                    value: path,
                    json: None,
                },
                _ => WantedEnv {
                    name: var.name,
                    value: &var.value,
                    json: Some(&self.json[var.json.clone()]),
                },
            })
            .collect()
    }
}

/// Injects the env and the token mount into every targeted container, and the secrets mount into every container
/// the plan names. A container an earlier pass injected whole (the sidecar) is brought up to date elsewhere.
pub(super) fn inject_containers<'a>(
    spec: &Map<String, Value>,
    containers: &[ContainerRef<'a>],
    skip: &BTreeSet<String>,
    env: &IdentityEnv<'_, '_>,
    plan: Option<&SecretsPlan>,
    audience: &str,
    pass: &mut Pass<'a>,
) -> Result<(), Denial> {
    // Encoded once, copied into each container's patch.
    let token_mount = WantedMount::mount(TOKEN_VOLUME, TOKEN_MOUNT_PATH)?;
    let secrets_mount = plan
        .map(|plan| WantedMount::mount(SECRETS_VOLUME, &plan.mount_path))
        .transpose()?;
    let other_tokens = other_token_volumes(spec, audience);
    for container in containers {
        if pass.old.containers.contains(container.name) {
            continue;
        }
        let targeted = !skip.contains(container.name);
        if targeted {
            // A container that mounts the token volume itself sees the file under its own mount path.
            let own_path = own_token_mount(container, pass.old, &env.token_file_name, &mut pass.warnings);
            let desired = env.for_container(own_path.as_deref());
            inject_env(container, &desired, pass)?;
            if !reads_another_token(container, &other_tokens, pass.old) {
                inject_mount(container, &token_mount, pass)?;
            }
        }
        if let (Some(plan), Some(mount)) = (plan, &secrets_mount) {
            let wanted = plan
                .containers
                .as_ref()
                .map_or(targeted, |names| names.contains(container.name));
            if wanted {
                inject_mount(container, mount, pass)?;
            }
        }
    }
    Ok(())
}

/// The pod's projected service account token volumes for `audience` other than ours (upstream v1.6 names its own
/// after the pod), by name, with the file name of the token in each.
fn other_token_volumes<'a>(spec: &'a Map<String, Value>, audience: &str) -> BTreeMap<&'a str, &'a str> {
    spec.field("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let name = volume
                .field("name")
                .and_then(Value::as_str)
                .filter(|n| *n != TOKEN_VOLUME)?;
            let path = volume
                .field("projected")
                .and_then(|p| p.field("sources"))
                .and_then(Value::as_array)?
                .iter()
                .filter_map(|source| source.field("serviceAccountToken"))
                .find(|token| token.field("audience").and_then(Value::as_str) == Some(audience))?
                .field("path")
                .and_then(Value::as_str)?;
            Some((name, path.trim_matches('/')))
        })
        .collect()
}

/// Whether the container already reads a token of the pod for the audience through another volume: its own
/// `AZURE_FEDERATED_TOKEN_FILE` (one this webhook did not inject) names the token file of such a volume it mounts,
/// as a pod upstream v1.6 mutated has it. It keeps that token and gets no second token mount, which nothing would
/// read; the variable already names a file that exists.
fn reads_another_token(container: &ContainerRef<'_>, other_tokens: &BTreeMap<&str, &str>, old: &Marker) -> bool {
    if other_tokens.is_empty() || old.owns_env(container.name, ENV_FEDERATED_TOKEN_FILE) {
        return false;
    }
    let Some(file) = container
        .env_list()
        .iter()
        .find(|e| e.field("name").and_then(Value::as_str) == Some(ENV_FEDERATED_TOKEN_FILE))
        .and_then(|e| e.field("value").and_then(Value::as_str))
    else {
        return false;
    };
    container
        .object
        .field("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|mount| {
            let (Some(name), Some(path)) = (
                mount.field("name").and_then(Value::as_str),
                mount.field("mountPath").and_then(Value::as_str),
            ) else {
                return false;
            };
            let Some(token_file) = other_tokens.get(name) else {
                return false;
            };
            match mount
                .field("subPath")
                .and_then(Value::as_str)
                .map(|p| p.trim_matches('/'))
            {
                None | Some("") => format!("{}/{token_file}", path.trim_end_matches('/')) == file,
                Some(sub) => sub == *token_file && path == file,
            }
        })
}

/// The projected token volume, for the audience and lifetime the pod gets, as the patch writes it.
pub(super) fn token_volume(config: &Config, expiration: i64) -> Result<Vec<u8>, Denial> {
    #[derive(Serialize)]
    struct Volume<'a> {
        name: &'a str,
        projected: Projected<'a>,
    }
    #[derive(Serialize)]
    struct Projected<'a> {
        sources: [Source<'a>; 1],
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Source<'a> {
        service_account_token: Token<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Token<'a> {
        audience: &'a str,
        expiration_seconds: i64,
        path: &'a str,
    }
    let volume = Volume {
        name: TOKEN_VOLUME,
        projected: Projected {
            sources: [Source {
                service_account_token: Token {
                    audience: &config.audience,
                    expiration_seconds: expiration,
                    path: TOKEN_FILE,
                },
            }],
        },
    };
    serde_json::to_vec(&volume).map_err(encoding)
}

pub(super) fn inject_env<'a>(
    container: &ContainerRef<'a>,
    desired: &[WantedEnv<'_>],
    pass: &mut Pass<'a>,
) -> Result<(), Denial> {
    let name = container.name;
    let env = container.env_list();
    fn entry_name(e: &Value) -> Option<&str> {
        e.field("name").and_then(Value::as_str)
    }
    // What an earlier pass injected: brought up to date when still wanted, dropped otherwise.
    let mut owned = BTreeSet::new();
    let mut replaced = Vec::new();
    let mut dropped = false;
    for (i, entry) in env.iter().enumerate() {
        let Some(var) = entry_name(entry).filter(|var| pass.old.owns_env(name, var)) else {
            continue;
        };
        match desired.iter().find(|d| d.name == var) {
            Some(d) => {
                let stale =
                    entry.field("value").and_then(Value::as_str) != Some(d.value) || entry.field("valueFrom").is_some();
                if stale {
                    replaced.push((i, d));
                }
                owned.insert(Cow::Borrowed(d.name));
            }
            // Injected before, no longer wanted (e.g. the new ServiceAccount has no client id).
            None => dropped = true,
        }
    }
    // The wanted vars the container does not have at all.
    let is_new = |d: &&WantedEnv<'_>| !env.iter().any(|e| entry_name(e) == Some(d.name));
    let added = || desired.iter().filter(is_new);
    owned.extend(added().map(|d| Cow::Borrowed(d.name)));
    let env_ptr = container.child("env");
    if dropped {
        // The list without what is no longer wanted, each owned var once and up to date, then the new ones.
        let mut seen = BTreeSet::new();
        let mut new_env = Vec::with_capacity(env.len() + desired.len());
        for entry in env {
            match entry_name(entry).filter(|var| pass.old.owns_env(name, var)) {
                None => new_env.push(raw(entry)?),
                Some(var) => {
                    if let Some(d) = desired.iter().find(|d| d.name == var)
                        && seen.insert(var)
                    {
                        new_env.push(d.encode()?);
                    }
                }
            }
        }
        for d in added() {
            new_env.push(d.encode()?);
        }
        pass.ops.replace(&env_ptr, &new_env)?;
    } else {
        for (i, d) in replaced {
            pass.ops.replace(&format!("{env_ptr}/{i}"), &d.encode()?)?;
        }
        if added().next().is_some() {
            let list = pass.ops.list(List::Env(container.index), || env_ptr, container.env);
            for d in added() {
                match d.json {
                    Some(json) => pass.ops.push_raw(list, json),
                    None => pass.ops.push(
                        list,
                        &EnvVar {
                            name: d.name,
                            value: d.value,
                        },
                    )?,
                }
            }
        }
    }
    if !owned.is_empty() {
        pass.marker.env.insert(Cow::Borrowed(name), owned);
    }
    Ok(())
}

pub(super) fn inject_mount<'a>(
    container: &ContainerRef<'a>,
    wanted: &WantedMount<'_>,
    pass: &mut Pass<'a>,
) -> Result<(), Denial> {
    let (volume, path) = (wanted.name, wanted.path);
    let mounts = container.mount_list();
    let owned = pass.old.owns_mount(container.name, volume);
    let mut existing = None;

    for (i, m) in mounts.iter().enumerate() {
        let other = m.field("name").and_then(Value::as_str).unwrap_or_default();
        if other == volume {
            existing = existing.or(Some(i));
            continue;
        }
        let other_path = m.field("mountPath").and_then(Value::as_str).map(normalize_path);
        if other_path == Some(path) {
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
            if !contains(&mounts[i], &wanted.value()?) {
                pass.ops
                    .replace_raw(&format!("{}/{i}", container.child("volumeMounts")), &wanted.json)?;
            }
        }
        Some(i) => {
            // The user mounted our volume themselves (e.g. a pod written for the upstream webhook): keep it.
            let user_path = mounts[i].field("mountPath").and_then(Value::as_str).unwrap_or_default();
            if normalize_path(user_path) != path {
                pass.warnings.push(Warning::new(
                    Code::TokenMount,
                    Subject::Pod,
                    format!(
                        "container {:?} mounts {volume} at {user_path}, not {path}: left as written",
                        container.name
                    ),
                ));
            }
            return Ok(());
        }
        None => pass.ops.append_raw(
            List::Mounts(container.index),
            || container.child("volumeMounts"),
            container.mounts,
            &wanted.json,
        ),
    }
    pass.marker
        .mounts
        .entry(Cow::Borrowed(container.name))
        .or_default()
        .insert(Cow::Borrowed(volume));
    Ok(())
}

/// Adds the volume `volume` (`want`, encoded as JSON) to the pod, or brings the one an earlier pass added up to date.
/// `want` is copied into the patch; it is read as a `Value` only when the pod already has a volume of that name.
pub(super) fn inject_volume(
    spec: &Map<String, Value>,
    volume: &'static str,
    want: &[u8],
    pass: &mut Pass<'_>,
) -> Result<(), Denial> {
    let value = || serde_json::from_slice::<Value>(want).map_err(encoding);
    let volumes: &[Value] = spec
        .field("volumes")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let existing = volumes
        .iter()
        .position(|v| v.field("name").and_then(Value::as_str) == Some(volume));
    match existing {
        Some(i) if pass.old.volumes.contains(volume) => {
            if !contains(&volumes[i], &value()?) {
                pass.ops.replace_raw(&format!("/spec/volumes/{i}"), want)?;
            }
        }
        Some(i) => {
            let want = value()?;
            // The user's own volume, identical to ours: used as it is, and stays theirs.
            if contains(&volumes[i], &want) {
                return Ok(());
            }
            if volume == SECRETS_VOLUME {
                return Err(Denial::VolumeNameConflict(SECRETS_VOLUME));
            }
            let is_token = volumes[i]
                .field("projected")
                .and_then(|p| p.field("sources"))
                .and_then(Value::as_array)
                .is_some_and(|sources| {
                    sources.iter().any(|s| {
                        s.field("serviceAccountToken").and_then(|t| t.field("audience"))
                            == want.pointer("/projected/sources/0/serviceAccountToken/audience")
                    })
                });
            if !is_token {
                pass.warnings.push(Warning::new(
                    Code::TokenMount,
                    Subject::Pod,
                    format!(
                        "the pod's own volume {volume} is not a projected service account token for audience {}: \
                         left as written, Azure SDKs will fail to sign in",
                        want.pointer("/projected/sources/0/serviceAccountToken/audience")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    ),
                ));
            }
            return Ok(());
        }
        None => pass.ops.append_raw(
            List::Volumes,
            || "/spec/volumes".to_owned(),
            spec.field("volumes"),
            want,
        ),
    }
    pass.marker.volumes.insert(Cow::Borrowed(volume));
    Ok(())
}

/// The file name of the token in the pod's own `azure-identity-token` volume (one the webhook did not inject): the
/// `path` of its service account token source for `audience`. [`TOKEN_FILE`] otherwise.
pub(super) fn own_token_file_name<'s>(spec: &'s Map<String, Value>, old: &Marker, audience: &str) -> Cow<'s, str> {
    if old.volumes.contains(TOKEN_VOLUME) {
        return Cow::Borrowed(TOKEN_FILE);
    }
    spec.field("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.field("name").and_then(Value::as_str) == Some(TOKEN_VOLUME))
        .filter_map(|v| {
            v.field("projected")
                .and_then(|p| p.field("sources"))
                .and_then(Value::as_array)
        })
        .flatten()
        .filter_map(|source| source.field("serviceAccountToken"))
        .find(|token| token.field("audience").and_then(Value::as_str) == Some(audience))
        .and_then(|token| token.field("path").and_then(Value::as_str))
        .map(|path| path.trim_matches('/'))
        .filter(|path| !path.is_empty())
        .map_or(Cow::Borrowed(TOKEN_FILE), Cow::Borrowed)
}

/// Where the container sees the token when it mounts the token volume itself (a mount the webhook did not inject):
/// under its own mount path, or the mount path itself for a `subPath` mount of the file. `None`: at
/// [`TOKEN_MOUNT_PATH`], the webhook's mount.
pub(super) fn own_token_mount(
    container: &ContainerRef<'_>,
    old: &Marker,
    file_name: &str,
    warnings: &mut Vec<Warning>,
) -> Option<String> {
    if old.owns_mount(container.name, TOKEN_VOLUME) {
        return None;
    }
    let mount = container.mount_list().get(container.mount_index(TOKEN_VOLUME)?)?;
    let path = mount.field("mountPath").and_then(Value::as_str)?.trim_end_matches('/');
    match mount
        .field("subPath")
        .and_then(Value::as_str)
        .map(|p| p.trim_matches('/'))
    {
        None | Some("") => Some(format!("{path}/{file_name}")),
        Some(sub) if sub == file_name => Some(path.to_owned()),
        Some(sub) => {
            warnings.push(Warning::new(
                Code::TokenMount,
                Subject::Pod,
                format!(
                    "container {:?} mounts {sub:?} of {TOKEN_VOLUME}, which holds the token as {file_name:?}: the \
                     token is not in that mount, Azure SDKs will fail to sign in",
                    container.name
                ),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The hand-encoded token volume is the JSON it stands for, an audience that needs escaping included.
    #[test]
    fn the_token_volume_is_the_projected_volume_json() {
        for (audience, expiration) in [
            ("api://AzureADTokenExchange", 3600),
            ("a \"quoted\" \\ audience", 86_400),
            ("", i64::MAX),
        ] {
            let config = Config {
                audience: audience.to_owned(),
                ..Config::default()
            };
            let json = token_volume(&config, expiration).unwrap();
            let value: Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(
                value,
                json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
                    "audience": audience, "expirationSeconds": expiration, "path": TOKEN_FILE}}]}})
            );
        }
    }
}
