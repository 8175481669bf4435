//! End to end against a real Samba AD DC (started in the private network
//! namespace of scripts/test): objectGUID, userPrincipalName with its
//! sAMAccountName backup, disabled accounts, ASQ and range retrieval.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{counts, step, Mfa};
use mfasync_testkit::Samba;
use std::fmt::Write as _;
use std::sync::OnceLock;

const BASE: &str = "DC=mfa,DC=test";
const BIG: usize = 1600;

fn user(cn: &str, ou: &str, sam: &str, extra: &str) -> String {
    format!(
        "dn: CN={cn},{ou},{BASE}\nobjectClass: user\nsAMAccountName: {sam}\nuserAccountControl: 544\n{extra}\n"
    )
}

fn fixture() -> String {
    let mut l = String::new();
    for o in [
        "OU=People",
        "OU=Sales,OU=People",
        "OU=EMEA,OU=Sales,OU=People",
        "OU=Groups",
        "OU=Bulk",
    ] {
        let name = o
            .split(',')
            .next()
            .and_then(|r| r.split('=').nth(1))
            .unwrap_or("x");
        let _ = writeln!(
            l,
            "dn: {o},{BASE}\nobjectClass: organizationalUnit\nou: {name}\n"
        );
    }
    l.push_str(&user(
        "Alice Adams",
        "OU=Sales,OU=People",
        "alice",
        "userPrincipalName: alice@mfa.test\ngivenName: Alice\nsn: Adams\nmail: alice@mfa.test\ntelephoneNumber: +1 425 555 0100 x123\nmobile: (425) 555-0101\n",
    ));
    l.push_str(&user(
        "Bob",
        "OU=EMEA,OU=Sales,OU=People",
        "bob",
        "givenName: Bob\n",
    ));
    l.push_str(&user(
        "Smith\\, John",
        "OU=People",
        "jsmith",
        "userPrincipalName: jsmith@mfa.test\n",
    ));
    l.push_str(&user(
        "Jose Muller",
        "OU=People",
        "jmuller",
        "userPrincipalName: jmuller@mfa.test\ngivenName:: Sm9zw6k=\nsn:: TcO8bGxlcg==\n",
    ));
    l.push_str(
        &user(
            "Dan Disabled",
            "OU=Sales,OU=People",
            "dan",
            "userPrincipalName: dan@mfa.test\n",
        )
        .replace("userAccountControl: 544", "userAccountControl: 546"),
    );
    for i in 0..BIG {
        l.push_str(&user(
            &format!("bulk{i:05}"),
            "OU=Bulk",
            &format!("bulk{i:05}"),
            "",
        ));
    }
    let group = |cn: &str, members: &[String]| {
        let mut g = format!("dn: CN={cn},OU=Groups,{BASE}\nobjectClass: group\nsAMAccountName: {cn}\ngroupType: -2147483646\n");
        for m in members {
            let _ = writeln!(g, "member: {m}");
        }
        g.push('\n');
        g
    };
    l.push_str(&group(
        "mfa-users",
        &[
            format!("CN=Alice Adams,OU=Sales,OU=People,{BASE}"),
            format!("CN=Smith\\, John,OU=People,{BASE}"),
        ],
    ));
    l.push_str(&group(
        "mfa-inner",
        &[format!("CN=Bob,OU=EMEA,OU=Sales,OU=People,{BASE}")],
    ));
    l.push_str(&group(
        "mfa-outer",
        &[
            format!("CN=mfa-inner,OU=Groups,{BASE}"),
            format!("CN=Jose Muller,OU=People,{BASE}"),
        ],
    ));
    let bulk: Vec<String> = (0..BIG)
        .map(|i| format!("CN=bulk{i:05},OU=Bulk,{BASE}"))
        .collect();
    l.push_str(&group("big", &bulk));
    l
}

fn samba() -> &'static Samba {
    static S: OnceLock<Samba> = OnceLock::new();
    S.get_or_init(|| Samba::start(&fixture()))
}

fn config(asq: bool, items: &str) -> String {
    let s = samba();
    format!(
        r#"
[directory]
source = "ldap"
servers = ["{url}"]
base_dn = "{BASE}"
use_attribute_scope_queries = {asq}
[directory.query_bind]
type = "simple"
dn = "{dn}"
password = "{pw}"
{items}
"#,
        url = s.url,
        dn = s.admin_dn,
        pw = s.admin_password,
    )
}

