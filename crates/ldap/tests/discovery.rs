//! `source = "active-directory"`: domain controllers found by DNS SRV (a real
//! DNS server, dnsmasq, on loopback) in front of a real Samba AD DC that
//! requires strong authentication (as AD does), bind type windows (Kerberos).
//!
//! The DNS server publishes two DCs for `mfa.test`: `dc0.mfa.test` (priority
//! 0, address 127.0.0.2 where nothing listens: the first DC is down) and
//! `dc1.mfa.test` (priority 10, 127.0.0.1: the Samba DC); and one DC for the
//! site `Branch` (dc1). Nothing is resolvable through the host's resolver:
//! `directory.dns_servers` points at the test DNS server.
//!
//! Runs only through `scripts/test -p mfasync-ldap --test discovery` (Samba
//! needs the private network namespace). This binary sets KRB5_CONFIG (the
//! test realm, default_realm MFA.TEST) once, before any Kerberos call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::OnceLock;

use mfasync_core::config::{Bind, BindType, Directory, DirectorySource};
use mfasync_ldap::{connect, test, LdapError, Scope};
use mfasync_testkit::{krb5_conf, samba_fixture, Dns, Samba, SrvRecord, SAMBA_BASE_DN};

const PW: &str = "Secr3t!pass-mfa";
const DCS: &str = "_ldap._tcp.dc._msdcs.mfa.test";

struct Env {
    _samba: Samba,
    dns: Dns,
}

fn srv(name: &str, target: &str, priority: u16) -> SrvRecord {
    SrvRecord {
        name: name.into(),
        target: target.into(),
        port: 389,
        priority,
        weight: 100,
    }
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        // SAFETY (of the process environment): set once, before any Kerberos call, under the
        // OnceLock; the other tests of this binary wait for it.
        std::env::set_var("KRB5_CONFIG", krb5_conf());
        let dns = Dns::start(
            &[
                srv(DCS, "dc1.mfa.test", 10),
                srv(DCS, "dc0.mfa.test", 0),
                srv(
                    "_ldap._tcp.Branch._sites.dc._msdcs.mfa.test",
                    "dc1.mfa.test",
                    0,
                ),
                // A trusted domain whose DC answers (far.test); other.test has no records.
                srv("_ldap._tcp.dc._msdcs.far.test", "dc1.mfa.test", 0),
            ],
            &[
                ("dc0.mfa.test", "127.0.0.2".parse::<IpAddr>().unwrap()),
                ("dc1.mfa.test", "127.0.0.1".parse::<IpAddr>().unwrap()),
            ],
        );
        let samba = Samba::start_strong_auth(&samba_fixture());
        samba.set_password("alice", PW);
        // Two trusted domains (trustedDomain objects, as a trust creates them).
        for (name, flat, direction, sub) in
            [("other.test", "OTHER", 3, 7), ("far.test", "FAR", 2, 8)]
        {
            samba.add_local(&format!(
                "dn: CN={name},CN=System,{SAMBA_BASE_DN}\nobjectClass: trustedDomain\n\
                 trustPartner: {name}\nflatName: {flat}\ntrustDirection: {direction}\n\
                 trustType: 2\ntrustAttributes: 8\nsecurityIdentifier: S-1-5-21-1-2-{sub}\n"
            ));
        }
        Env { _samba: samba, dns }
    })
}

/// "Use Active Directory": no servers, no base DN.
fn ad(domain: &str) -> Directory {
    let e = env();
    Directory {
        source: DirectorySource::ActiveDirectory,
        domain: domain.into(),
        dns_servers: vec![e.dns.addr.to_string()],
        timeout_seconds: 5,
        ..Directory::default()
    }
}

fn windows(user: &str) -> Bind {
    Bind {
        kind: BindType::Windows,
        dn: user.into(),
        ..Bind::default()
    }
}

