//! Connections with failover, binds, TLS, the RootDSE, and searches (paged,
//! or split into batches under a size limit).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, SearchOptions};
use mfasync_core::config::{Bind, BindType, Directory};
use mfasync_core::escape::filter_value;
use mfasync_core::Entry;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::discovery::{self, DiscoveryReport, TrustReport};
use crate::error::{LdapError, ServerFailure};
use crate::kerberos::{self, Credentials};
use crate::proto::{
    asq_control, dirsync_control, dirsync_response, paged_control, paged_cookie, parse_entry,
    parse_intermediate, parse_range, ppolicy_control, ppolicy_error, rootdse_attrs, sync_done,
    sync_info, sync_request_control, sync_state, Capabilities, SyncInfo, SyncState, Vendor,
    OID_DIRSYNC, OID_PAGED, OID_PPOLICY, OID_SYNC_DONE, OID_SYNC_INFO, OID_SYNC_STATE,
};

/// The DNs a search has delivered, compared case-insensitively, kept as
/// 128-bit hashes (two independently seeded foldhash states, random per
/// process) rather than copies: 16 bytes and no allocation per entry. Two
/// DNs of one search colliding is about as likely as 2^-128 per pair, and
/// cannot be aimed at without the process's seeds.
#[derive(Default)]
struct SeenDns {
    set: HashSet<u128, foldhash::fast::RandomState>,
    seeds: (foldhash::fast::RandomState, foldhash::fast::RandomState),
    /// The lower-cased DN being looked at (reused).
    key: String,
}

impl SeenDns {
    /// Whether `dn` is new (and now seen).
    fn insert(&mut self, dn: &str) -> bool {
        use std::hash::BuildHasher;
        self.key.clear();
        if dn.is_ascii() {
            self.key.push_str(dn);
            self.key.make_ascii_lowercase();
        } else {
            self.key.push_str(&dn.to_lowercase());
        }
        let hi = self.seeds.0.hash_one(self.key.as_str());
        let lo = self.seeds.1.hash_one(self.key.as_str());
        self.set.insert((u128::from(hi) << 64) | u128::from(lo))
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

/// Search scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Base,
    OneLevel,
    Subtree,
}

impl From<Scope> for ldap3::Scope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Base => ldap3::Scope::Base,
            Scope::OneLevel => ldap3::Scope::OneLevel,
            Scope::Subtree => ldap3::Scope::Subtree,
        }
    }
}

/// The steps of connecting, as reported by [`test`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    Tls,
    Bind,
    RootDse,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Bind => "bind",
            Step::RootDse => "rootdse",
        }
    }
}

/// The seed's "Test" button result (`mfasync directory test --json`).
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    pub ok: bool,
    pub server: String,
    pub vendor: Vendor,
    pub steps: Vec<TestStep>,
    pub supports: Supports,
    /// `source = "active-directory"`: the domain and the DCs found by DNS SRV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryReport>,
    /// Every server tried, in order (a failed one names its failed step).
    pub tried: Vec<TriedServer>,
    /// `include_trusted_domains` on Active Directory: the forest's domains and
    /// the trusted domains, each with whether a DC of it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domains: Option<TrustReport>,
    /// Settings that may stop TLS (`config::server_warnings`: a TLS server
    /// written as an IP address), each naming its key; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One server tried by [`test`].
#[derive(Debug, Clone, Serialize)]
pub struct TriedServer {
    pub server: String,
    pub ok: bool,
    /// The step that failed (connect | tls | bind | rootdse); absent when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestStep {
    /// connect | tls | bind | rootdse
    pub step: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Supports {
    pub paged_results: bool,
    pub dirsync: bool,
    pub attribute_scoped_query: bool,
    pub syncrepl: bool,
    pub usn: bool,
}

impl From<&Capabilities> for Supports {
    fn from(c: &Capabilities) -> Self {
        Supports {
            paged_results: c.paged_results,
            dirsync: c.dirsync,
            attribute_scoped_query: c.attribute_scoped_query,
            syncrepl: c.syncrepl,
            usn: c.usn,
        }
    }
}

/// One server URL, split.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    host: String,
    port: u16,
    ldaps: bool,
    /// The server's DNS name when `url` names its address (a DC found by DNS
    /// SRV through `directory.dns_servers`): its Kerberos service name.
    name: Option<String>,
}

fn parse_target(url: &str) -> Result<Target, String> {
    let (ldaps, rest) = if let Some(r) = url.strip_prefix("ldaps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ldap://") {
        (false, r)
    } else {
        return Err(format!("{url:?} must start with ldap:// or ldaps://"));
    };
    let hostport = rest.split('/').next().unwrap_or_default();
    let default_port = if ldaps { 636 } else { 389 };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unterminated IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("{url:?}: bad port"))?,
            ),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok(Target {
        url: url.to_string(),
        host,
        port,
        ldaps,
        name: None,
    })
}

/// `directory.max_message_bytes` as a size (validated to at most 1 GiB).
pub(crate) fn max_message_bytes(dir: &Directory) -> usize {
    usize::try_from(dir.max_message_bytes).unwrap_or(usize::MAX)
}

