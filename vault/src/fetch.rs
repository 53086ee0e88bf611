//! Fetching the objects of a [`SyncConfig`] from Key Vault and turning them into file contents, all or nothing.
//!
//! One client per object kind in use (secrets always; keys and certificates when the configuration has them),
//! sharing one credential, so one access token serves every object; objects are fetched with bounded concurrency.
//! File contents are those of the CSI driver's Azure provider ([`crate::render`]). With `objectVersionHistory: N`
//! the object becomes a directory of files `0` (the newest, or `objectVersion`) to `N-1`, older enabled versions in
//! order of creation, as the provider writes them. Errors name the object and say why, never with its value.

use std::collections::BTreeMap;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_security_keyvault_certificates::models::{Certificate, CertificateClientGetCertificateOptions};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::models::{Key, KeyClientGetKeyOptions};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::models::{Secret, SecretClientGetSecretOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use crate::FileContent;
use crate::config::{ObjectSpec, ObjectType, SyncConfig};
use crate::render;

/// A sync that failed: which object, and why. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The Key Vault client could not be built.
    #[error("cannot create the Key Vault client for {vault_url}: {reason}")]
    Client {
        /// The vault.
        vault_url: String,
        /// Why.
        reason: String,
    },
    /// The credential got no token for Key Vault: Entra ID refused the pod's token (expired, or no federated
    /// credential matches), or the token file could not be read.
    #[error("{object}: {reason}")]
    Credential {
        /// `NAME (objectType)`: the object being fetched when it failed.
        object: String,
        /// Why, as the SDK and Entra ID say it (no token in it).
        reason: String,
    },
    /// One object could not be fetched or rendered.
    #[error("{object}: {reason}")]
    Object {
        /// `NAME (objectType)`.
        object: String,
        /// Why, without the value.
        reason: String,
        /// HTTP status, when Key Vault or Entra ID answered one.
        status: Option<u16>,
        /// `Retry-After` seconds of a 429 or 503, if given.
        retry_after: Option<u64>,
    },
}

impl SyncError {
    /// The `Retry-After` the service asked for, if any.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            SyncError::Object { retry_after, .. } => *retry_after,
            SyncError::Client { .. } | SyncError::Credential { .. } => None,
        }
    }
}

/// The URL of a vault: `https://NAME.vault.azure.net` for the public cloud, the sovereign clouds' suffixes, or a
/// template with `{name}` for another cloud (`https://{name}.vault.localhost:8443`).
pub fn vault_url(keyvault_name: &str, cloud_name: Option<&str>, template: Option<&str>) -> Result<String, String> {
    if let Some(template) = template {
        return Ok(template.replace("{name}", keyvault_name));
    }
    let cloud: Option<wi_contract::Cloud> = cloud_name.unwrap_or_default().parse().ok();
    let Some(suffix) = cloud.as_ref().and_then(wi_contract::Cloud::key_vault_suffix) else {
        return Err(format!(
            "cloudName {:?} has no known Key Vault DNS suffix; give the vault URL template explicitly",
            cloud_name.unwrap_or_default()
        ));
    };
    Ok(format!("https://{keyvault_name}.{suffix}"))
}

/// Fetches a configuration's objects.
pub struct Fetcher {
    secrets: SecretClient,
    keys: Option<KeyClient>,
    certificates: Option<CertificateClient>,
    config: SyncConfig,
    concurrency: usize,
    /// Objects pinned to a version (`objectVersion` without history) are immutable in Key Vault: fetched once,
    /// then served from here, by object index.
    pinned: std::sync::Mutex<BTreeMap<usize, FileContent>>,
}

/// One version of an object in a listing.
struct VersionItem {
    version: String,
    created: Option<OffsetDateTime>,
    enabled: bool,
}