fn item(kind: &str, dn: &str, extra: &str) -> String {
    format!("[[sync.items]]\nkind = \"{kind}\"\ndn = \"{dn}\"\n{extra}\n")
}

/// objectGUID as Samba's own tools print it (text form, computed by Samba).
fn guid_of(sam: &str) -> String {
    let s = samba();
    let out = std::process::Command::new("samba-tool")
        .args(["user", "show", sam, "--attributes=objectGUID", "-s"])
        .arg(s.smb_conf())
        .arg("-H")
        .arg(s.dir.join("private/sam.ldb"))
        .output()
        .expect("samba-tool");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("objectGUID: "))
        .map(|g| g.trim().to_lowercase())
        .unwrap_or_else(|| panic!("no objectGUID for {sam}: {text}"))
}

/// Issue 19 on Active Directory: a user moved out of the base DN and a user
/// excluded by an edit of `[filters] user` still exist (found by objectGUID
/// in the domain): their item's `when_removed` (disable), phones kept; a
/// deleted user (a tombstone: its objectGUID found nowhere) is removed.
#[test]
fn users_moved_or_filtered_out_are_disabled_and_deleted_ones_removed() {
    let s = samba();
    for o in ["ScopeIn", "ScopeOut"] {
        s.ldapadd(&format!(
            "dn: OU={o},{BASE}\nobjectClass: organizationalUnit\nou: {o}\n"
        ));
    }
    for i in 1..=4 {
        s.ldapadd(&user(
            &format!("sc{i}"),
            "OU=ScopeIn",
            &format!("sc{i}"),
            &format!("userPrincipalName: sc{i}@mfa.test\nmobile: +1 425 555 02{i:02}\n"),
        ));
    }
    let cfg = |filter: &str| {
        let it = item(
            "container",
            &format!("OU=ScopeIn,{BASE}"),
            "when_removed = \"disable\"\n[sync.items.user]\nphone = \"mobile\"",
        );
        config(
            false,
            &format!("[filters]\nuser = \"{filter}\"\n[sync]\nremove_deleted_users = true\n{it}"),
        )
        .replace(
            &format!("base_dn = \"{BASE}\""),
            &format!("base_dn = \"OU=ScopeIn,{BASE}\""),
        )
    };
    let m = Mfa::new();
    m.apply(&cfg("(&(objectCategory=person)(objectClass=user))"));
    assert_eq!(counts(&m.sync_full()).0, 4);
    s.ldapmodify(&format!(
        "dn: CN=sc1,OU=ScopeIn,{BASE}\nchangetype: modrdn\nnewrdn: CN=sc1\ndeleteoldrdn: 1\nnewsuperior: OU=ScopeOut,{BASE}\n"
    ));
    s.ldapdelete(&format!("CN=sc3,OU=ScopeIn,{BASE}"));
    m.apply(&cfg(
        "(&(objectCategory=person)(objectClass=user)(!(sAMAccountName=sc2)))",
    ));
    let r = m.sync_full();
    assert_eq!(counts(&r), (0, 0, 0, 2, 1, 1), "{r}");
    for (name, phone) in [("sc1", "+14255550201"), ("sc2", "+14255550202")] {
        let u = m
            .user(&format!("{name}@mfa.test"))
            .unwrap_or_else(|| panic!("{name} removed"));
        assert_eq!(u["enabled"], false, "{u}");
        assert_eq!(u["primary_phone"], phone, "{u}");
    }
    assert!(m.user("sc3@mfa.test").is_none(), "deleted");
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 3));
}

