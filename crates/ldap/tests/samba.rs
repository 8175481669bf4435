//! mfasync-ldap against a real Samba AD DC (Active Directory protocol): vendor
//! and capability detection, LDAPS with the DC's CA, ASQ, range retrieval,
//! paging and batches, AD bind failure sub-codes.
//!
//! Samba binds the standard ports of 127.0.0.1, so this binary only runs in the
//! private network namespace of `scripts/test` (e.g.
//! `scripts/test -p mfasync-ldap --test samba`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::OnceLock;

use mfasync_core::config::{Bind, BindType, Directory, DirectorySource};
use mfasync_ldap::{connect, test, Client, Scope, Vendor};
use mfasync_testkit::{krb5_conf, samba_bulk, samba_fixture, Samba, SAMBA_BASE_DN};

const BULK: usize = 1700;
const PW: &str = "Secr3t!pass-mfa";

fn samba() -> &'static Samba {
    static S: OnceLock<Samba> = OnceLock::new();
    S.get_or_init(|| {
        // For the Kerberos bind over LDAPS (windows_bind_over_ldaps): the test realm's KDC.
        // Set once, before any Kerberos call; the other tests wait for this OnceLock.
        std::env::set_var("KRB5_CONFIG", krb5_conf());
        let mut seed = samba_fixture();
        seed += &samba_bulk(BULK, "Bulk");
        let s = Samba::start(&seed);
        s.set_password("alice", PW);
        s.set_password("dave", PW);
        // setting the password enables the account: disable dave again
        s.ldapmodify(&format!(
            "dn: CN=Dave Davis,OU=People,{SAMBA_BASE_DN}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"
        ));
        s
    })
}

fn dir(servers: &[&str]) -> Directory {
    Directory {
        source: DirectorySource::Ldap,
        servers: servers.iter().map(|s| s.to_string()).collect(),
        timeout_seconds: 10,
        ..Directory::default()
    }
}

fn admin() -> Bind {
    Bind {
        kind: BindType::Simple,
        dn: samba().admin_dn.clone(),
        ..Bind::default()
    }
}

async fn client() -> Client {
    let s = samba();
    connect(&dir(&[&s.url]), &admin(), Some(&s.admin_password))
        .await
        .unwrap()
}

fn attrs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn groups(cn: &str) -> String {
    format!("CN={cn},OU=Groups,{SAMBA_BASE_DN}")
}

