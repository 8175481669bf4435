//! The full read pipeline: the reader (its own thread, runtime and
//! connection, `sibling`), the mapping thread (`Worker`: raw stamps, item
//! claims from the DN, the planner) and, on a first sync, the writer, joined
//! by bounded queues (`read_users`).

use crate::connect::query_password;
use crate::error::{EngineError, Result, ResultExt};
use crate::members::Snapshot;
use crate::spill::{spill_after, CandidateRecord, ChangeRecord, Spiller, StampRecord};
use mfasync_core::config::{Config, ItemKind, SyncItem};
use mfasync_core::filter::{dn_is_under, normalize_dn, parent_dn};
use mfasync_core::mapping::{self, DirectoryUser, Packed};
use mfasync_core::plan::{self, Action};
use mfasync_core::MfaUser;
use mfasync_ldap::{Client, Scope};
use mfasync_store::Store;
use std::collections::HashMap;

/// Load the phone-number metadata (150-400 ms, once per process) on another
/// core while the cycle connects and reads; the first E.164 conversion would
/// otherwise stall the mapping thread (and, through its queue, the reader).
/// Not at all in a full sync whose users are all known unchanged by their
/// raw stamps (it is then never needed).
pub(crate) fn warm_phone_metadata() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("mfasync-phone-warm".into())
            .spawn(|| mfasync_core::phone::to_e164("+1 425 555 0100", "1"));
    });
}

/// The governing item of a user, told from its DN alone: possible when every
/// item is a container under the base DN (then the whole cycle streams).
pub(crate) struct Claimer {
    /// Per item in order: its normalised DN and include_nested.
    pub(crate) items: Vec<(String, bool)>,
}

impl Claimer {
    pub(crate) fn new(items: &[SyncItem], base: &str) -> Option<Claimer> {
        let base = normalize_dn(base);
        items
            .iter()
            .map(|i| {
                let dn = normalize_dn(&i.dn);
                (i.kind == ItemKind::Container && dn_is_under(&dn, &base))
                    .then_some((dn, i.include_nested))
            })
            .collect::<Option<Vec<_>>>()
            .map(|items| Claimer { items })
    }

    /// The first item holding the user with normalised DN `key`.
    fn claim(&self, key: &str) -> Option<usize> {
        self.items.iter().position(|(dn, nested)| {
            if *nested {
                dn_is_under(key, dn) && key != dn
            } else {
                parent_dn(key) == *dn
            }
        })
    }
}

/// The mapping side of a full cycle: maps each entry, decides its item when
/// the DN tells (else keeps it packed for later), applies the item's
/// settings and asks the planner whether anything changed. Only changes are kept.
pub(crate) struct Worker {
    pub(crate) attrs: mfasync_core::config::Attributes,
    pub(crate) items: Vec<SyncItem>,
    pub(crate) claimer: Option<Claimer>,
    pub(crate) planner: plan::Planner,
    pub(crate) cache: mfasync_core::phone::E164Cache,
    /// Users kept for item resolution after the read (no `claimer`).
    pub(crate) deferred: Option<Snapshot>,
    /// Creates not yet handed on.
    pub(crate) creates: Vec<plan::Change>,
    /// Where creates go while reading (first sync into an empty store).
    pub(crate) sink: Option<CreateSink>,
    /// Creates past `spill::spill_after()` when they cannot be written as
    /// they come (no `sink`), then (`full`) updates: on disk until the
    /// commit (or `--plan`'s list).
    pub(crate) spill: Spiller<ChangeRecord>,
    /// `changed` past `spill::spill_after()`.
    pub(crate) changed_spill: Spiller<CandidateRecord>,
    /// `restamp` past `spill::spill_after()`.
    pub(crate) restamp_spill: Spiller<StampRecord>,
    /// Stored users whose digest differs: to compare with their rows (with
    /// the entry each was mapped from, when known).
    pub(crate) changed: Vec<(MfaUser, Option<plan::RawMark>)>,
    /// Per item: the raw seed of its entries (streaming only; empty: every
    /// entry is mapped).
    pub(crate) seeds: Vec<plan::RawSeed>,
    /// Users unchanged by digest whose raw stamp is missing or stale: the
    /// stamp to write (directory_id and mark).
    pub(crate) restamp: Vec<(String, plan::RawMark)>,
    pub(crate) warnings: Vec<String>,
    /// Users read under the base DN (mapped, or known unchanged by their raw stamp).
    pub(crate) users: usize,
}

