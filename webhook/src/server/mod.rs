//! `wi-webhook serve`: the HTTPS admission endpoint and the admin port.
//!
//! The admission requests go to [`crate::admission::router`] (parse the AdmissionReview, look up what the pod refers
//! to, call the pure engine, answer); this module serves it over TLS beside the admin port.
//! The server loads its certificate before it listens (a bad certificate stops it at start), reloads it when the
//! files change, and on SIGTERM or SIGINT turns unready, keeps serving for `--shutdown-delay` while endpoints
//! update, stops accepting and drains in-flight requests for at most `--shutdown-grace`.

pub mod certs;
mod idle;

pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Admission, Limits};
use crate::config::Config;
use crate::lookup::{KubeLookup, Lookup};
use crate::metrics::{self, Metrics};
use certs::{CertConfig, CertManager, CertMode};
use tls::{CertStore, TlsVersion};
use wi_runtime::admin::{AdminServer, Health};
use wi_runtime::log::LogConfig;

/// What `wi-webhook serve` runs with: its flags, each with a `WI_*` environment variable twin. The doc comments are
/// their `--help`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address of the HTTPS admission endpoint (paths /mutate-v1-pod and /mutate).
    #[arg(long, env = "WI_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP admin endpoint: /healthz, /readyz, /metrics.
    #[arg(long, env = "WI_ADMIN_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:9440")]
    pub admin_listen: SocketAddr,

    /// PEM certificate chain served, leaf first. Reloaded when it changes (a Secret volume's ..data swap included).
    #[arg(
        long,
        env = "WI_TLS_CERT_FILE",
        value_name = "FILE",
        default_value = "/etc/wi-webhook/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,

    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "WI_TLS_KEY_FILE",
        value_name = "FILE",
        default_value = "/etc/wi-webhook/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,

    /// Lowest TLS version accepted.
    #[arg(
        long,
        env = "WI_TLS_MIN_VERSION",
        value_name = "VERSION",
        value_enum,
        default_value = "1.2"
    )]
    pub tls_min_version: TlsVersion,

    /// How often the certificate files are read again even without a change notification.
    #[arg(long, env = "WI_TLS_POLL_INTERVAL", value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub tls_poll_interval: Duration,

    /// Largest AdmissionReview body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "WI_MAX_BODY_BYTES", value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Time allowed to answer one request before 408 (the API server waits at most the webhook's timeoutSeconds);
    /// a live read of the Kubernetes API (a cache miss) gets half of it, then the admission answers 500;
    /// also the time a client has to send its request headers, and an HTTP/2 client to answer a ping, before its
    /// connection is closed; a connection that carries no byte for twice this time is closed.
    #[arg(long, env = "WI_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// After SIGTERM, how long the server stays up, unready, so that endpoints stop sending to it.
    #[arg(long, env = "WI_SHUTDOWN_DELAY", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// After the delay, how long in-flight requests may take to finish before the server exits anyway.
    #[arg(long, env = "WI_SHUTDOWN_GRACE", value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Where the serving certificate comes from.
    #[command(flatten)]
    pub certs: CertConfig,

    /// The mutation engine's settings.
    #[command(flatten)]
    pub engine: Config,

    /// Logging.
    #[command(flatten)]
    pub log: LogConfig,
}

/// What the admin endpoints report on.
struct AdminState {
    lookup: Arc<dyn Lookup>,
    /// The served certificate, once there is one (self-managed: after the Secret and caBundle are set up).
    certs: std::sync::OnceLock<Arc<CertStore>>,
    /// Whether the API server trusts the served certificate (always true for certificate files).
    trusted: Arc<AtomicBool>,
    /// Whether the admission port is accepting connections.
    accepting: AtomicBool,
    metrics: Arc<Metrics>,
    shutting_down: Arc<AtomicBool>,
}

/// The admin endpoint (`/healthz`, `/readyz`, `/metrics`, served by [`wi_runtime::admin`]), serving from the moment
/// it is started until the webhook stops: started first, so that probes get an answer (live, not ready) while the
/// serving certificate is being set up, however slow the API server.
pub struct Admin {
    state: Arc<AdminState>,
    server: AdminServer,
}

