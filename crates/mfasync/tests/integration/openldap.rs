//! End to end against a real OpenLDAP slapd: full synchronization, mapping,
//! item priority, nested containers and groups, departures, failover, safety.

use crate::common::{counts, Mfa};
use mfasync_testkit::Slapd;
use std::fmt::Write as _;
use std::sync::OnceLock;

const BASE: &str = "dc=example,dc=com";
const BIG: usize = 1700;

fn person(dn: &str, uid: &str, extra: &str) -> String {
    let sn = if extra.contains("sn:") {
        String::new()
    } else {
        format!("sn: {uid}\n")
    };
    format!("dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n{sn}{extra}\n")
}

fn ou(dn: &str) -> String {
    let name = dn
        .split(',')
        .next()
        .and_then(|r| r.split('=').nth(1))
        .unwrap_or("x");
    format!("dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n\n")
}

fn fixture() -> String {
    let mut l = String::new();
    for o in [
        "ou=People",
        "ou=Sales,ou=People",
        "ou=EMEA,ou=Sales,ou=People",
        "ou=Engineering,ou=People",
        "ou=Groups",
        "ou=Bulk",
        "ou=Elsewhere",
        "ou=MoveDisable",
        "ou=MoveRemove",
        "ou=MoveKeep",
        "ou=Flat",
        "ou=Sub,ou=Flat",
        "ou=Safety",
        "ou=AuthOn",
        "ou=AuthOff",
        "ou=ScopeIn",
        "ou=ScopeOut",
    ] {
        l.push_str(&ou(&format!("{o},{BASE}")));
    }
    l.push_str(&person(
        &format!("uid=alice,ou=Sales,ou=People,{BASE}"),
        "alice",
        "givenName: Alice\nsn: Adams\nmail: alice@example.com\ntelephoneNumber: +1 425 555 0100 x123\nmobile: (425) 555-0101\ndescription: Sales lead\n",
    ));
    l.push_str(&person(
        &format!("uid=bob,ou=EMEA,ou=Sales,ou=People,{BASE}"),
        "bob",
        "givenName: Bob\nmobile: +44 20 7946 0958\n",
    ));
    l.push_str(&person(
        &format!("cn=Smith\\, John,ou=Engineering,ou=People,{BASE}"),
        "jsmith",
        "givenName: John\ntelephoneNumber: 425 555 0199\n",
    ));
    l.push_str(&person(
        &format!("uid=jmuller,ou=Engineering,ou=People,{BASE}"),
        "jmuller",
        "givenName:: Sm9zw6k=\nsn:: TcO8bGxlcg==\n",
    ));
    l.push_str(&person(
        &format!("uid=carol,ou=Engineering,ou=People,{BASE}"),
        "carol",
        "mail: carol@example.com\n",
    ));
    l.push_str(&person(
        &format!("uid=outsider,ou=Elsewhere,{BASE}"),
        "outsider",
        "",
    ));
    for (o, n) in [
        ("MoveDisable", "md"),
        ("MoveRemove", "mr"),
        ("MoveKeep", "mk"),
    ] {
        for i in 1..=3 {
            l.push_str(&person(
                &format!("uid={n}{i},ou={o},{BASE}"),
                &format!("{n}{i}"),
                "",
            ));
        }
    }
    l.push_str(&person(&format!("uid=flat1,ou=Flat,{BASE}"), "flat1", ""));
    l.push_str(&person(
        &format!("uid=deep1,ou=Sub,ou=Flat,{BASE}"),
        "deep1",
        "",
    ));
    for i in 1..=3 {
        l.push_str(&person(
            &format!("uid=safe{i},ou=Safety,{BASE}"),
            &format!("safe{i}"),
            "",
        ));
    }
    l.push_str(&person(
        &format!("uid=authuser,ou=AuthOn,{BASE}"),
        "authuser",
        "userPassword: right-Passw0rd\n",
    ));
    l.push_str(&person(
        &format!("uid=offuser,ou=AuthOff,{BASE}"),
        "offuser",
        "userPassword: off-Passw0rd\n",
    ));
    l.push_str(&person(
        &format!("uid=nomfa,ou=Elsewhere,{BASE}"),
        "nomfa",
        "userPassword: nomfa-Passw0rd\n",
    ));
    for i in 0..BIG {
        l.push_str(&person(
            &format!("uid=bulk{i:05},ou=Bulk,{BASE}"),
            &format!("bulk{i:05}"),
            "",
        ));
    }
    let _ = writeln!(
        l,
        "dn: cn=mfa-users,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: mfa-users\nmember: uid=alice,ou=Sales,ou=People,{BASE}\nmember: uid=carol,ou=Engineering,ou=People,{BASE}\nmember: uid=outsider,ou=Elsewhere,{BASE}\n"
    );
    let _ = writeln!(
        l,
        "dn: cn=mfa-inner,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: mfa-inner\nmember: uid=bob,ou=EMEA,ou=Sales,ou=People,{BASE}\n"
    );
    let _ = writeln!(
        l,
        "dn: cn=mfa-outer,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: mfa-outer\nmember: cn=mfa-inner,ou=Groups,{BASE}\nmember: uid=jmuller,ou=Engineering,ou=People,{BASE}\n"
    );
    let _ = write!(
        l,
        "dn: cn=big,ou=Groups,{BASE}\nobjectClass: groupOfNames\ncn: big\n"
    );
    for i in 0..BIG {
        let _ = writeln!(l, "member: uid=bulk{i:05},ou=Bulk,{BASE}");
    }
    l
}

/// Users of `scope_users_left_by_a_move_or_a_filter_are_disabled_not_deleted`.
fn scope_fixture() -> String {
    let mut l = String::new();
    for i in 1..=4 {
        l.push_str(&person(
            &format!("uid=sc{i},ou=ScopeIn,{BASE}"),
            &format!("sc{i}"),
            &format!("mobile: +1 425 555 02{i:02}\n"),
        ));
    }
    l
}

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| Slapd::start(&format!("{}\n{}", fixture(), scope_fixture())))
}

/// A configuration for the shared slapd with the given items (TOML text).
fn config(servers: &str, items: &str) -> String {
    let s = slapd();
    let head =
        crate::common::openldap_directory(servers, BASE, 3, (&s.admin_dn, &s.admin_password));
    format!("{head}{items}\n")
}

