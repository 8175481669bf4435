//! What mfasync's RADIUS server (`[radius]` in `serve`) needs, as pure functions: the
//! packet codec of RFC 2865, the User-Password hiding, the Response Authenticator and the
//! Message-Authenticator of RFC 3579 (the BLAST-RADIUS fix), and OATH TOTP (RFC 6238),
//! the second factor of users whose method is "oath-token". No sockets, no clock: callers
//! pass the bytes and the time.
//!
//! Invariant: a shared secret, a password or a TOTP secret is never part of an error or
//! of a `Debug` output.

pub mod auth;
pub mod packet;
pub mod server;
pub mod totp;

pub use auth::{
    hide_password, reply, signed_request, unhide_password, verify_request, MessageAuth,
};
pub use packet::{attr, Attribute, Code, DecodeError, EncodeError, Packet};
pub use server::{
    read_request, split_code, Challenges, Dropped, Duplicates, Request, Seen, Unusable,
};
