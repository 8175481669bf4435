//! Wire-level helpers that never panic on what the server sends: entry
//! parsing, control values, RootDSE interpretation, range options.

use ldap3::asn1::{ASNTag, OctetString, Sequence, StructureTag, Tag, TagClass, Types, PL};
use ldap3::controls::RawControl;
use ldap3::ResultEntry;
use mfasync_core::entry::{Attrs, MAX_VALUE_BYTES};
use mfasync_core::Entry;
use serde::Serialize;

pub const OID_PAGED: &str = "1.2.840.113556.1.4.319";
pub const OID_DIRSYNC: &str = "1.2.840.113556.1.4.841";
pub const OID_ASQ: &str = "1.2.840.113556.1.4.1504";
pub const OID_SYNCREPL: &str = "1.3.6.1.4.1.4203.1.9.1.1";
pub const OID_SYNC_STATE: &str = "1.3.6.1.4.1.4203.1.9.1.2";
pub const OID_SYNC_DONE: &str = "1.3.6.1.4.1.4203.1.9.1.3";
pub const OID_SYNC_INFO: &str = "1.3.6.1.4.1.4203.1.9.1.4";
pub const OID_PPOLICY: &str = "1.3.6.1.4.1.42.2.27.8.5.1";
pub const OID_AD_CAPABILITY: &str = "1.2.840.113556.1.4.800";

pub use mfasync_core::report::directory::Vendor;

/// What the server supports, read from its RootDSE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub vendor: Vendor,
    pub paged_results: bool,
    pub dirsync: bool,
    pub attribute_scoped_query: bool,
    pub syncrepl: bool,
    pub usn: bool,
    pub default_naming_context: Option<String>,
    pub naming_contexts: Vec<String>,
    pub highest_committed_usn: Option<u64>,
    pub dns_host_name: Option<String>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            vendor: Vendor::Other,
            paged_results: false,
            dirsync: false,
            attribute_scoped_query: false,
            syncrepl: false,
            usn: false,
            default_naming_context: None,
            naming_contexts: Vec::new(),
            highest_committed_usn: None,
            dns_host_name: None,
        }
    }
}

