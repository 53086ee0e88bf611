//! What the webhook is told by its operator: tenant, cloud and token audience.

use wi_contract::{DEFAULT_AUDIENCE, SIDECAR_ADMIN_PORT};

pub use wi_contract::cloud::{Cloud, UnknownCloud};

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
            admin_port: SIDECAR_ADMIN_PORT,
            rotation_interval: "2m".to_owned(),
            cpu_request: "10m".to_owned(),
            memory_request: "32Mi".to_owned(),
            memory_limit: "64Mi".to_owned(),
            env: Vec::new(),
        }
    }
}
