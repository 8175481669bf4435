//! Incremental synchronization against a real OpenLDAP slapd (RFC 4533
//! syncrepl refreshOnly with the cookie stored by the last cycle): one
//! incremental `sync` after directory changes gives the same users as a fresh
//! full synchronization, reads about as many entries as changed, and a cycle
//! killed mid-way loses nothing. Each test has its own OU as base DN.

use crate::common::{counts, Mfa};
use mfasync_testkit::Slapd;
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::OnceLock;

const BASE: &str = "dc=example,dc=com";
const BULK: usize = 400;

fn person(dn: &str, uid: &str, extra: &str) -> String {
    format!("dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n{extra}\n")
}

fn ou(dn: &str) -> String {
    let name = dn
        .split(',')
        .next()
        .and_then(|r| r.split('=').nth(1))
        .unwrap_or("x");
    format!("dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n\n")
}

/// One test tree under `ou={t},BASE`: Staff (u1..u10), Other (o1, o2), Bulk
/// (BULK users), groups vip (u1, nested vipinner) and vipinner (u2).
fn tree(t: &str) -> String {
    let root = format!("ou={t},{BASE}");
    let mut l = String::new();
    for o in ["", "ou=Staff,", "ou=Other,", "ou=Bulk,", "ou=Groups,"] {
        l.push_str(&ou(&format!("{o}{root}")));
    }
    for i in 1..=10 {
        l.push_str(&person(
            &format!("uid={t}u{i},ou=Staff,{root}"),
            &format!("{t}u{i}"),
            &format!("givenName: U{i}\nmobile: +1 425 555 01{i:02}\n"),
        ));
    }
    for i in 1..=2 {
        l.push_str(&person(
            &format!("uid={t}o{i},ou=Other,{root}"),
            &format!("{t}o{i}"),
            "",
        ));
    }
    for i in 0..BULK {
        l.push_str(&person(
            &format!("uid={t}b{i:04},ou=Bulk,{root}"),
            &format!("{t}b{i:04}"),
            "",
        ));
    }
    let _ = writeln!(
        l,
        "dn: cn=vipinner,ou=Groups,{root}\nobjectClass: groupOfNames\ncn: vipinner\nmember: uid={t}u2,ou=Staff,{root}\n"
    );
    let _ = writeln!(
        l,
        "dn: cn=vip,ou=Groups,{root}\nobjectClass: groupOfNames\ncn: vip\nmember: uid={t}u1,ou=Staff,{root}\nmember: cn=vipinner,ou=Groups,{root}\n"
    );
    l
}

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = String::new();
        for t in ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T10"] {
            l.push_str(&tree(t));
        }
        Slapd::start(&l)
    })
}

fn config(t: &str, extra_sync: &str, items: &str) -> String {
    config_on(slapd(), t, extra_sync, items)
}

/// [`config`] for the tree `t` of the slapd `s`.
fn config_on(s: &Slapd, t: &str, extra_sync: &str, items: &str) -> String {
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        &format!("ou={t},{BASE}"),
        5,
        (&s.admin_dn, &s.admin_password),
    );
    format!(
        r#"{head}
[sync]
remove_deleted_users = true
{extra_sync}
{items}
"#
    )
}

fn items(t: &str) -> String {
    let root = format!("ou={t},{BASE}");
    format!(
        r#"
[[sync.items]]
kind = "security-group"
dn = "cn=vip,ou=Groups,{root}"
include_nested = true
[sync.items.user]
method = "text-message"
phone = "mobile"
[[sync.items]]
kind = "container"
dn = "ou=Staff,{root}"
when_removed = "disable"
[sync.items.user]
phone = "mobile"
[[sync.items]]
kind = "container"
dn = "ou=Bulk,{root}"
when_removed = "remove"
"#
    )
}

fn sync(m: &Mfa) -> (Value, String) {
    let o = m.ok(&["--json", "sync"]);
    (o.json(), o.stderr)
}

/// A reference database that took the same full sync before the changes and
/// a full sync after them: the incremental database must equal it, user for
/// user, field for field (a fresh empty database would not know the users who
/// left an item with when_removed = disable).
fn reference(cfg: &str) -> Mfa {
    let r = Mfa::new();
    r.apply(cfg);
    assert_eq!(r.sync_full()["mode"], "full");
    r
}

