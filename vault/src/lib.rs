//! `wi-vault`: the Key Vault objects of a SecretProviderClass, fetched with a workload identity and rendered byte
//! for byte as the Secrets Store CSI driver's Azure provider writes them into a pod's mount.
//!
//! Below both binaries that deliver them: `wi-sidecar` writes them into a directory, `wi-controller` maps them into
//! Kubernetes Secrets (`secretObjects`). Parts: [`fetch::Fetcher`], one all-or-nothing fetch of every object with
//! one credential; [`render`], the file contents of secrets, keys and certificates; [`schedule::Schedule`], when to
//! sync next (interval with jitter, backoff, `Retry-After`).

pub mod fetch;
pub mod render;
pub mod schedule;

pub use wi_contract::spc as config;

/// How the Key Vault of a class is reached beyond its parameters (`--vault-url-template`, `--ca-file`,
/// `--verify-challenge-resource` with the `clap` feature): the same flags for the sidecar and the controller.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Access {
    /// Vault URL for clouds without a known Key Vault DNS suffix, with {name} for keyvaultName, e.g.
    /// https://{name}.vault.local.azurestack.external.
    #[cfg_attr(feature = "clap", arg(long, env = "WI_VAULT_URL_TEMPLATE", value_name = "URL"))]
    pub vault_url_template: Option<String>,

    /// PEM file of CA certificates trusted in addition to the system's, for Entra ID and Key Vault (Azure Stack, a
    /// proxy, the emulator).
    #[cfg_attr(feature = "clap", arg(long, env = "WI_CA_FILE", value_name = "FILE"))]
    pub ca_file: Option<std::path::PathBuf>,

    /// Whether Key Vault's challenge resource must match the vault's host (turn off only for vaults addressed by IP).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "WI_VERIFY_CHALLENGE_RESOURCE", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)
    )]
    pub verify_challenge_resource: bool,
}

/// One file of a mount: its bytes and permission bits.
#[derive(Clone, PartialEq, Eq)]
pub struct FileContent {
    /// The bytes.
    pub data: Vec<u8>,
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
}

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contents are secrets: only their size is shown.
        write!(f, "FileContent({} bytes, mode {:o})", self.data.len(), self.mode)
    }
}
