//! `wi-sidecar`: fetches Key Vault objects with the pod's workload identity and writes them the way kubelet
//! writes a Secret volume.
//!
//! Parts: [`atomic_writer::AtomicWriter`] (kubelet's atomic update of a directory through a `..data` symlink swap,
//! hardened against interrupted writes); [`config`], the SecretProviderClass parameters validated with errors that
//! name the field (`wi_contract::spc`, which the webhook also checks classes with at admission);
//! from the `wi-vault` crate the controller shares, [`fetch::Fetcher`] (one all-or-nothing fetch of every object
//! with one token) and [`render`] (file contents as the CSI driver's Azure provider writes them); [`run::Syncer`],
//! the rotation loop
//! (interval with jitter, exponential backoff, `Retry-After`, metrics, the last good files kept); and the
//! `wi-sidecar` binary ([`cli`]: `once` and `run` with /healthz, /readyz and /metrics), which the webhook injects
//! for `workload-identity.rs/secrets-delivery: sidecar`.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use wi_sidecar::atomic_writer::{AtomicWriter, FileContent};
//!
//! let writer = AtomicWriter::new("/mnt/secrets-store");
//! let files = BTreeMap::from([(
//!     "db-password".to_owned(),
//!     FileContent { data: b"s3cret".to_vec(), mode: 0o644 },
//! )]);
//! writer.write(&files)?;
//! # Ok::<(), wi_sidecar::atomic_writer::WriteError>(())
//! ```

pub mod atomic_writer;
pub mod cli;
pub use wi_contract::spc as config;
pub mod run;
pub use wi_vault::{fetch, render};
