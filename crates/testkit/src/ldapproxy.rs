//! An LDAP-aware TCP proxy on 127.0.0.1 that refuses search requests carrying
//! one given control and forwards everything else unchanged. Tests use it to
//! make a real server (Samba) behave like an Active Directory DC that refuses
//! DirSync (1.2.840.113556.1.4.841) to the bind account, which Samba itself
//! never does once OBJECT_SECURITY is set. What it does with each message is
//! its [`Rules`]: `hostile.rs` gives it others (crafted answers).
//!
//! Each connection is two threads. Client to server: whole LDAPMessages are
//! read (BER framing, definite lengths only, at most [`MAX_MESSAGE`] bytes); a
//! SearchRequest with a control of that OID is answered by the proxy with a
//! SearchResultDone (insufficientAccessRights, AD's diagnostic text) and never
//! reaches the server; anything else is forwarded byte for byte. Server to
//! client: forwarded a whole LDAPMessage at a time, so a refusal written by
//! the other thread (both hold the client socket's write lock for a whole
//! message) never lands inside a server message. A malformed message in
//! either direction closes the connection.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Largest LDAPMessage either side may send through the proxy.
pub const MAX_MESSAGE: usize = 16 << 20;

/// What Active Directory answers a DirSync search without the replication right.
pub const REFUSAL_DIAGNOSTIC: &str =
    "00002098: SecErr: DSID-03150F94, problem 4003 (INSUFF_ACCESS_RIGHTS), data 0";

/// LDAPResult resultCode insufficientAccessRights.
const INSUFFICIENT_ACCESS_RIGHTS: u8 = 50;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_ENUMERATED: u8 = 0x0a;
const TAG_BOOLEAN: u8 = 0x01;
/// [APPLICATION 3] SearchRequest.
pub(crate) const TAG_SEARCH_REQUEST: u8 = 0x63;
/// [APPLICATION 5] SearchResultDone.
pub(crate) const TAG_SEARCH_DONE: u8 = 0x65;
/// [0] controls of an LDAPMessage.
pub(crate) const TAG_CONTROLS: u8 = 0xa0;

/// Writes an answer to the client, stopping early when the flag (the
/// proxy stops) is set.
pub(crate) type Answer = Box<dyn FnOnce(&mut TcpStream, &AtomicBool) -> io::Result<()> + Send>;

/// What the proxy does with one request of a client.
pub(crate) enum Action {
    /// Forward it to the server.
    Forward,
    /// Answer it here, never forwarded: the function writes the answer to
    /// the client (holding its write lock) and may stop early when the
    /// proxy stops (the flag).
    Answer(Answer),
}

/// How a proxy treats the messages going through it.
pub(crate) trait Rules: Send + Sync + 'static {
    /// A request from the client: `raw` is the whole message.
    fn request(&self, req: &Message<'_>, raw: &[u8]) -> Action;

    /// A message from the server, as forwarded to the client.
    fn response(&self, msg: Vec<u8>) -> Vec<u8> {
        msg
    }
}

/// Searches carrying a control of this OID are refused (insufficientAccessRights).
struct RefuseControl(Vec<u8>);

