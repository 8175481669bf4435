//! Removal safeguards end to end (issue 4), against a real slapd and a real
//! SMTP server (Python aiosmtpd) on loopback: the approval threshold, the
//! notification email, `approvals list|approve|reject`, the audit trail, and
//! reads that must never look like users leaving.

use crate::common::{counts, Mfa};
use crate::sink::SmtpSink;
use mfasync_testkit::Slapd;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const BASE: &str = "dc=example,dc=com";
const LIMITED_DN: &str = "uid=svc-limited,ou=Svc,dc=example,dc=com";
const LIMITED_PW: &str = "limited-Passw0rd";
const SMTP_PASSWORD: &str = "smtp-S3cret-never-shown";

/// Teams (OUs) of users, one per test so tests running in parallel do not meet.
const TEAMS: &[(&str, &str, usize)] = &[
    ("Held", "held", 8),
    ("HeldPg", "hpg", 8),
    ("Rej", "rej", 8),
    ("Recheck", "rc", 8),
    ("Super", "sup", 8),
    ("Fail", "fail", 7),
    ("Auth", "au", 7),
    ("Safe", "safe", 3),
    ("limited", "lim", 7),
    ("Audit", "aud", 3),
    ("Back", "back", 8),
    ("Inc", "inc", 8),
    ("RejSub", "rs", 8),
    ("Budget", "bud", 6),
    ("Prot", "prot", 4),
    ("Unread", "unr", 3),
    ("Pct", "pct", 30),
    ("PerUser", "pu", 8),
    ("Expire", "exp", 6),
];

/// Groups under ou=Groups (cn, members' (team, uid prefix, how many)).
const GROUPS: &[(&str, &str, &str, usize)] =
    &[("Budget", "Budget", "bud", 6), ("Tier0", "Prot", "prot", 1)];

fn person(dn: &str, uid: &str, extra: &str) -> String {
    format!("dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n{extra}\n")
}

fn ou(name: &str) -> String {
    format!("dn: ou={name},{BASE}\nobjectClass: organizationalUnit\nou: {name}\n\n")
}

fn fixture() -> String {
    let mut l = String::new();
    for o in ["Away", "Empty", "Svc", "Groups"] {
        l.push_str(&ou(o));
    }
    for (team, prefix, n) in TEAMS {
        l.push_str(&ou(team));
        for i in 1..=*n {
            l.push_str(&person(
                &format!("uid={prefix}{i},ou={team},{BASE}"),
                &format!("{prefix}{i}"),
                "",
            ));
        }
    }
    for (cn, team, prefix, n) in GROUPS {
        l.push_str(&format!(
            "dn: cn={cn},ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: {cn}\n"
        ));
        for i in 1..=*n {
            l.push_str(&format!("member: uid={prefix}{i},ou={team},{BASE}\n"));
        }
        l.push('\n');
    }
    l.push_str(&person(
        LIMITED_DN,
        "svc-limited",
        &format!("userPassword: {LIMITED_PW}\n"),
    ));
    l
}

/// The service account svc-limited cannot see lim1..lim6 (too few rights).
fn acl() -> String {
    format!(
        "access to attrs=userPassword by anonymous auth by * none\n\
         access to dn.regex=\"^uid=lim[1-6],ou=limited,dc=example,dc=com$\" by dn.exact=\"{LIMITED_DN}\" none by * read\n\
         access to * by * read\n"
    )
}

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| Slapd::start_with_acl(&fixture(), &acl()))
}

fn move_user(uid: &str, from: &str, to: &str) {
    slapd().ldapmodify(&format!(
        "dn: uid={uid},ou={from},{BASE}\nchangetype: modrdn\nnewrdn: uid={uid}\ndeleteoldrdn: 1\nnewsuperior: ou={to},{BASE}\n"
    ));
}

// ---------------------------------------------------------------- config

/// A configuration: the shared slapd bound as `bind` (dn, password), one
/// container item, threshold 5, notifications to two admins through `smtp`
/// (extra lines for the [smtp] table).
fn config(team: &str, bind: (&str, &str), smtp_url: &str, smtp_extra: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(&format!("\"{}\"", s.url), BASE, 3, bind);
    format!(
        r#"{head}
[smtp]
server = "{smtp_url}"
from = "mfasync@example.com"
{smtp_extra}
[sync]
approval_threshold = 5
notify = ["mfa-admins@example.com", "security@example.com"]
[[sync.items]]
kind = "container"
dn = "ou={team},{BASE}"
when_removed = "disable"
"#
    )
}

fn admin() -> (&'static str, &'static str) {
    let s = slapd();
    (s.admin_dn.as_str(), s.admin_password.as_str())
}

