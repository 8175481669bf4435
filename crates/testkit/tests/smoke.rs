//! Smoke tests: the servers really start, take the fixtures and answer. Run via `scripts/test`
//! (Samba needs the private network namespace).

use std::process::Command;
use std::time::Instant;

use mfasync_testkit::{
    openldap_bulk, openldap_fixture, samba_bulk, samba_fixture, shared_postgres, Samba, Slapd,
};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn ldapsearch(url: &str, dn: &str, pw: &str, base: &str, filter: &str, attrs: &[&str]) -> String {
    run(Command::new("ldapsearch")
        .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-E", "pr=500/noprompt"])
        .args(["-H", url, "-D", dn, "-w", pw, "-b", base, filter])
        .args(attrs))
}

fn count_dns(ldif: &str) -> usize {
    ldif.lines().filter(|l| l.starts_with("dn:")).count()
}

#[test]
fn slapd_fixture_and_bulk() {
    let t = Instant::now();
    let seed = openldap_fixture() + &openldap_bulk(1700, "Bulk");
    let mut s = Slapd::start(&seed);
    eprintln!(
        "slapd start + seed (fixture + 1700 users): {:?}",
        t.elapsed()
    );
    let q = |base: &str, filter: &str, attrs: &[&str]| {
        ldapsearch(&s.url, &s.admin_dn, &s.admin_password, base, filter, attrs)
    };

    let people = q(
        "ou=People,dc=example,dc=com",
        "(objectClass=inetOrgPerson)",
        &["uid"],
    );
    assert_eq!(count_dns(&people), 6, "{people}");
    assert!(
        people.contains("dn: cn=Smith\\2C John,ou=Engineering,ou=People,dc=example,dc=com"),
        "{people}"
    );
    let bulk = q("ou=Bulk,dc=example,dc=com", "(uid=user*)", &["1.1"]);
    assert_eq!(count_dns(&bulk), 1700);
    let big = q(
        "cn=big-Bulk,ou=Groups,dc=example,dc=com",
        "(objectClass=*)",
        &["member"],
    );
    assert_eq!(
        big.lines().filter(|l| l.starts_with("member:")).count(),
        1700
    );
    let nested = q(
        "ou=Groups,dc=example,dc=com",
        "(cn=mfa-nested)",
        &["member"],
    );
    assert!(nested.contains("member: cn=mfa-inner,ou=Groups,dc=example,dc=com"));
    let jm = q("dc=example,dc=com", "(uid=jmuller)", &["givenName", "sn"]);
    assert!(jm.contains("givenName:: Sm9zw6k="), "{jm}"); // José
    let alice = q(
        "dc=example,dc=com",
        "(uid=alice)",
        &["telephoneNumber", "mobile"],
    );
    assert!(alice.contains("telephoneNumber: +1 425 555 0100 x123"));

    // memberof overlay: direct groups show up on the user.
    let mo = q("dc=example,dc=com", "(uid=alice)", &["memberOf"]);
    assert!(
        mo.contains("memberOf: cn=mfa-users,ou=Groups,dc=example,dc=com"),
        "{mo}"
    );
    // ppolicy schema is loaded.
    s.ldapadd("dn: cn=default,ou=Groups,dc=example,dc=com\nobjectClass: device\nobjectClass: pwdPolicy\ncn: default\npwdAttribute: userPassword\n");

    // syncprov answers RFC 4533 refreshOnly with a cookie.
    let sync = run(Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            &s.url,
            "-D",
            &s.admin_dn,
            "-w",
            &s.admin_password,
        ])
        .args([
            "-b",
            "ou=People,dc=example,dc=com",
            "-E",
            "!sync=ro",
            "(uid=alice)",
            "1.1",
        ]));
    assert!(sync.contains("cookie"), "{sync}");

    s.ldapmodify("dn: uid=carol,ou=Engineering,ou=People,dc=example,dc=com\nchangetype: modify\nreplace: mobile\nmobile: +1 425 555 0199\n");
    let carol = q("dc=example,dc=com", "(uid=carol)", &["mobile"]);
    assert!(carol.contains("mobile: +1 425 555 0199"));
    s.ldapdelete("uid=dave,ou=People,dc=example,dc=com");
    assert_eq!(
        count_dns(&q("dc=example,dc=com", "(uid=dave)", &["1.1"])),
        0
    );

    let t = Instant::now();
    s.stop();
    eprintln!("slapd stop: {:?}", t.elapsed());
}

