//! The configuration file of PRODUCT.md section 2: types, defaults (the seed's
//! defaults, Active Directory schema) and validation.
//!
//! `parse` never stops at the first problem: it lists every unknown key and
//! every invalid value with its TOML key path, so `config apply` can show them
//! all at once. The types below are the only list of keys: a key no field
//! takes is found by `typed` (so no struct denies unknown fields itself, which
//! would stop at the first).

pub use crate::safeguard::Threshold;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

mod radius;
mod schema;
mod syntax;
mod typed;
mod values;

#[cfg(test)]
mod key_tests;

pub use radius::{OtherMethods, Radius, RadiusClient, SecondFactor};
pub use schema::Schema;

/// One problem in a configuration file, named by its TOML key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DirectorySource {
    /// "Use Active Directory": the domain's DCs found by DNS SRV, Kerberos binds (the seed's default).
    #[default]
    ActiveDirectory,
    /// "Use specific LDAP configuration": the servers listed.
    Ldap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BindType {
    Anonymous,
    Simple,
    Ssl,
    #[default]
    Windows,
}

impl BindType {
    pub fn as_str(self) -> &'static str {
        match self {
            BindType::Anonymous => "anonymous",
            BindType::Simple => "simple",
            BindType::Ssl => "ssl",
            BindType::Windows => "windows",
        }
    }
}

/// "Bind type - Queries" / "Bind type - Authentications".
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Bind {
    #[serde(rename = "type")]
    pub kind: BindType,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dn: String,
    /// Never serialized: `config export` must not print secrets.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The password sealed with the service's secret key (what the web portal
    /// stores when a password is typed there): "v1:" and base64. Never
    /// serialized, like `password`.
    #[serde(skip_serializing)]
    pub password_encrypted: Option<String>,
}

impl fmt::Debug for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bind")
            .field("kind", &self.kind)
            .field("dn", &self.dn)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field(
                "password_encrypted",
                &self.password_encrypted.as_ref().map(|_| "<sealed>"),
            )
            .finish()
    }
}

impl Bind {
    /// Whether some password source is configured.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
            || self.password_file.is_some()
            || self.password_env.is_some()
            || self.password_encrypted.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Directory {
    pub source: DirectorySource,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    pub servers: Vec<String>,
    /// DNS servers for the DC discovery of `source = "active-directory"`
    /// (`"IP"` or `"IP:port"`); empty = the host's resolver (/etc/resolv.conf).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    /// Active Directory site whose DCs are tried first (`source = "active-directory"`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub site: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub base_dn: String,
    pub include_trusted_domains: bool,
    pub use_attribute_scope_queries: bool,
    pub query_size_limit: u32,
    pub timeout_seconds: u32,
    /// The largest LDAP message accepted from a server, in bytes
    /// ([`MAX_MESSAGE_BYTES_RANGE`]): a larger one fails the read as soon as
    /// its header arrives, before it is buffered.
    pub max_message_bytes: u64,
    pub starttls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    pub tls_verify: bool,
    pub query_bind: Bind,
    pub auth_bind: Bind,
    /// Query binds for other domains (`include_trusted_domains`): where this
    /// domain's query account cannot read another domain (a one-way trust,
    /// or a simple bind that the other domain's DCs do not pass on).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainBind>,
}

/// `[[directory.domains]]`: the query bind to use for one other domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainBind {
    /// The domain's DNS name (`other.example.com`).
    pub name: String,
    pub query_bind: Bind,
}

impl DomainBind {
    /// The configuration key of its query bind (also the setting a typed
    /// password is sealed for): `directory.domains.<name>.query_bind`.
    pub fn key(&self) -> String {
        domain_bind_key(&self.name)
    }
}

/// The configuration key of the query bind of the domain `name`:
/// `directory.domains.<name>.query_bind`, the name lower-cased without a
/// trailing dot.
pub fn domain_bind_key(name: &str) -> String {
    format!(
        "directory.domains.{}.query_bind",
        name.trim().trim_end_matches('.').to_ascii_lowercase()
    )
}

impl Directory {
    /// The query bind for `domain` (a DNS name): its own when one is
    /// configured, else the query bind, with its configuration key.
    pub fn query_bind_for(&self, domain: &str) -> (&Bind, String) {
        let want = domain.trim().trim_end_matches('.');
        match self.domains.iter().find(|d| {
            d.name
                .trim()
                .trim_end_matches('.')
                .eq_ignore_ascii_case(want)
        }) {
            Some(d) => (&d.query_bind, d.key()),
            None => (&self.query_bind, "directory.query_bind".to_string()),
        }
    }
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            source: DirectorySource::ActiveDirectory,
            domain: String::new(),
            servers: Vec::new(),
            dns_servers: Vec::new(),
            site: String::new(),
            base_dn: String::new(),
            include_trusted_domains: true,
            use_attribute_scope_queries: true,
            query_size_limit: 1000,
            timeout_seconds: 10,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            starttls: false,
            tls_ca_file: None,
            tls_verify: true,
            query_bind: Bind::default(),
            auth_bind: Bind::default(),
            domains: Vec::new(),
        }
    }
}

/// `directory.max_message_bytes` by default: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 16 << 20;
/// The values `directory.max_message_bytes` may take: 1 MiB to 1 GiB.
pub const MAX_MESSAGE_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 30);

pub const DEFAULT_CONTAINER_FILTER: &str =
    "(|(objectClass=organizationalUnit)(objectClass=container))";
pub const DEFAULT_SECURITY_GROUP_FILTER: &str =
    "(&(objectCategory=group)(groupType:1.2.840.113556.1.4.804:=-2147483648))";
pub const DEFAULT_USER_FILTER: &str = "(&(objectCategory=person)(objectClass=user))";

/// `[filters]`. After `parse`, every filter is the one in effect: a blank
/// (or whitespace-only) key holds its schema's default ([`Schema::filters`])
/// and is named in `blank`, so that `config export` writes it blank again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filters {
    pub container: String,
    pub security_group: String,
    pub user: String,
    /// Which keys were blank in the configuration text.
    #[serde(skip)]
    pub blank: BlankFilters,
}

/// The `[filters]` keys that were blank: they follow the schema's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlankFilters {
    pub container: bool,
    pub security_group: bool,
    pub user: bool,
}

impl Default for Filters {
    fn default() -> Self {
        Schema::ActiveDirectory.filters()
    }
}

impl Filters {
    /// Put `schema`'s default in every blank filter, and note which were.
    pub fn fill_blank(&mut self, schema: Schema) {
        let defaults = schema.filters();
        for (value, default, was_blank) in [
            (
                &mut self.container,
                defaults.container,
                &mut self.blank.container,
            ),
            (
                &mut self.security_group,
                defaults.security_group,
                &mut self.blank.security_group,
            ),
            (&mut self.user, defaults.user, &mut self.blank.user),
        ] {
            if value.trim().is_empty() {
                *value = default;
                *was_blank = true;
            }
        }
    }

