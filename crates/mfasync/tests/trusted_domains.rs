//! End to end: `include_trusted_domains` against two real Samba AD DCs with a
//! real two-way forest trust (`testkit::SambaTrust`): mfa.test on 127.0.0.1
//! and other.test on 127.0.0.2, both found by DNS SRV on a dnsmasq of the
//! test; the query bind is Kerberos as alice@MFA.TEST.
//!
//! Runs only through `scripts/test -p mfasync --test trusted_domains`. The
//! mfasync children inherit KRB5_CONFIG (both realms), set once by this binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use common::{counts, Mfa};
use mfasync_testkit::{samba_fixture, Dns, SambaTrust, SrvRecord, OTHER_BASE_DN, SAMBA_BASE_DN};
use serde_json::Value;

const PW: &str = "Secr3t!pass-mfa";

struct Env {
    trust: SambaTrust,
    dns: Dns,
}

/// One pair of DCs for the binary; a test that stops a DC holds the lock.
fn env() -> &'static Mutex<Env> {
    static E: OnceLock<Mutex<Env>> = OnceLock::new();
    E.get_or_init(|| {
        std::env::set_var("KRB5_CONFIG", SambaTrust::krb5_conf());
        let srv = |domain: &str, target: &str| SrvRecord {
            name: format!("_ldap._tcp.dc._msdcs.{domain}"),
            target: target.into(),
            port: 389,
            priority: 0,
            weight: 100,
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let dns = Dns::start(
            &[
                srv("mfa.test", "dc1.mfa.test"),
                srv("other.test", "dc2.other.test"),
            ],
            &[
                ("dc1.mfa.test", ip("127.0.0.1")),
                ("dc2.other.test", ip("127.0.0.2")),
            ],
        );
        let trust = SambaTrust::start(&samba_fixture(), &other_fixture());
        trust.mfa.set_password("alice", PW);
        Mutex::new(Env { trust, dns })
    })
}

/// other.test: OU=People with two users.
fn other_fixture() -> String {
    let people = format!("OU=People,{OTHER_BASE_DN}");
    let mut s = format!("dn: {people}\nobjectClass: organizationalUnit\nou: People\n\n");
    for (cn, sam) in [("Olga Olsen", "olga"), ("Oscar Ortiz", "oscar")] {
        s += &format!(
            "dn: CN={cn},{people}\nobjectClass: user\nsAMAccountName: {sam}\n\
             userPrincipalName: {sam}@other.test\nmail: {sam}@other.test\n\
             telephoneNumber: +15550100\nuserAccountControl: 544\n\n"
        );
    }
    s
}

/// "Use Active Directory" for `domain`, query bind Kerberos as alice@MFA.TEST, one
/// container item.
fn config(dns: &str, domain: &str, item: &str) -> String {
    format!(
        r#"
[directory]
source = "active-directory"
domain = "{domain}"
dns_servers = ["{dns}"]
timeout_seconds = 5
include_trusted_domains = true
[directory.query_bind]
type = "windows"
dn = "alice@mfa.test"
password = "{PW}"
[directory.auth_bind]
type = "windows"
[[sync.items]]
kind = "container"
dn = "{item}"
include_nested = true
"#
    )
}

/// The usual configuration: mfa.test, alice's OU.
fn mfa_config(dns: &str) -> String {
    config(
        dns,
        "mfa.test",
        &format!("OU=Sales,OU=People,{SAMBA_BASE_DN}"),
    )
}

fn domain<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["domains"]["domains"]
        .as_array()
        .unwrap_or_else(|| panic!("no domains: {v:#}"))
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name}: {v:#}"))
}

