//! The RADIUS server of `serve` (issue 24) against Debian's `radclient`
//! (freeradius-utils) and a real slapd: the password is checked by LDAP bind
//! and MFA membership, the method decides, unknown clients and requests
//! without a valid Message-Authenticator get no answer; every answer is
//! counted in /metrics and audited without the password.

use crate::common::portal::{between, sign_in};
use crate::common::radius::{
    answer_to, code_now, enroll, radclient, radius_table, request, state_of, Served, SECRET,
};
use crate::common::Mfa;
use mfasync_testkit::Slapd;
use std::sync::OnceLock;
use std::time::Duration;

const BASE: &str = "dc=example,dc=com";

fn slapd() -> &'static Slapd {
    static S: OnceLock<Slapd> = OnceLock::new();
    S.get_or_init(|| {
        let mut l = String::new();
        for ou in ["People", "Tokens", "Others"] {
            l.push_str(&format!(
                "dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
            ));
        }
        for (u, ou) in [("alice", "People"), ("tom", "Tokens"), ("outsider", "Others")] {
            l.push_str(&format!(
                "dn: uid={u},ou={ou},{BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\nuserPassword: {u}-Passw0rd\n\n"
            ));
        }
        Slapd::start(&l)
    })
}

/// A database synchronized from ou=People (method phone call) and ou=Tokens
/// (method OATH token), with `clients` as its `[[radius.clients]]`, served.
async fn serve(clients: &str) -> (Mfa, Served) {
    let s = slapd();
    let mut m = Mfa::new();
    crate::common::radius::with_key(&mut m);
    let radius = mfasync_testkit::free_udp_port();
    let head = crate::common::openldap_directory(
        &format!("\"{}\"", s.url),
        BASE,
        5,
        (&s.admin_dn, &s.admin_password),
    );
    m.apply(&format!(
        "{head}[directory.auth_bind]\ntype = \"simple\"\n\
         [sync]\nenabled = false\n\
         [[sync.items]]\nkind = \"container\"\ndn = \"ou=People,{BASE}\"\n\
         [[sync.items]]\nkind = \"container\"\ndn = \"ou=Tokens,{BASE}\"\n\
         [sync.items.user]\nmethod = \"oath-token\"\n{}",
        radius_table(&m, radius, clients)
    ));
    m.sync_full();
    let served = crate::common::radius::serve(&m, radius).await;
    (m, served)
}

#[tokio::test]
async fn the_directory_password_and_mfa_membership_decide() {
    let (m, s) = serve(
        "[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.0/8\"\nsecret_file = \"SECRET_FILE\"\nother_methods = \"password\"\n",
    )
    .await;
    let p = s.radius;
    let out = radclient(p, SECRET, &request("alice", "alice-Passw0rd"));
    assert!(out.contains("Received Access-Accept"), "{out}");
    let out = radclient(p, SECRET, &request("alice", "wrong-password"));
    assert!(out.contains("Received Access-Reject"), "{out}");
    // in the directory, not an MFA user
    let out = radclient(p, SECRET, &request("outsider", "outsider-Passw0rd"));
    assert!(out.contains("Received Access-Reject"), "{out}");
    // an OATH token user without an enrolled secret
    let out = radclient(p, SECRET, &request("tom", "tom-Passw0rd"));
    assert!(out.contains("Received Access-Reject"), "{out}");
    // no Message-Authenticator, or another shared secret: no answer at all
    let out = radclient(
        p,
        SECRET,
        "User-Name = alice\nUser-Password = \"alice-Passw0rd\"\n",
    );
    assert!(out.contains("No reply from server"), "{out}");
    let out = radclient(p, "not the secret", &request("alice", "alice-Passw0rd"));
    assert!(out.contains("No reply from server"), "{out}");

    let counted = s.metrics().await;
    for line in [
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"accept\"} 1",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"reject:invalid-credentials\"} 1",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"reject:not-an-mfa-user\"} 1",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"reject:otp-not-enrolled\"} 1",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"drop:message-authenticator-missing\"} 1",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"drop:message-authenticator-invalid\"} 1",
    ] {
        assert!(counted.contains(line), "{line} not in\n{counted}");
    }
    // the audit row is written after the answer is sent: wait for the last one
    let audited = |text: &str| {
        text.contains("radius-accept")
            && text.contains("user alice: invalid-credentials")
            && text.contains("user tom: otp-not-enrolled")
    };
    let mut audit = m.ok(&["audit", "--limit", "100"]).stdout;
    for _ in 0..100 {
        if audited(&audit) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        audit = m.ok(&["audit", "--limit", "100"]).stdout;
    }
    assert!(audited(&audit), "{audit}");
    assert!(
        !audit.contains("Passw0rd") && !audit.contains("wrong-password"),
        "{audit}"
    );
    let log = s.log();
    assert!(log.contains("radius: answered"), "{log}");
    assert!(
        !log.contains(SECRET) && !log.contains("Passw0rd") && !log.contains("wrong-password"),
        "no secret or password in the log: {log}"
    );
}

