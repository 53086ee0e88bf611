//! The testbed's emulated Entra ID and Key Vault as a process (`wi-emulator`), trusting a real API server as the
//! cluster's OIDC issuer the way Entra ID does: from the issuer's public discovery documents.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::envtest::ControlPlane;
use crate::common::eventually;
use crate::install::{built, https_json};

/// A running `wi-emulator` (killed when dropped) and its endpoints.
pub(crate) struct Emulator {
    _process: tokio::process::Child,
    /// Entra ID's authority host.
    pub(crate) authority: String,
    /// The admin API's base URL.
    pub(crate) admin: String,
    /// The vault's URL.
    pub(crate) vault_url: String,
    /// The PEM file of the emulator's CA.
    pub(crate) ca_file: String,
    ca: Vec<u8>,
}

impl Emulator {
    /// Starts the emulator with one vault of `tenant`; its log goes to `dir/emulator.log`.
    pub(crate) async fn start(dir: &Path, vault: &str, tenant: &str) -> Self {
        let mut process = tokio::process::Command::new(built("wi-emulator"))
            .args(["--vault", vault, "--tenant-id", tenant])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("emulator.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut first = String::new();
        {
            use tokio::io::AsyncBufReadExt as _;
            let mut stdout = tokio::io::BufReader::new(process.stdout.take().unwrap());
            tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut first))
                .await
                .expect("wi-emulator printed no ready line in 30 s")
                .unwrap();
        }
        let endpoints: Value = serde_json::from_str(&first).unwrap();
        let text = |value: &Value| value.as_str().unwrap().to_owned();
        let ca_file = text(&endpoints["ca_file"]);
        Emulator {
            _process: process,
            authority: text(&endpoints["authority_host"]),
            admin: text(&endpoints["admin"]),
            vault_url: text(&endpoints["vaults"][vault]),
            ca: std::fs::read(&ca_file).unwrap(),
            ca_file,
        }
    }

    /// One admin API call, which must succeed; its answer.
    pub(crate) async fn call(&self, method: &str, path: String, body: Value) -> Value {
        let url = format!("{}{path}", self.admin);
        let (status, answer) = https_json(method, &url, &self.ca, Some(&body)).await;
        assert!((200..300).contains(&status), "{method} {url}: {status} {answer}");
        answer
    }

    /// Entra ID trusts `plane`'s service account issuer (which must be the API server itself), read from its public
    /// discovery documents; returns the issuer and its JWKS URI.
    pub(crate) async fn trust(&self, plane: &ControlPlane) -> (String, String) {
        let issuer = plane.url();
        let api_ca = plane.ca_pem();
        // The discovery role is bootstrapped by the API server after it starts serving and reaches its RBAC
        // authorizer through an informer: a fresh server can answer 403 for a moment, as a new cluster does.
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");
        let mut answer = (0, Value::Null);
        eventually(Duration::from_secs(30), async || {
            answer = https_json("GET", &discovery_url, &api_ca, None).await;
            answer.0 != 403
        })
        .await;
        let (status, discovery) = answer;
        assert_eq!(status, 200, "anonymous discovery: {discovery}");
        assert_eq!(discovery["issuer"], issuer.as_str());
        let jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_owned();
        let (status, jwks) = https_json("GET", &jwks_uri, &api_ca, None).await;
        assert_eq!(status, 200, "{jwks}");
        self.call(
            "POST",
            "/trusted-issuers".into(),
            json!({"issuer": issuer, "jwks": jwks}),
        )
        .await;
        (issuer, jwks_uri)
    }

    /// A managed identity of `tenant` federated with ServiceAccount `namespace/name` of `issuer`, granted `get` on
    /// `vault`'s secrets; its client id.
    pub(crate) async fn federated_identity(
        &self,
        tenant: &str,
        vault: &str,
        issuer: &str,
        namespace: &str,
        name: &str,
        federated: bool,
    ) -> String {
        let identity = self
            .call(
                "POST",
                "/identities".into(),
                json!({"name": format!("mi-{name}"), "tenant_id": tenant}),
            )
            .await;
        let client_id = identity["client_id"].as_str().unwrap().to_owned();
        if federated {
            self.call(
                "POST",
                format!("/identities/{client_id}/federated-credentials"),
                json!({"issuer": issuer, "subject": format!("system:serviceaccount:{namespace}:{name}")}),
            )
            .await;
        }
        self.call(
            "POST",
            format!("/vaults/{vault}/access"),
            json!({"principal_id": identity["principal_id"], "permissions": ["get"]}),
        )
        .await;
        client_id
    }
}