#[test]
fn the_trusted_forest_is_listed_as_a_reachable_forest_trust() {
    let e = env().lock().unwrap_or_else(|p| p.into_inner());
    let m = Mfa::new();
    m.apply(&mfa_config(&e.dns.addr.to_string()));

    // The trust as the DC of mfa.test stores it (a real trust, made by samba-tool).
    let v = m.ok(&["--json", "directory", "test"]).json();
    assert_eq!(v["ok"], true, "{v:#}");
    assert!(v["domains"].get("error").is_none(), "{v:#}");
    let this = domain(&v, "mfa.test");
    assert_eq!(this["relation"], "this domain", "{this}");
    let other = domain(&v, "other.test");
    assert_eq!(other["relation"], "trust", "{other}");
    assert_eq!(other["netbios"], "OTHER", "{other}");
    assert_eq!(other["direction"], "bidirectional", "{other}");
    assert_eq!(other["trust_type"], "forest", "{other}");
    assert_eq!(other["base_dn"], OTHER_BASE_DN, "{other}");
    assert_eq!(other["reachable"], true, "{other}");
    assert!(
        other["detail"]
            .as_str()
            .unwrap()
            .contains("ldap://127.0.0.2:389"),
        "{other}"
    );

    // The other side of the trust: other.test's DC has the trustedDomain object for mfa.test.
    let o = Command::new("ldapsearch")
        .args([
            "-LLL",
            "-x",
            "-H",
            &e.trust.other.url,
            "-D",
            &e.trust.other.admin_dn,
        ])
        .args(["-w", &e.trust.other.admin_password])
        .args(["-b", &format!("CN=System,{OTHER_BASE_DN}")])
        .args([
            "(objectClass=trustedDomain)",
            "trustPartner",
            "trustDirection",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("trustPartner: mfa.test") && out.contains("trustDirection: 3"),
        "{out}"
    );

    let o = m.ok(&["directory", "test"]);
    assert!(
        o.stdout
            .contains("domain   other.test (OTHER, trust bidirectional): domain controller"),
        "{}",
        o.stdout
    );
}

#[test]
fn a_stopped_trusted_dc_is_reported_unreachable_and_fails_nothing() {
    let mut e = env().lock().unwrap_or_else(|p| p.into_inner());
    let m = Mfa::new();
    m.apply(&mfa_config(&e.dns.addr.to_string()));

    // The trusted forest's only DC goes down: reported, the test of mfa.test still passes.
    e.trust.other.stop();
    let v = m.ok(&["--json", "directory", "test"]).json();
    let out = m.ok(&["directory", "test"]).stdout;
    e.trust.start_other(&other_fixture());

    assert_eq!(v["ok"], true, "{v:#}");
    let other = domain(&v, "other.test");
    assert_eq!(other["reachable"], false, "{other}");
    assert_eq!(other["direction"], "bidirectional", "{other}");
    let detail = other["detail"].as_str().unwrap();
    assert!(
        detail.contains("no domain controller answers") && detail.contains("127.0.0.2:389"),
        "{other}"
    );
    assert_eq!(domain(&v, "mfa.test")["reachable"], true, "{v:#}");
    assert!(
        out.contains(
            "domain   other.test (OTHER, trust bidirectional, UNREACHABLE): no domain controller answers"
        ),
        "{out}"
    );
}

/// The query account of mfa.test reads other.test through the trust: a Kerberos
/// (windows) bind as alice@MFA.TEST at dc2.other.test takes a cross-realm ticket.
#[test]
fn the_query_bind_of_mfa_test_reads_the_trusted_forest_by_kerberos() {
    let e = env().lock().unwrap_or_else(|p| p.into_inner());
    let m = Mfa::new();
    let people = format!("OU=People,{OTHER_BASE_DN}");
    m.apply(&config(&e.dns.addr.to_string(), "other.test", &people));

    let v = m.ok(&["--json", "directory", "test"]).json();
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["server"], "ldap://127.0.0.2:389", "{v:#}");
    let bind = common::step(&v, "bind");
    assert!(
        bind["detail"]
            .as_str()
            .unwrap()
            .contains("alice@MFA.TEST to ldap/dc2.other.test"),
        "{bind}"
    );
    // Seen from other.test, mfa.test is the trusted forest.
    assert_eq!(domain(&v, "mfa.test")["relation"], "trust", "{v:#}");

    let s = m.sync_full();
    assert_eq!(s["mode"], "full", "{s}");
    for u in ["olga@other.test", "oscar@other.test"] {
        let user = m
            .user(u)
            .unwrap_or_else(|| panic!("{u} not synchronized: {s}"));
        assert_eq!(user["sync_item"], people, "{user}");
    }

    // A simple bind of the same account does not cross the trust: other.test's DC
    // (Samba) refuses alice's DN and password (it does not pass them on to mfa.test).
    let simple = config(&e.dns.addr.to_string(), "other.test", &people).replace(
        "type = \"windows\"\ndn = \"alice@mfa.test\"",
        &format!(
            "type = \"simple\"\ndn = \"CN=Alice Anderson,OU=Sales,OU=People,{SAMBA_BASE_DN}\""
        ),
    );
    assert!(simple.contains("type = \"simple\""), "{simple}");
    m.apply(&simple);
    let v = m.run(&["--json", "directory", "test"]).json();
    assert_eq!(v["ok"], false, "{v:#}");
    let bind = common::step(&v, "bind");
    assert_eq!(bind["ok"], false, "{bind}");
    assert!(
        bind["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("invalid credentials"),
        "{bind}"
    );
}

/// Sync items in both forests: mfa.test's users from its DC, other.test's from
/// other.test's DC through the trust (same query bind); with other.test's DC
/// down, its users are left as they are and mfa.test's are still synchronized.
#[test]
fn items_in_the_trusted_forest_are_read_from_its_dc_and_an_unreachable_one_blocks_nothing() {
    let mut e = env().lock().unwrap_or_else(|p| p.into_inner());
    let m = Mfa::new();
    let sales = format!("OU=Sales,OU=People,{SAMBA_BASE_DN}");
    let people = format!("OU=People,{OTHER_BASE_DN}");
    let mut toml = mfa_config(&e.dns.addr.to_string());
    toml += &format!(
        "[[sync.items]]\nkind = \"container\"\ndn = \"{people}\"\ninclude_nested = true\n"
    );
    m.apply(&toml);

    let s = m.sync_full();
    assert_eq!(s["mode"], "full", "{s}");
    let alice = m
        .user("alice@mfa.test")
        .unwrap_or_else(|| panic!("no alice: {s}"));
    assert_eq!(alice["sync_item"], sales, "{alice}");
    for u in ["olga@other.test", "oscar@other.test"] {
        let user = m
            .user(u)
            .unwrap_or_else(|| panic!("{u} not synchronized: {s}"));
        assert_eq!(user["sync_item"], people, "{user}");
        assert_eq!(user["enabled"], true, "{user}");
    }
    let before = m.users().len();

    // Nothing changed: the next cycle is incremental in both domains.
    let s = incremental(&m);
    assert_eq!(counts(&s), (0, 0, 0, 0, 0, 0), "{s}");

    // other.test's DC down: its users stay as they are, mfa.test is synchronized.
    e.trust.other.stop();
    e.trust.mfa.ldapmodify(&format!(
        "dn: CN=Alice Anderson,{sales}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 425 555 0199\n"
    ));
    let o = m.run(&["--json", "sync", "--full"]);
    e.trust.start_other(&other_fixture());
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let s = o.json();
    let (created, updated, _, disabled, removed, _) = counts(&s);
    assert_eq!((created, updated, disabled, removed), (0, 1, 0, 0), "{s}");
    assert!(
        o.stderr
            .contains(&format!("sync.items[1] ({people}) was not read"))
            && o.stderr.contains("other.test")
            && o.stderr
                .contains("its 2 stored user(s) are left as they are"),
        "{}",
        o.stderr
    );
    assert_eq!(m.users().len(), before);
    for u in ["olga@other.test", "oscar@other.test"] {
        let user = m.user(u).unwrap();
        assert_eq!(user["enabled"], true, "{user}");
    }
}

/// An incremental `sync` (asserted), its JSON output.
fn incremental(m: &Mfa) -> Value {
    let o = m.ok(&["--json", "sync"]);
    let v = o.json();
    assert_eq!(v["mode"], "incremental", "{v}\n{}", o.stderr);
    v
}

/// Delete `dn` and everything below it, if it exists (a test's own subtree,
/// left by an earlier run of the same DC).
fn delete_tree(s: &mfasync_testkit::Samba, dn: &str) {
    let _ = Command::new("ldapdelete")
        .args(["-x", "-r", "-H", &s.url, "-D", &s.admin_dn, "-w"])
        .args([&s.admin_password, dn])
        .output();
}

/// The stored watermark.
fn watermark(m: &Mfa) -> mfasync_store::Watermark {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        store.watermark().await.unwrap().expect("a watermark")
    })
}

