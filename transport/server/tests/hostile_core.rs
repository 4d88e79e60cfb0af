//! Hostile local clients against a core: attackers written against the documented layout
//! (`docs/shm-layout.md`: the attach handshake, the ring segment, the byte rings, the request
//! codec), not through the client library, each beside a well-behaved client. Every test
//! asserts that the server stays up and serves local and gRPC requests, that the good client's
//! values are intact, that the server's memory stays bounded, and that the attacker gets the
//! documented outcome. Generous timeouts, no timing asserts.
#![cfg(target_os = "linux")]

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use veddb_client::Client;
use veddb_shm::{recv_with_fds, ByteRing, RingConsumer, RingProducer, Segment};
use veddb_wire::shm::codec;
use veddb_wire::shm::layout::{attach, data_segment, instance, reason, ring_segment};
use veddb_wire::{Error, Request, Response, SetOptions};

mod common;
use common::{capture_stderr, listening_address, remove_instance_files, unique_name};

const SERVER: &str = env!("CARGO_BIN_EXE_veddb-server");

/// The server under test: this build's, or `VEDDB_SERVER_UNDER_TEST` (to show that an older
/// build fails these tests).
fn server_binary() -> String {
    std::env::var("VEDDB_SERVER_UNDER_TEST").unwrap_or_else(|_| SERVER.to_string())
}
/// Generous: debug builds on small, busy machines.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a round of the good client may take while an attack runs (debug builds on a
/// small, busy machine: generous).
const SERVED_TIMEOUT: Duration = Duration::from_secs(60);

/// `veddb-server --create --name NAME --port 0 --cores 2`; killed and cleaned up when dropped.
struct Server {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    grpc: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let name = unique_name("hc");
        let mut child = Command::new(server_binary())
            .args(["--create", "--name", &name, "--port", "0", "--cores", "2"])
            .args(["--memory-mb", "64"])
            .args(extra)
            .env_remove("VEDDB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veddb-server");
        let (log, reader) = capture_stderr(&mut child);
        let mut server = Server {
            name,
            child,
            log,
            reader: Some(reader),
            grpc: String::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("the server exited with {status}:\n{}", server.log());
            }
            let log = server.log();
            if log.contains("veddb-server ready") {
                server.grpc = listening_address(&log).expect("the gRPC address is logged");
                return server;
            }
            assert!(Instant::now() < deadline, "not ready:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn local(&self) -> Client {
        Client::connect_local(&self.name).expect("attach")
    }

    fn grpc(&self) -> Client {
        Client::connect_grpc(&self.grpc).expect("gRPC connect")
    }

    /// Resident memory of the server, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server runs");
        let kb: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// The CPU the thread of core `core` last ran on (`/proc`), if it is found.
    fn core_thread_cpu(&self, core: u32) -> Option<u32> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).ok()?;
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != format!("veddb-core-{core}") {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the command's closing parenthesis start at field 3; the CPU is 39.
            let after = &stat[stat.rfind(')')? + 1..];
            return after.split_whitespace().nth(39 - 3)?.parse().ok();
        }
        None
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the server died ({status}):\n{}", self.log());
        }
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        // SAFETY: kill(2) with a pid this test started and still holds; no memory involved.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}:\n{}", self.log());
                break;
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        assert!(self.log().contains("stopped"), "{}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_instance_files(&self.name);
    }
}

/// A session attached by hand, from the documented handshake: the rings of every core, the
/// cores' eventfds. It writes requests and reads nothing unless told to.
struct RawSession {
    _socket: std::os::unix::net::UnixStream,
    /// The cores' data segments (read-only).
    datas: Vec<Segment>,
    rings: Vec<Arc<Segment>>,
    producers: Vec<RingProducer>,
    consumers: Vec<RingConsumer>,
    wakes: Vec<OwnedFd>,
    next_id: u32,
}