/// What `Worker::stamp_check` found: unchanged, or to map (with the raw
/// hash of the entry, when stamps are kept).
pub(crate) enum Stamp {
    Unchanged,
    Map(Option<u128>),
}

/// What identifies this build for raw stamps (`core::plan::RawSeed`): the
/// executable's GNU build ID (`build_id`), so a new binary (new mapping
/// code, new phone metadata) maps every user once more. None (no build ID,
/// or `MFASYNC_NO_RAW_STAMPS` set: the way to force every user through the
/// mapping): no raw stamps are compared or written.
pub(crate) fn build_identity() -> Option<&'static str> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if std::env::var_os("MFASYNC_NO_RAW_STAMPS").is_some() {
        return None;
    }
    ID.get_or_init(|| {
        let id = crate::build_id::current();
        if id.is_none() {
            tracing::info!(target: "mfasync::sync", "the executable has no build ID: full syncs map every user");
        }
        id.map(|id| format!("{} {id}", env!("CARGO_PKG_VERSION")))
    })
    .as_deref()
}

/// Creates handed to the store per write.
pub(crate) const CREATE_CHUNK: usize = 1000;

/// Entries read but not yet mapped, at most (bounded queue).
pub(crate) const ENTRY_QUEUE: usize = 2000;
/// Entries the mapping thread takes off the queue while the stored digests
/// still load, at most: the read goes on meanwhile. A no-change sync of
/// 100,000 users read ~18,000 entries during the ~0.18 s load; with only the
/// queue the read stood still for most of it (1.18 -> 1.05 s, ~+9 MB peak).
/// At a million users they are held beside the whole loaded index (~1.2 KB
/// each): 8192, half the entries, kept that peak under 100 MB (BENCHMARKS.md).
pub(crate) const LOAD_SLACK: usize = 8192;
/// Entries handed to the mapping thread at a time: one hand-over (and at
/// most one wake-up of the other thread) per batch instead of per entry.
pub(crate) const ENTRY_BATCH: usize = 64;
/// Chunks of creates computed but not yet written, at most.
pub(crate) const CREATE_QUEUE: usize = 2;

/// The mapping thread's way to the writer during a first sync: chunks of
/// creates go `to` it, and come `back` emptied to be filled again. A chunk
/// is ~1.3 MB; allocated anew each time, its memory was faulted in afresh
/// (the allocator returns freed memory to the system): ~4 % of the CPU of
/// a first sync of 100,000 users (`perf`).
pub(crate) struct CreateSink {
    pub(crate) to: std::sync::mpsc::SyncSender<Vec<plan::Change>>,
    pub(crate) back: std::sync::mpsc::Receiver<Vec<plan::Change>>,
}

/// The reader's end of the entry queue.
pub(crate) enum EntryTx {
    Bounded(std::sync::mpsc::SyncSender<Vec<mfasync_core::Entry>>),
    Unbounded(std::sync::mpsc::Sender<Vec<mfasync_core::Entry>>),
}

impl EntryTx {
    /// Queue a batch of entries; a stopped mapping thread has failed, and
    /// its error ends the cycle.
    fn send(&self, e: Vec<mfasync_core::Entry>) {
        let _ = match self {
            EntryTx::Bounded(t) => t.send(e).map_err(|_| ()),
            EntryTx::Unbounded(t) => t.send(e).map_err(|_| ()),
        };
    }
}

