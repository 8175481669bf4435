//! `users explain` and `sync --user`: why a directory user is (or is not) an
//! MFA user, step by step, and what a sync of that one user changed.

use crate::user::MfaUser;
use serde::{Deserialize, Serialize};

/// The deciding step of an explanation (`decision.step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Step {
    /// No directory entry was found.
    Entry,
    /// The entry does not match `filters.user`.
    UserFilter,
    /// The entry has no value in any username attribute.
    Username,
    /// No sync item holds the entry.
    Items,
    /// The item named by `decision.item` holds it (first item wins).
    Item,
    /// An item holds it, but the account is disabled in the directory.
    AccountDisabled,
    /// A manual MFA user already has the username.
    ManualUser,
    /// It would depart, but `sync.protected` keeps it.
    Protected,
}

impl Step {
    /// As the JSON writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Entry => "entry",
            Step::UserFilter => "user_filter",
            Step::Username => "username",
            Step::Items => "items",
            Step::Item => "item",
            Step::AccountDisabled => "account_disabled",
            Step::ManualUser => "manual_user",
            Step::Protected => "protected",
        }
    }
}

/// What a sync decides for the user, and the step that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    /// "create", "update", "enable", "disable", "remove", "unchanged", or
    /// "none" (not an MFA user, and none is made).
    pub action: String,
    /// The index in `sync.items` of the item that governs the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// One sentence: why.
    pub reason: String,
    pub step: Step,
}

impl Decision {
    /// The deciding step as the CLI and the portal name it: the winning
    /// item (`sync.items[N]`), or the step's name.
    pub fn decided_by(&self) -> String {
        match (self.step, self.item) {
            (Step::Item | Step::AccountDisabled, Some(i)) => format!("sync.items[{i}]"),
            (other, _) => other.as_str().to_string(),
        }
    }
}

/// Where and how the entry was looked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Search {
    pub base: String,
    pub filter: String,
    /// "base" or "subtree".
    pub scope: String,
}

/// The directory entry found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FoundEntry {
    /// Disabled in the directory (AD userAccountControl bit 2).
    pub account_disabled: bool,
    pub dn: String,
    /// The unique id as text (`attributes.unique_id`); None when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
}

/// Whether the entry matches `filters.user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilterCheck {
    pub filter: String,
    pub matches: bool,
}

/// The username and the attribute it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsernameSource {
    pub attribute: String,
    /// "primary" (the first username attribute) or "backup".
    pub kind: String,
    pub value: String,
}

/// One sync item's verdict, in priority order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemVerdict {
    pub dn: String,
    pub holds: bool,
    /// Why, in words ("a direct member", "not under the container", ...).
    pub how: String,
    pub include_nested: bool,
    pub index: usize,
    /// "container" or "security-group".
    pub kind: String,
    /// The nested groups through which the user is a member, from the one
    /// holding the user outwards (empty for a direct member or a container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// Whether this item wins (the first that holds the user).
    pub wins: bool,
}

/// The MFA settings the winning item gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_phone: Option<String>,
    pub country_code: String,
    pub enabled: bool,
    pub language: String,
    pub method: String,
    pub phone: String,
    pub welcome_email: bool,
}

/// A field whose stored value differs from what a sync would write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldDifference {
    pub field: String,
    pub stored: Option<String>,
    pub would_write: Option<String>,
}

/// One of the user's last audit rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditLine {
    pub action: String,
    pub actor: String,
    /// RFC 3339 UTC.
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `users explain NAME|DN --json` and `GET /api/v1/users/{name}/explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Explanation {
    /// The user's last audit rows, newest first.
    pub audit: Vec<AuditLine>,
    pub decision: Decision,
    /// Stored value against what a sync would write, for the fields that differ.
    pub differences: Vec<FieldDifference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<FoundEntry>,
    /// Every sync item in priority order (empty when no entry was found or
    /// the user filter excludes it).
    pub items: Vec<ItemVerdict>,
    /// Why `sync.protected` protects the user (None: not protected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
    /// What was asked: a username or a DN.
    pub query: String,
    pub search: Search,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<ItemSettings>,
    /// The MFA user stored now (None: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<MfaUser>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_filter: Option<FilterCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<UsernameSource>,
    /// The MFA user a sync would write (None: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_write: Option<MfaUser>,
}

/// `sync --user NAME|DN --json` and `POST /api/v1/users/{name}/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserSynced {
    /// "create", "update", "enable", "disable", "remove" or "unchanged"
    /// ("none": no MFA user is stored or made).
    pub action: String,
    /// Whether the change was written (false for `--plan`, a held or
    /// protected departure, or nothing to change).
    pub applied: bool,
    /// The fields an update changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The limit that held the change for approval (nothing was applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    pub reason: String,
    pub step: Step,
    /// The MFA user's username (the stored one when no entry was found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_written_as_its_json_says() {
        use Step::*;
        for s in [
            Entry,
            UserFilter,
            Username,
            Items,
            Item,
            AccountDisabled,
            ManualUser,
            Protected,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