fn assert_same_as_full(m: &Mfa, reference: &Mfa) {
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
}

/// Create, modify (phone, name, username), delete, move in and out, group
/// membership added and removed (directly and in a nested group), a bulk user
/// modified and one deleted.
fn change_everything(s: &Slapd, t: &str) {
    let root = format!("ou={t},{BASE}");
    s.ldapadd(&person(
        &format!("uid={t}u11,ou=Staff,{root}"),
        &format!("{t}u11"),
        "givenName: New\nmobile: +1 425 555 0111\n",
    ));
    s.ldapmodify(&format!(
        "dn: uid={t}u3,ou=Staff,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 206 555 0199\n\n\
         dn: uid={t}u4,ou=Staff,{root}\nchangetype: modify\nreplace: givenName\ngivenName: Renamed\n-\nreplace: sn\nsn: Newsurname\n\n\
         dn: uid={t}u5,ou=Staff,{root}\nchangetype: modrdn\nnewrdn: uid={t}u5x\ndeleteoldrdn: 1\n\n\
         dn: uid={t}u7,ou=Staff,{root}\nchangetype: modrdn\nnewrdn: uid={t}u7\ndeleteoldrdn: 1\nnewsuperior: ou=Other,{root}\n\n\
         dn: uid={t}o1,ou=Other,{root}\nchangetype: modrdn\nnewrdn: uid={t}o1\ndeleteoldrdn: 1\nnewsuperior: ou=Staff,{root}\n\n\
         dn: cn=vip,ou=Groups,{root}\nchangetype: modify\nadd: member\nmember: uid={t}u9,ou=Staff,{root}\n-\ndelete: member\nmember: uid={t}u1,ou=Staff,{root}\n\n\
         dn: cn=vipinner,ou=Groups,{root}\nchangetype: modify\nadd: member\nmember: uid={t}u10,ou=Staff,{root}\n\n\
         dn: uid={t}b0001,ou=Bulk,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 0999\n"
    ));
    s.ldapdelete(&format!("uid={t}u6,ou=Staff,{root}"));
    s.ldapdelete(&format!("uid={t}b0002,ou=Bulk,{root}"));
}

#[test]
fn one_incremental_cycle_equals_a_fresh_full_sync() {
    let s = slapd();
    let t = "T1";
    let m = Mfa::new();
    let cfg = config(t, "", &items(t));
    m.apply(&cfg);
    let first = m.sync_full();
    assert_eq!(first["mode"], "full");
    let full_db = reference(&cfg);
    assert_eq!(counts(&first).0, (10 + BULK) as u64, "{first}");

    // nothing changed: incremental, nothing read but the refresh itself
    let (quiet, _) = sync(&m);
    assert_eq!(quiet["mode"], "incremental", "{quiet}");
    assert_eq!(counts(&quiet), (0, 0, 0, 0, 0, 0), "{quiet}");
    let n0 = quiet["entries_read"].as_u64().unwrap_or(u64::MAX);
    eprintln!("quiet incremental cycle: {quiet}");
    // (other tests change their own OUs meanwhile; the tree here has 400+ entries)
    assert!(n0 <= 20, "a quiet cycle read {n0} entries");

    change_everything(s, t);
    let (inc, stderr) = sync(&m);
    assert_eq!(inc["mode"], "incremental", "{inc}\n{stderr}");
    let n = inc["entries_read"].as_u64().unwrap_or(u64::MAX);
    eprintln!("incremental after changes: {inc}");
    // ~12 changed entries (+ memberOf side effects) and the reads they need; the tree has 400+ entries
    assert!(n < 80, "incremental cycle read {n} entries");

    let u = |name: &str| m.user(name);
    assert!(u(&format!("{t}u11")).is_some(), "created");
    assert_eq!(
        u(&format!("{t}u3")).expect("u3")["primary_phone"],
        "+12065550199"
    );
    assert_eq!(u(&format!("{t}u4")).expect("u4")["first_name"], "Renamed");
    assert!(
        u(&format!("{t}u5")).is_none() && u(&format!("{t}u5x")).is_some(),
        "username change"
    );
    assert!(u(&format!("{t}u6")).is_none(), "deleted");
    assert_eq!(
        u(&format!("{t}u7")).expect("u7")["enabled"],
        false,
        "moved out of Staff: disabled"
    );
    assert_eq!(
        u(&format!("{t}o1")).expect("o1")["enabled"],
        true,
        "moved into Staff"
    );
    assert_eq!(
        u(&format!("{t}u9")).expect("u9")["method"],
        "text-message",
        "joined vip"
    );
    assert_eq!(
        u(&format!("{t}u10")).expect("u10")["method"],
        "text-message",
        "joined nested vipinner"
    );
    assert_eq!(
        u(&format!("{t}u1")).expect("u1")["method"],
        "phone-call",
        "left vip: Staff governs"
    );
    assert!(u(&format!("{t}b0002")).is_none(), "bulk user deleted");

    assert_same_as_full(&m, &full_db);

    // and a full sync of the incremental database now changes nothing
    let again = m.sync_full();
    assert_eq!(
        counts(&again).0 + counts(&again).1 + counts(&again).3 + counts(&again).4,
        0,
        "{again}"
    );
}

