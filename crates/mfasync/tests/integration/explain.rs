//! `users explain NAME|DN` and `sync --user NAME|DN` end to end against a real
//! slapd (issue 22): each deciding step named in the JSON, and a one-user
//! sync that changes that user only while 50 others wait for the next cycle.

use crate::common::Mfa;
use mfasync_testkit::Slapd;
use serde_json::Value;
use std::sync::OnceLock;

const BASE: &str = "dc=example,dc=com";
const CROWD: usize = 50;

fn person(uid: &str, ou: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou={ou},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\ntelephoneNumber: +1 555 010 0001\n{extra}\n"
    )
}

/// ou=People holds alice (in cn=First directly), bob (in cn=Inner, nested in
/// cn=First), carol and dave (in no group) and svc (excluded by the user filter);
/// ou=Crowd holds 50 more.
fn fixture() -> String {
    let mut l = String::new();
    for o in ["People", "Crowd", "Groups"] {
        l.push_str(&format!(
            "dn: ou={o},{BASE}\nobjectClass: organizationalUnit\nou: {o}\n\n"
        ));
    }
    l.push_str(&person("alice", "People", ""));
    l.push_str(&person("bob", "People", ""));
    l.push_str(&person("carol", "People", "mobile: +1 555 010 0002\n"));
    l.push_str(&person("dave", "People", "mobile: +1 555 010 0003\n"));
    l.push_str(&person("svc", "People", "employeeType: service\n"));
    for i in 1..=CROWD {
        l.push_str(&person(
            &format!("crowd{i}"),
            "Crowd",
            "description: before\n",
        ));
    }
    l.push_str(&format!(
        "dn: cn=Inner,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: Inner\nmember: uid=bob,ou=People,{BASE}\n\n\
         dn: cn=First,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: First\nmember: uid=alice,ou=People,{BASE}\nmember: cn=Inner,ou=Groups,{BASE}\n\n"
    ));
    l
}

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| Slapd::start(&fixture()))
}

/// Items: the group cn=First (nested), then the containers ou=People and ou=Crowd.
fn configured() -> Mfa {
    configured_with("")
}

/// `configured`, with these lines in `[sync]`.
fn configured_with(sync: &str) -> Mfa {
    let s = slapd();
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        5,
        (&s.admin_dn, &s.admin_password),
    )
    .replace(
        "user = \"(objectClass=inetOrgPerson)\"",
        "user = \"(&(objectClass=inetOrgPerson)(!(employeeType=service)))\"",
    );
    let m = Mfa::new();
    m.apply(&format!(
        r#"{head}
[sync]
{sync}
[[sync.items]]
kind = "security-group"
dn = "cn=First,ou=Groups,{BASE}"
[sync.items.user]
method = "text-message"
[[sync.items]]
kind = "container"
dn = "ou=People,{BASE}"
[[sync.items]]
kind = "container"
dn = "ou=Crowd,{BASE}"
"#
    ));
    m
}

fn explain(m: &Mfa, who: &str) -> Value {
    m.ok(&["--json", "users", "explain", who]).json()
}

