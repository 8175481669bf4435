//! Welcome and update emails end to end (issue 19 item 2), against a real
//! slapd and a real SMTP server (Python aiosmtpd) on loopback: emails queued
//! in the sync's transaction (the outbox), delivered by the one-shot sync,
//! exactly once even when the sync is killed between its commit and the
//! delivery, an update email for a phone change, and an SMTP server that is
//! down: the sync succeeds and the emails go out once it is back. The
//! summary email of `sync.summary` (issue 22): once per changing cycle,
//! never for a quiet one or `--plan`, and for a failed one.

use crate::common::{counts, Mfa};
use crate::sink::SmtpSink;
use mfasync_testkit::Slapd;
use serde_json::Value;
use std::process::Command;
use std::sync::OnceLock;

const BASE: &str = "dc=example,dc=com";

/// Teams (OUs), one per test: (OU, uid prefix, users with an email address).
const TEAMS: &[(&str, &str, usize)] = &[
    ("Welcome", "wel", 3),
    ("WelcomePg", "wpg", 3),
    ("Update", "upd", 1),
    ("Down", "down", 2),
    ("Serve", "srv", 2),
    ("Summary", "sum", 2),
];

fn person(team: &str, uid: &str, mail: bool, n: usize) -> String {
    let mail = match mail {
        true => format!("mail: {uid}@example.com\n"),
        false => String::new(),
    };
    format!(
        "dn: uid={uid},ou={team},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n\
         sn: {uid}\ngivenName: Given{uid}\nmobile: +1 555 010 {n:04}\n{mail}\n"
    )
}

fn fixture() -> String {
    let mut l = String::new();
    for (team, prefix, n) in TEAMS {
        l.push_str(&format!(
            "dn: ou={team},{BASE}\nobjectClass: organizationalUnit\nou: {team}\n\n"
        ));
        for i in 1..=*n {
            l.push_str(&person(team, &format!("{prefix}{i}"), true, i));
        }
        // one user without an email address per team: counted, not an error
        l.push_str(&person(team, &format!("{prefix}nomail"), false, 99));
    }
    l
}

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| Slapd::start(&fixture()))
}

fn config(team: &str, smtp_url: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        3,
        (s.admin_dn.as_str(), s.admin_password.as_str()),
    );
    format!(
        r#"{head}
[smtp]
server = "{smtp_url}"
from = "mfasync@example.com"
[[sync.items]]
kind = "container"
dn = "ou={team},{BASE}"
[sync.items.user]
method = "text-message"
phone = "mobile"
country_code = "1"
welcome_email = true
"#
    )
}

fn outbox(m: &Mfa, status: Option<&str>) -> Vec<Value> {
    let mut args = vec!["--json", "outbox", "list"];
    if let Some(s) = status {
        args.extend(["--status", s]);
    }
    match m.ok(&args).json() {
        Value::Array(v) => v,
        other => panic!("outbox list is not an array: {other}"),
    }
}

