//! `veddb-shard`: one core's share of VedDB, with no I/O.
//!
//! A [`Shard`] owns a key-value table (binary keys and values, versions, TTLs, memory
//! accounting and optional approximate-LRU eviction) and a topic registry (subscribers with
//! bounded queues). It knows nothing of sockets, threads, runtimes or clocks: requests come in
//! through [`Shard::handle`] or the typed methods, and the current time is always an argument
//! (`now_ms`, milliseconds since the Unix epoch). That makes the whole data model testable
//! without a server, deterministic under a seed, and fuzzable.
//!
//! It must not depend on `veddb-engine`, any async runtime, or the operating system.
#![forbid(unsafe_code)]

mod config;
mod scan;
mod table;
mod topics;

pub use config::{Config, Eviction, ENTRY_OVERHEAD_BYTES};
pub use scan::{merge_scan_pages, ScanPage};
pub use table::{CasOutcome, Change, KeyArg, MadeValue, StoredEntry, ValueStore};

use std::collections::VecDeque;

use bytes::Bytes;
use veddb_wire::{limits, Error, Info, Request, Response, ShardStats, SubscriberId, Ttl};

/// One shard: the table, the topics and the counters.
pub struct Shard {
    index: u32,
    config: Config,
    table: table::Table,
    topics: topics::Topics,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    ops: u64,
    hits: u64,
    misses: u64,
    forwarded_in: u64,
}

impl Shard {
    /// A new, empty shard with index `index` (its position among the instance's shards).
    pub fn new(index: u32, config: Config) -> Self {
        assert!(
            index < limits::SHARDS_MAX,
            "shard index {index} out of range"
        );
        let table = table::Table::new(&config);
        let topics = topics::Topics::new(index, &config);
        Shard {
            index,
            config,
            table,
            topics,
            stats: Counters::default(),
        }
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies one request that routes to this shard (or this shard's part of a scattered one:
    /// MGET, MSET and SCAN apply to the keys given; INFO reports this shard only).
    pub fn handle(&mut self, request: Request, now_ms: u64) -> Response {
        match self.handle_inner(request, now_ms) {
            Ok(response) => response,
            Err(error) => Response::Error(error),
        }
    }

    fn handle_inner(&mut self, request: Request, now_ms: u64) -> Result<Response, Error> {
        Ok(match request {
            Request::Ping => Response::Pong,
            Request::Get { key } => match self.get(&key, now_ms)? {
                Some((value, version)) => Response::Value { value, version },
                None => Response::NotFound,
            },
            Request::Set {
                key,
                value,
                options,
            } => match self.set(key, value, options, now_ms)? {
                Some(version) => Response::Stored { version },
                None => Response::NotStored,
            },
            Request::Delete { key } => Response::Bool(self.delete(&key, now_ms)?),
            Request::Exists { key } => Response::Bool(self.exists(&key, now_ms)?),
            Request::Cas {
                key,
                expected_version,
                value,
                ttl_ms,
            } => match self.cas(key, expected_version, value, ttl_ms, now_ms)? {
                CasOutcome::Stored { version } => Response::Stored { version },
                CasOutcome::Mismatch { current } => Response::VersionMismatch { current },
                CasOutcome::NotFound => Response::NotFound,
            },
            Request::Incr { key, delta } => {
                let (value, version) = self.incr(key, delta, now_ms)?;
                Response::Integer { value, version }
            }
            Request::Expire { key, ttl_ms } => Response::Bool(self.expire(&key, ttl_ms, now_ms)?),
            Request::Ttl { key } => Response::Ttl(self.ttl(&key, now_ms)?),
            Request::Persist { key } => Response::Bool(self.persist(&key, now_ms)?),
            Request::MGet { keys } => Response::Values(self.mget(&keys, now_ms)?),
            Request::MSet { pairs } => {
                self.mset(pairs, now_ms)?;
                Response::Ok
            }
            Request::Scan {
                cursor,
                prefix,
                count,
            } => {
                let page = self.scan(&cursor, &prefix, count, now_ms)?;
                Response::Keys {
                    keys: page.keys,
                    cursor: page.resume.unwrap_or_default(),
                }
            }
            Request::Subscribe { topic } => Response::Subscribed {
                subscriber: self.subscribe(topic)?,
            },
            Request::Unsubscribe { subscriber } => Response::Bool(self.unsubscribe(subscriber)),
            Request::Publish { topic, message } => Response::Published {
                receivers: self.publish(&topic, message)?,
            },
            Request::Fetch {
                subscriber,
                max,
                wait_ms: _,
            } => {
                let (messages, dropped) = self.fetch(subscriber, max)?;
                Response::Messages { messages, dropped }
            }
            Request::Info => Response::Info(Info {
                shards: vec![self.stats()],
            }),
            // Snapshots are files: the engine takes them (when persistence is on).
            Request::Snapshot => return Err(Error::PersistenceOff),
        })
    }

    /// Counts a request that another core forwarded here.
    pub fn note_forwarded(&mut self) {
        self.stats.forwarded_in += 1;
    }

    // ---- key-value ------------------------------------------------------------------------

    /// The value and version of `key`, if it exists and has not expired.
    pub fn get(&mut self, key: &[u8], now_ms: u64) -> Result<Option<(Bytes, u64)>, Error> {
        self.check_key(key)?;
        self.stats.ops += 1;
        let found = self.table.get(key, now_ms);
        self.count_read(found.is_some());
        Ok(found)
    }

    /// As [`get`](Self::get), lending the value, its version and the value store's tag of it
    /// (see [`ValueStore`]) to `read` (no clone of the value's handle): for a frontend that
    /// writes the answer straight where it goes.
    pub fn get_with<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        read: impl FnOnce(&Bytes, u64, u64) -> R,
    ) -> Result<Option<R>, Error> {
        self.check_key(key)?;
        self.stats.ops += 1;
        let found = self.table.get_with(key, now_ms, read);
        self.count_read(found.is_some());
        Ok(found)
    }

    /// Writes `value`. `Ok(None)` when the NX/XX condition did not hold.
    pub fn set(
        &mut self,
        key: Bytes,
        value: Bytes,
        options: veddb_wire::SetOptions,
        now_ms: u64,
    ) -> Result<Option<u64>, Error> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        if let Some(ttl_ms) = options.ttl_ms {
            check_ttl(ttl_ms)?;
        }
        self.stats.ops += 1;
        self.table.set(key, value, options, now_ms)
    }

