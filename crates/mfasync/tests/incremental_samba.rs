//! Incremental synchronization against a real Samba AD DC (DirSync as
//! Administrator, uSNChanged polling with `sync.change_tracking = "usn"`, and
//! the automatic switch to it when a proxy refuses DirSync; started in the
//! private network namespace of scripts/test): one
//! incremental `sync` after directory changes gives the same users as a full
//! synchronization, and reads about as many entries as changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{counts, Mfa};
use mfasync_testkit::{LdapProxy, Samba};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::OnceLock;

const BASE: &str = "DC=mfa,DC=test";
const BULK: usize = 200;

fn user(cn: &str, ou: &str, sam: &str, extra: &str) -> String {
    format!(
        "dn: CN={cn},{ou}\nobjectClass: user\nsAMAccountName: {sam}\nuserPrincipalName: {sam}@mfa.test\nuserAccountControl: 544\n{extra}\n"
    )
}

fn tree(t: &str) -> String {
    let root = format!("OU={t},{BASE}");
    let mut l = String::new();
    for o in ["", "OU=Staff,", "OU=Other,", "OU=Bulk,", "OU=Groups,"] {
        let dn = format!("{o}{root}");
        let name = dn
            .split(',')
            .next()
            .and_then(|r| r.split('=').nth(1))
            .unwrap_or("x");
        let _ = writeln!(l, "dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n");
    }
    // outside the base DN: where a user moves out of it (issue 19)
    let _ = writeln!(
        l,
        "dn: OU=Out{t},{BASE}\nobjectClass: organizationalUnit\nou: Out{t}\n"
    );
    for i in 1..=6 {
        l.push_str(&user(
            &format!("{t}u{i}"),
            &format!("OU=Staff,{root}"),
            &format!("{t}u{i}"),
            &format!("givenName: U{i}\nmobile: +1 425 555 01{i:02}\n"),
        ));
    }
    l.push_str(&user(
        &format!("{t}o1"),
        &format!("OU=Other,{root}"),
        &format!("{t}o1"),
        "",
    ));
    for i in 0..BULK {
        l.push_str(&user(
            &format!("{t}b{i:04}"),
            &format!("OU=Bulk,{root}"),
            &format!("{t}b{i:04}"),
            "",
        ));
    }
    let _ = writeln!(
        l,
        "dn: CN={t}vip,OU=Groups,{root}\nobjectClass: group\nsAMAccountName: {t}vip\ngroupType: -2147483646\nmember: CN={t}u1,OU=Staff,{root}\n"
    );
    l
}

fn samba() -> &'static Samba {
    static S: OnceLock<Samba> = OnceLock::new();
    S.get_or_init(|| {
        Samba::start(&(tree("I1") + &tree("I2") + &tree("I3") + &tree("I4") + &tree("I5")))
    })
}

fn config(t: &str) -> String {
    let s = samba();
    let root = format!("OU={t},{BASE}");
    format!(
        r#"
[directory]
source = "ldap"
servers = ["{url}"]
base_dn = "{root}"
[directory.query_bind]
type = "simple"
dn = "{dn}"
password = "{pw}"
[filters]
user = "(&(objectCategory=person)(objectClass=user)(!(description=nomfa)))"
[sync]
remove_deleted_users = true
[[sync.items]]
kind = "security-group"
dn = "CN={t}vip,OU=Groups,{root}"
[sync.items.user]
method = "text-message"
phone = "mobile"
[[sync.items]]
kind = "container"
dn = "OU=Staff,{root}"
when_removed = "disable"
[sync.items.user]
phone = "mobile"
[[sync.items]]
kind = "container"
dn = "OU=Bulk,{root}"
"#,
        url = s.url,
        dn = s.admin_dn,
        pw = s.admin_password,
    )
}

#[test]
fn one_dirsync_cycle_equals_a_full_sync() {
    changes_then_one_cycle_equals_a_full_sync("I1", &config("I1"));
}

/// The stored watermark (kind, value as text).
fn watermark(m: &Mfa) -> mfasync_store::Watermark {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        store.watermark().await.unwrap().expect("a watermark")
    })
}

