//! A FAKE Active Directory LDAP server, in process: ONLY for behaviours of
//! real Microsoft Active Directory that no server the tests can start here
//! (slapd, Samba AD DC) shows. Everything else is tested against the real
//! servers; do not grow this into a general LDAP server.
//!
//! What it imitates (the reason it exists):
//! * automatic range truncation (MaxValRange, default 1500): a multi-valued
//!   attribute with more values than that, asked plainly (or through `*`), comes
//!   back as `member;range=0-1499`; `member;range=1500-*` gives the next chunk,
//!   named `member;range=1500-2999`, and the last chunk `member;range=3000-*`.
//!   An explicit range option is always answered with a range-named attribute.
//! * the page cap (MaxPageSize, default 1000): a paged search gets at most
//!   that many entries per page whatever page size it asks; a search without
//!   the paged control gets that many entries, then sizeLimitExceeded (4).
//! * DirSync (1.2.840.113556.1.4.841) handing out changes in rounds of
//!   [`FakeAdData::dirsync_round`] entries with moreResults != 0 and a new
//!   cookie each round. The flags must be a signed INTEGER of at most 4 bytes
//!   (AD reads a 32-bit value): a longer one is refused with protocolError.
//! * a connection dropped, or a server that stops answering, in the middle of
//!   a search ([`FakeAdData::drop_after`], [`FakeAdData::hang_after`]).
//!
//! Also: simple bind (one configured DN/password, or anonymous), an AD-like
//! RootDSE (only the controls it implements are announced: paged results and
//! DirSync; no ASQ), base/one-level/subtree searches over an in-memory entry
//! list, unbind. Filters: and, or, not, equality, substrings, >=, <=, present
//! (values compared ASCII-case-insensitively, >=/<= numerically when both
//! sides are numbers), and AD's bitwise AND/OR matching rules (…4.803/804);
//! any other filter element is answered with unwillingToPerform (53) so a
//! test never passes by accident. Simplifications:
//! DNs are compared lower-cased with the spaces around commas removed; a base
//! exists if an entry has that DN or lies under it; DirSync returns the
//! requested attributes of a changed entry (real AD: only changed ones); a
//! change is an entry whose `usn` is above the cookie's (see
//! [`FakeAdData::touch`]). Other operations get unwillingToPerform.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use ldap3::asn1::{parse_tag, write, StructureTag, TagClass, PL};

const OID_PAGED: &str = "1.2.840.113556.1.4.319";
const OID_DIRSYNC: &str = "1.2.840.113556.1.4.841";
const DIRSYNC_COOKIE: &str = "fakead-dirsync:";
const PAGE_COOKIE: &str = "fakead-page:";

/// One directory object: DN, attributes (names as AD spells them) and the
/// update sequence number of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeEntry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
    /// Set by [`FakeAdData::add`] / [`FakeAdData::touch`].
    pub usn: u64,
}

impl FakeEntry {
    pub fn new(dn: &str) -> FakeEntry {
        FakeEntry {
            dn: dn.to_string(),
            attrs: Vec::new(),
            usn: 0,
        }
    }

    /// A user object as AD holds one (objectClass, objectCategory), named
    /// `User {i:05}` with sAMAccountName `user{i:05}`: the tests' numbered users.
    pub fn numbered_user(dn: &str, i: usize) -> FakeEntry {
        FakeEntry::new(dn)
            .with(
                "objectClass",
                &["top", "person", "organizationalPerson", "user"],
            )
            .with("objectCategory", &["person"])
            .with("name", &[format!("User {i:05}")])
            .with("sAMAccountName", &[format!("user{i:05}")])
    }

    /// Set attribute `name` to `values` (replacing it).
    pub fn with<S: AsRef<str>>(mut self, name: &str, values: &[S]) -> FakeEntry {
        let vals = values
            .iter()
            .map(|v| v.as_ref().as_bytes().to_vec())
            .collect();
        self.attrs.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.attrs.push((name.to_string(), vals));
        self
    }

