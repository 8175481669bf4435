//! A hostile directory (issue 18): `testkit::Hostile`, a proxy in front of a
//! real slapd, answers the user search (the paged search for inetOrgPerson:
//! a full sync's read and a password check's username lookup) with crafted
//! messages. For each attack, `mfasync sync --full` fails with an error
//! naming the server (or, for a huge value, succeeds without it), `serve`'s
//! scheduled cycle and `POST /api/v1/auth` do not bring the service down,
//! the store is unchanged, and the peak RSS of the process stays under
//! 200 MB (a bound on memory, not a timing).

use crate::common::wait_for;
use crate::common::KillOnDrop;

use crate::common::Mfa;
use mfasync_testkit::{Attack, Hostile, Slapd};
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BASE: &str = "dc=example,dc=com";
const PAGED: &str = "1.2.840.113556.1.4.319";
/// The peak resident memory allowed to an mfasync process under attack.
const MAX_RSS_KB: u64 = 200 * 1024;
const TOKEN: &str = "hostile-test-token-0123456789";

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = String::new();
        for t in ["H1", "H2", "H3", "H4", "H5", "H6"] {
            l.push_str(&format!(
                "dn: ou={t},{BASE}\nobjectClass: organizationalUnit\nou: {t}\n\n"
            ));
            for i in 1..=3 {
                let uid = format!("{t}u{i}").to_lowercase();
                l.push_str(&format!(
                    "dn: uid={uid},ou={t},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {uid}-Passw0rd\n\n"
                ));
            }
        }
        Slapd::start(&l)
    })
}

/// The configuration of `ou=OU` on `server`: scheduled full cycles every
/// 10 s, simple auth binds, and `extra` lines in `[directory]`.
fn config(ou: &str, server: &str, extra: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(
        &format!("\"{server}\""),
        &format!("ou={ou},{BASE}"),
        30,
        (&s.admin_dn, &s.admin_password),
    )
    .replace(
        "[directory.query_bind]",
        &format!("{extra}\n[directory.query_bind]"),
    )
    .replace(
        "[filters]",
        "[directory.auth_bind]\ntype = \"simple\"\n[filters]",
    );
    format!(
        r#"{head}
[sync]
interval = "10s"
always_full = true
[[sync.items]]
kind = "container"
dn = "ou={ou},{BASE}"
"#
    )
}

/// A database synchronized from `ou=OU` on the real slapd, with an API token.
fn synced(ou: &str) -> Mfa {
    let m = Mfa::new();
    m.apply(&config(ou, &slapd().url, ""));
    m.sync_full();
    assert_eq!(m.users().len(), 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        crate::common::add_api_token(store.as_ref(), "admin", "hostile", TOKEN).await;
    });
    m
}

struct Run {
    code: i32,
    stderr: String,
    max_rss_kb: u64,
}