    /// As [`set`](Self::set), with the value made by `value` (of `value_len` bytes) only once
    /// every check passed and the write will happen: a frontend that copies the value straight
    /// into where it is kept copies nothing for a refused SET.
    /// The key may be borrowed ([`KeyArg::Borrowed`]): it is copied only where it is kept.
    pub fn set_with(
        &mut self,
        key: KeyArg<'_>,
        value_len: usize,
        value: impl FnOnce() -> MadeValue,
        options: veddb_wire::SetOptions,
        now_ms: u64,
    ) -> Result<Option<u64>, Error> {
        self.check_key(key.as_slice())?;
        if value_len > self.config.value_bytes_max {
            return Err(Error::ValueTooLarge {
                length: value_len,
                limit: self.config.value_bytes_max,
            });
        }
        if let Some(ttl_ms) = options.ttl_ms {
            check_ttl(ttl_ms)?;
        }
        self.stats.ops += 1;
        self.table.set_with(key, value_len, value, options, now_ms)
    }

    /// Removes `key`; whether it existed.
    pub fn delete(&mut self, key: &[u8], now_ms: u64) -> Result<bool, Error> {
        self.check_key(key)?;
        self.stats.ops += 1;
        Ok(self.table.delete(key, now_ms))
    }

    pub fn exists(&mut self, key: &[u8], now_ms: u64) -> Result<bool, Error> {
        self.check_key(key)?;
        self.stats.ops += 1;
        let found = self.table.contains(key, now_ms);
        self.count_read(found);
        Ok(found)
    }

    /// Compare-and-swap on the key's version (0: only if absent).
    pub fn cas(
        &mut self,
        key: Bytes,
        expected_version: u64,
        value: Bytes,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<CasOutcome, Error> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        if let Some(ttl_ms) = ttl_ms {
            check_ttl(ttl_ms)?;
        }
        self.stats.ops += 1;
        self.table.cas(key, expected_version, value, ttl_ms, now_ms)
    }