/// Attributes requested from the RootDSE.
pub fn rootdse_attrs() -> Vec<String> {
    [
        "*",
        "+",
        "supportedControl",
        "supportedCapabilities",
        "supportedExtension",
        "defaultNamingContext",
        "namingContexts",
        "highestCommittedUSN",
        "dnsHostName",
        "vendorName",
        "vendorVersion",
        "objectClass",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Capabilities {
    pub fn from_rootdse(e: &Entry) -> Capabilities {
        let has = |attr: &str, v: &str| {
            e.strs(attr)
                .iter()
                .any(|x| x.trim().eq_ignore_ascii_case(v))
        };
        let controls = |oid: &str| has("supportedControl", oid);
        let vendor = if has("supportedCapabilities", OID_AD_CAPABILITY) {
            Vendor::ActiveDirectory
        } else if has("objectClass", "OpenLDAProotDSE") || controls(OID_SYNCREPL) {
            Vendor::OpenLdap
        } else {
            Vendor::Other
        };
        let highest_committed_usn = e
            .first_str("highestCommittedUSN")
            .and_then(|s| s.parse::<u64>().ok());
        Capabilities {
            vendor,
            paged_results: controls(OID_PAGED),
            dirsync: controls(OID_DIRSYNC),
            attribute_scoped_query: controls(OID_ASQ),
            syncrepl: controls(OID_SYNCREPL),
            usn: e.first_str("highestCommittedUSN").is_some(),
            default_naming_context: e.first_str("defaultNamingContext"),
            naming_contexts: e
                .strs("namingContexts")
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            highest_committed_usn,
            dns_host_name: e.first_str("dnsHostName"),
        }
    }
}

/// One BER element of a control value (nested at most
/// [`ldap3::MAX_BER_DEPTH`] deep); `None` when malformed.
fn parse_tag(val: &[u8]) -> Option<(usize, StructureTag)> {
    ldap3::parse_ber_bounded(val)
}

/// A search result entry as an [`Entry`]; why not, when the message is not
/// a well-formed SearchResultEntry or its DN is longer than
/// [`MAX_VALUE_BYTES`]. A longer value is left out, with a warning naming
/// the entry and the attribute. The decoded byte buffers are moved, not
/// copied: each attribute name becomes its `String` (lower-cased in place)
/// and each value its `Vec<u8>`.
pub fn parse_entry(re: ResultEntry) -> Result<Entry, String> {
    let malformed = || "malformed search result entry".to_string();
    let mut tags =
        re.0.match_id(4)
            .and_then(|t| t.expect_constructed())
            .ok_or_else(malformed)?
            .into_iter();
    let dn = tags
        .next()
        .and_then(|t| t.expect_primitive())
        .ok_or_else(malformed)?;
    if dn.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "a search result entry whose DN is {} bytes long (more than {MAX_VALUE_BYTES})",
            dn.len()
        ));
    }
    let dn = String::from_utf8(dn).map_err(|_| malformed())?;
    let list = tags
        .next()
        .and_then(|t| t.expect_constructed())
        .ok_or_else(malformed)?;
    let mut entry = Entry {
        dn,
        attrs: Attrs::with_capacity(list.len()),
    };
    for a_v in list {
        let mut parts = a_v.expect_constructed().ok_or_else(malformed)?.into_iter();
        let name = parts
            .next()
            .and_then(|t| t.expect_primitive())
            .and_then(|n| String::from_utf8(n).ok())
            .ok_or_else(malformed)?;
        let values = parts
            .next()
            .and_then(|t| t.expect_constructed())
            .ok_or_else(malformed)?;
        for v in &values {
            if let PL::P(v) = &v.payload {
                if v.len() > MAX_VALUE_BYTES {
                    tracing::warn!(
                        dn = %entry.dn,
                        attribute = %name,
                        bytes = v.len(),
                        "directory value longer than {MAX_VALUE_BYTES} bytes skipped"
                    );
                }
            }
        }
        let slot = entry.attrs.slot(name);
        slot.reserve_exact(values.len());
        for v in values {
            let v = v.expect_primitive().ok_or_else(malformed)?;
            if v.len() <= MAX_VALUE_BYTES {
                slot.push(v);
            }
        }
    }
    Ok(entry)
}

fn encode(tag: Tag) -> Vec<u8> {
    let mut buf = bytes::BytesMut::with_capacity(64);
    // Encoding into a growable buffer cannot fail.
    let _ = ldap3::asn1::write::encode_into(&mut buf, tag.into_structure());
    buf.to_vec()
}

/// Request value of the paged results control (RFC 2696).
pub fn paged_control(size: i32, cookie: Vec<u8>) -> RawControl {
    let val = encode(Tag::Sequence(Sequence {
        inner: vec![
            Tag::Integer(ldap3::asn1::Integer {
                inner: i64::from(size),
                ..Default::default()
            }),
            Tag::OctetString(OctetString {
                inner: cookie,
                ..Default::default()
            }),
        ],
        ..Default::default()
    }));
    RawControl {
        ctype: OID_PAGED.to_string(),
        crit: false,
        val: Some(val),
    }
}

/// The cookie of a paged results response control; `None` when malformed.
pub fn paged_cookie(val: &[u8]) -> Option<Vec<u8>> {
    let (_, tag) = parse_tag(val)?;
    let tag = tag
        .match_class(TagClass::Universal)?
        .match_id(Types::Sequence as u64)?;
    let mut parts = tag.expect_constructed()?.into_iter();
    let _size = parts.next()?;
    match parts.next()? {
        StructureTag {
            payload: PL::P(cookie),
            ..
        } => Some(cookie),
        _ => None,
    }
}