fn server() -> String {
    format!("\"{}\"", slapd().url)
}

fn item(kind: &str, dn: &str, extra: &str) -> String {
    format!("[[sync.items]]\nkind = \"{kind}\"\ndn = \"{dn}\"\n{extra}\n")
}

#[test]
fn full_sync_maps_every_field_and_second_sync_changes_nothing() {
    let m = Mfa::new();
    let items = [
        item("container", &format!("ou=Sales,ou=People,{BASE}"), "[sync.items.user]\nphone = \"business\"\nbackup_phone = \"mobile\"\ncountry_code = \"1\""),
        item("security-group", &format!("cn=mfa-users,ou=Groups,{BASE}"), "[sync.items.user]\nmethod = \"text-message\"\nphone = \"mobile\"\nlanguage = \"de\""),
        item("container", &format!("ou=Engineering,ou=People,{BASE}"), "[sync.items.user]\nphone = \"business\""),
    ]
    .concat();
    m.apply(&config(&server(), &items));
    let first = m.sync_full();
    assert_eq!(first["mode"], "full");
    // Sales: alice, bob (nested EMEA); group: carol, outsider (alice already taken by Sales); Engineering: jsmith, jmuller
    assert_eq!(counts(&first), (6, 0, 0, 0, 0, 0), "{first}");

    let alice = m.user("alice").expect("alice");
    assert_eq!(alice["first_name"], "Alice");
    assert_eq!(alice["last_name"], "Adams");
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["description"], "Sales lead");
    assert_eq!(alice["business_phone"], "+1 425 555 0100");
    assert_eq!(alice["mobile_phone"], "(425) 555-0101");
    assert_eq!(alice["primary_phone"], "+14255550100");
    assert_eq!(alice["extension"], "123");
    assert_eq!(alice["backup_phone"], "+14255550101");
    assert_eq!(alice["method"], "phone-call");
    assert_eq!(alice["language"], "en");
    assert_eq!(alice["enabled"], true);
    assert_eq!(alice["source"], "directory");
    assert_eq!(
        alice["sync_item"],
        format!("ou=Sales,ou=People,{BASE}"),
        "first item wins over the group"
    );
    assert_eq!(alice["dn"], format!("uid=alice,ou=Sales,ou=People,{BASE}"));
    assert_eq!(alice["home_phone"], serde_json::Value::Null);
    let id = alice["directory_id"].as_str().expect("directory_id");
    assert_eq!(id.len(), 36, "entryUUID text form: {id}");

    let bob = m.user("bob").expect("bob from the nested OU");
    assert_eq!(
        bob["primary_phone"],
        serde_json::Value::Null,
        "bob has no business phone"
    );
    assert_eq!(bob["backup_phone"], "+442079460958");

    let carol = m.user("carol").expect("carol via the group");
    assert_eq!(carol["sync_item"], format!("cn=mfa-users,ou=Groups,{BASE}"));
    assert_eq!(carol["method"], "text-message");
    assert_eq!(carol["language"], "de");
    assert!(
        m.user("outsider").is_some(),
        "group members outside the items' OUs are synced"
    );

    let smith = m.user("jsmith").expect("escaped comma DN");
    assert_eq!(
        smith["dn"],
        format!("cn=Smith\\, John,ou=Engineering,ou=People,{BASE}")
    );
    assert_eq!(smith["primary_phone"], "+14255550199");
    let jm = m.user("jmuller").expect("non-ASCII names");
    assert_eq!(jm["first_name"], "José");
    assert_eq!(jm["last_name"], "Müller");

    let second = m.sync_full();
    assert_eq!(counts(&second), (0, 0, 0, 0, 0, 6), "{second}");

    // --plan changes nothing and lists changes
    let plan = m.ok(&["--json", "sync", "--plan"]).json();
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(0));
}

#[test]
fn big_group_and_nested_groups() {
    let m = Mfa::new();
    let items = [
        item("security-group", &format!("cn=big,ou=Groups,{BASE}"), ""),
        item(
            "security-group",
            &format!("cn=mfa-outer,ou=Groups,{BASE}"),
            "include_nested = true",
        ),
    ]
    .concat();
    m.apply(&config(&server(), &items));
    let r = m.sync_full();
    assert_eq!(counts(&r).0, BIG as u64 + 2, "{r}");
    assert!(m.user("bob").is_some(), "member of the nested group");
    assert!(m.user("jmuller").is_some());
    assert!(m.user(&format!("bulk{:05}", BIG - 1)).is_some());

    // without include_nested only direct members count
    let m2 = Mfa::new();
    m2.apply(&config(
        &server(),
        &item(
            "security-group",
            &format!("cn=mfa-outer,ou=Groups,{BASE}"),
            "include_nested = false",
        ),
    ));
    m2.sync_full();
    assert!(m2.user("bob").is_none());
    assert!(m2.user("jmuller").is_some());
}

#[test]
fn one_level_container_skips_sub_containers() {
    let m = Mfa::new();
    m.apply(&config(
        &server(),
        &item(
            "container",
            &format!("ou=Flat,{BASE}"),
            "include_nested = false",
        ),
    ));
    m.sync_full();
    assert!(m.user("flat1").is_some());
    assert!(m.user("deep1").is_none());
}

fn move_out(ou: &str, uid: &str) {
    slapd().ldapmodify(&format!(
        "dn: uid={uid},ou={ou},{BASE}\nchangetype: modrdn\nnewrdn: uid={uid}\ndeleteoldrdn: 1\nnewsuperior: ou=Elsewhere,{BASE}\n"
    ));
}

