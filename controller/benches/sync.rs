//! The controller at scale, behind a real API server (envtest: `KUBEBUILDER_ASSETS`): N classes (default 1,000) of 3
//! Key Vault objects each, synced by the `wi-controller` binary (release build) with the identity of one
//! ServiceAccount, against the in-process emulated Entra ID and Key Vault. Prints the time until every Secret exists,
//! the Key Vault reads of one interval next to classes x objects, the TokenRequests and the controller's memory.
//!
//! ```sh
//! export KUBEBUILDER_ASSETS="$(../shared/kube/setup.sh)"
//! cargo build --release -p wi-controller && cargo bench -p wi-controller --bench sync
//! ```
//! `WI_BENCH_CLASSES` (1000) and `WI_BENCH_INTERVAL` (30s) change the scale; `WI_CONTROLLER_BINARY` another binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::json;
use wi_testbed::emulator::FederatedCredential;

// The control plane of the webhook's tests; it needs `process::free_port` and `eventually` beside it.
#[path = "../../webhook/tests/common/envtest.rs"]
mod envtest;

mod process {
    /// A port free on 127.0.0.1 a moment ago.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

use envtest::{ADMIN_TOKEN, ControlPlane, Options, SECRET_PROVIDER_CLASS_CRD, run_with_kubeconfig};

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
const VAULT: &str = "kv-bench-001";
const NAMESPACE: &str = "bench";
const OBJECTS: usize = 3;

fn main() {
    if !std::env::var_os("KUBEBUILDER_ASSETS").is_some_and(|d| PathBuf::from(d).join("kube-apiserver").is_file()) {
        eprintln!(
            "skipped: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd \
             (export KUBEBUILDER_ASSETS=\"$(../shared/kube/setup.sh)\")"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let classes: usize = std::env::var("WI_BENCH_CLASSES").map_or(1000, |v| v.parse().unwrap());
    let interval =
        std::env::var("WI_BENCH_INTERVAL").map_or(Duration::from_secs(30), |v| humantime::parse_duration(&v).unwrap());
    let binary = std::env::var_os("WI_CONTROLLER_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/wi-controller"),
        PathBuf::from,
    );
    assert!(
        binary.is_file(),
        "{} is not built: cargo build --release -p wi-controller",
        binary.display()
    );

    let plane = ControlPlane::start(Options {
        aggregator_routing: false,
        issuer_is_the_api_server: true,
    })
    .await;
    let client = plane.client.clone();
    let admin = plane.kubeconfig("admin.kubeconfig", ADMIN_TOKEN);
    let applied = run_with_kubeconfig(
        "kubectl",
        &admin,
        &["apply", "-f", "-"],
        Some(SECRET_PROVIDER_CLASS_CRD),
    );
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));