impl Worker {
    /// Whether the entry, held by item `i`, is known unchanged by its stored
    /// raw stamp (then it is counted and nothing else is done with it), else
    /// its raw hash to stamp its user with once mapped (None: no stamps).
    fn stamp_check(&mut self, e: &mfasync_core::Entry, i: usize) -> Stamp {
        let Some(seed) = self.seeds.get(i) else {
            return Stamp::Map(None);
        };
        let raw = seed.entry(e);
        // (nothing stored, as in a first sync: no stamp to compare with)
        if self.planner.stored_directory_users() > 0 {
            if let Some(id) = e
                .first_bytes(&self.attrs.unique_id)
                .and_then(|v| mapping::unique_id_text(self.attrs.unique_id_type, v).ok())
            {
                if self.planner.unchanged_raw(&id, raw) {
                    self.planner.exists(&id);
                    self.users += 1;
                    return Stamp::Unchanged;
                }
            }
        }
        Stamp::Map(Some(raw))
    }

    fn add_entry(&mut self, e: mfasync_core::Entry) {
        // Streaming: the entry's item, told by its DN (None: no item holds it).
        let claimed = self
            .claimer
            .as_ref()
            .map(|c| c.claim(&normalize_dn(&mapping::entry_dn(&self.attrs, &e))));
        let raw = match claimed {
            Some(Some(i)) => match self.stamp_check(&e, i) {
                Stamp::Unchanged => return,
                Stamp::Map(raw) => raw,
            },
            _ => None,
        };
        // (once) the phone metadata loads on another core meanwhile; an
        // entry of no item is mapped without it
        if claimed != Some(None) {
            warm_phone_metadata();
        }
        match mapping::map_user(&self.attrs, &e) {
            Ok(du) => {
                self.users += 1;
                if let Some(id) = du.user.directory_id.as_deref() {
                    self.planner.exists(id);
                }
                match (claimed, &mut self.deferred) {
                    (Some(Some(i)), _) => self.take(du, i, raw),
                    (Some(None), _) | (None, None) => {}
                    (None, Some(snap)) => {
                        let key = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
                        snap.users.insert(key, Packed::pack(&du));
                    }
                }
            }
            Err(err) => {
                if let Some(id) = e
                    .first_bytes(&self.attrs.unique_id)
                    .and_then(|raw| mapping::unique_id_text(self.attrs.unique_id_type, raw).ok())
                {
                    self.planner.keep_as_is(&id);
                }
                self.warnings.push(err.to_string());
            }
        }
    }

    /// A user held by item `i` (first item wins: the caller decides);
    /// `raw`: the hash of the entry it was mapped from, when stamps are kept.
    pub(crate) fn take(&mut self, du: DirectoryUser, i: usize, raw: Option<u128>) {
        let Some(item) = self.items.get(i) else {
            return;
        };
        let d = mapping::apply_item_into(du, item, &mut self.cache);
        let digest = plan::digest_bits(&d);
        let raw = raw.map(|raw| plan::RawMark { raw, digest });
        let id = raw.and(d.directory_id.clone());
        match self.planner.desired_with_digest(d, digest) {
            plan::Verdict::Unchanged => {
                // unchanged, but its stamp is missing or stale (a new build,
                // another mapping, a first sync with stamps)
                if let (Some(id), Some(raw)) = (id, raw) {
                    if self.restamp.len() < spill_after() {
                        self.restamp.push((id, raw));
                    } else if let Err(stamp) = self.restamp_spill.keep((id, raw)) {
                        self.restamp.push(stamp);
                    }
                }
            }
            plan::Verdict::Changed(d) => {
                if self.changed.len() < spill_after() {
                    self.changed.push((d, raw));
                } else if let Err(candidate) = self.changed_spill.keep((d, raw)) {
                    self.changed.push(candidate);
                }
            }
            plan::Verdict::Create(d) => {
                let c = plan::Change {
                    action: Action::Create,
                    user: d,
                    before: None,
                    fields: vec![],
                    reason: None,
                    raw,
                };
                if let Some(c) = self.spill(c) {
                    self.creates.push(c);
                }
                if self.creates.len() >= CREATE_CHUNK {
                    self.send_creates();
                }
            }
        }
    }