#[test]
fn killed_cycle_rerun_reaches_the_same_state() {
    let s = slapd();
    let t = "T2";
    let m = Mfa::new();
    let cfg = config(t, "", &items(t));
    m.apply(&cfg);
    m.sync_full();
    let full_db = reference(&cfg);
    change_everything(s, t);
    // kill -9 an incremental cycle at several points, then let one finish
    for delay_ms in [5u64, 30, 80] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mfasync"))
            .args(["--database", &m.url, "--json", "sync"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}\n{stderr}");
    assert_same_as_full(&m, &full_db);
    // and again: nothing left to do
    let (v, _) = sync(&m);
    assert_eq!(counts(&v), (0, 0, 0, 0, 0, 0), "{v}");
}

#[test]
fn changed_items_or_always_full_run_a_full_sync_and_say_why() {
    let t = "T3";
    let m = Mfa::new();
    m.apply(&config(t, "", &items(t)));
    // no full sync yet
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "full");
    assert!(
        stderr.contains("no full synchronization has set a starting point"),
        "{stderr}"
    );
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental");

    // reordered items: full, with the seed's reason
    let root = format!("ou={t},{BASE}");
    let reordered = format!(
        "[[sync.items]]\nkind = \"container\"\ndn = \"ou=Bulk,{root}\"\nwhen_removed = \"remove\"\n{}",
        items(t).replace(&format!("[[sync.items]]\nkind = \"container\"\ndn = \"ou=Bulk,{root}\"\nwhen_removed = \"remove\"\n"), "")
    );
    m.apply(&config(t, "", &reordered));
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "full", "{v}");
    assert!(
        stderr.contains(
            "sync items changed since the last full sync: running a full synchronization"
        ),
        "{stderr}"
    );
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental");

    // always_full
    m.apply(&config(t, "always_full = true", &reordered));
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "full");
    assert!(stderr.contains("always_full"), "{stderr}");

    // history records each cycle with its mode
    let h = m.ok(&["--json", "history"]).json();
    let modes: Vec<&str> = h
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["mode"].as_str())
        .collect();
    assert_eq!(
        modes,
        ["full", "incremental", "full", "incremental", "full"],
        "{h}"
    );
}

#[test]
fn entries_read_do_not_grow_with_the_directory() {
    let s = slapd();
    let t = "T4";
    let m = Mfa::new();
    m.apply(&config(t, "", &items(t)));
    m.sync_full();
    let root = format!("ou={t},{BASE}");
    let mut ldif = String::new();
    for i in 10..20 {
        let _ = write!(
            ldif,
            "dn: uid={t}b{i:04},ou=Bulk,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 {i:04}\n\n"
        );
    }
    s.ldapmodify(&ldif);
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental");
    assert_eq!(counts(&v).1, 10, "{v}");
    let n = v["entries_read"].as_u64().unwrap_or(u64::MAX);
    let h = m.ok(&["--json", "history", "--limit", "1"]).json();
    assert_eq!(h[0]["entries_read"].as_u64(), Some(n), "history: {h}");
    eprintln!("10 modified users of {BULK}: entries_read = {n}");
    assert!((10..=25).contains(&n), "entries_read {n}");
}

