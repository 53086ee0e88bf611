//! The `wi-controller` command line and its run: leader election on a Lease, the class controller while leading,
//! the admin port throughout. `main.rs` only parses and calls [`run`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube_lease_manager::LeaseManagerBuilder;
use wi_runtime::admin::{AdminServer, Health};
use wi_runtime::log::LogConfig;
use wi_vault::schedule::Schedule;

use crate::metrics::{CountRequests, Metrics};
use crate::reconcile::{self, Context, Settings};

/// Keeps Kubernetes Secrets equal to Key Vault for the SecretProviderClasses annotated
/// workload-identity.rs/sync-service-account: NAME, with or without pods. Each class is synced with the workload
/// identity of that ServiceAccount (a TokenRequest exchanged at Entra ID), never the controller's own; its
/// spec.secretObjects become Secrets it owns, re-synced every --interval, and annotated workloads roll when one
/// changes. Replicas elect one leader with a Lease; /healthz, /readyz and /metrics are on --admin-listen.
#[derive(Debug, Parser)]
#[command(name = "wi-controller", version)]
pub struct Cli {
    /// Time between syncs of a class (per class: the workload-identity.rs/sync-interval annotation). The CSI
    /// driver's rotation poll interval is 2m too.
    #[arg(long, env = "WI_SYNC_INTERVAL", value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Fraction of the interval added or removed at random, so that classes do not call Key Vault together.
    #[arg(long, env = "WI_SYNC_JITTER", value_name = "FRACTION", default_value_t = 0.1)]
    pub jitter: f64,

    /// Tenant of the identities whose ServiceAccount (azure.workload.identity/tenant-id) and class (tenantId) name
    /// none: the webhook's setting, from the same ConfigMap.
    #[arg(long, env = "WI_TENANT_ID", value_name = "UUID")]
    pub tenant_id: Option<String>,

    /// Azure cloud, for Entra ID's authority host: AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, or
    /// the https:// authority host of another cloud.
    #[arg(long, env = "WI_CLOUD", value_name = "CLOUD", default_value = "AzurePublicCloud")]
    pub cloud: wi_contract::Cloud,

    #[command(flatten)]
    pub access: wi_vault::Access,

    /// Objects of one class fetched at the same time.
    #[arg(long, env = "WI_CONCURRENCY", value_name = "N", default_value_t = 4)]
    pub concurrency: usize,

    /// Classes synced at the same time.
    #[arg(long, env = "WI_CLASS_CONCURRENCY", value_name = "N", default_value_t = 16)]
    pub class_concurrency: u16,

    /// The Lease replicas elect their leader with, in --lease-namespace.
    #[arg(long, env = "WI_LEASE_NAME", value_name = "NAME", default_value = "wi-controller")]
    pub lease_name: String,

    /// Namespace of the Lease: the controller's own (the manifests set it from the pod).
    #[arg(long, env = "WI_NAMESPACE", value_name = "NAMESPACE", default_value = "wi-system")]
    pub lease_namespace: String,

    /// This replica's name in the Lease (the manifests give the pod's name). Default: the host name.
    #[arg(long, env = "WI_POD_NAME", value_name = "NAME")]
    pub identity: Option<String>,

    /// How long a leader that stopped renewing keeps the Lease: the longest a replica's death stops syncing.
    #[arg(long, env = "WI_LEASE_DURATION", value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// The leader renews this long before the Lease would expire.
    #[arg(long, env = "WI_LEASE_GRACE", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_grace: Duration,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "WI_ADMIN_LISTEN", value_name = "ADDR",
          default_value_t = SocketAddr::from(([0, 0, 0, 0], wi_contract::CONTROLLER_ADMIN_PORT)))]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub log: LogConfig,
}

/// What the admin port reports: ready once the API server answered; the metrics.
struct ControllerHealth {
    metrics: Arc<Metrics>,
}

impl Health for ControllerHealth {
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }
}

/// The SecretProviderClass resource of the Secrets Store CSI driver.
pub fn secret_provider_class() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "secrets-store.csi.x-k8s.io",
        "v1",
        "SecretProviderClass",
    ))
}

