//! OATH TOTP (RFC 6238 over HOTP, RFC 4226): HMAC-SHA1, 6 digits, 30-second steps, as
//! authenticator apps use by default. The caller passes the time and remembers the last
//! step a user's code was accepted for (a code is accepted once).

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;

/// A new random secret.
pub fn new_secret() -> [u8; SECRET_LEN] {
    let mut s = [0u8; SECRET_LEN];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// The step `unix_secs` falls in.
pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// HOTP of `counter` with `digits` digits (RFC 4226 §5.3).
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(secret) else {
        return 0;
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let binary = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

/// Check a typed `code` at `unix_secs`, one step either side for clock drift. Steps at or
/// before `last_step` (the one a code was last accepted for) are refused: a code, once used,
/// never works again. Returns the step the code matched, to remember.
pub fn verify(secret: &[u8], code: &str, unix_secs: u64, last_step: Option<u64>) -> Option<u64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(unix_secs);
    let mut matched = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        if last_step.is_some_and(|last| step <= last) {
            continue;
        }
        let expected = format!(
            "{:0width$}",
            hotp(secret, step, DIGITS),
            width = DIGITS as usize
        );
        // every candidate is compared, so the time taken says nothing of which matched
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The `otpauth://` URI an authenticator app reads (from a QR code) for `account` of `issuer`.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        percent(issuer),
        percent(account),
        data_encoding::BASE32_NOPAD.encode(secret),
        percent(issuer)
    )
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn hotp_test_vectors_of_rfc_4226() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(
                hotp(RFC_SECRET, counter as u64, 6),
                *want,
                "counter {counter}"
            );
        }
    }

    #[test]
    fn totp_test_vectors_of_rfc_6238_sha1() {
        for (time, want) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(RFC_SECRET, step_at(time), 8), want, "time {time}");
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_once() {
        let t = 1_700_000_000u64;
        let code = |step: u64| format!("{:06}", hotp(RFC_SECRET, step, 6));
        let now = step_at(t);
        assert_eq!(verify(RFC_SECRET, &code(now), t, None), Some(now));
        assert_eq!(verify(RFC_SECRET, &code(now - 1), t, None), Some(now - 1));
        assert_eq!(verify(RFC_SECRET, &code(now + 1), t, None), Some(now + 1));
        assert_eq!(verify(RFC_SECRET, &code(now - 2), t, None), None);
        assert_eq!(verify(RFC_SECRET, &code(now + 2), t, None), None);
        // replay: the step was used
        assert_eq!(verify(RFC_SECRET, &code(now), t, Some(now)), None);
        // an older code after a newer one was used
        assert_eq!(verify(RFC_SECRET, &code(now - 1), t, Some(now)), None);
        assert_eq!(
            verify(RFC_SECRET, &code(now + 1), t, Some(now)),
            Some(now + 1)
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let t = 1_700_000_000u64;
        for bad in ["", "12345", "1234567", "12 456", "abcdef", "１２３４５６"] {
            assert_eq!(verify(RFC_SECRET, bad, t, None), None, "{bad:?}");
        }
    }

    #[test]
    fn the_uri_names_issuer_account_and_secret() {
        let uri = otpauth_uri(b"12345678901234567890", "MFA Corp", "alice@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/MFA%20Corp:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=MFA%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        assert_ne!(new_secret(), new_secret());
    }
}
