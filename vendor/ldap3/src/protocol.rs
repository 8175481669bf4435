use std::io;
#[cfg(feature = "gssapi")]
use std::sync::Mutex;
#[cfg(feature = "gssapi")]
use std::sync::RwLock;
use std::sync::{Arc, OnceLock};

use crate::RequestId;
use crate::controls::{Control, RawControl};
use crate::controls_impl::{build_tag, try_parse_controls};
use crate::search::SearchItem;

use lber::common::TagClass;
use lber::parse::parse_uint;
use lber::structure::{PL, StructureTag};
use lber::structures::{ASNTag, Integer, Sequence, Tag};
use lber::universal::Types;
use lber::write;

use bytes::{Buf, BytesMut};
#[cfg(feature = "gssapi")]
use cross_krb5::{ClientCtx, K5Ctx};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder};

pub(crate) struct LdapCodec {
    /// mfasync patch: the largest message this connection buffers.
    pub(crate) max_message_bytes: usize,
    /// mfasync patch: why the connection failed on what the server sent,
    /// shared with its `Ldap` handles.
    pub(crate) failure: Arc<OnceLock<String>>,
    #[cfg(feature = "gssapi")]
    pub(crate) has_decoded_data: bool,
    #[cfg(feature = "gssapi")]
    pub(crate) sasl_param: Arc<RwLock<(bool, u32)>>, // sasl_wrap, sasl_max_send
    #[cfg(feature = "gssapi")]
    pub(crate) client_ctx: Arc<Mutex<Option<ClientCtx>>>,
}

pub(crate) type MaybeControls = Option<Vec<RawControl>>;
pub(crate) type ItemSender = mpsc::UnboundedSender<(SearchItem, Vec<Control>)>;
pub(crate) type ResultSender = oneshot::Sender<(Tag, Vec<Control>)>;

#[derive(Debug)]
pub enum MiscSender {
    #[cfg(any(feature = "tls-native", feature = "tls-rustls"))]
    Cert(oneshot::Sender<Option<Vec<u8>>>),
}

#[derive(Debug)]
pub enum LdapOp {
    Single,
    Search(ItemSender),
    Abandon(RequestId),
    Unbind,
}

/// mfasync patch: no element of a message may be nested deeper than this
/// (LDAP needs fewer than 10 levels). Deeper input is a decoding error, so
/// neither the parser nor the drop of its tree recurses further.
pub const MAX_BER_DEPTH: usize = 32;

/// mfasync patch: the largest message a connection buffers, unless
/// [`LdapConnSettings::set_max_message_bytes`](crate::LdapConnSettings::set_max_message_bytes)
/// says otherwise.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// mfasync patch: how many times its size in bytes a message may take once
/// decoded (each element costs a `StructureTag` besides its content: a
/// message of tiny elements would otherwise decode to ~20 times its size).
const DECODED_FACTOR: usize = 4;

/// mfasync patch: why a message was refused (the connection then fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl Malformed {
    fn new(why: impl Into<String>) -> Self {
        Malformed(why.into())
    }
}

type Decoded = (RequestId, (Tag, Vec<Control>));

/// mfasync patch: protocolOp tags that carry an LDAPResult (bind, search
/// done, modify, add, delete, modDN, compare, extended responses).
pub(crate) const RESULT_OPS: [u64; 8] = [1, 5, 7, 9, 11, 13, 15, 24];

