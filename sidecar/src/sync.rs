//! Fetching the objects of a [`SyncConfig`] from Key Vault and turning them into file contents, all or nothing.
//!
//! One `SecretClient` per sync, so one access token serves every object (the SDK caches it); objects are fetched
//! with bounded concurrency. Errors name the object and say why, never with its value.
//!
//! Today: `objectType: secret` (with `objectEncoding` and, for certificate-backed secrets, PEM as stored or
//! `objectFormat: pfx`). `key` and `cert`, and PKCS#12-to-PEM conversion, are refused with a clear error.

use std::collections::BTreeMap;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_security_keyvault_secrets::models::{Secret, SecretClientGetSecretOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};

use crate::atomic_writer::FileContent;
use crate::config::{Encoding, Format, ObjectSpec, ObjectType, SyncConfig};

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
            SyncError::Client { .. } => None,
        }
    }
}

/// The URL of a vault: `https://NAME.vault.azure.net` for the public cloud, the sovereign clouds' suffixes, or a
/// template with `{name}` for another cloud (`https://{name}.vault.localhost:8443`).
pub fn vault_url(keyvault_name: &str, cloud_name: Option<&str>, template: Option<&str>) -> Result<String, String> {
    if let Some(template) = template {
        return Ok(template.replace("{name}", keyvault_name));
    }
    let suffix = match cloud_name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("azurepubliccloud") => "vault.azure.net",
        Some("azureusgovernmentcloud") => "vault.usgovcloudapi.net",
        Some("azurechinacloud") => "vault.azure.cn",
        Some(_) => {
            return Err(format!(
                "cloudName {:?} has no known Key Vault DNS suffix; give the vault URL template explicitly",
                cloud_name.unwrap_or_default()
            ));
        }
    };
    Ok(format!("https://{keyvault_name}.{suffix}"))
}

/// Fetches a configuration's objects.
pub struct Fetcher {
    client: SecretClient,
    config: SyncConfig,
    concurrency: usize,
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
        let options = SecretClientOptions {
            client_options,
            verify_challenge_resource: Some(verify_challenge_resource),
            ..SecretClientOptions::default()
        };
        let client = SecretClient::new(vault_url, credential, Some(options)).map_err(|e| SyncError::Client {
            vault_url: vault_url.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Fetcher {
            client,
            config,
            concurrency: concurrency.max(1),
        })
    }

    /// Every object as file contents, keyed by file name; the first failure aborts the whole sync.
    pub async fn fetch_all(&self) -> Result<BTreeMap<String, FileContent>, SyncError> {
        // The futures are made first and streamed after: a closure inside the stream combinator would make the
        // sync future lose `Send` (a higher-ranked lifetime), and the sidecar spawns it.
        let fetches: Vec<_> = self.config.objects.iter().map(|spec| self.fetch_named(spec)).collect();
        let fetched: Vec<(String, FileContent)> = futures::stream::iter(fetches)
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        Ok(fetched.into_iter().collect())
    }

    async fn fetch_named(&self, spec: &ObjectSpec) -> Result<(String, FileContent), SyncError> {
        Ok((spec.file_name.clone(), self.fetch(spec).await?))
    }

    async fn fetch(&self, spec: &ObjectSpec) -> Result<FileContent, SyncError> {
        let object = |reason: String| SyncError::Object {
            object: describe(spec),
            reason,
            status: None,
            retry_after: None,
        };
        if spec.object_type != ObjectType::Secret {
            return Err(object(
                "objectType key and cert are not supported by wi-sidecar yet".to_owned(),
            ));
        }
        if spec.version_history > 1 {
            return Err(object(
                "objectVersionHistory above 1 is not supported by wi-sidecar yet".to_owned(),
            ));
        }
        let options = SecretClientGetSecretOptions {
            secret_version: spec.version.clone(),
            ..Default::default()
        };
        let response = self
            .client
            .get_secret(&spec.name, Some(options))
            .await
            .map_err(|e| api_error(spec, &e))?;
        let secret: Secret = response
            .into_model()
            .map_err(|e| object(format!("unreadable answer from Key Vault: {e}")))?;
        let data = render(spec, &secret).map_err(object)?;
        Ok(FileContent { data, mode: spec.mode })
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
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let reason = match (status, code.as_deref()) {
        (Some(404), _) => format!(
            "not found in the vault{}",
            spec.version
                .as_ref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default()
        ),
        (Some(403), Some("Forbidden")) if chain.contains("disabled") => "the secret is disabled".to_owned(),
        (Some(403), _) => "access denied: the identity needs get permission on secrets (role Key Vault Secrets User, \
             granted to its principal id)"
            .to_owned(),
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

/// The file content of a secret, as the CSI driver's Azure provider writes it.
fn render(spec: &ObjectSpec, secret: &Secret) -> Result<Vec<u8>, String> {
    let value = secret.value.as_deref().unwrap_or_default();
    let pkcs12 = secret.content_type.as_deref() == Some("application/x-pkcs12");
    if spec.format == Format::Pfx {
        if !pkcs12 {
            return Err("objectFormat pfx needs a certificate-backed secret stored as PKCS#12".to_owned());
        }
        return base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| format!("the PKCS#12 value is not base64: {e}"));
    }
    if pkcs12 && secret.kid.is_some() {
        return Err(
            "converting a PKCS#12 certificate to PEM is not supported by wi-sidecar yet; use objectFormat pfx \
                    or store the certificate as PEM"
                .to_owned(),
        );
    }
    match spec.encoding {
        Encoding::Utf8 => Ok(value.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| format!("objectEncoding base64, but the value is not base64: {e}")),
        Encoding::Hex => {
            hex::decode(value.trim()).map_err(|e| format!("objectEncoding hex, but the value is not hex: {e}"))
        }
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