#[tokio::test]
async fn test_reports_the_dcs_found_and_tried_and_uses_the_second() {
    let d = ad("mfa.test");
    let r = test(&d, &windows("alice@mfa.test"), Some(PW)).await;
    let v = serde_json::to_value(&r).unwrap();
    assert!(r.ok, "{v:#}");
    assert_eq!(r.server, "ldap://127.0.0.1:389", "{v:#}");

    let disc = &v["discovery"];
    assert_eq!(disc["domain"], "mfa.test", "{v:#}");
    assert_eq!(disc["domain_from"], "directory.domain", "{v:#}");
    // The site comes from an LDAP ping to the DC that answers (Samba names
    // its own site for every client); this DNS has no DCs for it.
    assert_eq!(disc["site"], "Default-First-Site-Name", "{v:#}");
    assert_eq!(
        disc["site_from"], "LDAP ping to ldap://127.0.0.1:389",
        "{v:#}"
    );
    assert_eq!(
        disc["queries"],
        serde_json::json!([
            DCS,
            format!("_ldap._tcp.Default-First-Site-Name._sites.dc._msdcs.mfa.test")
        ]),
        "{v:#}"
    );
    let dcs: Vec<(&str, u64, &str)> = disc["domain_controllers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["priority"].as_u64().unwrap(),
                d["servers"][0].as_str().unwrap(),
            )
        })
        .collect();
    // Priority order (the DNS answer lists dc1 first).
    assert_eq!(
        dcs,
        [
            ("dc0.mfa.test", 0, "ldap://127.0.0.2:389"),
            ("dc1.mfa.test", 10, "ldap://127.0.0.1:389")
        ],
        "{v:#}"
    );

    // Both were tried, in order: the first is down.
    let tried = v["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 2, "{v:#}");
    assert_eq!(tried[0]["server"], "ldap://127.0.0.2:389", "{v:#}");
    assert_eq!(tried[0]["ok"], false, "{v:#}");
    assert_eq!(tried[0]["step"], "connect", "{v:#}");
    assert_eq!(tried[1]["server"], "ldap://127.0.0.1:389", "{v:#}");
    assert_eq!(tried[1]["ok"], true, "{v:#}");

    // Kerberos to the DC's DNS name from the SRV record; the base DN from the RootDSE.
    let step = |name: &str| {
        r.steps
            .iter()
            .find(|s| s.step == name)
            .unwrap_or_else(|| panic!("no {name} step: {v:#}"))
            .detail
            .clone()
    };
    let bind = step("bind");
    assert!(
        bind.contains("GSSAPI (Kerberos)")
            && bind.contains("ldap/dc1.mfa.test (the DC's name in DNS)")
            && bind.contains("sealed"),
        "{bind}"
    );
    let rootdse = step("rootdse");
    assert!(
        rootdse.contains(&format!("base DN {SAMBA_BASE_DN:?} (from the RootDSE)")),
        "{rootdse}"
    );
}

#[tokio::test]
async fn connect_fails_over_and_searches_under_the_rootdse_base_dn() {
    let mut c = connect(&ad("mfa.test"), &windows("alice@mfa.test"), Some(PW))
        .await
        .unwrap();
    assert_eq!(c.server(), "ldap://127.0.0.1:389");
    assert_eq!(c.base_dn(), SAMBA_BASE_DN);
    let base = c.base_dn().to_string();
    let found = c
        .search_all(
            &base,
            Scope::Subtree,
            "(sAMAccountName=alice)",
            &["sAMAccountName".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    c.unbind().await;
}

#[tokio::test]
async fn site_dcs_come_first() {
    let d = Directory {
        site: "Branch".into(),
        ..ad("mfa.test")
    };
    let r = test(&d, &windows("alice@mfa.test"), Some(PW)).await;
    let v = serde_json::to_value(&r).unwrap();
    assert!(r.ok, "{v:#}");
    assert_eq!(
        v["discovery"]["queries"],
        serde_json::json!([DCS, "_ldap._tcp.Branch._sites.dc._msdcs.mfa.test"]),
        "{v:#}"
    );
    assert_eq!(v["discovery"]["site_from"], "directory.site", "{v:#}");
    let dcs = v["discovery"]["domain_controllers"].as_array().unwrap();
    let order: Vec<(&str, bool)> = dcs
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["in_site"].as_bool().unwrap()))
        .collect();
    // The site's DC first; the domain's other DC is a backup (dc1 is not listed twice).
    assert_eq!(
        order,
        [("dc1.mfa.test", true), ("dc0.mfa.test", false)],
        "{v:#}"
    );
    let tried = v["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 1, "{v:#}");
    assert_eq!(tried[0]["server"], "ldap://127.0.0.1:389", "{v:#}");
}

#[tokio::test]
async fn domain_from_the_kerberos_default_realm() {
    let r = test(&ad(""), &windows("alice@mfa.test"), Some(PW)).await;
    let v = serde_json::to_value(&r).unwrap();
    assert!(r.ok, "{v:#}");
    assert_eq!(v["discovery"]["domain"], "mfa.test", "{v:#}");
    let from = v["discovery"]["domain_from"].as_str().unwrap();
    assert!(
        from.contains("default_realm") && from.contains(&krb5_conf().display().to_string()),
        "{from}"
    );
}

#[tokio::test]
async fn a_domain_without_srv_records_is_a_clear_error() {
    let d = ad("nodcs.test");
    let e = connect(&d, &windows("alice@mfa.test"), Some(PW))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, LdapError::Discovery(_)), "{e:?}");
    let s = e.to_string();
    assert!(
        s.contains("directory.domain \"nodcs.test\"")
            && s.contains("no SRV records for _ldap._tcp.dc._msdcs.nodcs.test"),
        "{s}"
    );

    let r = test(&d, &windows("alice@mfa.test"), Some(PW)).await;
    assert!(!r.ok);
    assert_eq!(r.steps.len(), 1, "{r:?}");
    assert_eq!(r.steps[0].step, "connect");
    assert!(
        r.steps[0]
            .detail
            .contains("directory.domain \"nodcs.test\""),
        "{r:?}"
    );
}

#[tokio::test]
async fn an_unreachable_dns_server_is_a_clear_error() {
    // A UDP/TCP port on loopback where nothing answers.
    let port = mfasync_testkit::free_port();
    let d = Directory {
        dns_servers: vec![format!("127.0.0.1:{port}")],
        timeout_seconds: 1,
        ..ad("mfa.test")
    };
    let e = connect(&d, &windows("alice@mfa.test"), Some(PW))
        .await
        .err()
        .unwrap();
    assert!(e.is_unavailable(), "{e:?}");
    let s = e.to_string();
    assert!(
        s.contains("directory.domain \"mfa.test\"")
            && s.contains(&format!(
                "DNS lookup of {DCS} via DNS server 127.0.0.1:{port} failed"
            )),
        "{s}"
    );
}

#[tokio::test]
async fn forest_and_trusted_domains_are_reported_and_an_unreachable_one_does_not_fail_the_test() {
    let r = test(&ad("mfa.test"), &windows("alice@mfa.test"), Some(PW)).await;
    let v = serde_json::to_value(&r).unwrap();
    assert!(r.ok, "{v:#}");
    let domains = &v["domains"];
    assert!(domains.get("error").is_none(), "{v:#}");
    let find = |name: &str| {
        domains["domains"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {v:#}"))
    };
    // This domain, from its crossRef in CN=Partitions.
    let this = find("mfa.test");
    assert_eq!(this["netbios"], "MFA", "{this}");
    assert_eq!(this["base_dn"], SAMBA_BASE_DN, "{this}");
    assert_eq!(this["relation"], "this domain", "{this}");
    assert_eq!(this["reachable"], true, "{this}");
    // The trusted domains, from trustedDomain objects in CN=System.
    let other = find("other.test");
    assert_eq!(other["netbios"], "OTHER", "{other}");
    assert_eq!(other["relation"], "trust", "{other}");
    assert_eq!(other["direction"], "bidirectional", "{other}");
    assert_eq!(other["base_dn"], "DC=other,DC=test", "{other}");
    assert_eq!(other["reachable"], false, "{other}");
    assert!(
        other["detail"]
            .as_str()
            .unwrap()
            .contains("no SRV records for _ldap._tcp.dc._msdcs.other.test"),
        "{other}"
    );
    let far = find("far.test");
    assert_eq!(far["direction"], "outbound", "{far}");
    assert_eq!(far["reachable"], true, "{far}");
    assert!(
        far["detail"]
            .as_str()
            .unwrap()
            .contains("ldap://127.0.0.1:389 answers"),
        "{far}"
    );
    assert_eq!(domains["domains"].as_array().unwrap().len(), 3, "{v:#}");

    // Unchecked: nothing is read.
    let d = Directory {
        include_trusted_domains: false,
        ..ad("mfa.test")
    };
    let r = test(&d, &windows("alice@mfa.test"), Some(PW)).await;
    assert!(r.ok);
    assert!(r.domains.is_none(), "{r:?}");
}

#[tokio::test]
async fn dcs_found_are_reused_for_the_records_ttl() {
    env();
    let mut dns = Dns::start_with_ttl(
        &[srv("_ldap._tcp.dc._msdcs.cached.test", "dc1.mfa.test", 0)],
        &[("dc1.mfa.test", "127.0.0.1".parse::<IpAddr>().unwrap())],
        3600,
    );
    let d = Directory {
        dns_servers: vec![dns.addr.to_string()],
        ..ad("cached.test")
    };
    let c = connect(&d, &windows("alice@mfa.test"), Some(PW))
        .await
        .unwrap();
    c.unbind().await;
    // DNS gone: the answer of a moment ago is still valid for an hour.
    dns.stop();
    let c = connect(&d, &windows("alice@mfa.test"), Some(PW))
        .await
        .unwrap_or_else(|e| panic!("not reused: {e}"));
    assert_eq!(c.server(), "ldap://127.0.0.1:389");
    c.unbind().await;
}

#[tokio::test]
async fn the_dc_that_answered_is_tried_first_while_cached() {
    env();
    let dns = Dns::start_with_ttl(
        &[
            srv("_ldap._tcp.dc._msdcs.pref.test", "dc0.mfa.test", 0),
            srv("_ldap._tcp.dc._msdcs.pref.test", "dc1.mfa.test", 10),
        ],
        &[
            ("dc0.mfa.test", "127.0.0.2".parse::<IpAddr>().unwrap()),
            ("dc1.mfa.test", "127.0.0.1".parse::<IpAddr>().unwrap()),
        ],
        3600,
    );
    let d = Directory {
        dns_servers: vec![dns.addr.to_string()],
        ..ad("pref.test")
    };
    let tried = |r: &mfasync_ldap::TestReport| -> Vec<(String, bool)> {
        r.tried.iter().map(|t| (t.server.clone(), t.ok)).collect()
    };
    // First: the priority-0 DC is down, the backup answers.
    let c = connect(&d, &windows("alice@mfa.test"), Some(PW))
        .await
        .unwrap();
    assert_eq!(c.server(), "ldap://127.0.0.1:389");
    c.unbind().await;
    // Then the DC that answered comes first; the down one is only a backup.
    let r = test(&d, &windows("alice@mfa.test"), Some(PW)).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        tried(&r),
        [("ldap://127.0.0.1:389".to_string(), true)],
        "{r:?}"
    );
}

#[tokio::test]
async fn the_site_learned_by_ldap_ping_puts_its_dcs_first() {
    env();
    let site = "_ldap._tcp.Default-First-Site-Name._sites.dc._msdcs.mfa.test";
    let dns = Dns::start(
        &[
            srv(DCS, "dc0.mfa.test", 0),
            srv(DCS, "dc1.mfa.test", 10),
            srv(site, "dc1.mfa.test", 0),
        ],
        &[
            ("dc0.mfa.test", "127.0.0.2".parse::<IpAddr>().unwrap()),
            ("dc1.mfa.test", "127.0.0.1".parse::<IpAddr>().unwrap()),
        ],
    );
    let d = Directory {
        dns_servers: vec![dns.addr.to_string()],
        ..ad("mfa.test")
    };
    let r = test(&d, &windows("alice@mfa.test"), Some(PW)).await;
    let v = serde_json::to_value(&r).unwrap();
    assert!(r.ok, "{v:#}");
    let disc = &v["discovery"];
    assert_eq!(disc["site"], "Default-First-Site-Name", "{v:#}");
    assert_eq!(disc["queries"], serde_json::json!([DCS, site]), "{v:#}");
    let order: Vec<(&str, bool)> = disc["domain_controllers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["in_site"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        order,
        [("dc1.mfa.test", true), ("dc0.mfa.test", false)],
        "{v:#}"
    );
    // The site's DC is tried first: the one that is down is not waited for.
    let tried: Vec<&str> = v["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["server"].as_str().unwrap())
        .collect();
    assert_eq!(tried, ["ldap://127.0.0.1:389"], "{v:#}");
}
