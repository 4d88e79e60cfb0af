//! `veddb-shm`: the unsafe, OS-level building blocks of VedDB's shared-memory path, behind safe APIs.
//!
//! - [`Segment`]: a shared memory mapping. On Linux an anonymous `memfd` (sealable, so a client can
//!   be handed a descriptor it can only map read-only) or a named file under `/dev/shm`; elsewhere a
//!   file-backed mapping through `memmap2`. Typed, bounds-checked access at fixed offsets; no Rust
//!   reference to bytes another process may write is ever created (atomics aside).
//! - [`futex_wait`] / [`futex_wake`]: process-shared futexes (no `FUTEX_PRIVATE_FLAG`), and
//!   [`EventFd`] (Linux) to wake a core that sleeps in io_uring.
//! - [`send_with_fds`] / [`recv_with_fds`] (`SCM_RIGHTS`), [`peer_credentials`] (`SO_PEERCRED`),
//!   [`peer_groups`] (`SO_PEERGROUPS`), [`process_alive`], [`process_start_time`],
//!   [`raise_fd_limit`] / [`open_fd_count`] (Linux).
//! - [`Readiness`]: an epoll set, for a thread that watches many sockets (Linux).
//! - [`ByteRing`]: a single-producer single-consumer ring of variable-length frames in a segment,
//!   whose consumer (and producer) treat every counter and length read from shared memory as hostile.
//! - [`Arena`]: one core's value allocator inside its data segment (power-of-two blocks, offsets only)
//!   with epoch-based reclamation across processes, and [`ArenaValue`], an owner that lets a
//!   `bytes::Bytes` point straight into the segment.
//!
//! # Platforms
//!
//! Linux is the target. On other platforms the crate compiles with a reduced feature set:
//! [`Segment`] is file-backed (`create` uses a temporary file, `create_named`/`open_named` a named
//! file; no sealing: [`Segment::seal_read_only_for_others`] returns `Unsupported`, and no
//! [`Segment::map_fd`]), [`futex_wait`] polls with short sleeps and [`futex_wake`] does nothing (the
//! waiter returns once the word changes), and there is no [`EventFd`], no fd passing, no peer
//! credentials and no `/proc` start time. [`process_alive`] exists on every Unix.
//! [`ByteRing`] and [`Arena`] are portable.

// Shared layouts are little-endian; atomics in shared memory are native-endian.
#[cfg(target_endian = "big")]
compile_error!("veddb-shm assumes a little-endian target (shared layouts are little-endian)");

mod alloc;
mod arena;
mod cpu;
pub mod fuzzing;
#[cfg(all(target_os = "linux", feature = "mimalloc"))]
mod mimalloc;
mod ring;
mod segment;
mod view;
mod wake;

#[cfg(target_os = "linux")]
mod fdpass;
#[cfg(unix)]
mod process;
#[cfg(target_os = "linux")]
mod readiness;

pub use alloc::{HugePageAlloc, HUGE_PAGE_BYTES};
pub use arena::{
    Arena, ArenaBlock, ArenaLayout, ArenaLocator, ArenaRetirer, ArenaStats, ArenaUpload,
    ArenaValue, BLOCK_HEADER_BYTES, MIN_BLOCK_BYTES,
};
pub use cpu::{current_cpu, same_cpu};
#[cfg(all(target_os = "linux", feature = "mimalloc"))]
pub use mimalloc::MiMalloc;
pub use ring::{
    ByteRing, FrameRef, FrameWriter, RingConsumer, RingError, RingMemory, RingProducer,
    COUNTER_MAX, EMPTY_HEADER, FRAME_FLAGS, FRAME_HEADER_BYTES, WRAP_MARKER,
};
pub use segment::Segment;
pub use view::{create_data_segment, SharedView};
pub use wake::{futex_wait, futex_wake, FutexWait};

#[cfg(target_os = "linux")]
pub use fdpass::{
    peer_credentials, peer_groups, recv_with_fds, send_with_fds, PeerCredentials, MAX_FDS,
};
#[cfg(target_os = "linux")]
pub use process::{open_fd_count, process_start_time, raise_fd_limit, FdLimit};
#[cfg(target_os = "linux")]
pub use readiness::{Readiness, ReadyEvent, READY_EVENTS_MAX};
#[cfg(target_os = "linux")]
pub use segment::seals;
#[cfg(target_os = "linux")]
pub use wake::EventFd;

#[cfg(unix)]
pub use process::process_alive;
