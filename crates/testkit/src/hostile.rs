//! A hostile directory for tests: an LDAP proxy ([`LdapProxy`]'s machinery)
//! in front of a real server that answers chosen searches with crafted
//! messages, as a rogue server, a man in the middle of plain `ldap://` or a
//! rogue DC found by DNS could. The attacked searches are those whose request
//! bytes contain a trigger (a filter value: `inetOrgPerson` for the user
//! search, a username for a password check's lookup); everything else goes to
//! the real server, so connecting, binding and the other searches work.
//!
//! Attacks: elements nested 40,000 deep, an empty LDAPMessage (`30 00`), a
//! message announcing 2^40 bytes followed by zeros without end, the real
//! answer with a huge value added to each entry, and many more entries in
//! one page than any page size.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ldapproxy::{
    element, tlv, Action, LdapProxy, Message, Rules, TAG_CONTROLS, TAG_ENUMERATED, TAG_INTEGER,
    TAG_OCTET_STRING, TAG_SEARCH_DONE, TAG_SEARCH_REQUEST, TAG_SEQUENCE,
};

/// [APPLICATION 4] SearchResultEntry.
const TAG_SEARCH_ENTRY: u8 = 0x64;
const TAG_SET: u8 = 0x31;
/// Paged results control (RFC 2696).
const OID_PAGED: &[u8] = b"1.2.840.113556.1.4.319";
/// An endless answer stops after this much even if the client goes on reading.
const ENDLESS_CAP: u64 = 8 << 30;

/// How the attacked searches are answered.
#[derive(Debug, Clone)]
pub enum Attack {
    /// A SearchResultEntry whose attribute list is `levels` SEQUENCEs deep.
    Nested(usize),
    /// An empty LDAPMessage: `30 00`.
    EmptySequence,
    /// A header announcing 2^40 bytes, then zeros until the client closes
    /// the connection (or 8 GiB).
    Endless,
    /// The server's real answer, with a value of `bytes` bytes added to
    /// `attribute` of the entries whose DN contains `dn_contains`.
    HugeValue {
        dn_contains: String,
        attribute: String,
        bytes: usize,
    },
    /// `count` entries (`uid=hostileN` under the search base, with
    /// entryUUID, uid, cn, sn, entryDN) in one page, then a
    /// SearchResultDone ending the paged search.
    ManyEntries(usize),
}

/// A hostile LDAP proxy to a real server (stopped on drop).
pub struct Hostile {
    proxy: LdapProxy,
    rules: Arc<HostileRules>,
}

impl Hostile {
    /// Listen on a free loopback port and forward to `upstream`
    /// (`host:port`), answering every SearchRequest that contains the bytes
    /// of each of `triggers` (filter values, control OIDs) with `attack`.
    pub fn start(upstream: &str, triggers: &[&str], attack: Attack) -> Hostile {
        let rules = Arc::new(HostileRules {
            triggers: triggers.iter().map(|t| t.as_bytes().to_vec()).collect(),
            attack,
            rewrite: Mutex::new(HashSet::new()),
            written: Arc::new(AtomicU64::new(0)),
        });
        let proxy = LdapProxy::with_rules(upstream, rules.clone());
        Hostile { proxy, rules }
    }

    /// `ldap://ADDR` of the proxy.
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// Searches attacked so far.
    pub fn attacks(&self) -> u64 {
        let answered = self.proxy.refused();
        match self.rules.attack {
            Attack::HugeValue { .. } => self.rules.ids().len() as u64,
            _ => answered,
        }
    }

    /// Bytes of crafted answers written to clients so far.
    pub fn written(&self) -> u64 {
        self.rules.written.load(Ordering::SeqCst)
    }
}

struct HostileRules {
    triggers: Vec<Vec<u8>>,
    attack: Attack,
    /// Message IDs of forwarded searches whose entries get the huge value.
    rewrite: Mutex<HashSet<Vec<u8>>>,
    written: Arc<AtomicU64>,
}

