//! Two Samba AD DCs of two forests with a real, two-way forest trust between them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process;
use crate::samba::{
    acquire_lock, add_global_options, check_environment, copy_template, kept_temp_dir, provisioned,
    template, DomainSpec, NsLock, Samba, StartOptions, ADMIN_PASSWORD, MFA,
};
use crate::util;

/// Base DN of the second domain of [`SambaTrust`].
pub const OTHER_BASE_DN: &str = "DC=other,DC=test";
/// Its Administrator (password: the same as [`Samba`]'s, `admin_password`).
pub const OTHER_ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=other,DC=test";

/// The second domain: `other.test`, NetBIOS `OTHER`, DC `dc2.other.test` on 127.0.0.2.
const OTHER: DomainSpec = DomainSpec {
    realm: "OTHER.TEST",
    netbios: "OTHER",
    host: "dc2",
    dns: "other.test",
    base_dn: OTHER_BASE_DN,
    ip: "127.0.0.2",
};

/// While the trust is created, each DC runs Samba's RPC and SMB services (LSA and netlogon
/// over named pipes) and winbindd (finds the other forest's DC for its forest trust
/// information); afterwards only `ldap, cldap, kdc`, as [`Samba`].
const TRUST_SERVICES: &str = "server services = s3fs, rpc, ldap, cldap, kdc, winbindd";

/// Two Samba AD DCs in the private network namespace of `scripts/test`, each the only DC
/// of its own forest, with a two-way forest trust between the forests (`samba-tool domain
/// trust create --type=forest --direction=both --create-location=both`):
///
/// * [`SambaTrust::mfa`]: `mfa.test` (`DC=mfa,DC=test`, NetBIOS `MFA`), DC `dc1.mfa.test` on
///   127.0.0.1 — the same domain as [`Samba::start`];
/// * [`SambaTrust::other`]: `other.test` ([`OTHER_BASE_DN`], NetBIOS `OTHER`), DC
///   `dc2.other.test` on 127.0.0.2 (added to `lo` when missing). The same Administrator
///   password; service principals `ldap/dc2.other.test`, `ldap/DC2`,
///   `ldap/dc2.other.test/other.test`; LDAPS certificate for IP:127.0.0.2 and dc2.other.test.
///
/// Each DC has a trustedDomain object for the other domain in `CN=System` (trustDirection 3,
/// trustType 2, trustAttributes 8 = forest transitive) and the interdomain trust account
/// (`OTHER$` in mfa.test, `MFA$` in other.test); each KDC issues cross-realm tickets
/// (`krbtgt/OTHER.TEST@MFA.TEST`; see [`SambaTrust::krb5_conf`]).
///
/// The trust is created once per test process into a pair of templates (both DCs briefly run
/// with SMB/RPC/winbindd in private mount namespaces: their own `/run/samba`, and an
/// `/etc/resolv.conf` naming a dnsmasq on 127.0.0.1:53 that serves both domains' SRV/A
/// records; the host's files are never changed). Every `start` copies the templates and runs
/// both DCs with `ldap, cldap, kdc`, like [`Samba`]. `samba-tool domain trust validate`
/// reports the trust account of the other side as disabled on Samba 4.17
/// (`netr_ServerGetTrustInfo`: `NT_STATUS_ACCOUNT_DISABLED`), so creation skips validation.
///
/// Holds the one-Samba-per-namespace lock (with `mfa`) like [`Samba::start`]. Stop one DC with
/// [`Samba::stop`] (e.g. `other`, to make the trusted domain unreachable).
pub struct SambaTrust {
    // Declared first: dropped first, while `mfa` still holds the namespace lock.
    /// `other.test` on 127.0.0.2.
    pub other: Samba,
    /// `mfa.test` on 127.0.0.1.
    pub mfa: Samba,
}

