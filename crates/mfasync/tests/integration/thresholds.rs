//! A percentage approval threshold on a directory of 1,000 users (issue 21):
//! `"2%"` lets 20 departures through and holds 21, against a real slapd.

use crate::common::{counts, Mfa};
use mfasync_testkit::{openldap_bulk, Slapd};

const BASE: &str = "dc=example,dc=com";

fn config(s: &Slapd) -> String {
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        10,
        (&s.admin_dn, &s.admin_password),
    );
    format!(
        "{head}[sync]\napproval_threshold = \"2%\"\n\
         [[sync.items]]\nkind = \"container\"\ndn = \"ou=Pct,{BASE}\"\n"
    )
}

#[test]
fn two_percent_of_1000_users_lets_20_departures_through_and_holds_21() {
    let groups = format!("dn: ou=Groups,{BASE}\nobjectClass: organizationalUnit\nou: Groups\n\n");
    let s = Slapd::start(&(groups + &openldap_bulk(1000, "Pct")));
    let (twenty, twenty_one) = (Mfa::new(), Mfa::new());
    for m in [&twenty, &twenty_one] {
        m.apply(&config(&s));
        assert_eq!(counts(&m.sync_full()).0, 1000);
    }
    let delete = |i: usize| s.ldapdelete(&format!("uid=user{i:06},ou=Pct,{BASE}"));

    (1..=20).for_each(delete);
    let r = twenty.sync_full();
    assert_eq!(counts(&r).4, 20, "20 of 1,000 pass: {r}");
    assert!(r["pending_approval"].is_null(), "{r}");

    delete(21);
    let r = twenty_one.sync_full();
    assert_eq!(counts(&r).4, 0, "21 of 1,000 are held: {r}");
    assert_eq!(r["pending_approval"]["remove"], 21, "{r}");
    let held = r["held"].as_array().cloned().unwrap_or_default();
    assert_eq!(held.len(), 21, "{r}");
    assert!(
        held.iter().all(|h| h["limit"]
            .as_str()
            .is_some_and(|l| l.contains("2%") && l.contains("20 of 1,000"))),
        "each held departure names the limit: {r}"
    );
    assert_eq!(twenty_one.users().len(), 1000, "nobody left yet");
}
