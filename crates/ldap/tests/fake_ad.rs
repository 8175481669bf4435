//! The client against behaviours of real Microsoft Active Directory that no
//! server the tests can start here shows (slapd and the Samba AD DC do not):
//! automatic range truncation (MaxValRange), the page cap (MaxPageSize),
//! DirSync handing out changes in rounds (moreResults), and connections lost
//! or stalled mid-search. They run against `mfasync_testkit::FakeAd`, an
//! in-process fake that imitates exactly those; everything else is tested
//! against the real servers (ldap.rs, samba.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use mfasync_core::config::{Bind, BindType, Directory, DirectorySource};
use mfasync_ldap::{connect, Client, LdapError, Scope, Vendor, DIRSYNC_INCREMENTAL_VALUES};
use mfasync_testkit::{FakeAd, FakeAdData, FakeEntry, FakeSearch};

const BASE: &str = "DC=fake,DC=test";
const SVC_DN: &str = "CN=svc,CN=Users,DC=fake,DC=test";
const SVC_PW: &str = "svc-secret-pw";
const STAFF: &str = "OU=Staff,DC=fake,DC=test";
const BIG_GROUP: &str = "CN=Big,OU=Groups,DC=fake,DC=test";

fn user_dn(i: usize) -> String {
    format!("CN=User {i:05},{STAFF}")
}

fn user(i: usize) -> FakeEntry {
    FakeEntry::numbered_user(&user_dn(i), i)
}

/// `users` users under OU=Staff and BIG_GROUP with all of them as members.
fn data(users: usize) -> FakeAdData {
    let mut d = FakeAdData::new(BASE, SVC_DN, SVC_PW);
    d.add(FakeEntry::new(STAFF).with("objectClass", &["top", "organizationalUnit"]));
    for i in 0..users {
        d.add(user(i));
    }
    let members: Vec<String> = (0..users).map(user_dn).collect();
    d.add(
        FakeEntry::new(BIG_GROUP)
            .with("objectClass", &["top", "group"])
            .with("name", &["Big"])
            .with("member", &members),
    );
    d
}

fn dir(url: &str, query_size_limit: u32, timeout_seconds: u32) -> Directory {
    Directory {
        source: DirectorySource::ActiveDirectory,
        servers: vec![url.to_string()],
        query_size_limit,
        timeout_seconds,
        ..Directory::default()
    }
}

fn svc() -> Bind {
    Bind {
        kind: BindType::Simple,
        dn: SVC_DN.to_string(),
        ..Bind::default()
    }
}

async fn client(ad: &FakeAd, query_size_limit: u32, timeout_seconds: u32) -> Client {
    connect(
        &dir(&ad.url, query_size_limit, timeout_seconds),
        &svc(),
        Some(SVC_PW),
    )
    .await
    .unwrap()
}

fn attrs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The searches other than the RootDSE read.
fn searches(ad: &FakeAd) -> Vec<FakeSearch> {
    ad.searches()
        .into_iter()
        .filter(|s| !s.base.is_empty())
        .collect()
}