    // Entra ID and Key Vault, trusting the API server's tokens for one ServiceAccount.
    let emulator = wi_testbed::Emulator::start().await.unwrap();
    let vault_url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    let jwks = client
        .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new()).unwrap())
        .await
        .unwrap();
    emulator.trust_issuer(&plane.url(), serde_json::from_str(&jwks).unwrap());
    let identity = emulator.add_identity("mi-bench", TENANT);
    emulator.add_federated_credential(
        &identity.client_id,
        FederatedCredential {
            issuer: plane.url(),
            subject: format!("system:serviceaccount:{NAMESPACE}:syncer"),
            audience: wi_contract::DEFAULT_AUDIENCE.to_owned(),
        },
    );
    emulator.grant(VAULT, &identity.principal_id, &["get"]);
    for i in 0..classes {
        for j in 0..OBJECTS {
            emulator
                .set_secret(VAULT, &format!("s-{i}-{j}"), &format!("value-{i}-{j}"), None)
                .unwrap();
        }
    }
    let setup = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n---\napiVersion: v1\nkind: ServiceAccount\n\
         metadata:\n  name: syncer\n  namespace: {NAMESPACE}\n  annotations:\n    azure.workload.identity/client-id: {}\n",
        identity.client_id
    );
    let applied = run_with_kubeconfig("kubectl", &admin, &["apply", "-f", "-"], Some(&setup));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));

    // The classes, before the controller starts: its first list sees them all.
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "secrets-store.csi.x-k8s.io",
        "v1",
        "SecretProviderClass",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let created = Instant::now();
    futures::stream::iter(0..classes)
        .map(|i| {
            let api = api.clone();
            let resource = resource.clone();
            async move {
                let objects: String = (0..OBJECTS)
                    .map(|j| format!("  - |\n    objectName: s-{i}-{j}\n    objectType: secret\n"))
                    .collect();
                let data: Vec<_> = (0..OBJECTS)
                    .map(|j| json!({"objectName": format!("s-{i}-{j}"), "key": format!("KEY_{j}")}))
                    .collect();
                let mut class = DynamicObject::new(&format!("class-{i}"), &resource).within(NAMESPACE);
                class.metadata.annotations = Some(
                    [(
                        "workload-identity.rs/sync-service-account".to_owned(),
                        "syncer".to_owned(),
                    )]
                    .into(),
                );
                class.data = json!({"spec": {
                    "provider": "azure",
                    "parameters": {"keyvaultName": VAULT, "tenantId": TENANT, "objects": format!("array:\n{objects}")},
                    "secretObjects": [{"secretName": format!("secret-{i}"), "type": "Opaque", "data": data}]}});
                let mut tries = 0;
                while let Err(e) = api.create(&PostParams::default(), &class).await {
                    // The CRD may not be served for a moment after it is created.
                    tries += 1;
                    assert!(tries < 100, "class-{i}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let create_time = created.elapsed();

    let admin_addr = format!("127.0.0.1:{}", process::free_port());
    let log = plane.dir.path().join("wi-controller.log");
    let mut controller = std::process::Command::new(&binary)
        .args(["--log-format", "json", "--log-level", "warn"])
        .env_clear()
        .envs([
            ("KUBECONFIG", admin.display().to_string()),
            ("WI_CLOUD", emulator.authority_host().to_owned()),
            ("WI_VAULT_URL_TEMPLATE", vault_url.clone()),
            ("WI_CA_FILE", emulator.ca_file().display().to_string()),
            ("WI_VERIFY_CHALLENGE_RESOURCE", "false".to_owned()),
            ("WI_SYNC_INTERVAL", humantime::format_duration(interval).to_string()),
            ("WI_SYNC_JITTER", "0".to_owned()),
            ("WI_NAMESPACE", "default".to_owned()),
            ("WI_POD_NAME", "bench".to_owned()),
            ("WI_ADMIN_LISTEN", admin_addr.clone()),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=wi-controller");
    let mut count = 0;
    let synced = eventually(Duration::from_secs(600), async || {
        tokio::time::sleep(Duration::from_millis(250)).await;
        count = secrets.list_metadata(&managed).await.map_or(0, |l| l.items.len());
        count == classes
    })
    .await;
    let sync_time = started.elapsed();
    assert!(
        synced,
        "{count} of {classes} Secrets after 600 s:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let memory_synced = wi_runtime::procfs::memory(Some(controller.id())).unwrap();

    // One interval of steady state: each class read once.
    let reads = |counters: &std::collections::BTreeMap<String, u64>| {
        counters.get(&format!("{VAULT} get-secret")).copied().unwrap_or(0)
    };
    let tokens = |counters: &std::collections::BTreeMap<String, u64>| counters.get("token").copied().unwrap_or(0);
    let before = emulator.counters();
    tokio::time::sleep(interval).await;
    let after = emulator.counters();
    let memory = wi_runtime::procfs::memory(Some(controller.id())).unwrap();
    let metrics = metrics(&admin_addr).await;
    let _ = controller.kill();
    let _ = controller.wait();

    let per_interval = reads(&after) - reads(&before);
    println!(
        "wi-controller: {classes} classes x {OBJECTS} objects, one ServiceAccount, interval {interval:?}, jitter 0"
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!("| classes created (32 at a time, before the controller started) | {create_time:.1?} |");
    println!("| start to every Secret synced | {sync_time:.1?} |");
    println!(
        "| Key Vault reads in one interval after that | {per_interval} (classes x objects = {}) |",
        classes * OBJECTS
    );
    println!(
        "| Entra ID token requests: all / in that interval | {} / {} |",
        tokens(&after),
        tokens(&after) - tokens(&before)
    );
    println!(
        "| TokenRequests (wi_controller_token_requests_total) | {} |",
        metric(&metrics, "wi_controller_token_requests_total")
    );
    println!(
        "| controller RSS when all synced / one interval later (peak) | {} / {} KiB ({} KiB) |",
        memory_synced.rss_kib, memory.rss_kib, memory.peak_kib
    );
}

fn metric(text: &str, name: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?")
        .to_owned()
}

/// `GET /metrics` over plain HTTP/1.0.
async fn metrics(addr: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out).await;
    out
}
