//! The MFA user: the record kept in the MFA server's user database.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Source {
    #[default]
    Directory,
    Manual,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Directory => "directory",
            Source::Manual => "manual",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "directory" => Some(Source::Directory),
            "manual" => Some(Source::Manual),
            _ => None,
        }
    }
}

/// An MFA user with exactly the export fields of PRODUCT.md section 3.
/// `directory_id` is the key that ties a directory user to its MFA user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaUser {
    pub username: String,
    pub directory_id: Option<String>,
    pub dn: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub user_group: Option<String>,
    pub description: Option<String>,
    pub phone_call_language: Option<String>,
    pub text_message_language: Option<String>,
    pub mobile_app_language: Option<String>,
    pub oath_token_language: Option<String>,
    pub business_phone: Option<String>,
    pub home_phone: Option<String>,
    pub pager: Option<String>,
    pub mobile_phone: Option<String>,
    pub fax: Option<String>,
    pub ip_phone: Option<String>,
    pub custom_phone: Option<String>,
    pub primary_phone: Option<String>,
    pub extension: Option<String>,
    pub backup_phone: Option<String>,
    pub method: Option<String>,
    pub language: Option<String>,
    pub enabled: bool,
    pub sync_item: Option<String>,
    pub source: Source,
}

/// Names of the fields compared by the plan, in export order (all but `source`).
pub const FIELDS: &[&str] = &[
    "username",
    "directory_id",
    "dn",
    "first_name",
    "last_name",
    "email",
    "user_group",
    "description",
    "phone_call_language",
    "text_message_language",
    "mobile_app_language",
    "oath_token_language",
    "business_phone",
    "home_phone",
    "pager",
    "mobile_phone",
    "fax",
    "ip_phone",
    "custom_phone",
    "primary_phone",
    "extension",
    "backup_phone",
    "method",
    "language",
    "enabled",
    "sync_item",
    "source",
];

impl MfaUser {
    /// The optional text fields with their names, in export order (all but username, enabled, source).
    pub fn text_fields(&self) -> [(&'static str, &Option<String>); 24] {
        [
            ("directory_id", &self.directory_id),
            ("dn", &self.dn),
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
            ("email", &self.email),
            ("user_group", &self.user_group),
            ("description", &self.description),
            ("phone_call_language", &self.phone_call_language),
            ("text_message_language", &self.text_message_language),
            ("mobile_app_language", &self.mobile_app_language),
            ("oath_token_language", &self.oath_token_language),
            ("business_phone", &self.business_phone),
            ("home_phone", &self.home_phone),
            ("pager", &self.pager),
            ("mobile_phone", &self.mobile_phone),
            ("fax", &self.fax),
            ("ip_phone", &self.ip_phone),
            ("custom_phone", &self.custom_phone),
            ("primary_phone", &self.primary_phone),
            ("extension", &self.extension),
            ("backup_phone", &self.backup_phone),
            ("method", &self.method),
            ("language", &self.language),
            ("sync_item", &self.sync_item),
        ]
    }

    /// Mutable access to an optional text field by name (used by stores to fill rows).
    pub fn text_field_mut(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "directory_id" => &mut self.directory_id,
            "dn" => &mut self.dn,
            "first_name" => &mut self.first_name,
            "last_name" => &mut self.last_name,
            "email" => &mut self.email,
            "user_group" => &mut self.user_group,
            "description" => &mut self.description,
            "phone_call_language" => &mut self.phone_call_language,
            "text_message_language" => &mut self.text_message_language,
            "mobile_app_language" => &mut self.mobile_app_language,
            "oath_token_language" => &mut self.oath_token_language,
            "business_phone" => &mut self.business_phone,
            "home_phone" => &mut self.home_phone,
            "pager" => &mut self.pager,
            "mobile_phone" => &mut self.mobile_phone,
            "fax" => &mut self.fax,
            "ip_phone" => &mut self.ip_phone,
            "custom_phone" => &mut self.custom_phone,
            "primary_phone" => &mut self.primary_phone,
            "extension" => &mut self.extension,
            "backup_phone" => &mut self.backup_phone,
            "method" => &mut self.method,
            "language" => &mut self.language,
            "sync_item" => &mut self.sync_item,
            _ => return None,
        })
    }

    /// The name [`MfaUser::diff_fields`] gives a field, as a `'static` name
    /// (a change read back from text); None for a name it never gives.
    pub fn field_name(name: &str) -> Option<&'static str> {
        let fixed = ["username", "enabled", "source"];
        fixed
            .into_iter()
            .chain(MfaUser::default().text_fields().map(|(n, _)| n))
            .find(|n| *n == name)
    }

    /// Names of the fields that differ between `self` and `other`.
    pub fn diff_fields(&self, other: &MfaUser) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.username != other.username {
            out.push("username");
        }
        for ((name, a), (_, b)) in self.text_fields().iter().zip(other.text_fields().iter()) {
            if a != b {
                out.push(name);
            }
        }
        if self.enabled != other.enabled {
            out.push("enabled");
        }
        if self.source != other.source {
            out.push("source");
        }
        out
    }
}
