//! `scripts/bench [N]`: seeds a private slapd with N generated users (default
//! 100,000) and times, in one run: the raw directory read (`ldapsearch` with
//! paging, the floor), mfasync's first full sync into an empty database,
//! and a second full sync with no directory change. Prints ratios to the floor
//! and mfasync's peak RSS (from GNU time).
//!
//! The data: `inetOrgPerson` users `uid=u0000000..` spread over 10 OUs under
//! `ou=Bench` (the one container sync item), each with cn, sn, givenName,
//! mail, description and two phones (telephoneNumber with an extension,
//! mobile as backup phone; the numbers repeat every 10,000 users, so
//! 20,000 distinct numbers in all). `MFASYNC_BENCH_POSTGRES=1`: the syncs
//! write into a fresh database of a private PostgreSQL instead of SQLite.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

const BASE: &str = "dc=example,dc=com";

fn generate(n: usize) -> String {
    let mut s = String::with_capacity(n * 330);
    let _ = write!(
        s,
        "dn: ou=Bench,{BASE}\nobjectClass: organizationalUnit\nou: Bench\n\n"
    );
    for d in 0..10 {
        let _ = write!(
            s,
            "dn: ou=Dept{d},ou=Bench,{BASE}\nobjectClass: organizationalUnit\nou: Dept{d}\n\n"
        );
    }
    for i in 0..n {
        let _ = write!(
            s,
            "dn: uid=u{i:07},ou=Dept{d},ou=Bench,{BASE}\nobjectClass: inetOrgPerson\nuid: u{i:07}\ncn: User {i}\nsn: Number{i}\ngivenName: User\nmail: u{i:07}@example.com\ntelephoneNumber: +1 425 555 {t:04} x{e}\nmobile: (425) 555-{m:04}\ndescription: benchmark user {i}\n\n",
            d = i % 10,
            t = i % 10000,
            e = i % 1000,
            m = (i * 7) % 10000,
        );
    }
    s
}

/// Run a command under GNU time; returns (seconds, peak RSS in KiB).
fn timed(cmd: &mut Command) -> (f64, u64) {
    let rss_file = std::env::temp_dir().join(format!("mfasync-bench-rss-{}", std::process::id()));
    let mut full = Command::new("/usr/bin/time");
    full.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            full.env(k, v);
        }
    }
    let t = Instant::now();
    let out = full.stdout(Stdio::null()).stderr(Stdio::inherit()).output();
    let secs = t.elapsed().as_secs_f64();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("{:?} failed: {}", cmd.get_program(), o.status),
        Err(e) => panic!("cannot run /usr/bin/time (apt-get install time): {e}"),
    }
    let rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    let _ = std::fs::remove_file(&rss_file);
    (secs, rss)
}

