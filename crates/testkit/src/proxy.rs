//! A TCP proxy on 127.0.0.1 that the test controls: it forwards bytes to a
//! real server (slapd) and can be paused and resumed, or set to pause by
//! itself once a given number of bytes went from the server to the clients.
//! Tests use it to hold a sync cycle mid-read for as long as they need (then
//! kill or freeze the process reading), instead of hoping the cycle is slow.
//!
//! Each connection is two threads (one per direction); a paused proxy stops
//! forwarding in both directions on every connection, and accepts new
//! connections but forwards nothing on them until resumed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Gate {
    paused: bool,
    /// Pause by itself once `down` reaches this many bytes.
    pause_at: Option<u64>,
}

#[derive(Default)]
struct Shared {
    gate: Mutex<Gate>,
    changed: Condvar,
    /// Bytes forwarded from the server to the clients.
    down: AtomicU64,
    /// Bytes forwarded from the clients to the server.
    up: AtomicU64,
    connections: AtomicU64,
    stop: AtomicBool,
    /// The client side of every connection accepted (for `close_all`).
    clients: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Block while paused (or until the proxy stops).
    fn wait_open(&self) {
        let mut g = self.gate();
        while g.paused && !self.stop.load(Ordering::SeqCst) {
            g = self
                .changed
                .wait_timeout(g, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// How many of `n` bytes going down may be forwarded now; pauses the
    /// proxy when the `pause_at` mark is reached (the rest waits for `resume`).
    fn allow_down(&self, n: u64) -> u64 {
        let mut g = self.gate();
        let Some(mark) = g.pause_at else { return n };
        let sent = self.down.load(Ordering::SeqCst);
        if sent + n < mark {
            return n;
        }
        g.paused = true;
        g.pause_at = None;
        self.changed.notify_all();
        mark.saturating_sub(sent)
    }
}

/// A pausable TCP proxy to `upstream` (stopped on drop).
pub struct Proxy {
    /// `127.0.0.1:PORT` the clients connect to.
    pub addr: String,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listen on a free loopback port and forward every connection to
    /// `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("testkit proxy: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("testkit proxy: local_addr: {e}"))
            .to_string();
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_string();
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    // the client sees the connection closed, as with a down server
                    continue;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                if let (Ok(c), Ok(mut all)) = (client.try_clone(), s.clients.lock()) {
                    all.push(c);
                }
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (from, to, down) in [
                    (client.try_clone(), server.try_clone(), false),
                    (server.try_clone(), client.try_clone(), true),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let s = s.clone();
                    std::thread::spawn(move || pump(from, to, down, &s));
                }
            }
        });
        Proxy { addr, shared }
    }

    /// `ldap://ADDR` of the proxy.
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    /// Stop forwarding (bytes wait in the proxy until `resume`).
    pub fn pause(&self) {
        let mut g = self.shared.gate();
        g.paused = true;
        g.pause_at = None;
        self.shared.changed.notify_all();
    }

    /// Forward again.
    pub fn resume(&self) {
        let mut g = self.shared.gate();
        g.paused = false;
        g.pause_at = None;
        self.shared.changed.notify_all();
    }

    /// Pause by itself as soon as `more` further bytes went from the server
    /// to the clients (exactly: a chunk crossing the mark is cut there).
    pub fn pause_after_down(&self, more: u64) {
        let mut g = self.shared.gate();
        g.pause_at = Some(self.shared.down.load(Ordering::SeqCst) + more);
    }

    pub fn is_paused(&self) -> bool {
        self.shared.gate().paused
    }

    /// Wait (at most `limit`) until the proxy is paused; whether it is.
    pub fn wait_paused(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        let mut g = self.shared.gate();
        while !g.paused {
            let left = limit.saturating_sub(t0.elapsed());
            if left.is_zero() {
                return false;
            }
            g = self
                .shared
                .changed
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Bytes forwarded from the server to the clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the clients to the server so far.
    pub fn bytes_up(&self) -> u64 {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Close every connection accepted so far, as a server closing idle
    /// connections does (the clients read the end of the stream).
    pub fn close_all(&self) {
        let all = std::mem::take(
            &mut *self
                .shared
                .clients
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for c in all {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, down: bool, s: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    'conn: loop {
        s.wait_open();
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            s.wait_open();
            if s.stop.load(Ordering::SeqCst) {
                break 'conn;
            }
            let allowed = if down {
                usize::try_from(s.allow_down(chunk.len() as u64)).unwrap_or(chunk.len())
            } else {
                chunk.len()
            };
            let (now, rest) = chunk.split_at(allowed.min(chunk.len()));
            if !now.is_empty() {
                if to.write_all(now).is_err() {
                    break 'conn;
                }
                let counter = if down { &s.down } else { &s.up };
                counter.fetch_add(now.len() as u64, Ordering::SeqCst);
            }
            chunk = rest;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        // wake the accept loop
        let _ = TcpStream::connect(&self.addr);
    }
}