#[tokio::test]
async fn looks_like_active_directory() {
    let ad = FakeAd::start(data(3));
    let c = client(&ad, 1000, 5).await;
    let caps = c.capabilities();
    assert_eq!(caps.vendor, Vendor::ActiveDirectory, "{caps:?}");
    assert!(caps.paged_results && caps.dirsync && caps.usn, "{caps:?}");
    assert_eq!(c.base_dn(), BASE);
    assert_eq!(caps.dns_host_name.as_deref(), Some("dc1.fake.test"));
    c.unbind().await;
    // a wrong password is refused like AD does (data 52e)
    let err = connect(&dir(&ad.url, 1000, 5), &svc(), Some("wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LdapError::InvalidCredentials { detail, .. } if detail.contains("data 52e")),
        "{err}"
    );
}

// ---- (a) range truncation ----

const GROUP_SIZE: usize = 3200;

#[tokio::test]
async fn read_all_values_follows_automatic_range_truncation() {
    let ad = FakeAd::start(data(GROUP_SIZE));
    let mut c = client(&ad, 1000, 5).await;

    // what AD does to a plain request: the first 1500 values, renamed
    let e = c
        .read(BIG_GROUP, &attrs(&["member"]))
        .await
        .unwrap()
        .unwrap();
    assert!(e.strs("member").is_empty(), "{e:?}");
    assert_eq!(e.strs("member;range=0-1499").len(), 1500);

    ad.clear_searches();
    let members = c
        .read_all_values(BIG_GROUP, "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(members.len(), GROUP_SIZE);
    let distinct: HashSet<&String> = members.iter().collect();
    assert_eq!(distinct.len(), GROUP_SIZE);
    assert!((0..GROUP_SIZE).all(|i| distinct.contains(&user_dn(i))));
    // 0-* comes back as 0-1499, then 1500-2999, then the last chunk 3000-*
    let asked: Vec<Vec<String>> = searches(&ad).into_iter().map(|s| s.attrs).collect();
    assert_eq!(
        asked,
        vec![
            attrs(&["member;range=0-*"]),
            attrs(&["member;range=1500-*"]),
            attrs(&["member;range=3000-*"]),
        ]
    );
}

#[tokio::test]
async fn read_all_values_with_a_range_step_larger_or_smaller_than_the_server_cap() {
    let ad = FakeAd::start(data(GROUP_SIZE));
    let mut c = client(&ad, 1000, 5).await;
    // asks for more than the server gives per request: follows its ranges
    c.set_range_step(Some(5000));
    let members = c
        .read_all_values(BIG_GROUP, "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(members.iter().collect::<HashSet<_>>().len(), GROUP_SIZE);
    assert_eq!(members.len(), GROUP_SIZE);
    // a smaller step: 1000 values a request, the last one 3000-3999 -> 3000-*
    c.set_range_step(Some(1000));
    ad.clear_searches();
    let members = c
        .read_all_values(BIG_GROUP, "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(members.len(), GROUP_SIZE);
    assert_eq!(members.iter().collect::<HashSet<_>>().len(), GROUP_SIZE);
    assert_eq!(searches(&ad).len(), 4);
    // a group small enough to come whole, and a missing one
    let mut d = data(0);
    d.add(
        FakeEntry::new("CN=Small,DC=fake,DC=test")
            .with("objectClass", &["group"])
            .with("member", &[user_dn(1), user_dn(2)]),
    );
    ad.update(|x| *x = d);
    c.set_range_step(None);
    let small = c
        .read_all_values("CN=Small,DC=fake,DC=test", "member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(small, vec![user_dn(1), user_dn(2)]);
    assert_eq!(
        c.read_all_values("CN=Nope,DC=fake,DC=test", "member")
            .await
            .unwrap(),
        None
    );
}

// ---- (b) the page cap ----

#[tokio::test]
async fn paged_search_under_the_server_page_cap_returns_every_entry_once() {
    const USERS: usize = 1250;
    let mut d = data(USERS);
    d.max_page_size = 300;
    let ad = FakeAd::start(d);
    // the client asks pages of 500; the server gives 300 at most
    let mut c = client(&ad, 500, 5).await;
    ad.clear_searches();
    let mut seen = HashSet::new();
    let mut dupes = 0;
    let n = c
        .search_each(
            BASE,
            Scope::Subtree,
            "(&(objectCategory=person)(objectClass=user))",
            &attrs(&["sAMAccountName"]),
            &mut |e| {
                assert!(e.first_str("samaccountname").is_some(), "{e:?}");
                if !seen.insert(e.dn.to_lowercase()) {
                    dupes += 1;
                }
            },
        )
        .await
        .unwrap();
    assert_eq!((n, seen.len(), dupes), (USERS, USERS, 0));
    let pages = searches(&ad);
    assert_eq!(pages.len(), 5, "{pages:?}"); // 300 * 4 + 50
    assert!(pages.iter().all(|p| p.page_size == Some(500)), "{pages:?}");
    assert_eq!(
        pages.iter().map(|p| p.entries_sent).collect::<Vec<_>>(),
        vec![300, 300, 300, 300, 50]
    );

    // AD's default cap (1000) with a client limit above it: asks 1000 a page
    ad.update(|d| d.max_page_size = 1000);
    let mut c = client(&ad, 5000, 5).await;
    ad.clear_searches();
    let all = c
        .search_all(
            BASE,
            Scope::Subtree,
            "(objectClass=user)",
            &attrs(&["name"]),
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|e| e.dn.as_str())
            .collect::<HashSet<_>>()
            .len(),
        USERS
    );
    assert_eq!(all.len(), USERS);
    let pages = searches(&ad);
    assert_eq!(
        pages.iter().map(|p| p.entries_sent).collect::<Vec<_>>(),
        vec![1000, 250]
    );
}

// ---- (c) DirSync rounds ----

#[tokio::test]
async fn dirsync_loops_over_more_results_rounds() {
    const USERS: usize = 25;
    let mut d = data(USERS);
    d.dirsync_round = 7;
    let ad = FakeAd::start(d);
    let mut c = client(&ad, 1000, 5).await;
    ad.clear_searches();
    let mut seen = Vec::new();
    let r = c
        .dirsync_each(
            BASE,
            "(objectClass=user)",
            &attrs(&["objectGUID", "sAMAccountName"]),
            &[],
            DIRSYNC_INCREMENTAL_VALUES,
            &mut |e| seen.push(e.dn),
        )
        .await
        .unwrap();
    assert_eq!(r.entries, USERS);
    assert_eq!(seen.len(), USERS);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), USERS);
    let rounds = searches(&ad);
    // 7 + 7 + 7 + 4; each round sends the cookie of the one before
    assert_eq!(
        rounds.iter().map(|s| s.entries_sent).collect::<Vec<_>>(),
        vec![7, 7, 7, 4]
    );
    let sent: Vec<(i64, Vec<u8>)> = rounds.iter().map(|s| s.dirsync.clone().unwrap()).collect();
    // the flags went out as a 4-byte signed INTEGER (0x80000000 = i32::MIN)
    assert!(sent
        .iter()
        .all(|(f, _)| *f == i64::from(DIRSYNC_INCREMENTAL_VALUES as i32)));
    assert!(sent[0].1.is_empty());
    assert!(sent[1..].iter().all(|(_, c)| !c.is_empty()));
    assert_eq!(
        sent.iter()
            .map(|(_, c)| c.clone())
            .collect::<HashSet<_>>()
            .len(),
        4,
        "a new cookie every round"
    );
    // the final cookie is the last round's: nothing changed since
    let mut again = 0;
    let r2 = c
        .dirsync_each(BASE, "(objectClass=user)", &[], &r.cookie, 0, &mut |_| {
            again += 1
        })
        .await
        .unwrap();
    assert_eq!((again, r2.entries), (0, 0));
    assert_eq!(r2.cookie, r.cookie);

    // 10 users change: two rounds of changes, each delivered once
    ad.update(|d| {
        for i in 5..15 {
            assert!(d.touch(&user_dn(i)));
        }
    });
    let mut changed = Vec::new();
    let r3 = c
        .dirsync_each(BASE, "(objectClass=user)", &[], &r2.cookie, 0, &mut |e| {
            changed.push(e.dn)
        })
        .await
        .unwrap();
    let mut want: Vec<String> = (5..15).map(user_dn).collect();
    changed.sort();
    want.sort();
    assert_eq!(changed, want);
    assert_eq!(r3.entries, 10);
    assert_ne!(r3.cookie, r2.cookie);
    let mut none = 0;
    c.dirsync_each(BASE, "(objectClass=user)", &[], &r3.cookie, 0, &mut |_| {
        none += 1
    })
    .await
    .unwrap();
    assert_eq!(none, 0);
}

// ---- (d) connection lost or stalled mid-search ----

#[tokio::test]
async fn a_connection_dropped_mid_search_is_an_error() {
    let mut d = data(1500);
    d.drop_after = Some(1200); // in the second page
    let ad = FakeAd::start(d);
    let mut c = client(&ad, 1000, 5).await;
    let mut got = 0;
    let err = c
        .search_each(BASE, Scope::Subtree, "(objectClass=user)", &[], &mut |_| {
            got += 1
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LdapError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&ad.url), "{err}");
    assert_eq!(got, 1200);

    // in the first (only) page, and during a DirSync round and a range read
    ad.update(|d| d.drop_after = Some(10));
    let mut c = client(&ad, 1000, 5).await;
    let err = c
        .search_all(BASE, Scope::Subtree, "(objectClass=user)", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, LdapError::Connect { .. }), "{err}");
    let mut c = client(&ad, 1000, 5).await;
    let err = c
        .dirsync_each(BASE, "(objectClass=user)", &[], &[], 0, &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, LdapError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&ad.url), "{err}");
    ad.update(|d| d.drop_after = Some(0));
    let mut c = client(&ad, 1000, 5).await;
    let err = c.read_all_values(BIG_GROUP, "member").await.unwrap_err();
    assert!(matches!(err, LdapError::Connect { .. }), "{err}");
    // the same search is complete once the server behaves
    ad.update(|d| d.drop_after = None);
    let mut c = client(&ad, 1000, 5).await;
    let all = c
        .search_all(BASE, Scope::Subtree, "(objectClass=user)", &[])
        .await
        .unwrap();
    assert_eq!(all.len(), 1500);
}

#[tokio::test]
async fn a_server_that_stops_answering_mid_search_is_a_timeout() {
    let mut d = data(1500);
    d.hang_after = Some(1100); // in the second page
    d.dirsync_round = 600;
    let ad = FakeAd::start(d);
    let mut c = client(&ad, 1000, 1).await;
    let mut got = 0;
    let err = c
        .search_each(BASE, Scope::Subtree, "(objectClass=user)", &[], &mut |_| {
            got += 1
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LdapError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&ad.url), "{err}");
    assert_eq!(got, 1100);

    // DirSync stalling in its second round: an error, not the first round's cookie
    ad.update(|d| d.hang_after = Some(700));
    let mut c = client(&ad, 1000, 1).await;
    let mut got = 0;
    let err = c
        .dirsync_each(BASE, "(objectClass=user)", &[], &[], 0, &mut |_| got += 1)
        .await
        .unwrap_err();
    assert!(matches!(err, LdapError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&ad.url), "{err}");
    assert_eq!(got, 700);
}