impl Rules for RefuseControl {
    fn request(&self, req: &Message<'_>, _raw: &[u8]) -> Action {
        if req.op_tag == TAG_SEARCH_REQUEST && req.controls.iter().any(|c| c.oid == self.0) {
            let answer = refusal(req.message_id);
            Action::Answer(Box::new(move |w, _| w.write_all(&answer)))
        } else {
            Action::Forward
        }
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Requests answered by the proxy itself.
    refused: AtomicU64,
    connections: AtomicU64,
    /// Connections after this many are closed at once (0: no limit).
    limit: AtomicU64,
    /// Connections closed at once for the limit.
    turned_away: AtomicU64,
    /// Both sockets of every connection, shut down when the proxy stops.
    sockets: Mutex<Vec<TcpStream>>,
    /// The protocol op tag of every request each connection sent, in order.
    ops: Mutex<Vec<Vec<u8>>>,
}

impl Shared {
    fn sockets(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An LDAP proxy to `upstream` that refuses searches with one control (stopped on drop).
pub struct LdapProxy {
    /// `127.0.0.1:PORT` the clients connect to.
    pub addr: String,
    shared: Arc<Shared>,
}

impl LdapProxy {
    /// Listen on a free loopback port and forward every connection to
    /// `upstream` (`host:port`), refusing SearchRequests that carry a control
    /// whose type is `refuse_control_oid`.
    pub fn start(upstream: &str, refuse_control_oid: &str) -> LdapProxy {
        let oid = refuse_control_oid.as_bytes().to_vec();
        LdapProxy::with_rules(upstream, Arc::new(RefuseControl(oid)))
    }

    /// Listen on a free loopback port and forward every connection to
    /// `upstream`, applying `rules` to the messages.
    pub(crate) fn with_rules(upstream: &str, rules: Arc<dyn Rules>) -> LdapProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("testkit ldap proxy: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("testkit ldap proxy: local_addr: {e}"))
            .to_string();
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_string();
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let limit = s.limit.load(Ordering::SeqCst);
                if limit > 0 && s.connections.load(Ordering::SeqCst) >= limit {
                    // as a server at its connection limit: closed at once
                    s.turned_away.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    // the client sees the connection closed, as with a down server
                    continue;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let Ok((client_r, client_w, server_r, server_w)) = clones(&client, &server) else {
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    continue;
                };
                s.sockets().extend([client, server]);
                let conn = {
                    let mut ops = s.ops.lock().unwrap_or_else(|p| p.into_inner());
                    ops.push(Vec::new());
                    ops.len() - 1
                };
                let client_w = Arc::new(Mutex::new(client_w));
                let (s2, w2, r2) = (s.clone(), client_w.clone(), rules.clone());
                std::thread::spawn(move || up(client_r, server_w, &w2, &*r2, &s2, conn));
                let rules = rules.clone();
                std::thread::spawn(move || {
                    down(&server_r, &client_w, &*rules);
                    let _ = server_r.shutdown(Shutdown::Both);
                    close(&client_w);
                });
            }
        });
        LdapProxy { addr, shared }
    }

    /// `ldap://ADDR` of the proxy.
    pub fn url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    /// Requests refused (answered by the proxy) so far, never forwarded to the server.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections accepted (and forwarded) so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// From now on, close every connection at once after `n` forwarded in
    /// all (0: no limit), like a server that allows a client no more.
    pub fn limit_connections(&self, n: u64) {
        self.shared.limit.store(n, Ordering::SeqCst);
    }

    /// The requests each forwarded connection has sent so far, in order, by
    /// operation name (`bind`, `search`, `unbind`, `extended`, … or the tag
    /// in hex), one list per connection in the order they were accepted.
    pub fn operations(&self) -> Vec<Vec<String>> {
        let ops = self.shared.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.iter()
            .map(|conn| conn.iter().map(|&tag| op_name(tag)).collect())
            .collect()
    }

    /// Connections closed at once because of [`LdapProxy::limit_connections`].
    pub fn turned_away(&self) -> u64 {
        self.shared.turned_away.load(Ordering::SeqCst)
    }
}

impl Drop for LdapProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.sockets().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // wake the accept loop
        let _ = TcpStream::connect(&self.addr);
    }
}

/// The name of an LDAP protocol op (RFC 4511 [APPLICATION n] tags).
fn op_name(tag: u8) -> String {
    match tag {
        0x60 => "bind".into(),
        0x42 => "unbind".into(),
        TAG_SEARCH_REQUEST => "search".into(),
        0x66 => "modify".into(),
        0x68 => "add".into(),
        0x4a => "delete".into(),
        0x6e => "compare".into(),
        0x50 => "abandon".into(),
        0x77 => "extended".into(),
        other => format!("{other:#04x}"),
    }
}