fn recipients(sink: &SmtpSink) -> Vec<String> {
    let mut r: Vec<String> = sink
        .messages()
        .iter()
        .flat_map(|m| m["rcpt_tos"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    r.sort();
    r
}

fn audit_actions(m: &Mfa, action: &str) -> usize {
    match m.ok(&["--json", "audit", "--limit", "1000"]).json() {
        Value::Array(v) => v.iter().filter(|e| e["action"] == action).count(),
        other => panic!("audit is not an array: {other}"),
    }
}

#[test]
fn three_created_users_get_one_welcome_each_even_when_killed_after_the_commit() {
    welcome_once(Mfa::new(), "Welcome", "wel");
}

#[test]
fn three_created_users_get_one_welcome_each_on_postgresql() {
    let url = mfasync_testkit::shared_postgres().fresh_database();
    welcome_once(Mfa::with_url(url), "WelcomePg", "wpg");
}

fn welcome_once(m: Mfa, team: &str, prefix: &str) {
    let sink = SmtpSink::start(None);
    m.apply(&config(team, &sink.url()));

    // the first sync dies right after its commit, before any delivery
    let killed = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "--json", "sync"])
        .env("MFASYNC_TEST_ABORT_AFTER_COMMIT", "1")
        .output()
        .expect("run mfasync sync");
    assert!(!killed.status.success(), "the test hook must kill it");
    let stderr = String::from_utf8_lossy(&killed.stderr);
    assert!(
        stderr
            .contains("1 users would have had a welcome or update email but have no email address"),
        "{stderr}"
    );
    assert_eq!(m.users().len(), 4, "the cycle was committed");
    assert!(sink.messages().is_empty(), "nothing delivered yet");
    let pending = outbox(&m, Some("pending"));
    assert_eq!(pending.len(), 3, "{pending:?}");
    assert!(pending
        .iter()
        .all(|e| e["kind"] == "welcome" && e["attempts"] == 0));

    // restarted: delivered once each
    let r = m.ok(&["--json", "sync"]).json();
    assert_eq!(counts(&r).0, 0, "nothing new to create: {r}");
    let want: Vec<String> = (1..=3)
        .map(|i| format!("{prefix}{i}@example.com"))
        .collect();
    assert_eq!(recipients(&sink), want);
    let msg = sink
        .messages()
        .into_iter()
        .find(|m| m["rcpt_tos"][0] == format!("{prefix}2@example.com"))
        .unwrap();
    assert_eq!(msg["mail_from"], "mfasync@example.com");
    assert_eq!(
        msg["subject"],
        format!("Multi-factor authentication is set up for {prefix}2")
    );
    let body = msg["body"].as_str().unwrap();
    assert!(
        body.starts_with(&format!("Hello Given{prefix}2,")),
        "{body}"
    );
    assert!(body.contains("with a text message."), "{body}");
    assert!(body.contains("Primary phone: +15550100002"), "{body}");
    let sent = outbox(&m, Some("sent"));
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent
        .iter()
        .all(|e| e["attempts"] == 1 && e["sent_at"].is_string()));
    assert_eq!(audit_actions(&m, "email-sent"), 3);

    // later cycles, full ones included, send nothing again
    m.sync_full();
    m.ok(&["sync"]);
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(outbox(&m, None).len(), 3);
}

#[test]
fn a_phone_change_sends_one_update_email() {
    let (m, team, prefix) = (Mfa::new(), "Update", "upd");
    let sink = SmtpSink::start(None);
    m.apply(&config(team, &sink.url()));
    m.ok(&["sync"]);
    assert_eq!(recipients(&sink), ["upd1@example.com"], "the welcome email");

    // a change the user does not see: no email
    slapd().ldapmodify(&format!(
        "dn: uid={prefix}1,ou={team},{BASE}\nchangetype: modify\nreplace: sn\nsn: Renamed\n"
    ));
    m.ok(&["sync"]);
    assert_eq!(sink.messages().len(), 1);

    slapd().ldapmodify(&format!(
        "dn: uid={prefix}1,ou={team},{BASE}\nchangetype: modify\nreplace: mobile\nmobile: +1 555 010 7777\n"
    ));
    let r = m.ok(&["--json", "sync"]).json();
    assert_eq!(counts(&r).1, 1, "one update: {r}");
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let update = &msgs[1];
    assert_eq!(update["rcpt_tos"][0], "upd1@example.com");
    assert_eq!(
        update["subject"],
        "Your multi-factor authentication settings changed (upd1)"
    );
    let body = update["body"].as_str().unwrap();
    assert!(
        body.contains("Primary phone: +15550107777 (was +15550100001)"),
        "{body}"
    );
    // and only once
    m.ok(&["sync"]);
    m.sync_full();
    assert_eq!(sink.messages().len(), 2);
    let kinds: Vec<Value> = outbox(&m, None).iter().map(|e| e["kind"].clone()).collect();
    assert_eq!(kinds, ["update", "welcome"]);
}

