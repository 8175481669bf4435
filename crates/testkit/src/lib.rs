//! Test harness for mfasync: starts REAL directory servers and PostgreSQL for the tests.
//!
//! * [`Slapd`]: a private OpenLDAP slapd on 127.0.0.1:random port (`dc=example,dc=com`).
//! * [`Samba`]: a Samba AD DC (`DC=mfa,DC=test`) on the standard ports of 127.0.0.1 — only inside
//!   a private network namespace, i.e. when the tests run through `scripts/test`.
//! * [`Postgres`] / [`shared_postgres`]: a private PostgreSQL 15 cluster.
//! * [`Proxy`]: a TCP proxy to one of them that the test pauses/resumes (holds a cycle mid-read).
//! * [`LdapProxy`]: an LDAP proxy that refuses searches carrying one control (DirSync refused).
//! * [`Hostile`]: an LDAP proxy that answers chosen searches with crafted messages (nested
//!   40,000 deep, `30 00`, endless, a huge value, far too many entries in one page).
//! * [`Dns`]: a real DNS server (dnsmasq) on 127.0.0.1:random port serving given SRV/A records.
//! * [`FakeAd`]: an in-process FAKE Active Directory, only for what no real server here shows
//!   (range truncation, the page cap, DirSync rounds, connections lost mid-search).
//! * Seed data: [`openldap_fixture`], [`openldap_bulk`], [`samba_fixture`], [`samba_bulk`].
//!
//! Every server is stopped (process tree killed, temp dir removed) on drop, and whatever is still
//! running when the test binary exits (shared instances, servers kept in statics) is stopped by an
//! `atexit` hook. Setup failures panic with the tool output / server log.

mod dns;
mod fakead;
mod fixtures;
mod hostile;
mod ldapproxy;
mod postgres;
mod process;
mod proxy;
mod samba;
mod samba_trust;
mod slapd;
mod util;
pub mod webdriver;

pub use dns::{Dns, SrvRecord};
pub use fakead::{FakeAd, FakeAdData, FakeEntry, FakeSearch};
pub use fixtures::{base64, ldif_attr, openldap_bulk, openldap_fixture, samba_bulk, samba_fixture};
pub use hostile::{Attack, Hostile};
pub use ldapproxy::LdapProxy;
pub use postgres::{shared_postgres, Postgres};
pub use proxy::Proxy;
pub use samba::{kept_temp_dir, krb5_conf, Samba, SAMBA_ADMIN_DN, SAMBA_BASE_DN};
pub use samba_trust::{SambaTrust, OTHER_ADMIN_DN, OTHER_BASE_DN};
pub use slapd::{Slapd, SLAPD_ADMIN_DN, SLAPD_BASE_DN};
pub use util::{free_port, free_udp_port};