    /// `(key, filter in effect)` of each filter that was blank.
    pub fn blank_ones(&self) -> Vec<(&'static str, &str)> {
        [
            ("container", self.blank.container, &self.container),
            (
                "security_group",
                self.blank.security_group,
                &self.security_group,
            ),
            ("user", self.blank.user, &self.user),
        ]
        .into_iter()
        .filter(|(_, blank, _)| *blank)
        .map(|(k, _, v)| (k, v.as_str()))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UniqueIdType {
    #[default]
    Guid,
    ByteArray,
    String,
}

/// A list of attribute names, written either as a TOML array or as the seed's
/// semicolon-separated text ("name;ou").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(transparent)]
pub struct AttrList(pub Vec<String>);

impl<'de> Deserialize<'de> for AttrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let raw = Raw::deserialize(d)?;
        let items: Vec<String> = match raw {
            Raw::One(s) => s.split(';').map(|p| p.trim().to_string()).collect(),
            Raw::Many(v) => v.into_iter().map(|p| p.trim().to_string()).collect(),
        };
        Ok(AttrList(
            items
                .into_iter()
                .filter(|s: &String| !s.is_empty())
                .collect(),
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attributes {
    pub unique_id: String,
    pub unique_id_type: UniqueIdType,
    pub distinguished_name: String,
    pub container_name: AttrList,
    pub security_group_name: String,
    pub username: AttrList,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub user_group: String,
    pub description: String,
    pub phone_call_language: String,
    pub text_message_language: String,
    pub mobile_app_language: String,
    pub oath_token_language: String,
    pub business_phone: String,
    pub home_phone: String,
    pub pager: String,
    pub mobile_phone: String,
    pub fax: String,
    pub ip_phone: String,
    pub custom_phone: String,
    pub extension: String,
}

impl Default for Attributes {
    /// The seed's "Restore Defaults": Active Directory schema.
    fn default() -> Self {
        Attributes {
            unique_id: "objectGUID".into(),
            unique_id_type: UniqueIdType::Guid,
            distinguished_name: "distinguishedName".into(),
            container_name: AttrList(vec!["name".into()]),
            security_group_name: "name".into(),
            username: AttrList(vec!["userPrincipalName".into(), "sAMAccountName".into()]),
            first_name: "givenName".into(),
            last_name: "sn".into(),
            email: "mail".into(),
            user_group: String::new(),
            description: "description".into(),
            phone_call_language: String::new(),
            text_message_language: String::new(),
            mobile_app_language: String::new(),
            oath_token_language: String::new(),
            business_phone: "telephoneNumber".into(),
            home_phone: "homePhone".into(),
            pager: "pager".into(),
            mobile_phone: "mobile".into(),
            fax: "facsimileTelephoneNumber".into(),
            ip_phone: "ipPhone".into(),
            custom_phone: String::new(),
            extension: String::new(),
        }
    }
}

impl Attributes {
    /// Every attribute name a user search must request (deduplicated, non-empty).
    pub fn user_attributes(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![self.unique_id.clone(), self.distinguished_name.clone()];
        v.extend(self.username.0.iter().cloned());
        for a in [
            &self.first_name,
            &self.last_name,
            &self.email,
            &self.user_group,
            &self.description,
            &self.phone_call_language,
            &self.text_message_language,
            &self.mobile_app_language,
            &self.oath_token_language,
            &self.business_phone,
            &self.home_phone,
            &self.pager,
            &self.mobile_phone,
            &self.fax,
            &self.ip_phone,
            &self.custom_phone,
            &self.extension,
        ] {
            v.push(a.clone());
        }
        v.push("userAccountControl".into());
        let mut seen = std::collections::HashSet::new();
        v.retain(|a| !a.is_empty() && seen.insert(a.to_ascii_lowercase()));
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ItemKind {
    #[default]
    Container,
    SecurityGroup,
}

/// `sync.change_tracking`: how Active Directory changes are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeTracking {
    /// DirSync; without the replication right DirSync with OBJECT_SECURITY;
    /// when DirSync is refused altogether, uSNChanged polling.
    #[default]
    Auto,
    /// uSNChanged polling on one DC (plus Show Deleted for tombstones), even
    /// where DirSync would work.
    Usn,
}

impl ChangeTracking {
    pub fn is_auto(&self) -> bool {
        *self == ChangeTracking::Auto
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WhenRemoved {
    #[default]
    Disable,
    Remove,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    #[default]
    PhoneCall,
    TextMessage,
    MobileApp,
    OathToken,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::PhoneCall => "phone-call",
            Method::TextMessage => "text-message",
            Method::MobileApp => "mobile-app",
            Method::OathToken => "oath-token",
        }
    }
}

/// Which mapped phone is the primary (or backup) phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhoneKind {
    Business,
    Home,
    Pager,
    Mobile,
    Fax,
    Ip,
    Custom,
}

impl PhoneKind {
    /// As the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PhoneKind::Business => "business",
            PhoneKind::Home => "home",
            PhoneKind::Pager => "pager",
            PhoneKind::Mobile => "mobile",
            PhoneKind::Fax => "fax",
            PhoneKind::Ip => "ip",
            PhoneKind::Custom => "custom",
        }
    }
}

/// MFA settings given to users that an item holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ItemUser {
    pub enabled: bool,
    pub method: Method,
    pub phone: PhoneKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_phone: Option<PhoneKind>,
    pub country_code: String,
    pub language: String,
    pub welcome_email: bool,
}

impl Default for ItemUser {
    fn default() -> Self {
        ItemUser {
            enabled: true,
            method: Method::PhoneCall,
            phone: PhoneKind::Business,
            backup_phone: None,
            country_code: "1".into(),
            language: "en".into(),
            welcome_email: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncItem {
    #[serde(default)]
    pub kind: ItemKind,
    /// Required: missing, it is the empty DN that `validate` refuses.
    #[serde(default)]
    pub dn: String,
    #[serde(default = "yes")]
    pub include_nested: bool,
    #[serde(default)]
    pub when_removed: WhenRemoved,
    #[serde(default)]
    pub user: ItemUser,
    /// The OU's or group's unique id (`attributes.unique_id` as text),
    /// filled in when the item is stored or at the next cycle: an item whose
    /// DN is gone is found again by it (renamed or moved) and its `dn` updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// At most this many departures (disables + removals) of users this item
    /// governs are applied per cycle; the rest are held for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_departures: Option<u32>,
}

impl SyncItem {
    /// The item without its id and departure budget: what it governs and how
    /// (the id only finds it; the budget is a safeguard, not the mapping).
    pub fn without_id(&self) -> SyncItem {
        SyncItem {
            id: None,
            max_departures: None,
            ..self.clone()
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sync {
    pub enabled: bool,
    pub interval: String,
    pub remove_deleted_users: bool,
    pub always_full: bool,
    /// How incremental cycles find changes on Active Directory (docs/sync.md).
    #[serde(skip_serializing_if = "ChangeTracking::is_auto")]
    pub change_tracking: ChangeTracking,
    /// Disables and removals together: a count or a percentage (`safeguard::Threshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_threshold: Option<Threshold>,
    /// Disables only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_threshold_disables: Option<Threshold>,
    /// Removals only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_threshold_removals: Option<Threshold>,
    /// Users never disabled or removed by a sync: usernames, or group DNs
    /// (entries with `=`) whose members, nested included, are protected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<String>,
    pub notify: Vec<String>,
    /// Who gets a summary email after each cycle that changed something or
    /// failed (issue 22). Left out of exports while empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub summary: Vec<String>,
    /// How long an approval may stay pending before it expires as rejected
    /// ("7d"; at least a minute). Left out of exports while the default.
    #[serde(skip_serializing_if = "is_default_expiry")]
    pub approval_expiry: String,
    pub items: Vec<SyncItem>,
    /// How long removed users stay in the recycle bin ("30d"; at least a
    /// day): older entries are purged after each cycle. Exported only when
    /// set to something else than the default.
    #[serde(skip_serializing_if = "Sync::default_retention")]
    pub retention: String,
}

/// The default `sync.approval_expiry`.
const DEFAULT_APPROVAL_EXPIRY: &str = "7d";

fn is_default_expiry(v: &str) -> bool {
    v == DEFAULT_APPROVAL_EXPIRY
}

impl Default for Sync {
    fn default() -> Self {
        Sync {
            enabled: true,
            interval: "5m".into(),
            remove_deleted_users: true,
            always_full: false,
            change_tracking: ChangeTracking::Auto,
            approval_threshold: None,
            approval_threshold_disables: None,
            approval_threshold_removals: None,
            protected: Vec::new(),
            notify: Vec::new(),
            summary: Vec::new(),
            approval_expiry: DEFAULT_APPROVAL_EXPIRY.into(),
            items: Vec::new(),
            retention: DEFAULT_BIN_RETENTION.into(),
        }
    }
}

/// `sync.retention`'s default: removed users are kept 30 days.
const DEFAULT_BIN_RETENTION: &str = "30d";

impl Sync {
    /// How long an approval may stay pending (validated by `parse`; 7 days if not).
    pub fn approval_expiry_duration(&self) -> Duration {
        humantime::parse_duration(self.approval_expiry.trim())
            .unwrap_or(Duration::from_secs(7 * 86400))
    }

    fn default_retention(r: &str) -> bool {
        r == DEFAULT_BIN_RETENTION
    }

    /// How long the recycle bin keeps a removed user (validated by `parse`).
    pub fn retention_duration(&self) -> Duration {
        humantime::parse_duration(self.retention.trim()).unwrap_or(Duration::from_secs(30 * 86400))
    }

    /// The interval, already validated by `parse`.
    pub fn interval_duration(&self) -> Duration {
        humantime::parse_duration(&self.interval).unwrap_or(Duration::from_secs(300))
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Smtp {
    pub server: String,
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The password sealed with the service's secret key (typed on the
    /// portal's SMTP form): "v1:" and base64, sealed for the setting `smtp`.
    /// Never serialized, like `password`.
    #[serde(skip_serializing)]
    pub password_encrypted: Option<String>,
}

impl Smtp {
    /// Whether some password source is configured.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
            || self.password_file.is_some()
            || self.password_env.is_some()
            || self.password_encrypted.is_some()
    }
}

impl fmt::Debug for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp")
            .field("server", &self.server)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field(
                "password_encrypted",
                &self.password_encrypted.as_ref().map(|_| "<sealed>"),
            )
            .finish()
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub directory: Directory,
    pub filters: Filters,
    pub attributes: Attributes,
    pub sync: Sync,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
    /// The web portal (not a seed setting; optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal: Option<Portal>,
    /// The audit trail (not a seed setting).
    pub audit: AuditSettings,
    /// Welcome and update emails: templates and delivery (not a seed setting).
    pub email: EmailSettings,
    /// The RADIUS server of `serve` (not a seed setting; optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub radius: Option<Radius>,
}

/// `[email]`: the templates of welcome and update emails (files that
/// replace the built-in ones) and how long delivery is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailSettings {
    /// A file whose first line is `Subject: ...` and the rest the text body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub welcome_template: Option<String>,
    /// An HTML body sent besides the text one (values escaped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub welcome_html_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_html_template: Option<String>,
    /// A duration ("3d", "12h"; at least a minute): an email still not
    /// delivered this long after it was queued is marked failed.
    pub give_up_after: String,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            welcome_template: None,
            welcome_html_template: None,
            update_template: None,
            update_html_template: None,
            give_up_after: "3d".into(),
        }
    }
}

impl EmailSettings {
    /// How long delivery is retried (validated by `parse`; 3 days if not).
    pub fn give_up_duration(&self) -> Duration {
        humantime::parse_duration(self.give_up_after.trim())
            .unwrap_or(Duration::from_secs(3 * 86400))
    }
}

/// `[audit]`: how long the audit trail keeps its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditSettings {
    /// A duration ("400d", "2y"; at least a day), or "forever".
    pub retention: String,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention: "400d".into(),
        }
    }
}

impl AuditSettings {
    /// How long entries are kept; None: forever. (Validated by `parse`.)
    pub fn retention_duration(&self) -> Option<Duration> {
        match self.retention.trim() {
            r if r.eq_ignore_ascii_case("forever") => None,
            r => humantime::parse_duration(r).ok(),
        }
    }
}

/// `[portal]`: who may sign in to the web portal besides its local
/// administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Portal {
    /// DN of a directory group: its members (directly or through nested
    /// groups) sign in to the portal with their directory username and
    /// password. Blank: local administrators only.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub admin_group: String,
}

