//! Integration tests of mfasync-ldap against real servers: one shared slapd
//! from the testkit (fixture + 1700 bulk users), plus one private slapd with a
//! server-side size limit and TLS (its certificates made by `openssl` here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mfasync_core::config::{Bind, BindType, Directory, DirectorySource};
use mfasync_ldap::{connect, test, LdapError, Scope, Vendor};
use mfasync_testkit::{free_port, openldap_bulk, openldap_fixture, Slapd};

const BULK: usize = 1700;
const SVC_DN: &str = "uid=svc,ou=People,dc=example,dc=com";
const SVC_PW: &str = "svc-secret-pw";

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut seed = openldap_fixture();
        seed += &openldap_bulk(BULK, "Bulk");
        seed += &format!(
            "dn: {SVC_DN}\nobjectClass: inetOrgPerson\nuid: svc\ncn: svc\nsn: svc\nuserPassword: {SVC_PW}\n\n"
        );
        Slapd::start(&seed)
    })
}

fn dir(servers: &[&str]) -> Directory {
    Directory {
        source: DirectorySource::Ldap,
        servers: servers.iter().map(|s| s.to_string()).collect(),
        timeout_seconds: 1,
        ..Directory::default()
    }
}

fn simple(dn: &str) -> Bind {
    Bind {
        kind: BindType::Simple,
        dn: dn.to_string(),
        ..Bind::default()
    }
}

fn anonymous() -> Bind {
    Bind {
        kind: BindType::Anonymous,
        ..Bind::default()
    }
}

/// A port nobody listens on.
fn closed_port_url() -> String {
    format!("ldap://127.0.0.1:{}", free_port())
}

/// A server that accepts TCP connections and never answers.
fn silent_server() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ldap://127.0.0.1:{}", l.local_addr().unwrap().port());
    (l, url)
}

/// `search_each` of the inetOrgPerson entries under `base`, reading `attr`:
/// the count it returns, the distinct DNs delivered, the DNs delivered again.
async fn users_once(c: &mut mfasync_ldap::Client, base: &str, attr: &str) -> (usize, usize, usize) {
    let mut seen = HashSet::new();
    let mut dupes = 0;
    let n = c
        .search_each(
            base,
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            &attrs(&[attr]),
            &mut |e| {
                if !seen.insert(e.dn.to_lowercase()) {
                    dupes += 1;
                }
            },
        )
        .await
        .unwrap();
    (n, seen.len(), dupes)
}

fn attrs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn connects_and_reads_capabilities() {
    let s = slapd();
    let c = connect(
        &dir(&[&s.url]),
        &simple(&s.admin_dn),
        Some(&s.admin_password),
    )
    .await
    .unwrap();
    assert_eq!(c.server(), s.url);
    let caps = c.capabilities();
    assert_eq!(caps.vendor, Vendor::OpenLdap);
    assert!(caps.paged_results, "{caps:?}");
    assert!(caps.syncrepl, "{caps:?}");
    assert!(
        !caps.dirsync && !caps.attribute_scoped_query && !caps.usn,
        "{caps:?}"
    );
    assert_eq!(caps.naming_contexts, vec!["dc=example,dc=com".to_string()]);
    // no base_dn configured: the first namingContext
    assert_eq!(c.base_dn(), "dc=example,dc=com");
    assert!(!format!("{c:?}").contains(&s.admin_password));
    c.unbind().await;

    let mut d = dir(&[&s.url]);
    d.base_dn = "ou=People,dc=example,dc=com".into();
    let c = connect(&d, &anonymous(), None).await.unwrap();
    assert_eq!(c.base_dn(), "ou=People,dc=example,dc=com");
}

#[tokio::test]
async fn fails_over_from_a_closed_port() {
    let s = slapd();
    let closed = closed_port_url();
    let c = connect(
        &dir(&[&closed, &s.url]),
        &simple(&s.admin_dn),
        Some(&s.admin_password),
    )
    .await
    .unwrap();
    assert_eq!(c.server(), s.url);
}

#[tokio::test]
async fn fails_over_from_a_server_that_never_answers() {
    let s = slapd();
    let (_listener, silent) = silent_server();
    let t0 = Instant::now();
    let c = connect(
        &dir(&[&silent, &s.url]),
        &simple(&s.admin_dn),
        Some(&s.admin_password),
    )
    .await
    .unwrap();
    assert_eq!(c.server(), s.url);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // anonymous: no bind, so the RootDSE read is what times out
    let c = connect(&dir(&[&silent, &s.url]), &anonymous(), None)
        .await
        .unwrap();
    assert_eq!(c.server(), s.url);
}

