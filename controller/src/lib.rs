//! `wi-controller`: keeps Kubernetes Secrets equal to Key Vault for the SecretProviderClasses that ask
//! (`workload-identity.rs/sync-service-account: NAME` and `spec.secretObjects`), with or without pods.
//!
//! Parts: [`identity`], whose identity a class is synced with (its ServiceAccount's, through a TokenRequest
//! exchanged at Entra ID); [`secrets`], files to Secret data as the CSI driver maps them (`kubernetes.io/tls` split
//! into key and chain); [`reconcile`], one class's sync (Key Vault once per interval, owned Secrets by server-side
//! apply, never a Secret of someone else, removed entries deleted); [`rollout`], the workloads that asked to roll
//! when a Secret they consume changes; [`metrics`]; and the binary ([`cli`]: a Lease elects the one replica that
//! syncs). Key Vault objects are fetched and rendered by `wi-vault`, the code the sidecar uses, so a Secret holds
//! the bytes a pod's mount would.

pub mod cli;
pub mod identity;
pub mod metrics;
pub mod reconcile;
pub mod rollout;
pub mod secrets;