/// `mfasync config apply` of the benchmark's configuration into `db`.
fn apply_config(bin: &str, db: &str, cfg: &std::path::Path) {
    let status = Command::new(bin)
        .args(["--database", db, "config", "apply"])
        .arg(cfg)
        .stdout(Stdio::null())
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "config apply failed"
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    // MFASYNC_BENCH_COMPARE="BIN1 BIN2" times several builds taking turns on
    // the same seeded directory; otherwise MFASYNC_BIN (or the release build).
    let bins: Vec<String> = match std::env::var("MFASYNC_BENCH_COMPARE") {
        Ok(list) if !list.trim().is_empty() => list.split_whitespace().map(String::from).collect(),
        _ => vec![std::env::var("MFASYNC_BIN").unwrap_or_else(|_| "target/release/mfasync".into())],
    };
    // MFASYNC_BENCH_ROUNDS (default 3): rounds of floor + syncs; medians are reported.
    let rounds: usize = std::env::var("MFASYNC_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(3);
    eprintln!("seeding slapd with {n} users ...");
    let t = Instant::now();
    let slapd = mfasync_testkit::Slapd::start(&generate(n));
    eprintln!("seeded in {:.1}s", t.elapsed().as_secs_f64());

    // MFASYNC_BENCH_POSTGRES=1: a private PostgreSQL instead of SQLite files.
    let postgres =
        std::env::var_os("MFASYNC_BENCH_POSTGRES").map(|_| mfasync_testkit::Postgres::start());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cfg = dir.path().join("bench.toml");
    let config = format!(
        "[directory]\nsource = \"ldap\"\nservers = [\"{url}\"]\nbase_dn = \"{BASE}\"\n[directory.query_bind]\ntype = \"simple\"\ndn = \"{dn}\"\npassword = \"{pw}\"\n[filters]\nuser = \"(objectClass=inetOrgPerson)\"\n[attributes]\nunique_id = \"entryUUID\"\nunique_id_type = \"string\"\ndistinguished_name = \"entryDN\"\nusername = [\"uid\"]\n[[sync.items]]\nkind = \"container\"\ndn = \"ou=Bench,{BASE}\"\n[sync.items.user]\nbackup_phone = \"mobile\"\n",
        url = slapd.url,
        dn = slapd.admin_dn,
        pw = slapd.admin_password,
    );
    std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("write config: {e}"));
    // MFASYNC_BENCH_HOLD=1: keep the seeded directory for experiments and
    // print the configuration to apply; ends when killed.
    if std::env::var_os("MFASYNC_BENCH_HOLD").is_some() {
        println!("holding: config {}  ldap {}", cfg.display(), slapd.url);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }

    // The floor: the same entries and attributes, paged, straight to /dev/null.
    let attrs = [
        "entryUUID",
        "entryDN",
        "uid",
        "givenName",
        "sn",
        "mail",
        "description",
        "telephoneNumber",
        "homePhone",
        "pager",
        "mobile",
        "facsimileTelephoneNumber",
        "ipPhone",
        "userAccountControl",
    ];
    let mut ldapsearch = Command::new("ldapsearch");
    ldapsearch
        .args([
            "-LLL",
            "-x",
            "-H",
            &slapd.url,
            "-D",
            &slapd.admin_dn,
            "-w",
            &slapd.admin_password,
        ])
        .args([
            "-b",
            &format!("ou=Bench,{BASE}"),
            "-E",
            "pr=1000/noprompt",
            "(objectClass=inetOrgPerson)",
        ])
        .args(attrs);
    // Warm the server's caches once, untimed.
    timed(&mut ldapsearch);

    // Per build: (first ratio, second ratio, first s, second s, rss1, rss2) per round.
    let mut results: Vec<Vec<[f64; 6]>> = vec![Vec::new(); bins.len()];
    let mut floors = Vec::new();
    for round in 0..rounds {
        let (f1, _) = timed(&mut ldapsearch);
        let (f2, _) = timed(&mut ldapsearch);
        let floor = f1.min(f2);
        floors.push(floor);
        for (b, bin) in bins.iter().enumerate() {
            let db = match &postgres {
                Some(pg) => pg.fresh_database(),
                None => format!(
                    "sqlite://{}",
                    dir.path().join(format!("bench-{round}-{b}.db")).display()
                ),
            };
            apply_config(bin, &db, &cfg);
            let mut sync = Command::new(bin);
            sync.args(["--database", &db, "sync", "--full"]);
            let (first, rss1) = timed(&mut sync);
            let (second, rss2) = timed(&mut sync);
            eprintln!(
                "round {round} {bin}: floor {floor:.2} s, first {first:.2} s ({:.2}x), second {second:.2} s ({:.2}x)",
                first / floor,
                second / floor
            );
            results[b].push([
                first / floor,
                second / floor,
                first,
                second,
                (rss1 / 1024) as f64,
                (rss2 / 1024) as f64,
            ]);
            if round + 1 == rounds {
                wrapped(bin, &db, &cfg, dir.path());
            }
        }
    }

    println!(
        "users: {n}, rounds: {rounds} (medians; floor = best of two ldapsearch runs per round)"
    );
    println!("| build | floor s | first s | first ratio | second s | second ratio | peak RSS first / second |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let floor = median(floors);
    for (bin, rows) in bins.iter().zip(&results) {
        let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
        let max = |i: usize| rows.iter().map(|r| r[i]).fold(0.0, f64::max);
        println!(
            "| {bin} | {floor:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} MB / {:.0} MB (max) |",
            col(2),
            col(0),
            col(3),
            col(1),
            max(4),
            max(5)
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Profiling aid: MFASYNC_BENCH_WRAP="valgrind --tool=callgrind
/// --callgrind-out-file=/tmp/cg.{}.out" runs two more syncs under that
/// command, `{}` replaced by the run's name: "first" (a first sync into
/// another empty database) and "second" (a no-change sync of the
/// benchmark's database). Not part of the figures.
fn wrapped(bin: &str, db: &str, cfg: &std::path::Path, dir: &std::path::Path) {
    let Ok(wrap) = std::env::var("MFASYNC_BENCH_WRAP") else {
        return;
    };
    let db2 = format!("sqlite://{}", dir.join("wrapped.db").display());
    let _ = std::fs::remove_file(dir.join("wrapped.db"));
    apply_config(bin, &db2, cfg);
    for (run, database) in [("first", &db2), ("second", &db.to_string())] {
        let wrap = wrap.replace("{}", run);
        let mut words = wrap.split_whitespace();
        if let Some(program) = words.next() {
            let status = Command::new(program)
                .args(words)
                .arg(bin)
                .args(["--database", database, "sync", "--full"])
                .stdout(Stdio::null())
                .status();
            eprintln!("wrapped {run} sync: {status:?}");
        }
    }
}
