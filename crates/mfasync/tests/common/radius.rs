//! The RADIUS server under test: `serve` with a `[radius]` table, Debian's
//! `radclient` as the VPN, and OATH codes as an authenticator app makes them.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{KillOnDrop, Mfa};

pub const SECRET: &str = "radius shared secret for the test";
/// The service's sealing key (OATH secrets are stored sealed), given to every command.
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Every command of `m` gets the sealing key.
pub fn with_key(m: &mut Mfa) {
    m.env.push(("MFASYNC_SECRET_KEY".into(), KEY.into()));
}

pub struct Served {
    _child: KillOnDrop,
    pub http: String,
    pub radius: u16,
    /// What serve wrote to stderr (its log).
    pub log: std::path::PathBuf,
}

impl Served {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The `[radius]` table listening on `port`, `clients` its `[[radius.clients]]`
/// (`SECRET_FILE` replaced by a file holding [`SECRET`]).
pub fn radius_table(m: &Mfa, port: u16, clients: &str) -> String {
    let secret_file = m.config_file(&format!("{SECRET}\n"));
    let clients = clients.replace("SECRET_FILE", &secret_file.display().to_string());
    format!("[radius]\nlisten = \"127.0.0.1:{port}\"\n{clients}")
}

/// `serve` of `m` (its configuration applied, with a `[radius]` on `radius`), once it answers.
pub async fn serve(m: &Mfa, radius: u16) -> Served {
    let addr = format!("127.0.0.1:{}", mfasync_testkit::free_port());
    let log = m.dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_mfasync"))
        .args(["--database", &m.url, "serve", "--listen", &addr])
        .args(["--insecure-cookies"])
        .envs(m.env.iter().map(|(k, v)| (k, v)))
        // everything logged: no secret, password or code may be in it
        .env("MFASYNC_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let served = Served {
        _child: KillOnDrop(child),
        http: format!("http://{addr}"),
        radius,
        log,
    };
    let t0 = Instant::now();
    // the RADIUS socket is bound before the HTTP one
    while reqwest::get(format!("{}/healthz", served.http))
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "serve did not start: {}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served
}

/// One Access-Request by `radclient` (one try, 2 s), `attributes` one per line.
pub fn radclient(port: u16, secret: &str, attributes: &str) -> String {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "2"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["auth", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient (freeradius-utils, scripts/install-deps)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attributes.as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn request(user: &str, password: &str) -> String {
    format!("User-Name = {user}\nUser-Password = \"{password}\"\nMessage-Authenticator = 0x00\n")
}

/// Enroll `user` (`users otp enroll`): the secret, read back from the printed URI.
pub fn enroll(m: &Mfa, user: &str) -> Vec<u8> {
    let out = m.ok(&["--json", "users", "otp", "enroll", user]).json();
    let uri = out["otpauth_uri"].as_str().unwrap().to_string();
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap()
}

/// The code an authenticator app shows now.
pub fn code_now(secret: &[u8]) -> String {
    use mfasync_radius::totp;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "{:06}",
        totp::hotp(secret, totp::step_at(now), totp::DIGITS)
    )
}

/// The State of an Access-Challenge as radclient prints it ("State = 0x…").
pub fn state_of(out: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("State = "))
        .unwrap_or_else(|| panic!("no State in\n{out}"))
        .to_string()
}

pub fn answer_to(user: &str, code: &str, state: &str) -> String {
    format!("User-Name = {user}\nUser-Password = \"{code}\"\nState = {state}\nMessage-Authenticator = 0x00\n")
}
