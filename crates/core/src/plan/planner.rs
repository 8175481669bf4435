//! The streaming full-sync planner over a compact index of the stored users.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use super::{departure, digest_bits, digest_head, raw_stamp_bits, Action, StoredDigest, Verdict};
use crate::presence::Presence;
use crate::user::{MfaUser, Source};

/// The full-sync plan computed one desired user at a time, against a compact
/// index of the stored users instead of their rows: ~50 bytes per stored
/// user, no strings (memory stays flat at a million users). Same rules and
/// results as `compute` (tested against it); the caller loads the stored rows
/// only of `Changed` users and of `departures`.
///
/// Stored users are found by a 64-bit hash of their directory id, seeded per
/// planner. A hit is verified: `Unchanged` needs an equal digest or raw
/// stamp, both of which cover the directory id; a `Changed` user's row is
/// loaded by its id (not found: the caller stops the cycle). Two stored ids
/// with one hash make [`Planner::seal`] fail (nothing is decided; the next
/// planner has other seeds). The ids of the users no item held are read
/// again from the store ([`Planner::resolve_id`]) for their lookup and
/// departure.
pub struct Planner {
    keys: foldhash::quality::RandomState,
    /// All ones (tests: fewer bits, to collide).
    mask: u64,
    /// Stored directory users, sorted by `key` once sealed.
    slots: Vec<Slot>,
    /// Sealed: `slots[dir[b]..dir[b + 1]]` are the keys whose top bits are `b`.
    dir: Vec<u32>,
    shift: u32,
    sealed: bool,
    ambiguous: bool,
    /// Slot indexes sorted by the stored username's hash.
    by_name: Vec<u32>,
    /// The distinct `sync_item`s of stored users (`Slot::item` indexes it).
    items: Vec<Box<str>>,
    taken_by_manual: HashSet<String, foldhash::fast::RandomState>,
    manual_names: HashSet<u64, Unhashed>,
    /// Names taken this cycle other than by a stored user keeping its own
    /// (creates, renames; those are `NAMED` slots). Compact: a first sync
    /// claims one name per user.
    claimed: crate::hashset::HashedSet<u64>,
    /// Directory ids of the slots no item held (`resolve_id`).
    ids: HashMap<u32, Box<str>, Unhashed>,
    pub unchanged: usize,
    pub warnings: Vec<String>,
}

/// What the planner keeps of a stored directory user (40 bytes).
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    /// The stored digest's first 64 bits (`digest_head`).
    digest: u64,
    /// The raw stamp's first 64 bits.
    stamp: u64,
    /// Hash of the lower-cased username.
    name: u64,
    /// Index into `Planner::items`; `NO_ITEM`: none.
    item: u32,
    flags: u8,
}

const NO_ITEM: u32 = u32::MAX;
const ENABLED: u8 = 1;
const HAS_DIGEST: u8 = 2;
const HAS_STAMP: u8 = 4;
/// Taken by an item this cycle.
const HELD: u8 = 8;
const EXISTS: u8 = 16;
/// The directory proved it deleted (a lookup by its unique id found nothing).
const DELETED: u8 = 32;
/// Left exactly as it is this cycle.
const KEEP: u8 = 64;
/// Its stored username is taken this cycle by this user.
const NAMED: u8 = 128;

impl Slot {
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
    fn digest(&self) -> Option<u64> {
        self.has(HAS_DIGEST).then_some(self.digest)
    }
}

/// Already-hashed u64 keys used as they are.
#[derive(Clone, Copy, Default)]
pub(crate) struct Unhashed;

#[derive(Default)]
pub(crate) struct UnhashedState(u64);

impl std::hash::Hasher for UnhashedState {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u32(&mut self, n: u32) {
        // slot indexes: spread over the table
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl BuildHasher for Unhashed {
    type Hasher = UnhashedState;
    fn build_hasher(&self) -> UnhashedState {
        UnhashedState(0)
    }
}

fn parse_bits(text: Option<&str>) -> Option<u128> {
    text.and_then(|d| u128::from_str_radix(d, 16).ok())
}

impl Planner {
    pub fn new(stored: Vec<StoredDigest>) -> Self {
        let mut p = Planner {
            keys: Default::default(),
            mask: u64::MAX,
            slots: Vec::new(),
            dir: Vec::new(),
            shift: 64,
            sealed: false,
            ambiguous: false,
            by_name: Vec::new(),
            items: Vec::new(),
            taken_by_manual: Default::default(),
            manual_names: Default::default(),
            claimed: Default::default(),
            ids: Default::default(),
            unchanged: 0,
            warnings: Vec::new(),
        };
        for s in stored {
            p.add_stored(s);
        }
        p
    }

