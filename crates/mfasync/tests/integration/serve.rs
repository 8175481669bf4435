//! `mfasync serve` against a real OpenLDAP slapd: /healthz answers, cycles
//! run every interval (start to start) and land in the history, directory
//! changes arrive without a restart, `config apply` (enabled = false) takes
//! effect without a restart, and a cycle with the directory down is recorded
//! with its error, changes nothing and is retried.

use crate::common::wait_for;
use crate::common::KillOnDrop;

use crate::common::Mfa;
use mfasync_testkit::Slapd;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const BASE: &str = "dc=example,dc=com";

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = String::new();
        for t in ["S1", "S2"] {
            l.push_str(&format!(
                "dn: ou={t},{BASE}\nobjectClass: organizationalUnit\nou: {t}\n\n"
            ));
            for i in 1..=3 {
                l.push_str(&person(t, &format!("{t}u{i}")));
            }
        }
        Slapd::start(&l)
    })
}

fn person(t: &str, uid: &str) -> String {
    format!("dn: uid={uid},ou={t},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\n")
}

fn config(t: &str, server: &str, sync: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(
        &format!("\"{server}\""),
        &format!("ou={t},{BASE}"),
        2,
        (&s.admin_dn, &s.admin_password),
    );
    format!(
        r#"{head}
[sync]
interval = "10s"
{sync}
[[sync.items]]
kind = "container"
dn = "ou={t},{BASE}"
"#
    )
}

struct Served {
    child: KillOnDrop,
    addr: String,
}

fn serve(m: &Mfa) -> Served {
    serve_with(m, &[])
}

fn serve_with(m: &Mfa, extra: &[&str]) -> Served {
    let port = mfasync_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen", &addr])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    Served {
        child: KillOnDrop(child),
        addr,
    }
}

fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn history(m: &Mfa) -> Vec<Value> {
    match m.ok(&["--json", "history", "--limit", "100"]).json() {
        Value::Array(v) => v,
        other => panic!("history is not an array: {other}"),
    }
}