/// Parse and validate a configuration. On failure, every problem found:
/// unknown keys, type and enum errors (`typed`), and the value checks of
/// `validate` on the rest (a key already reported is not reported again).
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let doc: toml_edit::DocumentMut = match text.parse() {
        Ok(d) => d,
        Err(e) => return Err(vec![syntax::error(text, &e)]),
    };
    let (cfg, mut errors) = typed::read(doc);
    let Some(mut cfg) = cfg else {
        return Err(errors);
    };
    // blank filters mean the schema's default: every consumer sees the filter in effect
    let schema = Schema::of(&cfg);
    cfg.filters.fill_blank(schema);
    let reported: Vec<String> = errors.iter().map(|e| e.key.clone()).collect();
    errors.extend(validate(&cfg).into_iter().filter(|e| {
        !reported.iter().any(|r| {
            e.key == *r
                || e.key.starts_with(&format!("{r}."))
                || e.key.starts_with(&format!("{r}["))
        })
    }));
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// `password`, `password_file` and `password_env` of the table at `key`:
/// none of them empty (no password is written by leaving the key out), and
/// an environment variable name that a shell could set.
fn password_sources(
    password: &Option<String>,
    file: &Option<String>,
    env: &Option<String>,
    key: &str,
    out: &mut Vec<ConfigError>,
) {
    if password.as_deref() == Some("") {
        out.push(err(
            format!("{key}.password"),
            "is empty: give the password, or leave the key out for none",
        ));
    }
    if file.as_deref().is_some_and(|f| f.trim().is_empty()) {
        out.push(err(format!("{key}.password_file"), "is empty: give a path"));
    }
    validate_password_env(env, key, out);
    if let Some(name) = env {
        if !values::env_name_ok(name) {
            out.push(err(
                format!("{key}.password_env"),
                format!("{name:?} is not an environment variable name (letters, digits and '_', not starting with a digit)"),
            ));
        }
    }
}

/// `needs_dn`: the query bind binds as its own account (a DN, or on Active
/// Directory also a UPN or `DOMAIN\name`: `schema::check_bind_name`); the
/// auth bind binds as the user being checked, so it has no DN of its own.
fn validate_bind(b: &Bind, key: &str, needs_dn: Option<Schema>, out: &mut Vec<ConfigError>) {
    let sources = [
        &b.password,
        &b.password_file,
        &b.password_env,
        &b.password_encrypted,
    ]
    .iter()
    .filter(|p| p.is_some())
    .count();
    if sources > 1 {
        out.push(err(
            format!("{key}.password"),
            "give only one of password, password_file, password_env, password_encrypted",
        ));
    }
    if let Some(sealed) = &b.password_encrypted {
        if !sealed.starts_with("v1:") {
            out.push(err(
                format!("{key}.password_encrypted"),
                "not a sealed password (\"v1:...\", as the web portal writes it)",
            ));
        }
    }
    password_sources(&b.password, &b.password_file, &b.password_env, key, out);
    match b.kind {
        BindType::Simple | BindType::Ssl => {
            let Some(schema) = needs_dn else { return };
            if b.dn.trim().is_empty() {
                out.push(err(
                    format!("{key}.dn"),
                    format!("bind type {} needs a bind DN", b.kind.as_str()),
                ));
            } else if let Err(m) = schema::check_bind_name(&b.dn, schema) {
                out.push(err(format!("{key}.dn"), m));
            }
        }
        BindType::Anonymous | BindType::Windows => {}
    }
}

/// The prefix of the environment variables that configure mfasync itself
/// (its secret key, its database): never read as a password.
pub const RESERVED_ENV_PREFIX: &str = "MFASYNC_";

/// Whether `name` is one of mfasync's own variables ([`RESERVED_ENV_PREFIX`]).
pub fn reserved_env(name: &str) -> bool {
    name.starts_with(RESERVED_ENV_PREFIX)
}

/// `password_env` must not name one of mfasync's own variables: a
/// configuration stored through the portal or the API would otherwise send
/// the secret key to a directory server of its choosing.
fn validate_password_env(var: &Option<String>, key: &str, out: &mut Vec<ConfigError>) {
    if let Some(v) = var.as_deref().filter(|v| reserved_env(v)) {
        out.push(err(
            format!("{key}.password_env"),
            format!(
                "{v} is not read as a password: variables starting with {RESERVED_ENV_PREFIX} configure mfasync itself; use another name"
            ),
        ));
    }
}

/// The first listed server that a `type = "ssl"` bind would reach without TLS.
fn ssl_over_plain_ldap<'a>(d: &'a Directory, bind: &Bind) -> Option<&'a str> {
    if bind.kind != BindType::Ssl || d.starttls {
        return None;
    }
    d.servers
        .iter()
        .map(|s| s.trim())
        .find(|s| !s.to_ascii_lowercase().starts_with("ldaps://"))
}

/// Keys of `[directory.auth_bind]` that are accepted (PRODUCT.md gives it the
/// query bind's keys) but never used: a password check binds as the user being
/// checked. Part of [`warnings`].
pub fn unused_keys(cfg: &Config) -> Vec<ConfigError> {
    let b = &cfg.directory.auth_bind;
    let given = [
        ("dn", !b.dn.trim().is_empty()),
        ("password", b.password.is_some()),
        ("password_file", b.password_file.is_some()),
        ("password_env", b.password_env.is_some()),
        ("password_encrypted", b.password_encrypted.is_some()),
    ];
    given
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| {
            err(
                format!("directory.auth_bind.{k}"),
                "not used: a password check binds as the user being checked (only `type` is read here); the searching account is [directory.query_bind]",
            )
        })
        .collect()
}

/// Everything `config apply`, the portal's Settings page and `directory
/// test` warn about (none stops the configuration from being used): keys
/// that are never read, TLS servers written as IP addresses.
pub fn warnings(cfg: &Config) -> Vec<ConfigError> {
    let mut out = unused_keys(cfg);
    out.extend(server_warnings(&cfg.directory));
    out.extend(email_warnings(cfg));
    out
}

/// Items that ask for welcome/update emails while no `[smtp]` can send them.
pub fn email_warnings(cfg: &Config) -> Vec<ConfigError> {
    if cfg.smtp.is_some() {
        return Vec::new();
    }
    cfg.sync
        .items
        .iter()
        .enumerate()
        .filter(|(_, item)| item.user.welcome_email)
        .map(|(i, _)| {
            err(
                format!("sync.items[{i}].user.welcome_email"),
                "no [smtp] is configured: no welcome or update email is sent",
            )
        })
        .collect()
}

/// Servers reached over TLS (`ldaps://`, or `ldap://` with `starttls`) that
/// are written as an IP address: the certificate must name that address
/// (an iPAddress subjectAltName), which few certificates do. Nothing when
/// `tls_verify = false` (no name is checked then).
pub fn server_warnings(d: &Directory) -> Vec<ConfigError> {
    if !d.tls_verify {
        return Vec::new();
    }
    d.servers
        .iter()
        .enumerate()
        .filter_map(|(i, url)| {
            let url = url.trim();
            let rest = match url.strip_prefix("ldaps://") {
                Some(rest) => rest,
                None if d.starttls => url.strip_prefix("ldap://")?,
                None => return None,
            };
            let ip = ip_host(rest)?;
            Some(err(
                format!("directory.servers[{i}]"),
                format!(
                    "{url} names the server by its IP address {ip}: TLS succeeds only if the server's certificate names that address (an IP subjectAltName); most name the host, so write the host name the certificate was issued for"
                ),
            ))
        })
        .collect()
}

