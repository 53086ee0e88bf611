//! The pod's workload identity, from the environment the webhook injects.

use std::path::PathBuf;
use std::sync::Arc;
use wi_contract::{ENV_AUTHORITY_HOST, ENV_CLIENT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_TENANT_ID};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientAssertionCredentialOptions, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions};

/// A cloud other than the one `AZURE_AUTHORITY_HOST` names, or one whose TLS certificates chain to a CA the
/// system does not trust (Azure Stack, a proxy, the `wi-testbed` emulator). Both are optional.
#[derive(Debug, Clone, Default)]
pub struct CloudOptions {
    /// Entra ID authority host, e.g. `https://login.microsoftonline.us/`; default: `AZURE_AUTHORITY_HOST`, then
    /// the public cloud.
    pub authority_host: Option<String>,
    /// A PEM file of CA certificates trusted in addition to the system's.
    pub extra_ca_file: Option<PathBuf>,
}

/// What is missing, and what was probably forgotten.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Some of the variables the webhook injects are not set.
    #[error("{} not set: {hint}", .missing.join(", "))]
    Missing {
        /// The variables not set (or empty).
        missing: Vec<&'static str>,
        /// The likely cause.
        hint: &'static str,
    },
    /// `AZURE_FEDERATED_TOKEN_FILE` names a file that is not there.
    #[error("AZURE_FEDERATED_TOKEN_FILE is {path}, which does not exist: {hint}")]
    NoTokenFile {
        /// The path.
        path: PathBuf,
        /// The likely cause.
        hint: &'static str,
    },
    /// The extra CA file cannot be used.
    #[error("extra CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The Azure SDK refused the values.
    #[error("cannot create the workload identity credential: {0}")]
    Credential(#[from] azure_core::Error),
}

const ALL_MISSING: &str = "the webhook did not inject this pod: label the pod template (not the Deployment) \
    azure.workload.identity/use: \"true\" (or its namespace), and check the webhook is installed";
const CLIENT_ID_MISSING: &str = "the pod's ServiceAccount has no azure.workload.identity/client-id annotation \
    (check its spelling: client-id, not client_id; and that it is on the ServiceAccount the pod runs as)";
const TENANT_ID_MISSING: &str = "set azure.workload.identity/tenant-id on the ServiceAccount, or --tenant-id on \
    the webhook";
const TOKEN_MISSING: &str = "the token volume is not mounted in this container: is the container listed in \
    azure.workload.identity/skip-containers?";

/// A [`WorkloadIdentityCredential`] from `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_FEDERATED_TOKEN_FILE`
/// (the authority comes from `AZURE_AUTHORITY_HOST`). The error names every missing variable and the label or
/// annotation that was probably forgotten.
pub fn from_env() -> Result<Arc<WorkloadIdentityCredential>, IdentityError> {
    from_vars(|name| std::env::var(name).ok())
}

/// [`from_env`] for another cloud, or with an extra CA.
pub fn from_env_with(cloud: &CloudOptions) -> Result<Arc<WorkloadIdentityCredential>, IdentityError> {
    from_vars_with(|name| std::env::var(name).ok(), cloud)
}

/// [`from_env`] over any source of variables (tests, or a config file's values).
pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Arc<WorkloadIdentityCredential>, IdentityError> {
    from_vars_with(var, &CloudOptions::default())
}