impl Fetcher {
    /// A fetcher for `config` at `vault_url`, with `credential` and the HTTP settings of `client_options` (custom
    /// transport, retry, cloud). `verify_challenge_resource` false is for vaults addressed by IP.
    pub fn new(
        config: SyncConfig,
        vault_url: &str,
        credential: Arc<dyn TokenCredential>,
        client_options: ClientOptions,
        verify_challenge_resource: bool,
        concurrency: usize,
    ) -> Result<Self, SyncError> {
        let client_error = |e: azure_core::Error| SyncError::Client {
            vault_url: vault_url.to_owned(),
            reason: e.to_string(),
        };
        let verify = Some(verify_challenge_resource);
        let uses = |t: ObjectType| config.objects.iter().any(|o| o.object_type == t);
        let secrets = SecretClient::new(
            vault_url,
            credential.clone(),
            Some(SecretClientOptions {
                client_options: client_options.clone(),
                verify_challenge_resource: verify,
                ..SecretClientOptions::default()
            }),
        )
        .map_err(client_error)?;
        let keys = if uses(ObjectType::Key) {
            let options = KeyClientOptions {
                client_options: client_options.clone(),
                verify_challenge_resource: verify,
                ..KeyClientOptions::default()
            };
            Some(KeyClient::new(vault_url, credential.clone(), Some(options)).map_err(client_error)?)
        } else {
            None
        };
        let certificates = if uses(ObjectType::Cert) {
            let options = CertificateClientOptions {
                client_options,
                verify_challenge_resource: verify,
                ..CertificateClientOptions::default()
            };
            Some(CertificateClient::new(vault_url, credential, Some(options)).map_err(client_error)?)
        } else {
            None
        };
        Ok(Fetcher {
            secrets,
            keys,
            certificates,
            config,
            concurrency: concurrency.max(1),
            pinned: std::sync::Mutex::default(),
        })
    }

    /// Every object as file contents, keyed by file name; the first failure aborts the whole sync.
    pub async fn fetch_all(&self) -> Result<BTreeMap<String, FileContent>, SyncError> {
        self.fetch_all_with(self.concurrency).await
    }

    /// [`Fetcher::fetch_all`] with another concurrency: 1 sends no request after the first failure (a probe while
    /// Key Vault throttles).
    pub async fn fetch_all_with(&self, concurrency: usize) -> Result<BTreeMap<String, FileContent>, SyncError> {
        // The futures are made first and streamed after: a closure inside the stream combinator would make the
        // sync future lose `Send` (a higher-ranked lifetime), and the sidecar spawns it.
        let fetches: Vec<_> = self
            .config
            .objects
            .iter()
            .enumerate()
            .map(|(i, spec)| self.fetch(i, spec))
            .collect();
        let fetched: Vec<Vec<(String, FileContent)>> = futures::stream::iter(fetches)
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        Ok(fetched.into_iter().flatten().collect())
    }

    async fn fetch(&self, index: usize, spec: &ObjectSpec) -> Result<Vec<(String, FileContent)>, SyncError> {
        if spec.version_history <= 1 {
            let pinned = spec.version.is_some();
            let cached = pinned
                .then(|| self.pinned.lock().ok().and_then(|p| p.get(&index).cloned()))
                .flatten();
            let content = match cached {
                Some(content) => content,
                None => {
                    let data = self.fetch_version(spec, spec.version.clone()).await?;
                    let content = FileContent { data, mode: spec.mode };
                    if pinned && let Ok(mut cache) = self.pinned.lock() {
                        cache.insert(index, content.clone());
                    }
                    content
                }
            };
            return Ok(vec![(spec.file_name.clone(), content)]);
        }
        let versions = self.history(spec).await?;
        let mut files = Vec::with_capacity(versions.len());
        for (i, version) in versions.into_iter().enumerate() {
            let data = self.fetch_version(spec, Some(version)).await?;
            files.push((format!("{}/{i}", spec.file_name), FileContent { data, mode: spec.mode }));
        }
        Ok(files)
    }