/// The host of `host[:port][/...]` when it is an IPv4 address or a
/// bracketed IPv6 address.
fn ip_host(rest: &str) -> Option<std::net::IpAddr> {
    let hostport = rest.split('/').next().unwrap_or_default();
    if let Some(v6) = hostport.strip_prefix('[') {
        let (h, _) = v6.split_once(']')?;
        return h.parse::<std::net::Ipv6Addr>().ok().map(Into::into);
    }
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    host.parse::<std::net::Ipv4Addr>().ok().map(Into::into)
}

/// A DNS label as AD uses them (letters, digits, '-', '_').
fn label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Whether `name` is a DNS domain name (a trailing dot allowed).
fn dns_name_ok(name: &str) -> bool {
    let n = name.trim().trim_end_matches('.');
    n.len() <= 253 && n.split('.').all(label_ok)
}

/// `[[directory.domains]]`: a DNS name each, once, and a query bind.
fn validate_domains(d: &Directory, schema: Schema, out: &mut Vec<ConfigError>) {
    let mut seen: Vec<String> = Vec::new();
    for (i, dom) in d.domains.iter().enumerate() {
        let key = format!("directory.domains[{i}]");
        if !dns_name_ok(&dom.name) {
            out.push(err(
                format!("{key}.name"),
                format!(
                    "{:?} is not a DNS domain name (e.g. \"other.example.com\")",
                    dom.name
                ),
            ));
        }
        let n = dom.name.trim().trim_end_matches('.').to_ascii_lowercase();
        if seen.contains(&n) {
            out.push(err(format!("{key}.name"), format!("{n} is listed twice")));
        }
        let this = d.domain.trim().trim_end_matches('.');
        if !this.is_empty() && this.eq_ignore_ascii_case(&n) {
            out.push(err(
                format!("{key}.name"),
                format!("{n} is directory.domain, which directory.query_bind reads"),
            ));
        }
        seen.push(n);
        validate_bind(
            &dom.query_bind,
            &format!("{key}.query_bind"),
            Some(schema),
            out,
        );
    }
}

/// `directory.domain`, `directory.site` and `directory.dns_servers` (DC discovery).
fn validate_discovery(d: &Directory, out: &mut Vec<ConfigError>) {
    if !d.domain.is_empty() && !dns_name_ok(&d.domain) {
        out.push(err(
            "directory.domain",
            format!(
                "{:?} is not a DNS domain name (e.g. \"example.com\")",
                d.domain
            ),
        ));
    }
    if !d.site.is_empty() && !label_ok(d.site.trim()) {
        out.push(err(
            "directory.site",
            format!(
                "{:?} is not an Active Directory site name (letters, digits, '-' and '_')",
                d.site
            ),
        ));
    }
    for (i, s) in d.dns_servers.iter().enumerate() {
        let s = s.trim();
        let ok = s.parse::<std::net::SocketAddr>().is_ok() || s.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            out.push(err(
                format!("directory.dns_servers[{i}]"),
                format!("{s:?} is not an IP address or IP:port (e.g. \"10.0.0.53\", \"[::1]:53\")"),
            ));
        }
    }
}

/// Value checks beyond what the types enforce.
pub fn validate(cfg: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let d = &cfg.directory;
    if d.source == DirectorySource::Ldap && d.servers.is_empty() {
        out.push(err(
            "directory.servers",
            "source = \"ldap\" needs at least one server",
        ));
    }
    for (key, bind) in [
        ("directory.query_bind.type", &d.query_bind),
        ("directory.auth_bind.type", &d.auth_bind),
    ] {
        if let Some(plain) = ssl_over_plain_ldap(d, bind) {
            out.push(err(
                key,
                format!("\"ssl\" sends the password encrypted only over ldaps:// or with starttls = true, and server {plain} is plain ldap://: use ldaps://, set directory.starttls = true, or choose \"simple\""),
            ));
        }
    }
    for (i, s) in d.servers.iter().enumerate() {
        if let Err(m) = validate_server(s) {
            out.push(err(format!("directory.servers[{i}]"), m));
        }
    }
    validate_discovery(d, &mut out);
    if !d.base_dn.is_empty() {
        if let Err(m) = crate::filter::validate_dn(&d.base_dn) {
            out.push(err("directory.base_dn", m));
        }
    }
    if d.query_size_limit == 0 {
        out.push(err(
            "directory.query_size_limit",
            "must be at least 1 (0 would return no users)",
        ));
    }
    if !(1..=3600).contains(&d.timeout_seconds) {
        out.push(err(
            "directory.timeout_seconds",
            "must be between 1 and 3600",
        ));
    }
    if !MAX_MESSAGE_BYTES_RANGE.contains(&d.max_message_bytes) {
        out.push(err(
            "directory.max_message_bytes",
            format!(
                "must be between {} (1 MiB) and {} (1 GiB) bytes",
                MAX_MESSAGE_BYTES_RANGE.start(),
                MAX_MESSAGE_BYTES_RANGE.end()
            ),
        ));
    }
    let schema = Schema::of(cfg);
    validate_bind(
        &d.query_bind,
        "directory.query_bind",
        Some(schema),
        &mut out,
    );
    validate_bind(&d.auth_bind, "directory.auth_bind", None, &mut out);
    validate_domains(d, schema, &mut out);
    if d.auth_bind.kind == BindType::Anonymous {
        out.push(err(
            "directory.auth_bind.type",
            "anonymous cannot verify passwords; use simple, ssl or windows",
        ));
    }
    for (key, f) in [
        ("filters.container", &cfg.filters.container),
        ("filters.security_group", &cfg.filters.security_group),
        ("filters.user", &cfg.filters.user),
    ] {
        if !f.trim().is_empty() {
            if let Err(m) = crate::filter::validate_filter(f) {
                out.push(err(key, m));
            }
        }
    }
    let a = &cfg.attributes;
    if a.unique_id.trim().is_empty() {
        out.push(err("attributes.unique_id", "must name an attribute"));
    }
    if a.distinguished_name.trim().is_empty() {
        out.push(err(
            "attributes.distinguished_name",
            "must name an attribute",
        ));
    }
    if a.username.0.is_empty() {
        out.push(err(
            "attributes.username",
            "must name at least one attribute",
        ));
    }
    if a.username.0.len() > 2 {
        out.push(err(
            "attributes.username",
            "at most two attributes: the username and its backup",
        ));
    }
    for (i, name) in a
        .username
        .0
        .iter()
        .chain(a.container_name.0.iter())
        .enumerate()
    {
        if !valid_attr_name(name) {
            out.push(err(
                if i < a.username.0.len() {
                    "attributes.username"
                } else {
                    "attributes.container_name"
                },
                format!("{name:?} is not an attribute name"),
            ));
        }
    }
    let s = &cfg.sync;
    match humantime::parse_duration(&s.interval) {
        Ok(dur) if dur < Duration::from_secs(10) => {
            out.push(err("sync.interval", "must be at least 10s"))
        }
        Ok(dur) if dur > Duration::from_secs(7 * 86400) => {
            out.push(err("sync.interval", "must be at most 7 days"))
        }
        Ok(_) => {}
        Err(e) => out.push(err(
            "sync.interval",
            format!("not a duration such as \"5m\": {e}"),
        )),
    }
    validate_safeguards(s, &mut out);
    for (key, list) in [("sync.notify", &s.notify), ("sync.summary", &s.summary)] {
        for (i, n) in list.iter().enumerate() {
            if !looks_like_email(n) {
                out.push(err(
                    format!("{key}[{i}]"),
                    format!("{n:?} is not an email address"),
                ));
            }
        }
    }
    let mut seen_dns = std::collections::HashMap::new();
    for (i, it) in s.items.iter().enumerate() {
        let key = format!("sync.items[{i}]");
        match crate::filter::validate_dn(&it.dn) {
            Err(m) => out.push(err(format!("{key}.dn"), m)),
            Ok(()) => {
                // one object, however its DN is spaced or cased
                let dn = crate::filter::normalize_dn(&it.dn);
                if let Some(first) = seen_dns.get(&dn) {
                    out.push(err(
                        format!("{key}.dn"),
                        format!("the same DN as sync.items[{first}].dn: an object is listed once"),
                    ));
                } else {
                    seen_dns.insert(dn, i);
                }
            }
        }
        if !values::language_tag_ok(&it.user.language) {
            out.push(err(
                format!("{key}.user.language"),
                format!(
                    "{:?} is not a language tag such as \"en\", \"de\" or \"es-MX\"",
                    it.user.language
                ),
            ));
        }
        let cc = it.user.country_code.trim_start_matches('+');
        if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) {
            out.push(err(
                format!("{key}.user.country_code"),
                "must be a calling code of 1 to 3 digits, such as \"1\" or \"44\"",
            ));
        }
        if it.user.backup_phone == Some(it.user.phone) {
            out.push(err(
                format!("{key}.user.backup_phone"),
                "must differ from the primary phone",
            ));
        }
    }
    if let Some(smtp) = &cfg.smtp {
        if !(smtp.server.starts_with("smtp://") || smtp.server.starts_with("smtps://")) {
            out.push(err("smtp.server", "must start with smtp:// or smtps://"));
        }
        if !looks_like_email(&smtp.from) {
            out.push(err("smtp.from", "must be an email address"));
        }
        let n = [
            &smtp.password,
            &smtp.password_file,
            &smtp.password_env,
            &smtp.password_encrypted,
        ]
        .iter()
        .filter(|p| p.is_some())
        .count();
        if n > 1 {
            out.push(err(
                "smtp.password",
                "give only one of password, password_file, password_env, password_encrypted",
            ));
        }
        if let Some(sealed) = &smtp.password_encrypted {
            if !sealed.starts_with("v1:") {
                out.push(err(
                    "smtp.password_encrypted",
                    "not a sealed password (\"v1:...\", as the web portal writes it)",
                ));
            }
        }
        password_sources(
            &smtp.password,
            &smtp.password_file,
            &smtp.password_env,
            "smtp",
            &mut out,
        );
    }
    match humantime::parse_duration(cfg.sync.retention.trim()) {
        Ok(d) if d >= Duration::from_secs(86400) => {}
        Ok(_) => out.push(err("sync.retention", "must be at least 1 day")),
        Err(e) => out.push(err(
            "sync.retention",
            format!("not a duration such as \"30d\": {e}"),
        )),
    }
    let r = cfg.audit.retention.trim();
    if !r.eq_ignore_ascii_case("forever") {
        match humantime::parse_duration(r) {
            Ok(d) if d >= Duration::from_secs(86400) => {}
            Ok(_) => out.push(err("audit.retention", "must be at least 1 day")),
            Err(e) => out.push(err(
                "audit.retention",
                format!("not a duration such as \"400d\" (or \"forever\"): {e}"),
            )),
        }
    }
    match humantime::parse_duration(cfg.sync.approval_expiry.trim()) {
        Ok(d) if d >= Duration::from_secs(60) => {}
        Ok(_) => out.push(err("sync.approval_expiry", "must be at least 1 minute")),
        Err(e) => out.push(err(
            "sync.approval_expiry",
            format!("not a duration such as \"7d\": {e}"),
        )),
    }
    match humantime::parse_duration(cfg.email.give_up_after.trim()) {
        Ok(d) if d >= Duration::from_secs(60) => {}
        Ok(_) => out.push(err("email.give_up_after", "must be at least 1 minute")),
        Err(e) => out.push(err(
            "email.give_up_after",
            format!("not a duration such as \"3d\": {e}"),
        )),
    }
    for (key, path) in [
        ("email.welcome_template", &cfg.email.welcome_template),
        (
            "email.welcome_html_template",
            &cfg.email.welcome_html_template,
        ),
        ("email.update_template", &cfg.email.update_template),
        (
            "email.update_html_template",
            &cfg.email.update_html_template,
        ),
    ] {
        if path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            out.push(err(
                key,
                "is empty: name a template file or leave the key out",
            ));
        }
    }
    if let Some(p) = &cfg.portal {
        if !p.admin_group.trim().is_empty() {
            if let Err(m) = crate::filter::validate_dn(&p.admin_group) {
                out.push(err("portal.admin_group", m));
            }
        }
    }
    if let Some(r) = &cfg.radius {
        radius::validate(r, &mut out);
    }
    if !s.notify.is_empty() && cfg.smtp.is_none() {
        out.push(err(
            "smtp",
            "sync.notify lists recipients but [smtp] is missing",
        ));
    }
    if !s.summary.is_empty() && cfg.smtp.is_none() {
        out.push(err(
            "smtp",
            "sync.summary lists recipients but [smtp] is missing",
        ));
    }
    out
}

