use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process;
use crate::util;

/// One SRV record served by [`Dns`].
#[derive(Debug, Clone)]
pub struct SrvRecord {
    /// e.g. `_ldap._tcp.dc._msdcs.mfa.test`
    pub name: String,
    /// e.g. `dc1.mfa.test`
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// A real DNS server (dnsmasq) on 127.0.0.1:random port, serving the given SRV and A/AAAA
/// records and answering NXDOMAIN for every other name (it forwards nothing). Works in the
/// host network namespace and in a private one. Stopped (process killed, temp dir removed)
/// by [`Dns::stop`] or on drop.
pub struct Dns {
    /// `127.0.0.1:PORT` (UDP and TCP)
    pub addr: SocketAddr,
    /// The dnsmasq log (queries are logged).
    pub log: PathBuf,
    tmp: Option<TempDir>,
    child: Option<Child>,
}

impl Dns {
    /// Start dnsmasq with `srv` records and `hosts` (name, address) records. Every name
    /// not listed is answered locally (NXDOMAIN / no records), never forwarded.
    pub fn start(srv: &[SrvRecord], hosts: &[(&str, IpAddr)]) -> Dns {
        Self::start_with_ttl(srv, hosts, 0)
    }

    /// Like [`Dns::start`], with answers valid for `ttl` seconds (dnsmasq `--local-ttl`;
    /// [`Dns::start`] answers with TTL 0, so clients do not cache).
    pub fn start_with_ttl(srv: &[SrvRecord], hosts: &[(&str, IpAddr)], ttl: u32) -> Dns {
        let tmp = tempfile::Builder::new()
            .prefix("mfasync-dns-")
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: cannot create temp dir: {e}"));
        let dir = tmp.path().to_path_buf();
        let port = util::free_port();
        let log = dir.join("dnsmasq.log");
        let mut cmd = Command::new("dnsmasq");
        cmd.arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--no-poll")
            // Authoritative for everything: unknown names are NXDOMAIN, nothing is forwarded.
            .arg("--local=/#/")
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg(format!("--port={port}"))
            .arg(format!("--local-ttl={ttl}"))
            .arg("--user=root")
            .arg("--log-queries")
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
        for r in srv {
            cmd.arg(format!(
                "--srv-host={},{},{},{},{}",
                r.name, r.target, r.port, r.priority, r.weight
            ));
        }
        for (name, ip) in hosts {
            cmd.arg(format!("--host-record={name},{ip}"));
        }
        let out = File::create(dir.join("dnsmasq.stdout"))
            .unwrap_or_else(|e| panic!("testkit: create dnsmasq.stdout: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("testkit: dup log fd: {e}"));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "testkit: cannot spawn dnsmasq ({e}); install it with scripts/install-deps \
                     (Debian package dnsmasq-base)"
                )
            });
        process::register(child.id(), libc::SIGTERM, Some(&dir), true);
        let stdout_log = dir.join("dnsmasq.stdout");
        util::wait_ready(
            "dnsmasq",
            &mut child,
            &stdout_log,
            Duration::from_secs(30),
            || util::port_open(port),
        );
        Dns {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            tmp: Some(tmp),
            child: Some(child),
        }
    }

    /// Kill dnsmasq and remove its temp dir. Idempotent; also done on drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::stop_child(&mut c, libc::SIGTERM);
        }
        if let Some(t) = self.tmp.take() {
            let _ = t.close();
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}