fn set_watermark(m: &Mfa, wm: &mfasync_store::Watermark) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        store.apply(&[], Some(wm)).await.unwrap();
    })
}

/// A tombstone in the domain: uSNChanged polling is only used when the bind
/// account is seen to read tombstones, and a fresh DC may have none.
fn ensure_tombstone(s: &Samba, t: &str) {
    let dn = format!("CN={t}gone0,OU=Other,OU={t},{BASE}");
    s.ldapadd(&format!(
        "dn: {dn}\nobjectClass: user\nsAMAccountName: {t}gone0\n"
    ));
    s.ldapdelete(&dn);
}

fn usn_config(t: &str) -> String {
    config(t).replace("[sync]\n", "[sync]\nchange_tracking = \"usn\"\n")
}

#[test]
fn one_usn_polling_cycle_equals_a_full_sync() {
    let m = changes_then_one_cycle_equals_a_full_sync("I3", &usn_config("I3"));
    let wm = watermark(&m);
    assert_eq!(wm.kind, mfasync_store::MarkKind::Usn);
    let text = String::from_utf8(wm.value).unwrap();
    let mut parts = text.split('\n');
    let usn: u64 = parts.next().unwrap().parse().unwrap();
    assert!(usn > 0, "{text}");
    assert_eq!(parts.next().unwrap().len(), 32, "invocationId: {text}");
    assert!(
        parts.next().unwrap().starts_with("CN=NTDS Settings,"),
        "dsServiceName: {text}"
    );
}

#[test]
fn usn_polling_resyncs_in_full_when_the_dc_database_or_the_dc_changes() {
    let s = samba();
    let t = "I4";
    let root = format!("OU={t},{BASE}");
    ensure_tombstone(s, t);
    let m = Mfa::new();
    m.apply(&usn_config(t));
    m.sync_full();
    let good = watermark(&m);
    assert_eq!(good.kind, mfasync_store::MarkKind::Usn);

    // the same DC, restored from a backup: another invocationId
    let text = String::from_utf8(good.value.clone()).unwrap();
    let mut parts: Vec<&str> = text.splitn(3, '\n').collect();
    parts[1] = "ffffffffffffffffffffffffffffffff";
    set_watermark(
        &m,
        &mfasync_store::Watermark {
            value: parts.join("\n").into_bytes(),
            ..good.clone()
        },
    );
    s.ldapmodify(&format!(
        "dn: CN={t}u2,OU=Staff,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 206 555 0142\n"
    ));
    let o = m.ok(&["--json", "sync"]);
    let v = o.json();
    assert_eq!(v["mode"], "full", "{v}\n{}", o.stderr);
    assert!(o.stderr.contains("invocationId"), "{}", o.stderr);
    assert_eq!(
        m.user(&format!("{t}u2@mfa.test")).expect("u2")["mobile_phone"],
        "+1 206 555 0142"
    );
    // the full cycle stored a good starting point again: incremental from here
    let again = watermark(&m);
    assert_eq!(again.kind, mfasync_store::MarkKind::Usn);
    assert_eq!(
        String::from_utf8(again.value.clone())
            .unwrap()
            .split('\n')
            .nth(1),
        Some(text.split('\n').nth(1).unwrap())
    );
    let o = m.ok(&["--json", "sync"]);
    assert_eq!(o.json()["mode"], "incremental", "{}", o.stderr);

    // another DC answered: its USNs mean nothing here
    set_watermark(
        &m,
        &mfasync_store::Watermark {
            server: "ldap://dc2.mfa.test".into(),
            ..watermark(&m)
        },
    );
    let o = m.ok(&["--json", "sync"]);
    assert_eq!(o.json()["mode"], "full", "{}", o.stderr);
    assert!(o.stderr.contains("dc2.mfa.test"), "{}", o.stderr);
}

