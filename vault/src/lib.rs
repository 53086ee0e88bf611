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
