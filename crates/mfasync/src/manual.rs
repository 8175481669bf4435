//! Man pages and shell completions made from the clap definitions, so they
//! always describe this build's command line (`scripts/package` runs
//! `mfasync manpages DIR` and `mfasync completions SHELL`); and the starter
//! configurations that `config example` prints and the package installs.

use clap_mangen::roff::{bold, roman, Roff};
use std::path::{Path, PathBuf};

/// The commented starter configuration for Active Directory (installed as
/// /etc/mfasync/mfasync.toml by the package).
pub const EXAMPLE_AD: &str = include_str!("../../../packaging/mfasync.toml");
/// The same for OpenLDAP (`config example --openldap`).
pub const EXAMPLE_OPENLDAP: &str = include_str!("../../../packaging/mfasync-openldap.toml");

/// Write the completion script for `shell` to stdout.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// Write `mfasync.1` and one page per (visible) subcommand,
/// `mfasync-config.1`, `mfasync-config-apply.1`, … into `dir`; the files
/// written, sorted.
pub fn manpages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let fail = |e: std::io::Error| format!("cannot write man pages into {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    // (built: subcommands know their display names, such as mfasync-config)
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut written = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        subcommand_pages(sub, &source, dir, &mut written).map_err(fail)?;
    }
    let main = dir.join(format!("{}.1", cmd.get_name()));
    std::fs::write(&main, main_page(cmd).map_err(fail)?).map_err(fail)?;
    written.push(main);
    written.sort();
    Ok(written)
}

/// The page of `cmd` and of each of its visible subcommands, footed with
/// the program's name and version.
fn subcommand_pages(
    cmd: &clap::Command,
    source: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        subcommand_pages(sub, source, dir, written)?;
    }
    written.push(
        clap_mangen::Man::new(cmd.clone())
            .source(source)
            .generate_to(dir)?,
    );
    Ok(())
}

/// mfasync(1): clap's sections, then ENVIRONMENT, FILES, EXIT STATUS and SEE ALSO.
fn main_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("{}-{}(1)", cmd.get_name(), s.get_name()))
        .collect();
    let man = clap_mangen::Man::new(cmd);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    let mut roff = Roff::new();
    section(
        &mut roff,
        "ENVIRONMENT",
        &[
            ("MFASYNC_DATABASE", "the database, as --database (the service: sqlite:///var/lib/mfasync/mfasync.db)"),
            ("MFASYNC_LOG", "which log events are written to stderr: warn (default), info, debug, or per module (mfasync=info)"),
            ("MFASYNC_LOG_FORMAT", "text or json, as --log-format"),
            ("MFASYNC_SECRET_KEY_FILE", "a file of 64 hex digits: the key that seals passwords typed in the web portal"),
            ("MFASYNC_SECRET_KEY", "the same key itself, when no file is named"),
            ("NOTIFY_SOCKET", "set by systemd (Type=notify): serve reports READY=1 there once it listens, and WATCHDOG=1 when WatchdogSec= is set"),
        ],
    );
    section(
        &mut roff,
        "FILES",
        &[
            ("/etc/mfasync/mfasync.toml", "the configuration to edit and store with `mfasync config apply` (printed by `mfasync config example`)"),
            ("/var/lib/mfasync/mfasync.db", "the service's database"),
            ("/lib/systemd/system/mfasync.service", "the systemd unit running `mfasync serve`"),
        ],
    );
    section(
        &mut roff,
        "EXIT STATUS",
        &[
            ("0", "success"),
            ("1", "refused or failed; a one-line reason on stderr"),
            ("2", "bad usage or invalid input, every problem listed"),
        ],
    );
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(subcommands.join(", ")), roman(", systemd-creds(1)")]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

fn section(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (term, text) in items {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*text)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `# key = …` (commented out) or `key = …`: the key's name.
    fn key_of(line: &str) -> Option<&str> {
        let line = line.trim_start_matches('#').trim_start();
        let (key, _) = line.split_once(" = ")?;
        key.bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
            .then_some(key)
    }

    #[test]
    fn every_example_key_is_explained_and_documented() {
        let docs = include_str!("../../../docs/configuration.md");
        for example in [EXAMPLE_AD, EXAMPLE_OPENLDAP] {
            // a comment explains the keys after it, up to a blank line or table
            let mut explained = false;
            for line in example.lines() {
                if line.is_empty() || line.starts_with('[') {
                    explained = false;
                } else if line.starts_with('#') && key_of(line).is_none() {
                    explained = true;
                } else if let Some(key) = key_of(line) {
                    assert!(explained, "no comment explains {line:?}");
                    assert!(
                        docs.contains(&format!("`{key}`")),
                        "{key} is not in docs/configuration.md"
                    );
                }
            }
        }
    }
}