#[test]
fn users_leaving_an_item_follow_when_removed() {
    for (ou, prefix, when) in [
        ("MoveDisable", "md", "disable"),
        ("MoveRemove", "mr", "remove"),
        ("MoveKeep", "mk", "keep"),
    ] {
        let m = Mfa::new();
        m.apply(&config(
            &server(),
            &item(
                "container",
                &format!("ou={ou},{BASE}"),
                &format!("when_removed = \"{when}\""),
            ),
        ));
        assert_eq!(counts(&m.sync_full()).0, 3);
        move_out(ou, &format!("{prefix}1"));
        let r = m.sync_full();
        let moved = m.user(&format!("{prefix}1"));
        match when {
            "disable" => {
                assert_eq!(counts(&r).3, 1, "{r}");
                assert_eq!(moved.expect("still there")["enabled"], false);
            }
            "remove" => {
                assert_eq!(counts(&r).4, 1, "{r}");
                assert!(moved.is_none());
            }
            _ => {
                assert_eq!(counts(&r), (0, 0, 0, 0, 0, 3), "{r}");
                assert_eq!(moved.expect("kept")["enabled"], true);
            }
        }
        assert_eq!(
            m.user(&format!("{prefix}2")).expect("stays")["enabled"],
            true
        );
    }
}

/// Issue 19: a user moved out of the base DN and a user excluded by an
/// edit of `[filters] user` still exist: they follow their item's
/// `when_removed` (disable) and keep their phones; only a user deleted in the
/// directory (its entryUUID found nowhere) is removed as deleted.
#[test]
fn scope_users_left_by_a_move_or_a_filter_are_disabled_not_deleted() {
    let s = slapd();
    let m = Mfa::new();
    let head = |filter: &str| {
        crate::common::openldap_directory(
            &server(),
            &format!("ou=ScopeIn,{BASE}"),
            3,
            (&s.admin_dn, &s.admin_password),
        )
        .replace(
            "user = \"(objectClass=inetOrgPerson)\"",
            &format!("user = \"{filter}\""),
        )
    };
    let it = item(
        "container",
        &format!("ou=ScopeIn,{BASE}"),
        "when_removed = \"disable\"\n[sync.items.user]\nphone = \"mobile\"",
    );
    m.apply(&format!(
        "{}\n[sync]\nremove_deleted_users = true\n{it}",
        head("(objectClass=inetOrgPerson)")
    ));
    assert_eq!(counts(&m.sync_full()).0, 4);
    // sc1 moves out of the base DN, sc2 is filtered out, sc3 is deleted
    s.ldapmodify(&format!(
        "dn: uid=sc1,ou=ScopeIn,{BASE}\nchangetype: modrdn\nnewrdn: uid=sc1\ndeleteoldrdn: 1\nnewsuperior: ou=ScopeOut,{BASE}\n"
    ));
    s.ldapdelete(&format!("uid=sc3,ou=ScopeIn,{BASE}"));
    m.apply(&format!(
        "{}\n[sync]\nremove_deleted_users = true\n{it}",
        head("(&(objectClass=inetOrgPerson)(!(uid=sc2)))")
    ));
    let plan = m.ok(&["sync", "--full", "--plan"]).stdout;
    assert!(
        plan.contains("disable  sc1 no longer in ou=ScopeIn"),
        "{plan}"
    );
    assert!(
        plan.contains("remove   sc3 deleted from the directory"),
        "{plan}"
    );
    let r = m.sync_full();
    assert_eq!(counts(&r), (0, 0, 0, 2, 1, 1), "{r}");
    for (name, phone) in [("sc1", "+14255550201"), ("sc2", "+14255550202")] {
        let u = m.user(name).unwrap_or_else(|| panic!("{name} kept"));
        assert_eq!(u["enabled"], false, "{u}");
        assert_eq!(u["primary_phone"], phone, "{u}");
        assert_eq!(
            u["mobile_phone"],
            format!("+1 425 555 {}", &phone[8..]),
            "{u}"
        );
    }
    assert!(m.user("sc3").is_none());
    assert_eq!(m.user("sc4").expect("stays")["enabled"], true);
    // the next cycle changes nothing (no second lookup turns them into deletions)
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 3));
}

#[test]
fn backup_server_is_used_when_the_first_is_down() {
    let m = Mfa::new();
    let dead = format!("\"ldap://127.0.0.1:{}\"", mfasync_testkit::free_port());
    m.apply(&config(
        &format!("{dead}, {}", server()),
        &item("container", &format!("ou=Flat,{BASE}"), ""),
    ));
    let r = m.sync_full();
    assert_eq!(counts(&r).0, 2, "{r}");
}

