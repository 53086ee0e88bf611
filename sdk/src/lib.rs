//! `wi-sdk`: what apps link to hot-reload the secrets mounted by the Secrets Store CSI driver, a kubelet Secret
//! volume, `wi-sidecar`, or a plain directory on a laptop, always from a complete, validated snapshot.
//!
//! - [`SecretsDir`] watches a directory: inotify on the directory (never on the files, which are swapped away
//!   through the `..data` symlink), a consistent re-read on any event, overflow or error, a poll as the backstop.
//! - [`Watched`] is a typed value derived from it ([`String`], bytes, [`Json`], your own [`FromSecret`] or a
//!   function of the whole [`Snapshot`]), validated before it replaces the current one, held in a [`Redacted`] that
//!   never prints. Reads and parses after the first, and `on_change` callbacks, run on tokio's blocking pool, never
//!   on the app's runtime workers.
//! - [`tls::CertResolver`] serves a rotated certificate to rustls (feature `rustls`).
//! - [`identity::from_env`] builds the Azure workload identity credential from the injected env (feature
//!   `identity`).
//!
//! ```no_run
//! use std::time::Duration;
//! use wi_sdk::{Json, SecretsDir, Trimmed};
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     endpoint: String,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let secrets = SecretsDir::watch("/mnt/secrets-store")?;
//! let password = secrets.value::<Trimmed>("db-password");
//! let settings = secrets.value::<Json<Settings>>("settings.json");
//!
//! // Wait for the first complete, valid files (the sidecar's first sync, the CSI mount).
//! password.wait_ready(Duration::from_secs(30)).await?;
//!
//! // Cheap, lock-free reads of the current value wherever it is used...
//! if let Some(password) = password.expose() {
//!     connect(&password);
//! }
//! // ...or a callback on every rotation (on the blocking pool: it may block); dropping the subscription stops it.
//! let _reconnect = password.on_change(|new| connect(new));
//! if let Some(stale) = settings.stale() {
//!     eprintln!("settings.json rejected since {:?}: {}", stale.since, stale.error);
//! }
//! # Ok(())
//! # }
//! # fn connect(_password: &str) {}
//! ```
#![warn(missing_docs)]

#[cfg(feature = "identity")]
pub mod identity;
pub mod snapshot;
#[cfg(feature = "rustls")]
pub mod tls;
pub mod value;
pub mod watch;

pub use snapshot::Snapshot;
pub use value::{Exposed, FromSecret, Json, ParseError, Redacted, Subscription, Trimmed, Watched};
pub use watch::{SecretsDir, Stale, WatchMode, WatchOptions};

/// The README's Rust snippets, compiled as doctests so that the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The Rust snippets of docs/sdk.md, compiled the same way.
#[cfg(doctest)]
#[doc = include_str!("../../docs/sdk.md")]
struct SdkDocDoctests;