impl Admin {
    /// Binds `listen` and serves; `trusted` is the readiness flag of the certificate (true for files).
    pub async fn start(listen: SocketAddr, lookup: Arc<dyn Lookup>, trusted: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let state = Arc::new(AdminState {
            lookup,
            certs: std::sync::OnceLock::new(),
            trusted,
            accepting: AtomicBool::new(false),
            metrics: Arc::new(Metrics::default()),
            shutting_down: Arc::new(AtomicBool::new(false)),
        });
        let server = AdminServer::start(listen, state.clone()).await?;
        Ok(Admin { state, server })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops serving and waits for the server task.
    async fn shutdown(self) -> anyhow::Result<()> {
        self.server.shutdown().await.context("admin server")
    }
}

/// A webhook bound to its ports with its certificate loaded, ready to [`run`](Webhook::run).
pub struct Webhook {
    admission: TcpListener,
    admin: Admin,
    acceptor: TlsAcceptor,
    app: Router,
    certs: Arc<CertStore>,
    manager: Option<Arc<CertManager>>,
    metrics: Arc<Metrics>,
    shutting_down: Arc<AtomicBool>,
    args: ServeConfig,
}

impl Webhook {
    /// Loads the certificate files and binds both ports. Fails, saying why, on a bad certificate or a busy port.
    pub async fn bind(
        args: ServeConfig,
        lookup: Arc<dyn Lookup>,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        check_tenant(&args)?;
        let certs = CertStore::load(&args.tls_cert_file, &args.tls_key_file, provider.clone())
            .context("cannot load the serving certificate")?;
        Self::bind_with(args, lookup, provider, certs, None, None).await
    }

    /// Binds the admission port to serve `certs`, and the admin port unless `admin` already serves it; with a
    /// `manager`, the certificate is self-managed (it keeps `certs` up to date, and readiness waits for the caBundle
    /// to trust it).
    pub async fn bind_with(
        args: ServeConfig,
        lookup: Arc<dyn Lookup>,
        provider: Arc<CryptoProvider>,
        certs: Arc<CertStore>,
        manager: Option<Arc<CertManager>>,
        admin: Option<Admin>,
    ) -> anyhow::Result<Self> {
        check_tenant(&args)?;
        let tls = tls::server_config(certs.clone(), args.tls_min_version, provider)?;
        let admission = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let admin = match admin {
            Some(admin) => admin,
            None => {
                let trusted = manager
                    .as_ref()
                    .map_or_else(|| Arc::new(AtomicBool::new(true)), |m| m.trusted_flag());
                Admin::start(args.admin_listen, lookup.clone(), trusted).await?
            }
        };
        let _ = admin.state.certs.set(certs.clone());
        let metrics = admin.state.metrics.clone();
        metrics.certificate_expiry.set(certs.not_after());
        let shutting_down = admin.state.shutting_down.clone();

        let app = admission::router(
            Admission {
                lookup: lookup.clone(),
                config: args.engine.clone(),
                metrics: metrics.clone(),
            },
            Limits {
                max_body_bytes: args.max_body_bytes,
                request_timeout: args.request_timeout,
            },
        );
        Ok(Webhook {
            admission,
            admin,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            app,
            certs,
            manager,
            metrics,
            shutting_down,
            args,
        })
    }

    /// Where the HTTPS admission endpoint listens.
    pub fn admission_addr(&self) -> std::io::Result<SocketAddr> {
        self.admission.local_addr()
    }

    /// Where the admin endpoint listens.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.admin.addr())
    }

    /// The certificate store, to follow reloads.
    pub fn certificates(&self) -> Arc<CertStore> {
        self.certs.clone()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully (see the module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Webhook {
            admission,
            admin,
            acceptor,
            app,
            certs,
            manager,
            metrics,
            shutting_down,
            args,
        } = self;
        let cert_watch = match manager {
            Some(manager) => tokio::spawn(manager.run(certs, metrics)),
            None => tokio::spawn(tls::watch(certs, metrics, args.tls_poll_interval)),
        };
        admin.state.accepting.store(true, Ordering::Release);
        tracing::info!(
            listen = %admission.local_addr()?,
            admin = %admin.addr(),
            "serving admission requests"
        );

        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client must send its request headers within the request timeout: without a timer hyper has no header
        // timeout at all, and a client sending a header line a second held its connection forever. An HTTP/2
        // connection that stops answering pings is closed the same way.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(args.request_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(args.request_timeout))
            .keep_alive_timeout(args.request_timeout);
        let delayed_shutdown = {
            let shutting_down = shutting_down.clone();
            let delay = args.shutdown_delay;
            async move {
                shutdown.await;
                shutting_down.store(true, Ordering::Release);
                tracing::info!(delay = ?delay, "shutting down: unready, still serving during the delay");
                tokio::time::sleep(delay).await;
            }
        };
        tokio::pin!(delayed_shutdown);
        loop {
            tokio::select! {
                accepted = admission.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(conn) => conn,
                        Err(error) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let acceptor = acceptor.clone();
                    let service = TowerToHyperService::new(app.clone());
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    let handshake_timeout = args.request_timeout;
                    // A connection that carries no byte for twice the request timeout is closed: by then any
                    // request on it has been answered (or timed out), and hyper's header timeout does not cover a
                    // client that never starts a request.
                    let idle_limit = args.request_timeout.saturating_mul(2);
                    let activity = idle::Activity::new();
                    let tcp = idle::Tracked::new(tcp, activity.clone());
                    tokio::spawn(async move {
                        let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), service).into_owned();
                        tokio::select! {
                            ended = watcher.watch(conn) => {
                                if let Err(error) = ended {
                                    tracing::debug!(%peer, %error, "connection ended with an error");
                                }
                            }
                            () = activity.idle(idle_limit) => {
                                tracing::debug!(%peer, idle = ?idle_limit, "closed an idle connection");
                            }
                        }
                    });
                }
                () = &mut delayed_shutdown => break,
            }
        }
        drop(admission);
        tracing::info!(grace = ?args.shutdown_grace, "stopped accepting; draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("drained"),
            () = tokio::time::sleep(args.shutdown_grace) => {
                tracing::warn!("grace period over with requests still in flight; exiting");
            }
        }
        cert_watch.abort();
        admin.shutdown().await
    }
}

