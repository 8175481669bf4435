//! The codec against a real RADIUS client: Debian's `radclient` (freeradius-utils) sends
//! Access-Requests to a small UDP responder built on this crate, and checks our replies'
//! Response Authenticator and Message-Authenticator as a VPN concentrator would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mfasync_radius::{
    attr, reply, unhide_password, verify_request, Attribute, Code, MessageAuth, Packet,
};

const SECRET: &str = "a shared secret, long enough";

/// What the responder saw of one request.
#[derive(Debug)]
struct Seen {
    user: String,
    password: Option<Vec<u8>>,
    message_auth: MessageAuth,
}

/// Answer requests on a loopback port until the test ends: alice with the right password is
/// accepted, bob is challenged (with a State), anyone else rejected; a request without a
/// valid Message-Authenticator gets no answer. Every request is reported on the channel.
fn responder() -> (u16, mpsc::Receiver<Seen>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let raw = &buf[..n];
            let Ok(request) = Packet::decode(raw) else {
                continue;
            };
            let message_auth = verify_request(raw, &request, SECRET.as_bytes());
            let user =
                String::from_utf8_lossy(request.attribute(attr::USER_NAME).unwrap_or_default())
                    .into_owned();
            let password = request
                .attribute(attr::USER_PASSWORD)
                .and_then(|h| unhide_password(h, SECRET.as_bytes(), &request.authenticator).ok());
            let answer = match (message_auth, user.as_str(), password.as_deref()) {
                (
                    MessageAuth::Valid,
                    "alice",
                    Some(b"correct horse battery staple, twice over"),
                ) => Some((
                    Code::AccessAccept,
                    vec![Attribute::new(attr::REPLY_MESSAGE, "welcome alice")],
                )),
                (MessageAuth::Valid, "bob", _) => Some((
                    Code::AccessChallenge,
                    vec![
                        Attribute::new(attr::REPLY_MESSAGE, "Enter your code"),
                        Attribute::new(attr::STATE, b"state-1234".to_vec()),
                    ],
                )),
                (MessageAuth::Valid, _, _) => Some((Code::AccessReject, vec![])),
                _ => None,
            };
            if let Some((code, attrs)) = answer {
                let bytes = reply(&request, code, attrs, SECRET.as_bytes()).unwrap();
                socket.send_to(&bytes, from).unwrap();
            }
            let _ = tx.send(Seen {
                user,
                password,
                message_auth,
            });
        }
    });
    (port, rx)
}

fn radclient(port: u16, secret: &str, attributes: &str) -> Output {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "2"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["auth", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient (freeradius-utils, scripts/install-deps)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attributes.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn radclient_is_accepted_and_checks_both_authenticators_of_the_reply() {
    let (port, seen) = responder();
    let out = radclient(
        port,
        SECRET,
        "User-Name = alice\nUser-Password = \"correct horse battery staple, twice over\"\nMessage-Authenticator = 0x00\n",
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Received Access-Accept"), "{all}");
    assert!(all.contains("welcome alice"), "{all}");
    let s = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(s.message_auth, MessageAuth::Valid);
    assert_eq!(
        s.password.as_deref(),
        Some(&b"correct horse battery staple, twice over"[..])
    );
}

#[test]
fn a_challenge_carries_its_state_to_the_client() {
    let (port, _seen) = responder();
    let out = radclient(
        port,
        SECRET,
        "User-Name = bob\nUser-Password = \"x\"\nMessage-Authenticator = 0x00\n",
    );
    let all = text(&out);
    assert!(all.contains("Received Access-Challenge"), "{all}");
    assert!(all.contains("State = 0x73746174652d31323334"), "{all}");
}

#[test]
fn a_wrong_password_is_rejected() {
    let (port, seen) = responder();
    let out = radclient(
        port,
        SECRET,
        "User-Name = alice\nUser-Password = \"guess\"\nMessage-Authenticator = 0x00\n",
    );
    let all = text(&out);
    assert!(all.contains("Received Access-Reject"), "{all}");
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(10))
            .unwrap()
            .password
            .as_deref(),
        Some(&b"guess"[..])
    );
}

#[test]
fn another_secret_or_no_message_authenticator_gets_no_answer() {
    let (port, seen) = responder();
    let out = radclient(
        port,
        "not the secret",
        "User-Name = alice\nUser-Password = \"p\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("No reply from server"),
        "{}",
        text(&out)
    );
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(10))
            .unwrap()
            .message_auth,
        MessageAuth::Invalid
    );

    let out = radclient(port, SECRET, "User-Name = alice\nUser-Password = \"p\"\n");
    assert!(
        text(&out).contains("No reply from server"),
        "{}",
        text(&out)
    );
    let s = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (s.user.as_str(), s.message_auth),
        ("alice", MessageAuth::Missing)
    );
}
