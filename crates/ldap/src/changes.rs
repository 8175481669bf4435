//! Incremental reads: DirSync (Active Directory) and RFC 4533 syncrepl
//! refreshOnly (OpenLDAP); USN-based reads are in `usn`.

use mfasync_core::Entry;

use crate::client::{Client, Scope};
use crate::error::LdapError;
use crate::proto::{
    dirsync_control, dirsync_response, sync_done, sync_info, sync_request_control, sync_state,
    SyncInfo, SyncState, OID_DIRSYNC, OID_SYNC_DONE, OID_SYNC_INFO, OID_SYNC_STATE,
};
use crate::results::op_error;
use crate::search::{parenthesized, run_search, run_search_raw, Item, Limit, Request};

/// The outcome of [`Client::dirsync_each`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSyncResult {
    /// The cookie to start the next DirSync from.
    pub cookie: Vec<u8>,
    /// Objects returned (changed, added or deleted).
    pub entries: usize,
}

/// One change of an RFC 4533 refresh; `uuid` is the entry's entryUUID (16 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// Added or modified: the entry with the requested attributes.
    Changed { uuid: Vec<u8>, entry: Entry },
    /// Deleted since the cookie (delete phase).
    Deleted { uuid: Vec<u8> },
    /// Unchanged and still there (present phase).
    Present { uuid: Vec<u8> },
}

/// The outcome of [`Client::syncrepl_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReplResult {
    /// The cookie to start the next refresh from (store it with the data).
    pub cookie: Option<Vec<u8>>,
    /// True: deletions were reported as [`SyncEvent::Deleted`]. False: a
    /// present phase; entries not reported as Changed or Present are gone.
    pub deletes_listed: bool,
    /// Events delivered.
    pub events: usize,
}

