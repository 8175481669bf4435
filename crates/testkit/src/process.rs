//! Child-process bookkeeping shared by all servers.
//!
//! Every server child is registered here. `stop()`/`Drop` unregister and kill it; whatever is still
//! registered when the test binary exits (e.g. the `shared_postgres()` instance, or a server someone
//! put in a `static`) is killed by a libc `atexit` hook, together with its whole process tree, and
//! its temp directory is removed.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

struct Registered {
    pid: i32,
    signal: i32,
    dir: Option<PathBuf>,
    watchdog: Option<Child>,
}

/// A `sh` that blocks reading a pipe from us; when the pipe closes because this process died
/// without running its exit hooks (SIGKILL, abort, timeout), it kills the server.
fn spawn_watchdog(pid: u32, signal: i32, dir: Option<&Path>) -> Option<Child> {
    let script = format!(
        "cat >/dev/null; kill -{signal} \"$1\" 2>/dev/null; i=0; \
         while kill -0 \"$1\" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
         kill -9 \"$1\" 2>/dev/null; [ -n \"$2\" ] && rm -rf \"$2\"; exit 0"
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("mfasync-testkit-watchdog")
        .arg(pid.to_string())
        .arg(dir.map(|d| d.as_os_str().to_owned()).unwrap_or_default())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
}

fn kill_watchdog(w: Option<Child>) {
    if let Some(mut w) = w {
        let _ = w.kill();
        let _ = w.wait();
    }
}

static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        // SAFETY: registering a plain extern "C" function without captured state.
        unsafe {
            libc::atexit(at_exit);
        }
    });
}

/// Remove `dir` when the process exits.
pub(crate) fn register_dir(dir: &Path) {
    install_hook();
    DIRS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_path_buf());
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let entries = match REGISTRY.try_lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(std::sync::TryLockError::Poisoned(p)) => std::mem::take(&mut *p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        for e in entries {
            kill_watchdog(e.watchdog);
            terminate_tree(e.pid, e.signal, Duration::from_secs(5));
            if let Some(dir) = e.dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        if let Ok(mut dirs) = DIRS.try_lock() {
            for d in dirs.drain(..) {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    });
}

/// Register a child so it is killed (with `signal`, then SIGKILL) at process exit, and `dir` removed.
/// With `watchdog`, a helper process also kills it if this process dies without exit hooks.
pub(crate) fn register(pid: u32, signal: i32, dir: Option<&Path>, watchdog: bool) {
    install_hook();
    let watchdog = if watchdog {
        spawn_watchdog(pid, signal, dir)
    } else {
        None
    };
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    reg.push(Registered {
        pid: pid as i32,
        signal,
        dir: dir.map(Path::to_path_buf),
        watchdog,
    });
}

pub(crate) fn unregister(pid: u32) {
    let mut removed = Vec::new();
    {
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = 0;
        while i < reg.len() {
            if reg[i].pid == pid as i32 {
                removed.push(reg.remove(i));
            } else {
                i += 1;
            }
        }
    }
    for r in removed {
        kill_watchdog(r.watchdog);
    }
}

/// All descendants of `pid` (children, grandchildren, ...), found through /proc.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for ent in rd.flatten() {
            let Some(p) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ..." – comm may contain spaces/parens, so split at the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut it = rest.split_whitespace();
            let _state = it.next();
            if let Some(ppid) = it.next().and_then(|s| s.parse::<i32>().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(cur) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == cur && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Reap `pid` if it is our child; true once it is gone.
fn reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: plain waitpid on a pid; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        return true;
    }
    if r < 0 {
        // Not our child (or already reaped): fall back to existence check.
        return !alive(pid);
    }
    false
}

/// Send `signal` to `pid`, wait up to `grace` for it to exit, then SIGKILL it and every descendant
/// that is still around. Reaps `pid`.
pub(crate) fn terminate_tree(pid: i32, signal: i32, grace: Duration) {
    let desc = descendants(pid);
    // SAFETY: sending a signal to a process id we started.
    unsafe {
        libc::kill(pid, signal);
    }
    let deadline = Instant::now() + grace;
    let mut gone = false;
    while Instant::now() < deadline {
        if reap(pid) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !gone {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !reap(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Children the server forked (samba's prefork workers, postgres backends) that outlived it.
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline && desc.iter().any(|&d| alive(d) && !is_zombie(d)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in desc {
        if alive(d) {
            // SAFETY: as above; these are descendants of a process we started.
            unsafe {
                libc::kill(d, libc::SIGKILL);
            }
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Stop a registered child: signal, wait, kill the tree, unregister.
pub(crate) fn stop_child(child: &mut Child, signal: i32) {
    let pid = child.id();
    unregister(pid);
    if let Ok(None) = child.try_wait() {
        terminate_tree(pid as i32, signal, Duration::from_secs(10));
    }
    let _ = child.try_wait();
}