#[tokio::test]
async fn all_servers_failing_lists_each_one() {
    let closed = closed_port_url();
    let (_listener, silent) = silent_server();
    let err = connect(&dir(&[&closed, &silent]), &simple("cn=x,dc=y"), Some("pw"))
        .await
        .unwrap_err();
    let LdapError::AllServersFailed(list) = &err else {
        panic!("{err}");
    };
    assert_eq!(list.len(), 2, "{err}");
    assert_eq!(
        (list[0].server.as_str(), list[0].step.as_str()),
        (closed.as_str(), "connect")
    );
    assert_eq!(
        (list[1].server.as_str(), list[1].step.as_str()),
        (silent.as_str(), "bind")
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&closed) && msg.contains(&silent) && msg.contains("timed out"),
        "{msg}"
    );
    assert!(!msg.contains("pw\""), "{msg}");
    assert!(err.is_unavailable());
}

#[tokio::test]
async fn wrong_password_is_not_retried_on_other_servers() {
    let s = slapd();
    // The backup must never be contacted: count its connections.
    let backup = TcpListener::bind("127.0.0.1:0").unwrap();
    backup.set_nonblocking(true).unwrap();
    let backup_url = format!("ldap://127.0.0.1:{}", backup.local_addr().unwrap().port());
    let err = connect(
        &dir(&[&s.url, &backup_url]),
        &simple(&s.admin_dn),
        Some("wrong-password-123"),
    )
    .await
    .unwrap_err();
    assert!(err.is_invalid_credentials(), "{err}");
    assert_eq!(
        err.auth_reason().map(|r| r.as_str()),
        Some("invalid-credentials")
    );
    let msg = format!("{err} {err:?}");
    assert!(msg.contains(&s.url), "{msg}");
    assert!(!msg.contains("wrong-password-123"), "{msg}");
    assert!(backup.accept().is_err(), "the backup server was contacted");
}

#[tokio::test]
async fn bind_type_checks_happen_before_connecting() {
    let (listener, url) = silent_server();
    listener.set_nonblocking(true).unwrap();
    let d = dir(&[&url]);
    // windows (Kerberos): the username is not a DN, and needs a password
    let windows = Bind {
        kind: BindType::Windows,
        dn: "cn=a,dc=b".into(),
        ..Bind::default()
    };
    let err = connect(&d, &windows, Some("x")).await.unwrap_err();
    assert!(matches!(err, LdapError::Config(_)), "{err}");
    assert!(err.to_string().contains("not a Kerberos username"), "{err}");
    let windows = Bind {
        kind: BindType::Windows,
        dn: "alice@EXAMPLE.COM".into(),
        ..Bind::default()
    };
    let err = connect(&d, &windows, None).await.unwrap_err();
    assert!(matches!(err, LdapError::Config(_)), "{err}");
    assert!(err.to_string().contains("non-empty password"), "{err}");
    let err = connect(&d, &simple("cn=a,dc=b"), Some(""))
        .await
        .unwrap_err();
    assert!(matches!(err, LdapError::Config(_)), "{err}");
    let mut ssl = simple("cn=a,dc=b");
    ssl.kind = BindType::Ssl;
    let err = connect(&d, &ssl, Some("pw")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("bind type ssl needs ldaps:// or starttls = true"),
        "{err}"
    );
    assert!(listener.accept().is_err(), "a connection was made");

    let r = test(&d, &windows, None).await;
    assert!(!r.ok);
    assert_eq!(r.steps.len(), 1);
    assert_eq!(r.steps[0].step, "bind");
    assert!(
        r.steps[0].detail.contains("needs a non-empty password"),
        "{r:?}"
    );
}

#[tokio::test]
async fn paged_search_returns_every_user_once() {
    let s = slapd();
    let mut d = dir(&[&s.url]);
    d.query_size_limit = 100; // pages of 100
    let mut c = connect(&d, &simple(&s.admin_dn), Some(&s.admin_password))
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut dupes = 0;
    let n = c
        .search_each(
            "ou=Bulk,dc=example,dc=com",
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            &attrs(&["uid", "cn", "mail"]),
            &mut |e| {
                assert!(e.first_str("mail").is_some());
                if !seen.insert(e.dn) {
                    dupes += 1;
                }
            },
        )
        .await
        .unwrap();
    assert_eq!((n, seen.len(), dupes), (BULK, BULK, 0));

    let all = c
        .search_all(
            &s.base_dn,
            Scope::OneLevel,
            "(objectClass=organizationalUnit)",
            &attrs(&["ou"]),
        )
        .await
        .unwrap();
    let mut ous: Vec<String> = all.iter().filter_map(|e| e.first_str("ou")).collect();
    ous.sort();
    assert_eq!(ous, vec!["Bulk", "Groups", "People"]);
}

