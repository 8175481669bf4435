//! The bound connection, [`Client`]: its settings, accessors and unbind.
//! Opening one is `connect`'s job, reading `search`'s and `changes`'.

use std::time::Duration;

use ldap3::Ldap;
use tokio::task::JoinHandle;

use crate::proto::Capabilities;
use crate::target::Target;
use crate::LdapError;

/// Search scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Base,
    OneLevel,
    Subtree,
}

impl From<Scope> for ldap3::Scope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Base => ldap3::Scope::Base,
            Scope::OneLevel => ldap3::Scope::OneLevel,
            Scope::Subtree => ldap3::Scope::Subtree,
        }
    }
}

/// A connection bound and ready, with the server's capabilities.
pub struct Client {
    pub(crate) ldap: Ldap,
    pub(crate) driver: JoinHandle<()>,
    pub(crate) server: String,
    /// The server as connected to (its Kerberos name too), for [`Client::sibling`].
    pub(crate) target: Target,
    pub(crate) caps: Capabilities,
    pub(crate) base_dn: String,
    pub(crate) timeout: Duration,
    pub(crate) size_limit: u32,
    pub(crate) paging: bool,
    /// Attribute used to split searches into batches; empty = by vendor.
    pub(crate) split_attr: String,
    /// Values asked per range request; None = as many as the server gives.
    pub(crate) range_step: Option<u32>,
    /// DNs of a paged search kept in memory before the rest go to a file.
    pub(crate) seen_in_memory: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("vendor", &self.caps.vendor)
            .field("base_dn", &self.base_dn)
            .field("paging", &self.paging)
            .finish()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Client {
    /// URL of the server in use.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// `Unsupported`, naming this server and `feature`, unless the server has it.
    pub(crate) fn require(&self, has: bool, feature: &str) -> Result<(), LdapError> {
        if has {
            return Ok(());
        }
        Err(LdapError::Unsupported(format!(
            "{}: the server does not support {feature}",
            self.server
        )))
    }

    /// Base DN to use: `dir.base_dn` if set, else the RootDSE's
    /// defaultNamingContext, else its first namingContext (empty if none).
    pub fn base_dn(&self) -> &str {
        &self.base_dn
    }

    /// Use (or stop using) the paged results control; it is only used when
    /// the server announces it.
    pub fn set_paging(&mut self, on: bool) {
        self.paging = on;
    }

    /// The attribute whose value prefixes split a search into batches when
    /// paging is not available (default: `name` on Active Directory, `cn`
    /// elsewhere).
    pub fn set_split_attribute(&mut self, attr: &str) {
        self.split_attr = attr.to_string();
    }

    /// Ask for at most `step` values per range request in
    /// [`Client::read_all_values`] (`member;range=0-99`, then `100-199`, …);
    /// None (the default) asks for everything and follows the server's ranges.
    pub fn set_range_step(&mut self, step: Option<u32>) {
        self.range_step = step;
    }

    /// How many DNs of a paged search are kept in memory before the rest go
    /// to a temporary file (default 4,096; lower in tests, to reach the file).
    pub fn set_seen_in_memory(&mut self, n: usize) {
        self.seen_in_memory = n;
    }

    /// Unbind and close the connection.
    pub async fn unbind(mut self) {
        if let Err(e) = self.ldap.unbind().await {
            tracing::debug!(server = %self.server, error = %e, "unbind failed");
        }
    }
}