impl RawSession {
    fn attach(name: &str) -> RawSession {
        use std::io::Write;
        let file = Segment::open_named(std::path::Path::new(&instance::path(name)), false)
            .expect("the instance file");
        let mut page = vec![0u8; instance::FILE_BYTES];
        file.read_bytes(0, &mut page);
        let header = instance::InstanceHeader::read(&page).expect("header");
        let cores = header.core_count as usize;
        let socket = std::os::unix::net::UnixStream::connect(instance::socket_path(name))
            .expect("the instance socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        (&socket).write_all(attach::HELLO).unwrap();
        let mut reply = vec![0u8; 4096];
        let (length, fds) = recv_with_fds(&socket, &mut reply, cores * 3).expect("reply");
        let reply = attach::AttachReply::decode(&reply[..length]).expect("attached");
        assert_eq!(fds.len(), cores * 3);
        let mut fds = fds.into_iter();
        let datas: Vec<Segment> = (0..cores)
            .map(|_| Segment::map_fd(fds.next().unwrap(), false).unwrap())
            .collect();
        let rings: Vec<Arc<Segment>> = (0..cores)
            .map(|_| Arc::new(Segment::map_fd(fds.next().unwrap(), true).unwrap()))
            .collect();
        let wakes: Vec<OwnedFd> = fds.collect();
        let producers = rings
            .iter()
            .map(|ring| {
                ByteRing {
                    head_offset: ring_segment::REQUEST_HEAD_OFFSET,
                    data_offset: ring_segment::REQUEST_RING_OFFSET,
                    size: reply.request_ring_bytes as usize,
                }
                .producer(ring.clone())
                .unwrap()
            })
            .collect();
        let consumers = rings
            .iter()
            .map(|ring| {
                ByteRing {
                    head_offset: ring_segment::RESPONSE_HEAD_OFFSET,
                    data_offset: ring_segment::response_ring_offset(reply.response_ring_bytes),
                    size: reply.response_ring_bytes as usize,
                }
                .consumer(ring.clone())
                .unwrap()
            })
            .collect();
        RawSession {
            _socket: socket,
            datas,
            rings,
            producers,
            consumers,
            wakes,
            next_id: 1,
        }
    }

    /// Writes one request into `core`'s ring if there is room; whether it did.
    fn push(&mut self, core: usize, request: &Request) -> bool {
        let frame = codec::encode_request_vec(self.next_id, request);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.producers[core]
            .try_push(&frame)
            .expect("a valid frame")
    }

    /// Writes one payload, as it is, into `core`'s ring if there is room; whether it did.
    fn push_raw(&mut self, core: usize, payload: &[u8]) -> bool {
        self.producers[core]
            .try_push(payload)
            .expect("a frame that fits")
    }

    /// Writes a SUBSCRIBE_PUSH of `topic` into `core`'s ring (which must have room).
    fn push_subscribe(&mut self, core: usize, topic: &[u8]) {
        let mut payload = Vec::new();
        codec::encode_push_subscribe_request(self.next_id, topic, &mut payload);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        assert!(self.push_raw(core, &payload), "room for a SUBSCRIBE_PUSH");
    }

    /// The next frame of `core`'s response ring, within [`SERVED_TIMEOUT`].
    fn next_answer(&mut self, core: usize) -> Vec<u8> {
        let deadline = Instant::now() + SERVED_TIMEOUT;
        loop {
            if let Some(frame) = self.consumers[core].peek().expect("a valid response ring") {
                let mut payload = Vec::new();
                self.consumers[core].copy_payload(&frame, &mut payload);
                self.consumers[core].advance(frame);
                return payload;
            }
            assert!(Instant::now() < deadline, "no answer on core {core}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Rings `core`'s eventfd, whether or not the core said it parked.
    fn wake(&self, core: usize) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local array to a descriptor this session owns.
        unsafe {
            libc::write(self.wakes[core].as_raw_fd(), one.as_ptr().cast(), 8);
        }
    }

    /// The disconnect reason the server wrote into `core`'s ring header (0: none).
    fn disconnect_reason(&self, core: usize) -> u32 {
        self.rings[core]
            .atomic_u32(ring_segment::DISCONNECT_REASON_OFFSET)
            .load(Ordering::Acquire)
    }
}

/// The CPU words of layout 4 (`docs/shm-layout.md`, "Sharing a CPU"): every core publishes the
/// CPU it is pinned to, a new ring says "unknown" for its client, and a client that writes
/// nonsense there (or the core's own CPU, to make it yield) is served like any other while a
/// good client goes on.
#[test]
fn cpu_words_are_published_and_a_lying_client_is_served() {
    let server = Server::start(&[]);
    let mut raw = RawSession::attach(&server.name);
    for core in 0..2u32 {
        // The engine pins each core to a CPU; the core publishes it at start.
        let published = (|| {
            let deadline = Instant::now() + SERVED_TIMEOUT;
            loop {
                let cpu = raw.datas[core as usize]
                    .load_u32(data_segment::CORE_CPU_OFFSET, Ordering::Acquire);
                if cpu != data_segment::CPU_UNKNOWN || Instant::now() > deadline {
                    return cpu;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })();
        assert_eq!(
            Some(published),
            server.core_thread_cpu(core),
            "core {core}'s published CPU against where its thread runs"
        );
        assert_eq!(
            raw.rings[core as usize]
                .atomic_u32(ring_segment::CLIENT_CPU_OFFSET)
                .load(Ordering::Acquire),
            data_segment::CPU_UNKNOWN,
            "a new ring's client CPU"
        );
    }
    let lies = [0, 1, 7, 1 << 20, data_segment::CPU_UNKNOWN - 1];
    for (round, lie) in lies.into_iter().enumerate() {
        for core in 0..2u32 {
            raw.rings[core as usize]
                .atomic_u32(ring_segment::CLIENT_CPU_OFFSET)
                .store(lie, Ordering::Release);
            let key = key_on(core, 2, &format!("liar-{round}"));
            assert!(raw.push(
                core as usize,
                &Request::Set {
                    key: key.clone(),
                    value: Bytes::from_static(b"v"),
                    options: SetOptions::default(),
                }
            ));
            raw.wake(core as usize);
            let answer = raw.next_answer(core as usize);
            assert!(
                matches!(
                    codec::decode_response(&answer).map(|(_, response)| response),
                    Ok(codec::ResponseFrame::Other(Response::Stored { .. }))
                ),
                "the liar's SET on core {core}: {answer:?}"
            );
        }
        good_client_round(&server, round);
    }
    server.stop();
}

/// A key owned by `core` of `cores`.
fn key_on(core: u32, cores: u32, tag: &str) -> Bytes {
    Bytes::from(common::name_on(core, cores, tag))
}

/// The good client: writes its keys on every core, then checks them, through shared memory
/// and gRPC, each call bounded by `SERVED_TIMEOUT`.
fn good_client_round(server: &Server, round: usize) {
    let started = Instant::now();
    let local = server.local();
    let grpc = server.grpc();
    for core in 0..2 {
        let key = key_on(core, 2, &format!("good-{round}"));
        let value = Bytes::from(format!("value-{round}-{core}"));
        local
            .set(key.clone(), value.clone(), SetOptions::default())
            .unwrap();
        assert_eq!(local.get(key.clone()).unwrap().unwrap().0, value);
        assert_eq!(grpc.get(key).unwrap().unwrap().0, value);
    }
    assert!(
        started.elapsed() < SERVED_TIMEOUT,
        "the good client was not served within {SERVED_TIMEOUT:?}"
    );
}

/// Defect 1: a client clears O_NONBLOCK on the cores' eventfds (the flag lives on the shared
/// file description) and steals their wake-ups with blocking reads. The core never does a
/// blocking read on them (it reads through io_uring), so it keeps serving everyone.
#[test]
fn a_blocking_eventfd_does_not_stop_a_core() {
    let mut server = Server::start(&["--spin-us", "0"]);
    let attacker = RawSession::attach(&server.name);
    let stop = Arc::new(AtomicBool::new(false));
    let mut thieves = Vec::new();
    for wake in &attacker.wakes {
        let fd = wake.as_raw_fd();
        // SAFETY: fcntl on a descriptor the attacker owns (kept open until the end of the test).
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            assert!(flags >= 0);
            assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK), 0);
        }
        let stop = stop.clone();
        // Steals every wake-up: a blocking read that wins the race against the core.
        thieves.push(std::thread::spawn(move || {
            let mut count = [0u8; 8];
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: reads at most 8 bytes into a live local array; the descriptor stays
                // open until this thread is joined.
                unsafe {
                    libc::read(fd, count.as_mut_ptr().cast(), 8);
                }
            }
        }));
    }
    for round in 0..20 {
        good_client_round(&server, round);
        for core in 0..2 {
            attacker.wake(core);
        }
        server.assert_running();
    }
    stop.store(true, Ordering::Relaxed);
    // Unblock the thieves before the server goes: they read whatever we write, but the core
    // may win every race for a wake-up, so keep writing until each thief has seen one.
    let deadline = Instant::now() + SERVED_TIMEOUT;
    while thieves.iter().any(|thief| !thief.is_finished()) {
        assert!(Instant::now() < deadline, "the thieves never got a wake-up");
        for core in 0..2 {
            attacker.wake(core);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for thief in thieves {
        let _ = thief.join();
    }
    drop(attacker);
    server.stop();
}

/// Defects 2 and 3: sessions that flood requests whose answers queue (forwarded to the other
/// core, scattered SCANs with large answers) and never read a single answer. Each session is
/// paused at its limit, then cut off with RESPONSE_BACKLOG; the server's memory stays bounded
/// and the good client is served throughout.
#[test]
fn sessions_that_never_read_are_bounded_and_cut_off() {
    let mut server = Server::start(&["--spin-us", "0"]);
    // Keys to make SCAN answers large: 4,000 keys of 100 bytes.
    let loader = server.local();
    let pairs: Vec<(Bytes, Bytes)> = (0..4000)
        .map(|i| (Bytes::from(format!("{i:0>100}")), Bytes::from_static(b"v")))
        .collect();
    for chunk in pairs.chunks(500) {
        loader
            .execute(Request::MSet {
                pairs: chunk.to_vec(),
            })
            .unwrap();
    }
    let baseline = server.rss();
    let mut attackers: Vec<RawSession> = (0..6).map(|_| RawSession::attach(&server.name)).collect();
    let scan = Request::Scan {
        cursor: Bytes::new(),
        prefix: Bytes::new(),
        count: 4000,
    };
    let forwarded = Request::Get {
        key: key_on(1, 2, "elsewhere"),
    };
    let started = Instant::now();
    let mut peak = baseline;
    let mut round = 0;
    // Flood until every attacker is cut off (the documented outcome), at most 90 s.
    loop {
        for attacker in attackers.iter_mut() {
            for _ in 0..64 {
                attacker.push(0, &scan);
                attacker.push(0, &forwarded);
            }
            attacker.wake(0);
        }
        peak = peak.max(server.rss());
        if round % 10 == 0 {
            good_client_round(&server, round);
        }
        round += 1;
        server.assert_running();
        let cut = attackers
            .iter()
            .filter(|a| a.disconnect_reason(0) == reason::RESPONSE_BACKLOG)
            .count();
        if cut == attackers.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{cut} of {} attackers cut off after 90 s; server log:\n{}",
            attackers.len(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Bounded: six sessions may hold at most their per-session limit (4 MiB) four times over
    // before the cut, plus what is being encoded; far below the gigabytes of the defect.
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "six sessions that never read: the server grew by {} MiB at most",
        grown >> 20
    );
    assert!(
        grown < 256 << 20,
        "the server grew by {} MiB under the flood",
        grown >> 20
    );
    assert!(
        server.log().contains("RESPONSE_BACKLOG") || server.log().contains("response backlog"),
        "the cut-off is logged with its reason:\n{}",
        server.log()
    );
    good_client_round(&server, round);
    drop(attackers);
    server.stop();
}

/// Pushed subscriptions of a client that never reads its response ring. The core writes
/// deliveries while the ring has room; then the messages wait in each subscription's bounded
/// queue, which drops its oldest: the publisher is never refused, the server's memory stays
/// bounded (200 MB published to 64 subscriptions would be 12.8 GB delivered), and everyone else
/// is served. A SUBSCRIBE_PUSH sent to a core that does not own its topic is refused with an
/// error; a malformed one disconnects the session.
#[test]
fn pushed_subscribers_that_never_read_are_bounded() {
    const SUBSCRIPTIONS: usize = 64;
    const MESSAGES: usize = 100_000;
    const LENGTH: usize = 2048;
    let mut server = Server::start(&["--spin-us", "0"]);
    let topic = key_on(0, 2, "flood");
    let mut raw = RawSession::attach(&server.name);

    raw.push_subscribe(0, &key_on(1, 2, "elsewhere"));
    raw.wake(0);
    match codec::decode_response(&raw.next_answer(0)) {
        Ok((_, codec::ResponseFrame::Other(Response::Error(Error::InvalidArgument(text))))) => {
            assert!(text.contains("topic's core"), "{text}")
        }
        other => panic!("a SUBSCRIBE_PUSH on the wrong core: {other:?}"),
    }
    for _ in 0..SUBSCRIPTIONS {
        raw.push_subscribe(0, &topic);
    }
    raw.wake(0);
    for _ in 0..SUBSCRIPTIONS {
        match codec::decode_response(&raw.next_answer(0)) {
            Ok((_, codec::ResponseFrame::Other(Response::Subscribed { .. }))) => {}
            other => panic!("a SUBSCRIBE_PUSH: {other:?}"),
        }
    }

    let baseline = server.rss();
    let mut peak = baseline;
    let publisher = server.local();
    let message = Bytes::from(vec![b'm'; LENGTH]);
    for (round, batch) in (0..MESSAGES).collect::<Vec<_>>().chunks(1000).enumerate() {
        let requests: Vec<Request> = batch
            .iter()
            .map(|_| Request::Publish {
                topic: topic.clone(),
                message: message.clone(),
            })
            .collect();
        for answer in publisher.execute_many(requests).unwrap() {
            assert_eq!(
                answer.unwrap(),
                Response::Published {
                    receivers: SUBSCRIPTIONS as u32
                }
            );
        }
        if round % 20 == 0 {
            peak = peak.max(server.rss());
            good_client_round(&server, round);
        }
    }
    peak = peak.max(server.rss());
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "{SUBSCRIPTIONS} pushed subscriptions that never read, {} MB published: the server \
         grew by {} MiB at most",
        MESSAGES * LENGTH / 1_000_000,
        grown >> 20
    );
    assert!(grown < 256 << 20, "the server grew by {} MiB", grown >> 20);
    let info = publisher.info().unwrap().total();
    assert!(
        info.messages_dropped > 0,
        "the queues dropped their oldest: {info:?}"
    );
    assert_eq!(raw.disconnect_reason(0), 0, "not reading is no violation");

    // A SUBSCRIBE_PUSH whose topic length runs past its payload.
    let mut bad = Vec::new();
    codec::encode_push_subscribe_request(9, b"abc", &mut bad);
    bad[5..9].copy_from_slice(&100u32.to_le_bytes());
    assert!(raw.push_raw(1, &bad));
    raw.wake(1);
    assert_eq!(raw.wait_disconnected(1), reason::BAD_FRAME);
    good_client_round(&server, MESSAGES);
    server.assert_running();
    drop(raw);
    server.stop();
}

/// Defect 7: a flood of huge MGETs (20,000 keys each) from several sessions. Rounds are
/// budgeted by work, so each attacker gets one such request per round and the good client is
/// served; memory stays bounded.
#[test]
fn a_flood_of_huge_batches_does_not_starve_others() {
    let mut server = Server::start(&["--spin-us", "0"]);
    let baseline = server.rss();
    let mut attackers: Vec<RawSession> = (0..2).map(|_| RawSession::attach(&server.name)).collect();
    let keys: Vec<Bytes> = (0..20_000).map(|i| Bytes::from(format!("k{i}"))).collect();
    let mget = Request::MGet { keys };
    let mut peak = baseline;
    for round in 0..10 {
        for attacker in attackers.iter_mut() {
            for core in 0..2 {
                while attacker.push(core, &mget) {}
                attacker.wake(core);
            }
        }
        good_client_round(&server, round);
        peak = peak.max(server.rss());
        server.assert_running();
    }
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "a flood of 20,000-key MGETs: the server grew by {} MiB at most",
        grown >> 20
    );
    assert!(
        grown < 512 << 20,
        "the server grew by {} MiB under the flood",
        grown >> 20
    );
    drop(attackers);
    server.stop();
}

impl RawSession {
    /// Writes one payload into `core`'s ring, waiting for room (waking the core meanwhile).
    fn push_waiting(&mut self, core: usize, payload: &[u8]) {
        let deadline = Instant::now() + SERVED_TIMEOUT;
        while !self.push_raw(core, payload) {
            assert!(Instant::now() < deadline, "the request ring stayed full");
            self.wake(core);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// One UPLOAD frame (`docs/shm-layout.md`, "Large values"): `len` bytes of `fill` at
    /// `offset` of a `total`-byte value, for request `request` (never 0 in a well-formed one).
    fn upload_frame(request: u32, total: u64, offset: u64, len: u32, fill: u8) -> Vec<u8> {
        let chunk = codec::UploadChunk {
            request,
            total,
            offset,
            len,
        };
        let mut frame = codec::encode_upload_header(chunk).to_vec();
        frame.resize(frame.len() + len as usize, fill);
        frame
    }

    /// Uploads a whole value of `total` bytes of `fill` to `core`, in 100 KiB chunks, for the
    /// next request this session sends.
    fn upload(&mut self, core: usize, total: u64, fill: u8) {
        let mut offset = 0;
        loop {
            let len = (total - offset).min(100 << 10) as u32;
            let frame = Self::upload_frame(self.next_id, total, offset, len, fill);
            self.push_waiting(core, &frame);
            offset += u64::from(len);
            if offset == total {
                return;
            }
        }
    }

    /// A SET of `key` to the session's next uploaded value on `core`; its request id.
    fn set_uploaded(&mut self, core: usize, key: &Bytes) -> u32 {
        let id = self.next_id;
        let request = Request::Set {
            key: key.clone(),
            value: codec::uploaded_value_mark(),
            options: SetOptions::default(),
        };
        let frame = codec::encode_request_vec(id, &request);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.push_waiting(core, &frame);
        self.wake(core);
        id
    }

    /// The next answer on `core`, decoded (values inline or shared, as frames).
    fn next_response(&mut self, core: usize) -> (u32, Response) {
        let payload = self.next_answer(core);
        let (id, frame) = codec::decode_response(&payload).expect("a well-formed answer");
        let response = frame
            .into_response(|_| Some(Bytes::new()))
            .expect("no shared value to resolve");
        (id, response)
    }

    /// Waits until the server disconnected this session on `core`; the reason.
    fn wait_disconnected(&self, core: usize) -> u32 {
        let deadline = Instant::now() + SERVED_TIMEOUT;
        loop {
            let reason = self.disconnect_reason(core);
            if reason != 0 {
                return reason;
            }
            assert!(Instant::now() < deadline, "not disconnected");
            self.wake(core);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Uploads of large values (`docs/shm-layout.md`, "Large values") from clients that break the
/// rules: each wrong upload is an error for the request that names it and the session goes on;
/// a malformed UPLOAD frame or uploads never used disconnect that session; clients that die in
/// the middle of 16 MiB uploads, again and again, leave nothing held (a good client's 12 MiB
/// SET still fits the core's upload budget afterwards); two sessions uploading values for one
/// key at once each store a whole value. The server's memory stays bounded throughout.
#[test]
fn hostile_uploads_get_their_errors_and_leave_nothing_held() {
    let mut server = Server::start(&["--spin-us", "0"]);
    let baseline = server.rss();
    let key = key_on(0, 2, "uploaded");
    let mut raw = RawSession::attach(&server.name);

    // Named with nothing uploaded.
    let id = raw.set_uploaded(0, &key);
    match raw.next_response(0) {
        (answered, Response::Error(Error::InvalidArgument(text))) => {
            assert_eq!(answered, id);
            assert!(text.contains("no upload for it finished"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // A chunk out of order fails that upload only.
    let next = raw.next_id;
    raw.push_waiting(0, &RawSession::upload_frame(next, 300_000, 0, 1000, 1));
    raw.push_waiting(0, &RawSession::upload_frame(next, 300_000, 5000, 1000, 1));
    let id = raw.set_uploaded(0, &key);
    match raw.next_response(0) {
        (answered, Response::Error(Error::InvalidArgument(text))) => {
            assert_eq!(answered, id);
            assert!(text.contains("arrived where bytes 1000.."), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // A value over --value-bytes-max (16 MiB): refused at its first chunk, the rest ignored.
    raw.upload(0, (16 << 20) + 1, 2);
    let id = raw.set_uploaded(0, &key);
    assert_eq!(
        raw.next_response(0),
        (
            id,
            Response::Error(Error::ValueTooLarge {
                length: (16 << 20) + 1,
                limit: 16 << 20
            })
        )
    );
    // A well-formed one after all that is stored whole.
    raw.upload(0, 3 << 20, 3);
    let id = raw.set_uploaded(0, &key);
    assert!(matches!(raw.next_response(0), (answered, Response::Stored { .. }) if answered == id));
    let local = server.local();
    let (value, _) = local.get(key.clone()).unwrap().unwrap();
    assert!(value.len() == 3 << 20 && value.iter().all(|&b| b == 3));

    // Values uploaded for a request that never came are never another request's: the next
    // request that names uploads takes only its own.
    raw.upload(0, 200_000, 4);
    raw.next_id += 1; // the request those were for is never sent
    raw.upload(0, 300_000, 5);
    let id = raw.set_uploaded(0, &key);
    assert!(matches!(raw.next_response(0), (answered, Response::Stored { .. }) if answered == id));
    let (value, _) = local.get(key.clone()).unwrap().unwrap();
    assert!(value.len() == 300_000 && value.iter().all(|&b| b == 5));

    // Malformed UPLOAD frames disconnect their session, nobody else's: request id 0, a chunk
    // length that is not the rest of the frame.
    raw.push_waiting(1, &RawSession::upload_frame(0, 100, 0, 10, 0));
    raw.wake(1);
    assert_eq!(raw.wait_disconnected(1), reason::BAD_FRAME);
    let mut raw = RawSession::attach(&server.name);
    let mut frame = RawSession::upload_frame(1, 100, 0, 10, 0);
    frame.push(0);
    raw.push_waiting(0, &frame);
    raw.wake(0);
    assert_eq!(raw.wait_disconnected(0), reason::BAD_FRAME);
    // Uploads never used by a request: past 65,536 waiting, the session is cut off.
    let mut raw = RawSession::attach(&server.name);
    let empty = RawSession::upload_frame(1, 0, 0, 0, 0);
    for _ in 0..=veddb_wire::limits::BATCH_KEYS_MAX {
        if raw.disconnect_reason(1) != 0 {
            break;
        }
        raw.push_waiting(1, &empty);
    }
    raw.wake(1);
    assert_eq!(raw.wait_disconnected(1), reason::BAD_FRAME);
    assert!(
        server.log().contains("uploaded values wait"),
        "{}",
        server.log()
    );
    good_client_round(&server, 0);

    // Clients that die halfway through 16 MiB uploads, ten times: 160 MiB announced, 4 MiB
    // of it sent each time. The core's budget (half its 80 MiB arena) would be spent after
    // three if a dead session kept what it held.
    for round in 0..10u8 {
        let mut dying = RawSession::attach(&server.name);
        for offset in (0..4u64 << 20).step_by(100 << 10) {
            dying.push_waiting(
                0,
                &RawSession::upload_frame(1, 16 << 20, offset, 100 << 10, round),
            );
        }
        dying.wake(0);
        drop(dying);
        server.assert_running();
    }
    let big = Bytes::from(vec![9u8; 12 << 20]);
    let deadline = Instant::now() + SERVED_TIMEOUT;
    loop {
        // Busy (RESOURCE_EXHAUSTED) until the server has noticed the last deaths.
        match local.set(key.clone(), big.clone(), SetOptions::default()) {
            Ok(_) => break,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "a 12 MiB SET still refused after the uploaders died: {error}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(local.get(key.clone()).unwrap().unwrap().0 == big);

    // Two sessions upload values for one key, chunk by chunk in turn: each SET stores a whole
    // value of its own, and the key ends with one of them, whole.
    let mut first = RawSession::attach(&server.name);
    let mut second = RawSession::attach(&server.name);
    let total: u64 = 2 << 20;
    for offset in (0..total).step_by(100 << 10) {
        let len = (total - offset).min(100 << 10) as u32;
        let ids = (first.next_id, second.next_id);
        first.push_waiting(
            0,
            &RawSession::upload_frame(ids.0, total, offset, len, 0xA1),
        );
        second.push_waiting(
            0,
            &RawSession::upload_frame(ids.1, total, offset, len, 0xB2),
        );
    }
    let ids = [first.set_uploaded(0, &key), second.set_uploaded(0, &key)];
    for (session, id) in [&mut first, &mut second].into_iter().zip(ids) {
        assert!(
            matches!(session.next_response(0), (answered, Response::Stored { .. }) if answered == id)
        );
    }
    let (value, _) = local.get(key.clone()).unwrap().unwrap();
    assert_eq!(value.len() as u64, total);
    assert!(
        value.iter().all(|&b| b == 0xA1) || value.iter().all(|&b| b == 0xB2),
        "a value mixed from two uploads"
    );

    let grown = server.rss().saturating_sub(baseline);
    eprintln!(
        "hostile uploads (160 MiB announced by dying clients): the server grew by {} MiB",
        grown >> 20
    );
    assert!(grown < 256 << 20, "the server grew by {} MiB", grown >> 20);
    good_client_round(&server, 1);
    drop((first, second, local));
    server.stop();
}

/// A FETCH of a pushed subscription's id (from anyone who guesses it) takes the message whose
/// parts the core is pushing into the subscriber's ring. The core must notice that the next
/// message is another (shorter) one and start it from its first part: before, it went on at
/// the old offset (a panic for a shorter message, a message stitched from two otherwise).
#[test]
fn a_message_taken_while_half_pushed_does_not_tear_the_next() {
    let mut server = Server::start(&["--spin-us", "0"]);
    let topic = key_on(0, 2, "parted");
    let mut raw = RawSession::attach(&server.name);
    raw.push_subscribe(0, &topic);
    raw.wake(0);
    let subscriber = match raw.next_response(0) {
        (_, Response::Subscribed { subscriber }) => subscriber,
        other => panic!("{other:?}"),
    };
    let publisher = server.local();
    assert_eq!(
        publisher
            .publish(topic.clone(), vec![1u8; 3 << 20])
            .unwrap(),
        1
    );
    // The core writes parts until the unread ring is full.
    let deadline = Instant::now() + SERVED_TIMEOUT;
    while raw.consumers[0].is_empty() {
        assert!(Instant::now() < deadline, "the core pushed no parts");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let thief = server.local();
    // It takes the message (its answer is too large for the thief's frames: it gets that error).
    let taken = thief.execute(Request::Fetch {
        subscriber,
        max: 10,
        wait_ms: 0,
    });
    assert!(
        taken
            .as_ref()
            .is_err_and(|error| error.to_string().contains("larger than")),
        "{taken:?}"
    );
    let shorter = vec![2u8; 600 << 10];
    assert_eq!(
        publisher.publish(topic.clone(), shorter.clone()).unwrap(),
        1
    );
    // Read the ring: parts of the first message, then the second one from its first part.
    let mut message: Vec<u8> = Vec::new();
    let mut total = 0;
    loop {
        raw.wake(0);
        let payload = raw.next_answer(0);
        let (part, chunk) = codec::delivery_part(&payload)
            .expect("a well-formed part")
            .expect("only delivery parts here");
        if part.offset == 0 {
            message.clear();
            total = part.total as usize;
        }
        assert_eq!(part.offset as usize, message.len(), "parts in order");
        message.extend_from_slice(&payload[chunk]);
        if message.len() == total && total == shorter.len() {
            break;
        }
    }
    assert!(
        message == shorter,
        "the second message arrived whole and alone"
    );
    server.assert_running();
    good_client_round(&server, 0);
    drop(raw);
    server.stop();
}
