use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::process;
use crate::util::{self, LdapTools};

const NAMESPACE_HINT: &str =
    "run the tests with scripts/test (it starts them in a private network namespace)";

/// A Samba AD DC: realm `MFA.TEST`, domain `MFA`, base DN `DC=mfa,DC=test`, host `dc1.mfa.test`.
///
/// Listens on the standard ports (389, 636, 88, ...) of 127.0.0.1, so it only runs inside a private
/// network namespace (`scripts/test`), as root, one instance at a time per namespace (a lock file
/// serialises concurrent `Samba::start` calls, also across test processes).
///
/// Kerberos: the KDC listens on 127.0.0.1:88 (see [`krb5_conf`]); the DC has the service principals
/// `ldap/dc1.mfa.test`, `ldap/DC1`, `ldap/dc1.mfa.test/mfa.test`.
/// Provisioned with `--use-rfc2307 --dns-backend=NONE`, `ldap server require strong auth = no`
/// (plain simple binds on 389 work), server services `ldap cldap kdc`, and an LDAPS certificate
/// issued by a private CA ([`Samba::ca_cert`], PEM) with subjectAltName IP:127.0.0.1,
/// DNS:localhost, DNS:dc1.mfa.test, so rustls/native-tls accept it.
/// Stopped (process tree killed, temp dir removed) by [`Samba::stop`] or on drop.
pub struct Samba {
    /// `ldap://127.0.0.1:389`
    pub url: String,
    /// `ldaps://127.0.0.1:636`
    pub ldaps_url: String,
    /// `DC=mfa,DC=test`
    pub base_dn: String,
    /// `CN=Administrator,CN=Users,DC=mfa,DC=test`
    pub admin_dn: String,
    pub admin_password: String,
    /// `MFA.TEST`
    pub realm: String,
    /// `MFA` (NetBIOS domain)
    pub domain: String,
    /// The provision `--targetdir` (etc/smb.conf, private/sam.ldb, private/krb5.conf, log.*).
    pub dir: PathBuf,
    /// PEM file of the CA that issued the LDAPS certificate.
    pub ca_cert: PathBuf,
    // What the admin tools use: `url`, or LDAPS when simple binds need TLS.
    admin_url: String,
    tmp: Option<TempDir>,
    child: Option<Child>,
    // Samba runs with `-i`: it exits by itself when this pipe closes (e.g. the test process dies).
    stdin: Option<ChildStdin>,
    lock: Option<UnixListener>,
}

pub const SAMBA_BASE_DN: &str = "DC=mfa,DC=test";
pub const SAMBA_ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=mfa,DC=test";
pub(crate) const ADMIN_PASSWORD: &str = "Adm1n!Passw0rd-MFA";

/// The fixed names of one test domain and its one DC.
pub(crate) struct DomainSpec {
    /// `MFA.TEST`
    pub realm: &'static str,
    /// `MFA` (NetBIOS domain)
    pub netbios: &'static str,
    /// `dc1` (the DC's host name; NetBIOS name upper-cased)
    pub host: &'static str,
    /// `mfa.test`
    pub dns: &'static str,
    pub base_dn: &'static str,
    /// The loopback address the DC listens on.
    pub ip: &'static str,
}

impl DomainSpec {
    pub(crate) fn fqdn(&self) -> String {
        format!("{}.{}", self.host, self.dns)
    }
}

/// The domain of [`Samba::start`].
pub(crate) const MFA: DomainSpec = DomainSpec {
    realm: "MFA.TEST",
    netbios: "MFA",
    host: "dc1",
    dns: "mfa.test",
    base_dn: SAMBA_BASE_DN,
    ip: "127.0.0.1",
};