fn enabled(m: &Mfa, prefix: &str) -> usize {
    m.users()
        .iter()
        .filter(|u| {
            u["username"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
                && u["enabled"] == true
        })
        .count()
}

fn pending(m: &Mfa) -> Vec<Value> {
    match m.ok(&["--json", "approvals", "list"]).json() {
        Value::Array(v) => v,
        other => panic!("approvals list is not an array: {other}"),
    }
}

fn audit(m: &Mfa) -> Vec<Value> {
    match m.ok(&["--json", "audit", "--limit", "1000"]).json() {
        Value::Array(v) => v,
        other => panic!("audit is not an array: {other}"),
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn six_leave_with_threshold_five_are_held_emailed_and_applied_on_approval() {
    held_emailed_and_applied(Mfa::new(), "Held", "held");
}

#[test]
fn six_leave_with_threshold_five_on_postgresql() {
    let url = mfasync_testkit::shared_postgres().fresh_database();
    held_emailed_and_applied(Mfa::with_url(url), "HeldPg", "hpg");
}

fn held_emailed_and_applied(m: Mfa, team: &str, prefix: &str) {
    let sink = SmtpSink::start(None);
    m.apply(&config(team, admin(), &sink.url(), ""));
    assert_eq!(counts(&m.sync_full()).0, 8);
    for i in 1..=6 {
        move_user(&format!("{prefix}{i}"), team, "Away");
    }
    let r = m.sync_full();
    assert_eq!(counts(&r).3, 0, "nothing disabled: {r}");
    let pa = &r["pending_approval"];
    assert_eq!(pa["disable"], 6, "{r}");
    assert_eq!(pa["remove"], 0, "{r}");
    let id = pa["id"].as_str().expect("approval id").to_string();
    assert_eq!(
        enabled(&m, prefix),
        8,
        "none of them changes until approved"
    );

    // one email, to both admins, naming the users, the id and the commands
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let mut rcpt: Vec<&str> = msgs[0]["rcpt_tos"]
        .as_array()
        .expect("rcpts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    rcpt.sort();
    assert_eq!(rcpt, ["mfa-admins@example.com", "security@example.com"]);
    assert_eq!(msgs[0]["mail_from"], "mfasync@example.com");
    let data = msgs[0]["body"].as_str().expect("body");
    let subject = msgs[0]["subject"].as_str().expect("subject");
    assert!(
        subject.contains("disable 6") && subject.contains(&id),
        "{subject}"
    );
    for i in 1..=6 {
        assert!(
            data.contains(&format!("{prefix}{i}")),
            "names {prefix}{i}: {data}"
        );
    }
    assert!(
        data.contains(&format!("mfasync approvals approve {id}")),
        "{data}"
    );
    assert!(
        data.contains(&format!("no longer in ou={team},{BASE}")),
        "reason: {data}"
    );

    // listed, JSON of PRODUCT.md
    let list = pending(&m);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0]["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let mut names: Vec<&str> = list[0]["disable"]
        .as_array()
        .expect("disable")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    names.sort();
    assert_eq!(
        names,
        (1..=6).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>()
    );
    assert_eq!(list[0]["remove"], serde_json::json!([]));

    // the next cycle: same set, same approval, no second email
    let again = m.sync_full();
    assert_eq!(again["pending_approval"]["id"], id.as_str(), "{again}");
    assert_eq!(counts(&again).3, 0);
    assert_eq!(sink.messages().len(), 1, "not asked twice");
    assert_eq!(pending(&m).len(), 1);

    // approve: re-checked and applied
    let o = m.ok(&["--json", "approvals", "approve", &id]);
    let v = o.json();
    assert_eq!(v["disabled"], 6, "{v}");
    assert_eq!(enabled(&m, prefix), 2);
    for i in 1..=6 {
        assert_eq!(
            m.user(&format!("{prefix}{i}")).expect("still stored")["enabled"],
            false
        );
    }
    assert!(pending(&m).is_empty());
    // decided once only
    let o = m.run(&["approvals", "approve", &id]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("approved"), "{}", o.stderr);
    // nothing more to do
    let after = m.sync_full();
    assert_eq!(counts(&after), (0, 0, 0, 0, 0, 8), "{after}");
    assert_eq!(after["pending_approval"], Value::Null);

    // audited: request, notification, decision (with who), each disable with before/after
    let a = audit(&m);
    let find = |action: &str| {
        a.iter()
            .filter(|e| e["action"] == action)
            .collect::<Vec<_>>()
    };
    assert_eq!(find("approval-requested").len(), 1);
    assert_eq!(find("notify-sent").len(), 1);
    let decided = find("approval-approved");
    assert_eq!(decided.len(), 1);
    assert!(
        decided[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&id) && d.contains("6 of 6")),
        "{:?}",
        decided[0]
    );
    assert!(!decided[0]["actor"].as_str().unwrap_or("").is_empty());
    let disables = find("disable");
    assert_eq!(disables.len(), 6);
    assert_eq!(
        disables[0]["changed"]["enabled"],
        serde_json::json!({"before": true, "after": false})
    );
    assert!(!find("config").is_empty(), "config versions are audited");
    let text = m.ok(&["audit", "--limit", "5"]).stdout;
    assert!(text.contains("approval-approved"), "{text}");
}

#[test]
fn rejected_set_is_kept_and_not_asked_again_until_the_directory_changes() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&config("Rej", admin(), &sink.url(), ""));
    m.sync_full();
    for i in 1..=6 {
        move_user(&format!("rej{i}"), "Rej", "Away");
    }
    let r = m.sync_full();
    let id = r["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(sink.messages().len(), 1);
    let o = m.run_stdin(&["--json", "approvals", "reject", &id], "");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.json()["status"], "rejected");
    assert_eq!(enabled(&m, "rej"), 8, "rejected: none disabled");
    assert!(pending(&m).is_empty());

    // the next cycle neither asks again nor applies
    let r = m.sync_full();
    assert_eq!(r["pending_approval"], Value::Null, "{r}");
    assert_eq!(counts(&r).3, 0, "{r}");
    assert_eq!(sink.messages().len(), 1, "no new email");
    assert!(pending(&m).is_empty());
    assert_eq!(enabled(&m, "rej"), 8);
    // a decided approval cannot be decided again
    let o = m.run(&["approvals", "approve", &id]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("rejected"), "{}", o.stderr);

    // the directory changes: a different set, asked again
    move_user("rej7", "Rej", "Away");
    let r = m.sync_full();
    assert_eq!(r["pending_approval"]["disable"], 7, "{r}");
    assert_ne!(r["pending_approval"]["id"], id.as_str());
    assert_eq!(sink.messages().len(), 2);
    assert_eq!(enabled(&m, "rej"), 8);
    let a = audit(&m);
    assert_eq!(
        a.iter()
            .filter(|e| e["action"] == "approval-rejected")
            .count(),
        1
    );
}

#[test]
fn approval_applies_only_what_still_holds() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&config("Recheck", admin(), &sink.url(), ""));
    m.sync_full();
    for i in 1..=6 {
        move_user(&format!("rc{i}"), "Recheck", "Away");
    }
    let id = m.sync_full()["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // two come back before anyone approves
    move_user("rc1", "Away", "Recheck");
    move_user("rc2", "Away", "Recheck");
    let v = m.ok(&["--json", "approvals", "approve", &id]).json();
    assert_eq!(v["disabled"], 4, "{v}");
    let mut back: Vec<&str> = v["no_longer_needed"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    back.sort();
    assert_eq!(back, ["rc1", "rc2"]);
    assert_eq!(m.user("rc1").expect("rc1")["enabled"], true);
    assert_eq!(m.user("rc3").expect("rc3")["enabled"], false);
    assert_eq!(enabled(&m, "rc"), 4);
}

#[test]
fn newer_pending_approval_supersedes_the_older() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&config("Super", admin(), &sink.url(), ""));
    m.sync_full();
    for i in 1..=6 {
        move_user(&format!("sup{i}"), "Super", "Away");
    }
    let first = m.sync_full()["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    move_user("sup7", "Super", "Away");
    let second = m.sync_full()["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(first, second);
    assert_eq!(sink.messages().len(), 2);
    let list = pending(&m);
    assert_eq!(list.len(), 1, "only the newest is pending: {list:?}");
    assert_eq!(list[0]["id"], second.as_str());
    for verb in ["approve", "reject"] {
        let o = m.run(&["approvals", verb, &first]);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("superseded"), "{}", o.stderr);
    }
    let o = m.run(&["approvals", "approve", "no-such-id"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("no approval with id"), "{}", o.stderr);
    assert_eq!(enabled(&m, "sup"), 8);
    m.ok(&["approvals", "approve", &second]);
    assert_eq!(enabled(&m, "sup"), 1);
}

#[test]
fn email_failure_does_not_fail_the_sync_and_never_shows_the_password() {
    let m = Mfa::new();
    let dead = format!("smtp://127.0.0.1:{}", mfasync_testkit::free_port());
    let extra = format!("username = \"mfasync\"\npassword = \"{SMTP_PASSWORD}\"");
    m.apply(&config("Fail", admin(), &dead, &extra));
    m.sync_full();
    for i in 1..=6 {
        move_user(&format!("fail{i}"), "Fail", "Away");
    }
    let o = m.run(&["--json", "sync", "--full"]);
    assert_eq!(o.code, 0, "the sync itself succeeds: {}", o.stderr);
    let r = o.json();
    assert_eq!(r["pending_approval"]["disable"], 6, "{r}");
    assert!(!o.stdout.contains(SMTP_PASSWORD) && !o.stderr.contains(SMTP_PASSWORD));
    assert!(
        o.stderr.contains("notification"),
        "the failure is logged: {}",
        o.stderr
    );
    let a = m.ok(&["--json", "audit", "--limit", "1000"]);
    assert!(!a.stdout.contains(SMTP_PASSWORD));
    let failed: Vec<Value> = a
        .json()
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["action"] == "notify-failed")
        .cloned()
        .collect();
    assert_eq!(failed.len(), 1, "recorded");
    assert!(
        failed[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("127.0.0.1")),
        "{:?}",
        failed[0]
    );
    let export = m.ok(&["config", "export"]).stdout;
    assert!(!export.contains(SMTP_PASSWORD));
    assert_eq!(enabled(&m, "fail"), 7);
}