fn settings(cli: &Cli, metrics: &Metrics) -> anyhow::Result<Settings> {
    anyhow::ensure!(
        (0.0..1.0).contains(&cli.jitter),
        "--jitter {} must be at least 0 and below 1",
        cli.jitter
    );
    anyhow::ensure!(cli.interval >= Duration::from_secs(1), "--interval must be at least 1s");
    let cloud = wi_sdk::identity::CloudOptions {
        authority_host: Some(cli.cloud.authority_host().into_owned()),
        extra_ca_file: cli.access.ca_file.clone(),
    };
    let entra = wi_sdk::identity::client_options(&cloud).context("Entra ID client")?;
    let mut keyvault = wi_sdk::identity::client_options(&cloud).context("Key Vault client")?;
    // The loop retries a failed sync itself (backoff, Retry-After): retries inside the SDK would multiply a
    // throttled vault's requests by the number of objects.
    keyvault.retry = azure_core::http::RetryOptions::none();
    keyvault
        .per_call_policies
        .push(Arc::new(CountRequests(metrics.keyvault_requests.clone())));
    Ok(Settings {
        schedule: Schedule {
            interval: cli.interval,
            jitter: cli.jitter,
            ..Schedule::default()
        },
        default_tenant: cli.tenant_id.clone().filter(|t| !t.trim().is_empty()),
        entra,
        keyvault,
        access: cli.access.clone(),
        concurrency: cli.concurrency.max(1),
    })
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    wi_runtime::log::init(&cli.log)?;
    let (duration, grace) = (cli.lease_duration.as_secs(), cli.lease_grace.as_secs());
    anyhow::ensure!(
        grace >= 1 && duration > grace,
        "--lease-duration ({duration}s) must be longer than --lease-grace ({grace}s), which must be at least 1s"
    );
    let metrics = Arc::new(Metrics::default());
    let settings = settings(&cli, &metrics)?;
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API: in a pod, its ServiceAccount; elsewhere, KUBECONFIG")?;
    let identity = match cli.identity.clone().filter(|i| !i.is_empty()) {
        Some(identity) => identity,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| format!("wi-controller-{}", std::process::id())),
    };
    let admin = AdminServer::start(
        cli.admin_listen,
        Arc::new(ControllerHealth {
            metrics: metrics.clone(),
        }),
    )
    .await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: wi_contract::CONTROLLER_NAME.to_owned(),
            instance: Some(identity.clone()),
        },
    );
    let context = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics.clone(),
        recorder,
        secret_provider_class(),
    ));
    let lease = LeaseManagerBuilder::new(client.clone(), &cli.lease_name)
        .with_namespace(&cli.lease_namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace(grace)
        .with_field_manager(format!("{}-{identity}", wi_contract::CONTROLLER_NAME))
        .build()
        .await
        .with_context(|| format!("Lease {}/{}", cli.lease_namespace, cli.lease_name))?;
    let (mut leading, lease_task) = lease.watch().await;
    tracing::info!(%identity, lease = %cli.lease_name, "started; waiting for the Lease");
    let shutdown = wi_runtime::shutdown::signal();
    tokio::pin!(shutdown);
    let mut controller: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the Lease manager stopped");
                }
                let leader = *leading.borrow_and_update();
                metrics.leader.set(i64::from(leader));
                match (leader, controller.is_some()) {
                    (true, false) => {
                        tracing::info!(%identity, "leading: syncing classes");
                        controller = Some(tokio::spawn(controller_loop(context.clone(), cli.class_concurrency)));
                    }
                    (false, true) => {
                        tracing::warn!(%identity, "lost the Lease: stopped syncing");
                        if let Some(task) = controller.take() {
                            task.abort();
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    tracing::info!("stopping");
    if let Some(task) = controller.take() {
        task.abort();
    }
    // Closing the channel releases the Lease, so that the other replica leads at once.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => tracing::info!("Lease released"),
        Ok(Err(error)) => tracing::warn!(%error, "cannot release the Lease"),
        Err(error) => tracing::warn!(%error, "the Lease task failed"),
    }
    admin.shutdown().await.context("admin server")?;
    Ok(())
}

/// The class controller: every SecretProviderClass watched, each reconciled on change and at its interval.
async fn controller_loop(context: Arc<Context>, concurrency: u16) {
    let api: kube::Api<DynamicObject> = kube::Api::all_with(context.client.clone(), &context.resource);
    let config = kube::runtime::controller::Config::default().concurrency(concurrency);
    Controller::new_with(api, watcher::Config::default(), context.resource.clone())
        .with_config(config)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "controller");
            }
        })
        .await;
}