#[test]
fn smtp_down_the_sync_succeeds_and_emails_go_out_when_it_returns() {
    let (m, team, prefix) = (Mfa::new(), "Down", "down");
    let port = mfasync_testkit::free_port();
    m.apply(&config(team, &format!("smtp://127.0.0.1:{port}")));

    // nothing listens: the sync succeeds, the emails wait with the error
    let r = m.ok(&["--json", "sync"]).json();
    assert_eq!(counts(&r).0, 3, "{r}");
    let pending = outbox(&m, Some("pending"));
    assert_eq!(pending.len(), 2, "{pending:?}");
    for e in &pending {
        assert_eq!(e["attempts"], 1, "{e}");
        let err = e["last_error"].as_str().unwrap_or_default();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(e["next_attempt_at"].is_string(), "{e}");
    }
    let human = m.ok(&["outbox", "list"]).stdout;
    assert!(
        human.contains("pending") && human.contains("last error"),
        "{human}"
    );

    // the server is back: re-queued now (else after the backoff), sent by the next run
    let sink = SmtpSink::start_on(port);
    let ids: Vec<String> = pending.iter().map(|e| e["id"].to_string()).collect();
    let mut args = vec!["--json", "outbox", "retry"];
    args.extend(ids.iter().map(String::as_str));
    let requeued = m.ok(&args).json();
    assert_eq!(
        requeued["requeued"].as_array().unwrap().len(),
        2,
        "{requeued}"
    );
    m.ok(&["sync"]);
    let want: Vec<String> = (1..=2)
        .map(|i| format!("{prefix}{i}@example.com"))
        .collect();
    assert_eq!(recipients(&sink), want);
    let sent = outbox(&m, Some("sent"));
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent
        .iter()
        .all(|e| e["last_error"].is_null() && e["attempts"] == 2));
    assert!(outbox(&m, Some("pending")).is_empty());
    // a sent email is not re-queued
    let again = m.run(&["outbox", "retry", &ids[0]]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("already sent"), "{}", again.stderr);
    assert_eq!(audit_actions(&m, "email-requeued"), 2);
}

#[test]
fn serve_sends_the_emails_of_its_cycles() {
    let (m, team, prefix) = (Mfa::new(), "Serve", "srv");
    let sink = SmtpSink::start(None);
    m.apply(&config(team, &sink.url()));
    let port = mfasync_testkit::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn serve");
    // its first cycle creates the users; the sender delivers their emails
    // (and marks them sent after the SMTP server took them)
    crate::common::wait_for("2 emails sent", std::time::Duration::from_secs(90), || {
        outbox(&m, Some("sent")).len() >= 2
    });
    let _ = child.kill();
    let _ = child.wait();
    let want: Vec<String> = (1..=2)
        .map(|i| format!("{prefix}{i}@example.com"))
        .collect();
    assert_eq!(recipients(&sink), want);
    let sent = outbox(&m, Some("sent"));
    assert_eq!(sent.len(), 2, "{sent:?}");
}

/// A configuration with `sync.summary` to two mailboxes and no user emails;
/// `servers` as TOML list items.
fn summary_config(team: &str, smtp_url: &str, servers: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(
        servers,
        BASE,
        3,
        (s.admin_dn.as_str(), s.admin_password.as_str()),
    );
    format!(
        r#"{head}
[sync]
summary = ["ops@example.com", "audit@example.com"]
[smtp]
server = "{smtp_url}"
from = "mfasync@example.com"
[[sync.items]]
kind = "container"
dn = "ou={team},{BASE}"
[sync.items.user]
method = "text-message"
phone = "mobile"
country_code = "1"
"#
    )
}

/// The summary messages received, oldest first, as (recipient, subject, body).
fn summaries(sink: &SmtpSink) -> Vec<(String, String, String)> {
    sink.messages()
        .iter()
        .map(|m| {
            (
                m["rcpt_tos"][0].as_str().unwrap_or_default().to_string(),
                m["subject"].as_str().unwrap_or_default().to_string(),
                m["body"].as_str().unwrap_or_default().replace("\r\n", "\n"),
            )
        })
        .collect()
}

