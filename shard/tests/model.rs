//! Model-based property tests of [`veddb_shard::Shard`].
//!
//! Random sequences of every shard operation go through `Shard::handle(request, now_ms)` with a
//! fake clock, and every answer is compared with a deliberately simple model: a `BTreeMap` of
//! `key -> (value, version, expiry)`, a shard-wide version clock, and a few queues for topics.
//! After every step the shard's counters (`stats()`), memory account, next expiry and the
//! contents of every key the model knows (via `Shard::peek`) are compared with the model too.
//!
//! The model keeps *physical* entries, including expired ones the shard has not reclaimed yet,
//! because those still count in `stats().keys` and in the memory budget. The shard reclaims an
//! expired key lazily when an operation on that key looks it up (everything but SCAN and
//! `peek`), and actively in `expire_due`; the model does the same.
//!
//! Every property test runs a fixed number of cases from a fixed seed, so a failure reproduces
//! on every run; nothing is persisted to disk.
//!
//! Suites:
//! - `model_every_operation`: all operations, large memory budget, small key/value limits.
//! - `model_memory_limit_without_eviction`: a small budget; the model predicts every
//!   OUT_OF_MEMORY exactly, and MSET is all-or-nothing.
//! - `model_lru_eviction`: a small budget with `Eviction::Lru`. Which key is evicted is sampled,
//!   so the model learns evictions from the shard and checks that they are legitimate.
//! - `robustness_arbitrary_bytes`: arbitrary bytes for keys, values, prefixes, cursors, topics
//!   and messages, extreme numbers, and a clock near 0 or near `u64::MAX`; still checked against
//!   the model.
//! - `scan_across_shards`: SCAN scattered over 1 to 4 shards and merged with
//!   `merge_scan_pages`, with writes, deletes and clock jumps between rounds.
//! - A few fixed scenarios: batch limits, MSET atomicity and duplicate keys, INCR at the edges
//!   of `i64`, SCAN's bounded work over long runs of expired keys.
//!
//! To run more cases while hunting a bug, raise the `cases` numbers in `proptest_config` calls
//! (or change their seeds to explore other sequences).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{RngAlgorithm, RngSeed};
use veddb_shard::{merge_scan_pages, Config, Eviction, ScanPage, Shard, ENTRY_OVERHEAD_BYTES};
use veddb_wire::{
    limits, Error, Info, Request, Response, SetCondition, SetOptions, ShardStats, SubscriberId, Ttl,
};

/// A realistic "now": milliseconds since the epoch in 2023.
const T0: u64 = 1_700_000_000_000;

/// The small key space: short keys, several sharing prefixes, and non-UTF-8 bytes.
const KEYS: &[&[u8]] = &[b"a", b"ab", b"abc", b"b", b"ba", b"k1", b"k2", b"\xff\x00"];

/// SCAN prefixes: the empty one, real prefixes of the key space, and ones matching nothing.
const PREFIXES: &[&[u8]] = &[b"", b"a", b"ab", b"abc", b"b", b"k", b"\xff", b"z", b"abcd"];

/// Values, many of them interesting to INCR.
const VALUES: &[&[u8]] = &[
    b"",
    b"v",
    b"hello",
    b"0",
    b"1",
    b"-1",
    b"+7",
    b"42",
    b"007",
    b"-0",
    b"9223372036854775807",
    b"9223372036854775806",
    b"-9223372036854775808",
    b"-9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"99999999999999999999",
    b"000000000000000000042",
    b"-0000000000000000000001",
    b"1.5",
    b" 1",
    b"1 ",
    b"-",
    b"+",
    b"+-1",
    b"0x10",
    b"\xff\xfe",
];

const TOPICS: &[&[u8]] = &[b"t1", b"t2", b"a"];

// ------------------------------------------------------------------------------------------
// The model
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MEntry {
    value: Vec<u8>,
    version: u64,
    /// Milliseconds since the epoch; 0 = never.
    expires_at: u64,
}

#[derive(Debug)]
struct MSub {
    topic: Vec<u8>,
    queue: VecDeque<Vec<u8>>,
    queue_bytes: usize,
    dropped: u64,
}

fn cost(key: &[u8], value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD_BYTES
}

fn is_live(entry: &MEntry, now: u64) -> bool {
    entry.expires_at == 0 || entry.expires_at > now
}

/// The deadline of a TTL set at `now` (saturating; 0 is reserved for "never").
fn deadline(now: u64, ttl_ms: u64) -> u64 {
    now.saturating_add(ttl_ms).max(1)
}