#[test]
fn a_moved_container_runs_a_full_sync() {
    let s = slapd();
    let t = "T5";
    let root = format!("ou={t},{BASE}");
    let m = Mfa::new();
    let cfg = config(t, "", &items(t));
    m.apply(&cfg);
    m.sync_full();
    let full_db = reference(&cfg);
    assert!(m.user(&format!("{t}o1")).is_none());
    // ou=Other (o1, o2) moves under ou=Staff: the directory reports only the OU
    s.ldapmodify(&format!(
        "dn: ou=Other,{root}\nchangetype: modrdn\nnewrdn: ou=Other\ndeleteoldrdn: 1\nnewsuperior: ou=Staff,{root}\n"
    ));
    let o = m.ok(&["--json", "sync"]);
    let v = o.json();
    assert_eq!(v["mode"], "full", "{v}");
    assert!(
        o.stderr.contains("changed (renamed, moved or edited)"),
        "{}",
        o.stderr
    );
    assert_eq!(counts(&v).0, 2, "o1 and o2 created: {v}");
    assert_same_as_full(&m, &full_db);
    // the full sync set a new starting point
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}");
    assert_eq!(counts(&v), (0, 0, 0, 0, 0, 0), "{v}");
}

/// Issue 19 on syncrepl: a user moved out of the base DN (reported as a
/// delete or as absent from the present phase) and a user a change took out
/// of the user filter still exist: their item's `when_removed` (disable),
/// phones kept; a user deleted in the directory (its entryUUID found nowhere)
/// is removed.
#[test]
fn users_moved_or_filtered_out_are_disabled_and_deleted_ones_removed() {
    let s = slapd();
    let t = "T6";
    let root = format!("ou={t},{BASE}");
    s.ldapadd(&ou(&format!("ou={t}out,{BASE}")));
    let cfg = config(
        t,
        "",
        &format!(
            "[[sync.items]]\nkind = \"container\"\ndn = \"ou=Staff,{root}\"\nwhen_removed = \"disable\"\n[sync.items.user]\nphone = \"mobile\"\n"
        ),
    )
    .replace(
        "user = \"(objectClass=inetOrgPerson)\"",
        "user = \"(&(objectClass=inetOrgPerson)(!(description=nomfa)))\"",
    );
    let m = Mfa::new();
    m.apply(&cfg);
    assert_eq!(counts(&m.sync_full()).0, 10);
    let (quiet, _) = sync(&m);
    assert_eq!(quiet["mode"], "incremental", "{quiet}");
    s.ldapmodify(&format!(
        "dn: uid={t}u1,ou=Staff,{root}\nchangetype: modrdn\nnewrdn: uid={t}u1\ndeleteoldrdn: 1\nnewsuperior: ou={t}out,{BASE}\n\n\
         dn: uid={t}u2,ou=Staff,{root}\nchangetype: modify\nreplace: description\ndescription: nomfa\n"
    ));
    s.ldapdelete(&format!("uid={t}u3,ou=Staff,{root}"));
    let (inc, stderr) = sync(&m);
    assert_eq!(inc["mode"], "incremental", "{inc}\n{stderr}");
    assert_eq!(counts(&inc), (0, 0, 0, 2, 1, 0), "{inc}\n{stderr}");
    for (name, phone) in [("u1", "+14255550101"), ("u2", "+14255550102")] {
        let u = m
            .user(&format!("{t}{name}"))
            .unwrap_or_else(|| panic!("{name} removed"));
        assert_eq!(u["enabled"], false, "{u}");
        assert_eq!(u["primary_phone"], phone, "{u}");
    }
    assert!(m.user(&format!("{t}u3")).is_none(), "deleted");
    // a full cycle agrees
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 9));
}

