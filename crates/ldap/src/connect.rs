//! Connecting: the servers of the list in order (failover), timeouts,
//! LDAPS/StartTLS, the bind and the RootDSE read, recorded step by step.

use std::sync::Arc;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use mfasync_core::config::{Bind, BindType, Directory};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::bind::{
    do_gssapi_bind, do_simple_bind, ntlm_fallback_allowed, ntlm_step, ntlm_username,
    rootdse_dns_host_name, service_host, windows_credentials, with_ntlm_failure, Windows,
};
use crate::client::{Client, Scope};
use crate::discovery;
use crate::error::{LdapError, ServerFailure};
use crate::kerberos;
use crate::proto::{rootdse_attrs, Capabilities, Vendor};
use crate::results::{map_err, op_error};
use crate::search::{run_search, Limit, Request};
use crate::target::{max_message_bytes, parse_target, timeout_of, Target};

/// The steps of connecting, as reported by [`crate::test()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Connect,
    Tls,
    Bind,
    RootDse,
}

impl Step {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Bind => "bind",
            Step::RootDse => "rootdse",
        }
    }
}

pub use mfasync_core::report::directory::TestStep;

/// Settings that cannot work, found before any connection.
pub(crate) fn precheck(
    dir: &Directory,
    bind: &Bind,
    password: Option<&str>,
) -> Result<(), (Step, LdapError)> {
    if dir.servers.is_empty() {
        return Err((
            Step::Connect,
            LdapError::Config("no LDAP servers configured (directory.servers is empty)".into()),
        ));
    }
    if matches!(bind.kind, BindType::Simple | BindType::Ssl) {
        let kind = bind.kind.as_str();
        if bind.dn.trim().is_empty() {
            return Err((
                Step::Bind,
                LdapError::Config(format!("bind type {kind} needs a bind DN")),
            ));
        }
        if matches!(password, None | Some("")) {
            return Err((
                Step::Bind,
                LdapError::Config(format!(
                    "bind type {kind} needs a non-empty password for {:?} (an empty password is an anonymous bind on Active Directory)",
                    bind.dn
                )),
            ));
        }
    }
    if bind.kind == BindType::Windows && !bind.dn.trim().is_empty() {
        if let Err(m) = kerberos::principal_for(&bind.dn) {
            return Err((
                Step::Bind,
                LdapError::Config(format!("bind type windows: {m}")),
            ));
        }
        if matches!(password, None | Some("")) {
            return Err((
                Step::Bind,
                LdapError::Config(format!(
                    "bind type windows as {:?} needs a non-empty password (a blank username binds as the service's own Kerberos identity)",
                    bind.dn
                )),
            ));
        }
    }
    if bind.kind == BindType::Ssl && !dir.starttls {
        if let Some(plain) = dir.servers.iter().find(|s| !s.starts_with("ldaps://")) {
            return Err((
                Step::Tls,
                LdapError::Config(format!(
                    "bind type ssl needs ldaps:// or starttls = true (server {plain} is plain ldap://)"
                )),
            ));
        }
    }
    Ok(())
}

/// Whether the whole server list should be abandoned after this error.
pub(crate) fn is_fatal(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::InvalidCredentials { .. } | LdapError::Config(_) | LdapError::Unsupported(_)
    )
}

/// The message of `e` without the leading "server: ".
pub(crate) fn reason_of(server: &str, e: &LdapError) -> String {
    let s = e.to_string();
    s.strip_prefix(&format!("{server}: "))
        .map(str::to_string)
        .unwrap_or(s)
}

/// An LDAP connection with its driver task, or the step that failed and why.
type Connection = Result<(Ldap, JoinHandle<()>), (Step, LdapError)>;

