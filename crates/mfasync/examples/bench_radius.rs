//! `scripts/bench-radius [CHECKS]`: the RADIUS server of `mfasync serve`
//! against a private slapd (1,000 users, `other_methods = "password"`, so a
//! check is the LDAP bind and the MFA lookup), next to a raw LDAP bind with
//! the ldap3 client in this process (connect, simple bind, unbind) measured
//! in the same run. Sequential: the two take turns, check by check (p50, p99,
//! checks/s). Then 16 at a time: requests per second of each.

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mfasync_radius::{attr, hide_password, signed_request, Attribute, Code, Packet};

const BASE: &str = "dc=example,dc=com";
const USERS: usize = 1000;
const SECRET: &str = "bench radius shared secret";
const PARALLEL: usize = 16;

#[path = "support/latency.rs"]
mod latency;
use latency::report;

/// One Access-Request for user `i` on `socket`, answered Access-Accept; its round trip.
fn radius_check(socket: &UdpSocket, port: u16, id: u8, i: usize, nonce: u64) -> Duration {
    // unique per request (a repeated one would be answered from the retransmission cache)
    let mut authenticator = [0u8; 16];
    authenticator[..8].copy_from_slice(&nonce.to_be_bytes());
    authenticator[8..].copy_from_slice(&(i as u64).to_be_bytes());
    let packet = Packet {
        code: Code::AccessRequest,
        identifier: id,
        authenticator,
        attributes: vec![
            Attribute::new(attr::USER_NAME, format!("u{i:05}")),
            Attribute::new(
                attr::USER_PASSWORD,
                hide_password(
                    format!("pw-{i}").as_bytes(),
                    SECRET.as_bytes(),
                    &authenticator,
                ),
            ),
        ],
    };
    let raw = signed_request(&packet, SECRET.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let s = Instant::now();
    socket
        .send_to(&raw, ("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("send: {e}"));
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no answer for u{i:05}: {e}"));
    let took = s.elapsed();
    assert!(n >= 20 && buf[0] == 2, "u{i:05}: not an Access-Accept");
    took
}

async fn raw_bind(url: &str, i: usize) -> Duration {
    let s = Instant::now();
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(url)
        .await
        .unwrap_or_else(|e| panic!("ldap3 connect: {e}"));
    ldap3::drive!(conn);
    let r = ldap
        .simple_bind(&format!("uid=u{i:05},ou=Bench,{BASE}"), &format!("pw-{i}"))
        .await
        .and_then(|r| r.success());
    assert!(r.is_ok(), "raw bind failed");
    let _ = ldap.unbind().await;
    s.elapsed()
}

fn main() {
    let checks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let bin = std::env::var("MFASYNC_BIN").unwrap_or_else(|_| "target/release/mfasync".into());
    let mut ldif = format!("dn: ou=Bench,{BASE}\nobjectClass: organizationalUnit\nou: Bench\n\n");
    for i in 0..USERS {
        let _ = write!(
            ldif,
            "dn: uid=u{i:05},ou=Bench,{BASE}\nobjectClass: inetOrgPerson\nuid: u{i:05}\ncn: u{i}\nsn: u{i}\nuserPassword: pw-{i}\n\n"
        );
    }
    let slapd = mfasync_testkit::Slapd::start(&ldif);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db = format!("sqlite://{}", dir.path().join("radius.db").display());
    let secret_file = dir.path().join("radius.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap_or_else(|e| panic!("{e}"));
    let port = mfasync_testkit::free_udp_port();
    let cfg = dir.path().join("radius.toml");
    let config = format!(
        "[directory]\nsource = \"ldap\"\nservers = [\"{url}\"]\nbase_dn = \"{BASE}\"\n[directory.query_bind]\ntype = \"simple\"\ndn = \"{dn}\"\npassword = \"{pw}\"\n[directory.auth_bind]\ntype = \"simple\"\n[filters]\nuser = \"(objectClass=inetOrgPerson)\"\n[attributes]\nunique_id = \"entryUUID\"\nunique_id_type = \"string\"\ndistinguished_name = \"entryDN\"\nusername = [\"uid\"]\n[sync]\nenabled = false\n[[sync.items]]\nkind = \"container\"\ndn = \"ou=Bench,{BASE}\"\n\
         [radius]\nlisten = \"127.0.0.1:{port}\"\n[[radius.clients]]\naddress = \"127.0.0.1\"\nsecret_file = \"{secret}\"\nother_methods = \"password\"\n",
        url = slapd.url,
        dn = slapd.admin_dn,
        pw = slapd.admin_password,
        secret = secret_file.display(),
    );
    std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("write config: {e}"));
    for args in [
        vec!["config", "apply", cfg.to_str().unwrap_or_default()],
        vec!["sync", "--full"],
    ] {
        let ok = Command::new(&bin)
            .args(["--database", &db])
            .args(&args)
            .stdout(Stdio::null())
            .status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "mfasync {args:?} failed"
        );
    }
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let mut serve = Command::new(&bin)
        .args(["--database", &db, "serve", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn serve: {e}"));
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));

    let mut radius = Vec::with_capacity(checks);
    let mut raw = Vec::with_capacity(checks);
    for k in 0..checks {
        let i = (k * 7919) % USERS;
        if k % 2 == 0 {
            raw.push(rt.block_on(raw_bind(&slapd.url, i)));
            radius.push(radius_check(&socket, port, k as u8, i, k as u64));
        } else {
            radius.push(radius_check(&socket, port, k as u8, i, k as u64));
            raw.push(rt.block_on(raw_bind(&slapd.url, i)));
        }
    }

    // 16 at a time: RADIUS from 16 sockets (threads), raw binds as 16 tasks
    let per = checks / PARALLEL;
    let s = Instant::now();
    let threads: Vec<_> = (0..PARALLEL)
        .map(|t| {
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
                let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
                for k in 0..per {
                    radius_check(
                        &socket,
                        port,
                        k as u8,
                        (t * per + k) % USERS,
                        (1 << 40) + (t * per + k) as u64,
                    );
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let radius_rate = (per * PARALLEL) as f64 / s.elapsed().as_secs_f64();
    let url = Arc::new(slapd.url.clone());
    let s = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..PARALLEL)
            .map(|t| {
                let url = url.clone();
                tokio::spawn(async move {
                    for k in 0..per {
                        raw_bind(&url, (t * per + k) % USERS).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    let raw_rate = (per * PARALLEL) as f64 / s.elapsed().as_secs_f64();
    let _ = serve.kill();
    let _ = serve.wait();

    println!("checks: {checks} sequential of each kind, taking turns, {USERS} users");
    println!("| what | checks/s | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    let a = report("ldap3 client in-process (connect + simple bind)", raw);
    let b = report("RADIUS Access-Request to `mfasync serve` (PAP)", radius);
    println!("p50 ratio: RADIUS / ldap3 raw bind = {:.2}", b / a);
    println!(
        "{PARALLEL} at a time, {} each: RADIUS {radius_rate:.0}/s, ldap3 raw bind {raw_rate:.0}/s (ratio {:.2})",
        per * PARALLEL,
        radius_rate / raw_rate
    );
}
