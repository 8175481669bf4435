//! "Use Active Directory" (`source = "active-directory"` with no `servers`):
//! the domain's domain controllers found by DNS SRV.
//!
//! * The domain is `directory.domain`, else the host's Kerberos default realm
//!   (`default_realm` of `$KRB5_CONFIG` or /etc/krb5.conf), lower-cased.
//! * `_ldap._tcp.dc._msdcs.DOMAIN` is asked; the site is `directory.site`, else
//!   the client site a DC names in its reply to an LDAP ping (the Windows DC
//!   locator's way); the DCs of `_ldap._tcp.SITE._sites.dc._msdcs.DOMAIN` are
//!   tried first, the domain's other DCs are backups.
//! * Each list is ordered as RFC 2782 says: by priority (lowest first), and
//!   within one priority by a weighted random draw (weight 0 rarely first).
//!   The draw is seeded by this host's name and the domain: hosts spread over
//!   the DCs as the weights say, while one host keeps choosing the same DC as
//!   long as the records do not change (its DirSync cookie is that DC's, so
//!   incremental cycles are not turned into full ones by a random choice).
//! * DNS is the host's resolver (/etc/resolv.conf), or `directory.dns_servers`.
//!   With `dns_servers`, the DCs' addresses are also looked up there and the
//!   connection goes to the address (the host's resolver may not know the
//!   AD zone); the DC's name stays the Kerberos service name (`ldap/<name>`).
//!
//! * A result is reused for the SRV records' TTL (at most 10 minutes) by the
//!   process; errors are not kept.
//!
//! Every error names `directory.domain` (and the DNS servers asked).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use mfasync_core::config::{Directory, DirectorySource};
use rand::Rng;

use crate::error::LdapError;

pub use mfasync_core::report::directory::{DiscoveryReport, FoundDc};

/// The result of discovery: the report and the servers to try, in order.
#[derive(Debug, Clone)]
pub(crate) struct Discovered {
    pub report: DiscoveryReport,
    /// (URL, the DC's DNS name when the URL names its address instead).
    pub servers: Vec<(String, Option<String>)>,
    /// Its key in the cache.
    key: String,
}

impl Discovered {
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|(u, _)| u.clone()).collect()
    }

    /// The DC's DNS name for a URL that names its address.
    pub fn name_for(&self, url: &str) -> Option<String> {
        self.servers
            .iter()
            .find(|(u, _)| u == url)
            .and_then(|(_, n)| n.clone())
    }
}

/// Whether `dir` asks for DC discovery: `source = "active-directory"` and no
/// `servers` listed (listed servers are used as given).
pub fn wanted(dir: &Directory) -> bool {
    dir.source == DirectorySource::ActiveDirectory && dir.servers.is_empty()
}

/// The Kerberos configuration files the host's Kerberos library reads.
fn krb5_config_files() -> Vec<String> {
    match std::env::var("KRB5_CONFIG") {
        Ok(v) if !v.trim().is_empty() => v
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        _ => vec!["/etc/krb5.conf".to_string()],
    }
}