#[test]
fn smtp_auth_with_password_from_the_environment() {
    let sink = SmtpSink::start(Some(&format!("mfasync:{SMTP_PASSWORD}")));
    let m = Mfa::new();
    let extra = "username = \"mfasync\"\npassword_env = \"TEST_SMTP_PW\"";
    m.apply(&config("Auth", admin(), &sink.url(), extra));
    m.sync_full();
    for i in 1..=6 {
        move_user(&format!("au{i}"), "Auth", "Away");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "--json", "sync", "--full"])
        .env("TEST_SMTP_PW", SMTP_PASSWORD)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(msgs[0]["login"], "mfasync");
}

/// A CA and a server certificate for `localhost` it signed, made by
/// `openssl` in `dir`: (CA file, certificate, key).
fn tls_files(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=mfasync test mail CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// Notifications over TLS (rustls): `smtps://` and STARTTLS
/// (`?tls=required`), the server's certificate checked against the system's
/// trusted CAs (here `SSL_CERT_FILE`); with a CA that did not sign it, no
/// message leaves, and the sync still succeeds.
#[test]
fn notifications_over_tls_trust_only_the_systems_cas() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(certs.path());
    let other = tempfile::tempdir().expect("tempdir");
    let (other_ca, _, _) = tls_files(other.path());
    for (n, (mode, scheme)) in [
        ("smtps", "smtps://localhost:{}"),
        ("starttls", "smtp://localhost:{}?tls=required"),
    ]
    .into_iter()
    .enumerate()
    {
        for (trusted, ca_file) in [(true, &ca), (false, &other_ca)] {
            let tls = format!("{mode}:{}:{}", cert.display(), key.display());
            let sink = SmtpSink::start_with(None, Some(&tls));
            let team = format!("Tls{n}{}", u8::from(trusted));
            slapd().ldapadd(&format!(
                "{}{}",
                ou(&team),
                (1..=6)
                    .map(|i| {
                        let uid = format!("t{n}{}u{i}", u8::from(trusted));
                        person(&format!("uid={uid},ou={team},{BASE}"), &uid, "")
                    })
                    .collect::<String>()
            ));
            let m = Mfa::new();
            let url = scheme.replace("{}", &sink.port.to_string());
            m.apply(&config(&team, admin(), &url, ""));
            m.sync_full();
            for i in 1..=6 {
                move_user(&format!("t{n}{}u{i}", u8::from(trusted)), &team, "Away");
            }
            let out = Command::new(env!("CARGO_BIN_EXE_mfasync"))
                .args(["--database", &m.url, "--json", "sync", "--full"])
                .env("SSL_CERT_FILE", ca_file)
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{mode}: {stderr}");
            assert_eq!(pending(&m).len(), 1, "{mode}: the removals are held");
            let msgs = sink.messages();
            if trusted {
                assert_eq!(msgs.len(), 1, "{mode}: {stderr}");
                assert!(
                    msgs[0]["subject"]
                        .as_str()
                        .unwrap_or("")
                        .contains("approval"),
                    "{:?}",
                    msgs[0]
                );
            } else {
                assert!(msgs.is_empty(), "{mode}: sent to an untrusted server");
                assert!(stderr.contains("certificate"), "{mode}: {stderr}");
            }
        }
    }
}

