//! `scripts/bench-auth [CHECKS]`: password checks per second and p50/p99
//! latency of `mfasync auth` against a private slapd, next to the raw bind
//! (`ldapwhoami` binding as the same users) measured in the same run. Both are
//! one process per check, as a RADIUS/PAM helper would call them. Then
//! `POST /api/v1/auth` to `mfasync serve` next to an in-process ldap3 bind.
//! The kinds of check compared take turns, check by check, so that the
//! machine's load changing during the run weighs on them alike.
//!
//! `BENCH_AUTH_HOLD=1`: set up, print the database and server, and wait for
//! stdin to close (profiling). `BENCH_AUTH_COMPARE="BIN1 BIN2 ..."`: only
//! the process comparison, `ldapwhoami` and several builds of `mfasync`
//! head to head (see `compare_builds`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BASE: &str = "dc=example,dc=com";
const USERS: usize = 1000;

#[path = "support/latency.rs"]
mod latency;
use latency::{pct, report};

/// One `ldapwhoami` process binding as user `i`; its wall time.
fn whoami_process(url: &str, i: usize) -> Duration {
    let s = Instant::now();
    let ok = Command::new("ldapwhoami")
        .args([
            "-x",
            "-H",
            url,
            "-D",
            &format!("uid=u{i:05},ou=Bench,{BASE}"),
            "-w",
            &format!("pw-{i}"),
        ])
        .stdout(Stdio::null())
        .status();
    assert!(matches!(ok, Ok(s) if s.success()), "ldapwhoami failed");
    s.elapsed()
}

/// One `BIN --database DB auth` process checking user `i`; its wall time.
fn auth_process(bin: &str, db: &str, i: usize) -> Duration {
    let s = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "--database",
            db,
            "auth",
            &format!("u{i:05}"),
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(format!("pw-{i}").as_bytes());
    }
    let ok = child.wait();
    assert!(
        matches!(ok, Ok(s) if s.success()),
        "{bin} auth u{i:05} refused"
    );
    s.elapsed()
}

/// `BENCH_AUTH_COMPARE="BIN1 BIN2 ..."`: `ldapwhoami` and `auth` processes
/// of several builds head to head on one setup, `checks` rounds in which
/// each takes one turn (the order rotating). Each build gets its own copy of
/// the database (what one leaves beside it, e.g. WAL files, is not the
/// other's). Prints p50/p90 and the median over rounds of each build's time
/// divided by `ldapwhoami`'s in the same round.
fn compare_builds(url: &str, dir: &std::path::Path, list: &str, checks: usize) {
    let bins: Vec<&str> = list.split_whitespace().collect();
    let mut dbs = Vec::new();
    for k in 0..bins.len() {
        let copy = dir.join(format!("auth-{k}.db"));
        std::fs::copy(dir.join("auth.db"), &copy).unwrap_or_else(|e| panic!("copy: {e}"));
        // (a WAL not yet checkpointed into the database goes along)
        let wal = dir.join("auth.db-wal");
        if wal.exists() {
            std::fs::copy(&wal, dir.join(format!("auth-{k}.db-wal")))
                .unwrap_or_else(|e| panic!("copy: {e}"));
        }
        dbs.push(format!("sqlite://{}", copy.display()));
    }
    let kinds = bins.len() + 1;
    let mut times = vec![Vec::with_capacity(checks); kinds];
    for round in 0..checks {
        let i = (round * 7919) % USERS;
        for turn in 0..kinds {
            let k = (round + turn) % kinds;
            times[k].push(match k {
                0 => whoami_process(url, i),
                _ => auth_process(bins[k - 1], &dbs[k - 1], i),
            });
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{checks} rounds, each kind once per round, {USERS} users");
    println!("| process | p50 | p90 | p50 / ldapwhoami p50 | median of per-round ratios |");
    println!("| --- | --- | --- | --- | --- |");
    let mut sorted0 = times[0].clone();
    sorted0.sort();
    let base = pct(&sorted0, 0.5);
    for (k, t) in times.iter().enumerate() {
        let mut sorted = t.clone();
        sorted.sort();
        let mut ratios: Vec<f64> = t
            .iter()
            .zip(&times[0])
            .map(|(a, b)| ms(*a) / ms(*b))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let name = if k == 0 { "ldapwhoami" } else { bins[k - 1] };
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.3} | {:.3} |",
            pct(&sorted, 0.5),
            pct(&sorted, 0.9),
            pct(&sorted, 0.5) / base,
            ratios.get(ratios.len() / 2).copied().unwrap_or(0.0)
        );
    }
}

