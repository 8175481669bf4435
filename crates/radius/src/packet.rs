//! RADIUS packets (RFC 2865 §3, §5): decode a datagram, encode a reply. Lengths are checked
//! before any slice is taken; bytes after the Length field are padding and ignored.

/// Code, identifier, length and authenticator.
pub const HEADER_LEN: usize = 20;
/// The largest packet RFC 2865 allows.
pub const MAX_LEN: usize = 4096;
/// The largest attribute value (the length octet counts the 2-byte header too).
pub const MAX_VALUE_LEN: usize = 253;

/// Attribute types mfasync reads or writes.
pub mod attr {
    pub const USER_NAME: u8 = 1;
    pub const USER_PASSWORD: u8 = 2;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const REPLY_MESSAGE: u8 = 18;
    pub const STATE: u8 = 24;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
}

/// A packet's Code (RFC 2865 §3, RFC 5997).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    AccessRequest,
    AccessAccept,
    AccessReject,
    AccountingRequest,
    AccountingResponse,
    AccessChallenge,
    StatusServer,
    Other(u8),
}

impl Code {
    pub fn from_u8(v: u8) -> Code {
        match v {
            1 => Code::AccessRequest,
            2 => Code::AccessAccept,
            3 => Code::AccessReject,
            4 => Code::AccountingRequest,
            5 => Code::AccountingResponse,
            11 => Code::AccessChallenge,
            12 => Code::StatusServer,
            other => Code::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::AccountingRequest => 4,
            Code::AccountingResponse => 5,
            Code::AccessChallenge => 11,
            Code::StatusServer => 12,
            Code::Other(v) => v,
        }
    }
}

/// One attribute: its type and raw value.
#[derive(Clone, PartialEq, Eq)]
pub struct Attribute {
    pub kind: u8,
    pub value: Vec<u8>,
}

impl Attribute {
    pub fn new(kind: u8, value: impl Into<Vec<u8>>) -> Attribute {
        Attribute {
            kind,
            value: value.into(),
        }
    }
}

/// The value of a User-Password is never shown, even hidden as it is on the wire.
impl std::fmt::Debug for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Attribute");
        d.field("kind", &self.kind);
        if self.kind == attr::USER_PASSWORD {
            d.field(
                "value",
                &format_args!("<{} bytes, not shown>", self.value.len()),
            );
        } else {
            d.field("value", &self.value);
        }
        d.finish()
    }
}

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub code: Code,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub attributes: Vec<Attribute>,
}

/// Why a datagram is not a RADIUS packet (it is then dropped, RFC 2865 §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes: shorter than the 20-byte RADIUS header")]
    Short(usize),
    #[error("Length field {field} is outside 20..=4096 or above the {received} bytes received")]
    Length { field: usize, received: usize },
    #[error("attribute at offset {offset}: length octet {length} (must be 2 or more and fit the packet)")]
    Attribute { offset: usize, length: usize },
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("attribute {kind}: a value of {len} bytes (at most 253)")]
    ValueTooLong { kind: u8, len: usize },
    #[error("packet of {0} bytes (at most 4096)")]
    TooLong(usize),
}