/// Client to server: forward whole messages, or answer them as `rules`
/// says. At the end of the client's stream the server's side is half-closed
/// (its answers still come down); a malformed message or an error closes the
/// client.
fn up(
    mut client: TcpStream,
    mut server: TcpStream,
    client_w: &Mutex<TcpStream>,
    rules: &dyn Rules,
    s: &Shared,
    conn: usize,
) {
    loop {
        let msg = match read_message(&mut client) {
            Ok(Some(m)) if !s.stop.load(Ordering::SeqCst) => m,
            Ok(None) => {
                let _ = server.shutdown(Shutdown::Write);
                return;
            }
            Ok(Some(_)) | Err(_) => break,
        };
        // a frame that is no LDAPMessage: a real server drops the client too
        let Some(req) = parse_message(&msg) else {
            break;
        };
        if let Some(ops) = s
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(conn)
        {
            ops.push(req.op_tag);
        }
        match rules.request(&req, &msg) {
            Action::Forward => {
                if server.write_all(&msg).is_err() {
                    break;
                }
            }
            Action::Answer(answer) => {
                s.refused.fetch_add(1, Ordering::SeqCst);
                let mut w = client_w.lock().unwrap_or_else(|p| p.into_inner());
                if answer(&mut w, &s.stop).is_err() {
                    break;
                }
            }
        }
    }
    close(client_w);
    let _ = server.shutdown(Shutdown::Both);
}

/// Server to client: forward whole messages (as `rules` rewrites them),
/// each under the client write lock, until the server's stream ends, is
/// malformed or the client is gone.
fn down(mut server: &TcpStream, client_w: &Mutex<TcpStream>, rules: &dyn Rules) {
    while let Ok(Some(msg)) = read_message(&mut server) {
        let msg = rules.response(msg);
        let mut w = client_w.lock().unwrap_or_else(|p| p.into_inner());
        if w.write_all(&msg).is_err() {
            return;
        }
    }
}

/// Both halves of the client socket.
fn close(client_w: &Mutex<TcpStream>) {
    let w = client_w.lock().unwrap_or_else(|p| p.into_inner());
    let _ = w.shutdown(Shutdown::Both);
}

/// Reader and writer handles: (client read, client write, server read, server write).
fn clones(
    client: &TcpStream,
    server: &TcpStream,
) -> io::Result<(TcpStream, TcpStream, TcpStream, TcpStream)> {
    Ok((
        client.try_clone()?,
        client.try_clone()?,
        server.try_clone()?,
        server.try_clone()?,
    ))
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// Read one whole LDAPMessage (`0x30`, definite length, content) as its
/// bytes; `Ok(None)` when the stream ends between messages. A stream that
/// ends inside a message, another tag, an indefinite or oversized length is
/// an error.
pub(crate) fn read_message(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut tag = [0u8; 1];
    loop {
        match r.read(&mut tag) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if tag[0] != TAG_SEQUENCE {
        return Err(invalid("not an LDAPMessage (tag is not SEQUENCE)"));
    }
    let mut first = [0u8; 1];
    r.read_exact(&mut first)?;
    let mut msg = vec![tag[0], first[0]];
    let len = match first[0] {
        n if n < 0x80 => usize::from(n),
        0x80 => return Err(invalid("indefinite length")),
        n => {
            let k = usize::from(n & 0x7f);
            if k > 4 {
                return Err(invalid("length of more than four bytes"));
            }
            let mut bytes = [0u8; 4];
            let bytes = bytes
                .get_mut(..k)
                .ok_or_else(|| invalid("length of more than four bytes"))?;
            r.read_exact(bytes)?;
            msg.extend_from_slice(bytes);
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        }
    };
    if len > MAX_MESSAGE {
        return Err(invalid("message too large"));
    }
    let head = msg.len();
    msg.resize(head + len, 0);
    r.read_exact(msg.get_mut(head..).ok_or_else(|| invalid("length"))?)?;
    Ok(Some(msg))
}

/// One BER element at the start of `buf`: (tag, content, rest). Single-byte
/// tags and definite lengths only (all LDAP uses); None when malformed.
pub(crate) fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x80 => return None,
        n => {
            let k = usize::from(n & 0x7f);
            if k > 4 || rest.len() < k {
                return None;
            }
            let (bytes, rest) = rest.split_at(k);
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, rest)
        }
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Control<'a> {
    pub oid: &'a [u8],
    pub critical: bool,
    pub value: Option<&'a [u8]>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    /// The messageID INTEGER's content octets (echoed as they came).
    pub message_id: &'a [u8],
    pub op_tag: u8,
    /// The protocolOp's content octets.
    pub op: &'a [u8],
    pub controls: Vec<Control<'a>>,
}