    /// Room for `n` more stored users (a count taken before loading them).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve_exact(n);
    }

    fn key(&self, id: &str) -> u64 {
        self.keys.hash_one(id) & self.mask
    }

    fn name(&self, lower: &str) -> u64 {
        self.keys.hash_one((lower, 1u8))
    }

    /// One more stored user (all before the first `desired`).
    pub fn add_stored(&mut self, s: StoredDigest) {
        match (s.source, s.directory_id) {
            (Source::Manual, _) => {
                let lower = s.username.to_lowercase();
                self.manual_names.insert(self.name(&lower));
                self.taken_by_manual.insert(lower);
            }
            (Source::Directory, Some(id)) => {
                let item = match s.sync_item {
                    None => NO_ITEM,
                    Some(i) => match self.items.iter().position(|x| **x == *i) {
                        Some(n) => n as u32,
                        None => {
                            self.items.push(i.into_boxed_str());
                            (self.items.len() - 1) as u32
                        }
                    },
                };
                // an unreadable digest compares unequal: the row is then compared field by field
                let digest = parse_bits(s.digest.as_deref());
                let stamp = parse_bits(s.raw_stamp.as_deref());
                let mut flags = 0;
                if s.enabled {
                    flags |= ENABLED;
                }
                if digest.is_some() {
                    flags |= HAS_DIGEST;
                }
                if stamp.is_some() {
                    flags |= HAS_STAMP;
                }
                let d = digest.unwrap_or_default();
                self.slots.push(Slot {
                    key: self.key(&id),
                    digest: digest_head(d),
                    stamp: (stamp.unwrap_or_default() >> 64) as u64,
                    name: self.name(&s.username.to_lowercase()),
                    item,
                    flags,
                });
                self.sealed = false;
            }
            (Source::Directory, None) => {}
        }
    }

    /// Sorts the index once every stored user is in. Fails when two stored
    /// directory ids share a hash: the cycle must stop (no user can be told
    /// apart from the other); the next planner hashes with other seeds.
    pub fn seal(&mut self) -> Result<(), String> {
        if !self.sealed {
            self.slots.sort_unstable_by_key(|s| s.key);
            self.ambiguous = self.slots.windows(2).any(|w| w[0].key == w[1].key);
            // ~4 slots per directory bucket
            let bits = (usize::BITS - (self.slots.len() / 4).leading_zeros()).clamp(1, 30);
            self.shift = 64 - bits;
            let buckets = 1usize << bits;
            self.dir.clear();
            self.dir.reserve_exact(buckets + 1);
            let mut at = 0usize;
            for b in 0..buckets {
                while at < self.slots.len() && ((self.slots[at].key >> self.shift) as usize) < b {
                    at += 1;
                }
                self.dir.push(at as u32);
            }
            self.dir.push(self.slots.len() as u32);
            self.by_name = (0..self.slots.len() as u32).collect();
            let slots = &self.slots;
            self.by_name
                .sort_unstable_by_key(|&i| slots.get(i as usize).map_or(0, |s| s.name));
            self.ids.clear();
            self.sealed = true;
        }
        if self.ambiguous {
            return Err(format!(
                "two of the {} stored directory ids share an index hash; run the synchronization again",
                self.slots.len()
            ));
        }
        Ok(())
    }

    /// The slot of the stored user with this directory id (by hash).
    fn find(&mut self, id: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let _ = self.seal();
        let key = self.key(id);
        let b = (key >> self.shift) as usize;
        let lo = *self.dir.get(b)? as usize;
        let hi = *self.dir.get(b + 1)? as usize;
        (lo..hi).find(|&i| self.slots[i].key == key)
    }

    /// Stored directory users.
    pub fn stored_directory_users(&self) -> usize {
        self.slots.len()
    }

    fn mark(&mut self, id: &str, flag: u8) {
        if let Some(i) = self.find(id) {
            self.slots[i].flags |= flag;
        }
    }

