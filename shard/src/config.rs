//! Shard configuration.

use veddb_wire::limits;

/// What happens when a write would exceed the memory budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Eviction {
    /// Refuse the write with OUT_OF_MEMORY.
    #[default]
    NoEviction,
    /// Evict approximately least-recently-used keys (sampled, as Redis does) until it fits.
    Lru,
}

/// Bytes charged per entry on top of its key and value: the hash-table slot, the entry
/// record, the ordered-index node and the expiry-index node, rounded up. An estimate,
/// documented in `docs/ARCHITECTURE.md`.
pub const ENTRY_OVERHEAD_BYTES: u64 = 128;

/// Keys sampled per eviction step (Redis uses 5 by default).
pub const EVICTION_SAMPLES: usize = 5;

#[derive(Clone, Debug)]
pub struct Config {
    /// This shard's data budget in bytes (the instance's `--memory-mb` divided by the shard count).
    pub memory_bytes_limit: u64,
    pub eviction: Eviction,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// Messages a subscriber may have queued before the oldest is dropped.
    pub subscriber_queue_messages_max: usize,
    /// Bytes a subscriber may have queued before the oldest is dropped.
    pub subscriber_queue_bytes_max: usize,
    pub subscribers_max: usize,
    /// Bytes queued for all of this shard's subscribers together; past it, a publish pushes
    /// out the oldest messages of the subscriber it is queued for (same drop-oldest policy).
    pub pubsub_queue_bytes_max: usize,
    /// Seed of the eviction sampler (deterministic tests).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            memory_bytes_limit: 64 * 1024 * 1024,
            eviction: Eviction::NoEviction,
            key_bytes_max: limits::KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: limits::VALUE_BYTES_MAX_DEFAULT,
            subscriber_queue_messages_max: limits::SUBSCRIBER_QUEUE_MESSAGES_DEFAULT,
            subscriber_queue_bytes_max: limits::SUBSCRIBER_QUEUE_BYTES_DEFAULT,
            subscribers_max: limits::SUBSCRIBERS_PER_SHARD_MAX_DEFAULT,
            pubsub_queue_bytes_max: limits::PUBSUB_QUEUE_BYTES_PER_SHARD_DEFAULT,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }
}