#[test]
fn reads_that_fail_or_come_back_empty_never_disable_anyone() {
    let m = Mfa::new();
    let dead_smtp = format!("smtp://127.0.0.1:{}", mfasync_testkit::free_port());
    let good = config("Safe", admin(), &dead_smtp, "")
        .replace("when_removed = \"disable\"", "when_removed = \"remove\"");
    m.apply(&good);
    assert_eq!(counts(&m.sync_full()).0, 3);
    let before = m.users();
    let base = format!("base_dn = \"{BASE}\"");
    let cases = [
        (
            "wrong base DN (no such entry)",
            good.replace(&base, &format!("base_dn = \"ou=Nowhere,{BASE}\"")),
        ),
        (
            "wrong base DN (holds nobody)",
            good.replace(&base, &format!("base_dn = \"ou=Empty,{BASE}\"")),
        ),
        (
            "filter matching nothing",
            good.replace("(objectClass=inetOrgPerson)", "(objectClass=nothingAtAll)"),
        ),
        (
            "directory down",
            good.replace(
                &slapd().url,
                &format!("ldap://127.0.0.1:{}", mfasync_testkit::free_port()),
            ),
        ),
    ];
    for (what, cfg) in cases {
        m.apply(&cfg);
        let o = m.run(&["--json", "sync", "--full"]);
        assert_eq!(o.code, 1, "{what}: must fail: {}", o.stdout);
        assert!(o.stderr.contains("nothing changed"), "{what}: {}", o.stderr);
        assert_eq!(m.users(), before, "{what}");
        assert!(pending(&m).is_empty(), "{what}: no approval either");
    }
}

