//! The installation, black box, as a platform team does it, behind a real kube-apiserver (envtest; see
//! `common/envtest.rs` for when it runs):
//!
//! 1. `manifests/base` rendered with `kubectl kustomize` through an overlay that sets the tenant (as config.env
//!    says), applied with `kubectl apply`: namespace, RBAC, ServiceAccount, Deployment, Services, PDB,
//!    NetworkPolicy, and the MutatingWebhookConfiguration with its empty caBundle.
//! 2. The `wi-webhook` binary (the release build when `WI_WEBHOOK_BINARY` names it, as the test command does) runs
//!    with exactly the args and env of the rendered Deployment's container, and a kubeconfig holding a token of its
//!    own ServiceAccount (TokenRequest), never admin: a missing RBAC rule fails this test.
//! 3. The API server calls it through the Service reference, as in a cluster: `--enable-aggregator-routing=true`
//!    and an EndpointSlice at a non-loopback address of this host (there is no kube-proxy).
//!
//! Then: the Secret is created and every webhook entry's caBundle patched before `/readyz` says 200; the example
//! app's Deployment (kube-controller-manager running) in a namespace labelled for workload identity yields a pod
//! with the env, the token volume and the CSI volume; a pod whose ServiceAccount lacks the client id is created
//! with the admission warning on the create response; a pod labelled "false" is created unchanged. Last, fail
//! closed: the API server stopped under the running webhook, and started again. Also: two replicas rotating
//! certificates under load, the token chain to the emulated Key Vault, and the migration from upstream with both
//! webhooks installed in either order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::envtest::{ADMIN_TOKEN, ControlPlane, Options, SECRET_PROVIDER_CLASS_CRD, run_with_kubeconfig};
use crate::common::process::{WebhookProcess, free_port, http_get, report, webhook_binary};
use crate::common::{TENANT, eventually, provider};
use crate::emulator::Emulator;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

/// The example app's managed identity (manifests/examples/serviceaccount.yaml).
pub(crate) const APP_CLIENT_ID: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const LATE_CLIENT_ID: &str = "0b7e5c1a-2f3d-4e6b-9a8c-7d6e5f4a3b2c";
pub(crate) const APPS: &str = "team-apps";

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_with_kubeconfig("kubectl", kubeconfig, args, stdin)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `base`, relative to `dir` (kustomize refuses absolute resource paths): up to the root, then down.
fn relative(dir: &Path, base: &Path) -> String {
    let (dir, base) = (dir.canonicalize().unwrap(), base.canonicalize().unwrap());
    let up = "../".repeat(dir.components().count() - 1);
    format!("{up}{}", base.strip_prefix("/").unwrap().display())
}

/// `kubectl kustomize` of an overlay written into `dir`; `kustomization` says `{base}` where the base goes.
fn render(dir: &Path, base: &Path, kustomization: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let kustomization = kustomization.replace("{base}", &relative(dir, base));
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    let out = Command::new("kubectl")
        .args(["kustomize", &dir.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl kustomize ({e})"));
    assert!(out.status.success(), "kubectl kustomize failed: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn documents(yaml: &str) -> Vec<Value> {
    wi_contract::yaml::from_str_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(Value::is_object)
        .collect()
}

pub(crate) fn apply(kubeconfig: &Path, yaml: &str) {
    let out = kubectl(kubeconfig, &["apply", "-f", "-"], Some(yaml));
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
}

/// A non-loopback IPv4 address of this host (EndpointSlice validation refuses loopback ones).
fn host_address() -> IpAddr {
    // /proc/net/fib_trie lists each local address as "|-- A.B.C.D" followed by "/32 host LOCAL".
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap();
    let lines: Vec<&str> = trie.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[1].trim() == "/32 host LOCAL")
        .filter_map(|w| w[0].trim().strip_prefix("|-- ")?.parse::<IpAddr>().ok())
        .find(|ip| !ip.is_loopback())
        .unwrap_or_else(|| {
            panic!("this host has no non-loopback IPv4 address for the Service's EndpointSlice (e.g. ip addr add)")
        })
}

/// The env a kubelet would give the container: envFrom ConfigMaps first, then env (fieldRefs resolved).
fn container_env(container: &Value, namespace: &str, documents: &[Value]) -> Vec<(String, String)> {
    let name_of_pod = container["name"].as_str().unwrap_or("pod");
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("unsupported envFrom {source}"));
        let map = documents
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the Deployment's ConfigMap {name} is not in the rendered manifests"));
        for (key, value) in map["data"].as_object().unwrap() {
            env.insert(key.clone(), value.as_str().unwrap().to_owned());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(path)) if path == "metadata.namespace" => namespace.to_owned(),
            (_, Value::String(path)) if path == "metadata.name" => format!("{name_of_pod}-0"),
            _ => panic!("unsupported env {var}"),
        };
        env.insert(name, value);
    }
    env.into_iter().collect()
}

pub(crate) fn port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("the container declares no port {name}")) as u16
}

pub(crate) fn env_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn volume_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect()
}