fn main() {
    let checks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
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
    let db = format!("sqlite://{}", dir.path().join("auth.db").display());
    let cfg = dir.path().join("auth.toml");
    let config = format!(
        "[directory]\nsource = \"ldap\"\nservers = [\"{url}\"]\nbase_dn = \"{BASE}\"\n[directory.query_bind]\ntype = \"simple\"\ndn = \"{dn}\"\npassword = \"{pw}\"\n[directory.auth_bind]\ntype = \"simple\"\n[filters]\nuser = \"(objectClass=inetOrgPerson)\"\n[attributes]\nunique_id = \"entryUUID\"\nunique_id_type = \"string\"\ndistinguished_name = \"entryDN\"\nusername = [\"uid\"]\n[[sync.items]]\nkind = \"container\"\ndn = \"ou=Bench,{BASE}\"\n",
        url = slapd.url,
        dn = slapd.admin_dn,
        pw = slapd.admin_password,
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

    if std::env::var_os("BENCH_AUTH_HOLD").is_some() {
        // profiling aid: keep the directory and database up until stdin closes
        println!(
            "database {db}\nserver {}\nuser u00001 password pw-1",
            slapd.url
        );
        let _ = std::io::stdin().read_line(&mut String::new());
        return;
    }
    // Processes: `ldapwhoami` and `mfasync auth` take turns (which goes
    // first alternates), so that a change in the machine's load during the
    // run weighs on both alike.
    let whoami = |i: usize| whoami_process(&slapd.url, i);
    let auth = |i: usize| auth_process(&bin, &db, i);
    if let Ok(list) = std::env::var("BENCH_AUTH_COMPARE") {
        compare_builds(&slapd.url, dir.path(), &list, checks);
        return;
    }
    let mut raw = Vec::with_capacity(checks);
    let mut ours = Vec::with_capacity(checks);
    for k in 0..checks {
        let i = (k * 7919) % USERS;
        if k % 2 == 0 {
            raw.push(whoami(i));
            ours.push(auth(i));
        } else {
            ours.push(auth(i));
            raw.push(whoami(i));
        }
    }

    // The service path: POST /api/v1/auth to `mfasync serve` (a new HTTP
    // connection per check, and one kept-alive connection as a front end
    // keeping its connection open would use), next to a raw bind with the
    // ldap3 client alone (fresh connection, simple bind, unbind); the three
    // take turns like the processes above.
    let token = "bench-api-token-0123456789";
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let store = mfasync_store::open(&db)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = store
            .token_create(&mfasync_store::AuthToken {
                token_hash: mfasync_web::auth::token_hash(token),
                kind: mfasync_store::TokenKind::Api,
                username: "admin".into(),
                label: Some("bench".into()),
                csrf: None,
                created_at: "2026-01-01T00:00:00Z".into(),
                expires_at: None,
            })
            .await;
    });
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let mut serve = Command::new(&bin)
        .args(["--database", &db, "serve", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn serve: {e}"));
    let post = |body: &str| -> String {
        use std::io::Read as _;
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
            return String::new();
        };
        let _ = write!(
            s,
            "POST /api/v1/auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let t0 = Instant::now();
    while !post("{}").starts_with("HTTP/1.1") && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let api_new = |i: usize| {
        let s = Instant::now();
        let r = post(&format!(
            "{{\"username\":\"u{i:05}\",\"password\":\"pw-{i}\"}}"
        ));
        assert!(r.ends_with("{\"ok\":true}"), "API auth u{i:05}: {r}");
        s.elapsed()
    };
    use std::io::{BufRead as _, BufReader, Read as _};
    let stream = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect: {e}"));
    let mut reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("clone: {e}")));
    let _ = stream.set_nodelay(true);
    let mut writer = stream;
    let mut api_kept = |i: usize| {
        let s = Instant::now();
        let body = format!("{{\"username\":\"u{i:05}\",\"password\":\"pw-{i}\"}}");
        // one write per request (Nagle would hold a second small one)
        let request = format!(
            "POST /api/v1/auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = writer.write_all(request.as_bytes());
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut out = vec![0u8; length];
        let _ = reader.read_exact(&mut out);
        assert_eq!(out, b"{\"ok\":true}", "API auth (kept alive) u{i:05}");
        s.elapsed()
    };
    let raw_bind = |i: usize| {
        rt.block_on(async {
            let s = Instant::now();
            let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url)
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
        })
    };
    let mut direct = Vec::with_capacity(checks);
    let mut api = Vec::with_capacity(checks);
    let mut kept = Vec::with_capacity(checks);
    for k in 0..checks {
        let i = (k * 7919) % USERS;
        for turn in 0..3 {
            match (k + turn) % 3 {
                0 => direct.push(raw_bind(i)),
                1 => api.push(api_new(i)),
                _ => kept.push(api_kept(i)),
            }
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();

    println!("checks: {checks} sequential of each kind, taking turns, {USERS} users");
    println!("| what | checks/s | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    let a = report("ldapwhoami process (raw simple bind)", raw);
    let b = report(
        "`mfasync auth` process (MFA lookup + bind as the stored DN)",
        ours,
    );
    let c = report("ldap3 client in-process (connect + simple bind)", direct);
    let d = report("POST /api/v1/auth to `mfasync serve`", api);
    let e = report("POST /api/v1/auth, one kept-alive HTTP connection", kept);
    println!(
        "p50 ratio, processes: mfasync auth / ldapwhoami = {:.2}",
        b / a
    );
    println!("p50 ratio, in-process: API / ldap3 raw bind = {:.2}", d / c);
    println!(
        "p50 ratio, in-process: API kept alive / ldap3 raw bind = {:.2}",
        e / c
    );
}