    /// Adds `delta` to a decimal integer value (missing counts as 0); the new value and version.
    pub fn incr(&mut self, key: Bytes, delta: i64, now_ms: u64) -> Result<(i64, u64), Error> {
        self.check_key(&key)?;
        self.stats.ops += 1;
        self.table.incr(key, delta, now_ms)
    }

    /// Sets the TTL (0 expires at once); whether the key existed.
    pub fn expire(&mut self, key: &[u8], ttl_ms: u64, now_ms: u64) -> Result<bool, Error> {
        self.check_key(key)?;
        check_ttl_allow_zero(ttl_ms)?;
        self.stats.ops += 1;
        Ok(self.table.expire(key, ttl_ms, now_ms))
    }

    pub fn ttl(&mut self, key: &[u8], now_ms: u64) -> Result<Ttl, Error> {
        self.check_key(key)?;
        self.stats.ops += 1;
        let ttl = self.table.ttl(key, now_ms);
        self.count_read(ttl != Ttl::Missing);
        Ok(ttl)
    }

    /// Removes the TTL; whether there was one.
    pub fn persist(&mut self, key: &[u8], now_ms: u64) -> Result<bool, Error> {
        self.check_key(key)?;
        self.stats.ops += 1;
        Ok(self.table.persist(key, now_ms))
    }

