//! Bind type "windows" (SASL GSSAPI / Kerberos) against a real Samba AD DC
//! that requires strong authentication (`ldap server require strong auth =
//! yes`: over plain ldap:// only signed and sealed SASL binds) and its KDC: with a username and password (private ticket cache), and with the
//! service's own identity (a client keytab) when the username is blank.
//!
//! Runs only through `scripts/test` (private network namespace for Samba's
//! standard ports):
//! `scripts/test -p mfasync-ldap --test kerberos`.
//!
//! The Kerberos library reads its configuration from the environment, so this
//! binary (and only it) sets, once and before any Kerberos call:
//! KRB5_CONFIG (the test realm), KRB5_CLIENT_KTNAME (the service keytab) and
//! KRB5CCNAME (the service's cache, in a temp dir).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use mfasync_core::config::{Bind, BindType, Directory, DirectorySource};
use mfasync_ldap::{connect, test, LdapError, Scope};
use mfasync_testkit::{krb5_conf, samba_fixture, Samba, SAMBA_BASE_DN};

const PW: &str = "Secr3t!pass-mfa";
const SVC_PW: &str = "Svc!Passw0rd-keytab";
// By IP address: there is no DNS in the test namespace. The service principal
// (ldap/dc1.mfa.test) comes from the RootDSE's dnsHostName.
const LDAP_URL: &str = "ldap://127.0.0.1";
const LDAPS_URL: &str = "ldaps://127.0.0.1";

struct Env {
    samba: Samba,
    keytab: PathBuf,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let conf = krb5_conf();
        let work = mfasync_testkit::kept_temp_dir("mfasync-krb-test-");
        let keytab = work.join("svc-mfa.keytab");
        // SAFETY (of the process environment): set once, before any Kerberos call, under the
        // OnceLock; the other tests of this binary wait for it.
        std::env::set_var("KRB5_CONFIG", &conf);
        std::env::set_var("KRB5_CLIENT_KTNAME", format!("FILE:{}", keytab.display()));
        std::env::set_var(
            "KRB5CCNAME",
            format!("FILE:{}", work.join("service.ccache").display()),
        );
        let mut seed = samba_fixture();
        seed += &format!(
            "dn: CN=svc-mfa,CN=Users,{SAMBA_BASE_DN}\nobjectClass: user\nsAMAccountName: svc-mfa\n\
             userPrincipalName: svc-mfa@mfa.test\n\n"
        );
        // As Samba and AD are by default: simple binds only over TLS, SASL binds over plain
        // LDAP only signed and sealed.
        let samba = Samba::start_strong_auth(&seed);
        samba.set_password("alice", PW);
        samba.set_password("dave", PW);
        samba.ldapmodify(&format!(
            "dn: CN=Dave Davis,OU=People,{SAMBA_BASE_DN}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"
        ));
        samba.set_password("svc-mfa", SVC_PW);
        samba.export_keytab("svc-mfa", &keytab);
        Env { samba, keytab }
    })
}

