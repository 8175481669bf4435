use std::ffi::CString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::process;
use crate::util;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL 15 cluster: `initdb` into a temp dir owned by the `postgres` OS user, server
/// run as that user, trust auth, listening on `127.0.0.1:<random port>` with its unix socket in the
/// temp dir. fsync is off (test data only). Stopped (immediate shutdown, temp dir removed) on drop.
pub struct Postgres {
    pub port: u16,
    /// The cluster's data directory parent (also the unix socket directory).
    pub dir: PathBuf,
    tmp: Option<TempDir>,
    child: Option<Child>,
}

fn postgres_ids() -> (u32, u32) {
    let name = CString::new("postgres").unwrap_or_default();
    // SAFETY: getpwnam with a valid NUL-terminated string; the result is read immediately.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        panic!("testkit: OS user `postgres` not found (is the postgresql package installed?)");
    }
    // SAFETY: pw is non-null and points to a static passwd record.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn as_postgres(cmd: &mut Command, uid: u32, gid: u32) -> &mut Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(uid).gid(gid);
    }
    cmd.env("HOME", "/tmp").env_remove("PGDATA")
}

fn chown_recursive(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("testkit: chown {}: {e}", p.display()));
}

impl Postgres {
    /// initdb + start a fresh cluster; returns once it accepts connections.
    pub fn start() -> Postgres {
        let (uid, gid) = postgres_ids();
        let tmp = tempfile::Builder::new()
            .prefix("mfasync-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: cannot create temp dir: {e}"));
        let dir = tmp.path().to_path_buf();
        chown_recursive(&dir, uid, gid);
        let data = dir.join("data");
        util::run_ok(
            as_postgres(&mut Command::new(format!("{PG_BIN}/initdb")), uid, gid)
                .arg("-D")
                .arg(&data)
                .arg("-U")
                .arg("postgres")
                .arg("-A")
                .arg("trust")
                .arg("-E")
                .arg("UTF8")
                .arg("--locale=C")
                .arg("--no-sync")
                .arg("--no-instructions")
                .current_dir(&dir),
            "initdb",
        );

        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = util::free_port();
            let log = dir.join("postgres.log");
            let log_file = File::create(&log)
                .unwrap_or_else(|e| panic!("testkit: create {}: {e}", log.display()));
            chown_recursive(&log, uid, gid);
            let log_err = log_file
                .try_clone()
                .unwrap_or_else(|e| panic!("testkit: dup log fd: {e}"));
            let child = as_postgres(&mut Command::new(format!("{PG_BIN}/postgres")), uid, gid)
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&dir)
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                .args(["-c", "max_connections=200"])
                .args(["-c", "shared_buffers=32MB"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("testkit: cannot spawn postgres: {e}"));
            // SIGQUIT = immediate shutdown: the postmaster kills its backends and exits at once.
            process::register(child.id(), libc::SIGQUIT, Some(&dir), true);
            let mut pg = Postgres {
                port,
                dir: dir.clone(),
                tmp: None,
                child: Some(child),
            };
            let mut exited = false;
            let start = std::time::Instant::now();
            loop {
                let ok = util::output(
                    Command::new(format!("{PG_BIN}/pg_isready"))
                        .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                        .arg("-p")
                        .arg(port.to_string()),
                )
                .status
                .success();
                if ok {
                    break;
                }
                if let Some(Ok(Some(_))) = pg.child.as_mut().map(|c| c.try_wait()) {
                    exited = true;
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    panic!(
                        "testkit: postgres not ready after 60 s; log:\n{}",
                        util::tail_file(&log)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if exited {
                let text = util::tail_file(&log);
                pg.stop();
                if attempt < 5 && text.contains("already in use") {
                    continue;
                }
                panic!("testkit: postgres exited during start-up; log:\n{text}");
            }
            pg.tmp = Some(tmp);
            return pg;
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Create a new empty database and return its URL: `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn fresh_database(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t{}_{}_{:08x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        util::run_ok(
            Command::new(format!("{PG_BIN}/psql"))
                .arg(self.admin_url())
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
                .arg(format!("CREATE DATABASE \"{name}\"")),
            "CREATE DATABASE",
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Immediate shutdown and temp dir removal. Idempotent; also done on drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::stop_child(&mut c, libc::SIGQUIT);
        }
        if let Some(t) = self.tmp.take() {
            let _ = t.close();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One shared cluster per test binary, started lazily on first use and stopped at process exit
/// (atexit hook: the postmaster is killed and its temp dir removed). Use
/// [`Postgres::fresh_database`] to isolate tests from each other.
pub fn shared_postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(Postgres::start)
}