    /// Keep `c` on disk when many creates are held already and its username
    /// is no stored user's (its write then depends on no other change of
    /// the cycle); else it comes back, to be held.
    fn spill(&mut self, c: plan::Change) -> Option<plan::Change> {
        if self.sink.is_some()
            || self.creates.len() < spill_after()
            || self.planner.name_stored(&c.user.username.to_lowercase())
        {
            return Some(c);
        }
        self.spill
            .keep(ChangeRecord::from(c))
            .err()
            .map(plan::Change::from)
    }

    /// Hand the creates to the writer, when one listens.
    fn send_creates(&mut self) {
        if let Some(sink) = &self.sink {
            if !self.creates.is_empty() {
                let next = sink
                    .back
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CREATE_CHUNK));
                // a closed writer has failed: its error ends the cycle
                let _ = sink.to.send(std::mem::replace(&mut self.creates, next));
            }
        }
    }

    /// Write the creates held after the read (a full chunk, or all of them
    /// when `all`); how many were written.
    pub(crate) async fn flush_creates(
        &mut self,
        a: &mut (dyn mfasync_store::Applying + '_),
        all: bool,
    ) -> Result<usize> {
        if self.creates.is_empty() || (!all && self.creates.len() < CREATE_CHUNK) {
            return Ok(0);
        }
        let chunk = std::mem::take(&mut self.creates);
        a.write(&chunk).await?;
        Ok(chunk.len())
    }
}

/// Read every user under the base DN once and hand each entry to the
/// `Worker` on a thread of its own (mapping overlaps with reading). The
/// stored users' digests are loaded at the same time; when nothing is stored
/// yet (a first sync), creates are written to the store as they come, in the
/// cycle's one transaction. Returns the worker, the number of stored
/// directory users, the open transaction (if creates were written) and how
/// many creates it holds.
/// What the full read gives the cycle.
pub(crate) struct ReadUsers<'s> {
    pub(crate) worker: Worker,
    /// Directory users stored before the cycle.
    pub(crate) stored_dir_users: usize,
    /// The write transaction holding the creates streamed on a first sync.
    pub(crate) applying: Option<Box<dyn mfasync_store::Applying + 's>>,
    /// Creates written into `applying`.
    pub(crate) written: usize,
    /// Why the read stopped before the directory said it was done (see
    /// [`incomplete`]); what was read still counts.
    pub(crate) incomplete: Option<String>,
}

/// Whether the search ending in `e` after `entries` entries leaves a read
/// that counts but is incomplete: the directory answered some entries, then
/// a limit (size, time, administrative), a timeout or a lost connection
/// stopped it. Errors before the first entry still fail the cycle.
fn incomplete(e: &EngineError, entries: usize) -> Option<String> {
    (entries > 0 && e.cut_short()).then(|| format!("{e:#}"))
}

