//! Opening the `--database`: bounded by `--connect-timeout`, and its errors
//! sorted into the exit codes of PRODUCT.md (a URL that cannot name a usable
//! database is bad input, exit 2; a server that does not answer is a failure,
//! exit 1), never showing a password the URL holds.

use crate::Failure;
use mfasync_store::{OpenOptions, Store, StoreError};
use std::sync::OnceLock;
use std::time::Duration;

/// `--connect-timeout`, set once by `main` before any database is opened.
static CONNECT_TIMEOUT: OnceLock<Duration> = OnceLock::new();

pub fn set_connect_timeout(timeout: Duration) {
    let _ = CONNECT_TIMEOUT.set(timeout);
}

/// `--connect-timeout`: seconds ("10") or a duration ("10s", "1m"), 1 s to 1 h.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = match text.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("not a number of seconds or a duration such as \"10s\": {e}"))?,
    };
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err("must be between 1 s and 1 h".into());
    }
    Ok(d)
}

/// Open the database (`short`: a command that reads a few rows, see
/// `mfasync_store::open_current`).
pub async fn open(url: &str, short: bool) -> Result<Box<dyn Store>, Failure> {
    let options = OpenOptions {
        connect_timeout: CONNECT_TIMEOUT
            .get()
            .copied()
            .unwrap_or(mfasync_store::DEFAULT_CONNECT_TIMEOUT),
        short,
    };
    mfasync_store::open_with(url, options).await.map_err(|e| {
        let why = format!("cannot open database {}: {e}", redacted(url));
        match e {
            StoreError::BadUrl(_) | StoreError::CannotOpen(_) => Failure::Invalid(vec![why]),
            _ => Failure::Refused(why),
        }
    })
}

/// The URL without the password of its user part.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(without a scheme)".into();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            // a password in the query string (?password=) is dropped whole
            let tail = tail.split_once('?').map_or(tail, |(path, _)| path);
            format!("{scheme}://{user}@{host}{tail}")
        }
        None if scheme.starts_with("postgres") => {
            let tail = tail.split_once('?').map_or(tail, |(path, _)| path);
            format!("{scheme}://{authority}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("postgres://mfa:s3cret@db.example.com:5432/mfa?sslmode=require"),
            "postgres://mfa@db.example.com:5432/mfa"
        );
        assert_eq!(
            redacted("postgres://db/mfa?password=s3cret"),
            "postgres://db/mfa"
        );
        assert_eq!(
            redacted("sqlite:///var/lib/mfasync/mfa.db"),
            "sqlite:///var/lib/mfasync/mfa.db"
        );
        assert_eq!(redacted("mysql://u:pw@h/db"), "mysql://u@h/db");
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