#[test]
fn bind_account_with_fewer_rights_is_held_not_applied() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&config("limited", admin(), &sink.url(), ""));
    assert_eq!(counts(&m.sync_full()).0, 7);
    // the same configuration, bound as an account that cannot see lim1..lim6
    m.apply(&config(
        "limited",
        (LIMITED_DN, LIMITED_PW),
        &sink.url(),
        "",
    ));
    let r = m.sync_full();
    assert_eq!((counts(&r).3, counts(&r).4), (0, 0), "{r}");
    assert_eq!(
        r["pending_approval"]["remove"], 6,
        "they look deleted: held: {r}"
    );
    assert_eq!(m.users().len(), 7);
    assert_eq!(enabled(&m, "lim"), 7);
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn config_versions_and_sync_changes_are_audited() {
    let m = Mfa::new();
    let dead_smtp = format!("smtp://127.0.0.1:{}", mfasync_testkit::free_port());
    m.apply(&config("Audit", admin(), &dead_smtp, ""));
    m.apply(
        &config("Audit", admin(), &dead_smtp, "")
            .replace("timeout_seconds = 3", "timeout_seconds = 4"),
    );
    m.sync_full();
    move_user("aud1", "Audit", "Away");
    m.sync_full();
    move_user("aud1", "Away", "Audit");
    let a = audit(&m);
    let actions: Vec<&str> = a.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "config").count(),
        2,
        "{actions:?}"
    );
    assert_eq!(actions.iter().filter(|a| **a == "create").count(), 3);
    let dis: Vec<&Value> = a.iter().filter(|e| e["action"] == "disable").collect();
    assert_eq!(dis.len(), 1);
    assert_eq!(dis[0]["username"], "aud1");
    assert_eq!(dis[0]["before"]["enabled"], true);
    assert_eq!(dis[0]["after"]["enabled"], false);
    assert_eq!(dis[0]["detail"], format!("no longer in ou=Audit,{BASE}"));
    let o = m.ok(&["--json", "audit", "--limit", "2"]);
    assert_eq!(o.json().as_array().map(Vec::len), Some(2));
    let o = m.run(&["audit", "--limit", "0"]);
    assert_eq!(o.code, 2);
}

#[test]
fn pending_approval_no_longer_needed_is_retired() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&config("Back", admin(), &sink.url(), ""));
    m.sync_full();
    for i in 1..=6 {
        move_user(&format!("back{i}"), "Back", "Away");
    }
    let id = m.sync_full()["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // they all come back (say the directory was being reorganised)
    for i in 1..=6 {
        move_user(&format!("back{i}"), "Away", "Back");
    }
    let r = m.sync_full();
    assert_eq!(r["pending_approval"], Value::Null, "{r}");
    assert!(pending(&m).is_empty(), "nothing waits any more");
    let o = m.run(&["approvals", "approve", &id]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("superseded") && o.stderr.contains("no longer needed"),
        "{}",
        o.stderr
    );
    assert_eq!(enabled(&m, "back"), 8);
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn departures_held_by_an_incremental_cycle_stay_pending_until_decided() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&config("Inc", admin(), &sink.url(), ""));
    m.sync_full();
    for i in 1..=6 {
        move_user(&format!("inc{i}"), "Inc", "Away");
    }
    let r = m.ok(&["--json", "sync"]).json();
    assert_eq!(r["mode"], "incremental", "{r}");
    assert_eq!(r["pending_approval"]["disable"], 6, "{r}");
    let id = r["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(enabled(&m, "inc"), 8);
    // a quiet incremental cycle does not see those departures again, and
    // must not take the approval for "no longer needed"
    let q = m.ok(&["--json", "sync"]).json();
    assert_eq!(q["mode"], "incremental", "{q}");
    assert_eq!(pending(&m).len(), 1, "still waiting");
    assert_eq!(sink.messages().len(), 1);
    m.ok(&["approvals", "approve", &id]);
    assert_eq!(enabled(&m, "inc"), 2);
}

#[test]
fn rejected_users_are_not_removed_without_asking_when_fewer_remain() {
    // e.g. a bind account that lost rights: 6 users look gone, the
    // administrator rejects, then one becomes visible again: the 5 others,
    // now within the threshold, must still not go without asking
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&config("RejSub", admin(), &sink.url(), ""));
    m.sync_full();
    for i in 1..=6 {
        move_user(&format!("rs{i}"), "RejSub", "Away");
    }
    let id = m.sync_full()["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    m.ok(&["approvals", "reject", &id]);
    move_user("rs1", "Away", "RejSub");
    let r = m.sync_full();
    assert_eq!(counts(&r).3, 0, "{r}");
    assert_eq!(r["pending_approval"]["disable"], 5, "asked again: {r}");
    assert_eq!(enabled(&m, "rs"), 8);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 2);
    let data = msgs[1]["body"].as_str().expect("body");
    assert!(data.contains("rejected"), "says why: {data}");
    // approving that one applies the 5
    let id2 = r["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    m.ok(&["approvals", "approve", &id2]);
    assert_eq!(enabled(&m, "rs"), 3);
}