#[test]
fn active_directory_users_map_field_by_field() {
    let m = Mfa::new();
    let items = [
        item(
            "container",
            &format!("OU=Sales,OU=People,{BASE}"),
            "[sync.items.user]\nbackup_phone = \"mobile\"",
        ),
        item(
            "security-group",
            &format!("CN=mfa-users,OU=Groups,{BASE}"),
            "",
        ),
        item(
            "container",
            &format!("OU=People,{BASE}"),
            "include_nested = false",
        ),
    ]
    .concat();
    m.apply(&config(true, &items));
    let r = m.sync_full();
    // Sales: alice, bob (nested EMEA), dan; group: jsmith; People one level: jmuller
    assert_eq!(counts(&r), (5, 0, 0, 0, 0, 0), "{r}");
    let alice = m
        .user("alice@mfa.test")
        .expect("alice by userPrincipalName");
    assert_eq!(alice["directory_id"], guid_of("alice"));
    assert_eq!(
        alice["dn"],
        format!("CN=Alice Adams,OU=Sales,OU=People,{BASE}")
    );
    assert_eq!(alice["primary_phone"], "+14255550100");
    assert_eq!(alice["extension"], "123");
    assert_eq!(alice["backup_phone"], "+14255550101");
    assert_eq!(alice["enabled"], true);
    assert!(
        m.user("bob").is_some(),
        "no userPrincipalName: sAMAccountName is the backup"
    );
    assert_eq!(
        m.user("dan@mfa.test").expect("dan")["enabled"],
        false,
        "disabled AD account"
    );
    let js = m.user("jsmith@mfa.test").expect("jsmith");
    assert_eq!(js["dn"], format!("CN=Smith\\, John,OU=People,{BASE}"));
    assert_eq!(js["sync_item"], format!("CN=mfa-users,OU=Groups,{BASE}"));
    let jm = m.user("jmuller@mfa.test").expect("jmuller");
    assert_eq!(
        (jm["first_name"].as_str(), jm["last_name"].as_str()),
        (Some("José"), Some("Müller"))
    );
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 5));
}

#[test]
fn groups_by_asq_and_by_member_ranges_agree() {
    let items = [
        item("security-group", &format!("CN=big,OU=Groups,{BASE}"), ""),
        item(
            "security-group",
            &format!("CN=mfa-outer,OU=Groups,{BASE}"),
            "include_nested = true",
        ),
    ]
    .concat();
    let mut exports = Vec::new();
    for asq in [true, false] {
        let m = Mfa::new();
        m.apply(&config(asq, &items));
        let r = m.sync_full();
        assert_eq!(counts(&r).0, BIG as u64 + 2, "asq={asq}: {r}");
        assert!(m.user("bob").is_some(), "nested group member, asq={asq}");
        exports.push(m.users());
    }
    assert_eq!(exports[0], exports[1]);
}

/// The stored-DN fast path of `auth` on Active Directory: with a query bind
/// that cannot search any more, synchronized users are still checked (bound
/// as their stored DN), and the directory's own refusals (disabled account,
/// password that must be changed) are final answers.
#[test]
fn auth_binds_as_the_stored_dn_on_active_directory() {
    let s = samba();
    const PW: &str = "Fast!Passw0rd1";
    s.ldapadd(&format!(
        "dn: OU=AuthFast,{BASE}\nobjectClass: organizationalUnit\n\n{}{}{}",
        user("Fast One", "OU=AuthFast", "fastone", ""),
        user("Fast Off", "OU=AuthFast", "fastoff", ""),
        user("Fast Reset", "OU=AuthFast", "fastreset", ""),
    ));
    for sam in ["fastone", "fastoff", "fastreset"] {
        s.set_password(sam, PW);
    }
    let m = Mfa::new();
    let cfg = config(
        false,
        &format!(
            "[directory.auth_bind]\ntype = \"simple\"\n{}",
            item("container", &format!("OU=AuthFast,{BASE}"), "")
        ),
    );
    m.apply(&cfg);
    assert_eq!(counts(&m.sync_full()).0, 3);
    s.ldapmodify(&format!(
        "dn: CN=Fast Off,OU=AuthFast,{BASE}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n\n\
         dn: CN=Fast Reset,OU=AuthFast,{BASE}\nchangetype: modify\nreplace: pwdLastSet\npwdLastSet: 0\n"
    ));
    let auth = |user: &str, pw: &str| {
        let o = m.run_stdin(&["--json", "auth", user, "--password-stdin"], pw);
        let v = o.json();
        (o.code, v["reason"].as_str().unwrap_or("").to_string())
    };
    let ok = (0, String::new());
    let refused = |r: &str| (1, r.to_string());
    let no_search = cfg.replace(
        &format!("password = \"{}\"", s.admin_password),
        "password = \"not-the-password\"",
    );
    assert_ne!(cfg, no_search);
    m.apply(&no_search);
    assert_eq!(auth("fastone", PW), ok, "bound as the stored DN");
    assert_eq!(auth("FastOne", PW), ok);
    assert_eq!(auth("fastoff", PW), refused("account-disabled"));
    assert_eq!(auth("fastreset", PW), refused("must-change-password"));
    assert_eq!(
        auth("fastone", "Wr0ng!pass"),
        refused("directory-unavailable"),
        "a refused stored-DN bind is decided by the search"
    );
    m.apply(&cfg);
    assert_eq!(
        auth("fastone", "Wr0ng!pass"),
        refused("invalid-credentials")
    );
    assert_eq!(auth("fastone", PW), ok);
}

