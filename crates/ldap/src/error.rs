//! Errors of the directory layer. Every message names the server it concerns;
//! no message ever contains a password (binds are only described by their DN).

use std::fmt;

/// Why one server of the list could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFailure {
    pub server: String,
    /// The step that failed: connect, tls, bind or rootdse.
    pub step: String,
    pub reason: String,
}

impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} failed: {}", self.server, self.step, self.reason)
    }
}

fn list(failures: &[ServerFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// A feature that is configured but not implemented (e.g. Kerberos binds).
    #[error("{0}")]
    Unsupported(String),

    /// The directory settings cannot work as given (detected before connecting).
    #[error("directory settings: {0}")]
    Config(String),

    /// The server rejected the DN/password (LDAP result 49). `detail` is the
    /// server's diagnostic text (Active Directory puts "data 52e", "data 533", …
    /// there); see [`LdapError::auth_reason`].
    #[error("{server}: invalid credentials for {dn:?}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    InvalidCredentials {
        server: String,
        dn: String,
        detail: String,
    },

    /// A bind that failed for another reason than bad credentials.
    #[error("{server}: bind as {dn:?} failed: {message} (result code {code})")]
    Bind {
        server: String,
        dn: String,
        code: u32,
        message: String,
    },

    /// The connection to a server could not be made, or was lost.
    #[error("{server}: cannot connect: {reason}")]
    Connect { server: String, reason: String },

    /// TLS (LDAPS or StartTLS) could not be established.
    #[error("{server}: TLS failed: {reason}")]
    Tls { server: String, reason: String },

    /// No answer within `timeout_seconds`.
    #[error("{server}: {op} timed out after {seconds} s")]
    Timeout {
        server: String,
        op: String,
        seconds: u64,
    },

    /// An operation answered with an error result.
    #[error("{server}: {op} failed: {message} (result code {code})")]
    Operation {
        server: String,
        op: String,
        code: u32,
        message: String,
    },

    /// The server sent something that could not be understood.
    #[error("{server}: {message}")]
    Protocol { server: String, message: String },

    /// Every server of the list failed.
    #[error("no directory server could be used: {}", list(.0))]
    AllServersFailed(Vec<ServerFailure>),
}

impl LdapError {
    pub fn is_invalid_credentials(&self) -> bool {
        matches!(self, LdapError::InvalidCredentials { .. })
    }

    /// True when the directory could not be reached or did not answer (as
    /// opposed to answering "no"): `auth` reports "directory-unavailable".
    pub fn is_unavailable(&self) -> bool {
        match self {
            LdapError::Connect { .. }
            | LdapError::Tls { .. }
            | LdapError::Timeout { .. }
            | LdapError::Protocol { .. } => true,
            LdapError::AllServersFailed(f) => !f.is_empty(),
            LdapError::Operation { code, .. } | LdapError::Bind { code, .. } => {
                matches!(code, 51..=52 | 80 | 81)
            }
            _ => false,
        }
    }

    /// For a failed password check: the `auth` reason of PRODUCT.md
    /// ("invalid-credentials", "account-disabled", "account-locked",
    /// "account-expired", "password-expired", "must-change-password"), read
    /// from Active Directory's "data XXX" sub-code when present.
    pub fn auth_reason(&self) -> Option<&'static str> {
        match self {
            LdapError::InvalidCredentials { detail, .. } => {
                Some(ad_sub_code(detail).unwrap_or("invalid-credentials"))
            }
            _ => None,
        }
    }
}

/// Active Directory's bind failure sub-codes ("…, data 533, v4563").
fn ad_sub_code(detail: &str) -> Option<&'static str> {
    let lower = detail.to_ascii_lowercase();
    let idx = lower.find("data ")?;
    let code: String = lower[idx + 5..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    Some(match code.as_str() {
        "533" => "account-disabled",
        "775" => "account-locked",
        "701" => "account-expired",
        "532" => "password-expired",
        "773" => "must-change-password",
        _ => "invalid-credentials",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_sub_codes_give_auth_reasons() {
        for (detail, want) in [
            ("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563", "invalid-credentials"),
            ("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 533, v4563", "account-disabled"),
            ("... data 775, v2580", "account-locked"),
            ("... data 701, v2580", "account-expired"),
            ("... data 532, v2580", "password-expired"),
            ("... data 773, v2580", "must-change-password"),
            ("", "invalid-credentials"),
        ] {
            let e = LdapError::InvalidCredentials {
                server: "ldap://x".into(),
                dn: "cn=a".into(),
                detail: detail.into(),
            };
            assert_eq!(e.auth_reason(), Some(want), "{detail}");
        }
    }

    #[test]
    fn all_failed_lists_every_server() {
        let e = LdapError::AllServersFailed(vec![
            ServerFailure {
                server: "ldap://a".into(),
                step: "connect".into(),
                reason: "refused".into(),
            },
            ServerFailure {
                server: "ldap://b".into(),
                step: "bind".into(),
                reason: "timed out".into(),
            },
        ]);
        let s = e.to_string();
        assert!(s.contains("ldap://a: connect failed: refused"), "{s}");
        assert!(s.contains("ldap://b: bind failed: timed out"), "{s}");
        assert!(e.is_unavailable());
    }
}
