//! `cargo bench -p wi-webhook --bench cache`: resident memory of `wi-webhook serve` by ServiceAccounts cached.
//!
//! The release binary, started as users start it, lists and watches the ServiceAccounts and Namespaces of:
//!
//! - a fake kube-apiserver in this process (paginated metadata lists, as kube-apiserver serves them), holding 10
//!   (the baseline), 1,000, 10,000 and 100,000 ServiceAccounts in 100 namespaces, each with a client id, two other
//!   annotations and two labels;
//! - then, when `KUBEBUILDER_ASSETS` names a control plane, a real kube-apiserver v1.36 with the same accounts
//!   created through its API.
//!
//! For each: the resident memory once the caches are listed and the process has settled (steady), the peak
//! (`VmHWM`: the initial list included), and the bytes per account over the baseline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/envtest.rs"]
mod envtest;
#[path = "../tests/common/fake_api.rs"]
mod fake_api;
#[path = "../tests/common/process.rs"]
mod process;
mod support;

use process::eventually;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use wi_runtime::procfs;

const SIZES: [usize; 4] = [10, 1_000, 10_000, 100_000];
const NAMESPACES: usize = 100;

struct Measured {
    accounts: usize,
    steady_kib: u64,
    peak_kib: u64,
    listed_in: Duration,
}

async fn measure(kubeconfig: &str, accounts: usize) -> Result<Measured, String> {
    let started = std::time::Instant::now();
    let mut server = support::start_server(kubeconfig, accounts).await?;
    let listed_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory = procfs::memory(Some(server.pid())).unwrap();
    server.child.kill().await.unwrap();
    Ok(Measured {
        accounts,
        steady_kib: memory.rss_kib,
        peak_kib: memory.peak_kib,
        listed_in,
    })
}

fn table(title: &str, rows: &[Measured]) {
    println!("\n{title}");
    println!(
        "| ServiceAccounts | RSS steady | peak RSS | peak / steady | bytes per account over {} | listed and ready in |",
        rows[0].accounts
    );
    println!("|---|---|---|---|---|---|");
    let base = &rows[0];
    for row in rows {
        let per_account = if row.accounts == base.accounts {
            "(baseline)".to_owned()
        } else {
            format!(
                "{:.0}",
                (row.steady_kib as f64 - base.steady_kib as f64) * 1024.0 / (row.accounts - base.accounts) as f64
            )
        };
        println!(
            "| {} | {} KiB | {} KiB | {:.2}x | {per_account} | {:.1} s |",
            row.accounts,
            row.steady_kib,
            row.peak_kib,
            row.peak_kib as f64 / row.steady_kib as f64,
            row.listed_in.as_secs_f64()
        );
    }
}

/// The accounts the fake API serves, created through a real API server: `team-NNN/app-NNNNN` from `from` to `to`.
async fn create_accounts(client: &kube::Client, from: usize, to: usize) {
    futures::stream::iter(from..to)
        .for_each_concurrent(64, |i| {
            let client = client.clone();
            async move {
                let namespace = format!("team-{:03}", i % NAMESPACES);
                let sa: ServiceAccount = serde_json::from_value(json!({
                    "metadata": {"name": format!("app-{i:05}"),
                        "annotations": {
                            "azure.workload.identity/client-id": uuid::Uuid::new_v4().to_string(),
                            "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\"}",
                            "owner": format!("team-{:03}@example.com", i % NAMESPACES)},
                        "labels": {"app.kubernetes.io/name": format!("app-{i:05}"), "team": namespace.clone()}},
                }))
                .unwrap();
                Api::<ServiceAccount>::namespaced(client, &namespace)
                    .create(&PostParams::default(), &sa)
                    .await
                    .unwrap();
            }
        })
        .await;
}

async fn count_accounts(client: &kube::Client) -> usize {
    let mut count = 0;
    let mut params = ListParams::default().limit(5000);
    loop {
        let page = Api::<ServiceAccount>::all(client.clone())
            .list_metadata(&params)
            .await
            .unwrap();
        count += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return count,
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `run` returns first, so that the control plane it started is stopped before the exit.
    if let Err(error) = run().await {
        support::fail("cache", &error);
    }
}

async fn run() -> Result<(), String> {
    println!(
        "resident memory of wi-webhook serve (release) by ServiceAccounts cached; steady = 2 s after the caches \
         listed; peak = VmHWM, the initial list included"
    );
    let mut fake = Vec::new();
    for accounts in SIZES {
        let api = fake_api::fake_api(accounts).await;
        fake.push(measure(&fake_api::kubeconfig(api), accounts).await?);
    }
    table("against the fake API server (paginated metadata lists)", &fake);

    let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(std::path::PathBuf::from);
    if !assets.is_some_and(|a| a.join("kube-apiserver").is_file() && a.join("etcd").is_file()) {
        println!(
            "\nagainst a real kube-apiserver: skipped, KUBEBUILDER_ASSETS does not name a folder with kube-apiserver \
             and etcd (export KUBEBUILDER_ASSETS=\"$(../shared/kube/setup.sh)\")"
        );
        return Ok(());
    }
    let plane = envtest::ControlPlane::start(envtest::Options::default()).await;
    let version = plane.client.apiserver_version().await.unwrap();
    for i in 0..NAMESPACES {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": format!("team-{i:03}")}})).unwrap();
        Api::<Namespace>::all(plane.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let kubeconfig = std::fs::read_to_string(plane.kubeconfig("bench.kubeconfig", envtest::ADMIN_TOKEN)).unwrap();
    let mut real = Vec::new();
    let mut created = 0;
    for target in SIZES {
        let started = std::time::Instant::now();
        create_accounts(&plane.client, created, target).await;
        let rate = (target - created) as f64 / started.elapsed().as_secs_f64();
        created = target;
        let total = count_accounts(&plane.client).await;
        eprintln!("real API server: {total} ServiceAccounts ({rate:.0} created per second)");
        real.push(measure(&kubeconfig, total).await?);
    }
    table(
        &format!(
            "against kube-apiserver {} (etcd 3.6), created through its API",
            version.git_version
        ),
        &real,
    );
    Ok(())
}
