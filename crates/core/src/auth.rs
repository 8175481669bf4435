//! LDAP-bind authentication outcomes (PRODUCT.md `auth` reasons, and the
//! service's `rate-limited`) and the mapping of directory bind diagnostics to
//! them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Reason {
    InvalidCredentials,
    AccountDisabled,
    AccountLocked,
    AccountExpired,
    PasswordExpired,
    MustChangePassword,
    NotAnMfaUser,
    MfaUserDisabled,
    DirectoryUnavailable,
    /// The service's password-guessing limit for the client address
    /// (`POST /api/v1/auth` only; `core::lockout`), not the account's state.
    RateLimited,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidCredentials => "invalid-credentials",
            Reason::AccountDisabled => "account-disabled",
            Reason::AccountLocked => "account-locked",
            Reason::AccountExpired => "account-expired",
            Reason::PasswordExpired => "password-expired",
            Reason::MustChangePassword => "must-change-password",
            Reason::NotAnMfaUser => "not-an-mfa-user",
            Reason::MfaUserDisabled => "mfa-user-disabled",
            Reason::DirectoryUnavailable => "directory-unavailable",
            Reason::RateLimited => "rate-limited",
        }
    }
}

/// Map a failed bind (LDAP result code 49, invalidCredentials) to a reason using
/// Active Directory's diagnostic text ("80090308: LdapErr: DSID-0C09044E,
/// comment: AcceptSecurityContext error, data 52e, v4563"). Samba uses the
/// same codes. Unknown diagnostics are plain invalid credentials.
pub fn reason_from_ad_diagnostic(text: &str) -> Reason {
    let lower = text.to_ascii_lowercase();
    let code = lower
        .split("data ")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        })
        .unwrap_or_default();
    match code.as_str() {
        "530" | "531" | "533" => Reason::AccountDisabled,
        "532" => Reason::PasswordExpired,
        "701" => Reason::AccountExpired,
        "773" => Reason::MustChangePassword,
        "775" => Reason::AccountLocked,
        // 525 (no such user) and 52e (bad password) are both "invalid credentials":
        // never tell a caller which usernames exist.
        _ => Reason::InvalidCredentials,
    }
}

/// OpenLDAP ppolicy response control error values (draft-behera-ldap-password-policy).
pub fn reason_from_ppolicy_error(code: u8) -> Option<Reason> {
    match code {
        0 => Some(Reason::PasswordExpired),
        1 => Some(Reason::AccountLocked),
        2 => Some(Reason::MustChangePassword),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_codes() {
        let t = |c: &str| {
            reason_from_ad_diagnostic(&format!(
                "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {c}, v4563"
            ))
        };
        assert_eq!(t("525"), Reason::InvalidCredentials);
        assert_eq!(t("52e"), Reason::InvalidCredentials);
        assert_eq!(t("530"), Reason::AccountDisabled);
        assert_eq!(t("531"), Reason::AccountDisabled);
        assert_eq!(t("532"), Reason::PasswordExpired);
        assert_eq!(t("533"), Reason::AccountDisabled);
        assert_eq!(t("701"), Reason::AccountExpired);
        assert_eq!(t("773"), Reason::MustChangePassword);
        assert_eq!(t("775"), Reason::AccountLocked);
        assert_eq!(reason_from_ad_diagnostic(""), Reason::InvalidCredentials);
        assert_eq!(
            serde_json::to_string(&Reason::MustChangePassword)
                .ok()
                .as_deref(),
            Some("\"must-change-password\"")
        );
    }
}