fn timeout_of(dir: &Directory) -> Duration {
    Duration::from_secs(u64::from(dir.timeout_seconds.max(1)))
}

/// Settings that cannot work, found before any connection.
fn precheck(dir: &Directory, bind: &Bind, password: Option<&str>) -> Result<(), (Step, LdapError)> {
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

/// Split a PEM file into its certificates.
pub(crate) fn pem_certificates(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(b) = rest.find(BEGIN) {
        let after = &rest[b..];
        match after.find(END) {
            Some(e) => {
                out.push(after[..e + END.len()].to_string());
                rest = &after[e + END.len()..];
            }
            None => break,
        }
    }
    out
}

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

fn result_message(r: &LdapResult) -> String {
    let text = r.text.trim();
    if text.is_empty() {
        rc_name(r.rc).to_string()
    } else {
        format!("{}: {text}", rc_name(r.rc))
    }
}

fn op_error(server: &str, op: &str, r: &LdapResult) -> LdapError {
    LdapError::Operation {
        server: server.to_string(),
        op: op.to_string(),
        code: r.rc,
        message: result_message(r),
    }
}

/// An ldap3 error during `op`, as ours.
fn map_err(server: &str, op: &str, timeout: Duration, e: ldap3::LdapError) -> LdapError {
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
fn map_err_on(
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

type Sink<'a> = &'a mut (dyn FnMut(Entry) + Send);

/// What a search delivers besides its final result.
enum Item {
    Entry(Entry, Vec<ldap3::controls::Control>),
    /// IntermediateResponse: (responseName, responseValue).
    Intermediate(Option<String>, Option<Vec<u8>>),
}

/// One search request; entries go to `on_entry`, continuation references and
/// intermediate messages are skipped. Returns the final result (whatever its
/// code) for the caller to judge.
#[allow(clippy::too_many_arguments)]
async fn run_search(
    ldap: &mut Ldap,
    server: &str,
    timeout: Duration,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[String],
    controls: Vec<RawControl>,
    limit: Limit,
    on_entry: Sink<'_>,
) -> Result<LdapResult, LdapError> {
    run_search_raw(
        ldap,
        server,
        timeout,
        base,
        scope,
        filter,
        attrs,
        controls,
        limit,
        &mut |item| {
            if let Item::Entry(e, _) = item {
                on_entry(e);
            }
            Ok(())
        },
    )
    .await
}

/// How many entries a search may return: one for the read of one entry,
/// at most twice the page size for a page (servers return at most the page
/// size; the slack keeps a quirky server working while one that ignores
/// paging, e.g. 300,000 entries for a page of 1,000, is caught at once). A
/// server that sends more breaks the protocol: the search stops there with
/// an error, so that such an answer is neither buffered nor used. A search's
/// size limit is no bound: Samba returns more than it.
#[derive(Debug, Clone, Copy)]
struct Limit {
    /// Sent as the search's size limit (0: none).
    sizelimit: i32,
    /// Entries accepted (None: no bound).
    at_most: Option<usize>,
    /// What the bound is, for the error.
    what: &'static str,
}

impl Limit {
    /// No bound (DirSync and syncrepl rounds: as many as changed).
    const NONE: Limit = Limit {
        sizelimit: 0,
        at_most: None,
        what: "",
    };
    /// The base search of one entry.
    const ONE: Limit = Limit {
        sizelimit: 0,
        at_most: Some(1),
        what: "a base search returns at most one entry",
    };

    /// A search sent with `sizelimit` (none when 0).
    fn sized(sizelimit: i32) -> Limit {
        Limit {
            sizelimit,
            ..Limit::NONE
        }
    }

    /// One page of `size` entries of a paged search.
    fn page(size: i32) -> Limit {
        Limit {
            sizelimit: 0,
            at_most: usize::try_from(size)
                .ok()
                .map(|n| n.max(1).saturating_mul(2)),
            what: "twice the page size asked for",
        }
    }
}

/// A base search of `base` for `attr` on a connection of its own (the LDAP
/// ping): the entry, if any, goes to `found`; the final result is returned.
pub(crate) async fn search_one(
    ldap: &mut Ldap,
    server: &str,
    timeout: Duration,
    base: &str,
    filter: &str,
    attr: &str,
    found: &mut Option<Entry>,
) -> Result<LdapResult, LdapError> {
    run_search(
        ldap,
        server,
        timeout,
        base,
        Scope::Base,
        filter,
        &[attr.to_string()],
        Vec::new(),
        Limit::ONE,
        &mut |e| {
            found.get_or_insert(e);
        },
    )
    .await
}

/// Like [`run_search`], delivering entries with their controls and
/// intermediate messages; `on_item` may stop the search with a protocol error.
#[allow(clippy::too_many_arguments)]
async fn run_search_raw(
    ldap: &mut Ldap,
    server: &str,
    timeout: Duration,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[String],
    controls: Vec<RawControl>,
    limit: Limit,
    on_item: &mut (dyn FnMut(Item) -> Result<(), String> + Send),
) -> Result<LdapResult, LdapError> {
    let op = format!("search of {base:?} for {filter}");
    let mut entries = 0usize;
    ldap.with_timeout(timeout);
    ldap.with_search_options(SearchOptions::new().sizelimit(limit.sizelimit));
    if !controls.is_empty() {
        ldap.with_controls(controls);
    }
    let handle = ldap.clone();
    let mut stream = ldap
        .streaming_search(base, scope.into(), filter, attrs.to_vec())
        .await
        .map_err(|e| map_err_on(&handle, server, &op, timeout, e))?;
    loop {
        match stream.next().await {
            Ok(Some(re)) => {
                if re.is_ref() {
                    continue;
                }
                let item = if re.is_intermediate() {
                    parse_intermediate(re)
                        .map(|(n, v)| Item::Intermediate(n, v))
                        .ok_or_else(|| "malformed intermediate response".to_string())
                } else {
                    entries += 1;
                    match limit.at_most {
                        Some(n) if entries > n => Err(format!(
                            "the server sent more than {n} entries ({})",
                            limit.what
                        )),
                        _ => {
                            let ctrls = re.1.clone();
                            parse_entry(re).map(|e| Item::Entry(e, ctrls))
                        }
                    }
                };
                let outcome = item.and_then(&mut *on_item);
                if let Err(m) = outcome {
                    let _ = stream.finish().await;
                    return Err(LdapError::Protocol {
                        server: server.to_string(),
                        message: format!("{op}: {m}"),
                    });
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(map_err_on(&handle, server, &op, timeout, e));
            }
        }
    }
    Ok(stream.finish().await)
}

async fn do_simple_bind(
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
fn ntlm_fallback_allowed(bind: &Bind, password: Option<&str>, e: &LdapError) -> bool {
    !bind.dn.trim().is_empty()
        && password.is_some_and(|p| !p.is_empty())
        && !e.is_invalid_credentials()
}

/// The username as NTLM takes it: `DOMAIN\user`, `user@domain` or `user`
/// (checked here: the NTLM library would refuse mixed forms).
fn ntlm_username(username: &str) -> Result<String, String> {
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
async fn windows_credentials(
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
async fn rootdse_dns_host_name(
    ldap: &mut Ldap,
    server: &str,
    timeout: Duration,
) -> Result<Option<String>, LdapError> {
    let mut root = None;
    let res = run_search(
        ldap,
        server,
        timeout,
        "",
        Scope::Base,
        "(objectClass=*)",
        &["dnsHostName".to_string()],
        Vec::new(),
        Limit::ONE,
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
async fn service_host(ldap: &mut Ldap, t: &Target, timeout: Duration) -> Result<String, LdapError> {
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
async fn do_gssapi_bind(
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
fn with_ntlm_failure(e: LdapError, n: &LdapError) -> LdapError {
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
async fn ntlm_step(
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

/// Whether the whole server list should be abandoned after this error.
fn is_fatal(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::InvalidCredentials { .. } | LdapError::Config(_) | LdapError::Unsupported(_)
    )
}

/// The message of `e` without the leading "server: ".
fn reason_of(server: &str, e: &LdapError) -> String {
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

type Attempt = (Vec<TestStep>, Result<Client, (Step, LdapError)>);

/// Connect, TLS, bind and RootDSE on one server, recording each step.
///
/// `bind_only` (password checks): no separate TCP probe before the LDAP
/// connection and no RootDSE read after the bind; the client then has empty
/// capabilities and only serves to unbind.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    t: &Target,
    dir: &Directory,
    bind: &Bind,
    password: Option<&str>,
    win: Option<&Windows>,
    connector: Option<&Arc<rustls::ClientConfig>>,
    bind_only: bool,
    opened: Option<Connection>,
) -> Attempt {
    let timeout = timeout_of(dir);
    let server = t.url.as_str();
    let mut steps = Vec::new();
    let fail = |mut steps: Vec<TestStep>, step: Step, e: LdapError| -> Attempt {
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
        };
        return (steps, Ok(client));
    }
    let mut root = None;
    let res = run_search(
        &mut ldap,
        server,
        timeout,
        "",
        Scope::Base,
        "(objectClass=*)",
        &rootdse_attrs(),
        Vec::new(),
        Limit::ONE,
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
        let on = |ahead| {
            attempt(
                &target,
                dir,
                bind,
                password,
                win.as_ref(),
                connector.as_ref(),
                bind_only,
                ahead,
            )
        };
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

/// The seed's "Test" button: connect, TLS, bind and RootDSE as separate
/// steps. Servers are tried in order like [`connect`]; the report is of the
/// first that works, else of the last failure.
pub async fn test(dir: &Directory, bind: &Bind, password: Option<&str>) -> TestReport {
    let mut report = test_servers(dir, bind, password).await;
    report.warnings = mfasync_core::config::server_warnings(dir)
        .iter()
        .map(ToString::to_string)
        .collect();
    report
}

async fn test_servers(dir: &Directory, bind: &Bind, password: Option<&str>) -> TestReport {
    let failed = |server: String, step: Step, e: &LdapError| TestReport {
        ok: false,
        server,
        vendor: Vendor::Other,
        steps: vec![TestStep {
            step: step.as_str().into(),
            ok: false,
            detail: e.to_string(),
        }],
        supports: Supports::default(),
        discovery: None,
        tried: Vec::new(),
        domains: None,
        warnings: Vec::new(),
    };
    let discovered = if discovery::wanted(dir) {
        match discovery::discover(dir).await {
            Ok(d) => Some(d),
            Err(e) => return failed(String::new(), Step::Connect, &e),
        }
    } else {
        None
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
    let first = dir.servers.first().cloned().unwrap_or_default();
    let failed = |server: String, step: Step, e: &LdapError| TestReport {
        discovery: discovered.as_ref().map(|d| d.report.clone()),
        ..failed(server, step, e)
    };
    let mut tried: Vec<TriedServer> = Vec::new();
    if let Err((step, e)) = precheck(dir, bind, password) {
        return failed(first, step, &e);
    }
    let connector = match crate::tls::client_config(dir) {
        Ok(c) => c,
        Err(e) => return failed(first, Step::Tls, &e),
    };
    let win = match windows_credentials(dir, bind, password).await {
        Ok(k) => k,
        Err(e) => return failed(first, Step::Bind, &e),
    };
    let mut last = None;
    for url in &dir.servers {
        let target = match parse_target(url) {
            Ok(t) => Target {
                name: discovered.as_ref().and_then(|d| d.name_for(url)),
                ..t
            },
            Err(m) => {
                tried.push(TriedServer {
                    server: url.clone(),
                    ok: false,
                    step: Some(Step::Connect.as_str().into()),
                    detail: m.clone(),
                });
                last = Some(failed(url.clone(), Step::Connect, &LdapError::Config(m)));
                continue;
            }
        };
        let (mut steps, res) = attempt(
            &target,
            dir,
            bind,
            password,
            win.as_ref(),
            connector.as_ref(),
            false,
            None,
        )
        .await;
        match res {
            Ok(mut client) => {
                let base = client.base_dn.clone();
                let mut ok = true;
                if !base.is_empty() {
                    match client.read(&base, &["1.1".to_string()]).await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            ok = false;
                            steps.push(TestStep {
                                step: Step::RootDse.as_str().into(),
                                ok: false,
                                detail: format!("base DN {base:?} does not exist on {url}"),
                            });
                        }
                        Err(e) => {
                            ok = false;
                            steps.push(TestStep {
                                step: Step::RootDse.as_str().into(),
                                ok: false,
                                detail: format!("cannot read the base DN {base:?}: {e}"),
                            });
                        }
                    }
                }
                tried.push(TriedServer {
                    server: url.clone(),
                    ok: true,
                    step: None,
                    detail: "used".into(),
                });
                let domains = if ok
                    && dir.include_trusted_domains
                    && client.caps.vendor == Vendor::ActiveDirectory
                {
                    Some(discovery::trusted_domains(&mut client, dir).await)
                } else {
                    None
                };
                let report = TestReport {
                    ok,
                    server: url.clone(),
                    vendor: client.caps.vendor,
                    steps,
                    supports: Supports::from(&client.caps),
                    discovery: discovered.as_ref().map(|d| d.report.clone()),
                    tried,
                    domains,
                    warnings: Vec::new(),
                };
                client.unbind().await;
                return report;
            }
            Err((step, e)) => {
                tried.push(TriedServer {
                    server: url.clone(),
                    ok: false,
                    step: Some(step.as_str().into()),
                    detail: reason_of(url, &e),
                });
                last = Some(TestReport {
                    ok: false,
                    server: url.clone(),
                    vendor: Vendor::Other,
                    steps,
                    supports: Supports::default(),
                    discovery: discovered.as_ref().map(|d| d.report.clone()),
                    tried: Vec::new(),
                    domains: None,
                    warnings: Vec::new(),
                });
                if is_fatal(&e) {
                    break;
                }
            }
        }
    }
    let mut report = last.unwrap_or_else(|| {
        failed(
            first,
            Step::Connect,
            &LdapError::Config("no LDAP servers configured".into()),
        )
    });
    report.tried = tried;
    report
}

/// Characters used to split a search that exceeds the size limit: a search
/// on prefix `p` becomes one search per `p` + character, plus a catch-all
/// for values that continue with anything else (or end at `p`).
const SPLIT_ALPHABET: &[char] = &[
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's',
    't', 'u', 'v', 'w', 'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ' ', '-',
    '.', '_', '\'', '@', ',', '&', '+', '#', '$', '!', '~', '=', '%',
];
const MAX_SPLIT_DEPTH: usize = 64;

fn parenthesized(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

/// A connection bound and ready, with the server's capabilities.
pub struct Client {
    ldap: Ldap,
    driver: JoinHandle<()>,
    server: String,
    /// The server as connected to (its Kerberos name too), for [`Client::sibling`].
    target: Target,
    caps: Capabilities,
    base_dn: String,
    timeout: Duration,
    size_limit: u32,
    paging: bool,
    /// Attribute used to split searches into batches; empty = by vendor.
    split_attr: String,
    /// Values asked per range request; None = as many as the server gives.
    range_step: Option<u32>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("vendor", &self.caps.vendor)
            .field("base_dn", &self.base_dn)
            .field("paging", &self.paging)
            .finish()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The outcome of [`Client::dirsync_each`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSyncResult {
    /// The cookie to start the next DirSync from.
    pub cookie: Vec<u8>,
    /// Objects returned (changed, added or deleted).
    pub entries: usize,
}

/// One change of an RFC 4533 refresh; `uuid` is the entry's entryUUID (16 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// Added or modified: the entry with the requested attributes.
    Changed { uuid: Vec<u8>, entry: Entry },
    /// Deleted since the cookie (delete phase).
    Deleted { uuid: Vec<u8> },
    /// Unchanged and still there (present phase).
    Present { uuid: Vec<u8> },
}

/// The outcome of [`Client::syncrepl_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReplResult {
    /// The cookie to start the next refresh from (store it with the data).
    pub cookie: Option<Vec<u8>>,
    /// True: deletions were reported as [`SyncEvent::Deleted`]. False: a
    /// present phase; entries not reported as Changed or Present are gone.
    pub deletes_listed: bool,
    /// Events delivered.
    pub events: usize,
}

enum PagedEnd {
    Complete,
    /// The server applied a size limit to the paged search too.
    LimitExceeded,
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
        let (_, res) = attempt(
            &self.target,
            dir,
            bind,
            password,
            win.as_ref(),
            connector.as_ref(),
            true,
            None,
        )
        .await;
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

    /// URL of the server in use.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Base DN to use: `dir.base_dn` if set, else the RootDSE's
    /// defaultNamingContext, else its first namingContext (empty if none).
    pub fn base_dn(&self) -> &str {
        &self.base_dn
    }

    /// Use (or stop using) the paged results control; it is only used when
    /// the server announces it.
    pub fn set_paging(&mut self, on: bool) {
        self.paging = on;
    }

    /// The attribute whose value prefixes split a search into batches when
    /// paging is not available (default: `name` on Active Directory, `cn`
    /// elsewhere).
    pub fn set_split_attribute(&mut self, attr: &str) {
        self.split_attr = attr.to_string();
    }

    /// Ask for at most `step` values per range request in
    /// [`Client::read_all_values`] (`member;range=0-99`, then `100-199`, …);
    /// None (the default) asks for everything and follows the server's ranges.
    pub fn set_range_step(&mut self, step: Option<u32>) {
        self.range_step = step;
    }

    fn split_attribute(&self) -> String {
        if !self.split_attr.is_empty() {
            self.split_attr.clone()
        } else if self.caps.vendor == Vendor::ActiveDirectory {
            "name".into()
        } else {
            "cn".into()
        }
    }

    fn page_size(&self) -> i32 {
        i32::try_from(self.size_limit.clamp(1, 1000)).unwrap_or(1000)
    }

    /// Search, calling `f` for every entry without holding them all in
    /// memory (only their DNs, to never return one twice). Paged when the
    /// server supports it; otherwise in batches that each stay under the size
    /// limit. A failed or timed-out search is an error, never a partial result.
    /// Returns the number of entries.
    pub async fn search_each(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<usize, LdapError> {
        self.search_with(base, scope, filter, attrs, Vec::new(), f)
            .await
    }

    pub(crate) async fn search_with(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        controls: Vec<RawControl>,
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<usize, LdapError> {
        let filter = parenthesized(filter);
        let mut seen = SeenDns::default();
        if self.paging && self.caps.paged_results {
            match self
                .paged(base, scope, &filter, attrs, &controls, &mut seen, f)
                .await?
            {
                PagedEnd::Complete => return Ok(seen.len()),
                PagedEnd::LimitExceeded => tracing::warn!(
                    server = %self.server,
                    %base,
                    %filter,
                    "the server limits paged searches too; continuing in batches"
                ),
            }
        }
        self.batched(base, scope, &filter, attrs, &controls, &mut seen, f)
            .await?;
        Ok(seen.len())
    }

    #[allow(clippy::too_many_arguments)]
    async fn paged(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        controls: &[RawControl],
        seen: &mut SeenDns,
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<PagedEnd, LdapError> {
        let size = self.page_size();
        let mut cookie = Vec::new();
        let op = format!("paged search of {base:?} for {filter}");
        loop {
            let mut ctrls = controls.to_vec();
            ctrls.push(paged_control(size, std::mem::take(&mut cookie)));
            let res = run_search(
                &mut self.ldap,
                &self.server,
                self.timeout,
                base,
                scope,
                filter,
                attrs,
                ctrls,
                Limit::page(size),
                &mut |e: Entry| {
                    if seen.insert(&e.dn) {
                        f(e)
                    }
                },
            )
            .await?;
            match res.rc {
                0 => {}
                4 | 11 => return Ok(PagedEnd::LimitExceeded),
                _ => return Err(op_error(&self.server, &op, &res)),
            }
            let Some(ctrl) = res.ctrls.iter().find(|c| c.1.ctype == OID_PAGED) else {
                // The server ignored the (non-critical) control: that was everything.
                return Ok(PagedEnd::Complete);
            };
            cookie = ctrl
                .1
                .val
                .as_deref()
                .and_then(paged_cookie)
                .ok_or_else(|| LdapError::Protocol {
                    server: self.server.clone(),
                    message: format!("{op}: malformed paged results response control"),
                })?;
            if cookie.is_empty() {
                return Ok(PagedEnd::Complete);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn batched(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        controls: &[RawControl],
        seen: &mut SeenDns,
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<(), LdapError> {
        let attr = self.split_attribute();
        let limit = i32::try_from(self.size_limit).unwrap_or(i32::MAX);
        // (filter, prefix; None = the original search, catch-all?)
        let mut queue: Vec<(String, Option<String>, bool)> =
            vec![(filter.to_string(), None, false)];
        let mut searches = 0usize;
        while let Some((flt, prefix, catch_all)) = queue.pop() {
            searches += 1;
            let res = run_search(
                &mut self.ldap,
                &self.server,
                self.timeout,
                base,
                scope,
                &flt,
                attrs,
                controls.to_vec(),
                Limit::sized(limit),
                &mut |e: Entry| {
                    if seen.insert(&e.dn) {
                        f(e)
                    }
                },
            )
            .await?;
            let op = format!("search of {base:?} for {flt}");
            match res.rc {
                0 => continue,
                4 | 11 => {}
                _ => return Err(op_error(&self.server, &op, &res)),
            }
            let p = prefix.unwrap_or_default();
            if catch_all || p.chars().count() >= MAX_SPLIT_DEPTH {
                return Err(LdapError::Operation {
                    server: self.server.clone(),
                    op,
                    code: res.rc,
                    message: format!(
                        "more entries match than the size limit allows (query_size_limit {limit}, or the server's own limit), and they cannot be split further by {attr} prefixes; raise the server's size limit or enable paging"
                    ),
                });
            }
            tracing::debug!(server = %self.server, prefix = %p, "size limit exceeded; splitting the search");
            let mut ors = String::new();
            for c in SPLIT_ALPHABET {
                // Servers ignore leading spaces and collapse repeated ones in
                // substring assertions: "p " then "p  " would never narrow.
                if *c == ' ' && (p.is_empty() || p.ends_with(' ')) {
                    continue;
                }
                let np = format!("{p}{c}");
                let cond = format!("({attr}={}*)", filter_value(&np));
                ors.push_str(&cond);
                queue.push((format!("(&{filter}{cond})"), Some(np), false));
            }
            let catch = if p.is_empty() {
                format!("(&{filter}(!(|{ors})))")
            } else {
                format!("(&{filter}({attr}={}*)(!(|{ors})))", filter_value(&p))
            };
            queue.push((catch, Some(p), true));
        }
        tracing::debug!(server = %self.server, searches, entries = seen.len(), "batched search done");
        Ok(())
    }

    /// Like [`Client::search_each`], collecting the entries.
    pub async fn search_all(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
    ) -> Result<Vec<Entry>, LdapError> {
        let mut out = Vec::new();
        self.search_each(base, scope, filter, attrs, &mut |e| out.push(e))
            .await?;
        Ok(out)
    }

    /// Read one entry (base scope); `Ok(None)` when it does not exist.
    pub async fn read(&mut self, dn: &str, attrs: &[String]) -> Result<Option<Entry>, LdapError> {
        let mut found = None;
        let res = run_search(
            &mut self.ldap,
            &self.server,
            self.timeout,
            dn,
            Scope::Base,
            "(objectClass=*)",
            attrs,
            Vec::new(),
            Limit::ONE,
            &mut |e| {
                found.get_or_insert(e);
            },
        )
        .await?;
        match res.rc {
            0 => Ok(found),
            32 => Ok(None),
            _ => Err(op_error(&self.server, &format!("read of {dn:?}"), &res)),
        }
    }

    /// All values of a multi-valued attribute, with range retrieval (Active
    /// Directory returns `member;range=0-1499` and expects `member;range=1500-*`
    /// next). Also works when the server returns the plain attribute.
    /// `Ok(None)` when the entry does not exist.
    pub async fn read_all_values(
        &mut self,
        dn: &str,
        attr: &str,
    ) -> Result<Option<Vec<String>>, LdapError> {
        let attr_l = attr.to_ascii_lowercase();
        let mut values = Vec::new();
        let mut start: u64 = 0;
        let mut plain_tried = false;
        loop {
            let request = if start == 0 && plain_tried {
                attr.to_string()
            } else if let Some(step) = self.range_step {
                format!(
                    "{attr};range={start}-{}",
                    start + u64::from(step.max(1)) - 1
                )
            } else {
                format!("{attr};range={start}-*")
            };
            let Some(entry) = self.read(dn, &[request]).await? else {
                return if start == 0 {
                    Ok(None)
                } else {
                    Ok(Some(values))
                };
            };
            let mut found = false;
            let mut next = None;
            for (name, vals) in &entry.attrs {
                let range = parse_range(name, &attr_l);
                if name != &attr_l && range.is_none() {
                    continue;
                }
                found = true;
                values.extend(vals.iter().map(|v| String::from_utf8_lossy(v).into_owned()));
                if let Some((lo, Some(hi))) = range {
                    if lo != start || hi < lo {
                        return Err(LdapError::Protocol {
                            server: self.server.clone(),
                            message: format!(
                                "range retrieval of {attr} on {dn:?}: asked from {start}, got {name}"
                            ),
                        });
                    }
                    next = Some(hi + 1);
                }
            }
            match next {
                Some(n) => start = n,
                None if !found && start == 0 && !plain_tried => plain_tried = true,
                None => return Ok(Some(values)),
            }
        }
    }

    /// Attribute Scoped Query: the entries referenced by `attr` (e.g.
    /// "member") of `dn` that match `filter`. Paged when supported.
    pub async fn asq_each(
        &mut self,
        dn: &str,
        attr: &str,
        filter: &str,
        attrs: &[String],
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<usize, LdapError> {
        if !self.caps.attribute_scoped_query {
            return Err(LdapError::Unsupported(format!(
                "{}: the server does not support attribute scoped queries (control 1.2.840.113556.1.4.1504)",
                self.server
            )));
        }
        self.search_with(dn, Scope::Base, filter, attrs, vec![asq_control(attr)], f)
            .await
    }

    /// DirSync (control 1.2.840.113556.1.4.841): the objects under the naming
    /// context `base` (DirSync only accepts a naming context head) that match
    /// `filter` and changed since `cookie` (empty: everything, which sets the
    /// starting point). Only changed attributes are returned. Deleted objects
    /// (`isDeleted` = TRUE, DN under CN=Deleted Objects) are always included,
    /// whatever `filter` says: tombstones lose most attributes (objectCategory
    /// among them), so the filter is sent as `(|filter(isDeleted=TRUE))` and
    /// deletions of other kinds of objects come too (match them by objectGUID).
    /// Repeats while the server has more. Store the returned cookie together
    /// with the data it produced.
    ///
    /// `flags`: e.g. [`crate::DIRSYNC_INCREMENTAL_VALUES`]; without the
    /// "Replicating Directory Changes" right add [`crate::DIRSYNC_OBJECT_SECURITY`].
    /// A refusal (e.g. insufficient rights) is an error: fall back to a full sync.
    pub async fn dirsync_each(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        cookie: &[u8],
        flags: u32,
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<DirSyncResult, LdapError> {
        if !self.caps.dirsync {
            return Err(LdapError::Unsupported(format!(
                "{}: the server does not support DirSync (control 1.2.840.113556.1.4.841)",
                self.server
            )));
        }
        let filter = format!("(|{}(isDeleted=TRUE))", parenthesized(filter));
        let op = format!("DirSync search of {base:?} for {filter}");
        let mut cookie = cookie.to_vec();
        let mut entries = 0usize;
        loop {
            let res = run_search(
                &mut self.ldap,
                &self.server,
                self.timeout,
                base,
                Scope::Subtree,
                &filter,
                attrs,
                vec![dirsync_control(flags, i32::MAX, &cookie)],
                Limit::NONE,
                &mut |e: Entry| {
                    entries += 1;
                    f(e)
                },
            )
            .await?;
            if res.rc != 0 {
                return Err(op_error(&self.server, &op, &res));
            }
            let (more, next) = res
                .ctrls
                .iter()
                .find(|c| c.1.ctype == OID_DIRSYNC)
                .and_then(|c| c.1.val.as_deref())
                .and_then(dirsync_response)
                .ok_or_else(|| LdapError::Protocol {
                    server: self.server.clone(),
                    message: format!("{op}: missing or malformed DirSync response control"),
                })?;
            if !next.is_empty() {
                cookie = next;
            }
            if !more {
                return Ok(DirSyncResult { cookie, entries });
            }
        }
    }

    /// RFC 4533 content synchronization, refreshOnly (OpenLDAP `syncprov`):
    /// the entries under `base` matching `filter` that changed since `cookie`
    /// (None: everything, which sets the starting point).
    ///
    /// Events: [`SyncEvent::Changed`] (added or modified, with `attrs`),
    /// [`SyncEvent::Deleted`] (delete phase) and [`SyncEvent::Present`]
    /// (unchanged, present phase). When the result's `deletes_listed` is
    /// false, every entry of the previous state not reported as Changed or
    /// Present is gone. A cookie the server no longer accepts
    /// (e-syncRefreshRequired) restarts the refresh from scratch.
    pub async fn syncrepl_refresh(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        cookie: Option<&[u8]>,
        f: &mut (dyn FnMut(SyncEvent) + Send),
    ) -> Result<SyncReplResult, LdapError> {
        if !self.caps.syncrepl {
            return Err(LdapError::Unsupported(format!(
                "{}: the server does not support content synchronization (RFC 4533, control 1.3.6.1.4.1.4203.1.9.1.1)",
                self.server
            )));
        }
        let filter = parenthesized(filter);
        let op = format!("syncrepl refresh of {base:?} for {filter}");
        let mut cookie: Option<Vec<u8>> = cookie.map(<[u8]>::to_vec);
        let mut restarted = false;
        loop {
            let mut events = 0usize;
            let mut last_cookie: Option<Vec<u8>> = None;
            let mut deletes_listed = None;
            let res = run_search_raw(
                &mut self.ldap,
                &self.server,
                self.timeout,
                base,
                scope,
                &filter,
                attrs,
                vec![sync_request_control(cookie.as_deref())],
                Limit::NONE,
                &mut |item| {
                    match item {
                        Item::Entry(entry, ctrls) => {
                            let Some((state, uuid, c)) = ctrls
                                .iter()
                                .find(|c| c.1.ctype == OID_SYNC_STATE)
                                .and_then(|c| c.1.val.as_deref())
                                .and_then(sync_state)
                            else {
                                return Err(format!(
                                    "entry {:?} without a valid Sync State control",
                                    entry.dn
                                ));
                            };
                            if let Some(c) = c.filter(|c| !c.is_empty()) {
                                last_cookie = Some(c);
                            }
                            events += 1;
                            f(match state {
                                SyncState::Add | SyncState::Modify => {
                                    SyncEvent::Changed { uuid, entry }
                                }
                                SyncState::Present => SyncEvent::Present { uuid },
                                SyncState::Delete => SyncEvent::Deleted { uuid },
                            });
                        }
                        Item::Intermediate(name, value) => {
                            if name.as_deref() != Some(OID_SYNC_INFO) {
                                return Ok(());
                            }
                            let info = value
                                .as_deref()
                                .and_then(sync_info)
                                .ok_or_else(|| "malformed Sync Info message".to_string())?;
                            match info {
                                SyncInfo::NewCookie(c) => last_cookie = Some(c),
                                SyncInfo::Phase { cookie: c, .. } => {
                                    if let Some(c) = c {
                                        last_cookie = Some(c);
                                    }
                                }
                                SyncInfo::IdSet {
                                    cookie: c,
                                    refresh_deletes,
                                    uuids,
                                } => {
                                    if let Some(c) = c {
                                        last_cookie = Some(c);
                                    }
                                    for uuid in uuids {
                                        events += 1;
                                        f(if refresh_deletes {
                                            SyncEvent::Deleted { uuid }
                                        } else {
                                            SyncEvent::Present { uuid }
                                        });
                                    }
                                }
                            }
                        }
                    }
                    Ok(())
                },
            )
            .await?;
            if res.rc == 4096 && !restarted && events == 0 {
                tracing::info!(server = %self.server, "syncrepl cookie refused (e-syncRefreshRequired); full refresh");
                cookie = None;
                restarted = true;
                continue;
            }
            if res.rc != 0 {
                return Err(op_error(&self.server, &op, &res));
            }
            if let Some((c, rd)) = res
                .ctrls
                .iter()
                .find(|c| c.1.ctype == OID_SYNC_DONE)
                .and_then(|c| c.1.val.as_deref())
                .and_then(sync_done)
            {
                if let Some(c) = c {
                    last_cookie = Some(c);
                }
                deletes_listed = Some(rd);
            }
            return Ok(SyncReplResult {
                cookie: last_cookie.or(cookie),
                deletes_listed: deletes_listed.unwrap_or(false),
                events,
            });
        }
    }

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

    /// Unbind and close the connection.
    pub async fn unbind(mut self) {
        if let Err(e) = self.ldap.unbind().await {
            tracing::debug!(server = %self.server, error = %e, "unbind failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_delivers_each_dn_once_whatever_its_case() {
        let mut seen = SeenDns::default();
        assert!(seen.insert("uid=a,ou=People,dc=example,dc=com"));
        assert!(!seen.insert("UID=A,OU=people,DC=Example,DC=com"));
        assert!(seen.insert("uid=b,ou=People,dc=example,dc=com"));
        assert!(seen.insert("cn=José Müller,dc=example,dc=com"));
        assert!(!seen.insert("CN=JOSÉ MÜLLER,DC=EXAMPLE,DC=COM"));
        assert!(seen.insert("cn=José Müller2,dc=example,dc=com"));
        assert_eq!(seen.len(), 4);
    }

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

    #[test]
    fn targets() {
        let t = parse_target("ldaps://dc1.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.ldaps),
            ("dc1.example.com", 636, true)
        );
        let t = parse_target("ldap://127.0.0.1:3389/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.ldaps),
            ("127.0.0.1", 3389, false)
        );
        let t = parse_target("ldap://[::1]:1389").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.host.as_str(), t.port), ("::1", 1389));
        assert!(parse_target("http://x").is_err());
        assert!(parse_target("ldap://x:notaport").is_err());
    }

    #[test]
    fn pem_splitting() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let c = pem_certificates(pem);
        assert_eq!(c.len(), 2);
        assert!(c[1].contains("BBB"));
    }

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

    fn assert_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    async fn futures_are_send(c: &mut Client, dir: &Directory, bind: &Bind) {
        let attrs = Vec::new();
        let mut f = |_e: Entry| {};
        assert_send(&c.search_each("", Scope::Base, "(x=*)", &attrs, &mut f));
        assert_send(&c.read_all_values("", "member"));
        assert_send(&connect(dir, bind, None));
        assert_send(&test(dir, bind, None));
    }
}
