//! End to end: bind type "windows" falls back to NTLM (SASL GSS-SPNEGO with
//! NTLMSSP) where Kerberos is not possible — here because no KDC answers for
//! the realm (this binary's krb5.conf points the realm at a closed port) —
//! against a real Samba AD DC. NTLM cannot sign or seal here, so the DC must
//! accept SASL binds without a security layer: over TLS Active Directory
//! does; Samba before 4.20 only with `ldap server require strong auth = no`
//! or `allow_sasl_over_tls`, which the harness's default DC has.
//!
//! Runs only through `scripts/test -p mfasync --test ntlm` (Samba needs the
//! private network namespace). The mfasync children inherit KRB5_CONFIG.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::Mfa;
use mfasync_testkit::{free_port, samba_fixture, Samba, SAMBA_BASE_DN};

const PW: &str = "Secr3t!pass-ntlm";

struct Env {
    _samba: Samba,
    _work: PathBuf,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let work = mfasync_testkit::kept_temp_dir("mfasync-ntlm-e2e-");
        // The realm exists, but its KDC is a port nobody listens on: kinit
        // fails with "Cannot contact any KDC", i.e. Kerberos is not possible.
        let closed = free_port();
        let conf = work.join("krb5.conf");
        std::fs::write(
            &conf,
            format!(
                "[libdefaults]\n\tdefault_realm = MFA.TEST\n\tdns_lookup_realm = false\n\
                 \tdns_lookup_kdc = false\n\trdns = false\n\tudp_preference_limit = 1\n\
                 [realms]\n\tMFA.TEST = {{\n\t\tkdc = 127.0.0.1:{closed}\n\t}}\n"
            ),
        )
        .unwrap();
        std::env::set_var("KRB5_CONFIG", &conf);
        std::env::set_var(
            "KRB5CCNAME",
            format!("FILE:{}", work.join("none.ccache").display()),
        );
        let samba = Samba::start(&samba_fixture());
        samba.set_password("alice", PW);
        samba.set_password("bob", PW);
        Env {
            _samba: samba,
            _work: work,
        }
    })
}

fn config(server: &str, query_user: &str) -> String {
    env();
    format!(
        r#"
[directory]
source = "ldap"
servers = ["{server}"]
base_dn = "{SAMBA_BASE_DN}"
tls_verify = false
[directory.query_bind]
type = "windows"
dn = "{query_user}"
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

fn bind_step(v: &serde_json::Value) -> String {
    common::step(v, "bind")["detail"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn ntlm_over_tls_when_no_kdc_answers_for_query_and_auth_binds() {
    let m = Mfa::new();
    m.apply(&config("ldaps://127.0.0.1", "MFA\\\\alice"));

    let o = m.ok(&["--json", "directory", "test"]);
    let v = o.json();
    assert_eq!(v["ok"], true, "{v}");
    let detail = bind_step(&v);
    assert!(
        detail.contains("NTLM (GSS-SPNEGO) as MFA\\alice over TLS")
            && detail.contains("Kerberos not possible")
            && detail.contains("KDC"),
        "{detail}"
    );
    assert!(!o.stdout.contains(PW) && !o.stderr.contains(PW));

    m.sync_full();
    assert!(m.user("alice@mfa.test").is_some(), "{:?}", m.users());

    let auth = |user: &str, pw: &str| {
        let o = m.run_stdin(&["--json", "auth", user, "--password-stdin"], pw);
        let v = o.json();
        (
            o.code,
            v["reason"].as_str().unwrap_or("").to_string(),
            o.stderr,
        )
    };
    let (code, reason, err) = auth("alice@mfa.test", PW);
    assert_eq!((code, reason.as_str()), (0, ""), "{err}");
    let (code, reason, err) = auth("alice", PW);
    assert_eq!((code, reason.as_str()), (0, ""), "{err}");
    let (code, reason, err) = auth("alice@mfa.test", "wrong-Passw0rd");
    assert_eq!((code, reason.as_str()), (1, "invalid-credentials"), "{err}");
    assert!(!err.contains("wrong-Passw0rd"), "{err}");
}

#[test]
fn ntlm_query_bind_with_a_wrong_password_is_invalid_credentials() {
    let m = Mfa::new();
    m.apply(&config("ldaps://127.0.0.1", "alice@mfa.test").replace(PW, "not-her-Passw0rd"));
    let o = m.run(&["--json", "directory", "test"]);
    let v = o.json();
    assert_eq!(v["ok"], false, "{v}");
    let failed = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ok"] == false)
        .cloned()
        .unwrap();
    assert_eq!(failed["step"], "bind", "{v}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(detail.contains("invalid credentials"), "{detail}");
    assert!(!o.stdout.contains("not-her-Passw0rd"));
}

#[test]
fn ntlm_on_plain_ldap_says_it_is_neither_signed_nor_sealed() {
    let m = Mfa::new();
    m.apply(&config("ldap://127.0.0.1", "MFA\\\\alice"));
    let o = m.ok(&["--json", "directory", "test"]);
    let v = o.json();
    assert_eq!(v["ok"], true, "{v}");
    let detail = bind_step(&v);
    assert!(
        detail
            .contains("NTLM (GSS-SPNEGO) as MFA\\alice (plain LDAP: NTLM neither signs nor seals)"),
        "{detail}"
    );
}