#[test]
fn a_user_in_the_second_item_because_the_first_group_does_not_hold_it() {
    let m = configured();
    let e = explain(&m, "carol");
    assert_eq!(e["decision"]["step"], "item", "{e:#}");
    assert_eq!(e["decision"]["item"], 1, "{e:#}");
    assert_eq!(e["decision"]["action"], "create", "{e:#}");
    assert_eq!(e["items"][0]["holds"], false, "{e:#}");
    assert!(e["items"][0]["how"]
        .as_str()
        .unwrap()
        .contains("not a member"));
    assert_eq!(e["items"][1]["wins"], true, "{e:#}");
    assert_eq!(e["items"][2]["holds"], false, "{e:#}");
    assert_eq!(e["username"]["attribute"], "uid");
    assert_eq!(e["username"]["kind"], "primary");
    assert_eq!(e["user_filter"]["matches"], true);
    assert_eq!(e["would_write"]["method"], "phone-call", "{e:#}");
    assert_eq!(e["settings"]["method"], "phone-call", "{e:#}");

    // once synced, the same question compares the stored user field by field
    m.sync_full();
    slapd().ldapmodify(&format!(
        "dn: uid=carol,ou=People,{BASE}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 010 0999\n"
    ));
    let e = explain(&m, &format!("uid=carol,ou=People,{BASE}"));
    assert_eq!(e["decision"]["action"], "update", "{e:#}");
    let diff: Vec<&str> = e["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(diff.contains(&"business_phone"), "{e:#}");
    assert!(diff.contains(&"primary_phone"), "{e:#}");
    assert_eq!(e["audit"][0]["action"], "create", "{e:#}");
    // a human reading
    let text = m.ok(&["users", "explain", "carol"]).stdout;
    assert!(
        text.contains("decision: update (decided by sync.items[1])"),
        "{text}"
    );
}

#[test]
fn a_user_held_through_a_nested_group() {
    let m = configured();
    let e = explain(&m, "bob");
    assert_eq!(e["decision"]["step"], "item", "{e:#}");
    assert_eq!(e["decision"]["item"], 0, "{e:#}");
    assert_eq!(e["items"][0]["holds"], true, "{e:#}");
    assert_eq!(
        e["items"][0]["via"],
        serde_json::json!([format!("cn=Inner,ou=Groups,{BASE}")]),
        "{e:#}"
    );
    assert_eq!(e["settings"]["method"], "text-message", "{e:#}");
    assert_eq!(e["would_write"]["method"], "text-message", "{e:#}");
    // alice is a direct member
    let e = explain(&m, "alice");
    assert_eq!(e["items"][0]["how"], "a direct member", "{e:#}");
    assert!(e["items"][0].get("via").is_none(), "{e:#}");
}

#[test]
fn a_user_excluded_by_the_user_filter() {
    let m = configured();
    let e = explain(&m, "svc");
    assert_eq!(e["decision"]["step"], "user_filter", "{e:#}");
    assert_eq!(e["decision"]["action"], "none", "{e:#}");
    assert_eq!(e["user_filter"]["matches"], false, "{e:#}");
    assert_eq!(e["entry"]["dn"], format!("uid=svc,ou=People,{BASE}"));
    assert!(e["items"].as_array().unwrap().is_empty(), "{e:#}");
}

#[test]
fn an_unknown_name_says_where_it_was_searched() {
    let m = configured();
    let e = explain(&m, "nobody");
    assert_eq!(e["decision"]["step"], "entry", "{e:#}");
    assert_eq!(e["decision"]["action"], "none", "{e:#}");
    assert!(e.get("entry").is_none(), "{e:#}");
    assert_eq!(e["search"]["base"], BASE);
    assert_eq!(e["search"]["filter"], "(|(uid=nobody))");
    // a filter-special character is escaped, never run as filter syntax
    let e = explain(&m, "*");
    assert_eq!(e["search"]["filter"], "(|(uid=\\2a))", "{e:#}");
    assert_eq!(e["decision"]["step"], "entry", "{e:#}");
}

#[test]
fn sync_user_changes_that_user_only() {
    let m = configured();
    m.sync_full();
    // 50 users change, and so does dave's mobile phone
    let mut ldif = String::new();
    for i in 1..=CROWD {
        ldif.push_str(&format!(
            "dn: uid=crowd{i},ou=Crowd,{BASE}\nchangetype: modify\nreplace: description\ndescription: after\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: uid=dave,ou=People,{BASE}\nchangetype: modify\nreplace: mobile\nmobile: +1 555 010 0777\n\n"
    ));
    slapd().ldapmodify(&ldif);
    // the plan of a full sync would change all 51 (other tests edit alice and carol)
    let planned = |m: &Mfa| -> Vec<String> {
        let plan = m.ok(&["--json", "sync", "--plan", "--full"]).json();
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["action"] == "update")
            .map(|c| c["username"].as_str().unwrap().to_string())
            .filter(|u| u.starts_with("crowd") || u == "dave")
            .collect()
    };
    assert_eq!(planned(&m).len(), CROWD + 1);

    let s = m.ok(&["--json", "sync", "--user", "dave"]).json();
    assert_eq!(s["action"], "update", "{s:#}");
    assert_eq!(s["applied"], true, "{s:#}");
    assert_eq!(s["fields"], serde_json::json!(["mobile_phone"]), "{s:#}");
    let dave = m.user("dave").unwrap();
    assert_eq!(dave["mobile_phone"], "+1 555 010 0777");
    let users = m.users();
    let before = users
        .iter()
        .filter(|u| u["username"].as_str().unwrap().starts_with("crowd"))
        .filter(|u| u["description"] == "before")
        .count();
    assert_eq!(before, CROWD, "no other user changed");
    // one update in the audit trail, audited by the sync
    let audit = m.ok(&["--json", "audit", "--limit", "1000"]).json();
    let updates: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "update")
        .collect();
    assert_eq!(updates.len(), 1, "{audit:#}");
    assert_eq!(updates[0]["username"], "dave");
    // a second run has nothing to do; the next cycle takes the 50
    let s = m.ok(&["--json", "sync", "--user", "dave"]).json();
    assert_eq!(s["action"], "unchanged", "{s:#}");
    assert_eq!(s["applied"], false, "{s:#}");
    let next = planned(&m);
    assert_eq!(next.len(), CROWD, "{next:?}");
    assert!(!next.contains(&"dave".to_string()));
}

#[test]
fn sync_user_creates_one_user_and_departs_nobody_else() {
    let m = configured();
    // nothing synced yet: one user is created alone
    let s = m.ok(&["--json", "sync", "--user", "bob"]).json();
    assert_eq!(s["action"], "create", "{s:#}");
    assert_eq!(m.users().len(), 1);
    // a user the filter excludes is not made
    let s = m.ok(&["--json", "sync", "--user", "svc"]).json();
    assert_eq!(s["action"], "none", "{s:#}");
    assert_eq!(s["step"], "user_filter", "{s:#}");
    // an unknown name is no error either: nothing to make
    let s = m.ok(&["--json", "sync", "--user", "nobody"]).json();
    assert_eq!(s["action"], "none", "{s:#}");
    assert_eq!(m.users().len(), 1);
}

/// `serve` on `m`'s database (sync cycles off): its base URL, and the child
/// killed when the test ends.
fn serve(m: &Mfa) -> (String, crate::common::KillOnDrop) {
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn serve");
    let child = crate::common::KillOnDrop(child);
    let base = format!("http://{addr}");
    crate::common::wait_for("serve", std::time::Duration::from_secs(20), || {
        curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/healthz"),
        ]) == "200"
    });
    (base, child)
}