/// `text` as a TOML string (a down-level name has a backslash).
fn toml_str(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// Issue 19 item 3: Active Directory takes a simple bind's account as a DN,
/// a user principal name or a down-level logon name; `config apply`
/// accepts the three, and `directory test` and a sync bind with each
/// (an unknown account or a wrong password under the same form is refused
/// at the bind: the name is what binds).
#[test]
fn simple_binds_as_a_dn_a_upn_and_a_down_level_name() {
    let s = samba();
    let upn = format!("Administrator@{}", s.realm.to_lowercase());
    let down_level = format!("{}\\Administrator", s.domain);
    let sales = item("container", &format!("OU=Sales,OU=People,{BASE}"), "");
    let bind_as = |name: &str, password: &str| {
        config(false, &sales)
            .replace(
                &format!("dn = \"{}\"", s.admin_dn),
                &format!("dn = {}", toml_str(name)),
            )
            .replace(
                &format!("password = \"{}\"", s.admin_password),
                &format!("password = {}", toml_str(password)),
            )
    };
    for name in [s.admin_dn.as_str(), &upn, &down_level] {
        let m = Mfa::new();
        m.apply(&bind_as(name, &s.admin_password));
        let report = m.ok(&["--json", "directory", "test"]).json();
        assert_eq!(report["ok"], true, "{name}: {report:#}");
        let bind = step(&report, "bind");
        assert_eq!(
            bind["detail"],
            format!("simple bind as {name:?} (password sent unencrypted)"),
            "{bind}"
        );
        let human = m.ok(&["directory", "test"]);
        assert!(human.stdout.contains("simple bind as"), "{}", human.stdout);
        // alice, bob (EMEA under Sales), dan
        let r = m.sync_full();
        assert_eq!(counts(&r), (3, 0, 0, 0, 0, 0), "{name}: {r}");
        assert!(m.user("alice@mfa.test").is_some(), "{name}");
        assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 3), "{name}");
        // an incremental cycle binds the same way (its starting point was taken by the full
        // one); other tests edit containers of the same domain, which makes a cycle full, so
        // up to five tries for one that is incremental
        let mut incremental = None;
        for _ in 0..5 {
            let r = m.ok(&["--json", "sync"]).json();
            let (c, u, e, d, x, _) = counts(&r);
            assert_eq!((c, u, e, d, x), (0, 0, 0, 0, 0), "{name}: {r}");
            if r["mode"] == "incremental" {
                incremental = Some(r);
                break;
            }
            assert!(
                r["note"].as_str().unwrap_or_default().contains("changed"),
                "{name}: full only because another test changed a container: {r}"
            );
        }
        assert!(
            incremental.is_some(),
            "{name}: no incremental cycle in five"
        );
        // the same form with a wrong password, or naming nobody: refused at the bind
        for (who, pw) in [
            (name.to_string(), "Wr0ng!pass"),
            (
                name.replace("Administrator", "nobody-here"),
                s.admin_password.as_str(),
            ),
        ] {
            m.apply(&bind_as(&who, pw));
            let o = m.run(&["--json", "directory", "test"]);
            assert_ne!(o.code, 0, "{who}: {}", o.stdout);
            assert_eq!(step(&o.json(), "bind")["ok"], false, "{who}: {}", o.stdout);
            let o = m.run(&["sync", "--full"]);
            assert_ne!(o.code, 0, "{who}: {}", o.stderr);
        }
    }
}

