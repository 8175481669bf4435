//! `mfasync serve` under slow and hostile HTTP clients (issue 18): half-sent
//! request heads and silent connections are closed after the header
//! timeout while `/healthz` answers; a kept-alive connection is closed after
//! the idle timeout (not the header timeout); past `--max-connections` a new
//! connection gets 503; the open files limit is raised to the hard limit; a
//! process out of descriptors keeps accepting once they come back.

use crate::common::wait_for;
use crate::common::KillOnDrop;

use crate::common::Mfa;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Served {
    child: KillOnDrop,
    addr: String,
}

/// `mfasync serve` on a fresh database with `extra` options, under the open
/// files limits `ulimit` sets (`ulimit` arguments, empty for none), once
/// `/healthz` answers.
fn serve_under(ulimit: &str, extra: &[&str]) -> (Mfa, Served) {
    let m = Mfa::new();
    let port = mfasync_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("{ulimit} exec \"$@\""))
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen", &addr])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("spawn serve");
    let srv = Served {
        child: KillOnDrop(child),
        addr,
    };
    wait_for("/healthz", Duration::from_secs(20), || healthz(&srv));
    (m, srv)
}

fn serve_with(extra: &[&str]) -> (Mfa, Served) {
    serve_under("", extra)
}

/// `GET /healthz` on a new connection answers 200.
fn healthz(srv: &Served) -> bool {
    let Ok(mut s) = TcpStream::connect(&srv.addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// One `GET /healthz` on a kept-alive connection: the response, read up to
/// its Content-Length (the connection stays open).
fn request(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// Whether the server closes `s` (end of file or reset) before `deadline`;
/// whatever it sends before closing is skipped.
fn closed_by_server(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => panic!("reading: {e}"),
        }
    }
}

#[test]
fn half_sent_heads_and_silent_connections_are_closed_after_the_header_timeout() {
    let (_m, srv) = serve_with(&["--header-timeout", "2"]);
    // 200 connections: most stop in the middle of a header, every tenth
    // sends nothing at all
    let mut held: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = TcpStream::connect(&srv.addr).unwrap();
            if i % 10 != 0 {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: sl")
                    .unwrap();
            }
            s
        })
        .collect();
    // they do not keep anyone else out
    for _ in 0..5 {
        assert!(healthz(&srv), "/healthz while 200 connections are held");
    }
    // each is closed by the server (a bounded wait, far above the timeout)
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, deadline),
            "connection {i} is still open after the header timeout"
        );
    }
    assert!(healthz(&srv));
}

#[test]
fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let (_m, srv) = serve_with(&["--header-timeout", "1", "--idle-timeout", "5"]);
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    let r = request(&mut s);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // idling longer than the header timeout is allowed between requests
    std::thread::sleep(Duration::from_secs(2));
    let r = request(&mut s);
    assert!(r.starts_with("HTTP/1.1 200"), "second request: {r}");
    // then, idle, it is closed
    assert!(
        closed_by_server(&mut s, Instant::now() + Duration::from_secs(60)),
        "the idle connection is still open after the idle timeout"
    );
}

#[test]
fn past_max_connections_a_new_connection_gets_503() {
    let (_m, srv) = serve_with(&["--max-connections", "10"]);
    // ten kept-alive connections, each answered (so each holds a slot; one
    // refused while a probe's connection was still closing is opened again)
    let held: Vec<TcpStream> = (0..10)
        .map(|_| {
            for _ in 0..20 {
                let mut s = TcpStream::connect(&srv.addr).unwrap();
                let r = request(&mut s);
                if r.starts_with("HTTP/1.1 200") {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("no slot for a held connection");
        })
        .collect();
    // the eleventh is answered 503 and closed
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    assert!(!healthz(&srv), "an eleventh connection was served");
    // once the ten close, new connections are served again
    drop(held);
    wait_for(
        "/healthz after the held connections closed",
        Duration::from_secs(20),
        || healthz(&srv),
    );
}

/// The soft open files limit of a process, and its hard limit.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<&str> = line.split_whitespace().collect();
    (v[3].to_string(), v[4].to_string())
}

#[test]
fn serve_raises_its_open_files_limit_to_the_hard_limit() {
    let (_m, srv) = serve_under("ulimit -Sn 256 &&", &[]);
    let (soft, hard) = open_files_limits(srv.child.id());
    assert_ne!(soft, "256");
    assert_eq!(soft, hard);
}

#[test]
fn serve_out_of_descriptors_accepts_again_once_they_come_back() {
    // 64 descriptors in all, and a cap above that: accepting fails (EMFILE)
    let (_m, mut srv) = serve_under(
        "ulimit -n 64 &&",
        &["--max-connections", "500", "--header-timeout", "120"],
    );
    let held: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    // the server runs out: every descriptor it may have is open
    let pid = srv.child.id();
    wait_for(
        "serve to use all 64 descriptors",
        Duration::from_secs(20),
        || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()) >= 64,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(srv.child.try_wait().unwrap().is_none(), "serve exited");
    drop(held);
    wait_for(
        "/healthz after descriptors came back",
        Duration::from_secs(30),
        || healthz(&srv),
    );
    assert!(srv.child.try_wait().unwrap().is_none(), "serve exited");
}