    pub fn mget(
        &mut self,
        keys: &[Bytes],
        now_ms: u64,
    ) -> Result<Vec<Option<(Bytes, u64)>>, Error> {
        check_batch(keys.len())?;
        for key in keys {
            self.check_key(key)?;
        }
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            self.stats.ops += 1;
            let found = self.table.get(key, now_ms);
            self.count_read(found.is_some());
            values.push(found);
        }
        Ok(values)
    }

    /// Writes every pair or none (OUT_OF_MEMORY leaves the shard unchanged). A key given twice
    /// takes its last value.
    pub fn mset(&mut self, pairs: Vec<(Bytes, Bytes)>, now_ms: u64) -> Result<(), Error> {
        check_batch(pairs.len())?;
        for (key, value) in &pairs {
            self.check_key(key)?;
            self.check_value(value)?;
        }
        self.stats.ops += pairs.len() as u64;
        self.table.mset(pairs, now_ms)
    }

    /// One page of keys after `cursor` (exclusive) starting with `prefix`, in byte order.
    pub fn scan(
        &mut self,
        cursor: &[u8],
        prefix: &[u8],
        count: u32,
        now_ms: u64,
    ) -> Result<ScanPage, Error> {
        if cursor.len() > self.config.key_bytes_max || prefix.len() > self.config.key_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "SCAN cursor and prefix are at most {} bytes",
                self.config.key_bytes_max
            )));
        }
        let count = scan::effective_count(count)?;
        self.stats.ops += 1;
        Ok(self.table.scan(cursor, prefix, count, now_ms))
    }

    /// Reclaims up to `budget` keys whose TTL has passed; the number reclaimed.
    /// The engine calls this from its timer; reads never return expired keys regardless.
    pub fn expire_due(&mut self, now_ms: u64, budget: usize) -> usize {
        self.table.expire_due(now_ms, budget)
    }

    /// The earliest expiry deadline (ms since the epoch), if any key has a TTL.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.table.next_expiry_ms()
    }

    /// The value of `key` without touching LRU state, counters or lazy expiry (for tests and
    /// diagnostics).
    pub fn peek(&self, key: &[u8], now_ms: u64) -> Option<(Bytes, u64)> {
        self.table.peek(key, now_ms)
    }

    /// Number of keys in the table (including expired ones not yet reclaimed).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    pub fn memory_bytes_used(&self) -> u64 {
        self.table.memory_bytes_used()
    }

    /// Installs (or removes) the function every stored value passes through: a frontend uses
    /// it to keep values where its readers can reach them without a copy (the shared-memory
    /// arena of local clients). It must return the same bytes.
    pub fn set_value_store(&mut self, store: Option<ValueStore>) {
        self.table.set_value_store(store);
    }

    // ---- persistence hooks -----------------------------------------------------------------

    /// Turns the journal on or off. While on, every change to a key (writes, deletes,
    /// evictions; not expiry, which the logged deadline already implies) is recorded, in order,
    /// for [`Shard::drain_changes`]: the engine turns them into write-ahead-log records.
    pub fn set_journal(&mut self, on: bool) {
        self.table.set_journal(on);
    }

    /// The changes since the last drain, oldest first.
    pub fn drain_changes(&mut self) -> impl Iterator<Item = Change> + '_ {
        self.table.drain_changes()
    }

    /// Whether changes are waiting to be drained.
    pub fn has_changes(&self) -> bool {
        self.table.has_changes()
    }

    /// Starts a point-in-time snapshot without stopping the shard: [`Shard::snapshot_next`]
    /// returns every entry as it was at this moment, in key order, while the shard goes on
    /// serving. A key written before the snapshot reaches it keeps its old entry on the side
    /// (a reference to the value, not a copy) until the snapshot passes it. `false` if one is
    /// already running.
    pub fn begin_snapshot(&mut self) -> bool {
        self.table.begin_snapshot()
    }

    /// Appends up to `max` more entries of the running snapshot to `out`; `false` once it is
    /// complete (or none is running).
    pub fn snapshot_next(&mut self, max: usize, out: &mut Vec<StoredEntry>) -> bool {
        self.table.snapshot_next(max, out)
    }

    /// Abandons the running snapshot.
    pub fn abort_snapshot(&mut self) {
        self.table.abort_snapshot();
    }

    /// The version clock when the running snapshot began.
    pub fn snapshot_version_clock(&self) -> Option<u64> {
        self.table.snapshot_version_clock()
    }

    /// Old entries kept for the running snapshot: now, and at most since it began.
    pub fn snapshot_preserved(&self) -> (usize, usize) {
        self.table.snapshot_preserved()
    }

    /// The version of the latest write (versions continue from it after a restart).
    pub fn version_clock(&self) -> u64 {
        self.table.version_clock()
    }

    /// Loads one entry recovered from disk, keeping its version; the version clock moves to at
    /// least `version_clock`. Not journaled. OUT_OF_MEMORY when the budget is exceeded.
    pub fn restore(&mut self, entry: StoredEntry, version_clock: u64) -> Result<(), Error> {
        self.check_key(&entry.key)?;
        self.check_value(&entry.value)?;
        self.table.restore(entry, version_clock)
    }

    /// [`Shard::restore`] for every entry of a recovered image, faster: room is made once and
    /// the keys' ordered index is built in one go. Stops at the first entry that is refused.
    pub fn restore_all(
        &mut self,
        entries: impl ExactSizeIterator<Item = StoredEntry>,
        version_clock: u64,
    ) -> Result<(), Error> {
        let (key_max, value_max) = (self.config.key_bytes_max, self.config.value_bytes_max);
        self.table.restore_all(entries, version_clock, |entry| {
            check_key(&entry.key, key_max).and_then(|()| check_value(&entry.value, value_max))
        })
    }

    /// Moves the version clock to at least `version_clock` (start-up: the recovered clock).
    /// [`Shard::restore`] does this too, but only when there is an entry to load: a shard
    /// whose keys were all deleted before the restart must still not hand out versions again.
    /// Not journaled.
    pub fn restore_version_clock(&mut self, version_clock: u64) {
        self.table.restore_version_clock(version_clock);
    }

    // ---- topics ---------------------------------------------------------------------------

    /// A new subscription to `topic` (which must route to this shard).
    pub fn subscribe(&mut self, topic: Bytes) -> Result<SubscriberId, Error> {
        self.check_key(&topic)?;
        self.stats.ops += 1;
        self.topics.subscribe(topic)
    }

    /// Removes a subscription; whether it existed.
    pub fn unsubscribe(&mut self, subscriber: SubscriberId) -> bool {
        self.stats.ops += 1;
        self.topics.unsubscribe(subscriber)
    }

    /// Queues `message` for every subscriber of `topic`; how many.
    pub fn publish(&mut self, topic: &[u8], message: Bytes) -> Result<u32, Error> {
        self.check_key(topic)?;
        self.check_value(&message)?;
        self.stats.ops += 1;
        Ok(self.topics.publish(topic, message))
    }

    /// Takes up to `max` (0 = all, capped at [`limits::FETCH_MESSAGES_MAX`]) queued messages,
    /// oldest first, and the count of messages dropped since the previous fetch.
    pub fn fetch(
        &mut self,
        subscriber: SubscriberId,
        max: u32,
    ) -> Result<(Vec<Bytes>, u64), Error> {
        self.stats.ops += 1;
        self.topics.fetch(subscriber, max)
    }

    /// The messages queued for `subscriber`, oldest first, and how many were dropped since
    /// messages were last taken (`None`: no such subscription), for a frontend that pushes
    /// them to its client: it takes those it delivered with
    /// [`take_delivered`](Self::take_delivered).
    pub fn pending(&self, subscriber: SubscriberId) -> Option<(&VecDeque<Bytes>, u64)> {
        self.topics.pending(subscriber)
    }

    /// Takes the `count` oldest messages of `subscriber` and clears its dropped count: they
    /// were delivered, with that count, by whoever read them with [`pending`](Self::pending).
    pub fn take_delivered(&mut self, subscriber: SubscriberId, count: usize) {
        self.stats.ops += 1;
        self.topics.take_delivered(subscriber, count);
    }

    /// Drops the oldest message queued for `subscriber`, one it can never receive (larger
    /// than anything its connection carries): its subscriber learns of the gap with the next
    /// messages (INFO's `messages_dropped` counts only the queue limits' drops).
    pub fn discard_oldest(&mut self, subscriber: SubscriberId) {
        self.topics.discard_oldest(subscriber);
    }

    /// Whether a subscription has messages waiting (`None`: no such subscription).
    pub fn has_messages(&self, subscriber: SubscriberId) -> Option<bool> {
        self.topics.has_messages(subscriber)
    }

    /// Subscriptions whose queue went from empty to non-empty since the last call
    /// (so the engine can complete FETCHes that wait).
    pub fn poll_ready_subscribers(&mut self) -> Option<SubscriberId> {
        self.topics.poll_ready()
    }

    // ---- stats ----------------------------------------------------------------------------

    pub fn stats(&self) -> ShardStats {
        let table = self.table.counters();
        let topics = self.topics.counters();
        ShardStats {
            shard: self.index,
            ops: self.stats.ops,
            hits: self.stats.hits,
            misses: self.stats.misses,
            keys: self.table.len() as u64,
            memory_bytes_used: self.table.memory_bytes_used(),
            memory_bytes_limit: self.config.memory_bytes_limit,
            expired_keys: table.expired,
            evicted_keys: table.evicted,
            out_of_memory_errors: table.out_of_memory,
            topics: topics.topics,
            subscribers: topics.subscribers,
            messages_published: topics.published,
            messages_delivered: topics.delivered,
            messages_dropped: topics.dropped,
            forwarded_in: self.stats.forwarded_in,
        }
    }

    // ---- validation -----------------------------------------------------------------------

    fn count_read(&mut self, hit: bool) {
        if hit {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        check_key(key, self.config.key_bytes_max)
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        check_value(value, self.config.value_bytes_max)
    }
}

