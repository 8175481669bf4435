//! Helpers shared by the end-to-end tests: run the real `mfasync` binary
//! against a database in a temp dir.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod portal;
pub mod radius;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Poll `f` until it holds; fail the test after `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Store the API token `token` acting for `username` (labelled `label`).
pub async fn add_api_token(
    store: &dyn mfasync_store::Store,
    username: &str,
    label: &str,
    token: &str,
) {
    store
        .token_create(&mfasync_store::AuthToken {
            token_hash: mfasync_web::auth::token_hash(token),
            kind: mfasync_store::TokenKind::Api,
            username: username.into(),
            label: Some(label.into()),
            csrf: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
        })
        .await
        .unwrap();
}

/// One MFA database (SQLite in a temp dir) and the binary.
pub struct Mfa {
    pub dir: tempfile::TempDir,
    pub url: String,
    /// Global options given to every command (such as `--secrets-dir DIR`).
    pub global_args: Vec<String>,
    /// Environment variables given to every command (never set on the test
    /// process: its modules share one process).
    pub env: Vec<(String, String)>,
}

impl Mfa {
    pub fn new() -> Mfa {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("mfa.db").display());
        Mfa {
            dir,
            url,
            global_args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn with_url(url: String) -> Mfa {
        Mfa {
            dir: tempfile::tempdir().expect("tempdir"),
            url,
            global_args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_stdin(args, "")
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Out {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
            .arg("--database")
            .arg(&self.url)
            .args(&self.global_args)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mfasync");
        if let Some(mut s) = child.stdin.take() {
            let _ = s.write_all(stdin.as_bytes());
        }
        let o = child.wait_with_output().expect("wait mfasync");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Run and require exit 0.
    pub fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(
            o.code, 0,
            "mfasync {args:?} failed:\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        );
        o
    }

    pub fn config_file(&self, toml: &str) -> PathBuf {
        let p = self.dir.path().join(format!("cfg-{}.toml", rand_suffix()));
        std::fs::write(&p, toml).expect("write config");
        p
    }

    pub fn apply(&self, toml: &str) {
        let p = self.config_file(toml);
        self.ok(&["config", "apply", p.to_str().expect("utf8 path")]);
    }

    pub fn sync_full(&self) -> Value {
        self.ok(&["--json", "sync", "--full"]).json()
    }

    pub fn users(&self) -> Vec<Value> {
        match self
            .ok(&["--json", "users", "export", "--format", "json"])
            .json()
        {
            Value::Array(v) => v,
            other => panic!("users export is not an array: {other}"),
        }
    }

    pub fn user(&self, username: &str) -> Option<Value> {
        self.users().into_iter().find(|u| u["username"] == username)
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Counts of a sync JSON output as a tuple (created, updated, enabled, disabled, removed, unchanged).
pub fn counts(v: &Value) -> (u64, u64, u64, u64, u64, u64) {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"));
    (
        n("created"),
        n("updated"),
        n("enabled"),
        n("disabled"),
        n("removed"),
        n("unchanged"),
    )
}

/// The step named `name` of a `directory test` report.
pub fn step(report: &Value, name: &str) -> Value {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} step: {report:#}"))
}

/// The `[directory]`, `[directory.query_bind]`, `[filters]` and
/// `[attributes]` tables for a test slapd (`servers`: the TOML array's
/// contents, e.g. `"ldap://…"`; a simple query bind as `bind_dn`): what the
/// OpenLDAP end-to-end tests share. Their own tables follow it.
pub fn openldap_directory(
    servers: &str,
    base_dn: &str,
    timeout_seconds: u32,
    (bind_dn, password): (&str, &str),
) -> String {
    format!(
        r#"
[directory]
source = "ldap"
servers = [{servers}]
base_dn = "{base_dn}"
timeout_seconds = {timeout_seconds}
[directory.query_bind]
type = "simple"
dn = "{bind_dn}"
password = "{password}"
[filters]
container = "(objectClass=organizationalUnit)"
security_group = "(objectClass=groupOfNames)"
user = "(objectClass=inetOrgPerson)"
[attributes]
unique_id = "entryUUID"
unique_id_type = "string"
distinguished_name = "entryDN"
username = ["uid"]
"#
    )
}

/// A child process (a `serve` under test) killed and reaped when dropped, so a failing
/// test leaves no server behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