/// Attribute Scoped Query request control: SEQUENCE { sourceAttribute OCTET STRING }.
pub fn asq_control(attr: &str) -> RawControl {
    let val = encode(Tag::Sequence(Sequence {
        inner: vec![Tag::OctetString(OctetString {
            inner: attr.as_bytes().to_vec(),
            ..Default::default()
        })],
        ..Default::default()
    }));
    RawControl {
        ctype: OID_ASQ.to_string(),
        crit: true,
        val: Some(val),
    }
}

fn ber_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let bytes: Vec<u8> = n
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn ber_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(ber_len(content.len()));
    out.extend_from_slice(content);
    out
}

/// A BER INTEGER in its minimal two's complement form (0x80000000 as an i32
/// is `02 04 80 00 00 00`, never the 5-byte positive form).
fn ber_int(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    ber_tlv(0x02, &bytes[start..])
}

/// DirSync flag: return only the changed values of multi-valued attributes.
pub const DIRSYNC_INCREMENTAL_VALUES: u32 = 0x8000_0000;
/// DirSync flag: return objects only where the caller has read access (no
/// "Replicating Directory Changes" right needed).
pub const DIRSYNC_OBJECT_SECURITY: u32 = 0x0000_0001;
/// DirSync flag: parents before children.
pub const DIRSYNC_ANCESTORS_FIRST_ORDER: u32 = 0x0000_0800;

/// DirSync request control: SEQUENCE { flags INTEGER (a signed 32-bit value),
/// maxBytes INTEGER, cookie OCTET STRING }, critical.
pub fn dirsync_control(flags: u32, max_bytes: i32, cookie: &[u8]) -> RawControl {
    let mut content = ber_int(i64::from(flags as i32));
    content.extend(ber_int(i64::from(max_bytes)));
    content.extend(ber_tlv(0x04, cookie));
    RawControl {
        ctype: OID_DIRSYNC.to_string(),
        crit: true,
        val: Some(ber_tlv(0x30, &content)),
    }
}

/// DirSync response control: (more results?, cookie); `None` when malformed.
pub fn dirsync_response(val: &[u8]) -> Option<(bool, Vec<u8>)> {
    let (_, tag) = parse_tag(val)?;
    let mut parts = tag
        .match_class(TagClass::Universal)?
        .match_id(Types::Sequence as u64)?
        .expect_constructed()?
        .into_iter();
    let more = parts.next()?.expect_primitive()?.iter().any(|b| *b != 0);
    let _unused = parts.next()?;
    let cookie = parts.next()?.expect_primitive()?;
    Some((more, cookie))
}

/// RFC 4533 Sync Request control, refreshOnly: SEQUENCE { mode ENUMERATED
/// refreshOnly(1), cookie OCTET STRING OPTIONAL }, critical.
pub fn sync_request_control(cookie: Option<&[u8]>) -> RawControl {
    let mut content = vec![0x0a, 0x01, 0x01];
    if let Some(c) = cookie {
        content.extend(ber_tlv(0x04, c));
    }
    RawControl {
        ctype: OID_SYNCREPL.to_string(),
        crit: true,
        val: Some(ber_tlv(0x30, &content)),
    }
}

/// The state of an entry in a sync refresh (RFC 4533 Sync State control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    Present,
    Add,
    Modify,
    Delete,
}

/// Sync State control value: (state, entryUUID, cookie).
pub fn sync_state(val: &[u8]) -> Option<(SyncState, Vec<u8>, Option<Vec<u8>>)> {
    let (_, tag) = parse_tag(val)?;
    let mut parts = tag
        .match_class(TagClass::Universal)?
        .match_id(Types::Sequence as u64)?
        .expect_constructed()?
        .into_iter();
    let state = match parts.next()?.expect_primitive()?.as_slice() {
        [0] => SyncState::Present,
        [1] => SyncState::Add,
        [2] => SyncState::Modify,
        [3] => SyncState::Delete,
        _ => return None,
    };
    let uuid = parts.next()?.expect_primitive()?;
    let cookie = match parts.next() {
        Some(t) => Some(t.expect_primitive()?),
        None => None,
    };
    Some((state, uuid, cookie))
}

