//! The shared-memory frontend for local clients (`--create --name NAME`), Linux.
//!
//! The server creates the instance file `/dev/shm/veddb-NAME` (O_EXCL, `--shm-mode`), one
//! **data segment** per core (a sealed memfd that clients can only map read-only; every stored
//! value of that core's shard lives in its arena, so a GET answers with the value's place, not
//! its bytes) and listens on `/dev/shm/veddb-NAME.sock`. A client attaches there: the server
//! checks its credentials, creates one **ring segment** per core for the session (read-write
//! for both, size sealed) and hands over the data segments, the ring segments and one eventfd
//! per core. The client then talks to each key's owning core directly through that core's
//! rings. Each core's part of this frontend is a [`CoreSource`] that the core's one loop polls:
//! it reads its sessions' request rings, runs each request through the frontend seam
//! ([`crate::seam`]) and writes the answer to the session's response ring. It has no loop, no
//! spin window and no park of its own: it spins and parks with the core. The core's value arena
//! belongs to that source alone (no lock); other cores find values in it through its
//! [`ArenaLocator`](veddb_shm::ArenaLocator).
//!
//! Everything a client can write is hostile: ring indices and frames are validated (see
//! `veddb_shm::RingConsumer`), a frame is copied out before it is decoded, and a violation
//! disconnects that session only, with the reason in its ring header and in the server log.
//! Values are freed by epoch: a client pins the core's epoch before a request whose answer
//! may point into the arena; a retired block is reused once no session's pins keep it, and
//! pins older than the view lease (in real time: `local/lease.rs`) keep nothing. Layout and rules:
//! `docs/shm-layout.md`.
//!
//! One attach thread runs every handshake and watches every session's socket by readiness
//! (epoll): no call on a client's socket blocks, each handshake has one deadline, a closed socket
//! detaches its session at once, and sessions are capped (`--max-sessions`) so the server keeps
//! a reserve of descriptors. The instance file is writable by the server only and written with
//! `pwrite`, never through a mapping, so no one can make the server fault on it.

use std::time::Duration;

// Used by the Linux frontend only (its tests run everywhere).
#[cfg(any(target_os = "linux", test))]
mod lease;

/// Settings of the local frontend.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The instance name (`--name`).
    pub name: String,
    /// Mode of the socket (`--shm-mode`, default 0600): who may connect. The instance file
    /// gets only its read bits (plus the owner's write): nobody but the server writes it.
    pub mode: u32,
    /// A client whose heartbeat is older than this is detached (`--session-timeout`).
    pub session_timeout: Duration,
    /// The one deadline of an attach handshake, from accept to the whole hello: a connection
    /// that has not sent it by then is refused and closed.
    pub handshake_timeout: Duration,
    /// Most sessions attached at once (`--max-sessions`); `None`: as many as the descriptor
    /// limit allows after the server's reserve (see [`sessions_max`]).
    pub sessions_max: Option<usize>,
    /// How long the server honours a client's epoch pin (a zero-copy view held longer may see
    /// its block reused, which the view detects).
    pub view_lease: Duration,
    /// Bytes of each request ring and each response ring (a power of two).
    pub ring_bytes: u32,
    /// Bytes of each core's value arena (virtual: pages are used as values fill them).
    pub arena_bytes_per_core: u64,
    /// The largest value the arena stores (larger ones stay in process memory and are copied
    /// into responses).
    pub value_bytes_max: usize,
    /// Work of one session that one core has started and not answered (waiting for another
    /// core, the log, a long poll), in units of request cost (a GET 1, a batch or SCAN one per
    /// key): past it, the core stops reading that session's ring until some finishes
    /// (`--session-in-flight-max`). One request is always let through, whatever its cost.
    pub session_in_flight_max: usize,
    /// Bytes one session may have queued on one core: answers waiting for room in its
    /// response ring plus requests in flight. Past it the core stops reading its ring; past
    /// four times it (answers of work already started keep coming), or paused with answers
    /// unread for [`STALL_CUT`], the session is cut off (`--session-queue-mb`).
    pub session_queued_bytes_max: usize,
    /// Bytes all sessions together may have queued (every core): past it, every session that
    /// holds queued answers is paused until they drain; sessions that read their answers go
    /// on (`--local-queue-mb`).
    pub queued_bytes_max: usize,
}

/// Default of [`LocalConfig::session_in_flight_max`].
pub const SESSION_IN_FLIGHT_MAX_DEFAULT: usize = 1024;
/// Default of [`LocalConfig::session_queued_bytes_max`]: 4 MiB.
pub const SESSION_QUEUED_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Default of [`LocalConfig::queued_bytes_max`]: 256 MiB.
pub const QUEUED_BYTES_MAX_DEFAULT: usize = 256 << 20;
/// A session paused with answers it does not read is cut off after this long.
pub const STALL_CUT: Duration = Duration::from_secs(10);

/// Default of [`LocalConfig::ring_bytes`]: 1 MiB each way per core per session.
pub const RING_BYTES_DEFAULT: u32 = 1 << 20;
/// Default of [`LocalConfig::view_lease`].
pub const VIEW_LEASE_DEFAULT: Duration = Duration::from_secs(10);
/// Default of [`LocalConfig::handshake_timeout`]: a client sends its 16-byte hello as soon as
/// it connects, so 2 s is ample even on a loaded machine.
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Handshakes in progress at once (each holds a descriptor until its hello or its deadline).
/// A connection past it closes the oldest handshake in progress, the likeliest to be silent.
pub const HANDSHAKES_MAX: usize = 64;
/// Descriptors the local frontend leaves to the rest of the server, beyond those open when it
/// starts: gRPC connections, snapshot and log files, what the runtime opens later.
pub const FD_RESERVE: u64 = 256;
/// ... plus this many per core.
pub const FD_RESERVE_PER_CORE: u64 = 16;
/// The default `--max-sessions` keeps the ring segment mappings of all sessions (one per core
/// per session) under this: half of Linux's default `vm.max_map_count` (65,530), leaving the
/// rest to the allocator and the arenas.
pub const SESSION_RING_MAPPINGS_MAX: u64 = 32_768;

/// Descriptors the server holds per attached session: its socket and one ring segment per core.
pub fn fds_per_session(cores: usize) -> u64 {
    1 + cores as u64
}

/// The session limit: `requested` (`--max-sessions`) if the descriptors allow it, else an
/// error that says how to get there; by default as many as the descriptors allow (capped by
/// [`SESSION_RING_MAPPINGS_MAX`]). `fd_limit` is the soft `RLIMIT_NOFILE` (already raised),
/// `fds_open` the descriptors the server holds now. The budget: the limit, less what is open,
/// the reserve ([`FD_RESERVE`] + [`FD_RESERVE_PER_CORE`] per core) and one descriptor per
/// handshake in progress ([`HANDSHAKES_MAX`]), divided by [`fds_per_session`].
pub fn sessions_max(
    requested: Option<usize>,
    cores: usize,
    fd_limit: u64,
    fds_open: u64,
) -> Result<usize, String> {
    let reserve = FD_RESERVE + FD_RESERVE_PER_CORE * cores as u64;
    let budget = fd_limit
        .saturating_sub(fds_open)
        .saturating_sub(reserve)
        .saturating_sub(HANDSHAKES_MAX as u64);
    let by_fds = budget / fds_per_session(cores);
    match requested {
        Some(0) => Err("--max-sessions must be at least 1".into()),
        Some(requested) if requested as u64 <= by_fds => Ok(requested),
        Some(requested) => Err(format!(
            "--max-sessions {requested} needs {} descriptors ({} per session, {} for handshakes, \
             a reserve of {reserve}, {fds_open} open now), but the limit (ulimit -n, hard) is \
             {fd_limit}: at most {by_fds} sessions fit; raise the limit or lower --max-sessions",
            requested as u64 * fds_per_session(cores) + HANDSHAKES_MAX as u64 + reserve + fds_open,
            fds_per_session(cores),
            HANDSHAKES_MAX
        )),
        None => {
            let by_mappings = SESSION_RING_MAPPINGS_MAX / cores.max(1) as u64;
            match by_fds.min(by_mappings) {
                0 => Err(format!(
                    "the descriptor limit {fd_limit} (ulimit -n, hard) leaves no room for local \
                     sessions ({fds_open} open, a reserve of {reserve}); raise it"
                )),
                sessions => Ok(sessions as usize),
            }
        }
    }
}

impl LocalConfig {
    /// Defaults for an instance of `memory_bytes` over `cores` cores: each arena is twice the
    /// core's share of the budget (power-of-two blocks waste up to half) plus 16 MiB.
    pub fn new(name: &str, memory_bytes: u64, cores: usize) -> LocalConfig {
        let share = memory_bytes / cores.max(1) as u64;
        let arena = (share.saturating_mul(2) + (16 << 20) + 4095) & !4095;
        LocalConfig {
            name: name.to_owned(),
            mode: 0o600,
            session_timeout: Duration::from_secs(300),
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
            sessions_max: None,
            view_lease: VIEW_LEASE_DEFAULT,
            ring_bytes: RING_BYTES_DEFAULT,
            arena_bytes_per_core: arena,
            value_bytes_max: veddb_wire::limits::VALUE_BYTES_MAX_DEFAULT,
            session_in_flight_max: SESSION_IN_FLIGHT_MAX_DEFAULT,
            session_queued_bytes_max: SESSION_QUEUED_BYTES_MAX_DEFAULT,
            queued_bytes_max: QUEUED_BYTES_MAX_DEFAULT,
        }
    }
}

/// The shared-memory frontend as the server binary drives it (see [`crate::Frontend`]): the
/// instance is created by [`prepare`] (before the engine starts, since every core's shard
/// keeps its values in it), started with the engine.
pub struct LocalFrontendHandle {
    name: String,
    prepared: Option<Prepared>,
    running: Option<LocalFrontend>,
}

impl LocalFrontendHandle {
    /// Creates the instance (see [`prepare`]).
    pub fn prepare(
        config: &LocalConfig,
        cores: usize,
        clock: std::sync::Arc<dyn veddb_engine::Clock>,
    ) -> Result<LocalFrontendHandle, String> {
        Ok(LocalFrontendHandle {
            name: config.name.clone(),
            prepared: Some(prepare(config, cores, clock)?),
            running: None,
        })
    }

    /// Sessions attached now.
    pub fn sessions(&self) -> usize {
        self.running.as_ref().map_or(0, LocalFrontend::sessions)
    }
}

impl crate::Frontend for LocalFrontendHandle {
    fn name(&self) -> &'static str {
        "shared memory"
    }

    fn core_setup(&self) -> Option<veddb_engine::CoreSetup> {
        self.prepared.as_ref().map(Prepared::core_setup)
    }

    fn start(&mut self, engine: &veddb_engine::Engine) -> Result<(), String> {
        let prepared = self
            .prepared
            .take()
            .ok_or("the shared-memory frontend was started twice")?;
        self.running = Some(prepared.start(engine)?);
        tracing::info!(
            instance = %self.name,
            path = %veddb_wire::shm::layout::instance::path(&self.name),
            "local clients: shared memory ready (veddb-cli --local {})",
            self.name
        );
        Ok(())
    }

    fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
        if let Some(prepared) = self.prepared.take() {
            // Never started (another frontend or the engine failed): no client ever saw it.
            prepared.discard();
        }
    }
}

#[cfg(target_os = "linux")]
pub use linux::{prepare, LocalFrontend, Prepared};

