//! `wi-sidecar`: fetches Key Vault objects with the pod's workload identity and writes them the way kubelet
//! writes a Secret volume.
//!
//! What exists today: the writer, [`atomic_writer::AtomicWriter`] (kubelet's atomic update of a directory
//! through a `..data` symlink swap, hardened against interrupted writes); [`config`], the SecretProviderClass
//! parameters validated with errors that name the field; [`sync::Fetcher`], one all-or-nothing fetch of the
//! configured secrets (objectType secret only so far); [`run::Syncer`], the rotation loop (interval with jitter,
//! exponential backoff, `Retry-After`, metrics, the last good files kept); and the `wi-sidecar` binary ([`cli`]:
//! `once` and `run` with /healthz, /readyz and /metrics). Not yet: key and cert objects, PKCS#12-to-PEM, and the
//! webhook's `workload-identity.rs/secrets-delivery: sidecar`, which it denies until then.
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
#[cfg(feature = "runtime")]
pub mod cli;
pub mod config;
#[cfg(feature = "runtime")]
pub mod render;
#[cfg(feature = "runtime")]
pub mod run;
#[cfg(feature = "runtime")]
pub mod sync;