/// `sync.approval_threshold*` (counts 1..=999; percentages are checked
/// when read) and `sync.protected` (usernames, or group DNs).
fn validate_safeguards(s: &Sync, out: &mut Vec<ConfigError>) {
    let thresholds = [
        ("sync.approval_threshold", s.approval_threshold),
        (
            "sync.approval_threshold_disables",
            s.approval_threshold_disables,
        ),
        (
            "sync.approval_threshold_removals",
            s.approval_threshold_removals,
        ),
    ];
    for (key, t) in thresholds {
        if let Some(Threshold::Count(n)) = t {
            if !(1..=999).contains(&n) {
                out.push(err(key, "must be between 1 and 999"));
            }
        }
    }
    for (i, p) in s.protected.iter().enumerate() {
        let key = format!("sync.protected[{i}]");
        if p.trim().is_empty() {
            out.push(err(key, "must name a user or a group DN"));
        } else if crate::safeguard::is_group_entry(p) {
            if let Err(m) = crate::filter::validate_dn(p) {
                out.push(err(key, format!("{p:?} is not a group DN: {m}")));
            }
        }
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((l, d)) => !l.is_empty() && d.contains('.') && !s.contains(char::is_whitespace),
        None => false,
    }
}

fn valid_attr_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';')
}

fn validate_server(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("ldap://")
        .or_else(|| s.strip_prefix("ldaps://"))
        .ok_or_else(|| format!("{s:?} must start with ldap:// or ldaps://"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!("{s:?} is not ldap[s]://host[:port]"));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if !host.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!("{s:?} has a bad port"));
        }
    }
    Ok(())
}

impl Config {
    /// The configuration as TOML with every secret left out.
    /// A filter that was blank is written blank again, with a comment under
    /// `[filters]` giving the filter in effect.
    pub fn to_toml_redacted(&self) -> String {
        let blank = self.filters.blank_ones();
        let mut shown = std::borrow::Cow::Borrowed(self);
        if !blank.is_empty() {
            let f = &mut shown.to_mut().filters;
            let b = f.blank;
            for (was_blank, value) in [
                (b.container, &mut f.container),
                (b.security_group, &mut f.security_group),
                (b.user, &mut f.user),
            ] {
                if was_blank {
                    value.clear();
                }
            }
        }
        let text = match toml::to_string_pretty(shown.as_ref()) {
            Ok(t) => t,
            Err(e) => return format!("# cannot render configuration: {e}\n"),
        };
        if blank.is_empty() {
            return text;
        }
        let mut note = format!(
            "# blank: the default of the {} schema, in effect:\n",
            Schema::of(self).as_str()
        );
        for (key, value) in &blank {
            let quoted = toml::Value::String(value.to_string()).to_string();
            note.push_str(&format!("#   {key} = {quoted}\n"));
        }
        match text.find("[filters]\n") {
            Some(at) => {
                let at = at + "[filters]\n".len();
                format!("{}{note}{}", &text[..at], &text[at..])
            }
            None => text,
        }
    }

    /// Base DN, with the items' DNs as a fallback hint. Empty means "ask the RootDSE".
    pub fn base_dn(&self) -> &str {
        &self.directory.base_dn
    }

    /// A fingerprint of the sync items (kind, dn, order, settings): when it
    /// changes, a full synchronization is needed (the seed's rule).
    /// An item's `id` is left out: filling it in changes nothing it governs.
    pub fn items_fingerprint(&self) -> String {
        let items: Vec<SyncItem> = self.sync.items.iter().map(SyncItem::without_id).collect();
        serde_json::to_string(&items).unwrap_or_default()
    }

    /// A fingerprint of what decides which entries are users and what they
    /// map to, besides the items: `[attributes]`, `[filters]`, the base DN
    /// and whether members from other domains are followed. When it changes,
    /// stored users may hold an old mapping: the next cycle must be full.
    pub fn mapping_fingerprint(&self) -> String {
        serde_json::to_string(&(
            &self.attributes,
            &self.filters,
            &self.directory.base_dn,
            self.directory.include_trusted_domains,
        ))
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(r: Result<Config, Vec<ConfigError>>) -> Vec<String> {
        match r {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.key).collect(),
        }
    }

    fn one_item() -> Config {
        let mut c = Config::default();
        c.sync.items.push(SyncItem {
            kind: ItemKind::Container,
            dn: "OU=A,DC=x".into(),
            include_nested: true,
            when_removed: WhenRemoved::Disable,
            user: ItemUser::default(),
            id: None,
            max_departures: None,
        });
        c
    }

    #[test]
    fn mapping_fingerprint_follows_attributes_filters_and_base_dn_not_items() {
        let base = one_item();
        let fp = base.mapping_fingerprint();
        let mut c = base.clone();
        c.attributes.first_name = "cn".into();
        assert_ne!(c.mapping_fingerprint(), fp);
        let mut c = base.clone();
        c.filters.user = "(objectClass=person)".into();
        assert_ne!(c.mapping_fingerprint(), fp);
        let mut c = base.clone();
        c.directory.base_dn = "DC=y".into();
        assert_ne!(c.mapping_fingerprint(), fp);
        // items and intervals have their own rules
        let mut c = base.clone();
        c.sync.items[0].dn = "OU=B,DC=x".into();
        c.sync.interval = "1h".into();
        assert_eq!(c.mapping_fingerprint(), fp);
    }

