//! End to end: bind type "windows" (Kerberos) for the query bind (the
//! service's own identity from a keytab, blank username) and for the auth
//! bind (the user's password), against a Samba AD DC that requires strong
//! authentication (plain LDAP: signed and sealed binds only).
//!
//! Runs only through `scripts/test -p mfasync --test kerberos`. The mfasync
//! children inherit KRB5_CONFIG (test realm), KRB5_CLIENT_KTNAME (the service
//! keytab) and KRB5CCNAME (the service's cache), set once by this binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::Mfa;
use mfasync_testkit::{krb5_conf, samba_fixture, Samba, SAMBA_BASE_DN};

const PW: &str = "Secr3t!pass-mfa";

struct Env {
    _samba: Samba,
    _work: PathBuf,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let work = mfasync_testkit::kept_temp_dir("mfasync-krb-e2e-");
        let keytab = work.join("svc-mfa.keytab");
        std::env::set_var("KRB5_CONFIG", krb5_conf());
        std::env::set_var("KRB5_CLIENT_KTNAME", format!("FILE:{}", keytab.display()));
        std::env::set_var(
            "KRB5CCNAME",
            format!("FILE:{}", work.join("service.ccache").display()),
        );
        let mut seed = samba_fixture();
        seed += &format!(
            "dn: CN=svc-mfa,CN=Users,{SAMBA_BASE_DN}\nobjectClass: user\nsAMAccountName: svc-mfa\n\n"
        );
        let samba = Samba::start_strong_auth(&seed);
        samba.set_password("alice", PW);
        samba.set_password("svc-mfa", "Svc!Passw0rd-keytab");
        samba.export_keytab("svc-mfa", &keytab);
        Env {
            _samba: samba,
            _work: work,
        }
    })
}

fn config() -> String {
    env();
    format!(
        r#"
[directory]
source = "ldap"
servers = ["ldap://127.0.0.1"]
base_dn = "{SAMBA_BASE_DN}"
[directory.query_bind]
type = "windows"
dn = ""
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
fn keytab_query_bind_syncs_and_password_auth_binds() {
    let m = Mfa::new();
    m.apply(&config());

    let o = m.ok(&["--json", "directory", "test"]);
    let v = o.json();
    assert_eq!(v["ok"], true, "{v}");
    let bind = common::step(&v, "bind");
    let detail = bind["detail"].as_str().unwrap();
    assert!(
        detail.contains("GSSAPI (Kerberos) as the service's own identity (svc-mfa@MFA.TEST)")
            && detail.contains("sealed"),
        "{detail}"
    );

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
    let (code, reason, err) = auth("alice@mfa.test", &format!("{PW}\n"));
    assert_eq!((code, reason.as_str()), (0, ""), "{err}");
    // By sAMAccountName (the backup username attribute): the password is verified as
    // alice@MFA.TEST, and the MFA user is found by the entry's objectGUID although it is
    // stored under her UPN.
    let (code, reason, err) = auth("alice", PW);
    assert_eq!((code, reason.as_str()), (0, ""), "{err}");
    let (code, reason, err) = auth("alice", "wrong-Passw0rd");
    assert_eq!((code, reason.as_str()), (1, "invalid-credentials"), "{err}");
    let (code, reason, err) = auth("alice@mfa.test", "wrong-Passw0rd");
    assert_eq!((code, reason.as_str()), (1, "invalid-credentials"), "{err}");
    assert!(!err.contains("wrong-Passw0rd"), "{err}");
}
