//! The packet authentication of RFC 2865 and RFC 3579: User-Password hiding (§5.2), the
//! Response Authenticator (§3) and the Message-Authenticator (RFC 3579 §3.2), which every
//! request must carry and every reply carries, first (the BLAST-RADIUS mitigation).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::packet::{attr, Attribute, Code, EncodeError, Packet, HEADER_LEN};

/// What a request's Message-Authenticator says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageAuth {
    /// Present once and right for the shared secret.
    Valid,
    /// Absent.
    Missing,
    /// Wrong (another secret, a changed packet), not 16 bytes, or more than one.
    Invalid,
}

/// Check the Message-Authenticator of a request as received (`raw`, the datagram):
/// HMAC-MD5 keyed with the secret over the packet with that attribute's value zeroed.
pub fn verify_request(raw: &[u8], packet: &Packet, secret: &[u8]) -> MessageAuth {
    match packet.count(attr::MESSAGE_AUTHENTICATOR) {
        0 => return MessageAuth::Missing,
        1 => {}
        _ => return MessageAuth::Invalid,
    }
    let Some(body) = raw
        .get(2..4)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        .and_then(|len| raw.get(..len))
    else {
        return MessageAuth::Invalid;
    };
    let Some(offset) = attribute_offset(body, attr::MESSAGE_AUTHENTICATOR) else {
        return MessageAuth::Invalid;
    };
    let Some(given) = body
        .get(offset + 2..offset + 18)
        .filter(|_| body.get(offset + 1) == Some(&18))
    else {
        return MessageAuth::Invalid;
    };
    let mut zeroed = body.to_vec();
    zeroed[offset + 2..offset + 18].fill(0);
    if bool::from(hmac_md5(secret, &zeroed).ct_eq(given)) {
        MessageAuth::Valid
    } else {
        MessageAuth::Invalid
    }
}

/// The reply (`code`: Access-Accept, -Reject or -Challenge) to `request`: a
/// Message-Authenticator first, then `attributes`, then the Response Authenticator.
pub fn reply(
    request: &Packet,
    code: Code,
    attributes: Vec<Attribute>,
    secret: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut all = Vec::with_capacity(attributes.len() + 1);
    all.push(Attribute::new(attr::MESSAGE_AUTHENTICATOR, vec![0u8; 16]));
    all.extend(attributes);
    let packet = Packet {
        code,
        identifier: request.identifier,
        authenticator: request.authenticator,
        attributes: all,
    };
    let mut bytes = packet.encode()?;
    // the Message-Authenticator is computed with the Request Authenticator in the header
    let mac = hmac_md5(secret, &bytes);
    bytes[HEADER_LEN + 2..HEADER_LEN + 18].copy_from_slice(&mac);
    let mut md5 = Md5::new();
    md5.update(&bytes);
    md5.update(secret);
    bytes[4..HEADER_LEN].copy_from_slice(&md5.finalize());
    Ok(bytes)
}

/// A request as a client sends it: `packet` with a Message-Authenticator appended and
/// computed (for tests, benchmarks and tools).
pub fn signed_request(packet: &Packet, secret: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut signed = packet.clone();
    signed
        .attributes
        .push(Attribute::new(attr::MESSAGE_AUTHENTICATOR, vec![0u8; 16]));
    let mut bytes = signed.encode()?;
    let mac = hmac_md5(secret, &bytes);
    let at = bytes.len() - 16;
    bytes[at..].copy_from_slice(&mac);
    Ok(bytes)
}

/// Why a User-Password cannot be recovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("User-Password of {0} bytes: must be 16 to 128, a multiple of 16")]
    Length(usize),
}

/// Recover a password hidden by the client (RFC 2865 §5.2); trailing NUL padding removed.
pub fn unhide_password(
    hidden: &[u8],
    secret: &[u8],
    authenticator: &[u8; 16],
) -> Result<Vec<u8>, PasswordError> {
    if hidden.is_empty() || hidden.len() > 128 || !hidden.len().is_multiple_of(16) {
        return Err(PasswordError::Length(hidden.len()));
    }
    let mut out = Vec::with_capacity(hidden.len());
    let mut previous: &[u8] = authenticator;
    for block in hidden.chunks(16) {
        let pad = md5_of(secret, previous);
        out.extend(block.iter().zip(pad.iter()).map(|(c, p)| c ^ p));
        previous = block;
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    Ok(out)
}

/// Hide a password as a client does (RFC 2865 §5.2): NUL-padded to a multiple of 16.
/// For tests and tools; the server only unhides.
pub fn hide_password(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let mut padded = password.to_vec();
    let blocks = padded.len().div_ceil(16).max(1);
    padded.resize(blocks * 16, 0);
    let mut out: Vec<u8> = Vec::with_capacity(padded.len());
    for (i, block) in padded.chunks(16).enumerate() {
        let previous: &[u8] = if i == 0 {
            authenticator
        } else {
            &out[(i - 1) * 16..i * 16]
        };
        let pad = md5_of(secret, previous);
        let hidden: Vec<u8> = block.iter().zip(pad.iter()).map(|(c, p)| c ^ p).collect();
        out.extend(hidden);
    }
    out
}

fn md5_of(secret: &[u8], previous: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(secret);
    md5.update(previous);
    md5.finalize().into()
}

fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    // HMAC takes a key of any length: new_from_slice cannot fail for it
    let mut mac = match <Hmac<Md5> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 16],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Offset of the first attribute of `kind` in a packet already decoded (so well formed).