#[tokio::test]
async fn other_methods_are_rejected_by_default_and_unknown_clients_get_no_answer() {
    let (_m, s) = serve(
        "[[radius.clients]]\naddress = \"127.0.0.1\"\nsecret_file = \"SECRET_FILE\"\n\
         [[radius.clients]]\nname = \"elsewhere\"\naddress = \"192.0.2.0/24\"\nsecret_file = \"SECRET_FILE\"\nother_methods = \"password\"\n",
    )
    .await;
    let out = radclient(s.radius, SECRET, &request("alice", "alice-Passw0rd"));
    assert!(out.contains("Received Access-Reject"), "{out}");
    let counted = s.metrics().await;
    assert!(
        counted.contains("mfasync_radius_requests_total{client=\"127.0.0.1\",outcome=\"reject:method-not-supported\"} 1"),
        "{counted}"
    );

    let (_m, s) = serve(
        "[[radius.clients]]\nname = \"elsewhere\"\naddress = \"192.0.2.0/24\"\nsecret_file = \"SECRET_FILE\"\nother_methods = \"password\"\n",
    )
    .await;
    let out = radclient(s.radius, SECRET, &request("alice", "alice-Passw0rd"));
    assert!(out.contains("No reply from server"), "{out}");
    let counted = s.metrics().await;
    assert!(
        counted.contains(
            "mfasync_radius_requests_total{client=\"unknown\",outcome=\"drop:unknown-client\"} 1"
        ),
        "{counted}"
    );
}

#[tokio::test]
async fn a_retransmission_gets_the_same_answer_without_a_second_check() {
    let (_m, s) = serve(
        "[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.1\"\nsecret_file = \"SECRET_FILE\"\nother_methods = \"password\"\n",
    )
    .await;
    // radclient -r 3 resends only without an answer: send the same datagram twice by hand
    let raw = access_request(7, [5; 16], "alice", b"alice-Passw0rd");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        sock.send_to(&raw, ("127.0.0.1", s.radius)).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        answers.push(buf[..n].to_vec());
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0][0], 2, "Access-Accept");
    let counted = s.metrics().await;
    assert!(
        counted.contains("mfasync_radius_requests_total{client=\"vpn\",outcome=\"accept\"} 1"),
        "{counted}"
    );
}

/// An Access-Request with a Message-Authenticator, as a client builds it.
fn access_request(id: u8, authenticator: [u8; 16], user: &str, password: &[u8]) -> Vec<u8> {
    use mfasync_radius::{attr, hide_password, signed_request, Attribute, Code, Packet};
    let p = Packet {
        code: Code::AccessRequest,
        identifier: id,
        authenticator,
        attributes: vec![
            Attribute::new(attr::USER_NAME, user),
            Attribute::new(
                attr::USER_PASSWORD,
                hide_password(password, SECRET.as_bytes(), &authenticator),
            ),
        ],
    };
    signed_request(&p, SECRET.as_bytes()).unwrap()
}

