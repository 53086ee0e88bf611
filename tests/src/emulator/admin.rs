//! What tests and the HTTP admin API do to the emulated world: identities, federation, vaults and their objects,
//! faults, counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::secrets::{get_latest, get_version, list_secrets, list_versions};
use super::vault::{get_object_latest, get_object_version, list_object_versions};
use super::*;

impl Admin {
    /// The Entra ID authority host (`AZURE_AUTHORITY_HOST`), ending in `/`.
    pub fn authority_host(&self) -> &str {
        &self.inner.login_url
    }

    /// The service account issuer URL (the `iss` of the tokens [`Admin::service_account_token`] mints).
    pub fn issuer_url(&self) -> &str {
        &self.inner.issuer_url
    }

    /// Registers an identity in `tenant_id`; returns its client and principal ids.
    pub fn add_identity(&self, name: &str, tenant_id: &str) -> Identity {
        let identity = Identity {
            name: name.to_owned(),
            client_id: uuid::Uuid::new_v4().to_string(),
            principal_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.to_owned(),
        };
        self.add_identity_with_ids(identity.clone());
        identity
    }

    /// Registers an identity with given ids (to match manifests that already name them).
    pub fn add_identity_with_ids(&self, identity: Identity) {
        self.inner
            .state()
            .identities
            .insert(identity.client_id.clone(), identity);
    }

    /// The usual setup in one call: an identity in `tenant_id` whose federated credential trusts the emulator's own
    /// issuer for `system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT`, audience [`TOKEN_EXCHANGE_AUDIENCE`].
    pub fn add_workload_identity(
        &self,
        name: &str,
        tenant_id: &str,
        namespace: &str,
        service_account: &str,
    ) -> Identity {
        let identity = self.add_identity(name, tenant_id);
        self.add_federated_credential(
            &identity.client_id,
            FederatedCredential {
                issuer: self.inner.issuer_url.clone(),
                subject: format!("system:serviceaccount:{namespace}:{service_account}"),
                audience: TOKEN_EXCHANGE_AUDIENCE.to_owned(),
            },
        );
        identity
    }

    /// What a mutated pod of `identity` sees: writes a projected service account token for
    /// `system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT` (1 hour) to `token_file`, and returns the env the webhook
    /// injects (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`).
    pub fn workload_env(
        &self,
        identity: &Identity,
        namespace: &str,
        service_account: &str,
        token_file: &Path,
    ) -> anyhow::Result<Vec<(&'static str, String)>> {
        let token = self.service_account_token(namespace, service_account, Duration::from_secs(3600))?;
        std::fs::write(token_file, token)?;
        Ok(vec![
            ("AZURE_CLIENT_ID", identity.client_id.clone()),
            ("AZURE_TENANT_ID", identity.tenant_id.clone()),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
            ("AZURE_AUTHORITY_HOST", self.inner.login_url.clone()),
        ])
    }

    /// Adds a federated identity credential to the identity `client_id`.
    pub fn add_federated_credential(&self, client_id: &str, credential: FederatedCredential) {
        self.inner
            .state()
            .federated
            .entry(client_id.to_owned())
            .or_default()
            .push(credential);
    }

    /// Trusts tokens of another issuer (e.g. a real kube-apiserver's), given its JWKS document.
    pub fn trust_issuer(&self, issuer: &str, jwks: Value) {
        self.inner.state().trusted_issuers.insert(issuer.to_owned(), jwks);
    }

    /// A service account token of the emulated cluster, as kubelet projects it: RS256, `iss` the emulator's
    /// issuer, `sub` `system:serviceaccount:NAMESPACE:NAME`, audience [`TOKEN_EXCHANGE_AUDIENCE`].
    pub fn service_account_token(&self, namespace: &str, name: &str, lifetime: Duration) -> anyhow::Result<String> {
        self.service_account_token_for(namespace, name, TOKEN_EXCHANGE_AUDIENCE, now(), lifetime)
    }

