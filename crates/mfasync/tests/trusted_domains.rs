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

use common::Mfa;
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

    // Not incremental while an item is in another domain: every cycle reads it in full.
    let o = m.ok(&["--json", "sync"]);
    let s = o.json();
    assert_eq!(s["mode"], "full", "{s}");
    assert_eq!(
        common::counts(&s).0 + common::counts(&s).3 + common::counts(&s).4,
        0,
        "{s}"
    );

    // other.test's DC down: its users stay as they are, mfa.test is synchronized.
    e.trust.other.stop();
    e.trust.mfa.ldapmodify(&format!(
        "dn: CN=Alice Anderson,{sales}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 425 555 0199\n"
    ));
    let o = m.run(&["--json", "sync", "--full"]);
    e.trust.start_other(&other_fixture());
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let s = o.json();
    let (created, updated, _, disabled, removed, _) = common::counts(&s);
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
