//! The process's memory allocator: mimalloc, giving freed memory back at once
//! (a full sync frees most allocations on another thread than made them).
//! `before_main` turns huge pages off and gives `auth` a small first arena
//! that is never purged. Figures: BENCHMARKS.md, "History".

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Entries of mimalloc's `mi_option_e` (mimalloc.h of the pinned
// libmimalloc-sys, v3 sources; the first three are the same in v2, allow_thp
// is not: 37 there). The test below checks them by their documented defaults.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ARENA_RESERVE: libmimalloc_sys::mi_option_t = 23;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Purge freed memory at once (`purge_delay` 0) and commit arena memory only
/// when used (`arena_eager_commit` 0). Called first thing in `main`.
pub fn tune() {
    set_purge_delay(0);
    // SAFETY: mi_option_set only stores an option value, read by mimalloc
    // when it reserves memory, at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
}

/// While a first synchronization writes its creates as it reads
/// (`sync::read_users`): freed memory is kept for 10 ms before it goes back
/// to the system (`purge_delay`), then again at once, so pages freed and
/// reused moments later are not faulted in again. Not for a later sync: it
/// raises the peak memory for no gain in time (BENCHMARKS.md, "History").
pub struct KeepFreedMemory(());

impl KeepFreedMemory {
    pub fn start() -> Self {
        set_purge_delay(10);
        KeepFreedMemory(())
    }
}

impl Drop for KeepFreedMemory {
    fn drop(&mut self) {
        set_purge_delay(0);
    }
}

fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: mi_option_set only stores an option value, read by mimalloc
    // when it purges memory, at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
}

/// Whether the command line `args` (without the program name) runs the
/// `auth` subcommand: the first argument that is neither an option nor the
/// value of `--database` (the one global option taking a value). A wrong
/// guess only changes how memory is mapped, never what the command does.
fn is_auth<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == b"--database" {
            args.next();
        } else if a == b"--" {
            return args.next() == Some(b"auth".as_slice());
        } else if !a.starts_with(b"-") {
            return a == b"auth";
        }
    }
    false
}

/// Before `main` (and before the standard library's first allocation): no
/// transparent huge pages, and `mfasync auth`'s small first arena (module
/// documentation).
/// glibc calls the functions of `.init_array` with `argc, argv, envp`.
#[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
#[used]
#[link_section = ".init_array"]
static BEFORE_MAIN: extern "C" fn(
    std::ffi::c_int,
    *const *const std::ffi::c_char,
    *const *const std::ffi::c_char,
) = before_main;

#[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
extern "C" fn before_main(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
    _envp: *const *const std::ffi::c_char,
) {
    // SAFETY: stores an option value; mimalloc reads it when it reserves
    // and maps arena memory (none yet from Rust code at this point).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() || n < 2 {
        return;
    }
    // SAFETY: glibc passes the process's argv: `argc` valid pointers to
    // NUL-terminated strings (null ones are skipped). Nothing is allocated.
    let args = (1..n).filter_map(|i| {
        let p = unsafe { *argv.add(i) };
        (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes())
    });
    if is_auth(args) {
        // SAFETY: stores option values; mimalloc reads them when it reserves
        // and maps arena memory (none yet from Rust code at this point) and
        // when it purges.
        unsafe {
            // 32 MiB (the minimum; in KiB) instead of 1 GiB: the first
            // arena's bitmaps are written when it is reserved
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_RESERVE, 32 * 1024);
            // nothing given back while the process ends anyway
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_numbers_name_the_options_meant() {
        // SAFETY: reading an option value.
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        // their defaults in the pinned sources (options.c): purge_delay
        // 1000 ms, arena_eager_commit 2, arena_reserve 1 GiB (in KiB),
        // allow_thp 1 (a test process never calls `tune` nor `before_main`)
        assert_eq!(get(MI_OPTION_PURGE_DELAY), 1000);
        assert_eq!(get(MI_OPTION_ARENA_EAGER_COMMIT), 2);
        assert_eq!(get(MI_OPTION_ARENA_RESERVE), 1024 * 1024);
        assert_eq!(get(MI_OPTION_ALLOW_THP), 1);
        tune();
        assert_eq!(get(MI_OPTION_PURGE_DELAY), 0);
        assert_eq!(get(MI_OPTION_ARENA_EAGER_COMMIT), 0);
        let v: Vec<u64> = (0..100_000).collect();
        assert_eq!(v.iter().sum::<u64>(), 4_999_950_000);
    }

    #[test]
    fn the_auth_subcommand_is_recognised_before_main() {
        let auth = |line: &str| is_auth(line.split_whitespace().map(str::as_bytes));
        assert!(auth("auth alice --password-stdin"));
        assert!(auth("--database sqlite://a.db auth alice --password-stdin"));
        assert!(auth("--json --database=sqlite://a.db auth alice"));
        assert!(auth("--database auth auth alice"));
        assert!(!auth("--database auth sync"));
        assert!(!auth("sync --full"));
        assert!(!auth("serve --listen 127.0.0.1:8080"));
        assert!(!auth("users export auth"));
        assert!(!auth(""));
        assert!(!auth("--database"));
    }
}