fn attribute_offset(raw: &[u8], kind: u8) -> Option<usize> {
    let mut offset = HEADER_LEN;
    while offset + 1 < raw.len() {
        if raw[offset] == kind {
            return Some(offset);
        }
        offset += usize::from(raw[offset + 1]).max(2);
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"xyzzy5461";

    fn signed_request(secret: &[u8]) -> (Vec<u8>, Packet) {
        let auth = [0x42; 16];
        let mut p = Packet {
            code: Code::AccessRequest,
            identifier: 1,
            authenticator: auth,
            attributes: vec![
                Attribute::new(attr::USER_NAME, "nemo"),
                Attribute::new(
                    attr::USER_PASSWORD,
                    hide_password(b"arctangent", secret, &auth),
                ),
                Attribute::new(attr::MESSAGE_AUTHENTICATOR, vec![0u8; 16]),
            ],
        };
        let mut bytes = p.encode().unwrap();
        let mac = hmac_md5(secret, &bytes);
        let at = bytes.len() - 16;
        bytes[at..].copy_from_slice(&mac);
        p = Packet::decode(&bytes).unwrap();
        (bytes, p)
    }

    #[test]
    fn passwords_of_every_length_round_trip() {
        let auth = [9u8; 16];
        for len in [1usize, 15, 16, 17, 31, 32, 100, 128] {
            let pw: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let hidden = hide_password(&pw, SECRET, &auth);
            assert_eq!(hidden.len(), len.div_ceil(16) * 16);
            assert_ne!(&hidden[..len.min(16)], &pw[..len.min(16)]);
            assert_eq!(unhide_password(&hidden, SECRET, &auth).unwrap(), pw);
        }
    }

    #[test]
    fn a_hidden_password_of_a_wrong_length_is_refused() {
        let auth = [0u8; 16];
        assert_eq!(
            unhide_password(&[1; 15], SECRET, &auth),
            Err(PasswordError::Length(15))
        );
        assert_eq!(
            unhide_password(&[], SECRET, &auth),
            Err(PasswordError::Length(0))
        );
        assert_eq!(
            unhide_password(&[1; 144], SECRET, &auth),
            Err(PasswordError::Length(144))
        );
    }

    #[test]
    fn the_message_authenticator_is_checked_with_the_secret() {
        let (bytes, p) = signed_request(SECRET);
        assert_eq!(verify_request(&bytes, &p, SECRET), MessageAuth::Valid);
        assert_eq!(verify_request(&bytes, &p, b"another"), MessageAuth::Invalid);
        let mut changed = bytes.clone();
        changed[22] ^= 1; // a byte of User-Name
        let q = Packet::decode(&changed).unwrap();
        assert_eq!(verify_request(&changed, &q, SECRET), MessageAuth::Invalid);
        let mut none = p.clone();
        none.attributes.pop();
        let raw = none.encode().unwrap();
        assert_eq!(verify_request(&raw, &none, SECRET), MessageAuth::Missing);
    }

    #[test]
    fn a_reply_carries_both_authenticators() {
        let (_, request) = signed_request(SECRET);
        let bytes = reply(
            &request,
            Code::AccessAccept,
            vec![Attribute::new(attr::REPLY_MESSAGE, "welcome")],
            SECRET,
        )
        .unwrap();
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.code, Code::AccessAccept);
        assert_eq!(p.identifier, request.identifier);
        assert_eq!(p.attributes[0].kind, attr::MESSAGE_AUTHENTICATOR);
        // Response Authenticator: MD5(reply with the Request Authenticator, then the secret)
        let mut with_request_auth = bytes.clone();
        with_request_auth[4..20].copy_from_slice(&request.authenticator);
        let mut md5 = Md5::new();
        md5.update(&with_request_auth);
        md5.update(SECRET);
        assert_eq!(&bytes[4..20], md5.finalize().as_slice());
        // Message-Authenticator: over the reply with the Request Authenticator and itself zeroed
        let mut zeroed = with_request_auth;
        zeroed[22..38].fill(0);
        assert_eq!(&bytes[22..38], &hmac_md5(SECRET, &zeroed));
    }
}
