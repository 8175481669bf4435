//! The demo behind `scripts/demo`: starts a private OpenLDAP slapd with a few
//! hundred generated users, writes a configuration for it, and runs the real
//! `mfasync` binary against it into `sqlite://demo.db`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn mfasync(bin: &Path, db: &str, args: &[&str]) -> bool {
    println!("\n$ mfasync --database {db} {}", args.join(" "));
    let status = Command::new(bin)
        .arg("--database")
        .arg(db)
        .args(args)
        .status();
    matches!(status, Ok(s) if s.success())
}

fn main() {
    let users: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let bin: PathBuf = std::env::var_os("MFASYNC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/debug/mfasync"));
    let db_path = std::env::var("DEMO_DB").unwrap_or_else(|_| "demo.db".into());
    let _ = std::fs::remove_file(&db_path);
    let db = format!("sqlite://{db_path}");

    println!("starting a private OpenLDAP slapd with {users} generated users ...");
    let seed =
        mfasync_testkit::openldap_fixture() + &mfasync_testkit::openldap_bulk(users, "Staff");
    let slapd = mfasync_testkit::Slapd::start(&seed);
    println!("slapd is at {} (base {})", slapd.url, slapd.base_dn);

    let config = format!(
        r#"# demo configuration: an OpenLDAP directory ("Use specific LDAP configuration")
[directory]
source = "ldap"
servers = ["{url}"]
base_dn = "{base}"

[directory.query_bind]
type = "simple"
dn = "{admin}"
password_env = "DEMO_BIND_PASSWORD"

[filters]
container = "(objectClass=organizationalUnit)"
security_group = "(objectClass=groupOfNames)"
user = "(objectClass=inetOrgPerson)"

[attributes]
unique_id = "entryUUID"
unique_id_type = "string"
distinguished_name = "entryDN"
username = ["uid"]

[[sync.items]]
kind = "container"
dn = "ou=Sales,ou=People,{base}"
[sync.items.user]
method = "text-message"
phone = "mobile"

[[sync.items]]
kind = "security-group"
dn = "cn=mfa-users,ou=Groups,{base}"

[[sync.items]]
kind = "container"
dn = "ou=Staff,{base}"
[sync.items.user]
phone = "mobile"
"#,
        url = slapd.url,
        base = slapd.base_dn,
        admin = slapd.admin_dn,
    );
    let cfg_path = format!("{db_path}.toml");
    if let Err(e) = std::fs::write(&cfg_path, &config) {
        eprintln!("demo: cannot write {cfg_path}: {e}");
        std::process::exit(1);
    }
    std::env::set_var("DEMO_BIND_PASSWORD", &slapd.admin_password);
    let ok = mfasync(&bin, &db, &["config", "apply", &cfg_path])
        && mfasync(&bin, &db, &["directory", "test"])
        && mfasync(&bin, &db, &["sync", "--plan"])
        && mfasync(&bin, &db, &["sync", "--full"])
        && mfasync(&bin, &db, &["sync", "--full"])
        && mfasync(&bin, &db, &["history"]);
    if !ok {
        eprintln!("demo: a step failed");
        std::process::exit(1);
    }
    println!("\n$ mfasync --database {db} users export --format csv | head -4");
    if let Ok(out) = Command::new(&bin)
        .args(["--database", &db, "users", "export", "--format", "csv"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines().take(4) {
            println!("{line}");
        }
    }
    println!("\ndemo done: the MFA users are in {db_path}; the configuration is {cfg_path}; slapd is stopped now.");
}
