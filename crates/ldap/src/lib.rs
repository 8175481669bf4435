//! Directory access for mfasync: connections to a list of servers with
//! failover, bind types, TLS (LDAPS, StartTLS, a private CA), capability
//! detection from the RootDSE, paged searches (or batches under a size limit
//! when paging is unavailable), range retrieval, Attribute Scoped Queries, and
//! incremental reads: DirSync (Active Directory) and RFC 4533 syncrepl
//! refreshOnly (OpenLDAP).
//!
//! Architecture invariant: no password ever appears in an error, a log line
//! or a `Debug` output of this crate; binds are described by their DN only.

mod bind;
mod changes;
mod client;
mod connect;
mod directory_test;
mod discovery;
mod error;
mod kerberos;
mod proto;
mod results;
mod search;
mod target;
mod tls;
mod usn;

pub use changes::{DirSyncResult, SyncEvent, SyncReplResult};
pub use client::{Client, Scope};
pub use connect::{check_bind, check_bind_opened, connect, open_for_check, Opened, TestStep};
pub use directory_test::{test, Supports, TestReport, TriedServer};
pub use discovery::{dn_of_domain, DiscoveryReport, DomainInfo, FoundDc, TrustReport};
pub use error::{LdapError, ServerFailure};
pub use proto::{
    Capabilities, Vendor, DIRSYNC_ANCESTORS_FIRST_ORDER, DIRSYNC_INCREMENTAL_VALUES,
    DIRSYNC_OBJECT_SECURITY,
};
pub use usn::{deleted_objects, UsnState, OID_SHOW_DELETED};

/// Control and capability OIDs, for callers that build their own requests.
pub mod oids {
    pub use crate::proto::{
        OID_AD_CAPABILITY as AD_CAPABILITY, OID_ASQ as ASQ, OID_DIRSYNC as DIRSYNC,
        OID_PAGED as PAGED_RESULTS, OID_SYNCREPL as SYNCREPL,
    };
}
