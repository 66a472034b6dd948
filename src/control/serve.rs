//! The API's HTTP server: one task per connection, with bounds on how many connections,
//! how long a request head may take and how long a connection may sit idle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::ControlError;
use super::guard::LocalAddr;
use crate::accept::{Backoff, Throttle, is_connection_error};

/// Bounds of the API's HTTP server. All are real time.
///
/// ```
/// use std::time::Duration;
/// let limits = qqmx::control::ServeLimits::default()
///     .max_connections(64)
///     .header_read_timeout(Duration::from_secs(5));
/// assert_eq!(limits.idle_timeout, Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeLimits {
    /// How long a client may take to send a request's head, from the moment the server
    /// waits for it (on a kept-alive connection: from the end of the previous answer).
    /// Then the connection is closed.
    pub header_read_timeout: Duration,
    /// How long a connection may pass no byte either way (a client that neither sends nor
    /// reads, an event stream whose client stopped reading) before it is closed. Keep it
    /// above 15 s, the interval of an event stream's keep-alive comments, or a stream
    /// without events is closed too.
    pub idle_timeout: Duration,
    /// Connections served at once. One more is answered `503` with a JSON error and
    /// closed; while many such answers are under way, the extra ones are closed at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    /// 10 s for a request head, 60 s idle, 256 connections.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

impl ServeLimits {
    /// With `timeout` for a request head.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// With `timeout` of silence before a connection is closed.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// With at most `n` connections (at least 1).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }
}

/// `503` answers being written at once; beyond this, extra connections are closed unanswered.
const MAX_REFUSING: usize = 32;
/// How long a `503` answer may take, draining the request included.
const REFUSE_TIME: Duration = Duration::from_secs(2);
/// How long open connections may take to finish their answers after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The most one connection buffers for reading a request head, and for writing (an event
/// stream to a slow client included) before it stops producing. Above the parser's own
/// bound on a request target (64 KiB), so that a request it refuses is read whole and the
/// answer is not lost to a reset.
const MAX_BUFFER: usize = 128 * 1024;

const BUSY: &str =
    "{\"error\":\"the control API serves as many connections as it may; try again shortly\"}";

pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let local = listener.local_addr()?;
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop, stopping) = watch::channel(false);
    let mut failures = Backoff::default();
    let mut over_cap = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                failures.succeeded();
                stream
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, typically: wait for some to be freed, longer
                // each time, and say so once in a while rather than at every attempt.
                let (pause, log) = failures.failed(Instant::now());
                if let Some(repeated) = log {
                    warn!(error = %e, repeated, ?pause, "control API: accept failed; pausing");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(connection(
                    stream,
                    router.clone(),
                    limits,
                    local,
                    slot,
                    stopping.clone(),
                ));
            }
            Err(_) => {
                let answered = refusing.clone().try_acquire_owned();
                if let Some(repeated) = over_cap.hit(Instant::now()) {
                    warn!(
                        max_connections = max,
                        repeated, "control API: connection limit reached; refusing connections"
                    );
                }
                if let Ok(permit) = answered {
                    tokio::spawn(refuse(stream, permit));
                }
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    // Every connection holds a slot until it ends.
    let _all = slots
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    router: Router,
    limits: ServeLimits,
    local: SocketAddr,
    _slot: OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(LocalAddr(local));
        TowerToHyperService::new(router.clone()).call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUFFER);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    loop {
        let quiet_until = activity.last() + idle;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "control API connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(quiet_until) => {
                if activity.last() + idle <= Instant::now() {
                    debug!(?idle, "control API connection idle; closed");
                    return;
                }
            }
            changed = stopping.changed() => {
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
                return;
            }
        }
    }
}

/// Answers `503` with a JSON error, then reads what the client sent until it closes (so
/// that closing does not reset the connection before the client reads the answer).
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BUSY}",
        BUSY.len()
    );
    let _ = tokio::time::timeout(REFUSE_TIME, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

/// When a connection last moved a byte, in milliseconds from its start.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that notes when bytes move, and gives the answers the HTTP parser makes itself
/// (400, 414, 431 with no body, for a request it cannot read) a JSON error body, as every
/// other error answer has.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// A JSON answer being written in place of the parser's: its bytes, how many are
    /// written, and how many of the parser's bytes it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl Tracked {
    fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            replacing: None,
        }
    }

    /// Writes the rest of the replacement; then reports the parser's bytes written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((bytes, written, stands_for)) = self.replacing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let stands_for = *stands_for;
        self.replacing = None;
        self.activity.touch();
        Poll::Ready(Ok(stands_for))
    }
}

/// The JSON answer to put in place of `head`, when `head` is a whole answer the HTTP
/// parser made itself: a 400, 414 or 431 with no body and no type. (Every answer of the
/// router to an error has a JSON type, so none is mistaken for one.)
fn json_in_place_of(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let (line, _) = text.split_once("\r\n")?;
    let rest = line.strip_prefix("HTTP/1.1 ")?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let lower = text.to_ascii_lowercase();
    let bare = matches!(code, "400" | "414" | "431")
        && text.ends_with("\r\n\r\n")
        && lower.contains("\r\ncontent-length: 0\r\n")
        && !lower.contains("\r\ncontent-type:");
    if !bare {
        return None;
    }
    let error = format!(
        "{}: the server cannot read this request (see the limits in /openapi.json)",
        reason.to_ascii_lowercase()
    );
    let body = serde_json::json!({ "error": error }).to_string();
    Some(
        format!(
            "{line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none()
            && let Some(json) = json_in_place_of(buf)
        {
            self.replacing = Some((json, 0, buf.len()));
        }
        if self.replacing.is_some() {
            return self.poll_replacement(cx);
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            let mut parts = bufs.iter().filter(|b| !b.is_empty());
            if let (Some(only), None) = (parts.next(), parts.next())
                && let Some(json) = json_in_place_of(only)
            {
                self.replacing = Some((json, 0, only.len()));
            }
        }
        if self.replacing.is_some() {
            return self.poll_replacement(cx);
        }
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parsers_own_errors_become_json() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let json = String::from_utf8(json_in_place_of(bare).expect("replaced")).expect("text");
        assert!(json.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(json.contains("content-type: application/json\r\n"));
        let body: serde_json::Value =
            serde_json::from_str(json.split("\r\n\r\n").nth(1).expect("a body")).expect("JSON");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("request header fields too large"))
        );
        // The router's own answers are left alone.
        let routed = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(json_in_place_of(routed).is_none());
        assert!(json_in_place_of(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            json_in_place_of(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{").is_none()
        );
    }

    #[test]
    fn activity_moves_with_bytes() {
        let activity = Activity::new();
        assert_eq!(activity.last(), activity.start);
        std::thread::sleep(Duration::from_millis(5));
        activity.touch();
        assert!(activity.last() > activity.start);
    }
}