/// curl's standard output.
fn curl(args: &[&str]) -> String {
    let o = std::process::Command::new("curl")
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The API with curl, and the portal's user page in a signed-in session.
#[test]
fn the_api_and_the_portal_explain_and_sync_one_user() {
    // no scheduled cycle while the test runs
    let m = configured_with("enabled = false");
    m.sync_full();
    let token = "explain-api-token-0123456789";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        crate::common::add_api_token(store.as_ref(), "admin", "test", token).await;
    });
    let password = "portal-Passw0rd-explain";
    m.run_stdin(
        &["admin", "set-password", "admin", "--password-stdin"],
        password,
    );
    let (base, _serve) = serve(&m);
    let phone = |n: &str| {
        slapd().ldapmodify(&format!(
            "dn: uid=alice,ou=People,{BASE}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 010 {n}\n"
        ))
    };
    phone("0444");
    let auth = format!("Authorization: Bearer {token}");
    let api = |method: &str, path: &str| -> Value {
        let out = curl(&[
            "-s",
            "-X",
            method,
            "-H",
            &auth,
            &format!("{base}/api/v1{path}"),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
    };
    let e = api("GET", "/users/alice/explain");
    assert_eq!(e["decision"]["action"], "update", "{e:#}");
    assert_eq!(e["decision"]["item"], 0, "{e:#}");
    let synced = api("POST", "/users/alice/sync");
    assert_eq!(synced["action"], "update", "{synced:#}");
    assert_eq!(synced["applied"], true, "{synced:#}");
    assert_eq!(m.user("alice").unwrap()["primary_phone"], "+15550100444");
    let e = api("GET", "/users/alice/explain");
    assert_eq!(e["decision"]["action"], "unchanged", "{e:#}");

    // the portal: the user page links to the explanation; its button syncs
    phone("0555");
    rt.block_on(async {
        use crate::common::portal::{between, sign_in};
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let session = sign_in(&http, &base, "admin", password).await;
        let get = |path: String| {
            let (http, session) = (http.clone(), session.clone());
            async move {
                let r = http
                    .get(path)
                    .header("cookie", session)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.text().await.unwrap()
            }
        };
        let page = get(format!("{base}/users/alice")).await;
        assert!(page.contains("href=\"/users/alice/explain\""), "{page}");
        let page = get(format!("{base}/users/alice/explain")).await;
        assert!(
            page.contains("decided by <code>sync.items[0]</code>"),
            "{page}"
        );
        assert!(page.contains("a direct member"), "{page}");
        assert!(
            page.contains("+15550100555"),
            "the phone a sync would write: {page}"
        );
        let csrf = between(&page, "name=\"csrf\" value=\"", "\"");
        let r = http
            .post(format!("{base}/users/alice/sync"))
            .header("cookie", &session)
            .header("origin", &base)
            .header("sec-fetch-site", "same-origin")
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(
            text.contains("update (business_phone, primary_phone)"),
            "{text}"
        );
    });
    assert_eq!(m.user("alice").unwrap()["primary_phone"], "+15550100555");
}