#[tokio::test]
async fn an_oath_user_is_challenged_for_a_code_that_works_once() {
    let (m, s) = serve(
        "[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.1\"\nsecret_file = \"SECRET_FILE\"\n",
    )
    .await;
    let p = s.radius;
    let secret = enroll(&m, "tom");
    let otp_listed = m.ok(&["users", "export"]).stdout;
    assert!(!otp_listed.contains("v1:"), "no sealed secret in exports");

    // a wrong password: rejected, nothing asked of the second factor
    let out = radclient(p, SECRET, &request("tom", "wrong-password"));
    assert!(
        out.contains("Received Access-Reject") && !out.contains("State ="),
        "{out}"
    );

    let out = radclient(p, SECRET, &request("tom", "tom-Passw0rd"));
    assert!(out.contains("Received Access-Challenge"), "{out}");
    assert!(out.contains("authenticator app"), "{out}");
    let state = state_of(&out);
    let code = code_now(&secret);
    let out = radclient(p, SECRET, &answer_to("tom", &code, &state));
    assert!(out.contains("Received Access-Accept"), "{out}");
    // the State is used up
    let out = radclient(p, SECRET, &answer_to("tom", &code, &state));
    assert!(out.contains("Received Access-Reject"), "{out}");

    // the same code again, after a new challenge: replayed
    let out = radclient(p, SECRET, &request("tom", "tom-Passw0rd"));
    let state = state_of(&out);
    let out = radclient(p, SECRET, &answer_to("tom", &code, &state));
    assert!(out.contains("Received Access-Reject"), "{out}");
    // a wrong code
    let out = radclient(p, SECRET, &request("tom", "tom-Passw0rd"));
    let state = state_of(&out);
    let wrong = format!(
        "{:06}",
        (code.parse::<u32>().unwrap() + 500_000) % 1_000_000
    );
    let out = radclient(p, SECRET, &answer_to("tom", &wrong, &state));
    assert!(out.contains("Received Access-Reject"), "{out}");
    // a State given to tom is not alice's
    let out = radclient(p, SECRET, &request("tom", "tom-Passw0rd"));
    let state = state_of(&out);
    let out = radclient(p, SECRET, &answer_to("alice", &code_now(&secret), &state));
    assert!(out.contains("Received Access-Reject"), "{out}");

    let counted = s.metrics().await;
    for line in [
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"accept\"} 1",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"challenge\"} 4",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"reject:code-replayed\"} 1",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"reject:wrong-code\"} 1",
        "mfasync_radius_requests_total{client=\"vpn\",outcome=\"reject:unknown-state\"} 2",
    ] {
        assert!(counted.contains(line), "{line} not in\n{counted}");
    }
    let audit = m.ok(&["audit", "--limit", "100"]).stdout;
    assert!(audit.contains("otp-enrolled"), "{audit}");
    assert!(!audit.contains(&code), "no code in the audit: {audit}");
}

#[tokio::test]
async fn a_code_appended_to_the_password_works_once() {
    let (m, s) = serve(
        "[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.1\"\nsecret_file = \"SECRET_FILE\"\nsecond_factor = \"append\"\n",
    )
    .await;
    let p = s.radius;
    let secret = enroll(&m, "tom");
    let code = code_now(&secret);
    let out = radclient(
        p,
        SECRET,
        &request("tom", &format!("wrong-password,{code}")),
    );
    assert!(out.contains("Received Access-Reject"), "{out}");
    let out = radclient(p, SECRET, &request("tom", "tom-Passw0rd"));
    assert!(out.contains("Received Access-Reject"), "{out}");
    let out = radclient(p, SECRET, &request("tom", &format!("tom-Passw0rd,{code}")));
    assert!(out.contains("Received Access-Accept"), "{out}");
    let out = radclient(p, SECRET, &request("tom", &format!("tom-Passw0rd,{code}")));
    assert!(out.contains("Received Access-Reject"), "{out}");
    let counted = s.metrics().await;
    for line in [
        "outcome=\"reject:invalid-credentials\"} 1",
        "outcome=\"reject:code-missing\"} 1",
        "outcome=\"accept\"} 1",
        "outcome=\"reject:code-replayed\"} 1",
    ] {
        assert!(counted.contains(line), "{line} not in\n{counted}");
    }
}