/// A user entry for an `ldapadd` into either domain.
fn ad_user(cn: &str, ou: &str, sam: &str, domain: &str, phone: &str) -> String {
    format!(
        "dn: CN={cn},{ou}\nobjectClass: user\nsAMAccountName: {sam}\n\
         userPrincipalName: {sam}@{domain}\ntelephoneNumber: {phone}\nuserAccountControl: 544\n\n"
    )
}

/// Each domain has its own incremental starting point: a full cycle takes
/// other.test's at its DC and commits it with mfa.test's; incremental cycles
/// read each domain's changes from its own DC. A DC that is down keeps its
/// domain's starting point (its changes are read when it is back) and blocks
/// nothing; a full cycle that could not reach it leaves no starting point for
/// it, so the next cycle is full.
#[test]
fn each_domain_is_synchronized_incrementally_from_its_own_starting_point() {
    let mut e = env().lock().unwrap_or_else(|p| p.into_inner());
    let (here, there) = (
        format!("OU=Inc7,{SAMBA_BASE_DN}"),
        format!("OU=Inc7,{OTHER_BASE_DN}"),
    );
    let ou = |dn: &str| format!("dn: {dn}\nobjectClass: organizationalUnit\nou: Inc7\n\n");
    // (Re)create the OUs: an earlier test may have restarted other.test.
    delete_tree(&e.trust.mfa, &here);
    delete_tree(&e.trust.other, &there);
    e.trust
        .mfa
        .ldapadd(&(ou(&here) + &ad_user("Mia Main", &here, "mia7", "mfa.test", "+15550701")));
    e.trust.other.ldapadd(
        &(ou(&there)
            + &ad_user("Ivy Inc", &there, "ivy7", "other.test", "+15550702")
            + &ad_user("Ian Inc", &there, "ian7", "other.test", "+15550703")),
    );
    let toml = config(&e.dns.addr.to_string(), "mfa.test", &here)
        + &format!(
            "[[sync.items]]\nkind = \"container\"\ndn = \"{there}\"\ninclude_nested = true\n"
        );
    let m = Mfa::new();
    m.apply(&toml);
    let reference = Mfa::new();
    reference.apply(&toml);

    let s = m.sync_full();
    assert_eq!(counts(&s).0, 3, "{s}");
    let wm = watermark(&m);
    assert!(["dirsync", "usn"].contains(&wm.kind.as_str()), "{wm:?}");
    assert_eq!(wm.domains.len(), 1, "{wm:?}");
    let first = wm.domains[0].clone();
    assert_eq!(first.domain, "other.test");
    assert_eq!(first.server, "ldap://127.0.0.2:389");
    assert!(
        ["dirsync", "usn"].contains(&first.kind.as_str()),
        "{first:?}"
    );
    assert!(!first.value.is_empty());

    // Nothing changed: incremental in both domains.
    let q = incremental(&m);
    assert_eq!(counts(&q), (0, 0, 0, 0, 0, 0), "{q}");

    // Changes on both sides, read from each domain's DC.
    e.trust.other.ldapadd(&ad_user(
        "Iris Inc",
        &there,
        "iris7",
        "other.test",
        "+15550704",
    ));
    e.trust.other.ldapmodify(&format!(
        "dn: CN=Ivy Inc,{there}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +15550712\n\n\
         dn: CN=Ian Inc,{there}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 546\n"
    ));
    e.trust.mfa.ldapmodify(&format!(
        "dn: CN=Mia Main,{here}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +15550711\n"
    ));
    let inc = incremental(&m);
    let n = inc["entries_read"].as_u64().unwrap_or(u64::MAX);
    assert!(n < 40, "the incremental cycle read {n} entries: {inc}");
    assert_eq!(
        m.user("iris7@other.test").expect("iris created")["sync_item"],
        there
    );
    assert_eq!(
        m.user("ivy7@other.test").unwrap()["primary_phone"],
        "+15550712"
    );
    assert_eq!(m.user("ian7@other.test").unwrap()["enabled"], false);
    assert_eq!(
        m.user("mia7@mfa.test").unwrap()["primary_phone"],
        "+15550711"
    );
    reference.sync_full();
    let (a, b) = (m.users(), reference.users());
    assert_eq!(a, b, "the incremental cycles and a full sync differ");
    let second = watermark(&m).domains;
    assert_eq!(second.len(), 1);
    assert_ne!(
        second[0].value, first.value,
        "other.test's starting point moved on"
    );

    // other.test's DC down: mfa.test goes on incrementally, other.test's users
    // stay as they are and its starting point is kept.
    e.trust.other.pause();
    e.trust.mfa.ldapmodify(&format!(
        "dn: CN=Mia Main,{here}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +15550721\n"
    ));
    let o = m.run(&["--json", "sync"]);
    let down = o.json();
    let kept = watermark(&m).domains;
    let users_down = m.users();
    e.trust.other.resume();
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(down["mode"], "incremental", "{down}\n{}", o.stderr);
    assert_eq!(counts(&down).1, 1, "{down}");
    assert!(
        o.stderr.contains("other.test") && o.stderr.contains("its users are left as they are"),
        "{}",
        o.stderr
    );
    assert_eq!(
        kept, second,
        "other.test's starting point is kept while it is down"
    );
    let ivy = users_down
        .iter()
        .find(|u| u["username"] == "ivy7@other.test");
    assert_eq!(ivy.unwrap()["enabled"], true);

    // Back: the changes made there since its starting point are read.
    e.trust.other.ldapmodify(&format!(
        "dn: CN=Ivy Inc,{there}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +15550722\n"
    ));
    incremental(&m);
    assert_eq!(
        m.user("ivy7@other.test").unwrap()["primary_phone"],
        "+15550722"
    );
    assert_eq!(
        m.user("mia7@mfa.test").unwrap()["primary_phone"],
        "+15550721"
    );

    // A full cycle while it is down takes no starting point there ("none"):
    // the next cycle is full (and reads it), then incremental again.
    e.trust.other.pause();
    let o = m.run(&["--json", "sync", "--full"]);
    let no_mark = watermark(&m).domains;
    e.trust.other.resume();
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(no_mark.len(), 1, "{no_mark:?}");
    assert_eq!(
        no_mark[0].kind,
        mfasync_store::MarkKind::None,
        "no starting point: {no_mark:?}"
    );
    let o = m.ok(&["--json", "sync"]);
    let full = o.json();
    assert_eq!(full["mode"], "full", "{full}");
    assert!(
        o.stderr
            .contains("there is no starting point for the domain other.test"),
        "{}",
        o.stderr
    );
    assert_eq!(watermark(&m).domains.len(), 1);
    assert_ne!(watermark(&m).domains[0].kind, mfasync_store::MarkKind::None);
    incremental(&m);
}