/// A decimal 64-bit integer as documented for INCR: an optional sign, then digits.
fn parse_integer(value: &[u8]) -> Option<i64> {
    let (negative, digits) = match value.first()? {
        b'-' => (true, &value[1..]),
        b'+' => (false, &value[1..]),
        _ => (false, value),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut magnitude: i128 = 0;
    for digit in digits {
        magnitude = magnitude * 10 + i128::from(digit - b'0');
        if magnitude > i128::from(u64::MAX) {
            return None;
        }
    }
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

struct Model {
    index: u32,
    config: Config,
    /// Physical entries: live ones and expired ones not reclaimed yet.
    entries: BTreeMap<Vec<u8>, MEntry>,
    version_clock: u64,
    /// Counters; `keys`, `memory_bytes_used`, `topics` and `subscribers` are derived instead.
    counters: ShardStats,
    subscribers: BTreeMap<SubscriberId, MSub>,
    next_sequence: u64,
    /// Subscriptions that received a message since the last drain of
    /// `poll_ready_subscribers` (each reported once; removed ones are not reported).
    ready: BTreeSet<SubscriberId>,
    /// Whether the last write needed room beyond the budget (eviction allowed to happen).
    room_needed: bool,
}

impl Model {
    fn new(index: u32, config: Config) -> Self {
        Model {
            index,
            config,
            entries: BTreeMap::new(),
            version_clock: 0,
            counters: ShardStats::default(),
            subscribers: BTreeMap::new(),
            next_sequence: 1,
            ready: BTreeSet::new(),
            room_needed: false,
        }
    }

    fn lru(&self) -> bool {
        self.config.eviction == Eviction::Lru
    }

    fn memory_used(&self) -> u64 {
        self.entries.iter().map(|(k, e)| cost(k, &e.value)).sum()
    }

    fn stats(&self) -> ShardStats {
        let topics: BTreeSet<&[u8]> = self
            .subscribers
            .values()
            .map(|s| s.topic.as_slice())
            .collect();
        ShardStats {
            shard: self.index,
            keys: self.entries.len() as u64,
            memory_bytes_used: self.memory_used(),
            memory_bytes_limit: self.config.memory_bytes_limit,
            topics: topics.len() as u64,
            subscribers: self.subscribers.len() as u64,
            ..self.counters.clone()
        }
    }

    fn next_expiry(&self) -> Option<u64> {
        self.entries
            .values()
            .filter(|e| e.expires_at != 0)
            .map(|e| e.expires_at)
            .min()
    }

    /// The live entry of `key`; an expired one is reclaimed (counted as expired).
    fn live(&mut self, key: &[u8], now: u64) -> Option<MEntry> {
        let entry = self.entries.get(key)?;
        if is_live(entry, now) {
            return Some(entry.clone());
        }
        self.entries.remove(key);
        self.counters.expired_keys += 1;
        None
    }

    /// `live`, counted as a read (hit or miss).
    fn read(&mut self, key: &[u8], now: u64) -> Option<MEntry> {
        let found = self.live(key, now);
        if found.is_some() {
            self.counters.hits += 1;
        } else {
            self.counters.misses += 1;
        }
        found
    }

    fn live_value(&self, key: &[u8], now: u64) -> Option<(Bytes, u64)> {
        self.entries
            .get(key)
            .filter(|e| is_live(e, now))
            .map(|e| (Bytes::from(e.value.clone()), e.version))
    }

    fn live_keys_with_prefix(&self, prefix: &[u8], now: u64) -> Vec<Bytes> {
        self.entries
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && is_live(e, now))
            .map(|(k, _)| Bytes::from(k.clone()))
            .collect()
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        if key.is_empty() || key.len() > self.config.key_bytes_max {
            return Err(Error::KeyTooLarge {
                length: key.len(),
                limit: self.config.key_bytes_max,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.config.value_bytes_max {
            return Err(Error::ValueTooLarge {
                length: value.len(),
                limit: self.config.value_bytes_max,
            });
        }
        Ok(())
    }

    fn check_ttl(ttl_ms: u64, zero_allowed: bool) -> Result<(), Error> {
        if (ttl_ms == 0 && !zero_allowed) || ttl_ms > limits::TTL_MS_MAX {
            return Err(Error::InvalidArgument(String::new()));
        }
        Ok(())
    }

    fn check_batch(length: usize) -> Result<(), Error> {
        if length > limits::BATCH_KEYS_MAX {
            return Err(Error::InvalidArgument(String::new()));
        }
        Ok(())
    }

    /// Whether a write replacing `old_cost` bytes by `new_cost` bytes may go ahead. Without
    /// eviction it must fit; with LRU only a single write larger than the whole budget fails
    /// (the shard evicts other keys for the rest, and the test learns which afterwards).
    fn make_room(&mut self, new_cost: u64, old_cost: u64) -> Result<(), Error> {
        let needed = self.memory_used() - old_cost + new_cost;
        let limit = self.config.memory_bytes_limit;
        if needed <= limit {
            return Ok(());
        }
        if !self.lru() || new_cost > limit {
            self.counters.out_of_memory_errors += 1;
            return Err(Error::OutOfMemory {
                needed_bytes: needed,
                limit_bytes: limit,
            });
        }
        self.room_needed = true;
        Ok(())
    }

    fn store(&mut self, key: &[u8], value: Vec<u8>, expires_at: u64) -> u64 {
        self.version_clock += 1;
        let version = self.version_clock;
        self.entries.insert(
            key.to_vec(),
            MEntry {
                value,
                version,
                expires_at,
            },
        );
        version
    }

    fn write(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        expires_at: u64,
        existing: Option<&MEntry>,
    ) -> Result<u64, Error> {
        let old_cost = existing.map_or(0, |e| cost(key, &e.value));
        self.make_room(cost(key, &value), old_cost)?;
        Ok(self.store(key, value, expires_at))
    }

    /// Validates a SCAN and counts it; the effective page size.
    fn scan_check(&mut self, cursor: &[u8], prefix: &[u8], count: u32) -> Result<usize, Error> {
        if cursor.len() > self.config.key_bytes_max || prefix.len() > self.config.key_bytes_max {
            return Err(Error::InvalidArgument(String::new()));
        }
        let count = match count {
            0 => limits::SCAN_COUNT_DEFAULT,
            n if n > limits::SCAN_COUNT_MAX => return Err(Error::InvalidArgument(String::new())),
            n => n,
        };
        self.counters.ops += 1;
        Ok(count as usize)
    }

    fn expire_due(&mut self, now: u64, budget: usize) -> usize {
        let mut due: Vec<(u64, Vec<u8>)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires_at != 0 && e.expires_at <= now)
            .map(|(k, e)| (e.expires_at, k.clone()))
            .collect();
        due.sort();
        due.truncate(budget);
        for (_, key) in &due {
            self.entries.remove(key);
        }
        self.counters.expired_keys += due.len() as u64;
        due.len()
    }

    fn apply(&mut self, request: &Request, now: u64) -> Response {
        self.room_needed = false;
        match self.apply_inner(request, now) {
            Ok(response) => response,
            Err(error) => Response::Error(error),
        }
    }

    fn apply_inner(&mut self, request: &Request, now: u64) -> Result<Response, Error> {
        Ok(match request {
            Request::Ping => Response::Pong,
            Request::Get { key } => {
                self.check_key(key)?;
                self.counters.ops += 1;
                match self.read(key, now) {
                    Some(e) => Response::Value {
                        value: Bytes::from(e.value),
                        version: e.version,
                    },
                    None => Response::NotFound,
                }
            }
            Request::Set {
                key,
                value,
                options,
            } => {
                self.check_key(key)?;
                self.check_value(value)?;
                if let Some(ttl_ms) = options.ttl_ms {
                    Self::check_ttl(ttl_ms, false)?;
                }
                self.counters.ops += 1;
                let existing = self.live(key, now);
                match (options.condition, &existing) {
                    (SetCondition::IfAbsent, Some(_)) | (SetCondition::IfPresent, None) => {
                        return Ok(Response::NotStored)
                    }
                    _ => {}
                }
                let expires_at = match options.ttl_ms {
                    Some(ttl_ms) => deadline(now, ttl_ms),
                    None if options.keep_ttl => existing.as_ref().map_or(0, |e| e.expires_at),
                    None => 0,
                };
                let version = self.write(key, value.to_vec(), expires_at, existing.as_ref())?;
                Response::Stored { version }
            }
            Request::Delete { key } => {
                self.check_key(key)?;
                self.counters.ops += 1;
                let existed = self.live(key, now).is_some();
                self.entries.remove(&key[..]);
                Response::Bool(existed)
            }
            Request::Exists { key } => {
                self.check_key(key)?;
                self.counters.ops += 1;
                Response::Bool(self.read(key, now).is_some())
            }
            Request::Cas {
                key,
                expected_version,
                value,
                ttl_ms,
            } => {
                self.check_key(key)?;
                self.check_value(value)?;
                if let Some(ttl_ms) = *ttl_ms {
                    Self::check_ttl(ttl_ms, false)?;
                }
                self.counters.ops += 1;
                let existing = self.live(key, now);
                match &existing {
                    None if *expected_version != 0 => return Ok(Response::NotFound),
                    Some(e) if e.version != *expected_version => {
                        return Ok(Response::VersionMismatch { current: e.version })
                    }
                    _ => {}
                }
                let expires_at = match ttl_ms {
                    Some(ttl_ms) => deadline(now, *ttl_ms),
                    None => existing.as_ref().map_or(0, |e| e.expires_at),
                };
                let version = self.write(key, value.to_vec(), expires_at, existing.as_ref())?;
                Response::Stored { version }
            }
            Request::Incr { key, delta } => {
                self.check_key(key)?;
                self.counters.ops += 1;
                let existing = self.live(key, now);
                let (current, expires_at) = match &existing {
                    Some(e) => (
                        parse_integer(&e.value).ok_or(Error::NotAnInteger)?,
                        e.expires_at,
                    ),
                    None => (0, 0),
                };
                let value = current.checked_add(*delta).ok_or(Error::Overflow)?;
                let text = value.to_string().into_bytes();
                let version = self.write(key, text, expires_at, existing.as_ref())?;
                Response::Integer { value, version }
            }
            Request::Expire { key, ttl_ms } => {
                self.check_key(key)?;
                Self::check_ttl(*ttl_ms, true)?;
                self.counters.ops += 1;
                if self.live(key, now).is_none() {
                    return Ok(Response::Bool(false));
                }
                if *ttl_ms == 0 {
                    self.entries.remove(&key[..]);
                    self.counters.expired_keys += 1;
                } else {
                    self.version_clock += 1;
                    let entry = self.entries.get_mut(&key[..]).expect("live");
                    entry.expires_at = deadline(now, *ttl_ms);
                    entry.version = self.version_clock;
                }
                Response::Bool(true)
            }
            Request::Ttl { key } => {
                self.check_key(key)?;
                self.counters.ops += 1;
                Response::Ttl(match self.read(key, now) {
                    None => Ttl::Missing,
                    Some(e) if e.expires_at == 0 => Ttl::Persistent,
                    Some(e) => Ttl::Remaining(e.expires_at - now),
                })
            }
            Request::Persist { key } => {
                self.check_key(key)?;
                self.counters.ops += 1;
                match self.live(key, now) {
                    Some(e) if e.expires_at != 0 => {
                        self.version_clock += 1;
                        let entry = self.entries.get_mut(&key[..]).expect("live");
                        entry.expires_at = 0;
                        entry.version = self.version_clock;
                        Response::Bool(true)
                    }
                    _ => Response::Bool(false),
                }
            }
            Request::MGet { keys } => {
                Self::check_batch(keys.len())?;
                for key in keys {
                    self.check_key(key)?;
                }
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    self.counters.ops += 1;
                    values.push(
                        self.read(key, now)
                            .map(|e| (Bytes::from(e.value), e.version)),
                    );
                }
                Response::Values(values)
            }
            Request::MSet { pairs } => {
                Self::check_batch(pairs.len())?;
                for (key, value) in pairs {
                    self.check_key(key)?;
                    self.check_value(value)?;
                }
                self.counters.ops += pairs.len() as u64;
                // Last value wins; keys are stored in the order of their last occurrence.
                let mut unique: Vec<(&Bytes, &Bytes)> = Vec::new();
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if !pairs[i + 1..].iter().any(|(later, _)| later == key) {
                        unique.push((key, value));
                    }
                }
                let mut old_cost = 0;
                let mut new_cost = 0;
                for (key, value) in &unique {
                    if let Some(e) = self.live(key, now) {
                        old_cost += cost(key, &e.value);
                    }
                    new_cost += cost(key, value);
                }
                self.make_room(new_cost, old_cost)?;
                for (key, value) in unique {
                    self.store(key, value.to_vec(), 0);
                }
                Response::Ok
            }
            Request::Scan { .. } => unreachable!("SCAN is checked by the runner"),
            Request::Subscribe { topic } => {
                self.check_key(topic)?;
                self.counters.ops += 1;
                if self.subscribers.len() >= self.config.subscribers_max {
                    return Err(Error::TooManySubscribers {
                        limit: self.config.subscribers_max,
                    });
                }
                let id = SubscriberId::new(self.index, self.next_sequence);
                self.next_sequence += 1;
                self.subscribers.insert(
                    id,
                    MSub {
                        topic: topic.to_vec(),
                        queue: VecDeque::new(),
                        queue_bytes: 0,
                        dropped: 0,
                    },
                );
                Response::Subscribed { subscriber: id }
            }
            Request::Unsubscribe { subscriber } => {
                self.counters.ops += 1;
                Response::Bool(self.subscribers.remove(subscriber).is_some())
            }
            Request::Publish { topic, message } => {
                self.check_key(topic)?;
                self.check_value(message)?;
                self.counters.ops += 1;
                self.counters.messages_published += 1;
                let messages_max = self.config.subscriber_queue_messages_max.max(1);
                let bytes_max = self.config.subscriber_queue_bytes_max.max(1);
                let mut receivers = 0;
                for (id, sub) in self.subscribers.iter_mut() {
                    if sub.topic != topic[..] {
                        continue;
                    }
                    self.ready.insert(*id);
                    sub.queue.push_back(message.to_vec());
                    sub.queue_bytes += message.len();
                    while sub.queue.len() > messages_max
                        || (sub.queue_bytes > bytes_max && sub.queue.len() > 1)
                    {
                        let oldest = sub.queue.pop_front().expect("non-empty");
                        sub.queue_bytes -= oldest.len();
                        sub.dropped += 1;
                        self.counters.messages_dropped += 1;
                    }
                    receivers += 1;
                }
                self.counters.messages_delivered += u64::from(receivers);
                Response::Published { receivers }
            }
            Request::Fetch {
                subscriber, max, ..
            } => {
                self.counters.ops += 1;
                let sub = self
                    .subscribers
                    .get_mut(subscriber)
                    .ok_or(Error::UnknownSubscriber(*subscriber))?;
                let max = match *max {
                    0 => limits::FETCH_MESSAGES_MAX,
                    n => n.min(limits::FETCH_MESSAGES_MAX),
                } as usize;
                let take = sub.queue.len().min(max);
                let messages: Vec<Bytes> = sub.queue.drain(..take).map(Bytes::from).collect();
                sub.queue_bytes -= messages.iter().map(Bytes::len).sum::<usize>();
                Response::Messages {
                    messages,
                    dropped: std::mem::take(&mut sub.dropped),
                }
            }
            Request::Info => Response::Info(Info {
                shards: vec![self.stats()],
            }),
            Request::Snapshot => return Err(Error::PersistenceOff),
        })
    }
}

// ------------------------------------------------------------------------------------------
// Operations
// ------------------------------------------------------------------------------------------

/// Which version a CAS expects.
#[derive(Clone, Copy, Debug)]
enum VersionPick {
    /// 0: only if absent.
    Zero,
    /// The key's current version, per the model (a version seen earlier if absent).
    Current,
    /// A version the shard returned earlier (usually stale).
    Earlier(Index),
    /// Anything.
    Other(u64),
}

/// Which subscription FETCH / UNSUBSCRIBE name.
#[derive(Clone, Copy, Debug)]
enum SubPick {
    /// One the shard returned earlier (perhaps unsubscribed since).
    Known(Index),
    Bogus(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Ping,
    Get(Bytes),
    Set {
        key: Bytes,
        value: Bytes,
        ttl_ms: Option<u64>,
        condition: SetCondition,
        keep_ttl: bool,
    },
    Del(Bytes),
    Exists(Bytes),
    Cas {
        key: Bytes,
        expected: VersionPick,
        value: Bytes,
        ttl_ms: Option<u64>,
    },
    Incr {
        key: Bytes,
        delta: i64,
    },
    Expire {
        key: Bytes,
        ttl_ms: u64,
    },
    Ttl(Bytes),
    Persist(Bytes),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    /// One SCAN call from an arbitrary cursor.
    ScanPage {
        cursor: Bytes,
        prefix: Bytes,
        count: u32,
    },
    /// A whole scan, cursor after cursor, with nothing in between.
    ScanAll {
        prefix: Bytes,
        count: u32,
    },
    /// The first page of a scan whose next pages come with `ScanNext`, interleaved with
    /// whatever other operations follow.
    ScanStart {
        prefix: Bytes,
        count: u32,
    },
    ScanNext,
    Subscribe(Bytes),
    Unsubscribe(SubPick),
    /// PUBLISH of each message in turn.
    Publish {
        topic: Bytes,
        messages: Vec<Bytes>,
    },
    Fetch {
        subscriber: SubPick,
        max: u32,
        wait_ms: u64,
    },
    PollReady,
    Info,
    /// Moves the clock forward.
    Advance(u64),
    ExpireDue(usize),
}

/// What the operation strategies draw from.
#[derive(Clone, Copy)]
struct Profile {
    key_bytes_max: usize,
    value_bytes_max: usize,
    /// Relative weight of arbitrary bytes against the fixed pools.
    raw_weight: u32,
    /// Longest arbitrary key / value / message drawn.
    raw_len: usize,
    /// A value this long is drawn now and then (large entries for the memory tests).
    big_value_len: usize,
    /// Whether numbers (TTLs, counts, deltas, budgets) may be anything at all.
    wild_numbers: bool,
    ops_max: usize,
}

fn bytes_from(pool: &'static [&'static [u8]]) -> BoxedStrategy<Bytes> {
    prop::sample::select(pool)
        .prop_map(Bytes::from_static)
        .boxed()
}

fn raw_bytes(len: usize) -> BoxedStrategy<Bytes> {
    prop::collection::vec(any::<u8>(), 0..=len)
        .prop_map(Bytes::from)
        .boxed()
}

fn key_strategy(p: Profile) -> BoxedStrategy<Bytes> {
    prop_oneof![
        30 => bytes_from(KEYS),
        1 => Just(Bytes::new()),
        1 => Just(Bytes::from(vec![b'k'; p.key_bytes_max + 1])),
        1 => Just(Bytes::from(vec![b'a'; p.key_bytes_max])),
        p.raw_weight => raw_bytes(p.raw_len),
    ]
    .boxed()
}

fn value_strategy(p: Profile) -> BoxedStrategy<Bytes> {
    prop_oneof![
        20 => bytes_from(VALUES),
        2 => (-1000i64..1000).prop_map(|n| Bytes::from(n.to_string())),
        1 => Just(Bytes::from(vec![b'v'; p.value_bytes_max])),
        1 => Just(Bytes::from(vec![b'v'; p.value_bytes_max + 1])),
        1 => Just(Bytes::from(vec![b'9'; p.big_value_len])),
        p.raw_weight => raw_bytes(p.raw_len),
    ]
    .boxed()
}

fn prefix_strategy(p: Profile) -> BoxedStrategy<Bytes> {
    prop_oneof![
        3 => Just(Bytes::new()),
        3 => Just(Bytes::from_static(b"a")),
        10 => bytes_from(PREFIXES),
        1 => Just(Bytes::from(vec![b'a'; p.key_bytes_max + 1])),
        p.raw_weight => raw_bytes(p.raw_len.min(4)),
    ]
    .boxed()
}

fn cursor_strategy(p: Profile) -> BoxedStrategy<Bytes> {
    prop_oneof![
        3 => Just(Bytes::new()),
        10 => bytes_from(KEYS),
        2 => bytes_from(PREFIXES),
        1 => Just(Bytes::from(vec![b'z'; p.key_bytes_max + 1])),
        p.raw_weight => raw_bytes(p.raw_len),
    ]
    .boxed()
}

fn topic_strategy(p: Profile) -> BoxedStrategy<Bytes> {
    prop_oneof![
        // Mostly one topic, so that queues overflow.
        12 => Just(Bytes::from_static(TOPICS[0])),
        8 => bytes_from(TOPICS),
        1 => Just(Bytes::new()),
        1 => Just(Bytes::from(vec![b't'; p.key_bytes_max + 1])),
        p.raw_weight => raw_bytes(p.raw_len),
    ]
    .boxed()
}

fn message_strategy(p: Profile) -> BoxedStrategy<Bytes> {
    prop_oneof![
        10 => raw_bytes(12),
        1 => Just(Bytes::from(vec![b'm'; p.value_bytes_max + 1])),
        p.raw_weight => raw_bytes(p.raw_len),
    ]
    .boxed()
}

fn ttl_strategy(p: Profile) -> BoxedStrategy<u64> {
    let wild = if p.wild_numbers { 2 } else { 0 };
    prop_oneof![
        4 => 1..40u64,
        4 => 40..5_000u64,
        2 => 5_000..1_000_000u64,
        1 => Just(0),
        1 => Just(limits::TTL_MS_MAX),
        1 => Just(limits::TTL_MS_MAX + 1),
        wild => any::<u64>(),
    ]
    .boxed()
}

fn option_ttl_strategy(p: Profile) -> BoxedStrategy<Option<u64>> {
    prop_oneof![
        3 => Just(None),
        2 => ttl_strategy(p).prop_map(Some),
    ]
    .boxed()
}

fn delta_strategy() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => Just(1i64),
        2 => Just(-1i64),
        1 => Just(0i64),
        3 => -100i64..100,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX - 1),
        1 => Just(i64::MIN + 1),
        1 => any::<i64>(),
    ]
    .boxed()
}

