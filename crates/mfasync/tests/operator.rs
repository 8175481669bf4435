//! What an operator meets at the command line and in the portal, end to end
//! against a real slapd (issue 18, the smaller items): directory values
//! shown safely on a terminal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Mfa;
use mfasync_testkit::Slapd;
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
        for (i, name) in HOSTILE.iter().enumerate() {
            l.push_str(&person("Ansi", &format!("evil{i}"), name));
        }
        Slapd::start(&l)
    })
}

fn config(team: &str, sync: &str) -> String {
    let s = slapd();
    let head = common::openldap_directory(
        &format!("\"{}\"", s.url),
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
