//! Searches: paged, or in batches under the size limit when paging is not
//! available; reads of one entry, range retrieval and Attribute Scoped Queries.

use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapResult, SearchOptions};
use mfasync_core::escape::filter_value;
use mfasync_core::Entry;

use crate::client::{Client, Scope};
use crate::error::LdapError;
use crate::proto::{
    asq_control, paged_control, paged_cookie, parse_entry, parse_intermediate, parse_range, Vendor,
    OID_PAGED,
};
use crate::results::{map_err_on, op_error};

/// The DNs a search has delivered, compared case-insensitively, kept as
/// hashes rather than copies (`StrSet`). A paged search delivers each entry
/// once: while it runs (`defer`), past [`SEEN_IN_MEMORY`] DNs the hashes only go
/// to a temporary file, 16 bytes each and no memory, and are read into the
/// set (`undefer`) only if the server cuts it short and the rest comes in
/// batches, which overlap.
#[derive(Default)]
struct SeenDns {
    set: mfasync_core::hashset::StrSet,
    /// In a paged search: DNs past this many go to a file.
    paged: Option<usize>,
    deferred: Option<Deferred>,
    /// The lower-cased DN being looked at (reused).
    key: String,
}

/// DNs a paged search keeps in memory before the rest go to a file (most
/// searches are small: no file for them); `Client::set_seen_in_memory`.
pub(crate) const SEEN_IN_MEMORY: usize = 4096;

/// The hashes written while a paged search runs.
struct Deferred {
    file: std::io::BufWriter<std::fs::File>,
    count: usize,
    /// The first failed write: the set cannot be made whole again.
    failed: Option<std::io::Error>,
}

impl SeenDns {
    /// Whether `dn` is new (and now seen). Deferred: always new.
    fn insert(&mut self, dn: &str) -> bool {
        self.key.clear();
        if dn.is_ascii() {
            self.key.push_str(dn);
            self.key.make_ascii_lowercase();
        } else {
            self.key.push_str(&dn.to_lowercase());
        }
        let hashes = self.set.hashes(&self.key);
        if self.deferred.is_none() && self.paged.is_some_and(|n| self.set.len() >= n) {
            self.deferred = tempfile::tempfile().ok().map(|f| Deferred {
                file: std::io::BufWriter::new(f),
                count: 0,
                failed: None,
            });
            if self.deferred.is_none() {
                // no file: in memory, as before, without asking again
                self.paged = None;
            }
        }
        match &mut self.deferred {
            Some(d) => {
                use std::io::Write;
                if d.failed.is_none() {
                    d.failed = [hashes.0, hashes.1]
                        .iter()
                        .try_for_each(|h| d.file.write_all(&h.to_le_bytes()))
                        .err();
                }
                d.count += 1;
                true
            }
            None => self.set.insert_hashes(hashes),
        }
    }

    /// A paged search starts: past `in_memory` DNs, keep the hashes in a
    /// temporary file (when one can be made; else in memory, as before).
    fn defer(&mut self, in_memory: usize) {
        self.paged = Some(in_memory);
    }

    /// Read the deferred hashes into the set: the DNs delivered so far.
    fn undefer(&mut self) -> std::io::Result<()> {
        use std::io::{Read, Seek};
        self.paged = None;
        let Some(d) = self.deferred.take() else {
            return Ok(());
        };
        if let Some(e) = d.failed {
            return Err(e);
        }
        let mut file = d.file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        let mut r = std::io::BufReader::new(file);
        let mut word = || -> std::io::Result<u64> {
            let mut bytes = [0u8; 8];
            r.read_exact(&mut bytes)?;
            Ok(u64::from_le_bytes(bytes))
        };
        for _ in 0..d.count {
            let hash = word()?;
            self.set.insert_hashes((hash, word()?));
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.set.len() + self.deferred.as_ref().map_or(0, |d| d.count)
    }
}

type Sink<'a> = &'a mut (dyn FnMut(Entry) + Send);

/// What a search delivers besides its final result.
pub(crate) enum Item {
    Entry(Entry, Vec<ldap3::controls::Control>),
    /// IntermediateResponse: (responseName, responseValue).
    Intermediate(Option<String>, Option<Vec<u8>>),
}

/// One search request as sent: base, scope, filter, attributes, controls,
/// and how many entries it may return.
pub(crate) struct Request<'a> {
    pub(crate) base: &'a str,
    pub(crate) scope: Scope,
    pub(crate) filter: &'a str,
    pub(crate) attrs: &'a [String],
    pub(crate) controls: Vec<RawControl>,
    pub(crate) limit: Limit,
}