fn count_strategy(p: Profile) -> BoxedStrategy<u32> {
    let wild = if p.wild_numbers { 2 } else { 0 };
    prop_oneof![
        6 => 1..4u32,
        1 => Just(0),
        1 => Just(100),
        1 => Just(limits::SCAN_COUNT_MAX),
        1 => Just(limits::SCAN_COUNT_MAX + 1),
        wild => any::<u32>(),
    ]
    .boxed()
}

fn advance_strategy(p: Profile) -> BoxedStrategy<u64> {
    let wild = if p.wild_numbers { 1 } else { 0 };
    prop_oneof![
        4 => 0..5u64,
        4 => 5..60u64,
        2 => 60..10_000u64,
        1 => Just(limits::TTL_MS_MAX),
        wild => any::<u64>(),
    ]
    .boxed()
}

fn version_pick() -> BoxedStrategy<VersionPick> {
    prop_oneof![
        2 => Just(VersionPick::Zero),
        5 => Just(VersionPick::Current),
        2 => any::<Index>().prop_map(VersionPick::Earlier),
        1 => any::<u64>().prop_map(VersionPick::Other),
    ]
    .boxed()
}

fn sub_pick() -> BoxedStrategy<SubPick> {
    prop_oneof![
        6 => any::<Index>().prop_map(SubPick::Known),
        1 => any::<u64>().prop_map(SubPick::Bogus),
    ]
    .boxed()
}

