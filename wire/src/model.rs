//! Requests, responses, errors and statistics.

use bytes::Bytes;
use std::fmt;

/// Identifies one subscription. The high 16 bits name the shard that owns the topic, so a
/// FETCH or UNSUBSCRIBE can be routed without knowing the topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub u64);

impl SubscriberId {
    /// Builds an id from its owning shard and a per-shard sequence number (48 bits).
    pub fn new(shard: u32, sequence: u64) -> Self {
        debug_assert!(shard < crate::limits::SHARDS_MAX);
        debug_assert!(sequence < (1 << 48));
        SubscriberId((u64::from(shard) << 48) | (sequence & ((1 << 48) - 1)))
    }
    /// The shard that owns the subscription.
    pub fn shard(self) -> u32 {
        (self.0 >> 48) as u32
    }
}

/// A hasher for [`SubscriberId`] keys (see [`SubscriberMap`]): one multiply, folded. Subscriber
/// ids are made by the server (a shard and a sequence number), never chosen by a client, so
/// maps keyed by them need no keyed hash against collisions a client could aim for.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubscriberIdHasher(u64);

impl std::hash::Hasher for SubscriberIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `SubscriberId`; anything else still hashes.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let product = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = product ^ (product >> 29);
    }
}

/// A map keyed by [`SubscriberId`] with [`SubscriberIdHasher`].
pub type SubscriberMap<V> =
    std::collections::HashMap<SubscriberId, V, std::hash::BuildHasherDefault<SubscriberIdHasher>>;

/// The condition a SET must meet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetCondition {
    /// Always write.
    #[default]
    Always,
    /// Write only when the key does not exist (NX).
    IfAbsent,
    /// Write only when the key exists (XX).
    IfPresent,
}

/// Options of a SET.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Time to live in milliseconds. `None`: no expiry (unless `keep_ttl`).
    pub ttl_ms: Option<u64>,
    /// NX / XX.
    pub condition: SetCondition,
    /// Keep the key's current expiry when `ttl_ms` is `None` (Redis KEEPTTL).
    pub keep_ttl: bool,
}

/// One operation. Keys, values, topics and messages are binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Liveness check. Answer: [`Response::Pong`].
    Ping,
    /// Answer: [`Response::Value`] or [`Response::NotFound`].
    Get { key: Bytes },
    /// Answer: [`Response::Stored`] or [`Response::NotStored`] (condition not met).
    Set {
        key: Bytes,
        value: Bytes,
        options: SetOptions,
    },
    /// Answer: [`Response::Bool`] (whether the key existed).
    Delete { key: Bytes },
    /// Answer: [`Response::Bool`].
    Exists { key: Bytes },
    /// Compare-and-swap on the version. `expected_version == 0` means "only if absent".
    /// The key's expiry is kept unless `ttl_ms` is given.
    /// Answer: [`Response::Stored`], [`Response::VersionMismatch`] or [`Response::NotFound`].
    Cas {
        key: Bytes,
        expected_version: u64,
        value: Bytes,
        ttl_ms: Option<u64>,
    },
    /// Adds `delta` (negative for DECR) to a decimal integer value; a missing key counts as 0.
    /// Answer: [`Response::Integer`].
    Incr { key: Bytes, delta: i64 },
    /// Sets a time to live. 0 expires the key at once. Answer: [`Response::Bool`] (key existed).
    Expire { key: Bytes, ttl_ms: u64 },
    /// Answer: [`Response::Ttl`].
    Ttl { key: Bytes },
    /// Removes the expiry. Answer: [`Response::Bool`] (an expiry was removed).
    Persist { key: Bytes },
    /// Answer: [`Response::Values`], one entry per key, in order.
    MGet { keys: Vec<Bytes> },
    /// Answer: [`Response::Ok`]. Atomic per shard (all of a shard's pairs or none of them).
    MSet { pairs: Vec<(Bytes, Bytes)> },
    /// Keys in byte order after `cursor` (exclusive; empty = from the start) that start with
    /// `prefix`, at most `count` (0 = default). Answer: [`Response::Keys`].
    Scan {
        cursor: Bytes,
        prefix: Bytes,
        count: u32,
    },
    /// Answer: [`Response::Subscribed`].
    Subscribe { topic: Bytes },
    /// Answer: [`Response::Bool`] (the subscription existed).
    Unsubscribe { subscriber: SubscriberId },
    /// Answer: [`Response::Published`] with the number of subscribers it was queued for.
    Publish { topic: Bytes, message: Bytes },
    /// Takes up to `max` queued messages; waits up to `wait_ms` for the first one.
    /// Answer: [`Response::Messages`].
    Fetch {
        subscriber: SubscriberId,
        max: u32,
        wait_ms: u64,
    },
    /// Statistics of every shard. Answer: [`Response::Info`].
    Info,
    /// Writes a snapshot of every shard to the data directory (persistence only) and trims the
    /// log it makes unnecessary. Answer: [`Response::Ok`] once every shard's snapshot is
    /// durable.
    Snapshot,
}