/// mfasync patch: one LDAPMessage from the start of `buf`, `Ok(None)` until
/// it is all there. A message announcing more than `max` bytes is refused
/// from its header, before it is buffered; anything that is not a complete,
/// well-formed LDAPMessage is refused instead of panicking later (an empty
/// SEQUENCE, a message ID that is no INTEGER, malformed controls or result).
fn decode_inner(buf: &mut BytesMut, max: usize) -> Result<Option<Decoded>, Malformed> {
    let (header, len) = match message_header(buf)? {
        Some(h) => h,
        None => return Ok(None),
    };
    let total = header.saturating_add(len);
    if total > max {
        return Err(Malformed(format!(
            "a message of {total} bytes, over the limit of {max} bytes"
        )));
    }
    if buf.len() < total {
        // the whole message will be read into this buffer: room for it once
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut budget = max.saturating_mul(DECODED_FACTOR);
    // mfasync patch: parsed by `parse_ber` (what `lber::Parser::parse` does,
    // without nom), and the tag moved out instead of cloned.
    let tag = match parse_ber(&buf[..total], 0, &mut budget) {
        Ok((_, tag)) => tag,
        // the message is all there: an element runs past its container
        Err(BerError::Incomplete) => {
            return Err(Malformed::new(
                "an element runs past the end of its message",
            ));
        }
        Err(BerError::Invalid(why)) => return Err(Malformed(why)),
    };
    buf.advance(total);
    let mut tags = match tag
        .match_id(Types::Sequence as u64)
        .and_then(|t| t.expect_constructed())
    {
        Some(tags) => tags,
        None => return Err(Malformed::new("a message that is not a SEQUENCE")),
    };
    let missing = || Malformed::new("a message without a message ID and an operation");
    if tags.len() < 2 {
        return Err(missing());
    }
    let mut maybe_controls = tags.pop().ok_or_else(missing)?;
    let has_controls = match maybe_controls {
        StructureTag {
            id,
            class,
            ref payload,
        } if class == TagClass::Context && id == 0 => match *payload {
            PL::C(_) => true,
            PL::P(_) => return Err(Malformed::new("controls that are not a SEQUENCE")),
        },
        StructureTag { id, class, .. } if class == TagClass::Context && id == 10 => {
            // Active Directory bug workaround
            //
            // AD incorrectly encodes Notice of Disconnection messages. The OID of the
            // Unsolicited Notification should be part of the ExtendedResponse sequence
            // but AD puts it outside, where the optional controls belong. This confuses
            // our parser, which doesn't expect the extra sequence element at the end
            // and crashes. This match arm thus ignores the element.
            maybe_controls = tags.pop().ok_or_else(missing)?;
            false
        }
        _ => false,
    };
    let (protoop, controls) = if has_controls {
        (tags.pop().ok_or_else(missing)?, Some(maybe_controls))
    } else {
        (maybe_controls, None)
    };
    let controls = match controls {
        Some(controls) => {
            try_parse_controls(controls).ok_or_else(|| Malformed::new("malformed controls"))?
        }
        None => vec![],
    };
    let msgid = tags
        .pop()
        .and_then(|t| t.match_class(TagClass::Universal))
        .and_then(|t| t.match_id(Types::Integer as u64))
        .and_then(|t| t.expect_primitive())
        .ok_or_else(|| Malformed::new("a message ID that is not an INTEGER"))?;
    let msgid = match parse_uint(msgid.as_slice()) {
        Ok((_, id)) => id as i32,
        _ => return Err(Malformed::new("a message ID that is not an INTEGER")),
    };
    if RESULT_OPS.contains(&protoop.id) {
        check_result(&protoop)?;
    }
    Ok(Some((msgid, (Tag::StructureTag(protoop), controls))))
}

/// mfasync patch: the header of the LDAPMessage at the start of `buf`
/// (identifier and length octets, content length); `None` until they are
/// all there. A length of more than eight octets is refused.
fn message_header(buf: &[u8]) -> Result<Option<(usize, usize)>, Malformed> {
    let Some(&first) = buf.get(1) else {
        return Ok(None);
    };
    if first > 0x88 {
        return Err(Malformed(format!(
            "a length of {} octets",
            usize::from(first - 0x80)
        )));
    }
    match ber_header(buf) {
        Ok(h) => Ok(Some(h)),
        Err(BerError::Incomplete) => Ok(None),
        Err(BerError::Invalid(why)) => Err(Malformed(why)),
    }
}

/// mfasync patch: an LDAPResult as `LdapResultExt::from` reads it, checked
/// so that reading it cannot panic: resultCode ENUMERATED, matchedDN and
/// diagnosticMessage UTF-8 strings, referral URIs UTF-8 strings, SASL
/// credentials and the extended response's value primitive, its name UTF-8.
fn check_result(op: &StructureTag) -> Result<(), Malformed> {
    fn text(t: &StructureTag) -> bool {
        matches!(&t.payload, PL::P(v) if std::str::from_utf8(v).is_ok())
    }
    let bad = || Malformed(format!("a malformed result (operation {})", op.id));
    let PL::C(parts) = &op.payload else {
        return Err(bad());
    };
    let [code, matched, message, rest @ ..] = parts.as_slice() else {
        return Err(bad());
    };
    let code_ok = code.class == TagClass::Universal
        && code.id == Types::Enumerated as u64
        && matches!(code.payload, PL::P(_));
    if !code_ok || !text(matched) || !text(message) {
        return Err(bad());
    }
    for comp in rest {
        let ok = match comp.id {
            3 => matches!(&comp.payload, PL::C(refs) if refs.iter().all(text)),
            7 | 11 => matches!(comp.payload, PL::P(_)),
            10 => text(comp),
            _ => true,
        };
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// mfasync patch: `lber::parse::parse_tag` without nom, for the same
/// results: a one-byte identifier (class, primitive/constructed, the low five
/// bits as the tag number), a short or long form length, then the content
/// (the elements of a constructed one, parsed in turn). Returns the bytes
/// used and the tag; `Incomplete` wherever lber reports `Incomplete` (input
/// too short, also inside a constructed element).
///
/// Unlike lber, it refuses (`Invalid`) an element nested deeper than
/// [`MAX_BER_DEPTH`] (`depth` is the nesting of `i`'s element: 0 for a
/// message) and a tree that would take more than `budget` bytes (each
/// element its `StructureTag` plus its content), before building it.
fn parse_ber(
    i: &[u8],
    depth: usize,
    budget: &mut usize,
) -> Result<(usize, StructureTag), BerError> {
    let (header, len) = ber_header(i)?;
    let content = i[header..].get(..len).ok_or(BerError::Incomplete)?;
    let ident = i[0];
    let class = match ident >> 6 {
        0 => TagClass::Universal,
        1 => TagClass::Application,
        2 => TagClass::Context,
        _ => TagClass::Private,
    };
    let constructed = ident & 0x20 != 0;
    let cost = std::mem::size_of::<StructureTag>() + if constructed { 0 } else { len };
    *budget = budget.checked_sub(cost).ok_or_else(|| {
        BerError::Invalid("a message that decodes to too much memory".to_string())
    })?;
    #[cfg(test)]
    mfasync_patch_tests::DEEPEST.with(|d| d.set(d.get().max(depth)));
    let payload = if !constructed {
        PL::P(content.to_vec())
    } else {
        if depth >= MAX_BER_DEPTH {
            return Err(BerError::Invalid(format!(
                "elements nested deeper than {MAX_BER_DEPTH} levels"
            )));
        }
        let mut tv = Vec::with_capacity(count_elements(content));
        let mut at = 0;
        while at < content.len() {
            let (used, sub) = parse_ber(&content[at..], depth + 1, budget)?;
            at += used;
            tv.push(sub);
        }
        PL::C(tv)
    };
    Ok((
        header + len,
        StructureTag {
            class,
            id: u64::from(ident & 0x1f),
            payload,
        },
    ))
}

/// mfasync patch: one complete BER element of `i` (and the bytes it used),
/// nested at most [`MAX_BER_DEPTH`] deep and decoding to at most 4 times
/// the size of `i` plus 64 KiB; `None` otherwise. For values that carry BER
/// of their own (control values), which lber's `parse_tag` would parse
/// with unbounded recursion.
pub fn parse_ber_bounded(i: &[u8]) -> Option<(usize, StructureTag)> {
    let mut budget = i
        .len()
        .saturating_mul(DECODED_FACTOR)
        .saturating_add(64 << 10);
    parse_ber(i, 0, &mut budget).ok()
}

/// mfasync patch: the identifier and length octets of the element at the
/// start of `i`: how many they are and the content length they give.
fn ber_header(i: &[u8]) -> Result<(usize, usize), BerError> {
    use BerError::Incomplete;
    let first = *i.get(1).ok_or(Incomplete)?;
    if first < 0x80 {
        return Ok((2, usize::from(first)));
    }
    let n = usize::from(first - 0x80);
    let bytes = i.get(2..2 + n).ok_or(Incomplete)?;
    // as lber's parse_uint: big-endian, high bytes beyond 8 shifted out
    let len = bytes
        .iter()
        .fold(0u64, |res, &byte| (res << 8) | u64::from(byte));
    // lber fails (TooLarge) here: unreachable on 64 bits
    let len = usize::try_from(len).map_err(|_| BerError::Invalid("a length too large".into()))?;
    Ok((2 + n, len))
}

/// mfasync patch: how many complete elements `content` starts with (the
/// capacity for a constructed element's list: no regrowth while parsing).
fn count_elements(mut content: &[u8]) -> usize {
    let mut n = 0;
    while let Ok((header, len)) = ber_header(content) {
        match header.checked_add(len).and_then(|end| content.get(end..)) {
            Some(rest) => content = rest,
            None => break,
        }
        n += 1;
    }
    n
}

/// mfasync patch: why `parse_ber` gave no tag.
#[derive(Debug)]
enum BerError {
    /// More input is needed.
    Incomplete,
    /// Refused: nested too deep, too large, a length that does not fit.
    Invalid(String),
}

impl LdapCodec {
    /// mfasync patch: a message, or why it was refused, which is kept for
    /// the connection's handles ([`crate::Ldap::malformed`]): the driver
    /// then ends, and pending operations only see a closed channel.
    fn decode_checked(&self, buf: &mut BytesMut) -> Result<Option<Decoded>, io::Error> {
        decode_inner(buf, self.max_message_bytes).map_err(|Malformed(why)| {
            let _ = self.failure.set(why.clone());
            io::Error::new(io::ErrorKind::InvalidData, why)
        })
    }
}

impl Decoder for LdapCodec {
    type Item = (RequestId, (Tag, Vec<Control>));
    type Error = io::Error;

    #[cfg(not(feature = "gssapi"))]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        self.decode_checked(buf)
    }

    #[cfg(feature = "gssapi")]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        const U32_SIZE: usize = std::mem::size_of::<u32>();

        let sasl_wrap = { self.sasl_param.read().expect("sasl param").0 };
        if !sasl_wrap || buf.is_empty() {
            return self.decode_checked(buf);
        }
        if self.has_decoded_data {
            let res = self.decode_checked(buf);
            if res.is_ok() && buf.is_empty() {
                self.has_decoded_data = false;
            }
            return res;
        }
        if buf.len() < U32_SIZE {
            return Err(io::Error::new(io::ErrorKind::Other, "invalid SASL buffer"));
        }
        let sasl_len = u32::from_be_bytes(buf[0..U32_SIZE].try_into().unwrap());
        // mfasync patch: a wrapped buffer is capped like a message
        if sasl_len as usize > self.max_message_bytes.saturating_add(1024) {
            let why = format!(
                "a SASL buffer of {sasl_len} bytes, over the limit of {} bytes",
                self.max_message_bytes
            );
            let _ = self.failure.set(why.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        if buf.len() - U32_SIZE < sasl_len as usize {
            return Ok(None);
        }
        buf.advance(U32_SIZE);
        let client_opt = &mut *self.client_ctx.lock().expect("client ctx lock");
        let client_ctx = client_opt.as_mut().expect("client Option mut ref");
        let mut decoded = client_ctx.unwrap_iov(sasl_len as usize, buf).map_err(|e| {
            io::Error::new(io::ErrorKind::Other, format!("gss_unwrap error: {:#}", e))
        })?;
        let res = self.decode_checked(&mut decoded);
        if res.is_ok() && !decoded.is_empty() && buf.is_empty() {
            buf.extend(decoded);
            self.has_decoded_data = true;
        }
        res
    }
}

#[cfg(not(feature = "gssapi"))]
#[inline]
fn maybe_wrap(
    _codec: &mut LdapCodec,
    outstruct: StructureTag,
    into: &mut BytesMut,
) -> io::Result<()> {
    write::encode_into(into, outstruct)?;
    Ok(())
}

#[cfg(feature = "gssapi")]
fn maybe_wrap(
    codec: &mut LdapCodec,
    outstruct: StructureTag,
    into: &mut BytesMut,
) -> io::Result<()> {
    let mut out_buf = BytesMut::new();
    write::encode_into(&mut out_buf, outstruct)?;
    let (sasl_wrap, sasl_send_max) = {
        let sasl_param = codec.sasl_param.read().expect("sasl param");
        (sasl_param.0, sasl_param.1)
    };
    if sasl_wrap {
        let client_opt = &mut *codec.client_ctx.lock().expect("client_ctx lock");
        let client_ctx = client_opt.as_mut().expect("client Option mut ref");
        if sasl_send_max > 0 && out_buf.len() > sasl_send_max as usize {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                format!(
                    "buffer too large for GSSAPI: {} > {}",
                    out_buf.len(),
                    sasl_send_max
                ),
            ));
        }
        let sasl_buf = client_ctx.wrap(true, &out_buf).map_err(|e| {
            io::Error::new(io::ErrorKind::Other, format!("gss_wrap error: {:#}", e))
        })?;
        let sasl_len = (sasl_buf.len() as u32).to_be_bytes();
        into.extend(&sasl_len);
        into.extend(&*sasl_buf);
    } else {
        into.extend(&out_buf);
    }
    Ok(())
}

impl Encoder<(RequestId, Tag, MaybeControls)> for LdapCodec {
    type Error = io::Error;

    fn encode(
        &mut self,
        msg: (RequestId, Tag, MaybeControls),
        into: &mut BytesMut,
    ) -> io::Result<()> {
        let (id, tag, controls) = msg;
        let outstruct = {
            let mut msg = vec![
                Tag::Integer(Integer {
                    inner: id as i64,
                    ..Default::default()
                }),
                tag,
            ];
            if let Some(controls) = controls {
                msg.push(Tag::StructureTag(StructureTag {
                    id: 0,
                    class: TagClass::Context,
                    payload: PL::C(controls.into_iter().map(build_tag).collect()),
                }));
            }
            Tag::Sequence(Sequence {
                inner: msg,
                ..Default::default()
            })
            .into_structure()
        };
        maybe_wrap(self, outstruct, into)?;
        Ok(())
    }
}

/// mfasync patch: `parse_ber` gives what `lber`'s parser gives.
#[cfg(test)]
mod mfasync_patch_tests {
    use super::*;
    use crate::LdapResult;
    use std::cell::Cell;

    thread_local! {
        /// The deepest nesting `parse_ber` was called at on this thread.
        pub(super) static DEEPEST: Cell<usize> = const { Cell::new(0) };
    }

    fn lber(i: &[u8]) -> Result<(usize, StructureTag), bool> {
        match lber::Parser::new().parse(i) {
            Ok((rest, tag)) => Ok((i.len() - rest.len(), tag)),
            Err(e) => Err(e.is_incomplete()),
        }
    }

    fn ours(i: &[u8]) -> Result<(usize, StructureTag), bool> {
        parse_ber(i, 0, &mut { usize::MAX }).map_err(|e| matches!(e, BerError::Incomplete))
    }

    #[test]
    fn parse_ber_matches_lber() {
        // a search result entry: SEQUENCE { msgid, [APPLICATION 4] { dn, attrs } }
        let entry: Vec<u8> = vec![
            0x30, 0x2c, 0x02, 0x01, 0x07, 0x64, 0x27, 0x04, 0x0b, b'u', b'i', b'd', b'=', b'a',
            b',', b'd', b'c', b'=', b'x', b'y', 0x30, 0x18, 0x30, 0x16, 0x04, 0x03, b'u', b'i',
            b'd', 0x31, 0x0f, 0x04, 0x01, b'a', 0x04, 0x81, 0x02, b'b', b'c', 0x04, 0x00, 0x04,
            0x80, 0x04, 0x01, 0xff,
        ];
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x04],
            vec![0x04, 0x82, 0x01],
            vec![0x04, 0x82, 0x00, 0x01, 0xaa],
            vec![0x04, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            vec![0x1f, 0x01, 0x00],
            vec![0xff, 0x00],
            vec![0x30, 0x03, 0x04, 0x05, 0x00],
            vec![0xa0, 0x00, 0x01],
        ];
        for n in 0..=entry.len() {
            inputs.push(entry[..n].to_vec());
        }
        let mut twice = entry.clone();
        twice.extend_from_slice(&entry);
        inputs.push(twice);
        // every byte value in every position of the entry
        for pos in 0..entry.len() {
            for b in [
                0x00, 0x01, 0x1f, 0x20, 0x30, 0x7f, 0x80, 0x81, 0x84, 0x88, 0xa0, 0xff,
            ] {
                let mut e = entry.clone();
                e[pos] = b;
                inputs.push(e);
            }
        }
        for i in &inputs {
            assert_eq!(ours(i), lber(i), "{i:02x?}");
        }
    }

    /// A BER element with a definite length (short or long form).
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (8 - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    /// `levels` SEQUENCEs, each inside the one before, around an empty
    /// OCTET STRING.
    fn nested(levels: usize) -> Vec<u8> {
        let mut m = vec![0x04, 0x00];
        for _ in 0..levels {
            m = tlv(0x30, &m);
        }
        m
    }

    /// LDAPMessage { id, op, controls (already encoded) }.
    fn message(id: u8, op: &[u8], controls: &[u8]) -> Vec<u8> {
        let mut body = tlv(0x02, &[id]);
        body.extend_from_slice(op);
        body.extend_from_slice(controls);
        tlv(0x30, &body)
    }

    fn search_done(code: u8) -> Vec<u8> {
        let mut r = tlv(0x0a, &[code]);
        r.extend(tlv(0x04, b""));
        r.extend(tlv(0x04, b"text"));
        tlv(0x65, &r)
    }

    fn entry(dn: &[u8]) -> Vec<u8> {
        let vals = tlv(0x31, &tlv(0x04, b"a"));
        let mut attr = tlv(0x04, b"uid");
        attr.extend(vals);
        let mut e = tlv(0x04, dn);
        e.extend(tlv(0x30, &tlv(0x30, &attr)));
        tlv(0x64, &e)
    }

    fn decode(bytes: &[u8]) -> Result<Option<Decoded>, Malformed> {
        decode_inner(&mut BytesMut::from(bytes), DEFAULT_MAX_MESSAGE_BYTES)
    }

    fn depth(t: &StructureTag) -> usize {
        match &t.payload {
            PL::P(_) => 1,
            PL::C(v) => 1 + v.iter().map(depth).max().unwrap_or(0),
        }
    }

    #[test]
    fn nesting_stops_at_the_bound_without_deep_recursion() {
        // 32 nested constructed elements are accepted, 33 are not
        let ok = nested(MAX_BER_DEPTH);
        let (used, tag) = parse_ber(&ok, 0, &mut { usize::MAX }).unwrap();
        assert_eq!((used, depth(&tag)), (ok.len(), MAX_BER_DEPTH + 1));
        assert_eq!(ours(&ok), lber(&ok));
        for levels in [MAX_BER_DEPTH + 1, 1000, 40_000] {
            let deep = nested(levels);
            match parse_ber(&deep, 0, &mut { usize::MAX }) {
                Err(BerError::Invalid(why)) => assert!(why.contains("deeper than 32"), "{why}"),
                other => panic!("{levels} levels: {other:?}"),
            }
            let e = decode(&deep).unwrap_err();
            assert!(e.0.contains("nested deeper than 32 levels"), "{e:?}");
            assert!(parse_ber_bounded(&deep).is_none());
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let good = message(7, &entry(b"uid=a,dc=x"), b"");
        let Some((7, (Tag::StructureTag(op), ctrls))) = decode(&good).unwrap() else {
            panic!("a search entry");
        };
        assert_eq!((op.id, ctrls.len()), (4, 0));
        for (bad, why) in [
            (vec![0x30, 0x00], "without a message ID"),
            (message(1, b"", b""), "without a message ID"),
            (tlv(0x30, &tlv(0x04, b"x")), "without a message ID"),
            (
                tlv(0x30, &[tlv(0x04, b"1"), entry(b"x")].concat()),
                "message ID",
            ),
            (
                tlv(0x30, &[tlv(0xa2, b""), entry(b"x")].concat()),
                "message ID",
            ),
            (vec![0x04, 0x00], "not a SEQUENCE"),
            (message(1, &tlv(0x65, b""), b""), "malformed result"),
            (message(1, &[0x45, 0x00], b""), "malformed result"),
            (
                message(1, &tlv(0x65, &tlv(0x0a, &[0])), b""),
                "malformed result",
            ),
            (
                message(
                    1,
                    &tlv(
                        0x61,
                        &[tlv(0x0a, &[0]), tlv(0x04, &[0xff]), tlv(0x04, b"")].concat(),
                    ),
                    b"",
                ),
                "malformed result",
            ),
            (
                message(1, &search_done(0), &[0x80, 0x00]),
                "controls that are not",
            ),
            (
                message(1, &search_done(0), &tlv(0xa0, &tlv(0x30, b""))),
                "malformed controls",
            ),
            (
                message(
                    1,
                    &search_done(0),
                    &tlv(
                        0xa0,
                        &tlv(0x30, &[tlv(0x04, b"1.2"), tlv(0x01, b"")].concat()),
                    ),
                ),
                "malformed controls",
            ),
            (
                message(
                    1,
                    &search_done(0),
                    &tlv(
                        0xa0,
                        &tlv(0x30, &[tlv(0x04, b"1.2"), tlv(0x02, b"")].concat()),
                    ),
                ),
                "malformed controls",
            ),
            (
                message(
                    1,
                    &search_done(0),
                    &tlv(
                        0xa0,
                        &tlv(0x30, &[tlv(0x04, &[0xc3]), tlv(0x04, b"")].concat()),
                    ),
                ),
                "malformed controls",
            ),
            // an element that runs past the end of the message
            (vec![0x30, 0x05, 0x02, 0x01, 0x01, 0x04, 0x09], "runs past"),
        ] {
            match decode(&bad) {
                Err(Malformed(m)) => assert!(m.contains(why), "{bad:02x?}: {m}"),
                Ok(o) => panic!("{bad:02x?} decoded: {o:?}"),
            }
        }
        // a result with a referral, controls with criticality and value
        let mut r = tlv(0x0a, &[10]);
        r.extend(tlv(0x04, b""));
        r.extend(tlv(0x04, b""));
        r.extend(tlv(0xa3, &tlv(0x04, b"ldap://b/")));
        let ctrl = tlv(
            0x30,
            &[tlv(0x04, b"1.2.3"), tlv(0x01, &[0xff]), tlv(0x04, b"v")].concat(),
        );
        let m = message(2, &tlv(0x65, &r), &tlv(0xa0, &ctrl));
        let Some((2, (tag, ctrls))) = decode(&m).unwrap() else {
            panic!("a result");
        };
        assert!(ctrls[0].1.crit && ctrls[0].1.val.as_deref() == Some(&b"v"[..]));
        let res = LdapResult::from(tag);
        assert_eq!((res.rc, res.refs), (10, vec!["ldap://b/".to_string()]));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header() {
        // 2^40 bytes announced: refused with nine bytes in hand
        let mut buf = BytesMut::from(&[0x30, 0x86, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02][..]);
        let e = decode_inner(&mut buf, DEFAULT_MAX_MESSAGE_BYTES).unwrap_err();
        assert_eq!(
            e.0,
            "a message of 1099511627784 bytes, over the limit of 16777216 bytes"
        );
        assert!(
            decode(&[0x30, 0x89, 1, 0, 0, 0, 0, 0, 0, 0, 0])
                .unwrap_err()
                .0
                .contains("length of 9 octets")
        );
        // at the limit: waits for the rest, with room made for it once
        let mut buf = BytesMut::from(&[0x30, 0x83, 0x00, 0x01, 0x00][..]);
        assert!(decode_inner(&mut buf, 256 + 5).unwrap().is_none());
        assert!(buf.capacity() >= 256 + 5);
        assert!(decode_inner(&mut buf, 256 + 4).is_err());
        // incomplete headers wait
        for part in [&[][..], &[0x30], &[0x30, 0x84, 0x00]] {
            assert!(decode(part).unwrap().is_none());
        }
        // a message of tiny elements that would decode to much more
        let mut values = Vec::new();
        for _ in 0..30_000 {
            values.extend_from_slice(&[0x04, 0x00]);
        }
        let m = message(
            1,
            &tlv(0x64, &[tlv(0x04, b"x"), tlv(0x30, &values)].concat()),
            b"",
        );
        assert!(decode_inner(&mut BytesMut::from(&m[..]), 1 << 20).is_ok());
        let e = decode_inner(&mut BytesMut::from(&m[..]), 64 << 10).unwrap_err();
        assert!(e.0.contains("too much memory"), "{e:?}");
    }

    #[test]
    fn active_directory_notice_of_disconnection_still_decodes() {
        let mut r = tlv(0x0a, &[52]);
        r.extend(tlv(0x04, b""));
        r.extend(tlv(0x04, b"bye"));
        let mut m = tlv(0x02, &[0]);
        m.extend(tlv(0x78, &r));
        m.extend(tlv(0x8a, b"1.3.6.1.4.1.1466.20036"));
        let Some((0, (Tag::StructureTag(op), _))) = decode(&tlv(0x30, &m)).unwrap() else {
            panic!("decoded");
        };
        assert_eq!(op.id, 24);
    }

    /// Inputs that made the decoder (or what reads its output) panic, abort
    /// or buffer without end before the mfasync patch's checks; each must
    /// now be a decoding error.
    const REGRESSIONS: &[(&str, &str)] = &[
        ("empty LDAPMessage (tags.pop().expect)", "3000"),
        ("message ID alone (tags.pop().expect)", "3003020101"),
        ("message ID not an INTEGER (expect)", "3005 040131 6400"),
        (
            "empty criticality BOOLEAN (v[0])",
            "3015020101 6507 0a0100 0400 0400 a007 3005 040131 0100",
        ),
        (
            "criticality neither BOOLEAN nor OCTET STRING (panic)",
            "3015020101 6507 0a0100 0400 0400 a007 3005 040131 0200",
        ),
        (
            "control OID not UTF-8 (expect)",
            "3013020101 6507 0a0100 0400 0400 a005 3003 0401ff",
        ),
        (
            "SearchResultDone as a primitive (expect)",
            "3005020101 6500",
        ),
        (
            "result code not ENUMERATED (expect)",
            "300c020101 6507 020100 0400 0400",
        ),
        (
            "matched DN not UTF-8 (expect)",
            "300d020101 6508 0a0100 0401ff 0400",
        ),
        (
            "referral as a primitive (expect)",
            "300e020101 6509 0a0100 0400 0400 8300",
        ),
        (
            "extended response name not UTF-8 (expect)",
            "300f020101 780a 0a0100 0400 0400 8a01ff",
        ),
        (
            "element past its message (waited, buffering, forever)",
            "3005 020101 0409",
        ),
        (
            "length of 9 octets (misread as 1, then waited forever)",
            "3089 010000000000000001 02",
        ),
    ];

    fn unhex(h: &str) -> Vec<u8> {
        let h: String = h.split_whitespace().collect();
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn regressions_are_decoding_errors() {
        for (what, hex) in REGRESSIONS {
            let m = unhex(hex);
            assert!(decode(&m).is_err(), "{what}: {m:02x?}");
        }
        assert!(decode(&nested(40_000)).is_err());
    }

    /// xorshift64*: a fixed sequence, so a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// What decoding a stream gave: per message (id, operation tag, result
    /// code of a result), or the error that ended it.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Message(i32, u64, Option<u32>, usize),
        Error(String),
    }

    /// Decode `input` fed in the chunks `cuts` gives (a whole message
    /// at a time or a few bytes at a time), checking every message decoded:
    /// no tree deeper than the bound, results readable without a panic.
    fn decode_stream(input: &[u8], rng: Option<&mut Rng>) -> Vec<Outcome> {
        let max = 1 << 20;
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut rng = rng;
        loop {
            DEEPEST.with(|d| d.set(0));
            let r = decode_inner(&mut buf, max);
            assert!(DEEPEST.with(Cell::get) <= MAX_BER_DEPTH, "{input:02x?}");
            match r {
                Ok(Some((id, (Tag::StructureTag(op), ctrls)))) => {
                    assert!(depth(&op) <= MAX_BER_DEPTH);
                    let rc = RESULT_OPS
                        .contains(&op.id)
                        .then(|| LdapResult::from(Tag::StructureTag(op.clone())).rc);
                    out.push(Outcome::Message(id, op.id, rc, ctrls.len()));
                }
                Ok(Some(other)) => panic!("not a structure: {other:?}"),
                Ok(None) if fed == input.len() => return out,
                Ok(None) => {
                    let n = match rng.as_deref_mut() {
                        Some(r) => 1 + r.below(8),
                        None => input.len(),
                    };
                    let end = (fed + n).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Err(Malformed(why)) => {
                    out.push(Outcome::Error(why));
                    return out;
                }
            }
        }
    }

    fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
        const INTERESTING: [u8; 14] = [
            0x00, 0x01, 0x02, 0x04, 0x0a, 0x30, 0x31, 0x65, 0x7f, 0x80, 0x81, 0x84, 0xa0, 0xff,
        ];
        let mut m = corpus[rng.below(corpus.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(m.len() + 1);
            let last = m.len().saturating_sub(1);
            match rng.below(8) {
                0 if !m.is_empty() => m[at.min(last)] = rng.next() as u8,
                1 if !m.is_empty() => m[at.min(last)] = INTERESTING[rng.below(INTERESTING.len())],
                2 => m.truncate(at),
                3 => {
                    for _ in 0..1 + rng.below(6) {
                        m.insert(at, rng.next() as u8);
                    }
                }
                4 => {
                    let end = (at + 1 + rng.below(8)).min(m.len());
                    m.drain(at.min(end)..end);
                }
                5 => {
                    let end = (at + 1 + rng.below(16)).min(m.len());
                    let piece = m[at.min(end)..end].to_vec();
                    let to = rng.below(m.len() + 1);
                    m.splice(to..to, piece);
                }
                6 => {
                    for _ in 0..1 + rng.below(40) {
                        m = tlv(0x30, &m);
                    }
                }
                _ => {
                    // a whole other seed after it (two messages in a row)
                    let other = corpus[rng.below(corpus.len())].clone();
                    m.extend(other);
                }
            }
        }
        m
    }

    /// Property test of the decoder on mutations of well-formed messages
    /// and of the regression inputs (a fixed number of cases, a fixed seed:
    /// the same run each time). It never panics or recurses past the bound,
    /// whatever it gets decodes to a readable message or an error, and
    /// feeding a stream a few bytes at a time changes nothing.
    #[test]
    fn fuzz_decoder_never_panics_and_ignores_chunking() {
        let mut r = tlv(0x0a, &[0]);
        r.extend(tlv(0x04, b""));
        r.extend(tlv(0x04, b""));
        r.extend(tlv(0xa3, &tlv(0x04, b"ldap://b/")));
        r.extend(tlv(0x87, b"sasl"));
        let ctrl = tlv(
            0x30,
            &[
                tlv(0x04, b"1.2.840.113556.1.4.319"),
                tlv(0x01, &[0xff]),
                tlv(
                    0x04,
                    &tlv(0x30, &[tlv(0x02, &[0]), tlv(0x04, b"c")].concat()),
                ),
            ]
            .concat(),
        );
        let mut corpus = vec![
            message(3, &entry(b"uid=a,dc=x"), b""),
            message(4, &search_done(0), &tlv(0xa0, &ctrl)),
            message(5, &tlv(0x61, &r), b""),
            message(6, &tlv(0x78, &r), b""),
            message(
                7,
                &tlv(
                    0x79,
                    &[
                        tlv(0x80, b"1.3.6.1.4.1.4203.1.9.1.4"),
                        tlv(0x81, &tlv(0xa1, &tlv(0x04, b"k"))),
                    ]
                    .concat(),
                ),
                b"",
            ),
            message(8, &tlv(0x73, &tlv(0x04, b"ldap://r/")), b""),
            nested(MAX_BER_DEPTH),
            nested(MAX_BER_DEPTH + 1),
        ];
        corpus.extend(REGRESSIONS.iter().map(|(_, h)| unhex(h)));
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoded = 0;
        for _ in 0..20_000 {
            let m = mutate(&mut rng, &corpus);
            let whole = decode_stream(&m, None);
            let chunked = decode_stream(&m, Some(&mut rng));
            assert_eq!(whole, chunked, "{m:02x?}");
            decoded += whole
                .iter()
                .filter(|o| matches!(o, Outcome::Message(..)))
                .count();
        }
        // the mutations also make messages that decode, not only errors
        assert!(decoded > 500, "{decoded}");
    }
}
