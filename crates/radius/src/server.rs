//! The server's bookkeeping that needs no IO: what an Access-Request asks
//! ([`read_request`]), retransmissions answered from a cache ([`Duplicates`]),
//! the State of a pending challenge ([`Challenges`]) and a code appended to the
//! password ([`split_code`]). Time is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::auth::{unhide_password, verify_request, MessageAuth, PasswordError};
use crate::packet::{attr, Code, DecodeError, Packet};

/// An Access-Request a client may be answered for.
pub struct Request {
    pub packet: Packet,
    pub user_name: String,
    /// The User-Password, unhidden (never shown by `Debug`).
    pub password: Vec<u8>,
    /// The State of an earlier Access-Challenge, when the request answers one.
    pub state: Option<Vec<u8>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("identifier", &self.packet.identifier)
            .field("user_name", &self.user_name)
            .field("password", &"<not shown>")
            .field("state", &self.state.is_some())
            .finish()
    }
}

/// Why a datagram gets no answer (RFC 2865 §3, RFC 3579 §3.2: silently discarded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("not a RADIUS packet: {0}")]
    Malformed(#[from] DecodeError),
    #[error("not an Access-Request (code {0})")]
    NotAccessRequest(u8),
    #[error("no Message-Authenticator, required for this client")]
    MessageAuthenticatorMissing,
    #[error("wrong Message-Authenticator (another shared secret?)")]
    MessageAuthenticatorInvalid,
}

impl Dropped {
    /// The label of the metrics and the log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Dropped::Malformed(_) => "malformed",
            Dropped::NotAccessRequest(_) => "not-access-request",
            Dropped::MessageAuthenticatorMissing => "message-authenticator-missing",
            Dropped::MessageAuthenticatorInvalid => "message-authenticator-invalid",
        }
    }
}

/// Why an authenticated Access-Request is answered Access-Reject before any password check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("no User-Name")]
    NoUserName,
    #[error("no User-Password (only PAP is supported)")]
    NoPassword,
    #[error("{0}")]
    Password(#[from] PasswordError),
}

/// Read a datagram from a known client: `Ok(Ok)` a request to check, `Ok(Err)` one to
/// reject at once, `Err` one to drop. Without `require_message_authenticator`, a request
/// without one is accepted (a wrong one never is).
pub fn read_request(
    raw: &[u8],
    secret: &[u8],
    require_message_authenticator: bool,
) -> Result<Result<Request, (Packet, Unusable)>, Dropped> {
    let packet = Packet::decode(raw)?;
    if packet.code != Code::AccessRequest {
        return Err(Dropped::NotAccessRequest(packet.code.to_u8()));
    }
    match verify_request(raw, &packet, secret) {
        MessageAuth::Valid => {}
        MessageAuth::Missing if !require_message_authenticator => {}
        MessageAuth::Missing => return Err(Dropped::MessageAuthenticatorMissing),
        MessageAuth::Invalid => return Err(Dropped::MessageAuthenticatorInvalid),
    }
    let user_name = match packet.attribute(attr::USER_NAME) {
        Some(name) if !name.is_empty() => String::from_utf8_lossy(name).into_owned(),
        _ => return Ok(Err((packet, Unusable::NoUserName))),
    };
    let Some(hidden) = packet.attribute(attr::USER_PASSWORD) else {
        return Ok(Err((packet, Unusable::NoPassword)));
    };
    let password = match unhide_password(hidden, secret, &packet.authenticator) {
        Ok(p) => p,
        Err(e) => return Ok(Err((packet, e.into()))),
    };
    let state = packet.attribute(attr::STATE).map(<[u8]>::to_vec);
    Ok(Ok(Request {
        packet,
        user_name,
        password,
        state,
    }))
}

/// The password and the code of "password<separator>123456": the code is the part after
/// the last separator, when it is 6 to 8 digits. None: no code there.
pub fn split_code<'a>(password: &'a [u8], separator: &str) -> Option<(&'a [u8], &'a str)> {
    let sep = separator.as_bytes();
    if sep.is_empty() || password.len() < sep.len() {
        return None;
    }
    let at = (0..=password.len() - sep.len())
        .rev()
        .find(|&i| &password[i..i + sep.len()] == sep)?;
    let code = std::str::from_utf8(&password[at + sep.len()..]).ok()?;
    ((6..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()))
        .then_some((&password[..at], code))
}

