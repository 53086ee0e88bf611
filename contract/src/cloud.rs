//! The Azure clouds: the Entra ID authority host workloads sign in at, and the Key Vault DNS suffix of their vaults.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// An Azure cloud.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cloud {
    /// `AzurePublicCloud`: `https://login.microsoftonline.com/`, `*.vault.azure.net`.
    #[default]
    Public,
    /// `AzureUSGovernmentCloud`: `https://login.microsoftonline.us/`, `*.vault.usgovcloudapi.net`.
    UsGovernment,
    /// `AzureChinaCloud`: `https://login.chinacloudapi.cn/`, `*.vault.azure.cn`.
    China,
    /// Any other cloud (Azure Stack, an emulator), given by its authority host URL; its Key Vault suffix is not known.
    Custom(String),
}

impl Cloud {
    /// The authority host injected as `AZURE_AUTHORITY_HOST`, always ending in `/`.
    pub fn authority_host(&self) -> Cow<'_, str> {
        match self {
            Cloud::Public => Cow::Borrowed("https://login.microsoftonline.com/"),
            Cloud::UsGovernment => Cow::Borrowed("https://login.microsoftonline.us/"),
            Cloud::China => Cow::Borrowed("https://login.chinacloudapi.cn/"),
            Cloud::Custom(url) if url.ends_with('/') => Cow::Borrowed(url),
            Cloud::Custom(url) => Cow::Owned(format!("{url}/")),
        }
    }

    /// The DNS suffix of the cloud's vaults (`NAME.SUFFIX`), `None` for a custom cloud.
    pub fn key_vault_suffix(&self) -> Option<&'static str> {
        match self {
            Cloud::Public => Some("vault.azure.net"),
            Cloud::UsGovernment => Some("vault.usgovcloudapi.net"),
            Cloud::China => Some("vault.azure.cn"),
            Cloud::Custom(_) => None,
        }
    }
}

/// The cloud name is not one of the known names, nor an `https://` URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown cloud {0:?}: expected AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud \
     or the https:// URL of a custom authority host"
)]
pub struct UnknownCloud(pub String);

impl FromStr for Cloud {
    type Err = UnknownCloud;

    /// Accepts the names upstream Azure Workload Identity, the Azure provider's `cloudName` and the Azure SDKs use,
    /// case-insensitively (empty is the public cloud), and an `https://` authority host for a custom cloud.
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("AzurePublicCloud", "https://login.microsoftonline.com/", Some("vault.azure.net"))]
    #[case("", "https://login.microsoftonline.com/", Some("vault.azure.net"))]
    #[case(
        "AzureUSGovernmentCloud",
        "https://login.microsoftonline.us/",
        Some("vault.usgovcloudapi.net")
    )]
    #[case("azurechinacloud", "https://login.chinacloudapi.cn/", Some("vault.azure.cn"))]
    #[case("https://login.example", "https://login.example/", None)]
    fn one_table_for_sign_in_and_vaults(#[case] name: &str, #[case] host: &str, #[case] suffix: Option<&str>) {
        let cloud: Cloud = name.parse().unwrap();
        assert_eq!(cloud.authority_host(), host);
        assert_eq!(cloud.key_vault_suffix(), suffix);
    }

    #[rstest]
    #[case("AzurePublicCloud", "https://login.microsoftonline.com/")]
    #[case("azurepubliccloud", "https://login.microsoftonline.com/")]
    #[case("AzureUSGovernmentCloud", "https://login.microsoftonline.us/")]
    #[case("AzureChinaCloud", "https://login.chinacloudapi.cn/")]
    #[case("https://127.0.0.1:8443", "https://127.0.0.1:8443/")]
    #[case("https://login.example/", "https://login.example/")]
    fn cloud_names_map_to_authority_hosts(#[case] name: &str, #[case] host: &str) {
        assert_eq!(
            name.parse::<Cloud>().map(|c| c.authority_host().into_owned()),
            Ok(host.to_owned())
        );
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
