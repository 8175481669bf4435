//! Errors of the directory layer. Every message names the server it concerns;
//! no message ever contains a password (binds are only described by their DN).

use std::fmt;

use mfasync_core::auth::{reason_from_ad_diagnostic, reason_from_ppolicy_error, Reason};

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

/// What to do about a message refused for its size.
fn hint(reason: &str) -> &'static str {
    if reason.contains("over the limit") {
        " (directory.max_message_bytes)"
    } else {
        ""
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
    /// A feature that is configured but not implemented.
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
        /// The error of an OpenLDAP password policy response control, when
        /// the server sent one (0 passwordExpired, 1 accountLocked,
        /// 2 changeAfterReset, ...).
        ppolicy: Option<u8>,
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

    /// The server sent a message that was refused as it arrived (nested too
    /// deep, larger than `directory.max_message_bytes`, malformed): the
    /// connection was closed.
    #[error("malformed message from {server} during {op}: {reason}{}", hint(.reason))]
    Malformed {
        server: String,
        op: String,
        reason: String,
    },

    /// Every server of the list failed.
    #[error("no directory server could be used: {}", list(.0))]
    AllServersFailed(Vec<ServerFailure>),

    /// The domain controllers of `directory.domain` could not be found by DNS
    /// (no SRV records, DNS unreachable); the message names the domain.
    #[error("{0}")]
    Discovery(String),
}

impl LdapError {
    pub fn is_invalid_credentials(&self) -> bool {
        matches!(self, LdapError::InvalidCredentials { .. })
    }

    /// The server stopped answering a search part-way: a size, time or
    /// administrative limit (result 4, 3, 11), no answer in time, or the
    /// connection lost. Malformed or hostile answers are not among them.
    pub fn cut_short(&self) -> bool {
        match self {
            LdapError::Timeout { .. } | LdapError::Connect { .. } => true,
            LdapError::Operation { code, .. } => matches!(code, 3 | 4 | 11),
            _ => false,
        }
    }

    /// True when the directory could not be reached or did not answer (as
    /// opposed to answering "no"): `auth` reports "directory-unavailable".
    pub fn is_unavailable(&self) -> bool {
        match self {
            LdapError::Connect { .. }
            | LdapError::Tls { .. }
            | LdapError::Timeout { .. }
            | LdapError::Protocol { .. }
            | LdapError::Malformed { .. }
            | LdapError::Discovery(_) => true,
            LdapError::AllServersFailed(f) => !f.is_empty(),
            LdapError::Operation { code, .. } | LdapError::Bind { code, .. } => {
                // 82: a local (client side) failure, e.g. Kerberos could not get a service ticket
                matches!(code, 51..=52 | 80..=82)
            }
            _ => false,
        }
    }

    /// For a failed password check: the `auth` reason of PRODUCT.md, from
    /// the password policy control (OpenLDAP) or Active Directory's
    /// "data XXX" sub-code; None when the error is not a refused password.
    pub fn auth_reason(&self) -> Option<Reason> {
        match self {
            LdapError::InvalidCredentials {
                detail, ppolicy, ..
            } => Some(
                ppolicy
                    .and_then(reason_from_ppolicy_error)
                    .unwrap_or_else(|| reason_from_ad_diagnostic(detail)),
            ),
            _ => None,
        }
    }
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
                ppolicy: None,
            };
            assert_eq!(e.auth_reason().map(Reason::as_str), Some(want), "{detail}");
        }
        for (code, want) in [
            (0, "password-expired"),
            (1, "account-locked"),
            (2, "must-change-password"),
            (5, "invalid-credentials"),
        ] {
            let e = LdapError::InvalidCredentials {
                server: "ldap://x".into(),
                dn: "cn=a".into(),
                detail: String::new(),
                ppolicy: Some(code),
            };
            assert_eq!(e.auth_reason().map(Reason::as_str), Some(want), "{code}");
        }
    }

    #[test]
    fn a_malformed_message_names_the_server_and_the_limit() {
        let e = LdapError::Malformed {
            server: "ldap://dc1:389".into(),
            op: "paged search of \"dc=x\" for (uid=*)".into(),
            reason: "a message of 1099511627786 bytes, over the limit of 16777216 bytes".into(),
        };
        assert_eq!(
            e.to_string(),
            "malformed message from ldap://dc1:389 during paged search of \"dc=x\" for (uid=*): \
             a message of 1099511627786 bytes, over the limit of 16777216 bytes (directory.max_message_bytes)"
        );
        assert!(e.is_unavailable());
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