#[tokio::test]
async fn batched_search_under_a_client_size_limit_returns_every_user_once() {
    let s = slapd();
    let mut d = dir(&[&s.url]);
    d.query_size_limit = 100;
    let mut c = connect(&d, &simple(&s.admin_dn), Some(&s.admin_password))
        .await
        .unwrap();
    c.set_paging(false);
    let mut seen = HashSet::new();
    let mut dupes = 0;
    let n = c
        .search_each(
            &s.base_dn,
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            &attrs(&["uid"]),
            &mut |e| {
                if !seen.insert(e.dn.to_lowercase()) {
                    dupes += 1;
                }
            },
        )
        .await
        .unwrap();
    // 1700 bulk users + 6 fixture people + svc
    assert_eq!((n, seen.len(), dupes), (BULK + 7, BULK + 7, 0));
    assert!(seen.iter().any(|dn| dn.starts_with("cn=smith")
        && dn.ends_with("ou=engineering,ou=people,dc=example,dc=com")));
}

#[tokio::test]
async fn search_errors_are_errors() {
    let s = slapd();
    let mut c = connect(
        &dir(&[&s.url]),
        &simple(&s.admin_dn),
        Some(&s.admin_password),
    )
    .await
    .unwrap();
    let err = c
        .search_all(
            "ou=Nowhere,dc=example,dc=com",
            Scope::Subtree,
            "(objectClass=*)",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, LdapError::Operation { code: 32, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&s.url), "{err}");
    let err = c
        .search_all(&s.base_dn, Scope::Subtree, "(objectClass=*", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid search filter"), "{err}");
}

#[tokio::test]
async fn reads_entries_and_all_values_of_a_big_group() {
    let s = slapd();
    let mut c = connect(
        &dir(&[&s.url]),
        &simple(&s.admin_dn),
        Some(&s.admin_password),
    )
    .await
    .unwrap();
    let members = c
        .read_all_values("cn=big-Bulk,ou=Groups,dc=example,dc=com", "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(members.len(), BULK);
    assert_eq!(members.iter().collect::<HashSet<_>>().len(), BULK);
    // OpenLDAP ignores range options: the plain attribute comes back whole
    c.set_range_step(Some(500));
    let again = c
        .read_all_values("cn=big-Bulk,ou=Groups,dc=example,dc=com", "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.len(), BULK);
    c.set_range_step(None);
    assert!(members.contains(&"uid=user000001,ou=Bulk,dc=example,dc=com".to_string()));
    assert_eq!(
        c.read_all_values("cn=nope,ou=Groups,dc=example,dc=com", "member")
            .await
            .unwrap(),
        None
    );
    let e = c
        .read(
            "uid=alice,ou=Sales,ou=People,dc=example,dc=com",
            &attrs(&["cn", "entryUUID"]),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.first_str("cn").as_deref(), Some("Alice Anderson"));
    assert_eq!(e.first_bytes("entryuuid").map(<[u8]>::len), Some(36));
    assert!(c
        .read("uid=nobody,dc=example,dc=com", &[])
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn rebinds_for_password_checks() {
    let s = slapd();
    let mut c = connect(
        &dir(&[&s.url]),
        &simple(&s.admin_dn),
        Some(&s.admin_password),
    )
    .await
    .unwrap();
    c.simple_bind(SVC_DN, SVC_PW).await.unwrap();
    let err = c.simple_bind(SVC_DN, "not-it").await.unwrap_err();
    assert!(err.is_invalid_credentials(), "{err}");
    assert!(!err.to_string().contains("not-it"));
    let err = c.simple_bind(SVC_DN, "").await.unwrap_err();
    assert!(err.is_invalid_credentials(), "{err}");
}

#[tokio::test]
async fn test_report_has_each_step() {
    let s = slapd();
    let closed = closed_port_url();
    let r = test(
        &dir(&[&closed, &s.url]),
        &simple(&s.admin_dn),
        Some(&s.admin_password),
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.server, s.url);
    assert_eq!(r.vendor, Vendor::OpenLdap);
    let steps: Vec<&str> = r.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, vec!["connect", "tls", "bind", "rootdse"]);
    assert!(r.steps.iter().all(|s| s.ok), "{r:?}");
    assert!(r.supports.paged_results && r.supports.syncrepl && !r.supports.dirsync);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["vendor"], "openldap");
    assert_eq!(json["steps"][2]["step"], "bind");
    assert_eq!(json["supports"]["attribute_scoped_query"], false);
    assert!(!json.to_string().contains(&s.admin_password));

    // wrong password: bind fails, no further server tried
    let (_l, silent) = silent_server();
    let r = test(
        &dir(&[&s.url, &silent]),
        &simple(&s.admin_dn),
        Some("bad-pw-42"),
    )
    .await;
    assert!(!r.ok);
    assert_eq!(r.server, s.url);
    let last = r.steps.last().unwrap();
    assert_eq!((last.step.as_str(), last.ok), ("bind", false));
    assert!(
        last.detail.contains("invalid credentials"),
        "{}",
        last.detail
    );
    assert!(!serde_json::to_string(&r).unwrap().contains("bad-pw-42"));

    // every server down: the report of the last one
    let r = test(&dir(&[&closed]), &anonymous(), None).await;
    assert!(!r.ok);
    assert_eq!(r.steps.len(), 1);
    assert_eq!(
        (r.steps[0].step.as_str(), r.steps[0].ok),
        ("connect", false)
    );

    // a base DN that does not exist
    let mut d = dir(&[&s.url]);
    d.base_dn = "ou=Missing,dc=example,dc=com".into();
    let r = test(&d, &anonymous(), None).await;
    assert!(!r.ok);
    let last = r.steps.last().unwrap();
    assert_eq!((last.step.as_str(), last.ok), ("rootdse", false));
    assert!(last.detail.contains("does not exist"), "{}", last.detail);
}

// ---------------------------------------------------------------------------
// A private slapd with `sizelimit 100` and TLS (ldaps:// and StartTLS).
// ---------------------------------------------------------------------------

struct PrivateSlapd {
    child: Child,
    _dir: tempfile::TempDir,
    ldap_url: String,
    ldaps_url: String,
    ca_file: PathBuf,
    other_ca_file: PathBuf,
}

impl Drop for PrivateSlapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(d: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = d.join(format!("{name}.key"));
    let pem = d.join(format!("{name}.pem"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&pem)
        .args([
            "-subj",
            &format!("/CN=mfasync test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]));
    (key, pem)
}

fn private_slapd() -> PrivateSlapd {
    private_slapd_with("/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n", true)
}

/// A slapd of its own whose server certificate has `subject` and the extra
/// extension lines `extensions`; `seed`: the bulk users too (else only the
/// base entries).
fn private_slapd_with(subject: &str, extensions: &str, seed: bool) -> PrivateSlapd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca_key, ca_pem) = make_ca(d, "ca");
    let (_, other_ca) = make_ca(d, "other-ca");
    let key = d.join("server.key");
    let csr = d.join("server.csr");
    let cert = d.join("server.pem");
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", subject])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ext = d.join("ext.cnf");
    std::fs::write(
        &ext,
        format!("{extensions}basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca_pem)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-out")
        .arg(&cert)
        .arg("-extfile")
        .arg(&ext));
    std::fs::create_dir(d.join("db")).unwrap();
    let conf = d.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
moduleload ppolicy
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
sizelimit 100
database mdb
maxsize 1073741824
suffix \"dc=example,dc=com\"
rootdn \"cn=admin,dc=example,dc=com\"
rootpw secret
directory {d}/db
dbnosync
index objectClass eq
index cn eq,sub
index entryCSN,entryUUID eq
overlay syncprov
overlay ppolicy
ppolicy_use_lockout
",
            d = d.display(),
            ca = ca_pem.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let (p1, p2) = (free_port(), free_port());
    let ldap_url = format!("ldap://127.0.0.1:{p1}");
    let ldaps_url = format!("ldaps://127.0.0.1:{p2}");
    let log = std::fs::File::create(d.join("slapd.log")).unwrap();
    let child = Command::new("slapd")
        .args(["-d", "0", "-h", &format!("{ldap_url}/ {ldaps_url}/")])
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let s = PrivateSlapd {
        child,
        ca_file: ca_pem,
        other_ca_file: other_ca,
        _dir: dir,
        ldap_url,
        ldaps_url,
    };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", p1)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", p2)).is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "slapd did not start: {}",
            std::fs::read_to_string(s._dir.path().join("slapd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let bulk = seed;
    let mut seed = String::from(
        "dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=Groups,dc=example,dc=com\nobjectClass: organizationalUnit\nou: Groups\n\n",
    );
    if bulk {
        seed += &openldap_bulk(BULK, "Bulk");
    }
    let ldif = s._dir.path().join("seed.ldif");
    std::fs::write(&ldif, seed).unwrap();
    run(Command::new("ldapadd")
        .args([
            "-x",
            "-H",
            &s.ldap_url,
            "-D",
            "cn=admin,dc=example,dc=com",
            "-w",
            "secret",
            "-f",
        ])
        .arg(&ldif));
    s
}

#[tokio::test]
async fn private_slapd_size_limit_and_tls() {
    let p = private_slapd();
    let ca = p.ca_file.display().to_string();

    // --- batched search under the server's size limit (anonymous: limits apply)
    let mut c = connect(&dir(&[&p.ldap_url]), &anonymous(), None)
        .await
        .unwrap();
    assert_eq!(c.capabilities().vendor, Vendor::OpenLdap);
    // the paged search hits the server's limit too and continues in batches;
    // the DNs it read (past 10, kept in a file) are not delivered again
    for in_memory in [4096, 10] {
        c.set_seen_in_memory(in_memory);
        let got = users_once(&mut c, "ou=Bulk,dc=example,dc=com", "cn").await;
        assert_eq!(got, (BULK, BULK, 0), "{in_memory}");
    }
    c.set_paging(false);
    let got = users_once(&mut c, "dc=example,dc=com", "uid").await;
    assert_eq!(got, (BULK, BULK, 0));
    // entries without cn fall in the catch-all
    let all = c
        .search_all("dc=example,dc=com", Scope::Subtree, "(objectClass=*)", &[])
        .await
        .unwrap();
    assert_eq!(all.len(), BULK + 4); // + base, ou=Groups, ou=Bulk, big-Bulk group
    c.unbind().await;

    // --- LDAPS with the CA file
    let mut d = dir(&[&p.ldaps_url]);
    d.tls_ca_file = Some(ca.clone());
    let mut ssl = simple("cn=admin,dc=example,dc=com");
    ssl.kind = BindType::Ssl;
    let c = connect(&d, &ssl, Some("secret")).await.unwrap();
    assert_eq!(c.server(), p.ldaps_url);
    let r = test(&d, &ssl, Some("secret")).await;
    assert!(r.ok, "{r:?}");
    assert!(r.steps[1].detail.contains("LDAPS established"), "{r:?}");

    // --- StartTLS with the CA file
    let mut d = dir(&[&p.ldap_url]);
    d.tls_ca_file = Some(ca.clone());
    d.starttls = true;
    let r = test(&d, &ssl, Some("secret")).await;
    assert!(r.ok, "{r:?}");
    assert!(r.steps[1].detail.contains("StartTLS established"), "{r:?}");
    connect(&d, &ssl, Some("secret")).await.unwrap();

    // --- untrusted certificate, verification on: fails at the tls step
    let mut d = dir(&[&p.ldaps_url]);
    d.tls_ca_file = Some(p.other_ca_file.display().to_string());
    let r = test(&d, &ssl, Some("secret")).await;
    assert!(!r.ok, "{r:?}");
    let last = r.steps.last().unwrap();
    assert_eq!((last.step.as_str(), last.ok), ("tls", false), "{r:?}");
    let err = connect(&d, &ssl, Some("secret")).await.unwrap_err();
    let LdapError::AllServersFailed(list) = &err else {
        panic!("{err}");
    };
    assert_eq!(list[0].step, "tls", "{err}");
    // StartTLS with an untrusted certificate, too
    let mut d2 = dir(&[&p.ldap_url]);
    d2.starttls = true;
    let r = test(&d2, &ssl, Some("secret")).await;
    assert_eq!(
        r.steps.last().map(|s| (s.step.as_str(), s.ok)),
        Some(("tls", false)),
        "{r:?}"
    );

    // --- untrusted certificate, verification off: works
    d.tls_verify = false;
    d.tls_ca_file = None;
    let r = test(&d, &ssl, Some("secret")).await;
    assert!(r.ok, "{r:?}");
    assert!(r.steps[1].detail.contains("NOT verified"), "{r:?}");

    // --- syncrepl without a session log: deletions come as a present phase
    let mut c = connect(
        &dir(&[&p.ldap_url]),
        &simple("cn=admin,dc=example,dc=com"),
        Some("secret"),
    )
    .await
    .unwrap();
    let base = "ou=Bulk,dc=example,dc=com";
    let a = attrs(&["uid"]);
    let first = c
        .syncrepl_refresh(
            base,
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            &a,
            None,
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(first.events, BULK);
    run(Command::new("ldapdelete")
        .args([
            "-x",
            "-H",
            &p.ldap_url,
            "-D",
            "cn=admin,dc=example,dc=com",
            "-w",
            "secret",
        ])
        .arg(format!("uid=user000007,{base}")));
    let (mut changed, mut present, mut deleted) = (0, 0, 0);
    let next = c
        .syncrepl_refresh(
            base,
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            &a,
            first.cookie.as_deref(),
            &mut |e| match e {
                mfasync_ldap::SyncEvent::Changed { .. } => changed += 1,
                mfasync_ldap::SyncEvent::Present { .. } => present += 1,
                mfasync_ldap::SyncEvent::Deleted { .. } => deleted += 1,
            },
        )
        .await
        .unwrap();
    assert!(!next.deletes_listed, "{next:?}");
    assert_eq!((changed, present, deleted), (0, BULK - 1, 0));
    c.unbind().await;

    // --- a locked account, with `ppolicy_use_lockout`
    let ldif = p._dir.path().join("locked.ldif");
    std::fs::write(
        &ldif,
        "dn: cn=pwpolicy,dc=example,dc=com\nobjectClass: device\nobjectClass: pwdPolicy\ncn: pwpolicy\npwdAttribute: userPassword\npwdLockout: TRUE\n\n\
         dn: uid=locked,dc=example,dc=com\nobjectClass: account\nobjectClass: simpleSecurityObject\nuid: locked\nuserPassword: pw-locked\npwdPolicySubentry: cn=pwpolicy,dc=example,dc=com\n\n",
    )
    .unwrap();
    run(Command::new("ldapadd")
        .args([
            "-x",
            "-H",
            &p.ldap_url,
            "-D",
            "cn=admin,dc=example,dc=com",
            "-w",
            "secret",
            "-f",
        ])
        .arg(&ldif));
    std::fs::write(
        &ldif,
        "dn: uid=locked,dc=example,dc=com\nchangetype: modify\nadd: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n",
    )
    .unwrap();
    run(Command::new("ldapmodify")
        .args([
            "-x",
            "-H",
            &p.ldap_url,
            "-D",
            "cn=admin,dc=example,dc=com",
            "-w",
            "secret",
            "-f",
        ])
        .arg(&ldif));
    let mut c = connect(&dir(&[&p.ldap_url]), &anonymous(), None)
        .await
        .unwrap();
    let err = c
        .simple_bind("uid=locked,dc=example,dc=com", "pw-locked")
        .await
        .unwrap_err();
    assert_eq!(
        err.auth_reason().map(|r| r.as_str()),
        Some("account-locked"),
        "{err}"
    );
    c.unbind().await;
    // the same through connect (how `mfasync auth` checks passwords)
    let err = connect(
        &dir(&[&p.ldap_url]),
        &simple("uid=locked,dc=example,dc=com"),
        Some("pw-locked"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.auth_reason().map(|r| r.as_str()),
        Some("account-locked"),
        "{err}"
    );

    // --- a server that stops answering in the middle: the search is an error, not a partial result
    let mut c = connect(&dir(&[&p.ldap_url]), &anonymous(), None)
        .await
        .unwrap();
    let pid = p.child.id().to_string();
    run(Command::new("kill").args(["-STOP", &pid]));
    let t0 = Instant::now();
    let res = c
        .search_all("dc=example,dc=com", Scope::Subtree, "(objectClass=*)", &[])
        .await;
    run(Command::new("kill").args(["-CONT", &pid]));
    let err = res.unwrap_err();
    assert!(matches!(err, LdapError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains(&p.ldap_url) && err.to_string().contains("timed out"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(err.is_unavailable());

    // --- an unreadable CA file is a settings error
    let mut d = dir(&[&p.ldaps_url]);
    d.tls_ca_file = Some("/nonexistent/ca.pem".into());
    let err = connect(&d, &ssl, Some("secret")).await.unwrap_err();
    assert!(matches!(err, LdapError::Config(_)), "{err}");
}

/// A server certificate without subjectAltName (older AD CS templates,
/// hand-made certificates): its subject CN names the server, as OpenSSL and
/// Windows accept. An IP address is never matched against a CN.
#[tokio::test]
async fn a_certificate_without_subject_alt_name_is_matched_on_its_cn() {
    let p = private_slapd_with("/CN=localhost", "", false);
    let ca = p.ca_file.display().to_string();
    let mut ssl = simple("cn=admin,dc=example,dc=com");
    ssl.kind = BindType::Ssl;
    let by_name = p.ldaps_url.replace("127.0.0.1", "localhost");
    let mut d = dir(&[&by_name]);
    d.tls_ca_file = Some(ca.clone());
    let r = test(&d, &ssl, Some("secret")).await;
    assert!(r.ok, "{r:?}");
    assert!(r.steps[1].detail.contains("LDAPS established"), "{r:?}");
    // StartTLS, too
    let mut d = dir(&[&p.ldap_url.replace("127.0.0.1", "localhost")]);
    d.tls_ca_file = Some(ca.clone());
    d.starttls = true;
    connect(&d, &ssl, Some("secret")).await.unwrap();

    // the name must still match: by IP address it does not
    let mut d = dir(&[&p.ldaps_url]);
    d.tls_ca_file = Some(ca.clone());
    let r = test(&d, &ssl, Some("secret")).await;
    let last = r.steps.last().unwrap();
    assert_eq!((last.step.as_str(), last.ok), ("tls", false), "{r:?}");
    assert!(last.detail.contains("not valid for name"), "{r:?}");
    // and the chain must lead to a trusted CA
    let mut d = dir(&[&by_name]);
    d.tls_ca_file = Some(p.other_ca_file.display().to_string());
    let r = test(&d, &ssl, Some("secret")).await;
    let last = r.steps.last().unwrap();
    assert_eq!((last.step.as_str(), last.ok), ("tls", false), "{r:?}");
    assert!(last.detail.contains("UnknownIssuer"), "{r:?}");
}

/// A certificate that names DNS subjectAltNames is not matched on its CN.
#[tokio::test]
async fn a_certificate_with_subject_alt_names_is_not_matched_on_its_cn() {
    let p = private_slapd_with(
        "/CN=localhost",
        "subjectAltName=DNS:dc9.example.com\n",
        false,
    );
    let mut ssl = simple("cn=admin,dc=example,dc=com");
    ssl.kind = BindType::Ssl;
    let mut d = dir(&[&p.ldaps_url.replace("127.0.0.1", "localhost")]);
    d.tls_ca_file = Some(p.ca_file.display().to_string());
    let r = test(&d, &ssl, Some("secret")).await;
    let last = r.steps.last().unwrap();
    assert_eq!((last.step.as_str(), last.ok), ("tls", false), "{r:?}");
    assert!(last.detail.contains("not valid for name"), "{r:?}");
}

#[tokio::test]
async fn syncrepl_refresh_reports_changes_and_deletions() {
    use mfasync_ldap::SyncEvent;
    let s = slapd();
    // its own subtree and object class, so other tests' counts are unaffected
    let base = "cn=SyncTest,dc=example,dc=com";
    let dev = |n: &str| {
        format!("dn: cn={n},{base}\nobjectClass: device\ncn: {n}\ndescription: first\n\n")
    };
    s.ldapadd(&format!(
        "dn: {base}\nobjectClass: organizationalRole\ncn: SyncTest\n\n{}{}{}",
        dev("d1"),
        dev("d2"),
        dev("d3")
    ));
    let mut c = connect(
        &dir(&[&s.url]),
        &simple(&s.admin_dn),
        Some(&s.admin_password),
    )
    .await
    .unwrap();
    let a = attrs(&["cn", "description", "entryUUID"]);
    let filter = "(objectClass=device)";
    let mut events = Vec::new();
    let first = c
        .syncrepl_refresh(base, Scope::Subtree, filter, &a, None, &mut |e| {
            events.push(e)
        })
        .await
        .unwrap();
    assert_eq!(first.events, 3, "{events:?}");
    assert!(first.cookie.is_some());
    let mut uuid_of = std::collections::HashMap::new();
    for e in &events {
        let SyncEvent::Changed { uuid, entry } = e else {
            panic!("{e:?}");
        };
        assert_eq!(uuid.len(), 16);
        uuid_of.insert(entry.first_str("cn").unwrap(), uuid.clone());
    }

    // nothing changed: nothing (or only "present") reported
    let mut events = Vec::new();
    let same = c
        .syncrepl_refresh(
            base,
            Scope::Subtree,
            filter,
            &a,
            first.cookie.as_deref(),
            &mut |e| events.push(e),
        )
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, SyncEvent::Present { .. })),
        "{events:?}"
    );

    s.ldapmodify(&format!(
        "dn: cn=d1,{base}\nchangetype: modify\nreplace: description\ndescription: second\n"
    ));
    s.ldapdelete(&format!("cn=d2,{base}"));
    s.ldapadd(&dev("d4"));
    let mut events = Vec::new();
    let next = c
        .syncrepl_refresh(
            base,
            Scope::Subtree,
            filter,
            &a,
            same.cookie.as_deref(),
            &mut |e| events.push(e),
        )
        .await
        .unwrap();
    assert_ne!(next.cookie, same.cookie);
    let mut changed: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Changed { entry, .. } => entry.first_str("cn"),
            _ => None,
        })
        .collect();
    changed.sort();
    assert_eq!(changed, vec!["d1", "d4"], "{events:?}");
    let d1 = events.iter().find_map(|e| match e {
        SyncEvent::Changed { uuid, entry } if entry.first_str("cn").as_deref() == Some("d1") => {
            Some((uuid.clone(), entry.first_str("description")))
        }
        _ => None,
    });
    assert_eq!(
        d1,
        Some((uuid_of["d1"].clone(), Some("second".to_string())))
    );
    // the testkit's slapd keeps a session log: deletions are listed
    assert!(next.deletes_listed);
    let deleted: Vec<&Vec<u8>> = events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Deleted { uuid } => Some(uuid),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![&uuid_of["d2"]], "{events:?}");
}

#[tokio::test]
async fn password_policy_reasons() {
    let s = slapd();
    // accounts of a structural class no other test counts
    let base = "cn=PolicyTest,dc=example,dc=com";
    let policy = format!("cn=pwpolicy,{base}");
    let acct = |uid: &str, extra: &str| {
        format!(
            "dn: uid={uid},{base}\nobjectClass: account\nobjectClass: simpleSecurityObject\nuid: {uid}\nuserPassword: pw-{uid}\npwdPolicySubentry: {policy}\n{extra}\n"
        )
    };
    s.ldapadd(&format!(
        "dn: {base}\nobjectClass: organizationalRole\ncn: PolicyTest\n\n\
         dn: {policy}\nobjectClass: device\nobjectClass: pwdPolicy\ncn: pwpolicy\npwdAttribute: userPassword\npwdLockout: TRUE\npwdMustChange: TRUE\npwdMaxFailure: 3\n\n\
         {}{}{}",
        acct("okuser", ""),
        acct("locked", ""),
        acct("reset", "")
    ));
    s.ldapmodify(&format!(
        "dn: uid=locked,{base}\nchangetype: modify\nadd: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n\n\
         dn: uid=reset,{base}\nchangetype: modify\nadd: pwdReset\npwdReset: TRUE\n"
    ));
    let mut c = connect(&dir(&[&s.url]), &anonymous(), None).await.unwrap();
    c.simple_bind(&format!("uid=okuser,{base}"), "pw-okuser")
        .await
        .unwrap();
    let reason = |r: Result<(), LdapError>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e
            .auth_reason()
            .map(|r| r.as_str().to_string())
            .unwrap_or_else(|| e.to_string()),
    };
    assert_eq!(
        reason(c.simple_bind(&format!("uid=okuser,{base}"), "nope").await),
        "invalid-credentials"
    );
    // slapd answers accountLocked in the policy control only with
    // `ppolicy_use_lockout`; the testkit's slapd does not set it
    let locked = reason(
        c.simple_bind(&format!("uid=locked,{base}"), "pw-locked")
            .await,
    );
    assert!(
        ["account-locked", "invalid-credentials"].contains(&locked.as_str()),
        "{locked}"
    );
    let via_connect = connect(
        &dir(&[&s.url]),
        &simple(&format!("uid=reset,{base}")),
        Some("pw-reset"),
    )
    .await;
    assert_eq!(reason(via_connect.map(|_| ())), "must-change-password");
    assert_eq!(
        reason(
            c.simple_bind(&format!("uid=reset,{base}"), "pw-reset")
                .await
        ),
        "must-change-password"
    );
}
