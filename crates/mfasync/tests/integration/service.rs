//! `mfasync` run as a service: `serve` tells systemd it is ready (READY=1 on
//! the NOTIFY_SOCKET, only once its port accepts connections), pings the
//! watchdog and says STOPPING=1; stderr written to a file carries no colour
//! codes; `--log-format json` writes one JSON object per line; the starter
//! configurations of `config example` are valid; completions and man pages
//! are generated.

use crate::common::KillOnDrop;

use crate::common::Mfa;
use serde_json::Value;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Served {
    child: KillOnDrop,
    addr: String,
}

impl Served {
    /// SIGTERM, as systemd stops a service; the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait serve") {
                return status;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `mfasync serve` on a free port of the database of `m` (no configuration
/// stored: the service starts and waits for one), stderr into `stderr`.
fn serve(m: &Mfa, env: &[(&str, &str)], args: &[&str], stderr: &Path) -> Served {
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let file = std::fs::File::create(stderr).expect("stderr file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mfasync"));
    cmd.args(["--database", &m.url])
        .args(args)
        .args(["serve", "--listen", &addr])
        .env_remove("MFASYNC_LOG")
        .env_remove("MFASYNC_LOG_FORMAT")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(file));
    Served {
        child: KillOnDrop(cmd.spawn().expect("spawn serve")),
        addr,
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The next datagram on the notification socket, as text.
fn next_message(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the socket's timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn serve_notifies_ready_once_it_accepts_connections_then_pings_the_watchdog_and_says_stopping() {
    let m = Mfa::new();
    let socket_path = m.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).expect("bind the notification socket");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let log = m.dir.path().join("stderr.log");
    let mut srv = serve(
        &m,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf8")),
            // a 3 s watchdog: pings every second
            ("WATCHDOG_USEC", "3000000"),
        ],
        &[],
        &log,
    );

    let ready = next_message(&sock);
    // READY=1 comes only when the port takes connections
    let accepted = std::net::TcpStream::connect(&srv.addr);
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first notification: {ready:?}"
    );
    assert!(
        accepted.is_ok(),
        "READY=1 arrived but {} refused a connection: {accepted:?}",
        srv.addr
    );
    assert!(
        ready.contains(&format!("STATUS=serving on http://{}", srv.addr)),
        "{ready:?}"
    );

    // watchdog pings follow
    let ping = next_message(&sock);
    assert_eq!(ping.trim_end(), "WATCHDOG=1");
    let ping = next_message(&sock);
    assert_eq!(ping.trim_end(), "WATCHDOG=1");

    let status = srv.terminate();
    assert!(status.success(), "serve exited with {status}");
    // the pings may have one more in flight; then STOPPING=1
    let mut last = next_message(&sock);
    while last.trim_end() == "WATCHDOG=1" {
        last = next_message(&sock);
    }
    assert_eq!(last.trim_end(), "STOPPING=1");
}

#[test]
fn serve_without_notify_socket_starts_as_before() {
    let m = Mfa::new();
    let log = m.dir.path().join("stderr.log");
    let srv = serve(&m, &[], &[], &log);
    wait_for("serving on", || contains(&read(&log), "serving on http://"));
    assert!(std::net::TcpStream::connect(&srv.addr).is_ok());
}