    /// The versions `objectVersionHistory` asks for: enabled ones, newest first, starting at `objectVersion` when
    /// one is given.
    async fn history(&self, spec: &ObjectSpec) -> Result<Vec<String>, SyncError> {
        let api = |e: azure_core::Error| api_error(spec, &e);
        let item = |id: Option<String>, created: Option<OffsetDateTime>, enabled: Option<bool>| VersionItem {
            version: id
                .and_then(|id| id.rsplit('/').next().map(str::to_owned))
                .unwrap_or_default(),
            created,
            enabled: enabled.unwrap_or(true),
        };
        let name = spec.name.as_str();
        let mut items: Vec<VersionItem> = match spec.object_type {
            ObjectType::Secret => {
                let pager = self.secrets.list_secret_properties_versions(name, None).map_err(api)?;
                pager
                    .map_ok(|p| {
                        let a = p.attributes.unwrap_or_default();
                        item(p.id, a.created, a.enabled)
                    })
                    .try_collect()
                    .await
            }
            ObjectType::Key => {
                let pager = self
                    .key_client(spec)?
                    .list_key_properties_versions(name, None)
                    .map_err(api)?;
                pager
                    .map_ok(|p| {
                        let a = p.attributes.unwrap_or_default();
                        item(p.kid, a.created, a.enabled)
                    })
                    .try_collect()
                    .await
            }
            ObjectType::Cert => {
                let client = self.certificate_client(spec)?;
                let pager = client.list_certificate_properties_versions(name, None).map_err(api)?;
                pager
                    .map_ok(|p| {
                        let a = p.attributes.unwrap_or_default();
                        item(p.id, a.created, a.enabled)
                    })
                    .try_collect()
                    .await
            }
        }
        .map_err(api)?;
        items.retain(|i| i.enabled && !i.version.is_empty());
        // Newest first. Creation times have one-second resolution: within one second, a version listed later
        // counts as newer (listings come in creation order).
        items.reverse();
        items.sort_by_key(|i| std::cmp::Reverse(i.created));
        let start = match &spec.version {
            None => 0,
            Some(wanted) => items
                .iter()
                .position(|i| &i.version == wanted)
                .ok_or_else(|| SyncError::Object {
                    object: describe(spec),
                    reason: format!("version {wanted} is not among the enabled versions"),
                    status: None,
                    retry_after: None,
                })?,
        };
        let versions: Vec<String> = items
            .into_iter()
            .skip(start)
            .take(spec.version_history as usize)
            .map(|i| i.version)
            .collect();
        if versions.is_empty() {
            return Err(SyncError::Object {
                object: describe(spec),
                reason: "no enabled version".to_owned(),
                status: None,
                retry_after: None,
            });
        }
        Ok(versions)
    }

    fn key_client(&self, spec: &ObjectSpec) -> Result<&KeyClient, SyncError> {
        self.keys.as_ref().ok_or_else(|| internal(spec, "no key client"))
    }

    fn certificate_client(&self, spec: &ObjectSpec) -> Result<&CertificateClient, SyncError> {
        self.certificates
            .as_ref()
            .ok_or_else(|| internal(spec, "no certificate client"))
    }

    async fn fetch_version(&self, spec: &ObjectSpec, version: Option<String>) -> Result<Vec<u8>, SyncError> {
        let object = |reason: String| SyncError::Object {
            object: describe(spec),
            reason,
            status: None,
            retry_after: None,
        };
        let unreadable = |e: azure_core::Error| object(format!("unreadable answer from Key Vault: {e}"));
        let api = |e: azure_core::Error| api_error(spec, &e);
        match spec.object_type {
            ObjectType::Secret => {
                let options = SecretClientGetSecretOptions {
                    secret_version: version,
                    ..Default::default()
                };
                let secret: Secret = self
                    .secrets
                    .get_secret(&spec.name, Some(options))
                    .await
                    .map_err(api)?
                    .into_model()
                    .map_err(unreadable)?;
                render::secret(
                    spec,
                    secret.value.as_deref().unwrap_or_default(),
                    secret.content_type.as_deref(),
                    secret.kid.as_deref(),
                )
                .map_err(object)
            }
            ObjectType::Key => {
                let options = KeyClientGetKeyOptions {
                    key_version: version,
                    ..Default::default()
                };
                let key: Key = self
                    .key_client(spec)?
                    .get_key(&spec.name, Some(options))
                    .await
                    .map_err(api)?
                    .into_model()
                    .map_err(unreadable)?;
                let jwk = key
                    .key
                    .ok_or_else(|| object("Key Vault returned the key without its JWK".to_owned()))?;
                render::public_key(&jwk).map_err(object)
            }
            ObjectType::Cert => {
                let options = CertificateClientGetCertificateOptions {
                    certificate_version: version,
                    ..Default::default()
                };
                let certificate: Certificate = self
                    .certificate_client(spec)?
                    .get_certificate(&spec.name, Some(options))
                    .await
                    .map_err(api)?
                    .into_model()
                    .map_err(unreadable)?;
                render::certificate(certificate.cer.as_deref().unwrap_or_default()).map_err(object)
            }
        }
    }
}

