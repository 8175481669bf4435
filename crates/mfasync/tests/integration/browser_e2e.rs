//! The portal end to end, in a real headless Chromium (Debian `chromium` +
//! `chromium-driver`, driven over the W3C WebDriver protocol with reqwest),
//! against the real `mfasync serve` and a real slapd:
//!
//! sign in; configure the directory on Settings (typed, with the bind
//! password) and on Filters / Attributes (Restore Defaults for OpenLDAP);
//! press Test and see each step pass; set the approval threshold on the
//! Synchronization page, add two sync items and reorder them; Synchronize Now
//! and see the users; delete users in slapd so that the removals exceed the
//! threshold, Synchronize Now, and approve the held removal on the Approvals
//! page (the users are then gone). Unauthenticated requests are refused and a
//! form posted from another origin is refused.
//!
//! Skipped (with a message) when /usr/bin/chromedriver is missing, unless
//! `MFASYNC_REQUIRE_BROWSER=1`.

use crate::common::Mfa;
use mfasync_testkit::webdriver::{WebDriver as Driver, CHROMEDRIVER};
use mfasync_testkit::Slapd;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BASE: &str = "dc=example,dc=com";
const ADMIN_PW: &str = "e2e-admin-Passw0rd";
const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One slapd for the tests of this binary: ou=A, ou=B (synchronized by the
/// browser test) and ou=People, ou=Groups (the admin group sign-in test).
fn slapd() -> &'static Slapd {
    static S: std::sync::OnceLock<Slapd> = std::sync::OnceLock::new();
    S.get_or_init(|| Slapd::start(&seed()))
}

