//! The key-value table: a hash index for lookups, an ordered index for SCAN, a deadline index
//! for active expiry, and the memory account.
//!
//! The hash index is a `hashbrown::HashTable` of `Slot`s: each slot holds the whole entry and,
//! when it is at most `INLINE_KEY_BYTES` long, the key itself, so a lookup reads the control
//! bytes and then one slot (two adjacent cache lines, fetched together), not an index, an entry
//! and the key's allocation one after the other.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher as _};
use std::ops::Bound;

use bytes::Bytes;
use hashbrown::HashTable;
use veddb_wire::{Error, SetCondition, SetOptions, Ttl};

use crate::config::{Config, Eviction, ENTRY_OVERHEAD_BYTES, EVICTION_SAMPLES};
use crate::scan::ScanPage;

/// Seeded from `Config::seed`: bucket positions, and so the eviction sampler, are deterministic
/// for a given seed and operation sequence. (They are as predictable as the seed: a process that
/// faces untrusted clients should not use a well-known one.)
type HashState = foldhash::fast::FixedState;

/// Keys up to this length live inside their slot; longer ones are a `Bytes` there. 22 keeps a
/// key in 32 bytes (the `Bytes` variant's niche holds the tag), so that a slot with its value's
/// tag is 96 bytes.
const INLINE_KEY_BYTES: usize = 22;

/// Empty buckets a sampling attempt walks past (forward, wrapping) before it gives up.
const EMPTY_BUCKETS_SKIPPED_MAX: usize = 64;

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

/// A key as a write receives it: shared bytes, or a borrowed slice that is copied only where
/// the key is kept beyond the call (a key too long to be inline in its slot, the ordered index
/// for a new key, the expiry index, the journal). A frontend that reads keys out of a request
/// it does not keep (the in-place SET of local clients) overwrites a key without allocating.
#[derive(Clone, Copy, Debug)]
pub enum KeyArg<'a> {
    Shared(&'a Bytes),
    Borrowed(&'a [u8]),
}

impl<'a> KeyArg<'a> {
    pub fn as_slice(&self) -> &'a [u8] {
        match *self {
            KeyArg::Shared(key) => key,
            KeyArg::Borrowed(key) => key,
        }
    }

    /// The key as `Bytes` to keep: shared, or a copy of the slice.
    pub fn to_bytes(&self) -> Bytes {
        match *self {
            KeyArg::Shared(key) => key.clone(),
            KeyArg::Borrowed(key) => Bytes::copy_from_slice(key),
        }
    }
}

impl<'a> From<&'a Bytes> for KeyArg<'a> {
    fn from(key: &'a Bytes) -> Self {
        KeyArg::Shared(key)
    }
}

impl<'a> From<&'a [u8]> for KeyArg<'a> {
    fn from(key: &'a [u8]) -> Self {
        KeyArg::Borrowed(key)
    }
}

/// A key as a slot stores it. Which variant depends only on the length, so two equal keys always
/// have the same variant.
enum Key {
    /// `bytes[..len]` is the key; the rest is zero.
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Bytes),
}

impl Key {
    fn new(key: KeyArg<'_>) -> Key {
        match Probe::new(key.as_slice()) {
            Probe::Inline { len, bytes } => Key::Inline { len, bytes },
            Probe::Heap(_) => Key::Heap(key.to_bytes()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(key) => key,
        }
    }

    /// The key as `Bytes` (for the expiry index): a copy when it is inline.
    fn to_bytes(&self) -> Bytes {
        match self {
            Key::Inline { .. } => Bytes::copy_from_slice(self.as_slice()),
            Key::Heap(key) => key.clone(),
        }
    }
}

/// A key being looked up, laid out once like an inline [`Key`] so that comparing it with a slot
/// is a fixed-size comparison within the slot.
enum Probe<'a> {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(&'a [u8]),
}

impl<'a> Probe<'a> {
    fn new(key: &'a [u8]) -> Probe<'a> {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            Probe::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Probe::Heap(key)
        }
    }

    fn matches(&self, key: &Key) -> bool {
        match (self, key) {
            (
                Probe::Inline { len, bytes },
                Key::Inline {
                    len: slot_len,
                    bytes: slot_bytes,
                },
            ) => len == slot_len && bytes == slot_bytes,
            (Probe::Heap(key), Key::Heap(slot_key)) => *key == &slot_key[..],
            _ => false,
        }
    }
}

/// A write of one key's entry, applied to its slot when the key exists.
struct Update<'a> {
    key: KeyArg<'a>,
    value: Bytes,
    tag: u64,
    expires_at_ms: u64,
    version: u64,
    access: u64,
    new_cost: u64,
}

