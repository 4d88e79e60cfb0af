//! The shared-memory connection of a local client (Linux): attach to an instance by name, then
//! talk to each key's owning core through that core's rings, reading values in place.
//!
//! Requests for one key go to the core that owns it (the engine's documented hash); requests
//! for several keys go to core 0, which scatters them. Before a request whose answer may point
//! into a core's value arena (GET, MGET), the connection pins that core's epoch (all cores for
//! MGET) so the server keeps the value's block until the pin is released: the pin lasts while
//! a [`ValueView`] or a request needs it, and the server honours it for its view lease. Each
//! core's ring header carries the oldest and the newest epoch pinned by this connection's live
//! views, so every view is kept for its own whole lease, whatever older views are still held
//! (`docs/shm-layout.md`, "View leases and epoch pins").

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use veddb_wire::shm::codec::{self, ResponseFrame, SharedValue, ValueRef};
#[cfg(target_os = "linux")]
use veddb_wire::shm::layout::{attach, instance};
use veddb_wire::shm::layout::{data_segment, reason, ring_segment};
use veddb_wire::{limits, Request, Response, Route, SubscriberId, SubscriberMap};

use crate::{ClientError, Received, Transport, TransportSubscription};

use veddb_shm::{current_cpu, same_cpu, RingConsumer, RingProducer, Segment, SharedView};
#[cfg(target_os = "linux")]
use veddb_shm::{futex_wait, recv_with_fds, ByteRing, EventFd};

/// How long a waiting client polls its response ring before it sleeps on its futex.
pub const SPIN_DEFAULT: Duration = Duration::from_micros(20);
/// How often the heartbeat thread marks the session alive.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest one futex sleep (the client then re-checks the server's status).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const SLEEP_MAX: Duration = Duration::from_millis(100);
/// How long a request may wait for room in a full request ring or for its answer.
const TIMEOUT: Duration = Duration::from_secs(60);

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn protocol(text: impl Into<String>) -> ClientError {
    ClientError::Protocol(text.into())
}

struct Core {
    data: Arc<Segment>,
    ring: Arc<Segment>,
    requests: RefCell<RingProducer>,
    responses: RefCell<RingConsumer>,
    #[cfg(target_os = "linux")]
    wake: EventFd,
    /// The CPU this client last published in this core's ring ([`CPU_UNKNOWN`] at first, as
    /// the server wrote it).
    client_cpu: Cell<u32>,
}

/// A session with a local instance. Not `Send`: one per thread.
pub struct LocalConnection {
    cores: Vec<Core>,
    session_id: u64,
    next_id: Cell<u32>,
    /// Answers that arrived while another was awaited (pipelining), by request id.
    stash: RefCell<HashMap<u32, Vec<u8>>>,
    /// Messages the cores pushed for this session's pushed subscriptions, not received yet.
    inboxes: RefCell<SubscriberMap<Inbox>>,
    /// The buffer requests are encoded in before they go to a ring (no allocation per request).
    encoded: RefCell<Vec<u8>>,
    /// 0..cores (the cores an MGET pins).
    all_cores: Vec<usize>,
    /// Answer buffers given back after use, for the next answers (no allocation per answer).
    spare: RefCell<Vec<Vec<u8>>>,
    spin: Duration,
    /// [`near_a_core`](Self::near_a_core)'s memory: the CPU, the answer, waits left before
    /// it looks again.
    near: Cell<(u32, bool, u32)>,
    /// The attach socket: its closing tells the server this session ended.
    #[cfg(target_os = "linux")]
    _socket: std::os::unix::net::UnixStream,
    heartbeat_stop: Arc<AtomicBool>,
    /// Pins by core, shared with views, which unpin on drop.
    pins: Rc<LocalConnectionPins>,
}

/// The connection's pins on every core, shared between the connection and its views.
struct LocalConnectionPins {
    rings: Vec<Arc<Segment>>,
    data: Vec<Arc<Segment>>,
    cores: Vec<RefCell<CorePins>>,
}

/// A pin held on a core, released exactly once (by [`LocalConnectionPins::unpin`]).
#[derive(Debug)]
struct HeldPin {
    core: usize,
    /// The group of [`CorePins`] it counts in.
    group: u64,
}

impl LocalConnectionPins {
    /// Pins `core`'s epoch as it is now, for a request (and the view it may give) sent after
    /// this call. No syscall, no allocation: a load, a few compares, and stores to this
    /// session's ring header only when the oldest or newest pin changes.
    fn pin(&self, core: usize) -> HeldPin {
        // The epoch the core is in now (it only grows): the server keeps a view's block
        // for a lease after this epoch ends, and it ends after this read.
        let epoch = self.data[core]
            .load_u64(data_segment::GLOBAL_EPOCH_OFFSET, Ordering::Acquire)
            .max(data_segment::EPOCH_FIRST);
        let mut pins = self.cores[core].borrow_mut();
        let (group, ends_moved) = pins.add(epoch);
        if ends_moved {
            self.publish(core, &mut pins);
        }
        HeldPin { core, group }
    }

    fn unpin(&self, pin: HeldPin) {
        let mut pins = self.cores[pin.core].borrow_mut();
        if pins.remove(pin.group) {
            self.publish(pin.core, &mut pins);
        }
    }

    /// Stores the pin words that changed ([`CorePins::changed_words`]). Release: the reads of
    /// a view happen before the store that lets the server reuse its block (the server loads
    /// with Acquire); a new pin is published by the request sent after it (the ring's tail is
    /// a Release store, and the core serves the request before it next reads the pins).
    fn publish(&self, core: usize, pins: &mut CorePins) {
        let (newest, oldest) = pins.changed_words();
        let ring = &self.rings[core];
        if let Some(word) = newest {
            ring.atomic_u64(ring_segment::CLIENT_EPOCH_PIN_NEWEST_OFFSET)
                .store(word, Ordering::Release);
        }
        if let Some(word) = oldest {
            ring.atomic_u64(ring_segment::CLIENT_EPOCH_PIN_OFFSET)
                .store(word, Ordering::Release);
        }
    }
}

/// Most groups of pins per core. A connection whose live views pinned more distinct epochs
/// merges the newest into one group, kept as long as any of them lives: safe (the oldest and
/// newest pins stay below and above every view's), only less precise.
const PIN_GROUPS_MAX: usize = 16;

/// One epoch, or a run of epochs merged when [`PIN_GROUPS_MAX`] groups are in use, and how many
/// pins of this connection (live views, requests in flight) it holds.
#[derive(Clone, Copy, Debug, Default)]
struct PinGroup {
    oldest: u64,
    newest: u64,
    holders: u32,
}

/// The pins a connection holds on one core, grouped by the epoch they pinned, oldest group
/// first: a fixed ring of [`PIN_GROUPS_MAX`] groups. Group ids count up; group `id` sits in
/// slot `id % PIN_GROUPS_MAX`. The first and last groups always have holders, so the oldest
/// and newest pins are exact (but for merged groups).
#[derive(Debug, Default)]
struct CorePins {
    groups: [PinGroup; PIN_GROUPS_MAX],
    /// Id of the oldest group.
    first: u64,
    /// Groups in use.
    len: usize,
    /// The oldest and newest pin words as last stored in the ring header (see
    /// [`CorePins::changed_words`]).
    published: (u64, u64),
}

impl CorePins {
    fn slot(id: u64) -> usize {
        (id % PIN_GROUPS_MAX as u64) as usize
    }

    fn last(&self) -> u64 {
        self.first + self.len as u64 - 1
    }

    /// (oldest, newest) pinned epoch of the live pins; both [`ring_segment::EPOCH_PIN_NONE`]
    /// without any.
    fn ends(&self) -> (u64, u64) {
        if self.len == 0 {
            return (ring_segment::EPOCH_PIN_NONE, ring_segment::EPOCH_PIN_NONE);
        }
        (
            self.groups[Self::slot(self.first)].oldest,
            self.groups[Self::slot(self.last())].newest,
        )
    }

    /// Counts a pin of `epoch` (never older than the newest pin so far: the core's epoch only
    /// grows); returns its group, and whether the oldest or newest pin may have moved (if not,
    /// the stored words need no look: the usual case of pins of an epoch already pinned).
    fn add(&mut self, epoch: u64) -> (u64, bool) {
        if self.len > 0 {
            let id = self.last();
            let last = &mut self.groups[Self::slot(id)];
            if epoch <= last.newest {
                last.holders += 1;
                return (id, false);
            }
            if self.len == PIN_GROUPS_MAX {
                last.newest = epoch;
                last.holders += 1;
                return (id, true);
            }
        }
        let id = self.first + self.len as u64;
        self.groups[Self::slot(id)] = PinGroup {
            oldest: epoch,
            newest: epoch,
            holders: 1,
        };
        self.len += 1;
        (id, true)
    }