impl SambaTrust {
    /// Start both DCs (from the per-process templates, which are made on first use) and seed
    /// each with its LDIF (`ldapadd` as its Administrator; empty: nothing).
    pub fn start(mfa_seed: &str, other_seed: &str) -> SambaTrust {
        check_environment();
        let lock = acquire_lock();
        ensure_address(OTHER.ip);
        let (mfa_tpl, other_tpl) = templates();
        let mfa = Samba::start_from(
            mfa_seed,
            StartOptions {
                spec: &MFA,
                template: mfa_tpl,
                strong_auth: false,
                lock: NsLock::Held(lock),
            },
        );
        let other = Samba::start_from(
            other_seed,
            StartOptions {
                spec: &OTHER,
                template: other_tpl,
                strong_auth: false,
                lock: NsLock::Elsewhere,
            },
        );
        SambaTrust { other, mfa }
    }

    /// Start other.test's DC again after [`Samba::stop`] on [`SambaTrust::other`]: a fresh
    /// copy of the template (the trust as created, none of the changes made since), seeded
    /// with `seed`.
    pub fn start_other(&mut self, seed: &str) {
        self.other.stop();
        let (_, other_tpl) = templates();
        self.other = Samba::start_from(
            seed,
            StartOptions {
                spec: &OTHER,
                template: other_tpl,
                strong_auth: false,
                lock: NsLock::Elsewhere,
            },
        );
    }

    /// A krb5.conf for both realms: `MFA.TEST` (default realm, KDC 127.0.0.1) and
    /// `OTHER.TEST` (KDC 127.0.0.2), `.mfa.test`/`.other.test` mapped to them, no DNS
    /// lookups, no hostname canonicalization. Written once per process; point
    /// `KRB5_CONFIG` at it.
    pub fn krb5_conf() -> PathBuf {
        static CONF: OnceLock<PathBuf> = OnceLock::new();
        CONF.get_or_init(|| {
            let dir = kept_temp_dir("mfasync-krb5-trust-");
            let path = dir.join("krb5.conf");
            std::fs::write(
                &path,
                "[libdefaults]\n\tdefault_realm = MFA.TEST\n\tdns_lookup_realm = false\n\
                 \tdns_lookup_kdc = false\n\tdns_canonicalize_hostname = false\n\trdns = false\n\
                 \tudp_preference_limit = 1\n\
                 [realms]\n\tMFA.TEST = {\n\t\tkdc = 127.0.0.1\n\t}\n\
                 \tOTHER.TEST = {\n\t\tkdc = 127.0.0.2\n\t}\n\
                 [domain_realm]\n\t.mfa.test = MFA.TEST\n\tmfa.test = MFA.TEST\n\
                 \t.other.test = OTHER.TEST\n\tother.test = OTHER.TEST\n",
            )
            .unwrap_or_else(|e| panic!("testkit: write {}: {e}", path.display()));
            path
        })
        .clone()
    }
}

/// Add `ip`/8 to `lo` unless it is there (Samba listens only on addresses of an interface).
fn ensure_address(ip: &str) {
    let out = util::run_ok(
        Command::new("ip").args(["-4", "addr", "show", "dev", "lo"]),
        "ip addr show dev lo",
    );
    if String::from_utf8_lossy(&out.stdout).contains(&format!("inet {ip}/")) {
        return;
    }
    util::run_ok(
        Command::new("ip").args(["addr", "add", &format!("{ip}/8"), "dev", "lo"]),
        "ip addr add (the second DC's loopback address)",
    );
}

/// The per-process templates of the two domains with the trust between them. Needs the
/// namespace lock (both DCs run on the standard ports meanwhile).
fn templates() -> (PathBuf, PathBuf) {
    static T: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    T.get_or_init(|| {
        let t = std::time::Instant::now();
        let mfa = kept_temp_dir("mfasync-samba-tpl-mfa-");
        // Both provisions at once (seconds each).
        let other = std::thread::scope(|s| {
            let other = s.spawn(|| provisioned(&OTHER, "mfasync-samba-tpl-other-"));
            copy_template(&template(), &mfa);
            other
                .join()
                .unwrap_or_else(|_| panic!("testkit: provisioning other.test panicked"))
        });
        create_trust(&mfa, &other);
        if std::env::var_os("MFASYNC_TESTKIT_VERBOSE").is_some() {
            eprintln!("testkit: Samba trust pair made in {:?}", t.elapsed());
        }
        (mfa, other)
    })
    .clone()
}