impl Packet {
    /// Decode a datagram.
    pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
        let header = buf.get(..HEADER_LEN).ok_or(DecodeError::Short(buf.len()))?;
        let field = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if !(HEADER_LEN..=MAX_LEN).contains(&field) || field > buf.len() {
            return Err(DecodeError::Length {
                field,
                received: buf.len(),
            });
        }
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(&header[4..HEADER_LEN]);
        let mut attributes = Vec::new();
        let mut offset = HEADER_LEN;
        while offset < field {
            let length = buf.get(offset + 1).map_or(0, |l| usize::from(*l));
            let value = (length >= 2)
                .then(|| buf.get(offset + 2..offset + length))
                .flatten()
                .filter(|_| offset + length <= field)
                .ok_or(DecodeError::Attribute { offset, length })?;
            attributes.push(Attribute::new(buf[offset], value));
            offset += length;
        }
        Ok(Packet {
            code: Code::from_u8(header[0]),
            identifier: header[1],
            authenticator,
            attributes,
        })
    }

    /// Encode, with the authenticator as it is in `self`.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.push(self.code.to_u8());
        out.push(self.identifier);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.authenticator);
        for a in &self.attributes {
            if a.value.len() > MAX_VALUE_LEN {
                return Err(EncodeError::ValueTooLong {
                    kind: a.kind,
                    len: a.value.len(),
                });
            }
            out.push(a.kind);
            out.push((a.value.len() + 2) as u8);
            out.extend_from_slice(&a.value);
        }
        let len = u16::try_from(out.len())
            .ok()
            .filter(|l| usize::from(*l) <= MAX_LEN)
            .ok_or(EncodeError::TooLong(out.len()))?;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    /// The value of the first attribute of `kind`.
    pub fn attribute(&self, kind: u8) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.value.as_slice())
    }

    /// How many attributes of `kind` the packet holds.
    pub fn count(&self, kind: u8) -> usize {
        self.attributes.iter().filter(|a| a.kind == kind).count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    fn request() -> Packet {
        Packet {
            code: Code::AccessRequest,
            identifier: 7,
            authenticator: [3; 16],
            attributes: vec![
                Attribute::new(attr::USER_NAME, "alice"),
                Attribute::new(attr::STATE, vec![0u8; 0]),
            ],
        }
    }

    #[test]
    fn encode_then_decode_gives_the_packet_back() {
        let p = request();
        let bytes = p.encode().unwrap();
        assert_eq!(bytes.len(), 20 + 7 + 2);
        assert_eq!(&bytes[2..4], &[0, 29]);
        assert_eq!(Packet::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn padding_after_the_length_field_is_ignored() {
        let mut bytes = request().encode().unwrap();
        bytes.extend_from_slice(&[0xff; 9]);
        assert_eq!(Packet::decode(&bytes).unwrap(), request());
    }

    #[test]
    fn a_truncated_packet_or_attribute_is_an_error() {
        let bytes = request().encode().unwrap();
        assert_eq!(Packet::decode(&bytes[..10]), Err(DecodeError::Short(10)));
        assert!(matches!(
            Packet::decode(&bytes[..25]),
            Err(DecodeError::Length {
                field: 29,
                received: 25
            })
        ));
        let mut bad = bytes.clone();
        bad[21] = 1; // User-Name's length octet below 2
        assert!(matches!(
            Packet::decode(&bad),
            Err(DecodeError::Attribute {
                offset: 20,
                length: 1
            })
        ));
        let mut over = bytes;
        over[21] = 40; // runs past the Length field
        assert!(matches!(
            Packet::decode(&over),
            Err(DecodeError::Attribute { offset: 20, .. })
        ));
    }

    #[test]
    fn values_longer_than_253_bytes_are_refused() {
        let mut p = request();
        p.attributes
            .push(Attribute::new(attr::REPLY_MESSAGE, vec![b'x'; 254]));
        assert_eq!(
            p.encode(),
            Err(EncodeError::ValueTooLong {
                kind: attr::REPLY_MESSAGE,
                len: 254
            })
        );
    }

    #[test]
    fn a_password_attribute_is_not_shown_by_debug() {
        let a = Attribute::new(attr::USER_PASSWORD, b"hunter2-hidden!!".to_vec());
        let shown = format!("{a:?}");
        assert!(shown.contains("16 bytes, not shown"), "{shown}");
        assert!(!shown.contains("104"), "{shown}"); // 'h'
    }

    proptest! {
        #![proptest_config(Config {
            cases: 2000,
            rng_seed: RngSeed::Fixed(0x7261_6469_7573_0001),
            failure_persistence: None,
            ..Config::default()
        })]

        /// Any datagram decodes or is refused, never a panic; what decodes encodes back to
        /// the bytes up to its Length field.
        #[test]
        fn any_datagram_decodes_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(p) = Packet::decode(&bytes) {
                let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
                prop_assert_eq!(p.encode().unwrap(), bytes[..len].to_vec());
            }
        }

        /// Well-formed packets (random attributes) round-trip.
        #[test]
        fn packets_round_trip(
            id in any::<u8>(),
            auth in any::<[u8; 16]>(),
            attrs in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..20),
        ) {
            let p = Packet {
                code: Code::AccessRequest,
                identifier: id,
                authenticator: auth,
                attributes: attrs.into_iter().map(|(k, v)| Attribute::new(k, v)).collect(),
            };
            prop_assert_eq!(Packet::decode(&p.encode().unwrap()).unwrap(), p);
        }
    }
}