fn condition_strategy() -> BoxedStrategy<SetCondition> {
    prop_oneof![
        3 => Just(SetCondition::Always),
        1 => Just(SetCondition::IfAbsent),
        1 => Just(SetCondition::IfPresent),
    ]
    .boxed()
}

fn op_strategy(p: Profile) -> BoxedStrategy<Op> {
    let key = || key_strategy(p);
    let value = || value_strategy(p);
    let budget = if p.wild_numbers {
        prop_oneof![0..5usize, any::<usize>()].boxed()
    } else {
        (0..5usize).boxed()
    };
    prop_oneof![
        1 => Just(Op::Ping),
        8 => key().prop_map(Op::Get),
        16 => (key(), value(), option_ttl_strategy(p), condition_strategy(), any::<bool>())
            .prop_map(|(key, value, ttl_ms, condition, keep_ttl)| Op::Set {
                key,
                value,
                ttl_ms,
                condition,
                keep_ttl,
            }),
        4 => key().prop_map(Op::Del),
        3 => key().prop_map(Op::Exists),
        8 => (key(), version_pick(), value(), option_ttl_strategy(p))
            .prop_map(|(key, expected, value, ttl_ms)| Op::Cas {
                key,
                expected,
                value,
                ttl_ms,
            }),
        6 => (key(), delta_strategy()).prop_map(|(key, delta)| Op::Incr { key, delta }),
        5 => (key(), ttl_strategy(p)).prop_map(|(key, ttl_ms)| Op::Expire { key, ttl_ms }),
        3 => key().prop_map(Op::Ttl),
        3 => key().prop_map(Op::Persist),
        3 => prop::collection::vec(key(), 0..5).prop_map(Op::MGet),
        6 => prop::collection::vec((key(), value()), 0..7).prop_map(Op::MSet),
        3 => (cursor_strategy(p), prefix_strategy(p), count_strategy(p))
            .prop_map(|(cursor, prefix, count)| Op::ScanPage { cursor, prefix, count }),
        3 => (prefix_strategy(p), count_strategy(p))
            .prop_map(|(prefix, count)| Op::ScanAll { prefix, count }),
        1 => (prefix_strategy(p), count_strategy(p))
            .prop_map(|(prefix, count)| Op::ScanStart { prefix, count }),
        3 => Just(Op::ScanNext),
        2 => topic_strategy(p).prop_map(Op::Subscribe),
        1 => sub_pick().prop_map(Op::Unsubscribe),
        6 => (topic_strategy(p), prop::collection::vec(message_strategy(p), 1..7))
            .prop_map(|(topic, messages)| Op::Publish { topic, messages }),
        3 => (sub_pick(), prop_oneof![0..6u32, any::<u32>()], any::<u64>())
            .prop_map(|(subscriber, max, wait_ms)| Op::Fetch { subscriber, max, wait_ms }),
        1 => Just(Op::PollReady),
        1 => Just(Op::Info),
        6 => advance_strategy(p).prop_map(Op::Advance),
        2 => budget.prop_map(Op::ExpireDue),
    ]
    .boxed()
}

