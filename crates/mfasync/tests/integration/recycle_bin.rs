//! The recycle bin end to end against slapd: a user a sync removes (its item
//! says `when_removed = "remove"`, or it is deleted from the directory) is
//! moved into the bin with its phones, method and OATH secret; moved back
//! into the item it is restored; `users deleted|restore|purge`, `users
//! export --include-deleted`; `sync.retention` purges what is older.

use crate::common::{counts, radius, Mfa};
use mfasync_testkit::Slapd;
use serde_json::Value;
use std::process::Command;
use std::sync::OnceLock;

const BASE: &str = "dc=example,dc=com";

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = String::new();
        for o in ["Bin", "BinOut"] {
            l.push_str(&format!(
                "dn: ou={o},{BASE}\nobjectClass: organizationalUnit\nou: {o}\n\n"
            ));
        }
        for i in 1..=4 {
            l.push_str(&format!(
                "dn: uid=bin{i},ou=Bin,{BASE}\nobjectClass: inetOrgPerson\nuid: bin{i}\ncn: bin{i}\n\
                 sn: bin{i}\nmobile: +1 425 555 03{i:02}\n\n"
            ));
        }
        Slapd::start(&l)
    })
}

fn config() -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        3,
        (&s.admin_dn, &s.admin_password),
    );
    format!(
        "{head}\n[sync]\nremove_deleted_users = true\n\
         [[sync.items]]\nkind = \"container\"\ndn = \"ou=Bin,{BASE}\"\nwhen_removed = \"remove\"\n\
         [sync.items.user]\nphone = \"mobile\"\nmethod = \"oath-token\"\nlanguage = \"de\"\n"
    )
}

fn move_to(uid: &str, from: &str, to: &str) {
    slapd().ldapmodify(&format!(
        "dn: uid={uid},ou={from},{BASE}\nchangetype: modrdn\nnewrdn: uid={uid}\ndeleteoldrdn: 1\nnewsuperior: ou={to},{BASE}\n"
    ));
}

fn deleted(m: &Mfa) -> Vec<Value> {
    match m.ok(&["--json", "users", "deleted"]).json() {
        Value::Array(v) => v,
        other => panic!("users deleted is not an array: {other}"),
    }
}

