//! The directory schema a configuration is written for, and what follows
//! from it: the filter a blank `[filters]` key stands for, and the names a
//! simple bind may use (Active Directory also takes a UPN or `DOMAIN\name`).

use super::{
    Config, DirectorySource, Filters, DEFAULT_CONTAINER_FILTER, DEFAULT_SECURITY_GROUP_FILTER,
    DEFAULT_USER_FILTER,
};

/// Active Directory (or ADAM), or an LDAP directory with the usual
/// `inetOrgPerson` schema (OpenLDAP, 389 Directory Server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    ActiveDirectory,
    OpenLdap,
}

/// The unique identifier attribute of Active Directory and ADAM.
const AD_UNIQUE_ID: &str = "objectGUID";

impl Schema {
    /// Active Directory when `source = "active-directory"` or the users'
    /// unique identifier is `objectGUID` (the seed's default, which only AD
    /// and ADAM have); otherwise an `inetOrgPerson` LDAP directory.
    pub fn of(cfg: &Config) -> Schema {
        if cfg.directory.source == DirectorySource::ActiveDirectory
            || cfg
                .attributes
                .unique_id
                .trim()
                .eq_ignore_ascii_case(AD_UNIQUE_ID)
        {
            Schema::ActiveDirectory
        } else {
            Schema::OpenLdap
        }
    }

    /// As the portal's Restore Defaults names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Schema::ActiveDirectory => "active-directory",
            Schema::OpenLdap => "openldap",
        }
    }

    /// The schema named `name` ("active-directory" or "openldap").
    pub fn named(name: &str) -> Option<Schema> {
        [Schema::ActiveDirectory, Schema::OpenLdap]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// The filters of this schema: the seed's for Active Directory, the usual
    /// object classes for OpenLDAP.
    pub fn filters(self) -> Filters {
        match self {
            Schema::ActiveDirectory => Filters {
                container: DEFAULT_CONTAINER_FILTER.into(),
                security_group: DEFAULT_SECURITY_GROUP_FILTER.into(),
                user: DEFAULT_USER_FILTER.into(),
                blank: Default::default(),
            },
            Schema::OpenLdap => Filters {
                container: "(|(objectClass=organizationalUnit)(objectClass=organization))".into(),
                security_group: "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"
                    .into(),
                user: "(objectClass=inetOrgPerson)".into(),
                blank: Default::default(),
            },
        }
    }
}

/// Check the account name of a simple (or SSL) bind. Active Directory takes
/// a DN, a user principal name (`svc-mfa@corp.example`) or a down-level
/// logon name (`CORP\svc-mfa`); an LDAP directory is given the DN, which is
/// what a simple bind names (RFC 4513).
pub(super) fn check_bind_name(name: &str, schema: Schema) -> Result<(), String> {
    let dn = crate::filter::validate_dn(name);
    if dn.is_ok() {
        return Ok(());
    }
    match schema {
        Schema::ActiveDirectory if upn_ok(name) || down_level_ok(name) => Ok(()),
        Schema::ActiveDirectory => Err(format!(
            "{name:?} is not a distinguished name (CN=svc-mfa,OU=Service,DC=example,DC=com), a user principal name (svc-mfa@example.com) or a down-level logon name (EXAMPLE\\svc-mfa)"
        )),
        Schema::OpenLdap if upn_ok(name) || down_level_ok(name) => Err(format!(
            "{name:?} is not a distinguished name: a user principal name or DOMAIN\\name is accepted only by Active Directory (source = \"active-directory\" or attributes.unique_id = \"objectGUID\"); give the bind account's DN"
        )),
        Schema::OpenLdap => dn,
    }
}

/// Characters that no account or domain part holds: controls and spaces at
/// either end.
fn part_ok(p: &str) -> bool {
    !p.is_empty() && p.trim() == p && !p.chars().any(char::is_control)
}

/// `account@domain`: one '@', neither side empty, no '\'.
fn upn_ok(name: &str) -> bool {
    match name.split_once('@') {
        Some((account, domain)) => {
            part_ok(account)
                && part_ok(domain)
                && !domain.contains('@')
                && !name.contains('\\')
                && !domain.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// `DOMAIN\account`: one '\', neither side empty, no '@'.
fn down_level_ok(name: &str) -> bool {
    match name.split_once('\\') {
        Some((domain, account)) => {
            part_ok(domain) && part_ok(account) && !account.contains('\\') && !name.contains('@')
        }
        None => false,
    }
}
