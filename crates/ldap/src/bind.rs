//! Binds: simple (with the password policy control), and bind type windows
//! by Kerberos (SASL GSSAPI) or NTLM (GSS-SPNEGO).

use std::time::Duration;

use ldap3::Ldap;
use mfasync_core::config::{Bind, BindType, Directory};

use crate::client::{Client, Scope};
use crate::error::LdapError;
use crate::kerberos::{self, Credentials};
use crate::proto::{ppolicy_control, ppolicy_error, OID_PPOLICY};
use crate::results::{map_err_on, result_message};
use crate::search::{run_search, Limit, Request};
use crate::target::{timeout_of, Target};

pub(crate) async fn do_simple_bind(
    ldap: &mut Ldap,
    server: &str,
    timeout: Duration,
    dn: &str,
    password: &str,
) -> Result<(), LdapError> {
    let op = format!("bind as {dn:?}");
    // Non-critical: servers without password policies ignore it.
    ldap.with_controls(ppolicy_control());
    let handle = ldap.clone();
    let res = ldap
        .with_timeout(timeout)
        .simple_bind(dn, password)
        .await
        .map_err(|e| map_err_on(&handle, server, &op, timeout, e))?;
    let policy_error = res
        .ctrls
        .iter()
        .find(|c| c.1.ctype == OID_PPOLICY)
        .and_then(|c| c.1.val.as_deref())
        .and_then(ppolicy_error);
    match res.rc {
        // A password reset by an administrator: the bind succeeds but the
        // session may only change the password.
        0 if policy_error == Some(2) => Err(LdapError::InvalidCredentials {
            server: server.to_string(),
            dn: dn.to_string(),
            detail: "the password must be changed (password policy: changeAfterReset)".into(),
            ppolicy: policy_error,
        }),
        0 => Ok(()),
        49 => Err(LdapError::InvalidCredentials {
            server: server.to_string(),
            dn: dn.to_string(),
            detail: res.text.trim().to_string(),
            ppolicy: policy_error,
        }),
        rc => Err(LdapError::Bind {
            server: server.to_string(),
            dn: dn.to_string(),
            code: rc,
            message: result_message(&res),
        }),
    }
}

/// How a bind of type windows authenticates, decided once for the whole
/// server list.
pub(crate) enum Windows {
    /// Kerberos credentials (a ticket obtained with the password, or the
    /// service's own identity).
    Kerberos(Credentials),
    /// Kerberos is not possible here (`why`: no KDC answers, no realm, no
    /// kinit): NTLM, i.e. SASL GSS-SPNEGO carrying NTLMSSP, with the username
    /// and password.
    Ntlm { username: String, why: String },
}

/// Whether a failed Kerberos step may fall back to NTLM: only with a
/// username and password (NTLM has no "own identity"), and never after the
/// KDC or the DC refused the credentials (a wrong password must count once).
pub(crate) fn ntlm_fallback_allowed(bind: &Bind, password: Option<&str>, e: &LdapError) -> bool {
    !bind.dn.trim().is_empty()
        && password.is_some_and(|p| !p.is_empty())
        && !e.is_invalid_credentials()
}

/// The username as NTLM takes it: `DOMAIN\user`, `user@domain` or `user`
/// (checked here: the NTLM library would refuse mixed forms).
pub(crate) fn ntlm_username(username: &str) -> Result<String, String> {
    let u = username.trim();
    let ok = match u.split_once('\\') {
        Some((d, a)) => {
            !d.is_empty() && !a.is_empty() && !d.contains(['\\', '@']) && !a.contains(['\\', '@'])
        }
        None => {
            !u.is_empty()
                && u.rsplit_once('@')
                    .is_none_or(|(a, s)| !a.is_empty() && !s.is_empty())
        }
    };
    if ok && !u.chars().any(char::is_control) {
        Ok(u.to_string())
    } else {
        Err(format!(
            "{username:?} is not an NTLM username (DOMAIN\\user, user@domain or user)"
        ))
    }
}

/// Credentials for bind type windows (None for the other types): a Kerberos
/// ticket, or NTLM when Kerberos is not possible here.
pub(crate) async fn windows_credentials(
    dir: &Directory,
    bind: &Bind,
    password: Option<&str>,
) -> Result<Option<Windows>, LdapError> {
    if bind.kind != BindType::Windows {
        return Ok(None);
    }
    match kerberos::obtain(&bind.dn, password, timeout_of(dir)).await {
        Ok(c) => Ok(Some(Windows::Kerberos(c))),
        Err(e) if ntlm_fallback_allowed(bind, password, &e) => {
            let username = ntlm_username(&bind.dn).map_err(LdapError::Config)?;
            tracing::warn!(error = %e, "Kerberos is not possible; binding with NTLM instead");
            Ok(Some(Windows::Ntlm {
                username,
                why: e.to_string(),
            }))
        }
        Err(e) => Err(e),
    }
}