fn ops_strategy(p: Profile) -> BoxedStrategy<Vec<Op>> {
    prop::collection::vec(op_strategy(p), 1..=p.ops_max).boxed()
}

// ------------------------------------------------------------------------------------------
// The runner: applies operations to the shard and the model, and compares
// ------------------------------------------------------------------------------------------

struct ActiveScan {
    prefix: Bytes,
    count: u32,
    cursor: Bytes,
    returned: Vec<Bytes>,
    /// Keys live (per the model) at every step since the scan started: each must be returned.
    stable: BTreeSet<Bytes>,
}

struct Runner {
    shard: Shard,
    model: Model,
    now: u64,
    /// Versions the shard returned (for CAS).
    versions: Vec<u64>,
    /// Subscriber ids the shard returned.
    subscribers: Vec<SubscriberId>,
    scan: Option<ActiveScan>,
    /// Keys the model knows, to peek at after every step.
    known_keys: BTreeSet<Vec<u8>>,
    step: usize,
}

/// `got` is `want`, except that InvalidArgument texts are prose (any non-empty text matches).
fn same_response(got: &Response, want: &Response) -> bool {
    match (got, want) {
        (
            Response::Error(Error::InvalidArgument(text)),
            Response::Error(Error::InvalidArgument(_)),
        ) => !text.is_empty(),
        _ => got == want,
    }
}

impl Runner {
    fn new(index: u32, config: Config, now: u64) -> Self {
        let shard = Shard::new(index, config.clone());
        let model = Model::new(index, config);
        Runner {
            shard,
            model,
            now,
            versions: Vec::new(),
            subscribers: Vec::new(),
            scan: None,
            known_keys: KEYS.iter().map(|k| k.to_vec()).collect(),
            step: 0,
        }
    }

    fn lru(&self) -> bool {
        self.model.lru()
    }

    fn run(&mut self, ops: &[Op]) {
        self.check_invariants();
        for op in ops {
            self.step += 1;
            self.apply(op);
            self.check_invariants();
        }
        // Finish any scan in progress so its completeness is checked too.
        while self.scan.is_some() {
            self.scan_next();
            self.check_invariants();
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Ping => {
                self.request(Request::Ping);
            }
            Op::Get(key) => {
                self.request(Request::Get { key: key.clone() });
            }
            Op::Set {
                key,
                value,
                ttl_ms,
                condition,
                keep_ttl,
            } => {
                self.request(Request::Set {
                    key: key.clone(),
                    value: value.clone(),
                    options: SetOptions {
                        ttl_ms: *ttl_ms,
                        condition: *condition,
                        keep_ttl: *keep_ttl,
                    },
                });
            }
            Op::Del(key) => {
                self.request(Request::Delete { key: key.clone() });
            }
            Op::Exists(key) => {
                self.request(Request::Exists { key: key.clone() });
            }
            Op::Cas {
                key,
                expected,
                value,
                ttl_ms,
            } => {
                let expected_version = self.pick_version(key, *expected);
                self.request(Request::Cas {
                    key: key.clone(),
                    expected_version,
                    value: value.clone(),
                    ttl_ms: *ttl_ms,
                });
            }
            Op::Incr { key, delta } => {
                self.request(Request::Incr {
                    key: key.clone(),
                    delta: *delta,
                });
            }
            Op::Expire { key, ttl_ms } => {
                self.request(Request::Expire {
                    key: key.clone(),
                    ttl_ms: *ttl_ms,
                });
            }
            Op::Ttl(key) => {
                self.request(Request::Ttl { key: key.clone() });
            }
            Op::Persist(key) => {
                self.request(Request::Persist { key: key.clone() });
            }
            Op::MGet(keys) => {
                self.request(Request::MGet { keys: keys.clone() });
            }
            Op::MSet(pairs) => {
                self.request(Request::MSet {
                    pairs: pairs.clone(),
                });
            }
            Op::ScanPage {
                cursor,
                prefix,
                count,
            } => {
                self.scan_page(cursor, prefix, *count);
            }
            Op::ScanAll { prefix, count } => self.scan_all(prefix, *count),
            Op::ScanStart { prefix, count } => {
                let stable = self
                    .model
                    .live_keys_with_prefix(prefix, self.now)
                    .into_iter()
                    .collect();
                self.scan = Some(ActiveScan {
                    prefix: prefix.clone(),
                    count: *count,
                    cursor: Bytes::new(),
                    returned: Vec::new(),
                    stable,
                });
                self.scan_next();
            }
            Op::ScanNext => self.scan_next(),
            Op::Subscribe(topic) => {
                self.request(Request::Subscribe {
                    topic: topic.clone(),
                });
            }
            Op::Unsubscribe(pick) => {
                let subscriber = self.pick_subscriber(*pick);
                self.request(Request::Unsubscribe { subscriber });
            }
            Op::Publish { topic, messages } => {
                for message in messages {
                    self.request(Request::Publish {
                        topic: topic.clone(),
                        message: message.clone(),
                    });
                }
            }
            Op::Fetch {
                subscriber,
                max,
                wait_ms,
            } => {
                let subscriber = self.pick_subscriber(*subscriber);
                self.request(Request::Fetch {
                    subscriber,
                    max: *max,
                    wait_ms: *wait_ms,
                });
            }
            Op::PollReady => self.poll_ready(),
            Op::Info => {
                self.request(Request::Info);
            }
            Op::Advance(ms) => {
                self.now = self.now.saturating_add(*ms);
            }
            Op::ExpireDue(budget) => {
                let got = self.shard.expire_due(self.now, *budget);
                let want = self.model.expire_due(self.now, *budget);
                assert_eq!(got, want, "step {}: expire_due({budget})", self.step);
            }
        }
        if self.lru() {
            // Keep every physical entry live in LRU mode, so that `peek` tells exactly which
            // keys an eviction removed.
            let got = self.shard.expire_due(self.now, usize::MAX);
            let want = self.model.expire_due(self.now, usize::MAX);
            assert_eq!(got, want, "step {}: expire_due(all)", self.step);
        }
        if let Some(scan) = &mut self.scan {
            let live = self.model.live_keys_with_prefix(&scan.prefix, self.now);
            scan.stable.retain(|key| live.contains(key));
        }
    }

    fn pick_version(&self, key: &[u8], pick: VersionPick) -> u64 {
        let earlier = |index: Option<Index>| match (&self.versions[..], index) {
            ([], _) => 1,
            (versions, Some(index)) => *index.get(versions),
            (versions, None) => *versions.last().expect("non-empty"),
        };
        match pick {
            VersionPick::Zero => 0,
            VersionPick::Current => match self.model.live_value(key, self.now) {
                Some((_, version)) => version,
                None => earlier(None),
            },
            VersionPick::Earlier(index) => earlier(Some(index)),
            VersionPick::Other(version) => version,
        }
    }

    fn pick_subscriber(&self, pick: SubPick) -> SubscriberId {
        match pick {
            SubPick::Known(index) if !self.subscribers.is_empty() => *index.get(&self.subscribers),
            SubPick::Known(_) => SubscriberId::new(self.model.index, 1),
            SubPick::Bogus(raw) => SubscriberId(raw),
        }
    }

    /// Sends `request` to the shard and the model and compares the answers.
    fn request(&mut self, request: Request) -> Response {
        let evicted_before = self.shard.stats().evicted_keys;
        let got = self.shard.handle(request.clone(), self.now);
        let want = self.model.apply(&request, self.now);
        assert!(
            same_response(&got, &want),
            "step {} at now={}: {request:?}\n  shard: {got:?}\n  model: {want:?}",
            self.step,
            self.now,
        );
        self.remember(&request, &got);
        if self.lru() {
            self.reconcile_evictions(&request, &got, evicted_before);
        }
        got
    }