#[cfg(not(target_os = "linux"))]
pub use other::{prepare, LocalFrontend, Prepared};

#[cfg(not(target_os = "linux"))]
mod other {
    //! The local frontend needs memfd seals, SCM_RIGHTS and futexes: Linux only for now. The
    //! server still builds here and serves gRPC.
    use super::LocalConfig;

    pub struct Prepared;
    pub struct LocalFrontend;

    pub fn prepare(
        _config: &LocalConfig,
        _cores: usize,
        _clock: std::sync::Arc<dyn veddb_engine::Clock>,
    ) -> Result<Prepared, String> {
        Err("local clients through shared memory are supported on Linux only".into())
    }

    impl Prepared {
        pub fn core_setup(&self) -> veddb_engine::CoreSetup {
            veddb_engine::CoreSetup(std::sync::Arc::new(|_, _| None))
        }

        pub fn start(self, _engine: &veddb_engine::Engine) -> Result<LocalFrontend, String> {
            Err("local clients through shared memory are supported on Linux only".into())
        }

        pub fn discard(self) {}
    }

    impl LocalFrontend {
        pub fn sessions(&self) -> usize {
            0
        }

        pub fn shutdown(self) {}
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::{Cell, RefCell};
    use std::collections::{HashMap, VecDeque};
    use std::future::Future;
    use std::io::Read;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use bytes::{Bytes, BytesMut};
    use compio::runtime::fd::AsyncFd;
    use veddb_engine::{Clock, CoreContext, CoreSetup, CoreSource, Engine};

    use crate::seam::{self, Started, Subscriptions};
    use veddb_shm::{
        create_data_segment, futex_wake, open_fd_count, peer_credentials, peer_groups,
        process_alive, raise_fd_limit, send_with_fds, Arena, ArenaLocator, ByteRing, EventFd,
        FdLimit, FrameRef, PeerCredentials, Readiness, ReadyEvent, RingConsumer, RingError,
        RingProducer, Segment,
    };
    use veddb_wire::shm::codec;
    use veddb_wire::shm::layout::{
        attach, data_segment, instance, reason, ring as ring_format, ring_segment,
    };
    use veddb_wire::{Error, Response};

    use super::{LocalConfig, HANDSHAKES_MAX, STALL_CUT};

    mod push;
    use push::{PushRoutes, SessionPushes};
    mod upload;
    use upload::{UploadLimits, Uploads};

    /// How soon a parked core looks again at a session that is paused or holds answers its
    /// client has no room for yet.
    const BLOCKED_SESSION_RECHECK: Duration = Duration::from_millis(1);
    /// Work one session gets per round of its core (fairness between sessions), in units of
    /// [`request_cost`]: a plain GET or SET costs 1, a 1,000-key MGET 1,001. A round always
    /// serves at least one request.
    const WORK_PER_ROUND: usize = 256;
    /// A session's answer buffer is kept between answers up to this capacity (a larger answer's
    /// buffer is freed after it): small against the session's rings.
    const ENCODE_BUFFER_KEPT: usize = 4 << 10;
    /// How often (in ms of the core's coarse clock) a core advances its epoch and reclaims
    /// retired blocks while it runs; it also does so each time it parks.
    const MAINTENANCE_INTERVAL_MS: u64 = 1;
    /// How long the attach socket is left alone after an accept failed (out of descriptors or
    /// memory) before the attach thread tries again.
    const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

    fn random_u64(clock: &dyn Clock) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(clock.unix_ms());
        hasher.write_u32(std::process::id());
        hasher.finish() | 1
    }

    /// One core's part, shared between the core and the attach thread.
    struct CoreShared {
        index: u32,
        data: Arc<Segment>,
        /// Finds values in this core's arena from any core (lock-free).
        locator: ArenaLocator,
        /// The arena, until the core takes it when it starts; from then on only that core's
        /// source touches it.
        arena: Mutex<Option<Arena>>,
        /// Clients write it to wake the core when it said it parked.
        wake: EventFd,
        /// Set (after pushing) when `incoming` or `departed` has entries: the core looks at
        /// this flag every round and takes the locks only when it is set.
        control: AtomicBool,
        /// Sessions to start serving: (id, ring segment).
        incoming: Mutex<Vec<(u64, Arc<Segment>)>>,
        /// Sessions to stop serving.
        departed: Mutex<Vec<u64>>,
    }

    impl CoreShared {
        /// Hands the core a session to start or stop serving (from the attach thread).
        fn send_control(&self, push: impl FnOnce(&CoreShared)) {
            push(self);
            self.control.store(true, Ordering::SeqCst);
            let _ = self.wake.write(1);
        }
    }

    struct Shared {
        config: LocalConfig,
        clock: Arc<dyn Clock>,
        cores: Vec<CoreShared>,
        /// Sessions a core disconnected (bad input): the attach thread closes them.
        kicked: Mutex<Vec<u64>>,
        /// Bytes every session on every core has queued (answers in backlogs, requests in
        /// flight): the global budget [`LocalConfig::queued_bytes_max`].
        queued_bytes: AtomicUsize,
        /// Wakes the attach thread (a session was kicked, the server stops).
        attach_wake: EventFd,
        stop: AtomicBool,
        sessions: AtomicUsize,
    }

    impl Shared {
        fn wake_core(&self, core: usize) {
            let _ = self.cores[core].wake.write(1);
        }

        /// Where a value lives, if in one of the arenas: (core, offset, generation). Takes no
        /// lock, whichever core's arena holds it.
        fn locate(&self, value: &Bytes) -> codec::SharedPlacement {
            let core = self
                .cores
                .iter()
                .find(|core| core.locator.contains(value))?;
            core.locator
                .locate(value)
                .map(|(offset, generation)| (core.index, offset, generation))
        }
    }

    /// The instance, created; the engine is not running yet.
    pub struct Prepared {
        shared: Arc<Shared>,
        instance: std::fs::File,
        instance_path: PathBuf,
        header: instance::InstanceHeader,
        fd_limit: FdLimit,
    }

    /// The running frontend.
    pub struct LocalFrontend {
        shared: Arc<Shared>,
        /// Written with `pwrite`, never through a mapping: the server cannot fault on it even
        /// if the file is truncated under it.
        instance: std::fs::File,
        instance_path: PathBuf,
        socket_path: PathBuf,
        header: instance::InstanceHeader,
        attach_thread: Option<JoinHandle<()>>,
    }

    /// Whether a server answers on the instance's socket.
    fn socket_live(name: &str) -> bool {
        UnixStream::connect(instance::socket_path(name)).is_ok()
    }

    /// Creates the instance: refuses a live one, replaces a stale one (a crashed server's).
    pub fn prepare(
        config: &LocalConfig,
        cores: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Prepared, String> {
        check_config(config)?;
        // Every session holds descriptors: take all the kernel allows before counting them.
        let fd_limit = raise_fd_limit()
            .map_err(|error| format!("cannot read the descriptor limit: {error}"))?;
        if fd_limit.now != fd_limit.before {
            tracing::info!(
                from = fd_limit.before,
                to = fd_limit.now,
                "raised the descriptor limit (RLIMIT_NOFILE) to the hard limit"
            );
        }
        let path = PathBuf::from(instance::path(&config.name));
        replace_stale_instance(&config.name, &path)?;
        let instance_file =
            create_instance_file(&path, instance_file_mode(config.mode)).map_err(|error| {
                match error.kind() {
                    std::io::ErrorKind::AlreadyExists => format!(
                        "the instance {:?} was created by another server just now ({})",
                        config.name,
                        path.display()
                    ),
                    _ => format!("cannot create {}: {error}", path.display()),
                }
            })?;
        let header = instance::InstanceHeader {
            core_count: cores as u32,
            server_pid: u64::from(std::process::id()),
            start_time_ms: clock.unix_ms(),
            instance_id: random_u64(&*clock),
            state: instance::InstanceState::Starting,
            request_ring_bytes: config.ring_bytes,
            response_ring_bytes: config.ring_bytes,
            data_segment_bytes: data_segment::HEADER_BYTES as u64 + config.arena_bytes_per_core,
        };
        write_instance_header(&instance_file, &header)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        let attach_wake = EventFd::new_nonblocking()
            .map_err(|error| format!("cannot create an eventfd: {error}"))?;
        let shared_cores = (0..cores)
            .map(|core| create_core(config, &header, core))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Prepared {
            shared: Arc::new(Shared {
                config: config.clone(),
                clock,
                cores: shared_cores,
                kicked: Mutex::new(Vec::new()),
                queued_bytes: AtomicUsize::new(0),
                attach_wake,
                stop: AtomicBool::new(false),
                sessions: AtomicUsize::new(0),
            }),
            instance: instance_file,
            instance_path: path,
            header,
            fd_limit,
        })
    }

    /// The instance file's mode: the owner reads and writes, the group and others may at most
    /// read (the read bits of `--shm-mode`): 0640 for 0660, 0600 for 0600. A client only reads
    /// it; one that could write it could truncate it under every other client.
    fn instance_file_mode(socket_mode: u32) -> u32 {
        0o600 | (socket_mode & 0o044)
    }

