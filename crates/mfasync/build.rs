//! Link the `mfasync` binary as a position-dependent executable (`-no-pie`)
//! on Linux with glibc.
//!
//! A password check (`mfasync auth`, as a RADIUS/PAM helper calls it) is one
//! short process. Linked as PIE, the ~110 MB binary carries ~42,000 relative
//! relocations that the dynamic loader applies at every start (reading ~1 MB
//! of relocation records and writing every page of `.data.rel.ro`): about 40%
//! of the process's CPU time. Non-PIE, those addresses are fixed at link time.
//! The trade-off: the binary's own code and data are no longer at a random
//! address (ASLR still applies to the stack, heap and shared libraries).
//!
//! Only the binaries of this package (`cargo:rustc-link-arg-bins`): the
//! other crates, tests and examples are built as before, so nothing else of
//! the workspace is recompiled.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MFASYNC_PIE");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // MFASYNC_PIE=1 at build time keeps the default (position-independent) link.
    let keep_pie = std::env::var_os("MFASYNC_PIE").is_some_and(|v| v == "1");
    if os == "linux" && env == "gnu" && !keep_pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