#[test]
fn usn_polling_is_not_used_by_an_account_that_cannot_see_tombstones() {
    let s = samba();
    let t = "I4";
    let root = format!("OU={t},{BASE}");
    // a plain domain user: Samba shows it CN=Deleted Objects but not the
    // tombstones in it, so deletions would go unnoticed
    let svc = format!("CN={t}svc,OU=Other,{root}");
    s.ldapadd(&format!(
        "dn: {svc}\nobjectClass: user\nsAMAccountName: {t}svc\nuserAccountControl: 544\n"
    ));
    s.set_password(&format!("{t}svc"), "Svc-Passw0rd-42");
    // at least one tombstone exists
    s.ldapadd(&format!(
        "dn: CN={t}gone,OU=Other,{root}\nobjectClass: user\nsAMAccountName: {t}gone\n"
    ));
    s.ldapdelete(&format!("CN={t}gone,OU=Other,{root}"));
    let cfg = usn_config(t)
        .replace(
            &format!("dn = \"{}\"", s.admin_dn),
            &format!("dn = \"{svc}\""),
        )
        .replace(
            &format!("password = \"{}\"", s.admin_password),
            "password = \"Svc-Passw0rd-42\"",
        );
    let m = Mfa::new();
    m.apply(&cfg);
    let o = m.ok(&["--json", "sync", "--full"]);
    assert_eq!(counts(&o.json()).0, (6 + BULK) as u64, "{}", o.json());
    // no uSNChanged starting point, and the log says what to grant
    assert_eq!(
        watermark(&m).kind,
        mfasync_store::MarkKind::Full,
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("CN=Deleted Objects,DC=mfa,DC=test"),
        "{}",
        o.stderr
    );
    let o = m.ok(&["--json", "sync"]);
    assert_eq!(o.json()["mode"], "full", "{}", o.stderr);
}

const DIRSYNC_OID: &str = "1.2.840.113556.1.4.841";

/// A DC that refuses DirSync even with OBJECT_SECURITY (Samba behind a proxy
/// that answers every DirSync search with insufficientAccessRights, as AD
/// does): the full sync switches to uSNChanged polling by itself, and the
/// incremental cycles that follow poll uSNChanged without asking for DirSync.
#[test]
fn dirsync_refused_even_with_object_security_switches_to_usn_polling() {
    let s = samba();
    let t = "I5";
    let root = format!("OU={t},{BASE}");
    let upstream = s.url.trim_start_matches("ldap://");
    let proxy = LdapProxy::start(upstream, DIRSYNC_OID);
    // Administrator: may read tombstones, so uSNChanged polling can be used
    let cfg = config(t).replace(
        &format!("servers = [\"{}\"]", s.url),
        &format!("servers = [\"{}\"]", proxy.url()),
    );
    assert!(cfg.contains(&proxy.url()), "{cfg}");

    let m = changes_then_one_cycle_equals_a_full_sync(t, &cfg);
    let wm = watermark(&m);
    assert_eq!(
        wm.kind,
        mfasync_store::MarkKind::Usn,
        "the automatic switch stored a uSNChanged watermark"
    );
    assert_eq!(wm.server, proxy.url());
    // three full syncs (one of `m`, two of the reference), each refused plain
    // and with OBJECT_SECURITY; the two incremental cycles never asked
    assert_eq!(proxy.refused(), 3 * 2);

    // a full sync says why it polls uSNChanged
    let before = proxy.refused();
    let o = m.ok(&["--json", "sync", "--full"]);
    assert_eq!(o.json()["mode"], "full");
    assert_eq!(
        proxy.refused(),
        before + 2,
        "plain, then with OBJECT_SECURITY"
    );
    assert!(
        o.stderr
            .contains("DirSync refused even with OBJECT_SECURITY")
            && o.stderr.contains("INSUFF_ACCESS_RIGHTS"),
        "{}",
        o.stderr
    );
    assert_eq!(watermark(&m).kind, mfasync_store::MarkKind::Usn);

    // the next cycles stay incremental on uSNChanged, without DirSync
    let before = proxy.refused();
    for phone in ["+1 425 555 0701", "+1 425 555 0702"] {
        s.ldapmodify(&format!(
            "dn: CN={t}b0002,OU=Bulk,{root}\nchangetype: modify\nreplace: mobile\nmobile: {phone}\n"
        ));
        let o = m.ok(&["--json", "sync"]);
        let v = o.json();
        assert_eq!(v["mode"], "incremental", "{v}\n{}", o.stderr);
        assert_eq!(counts(&v).1, 1, "{v}");
        assert!(!o.stderr.contains("not possible"), "{}", o.stderr);
        assert_eq!(watermark(&m).kind, mfasync_store::MarkKind::Usn);
        assert_eq!(
            m.user(&format!("{t}b0002@mfa.test")).expect("b0002")["mobile_phone"],
            phone
        );
    }
    assert_eq!(
        proxy.refused(),
        before,
        "incremental cycles do not try DirSync"
    );
    // the history, newest first: no cycle fell back to a full one
    let history = m.ok(&["--json", "history"]).json();
    let modes: Vec<&str> = history
        .as_array()
        .expect("history is an array")
        .iter()
        .map(|r| r["mode"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        modes,
        [
            "incremental",
            "incremental",
            "full",
            "incremental",
            "incremental",
            "full"
        ],
        "{history}"
    );
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["error"].is_null()),
        "{history}"
    );
}

