use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process;
use crate::util::{self, LdapTools};

/// A private OpenLDAP `slapd` on `127.0.0.1:<random port>`.
///
/// mdb backend, suffix `dc=example,dc=com`, rootdn `cn=admin,dc=example,dc=com`; schemas core,
/// cosine, inetorgperson, nis; overlays syncprov (checkpoint + `syncprov-sessionlog 10000`, so
/// RFC 4533 refreshOnly with cookies reports deletions as delete-phase entries), ppolicy (schema
/// loaded, no default policy) and memberof (users get the operational `memberOf` attribute for
/// their `groupOfNames` groups; direct membership only, like OpenLDAP deployments usually have).
/// `sizelimit unlimited`, so paging is optional for the rootdn.
/// Stopped (process killed, temp dir removed) by [`Slapd::stop`] or on drop.
pub struct Slapd {
    /// `ldap://127.0.0.1:PORT`
    pub url: String,
    /// `dc=example,dc=com`
    pub base_dn: String,
    /// `cn=admin,dc=example,dc=com`
    pub admin_dn: String,
    pub admin_password: String,
    pub port: u16,
    dir: Option<TempDir>,
    child: Option<Child>,
}

pub const SLAPD_BASE_DN: &str = "dc=example,dc=com";
pub const SLAPD_ADMIN_DN: &str = "cn=admin,dc=example,dc=com";

const BASE_ENTRY: &str = "dn: dc=example,dc=com
objectClass: top
objectClass: dcObject
objectClass: organization
dc: example
o: Example Corp
";

impl Slapd {
    /// Start a fresh slapd seeded with the base entry `dc=example,dc=com` and then `seed_ldif`
    /// (plain `ldapadd`, no `-c`: any seed error panics with the ldapadd output).
    /// Returns when it answers. An empty `seed_ldif` only adds the base entry.
    pub fn start(seed_ldif: &str) -> Slapd {
        Slapd::start_with_acl(seed_ldif, "")
    }

    /// Like [`Slapd::start`], with `access` directives (slapd.conf syntax) for the database, e.g.
    /// to give a service account fewer rights than the rootdn. Empty: slapd's default (everyone
    /// reads everything).
    pub fn start_with_acl(seed_ldif: &str, acl: &str) -> Slapd {
        Slapd::start_configured(seed_ldif, acl, true)
    }

    /// Like [`Slapd::start`], with syncprov keeping no session log, as many
    /// deployments run it: a refresh from a cookie then lists every entry
    /// still there (the RFC 4533 present phase) instead of the deletions.
    pub fn start_without_session_log(seed_ldif: &str) -> Slapd {
        Slapd::start_configured(seed_ldif, "", false)
    }

    fn start_configured(seed_ldif: &str, acl: &str, session_log: bool) -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("mfasync-slapd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: cannot create temp dir: {e}"));
        let d = dir.path();
        let db = d.join("db");
        std::fs::create_dir(&db).unwrap_or_else(|e| panic!("testkit: mkdir {}: {e}", db.display()));
        let admin_password = format!("admin-{}", rand::random::<u32>());
        let conf = format!(
            r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
moduleload ppolicy
moduleload memberof
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
sizelimit unlimited
database mdb
maxsize 4294967296
suffix "{SLAPD_BASE_DN}"
rootdn "{SLAPD_ADMIN_DN}"
rootpw {admin_password}
directory {db}
dbnosync
index objectClass eq
index entryCSN,entryUUID eq
index uid,cn,mail eq
index member eq
overlay syncprov
syncprov-checkpoint 100 10
{session_log}
overlay ppolicy
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
{acl}
"#,
            d = d.display(),
            db = db.display(),
            session_log = if session_log {
                "syncprov-sessionlog 10000"
            } else {
                ""
            },
        );
        let conf_path = d.join("slapd.conf");
        std::fs::write(&conf_path, conf)
            .unwrap_or_else(|e| panic!("testkit: write {}: {e}", conf_path.display()));

        // The port is only reserved while probing; retry if someone else grabbed it meanwhile.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = util::free_port();
            let log = d.join("slapd.log");
            let log_file = File::create(&log)
                .unwrap_or_else(|e| panic!("testkit: create {}: {e}", log.display()));
            let log_err = log_file
                .try_clone()
                .unwrap_or_else(|e| panic!("testkit: dup log fd: {e}"));
            let child = Command::new("slapd")
                .arg("-d")
                .arg("0")
                .arg("-h")
                .arg(format!("ldap://127.0.0.1:{port}/"))
                .arg("-f")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("testkit: cannot spawn slapd: {e}"));
            process::register(child.id(), libc::SIGTERM, Some(d), true);
            let mut s = Slapd {
                url: format!("ldap://127.0.0.1:{port}"),
                base_dn: SLAPD_BASE_DN.to_string(),
                admin_dn: SLAPD_ADMIN_DN.to_string(),
                admin_password: admin_password.clone(),
                port,
                dir: None,
                child: Some(child),
            };
            let mut exited_early = false;
            let start = std::time::Instant::now();
            loop {
                if util::port_open(port) {
                    break;
                }
                if let Some(Ok(Some(_))) = s.child.as_mut().map(|c| c.try_wait()) {
                    exited_early = true;
                    break;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    panic!(
                        "testkit: slapd not listening after 30 s; log:\n{}",
                        util::tail_file(&log)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if exited_early {
                let log_text = util::tail_file(&log);
                s.stop();
                if attempt < 5 && log_text.contains("Address already in use") {
                    continue;
                }
                panic!("testkit: slapd exited during start-up; log:\n{log_text}");
            }
            s.dir = Some(dir);
            s.ldapadd(BASE_ENTRY);
            if !seed_ldif.trim().is_empty() {
                s.ldapadd(seed_ldif);
            }
            return s;
        }
    }

    fn tools(&self) -> LdapTools<'_> {
        LdapTools {
            url: &self.url,
            bind_dn: &self.admin_dn,
            password: &self.admin_password,
            scratch: self
                .dir
                .as_ref()
                .map(|d| d.path())
                .unwrap_or(std::path::Path::new("/tmp")),
        }
    }

    /// Run `ldapadd` as the rootdn; panics with the tool output on failure.
    pub fn ldapadd(&self, ldif: &str) {
        self.tools().ldapadd(ldif)
    }

    /// Run `ldapmodify` as the rootdn; panics with the tool output on failure.
    pub fn ldapmodify(&self, ldif: &str) {
        self.tools().ldapmodify(ldif)
    }

    /// Run `ldapdelete` as the rootdn; panics with the tool output on failure.
    pub fn ldapdelete(&self, dn: &str) {
        self.tools().ldapdelete(dn)
    }

    /// Kill slapd and remove its temp dir. Idempotent; also done on drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::stop_child(&mut c, libc::SIGTERM);
        }
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