impl HostileRules {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashSet<Vec<u8>>> {
        self.rewrite.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Rules for HostileRules {
    fn request(&self, req: &Message<'_>, raw: &[u8]) -> Action {
        let hit = req.op_tag == TAG_SEARCH_REQUEST
            && self
                .triggers
                .iter()
                .all(|t| !t.is_empty() && raw.windows(t.len()).any(|w| w == t.as_slice()));
        if !hit {
            return Action::Forward;
        }
        let id = req.message_id.to_vec();
        let written = self.written.clone();
        match &self.attack {
            Attack::HugeValue { .. } => {
                self.ids().insert(id);
                Action::Forward
            }
            Attack::Nested(levels) => {
                let mut attrs = vec![0x04, 0x00];
                for _ in 0..*levels {
                    attrs = element(TAG_SEQUENCE, &attrs);
                }
                let mut op = element(TAG_OCTET_STRING, b"uid=deep");
                op.extend(attrs);
                let answer = message(&id, &element(TAG_SEARCH_ENTRY, &op), &[]);
                Action::Answer(Box::new(move |w, _| send(w, &answer, &written)))
            }
            Attack::EmptySequence => {
                Action::Answer(Box::new(move |w, _| send(w, &[0x30, 0x00], &written)))
            }
            Attack::Endless => Action::Answer(Box::new(move |w, stop| {
                send(w, &[0x30, 0x86, 0x01, 0, 0, 0, 0, 0], &written)?;
                let zeros = vec![0u8; 64 << 10];
                while written.load(Ordering::SeqCst) < ENDLESS_CAP && !stop.load(Ordering::SeqCst) {
                    send(w, &zeros, &written)?;
                }
                Ok(())
            })),
            Attack::ManyEntries(count) => {
                let base = search_base(req.op).unwrap_or_default();
                let count = *count;
                Action::Answer(Box::new(move |w, stop| {
                    many_entries(w, stop, &id, &base, count, &written)
                }))
            }
        }
    }

    fn response(&self, msg: Vec<u8>) -> Vec<u8> {
        let Attack::HugeValue {
            dn_contains,
            attribute,
            bytes,
        } = &self.attack
        else {
            return msg;
        };
        match with_value(&msg, &self.ids(), dn_contains, attribute, *bytes) {
            Some(m) => {
                self.written.fetch_add(m.len() as u64, Ordering::SeqCst);
                m
            }
            None => msg,
        }
    }
}

fn send(w: &mut TcpStream, bytes: &[u8], written: &AtomicU64) -> io::Result<()> {
    w.write_all(bytes)?;
    written.fetch_add(bytes.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// LDAPMessage { id, op (encoded), controls (encoded, may be empty) }.
fn message(id: &[u8], op: &[u8], controls: &[u8]) -> Vec<u8> {
    let mut body = element(TAG_INTEGER, id);
    body.extend_from_slice(op);
    body.extend_from_slice(controls);
    element(TAG_SEQUENCE, &body)
}

/// The baseObject of a SearchRequest's content.
fn search_base(op: &[u8]) -> Option<String> {
    let (tag, base, _) = tlv(op)?;
    (tag == TAG_OCTET_STRING).then(|| String::from_utf8_lossy(base).into_owned())
}

/// An attribute: SEQUENCE { type, SET OF value }.
fn attribute(name: &[u8], values: &[&[u8]]) -> Vec<u8> {
    let mut vals = Vec::new();
    for v in values {
        vals.extend(element(TAG_OCTET_STRING, v));
    }
    let mut a = element(TAG_OCTET_STRING, name);
    a.extend(element(TAG_SET, &vals));
    element(TAG_SEQUENCE, &a)
}

/// `count` entries for message `id`, then SearchResultDone (success) with an
/// empty paged results cookie (the last page).
fn many_entries(
    w: &mut TcpStream,
    stop: &AtomicBool,
    id: &[u8],
    base: &str,
    count: usize,
    written: &AtomicU64,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 << 10, &mut *w);
    let mut n = 0u64;
    for i in 0..count {
        if i % 1024 == 0 && stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let uid = format!("hostile{i}");
        let dn = format!("uid={uid},{base}");
        let uuid = format!("6f737469-6c65-4000-8000-{i:012}");
        let mut attrs = attribute(b"objectClass", &[b"inetOrgPerson"]);
        attrs.extend(attribute(b"entryUUID", &[uuid.as_bytes()]));
        attrs.extend(attribute(b"entryDN", &[dn.as_bytes()]));
        attrs.extend(attribute(b"uid", &[uid.as_bytes()]));
        attrs.extend(attribute(b"cn", &[uid.as_bytes()]));
        attrs.extend(attribute(b"sn", &[uid.as_bytes()]));
        let mut op = element(TAG_OCTET_STRING, dn.as_bytes());
        op.extend(element(TAG_SEQUENCE, &attrs));
        let m = message(id, &element(TAG_SEARCH_ENTRY, &op), &[]);
        out.write_all(&m)?;
        n += m.len() as u64;
    }
    let mut result = element(TAG_ENUMERATED, &[0]);
    result.extend(element(TAG_OCTET_STRING, b""));
    result.extend(element(TAG_OCTET_STRING, b""));
    // paged results response: SEQUENCE { size 0, cookie "" }
    let value = element(
        TAG_SEQUENCE,
        &[element(TAG_INTEGER, &[0]), element(TAG_OCTET_STRING, b"")].concat(),
    );
    let control = element(
        TAG_SEQUENCE,
        &[
            element(TAG_OCTET_STRING, OID_PAGED),
            element(TAG_OCTET_STRING, &value),
        ]
        .concat(),
    );
    let done = message(
        id,
        &element(TAG_SEARCH_DONE, &result),
        &element(TAG_CONTROLS, &control),
    );
    out.write_all(&done)?;
    out.flush()?;
    written.fetch_add(n + done.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// `msg` with a value of `bytes` bytes ('x') added to `attribute`, when it
/// is a SearchResultEntry of one of the searches `ids` whose DN contains
/// `dn_contains`; None otherwise.
fn with_value(
    msg: &[u8],
    ids: &HashSet<Vec<u8>>,
    dn_contains: &str,
    attribute_name: &str,
    bytes: usize,
) -> Option<Vec<u8>> {
    let (_, body, _) = tlv(msg)?;
    let (_, id, rest) = tlv(body)?;
    let (tag, op, controls) = tlv(rest)?;
    if tag != TAG_SEARCH_ENTRY || !ids.contains(id) {
        return None;
    }
    let (_, dn, rest) = tlv(op)?;
    let wanted = dn_contains.as_bytes();
    if !dn.windows(wanted.len()).any(|w| w == wanted) {
        return None;
    }
    let (_, attrs, _) = tlv(rest)?;
    let big = vec![b'x'; bytes];
    let mut list = attrs.to_vec();
    list.extend(attribute(attribute_name.as_bytes(), &[&big]));
    let mut new_op = element(TAG_OCTET_STRING, dn);
    new_op.extend(element(TAG_SEQUENCE, &list));
    Some(message(id, &element(TAG_SEARCH_ENTRY, &new_op), controls))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_huge_value_is_added_to_the_entries_of_attacked_searches_only() {
        let mut op = element(TAG_OCTET_STRING, b"uid=a,dc=x");
        op.extend(element(TAG_SEQUENCE, &attribute(b"uid", &[b"a"])));
        let entry = message(&[5], &element(TAG_SEARCH_ENTRY, &op), &[]);
        let ids: HashSet<Vec<u8>> = [vec![5u8]].into();
        let m = with_value(&entry, &ids, "uid=a,", "description", 100_000).unwrap();
        assert!(m.len() > 100_000);
        assert_eq!(&m[..2], &[0x30, 0x83]);
        assert!(m.windows(11).any(|w| w == b"description"));
        assert!(m.windows(3).any(|w| w == b"uid"));
        let other: HashSet<Vec<u8>> = [vec![6u8]].into();
        assert!(with_value(&entry, &other, "uid=a,", "description", 10).is_none());
        assert!(with_value(&entry, &ids, "uid=b,", "description", 10).is_none());
    }

    #[test]
    fn the_search_base_is_read_from_the_request() {
        let mut req = element(TAG_OCTET_STRING, b"ou=S1,dc=example,dc=com");
        req.extend(element(TAG_ENUMERATED, &[2]));
        assert_eq!(
            search_base(&req).as_deref(),
            Some("ou=S1,dc=example,dc=com")
        );
    }
}
