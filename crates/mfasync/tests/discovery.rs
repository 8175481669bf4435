//! End to end: `source = "active-directory"` (the seed's default, "Use Active
//! Directory") through the binary: the DCs of `mfa.test` found by DNS SRV on a
//! real DNS server (dnsmasq) on loopback, the first DC (priority 0) down, the
//! second a real Samba AD DC requiring strong authentication; Kerberos binds;
//! base DN from the RootDSE.
//!
//! Runs only through `scripts/test -p mfasync --test discovery`. The mfasync
//! children inherit KRB5_CONFIG (test realm), set once by this binary; one test
//! overrides it for its own child (no default realm).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::sync::OnceLock;

use common::{counts, Mfa};
use mfasync_testkit::{krb5_conf, samba_fixture, Dns, Samba, SrvRecord, SAMBA_BASE_DN};

const PW: &str = "Secr3t!pass-mfa";

struct Env {
    _samba: Samba,
    dns: Dns,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        std::env::set_var("KRB5_CONFIG", krb5_conf());
        let srv = |target: &str, priority| SrvRecord {
            name: "_ldap._tcp.dc._msdcs.mfa.test".into(),
            target: target.into(),
            port: 389,
            priority,
            weight: 0,
        };
        let dns = Dns::start(
            &[srv("dc0.mfa.test", 0), srv("dc1.mfa.test", 10)],
            &[
                ("dc0.mfa.test", "127.0.0.2".parse::<IpAddr>().unwrap()),
                ("dc1.mfa.test", "127.0.0.1".parse::<IpAddr>().unwrap()),
            ],
        );
        let samba = Samba::start_strong_auth(&samba_fixture());
        samba.set_password("alice", PW);
        Env { _samba: samba, dns }
    })
}

/// "Use Active Directory" with the query bind as alice (Kerberos, password).
fn config(domain: &str, dns: &str) -> String {
    format!(
        r#"
[directory]
source = "active-directory"
domain = "{domain}"
dns_servers = ["{dns}"]
timeout_seconds = 5
[directory.query_bind]
type = "windows"
dn = "alice@mfa.test"
password = "{PW}"
[directory.auth_bind]
type = "windows"
[[sync.items]]
kind = "container"
dn = "OU=Sales,OU=People,{SAMBA_BASE_DN}"
include_nested = true
"#
    )
}

#[test]
fn directory_test_and_full_sync_through_the_second_dc() {
    let e = env();
    let m = Mfa::new();
    m.apply(&config("mfa.test", &e.dns.addr.to_string()));

    let v = m.ok(&["--json", "directory", "test"]).json();
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["server"], "ldap://127.0.0.1:389", "{v:#}");
    assert_eq!(v["vendor"], "active-directory", "{v:#}");
    let names: Vec<&str> = v["discovery"]["domain_controllers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dc0.mfa.test", "dc1.mfa.test"], "{v:#}");
    let tried: Vec<(&str, bool)> = v["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["server"].as_str().unwrap(), t["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        tried,
        [
            ("ldap://127.0.0.2:389", false),
            ("ldap://127.0.0.1:389", true)
        ],
        "{v:#}"
    );

    // include_trusted_domains (the default): the forest's domains, here only this one.
    let this = &v["domains"]["domains"][0];
    assert_eq!(this["name"], "mfa.test", "{v:#}");
    assert_eq!(this["relation"], "this domain", "{v:#}");

    // The human report names the DCs found and tried too.
    let o = m.ok(&["directory", "test"]);
    assert!(
        o.stdout.contains("found    dc0.mfa.test:389 priority 0")
            && o.stdout
                .contains("tried    ldap://127.0.0.2:389 FAIL at connect")
            && o.stdout.contains(
                "domain   mfa.test (MFA, this domain): connected to ldap://127.0.0.1:389"
            ),
        "{}",
        o.stdout
    );

    let s = m.sync_full();
    assert_eq!(s["mode"], "full", "{s}");
    assert!(counts(&s).0 > 0, "{s}");
    let alice = m.user("alice@mfa.test").expect("alice synchronized");
    assert_eq!(
        alice["sync_item"],
        format!("OU=Sales,OU=People,{SAMBA_BASE_DN}"),
        "{alice}"
    );

    // Password checks find the DCs the same way (auth bind: Kerberos as the user).
    let o = m.run_stdin(
        &["--json", "auth", "alice@mfa.test", "--password-stdin"],
        PW,
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
}

#[test]
fn no_srv_records_names_directory_domain() {
    let e = env();
    let m = Mfa::new();
    m.apply(&config("nodcs.test", &e.dns.addr.to_string()));
    let o = m.run(&["directory", "test"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("directory.domain \"nodcs.test\"")
            && o.stderr
                .contains("no SRV records for _ldap._tcp.dc._msdcs.nodcs.test"),
        "{}",
        o.stderr
    );
    let o = m.run(&["--json", "sync", "--full"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("directory.domain \"nodcs.test\""),
        "{}",
        o.stderr
    );
}

#[test]
fn unreachable_dns_names_directory_domain() {
    env();
    let m = Mfa::new();
    let port = mfasync_testkit::free_port();
    m.apply(&config("mfa.test", &format!("127.0.0.1:{port}")));
    let o = m.run(&["directory", "test"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("directory.domain \"mfa.test\"") && o.stderr.contains("DNS lookup"),
        "{}",
        o.stderr
    );
}

#[test]
fn unknown_domain_names_directory_domain() {
    let e = env();
    let m = Mfa::new();
    m.apply(&config("", &e.dns.addr.to_string()));
    // A Kerberos configuration without default_realm, for this child only.
    let conf = m.dir.path().join("krb5-no-realm.conf");
    std::fs::write(&conf, "[libdefaults]\n\tdns_lookup_kdc = false\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "directory", "test"])
        .env("KRB5_CONFIG", &conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("directory.domain is not set")
            && stderr.contains("default_realm")
            && stderr.contains(&conf.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn invalid_discovery_settings_are_refused_with_exit_2() {
    let m = Mfa::new();
    let p = m.config_file(
        "[directory]\ndomain = \"not a domain\"\nsite = \"a.b\"\ndns_servers = [\"dns.example.com\"]\n",
    );
    let o = m.run(&["config", "apply", p.to_str().unwrap()]);
    assert_eq!(o.code, 2, "{}\n{}", o.stdout, o.stderr);
    for key in [
        "directory.domain",
        "directory.site",
        "directory.dns_servers[0]",
    ] {
        assert!(o.stderr.contains(key), "{key}: {}", o.stderr);
    }
}
