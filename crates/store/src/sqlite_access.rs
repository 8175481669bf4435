//! What this process may do with a SQLite database path, decided before
//! SQLite opens it: a missing directory or an uncreatable file is named
//! (SQLite says only "unable to open database file"), and a database this
//! user may read but not write (a read-only file, directory or mount) is
//! opened read-only so that the commands that only read work on it.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// How to open the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read, write, create (the default).
    ReadWrite,
    /// Read only. `immutable`: SQLite may not even create its `-shm`
    /// file (the directory is not writable and none is there); safe
    /// because no `-wal` with data is there, so no writer is at work.
    ReadOnly { immutable: bool },
}

/// Decide the access to `path`, or say why it cannot be opened.
pub(crate) fn check(path: &str) -> Result<Access, String> {
    let file = Path::new(path);
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("the directory {} does not exist", dir.display()))
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    let dir_writable = allowed(&dir, libc::W_OK | libc::X_OK);
    match std::fs::metadata(file) {
        Ok(m) if m.is_dir() => Err(format!("{path} is a directory, not a database file")),
        Ok(_) => {
            if !allowed(file, libc::R_OK) {
                return Err(format!("{path} is not readable by this user"));
            }
            let wal = sibling(file, "-wal");
            let shm = sibling(file, "-shm");
            // SQLite in WAL mode creates -wal and -shm beside the database
            let side_files_ok = dir_writable
                || [&wal, &shm]
                    .iter()
                    .all(|p| allowed(p, libc::R_OK | libc::W_OK));
            if allowed(file, libc::W_OK) && side_files_ok {
                return Ok(Access::ReadWrite);
            }
            let wal_has_data = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
            let shm_there = shm.exists();
            match (dir_writable || shm_there, wal_has_data) {
                (true, _) => Ok(Access::ReadOnly { immutable: false }),
                (false, false) => Ok(Access::ReadOnly { immutable: true }),
                (false, true) => Err(format!(
                    "{path} is read-only for this user and its write-ahead log {} cannot be read without {} (which cannot be created here)",
                    wal.display(),
                    shm.display()
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match dir_writable {
            true => Ok(Access::ReadWrite),
            false => Err(format!(
                "cannot create {path}: the directory {} is not writable by this user",
                dir.display()
            )),
        },
        Err(e) => Err(format!("{path}: {e}")),
    }
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// faccessat(2) with the effective ids: whether this process may, as the
/// kernel decides (root included, a read-only mount included).
fn allowed(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path that lives across the call.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directories_and_directories_are_named() {
        let e = check("/nonexistent-mfasync/dir/mfa.db")
            .err()
            .unwrap_or_default();
        assert!(e.contains("/nonexistent-mfasync/dir does not exist"), "{e}");
        let e = check("/").err().unwrap_or_default();
        assert!(e.contains("is a directory"), "{e}");
        let dir = std::env::temp_dir();
        let new = dir.join(format!("mfasync-access-{}.db", std::process::id()));
        assert_eq!(check(&new.to_string_lossy()), Ok(Access::ReadWrite));
    }
}