/// The server's name as its RootDSE gives it (`dnsHostName`, trimmed and
/// lower-cased); None when it has none or the read is refused.
pub(crate) async fn rootdse_dns_host_name(
    ldap: &mut Ldap,
    server: &str,
    timeout: Duration,
) -> Result<Option<String>, LdapError> {
    let mut root = None;
    let res = run_search(
        ldap,
        server,
        timeout,
        Request {
            base: "",
            scope: Scope::Base,
            filter: "(objectClass=*)",
            attrs: &["dnsHostName".to_string()],
            controls: Vec::new(),
            limit: Limit::ONE,
        },
        &mut |e| {
            root.get_or_insert(e);
        },
    )
    .await?;
    Ok(root
        .as_ref()
        .filter(|_| res.rc == 0)
        .and_then(|e| e.first_str("dnsHostName"))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty()))
}

/// The host name of the server's Kerberos service principal `ldap/<host>`:
/// the host of the URL, or, when the URL names an IP address (which has no
/// service principal), the `dnsHostName` the server publishes in its RootDSE
/// (read anonymously before the bind). Kerberos mutual authentication still
/// proves that the server holds that principal's key.
pub(crate) async fn service_host(
    ldap: &mut Ldap,
    t: &Target,
    timeout: Duration,
) -> Result<String, LdapError> {
    if let Some(name) = &t.name {
        return Ok(name.clone());
    }
    if t.host.parse::<std::net::IpAddr>().is_err() {
        return Ok(t.host.clone());
    }
    match rootdse_dns_host_name(ldap, &t.url, timeout).await? {
        Some(h) => Ok(h),
        None => Err(LdapError::Config(format!(
            "bind type windows: {} is an IP address and the server publishes no dnsHostName; \
             list the server by its DNS name (the Kerberos service is ldap/<DNS name>)",
            t.url
        ))),
    }
}

/// SASL GSSAPI bind with `krb` for the service principal `ldap/<service_host>`.
pub(crate) async fn do_gssapi_bind(
    ldap: &mut Ldap,
    t: &Target,
    service_host: &str,
    timeout: Duration,
    krb: &Credentials,
) -> Result<(), LdapError> {
    let server = t.url.as_str();
    let op = format!("GSSAPI bind as {}", krb.principal);
    let res = krb
        .scope(ldap.with_timeout(timeout).sasl_gssapi_bind(service_host))
        .await;
    let res = match res {
        Ok(r) => r,
        Err(ldap3::LdapError::GssapiOperationError(m)) => {
            return Err(LdapError::Bind {
                server: server.to_string(),
                dn: krb.principal.clone(),
                code: 82,
                message: format!(
                    "Kerberos (service ldap/{service_host}): {}",
                    m.replace('\n', " ")
                ),
            })
        }
        Err(ldap3::LdapError::NoGssapiToken) => {
            return Err(LdapError::Bind {
                server: server.to_string(),
                dn: krb.principal.clone(),
                code: 82,
                message: "the server sent no GSSAPI token".into(),
            })
        }
        Err(e) => return Err(map_err_on(ldap, server, &op, timeout, e)),
    };
    match res.rc {
        0 => Ok(()),
        49 => Err(LdapError::InvalidCredentials {
            server: server.to_string(),
            dn: krb.principal.clone(),
            detail: res.text.trim().to_string(),
            ppolicy: None,
        }),
        rc => Err(LdapError::Bind {
            server: server.to_string(),
            dn: krb.principal.clone(),
            code: rc,
            message: result_message(&res),
        }),
    }
}

/// SASL GSS-SPNEGO bind carrying NTLMSSP (NTLMv2) as `username`. NTLM
/// cannot sign or seal here: over plain `ldap://` a DC that requires strong
/// authentication refuses it (result 8), so NTLM wants `ldaps://` or StartTLS
/// (where the TLS channel binding token is sent).
async fn do_ntlm_bind(
    ldap: &mut Ldap,
    t: &Target,
    timeout: Duration,
    username: &str,
    password: &str,
) -> Result<(), LdapError> {
    let server = t.url.as_str();
    let op = format!("NTLM bind as {username}");
    let res = match ldap
        .with_timeout(timeout)
        .sasl_ntlm_bind(username, password)
        .await
    {
        Ok(r) => r,
        Err(ldap3::LdapError::NoNtlmChallengeToken) => {
            return Err(LdapError::Bind {
                server: server.to_string(),
                dn: username.to_string(),
                code: 82,
                message: "the server sent no NTLM challenge".into(),
            })
        }
        Err(ldap3::LdapError::SSPIError { source }) => {
            return Err(LdapError::Bind {
                server: server.to_string(),
                dn: username.to_string(),
                code: 82,
                message: format!("NTLM: {}", source.to_string().replace('\n', " ")),
            })
        }
        Err(e) => return Err(map_err_on(ldap, server, &op, timeout, e)),
    };
    match res.rc {
        0 => Ok(()),
        49 => Err(LdapError::InvalidCredentials {
            server: server.to_string(),
            dn: username.to_string(),
            detail: res.text.trim().to_string(),
            ppolicy: None,
        }),
        8 => Err(LdapError::Bind {
            server: server.to_string(),
            dn: username.to_string(),
            code: 8,
            message: format!(
                "{}; the server requires signing/sealing, which an NTLM bind cannot give here: \
                 use ldaps:// or starttls = true (or make Kerberos possible)",
                result_message(&res)
            ),
        }),
        rc => Err(LdapError::Bind {
            server: server.to_string(),
            dn: username.to_string(),
            code: rc,
            message: result_message(&res),
        }),
    }
}