/// LDAPMessage ::= SEQUENCE { messageID INTEGER, protocolOp, controls [0] OPTIONAL }.
pub(crate) fn parse_message(msg: &[u8]) -> Option<Message<'_>> {
    let (tag, body, rest) = tlv(msg)?;
    if tag != TAG_SEQUENCE || !rest.is_empty() {
        return None;
    }
    let (tag, message_id, body) = tlv(body)?;
    if tag != TAG_INTEGER || message_id.is_empty() || message_id.len() > 4 {
        return None;
    }
    let (op_tag, op, body) = tlv(body)?;
    let mut controls = Vec::new();
    if !body.is_empty() {
        let (tag, mut list, rest) = tlv(body)?;
        if tag != TAG_CONTROLS || !rest.is_empty() {
            return None;
        }
        while !list.is_empty() {
            let (tag, control, rest) = tlv(list)?;
            if tag != TAG_SEQUENCE {
                return None;
            }
            controls.push(parse_control(control)?);
            list = rest;
        }
    }
    Some(Message {
        message_id,
        op_tag,
        op,
        controls,
    })
}

/// Control ::= SEQUENCE { controlType LDAPOID, criticality BOOLEAN DEFAULT FALSE,
/// controlValue OCTET STRING OPTIONAL } (the content of the SEQUENCE).
fn parse_control(c: &[u8]) -> Option<Control<'_>> {
    let (tag, oid, mut rest) = tlv(c)?;
    if tag != TAG_OCTET_STRING {
        return None;
    }
    let mut critical = false;
    let mut value = None;
    if let Some((TAG_BOOLEAN, b, r)) = tlv(rest) {
        critical = b.first().is_some_and(|&v| v != 0);
        rest = r;
    }
    if !rest.is_empty() {
        let (tag, v, r) = tlv(rest)?;
        if tag != TAG_OCTET_STRING || !r.is_empty() {
            return None;
        }
        value = Some(v);
    }
    Some(Control {
        oid,
        critical,
        value,
    })
}

