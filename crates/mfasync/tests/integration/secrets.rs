//! Secrets at rest and in reach (issue 18 item 6), with the real binary, a
//! real slapd and the SQLite file read directly: the database is created
//! 0600 (and a readable one is warned about); with a secret key every stored
//! configuration version holds its passwords sealed (`config apply`, the
//! API, the portal) and a sync still binds; `db rekey` seals the versions
//! stored before the key and moves passwords to a new key; password files
//! are read as the first line of a regular file inside the secrets
//! directories only, and the portal and the API refuse others, and
//! `password_env` names of mfasync's own variables.

use crate::common::KillOnDrop;

use crate::common::portal::{between, sign_in};
use crate::common::{Mfa, Out};
use mfasync_testkit::Slapd;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BASE: &str = "dc=example,dc=com";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const NEW_KEY: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";
const SMTP_PASSWORD: &str = "smtp-Secret-4711";

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = format!("dn: ou=Sec,{BASE}\nobjectClass: organizationalUnit\nou: Sec\n\n");
        for i in 1..=3 {
            l.push_str(&format!(
                "dn: uid=sec{i},ou=Sec,{BASE}\nobjectClass: inetOrgPerson\nuid: sec{i}\ncn: sec{i}\nsn: sec{i}\n\n"
            ));
        }
        Slapd::start(&l)
    })
}

/// A configuration synchronizing ou=Sec; `bind` is the query bind's
/// password line (`password = "…"`, `password_file = "…"`, …).
fn config(bind: &str) -> String {
    let s = slapd();
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        &format!("ou=Sec,{BASE}"),
        5,
        (&s.admin_dn, "UNUSED"),
    )
    .replace("password = \"UNUSED\"", bind);
    format!(
        "# the test's configuration\n{head}\n[sync]\nenabled = false\n\
         [[sync.items]]\nkind = \"container\"\ndn = \"ou=Sec,{BASE}\"\n\
         [smtp]\nserver = \"smtp://127.0.0.1:25\"\nfrom = \"mfa@example.com\"\n\
         username = \"mfa\"\npassword = \"{SMTP_PASSWORD}\"\n"
    )
}

fn inline_bind() -> String {
    format!("password = \"{}\"", slapd().admin_password)
}

/// `mfasync` with extra environment variables.
fn run_env(m: &Mfa, env: &[(&str, &Path)], args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mfasync"));
    cmd.arg("--database").arg(&m.url).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run mfasync");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn key_file(m: &Mfa, name: &str, hex: &str) -> PathBuf {
    let p = m.dir.path().join(name);
    std::fs::write(&p, format!("{hex}\n")).unwrap();
    p
}

/// The stored text of every configuration version, oldest first, read from
/// the SQLite file itself.
fn stored_texts(m: &Mfa) -> Vec<String> {
    let path = m.url.trim_start_matches("sqlite://");
    let out = Command::new("sqlite3")
        .args([
            path,
            "SELECT hex(toml) FROM config_versions ORDER BY version",
        ])
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|h| {
            let bytes: Vec<u8> = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect();
            String::from_utf8(bytes).unwrap()
        })
        .collect()
}

