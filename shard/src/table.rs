//! The key-value table: a hash index for lookups, an ordered index for SCAN, a deadline index
//! for active expiry, and the memory account.

use std::collections::BTreeSet;
use std::ops::Bound;

use bytes::Bytes;
use indexmap::IndexMap;
use veddb_wire::{Error, SetCondition, SetOptions, Ttl};

use crate::config::{Config, Eviction, ENTRY_OVERHEAD_BYTES, EVICTION_SAMPLES};
use crate::scan::ScanPage;

type Hasher = foldhash::fast::RandomState;

/// Outcome of a compare-and-swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    Stored {
        version: u64,
    },
    /// The key exists with another version (0 was expected, or a different version).
    Mismatch {
        current: u64,
    },
    /// The key does not exist and a non-zero version was expected.
    NotFound,
}

struct Entry {
    value: Bytes,
    /// Changes on every write of the key; unique within the shard (taken from `version_clock`).
    version: u64,
    /// Milliseconds since the epoch; 0 = never.
    expires_at_ms: u64,
    /// `access_clock` at the last read or write (approximate LRU).
    last_access: u64,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct TableCounters {
    pub expired: u64,
    pub evicted: u64,
    pub out_of_memory: u64,
}

#[derive(Clone, Copy)]
enum Removal {
    Deleted,
    Expired,
    Evicted,
}

pub(crate) struct Table {
    map: IndexMap<Bytes, Entry, Hasher>,
    /// Every key of `map`, in byte order (SCAN with stable cursors).
    ordered: BTreeSet<Bytes>,
    /// `(expires_at_ms, key)` for every key with a TTL (active expiry, earliest first).
    expiry: BTreeSet<(u64, Bytes)>,
    memory_bytes_used: u64,
    memory_bytes_limit: u64,
    eviction: Eviction,
    version_clock: u64,
    access_clock: u64,
    rng: u64,
    counters: TableCounters,
}

/// Bytes charged for one entry.
fn cost(key_length: usize, value_length: usize) -> u64 {
    key_length as u64 + value_length as u64 + ENTRY_OVERHEAD_BYTES
}

fn is_live(entry: &Entry, now_ms: u64) -> bool {
    entry.expires_at_ms == 0 || entry.expires_at_ms > now_ms
}

fn deadline(now_ms: u64, ttl_ms: u64) -> u64 {
    now_ms.saturating_add(ttl_ms).max(1)
}

impl Table {
    pub fn new(config: &Config) -> Self {
        Table {
            map: IndexMap::with_hasher(Hasher::default()),
            ordered: BTreeSet::new(),
            expiry: BTreeSet::new(),
            memory_bytes_used: 0,
            memory_bytes_limit: config.memory_bytes_limit,
            eviction: config.eviction,
            version_clock: 0,
            access_clock: 0,
            rng: config.seed | 1,
            counters: TableCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn memory_bytes_used(&self) -> u64 {
        self.memory_bytes_used
    }

    pub fn counters(&self) -> TableCounters {
        self.counters
    }

    /// Index of `key` if it exists and is live; an expired entry is reclaimed on the way.
    fn live_index(&mut self, key: &[u8], now_ms: u64) -> Option<usize> {
        let index = self.map.get_index_of(key)?;
        if is_live(&self.map[index], now_ms) {
            Some(index)
        } else {
            self.remove_index(index, Removal::Expired);
            None
        }
    }

    fn remove_index(&mut self, index: usize, reason: Removal) {
        let Some((key, entry)) = self.map.swap_remove_index(index) else {
            debug_assert!(false, "remove_index out of range");
            return;
        };
        let removed = self.ordered.remove(&key);
        debug_assert!(removed, "ordered index out of sync");
        if entry.expires_at_ms != 0 {
            let removed = self.expiry.remove(&(entry.expires_at_ms, key.clone()));
            debug_assert!(removed, "expiry index out of sync");
        }
        let charged = cost(key.len(), entry.value.len());
        debug_assert!(self.memory_bytes_used >= charged);
        self.memory_bytes_used -= charged;
        match reason {
            Removal::Deleted => {}
            Removal::Expired => self.counters.expired += 1,
            Removal::Evicted => self.counters.evicted += 1,
        }
    }

    fn next_version(&mut self) -> u64 {
        self.version_clock += 1;
        self.version_clock
    }

    fn touch(&mut self) -> u64 {
        self.access_clock += 1;
        self.access_clock
    }

    pub fn get(&mut self, key: &[u8], now_ms: u64) -> Option<(Bytes, u64)> {
        let index = self.live_index(key, now_ms)?;
        let access = self.touch();
        let entry = &mut self.map[index];
        entry.last_access = access;
        Some((entry.value.clone(), entry.version))
    }

    pub fn peek(&self, key: &[u8], now_ms: u64) -> Option<(Bytes, u64)> {
        let entry = self.map.get(key)?;
        is_live(entry, now_ms).then(|| (entry.value.clone(), entry.version))
    }

    pub fn contains(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.live_index(key, now_ms).is_some()
    }

    pub fn set(
        &mut self,
        key: Bytes,
        value: Bytes,
        options: SetOptions,
        now_ms: u64,
    ) -> Result<Option<u64>, Error> {
        let existing = self.live_index(&key, now_ms);
        match (options.condition, existing) {
            (SetCondition::IfAbsent, Some(_)) | (SetCondition::IfPresent, None) => return Ok(None),
            _ => {}
        }
        let expires_at_ms = match options.ttl_ms {
            Some(ttl_ms) => deadline(now_ms, ttl_ms),
            None if options.keep_ttl => existing.map_or(0, |i| self.map[i].expires_at_ms),
            None => 0,
        };
        self.write(key, value, expires_at_ms, existing).map(Some)
    }

    /// Charges, evicts if allowed, and stores. `existing` is the live index of `key`, if any.
    fn write(
        &mut self,
        key: Bytes,
        value: Bytes,
        expires_at_ms: u64,
        existing: Option<usize>,
    ) -> Result<u64, Error> {
        let new_cost = cost(key.len(), value.len());
        let old_cost = existing.map_or(0, |i| cost(key.len(), self.map[i].value.len()));
        self.make_room(new_cost, old_cost, &[&key[..]])?;
        Ok(self.store(key, value, expires_at_ms))
    }

    /// Stores without charging checks (the caller made room).
    fn store(&mut self, key: Bytes, value: Bytes, expires_at_ms: u64) -> u64 {
        let version = self.next_version();
        let access = self.touch();
        let new_cost = cost(key.len(), value.len());
        if let Some(index) = self.map.get_index_of(&key[..]) {
            let entry = &mut self.map[index];
            let old_cost = cost(key.len(), entry.value.len());
            if entry.expires_at_ms != expires_at_ms {
                if entry.expires_at_ms != 0 {
                    self.expiry.remove(&(entry.expires_at_ms, key.clone()));
                }
                if expires_at_ms != 0 {
                    self.expiry.insert((expires_at_ms, key.clone()));
                }
            }
            entry.value = value;
            entry.version = version;
            entry.expires_at_ms = expires_at_ms;
            entry.last_access = access;
            self.memory_bytes_used = self.memory_bytes_used - old_cost + new_cost;
        } else {
            self.ordered.insert(key.clone());
            if expires_at_ms != 0 {
                self.expiry.insert((expires_at_ms, key.clone()));
            }
            self.map.insert(
                key,
                Entry {
                    value,
                    version,
                    expires_at_ms,
                    last_access: access,
                },
            );
            self.memory_bytes_used += new_cost;
        }
        version
    }

    /// Makes sure a write that replaces `old_cost` bytes by `new_cost` bytes fits the budget,
    /// evicting keys not in `protected` (sorted) when eviction is on. On error nothing changed
    /// except keys already evicted.
    fn make_room(
        &mut self,
        new_cost: u64,
        old_cost: u64,
        protected: &[&[u8]],
    ) -> Result<(), Error> {
        debug_assert!(self.memory_bytes_used >= old_cost);
        let needed = |used: u64| used - old_cost + new_cost;
        if needed(self.memory_bytes_used) <= self.memory_bytes_limit {
            return Ok(());
        }
        let out_of_memory = |used: u64, limit: u64| Error::OutOfMemory {
            needed_bytes: used - old_cost + new_cost,
            limit_bytes: limit,
        };
        if self.eviction == Eviction::NoEviction || new_cost > self.memory_bytes_limit {
            self.counters.out_of_memory += 1;
            return Err(out_of_memory(
                self.memory_bytes_used,
                self.memory_bytes_limit,
            ));
        }
        while needed(self.memory_bytes_used) > self.memory_bytes_limit {
            match self.pick_victim(protected) {
                Some(index) => self.remove_index(index, Removal::Evicted),
                None => {
                    self.counters.out_of_memory += 1;
                    return Err(out_of_memory(
                        self.memory_bytes_used,
                        self.memory_bytes_limit,
                    ));
                }
            }
        }
        Ok(())
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: deterministic for a given seed and operation sequence.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Approximate LRU: the least recently used of a few sampled keys not in `protected`.
    fn pick_victim(&mut self, protected: &[&[u8]]) -> Option<usize> {
        let length = self.map.len();
        if length == 0 {
            return None;
        }
        let is_protected = |key: &[u8]| protected.binary_search(&key).is_ok();
        let mut best: Option<(usize, u64)> = None;
        let mut sampled = 0;
        for _ in 0..EVICTION_SAMPLES * 4 {
            let index = (self.random() % length as u64) as usize;
            let (key, entry) = self.map.get_index(index)?;
            if is_protected(key) {
                continue;
            }
            if best.is_none_or(|(_, access)| entry.last_access < access) {
                best = Some((index, entry.last_access));
            }
            sampled += 1;
            if sampled == EVICTION_SAMPLES {
                break;
            }
        }
        if let Some((index, _)) = best {
            return Some(index);
        }
        // Sampling only hit protected keys: fall back to the first unprotected one.
        self.map.keys().position(|key| !is_protected(key))
    }

    pub fn delete(&mut self, key: &[u8], now_ms: u64) -> bool {
        match self.live_index(key, now_ms) {
            Some(index) => {
                self.remove_index(index, Removal::Deleted);
                true
            }
            None => false,
        }
    }

    pub fn cas(
        &mut self,
        key: Bytes,
        expected_version: u64,
        value: Bytes,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<CasOutcome, Error> {
        let existing = self.live_index(&key, now_ms);
        let expires_at_ms = match (existing, ttl_ms) {
            (_, Some(ttl_ms)) => deadline(now_ms, ttl_ms),
            (Some(index), None) => self.map[index].expires_at_ms,
            (None, None) => 0,
        };
        match existing {
            None if expected_version != 0 => Ok(CasOutcome::NotFound),
            Some(index) if self.map[index].version != expected_version => {
                Ok(CasOutcome::Mismatch {
                    current: self.map[index].version,
                })
            }
            _ => {
                let version = self.write(key, value, expires_at_ms, existing)?;
                Ok(CasOutcome::Stored { version })
            }
        }
    }

    pub fn incr(&mut self, key: Bytes, delta: i64, now_ms: u64) -> Result<(i64, u64), Error> {
        let existing = self.live_index(&key, now_ms);
        let (current, expires_at_ms) = match existing {
            Some(index) => {
                let entry = &self.map[index];
                (
                    parse_integer(&entry.value).ok_or(Error::NotAnInteger)?,
                    entry.expires_at_ms,
                )
            }
            None => (0, 0),
        };
        let value = current.checked_add(delta).ok_or(Error::Overflow)?;
        let version = self.write(key, Bytes::from(value.to_string()), expires_at_ms, existing)?;
        Ok((value, version))
    }

    pub fn expire(&mut self, key: &[u8], ttl_ms: u64, now_ms: u64) -> bool {
        let Some(index) = self.live_index(key, now_ms) else {
            return false;
        };
        if ttl_ms == 0 {
            self.remove_index(index, Removal::Expired);
            return true;
        }
        let expires_at_ms = deadline(now_ms, ttl_ms);
        self.set_expiry(index, expires_at_ms);
        true
    }

    fn set_expiry(&mut self, index: usize, expires_at_ms: u64) {
        let version = self.next_version();
        let (key, entry) = self
            .map
            .get_index_mut(index)
            .expect("index from live_index");
        if entry.expires_at_ms != 0 {
            self.expiry.remove(&(entry.expires_at_ms, key.clone()));
        }
        if expires_at_ms != 0 {
            self.expiry.insert((expires_at_ms, key.clone()));
        }
        entry.expires_at_ms = expires_at_ms;
        entry.version = version;
    }

    pub fn ttl(&mut self, key: &[u8], now_ms: u64) -> Ttl {
        match self.live_index(key, now_ms) {
            None => Ttl::Missing,
            Some(index) => match self.map[index].expires_at_ms {
                0 => Ttl::Persistent,
                at => Ttl::Remaining(at - now_ms),
            },
        }
    }

    pub fn persist(&mut self, key: &[u8], now_ms: u64) -> bool {
        match self.live_index(key, now_ms) {
            Some(index) if self.map[index].expires_at_ms != 0 => {
                self.set_expiry(index, 0);
                true
            }
            _ => false,
        }
    }

    pub fn mset(&mut self, pairs: Vec<(Bytes, Bytes)>, now_ms: u64) -> Result<(), Error> {
        // Last value wins for a key given twice.
        let mut seen = std::collections::HashSet::with_capacity(pairs.len());
        let mut unique: Vec<(Bytes, Bytes)> = Vec::with_capacity(pairs.len());
        for (key, value) in pairs.into_iter().rev() {
            if seen.insert(key.clone()) {
                unique.push((key, value));
            }
        }
        unique.reverse();
        let mut old_cost = 0;
        let mut new_cost = 0;
        for (key, value) in &unique {
            if let Some(index) = self.live_index(key, now_ms) {
                old_cost += cost(key.len(), self.map[index].value.len());
            }
            new_cost += cost(key.len(), value.len());
        }
        let mut protected_keys: Vec<Bytes> = unique.iter().map(|(key, _)| key.clone()).collect();
        protected_keys.sort_unstable();
        let protected: Vec<&[u8]> = protected_keys.iter().map(|key| &key[..]).collect();
        self.make_room(new_cost, old_cost, &protected)?;
        for (key, value) in unique {
            self.store(key, value, 0);
        }
        Ok(())
    }

    pub fn scan(&self, cursor: &[u8], prefix: &[u8], count: usize, now_ms: u64) -> ScanPage {
        let start: Bound<&[u8]> = if cursor.is_empty() || cursor < prefix {
            Bound::Included(prefix)
        } else {
            Bound::Excluded(cursor)
        };
        // Bounded work per call even across long runs of expired keys.
        let budget = count.saturating_mul(4).saturating_add(256);
        let mut keys = Vec::with_capacity(count.min(1024));
        let mut last_examined: Option<&Bytes> = None;
        let range = self.ordered.range::<[u8], _>((start, Bound::Unbounded));
        for (examined, key) in range.enumerate() {
            if !key.starts_with(prefix) {
                return ScanPage { keys, resume: None };
            }
            if keys.len() == count || examined == budget {
                let resume = last_examined.cloned();
                return ScanPage { keys, resume };
            }
            last_examined = Some(key);
            if self
                .map
                .get(&key[..])
                .is_some_and(|entry| is_live(entry, now_ms))
            {
                keys.push(key.clone());
            }
        }
        ScanPage { keys, resume: None }
    }

    pub fn expire_due(&mut self, now_ms: u64, budget: usize) -> usize {
        let mut reclaimed = 0;
        while reclaimed < budget {
            let Some((at, key)) = self.expiry.first() else {
                break;
            };
            if *at > now_ms {
                break;
            }
            let key = key.clone();
            match self.map.get_index_of(&key[..]) {
                Some(index) => self.remove_index(index, Removal::Expired),
                None => {
                    debug_assert!(false, "expiry index names a missing key");
                    self.expiry.pop_first();
                }
            }
            reclaimed += 1;
        }
        reclaimed
    }

    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiry.first().map(|(at, _)| *at)
    }
}

/// A decimal 64-bit integer, as INCR accepts it (an optional sign, then digits).
fn parse_integer(value: &[u8]) -> Option<i64> {
    // No length cap: leading zeros are digits too ("000000000000000000042" is 42), and `parse`
    // rejects the empty string and reports overflow by itself.
    std::str::from_utf8(value).ok()?.parse().ok()
}