/// One AdmissionReview straight to the webhook's HTTPS port, verified as the API server verifies it.
async fn admit_direct(addr: SocketAddr, roots: &[CertificateDer<'static>], review: &Value) -> Result<Value, String> {
    let tls = tls_connect(addr, roots, service_name()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = http::Request::post("/mutate-v1-pod")
        .header("host", "wi-webhook.wi-system.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(review).unwrap())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(15), sender.send_request(request))
        .await
        .map_err(|_| "no answer in 15 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)))
}

/// A TLS connection trusting only `roots`, verifying `name`: for the webhook, the roots of a caBundle and the
/// Service's DNS name, as the API server verifies it.
async fn tls_connect(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    name: ServerName<'static>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS: no handshake in 10 s".to_owned())?
    .map_err(|e| format!("TLS: {e}"))
}

/// The webhook's Service name, which its certificate must carry.
fn service_name() -> ServerName<'static> {
    ServerName::try_from("wi-webhook.wi-system.svc").unwrap()
}

/// The captured labelled pod's review, moved to `namespace` and run as `service_account`.
fn review_for(namespace: &str, service_account: &str, label: Option<&str>) -> Value {
    let mut review = crate::common::fake_api::admission_fixture("01-plain-pod.json");
    review["request"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    review["request"]["namespace"] = json!(namespace);
    let pod = &mut review["request"]["object"];
    pod["metadata"]["namespace"] = json!(namespace);
    pod["spec"]["serviceAccountName"] = json!(service_account);
    pod["spec"]["serviceAccount"] = json!(service_account);
    match label {
        Some(value) => pod["metadata"]["labels"]["azure.workload.identity/use"] = json!(value),
        None => {
            pod["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("azure.workload.identity/use");
        }
    }
    review
}

fn cached_service_accounts(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with("wi_webhook_cache_objects{kind=\"serviceaccounts\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

pub(crate) async fn ca_bundles(client: &kube::Client) -> Vec<Vec<u8>> {
    let Ok(Some(config)) = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt("wi-webhook")
        .await
    else {
        return Vec::new();
    };
    config
        .webhooks
        .into_iter()
        .flatten()
        .map(|w| w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default())
        .collect()
}

/// What the platform team's installation left: the control plane with `manifests/base` applied, and what the
/// rendered Deployment runs.
pub(crate) struct Installed {
    pub(crate) plane: ControlPlane,
    /// The rendered base.
    pub(crate) docs: Vec<Value>,
    /// The admin's kubeconfig (kubectl).
    pub(crate) admin: PathBuf,
    pub(crate) namespace: String,
    pub(crate) service: String,
    /// The Deployment container's args, and its env with `KUBECONFIG` holding the ServiceAccount's token.
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) https_port: u16,
    pub(crate) admin_port: u16,
}

impl Installed {
    /// The webhook as the Deployment runs it, behind the Service's EndpointSlice at this host, once ready.
    pub(crate) async fn run_webhook(&self) -> WebhookProcess {
        self.endpoint("wi-webhook-host", self.https_port);
        let log = self.plane.dir.path().join("wi-webhook.log");
        let mut webhook = WebhookProcess::spawn(&webhook_binary(), &self.args, &self.env, &log);
        let admin_addr: SocketAddr = format!("127.0.0.1:{}", self.admin_port).parse().unwrap();
        webhook
            .wait_ready(admin_addr, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", webhook.log()));
        webhook
    }

    /// An EndpointSlice of the webhook's Service: this host, `port`.
    fn endpoint(&self, name: &str, port: u16) {
        apply(
            &self.admin,
            &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": name, "namespace": self.namespace,
                                 "labels": {"kubernetes.io/service-name": self.service,
                                            "endpointslice.kubernetes.io/managed-by": "envtest"}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [host_address().to_string()], "conditions": {"ready": true}}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
            .to_string(),
        );
    }
}

/// The installation steps 1 to 3 of the module docs; `settings` are config.env lines the overlay adds.
pub(crate) async fn install(options: Options, settings: &[(&str, &str)]) -> Installed {
    let plane = ControlPlane::start(options).await;
    let client = plane.client.clone();
    let admin = plane.kubeconfig("admin.kubeconfig", ADMIN_TOKEN);
    let work = plane.dir.path().to_owned();
    let settings: String = settings
        .iter()
        .map(|(name, value)| format!("      - {name}={value}\n"))
        .collect();

    // 1. The platform team's install: config.env's tenant set in an overlay, the base applied.
    let base = render(
        &work.join("install"),
        &manifests().join("base"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {{base}}\n\
             configMapGenerator:\n  - name: wi-webhook-config\n    behavior: merge\n    literals:\n      \
             - WI_TENANT_ID={TENANT}\n{settings}"
        ),
    );
    let docs = documents(&base);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in the rendered base: {kinds:?}");
    }
    apply(&admin, &base);
    assert!(
        ca_bundles(&client).await.iter().all(Vec::is_empty),
        "the MutatingWebhookConfiguration is installed with an empty caBundle"
    );

    // A cluster with the Secrets Store CSI driver has its CRD.
    apply(&admin, SECRET_PROVIDER_CLASS_CRD);
    // 2. and 3.
    Installed::from_rendered(plane, docs, admin).await
}

impl Installed {
    /// What an installation rendered as `docs` (kustomize's or Helm's) runs: the webhook Deployment's args and env,
    /// with a kubeconfig holding a TokenRequest token of its ServiceAccount (never admin), and its Service.
    pub(crate) async fn from_rendered(plane: ControlPlane, docs: Vec<Value>, admin: PathBuf) -> Installed {
        // 2. What the Deployment runs.
        let Runs {
            namespace,
            service_account,
            args,
            mut env,
            container,
        } = deployment_container(&docs, "wi-webhook");
        let (https_port, admin_port) = (port(&container, "https"), port(&container, "admin"));
        let token = token_of(&plane, &namespace, &service_account).await;
        let kubeconfig = plane.kubeconfig("wi-webhook.kubeconfig", &token);
        env.push(("KUBECONFIG".to_owned(), kubeconfig.display().to_string()));

        // 3. The Service's endpoints: this host, the container's port (here, or each replica's, by the caller).
        let service = docs
            .iter()
            .find(|d| d["kind"] == "MutatingWebhookConfiguration")
            .unwrap()["webhooks"][0]["clientConfig"]["service"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        Installed {
            docs,
            namespace,
            service,
            args,
            env,
            https_port,
            admin_port,
            admin,
            plane,
        }
    }
}

/// What a Deployment of the rendered base runs.
pub(crate) struct Runs {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) args: Vec<String>,
    /// As a kubelet gives it (ConfigMaps, then env with fieldRefs resolved), without `KUBECONFIG`.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) container: Value,
}

/// What the Deployment `name` of the rendered base runs.
pub(crate) fn deployment_container(docs: &[Value], name: &str) -> Runs {
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Deployment {name} in the rendered base"));
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap().to_owned();
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let service_account = pod_spec["serviceAccountName"].as_str().unwrap().to_owned();
    let container = pod_spec["containers"][0].clone();
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let env = container_env(&container, &namespace, docs);
    Runs {
        namespace,
        service_account,
        args,
        env,
        container,
    }
}

/// A token of ServiceAccount `namespace/name` (TokenRequest, an hour): what a pod of it holds.
pub(crate) async fn token_of(plane: &ControlPlane, namespace: &str, name: &str) -> String {
    Api::<ServiceAccount>::namespaced(plane.client.clone(), namespace)
        .create_token_request(
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .unwrap_or_else(|| panic!("no token for ServiceAccount {namespace}/{name}"))
}

/// Creates pods of ServiceAccount `app` in `namespace` at about 5 per second until `stop`; returns how many were
/// created, the errors of those refused and the names of those created without the identity.
pub(crate) fn create_pods_until(
    client: kube::Client,
    namespace: &str,
    prefix: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<String>, Vec<String>)> {
    let pods = Api::<Pod>::namespaced(client, namespace);
    let (namespace, prefix) = (namespace.to_owned(), prefix.to_owned());
    tokio::spawn(async move {
        let (mut created, mut refused, mut uninjected) = (0u32, Vec::new(), Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": prefix, "namespace": namespace},
                "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox"}]}}))
            .unwrap();
            match pods.create(&PostParams::default(), &pod).await {
                Ok(pod) => {
                    created += 1;
                    if !env_of(&pod).contains_key("AZURE_FEDERATED_TOKEN_FILE") {
                        uninjected.push(pod.metadata.name.unwrap_or_default());
                    }
                }
                Err(error) => refused.push(error.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (created, refused, uninjected)
    })
}

/// The API server dials the webhook's Service at its EndpointSlices' addresses (there is no kube-proxy).
pub(crate) const ROUTED: Options = Options {
    aggregator_routing: true,
    issuer_is_the_api_server: false,
};

/// The tests below use the manifests' fixed ports on this host: one at a time.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn installed_from_the_manifests_behind_a_real_api_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let installed = install(ROUTED, &[]).await;
    let test_started = Instant::now();
    let figure = |line: String| report("install", &format!("[{:>5.1?}] {line}", test_started.elapsed()));
    installed.endpoint("wi-webhook-host", installed.https_port);
    let Installed {
        mut plane,
        admin,
        namespace,
        args,
        env,
        https_port,
        admin_port,
        ..
    } = installed;
    let namespace = namespace.as_str();
    let client = plane.client.clone();
    let work = plane.dir.path().to_owned();

    // 4. The webhook, as the Deployment runs it.
    let binary = webhook_binary();
    let mut webhook = WebhookProcess::spawn(&binary, &args, &env, &work.join("wi-webhook.log"));
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let started = Instant::now();
    let (mut no_answer, mut unready) = (0, BTreeMap::<String, u32>::new());
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready in 60 s:\n{}",
            webhook.log()
        );
        match http_get(admin_addr, "/readyz").await {
            Some((http::StatusCode::OK, _)) => break,
            Some((_, body)) => *unready.entry(body).or_default() += 1,
            None => no_answer += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_after = started.elapsed();
    // Readiness comes after the Secret and the caBundles: both are there at the first 200.
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get("wi-webhook-tls")
        .await
        .expect("the webhook created its certificate Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let served = secret.data.as_ref().unwrap()["tls.crt"].0.clone();
    let leaf = CertificateDer::pem_slice_iter(&served).next().unwrap().unwrap();
    let bundles = ca_bundles(&client).await;
    assert_eq!(bundles.len(), 2, "two webhook entries");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let roots = wi_webhook::server::certs::parse_bundle(&bundles[0]);
    for bundle in &bundles {
        let roots = wi_webhook::server::certs::parse_bundle(bundle);
        assert!(
            wi_webhook::server::certs::verifies(&leaf, &roots, "wi-webhook.wi-system.svc", now),
            "every entry's caBundle trusts the served certificate"
        );
    }
    figure(format!(
        "ready {ready_after:.2?} after start ({} with {}; /readyz before: {no_answer} unanswered, {unready:?})",
        binary.display(),
        args.join(" ")
    ));

    // 5. The app team: a namespace labelled for workload identity, the example app rendered into it.
    apply(
        &admin,
        &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": APPS, "labels": {"azure.workload.identity/use": "true"}}})
        .to_string(),
    );
    let examples = render(
        &work.join("examples"),
        &manifests().join("examples"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {APPS}\nresources:\n  - {{base}}\n"
        ),
    );
    apply(&admin, &examples);
    plane.start_controller_manager("deployment-controller,replicaset-controller,serviceaccount-controller");
    let pods = Api::<Pod>::namespaced(client.clone(), APPS);
    let made_at = Instant::now();
    let mut app_pod = None;
    let found = eventually(Duration::from_secs(90), async || {
        app_pod = pods
            .list(&ListParams::default().labels("app=my-web-app"))
            .await
            .ok()
            .and_then(|l| l.items.into_iter().next());
        app_pod.is_some()
    })
    .await;
    assert!(
        found,
        "the Deployment made no pod in 90 s; controller-manager:\n{}\nwebhook:\n{}",
        plane.log_tail("kube-controller-manager.log", 30),
        webhook.log()
    );
    let app_pod = app_pod.unwrap();
    figure(format!(
        "Deployment -> pod {} in {:.2?}",
        app_pod.metadata.name.clone().unwrap_or_default(),
        made_at.elapsed()
    ));
    let env_vars = env_of(&app_pod);
    assert_eq!(env_vars.get("AZURE_CLIENT_ID").map(String::as_str), Some(APP_CLIENT_ID));
    assert_eq!(
        env_vars.get("AZURE_TENANT_ID").map(String::as_str),
        Some("d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f"),
        "the ServiceAccount's tenant wins over WI_TENANT_ID"
    );
    assert_eq!(
        env_vars.get("AZURE_FEDERATED_TOKEN_FILE").map(String::as_str),
        Some("/var/run/secrets/azure/tokens/azure-identity-token")
    );
    assert_eq!(
        env_vars.get("AZURE_AUTHORITY_HOST").map(String::as_str),
        Some("https://login.microsoftonline.com/")
    );
    let spec = app_pod.spec.as_ref().unwrap();
    let volumes = spec.volumes.clone().unwrap_or_default();
    let token_volume = volumes
        .iter()
        .find(|v| v.name == "azure-identity-token")
        .expect("token volume");
    let token_source = token_volume.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(token_source.audience.as_deref(), Some("api://AzureADTokenExchange"));
    assert_eq!(token_source.path, "azure-identity-token");
    let csi = volumes
        .iter()
        .find(|v| v.name == "wi-secrets-store")
        .and_then(|v| v.csi.clone())
        .expect("the CSI volume");
    assert_eq!(csi.driver, "secrets-store.csi.k8s.io");
    assert_eq!(
        csi.volume_attributes
            .unwrap_or_default()
            .get("secretProviderClass")
            .map(String::as_str),
        Some("kv-techventure-secrets")
    );
    let mounts: Vec<(String, String)> = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect();
    for expected in [
        ("azure-identity-token", "/var/run/secrets/azure/tokens"),
        ("wi-secrets-store", "/mnt/secrets-store"),
    ] {
        assert!(
            mounts.iter().any(|(n, p)| n == expected.0 && p == expected.1),
            "{expected:?} not in {mounts:?}"
        );
    }
    assert_eq!(
        volumes.iter().filter(|v| v.name == "azure-identity-token").count(),
        1,
        "the pod matched both webhook entries and was injected once"
    );
    let mut pods_checked = 1;

    // 6. A ServiceAccount without a client id: created, with the warning on the create response.
    apply(
        &admin,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "no-client-id", "namespace": APPS}})
            .to_string(),
    );
    let pod_yaml = |name: &str, sa: &str, label: Option<&str>| {
        let mut labels = json!({"app": name});
        if let Some(value) = label {
            labels["azure.workload.identity/use"] = json!(value);
        }
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": APPS, "labels": labels},
               "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "busybox"}]}})
        .to_string()
    };
    let created = kubectl(
        &admin,
        &["create", "-f", "-"],
        Some(&pod_yaml("no-id", "no-client-id", None)),
    );
    let said = text(&created);
    assert!(created.status.success(), "{said}");
    assert!(
        said.contains(
            "Warning: ServiceAccount team-apps/no-client-id has no azure.workload.identity/client-id annotation"
        ),
        "the create response carries the admission warning: {said}"
    );
    let no_id = pods.get("no-id").await.unwrap();
    let env_vars = env_of(&no_id);
    assert!(env_vars.contains_key("AZURE_FEDERATED_TOKEN_FILE"), "{env_vars:?}");
    assert!(!env_vars.contains_key("AZURE_CLIENT_ID"), "{env_vars:?}");
    pods_checked += 1;
    figure("pod of a ServiceAccount without a client id: created with the warning".to_owned());

    // 7. Labelled "false" in the labelled namespace: stored as it was sent.
    let out = kubectl(
        &admin,
        &["create", "-f", "-"],
        Some(&pod_yaml("opted-out", "my-app-sa", Some("false"))),
    );
    assert!(out.status.success(), "{}", text(&out));
    let opted_out = pods.get("opted-out").await.unwrap();
    assert!(env_of(&opted_out).is_empty(), "{:?}", env_of(&opted_out));
    assert!(
        volume_names(&opted_out)
            .iter()
            .all(|v| v.starts_with("kube-api-access-")),
        "{:?}",
        volume_names(&opted_out)
    );
    assert!(
        opted_out
            .metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("workload-identity.rs/")),
        "no marker on an opted-out pod"
    );
    pods_checked += 1;
    figure("pod labelled \"false\" in the labelled namespace: stored unchanged".to_owned());

    // 8. Fail closed: the API server goes away under the running webhook.
    let webhook_addr: SocketAddr = format!("127.0.0.1:{https_port}").parse().unwrap();
    let metrics_before = http_get(admin_addr, "/metrics").await.unwrap().1;
    let cached_before = cached_service_accounts(&metrics_before).unwrap();
    let graceful = plane.stop_apiserver();
    let down_at = Instant::now();
    figure(format!(
        "API server stopped ({})",
        if graceful {
            "SIGTERM"
        } else {
            "SIGKILL 5 s after SIGTERM"
        }
    ));
    let refused = kubectl(
        &admin,
        &["create", "--validate=false", "--request-timeout=5s", "-f", "-"],
        Some(&pod_yaml("while-down", "my-app-sa", None)),
    );
    assert!(!refused.status.success());
    figure(format!(
        "API server down: kubectl create answered {:?}",
        text(&refused).lines().last().unwrap_or_default()
    ));
    let cached = admit_direct(webhook_addr, &roots, &review_for(APPS, "my-app-sa", Some("true")))
        .await
        .unwrap();
    assert_eq!(cached["response"]["allowed"], true, "{cached}");
    assert!(
        cached["response"]["patch"].is_string(),
        "a cached ServiceAccount still mutates: {cached}"
    );
    let unknown = admit_direct(webhook_addr, &roots, &review_for(APPS, "not-cached", Some("true")))
        .await
        .unwrap();
    assert_eq!(unknown["response"]["allowed"], false, "{unknown}");
    assert_eq!(unknown["response"]["status"]["code"], 500, "{unknown}");
    let unknown_message = unknown["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(unknown_message.contains("retry the request"), "{unknown_message}");
    let mut readyz_while_down = BTreeMap::<String, u32>::new();
    while down_at.elapsed() < Duration::from_secs(5) {
        let answer = match http_get(admin_addr, "/readyz").await {
            Some((status, body)) => format!("{} {}", status.as_u16(), body.trim()),
            None => "no answer".to_owned(),
        };
        *readyz_while_down.entry(answer).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    figure(format!(
        "API server down {:.1?}: /readyz {readyz_while_down:?}; a cached ServiceAccount's pod mutated from the \
         cache; an uncached one denied: 500 {unknown_message:?}",
        down_at.elapsed()
    ));

    // ... and comes back: the watches resume without a restart of the webhook.
    let restart = plane.start_apiserver().await;
    let back_at = Instant::now();
    apply(
        &admin,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "after-restart", "namespace": APPS,
                             "annotations": {"azure.workload.identity/client-id": LATE_CLIENT_ID}}})
        .to_string(),
    );
    let resumed = eventually(Duration::from_secs(60), async || {
        http_get(admin_addr, "/metrics")
            .await
            .and_then(|(_, m)| cached_service_accounts(&m))
            .is_some_and(|n| n > cached_before)
    })
    .await;
    assert!(
        resumed,
        "the ServiceAccount watch did not resume in 60 s:\n{}",
        webhook.log()
    );
    let resumed_after = back_at.elapsed();
    let mut late = None;
    let injected = eventually(Duration::from_secs(30), async || {
        let out = kubectl(
            &admin,
            &["create", "-f", "-"],
            Some(&pod_yaml("after-restart", "after-restart", None)),
        );
        if !out.status.success() {
            return false;
        }
        late = pods.get("after-restart").await.ok();
        true
    })
    .await;
    assert!(injected, "no pod created after the restart:\n{}", webhook.log());
    assert_eq!(
        env_of(&late.unwrap()).get("AZURE_CLIENT_ID").map(String::as_str),
        Some(LATE_CLIENT_ID)
    );
    pods_checked += 1;
    let (status, _) = http_get(admin_addr, "/readyz").await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    let retries = webhook.log().matches("watch failed; retrying").count();
    figure(format!(
        "API server back in {restart:.1?}: the cache saw a new ServiceAccount {resumed_after:.1?} later \
         ({retries} watch retries logged meanwhile), its pod injected; the webhook was not restarted"
    ));

    let exit = webhook.terminate(Duration::from_secs(60));
    assert!(exit.success(), "exit {exit}:\n{}", webhook.log());
    let log = webhook.log();
    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        !lines.is_empty() && lines.len() == log.lines().count(),
        "--log-format json writes JSON lines only:\n{log}"
    );
    figure(format!("pods checked: {pods_checked}; {} log lines", lines.len()));
}