    /// The pin words to store now, newest first (`None`: unchanged), and notes them as
    /// stored. The server reads `max(oldest, newest)` as the newest pin, so the newest word is
    /// written only while the newest pin differs from the oldest (two groups or more): with one
    /// group any word not above the oldest says the same, and a connection that takes and
    /// drops one view at a time stores one word per pin and one per unpin. A pin or an unpin
    /// moves one end only (the first and last groups always have holders), so each store
    /// keeps more, or lets go of what no live view pinned.
    fn changed_words(&mut self) -> (Option<u64>, Option<u64>) {
        let (oldest, newest) = self.ends();
        let mut newest_word = None;
        if oldest != ring_segment::EPOCH_PIN_NONE {
            let stored = self.published.1;
            let (current, word) = if newest > oldest {
                (stored == newest, newest)
            } else {
                (stored <= oldest, ring_segment::EPOCH_PIN_NONE)
            };
            if !current {
                self.published.1 = word;
                newest_word = Some(word);
            }
        }
        let oldest_word = (oldest != self.published.0).then_some(oldest);
        self.published.0 = oldest;
        (newest_word, oldest_word)
    }

    /// Releases a pin of group `id`; drops the groups left empty at either end. Returns whether
    /// the oldest or newest pin may have moved (not while its group keeps a holder).
    fn remove(&mut self, id: u64) -> bool {
        let live = self.len > 0 && (self.first..=self.last()).contains(&id);
        debug_assert!(live, "a pin of group {id}, not in use");
        if !live {
            return false;
        }
        let group = &mut self.groups[Self::slot(id)];
        debug_assert!(group.holders > 0, "group {id} has no pin left");
        group.holders = group.holders.saturating_sub(1);
        if group.holders > 0 {
            return false;
        }
        while self.len > 0 && self.groups[Self::slot(self.first)].holders == 0 {
            self.first += 1;
            self.len -= 1;
        }
        while self.len > 0 && self.groups[Self::slot(self.last())].holders == 0 {
            self.len -= 1;
        }
        true
    }
}

/// A value read in place from the server's shared memory: no byte of it was copied. It keeps
/// its core's epoch pinned while it lives, and the server keeps the value's block unchanged
/// for the view lease (`--shm-view-lease-ms`, counted in real time from the call to
/// [`LocalConnection::get_view`]), whatever other views the connection holds. Past the lease
/// the block may be reused: a view held longer reads the bytes, then asks
/// [`ValueView::is_current`]; when that says true, what it read was the value. Dropping the
/// connection ends the lease of its views at once (the server drops the session's pins).
pub struct ValueView {
    view: SharedView,
    version: u64,
    core: usize,
    /// Always `Some` until drop releases it.
    pin: Option<HeldPin>,
    pins: Rc<LocalConnectionPins>,
}

impl ValueView {
    /// The value's bytes, in the server's mapping: the value within the lease; past it, check
    /// [`ValueView::is_current`] after reading them.
    pub fn bytes(&self) -> &[u8] {
        self.view.bytes()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the block still holds this value (always, within the lease). Asked after
    /// reading [`ValueView::bytes`], true means that what was read is the value; false means
    /// the block was reused (the bytes read must be discarded), and stays false.
    pub fn is_current(&self) -> bool {
        self.view.is_current()
    }

    /// The address of the bytes (inside the mapping of the core's data segment).
    pub fn as_ptr(&self) -> *const u8 {
        self.view.as_ptr()
    }

    /// The core whose arena holds the value.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Whether `address` lies inside that core's data segment mapping.
    pub fn mapping_contains(&self, address: *const u8) -> bool {
        let data = &self.pins.data[self.core];
        let base = data.as_ptr() as usize;
        (base..base + data.len()).contains(&(address as usize))
    }
}

impl Drop for ValueView {
    fn drop(&mut self) {
        if let Some(pin) = self.pin.take() {
            self.pins.unpin(pin);
        }
    }
}

impl std::fmt::Debug for ValueView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueView")
            .field("len", &self.view.len())
            .field("version", &self.version)
            .field("core", &self.core)
            .finish()
    }
}

