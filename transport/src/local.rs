//! The shared-memory frontend for local clients (`--create --name NAME`), Linux.
//!
//! The server creates the instance file `/dev/shm/veddb-NAME` (O_EXCL, `--shm-mode`), one
//! **data segment** per core (a sealed memfd that clients can only map read-only; every stored
//! value of that core's shard lives in its arena, so a GET answers with the value's place, not
//! its bytes) and listens on `/dev/shm/veddb-NAME.sock`. A client attaches there: the server
//! checks its credentials, creates one **ring segment** per core for the session (read-write
//! for both, size sealed) and hands over the data segments, the ring segments and one eventfd
//! per core. The client then talks to each key's owning core directly through that core's
//! rings; the core's task here polls its sessions' request rings, runs each request through
//! [`CoreContext::execute`] and writes the answer to the session's response ring.
//!
//! Everything a client can write is hostile: ring indices and frames are validated (see
//! `veddb_shm::RingConsumer`), a frame is copied out before it is decoded, and a violation
//! disconnects that session only, with the reason in its ring header and in the server log.
//! Values are freed by epoch: a client pins the core's epoch before a request whose answer
//! may point into the arena; a retired block is reused only once every live pin has moved
//! past it, or once a pin is older than the view lease. Layout: `docs/shm-layout.md`.

use std::time::Duration;

/// Settings of the local frontend.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The instance name (`--name`).
    pub name: String,
    /// Mode of the instance file and socket (`--shm-mode`, default 0600).
    pub mode: u32,
    /// A client whose heartbeat is older than this is detached (`--session-timeout`).
    pub session_timeout: Duration,
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
    /// How long an idle core's local task polls before it sleeps.
    pub spin: Duration,
}