impl Update<'_> {
    /// Replaces the entry in `slot` (the key's), keeping the expiry index and the memory count.
    fn apply(
        self,
        slot: &mut Slot,
        expiry: &mut BTreeSet<(u64, Bytes)>,
        memory_bytes_used: &mut u64,
    ) {
        let old_cost = cost(self.key.as_slice().len(), slot.value.len());
        if slot.expires_at_ms != self.expires_at_ms {
            if slot.expires_at_ms != 0 {
                expiry.remove(&(slot.expires_at_ms, self.key.to_bytes()));
            }
            if self.expires_at_ms != 0 {
                expiry.insert((self.expires_at_ms, self.key.to_bytes()));
            }
        }
        slot.value = self.value;
        slot.tag = self.tag;
        slot.version = self.version;
        slot.expires_at_ms = self.expires_at_ms;
        slot.last_access = self.access;
        *memory_bytes_used = *memory_bytes_used - old_cost + self.new_cost;
    }
}

/// One entry of the hash index: 96 bytes, aligned to 32 so that it always spans exactly two cache
/// lines. The key, deadline, version and last access come first (what a lookup checks), the
/// value and its tag after.
#[repr(C, align(32))]
struct Slot {
    key: Key,
    /// Milliseconds since the epoch; 0 = never.
    expires_at_ms: u64,
    /// Changes on every write of the key; unique within the shard (taken from `version_clock`).
    version: u64,
    /// `access_clock` at the last read or write (approximate LRU).
    last_access: u64,
    value: Bytes,
    /// The value store's tag of the value (see [`ValueStore`]); 0 without one.
    tag: u64,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct TableCounters {
    pub expired: u64,
    pub evicted: u64,
    pub out_of_memory: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Removal {
    Deleted,
    /// The TTL passed (lazy or active expiry): not journaled, since the entry's logged expiry
    /// already drops it on recovery.
    Expired,
    /// EXPIRE with a TTL of 0: counted as expired, journaled as a delete.
    ExpiredByCommand,
    Evicted,
}

/// Re-homes a value about to be stored (for example into shared memory that local clients read
/// without a copy). It returns the value to store (the same bytes, wherever they now live) and a
/// tag the shard keeps with it and gives back with every read of it
/// ([`crate::Shard::get_with`]): the store's own note of where the value is (0: none), so
/// that a read needs not look it up again.
pub type ValueStore = Box<dyn FnMut(Bytes) -> (Bytes, u64)>;

/// A value a frontend made for a write ([`crate::Shard::set_with`]): its bytes and, when the
/// frontend already put them where the [`ValueStore`] would (the local frontend copies a SET's
/// value from its client's ring straight into its arena), the tag the store gives them, so that
/// the store is not asked to find them again.
#[derive(Clone, Debug)]
pub struct MadeValue {
    pub bytes: Bytes,
    /// `Some(tag)`: stored already, with this tag (0: kept outside the store).
    pub stored_tag: Option<u64>,
}

impl From<Bytes> for MadeValue {
    fn from(bytes: Bytes) -> Self {
        MadeValue {
            bytes,
            stored_tag: None,
        }
    }
}

/// One key's whole state: what the write-ahead log and a snapshot store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub key: Bytes,
    pub value: Bytes,
    pub version: u64,
    /// Milliseconds since the epoch; 0 = never.
    pub expires_at_ms: u64,
}

/// A change to one key, in the order the shard applied it (see [`crate::Shard::set_journal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key's whole entry after a write (SET, CAS, INCR, MSET, EXPIRE, PERSIST).
    Put(StoredEntry),
    /// The key is gone (DEL, EXPIRE 0, eviction).
    Delete(Bytes),
}

/// A snapshot being taken: keys up to `position` were emitted; for keys after it that changed
/// since the snapshot began, `preserved` holds the entry as it was then (`None`: absent).
struct SnapshotState {
    position: Option<Bytes>,
    preserved: BTreeMap<Bytes, Option<StoredEntry>>,
    version_clock: u64,
    preserved_max: usize,
}

