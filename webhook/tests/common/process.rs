//! `wi-webhook` as a process, started the way users start it: the built binary, its own `main`, default logging.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// The binary under test: `WI_WEBHOOK_BINARY` when set (the test command points it at the release build, as
/// shipped), else the one cargo built for these tests.
pub fn webhook_binary() -> PathBuf {
    std::env::var_os("WI_WEBHOOK_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wi-webhook")))
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `wi-webhook`; killed when dropped. Its standard error goes to a file, read with [`log`](Self::log).
pub struct WebhookProcess {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl WebhookProcess {
    /// Starts `binary` with exactly `args` and `env` (nothing inherited), standard error to `log`.
    pub fn spawn(binary: &Path, args: &[String], env: &[(String, String)], log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        WebhookProcess {
            child,
            log: log.to_owned(),
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/readyz` every 50 ms until it answers 200; returns the time since the start. Fails with the log when
    /// the process exits or `limit` passes.
    pub async fn wait_ready(&mut self, admin: SocketAddr, limit: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + limit;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "wi-webhook exited ({status}) before it was ready:\n{}",
                    self.log()
                ));
            }
            match http_get(admin, "/readyz").await {
                Some((StatusCode::OK, _)) => return Ok(self.started.elapsed()),
                other => last = other,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "wi-webhook not ready after {limit:?} (last /readyz: {last:?}):\n{}",
            self.log()
        ))
    }

    /// Sends SIGTERM and waits at most `limit` for the exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wi-webhook still running {limit:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-HTTP GET on the admin port; `None` when nothing answers within 2 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(StatusCode, String)> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.ok()?;
        tokio::spawn(conn);
        let request = Request::builder()
            .uri(path)
            .header("host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Prints a figure of a test on standard error, past libtest's capture (which takes only `print!`/`eprint!`), so
/// that the test command's output carries it.
pub fn report(test: &str, line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "   {test}: {line}");
}