/// Two replicas with short lifetimes (set in config.env, as a platform team would) and a fresh Secret, while pods
/// are created continuously through two serving-certificate renewals and one CA rollover: no pod refused or left
/// without its identity, the caBundle going [C1] -> [C1, C2] -> [C2, C1] -> [C2] without flapping, both replicas
/// ready throughout and trusted by the live caBundle, every renewal counted in the reload metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn two_replicas_rotate_certificates_under_continuous_pod_creation() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Renewed 20 s after issuance; the CA's successor after 40 s, signing 6 s later, the old CA out 6 s after that.
    let settings = [
        ("WI_CERT_LIFETIME", "30s"),
        ("WI_CA_LIFETIME", "60s"),
        ("WI_CA_ROLLOVER_SETTLE", "6s"),
        ("WI_CERT_CHECK_INTERVAL", "2s"),
    ];
    let installed = install(ROUTED, &settings).await;
    let test_started = Instant::now();
    let figure = |line: String| report("rotation", &format!("[{:>5.1?}] {line}", test_started.elapsed()));
    let client = installed.plane.client.clone();
    let work = installed.plane.dir.path().to_owned();
    let binary = webhook_binary();
    let mut replicas = Vec::new();
    for replica in 0..2 {
        let (https, admin) = (free_port(), free_port());
        installed.endpoint(&format!("wi-webhook-replica-{replica}"), https);
        let mut env = installed.env.clone();
        // Two pods would each have their own address; on one host, their own ports.
        env.push(("WI_LISTEN".to_owned(), format!("0.0.0.0:{https}")));
        env.push(("WI_ADMIN_LISTEN".to_owned(), format!("127.0.0.1:{admin}")));
        let log = work.join(format!("replica-{replica}.log"));
        let process = WebhookProcess::spawn(&binary, &installed.args, &env, &log);
        let https: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        replicas.push((process, https, admin));
    }
    for (process, _, admin) in &mut replicas {
        let ready = process
            .wait_ready(*admin, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        figure(format!("replica ready {ready:.2?} after start"));
    }
    apply(
        &installed.admin,
        &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": APPS, "labels": {"azure.workload.identity/use": "true"}}})
        .to_string(),
    );
    apply(
        &installed.admin,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "app", "namespace": APPS,
                             "annotations": {"azure.workload.identity/client-id": APP_CLIENT_ID}}})
        .to_string(),
    );

    // Pods at about 5 per second until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let creator = create_pods_until(client.clone(), APPS, "rotation-", stop.clone());

    // Watch the caBundle, the Secret's certificate, readiness and TLS with the live bundle until the CA has rolled
    // over and the certificate was renewed at least twice.
    let mut cas: Vec<Vec<u8>> = Vec::new();
    let mut sequence: Vec<Vec<String>> = Vec::new();
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    let (mut unready, mut probes, mut probe_failures) = (Vec::new(), 0u32, Vec::new());
    let secrets = Api::<Secret>::namespaced(client.clone(), &installed.namespace);
    let deadline = Instant::now() + Duration::from_secs(180);
    let done = |sequence: &[Vec<String>], leaves: &[Vec<u8>]| {
        sequence.last().is_some_and(|last| last.len() == 1 && last[0] != "C1") && leaves.len() >= 4
    };
    while !done(&sequence, &leaves) {
        assert!(
            Instant::now() < deadline,
            "no CA rollover and two renewals in 180 s: caBundle {sequence:?}, {} certificates",
            leaves.len()
        );
        let bundles = ca_bundles(&client).await;
        assert!(
            bundles.windows(2).all(|w| w[0] == w[1]),
            "the webhook entries' caBundles differ"
        );
        let roots = wi_webhook::server::certs::parse_bundle(&bundles[0]);
        let state: Vec<String> = roots
            .iter()
            .map(|ca| {
                let position = cas.iter().position(|c| c == ca.as_ref()).unwrap_or_else(|| {
                    cas.push(ca.to_vec());
                    cas.len() - 1
                });
                format!("C{}", position + 1)
            })
            .collect();
        if sequence.last() != Some(&state) {
            figure(format!("caBundle {state:?}"));
            sequence.push(state);
        }
        if let Ok(secret) = secrets.get("wi-webhook-tls").await {
            let crt = secret.data.unwrap_or_default()["tls.crt"].0.clone();
            if leaves.last() != Some(&crt) {
                leaves.push(crt);
            }
        }
        for (replica, (_, https, admin)) in replicas.iter().enumerate() {
            match http_get(*admin, "/readyz").await {
                Some((http::StatusCode::OK, _)) => {}
                other => unready.push(format!("replica {replica}: {other:?}")),
            }
            probes += 1;
            if let Err(error) = tls_connect(*https, &roots, service_name()).await {
                probe_failures.push(format!("replica {replica}: {error}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (created, refused, uninjected) = creator.await.unwrap();

    let expected: Vec<Vec<String>> = [vec!["C1"], vec!["C1", "C2"], vec!["C2", "C1"], vec!["C2"]]
        .iter()
        .map(|s| s.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(sequence, expected, "the caBundle's sequence");
    assert!(refused.is_empty(), "{} pods refused: {refused:?}", refused.len());
    assert!(uninjected.is_empty(), "pods without the identity: {uninjected:?}");
    assert!(unready.is_empty(), "a replica was unready: {unready:?}");
    assert!(
        probe_failures.is_empty(),
        "TLS with the live caBundle failed: {probe_failures:?}"
    );
    let mut reloads = Vec::new();
    let (mut writes, mut conflicts) = (0, 0);
    for (process, _, admin) in &replicas {
        let (_, metrics) = http_get(*admin, "/metrics").await.unwrap();
        let counted: u64 = metrics
            .lines()
            .find(|l| l.starts_with("wi_webhook_tls_certificate_reloads_total{result=\"success\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        reloads.push(counted);
        let log = process.log();
        writes += log.matches("wrote the certificate Secret").count();
        conflicts += log
            .matches("another replica wrote the certificate Secret first")
            .count();
    }
    let renewals = leaves.len() - 1;
    assert!(
        reloads.iter().all(|&n| n as usize >= renewals),
        "each replica counts every certificate it took up: {reloads:?} for {renewals} renewals"
    );
    figure(format!(
        "{created} pods created, 0 refused, 0 without the identity; {} certificates served ({renewals} renewals, \
         one by the CA rollover); caBundle {} states; {probes} readiness checks and TLS probes with the live \
         caBundle, 0 failed; reloads counted per replica {reloads:?}; Secret written {writes} times, {conflicts} \
         write conflicts",
        leaves.len(),
        sequence.len()
    ));
    for (mut process, _, _) in replicas {
        let exit = process.terminate(Duration::from_secs(60));
        assert!(exit.success(), "exit {exit}:\n{}", process.log());
    }
}

/// `GET`/`POST`/`PUT` of JSON over HTTPS, trusting only the CA certificates in `ca_pem`. `url` is
/// `https://IP:PORT/PATH`.
pub(crate) async fn https_json(method: &str, url: &str, ca_pem: &[u8], body: Option<&Value>) -> (u16, Value) {
    let rest = url.strip_prefix("https://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority.parse().unwrap();
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem).map(Result::unwrap).collect();
    let tls = tls_connect(addr, &roots, ServerName::IpAddress(addr.ip().into()))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri(if path.is_empty() { "/" } else { path })
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The binaries cargo built beside `wi-webhook` for the workspace's tests (`target/debug`).
pub(crate) fn built(relative: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_wi-webhook")).parent().unwrap();
    let path = dir.join(relative);
    assert!(
        path.is_file(),
        "{} is not built: cargo test --workspace builds it (or cargo build -p wi-sidecar -p wi-testbed --bins \
         -p wi-sdk --examples)",
        path.display()
    );
    path
}

/// The token chain with no simulated identity: the real API server issues the mutated pod's projected token, the
/// emulated Entra ID trusts that API server as the cluster's OIDC issuer (read from its discovery documents), the
/// `wi-sidecar` binary runs with exactly the env of the stored, mutated pod (`secrets-delivery: sidecar`) and writes
/// the secret, and a `wi-sdk` app (the `watch_dir` example) reads it and sees a rotation. A token of another
/// ServiceAccount is refused with AADSTS700213.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn the_api_servers_tokens_reach_key_vault_through_the_injected_sidecar() {
    const TENANT_ID: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
    const VAULT: &str = "kv-techventure-001";
    let _one = ONE_AT_A_TIME.lock().await;
    let test_started = Instant::now();
    let figure = |line: String| report("token chain", &format!("[{:>5.1?}] {line}", test_started.elapsed()));

    // Entra ID and Key Vault: the emulator, as a process.
    let scratch = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(scratch.path(), VAULT, TENANT_ID).await;
    let (authority, vault_url, emulator_ca_file) = (
        emulator.authority.clone(),
        emulator.vault_url.clone(),
        emulator.ca_file.clone(),
    );

    // The cluster's webhook, configured for this cloud in config.env; sidecars rotate every second.
    let sidecar_env =
        format!("WI_VAULT_URL_TEMPLATE={vault_url},WI_CA_FILE={emulator_ca_file},WI_VERIFY_CHALLENGE_RESOURCE=false");
    let installed = install(
        Options {
            aggregator_routing: true,
            issuer_is_the_api_server: true,
        },
        &[
            ("WI_CLOUD", &authority),
            ("WI_SIDECAR_ENV", &sidecar_env),
            ("WI_SIDECAR_ROTATION_INTERVAL", "1s"),
        ],
    )
    .await;
    let mut webhook = installed.run_webhook().await;
    let client = installed.plane.client.clone();
    let work = installed.plane.dir.path().to_owned();

    // Entra ID trusts the cluster's issuer as it would: from the issuer's public discovery documents.
    let (issuer, jwks_uri) = emulator.trust(&installed.plane).await;
    let entra = |method: &'static str, path: String, body: Value| emulator.call(method, path, body);
    let client_id = emulator
        .federated_identity(TENANT_ID, VAULT, &issuer, APPS, "my-app-sa", true)
        .await;
    let subject = format!("system:serviceaccount:{APPS}:my-app-sa");
    entra(
        "PUT",
        format!("/vaults/{VAULT}/secrets/MyWebAppSecret"),
        json!({"value": "SuperSecureValue123!"}),
    )
    .await;
    figure(format!(
        "issuer {issuer} trusted by the emulated Entra ID through {jwks_uri}; identity {client_id} federated with {subject}"
    ));

    // The app team: a labelled namespace, the ServiceAccount, the class, a pod asking for the sidecar.
    apply(
        &installed.admin,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {APPS}\n  labels:\n    azure.workload.identity/use: \"true\"\n\
             ---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: my-app-sa\n  namespace: {APPS}\n  annotations:\n    \
             azure.workload.identity/client-id: {client_id}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  \
             name: other-sa\n  namespace: {APPS}\n---\napiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
             metadata:\n  name: kv-techventure-secrets\n  namespace: {APPS}\nspec:\n  provider: azure\n  parameters:\n    \
             clientID: {client_id}\n    keyvaultName: {VAULT}\n    tenantId: {TENANT_ID}\n    objects: |\n      array:\n        \
             - |\n          objectName: MyWebAppSecret\n          objectType: secret\n"
        ),
    );
    let pods = Api::<Pod>::namespaced(client.clone(), APPS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "my-web-app", "namespace": APPS,
                     "annotations": {"workload-identity.rs/secret-provider-class": "kv-techventure-secrets",
                                     "workload-identity.rs/secrets-delivery": "sidecar"}},
        "spec": {"serviceAccountName": "my-app-sa", "containers": [{"name": "app", "image": "busybox"}]}}))
    .unwrap();
    let mut stored = None;
    let created = eventually(Duration::from_secs(30), async || {
        stored = pods.create(&PostParams::default(), &pod).await.ok();
        stored.is_some()
    })
    .await;
    assert!(created, "the pod was not admitted:\n{}", webhook.log());
    let stored = serde_json::to_value(stored.unwrap()).unwrap();
    let sidecar = stored["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "wi-sidecar"))
        .unwrap_or_else(|| panic!("no wi-sidecar in the stored pod: {stored}"))
        .clone();

    // Kubelet's part: the projected token from the API server (TokenRequest with the volume's audience and
    // lifetime, bound to the pod), volumes as directories, the env with mount paths mapped.
    let volumes = work.join("pod-volumes");
    let token_source = stored["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "azure-identity-token"))
        .map(|v| v["projected"]["sources"][0]["serviceAccountToken"].clone())
        .expect("the token volume");
    let request_token = |account: &'static str| {
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), APPS);
        let (audience, lifetime) = (
            token_source["audience"].as_str().unwrap().to_owned(),
            token_source["expirationSeconds"].as_i64().unwrap(),
        );
        let bound = (stored["metadata"]["name"].clone(), stored["metadata"]["uid"].clone());
        async move {
            let mut spec = json!({"audiences": [audience], "expirationSeconds": lifetime});
            // Bound to the pod, as kubelet asks; the API server binds only a token of the pod's own account.
            if account == "my-app-sa" {
                spec["boundObjectRef"] = json!({"apiVersion": "v1", "kind": "Pod", "name": bound.0, "uid": bound.1});
            }
            let request: TokenRequest = serde_json::from_value(json!({"spec": spec})).unwrap();
            accounts
                .create_token_request(account, &PostParams::default(), &request)
                .await
                .unwrap()
                .status
                .and_then(|s| s.token)
                .expect("a token")
        }
    };
    let token_dir = volumes.join("azure-identity-token");
    std::fs::create_dir_all(&token_dir).unwrap();
    let token_file = token_dir.join(token_source["path"].as_str().unwrap());
    std::fs::write(&token_file, request_token("my-app-sa").await).unwrap();
    let secrets_dir = volumes.join("wi-secrets-store");
    std::fs::create_dir_all(&secrets_dir).unwrap();
    let mapped = |value: &str| -> String {
        for mount in sidecar["volumeMounts"].as_array().into_iter().flatten() {
            let (path, name) = (mount["mountPath"].as_str().unwrap(), mount["name"].as_str().unwrap());
            if let Some(rest) = value.strip_prefix(path)
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", volumes.join(name).display());
            }
        }
        value.to_owned()
    };
    let env: Vec<(String, String)> = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                mapped(e["value"].as_str().unwrap()),
            )
        })
        .collect();
    let args: Vec<String> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let probe_port = sidecar["startupProbe"]["httpGet"]["port"].as_u64().unwrap();
    let sidecar_binary = built("wi-sidecar");
    let mut sidecar_process = tokio::process::Command::new(&sidecar_binary)
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("wi-sidecar.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let probe: SocketAddr = format!("127.0.0.1:{probe_port}").parse().unwrap();
    let synced = eventually(Duration::from_secs(30), async || {
        http_get(probe, "/readyz")
            .await
            .is_some_and(|(status, _)| status == http::StatusCode::OK)
    })
    .await;
    let sidecar_log = || std::fs::read_to_string(work.join("wi-sidecar.log")).unwrap_or_default();
    assert!(synced, "the sidecar's startup probe never passed:\n{}", sidecar_log());
    assert_eq!(
        std::fs::read_to_string(secrets_dir.join("MyWebAppSecret")).unwrap(),
        "SuperSecureValue123!"
    );
    figure(format!(
        "{} {} with the stored pod's {} env vars and a TokenRequest token (audience {}, {} s): startup probe passed, \
         MyWebAppSecret written",
        sidecar_binary.display(),
        args.join(" "),
        env.len(),
        token_source["audience"],
        token_source["expirationSeconds"]
    ));

    // The app: wi-sdk's watch_dir example prints a line (file hashes) per snapshot.
    let app_binary = built("examples/watch_dir");
    let mut app = tokio::process::Command::new(&app_binary)
        .arg(&secrets_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = {
        use tokio::io::AsyncBufReadExt as _;
        tokio::io::BufReader::new(app.stdout.take().unwrap()).lines()
    };
    let sha = |text: &str| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    let mut wait_for = async |value: &str| {
        let want = sha(value);
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let snapshot: Value = serde_json::from_str(&line).unwrap();
                if snapshot["files"]["MyWebAppSecret"] == want.as_str() {
                    return snapshot["generation"].as_u64().unwrap();
                }
            }
            panic!("the app exited")
        })
        .await
        .unwrap_or_else(|_| panic!("the app never saw {value:?}; sidecar:\n{}", sidecar_log()))
    };
    let first_generation = wait_for("SuperSecureValue123!").await;
    entra(
        "PUT",
        format!("/vaults/{VAULT}/secrets/MyWebAppSecret"),
        json!({"value": "RotatedSecureValue456!"}),
    )
    .await;
    let rotated_at = Instant::now();
    let rotated_generation = wait_for("RotatedSecureValue456!").await;
    assert!(rotated_generation > first_generation);
    figure(format!(
        "{} saw generation {first_generation}, then the rotation as generation {rotated_generation} {:.1?} after \
         the new version, without a restart",
        app_binary.display(),
        rotated_at.elapsed()
    ));
    let _ = sidecar_process.kill().await;

    // A token of another ServiceAccount: no federated credential names its subject.
    std::fs::write(&token_file, request_token("other-sa").await).unwrap();
    let refused = tokio::process::Command::new(&sidecar_binary)
        .arg("once")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AADSTS700213"), "{stderr}");
    assert!(!stderr.contains("RotatedSecureValue456!"), "{stderr}");
    figure(format!(
        "a token of {APPS}/other-sa refused: {}",
        stderr
            .lines()
            .find(|l| l.contains("AADSTS700213"))
            .unwrap_or_default()
            .trim()
    ));
    let exit = webhook.terminate(Duration::from_secs(60));
    assert!(exit.success(), "exit {exit}:\n{}", webhook.log());
    drop(emulator);
}