#[test]
fn directory_down_changes_nothing() {
    let m = Mfa::new();
    m.apply(&config(
        &server(),
        &item("container", &format!("ou=Flat,{BASE}"), ""),
    ));
    m.sync_full();
    let before = m.users();
    let dead = format!("\"ldap://127.0.0.1:{}\"", mfasync_testkit::free_port());
    m.apply(&config(
        &dead,
        &item("container", &format!("ou=Flat,{BASE}"), ""),
    ));
    let o = m.run(&["--json", "sync", "--full"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("127.0.0.1"),
        "names the server: {}",
        o.stderr
    );
    assert_eq!(m.users(), before);
}

#[test]
fn wrong_base_or_empty_filter_never_removes_users() {
    let m = Mfa::new();
    let it = item(
        "container",
        &format!("ou=Safety,{BASE}"),
        "when_removed = \"remove\"",
    );
    m.apply(&config(&server(), &it));
    assert_eq!(counts(&m.sync_full()).0, 3);
    let before = m.users();
    // a user filter that matches nothing
    m.apply(
        &config(&server(), &it)
            .replace("(objectClass=inetOrgPerson)", "(objectClass=nothingAtAll)"),
    );
    let o = m.run(&["sync", "--full"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(m.users(), before);
    // an item that does not exist
    m.apply(&config(
        &server(),
        &item(
            "container",
            &format!("ou=Gone,{BASE}"),
            "when_removed = \"remove\"",
        ),
    ));
    let o = m.run(&["sync", "--full"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("ou=Gone"), "{}", o.stderr);
    assert_eq!(m.users(), before);
}

#[test]
fn manual_users_are_never_touched() {
    let m = Mfa::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.expect("open store");
        for name in ["flat1", "manual-zed"] {
            store
                .insert_user(&mfasync_core::MfaUser {
                    username: name.into(),
                    enabled: true,
                    source: mfasync_core::Source::Manual,
                    ..Default::default()
                })
                .await
                .expect("insert manual user");
        }
    });
    m.apply(&config(
        &server(),
        &item(
            "container",
            &format!("ou=Flat,{BASE}"),
            "when_removed = \"remove\"",
        ),
    ));
    let o = m.ok(&["--json", "sync", "--full"]);
    let r = o.json();
    assert_eq!(
        counts(&r).0,
        1,
        "only deep1: flat1 is taken by a manual user: {r}"
    );
    assert!(
        o.stderr.contains("flat1"),
        "warns about the clash: {}",
        o.stderr
    );
    let flat1 = m.user("flat1").expect("manual flat1");
    assert_eq!(flat1["source"], "manual");
    assert_eq!(flat1["directory_id"], serde_json::Value::Null);
    assert!(m.user("manual-zed").is_some());
}

#[test]
fn config_errors_exit_2_naming_keys_and_store_nothing() {
    let m = Mfa::new();
    let p = m.config_file(
        "[directory]\nquery_size_limit = 0\nbogus = 1\n[sync]\napproval_threshold = 1000\n",
    );
    let o = m.run(&["config", "apply", p.to_str().expect("path")]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("directory.bogus"), "{}", o.stderr);
    let p = m.config_file("[directory]\nquery_size_limit = 0\n[sync]\napproval_threshold = 1000\n[filters]\nuser = \"(uid=a\"\n");
    let o = m.run(&["config", "apply", p.to_str().expect("path")]);
    assert_eq!(o.code, 2);
    for key in [
        "directory.query_size_limit",
        "sync.approval_threshold",
        "filters.user",
    ] {
        assert!(o.stderr.contains(key), "{key} missing in: {}", o.stderr);
    }
    // every type/enum error too, with the value checks, in one run
    let p = m.config_file(
        "bogus = 1\n[directory]\nquery_size_limit = \"many\"\nstarttls = 3\n\
         [directory.query_bind]\ntype = \"simple\"\ndn = \"cn=a,dc=b\"\npassword = \"\"\n\
         [directory.auth_bind]\ntype = \"simple\"\npassword_env = \"BIND-PW\"\n\
         [[sync.items]]\ndn = \"OU=Sales,DC=example,DC=com\"\n\
         [[sync.items]]\ndn = \"ou=sales, dc=example,  dc=com\"\nwhen_removed = \"explode\"\n\
         [sync.items.user]\nlanguage = \"english\"\nmethod = \"pigeon\"\n",
    );
    let o = m.run(&["config", "apply", "--dry-run", p.to_str().expect("path")]);
    assert_eq!(o.code, 2);
    for key in [
        "bogus: unknown key",
        "directory.query_size_limit: invalid type",
        "directory.starttls: invalid type",
        "directory.query_bind.password: is empty",
        "directory.auth_bind.password_env: \"BIND-PW\" is not an environment variable name",
        "sync.items[1].when_removed: unknown variant `explode`",
        "sync.items[1].user.method: unknown variant `pigeon`",
        "sync.items[1].user.language: \"english\" is not a language tag",
        "sync.items[1].dn: the same DN as sync.items[0].dn",
    ] {
        assert!(o.stderr.contains(key), "{key} missing in: {}", o.stderr);
    }
    let o = m.run(&["config", "export"]);
    assert_eq!(o.code, 1, "nothing was stored: {}", o.stderr);
}

#[test]
fn config_export_has_no_secrets() {
    let m = Mfa::new();
    m.apply(&config(
        &server(),
        &item("container", &format!("ou=Flat,{BASE}"), ""),
    ));
    let o = m.ok(&["config", "export"]);
    assert!(!o.stdout.contains(&slapd().admin_password), "{}", o.stdout);
    assert!(o.stdout.contains("ou=Flat"));
}

#[test]
fn auth_by_ldap_bind() {
    let m = Mfa::new();
    let items = [
        item("container", &format!("ou=AuthOn,{BASE}"), ""),
        item(
            "container",
            &format!("ou=AuthOff,{BASE}"),
            "[sync.items.user]\nenabled = false",
        ),
    ]
    .concat();
    let cfg = config(&server(), &items).replace(
        "[filters]",
        "[directory.auth_bind]\ntype = \"simple\"\n[filters]",
    );
    m.apply(&cfg);
    m.sync_full();
    let auth = |user: &str, pw: &str| {
        let o = m.run_stdin(&["--json", "auth", user, "--password-stdin"], pw);
        let v = o.json();
        (o.code, v["reason"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(auth("authuser", "right-Passw0rd\n"), (0, String::new()));
    assert_eq!(auth("authuser", "wrong"), (1, "invalid-credentials".into()));
    assert_eq!(
        auth("authuser", ""),
        (1, "invalid-credentials".into()),
        "empty password refused before any bind"
    );
    assert_eq!(
        auth("nobody", "x"),
        (1, "invalid-credentials".into()),
        "unknown users look like bad passwords"
    );
    assert_eq!(
        auth("nomfa", "nomfa-Passw0rd"),
        (1, "not-an-mfa-user".into())
    );
    assert_eq!(
        auth("offuser", "off-Passw0rd"),
        (1, "mfa-user-disabled".into())
    );
    for evil in [
        "*",
        "a*)(uid=*",
        "authuser)(|(a=*",
        "auth*",
        "authuser\\",
        "(uid=authuser)",
    ] {
        assert_eq!(
            auth(evil, "right-Passw0rd"),
            (1, "invalid-credentials".into()),
            "{evil:?} must not match authuser"
        );
    }
    // first server down: the username search and the password bind both
    // fail over to the backup server
    let dead = format!("\"ldap://127.0.0.1:{}\"", mfasync_testkit::free_port());
    m.apply(&cfg.replace(&server(), &format!("{dead}, {}", server())));
    assert_eq!(auth("authuser", "right-Passw0rd"), (0, String::new()));
    assert_eq!(auth("authuser", "wrong"), (1, "invalid-credentials".into()));
    // directory down
    m.apply(&cfg.replace(&server(), &dead));
    assert_eq!(
        auth("authuser", "right-Passw0rd"),
        (1, "directory-unavailable".into())
    );
}

#[test]
fn postgres_and_sqlite_give_the_same_users() {
    let items = [
        item("container", &format!("ou=Sales,ou=People,{BASE}"), ""),
        item(
            "security-group",
            &format!("cn=mfa-outer,ou=Groups,{BASE}"),
            "",
        ),
    ]
    .concat();
    let lite = Mfa::new();
    let pg = Mfa::with_url(mfasync_testkit::shared_postgres().fresh_database());
    for m in [&lite, &pg] {
        m.apply(&config(&server(), &items));
        // alice, bob (Sales); jmuller (the group; bob is taken by Sales)
        assert_eq!(counts(&m.sync_full()).0, 3);
        assert_eq!(counts(&m.sync_full()).5, 3, "second sync changes nothing");
    }
    assert_eq!(lite.users(), pg.users());
}

/// The stored-DN fast path of `auth` (simple bind): an enabled MFA user is
/// bound as the DN of the last sync without the username search; a DN gone
/// stale (moved or renamed account) falls back to search-then-bind.
#[test]
fn auth_binds_as_the_stored_dn_and_falls_back_when_it_moved() {
    let s = slapd();
    let on = format!("ou=AuthFast,{BASE}");
    let off = format!("ou=AuthFastOff,{BASE}");
    let policy = format!("cn=fastpolicy,{on}");
    let user = |uid: &str, ou: &str, extra: &str| {
        person(
            &format!("uid={uid},{ou}"),
            uid,
            &format!("userPassword: pw-{uid}\n{extra}"),
        )
    };
    s.ldapadd(&format!(
        "{}{}{}dn: {policy}\nobjectClass: device\nobjectClass: pwdPolicy\ncn: fastpolicy\npwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: 2\n\n{}{}{}{}{}",
        ou(&on),
        ou(&format!("ou=Moved,{on}")),
        ou(&off),
        user("fast1", &on, ""),
        user("fast2", &on, ""),
        user("fast3", &on, ""),
        user("fastlock", &on, &format!("pwdPolicySubentry: {policy}\n")),
        user("fastoff", &off, ""),
    ));
    let m = Mfa::new();
    let items = [
        item("container", &on, ""),
        item("container", &off, "[sync.items.user]\nenabled = false"),
    ]
    .concat();
    let cfg = config(&server(), &items).replace(
        "[filters]",
        "[directory.auth_bind]\ntype = \"simple\"\n[filters]",
    );
    // the same directory, but the query bind cannot search any more: only a
    // check that never searches can succeed
    let no_search = cfg.replace(
        &format!("password = \"{}\"", s.admin_password),
        "password = \"not-the-password\"",
    );
    assert_ne!(cfg, no_search);
    m.apply(&cfg);
    assert_eq!(counts(&m.sync_full()).0, 5);
    let auth = |user: &str, pw: &str| {
        let o = m.run_stdin(&["--json", "auth", user, "--password-stdin"], pw);
        let v = o.json();
        (o.code, v["reason"].as_str().unwrap_or("").to_string())
    };
    let ok = (0, String::new());
    let refused = |r: &str| (1, r.to_string());

    m.apply(&no_search);
    assert_eq!(auth("fast1", "pw-fast1"), ok, "bound as the stored DN");
    assert_eq!(
        auth("FAST1", "pw-fast1"),
        ok,
        "case-insensitive like the search"
    );
    assert_eq!(
        auth("nomfa", "nomfa-Passw0rd"),
        refused("directory-unavailable"),
        "not in the MFA database: the search is needed (and fails)"
    );
    assert_eq!(
        auth("fastoff", "pw-fastoff"),
        refused("directory-unavailable"),
        "a disabled MFA user takes the search path: nothing told before the password is checked"
    );
    assert_eq!(
        auth("fast1", "wrong"),
        refused("directory-unavailable"),
        "a refused stored-DN bind is decided by the search, as without the fast path"
    );
    for evil in ["*", "fast*", "fast1*", "a*)(uid=*", "fast1)(|(a=*"] {
        assert_eq!(
            auth(evil, "pw-fast1"),
            refused("directory-unavailable"),
            "{evil:?} must not find fast1 in the MFA database"
        );
    }

    m.apply(&cfg);
    assert_eq!(auth("fast1", "pw-fast1"), ok);
    assert_eq!(auth("fast1", "wrong"), refused("invalid-credentials"));
    assert_eq!(auth("fastoff", "pw-fastoff"), refused("mfa-user-disabled"));
    assert_eq!(auth("fastoff", "wrong"), refused("invalid-credentials"));

    // moved and renamed after the sync
    s.ldapmodify(&format!(
        "dn: uid=fast2,{on}\nchangetype: modrdn\nnewrdn: uid=fast2\ndeleteoldrdn: 1\nnewsuperior: ou=Moved,{on}\n\n\
         dn: uid=fast3,{on}\nchangetype: modrdn\nnewrdn: uid=fast3new\ndeleteoldrdn: 1\n"
    ));
    assert_eq!(auth("fast2", "pw-fast2"), ok, "moved: found by the search");
    assert_eq!(auth("fast2", "wrong"), refused("invalid-credentials"));
    assert_eq!(
        auth("fast3", "pw-fast3"),
        refused("invalid-credentials"),
        "the old name is gone from the directory"
    );
    assert_eq!(
        auth("fast3new", "pw-fast3"),
        ok,
        "the new name, by entryUUID"
    );
    m.apply(&no_search);
    assert_eq!(
        auth("fast2", "pw-fast2"),
        refused("directory-unavailable"),
        "the moved account needs the search"
    );
    m.apply(&cfg);

    // a wrong password is ONE failed bind: with pwdMaxFailure 2, one wrong
    // password and then the right one is accepted ...
    assert_eq!(auth("fastlock", "wrong"), refused("invalid-credentials"));
    assert_eq!(auth("fastlock", "pw-fastlock"), ok);
    // ... and two lock the account (the policy is in force)
    assert_eq!(auth("fastlock", "wrong"), refused("invalid-credentials"));
    assert_eq!(auth("fastlock", "wrong"), refused("invalid-credentials"));
    let (code, reason) = auth("fastlock", "pw-fastlock");
    assert_eq!(code, 1);
    assert!(
        ["account-locked", "invalid-credentials"].contains(&reason.as_str()),
        "{reason}"
    );
}

/// The stored raw stamps of directory users, by username.
fn raw_stamps(m: &Mfa) -> std::collections::BTreeMap<String, Option<String>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        let mut out = std::collections::BTreeMap::new();
        store
            .user_digests(&mut |d| {
                out.insert(d.username, d.raw_stamp);
            })
            .await
            .unwrap();
        out
    })
}

/// A full sync knows a user whose directory entry did not change by the
/// raw stamp of its row (without mapping it), and never misses what does
/// change the user: the entry, the configuration, or the row itself.
#[test]
fn raw_stamps_skip_unchanged_users_but_never_a_change() {
    let s = slapd();
    let ou = format!("ou=Stamps,{BASE}");
    let mut ldif =
        format!("dn: {ou}\nchangetype: add\nobjectClass: organizationalUnit\nou: Stamps\n\n");
    for i in 1..=3 {
        let _ = write!(
            ldif,
            "dn: uid=st{i},{ou}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: st{i}\ncn: Stamp {i}\nsn: Stamp\ntelephoneNumber: 425 555 010{i}\n\n"
        );
    }
    s.ldapmodify(&ldif);
    let m = Mfa::new();
    let with = |item_settings: &str, user_settings: &str| {
        config(
            &server(),
            &item(
                "container",
                &ou,
                &format!(
                    "{item_settings}\n[sync.items.user]\nphone = \"business\"\n{user_settings}"
                ),
            ),
        )
    };
    m.apply(&with("", "country_code = \"1\""));
    assert_eq!(counts(&m.sync_full()), (3, 0, 0, 0, 0, 0));
    let stamps = raw_stamps(&m);
    assert_eq!(stamps.len(), 3);
    assert!(stamps.values().all(Option::is_some), "stamped: {stamps:?}");
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 3));
    assert_eq!(raw_stamps(&m), stamps, "unchanged users keep their stamps");

    // the entry changes
    s.ldapmodify(&format!(
        "dn: uid=st1,{ou}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: 425 555 0199\n"
    ));
    assert_eq!(counts(&m.sync_full()), (0, 1, 0, 0, 0, 2));
    assert_eq!(m.user("st1").unwrap()["primary_phone"], "+14255550199");

    // the item's settings change, the directory does not
    m.apply(&with("", "country_code = \"44\""));
    assert_eq!(counts(&m.sync_full()), (0, 3, 0, 0, 0, 0));
    assert_eq!(m.user("st2").unwrap()["primary_phone"], "+444255550102");

    // the row changes by another writer (as an incremental cycle or an
    // administrator would): the next full sync puts the directory's value back
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        let before = store
            .users_by(mfasync_store::UserKey::UsernameLower, &["st2".to_string()])
            .await
            .unwrap()
            .remove(0);
        let mut after = before.clone();
        after.primary_phone = Some("+15550000000".into());
        let change = mfasync_core::plan::Change {
            action: mfasync_core::plan::Action::Update,
            user: after,
            before: Some(before),
            fields: vec!["primary_phone"],
            reason: None,
            raw: None,
        };
        store.apply(&[change], None).await.unwrap();
    });
    assert_eq!(
        raw_stamps(&m)["st2"],
        None,
        "a write without the entry clears the stamp"
    );
    assert_eq!(counts(&m.sync_full()), (0, 1, 0, 0, 0, 2));
    assert_eq!(m.user("st2").unwrap()["primary_phone"], "+444255550102");

    // a setting that changes no user: every user is mapped again, found
    // unchanged, and stamped anew (the next sync trusts the new stamps)
    let stamped = raw_stamps(&m);
    m.apply(&with("when_removed = \"keep\"", "country_code = \"44\""));
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 3));
    let restamped = raw_stamps(&m);
    assert!(restamped.values().all(Option::is_some), "{restamped:?}");
    for (user, stamp) in &restamped {
        assert_ne!(stamp, &stamped[user], "{user}: stamp of the new settings");
    }
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 3));
    assert_eq!(raw_stamps(&m), restamped);

    // MFASYNC_NO_RAW_STAMPS: every user mapped, no stamp written
    let fresh = Mfa::new();
    fresh.apply(&with("", "country_code = \"1\""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &fresh.url, "--json", "sync", "--full"])
        .env("MFASYNC_NO_RAW_STAMPS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let none = raw_stamps(&fresh);
    assert_eq!(none.len(), 3);
    assert!(none.values().all(Option::is_none), "{none:?}");
}

