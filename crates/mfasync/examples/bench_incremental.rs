//! `scripts/bench-incremental [N...]`: for each N (default 10000 and 100000),
//! seeds a private slapd with N users, runs a full sync into SQLite (which sets
//! the syncrepl starting point), modifies 100 users, and times one incremental
//! `mfasync sync` (the whole process: start, open the database, connect, fetch,
//! resolve, apply). Prints the entries read and the seconds, to show that an
//! incremental cycle does not grow with the directory.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

const BASE: &str = "dc=example,dc=com";
const CHANGED: usize = 100;

fn generate(n: usize) -> String {
    let mut s = String::with_capacity(n * 250);
    let _ = write!(
        s,
        "dn: ou=Bench,{BASE}\nobjectClass: organizationalUnit\nou: Bench\n\n"
    );
    for i in 0..n {
        let _ = write!(
            s,
            "dn: uid=u{i:07},ou=Bench,{BASE}\nobjectClass: inetOrgPerson\nuid: u{i:07}\ncn: User {i}\nsn: Number{i}\nmail: u{i:07}@example.com\nmobile: +1 425 555 {m:04}\n\n",
            m = i % 10000,
        );
    }
    s
}

fn run(bin: &str, db: &str, args: &[&str]) -> (f64, String) {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["--database", db])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{args:?} failed");
    (secs, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    let sizes: Vec<usize> = {
        let v: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if v.is_empty() {
            vec![10_000, 100_000]
        } else {
            v
        }
    };
    let bin = std::env::var("MFASYNC_BIN").unwrap_or_else(|_| "target/release/mfasync".into());
    println!("| users | full sync s | {CHANGED} changed: incremental sync s | entries read | quiet incremental s |");
    println!("| --- | --- | --- | --- | --- |");
    for n in sizes {
        eprintln!("seeding slapd with {n} users ...");
        let slapd = mfasync_testkit::Slapd::start(&generate(n));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let cfg = dir.path().join("bench.toml");
        let db = format!("sqlite://{}", dir.path().join("bench.db").display());
        let config = format!(
            "[directory]\nsource = \"ldap\"\nservers = [\"{url}\"]\nbase_dn = \"{BASE}\"\n[directory.query_bind]\ntype = \"simple\"\ndn = \"{dn}\"\npassword = \"{pw}\"\n[filters]\nuser = \"(objectClass=inetOrgPerson)\"\nsecurity_group = \"(objectClass=groupOfNames)\"\n[attributes]\nunique_id = \"entryUUID\"\nunique_id_type = \"string\"\ndistinguished_name = \"entryDN\"\nusername = [\"uid\"]\n[[sync.items]]\nkind = \"container\"\ndn = \"ou=Bench,{BASE}\"\n[sync.items.user]\nphone = \"mobile\"\n",
            url = slapd.url,
            dn = slapd.admin_dn,
            pw = slapd.admin_password,
        );
        std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("write config: {e}"));
        let cfg_s = cfg.display().to_string();
        run(&bin, &db, &["config", "apply", &cfg_s]);
        let (full, _) = run(&bin, &db, &["sync", "--full"]);
        let (quiet, _) = run(&bin, &db, &["--json", "sync"]);
        let mut ldif = String::new();
        for k in 0..CHANGED {
            let i = k * (n / CHANGED);
            let _ = write!(
                ldif,
                "dn: uid=u{i:07},ou=Bench,{BASE}\nchangetype: modify\nreplace: mobile\nmobile: +1 206 555 {k:04}\n\n"
            );
        }
        slapd.ldapmodify(&ldif);
        let (inc, out) = run(&bin, &db, &["--json", "sync"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(v["mode"], "incremental", "{out}");
        assert_eq!(v["updated"], CHANGED, "{out}");
        println!(
            "| {n} | {full:.2} | {inc:.3} | {} | {quiet:.3} |",
            v["entries_read"]
        );
    }
}
