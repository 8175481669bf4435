//! `HashedSet`: a set of keys already hashed, compact at millions of keys;
//! `StrSet`: a set of strings kept as hashes in one.

use std::collections::HashSet;

/// Keys kept in one hash table before the set moves to sorted shards.
const SMALL: usize = 1 << 16;
/// Bits of the hash choosing a key's shard once sharded.
const SHARD_BITS: u32 = 16;

/// A set of `(hash, key)` pairs whose `hash` is a random 64-bit value; a
/// pair is told apart by the top 16 bits of `hash` and all of `key`, which
/// alone is stored once the set is large. Up to 65,536 keys it is one hash
/// table; beyond, 65,536 sorted shards each grown by a quarter at a time:
/// ~10 bytes per u64 key at a million keys (a hash table holds 19 there,
/// and twice its size while it grows).
pub struct HashedSet<T> {
    small: HashSet<(u16, T), foldhash::fast::RandomState>,
    shards: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for HashedSet<T> {
    fn default() -> Self {
        HashedSet {
            small: HashSet::default(),
            shards: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Ord + Copy + std::hash::Hash> HashedSet<T> {
    /// Whether the pair is new (and now in the set).
    pub fn insert(&mut self, hash: u64, key: T) -> bool {
        if self.shards.is_empty() {
            if !self.small.insert((shard_of(hash) as u16, key)) {
                return false;
            }
            self.len += 1;
            if self.small.len() >= SMALL {
                self.shard_all();
            }
            return true;
        }
        let Some(shard) = self.shards.get_mut(shard_of(hash)) else {
            return false;
        };
        match shard.binary_search(&key) {
            Ok(_) => false,
            Err(at) => {
                if shard.len() == shard.capacity() {
                    // a quarter more: little room left unused
                    shard.reserve_exact((shard.len() / 4).max(4));
                }
                shard.insert(at, key);
                self.len += 1;
                true
            }
        }
    }

    pub fn contains(&self, hash: u64, key: T) -> bool {
        if self.shards.is_empty() {
            return self.small.contains(&(shard_of(hash) as u16, key));
        }
        self.shards
            .get(shard_of(hash))
            .is_some_and(|s| s.binary_search(&key).is_ok())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn shard_all(&mut self) {
        self.shards = vec![Vec::new(); 1 << SHARD_BITS];
        for (shard, key) in std::mem::take(&mut self.small) {
            if let Some(s) = self.shards.get_mut(usize::from(shard)) {
                s.push(key);
            }
        }
        for s in &mut self.shards {
            s.sort_unstable();
        }
    }
}

/// A set of strings kept as two independently seeded foldhash hashes
/// (random per process) rather than copies: ~10 bytes and no allocation per
/// string at a million (`HashedSet`). Two strings colliding is about as
/// likely as 2^-80 per pair, and cannot be aimed at without the seeds.
#[derive(Default)]
pub struct StrSet {
    set: HashedSet<u64>,
    seeds: (foldhash::fast::RandomState, foldhash::fast::RandomState),
}

impl StrSet {
    /// Whether `s` is new (and now in the set).
    pub fn insert(&mut self, s: &str) -> bool {
        let (hash, key) = self.hashes(s);
        self.set.insert(hash, key)
    }

    /// [`StrSet::insert`] of a string by its [`StrSet::hashes`].
    pub fn insert_hashes(&mut self, (hash, key): (u64, u64)) -> bool {
        self.set.insert(hash, key)
    }

    pub fn contains(&self, s: &str) -> bool {
        let (hash, key) = self.hashes(s);
        self.set.contains(hash, key)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The two hashes `s` is kept as (this set's seeds).
    pub fn hashes(&self, s: &str) -> (u64, u64) {
        use std::hash::BuildHasher;
        (self.seeds.0.hash_one(s), self.seeds.1.hash_one(s))
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARD_BITS)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_new_once_before_and_after_sharding() {
        let mut s = HashedSet::default();
        let hash = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let n = 3 * SMALL as u64;
        for i in 0..n {
            assert!(s.insert(hash(i), i), "{i}");
            assert!(!s.insert(hash(i), i), "{i}");
        }
        assert_eq!(s.len(), n as usize);
        assert!(!s.shards.is_empty());
        for i in 0..n {
            assert!(s.contains(hash(i), i));
        }
        assert!(!s.contains(hash(n), n));
        // the same key under another shard is another pair
        assert!(s.insert(hash(1) ^ (1 << 63), 1));
    }

    #[test]
    fn strings_are_told_apart_by_their_hashes() {
        let mut s = StrSet::default();
        assert!(s.is_empty());
        let n = 2 * SMALL;
        for i in 0..n {
            assert!(s.insert(&format!("id-{i}")), "{i}");
        }
        assert!(!s.insert("id-0") && !s.insert(&format!("id-{}", n - 1)));
        assert!(s.contains("id-17") && !s.contains("id-x") && !s.contains(&format!("id-{n}")));
        assert!(!s.insert_hashes(s.hashes("id-5")) && s.insert_hashes(s.hashes("id-x")));
        assert_eq!(s.len(), n + 1);
    }

    #[test]
    fn a_small_set_stays_one_table() {
        let mut s = HashedSet::default();
        assert!(s.is_empty());
        let top = |b: u64| b << 48;
        assert!(s.insert(top(7), 1u64));
        assert!(!s.insert(top(7) | 5, 1u64));
        assert!(s.insert(top(8), 1u64));
        assert!(s.contains(top(7), 1) && !s.contains(top(9), 1));
        assert!(s.shards.is_empty());
        assert_eq!(s.len(), 2);
    }
}