pub(crate) struct Table {
    map: HashTable<Slot>,
    hash_state: HashState,
    /// Every key of `map`, in byte order (SCAN with stable cursors).
    ordered: BTreeSet<Bytes>,
    /// While [`Table::restore_all`] runs: new keys for `ordered`, added sorted in one go at the
    /// end (one by one, the ordered set's comparisons were much of a restart).
    ordered_pending: Option<Vec<Bytes>>,
    /// `(expires_at_ms, key)` for every key with a TTL (active expiry, earliest first).
    expiry: BTreeSet<(u64, Bytes)>,
    memory_bytes_used: u64,
    memory_bytes_limit: u64,
    eviction: Eviction,
    version_clock: u64,
    access_clock: u64,
    rng: u64,
    counters: TableCounters,
    /// Changes since the last drain, when journaling is on.
    journal: Option<Vec<Change>>,
    snapshot: Option<SnapshotState>,
    /// Where stored values live (see [`crate::Shard::set_value_store`]).
    value_store: Option<ValueStore>,
}

/// `keys` in byte order. Each comparison looks at the keys' first 8 bytes, kept beside them,
/// before it follows the pointers: with a key per allocation, comparing the bytes themselves
/// (a cache miss each) made the sort most of loading a large shard.
fn sorted_keys(keys: Vec<Bytes>) -> Vec<Bytes> {
    fn head(key: &[u8]) -> u64 {
        let mut bytes = [0u8; 8];
        let length = key.len().min(8);
        bytes[..length].copy_from_slice(&key[..length]);
        // Big-endian and zero-padded: comparing heads orders keys as bytes do, except that a
        // key and the same key with zero bytes appended tie (the full comparison decides).
        u64::from_be_bytes(bytes)
    }
    let mut keyed: Vec<(u64, Bytes)> = keys.into_iter().map(|key| (head(&key), key)).collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, key)| key).collect()
}

/// Bytes charged for one entry.
fn cost(key_length: usize, value_length: usize) -> u64 {
    key_length as u64 + value_length as u64 + ENTRY_OVERHEAD_BYTES
}

fn is_live(slot: &Slot, now_ms: u64) -> bool {
    slot.expires_at_ms == 0 || slot.expires_at_ms > now_ms
}

fn hash_key(state: &HashState, key: &[u8]) -> u64 {
    let mut hasher = state.build_hasher();
    hasher.write(key);
    hasher.finish()
}

fn deadline(now_ms: u64, ttl_ms: u64) -> u64 {
    now_ms.saturating_add(ttl_ms).max(1)
}

impl Table {
    pub fn new(config: &Config) -> Self {
        Table {
            map: HashTable::new(),
            hash_state: HashState::with_seed(config.seed),
            ordered: BTreeSet::new(),
            ordered_pending: None,
            expiry: BTreeSet::new(),
            memory_bytes_used: 0,
            memory_bytes_limit: config.memory_bytes_limit,
            eviction: config.eviction,
            version_clock: 0,
            access_clock: 0,
            rng: config.seed | 1,
            counters: TableCounters::default(),
            journal: None,
            value_store: None,
            snapshot: None,
        }
    }

    pub fn set_journal(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
    }