#[tokio::test]
async fn detects_active_directory() {
    let c = client().await;
    let caps = c.capabilities();
    assert_eq!(caps.vendor, Vendor::ActiveDirectory, "{caps:?}");
    assert!(
        caps.paged_results && caps.dirsync && caps.attribute_scoped_query && caps.usn,
        "{caps:?}"
    );
    assert!(!caps.syncrepl, "{caps:?}");
    assert!(caps.highest_committed_usn.unwrap_or(0) > 0, "{caps:?}");
    assert_eq!(caps.default_naming_context.as_deref(), Some(SAMBA_BASE_DN));
    assert_eq!(c.base_dn(), SAMBA_BASE_DN);
    assert!(
        caps.dns_host_name
            .as_deref()
            .unwrap_or("")
            .to_lowercase()
            .starts_with("dc1"),
        "{caps:?}"
    );

    let r = test(
        &dir(&[&samba().url]),
        &admin(),
        Some(&samba().admin_password),
    )
    .await;
    assert!(r.ok, "{r:?}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["vendor"], "active-directory");
    assert_eq!(json["supports"]["dirsync"], true);
    assert_eq!(json["supports"]["attribute_scoped_query"], true);
    assert_eq!(json["supports"]["usn"], true);
    assert_eq!(json["supports"]["syncrepl"], false);
}

#[tokio::test]
async fn ldaps_with_the_dc_ca() {
    let s = samba();
    let mut d = dir(&[&s.ldaps_url]);
    d.tls_ca_file = Some(s.ca_cert.display().to_string());
    let mut ssl = admin();
    ssl.kind = BindType::Ssl;
    let c = connect(&d, &ssl, Some(&s.admin_password)).await.unwrap();
    assert_eq!(c.server(), s.ldaps_url);
    // StartTLS on 389 as well
    let mut d = dir(&[&s.url]);
    d.tls_ca_file = Some(s.ca_cert.display().to_string());
    d.starttls = true;
    let r = test(&d, &ssl, Some(&s.admin_password)).await;
    assert!(r.ok, "{r:?}");
}

#[tokio::test]
async fn asq_returns_the_members_matching_the_filter() {
    let mut c = client().await;
    let mut names = Vec::new();
    let n = c
        .asq_each(
            &groups("mfa-users"),
            "member",
            "(&(objectCategory=person)(objectClass=user))",
            &attrs(&["sAMAccountName"]),
            &mut |e| names.push(e.first_str("sAMAccountName").unwrap_or_default()),
        )
        .await
        .unwrap();
    names.sort();
    assert_eq!(
        (n, names),
        (3, vec!["alice".to_string(), "carol".into(), "dave".into()])
    );
    // enabled members only
    let mut names = Vec::new();
    c.asq_each(
        &groups("mfa-users"),
        "member",
        "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
        &attrs(&["sAMAccountName"]),
        &mut |e| names.push(e.first_str("sAMAccountName").unwrap_or_default()),
    )
    .await
    .unwrap();
    names.sort();
    assert_eq!(names, vec!["alice".to_string(), "carol".into()]);
}

#[tokio::test]
async fn asq_over_a_big_group_is_paged() {
    let s = samba();
    let mut d = dir(&[&s.url]);
    d.query_size_limit = 200;
    let mut c = connect(&d, &admin(), Some(&s.admin_password))
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let n = c
        .asq_each(
            &groups("big-Bulk"),
            "member",
            "(objectClass=user)",
            &attrs(&["cn"]),
            &mut |e| {
                assert!(seen.insert(e.dn));
            },
        )
        .await
        .unwrap();
    assert_eq!((n, seen.len()), (BULK, BULK));
}

#[tokio::test]
async fn range_retrieval_of_a_big_group() {
    let mut c = client().await;
    let members = c
        .read_all_values(&groups("big-Bulk"), "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(members.len(), BULK);
    assert_eq!(members.iter().collect::<HashSet<_>>().len(), BULK);
    let none = c
        .read_all_values(&format!("CN=nope,OU=Groups,{SAMBA_BASE_DN}"), "member")
        .await
        .unwrap();
    assert_eq!(none, None);
    let small = c
        .read_all_values(&groups("mfa-inner"), "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(small.len(), 1);
    // in ranges of 500, as Active Directory hands them out (member;range=0-499, …, 1500-*)
    c.set_range_step(Some(500));
    let ranged = c
        .read_all_values(&groups("big-Bulk"), "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ranged.len(), BULK);
    assert_eq!(
        ranged.iter().collect::<HashSet<_>>(),
        members.iter().collect::<HashSet<_>>()
    );
    let small = c
        .read_all_values(&groups("mfa-inner"), "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(small.len(), 1);
}

#[tokio::test]
async fn paged_and_batched_searches_return_every_user_once() {
    let s = samba();
    let mut d = dir(&[&s.url]);
    d.query_size_limit = 100;
    let mut c = connect(&d, &admin(), Some(&s.admin_password))
        .await
        .unwrap();
    let filter = "(&(objectCategory=person)(objectClass=user))";
    let base = format!("OU=Bulk,{SAMBA_BASE_DN}");
    let n = c
        .search_each(
            &base,
            Scope::Subtree,
            filter,
            &attrs(&["objectGUID"]),
            &mut |e| {
                assert_eq!(e.first_bytes("objectGUID").map(<[u8]>::len), Some(16));
            },
        )
        .await
        .unwrap();
    assert_eq!(n, BULK);
    c.set_paging(false);
    let mut seen = HashSet::new();
    let n = c
        .search_each(&base, Scope::Subtree, filter, &attrs(&["cn"]), &mut |e| {
            assert!(seen.insert(e.dn));
        })
        .await
        .unwrap();
    assert_eq!(n, BULK);
}

#[tokio::test]
async fn password_checks_report_ad_reasons() {
    let s = samba();
    let mut c = client().await;
    let alice = format!("CN=Alice Anderson,OU=Sales,OU=People,{SAMBA_BASE_DN}");
    c.simple_bind(&alice, PW).await.unwrap();
    let err = c.simple_bind(&alice, "Wr0ng!pass").await.unwrap_err();
    assert_eq!(
        err.auth_reason().map(|r| r.as_str()),
        Some("invalid-credentials"),
        "{err}"
    );
    assert!(!err.to_string().contains("Wr0ng"));
    let dave = format!("CN=Dave Davis,OU=People,{SAMBA_BASE_DN}");
    let err = c.simple_bind(&dave, PW).await.unwrap_err();
    assert_eq!(
        err.auth_reason().map(|r| r.as_str()),
        Some("account-disabled"),
        "{err}"
    );
    // a failed bind leaves the connection usable for a new bind
    c.simple_bind(&s.admin_dn, &s.admin_password).await.unwrap();
}

#[tokio::test]
async fn dirsync_reports_changes_and_deletions_since_the_cookie() {
    let s = samba();
    let mut c = client().await;
    let filter = "(&(objectClass=user)(objectCategory=person))";
    let a = attrs(&["objectGUID", "sAMAccountName", "mobile", "isDeleted"]);
    // the starting point: everything
    let mut all = 0;
    let first = c
        .dirsync_each(
            SAMBA_BASE_DN,
            filter,
            &a,
            &[],
            mfasync_ldap::DIRSYNC_INCREMENTAL_VALUES,
            &mut |_| all += 1,
        )
        .await
        .unwrap();
    assert!(first.entries >= BULK + 6, "{first:?}");
    assert_eq!(first.entries, all);
    assert!(!first.cookie.is_empty());

    // a change and a deletion
    let eve = format!("CN=Eve Dirsync,OU=People,{SAMBA_BASE_DN}");
    s.ldapadd(&format!(
        "dn: {eve}\nobjectClass: user\nsAMAccountName: evedirsync\nuserAccountControl: 544\n"
    ));
    let eve_guid = c
        .read(&eve, &attrs(&["objectGUID"]))
        .await
        .unwrap()
        .and_then(|e| e.first_bytes("objectGUID").map(<[u8]>::to_vec))
        .unwrap();
    let mid = c
        .dirsync_each(
            SAMBA_BASE_DN,
            filter,
            &a,
            &first.cookie,
            mfasync_ldap::DIRSYNC_INCREMENTAL_VALUES,
            &mut |_| {},
        )
        .await
        .unwrap();
    s.ldapmodify(&format!(
        "dn: CN=Carol Clark,OU=Engineering,OU=People,{SAMBA_BASE_DN}\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 0199\n"
    ));
    s.ldapdelete(&eve);
    let mut changed = Vec::new();
    let next = c
        .dirsync_each(
            SAMBA_BASE_DN,
            filter,
            &a,
            &mid.cookie,
            mfasync_ldap::DIRSYNC_INCREMENTAL_VALUES,
            &mut |e| changed.push(e),
        )
        .await
        .unwrap();
    assert_eq!(next.entries, changed.len());
    let carol = changed
        .iter()
        .find(|e| e.dn.starts_with("CN=Carol Clark"))
        .unwrap_or_else(|| panic!("{changed:?}"));
    assert_eq!(
        carol.first_str("mobile").as_deref(),
        Some("+1 425 555 0199")
    );
    let deleted = changed
        .iter()
        .find(|e| e.first_str("isDeleted").as_deref() == Some("TRUE"))
        .unwrap_or_else(|| panic!("no deletion in {changed:?}"));
    assert!(deleted.dn.contains("Deleted Objects"), "{}", deleted.dn);
    assert_eq!(deleted.first_bytes("objectGUID"), Some(&eve_guid[..]));
    assert!(changed.len() < 10, "{}", changed.len());
}

#[tokio::test]
async fn windows_bind_over_ldaps() {
    // Kerberos over TLS: no SASL security layer (as Active Directory wants it), the TLS
    // channel binding token is sent. This DC allows it (`ldap server require strong auth =
    // no`; Samba's default "yes" refuses GSSAPI over TLS without sign/seal: see tests/kerberos.rs).
    let s = samba();
    let mut d = dir(&[&s.ldaps_url]);
    d.tls_ca_file = Some(s.ca_cert.display().to_string());
    let bind = Bind {
        kind: BindType::Windows,
        dn: "alice@mfa.test".into(),
        ..Bind::default()
    };
    let report = test(&d, &bind, Some(PW)).await;
    assert!(report.ok, "{report:?}");
    let step = report.steps.iter().find(|s| s.step == "bind").unwrap();
    assert!(
        step.detail
            .contains("GSSAPI (Kerberos) as alice@MFA.TEST to ldap/dc1.mfa.test")
            && step.detail.contains("over TLS"),
        "{step:?}"
    );
    let mut c = connect(&d, &bind, Some(PW)).await.unwrap();
    let found = c
        .search_all(
            SAMBA_BASE_DN,
            Scope::Subtree,
            "(sAMAccountName=alice)",
            &attrs(&["mail"]),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    c.unbind().await;
}