/// A connection to `t` (TCP, then LDAPS or StartTLS when asked).
async fn open_connection(
    t: &Target,
    dir: &Directory,
    connector: Option<&Arc<rustls::ClientConfig>>,
) -> Connection {
    let timeout = timeout_of(dir);
    let server = t.url.as_str();
    let starttls = dir.starttls && !t.ldaps;
    let use_tls = t.ldaps || starttls;
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_max_message_bytes(max_message_bytes(dir));
    if let Some(c) = connector {
        settings = settings.set_config(c.clone());
    }
    if starttls {
        settings = settings.set_starttls(true);
    }
    let tls_what = if t.ldaps { "LDAPS" } else { "StartTLS" };
    let (conn, ldap) = match LdapConnAsync::with_settings(settings, &t.url).await {
        Ok(x) => x,
        Err(err) => {
            let (step, op) = if use_tls {
                (Step::Tls, format!("{tls_what} handshake"))
            } else {
                (Step::Connect, "connection".to_string())
            };
            let e = match map_err(server, &op, timeout, err) {
                LdapError::Operation {
                    server, message, ..
                } if starttls => LdapError::Tls {
                    server,
                    reason: format!("the server refused StartTLS: {message}"),
                },
                LdapError::Connect { server, reason } if use_tls => {
                    LdapError::Tls { server, reason }
                }
                LdapError::Protocol { server, message } if use_tls => LdapError::Tls {
                    server,
                    reason: message,
                },
                e => e,
            };
            return Err((step, e));
        }
    };
    let log_server = t.url.clone();
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(server = %log_server, error = %e, "LDAP connection ended");
        }
    });
    Ok((ldap, driver))
}

/// What [`attempt`] tries on one server: where, with which settings, and
/// how to bind.
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    pub(crate) target: &'a Target,
    pub(crate) dir: &'a Directory,
    pub(crate) bind: &'a Bind,
    pub(crate) password: Option<&'a str>,
    /// The bind type windows credentials, decided once for the server list.
    pub(crate) win: Option<&'a Windows>,
    /// The TLS settings (None: plain LDAP without StartTLS).
    pub(crate) connector: Option<&'a Arc<rustls::ClientConfig>>,
    /// Password checks: no separate TCP probe before the LDAP connection and
    /// no RootDSE read after the bind; the client then has empty
    /// capabilities and only serves to unbind.
    pub(crate) bind_only: bool,
}

/// The steps recorded by [`attempt`] and its client, or the step that failed.
pub(crate) type Attempted = (Vec<TestStep>, Result<Client, (Step, LdapError)>);