impl Client {
    /// DirSync (control 1.2.840.113556.1.4.841): the objects under the naming
    /// context `base` (DirSync only accepts a naming context head) that match
    /// `filter` and changed since `cookie` (empty: everything, which sets the
    /// starting point). Only changed attributes are returned. Deleted objects
    /// (`isDeleted` = TRUE, DN under CN=Deleted Objects) are always included,
    /// whatever `filter` says: tombstones lose most attributes (objectCategory
    /// among them), so the filter is sent as `(|filter(isDeleted=TRUE))` and
    /// deletions of other kinds of objects come too (match them by objectGUID).
    /// Repeats while the server has more. Store the returned cookie together
    /// with the data it produced.
    ///
    /// `flags`: e.g. [`crate::DIRSYNC_INCREMENTAL_VALUES`]; without the
    /// "Replicating Directory Changes" right add [`crate::DIRSYNC_OBJECT_SECURITY`].
    /// A refusal (e.g. insufficient rights) is an error: fall back to a full sync.
    pub async fn dirsync_each(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        cookie: &[u8],
        flags: u32,
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<DirSyncResult, LdapError> {
        self.require(
            self.caps.dirsync,
            "DirSync (control 1.2.840.113556.1.4.841)",
        )?;
        let filter = format!("(|{}(isDeleted=TRUE))", parenthesized(filter));
        let op = format!("DirSync search of {base:?} for {filter}");
        let mut cookie = cookie.to_vec();
        let mut entries = 0usize;
        loop {
            let res = run_search(
                &mut self.ldap,
                &self.server,
                self.timeout,
                Request {
                    base,
                    scope: Scope::Subtree,
                    filter: &filter,
                    attrs,
                    controls: vec![dirsync_control(flags, i32::MAX, &cookie)],
                    limit: Limit::NONE,
                },
                &mut |e: Entry| {
                    entries += 1;
                    f(e)
                },
            )
            .await?;
            if res.rc != 0 {
                return Err(op_error(&self.server, &op, &res));
            }
            let (more, next) = res
                .ctrls
                .iter()
                .find(|c| c.1.ctype == OID_DIRSYNC)
                .and_then(|c| c.1.val.as_deref())
                .and_then(dirsync_response)
                .ok_or_else(|| LdapError::Protocol {
                    server: self.server.clone(),
                    message: format!("{op}: missing or malformed DirSync response control"),
                })?;
            if !next.is_empty() {
                cookie = next;
            }
            if !more {
                return Ok(DirSyncResult { cookie, entries });
            }
        }
    }

    /// RFC 4533 content synchronization, refreshOnly (OpenLDAP `syncprov`):
    /// the entries under `base` matching `filter` that changed since `cookie`
    /// (None: everything, which sets the starting point).
    ///
    /// Events: [`SyncEvent::Changed`] (added or modified, with `attrs`),
    /// [`SyncEvent::Deleted`] (delete phase) and [`SyncEvent::Present`]
    /// (unchanged, present phase). When the result's `deletes_listed` is
    /// false, every entry of the previous state not reported as Changed or
    /// Present is gone. A cookie the server no longer accepts
    /// (e-syncRefreshRequired) restarts the refresh from scratch.
    pub async fn syncrepl_refresh(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        cookie: Option<&[u8]>,
        f: &mut (dyn FnMut(SyncEvent) + Send),
    ) -> Result<SyncReplResult, LdapError> {
        self.require(
            self.caps.syncrepl,
            "content synchronization (RFC 4533, control 1.3.6.1.4.1.4203.1.9.1.1)",
        )?;
        let filter = parenthesized(filter);
        let op = format!("syncrepl refresh of {base:?} for {filter}");
        let mut cookie: Option<Vec<u8>> = cookie.map(<[u8]>::to_vec);
        let mut restarted = false;
        loop {
            let mut events = 0usize;
            let mut last_cookie: Option<Vec<u8>> = None;
            let mut deletes_listed = None;
            let res = run_search_raw(
                &mut self.ldap,
                &self.server,
                self.timeout,
                Request {
                    base,
                    scope,
                    filter: &filter,
                    attrs,
                    controls: vec![sync_request_control(cookie.as_deref())],
                    limit: Limit::NONE,
                },
                &mut |item| {
                    match item {
                        Item::Entry(entry, ctrls) => {
                            let Some((state, uuid, c)) = ctrls
                                .iter()
                                .find(|c| c.1.ctype == OID_SYNC_STATE)
                                .and_then(|c| c.1.val.as_deref())
                                .and_then(sync_state)
                            else {
                                return Err(format!(
                                    "entry {:?} without a valid Sync State control",
                                    entry.dn
                                ));
                            };
                            if let Some(c) = c.filter(|c| !c.is_empty()) {
                                last_cookie = Some(c);
                            }
                            events += 1;
                            f(match state {
                                SyncState::Add | SyncState::Modify => {
                                    SyncEvent::Changed { uuid, entry }
                                }
                                SyncState::Present => SyncEvent::Present { uuid },
                                SyncState::Delete => SyncEvent::Deleted { uuid },
                            });
                        }
                        Item::Intermediate(name, value) => {
                            if name.as_deref() != Some(OID_SYNC_INFO) {
                                return Ok(());
                            }
                            let info = value
                                .as_deref()
                                .and_then(sync_info)
                                .ok_or_else(|| "malformed Sync Info message".to_string())?;
                            match info {
                                SyncInfo::NewCookie(c) => last_cookie = Some(c),
                                SyncInfo::Phase { cookie: c, .. } => {
                                    if let Some(c) = c {
                                        last_cookie = Some(c);
                                    }
                                }
                                SyncInfo::IdSet {
                                    cookie: c,
                                    refresh_deletes,
                                    uuids,
                                } => {
                                    if let Some(c) = c {
                                        last_cookie = Some(c);
                                    }
                                    for uuid in uuids {
                                        events += 1;
                                        f(if refresh_deletes {
                                            SyncEvent::Deleted { uuid }
                                        } else {
                                            SyncEvent::Present { uuid }
                                        });
                                    }
                                }
                            }
                        }
                    }
                    Ok(())
                },
            )
            .await?;
            if res.rc == 4096 && !restarted && events == 0 {
                tracing::info!(server = %self.server, "syncrepl cookie refused (e-syncRefreshRequired); full refresh");
                cookie = None;
                restarted = true;
                continue;
            }
            if res.rc != 0 {
                return Err(op_error(&self.server, &op, &res));
            }
            if let Some((c, rd)) = res
                .ctrls
                .iter()
                .find(|c| c.1.ctype == OID_SYNC_DONE)
                .and_then(|c| c.1.val.as_deref())
                .and_then(sync_done)
            {
                if let Some(c) = c {
                    last_cookie = Some(c);
                }
                deletes_listed = Some(rd);
            }
            return Ok(SyncReplResult {
                cookie: last_cookie.or(cookie),
                deletes_listed: deletes_listed.unwrap_or(false),
                events,
            });
        }
    }
}