/// Which upstream Azure Workload Identity release a stand-in webhook mutates like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// v1.5: volume `azure-identity-token` mounted at `/var/run/secrets/azure/tokens`, the names this webhook uses.
    V1_5,
    /// v1.6: a volume named after the pod, mounted under `/var/run/secrets/azure/wi/`.
    V1_6,
}

/// Upstream's mutation, from its documented behaviour (REFERENCE.md §1) and its tests' expectations, applied to a
/// pod as upstream does: env vars added only when absent, a token mount per container unless one of that volume is
/// there, the projected token volume replaced by upstream's own when one of its name exists; the patch made by
/// diffing the pod before and after, as upstream makes it. The ServiceAccount's client id is given (upstream reads
/// it from the cluster).
fn upstream_mutation(version: Upstream, pod: &Value, client_id: &str) -> Value {
    let identity = pod["metadata"]["name"]
        .as_str()
        .or(pod["metadata"]["generateName"].as_str())
        .unwrap_or("pod");
    let digest = identity.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let (volume, mount_path) = match version {
        Upstream::V1_5 => (
            "azure-identity-token".to_owned(),
            "/var/run/secrets/azure/tokens".to_owned(),
        ),
        Upstream::V1_6 => (
            format!("azure-workload-identity-reserved-{digest:016x}"),
            format!("/var/run/secrets/azure/wi/{digest:016x}"),
        ),
    };
    let mut mutated = pod.clone();
    let env = [
        ("AZURE_CLIENT_ID", client_id.to_owned()),
        ("AZURE_TENANT_ID", TENANT.to_owned()),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            format!("{mount_path}/azure-identity-token"),
        ),
        ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/".to_owned()),
    ];
    for list in ["initContainers", "containers"] {
        for container in mutated["spec"][list].as_array_mut().into_iter().flatten() {
            let has = |c: &Value, key: &str, name: &str| {
                c[key].as_array().is_some_and(|l| l.iter().any(|e| e["name"] == name))
            };
            for (name, value) in &env {
                if !has(container, "env", name) {
                    if !container["env"].is_array() {
                        container["env"] = json!([]);
                    }
                    container["env"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": name, "value": value}));
                }
            }
            if !has(container, "volumeMounts", &volume) {
                if !container["volumeMounts"].is_array() {
                    container["volumeMounts"] = json!([]);
                }
                container["volumeMounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": volume, "mountPath": mount_path, "readOnly": true}));
            }
        }
    }
    let token = json!({"name": volume, "projected": {"sources": [{"serviceAccountToken": {
        "path": "azure-identity-token", "expirationSeconds": 3600, "audience": "api://AzureADTokenExchange"}}]}});
    if !mutated["spec"]["volumes"].is_array() {
        mutated["spec"]["volumes"] = json!([]);
    }
    let volumes = mutated["spec"]["volumes"].as_array_mut().unwrap();
    match volumes.iter().position(|v| v["name"] == volume.as_str()) {
        Some(i) => volumes[i] = token,
        None => volumes.push(token),
    }
    serde_json::to_value(json_patch::diff(pod, &mutated)).unwrap()
}