    /// The changes recorded since the last call, oldest first.
    pub fn drain_changes(&mut self) -> impl Iterator<Item = Change> + '_ {
        self.journal
            .iter_mut()
            .flat_map(|journal| journal.drain(..))
    }

    pub fn has_changes(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|journal| !journal.is_empty())
    }

    fn journal(&mut self, change: impl FnOnce() -> Change) {
        if let Some(journal) = &mut self.journal {
            journal.push(change());
        }
    }

    /// Whether a change to `key` now must first preserve its current entry for the snapshot
    /// being taken (the key is after the snapshot's position and not preserved yet).
    fn snapshot_wants(&self, key: &[u8]) -> bool {
        self.snapshot.as_ref().is_some_and(|snapshot| {
            snapshot
                .position
                .as_ref()
                .is_none_or(|position| key > &position[..])
                && !snapshot.preserved.contains_key(key)
        })
    }

    /// Before `key` changes: keeps its current entry (or its absence) for the snapshot.
    fn preserve(&mut self, key: &[u8]) {
        if !self.snapshot_wants(key) {
            return;
        }
        let entry = self.find_slot(key).map(|slot| StoredEntry {
            key: slot.key.to_bytes(),
            value: slot.value.clone(),
            version: slot.version,
            expires_at_ms: slot.expires_at_ms,
        });
        if let Some(snapshot) = &mut self.snapshot {
            snapshot
                .preserved
                .insert(Bytes::copy_from_slice(key), entry);
            snapshot.preserved_max = snapshot.preserved_max.max(snapshot.preserved.len());
        }
    }

    /// Starts a point-in-time snapshot: [`Table::snapshot_next`] then returns every entry as it
    /// is now, however the table changes meanwhile. `false` if one is already running.
    pub fn begin_snapshot(&mut self) -> bool {
        if self.snapshot.is_some() {
            return false;
        }
        self.snapshot = Some(SnapshotState {
            position: None,
            preserved: BTreeMap::new(),
            version_clock: self.version_clock,
            preserved_max: 0,
        });
        true
    }

    /// The version clock when the running snapshot began.
    pub fn snapshot_version_clock(&self) -> Option<u64> {
        self.snapshot
            .as_ref()
            .map(|snapshot| snapshot.version_clock)
    }

    /// Appends up to `max` more entries of the running snapshot to `out`, in key order; `false`
    /// once the snapshot is complete (it is then ended).
    pub fn snapshot_next(&mut self, max: usize, out: &mut Vec<StoredEntry>) -> bool {
        let Some(snapshot) = &mut self.snapshot else {
            return false;
        };
        let mut emitted = 0;
        while emitted < max {
            let lower: Bound<&[u8]> = match &snapshot.position {
                None => Bound::Unbounded,
                Some(position) => Bound::Excluded(&position[..]),
            };
            let current = self
                .ordered
                .range::<[u8], _>((lower, Bound::Unbounded))
                .next();
            let preserved = snapshot
                .preserved
                .range::<[u8], _>((lower, Bound::Unbounded))
                .next()
                .map(|(key, _)| key);
            let key = match (current, preserved) {
                (None, None) => {
                    self.snapshot = None;
                    return false;
                }
                (Some(key), None) | (None, Some(key)) => key.clone(),
                (Some(a), Some(b)) => a.min(b).clone(),
            };
            let entry = match snapshot.preserved.remove(&key) {
                Some(entry) => entry,
                None => {
                    let probe = Probe::new(&key);
                    self.map
                        .find(hash_key(&self.hash_state, &key), |slot| {
                            probe.matches(&slot.key)
                        })
                        .map(|slot| StoredEntry {
                            key: key.clone(),
                            value: slot.value.clone(),
                            version: slot.version,
                            expires_at_ms: slot.expires_at_ms,
                        })
                }
            };
            if let Some(entry) = entry {
                out.push(entry);
                emitted += 1;
            }
            snapshot.position = Some(key);
        }
        true
    }

    /// Abandons the running snapshot (its file could not be written).
    pub fn abort_snapshot(&mut self) {
        self.snapshot = None;
    }

    /// Entries preserved for the running snapshot now, and at most since it began.
    pub fn snapshot_preserved(&self) -> (usize, usize) {
        self.snapshot.as_ref().map_or((0, 0), |snapshot| {
            (snapshot.preserved.len(), snapshot.preserved_max)
        })
    }

    /// The version clock: the version of the latest write.
    pub fn version_clock(&self) -> u64 {
        self.version_clock
    }

    /// Loads one entry from disk at start-up (not journaled; no eviction): keeps its version,
    /// and the clock stays past every loaded version. OUT_OF_MEMORY when it does not fit.
    pub fn restore(&mut self, entry: StoredEntry, version_clock: u64) -> Result<(), Error> {
        let new_cost = cost(entry.key.len(), entry.value.len());
        let old_cost = self
            .find_slot(&entry.key)
            .map_or(0, |slot| cost(entry.key.len(), slot.value.len()));
        if self.memory_bytes_used - old_cost + new_cost > self.memory_bytes_limit {
            return Err(Error::OutOfMemory {
                needed_bytes: self.memory_bytes_used - old_cost + new_cost,
                limit_bytes: self.memory_bytes_limit,
            });
        }
        let journal = self.journal.take();
        self.version_clock = self.version_clock.max(version_clock).max(entry.version);
        self.access_clock += 1;
        self.store_version(
            KeyArg::Shared(&entry.key),
            entry.value.into(),
            entry.expires_at_ms,
            entry.version,
            None,
        );
        self.journal = journal;
        Ok(())
    }

    /// [`Table::restore`] for many entries (start-up): room for them is made once, and their keys
    /// join the ordered index sorted, in one go. Stops at the first entry that does not fit.
    pub fn restore_all(
        &mut self,
        entries: impl ExactSizeIterator<Item = StoredEntry>,
        version_clock: u64,
        mut check: impl FnMut(&StoredEntry) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let state = &self.hash_state;
        self.map
            .reserve(entries.len(), |slot| hash_key(state, slot.key.as_slice()));
        self.ordered_pending = Some(Vec::with_capacity(entries.len()));
        let mut result = Ok(());
        for entry in entries {
            if let Err(error) = check(&entry).and_then(|()| self.restore(entry, version_clock)) {
                result = Err(error);
                break;
            }
        }
        let keys = sorted_keys(self.ordered_pending.take().unwrap_or_default());
        if self.ordered.is_empty() {
            // Built from sorted keys: no comparisons beyond the sort's.
            self.ordered = keys.into_iter().collect();
        } else {
            self.ordered.extend(keys);
        }
        result
    }

    /// Moves the version clock to at least `version_clock` (start-up, not journaled).
    pub fn restore_version_clock(&mut self, version_clock: u64) {
        self.version_clock = self.version_clock.max(version_clock);
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

    fn hash(&self, key: &[u8]) -> u64 {
        hash_key(&self.hash_state, key)
    }

    /// Bucket index of `key`, live or not.
    fn find(&self, key: &[u8]) -> Option<usize> {
        let probe = Probe::new(key);
        self.map
            .find_bucket_index(self.hash(key), |slot| probe.matches(&slot.key))
    }

    fn find_slot(&self, key: &[u8]) -> Option<&Slot> {
        let probe = Probe::new(key);
        self.map
            .find(self.hash(key), |slot| probe.matches(&slot.key))
    }

    /// The slot at a bucket index from `find` or `live_index` (valid until the next insert).
    fn slot(&self, index: usize) -> &Slot {
        self.map
            .get_bucket(index)
            .expect("bucket index of an entry")
    }

    /// Bucket index of `key` if it exists and is live; an expired entry is reclaimed on the way.
    /// The index stays valid until the next insert into `map`.
    fn live_index(&mut self, key: &[u8], now_ms: u64) -> Option<usize> {
        let index = self.find(key)?;
        if is_live(self.slot(index), now_ms) {
            Some(index)
        } else {
            self.remove_index(index, Removal::Expired);
            None
        }
    }

    fn remove_index(&mut self, index: usize, reason: Removal) {
        let Ok(entry) = self.map.get_bucket_entry(index) else {
            debug_assert!(false, "remove_index of an empty bucket");
            return;
        };
        let (slot, _) = entry.remove();
        self.forget(slot, reason);
    }

    /// Takes a slot just removed from `map` out of the other indexes and the memory account.
    fn forget(&mut self, slot: Slot, reason: Removal) {
        if self.snapshot_wants(slot.key.as_slice()) {
            let entry = StoredEntry {
                key: slot.key.to_bytes(),
                value: slot.value.clone(),
                version: slot.version,
                expires_at_ms: slot.expires_at_ms,
            };
            if let Some(snapshot) = &mut self.snapshot {
                snapshot.preserved.insert(entry.key.clone(), Some(entry));
                snapshot.preserved_max = snapshot.preserved_max.max(snapshot.preserved.len());
            }
        }
        if reason != Removal::Expired {
            self.journal(|| Change::Delete(slot.key.to_bytes()));
        }
        let key = self.ordered.take(slot.key.as_slice());
        debug_assert!(key.is_some(), "ordered index out of sync");
        if slot.expires_at_ms != 0 {
            let key = key.unwrap_or_else(|| slot.key.to_bytes());
            let removed = self.expiry.remove(&(slot.expires_at_ms, key));
            debug_assert!(removed, "expiry index out of sync");
        }
        let charged = cost(slot.key.as_slice().len(), slot.value.len());
        debug_assert!(self.memory_bytes_used >= charged);
        self.memory_bytes_used -= charged;
        match reason {
            Removal::Deleted => {}
            Removal::Expired | Removal::ExpiredByCommand => self.counters.expired += 1,
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
        self.get_with(key, now_ms, |value, version, _| (value.clone(), version))
    }

    /// As [`get`](Self::get), lending the value to `read` instead of cloning its handle.
    pub fn get_with<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        read: impl FnOnce(&Bytes, u64, u64) -> R,
    ) -> Option<R> {
        let hash = self.hash(key);
        let probe = Probe::new(key);
        let entry = self
            .map
            .find_entry(hash, |slot| probe.matches(&slot.key))
            .ok()?;
        if !is_live(entry.get(), now_ms) {
            let (slot, _) = entry.remove();
            self.forget(slot, Removal::Expired);
            return None;
        }
        self.access_clock += 1;
        let slot = entry.into_mut();
        slot.last_access = self.access_clock;
        Some(read(&slot.value, slot.version, slot.tag))
    }

    pub fn peek(&self, key: &[u8], now_ms: u64) -> Option<(Bytes, u64)> {
        let slot = self.find_slot(key)?;
        is_live(slot, now_ms).then(|| (slot.value.clone(), slot.version))
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
        let value_len = value.len();
        self.set_with(
            KeyArg::Shared(&key),
            value_len,
            || value.into(),
            options,
            now_ms,
        )
    }

    /// As [`set`](Self::set), with the value made by `value` (of `value_len` bytes) only once
    /// the write will happen: a SET refused by its condition or the memory limit makes none.
    pub fn set_with(
        &mut self,
        key: KeyArg<'_>,
        value_len: usize,
        value: impl FnOnce() -> MadeValue,
        options: SetOptions,
        now_ms: u64,
    ) -> Result<Option<u64>, Error> {
        let existing = self.live_index(key.as_slice(), now_ms);
        match (options.condition, existing) {
            (SetCondition::IfAbsent, Some(_)) | (SetCondition::IfPresent, None) => return Ok(None),
            _ => {}
        }
        let expires_at_ms = match options.ttl_ms {
            Some(ttl_ms) => deadline(now_ms, ttl_ms),
            None if options.keep_ttl => existing.map_or(0, |i| self.slot(i).expires_at_ms),
            None => 0,
        };
        self.write_with(key, value_len, value, expires_at_ms, existing)
            .map(Some)
    }

    /// Charges, evicts if allowed, and stores. `existing` is the live index of `key`, if any.
    fn write(
        &mut self,
        key: Bytes,
        value: Bytes,
        expires_at_ms: u64,
        existing: Option<usize>,
    ) -> Result<u64, Error> {
        let value_len = value.len();
        self.write_with(
            KeyArg::Shared(&key),
            value_len,
            || value.into(),
            expires_at_ms,
            existing,
        )
    }

    /// [`write`](Self::write), the value made (`value_len` bytes) once room is made.
    fn write_with(
        &mut self,
        key: KeyArg<'_>,
        value_len: usize,
        value: impl FnOnce() -> MadeValue,
        expires_at_ms: u64,
        existing: Option<usize>,
    ) -> Result<u64, Error> {
        let key_len = key.as_slice().len();
        let new_cost = cost(key_len, value_len);
        let old_cost = existing.map_or(0, |i| cost(key_len, self.slot(i).value.len()));
        self.make_room(new_cost, old_cost, &[key.as_slice()])?;
        let value = value();
        debug_assert_eq!(
            value.bytes.len(),
            value_len,
            "the value made has the length announced"
        );
        Ok(self.store(key, value, expires_at_ms, existing))
    }

    /// Stores without charging checks (the caller made room). `existing`: the bucket index of
    /// the key's live entry, when the caller looked it up (still valid: evictions only remove).
    fn store(
        &mut self,
        key: KeyArg<'_>,
        value: MadeValue,
        expires_at_ms: u64,
        existing: Option<usize>,
    ) -> u64 {
        let version = self.next_version();
        self.store_version(key, value, expires_at_ms, version, existing);
        version
    }

    pub fn set_value_store(&mut self, store: Option<ValueStore>) {
        self.value_store = store;
    }

    fn store_version(
        &mut self,
        key: KeyArg<'_>,
        value: MadeValue,
        expires_at_ms: u64,
        version: u64,
        existing: Option<usize>,
    ) {
        let (value, tag) = match (value.stored_tag, &mut self.value_store) {
            (Some(tag), _) => (value.bytes, tag),
            (None, Some(store)) => store(value.bytes),
            (None, None) => (value.bytes, 0),
        };
        let key_bytes = key.as_slice();
        self.preserve(key_bytes);
        if self.journal.is_some() {
            let entry = StoredEntry {
                key: key.to_bytes(),
                value: value.clone(),
                version,
                expires_at_ms,
            };
            self.journal(|| Change::Put(entry));
        }
        let access = self.touch();
        let new_cost = cost(key_bytes.len(), value.len());
        let update = Update {
            key,
            value,
            tag,
            expires_at_ms,
            version,
            access,
            new_cost,
        };
        // The entry the caller found: no second lookup.
        if let Some(slot) = existing.and_then(|index| self.map.get_bucket_mut(index)) {
            debug_assert!(
                Probe::new(key_bytes).matches(&slot.key),
                "the bucket of the key looked up"
            );
            update.apply(slot, &mut self.expiry, &mut self.memory_bytes_used);
            return;
        }
        let hash = self.hash(key_bytes);
        let probe = Probe::new(key_bytes);
        match self.map.find_entry(hash, |slot| probe.matches(&slot.key)) {
            Ok(entry) => {
                update.apply(
                    entry.into_mut(),
                    &mut self.expiry,
                    &mut self.memory_bytes_used,
                );
            }
            Err(absent) => {
                let Update {
                    key, value, tag, ..
                } = update;
                let key = key.to_bytes();
                let slot = Slot {
                    key: Key::new(KeyArg::Shared(&key)),
                    expires_at_ms,
                    version,
                    last_access: access,
                    value,
                    tag,
                };
                let state = &self.hash_state;
                absent
                    .into_table()
                    .insert_unique(hash, slot, |slot| hash_key(state, slot.key.as_slice()));
                if expires_at_ms != 0 {
                    self.expiry.insert((expires_at_ms, key.clone()));
                }
                match &mut self.ordered_pending {
                    Some(pending) => pending.push(key),
                    None => {
                        self.ordered.insert(key);
                    }
                }
                self.memory_bytes_used += new_cost;
            }
        }
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
        if self.map.is_empty() {
            return None;
        }
        let is_protected = |key: &[u8]| protected.binary_search(&key).is_ok();
        let mut best: Option<(usize, u64)> = None;
        let mut sampled = 0;
        for _ in 0..EVICTION_SAMPLES * 4 {
            let Some(index) = self.random_full_bucket() else {
                continue;
            };
            let slot = self.slot(index);
            if is_protected(slot.key.as_slice()) {
                continue;
            }
            if best.is_none_or(|(_, access)| slot.last_access < access) {
                best = Some((index, slot.last_access));
            }
            sampled += 1;
            if sampled == EVICTION_SAMPLES {
                break;
            }
        }
        if let Some((index, _)) = best {
            return Some(index);
        }
        // Sampling only hit protected keys (or empty buckets of a sparse table): fall back to the
        // first unprotected key.
        self.map.iter_buckets().find(|&index| {
            self.map
                .get_bucket(index)
                .is_some_and(|slot| !is_protected(slot.key.as_slice()))
        })
    }

    /// A random full bucket: a uniformly random bucket index, moved forward (wrapping) past up
    /// to `EMPTY_BUCKETS_SKIPPED_MAX` empty ones; `None` when all of those were empty.
    fn random_full_bucket(&mut self) -> Option<usize> {
        let buckets = self.map.num_buckets();
        let start = (self.random() % buckets as u64) as usize;
        (0..=EMPTY_BUCKETS_SKIPPED_MAX.min(buckets - 1))
            .map(|step| (start + step) % buckets)
            .find(|&index| self.map.get_bucket(index).is_some())
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
            (Some(index), None) => self.slot(index).expires_at_ms,
            (None, None) => 0,
        };
        match existing {
            None if expected_version != 0 => Ok(CasOutcome::NotFound),
            Some(index) if self.slot(index).version != expected_version => {
                Ok(CasOutcome::Mismatch {
                    current: self.slot(index).version,
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
                let slot = self.slot(index);
                (
                    parse_integer(&slot.value).ok_or(Error::NotAnInteger)?,
                    slot.expires_at_ms,
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
            self.remove_index(index, Removal::ExpiredByCommand);
            return true;
        }
        let expires_at_ms = deadline(now_ms, ttl_ms);
        self.set_expiry(index, expires_at_ms);
        true
    }

    fn set_expiry(&mut self, index: usize, expires_at_ms: u64) {
        let version = self.next_version();
        let key = self.slot(index).key.to_bytes();
        self.preserve(&key);
        let slot = self
            .map
            .get_bucket_mut(index)
            .expect("index from live_index");
        if let Some(journal) = &mut self.journal {
            journal.push(Change::Put(StoredEntry {
                key: key.clone(),
                value: slot.value.clone(),
                version,
                expires_at_ms,
            }));
        }
        if slot.expires_at_ms != 0 {
            self.expiry.remove(&(slot.expires_at_ms, key.clone()));
        }
        if expires_at_ms != 0 {
            self.expiry.insert((expires_at_ms, key));
        }
        slot.expires_at_ms = expires_at_ms;
        slot.version = version;
    }

    pub fn ttl(&mut self, key: &[u8], now_ms: u64) -> Ttl {
        match self.live_index(key, now_ms) {
            None => Ttl::Missing,
            Some(index) => match self.slot(index).expires_at_ms {
                0 => Ttl::Persistent,
                at => Ttl::Remaining(at - now_ms),
            },
        }
    }

    pub fn persist(&mut self, key: &[u8], now_ms: u64) -> bool {
        match self.live_index(key, now_ms) {
            Some(index) if self.slot(index).expires_at_ms != 0 => {
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
                old_cost += cost(key.len(), self.slot(index).value.len());
            }
            new_cost += cost(key.len(), value.len());
        }
        let mut protected_keys: Vec<Bytes> = unique.iter().map(|(key, _)| key.clone()).collect();
        protected_keys.sort_unstable();
        let protected: Vec<&[u8]> = protected_keys.iter().map(|key| &key[..]).collect();
        self.make_room(new_cost, old_cost, &protected)?;
        for (key, value) in unique {
            self.store(KeyArg::Shared(&key), value.into(), 0, None);
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
                .find_slot(key)
                .is_some_and(|slot| is_live(slot, now_ms))
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
            match self.find(&key) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_keys_order_as_bytes_do() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut keys: Vec<Bytes> = Vec::new();
        for _ in 0..2000 {
            // Short keys over a tiny alphabet with zero bytes: many shared and tied heads.
            let length = (next() % 12) as usize;
            let key: Vec<u8> = (0..length)
                .map(|_| b"\0ab"[(next() % 3) as usize])
                .collect();
            keys.push(Bytes::from(key));
        }
        keys.sort_unstable();
        keys.dedup();
        let mut shuffled = keys.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        assert_eq!(sorted_keys(shuffled), keys);
    }

    #[test]
    fn a_slot_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<Key>(), 32);
        assert_eq!(std::mem::size_of::<Slot>(), 96);
        assert_eq!(std::mem::align_of::<Slot>(), 32);
    }

    fn lru_table(seed: u64, limit: u64) -> Table {
        Table::new(&Config {
            memory_bytes_limit: limit,
            eviction: Eviction::Lru,
            seed,
            ..Config::default()
        })
    }

    fn key(i: usize) -> Bytes {
        // Short keys are stored inline, every fifth key is too long for that.
        if i % 5 == 4 {
            Bytes::from(format!("{i:0>40}"))
        } else {
            Bytes::from(format!("k{i}"))
        }
    }

    fn set(table: &mut Table, key: Bytes) -> Result<Option<u64>, Error> {
        table.set(key, Bytes::from_static(b"v"), SetOptions::default(), 1)
    }

    /// Keys present, in byte order.
    fn keys(table: &Table) -> Vec<Bytes> {
        table.ordered.iter().cloned().collect()
    }

    #[test]
    fn inline_and_heap_keys_round_trip() {
        let mut table = lru_table(1, u64::MAX);
        for (byte, length) in [(b'a', 1), (b'b', 29), (b'c', 30), (b'd', 31), (b'e', 200)] {
            let key = Bytes::from(vec![byte; length]);
            set(&mut table, key.clone()).unwrap();
            assert_eq!(table.get(&key, 1).unwrap().0, Bytes::from_static(b"v"));
            assert!(table.get(&key[..length - 1], 1).is_none() || length == 1);
        }
        assert_eq!(table.len(), 5);
        // A key that is a prefix of another (and zero padding) does not match.
        set(&mut table, Bytes::from_static(b"ab\0")).unwrap();
        assert!(table.get(b"ab", 1).is_none());
        assert!(table.get(b"ab\0", 1).is_some());
    }

    #[test]
    fn eviction_is_deterministic_for_a_seed() {
        let limit = 50 * (ENTRY_OVERHEAD_BYTES + 8);
        let run = |seed| {
            let mut table = lru_table(seed, limit);
            for i in 0..500 {
                set(&mut table, key(i)).unwrap();
                if i % 7 == 0 {
                    table.get(&key(i / 2), 1);
                }
            }
            (keys(&table), table.counters().evicted)
        };
        let (first, evicted) = run(7);
        assert!(evicted > 400);
        assert_eq!(run(7), (first.clone(), evicted));
        assert_ne!(run(8).0, first);
    }

    #[test]
    fn a_sparse_table_still_evicts_and_spares_protected_keys() {
        let mut table = lru_table(3, u64::MAX);
        for i in 0..10_000 {
            set(&mut table, key(i)).unwrap();
        }
        // Leave 10 keys in a table of (at least) 16,384 buckets.
        for i in 10..10_000 {
            assert!(table.delete(&key(i), 1));
        }
        assert!(table.map.num_buckets() >= 16_384);
        table.memory_bytes_limit = table.memory_bytes_used();
        let protected: Vec<Bytes> = {
            let mut keys: Vec<Bytes> = (0..9).map(key).collect();
            keys.sort_unstable();
            keys
        };
        let slices: Vec<&[u8]> = protected.iter().map(|key| &key[..]).collect();
        // Room for one more entry needs exactly one eviction: the one unprotected key.
        let cost = cost(1, 1);
        table.make_room(cost, 0, &slices).unwrap();
        assert_eq!(table.counters().evicted, 1);
        assert_eq!(keys(&table), protected);
        // Nothing left to evict.
        assert!(table.make_room(cost * 20, 0, &slices).is_err());
        assert_eq!(keys(&table), protected);
    }
}
