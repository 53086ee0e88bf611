//! `wi-webhook serve`: the HTTPS admission endpoint and the admin port.
//!
//! The admission requests go to [`crate::admission::router`] (parse the AdmissionReview, look up what the pod refers
//! to, call the pure engine, answer); this module serves it over TLS beside the admin port.
//! The server loads its certificate before it listens (a bad certificate stops it at start), reloads it when the
//! files change, and on SIGTERM or SIGINT turns unready, keeps serving for `--shutdown-delay` while endpoints
//! update, stops accepting and drains in-flight requests for at most `--shutdown-grace`.

pub mod certs;
pub mod metrics;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Admission, Limits};
use crate::config::Config;
use crate::lookup::{KubeLookup, Lookup};
use crate::telemetry::LogConfig;
use certs::{CertConfig, CertManager, CertMode};
use metrics::Metrics;
use tls::{CertStore, TlsVersion};

/// What `wi-webhook serve` runs with (its flags, read by `wi_webhook::cli`).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address of the HTTPS admission endpoint (paths /mutate-v1-pod and /mutate).
    pub listen: SocketAddr,

    /// Address of the plain-HTTP admin endpoint: /healthz, /readyz, /metrics.
    pub admin_listen: SocketAddr,

    /// PEM certificate chain served, leaf first. Reloaded when it changes (a Secret volume's ..data swap included).
    pub tls_cert_file: PathBuf,

    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: PathBuf,

    /// Lowest TLS version accepted.
    pub tls_min_version: TlsVersion,

    /// How often the certificate files are read again even without a change notification.
    pub tls_poll_interval: Duration,

    /// Largest AdmissionReview body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,

    /// Time allowed to answer one request before 408 (the API server waits at most the webhook's timeoutSeconds).
    pub request_timeout: Duration,

    /// After SIGTERM, how long the server stays up, unready, so that endpoints stop sending to it.
    pub shutdown_delay: Duration,

    /// After the delay, how long in-flight requests may take to finish before the server exits anyway.
    pub shutdown_grace: Duration,

    /// Where the serving certificate comes from.
    pub certs: CertConfig,

    /// The mutation engine's settings.
    pub engine: Config,

    /// Logging.
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

/// The admin endpoint (`/healthz`, `/readyz`, `/metrics`), serving from the moment it is started until the webhook
/// stops: started first, so that probes get an answer (live, not ready) while the serving certificate is being set
/// up, however slow the API server.
pub struct Admin {
    state: Arc<AdminState>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Admin {
    /// Binds `listen` and serves; `trusted` is the readiness flag of the certificate (true for files).
    pub async fn start(listen: SocketAddr, lookup: Arc<dyn Lookup>, trusted: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AdminState {
            lookup,
            certs: std::sync::OnceLock::new(),
            trusted,
            accepting: AtomicBool::new(false),
            metrics: Arc::new(Metrics::default()),
            shutting_down: Arc::new(AtomicBool::new(false)),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = admin_router(state.clone());
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            axum::serve(listener, app).with_graceful_shutdown(stopped).await
        });
        Ok(Admin {
            state,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the server task.
    async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.context("admin server task")?.context("admin server")?;
        }
        Ok(())
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        // A webhook that failed to start: stop answering probes.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
        let builder = auto::Builder::new(TokioExecutor::new());
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
                        if let Err(error) = watcher.watch(conn).await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
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

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            futures::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                futures::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// `wi-webhook serve`: connects to Kubernetes (KUBECONFIG or in-cluster), starts the caches, serves until a signal.
pub async fn serve(args: ServeConfig, provider: Arc<CryptoProvider>) -> anyhow::Result<()> {
    args.certs.check().map_err(anyhow::Error::msg)?;
    crate::telemetry::init(&args.log)?;
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (KUBECONFIG or in-cluster service account)")?;
    let (lookup, driver) = KubeLookup::start(client.clone());
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
    webhook.run(shutdown_signal()).await
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

fn admin_router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    if state.shutting_down.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else if state.certs.get().is_none() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "setting up the serving certificate (the Secret and the caBundle)",
        )
            .into_response()
    } else if !state.accepting.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "not accepting admission requests yet").into_response()
    } else if !state.lookup.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet").into_response()
    } else if !state.trusted.load(Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the served certificate is not trusted by the webhook configuration's caBundle yet",
        )
            .into_response()
    } else {
        "ok".into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> Response {
    for (kind, count) in state.lookup.cached() {
        state
            .metrics
            .cached_objects
            .get_or_create(&metrics::CacheLabels { kind })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    if let Some(certs) = state.certs.get() {
        state.metrics.certificate_expiry.set(certs.not_after());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
