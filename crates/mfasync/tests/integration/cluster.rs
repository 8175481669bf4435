//! Several `mfasync serve` processes on one real PostgreSQL database, with a
//! real slapd directory (issue 8): the sync runner killed with SIGKILL mid-sync
//! is replaced and the end state equals a clean full sync; a runner frozen
//! with SIGSTOP past its lease cannot commit when it wakes up; pinning; and
//! `db migrate` of a SQLite database into PostgreSQL.
//!
//! Run: `unshare --net bash -c 'ip link set lo up; cargo test --offline -p mfasync --test integration cluster::'`.

use crate::common::wait_for;
use crate::common::Mfa;
use mfasync_testkit::{Proxy, Slapd};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const BASE: &str = "dc=example,dc=com";
/// Users in ou=Big: a full cycle reads several pages of them.
const BIG: usize = 4000;
/// Directory bytes a runner's cycle receives before the test's proxy holds
/// the rest back: the cycle is then under way and cannot finish until the
/// proxy is resumed, however fast the machine or the sync code is.
const HOLD_AFTER: u64 = 64 * 1024;

/// A proxy to the test's slapd that pauses itself once a cycle has read
/// `HOLD_AFTER` bytes.
fn holding_proxy() -> Proxy {
    let p = Proxy::start(slapd().url.trim_start_matches("ldap://"));
    p.pause_after_down(HOLD_AFTER);
    p
}

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = format!("dn: ou=Groups,{BASE}\nobjectClass: organizationalUnit\nou: Groups\n\n");
        l.push_str(&format!(
            "dn: ou=Empty,{BASE}\nobjectClass: organizationalUnit\nou: Empty\n\n"
        ));
        for t in ["Mig", "Pin"] {
            l.push_str(&format!(
                "dn: ou={t},{BASE}\nobjectClass: organizationalUnit\nou: {t}\n\n"
            ));
            for i in 1..=3 {
                let uid = format!("{t}u{i}");
                l.push_str(&format!(
                    "dn: uid={uid},ou={t},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmobile: +1 425 555 010{i}\n\n"
                ));
            }
        }
        l.push_str(&mfasync_testkit::openldap_bulk(BIG, "Big"));
        Slapd::start(&l)
    })
}

fn config(ou: &str, extra: &str) -> String {
    config_via(&slapd().url, ou, extra)
}

/// The configuration with the directory reached at `url` (a [`Proxy`]).
fn config_via(url: &str, ou: &str, extra: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(
        &format!("\"{url}\""),
        BASE,
        60,
        (&s.admin_dn, &s.admin_password),
    );
    format!(
        r#"{head}
[sync]
interval = "1h"
{extra}
[[sync.items]]
kind = "container"
dn = "ou={ou},{BASE}"
"#
    )
}

fn pg() -> Mfa {
    let url = mfasync_testkit::shared_postgres().fresh_database();
    Mfa::with_url(url)
}

