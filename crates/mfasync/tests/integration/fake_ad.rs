//! End to end against `mfasync_testkit::FakeAd`, an in-process fake of the
//! Active Directory behaviours no real server here shows: a security group
//! of 3200 members behind AD's automatic range truncation (member;range=0-1499,
//! 1500-2999, 3000-*), read without Attribute Scoped Queries, and the user
//! search under AD's page cap. Everything else runs against Samba (samba.rs).

use crate::common::{counts, Mfa};
use mfasync_testkit::{FakeAd, FakeAdData, FakeEntry};
use std::collections::HashSet;

const BASE: &str = "DC=fake,DC=test";
const SVC_DN: &str = "CN=svc,CN=Users,DC=fake,DC=test";
const SVC_PW: &str = "svc-secret-pw";
const GROUP: &str = "CN=mfa-big,OU=Groups,DC=fake,DC=test";
const MEMBERS: usize = 3200;
const OTHERS: usize = 40;

fn user_dn(i: usize) -> String {
    format!("CN=User {i:05},OU=Staff,{BASE}")
}

fn directory() -> FakeAdData {
    let mut d = FakeAdData::new(BASE, SVC_DN, SVC_PW);
    d.max_page_size = 700;
    for ou in ["Staff", "Groups"] {
        d.add(
            FakeEntry::new(&format!("OU={ou},{BASE}"))
                .with("objectClass", &["top", "organizationalUnit"])
                .with("name", &[ou]),
        );
    }
    for i in 0..MEMBERS + OTHERS {
        d.add(
            FakeEntry::numbered_user(&user_dn(i), i)
                .with("userPrincipalName", &[format!("user{i:05}@fake.test")])
                // 16 bytes, like a GUID
                .with("objectGUID", &[format!("guid{i:012}")])
                .with("userAccountControl", &["512"]),
        );
    }
    // the first MEMBERS users are members; the others are not
    let members: Vec<String> = (0..MEMBERS).map(user_dn).collect();
    d.add(
        FakeEntry::new(GROUP)
            .with("objectClass", &["top", "group"])
            .with("objectCategory", &["group"])
            .with("groupType", &["-2147483646"])
            .with("name", &["mfa-big"])
            .with("sAMAccountName", &["mfa-big"])
            .with("member", &members),
    );
    d
}

/// The configuration for the fake at `url`: `directory` more lines of
/// `[directory]`, one sync item (`item`: its keys).
fn config(url: &str, directory: &str, item: &str) -> String {
    format!(
        r#"
[directory]
source = "ldap"
servers = ["{url}"]
base_dn = "{BASE}"
query_size_limit = 1000
{directory}
[directory.query_bind]
type = "simple"
dn = "{SVC_DN}"
password = "{SVC_PW}"
[[sync.items]]
{item}
"#
    )
}

#[test]
fn a_group_of_3200_behind_range_truncation_syncs_every_member() {
    let ad = FakeAd::start(directory());
    let m = Mfa::new();
    m.apply(&config(
        &ad.url,
        "use_attribute_scope_queries = false",
        &format!("kind = \"security-group\"\ndn = \"{GROUP}\""),
    ));
    let r = m.sync_full();
    assert_eq!(counts(&r), (MEMBERS as u64, 0, 0, 0, 0, 0), "{r}");
    let users = m.users();
    let names: HashSet<String> = users
        .iter()
        .map(|u| u["username"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!((users.len(), names.len()), (MEMBERS, MEMBERS));
    assert!((0..MEMBERS).all(|i| names.contains(&format!("user{i:05}@fake.test"))));
    assert!(!names.contains(&format!("user{MEMBERS:05}@fake.test")));
    // the member values came in AD's chunks
    let asked: Vec<Vec<String>> = ad
        .searches()
        .into_iter()
        .filter(|s| s.base == GROUP && s.attrs.iter().any(|a| a.starts_with("member")))
        .map(|s| s.attrs)
        .collect();
    assert_eq!(
        asked,
        vec![
            vec!["member;range=0-*".to_string()],
            vec!["member;range=1500-*".to_string()],
            vec!["member;range=3000-*".to_string()],
        ]
    );
    // nothing changed: a second full cycle changes nothing
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, MEMBERS as u64));
}