/// A stand-in for the upstream webhook: HTTPS on this host's address, `POST /v1.5` and `POST /v1.6`; the count of
/// reviews it answered.
async fn serve_upstream(client_id: &'static str) -> (SocketAddr, String, Arc<std::sync::atomic::AtomicUsize>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let ip = host_address();
    let leaf = rcgen::CertificateParams::new(vec![ip.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let answer = Arc::new(move |path: &str, body: &[u8]| -> Value {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let review: Value = serde_json::from_slice(body).unwrap();
        let version = if path == "/v1.5" {
            Upstream::V1_5
        } else {
            Upstream::V1_6
        };
        let patch = upstream_mutation(version, &review["request"]["object"], client_id);
        use base64::Engine as _;
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
            "uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())}})
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let reply = answer(&path, &body);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                            reply.to_string(),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca.pem(), calls)
}

/// What a container must have whatever the webhooks did: one of each `AZURE_*` variable, the client id of the
/// ServiceAccount, and `AZURE_FEDERATED_TOKEN_FILE` naming the token file of a projected token volume the container
/// mounts (never a missing file); the API server itself refuses two mounts at one path. Returns the token volumes.
fn check_identity(pod: &Pod, client_id: &str) -> Result<usize, String> {
    let spec = pod.spec.as_ref().unwrap();
    let token_volumes: BTreeMap<&str, &str> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let source = v
                .projected
                .as_ref()?
                .sources
                .as_ref()?
                .iter()
                .find_map(|s| s.service_account_token.as_ref())?;
            (source.audience.as_deref() == Some("api://AzureADTokenExchange"))
                .then_some((v.name.as_str(), source.path.as_str()))
        })
        .collect();
    for container in spec.init_containers.iter().flatten().chain(&spec.containers) {
        let env: Vec<(&str, &str)> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
            .collect();
        for name in [
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
        ] {
            let count = env.iter().filter(|(n, _)| *n == name).count();
            if count != 1 {
                return Err(format!("{}: {count} {name}", container.name));
            }
        }
        let get = |name: &str| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .unwrap_or_default()
        };
        if get("AZURE_CLIENT_ID") != client_id {
            return Err(format!(
                "{}: AZURE_CLIENT_ID {}",
                container.name,
                get("AZURE_CLIENT_ID")
            ));
        }
        let file = get("AZURE_FEDERATED_TOKEN_FILE");
        let seen = container.volume_mounts.iter().flatten().any(|m| {
            token_volumes
                .get(m.name.as_str())
                .is_some_and(|path| format!("{}/{path}", m.mount_path.trim_end_matches('/')) == file)
        });
        if !seen {
            return Err(format!(
                "{}: AZURE_FEDERATED_TOKEN_FILE {file} is in no token mount",
                container.name
            ));
        }
    }
    Ok(token_volumes.len())
}