/// One account lock for RADIUS and `POST /api/v1/auth`: wrong passwords sent
/// by the VPN lock the account for the API too.
#[tokio::test]
async fn wrong_passwords_by_radius_lock_the_account_for_the_api_too() {
    const TOKEN: &str = "radius-test-api-token-0123456789";
    let (m, s) = serve(
        "[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.1\"\nsecret_file = \"SECRET_FILE\"\nother_methods = \"password\"\n",
    )
    .await;
    let store = mfasync_store::open(&m.url).await.unwrap();
    crate::common::add_api_token(store.as_ref(), "admin", "test", TOKEN).await;
    store.close().await;
    let api = |password: &'static str| {
        let url = format!("{}/api/v1/auth", s.http);
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"username": "alice", "password": password}))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(api("alice-Passw0rd").await["ok"], true);
    for _ in 0..10 {
        let out = radclient(s.radius, SECRET, &request("alice", "wrong-password"));
        assert!(out.contains("Received Access-Reject"), "{out}");
    }
    let out = radclient(s.radius, SECRET, &request("alice", "alice-Passw0rd"));
    assert!(out.contains("Received Access-Reject"), "locked: {out}");
    assert_eq!(
        api("alice-Passw0rd").await,
        serde_json::json!({"ok": false, "reason": "account-locked"})
    );
}

/// The portal's OATH enrollment through the real `serve`: the user page
/// enrolls, the code of the shown secret is accepted once by the page's check,
/// and the RADIUS server then refuses that same code as replayed (one secret,
/// one record of used codes).
#[tokio::test]
async fn the_portal_enrolls_the_secret_the_radius_server_checks() {
    let (m, s) = serve(
        "[[radius.clients]]\nname = \"vpn\"\naddress = \"127.0.0.1\"\nsecret_file = \"SECRET_FILE\"\n",
    )
    .await;
    let set = m.run_stdin(
        &["admin", "set-password", "root", "--password-stdin"],
        "correct horse battery\n",
    );
    assert_eq!(set.code, 0, "{}", set.stderr);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = &s.http;
    let session = sign_in(&http, base, "root", "correct horse battery").await;
    let post = |path: &str, form: Vec<(&'static str, String)>| {
        http.post(format!("{base}{path}"))
            .header("cookie", &session)
            .header("origin", base)
            .header("sec-fetch-site", "same-origin")
            .form(&form)
            .send()
    };
    let page = http
        .get(format!("{base}/users/tom"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("No OATH token secret"), "{page}");
    let csrf = between(&page, "name=\"csrf\" value=\"", "\"");

    let enrolled = post("/users/tom/otp", vec![("csrf", csrf.clone())])
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(enrolled.contains("<svg"), "a QR code: {enrolled}");
    let secret = between(&enrolled, "secret=", "&");
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let code = code_now(&secret);
    let checked = post(
        "/users/tom/otp/confirm",
        vec![("csrf", csrf.clone()), ("code", code.clone())],
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(checked.contains("Code accepted"), "{checked}");

    let out = radclient(s.radius, SECRET, &request("tom", "tom-Passw0rd"));
    let state = state_of(&out);
    let out = radclient(s.radius, SECRET, &answer_to("tom", &code, &state));
    assert!(out.contains("Received Access-Reject"), "{out}");
    let counted = s.metrics().await;
    assert!(
        counted.contains("outcome=\"reject:code-replayed\"} 1"),
        "{counted}"
    );
    let audit = m.ok(&["audit", "--limit", "100"]).stdout;
    assert!(audit.contains("otp-enrolled"), "{audit}");
}