fn check_key(key: &[u8], limit: usize) -> Result<(), Error> {
    if key.is_empty() || key.len() > limit {
        return Err(Error::KeyTooLarge {
            length: key.len(),
            limit,
        });
    }
    Ok(())
}

fn check_value(value: &[u8], limit: usize) -> Result<(), Error> {
    if value.len() > limit {
        return Err(Error::ValueTooLarge {
            length: value.len(),
            limit,
        });
    }
    Ok(())
}

fn check_ttl(ttl_ms: u64) -> Result<(), Error> {
    if ttl_ms == 0 {
        return Err(Error::ttl_zero());
    }
    check_ttl_allow_zero(ttl_ms)
}

fn check_ttl_allow_zero(ttl_ms: u64) -> Result<(), Error> {
    if ttl_ms > limits::TTL_MS_MAX {
        return Err(Error::InvalidArgument(format!(
            "TTL of {ttl_ms} ms is over the maximum of {} ms (100 years)",
            limits::TTL_MS_MAX
        )));
    }
    Ok(())
}

fn check_batch(length: usize) -> Result<(), Error> {
    if length > limits::BATCH_KEYS_MAX {
        return Err(Error::InvalidArgument(format!(
            "{length} keys in one request; the maximum is {}",
            limits::BATCH_KEYS_MAX
        )));
    }
    Ok(())
}
