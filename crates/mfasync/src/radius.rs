//! The RADIUS server of `serve` (`[radius]`): Access-Requests from the
//! configured clients are checked as `POST /api/v1/auth` checks a password
//! (LDAP bind, the same password-guessing limits, MFA membership), then the
//! user's method decides: "oath-token" users must give a code, other users
//! get what their client's `other_methods` says. Unknown clients and requests
//! that fail the Message-Authenticator are dropped unanswered and counted.
//! Every answer is counted by client and reason before it is sent, and audited
//! after; a password, a code or a shared secret is never logged.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mfasync_core::auth::Reason;
use mfasync_core::config::{Method, OtherMethods, Radius, RadiusClient, SecondFactor};
use mfasync_core::lockout::Account;
use mfasync_radius::{attr, Attribute, Challenges, Code, Duplicates, Request, Seen};
use mfasync_store::Store;
use mfasync_web::limits::{Limits, RequestGate};
use tokio::net::UdpSocket;

use crate::web::ServiceBackend;

/// How long a request's answer is kept for its retransmissions.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
/// At most this many answers are kept for retransmissions.
const DUPLICATE_CAP: usize = 65_536;
/// How long the code of a challenge may take (the State expires).
const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// At most this many challenges wait at once.
const CHALLENGE_CAP: usize = 65_536;
/// What the VPN shows when it asks for the code.
const CHALLENGE_PROMPT: &str = "Enter the code of your authenticator app";

/// One configured client, its secret read.
struct Client {
    settings: RadiusClient,
    network: ipnet::IpNet,
    secret: Vec<u8>,
}

/// A client's retransmission is the same source, identifier and Request Authenticator.
type RequestKey = (SocketAddr, u8, [u8; 16]);

/// The listening server.
pub struct Server {
    socket: UdpSocket,
    clients: Vec<Client>,
    backend: Arc<ServiceBackend>,
    store: Arc<dyn Store>,
    metrics: Arc<mfasync_web::Metrics>,
    limits: Arc<Limits>,
    duplicates: Mutex<Duplicates<RequestKey>>,
    /// State -> the MFA username whose password was right.
    challenges: Mutex<Challenges<String>>,
    /// Opens OATH secrets; None: no "oath-token" user can pass.
    key: Option<mfasync_secret::SecretKey>,
}

/// What a request gets.
struct Answer {
    code: Code,
    attributes: Vec<Attribute>,
    /// Why (the metrics label and the audit): "" for an accept.
    reason: &'static str,
    /// The username the answer is about.
    user: String,
}

impl Answer {
    fn accept(user: &str) -> Answer {
        Answer {
            code: Code::AccessAccept,
            attributes: Vec::new(),
            reason: "",
            user: user.to_string(),
        }
    }

    fn reject(user: &str, reason: &'static str) -> Answer {
        Answer {
            code: Code::AccessReject,
            attributes: Vec::new(),
            reason,
            user: user.to_string(),
        }
    }
}

/// Read the clients' secrets and bind the socket.
pub async fn bind(
    settings: &Radius,
    backend: Arc<ServiceBackend>,
    store: Arc<dyn Store>,
    metrics: Arc<mfasync_web::Metrics>,
    limits: Arc<Limits>,
    key: Option<mfasync_secret::SecretKey>,
) -> Result<Arc<Server>> {
    let mut clients = Vec::with_capacity(settings.clients.len());
    for (i, c) in settings.clients.iter().enumerate() {
        let network = c
            .network()
            .with_context(|| format!("radius.clients[{i}].address: not an IP network"))?;
        let text = std::fs::read_to_string(c.secret_file.trim()).with_context(|| {
            format!(
                "radius.clients[{i}].secret_file: cannot read {}",
                c.secret_file
            )
        })?;
        let secret = text.lines().next().unwrap_or_default().as_bytes().to_vec();
        if secret.is_empty() {
            anyhow::bail!(
                "radius.clients[{i}].secret_file: {} holds no secret on its first line",
                c.secret_file
            );
        }
        clients.push(Client {
            settings: c.clone(),
            network,
            secret,
        });
    }
    let socket = UdpSocket::bind(settings.listen.trim())
        .await
        .with_context(|| format!("radius.listen: cannot listen on {}", settings.listen))?;
    Ok(Arc::new(Server {
        socket,
        clients,
        backend,
        store,
        metrics,
        limits,
        duplicates: Mutex::new(Duplicates::new(DUPLICATE_WINDOW, DUPLICATE_CAP)),
        challenges: Mutex::new(Challenges::new(CHALLENGE_TTL, CHALLENGE_CAP)),
        key,
    }))
}