    /// A directory entry with this unique id exists (held by an item or not).
    pub fn exists(&mut self, id: &str) {
        self.mark(id, EXISTS);
    }

    /// The directory proved the entry with this unique id deleted.
    pub fn deleted(&mut self, id: &str) {
        self.mark(id, DELETED);
    }

    /// A directory entry with this id exists but could not be mapped: its
    /// stored user is left exactly as it is this cycle.
    pub fn keep_as_is(&mut self, id: &str) {
        self.mark(id, KEEP);
    }

    /// Whether some stored users no item held still need their directory id
    /// read again (`resolve_id`, for `unseen` and `departures`).
    pub fn wants_ids(&self) -> bool {
        self.slots
            .iter()
            .filter(|s| !s.has(HELD) && !s.has(KEEP))
            .count()
            > self.ids.len()
    }

    /// A stored directory user's id, read again from the store after the
    /// read: kept when no item held it (a lookup or a departure may need it).
    pub fn resolve_id(&mut self, id: &str) {
        if let Some(i) = self.find(id) {
            let s = self.slots[i];
            if !s.has(HELD) && !s.has(KEEP) {
                self.ids.entry(i as u32).or_insert_with(|| id.into());
            }
        }
    }

    /// Stored users that no item took this cycle, neither seen in the
    /// directory nor proved deleted, and not kept: the departures whose
    /// presence is still to be looked up ([`Planner::exists`],
    /// [`Planner::deleted`]; those left unknown are left as they are).
    /// Only users whose ids were resolved ([`Planner::resolve_id`]).
    pub fn unseen(&self) -> Vec<String> {
        self.ids
            .iter()
            .filter(|(i, _)| {
                self.slots.get(**i as usize).is_some_and(|s| {
                    !s.has(HELD) && !s.has(EXISTS) && !s.has(DELETED) && !s.has(KEEP)
                })
            })
            .map(|(_, id)| id.to_string())
            .collect()
    }

    /// Whether a stored user (directory or manual) may have the lower-cased
    /// username `lower` (by its hash: rarely true for another name too).
    /// After [`Planner::seal`].
    pub fn name_stored(&self, lower: &str) -> bool {
        if self.taken_by_manual.contains(lower) {
            return true;
        }
        let name = self.name(lower);
        let from = self
            .by_name
            .partition_point(|&i| self.slots.get(i as usize).map_or(0, |s| s.name) < name);
        self.by_name
            .get(from)
            .and_then(|&i| self.slots.get(i as usize))
            .is_some_and(|s| s.name == name)
    }

    /// Whether the name is taken this cycle by someone other than slot `own`.
    fn name_taken(&self, name: u64, own: Option<usize>) -> bool {
        if self.claimed.contains(name, name) {
            return true;
        }
        let from = self
            .by_name
            .partition_point(|&i| self.slots.get(i as usize).map_or(0, |s| s.name) < name);
        self.by_name[from..]
            .iter()
            .map(|&i| i as usize)
            .take_while(|&i| self.slots.get(i).is_some_and(|s| s.name == name))
            .any(|i| Some(i) != own && self.slots[i].has(NAMED))
    }

    /// The entry with unique id `id` and hash `raw` (its item decided, in
    /// item order) when its stored row's raw stamp says it maps to that
    /// row: then it is unchanged, with the same rules as [`Planner::desired`]
    /// (a username taken by a manual user or by another entry: false, so
    /// that `desired` tells). False: map it and ask `desired`.
    pub fn unchanged_raw(&mut self, id: &str, raw: u128) -> bool {
        let Some(i) = self.find(id) else {
            return false;
        };
        let s = self.slots[i];
        let Some(digest) = s.digest() else {
            return false;
        };
        if !s.has(HAS_STAMP)
            || s.has(HELD)
            || (raw_stamp_bits(raw, u128::from(digest) << 64) >> 64) as u64 != s.stamp
        {
            return false;
        }
        // (the stored names are unique: only a claim of this cycle competes)
        if self.manual_names.contains(&s.name) || self.claimed.contains(s.name, s.name) {
            return false;
        }
        self.slots[i].flags |= HELD | NAMED;
        self.unchanged += 1;
        true
    }

    /// One desired user (item settings applied), in item order: first wins.
    pub fn desired(&mut self, d: MfaUser) -> Verdict {
        let digest = digest_bits(&d);
        self.desired_with_digest(d, digest)
    }

