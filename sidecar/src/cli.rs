//! The `wi-sidecar` command line. `main.rs` only parses and calls [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::atomic_writer::AtomicWriter;
use crate::config::{self, SyncConfig};
use crate::fetch::{Fetcher, vault_url};
use crate::run::{Metrics, Schedule, Syncer};
use wi_runtime::admin::{AdminServer, Health};
use wi_runtime::log::{LogConfig, LogFormat};

/// Fetches the Key Vault objects of a SecretProviderClass with the pod's workload identity and writes them into a
/// directory the way kubelet writes a Secret volume (a `..data` symlink swap), then keeps them fresh.
///
/// Identity from the env the webhook injects (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE,
/// AZURE_AUTHORITY_HOST).
#[derive(Debug, Parser)]
#[command(name = "wi-sidecar", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One sync, then exit: 0 when every object was written, 1 with a message naming the object otherwise (for an
    /// init container).
    Once(Common),
    /// Sync now and every --interval, keeping the last good files through failures; serves /healthz, /readyz
    /// (true after the first complete sync) and /metrics on --admin-listen. Stops on SIGTERM or SIGINT.
    Run(RunArgs),
}

/// Flags of both subcommands.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The SecretProviderClass (or its spec or parameters), JSON or YAML. Default: the WI_SECRETS_CONFIG env var,
    /// which holds the document itself.
    #[arg(long, env = "WI_SECRETS_CONFIG_FILE", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory the files are written to.
    #[arg(
        long,
        env = wi_contract::ENV_SECRETS_DIR,
        value_name = "DIR",
        default_value = wi_contract::DEFAULT_SECRETS_MOUNT_PATH
    )]
    pub dir: PathBuf,

    #[command(flatten)]
    pub access: wi_vault::Access,

    /// Objects fetched at the same time.
    #[arg(long, env = "WI_CONCURRENCY", value_name = "N", default_value_t = 8)]
    pub concurrency: usize,

    /// Log level or tracing filter directives.
    #[arg(long, env = "WI_LOG_LEVEL", value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

/// Flags of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,

    /// Time between syncs (the CSI driver's --rotation-poll-interval defaults to 2m).
    #[arg(long, env = wi_contract::ENV_ROTATION_INTERVAL, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Fraction of the interval added or removed at random.
    #[arg(long, env = "WI_ROTATION_JITTER", value_name = "FRACTION", default_value_t = 0.1)]
    pub jitter: f64,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = wi_contract::ENV_ADMIN_LISTEN, value_name = "ADDR",
          default_value_t = SocketAddr::from(([0, 0, 0, 0], wi_contract::SIDECAR_ADMIN_PORT)))]
    pub admin_listen: SocketAddr,
}

/// Reads the configuration from --config or WI_SECRETS_CONFIG.
pub fn load_config(common: &Common) -> anyhow::Result<SyncConfig> {
    let (origin, text) = match &common.config {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => (
            wi_contract::ENV_SECRETS_CONFIG.to_owned(),
            std::env::var(wi_contract::ENV_SECRETS_CONFIG).with_context(|| {
                format!(
                    "no configuration: give --config FILE or set {}",
                    wi_contract::ENV_SECRETS_CONFIG
                )
            })?,
        ),
    };
    config::parse(&text).with_context(|| format!("invalid configuration in {origin}"))
}

fn syncer(common: &Common) -> anyhow::Result<Syncer> {
    let writer = AtomicWriter::new(&common.dir);
    let again = common.clone();
    Ok(Syncer::new(fetcher(common)?, writer).with_refresh(move || fetcher(&again)))
}

/// The configuration's fetcher, with a new credential from the pod's env.
fn fetcher(common: &Common) -> anyhow::Result<Fetcher> {
    let config = load_config(common)?;
    let url = vault_url(
        &config.keyvault_name,
        config.cloud_name.as_deref(),
        common.access.vault_url_template.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let cloud = wi_sdk::identity::CloudOptions {
        authority_host: None,
        extra_ca_file: common.access.ca_file.clone(),
    };
    let env = |name: &str| {
        // The class's clientID and tenantId win over the env, as in the CSI driver's Azure provider.
        match name {
            wi_contract::ENV_CLIENT_ID => config.client_id.clone().or_else(|| std::env::var(name).ok()),
            wi_contract::ENV_TENANT_ID => config.tenant_id.clone().or_else(|| std::env::var(name).ok()),
            _ => std::env::var(name).ok(),
        }
    };
    let credential = wi_sdk::identity::from_vars_with(env, &cloud).context("workload identity")?;
    let mut options = wi_sdk::identity::client_options(&cloud).context("HTTP client")?;
    // The loop retries a failed sync itself (backoff, Retry-After, a one-request probe after a 429, metrics):
    // retries inside the SDK would multiply a throttled vault's requests by the number of objects.
    options.retry = azure_core::http::RetryOptions::none();
    Ok(Fetcher::new(
        config,
        &url,
        credential,
        options,
        common.access.verify_challenge_resource,
        common.concurrency,
    )?)
}

fn init_logs(level: &str) -> anyhow::Result<()> {
    let config = LogConfig {
        format: LogFormat::Json,
        level: level.to_owned(),
    };
    Ok(wi_runtime::log::init(&config)?)
}

/// What the admin port reports: ready after the first complete sync, and the sync metrics.
struct SyncHealth {
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Health for SyncHealth {
    fn ready(&self) -> Result<(), String> {
        match self.ready.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err("no complete sync yet".to_owned()),
        }
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Once(common) => {
            init_logs(&common.log_level)?;
            let syncer = syncer(&common)?;
            let written = syncer.sync_once().await?;
            tracing::info!(?written, dir = %common.dir.display(), "sync complete");
            Ok(())
        }
        Command::Run(args) => {
            init_logs(&args.common.log_level)?;
            anyhow::ensure!(
                (0.0..1.0).contains(&args.jitter),
                "--jitter {} must be at least 0 and below 1",
                args.jitter
            );
            let syncer = Arc::new(syncer(&args.common)?);
            let health = SyncHealth {
                ready: syncer.ready(),
                metrics: syncer.metrics(),
            };
            let admin = AdminServer::start(args.admin_listen, Arc::new(health)).await?;
            let schedule = Schedule {
                interval: args.interval,
                jitter: args.jitter,
                ..Schedule::default()
            };
            syncer.run(schedule, wi_runtime::shutdown::signal()).await;
            tracing::info!("stopping");
            admin.shutdown().await.context("admin server")?;
            Ok(())
        }
    }
}