/// `mfasync sync --full` under /usr/bin/time (its peak RSS); killed, and
/// the test failed, if it has not ended after 120 s (a hang bound).
fn sync_full_measured(m: &Mfa) -> Run {
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS_KB=%M", env!("CARGO_BIN_EXE_mfasync")])
        .args(["--database", &m.url, "--json", "sync", "--full"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn /usr/bin/time mfasync");
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("sync --full did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = reader.join().unwrap();
    let max_rss_kb = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("MAXRSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MAXRSS_KB in {stderr}"));
    Run {
        code: status.code().unwrap_or(-1),
        stderr,
        max_rss_kb,
    }
}

struct Served {
    child: KillOnDrop,
    addr: String,
}

impl Served {
    fn start(m: &Mfa) -> Served {
        let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
            .args(["--database", &m.url, "serve", "--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let s = Served {
            child: KillOnDrop(child),
            addr,
        };
        wait_for("/healthz", Duration::from_secs(20), || s.healthy());
        s
    }

    /// Still running and answering /healthz.
    fn healthy(&self) -> bool {
        http(
            &self.addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn auth(&self, username: &str, password: &str) -> String {
        let body = format!("{{\"username\":\"{username}\",\"password\":\"{password}\"}}");
        http(
            &self.addr,
            &format!(
                "POST /api/v1/auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
        .unwrap_or_default()
    }

    /// The process's peak resident memory so far (VmHWM).
    fn max_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("serve's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM: {status}"))
    }
}

fn http(addr: &str, request: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
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

/// What a run under `attack` must show.
enum Expect {
    /// The read fails with an error containing this text.
    Fails(&'static str),
    /// The read succeeds; the user with this username has no description.
    WithoutValue(&'static str),
}

/// `attack` on the user search of `ou=OU`: sync --full, then serve (a
/// scheduled full cycle and password checks) against the hostile proxy.
fn under_attack(ou: &str, attack: Attack, extra: &str, expect: Expect) {
    let s = slapd();
    let m = synced(ou);
    let before = m.users();
    let hostile = Hostile::start(
        &format!("127.0.0.1:{}", s.port),
        &["inetOrgPerson", PAGED],
        attack,
    );
    m.apply(&config(ou, &hostile.url(), extra));

    // 1. sync --full
    let run = sync_full_measured(&m);
    eprintln!("{ou}: sync --full peak RSS {} kB", run.max_rss_kb);
    assert!(hostile.attacks() >= 1, "the user search was not attacked");
    assert!(
        run.max_rss_kb < MAX_RSS_KB,
        "sync --full peaked at {} kB: {}",
        run.max_rss_kb,
        run.stderr
    );
    let after_sync = m.users();
    match expect {
        Expect::Fails(why) => {
            assert_ne!(run.code, 0, "sync --full succeeded under attack");
            assert!(
                run.stderr.contains(why) && run.stderr.contains(&hostile.url()),
                "the error names the problem and the server: {}",
                run.stderr
            );
            assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
            assert_eq!(after_sync, before, "a failed read changed the store");
        }
        Expect::WithoutValue(user) => {
            assert_eq!(run.code, 0, "{}", run.stderr);
            assert!(
                run.stderr.contains(&format!("uid={user},ou={ou},{BASE}"))
                    && run.stderr.contains("description")
                    && run.stderr.contains("skipped"),
                "the warning names the entry and the attribute: {}",
                run.stderr
            );
            assert_eq!(after_sync.len(), before.len());
            let u = after_sync
                .iter()
                .find(|u| u["username"] == user)
                .expect("the user is still synchronized");
            assert!(u["description"].is_null(), "{u}");
        }
    }

    // 2. serve: the scheduled cycle (it starts at once) and password checks
    let runs = history(&m).len();
    let mut srv = Served::start(&m);
    wait_for("a scheduled cycle", Duration::from_secs(60), || {
        let h = history(&m);
        h.len() > runs && !h[0]["finished_at"].is_null()
    });
    let cycle = history(&m)[0].clone();
    match expect {
        Expect::Fails(why) => {
            let err = cycle["error"].as_str().unwrap_or_default();
            assert!(
                err.contains(why) && err.contains(&hostile.url()),
                "the cycle's error: {cycle}"
            );
        }
        Expect::WithoutValue(_) => assert!(cycle["error"].is_null(), "{cycle}"),
    }
    let known = format!("{}u1", ou.to_lowercase());
    for _ in 0..2 {
        // the username search of a name the store does not know is attacked
        let r = srv.auth("mallory", "guess");
        assert!(r.starts_with("HTTP/1.1 "), "an answer: {r:?}");
        assert!(!r.contains("\"ok\":true"), "{r}");
        assert!(srv.alive() && srv.healthy(), "serve went down");
    }
    // a known user is still checked (by the stored DN, no search)
    let r = srv.auth(&known, &format!("{known}-Passw0rd"));
    assert!(r.ends_with("{\"ok\":true}"), "{r}");
    assert!(srv.alive() && srv.healthy(), "serve went down");
    let peak = srv.max_rss_kb();
    eprintln!("{ou}: serve peak RSS {peak} kB");
    assert!(peak < MAX_RSS_KB, "serve peaked at {peak} kB");
    assert_eq!(m.users(), after_sync, "serve changed the store");
}

#[test]
fn nesting_40000_deep_is_a_malformed_message() {
    under_attack(
        "H1",
        Attack::Nested(40_000),
        "",
        Expect::Fails("nested deeper than 32 levels"),
    );
}

#[test]
fn an_empty_message_is_a_malformed_message() {
    under_attack(
        "H2",
        Attack::EmptySequence,
        "",
        Expect::Fails("a message without a message ID"),
    );
}

#[test]
fn an_endless_message_fails_at_its_header() {
    under_attack(
        "H3",
        Attack::Endless,
        "",
        Expect::Fails("a message of 1099511627784 bytes, over the limit of 16777216 bytes (directory.max_message_bytes)"),
    );
}

#[test]
fn far_more_entries_than_the_page_size_change_nothing() {
    const WHY: &str = "the server sent more than 2000 entries (twice the page size asked for)";
    under_attack("H4", Attack::ManyEntries(300_000), "", Expect::Fails(WHY));
    // a first synchronization writes its creates while it reads: none stays
    let s = slapd();
    let hostile = Hostile::start(
        &format!("127.0.0.1:{}", s.port),
        &["inetOrgPerson", PAGED],
        Attack::ManyEntries(300_000),
    );
    let m = Mfa::new();
    m.apply(&config("H4", &hostile.url(), ""));
    let run = sync_full_measured(&m);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains(WHY), "{}", run.stderr);
    assert!(run.max_rss_kb < MAX_RSS_KB, "{} kB", run.max_rss_kb);
    assert!(m.users().is_empty(), "a failed first read created users");
}

/// A 50 MB value: over the default message cap, the read fails naming the
/// setting; with the cap raised to 64 MiB the user is synchronized without
/// the value (longer than 64 KiB: skipped, with a warning).
#[test]
fn a_50_mb_value_is_refused_or_skipped() {
    let huge = || Attack::HugeValue {
        dn_contains: "uid=h5u2,".into(),
        attribute: "description".into(),
        bytes: 50 << 20,
    };
    under_attack(
        "H5",
        huge(),
        "",
        Expect::Fails("over the limit of 16777216 bytes (directory.max_message_bytes)"),
    );
    under_attack(
        "H6",
        Attack::HugeValue {
            dn_contains: "uid=h6u2,".into(),
            attribute: "description".into(),
            bytes: 50 << 20,
        },
        "max_message_bytes = 67108864",
        Expect::WithoutValue("h6u2"),
    );
}
