//! `scripts/bench-auth [CHECKS]`: password checks per second and p50/p99
//! latency of `mfasync auth` against a private slapd, next to the raw bind
//! (`ldapwhoami` binding as the same users) measured in the same run. Both are
//! one process per check, as a RADIUS/PAM helper would call them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BASE: &str = "dc=example,dc=com";
const USERS: usize = 1000;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn report(name: &str, mut lat: Vec<Duration>, total: Duration) -> f64 {
    lat.sort();
    let p50 = pct(&lat, 0.5);
    println!(
        "| {name} | {:.0} | {p50:.1} ms | {:.1} ms |",
        lat.len() as f64 / total.as_secs_f64(),
        pct(&lat, 0.99)
    );
    p50
}

fn main() {
    let checks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let bin = std::env::var("MFASYNC_BIN").unwrap_or_else(|_| "target/release/mfasync".into());
    let mut ldif = format!("dn: ou=Bench,{BASE}\nobjectClass: organizationalUnit\nou: Bench\n\n");
    for i in 0..USERS {
        let _ = write!(
            ldif,
            "dn: uid=u{i:05},ou=Bench,{BASE}\nobjectClass: inetOrgPerson\nuid: u{i:05}\ncn: u{i}\nsn: u{i}\nuserPassword: pw-{i}\n\n"
        );
    }
    let slapd = mfasync_testkit::Slapd::start(&ldif);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db = format!("sqlite://{}", dir.path().join("auth.db").display());
    let cfg = dir.path().join("auth.toml");
    let config = format!(
        "[directory]\nsource = \"ldap\"\nservers = [\"{url}\"]\nbase_dn = \"{BASE}\"\n[directory.query_bind]\ntype = \"simple\"\ndn = \"{dn}\"\npassword = \"{pw}\"\n[directory.auth_bind]\ntype = \"simple\"\n[filters]\nuser = \"(objectClass=inetOrgPerson)\"\n[attributes]\nunique_id = \"entryUUID\"\nunique_id_type = \"string\"\ndistinguished_name = \"entryDN\"\nusername = [\"uid\"]\n[[sync.items]]\nkind = \"container\"\ndn = \"ou=Bench,{BASE}\"\n",
        url = slapd.url,
        dn = slapd.admin_dn,
        pw = slapd.admin_password,
    );
    std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("write config: {e}"));
    for args in [
        vec!["config", "apply", cfg.to_str().unwrap_or_default()],
        vec!["sync", "--full"],
    ] {
        let ok = Command::new(&bin)
            .args(["--database", &db])
            .args(&args)
            .stdout(Stdio::null())
            .status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "mfasync {args:?} failed"
        );
    }

    let mut raw = Vec::with_capacity(checks);
    let t = Instant::now();
    for k in 0..checks {
        let i = (k * 7919) % USERS;
        let s = Instant::now();
        let ok = Command::new("ldapwhoami")
            .args([
                "-x",
                "-H",
                &slapd.url,
                "-D",
                &format!("uid=u{i:05},ou=Bench,{BASE}"),
                "-w",
                &format!("pw-{i}"),
            ])
            .stdout(Stdio::null())
            .status();
        assert!(matches!(ok, Ok(s) if s.success()), "ldapwhoami failed");
        raw.push(s.elapsed());
    }
    let raw_total = t.elapsed();

    let mut ours = Vec::with_capacity(checks);
    let t = Instant::now();
    for k in 0..checks {
        let i = (k * 7919) % USERS;
        let s = Instant::now();
        let mut child = Command::new(&bin)
            .args([
                "--database",
                &db,
                "auth",
                &format!("u{i:05}"),
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn mfasync: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(format!("pw-{i}").as_bytes());
        }
        let ok = child.wait();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "mfasync auth u{i:05} refused"
        );
        ours.push(s.elapsed());
    }
    let ours_total = t.elapsed();

    println!("checks: {checks} (sequential, one process per check), {USERS} users");
    println!("| what | checks/s | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    let a = report("ldapwhoami (raw simple bind)", raw, raw_total);
    let b = report(
        "mfasync auth (resolve + bind + MFA lookup)",
        ours,
        ours_total,
    );
    println!("p50 ratio mfasync / raw bind: {:.2}", b / a);
}