    fn get(&self, name: &str) -> Option<&Vec<Vec<u8>>> {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// The fake's directory and knobs (change it while running with [`FakeAd::update`]).
#[derive(Debug, Clone)]
pub struct FakeAdData {
    /// defaultNamingContext, e.g. `DC=fake,DC=test`.
    pub base_dn: String,
    pub dns_host_name: String,
    /// dnsHostName for the connections after the first one that reads the
    /// RootDSE (empty: `dns_host_name`): a name several DCs answer for.
    pub later_dns_host_name: String,
    /// The one account a simple bind accepts (an empty DN and password: anonymous).
    pub bind_dn: String,
    pub bind_password: String,
    pub entries: Vec<FakeEntry>,
    /// MaxPageSize (AD default 1000).
    pub max_page_size: usize,
    /// MaxValRange (AD default 1500).
    pub max_value_range: usize,
    /// Entries per DirSync round (0: all in one round).
    pub dirsync_round: usize,
    /// Close the connection once this many entries went out on it (searches
    /// other than the RootDSE; counted over all searches of the connection).
    pub drop_after: Option<usize>,
    /// Stop answering (connection left open) once this many entries went out.
    pub hang_after: Option<usize>,
}

impl FakeAdData {
    /// A directory holding only the domain head `base_dn`.
    pub fn new(base_dn: &str, bind_dn: &str, bind_password: &str) -> FakeAdData {
        let mut d = FakeAdData {
            base_dn: base_dn.to_string(),
            dns_host_name: "dc1.fake.test".into(),
            later_dns_host_name: String::new(),
            bind_dn: bind_dn.to_string(),
            bind_password: bind_password.to_string(),
            entries: Vec::new(),
            max_page_size: 1000,
            max_value_range: 1500,
            dirsync_round: 0,
            drop_after: None,
            hang_after: None,
        };
        let name = base_dn
            .split(',')
            .next()
            .and_then(|r| r.split_once('='))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        d.add(
            FakeEntry::new(base_dn)
                .with("objectClass", &["top", "domain", "domainDNS"])
                .with("name", &[name]),
        );
        d
    }

    /// Add an entry; it gets the next USN (a change DirSync reports).
    pub fn add(&mut self, mut e: FakeEntry) {
        e.usn = self.highest_usn() + 1;
        self.entries.push(e);
    }

    /// Mark the entry `dn` changed (next USN); false when there is none.
    pub fn touch(&mut self, dn: &str) -> bool {
        let usn = self.highest_usn() + 1;
        match self.entries.iter_mut().find(|e| norm(&e.dn) == norm(dn)) {
            Some(e) => {
                e.usn = usn;
                true
            }
            None => false,
        }
    }

    pub fn highest_usn(&self) -> u64 {
        self.entries.iter().map(|e| e.usn).max().unwrap_or(0)
    }

    fn rootdse(&self, later: bool) -> FakeEntry {
        let host = match later && !self.later_dns_host_name.is_empty() {
            true => &self.later_dns_host_name,
            false => &self.dns_host_name,
        };
        let b = &self.base_dn;
        let config = format!("CN=Configuration,{b}");
        let ntds = format!(
            "CN=NTDS Settings,CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,{config}"
        );
        FakeEntry::new("")
            .with("currentTime", &["20260101000000.0Z"])
            .with("dsServiceName", &[ntds])
            .with(
                "namingContexts",
                &[b.clone(), config.clone(), format!("CN=Schema,{config}")],
            )
            .with("defaultNamingContext", &[b])
            .with("rootDomainNamingContext", &[b])
            .with("configurationNamingContext", &[&config])
            .with("schemaNamingContext", &[format!("CN=Schema,{config}")])
            .with("supportedControl", &[OID_PAGED, OID_DIRSYNC])
            .with("supportedLDAPVersion", &["3", "2"])
            .with(
                "supportedLDAPPolicies",
                &[
                    format!("MaxPageSize={}", self.max_page_size),
                    format!("MaxValRange={}", self.max_value_range),
                ],
            )
            .with("highestCommittedUSN", &[self.highest_usn().to_string()])
            .with("supportedSASLMechanisms", &["GSSAPI", "GSS-SPNEGO"])
            .with("dnsHostName", &[host])
            .with("isSynchronized", &["TRUE"])
            .with("isGlobalCatalogReady", &["TRUE"])
            .with("domainFunctionality", &["7"])
            .with("forestFunctionality", &["7"])
            .with("domainControllerFunctionality", &["7"])
            .with(
                "supportedCapabilities",
                &[
                    "1.2.840.113556.1.4.800",
                    "1.2.840.113556.1.4.1670",
                    "1.2.840.113556.1.4.1791",
                    "1.2.840.113556.1.4.1935",
                    "1.2.840.113556.1.4.2080",
                    "1.2.840.113556.1.4.2237",
                ],
            )
    }
}

/// A search the fake received (for assertions on what the client asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSearch {
    pub base: String,
    /// 0 base, 1 one level, 2 subtree.
    pub scope: i64,
    pub attrs: Vec<String>,
    /// The paged results control's size, when sent.
    pub page_size: Option<i64>,
    /// The DirSync control's (flags as the signed INTEGER sent, cookie), when sent.
    pub dirsync: Option<(i64, Vec<u8>)>,
    /// Entries sent for it.
    pub entries_sent: usize,
    /// The connection it came on (1, 2, … in the order they were accepted).
    pub connection: usize,
    pub result_code: Option<i64>,
}

struct Shared {
    /// Connections accepted, and connections that read the RootDSE.
    accepted: std::sync::atomic::AtomicUsize,
    rootdse_readers: std::sync::atomic::AtomicUsize,
    data: Mutex<FakeAdData>,
    log: Mutex<Vec<FakeSearch>>,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running fake (stopped on drop).
pub struct FakeAd {
    /// `ldap://127.0.0.1:PORT`
    pub url: String,
    addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeAd {
    /// Listen on a free loopback port; one thread per connection.
    pub fn start(data: FakeAdData) -> FakeAd {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("testkit fake AD: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("testkit fake AD: local_addr: {e}"))
            .to_string();
        let shared = Arc::new(Shared {
            accepted: Default::default(),
            rootdse_readers: Default::default(),
            data: Mutex::new(data),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let s2 = s.clone();
                let t = std::thread::spawn(move || Conn::new(stream, s2).run());
                let mut threads = lock(&s.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(t);
            }
        });
        FakeAd {
            url: format!("ldap://{addr}"),
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Change the directory or the knobs while running (affects new requests).
    pub fn update(&self, f: impl FnOnce(&mut FakeAdData)) {
        f(&mut lock(&self.shared.data));
    }

    /// The searches received so far (RootDSE reads included).
    pub fn searches(&self) -> Vec<FakeSearch> {
        lock(&self.shared.log).clone()
    }

    pub fn clear_searches(&self) {
        lock(&self.shared.log).clear();
    }

    /// Forget the connections that read the RootDSE so far: the next one is
    /// "the first" again (`later_dns_host_name`).
    pub fn forget_rootdse_readers(&self) {
        self.shared.rootdse_readers.store(0, Ordering::SeqCst);
    }
}

impl Drop for FakeAd {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wake the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

// ---- BER helpers (ldap3::asn1, i.e. the lber crate) ----

fn prim(class: TagClass, id: u64, v: Vec<u8>) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::P(v),
    }
}

fn cons(class: TagClass, id: u64, v: Vec<StructureTag>) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::C(v),
    }
}

fn octets(v: impl Into<Vec<u8>>) -> StructureTag {
    prim(TagClass::Universal, 4, v.into())
}

fn seq(v: Vec<StructureTag>) -> StructureTag {
    cons(TagClass::Universal, 16, v)
}

/// Minimal two's complement content octets of `v`.
fn int_bytes(v: i64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((b[start] == 0 && b[start + 1] & 0x80 == 0)
            || (b[start] == 0xff && b[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    b[start..].to_vec()
}

fn int(v: i64) -> StructureTag {
    prim(TagClass::Universal, 2, int_bytes(v))
}

fn enumerated(v: i64) -> StructureTag {
    prim(TagClass::Universal, 10, int_bytes(v))
}

/// A signed INTEGER's value; `None` when empty or longer than 8 bytes.
fn decode_int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 8 {
        return None;
    }
    let mut v: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
    for x in b {
        v = (v << 8) | i64::from(*x);
    }
    Some(v)
}

fn encode(tag: StructureTag) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    // Encoding into a growable buffer cannot fail.
    let _ = write::encode_into(&mut buf, tag);
    buf.to_vec()
}

fn primitive(t: &StructureTag) -> Option<&[u8]> {
    match &t.payload {
        PL::P(v) => Some(v),
        PL::C(_) => None,
    }
}

fn children(t: &StructureTag) -> &[StructureTag] {
    match &t.payload {
        PL::C(v) => v,
        PL::P(_) => &[],
    }
}

fn text(t: &StructureTag) -> String {
    String::from_utf8_lossy(primitive(t).unwrap_or_default()).into_owned()
}

// ---- DNs, filters, attribute selection ----

fn norm(dn: &str) -> String {
    dn.split(',')
        .map(|r| r.trim().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

fn in_scope(dn: &str, base: &str, scope: i64) -> bool {
    let (dn, base) = (norm(dn), norm(base));
    let under = base.is_empty() || dn.ends_with(&format!(",{base}"));
    match scope {
        0 => dn == base,
        1 => under && dn.split_once(',').map(|(_, p)| p) == Some(base.as_str()),
        _ => dn == base || under,
    }
}

/// Whether `e` matches the filter; `Err` for filter elements the fake does not know.
fn matches(e: &FakeEntry, f: &StructureTag) -> Result<bool, String> {
    if f.class != TagClass::Context {
        return Err("not a filter".into());
    }
    let kids = children(f);
    let ava = || -> Option<(String, String)> {
        Some((text(kids.first()?), text(kids.get(1)?).to_ascii_lowercase()))
    };
    let values = |attr: &str| -> Vec<String> {
        e.get(attr)
            .map(|vs| {
                vs.iter()
                    .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default()
    };
    let compare = |ge: bool| -> Result<bool, String> {
        let (a, want) = ava().ok_or("malformed comparison")?;
        Ok(values(&a).iter().any(|v| {
            let ord = match (v.parse::<i128>(), want.parse::<i128>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => v.as_str().cmp(want.as_str()),
            };
            if ge {
                ord.is_ge()
            } else {
                ord.is_le()
            }
        }))
    };
    match f.id {
        0 => {
            for k in kids {
                if !matches(e, k)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        1 => {
            for k in kids {
                if matches(e, k)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        2 => Ok(!matches(e, kids.first().ok_or("empty not")?)?),
        3 => {
            let (a, want) = ava().ok_or("malformed equality")?;
            Ok(values(&a).contains(&want))
        }
        4 => {
            let attr = kids.first().map(text).ok_or("malformed substrings")?;
            let parts: Vec<(u64, String)> = kids
                .get(1)
                .map(children)
                .unwrap_or_default()
                .iter()
                .map(|p| (p.id, text(p).to_ascii_lowercase()))
                .collect();
            Ok(values(&attr).iter().any(|v| {
                let mut rest = v.as_str();
                for (kind, s) in &parts {
                    match kind {
                        0 => match rest.strip_prefix(s.as_str()) {
                            Some(r) => rest = r,
                            None => return false,
                        },
                        1 => match rest.find(s.as_str()) {
                            Some(i) => rest = &rest[i + s.len()..],
                            None => return false,
                        },
                        _ => return rest.ends_with(s.as_str()),
                    }
                }
                true
            }))
        }
        5 => compare(true),
        6 => compare(false),
        7 => Ok(e.get(&text(f)).is_some()),
        // extensible match: only AD's bitwise AND / OR rules on an attribute
        9 => {
            let part = |id: u64| kids.iter().find(|k| k.id == id).map(text);
            let (rule, attr, want) = (part(1), part(2), part(3));
            let (Some(rule), Some(attr), Some(want)) = (rule, attr, want) else {
                return Err("extensible match without rule, type or value".into());
            };
            let want: i64 = want.parse().map_err(|_| "bitwise value is not a number")?;
            let or = match rule.as_str() {
                "1.2.840.113556.1.4.803" => false,
                "1.2.840.113556.1.4.804" => true,
                r => return Err(format!("matching rule {r} is not supported by the fake")),
            };
            Ok(values(&attr)
                .iter()
                .filter_map(|v| v.parse::<i64>().ok())
                .any(|v| {
                    // AD compares the 32-bit values
                    let (v, w) = (v & 0xffff_ffff, want & 0xffff_ffff);
                    if or {
                        v & w != 0
                    } else {
                        v & w == w
                    }
                }))
        }
        other => Err(format!(
            "filter element [{other}] is not supported by the fake"
        )),
    }
}

/// `member;range=1500-*` -> ("member", Some((1500, None))).
fn parse_request(a: &str) -> (&str, Option<(usize, Option<usize>)>) {
    let mut parts = a.split(';');
    let name = parts.next().unwrap_or_default();
    let range = parts.find_map(|o| {
        let spec = o.to_ascii_lowercase();
        let (lo, hi) = spec.strip_prefix("range=")?.split_once('-')?;
        let lo = lo.parse().ok()?;
        let hi = if hi == "*" {
            None
        } else {
            Some(hi.parse().ok()?)
        };
        Some((lo, hi))
    });
    (name, range)
}

/// The attributes of `e` to return for the requested list, with AD's range
/// rules (see the module documentation).
fn select(e: &FakeEntry, requested: &[String], max_range: usize) -> Vec<(String, Vec<Vec<u8>>)> {
    let all = requested.is_empty() || requested.iter().any(|a| a == "*");
    let max_range = max_range.max(1);
    let mut out = Vec::new();
    for (name, vals) in &e.attrs {
        let asked = requested
            .iter()
            .map(|r| parse_request(r))
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        let range = match asked {
            Some((_, r)) => r,
            None if all => None,
            None => continue,
        };
        let n = vals.len();
        if range.is_none() && n <= max_range {
            out.push((name.clone(), vals.clone()));
            continue;
        }
        let (lo, hi) = range.unwrap_or((0, None));
        if lo >= n || hi.is_some_and(|h| h < lo) {
            continue;
        }
        let end = hi.unwrap_or(usize::MAX).min(lo + max_range - 1).min(n - 1);
        let label = if end == n - 1 {
            "*".to_string()
        } else {
            end.to_string()
        };
        out.push((
            format!("{name};range={lo}-{label}"),
            vals[lo..=end].to_vec(),
        ));
    }
    out
}

// ---- one connection ----

enum Next {
    Continue,
    Close,
    Hang,
}

struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
    /// Its number in accept order (from 1).
    number: usize,
    /// Its order among the connections that read the RootDSE (from 1; 0: not yet).
    rootdse_order: usize,
    /// Entries sent on this connection (searches other than the RootDSE).
    sent: usize,
}

/// A search's outcome before it is sent.
struct Answer {
    entries: Vec<StructureTag>,
    rc: i64,
    text: String,
    controls: Vec<StructureTag>,
}

impl Answer {
    fn error(rc: i64, text: &str) -> Answer {
        Answer {
            entries: Vec::new(),
            rc,
            text: format!("fake AD: {text}"),
            controls: Vec::new(),
        }
    }
}

fn control(oid: &str, value: Vec<u8>) -> StructureTag {
    seq(vec![octets(oid), octets(value)])
}

fn result_op(app_id: u64, rc: i64, text: &str) -> StructureTag {
    cons(
        TagClass::Application,
        app_id,
        vec![enumerated(rc), octets(""), octets(text)],
    )
}

impl Conn {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> Conn {
        let number = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        Conn {
            stream,
            shared,
            number,
            rootdse_order: 0,
            sent: 0,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    fn run(mut self) {
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match parse_tag(&buf) {
                Ok((rest, msg)) => {
                    let used = buf.len() - rest.len();
                    buf.drain(..used);
                    match self.handle(&msg) {
                        Next::Continue => continue,
                        Next::Close => break,
                        Next::Hang => {
                            while !self.stopping() {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            break;
                        }
                    }
                }
                Err(e) if !e.is_incomplete() => break,
                Err(_) => {}
            }
            if self.stopping() {
                break;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn send(&mut self, id: i64, op: StructureTag, controls: Vec<StructureTag>) -> bool {
        let mut parts = vec![int(id), op];
        if !controls.is_empty() {
            parts.push(cons(TagClass::Context, 0, controls));
        }
        self.stream.write_all(&encode(seq(parts))).is_ok()
    }

    fn handle(&mut self, msg: &StructureTag) -> Next {
        let parts = children(msg);
        let (Some(id), Some(op)) = (
            parts.first().and_then(primitive).and_then(decode_int),
            parts.get(1),
        ) else {
            return Next::Close;
        };
        let controls: Vec<(String, bool, Option<Vec<u8>>)> = parts
            .get(2)
            .filter(|c| c.class == TagClass::Context && c.id == 0)
            .map(children)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let k = children(c);
                let oid = k.first().map(text).unwrap_or_default();
                let crit = k
                    .iter()
                    .any(|t| t.id == 1 && primitive(t).is_some_and(|v| v.iter().any(|b| *b != 0)));
                let val = k
                    .iter()
                    .skip(1)
                    .find(|t| t.id == 4)
                    .and_then(primitive)
                    .map(<[u8]>::to_vec);
                (oid, crit, val)
            })
            .collect();
        let ok = match op.id {
            0 => {
                let k = children(op);
                let dn = k.get(1).map(text).unwrap_or_default();
                let (rc, msg) = match k.get(2) {
                    Some(a) if a.class == TagClass::Context && a.id == 0 => {
                        let pw = text(a);
                        let d = lock(&self.shared.data);
                        if (dn.is_empty() && pw.is_empty())
                            || (norm(&dn) == norm(&d.bind_dn) && pw == d.bind_password)
                        {
                            (0, String::new())
                        } else {
                            (49, "80090308: LdapErr: DSID-0C09056B, comment: AcceptSecurityContext error, data 52e, v4f7c".to_string())
                        }
                    }
                    _ => (7, "fake AD: only simple binds".to_string()),
                };
                self.send(id, result_op(1, rc, &msg), Vec::new())
            }
            2 => return Next::Close,
            3 => return self.search(id, op, &controls),
            16 => true, // abandon: nothing to answer
            6 | 8 | 10 | 12 | 14 | 23 => {
                let resp = if op.id == 23 { 24 } else { op.id + 1 };
                self.send(
                    id,
                    result_op(resp, 53, "fake AD: operation not supported"),
                    Vec::new(),
                )
            }
            _ => return Next::Close,
        };
        if ok {
            Next::Continue
        } else {
            Next::Close
        }
    }

    fn search(
        &mut self,
        id: i64,
        op: &StructureTag,
        controls: &[(String, bool, Option<Vec<u8>>)],
    ) -> Next {
        let k = children(op);
        let base = k.first().map(text).unwrap_or_default();
        let scope = k
            .get(1)
            .and_then(primitive)
            .and_then(decode_int)
            .unwrap_or(2);
        let size_limit = k
            .get(3)
            .and_then(primitive)
            .and_then(decode_int)
            .unwrap_or(0);
        let attrs: Vec<String> = k
            .get(7)
            .map(children)
            .unwrap_or_default()
            .iter()
            .map(text)
            .collect();
        let control = |oid: &str| controls.iter().find(|c| c.0 == oid);
        let page_req = control(OID_PAGED).and_then(|c| {
            let v = parse_tag(c.2.as_deref()?).ok()?.1;
            let p = children(&v);
            Some((
                p.first().and_then(primitive).and_then(decode_int)?,
                p.get(1).and_then(primitive)?.to_vec(),
            ))
        });
        // (flags content octets, cookie)
        let dirsync_req = control(OID_DIRSYNC).map(|c| {
            c.2.as_deref()
                .and_then(|v| parse_tag(v).ok())
                .and_then(|(_, v)| {
                    let p = children(&v);
                    Some((
                        p.first().and_then(primitive)?.to_vec(),
                        p.get(2).and_then(primitive)?.to_vec(),
                    ))
                })
        });
        let rootdse = base.is_empty() && scope == 0;
        let mut log = FakeSearch {
            base: base.clone(),
            scope,
            attrs: attrs.clone(),
            page_size: page_req.as_ref().map(|p| p.0),
            dirsync: dirsync_req
                .clone()
                .flatten()
                .map(|(f, c)| (decode_int(&f).unwrap_or(i64::MIN), c)),
            entries_sent: 0,
            result_code: None,
            connection: self.number,
        };
        if rootdse && self.rootdse_order == 0 {
            self.rootdse_order = self.shared.rootdse_readers.fetch_add(1, Ordering::SeqCst) + 1;
        }
        let answer = {
            let d = lock(&self.shared.data);
            let unknown_critical = controls
                .iter()
                .find(|c| c.1 && c.0 != OID_PAGED && c.0 != OID_DIRSYNC);
            if let Some(c) = unknown_critical {
                Answer::error(12, &format!("critical control {} not supported", c.0))
            } else if rootdse {
                let e = d.rootdse(self.rootdse_order > 1);
                Answer {
                    entries: vec![entry_op(&e, &attrs, d.max_value_range)],
                    rc: 0,
                    text: String::new(),
                    controls: Vec::new(),
                }
            } else {
                answer(
                    &d,
                    &base,
                    scope,
                    size_limit,
                    k.get(6),
                    &attrs,
                    page_req,
                    dirsync_req,
                )
            }
        };
        let mut next = None;
        for entry in answer.entries {
            if !rootdse {
                next = self.interrupt();
                if next.is_some() {
                    break;
                }
                self.sent += 1;
            }
            log.entries_sent += 1;
            if !self.send(id, entry, Vec::new()) {
                next = Some(Next::Close);
                break;
            }
        }
        if next.is_none() && !rootdse {
            next = self.interrupt();
        }
        if next.is_none() {
            // logged before the client can see the result (tests read the log right after)
            log.result_code = Some(answer.rc);
            lock(&self.shared.log).push(log);
            if !self.send(id, result_op(5, answer.rc, &answer.text), answer.controls) {
                return Next::Close;
            }
            return Next::Continue;
        }
        lock(&self.shared.log).push(log);
        next.unwrap_or(Next::Continue)
    }

    /// Whether the drop/hang knobs stop this connection now.
    fn interrupt(&mut self) -> Option<Next> {
        let d = lock(&self.shared.data);
        if d.drop_after.is_some_and(|k| self.sent >= k) {
            return Some(Next::Close); // `run` closes the socket (after the log entry)
        }
        if d.hang_after.is_some_and(|k| self.sent >= k) {
            return Some(Next::Hang);
        }
        None
    }
}

/// A SearchResultEntry protocol op for `e` with the attributes `requested`.
fn entry_op(e: &FakeEntry, requested: &[String], max_range: usize) -> StructureTag {
    let attrs = select(e, requested, max_range)
        .into_iter()
        .map(|(name, vals)| {
            seq(vec![
                octets(name),
                cons(
                    TagClass::Universal,
                    17,
                    vals.into_iter().map(octets).collect(),
                ),
            ])
        })
        .collect();
    cons(
        TagClass::Application,
        4,
        vec![octets(e.dn.as_str()), seq(attrs)],
    )
}

/// What a search (not of the RootDSE) returns: paged, DirSync or plain.
#[allow(clippy::too_many_arguments)]
fn answer(
    d: &FakeAdData,
    base: &str,
    scope: i64,
    size_limit: i64,
    filter: Option<&StructureTag>,
    attrs: &[String],
    paged: Option<(i64, Vec<u8>)>,
    dirsync: Option<Option<(Vec<u8>, Vec<u8>)>>,
) -> Answer {
    let Some(filter) = filter else {
        return Answer::error(2, "search request without a filter");
    };
    if !d.entries.iter().any(|e| in_scope(&e.dn, base, 2)) {
        return Answer::error(32, &format!("no such object {base:?}"));
    }
    let mut found = Vec::new();
    for e in d.entries.iter().filter(|e| in_scope(&e.dn, base, scope)) {
        match matches(e, filter) {
            Ok(true) => found.push(e),
            Ok(false) => {}
            Err(m) => return Answer::error(53, &m),
        }
    }
    let ops = |list: &[&FakeEntry]| -> Vec<StructureTag> {
        list.iter()
            .map(|e| entry_op(e, attrs, d.max_value_range))
            .collect()
    };
    if let Some(ds) = dirsync {
        let Some((flags, cookie)) = ds else {
            return Answer::error(2, "malformed DirSync control value");
        };
        // AD reads the flags as a 32-bit value: a longer INTEGER is refused.
        if flags.is_empty() || flags.len() > 4 {
            return Answer::error(
                2,
                &format!(
                    "DirSync flags must be a signed INTEGER of at most 4 bytes, got {} bytes",
                    flags.len()
                ),
            );
        }
        if norm(base) != norm(&d.base_dn) {
            return Answer::error(53, "DirSync searches must start at the naming context head");
        }
        let since = if cookie.is_empty() {
            0
        } else {
            match String::from_utf8_lossy(&cookie)
                .strip_prefix(DIRSYNC_COOKIE)
                .and_then(|u| u.parse::<u64>().ok())
            {
                Some(u) => u,
                None => return Answer::error(53, "invalid DirSync cookie"),
            }
        };
        found.retain(|e| e.usn > since);
        found.sort_by_key(|e| e.usn);
        let round = if d.dirsync_round == 0 {
            found.len()
        } else {
            d.dirsync_round.min(found.len())
        };
        let more = round < found.len();
        let upto = match (more, found[..round].last()) {
            (true, Some(e)) => e.usn,
            _ => d.highest_usn().max(since),
        };
        let value = encode(seq(vec![
            int(i64::from(more)),
            int(0),
            octets(format!("{DIRSYNC_COOKIE}{upto}")),
        ]));
        return Answer {
            entries: ops(&found[..round]),
            rc: 0,
            text: String::new(),
            controls: vec![control(OID_DIRSYNC, value)],
        };
    }
    if let Some((size, cookie)) = paged {
        let offset = if cookie.is_empty() {
            0
        } else {
            match String::from_utf8_lossy(&cookie)
                .strip_prefix(PAGE_COOKIE)
                .and_then(|u| u.parse::<usize>().ok())
            {
                Some(o) => o,
                None => return Answer::error(53, "invalid paged results cookie"),
            }
        };
        let size = usize::try_from(size)
            .unwrap_or(0)
            .min(d.max_page_size.max(1));
        let end = (offset + size).min(found.len());
        let page = found.get(offset..end).unwrap_or_default();
        let next = if size > 0 && end < found.len() {
            format!("{PAGE_COOKIE}{end}").into_bytes()
        } else {
            Vec::new()
        };
        return Answer {
            entries: ops(page),
            rc: 0,
            text: String::new(),
            controls: vec![control(OID_PAGED, encode(seq(vec![int(0), octets(next)])))],
        };
    }
    let mut limit = d.max_page_size.max(1);
    if size_limit > 0 {
        limit = limit.min(usize::try_from(size_limit).unwrap_or(usize::MAX));
    }
    if found.len() > limit {
        let mut a = Answer::error(4, "size limit exceeded");
        a.entries = ops(&found[..limit]);
        return a;
    }
    Answer {
        entries: ops(&found),
        rc: 0,
        text: String::new(),
        controls: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip() {
        for v in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            -1,
            -128,
            -129,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
        ] {
            assert_eq!(decode_int(&int_bytes(v)), Some(v), "{v}");
        }
        assert_eq!(
            int_bytes(i64::from(0x8000_0000u32 as i32)),
            vec![0x80, 0, 0, 0]
        );
        assert_eq!(int_bytes(128), vec![0x00, 0x80]);
        assert_eq!(decode_int(&[]), None);
    }

    fn group(n: usize) -> FakeEntry {
        let members: Vec<String> = (0..n).map(|i| format!("CN=u{i},DC=x")).collect();
        FakeEntry::new("CN=g,DC=x")
            .with("member", &members)
            .with("cn", &["g"])
    }

    fn names(v: &[(String, Vec<Vec<u8>>)]) -> Vec<(String, usize)> {
        v.iter().map(|(n, vals)| (n.clone(), vals.len())).collect()
    }

    #[test]
    fn range_truncation_like_active_directory() {
        let g = group(3200);
        let s = |req: &[&str]| {
            let req: Vec<String> = req.iter().map(|r| r.to_string()).collect();
            names(&select(&g, &req, 1500))
        };
        assert_eq!(s(&["member"]), vec![("member;range=0-1499".into(), 1500)]);
        assert_eq!(
            s(&["member;range=0-*"]),
            vec![("member;range=0-1499".into(), 1500)]
        );
        assert_eq!(
            s(&["Member;Range=1500-*"]),
            vec![("member;range=1500-2999".into(), 1500)]
        );
        assert_eq!(
            s(&["member;range=3000-*"]),
            vec![("member;range=3000-*".into(), 200)]
        );
        assert_eq!(
            s(&["member;range=100-199"]),
            vec![("member;range=100-199".into(), 100)]
        );
        assert_eq!(
            s(&["member;range=3100-3199"]),
            vec![("member;range=3100-*".into(), 100)]
        );
        assert_eq!(s(&["member;range=3200-*"]), vec![]);
        assert_eq!(
            s(&["*"]),
            vec![("member;range=0-1499".into(), 1500), ("cn".into(), 1)]
        );
        assert_eq!(s(&["cn"]), vec![("cn".into(), 1)]);
        assert_eq!(s(&["1.1"]), vec![]);
        let small = group(3);
        assert_eq!(
            names(&select(&small, &["member".into()], 1500)),
            vec![("member".into(), 3)]
        );
        assert_eq!(
            names(&select(&small, &["member;range=0-*".into()], 1500)),
            vec![("member;range=0-*".into(), 3)]
        );
    }

    #[test]
    fn dirsync_flags_longer_than_four_bytes_are_refused() {
        let d = FakeAdData::new("DC=x", "CN=a,DC=x", "pw");
        let present = prim(TagClass::Context, 7, b"objectClass".to_vec());
        let ask = |flags: Vec<u8>| {
            answer(
                &d,
                "DC=x",
                2,
                0,
                Some(&present),
                &[],
                None,
                Some(Some((flags, Vec::new()))),
            )
        };
        // 0x80000000 as AD reads it (a 32-bit value) is accepted ...
        let ok = ask(vec![0x80, 0, 0, 0]);
        assert_eq!((ok.rc, ok.entries.len(), ok.controls.len()), (0, 1, 1));
        // ... its 5-byte positive INTEGER form is not
        assert_eq!(ask(vec![0x00, 0x80, 0, 0, 0]).rc, 2);
    }

    #[test]
    fn scopes_and_filters() {
        assert!(in_scope("CN=a, OU=b,DC=x", "ou=B,dc=x", 1));
        assert!(!in_scope("CN=a,CN=c,OU=b,DC=x", "ou=b,dc=x", 1));
        assert!(in_scope("CN=a,CN=c,OU=b,DC=x", "ou=b,dc=x", 2));
        assert!(!in_scope("CN=a,OU=bb,DC=x", "ou=b,dc=x", 2));
        let e = FakeEntry::new("CN=a,DC=x")
            .with("objectClass", &["top", "user"])
            .with("sAMAccountName", &["Alice"])
            .with("uSNChanged", &["120"]);
        let f = |t: StructureTag| matches(&e, &t);
        let ctx = |id, v| cons(TagClass::Context, id, v);
        let eq = |a: &str, v: &str| ctx(3, vec![octets(a), octets(v)]);
        assert_eq!(f(eq("objectclass", "USER")), Ok(true));
        assert_eq!(
            f(ctx(
                0,
                vec![eq("objectClass", "user"), eq("isDeleted", "TRUE")]
            )),
            Ok(false)
        );
        assert_eq!(
            f(ctx(
                1,
                vec![eq("objectClass", "user"), eq("isDeleted", "TRUE")]
            )),
            Ok(true)
        );
        assert_eq!(f(ctx(2, vec![eq("isDeleted", "TRUE")])), Ok(true));
        assert_eq!(
            f(prim(TagClass::Context, 7, b"samaccountname".to_vec())),
            Ok(true)
        );
        assert_eq!(
            f(ctx(5, vec![octets("uSNChanged"), octets("99")])),
            Ok(true)
        );
        assert_eq!(
            f(ctx(6, vec![octets("uSNChanged"), octets("99")])),
            Ok(false)
        );
        let sub = |parts: Vec<StructureTag>| ctx(4, vec![octets("sAMAccountName"), seq(parts)]);
        assert_eq!(
            f(sub(vec![prim(TagClass::Context, 0, b"al".to_vec())])),
            Ok(true)
        );
        assert_eq!(
            f(sub(vec![
                prim(TagClass::Context, 1, b"lic".to_vec()),
                prim(TagClass::Context, 2, b"e".to_vec())
            ])),
            Ok(true)
        );
        assert_eq!(
            f(sub(vec![prim(TagClass::Context, 0, b"b".to_vec())])),
            Ok(false)
        );
        assert!(f(ctx(9, vec![])).is_err());
        let g = FakeEntry::new("CN=g,DC=x").with("groupType", &["-2147483646"]);
        let bits = |rule: &str, v: &str| {
            let t = ctx(
                9,
                vec![
                    prim(TagClass::Context, 1, rule.as_bytes().to_vec()),
                    prim(TagClass::Context, 2, b"groupType".to_vec()),
                    prim(TagClass::Context, 3, v.as_bytes().to_vec()),
                ],
            );
            matches(&g, &t)
        };
        assert_eq!(bits("1.2.840.113556.1.4.804", "-2147483648"), Ok(true));
        assert_eq!(bits("1.2.840.113556.1.4.803", "2147483650"), Ok(true));
        assert_eq!(bits("1.2.840.113556.1.4.803", "4"), Ok(false));
        assert!(bits("1.2.840.113556.1.4.1941", "x").is_err());
    }
}