pub(crate) async fn read_users<'s>(
    store: &'s dyn Store,
    client: &mut Client,
    cfg: &Config,
    base: &str,
    attrs: &[String],
    claimer: Option<Claimer>,
    plan_only: bool,
) -> Result<ReadUsers<'s>> {
    let handle = tokio::runtime::Handle::current();
    // On a multi-threaded runtime the reader, the mapping thread and the
    // writer each have a thread, and bounded channels between them keep
    // memory flat: a slower stage holds back the one before it (the reader
    // then asks for the next page later). Elsewhere (never in the binary's
    // sync paths) everything shares one task: unbounded, creates after the read.
    let threads = handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
    let (tx, rx) = if threads {
        let (t, r) =
            std::sync::mpsc::sync_channel::<Vec<mfasync_core::Entry>>(ENTRY_QUEUE / ENTRY_BATCH);
        (EntryTx::Bounded(t), r)
    } else {
        let (t, r) = std::sync::mpsc::channel::<Vec<mfasync_core::Entry>>();
        (EntryTx::Unbounded(t), r)
    };
    let (planner_tx, planner_rx) =
        std::sync::mpsc::sync_channel::<(plan::Planner, Option<CreateSink>)>(1);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Worker>();
    let attributes = mapping::lowercase_names(&cfg.attributes);
    let items = cfg.sync.items.clone();
    // Raw stamps: only when each entry's item is told by its DN.
    let seeds: Vec<plan::RawSeed> = match (&claimer, build_identity()) {
        (Some(_), Some(build)) => items
            .iter()
            .map(|i| plan::RawSeed::new(build, &attributes, i))
            .collect(),
        _ => Vec::new(),
    };
    if seeds.is_empty() {
        // no raw stamps this cycle: every user is mapped
        warm_phone_metadata();
    }
    std::thread::Builder::new()
        .name("mfasync-map".into())
        .spawn(move || {
            // The stored digests arrive first (loaded while the read starts).
            // Meanwhile up to LOAD_SLACK entries are taken off the queue, so
            // that the read goes on instead of waiting for the load.
            let mut early: Vec<mfasync_core::Entry> = Vec::new();
            let mut queue_open = true;
            let (planner, sink) = loop {
                match planner_rx.try_recv() {
                    Ok(p) => break p,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                }
                if !queue_open || early.len() >= LOAD_SLACK {
                    match planner_rx.recv() {
                        Ok(p) => break p,
                        Err(_) => return,
                    }
                }
                match rx.recv_timeout(std::time::Duration::from_millis(2)) {
                    Ok(batch) => early.extend(batch),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => queue_open = false,
                }
            };
            let deferred = claimer.is_none().then(|| Snapshot {
                users: HashMap::new(),
                unmapped: Vec::new(),
            });
            let mut w = Worker {
                attrs: attributes,
                items,
                claimer,
                planner,
                cache: Default::default(),
                deferred,
                creates: Vec::new(),
                sink,
                spill: Spiller::default(),
                changed_spill: Spiller::default(),
                restamp_spill: Spiller::default(),
                changed: Vec::new(),
                seeds,
                restamp: Vec::new(),
                warnings: Vec::new(),
                users: 0,
            };
            for e in early {
                w.add_entry(e);
            }
            for batch in rx {
                for e in batch {
                    w.add_entry(e);
                }
            }
            w.send_creates();
            // closes the creates channel: the writer ends once it has written them
            w.sink = None;
            let _ = done_tx.send(w);
        })
        .context("cannot start the mapping thread")?;
    let progress = crate::notify::counter("reading directory users");
    let progress_ref = progress.as_ref();
    crate::progress::reading();
    let read = async move {
        // On its own thread the read opens its own connection (see below).
        let mut own = match threads {
            true => sibling(client, cfg).await,
            false => None,
        };
        let reader: &mut Client = match own.as_mut() {
            Some(c) => c,
            None => client,
        };
        let mut batch = Vec::with_capacity(ENTRY_BATCH);
        let mut f = |e: mfasync_core::Entry| {
            if let Some(p) = progress_ref {
                p.inc();
            }
            crate::progress::entry_read();
            batch.push(e);
            if batch.len() >= ENTRY_BATCH {
                tx.send(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(ENTRY_BATCH),
                ));
            }
        };
        let r = reader
            .search_each(base, Scope::Subtree, &cfg.filters.user, attrs, &mut f)
            .await
            .with_context(|| format!("searching users under {base}"));
        if !batch.is_empty() {
            tx.send(batch);
        }
        drop(tx);
        if let Some(c) = own {
            c.unbind().await;
        }
        crate::progress::applying();
        r
    };
    let load_and_write = async {
        // moved in: if loading fails, the mapping thread's wait for the
        // planner ends with this future (else it would wait forever, and the
        // reader with it on the full entry queue)
        let planner_tx = planner_tx;
        let t = std::time::Instant::now();
        let mut planner = plan::Planner::new(Vec::new());
        // room for all at once: no index twice its size while it grows
        planner.reserve(store.directory_user_count().await?);
        store.user_digests(&mut |d| planner.add_stored(d)).await?;
        planner.seal().map_err(EngineError::Other)?;
        let stored_dir_users = planner.stored_directory_users();
        tracing::info!(target: "mfasync::sync",
            ms = t.elapsed().as_millis() as u64,
            stored = stored_dir_users,
            "loaded stored digests"
        );
        let (sink, creates) = if threads && !plan_only && stored_dir_users == 0 {
            let (to, r) = std::sync::mpsc::sync_channel(CREATE_QUEUE);
            let (back_tx, back) = std::sync::mpsc::sync_channel(CREATE_QUEUE + 2);
            (Some(CreateSink { to, back }), Some((r, back_tx)))
        } else {
            (None, None)
        };
        planner_tx
            .send((planner, sink))
            .map_err(|_| EngineError::Other("the mapping thread stopped unexpectedly".into()))?;
        let mut applying: Option<Box<dyn mfasync_store::Applying + 's>> = None;
        let mut written = 0;
        if let Some((r, back)) = creates {
            let _keep = crate::notify::writing_while_reading();
            // a blocking receive: this runs on the writer's own thread (`threads`)
            while let Ok(mut chunk) = r.recv() {
                let a = match applying.as_mut() {
                    Some(a) => a,
                    None => applying.insert(store.begin_apply().await?),
                };
                a.write(&chunk).await?;
                written += chunk.len();
                chunk.clear();
                let _ = back.try_send(chunk);
            }
        }
        Ok::<_, EngineError>((stored_dir_users, applying, written))
    };
    let (searched, loaded) = if threads {
        // The read gets a thread with a runtime of its own, and its own
        // connection opened there: ldap3's connection task then decodes each
        // answer on the thread that turns it into an entry, instead of waking
        // another thread for every entry (BENCHMARKS.md, "History"). This
        // thread writes meanwhile: binding rows and building audit JSON
        // overlap with the read.
        tokio::task::block_in_place(|| {
            std::thread::scope(|sc| {
                let reader = std::thread::Builder::new()
                    .name("mfasync-read".into())
                    .spawn_scoped(sc, move || {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .context("cannot start the directory reader's runtime")?
                            .block_on(read)
                    });
                let loaded = handle.block_on(load_and_write);
                let searched = match reader {
                    Ok(r) => r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                    Err(e) => {
                        Err(EngineError::from(e).context("cannot start the directory reader"))
                    }
                };
                (searched, loaded)
            })
        })
    } else {
        tokio::join!(read, load_and_write)
    };
    if let Some(p) = progress {
        p.finish();
    }
    let loaded = loaded?;
    let w = done_rx
        .await
        .map_err(|_| EngineError::Other("the mapping thread stopped unexpectedly".into()))?;
    let incomplete = match searched {
        Ok(_) => None,
        Err(e) => Some(incomplete(&e, w.users).ok_or(e)?),
    };
    let (stored_dir_users, applying, written) = loaded;
    Ok(ReadUsers {
        worker: w,
        stored_dir_users,
        applying,
        written,
        incomplete,
    })
}

/// A second connection to `client`'s server for a full read on a thread of
/// its own (`Client::sibling`); None when it cannot be had (the server may
/// limit connections): the read then goes on `client`, only slower.
pub(crate) async fn sibling(client: &Client, cfg: &Config) -> Option<Client> {
    let opened = match query_password(cfg) {
        Ok(password) => client
            .sibling(
                &cfg.directory,
                &cfg.directory.query_bind,
                password.as_deref(),
            )
            .await
            .map_err(EngineError::from),
        Err(e) => Err(e),
    };
    match opened {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::info!(target: "mfasync::sync",
                server = client.server(),
                "reading users on the first connection (a second one failed: {e})"
            );
            None
        }
    }
}