/// A slapd keeping no session log answers a refresh with a present phase
/// (every entry still there, by entryUUID) instead of listing deletions: the
/// stored users it does not list are looked up by id, so a deleted user is
/// removed, a moved one disabled, and nobody else touched, as a full cycle does.
#[test]
fn without_a_session_log_the_present_phase_tells_who_left() {
    let t = "T9";
    let root = format!("ou={t},{BASE}");
    let s = Slapd::start_without_session_log(&tree(t));
    let cfg = config_on(&s, t, "", &items(t));
    let m = Mfa::new();
    m.apply(&cfg);
    let r = reference(&cfg);
    assert_eq!(counts(&m.sync_full()).0, 10 + BULK as u64);
    let (quiet, _) = sync(&m);
    assert_eq!(quiet["mode"], "incremental", "{quiet}");
    s.ldapmodify(&format!(
        "dn: uid={t}u3,ou=Staff,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 206 555 0199\n\n\
         dn: uid={t}u7,ou=Staff,{root}\nchangetype: modrdn\nnewrdn: uid={t}u7\ndeleteoldrdn: 1\nnewsuperior: ou=Other,{root}\n"
    ));
    s.ldapdelete(&format!("uid={t}u6,ou=Staff,{root}"));
    s.ldapdelete(&format!("uid={t}b0002,ou=Bulk,{root}"));
    let (inc, stderr) = sync(&m);
    assert_eq!(inc["mode"], "incremental", "{inc}\n{stderr}");
    // u3 updated; u7 disabled (moved out of Staff); u6 and b0002 removed
    assert_eq!(counts(&inc), (0, 1, 0, 1, 2, 0), "{inc}\n{stderr}");
    assert_eq!(
        m.user(&format!("{t}u7")).map(|u| u["enabled"].clone()),
        Some(Value::Bool(false))
    );
    assert!(m.user(&format!("{t}u6")).is_none() && m.user(&format!("{t}b0002")).is_none());
    assert_same_as_full(&m, &r);
}

/// Past a number of changed entries (or users to look at, after a changed
/// group) an incremental cycle gives way to a full one, which says why and
/// reaches the same users: a cycle holds its candidates in memory and reads
/// each one alone (`MFASYNC_TEST_MAX_INCREMENTAL` makes 5 many).
#[test]
fn many_changes_run_a_full_sync_and_say_why() {
    let s = slapd();
    let t = "T10";
    let root = format!("ou={t},{BASE}");
    let cfg = config(t, "", &items(t));
    let mut m = Mfa::new();
    m.env
        .push(("MFASYNC_TEST_MAX_INCREMENTAL".into(), "5".into()));
    m.apply(&cfg);
    let r = reference(&cfg);
    m.sync_full();
    let (quiet, _) = sync(&m);
    assert_eq!(quiet["mode"], "incremental", "{quiet}");
    let modify = |uids: std::ops::Range<usize>, text: &str| {
        let mut l = String::new();
        for i in uids {
            let _ = write!(
                l,
                "dn: uid={t}b{i:04},ou=Bulk,{root}\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 {text}{i:02}\n\n"
            );
        }
        s.ldapmodify(&l);
    };
    // 5 changed entries: an incremental cycle
    modify(0..5, "07");
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}\n{stderr}");
    assert_eq!(counts(&v).1, 5, "{v}");
    // 8: a full one, saying why
    modify(10..18, "08");
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "full", "{v}\n{stderr}");
    assert_eq!(counts(&v).1, 8, "{v}");
    assert!(
        stderr.contains(
            "8 directory entries changed since the last cycle, more than an incremental cycle takes (5)"
        ),
        "{stderr}"
    );
    // one changed group making 8 users to look at: a full one too
    let mut members = String::new();
    for i in 20..26 {
        let _ = writeln!(members, "member: uid={t}b{i:04},ou=Bulk,{root}");
    }
    s.ldapmodify(&format!(
        "dn: cn=vip,ou=Groups,{root}\nchangetype: modify\nadd: member\n{members}\n"
    ));
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "full", "{v}\n{stderr}");
    assert!(
        stderr.contains("users to look at since the last cycle"),
        "{stderr}"
    );
    assert_eq!(counts(&v).1, 6, "{v}");
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}");
    assert_same_as_full(&m, &r);
}

/// The stored watermark, if any.
fn watermark(m: &Mfa) -> Option<mfasync_store::Watermark> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        store.watermark().await.unwrap()
    })
}

