//! What the webhook is told by its operator: tenant, cloud and token audience.

use std::fmt;
use std::str::FromStr;

use crate::contract::DEFAULT_AUDIENCE;

/// An Azure cloud, which fixes the Entra ID authority host that workloads talk to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cloud {
    /// `AzurePublicCloud`: `https://login.microsoftonline.com/`.
    #[default]
    Public,
    /// `AzureUSGovernmentCloud`: `https://login.microsoftonline.us/`.
    UsGovernment,
    /// `AzureChinaCloud`: `https://login.chinacloudapi.cn/`.
    China,
    /// Any other cloud (Azure Stack, an emulator), given by its authority host URL.
    Custom(String),
}

impl Cloud {
    /// The authority host injected as `AZURE_AUTHORITY_HOST`, always ending in `/`.
    pub fn authority_host(&self) -> String {
        match self {
            Cloud::Public => "https://login.microsoftonline.com/".to_owned(),
            Cloud::UsGovernment => "https://login.microsoftonline.us/".to_owned(),
            Cloud::China => "https://login.chinacloudapi.cn/".to_owned(),
            Cloud::Custom(url) if url.ends_with('/') => url.clone(),
            Cloud::Custom(url) => format!("{url}/"),
        }
    }
}

/// The cloud name is not one of the known names, nor an `https://` URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown cloud {0:?}: expected AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud \
     or the https:// URL of a custom authority host"
)]
pub struct UnknownCloud(String);

impl FromStr for Cloud {
    type Err = UnknownCloud;

    /// Accepts the names upstream Azure Workload Identity and the Azure SDKs use, case-insensitively, and an
    /// `https://` authority host for a custom cloud.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        match trimmed.to_ascii_lowercase().as_str() {
            "" | "azurepubliccloud" | "azurecloud" | "public" => Ok(Cloud::Public),
            "azureusgovernmentcloud" | "azureusgovernment" | "usgovernment" => Ok(Cloud::UsGovernment),
            "azurechinacloud" | "china" => Ok(Cloud::China),
            lower if lower.starts_with("https://") && trimmed.len() > "https://".len() => {
                Ok(Cloud::Custom(trimmed.to_owned()))
            }
            _ => Err(UnknownCloud(s.to_owned())),
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cloud::Public => f.write_str("AzurePublicCloud"),
            Cloud::UsGovernment => f.write_str("AzureUSGovernmentCloud"),
            Cloud::China => f.write_str("AzureChinaCloud"),
            Cloud::Custom(url) => f.write_str(url),
        }
    }
}

/// The webhook-wide settings the mutation engine reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Tenant used when the ServiceAccount has no `azure.workload.identity/tenant-id` annotation.
    pub tenant_id: Option<String>,
    /// Cloud whose authority host is injected as `AZURE_AUTHORITY_HOST`.
    pub cloud: Cloud,
    /// Audience of the projected service account token.
    pub audience: String,
    /// How `wi-sidecar` is injected for `workload-identity.rs/secrets-delivery: sidecar`.
    pub sidecar: Sidecar,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tenant_id: None,
            cloud: Cloud::Public,
            audience: DEFAULT_AUDIENCE.to_owned(),
            sidecar: Sidecar::default(),
        }
    }
}

/// The webhook-wide settings of the injected `wi-sidecar` container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// Image reference.
    pub image: String,
    /// Port of its /healthz, /readyz and /metrics (the pod's network namespace is shared: no container of the pod
    /// may use it).
    pub admin_port: u16,
    /// Rotation interval, in the form `wi-sidecar --interval` reads (`2m`, `90s`).
    pub rotation_interval: String,
    /// CPU request.
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// Memory limit. The in-memory volume's pages are charged to the sidecar, which writes them.
    pub memory_limit: String,
    /// Extra env of the sidecar, such as `WI_VAULT_URL_TEMPLATE` for a cloud without a known Key Vault suffix.
    pub env: Vec<(String, String)>,
}

/// The image tag follows the webhook's version, so that an upgrade moves both.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!("ghcr.io/workload-identity-rs/wi-sidecar:", env!("CARGO_PKG_VERSION"));

impl Default for Sidecar {
    fn default() -> Self {
        Sidecar {
            image: DEFAULT_SIDECAR_IMAGE.to_owned(),
            admin_port: 9441,
            rotation_interval: "2m".to_owned(),
            cpu_request: "10m".to_owned(),
            memory_request: "32Mi".to_owned(),
            memory_limit: "64Mi".to_owned(),
            env: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("AzurePublicCloud", "https://login.microsoftonline.com/")]
    #[case("azurepubliccloud", "https://login.microsoftonline.com/")]
    #[case("AzureUSGovernmentCloud", "https://login.microsoftonline.us/")]
    #[case("AzureChinaCloud", "https://login.chinacloudapi.cn/")]
    #[case("https://127.0.0.1:8443", "https://127.0.0.1:8443/")]
    #[case("https://login.example/", "https://login.example/")]
    fn cloud_names_map_to_authority_hosts(#[case] name: &str, #[case] host: &str) {
        assert_eq!(name.parse::<Cloud>().map(|c| c.authority_host()), Ok(host.to_owned()));
    }

    #[rstest]
    #[case("AzureGermanCloud")]
    #[case("http://login.example")]
    #[case("https://")]
    fn unknown_clouds_are_rejected_with_the_choices(#[case] name: &str) {
        let err = name.parse::<Cloud>().unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("AzureChinaCloud"), "{err}");
    }
}