impl Request {
    /// Gives every key, value, topic and message this request may keep (store, queue, or
    /// subscribe to) a buffer of its own. A request decoded in place from a network buffer
    /// holds slices of that buffer, and whatever the engine keeps would keep the whole buffer
    /// alive with it (a 64-byte value pinning a 64 KiB frame, unaccounted); this copies just
    /// what may be kept, so memory use follows the data. Reads and deletes keep nothing and
    /// are left as they are.
    pub fn detach_kept(&mut self) {
        fn own(bytes: &mut Bytes) {
            *bytes = Bytes::copy_from_slice(bytes);
        }
        match self {
            Request::Set { key, value, .. } | Request::Cas { key, value, .. } => {
                own(key);
                own(value);
            }
            Request::Incr { key, .. } | Request::Subscribe { topic: key } => own(key),
            Request::MSet { pairs } => {
                for (key, value) in pairs {
                    own(key);
                    own(value);
                }
            }
            Request::Publish { topic, message } => {
                own(topic);
                own(message);
            }
            _ => {}
        }
    }

    /// The name of the command, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "PING",
            Request::Get { .. } => "GET",
            Request::Set { .. } => "SET",
            Request::Delete { .. } => "DEL",
            Request::Exists { .. } => "EXISTS",
            Request::Cas { .. } => "CAS",
            Request::Incr { .. } => "INCR",
            Request::Expire { .. } => "EXPIRE",
            Request::Ttl { .. } => "TTL",
            Request::Persist { .. } => "PERSIST",
            Request::MGet { .. } => "MGET",
            Request::MSet { .. } => "MSET",
            Request::Scan { .. } => "SCAN",
            Request::Subscribe { .. } => "SUBSCRIBE",
            Request::Unsubscribe { .. } => "UNSUBSCRIBE",
            Request::Publish { .. } => "PUBLISH",
            Request::Fetch { .. } => "FETCH",
            Request::Info => "INFO",
            Request::Snapshot => "SNAPSHOT",
        }
    }

    /// The one key (or topic) the request names: what places it on a shard. `None` for
    /// requests that name no key or several.
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Request::Get { key }
            | Request::Set { key, .. }
            | Request::Delete { key }
            | Request::Exists { key }
            | Request::Cas { key, .. }
            | Request::Incr { key, .. }
            | Request::Expire { key, .. }
            | Request::Ttl { key }
            | Request::Persist { key } => Some(key),
            Request::Subscribe { topic } | Request::Publish { topic, .. } => Some(topic),
            Request::Ping
            | Request::Unsubscribe { .. }
            | Request::Fetch { .. }
            | Request::MGet { .. }
            | Request::MSet { .. }
            | Request::Scan { .. }
            | Request::Info
            | Request::Snapshot => None,
        }
    }

    /// Where the request must run.
    pub fn route(&self, shard_count: u32) -> Route {
        match (self, self.key()) {
            (_, Some(key)) => Route::Shard(crate::shard_for_key(key, shard_count)),
            (Request::Unsubscribe { subscriber } | Request::Fetch { subscriber, .. }, _) => {
                Route::Shard(subscriber.shard())
            }
            (Request::Ping, _) => Route::Any,
            // MGET, MSET, SCAN, INFO, SNAPSHOT.
            _ => Route::Scatter,
        }
    }
}

/// Where a request runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// On the shard with this index.
    Shard(u32),
    /// On whichever core received it.
    Any,
    /// Split over the shards that own its keys, or all shards, and gathered.
    Scatter,
}