    /// [`Planner::desired`] with the user's [`digest_bits`] already computed.
    pub fn desired_with_digest(&mut self, d: MfaUser, digest: u128) -> Verdict {
        let Some(id) = d.directory_id.as_deref() else {
            return Verdict::Unchanged;
        };
        let lower = d.username.to_lowercase();
        let cur = self.find(id);
        if self.taken_by_manual.contains(&lower) {
            self.warnings.push(format!(
                "{}: username already used by a manual MFA user; directory user {} skipped",
                d.username, id
            ));
            if let Some(i) = cur {
                self.slots[i].flags |= HELD;
            }
            return Verdict::Unchanged;
        }
        let name = self.name(&lower);
        // its own stored name: stored names are unique, only a claim of this
        // cycle competes
        let own = cur.filter(|&i| self.slots[i].name == name);
        if self.name_taken(name, own) {
            self.warnings.push(format!(
                "{}: two directory users share this username; directory user {id} is skipped",
                d.username
            ));
            if let Some(i) = cur {
                if !self.slots[i].has(HELD) {
                    self.slots[i].flags |= HELD;
                    self.unchanged += 1;
                }
            }
            return Verdict::Unchanged;
        }
        match own {
            Some(i) => self.slots[i].flags |= NAMED,
            None => {
                self.claimed.insert(name, name);
            }
        }
        match cur {
            None => Verdict::Create(d),
            Some(i) => {
                self.slots[i].flags |= HELD;
                if self.slots[i].digest() == Some(digest_head(digest)) {
                    self.unchanged += 1;
                    Verdict::Unchanged
                } else {
                    Verdict::Changed(d)
                }
            }
        }
    }

    /// A `Changed` user compared with its stored row; counts it unchanged
    /// when no field differs after all.
    pub fn changed(&mut self, d: MfaUser, cur: &MfaUser) -> Option<super::Change> {
        let c = super::modify(d, cur);
        if c.is_none() {
            self.unchanged += 1;
        }
        c
    }

    /// The stored directory users no item held, with what happens to them
    /// (by directory_id); the ones left as they are are counted unchanged.
    /// A user whose id was not resolved ([`Planner::resolve_id`]: its row
    /// went away meanwhile) is left as it is, with a warning.
    pub fn departures(
        &mut self,
        when_removed: &dyn Fn(&str) -> Option<crate::config::WhenRemoved>,
        remove_deleted_users: bool,
    ) -> Vec<(String, Action, String)> {
        let mut out = Vec::new();
        let mut unresolved = 0usize;
        for (i, s) in self.slots.iter().enumerate() {
            if s.has(HELD) {
                continue;
            }
            if s.has(KEEP) {
                self.unchanged += 1;
                continue;
            }
            let Some(id) = self.ids.get(&(i as u32)) else {
                unresolved += 1;
                self.unchanged += 1;
                continue;
            };
            let item = self.items.get(s.item as usize).map(|i| &**i);
            let presence = if s.has(EXISTS) {
                Presence::Exists
            } else if s.has(DELETED) {
                Presence::Deleted
            } else {
                Presence::Unknown
            };
            let (action, reason) = departure(
                s.has(ENABLED),
                item.unwrap_or_default(),
                presence,
                remove_deleted_users,
                when_removed,
            );
            match action {
                None => self.unchanged += 1,
                Some(a) => out.push((id.to_string(), a, reason)),
            }
        }
        if unresolved > 0 {
            self.warnings.push(format!(
                "{unresolved} stored user(s) that no item holds were not found again in the database; left as they are"
            ));
        }
        out
    }
}

#[cfg(test)]
impl Planner {
    /// A planner whose keys have only their low `bits` bits: collisions on purpose.
    pub(crate) fn with_short_keys(bits: u32, stored: Vec<StoredDigest>) -> Self {
        let mut p = Planner::new(Vec::new());
        p.mask = (1u64 << bits) - 1;
        for s in stored {
            p.add_stored(s);
        }
        p
    }
}

#[cfg(test)]
mod slot_tests {
    /// 40 bytes a stored user: the index is ~45 MB at a million users.
    #[test]
    fn a_slot_is_40_bytes() {
        assert_eq!(std::mem::size_of::<super::Slot>(), 40);
    }
}