impl LocalConnection {
    /// Attaches to the instance `name` (created by `veddb-server --create --name NAME`).
    #[cfg(target_os = "linux")]
    pub fn connect(name: &str) -> Result<LocalConnection, ClientError> {
        use std::io::Write;
        instance::check_name(name).map_err(protocol)?;
        let path = instance::path(name);
        let file = Segment::open_named(std::path::Path::new(&path), false).map_err(|error| {
            ClientError::Io(std::io::Error::new(
                error.kind(),
                format!("no instance {name:?} ({path}: {error}); is veddb-server running with --create --name {name}?"),
            ))
        })?;
        // A server that is starting becomes ready within moments.
        let started = Instant::now();
        let header = loop {
            let mut page = vec![0u8; instance::FILE_BYTES.min(file.len())];
            file.read_bytes(0, &mut page);
            let header = instance::InstanceHeader::read(&page)
                .map_err(|error| protocol(format!("{path}: {error}")))?;
            match header.state {
                instance::InstanceState::Ready => break header,
                instance::InstanceState::Starting if started.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                state => {
                    return Err(protocol(format!(
                        "the instance {name:?} is not ready (state {state:?})"
                    )))
                }
            }
        };
        let socket = std::os::unix::net::UnixStream::connect(instance::socket_path(name)).map_err(
            |error| {
                ClientError::Io(std::io::Error::new(
                    error.kind(),
                    format!("cannot reach the server of {name:?}: {error} (stopped or crashed?)"),
                ))
            },
        )?;
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(ClientError::Io)?;
        (&socket)
            .write_all(attach::HELLO)
            .map_err(ClientError::Io)?;
        let mut reply = vec![0u8; 4096];
        let cores = header.core_count as usize;
        let (length, fds) =
            recv_with_fds(&socket, &mut reply, cores * 3).map_err(ClientError::Io)?;
        let reply = attach::AttachReply::decode(&reply[..length]).map_err(|error| match error {
            Ok(reason) => protocol(format!("the server refused the attach: {reason}")),
            Err(error) => protocol(format!("bad attach reply: {error}")),
        })?;
        if reply.core_count as usize != cores || fds.len() != cores * 3 {
            return Err(protocol(format!(
                "attach reply for {} cores with {} descriptors",
                reply.core_count,
                fds.len()
            )));
        }
        let mut fds = fds.into_iter();
        let data: Vec<Arc<Segment>> = (0..cores)
            .map(|_| Segment::map_fd(fds.next().expect("counted"), false).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(ClientError::Io)?;
        let rings: Vec<Arc<Segment>> = (0..cores)
            .map(|_| Segment::map_fd(fds.next().expect("counted"), true).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(ClientError::Io)?;
        let wakes: Vec<EventFd> = (0..cores)
            .map(|_| EventFd::from_fd(fds.next().expect("counted")))
            .collect();
        let request_bytes = reply.request_ring_bytes as usize;
        let response_bytes = reply.response_ring_bytes as usize;
        let mut built = Vec::with_capacity(cores);
        for ((data, ring), wake) in data.iter().zip(&rings).zip(wakes) {
            let requests = ByteRing {
                head_offset: ring_segment::REQUEST_HEAD_OFFSET,
                data_offset: ring_segment::REQUEST_RING_OFFSET,
                size: request_bytes,
            }
            .producer(ring.clone())
            .map_err(|error| protocol(format!("request ring: {error}")))?;
            let responses = ByteRing {
                head_offset: ring_segment::RESPONSE_HEAD_OFFSET,
                data_offset: ring_segment::response_ring_offset(reply.request_ring_bytes),
                size: response_bytes,
            }
            .consumer(ring.clone())
            .map_err(|error| protocol(format!("response ring: {error}")))?;
            built.push(Core {
                data: data.clone(),
                ring: ring.clone(),
                requests: RefCell::new(requests),
                responses: RefCell::new(responses),
                wake,
                client_cpu: Cell::new(data_segment::CPU_UNKNOWN),
            });
        }
        // The heartbeat: the server detaches a session whose heartbeat stops for
        // --session-timeout while its socket stays open (a hung process).
        let heartbeat_stop = Arc::new(AtomicBool::new(false));
        {
            let stop = heartbeat_stop.clone();
            let rings = rings.clone();
            std::thread::Builder::new()
                .name("veddb-heartbeat".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for ring in &rings {
                            ring.atomic_u64(ring_segment::CLIENT_HEARTBEAT_OFFSET)
                                .store(unix_ms(), Ordering::Release);
                        }
                        std::thread::park_timeout(HEARTBEAT_INTERVAL);
                    }
                })
                .map_err(ClientError::Io)?;
        }
        let pins = Rc::new(LocalConnectionPins {
            rings: rings.clone(),
            data: data.clone(),
            cores: (0..cores)
                .map(|_| RefCell::new(CorePins::default()))
                .collect(),
        });
        Ok(LocalConnection {
            cores: built,
            session_id: reply.session_id,
            next_id: Cell::new(1),
            stash: RefCell::new(HashMap::new()),
            inboxes: RefCell::new(SubscriberMap::default()),
            encoded: RefCell::new(Vec::new()),
            all_cores: (0..cores).collect(),
            spare: RefCell::new(Vec::new()),
            spin: SPIN_DEFAULT,
            near: Cell::new((data_segment::CPU_UNKNOWN, false, 0)),
            _socket: socket,
            heartbeat_stop,
            pins,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn connect(_name: &str) -> Result<LocalConnection, ClientError> {
        Err(protocol(
            "local clients through shared memory are supported on Linux only",
        ))
    }

    /// This session's id (in the server's log).
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Cores of the instance.
    pub fn core_count(&self) -> usize {
        self.cores.len()
    }

    /// How long a waiting call polls before it sleeps.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    fn core_of(&self, request: &Request) -> Result<usize, ClientError> {
        if self.cores.len() == 1 {
            return Ok(0);
        }
        Ok(match request.route(self.cores.len() as u32) {
            Route::Shard(shard) if (shard as usize) < self.cores.len() => shard as usize,
            // A made-up subscriber id names no shard: core 0 answers with the error.
            Route::Shard(_) | Route::Any | Route::Scatter => 0,
        })
    }

    /// Fails if the server disconnected this session.
    fn check_attached(&self, core: usize) -> Result<(), ClientError> {
        let ring = &self.cores[core].ring;
        if ring.load_u32(ring_segment::SERVER_STATUS_OFFSET, Ordering::Acquire)
            == ring_segment::SERVER_DISCONNECTED
        {
            let code = ring.load_u32(ring_segment::DISCONNECT_REASON_OFFSET, Ordering::Acquire);
            return Err(protocol(format!(
                "the server disconnected this session: {}",
                reason::describe(code)
            )));
        }
        Ok(())
    }

    /// Puts one request into its core's ring (waiting while the ring is full); returns the
    /// request id. The caller then wakes the core ([`wake_core`](Self::wake_core)), once for
    /// all it sent.
    fn send(&self, core: usize, request: &Request) -> Result<u32, ClientError> {
        let id = self.take_id();
        let target = &self.cores[core];
        let max = target.requests.borrow().ring().max_payload();
        // Measured before anything is encoded: a large value is never copied but into the ring.
        let len = codec::request_len(request);
        if len > max {
            // A batch over the protocol's key limit is refused as the engine refuses it on
            // every transport, whatever its size.
            if let Some(keys) = batch_keys(request).filter(|&keys| keys > limits::BATCH_KEYS_MAX) {
                return Err(veddb_wire::Error::InvalidArgument(format!(
                    "{keys} keys in one request; the maximum is {}",
                    limits::BATCH_KEYS_MAX
                ))
                .into());
            }
            // Values too large for a frame go ahead as uploads: the largest first, then, if
            // the rest still does not fit, every value over 1 KiB.
            let split = [max / 4, UPLOAD_VALUE_MIN].into_iter().find_map(|min| {
                codec::split_uploaded_values(request, min)
                    .filter(|(marked, _)| codec::request_len(marked) <= max)
            });
            let Some((marked, values)) = split else {
                return Err(frame_too_large(len, max));
            };
            for value in &values {
                self.upload(core, id, value)?;
            }
            let mut payload = self.encoded.borrow_mut();
            codec::encode_request_into(id, &marked, &mut payload);
            self.push(core, &payload)?;
            return Ok(id);
        }
        let mut payload = self.encoded.borrow_mut();
        codec::encode_request_into(id, request, &mut payload);
        self.push(core, &payload)?;
        Ok(id)
    }

    /// Sends `value` to `core` as UPLOAD frames for request `id` (which follows and names it by
    /// [`codec::UPLOADED_LENGTH`]): chunks of at most [`UPLOAD_CHUNK_MAX`] bytes, each written
    /// straight from `value` into the ring. (If the request is never sent, the server gives its
    /// values to no other request.)
    fn upload(&self, core: usize, id: u32, value: &[u8]) -> Result<(), ClientError> {
        let max = self.cores[core].requests.borrow().ring().max_payload();
        let chunk_max = (max - codec::UPLOAD_HEADER_BYTES).min(UPLOAD_CHUNK_MAX);
        let mut offset = 0;
        loop {
            let len = (value.len() - offset).min(chunk_max);
            let header = codec::encode_upload_header(codec::UploadChunk {
                request: id,
                total: value.len() as u64,
                offset: offset as u64,
                len: len as u32,
            });
            self.push_parts(core, &header, &value[offset..offset + len])?;
            offset += len;
            if offset == value.len() {
                return Ok(());
            }
            // The core may sleep: it has a chunk to take while we write the next one.
            self.wake_core(core);
        }
    }

    /// The next request id (never 0).
    fn take_id(&self) -> u32 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1).max(1));
        id
    }

    /// Sends a GET of `key` to `core`, encoded on the stack when the key is small (as `send`
    /// otherwise). Returns the request id.
    fn send_get(&self, core: usize, key: &[u8]) -> Result<u32, ClientError> {
        const STACK_REQUEST_MAX: usize = 128;
        let len = codec::get_request_len(key.len());
        if len > STACK_REQUEST_MAX {
            return self.send(
                core,
                &Request::Get {
                    key: Bytes::copy_from_slice(key),
                },
            );
        }
        let id = self.take_id();
        let mut payload = [0u8; STACK_REQUEST_MAX];
        codec::encode_get_request(id, key, &mut payload);
        self.push(core, &payload[..len])?;
        Ok(id)
    }

    /// Puts one encoded request (no larger than the ring's frames) into `core`'s ring, waiting
    /// while the ring is full (waking the core then: it may sleep on a ring we filled).
    fn push(&self, core: usize, payload: &[u8]) -> Result<(), ClientError> {
        self.push_parts(core, payload, &[])
    }

    /// [`push`](Self::push) of the payload `head` then `tail`, written into the ring as they
    /// are (no copy in between).
    fn push_parts(&self, core: usize, head: &[u8], tail: &[u8]) -> Result<(), ClientError> {
        let target = &self.cores[core];
        let mut started = None;
        loop {
            let pushed = {
                let mut requests = target.requests.borrow_mut();
                match requests
                    .try_reserve(head.len() + tail.len())
                    .map_err(|error| protocol(format!("request ring: {error}")))?
                {
                    Some(mut frame) => {
                        frame.write_at(0, head);
                        if !tail.is_empty() {
                            frame.write_at(head.len(), tail);
                        }
                        frame.commit();
                        true
                    }
                    None => false,
                }
            };
            if pushed {
                break;
            }
            // Full: make room by reading answers (the core may be blocked on our response
            // ring), then retry.
            self.check_attached(core)?;
            self.drain_into_stash(core)?;
            self.wake_core(core);
            if started.get_or_insert_with(Instant::now).elapsed() > TIMEOUT {
                return Err(protocol("the request ring stayed full"));
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Wakes each core a batch was sent to (`sent_to[core]`), once.
    fn wake_cores(&self, sent_to: &[bool]) {
        for (core, _) in sent_to.iter().enumerate().filter(|(_, sent)| **sent) {
            self.wake_core(core);
        }
    }

    /// Wakes `core` if it sleeps (after requests were put into its ring), and tells it which
    /// CPU this client runs on when that changed (a core on the same CPU then gives way).
    fn wake_core(&self, core: usize) {
        let target = &self.cores[core];
        let cpu = current_cpu();
        if cpu != target.client_cpu.get() {
            target.client_cpu.set(cpu);
            target
                .ring
                .atomic_u32(ring_segment::CLIENT_CPU_OFFSET)
                .store(cpu, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        if target
            .data
            .load_u32(data_segment::CORE_PARKED_OFFSET, Ordering::SeqCst)
            == data_segment::CORE_PARKED
        {
            #[cfg(target_os = "linux")]
            let _ = target.wake.write(1);
        }
    }

    /// How to wait for `core`'s answer, from where this client runs now.
    fn wait_policy(&self, core: usize) -> WaitPolicy {
        let cpu = current_cpu();
        let colocated = same_cpu(cpu, self.core_cpu(core));
        WaitPolicy {
            colocated,
            near: colocated || self.near_a_core(cpu),
        }
    }

    /// The CPU `core` published (it may be [`data_segment::CPU_UNKNOWN`]).
    fn core_cpu(&self, core: usize) -> u32 {
        self.cores[core]
            .data
            .load_u32(data_segment::CORE_CPU_OFFSET, Ordering::Relaxed)
    }

    /// Whether some core of the instance runs on `cpu`. Remembered for the CPU it was asked
    /// for, and asked again every [`NEAR_RECHECK`] waits (an unpinned core may move).
    fn near_a_core(&self, cpu: u32) -> bool {
        let (asked_for, near, left) = self.near.get();
        if asked_for == cpu && left > 0 {
            self.near.set((cpu, near, left - 1));
            return near;
        }
        let near = (0..self.cores.len()).any(|core| same_cpu(cpu, self.core_cpu(core)));
        self.near.set((cpu, near, NEAR_RECHECK));
        near
    }

    /// Moves every answer waiting in `core`'s response ring into the stash.
    fn drain_into_stash(&self, core: usize) -> Result<(), ClientError> {
        self.take_answer(core, None).map(drop)
    }

    /// Reads the answers waiting in `core`'s response ring until the one to request `awaited`,
    /// which it returns; the others go to the stash. Without `awaited` (or before it arrives)
    /// it reads them all and returns `None`. A small answer is read onto the stack.
    fn take_answer(
        &self,
        core: usize,
        awaited: Option<u32>,
    ) -> Result<Option<Answer>, ClientError> {
        let mut responses = self.cores[core].responses.borrow_mut();
        loop {
            let frame = match responses.peek() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(None),
                Err(error) => return Err(protocol(format!("response ring: {error}"))),
            };
            let len = frame.len();
            let answer = if len <= STACK_ANSWER_MAX {
                let mut bytes = [0u8; STACK_ANSWER_MAX];
                responses.copy_payload_into(&frame, &mut bytes);
                Answer::Stack { bytes, len }
            } else {
                let mut payload = self.spare.borrow_mut().pop().unwrap_or_default();
                responses.copy_payload(&frame, &mut payload);
                Answer::Buffer(payload)
            };
            responses.advance(frame);
            let id = codec::payload_id(answer.payload())
                .ok_or_else(|| protocol("an answer without a request id"))?;
            if awaited == Some(id) {
                return Ok(Some(answer));
            }
            if id == codec::DELIVERY_ID {
                self.take_delivery(answer)?;
                continue;
            }
            let stashed = match answer {
                Answer::Stack { bytes, len } => {
                    let mut payload = self.spare.borrow_mut().pop().unwrap_or_default();
                    payload.clear();
                    payload.extend_from_slice(&bytes[..len]);
                    payload
                }
                Answer::Buffer(payload) => payload,
            };
            self.stash.borrow_mut().insert(id, stashed);
        }
    }

    /// Puts the messages of a delivery frame (see [`codec::delivery`]) into its subscription's
    /// inbox.
    fn take_delivery(&self, answer: Answer) -> Result<(), ClientError> {
        let payload = match answer {
            Answer::Stack { bytes, len } => Bytes::copy_from_slice(&bytes[..len]),
            Answer::Buffer(payload) => Bytes::from(payload),
        };
        if let Some((part, chunk)) = codec::delivery_part(&payload)
            .map_err(|error| protocol(format!("bad delivery part: {error}")))?
        {
            let mut inboxes = self.inboxes.borrow_mut();
            return match inboxes.get_mut(&part.subscriber) {
                Some(inbox) => inbox.take_part(part, &payload[chunk]),
                // Not a subscription of this connection's (any more).
                None => Ok(()),
            };
        }
        let delivery = codec::delivery(&payload)
            .map_err(|error| protocol(format!("bad delivery: {error}")))?
            .ok_or_else(|| protocol("an answer to request 0"))?;
        let mut inboxes = self.inboxes.borrow_mut();
        // Only for a subscription of this connection's (one that ended is not revived).
        let Some(inbox) = inboxes.get_mut(&delivery.subscriber) else {
            return Ok(());
        };
        // Whole messages after a message in parts that did not finish: it was dropped, and
        // the count includes it.
        inbox.partial = None;
        inbox.dropped += delivery.dropped;
        for range in delivery.messages() {
            inbox.push(payload.slice(range));
        }
        Ok(())
    }

    /// Moves the messages pushed for `subscriber` that arrived (each with how many were lost
    /// before it) to the end of `out`, which the caller has emptied (a swap, no copy).
    fn take_delivered(&self, subscriber: SubscriberId, out: &mut VecDeque<(Bytes, u64)>) {
        debug_assert!(out.is_empty());
        if let Some(inbox) = self.inboxes.borrow_mut().get_mut(&subscriber) {
            std::mem::swap(&mut inbox.messages, out);
            inbox.bytes = 0;
        }
    }

    /// Gives an answer's buffer (if it has one) back for later answers.
    fn recycle_answer(&self, answer: Answer) {
        if let Answer::Buffer(payload) = answer {
            self.recycle(payload);
        }
    }

    /// Gives an answer's buffer back for later answers (small ones only, a bounded number).
    fn recycle(&self, payload: Vec<u8>) {
        const KEPT: usize = 64;
        const KEPT_BYTES: usize = 4 << 10;
        let mut spare = self.spare.borrow_mut();
        if spare.len() < KEPT && payload.capacity() <= KEPT_BYTES {
            spare.push(payload);
        }
    }

    /// The stashed answer to request `id`, if any.
    fn stashed(&self, id: u32) -> Option<Vec<u8>> {
        let mut stash = self.stash.borrow_mut();
        if stash.is_empty() {
            return None;
        }
        stash.remove(&id)
    }

    /// Waits for the answer to request `id` on `core`: polls for the spin window, then
    /// sleeps on the ring's futex word until the core wakes it. The clock is read only once
    /// an answer is slow to come (no clock read for one that is already there, or soon).
    fn wait(&self, core: usize, id: u32) -> Result<Answer, ClientError> {
        /// Polls of the ring between looks at the clock and at the server's status.
        const POLLS_PER_CHECK: u32 = 64;
        let mut polls = 0u32;
        let mut started: Option<Instant> = None;
        let policy = self.wait_policy(core);
        loop {
            if let Some(payload) = self.stashed(id) {
                return Ok(Answer::Buffer(payload));
            }
            if let Some(payload) = self.take_answer(core, Some(id))? {
                return Ok(payload);
            }
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(POLLS_PER_CHECK) {
                policy.pause(polls);
                continue;
            }
            self.check_attached(core)?;
            let elapsed = started.get_or_insert_with(Instant::now).elapsed();
            if elapsed > TIMEOUT {
                return Err(protocol("no answer from the server within 60 s"));
            }
            if elapsed < self.spin {
                continue;
            }
            self.sleep_for_answers(core, SLEEP_MAX);
        }
    }

    /// Sleeps until `core` publishes an answer for this session or `max` passed: announces the
    /// sleep, re-checks (an answer published before the announcement is seen here), then waits
    /// until the core wakes the ring's futex word.
    fn sleep_for_answers(&self, core: usize, max: Duration) {
        let target = &self.cores[core];
        let word = target.ring.atomic_u32(ring_segment::CLIENT_WAIT_OFFSET);
        word.store(ring_segment::CLIENT_SLEEPING, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if target.responses.borrow().is_empty() {
            #[cfg(target_os = "linux")]
            futex_wait(word, ring_segment::CLIENT_SLEEPING, Some(max));
            #[cfg(not(target_os = "linux"))]
            std::thread::sleep(max.min(Duration::from_micros(100)));
        }
        word.store(ring_segment::CLIENT_AWAKE, Ordering::SeqCst);
    }

    /// Sends one request without waiting for its answer, for event-loop style callers that
    /// drive many sessions (or many requests) from one thread: poll it with
    /// [`LocalConnection::try_complete`], sleep with [`LocalConnection::wait_for_answers`].
    /// Its answer is kept by the connection until taken, so complete every submission.
    pub fn submit(&self, request: Request) -> Result<Submitted, ClientError> {
        let core = self.core_of(&request)?;
        let id = self.send(core, &request)?;
        self.wake_core(core);
        Ok(Submitted { core, id, request })
    }

    /// The answer to `submitted` if it has arrived, without blocking (values are copied out of
    /// shared memory, as by [`LocalConnection::execute`]). `Ok(None)`: not yet.
    pub fn try_complete(&self, submitted: &Submitted) -> Result<Option<Response>, ClientError> {
        let mut payload = self.stash.borrow_mut().remove(&submitted.id);
        if payload.is_none() {
            self.drain_into_stash(submitted.core)?;
            payload = self.stash.borrow_mut().remove(&submitted.id);
        }
        let Some(payload) = payload else {
            self.check_attached(submitted.core)?;
            return Ok(None);
        };
        let response = self.copy_out(&payload);
        self.recycle(payload);
        match response? {
            Some(response) => Ok(Some(response)),
            // The value's block was reused while it was copied (possible without a pin): ask
            // again, this time pinned.
            None => self.execute(submitted.request.clone()).map(Some),
        }
    }

    /// Blocks until the core that answers `submitted` publishes an answer for this session (not
    /// necessarily that one) or `max` passed; returns at once if one is already waiting.
    pub fn wait_for_answers(&self, submitted: &Submitted, max: Duration) {
        if self.stash.borrow().contains_key(&submitted.id) {
            return;
        }
        self.sleep_for_answers(submitted.core, max);
    }

    fn resolve(&self, value: SharedValue) -> Option<SharedView> {
        let data = self.pins.data.get(value.core as usize)?;
        SharedView::new(data.clone(), value.offset, value.len, value.generation)
    }

    /// Turns an answer into a [`Response`], copying shared values out (and checking that the
    /// block was not reused while copying).
    fn copy_out(&self, payload: &[u8]) -> Result<Option<Response>, ClientError> {
        // The usual answers, read directly.
        if let Some((_, version)) = codec::stored_answer(payload) {
            return Ok(Some(Response::Stored { version }));
        }
        if let Some((_, version, shared)) = codec::shared_value_answer(payload) {
            let view = self.resolve(shared).ok_or_else(|| {
                protocol(format!(
                    "an answer points outside the shared memory: {shared:?}"
                ))
            })?;
            let value = Bytes::copy_from_slice(view.bytes());
            return Ok(view
                .is_current()
                .then_some(Response::Value { value, version }));
        }
        let (_, frame) = codec::decode_response(payload)
            .map_err(|error| protocol(format!("bad answer: {error}")))?;
        let mut torn = false;
        let response = frame
            .into_response(|shared| {
                let view = self.resolve(shared)?;
                let bytes = Bytes::copy_from_slice(view.bytes());
                if !view.is_current() {
                    torn = true;
                }
                Some(bytes)
            })
            .map_err(|shared| {
                protocol(format!(
                    "an answer points outside the shared memory: {shared:?}"
                ))
            })?;
        Ok((!torn).then_some(response))
    }

    /// The cores whose values the answer to `request` (sent to `core`) may point into: the
    /// core of a GET, every core for an MGET.
    fn cores_to_pin<'a>(&'a self, request: &Request, core: &'a usize) -> &'a [usize] {
        match request {
            Request::Get { .. } => std::slice::from_ref(core),
            Request::MGet { .. } => &self.all_cores,
            _ => &[],
        }
    }

    /// Pins [`cores_to_pin`](Self::cores_to_pin) (a GET without an allocation).
    fn pin_for(&self, request: &Request, core: usize) -> Pinned {
        match self.cores_to_pin(request, &core) {
            [] => Pinned::Nothing,
            [one] => Pinned::One(self.pins.pin(*one)),
            many => Pinned::Many(many.iter().map(|&core| self.pins.pin(core)).collect()),
        }
    }

    fn unpin(&self, pinned: Pinned) {
        match pinned {
            Pinned::Nothing => {}
            Pinned::One(pin) => self.pins.unpin(pin),
            Pinned::Many(pins) => pins.into_iter().for_each(|pin| self.pins.unpin(pin)),
        }
    }

    fn round_trip(&self, request: &Request) -> Result<(usize, Answer), ClientError> {
        let core = self.core_of(request)?;
        let id = self.send(core, request)?;
        self.wake_core(core);
        Ok((core, self.wait(core, id)?))
    }

    /// Runs one request; values are copied out of shared memory.
    pub fn execute(&self, request: Request) -> Result<Response, ClientError> {
        let core = self.core_of(&request)?;
        let pinned = self.pin_for(&request, core);
        let result = (|| loop {
            let (_, answer) = self.round_trip(&request)?;
            let response = self.copy_out(answer.payload());
            self.recycle_answer(answer);
            // A block reused during the copy (only possible past the lease): ask again.
            if let Some(response) = response? {
                return Ok(response);
            }
        })();
        self.unpin(pinned);
        result
    }

    /// Runs several requests pipelined: all are sent before any answer is awaited.
    pub fn execute_many(&self, requests: &[Request]) -> Result<Vec<Response>, ClientError> {
        let mut sent = Vec::with_capacity(requests.len());
        // One pin per core for the whole batch: taken before the first request that needs it,
        // so it covers every later one too.
        let mut pinned: Vec<Option<HeldPin>> = (0..self.cores.len()).map(|_| None).collect();
        // The cores sent to: each is woken once, after the last request.
        let mut sent_to = vec![false; self.cores.len()];
        let mut result = Ok(());
        for request in requests {
            let core = match self.core_of(request) {
                Ok(core) => core,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            };
            for &core in self.cores_to_pin(request, &core) {
                if pinned[core].is_none() {
                    pinned[core] = Some(self.pins.pin(core));
                }
            }
            match self.send(core, request) {
                Ok(id) => {
                    sent_to[core] = true;
                    sent.push((core, id))
                }
                Err(error) => {
                    // The pins are released below, whichever way this ends.
                    result = Err(error);
                    break;
                }
            }
        }
        self.wake_cores(&sent_to);
        let mut answers = Vec::with_capacity(sent.len());
        if result.is_err() {
            sent.clear();
        }
        for (index, (core, id)) in sent.into_iter().enumerate() {
            match self.wait(core, id).and_then(|answer| {
                let response = self.copy_out(answer.payload());
                self.recycle_answer(answer);
                response
            }) {
                Ok(Some(response)) => answers.push(response),
                Ok(None) => match self.execute(requests[index].clone()) {
                    Ok(response) => answers.push(response),
                    Err(error) => {
                        result = Err(error);
                        break;
                    }
                },
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        for pin in pinned.into_iter().flatten() {
            self.pins.unpin(pin);
        }
        result.map(|()| answers)
    }

    /// GET without a copy: a view of the value where the server stores it. `None` when the key
    /// does not exist. (A value the server keeps outside its arena, for lack of room, comes
    /// back as a copy: [`GetResult::Copied`].)
    pub fn get_view(&self, key: impl Into<Bytes>) -> Result<GetResult, ClientError> {
        let key = key.into();
        let core = self.core_of_key(&key);
        let pin = self.pins.pin(core);
        let result = self.send_get(core, &key).and_then(|id| {
            self.wake_core(core);
            self.view_answer(core, id)
        });
        self.hold_view(core, pin, result)
    }

    /// Several GETs pipelined, each value read in place as by
    /// [`get_view`](Self::get_view): all are sent before any answer is awaited. The results
    /// are in the order of `keys`.
    pub fn get_view_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<GetResult>, ClientError> {
        let mut sent = Vec::with_capacity(keys.len());
        let mut sent_to = vec![false; self.cores.len()];
        let mut result = Ok(());
        for key in keys {
            let key = key.as_ref();
            let core = self.core_of_key(key);
            // Pinned before the request goes: it covers the view the answer gives.
            let pin = self.pins.pin(core);
            match self.send_get(core, key) {
                Ok(id) => {
                    sent_to[core] = true;
                    sent.push((core, id, pin));
                }
                Err(error) => {
                    self.pins.unpin(pin);
                    result = Err(error);
                    break;
                }
            }
        }
        self.wake_cores(&sent_to);
        let mut views = Vec::with_capacity(sent.len());
        // The usual answers (shared values, in order) are taken from the rings a few ahead of the
        // one being made a view, as they arrive, with the lines their views will read
        // prefetched: the batch's cache misses overlap instead of following each other. From
        // the first other answer on, the general way.
        let order: Vec<(usize, u32)> = sent.iter().map(|&(core, id, _)| (core, id)).collect();
        let mut ahead: VecDeque<(u64, SharedValue)> = VecDeque::new();
        let mut next_take = 0;
        let mut taking = result.is_ok();
        for (index, (core, id, pin)) in sent.into_iter().enumerate() {
            if result.is_err() {
                // Answers still come: they go to the stash when the next wait reads them.
                self.pins.unpin(pin);
                continue;
            }
            while taking && next_take < order.len() && next_take < index + VIEW_PREFETCH_AHEAD {
                let (take_core, take_id) = order[next_take];
                match self.next_shared_answer(take_core, take_id) {
                    NextAnswer::Ready(version, shared) => {
                        self.prefetch_value(shared);
                        ahead.push_back((version, shared));
                        next_take += 1;
                    }
                    NextAnswer::Empty => break,
                    NextAnswer::Other => taking = false,
                }
            }
            let answer = if next_take > index {
                let (version, shared) = ahead.pop_front().expect("taken in order");
                self.shared_view(shared, version)
            } else {
                next_take = index + 1;
                self.view_answer(core, id)
            };
            match self.hold_view(core, pin, answer) {
                Ok(view) => views.push(view),
                Err(error) => result = Err(error),
            }
        }
        result.map(|()| views)
    }

    /// Asks the CPU for the lines a view of `shared` reads first: its block's header and the
    /// value's first line (a hint: out of range does nothing).
    fn prefetch_value(&self, shared: SharedValue) {
        if let Some(data) = self.pins.data.get(shared.core as usize) {
            let offset = shared.offset as usize;
            data.prefetch(offset.wrapping_sub(veddb_shm::BLOCK_HEADER_BYTES));
            data.prefetch(offset);
        }
    }

    /// The core that owns `key`.
    fn core_of_key(&self, key: &[u8]) -> usize {
        match self.cores.len() {
            1 => 0,
            cores => veddb_wire::shard_for_key(key, cores as u32) as usize,
        }
    }

    /// The answer to GET `id` on `core` as a view, when it is the next frame of the ring and a
    /// value in shared memory (the usual case, a batch's answers included: they come in
    /// order), read from the ring onto the stack and made a view without the general answer
    /// path. Nothing is consumed unless it is [`NextView::Ready`].
    fn next_shared_view(&self, core: usize, id: u32) -> NextView {
        match self.next_shared_answer(core, id) {
            NextAnswer::Ready(version, shared) => {
                NextView::Ready(self.shared_view(shared, version))
            }
            NextAnswer::Empty => NextView::Empty,
            NextAnswer::Other => NextView::Other,
        }
    }

    /// The answer to GET `id` on `core` when it is the next frame of the ring and a value in
    /// shared memory: its version and place, read onto the stack (consumed only then).
    fn next_shared_answer(&self, core: usize, id: u32) -> NextAnswer {
        if !self.stash.borrow().is_empty() {
            return NextAnswer::Other;
        }
        let mut responses = self.cores[core].responses.borrow_mut();
        let frame = match responses.peek() {
            Ok(Some(frame)) => frame,
            Ok(None) => return NextAnswer::Empty,
            Err(_) => return NextAnswer::Other,
        };
        if frame.len() != codec::SHARED_VALUE_ANSWER_BYTES {
            return NextAnswer::Other;
        }
        let mut bytes = [0u8; codec::SHARED_VALUE_ANSWER_BYTES];
        responses.copy_payload_into(&frame, &mut bytes);
        match codec::shared_value_answer(&bytes) {
            Some((answered, version, shared)) if answered == id => {
                responses.advance(frame);
                NextAnswer::Ready(version, shared)
            }
            _ => NextAnswer::Other,
        }
    }

    /// Waits for the answer to GET `id` on `core`, as a view (its pin not set yet) or a copy.
    fn view_answer(&self, core: usize, id: u32) -> Result<GetResult, ClientError> {
        // The usual answer, polled for a while; anything else, or a slow answer, the general
        // way (which also watches the server's status and sleeps).
        let policy = self.wait_policy(core);
        for polls in 0..FAST_VIEW_POLLS {
            match self.next_shared_view(core, id) {
                NextView::Ready(result) => return result,
                NextView::Empty => policy.pause(polls),
                NextView::Other => break,
            }
        }
        let answer = self.wait(core, id)?;
        let result = self.view_of(answer.payload());
        self.recycle_answer(answer);
        result
    }

    /// Gives a GET's view the pin taken (on `core`) before its request went, or releases the
    /// pin when the answer is not a view.
    fn hold_view(
        &self,
        core: usize,
        pin: HeldPin,
        result: Result<GetResult, ClientError>,
    ) -> Result<GetResult, ClientError> {
        match result {
            Ok(GetResult::View(mut view)) => {
                // The view holds the pin taken above and releases it on drop. (A GET is
                // answered from its own core's arena; a value of another core's would only be
                // pinned from now on.)
                view.pin = Some(if view.core == core {
                    pin
                } else {
                    let owner = self.pins.pin(view.core);
                    self.pins.unpin(pin);
                    owner
                });
                Ok(GetResult::View(view))
            }
            other => {
                self.pins.unpin(pin);
                other
            }
        }
    }

    /// The view of a shared value (its pin not set yet).
    fn shared_view(&self, shared: SharedValue, version: u64) -> Result<GetResult, ClientError> {
        let view = self.resolve(shared).ok_or_else(|| {
            protocol(format!(
                "an answer points outside the shared memory: {shared:?}"
            ))
        })?;
        Ok(GetResult::View(ValueView {
            view,
            version,
            core: shared.core as usize,
            pin: None,
            pins: self.pins.clone(),
        }))
    }

    /// A GET's answer as a view (its pin not set yet) or a copy.
    fn view_of(&self, payload: &[u8]) -> Result<GetResult, ClientError> {
        // The usual answer, read directly.
        if let Some((_, version, shared)) = codec::shared_value_answer(payload) {
            return self.shared_view(shared, version);
        }
        let (_, frame) = codec::decode_response(payload)
            .map_err(|error| protocol(format!("bad answer: {error}")))?;
        match frame {
            ResponseFrame::Value {
                value:
                    ValueRef::Shared {
                        core: owner,
                        offset,
                        len,
                        generation,
                    },
                version,
            } => self.shared_view(
                SharedValue {
                    core: owner,
                    offset,
                    len,
                    generation,
                },
                version,
            ),
            ResponseFrame::Value {
                value: ValueRef::Inline(bytes),
                version,
            } => Ok(GetResult::Copied(Bytes::copy_from_slice(bytes), version)),
            ResponseFrame::Other(Response::NotFound) => Ok(GetResult::NotFound),
            ResponseFrame::Other(Response::Error(error)) => Err(error.into()),
            ResponseFrame::Other(other) => Err(protocol(format!("unexpected answer {other:?}"))),
            ResponseFrame::Values(_) => Err(protocol("MGET answer to a GET")),
        }
    }
}

/// What [`LocalConnection::next_shared_answer`] found.
enum NextAnswer {
    /// The awaited answer: a value in shared memory, with its version.
    Ready(u64, SharedValue),
    /// Nothing in the ring yet.
    Empty,
    /// Something else first (another answer, a stashed one, an error): the general way.
    Other,
}

/// What [`LocalConnection::next_shared_view`] found.
enum NextView {
    /// The awaited answer, a view (or the error of making it).
    Ready(Result<GetResult, ClientError>),
    /// Nothing in the ring yet.
    Empty,
    /// Something else first (another answer, a stashed one, an error): the general way.
    Other,
}

/// Answers of a batch [`LocalConnection::get_view_many`] takes ahead of the one it makes a view
/// of (prefetching what their views read).
const VIEW_PREFETCH_AHEAD: usize = 8;

/// Polls of the ring for the usual answer to a GET before the general wait takes over (a few
/// microseconds: more than a GET's round trip).
const FAST_VIEW_POLLS: u32 = 256;

/// Polls a near-core client spins before it gives way (see [`WaitPolicy`]): a fraction of a
/// microsecond. (128, about 2 µs, gave 2 clients × depth 16 with the default flags 12–21 %
/// less; 0 cost a depth-1 client 40 %: its yields then slow the answers of a core elsewhere.)
const NEAR_SPIN_POLLS: u32 = 16;
/// Waits between two looks at which CPUs the cores run on.
const NEAR_RECHECK: u32 = 4096;

/// How a client pauses between two looks for an answer.
///
/// A client that shares the CPU of the core it waits for (`colocated`) yields the CPU at once:
/// the core needs it to answer. (On this 2-CPU machine two threads on one CPU that yield to
/// each other hand over in about 2 µs; one that spins keeps the core from answering until the
/// scheduler preempts it, milliseconds later.) A client that shares its CPU with another core
/// (`near`) spins briefly, then yields too: the core it waits for may be waiting for that
/// core, or for a client that spins on the other core's CPU, and no one gets anywhere while
/// everyone spins. A client on a CPU without cores spins (and sleeps after its spin window).
#[derive(Clone, Copy, Debug)]
struct WaitPolicy {
    colocated: bool,
    near: bool,
}

impl WaitPolicy {
    /// One pause, the `polls`-th of this wait.
    #[inline]
    fn pause(self, polls: u32) {
        if self.colocated || (self.near && polls >= NEAR_SPIN_POLLS) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Answers up to this many bytes are read onto the stack (a GET's answer with a value in
/// shared memory is 38).
const STACK_ANSWER_MAX: usize = 64;

/// An awaited answer's payload: on the stack when small, else in a buffer to recycle.
enum Answer {
    Stack {
        bytes: [u8; STACK_ANSWER_MAX],
        len: usize,
    },
    Buffer(Vec<u8>),
}

impl Answer {
    fn payload(&self) -> &[u8] {
        match self {
            Answer::Stack { bytes, len } => &bytes[..*len],
            Answer::Buffer(payload) => payload,
        }
    }
}

/// The pins a request holds while it waits for its answer.
enum Pinned {
    Nothing,
    One(HeldPin),
    Many(Vec<HeldPin>),
}

/// The keys of a multi-key request (MGET, MSET).
fn batch_keys(request: &Request) -> Option<usize> {
    match request {
        Request::MGet { keys } => Some(keys.len()),
        Request::MSet { pairs } => Some(pairs.len()),
        _ => None,
    }
}

/// Values of at least this size may be uploaded (when a request does not fit a frame and its
/// largest values alone do not make room).
const UPLOAD_VALUE_MIN: usize = 1 << 10;
/// Largest chunk of an upload: smaller than a frame, so that the core copies one chunk out of
/// the ring while the client writes the next.
const UPLOAD_CHUNK_MAX: usize = 128 << 10;

/// RESOURCE_EXHAUSTED for a request of `len` bytes that the session's `max`-byte frames cannot
/// carry.
fn frame_too_large(len: usize, max: usize) -> ClientError {
    ClientError::Status(veddb_wire::grpc::Status::new(
        veddb_wire::grpc::Code::ResourceExhausted,
        format!(
            "RESOURCE_EXHAUSTED: a request of {len} bytes is larger than this session's \
             {max}-byte frames; send it over gRPC or in smaller parts"
        ),
    ))
}

/// An engine error as `Err`, as [`Transport`] hands it back.
fn refused(response: Response) -> Result<Response, ClientError> {
    match response {
        Response::Error(error) => Err(error.into()),
        response => Ok(response),
    }
}

/// The shared-memory [`Transport`]. (The inherent [`LocalConnection::execute`] and
/// [`LocalConnection::execute_many`] hand engine errors back as [`Response::Error`], the ring
/// protocol's own answer; through this trait they are [`ClientError::Status`].)
impl Transport for LocalConnection {
    fn execute(&self, request: Request) -> Result<Response, ClientError> {
        refused(LocalConnection::execute(self, request)?)
    }

    fn execute_many(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        Ok(LocalConnection::execute_many(self, &requests)?
            .into_iter()
            .map(refused)
            .collect())
    }

    fn subscribe(&self, topic: Bytes) -> Result<Box<dyn TransportSubscription + '_>, ClientError> {
        let core = self.core_of_key(&topic);
        let id = self.take_id();
        {
            let mut payload = self.encoded.borrow_mut();
            codec::encode_push_subscribe_request(id, &topic, &mut payload);
            let max = self.cores[core].requests.borrow().ring().max_payload();
            if payload.len() > max {
                return Err(frame_too_large(payload.len(), max));
            }
            self.push(core, &payload)?;
        }
        self.wake_core(core);
        let answer = self.wait(core, id)?;
        let response = self.copy_out(answer.payload());
        self.recycle_answer(answer);
        match response? {
            Some(Response::Subscribed { subscriber }) => {
                self.inboxes.borrow_mut().entry(subscriber).or_default();
                Ok(Box::new(LocalSubscription {
                    connection: self,
                    core,
                    subscriber,
                    pending: VecDeque::new(),
                    ended: false,
                }))
            }
            Some(Response::Error(error)) => Err(error.into()),
            Some(other) => Err(ClientError::unexpected(other)),
            None => Err(protocol("a torn answer to SUBSCRIBE")),
        }
    }

    fn local(&self) -> Option<&LocalConnection> {
        Some(self)
    }
}

/// Messages one subscription's inbox holds (pushed by its core, not received yet) before the
/// oldest are dropped: a client that does not receive must not grow without bound. Counted as
/// dropped, like the server's own queue limit.
const INBOX_MESSAGES_MAX: usize = 65_536;
/// Bytes of messages one inbox holds (as [`INBOX_MESSAGES_MAX`]).
const INBOX_BYTES_MAX: usize = 64 << 20;

/// A pushed subscription's messages that arrived, not received yet.
#[derive(Default)]
struct Inbox {
    /// Each message, with how many were lost just before it.
    messages: VecDeque<(Bytes, u64)>,
    bytes: usize,
    /// Lost after the last message here (told with the next one).
    dropped: u64,
    /// A message arriving in parts: what came so far, and its length.
    partial: Option<(BytesMut, u64)>,
}

/// Largest message a part of a delivery may announce: the server's largest value
/// (`--value-bytes-max` is at most 1 GiB).
const PARTED_MESSAGE_MAX: u64 = 1 << 30;

impl Inbox {
    /// Takes in one part of a message too large for a frame (see [`codec::delivery_part`]).
    fn take_part(&mut self, part: codec::DeliveryPart, chunk: &[u8]) -> Result<(), ClientError> {
        if part.offset == 0 {
            // A message whose parts stopped early was dropped: the count includes it.
            self.partial = None;
            self.dropped += part.dropped;
            if part.total > PARTED_MESSAGE_MAX {
                return Err(protocol(format!(
                    "a pushed message of {} bytes announced (at most {PARTED_MESSAGE_MAX})",
                    part.total
                )));
            }
            // Grown as the parts come (the announced length is the server's word).
            let first = (part.total as usize).min(4 << 20);
            self.partial = Some((BytesMut::with_capacity(first), part.total));
        }
        let Some((message, total)) = self.partial.as_mut() else {
            return Err(protocol(
                "a part of a pushed message without its first part",
            ));
        };
        if *total != part.total || message.len() as u64 != part.offset {
            return Err(protocol(format!(
                "a part of a pushed message at {} of {} bytes, where {} of {} was due",
                part.offset,
                part.total,
                message.len(),
                total
            )));
        }
        message.extend_from_slice(chunk);
        if message.len() as u64 == *total {
            let (message, _) = self.partial.take().expect("partial");
            self.push(message.freeze());
        }
        Ok(())
    }

    fn push(&mut self, message: Bytes) {
        self.bytes += message.len();
        self.messages
            .push_back((message, std::mem::take(&mut self.dropped)));
        while self.messages.len() > INBOX_MESSAGES_MAX
            || (self.bytes > INBOX_BYTES_MAX && self.messages.len() > 1)
        {
            let Some((oldest, lost_before)) = self.messages.pop_front() else {
                break;
            };
            self.bytes -= oldest.len();
            if let Some((_, next_lost)) = self.messages.front_mut() {
                *next_lost += lost_before + 1;
            }
        }
    }
}

/// A subscription through the rings: its topic's core pushes its messages into this session's
/// response ring (SUBSCRIBE_PUSH), and receiving reads them from there; no request per message.
struct LocalSubscription<'a> {
    connection: &'a LocalConnection,
    /// The topic's core, whose ring the messages come through.
    core: usize,
    subscriber: SubscriberId,
    /// Taken from the connection's inbox, not received yet.
    pending: VecDeque<(Bytes, u64)>,
    /// Unsubscribed, or the session ended.
    ended: bool,
}

impl TransportSubscription for LocalSubscription<'_> {
    fn receive(&mut self, timeout: Duration) -> Result<Received, ClientError> {
        /// Polls of the ring between looks at the clock and at the server's status.
        const POLLS_PER_CHECK: u32 = 64;
        let connection = self.connection;
        let mut polls = 0u32;
        let mut started: Option<Instant> = None;
        loop {
            if let Some((message, dropped)) = self.pending.pop_front() {
                return Ok(Received::Message { message, dropped });
            }
            connection.take_delivered(self.subscriber, &mut self.pending);
            if !self.pending.is_empty() {
                continue;
            }
            if self.ended {
                return Ok(Received::Ended);
            }
            if !connection.cores[self.core].responses.borrow().is_empty() {
                connection.drain_into_stash(self.core)?;
                continue;
            }
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(POLLS_PER_CHECK) && timeout > Duration::ZERO {
                std::hint::spin_loop();
                continue;
            }
            if let Err(error) = connection.check_attached(self.core) {
                self.ended = true;
                return Err(error);
            }
            let elapsed = started.get_or_insert_with(Instant::now).elapsed();
            let Some(left) = timeout.checked_sub(elapsed).filter(|left| !left.is_zero()) else {
                return Ok(Received::Timeout);
            };
            if elapsed < connection.spin {
                // Messages come at the publisher's pace, not at a round trip's: spin politely
                // (another thread of this CPU, maybe the publisher, runs meanwhile).
                std::thread::yield_now();
                continue;
            }
            connection.sleep_for_answers(self.core, left.min(SLEEP_MAX));
        }
    }
}

impl Drop for LocalSubscription<'_> {
    fn drop(&mut self) {
        if !self.ended {
            // Deliveries that come before the answer are read on the way to it.
            let _ = Transport::execute(
                self.connection,
                Request::Unsubscribe {
                    subscriber: self.subscriber,
                },
            );
        }
        self.connection
            .inboxes
            .borrow_mut()
            .remove(&self.subscriber);
    }
}

/// A request sent by [`LocalConnection::submit`], awaiting its answer.
#[derive(Debug)]
pub struct Submitted {
    core: usize,
    id: u32,
    request: Request,
}

impl Submitted {
    /// The request.
    pub fn request(&self) -> &Request {
        &self.request
    }
}

/// What [`LocalConnection::get_view`] found.
#[derive(Debug)]
pub enum GetResult {
    /// The value, in place.
    View(ValueView),
    /// The value, copied (the server had no room for it in shared memory).
    Copied(Bytes, u64),
    NotFound,
}

impl Drop for LocalConnection {
    fn drop(&mut self) {
        self.heartbeat_stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{CorePins, PIN_GROUPS_MAX};
    use veddb_wire::shm::layout::ring_segment::EPOCH_PIN_NONE;

    const NONE: (u64, u64) = (EPOCH_PIN_NONE, EPOCH_PIN_NONE);

    #[test]
    fn the_ends_follow_the_oldest_and_newest_live_pin() {
        let mut pins = CorePins::default();
        assert_eq!(pins.ends(), NONE);
        let a = pins.add(5).0;
        let a2 = pins.add(5).0;
        assert_eq!(a, a2, "one group per epoch");
        let b = pins.add(9).0;
        let c = pins.add(12).0;
        assert_eq!(pins.ends(), (5, 12));
        // The newest goes: the newest pin falls back to the next live one.
        pins.remove(c);
        assert_eq!(pins.ends(), (5, 9));
        // The oldest goes (one of its two holders, then the other).
        pins.remove(a);
        assert_eq!(pins.ends(), (5, 9));
        pins.remove(a2);
        assert_eq!(pins.ends(), (9, 9));
        pins.remove(b);
        assert_eq!(pins.ends(), NONE);
        // Ids keep counting: a new pin after all were released is found again.
        let d = pins.add(20).0;
        assert_eq!(pins.ends(), (20, 20));
        pins.remove(d);
        assert_eq!(pins.ends(), NONE);
    }

    /// The words as the server reads them: `(floor, newest)` of the live pins it must keep.
    fn as_read(words: (u64, u64)) -> Option<(u64, u64)> {
        (words.0 != EPOCH_PIN_NONE).then_some((words.0, words.0.max(words.1)))
    }

    #[test]
    fn one_view_at_a_time_stores_one_word_per_pin_and_per_unpin() {
        let mut pins = CorePins::default();
        for epoch in [1, 1, 2, 5, 5, 9] {
            let group = pins.add(epoch).0;
            assert_eq!(pins.changed_words(), (None, Some(epoch)));
            pins.remove(group);
            assert_eq!(pins.changed_words(), (None, Some(EPOCH_PIN_NONE)));
        }
    }

    #[test]
    fn the_stored_words_cover_every_live_pin_after_every_change() {
        // A deterministic walk of adds (at a growing epoch) and removes (of any live pin).
        let mut pins = CorePins::default();
        let mut words = NONE;
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut epoch = 1;
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let moved = if live.is_empty() || (state % 100 < 48 && live.len() < 64) {
                epoch += state % 3 / 2;
                let (group, moved) = pins.add(epoch);
                live.push((epoch, group));
                moved
            } else {
                let (_, group) = live.swap_remove((state >> 8) as usize % live.len());
                pins.remove(group)
            };
            // As `pin`/`unpin` do: the words are looked at only when an end may have moved
            // (and when none did, there is nothing to store).
            let (newest, oldest) = pins.changed_words();
            if !moved {
                assert_eq!((newest, oldest), (None, None), "an end moved unannounced");
            }
            words.1 = newest.unwrap_or(words.1);
            words.0 = oldest.unwrap_or(words.0);
            let min = live.iter().map(|&(e, _)| e).min();
            let max = live.iter().map(|&(e, _)| e).max();
            match (as_read(words), min, max) {
                (None, None, None) => {}
                (Some((floor, newest)), Some(min), Some(max)) => {
                    assert!(floor <= min, "floor {floor} above the live pin {min}");
                    assert!(newest >= max, "newest {newest} below the live pin {max}");
                }
                (read, min, _) => panic!("words {words:?} read as {read:?}, oldest live {min:?}"),
            }
        }
    }

    #[test]
    fn a_middle_group_released_first_leaves_the_ends_alone() {
        let mut pins = CorePins::default();
        let a = pins.add(1).0;
        let b = pins.add(2).0;
        let c = pins.add(3).0;
        pins.remove(b);
        assert_eq!(pins.ends(), (1, 3));
        pins.remove(a);
        assert_eq!(
            pins.ends(),
            (3, 3),
            "the empty middle group went with the oldest"
        );
        pins.remove(c);
        assert_eq!(pins.ends(), NONE);
    }

    #[test]
    fn more_epochs_than_groups_merge_into_the_newest_and_stay_covered() {
        let mut pins = CorePins::default();
        let mut held = Vec::new();
        for epoch in 1..=(PIN_GROUPS_MAX as u64 * 3) {
            held.push((epoch, pins.add(epoch).0));
            let (oldest, newest) = pins.ends();
            assert_eq!(oldest, 1);
            assert_eq!(newest, epoch, "the newest pin is always exact");
        }
        // Released in an arbitrary order, the ends always cover every live pin.
        let mut order: Vec<usize> = (0..held.len()).collect();
        order.sort_by_key(|&i| (i * 7919) % held.len());
        let mut live: Vec<(u64, u64)> = held.clone();
        for i in order {
            let (epoch, group) = held[i];
            pins.remove(group);
            live.retain(|&(e, _)| e != epoch);
            let (oldest, newest) = pins.ends();
            match (
                live.iter().map(|&(e, _)| e).min(),
                live.iter().map(|&(e, _)| e).max(),
            ) {
                (Some(min), Some(max)) => {
                    assert!(
                        oldest != EPOCH_PIN_NONE && oldest <= min,
                        "{oldest} > {min}"
                    );
                    assert!(newest >= max, "{newest} < {max}");
                }
                _ => assert_eq!((oldest, newest), NONE),
            }
        }
    }
}
