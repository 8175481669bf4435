//! LDAP result codes and ldap3 errors, turned into [`LdapError`]s naming
//! the server and the operation.

use std::time::Duration;

use ldap3::{Ldap, LdapResult};

use crate::error::LdapError;

fn rc_name(rc: u32) -> &'static str {
    match rc {
        1 => "operations error",
        2 => "protocol error",
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        7 => "auth method not supported",
        8 => "stronger authentication required",
        10 => "referral",
        11 => "administrative limit exceeded",
        12 => "unavailable critical extension",
        13 => "confidentiality required",
        32 => "no such object",
        34 => "invalid DN syntax",
        48 => "inappropriate authentication",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwilling to perform",
        80 => "other",
        87 => "filter error",
        _ => "error",
    }
}

pub(crate) fn result_message(r: &LdapResult) -> String {
    let text = r.text.trim();
    if text.is_empty() {
        rc_name(r.rc).to_string()
    } else {
        format!("{}: {text}", rc_name(r.rc))
    }
}

pub(crate) fn op_error(server: &str, op: &str, r: &LdapResult) -> LdapError {
    LdapError::Operation {
        server: server.to_string(),
        op: op.to_string(),
        code: r.rc,
        message: result_message(r),
    }
}

/// An ldap3 error during `op`, as ours.
pub(crate) fn map_err(server: &str, op: &str, timeout: Duration, e: ldap3::LdapError) -> LdapError {
    let server = server.to_string();
    match e {
        ldap3::LdapError::Timeout { .. } => LdapError::Timeout {
            server,
            op: op.to_string(),
            seconds: timeout.as_secs(),
        },
        ldap3::LdapError::LdapResult { result } => op_error(&server, op, &result),
        ldap3::LdapError::FilterParsing => LdapError::Operation {
            server,
            op: op.to_string(),
            code: 87,
            message: "invalid search filter".into(),
        },
        ldap3::LdapError::Rustls { source } => LdapError::Tls {
            server,
            reason: source.to_string(),
        },
        ldap3::LdapError::DNSName { source } => LdapError::Tls {
            server,
            reason: format!("not a name a certificate can be checked against: {source}"),
        },
        ldap3::LdapError::Io { source } if source.kind() == std::io::ErrorKind::InvalidData => {
            LdapError::Malformed {
                server,
                op: op.to_string(),
                reason: source.to_string(),
            }
        }
        ldap3::LdapError::Io { source } => LdapError::Connect {
            server,
            reason: format!("{op}: {source}"),
        },
        ldap3::LdapError::EndOfStream
        | ldap3::LdapError::OpSend { .. }
        | ldap3::LdapError::ResultRecv { .. }
        | ldap3::LdapError::IdScrubSend { .. } => LdapError::Connect {
            server,
            reason: format!("connection closed during {op}"),
        },
        other => LdapError::Protocol {
            server,
            message: format!("{op}: {other}"),
        },
    }
}

/// [`map_err`] for an operation on `ldap`: a connection closed because it
/// refused what the server sent is reported as that, not as closed.
pub(crate) fn map_err_on(
    ldap: &Ldap,
    server: &str,
    op: &str,
    timeout: Duration,
    e: ldap3::LdapError,
) -> LdapError {
    match map_err(server, op, timeout, e) {
        LdapError::Connect { server, .. } if ldap.malformed().is_some() => LdapError::Malformed {
            server,
            op: op.to_string(),
            reason: ldap.malformed().unwrap_or_default().to_string(),
        },
        other => other,
    }
}