/// One `mfasync serve` process; its stderr is collected.
struct Server {
    name: String,
    addr: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(m: &Mfa, name: &str) -> Server {
        let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
            .args(["--database", &m.url, "serve", "--listen", addr.as_str()])
            .args(["--name", name, "--lease-seconds", "2"])
            .env("MFASYNC_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            name: name.to_string(),
            addr,
            child,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {sig} {}", self.name);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // a frozen server must be resumed to be killed cleanly (it may be gone)
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn servers(m: &Mfa) -> Value {
    m.ok(&["--json", "servers", "list"]).json()
}

fn runner(m: &Mfa) -> Option<String> {
    servers(m)["lease"]["runner"].as_str().map(str::to_string)
}

fn history(m: &Mfa) -> Vec<Value> {
    match m.ok(&["--json", "history", "--limit", "100"]).json() {
        Value::Array(v) => v,
        other => panic!("history is not an array: {other}"),
    }
}

fn audit_details(m: &Mfa, action: &str) -> Vec<String> {
    match m.ok(&["--json", "audit", "--limit", "100000"]).json() {
        Value::Array(v) => v
            .into_iter()
            .filter(|a| a["action"] == action)
            .map(|a| a["detail"].as_str().unwrap_or_default().to_string())
            .collect(),
        other => panic!("audit is not an array: {other}"),
    }
}

/// The users a clean full sync of `cfg` gives (in a fresh SQLite database).
fn clean_sync(cfg: &str) -> Vec<Value> {
    let clean = Mfa::new();
    clean.apply(cfg);
    clean.sync_full();
    clean.users()
}

#[test]
fn runner_killed_mid_sync_is_replaced_and_the_end_state_is_a_clean_full_sync() {
    let _ = slapd();
    let proxy = holding_proxy();
    let m = pg();
    let cfg = config_via(&proxy.ldap_url(), "Big", "");
    m.apply(&cfg);

    let mut a = Server::start(&m, "alpha");
    wait_for(
        "alpha to run synchronization",
        Duration::from_secs(20),
        || runner(&m).as_deref() == Some("alpha"),
    );
    let b = Server::start(&m, "beta");
    wait_for("beta to register", Duration::from_secs(20), || {
        servers(&m)["servers"]
            .as_array()
            .is_some_and(|s| s.len() == 2)
    });
    let list = servers(&m);
    let names: Vec<&str> = list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"], "{list}");
    assert_eq!(list["servers"][0]["runner"], true, "{list}");
    assert_eq!(list["servers"][1]["runner"], false, "{list}");
    assert_eq!(list["servers"][1]["alive"], true, "{list}");
    assert!(list["servers"][1]["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(list["lease"]["token"], 1, "{list}");

    // alpha's first cycle (a full one: no starting point) is reading the
    // directory, held by the proxy after HOLD_AFTER bytes: kill it
    assert!(
        proxy.wait_paused(Duration::from_secs(60)),
        "alpha's cycle never read {HOLD_AFTER} bytes: {}",
        a.log()
    );
    let h = history(&m);
    assert_eq!(h.len(), 1, "{h:?}");
    a.child.kill().expect("kill -9 alpha");
    a.child.wait().expect("reap alpha");
    let h = history(&m);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0]["finished_at"].is_null(), "{h:?}");
    // the rest of the directory flows again, for beta
    proxy.resume();
    assert!(
        !a.log().contains("applied the plan"),
        "alpha committed before it was killed: {}",
        a.log()
    );

    // beta takes over (token 2) and runs a cycle of its own
    wait_for("beta to take over", Duration::from_secs(30), || {
        runner(&m).as_deref() == Some("beta")
    });
    assert_eq!(servers(&m)["lease"]["token"], 2);
    wait_for("beta's cycle", Duration::from_secs(120), || {
        history(&m)
            .iter()
            .any(|r| !r["finished_at"].is_null() && r["error"].is_null())
    });
    let h = history(&m);
    let done: Vec<&Value> = h.iter().filter(|r| !r["finished_at"].is_null()).collect();
    assert_eq!(done.len(), 1, "{h:?}");
    assert_eq!(done[0]["mode"], "full", "{h:?}");
    assert_eq!(done[0]["created"], BIG as u64, "{h:?}");
    let took = audit_details(&m, "sync-lease");
    assert!(
        took.iter()
            .any(|d| d == "server beta took the sync lease, fencing token 2 (the lease of server alpha had expired)"),
        "{took:?}"
    );

    // the end state equals a clean full sync: nothing duplicated or lost
    let users = m.users();
    assert_eq!(users.len(), BIG);
    assert_eq!(users, clean_sync(&cfg));
    assert_eq!(audit_details(&m, "create").len(), BIG, "created once each");
    let list = servers(&m);
    let alpha = &list["servers"][0];
    assert_eq!(
        (alpha["name"].as_str(), alpha["runner"].as_bool()),
        (Some("alpha"), Some(false))
    );
    drop(b);
}

#[test]
fn runner_frozen_past_its_lease_cannot_commit_when_resumed() {
    let _ = slapd();
    let proxy = holding_proxy();
    let m = pg();
    m.apply(&config_via(&proxy.ldap_url(), "Big", ""));

    let a = Server::start(&m, "alpha");
    wait_for(
        "alpha to run synchronization",
        Duration::from_secs(20),
        || runner(&m).as_deref() == Some("alpha"),
    );
    // freeze alpha in the middle of its first cycle: it has read HOLD_AFTER
    // bytes of the directory and waits for the rest (held by the proxy)
    assert!(
        proxy.wait_paused(Duration::from_secs(60)),
        "alpha's cycle never read {HOLD_AFTER} bytes: {}",
        a.log()
    );
    a.signal("-STOP");
    let h = history(&m);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0]["finished_at"].is_null(), "{h:?}");
    // the rest flows into alpha's socket while it is frozen, and beta's
    // reads go through
    proxy.resume();
    // meanwhile the administrator changes the configuration: an item that
    // holds nobody. Whatever alpha computed is stale now.
    m.apply(&config_via(&proxy.ldap_url(), "Empty", ""));

    // beta starts, takes over once alpha's lease expired, and syncs
    let _b = Server::start(&m, "beta");
    wait_for("beta to take over", Duration::from_secs(30), || {
        runner(&m).as_deref() == Some("beta")
    });
    assert_eq!(servers(&m)["lease"]["token"], 2);
    wait_for("beta's cycle", Duration::from_secs(60), || {
        history(&m)
            .iter()
            .any(|r| !r["finished_at"].is_null() && r["error"].is_null())
    });
    assert!(m.users().is_empty(), "beta's cycle holds nobody");

    // alpha wakes up: its commit is refused, nothing of it lands
    a.signal("-CONT");
    let alpha_run = h[0]["id"].clone();
    wait_for("alpha's cycle to end", Duration::from_secs(120), || {
        history(&m)
            .iter()
            .any(|r| r["id"] == alpha_run && !r["finished_at"].is_null())
    });
    let h = history(&m);
    let run = h.iter().find(|r| r["id"] == alpha_run).unwrap();
    let err = run["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("server alpha does not hold the sync lease (its fencing token 1 is not the current 2, now held by server beta): nothing committed"),
        "alpha's run: {run}"
    );
    assert!(
        a.log().contains("sync cycle failed, nothing changed"),
        "{}",
        a.log()
    );
    assert!(m.users().is_empty(), "alpha's stale plan was not applied");
    assert_eq!(audit_details(&m, "create").len(), 0);
    // and it knows it is no longer the runner
    wait_for("alpha to step down", Duration::from_secs(20), || {
        a.log()
            .contains("server alpha no longer runs synchronization")
    });
    assert_eq!(runner(&m).as_deref(), Some("beta"));
}

#[test]
fn pinned_server_runs_synchronization_and_unpinning_restores_failover() {
    let _ = slapd();
    let m = pg();
    m.apply(&config("Pin", ""));
    let a = Server::start(&m, "alpha");
    wait_for(
        "alpha to run synchronization",
        Duration::from_secs(20),
        || runner(&m).as_deref() == Some("alpha"),
    );
    // pinning an unknown server is refused
    let o = m.run(&["servers", "pin", "gamma"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("no server named \"gamma\""),
        "{}",
        o.stderr
    );

    let b = Server::start(&m, "beta");
    wait_for("beta to register", Duration::from_secs(20), || {
        servers(&m)["servers"]
            .as_array()
            .is_some_and(|s| s.len() == 2)
    });
    m.ok(&["servers", "pin", "beta"]);
    // alpha gives the lease up at its next renewal; beta takes it and syncs
    wait_for("beta to take over", Duration::from_secs(20), || {
        runner(&m).as_deref() == Some("beta")
    });
    let list = servers(&m);
    assert_eq!(list["lease"]["pinned"], "beta", "{list}");
    assert_eq!(list["servers"][1]["pinned"], true, "{list}");
    assert!(audit_details(&m, "sync-lease")
        .iter()
        .any(|d| d
            == "server alpha gave the sync lease up: synchronization is pinned to server beta"));
    wait_for("beta's users", Duration::from_secs(30), || {
        m.users().len() == 3
    });

    // every server answers the API and the portal's Servers page, with the
    // same document as `servers list --json`
    let o = m.run_stdin(
        &["admin", "set-password", "root", "--password-stdin"],
        "correct horse battery",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    for srv in [&a, &b] {
        let session = sign_in(&srv.addr, "root", "correct horse battery");
        let (status, body) = http(
            &srv.addr,
            "GET",
            "/api/v1/servers",
            &[("authorization", &format!("Bearer {session}"))],
            "",
        );
        assert_eq!(status, 200, "{body}");
        let api: Value = serde_json::from_str(&body).unwrap();
        let cli = servers(&m);
        // the same document (the expiry moves with every renewal in between)
        let lease = |v: &Value| {
            let mut l = v["lease"].clone();
            assert!(l["expires_at"].is_string(), "{v}");
            l["expires_at"] = Value::Null;
            l
        };
        assert_eq!(lease(&api), lease(&cli));
        assert_eq!(api["servers"].as_array().unwrap().len(), 2);
        assert_eq!(api["servers"][1]["name"], "beta");
        assert_eq!(api["servers"][1]["runner"], true);
        let (status, _) = http(&srv.addr, "GET", "/api/v1/servers", &[], "");
        assert_eq!(status, 401, "the API needs a token");
        let (status, page) = http(
            &srv.addr,
            "GET",
            "/servers",
            &[("cookie", &format!("mfasync_session={session}"))],
            "",
        );
        assert_eq!(status, 200, "{page}");
        assert!(
            page.contains("pinned</strong> to server <strong>beta</strong>"),
            "{page}"
        );
        assert!(page.contains("<td>beta</td>"), "{page}");
        assert!(page.contains("runs synchronization, pinned"), "{page}");
    }

    // pinned: when beta stops, alpha does NOT take over
    drop(b);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(runner(&m), None, "pinned to a stopped server: nobody runs");
    // unpinned on the portal (the seed's choice, on alpha): automatic again
    let session = sign_in(&a.addr, "root", "correct horse battery");
    let cookie_header = format!("mfasync_session={session}");
    let (_, page) = http(
        &a.addr,
        "GET",
        "/servers",
        &[("cookie", &cookie_header)],
        "",
    );
    let csrf = csrf_of(&page);
    let origin = format!("http://{}", a.addr);
    let post = |body: String| {
        http(
            &a.addr,
            "POST",
            "/servers/pin",
            &[
                ("cookie", &cookie_header),
                ("origin", &origin),
                ("sec-fetch-site", "same-origin"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &body,
        )
    };
    let (status, page) = post(format!("csrf={}&server=gamma", form_encode(&csrf)));
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("No server named gamma has registered."),
        "{page}"
    );
    let (status, page) = post("csrf=wrong&server=".to_string());
    assert_eq!(
        status, 403,
        "a form without the session's CSRF token: {page}"
    );
    assert_eq!(servers(&m)["lease"]["pinned"], "beta", "nothing changed");
    let (status, page) = post(format!("csrf={}&server=", form_encode(&csrf)));
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Synchronization is automatic again."),
        "{page}"
    );
    let pins = audit_details(&m, "servers-pin");
    assert_eq!(
        pins.first().map(String::as_str),
        Some("synchronization no longer pinned: any server may run it"),
        "{pins:?}"
    );
    // (the CLI says the same)
    let lease = m.ok(&["--json", "servers", "unpin"]).json();
    assert_eq!(lease["pinned"], Value::Null, "{lease}");
    wait_for("alpha to take over", Duration::from_secs(20), || {
        runner(&m).as_deref() == Some("alpha")
    });
    drop(a);
}

/// A `sync` command whose directory read outlasts its lease (30 s) keeps
/// renewing it while the read blocks, so its commit is not fenced.
#[test]
fn cli_sync_held_longer_than_its_lease_renews_it_and_commits() {
    let _ = slapd();
    let proxy = holding_proxy();
    let m = pg();
    m.apply(&config_via(&proxy.ldap_url(), "Big", ""));
    let child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "--json", "sync", "--full"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        proxy.wait_paused(Duration::from_secs(60)),
        "the sync never read {HOLD_AFTER} bytes"
    );
    // longer than the CLI's 30 s lease
    std::thread::sleep(Duration::from_secs(40));
    let lease = &servers(&m)["lease"];
    assert!(
        lease["runner"]
            .as_str()
            .is_some_and(|r| r.starts_with("cli:")),
        "the command's lease ran out while it read: {lease}"
    );
    proxy.resume();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["created"], BIG, "{out}");
}

#[test]
fn cli_sync_and_approvals_take_the_lease_or_are_refused_while_a_server_runs_synchronization() {
    let _ = slapd();
    let m = pg();
    m.apply(&config("Mig", ""));

    // no server: the CLI takes the lease for its cycle and gives it up
    let out = m.ok(&["--json", "sync", "--full"]).json();
    assert_eq!(out["created"], 3, "{out}");
    let lease = &servers(&m)["lease"];
    assert_eq!(lease["runner"], Value::Null, "given up: {lease}");
    assert_eq!(lease["token"], 1, "{lease}");
    let took = audit_details(&m, "sync-lease");
    assert!(
        took.iter().any(|d| d.starts_with("server cli:")
            && d.ends_with("took the sync lease, fencing token 1 (it was free)")),
        "{took:?}"
    );

    // a command on this host still running holds the lease: refused; once
    // its process is gone (killed), the next command gives its lease up
    let host = hostname::get().unwrap().into_string().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(mfasync_store::open(&m.url)).unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let live = format!("cli:{host}:{}", std::process::id());
    rt.block_on(store.lease_acquire(&live, "i1", now, 60_000))
        .unwrap();
    let o = m.run(&["sync"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "another mfasync command ({live}) holds the sync lease of this database: try again when it ends"
        )),
        "{}",
        o.stderr
    );
    rt.block_on(store.lease_release(&live, "i1")).unwrap();
    let dead = format!("cli:{host}:{gone_pid}");
    rt.block_on(store.lease_acquire(&dead, "i2", now, 60_000))
        .unwrap();
    m.ok(&["sync"]);
    let lease = &servers(&m)["lease"];
    assert_eq!(lease["runner"], Value::Null, "{lease}");
    assert_eq!(lease["token"], 4, "{lease}");

