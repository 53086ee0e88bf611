//! `wi-sidecar`: fetches Key Vault objects with the pod's workload identity and writes them the way kubelet
//! writes a Secret volume.
//!
//! Nothing is implemented here yet: this crate reserves its place in the workspace (see `DESIGN.md`). The
//! webhook denies `workload-identity.rs/secrets-delivery: sidecar` until it ships.