fn assert_no_clear_password(m: &Mfa) {
    let texts = stored_texts(m);
    assert!(!texts.is_empty());
    for (i, t) in texts.iter().enumerate() {
        assert!(
            !t.contains(&slapd().admin_password) && !t.contains(SMTP_PASSWORD),
            "version {} holds a password in clear:\n{t}",
            i + 1
        );
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

struct Served {
    /// Killed when the test ends.
    _child: KillOnDrop,
    addr: String,
}

/// `serve` under umask 022, with `env` and `extra` arguments; answering.
fn serve(m: &Mfa, env: &[(&str, &Path)], extra: &[&str]) -> Served {
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen", &addr])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let served = Served {
        _child: KillOnDrop(cmd.spawn().expect("spawn serve")),
        addr,
    };
    let t0 = Instant::now();
    loop {
        let up = rt().block_on(async {
            reqwest::get(format!("http://{}/healthz", served.addr))
                .await
                .is_ok_and(|r| r.status() == 200)
        });
        if up {
            return served;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An API token for `m`'s database.
fn api_token(m: &Mfa) -> &'static str {
    let token = "secrets-api-token-0123456789";
    rt().block_on(async {
        let store = mfasync_store::open(&m.url).await.unwrap();
        crate::common::add_api_token(store.as_ref(), "admin", "test", token).await;
        store.close().await;
    });
    token
}

/// `PUT /api/v1/config`: (status, body).
fn api_put_config(srv: &Served, token: &str, toml: &str) -> (u16, Value) {
    rt().block_on(async {
        let r = http()
            .put(format!("http://{}/api/v1/config", srv.addr))
            .bearer_auth(token)
            .body(toml.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

/// A portal session of the local administrator "root": (session cookie, CSRF token).
fn portal_session(m: &Mfa, srv: &Served) -> (String, String) {
    let set = m.run_stdin(
        &["admin", "set-password", "root", "--password-stdin"],
        "correct horse battery\n",
    );
    assert_eq!(set.code, 0, "{}", set.stderr);
    rt().block_on(async {
        let base = format!("http://{}", srv.addr);
        let session = sign_in(&http(), &base, "root", "correct horse battery").await;
        let page = http()
            .get(format!("{base}/settings"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (session, between(&page, "name=\"csrf\" value=\"", "\""))
    })
}

/// The portal's "Validate and apply" of a whole configuration: (status, page).
fn portal_apply(srv: &Served, (session, csrf): &(String, String), toml: &str) -> (u16, String) {
    rt().block_on(async {
        let base = format!("http://{}", srv.addr);
        let r = http()
            .post(format!("{base}/settings"))
            .header("cookie", session)
            .header("origin", &base)
            .header("sec-fetch-site", "same-origin")
            .form(&[("csrf", csrf.as_str()), ("toml", toml)])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn a_new_database_is_private_and_a_readable_one_is_warned_about() {
    let m = Mfa::new();
    let db = m.dir.path().join("mfa.db");
    {
        // (serve keeps the database open: its -wal and -shm are there)
        let _srv = serve(&m, &[], &[]);
        for suffix in ["", "-wal", "-shm"] {
            let file = m.dir.path().join(format!("mfa.db{suffix}"));
            assert_eq!(mode(&file), 0o600, "{} under umask 022", file.display());
        }
    }
    let quiet = m.run(&["--json", "history"]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("WARN"), "{}", quiet.stderr);

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = m.run(&["--json", "history"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("WARN")
            && o.stderr.contains(&db.display().to_string())
            && o.stderr.contains("0644"),
        "{}",
        o.stderr
    );
    assert_eq!(mode(&db), 0o644, "left as the administrator set it");
}

#[test]
fn with_a_key_every_stored_version_holds_its_passwords_sealed_and_a_sync_binds() {
    let m = Mfa::new();
    let key = key_file(&m, "secret.key", KEY);
    let env = [("MFASYNC_SECRET_KEY_FILE", key.as_path())];
    let file = m.config_file(&config(&inline_bind()));
    let o = run_env(&m, &env, &["config", "apply", file.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !o.stderr.contains("in clear"),
        "no warning with a key: {}",
        o.stderr
    );
    assert_no_clear_password(&m);
    let stored = &stored_texts(&m)[0];
    assert!(
        stored.starts_with("# the test's configuration\n")
            && stored.matches("password_encrypted = \"v1:").count() == 2,
        "sealed in place, the rest as written:\n{stored}"
    );

    // a sync binds with the sealed password; export shows none of it
    let s = run_env(&m, &env, &["--json", "sync", "--full"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert_eq!(m.users().len(), 3);
    let export = run_env(&m, &env, &["config", "export"]);
    assert!(
        export.code == 0
            && !export.stdout.contains("password")
            && !export.stdout.contains(&slapd().admin_password),
        "{}",
        export.stdout
    );
    // without the key, the sealed password cannot be opened: named, not shown
    let no_key = m.run(&["directory", "test"]);
    assert!(
        no_key.code == 1
            && no_key
                .stderr
                .contains("directory.query_bind.password_encrypted: no secret key"),
        "{}",
        no_key.stderr
    );

    // through the API and the portal of a server with the key
    let token = api_token(&m);
    let srv = serve(&m, &env, &[]);
    let (status, body) = api_put_config(&srv, token, &config(&inline_bind()));
    assert_eq!(status, 200, "{body}");
    let session = portal_session(&m, &srv);
    let (status, page) = portal_apply(&srv, &session, &config(&inline_bind()));
    assert_eq!(status, 200, "{page}");
    assert_eq!(stored_texts(&m).len(), 3);
    assert_no_clear_password(&m);
    // (the server holds the sync lease: the test binds as a sync would)
    let t = run_env(&m, &env, &["directory", "test"]);
    assert_eq!(t.code, 0, "{}{}", t.stdout, t.stderr);
}

#[test]
fn without_a_key_config_apply_warns_and_db_rekey_seals_the_old_versions() {
    let m = Mfa::new();
    let file = m.config_file(&config(&inline_bind()));
    let o = m.run(&["config", "apply", file.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let warnings: Vec<_> = o
        .stderr
        .lines()
        .filter(|l| l.contains("in clear"))
        .collect();
    assert_eq!(warnings.len(), 1, "warned once: {}", o.stderr);
    assert!(
        warnings[0].contains("directory.query_bind.password, smtp.password")
            && warnings[0].contains("password_file")
            && warnings[0].contains("MFASYNC_SECRET_KEY_FILE")
            && !o.stderr.contains(&slapd().admin_password),
        "{}",
        o.stderr
    );
    m.apply(
        &config(&inline_bind()).replace("enabled = false", "enabled = false\ninterval = \"1h\""),
    );
    assert!(stored_texts(&m).iter().all(|t| t.contains(SMTP_PASSWORD)));

    // no key: refused, nothing changed
    let o = m.run(&["db", "rekey"]);
    assert!(
        o.code == 1 && o.stderr.contains("MFASYNC_SECRET_KEY_FILE"),
        "{}",
        o.stderr
    );
    let key = key_file(&m, "secret.key", KEY);
    let env = [("MFASYNC_SECRET_KEY_FILE", key.as_path())];
    let o = run_env(&m, &env, &["--json", "db", "rekey"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.json(),
        serde_json::json!({"ok": true, "versions": [2, 1], "sealed": 4, "resealed": 0, "otp_resealed": 0})
    );
    assert_no_clear_password(&m);
    let again = run_env(&m, &env, &["db", "rekey"]);
    assert!(
        again.code == 0 && again.stdout.starts_with("nothing to do"),
        "{}",
        again.stdout
    );
    let audit = m.ok(&["--json", "audit", "--limit", "1"]).json();
    assert_eq!(audit[0]["action"], "config-rekey", "{audit}");
    let s = run_env(&m, &env, &["--json", "sync", "--full"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    // an OATH secret is sealed too: refused without a key, then enrolled with this one
    let o = m.run(&["users", "otp", "enroll", "sec1"]);
    assert!(
        o.code == 1 && o.stderr.contains("no sealing key"),
        "{}",
        o.stderr
    );
    let o = run_env(&m, &env, &["--json", "users", "otp", "enroll", "sec1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);

    // a new key: the passwords move to it; the old one no longer opens them
    let new = key_file(&m, "new.key", NEW_KEY);
    let new_env = [("MFASYNC_SECRET_KEY_FILE", new.as_path())];
    let o = run_env(
        &m,
        &new_env,
        &[
            "--json",
            "db",
            "rekey",
            "--old-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.json()["resealed"], 4);
    assert_eq!(o.json()["otp_resealed"], 1);
    let s = run_env(&m, &new_env, &["--json", "sync", "--full"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    let old = run_env(&m, &env, &["directory", "test"]);
    assert!(
        old.code == 1 && old.stderr.contains("cannot be opened with this secret key"),
        "{}",
        old.stderr
    );
    // a third key opens nothing: refused, nothing changed
    let third = key_file(&m, "third.key", &KEY.replace('0', "9"));
    let before = stored_texts(&m);
    let o = run_env(
        &m,
        &[("MFASYNC_SECRET_KEY_FILE", third.as_path())],
        &["db", "rekey", "--old-key-file", key.to_str().unwrap()],
    );
    assert!(
        o.code == 1 && o.stderr.contains("configuration version 2: directory.query_bind.password_encrypted: opened by neither"),
        "{}",
        o.stderr
    );
    assert_eq!(stored_texts(&m), before);
}

#[test]
fn password_files_are_the_first_line_of_a_regular_file_in_a_secrets_directory() {
    let m = Mfa::new();
    let secrets = m.dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let pw = secrets.join("bind.pw");
    // the first line only: the second would make the bind fail
    std::fs::write(
        &pw,
        format!("{}\nnot the password\n", slapd().admin_password),
    )
    .unwrap();
    let dir_arg = secrets.to_str().unwrap();
    let bind = |path: &Path| format!("password_file = \"{}\"", path.display());
    let test = |extra: &[&str]| {
        let mut args = vec!["directory", "test"];
        args.extend_from_slice(extra);
        m.run(&args)
    };

    // applied by the operator: stored, with a warning while outside
    let o = m.run(&[
        "config",
        "apply",
        m.config_file(&config(&bind(&pw))).to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("directory.query_bind.password_file: ")
            && o.stderr
                .contains("is not in a secrets directory (/etc/mfasync"),
        "{}",
        o.stderr
    );
    // read only inside the process's secrets directories
    let o = test(&[]);
    assert!(
        o.code == 1 && o.stderr.contains("is not in a secrets directory"),
        "{}",
        o.stderr
    );
    let o = test(&["--secrets-dir", dir_arg]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let o = m.run(&["--secrets-dir", dir_arg, "--json", "sync", "--full"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // out of it by a symbolic link or `..`: refused
    std::os::unix::fs::symlink("/etc/passwd", secrets.join("link")).unwrap();
    for p in [secrets.join("link"), secrets.join("../secrets/../mfa.db")] {
        m.apply(&config(&bind(&p)));
        let o = test(&["--secrets-dir", dir_arg]);
        assert!(
            o.code == 1 && o.stderr.contains("is not in a secrets directory"),
            "{p:?}: {}",
            o.stderr
        );
    }

    // a FIFO (not waited on), a directory, a device: refused unread, named
    let fifo = secrets.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (path, what) in [
        (fifo.clone(), "is a FIFO"),
        (secrets.clone(), "is a directory"),
        (PathBuf::from("/dev/zero"), "is a device"),
    ] {
        m.apply(&config(&bind(&path)));
        let t0 = Instant::now();
        let o = test(&["--secrets-dir", dir_arg, "--secrets-dir", "/dev"]);
        assert!(
            o.code == 1
                && o.stderr.contains(&format!(
                    "directory.query_bind.password_file: {} {what}, not a regular file",
                    path.display()
                )),
            "{}",
            o.stderr
        );
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    // a first line over 4096 bytes
    let long = secrets.join("long.pw");
    std::fs::write(&long, "x".repeat(5000)).unwrap();
    m.apply(&config(&bind(&long)));
    let o = test(&["--secrets-dir", dir_arg]);
    assert!(
        o.code == 1 && o.stderr.contains("longer than 4096 bytes"),
        "{}",
        o.stderr
    );
}

#[test]
fn mfasync_variables_are_never_a_password() {
    let m = Mfa::new();
    for (toml, key) in [
        (
            config("password_env = \"MFASYNC_SECRET_KEY\""),
            "directory.query_bind.password_env",
        ),
        (
            config(&inline_bind()).replace(
                &format!("password = \"{SMTP_PASSWORD}\""),
                "password_env = \"MFASYNC_SECRET_KEY_FILE\"",
            ),
            "smtp.password_env",
        ),
    ] {
        let o = m.run(&["config", "apply", m.config_file(&toml).to_str().unwrap()]);
        assert!(
            o.code == 2 && o.stderr.contains(&format!("{key}: MFASYNC_")),
            "{}",
            o.stderr
        );
    }
    assert!(!m.dir.path().join("mfa.db").exists(), "nothing stored");
}

#[test]
fn the_portal_and_the_api_refuse_secrets_out_of_reach() {
    let m = Mfa::new();
    let secrets = m.dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(
        secrets.join("bind.pw"),
        format!("{}\n", slapd().admin_password),
    )
    .unwrap();
    m.apply(&config(&inline_bind()));
    let token = api_token(&m);
    let srv = serve(&m, &[], &["--secrets-dir", secrets.to_str().unwrap()]);
    let session = portal_session(&m, &srv);
    // (without a key the portal refuses an inline SMTP password first)
    let smtp_env = |t: String| {
        t.replace(
            &format!("password = \"{SMTP_PASSWORD}\""),
            "password_env = \"SMTP_PW\"",
        )
    };
    let outside = smtp_env(config("password_file = \"/etc/shadow\""));
    let reserved = smtp_env(config("password_env = \"MFASYNC_SECRET_KEY\""));

    let (status, body) = api_put_config(&srv, token, &outside);
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].to_string();
    assert!(
        errors.contains(
            "directory.query_bind.password_file: /etc/shadow is not in a secrets directory"
        ),
        "{errors}"
    );
    let (status, body) = api_put_config(&srv, token, &reserved);
    assert!(
        status == 422
            && body["errors"]
                .to_string()
                .contains("directory.query_bind.password_env: MFASYNC_SECRET_KEY"),
        "{body}"
    );
    let (status, page) = portal_apply(&srv, &session, &outside);
    assert!(
        status == 422
            && page.contains(
                "directory.query_bind.password_file: /etc/shadow is not in a secrets directory"
            ),
        "{page}"
    );
    let (status, page) = portal_apply(&srv, &session, &reserved);
    assert!(
        status == 422 && page.contains("directory.query_bind.password_env: MFASYNC_SECRET_KEY"),
        "{page}"
    );
    assert_eq!(stored_texts(&m).len(), 1, "nothing stored");

    // a file in the server's secrets directory is taken, and bound with
    let inside = config(&format!(
        "password_file = \"{}\"",
        secrets.join("bind.pw").display()
    ));
    let (status, body) = api_put_config(&srv, token, &inside);
    assert_eq!(status, 200, "{body}");
    let report = rt().block_on(async {
        http()
            .post(format!("http://{}/api/v1/directory/test", srv.addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    assert_eq!(report["ok"], true, "{report}");

    // a version stored before these checks (here: by the operator): the
    // server does not read the file
    m.apply(&config("password_file = \"/etc/passwd\""));
    let report = rt().block_on(async {
        http()
            .post(format!("http://{}/api/v1/directory/test", srv.addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        report.contains(
            "directory.query_bind.password_file: /etc/passwd is not in a secrets directory"
        ) && !report.contains("root:x:0"),
        "{report}"
    );
}