/// Migration with both webhooks installed (issue 17): a pod mutated by upstream v1.5 or v1.6 and then by this
/// webhook, and the reverse order, behind the real API server. The API server calls mutating webhooks in the
/// order of their configurations' names: upstream's `azure-wi-webhook-mutating-webhook-configuration` sorts before
/// `wi-webhook`; a configuration named `zz-...` runs after it. Both are reinvoked (`IfNeeded`) when the other
/// changed the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn migration_with_upstream_installed_in_either_order() {
    const NS: &str = "migrating";
    let _one = ONE_AT_A_TIME.lock().await;
    let test_started = Instant::now();
    let figure = |line: String| report("migration", &format!("[{:>5.1?}] {line}", test_started.elapsed()));
    let installed = install(ROUTED, &[]).await;
    let webhook = installed.run_webhook().await;
    let client = installed.plane.client.clone();
    let (upstream, upstream_ca, upstream_calls) = serve_upstream(APP_CLIENT_ID).await;
    apply(
        &installed.admin,
        &json!([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "app", "namespace": NS,
                          "annotations": {"azure.workload.identity/client-id": APP_CLIENT_ID}}},
        ])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<String>(),
    );
    let configurations = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    use base64::Engine as _;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&upstream_ca);
    // (upstream, its configuration's name, the order, the token volumes the pod ends with): one, except when
    // upstream v1.6 comes second and adds its own beside this webhook's (upstream cannot be told not to).
    let first = "azure-wi-webhook-mutating-webhook-configuration";
    let after = "zz-azure-wi-webhook";
    for (version, name, order, token_volumes) in [
        (Upstream::V1_5, first, "upstream v1.5, then this webhook", 1),
        (Upstream::V1_5, after, "this webhook, then upstream v1.5", 1),
        (Upstream::V1_6, first, "upstream v1.6, then this webhook", 1),
        (Upstream::V1_6, after, "this webhook, then upstream v1.6", 2),
    ] {
        let path = if version == Upstream::V1_5 { "v1.5" } else { "v1.6" };
        let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{"name": "mutation.azure-workload-identity.io",
                          "clientConfig": {"url": format!("https://{upstream}/{path}"), "caBundle": ca_bundle},
                          "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                     "resources": ["pods"]}],
                          "objectSelector": {"matchLabels": {"azure.workload.identity/use": "true"}},
                          "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
                          "reinvocationPolicy": "IfNeeded", "timeoutSeconds": 10}],
        }))
        .unwrap();
        configurations
            .create(&PostParams::default(), &configuration)
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "app-", "labels": {"azure.workload.identity/use": "true"}},
            "spec": {"serviceAccountName": "app",
                     "initContainers": [{"name": "migrate", "image": "busybox"}],
                     "containers": [{"name": "app", "image": "nginx"}]},
        }))
        .unwrap();
        // A new webhook configuration takes effect within a second or so: until a pod went through upstream too.
        let mut created = None;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let before = upstream_calls.load(std::sync::atomic::Ordering::SeqCst);
            let pod = pods.create(&PostParams::default(), &pod).await.unwrap_or_else(|e| {
                panic!(
                    "{order}: the API server refused the pod: {e}\nwebhook:\n{}",
                    webhook.log()
                )
            });
            if upstream_calls.load(std::sync::atomic::Ordering::SeqCst) > before {
                created = Some(pod);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pod = created.unwrap_or_else(|| panic!("{order}: no pod went through both webhooks in 30 s"));
        let tokens = check_identity(&pod, APP_CLIENT_ID).unwrap_or_else(|e| panic!("{order}: {e}"));
        assert_eq!(tokens, token_volumes, "{order}: token volumes {:?}", volume_names(&pod));
        let injected = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("workload-identity.rs/injected"))
            .cloned()
            .unwrap_or_default();
        figure(format!(
            "{order}: created; {tokens} token volume(s) {:?}; this webhook's record {injected}",
            volume_names(&pod)
        ));
        configurations.delete(name, &Default::default()).await.unwrap();
    }
}