/// Sync Done control value: (cookie, refreshDeletes).
pub fn sync_done(val: &[u8]) -> Option<(Option<Vec<u8>>, bool)> {
    let (_, tag) = parse_tag(val)?;
    let parts = tag
        .match_class(TagClass::Universal)?
        .match_id(Types::Sequence as u64)?
        .expect_constructed()?;
    let mut cookie = None;
    let mut refresh_deletes = false;
    for p in parts {
        match p.id {
            id if id == Types::OctetString as u64 => cookie = Some(p.expect_primitive()?),
            id if id == Types::Boolean as u64 => {
                refresh_deletes = p.expect_primitive()?.iter().any(|b| *b != 0)
            }
            _ => return None,
        }
    }
    Some((cookie, refresh_deletes))
}

/// A Sync Info intermediate message (RFC 4533 2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncInfo {
    NewCookie(Vec<u8>),
    /// End of a refresh phase: (cookie, refreshDone, delete phase?).
    Phase {
        cookie: Option<Vec<u8>>,
        delete_phase: bool,
    },
    /// UUIDs deleted (`refresh_deletes`) or present.
    IdSet {
        cookie: Option<Vec<u8>>,
        refresh_deletes: bool,
        uuids: Vec<Vec<u8>>,
    },
}

pub fn sync_info(val: &[u8]) -> Option<SyncInfo> {
    let (_, tag) = parse_tag(val)?;
    if tag.class != TagClass::Context {
        return None;
    }
    let id = tag.id;
    if id == 0 {
        return Some(SyncInfo::NewCookie(tag.expect_primitive()?));
    }
    let parts = tag.expect_constructed()?;
    let mut cookie = None;
    let mut flag = None;
    let mut uuids = Vec::new();
    for p in parts {
        match p.id {
            x if x == Types::OctetString as u64 => cookie = Some(p.expect_primitive()?),
            x if x == Types::Boolean as u64 => {
                flag = Some(p.expect_primitive()?.iter().any(|b| *b != 0))
            }
            x if x == Types::Set as u64 => {
                for u in p.expect_constructed()? {
                    uuids.push(u.expect_primitive()?);
                }
            }
            _ => return None,
        }
    }
    match id {
        1 | 2 => Some(SyncInfo::Phase {
            cookie,
            delete_phase: id == 1,
        }),
        3 => Some(SyncInfo::IdSet {
            cookie,
            refresh_deletes: flag.unwrap_or(false),
            uuids,
        }),
        _ => None,
    }
}

/// An IntermediateResponse: (responseName, responseValue).
pub fn parse_intermediate(re: ResultEntry) -> Option<(Option<String>, Option<Vec<u8>>)> {
    let parts = re.0.match_id(25)?.expect_constructed()?;
    let mut name = None;
    let mut value = None;
    for p in parts {
        match p.id {
            0 => name = Some(String::from_utf8(p.expect_primitive()?).ok()?),
            1 => value = Some(p.expect_primitive()?),
            _ => return None,
        }
    }
    Some((name, value))
}

/// Password policy request control (draft-behera-ldap-password-policy): no value.
pub fn ppolicy_control() -> RawControl {
    RawControl {
        ctype: OID_PPOLICY.to_string(),
        crit: false,
        val: None,
    }
}

/// The `error` of a password policy response control, if any.
pub fn ppolicy_error(val: &[u8]) -> Option<u8> {
    let (_, tag) = parse_tag(val)?;
    let parts = tag
        .match_class(TagClass::Universal)?
        .match_id(Types::Sequence as u64)?
        .expect_constructed()?;
    parts
        .into_iter()
        .find(|p| p.class == TagClass::Context && p.id == 1)
        .and_then(|p| p.expect_primitive())
        .and_then(|v| v.last().copied())
}