/// A BER element with a definite length (short or long form).
pub(crate) fn element(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let bytes = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// SearchResultDone for `message_id`: insufficientAccessRights with AD's text.
pub(crate) fn refusal(message_id: &[u8]) -> Vec<u8> {
    let mut result = element(TAG_ENUMERATED, &[INSUFFICIENT_ACCESS_RIGHTS]);
    result.extend(element(TAG_OCTET_STRING, b""));
    result.extend(element(TAG_OCTET_STRING, REFUSAL_DIAGNOSTIC.as_bytes()));
    let mut body = element(TAG_INTEGER, message_id);
    body.extend(element(TAG_SEARCH_DONE, &result));
    element(TAG_SEQUENCE, &body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const DIRSYNC: &str = "1.2.840.113556.1.4.841";

    /// A SearchRequest (base "DC=x", filter (objectClass=*)) with the given controls.
    fn search(id: u8, controls: &[(&str, bool, Option<&[u8]>)]) -> Vec<u8> {
        let mut req = element(TAG_OCTET_STRING, b"DC=x");
        req.extend(element(TAG_ENUMERATED, &[2]));
        req.extend(element(TAG_ENUMERATED, &[0]));
        req.extend(element(TAG_INTEGER, &[0]));
        req.extend(element(TAG_INTEGER, &[0]));
        req.extend(element(TAG_BOOLEAN, &[0]));
        req.extend(element(0x87, b"objectClass"));
        req.extend(element(TAG_SEQUENCE, &element(TAG_OCTET_STRING, b"cn")));
        let mut body = element(TAG_INTEGER, &[id]);
        body.extend(element(TAG_SEARCH_REQUEST, &req));
        if !controls.is_empty() {
            let mut list = Vec::new();
            for (oid, critical, value) in controls {
                let mut c = element(TAG_OCTET_STRING, oid.as_bytes());
                if *critical {
                    c.extend(element(TAG_BOOLEAN, &[0xff]));
                }
                if let Some(v) = value {
                    c.extend(element(TAG_OCTET_STRING, v));
                }
                list.extend(element(TAG_SEQUENCE, &c));
            }
            body.extend(element(TAG_CONTROLS, &list));
        }
        element(TAG_SEQUENCE, &body)
    }

    #[test]
    fn frames_short_and_long_lengths_and_stops_cleanly_between_messages() {
        let small = search(1, &[]);
        assert!(small.len() < 0x80 + 2);
        let big_value = vec![7u8; 70_000];
        let big = search(2, &[(DIRSYNC, true, Some(&big_value))]);
        assert_eq!(big.get(1), Some(&0x83), "three length bytes");
        // a non-minimal long form is still a definite length
        let mut padded = vec![0x30, 0x84, 0, 0, 0, 3];
        padded.extend([0x02, 0x01, 0x05]);
        let mut stream: Vec<u8> = Vec::new();
        for m in [&small, &big, &padded] {
            stream.extend_from_slice(m);
        }
        let mut r = &stream[..];
        assert_eq!(read_message(&mut r).unwrap().as_deref(), Some(&small[..]));
        assert_eq!(read_message(&mut r).unwrap().as_deref(), Some(&big[..]));
        assert_eq!(read_message(&mut r).unwrap().as_deref(), Some(&padded[..]));
        assert_eq!(read_message(&mut r).unwrap(), None);
    }

    #[test]
    fn malformed_frames_are_errors() {
        for bad in [
            &[0x31u8, 0x00][..],                   // not a SEQUENCE
            &[0x30, 0x80, 0x02, 0x01, 0x01, 0, 0], // indefinite length
            &[0x30, 0x85, 0, 0, 0, 0, 1, 0],       // five length bytes
            &[0x30, 0x84, 0x01, 0x00, 0x00, 0x01], // over 16 MiB
            &[0x30, 0x05, 0x02, 0x01],             // ends inside the message
            &[0x30],                               // ends inside the header
            &[0x30, 0x82, 0x01],                   // ends inside the length
        ] {
            let mut r = bad;
            assert!(read_message(&mut r).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn parses_the_message_id_operation_and_controls() {
        let m = search(
            9,
            &[
                ("1.2.840.113556.1.4.319", false, Some(b"\x30\x00")),
                (DIRSYNC, true, Some(b"v")),
            ],
        );
        let p = parse_message(&m).unwrap();
        assert_eq!(p.message_id, &[9]);
        assert_eq!(p.op_tag, TAG_SEARCH_REQUEST);
        assert_eq!(
            p.controls,
            vec![
                Control {
                    oid: b"1.2.840.113556.1.4.319",
                    critical: false,
                    value: Some(b"\x30\x00")
                },
                Control {
                    oid: DIRSYNC.as_bytes(),
                    critical: true,
                    value: Some(b"v")
                },
            ]
        );
        // no controls; a control without criticality or value
        assert!(parse_message(&search(1, &[])).unwrap().controls.is_empty());
        let bare = search(1, &[(DIRSYNC, false, None)]);
        let p = parse_message(&bare).unwrap();
        assert_eq!(p.controls[0].value, None);
        // an unbind request: a primitive protocolOp
        let unbind = [0x30, 0x05, 0x02, 0x01, 0x03, 0x42, 0x00];
        let p = parse_message(&unbind).unwrap();
        assert_eq!((p.message_id, p.op_tag), (&[3u8][..], 0x42));
    }

    #[test]
    fn malformed_messages_do_not_parse() {
        let good = search(4, &[(DIRSYNC, true, Some(b"v"))]);
        // truncated anywhere (the outer length then lies)
        for n in 0..good.len() {
            assert!(parse_message(&good[..n]).is_none(), "cut at {n}");
        }
        for bad in [
            &[0x30, 0x03, 0x04, 0x01, 0x01][..], // messageID not an INTEGER
            &[0x30, 0x05, 0x02, 0x01, 0x01, 0x42, 0x00, 0x00], // trailing bytes
            &[0x30, 0x07, 0x02, 0x01, 0x01, 0x42, 0x00, 0xa1, 0x00], // [1] is no controls
            &[
                0x30, 0x09, 0x02, 0x01, 0x01, 0x42, 0x00, 0xa0, 0x02, 0x04, 0x00,
            ], // control not a SEQUENCE
        ] {
            assert!(parse_message(bad).is_none(), "{bad:02x?}");
        }
    }

    #[test]
    fn the_refusal_is_a_search_result_done_with_the_same_id() {
        let r = refusal(&[0x01, 0x2c]);
        let mut s = &r[..];
        assert_eq!(read_message(&mut s).unwrap().as_deref(), Some(&r[..]));
        let (_, body, _) = tlv(&r).unwrap();
        let (tag, id, body) = tlv(body).unwrap();
        assert_eq!((tag, id), (TAG_INTEGER, &[0x01, 0x2c][..]));
        let (tag, result, rest) = tlv(body).unwrap();
        assert_eq!(tag, TAG_SEARCH_DONE);
        assert!(rest.is_empty());
        let (tag, code, result) = tlv(result).unwrap();
        assert_eq!((tag, code), (TAG_ENUMERATED, &[50u8][..]));
        let (_, matched, result) = tlv(result).unwrap();
        assert!(matched.is_empty());
        let (_, text, _) = tlv(result).unwrap();
        assert_eq!(text, REFUSAL_DIAGNOSTIC.as_bytes());
        assert_eq!(
            element(TAG_OCTET_STRING, &[0; 200]).get(..3),
            Some(&[0x04, 0x81, 200][..])
        );
    }

    /// A server that answers every request with one canned message and
    /// records what it received, behind the proxy.
    #[test]
    fn refuses_only_searches_with_the_control_and_forwards_the_rest() {
        let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let up_addr = upstream.local_addr().unwrap().to_string();
        let got = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let (mut c, _) = upstream.accept().unwrap();
            while let Ok(Some(m)) = read_message(&mut c) {
                let id = parse_message(&m).unwrap().message_id.to_vec();
                g.lock().unwrap().push(m);
                let mut body = element(TAG_INTEGER, &id);
                body.extend(element(
                    TAG_SEARCH_DONE,
                    &[0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00],
                ));
                c.write_all(&element(TAG_SEQUENCE, &body)).unwrap();
            }
        });
        let proxy = LdapProxy::start(&up_addr, DIRSYNC);
        assert!(proxy.url().starts_with("ldap://127.0.0.1:"));
        let mut c = TcpStream::connect(&proxy.addr).unwrap();
        let plain = search(1, &[("1.2.840.113556.1.4.319", false, None)]);
        let refused = search(2, &[(DIRSYNC, true, Some(b"x"))]);
        let after = search(3, &[]);
        c.write_all(&[plain.clone(), refused, after.clone()].concat())
            .unwrap();
        let mut answers = Vec::new();
        for _ in 0..3 {
            let m = read_message(&mut c).unwrap().unwrap();
            let p = parse_message(&m).unwrap();
            assert_eq!(p.op_tag, TAG_SEARCH_DONE);
            let (_, body, _) = tlv(&m).unwrap();
            let (_, _, body) = tlv(body).unwrap();
            let (_, result, _) = tlv(body).unwrap();
            answers.push((p.message_id[0], result[2]));
        }
        answers.sort();
        assert_eq!(answers, vec![(1, 0), (2, 50), (3, 0)]);
        assert_eq!(proxy.refused(), 1);
        assert_eq!(*got.lock().unwrap(), vec![plain, after]);
        // garbage closes the connection
        c.write_all(&[0x04, 0x00]).unwrap();
        assert_eq!(read_message(&mut c).ok().flatten(), None);
        assert_eq!(proxy.connections(), 1);
    }
}