    // a server runs synchronization: the CLI is refused, nothing changes
    let mut a = Server::start(&m, "alpha");
    wait_for(
        "alpha to run synchronization",
        Duration::from_secs(20),
        || runner(&m).as_deref() == Some("alpha"),
    );
    assert_eq!(servers(&m)["lease"]["token"], 5);
    // (runs 1 and 2 were the CLI's)
    wait_for("alpha's first cycle", Duration::from_secs(20), || {
        history(&m)
            .iter()
            .any(|r| !r["finished_at"].is_null() && r["error"].is_null() && r["id"] == 3)
    });
    let runs = history(&m).len();
    assert_eq!(runs, 3);
    for args in [&["sync"][..], &["sync", "--full"], &["--json", "sync"]] {
        let o = m.run(args);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains(&format!(
                "server alpha (listening on {}) runs synchronization on this database: use its portal (Synchronize Now) or POST /api/v1/sync there",
                a.addr
            )),
            "{}",
            o.stderr
        );
    }
    let o = m.run(&["approvals", "approve", "abc"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("use its portal (Approvals) or POST /api/v1/approvals/ID/approve there"),
        "{}",
        o.stderr
    );
    let o = m.run(&["approvals", "reject", "abc"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("runs synchronization"), "{}", o.stderr);
    // (a plan changes nothing: always allowed)
    let plan = m.ok(&["--json", "sync", "--plan"]).json();
    assert_eq!(plan["changes"], serde_json::json!([]), "{plan}");
    let lease = &servers(&m)["lease"];
    assert_eq!(
        (lease["runner"].as_str(), lease["token"].as_i64()),
        (Some("alpha"), Some(5)),
        "the refused commands left the lease alone: {lease}"
    );
    assert_eq!(
        history(&m).len(),
        runs,
        "the refused commands recorded no run"
    );
    assert_eq!(m.users().len(), 3);

    // alpha stops cleanly (gives the lease up): the CLI runs again
    a.signal("-TERM");
    a.child.wait().expect("reap alpha");
    assert_eq!(runner(&m), None);
    m.ok(&["sync"]);
    assert_eq!(servers(&m)["lease"]["token"], 6);
    // and a server takes over afterwards
    let _b = Server::start(&m, "beta");
    wait_for("beta to take over", Duration::from_secs(20), || {
        runner(&m).as_deref() == Some("beta")
    });
    assert_eq!(servers(&m)["lease"]["token"], 7);
    assert_eq!(m.users().len(), 3);
}

#[test]
fn synchronize_now_on_a_server_that_does_not_run_synchronization_is_handed_to_the_runner() {
    let _ = slapd();
    let m = pg();
    m.apply(&config("Mig", ""));
    let a = Server::start(&m, "alpha");
    wait_for(
        "alpha to run synchronization",
        Duration::from_secs(20),
        || runner(&m).as_deref() == Some("alpha"),
    );
    let done = |m: &Mfa| {
        history(m)
            .iter()
            .filter(|r| !r["finished_at"].is_null() && r["error"].is_null())
            .count()
    };
    wait_for("alpha's first cycle", Duration::from_secs(30), || {
        done(&m) == 1
    });
    let b = Server::start(&m, "beta");
    wait_for("beta to register", Duration::from_secs(20), || {
        servers(&m)["servers"]
            .as_array()
            .is_some_and(|s| s.len() == 2)
    });
    let o = m.run_stdin(
        &["admin", "set-password", "root", "--password-stdin"],
        "correct horse battery",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);

    // on beta: queued for alpha, 202 with who runs it
    let session = sign_in(&b.addr, "root", "correct horse battery");
    let bearer = format!("Bearer {session}");
    let (status, body) = http(
        &b.addr,
        "POST",
        "/api/v1/sync?full=true",
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": "queued", "full": true,
                           "requested_on": "beta", "handed_to": "alpha"})
    );
    // approving on beta is refused before anything is read, naming alpha
    let (status, body) = http(
        &b.addr,
        "POST",
        "/api/v1/approvals/abc/approve",
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains(
            "cannot approve: server beta does not run synchronization: approve on server alpha, which does"
        ),
        "{body}"
    );
    // alpha picks it up at its next heartbeat (its own interval is 1 h)
    wait_for("the handed-over cycle", Duration::from_secs(30), || {
        done(&m) == 2
    });
    let h = history(&m);
    assert_eq!(h[0]["mode"], "full", "the request's full flag: {h:?}");
    assert_eq!(
        audit_details(&m, "sync-requested"),
        ["full synchronization requested on server beta, handed to server alpha"]
    );
    assert!(
        a.log()
            .contains("synchronization requested by admin on server beta"),
        "{}",
        a.log()
    );
    assert_eq!(m.users().len(), 3);

    // on alpha itself: the cycle runs there and answers with its counts
    let session = sign_in(&a.addr, "root", "correct horse battery");
    let (status, body) = http(
        &a.addr,
        "POST",
        "/api/v1/sync",
        &[("authorization", &format!("Bearer {session}"))],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["mode"].is_string(), "{v}");
    assert_eq!(v["created"], 0, "{v}");
    assert_eq!(done(&m), 3);
    assert_eq!(audit_details(&m, "sync-requested").len(), 1);

    // the portal's Synchronize Now on beta says where the request went
    let cookie_header = format!("mfasync_session={}", bearer.trim_start_matches("Bearer "));
    let (_, page) = http(
        &b.addr,
        "GET",
        "/servers",
        &[("cookie", &cookie_header)],
        "",
    );
    let csrf = csrf_of(&page);
    let origin = format!("http://{}", b.addr);
    let (status, head, _) = http_full(
        &b.addr,
        "POST",
        "/sync",
        &[
            ("cookie", &cookie_header),
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &format!("csrf={}&from=history", form_encode(&csrf)),
    );
    assert_eq!(status, 303, "{head}");
    let progress = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap_or_else(|| panic!("no location in {head}"))
        .trim()
        .to_string();
    let mut page = String::new();
    wait_for(
        "the progress page's result",
        Duration::from_secs(20),
        || {
            page = http(&b.addr, "GET", &progress, &[("cookie", &cookie_header)], "").1;
            page.contains("sync-result")
        },
    );
    assert!(
        page.contains("This server (beta) does not run synchronization: the request was handed to server alpha"),
        "{page}"
    );
    wait_for(
        "the second handed-over cycle",
        Duration::from_secs(30),
        || done(&m) == 4,
    );
    assert_eq!(
        audit_details(&m, "sync-requested")[0],
        "synchronization requested on server beta, handed to server alpha"
    );
}

