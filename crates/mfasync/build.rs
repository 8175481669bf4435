//! Optional: link the `mfasync` binary as a position-dependent executable
//! (`-no-pie`) on Linux with glibc, when built with `MFASYNC_NO_PIE=1`.
//!
//! A password check (`mfasync auth`, as a RADIUS/PAM helper calls it) is one
//! short process. Linked as PIE (the default), the large binary carries
//! ~42,000 relative relocations that the dynamic loader applies at every
//! start, and every page of `.data.rel.ro` is written (copy-on-write page
//! faults): measured 2026-11-25, ~0.1 M loader cycles and ~150 page faults
//! per start, a few percent of a password check. Non-PIE, those addresses are
//! fixed at link time; the price is that the binary's own code and data are
//! no longer at a random address (ASLR still applies to the stack, heap and
//! shared libraries). The same binary runs `serve`, a network service, so the
//! default stays PIE (Debian's hardening default); `MFASYNC_NO_PIE=1` is for
//! an installation that runs only the `auth` helper from this build.
//! (`-z pack-relative-relocs` keeps PIE but was measured no faster here: the
//! relocated pages are written all the same.)
//!
//! Only the binaries of this package (`cargo:rustc-link-arg-bins`): the
//! other crates, tests and examples are built as before.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MFASYNC_NO_PIE");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let no_pie = std::env::var_os("MFASYNC_NO_PIE").is_some_and(|v| v == "1");
    if os == "linux" && env == "gnu" && no_pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