fn sql(m: &Mfa, query: &str) -> String {
    let path = m.url.trim_start_matches("sqlite://");
    let out = Command::new("sqlite3")
        .args([path, query])
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn recycle_bin_keeps_removed_users_restores_them_and_purges_after_the_retention() {
    let s = slapd();
    let mut m = Mfa::new();
    radius::with_key(&mut m);
    m.apply(&config());
    assert_eq!(counts(&m.sync_full()).0, 4);
    radius::enroll(&m, "bin1");
    let before = m.user("bin1").expect("bin1");
    assert_eq!(before["method"], "oath-token", "{before}");
    assert_eq!(before["primary_phone"], "+14255550301", "{before}");

    // bin1 leaves the item (when_removed = "remove"), bin2 is deleted
    move_to("bin1", "Bin", "BinOut");
    s.ldapdelete(&format!("uid=bin2,ou=Bin,{BASE}"));
    let r = m.sync_full();
    assert_eq!(counts(&r), (0, 0, 0, 0, 2, 2), "{r}");
    assert!(r.get("restored").is_none(), "absent when none: {r}");
    assert!(m.user("bin1").is_none() && m.user("bin2").is_none());
    let bin = deleted(&m);
    assert_eq!(bin.len(), 2, "{bin:?}");
    let e1 = bin.iter().find(|e| e["username"] == "bin1").expect("bin1");
    assert_eq!(e1["reason"], format!("no longer in ou=Bin,{BASE}"));
    assert_eq!(e1["directory_id"], before["directory_id"]);
    assert!(e1["deleted_at"].as_str().is_some());
    let e2 = bin.iter().find(|e| e["username"] == "bin2").expect("bin2");
    assert_eq!(e2["reason"], "deleted from the directory");
    // the complete row with its phones and the sealed secret are kept
    assert_eq!(
        sql(
            &m,
            "SELECT mobile_phone, primary_phone, method, language, otp_sealed IS NOT NULL \
             FROM recycle_bin WHERE username = 'bin1'"
        ),
        "+1 425 555 0301|+14255550301|oath-token|de|1"
    );
    // the human listing names them; the secret is never shown
    let text = m.ok(&["users", "deleted"]).stdout;
    assert!(
        text.contains("bin1") && text.contains("no longer in"),
        "{text}"
    );
    assert!(!text.contains("v1:"), "{text}");

    // export: without the flag the bin is left out, with it each binned user has deleted_at
    assert_eq!(m.users().len(), 2);
    let all = match m
        .ok(&["--json", "users", "export", "--include-deleted"])
        .json()
    {
        Value::Array(v) => v,
        other => panic!("{other}"),
    };
    assert_eq!(all.len(), 4);
    let x1 = all.iter().find(|u| u["username"] == "bin1").expect("bin1");
    assert_eq!(x1["deleted_at"], e1["deleted_at"]);
    assert_eq!(x1["primary_phone"], "+14255550301");
    assert!(all
        .iter()
        .filter(|u| u["username"] == "bin3")
        .all(|u| u.get("deleted_at").is_none()));
    let csv = m
        .ok(&["users", "export", "--format", "csv", "--include-deleted"])
        .stdout;
    assert!(
        csv.lines().next().unwrap().ends_with("\"deleted_at\""),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 5, "{csv}");

    // bin1 moved back into the item: restored with its MFA data and OATH secret
    move_to("bin1", "BinOut", "Bin");
    let r = m.sync_full();
    assert_eq!(counts(&r).0, 1, "a restore counts as created: {r}");
    assert_eq!(r["restored"], 1, "{r}");
    let back = m.user("bin1").expect("bin1 restored");
    for field in [
        "method",
        "primary_phone",
        "mobile_phone",
        "language",
        "directory_id",
    ] {
        assert_eq!(back[field], before[field], "{field}: {back}");
    }
    assert_eq!(
        sql(
            &m,
            "SELECT count(*) FROM otp_secrets o JOIN users u ON u.id = o.user_id WHERE u.username = 'bin1'"
        ),
        "1"
    );
    let audit = m.ok(&["--json", "audit"]).stdout;
    assert!(audit.contains("\"restore\""), "{audit}");
    assert_eq!(deleted(&m).len(), 1);

    // users restore / purge
    let refused = m.run(&["users", "restore", "nobody"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("no such user in the recycle bin"),
        "{}",
        refused.stderr
    );
    m.ok(&["users", "restore", "bin2"]);
    assert!(m.user("bin2").is_some());
    assert!(deleted(&m).is_empty());
    // bin2 is still gone from the directory: the next cycle bins it again
    let r = m.sync_full();
    assert_eq!(counts(&r).4, 1, "{r}");
    m.ok(&["users", "purge", "bin2"]);
    assert!(deleted(&m).is_empty());
    assert!(m.user("bin2").is_none());
    let audit = m.ok(&["--json", "audit"]).stdout;
    assert!(audit.contains("\"purge\""), "{audit}");

    // a restore refused while a live user has the username
    move_to("bin3", "Bin", "BinOut");
    assert_eq!(counts(&m.sync_full()).4, 1);
    sql(
        &m,
        "UPDATE users SET username = 'bin3', username_lower = 'bin3' WHERE username = 'bin1'",
    );
    let refused = m.run(&["users", "restore", "bin3"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("the live user bin3"),
        "{}",
        refused.stderr
    );
    sql(
        &m,
        "UPDATE users SET username = 'bin1', username_lower = 'bin1' WHERE username = 'bin3'",
    );

    // older than sync.retention (30 days by default): purged after the next cycle
    sql(
        &m,
        "UPDATE recycle_bin SET deleted_at = '2000-01-01T00:00:00Z'",
    );
    m.sync_full();
    assert!(deleted(&m).is_empty());
    let audit = m.ok(&["--json", "audit"]).stdout;
    assert!(audit.contains("bin-purged"), "{audit}");
}