#[test]
fn always_full_takes_no_incremental_starting_point() {
    let t = "T3";
    let m = Mfa::new();
    m.apply(&config(t, "always_full = true", &items(t)));
    for _ in 0..2 {
        let (v, _) = sync(&m);
        assert_eq!(v["mode"], "full", "{v}");
        // no syncrepl cookie taken: the watermark only records the items
        let wm = watermark(&m).expect("a watermark");
        assert_eq!(wm.kind, mfasync_store::MarkKind::Full, "{wm:?}");
        assert!(wm.value.is_empty(), "{wm:?}");
        assert!(wm.domains.is_empty(), "{wm:?}");
    }
    assert!(!m.users().is_empty());
    // always_full off: the next full cycle takes a cookie, then incremental ones run
    m.apply(&config(t, "", &items(t)));
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "full", "{v}");
    let wm = watermark(&m).expect("a watermark");
    assert_eq!(wm.kind, mfasync_store::MarkKind::SyncRepl, "{wm:?}");
    assert!(!wm.value.is_empty());
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}");
}

/// Issue 19 item 5: after a change of `[attributes]` or `[filters]` the next
/// cycle is full (said on stderr, in `sync --json` and in the run's history
/// row), re-maps every stored user with the new mapping (the raw stamps of the
/// old one do not hide them) and applies the new filter; then cycles are
/// incremental again.
#[test]
fn mapping_or_filter_changes_run_a_full_sync_that_reaches_stored_users() {
    let t = "T7";
    let m = Mfa::new();
    let cfg = config(t, "", &items(t));
    m.apply(&cfg);
    assert_eq!(m.sync_full()["mode"], "full");
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}");
    let u5 = format!("{t}u5");
    assert_eq!(m.user(&u5).expect("u5")["first_name"], "U5");

    // the first name now comes from cn (= the uid in this tree)
    let remapped = cfg.replace(
        "username = [\"uid\"]",
        "username = [\"uid\"]\nfirst_name = \"cn\"",
    );
    assert_ne!(remapped, cfg);
    m.apply(&remapped);
    let (v, stderr) = sync(&m);
    let why = "the attribute mapping or filters changed since the last full sync: running a full synchronization";
    assert_eq!(v["mode"], "full", "{v}");
    assert_eq!(v["note"], why, "{v}");
    assert!(stderr.contains(why), "{stderr}");
    assert_eq!(m.user(&u5).expect("u5")["first_name"], u5.as_str());
    // every Staff user got the new first name, none was skipped as unchanged
    for i in 1..=10 {
        let name = format!("{t}u{i}");
        assert_eq!(m.user(&name).expect("user")["first_name"], name.as_str());
    }
    let h = m.ok(&["--json", "history", "--limit", "1"]).json();
    assert_eq!(h[0]["mode"], "full", "{h}");
    assert_eq!(h[0]["note"], why, "{h}");
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}");

    // a filter edit that leaves u3 out: full again, and u3 leaves its item
    let filtered = remapped.replace(
        "user = \"(objectClass=inetOrgPerson)\"",
        &format!("user = \"(&(objectClass=inetOrgPerson)(!(uid={t}u3)))\""),
    );
    assert_ne!(filtered, remapped);
    m.apply(&filtered);
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "full", "{v}");
    assert!(stderr.contains(why), "{stderr}");
    assert_eq!(m.user(&format!("{t}u3")).expect("u3")["enabled"], false);
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}");
    assert_eq!(counts(&v), (0, 0, 0, 0, 0, 0), "{v}");
}

/// The entryUUID of `dn`, as slapd reports it.
fn entry_uuid(dn: &str) -> String {
    let s = slapd();
    let out = std::process::Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            &s.url,
            "-D",
            &s.admin_dn,
            "-w",
            &s.admin_password,
        ])
        .args(["-s", "base", "-b", dn, "entryUUID"])
        .output()
        .expect("ldapsearch");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("entryUUID: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no entryUUID for {dn}: {text}"))
}