/// After a full sync: create, modify (phone, name, username), disable,
/// delete and move users and change group members; one incremental `sync`
/// reads about as many entries as changed and gives the users a fresh full
/// sync gives.
fn changes_then_one_cycle_equals_a_full_sync(t: &str, cfg: &str) -> Mfa {
    let s = samba();
    let root = format!("OU={t},{BASE}");
    ensure_tombstone(s, t);
    let cfg = cfg.to_string();
    // b0003 will move out of the base DN, b0004 out of the user filter (issue 19)
    s.ldapmodify(&format!(
        "dn: CN={t}b0003,OU=Bulk,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 0003\n\n\
         dn: CN={t}b0004,OU=Bulk,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 0004\n"
    ));
    let m = Mfa::new();
    m.apply(&cfg);
    let first = m.sync_full();
    assert_eq!(counts(&first).0, (6 + BULK) as u64, "{first}");
    let reference = Mfa::new();
    reference.apply(&cfg);
    reference.sync_full();

    let o = m.ok(&["--json", "sync"]);
    let quiet = o.json();
    assert_eq!(quiet["mode"], "incremental", "{quiet}\n{}", o.stderr);
    assert_eq!(counts(&quiet), (0, 0, 0, 0, 0, 0), "{quiet}");

    s.ldapadd(&user(
        &format!("{t}u7"),
        &format!("OU=Staff,{root}"),
        &format!("{t}u7"),
        "givenName: New\n",
    ));
    s.ldapmodify(&format!(
        "dn: CN={t}u2,OU=Staff,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 206 555 0199\n\n\
         dn: CN={t}u3,OU=Staff,{root}\nchangetype: modify\nreplace: givenName\ngivenName: Renamed\n\n\
         dn: CN={t}u4,OU=Staff,{root}\nchangetype: modify\nreplace: userPrincipalName\nuserPrincipalName: {t}u4x@mfa.test\n\n\
         dn: CN={t}u5,OU=Staff,{root}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 546\n\n\
         dn: CN={t}o1,OU=Other,{root}\nchangetype: modrdn\nnewrdn: CN={t}o1\ndeleteoldrdn: 1\nnewsuperior: OU=Staff,{root}\n\n\
         dn: CN={t}u3,OU=Staff,{root}\nchangetype: modrdn\nnewrdn: CN={t}u3\ndeleteoldrdn: 1\nnewsuperior: OU=Other,{root}\n\n\
         dn: CN={t}vip,OU=Groups,{root}\nchangetype: modify\nadd: member\nmember: CN={t}u2,OU=Staff,{root}\n-\ndelete: member\nmember: CN={t}u1,OU=Staff,{root}\n\n\
         dn: CN={t}b0001,OU=Bulk,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 0999\n\n\
         dn: CN={t}b0003,OU=Bulk,{root}\nchangetype: modrdn\nnewrdn: CN={t}b0003\ndeleteoldrdn: 1\nnewsuperior: OU=Out{t},{BASE}\n\n\
         dn: CN={t}b0004,OU=Bulk,{root}\nchangetype: modify\nreplace: description\ndescription: nomfa\n"
    ));
    s.ldapdelete(&format!("CN={t}u6,OU=Staff,{root}"));

    let o = m.ok(&["--json", "sync"]);
    let inc = o.json();
    eprintln!("{t}: incremental cycle after changes: {inc}");
    assert_eq!(inc["mode"], "incremental", "{inc}\n{}", o.stderr);
    let n = inc["entries_read"].as_u64().unwrap_or(u64::MAX);
    assert!(n < 60, "incremental cycle read {n} entries");

    let u = |name: &str| m.user(name);
    assert!(u(&format!("{t}u7@mfa.test")).is_some(), "created");
    assert_eq!(
        u(&format!("{t}u2@mfa.test")).expect("u2")["method"],
        "text-message",
        "joined vip"
    );
    assert_eq!(
        u(&format!("{t}u2@mfa.test")).expect("u2")["primary_phone"],
        "+12065550199"
    );
    assert_eq!(
        u(&format!("{t}u1@mfa.test")).expect("u1")["method"],
        "phone-call",
        "left vip"
    );
    assert_eq!(
        u(&format!("{t}u3@mfa.test")).expect("u3")["enabled"],
        false,
        "moved out of Staff"
    );
    assert!(u(&format!("{t}u4x@mfa.test")).is_some() && u(&format!("{t}u4@mfa.test")).is_none());
    assert_eq!(
        u(&format!("{t}u5@mfa.test")).expect("u5")["enabled"],
        false,
        "disabled account"
    );
    assert!(
        u(&format!("{t}u6@mfa.test")).is_none(),
        "deleted (tombstone)"
    );
    assert_eq!(
        u(&format!("{t}o1@mfa.test")).expect("o1")["enabled"],
        true,
        "moved in"
    );
    // still in the directory, out of the base DN / the user filter: their
    // item's when_removed (disable), phones kept; not "deleted"
    for (b, phone) in [("b0003", "+1 425 555 0003"), ("b0004", "+1 425 555 0004")] {
        let v = u(&format!("{t}{b}@mfa.test")).unwrap_or_else(|| panic!("{b} removed"));
        assert_eq!(v["enabled"], false, "{b}: {v}");
        assert_eq!(v["mobile_phone"], phone, "{b}: {v}");
    }

    let f = reference.sync_full();
    assert_eq!(f["mode"], "full");
    let (a, b) = (m.users(), reference.users());
    let name = |u: &Value| u["username"].as_str().unwrap_or_default().to_string();
    let only_a: Vec<String> = a.iter().filter(|u| !b.contains(u)).map(name).collect();
    let only_b: Vec<String> = b.iter().filter(|u| !a.contains(u)).map(name).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "incremental and full differ: only in incremental {only_a:?}, only in full {only_b:?}"
    );
    assert_eq!(a.len(), b.len());
    m
}