// ---------------------------------------------------------------- issue 21

/// A configuration without notifications: `item` (a whole `[[sync.items]]`
/// table) and extra `[sync]` lines; notifications to one admin through `smtp`.
fn guarded(sync_extra: &str, item: &str, smtp_url: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(&format!("\"{}\"", s.url), BASE, 3, admin());
    format!(
        r#"{head}
[smtp]
server = "{smtp_url}"
from = "mfasync@example.com"
[sync]
notify = ["mfa-admins@example.com"]
{sync_extra}
{item}
"#
    )
}

fn container_item(team: &str) -> String {
    format!("[[sync.items]]\nkind = \"container\"\ndn = \"ou={team},{BASE}\"\nwhen_removed = \"disable\"\n")
}

fn group_dn(cn: &str) -> String {
    format!("cn={cn},ou=Groups,{BASE}")
}

/// The `held` entries of a sync report as (username, limit).
fn held_of(r: &Value) -> Vec<(String, String)> {
    let list = r["held"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|h| {
            let text = |k: &str| h[k].as_str().unwrap_or_default().to_string();
            (text("username"), text("limit"))
        })
        .collect()
}

fn protected_names(r: &Value) -> Vec<String> {
    let list = r["protected"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = list
        .iter()
        .filter_map(|p| p["username"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn a_budget_of_three_holds_a_group_items_fourth_departure_and_names_the_limit() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    let group = group_dn("Budget");
    let item = format!(
        "[[sync.items]]\nkind = \"security-group\"\ndn = \"{group}\"\nwhen_removed = \"disable\"\nmax_departures = 3\n"
    );
    m.apply(&guarded("", &item, &sink.url()));
    assert_eq!(counts(&m.sync_full()).0, 6);
    let leave: String = (1..=4)
        .map(|i| format!("delete: member\nmember: uid=bud{i},ou=Budget,{BASE}\n-\n"))
        .collect();
    slapd().ldapmodify(&format!("dn: {group}\nchangetype: modify\n{leave}"));

    // the plan says what would be held, by which limit, changing nothing
    let limit = format!("max_departures = 3 of item {group}");
    let plan = m.ok(&["--json", "sync", "--plan"]).json();
    assert_eq!(
        held_of(&plan),
        [("bud4".to_string(), limit.clone())],
        "{plan}"
    );
    assert_eq!(enabled(&m, "bud"), 6);

    // the first three in the plan's order pass, the fourth is held
    let r = m.sync_full();
    assert_eq!(counts(&r).3, 3, "{r}");
    assert_eq!(held_of(&r), [("bud4".to_string(), limit.clone())], "{r}");
    assert_eq!(r["pending_approval"]["disable"], 1, "{r}");
    let id = r["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(enabled(&m, "bud"), 3);
    assert_eq!(m.user("bud4").expect("stored")["enabled"], true);
    let body = sink.messages()[0]["body"]
        .as_str()
        .expect("body")
        .to_string();
    assert!(body.contains(&format!("held by {limit}")), "{body}");

    // the next cycle keeps it held (the budget is not just put off a cycle)
    // and says so in its human output
    let o = m.ok(&["sync", "--full"]);
    assert!(
        o.stdout.contains(&format!("held by {limit}")),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("(bud4)"), "{}", o.stdout);
    assert_eq!(m.user("bud4").expect("stored")["enabled"], true);
    assert_eq!(pending(&m)[0]["id"], id.as_str());
    let list = m.ok(&["approvals", "list"]).stdout;
    assert!(list.contains(&format!("held by {limit}")), "{list}");

    // approved, it is applied
    let v = m.ok(&["--json", "approvals", "approve", &id]).json();
    assert_eq!(v["disabled"], 1, "{v}");
    assert_eq!(enabled(&m, "bud"), 2);
}

#[test]
fn protected_users_outside_every_item_are_never_disabled() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    // prot1 by name (any case), prot2 as a member of cn=Tier0 (not an item)
    let protected = format!(
        "protected = [\"PROT1\", \"{}\"]",
        group_dn("Tier0").to_uppercase()
    );
    m.apply(&guarded(&protected, &container_item("Prot"), &sink.url()));
    assert_eq!(counts(&m.sync_full()).0, 4);
    for uid in ["prot1", "prot2", "prot3"] {
        move_user(uid, "Prot", "Away");
    }
    // the group follows its member, as Active Directory's links do
    slapd().ldapmodify(&format!(
        "dn: {}\nchangetype: modify\nreplace: member\nmember: uid=prot2,ou=Away,{BASE}\n",
        group_dn("Tier0")
    ));

    let plan = m.ok(&["--json", "sync", "--plan"]).json();
    assert_eq!(protected_names(&plan), ["prot1", "prot2"], "{plan}");
    let planned: Vec<&str> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["username"].as_str())
        .collect();
    assert_eq!(
        planned,
        ["prot3"],
        "protected departures leave the plan: {plan}"
    );

    // an incremental cycle, then full ones: never disabled, never held
    let r = m.ok(&["--json", "sync"]).json();
    assert_eq!(protected_names(&r), ["prot1", "prot2"], "{r}");
    assert_eq!(counts(&r).3, 1, "only prot3: {r}");
    let r = m.sync_full();
    assert_eq!(protected_names(&r), ["prot1", "prot2"], "{r}");
    assert_eq!(r["pending_approval"], Value::Null, "{r}");
    let reasons = r["protected"].to_string();
    assert!(reasons.contains("protected user prot1"), "{reasons}");
    assert!(reasons.contains("member of protected group"), "{reasons}");
    let o = m.ok(&["sync", "--full"]);
    assert!(
        o.stdout.contains("protected, not disabled: prot1"),
        "{}",
        o.stdout
    );
    for uid in ["prot1", "prot2"] {
        assert_eq!(m.user(uid).expect("stored")["enabled"], true, "{uid}");
    }
    assert_eq!(m.user("prot3").expect("stored")["enabled"], false);
    assert!(pending(&m).is_empty());
    assert!(sink.messages().is_empty());
}

#[test]
fn a_protected_group_that_cannot_be_read_stops_every_departure() {
    let m = Mfa::new();
    let missing = group_dn("NoSuchGroup");
    let extra = format!("protected = [\"{missing}\"]");
    m.apply(&guarded(
        &extra,
        &container_item("Unread"),
        "smtp://127.0.0.1:9",
    ));
    assert_eq!(counts(&m.sync_full()).0, 3);
    move_user("unr1", "Unread", "Away");
    let r = m.sync_full();
    assert_eq!(counts(&r).3, 0, "{r}");
    assert_eq!(protected_names(&r), ["unr1"], "{r}");
    let reason = r["protected"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&missing), "{reason}");
    assert_eq!(m.user("unr1").expect("stored")["enabled"], true);
}

#[test]
fn a_percentage_threshold_of_thirty_users_lets_three_through_and_holds_four() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    let extra = "approval_threshold_disables = \"10%\"";
    m.apply(&guarded(extra, &container_item("Pct"), &sink.url()));
    assert_eq!(counts(&m.sync_full()).0, 30);
    for i in 1..=3 {
        move_user(&format!("pct{i}"), "Pct", "Away");
    }
    let r = m.sync_full();
    assert_eq!(counts(&r).3, 3, "10% of 30 is 3: {r}");
    assert!(r.get("held").is_none(), "{r}");
    assert_eq!(r["pending_approval"], Value::Null);

    // the disabled users are still stored: 30 users, 3 may go
    for i in 4..=7 {
        move_user(&format!("pct{i}"), "Pct", "Away");
    }
    let r = m.sync_full();
    assert_eq!(counts(&r).3, 0, "{r}");
    let limit = "approval_threshold_disables = \"10%\" (3 of 30 users)".to_string();
    let held = held_of(&r);
    assert_eq!(held.len(), 4, "{r}");
    assert!(held.iter().all(|(_, l)| *l == limit), "{r}");
    assert_eq!(r["pending_approval"]["disable"], 4, "{r}");
    let body = sink.messages()[0]["body"]
        .as_str()
        .expect("body")
        .to_string();
    assert!(body.contains(&limit), "{body}");
    assert_eq!(enabled(&m, "pct"), 27);
}

