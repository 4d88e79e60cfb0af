//! Engine configuration.

use std::time::Duration;

use crate::CoreSource;

/// Requests one core may have in flight to another (the depth of each mesh ring).
pub const INBOX_DEPTH_DEFAULT: usize = 256;
/// How long an idle core keeps polling before it parks.
pub const SPIN_DEFAULT: Duration = Duration::from_micros(50);
/// Requests from threads outside the engine queued per core before senders block.
pub const EXTERNAL_QUEUE_CAPACITY: usize = 1024;
/// Keys reclaimed by active expiry per loop iteration (bounds the pause it can cause).
pub const EXPIRY_BATCH_MAX: usize = 1024;
/// Longest a parked core sleeps without looking at its timers.
pub const PARK_TIMEOUT_MAX: Duration = Duration::from_millis(250);

const _: () = assert!(INBOX_DEPTH_DEFAULT.is_power_of_two());
const _: () = assert!(INBOX_DEPTH_DEFAULT <= u32::MAX as usize);

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Number of cores (threads, shards). More than the machine's CPUs is allowed: threads
    /// then share CPUs round-robin.
    pub cores: usize,
    /// Pin each core's thread to one CPU.
    pub pin_threads: bool,
    /// The data budget of the whole instance; each shard gets an equal share.
    pub memory_bytes_limit: u64,
    /// Per-shard settings; `memory_bytes_limit` and `seed` are overwritten per shard.
    pub shard: veddb_shard::Config,
    /// Depth of each mesh ring (a power of two).
    pub inbox_depth: usize,
    /// Spin window before parking.
    pub spin: Duration,
    /// Persistence (`--data-dir`); `None`: a pure in-memory store.
    pub persistence: Option<crate::persist::PersistConfig>,
    /// One per frontend that brings work into the cores' loops: runs on each core's thread
    /// with its new shard, before recovered data is loaded (a frontend installs its value store
    /// here) and returns the core's [`CoreSource`], if any.
    pub core_setup: Vec<CoreSetup>,
    /// Where the cores and their frontends read time ([`SystemClock`](crate::SystemClock)
    /// unless a test passes its own).
    pub clock: std::sync::Arc<dyn crate::Clock>,
}

/// What [`CoreSetup`] runs: the core's index and its new shard; returns the work the
/// frontend brings into that core's loop.
pub type CoreSetupFn =
    dyn Fn(u32, &mut veddb_shard::Shard) -> Option<Box<dyn CoreSource>> + Send + Sync;

/// A function run on each core's thread with the core's index and its new shard, before the
/// core starts: a frontend's way into the core (its value store, its [`CoreSource`]).
#[derive(Clone)]
pub struct CoreSetup(pub std::sync::Arc<CoreSetupFn>);

impl std::fmt::Debug for CoreSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoreSetup(..)")
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cores: 1,
            pin_threads: true,
            memory_bytes_limit: 64 * 1024 * 1024,
            shard: veddb_shard::Config::default(),
            inbox_depth: INBOX_DEPTH_DEFAULT,
            spin: SPIN_DEFAULT,
            persistence: None,
            core_setup: Vec::new(),
            clock: crate::clock::system_clock(),
        }
    }
}