    /// A service account token with any audience and issue time (for tokens outside their time window).
    pub fn service_account_token_for(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
        issued_at: u64,
        lifetime: Duration,
    ) -> anyhow::Result<String> {
        self.inner.issuer.sign(&json!({
            "iss": self.inner.issuer_url,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": [audience],
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + lifetime.as_secs(),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uuid::Uuid::new_v4().to_string()}},
        }))
    }

    /// Creates a vault on its own port; returns its URL (`https://127.0.0.1:PORT`).
    pub async fn create_vault(&self, name: &str, tenant_id: &str) -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let url = format!("https://{addr}");
        self.inner.state().vaults.insert(
            name.to_owned(),
            Vault {
                tenant_id: tenant_id.to_owned(),
                url: url.clone(),
                ..Vault::default()
            },
        );
        let router = Router::new()
            .route("/secrets", get(list_secrets))
            .route("/secrets/{name}", get(get_latest))
            .route("/secrets/{name}/", get(get_latest))
            .route("/secrets/{name}/versions", get(list_versions))
            .route("/secrets/{name}/{version}", get(get_version))
            .route("/keys/{name}", get(get_object_latest::<KeyVersion>))
            .route("/keys/{name}/", get(get_object_latest::<KeyVersion>))
            .route("/keys/{name}/versions", get(list_object_versions::<KeyVersion>))
            .route("/keys/{name}/{version}", get(get_object_version::<KeyVersion>))
            .route("/certificates/{name}", get(get_object_latest::<CertificateVersion>))
            .route("/certificates/{name}/", get(get_object_latest::<CertificateVersion>))
            .route(
                "/certificates/{name}/versions",
                get(list_object_versions::<CertificateVersion>),
            )
            .route(
                "/certificates/{name}/{version}",
                get(get_object_version::<CertificateVersion>),
            )
            .with_state((self.inner.clone(), name.to_owned()));
        let task = serve(listener, self.inner.acceptor.clone(), router);
        if let Ok(mut tasks) = self.inner.vault_tasks.lock() {
            tasks.push(task);
        }
        Ok(url)
    }

    /// Lets `principal_id` use `permissions` (`get`, `list`) on the secrets of `vault`.
    pub fn grant(&self, vault: &str, principal_id: &str, permissions: &[&str]) {
        if let Some(v) = self.inner.state().vaults.get_mut(vault) {
            v.access.insert(
                principal_id.to_owned(),
                permissions.iter().map(|p| (*p).to_owned()).collect(),
            );
        }
    }

    /// Sets a new version of a secret; returns the version id.
    pub fn set_secret(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        content_type: Option<&str>,
    ) -> anyhow::Result<String> {
        self.set_secret_version(vault, name, value, content_type, false)
    }

    /// Sets a new version of a certificate-backed secret (`managed`, with a `kid`), as Key Vault keeps a
    /// certificate's key and chain: `application/x-pem-file` or `application/x-pkcs12` (base64 PFX).
    pub fn set_certificate_secret(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        content_type: &str,
    ) -> anyhow::Result<String> {
        self.set_secret_version(vault, name, value, Some(content_type), true)
    }

    fn set_secret_version(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        content_type: Option<&str>,
        managed: bool,
    ) -> anyhow::Result<String> {
        let mut state = self.inner.state();
        let v = state
            .vaults
            .get_mut(vault)
            .ok_or_else(|| anyhow::anyhow!("no vault {vault}"))?;
        let version = uuid::Uuid::new_v4().simple().to_string();
        let kid = managed.then(|| format!("{}/keys/{name}/{version}", v.url));
        v.secrets.entry(name.to_owned()).or_default().push(SecretVersion {
            version: version.clone(),
            value: value.to_owned(),
            content_type: content_type.map(str::to_owned),
            enabled: true,
            created: now(),
            managed,
            kid,
        });
        Ok(version)
    }

    /// Creates a new version of a key (Key Vault generates it; only the public part is kept here).
    pub fn create_key(&self, vault: &str, name: &str, kind: KeyKind) -> anyhow::Result<CreatedKey> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair as _;
        let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let failed = |what: &str| anyhow::anyhow!("{what} key generation failed");
        let (jwk, spki) = match kind {
            KeyKind::Rsa2048 => {
                let pair =
                    aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| failed("RSA"))?;
                let public = pair.public_key();
                let jwk = json!({
                    "kty": "RSA",
                    "key_ops": ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
                    "n": b64url(public.modulus().big_endian_without_leading_zero()),
                    "e": b64url(public.exponent().big_endian_without_leading_zero()),
                });
                let spki = public.as_der().map_err(|_| failed("RSA"))?.as_ref().to_vec();
                (jwk, spki)
            }
            KeyKind::EcP256 => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                (ec_jwk(&pair)?, rcgen::PublicKeyData::subject_public_key_info(&pair))
            }
        };
        let version = self.add_key_version(vault, name, jwk, false, None)?;
        Ok(CreatedKey {
            version,
            public_key_pem: pem("PUBLIC KEY", &spki),
        })
    }

    fn add_key_version(
        &self,
        vault: &str,
        name: &str,
        mut jwk: Value,
        managed: bool,
        version: Option<String>,
    ) -> anyhow::Result<String> {
        let mut state = self.inner.state();
        let v = state
            .vaults
            .get_mut(vault)
            .ok_or_else(|| anyhow::anyhow!("no vault {vault}"))?;
        let version = version.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        jwk["kid"] = json!(format!("{}/keys/{name}/{version}", v.url));
        v.keys.entry(name.to_owned()).or_default().push(KeyVersion {
            version: version.clone(),
            jwk,
            enabled: true,
            created: now(),
            managed,
        });
        Ok(version)
    }

    /// Creates a new version of a certificate, issued by a CA made for the purpose: like Key Vault, a key, a
    /// secret (key and chain, as PKCS#12 or PEM) and a certificate of the same name and version.
    pub fn create_certificate(
        &self,
        vault: &str,
        name: &str,
        subject: &str,
        format: CertificateFormat,
    ) -> anyhow::Result<CreatedCertificate> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} issuing CA"));
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate()?;
        let mut leaf_params = rcgen::CertificateParams::new(vec![subject.to_owned()])?;
        leaf_params.distinguished_name.push(rcgen::DnType::CommonName, subject);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
        let key_der = leaf_key.serialize_der();
        let mut store = p12_keystore::KeyStore::new();
        let chain = p12_keystore::PrivateKeyChain::new(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf.der())
                .as_ref()
                .to_vec(),
            p12_keystore::PrivateKey::from_der(&key_der)?,
            [
                p12_keystore::Certificate::from_der(leaf.der())?,
                p12_keystore::Certificate::from_der(ca.der())?,
            ],
        );
        store.add_entry(name, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let pfx = store.writer("").write()?;
        let created = CreatedCertificate {
            version: uuid::Uuid::new_v4().simple().to_string(),
            key_pem: pem("PRIVATE KEY", &key_der),
            leaf_pem: pem("CERTIFICATE", leaf.der()),
            ca_pem: pem("CERTIFICATE", ca.der()),
            pfx,
        };
        let (value, content_type) = match format {
            CertificateFormat::Pkcs12 => (
                base64::engine::general_purpose::STANDARD.encode(&created.pfx),
                "application/x-pkcs12",
            ),
            CertificateFormat::Pem => (
                format!("{}{}{}", created.key_pem, created.leaf_pem, created.ca_pem),
                "application/x-pem-file",
            ),
        };
        self.add_key_version(vault, name, ec_jwk(&leaf_key)?, true, Some(created.version.clone()))?;
        let mut state = self.inner.state();
        let v = state
            .vaults
            .get_mut(vault)
            .ok_or_else(|| anyhow::anyhow!("no vault {vault}"))?;
        let created_at = now();
        v.secrets.entry(name.to_owned()).or_default().push(SecretVersion {
            version: created.version.clone(),
            value,
            content_type: Some(content_type.to_owned()),
            enabled: true,
            created: created_at,
            managed: true,
            kid: Some(format!("{}/keys/{name}/{}", v.url, created.version)),
        });
        v.certificates
            .entry(name.to_owned())
            .or_default()
            .push(CertificateVersion {
                version: created.version.clone(),
                cer: leaf.der().to_vec(),
                enabled: true,
                created: created_at,
            });
        Ok(created)
    }

    /// Enables or disables every version of a secret.
    pub fn set_enabled(&self, vault: &str, name: &str, enabled: bool) {
        if let Some(versions) = self
            .inner
            .state()
            .vaults
            .get_mut(vault)
            .and_then(|v| v.secrets.get_mut(name))
        {
            for version in versions {
                version.enabled = enabled;
            }
        }
    }

    /// Makes requests to `target` fail or slow down; `None` clears it.
    pub fn set_fault(&self, target: FaultTarget, fault: Option<Fault>) {
        let mut state = self.inner.state();
        match fault {
            Some(fault) => state.faults.insert(target, fault),
            None => state.faults.remove(&target),
        };
    }

    /// Requests received, by route: `token`, `VAULT get-secret`, `VAULT list-secrets`, `VAULT list-versions`,
    /// `VAULT get-key`, `VAULT list-key-versions`, `VAULT get-certificate`, `VAULT list-certificate-versions`,
    /// `VAULT challenge`; and the requests a fault answered: `token faulted`, `VAULT faulted`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.inner.state().counters.clone()
    }
}