/// A DC running from a template dir while the trust is created.
struct TemplateDc {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl Drop for TemplateDc {
    fn drop(&mut self) {
        process::stop_child(&mut self.child, libc::SIGTERM);
    }
}

/// `sh` arguments that run `"$@"` in a private mount namespace with `resolv` bind-mounted
/// on /etc/resolv.conf and a private tmpfs on /run/samba (Samba's compiled-in socket
/// directories for winbindd and ncalrpc, which two DCs must not share).
fn private_mounts(resolv: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "set -e; mount --bind \"$0\" /etc/resolv.conf; mkdir -p /run/samba; \
             mount -t tmpfs tmpfs /run/samba; exec \"$@\"",
        )
        .arg(resolv);
    c
}

fn start_template_dc(spec: &DomainSpec, dir: &Path, resolv: &Path) -> TemplateDc {
    let log = dir.join("samba.trust.log");
    let out =
        File::create(&log).unwrap_or_else(|e| panic!("testkit: create {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("testkit: dup log fd: {e}"));
    let mut child = private_mounts(resolv)
        .args(["samba", "-i", "--no-process-group", "-s"])
        .arg(dir.join("etc/smb.conf"))
        .env("KRB5_CONFIG", dir.join("private/krb5.conf"))
        .env("TDB_NO_FSYNC", "1")
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("testkit: cannot spawn samba (unshare --mount): {e}"));
    process::register(child.id(), libc::SIGTERM, None, true);
    let stdin = child.stdin.take();
    let url = format!("ldap://{}:389", spec.ip);
    let admin = format!("CN=Administrator,CN=Users,{}", spec.base_dn);
    util::wait_ready(
        "samba (trust set-up)",
        &mut child,
        &log,
        Duration::from_secs(120),
        || {
            util::output(
                Command::new("ldapsearch")
                    .args(["-x", "-H", &url, "-D", &admin, "-w", ADMIN_PASSWORD])
                    .args(["-b", "", "-s", "base", "-o", "nettimeout=2", "dn"]),
            )
            .status
            .success()
                && rpc_listening(spec.ip)
        },
    );
    TemplateDc {
        child,
        _stdin: stdin,
    }
}

/// dnsmasq on 127.0.0.1:53 with the SRV and A records of both domains (the DC locator's).
fn start_dns(dir: &Path) -> Child {
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--local=/#/",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--port=53",
        "--user=root",
    ])
    .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
    for spec in [&MFA, &OTHER] {
        let fqdn = spec.fqdn();
        let dom = spec.dns;
        cmd.arg(format!("--host-record={fqdn},{}", spec.ip))
            .arg(format!("--host-record={dom},{}", spec.ip));
        let site = "_tcp.Default-First-Site-Name._sites";
        let srv: [(String, u16); 13] = [
            ("_ldap._tcp.dc._msdcs".into(), 389),
            ("_ldap._tcp.pdc._msdcs".into(), 389),
            ("_ldap._tcp.gc._msdcs".into(), 3268),
            ("_ldap._tcp".into(), 389),
            (format!("_ldap.{site}.dc._msdcs"), 389),
            (format!("_ldap.{site}"), 389),
            ("_gc._tcp".into(), 3268),
            ("_kerberos._tcp".into(), 88),
            ("_kerberos._udp".into(), 88),
            ("_kerberos._tcp.dc._msdcs".into(), 88),
            (format!("_kerberos.{site}.dc._msdcs"), 88),
            ("_kpasswd._tcp".into(), 464),
            ("_kpasswd._udp".into(), 464),
        ];
        for (name, port) in srv {
            cmd.arg(format!("--srv-host={name}.{dom},{fqdn},{port},0,100"));
        }
    }
    let log = dir.join("dnsmasq.log");
    let out =
        File::create(&log).unwrap_or_else(|e| panic!("testkit: create {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("testkit: dup log fd: {e}"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("testkit: cannot spawn dnsmasq: {e}"));
    process::register(child.id(), libc::SIGTERM, None, false);
    util::wait_ready(
        "dnsmasq (trust set-up)",
        &mut child,
        &log,
        Duration::from_secs(30),
        || util::port_open(53),
    );
    child
}

/// Whether the DC at `ip` accepts connections on the RPC endpoint mapper (port 135), where
/// `samba-tool domain trust` reaches LSA.
fn rpc_listening(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>().is_ok_and(|addr| {
        std::net::TcpStream::connect_timeout(&(addr, 135).into(), Duration::from_millis(500))
            .is_ok()
    })
}

/// Run `samba-tool domain trust create` until it succeeds. A DC answering LDAP may not yet
/// serve LSA over RPC ("failed to connect lsa server", seen under load); that attempt
/// creates nothing, so it is retried up to five times before the set-up fails.
fn create_with_retries(mut attempt: impl FnMut() -> std::process::Output) {
    const TRIES: u32 = 5;
    for n in 1..=TRIES {
        let out = attempt();
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let not_connected =
            stderr.contains("failed to connect") || stdout.contains("failed to connect");
        if !not_connected || n == TRIES {
            panic!(
                "testkit: samba-tool domain trust create failed ({}, attempt {n} of {TRIES})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                out.status
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Create the forest trust between the domains provisioned in `mfa` and `other`.
fn create_trust(mfa: &Path, other: &Path) {
    let work = kept_temp_dir("mfasync-samba-trust-");
    let resolv = work.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n")
        .unwrap_or_else(|e| panic!("testkit: write {}: {e}", resolv.display()));
    let confs: Vec<(PathBuf, String)> = [mfa, other]
        .iter()
        .map(|d| {
            let p = d.join("etc/smb.conf");
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("testkit: read {}: {e}", p.display()));
            (p, text)
        })
        .collect();
    for (dir, (conf, _)) in [mfa, other].iter().zip(&confs) {
        add_global_options(
            conf,
            &[
                TRUST_SERVICES.to_string(),
                format!("ncalrpc dir = {}/ncalrpc", dir.display()),
            ],
        );
    }
    let mut dns = start_dns(&work);
    {
        let _dcs = [
            start_template_dc(&MFA, mfa, &resolv),
            start_template_dc(&OTHER, other, &resolv),
        ];
        let tool = |args: &[&str], what: &str| {
            util::run_ok(
                private_mounts(&resolv)
                    .arg("samba-tool")
                    .args(["domain", "trust"])
                    .args(args)
                    .arg("-s")
                    .arg(&confs[0].0)
                    .env("TDB_NO_FSYNC", "1")
                    .env("KRB5_CONFIG", mfa.join("private/krb5.conf")),
                what,
            )
        };
        let admin = |netbios: &str| format!("{netbios}\\Administrator");
        let remote = [
            format!("--ipaddress={}", OTHER.ip),
            format!("--username={}", admin(OTHER.netbios)),
            format!("--password={ADMIN_PASSWORD}"),
            "--use-kerberos=off".to_string(),
            format!("--local-dc-ipaddress={}", MFA.ip),
            format!("--local-dc-username={}", admin(MFA.netbios)),
            format!("--local-dc-password={ADMIN_PASSWORD}"),
            "--local-dc-use-kerberos=off".to_string(),
        ];
        let mut create = vec![
            "create",
            OTHER.dns,
            "--type=forest",
            "--direction=both",
            "--create-location=both",
            "--skip-validation",
        ];
        create.extend(remote.iter().map(String::as_str));
        create_with_retries(|| {
            util::output(
                private_mounts(&resolv)
                    .arg("samba-tool")
                    .args(["domain", "trust"])
                    .args(&create)
                    .arg("-s")
                    .arg(&confs[0].0)
                    .env("TDB_NO_FSYNC", "1")
                    .env("KRB5_CONFIG", mfa.join("private/krb5.conf")),
            )
        });
        let list = tool(&["list"], "samba-tool domain trust list");
        let list = String::from_utf8_lossy(&list.stdout);
        if !list.contains("Name[other.test]") || !list.contains("Direction[BOTH]") {
            panic!("testkit: samba-tool domain trust list does not show the trust:\n{list}");
        }
        if std::env::var_os("MFASYNC_TESTKIT_VERBOSE").is_some() {
            eprintln!("testkit: {}", list.trim());
        }
    }
    process::stop_child(&mut dns, libc::SIGTERM);
    for (conf, text) in &confs {
        std::fs::write(conf, text)
            .unwrap_or_else(|e| panic!("testkit: write {}: {e}", conf.display()));
    }
}