    fn remember(&mut self, request: &Request, response: &Response) {
        match response {
            Response::Value { version, .. }
            | Response::Stored { version }
            | Response::Integer { version, .. }
            | Response::VersionMismatch { current: version } => self.versions.push(*version),
            Response::Values(values) => self
                .versions
                .extend(values.iter().flatten().map(|(_, version)| *version)),
            Response::Subscribed { subscriber } => self.subscribers.push(*subscriber),
            _ => {}
        }
        match request {
            Request::Set { key, .. } | Request::Cas { key, .. } | Request::Incr { key, .. } => {
                self.known_keys.insert(key.to_vec());
            }
            Request::MSet { pairs } => {
                self.known_keys
                    .extend(pairs.iter().map(|(key, _)| key.to_vec()));
            }
            _ => {}
        }
    }

    /// LRU mode: learns which keys the shard evicted during the last request, and checks that
    /// the evictions were legitimate.
    fn reconcile_evictions(&mut self, request: &Request, response: &Response, before: u64) {
        let evicted = self.shard.stats().evicted_keys - before;
        let now = self.now;
        let lost: Vec<Vec<u8>> = self
            .model
            .entries
            .iter()
            // (A key written at the very end of time can be born expired: that is expiry,
            // which `expire_due` accounts for right after, not eviction.)
            .filter(|(key, entry)| is_live(entry, now) && self.shard.peek(key, now).is_none())
            .map(|(key, _)| key.clone())
            .collect();
        assert_eq!(
            lost.len() as u64,
            evicted,
            "step {}: {request:?}: keys the shard lost {lost:?} vs. evicted_keys +{evicted}",
            self.step
        );
        if evicted == 0 {
            return;
        }
        assert!(
            self.model.room_needed && !matches!(response, Response::Error(_)),
            "step {}: {request:?} evicted {lost:?} without needing room ({response:?})",
            self.step
        );
        let written: Vec<&[u8]> = match request {
            Request::Set { key, .. } | Request::Cas { key, .. } | Request::Incr { key, .. } => {
                vec![&key[..]]
            }
            Request::MSet { pairs } => pairs.iter().map(|(key, _)| &key[..]).collect(),
            _ => Vec::new(),
        };
        for key in &lost {
            assert!(
                !written.contains(&&key[..]),
                "step {}: {request:?} evicted its own key {key:?}",
                self.step
            );
        }
        let largest_lost = lost
            .iter()
            .map(|key| cost(key, &self.model.entries[key].value))
            .max()
            .expect("non-empty");
        for key in &lost {
            self.model.entries.remove(key);
        }
        self.model.counters.evicted_keys += evicted;
        let used = self.model.memory_used();
        assert!(
            used + largest_lost > self.model.config.memory_bytes_limit,
            "step {}: {request:?} evicted more than needed: {lost:?}, {used} bytes used of {}",
            self.step,
            self.model.config.memory_bytes_limit
        );
    }

    /// One SCAN call; checks its page against the model. `None` if the call was invalid.
    fn scan_page(
        &mut self,
        cursor: &Bytes,
        prefix: &Bytes,
        count: u32,
    ) -> Option<(Vec<Bytes>, Bytes)> {
        let request = Request::Scan {
            cursor: cursor.clone(),
            prefix: prefix.clone(),
            count,
        };
        let got = self.shard.handle(request.clone(), self.now);
        let effective = match self.model.scan_check(cursor, prefix, count) {
            Err(error) => {
                let want = Response::Error(error);
                assert!(
                    same_response(&got, &want),
                    "step {}: {request:?}\n  shard: {got:?}\n  model: {want:?}",
                    self.step
                );
                return None;
            }
            Ok(effective) => effective,
        };
        let Response::Keys { keys, cursor: next } = got else {
            panic!("step {}: {request:?} answered {got:?}", self.step);
        };
        // Every live matching key after the cursor, ascending (the cursor is exclusive; a cursor
        // before the prefix starts at the prefix).
        let expected: Vec<Bytes> = self
            .model
            .live_keys_with_prefix(prefix, self.now)
            .into_iter()
            .filter(|key| cursor.is_empty() || key[..] > cursor[..])
            .collect();
        let page_len = expected.len().min(effective);
        assert_eq!(
            keys,
            expected[..page_len],
            "step {} at now={}: {request:?}: page",
            self.step,
            self.now
        );
        if next.is_empty() {
            assert_eq!(
                keys.len(),
                expected.len(),
                "step {}: {request:?}: scan ended early (model has {expected:?})",
                self.step
            );
        } else {
            // (The shard's work budget per call is far above the key counts used here, so a
            // page only stops early when it is full.)
            assert_eq!(
                keys.len(),
                effective,
                "step {}: {request:?}: short page with a cursor",
                self.step
            );
            assert_eq!(
                Some(&next),
                keys.last(),
                "step {}: {request:?}: the cursor is the last key of the page",
                self.step
            );
        }
        Some((keys, next))
    }

    fn scan_all(&mut self, prefix: &Bytes, count: u32) {
        let mut cursor = Bytes::new();
        let mut all: Vec<Bytes> = Vec::new();
        for _ in 0..10_000 {
            let Some((keys, next)) = self.scan_page(&cursor, prefix, count) else {
                return;
            };
            all.extend(keys);
            if next.is_empty() {
                let expected = self.model.live_keys_with_prefix(prefix, self.now);
                assert_eq!(all, expected, "step {}: full SCAN of {prefix:?}", self.step);
                return;
            }
            cursor = next;
        }
        panic!("step {}: SCAN of {prefix:?} does not terminate", self.step);
    }

    fn scan_next(&mut self) {
        let Some(scan) = self.scan.take() else {
            return;
        };
        let Some((keys, next)) = self.scan_page(&scan.cursor, &scan.prefix, scan.count) else {
            return; // invalid arguments: the scan is over
        };
        let mut scan = scan;
        if let (Some(last), Some(first)) = (scan.returned.last(), keys.first()) {
            assert!(first > last, "step {}: scan went backwards", self.step);
        }
        scan.returned.extend(keys);
        if next.is_empty() {
            let returned: BTreeSet<Bytes> = scan.returned.iter().cloned().collect();
            let missing: Vec<&Bytes> = scan.stable.difference(&returned).collect();
            assert!(
                missing.is_empty(),
                "step {}: interleaved scan of {:?} missed keys live throughout: {missing:?}",
                self.step,
                scan.prefix
            );
            return;
        }
        scan.cursor = next;
        self.scan = Some(scan);
    }

    fn poll_ready(&mut self) {
        let mut drained = BTreeSet::new();
        for _ in 0..100_000 {
            match self.shard.poll_ready_subscribers() {
                Some(id) => {
                    drained.insert(id);
                }
                None => break,
            }
        }
        let ready = std::mem::take(&mut self.model.ready);
        for id in &drained {
            assert!(
                ready.contains(id),
                "step {}: poll_ready_subscribers gave {id:?}, which received no message since the last drain",
                self.step
            );
        }
        for id in &ready {
            if self.model.subscribers.contains_key(id) {
                assert!(
                    drained.contains(id),
                    "step {}: poll_ready_subscribers missed {id:?}",
                    self.step
                );
            }
        }
    }