/// Seconds since midnight of a run's `started_at` (RFC 3339, UTC).
fn started(r: &Value) -> f64 {
    let s = r["started_at"].as_str().unwrap_or_default();
    let t = s
        .split('T')
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches('Z');
    let p: Vec<f64> = t
        .split(':')
        .map(|x| x.parse().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(p.len(), 3, "started_at {s:?}");
    p[0] * 3600.0 + p[1] * 60.0 + p[2]
}

#[test]
fn serve_runs_cycles_every_interval_and_rereads_the_configuration() {
    let s = slapd();
    let m = Mfa::new();
    m.apply(&config("S1", &s.url, ""));
    m.sync_full();
    let srv = serve(&m);

    wait_for("/healthz", Duration::from_secs(10), || {
        get(&srv.addr, "/healthz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\nok"))
    });
    let r = get(&srv.addr, "/nope").unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");

    // the first cycle starts at once, incremental (a full sync set the starting point)
    wait_for("a first cycle", Duration::from_secs(8), || {
        history(&m).len() >= 2
    });
    let h = history(&m);
    assert_eq!(h[0]["mode"], "incremental", "{h:?}");
    assert!(h[0]["error"].is_null(), "{h:?}");

    // a directory change arrives with the next cycle, without a restart
    s.ldapadd(&person("S1", "S1new"));
    wait_for("the new user", Duration::from_secs(15), || {
        m.user("S1new").is_some()
    });
    let h = history(&m);
    assert!(h.len() >= 3, "{h:?}");
    // start to start: 10 s apart (second resolution)
    let gap = started(&h[0]) - started(&h[1]);
    assert!((9.0..=12.0).contains(&gap), "cycles {gap} apart: {h:?}");

    // enabled = false takes effect without a restart: no more cycles
    m.apply(&config("S1", &s.url, "enabled = false"));
    std::thread::sleep(Duration::from_secs(11));
    let n1 = history(&m).len();
    std::thread::sleep(Duration::from_secs(11));
    let n2 = history(&m).len();
    assert_eq!(n1, n2, "cycles ran while sync.enabled = false");
    assert!(get(&srv.addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")));
}

#[test]
fn serve_records_a_failing_cycle_changes_nothing_and_retries() {
    let s = slapd();
    let m = Mfa::new();
    m.apply(&config("S2", &s.url, ""));
    m.sync_full();
    let before = m.users();
    assert_eq!(before.len(), 3);
    // the directory is now unreachable (a closed port)
    let closed = format!("ldap://127.0.0.1:{}", mfasync_testkit::free_port());
    m.apply(&config("S2", &closed, ""));
    let _srv = serve(&m);
    wait_for("a failed cycle", Duration::from_secs(10), || {
        history(&m).first().is_some_and(|r| !r["error"].is_null())
    });
    let h = history(&m);
    let err = h[0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("127.0.0.1"),
        "the error names the server: {err}"
    );
    assert_eq!(m.users(), before, "a failed cycle changed users");
    // retried at the next interval
    wait_for("a second failed cycle", Duration::from_secs(15), || {
        history(&m).iter().filter(|r| !r["error"].is_null()).count() >= 2
    });
    assert_eq!(m.users(), before);
}

#[test]
fn serve_exposes_the_portal_and_api_behind_sign_in() {
    let s = slapd();
    let m = Mfa::new();
    m.apply(&config("S2", &s.url, "enabled = false"));
    let short = m.run_stdin(
        &["admin", "set-password", "admin", "--password-stdin"],
        "short\n",
    );
    assert_eq!(
        short.code, 2,
        "too short a password is refused: {}",
        short.stderr
    );
    let ok = m.run_stdin(
        &["admin", "set-password", "admin", "--password-stdin"],
        "correct-horse-battery\n",
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(!ok.stdout.contains("correct-horse") && !ok.stderr.contains("correct-horse"));
    let srv = serve(&m);
    wait_for("/healthz", Duration::from_secs(10), || {
        get(&srv.addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    let users = get(&srv.addr, "/api/v1/users").unwrap_or_default();
    assert!(
        users.starts_with("HTTP/1.1 401"),
        "API needs sign-in: {users}"
    );
    let portal = get(&srv.addr, "/users").unwrap_or_default();
    assert!(
        portal.starts_with("HTTP/1.1 303") || portal.starts_with("HTTP/1.1 302"),
        "portal redirects to sign-in: {portal}"
    );
    let login = get(&srv.addr, "/login").unwrap_or_default();
    assert!(
        login.starts_with("HTTP/1.1 200") && login.contains("<form"),
        "{login}"
    );
    assert!(
        login.contains("content-security-policy"),
        "security headers: {login}"
    );
    let metrics = get(&srv.addr, "/metrics").unwrap_or_default();
    assert!(
        metrics.starts_with("HTTP/1.1 200") && metrics.contains("mfasync_"),
        "{metrics}"
    );
    let api = get(&srv.addr, "/api/v1/openapi.json").unwrap_or_default();
    assert!(api.contains("/api/v1/users"), "{api}");
}

fn post_json(addr: &str, path: &str, bearer: &str, body: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Established TCP connections of process `pid` to `port` (this network namespace).
fn connections_to(pid: u32, port: u16) -> usize {
    let out = Command::new("ss")
        .args([
            "-Htnp",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .expect("ss");
    let me = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&me))
        .count()
}

/// A database synchronized from `ou=OU` on `server` with simple auth binds,
/// an API token, and `serve` answering on it.
fn auth_service(ou: &str, server: &str) -> (Mfa, &'static str, Served) {
    let m = Mfa::new();
    m.apply(&config(ou, server, "enabled = false").replace(
        "[filters]",
        "[directory.auth_bind]\ntype = \"simple\"\n[filters]",
    ));
    m.sync_full();
    let token = api_token(&m);
    let srv = serve(&m);
    wait_for("/healthz", Duration::from_secs(10), || {
        get(&srv.addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    (m, token, srv)
}

/// `POST /api/v1/auth` as `username` with `password`: the whole response.
fn api_auth(srv: &Served, token: &str, username: &str, password: &str) -> String {
    post_json(
        &srv.addr,
        "/api/v1/auth",
        token,
        &format!("{{\"username\":\"{username}\",\"password\":\"{password}\"}}"),
    )
    .unwrap_or_default()
}

/// An API token for `m`'s database.
fn api_token(m: &Mfa) -> &'static str {
    let token = "test-api-token-0123456789";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        crate::common::add_api_token(store.as_ref(), "admin", "test", token).await;
    });
    token
}

/// After a password check, the service opens the connection the next check
/// binds on (TCP, TLS when configured; never bound twice), so a check waits
/// for its bind only. One the server closed is not used.
#[test]
fn serve_auth_api_binds_on_a_connection_opened_before_the_check() {
    let s = slapd();
    s.ldapadd(&format!(
        "dn: ou=S9,{BASE}\nobjectClass: organizationalUnit\nou: S9\n\n\
         dn: uid=kim,ou=S9,{BASE}\nobjectClass: inetOrgPerson\nuid: kim\ncn: kim\nsn: kim\nuserPassword: kim-Passw0rd\n\n"
    ));
    let proxy = mfasync_testkit::Proxy::start(&format!("127.0.0.1:{}", s.port));
    let proxy_port: u16 = proxy
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap();
    let (_m, token, srv) = auth_service("S9", &proxy.ldap_url());
    let auth = |pw: &str| api_auth(&srv, token, "kim", pw);
    let r = auth("kim-Passw0rd");
    assert!(r.ends_with("{\"ok\":true}"), "{r}");
    // the connection checked on is closed; one is open for the next check
    wait_for("a spare connection", Duration::from_secs(5), || {
        connections_to(srv.child.id(), proxy_port) == 1
    });
    let before = proxy.connections();
    for k in 1..=3 {
        let r = auth("kim-Passw0rd");
        assert!(r.ends_with("{\"ok\":true}"), "{r}");
        wait_for("the next spare connection", Duration::from_secs(5), || {
            proxy.connections() >= before + k && connections_to(srv.child.id(), proxy_port) == 1
        });
        // (the spare is kept a moment after its TCP connection is up)
        std::thread::sleep(Duration::from_millis(50));
    }
    // each check bound on the connection opened before it: one new connection
    // per check (the next one's), none of its own
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(proxy.connections(), before + 3);
    assert_eq!(connections_to(srv.child.id(), proxy_port), 1);

    // the server closes its idle connections: the checks still get answers
    proxy.close_all();
    let r = auth("kim-Passw0rd");
    assert!(r.ends_with("{\"ok\":true}"), "{r}");
    proxy.close_all();
    let r = auth("wrong");
    assert!(r.contains("\"reason\":\"invalid-credentials\""), "{r}");
}

#[test]
fn serve_auth_api_checks_passwords_and_reuses_one_query_connection() {
    let s = slapd();
    s.ldapadd(&format!(
        "dn: ou=S4,{BASE}\nobjectClass: organizationalUnit\nou: S4\n\n\
         dn: uid=pat,ou=S4,{BASE}\nobjectClass: inetOrgPerson\nuid: pat\ncn: pat\nsn: pat\nuserPassword: pat-Passw0rd\n\n\
         dn: uid=quinn,ou=S4,{BASE}\nobjectClass: inetOrgPerson\nuid: quinn\ncn: quinn\nsn: quinn\nuserPassword: quinn-Passw0rd\n\n"
    ));
    let (m, token, srv) = auth_service("S4", &s.url);
    let auth = |pw: &str| api_auth(&srv, token, "pat", pw);
    for _ in 0..3 {
        let r = auth("pat-Passw0rd");
        assert!(r.ends_with("{\"ok\":true}"), "{r}");
    }
    let r = auth("wrong");
    assert!(r.contains("\"reason\":\"invalid-credentials\""), "{r}");
    // the username lookups share one query connection, kept open between
    // checks; beside it, the spare connection for the next password bind
    wait_for(
        "the query and spare connections",
        Duration::from_secs(5),
        || connections_to(srv.child.id(), s.port) == 2,
    );
    // Per client address (the socket peer): after 50 failures from 127.0.0.1,
    // whatever the usernames, the names that failed from it are refused
    // there (`rate-limited`); a right password of another account is checked.
    let check = |user: &str, pw: &str| api_auth(&srv, token, user, pw);
    for i in 1..50 {
        let r = check(&format!("nobody{i}"), "guess");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("invalid-credentials"),
            "failure {}: {r}",
            i + 1
        );
    }
    let r = check("nobody7", "guess");
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    assert!(r.to_ascii_lowercase().contains("\r\nretry-after: "), "{r}");
    assert!(
        r.ends_with("{\"ok\":false,\"reason\":\"rate-limited\"}"),
        "{r}"
    );
    let r = check("pat", "pat-Passw0rd");
    assert!(
        r.contains("\"reason\":\"rate-limited\""),
        "pat failed from there: {r}"
    );
    let r = check("quinn", "quinn-Passw0rd");
    assert!(r.ends_with("{\"ok\":true}"), "{r}");
    drop(srv);

    // --auth-client-limit 2 behind --trusted-proxy 127.0.0.1: the client is
    // the X-Forwarded-For address, and two failures block it
    let srv = serve_with(
        &m,
        &["--auth-client-limit", "2", "--trusted-proxy", "127.0.0.1"],
    );
    wait_for("/healthz", Duration::from_secs(10), || {
        get(&srv.addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    let from = |client: &str, user: &str, pw: &str| {
        let body = format!("{{\"username\":\"{user}\",\"password\":\"{pw}\"}}");
        let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
        write!(
            s,
            "POST /api/v1/auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nX-Forwarded-For: {client}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    for i in 0..2 {
        let r = from("198.51.100.1", &format!("nobody{i}"), "guess");
        assert!(r.contains("invalid-credentials"), "{r}");
    }
    let r = from("198.51.100.1", "nobody1", "guess");
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    let r = from("198.51.100.2", "nobody1", "guess");
    assert!(r.contains("invalid-credentials"), "another client: {r}");
    let r = from("198.51.100.1", "pat", "pat-Passw0rd");
    assert!(
        r.ends_with("{\"ok\":true}"),
        "an account that did not fail: {r}"
    );
}

fn get_bearer(addr: &str, path: &str, bearer: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn json_body(resp: &str) -> Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"))
}

#[test]
fn sync_jobs_report_the_directory_entries_read() {
    let s = slapd();
    let mut ldif = format!("dn: ou=S5,{BASE}\nobjectClass: organizationalUnit\nou: S5\n\n");
    for uid in ["s5a", "s5b", "s5c", "s5d", "s5e"] {
        ldif.push_str(&person("S5", uid));
    }
    s.ldapadd(&ldif);
    let m = Mfa::new();
    m.apply(&config("S5", &s.url, "enabled = false"));
    let token = "test-api-token-progress-0123456789";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        crate::common::add_api_token(store.as_ref(), "admin", "test", token).await;
    });
    let srv = serve(&m);
    wait_for("/healthz", Duration::from_secs(10), || {
        get(&srv.addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    let started = json_body(
        &post_json(&srv.addr, "/api/v1/sync?full=true&wait=false", token, "").unwrap_or_default(),
    );
    let job = started["job"]
        .as_u64()
        .unwrap_or_else(|| panic!("{started}"));
    let mut last = Value::Null;
    wait_for("the job to finish", Duration::from_secs(60), || {
        last = json_body(
            &get_bearer(&srv.addr, &format!("/api/v1/sync/jobs/{job}"), token).unwrap_or_default(),
        );
        assert!(last["entries_read"].is_u64(), "a count field: {last}");
        last["state"] != "running"
    });
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["result"]["created"], 5, "{last}");
    assert_eq!(
        last["entries_read"], 5,
        "the entries the full read saw: {last}"
    );
}

/// A configuration without sync items is a state, not a failure: no cycle is
/// run or recorded, /healthz stays ok and /metrics says why.
#[test]
fn serve_without_sync_items_is_not_configured_not_failing() {
    let s = slapd();
    let m = Mfa::new();
    let cfg = config("S1", &s.url, "");
    let no_items = &cfg[..cfg.find("[[sync.items]]").expect("an item")];
    assert!(!no_items.contains("[[sync.items]]"));
    m.apply(no_items);
    let srv = serve(&m);
    wait_for("/healthz", Duration::from_secs(10), || {
        get(&srv.addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    // longer than an interval (10 s): the first cycle would have started at once
    std::thread::sleep(Duration::from_secs(12));
    assert!(history(&m).is_empty(), "{:?}", history(&m));
    let health = get(&srv.addr, "/healthz").unwrap_or_default();
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let metrics = get(&srv.addr, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("\nmfasync_sync_configured 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nmfasync_sync_state{state=\"not-configured\"} 1\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"error\""), "{metrics}");

    // an item added: cycles run (no restart), the state is active
    m.apply(&cfg);
    wait_for("a cycle", Duration::from_secs(15), || {
        !history(&m).is_empty()
    });
    let h = history(&m);
    assert!(h[0]["error"].is_null(), "{h:?}");
    let metrics = get(&srv.addr, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("\nmfasync_sync_configured 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nmfasync_sync_state{state=\"active\"} 1\n"),
        "{metrics}"
    );
}

/// Issue 19 item 5 in the service: after `config apply` changes the
/// attribute mapping, the next periodic cycle is full, says why in its
/// history row, and re-maps the stored users.
#[test]
fn serve_runs_a_full_cycle_after_a_mapping_change() {
    let s = slapd();
    let m = Mfa::new();
    let cfg = config("S2", &s.url, "");
    m.apply(&cfg);
    m.sync_full();
    assert!(m.user("S2u1").expect("S2u1")["first_name"].is_null());
    let _srv = serve(&m);
    wait_for("an incremental cycle", Duration::from_secs(10), || {
        history(&m)
            .first()
            .is_some_and(|r| r["mode"] == "incremental")
    });
    m.apply(&cfg.replace(
        "username = [\"uid\"]",
        "username = [\"uid\"]\nfirst_name = \"cn\"",
    ));
    let why = "the attribute mapping or filters changed since the last full sync: running a full synchronization";
    wait_for(
        "a full cycle that says why",
        Duration::from_secs(20),
        || {
            history(&m)
                .iter()
                .any(|r| r["mode"] == "full" && r["note"] == why && r["status"] == "ok")
        },
    );
    assert_eq!(m.user("S2u1").expect("S2u1")["first_name"], "S2u1");
}