#[test]
fn dirsync_without_the_replication_right_uses_object_security() {
    let s = samba();
    let t = "I2";
    let root = format!("OU={t},{BASE}");
    let svc = format!("CN={t}svc,OU=Other,{root}");
    s.ldapadd(&format!(
        "dn: {svc}\nobjectClass: user\nsAMAccountName: {t}svc\nuserAccountControl: 544\n"
    ));
    s.set_password(&format!("{t}svc"), "Svc-Passw0rd-42");
    let cfg = config(t)
        .replace(
            &format!("dn = \"{}\"", s.admin_dn),
            &format!("dn = \"{svc}\""),
        )
        .replace(
            &format!("password = \"{}\"", s.admin_password),
            "password = \"Svc-Passw0rd-42\"",
        );
    let m = Mfa::new();
    m.apply(&cfg);
    m.sync_full();
    s.ldapmodify(&format!(
        "dn: CN={t}b0100,OU=Bulk,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 0777\n"
    ));
    let o = m.ok(&["--json", "sync"]);
    let v = o.json();
    eprintln!("dirsync as a plain user: {v}\n{}", o.stderr);
    assert_eq!(v["mode"], "incremental", "{v}\n{}", o.stderr);
    assert_eq!(
        m.user(&format!("{t}b0100@mfa.test")).expect("b0100")["mobile_phone"],
        "+1 425 555 0777"
    );
}
