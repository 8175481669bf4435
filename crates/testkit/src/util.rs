use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bind to port 0, read it, close).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("testkit: cannot bind 127.0.0.1:0: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("testkit: local_addr: {e}"))
        .port()
}

/// A UDP port of 127.0.0.1 free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .unwrap_or_else(|e| panic!("testkit: cannot bind udp 127.0.0.1:0: {e}"))
        .port()
}

pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion, capturing output.
pub(crate) fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("testkit: cannot run `{}`: {e}", describe(cmd)))
}

/// Run a command and panic with its full output if it fails.
pub(crate) fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = output(cmd);
    if !out.status.success() {
        panic!(
            "testkit: {what} failed ({}): `{}`\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            describe(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Poll `ready` until true; panic (with the server log) when `timeout` passes or the child exits.
pub(crate) fn wait_ready(
    what: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) {
    let start = Instant::now();
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "testkit: {what} exited during start-up ({status}); log {}:\n{}",
                log.display(),
                tail_file(log)
            );
        }
        if start.elapsed() > timeout {
            panic!(
                "testkit: {what} not ready after {timeout:?}; log {}:\n{}",
                log.display(),
                tail_file(log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn tail_file(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(60);
    lines[from..].join("\n")
}

/// Write `content` to a fresh file in `dir` and return its path.
pub(crate) fn write_temp(dir: &Path, prefix: &str, content: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let p = dir.join(format!(
        "{prefix}-{}.ldif",
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, content)
        .unwrap_or_else(|e| panic!("testkit: cannot write {}: {e}", p.display()));
    p
}

/// LDAP simple-bind tool invocations shared by Slapd and Samba.
pub(crate) struct LdapTools<'a> {
    pub url: &'a str,
    pub bind_dn: &'a str,
    pub password: &'a str,
    pub scratch: &'a Path,
}

impl LdapTools<'_> {
    fn base(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.arg("-x")
            .arg("-H")
            .arg(self.url)
            .arg("-D")
            .arg(self.bind_dn)
            .arg("-w")
            .arg(self.password)
            .env("LDAPTLS_REQCERT", "never");
        c
    }

    pub fn ldapadd(&self, ldif: &str) {
        let f = write_temp(self.scratch, "add", ldif);
        run_ok(self.base("ldapadd").arg("-f").arg(&f), "ldapadd");
        let _ = std::fs::remove_file(f);
    }

    pub fn ldapmodify(&self, ldif: &str) {
        let f = write_temp(self.scratch, "modify", ldif);
        run_ok(self.base("ldapmodify").arg("-f").arg(&f), "ldapmodify");
        let _ = std::fs::remove_file(f);
    }

    pub fn ldapdelete(&self, dn: &str) {
        run_ok(self.base("ldapdelete").arg(dn), "ldapdelete");
    }
}
