//! Closing connections that carry no bytes at all for a while. hyper's HTTP/1 header timeout starts with the first
//! byte of a request, so a client that completes the TLS handshake and then sends nothing held its connection (and a
//! file descriptor, and its TLS buffers) forever: 10,000 of them stayed open. The TCP stream is wrapped to note the
//! time of its last byte in or out; the connection's task ends once that is older than the limit.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When a connection last carried a byte, shared between its stream and its task.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    since: Instant,
    /// Milliseconds after `since`.
    last: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            since: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Time since the last byte.
    pub(crate) fn idle_for(&self) -> Duration {
        self.since
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Completes once no byte has passed for `limit`.
    pub(crate) async fn idle(&self, limit: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// A stream that notes its traffic in an [`Activity`].
#[derive(Debug)]
pub(crate) struct Tracked<IO> {
    io: IO,
    activity: Activity,
}

impl<IO> Tracked<IO> {
    pub(crate) fn new(io: IO, activity: Activity) -> Self {
        Tracked { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn traffic_in_either_direction_postpones_idleness() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut server = Tracked::new(server, activity.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(activity.idle_for() >= Duration::from_millis(200));
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        assert!(activity.idle_for() < Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.write_all(b"y").await.unwrap();
        assert!(activity.idle_for() < Duration::from_millis(100));
        let started = Instant::now();
        activity.idle(Duration::from_millis(300)).await;
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(activity.idle_for() >= Duration::from_millis(300));
    }
}