/// What a request's key says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A new request: check it.
    New,
    /// A retransmission of one still being checked: drop it.
    InFlight,
    /// A retransmission of one already answered: send this answer again.
    Answered(Vec<u8>),
}

/// Requests seen within `window` by key (client address and port, identifier and Request
/// Authenticator, RFC 5080 §2.2.2): a client's retransmission gets the same answer
/// without a second password check. At most `cap` keys; past it, new requests are still
/// checked, but not remembered.
pub struct Duplicates<K> {
    window: Duration,
    cap: usize,
    seen: HashMap<K, (Instant, Option<Vec<u8>>)>,
}

impl<K: Hash + Eq + Clone> Duplicates<K> {
    pub fn new(window: Duration, cap: usize) -> Self {
        Duplicates {
            window,
            cap,
            seen: HashMap::new(),
        }
    }

    /// Look a request up, and remember it as in flight when it is new.
    pub fn check(&mut self, key: &K, now: Instant) -> Seen {
        if let Some((at, answer)) = self.seen.get(key) {
            if now.saturating_duration_since(*at) < self.window {
                return match answer {
                    Some(bytes) => Seen::Answered(bytes.clone()),
                    None => Seen::InFlight,
                };
            }
        }
        if self.seen.len() >= self.cap {
            let window = self.window;
            self.seen
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < window);
        }
        if self.seen.len() < self.cap {
            self.seen.insert(key.clone(), (now, None));
        }
        Seen::New
    }

    /// The answer sent to a request (None: none was sent; a retransmission is checked again).
    pub fn answered(&mut self, key: &K, answer: Option<Vec<u8>>, now: Instant) {
        match answer {
            Some(bytes) => {
                if let Some(entry) = self.seen.get_mut(key) {
                    *entry = (now, Some(bytes));
                }
            }
            None => {
                self.seen.remove(key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The length of a State this server gives.
pub const STATE_LEN: usize = 16;

/// Pending Access-Challenges: a random State bound to the username whose password was
/// right (and what the caller keeps with it), usable once within `ttl`.
pub struct Challenges<T> {
    ttl: Duration,
    cap: usize,
    pending: HashMap<[u8; STATE_LEN], (String, T, Instant)>,
}

impl<T> Challenges<T> {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Challenges {
            ttl,
            cap,
            pending: HashMap::new(),
        }
    }

    /// A new State for `user_name`; None when `cap` challenges are pending.
    pub fn open(&mut self, user_name: &str, kept: T, now: Instant) -> Option<[u8; STATE_LEN]> {
        let ttl = self.ttl;
        self.pending
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < ttl);
        if self.pending.len() >= self.cap {
            return None;
        }
        let mut state = [0u8; STATE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut state);
        self.pending
            .insert(state, (user_name.to_string(), kept, now));
        Some(state)
    }

    /// Take the challenge `state` names for `user_name`: what was kept with it when it was
    /// pending, for that username, and not expired. Taken either way: a State is answered once.
    pub fn take(&mut self, state: &[u8], user_name: &str, now: Instant) -> Option<T> {
        let key = <[u8; STATE_LEN]>::try_from(state).ok()?;
        let (name, kept, at) = self.pending.remove(&key)?;
        (name == user_name && now.saturating_duration_since(at) < self.ttl).then_some(kept)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::hide_password;
    use crate::packet::Attribute;

    const SECRET: &[u8] = b"s3cret";

    fn request(attrs: Vec<Attribute>) -> Vec<u8> {
        Packet {
            code: Code::AccessRequest,
            identifier: 7,
            authenticator: [9; 16],
            attributes: attrs,
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn a_request_without_message_authenticator_is_dropped_unless_allowed() {
        let raw = request(vec![
            Attribute::new(attr::USER_NAME, "alice"),
            Attribute::new(attr::USER_PASSWORD, hide_password(b"pw", SECRET, &[9; 16])),
        ]);
        assert_eq!(
            read_request(&raw, SECRET, true).err(),
            Some(Dropped::MessageAuthenticatorMissing)
        );
        let r = read_request(&raw, SECRET, false).unwrap().unwrap();
        assert_eq!(
            (r.user_name.as_str(), r.password.as_slice()),
            ("alice", &b"pw"[..])
        );
        assert!(!format!("{r:?}").contains("pw\""));
    }

    #[test]
    fn requests_without_a_name_or_password_are_unusable_and_others_dropped() {
        let raw = request(vec![Attribute::new(attr::USER_NAME, "alice")]);
        assert_eq!(
            read_request(&raw, SECRET, false)
                .unwrap()
                .err()
                .map(|e| e.1),
            Some(Unusable::NoPassword)
        );
        let raw = request(vec![]);
        assert_eq!(
            read_request(&raw, SECRET, false)
                .unwrap()
                .err()
                .map(|e| e.1),
            Some(Unusable::NoUserName)
        );
        let mut raw = request(vec![]);
        raw[0] = 4;
        assert_eq!(
            read_request(&raw, SECRET, false).err(),
            Some(Dropped::NotAccessRequest(4))
        );
        assert!(matches!(
            read_request(&raw[..10], SECRET, false),
            Err(Dropped::Malformed(_))
        ));
    }

    #[test]
    fn a_code_is_split_off_at_the_last_separator() {
        assert_eq!(
            split_code(b"pass,word,123456", ","),
            Some((&b"pass,word"[..], "123456"))
        );
        assert_eq!(split_code(b"password", ","), None);
        assert_eq!(split_code(b"pass,12345", ","), None);
        assert_eq!(split_code(b"pass,12345a", ","), None);
        assert_eq!(split_code(b",123456", ","), Some((&b""[..], "123456")));
        assert_eq!(
            split_code(b"pw::12345678", "::"),
            Some((&b"pw"[..], "12345678"))
        );
        assert_eq!(split_code(b"pw", ""), None);
    }

    #[test]
    fn a_retransmission_is_answered_from_the_cache_within_the_window() {
        let t0 = Instant::now();
        let mut d = Duplicates::new(Duration::from_secs(30), 2);
        assert_eq!(d.check(&1, t0), Seen::New);
        assert_eq!(d.check(&1, t0), Seen::InFlight);
        d.answered(&1, Some(vec![1, 2]), t0);
        assert_eq!(d.check(&1, t0), Seen::Answered(vec![1, 2]));
        assert_eq!(d.check(&1, t0 + Duration::from_secs(31)), Seen::New);
        // unanswered: the next one is checked again
        assert_eq!(d.check(&2, t0), Seen::New);
        d.answered(&2, None, t0);
        assert_eq!(d.check(&2, t0), Seen::New);
        // full: new keys are checked but not remembered
        assert_eq!(d.check(&3, t0), Seen::New);
        assert_eq!(d.check(&3, t0), Seen::New);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn a_state_is_good_once_for_its_user_before_it_expires() {
        let t0 = Instant::now();
        let mut c = Challenges::new(Duration::from_secs(60), 2);
        let s = c.open("alice", 1, t0).unwrap();
        assert_eq!(c.take(&s, "bob", t0), None);
        let s = c.open("alice", 2, t0).unwrap();
        assert_eq!(c.take(&s, "alice", t0 + Duration::from_secs(59)), Some(2));
        assert_eq!(c.take(&s, "alice", t0 + Duration::from_secs(59)), None);
        let s = c.open("alice", 3, t0).unwrap();
        assert_eq!(c.take(&s, "alice", t0 + Duration::from_secs(60)), None);
        assert_eq!(c.take(b"short", "alice", t0), None);
        c.open("a", 4, t0).unwrap();
        c.open("b", 5, t0).unwrap();
        assert!(c.open("c", 6, t0).is_none());
        assert!(c.open("c", 7, t0 + Duration::from_secs(61)).is_some());
    }
}