/// A store failure while a full sync reads the directory ends the sync with
/// an error naming it. (It used to leave the reader, blocked on a full entry
/// queue, and the mapping thread, waiting for the stored users, waiting on
/// each other forever: it takes more users than the queue holds.)
#[test]
fn a_store_failure_while_reading_ends_the_sync() {
    let mut ldif = format!("dn: ou=Many,{BASE}\nobjectClass: organizationalUnit\nou: Many\n\n");
    for i in 0..2500 {
        ldif.push_str(&person(
            &format!("uid=many{i},ou=Many,{BASE}"),
            &format!("many{i}"),
            "",
        ));
    }
    let s = Slapd::start(&ldif);
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        3,
        (&s.admin_dn, &s.admin_password),
    );
    let m = Mfa::new();
    m.apply(&format!(
        "{head}{}",
        item("container", &format!("ou=Many,{BASE}"), "")
    ));
    assert_eq!(counts(&m.sync_full()).0, 2500);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection as _;
        let mut c = sqlx::SqliteConnection::connect(&m.url).await.unwrap();
        sqlx::query("ALTER TABLE users RENAME COLUMN raw_stamp TO raw_stamp_gone")
            .execute(&mut c)
            .await
            .unwrap();
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "sync", "--full"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the sync still runs after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("raw_stamp"), "{err}");
}