/// A security group of the trusted forest as a sync item: its members are read
/// at other.test's DC, a membership change there is picked up by an
/// incremental cycle from other.test's own starting point, and while that DC
/// is down the cycle is full (the group's members cannot be told) and leaves
/// the group's users as they are.
#[test]
fn a_group_of_the_trusted_forest_is_an_item_and_its_membership_is_followed_incrementally() {
    let mut e = env().lock().unwrap_or_else(|p| p.into_inner());
    let there = format!("OU=Grp7,{OTHER_BASE_DN}");
    let team = format!("CN=Team7,{there}");
    delete_tree(&e.trust.other, &there);
    e.trust.other.ldapadd(
        &(format!("dn: {there}\nobjectClass: organizationalUnit\nou: Grp7\n\n")
            + &ad_user("Gail Grp", &there, "gail7", "other.test", "+15550731")
            + &ad_user("Gus Grp", &there, "gus7", "other.test", "+15550732")
            + &format!(
                "dn: {team}\nobjectClass: group\nsAMAccountName: team7\n\
                 member: CN=Gail Grp,{there}\n\n"
            )),
    );
    let toml = mfa_config(&e.dns.addr.to_string())
        + &format!(
            "[[sync.items]]\nkind = \"security-group\"\ndn = \"{team}\"\ninclude_nested = true\nwhen_removed = \"disable\"\n"
        );
    let m = Mfa::new();
    m.apply(&toml);
    let reference = Mfa::new();
    reference.apply(&toml);

    let s = m.sync_full();
    assert_eq!(s["mode"], "full", "{s}");
    assert_eq!(m.user("gail7@other.test").expect("gail")["sync_item"], team);
    assert!(m.user("gus7@other.test").is_none(), "gus is not a member");
    assert_eq!(watermark(&m).domains.len(), 1);
    reference.sync_full();

    // Gus joins, Gail leaves: one incremental cycle, read from other.test's DC.
    e.trust.other.ldapmodify(&format!(
        "dn: {team}\nchangetype: modify\nadd: member\nmember: CN=Gus Grp,{there}\n-\n\
         delete: member\nmember: CN=Gail Grp,{there}\n"
    ));
    incremental(&m);
    assert_eq!(
        m.user("gus7@other.test").expect("gus joined")["sync_item"],
        team
    );
    assert_eq!(
        m.user("gail7@other.test").unwrap()["enabled"],
        false,
        "gail left"
    );
    // A full cycle agrees: Gail is still a user of other.test, so she left the
    // item (disabled); she did not leave the directory (removed).
    reference.sync_full();
    assert_eq!(m.users(), reference.users());

    // other.test down: a group item there makes the cycle full, its users are
    // left as they are, and no starting point is kept for it ("none").
    e.trust.other.pause();
    let o = m.run(&["--json", "sync"]);
    let users_down = m.users();
    let marks_down = watermark(&m).domains;
    e.trust.other.resume();
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let down = o.json();
    assert_eq!(down["mode"], "full", "{down}");
    assert!(o.stderr.contains("holds a group item"), "{}", o.stderr);
    assert_eq!(counts(&down).3 + counts(&down).4, 0, "{down}");
    assert_eq!(users_down, reference.users());
    assert_eq!(marks_down.len(), 1, "{marks_down:?}");
    assert_eq!(
        marks_down[0].kind,
        mfasync_store::MarkKind::None,
        "{marks_down:?}"
    );
}

