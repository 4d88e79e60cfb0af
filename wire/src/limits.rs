//! Default limits. Every queue, batch and size has a maximum, named here.

/// Largest key accepted by default (`--key-bytes-max`).
pub const KEY_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Largest value accepted by default (`--value-bytes-max`).
pub const VALUE_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// The largest `--value-bytes-max` a server accepts (1 GiB).
pub const VALUE_BYTES_MAX_UPPER: usize = 1 << 30;
/// Most keys in one MGET, MSET or DEL request.
pub const BATCH_KEYS_MAX: usize = 65_536;
/// Most keys one SCAN call returns.
pub const SCAN_COUNT_MAX: u32 = 65_536;
/// SCAN page size when the caller passes 0.
pub const SCAN_COUNT_DEFAULT: u32 = 100;
/// Most messages one FETCH returns.
pub const FETCH_MESSAGES_MAX: u32 = 65_536;
/// Longest a FETCH may wait for a message.
pub const FETCH_WAIT_MS_MAX: u64 = 60_000;
/// Messages queued per subscriber before the oldest is dropped (default).
pub const SUBSCRIBER_QUEUE_MESSAGES_DEFAULT: usize = 4096;
/// Bytes queued per subscriber before the oldest is dropped (default).
pub const SUBSCRIBER_QUEUE_BYTES_DEFAULT: usize = 8 * 1024 * 1024;
/// Bytes queued for all subscribers of one shard together (default).
pub const PUBSUB_QUEUE_BYTES_PER_SHARD_DEFAULT: usize = 64 * 1024 * 1024;
/// Subscribers per shard (default).
pub const SUBSCRIBERS_PER_SHARD_MAX_DEFAULT: usize = 65_536;
/// Most shards (cores) an instance can have: subscriber ids carry the shard in 16 bits.
pub const SHARDS_MAX: u32 = 1 << 16;
/// Longest TTL accepted: 100 years in milliseconds.
pub const TTL_MS_MAX: u64 = 100 * 365 * 24 * 3600 * 1000;

const _: () = assert!(KEY_BYTES_MAX_DEFAULT <= VALUE_BYTES_MAX_DEFAULT);
const _: () = assert!(VALUE_BYTES_MAX_DEFAULT <= VALUE_BYTES_MAX_UPPER);
const _: () = assert!(SCAN_COUNT_DEFAULT <= SCAN_COUNT_MAX);
const _: () = assert!(SUBSCRIBER_QUEUE_BYTES_DEFAULT <= PUBSUB_QUEUE_BYTES_PER_SHARD_DEFAULT);
