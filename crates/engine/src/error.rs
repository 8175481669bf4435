//! The engine's errors: the store's and the directory's as they are, the
//! engine's own messages, and what was being done (`ResultExt::context`).
//!
//! They print as `anyhow::Error` does: `{e}` the error's own message, `{e:#}`
//! with its causes joined by ": " (the binary and the API show `{e:#}`).

use std::fmt;

use mfasync_ldap::LdapError;
use mfasync_store::StoreError;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What went wrong in a cycle, an approval or an email. (`Display` is written
/// below: `{e:#}` also shows the causes.)
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The MFA user database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The directory failed.
    #[error(transparent)]
    Ldap(#[from] LdapError),
    /// A file or a thread could not be opened or started.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An incremental cycle cannot be decided (why): a full cycle runs
    /// instead ([`EngineError::needs_full`]).
    NeedsFull(String),
    /// An email could not be addressed, built or sent (lettre's error told).
    Mail(String),
    /// What was being done when `source` failed.
    Context {
        what: String,
        #[source]
        source: Box<EngineError>,
    },
    /// A refusal or failure told in words (a setting, a directory's answer).
    Other(String),
}

impl EngineError {
    /// This error, with what was being done.
    pub fn context(self, what: impl Into<String>) -> EngineError {
        EngineError::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// Whether the directory stopped a read part-way, under any context
    /// ([`mfasync_ldap::LdapError::cut_short`]).
    pub fn cut_short(&self) -> bool {
        match self {
            EngineError::Ldap(e) => e.cut_short(),
            EngineError::Context { source, .. } => source.cut_short(),
            _ => false,
        }
    }

    /// Why this error means "run a full cycle instead", under any context.
    pub fn needs_full(&self) -> Option<&str> {
        match self {
            EngineError::NeedsFull(why) => Some(why),
            EngineError::Context { source, .. } => source.needs_full(),
            _ => None,
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Store(e) => write!(f, "{e}")?,
            EngineError::Ldap(e) => write!(f, "{e}")?,
            EngineError::Io(e) => write!(f, "{e}")?,
            EngineError::NeedsFull(m) | EngineError::Mail(m) | EngineError::Other(m) => {
                f.write_str(m)?
            }
            EngineError::Context { what, .. } => f.write_str(what)?,
        }
        if f.alternate() {
            let mut cause = std::error::Error::source(self);
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

/// `.context(..)` and `.with_context(..)` on any result whose error becomes
/// an [`EngineError`]: the message says what was being done.
pub trait ResultExt<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<EngineError>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_anyhow_own_message_then_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let r: Result<()> = Err(io)
            .context("cannot open")
            .context("sync.items[0] (ou=x)");
        let Err(e) = r else {
            panic!("an error was made")
        };
        let all = "sync.items[0] (ou=x): cannot open: no such file";
        assert_eq!(e.to_string(), "sync.items[0] (ou=x)");
        assert_eq!(format!("{e:#}"), all);
        // walked by `source()` (as the binary's anyhow does): the same text
        assert_eq!(chain(&e), all);
    }

    /// The chain as anyhow's `{:#}` prints it: each error's `{}`, joined.
    fn chain(e: &EngineError) -> String {
        let mut out = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            out.push_str(&format!(": {c}"));
            cause = c.source();
        }
        out
    }

    #[test]
    fn needs_full_is_found_under_contexts() {
        let e = EngineError::NeedsFull("the domain x.test cannot be read".into())
            .context("following the member S-1-5-21-1 of cn=g");
        assert_eq!(e.needs_full(), Some("the domain x.test cannot be read"));
        assert_eq!(EngineError::Other("no".into()).needs_full(), None);
    }
}