/// The objectSid of `dn` at `s`, as text.
fn sid_of(s: &mfasync_testkit::Samba, dn: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(
            "ldapsearch -LLL -o ldif-wrap=no -x -H \"$1\" -D \"$2\" -w \"$3\" -b \"$4\" -s base objectSid \
             | sed -n 's/^objectSid:: //p' | base64 -d",
        )
        .args(["sh", &s.url, &s.admin_dn, &s.admin_password, dn])
        .output()
        .unwrap();
    mfasync_core::sid::sid_text(&o.stdout)
        .unwrap_or_else(|| panic!("no objectSid for {dn}: {:?}", o))
}

/// Members from the trusted forest in a group of mfa.test (foreign security
/// principals, as AD and Samba store them: `CN=<SID>,CN=ForeignSecurityPrincipals`)
/// are followed to their users at other.test's DC — directly, and through a
/// group of other.test with include_nested — in full cycles; incremental
/// cycles follow a change of such a user (read from other.test's starting
/// point), a member added by SID and a member removed. With other.test down,
/// those users are left as they are.
#[test]
fn members_from_the_trusted_forest_in_a_group_are_followed_to_their_users() {
    let mut e = env().lock().unwrap_or_else(|p| p.into_inner());
    let there = format!("OU=Fsp7,{OTHER_BASE_DN}");
    let crew = format!("CN=Crew7,{there}");
    let group = format!("CN=Fsp7,OU=People,{SAMBA_BASE_DN}");
    delete_tree(&e.trust.other, &there);
    delete_tree(&e.trust.mfa, &group);
    e.trust.other.ldapadd(
        &(format!("dn: {there}\nobjectClass: organizationalUnit\nou: Fsp7\n\n")
            + &ad_user("Fay Fsp", &there, "fay7", "other.test", "+15550741")
            + &ad_user("Finn Fsp", &there, "finn7", "other.test", "+15550742")
            + &ad_user("Gwen Fsp", &there, "gwen7", "other.test", "+15550743")
            + &ad_user("Hal Fsp", &there, "hal7", "other.test", "+15550744")
            + &format!(
                "dn: {crew}\nobjectClass: group\nsAMAccountName: crew7\n\
                 member: CN=Finn Fsp,{there}\n\n"
            )),
    );
    let fay = sid_of(&e.trust.other, &format!("CN=Fay Fsp,{there}"));
    let gwen = sid_of(&e.trust.other, &format!("CN=Gwen Fsp,{there}"));
    let crew_sid = sid_of(&e.trust.other, &crew);
    // Added by SID, the DC of mfa.test makes the foreign security principals.
    e.trust.mfa.ldapadd(&format!(
        "dn: {group}\nobjectClass: group\nsAMAccountName: fsp7\n\
         member: <SID={fay}>\nmember: <SID={crew_sid}>\n\n"
    ));
    let toml = mfa_config(&e.dns.addr.to_string())
        + &format!(
            "[[sync.items]]\nkind = \"security-group\"\ndn = \"{group}\"\ninclude_nested = true\nwhen_removed = \"disable\"\n"
        );
    let m = Mfa::new();
    m.apply(&toml);
    let reference = Mfa::new();
    reference.apply(&toml);

    let s = m.sync_full();
    for u in ["fay7@other.test", "finn7@other.test"] {
        let user = m.user(u).unwrap_or_else(|| panic!("{u} not followed: {s}"));
        assert_eq!(user["sync_item"], group, "{user}");
        assert!(
            user["dn"].as_str().unwrap().ends_with(OTHER_BASE_DN),
            "{user}"
        );
    }
    assert!(m.user("gwen7@other.test").is_none());
    let marks = watermark(&m).domains;
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].domain, "other.test");
    assert_ne!(marks[0].kind, mfasync_store::MarkKind::None, "{marks:?}");
    reference.sync_full();

    // Fay's phone changes at other.test; Gwen is added to the group by SID
    // and Fay removed: one incremental cycle.
    e.trust.other.ldapmodify(&format!(
        "dn: CN=Fay Fsp,{there}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +15550751\n"
    ));
    incremental(&m);
    assert_eq!(
        m.user("fay7@other.test").unwrap()["primary_phone"],
        "+15550751"
    );
    reference.sync_full();
    assert_eq!(m.users(), reference.users());
    let fay_fsp = format!("CN={fay},CN=ForeignSecurityPrincipals,{SAMBA_BASE_DN}");
    e.trust.mfa.ldapmodify(&format!(
        "dn: {group}\nchangetype: modify\nadd: member\nmember: <SID={gwen}>\n-\n\
         delete: member\nmember: {fay_fsp}\n"
    ));
    incremental(&m);
    assert_eq!(
        m.user("gwen7@other.test").expect("gwen joined")["sync_item"],
        group
    );
    let f = m.user("fay7@other.test").unwrap();
    assert_eq!(
        f["enabled"], false,
        "fay left the group, still a user of other.test: {f}"
    );
    assert_eq!(m.user("finn7@other.test").unwrap()["enabled"], true);
    // A full cycle agrees.
    reference.sync_full();
    assert_eq!(m.users(), reference.users());

    // Through Crew7 (a group of other.test in the group, by SID): Finn's
    // phone changes while he stays, and Hal joins Crew7 at other.test.
    e.trust.other.ldapmodify(&format!(
        "dn: CN=Finn Fsp,{there}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +15550752\n\n\
         dn: {crew}\nchangetype: modify\nadd: member\nmember: CN=Hal Fsp,{there}\n"
    ));
    incremental(&m);
    let finn = m.user("finn7@other.test").unwrap();
    assert_eq!(finn["enabled"], true, "{finn}");
    assert_eq!(finn["primary_phone"], "+15550752", "{finn}");
    assert_eq!(
        m.user("hal7@other.test").expect("hal joined Crew7")["sync_item"],
        group
    );
    reference.sync_full();
    assert_eq!(m.users(), reference.users());

    // Finn leaves Crew7 at other.test (the nested group of the trusted
    // forest): seen through other.test's starting point.
    e.trust.other.ldapmodify(&format!(
        "dn: {crew}\nchangetype: modify\ndelete: member\nmember: CN=Finn Fsp,{there}\n"
    ));
    let inc = incremental(&m);
    assert_eq!(
        m.user("finn7@other.test").unwrap()["enabled"],
        false,
        "{inc}"
    );
    reference.sync_full();
    assert_eq!(m.users(), reference.users());

    // other.test down: its users in the group are left as they are.
    e.trust.other.pause();
    let o = m.run(&["--json", "sync", "--full"]);
    let users_down = m.users();
    e.trust.other.resume();
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let down = o.json();
    assert_eq!(counts(&down).3 + counts(&down).4, 0, "{down}\n{}", o.stderr);
    assert!(
        o.stderr.contains("members from other.test were not read"),
        "{}",
        o.stderr
    );
    assert_eq!(users_down, reference.users());
}