/// A full read has a connection of its own (opened on the reading thread, to
/// the same server); a server that allows no second connection is read on
/// the first, with the same result.
#[test]
fn users_are_read_on_a_second_connection_or_on_the_first_when_refused() {
    let s = slapd();
    let proxy = mfasync_testkit::LdapProxy::start(
        s.url.trim_start_matches("ldap://"),
        // a control nobody sends: nothing is refused
        "1.3.6.1.4.1.99999.1",
    );
    let cfg = config(
        &format!("\"{}\"", proxy.url()),
        &item("container", &format!("ou=People,{BASE}"), ""),
    );
    let names = |m: &Mfa| {
        let mut v: Vec<String> = m
            .users()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let m = Mfa::new();
    m.apply(&cfg); // (connects too: it records the item's entryUUID)
    let applied = proxy.connections();
    let first = m.sync_full();
    // the connect's TCP probe, the first connection, the read's own
    assert_eq!(
        proxy.connections() - applied,
        3,
        "one connection for the read: {first}"
    );
    assert_eq!(proxy.turned_away(), 0);
    let users = names(&m);
    assert!(users.len() >= 5, "{users:?}");

    // the probe and one connection allowed: the read's is closed at once
    let other = Mfa::new();
    other.apply(&cfg);
    proxy.limit_connections(proxy.connections() + 2);
    let again = other.sync_full();
    assert_eq!(proxy.turned_away(), 1, "the read's connection was refused");
    assert_eq!(counts(&again), counts(&first), "{again}");
    assert_eq!(names(&other), users);
}

/// Issue 19 item 4 on OpenLDAP (entryUUID: the openldap schema): blank
/// filters are organizationalUnit/organization, groupOfNames/
/// groupOfUniqueNames and inetOrgPerson; the users found are those of the
/// filters written out, and `config export` names the filters in effect.
#[test]
fn blank_filters_sync_like_the_schema_defaults() {
    let items = [
        item("container", &format!("ou=Sales,ou=People,{BASE}"), ""),
        item(
            "security-group",
            &format!("cn=mfa-users,ou=Groups,{BASE}"),
            "",
        ),
    ]
    .concat();
    let written = config(&server(), &items);
    let blank = written
        .replace(
            "container = \"(objectClass=organizationalUnit)\"",
            "container = \"\"",
        )
        .replace(
            "security_group = \"(objectClass=groupOfNames)\"",
            "security_group = \" \"",
        )
        .replace("user = \"(objectClass=inetOrgPerson)\"", "user = \"\"");
    assert_eq!(blank.matches(" = \"\"").count(), 2, "{blank}");
    let mut exports = Vec::new();
    for (text, is_blank) in [(&written, false), (&blank, true)] {
        let m = Mfa::new();
        m.apply(text);
        let r = m.sync_full();
        assert!(counts(&r).0 > 0, "{r}");
        exports.push(m.users());
        if is_blank {
            let out = m.ok(&["config", "export"]).stdout;
            assert!(
                out.contains("# blank: the default of the openldap schema"),
                "{out}"
            );
            assert!(
                out.contains("#   user = \"(objectClass=inetOrgPerson)\""),
                "{out}"
            );
            assert!(out.contains("user = \"\""), "{out}");
        }
    }
    assert_eq!(exports[0], exports[1]);
}

/// slapd limits its users (not the rootdn) to 50 entries per search, and the
/// 60 users of ou=Limited all have the same cn, so neither paging nor
/// splitting the search gets past the limit: the read is cut short. A first
/// sync creates the users it read; later, with 5 users deleted and one
/// changed, the read updates the changed one and departs no one. Each run
/// says why (`read_incomplete`, the history note).
#[test]
fn a_server_size_limit_that_cannot_be_worked_around_departs_no_one() {
    let mut ldif = ou(&format!("ou=Limited,{BASE}"));
    ldif.push_str(&format!(
        "dn: uid=reader,{BASE}\nobjectClass: inetOrgPerson\nuid: reader\ncn: reader\nsn: reader\nuserPassword: reader-pw\n\n"
    ));
    for i in 1..=60 {
        ldif.push_str(&format!(
            "dn: uid=lim{i:02},ou=Limited,{BASE}\nobjectClass: inetOrgPerson\nuid: lim{i:02}\ncn: Same Name\nsn: Name\n\n"
        ));
    }
    let s = Slapd::start_with_acl(&ldif, "limits users size=50");
    let item = item("container", &format!("ou=Limited,{BASE}"), "");
    let as_reader = |timeout| {
        crate::common::openldap_directory(
            &format!("\"{}\"", s.url),
            BASE,
            timeout,
            (&format!("uid=reader,{BASE}"), "reader-pw"),
        )
    };

    // a first sync as the limited account: the users read are created
    let first = Mfa::new();
    first.apply(&format!("{}{item}\n", as_reader(5)));
    let r = first.sync_full();
    assert_eq!(counts(&r), (50, 0, 0, 0, 0, 0), "{r}");
    let why = r["read_incomplete"].as_str().unwrap_or_default();
    assert!(why.contains("size limit"), "{r}");

    // all 60 stored (the rootdn has no limit), then 5 deleted and one changed
    let m = Mfa::new();
    let admin = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        5,
        (&s.admin_dn, &s.admin_password),
    );
    m.apply(&format!("{admin}{item}\n"));
    assert_eq!(counts(&m.sync_full()), (60, 0, 0, 0, 0, 0));
    for i in 56..=60 {
        s.ldapdelete(&format!("uid=lim{i:02},ou=Limited,{BASE}"));
    }
    s.ldapmodify(&format!(
        "dn: uid=lim01,ou=Limited,{BASE}\nchangetype: modify\nreplace: mail\nmail: lim01@example.com\n"
    ));
    m.apply(&format!("{}{item}\n", as_reader(5)));
    let r = m.sync_full();
    let (created, updated, enabled, disabled, removed, _) = counts(&r);
    assert_eq!(
        (created, updated, enabled, disabled, removed),
        (0, 1, 0, 0, 0),
        "{r}"
    );
    assert!(
        r["read_incomplete"]
            .as_str()
            .is_some_and(|w| w.contains("size limit")),
        "{r}"
    );
    let history = m.ok(&["--json", "history"]).json();
    assert!(
        history[0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("read cut short")),
        "{history}"
    );
    assert_eq!(m.users().len(), 60, "nobody departed");

    // the same change read in full (the rootdn again): the 5 deleted users go
    m.apply(&format!("{admin}{item}\n"));
    let r = m.sync_full();
    assert_eq!(counts(&r).4, 5, "{r}");
    assert!(r.get("read_incomplete").is_none(), "{r}");
}