#[test]
fn slapd_seed_error_panics_with_output() {
    let r = std::panic::catch_unwind(|| {
        Slapd::start("dn: uid=x,ou=Missing,dc=example,dc=com\nobjectClass: account\nuid: x\n")
    });
    let err = r.err().expect("seeding below a missing parent must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("ldapadd failed"), "{msg}");
    assert!(msg.contains("No such object"), "{msg}");
}

#[test]
fn samba_fixture_and_bulk() {
    let t = Instant::now();
    let s = Samba::start(&samba_fixture());
    eprintln!("samba provision + start + fixture: {:?}", t.elapsed());
    let q = |base: &str, filter: &str, attrs: &[&str]| {
        ldapsearch(&s.url, &s.admin_dn, &s.admin_password, base, filter, attrs)
    };
    let users = q(
        "OU=People,DC=mfa,DC=test",
        "(&(objectCategory=person)(objectClass=user))",
        &["sAMAccountName", "objectGUID", "userAccountControl"],
    );
    assert_eq!(count_dns(&users), 6, "{users}");
    assert_eq!(users.matches("objectGUID::").count(), 6, "{users}");
    assert!(
        users.contains("CN=Smith\\, John,OU=Engineering,OU=People,DC=mfa,DC=test"),
        "{users}"
    );
    let disabled = q(
        "DC=mfa,DC=test",
        "(&(objectClass=user)(userAccountControl:1.2.840.113556.1.4.803:=2))",
        &["sAMAccountName"],
    );
    assert!(disabled.contains("sAMAccountName: dave"), "{disabled}");
    let nested = q(
        "OU=People,DC=mfa,DC=test",
        "(memberOf:1.2.840.113556.1.4.1941:=CN=mfa-nested,OU=Groups,DC=mfa,DC=test)",
        &["sAMAccountName"],
    );
    assert!(nested.contains("sAMAccountName: bob"), "{nested}");

    // Password + simple bind as the user, over plain LDAP and LDAPS verified with the test CA.
    s.set_password("alice", "Secr3t!pass");
    // (Samba has no WhoAmI extended operation: read our own entry instead.)
    let me = ldapsearch(
        &s.url,
        "alice@mfa.test",
        "Secr3t!pass",
        &s.base_dn,
        "(sAMAccountName=alice)",
        &["cn"],
    );
    assert!(me.contains("cn: Alice Anderson"), "{me}");
    let me = run(Command::new("ldapsearch")
        .env("LDAPTLS_CACERT", &s.ca_cert)
        .env("LDAPTLS_REQCERT", "demand")
        .args([
            "-x",
            "-LLL",
            "-H",
            &s.ldaps_url,
            "-D",
            "alice@mfa.test",
            "-w",
            "Secr3t!pass",
        ])
        .args(["-b", &s.base_dn, "(sAMAccountName=alice)", "cn"]));
    assert!(me.contains("cn: Alice Anderson"), "{me}");
    // A wrong password is refused.
    let bad = Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            &s.url,
            "-D",
            "alice@mfa.test",
            "-w",
            "wrong",
            "-b",
            "",
            "-s",
            "base",
        ])
        .output()
        .expect("spawn");
    assert!(!bad.status.success());

    let t = Instant::now();
    s.ldapadd(&samba_bulk(1700, "Bulk"));
    eprintln!(
        "samba ldapadd 1700 users + 1700-member group: {:?}",
        t.elapsed()
    );
    let bulk = q("OU=Bulk,DC=mfa,DC=test", "(objectClass=user)", &["1.1"]);
    assert_eq!(count_dns(&bulk), 1700);
    let members = q(
        "DC=mfa,DC=test",
        "(memberOf=CN=big-Bulk,OU=Groups,DC=mfa,DC=test)",
        &["1.1"],
    );
    assert_eq!(count_dns(&members), 1700);

    s.ldapdelete("CN=Carol Clark,OU=Engineering,OU=People,DC=mfa,DC=test");
    let t = Instant::now();
    drop(s);
    eprintln!("samba stop: {:?}", t.elapsed());
}

#[test]
fn postgres_fresh_database() {
    let t = Instant::now();
    let pg = shared_postgres();
    eprintln!("postgres initdb + start: {:?}", t.elapsed());
    let a = pg.fresh_database();
    let b = pg.fresh_database();
    assert_ne!(a, b);
    let out = run(Command::new("psql").args([a.as_str(), "-At", "-c", "select 1"]));
    assert_eq!(out.trim(), "1");
}

#[test]
fn samba_second_instance_modify_delete() {
    // Runs after/before samba_fixture_and_bulk (one Samba per namespace at a time); the provision
    // is shared per process, so this start only copies the template.
    let t = Instant::now();
    let s = Samba::start(&samba_fixture());
    eprintln!(
        "samba start (incl. waiting for the other instance) + fixture: {:?}",
        t.elapsed()
    );
    s.ldapmodify(
        "dn: CN=Bob Brown,OU=EMEA,OU=Sales,OU=People,DC=mfa,DC=test\nchangetype: modify\n\
         replace: mobile\nmobile: +44 20 7946 0999\n",
    );
    let bob = ldapsearch(
        &s.url,
        &s.admin_dn,
        &s.admin_password,
        &s.base_dn,
        "(sAMAccountName=bob)",
        &["mobile"],
    );
    assert!(bob.contains("mobile: +44 20 7946 0999"), "{bob}");
    s.ldapdelete("CN=Bob Brown,OU=EMEA,OU=Sales,OU=People,DC=mfa,DC=test");
    let gone = ldapsearch(
        &s.url,
        &s.admin_dn,
        &s.admin_password,
        &s.base_dn,
        "(sAMAccountName=bob)",
        &["1.1"],
    );
    assert_eq!(count_dns(&gone), 0);
}
