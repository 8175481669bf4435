use std::io;
#[cfg(feature = "gssapi")]
use std::sync::RwLock;
#[cfg(feature = "gssapi")]
use std::sync::{Arc, Mutex};

use crate::RequestId;
use crate::controls::{Control, RawControl};
use crate::controls_impl::{build_tag, parse_controls};
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

#[allow(clippy::type_complexity)]
fn decode_inner(buf: &mut BytesMut) -> Result<Option<(RequestId, (Tag, Vec<Control>))>, io::Error> {
    // mfasync patch: made only when needed (it allocates).
    let decoding_error = || io::Error::new(io::ErrorKind::Other, "decoding error");
    // mfasync patch: parsed by `parse_ber` (what `lber::Parser::parse` does,
    // without nom), and the tag moved out instead of cloned.
    let (consumed, tag) = match parse_ber(buf) {
        Err(BerError::Incomplete) => return Ok(None),
        Err(BerError::Invalid) => return Err(decoding_error()),
        Ok(parsed) => parsed,
    };
    buf.advance(consumed);
    let mut tags = match tag
        .match_id(Types::Sequence as u64)
        .and_then(|t| t.expect_constructed())
    {
        Some(tags) => tags,
        None => return Err(decoding_error()),
    };
    let mut maybe_controls = tags.pop().expect("element");
    let has_controls = match maybe_controls {
        StructureTag {
            id,
            class,
            ref payload,
        } if class == TagClass::Context && id == 0 => match *payload {
            PL::C(_) => true,
            PL::P(_) => return Err(decoding_error()),
        },
        StructureTag { id, class, .. } if class == TagClass::Context && id == 10 => {
            // Active Directory bug workaround
            //
            // AD incorrectly encodes Notice of Disconnection messages. The OID of the
            // Unsolicited Notification should be part of the ExtendedResponse sequence
            // but AD puts it outside, where the optional controls belong. This confuses
            // our parser, which doesn't expect the extra sequence element at the end
            // and crashes. This match arm thus ignores the element.
            maybe_controls = tags.pop().expect("element");
            false
        }
        _ => false,
    };
    let (protoop, controls) = if has_controls {
        (tags.pop().expect("element"), Some(maybe_controls))
    } else {
        (maybe_controls, None)
    };
    let controls = match controls {
        Some(controls) => parse_controls(controls),
        None => vec![],
    };
    let msgid = match parse_uint(
        tags.pop()
            .expect("element")
            .match_class(TagClass::Universal)
            .and_then(|t| t.match_id(Types::Integer as u64))
            .and_then(|t| t.expect_primitive())
            .expect("message id")
            .as_slice(),
    ) {
        Ok((_, id)) => id as i32,
        _ => return Err(decoding_error()),
    };
    Ok(Some((msgid, (Tag::StructureTag(protoop), controls))))
}

/// mfasync patch: `lber::parse::parse_tag` without nom, for the same
/// results: a one-byte identifier (class, primitive/constructed, the low five
/// bits as the tag number), a short or long form length, then the content
/// (the elements of a constructed one, parsed in turn). Returns the bytes
/// used and the tag; `Incomplete` wherever lber reports `Incomplete` (input
/// too short, also inside a constructed element).
fn parse_ber(i: &[u8]) -> Result<(usize, StructureTag), BerError> {
    let (header, len) = ber_header(i)?;
    let content = i[header..].get(..len).ok_or(BerError::Incomplete)?;
    let ident = i[0];
    let class = match ident >> 6 {
        0 => TagClass::Universal,
        1 => TagClass::Application,
        2 => TagClass::Context,
        _ => TagClass::Private,
    };
    let payload = if ident & 0x20 == 0 {
        PL::P(content.to_vec())
    } else {
        let mut tv = Vec::with_capacity(count_elements(content));
        let mut at = 0;
        while at < content.len() {
            let (used, sub) = parse_ber(&content[at..])?;
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
    let len = usize::try_from(len).map_err(|_| BerError::Invalid)?;
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
enum BerError {
    /// More input is needed.
    Incomplete,
    /// A length that does not fit in `usize`.
    Invalid,
}

impl Decoder for LdapCodec {
    type Item = (RequestId, (Tag, Vec<Control>));
    type Error = io::Error;

    #[cfg(not(feature = "gssapi"))]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        decode_inner(buf)
    }

    #[cfg(feature = "gssapi")]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        const U32_SIZE: usize = std::mem::size_of::<u32>();

        let sasl_wrap = { self.sasl_param.read().expect("sasl param").0 };
        if !sasl_wrap || buf.is_empty() {
            return decode_inner(buf);
        }
        if self.has_decoded_data {
            let res = decode_inner(buf);
            if res.is_ok() && buf.is_empty() {
                self.has_decoded_data = false;
            }
            return res;
        }
        if buf.len() < U32_SIZE {
            return Err(io::Error::new(io::ErrorKind::Other, "invalid SASL buffer"));
        }
        let sasl_len = u32::from_be_bytes(buf[0..U32_SIZE].try_into().unwrap());
        if buf.len() - U32_SIZE < sasl_len as usize {
            return Ok(None);
        }
        buf.advance(U32_SIZE);
        let client_opt = &mut *self.client_ctx.lock().expect("client ctx lock");
        let client_ctx = client_opt.as_mut().expect("client Option mut ref");
        let mut decoded = client_ctx.unwrap_iov(sasl_len as usize, buf).map_err(|e| {
            io::Error::new(io::ErrorKind::Other, format!("gss_unwrap error: {:#}", e))
        })?;
        let res = decode_inner(&mut decoded);
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

    fn lber(i: &[u8]) -> Result<(usize, StructureTag), bool> {
        match lber::Parser::new().parse(i) {
            Ok((rest, tag)) => Ok((i.len() - rest.len(), tag)),
            Err(e) => Err(e.is_incomplete()),
        }
    }

    fn ours(i: &[u8]) -> Result<(usize, StructureTag), bool> {
        parse_ber(i).map_err(|e| matches!(e, BerError::Incomplete))
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
}