fn internal(spec: &ObjectSpec, what: &str) -> SyncError {
    SyncError::Object {
        object: describe(spec),
        reason: format!("internal error: {what}"),
        status: None,
        retry_after: None,
    }
}

fn describe(spec: &ObjectSpec) -> String {
    let kind = match spec.object_type {
        ObjectType::Secret => "secret",
        ObjectType::Key => "key",
        ObjectType::Cert => "cert",
    };
    format!("{kind} {}", spec.name)
}

/// Turns an SDK error into one that says what to fix, with the status and Retry-After for the backoff.
fn api_error(spec: &ObjectSpec, error: &azure_core::Error) -> SyncError {
    let status = error.http_status().map(u16::from);
    let (code, retry_after) = match error.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            error_code,
            raw_response,
            ..
        } => (
            error_code.clone(),
            raw_response
                .as_ref()
                .and_then(|r| r.headers().get_optional_str(&azure_core::http::headers::RETRY_AFTER))
                .and_then(|v| v.trim().parse().ok()),
        ),
        _ => (None, None),
    };
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        // azure_identity repeats its source's text in its own message: each text once.
        let text = s.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = s.source();
    }
    if matches!(error.kind(), azure_core::error::ErrorKind::Credential) {
        return SyncError::Credential {
            object: describe(spec),
            reason: chain,
        };
    }
    let reason = match (status, code.as_deref()) {
        (Some(404), _) => format!(
            "not found in the vault{}",
            spec.version
                .as_ref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default()
        ),
        (Some(403), Some("Forbidden")) if chain.contains("disabled") => "the object is disabled".to_owned(),
        (Some(403), _) => format!(
            "access denied: grant the identity's principal id {}",
            match (spec.object_type, spec.version_history > 1) {
                (ObjectType::Secret, false) => "get on secrets (role Key Vault Secrets User)",
                (ObjectType::Secret, true) => "get and list on secrets (role Key Vault Secrets User)",
                (ObjectType::Key, _) => "get and list on keys (role Key Vault Crypto User or Key Vault Reader)",
                (ObjectType::Cert, _) => {
                    "get and list on certificates (role Key Vault Certificate User or Key Vault Reader)"
                }
            }
        ),
        (Some(429), _) => "throttled by Key Vault (429)".to_owned(),
        (Some(status), _) => format!("Key Vault answered {status}: {chain}"),
        (None, _) => chain,
    };
    SyncError::Object {
        object: describe(spec),
        reason,
        status,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_urls_follow_the_cloud() {
        assert_eq!(vault_url("kv1", None, None).unwrap(), "https://kv1.vault.azure.net");
        assert_eq!(
            vault_url("kv1", Some("AzureUSGovernmentCloud"), None).unwrap(),
            "https://kv1.vault.usgovcloudapi.net"
        );
        assert_eq!(
            vault_url("kv1", Some("AzureChinaCloud"), None).unwrap(),
            "https://kv1.vault.azure.cn"
        );
        assert_eq!(
            vault_url(
                "kv1",
                Some("AzureStackCloud"),
                Some("https://{name}.vault.local.azurestack.external")
            )
            .unwrap(),
            "https://kv1.vault.local.azurestack.external"
        );
        assert!(
            vault_url("kv1", Some("AzureStackCloud"), None)
                .unwrap_err()
                .contains("AzureStackCloud")
        );
    }
}