fn netns_id() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) fn check_environment() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("testkit: Samba needs root; {NAMESPACE_HINT}");
    }
    if std::env::var_os("MFASYNC_TESTKIT_ALLOW_HOST_NETNS").is_some() {
        return;
    }
    // A private namespace made by scripts/test (`unshare --net`) has nothing but `lo`.
    let others = non_loopback_interfaces();
    let init_ns = std::fs::read_link("/proc/1/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let on_init_ns = !init_ns.is_empty() && init_ns == netns_id();
    if on_init_ns || !others.is_empty() {
        panic!(
            "testkit: refusing to start Samba in a shared network namespace (interfaces {others:?}; \
             it binds 127.0.0.1:389, :636, :88, ...); {NAMESPACE_HINT}. \
             Set MFASYNC_TESTKIT_ALLOW_HOST_NETNS=1 to override."
        );
    }
}

/// Interface names other than `lo` in this process's network namespace (/proc/self/net/dev).
fn non_loopback_interfaces() -> Vec<String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty() && n != "lo")
        .collect()
}

fn make_certs(dir: &Path, spec: &DomainSpec) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    let key = dir.join("key.pem");
    let csr = dir.join("server.csr");
    let cert = dir.join("cert.pem");
    let ext = dir.join("ext.cnf");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    util::run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-days",
                "3650",
                "-subj",
                "/CN=mfasync test CA",
            ])
            .args(ec)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
        "openssl (CA)",
    );
    util::run_ok(
        Command::new("openssl")
            .args(["req", "-subj", &format!("/CN={}", spec.fqdn())])
            .args(ec)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
        "openssl (server key)",
    );
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:{},DNS:localhost,DNS:{},DNS:{}\n",
            spec.ip,
            spec.fqdn(),
            spec.dns
        ),
    )
    .unwrap_or_else(|e| panic!("testkit: write {}: {e}", ext.display()));
    util::run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "3650", "-set_serial", "2"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
        "openssl (server cert)",
    );
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600));
    (ca, key, cert)
}

/// One Samba per network namespace: an abstract unix socket is both namespace-scoped and released
/// automatically when its holder exits, so it serves as the lock (also across test processes).
pub(crate) fn acquire_lock() -> UnixListener {
    let addr = SocketAddr::from_abstract_name(b"mfasync-testkit-samba-lock")
        .unwrap_or_else(|e| panic!("testkit: abstract socket address: {e}"));
    let start = std::time::Instant::now();
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if start.elapsed() > Duration::from_secs(600) {
                    panic!("testkit: waited 10 min for another Samba in this network namespace");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("testkit: cannot bind the Samba lock socket: {e}"),
        }
    }
}

/// The per-process provisioned domain that every [`Samba::start`] copies.
pub(crate) fn template() -> PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| provisioned(&MFA, "mfasync-samba-tpl-"))
        .clone()
}

/// A kept temp dir (removed at exit) with `spec`'s domain provisioned in it.
pub(crate) fn provisioned(spec: &DomainSpec, prefix: &str) -> PathBuf {
    let t = std::time::Instant::now();
    let dir = kept_temp_dir(prefix);
    provision(&dir, spec);
    if std::env::var_os("MFASYNC_TESTKIT_VERBOSE").is_some() {
        eprintln!(
            "testkit: Samba {} provisioned in {:?}",
            spec.dns,
            t.elapsed()
        );
    }
    dir
}

/// A temp dir that stays until the test process exits (then removed).
pub fn kept_temp_dir(prefix: &str) -> PathBuf {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("testkit: cannot create temp dir: {e}"));
    let dir = tmp.keep();
    process::register_dir(&dir);
    dir
}

