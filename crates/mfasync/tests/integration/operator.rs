//! What an operator meets at the command line and in the portal, end to end
//! against a real slapd (issue 18, the smaller items): directory values
//! shown safely on a terminal; database URLs that cannot be opened, an
//! unreachable PostgreSQL, a read-only database; portal sessions that end
//! with a password change, `admin remove`; API tokens that expire; a sync
//! killed mid-cycle shown as interrupted; audit retention.

use crate::common::KillOnDrop;

use crate::common::{Mfa, Out};
use mfasync_testkit::Slapd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const BASE: &str = "dc=example,dc=com";

/// Usernames that try to drive the administrator's terminal: clear the
/// screen, set the window title, forge a line.
const HOSTILE: &[&str] = &[
    "\u{1b}[2J\u{1b}[Hmallory",
    "\u{1b}]0;pwned\u{7}eve",
    "line\nforged",
];

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn ou(name: &str) -> String {
    format!("dn: ou={name},{BASE}\nobjectClass: organizationalUnit\nou: {name}\n\n")
}

fn person(team: &str, cn: &str, uid: &str) -> String {
    format!(
        "dn: cn={cn},ou={team},{BASE}\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: {cn}\nuid:: {}\n\n",
        b64(uid.as_bytes())
    )
}

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = ou("Ansi");
        l.push_str(&person("Ansi", "keeper", "keeper"));
        l.push_str(&ou("Groups"));
        l.push_str(&mfasync_testkit::openldap_bulk(1500, "Kill"));
        l.push_str(&ou("Ro"));
        for uid in ["ro1", "ro2"] {
            l.push_str(&person("Ro", uid, uid));
        }
        for (i, name) in HOSTILE.iter().enumerate() {
            l.push_str(&person("Ansi", &format!("evil{i}"), name));
        }
        Slapd::start(&l)
    })
}

fn config(team: &str, sync: &str) -> String {
    config_via(&slapd().url, team, sync)
}

fn config_via(server: &str, team: &str, sync: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(
        &format!("\"{server}\""),
        BASE,
        5,
        (&s.admin_dn, &s.admin_password),
    );
    format!(
        "{head}\n[sync]\n{sync}\n[[sync.items]]\nkind = \"container\"\ndn = \"ou={team},{BASE}\"\n"
    )
}

/// Human output must show a control character escaped and never send it.
fn assert_escaped(what: &str, text: &str) {
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{what} sent a control character to the terminal: {text:?}"
    );
}