/// `[[directory.domains]]`: another domain read with an account of its own
/// (simple binds; a simple bind of mfa.test's account does not cross the
/// trust on Samba). Its password comes from a file and is never exported;
/// without it, the domain's items are left as they are.
#[test]
fn another_domain_is_read_with_its_own_query_bind() {
    let e = env().lock().unwrap_or_else(|p| p.into_inner());
    let mut m = Mfa::new();
    let pw_file = m.dir.path().join("other.pw");
    // (password files are read only in a secrets directory)
    m.global_args = vec!["--secrets-dir".into(), m.dir.path().display().to_string()];
    std::fs::write(&pw_file, format!("{}\n", e.trust.other.admin_password)).unwrap();
    let people = format!("OU=People,{OTHER_BASE_DN}");
    let sales = format!("OU=Sales,OU=People,{SAMBA_BASE_DN}");
    let main = format!(
        r#"
[directory]
source = "active-directory"
domain = "mfa.test"
dns_servers = ["{dns}"]
timeout_seconds = 5
include_trusted_domains = true
[directory.query_bind]
type = "simple"
dn = "CN=Alice Anderson,{sales}"
password = "{PW}"
[directory.auth_bind]
type = "simple"
"#,
        dns = e.dns.addr
    );
    let other = format!(
        "[[directory.domains]]\nname = \"Other.Test\"\n[directory.domains.query_bind]\n\
         type = \"simple\"\ndn = \"{}\"\npassword_file = \"{}\"\n",
        e.trust.other.admin_dn,
        pw_file.display()
    );
    let items = format!(
        "[[sync.items]]\nkind = \"container\"\ndn = \"{sales}\"\ninclude_nested = true\n\
         [[sync.items]]\nkind = \"container\"\ndn = \"{people}\"\ninclude_nested = true\n"
    );
    m.apply(&format!("{main}{other}{items}"));
    let exported = m.ok(&["config", "export"]).stdout;
    assert!(
        exported.contains("[[directory.domains]]")
            && exported.contains(&e.trust.other.admin_dn)
            && !exported.contains(&e.trust.other.admin_password),
        "{exported}"
    );

    let s = m.sync_full();
    assert_eq!(m.user("alice@mfa.test").expect("alice")["sync_item"], sales);
    for u in ["olga@other.test", "oscar@other.test"] {
        let user = m.user(u).unwrap_or_else(|| panic!("{u} not read: {s}"));
        assert_eq!(user["sync_item"], people, "{user}");
    }
    assert_ne!(watermark(&m).domains[0].kind, mfasync_store::MarkKind::None);
    incremental(&m);

    // Without it, alice's simple bind is refused at other.test's DC: its
    // users are left as they are.
    m.apply(&format!("{main}{items}"));
    let o = m.run(&["--json", "sync", "--full"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(counts(&o.json()).3 + counts(&o.json()).4, 0, "{}", o.stdout);
    assert!(
        o.stderr
            .contains(&format!("sync.items[1] ({people}) was not read"))
            && o.stderr.to_lowercase().contains("invalid credentials"),
        "{}",
        o.stderr
    );
    assert_eq!(m.user("olga@other.test").unwrap()["enabled"], true);
}

/// A user from a trusted domain (followed through a foreign security
/// principal) whose entry can no longer be mapped (here: the only username
/// attribute removed) is left as it is with a warning, as one of this domain
/// is; it is never disabled for it.
#[test]
fn a_trusted_member_that_cannot_be_mapped_is_left_as_it_is() {
    let e = env().lock().unwrap_or_else(|p| p.into_inner());
    let there = format!("OU=Unm7,{OTHER_BASE_DN}");
    let group = format!("CN=Unm7,OU=People,{SAMBA_BASE_DN}");
    delete_tree(&e.trust.other, &there);
    delete_tree(&e.trust.mfa, &group);
    e.trust.other.ldapadd(
        &(format!("dn: {there}\nobjectClass: organizationalUnit\nou: Unm7\n\n")
            + &ad_user("Uma Unm", &there, "uma7", "other.test", "+15550761")),
    );
    let uma = sid_of(&e.trust.other, &format!("CN=Uma Unm,{there}"));
    e.trust.mfa.ldapadd(&format!(
        "dn: {group}\nobjectClass: group\nsAMAccountName: unm7\nmember: <SID={uma}>\n\n"
    ));
    let toml = mfa_config(&e.dns.addr.to_string())
        + &format!(
            "[[sync.items]]\nkind = \"security-group\"\ndn = \"{group}\"\nwhen_removed = \"disable\"\n\
             [attributes]\nusername = [\"userPrincipalName\"]\n"
        );
    let m = Mfa::new();
    m.apply(&toml);
    m.sync_full();
    assert_eq!(m.user("uma7@other.test").expect("uma")["sync_item"], group);

    e.trust.other.ldapmodify(&format!(
        "dn: CN=Uma Unm,{there}\nchangetype: modify\ndelete: userPrincipalName\n"
    ));
    let o = m.ok(&["--json", "sync", "--full"]);
    let s = o.json();
    assert_eq!(counts(&s).3 + counts(&s).4, 0, "{s}\n{}", o.stderr);
    assert!(
        o.stderr.contains("CN=Uma Unm") && o.stderr.contains("no username"),
        "{}",
        o.stderr
    );
    assert_eq!(m.user("uma7@other.test").unwrap()["enabled"], true);
}