/// Issue 19 items 3 and 9 over LDAPS: an SSL bind as a user principal name
/// to a server written as an IP address (the test DC's certificate names
/// 127.0.0.1): `config apply` and `directory test` warn that the
/// certificate must name the address, and the bind and a sync work.
#[test]
fn ssl_bind_as_a_upn_to_a_server_written_as_an_ip_address_is_warned_about() {
    let s = samba();
    let m = Mfa::new();
    let cfg = format!(
        "[directory]\nsource = \"ldap\"\nservers = [\"{url}\"]\nbase_dn = \"{BASE}\"\ntls_ca_file = {ca}\n\
         [directory.query_bind]\ntype = \"ssl\"\ndn = \"Administrator@mfa.test\"\npassword = {pw}\n{items}",
        url = s.ldaps_url,
        ca = toml_str(&s.ca_cert.display().to_string()),
        pw = toml_str(&s.admin_password),
        items = item("container", &format!("OU=Sales,OU=People,{BASE}"), ""),
    );
    let p = m.config_file(&cfg);
    let o = m.ok(&["config", "apply", p.to_str().expect("path")]);
    let warning = format!(
        "directory.servers[0]: {} names the server by its IP address 127.0.0.1",
        s.ldaps_url
    );
    assert!(o.stderr.contains(&warning), "{}", o.stderr);
    assert!(o.stderr.contains("certificate"), "{}", o.stderr);
    let report = m.ok(&["--json", "directory", "test"]).json();
    assert_eq!(report["ok"], true, "{report:#}");
    let warnings = report["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{report:#}");
    assert!(
        warnings[0].as_str().unwrap_or("").starts_with(&warning),
        "{report:#}"
    );
    assert_eq!(
        step(&report, "bind")["detail"],
        "simple bind as \"Administrator@mfa.test\" over TLS"
    );
    let human = m.ok(&["directory", "test"]);
    assert!(
        human.stdout.contains(&format!("warning  {warning}")),
        "{}",
        human.stdout
    );
    assert_eq!(counts(&m.sync_full()).0, 3);
}

/// Issue 19 item 4 on Active Directory: blank filters are the seed's
/// defaults; containers, nested groups and users are found as with the
/// filters written out, and `config export` says which filter is in effect.
#[test]
fn blank_filters_sync_like_the_seed_defaults() {
    let items = [
        item("container", &format!("OU=Sales,OU=People,{BASE}"), ""),
        item(
            "security-group",
            &format!("CN=mfa-outer,OU=Groups,{BASE}"),
            "include_nested = true",
        ),
    ]
    .concat();
    let blank = config(
        false,
        &format!("[filters]\ncontainer = \"\"\nsecurity_group = \"  \"\nuser = \"\"\n{items}"),
    );
    let written = config(false, &items);
    let mut exports = Vec::new();
    for (text, is_blank) in [(&written, false), (&blank, true)] {
        let m = Mfa::new();
        m.apply(text);
        let r = m.sync_full();
        // Sales: alice, bob, dan; mfa-outer: jmuller (bob through mfa-inner is Sales')
        assert_eq!(counts(&r), (4, 0, 0, 0, 0, 0), "{r}");
        exports.push(m.users());
        if is_blank {
            let out = m.ok(&["config", "export"]).stdout;
            assert!(out.contains("user = \"\""), "{out}");
            assert!(
                out.contains("#   user = \"(&(objectCategory=person)(objectClass=user))\""),
                "{out}"
            );
        }
    }
    assert_eq!(exports[0], exports[1]);
}