/// Remaining time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// No such key.
    Missing,
    /// The key never expires.
    Persistent,
    /// Milliseconds until the key expires.
    Remaining(u64),
}

/// One answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Pong,
    /// GET hit, with the key's version.
    Value {
        value: Bytes,
        version: u64,
    },
    NotFound,
    /// A write succeeded; the key's new version.
    Stored {
        version: u64,
    },
    /// SET NX/XX whose condition did not hold.
    NotStored,
    /// CAS whose expected version was not the current one.
    VersionMismatch {
        current: u64,
    },
    /// INCR result and the key's new version.
    Integer {
        value: i64,
        version: u64,
    },
    Bool(bool),
    Ttl(Ttl),
    /// MGET: `(value, version)` per key, `None` where missing.
    Values(Vec<Option<(Bytes, u64)>>),
    Ok,
    /// SCAN page. `cursor` is empty when the scan is complete; else pass it to the next call.
    Keys {
        keys: Vec<Bytes>,
        cursor: Bytes,
    },
    Subscribed {
        subscriber: SubscriberId,
    },
    Published {
        receivers: u32,
    },
    /// FETCH result. `dropped`: messages this subscriber lost to the slow-subscriber policy
    /// since its previous FETCH.
    Messages {
        messages: Vec<Bytes>,
        dropped: u64,
    },
    Info(Info),
    Error(Error),
}

/// Why an operation failed. Every variant's message says what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The write would exceed the shard's share of `--memory-mb` and eviction is off
    /// (or the single entry is larger than the whole budget).
    OutOfMemory { needed_bytes: u64, limit_bytes: u64 },
    /// Key longer than `--key-bytes-max` (or empty where a key is required).
    KeyTooLarge { length: usize, limit: usize },
    /// Value or message longer than `--value-bytes-max`.
    ValueTooLarge { length: usize, limit: usize },
    /// INCR on a value that is not a decimal 64-bit integer.
    NotAnInteger,
    /// INCR result outside the 64-bit signed range.
    Overflow,
    /// A malformed argument; the text names it.
    InvalidArgument(String),
    /// FETCH or UNSUBSCRIBE for a subscription that does not exist (or was already removed).
    UnknownSubscriber(SubscriberId),
    /// The shard already has its maximum number of subscribers.
    TooManySubscribers { limit: usize },
    /// The server is stopping.
    ShuttingDown,
    /// A command that needs persistence (SNAPSHOT) on a server started without `--data-dir`.
    PersistenceOff,
    /// The shard's write-ahead log or snapshot failed (a disk error); the text names the file,
    /// the operation and what the shard does now.
    Storage(String),
    /// A queue is momentarily full (for example the write-ahead log's buffer while the disk
    /// catches up); nothing was changed, retry later.
    Busy(String),
}

impl Error {
    /// A TTL of 0 ms on SET or CAS, which the engine refuses: a TTL there is at least 1 ms
    /// (EXPIRE takes 0 and expires the key at once). The one copy of this error: the shard
    /// answers it, and the gRPC client refuses such a request with it before sending, since
    /// `veddb.v1` reads `ttl_ms = 0` as "no TTL" (SET) or "keep the expiry" (CAS).
    pub fn ttl_zero() -> Error {
        Error::InvalidArgument("TTL must be at least 1 ms".into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfMemory { needed_bytes, limit_bytes } => write!(
                f,
                "OUT_OF_MEMORY: the write needs {needed_bytes} bytes of a {limit_bytes}-byte shard budget; \
                 raise --memory-mb, delete keys, or run with --eviction lru"
            ),
            Error::KeyTooLarge { length, limit } if *length == 0 => {
                write!(f, "INVALID_ARGUMENT: empty key (keys are 1 to {limit} bytes)")
            }
            Error::KeyTooLarge { length, limit } => write!(
                f,
                "RESOURCE_EXHAUSTED: key of {length} bytes is over the {limit}-byte limit (--key-bytes-max)"
            ),
            Error::ValueTooLarge { length, limit } => write!(
                f,
                "RESOURCE_EXHAUSTED: value of {length} bytes is over the {limit}-byte limit (--value-bytes-max)"
            ),
            Error::NotAnInteger => write!(f, "INVALID_ARGUMENT: value is not a decimal 64-bit integer"),
            Error::Overflow => write!(f, "INVALID_ARGUMENT: increment would overflow a 64-bit integer"),
            Error::InvalidArgument(text) => write!(f, "INVALID_ARGUMENT: {text}"),
            Error::UnknownSubscriber(id) => write!(f, "NOT_FOUND: no subscription with id {}", id.0),
            Error::TooManySubscribers { limit } => {
                write!(f, "FULL: this shard already has {limit} subscribers")
            }
            Error::ShuttingDown => write!(f, "SHUTTING_DOWN: the server is stopping"),
            Error::PersistenceOff => write!(
                f,
                "FAILED_PRECONDITION: persistence is off; start the server with --data-dir DIR"
            ),
            Error::Storage(text) => write!(f, "STORAGE: {text}"),
            Error::Busy(text) => write!(f, "BUSY: {text}; nothing was changed, retry later"),
        }
    }
}