    #[test]
    fn an_items_id_is_not_part_of_its_fingerprint() {
        let base = one_item();
        let mut c = base.clone();
        c.sync.items[0].id = Some("4f2a7c1e-0000-4000-8000-000000000001".into());
        assert_eq!(c.items_fingerprint(), base.items_fingerprint());
        c.sync.items[0].dn = "OU=Renamed,DC=x".into();
        assert_ne!(c.items_fingerprint(), base.items_fingerprint());
        // written in the file as `id`, and exported
        let text = "[[sync.items]]\ndn = \"OU=A,DC=x\"\nid = \"abc\"\n";
        let back = parse(text);
        assert_eq!(
            back.as_ref().map(|c| c.sync.items[0].id.clone()),
            Ok(Some("abc".to_string())),
        );
        let back = back.unwrap_or_default();
        assert!(back.to_toml_redacted().contains("id = \"abc\""));
    }

    #[test]
    fn empty_file_gives_seed_defaults() {
        let c = parse("").unwrap_or_default();
        assert_eq!(c.directory.source, DirectorySource::ActiveDirectory);
        assert_eq!(c.directory.query_bind.kind, BindType::Windows);
        assert!(c.directory.include_trusted_domains);
        assert_eq!(c.directory.query_size_limit, 1000);
        assert_eq!(c.directory.max_message_bytes, 16_777_216);
        assert_eq!(c.attributes.unique_id, "objectGUID");
        assert_eq!(
            c.attributes.username.0,
            vec!["userPrincipalName", "sAMAccountName"]
        );
        assert_eq!(c.filters.user, DEFAULT_USER_FILTER);
        assert!(c.sync.remove_deleted_users);
        assert_eq!(c.sync.approval_threshold, None);
        assert_eq!(
            c.audit.retention_duration(),
            Some(Duration::from_secs(400 * 86400))
        );
        let forever = parse("[audit]\nretention = \"forever\"").unwrap_or_default();
        assert_eq!(forever.audit.retention_duration(), None);
        assert!(parse("").is_ok());
    }

    #[test]
    fn every_unknown_key_is_listed_with_its_path() {
        let k = keys(parse(
            "bogus = 1\n[directory]\nservrs = []\n[directory.query_bind]\nkind = \"x\"\n[[sync.items]]\ndn = \"ou=a\"\ncolour = 1\n[sync.items.user]\nmetod = 1\n",
        ));
        assert_eq!(
            k,
            vec![
                "bogus",
                "directory.servrs",
                "directory.query_bind.kind",
                "sync.items[0].colour",
                "sync.items[0].user.metod"
            ]
        );
    }

    #[test]
    fn safeguard_keys_take_counts_and_percentages() {
        let c = parse(
            "[sync]\napproval_threshold = \"2%\"\napproval_threshold_disables = 40\n\
             approval_threshold_removals = \"0.5%\"\nprotected = [\"breakglass\", \"CN=Tier0,DC=x\"]\n\
             [[sync.items]]\ndn = \"cn=vpn,dc=x\"\nmax_departures = 3\n",
        )
        .unwrap();
        assert_eq!(c.sync.approval_threshold, Some(Threshold::Percent(20_000)));
        assert_eq!(
            c.sync.approval_threshold_disables,
            Some(Threshold::Count(40))
        );
        assert_eq!(
            c.sync.approval_threshold_removals,
            Some(Threshold::Percent(5_000))
        );
        assert_eq!(c.sync.protected.len(), 2);
        assert_eq!(c.sync.items[0].max_departures, Some(3));
        // the budget is no part of what the item governs (no full cycle for it)
        let mut other = c.clone();
        other.sync.items[0].max_departures = Some(4);
        assert_eq!(c.items_fingerprint(), other.items_fingerprint());
    }

    #[test]
    fn bad_safeguard_values_name_their_key() {
        for (text, key, says) in [
            (
                "[sync]\napproval_threshold = \"0%\"",
                "sync.approval_threshold",
                "above 0%",
            ),
            (
                "[sync]\napproval_threshold = \"150%\"",
                "sync.approval_threshold",
                "at most 100%",
            ),
            (
                "[sync]\napproval_threshold = \"lots\"",
                "sync.approval_threshold",
                "percentage",
            ),
            (
                "[sync]\napproval_threshold_disables = 0",
                "sync.approval_threshold_disables",
                "between 1 and 999",
            ),
            (
                "[sync]\napproval_threshold_removals = \"3\"",
                "sync.approval_threshold_removals",
                "percentage",
            ),
            (
                "[sync]\napproval_threshold_removals = -2",
                "sync.approval_threshold_removals",
                "between 1 and 999",
            ),
            (
                "[sync]\nprotected = [\"\"]",
                "sync.protected[0]",
                "user or a group",
            ),
            (
                "[sync]\nprotected = [\"cn=x,,dc=y\"]",
                "sync.protected[0]",
                "not a group DN",
            ),
            (
                "[[sync.items]]\ndn = \"ou=a,dc=b\"\nmax_departures = -1",
                "sync.items[0].max_departures",
                "",
            ),
        ] {
            let errors = parse(text).unwrap_err();
            let e = errors.iter().find(|e| e.key == key);
            assert!(
                e.is_some_and(|e| e.message.contains(says)),
                "{text}: {errors:?}"
            );
        }
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        for (text, key) in [
            ("[sync]\napproval_threshold = 0", "sync.approval_threshold"),
            (
                "[sync]\napproval_threshold = 1000",
                "sync.approval_threshold",
            ),
            (
                "[directory]\nquery_size_limit = 0",
                "directory.query_size_limit",
            ),
            (
                "[directory]\ntimeout_seconds = 0",
                "directory.timeout_seconds",
            ),
            (
                "[directory]\nmax_message_bytes = 1000",
                "directory.max_message_bytes",
            ),
            (
                "[directory]\nmax_message_bytes = 2147483648",
                "directory.max_message_bytes",
            ),
            (
                "[directory]\nmax_message_bytes = -1",
                "directory.max_message_bytes",
            ),
            ("[sync]\ninterval = \"often\"", "sync.interval"),
            ("[filters]\nuser = \"(objectClass=user\"", "filters.user"),
            (
                "[filters]\ncontainer = \"objectClass=ou)\"",
                "filters.container",
            ),
            ("[directory]\nbase_dn = \"not a dn\"", "directory.base_dn"),
            ("[portal]\nadmin_group = \"not a dn\"", "portal.admin_group"),
            ("[portal]\nadmin_grp = \"cn=a\"", "portal.admin_grp"),
            (
                "[directory.query_bind]\npassword_encrypted = \"plain\"",
                "directory.query_bind.password_encrypted",
            ),
            (
                "[directory.query_bind]\npassword = \"a\"\npassword_encrypted = \"v1:x\"",
                "directory.query_bind.password",
            ),
            (
                "[smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\npassword_encrypted = \"plain\"",
                "smtp.password_encrypted",
            ),
            (
                "[smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\npassword_env = \"X\"\npassword_encrypted = \"v1:x\"",
                "smtp.password",
            ),
            (
                "[directory.query_bind]\npassword_env = \"MFASYNC_SECRET_KEY\"",
                "directory.query_bind.password_env",
            ),
            (
                "[[directory.domains]]\nname = \"b.test\"\n[directory.domains.query_bind]\npassword_env = \"MFASYNC_DATABASE\"",
                "directory.domains[0].query_bind.password_env",
            ),
            (
                "[smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\npassword_env = \"MFASYNC_SECRET_KEY_FILE\"",
                "smtp.password_env",
            ),
            ("[directory]\nsource = \"ldap\"", "directory.servers"),
            ("[directory]\ndomain = \"bad domain\"", "directory.domain"),
            ("[directory]\nsite = \"a.b\"", "directory.site"),
            (
                "[directory]\ndns_servers = [\"dns.example.com\"]",
                "directory.dns_servers[0]",
            ),
            (
                "[directory]\nservers = [\"http://x\"]",
                "directory.servers[0]",
            ),
            (
                "[directory.query_bind]\ntype = \"simple\"",
                "directory.query_bind.dn",
            ),
            ("[[sync.items]]\ndn = \"garbage\"", "sync.items[0].dn"),
            (
                "[[sync.items]]\ndn = \"ou=a,dc=b\"\n[sync.items.user]\ncountry_code = \"abc\"",
                "sync.items[0].user.country_code",
            ),
            ("[sync]\nnotify = [\"x@y.z\"]", "smtp"),
            ("[sync]\nsummary = [\"x@y.z\"]", "smtp"),
            ("[sync]\nsummary = [\"not a mailbox\"]", "sync.summary[0]"),
            ("[audit]\nretention = \"1h\"", "audit.retention"),
            ("[sync]\nretention = \"1h\"", "sync.retention"),
            ("[sync]\nretention = \"soon\"", "sync.retention"),
            ("[audit]\nretention = \"a while\"", "audit.retention"),
            ("[audit]\nkeep = \"1d\"", "audit.keep"),
            ("[email]\ngive_up_after = \"10s\"", "email.give_up_after"),
            ("[email]\ngive_up_after = \"soon\"", "email.give_up_after"),
            ("[sync]\napproval_expiry = \"30s\"", "sync.approval_expiry"),
            ("[sync]\napproval_expiry = \"a week\"", "sync.approval_expiry"),
            ("[email]\nwelcome_template = \"\"", "email.welcome_template"),
            ("[email]\nsender = \"x\"", "email.sender"),
        ] {
            let k = keys(parse(text));
            assert!(
                k.contains(&key.to_string()),
                "{text:?} gave {k:?}, wanted {key}"
            );
        }
    }