/// Issue 19 item 6 on Active Directory: `config apply` records each item's
/// objectGUID; after the item's OU is renamed and moved (LDAP modrdn with a
/// new superior), the next cycle finds it by objectGUID (`(objectGUID=\xx…)`
/// from the naming context), runs full, stores the new DN in a new
/// configuration version and keeps its users (updated, none departed). An OU
/// that is really deleted stops the cycle with nothing changed.
#[test]
fn an_item_follows_its_renamed_ou_and_a_deleted_one_stops_the_cycle() {
    let s = samba();
    let top = format!("OU=RenTop,{BASE}");
    for o in [
        top.clone(),
        format!("OU=RenOld,{top}"),
        format!("OU=RenSub,{top}"),
        format!("OU=RenGone,{top}"),
    ] {
        let name = o[3..].split(',').next().unwrap_or("x").to_string();
        s.ldapadd(&format!(
            "dn: {o}\nobjectClass: organizationalUnit\nou: {name}\n"
        ));
    }
    for (u, ou) in [
        ("rn1", "OU=RenOld"),
        ("rn2", "OU=RenOld"),
        ("rg1", "OU=RenGone"),
    ] {
        s.ldapadd(&user(
            u,
            &format!("{ou},OU=RenTop"),
            u,
            &format!("userPrincipalName: {u}@mfa.test\n"),
        ));
    }
    let items = format!(
        "[sync]\n{}{}",
        item(
            "container",
            &format!("OU=RenOld,{top}"),
            "when_removed = \"disable\""
        ),
        item(
            "container",
            &format!("OU=RenGone,{top}"),
            "when_removed = \"disable\""
        )
    );
    let cfg = config(false, &items).replace(
        &format!("base_dn = \"{BASE}\""),
        &format!("base_dn = \"{top}\""),
    );
    let m = Mfa::new();
    m.apply(&cfg);
    let export = m.ok(&["config", "export"]).stdout;
    let ids: Vec<&str> = export
        .lines()
        .filter_map(|l| l.strip_prefix("id = \""))
        .collect();
    assert_eq!(ids.len(), 2, "{export}");
    assert!(ids.iter().all(|id| id.len() == 37), "GUIDs: {export}");
    assert_eq!(counts(&m.sync_full()), (3, 0, 0, 0, 0, 0));
    let v = m.ok(&["--json", "sync"]).json();
    assert_eq!(v["mode"], "incremental", "{v}");

    let moved = format!("OU=RenNew,OU=RenSub,{top}");
    s.ldapmodify(&format!(
        "dn: OU=RenOld,{top}\nchangetype: modrdn\nnewrdn: OU=RenNew\ndeleteoldrdn: 1\nnewsuperior: OU=RenSub,{top}\n"
    ));
    let o = m.ok(&["--json", "sync"]);
    let v = o.json();
    assert_eq!(v["mode"], "full", "{v}\n{}", o.stderr);
    assert_eq!(counts(&v), (0, 2, 0, 0, 0, 1), "{v}");
    let note = v["note"].as_str().unwrap_or_default();
    assert!(
        note.to_lowercase()
            .contains(&format!("at {}", moved.to_lowercase())),
        "{note}"
    );
    assert!(
        note.contains("updated in configuration version 2"),
        "{note}"
    );
    let export = m.ok(&["config", "export"]).stdout;
    assert!(
        export
            .to_lowercase()
            .contains(&format!("dn = \"{}\"", moved.to_lowercase())),
        "{export}"
    );
    for u in ["rn1", "rn2"] {
        let u = m.user(&format!("{u}@mfa.test")).expect("kept");
        assert_eq!(u["enabled"], true, "{u}");
        assert!(
            u["sync_item"]
                .as_str()
                .is_some_and(|i| i.eq_ignore_ascii_case(&moved)),
            "{u}"
        );
    }
    let h = m.ok(&["--json", "history", "--limit", "1"]).json();
    assert_eq!(h[0]["note"], note, "{h}");
    assert_eq!(counts(&m.sync_full()), (0, 0, 0, 0, 0, 3));

    // the other OU deleted (its user first): found nowhere by objectGUID
    let before = m.users();
    s.ldapdelete(&format!("CN=rg1,OU=RenGone,{top}"));
    s.ldapdelete(&format!("OU=RenGone,{top}"));
    let o = m.run(&["--json", "sync", "--full"]);
    assert_ne!(o.code, 0, "{}", o.stdout);
    assert!(
        o.stderr
            .contains("does not exist in the directory, and no entry has its objectGUID"),
        "{}",
        o.stderr
    );
    assert_eq!(m.users(), before);
}