impl std::error::Error for Error {}

/// Counters of one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: u32,
    /// Operations applied to this shard (each key of a multi-key request counts once).
    pub ops: u64,
    /// Reads that found their key.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Live keys (expired keys not yet reclaimed are included until reclaimed).
    pub keys: u64,
    /// Bytes charged against the budget (keys, values and per-entry overhead).
    pub memory_bytes_used: u64,
    /// This shard's budget.
    pub memory_bytes_limit: u64,
    /// Keys removed because their TTL passed.
    pub expired_keys: u64,
    /// Keys removed by `--eviction lru`.
    pub evicted_keys: u64,
    /// Writes refused with OUT_OF_MEMORY.
    pub out_of_memory_errors: u64,
    pub topics: u64,
    pub subscribers: u64,
    pub messages_published: u64,
    /// Message copies queued for subscribers.
    pub messages_delivered: u64,
    /// Messages dropped from slow subscribers' queues (drop-oldest policy).
    pub messages_dropped: u64,
    /// Requests this shard's core received from other cores.
    pub forwarded_in: u64,
}

/// Statistics of every shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub shards: Vec<ShardStats>,
}

impl Info {
    /// Sum over all shards (the `shard` field of the result is the shard count).
    pub fn total(&self) -> ShardStats {
        let mut total = ShardStats {
            shard: self.shards.len() as u32,
            ..ShardStats::default()
        };
        for s in &self.shards {
            total.ops += s.ops;
            total.hits += s.hits;
            total.misses += s.misses;
            total.keys += s.keys;
            total.memory_bytes_used += s.memory_bytes_used;
            total.memory_bytes_limit += s.memory_bytes_limit;
            total.expired_keys += s.expired_keys;
            total.evicted_keys += s.evicted_keys;
            total.out_of_memory_errors += s.out_of_memory_errors;
            total.topics += s.topics;
            total.subscribers += s.subscribers;
            total.messages_published += s.messages_published;
            total.messages_delivered += s.messages_delivered;
            total.messages_dropped += s.messages_dropped;
            total.forwarded_in += s.forwarded_in;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_kept_copies_what_may_be_kept_and_nothing_else() {
        let frame = Bytes::from(vec![7_u8; 64 << 10]);
        let mut set = Request::Set {
            key: frame.slice(0..16),
            value: frame.slice(16..80),
            options: SetOptions::default(),
        };
        let mut publish = Request::Publish {
            topic: frame.slice(80..90),
            message: frame.slice(90..200),
        };
        let mut mset = Request::MSet {
            pairs: vec![(frame.slice(200..210), frame.slice(210..300))],
        };
        let mut get = Request::Get {
            key: frame.slice(0..16),
        };
        let before = (set.clone(), publish.clone(), mset.clone());
        set.detach_kept();
        publish.detach_kept();
        mset.detach_kept();
        get.detach_kept();
        // Same contents, and nothing kept refers to the frame any more: only `get` (not kept)
        // and `frame` itself do.
        assert_eq!((set.clone(), publish.clone(), mset.clone()), before);
        drop(before);
        let Request::Get { key } = get else {
            unreachable!()
        };
        drop(key);
        assert!(frame.is_unique(), "a kept field still shares the frame");
        let Request::Set { value, .. } = set else {
            unreachable!()
        };
        assert_eq!(value.len(), 64);
    }
}