/// `samba-tool domain provision` into `dir`, with a test CA + LDAPS certificate in dir/tls-test.
fn provision(dir: &Path, spec: &DomainSpec) {
    let tls_dir = dir.join("tls-test");
    std::fs::create_dir(&tls_dir)
        .unwrap_or_else(|e| panic!("testkit: mkdir {}: {e}", tls_dir.display()));
    let (ca, key, cert) = make_certs(&tls_dir, spec);
    let empty_conf = dir.join("empty.conf");
    std::fs::write(&empty_conf, "")
        .unwrap_or_else(|e| panic!("testkit: write {}: {e}", empty_conf.display()));
    let d = dir.display();
    let options = [
        "ldap server require strong auth = no".to_string(),
        // The DC's own address only (and ::1 for the first DC): a second DC of the same
        // namespace (`SambaTrust`) listens on another loopback address of `lo`.
        format!(
            "interfaces = {}{}",
            spec.ip,
            if spec.ip == MFA.ip { " ::1" } else { "" }
        ),
        "bind interfaces only = yes".to_string(),
        format!("pid directory = {d}/pid"),
        format!("log file = {d}/log.%m"),
        "log level = 1".to_string(),
        "server services = ldap, cldap, kdc".to_string(),
        "tls enabled = yes".to_string(),
        format!("tls keyfile = {}", key.display()),
        format!("tls certfile = {}", cert.display()),
        format!("tls cafile = {}", ca.display()),
    ];
    let mut provision = Command::new("samba-tool");
    provision
        // Test data only: skip fsync on every ldb/tdb transaction (as Samba's own selftest does).
        .env("TDB_NO_FSYNC", "1")
        .args(["domain", "provision", "--use-rfc2307", "--dns-backend=NONE"])
        .arg("--server-role=dc")
        .arg(format!("--realm={}", spec.realm))
        .arg(format!("--domain={}", spec.netbios))
        .arg(format!("--host-name={}", spec.host))
        .arg(format!("--adminpass={ADMIN_PASSWORD}"))
        .arg(format!("--targetdir={d}"))
        .arg(format!("--configfile={}", empty_conf.display()));
    for o in &options {
        provision.arg(format!("--option={o}"));
    }
    util::run_ok(&mut provision, "samba-tool domain provision");
    // The LDAP service principals of the DC (a real AD DC registers them; Samba's
    // samba_spnupdate would, but only runs with the dnsupdate service): Kerberos binds ask
    // for a ticket to ldap/dc1.mfa.test.
    let fqdn = spec.fqdn();
    let account = format!("{}$", spec.host.to_ascii_uppercase());
    for spn in [
        format!("ldap/{fqdn}"),
        format!("ldap/{}", spec.host.to_ascii_uppercase()),
        format!("ldap/{fqdn}/{}", spec.dns),
    ] {
        util::run_ok(
            Command::new("samba-tool")
                .env("TDB_NO_FSYNC", "1")
                .args(["spn", "add", &spn, &account])
                .arg("-H")
                .arg(dir.join("private/sam.ldb"))
                .arg("-s")
                .arg(dir.join("etc/smb.conf")),
            "samba-tool spn add",
        );
    }
    // Provision silently drops some --option values from the smb.conf it writes (notably
    // `ldap server require strong auth`), so (re)state all of them at the end of [global].
    add_global_options(&dir.join("etc/smb.conf"), &options);
}

/// Append `options` at the end of the [global] section of `smb_conf` (later lines win).
pub(crate) fn add_global_options(smb_conf: &Path, options: &[String]) {
    let conf = std::fs::read_to_string(smb_conf)
        .unwrap_or_else(|e| panic!("testkit: read {}: {e}", smb_conf.display()));
    let extra: String = options.iter().map(|o| format!("\t{o}\n")).collect();
    let global = conf.find("[global]").map(|g| g + "[global]".len());
    let conf = match global.and_then(|g| conf[g..].find("\n[").map(|i| g + i)) {
        Some(i) => format!("{}\n{}{}", &conf[..i], extra, &conf[i..]),
        None => format!("{conf}\n{extra}"),
    };
    std::fs::write(smb_conf, conf)
        .unwrap_or_else(|e| panic!("testkit: write {}: {e}", smb_conf.display()));
}

/// Copy the provisioned domain in `template` into `dir` (`cp -a`) and point its smb.conf at
/// `dir`. Only etc/smb.conf holds absolute paths (the ldb files reference each other
/// relatively).
pub(crate) fn copy_template(template: &Path, dir: &Path) {
    let mut src = template.as_os_str().to_owned();
    src.push("/.");
    util::run_ok(
        Command::new("cp").arg("-a").arg(&src).arg(dir),
        "copying the provisioned Samba template",
    );
    let smb_conf = dir.join("etc/smb.conf");
    let conf = std::fs::read_to_string(&smb_conf)
        .unwrap_or_else(|e| panic!("testkit: read {}: {e}", smb_conf.display()));
    let conf = conf.replace(&*template.to_string_lossy(), &dir.to_string_lossy());
    std::fs::write(&smb_conf, conf)
        .unwrap_or_else(|e| panic!("testkit: write {}: {e}", smb_conf.display()));
}