#[test]
fn control_characters_from_the_directory_never_reach_the_terminal() {
    let m = Mfa::new();
    m.apply(&config("Ansi", "approval_threshold = 1"));
    let plan = m.ok(&["sync", "--plan"]);
    assert_escaped("sync --plan", &plan.stdout);
    assert!(
        plan.stdout.contains("\\u{1b}[2J\\u{1b}[Hmallory"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("line\\nforged"), "{}", plan.stdout);
    m.sync_full();
    assert!(m.user(HOSTILE[0]).is_some(), "stored as it is");

    for (i, _) in HOSTILE.iter().enumerate() {
        slapd().ldapdelete(&format!("cn=evil{i},ou=Ansi,{BASE}"));
    }
    let held = m.ok(&["--json", "sync", "--full"]).json();
    assert!(held["pending_approval"].is_object(), "{held}");

    let list = m.ok(&["approvals", "list"]);
    assert_escaped("approvals list", &list.stdout);
    for shown in [
        "\\u{1b}[2J\\u{1b}[Hmallory",
        "\\u{1b}]0;pwned\\u{7}eve",
        "line\\nforged",
    ] {
        assert!(list.stdout.contains(shown), "{shown} in {}", list.stdout);
    }
    // JSON keeps the values exactly (escaped by JSON itself)
    let json = m.ok(&["--json", "approvals", "list"]);
    assert_escaped("approvals list --json", &json.stdout);
    let removed = json.json()[0]["remove"].clone();
    assert!(
        removed
            .as_array()
            .is_some_and(|r| r.iter().any(|u| u == HOSTILE[0])),
        "{removed}"
    );

    let audit = m.ok(&["audit", "--limit", "20"]);
    assert_escaped("audit", &audit.stdout);
    assert!(audit.stdout.contains("\\u{1b}[2J"), "{}", audit.stdout);
    let history = m.ok(&["history"]);
    assert_escaped("history", &history.stdout);
}

/// Run mfasync as the unprivileged user nobody (tests run as root, who may
/// write anything; an operator may not).
fn run_as_nobody(url: &str, args: &[&str]) -> Out {
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn database_urls_that_cannot_be_opened_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}/no/such/dir/mfa.db", dir.path().display());
    let o = Mfa::with_url(missing).run(&["history"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("no/such/dir does not exist"),
        "{}",
        o.stderr
    );

    let o = Mfa::with_url("mysql://mfa:hunter2@db/mfa".into()).run(&["history"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("unsupported database URL"),
        "{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("hunter2"),
        "a password is never shown: {}",
        o.stderr
    );

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "not a database, just text\n".repeat(100)).unwrap();
    let o = Mfa::with_url(format!("sqlite://{}", junk.display())).run(&["history"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("not a database"), "{}", o.stderr);

    // an operator who may not create the file
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    chmod(dir.path(), 0o755);
    chmod(&closed, 0o555);
    let url = format!("sqlite://{}/mfa.db", closed.display());
    let o = run_as_nobody(&url, &["history"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("is not writable by this user"),
        "{}",
        o.stderr
    );
}

#[test]
fn an_unreachable_postgresql_fails_within_the_connect_timeout() {
    // nothing listens
    let port = mfasync_testkit::free_port();
    let m = Mfa::with_url(format!("postgres://mfa:hunter2@127.0.0.1:{port}/mfa"));
    let o = m.run(&["--connect-timeout", "2", "history"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}")),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("hunter2"), "{}", o.stderr);

    // a listener that accepts (the kernel's backlog) and never answers
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let m = Mfa::with_url(format!("postgres://mfa@127.0.0.1:{port}/mfa"));
    let o = m.run(&["--connect-timeout", "1", "history"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("no answer within 1 s (--connect-timeout)"),
        "{}",
        o.stderr
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "users", "export"])
        .env("MFASYNC_CONNECT_TIMEOUT", "1s")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    assert!(err.contains("no answer within 1 s"), "{err}");
    drop(listener);
}

#[test]
fn read_only_commands_work_on_a_read_only_database() {
    let m = Mfa::new();
    chmod(m.dir.path(), 0o755);
    m.apply(&config("Ro", ""));
    m.sync_full();
    let db = m.dir.path().join("mfa.db");
    chmod(&db, 0o444);
    let readers: &[&[&str]] = &[
        &["users", "export", "--format", "json"],
        &["config", "export"],
        &["history"],
        &["audit"],
        &["approvals", "list"],
        &["--json", "history"],
    ];
    let expected: Vec<String> = readers.iter().map(|a| m.ok(a).stdout).collect();
    // twice: with the -wal/-shm files that a running process leaves, and
    // without them (closed cleanly: SQLite cannot create them here)
    for round in ["with -shm", "without -shm"] {
        if round == "without -shm" {
            chmod(m.dir.path(), 0o755);
            m.ok(&["sync", "--full"]); // closes: the WAL checkpointed and truncated
            let (wal, shm) = (
                m.dir.path().join("mfa.db-wal"),
                m.dir.path().join("mfa.db-shm"),
            );
            // SQLite removes the side files when the last of the pool's connections
            // closes, unless two close at once; then they stay, the WAL empty
            if shm.exists() {
                assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
                let _ = std::fs::remove_file(&wal);
                std::fs::remove_file(&shm).unwrap();
            }
        }
        chmod(m.dir.path(), 0o555);
        for (args, want) in readers.iter().zip(&expected) {
            let o = run_as_nobody(&m.url, args);
            assert_eq!(o.code, 0, "{round}: {args:?}: {}", o.stderr);
            if args.contains(&"export") {
                assert_eq!(&o.stdout, want, "{round}: {args:?}");
            }
            assert!(!o.stdout.is_empty(), "{round}: {args:?}");
        }
        let p = m.config_file(&config("Ro", ""));
        let o = run_as_nobody(&m.url, &["config", "apply", p.to_str().unwrap()]);
        assert_eq!(o.code, 1, "a write is refused: {}", o.stderr);
        assert!(o.stderr.contains("readonly database"), "{}", o.stderr);
    }
    chmod(m.dir.path(), 0o755);
}

/// `mfasync serve` on a free port, killed when dropped.
struct Served {
    /// Killed when the test ends.
    _child: KillOnDrop,
    base: String,
}

async fn serve(m: &Mfa) -> Served {
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let base = format!("http://{addr}");
    // (killed and waited for when dropped)
    let served = Served {
        _child: KillOnDrop(child),
        base,
    };
    for _ in 0..100 {
        if reqwest::get(format!("{}/healthz", served.base))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return served;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("serve did not come up on {addr}");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` set by a response.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

/// Sign in to the portal: the session cookie.
async fn sign_in(base: &str, user: &str, password: &str) -> Option<String> {
    let c = client();
    let page = c.get(format!("{base}/login")).send().await.ok()?;
    let login = set_cookie(&page, "mfasync_login")?;
    let html = page.text().await.ok()?;
    let marker = "name=\"login_csrf\" value=\"";
    let start = html.find(marker)? + marker.len();
    let csrf = &html[start..start + html[start..].find('"')?];
    let resp = c
        .post(format!("{base}/login"))
        .header("cookie", format!("mfasync_login={login}"))
        .form(&[
            ("username", user),
            ("password", password),
            ("login_csrf", csrf),
        ])
        .send()
        .await
        .ok()?;
    set_cookie(&resp, "mfasync_session")
}

/// Whether a session cookie still opens the portal's home page.
async fn signed_in(base: &str, session: &str) -> bool {
    let r = client()
        .get(format!("{base}/"))
        .header("cookie", format!("mfasync_session={session}"))
        .send()
        .await
        .unwrap();
    r.status() == 200
}

fn set_password(m: &Mfa, user: &str, password: &str) {
    let o = m.run_stdin(
        &["admin", "set-password", user, "--password-stdin"],
        password,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[tokio::test]
async fn sessions_end_when_the_password_changes_and_removed_admins_lose_access() {
    let m = Mfa::new();
    m.apply(&config("Ro", "enabled = false"));
    set_password(&m, "alice", "first-Passw0rd-alice");
    set_password(&m, "bob", "first-Passw0rd-bob");
    let srv = serve(&m).await;
    let base = srv.base.clone();

    let alice = sign_in(&base, "alice", "first-Passw0rd-alice")
        .await
        .expect("signed in");
    let bob = sign_in(&base, "bob", "first-Passw0rd-bob")
        .await
        .expect("signed in");
    assert!(signed_in(&base, &alice).await);
    set_password(&m, "alice", "second-Passw0rd-alice");
    assert!(
        !signed_in(&base, &alice).await,
        "the old session ended with the password"
    );
    assert!(
        signed_in(&base, &bob).await,
        "other administrators stay signed in"
    );
    assert!(sign_in(&base, "alice", "first-Passw0rd-alice")
        .await
        .is_none());
    let alice = sign_in(&base, "alice", "second-Passw0rd-alice")
        .await
        .expect("new password");
    assert!(signed_in(&base, &alice).await);

    // an API token acting for alice
    let token = "operator-test-token-0123456789";
    let store = mfasync_store::open(&m.url).await.unwrap();
    crate::common::add_api_token(store.as_ref(), "alice", "script", token).await;
    let api = |t: &'static str| {
        let base = base.clone();
        async move {
            client()
                .get(format!("{base}/api/v1/users"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(api(token).await, 200);

    let o = m.run(&["admin", "remove", "nobody-such"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("no local administrator"), "{}", o.stderr);
    let o = m.ok(&["--json", "admin", "remove", "alice"]).json();
    assert_eq!(o["sessions_ended"], 1, "{o}");
    assert_eq!(o["tokens_revoked"], 1, "{o}");
    assert!(
        !signed_in(&base, &alice).await,
        "a removed administrator's session ends"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // tokens are re-read each second
    assert_eq!(api(token).await, 401, "and its API tokens stop working");
    assert!(sign_in(&base, "alice", "second-Passw0rd-alice")
        .await
        .is_none());

    // the last one stays while nobody else could sign in
    let o = m.run(&["admin", "remove", "bob"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("last local administrator"),
        "{}",
        o.stderr
    );
    assert!(signed_in(&base, &bob).await);

    let audit = m.ok(&["--json", "audit"]).json();
    let removed = audit
        .as_array()
        .and_then(|a| a.iter().find(|e| e["action"] == "admin-removed"))
        .cloned()
        .expect("audited");
    assert!(
        removed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("alice") && d.contains("1 API token")),
        "{removed}"
    );
    let password = audit
        .as_array()
        .and_then(|a| {
            a.iter().find(|e| {
                e["action"] == "admin-password"
                    && e["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("session(s) ended"))
            })
        })
        .cloned();
    assert!(
        password.is_some(),
        "the ended sessions are audited: {audit}"
    );
}

/// The value of the hidden input `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden input") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn api_tokens_may_carry_an_expiry() {
    let m = Mfa::new();
    m.apply(&config("Ro", "enabled = false"));
    set_password(&m, "carol", "carol-Passw0rd-tokens");
    let srv = serve(&m).await;
    let base = srv.base.clone();
    let session = sign_in(&base, "carol", "carol-Passw0rd-tokens")
        .await
        .expect("signed in");
    let cookie = format!("mfasync_session={session}");
    let page = client()
        .get(format!("{base}/tokens"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden(&page, "csrf");
    let create = |label: &'static str, expires: &'static str| {
        let (base, cookie, csrf) = (base.clone(), cookie.clone(), csrf.clone());
        async move {
            let r = client()
                .post(format!("{base}/tokens"))
                .header("cookie", cookie)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("label", label),
                    ("expires", expires),
                ])
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, page) = create("nope", "2020-01-01").await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("not in the future"), "{page}");

    let (status, page) = create("short-lived", "3s").await;
    assert_eq!(status, 200, "{page}");
    let marker = "<code id=\"new-token\">";
    let start = page.find(marker).expect("the new token is shown") + marker.len();
    let token = page[start..start + page[start..].find('<').unwrap()].to_string();
    let (_, page) = create("forever", "").await;
    let rows: Vec<&str> = page.split("<tr>").collect();
    let short = rows
        .iter()
        .find(|r| r.contains("short-lived"))
        .expect("listed");
    let year = time::OffsetDateTime::now_utc().year().to_string();
    assert!(
        // a readable time (the stored one in its title)
        short.contains(&format!("\">{year}-")) && short.matches(&year).count() >= 2,
        "the expiry is shown: {short}"
    );
    let forever = rows.iter().find(|r| r.contains("forever")).expect("listed");
    assert!(forever.contains("<td>never</td>"), "{forever}");

    let users = |t: String| {
        let base = base.clone();
        async move {
            client()
                .get(format!("{base}/api/v1/users"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(users(token.clone()).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(users(token).await, 401, "an expired token is refused");
}

fn history(m: &Mfa) -> Vec<serde_json::Value> {
    match m.ok(&["--json", "history"]).json() {
        serde_json::Value::Array(v) => v,
        other => panic!("history is not an array: {other}"),
    }
}

#[test]
fn a_sync_killed_mid_cycle_is_shown_as_interrupted() {
    let s = slapd();
    // the proxy holds the directory's answers back once the cycle is reading
    let proxy = mfasync_testkit::Proxy::start(&format!("127.0.0.1:{}", s.port));
    proxy.pause_after_down(32 * 1024);
    let m = Mfa::new();
    m.apply(&config_via(&proxy.ldap_url(), "Kill", ""));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "sync", "--full"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        proxy.wait_paused(std::time::Duration::from_secs(30)),
        "the cycle reads"
    );
    let runs = history(&m);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "running", "{runs:?}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let runs = history(&m);
    assert_eq!(runs[0]["status"], "interrupted", "{runs:?}");
    assert_eq!(runs[0]["finished_at"], serde_json::Value::Null);
    let human = m.ok(&["history"]).stdout;
    assert!(human.contains("full interrupted"), "{human}");
    assert!(m.users().is_empty(), "nothing was committed");

    // the next cycle marks it for good and runs
    proxy.resume();
    m.sync_full();
    let runs = history(&m);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["status"], "ok", "{runs:?}");
    assert_eq!(runs[1]["status"], "interrupted", "{runs:?}");
    assert_eq!(m.users().len(), 1500);
}

/// Make the audit entries of `action` look `days` old.
async fn age_audit(m: &Mfa, action: &str) {
    let pool = sqlx::SqlitePool::connect(&m.url).await.unwrap();
    sqlx::query("UPDATE audit SET at = '2020-01-01T00:00:00Z' WHERE action = $1")
        .bind(action)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

fn audit_actions(m: &Mfa) -> Vec<(String, String)> {
    match m.ok(&["--json", "audit", "--limit", "1000"]).json() {
        serde_json::Value::Array(v) => v
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or_default().to_string(),
                    e["detail"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        other => panic!("audit is not an array: {other}"),
    }
}

#[tokio::test]
async fn audit_entries_older_than_the_retention_are_purged_and_the_purge_is_audited() {
    let m = Mfa::new();
    m.apply(&format!(
        "{}\n[audit]\nretention = \"30d\"\n",
        config("Ro", "")
    ));
    m.sync_full();
    let creates = |m: &Mfa| {
        audit_actions(m)
            .iter()
            .filter(|(a, _)| a == "create")
            .count()
    };
    assert_eq!(creates(&m), 2);

    // after a sync cycle
    age_audit(&m, "create").await;
    m.sync_full();
    let actions = audit_actions(&m);
    assert_eq!(creates(&m), 0, "{actions:?}");
    let purged: Vec<&String> = actions
        .iter()
        .filter(|(a, _)| a == "audit-purged")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(purged.len(), 1, "{actions:?}");
    assert!(
        purged[0].starts_with("2 audit entries from before ")
            && purged[0].contains("audit.retention = \"30d\""),
        "{}",
        purged[0]
    );
    assert!(
        actions.iter().any(|(a, _)| a == "config"),
        "newer entries are kept"
    );

    // by hand
    age_audit(&m, "config").await;
    let o = m.ok(&["--json", "audit", "purge"]).json();
    assert_eq!(o["purged"], 1, "{o}");
    assert_eq!(o["retention"], "30d", "{o}");
    let o = m.ok(&["--json", "audit", "purge"]).json();
    assert_eq!(o["purged"], 0, "{o}");
    let actions = audit_actions(&m);
    assert_eq!(
        actions.iter().filter(|(a, _)| a == "audit-purged").count(),
        2,
        "a purge that deletes nothing is not recorded: {actions:?}"
    );
    assert!(!actions.iter().any(|(a, _)| a == "config"));

    // kept forever
    m.apply(&format!(
        "{}\n[audit]\nretention = \"forever\"\n",
        config("Ro", "")
    ));
    age_audit(&m, "audit-purged").await;
    let o = m.ok(&["audit", "purge"]);
    assert!(o.stdout.contains("nothing purged"), "{}", o.stdout);
    assert_eq!(
        audit_actions(&m)
            .iter()
            .filter(|(a, _)| a == "audit-purged")
            .count(),
        2
    );
}