    /// Creates the instance file (`O_CREAT | O_EXCL`, so never through a link), exactly `mode`
    /// whatever the umask, [`instance::FILE_BYTES`] of zeros.
    fn create_instance_file(path: &std::path::Path, mode: u32) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        let setup = file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .and_then(|()| file.set_len(instance::FILE_BYTES as u64));
        if let Err(error) = setup {
            let _ = std::fs::remove_file(path);
            return Err(error);
        }
        Ok(file)
    }

    /// Writes the header page with `pwrite`. Unlike a store through a mapping, this cannot
    /// fault: if the file was truncated, it is simply extended again.
    fn write_instance_header(
        file: &std::fs::File,
        header: &instance::InstanceHeader,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut page = vec![0u8; instance::FILE_BYTES];
        header.write_to(&mut page);
        file.write_all_at(&page, 0)
    }

    /// The header of an existing instance file, if it has a valid one. Read with `read(2)`
    /// (never mapped: a file others could truncate would fault a mapping), not following a
    /// link, not blocking on a FIFO, at most one page whatever its size.
    fn read_instance_header(path: &std::path::Path) -> Option<instance::InstanceHeader> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        if !file.metadata().ok()?.file_type().is_file() {
            return None;
        }
        let mut page = Vec::with_capacity(instance::FILE_BYTES);
        file.take(instance::FILE_BYTES as u64)
            .read_to_end(&mut page)
            .ok()?;
        instance::InstanceHeader::read(&page).ok()
    }

    /// The name is valid and the ring size a power of two in range.
    fn check_config(config: &LocalConfig) -> Result<(), String> {
        instance::check_name(&config.name)?;
        if !config.ring_bytes.is_power_of_two()
            || ring_format::check_ring_bytes(config.ring_bytes).is_err()
        {
            return Err(format!(
                "ring size {} must be a power of two between {} and {}",
                config.ring_bytes,
                ring_format::MIN_RING_BYTES,
                ring_format::MAX_RING_BYTES
            ));
        }
        // A session with nothing in flight and nothing queued is never paused (the fast path
        // of `serve_session` relies on it).
        if config.session_in_flight_max == 0 || config.session_queued_bytes_max == 0 {
            return Err("a session's in-flight and queued limits must be at least 1".into());
        }
        Ok(())
    }

    /// Refuses an instance of this name that a live server answers for; removes a stale one
    /// (a crashed server's files).
    fn replace_stale_instance(name: &str, path: &std::path::Path) -> Result<(), String> {
        let socket = PathBuf::from(instance::socket_path(name));
        if !path.exists() && !socket.exists() {
            return Ok(());
        }
        let previous = read_instance_header(path);
        if socket_live(name) {
            return Err(format!(
                "the instance {name:?} is in use by a running server{} ({}); stop it or choose \
                 another --name",
                previous.map_or(String::new(), |h| format!(" (pid {})", h.server_pid)),
                path.display()
            ));
        }
        tracing::warn!(
            instance = %name,
            pid = previous.map(|h| h.server_pid),
            alive = previous.is_some_and(|h| process_alive(h.server_pid as i32)),
            "replacing a stale instance (its server is gone)"
        );
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(&socket);
        Ok(())
    }

    /// One core's data segment (sealed, with its header and its arena) and eventfd.
    fn create_core(
        config: &LocalConfig,
        header: &instance::InstanceHeader,
        core: usize,
    ) -> Result<CoreShared, String> {
        let max_block = (config.value_bytes_max + veddb_shm::BLOCK_HEADER_BYTES)
            .next_power_of_two()
            .clamp(veddb_shm::MIN_BLOCK_BYTES, 1 << 33);
        let (data, arena) = create_data_segment(
            &format!("veddb-data-{core}"),
            data_segment::HEADER_BYTES,
            config.arena_bytes_per_core as usize,
            data_segment::GLOBAL_EPOCH_OFFSET,
            max_block,
            |segment| {
                let mut page = vec![0u8; data_segment::HEADER_BYTES];
                data_segment::DataHeader::new(
                    core as u32,
                    header.instance_id,
                    header.data_segment_bytes,
                )
                .write_to(&mut page);
                segment.write_bytes(0, &page);
            },
        )
        .map_err(|error| format!("cannot create the data segment of core {core}: {error}"))?;
        let wake = EventFd::new_nonblocking()
            .map_err(|error| format!("cannot create an eventfd: {error}"))?;
        Ok(CoreShared {
            index: core as u32,
            data,
            locator: arena.locator(),
            arena: Mutex::new(Some(arena)),
            wake,
            control: AtomicBool::new(false),
            incoming: Mutex::new(Vec::new()),
            departed: Mutex::new(Vec::new()),
        })
    }

    impl Prepared {
        /// What each core gets, on its own thread before it starts: its arena, installed as
        /// its shard's value store (every stored value lives in shared memory, so local reads
        /// need no copy), and the source its loop polls for this frontend's sessions.
        pub fn core_setup(&self) -> CoreSetup {
            let shared = self.shared.clone();
            CoreSetup(Arc::new(move |core, shard| {
                let taken = shared.cores[core as usize]
                    .arena
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let Some(arena) = taken else {
                    tracing::error!(core, "the local frontend's arena was taken twice");
                    return None;
                };
                let arena = Rc::new(RefCell::new(arena));
                let store = arena.clone();
                shard.set_value_store(Some(Box::new(move |value: Bytes| {
                    store_value(&store, value)
                })));
                Some(
                    Box::new(LocalCore::new(shared.clone(), core as usize, arena))
                        as Box<dyn CoreSource>,
                )
            }))
        }

        /// Removes the instance of a frontend that never started (so no stale files remain).
        pub fn discard(self) {
            let _ = std::fs::remove_file(&self.instance_path);
        }

        /// Starts the attach thread; the instance is then ready. The engine must run with
        /// [`core_setup`](Self::core_setup) installed.
        pub fn start(self, _engine: &Engine) -> Result<LocalFrontend, String> {
            let Prepared {
                shared,
                instance: instance_file,
                instance_path,
                mut header,
                fd_limit,
            } = self;
            let started = (|| {
                let readiness = Readiness::new()
                    .map_err(|error| format!("cannot create an epoll set: {error}"))?;
                // Counted with the engine and the other frontends running; the listener to come.
                let fds_open = open_fd_count()
                    .map_err(|error| format!("cannot count open descriptors: {error}"))?
                    + 1;
                let cores = shared.cores.len();
                let sessions_max =
                    super::sessions_max(shared.config.sessions_max, cores, fd_limit.now, fds_open)?;
                tracing::info!(
                    sessions_max,
                    fd_limit = fd_limit.now,
                    fds_open,
                    fds_per_session = super::fds_per_session(cores),
                    fd_reserve = super::FD_RESERVE + super::FD_RESERVE_PER_CORE * cores as u64,
                    handshake_timeout_ms = shared.config.handshake_timeout.as_millis() as u64,
                    "local clients: session limit"
                );
                let metadata = instance_file
                    .metadata()
                    .map_err(|error| format!("cannot stat {}: {error}", instance_path.display()))?;
                let owner = Owner {
                    uid: metadata.uid(),
                    gid: metadata.gid(),
                };
                Ok::<_, String>((readiness, sessions_max, owner))
            })();
            let (readiness, sessions_max, owner) = match started {
                Ok(started) => started,
                Err(error) => {
                    let _ = std::fs::remove_file(&instance_path);
                    return Err(error);
                }
            };
            let socket_path = PathBuf::from(instance::socket_path(&shared.config.name));
            let listener = UnixListener::bind(&socket_path)
                .map_err(|error| format!("cannot listen on {}: {error}", socket_path.display()))?;
            let _ = std::fs::set_permissions(
                &socket_path,
                std::fs::Permissions::from_mode(shared.config.mode),
            );
            listener
                .set_nonblocking(true)
                .map_err(|error| format!("cannot configure {}: {error}", socket_path.display()))?;
            readiness
                .watch_readable(listener.as_fd(), LISTENER_TOKEN)
                .and_then(|()| readiness.watch_readable(shared.attach_wake.as_fd(), WAKE_TOKEN))
                .map_err(|error| format!("cannot watch {}: {error}", socket_path.display()))?;
            let attach_shared = shared.clone();
            let attach_thread = std::thread::Builder::new()
                .name("veddb-local-attach".into())
                .spawn(move || {
                    attach_loop(
                        listener,
                        readiness,
                        attach_shared,
                        header,
                        owner,
                        sessions_max,
                    )
                })
                .map_err(|error| format!("cannot start the attach thread: {error}"))?;
            header.state = instance::InstanceState::Ready;
            if let Err(error) = write_instance_header(&instance_file, &header) {
                tracing::error!(%error, path = %instance_path.display(), "cannot mark the instance ready");
            }
            Ok(LocalFrontend {
                shared,
                instance: instance_file,
                instance_path,
                socket_path,
                header,
                attach_thread: Some(attach_thread),
            })
        }
    }

    impl LocalFrontend {
        /// Sessions attached now.
        pub fn sessions(&self) -> usize {
            self.shared.sessions.load(Ordering::Relaxed)
        }

        /// Tells every client the server is stopping, marks the instance stopped and removes
        /// its files. Call before the engine shuts down.
        pub fn shutdown(mut self) {
            self.stop();
        }

        fn stop(&mut self) {
            self.shared.stop.store(true, Ordering::SeqCst);
            let _ = self.shared.attach_wake.write(1);
            for core in 0..self.shared.cores.len() {
                self.shared.wake_core(core);
            }
            if let Some(thread) = self.attach_thread.take() {
                let _ = thread.join();
            }
            self.header.state = instance::InstanceState::Stopped;
            // pwrite: whatever happened to the file (truncated by anyone), this cannot fault.
            let _ = write_instance_header(&self.instance, &self.header);
            let _ = std::fs::remove_file(&self.socket_path);
            let _ = std::fs::remove_file(&self.instance_path);
        }
    }

    impl Drop for LocalFrontend {
        fn drop(&mut self) {
            if self.attach_thread.is_some() {
                self.stop();
            }
        }
    }

    /// A value for the shard from bytes that are not a `Bytes` yet: in the arena, tagged as
    /// [`store_value`] tags it (so the shard's value store is not asked again), or a copy of its
    /// own (tag 0) when the arena has no room.
    fn store_value_slice(arena: &RefCell<Arena>, value: &[u8]) -> veddb_shard::MadeValue {
        let (bytes, tag) = alloc_tagged(&mut arena.borrow_mut(), value)
            .unwrap_or_else(|| (Bytes::copy_from_slice(value), 0));
        veddb_shard::MadeValue {
            bytes,
            stored_tag: Some(tag),
        }
    }

    /// A copy of `value` in a block of the arena, with the block's generation (its tag);
    /// `None` when the arena has no room.
    fn alloc_tagged(arena: &mut Arena, value: &[u8]) -> Option<(Bytes, u64)> {
        let stored = arena.alloc_value(value)?;
        let generation = stored.block().generation();
        Some((stored.into_bytes(), generation))
    }

    /// The shard's value store: the value in the arena, tagged with its block's generation
    /// (0: not in the arena), which a GET answers with without reading the block's header.
    fn store_value(arena: &RefCell<Arena>, value: Bytes) -> (Bytes, u64) {
        let mut arena = arena.borrow_mut();
        if let Some((_, generation)) = arena.locate(&value) {
            return (value, generation);
        }
        alloc_tagged(&mut arena, &value).unwrap_or((value, 0))
    }

    // ---- the attach thread ---------------------------------------------------------------
    //
    // One thread, driven by readiness (epoll): it sleeps until the attach socket, a handshake
    // in progress or an attached session's socket needs it, a core asks it to close a session,
    // the server stops, or the next deadline comes (a handshake's, the heartbeat check's). No
    // call on a client's socket ever blocks: every socket is non-blocking, and a handshake that
    // does not complete within its one deadline is closed, so a silent connection delays no one.

    /// The attach thread's token for the attach socket.
    const LISTENER_TOKEN: u64 = u64::MAX;
    /// The attach thread's token for its eventfd ([`Shared::attach_wake`]).
    const WAKE_TOKEN: u64 = u64::MAX - 1;

    /// Who may attach besides root: the instance file's owner, and its group when the mode
    /// grants the group the socket. Read from the server's own descriptor of the file at
    /// start, never from the path again.
    #[derive(Clone, Copy, Debug)]
    struct Owner {
        uid: u32,
        gid: u32,
    }

    struct AttachedSession {
        stream: UnixStream,
        pid: i32,
        rings: Vec<Arc<Segment>>,
        attached_at: Instant,
    }

    /// A connection whose handshake is in progress: accepted, its hello not all read yet.
    struct Handshake {
        stream: UnixStream,
        pid: i32,
        /// Why it will be refused, known at accept (the peer may not attach). Told once the
        /// hello is in: the client writes its hello before it reads, so it then reads the
        /// reason instead of failing to write to a closed socket.
        refusal: Option<String>,
        hello: [u8; attach::HELLO.len()],
        received: usize,
        /// The one deadline of the whole handshake.
        deadline: Instant,
    }

    /// Everything the attach thread holds.
    struct AttachState {
        listener: UnixListener,
        readiness: Readiness,
        header: instance::InstanceHeader,
        owner: Owner,
        sessions_max: usize,
        handshakes: HashMap<u64, Handshake>,
        sessions: HashMap<u64, AttachedSession>,
        /// The next session id (also the connection's token; never 0, far below the tokens
        /// above).
        next_id: u64,
        /// The attach socket is not watched until then (accept failed: out of descriptors or
        /// memory), so a failing accept cannot spin the thread.
        listener_paused_until: Option<Instant>,
        next_heartbeat_check: Instant,
    }

    impl AttachState {
        /// When the thread must wake even if no socket is ready.
        fn next_deadline(&self) -> Instant {
            self.handshakes
                .values()
                .map(|handshake| handshake.deadline)
                .chain(self.listener_paused_until)
                .fold(self.next_heartbeat_check, Instant::min)
        }
    }

    /// How often the attach thread checks heartbeats (and that each client process still
    /// exists): a quarter of `--session-timeout`, at most once a second. Reading one word per
    /// session, it costs microseconds even for thousands of sessions.
    fn heartbeat_check_interval(config: &LocalConfig) -> Duration {
        (config.session_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// The attach thread: accepts clients and runs their handshakes, watches attached sessions
    /// end (socket closed, process gone, heartbeat silent, disconnected by a core), and tells
    /// every client when the server stops.
    fn attach_loop(
        listener: UnixListener,
        readiness: Readiness,
        shared: Arc<Shared>,
        header: instance::InstanceHeader,
        owner: Owner,
        sessions_max: usize,
    ) {
        let mut state = AttachState {
            listener,
            readiness,
            header,
            owner,
            sessions_max,
            handshakes: HashMap::new(),
            sessions: HashMap::new(),
            next_id: 1,
            listener_paused_until: None,
            next_heartbeat_check: shared.clock.monotonic(),
        };
        let mut events = Vec::with_capacity(veddb_shm::READY_EVENTS_MAX);
        while !shared.stop.load(Ordering::SeqCst) {
            let timeout = state
                .next_deadline()
                .saturating_duration_since(shared.clock.monotonic());
            if let Err(error) = state.readiness.wait(&mut events, Some(timeout)) {
                tracing::error!(%error, "the local attach thread cannot wait for its sockets");
                std::thread::sleep(ACCEPT_PAUSE);
            }
            for event in &events {
                match event.token {
                    LISTENER_TOKEN => accept_clients(&shared, &mut state),
                    WAKE_TOKEN => {
                        let _ = shared.attach_wake.read();
                    }
                    id if state.handshakes.contains_key(&id) => read_hello(&shared, &mut state, id),
                    id => {
                        if let Some((why, code)) = session_socket_ready(&state, id, event) {
                            if let Some(session) = state.sessions.remove(&id) {
                                detach(&shared, id, session, why, code, state.sessions.len());
                            }
                        }
                    }
                }
            }
            let now = shared.clock.monotonic();
            expire_handshakes(&mut state, now);
            if state
                .listener_paused_until
                .is_some_and(|until| now >= until)
            {
                state.listener_paused_until = None;
                if let Err(error) = state
                    .readiness
                    .watch_readable(state.listener.as_fd(), LISTENER_TOKEN)
                {
                    tracing::error!(%error, "cannot watch the local attach socket again");
                    state.listener_paused_until = Some(now + ACCEPT_PAUSE);
                }
            }
            let check_heartbeats = now >= state.next_heartbeat_check;
            if check_heartbeats {
                state.next_heartbeat_check = now + heartbeat_check_interval(&shared.config);
            }
            for (id, why, code) in ended_sessions(&shared, &state.sessions, check_heartbeats) {
                if let Some(session) = state.sessions.remove(&id) {
                    detach(&shared, id, session, why, code, state.sessions.len());
                }
            }
            shared
                .sessions
                .store(state.sessions.len(), Ordering::Relaxed);
        }
        for (_, handshake) in state.handshakes.drain() {
            refuse(&handshake.stream, "the server is stopping");
        }
        for session in state.sessions.values() {
            for ring in &session.rings {
                mark_disconnected(ring, reason::SERVER_STOPPING);
            }
            let _ = session.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accepts the clients waiting on the socket (at most [`HANDSHAKES_MAX`] per call, so a
    /// flood of connections cannot keep the thread here: the socket stays ready for the next
    /// round) and starts their handshakes (the hello is read when it arrives, not waited for).
    fn accept_clients(shared: &Shared, state: &mut AttachState) {
        for _ in 0..HANDSHAKES_MAX {
            let stream = match state.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(error) => {
                    // Out of descriptors or memory: the connection waits in the backlog while
                    // the socket is left alone for a moment (it stays readable: watching it
                    // would spin).
                    tracing::warn!(
                        %error,
                        pause_ms = ACCEPT_PAUSE.as_millis() as u64,
                        "accept on the local socket failed; pausing attaches"
                    );
                    let _ = state.readiness.unwatch(state.listener.as_fd());
                    state.listener_paused_until = Some(shared.clock.monotonic() + ACCEPT_PAUSE);
                    return;
                }
            };
            let id = state.next_id;
            state.next_id += 1;
            if let Err(error) = stream.set_nonblocking(true) {
                tracing::warn!(session = id, %error, "attach dropped: cannot configure its socket");
                continue;
            }
            let (pid, refusal) = match peer_credentials(&stream) {
                Ok(credentials) => (
                    credentials.pid,
                    check_peer(shared, state.owner, &stream, &credentials).err(),
                ),
                Err(error) => (0, Some(format!("no peer credentials: {error}"))),
            };
            if state.handshakes.len() >= HANDSHAKES_MAX {
                // Room for the newest: a well-behaved client sends its hello as soon as it
                // connects, so the oldest handshake in progress is the likeliest to be silent.
                let oldest = state
                    .handshakes
                    .iter()
                    .min_by_key(|(_, handshake)| handshake.deadline)
                    .map(|(&oldest, _)| oldest);
                if let Some(handshake) = oldest.and_then(|oldest| state.handshakes.remove(&oldest))
                {
                    tracing::warn!(
                        session = oldest,
                        pid = handshake.pid,
                        limit = HANDSHAKES_MAX,
                        "attach refused: too many handshakes in progress; the oldest is closed"
                    );
                    refuse(&handshake.stream, "too many attach handshakes in progress");
                }
            }
            if let Err(error) = state.readiness.watch_readable(stream.as_fd(), id) {
                tracing::warn!(session = id, pid, %error, "attach dropped: cannot watch its socket");
                refuse(&stream, "the server cannot watch this connection");
                continue;
            }
            state.handshakes.insert(
                id,
                Handshake {
                    stream,
                    pid,
                    refusal,
                    hello: [0; attach::HELLO.len()],
                    received: 0,
                    deadline: shared.clock.monotonic() + shared.config.handshake_timeout,
                },
            );
        }
    }

    /// Reads what arrived of a handshake's hello (never blocking); once it is complete, the
    /// client is attached or told why not.
    fn read_hello(shared: &Shared, state: &mut AttachState, id: u64) {
        let Some(handshake) = state.handshakes.get_mut(&id) else {
            return;
        };
        loop {
            let Handshake {
                stream,
                hello,
                received,
                ..
            } = &mut *handshake;
            match (&*stream).read(&mut hello[*received..]) {
                Ok(0) => {
                    tracing::debug!(session = id, "closed before its hello");
                    state.handshakes.remove(&id);
                    return;
                }
                Ok(read) => {
                    *received += read;
                    if *received == hello.len() {
                        break;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!(session = id, %error, "closed before its hello");
                    state.handshakes.remove(&id);
                    return;
                }
            }
        }
        let Some(handshake) = state.handshakes.remove(&id) else {
            return;
        };
        let refusal = if &handshake.hello != attach::HELLO {
            Some("bad hello (not a VedDB client of this version?)".to_owned())
        } else if handshake.refusal.is_some() {
            handshake.refusal
        } else if state.sessions.len() >= state.sessions_max {
            Some(format!(
                "too many sessions: this server allows {} at once (--max-sessions); try again \
                 once one detaches",
                state.sessions_max
            ))
        } else {
            let sessions = state.sessions.len() + 1;
            match attach(
                shared,
                &state.header,
                &handshake.stream,
                id,
                handshake.pid,
                sessions,
            ) {
                Ok(rings) => {
                    let attached_at = shared.clock.monotonic();
                    state.sessions.insert(
                        id,
                        AttachedSession {
                            stream: handshake.stream,
                            pid: handshake.pid,
                            rings,
                            attached_at,
                        },
                    );
                    shared
                        .sessions
                        .store(state.sessions.len(), Ordering::Relaxed);
                    return;
                }
                Err(reason_text) => Some(reason_text),
            }
        };
        let reason_text = refusal.unwrap_or_default();
        tracing::warn!(
            session = id,
            pid = handshake.pid,
            sessions = state.sessions.len(),
            "attach refused: {reason_text}"
        );
        refuse(&handshake.stream, &reason_text);
    }

    /// Tells a client why it may not attach (best effort: its socket is never waited on), then
    /// closes the connection when the caller drops it.
    fn refuse(stream: &UnixStream, reason_text: &str) {
        let mut reply = attach::REFUSED_MAGIC.to_vec();
        reply.extend_from_slice(reason_text.as_bytes());
        let _ = send_with_fds(stream, &reply, &[]);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    /// Closes every handshake whose deadline passed.
    fn expire_handshakes(state: &mut AttachState, now: Instant) {
        let expired: Vec<u64> = state
            .handshakes
            .iter()
            .filter(|(_, handshake)| now >= handshake.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(handshake) = state.handshakes.remove(&id) {
                tracing::warn!(
                    session = id,
                    pid = handshake.pid,
                    received = handshake.received,
                    "attach refused: no hello within the handshake deadline"
                );
                refuse(&handshake.stream, "no hello within the handshake deadline");
            }
        }
    }

    /// An attached session's socket became ready: why the session ended, if it did. The client
    /// sends nothing after its hello, so a readable socket means it closed (end of file, an
    /// error) or broke the protocol (bytes).
    fn session_socket_ready(
        state: &AttachState,
        id: u64,
        event: &ReadyEvent,
    ) -> Option<(&'static str, Option<u32>)> {
        let session = state.sessions.get(&id)?;
        let mut bytes = [0u8; 64];
        match (&session.stream).read(&mut bytes) {
            Ok(0) => Some(("the client closed its socket or exited", None)),
            Ok(_) => Some((
                "it sent bytes on its attach socket after the handshake",
                Some(reason::BAD_FRAME),
            )),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                event
                    .closed
                    .then_some(("the client closed its socket or exited", None))
            }
            Err(_) => Some(("the client closed its socket or exited", None)),
        }
    }

    /// Sessions that ended otherwise than by their socket: a core disconnected them (checked
    /// at every wake-up: the core wakes this thread), or, when `check_heartbeats`, the process
    /// is gone or the heartbeat stopped. (id, why, the reason code to write into its rings
    /// when the client does not know yet.)
    fn ended_sessions(
        shared: &Shared,
        sessions: &HashMap<u64, AttachedSession>,
        check_heartbeats: bool,
    ) -> Vec<(u64, &'static str, Option<u32>)> {
        let kicked: Vec<u64> =
            std::mem::take(&mut *shared.kicked.lock().unwrap_or_else(|e| e.into_inner()));
        let mut ended: Vec<(u64, &'static str, Option<u32>)> = kicked
            .into_iter()
            .filter(|id| sessions.contains_key(id))
            .map(|id| (id, "disconnected by a core (bad input)", None))
            .collect();
        if !check_heartbeats {
            return ended;
        }
        let now = shared.clock.unix_ms();
        let monotonic = shared.clock.monotonic();
        let timeout_ms = shared.config.session_timeout.as_millis() as u64;
        for (&id, session) in sessions {
            if ended.iter().any(|&(ended_id, _, _)| ended_id == id) {
                continue;
            }
            let heartbeat =
                session.rings[0].load_u64(ring_segment::CLIENT_HEARTBEAT_OFFSET, Ordering::Acquire);
            let silent = monotonic.duration_since(session.attached_at)
                > shared.config.session_timeout
                && now.saturating_sub(heartbeat) > timeout_ms;
            if !process_alive(session.pid) {
                ended.push((id, "the client closed its socket or exited", None));
            } else if silent {
                ended.push((
                    id,
                    "no heartbeat within --session-timeout",
                    Some(reason::HEARTBEAT_TIMEOUT),
                ));
            }
        }
        ended
    }

    /// Ends a session everywhere: its rings marked (when the client must be told why), its
    /// socket shut, every core told to stop serving it. `sessions` is how many remain.
    fn detach(
        shared: &Shared,
        id: u64,
        session: AttachedSession,
        why: &str,
        code: Option<u32>,
        sessions: usize,
    ) {
        if let Some(code) = code {
            for ring in &session.rings {
                mark_disconnected(ring, code);
            }
        }
        let _ = session.stream.shutdown(std::net::Shutdown::Both);
        for core in &shared.cores {
            core.send_control(|core| {
                core.departed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(id)
            });
        }
        shared.sessions.store(sessions, Ordering::Relaxed);
        tracing::info!(
            session = id,
            pid = session.pid,
            sessions,
            "local client detached: {why}"
        );
    }

    /// Writes the disconnect reason and state into a ring segment's header and wakes its
    /// client.
    fn mark_disconnected(ring: &Segment, code: u32) {
        ring.atomic_u32(ring_segment::DISCONNECT_REASON_OFFSET)
            .store(code, Ordering::Release);
        ring.atomic_u32(ring_segment::SERVER_STATUS_OFFSET)
            .store(ring_segment::SERVER_DISCONNECTED, Ordering::Release);
        wake_word(ring.atomic_u32(ring_segment::CLIENT_WAIT_OFFSET));
    }

    /// The session's ring segments, one per core: header written, heartbeat started, size
    /// sealed.
    fn create_session_rings(
        shared: &Shared,
        header: &instance::InstanceHeader,
        id: u64,
    ) -> Result<Vec<Arc<Segment>>, String> {
        let ring_bytes = shared.config.ring_bytes;
        let mut rings = Vec::with_capacity(shared.cores.len());
        for core in 0..shared.cores.len() {
            let segment = Segment::create(
                &format!("veddb-ring-{id}-{core}"),
                ring_segment::segment_bytes(ring_bytes, ring_bytes),
            )
            .map_err(|error| format!("cannot create a ring segment: {error}"))?;
            let mut page = vec![0u8; ring_segment::HEADER_BYTES];
            ring_segment::RingHeader {
                core: core as u32,
                session_id: id,
                request_ring_bytes: ring_bytes,
                response_ring_bytes: ring_bytes,
                instance_id: header.instance_id,
            }
            .write_to(&mut page);
            segment.write_bytes(0, &page);
            segment
                .atomic_u64(ring_segment::CLIENT_HEARTBEAT_OFFSET)
                .store(shared.clock.unix_ms(), Ordering::Release);
            segment
                .seal_size()
                .map_err(|error| format!("cannot seal a ring segment: {error}"))?;
            rings.push(Arc::new(segment));
        }
        Ok(rings)
    }

    /// Whether the client may attach: root, the instance's owner, or (when `--shm-mode` grants
    /// the group the socket) a member of the instance file's group, as its primary group or a
    /// supplementary one. Both come from the kernel's record of the connection
    /// (`SO_PEERCRED`, `SO_PEERGROUPS`), not from the process, which may have changed since.
    fn check_peer(
        shared: &Shared,
        owner: Owner,
        stream: &UnixStream,
        credentials: &PeerCredentials,
    ) -> Result<(), String> {
        if credentials.uid == 0 || credentials.uid == owner.uid {
            return Ok(());
        }
        if shared.config.mode & 0o060 != 0 {
            if credentials.gid == owner.gid {
                return Ok(());
            }
            match peer_groups(stream) {
                Ok(groups) if groups.contains(&owner.gid) => return Ok(()),
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    pid = credentials.pid,
                    %error,
                    "cannot read a local client's supplementary groups; only its primary group counts"
                ),
            }
        }
        Err(format!(
            "uid {} may not attach (the instance belongs to uid {} and group {}; --shm-mode 660 \
             lets members of that group attach)",
            credentials.uid, owner.uid, owner.gid
        ))
    }

    /// Attaches a client whose hello arrived: creates its rings, hands over the segments and
    /// eventfds (one message, never waited on), then gives each core the session. `sessions`
    /// is how many are attached with this one.
    fn attach(
        shared: &Shared,
        header: &instance::InstanceHeader,
        stream: &UnixStream,
        id: u64,
        pid: i32,
        sessions: usize,
    ) -> Result<Vec<Arc<Segment>>, String> {
        let rings = create_session_rings(shared, header, id)?;
        let ring_bytes = shared.config.ring_bytes;
        let reply = attach::AttachReply {
            core_count: shared.cores.len() as u32,
            session_id: id,
            instance_id: header.instance_id,
            request_ring_bytes: ring_bytes,
            response_ring_bytes: ring_bytes,
            data_segment_bytes: header.data_segment_bytes,
            view_lease_ms: shared.config.view_lease.as_millis() as u64,
        };
        let mut fds: Vec<RawFd> = Vec::with_capacity(shared.cores.len() * 3);
        for core in &shared.cores {
            fds.push(
                core.data
                    .fd()
                    .ok_or("a data segment without a descriptor")?
                    .as_raw_fd(),
            );
        }
        for ring in &rings {
            fds.push(
                ring.fd()
                    .ok_or("a ring segment without a descriptor")?
                    .as_raw_fd(),
            );
        }
        for core in &shared.cores {
            fds.push(core.wake.as_fd().as_raw_fd());
        }
        // The socket is non-blocking: a client that cannot take 56 bytes is not attached.
        send_with_fds(stream, &reply.encode(), &fds)
            .map_err(|error| format!("cannot send the segments: {error}"))?;
        // Logged before any core has the session, so the attach line always precedes
        // anything the session's cores log about it.
        tracing::info!(session = id, pid, sessions, "local client attached");
        for (core, ring) in shared.cores.iter().zip(&rings) {
            core.send_control(|core| {
                core.incoming
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, ring.clone()))
            });
        }
        Ok(rings)
    }

    // ---- each core's task ----------------------------------------------------------------

    struct Session {
        id: u64,
        ring: Arc<Segment>,
        requests: RingConsumer,
        responses: RingProducer,
        backlog: VecDeque<Vec<u8>>,
        backlog_bytes: usize,
        /// The buffer answers are encoded in before they go to the ring, kept between answers
        /// (no allocation per answer); one that went to the backlog is replaced.
        encoded: Vec<u8>,
        /// Work started and not answered yet (units of [`request_cost`]), and its request bytes.
        in_flight: usize,
        in_flight_bytes: usize,
        /// Since when (core clock, ms) reading this session is paused by a limit.
        paused_since_ms: Option<u64>,
        /// Paused at the last round (its requests are no work until a limit frees).
        paused: bool,
        dead: bool,
        /// Subscriptions this session made: removed when it ends, however it ends (closed
        /// when the core buries the session, and by drop for an answer that arrives later).
        subscriptions: Subscriptions,
        /// Its pushed subscriptions on this core, and those with messages to deliver (see
        /// [`push`]).
        pushes: SessionPushes,
        /// Large values it sent ahead of their requests (see [`upload`]).
        uploads: Uploads,
    }

    type SessionRef = Rc<RefCell<Session>>;

    fn open_session(
        context: &CoreContext,
        id: u64,
        ring: Arc<Segment>,
        ring_bytes: u32,
        core_upload_bytes: Rc<Cell<usize>>,
    ) -> Option<Session> {
        let request_ring = ByteRing {
            head_offset: ring_segment::REQUEST_HEAD_OFFSET,
            data_offset: ring_segment::REQUEST_RING_OFFSET,
            size: ring_bytes as usize,
        };
        let response_ring = ByteRing {
            head_offset: ring_segment::RESPONSE_HEAD_OFFSET,
            data_offset: ring_segment::response_ring_offset(ring_bytes),
            size: ring_bytes as usize,
        };
        let requests = request_ring.consumer(ring.clone()).ok()?;
        let responses = response_ring.producer(ring.clone()).ok()?;
        Some(Session {
            id,
            ring,
            requests,
            responses,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            encoded: Vec::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            paused_since_ms: None,
            paused: false,
            dead: false,
            subscriptions: Subscriptions::new(context),
            pushes: SessionPushes::default(),
            uploads: Uploads::new(core_upload_bytes),
        })
    }

    /// Marks the session disconnected (in its ring header, for the client) and asks the
    /// attach thread to close it everywhere.
    fn disconnect(shared: &Shared, session: &mut Session, code: u32, detail: &str) {
        if session.dead {
            return;
        }
        session.dead = true;
        tracing::warn!(
            session = session.id,
            reason = reason::describe(code),
            "disconnecting a local client: {detail}"
        );
        mark_disconnected(&session.ring, code);
        shared
            .kicked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(session.id);
        let _ = shared.attach_wake.write(1);
    }

    /// Wakes a client sleeping on its wait word. The word is reset before the wake: a client
    /// between its last check and `futex_wait` then finds the word changed and does not sleep
    /// (waking without changing it would be lost).
    fn wake_word(word: &std::sync::atomic::AtomicU32) {
        if word.swap(ring_segment::CLIENT_AWAKE, Ordering::SeqCst) == ring_segment::CLIENT_SLEEPING
        {
            futex_wake(word, 1);
        }
    }

    fn wake_client(session: &Session) {
        fence(Ordering::SeqCst);
        let word = session.ring.atomic_u32(ring_segment::CLIENT_WAIT_OFFSET);
        if word.load(Ordering::SeqCst) == ring_segment::CLIENT_SLEEPING {
            wake_word(word);
        }
    }

    /// Writes one answer to the session's response ring (or its backlog while the ring is full).
    fn respond(shared: &Shared, session: &SessionRef, id: u32, response: Response) {
        let mut session = session.borrow_mut();
        // Even for a session that died meanwhile: its subscriptions end with it.
        session.subscriptions.note(&response);
        if session.dead {
            return;
        }
        if answer(shared, &mut session, id, &response) {
            wake_client(&session);
        }
    }

    /// Encodes `response` and [`push_answer`]s it; whether it went straight to the ring. (A
    /// frame too large for the session's rings is replaced by an error saying so.)
    fn answer(shared: &Shared, session: &mut Session, id: u32, response: &Response) -> bool {
        let max = session.responses.ring().max_payload();
        let placement = |value: &Bytes| shared.locate(value);
        let mut frame = std::mem::take(&mut session.encoded);
        codec::encode_response_into(id, response, placement, &mut frame);
        if frame.len() > max {
            let error = Error::InvalidArgument(format!(
                "the answer of {} bytes is larger than the {max}-byte frames of this session's \
                 rings; read it in smaller parts or over gRPC",
                frame.len()
            ));
            codec::encode_response_into(id, &Response::Error(error), codec::all_inline, &mut frame);
        }
        let pushed = push_answer(shared, session, &frame);
        // Kept for the next answer, unless a large one grew it.
        if frame.capacity() <= ENCODE_BUFFER_KEPT {
            session.encoded = frame;
        }
        pushed
    }

    /// Puts an encoded answer into the session's response ring, or at the end of its backlog
    /// while the ring is full (or older answers wait there); whether it went to the ring. The
    /// caller wakes the client ([`wake_client`]) once for the answers it pushed.
    fn push_answer(shared: &Shared, session: &mut Session, frame: &[u8]) -> bool {
        if session.backlog.is_empty() {
            match session.responses.try_push(frame) {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    let detail = error.to_string();
                    disconnect(shared, session, RingError::reason(&error), &detail);
                    return false;
                }
            }
        }
        session.backlog_bytes += frame.len();
        shared
            .queued_bytes
            .fetch_add(frame.len(), Ordering::Relaxed);
        session.backlog.push_back(frame.to_vec());
        // Reading stops at the session's limit; answers of work already started keep coming.
        // Four times the limit means it does not read them at all.
        if session.backlog_bytes > shared.config.session_queued_bytes_max.saturating_mul(4) {
            let detail = format!(
                "it does not read its answers ({} bytes queued, limit {} per session)",
                session.backlog_bytes, shared.config.session_queued_bytes_max
            );
            disconnect(shared, session, reason::RESPONSE_BACKLOG, &detail);
        }
        false
    }

    /// Serves the usual requests of this core's own keys, a GET or a SET (the caller checked
    /// there is no log), from `payload`, the private copy of `frame`'s payload in the core's kept
    /// buffer, decoded as slices, with the answer written straight into the response ring: no
    /// `Request`, no `Response` for a GET, no payload allocation, no clone of a value's handle;
    /// a SET's value is copied once, from that copy into the arena. Consumes the frame and
    /// returns whether the answer went to the ring (`None`: not such a request; the frame is
    /// left for the general way).
    fn serve_in_place(
        context: &CoreContext,
        shared: &Shared,
        arena: &RefCell<Arena>,
        session: &mut Session,
        frame: &FrameRef,
        payload: &[u8],
        (core, cores): (u32, u32),
    ) -> Option<bool> {
        let owned = |key: &[u8]| cores == 1 || veddb_wire::shard_for_key(key, cores) == core;
        if let Some((id, key)) = codec::get_request(payload) {
            if !owned(key) {
                return None;
            }
            session.requests.consume(*frame);
            return Some(answer_get(context, shared, session, id, key));
        }
        let (id, key, value, options) = codec::set_request(payload)?;
        if !owned(key) {
            return None;
        }
        session.requests.consume(*frame);
        let now = context.now_ms();
        // The value is copied once the SET will happen (a refused one copies nothing): into the
        // arena (where the shard's value store keeps it), or a copy of its own when the arena
        // has no room. The key is borrowed: copied only where the shard keeps it.
        let outcome = context.with_shard(|shard| {
            shard.set_with(
                veddb_shard::KeyArg::Borrowed(key),
                value.len(),
                || store_value_slice(arena, value),
                options,
                now,
            )
        });
        Some(match outcome {
            Ok(Some(version)) => {
                push_answer(shared, session, &codec::encode_stored_answer(id, version))
            }
            Ok(None) => answer(shared, session, id, &Response::NotStored),
            Err(error) => answer(shared, session, id, &Response::Error(error)),
        })
    }

    /// Answers GET `id` of `key` (this core's) into the response ring; whether it went there.
    fn answer_get(
        context: &CoreContext,
        shared: &Shared,
        session: &mut Session,
        id: u32,
        key: &[u8],
    ) -> bool {
        let now = context.now_ms();
        let core = context.index();
        let locator = &shared.cores[core as usize].locator;
        let found = context.with_shard(|shard| {
            shard.get_with(key, now, |value, version, generation| {
                // The value store tagged a value it keeps in this core's arena with its block's
                // generation: placed from its address, no block header read (a miss at scale).
                let tagged = (generation != 0)
                    .then(|| locator.value_offset(value))
                    .flatten()
                    .map(|offset| (core, offset, generation));
                match tagged.or_else(|| shared.locate(value)) {
                    Some(place) => {
                        let mut answer = [0u8; codec::SHARED_VALUE_ANSWER_BYTES];
                        codec::encode_shared_value_answer(
                            id,
                            version,
                            place,
                            value.len(),
                            &mut answer,
                        );
                        Ok(answer)
                    }
                    // Kept outside the arena (it had no room): answered inline.
                    None => Err((value.clone(), version)),
                }
            })
        });
        match found {
            Ok(Some(Ok(answer))) => push_answer(shared, session, &answer),
            Ok(None) => push_answer(shared, session, &codec::encode_not_found_answer(id)),
            Ok(Some(Err((value, version)))) => {
                answer(shared, session, id, &Response::Value { value, version })
            }
            Err(error) => answer(shared, session, id, &Response::Error(error)),
        }
    }

    /// Gives back to the global budget what a session that ended still held.
    fn release_queued(shared: &Shared, session: &mut Session) {
        let held = std::mem::take(&mut session.backlog_bytes);
        session.backlog.clear();
        shared.queued_bytes.fetch_sub(held, Ordering::Relaxed);
    }

    /// Moves backlogged answers into the ring as room appears.
    fn flush_backlog(shared: &Shared, session: &mut Session) -> usize {
        let mut flushed = 0;
        while let Some(frame) = session.backlog.front() {
            match session.responses.try_push(frame) {
                Ok(true) => {
                    let length = frame.len();
                    session.backlog.pop_front();
                    session.backlog_bytes -= length;
                    shared.queued_bytes.fetch_sub(length, Ordering::Relaxed);
                    flushed += 1;
                }
                Ok(false) => break,
                Err(error) => {
                    let detail = error.to_string();
                    disconnect(shared, session, RingError::reason(&error), &detail);
                    break;
                }
            }
        }
        if flushed > 0 {
            wake_client(session);
        }
        flushed
    }

    /// Runs one request through the seam: answered in place when it completes at once (the
    /// usual case: the key is this core's), else from a task of its own.
    fn dispatch(
        context: &CoreContext,
        shared: &Arc<Shared>,
        session: &SessionRef,
        id: u32,
        request: veddb_wire::Request,
        bytes: usize,
        cost: usize,
    ) {
        // The client ends this subscription itself: nothing to clean up for it later.
        session.borrow_mut().subscriptions.forget(&request);
        if context.answer_waits_for_log(&request) {
            // Answered from the step that releases it, in log order across sessions: a read's
            // answer never reaches its client before the answer of the write it shows.
            let answer = in_flight(shared, session, id, bytes, cost);
            context.execute_logged(request, answer);
            return;
        }
        // Every future of the engine re-checks its state when polled, so a wake-up that goes
        // to the no-op waker before the task is spawned is not lost.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match seam::start(context, request, &mut cx) {
            Started::Answered(response) => respond(shared, session, id, response),
            Started::Waiting(future) => {
                let answer = in_flight(shared, session, id, bytes, cost);
                compio::runtime::spawn(async move { answer(future.await) }).detach();
            }
        }
    }

    /// Counts request `id` (`bytes`, `cost`) as the session's work in flight until the returned
    /// function answers it.
    fn in_flight(
        shared: &Arc<Shared>,
        session: &SessionRef,
        id: u32,
        bytes: usize,
        cost: usize,
    ) -> impl FnOnce(Response) + 'static {
        {
            let mut session = session.borrow_mut();
            session.in_flight += cost;
            session.in_flight_bytes += bytes;
        }
        shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let (shared, session) = (shared.clone(), session.clone());
        move |response| {
            {
                let mut session = session.borrow_mut();
                session.in_flight -= cost;
                session.in_flight_bytes -= bytes;
            }
            shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            respond(&shared, &session, id, response);
        }
    }

    /// What a request costs (a session's round, its work in flight): 1, plus one per key it
    /// names or may return (a batch's keys, a SCAN's page, a FETCH's messages), plus one per
    /// 4 KiB of request.
    fn request_cost(request: &veddb_wire::Request, bytes: usize) -> usize {
        use veddb_wire::Request;
        let keys = match request {
            Request::MGet { keys } => keys.len(),
            Request::MSet { pairs } => pairs.len(),
            Request::Scan { count: 0, .. } => veddb_wire::limits::SCAN_COUNT_DEFAULT as usize,
            Request::Scan { count, .. } => *count as usize,
            Request::Fetch { max, .. } => *max as usize,
            _ => 0,
        };
        1 + keys + bytes / 4096
    }

    /// Whether the core reads no more of this session's requests for now: too much of its
    /// work in flight, too many of its bytes queued, or the global budget spent while it holds
    /// answers. A session paused with unread answers for [`STALL_CUT`] is cut off.
    fn paused(shared: &Shared, session: &mut Session, now_ms: u64) -> bool {
        let config = &shared.config;
        let queued = session.backlog_bytes + session.in_flight_bytes;
        let over_global = session.backlog_bytes > 0
            && shared.queued_bytes.load(Ordering::Relaxed) >= config.queued_bytes_max;
        let paused = session.in_flight >= config.session_in_flight_max
            || queued >= config.session_queued_bytes_max
            || over_global;
        if !paused {
            session.paused_since_ms = None;
            return false;
        }
        let since = *session.paused_since_ms.get_or_insert(now_ms);
        if session.backlog_bytes > 0 && now_ms.saturating_sub(since) >= STALL_CUT.as_millis() as u64
        {
            let detail = format!(
                "cut off: {} bytes of answers unread for {} s while over its limits",
                session.backlog_bytes,
                STALL_CUT.as_secs()
            );
            disconnect(shared, session, reason::RESPONSE_BACKLOG, &detail);
        }
        true
    }

    /// A request read from a session's ring, kept until the round's requests run in order.
    enum Decoded {
        /// Decoded, with its id, size and cost.
        Request(u32, veddb_wire::Request, usize, usize),
        /// Refused for a batch limit: its id and why.
        Refused(u32, String),
        /// Answered with an error without running (an uploaded value it names failed).
        Failed(u32, Error),
        /// A pushed subscription (SUBSCRIBE_PUSH): its id and topic.
        SubscribePush(u32, Bytes),
    }

    /// Frames up to this size are copied out of a ring into the core's kept payload buffer;
    /// larger ones into an allocation of their own.
    const KEPT_PAYLOAD_MAX: usize = 4 << 10;
    /// The kept payload buffer's size when it must be (re)allocated.
    const PAYLOAD_BUFFER_BYTES: usize = 64 << 10;

    /// What a core keeps between rounds to read requests without allocating.
    struct RoundBuffers {
        /// A round's requests of one session, between reading and running them (empty between
        /// rounds).
        decoded: Vec<Decoded>,
        /// Private copies of small request payloads, one after the other. A read this core
        /// answers itself (GET, EXISTS, TTL of its own keys; MGET with one core; PING, INFO)
        /// decodes as slices of it: once its answer is written nothing refers to it, so a later
        /// round reuses the same memory (`reserve` reclaims a unique buffer) and such a GET
        /// allocates nothing. Anything else gets a copy of its own, so that nothing the shard
        /// keeps (a long key, a message, a journal entry) and no request waiting for another
        /// core holds this buffer.
        payloads: BytesMut,
    }

    impl RoundBuffers {
        fn new() -> RoundBuffers {
            RoundBuffers {
                decoded: Vec::new(),
                payloads: BytesMut::new(),
            }
        }

        /// Copies a small frame's payload (at most [`KEPT_PAYLOAD_MAX`] bytes) into the kept
        /// buffer: the private copy that is decoded (the client may rewrite the ring's bytes at
        /// any time), by the in-place path and the general one alike.
        fn copy_small(payloads: &mut BytesMut, ring: &RingConsumer, frame: &FrameRef) {
            let len = frame.len();
            debug_assert!(len <= KEPT_PAYLOAD_MAX);
            // Reclaims the buffer when nothing refers to it any more, else starts a new one
            // (the old one is freed with its last slice).
            if payloads.capacity() < len {
                payloads.reserve(PAYLOAD_BUFFER_BYTES);
            }
            payloads.clear();
            ring.append_payload(frame, payloads);
        }

        /// The payload of `frame` to decode: the small one [`copy_small`](Self::copy_small)
        /// put in the kept buffer (a slice of it when what decodes from it outlives no answer
        /// of this core's, else a copy of its own), or a large one copied into an allocation.
        fn take_payload(
            payloads: &mut BytesMut,
            ring: &RingConsumer,
            frame: &FrameRef,
            (core, cores): (u32, u32),
        ) -> Bytes {
            if frame.len() > KEPT_PAYLOAD_MAX {
                let mut payload = Vec::new();
                ring.copy_payload(frame, &mut payload);
                return Bytes::from(payload);
            }
            let reused = match codec::retains(payloads) {
                codec::Retains::Nothing => true,
                codec::Retains::OneKey(key) => {
                    cores == 1 || veddb_wire::shard_for_key(key, cores) == core
                }
                codec::Retains::Keys => cores == 1,
                codec::Retains::Maybe => false,
            };
            if reused {
                payloads.split().freeze()
            } else {
                let payload = Bytes::copy_from_slice(payloads);
                payloads.clear();
                payload
            }
        }
    }

    /// Takes in `frame` if it is an UPLOAD (its chunk copied from the ring, or from `small`,
    /// the kept copy of a small frame's payload, straight to where the value goes): its cost
    /// in the round's work, or `None` when it is another request. A malformed one, or one
    /// past the waiting uploads' limit, disconnects the session. The caller consumes the frame.
    fn receive_upload(
        shared: &Shared,
        arena: &RefCell<Arena>,
        session: &mut Session,
        frame: &FrameRef,
        small: &[u8],
        now_ms: u64,
    ) -> Option<usize> {
        let mut header = [0u8; codec::UPLOAD_HEADER_BYTES];
        let header: &[u8] = if frame.len() <= KEPT_PAYLOAD_MAX {
            small
        } else {
            session.requests.copy_payload_range(frame, 0, &mut header);
            &header
        };
        let chunk = match codec::upload_chunk(header, frame.len())? {
            Ok(chunk) => chunk,
            Err(error) => {
                let detail = error.to_string();
                disconnect(shared, session, reason::BAD_FRAME, &detail);
                return Some(1);
            }
        };
        let Session {
            requests, uploads, ..
        } = session;
        // Only for an UPLOAD: no round pays for it.
        let limits = UploadLimits::new(
            shared.config.value_bytes_max,
            shared.config.arena_bytes_per_core as usize,
        );
        let copied = uploads.receive(chunk, &mut arena.borrow_mut(), &limits, now_ms, |out| {
            if frame.len() <= KEPT_PAYLOAD_MAX {
                out.copy_from_slice(&small[codec::UPLOAD_HEADER_BYTES..]);
            } else {
                requests.copy_payload_range(frame, codec::UPLOAD_HEADER_BYTES, out);
            }
        });
        if copied.is_err() {
            let detail = format!(
                "more than {} uploaded values wait for requests that name them",
                upload::WAITING_MAX
            );
            disconnect(shared, session, reason::BAD_FRAME, &detail);
        }
        Some(1 + frame.len() / 4096)
    }

    /// Serves up to a round of one session's requests; how many. `buffers.decoded` is empty
    /// on entry and on return.
    fn serve_session(
        context: &CoreContext,
        shared: &Arc<Shared>,
        arena: &RefCell<Arena>,
        session_ref: &SessionRef,
        buffers: &mut RoundBuffers,
        push: &mut PushRoutes,
    ) -> usize {
        let RoundBuffers { decoded, payloads } = buffers;
        debug_assert!(decoded.is_empty());
        let work = {
            let mut session = session_ref.borrow_mut();
            if session.dead {
                return 0;
            }
            let work = flush_backlog(shared, &mut session);
            if session.dead {
                return work;
            }
            // A session with nothing in flight and nothing queued is under every limit: the
            // usual case, checked without the limits' arithmetic.
            let idle = session.in_flight == 0 && session.backlog_bytes == 0;
            if idle {
                session.paused_since_ms = None;
                session.paused = false;
            } else {
                session.paused = paused(shared, &mut session, context.now_ms());
                if session.paused {
                    return work;
                }
            }
            let mut budget = WORK_PER_ROUND;
            let mut in_flight_room = shared
                .config
                .session_in_flight_max
                .saturating_sub(session.in_flight)
                .max(usize::from(session.in_flight == 0));
            let shard = (context.index(), context.shard_count());
            let logs_writes = context.logs_writes();
            let now_ms = context.now_ms();
            if session.uploads.holds() {
                session.uploads.expire(&mut arena.borrow_mut(), now_ms);
            }
            // Answers pushed in place this round: the client is woken once for them all.
            let mut answered = 0usize;
            let mut pushed = false;
            while budget > 0 && in_flight_room > 0 {
                let frame = match session.requests.peek() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        let detail = error.to_string();
                        disconnect(shared, &mut session, RingError::reason(&error), &detail);
                        break;
                    }
                };
                if frame.len() <= KEPT_PAYLOAD_MAX {
                    RoundBuffers::copy_small(payloads, &session.requests, &frame);
                    // The usual requests, a GET or SET of this core's key, served at once
                    // (only while no older answer waits in the backlog: answers stay in order;
                    // and without persistence: with it, reads and writes alike wait for the log).
                    if decoded.is_empty() && session.backlog.is_empty() && !logs_writes {
                        let in_place = serve_in_place(
                            context,
                            shared,
                            arena,
                            &mut session,
                            &frame,
                            payloads,
                            shard,
                        );
                        if let Some(to_ring) = in_place {
                            payloads.clear();
                            answered += 1;
                            pushed |= to_ring;
                            budget -= 1;
                            if session.dead {
                                break;
                            }
                            continue;
                        }
                    }
                }
                if let Some(cost) =
                    receive_upload(shared, arena, &mut session, &frame, payloads, now_ms)
                {
                    session.requests.consume(frame);
                    payloads.clear();
                    budget = budget.saturating_sub(cost);
                    if session.dead {
                        break;
                    }
                    continue;
                }
                let payload =
                    RoundBuffers::take_payload(payloads, &session.requests, &frame, shard);
                session.requests.consume(frame);
                let mut bytes = payload.len();
                if let Some((id, topic)) = codec::push_subscribe_request(&payload) {
                    let topic = payload.slice_ref(topic);
                    budget -= 1;
                    decoded.push(Decoded::SubscribePush(id, topic));
                    continue;
                }
                match codec::decode_request_bytes(&payload) {
                    Ok((id, mut request)) => {
                        if codec::has_uploaded_values(&request) {
                            let mut failed = None;
                            codec::fill_uploaded_values(&mut request, || {
                                match session.uploads.take(id) {
                                    Ok(value) => {
                                        // In flight with its values: they count against the
                                        // session's queued bytes like any request's.
                                        bytes += value.len();
                                        value
                                    }
                                    Err(error) => {
                                        failed.get_or_insert(error);
                                        Bytes::new()
                                    }
                                }
                            });
                            if let Some(error) = failed {
                                budget = budget.saturating_sub(1);
                                decoded.push(Decoded::Failed(id, error));
                                continue;
                            }
                        }
                        // Each may have to wait: never start more than the session may have in
                        // flight (one request always goes, however large).
                        let cost = request_cost(&request, bytes);
                        budget = budget.saturating_sub(cost);
                        in_flight_room = in_flight_room.saturating_sub(cost);
                        decoded.push(Decoded::Request(id, request, bytes, cost))
                    }
                    Err(error) => match error.request_id {
                        // A well-formed request over a batch limit: an error for that request.
                        // Anything else malformed disconnects.
                        Some(id)
                            if matches!(error.kind, codec::DecodeErrorKind::TooMany { .. }) =>
                        {
                            decoded.push(Decoded::Refused(id, error.to_string()))
                        }
                        _ => {
                            let detail = error.to_string();
                            disconnect(shared, &mut session, reason::BAD_FRAME, &detail);
                            break;
                        }
                    },
                }
            }
            // One head store for the round's frames: the client sees their room at once.
            session.requests.publish_head();
            if pushed && !session.dead {
                wake_client(&session);
            }
            work + answered + decoded.len()
        };
        for item in decoded.drain(..) {
            match item {
                Decoded::Request(id, request, bytes, cost) => {
                    if let veddb_wire::Request::Unsubscribe { subscriber } = &request {
                        push.forget(&mut session_ref.borrow_mut(), *subscriber);
                    }
                    dispatch(context, shared, session_ref, id, request, bytes, cost)
                }
                Decoded::Refused(id, message) => respond(
                    shared,
                    session_ref,
                    id,
                    Response::Error(Error::InvalidArgument(message)),
                ),
                Decoded::Failed(id, error) => {
                    respond(shared, session_ref, id, Response::Error(error))
                }
                Decoded::SubscribePush(id, topic) => {
                    push.subscribe(context, shared, session_ref, id, topic)
                }
            }
        }
        work
    }

    /// The oldest retire epoch the arena must keep for the sessions' views (`None`: none): the
    /// least of [`lease::pin_floor`](super::lease::pin_floor) over the sessions. Acquire pairs
    /// with the client's Release stores of its pins: what a view read before its pin moved on
    /// happens before the core reuses the block.
    fn pinned_floor(sessions: &[SessionRef], epoch: u64, stale_below: u64) -> Option<u64> {
        sessions
            .iter()
            .filter_map(|session| {
                let session = session.borrow();
                let oldest = session
                    .ring
                    .load_u64(ring_segment::CLIENT_EPOCH_PIN_OFFSET, Ordering::Acquire);
                let newest = session.ring.load_u64(
                    ring_segment::CLIENT_EPOCH_PIN_NEWEST_OFFSET,
                    Ordering::Acquire,
                );
                super::lease::pin_floor(oldest, newest, epoch, stale_below)
            })
            .min()
    }

    /// Whether a round would do something for one of these sessions: a backlogged answer that
    /// now fits its response ring, or requests in the ring of a session that is not paused. (A
    /// session paused by its limits, or whose client reads no answers, is no work: the core
    /// parks, and looks again at the short park timeout the source asks for.)
    fn has_requests(sessions: &[SessionRef]) -> bool {
        sessions.iter().any(|session| {
            let session = session.borrow();
            if session.dead {
                return false;
            }
            // Room for the frame wherever it lands (a wrap can waste up to one frame's size)
            // and the empty header after it.
            let flushable = session.backlog.front().is_some_and(|frame| {
                session.responses.free() >= 2 * ByteRing::frame_bytes(frame.len()) + 8
            });
            flushable
                || (!session.paused && !session.requests.is_empty())
                || push::deliverable(&session)
        })
    }

    /// One core's part of the frontend: its sessions, its arena, its wake-up descriptor. The
    /// core's loop polls it (see [`CoreSource`]).
    struct LocalCore {
        shared: Arc<Shared>,
        index: usize,
        arena: Rc<RefCell<Arena>>,
        sessions: Vec<SessionRef>,
        /// The core's eventfd as the runtime sees it (made on the first park: the runtime
        /// is not running yet when the source is made).
        wake: Option<Rc<AsyncFd<OwnedFd>>>,
        /// The wait for the eventfd to become readable, kept across parks (no resubmission
        /// for every park).
        wake_wait: Option<EventWait>,
        last_maintenance_ms: u64,
        /// When this core's epochs began (the view lease is judged by it).
        epochs: super::lease::EpochStarts,
        /// Kept between rounds: no allocation per round or per read-only request.
        buffers: RoundBuffers,
        /// Which session each pushed subscription of this core delivers to.
        push: PushRoutes,
        /// The frontend stopped and this core's sessions are closed.
        ended: bool,
        /// The CPU this core's thread runs on, as last published in its data segment.
        cpu: u32,
        /// The last round with work served a client that sent from this core's CPU (see
        /// [`CoreSource::client_shares_cpu`]); forgotten when the core parks.
        client_on_cpu: bool,
        /// Bytes the sessions of this core hold in uploads (see [`upload`]).
        upload_bytes: Rc<Cell<usize>>,
    }

    impl LocalCore {
        fn new(shared: Arc<Shared>, index: usize, arena: Rc<RefCell<Arena>>) -> LocalCore {
            let epochs = super::lease::EpochStarts::new(
                shared.config.view_lease,
                arena.borrow().epoch(),
                shared.clock.monotonic(),
            );
            let mut core = LocalCore {
                shared,
                index,
                arena,
                sessions: Vec::new(),
                wake: None,
                wake_wait: None,
                last_maintenance_ms: 0,
                epochs,
                buffers: RoundBuffers::new(),
                push: PushRoutes::default(),
                ended: false,
                cpu: data_segment::CPU_UNKNOWN,
                client_on_cpu: false,
                upload_bytes: Rc::new(Cell::new(0)),
            };
            // On the core's thread, pinned already (the engine pins before the setup runs).
            core.publish_cpu();
            core
        }

        fn me(&self) -> &CoreShared {
            &self.shared.cores[self.index]
        }

        /// Sessions the attach thread started or ended for this core.
        fn take_control(&mut self, context: &CoreContext) {
            let me = &self.shared.cores[self.index];
            // A plain load first: this runs every round, and a swap is a locked instruction.
            if !me.control.load(Ordering::Acquire) || !me.control.swap(false, Ordering::SeqCst) {
                return;
            }
            let incoming =
                std::mem::take(&mut *me.incoming.lock().unwrap_or_else(|e| e.into_inner()));
            let departed =
                std::mem::take(&mut *me.departed.lock().unwrap_or_else(|e| e.into_inner()));
            for (id, ring) in incoming {
                let uploads = self.upload_bytes.clone();
                match open_session(context, id, ring, self.shared.config.ring_bytes, uploads) {
                    Some(session) => self.sessions.push(Rc::new(RefCell::new(session))),
                    None => tracing::warn!(session = id, "a ring segment with a bad layout"),
                }
            }
            for session in &self.sessions {
                let mut session = session.borrow_mut();
                if departed.contains(&session.id) {
                    session.dead = true;
                }
            }
        }

        /// Ends the sessions that died: their subscriptions go with them.
        fn bury(&mut self) {
            self.sessions.retain(|session| {
                let mut session = session.borrow_mut();
                if session.dead {
                    session.subscriptions.close();
                    self.push.bury(&mut session);
                    release_queued(&self.shared, &mut session);
                    session.uploads.clear(Some(&mut self.arena.borrow_mut()));
                }
                !session.dead
            });
        }

        /// Every [`MAINTENANCE_INTERVAL_MS`] of the coarse clock while the core runs (and
        /// when that clock steps back): [`reclaim`](Self::reclaim).
        fn maintain(&mut self, now_ms: u64) {
            let due = now_ms < self.last_maintenance_ms
                || now_ms - self.last_maintenance_ms >= MAINTENANCE_INTERVAL_MS;
            if due {
                self.last_maintenance_ms = now_ms;
                self.reclaim();
                self.publish_cpu();
            }
        }

        /// Publishes the CPU the core runs on (once pinned it never changes; an unpinned core
        /// may move, and is seen at the next maintenance), for clients to compare with theirs.
        fn publish_cpu(&mut self) {
            let cpu = veddb_shm::current_cpu();
            if cpu != self.cpu {
                self.cpu = cpu;
                self.me()
                    .data
                    .atomic_u32(data_segment::CORE_CPU_OFFSET)
                    .store(cpu, Ordering::Relaxed);
            }
        }

        /// Ends the current epoch and reuses the retired blocks that no session's pins keep
        /// (`docs/shm-layout.md`, "View leases and epoch pins").
        fn reclaim(&mut self) {
            // Never borrowed across a park or a poll; skipping a round would only be late.
            let Ok(mut arena) = self.arena.try_borrow_mut() else {
                return;
            };
            let epoch = arena.advance_epoch();
            // The new epoch is visible to every client before the clock is read: no client
            // read the previous epoch after `now`.
            fence(Ordering::SeqCst);
            let now = self.shared.clock.monotonic();
            self.epochs.began(epoch, now);
            let stale_below = self.epochs.stale_below(now);
            arena.reclaim(pinned_floor(&self.sessions, epoch, stale_below));
        }

        fn parked_word(&self) -> &std::sync::atomic::AtomicU32 {
            self.me().data.atomic_u32(data_segment::CORE_PARKED_OFFSET)
        }

        fn end(&mut self) {
            for session in self.sessions.drain(..) {
                session.borrow_mut().dead = true;
            }
            self.ended = true;
        }
    }

    /// The wait for the core's eventfd to become readable, and whether its waker fired since
    /// it was last polled.
    struct EventWait {
        future: Pin<Box<dyn Future<Output = std::io::Result<()>>>>,
        fired: Arc<Fired>,
    }

    /// A waker that notes it fired, then wakes the core's task.
    struct Fired {
        flag: AtomicBool,
        task: std::task::Waker,
    }

    impl Fired {
        fn new(task: &std::task::Waker) -> Fired {
            Fired {
                flag: AtomicBool::new(false),
                task: task.clone(),
            }
        }
    }

    impl std::task::Wake for Fired {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.flag.store(true, Ordering::Release);
            self.task.wake_by_ref();
        }
    }

    impl CoreSource for LocalCore {
        fn poll(&mut self, context: &CoreContext) -> usize {
            if self.ended {
                // Nothing to deliver to: what the engine lists must not keep the core awake.
                self.push.discard(context);
                return 0;
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                self.end();
                self.push.discard(context);
                return 0;
            }
            self.take_control(context);
            let mut work = 0;
            // Whether a session served this round sent from this core's CPU.
            let mut served: Option<bool> = None;
            for session in &self.sessions {
                let done = serve_session(
                    context,
                    &self.shared,
                    &self.arena,
                    session,
                    &mut self.buffers,
                    &mut self.push,
                );
                if done > 0 {
                    let client_cpu = session
                        .borrow()
                        .ring
                        .load_u32(ring_segment::CLIENT_CPU_OFFSET, Ordering::Relaxed);
                    *served.get_or_insert(false) |= veddb_shm::same_cpu(client_cpu, self.cpu);
                }
                work += done;
            }
            if let Some(on_cpu) = served {
                self.client_on_cpu = on_cpu;
            }
            // Messages this round (or a peer, or a task) published for pushed subscriptions:
            // into their sessions' response rings, as far as they have room.
            self.push.route_ended(context);
            self.push.route_ready(context);
            for session in &self.sessions {
                work += self
                    .push
                    .deliver(context, &self.shared, &mut session.borrow_mut());
            }
            self.bury();
            self.maintain(context.now_ms());
            work
        }

        fn client_shares_cpu(&self) -> bool {
            self.client_on_cpu
        }

        fn has_work(&self) -> bool {
            if self.ended {
                return false;
            }
            self.shared.stop.load(Ordering::SeqCst)
                || self.me().control.load(Ordering::SeqCst)
                || has_requests(&self.sessions)
        }

        fn park_timeout(&self) -> Option<Duration> {
            // A paused session frees as its work completes, and a client that reads its answers
            // does not wake the core: look again soon while any session waits on either. A
            // ring that had no room for pushed messages is looked at again less and less often
            // while its client reads nothing.
            self.sessions
                .iter()
                .filter_map(|session| {
                    let session = session.borrow();
                    if session.dead {
                        None
                    } else if session.paused || !session.backlog.is_empty() {
                        Some(BLOCKED_SESSION_RECHECK)
                    } else if session.pushes.waiting() {
                        Some(session.pushes.recheck())
                    } else {
                        None
                    }
                })
                .min()
        }

        fn prepare_park(&mut self) {
            // The core may sleep for long: end the epoch now, so that a pin read before the
            // park counts from then (not from the wake-up), and reuse what no pin keeps. While
            // it sleeps the core allocates nothing: its arena cannot grow.
            if !self.ended {
                self.reclaim();
            }
            // The core's caller fences after this: a client that published a request before
            // it saw the flag is seen by the caller's re-check of `has_work`.
            self.parked_word()
                .store(data_segment::CORE_PARKED, Ordering::SeqCst);
            self.client_on_cpu = false;
        }

        fn cancel_park(&mut self) {
            self.parked_word()
                .store(data_segment::CORE_RUNNING, Ordering::SeqCst);
        }

        fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            if self.ended {
                return Poll::Pending;
            }
            if self.wake.is_none() {
                let made = self
                    .me()
                    .wake
                    .try_clone()
                    .map(OwnedFd::from)
                    .and_then(AsyncFd::new);
                match made {
                    Ok(fd) => self.wake = Some(Rc::new(fd)),
                    Err(error) => {
                        // The core still wakes for its own timers: clients are served, late.
                        tracing::error!(core = self.index, %error, "the local frontend cannot wait on its eventfd");
                        self.ended = true;
                        return Poll::Pending;
                    }
                }
            }
            if let Some(wait) = &self.wake_wait {
                // Polling a pending io_uring poll costs hundreds of instructions, and the park
                // is polled at every wake-up of the core's loop: poll it only when its own
                // waker fired (or another task polls, which never happens).
                if !wait.fired.flag.swap(false, Ordering::AcqRel)
                    && wait.fired.task.will_wake(cx.waker())
                {
                    return Poll::Pending;
                }
            }
            let fd = self.wake.clone().expect("made above");
            let wait = self.wake_wait.get_or_insert_with(|| EventWait {
                future: Box::pin(async move {
                    // Read through io_uring: clients hold this eventfd and can clear its
                    // O_NONBLOCK (the flag lives on the shared file description), so a plain
                    // read(2) could block the core; an io_uring read never blocks the thread.
                    use compio::io::AsyncRead;
                    let mut reader = &*fd;
                    let compio::buf::BufResult(result, _) =
                        reader.read(Vec::with_capacity(8)).await;
                    result.map(|_| ())
                }),
                fired: Arc::new(Fired::new(cx.waker())),
            });
            wait.fired = Arc::new(Fired::new(cx.waker()));
            let waker = std::task::Waker::from(wait.fired.clone());
            match wait.future.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) => {
                    // The read took the count: the next park waits for the next write.
                    self.wake_wait = None;
                    Poll::Ready(())
                }
            }
        }

        fn stop(&mut self, _context: &CoreContext) {
            self.end();
        }
    }
}