#[test]
fn a_summary_email_follows_each_changing_cycle_only() {
    let (m, team, prefix) = (Mfa::new(), "Summary", "sum");
    let sink = SmtpSink::start(None);
    m.apply(&summary_config(
        team,
        &sink.url(),
        &format!("\"{}\"", slapd().url),
    ));

    // the first sync creates 3 users: one summary to each recipient, listing them
    let r = m.ok(&["--json", "sync"]).json();
    assert_eq!(counts(&r).0, 3, "{r}");
    let got = summaries(&sink);
    assert_eq!(got.len(), 2, "{got:?}");
    let mut to: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    to.sort();
    assert_eq!(to, ["audit@example.com", "ops@example.com"]);
    let (_, subject, body) = &got[0];
    assert_eq!(subject, "mfasync: synchronization (full): 3 users changed");
    assert!(body.contains("Mode:    full"), "{body}");
    assert!(body.contains("Outcome: ok"), "{body}");
    assert!(body.contains("Created:   3"), "{body}");
    let created = format!("Created (3):\n  {prefix}1\n  {prefix}2\n  {prefix}nomail\n");
    assert!(body.contains(&created), "{body}");
    assert!(body.contains("mfasync history"), "{body}");
    let rows = outbox(&m, None);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .all(|e| e["kind"] == "summary" && e["username"] == "(summary)" && e["status"] == "sent"));

    // quiet cycles (incremental and full) and a plan: no summary
    m.ok(&["sync"]);
    m.sync_full();
    assert_eq!(sink.messages().len(), 2);
    slapd().ldapmodify(&format!(
        "dn: uid={prefix}1,ou={team},{BASE}\nchangetype: modify\nreplace: mobile\nmobile: +1 555 010 4242\n"
    ));
    let plan = m.ok(&["--json", "sync", "--plan"]).json();
    assert_eq!(counts(&plan).1, 1, "{plan}");
    assert_eq!(sink.messages().len(), 2, "never for --plan");

    // one phone changed: one summary naming that user under update
    let r = m.ok(&["--json", "sync"]).json();
    assert_eq!(counts(&r).1, 1, "{r}");
    let got = summaries(&sink);
    assert_eq!(got.len(), 4, "{got:?}");
    let (_, subject, body) = &got[2];
    assert_eq!(
        subject,
        "mfasync: synchronization (incremental): 1 user changed"
    );
    assert!(
        body.contains(&format!("Updated (1):\n  {prefix}1\n")),
        "{body}"
    );
    assert!(!body.contains("Created ("), "{body}");
    m.ok(&["sync"]);
    assert_eq!(sink.messages().len(), 4, "and only once");
    assert_eq!(outbox(&m, None).len(), 4);
}

#[test]
fn a_failed_cycle_sends_a_summary_saying_so() {
    let m = Mfa::new();
    let sink = SmtpSink::start(None);
    // nothing listens where the directory should be
    let port = mfasync_testkit::free_port();
    m.apply(&summary_config(
        "Summary",
        &sink.url(),
        &format!("\"ldap://127.0.0.1:{port}\""),
    ));
    let out = m.run(&["sync"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let got = summaries(&sink);
    assert_eq!(got.len(), 2, "{got:?}");
    let (_, subject, body) = &got[0];
    assert_eq!(subject, "mfasync: synchronization FAILED (full)");
    assert!(body.contains("Outcome: FAILED, nothing changed"), "{body}");
    assert!(body.contains(&format!("127.0.0.1:{port}")), "{body}");
    assert!(
        !body.contains(&slapd().admin_password),
        "no password: {body}"
    );
    // each failing cycle is told
    assert_eq!(m.run(&["sync"]).code, 1);
    assert_eq!(sink.messages().len(), 4);
}

#[test]
fn a_base_dn_that_does_not_exist_fails_the_cycle_and_says_so() {
    let m = Mfa::new();
    let sink = SmtpSink::start(None);
    let cfg = summary_config("Summary", &sink.url(), &format!("\"{}\"", slapd().url))
        .replace(
            &format!("base_dn = \"{BASE}\""),
            "base_dn = \"dc=nowhere,dc=test\"",
        )
        .replace(
            &format!("dn = \"ou=Summary,{BASE}\""),
            "dn = \"ou=Summary,dc=nowhere,dc=test\"",
        );
    m.apply(&cfg);
    let out = m.run(&["sync"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(m.users().is_empty());
    let got = summaries(&sink);
    assert_eq!(got.len(), 2, "{got:?}");
    let (_, subject, body) = &got[0];
    assert_eq!(subject, "mfasync: synchronization FAILED (full)");
    assert!(body.contains("Outcome: FAILED, nothing changed"), "{body}");
    assert!(body.contains("dc=nowhere,dc=test"), "{body}");
}
