//! The process's memory allocator: mimalloc, told to give freed memory back
//! to the system at once.
//!
//! A full synchronization decodes, maps and drops about a hundred short-lived
//! allocations per directory entry on three threads (the LDAP reader, the
//! mapping thread and the writer), mostly freed on another thread than the one
//! that made them. With glibc's malloc that was about a quarter of the CPU
//! time (`perf`, 20,000 users), and without capping its arenas it held ~30 %
//! more memory than in use. mimalloc, measured with `scripts/bench 100000`
//! (BENCHMARKS.md): first sync 3.6-4.4 s -> 2.5-2.7 s, no-change sync
//! 1.6-2.7 s -> 1.3-1.4 s, peak RSS 75/84 MB -> 68/74 MB. Without the two
//! options below mimalloc keeps freed pages for a while and eagerly commits
//! its arenas: 103-132 MB peak at 50,000 users.
//!
//! The price, measured the same evening (one `mfasync auth` process per
//! check, taking turns with `ldapwhoami`, 300 each): ~0.45 ms more per
//! process start (mimalloc 3's initialisation), 1.22x ldapwhoami instead of
//! 1.15x with glibc. mimalloc 2 (the `v2` feature) cost nothing there, but
//! its syncs were slower (100,000 users: 3.1-3.4x / 1.6x the floor) and
//! their peak RSS higher (81-96 MB). A password check has nothing to give
//! back, so `tune` is skipped for `auth`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Two entries of mimalloc's `mi_option_e` (mimalloc.h of the pinned
// libmimalloc-sys; identical in its v2 and v3 sources). The test below checks
// them by their documented defaults.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Purge freed memory at once (`purge_delay` 0) and commit arena memory only
/// when used (`arena_eager_commit` 0). Called first thing in `main`.
pub fn tune() {
    // SAFETY: mi_option_set only stores an option value; both options are
    // read by mimalloc when it purges or reserves memory, at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
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
        // 1000 ms, arena_eager_commit 2
        // (a test process never calls `tune`)
        assert_eq!(get(MI_OPTION_PURGE_DELAY), 1000);
        assert_eq!(get(MI_OPTION_ARENA_EAGER_COMMIT), 2);
        tune();
        assert_eq!(get(MI_OPTION_PURGE_DELAY), 0);
        assert_eq!(get(MI_OPTION_ARENA_EAGER_COMMIT), 0);
        let v: Vec<u64> = (0..100_000).collect();
        assert_eq!(v.iter().sum::<u64>(), 4_999_950_000);
    }
}