/// Issue 19 item 6 on OpenLDAP: `config apply` records each item's
/// entryUUID; after the item's OU is renamed (modrdn of a non-leaf entry)
/// and its group renamed, the next cycle finds both by entryUUID, runs full,
/// stores a new configuration version (audited, by the sync) with the new
/// DNs, says so, and keeps every user (updated, none departed). A group that
/// is really gone stops the cycle with nothing changed.
#[test]
fn items_follow_renames_and_a_deleted_item_stops_the_cycle() {
    let s = slapd();
    let t = "T8";
    let root = format!("ou={t},{BASE}");
    let group = format!("cn=vip,ou=Groups,{root}");
    let other = format!("ou=Other,{root}");
    let items = format!(
        "[[sync.items]]\nkind = \"security-group\"\ndn = \"{group}\"\n\
         [[sync.items]]\nkind = \"container\"\ndn = \"{other}\"\nwhen_removed = \"remove\"\n"
    );
    let m = Mfa::new();
    m.apply(&config(t, "", &items));
    let export = m.ok(&["config", "export"]).stdout;
    for dn in [&group, &other] {
        let id = entry_uuid(dn);
        assert!(export.contains(&format!("id = \"{id}\"")), "{id}: {export}");
    }
    let v = m.sync_full();
    assert_eq!(counts(&v).0, 4, "u1, u2 (vip), o1, o2: {v}");
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}");

    s.ldapmodify(&format!(
        "dn: {other}\nchangetype: modrdn\nnewrdn: ou=Elsewhere\ndeleteoldrdn: 1\n\n\
         dn: {group}\nchangetype: modrdn\nnewrdn: cn=vipers\ndeleteoldrdn: 1\n"
    ));
    let (new_other, new_group) = (
        format!("ou=Elsewhere,{root}"),
        format!("cn=vipers,ou=Groups,{root}"),
    );
    let (v, stderr) = sync(&m);
    assert_eq!(v["mode"], "full", "{v}\n{stderr}");
    assert_eq!(counts(&v), (0, 4, 0, 0, 0, 0), "{v}");
    let note = v["note"].as_str().unwrap_or_default();
    for dn in [&new_group, &new_other] {
        assert!(note.contains(&format!("at {dn}")), "{note}");
        assert!(stderr.contains(&format!("at {dn}")), "{stderr}");
    }
    assert!(
        note.contains("updated in configuration version 2"),
        "{note}"
    );
    let export = m.ok(&["config", "export"]).stdout;
    assert!(
        export.contains(&format!("dn = \"{new_group}\"")),
        "{export}"
    );
    assert!(
        export.contains(&format!("dn = \"{new_other}\"")),
        "{export}"
    );
    let audit = m.ok(&["--json", "audit", "--limit", "50"]).json();
    let config_rows: Vec<&Value> = audit
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["action"] == "config" && e["actor"] == "sync")
        .collect();
    assert_eq!(config_rows.len(), 1, "{audit}");
    assert!(
        config_rows[0]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("config version 2: ") && d.contains(&new_other)),
        "{audit}"
    );
    let h = m.ok(&["--json", "history", "--limit", "1"]).json();
    assert_eq!(h[0]["note"], note, "{h}");
    for (name, item) in [
        (format!("{t}u1"), &new_group),
        (format!("{t}u2"), &new_group),
        (format!("{t}o1"), &new_other),
        (format!("{t}o2"), &new_other),
    ] {
        let u = m.user(&name).unwrap_or_else(|| panic!("{name} departed"));
        assert_eq!(u["enabled"], true, "{u}");
        assert_eq!(u["sync_item"], item.as_str(), "{u}");
    }
    assert_eq!(
        m.user(&format!("{t}o1")).expect("o1")["dn"],
        format!("uid={t}o1,{new_other}")
    );
    // then incremental again, nothing to do
    let (v, _) = sync(&m);
    assert_eq!(v["mode"], "incremental", "{v}");
    assert_eq!(counts(&v), (0, 0, 0, 0, 0, 0), "{v}");

    // the group deleted: no entry has its entryUUID, the cycle stops
    let before = m.users();
    s.ldapdelete(&new_group);
    for args in [["--json", "sync", ""], ["--json", "sync", "--full"]] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let o = m.run(&args);
        assert_ne!(o.code, 0, "{}", o.stdout);
        assert!(
            o.stderr
                .contains("does not exist in the directory, and no entry has its entryUUID"),
            "{}",
            o.stderr
        );
    }
    assert_eq!(m.users(), before);
    let export = m.ok(&["config", "export"]).stdout;
    assert!(
        export.contains(&format!("dn = \"{new_group}\"")),
        "{export}"
    );
}