    #[test]
    fn type_errors_name_their_key() {
        let k = keys(parse("[directory]\nquery_size_limit = \"many\"\n"));
        assert_eq!(k, vec!["directory.query_size_limit"]);
        let k = keys(parse("[[sync.items]]\ndn = \"ou=a,dc=b\"\n[[sync.items]]\ndn = \"ou=b,dc=b\"\nwhen_removed = \"explode\"\n"));
        assert_eq!(k, vec!["sync.items[1].when_removed"]);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let mut k = keys(parse(
            "bogus = 1\n[directory]\nquery_size_limit = \"many\"\nstarttls = 3\ntimeout_seconds = 0\n\
             [directory.query_bind]\ntype = \"simple\"\ndn = \"cn=a,dc=b\"\npassword = \"\"\n\
             [smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\npassword_env = \"MY-PW\"\n\
             [[sync.items]]\ndn = \"OU=Sales,DC=example,DC=com\"\n\
             [[sync.items]]\nkind = \"security-group\"\ndn = \"ou=sales, dc=example,  dc=com\"\nwhen_removed = \"explode\"\n\
             [sync.items.user]\nlanguage = \"english\"\nmethod = \"pigeon\"\n\
             [[sync.items]]\n\n",
        ));
        k.sort();
        assert_eq!(
            k,
            vec![
                "bogus",
                "directory.query_bind.password",
                "directory.query_size_limit",
                "directory.starttls",
                "directory.timeout_seconds",
                "smtp.password_env",
                "sync.items[1].dn",
                "sync.items[1].user.language",
                "sync.items[1].user.method",
                "sync.items[1].when_removed",
                "sync.items[2].dn",
            ]
        );
    }

    #[test]
    fn empty_passwords_and_impossible_env_names_are_refused() {
        for (text, key) in [
            (
                "[directory.query_bind]\npassword = \"\"",
                "directory.query_bind.password",
            ),
            (
                "[directory.auth_bind]\npassword_file = \" \"",
                "directory.auth_bind.password_file",
            ),
            (
                "[directory.query_bind]\npassword_env = \"1PW\"",
                "directory.query_bind.password_env",
            ),
            (
                "[smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\npassword = \"\"",
                "smtp.password",
            ),
            (
                "[[directory.domains]]\nname = \"a.test\"\n[directory.domains.query_bind]\ntype = \"anonymous\"\npassword_env = \"A B\"\n",
                "directory.domains[0].query_bind.password_env",
            ),
        ] {
            let k = keys(parse(text));
            assert_eq!(k, vec![key.to_string()], "{text:?}");
        }
        assert!(parse("[directory.query_bind]\npassword_env = \"_MFA_PW2\"").is_ok());
    }

    #[test]
    fn item_languages_are_language_tags() {
        let item = |lang: &str| {
            format!(
                "[[sync.items]]\ndn = \"ou=a,dc=b\"\n[sync.items.user]\nlanguage = \"{lang}\"\n"
            )
        };
        for ok in ["en", "de", "es-MX", "zh-Hant-TW"] {
            assert!(parse(&item(ok)).is_ok(), "{ok}");
        }
        for bad in ["", "english", "en US", "e"] {
            assert_eq!(
                keys(parse(&item(bad))),
                vec!["sync.items[0].user.language"],
                "{bad}"
            );
        }
    }

    #[test]
    fn semicolon_lists_are_accepted() {
        let c = parse("[attributes]\ncontainer_name = \"ou;name\"\nusername = \"uid\"")
            .unwrap_or_default();
        assert_eq!(c.attributes.container_name.0, vec!["ou", "name"]);
        assert_eq!(c.attributes.username.0, vec!["uid"]);
    }

    #[test]
    fn export_never_contains_secrets() {
        let c = parse(
            "[directory]\nsource=\"ldap\"\nservers=[\"ldap://h\"]\n[directory.query_bind]\ntype=\"simple\"\ndn=\"cn=a,dc=b\"\npassword=\"hunter2\"\n[smtp]\nserver=\"smtp://h\"\nfrom=\"a@b.c\"\npassword=\"smtpsecret\"\n",
        );
        let sealed = parse("[smtp]\nserver=\"smtp://h\"\nfrom=\"a@b.c\"\nusername=\"u\"\npassword_encrypted=\"v1:SEALEDSMTP\"\n")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let smtp = sealed.smtp.clone().unwrap_or_default();
        assert!(smtp.has_password());
        assert!(!sealed.to_toml_redacted().contains("SEALEDSMTP"));
        assert!(!format!("{smtp:?}").contains("SEALEDSMTP"));
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        };
        let out = c.to_toml_redacted();
        assert!(
            !out.contains("hunter2") && !out.contains("smtpsecret"),
            "{out}"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        // what is exported parses back to the same configuration less the secrets
        let back = parse(&out).unwrap_or_default();
        assert_eq!(back.directory.servers, c.directory.servers);
        assert_eq!(back.directory.query_bind.password, None);
    }

    #[test]
    fn query_binds_of_other_domains() {
        let text = "[[directory.domains]]\nname = \"Other.Test\"\n[directory.domains.query_bind]\n\
                    type = \"simple\"\ndn = \"CN=svc,CN=Users,DC=other,DC=test\"\npassword = \"otherpw\"\n";
        let c = parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        let (b, key) = c.directory.query_bind_for("other.test.");
        assert_eq!(b.kind, BindType::Simple);
        assert_eq!(key, "directory.domains.other.test.query_bind");
        let (b, key) = c.directory.query_bind_for("third.test");
        assert_eq!(b.kind, BindType::Windows, "the query bind for the others");
        assert_eq!(key, "directory.query_bind");
        // never exported, never in debug output; the rest round-trips
        let out = c.to_toml_redacted();
        assert!(
            !out.contains("otherpw") && out.contains("other,DC=test"),
            "{out}"
        );
        assert!(!format!("{c:?}").contains("otherpw"));
        let back = parse(&out).unwrap_or_else(|e| panic!("{e:?}\n{out}"));
        assert_eq!(back.directory.domains.len(), 1);
        assert_eq!(back.directory.domains[0].query_bind.password, None);

        for (text, key) in [
            (
                "[[directory.domains]]\nname = \"not a domain\"\n[directory.domains.query_bind]\ntype = \"anonymous\"\n",
                "directory.domains[0].name",
            ),
            (
                "[[directory.domains]]\nname = \"a.test\"\n[directory.domains.query_bind]\ntype = \"anonymous\"\n\
                 [[directory.domains]]\nname = \"A.test\"\n[directory.domains.query_bind]\ntype = \"anonymous\"\n",
                "directory.domains[1].name",
            ),
            (
                "[[directory.domains]]\nname = \"a.test\"\n[directory.domains.query_bind]\ntype = \"simple\"\n",
                "directory.domains[0].query_bind.dn",
            ),
            (
                "[directory]\ndomain = \"A.test\"\n[[directory.domains]]\nname = \"a.test.\"\n[directory.domains.query_bind]\ntype = \"anonymous\"\n",
                "directory.domains[0].name",
            ),
            (
                "[[directory.domains]]\nname = \"a.test\"\ncolour = 1\n[directory.domains.query_bind]\ntype = \"anonymous\"\n",
                "directory.domains[0].colour",
            ),
            (
                "[[directory.domains]]\nname = \"a.test\"\n[directory.domains.query_bind]\ntype = \"anonymous\"\npasword = \"x\"\n",
                "directory.domains[0].query_bind.pasword",
            ),
        ] {
            let k = keys(parse(text));
            assert!(k.contains(&key.to_string()), "{text:?} gave {k:?}, wanted {key}");
        }
    }

    #[test]
    fn auth_bind_credentials_are_accepted_and_reported_unused() {
        let base =
            "[directory]\nservers = [\"ldap://h\"]\n[directory.auth_bind]\ntype = \"simple\"\n";
        let Ok(cfg) = parse(base) else { panic!("base") };
        assert!(unused_keys(&cfg).is_empty());
        for (extra, key) in [
            ("dn = \"cn=svc,dc=x\"", "directory.auth_bind.dn"),
            ("password = \"pw\"", "directory.auth_bind.password"),
            (
                "password_file = \"/p\"",
                "directory.auth_bind.password_file",
            ),
            ("password_env = \"PW\"", "directory.auth_bind.password_env"),
            (
                "password_encrypted = \"v1:x\"",
                "directory.auth_bind.password_encrypted",
            ),
        ] {
            let cfg =
                parse(&format!("{base}{extra}\n")).unwrap_or_else(|e| panic!("{extra}: {e:?}"));
            let notes = unused_keys(&cfg);
            assert_eq!(notes.len(), 1, "{extra}: {notes:?}");
            assert!(notes[0].to_string().starts_with(key), "{}", notes[0]);
            assert!(notes[0].to_string().contains("binds as the user"));
        }
        // a blank dn is no account
        let Ok(cfg) = parse(&format!("{base}dn = \"\"\n")) else {
            panic!("blank dn")
        };
        assert!(unused_keys(&cfg).is_empty());
    }

