//! `directory test`'s report (PRODUCT.md section 1): the seed's Test button,
//! produced by `mfasync_ldap::test`, printed by the CLI and rendered by the
//! portal.

use serde::{Deserialize, Serialize};

/// Which directory product answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Vendor {
    /// Active Directory (or a Samba AD DC, which announces the same capability).
    ActiveDirectory,
    #[serde(rename = "openldap")]
    OpenLdap,
    Other,
}

impl Vendor {
    /// As `directory test --json` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::ActiveDirectory => "active-directory",
            Vendor::OpenLdap => "openldap",
            Vendor::Other => "other",
        }
    }
}

/// The seed's "Test" button result (`mfasync directory test --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestReport {
    pub ok: bool,
    pub server: String,
    pub vendor: Vendor,
    pub steps: Vec<TestStep>,
    pub supports: Supports,
    /// `source = "active-directory"`: the domain and the DCs found by DNS SRV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryReport>,
    /// Every server tried, in order (a failed one names its failed step).
    pub tried: Vec<TriedServer>,
    /// `include_trusted_domains` on Active Directory: the forest's domains and
    /// the trusted domains, each with whether a DC of it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<TrustReport>,
    /// Settings that may stop TLS (`config::server_warnings`: a TLS server
    /// written as an IP address), each naming its key; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl TestReport {
    /// A test that could not start (no configuration, no password): a failed
    /// "connect" step naming why.
    pub fn not_run(detail: impl Into<String>) -> TestReport {
        TestReport {
            ok: false,
            server: String::new(),
            vendor: Vendor::Other,
            steps: vec![TestStep {
                step: "connect".into(),
                ok: false,
                detail: detail.into(),
            }],
            supports: Supports::default(),
            discovery: None,
            tried: Vec::new(),
            domains: None,
            warnings: Vec::new(),
        }
    }
}

/// One server tried by `mfasync_ldap::test`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriedServer {
    pub server: String,
    pub ok: bool,
    /// The step that failed (connect | tls | bind | rootdse); absent when ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestStep {
    /// connect | tls | bind | rootdse
    pub step: String,
    pub ok: bool,
    pub detail: String,
}

/// What the directory offers (all false when the test did not reach it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Supports {
    pub paged_results: bool,
    pub dirsync: bool,
    pub attribute_scoped_query: bool,
    pub syncrepl: bool,
    pub usn: bool,
}

impl Supports {
    /// Each capability by its JSON name, in alphabetical order.
    pub fn named(&self) -> [(&'static str, bool); 5] {
        [
            ("attribute_scoped_query", self.attribute_scoped_query),
            ("dirsync", self.dirsync),
            ("paged_results", self.paged_results),
            ("syncrepl", self.syncrepl),
            ("usn", self.usn),
        ]
    }
}

/// What discovery found, as reported by `directory test` (`"discovery"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiscoveryReport {
    /// The Active Directory domain, e.g. `example.com`.
    pub domain: String,
    /// Where the domain came from: `directory.domain` or the Kerberos default realm.
    pub domain_from: String,
    /// The AD site whose DCs come first: `directory.site`, else the one a DC
    /// names for this host (LDAP ping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Where the site came from: `directory.site` or `LDAP ping to <DC>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_from: Option<String>,
    /// The DNS servers asked (`directory.dns_servers`), or "the host's resolver".
    pub dns: String,
    /// The SRV names asked, in order.
    pub queries: Vec<String>,
    /// The domain controllers found, in the order they are tried.
    pub domain_controllers: Vec<FoundDc>,
}

/// One domain controller from an SRV record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FoundDc {
    /// The SRV target, e.g. `dc1.example.com`.
    pub name: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
    /// Found under the site's SRV name.
    pub in_site: bool,
    /// The URLs tried for it (one per address with `dns_servers`).
    pub servers: Vec<String>,
    /// Why it has no URL (its address could not be looked up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One domain of the forest or trusted by it, as reported by `directory test`
/// (`"domains"`, with `include_trusted_domains`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainInfo {
    /// DNS name, e.g. `emea.example.com`.
    pub name: String,
    /// NetBIOS name, e.g. `EMEA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netbios: Option<String>,
    /// The domain's naming context (from its crossRef), when in the forest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dn: Option<String>,
    /// `this domain`, `forest`, or `trust` (a trustedDomain object).
    pub relation: String,
    /// For trusts: `inbound`, `outbound` or `bidirectional` (trustDirection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// For trusts: `forest`, `external`, `within forest` or `realm` (an MIT
    /// Kerberos realm), from trustType and trustAttributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_type: Option<String>,
    /// Whether one of its DCs (found by DNS SRV) accepts connections.
    pub reachable: bool,
    /// How it was reached, or why not.
    pub detail: String,
}

/// The forest's domains and the trusted domains, read from the connected DC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrustReport {
    pub domains: Vec<DomainInfo>,
    /// Why the list could not be read (the rest of the test is unaffected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
