//! OATH TOTP of MFA users whose method is "oath-token" (issue 24): enrollment
//! (`mfasync users otp enroll`), and the check of a code with replay
//! protection (the RADIUS server). Secrets are sealed with the service's key
//! before they reach the store and opened only to check a code.

use mfasync_radius::totp;
use mfasync_secret::SecretKey;
use mfasync_store::Store;

/// The sealing context of OATH secrets.
const SEAL_CONTEXT: &str = "otp-secret";
/// The issuer an authenticator app shows beside the account.
const ISSUER: &str = "mfasync";

/// A new enrollment, shown once.
pub struct Enrolled {
    pub username: String,
    /// The `otpauth://` URI (holds the secret).
    pub uri: String,
}

impl Enrolled {
    /// The URI as a QR code (None: too long for one).
    fn qr(&self) -> Option<qrcode::QrCode> {
        qrcode::QrCode::new(self.uri.as_bytes()).ok()
    }

    /// The URI as a QR code of terminal text (two rows per line).
    pub fn qr_text(&self) -> Option<String> {
        Some(
            self.qr()?
                .render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .quiet_zone(true)
                .build(),
        )
    }

    /// The URI as a QR code in SVG (for the portal; dark modules on white, no styles).
    pub fn qr_svg(&self) -> Option<String> {
        Some(
            self.qr()?
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .quiet_zone(true)
                .build(),
        )
    }
}

/// Why enrollment or a check cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum OtpError {
    #[error("no sealing key: OATH secrets are stored sealed; create one first (docs/configuration.md, \"Secrets\")")]
    NoKey,
    #[error("no MFA user named {0}")]
    NoSuchUser(String),
    #[error("{0}")]
    Seal(String),
    #[error("database: {0}")]
    Store(#[from] mfasync_store::StoreError),
}

/// Enroll `username` with a new secret (replacing any), audited by `actor`.
pub async fn enroll(
    store: &dyn Store,
    key: Option<&SecretKey>,
    username: &str,
    actor: &str,
) -> Result<Enrolled, OtpError> {
    let key = key.ok_or(OtpError::NoKey)?;
    let user = store
        .users_by(
            mfasync_store::UserKey::UsernameLower,
            &[username.to_lowercase()],
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| OtpError::NoSuchUser(username.to_string()))?;
    let secret = totp::new_secret();
    let encoded = data_encoding::BASE32_NOPAD.encode(&secret);
    let sealed = key.seal(SEAL_CONTEXT, &encoded).map_err(OtpError::Seal)?;
    if !store.otp_enroll(&user.username, &sealed, actor).await? {
        return Err(OtpError::NoSuchUser(username.to_string()));
    }
    Ok(Enrolled {
        uri: totp::otpauth_uri(&secret, ISSUER, &user.username),
        username: user.username,
    })
}

/// What a code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Not enrolled.
    NotEnrolled,
    /// Not the code of this time (±1 step).
    Wrong,
    /// The code of a step already used.
    Replayed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::NotEnrolled => "otp-not-enrolled",
            Verdict::Wrong => "wrong-code",
            Verdict::Replayed => "code-replayed",
        }
    }
}

/// Check `code` for the MFA user `username` at `unix_secs`; an accepted code's
/// step is remembered in the store at once (compare-and-set), so it is accepted once.
pub async fn check(
    store: &dyn Store,
    key: &SecretKey,
    username: &str,
    code: &str,
    unix_secs: u64,
) -> Result<Verdict, OtpError> {
    let Some(stored) = store.otp_secret(username).await? else {
        return Ok(Verdict::NotEnrolled);
    };
    let encoded = key
        .open(SEAL_CONTEXT, &stored.sealed)
        .map_err(OtpError::Seal)?;
    let secret = data_encoding::BASE32_NOPAD
        .decode(encoded.as_bytes())
        .map_err(|_| OtpError::Seal(format!("the OATH secret of {username} is damaged")))?;
    let last = stored.last_step.and_then(|s| u64::try_from(s).ok());
    if let Some(step) = totp::verify(&secret, code, unix_secs, last) {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        return Ok(if store.otp_accept_step(username, step).await? {
            Verdict::Accepted
        } else {
            Verdict::Replayed
        });
    }
    // the right code of a step already used is a replay, not a typo
    Ok(match totp::verify(&secret, code, unix_secs, None) {
        Some(_) => Verdict::Replayed,
        None => Verdict::Wrong,
    })
}

/// Move the OATH secrets sealed with `old` to `key` (`db rekey --old-key-file`), in one
/// transaction; secrets `key` already opens are left as they are. Then those of the
/// recycle bin, so that a user restored later keeps a secret the key opens. How many moved.
pub async fn reseal(
    store: &dyn Store,
    key: &SecretKey,
    old: &SecretKey,
) -> Result<usize, OtpError> {
    let moved = resealed(store.otp_all().await?, key, old, "user row")?;
    if !moved.is_empty() {
        store.otp_reseal(&moved).await?;
    }
    let binned = resealed(store.bin_otp_all().await?, key, old, "recycle bin entry")?;
    if !binned.is_empty() {
        store.bin_otp_reseal(&binned).await?;
    }
    Ok(moved.len() + binned.len())
}

/// The secrets of `all` (id, sealed) that `key` does not open, sealed again with it
/// (`what` names the id in an error).
fn resealed(
    all: Vec<(i64, String)>,
    key: &SecretKey,
    old: &SecretKey,
    what: &str,
) -> Result<Vec<(i64, String)>, OtpError> {
    let mut moved = Vec::new();
    for (id, sealed) in all {
        if key.open(SEAL_CONTEXT, &sealed).is_ok() {
            continue;
        }
        let clear = old.open(SEAL_CONTEXT, &sealed).map_err(|e| {
            OtpError::Seal(format!(
                "an OATH secret ({what} {id}) opens with neither key: {e}"
            ))
        })?;
        moved.push((id, key.seal(SEAL_CONTEXT, &clear).map_err(OtpError::Seal)?));
    }
    Ok(moved)
}

/// Unix time now, in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
