//! `serve`'s HTTP/1 server for the axum router, made to outlast slow and
//! hostile clients (issue 18): a connection must send a complete request head
//! within the header timeout and is closed after the idle timeout between
//! requests (`activity.rs`); at most `max_connections` are served at once,
//! and past that a new one gets a fixed `503` and is closed; accept errors
//! (out of descriptors) are waited out, never fatal. Each request carries
//! the socket peer as `ConnectInfo<SocketAddr>` (the per-address limit of
//! `POST /api/v1/auth`), as `into_make_service_with_connect_info` gave it.

mod activity;

use activity::{Activity, ResponseDone, Watched};
use axum::extract::ConnectInfo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service as _;

/// `serve --header-timeout/--idle-timeout/--max-connections`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A request head must be complete within this of the connection's start
    /// (or of the first byte after an idle spell).
    pub header_timeout: Duration,
    /// A connection without a request in progress is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once; `None`: derived from the descriptor limit.
    pub max_connections: Option<usize>,
}

/// Descriptors kept for everything but HTTP connections: the database,
/// directory connections (sync, password checks), SMTP, DNS, logs.
const RESERVED_DESCRIPTORS: u64 = 256;
/// The default cap, however many descriptors there are: an MFA portal and
/// API has far fewer clients, and each connection may buffer `MAX_BUF`.
const DEFAULT_MAX_CONNECTIONS: u64 = 1024;
/// Largest read buffer of a connection, and so the largest request head.
const MAX_BUF: usize = 64 * 1024;
/// Connections being refused (503 written, the client's close awaited) at
/// once; past that a refused connection is closed without an answer.
const REFUSING: usize = 64;
/// How long a refused connection is kept for the client to read the 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// The pause after an accept error such as EMFILE before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per this about refused connections or accept errors.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The answer past the connection cap, written without reading the request.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 21\r\n\
Retry-After: 1\r\n\
Connection: close\r\n\
\r\n\
too many connections\n";

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit
/// now in force (`None` when it cannot be read).
pub fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!("cannot raise the open files limit (RLIMIT_NOFILE): {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The default connection cap for a soft descriptor limit: 1,024, or fewer
/// so that `RESERVED_DESCRIPTORS` (at most half of the limit) stay free.
pub fn default_max_connections(descriptors: Option<u64>) -> usize {
    let Some(limit) = descriptors else {
        return DEFAULT_MAX_CONNECTIONS as usize;
    };
    let free = limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(limit / 2)
        .max(1);
    usize::try_from(free.min(DEFAULT_MAX_CONNECTIONS)).unwrap_or(1)
}

impl Options {
    /// The connection cap: `max_connections`, or the default for the soft
    /// descriptor limit (see `default_max_connections`).
    pub fn connection_cap(&self, descriptors: Option<u64>) -> usize {
        let cap = self
            .max_connections
            .unwrap_or_else(|| default_max_connections(descriptors));
        if let Some(limit) = descriptors {
            if cap as u64 + RESERVED_DESCRIPTORS > limit {
                tracing::warn!(
                    "--max-connections {cap} leaves fewer than {RESERVED_DESCRIPTORS} of the \
                     {limit} open files allowed (RLIMIT_NOFILE) for the database and the directory"
                );
            }
        }
        cap
    }
}

/// Serves `app` on `listener`, at most `cap` connections at once, until the
/// task is dropped.
pub async fn serve(listener: TcpListener, app: axum::Router, options: Options, cap: usize) {
    let slots = Arc::new(Semaphore::new(cap));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let mut refused = Throttled::default();
    let mut failed = Throttled::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // the client gave up before we took it: nothing to wait for
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ...: descriptors or memory come back
                // as connections close; the pending ones wait in the backlog
                failed.warn(|n| {
                    tracing::warn!("cannot accept connections ({n} times): {e}; retrying")
                });
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(connection(stream, peer, app.clone(), options, slot));
            }
            Err(_) => {
                refused.warn(|n| {
                    tracing::warn!(
                        "{cap} connections open (serve --max-connections): {n} refused with 503"
                    )
                });
                refuse(stream, &refusing);
            }
        }
    }
}

/// One connection, served until it closes or overstays a phase.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    options: Options,
    _slot: OwnedSemaphorePermit,
) {
    let (activity, watchdog) = Activity::start(options.header_timeout, options.idle_timeout);
    let io = hyper_util::rt::TokioIo::new(Watched::new(stream, activity.clone()));
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let done = activity.request_started();
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = app.clone().call(request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _done: done }))
            }
        });
    let mut http = hyper::server::conn::http1::Builder::new();
    // the watchdog keeps time: hyper's own header timer would also end idle
    // keep-alive connections at the header timeout
    http.header_read_timeout(None).max_buf_size(MAX_BUF);
    let served = http.serve_connection(io, service);
    tokio::select! {
        r = served => if let Err(e) = r {
            tracing::debug!(%peer, "connection ended: {e}");
        },
        phase = watchdog.expired() => {
            tracing::debug!(%peer, "connection closed: {}", phase.describe());
        }
    }
}

/// Writes the 503 and closes; the client's close is awaited briefly, so that
/// request bytes left unread do not turn the close into a reset that would
/// discard the answer. Past `REFUSING` such connections, closes at once.
fn refuse(mut stream: TcpStream, refusing: &Arc<Semaphore>) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(BUSY).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 2048];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Counts events and lets one warning through per `WARN_EVERY`.
#[derive(Default)]
struct Throttled {
    count: u64,
    last: Option<Instant>,
}

impl Throttled {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        let due = match self.last {
            Some(t) => t.elapsed() >= WARN_EVERY,
            None => true,
        };
        if due {
            log(self.count);
            self.count = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// A response body that releases its `ResponseDone` when hyper drops it
/// (written to the end, or the connection gone): otherwise the body as is.
struct Tracked<B> {
    body: B,
    _done: ResponseDone,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_descriptors_for_the_rest() {
        // systemd's default soft limit before serve raises it, and after
        assert_eq!(default_max_connections(Some(1024)), 768);
        assert_eq!(default_max_connections(Some(524_288)), 1024);
        assert_eq!(default_max_connections(Some(1280)), 1024);
        // a small limit: half of it
        assert_eq!(default_max_connections(Some(300)), 150);
        assert_eq!(default_max_connections(Some(1)), 1);
        assert_eq!(default_max_connections(None), 1024);
    }

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(BUSY).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
    }
}