/// Connect, TLS, bind and RootDSE on one server, recording each step; on
/// `opened` when given (a connection opened ahead to this server).
pub(crate) async fn attempt(a: Attempt<'_>, opened: Option<Connection>) -> Attempted {
    let Attempt {
        target: t,
        dir,
        bind,
        password,
        win,
        connector,
        bind_only,
    } = a;
    let timeout = timeout_of(dir);
    let server = t.url.as_str();
    let mut steps = Vec::new();
    let fail = |mut steps: Vec<TestStep>, step: Step, e: LdapError| -> Attempted {
        steps.push(TestStep {
            step: step.as_str().into(),
            ok: false,
            detail: e.to_string(),
        });
        (steps, Err((step, e)))
    };
    let ok = |steps: &mut Vec<TestStep>, step: Step, detail: String| {
        steps.push(TestStep {
            step: step.as_str().into(),
            ok: true,
            detail,
        })
    };

    // 1. TCP (a probe, so that the test report tells "no TCP connection"
    // apart from a TLS failure; password checks skip it)
    let probe = async {
        if bind_only {
            return Ok(Ok(None));
        }
        tokio::time::timeout(timeout, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .map(|r| r.map(Some))
    };
    match probe.await {
        Err(_) => {
            let e = LdapError::Timeout {
                server: server.into(),
                op: format!("TCP connection to {}:{}", t.host, t.port),
                seconds: timeout.as_secs(),
            };
            return fail(steps, Step::Connect, e);
        }
        Ok(Err(err)) => {
            let e = LdapError::Connect {
                server: server.into(),
                reason: format!("{}:{}: {err}", t.host, t.port),
            };
            return fail(steps, Step::Connect, e);
        }
        Ok(Ok(s)) => {
            drop(s);
            ok(
                &mut steps,
                Step::Connect,
                format!("TCP connection to {}:{} established", t.host, t.port),
            );
        }
    }

    // 2. LDAP connection, with TLS when asked (or the one opened ahead of
    // the bind by `open_for_check`, on this server)
    let use_tls = t.ldaps || dir.starttls;
    let tls_what = if t.ldaps { "LDAPS" } else { "StartTLS" };
    let opened = match opened {
        Some(o) => o,
        None => open_connection(t, dir, connector).await,
    };
    let (mut ldap, driver) = match opened {
        Ok(x) => x,
        Err((step, e)) => return fail(steps, step, e),
    };
    ok(
        &mut steps,
        Step::Tls,
        if use_tls {
            format!(
                "{tls_what} established; server certificate {}",
                if dir.tls_verify {
                    "verified"
                } else {
                    "NOT verified (tls_verify = false)"
                }
            )
        } else {
            "not used (plain ldap:// without StartTLS)".to_string()
        },
    );

    // Dropping the handle would leave the driver running until the server closes.
    let abort = |driver: JoinHandle<()>| driver.abort();

    // 3. bind
    match bind.kind {
        BindType::Anonymous => ok(&mut steps, Step::Bind, "anonymous (no bind)".into()),
        BindType::Simple | BindType::Ssl => {
            let pw = password.unwrap_or_default();
            match do_simple_bind(&mut ldap, server, timeout, &bind.dn, pw).await {
                Ok(()) => ok(
                    &mut steps,
                    Step::Bind,
                    format!(
                        "simple bind as {:?}{}",
                        bind.dn,
                        if use_tls {
                            " over TLS"
                        } else {
                            " (password sent unencrypted)"
                        }
                    ),
                ),
                Err(e) => {
                    abort(driver);
                    return fail(steps, Step::Bind, e);
                }
            }
        }
        BindType::Windows => {
            let tls_note = |kerberos: bool| {
                if use_tls {
                    " over TLS (channel binding)"
                } else if kerberos {
                    "; signed and sealed (Kerberos encryption)"
                } else {
                    " (plain LDAP: NTLM neither signs nor seals)"
                }
            };
            let pw = password.unwrap_or_default();
            let res = match win {
                Some(Windows::Kerberos(krb)) => {
                    let res =
                        match service_host(&mut ldap, t, timeout).await {
                            Ok(host) => do_gssapi_bind(&mut ldap, t, &host, timeout, krb)
                                .await
                                .map(|()| {
                                    format!(
                                        "{} to ldap/{}{}{}",
                                        krb.describe(),
                                        host,
                                        if t.name.is_some() {
                                            " (the DC's name in DNS)"
                                        } else if host != t.host {
                                            " (the server's dnsHostName)"
                                        } else {
                                            ""
                                        },
                                        tls_note(true)
                                    )
                                }),
                            Err(e) => Err(e),
                        };
                    match res {
                        // Kerberos cannot reach this DC (no service principal,
                        // a local GSSAPI error): NTLM with the same password.
                        Err(e @ (LdapError::Config(_) | LdapError::Bind { code: 82, .. }))
                            if ntlm_fallback_allowed(bind, password, &e) =>
                        {
                            match ntlm_username(&bind.dn) {
                                Ok(u) => {
                                    let why = e.to_string();
                                    match ntlm_step(
                                        &mut ldap,
                                        t,
                                        timeout,
                                        &u,
                                        pw,
                                        &why,
                                        tls_note(false),
                                    )
                                    .await
                                    {
                                        // A refused password is the answer;
                                        // otherwise tell both failures.
                                        Err(n) if !n.is_invalid_credentials() => {
                                            Err(with_ntlm_failure(e, &n))
                                        }
                                        other => other,
                                    }
                                }
                                Err(m) => Err(with_ntlm_failure(e, &LdapError::Config(m))),
                            }
                        }
                        other => other,
                    }
                }
                Some(Windows::Ntlm { username, why }) => {
                    ntlm_step(&mut ldap, t, timeout, username, pw, why, tls_note(false)).await
                }
                None => Err(LdapError::Config(
                    "bind type windows: no credentials".into(),
                )),
            };
            match res {
                Ok(detail) => ok(&mut steps, Step::Bind, detail),
                Err(e) => {
                    abort(driver);
                    return fail(steps, Step::Bind, e);
                }
            }
        }
    }

    // 4. RootDSE (not for a password check: it needs no capabilities)
    if bind_only {
        let client = Client {
            ldap,
            driver,
            server: t.url.clone(),
            target: t.clone(),
            caps: Capabilities::default(),
            base_dn: dir.base_dn.trim().to_string(),
            timeout,
            size_limit: dir.query_size_limit.max(1),
            paging: false,
            split_attr: String::new(),
            range_step: None,
            seen_in_memory: crate::search::SEEN_IN_MEMORY,
        };
        return (steps, Ok(client));
    }
    let mut root = None;
    let res = run_search(
        &mut ldap,
        server,
        timeout,
        Request {
            base: "",
            scope: Scope::Base,
            filter: "(objectClass=*)",
            attrs: &rootdse_attrs(),
            controls: Vec::new(),
            limit: Limit::ONE,
        },
        &mut |e| {
            root.get_or_insert(e);
        },
    )
    .await;
    let root = match res {
        Ok(r) if r.rc == 0 => root.unwrap_or_default(),
        Ok(r) => {
            abort(driver);
            return fail(steps, Step::RootDse, op_error(server, "RootDSE read", &r));
        }
        Err(e) => {
            abort(driver);
            return fail(steps, Step::RootDse, e);
        }
    };
    let caps = Capabilities::from_rootdse(&root);
    let base_dn = if !dir.base_dn.trim().is_empty() {
        dir.base_dn.trim().to_string()
    } else if let Some(d) = caps.default_naming_context.clone() {
        d
    } else {
        caps.naming_contexts.first().cloned().unwrap_or_default()
    };
    let vendor = match caps.vendor {
        Vendor::ActiveDirectory => "Active Directory",
        Vendor::OpenLdap => "OpenLDAP",
        Vendor::Other => "other LDAP server",
    };
    ok(
        &mut steps,
        Step::RootDse,
        format!(
            "{vendor}{}; base DN {:?}{}",
            caps.dns_host_name
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default(),
            base_dn,
            if dir.base_dn.trim().is_empty() {
                " (from the RootDSE)"
            } else {
                ""
            }
        ),
    );
    let paging = caps.paged_results;
    let client = Client {
        ldap,
        driver,
        server: t.url.clone(),
        target: t.clone(),
        caps,
        base_dn,
        timeout,
        size_limit: dir.query_size_limit.max(1),
        paging,
        split_attr: String::new(),
        range_step: None,
        seen_in_memory: crate::search::SEEN_IN_MEMORY,
    };
    (steps, Ok(client))
}

/// Connect to the servers of `dir` in order (later ones are backups), bind
/// as `bind` with `password`, read the RootDSE.
///
/// A server that is down, refuses, times out or fails TLS is skipped (with a
/// warning). Invalid credentials end the attempt at once: the account is the
/// same on every server.
pub async fn connect(
    dir: &Directory,
    bind: &Bind,
    password: Option<&str>,
) -> Result<Client, LdapError> {
    connect_with(dir, bind, password, false).await
}

/// Verify a password: connect to the servers of `dir` in order (failover and
/// timeouts as [`connect`]), bind as `bind` with `password` on a fresh
/// connection, unbind. Reads nothing (no RootDSE, no probe connection).
pub async fn check_bind(
    dir: &Directory,
    bind: &Bind,
    password: Option<&str>,
) -> Result<(), LdapError> {
    check_bind_opened(dir, bind, password, None).await
}

/// The connection a password check will bind on, opened to the first server
/// of the list before the DN to bind as is known (so that opening it can
/// overlap with finding the DN): TCP, and LDAPS or StartTLS when configured.
/// Holds the failure instead when that server cannot be reached, so that
/// [`check_bind_opened`] goes on with the next one without trying it twice.
/// Dropped unused, the connection is closed.
pub struct Opened {
    url: String,
    /// The TLS settings it was opened with (reused for the other servers).
    connector: Option<Arc<rustls::ClientConfig>>,
    opened: Connection,
}

impl Opened {
    /// Whether the connection is open and still up: the server has not
    /// closed it (idle timeout, restart) as far as its reader has seen.
    pub fn is_alive(&self) -> bool {
        matches!(&self.opened, Ok((_, driver)) if !driver.is_finished())
    }
}

/// Open the connection for a password check with `dir` (see [`Opened`]).
/// `None` where that does not apply: servers found by DNS (their order is
/// decided at the check), no valid first server, or settings that cannot be
/// used (the check itself then reports why).
pub async fn open_for_check(dir: &Directory) -> Option<Opened> {
    if discovery::wanted(dir) {
        return None;
    }
    let url = dir.servers.first()?;
    let target = parse_target(url).ok()?;
    let connector = crate::tls::client_config(dir).ok()?;
    let opened = open_connection(&target, dir, connector.as_ref()).await;
    Some(Opened {
        url: url.clone(),
        connector,
        opened,
    })
}

/// [`check_bind`] on the connection `opened` for the first server when
/// given (by [`open_for_check`] with the same `dir`); the failover to the
/// other servers, the errors and the timeouts are those of [`check_bind`].
pub async fn check_bind_opened(
    dir: &Directory,
    bind: &Bind,
    password: Option<&str>,
    opened: Option<Opened>,
) -> Result<(), LdapError> {
    let client = connect_opened(dir, bind, password, true, opened).await?;
    client.unbind().await;
    Ok(())
}

async fn connect_with(
    dir: &Directory,
    bind: &Bind,
    password: Option<&str>,
    bind_only: bool,
) -> Result<Client, LdapError> {
    connect_opened(dir, bind, password, bind_only, None).await
}

async fn connect_opened(
    dir: &Directory,
    bind: &Bind,
    password: Option<&str>,
    bind_only: bool,
    mut opened: Option<Opened>,
) -> Result<Client, LdapError> {
    let discovered = match discovery::wanted(dir) {
        true => Some(discovery::discover(dir).await?),
        false => None,
    };
    let with_dcs;
    let dir = match &discovered {
        Some(d) => {
            with_dcs = Directory {
                servers: d.urls(),
                ..dir.clone()
            };
            &with_dcs
        }
        None => dir,
    };
    if discovered.is_some()
        || opened
            .as_ref()
            .is_some_and(|o| dir.servers.first() != Some(&o.url))
    {
        opened = None;
    }
    precheck(dir, bind, password).map_err(|(_, e)| e)?;
    let connector = match &opened {
        Some(o) => o.connector.clone(),
        None => crate::tls::client_config(dir)?,
    };
    let win = windows_credentials(dir, bind, password).await?;
    let mut failures = Vec::new();
    for (i, url) in dir.servers.iter().enumerate() {
        // the connection opened ahead is for the first server
        let ahead = match i {
            0 => opened.take().map(|o| o.opened),
            _ => None,
        };
        let target = match parse_target(url) {
            Ok(t) => Target {
                name: discovered.as_ref().and_then(|d| d.name_for(url)),
                ..t
            },
            Err(m) => {
                failures.push(ServerFailure {
                    server: url.clone(),
                    step: Step::Connect.as_str().into(),
                    reason: m,
                });
                continue;
            }
        };
        // A connection opened ahead that the server closed before or while
        // it was used (an idle timeout) gets one fresh connection in its place;
        // a timeout does not (the server is slow, not gone).
        let was_open = matches!(ahead, Some(Ok(_)));
        let a = Attempt {
            target: &target,
            dir,
            bind,
            password,
            win: win.as_ref(),
            connector: connector.as_ref(),
            bind_only,
        };
        let on = |ahead| attempt(a, ahead);
        let (_, mut res) = on(ahead).await;
        if was_open && matches!(res, Err((_, LdapError::Connect { .. }))) {
            tracing::debug!(server = %url, "the connection opened ahead was closed; opening another");
            res = on(None).await.1;
        }
        match res {
            Ok(c) => {
                if !failures.is_empty() {
                    tracing::info!(server = %url, "using backup directory server");
                    if let Some(d) = &discovered {
                        discovery::prefer(d, url);
                    }
                }
                return Ok(c);
            }
            Err((step, e)) => {
                if is_fatal(&e) {
                    return Err(e);
                }
                tracing::warn!(server = %url, step = step.as_str(), error = %e, "directory server failed; trying the next one");
                failures.push(ServerFailure {
                    server: url.clone(),
                    step: step.as_str().into(),
                    reason: reason_of(url, &e),
                });
            }
        }
    }
    Err(LdapError::AllServersFailed(failures))
}

impl Client {
    /// A second connection to this client's server (never another one of
    /// the list: a starting point taken on this server must describe what
    /// is read), bound as `bind` with `password` like the first, with the
    /// same capabilities, base DN and search settings. Of the RootDSE only
    /// `dnsHostName` is read, when the first connection has one: it must
    /// name the same server (else an error).
    ///
    /// Its driver task runs on the runtime it is opened on, so a thread
    /// with a runtime of its own can read on it without a thread hand-off
    /// per message (a full synchronization's read).
    pub async fn sibling(
        &self,
        dir: &Directory,
        bind: &Bind,
        password: Option<&str>,
    ) -> Result<Client, LdapError> {
        precheck(dir, bind, password).map_err(|(_, e)| e)?;
        let connector = crate::tls::client_config(dir)?;
        let win = windows_credentials(dir, bind, password).await?;
        let a = Attempt {
            target: &self.target,
            dir,
            bind,
            password,
            win: win.as_ref(),
            connector: connector.as_ref(),
            bind_only: true,
        };
        let (_, res) = attempt(a, None).await;
        let mut c = res.map_err(|(_, e)| e)?;
        // A name that several servers answer for (DNS round robin, a load
        // balancer) may have led elsewhere: Active Directory names each DC.
        if let Some(want) = &self.caps.dns_host_name {
            let got = rootdse_dns_host_name(&mut c.ldap, &self.server, self.timeout).await?;
            if !got
                .as_deref()
                .is_some_and(|g| g.eq_ignore_ascii_case(want.trim()))
            {
                return Err(LdapError::Protocol {
                    server: self.server.clone(),
                    message: format!(
                        "the second connection reached another server ({}, not {want})",
                        got.as_deref().unwrap_or("no dnsHostName")
                    ),
                });
            }
        }
        c.caps = self.caps.clone();
        c.base_dn = self.base_dn.clone();
        c.timeout = self.timeout;
        c.size_limit = self.size_limit;
        c.paging = self.paging;
        c.split_attr = self.split_attr.clone();
        c.range_step = self.range_step;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prechecks() {
        let mut dir = Directory {
            servers: vec!["ldap://127.0.0.1:1".into()],
            ..Directory::default()
        };
        let mut bind = Bind {
            kind: BindType::Simple,
            dn: "cn=a,dc=b".into(),
            ..Bind::default()
        };
        let err = |dir: &Directory, bind: &Bind, pw| {
            precheck(dir, bind, pw).err().map(|(_, e)| e.to_string())
        };
        assert!(err(&dir, &bind, Some(""))
            .unwrap_or_default()
            .contains("non-empty password"));
        assert!(err(&dir, &bind, None)
            .unwrap_or_default()
            .contains("non-empty password"));
        assert_eq!(err(&dir, &bind, Some("x")), None);
        bind.kind = BindType::Ssl;
        assert!(err(&dir, &bind, Some("x"))
            .unwrap_or_default()
            .contains("bind type ssl needs ldaps:// or starttls = true"));
        dir.starttls = true;
        assert_eq!(err(&dir, &bind, Some("x")), None);
        bind.kind = BindType::Windows;
        bind.dn = "alice@mfa.test".into();
        assert_eq!(err(&dir, &bind, Some("x")), None);
        assert!(err(&dir, &bind, None)
            .unwrap_or_default()
            .contains("needs a non-empty password"));
        bind.dn = String::new();
        assert_eq!(err(&dir, &bind, None), None);
        bind.dn = "CN=Alice,DC=mfa,DC=test".into();
        assert!(err(&dir, &bind, Some("x"))
            .unwrap_or_default()
            .contains("not a DN"));
        bind.dn = "-oops".into();
        assert!(err(&dir, &bind, Some("x"))
            .unwrap_or_default()
            .contains("not a Kerberos username"));
    }
}