/// A returned attribute name of a range retrieval: `member;range=0-1499` ->
/// `Some((0, Some(1499)))`, `member;range=1500-*` -> `Some((1500, None))`.
pub fn parse_range(returned: &str, attr: &str) -> Option<(u64, Option<u64>)> {
    let lower = returned.to_ascii_lowercase();
    let attr = attr.to_ascii_lowercase();
    let rest = lower.strip_prefix(&attr)?.strip_prefix(';')?;
    let spec = rest.split(';').find_map(|opt| opt.strip_prefix("range="))?;
    let (lo, hi) = spec.split_once('-')?;
    let lo = lo.parse().ok()?;
    let hi = if hi == "*" {
        None
    } else {
        Some(hi.parse().ok()?)
    };
    Some((lo, hi))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asq_control_value_is_a_sequence_of_one_octet_string() {
        let c = asq_control("member");
        assert_eq!(c.ctype, "1.2.840.113556.1.4.1504");
        assert!(c.crit);
        assert_eq!(
            c.val.as_deref(),
            Some(&[0x30, 0x08, 0x04, 0x06, b'm', b'e', b'm', b'b', b'e', b'r'][..])
        );
    }

    #[test]
    fn paged_control_round_trips_cookie() {
        let c = paged_control(1000, vec![1, 2, 3]);
        let v = c.val.unwrap_or_default();
        assert_eq!(
            v,
            vec![0x30, 0x09, 0x02, 0x02, 0x03, 0xe8, 0x04, 0x03, 1, 2, 3]
        );
        assert_eq!(paged_cookie(&v), Some(vec![1, 2, 3]));
        assert_eq!(paged_cookie(&[0x30]), None);
        assert_eq!(paged_cookie(&[]), None);
    }

    #[test]
    fn dirsync_control_bytes_are_pinned() {
        let c = dirsync_control(DIRSYNC_INCREMENTAL_VALUES, i32::MAX, &[]);
        assert_eq!(c.ctype, "1.2.840.113556.1.4.841");
        assert!(c.crit);
        assert_eq!(
            c.val.as_deref(),
            Some(
                &[
                    0x30, 0x0e, 0x02, 0x04, 0x80, 0x00, 0x00, 0x00, 0x02, 0x04, 0x7f, 0xff, 0xff,
                    0xff, 0x04, 0x00
                ][..]
            )
        );
        let c = dirsync_control(
            DIRSYNC_OBJECT_SECURITY | DIRSYNC_ANCESTORS_FIRST_ORDER,
            1_000_000,
            &[9, 8],
        );
        assert_eq!(
            c.val.as_deref(),
            Some(
                &[
                    0x30, 0x0d, 0x02, 0x02, 0x08, 0x01, 0x02, 0x03, 0x0f, 0x42, 0x40, 0x04, 0x02,
                    9, 8
                ][..]
            )
        );
        assert_eq!(ber_int(0), vec![0x02, 0x01, 0x00]);
        assert_eq!(ber_int(128), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(ber_int(-1), vec![0x02, 0x01, 0xff]);
        let long = dirsync_control(0, 0, &[0u8; 300]);
        assert_eq!(
            &long.val.unwrap_or_default()[..4],
            &[0x30, 0x82, 0x01, 0x36]
        );
    }

    #[test]
    fn dirsync_response_parsing() {
        let v = [
            0x30, 0x0a, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x04, 0x02, 0xab, 0xcd,
        ];
        assert_eq!(dirsync_response(&v), Some((true, vec![0xab, 0xcd])));
        let v = [0x30, 0x08, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x00];
        assert_eq!(dirsync_response(&v), Some((false, vec![])));
        assert_eq!(dirsync_response(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }

    #[test]
    fn syncrepl_values() {
        assert_eq!(
            sync_request_control(None).val.unwrap_or_default(),
            vec![0x30, 0x03, 0x0a, 0x01, 0x01]
        );
        assert_eq!(
            sync_request_control(Some(b"ab")).val.unwrap_or_default(),
            vec![0x30, 0x07, 0x0a, 0x01, 0x01, 0x04, 0x02, b'a', b'b']
        );
        let st = [
            0x30, 0x09, 0x0a, 0x01, 0x03, 0x04, 0x02, 0x11, 0x22, 0x04, 0x00,
        ];
        assert_eq!(
            sync_state(&st),
            Some((SyncState::Delete, vec![0x11, 0x22], Some(vec![])))
        );
        assert_eq!(sync_state(&[0x30, 0x03, 0x0a, 0x01, 0x09]), None);
        assert_eq!(
            sync_done(&[0x30, 0x03, 0x01, 0x01, 0xff]),
            Some((None, true))
        );
        assert_eq!(
            sync_done(&[0x30, 0x03, 0x04, 0x01, b'c']),
            Some((Some(b"c".to_vec()), false))
        );
        assert_eq!(
            sync_info(&[0x80, 0x01, b'x']),
            Some(SyncInfo::NewCookie(b"x".to_vec()))
        );
        assert_eq!(
            sync_info(&[0xa3, 0x0a, 0x01, 0x01, 0xff, 0x31, 0x05, 0x04, 0x03, 1, 2, 3]),
            Some(SyncInfo::IdSet {
                cookie: None,
                refresh_deletes: true,
                uuids: vec![vec![1, 2, 3]]
            })
        );
        assert_eq!(
            sync_info(&[0xa1, 0x03, 0x04, 0x01, b'k']),
            Some(SyncInfo::Phase {
                cookie: Some(b"k".to_vec()),
                delete_phase: true
            })
        );
        assert_eq!(sync_info(&[0x30, 0x00]), None);
    }

    #[test]
    fn ppolicy_values() {
        // error: accountLocked
        assert_eq!(ppolicy_error(&[0x30, 0x03, 0x81, 0x01, 0x01]), Some(1));
        // warning only: timeBeforeExpiration 100
        assert_eq!(
            ppolicy_error(&[0x30, 0x05, 0xa0, 0x03, 0x80, 0x01, 0x64]),
            None
        );
        assert_eq!(ppolicy_error(&[0x30, 0x00]), None);
        assert_eq!(ppolicy_error(&[0x01]), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("member;range=0-1499", "member"),
            Some((0, Some(1499)))
        );
        assert_eq!(
            parse_range("Member;Range=1500-*", "member"),
            Some((1500, None))
        );
        assert_eq!(parse_range("member", "member"), None);
        assert_eq!(parse_range("memberOf;range=0-*", "member"), None);
    }

    #[test]
    fn vendor_detection() {
        let ad = Entry::new("")
            .with(
                "supportedCapabilities",
                &["1.2.840.113556.1.4.800", "1.2.840.113556.1.4.1670"],
            )
            .with("supportedControl", &[OID_PAGED, OID_DIRSYNC, OID_ASQ])
            .with("highestCommittedUSN", &["12345"])
            .with("defaultNamingContext", &["DC=example,DC=com"]);
        let c = Capabilities::from_rootdse(&ad);
        assert_eq!(c.vendor, Vendor::ActiveDirectory);
        assert!(c.paged_results && c.dirsync && c.attribute_scoped_query && c.usn && !c.syncrepl);
        assert_eq!(c.highest_committed_usn, Some(12345));
        assert_eq!(
            c.default_naming_context.as_deref(),
            Some("DC=example,DC=com")
        );
        let ol = Entry::new("").with("objectClass", &["top", "OpenLDAProotDSE"]);
        assert_eq!(Capabilities::from_rootdse(&ol).vendor, Vendor::OpenLdap);
        assert_eq!(
            Capabilities::from_rootdse(&Entry::new("")).vendor,
            Vendor::Other
        );
        assert_eq!(
            serde_json::to_string(&[Vendor::ActiveDirectory, Vendor::OpenLdap, Vendor::Other])
                .unwrap_or_default(),
            r#"["active-directory","openldap","other"]"#
        );
    }
}
