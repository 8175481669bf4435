//! Password files: the first line of a regular file (at most
//! [`MAX_LINE`] bytes), and only under the directories the operator trusts
//! with secrets ([`SecretsDirs`]), so a configuration stored through the
//! portal or the API cannot make the service read `/etc/shadow` or
//! `/dev/zero` and send it to a directory server of its choosing.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The longest first line read from a password or key file, in bytes.
pub const MAX_LINE: usize = 4096;

/// The operator's default secrets directory.
pub const DEFAULT_DIR: &str = "/etc/mfasync";

/// Set by systemd for a service given credentials (`LoadCredential=`).
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// The directories password files may be in (`--secrets-dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsDirs(Vec<PathBuf>);

impl SecretsDirs {
    /// Exactly these directories.
    pub fn new(dirs: Vec<PathBuf>) -> SecretsDirs {
        SecretsDirs(dirs)
    }

    /// The operator's choice: the directories given (`--secrets-dir`), else
    /// `/etc/mfasync`; and `$CREDENTIALS_DIRECTORY` whenever it is set
    /// (systemd's credentials of this very service).
    pub fn from_operator(given: &[PathBuf]) -> SecretsDirs {
        let mut dirs = match given.is_empty() {
            true => vec![PathBuf::from(DEFAULT_DIR)],
            false => given.to_vec(),
        };
        if let Some(c) = std::env::var_os(CREDENTIALS_ENV).filter(|c| !c.is_empty()) {
            dirs.push(PathBuf::from(c));
        }
        SecretsDirs(dirs)
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.0
    }

    fn listed(&self) -> String {
        match self.0.is_empty() {
            true => "none".to_string(),
            false => self
                .0
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The canonical path of `path` (symbolic links and `..` resolved) when
    /// it is inside one of the directories (also canonicalised). A path that
    /// does not exist is judged by its lexical form, so the error does not
    /// tell whether a file outside exists. `setting` names the configuration
    /// key in errors ("directory.query_bind.password_file").
    pub fn admit(&self, setting: &str, path: &str) -> Result<PathBuf, Refusal> {
        let inside = |p: &Path, canonical_dirs: bool| {
            self.0.iter().any(|d| {
                let d = match canonical_dirs {
                    true => std::fs::canonicalize(d).ok(),
                    false => Some(lexical(d)),
                };
                d.is_some_and(|d| p.starts_with(d))
            })
        };
        let outside = || {
            Refusal::Outside(format!(
                "{setting}: {path} is not in a secrets directory ({}); put the file in \
                 one, or name its directory with --secrets-dir",
                self.listed()
            ))
        };
        match std::fs::canonicalize(path) {
            Ok(p) if inside(&p, true) => Ok(p),
            Ok(_) => Err(outside()),
            Err(_) if !inside(&lexical(Path::new(path)), false) => Err(outside()),
            Err(e) => Err(Refusal::Unreadable(format!(
                "{setting}: cannot read {path}: {e}"
            ))),
        }
    }
}

/// Why a password file is not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not under a secrets directory: never read.
    Outside(String),
    /// Under one, but missing, not a regular file, too long or not text.
    Unreadable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Outside(m) | Refusal::Unreadable(m) => f.write_str(m),
        }
    }
}

