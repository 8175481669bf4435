//! The INSTALLED Debian package against a real slapd, the way docs/service.md
//! tells an administrator to set it up: the installed example
//! /etc/mfasync/mfasync.toml edited for the directory, the bind password in
//! /etc/mfasync/bind.password (root:mfasync 0640), and every command run as
//! the `mfasync` user on the service's database
//! (sqlite:///var/lib/mfasync/mfasync.db): config apply, directory test,
//! sync --full, users export, auth.
//!
//! Run by scripts/package-test after `dpkg -i` (which purges the package
//! afterwards): `MFASYNC_INSTALLED_BIN=/usr/bin/mfasync installed-… --ignored`.
//! Ignored otherwise: it changes /etc/mfasync and /var/lib/mfasync.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfasync_testkit::Slapd;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

const BASE: &str = "dc=example,dc=com";
const CONFIG: &str = "/etc/mfasync/mfasync.toml";
const PASSWORD_FILE: &str = "/etc/mfasync/bind.password";
const DATABASE: &str = "sqlite:///var/lib/mfasync/mfasync.db";

fn people() -> String {
    let mut l = format!("dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n");
    for (uid, mobile) in [
        ("alice", "+1 425 555 0100"),
        ("bob", "(425) 555-0101"),
        ("carol", "+44 20 7946 0000"),
    ] {
        l.push_str(&format!(
            "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
             givenName: {uid}\nmobile: {mobile}\nuserPassword: {uid}-password\n\n"
        ));
    }
    l
}

/// The installed binary, run as the mfasync user on the service's database.
fn mfasync(bin: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("runuser")
        .args(["-u", "mfasync", "--", "env"])
        .arg(format!("MFASYNC_DATABASE={DATABASE}"))
        .arg(bin)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runuser");
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait")
}

fn ok(bin: &str, args: &[&str]) -> Output {
    let o = mfasync(bin, args, "");
    assert!(
        o.status.success(),
        "mfasync {args:?}: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("[{key}] is not a table"))
}

/// The installed Active Directory example, edited for the test slapd as an
/// administrator would: servers, base DN, a simple bind, OpenLDAP's filters
/// and attributes, one container item. Keys not named stay as installed.
fn edit_for_slapd(installed: &str, s: &Slapd) -> String {
    let mut cfg: toml::Table = toml::from_str(installed).expect("the installed example is TOML");
    let dir = table(&mut cfg, "directory");
    dir.remove("domain");
    dir.insert("source".into(), "ldap".into());
    dir.insert("servers".into(), vec![s.url.clone()].into());
    dir.insert("base_dn".into(), BASE.into());
    dir.insert("include_trusted_domains".into(), false.into());
    dir.insert("use_attribute_scope_queries".into(), false.into());
    let query = table(dir, "query_bind");
    query.insert("type".into(), "simple".into());
    query.insert("dn".into(), s.admin_dn.clone().into());
    assert_eq!(
        query.get("password_file").and_then(|v| v.as_str()),
        Some(PASSWORD_FILE),
        "the example's secret is a password file"
    );
    table(dir, "auth_bind").insert("type".into(), "simple".into());
    let filters = table(&mut cfg, "filters");
    filters.insert(
        "container".into(),
        "(objectClass=organizationalUnit)".into(),
    );
    filters.insert("security_group".into(), "(objectClass=groupOfNames)".into());
    filters.insert("user".into(), "(objectClass=inetOrgPerson)".into());
    let attrs = table(&mut cfg, "attributes");
    attrs.insert("unique_id".into(), "entryUUID".into());
    attrs.insert("unique_id_type".into(), "string".into());
    attrs.insert("distinguished_name".into(), "entryDN".into());
    attrs.insert("username".into(), vec!["uid".to_string()].into());
    let items = table(&mut cfg, "sync")
        .get_mut("items")
        .and_then(|i| i.as_array_mut())
        .expect("the example has [[sync.items]]");
    let item = items[0].as_table_mut().expect("an item table");
    item.insert("kind".into(), "container".into());
    item.insert("dn".into(), format!("ou=people,{BASE}").into());
    items.truncate(1);
    toml::to_string(&cfg).expect("TOML")
}

#[test]
#[ignore = "needs the installed package: scripts/package-test runs it with MFASYNC_INSTALLED_BIN"]
fn the_installed_package_synchronizes_a_directory() {
    let bin = std::env::var("MFASYNC_INSTALLED_BIN")
        .expect("MFASYNC_INSTALLED_BIN must name the installed binary (/usr/bin/mfasync)");
    let s = Slapd::start(&people());

    // as packaged: the configuration readable by root and the mfasync group only
    let meta = std::fs::metadata(CONFIG).expect("the installed configuration");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{CONFIG} mode");
    let installed = std::fs::read_to_string(CONFIG).expect("read the installed configuration");
    let example = ok(&bin, &["config", "example"]);
    assert_eq!(
        String::from_utf8_lossy(&example.stdout),
        installed,
        "`config example` prints the installed configuration"
    );

    // the administrator's edits and password file
    std::fs::write(CONFIG, edit_for_slapd(&installed, &s)).expect("edit the configuration");
    std::fs::write(PASSWORD_FILE, format!("{}\n", s.admin_password)).expect("password file");
    let chown = Command::new("chown")
        .args(["root:mfasync", PASSWORD_FILE])
        .status();
    assert!(chown.is_ok_and(|st| st.success()));
    std::fs::set_permissions(PASSWORD_FILE, std::fs::Permissions::from_mode(0o640)).expect("chmod");

    let applied = ok(&bin, &["--json", "config", "apply", CONFIG]);
    assert_eq!(json(&applied)["stored"], true);
    assert!(
        applied.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let test = json(&ok(&bin, &["--json", "directory", "test"]));
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(test["vendor"], "openldap", "{test}");

    let sync = json(&ok(&bin, &["--json", "sync", "--full"]));
    assert_eq!(sync["mode"], "full", "{sync}");
    assert_eq!(sync["created"], 3, "{sync}");

    let users = json(&ok(
        &bin,
        &["--json", "users", "export", "--format", "json"],
    ));
    let users = users.as_array().expect("an array of users");
    let mut names: Vec<&str> = users
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let alice = users
        .iter()
        .find(|u| u["username"] == "alice")
        .expect("alice");
    assert_eq!(alice["primary_phone"], "+14255550100", "{alice}");
    assert_eq!(alice["sync_item"], format!("ou=people,{BASE}"));
    assert_eq!(alice["source"], "directory");

    // a password check by LDAP bind, and a wrong one
    let good = mfasync(
        &bin,
        &["--json", "auth", "alice", "--password-stdin"],
        "alice-password\n",
    );
    assert!(good.status.success(), "{good:?}");
    let bad = mfasync(
        &bin,
        &["--json", "auth", "alice", "--password-stdin"],
        "wrong\n",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(json(&bad)["reason"], "invalid-credentials");

    // the database belongs to the service's user, which will run `serve` on it
    let owner = Command::new("stat")
        .args(["-c", "%U", "/var/lib/mfasync/mfasync.db"])
        .output()
        .expect("stat");
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "mfasync");
}