/// How [`Samba::start_from`] starts a DC.
pub(crate) struct StartOptions<'a> {
    pub spec: &'a DomainSpec,
    /// A provisioned domain of `spec` (copied, never changed).
    pub template: PathBuf,
    pub strong_auth: bool,
    pub lock: NsLock,
}

/// The one-Samba-per-namespace lock of a DC started by [`Samba::start_from`].
pub(crate) enum NsLock {
    /// Take it (wait for it) before binding the ports.
    Take,
    /// Already taken by the caller; the DC holds it until stopped.
    Held(UnixListener),
    /// Held by another DC of the caller's.
    Elsewhere,
}

impl Samba {
    /// Provision a fresh domain into a temp dir, start `samba` as a child, wait until LDAP answers
    /// a simple bind as Administrator on 127.0.0.1:389, then `ldapadd` `seed_ldif` (no `-c`; any
    /// error panics with the tool output). Panics with a hint to use `scripts/test` when not root,
    /// on the host network namespace, or when 127.0.0.1:389 is taken.
    pub fn start(seed_ldif: &str) -> Samba {
        Self::start_inner(seed_ldif, false)
    }

    fn start_inner(seed_ldif: &str, strong_auth: bool) -> Samba {
        check_environment();
        Self::start_from(
            seed_ldif,
            StartOptions {
                spec: &MFA,
                template: template(),
                strong_auth,
                lock: NsLock::Take,
            },
        )
    }

    /// Like [`Samba::start`], but with `ldap server require strong auth = yes` (Samba's and
    /// AD's default): simple binds only over TLS, SASL binds over plain LDAP only with
    /// signing/sealing. The admin tools of this instance ([`Samba::ldapadd`], ...) use LDAPS.
    pub fn start_strong_auth(seed_ldif: &str) -> Samba {
        Self::start_inner(seed_ldif, true)
    }

    /// Start a DC of `o.spec` from a copy of `o.template` (see [`Samba::start`]).
    pub(crate) fn start_from(seed_ldif: &str, o: StartOptions<'_>) -> Samba {
        let StartOptions {
            spec,
            template,
            strong_auth,
            lock,
        } = o;
        let tmp = tempfile::Builder::new()
            .prefix("mfasync-samba-")
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: cannot create temp dir: {e}"));
        let dir = tmp.path().to_path_buf();
        // Provisioning takes seconds; do it once per test process and copy the result.
        copy_template(&template, &dir);
        let smb_conf = dir.join("etc/smb.conf");
        if strong_auth {
            let conf = std::fs::read_to_string(&smb_conf)
                .unwrap_or_else(|e| panic!("testkit: read {}: {e}", smb_conf.display()));
            let conf = conf.replace(
                "ldap server require strong auth = no",
                "ldap server require strong auth = yes",
            );
            std::fs::write(&smb_conf, conf)
                .unwrap_or_else(|e| panic!("testkit: write {}: {e}", smb_conf.display()));
        }
        let ca = dir.join("tls-test/ca.pem");

        // One Samba per network namespace at a time: the ports are fixed.
        let lock = match lock {
            NsLock::Take => Some(acquire_lock()),
            NsLock::Held(l) => Some(l),
            NsLock::Elsewhere => None,
        };
        // (the DC of a test process that just ended may still be closing its ports)
        let mut bound = std::net::TcpListener::bind((spec.ip, 389)).map(drop);
        for _ in 0..60 {
            if bound.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
            bound = std::net::TcpListener::bind((spec.ip, 389)).map(drop);
        }
        if let Err(e) = bound {
            panic!(
                "testkit: {}:389 is not available ({e}); Samba needs the standard LDAP ports: \
                 {NAMESPACE_HINT}",
                spec.ip
            );
        }

        let url = format!("ldap://{}:389", spec.ip);
        let ldaps_url = format!("ldaps://{}:636", spec.ip);
        let mut s = Samba {
            admin_url: if strong_auth { &ldaps_url } else { &url }.clone(),
            url,
            ldaps_url,
            base_dn: spec.base_dn.to_string(),
            admin_dn: format!("CN=Administrator,CN=Users,{}", spec.base_dn),
            admin_password: ADMIN_PASSWORD.to_string(),
            realm: spec.realm.to_string(),
            domain: spec.netbios.to_string(),
            dir: dir.clone(),
            ca_cert: ca,
            tmp: Some(tmp),
            child: None,
            stdin: None,
            lock,
        };
        s.spawn();
        if !seed_ldif.trim().is_empty() {
            s.ldapadd(seed_ldif);
        }
        s
    }