// ------------------------------------------------- per-user decisions, expiry

/// `config` with removals held above 3 (users deleted from the directory).
fn removal_config(team: &str, smtp_url: &str) -> String {
    config(team, admin(), smtp_url, "").replace("approval_threshold = 5", "approval_threshold = 3")
}

fn delete_users(team: &str, prefix: &str, n: std::ops::RangeInclusive<usize>) {
    for i in n {
        slapd().ldapdelete(&format!("uid={prefix}{i},ou={team},{BASE}"));
    }
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    n.sort();
    n
}

#[test]
fn users_approved_and_rejected_one_by_one() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&removal_config("PerUser", &sink.url()));
    assert_eq!(counts(&m.sync_full()).0, 8);
    delete_users("PerUser", "pu", 1..=5);
    let r = m.sync_full();
    assert_eq!(r["pending_approval"]["remove"], 5, "{r}");
    let id = r["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    // two of them approved: exactly those two removed, three still pending
    let v = m
        .ok(&[
            "--json",
            "approvals",
            "approve",
            &id,
            "--user",
            "pu1",
            "--user",
            "pu2",
        ])
        .json();
    assert_eq!(v["removed"], 2, "{v}");
    assert_eq!(v["status"], "pending", "{v}");
    assert_eq!(names(&v["still_pending"]), ["pu3", "pu4", "pu5"]);
    assert!(m.user("pu1").is_none() && m.user("pu2").is_none());
    // (in the recycle bin, not gone)
    let mut binned: Vec<String> = m
        .ok(&["--json", "users", "deleted"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|b| b["username"].as_str().map(str::to_string))
        .collect();
    binned.sort();
    assert_eq!(binned, ["pu1", "pu2"]);
    for u in ["pu3", "pu4", "pu5", "pu6"] {
        assert!(m.user(u).is_some(), "{u} kept");
    }
    let list = pending(&m);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(names(&list[0]["remove"]), ["pu3", "pu4", "pu5"]);

    // a user the approval does not hold is refused by name
    let o = m.run(&["approvals", "approve", &id, "--user", "nobody"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("nobody"), "{}", o.stderr);
    let o = m.run(&["approvals", "reject", &id, "--user", "pu1"]);
    assert_eq!(o.code, 1, "pu1 was decided already");
    assert!(o.stderr.contains("pu1"), "{}", o.stderr);

    // one more rejected: kept, the rest still pending
    let v = m
        .ok(&["--json", "approvals", "reject", &id, "--user", "pu3"])
        .json();
    assert_eq!(v["status"], "pending", "{v}");
    assert_eq!(names(&v["still_pending"]), ["pu4", "pu5"]);

    // the next cycle: pu3 neither removed nor held again; the same approval waits
    let r = m.sync_full();
    assert_eq!(r["pending_approval"]["id"], id.as_str(), "{r}");
    assert_eq!(r["pending_approval"]["remove"], 2, "{r}");
    assert_eq!(counts(&r).4, 0, "{r}");
    assert!(m.user("pu3").is_some());
    assert_eq!(sink.messages().len(), 1, "no new email");
    assert_eq!(names(&pending(&m)[0]["remove"]), ["pu4", "pu5"]);

    // the rest approved whole: pu4, pu5 removed, pu3 still kept
    let v = m.ok(&["--json", "approvals", "approve", &id]).json();
    assert_eq!(
        (v["removed"].clone(), v["status"].clone()),
        (2.into(), "approved".into()),
        "{v}"
    );
    assert!(m.user("pu4").is_none() && m.user("pu5").is_none());
    let r = m.sync_full();
    assert_eq!(r["pending_approval"], Value::Null, "{r}");
    assert_eq!(counts(&r).4, 0, "{r}");
    assert!(m.user("pu3").is_some(), "rejected alone: kept");
    assert!(pending(&m).is_empty());

    // each per-user decision audited with its actor and users
    let a = audit(&m);
    let approved = a
        .iter()
        .find(|e| {
            e["action"] == "approval-approved"
                && e["detail"].as_str().is_some_and(|d| d.contains("pu1, pu2"))
        })
        .unwrap_or_else(|| panic!("{a:?}"));
    assert!(!approved["actor"].as_str().unwrap_or_default().is_empty());
    assert_ne!(approved["actor"], "sync");
    assert!(a.iter().any(|e| e["action"] == "approval-rejected"
        && e["detail"].as_str().is_some_and(|d| d.contains("for pu3"))));
}

#[test]
fn an_expired_approval_applies_nothing_and_cannot_be_approved() {
    let sink = SmtpSink::start(None);
    let m = Mfa::new();
    m.apply(&removal_config("Expire", &sink.url()));
    assert_eq!(counts(&m.sync_full()).0, 6);
    delete_users("Expire", "exp", 1..=5);
    let r = m.sync_full();
    let id = r["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    age_approval(&m, &id);
    let o = m.run(&["approvals", "approve", &id]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stderr.contains("expired"), "{}", o.stderr);
    assert!(pending(&m).is_empty());
    for i in 1..=5 {
        assert!(
            m.user(&format!("exp{i}")).is_some(),
            "exp{i}: nothing applied"
        );
    }
    let a = audit(&m);
    assert!(
        a.iter().any(|e| e["action"] == "approval-rejected"
            && e["actor"] == "sync"
            && e["detail"].as_str().is_some_and(|d| d.contains("expired"))),
        "{a:?}"
    );
    // the expired set is not applied by the next cycle either
    let r = m.sync_full();
    assert_eq!(counts(&r).4, 0, "{r}");
    assert_eq!(r["pending_approval"], Value::Null, "{r}");

    // a changed set is asked again; once too old, a cycle expires it first
    delete_users("Expire", "exp", 6..=6);
    let r = m.sync_full();
    let newer = r["pending_approval"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(newer, id);
    age_approval(&m, &newer);
    let r = m.sync_full();
    assert_eq!(counts(&r).4, 0, "{r}");
    assert_eq!(
        r["pending_approval"],
        Value::Null,
        "expired as rejected, not asked again: {r}"
    );
    assert!(pending(&m).is_empty());
    assert_eq!(m.users().len(), 6, "nothing applied");
}

/// Make approval `id` eight days old (the default sync.approval_expiry is 7
/// days), in the SQLite file itself.
fn age_approval(m: &Mfa, id: &str) {
    let path = m.url.trim_start_matches("sqlite://");
    let sql = format!(
        "UPDATE approvals SET created_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-8 days') WHERE id = '{id}'"
    );
    let out = Command::new("sqlite3")
        .args([path, &sql])
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