/// `default_realm` of the `[libdefaults]` section of a krb5.conf text.
pub(crate) fn default_realm(krb5_conf: &str) -> Option<String> {
    let mut in_libdefaults = false;
    for line in krb5_conf.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(section) = l.strip_prefix('[') {
            in_libdefaults = section
                .trim_end()
                .trim_end_matches(']')
                .trim()
                .eq_ignore_ascii_case("libdefaults");
            continue;
        }
        if !in_libdefaults {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let v = v.trim();
            if k.trim() == "default_realm" && !v.is_empty() {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// The domain to discover: `directory.domain`, else the Kerberos default realm.
pub(crate) fn domain_of(dir: &Directory) -> Result<(String, String), LdapError> {
    let d = dir.domain.trim().trim_end_matches('.');
    if !d.is_empty() {
        return Ok((d.to_ascii_lowercase(), "directory.domain".to_string()));
    }
    let files = krb5_config_files();
    for f in &files {
        if let Some(realm) = std::fs::read_to_string(f)
            .ok()
            .as_deref()
            .and_then(default_realm)
        {
            let realm = realm.trim_end_matches('.').to_ascii_lowercase();
            return Ok((realm, format!("the Kerberos default_realm in {f}")));
        }
    }
    Err(LdapError::Config(format!(
        "directory.domain is not set and the host's Kerberos configuration ({}) names no \
         default_realm: set directory.domain to the Active Directory domain (e.g. \"example.com\"), \
         or list the domain controllers in directory.servers",
        files.join(", ")
    )))
}

/// `IP` or `IP:port` (port 53 by default).
fn dns_server_addr(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

fn resolver(dir: &Directory) -> Result<(TokioResolver, String), LdapError> {
    // One DNS answer should take far less than an LDAP operation.
    let timeout = Duration::from_secs(u64::from(dir.timeout_seconds.clamp(1, 5)));
    if dir.dns_servers.is_empty() {
        let mut b = TokioResolver::builder_tokio().map_err(|e| {
            LdapError::Discovery(format!(
                "directory.domain: cannot read the host's DNS configuration (/etc/resolv.conf): \
                 {e}; set directory.dns_servers"
            ))
        })?;
        b.options_mut().timeout = timeout;
        b.options_mut().attempts = 2;
        return Ok((
            b.build(),
            "the host's resolver (/etc/resolv.conf)".to_string(),
        ));
    }
    let mut cfg = ResolverConfig::new();
    let mut names = Vec::new();
    for (i, s) in dir.dns_servers.iter().enumerate() {
        let addr = dns_server_addr(s).ok_or_else(|| {
            LdapError::Config(format!(
                "directory.dns_servers[{i}]: {s:?} is not an IP address or IP:port"
            ))
        })?;
        cfg.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
        cfg.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
        names.push(addr.to_string());
    }
    let mut b = TokioResolver::builder_with_config(cfg, TokioConnectionProvider::default());
    b.options_mut().timeout = timeout;
    b.options_mut().attempts = 2;
    Ok((b.build(), format!("DNS server {}", names.join(", "))))
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Srv {
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// RFC 2782 order: ascending priority; within a priority, repeatedly draw
/// `pick(total)` in `0..=total` (the sum of the remaining weights) and take
/// the first record (weight-0 records first in the running list) whose
/// running weight sum is >= the draw.
pub(crate) fn rfc2782_order(mut records: Vec<Srv>, mut pick: impl FnMut(u32) -> u32) -> Vec<Srv> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        // Weight-0 records first, otherwise in the order DNS gave them.
        let mut group: Vec<Srv> = group.to_vec();
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let draw = pick(total).min(total);
            let mut sum = 0u32;
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                sum += u32::from(r.weight);
                if sum >= draw {
                    chosen = i;
                    break;
                }
            }
            out.push(group.remove(chosen));
        }
    }
    out
}

/// The weighted draws for `domain` on this host: random across hosts,
/// repeatable on one host (see the module docs).
fn host_draws(domain: &str) -> impl FnMut(u32) -> u32 {
    use rand::SeedableRng;
    use std::hash::{Hash, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    // SipHash with fixed keys: the same seed in every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (host.trim(), domain).hash(&mut h);
    let mut rng = rand::rngs::StdRng::seed_from_u64(h.finish());
    move |total| rng.gen_range(0..=total)
}

fn lookup_error(domain: &str, query: &str, dns: &str, e: &ResolveError) -> LdapError {
    let query = query.trim_end_matches('.');
    if e.is_no_records_found() || e.is_nx_domain() {
        LdapError::Discovery(format!(
            "directory.domain {domain:?}: no domain controllers found: {dns} has no SRV records for {query}"
        ))
    } else {
        LdapError::Discovery(format!(
            "directory.domain {domain:?}: DNS lookup of {query} via {dns} failed: {e}"
        ))
    }
}

/// SRV records of `query`; `Ok(None)` when the name has none.
async fn srv_records(
    r: &TokioResolver,
    domain: &str,
    query: &str,
    dns: &str,
) -> Result<Option<(Vec<Srv>, Instant)>, LdapError> {
    match r.srv_lookup(query).await {
        Ok(l) => {
            let valid_until = l.as_lookup().valid_until();
            let v: Vec<Srv> = l
                .iter()
                .filter(|s| !s.target().is_root()) // "." = no service here (RFC 2782)
                .map(|s| Srv {
                    target: s
                        .target()
                        .to_utf8()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                    port: s.port(),
                    priority: s.priority(),
                    weight: s.weight(),
                })
                .collect();
            Ok(if v.is_empty() {
                None
            } else {
                Some((v, valid_until))
            })
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
        Err(e) => Err(lookup_error(domain, query, dns, &e)),
    }
}

type Addresses = HashMap<(String, u16), (Vec<String>, Option<String>)>;

/// The URLs of one DC: by name with the host's resolver; with `dns_servers`,
/// one per address looked up there (or why there is none). Memoized in `memo`.
async fn urls_for(
    dir: &Directory,
    resolver: &TokioResolver,
    dns: &str,
    s: &Srv,
    memo: &mut Addresses,
) -> (Vec<String>, Option<String>) {
    let key = (s.target.clone(), s.port);
    if let Some(v) = memo.get(&key) {
        return v.clone();
    }
    let mut urls = Vec::new();
    let mut error = None;
    if dir.dns_servers.is_empty() {
        urls.push(url_of(&s.target, s.port));
    } else {
        match resolver.lookup_ip(format!("{}.", s.target)).await {
            Ok(ips) => {
                urls.extend(ips.iter().map(|ip| url_of(&ip.to_string(), s.port)));
                if urls.is_empty() {
                    error = Some(format!("{dns} has no address for {}", s.target));
                }
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                error = Some(format!("{dns} has no address for {}", s.target));
            }
            Err(e) => error = Some(format!("address lookup via {dns} failed: {e}")),
        }
    }
    memo.insert(key, (urls.clone(), error.clone()));
    (urls, error)
}

/// How many DCs are asked for this host's site before giving up.
const PING_DCS: usize = 3;

/// The AD site of this host, as the Windows DC locator learns it: an "LDAP
/// ping" (a RootDSE search for `Netlogon` with `DnsDomain` and `NtVer`, over
/// TCP) to the first DCs that answer; their reply names the client's site
/// (from the subnets defined in AD). `None` when no DC tells.
async fn ping_site(
    dir: &Directory,
    resolver: &TokioResolver,
    dns: &str,
    domain: &str,
    dcs: &[Srv],
    memo: &mut Addresses,
) -> Option<(String, String)> {
    let timeout = Duration::from_secs(u64::from(dir.timeout_seconds.clamp(1, 3)));
    for s in dcs.iter().take(PING_DCS) {
        let (urls, _) = urls_for(dir, resolver, dns, s, memo).await;
        for url in urls {
            match ldap_ping(&url, domain, timeout).await {
                Some(site) if site_name_ok(&site) => return Some((site, url)),
                Some(site) => {
                    tracing::debug!(url = %url, site = %site, "LDAP ping: unusable site name");
                    return None;
                }
                None => continue,
            }
        }
    }
    None
}

fn site_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One LDAP ping; the client site name of the reply. The reply is read like
/// any search (one entry at most, messages of at most 64 KiB: a Netlogon
/// reply is a few hundred bytes), so a hostile server found by DNS cannot
/// make it panic or buffer without end.
async fn ldap_ping(url: &str, domain: &str, timeout: Duration) -> Option<String> {
    let settings = ldap3::LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_max_message_bytes(64 << 10);
    let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, url)
        .await
        .ok()?;
    let driver = tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    // NtVer 0x00000006: NETLOGON_NT_VERSION_5 | NETLOGON_NT_VERSION_5EX.
    let filter = format!(
        "(&(DnsDomain={})(NtVer=\\06\\00\\00\\00))",
        mfasync_core::escape::filter_value(domain)
    );
    let mut entry = None;
    let res =
        crate::search::search_one(&mut ldap, url, timeout, "", &filter, "Netlogon", &mut entry)
            .await;
    driver.abort();
    if res.ok()?.rc != 0 {
        return None;
    }
    let blob = entry?.first_bytes("netlogon")?.to_vec();
    let site = client_site(&blob);
    tracing::debug!(url, site = ?site, "LDAP ping");
    site
}

/// The ClientSiteName of a NETLOGON_SAM_LOGON_RESPONSE_EX ([MS-ADTS]
/// 6.3.1.9): after opcode (2), Sbz (2), Flags (4) and DomainGuid (16), eight
/// compressed DNS names (RFC 1035 4.1.4): forest, domain, host, NetBIOS
/// domain, NetBIOS computer, user, DC site, client site.
pub(crate) fn client_site(b: &[u8]) -> Option<String> {
    let opcode = u16::from_le_bytes([*b.first()?, *b.get(1)?]);
    // 23: LOGON_SAM_LOGON_RESPONSE_EX, 25: LOGON_SAM_USER_UNKNOWN_EX.
    if opcode != 23 && opcode != 25 {
        return None;
    }
    let mut pos = 24;
    let mut name = String::new();
    for _ in 0..8 {
        let (n, next) = compressed_name(b, pos)?;
        name = n;
        pos = next;
    }
    Some(name).filter(|n| !n.is_empty())
}

/// A compressed DNS name at `start`: (the name, the position after it).
fn compressed_name(b: &[u8], start: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut pos = start;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = usize::from(*b.get(pos)?);
        if len == 0 {
            return Some((labels.join("."), end.unwrap_or(pos + 1)));
        }
        if len & 0xC0 == 0xC0 {
            let low = usize::from(*b.get(pos + 1)?);
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3F) << 8) | low;
            jumps += 1;
            if jumps > 32 {
                return None;
            }
            continue;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        let label = b.get(pos + 1..pos + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
}

fn url_of(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("ldap://[{ip}]:{port}"),
        _ => format!("ldap://{host}:{port}"),
    }
}

/// Find the domain controllers of `dir`'s domain (see the module docs).
///
/// A result is kept for the SRV records' TTL (at most [`CACHE_MAX`]), as the
/// Windows DC locator caches its DC: password checks do not ask DNS each time.
pub(crate) async fn discover(dir: &Directory) -> Result<Discovered, LdapError> {
    let (domain, domain_from) = domain_of(dir)?;
    let site = Some(dir.site.trim().to_string()).filter(|s| !s.is_empty());
    let key = format!(
        "{domain}\n{domain_from}\n{}\n{}",
        site.as_deref().unwrap_or(""),
        dir.dns_servers.join(",")
    );
    let now = Instant::now();
    if let Some((until, d)) = cache().get(&key) {
        if *until > now {
            return Ok(d.clone());
        }
    }
    let (mut d, until) = lookup(dir, domain, domain_from, site).await?;
    d.key = key.clone();
    cache().insert(key, (until.min(now + CACHE_MAX), d.clone()));
    Ok(d)
}

/// A connection through `url` worked after earlier DCs of `d` failed: while
/// `d` is cached, try `url` first (a DC that is down is not waited for on
/// every connection, as the Windows DC locator keeps the DC that answered).
pub(crate) fn prefer(d: &Discovered, url: &str) {
    if let Some((_, cached)) = cache().get_mut(&d.key) {
        if let Some(i) = cached.servers.iter().position(|(u, _)| u == url) {
            let s = cached.servers.remove(i);
            cached.servers.insert(0, s);
        }
    }
}

/// The longest a discovery result is reused.
const CACHE_MAX: Duration = Duration::from_secs(600);

type Cache = HashMap<String, (Instant, Discovered)>;

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

async fn lookup(
    dir: &Directory,
    domain: String,
    domain_from: String,
    site: Option<String>,
) -> Result<(Discovered, Instant), LdapError> {
    let (resolver, dns) = resolver(dir)?;
    let mut until = Instant::now() + CACHE_MAX;
    let mut queries = Vec::new();
    let q = format!("_ldap._tcp.dc._msdcs.{domain}.");
    let shown = q.trim_end_matches('.').to_string();
    queries.push(shown.clone());
    let domain_wide = match srv_records(&resolver, &domain, &q, &dns).await? {
        Some((v, valid)) => {
            until = until.min(valid);
            rfc2782_order(v, host_draws(&domain))
        }
        None => Vec::new(),
    };
    let mut addresses = HashMap::new();
    let (site, site_from) = match site {
        Some(s) => (Some(s), Some("directory.site".to_string())),
        None => {
            match ping_site(dir, &resolver, &dns, &domain, &domain_wide, &mut addresses).await {
                Some((s, url)) => (Some(s), Some(format!("LDAP ping to {url}"))),
                None => (None, None),
            }
        }
    };
    let mut records: Vec<(Srv, bool)> = Vec::new();
    if let Some(site) = &site {
        let q = format!("_ldap._tcp.{site}._sites.dc._msdcs.{domain}.");
        queries.push(q.trim_end_matches('.').to_string());
        if let Some((v, valid)) = srv_records(&resolver, &domain, &q, &dns).await? {
            until = until.min(valid);
            let ordered = rfc2782_order(v, host_draws(&domain));
            records.extend(ordered.into_iter().map(|s| (s, true)));
        }
    }
    for s in domain_wide {
        if !records
            .iter()
            .any(|(r, _)| r.target == s.target && r.port == s.port)
        {
            records.push((s, false));
        }
    }
    if records.is_empty() {
        return Err(LdapError::Discovery(format!(
            "directory.domain {domain:?} (from {domain_from}): no domain controllers found: {dns} has no SRV records for {}",
            queries.join(" or ")
        )));
    }
    let mut servers = Vec::new();
    let mut found = Vec::new();
    for (s, in_site) in records {
        let mut dc = FoundDc {
            name: s.target.clone(),
            port: s.port,
            priority: s.priority,
            weight: s.weight,
            in_site,
            servers: Vec::new(),
            error: None,
        };
        let (urls, error) = urls_for(dir, &resolver, &dns, &s, &mut addresses).await;
        dc.servers = urls;
        dc.error = error;
        let name = (!dir.dns_servers.is_empty()).then(|| s.target.clone());
        for u in &dc.servers {
            if !servers.iter().any(|(x, _): &(String, _)| x == u) {
                servers.push((u.clone(), name.clone()));
            }
        }
        found.push(dc);
    }
    if servers.is_empty() {
        let why: Vec<String> = found
            .iter()
            .map(|d| format!("{}: {}", d.name, d.error.clone().unwrap_or_default()))
            .collect();
        return Err(LdapError::Discovery(format!(
            "directory.domain {domain:?}: domain controllers found ({shown}) but none has an address: {}",
            why.join("; ")
        )));
    }
    tracing::debug!(domain = %domain, dcs = ?servers, "domain controllers discovered");
    Ok((
        Discovered {
            report: DiscoveryReport {
                domain,
                domain_from,
                site,
                site_from,
                dns,
                queries,
                domain_controllers: found,
            },
            servers,
            key: String::new(),
        },
        until,
    ))
}

pub use mfasync_core::report::directory::{DomainInfo, TrustReport};

const FLAG_CR_NTDS_DOMAIN: &str = "2";

fn direction(v: Option<String>) -> Option<String> {
    let d = v?.trim().parse::<u32>().ok()?;
    Some(
        match d {
            1 => "inbound",
            2 => "outbound",
            3 => "bidirectional",
            _ => "disabled",
        }
        .to_string(),
    )
}

/// What kind of trust a trustedDomain object is (trustType, trustAttributes).
fn trust_kind(trust_type: Option<String>, attributes: Option<String>) -> Option<String> {
    const WITHIN_FOREST: u32 = 0x20;
    const FOREST_TRANSITIVE: u32 = 0x8;
    let t = trust_type?.trim().parse::<u32>().ok()?;
    let a = attributes
        .and_then(|a| a.trim().parse::<i64>().ok())
        .map_or(0, |a| a as u32);
    Some(
        match t {
            3 => "realm",
            1 | 2 if a & WITHIN_FOREST != 0 => "within forest",
            2 if a & FOREST_TRANSITIVE != 0 => "forest",
            1 | 2 => "external",
            _ => return None,
        }
        .to_string(),
    )
}

/// `example.com` -> `DC=example,DC=com` (the naming context of a domain).
pub fn dn_of_domain(name: &str) -> String {
    name.split('.')
        .filter(|l| !l.is_empty())
        .map(|l| format!("DC={l}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a DC of `domain` (found by DNS SRV with `dir`'s DNS settings)
/// accepts a TCP connection; the detail names it, or says why not.
async fn reach(dir: &Directory, domain: &str) -> (bool, String) {
    let d = Directory {
        source: DirectorySource::ActiveDirectory,
        domain: domain.to_string(),
        servers: Vec::new(),
        ..dir.clone()
    };
    let found = match discover(&d).await {
        Ok(f) => f,
        Err(e) => return (false, e.to_string()),
    };
    let timeout = Duration::from_secs(u64::from(dir.timeout_seconds.clamp(1, 10)));
    let mut failures = Vec::new();
    for (url, _) in &found.servers {
        let hostport = url.trim_start_matches("ldap://");
        let attempt = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(hostport)).await;
        match attempt {
            Ok(Ok(_)) => return (true, format!("domain controller {url} answers")),
            Ok(Err(e)) => failures.push(format!("{url}: {e}")),
            Err(_) => failures.push(format!("{url}: no answer within {} s", timeout.as_secs())),
        }
    }
    (
        false,
        format!("no domain controller answers: {}", failures.join("; ")),
    )
}

/// With `include_trusted_domains`: the forest's domains (crossRef objects
/// with FLAG_CR_NTDS_DOMAIN in CN=Partitions of the configuration naming
/// context) and the trusted domains (trustedDomain objects in CN=System of
/// this domain), each checked for a reachable DC. An unreachable domain is
/// reported and does not stop the others.
pub(crate) async fn trusted_domains(client: &mut crate::Client, dir: &Directory) -> TrustReport {
    let mut report = TrustReport {
        domains: Vec::new(),
        error: None,
    };
    let attrs = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let root = match client
        .read(
            "",
            &attrs(&["configurationNamingContext", "defaultNamingContext"]),
        )
        .await
    {
        Ok(Some(r)) => r,
        Ok(None) => {
            report.error = Some("the RootDSE could not be read".into());
            return report;
        }
        Err(e) => {
            report.error = Some(format!("cannot read the RootDSE: {e}"));
            return report;
        }
    };
    let this_nc = root.first_str("defaultNamingContext").unwrap_or_default();
    let mut errors = Vec::new();
    match root.first_str("configurationNamingContext") {
        Some(config) => {
            let filter = format!(
                "(&(objectClass=crossRef)(systemFlags:1.2.840.113556.1.4.803:={FLAG_CR_NTDS_DOMAIN}))"
            );
            match client
                .search_all(
                    &format!("CN=Partitions,{config}"),
                    crate::Scope::OneLevel,
                    &filter,
                    &attrs(&["dnsRoot", "nETBIOSName", "nCName"]),
                )
                .await
            {
                Ok(refs) => {
                    for r in refs {
                        let Some(name) = r.first_str("dnsRoot") else {
                            errors.push(format!("crossRef {:?} has no dnsRoot", r.dn));
                            continue;
                        };
                        let nc = r.first_str("nCName");
                        let this = nc
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(&this_nc));
                        report.domains.push(DomainInfo {
                            name: name.trim_end_matches('.').to_ascii_lowercase(),
                            netbios: r.first_str("nETBIOSName"),
                            base_dn: nc,
                            relation: if this { "this domain" } else { "forest" }.into(),
                            direction: None,
                            trust_type: None,
                            reachable: this,
                            detail: if this {
                                format!("connected to {}", client.server())
                            } else {
                                String::new()
                            },
                        });
                    }
                }
                Err(e) => errors.push(format!("cannot read the forest's domains: {e}")),
            }
        }
        None => errors.push("the RootDSE names no configurationNamingContext".into()),
    }
    if !this_nc.is_empty() {
        match client
            .search_all(
                &format!("CN=System,{this_nc}"),
                crate::Scope::OneLevel,
                "(objectClass=trustedDomain)",
                &attrs(&[
                    "trustPartner",
                    "flatName",
                    "trustDirection",
                    "trustType",
                    "trustAttributes",
                ]),
            )
            .await
        {
            Ok(trusts) => {
                for t in trusts {
                    let Some(name) = t.first_str("trustPartner") else {
                        errors.push(format!("trustedDomain {:?} has no trustPartner", t.dn));
                        continue;
                    };
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    let dir_ = direction(t.first_str("trustDirection"));
                    let kind = trust_kind(t.first_str("trustType"), t.first_str("trustAttributes"));
                    match report.domains.iter_mut().find(|d| d.name == name) {
                        // A trust inside the forest (parent/child, tree root).
                        Some(d) => {
                            d.direction = dir_;
                            d.trust_type = kind;
                        }
                        None => report.domains.push(DomainInfo {
                            name,
                            netbios: t.first_str("flatName"),
                            base_dn: None,
                            relation: "trust".into(),
                            direction: dir_,
                            trust_type: kind,
                            reachable: false,
                            detail: String::new(),
                        }),
                    }
                }
            }
            Err(e) => errors.push(format!("cannot read the trusted domains: {e}")),
        }
    }
    for d in report
        .domains
        .iter_mut()
        .filter(|d| d.relation != "this domain")
    {
        if d.base_dn.is_none() {
            d.base_dn = Some(dn_of_domain(&d.name));
        }
        let (ok, detail) = reach(dir, &d.name).await;
        d.reachable = ok;
        d.detail = detail;
    }
    if !errors.is_empty() {
        report.error = Some(errors.join("; "));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(target: &str, priority: u16, weight: u16) -> Srv {
        Srv {
            target: target.into(),
            port: 389,
            priority,
            weight,
        }
    }

    fn names(v: &[Srv]) -> Vec<&str> {
        v.iter().map(|s| s.target.as_str()).collect()
    }

    #[test]
    fn priority_first_then_weight() {
        let recs = vec![
            srv("c", 10, 50),
            srv("a", 0, 0),
            srv("b", 5, 100),
            srv("d", 10, 0),
        ];
        // Draw 0: the first record whose running sum reaches 0 -> weight-0 records first.
        assert_eq!(
            names(&rfc2782_order(recs.clone(), |_| 0)),
            ["a", "b", "d", "c"]
        );
        // Draw the total: the last record of the running list.
        assert_eq!(names(&rfc2782_order(recs, |t| t)), ["a", "b", "c", "d"]);
    }

    #[test]
    fn weights_split_the_draw() {
        let recs = vec![srv("x", 0, 10), srv("y", 0, 30), srv("z", 0, 60)];
        // Running sums 10, 40, 100.
        assert_eq!(names(&rfc2782_order(recs.clone(), |_| 10)), ["x", "y", "z"]);
        let mut draws = vec![11, 0].into_iter();
        assert_eq!(
            names(&rfc2782_order(recs.clone(), |_| draws.next().unwrap_or(0))),
            ["y", "x", "z"]
        );
        let mut draws = vec![41, 0].into_iter();
        assert_eq!(
            names(&rfc2782_order(recs, |_| draws.next().unwrap_or(0))),
            ["z", "x", "y"]
        );
    }

    #[test]
    fn default_realm_from_krb5_conf() {
        let conf = "# comment\n[logging]\n default_realm = NOT.THIS\n[libdefaults]\n\
                    \tdns_lookup_kdc = true\n\tdefault_realm = EXAMPLE.COM\n[realms]\n";
        assert_eq!(default_realm(conf).as_deref(), Some("EXAMPLE.COM"));
        assert_eq!(default_realm("[libdefaults]\n rdns = false\n"), None);
        assert_eq!(default_realm(""), None);
    }

    #[test]
    fn domain_from_config_wins() {
        let dir = Directory {
            domain: "Example.COM.".into(),
            ..Directory::default()
        };
        assert_eq!(
            domain_of(&dir).unwrap(),
            ("example.com".to_string(), "directory.domain".to_string())
        );
    }

    #[test]
    fn the_draw_is_repeatable_on_one_host() {
        let recs: Vec<Srv> = (0..8).map(|i| srv(&format!("dc{i}"), 0, 100)).collect();
        let a = rfc2782_order(recs.clone(), host_draws("example.com"));
        let b = rfc2782_order(recs.clone(), host_draws("example.com"));
        assert_eq!(a, b);
        let mut sorted = names(&a);
        sorted.sort_unstable();
        assert_eq!(sorted, names(&recs));
    }

    #[test]
    fn client_site_of_a_samba_ldap_ping_reply() {
        // The Netlogon attribute Samba 4.17 returned for NtVer 6.
        let reply: &[u8] = &[
            23, 0, 0, 0, 189, 17, 0, 0, 32, 110, 53, 247, 34, 4, 10, 74, 189, 61, 131, 13, 183,
            219, 146, 63, 3, 109, 102, 97, 4, 116, 101, 115, 116, 0, 192, 24, 3, 100, 99, 49, 192,
            24, 3, 77, 70, 65, 0, 3, 68, 67, 49, 0, 0, 23, 68, 101, 102, 97, 117, 108, 116, 45, 70,
            105, 114, 115, 116, 45, 83, 105, 116, 101, 45, 78, 97, 109, 101, 0, 192, 53, 5, 0, 0,
            0, 255, 255, 255, 255,
        ];
        assert_eq!(
            client_site(reply).as_deref(),
            Some("Default-First-Site-Name")
        );
        assert_eq!(
            compressed_name(reply, 24),
            Some(("mfa.test".to_string(), 34))
        );
        assert_eq!(
            compressed_name(reply, 36),
            Some(("dc1.mfa.test".to_string(), 42))
        );
        // Truncated, a pointer loop, another opcode: nothing, no panic.
        assert_eq!(client_site(&reply[..60]), None);
        assert_eq!(client_site(&[23, 0]), None);
        let mut looped = reply.to_vec();
        looped[24] = 0xC0;
        looped[25] = 24;
        assert_eq!(client_site(&looped), None);
        let mut other = reply.to_vec();
        other[0] = 19;
        assert_eq!(client_site(&other), None);
    }

    #[test]
    fn trust_attributes() {
        assert_eq!(
            direction(Some("3".into())).as_deref(),
            Some("bidirectional")
        );
        assert_eq!(direction(Some("1".into())).as_deref(), Some("inbound"));
        assert_eq!(direction(Some("x".into())), None);
        let kind = |t: &str, a: &str| trust_kind(Some(t.into()), Some(a.into()));
        assert_eq!(kind("2", "8").as_deref(), Some("forest"));
        assert_eq!(kind("2", "4").as_deref(), Some("external"));
        assert_eq!(kind("1", "0").as_deref(), Some("external"));
        assert_eq!(kind("2", "32").as_deref(), Some("within forest"));
        assert_eq!(kind("3", "0").as_deref(), Some("realm"));
        assert_eq!(kind("2", "-2147483640").as_deref(), Some("forest"));
        assert_eq!(trust_kind(Some("x".into()), None), None);
        assert_eq!(
            dn_of_domain("emea.example.com"),
            "DC=emea,DC=example,DC=com"
        );
    }

    #[test]
    fn dns_server_addresses() {
        assert_eq!(
            dns_server_addr("10.0.0.53"),
            Some("10.0.0.53:53".parse().unwrap())
        );
        assert_eq!(
            dns_server_addr("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            dns_server_addr("[::1]:53"),
            Some("[::1]:53".parse().unwrap())
        );
        assert_eq!(dns_server_addr("dns.example.com"), None);
        assert_eq!(url_of("::1", 389), "ldap://[::1]:389");
        assert_eq!(url_of("dc1.example.com", 389), "ldap://dc1.example.com:389");
    }
}