/// A cycle that creates many users while others are stored keeps the
/// creates past a limit in a temporary file (`MFASYNC_TEST_SPILL_AFTER`
/// here, 10,000 by default) and writes them at commit like any other: every
/// field, the raw stamps (the next sync finds them unchanged) and the audit.
/// The same for many updates and for many raw stamps to write; `sync
/// --plan` lists what is in the file.
#[test]
fn many_creates_updates_and_stamps_go_through_a_file() {
    let s = slapd();
    let (first, more) = (
        format!("ou=SpillFirst,{BASE}"),
        format!("ou=SpillMore,{BASE}"),
    );
    let mut ldif = String::new();
    for o in [&first, &more] {
        let name = o
            .split(',')
            .next()
            .and_then(|r| r.split('=').nth(1))
            .unwrap_or("x");
        let _ = write!(
            ldif,
            "dn: {o}\nchangetype: add\nobjectClass: organizationalUnit\nou: {name}\n\n"
        );
    }
    for i in 1..=2 {
        let _ = write!(
            ldif,
            "dn: uid=spf{i},{first}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: spf{i}\ncn: F {i}\nsn: F\ntelephoneNumber: 425 555 01{i:02}\n\n"
        );
    }
    for i in 1..=40 {
        let _ = write!(
            ldif,
            "dn: uid=spm{i},{more}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: spm{i}\ncn: M {i}\nsn: More\nmail: spm{i}@example.com\ndescription: bulk {i}\ntelephoneNumber: 425 555 02{i:02}\nmobile: 425 555 03{i:02}\n\n"
        );
    }
    s.ldapmodify(&ldif);
    let user =
        "[sync.items.user]\nphone = \"business\"\nbackup_phone = \"mobile\"\ncountry_code = \"1\"";
    let mut m = Mfa::new();
    m.apply(&config(&server(), &item("container", &first, user)));
    assert_eq!(counts(&m.sync_full()), (2, 0, 0, 0, 0, 0));

    m.env.push(("MFASYNC_TEST_SPILL_AFTER".into(), "5".into()));
    m.env
        .push(("MFASYNC_LOG".into(), "mfasync::sync=info".into()));
    let items = [
        item("container", &first, user),
        item("container", &more, user),
    ]
    .concat();
    m.apply(&config(&server(), &items));
    // the plan lists every create, those from the file included
    let plan = m.ok(&["--json", "sync", "--plan"]);
    assert!(
        plan.stderr
            .contains("changes kept in a temporary file changes=35"),
        "{}",
        plan.stderr
    );
    let plan = plan.json();
    assert_eq!(counts(&plan), (40, 0, 0, 0, 0, 2), "{plan}");
    let mut listed: Vec<String> = plan["changes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|ch| {
                    format!(
                        "{} {}",
                        ch["action"].as_str().unwrap_or(""),
                        ch["username"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    listed.sort();
    let mut want: Vec<String> = (1..=40).map(|i| format!("create spm{i}")).collect();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(m.users().len(), 2, "a plan changes nothing");
    let out = m.ok(&["--json", "sync", "--full"]);
    assert_eq!(counts(&out.json()), (40, 0, 0, 0, 0, 2), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("changes kept in a temporary file changes=35"),
        "35 of the 40 creates went through the file: {}",
        out.stderr
    );
    assert_eq!(m.users().len(), 42);
    for i in [1, 6, 40] {
        let u = m.user(&format!("spm{i}")).expect("created");
        assert_eq!(u["email"], format!("spm{i}@example.com"));
        assert_eq!(u["description"], format!("bulk {i}"));
        assert_eq!(u["primary_phone"], format!("+1425555{:04}", 200 + i));
        assert_eq!(u["backup_phone"], format!("+1425555{:04}", 300 + i));
        assert_eq!(u["sync_item"], more);
    }
    let stamps = raw_stamps(&m);
    assert!(stamps.values().all(Option::is_some), "stamped: {stamps:?}");
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 42));
    let audit = m.ok(&["--json", "audit", "--limit", "100"]).json();
    let created = audit.as_array().map_or(0, |rows| {
        rows.iter().filter(|r| r["action"] == "create").count()
    });
    assert_eq!(created, 42, "{audit}");

    // every user changes (another country code): 5 updates held, the rest
    // through the file, listed by the plan and written by the sync
    let user44 = user.replace("country_code = \"1\"", "country_code = \"44\"");
    let items44 = [
        item("container", &first, &user44),
        item("container", &more, &user44),
    ]
    .concat();
    m.apply(&config(&server(), &items44));
    let plan = m.ok(&["--json", "sync", "--plan"]).json();
    assert_eq!(counts(&plan), (0, 42, 0, 0, 0, 0), "{plan}");
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(42));
    let out = m.ok(&["--json", "sync", "--full"]);
    assert_eq!(counts(&out.json()), (0, 42, 0, 0, 0, 0), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("changes kept in a temporary file changes=37"),
        "{}",
        out.stderr
    );
    for i in [1, 40] {
        let u = m.user(&format!("spm{i}")).expect("kept");
        assert_eq!(u["primary_phone"], format!("+44425555{:04}", 200 + i));
        assert_eq!(u["email"], format!("spm{i}@example.com"));
    }
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 42));

    // users stored without raw stamps get them, those past the limit
    // through the file
    let mut unstamped = Mfa::new();
    unstamped
        .env
        .push(("MFASYNC_NO_RAW_STAMPS".into(), "1".into()));
    unstamped.apply(&config(&server(), &items44));
    assert_eq!(counts(&unstamped.sync_full()), (42, 0, 0, 0, 0, 0));
    assert!(raw_stamps(&unstamped).values().all(Option::is_none));
    unstamped.env = m.env.clone();
    let out = unstamped.ok(&["--json", "sync", "--full"]);
    assert_eq!(counts(&out.json()), (0, 0, 0, 0, 0, 42));
    assert!(
        out.stderr
            .contains("wrote raw stamps of unchanged users users=42"),
        "5 held, 37 from the file: {}",
        out.stderr
    );
    let stamps = raw_stamps(&unstamped);
    assert!(stamps.values().all(Option::is_some), "stamped: {stamps:?}");
    assert_eq!(counts(&unstamped.sync_full()), (0, 0, 0, 0, 0, 42));
}