/// [`from_vars`] for another cloud, or with an extra CA.
pub fn from_vars_with(
    var: impl Fn(&str) -> Option<String>,
    cloud: &CloudOptions,
) -> Result<Arc<WorkloadIdentityCredential>, IdentityError> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let client_id = get(ENV_CLIENT_ID);
    let tenant_id = get(ENV_TENANT_ID);
    let token_file = get(ENV_FEDERATED_TOKEN_FILE);
    let mut missing = Vec::new();
    for (name, value) in [
        (ENV_CLIENT_ID, &client_id),
        (ENV_TENANT_ID, &tenant_id),
        (ENV_FEDERATED_TOKEN_FILE, &token_file),
    ] {
        if value.is_none() {
            missing.push(name);
        }
    }
    let (Some(client_id), Some(tenant_id), Some(token_file)) = (client_id, tenant_id, token_file) else {
        let hint = match missing.as_slice() {
            [ENV_CLIENT_ID] => CLIENT_ID_MISSING,
            [ENV_TENANT_ID] => TENANT_ID_MISSING,
            _ => ALL_MISSING,
        };
        return Err(IdentityError::Missing { missing, hint });
    };
    let path = PathBuf::from(token_file);
    if !path.is_file() {
        return Err(IdentityError::NoTokenFile {
            path,
            hint: TOKEN_MISSING,
        });
    }
    let options = WorkloadIdentityCredentialOptions {
        client_id: Some(client_id),
        tenant_id: Some(tenant_id),
        token_file_path: Some(path),
        credential_options: ClientAssertionCredentialOptions {
            // AZURE_AUTHORITY_HOST is read through `var` like the others, not from the process env behind its back.
            client_options: client_options(&CloudOptions {
                authority_host: cloud.authority_host.clone().or_else(|| get(ENV_AUTHORITY_HOST)),
                extra_ca_file: cloud.extra_ca_file.clone(),
            })?,
        },
    };
    Ok(WorkloadIdentityCredential::new(Some(options))?)
}

/// HTTP client options for `cloud`: the authority host, and a transport trusting the extra CA.
pub fn client_options(cloud: &CloudOptions) -> Result<ClientOptions, IdentityError> {
    // reqwest is built without a TLS crypto provider of its own (`rustls-no-provider`: one provider, ring, rather
    // than aws-lc-rs beside it): it uses the process default, ring unless the application installed another.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = ClientOptions::default();
    if let Some(host) = &cloud.authority_host {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.clone();
        options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    }
    if let Some(path) = &cloud.extra_ca_file {
        let ca_error = |reason: String| IdentityError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
        if certificates.is_empty() {
            return Err(ca_error("no PEM certificate in it".to_owned()));
        }
        let mut builder = reqwest::Client::builder();
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build().map_err(|e| ca_error(e.to_string()))?;
        options.transport = Some(Transport::new(Arc::new(http)));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn errors_name_the_missing_variables_and_the_likely_cause() {
        let err = from_vars(vars(&[])).unwrap_err().to_string();
        assert!(
            err.starts_with("AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE not set"),
            "{err}"
        );
        assert!(err.contains("label the pod template"), "{err}");

        let err = from_vars(vars(&[
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("AZURE_CLIENT_ID", " "),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("AZURE_CLIENT_ID not set") && err.contains("client_id"),
            "{err}"
        );

        let err = from_vars(vars(&[
            ("AZURE_CLIENT_ID", "dc93f674-70ec-43e3-be7b-bf11ac753aa3"),
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/token") && err.contains("skip-containers"),
            "{err}"
        );
    }

    #[test]
    fn an_unusable_ca_file_is_named() {
        let token = tempfile::NamedTempFile::new().unwrap();
        let path = token.path().display().to_string();
        let cloud = CloudOptions {
            authority_host: None,
            extra_ca_file: Some(PathBuf::from("/nonexistent/ca.crt")),
        };
        let err = from_vars_with(
            vars(&[
                ("AZURE_CLIENT_ID", "dc93f674-70ec-43e3-be7b-bf11ac753aa3"),
                ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
                ("AZURE_FEDERATED_TOKEN_FILE", &path),
            ]),
            &cloud,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("extra CA file /nonexistent/ca.crt"), "{err}");
    }

    #[test]
    fn a_complete_environment_gives_a_credential() {
        let token = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token.path(), "eyJ.token.sig").unwrap();
        let path = token.path().display().to_string();
        let credential = from_vars(vars(&[
            ("AZURE_CLIENT_ID", "dc93f674-70ec-43e3-be7b-bf11ac753aa3"),
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_FEDERATED_TOKEN_FILE", &path),
        ]));
        assert!(credential.is_ok(), "{:?}", credential.err());
    }
}