/// A Kerberos failure `e` after which NTLM failed too (`n`): `e`, with
/// NTLM's reason added.
pub(crate) fn with_ntlm_failure(e: LdapError, n: &LdapError) -> LdapError {
    match e {
        LdapError::Bind {
            server,
            dn,
            code,
            message,
        } => LdapError::Bind {
            server,
            dn,
            code,
            message: format!("{message}; NTLM instead: {n}"),
        },
        LdapError::Config(m) => LdapError::Config(format!("{m}; NTLM instead: {n}")),
        other => other,
    }
}

/// An NTLM bind and its description for the test report.
pub(crate) async fn ntlm_step(
    ldap: &mut Ldap,
    t: &Target,
    timeout: Duration,
    username: &str,
    password: &str,
    why: &str,
    transport: &str,
) -> Result<String, LdapError> {
    do_ntlm_bind(ldap, t, timeout, username, password).await?;
    Ok(format!(
        "NTLM (GSS-SPNEGO) as {username}{transport}; Kerberos not possible: {why}"
    ))
}

impl Client {
    /// Bind again on this connection as another DN (password checks). An
    /// empty DN or password is refused (it would be an anonymous bind). The
    /// password policy control is sent: a locked or expired account, or a
    /// password that must be changed first, is an `InvalidCredentials` error
    /// whose [`LdapError::auth_reason`] says which. After a failed bind the
    /// connection is anonymous.
    pub async fn simple_bind(&mut self, dn: &str, password: &str) -> Result<(), LdapError> {
        if dn.trim().is_empty() || password.is_empty() {
            return Err(LdapError::InvalidCredentials {
                server: self.server.clone(),
                dn: dn.to_string(),
                detail: "empty DN or password refused (it would be an anonymous bind)".into(),
                ppolicy: None,
            });
        }
        do_simple_bind(&mut self.ldap, &self.server, self.timeout, dn, password).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfasync_core::config::{Bind, BindType};

    #[test]
    fn ntlm_usernames() {
        for (given, want) in [
            ("MFA\\alice", "MFA\\alice"),
            ("alice@mfa.test", "alice@mfa.test"),
            (" alice ", "alice"),
            ("a@b@mfa.test", "a@b@mfa.test"),
        ] {
            assert_eq!(ntlm_username(given).as_deref(), Ok(want), "{given}");
        }
        // Mixed or empty forms the NTLM library would refuse (it panics on them).
        for bad in [
            "MFA\\a@b",
            "MFA\\",
            "\\alice",
            "A\\B\\c",
            "alice@",
            "@mfa.test",
            "",
            "a\nb",
        ] {
            assert!(ntlm_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ntlm_fallback_only_with_a_password_and_never_after_a_refusal() {
        let bind = Bind {
            kind: BindType::Windows,
            dn: "alice@mfa.test".into(),
            ..Bind::default()
        };
        let kdc_down = LdapError::Connect {
            server: "kerberos".into(),
            reason: "Cannot contact any KDC".into(),
        };
        assert!(ntlm_fallback_allowed(&bind, Some("pw"), &kdc_down));
        assert!(!ntlm_fallback_allowed(&bind, None, &kdc_down));
        assert!(!ntlm_fallback_allowed(&bind, Some(""), &kdc_down));
        let refused = LdapError::InvalidCredentials {
            server: "kerberos".into(),
            dn: "alice@MFA.TEST".into(),
            detail: "Password incorrect".into(),
            ppolicy: None,
        };
        assert!(!ntlm_fallback_allowed(&bind, Some("pw"), &refused));
        let own = Bind {
            dn: String::new(),
            ..bind
        };
        assert!(!ntlm_fallback_allowed(&own, Some("pw"), &kdc_down));
    }
}