    /// Start `samba` on this DC's directory and wait until LDAP answers.
    fn spawn(&mut self) {
        let dir = self.dir.clone();
        let smb_conf = dir.join("etc/smb.conf");
        let log = dir.join("samba.stdout.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("testkit: create {}: {e}", log.display()));
        let log_err = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("testkit: dup log fd: {e}"));
        let mut child = Command::new("samba")
            .arg("-i")
            .arg("--no-process-group")
            .arg("-s")
            .arg(&smb_conf)
            .env("KRB5_CONFIG", dir.join("private/krb5.conf"))
            // Test data only: skip fsync on every ldb/tdb transaction (as Samba's own selftest does).
            .env("TDB_NO_FSYNC", "1")
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("testkit: cannot spawn samba: {e}"));
        process::register(child.id(), libc::SIGTERM, Some(&dir), true);
        self.stdin = child.stdin.take();
        let (url, admin, pw) = (
            self.admin_url.clone(),
            self.admin_dn.clone(),
            self.admin_password.clone(),
        );
        self.child = Some(child);
        if let Some(child) = self.child.as_mut() {
            util::wait_ready("samba", child, &log, Duration::from_secs(120), || {
                util::output(
                    Command::new("ldapsearch")
                        .args(["-x", "-H", &url, "-D", &admin, "-w", &pw])
                        .args(["-b", "", "-s", "base", "-o", "nettimeout=2", "dn"])
                        .env("LDAPTLS_REQCERT", "never"),
                )
                .status
                .success()
            });
        }
    }

    /// Take the DC down (its processes stop; its database is kept):
    /// [`Samba::resume`] starts it again on the same database, as a DC that
    /// was down for a while. Stopping an already paused DC does nothing.
    pub fn pause(&mut self) {
        drop(self.stdin.take());
        if let Some(mut c) = self.child.take() {
            process::stop_child(&mut c, libc::SIGTERM);
        }
    }

    /// Start a [`Samba::pause`]d DC again on its database; waits until LDAP answers.
    pub fn resume(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    fn tools(&self) -> LdapTools<'_> {
        LdapTools {
            url: &self.admin_url,
            bind_dn: &self.admin_dn,
            password: &self.admin_password,
            scratch: &self.dir,
        }
    }

    /// Path of the provisioned smb.conf.
    pub fn smb_conf(&self) -> PathBuf {
        self.dir.join("etc/smb.conf")
    }

    /// Run `ldapadd` as Administrator (simple bind); panics with the tool output on failure.
    pub fn ldapadd(&self, ldif: &str) {
        self.tools().ldapadd(ldif)
    }

    /// Run `ldapmodify` as Administrator (simple bind); panics with the tool output on failure.
    pub fn ldapmodify(&self, ldif: &str) {
        self.tools().ldapmodify(ldif)
    }

    /// Run `ldapdelete` as Administrator (simple bind); panics with the tool output on failure.
    pub fn ldapdelete(&self, dn: &str) {
        self.tools().ldapdelete(dn)
    }

    /// Add the entries of `ldif` through Samba's local, trusted database access (its Python
    /// bindings on private/sam.ldb, as `samba-tool` does) instead of LDAP: for objects Samba
    /// refuses over LDAP, e.g. trustedDomain (LSA) objects. Panics with the tool output on failure.
    pub fn add_local(&self, ldif: &str) {
        const SCRIPT: &str = "import sys\n\
            from samba.samdb import SamDB\n\
            from samba.auth import system_session\n\
            from samba.param import LoadParm\n\
            lp = LoadParm()\n\
            lp.load(sys.argv[1])\n\
            db = SamDB(url=sys.argv[2], session_info=system_session(), lp=lp)\n\
            for _, msg in db.parse_ldif(open(sys.argv[3]).read()):\n    db.add(msg)\n";
        let file = util::write_temp(&self.dir, "add-local", ldif);
        util::run_ok(
            Command::new("/usr/bin/python3")
                .env("TDB_NO_FSYNC", "1")
                .arg("-c")
                .arg(SCRIPT)
                .arg(self.smb_conf())
                .arg(self.dir.join("private/sam.ldb"))
                .arg(&file),
            "adding entries to sam.ldb (Samba Python bindings)",
        );
    }

    /// Set (reset) a user's password with `samba-tool user setpassword` on the local sam.ldb.
    /// The domain's default complexity rules apply (use something like `Secr3t!pass`).
    pub fn set_password(&self, sam_account_name: &str, password: &str) {
        util::run_ok(
            Command::new("samba-tool")
                .env("TDB_NO_FSYNC", "1")
                .args(["user", "setpassword", sam_account_name])
                .arg(format!("--newpassword={password}"))
                .arg("-H")
                .arg(self.dir.join("private/sam.ldb"))
                .arg("-s")
                .arg(self.smb_conf()),
            "samba-tool user setpassword",
        );
    }

    /// Export the Kerberos keys of `principal` (e.g. a user's sAMAccountName, after
    /// [`Samba::set_password`]) into the keytab file `path` (`samba-tool domain exportkeytab`).
    pub fn export_keytab(&self, principal: &str, path: &Path) {
        let _ = std::fs::remove_file(path);
        util::run_ok(
            Command::new("samba-tool")
                .env("TDB_NO_FSYNC", "1")
                .args(["domain", "exportkeytab"])
                .arg(path)
                .arg(format!("--principal={principal}"))
                .arg("-s")
                .arg(self.smb_conf()),
            "samba-tool domain exportkeytab",
        );
    }

    /// Kill the samba process tree, release the namespace lock, remove the temp dir.
    /// Idempotent; also done on drop.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut c) = self.child.take() {
            process::stop_child(&mut c, libc::SIGTERM);
        }
        if let Some(t) = self.tmp.take() {
            let _ = t.close();
        }
        drop(self.lock.take());
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A krb5.conf for the test realm `MFA.TEST` with its KDC on 127.0.0.1:88 (the [`Samba`] of this
/// network namespace), no DNS lookups and no hostname canonicalization (service principals are
/// taken from the server URL as written, e.g. `ldap/dc1.mfa.test`). Written once per process
/// into a temp dir; point `KRB5_CONFIG` at it. `dc1.mfa.test` resolves to 127.0.0.1 inside
/// `scripts/test` (it bind-mounts a private /etc/hosts in its mount namespace).
pub fn krb5_conf() -> PathBuf {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let tmp = tempfile::Builder::new()
            .prefix("mfasync-krb5-")
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: cannot create temp dir: {e}"));
        let dir = tmp.keep();
        process::register_dir(&dir);
        let path = dir.join("krb5.conf");
        std::fs::write(
            &path,
            "[libdefaults]\n\tdefault_realm = MFA.TEST\n\tdns_lookup_realm = false\n\
             \tdns_lookup_kdc = false\n\tdns_canonicalize_hostname = false\n\trdns = false\n\
             \tudp_preference_limit = 1\n\
             [realms]\n\tMFA.TEST = {\n\t\tkdc = 127.0.0.1\n\t\tadmin_server = 127.0.0.1\n\t}\n\
             [domain_realm]\n\t.mfa.test = MFA.TEST\n\tmfa.test = MFA.TEST\n",
        )
        .unwrap_or_else(|e| panic!("testkit: write {}: {e}", path.display()));
        path
    })
    .clone()
}
