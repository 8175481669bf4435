//! Equal work for an unknown username and a wrong password (issue 18, item
//! 7), through the real binary against a real slapd behind a recording
//! LDAP proxy: for a name the directory does not know, a directory user who
//! is not an MFA user, a disabled MFA user and an MFA user, each with a
//! wrong password, `mfasync auth` and `POST /api/v1/auth` give the same
//! answer (`invalid-credentials`, same exit code / HTTP status) and the
//! directory sees the same operations (one search, one bind). The distinct
//! reasons come only with the correct password.

use crate::common::KillOnDrop;

use crate::common::Mfa;
use mfasync_testkit::{LdapProxy, Slapd};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BASE: &str = "dc=example,dc=com";
const TOKEN: &str = "auth-equal-test-api-token-0123456789";

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = format!(
            "dn: ou=People,{BASE}\nobjectClass: organizationalUnit\nou: People\n\n\
             dn: ou=Others,{BASE}\nobjectClass: organizationalUnit\nou: Others\n\n"
        );
        for (u, ou) in [("member", "People"), ("parked", "People"), ("outsider", "Others")] {
            l.push_str(&format!(
                "dn: uid={u},ou={ou},{BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\nuserPassword: {u}-Passw0rd\n\n"
            ));
        }
        Slapd::start(&l)
    })
}

/// A database synchronized (through `proxy`) from ou=People with simple
/// auth binds: `member` an MFA user, `parked` a disabled one, `outsider`
/// (ou=Others) in the directory only.
async fn synced(proxy: &LdapProxy) -> Mfa {
    let s = slapd();
    let m = Mfa::new();
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", proxy.url()),
        BASE,
        5,
        (&s.admin_dn, &s.admin_password),
    );
    m.apply(&format!(
        "{head}[directory.auth_bind]\ntype = \"simple\"\n\
         [sync]\nenabled = false\n[[sync.items]]\nkind = \"container\"\ndn = \"ou=People,{BASE}\"\n"
    ));
    m.sync_full();
    let store = mfasync_store::open(&m.url).await.unwrap();
    let before = store
        .users_by(mfasync_store::UserKey::UsernameLower, &["parked".into()])
        .await
        .unwrap()
        .pop()
        .expect("parked synchronized");
    let mut user = before.clone();
    user.enabled = false;
    store
        .apply(
            &[mfasync_core::plan::Change {
                action: mfasync_core::plan::Action::Disable,
                user,
                before: Some(before),
                fields: vec!["enabled"],
                reason: Some("test".into()),
                raw: None,
            }],
            None,
        )
        .await
        .unwrap();
    crate::common::add_api_token(store.as_ref(), "admin", "test", TOKEN).await;
    store.close().await;
    m
}

fn proxy() -> LdapProxy {
    LdapProxy::start(
        slapd().url.trim_start_matches("ldap://"),
        // a control nobody sends: nothing is refused
        "1.3.6.1.4.1.99999.1",
    )
}

/// The operations `proxy` forwarded since `before` (its earlier
/// [`LdapProxy::operations`]), per connection, connections without any
/// left out, sorted: the same work whatever the order of the connections.
fn since(proxy: &LdapProxy, before: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut ops: Vec<Vec<String>> = proxy
        .operations()
        .into_iter()
        .enumerate()
        .map(|(i, conn)| match before.get(i) {
            Some(old) => conn[old.len()..].to_vec(),
            None => conn,
        })
        .filter(|conn| !conn.is_empty())
        .collect();
    ops.sort();
    ops
}

/// The wrong password and the right one of each kind of name.
const NAMES: [(&str, &str); 4] = [
    ("nobody-here", "nobody-here-Passw0rd"),
    ("outsider", "outsider-Passw0rd"),
    ("parked", "parked-Passw0rd"),
    ("member", "member-Passw0rd"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_answers_and_works_alike_without_the_password() {
    let proxy = proxy();
    let m = synced(&proxy).await;
    let auth = |user: &str, pw: &str| {
        let before = proxy.operations();
        let out = m.run_stdin(&["--json", "auth", user, "--password-stdin"], pw);
        (out.code, out.json(), since(&proxy, &before))
    };
    let mut seen = Vec::new();
    for (user, _) in NAMES {
        let (code, answer, ops) = auth(user, "Wrong-guess-1");
        assert_eq!(code, 1, "{user}: {answer}");
        assert_eq!(
            answer,
            json!({"ok": false, "reason": "invalid-credentials"}),
            "{user}"
        );
        seen.push((user, ops));
    }
    // the password's connection: one bind (refused, the connection closed);
    // the query connection: bind, RootDSE read, username search, unbind.
    // The same for every name.
    let want = vec![
        vec!["bind".to_string()],
        vec![
            "bind".to_string(),
            "search".into(),
            "search".into(),
            "unbind".into(),
        ],
    ];
    for (user, ops) in &seen {
        assert_eq!(ops, &want, "{user}: {seen:?}");
    }
    // the correct password tells them apart
    for ((user, pw), want) in NAMES.iter().zip([
        json!({"ok": false, "reason": "invalid-credentials"}),
        json!({"ok": false, "reason": "not-an-mfa-user"}),
        json!({"ok": false, "reason": "mfa-user-disabled"}),
        json!({"ok": true}),
    ]) {
        let (_, answer, _) = auth(user, pw);
        assert_eq!(answer, want, "{user} with the right password");
    }
}

struct Served {
    /// Killed when the test ends.
    _child: KillOnDrop,
    base: String,
    http: reqwest::Client,
}

async fn serve(m: &Mfa) -> Served {
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen", &addr])
        .arg("--insecure-cookies")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served {
        _child: KillOnDrop(child),
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    };
    let t0 = Instant::now();
    loop {
        let up = served
            .http
            .get(format!("{}/healthz", served.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            return served;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /api/v1/auth`: (status, body).
async fn api_auth(s: &Served, user: &str, pw: &str) -> (u16, Value) {
    let resp = s
        .http
        .post(format!("{}/api/v1/auth", s.base))
        .bearer_auth(TOKEN)
        .json(&json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_and_works_alike_without_the_password() {
    let proxy = proxy();
    let m = synced(&proxy).await;
    let s = serve(&m).await;
    // the query connection is opened and kept by a first check that searches
    let (status, first) = api_auth(&s, "outsider", "outsider-Passw0rd").await;
    assert_eq!(
        (status, first),
        (200, json!({"ok": false, "reason": "not-an-mfa-user"}))
    );
    for round in 0..2 {
        for (user, _) in NAMES {
            // the spare connections for the next checks are opened in the
            // background (no operation on them until used)
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = proxy.operations();
            let (status, answer) = api_auth(&s, user, "Wrong-guess-1").await;
            assert_eq!(
                (status, answer),
                (200, json!({"ok": false, "reason": "invalid-credentials"})),
                "{user}, round {round}"
            );
            // one search on the kept query connection, one (refused) bind
            // on a connection of its own
            let ops = since(&proxy, &before);
            assert_eq!(
                ops,
                vec![vec!["bind".to_string()], vec!["search".to_string()]],
                "{user}, round {round}"
            );
        }
    }
    for ((user, pw), want) in NAMES.iter().zip([
        json!({"ok": false, "reason": "invalid-credentials"}),
        json!({"ok": false, "reason": "not-an-mfa-user"}),
        json!({"ok": false, "reason": "mfa-user-disabled"}),
        json!({"ok": true}),
    ]) {
        let (status, answer) = api_auth(&s, user, pw).await;
        assert_eq!(
            (status, answer),
            (200, want),
            "{user} with the right password"
        );
    }
}