impl Server {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Answer requests until the task is aborted; each request is checked on its own task.
    pub async fn serve(self: Arc<Self>) {
        let mut buf = vec![0u8; mfasync_radius::packet::MAX_LEN];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    tracing::warn!(error = %e, "radius: receive failed");
                    continue;
                }
            };
            let Some(client) = self.client_of(from) else {
                self.metrics
                    .record_radius("unknown", "drop", "unknown-client");
                tracing::debug!(from = %from, "radius: request from an unknown client dropped");
                continue;
            };
            let raw = buf[..n].to_vec();
            let server = self.clone();
            tokio::spawn(async move { server.handle(client, from, raw).await });
        }
    }

    fn client_of(&self, from: SocketAddr) -> Option<usize> {
        let ip = from.ip().to_canonical();
        self.clients.iter().position(|c| c.network.contains(&ip))
    }

    fn duplicates(&self) -> MutexGuard<'_, Duplicates<RequestKey>> {
        self.duplicates.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn challenges(&self) -> MutexGuard<'_, Challenges<String>> {
        self.challenges.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn handle(&self, client: usize, from: SocketAddr, raw: Vec<u8>) {
        let Some(c) = self.clients.get(client) else {
            return;
        };
        let label = c.settings.label();
        let read =
            mfasync_radius::read_request(&raw, &c.secret, c.settings.require_message_authenticator);
        let (packet, answer) = match read {
            Err(dropped) => {
                self.metrics.record_radius(label, "drop", dropped.as_str());
                tracing::info!(client = label, from = %from, reason = dropped.as_str(), "radius: request dropped: {dropped}");
                return;
            }
            Ok(Err((packet, unusable))) => {
                tracing::info!(
                    client = label,
                    reason = "malformed-request",
                    "radius: {unusable}"
                );
                (packet, Answer::reject("", "malformed-request"))
            }
            Ok(Ok(request)) => {
                let key = (
                    from,
                    request.packet.identifier,
                    request.packet.authenticator,
                );
                let seen = self.duplicates().check(&key, Instant::now());
                match seen {
                    Seen::New => {}
                    Seen::InFlight => return,
                    Seen::Answered(bytes) => {
                        let _ = self.socket.send_to(&bytes, from).await;
                        return;
                    }
                }
                let answer = self.decide(c, from, &request).await;
                let bytes = mfasync_radius::reply(
                    &request.packet,
                    answer.code,
                    answer.attributes.clone(),
                    &c.secret,
                )
                .ok();
                {
                    self.duplicates()
                        .answered(&key, bytes.clone(), Instant::now());
                }
                self.send(c, from, bytes, &answer).await;
                return;
            }
        };
        let bytes = mfasync_radius::reply(&packet, answer.code, Vec::new(), &c.secret).ok();
        self.send(c, from, bytes, &answer).await;
    }

    /// Send an answer, count it, and audit it.
    async fn send(&self, c: &Client, from: SocketAddr, bytes: Option<Vec<u8>>, answer: &Answer) {
        let label = c.settings.label();
        let outcome = match answer.code {
            Code::AccessAccept => "accept",
            Code::AccessChallenge => "challenge",
            _ => "reject",
        };
        // counted before the client has the answer; audited after it, so that a
        // database busy with a sync's transaction does not hold the answer back
        self.metrics.record_radius(label, outcome, answer.reason);
        tracing::info!(
            client = label,
            username = answer.user.as_str(),
            outcome,
            reason = answer.reason,
            "radius: answered"
        );
        if let Some(bytes) = &bytes {
            if let Err(e) = self.socket.send_to(bytes, from).await {
                tracing::warn!(client = label, error = %e, "radius: answer not sent");
            }
        }
        let detail = if answer.reason.is_empty() {
            format!("user {}", answer.user)
        } else {
            format!("user {}: {}", answer.user, answer.reason)
        };
        if let Err(e) = self
            .store
            .audit_event(
                &format!("radius:{label}"),
                &format!("radius-{outcome}"),
                &detail,
            )
            .await
        {
            tracing::warn!(error = %e, "radius: audit not written");
        }
    }

    /// The password check, then the method's second factor.
    async fn decide(&self, c: &Client, from: SocketAddr, request: &Request) -> Answer {
        let user = request.user_name.as_str();
        if let Some(state) = &request.state {
            // the answer to a challenge: the code, for the password already checked
            let taken = self.challenges().take(state, user, Instant::now());
            let Some(mfa_username) = taken else {
                return Answer::reject(user, "unknown-state");
            };
            let code = String::from_utf8_lossy(&request.password);
            return self.second_factor(user, &mfa_username, code.trim()).await;
        }
        let Ok(typed) = std::str::from_utf8(&request.password) else {
            return Answer::reject(user, Reason::InvalidCredentials.as_str());
        };
        // "password,123456": the code is split off before the password is bound
        let appended = match c.settings.second_factor {
            SecondFactor::Append => {
                mfasync_radius::split_code(typed.as_bytes(), &c.settings.separator)
                    .and_then(|(pw, code)| Some((std::str::from_utf8(pw).ok()?, code)))
            }
            SecondFactor::Challenge => None,
        };
        let password = appended.map(|(pw, _)| pw).unwrap_or(typed);
        let mfa_user = match self.check_password(from, user, password).await {
            Ok(u) => u,
            Err(answer) => return answer,
        };
        let oath = mfa_user.method.as_deref() == Some(Method::OathToken.as_str());
        if !oath {
            return match c.settings.other_methods {
                OtherMethods::Password => Answer::accept(user),
                OtherMethods::Reject => Answer::reject(user, "method-not-supported"),
            };
        }
        match (c.settings.second_factor, appended) {
            (SecondFactor::Append, Some((_, code))) => {
                self.second_factor(user, &mfa_user.username, code).await
            }
            (SecondFactor::Append, None) => Answer::reject(user, "code-missing"),
            (SecondFactor::Challenge, _) => {
                if !self.enrolled(&mfa_user.username).await {
                    return Answer::reject(user, "otp-not-enrolled");
                }
                let state = self
                    .challenges()
                    .open(user, mfa_user.username.clone(), Instant::now());
                match state {
                    Some(state) => Answer {
                        code: Code::AccessChallenge,
                        attributes: vec![
                            Attribute::new(attr::REPLY_MESSAGE, CHALLENGE_PROMPT),
                            Attribute::new(attr::STATE, state.to_vec()),
                        ],
                        reason: "",
                        user: user.to_string(),
                    },
                    None => Answer::reject(user, "too-many-challenges"),
                }
            }
        }
    }

    /// The password as `POST /api/v1/auth` checks it, under the same limits (one
    /// count per account for both; the RADIUS client's address in place of the HTTP client's).
    async fn check_password(
        &self,
        from: SocketAddr,
        user: &str,
        password: &str,
    ) -> Result<mfasync_core::MfaUser, Answer> {
        let address = from.ip().to_canonical().to_string();
        let typed = Account::typed(user);
        if let Err(refusal) = self.limits.check(Some(&address), &typed) {
            return Err(Answer::reject(user, refusal.reason().as_str()));
        }
        let gate = RequestGate::new(&self.limits, Some(&address));
        let checked = self.backend.authenticate_user(user, password, &gate).await;
        if let Some(refusal) = gate.refusal() {
            return Err(Answer::reject(user, refusal.reason().as_str()));
        }
        let account = gate.account().unwrap_or_else(|| typed.clone());
        match checked {
            Ok(u) => {
                self.limits.succeeded(Some(&address), &[&account, &typed]);
                Ok(u)
            }
            Err(reason) => {
                if reason == Reason::InvalidCredentials {
                    self.limits.failed(Some(&address), &[&account]);
                }
                Err(Answer::reject(user, reason.as_str()))
            }
        }
    }

    async fn enrolled(&self, mfa_username: &str) -> bool {
        matches!(self.store.otp_secret(mfa_username).await, Ok(Some(_)))
    }

    /// The code of an "oath-token" user whose password was right.
    async fn second_factor(&self, user: &str, mfa_username: &str, code: &str) -> Answer {
        let Some(key) = &self.key else {
            tracing::warn!("radius: no sealing key: OATH codes cannot be checked");
            return Answer::reject(user, "otp-not-enrolled");
        };
        match mfasync_engine::otp::check(
            self.store.as_ref(),
            key,
            mfa_username,
            code,
            mfasync_engine::otp::now_secs(),
        )
        .await
        {
            Ok(mfasync_engine::otp::Verdict::Accepted) => Answer::accept(user),
            Ok(verdict) => Answer::reject(user, verdict.as_str()),
            Err(e) => {
                tracing::error!(username = user, error = %e, "radius: OATH code not checked");
                Answer::reject(user, "directory-unavailable")
            }
        }
    }
}
