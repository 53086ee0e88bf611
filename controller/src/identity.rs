//! Whose identity a class is synced with: its sync ServiceAccount's, never the controller's own. The client id and
//! tenant come as at admission (the ServiceAccount's annotations, the class's `clientID`/`tenantId`, the default
//! tenant); the federated token is a TokenRequest of that ServiceAccount, exchanged at Entra ID as a pod's would be.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientMethodOptions;
use azure_identity::{ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use wi_contract::spc::SyncConfig;
use wi_contract::{CLIENT_ID_ANNOTATION, DEFAULT_AUDIENCE, SYNC_SERVICE_ACCOUNT_ANNOTATION, TENANT_ID_ANNOTATION};

/// Lifetime asked for the ServiceAccount tokens: the shortest the API server grants. One is asked for each exchange
/// at Entra ID, which happens once per access token lifetime.
pub const TOKEN_LIFETIME_SECONDS: i64 = 600;

/// The identity a class is synced with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The ServiceAccount, in the class's namespace.
    pub service_account: String,
    /// Client id of the managed identity or app registration.
    pub client_id: String,
    /// Tenant id.
    pub tenant_id: String,
}

/// Why a class cannot be synced with its ServiceAccount; the message names the field to fix.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The ServiceAccount is not there.
    #[error(
        "ServiceAccount {namespace}/{name}, named by the class's {SYNC_SERVICE_ACCOUNT_ANNOTATION} annotation, does \
         not exist"
    )]
    NoServiceAccount {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// The ServiceAccount has no client id, and the class none either.
    #[error(
        "ServiceAccount {namespace}/{name} has no {CLIENT_ID_ANNOTATION} annotation: annotate it with the client id \
         of the identity that may read the vault"
    )]
    NoClientId {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// The class names another client id than its ServiceAccount.
    #[error(
        "the class's spec.parameters.clientID {class} differs from ServiceAccount {namespace}/{name}'s \
         {CLIENT_ID_ANNOTATION} {account}: a class is synced only with the identity of its own ServiceAccount"
    )]
    ClientIdMismatch {
        /// The namespace.
        namespace: String,
        /// The ServiceAccount.
        name: String,
        /// The class's `clientID`.
        class: String,
        /// The ServiceAccount's.
        account: String,
    },
    /// No tenant anywhere.
    #[error(
        "no tenant: set spec.parameters.tenantId on the class, {TENANT_ID_ANNOTATION} on ServiceAccount \
         {namespace}/{name}, or WI_TENANT_ID on the controller"
    )]
    NoTenant {
        /// The namespace.
        namespace: String,
        /// The ServiceAccount.
        name: String,
    },
    /// The API server could not be asked.
    #[error("cannot read ServiceAccount {namespace}/{name}: {source}")]
    Api {
        /// The namespace.
        namespace: String,
        /// The ServiceAccount.
        name: String,
        /// Why.
        source: kube::Error,
    },
}

/// The identity of `service_account` for `config` in `namespace`, as admission would give a pod of that account:
/// the ServiceAccount's client id (the class's `clientID` must be the same when it is set); the tenant from the
/// class's `tenantId`, the ServiceAccount's annotation, then `default_tenant`.
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    config: &SyncConfig,
    default_tenant: Option<&str>,
) -> Result<Identity, IdentityError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = accounts
        .get_opt(service_account)
        .await
        .map_err(|source| IdentityError::Api {
            namespace: namespace.to_owned(),
            name: service_account.to_owned(),
            source,
        })?
        .ok_or_else(|| IdentityError::NoServiceAccount {
            namespace: namespace.to_owned(),
            name: service_account.to_owned(),
        })?;
    let annotation = |key: &str| {
        account
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let account_client_id = annotation(CLIENT_ID_ANNOTATION).ok_or_else(|| IdentityError::NoClientId {
        namespace: namespace.to_owned(),
        name: service_account.to_owned(),
    })?;
    if let Some(class) = &config.client_id
        && !class.eq_ignore_ascii_case(&account_client_id)
    {
        return Err(IdentityError::ClientIdMismatch {
            namespace: namespace.to_owned(),
            name: service_account.to_owned(),
            class: class.clone(),
            account: account_client_id,
        });
    }
    let tenant_id = config
        .tenant_id
        .clone()
        .or_else(|| annotation(TENANT_ID_ANNOTATION))
        .or_else(|| default_tenant.map(str::to_owned).filter(|t| !t.is_empty()))
        .ok_or_else(|| IdentityError::NoTenant {
            namespace: namespace.to_owned(),
            name: service_account.to_owned(),
        })?;
    Ok(Identity {
        service_account: service_account.to_owned(),
        client_id: account_client_id,
        tenant_id,
    })
}

/// The federated token of a ServiceAccount: a TokenRequest for Entra ID's audience, asked for each exchange.
#[derive(Clone)]
pub struct ServiceAccountToken {
    accounts: Api<ServiceAccount>,
    name: String,
    requests: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for ServiceAccountToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAccountToken({})", self.name)
    }
}

#[async_trait::async_trait]
impl ClientAssertion for ServiceAccountToken {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.requests.inc();
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![DEFAULT_AUDIENCE.to_owned()]),
                expiration_seconds: Some(TOKEN_LIFETIME_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let failed = |reason: String| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!("TokenRequest for ServiceAccount {}: {reason}", self.name),
            )
        };
        let answer = self
            .accounts
            .create_token_request(&self.name, &PostParams::default(), &request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed("the API server returned no token".to_owned()))
    }
}

/// A credential for `identity` in `namespace`: Entra ID's client assertion flow with the ServiceAccount's tokens,
/// through `client_options` (authority host, extra CA). Access tokens are cached per scope by the credential.
pub fn credential(
    client: &kube::Client,
    namespace: &str,
    identity: &Identity,
    client_options: azure_core::http::ClientOptions,
    token_requests: prometheus_client::metrics::counter::Counter,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let assertion = ServiceAccountToken {
        accounts: Api::namespaced(client.clone(), namespace),
        name: identity.service_account.clone(),
        requests: token_requests,
    };
    let credential = ClientAssertionCredential::new(
        identity.tenant_id.clone(),
        identity.client_id.clone(),
        assertion,
        Some(ClientAssertionCredentialOptions { client_options }),
    )?;
    Ok(credential)
}
