//! The contract between `wi-webhook`, the pods it mutates, `wi-sidecar` and `wi-sdk`, spelled once: the names of
//! labels, annotations, env vars, volumes, paths and ports ([`names`], re-exported here), the Azure clouds
//! ([`cloud`]), the layout kubelet gives a volume ([`paths`]) and the SecretProviderClass parameters of the Azure
//! provider ([`spc`]), with booleans read one way ([`parse_bool`]) and YAML read one way ([`yaml`]).
//!
//! No I/O and no async runtime: the binaries depend on this crate, never on each other.
//!
//! ```
//! use wi_contract::{Cloud, ENV_FEDERATED_TOKEN_FILE, TOKEN_FILE_PATH};
//!
//! assert_eq!(ENV_FEDERATED_TOKEN_FILE, "AZURE_FEDERATED_TOKEN_FILE");
//! assert!(TOKEN_FILE_PATH.starts_with("/var/run/secrets/azure/tokens/"));
//! let cloud: Cloud = "AzureUSGovernmentCloud".parse()?;
//! assert_eq!(cloud.key_vault_suffix(), Some("vault.usgovcloudapi.net"));
//! # Ok::<(), wi_contract::UnknownCloud>(())
//! ```

pub mod cloud;
pub mod names;
pub mod paths;
pub mod secret_objects;
pub mod spc;
pub mod yaml;

pub use cloud::{Cloud, UnknownCloud};
pub use names::*;

/// A boolean as Go's `strconv.ParseBool` reads it, which is how upstream and the Azure provider read theirs:
/// `1 t T true TRUE True` and `0 f F false FALSE False`; anything else is `None`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bool;

    #[test]
    fn booleans_are_read_as_go_reads_them() {
        for yes in ["1", "t", "T", "true", "TRUE", "True", " true "] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        for neither in ["", "yes", "tRuE", "2"] {
            assert_eq!(parse_bool(neither), None, "{neither}");
        }
    }
}
