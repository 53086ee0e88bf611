//! A real control plane for tests, envtest style: etcd, kube-apiserver and (on request) kube-controller-manager from
//! the folder `KUBEBUILDER_ASSETS` names (`setup-envtest` layout; here `../shared/kube/setup.sh` prints it).
//!
//! The tests that use it carry `#[cfg_attr(not(envtest), ignore = "...")]`: the build script sets `cfg(envtest)`
//! when the folder is there or `CI=true`, so without a control plane they are reported as ignored with the reason,
//! and in CI a missing one fails.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer as _;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

use super::process::free_port;

/// The folder with `kube-apiserver` and `etcd`; panics saying what is missing (only tests that must run call it).
pub fn assets() -> PathBuf {
    let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") else {
        panic!(
            "KUBEBUILDER_ASSETS is not set: this test needs a control plane \
             (export KUBEBUILDER_ASSETS=\"$(../shared/kube/setup.sh)\", or setup-envtest use 1.36)"
        );
    };
    let dir = PathBuf::from(dir);
    for binary in ["kube-apiserver", "etcd"] {
        assert!(
            dir.join(binary).is_file(),
            "KUBEBUILDER_ASSETS={} has no {binary}",
            dir.display()
        );
    }
    dir
}

/// Runs `program` (kubectl, or a binary of this crate) against the cluster of `kubeconfig` (as `KUBECONFIG`, the
/// way users point tools at a cluster), with `stdin` as its input; `WI_TENANT_ID` is not inherited.
pub fn run_with_kubeconfig(
    program: &str,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("WI_TENANT_ID")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(text) = stdin {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Kills the process when dropped, however the test ends.
pub struct Process(pub Child);

impl Process {
    fn spawn(binary: &Path, args: &[String], log: &Path) -> Self {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Process(child)
    }

    /// SIGTERM, then SIGKILL (on drop) when it still runs 5 s later; returns whether it exited by itself.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How the API server is started.
#[derive(Default)]
pub struct Options {
    /// `--enable-aggregator-routing=true`: webhooks registered by Service are dialled at the Service's endpoint
    /// addresses (there is no kube-proxy here).
    pub aggregator_routing: bool,
    /// The service account issuer is the API server's own URL (`https://127.0.0.1:PORT`), whose
    /// `/.well-known/openid-configuration` and `/openid/v1/jwks` anyone may read, as on AKS with the OIDC issuer
    /// enabled; otherwise `https://kubernetes.default.svc`.
    pub issuer_is_the_api_server: bool,
}

/// etcd and kube-apiserver, with an admin client (a `system:masters` token).
pub struct ControlPlane {
    pub client: kube::Client,
    pub api_port: u16,
    assets: PathBuf,
    apiserver_args: Vec<String>,
    // Dropped in this order: the processes, then their folder.
    controller_manager: Option<Process>,
    apiserver: Option<Process>,
    etcd: Process,
    pub dir: tempfile::TempDir,
}

pub const ADMIN_TOKEN: &str = "envtest-admin-token";

/// The CRD the Secrets Store CSI driver installs (schema left open: the webhook reads `spec.parameters`).
pub const SECRET_PROVIDER_CLASS_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: secretproviderclasses.secrets-store.csi.x-k8s.io
spec:
  group: secrets-store.csi.x-k8s.io
  names: {kind: SecretProviderClass, listKind: SecretProviderClassList, plural: secretproviderclasses, singular: secretproviderclass}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

impl ControlPlane {
    pub async fn start(options: Options) -> Self {
        // As wi-webhook's main does: in a workspace build rustls has both ring and aws-lc-rs, and the clients
        // below would not know which to use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let assets = assets();
        let dir = tempfile::tempdir().unwrap();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd = Process::spawn(
            &assets.join("etcd"),
            &[
                format!("--data-dir={}", dir.path().join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync=true".to_owned(),
            ],
            &dir.path().join("etcd.log"),
        );
        // RSA, as AKS and kubeadm sign service account tokens (RS256: what Entra ID's token exchange accepts).
        // Kubernetes reads the verification key as a public key (a private key there is refused at start).
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = rsa.as_der().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let sa_key = rcgen::KeyPair::from_pem(&pem).unwrap();
        let (sa_key_path, sa_pub_path) = (dir.path().join("sa.key"), dir.path().join("sa.pub"));
        std::fs::write(&sa_key_path, &pem).unwrap();
        std::fs::write(&sa_pub_path, sa_key.public_key_pem()).unwrap();
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(&tokens, format!("{ADMIN_TOKEN},admin,admin-uid,system:masters\n")).unwrap();
        let mut apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.path().join("certs").display()),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".to_owned(),
            format!(
                "--service-account-issuer={}",
                if options.issuer_is_the_api_server {
                    format!("https://127.0.0.1:{api_port}")
                } else {
                    "https://kubernetes.default.svc".to_owned()
                }
            ),
            format!("--service-account-key-file={}", sa_pub_path.display()),
            format!("--service-account-signing-key-file={}", sa_key_path.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--enable-priority-and-fairness=false".to_owned(),
        ];
        if options.issuer_is_the_api_server {
            // Otherwise the discovery document points at the advertised (host) address.
            apiserver_args.push(format!(
                "--service-account-jwks-uri=https://127.0.0.1:{api_port}/openid/v1/jwks"
            ));
        }
        if options.aggregator_routing {
            apiserver_args.push("--enable-aggregator-routing=true".to_owned());
        }
        let mut config = kube::Config::new(format!("https://127.0.0.1:{api_port}").parse().unwrap());
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(ADMIN_TOKEN.to_owned().into());
        let client = kube::Client::try_from(config).unwrap();
        let mut plane = ControlPlane {
            client,
            api_port,
            assets,
            apiserver_args,
            controller_manager: None,
            apiserver: None,
            etcd,
            dir,
        };
        plane.start_apiserver().await;
        if options.issuer_is_the_api_server {
            // The discovery documents are public, as an OIDC issuer's must be for Entra ID to read them.
            let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "service-account-issuer-discovery-public"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:service-account-issuer-discovery"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}],
            }))
            .unwrap();
            Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(plane.client.clone())
                .create(&Default::default(), &binding)
                .await
                .unwrap();
        }
        plane
    }

    /// The API server's CA (its self-signed serving certificate and CA), PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("certs/apiserver.crt")).unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Starts kube-apiserver (again, on the same port, etcd and keys) and waits until it serves.
    pub async fn start_apiserver(&mut self) -> Duration {
        let started = Instant::now();
        self.apiserver = Some(Process::spawn(
            &self.assets.join("kube-apiserver"),
            &self.apiserver_args,
            &self.dir.path().join("kube-apiserver.log"),
        ));
        let ready = super::eventually(Duration::from_secs(60), async || {
            Api::<Namespace>::all(self.client.clone())
                .get_opt("default")
                .await
                .is_ok_and(|ns| ns.is_some())
        })
        .await;
        assert!(
            ready,
            "kube-apiserver did not become ready in 60 s:\n{}",
            self.log("kube-apiserver.log")
        );
        started.elapsed()
    }

    /// Stops kube-apiserver: SIGTERM, SIGKILL when it is still draining watches 5 s later. etcd keeps the data.
    /// Returns whether it exited on SIGTERM.
    pub fn stop_apiserver(&mut self) -> bool {
        self.apiserver.take().is_some_and(Process::stop)
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// A kubeconfig file that trusts the API server's own CA and authenticates with `token`.
    pub fn kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let ca = self.dir.path().join("certs/apiserver.crt");
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    \
                 certificate-authority: {}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n\
                 - name: envtest\n  context:\n    cluster: envtest\n    user: user\ncurrent-context: envtest\n",
                self.url(),
                ca.display()
            ),
        )
        .unwrap();
        path
    }

    /// Starts kube-controller-manager with `controllers` (e.g. `deployment-controller,replicaset-controller`), as
    /// admin, without leader election or a serving port.
    pub fn start_controller_manager(&mut self, controllers: &str) {
        let binary = self.assets.join("kube-controller-manager");
        assert!(
            binary.is_file(),
            "KUBEBUILDER_ASSETS={} has no kube-controller-manager",
            self.assets.display()
        );
        let kubeconfig = self.kubeconfig("controller-manager.kubeconfig", ADMIN_TOKEN);
        self.controller_manager = Some(Process::spawn(
            &binary,
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--controllers={controllers}"),
                "--leader-elect=false".to_owned(),
                "--secure-port=0".to_owned(),
                "--use-service-account-credentials=false".to_owned(),
            ],
            &self.dir.path().join("kube-controller-manager.log"),
        ));
    }

    /// The tail of a component's log, for failure messages.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let log = self.log(name);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