    fn check_invariants(&mut self) {
        let step = self.step;
        let now = self.now;
        let stats = self.shard.stats();
        assert_eq!(stats, self.model.stats(), "step {step}: stats()");
        assert_eq!(
            self.shard.len(),
            self.model.entries.len(),
            "step {step}: len()"
        );
        assert_eq!(self.shard.is_empty(), self.model.entries.is_empty());
        assert_eq!(self.shard.memory_bytes_used(), stats.memory_bytes_used);
        assert!(
            stats.memory_bytes_used <= stats.memory_bytes_limit,
            "step {step}: {} bytes used of {}",
            stats.memory_bytes_used,
            stats.memory_bytes_limit
        );
        assert_eq!(
            self.shard.next_expiry_ms(),
            self.model.next_expiry(),
            "step {step}: next_expiry_ms()"
        );
        for key in &self.known_keys {
            assert_eq!(
                self.shard.peek(key, now),
                self.model.live_value(key, now),
                "step {step} at now={now}: peek({:?})",
                Bytes::from(key.clone())
            );
        }
        for (id, sub) in &self.model.subscribers {
            assert_eq!(
                self.shard.has_messages(*id),
                Some(!sub.queue.is_empty() || sub.dropped > 0),
                "step {step}: has_messages({id:?})"
            );
        }
        for id in &self.subscribers {
            if !self.model.subscribers.contains_key(id) {
                assert_eq!(
                    self.shard.has_messages(*id),
                    None,
                    "step {step}: has_messages of a removed subscriber"
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Configurations and the property tests
// ------------------------------------------------------------------------------------------

fn proptest_config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    }
}

const SMALL: Profile = Profile {
    key_bytes_max: 8,
    value_bytes_max: 24,
    raw_weight: 1,
    raw_len: 10,
    big_value_len: 24,
    wild_numbers: false,
    ops_max: 120,
};

fn small_config() -> Config {
    Config {
        key_bytes_max: SMALL.key_bytes_max,
        value_bytes_max: SMALL.value_bytes_max,
        subscriber_queue_messages_max: 4,
        subscriber_queue_bytes_max: 24,
        subscribers_max: 5,
        ..Config::default()
    }
}

const MEMORY: Profile = Profile {
    value_bytes_max: 400,
    big_value_len: 300,
    ..SMALL
};

proptest! {
    #![proptest_config(proptest_config(256, 0x5EED_0001))]

    /// Every operation, random clock, large budget: exact agreement with the model.
    #[test]
    fn model_every_operation(ops in ops_strategy(SMALL)) {
        let mut runner = Runner::new(7, small_config(), T0);
        runner.run(&ops);
    }
}

proptest! {
    #![proptest_config(proptest_config(256, 0x5EED_0002))]

    /// A budget of a few entries and no eviction: the model predicts every OUT_OF_MEMORY
    /// (and a refused write, MSET included, changes nothing).
    #[test]
    fn model_memory_limit_without_eviction(
        limit in prop_oneof![1 => 0..200u64, 6 => 200..1_500u64],
        ops in ops_strategy(MEMORY),
    ) {
        let config = Config {
            memory_bytes_limit: limit,
            value_bytes_max: MEMORY.value_bytes_max,
            ..small_config()
        };
        let mut runner = Runner::new(0, config, T0);
        runner.run(&ops);
    }
}

proptest! {
    #![proptest_config(proptest_config(256, 0x5EED_0003))]

    /// A budget of a few entries with approximate LRU: every write that fits the whole budget
    /// succeeds, usage stays within budget, surviving keys are exactly the model's, and every
    /// lost key is accounted for as an eviction that was needed and spared the written key.
    #[test]
    fn model_lru_eviction(
        limit in prop_oneof![1 => 0..200u64, 6 => 200..1_500u64],
        seed in any::<u64>(),
        ops in ops_strategy(MEMORY),
    ) {
        let config = Config {
            memory_bytes_limit: limit,
            eviction: Eviction::Lru,
            value_bytes_max: MEMORY.value_bytes_max,
            seed,
            ..small_config()
        };
        let mut runner = Runner::new(1, config, T0);
        runner.run(&ops);
    }
}

const WILD: Profile = Profile {
    key_bytes_max: 16,
    value_bytes_max: 32,
    raw_weight: 30,
    raw_len: 20,
    big_value_len: 32,
    wild_numbers: true,
    ops_max: 80,
};

proptest! {
    #![proptest_config(proptest_config(192, 0x5EED_0004))]

    /// Arbitrary bytes and numbers everywhere, a clock anywhere in `u64`: no panic, and still
    /// the model's answers.
    #[test]
    fn robustness_arbitrary_bytes(
        index in 0..limits::SHARDS_MAX,
        start in prop_oneof![Just(0u64), Just(T0), Just(u64::MAX - 100_000), any::<u64>()],
        limit in prop_oneof![Just(64 * 1024 * 1024u64), 0..2_000u64],
        lru in any::<bool>(),
        queue in (0..6usize, 0..64usize, 0..6usize),
        ops in ops_strategy(WILD),
    ) {
        let (queue_messages, queue_bytes, subscribers_max) = queue;
        let config = Config {
            memory_bytes_limit: limit,
            eviction: if lru { Eviction::Lru } else { Eviction::NoEviction },
            key_bytes_max: WILD.key_bytes_max,
            value_bytes_max: WILD.value_bytes_max,
            subscriber_queue_messages_max: queue_messages,
            subscriber_queue_bytes_max: queue_bytes,
            subscribers_max,
            // The shard-wide cap has its own unit test (topics.rs); the model mirrors per-subscriber limits.
            pubsub_queue_bytes_max: usize::MAX,
            seed: u64::from(index),
        };
        let mut runner = Runner::new(index, config, start);
        runner.run(&ops);
    }
}

// ------------------------------------------------------------------------------------------
// A few fixed scenarios the random tests reach only rarely
// ------------------------------------------------------------------------------------------

#[test]
fn batches_over_the_limit_are_refused() {
    let mut runner = Runner::new(0, small_config(), T0);
    let keys = vec![Bytes::from_static(b"a"); limits::BATCH_KEYS_MAX + 1];
    runner.request(Request::MGet { keys });
    let pairs =
        vec![(Bytes::from_static(b"a"), Bytes::from_static(b"1")); limits::BATCH_KEYS_MAX + 1];
    runner.request(Request::MSet { pairs });
    runner.check_invariants();
    let pairs = vec![(Bytes::from_static(b"a"), Bytes::from_static(b"1")); limits::BATCH_KEYS_MAX];
    runner.request(Request::MSet { pairs });
    runner.check_invariants();
}

#[test]
fn mset_is_all_or_nothing_and_last_value_wins() {
    let config = Config {
        memory_bytes_limit: 3 * ENTRY_OVERHEAD_BYTES + 7,
        ..small_config()
    };
    let mut runner = Runner::new(0, config, T0);
    let pair = |k: &'static [u8], v: &'static [u8]| (Bytes::from_static(k), Bytes::from_static(v));
    // Three unique keys costing 130 + 130 + 131 bytes fit exactly; the duplicate does not
    // count twice. Keys take versions in the order of their last occurrence: b, a, k1.
    let response = runner.request(Request::MSet {
        pairs: vec![
            pair(b"a", b"1"),
            pair(b"b", b"2"),
            pair(b"a", b"3"),
            pair(b"k1", b"4"),
        ],
    });
    assert_eq!(response, Response::Ok);
    runner.check_invariants();
    assert_eq!(
        runner.shard.peek(b"a", T0),
        Some((Bytes::from_static(b"3"), 2))
    );
    // One more key does not fit: nothing changes, not even the keys that would fit.
    let response = runner.request(Request::MSet {
        pairs: vec![pair(b"a", b"5"), pair(b"ba", b"6")],
    });
    assert!(matches!(
        response,
        Response::Error(Error::OutOfMemory { .. })
    ));
    runner.check_invariants();
    assert_eq!(
        runner.shard.peek(b"a", T0),
        Some((Bytes::from_static(b"3"), 2))
    );
}

#[test]
fn incr_at_the_edges_of_i64() {
    let mut runner = Runner::new(0, small_config(), T0);
    let key = Bytes::from_static(b"n");
    runner.known_keys.insert(b"n".to_vec());
    for (value, delta) in [
        (&b"9223372036854775806"[..], 1),
        (b"9223372036854775807", 1),
        (b"-9223372036854775808", -1),
        (b"-9223372036854775807", -1),
        (b"+5", -5),
        (b"-0", 0),
        (b"5 ", 1),
        (b"", 1),
    ] {
        runner.request(Request::Set {
            key: key.clone(),
            value: Bytes::from_static(value),
            options: SetOptions::default(),
        });
        runner.request(Request::Incr {
            key: key.clone(),
            delta,
        });
        runner.check_invariants();
    }
}

// ------------------------------------------------------------------------------------------
// SCAN across several shards (`merge_scan_pages`)
// ------------------------------------------------------------------------------------------

/// A change made between two rounds of a scattered scan.
#[derive(Clone, Debug)]
enum Mutation {
    Set(Bytes, Option<u64>),
    Del(Bytes),
    Advance(u64),
}

fn valid_key_strategy() -> BoxedStrategy<Bytes> {
    prop_oneof![
        3 => bytes_from(KEYS),
        2 => prop::collection::vec(any::<u8>(), 1..=6).prop_map(Bytes::from),
    ]
    .boxed()
}

fn mutation_strategy() -> BoxedStrategy<Mutation> {
    prop_oneof![
        3 => (valid_key_strategy(), prop::option::of(1..100u64))
            .prop_map(|(key, ttl)| Mutation::Set(key, ttl)),
        2 => valid_key_strategy().prop_map(Mutation::Del),
        1 => (0..60u64).prop_map(Mutation::Advance),
    ]
    .boxed()
}

/// Shards of one instance, each key on the shard `shard_for_key` names.
struct Instance {
    shards: Vec<Shard>,
    /// Every key ever written, to list the live ones with `peek`.
    written: BTreeSet<Bytes>,
    now: u64,
}

impl Instance {
    fn shard_of(&mut self, key: &[u8]) -> &mut Shard {
        let index = veddb_wire::shard_for_key(key, self.shards.len() as u32);
        &mut self.shards[index as usize]
    }

    fn apply(&mut self, mutation: &Mutation) {
        let now = self.now;
        match mutation {
            Mutation::Set(key, ttl_ms) => {
                let options = SetOptions {
                    ttl_ms: *ttl_ms,
                    ..SetOptions::default()
                };
                let value = Bytes::from_static(b"v");
                self.shard_of(key)
                    .set(key.clone(), value, options, now)
                    .expect("SET");
                self.written.insert(key.clone());
            }
            Mutation::Del(key) => {
                self.shard_of(key).delete(key, now).expect("DEL");
            }
            Mutation::Advance(ms) => self.now += ms,
        }
    }

    fn live_with_prefix(&self, prefix: &[u8]) -> Vec<Bytes> {
        let shard_count = self.shards.len() as u32;
        self.written
            .iter()
            .filter(|key| key.starts_with(prefix))
            .filter(|key| {
                let index = veddb_wire::shard_for_key(key, shard_count) as usize;
                self.shards[index].peek(key, self.now).is_some()
            })
            .cloned()
            .collect()
    }
}

proptest! {
    #![proptest_config(proptest_config(256, 0x5EED_0005))]

    /// A scan scattered over several shards and merged with `merge_scan_pages`, with writes
    /// between its rounds: pages are ascending, never repeat a key, hold every live key up to
    /// their cursor, and the whole scan returns every key that was live throughout.
    #[test]
    fn scan_across_shards(
        shard_count in 1..5u32,
        initial in prop::collection::vec((valid_key_strategy(), prop::option::of(1..100u64)), 0..30),
        prefix in prop_oneof![Just(Bytes::new()), bytes_from(PREFIXES), raw_bytes(2)],
        count in prop_oneof![1..5u32, Just(0)],
        between_rounds in prop::collection::vec(prop::collection::vec(mutation_strategy(), 0..3), 0..30),
    ) {
        let mut instance = Instance {
            shards: (0..shard_count).map(|i| Shard::new(i, Config::default())).collect(),
            written: BTreeSet::new(),
            now: T0,
        };
        for (key, ttl_ms) in initial {
            instance.apply(&Mutation::Set(key, ttl_ms));
        }
        instance.now += 50;
        let mut stable: BTreeSet<Bytes> = instance.live_with_prefix(&prefix).into_iter().collect();
        let effective = if count == 0 { limits::SCAN_COUNT_DEFAULT } else { count } as usize;
        let mut cursor = Bytes::new();
        let mut returned: Vec<Bytes> = Vec::new();
        for round in 0.. {
            prop_assert!(round < 1_000, "the scan does not terminate");
            let now = instance.now;
            let pages: Vec<ScanPage> = instance
                .shards
                .iter_mut()
                .map(|shard| shard.scan(&cursor, &prefix, count, now).expect("SCAN"))
                .collect();
            let merged = merge_scan_pages(pages, count);
            prop_assert!(merged.keys.len() <= effective);
            prop_assert!(merged.keys.windows(2).all(|w| w[0] < w[1]), "page not ascending");
            if let (Some(last), Some(first)) = (returned.last(), merged.keys.first()) {
                prop_assert!(first > last, "key {first:?} after {last:?}: repeated or backwards");
            }
            // Every live matching key after the cursor and up to the resume point is on the page.
            let expected: Vec<Bytes> = instance
                .live_with_prefix(&prefix)
                .into_iter()
                .filter(|key| cursor.is_empty() || *key > cursor)
                .filter(|key| merged.resume.as_ref().is_none_or(|resume| key <= resume))
                .collect();
            prop_assert_eq!(&merged.keys, &expected, "round {} from cursor {:?}", round, cursor);
            returned.extend(merged.keys);
            let Some(resume) = merged.resume else {
                break;
            };
            prop_assert!(resume > cursor, "the cursor does not advance");
            cursor = resume;
            for mutation in between_rounds.get(round).into_iter().flatten() {
                instance.apply(mutation);
                let live: BTreeSet<Bytes> = instance.live_with_prefix(&prefix).into_iter().collect();
                stable.retain(|key| live.contains(key));
            }
        }
        let returned: BTreeSet<Bytes> = returned.into_iter().collect();
        let missing: Vec<&Bytes> = stable.difference(&returned).collect();
        prop_assert!(missing.is_empty(), "keys live throughout but not returned: {:?}", missing);
    }
}

/// Long runs of expired keys: a page may stop early (bounded work per call) with a cursor, and
/// following the cursors still returns exactly the live keys.
#[test]
fn scan_over_many_expired_keys() {
    let mut shard = Shard::new(0, Config::default());
    let mut live = Vec::new();
    for i in 0..2_000u32 {
        let key = Bytes::from(format!("e{i:05}"));
        let ttl_ms = if i % 450 == 7 {
            live.push(key.clone());
            None
        } else {
            Some(10)
        };
        let options = SetOptions {
            ttl_ms,
            ..SetOptions::default()
        };
        shard
            .set(key, Bytes::from_static(b"v"), options, T0)
            .expect("SET");
    }
    let now = T0 + 20;
    let mut cursor = Bytes::new();
    let mut returned = Vec::new();
    let mut calls = 0;
    let mut short_pages_with_cursor = 0;
    loop {
        calls += 1;
        assert!(calls < 100, "too many calls");
        let request = Request::Scan {
            cursor: cursor.clone(),
            prefix: Bytes::from_static(b"e"),
            count: 2,
        };
        let Response::Keys { keys, cursor: next } = shard.handle(request, now) else {
            panic!("SCAN failed");
        };
        assert!(keys.len() <= 2);
        returned.extend(keys.iter().cloned());
        if next.is_empty() {
            break;
        }
        assert!(next > cursor, "the cursor does not advance");
        if keys.len() < 2 {
            short_pages_with_cursor += 1;
        }
        cursor = next;
    }
    assert_eq!(returned, live);
    assert!(
        short_pages_with_cursor > 0,
        "the work budget was never reached"
    );
    // SCAN does not reclaim: all 2,000 keys are still there until expire_due runs.
    assert_eq!(shard.len(), 2_000);
    assert_eq!(shard.expire_due(now, usize::MAX), 2_000 - live.len());
    assert_eq!(shard.stats().expired_keys, (2_000 - live.len()) as u64);
}