    #[test]
    fn ssl_binds_need_ldaps_or_starttls() {
        let cfg = |servers: &str, extra: &str| {
            format!("[directory]\nservers = [{servers}]\n{extra}[directory.query_bind]\ntype = \"ssl\"\ndn = \"cn=a,dc=b\"\npassword = \"pw\"\n")
        };
        let errs = parse(&cfg("\"ldaps://a\", \"ldap://b\"", "")).unwrap_err();
        let e = errs
            .iter()
            .find(|e| e.to_string().starts_with("directory.query_bind.type"))
            .unwrap_or_else(|| panic!("{errs:?}"));
        assert!(e.to_string().contains("ldap://b"), "{e}");
        assert!(parse(&cfg("\"ldaps://a\"", "")).is_ok());
        assert!(parse(&cfg("\"ldap://a\"", "starttls = true\n")).is_ok());
    }

    /// A source = "ldap" configuration for the OpenLDAP schema (entryUUID).
    const OPENLDAP: &str = "[directory]\nsource = \"ldap\"\nservers = [\"ldap://a\"]\n[attributes]\nunique_id = \"entryUUID\"\nunique_id_type = \"string\"\n";
    /// The same on Active Directory over source = "ldap" (objectGUID, the default).
    const AD_LDAP: &str = "[directory]\nsource = \"ldap\"\nservers = [\"ldap://a\"]\n";

    #[test]
    fn active_directory_binds_take_a_dn_a_upn_or_a_down_level_name() {
        let with = |head: &str, dn: &str| {
            let dn = toml::Value::String(dn.to_string());
            parse(&format!(
                "{head}[directory.query_bind]\ntype = \"simple\"\ndn = {dn}\npassword = \"pw\"\n"
            ))
        };
        for head in ["", AD_LDAP] {
            for dn in [
                "CN=svc-mfa,OU=Service,DC=example,DC=com",
                "svc-mfa@corp.example",
                "CORP\\svc-mfa",
                "Service Account@corp.example",
            ] {
                assert!(with(head, dn).is_ok(), "{dn}: {:?}", with(head, dn));
            }
            for dn in [
                "garbage",
                "@corp.example",
                "svc@",
                "svc@a@b",
                "CORP\\",
                "\\svc",
                "A\\B\\c",
                "CORP\\svc@corp.example",
                " svc@corp.example",
                "svc@corp example",
            ] {
                let errs = with(head, dn).expect_err(dn);
                assert_eq!(errs.len(), 1, "{dn}: {errs:?}");
                assert_eq!(errs[0].key, "directory.query_bind.dn", "{dn}");
                assert!(
                    errs[0].message.contains("user principal name"),
                    "{dn}: {}",
                    errs[0]
                );
            }
        }
        // the query binds of other domains too
        let other = "[[directory.domains]]\nname = \"other.example\"\n[directory.domains.query_bind]\ntype = \"simple\"\npassword = \"pw\"\n";
        assert!(parse(&format!("{other}dn = \"OTHER\\\\svc\"\n")).is_ok());
        assert_eq!(
            keys(parse(&format!("{other}dn = \"svc\"\n"))),
            ["directory.domains[0].query_bind.dn"]
        );
        // OpenLDAP: a simple bind names a DN
        assert!(with(OPENLDAP, "cn=svc,dc=example,dc=com").is_ok());
        for dn in ["svc@example.com", "EXAMPLE\\svc", "garbage"] {
            let errs = with(OPENLDAP, dn).expect_err(dn);
            assert_eq!(errs.len(), 1, "{dn}: {errs:?}");
            assert_eq!(errs[0].key, "directory.query_bind.dn");
            assert!(errs[0].message.contains("is not a distinguished name"));
        }
        let errs = with(OPENLDAP, "svc@example.com").unwrap_err();
        assert!(
            errs[0].message.contains("only by Active Directory"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn blank_filters_are_the_default_of_the_schema() {
        let blank = "[filters]\ncontainer = \"\"\nsecurity_group = \" \\t\"\nuser = \"\"\n";
        for (head, schema) in [
            ("", Schema::ActiveDirectory),
            (AD_LDAP, Schema::ActiveDirectory),
            (OPENLDAP, Schema::OpenLdap),
        ] {
            let text = format!("{head}{blank}");
            let cfg = parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(Schema::of(&cfg), schema);
            let want = schema.filters();
            assert_eq!(
                (
                    &cfg.filters.container,
                    &cfg.filters.security_group,
                    &cfg.filters.user
                ),
                (&want.container, &want.security_group, &want.user),
                "{schema:?}"
            );
            assert_eq!(cfg.filters.blank_ones().len(), 3);
            // the export writes them blank, the filters in effect in a comment
            let out = cfg.to_toml_redacted();
            assert!(out.contains("user = \"\""), "{out}");
            assert!(
                out.contains(&format!(
                    "# blank: the default of the {} schema",
                    schema.as_str()
                )),
                "{out}"
            );
            assert!(
                out.contains(&format!(
                    "#   user = {}",
                    toml::Value::String(want.user.clone())
                )),
                "{out}"
            );
            let again = parse(&out).unwrap_or_else(|e| panic!("{out}\n{e:?}"));
            assert_eq!(again.filters, cfg.filters, "{out}");
        }
        assert_eq!(
            Schema::OpenLdap.filters().user,
            "(objectClass=inetOrgPerson)"
        );
        // one blank key; the others as written, absent keys the seed's
        let cfg = parse(&format!(
            "{OPENLDAP}[filters]\nuser = \"\"\ncontainer = \"(ou=*)\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(cfg.filters.user, "(objectClass=inetOrgPerson)");
        assert_eq!(cfg.filters.container, "(ou=*)");
        assert_eq!(cfg.filters.security_group, DEFAULT_SECURITY_GROUP_FILTER);
        assert_eq!(
            cfg.filters.blank_ones(),
            [("user", "(objectClass=inetOrgPerson)")]
        );
        let out = cfg.to_toml_redacted();
        assert!(out.contains("container = \"(ou=*)\""), "{out}");
        assert!(!out.contains("#   container"), "{out}");
        // nothing blank: no comment
        assert!(!Config::default().to_toml_redacted().contains("# blank"));
    }

    #[test]
    fn welcome_email_without_smtp_is_warned_about() {
        let items = "[[sync.items]]\nkind = \"container\"\ndn = \"ou=A,dc=x\"\n\
                     [[sync.items]]\nkind = \"container\"\ndn = \"ou=B,dc=x\"\n\
                     [sync.items.user]\nwelcome_email = true\n";
        let cfg = parse(items).unwrap_or_else(|e| panic!("not an error: {e:?}"));
        let w: Vec<String> = email_warnings(&cfg)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            w,
            ["sync.items[1].user.welcome_email: no [smtp] is configured: no welcome or update email is sent"]
        );
        let smtp = format!("[smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\n{items}");
        let cfg = parse(&smtp).unwrap_or_else(|e| panic!("not an error: {e:?}"));
        assert!(email_warnings(&cfg).is_empty());
    }

    #[test]
    fn tls_servers_written_as_ip_addresses_are_warned_about() {
        let warned = |servers: &str, extra: &str| -> Vec<String> {
            let cfg = parse(&format!(
                "[directory]\nsource = \"ldap\"\nservers = [{servers}]\n{extra}"
            ))
            .unwrap_or_else(|e| panic!("not an error: {e:?}"));
            warnings(&cfg).iter().map(ToString::to_string).collect()
        };
        let w = warned(
            "\"ldaps://10.0.0.5\", \"ldaps://dc1.example.com\", \"ldaps://[2001:db8::1]:636\", \"ldap://10.0.0.6\", \"ldaps://192.0.2.1:3269/\"",
            "",
        );
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("directory.servers[0]: ldaps://10.0.0.5 names the server by its IP address 10.0.0.5"), "{}", w[0]);
        assert!(w[0].contains("certificate"), "{}", w[0]);
        assert!(w[1].starts_with("directory.servers[2]: "), "{}", w[1]);
        assert!(w[1].contains("2001:db8::1"), "{}", w[1]);
        assert!(w[2].starts_with("directory.servers[4]: "), "{}", w[2]);
        // StartTLS checks the same name; no check, no warning
        assert_eq!(warned("\"ldap://10.0.0.6\"", "starttls = true\n").len(), 1);
        assert!(warned("\"ldaps://10.0.0.5\"", "tls_verify = false\n").is_empty());
        assert!(warned("\"ldaps://dc1.example.com:636\", \"ldaps://[dc1]\"", "").is_empty());
    }
}