/// Default of [`LocalConfig::ring_bytes`]: 1 MiB each way per core per session.
pub const RING_BYTES_DEFAULT: u32 = 1 << 20;
/// Default of [`LocalConfig::view_lease`].
pub const VIEW_LEASE_DEFAULT: Duration = Duration::from_secs(10);

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
            view_lease: VIEW_LEASE_DEFAULT,
            ring_bytes: RING_BYTES_DEFAULT,
            arena_bytes_per_core: arena,
            value_bytes_max: veddb_wire::limits::VALUE_BYTES_MAX_DEFAULT,
            spin: Duration::from_micros(50),
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

    pub fn prepare(_config: &LocalConfig, _cores: usize) -> Result<Prepared, String> {
        Err("local clients through shared memory are supported on Linux only".into())
    }

    impl Prepared {
        pub fn shard_setup(&self) -> veddb_engine::ShardSetup {
            veddb_engine::ShardSetup(std::sync::Arc::new(|_, _| {}))
        }

        pub fn start(self, _engine: &veddb_engine::Engine) -> Result<LocalFrontend, String> {
            Err("local clients through shared memory are supported on Linux only".into())
        }
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
    use std::cell::RefCell;
    use std::collections::{HashMap, VecDeque};
    use std::future::Future;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use bytes::Bytes;
    use futures_util::future::select;
    use veddb_engine::{yield_now, CoreContext, Engine, ShardSetup};
    use veddb_shm::{
        create_data_segment, futex_wake, peer_credentials, process_alive, send_with_fds, Arena,
        ByteRing, EventFd, RingConsumer, RingError, RingProducer, Segment,
    };
    use veddb_wire::shm::codec;
    use veddb_wire::shm::layout::{
        attach, data_segment, instance, reason, ring as ring_format, ring_segment,
    };
    use veddb_wire::{Error, Response};

    use super::LocalConfig;

    /// Most request frames one session gets served per round (fairness between sessions).
    const FRAMES_PER_ROUND: usize = 64;
    /// Answers waiting for room in a response ring before the session is disconnected.
    const BACKLOG_BYTES_MAX: usize = 64 << 20;
    /// How often a core advances its epoch and reclaims retired blocks.
    const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(1);
    /// Longest a parked core task sleeps without looking at its sessions.
    const PARK_TIMEOUT: Duration = Duration::from_millis(50);

    fn unix_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn random_u64() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(unix_ms());
        hasher.write_u32(std::process::id());
        hasher.finish() | 1
    }

    /// One core's part, shared between its task and the attach thread.
    struct CoreShared {
        index: u32,
        data: Arc<Segment>,
        arena: Mutex<Arena>,
        /// Clients write it to wake the core's task when it said it parked.
        wake: EventFd,
        /// Sessions to start serving: (id, ring segment).
        incoming: Mutex<Vec<(u64, Arc<Segment>)>>,
        /// Sessions to stop serving.
        departed: Mutex<Vec<u64>>,
    }

    struct Shared {
        config: LocalConfig,
        cores: Vec<CoreShared>,
        /// Sessions a core disconnected (bad input): the attach thread closes them.
        kicked: Mutex<Vec<u64>>,
        stop: AtomicBool,
        sessions: AtomicUsize,
    }

    impl Shared {
        fn wake_core(&self, core: usize) {
            let _ = self.cores[core].wake.write(1);
        }

        /// Where a value lives, if in one of the arenas: (core, offset, generation).
        fn locate(&self, value: &Bytes) -> codec::SharedPlacement {
            let address = value.as_ptr() as usize;
            for core in &self.cores {
                let base = core.data.as_ptr() as usize;
                if address >= base && address < base + core.data.len() {
                    let arena = core.arena.lock().unwrap_or_else(|e| e.into_inner());
                    return arena
                        .locate(value)
                        .map(|(offset, generation)| (core.index, offset, generation));
                }
            }
            None
        }
    }

    /// The instance, created; the engine is not running yet.
    pub struct Prepared {
        shared: Arc<Shared>,
        instance: Segment,
        instance_path: PathBuf,
        header: instance::InstanceHeader,
    }

    /// The running frontend.
    pub struct LocalFrontend {
        shared: Arc<Shared>,
        instance: Segment,
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
    pub fn prepare(config: &LocalConfig, cores: usize) -> Result<Prepared, String> {
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
        let path = PathBuf::from(instance::path(&config.name));
        let socket = PathBuf::from(instance::socket_path(&config.name));
        if path.exists() || socket.exists() {
            let previous = Segment::open_named(&path, false).ok().and_then(|segment| {
                let mut bytes = vec![0u8; instance::FILE_BYTES.min(segment.len())];
                segment.read_bytes(0, &mut bytes);
                instance::InstanceHeader::read(&bytes).ok()
            });
            if socket_live(&config.name) {
                return Err(format!(
                    "the instance {:?} is in use by a running server{} ({}); stop it or choose \
                     another --name",
                    config.name,
                    previous.map_or(String::new(), |h| format!(" (pid {})", h.server_pid)),
                    path.display()
                ));
            }
            tracing::warn!(
                instance = %config.name,
                pid = previous.map(|h| h.server_pid),
                alive = previous.is_some_and(|h| process_alive(h.server_pid as i32)),
                "replacing a stale instance (its server is gone)"
            );
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&socket);
        }
        let instance_segment = Segment::create_named(&path, instance::FILE_BYTES, config.mode)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::AlreadyExists => format!(
                    "the instance {:?} was created by another server just now ({})",
                    config.name,
                    path.display()
                ),
                _ => format!("cannot create {}: {error}", path.display()),
            })?;
        let instance_id = random_u64();
        let data_bytes = data_segment::HEADER_BYTES as u64 + config.arena_bytes_per_core;
        let header = instance::InstanceHeader {
            core_count: cores as u32,
            server_pid: u64::from(std::process::id()),
            start_time_ms: unix_ms(),
            instance_id,
            state: instance::InstanceState::Starting,
            request_ring_bytes: config.ring_bytes,
            response_ring_bytes: config.ring_bytes,
            data_segment_bytes: data_bytes,
        };
        let mut page = vec![0u8; instance::FILE_BYTES];
        header.write_to(&mut page);
        instance_segment.write_bytes(0, &page);
        let max_block = (config.value_bytes_max + veddb_shm::BLOCK_HEADER_BYTES)
            .next_power_of_two()
            .clamp(veddb_shm::MIN_BLOCK_BYTES, 1 << 33);
        let mut shared_cores = Vec::with_capacity(cores);
        for core in 0..cores {
            let (data, arena) = create_data_segment(
                &format!("veddb-data-{core}"),
                data_segment::HEADER_BYTES,
                config.arena_bytes_per_core as usize,
                data_segment::GLOBAL_EPOCH_OFFSET,
                max_block,
                |segment| {
                    let mut page = vec![0u8; data_segment::HEADER_BYTES];
                    data_segment::DataHeader::new(core as u32, instance_id, data_bytes)
                        .write_to(&mut page);
                    segment.write_bytes(0, &page);
                },
            )
            .map_err(|error| format!("cannot create the data segment of core {core}: {error}"))?;
            let wake = EventFd::new_nonblocking()
                .map_err(|error| format!("cannot create an eventfd: {error}"))?;
            shared_cores.push(CoreShared {
                index: core as u32,
                data,
                arena: Mutex::new(arena),
                wake,
                incoming: Mutex::new(Vec::new()),
                departed: Mutex::new(Vec::new()),
            });
        }
        Ok(Prepared {
            shared: Arc::new(Shared {
                config: config.clone(),
                cores: shared_cores,
                kicked: Mutex::new(Vec::new()),
                stop: AtomicBool::new(false),
                sessions: AtomicUsize::new(0),
            }),
            instance: instance_segment,
            instance_path: path,
            header,
        })
    }

    impl Prepared {
        /// Installs each core's arena as its shard's value store (every stored value lives in
        /// shared memory, so local reads need no copy).
        pub fn shard_setup(&self) -> ShardSetup {
            let shared = self.shared.clone();
            ShardSetup(Arc::new(move |core, shard| {
                let shared = shared.clone();
                shard.set_value_store(Some(Box::new(move |value: Bytes| {
                    store_value(&shared.cores[core as usize], value)
                })));
            }))
        }

        /// Starts every core's task and the attach thread; the instance is then ready.
        pub fn start(self, engine: &Engine) -> Result<LocalFrontend, String> {
            let Prepared {
                shared,
                instance: instance_segment,
                instance_path,
                mut header,
            } = self;
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
            for core in 0..shared.cores.len() {
                let shared = shared.clone();
                let submitted = engine.run_on(core, move |context| {
                    compio::runtime::spawn(core_task(context, shared, core)).detach();
                });
                if !submitted {
                    return Err("the engine is stopping".into());
                }
            }
            let attach_shared = shared.clone();
            let owner_uid = std::fs::metadata(&instance_path)
                .map(|m| m.uid())
                .map_err(|error| format!("cannot stat {}: {error}", instance_path.display()))?;
            let attach_thread = std::thread::Builder::new()
                .name("veddb-local-attach".into())
                .spawn(move || attach_loop(listener, attach_shared, header, owner_uid))
                .map_err(|error| format!("cannot start the attach thread: {error}"))?;
            header.state = instance::InstanceState::Ready;
            let mut page = vec![0u8; instance::FILE_BYTES];
            header.write_to(&mut page);
            instance_segment.write_bytes(0, &page);
            Ok(LocalFrontend {
                shared,
                instance: instance_segment,
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
            for core in 0..self.shared.cores.len() {
                self.shared.wake_core(core);
            }
            if let Some(thread) = self.attach_thread.take() {
                let _ = thread.join();
            }
            self.header.state = instance::InstanceState::Stopped;
            let mut page = vec![0u8; instance::FILE_BYTES];
            self.header.write_to(&mut page);
            self.instance.write_bytes(0, &page);
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

    /// The value store of a core's shard: the value moves into the core's arena (one copy, on
    /// write); if the arena has no room it stays where it is (and local reads copy it).
    fn store_value(core: &CoreShared, value: Bytes) -> Bytes {
        let mut arena = core.arena.lock().unwrap_or_else(|e| e.into_inner());
        if arena.locate(&value).is_some() {
            return value;
        }
        match arena.alloc_value(&value) {
            Some(stored) => stored.into_bytes(),
            None => value,
        }
    }

    // ---- the attach thread ---------------------------------------------------------------

    struct AttachedSession {
        stream: UnixStream,
        pid: i32,
        rings: Vec<Arc<Segment>>,
        attached_at: Instant,
    }

    fn attach_loop(
        listener: UnixListener,
        shared: Arc<Shared>,
        header: instance::InstanceHeader,
        owner_uid: u32,
    ) {
        let mut sessions: HashMap<u64, AttachedSession> = HashMap::new();
        let mut next_id: u64 = 1;
        let timeout_ms = shared.config.session_timeout.as_millis() as u64;
        while !shared.stop.load(Ordering::SeqCst) {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let id = next_id;
                        next_id += 1;
                        match attach(&shared, &header, owner_uid, &stream, id) {
                            Ok((pid, rings)) => {
                                sessions.insert(
                                    id,
                                    AttachedSession {
                                        stream,
                                        pid,
                                        rings,
                                        attached_at: Instant::now(),
                                    },
                                );
                                shared.sessions.store(sessions.len(), Ordering::Relaxed);
                            }
                            Err(reason_text) => {
                                tracing::warn!(session = id, "attach refused: {reason_text}");
                                let mut reply = attach::REFUSED_MAGIC.to_vec();
                                reply.extend_from_slice(reason_text.as_bytes());
                                let _ = (&stream).write_all(&reply);
                            }
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        tracing::warn!(%error, "accept on the local socket failed");
                        break;
                    }
                }
            }
            // Sessions that ended: the socket closed (the process exited or was killed), the
            // process is gone, the heartbeat stopped, or a core disconnected it.
            let kicked: Vec<u64> =
                std::mem::take(&mut *shared.kicked.lock().unwrap_or_else(|e| e.into_inner()));
            let now = unix_ms();
            let mut ended = Vec::new();
            for (&id, session) in &sessions {
                let mut byte = [0u8; 1];
                let closed = match (&session.stream).read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
                };
                let heartbeat = session.rings[0]
                    .load_u64(ring_segment::CLIENT_HEARTBEAT_OFFSET, Ordering::Acquire);
                let silent = session.attached_at.elapsed() > shared.config.session_timeout
                    && now.saturating_sub(heartbeat) > timeout_ms;
                if closed || !process_alive(session.pid) {
                    ended.push((id, "the client closed its socket or exited", None));
                } else if silent {
                    ended.push((
                        id,
                        "no heartbeat within --session-timeout",
                        Some(reason::HEARTBEAT_TIMEOUT),
                    ));
                } else if kicked.contains(&id) {
                    ended.push((id, "disconnected by a core (bad input)", None));
                }
            }
            for (id, why, code) in ended {
                if let Some(session) = sessions.remove(&id) {
                    if let Some(code) = code {
                        for ring in &session.rings {
                            ring.atomic_u32(ring_segment::DISCONNECT_REASON_OFFSET)
                                .store(code, Ordering::Release);
                            ring.atomic_u32(ring_segment::SERVER_STATUS_OFFSET)
                                .store(ring_segment::SERVER_DISCONNECTED, Ordering::Release);
                            wake_word(ring.atomic_u32(ring_segment::CLIENT_WAIT_OFFSET));
                        }
                    }
                    let _ = session.stream.shutdown(std::net::Shutdown::Both);
                    for (core, shared_core) in shared.cores.iter().enumerate() {
                        shared_core
                            .departed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(id);
                        shared.wake_core(core);
                    }
                    tracing::info!(
                        session = id,
                        pid = session.pid,
                        "local client detached: {why}"
                    );
                }
            }
            shared.sessions.store(sessions.len(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
        // Stopping: tell every client.
        for session in sessions.values() {
            for ring in &session.rings {
                ring.atomic_u32(ring_segment::DISCONNECT_REASON_OFFSET)
                    .store(reason::SERVER_STOPPING, Ordering::Release);
                ring.atomic_u32(ring_segment::SERVER_STATUS_OFFSET)
                    .store(ring_segment::SERVER_DISCONNECTED, Ordering::Release);
                wake_word(ring.atomic_u32(ring_segment::CLIENT_WAIT_OFFSET));
            }
            let _ = session.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The handshake of one client: credentials, hello, then the segments and eventfds.
    fn attach(
        shared: &Shared,
        header: &instance::InstanceHeader,
        owner_uid: u32,
        stream: &UnixStream,
        id: u64,
    ) -> Result<(i32, Vec<Arc<Segment>>), String> {
        let credentials =
            peer_credentials(stream).map_err(|error| format!("no peer credentials: {error}"))?;
        let group_ok = shared.config.mode & 0o060 != 0;
        let same_group = std::fs::metadata(instance::path(&shared.config.name))
            .map(|m| m.gid() == credentials.gid)
            .unwrap_or(false);
        if credentials.uid != owner_uid && credentials.uid != 0 && !(group_ok && same_group) {
            return Err(format!(
                "uid {} may not attach (the instance belongs to uid {owner_uid}; --shm-mode \
                 widens it to the group)",
                credentials.uid
            ));
        }
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(2))))
            .map_err(|error| error.to_string())?;
        let mut hello = [0u8; attach::HELLO.len()];
        (&*stream)
            .read_exact(&mut hello)
            .map_err(|error| format!("no hello: {error}"))?;
        if &hello != attach::HELLO {
            return Err("bad hello (not a VedDB client of this version?)".into());
        }
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
                .store(unix_ms(), Ordering::Release);
            segment
                .seal_size()
                .map_err(|error| format!("cannot seal a ring segment: {error}"))?;
            rings.push(Arc::new(segment));
        }
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
        // Logged before the client has its rings, so the attach line always precedes
        // anything the session's cores log about it.
        tracing::info!(session = id, pid = credentials.pid, "local client attached");
        send_with_fds(stream, &reply.encode(), &fds)
            .map_err(|error| format!("cannot send the segments: {error}"))?;
        stream
            .set_nonblocking(true)
            .map_err(|error| error.to_string())?;
        for (core, ring) in rings.iter().enumerate() {
            shared.cores[core]
                .incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((id, ring.clone()));
            shared.wake_core(core);
        }
        Ok((credentials.pid, rings))
    }

    // ---- each core's task ----------------------------------------------------------------

    struct Session {
        id: u64,
        ring: Arc<Segment>,
        requests: RingConsumer,
        responses: RingProducer,
        backlog: VecDeque<Vec<u8>>,
        backlog_bytes: usize,
        dead: bool,
        /// Subscriptions this session made: removed when it ends, however it ends.
        subscriptions: Vec<veddb_wire::SubscriberId>,
    }

    type SessionRef = Rc<RefCell<Session>>;

    fn open_session(id: u64, ring: Arc<Segment>, ring_bytes: u32) -> Option<Session> {
        let request_ring = ByteRing {
            head_offset: ring_segment::REQUEST_HEAD_OFFSET,
            tail_offset: ring_segment::REQUEST_TAIL_OFFSET,
            data_offset: ring_segment::REQUEST_RING_OFFSET,
            size: ring_bytes as usize,
        };
        let response_ring = ByteRing {
            head_offset: ring_segment::RESPONSE_HEAD_OFFSET,
            tail_offset: ring_segment::RESPONSE_TAIL_OFFSET,
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
            dead: false,
            subscriptions: Vec::new(),
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
        session
            .ring
            .atomic_u32(ring_segment::DISCONNECT_REASON_OFFSET)
            .store(code, Ordering::Release);
        session
            .ring
            .atomic_u32(ring_segment::SERVER_STATUS_OFFSET)
            .store(ring_segment::SERVER_DISCONNECTED, Ordering::Release);
        wake_word(session.ring.atomic_u32(ring_segment::CLIENT_WAIT_OFFSET));
        shared
            .kicked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(session.id);
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
        if let Response::Subscribed { subscriber } = &response {
            // Even for a session that died meanwhile: it is unsubscribed below or at cleanup.
            session.subscriptions.push(*subscriber);
        }
        if session.dead {
            return;
        }
        let max = session.responses.ring().max_payload();
        let placement = |value: &Bytes| shared.locate(value);
        let mut frame = codec::encode_response_vec(id, &response, placement);
        if frame.len() > max {
            let error = Error::InvalidArgument(format!(
                "the answer of {} bytes is larger than the {max}-byte frames of this session's \
                 rings; read it in smaller parts or over gRPC",
                frame.len()
            ));
            frame = codec::encode_response_vec(id, &Response::Error(error), codec::all_inline);
        }
        if session.backlog.is_empty() {
            match session.responses.try_push(&frame) {
                Ok(true) => {
                    wake_client(&session);
                    return;
                }
                Ok(false) => {}
                Err(error) => {
                    let detail = error.to_string();
                    disconnect(shared, &mut session, RingError::reason(&error), &detail);
                    return;
                }
            }
        }
        session.backlog_bytes += frame.len();
        session.backlog.push_back(frame);
        if session.backlog_bytes > BACKLOG_BYTES_MAX {
            disconnect(
                shared,
                &mut session,
                reason::RESPONSE_BACKLOG,
                "it does not read its answers",
            );
        }
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

    /// Runs one request: inline when it completes at once (the usual case: the key is this
    /// core's), else as a task of its own.
    fn dispatch(
        context: &CoreContext,
        shared: &Arc<Shared>,
        session: &SessionRef,
        id: u32,
        request: veddb_wire::Request,
    ) {
        let runner = context.clone();
        let mut future: Pin<Box<dyn Future<Output = Response>>> =
            Box::pin(async move { runner.execute(request).await });
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(response) => respond(shared, session, id, response),
            Poll::Pending => {
                // Every future of the engine re-checks its state when polled, so a wake-up
                // that went to the no-op waker is not lost.
                let shared = shared.clone();
                let session = session.clone();
                let context = context.clone();
                compio::runtime::spawn(async move {
                    let response = future.await;
                    if session.borrow().dead {
                        // The session ended while this ran; a subscription made for it is
                        // nobody's.
                        if let Response::Subscribed { subscriber } = response {
                            unsubscribe_all(&context, vec![subscriber]);
                        }
                        return;
                    }
                    respond(&shared, &session, id, response);
                })
                .detach();
            }
        }
    }

    /// Serves up to a round of one session's requests; how many.
    fn serve_session(
        context: &CoreContext,
        shared: &Arc<Shared>,
        session_ref: &SessionRef,
    ) -> usize {
        let mut decoded = Vec::new();
        {
            let mut session = session_ref.borrow_mut();
            if session.dead {
                return 0;
            }
            let mut work = flush_backlog(shared, &mut session);
            if session.dead {
                return work;
            }
            let mut scratch = Vec::new();
            while decoded.len() < FRAMES_PER_ROUND {
                let frame = match session.requests.peek() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        let detail = error.to_string();
                        disconnect(shared, &mut session, RingError::reason(&error), &detail);
                        break;
                    }
                };
                scratch.clear();
                session.requests.copy_payload(&frame, &mut scratch);
                session.requests.advance(frame);
                let payload = Bytes::from(std::mem::take(&mut scratch));
                match codec::decode_request_bytes(&payload) {
                    Ok((id, request)) => decoded.push(Ok((id, request))),
                    Err(error) => match error.request_id {
                        // A well-formed request over a batch limit: an error for that request.
                        // Anything else malformed disconnects.
                        Some(id)
                            if matches!(error.kind, codec::DecodeErrorKind::TooMany { .. }) =>
                        {
                            decoded.push(Err((id, error.to_string())))
                        }
                        _ => {
                            let detail = error.to_string();
                            disconnect(shared, &mut session, reason::BAD_FRAME, &detail);
                            break;
                        }
                    },
                }
            }
            work += decoded.len();
            if decoded.is_empty() {
                return work;
            }
        }
        let count = decoded.len();
        for item in decoded {
            match item {
                Ok((id, request)) => dispatch(context, shared, session_ref, id, request),
                Err((id, message)) => respond(
                    shared,
                    session_ref,
                    id,
                    Response::Error(Error::InvalidArgument(message)),
                ),
            }
        }
        count
    }

    /// The oldest epoch pin the arena must honour: pins older than the view lease (in epochs,
    /// which advance about once a millisecond) are ignored.
    fn oldest_pin(sessions: &[SessionRef], epoch: u64, lease_epochs: u64) -> Option<u64> {
        sessions
            .iter()
            .filter_map(|session| {
                let session = session.borrow();
                let pin = session
                    .ring
                    .load_u64(ring_segment::CLIENT_EPOCH_PIN_OFFSET, Ordering::SeqCst);
                (pin != ring_segment::EPOCH_PIN_NONE && pin <= epoch && epoch - pin <= lease_epochs)
                    .then_some(pin)
            })
            .min()
    }

    fn has_requests(sessions: &[SessionRef]) -> bool {
        sessions.iter().any(|session| {
            let session = session.borrow();
            !session.dead
                && (!session.backlog.is_empty()
                    || session
                        .ring
                        .load_u64(ring_segment::REQUEST_TAIL_OFFSET, Ordering::SeqCst)
                        != session.requests.head())
        })
    }

    async fn core_task(context: CoreContext, shared: Arc<Shared>, index: usize) {
        let me = &shared.cores[index];
        let wake = match me
            .wake
            .try_clone()
            .map(OwnedFd::from)
            .and_then(compio::runtime::fd::PollFd::new)
        {
            Ok(wake) => wake,
            Err(error) => {
                tracing::error!(core = index, %error, "the local frontend cannot wait on its eventfd");
                return;
            }
        };
        let parked = me.data.atomic_u32(data_segment::CORE_PARKED_OFFSET);
        let epoch_word: &AtomicU64 = me.data.atomic_u64(data_segment::GLOBAL_EPOCH_OFFSET);
        let lease_epochs = (shared.config.view_lease.as_millis() as u64).max(1);
        let ring_bytes = shared.config.ring_bytes;
        let mut sessions: Vec<SessionRef> = Vec::new();
        let mut idle_since: Option<Instant> = None;
        let mut last_maintenance = Instant::now();
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            let incoming: Vec<(u64, Arc<Segment>)> =
                std::mem::take(&mut *me.incoming.lock().unwrap_or_else(|e| e.into_inner()));
            for (id, ring) in incoming {
                match open_session(id, ring, ring_bytes) {
                    Some(session) => sessions.push(Rc::new(RefCell::new(session))),
                    None => tracing::warn!(session = id, "a ring segment with a bad layout"),
                }
            }
            let departed: Vec<u64> =
                std::mem::take(&mut *me.departed.lock().unwrap_or_else(|e| e.into_inner()));
            if !departed.is_empty() {
                for session in &sessions {
                    let mut session = session.borrow_mut();
                    if departed.contains(&session.id) {
                        session.dead = true;
                    }
                }
            }
            let mut work = 0;
            for session in &sessions {
                work += serve_session(&context, &shared, session);
            }
            for session in &sessions {
                let mut session = session.borrow_mut();
                if session.dead {
                    unsubscribe_all(&context, std::mem::take(&mut session.subscriptions));
                }
            }
            sessions.retain(|session| !session.borrow().dead);
            if last_maintenance.elapsed() >= MAINTENANCE_INTERVAL {
                last_maintenance = Instant::now();
                let mut arena = me.arena.lock().unwrap_or_else(|e| e.into_inner());
                let epoch = arena.advance_epoch();
                let pin = oldest_pin(&sessions, epoch, lease_epochs);
                arena.reclaim(Some(pin.unwrap_or(0)));
            }
            if work > 0 {
                idle_since = None;
                yield_now().await;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < shared.config.spin {
                yield_now().await;
                continue;
            }
            // Park: say so, re-check (a client that published before seeing the flag is seen
            // here), then sleep until a client writes the eventfd or the timeout passes.
            parked.store(data_segment::CORE_PARKED, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let stopping = shared.stop.load(Ordering::SeqCst);
            let pending = !me
                .incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
                || !me
                    .departed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty();
            if !has_requests(&sessions) && !stopping && !pending {
                let timeout = if sessions.is_empty() {
                    PARK_TIMEOUT * 4
                } else {
                    PARK_TIMEOUT
                };
                let sleep = std::pin::pin!(compio::time::sleep(timeout));
                let readable = std::pin::pin!(wake.read_ready());
                let _ = select(readable, sleep).await;
                let _ = me.wake.read();
            }
            parked.store(data_segment::CORE_RUNNING, Ordering::SeqCst);
            idle_since = None;
            let _ = epoch_word;
        }
        for session in &sessions {
            let mut session = session.borrow_mut();
            session.dead = true;
        }
    }

    /// Removes the subscriptions of a session that ended (no client will fetch them again).
    fn unsubscribe_all(context: &CoreContext, subscriptions: Vec<veddb_wire::SubscriberId>) {
        for subscriber in subscriptions {
            let context = context.clone();
            compio::runtime::spawn(async move {
                let _ = context
                    .execute(veddb_wire::Request::Unsubscribe { subscriber })
                    .await;
            })
            .detach();
        }
    }
}
