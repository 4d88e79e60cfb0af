//! `veddb-engine`: the thread-per-core runtime.
//!
//! [`Engine::start`] starts one thread per core. Each thread is pinned to its own CPU, runs
//! its own compio runtime (io_uring on Linux, with an epoll fallback; IOCP on Windows) and
//! owns exactly one [`veddb_shard::Shard`]: nothing in a shard is shared or locked.
//! Keys and topics map to shards by [`veddb_wire::shard_for_key`]. Cores talk over an N×N
//! mesh of bounded single-producer single-consumer rings ([`ring`]): a request for a key
//! another core owns travels to the owner on the request ring and comes back on the paired
//! response ring. Multi-key operations scatter over the owners and gather the answers.
//! Cores spin for a short window when idle, then park in the runtime (serving sockets and
//! timers) until a [`doorbell`] rings.
//!
//! Frontends call [`CoreContext::execute`] on the core that received a request. Socket
//! frontends (gRPC, QUIC) run as tasks on a core, woken by its runtime; a frontend whose
//! clients write into shared memory, which no runtime can wait on, gives each core a
//! [`CoreSource`] that the core's one loop polls, spins on and parks with. Threads outside the
//! engine use [`Engine::call`] and [`Engine::run_on`]. Time comes from the engine's [`Clock`].
//!
//! This crate must not know any wire format or transport.

#[cfg(not(veddb_loom))]
mod clock;
pub mod doorbell;
pub mod ring;
mod sync;

#[cfg(not(veddb_loom))]
mod config;
#[cfg(not(veddb_loom))]
mod core;
#[cfg(not(veddb_loom))]
mod engine;
#[cfg(not(veddb_loom))]
pub mod persist;

#[cfg(not(veddb_loom))]
pub use crate::clock::{Clock, SystemClock};
#[cfg(not(veddb_loom))]
pub use crate::config::{CoreSetup, EngineConfig, INBOX_DEPTH_DEFAULT, SPIN_DEFAULT};
#[cfg(not(veddb_loom))]
pub use crate::core::{yield_now, CoreContext, CoreSource};
#[cfg(not(veddb_loom))]
pub use crate::engine::{available_cpus, Engine, StartError};
#[cfg(not(veddb_loom))]
pub use veddb_persist::writer::FsyncPolicy;
