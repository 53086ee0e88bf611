//! The admin server of every binary: plain HTTP, `/healthz` (the process answers), `/readyz` (200, or 503 with the
//! reason) and `/metrics` (OpenMetrics text). It serves from the moment it is started, so that probes get an answer
//! (live, not ready) however long the process takes to become ready.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use tokio::net::TcpListener;

/// What the admin endpoints report on.
pub trait Health: Send + Sync + 'static {
    /// `Ok` when ready; otherwise why not, in a few words (the body of the 503).
    fn ready(&self) -> Result<(), String>;

    /// The metrics, in the OpenMetrics text format `prometheus-client` encodes.
    fn metrics(&self) -> String;
}

/// The admin server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A running admin server; it stops when [`AdminServer::shutdown`] is called or it is dropped.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl AdminServer {
    /// Binds `listen` and serves `health` on a task of the current runtime.
    pub async fn start(listen: SocketAddr, health: Arc<dyn Health>) -> Result<Self, BindError> {
        let bind_error = |source| BindError { addr: listen, source };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(health);
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            axum::serve(listener, app).with_graceful_shutdown(stopped).await
        });
        Ok(AdminServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Where it listens (the port chosen when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (requests in flight finish) and waits for the server task.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        // A process that failed to start: stop answering probes.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The admin routes, for a server of the caller's (and for tests with `oneshot`).
pub fn router(health: Arc<dyn Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<dyn Health>>) -> Response {
    match health.ready() {
        Ok(()) => "ok".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn metrics(State(health): State<Arc<dyn Health>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Flag(AtomicBool);

    impl Health for Flag {
        fn ready(&self) -> Result<(), String> {
            match self.0.load(Ordering::Acquire) {
                true => Ok(()),
                false => Err("no complete sync yet".to_owned()),
            }
        }
        fn metrics(&self) -> String {
            "# EOF\n".to_owned()
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_say_why_not_ready_and_the_port_closes_on_shutdown() {
        let health = Arc::new(Flag(AtomicBool::new(false)));
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), health.clone())
            .await
            .unwrap();
        let addr = server.addr();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.ends_with("no complete sync yet"), "{not_ready}");
        health.0.store(true, Ordering::Release);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(
            metrics.contains("application/openmetrics-text") && metrics.ends_with("# EOF\n"),
            "{metrics}"
        );
        server.shutdown().await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_busy_port_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = AdminServer::start(addr, Arc::new(Flag(AtomicBool::new(true))))
            .await
            .err()
            .unwrap();
        assert!(
            error.to_string().starts_with(&format!("cannot listen on {addr}: ")),
            "{error}"
        );
    }
}