/// `wi-webhook serve`: connects to Kubernetes (KUBECONFIG or in-cluster), starts the caches, serves until a signal.
pub async fn serve(args: ServeConfig, provider: Arc<CryptoProvider>) -> anyhow::Result<()> {
    args.certs.check().map_err(anyhow::Error::msg)?;
    wi_runtime::log::init(&args.log)?;
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (KUBECONFIG or in-cluster service account)")?;
    let (lookup, driver) = KubeLookup::start(client.clone());
    // A live read (a cache miss) gets half the request's time, so that a slow API server gives a 500 that names
    // the object rather than the request's 408.
    let lookup = lookup.with_live_timeout(args.request_timeout / 2);
    tokio::spawn(driver);
    let lookup: Arc<dyn Lookup> = Arc::new(lookup);
    let webhook = match args.certs.cert_mode {
        CertMode::Files => Webhook::bind(args, lookup, provider).await?,
        CertMode::SelfManaged => {
            check_tenant(&args)?;
            let manager = Arc::new(CertManager::new(client, args.certs.clone()));
            // Probes get answers while the Secret and caBundle are set up: live, not ready.
            let admin = Admin::start(args.admin_listen, lookup.clone(), manager.trusted_flag()).await?;
            tracing::info!(admin = %admin.addr(), "setting up the self-managed serving certificate");
            let certs = manager
                .initial(provider.clone())
                .await
                .context("cannot set up self-managed certificates")?;
            Webhook::bind_with(args, lookup, provider, certs, Some(manager), Some(admin)).await?
        }
    };
    webhook.run(wi_runtime::shutdown::signal()).await
}

/// The tenant is required to serve, and a tenant id is a UUID: a placeholder left in a manifest stops the server
/// with this message instead of injecting it into every pod.
fn check_tenant(args: &ServeConfig) -> anyhow::Result<()> {
    let tenant = args.engine.tenant_id.as_deref().map(str::trim).unwrap_or_default();
    anyhow::ensure!(!tenant.is_empty(), "--tenant-id (or WI_TENANT_ID) is required to serve");
    anyhow::ensure!(
        uuid::Uuid::try_parse(tenant).is_ok(),
        "--tenant-id {tenant:?} is not a tenant id (a UUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47)"
    );
    Ok(())
}

impl Health for AdminState {
    fn ready(&self) -> Result<(), String> {
        let not_ready = if self.shutting_down.load(Ordering::Acquire) {
            "shutting down"
        } else if self.certs.get().is_none() {
            "setting up the serving certificate (the Secret and the caBundle)"
        } else if !self.accepting.load(Ordering::Acquire) {
            "not accepting admission requests yet"
        } else if !self.lookup.is_ready() {
            "caches not synced yet"
        } else if !self.trusted.load(Ordering::Acquire) {
            "the served certificate is not trusted by the webhook configuration's caBundle yet"
        } else {
            return Ok(());
        };
        Err(not_ready.to_owned())
    }

    fn metrics(&self) -> String {
        for (kind, count) in self.lookup.cached() {
            self.metrics
                .cached_objects
                .get_or_create(&metrics::CacheLabels { kind })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if let Some(certs) = self.certs.get() {
            self.metrics.certificate_expiry.set(certs.not_after());
        }
        self.metrics.encode()
    }
}