#[test]
fn db_migrate_copies_a_sqlite_database_into_postgres_verified() {
    let _ = slapd();
    let src = Mfa::new();
    src.apply(&config("Mig", "approval_threshold = 1"));
    src.sync_full();
    // a held approval: the item moves to an OU without these users
    src.apply(&config("Empty", "approval_threshold = 1"));
    src.sync_full();
    let approvals = src.ok(&["--json", "approvals", "list"]).json();
    assert_eq!(approvals.as_array().map(Vec::len), Some(1), "{approvals}");
    let o = src.run_stdin(
        &["admin", "set-password", "root", "--password-stdin"],
        "correct horse battery",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);

    let dst = pg();
    let o = src.ok(&["--json", "db", "migrate", "--to", &dst.url]);
    let report = o.json();
    let rows = |t: &str| {
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["table"] == t)
            .unwrap_or_else(|| panic!("no table {t} in {report}"))["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("users"), 3);
    assert_eq!(rows("config_versions"), 2);
    assert_eq!(rows("sync_runs"), 2);
    assert_eq!(rows("approvals"), 1);
    assert_eq!(rows("admins"), 1);
    assert_eq!(rows("watermark"), 1);
    assert!(rows("audit") >= 6, "{report}");
    assert_eq!(
        report["skipped"],
        serde_json::json!(["servers", "sync_lease"])
    );

    // the same data, read through the product on both sides
    assert_eq!(dst.users(), src.users());
    for args in [
        &["--json", "approvals", "list"][..],
        &["--json", "history", "--limit", "100"],
        &["--json", "audit", "--limit", "1000"],
        &["config", "export"],
    ] {
        assert_eq!(dst.ok(args).stdout, src.ok(args).stdout, "{args:?}");
    }

    // a second copy into the now non-empty target is refused...
    let o = src.run(&["db", "migrate", "--to", &dst.url]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("the target database is not empty"),
        "{}",
        o.stderr
    );
    // ...unless asked to replace it
    let again = src
        .ok(&["--json", "db", "migrate", "--to", &dst.url, "--overwrite"])
        .json();
    assert_eq!(
        again["tables"], report["tables"],
        "same counts and checksums"
    );
    // the copy is a working database: new rows get fresh ids
    dst.apply(&config("Mig", ""));
    dst.sync_full();
    let h = history(&dst);
    assert_eq!(h.len(), 3);
    assert_eq!(h[0]["id"], 3);
    assert_eq!(dst.users().len(), 3);
}

/// One HTTP/1.1 request; (status, body). `headers` are sent as given.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

fn http_full(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // chunked bodies: keep only the text (the JSON/HTML checks look inside)
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The CSRF token of a portal page's forms.
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no csrf in {page}"))
        .to_string()
}

fn cookie(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| {
            v.trim()
                .strip_prefix(&format!("{name}="))
                .map(str::to_string)
        })
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no cookie {name} in {head}"))
}

fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sign in to the portal; the session token (also a bearer token for the API).
fn sign_in(addr: &str, user: &str, password: &str) -> String {
    let (status, head, page) = http_full(addr, "GET", "/login", &[], "");
    assert_eq!(status, 200, "{page}");
    let login = cookie(&head, "mfasync_login");
    let field = page
        .split("name=\"login_csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no login_csrf in {page}"))
        .to_string();
    let body = format!(
        "username={}&password={}&login_csrf={}",
        form_encode(user),
        form_encode(password),
        form_encode(&field)
    );
    let origin = format!("http://{addr}");
    let (status, head, _) = http_full(
        addr,
        "POST",
        "/login",
        &[
            ("cookie", &format!("mfasync_login={login}")),
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &body,
    );
    assert_eq!(status, 303, "{head}");
    cookie(&head, "mfasync_session")
}