/// `path` made absolute (from the working directory) with `.` and `..`
/// removed, without asking the file system.
fn lexical(path: &Path) -> PathBuf {
    let base = match path.is_absolute() {
        true => PathBuf::new(),
        false => std::env::current_dir().unwrap_or_default(),
    };
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The password in the file `path`, which must be in one of `dirs`.
pub fn read_password_file(setting: &str, path: &str, dirs: &SecretsDirs) -> Result<String, String> {
    let canonical = dirs.admit(setting, path).map_err(|r| r.to_string())?;
    first_line(setting, &canonical, path)
}

/// The first line of the regular file `path` (without its line end), at
/// most [`MAX_LINE`] bytes; nothing after it is read. FIFOs, devices and
/// directories are refused without being read. Errors begin with `setting`.
pub fn read_first_line(setting: &str, path: &Path) -> Result<String, String> {
    first_line(setting, path, &path.display().to_string())
}

/// [`read_first_line`] of `path`, named `shown` in errors.
fn first_line(setting: &str, path: &Path, shown: &str) -> Result<String, String> {
    let not_regular = |t: std::fs::FileType| {
        let what = match t.is_dir() {
            true => "a directory",
            false => kind_of_special(t),
        };
        format!("{setting}: {shown} is {what}, not a regular file")
    };
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{setting}: cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    // Not blocking on a FIFO swapped in since, nor following a link.
    let mut file =
        open_nonblocking(path).map_err(|e| format!("{setting}: cannot read {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{setting}: cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut buf = Vec::with_capacity(256);
    (&mut file)
        .take(MAX_LINE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{setting}: cannot read {shown}: {e}"))?;
    let line = match buf.iter().position(|&b| b == b'\n') {
        Some(end) => &buf[..end],
        None if buf.len() > MAX_LINE => {
            return Err(format!(
                "{setting}: the first line of {shown} is longer than {MAX_LINE} bytes"
            ))
        }
        None => &buf[..],
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8(line.to_vec())
        .map_err(|_| format!("{setting}: the first line of {shown} is not UTF-8 text"))
}

#[cfg(unix)]
fn kind_of_special(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "special"
    }
}

#[cfg(not(unix))]
fn kind_of_special(_: std::fs::FileType) -> &'static str {
    "special"
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_first_line_of_a_regular_file_only() {
        let d = dir();
        let dirs = SecretsDirs::new(vec![d.path().to_path_buf()]);
        let p = d.path().join("two-lines");
        std::fs::write(&p, "first\r\nsecond\n").unwrap_or_default();
        let path = p.display().to_string();
        assert_eq!(
            read_password_file("k.password_file", &path, &dirs).as_deref(),
            Ok("first")
        );
        std::fs::write(&p, "no line end").unwrap_or_default();
        assert_eq!(
            read_password_file("k.password_file", &path, &dirs).as_deref(),
            Ok("no line end")
        );
        // a long first line is refused, a long file after a short line is fine
        std::fs::write(&p, "x".repeat(MAX_LINE + 1)).unwrap_or_default();
        let e = read_password_file("k.password_file", &path, &dirs).unwrap_err();
        assert!(e.contains("longer than 4096 bytes"), "{e}");
        std::fs::write(&p, format!("pw\n{}", "y".repeat(100_000))).unwrap_or_default();
        assert_eq!(
            read_password_file("k.password_file", &path, &dirs).as_deref(),
            Ok("pw")
        );
        std::fs::write(&p, b"\xff\xfe\n").unwrap_or_default();
        let e = read_password_file("k.password_file", &path, &dirs).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn directories_fifos_and_devices_are_refused_unread() {
        let d = dir();
        let dirs = SecretsDirs::new(vec![d.path().to_path_buf(), PathBuf::from("/dev")]);
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap_or_default();
        let e =
            read_password_file("k.password_file", &sub.display().to_string(), &dirs).unwrap_err();
        assert!(
            e.starts_with("k.password_file: ") && e.contains("is a directory"),
            "{e}"
        );
        let e = read_password_file("k.password_file", "/dev/zero", &dirs).unwrap_err();
        assert!(e.contains("/dev/zero is a device"), "{e}");
        #[cfg(unix)]
        {
            let fifo = d.path().join("fifo");
            let c = std::ffi::CString::new(fifo.display().to_string()).unwrap_or_default();
            // SAFETY: a NUL-terminated path; mkfifo only reads it.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let e = read_password_file("k.password_file", &fifo.display().to_string(), &dirs)
                .unwrap_err();
            assert!(e.contains("is a FIFO"), "{e}");
        }
    }

    #[test]
    fn only_inside_the_secrets_directories() {
        let d = dir();
        let secrets = d.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap_or_default();
        std::fs::write(d.path().join("outside"), "no\n").unwrap_or_default();
        std::fs::write(secrets.join("pw"), "yes\n").unwrap_or_default();
        let dirs = SecretsDirs::new(vec![secrets.clone()]);
        let read =
            |p: &Path| read_password_file("k.password_file", &p.display().to_string(), &dirs);
        assert_eq!(read(&secrets.join("pw")).as_deref(), Ok("yes"));
        // `..` and a symbolic link out of it, another file, a missing one outside
        for p in [
            secrets.join("../outside"),
            d.path().join("outside"),
            PathBuf::from("/etc/shadow"),
            PathBuf::from("/nonexistent/x"),
        ] {
            let e = read(&p).unwrap_err();
            assert!(e.contains("is not in a secrets directory"), "{p:?}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.path().join("outside"), secrets.join("link"))
                .unwrap_or_default();
            let e = read(&secrets.join("link")).unwrap_err();
            assert!(e.contains("is not in a secrets directory"), "{e}");
        }
        // missing inside: an ordinary read error
        let e = read(&secrets.join("missing")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        // a symbolic link to a secrets directory is that directory
        #[cfg(unix)]
        {
            let link = d.path().join("linked");
            std::os::unix::fs::symlink(&secrets, &link).unwrap_or_default();
            let dirs = SecretsDirs::new(vec![link.clone()]);
            let got = read_password_file(
                "k.password_file",
                &link.join("pw").display().to_string(),
                &dirs,
            );
            assert_eq!(got.as_deref(), Ok("yes"));
        }
    }

    #[test]
    fn the_operator_default_and_systemd_credentials() {
        let given = [PathBuf::from("/srv/a")];
        let d = SecretsDirs::from_operator(&given);
        assert_eq!(d.dirs()[0], PathBuf::from("/srv/a"));
        assert!(!d.dirs().contains(&PathBuf::from(DEFAULT_DIR)));
        let d = SecretsDirs::from_operator(&[]);
        assert_eq!(d.dirs()[0], PathBuf::from(DEFAULT_DIR));
    }
}