fn seed() -> String {
    let mut l = String::new();
    l.push_str(&format!(
        "dn: ou=People,{BASE}\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: ou=Groups,{BASE}\nobjectClass: organizationalUnit\nou: Groups\n\n"
    ));
    for u in ["boss", "deputy", "outsider"] {
        l.push_str(&format!(
            "dn: uid={u},ou=People,{BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\nuserPassword: {u}-Passw0rd\n\n"
        ));
    }
    // boss directly; deputy through the nested group ops
    l.push_str(&format!(
        "dn: cn=ops,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: ops\nmember: uid=deputy,ou=People,{BASE}\n\n\
         dn: cn=mfa-admins,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: mfa-admins\nmember: uid=boss,ou=People,{BASE}\nmember: cn=ops,ou=Groups,{BASE}\n\n\
         dn: cn=others,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: others\nmember: uid=outsider,ou=People,{BASE}\n\n"
    ));
    for (ou, users) in [("A", &["a1", "a2", "a3"][..]), ("B", &["b1", "b2"][..])] {
        l.push_str(&format!(
            "dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
        for u in users {
            l.push_str(&format!(
                "dn: uid={u},ou={ou},{BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}-sn\nmail: {u}@example.com\n\n"
            ));
        }
    }
    l
}

/// `mfasync serve` on a free port, killed when dropped; its address once it
/// answers /healthz.
fn serve(m: &Mfa) -> (Killed, String) {
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    // The key that seals passwords typed in the portal.
    let key_file = m.dir.path().join("secret.key");
    std::fs::write(&key_file, format!("{SECRET_KEY}\n")).unwrap();
    let child = Killed(
        Command::new(env!("CARGO_BIN_EXE_mfasync"))
            .args(["--database", &m.url, "serve", "--listen", &addr])
            .env("MFASYNC_SECRET_KEY_FILE", &key_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while !raw_get(&addr, "/healthz").ends_with("\r\n\r\nok") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, addr)
}

/// A plain HTTP GET (no cookies): the status line and the rest.
fn raw_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new(); // not listening yet
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Another origin: a page whose form posts to the portal by itself.
fn evil_site(target: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let page = format!(
        r#"<!doctype html><form id="f" method="post" action="{target}/sync"><input name="full" value="true"><input name="csrf" value="guess"></form><script>document.getElementById('f').submit()</script>"#
    );
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    format!("http://{addr}")
}

fn history_len(m: &Mfa) -> usize {
    m.ok(&["--json", "history", "--limit", "1000"])
        .json()
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

fn usernames(m: &Mfa) -> Vec<String> {
    let mut v: Vec<String> = m
        .users()
        .iter()
        .filter_map(|u| u["username"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_end_to_end_in_chromium_against_serve_and_slapd() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("MFASYNC_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "{CHROMEDRIVER} missing (scripts/install-deps installs it)"
        );
        eprintln!("skipped: {CHROMEDRIVER} missing (scripts/install-deps installs it)");
        return;
    }
    let slapd = slapd();
    let m = Mfa::new();
    let set = m.run_stdin(
        &["admin", "set-password", "admin", "--password-stdin"],
        &format!("{ADMIN_PW}\n"),
    );
    assert_eq!(set.code, 0, "{}", set.stderr);

    let (_serve, addr) = serve(&m);
    let base = format!("http://{addr}");

    // Unauthenticated requests are refused.
    let r = raw_get(&addr, "/api/v1/users");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = raw_get(&addr, "/settings");
    assert!(
        r.starts_with("HTTP/1.1 303") && r.contains("location: /login"),
        "{r}"
    );

    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(profile.path()).await;

    // Sign in.
    d.goto(&format!("{base}/settings")).await;
    assert_eq!(d.url().await, format!("{base}/login"), "sign-in required");
    d.fill("input[name=username]", "admin").await;
    d.fill("input[name=password]", ADMIN_PW).await;
    d.click("button[type=submit]").await;
    d.wait_url(&format!("{base}/")).await;
    d.wait_source("Sign out").await;

    // Settings: the directory connection.
    d.goto(&format!("{base}/settings")).await;
    d.wait_source("No configuration has been applied yet").await;
    d.click("select[name=source] option[value=ldap]").await;
    d.fill("textarea[name=servers]", &slapd.url).await;
    d.fill("input[name=base_dn]", BASE).await;
    d.fill("input[name=timeout_seconds]", "5").await;
    d.click("select[name=query_type] option[value=simple]")
        .await;
    d.fill("input[name=query_dn]", &slapd.admin_dn).await;
    d.fill("input[name=query_password]", &slapd.admin_password)
        .await;
    d.click("select[name=auth_type] option[value=simple]").await;
    // The seed's Test before the settings are used: nothing is stored.
    d.click("#test-unsaved").await;
    let page = d.wait_source("id=\"test-result\"").await;
    assert!(page.contains("they are not saved"), "{page}");
    assert!(page.contains("Test passed"), "{page}");
    assert!(!page.contains(&slapd.admin_password));
    assert!(
        mfasync_store::open(&m.url)
            .await
            .unwrap()
            .active_config()
            .await
            .unwrap()
            .is_none(),
        "nothing stored by Test"
    );
    // The typed values are kept (the password is never echoed): type it again.
    d.fill("input[name=query_password]", &slapd.admin_password)
        .await;
    d.click("#save-directory").await;
    let page = d
        .wait_source("Directory settings saved as configuration version 1")
        .await;
    assert!(
        !page.contains(&slapd.admin_password),
        "the bind password is never shown"
    );
    let state = d.find("#query-password-state").await;
    let text = d
        .call("GET", &format!("/element/{state}/text"), Value::Null)
        .await;
    assert_eq!(text, json!("set"));
    // Stored sealed with the service's key, never in clear.
    let stored = mfasync_store::open(&m.url)
        .await
        .unwrap()
        .active_config()
        .await
        .unwrap()
        .unwrap()
        .toml;
    assert!(!stored.contains(&slapd.admin_password), "{stored}");
    let sealed: toml::Table = stored.parse().unwrap();
    let sealed = sealed["directory"]["query_bind"]["password_encrypted"]
        .as_str()
        .unwrap()
        .to_string();
    let key = mfasync_web::secret::SecretKey::from_hex(SECRET_KEY).unwrap();
    assert_eq!(
        key.open("directory.query_bind", &sealed).unwrap(),
        slapd.admin_password
    );

    // Test: every step passes.
    d.click("#test").await;
    let page = d.wait_source("id=\"test-result\"").await;
    assert!(page.contains("Test passed"), "{page}");
    for step in ["connect", "bind", "rootdse"] {
        assert!(
            page.contains(&format!(
                "<td>{step}</td><td><span class=\"good\">yes</span>"
            )),
            "step {step}: {page}"
        );
    }

    // Filters and Attributes: the OpenLDAP defaults (preselected for source = ldap).
    d.goto(&format!("{base}/filters")).await;
    d.click("#filters-defaults").await;
    d.wait_source("Default filters (openldap) saved").await;
    assert_eq!(
        d.call(
            "GET",
            &format!(
                "/element/{}/property/value",
                d.find("input[name=user]").await
            ),
            Value::Null
        )
        .await,
        json!("(objectClass=inetOrgPerson)")
    );
    d.goto(&format!("{base}/attributes")).await;
    d.click("#attributes-defaults").await;
    d.wait_source("Default attributes (openldap) saved").await;
    // One attribute typed by hand.
    d.fill("input[name=business_phone]", "telephoneNumber")
        .await;
    d.fill("input[name=first_name]", "cn").await;
    d.click("#save-attributes").await;
    d.wait_source("Attributes saved").await;

    // Synchronization: approval threshold 2, no scheduled cycles during the test.
    d.goto(&format!("{base}/sync")).await;
    d.check("input[name=enabled]", false).await;
    d.check("input[name=approval]", true).await;
    d.fill("input[name=approval_threshold]", "2").await;
    d.click("#sync-settings button[type=submit]").await;
    d.wait_source("Synchronization settings saved").await;

    // Two items, then reordered.
    // The first chosen from the directory's container hierarchy, the second typed.
    d.click("#browse-containers").await;
    let page = d.wait_source("id=\"browse\"").await;
    for ou in ["A", "B", "People", "Groups"] {
        assert!(
            page.contains(&format!("<code>ou={ou},{BASE}</code>")),
            "{ou}: {page}"
        );
    }
    d.click(&format!(
        "a.use[href$=\"dn=ou%3DA%2C{}\"]",
        BASE.replace('=', "%3D").replace(',', "%2C")
    ))
    .await;
    d.wait_source("chosen: check the settings below").await;
    d.click("form.item button[type=submit]").await;
    d.wait_source(&format!("Item ou=A,{BASE} added")).await;
    d.fill("form.item input[name=dn]", &format!("ou=B,{BASE}"))
        .await;
    d.click("form.item button[type=submit]").await;
    d.wait_source(&format!("Item ou=B,{BASE} added")).await;
    let page = d.source().await;
    let a = page.find(&format!("<td>ou=A,{BASE}</td>")).unwrap();
    let b = page.find(&format!("<td>ou=B,{BASE}</td>")).unwrap();
    assert!(a < b, "added in order");
    assert!(page.contains("id=\"sync-prompt\""), "full sync prompt");
    d.click("form[action=\"/sync/items/0/down\"] button").await;
    let page = d.wait_source("Item 1 moved down").await;
    let a = page.find(&format!("<td>ou=A,{BASE}</td>")).unwrap();
    let b = page.find(&format!("<td>ou=B,{BASE}</td>")).unwrap();
    assert!(b < a, "B is now first");
    d.click("form[action=\"/sync/items/1/up\"] button").await;
    let page = d.wait_source("Item 2 moved up").await;
    let a = page.find(&format!("<td>ou=A,{BASE}</td>")).unwrap();
    let b = page.find(&format!("<td>ou=B,{BASE}</td>")).unwrap();
    assert!(a < b, "A is first again");
    d.click("form[action=\"/sync/items/0/down\"] button").await;
    d.wait_source("Item 1 moved down").await;
    // The stored configuration has the items in that order.
    let exported: toml::Table = m.ok(&["config", "export"]).stdout.parse().unwrap();
    let items: Vec<&str> = exported["sync"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["dn"].as_str().unwrap())
        .collect();
    assert_eq!(
        items,
        vec![format!("ou=B,{BASE}"), format!("ou=A,{BASE}")],
        "stored order"
    );
    assert!(
        !m.ok(&["config", "export"])
            .stdout
            .contains(&slapd.admin_password),
        "secrets are not exported"
    );

    // Synchronize Now, from the prompt: a progress page that follows the
    // cycle (polling, then the result).
    d.click("#prompt-sync-now").await;
    d.wait_source("id=\"sync-result\"").await;
    assert!(d.url().await.starts_with(&format!("{base}/sync/progress/")));
    d.wait_source("full synchronization done: 5 created").await;
    d.goto(&format!("{base}/sync")).await;
    let page = d.wait_source("Synchronization items").await;
    assert!(
        !page.contains("id=\"sync-prompt\""),
        "the prompt goes after the full sync"
    );
    assert_eq!(usernames(&m), vec!["a1", "a2", "a3", "b1", "b2"]);

    // The Users page shows them.
    d.goto(&format!("{base}/users")).await;
    let page = d.wait_source("5 of 5 users match").await;
    for u in ["a1", "a2", "a3", "b1", "b2"] {
        assert!(page.contains(&format!(">{u}</a>")), "{u}: {page}");
    }
    d.goto(&format!("{base}/users/b1")).await;
    let page = d.wait_source("b1@example.com").await;
    assert!(page.contains(&format!("ou=B,{BASE}")), "{page}");
    // ... with its sync history: created by the full sync.
    let history = &page[page.find("id=\"user-history\"").expect("user history")..];
    assert!(
        history.contains("<td>create</td><td>sync</td>"),
        "{history}"
    );

    // Explain, from the user's page: read now, nothing to change.
    d.click("#explain-link").await;
    let page = d.wait_source("id=\"decision\"").await;
    assert!(
        page.contains("<strong>unchanged</strong>, decided by <code>sync.items["),
        "{page}"
    );

    // A change in the directory over the threshold: held for approval.
    for u in ["a1", "a2", "a3"] {
        slapd.ldapdelete(&format!("uid={u},ou=A,{BASE}"));
    }
    d.goto(&format!("{base}/history")).await;
    d.click("#sync-now").await;
    d.wait_source("Held for approval").await;
    d.goto(&format!("{base}/history")).await;
    let page = d.wait_source("id=\"changes-chart\"").await;
    assert!(
        page.contains("class=\"c-created\""),
        "the chart shows the creations"
    );
    assert_eq!(usernames(&m).len(), 5, "nothing removed yet");

    // A form posted from another origin is refused; nothing runs.
    let runs = history_len(&m);
    let evil = evil_site(&base);
    d.goto(&format!("{evil}/")).await;
    d.wait_url(&format!("{base}/sync")).await;
    d.wait_source("forbidden").await;
    assert_eq!(history_len(&m), runs, "no cycle ran");

    // Approve on the Approvals page.
    d.goto(&format!("{base}/approvals")).await;
    let page = d.wait_source("change(s) held").await;
    for u in ["a1", "a2", "a3"] {
        assert!(page.contains(&format!("<td>{u}</td>")), "{u}: {page}");
    }
    // One held user by its checkbox: only a1 goes; a2 and a3 stay held.
    d.check("input[name=\"user:a1\"]", true).await;
    d.click("form.selected button").await;
    d.wait_source("approved for a1.").await;
    assert_eq!(usernames(&m).len(), 4, "only a1 removed");
    let page = d.wait_source("change(s) held").await;
    assert!(!page.contains("<td>a1</td>"), "a1 decided: {page}");
    assert!(
        page.contains("<td>a2</td>") && page.contains("<td>a3</td>"),
        "{page}"
    );
    // Then the rest, by the whole approval's own form.
    d.click("form.inline[action$=\"/approve\"] button").await;
    d.wait_source("approved.").await;
    d.wait_source("No approvals are pending").await;
    assert_eq!(usernames(&m), vec!["b1", "b2"], "the removals were applied");
    d.goto(&format!("{base}/users")).await;
    let page = d.wait_source("2 of 2 users match").await;
    assert!(!page.contains(">a1</a>"));

    d.call("DELETE", "", Value::Null).await;
}

/// A sign-in through the form, as a browser posts it: the response.
async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let page = http.get(format!("{base}/login")).send().await.unwrap();
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
    http.post(format!("{base}/login"))
        .header("cookie", format!("mfasync_login={cookie}"))
        .header("origin", base)
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("username", user),
            ("password", password),
            ("login_csrf", field),
        ])
        .send()
        .await
        .unwrap()
}

fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("mfasync_session="))
        .and_then(|v| v.split(';').next())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_the_admin_group_sign_in_with_their_directory_password() {
    let s = slapd();
    let m = Mfa::new();
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        5,
        (&s.admin_dn, &s.admin_password),
    );
    let config = |portal: &str| {
        format!(
            "{head}[directory.auth_bind]\ntype = \"simple\"\n[sync]\nenabled = false\n{portal}\n"
        )
    };
    let group = format!("cn=mfa-admins,ou=Groups,{BASE}");
    m.apply(&config(&format!("[portal]\nadmin_group = \"{group}\"")));
    // A bad group DN is refused by its key path, like every setting.
    let bad = m.config_file(&config("[portal]\nadmin_group = \"not a dn\""));
    let out = m.run(&["config", "apply", bad.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("portal.admin_group"), "{}", out.stderr);

    let (_serve, addr) = serve(&m);
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // A direct member and a member through a nested group get a session.
    for user in ["boss", "deputy"] {
        let resp = sign_in(&http, &base, user, &format!("{user}-Passw0rd")).await;
        assert_eq!(resp.status(), reqwest::StatusCode::SEE_OTHER, "{user}");
        assert_eq!(resp.headers()["location"], "/");
        let session = session_cookie(&resp).expect("a session");
        let page = http
            .get(format!("{base}/settings"))
            .header("cookie", format!("mfasync_session={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), reqwest::StatusCode::OK);
        assert!(page
            .text()
            .await
            .unwrap()
            .contains(&format!("<span>{user}</span>")));
    }
    // A wrong password, a non-member with the right one, an unknown name: refused.
    for (user, pw) in [
        ("boss", "wrong"),
        ("outsider", "outsider-Passw0rd"),
        ("nobody", "x"),
    ] {
        let resp = sign_in(&http, &base, user, pw).await;
        assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED, "{user}");
        assert!(session_cookie(&resp).is_none(), "{user}");
    }
    // Without portal.admin_group, directory accounts cannot sign in.
    m.apply(&config(""));
    let resp = sign_in(&http, &base, "boss", "boss-Passw0rd").await;
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
}