/// The RADIUS server against Active Directory (issue 24): a code appended to
/// the password of an OATH user is accepted once; a wrong password and a
/// disabled account are refused without asking for a code.
#[test]
fn radius_checks_ad_passwords_then_the_oath_code() {
    use common::radius::{code_now, enroll, radclient, radius_table, request, SECRET};
    let s = samba();
    const PW: &str = "Radius!Passw0rd1";
    s.ldapadd(&format!(
        "dn: OU=Radius,{BASE}\nobjectClass: organizationalUnit\n\n{}{}",
        user("Rad Token", "OU=Radius", "radtoken", ""),
        user("Rad Off", "OU=Radius", "radoff", ""),
    ));
    for sam in ["radtoken", "radoff"] {
        s.set_password(sam, PW);
    }
    let mut m = Mfa::new();
    common::radius::with_key(&mut m);
    let port = mfasync_testkit::free_udp_port();
    let radius = radius_table(
        &m,
        port,
        "[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.1\"\nsecret_file = \"SECRET_FILE\"\nsecond_factor = \"append\"\n",
    );
    m.apply(&config(
        false,
        &format!(
            "[directory.auth_bind]\ntype = \"simple\"\n{}\n[sync.items.user]\nmethod = \"oath-token\"\n{radius}",
            item("container", &format!("OU=Radius,{BASE}"), "")
        ),
    ));
    assert_eq!(counts(&m.sync_full()).0, 2);
    s.ldapmodify(&format!(
        "dn: CN=Rad Off,OU=Radius,{BASE}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"
    ));
    let secret = enroll(&m, "radtoken");
    enroll(&m, "radoff");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let served = rt.block_on(common::radius::serve(&m, port));
    let code = code_now(&secret);
    let out = radclient(
        port,
        SECRET,
        &request("radtoken", &format!("Wr0ng!pass,{code}")),
    );
    assert!(out.contains("Received Access-Reject"), "{out}");
    let out = radclient(port, SECRET, &request("radoff", &format!("{PW},{code}")));
    assert!(out.contains("Received Access-Reject"), "{out}");
    let out = radclient(port, SECRET, &request("radtoken", &format!("{PW},{code}")));
    assert!(out.contains("Received Access-Accept"), "{out}");
    let out = radclient(port, SECRET, &request("radtoken", &format!("{PW},{code}")));
    assert!(out.contains("Received Access-Reject"), "{out}");
    let counted = rt.block_on(served.metrics());
    for line in [
        "outcome=\"reject:invalid-credentials\"} 1",
        "outcome=\"reject:account-disabled\"} 1",
        "outcome=\"accept\"} 1",
        "outcome=\"reject:code-replayed\"} 1",
    ] {
        assert!(counted.contains(line), "{line} not in\n{counted}");
    }
}

/// Issue 21 on Active Directory: users moved out of every item are never
/// disabled when protected, by username (any case) or as a member of a
/// protected group DN (the group follows its member's move, as AD's linked
/// attributes do); an unprotected one is disabled, and the report says which
/// were kept and why.
#[test]
fn protected_users_outside_every_item_are_never_disabled() {
    let s = samba();
    for o in ["Guarded", "Outside"] {
        s.ldapadd(&format!(
            "dn: OU={o},{BASE}\nobjectClass: organizationalUnit\nou: {o}\n"
        ));
    }
    for sam in ["gname", "ggroup", "gplain"] {
        s.ldapadd(&user(
            sam,
            "OU=Guarded",
            sam,
            &format!("userPrincipalName: {sam}@mfa.test\n"),
        ));
    }
    let tier0 = format!("CN=Tier0,OU=Groups,{BASE}");
    s.ldapadd(&format!(
        "dn: {tier0}\nobjectClass: group\nsAMAccountName: Tier0\ngroupType: -2147483646\nmember: CN=ggroup,OU=Guarded,{BASE}\n"
    ));
    let m = Mfa::new();
    m.apply(&config(
        false,
        &format!(
            "[sync]\nprotected = [\"GNAME@mfa.test\", \"{tier0}\"]\n{}",
            item(
                "container",
                &format!("OU=Guarded,{BASE}"),
                "when_removed = \"disable\""
            )
        ),
    ));
    assert_eq!(counts(&m.sync_full()).0, 3);
    for sam in ["gname", "ggroup", "gplain"] {
        s.ldapmodify(&format!(
            "dn: CN={sam},OU=Guarded,{BASE}\nchangetype: modrdn\nnewrdn: CN={sam}\ndeleteoldrdn: 1\nnewsuperior: OU=Outside,{BASE}\n"
        ));
    }
    let r = m.sync_full();
    assert_eq!(
        counts(&r).3,
        1,
        "only the unprotected user is disabled: {r}"
    );
    let mut kept: Vec<&str> = r["protected"]
        .as_array()
        .map(|v| v.iter().filter_map(|p| p["username"].as_str()).collect())
        .unwrap_or_default();
    kept.sort_unstable();
    assert_eq!(kept, ["ggroup@mfa.test", "gname@mfa.test"], "{r}");
    let enabled = |name: &str| {
        m.users()
            .iter()
            .find(|u| u["username"] == name)
            .map(|u| u["enabled"] == true)
    };
    assert_eq!(enabled("gname@mfa.test"), Some(true));
    assert_eq!(enabled("ggroup@mfa.test"), Some(true));
    assert_eq!(enabled("gplain@mfa.test"), Some(false));
}

