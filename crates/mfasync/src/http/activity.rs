//! What one HTTP connection is doing, and until when it may go on doing it:
//! the header-read and idle keep-alive timeouts of `serve` (issue 18).
//!
//! A connection waits for a request head (which must be complete within the
//! header timeout of the connection's start, or of the first byte after an
//! idle spell), is busy while requests are served (no limit: handlers and
//! response writing), and idles between requests (closed after the idle
//! timeout unless a byte arrives). The socket (`Watched`), the service (a
//! request started, its response dropped) and the watchdog share one `Activity`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a connection is in its life. Pure: every change takes `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request head, which must be complete by this instant.
    Head(Instant),
    /// Serving this many requests whose responses are not written yet.
    Busy(usize),
    /// Between requests: closed at this instant unless a byte arrives first.
    Idle(Instant),
}

impl Phase {
    /// When the connection is closed if it is still in this phase.
    pub fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Head(at) | Phase::Idle(at) => Some(at),
            Phase::Busy(_) => None,
        }
    }

    /// A request head was read whole and is handed to the router.
    pub fn request_started(self) -> Phase {
        match self {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        }
    }

    /// A response was written (or given up): idle once none is left.
    pub fn response_done(self, now: Instant, idle: Duration) -> Phase {
        match self {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(now + idle),
        }
    }

    /// Bytes arrived: an idle connection starts a request head, whose
    /// deadline then runs. A deadline never moves for bytes (a client
    /// trickling a head byte by byte is not given more time).
    pub fn bytes_arrived(self, now: Instant, header: Duration) -> Phase {
        match self {
            Phase::Idle(_) => Phase::Head(now + header),
            other => other,
        }
    }

    /// What a connection closed in this phase was doing, for the log.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Head(_) => "no complete request head within the header timeout",
            Phase::Busy(_) => "busy",
            Phase::Idle(_) => "idle past the idle timeout",
        }
    }
}

/// One connection's phase, shared by its socket, its service and its watchdog.
#[derive(Clone)]
pub struct Activity {
    phase: Arc<watch::Sender<Phase>>,
    header: Duration,
    idle: Duration,
}

/// Released when a response is done with (written, or dropped with the
/// connection): the connection may then go idle.
pub struct ResponseDone(Activity);

impl Drop for ResponseDone {
    fn drop(&mut self) {
        let idle = self.0.idle;
        self.0
            .phase
            .send_modify(|p| *p = p.response_done(Instant::now(), idle));
    }
}

impl Activity {
    /// A connection accepted now: its first request head is due within `header`.
    pub fn start(header: Duration, idle: Duration) -> (Activity, Watchdog) {
        let (tx, rx) = watch::channel(Phase::Head(Instant::now() + header));
        let activity = Activity {
            phase: Arc::new(tx),
            header,
            idle,
        };
        (activity, Watchdog { phase: rx })
    }

    /// A request reached the router; keep the guard until its response is done.
    pub fn request_started(&self) -> ResponseDone {
        self.phase.send_modify(|p| *p = p.request_started());
        ResponseDone(self.clone())
    }

    fn bytes_arrived(&self) {
        let header = self.header;
        self.phase.send_if_modified(|p| {
            let next = p.bytes_arrived(Instant::now(), header);
            let changed = next != *p;
            *p = next;
            changed
        });
    }
}

/// Resolves when its connection stays in a phase past that phase's deadline.
pub struct Watchdog {
    phase: watch::Receiver<Phase>,
}

impl Watchdog {
    /// The phase the connection overstayed; never resolves while it keeps
    /// within its deadlines (or once nothing can change its phase any more).
    pub async fn expired(mut self) -> Phase {
        loop {
            let phase = *self.phase.borrow_and_update();
            let changed = match phase.deadline() {
                None => self.phase.changed().await,
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => match self.phase.has_changed() {
                        Ok(false) => return phase,
                        other => other.map(|_| ()),
                    },
                    r = self.phase.changed() => r,
                },
            };
            if changed.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// A socket that tells its `Activity` when bytes arrive.
pub struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Activity) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_connection_goes_head_busy_idle_head() {
        let t0 = Instant::now();
        let head = Phase::Head(t0 + HEADER);
        assert_eq!(head.deadline(), Some(t0 + HEADER));
        // bytes of the head do not move its deadline
        let t1 = t0 + Duration::from_secs(9);
        assert_eq!(head.bytes_arrived(t1, HEADER), head);
        // a request being served has no deadline, whatever arrives meanwhile
        let busy = head.request_started();
        assert_eq!(busy, Phase::Busy(1));
        assert_eq!(busy.deadline(), None);
        assert_eq!(busy.bytes_arrived(t1, HEADER), busy);
        // its response done: idle for IDLE from then
        let idle = busy.response_done(t1, IDLE);
        assert_eq!(idle, Phase::Idle(t1 + IDLE));
        // the next request's first byte: its head is due HEADER later
        let t2 = t1 + Duration::from_secs(30);
        assert_eq!(idle.bytes_arrived(t2, HEADER), Phase::Head(t2 + HEADER));
        // a pipelined head already read goes straight from idle to busy
        assert_eq!(idle.request_started(), Phase::Busy(1));
    }

    #[test]
    fn idle_only_once_every_response_is_done() {
        let t0 = Instant::now();
        let two = Phase::Busy(1).request_started();
        assert_eq!(two, Phase::Busy(2));
        assert_eq!(two.response_done(t0, IDLE), Phase::Busy(1));
        assert_eq!(
            two.response_done(t0, IDLE).response_done(t0, IDLE),
            Phase::Idle(t0 + IDLE)
        );
    }
}