/// One search request; entries go to `on_entry`, continuation references and
/// intermediate messages are skipped. Returns the final result (whatever its
/// code) for the caller to judge.
pub(crate) async fn run_search(
    ldap: &mut Ldap,
    server: &str,
    timeout: Duration,
    req: Request<'_>,
    on_entry: Sink<'_>,
) -> Result<LdapResult, LdapError> {
    run_search_raw(ldap, server, timeout, req, &mut |item| {
        if let Item::Entry(e, _) = item {
            on_entry(e);
        }
        Ok(())
    })
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
pub(crate) struct Limit {
    /// Sent as the search's size limit (0: none).
    sizelimit: i32,
    /// Entries accepted (None: no bound).
    at_most: Option<usize>,
    /// What the bound is, for the error.
    what: &'static str,
}

impl Limit {
    /// No bound (DirSync and syncrepl rounds: as many as changed).
    pub(crate) const NONE: Limit = Limit {
        sizelimit: 0,
        at_most: None,
        what: "",
    };
    /// The base search of one entry.
    pub(crate) const ONE: Limit = Limit {
        sizelimit: 0,
        at_most: Some(1),
        what: "a base search returns at most one entry",
    };

    /// A search sent with `sizelimit` (none when 0).
    pub(crate) fn sized(sizelimit: i32) -> Limit {
        Limit {
            sizelimit,
            ..Limit::NONE
        }
    }

    /// One page of `size` entries of a paged search.
    pub(crate) fn page(size: i32) -> Limit {
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
        Request {
            base,
            scope: Scope::Base,
            filter,
            attrs: &[attr.to_string()],
            controls: Vec::new(),
            limit: Limit::ONE,
        },
        &mut |e| {
            found.get_or_insert(e);
        },
    )
    .await
}

/// Like [`run_search`], delivering entries with their controls and
/// intermediate messages; `on_item` may stop the search with a protocol error.
pub(crate) async fn run_search_raw(
    ldap: &mut Ldap,
    server: &str,
    timeout: Duration,
    req: Request<'_>,
    on_item: &mut (dyn FnMut(Item) -> Result<(), String> + Send),
) -> Result<LdapResult, LdapError> {
    let Request {
        base,
        scope,
        filter,
        attrs,
        controls,
        limit,
    } = req;
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

/// Characters used to split a search that exceeds the size limit: a search
/// on prefix `p` becomes one search per `p` + character, plus a catch-all
/// for values that continue with anything else (or end at `p`).
const SPLIT_ALPHABET: &[char] = &[
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's',
    't', 'u', 'v', 'w', 'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ' ', '-',
    '.', '_', '\'', '@', ',', '&', '+', '#', '$', '!', '~', '=', '%',
];
const MAX_SPLIT_DEPTH: usize = 64;

pub(crate) fn parenthesized(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

/// A search of [`Client::search_with`] as [`Client::paged`] and
/// [`Client::batched`] send it: each adds its own controls and limit.
#[derive(Clone, Copy)]
struct Query<'a> {
    base: &'a str,
    scope: Scope,
    filter: &'a str,
    attrs: &'a [String],
    controls: &'a [RawControl],
}

enum PagedEnd {
    Complete,
    /// The server applied a size limit to the paged search too.
    LimitExceeded,
}

impl Client {
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
        let query = Query {
            base,
            scope,
            filter: &filter,
            attrs,
            controls: &controls,
        };
        if self.paging && self.caps.paged_results {
            seen.defer(self.seen_in_memory);
            match self.paged(query, &mut seen, f).await? {
                PagedEnd::Complete => return Ok(seen.len()),
                PagedEnd::LimitExceeded => tracing::warn!(
                    server = %self.server,
                    %base,
                    %filter,
                    "the server limits paged searches too; continuing in batches"
                ),
            }
            seen.undefer().map_err(|e| LdapError::Protocol {
                server: self.server.clone(),
                message: format!(
                    "paged search of {base:?} for {filter} cut short by the server: the DNs already read could not be kept to continue in batches (temporary file: {e})"
                ),
            })?;
        }
        self.batched(query, &mut seen, f).await?;
        Ok(seen.len())
    }

    async fn paged(
        &mut self,
        query: Query<'_>,
        seen: &mut SeenDns,
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<PagedEnd, LdapError> {
        let Query {
            base,
            scope,
            filter,
            attrs,
            controls,
        } = query;
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
                Request {
                    base,
                    scope,
                    filter,
                    attrs,
                    controls: ctrls,
                    limit: Limit::page(size),
                },
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

    async fn batched(
        &mut self,
        query: Query<'_>,
        seen: &mut SeenDns,
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<(), LdapError> {
        let Query {
            base,
            scope,
            filter,
            attrs,
            controls,
        } = query;
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
                Request {
                    base,
                    scope,
                    filter: &flt,
                    attrs,
                    controls: controls.to_vec(),
                    limit: Limit::sized(limit),
                },
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
            Request {
                base: dn,
                scope: Scope::Base,
                filter: "(objectClass=*)",
                attrs,
                controls: Vec::new(),
                limit: Limit::ONE,
            },
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
        self.require(
            self.caps.attribute_scoped_query,
            "attribute scoped queries (control 1.2.840.113556.1.4.1504)",
        )?;
        self.search_with(dn, Scope::Base, filter, attrs, vec![asq_control(attr)], f)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_kept_in_a_file_during_a_paged_search_are_seen_after_it() {
        let mut seen = SeenDns::default();
        seen.defer(SEEN_IN_MEMORY);
        for i in 0..SEEN_IN_MEMORY {
            assert!(seen.insert(&format!("uid=m{i},dc=example,dc=com")));
        }
        assert!(seen.deferred.is_none(), "the first ones stay in memory");
        assert!(seen.insert("uid=a,ou=People,dc=example,dc=com"));
        assert!(seen.insert("cn=José Müller,dc=example,dc=com"));
        assert!(seen.deferred.is_some());
        assert_eq!(
            (seen.len(), seen.set.len()),
            (SEEN_IN_MEMORY + 2, SEEN_IN_MEMORY)
        );
        seen.undefer().unwrap();
        assert!(seen.deferred.is_none());
        assert!(!seen.insert("UID=A,OU=people,DC=Example,DC=com"));
        assert!(!seen.insert("CN=JOSÉ MÜLLER,DC=EXAMPLE,DC=COM"));
        assert!(!seen.insert("UID=M7,dc=example,dc=com"));
        assert!(seen.insert("uid=b,ou=People,dc=example,dc=com"));
        assert_eq!(seen.len(), SEEN_IN_MEMORY + 3);
    }

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
}