#[test]
fn stderr_in_a_file_carries_no_colour_codes() {
    // MFASYNC_LOG=debug: tracing's level names, which it colours on a terminal
    let m = Mfa::new();
    let log = m.dir.path().join("serve.log");
    let mut srv = serve(&m, &[("MFASYNC_LOG", "debug")], &[], &log);
    // no configuration stored: a warning at once
    wait_for("the no-configuration warning", || {
        contains(&read(&log), "no cycle: no configuration yet")
    });
    srv.terminate();
    let text = read(&log);
    assert!(
        contains(&text, "DEBUG"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    assert!(
        !text.contains(&0x1b),
        "escape codes in serve's log:\n{}",
        String::from_utf8_lossy(&text)
    );

    // a one-shot command's warning and debug lines, and a failure
    let cfg = m.config_file(&crate::common::openldap_directory(
        "\"ldap://127.0.0.1:9\"",
        "dc=example,dc=com",
        1,
        ("cn=admin,dc=example,dc=com", "x"),
    ));
    let cfg = cfg.to_str().expect("utf8");
    let text = std::fs::read_to_string(cfg)
        .expect("read")
        .replace("password = \"x\"", "password_file = \"/nonexistent/pw\"");
    std::fs::write(cfg, text).expect("write");
    for (args, code) in [
        (vec!["config", "apply", "--dry-run", cfg], 0),
        (vec!["users", "export"], 0),
        (vec!["directory", "test"], 1),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mfasync"))
            .args(["--database", &m.url])
            .args(&args)
            .env("MFASYNC_LOG", "debug")
            .env_remove("MFASYNC_LOG_FORMAT")
            .output()
            .expect("run mfasync");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?} wrote nothing to stderr");
        assert!(
            !out.stderr.contains(&0x1b),
            "{args:?}: escape codes in\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every line of `text` parsed as a JSON object.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\nin:\n{text}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let m = Mfa::new();
    let log = m.dir.path().join("serve.json");
    let mut srv = serve(
        &m,
        &[("MFASYNC_LOG", "info")],
        &["--log-format", "json"],
        &log,
    );
    wait_for("the no-configuration warning", || {
        contains(&read(&log), "no cycle: no configuration yet")
    });
    assert!(srv.terminate().success());
    let text = String::from_utf8(read(&log)).expect("utf8");
    let lines = json_lines(&text);
    let find = |needle: &str| {
        lines
            .iter()
            .find(|v| message(v).contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
    };
    let serving = find("serving on http://");
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(serving["timestamp"].is_string(), "{serving}");
    assert_eq!(find("no cycle: no configuration yet")["level"], "WARN");
    find("stopping");

    // the environment variable, and a failure's reason
    let out = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "config", "apply", "/nonexistent.toml"])
        .env("MFASYNC_LOG_FORMAT", "json")
        .env_remove("MFASYNC_LOG")
        .output()
        .expect("run mfasync");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(
        message(&lines[0]).contains("cannot read /nonexistent.toml"),
        "{stderr}"
    );
}

#[test]
fn config_examples_are_valid_configurations() {
    let m = Mfa::new();
    // (password files are read from secrets directories only)
    let secrets = m.dir.path().to_str().expect("utf8");
    let pw = m.dir.path().join("bind.password");
    std::fs::write(&pw, "secret\n").expect("password file");
    for args in [
        vec!["config", "example"],
        vec!["config", "example", "--openldap"],
    ] {
        let text = m.ok(&args).stdout;
        assert!(text.starts_with("# mfasync configuration"), "{text}");
        assert!(text.contains("password_file = \"/etc/mfasync/bind.password\""));
        // valid as it is; the password file still to be made: a warning naming it
        let missing = m.dir.path().join("no-such.password");
        let missing = missing.to_str().expect("utf8");
        let file = m.config_file(&text.replace("/etc/mfasync/bind.password", missing));
        let file = file.to_str().expect("utf8");
        let o = m.ok(&[
            "--secrets-dir",
            secrets,
            "config",
            "apply",
            "--dry-run",
            file,
        ]);
        assert!(
            o.stderr
                .contains(&format!("password_file: cannot read {missing}")),
            "{}",
            o.stderr
        );
        // with the password file in place: valid, no warning, and stored
        let file =
            m.config_file(&text.replace("/etc/mfasync/bind.password", pw.to_str().expect("utf8")));
        let file = file.to_str().expect("utf8");
        let o = m.ok(&[
            "--secrets-dir",
            secrets,
            "config",
            "apply",
            "--dry-run",
            file,
        ]);
        assert_eq!(o.stderr, "", "{args:?}");
        m.ok(&["--secrets-dir", secrets, "config", "apply", file]);
        let exported = m.ok(&["config", "export"]).stdout;
        assert!(exported.contains("password_file"), "{exported}");
    }
    // the package installs the same text
    let ad = m.ok(&["config", "example"]).stdout;
    let packaged = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/mfasync.toml"
    ))
    .expect("packaging/mfasync.toml");
    assert_eq!(ad, packaged);
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let m = Mfa::new();
    let bash = m.ok(&["completions", "bash"]).stdout;
    assert!(bash.contains("_mfasync()"), "{bash}");
    assert!(bash.contains("set-password"), "subcommands completed");
    let zsh = m.ok(&["completions", "zsh"]).stdout;
    assert!(zsh.starts_with("#compdef mfasync"), "{zsh}");
    let fish = m.ok(&["completions", "fish"]).stdout;
    assert!(fish.contains("complete -c mfasync"), "{fish}");

    let dir = m.dir.path().join("man");
    let listed = m.ok(&["manpages", dir.to_str().expect("utf8")]).stdout;
    for page in [
        "mfasync.1",
        "mfasync-config.1",
        "mfasync-config-example.1",
        "mfasync-serve.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie"), "{page}: {text}");
        assert!(listed.contains(page), "{listed}");
    }
    let main = std::fs::read_to_string(dir.join("mfasync.1")).expect("mfasync.1");
    for section in [
        "ENVIRONMENT",
        "FILES",
        "MFASYNC_LOG_FORMAT",
        "mfasync\\-serve(1)",
    ] {
        assert!(
            main.contains(section),
            "{section} not in mfasync.1:\n{main}"
        );
    }
    // the hidden command has no page
    assert!(!dir.join("mfasync-manpages.1").exists());
}