/// A full read has a second connection of its own only when that connection
/// reaches the same DC (its RootDSE's dnsHostName): behind a name several DCs
/// answer for, the read stays on the first connection, where the cycle's
/// starting point was taken.
#[test]
fn the_read_stays_on_the_first_connection_when_the_second_reaches_another_dc() {
    for later in ["", "dc2.fake.test"] {
        let mut d = directory();
        d.later_dns_host_name = later.to_string();
        let ad = FakeAd::start(d);
        let m = Mfa::new();
        m.apply(&config(
            &ad.url,
            "",
            &format!("kind = \"container\"\ndn = \"OU=Staff,{BASE}\""),
        ));
        // (`config apply` looked the item up: the sync's connection is the first again)
        ad.forget_rootdse_readers();
        ad.clear_searches();
        let r = m.sync_full();
        let all = (MEMBERS + OTHERS) as u64;
        assert_eq!(counts(&r), (all, 0, 0, 0, 0, 0), "{later:?}: {r}");
        let searches = ad.searches();
        let first = searches
            .iter()
            .find(|s| s.base == format!("OU=Staff,{BASE}") && s.scope == 0)
            .map(|s| s.connection)
            .expect("the item was checked");
        let read: HashSet<usize> = searches
            .iter()
            .filter(|s| s.base == BASE && s.scope == 2 && s.dirsync.is_none())
            .map(|s| s.connection)
            .collect();
        if later.is_empty() {
            assert_eq!(read.len(), 1, "{searches:?}");
            assert!(!read.contains(&first), "read on a connection of its own");
        } else {
            assert_eq!(read, HashSet::from([first]), "read on the first connection");
        }
    }
}

/// A full read the server cuts short (the connection lost after 1000
/// entries) still creates and updates the users it read, but disables and
/// removes nobody, says why (`sync --json`, history) and keeps no starting
/// point: the next cycle reads everything again and then removes who left.
#[test]
fn a_read_cut_short_creates_and_updates_but_departs_no_one() {
    let ad = FakeAd::start(directory());
    let m = Mfa::new();
    m.apply(&config(
        &ad.url,
        "",
        &format!("kind = \"container\"\ndn = \"OU=Staff,{BASE}\""),
    ));
    let all = (MEMBERS + OTHERS) as u64;
    assert_eq!(counts(&m.sync_full()), (all, 0, 0, 0, 0, 0));

    // a user added (among the first read), one changed, one deleted (after the cut)
    ad.update(|d| {
        d.entries.retain(|e| e.dn != user_dn(3000));
        d.add(
            FakeEntry::numbered_user(&user_dn(99_999), 99_999)
                .with("userPrincipalName", &["user99999@fake.test"])
                .with("objectGUID", &["guid000000099999"])
                .with("userAccountControl", &["512"]),
        );
        // (the fake answers in the order of its entries: the new one among the first)
        if let Some(new) = d.entries.pop() {
            d.entries.insert(3, new);
        }
        if let Some(e) = d.entries.iter_mut().find(|e| e.dn == user_dn(0)) {
            *e = e.clone().with("givenName", &["Renamed"]);
        }
        d.touch(&user_dn(0));
        d.drop_after = Some(1000);
    });
    let r = m.sync_full();
    let (created, updated, enabled, disabled, removed, unchanged) = counts(&r);
    assert_eq!(
        (created, updated, enabled, disabled, removed),
        (1, 1, 0, 0, 0),
        "{r}"
    );
    assert!(unchanged + 2 < all, "only part was read: {r}");
    let why = r["read_incomplete"].as_str().unwrap_or_default();
    assert!(why.contains(&ad.url), "the reason names the server: {r}");
    let history = m.ok(&["--json", "history"]).json();
    let note = history[0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("read cut short"), "{history}");
    let users = m.users();
    assert_eq!(users.len() as u64, all + 1, "nobody departed");
    assert!(users.iter().any(|u| u["username"] == "user99999@fake.test"));
    assert!(users
        .iter()
        .any(|u| u["username"] == "user00000@fake.test" && u["first_name"] == "Renamed"));

    // the server behaves again: the next cycle (asked incremental) is full
    // and removes the deleted user
    ad.update(|d| d.drop_after = None);
    let r = m.ok(&["--json", "sync"]).json();
    assert_eq!(r["mode"], "full", "{r}");
    assert_eq!(counts(&r), (0, 0, 0, 0, 1, all), "{r}");
    assert!(r.get("read_incomplete").is_none(), "{r}");
}