/// Issue 22 on Active Directory: `users explain` names a disabled account as
/// the deciding step and a username taken from the backup attribute;
/// `sync --user` makes that one user, disabled.
#[test]
fn explain_names_a_disabled_account_and_sync_user_makes_it_disabled() {
    let m = Mfa::new();
    let items = item("container", &format!("OU=Sales,OU=People,{BASE}"), "");
    m.apply(&config(false, &items));
    let e = m.ok(&["--json", "users", "explain", "dan@mfa.test"]).json();
    assert_eq!(e["decision"]["step"], "account_disabled", "{e:#}");
    assert_eq!(e["decision"]["action"], "create", "{e:#}");
    assert_eq!(e["entry"]["account_disabled"], true, "{e:#}");
    assert_eq!(e["entry"]["unique_id"], guid_of("dan"), "{e:#}");
    assert_eq!(e["would_write"]["enabled"], false, "{e:#}");
    assert_eq!(e["items"][0]["how"], "directly in the container", "{e:#}");
    // bob has no userPrincipalName: the backup attribute names him
    let e = m.ok(&["--json", "users", "explain", "bob"]).json();
    assert_eq!(e["username"]["kind"], "backup", "{e:#}");
    assert_eq!(e["decision"]["step"], "item", "{e:#}");
    assert!(
        e["items"][0]["how"].as_str().unwrap().contains("below it"),
        "bob is in OU=EMEA under Sales: {e:#}"
    );
    // one user made, disabled; nobody else
    let s = m.ok(&["--json", "sync", "--user", "dan"]).json();
    assert_eq!(s["action"], "create", "{s:#}");
    assert_eq!(s["step"], "account_disabled", "{s:#}");
    let users = m.users();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["username"], "dan@mfa.test");
    assert_eq!(users[0]["enabled"], false);
}

/// Issue 22 on Active Directory: a user outside the first item's group is
/// held by the second item, through a nested group, which the explanation names.
#[test]
fn explain_names_the_nested_group_of_the_second_item() {
    let m = Mfa::new();
    let items = [
        item(
            "security-group",
            &format!("CN=mfa-users,OU=Groups,{BASE}"),
            "",
        ),
        item(
            "security-group",
            &format!("CN=mfa-outer,OU=Groups,{BASE}"),
            "",
        ),
    ]
    .concat();
    m.apply(&config(false, &items));
    let e = m.ok(&["--json", "users", "explain", "bob"]).json();
    assert_eq!(e["decision"]["step"], "item", "{e:#}");
    assert_eq!(e["decision"]["item"], 1, "{e:#}");
    assert_eq!(e["items"][0]["holds"], false, "{e:#}");
    assert_eq!(e["items"][1]["wins"], true, "{e:#}");
    assert_eq!(
        e["items"][1]["via"],
        serde_json::json!([format!("CN=mfa-inner,OU=Groups,{BASE}")]),
        "{e:#}"
    );
    // alice is in the first group directly
    let e = m
        .ok(&["--json", "users", "explain", "alice@mfa.test"])
        .json();
    assert_eq!(e["decision"]["item"], 0, "{e:#}");
    assert_eq!(e["items"][0]["how"], "a direct member", "{e:#}");
}