fn dir(servers: &[&str]) -> Directory {
    let e = env();
    Directory {
        source: DirectorySource::Ldap,
        servers: servers.iter().map(|s| s.to_string()).collect(),
        base_dn: SAMBA_BASE_DN.into(),
        tls_ca_file: Some(e.samba.ca_cert.display().to_string()),
        timeout_seconds: 10,
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

async fn can_search(mut c: mfasync_ldap::Client) {
    let found = c
        .search_all(
            SAMBA_BASE_DN,
            Scope::Subtree,
            "(sAMAccountName=alice)",
            &["sAMAccountName".to_string(), "mail".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    c.unbind().await;
}

#[tokio::test]
async fn password_bind_sealed_can_search() {
    let d = dir(&[LDAP_URL]);
    for user in ["alice@mfa.test", "alice", "MFA\\alice", "alice@MFA.TEST"] {
        let c = connect(&d, &windows(user), Some(PW))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        // A paged search of the whole domain travels sealed after the bind.
        can_search(c).await;
    }
}

#[tokio::test]
async fn over_ldaps_samba_strong_auth_wants_sealing_too() {
    // Over TLS the bind uses no SASL security layer (what Active Directory requires: it
    // refuses sign/seal inside TLS). Samba with `require strong auth = yes` refuses that
    // (it accepts it with "no" or "allow_sasl_over_tls": tests/samba.rs
    // windows_bind_over_ldaps); the error says so clearly.
    let e = connect(&dir(&[LDAPS_URL]), &windows("alice@mfa.test"), Some(PW))
        .await
        .err()
        .unwrap();
    let s = e.to_string();
    assert!(
        s.contains("Sign or Seal are required") && s.contains("result code 8"),
        "{s}"
    );
}

#[tokio::test]
async fn wrong_password_is_invalid_credentials() {
    let d = dir(&[LDAP_URL]);
    let e = connect(&d, &windows("alice@mfa.test"), Some("wrong-Passw0rd!"))
        .await
        .err()
        .unwrap();
    assert!(e.is_invalid_credentials(), "{e}");
    assert_eq!(
        e.auth_reason().map(|r| r.as_str()),
        Some("invalid-credentials")
    );
    let text = format!("{e} {e:?}");
    assert!(!text.contains("wrong-Passw0rd!"), "{text}");
    // unknown user
    let e = connect(&d, &windows("nobody@mfa.test"), Some(PW))
        .await
        .err()
        .unwrap();
    assert!(e.is_invalid_credentials(), "{e}");
    // a disabled account
    let e = connect(&d, &windows("dave@mfa.test"), Some(PW))
        .await
        .err()
        .unwrap();
    assert!(e.is_invalid_credentials(), "{e}");
    assert_eq!(
        e.auth_reason().map(|r| r.as_str()),
        Some("account-disabled")
    );
}

#[tokio::test]
async fn keytab_bind_with_blank_username() {
    let e = env();
    assert!(e.keytab.exists());
    let c = connect(&dir(&[LDAP_URL]), &windows(""), None)
        .await
        .unwrap();
    can_search(c).await;
    let report = test(&dir(&[LDAP_URL]), &windows(""), None).await;
    assert!(report.ok, "{report:?}");
    let bind = report.steps.iter().find(|s| s.step == "bind").unwrap();
    assert!(
        bind.detail
            .contains("GSSAPI (Kerberos) as the service's own identity (svc-mfa@MFA.TEST)"),
        "{bind:?}"
    );
}

#[tokio::test]
async fn directory_test_names_the_mechanism() {
    let report = test(&dir(&[LDAP_URL]), &windows("alice@mfa.test"), Some(PW)).await;
    assert!(report.ok, "{report:?}");
    let bind = report.steps.iter().find(|s| s.step == "bind").unwrap();
    assert!(bind.ok, "{bind:?}");
    assert!(
        bind.detail.contains("GSSAPI (Kerberos) as alice@MFA.TEST"),
        "{bind:?}"
    );
    assert!(bind.detail.contains("sealed"), "{bind:?}");
    assert!(bind.detail.contains("ldap/dc1.mfa.test"), "{bind:?}");

    let report = test(
        &dir(&[LDAP_URL]),
        &windows("alice@mfa.test"),
        Some("nope-Passw0rd"),
    )
    .await;
    assert!(!report.ok, "{report:?}");
    let bind = report.steps.iter().find(|s| s.step == "bind").unwrap();
    assert!(
        !bind.ok && bind.detail.contains("invalid credentials"),
        "{bind:?}"
    );
}

#[tokio::test]
async fn auth_bind_checks_a_password_with_failover() {
    // The auth bind: a fresh connection per check, first server down.
    let d = dir(&["ldap://127.0.0.1:1", LDAP_URL]);
    let c = connect(&d, &windows("alice@MFA.TEST"), Some(PW))
        .await
        .unwrap();
    c.unbind().await;
    let e = connect(&d, &windows("alice@MFA.TEST"), Some("bad-Passw0rd"))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, LdapError::InvalidCredentials { .. }), "{e}");
}

#[tokio::test]
async fn wrong_service_host_is_reported() {
    // `localhost` has no ldap/localhost service principal: a clear bind error, not a panic.
    let e = connect(
        &dir(&["ldap://localhost"]),
        &windows("alice@mfa.test"),
        Some(PW),
    )
    .await
    .err()
    .unwrap();
    let s = e.to_string();
    assert!(s.contains("ldap/localhost"), "{s}");
    // NTLM was tried instead (this DC refuses it without signing) and both reasons are told.
    assert!(s.contains("NTLM instead"), "{s}");
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test]
async fn the_dc_requires_strong_auth() {
    // Proof that the sealed binds above are needed: a plain simple bind is refused.
    let e = env();
    let simple = Bind {
        kind: BindType::Simple,
        dn: e.samba.admin_dn.clone(),
        ..Bind::default()
    };
    let err = connect(&dir(&[LDAP_URL]), &simple, Some(&e.samba.admin_password))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("result code 8"), "{err}");
}
