//! One conformance suite for every client transport: the same client-visible behaviour, run
//! through each [`veddb_client::Transport`] against the real `veddb-server` binary.
//!
//! Each case is a function of the transport it runs through; [`conformance!`] makes one
//! `#[test]` per (transport, case), named `<transport>::<case>`. Adding a transport (QUIC) is
//! one line in that list, one variant of [`Kind`] and one arm of [`Server::try_connect`].
//!
//! Each test starts its own server (`--create --name <unique>`, so it serves shared memory, and
//! `--port 0`, gRPC on a free port; two cores, so requests are forwarded between cores), so
//! tests run in parallel and counters read through INFO are this test's alone. Where transports
//! differ by design (a limit only one of them has), the case asserts each transport's behaviour
//! and says why they differ.
#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use veddb_client::grpc::GrpcTransport;
use veddb_client::local::LocalConnection;
use veddb_client::{CasOutcome, Client, ClientError, Received};
use veddb_wire::grpc::Code;
use veddb_wire::shm::layout::instance;
use veddb_wire::{limits, Request, Response, SetCondition, SetOptions, Ttl};

mod common;
use common::{capture_stderr, listening_address, unique_name};

const SERVER: &str = env!("CARGO_BIN_EXE_veddb-server");
/// Generous: debug builds on small, busy machines.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long something the server does in the background (an unsubscribe after a cancelled
/// stream or a closed connection, a TTL) may take before the test gives up. Never a bound
/// the test asserts on: only what eventually happens.
const EVENTUALLY: Duration = Duration::from_secs(30);
/// How long a subscriber waits for a message that must come.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a subscriber waits for a message that must not come.
const SILENCE: Duration = Duration::from_millis(200);
const CORES: usize = 2;
/// The limits every server of this suite runs with (`--key-bytes-max`, `--value-bytes-max`).
const KEY_BYTES_MAX: usize = 1024;
const VALUE_BYTES_MAX: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// The transports, and one test per (transport, case).

/// A client transport the suite runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Shared memory (`Client::connect_local`).
    Local,
    /// gRPC (`Client::connect_grpc`).
    Grpc,
}

impl Kind {
    /// Every transport, for cases that cross them (written through one, read through all).
    const ALL: [Kind; 2] = [Kind::Local, Kind::Grpc];
}

/// `#[test] fn <case>()` in `mod <transport>` for every transport and case.
macro_rules! conformance {
    (transports: { $($module:ident => $kind:ident),+ $(,)? }, cases: $cases:tt) => {
        $( conformance!(@transport $module, $kind, $cases); )+
    };
    (@transport $module:ident, $kind:ident, [$($case:ident),+ $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Kind::$kind);
                }
            )+
        }
    };
}

conformance! {
    transports: {
        local => Local,
        grpc => Grpc,
        // QUIC, once its client implements veddb_client::Transport: `quic => Quic,`.
    },
    cases: [
        ping_info_and_snapshot,
        get_set_delete,
        set_conditions_and_ttl,
        exists_reports_presence,
        cas_on_versions,
        incr_counts_and_refuses_non_integers,
        mget_mset_across_cores,
        scan_pages_to_completion,
        limits_are_refused_with_the_same_codes,
        pipelined_answers_arrive_in_order,
        pubsub_delivers_in_order_and_fans_out,
        slow_subscriber_drops_oldest_and_counts,
        oversize_message_is_delivered_or_counted,
        dropped_subscriptions_are_removed,
        a_stopped_server_fails_calls_and_subscriptions,
        values_of_every_size_up_to_the_limit,
        cli_commands_on_every_transport,
    ]
}

// ---------------------------------------------------------------------------------------------
// The server.

/// A `veddb-server` with both frontends, this test's own; killed (and its instance files
/// removed) when dropped.
struct Server {
    name: String,
    address: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server with the suite's limits plus `extra` flags, and waits until both
    /// transports answer a PING.
    fn start(extra: &[&str]) -> Server {
        Server::start_with(VALUE_BYTES_MAX, 32, extra)
    }

    /// [`start`](Self::start) with another `--value-bytes-max` and `--memory-mb`.
    fn start_with(value_bytes_max: usize, memory_mb: usize, extra: &[&str]) -> Server {
        let name = unique_name("conf");
        let mut child = Command::new(SERVER)
            .args(["--create", "--name", &name, "--port", "0", "--spin-us", "0"])
            .args(["--cores", &CORES.to_string()])
            .args(["--memory-mb", &memory_mb.to_string()])
            .args(["--key-bytes-max", &KEY_BYTES_MAX.to_string()])
            .args(["--value-bytes-max", &value_bytes_max.to_string()])
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
            address: String::new(),
            child: Some(child),
            log,
            reader: Some(reader),
        };
        server.wait_ready();
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "the server exited during start with {status}:\n{}",
                    self.log()
                );
            }
            let log = self.log();
            if self.address.is_empty() {
                if let Some(address) = listening_address(&log) {
                    self.address = address;
                }
            }
            if !self.address.is_empty() && log.contains("local clients: shared memory ready") {
                let ready = Kind::ALL.into_iter().all(|kind| {
                    self.try_connect(kind)
                        .is_ok_and(|client| client.ping().is_ok())
                });
                if ready {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server was not ready within {READY_TIMEOUT:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client through `kind`, built on that transport's implementation of the trait.
    fn try_connect(&self, kind: Kind) -> Result<Client, ClientError> {
        Ok(match kind {
            Kind::Local => Client::from_transport(LocalConnection::connect(&self.name)?),
            Kind::Grpc => Client::from_transport(GrpcTransport::connect(&self.address)?),
        })
    }

    fn connect(&self, kind: Kind) -> Client {
        self.try_connect(kind)
            .unwrap_or_else(|error| panic!("connect through {kind:?}: {error}"))
    }
}

impl Server {
    /// SIGTERM; the server must exit cleanly (within [`EVENTUALLY`]).
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + EVENTUALLY;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not stop within {EVENTUALLY:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            status.success(),
            "SIGTERM stops the server cleanly: {status}\n{}",
            self.log()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!("server {} log:\n{}", self.name, self.log());
        }
        // A killed server leaves its instance file and socket behind.
        for path in [
            instance::path(&self.name),
            instance::socket_path(&self.name),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn opts(ttl_ms: Option<u64>, condition: SetCondition, keep_ttl: bool) -> SetOptions {
    SetOptions {
        ttl_ms,
        condition,
        keep_ttl,
    }
}

/// The status code of a refused call (panics on success or on another kind of failure).
#[track_caller]
fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    match result {
        Err(ClientError::Status(status)) => status.code,
        other => panic!("expected a status, got {other:?}"),
    }
}

#[track_caller]
fn remaining(ttl: Ttl) -> u64 {
    match ttl {
        Ttl::Remaining(ms) => ms,
        other => panic!("expected a remaining TTL, got {other:?}"),
    }
}

/// Waits until `done` holds (polling; never a timing assertion).
#[track_caller]
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {EVENTUALLY:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `count` binary keys `<prefix><i as 4 bytes LE>` that span both cores.
fn keys_across_cores(prefix: &[u8], count: u32) -> Vec<Bytes> {
    let keys: Vec<Bytes> = (0..count)
        .map(|i| {
            let mut key = prefix.to_vec();
            key.extend_from_slice(&i.to_le_bytes());
            Bytes::from(key)
        })
        .collect();
    let shards: HashSet<u32> = keys
        .iter()
        .map(|key| veddb_wire::shard_for_key(key, CORES as u32))
        .collect();
    assert_eq!(shards.len(), CORES, "the keys span every core");
    keys
}

/// The next message, which must come.
#[track_caller]
fn next_message(subscription: &mut veddb_client::BlockingSubscription<'_>) -> (Bytes, u64) {
    match subscription.receive(MESSAGE_TIMEOUT) {
        Ok(Received::Message { message, dropped }) => (message, dropped),
        other => panic!("expected a message within {MESSAGE_TIMEOUT:?}, got {other:?}"),
    }
}

/// A numbered pub/sub message of `length` bytes (at least 4): the number, then filler.
fn numbered(i: u32, length: usize) -> Bytes {
    let mut message = i.to_le_bytes().to_vec();
    message.resize(length.max(4), (i % 251) as u8);
    Bytes::from(message)
}

fn number_of(message: &[u8]) -> u32 {
    u32::from_le_bytes(message[..4].try_into().expect("a numbered message"))
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// PING, INFO's shape and counters, SNAPSHOT without persistence.
fn ping_info_and_snapshot(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    client.ping().unwrap();
    let info = client.info().unwrap();
    assert_eq!(info.shards.len(), CORES);
    for (index, shard) in info.shards.iter().enumerate() {
        assert_eq!(shard.shard as usize, index, "{info:?}");
        assert_eq!(shard.keys, 0, "a fresh server: {info:?}");
    }
    assert_eq!(info.total().memory_bytes_limit, 32 << 20, "{info:?}");
    for key in keys_across_cores(b"info:", 50) {
        client
            .set(key, "v", SetOptions::default())
            .unwrap()
            .unwrap();
    }
    let info = client.info().unwrap();
    assert_eq!(info.total().keys, 50, "{info:?}");
    assert!(info.shards.iter().all(|shard| shard.keys > 0), "{info:?}");
    assert!(info.total().memory_bytes_used > 0, "{info:?}");
    // SNAPSHOT needs --data-dir: FAILED_PRECONDITION, with a message that says so.
    match client.snapshot() {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::FailedPrecondition, "{status}");
            assert!(status.message.contains("--data-dir"), "{status}");
        }
        other => panic!("SNAPSHOT without --data-dir: {other:?}"),
    }
    client.ping().unwrap();
}

/// GET, SET, DEL with binary keys and values; versions; a write visible through every
/// transport with the same version.
fn get_set_delete(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    let key = Bytes::from_static(b"bin\x00\xff\x01key");
    let value: Bytes = (0..=255u8).chain((0..=255u8).rev()).collect();
    assert_eq!(client.get(key.clone()).unwrap(), None);
    let first = client
        .set(key.clone(), value.clone(), SetOptions::default())
        .unwrap()
        .expect("stored");
    assert_eq!(
        client.get(key.clone()).unwrap(),
        Some((value.clone(), first))
    );
    let second = client
        .set(key.clone(), "second", SetOptions::default())
        .unwrap()
        .expect("stored");
    assert!(second > first, "versions grow: {first} then {second}");
    for other in Kind::ALL {
        assert_eq!(
            server.connect(other).get(key.clone()).unwrap(),
            Some((b("second"), second)),
            "read through {other:?}"
        );
    }
    // An empty value is a value.
    client
        .set("empty", Bytes::new(), SetOptions::default())
        .unwrap();
    let (empty, _) = client.get("empty").unwrap().expect("an empty value exists");
    assert!(empty.is_empty());
    assert!(client.delete(key.clone()).unwrap(), "it existed");
    assert!(!client.delete(key.clone()).unwrap(), "already gone");
    assert_eq!(client.get(key.clone()).unwrap(), None);
    // A re-created key never reuses a version (no ABA for CAS).
    let third = client
        .set(key.clone(), value, SetOptions::default())
        .unwrap()
        .unwrap();
    assert!(third > second, "{second} then {third}");
}

/// SET's NX and XX conditions, TTLs (SET with a TTL, KEEPTTL, EXPIRE, PERSIST, TTL) and expiry.
fn set_conditions_and_ttl(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    let nx = opts(None, SetCondition::IfAbsent, false);
    let xx = opts(None, SetCondition::IfPresent, false);
    assert!(client.set("nx", "one", nx).unwrap().is_some(), "NX, absent");
    assert_eq!(client.set("nx", "two", nx).unwrap(), None, "NX, present");
    assert_eq!(client.get("nx").unwrap().unwrap().0, b("one"));
    assert_eq!(client.set("xx", "one", xx).unwrap(), None, "XX, absent");
    assert_eq!(client.get("xx").unwrap(), None, "XX wrote nothing");
    assert!(
        client.set("nx", "three", xx).unwrap().is_some(),
        "XX, present"
    );
    assert_eq!(client.get("nx").unwrap().unwrap().0, b("three"));

    client
        .set("ttl", "x", opts(Some(100_000), SetCondition::Always, false))
        .unwrap()
        .unwrap();
    let ms = remaining(client.ttl("ttl").unwrap());
    assert!(ms > 0 && ms <= 100_000, "{ms}");
    client
        .set("ttl", "kept", opts(None, SetCondition::Always, true))
        .unwrap()
        .unwrap();
    assert!(remaining(client.ttl("ttl").unwrap()) <= 100_000, "KEEPTTL");
    client.set("ttl", "plain", SetOptions::default()).unwrap();
    assert_eq!(client.ttl("ttl").unwrap(), Ttl::Persistent, "SET clears it");
    assert_eq!(client.ttl("missing").unwrap(), Ttl::Missing);

    assert!(client.expire("ttl", 50_000).unwrap());
    assert!(remaining(client.ttl("ttl").unwrap()) <= 50_000);
    assert!(client.persist("ttl").unwrap(), "an expiry was removed");
    assert_eq!(client.ttl("ttl").unwrap(), Ttl::Persistent);
    assert!(!client.persist("ttl").unwrap(), "no expiry to remove");
    assert!(!client.expire("missing", 1000).unwrap());
    assert!(
        client.expire("ttl", 0).unwrap(),
        "EXPIRE 0 on a present key"
    );
    assert_eq!(client.get("ttl").unwrap(), None, "EXPIRE 0 expires at once");

    client
        .set(
            "short",
            "soon gone",
            opts(Some(30), SetCondition::Always, false),
        )
        .unwrap()
        .unwrap();
    eventually("a 30 ms TTL expires", || {
        client.get("short").unwrap().is_none()
    });
    assert_eq!(client.ttl("short").unwrap(), Ttl::Missing);

    // TTLs out of range.
    let too_long = opts(Some(limits::TTL_MS_MAX + 1), SetCondition::Always, false);
    assert_eq!(
        code(client.set("k", "v", too_long)),
        Code::InvalidArgument,
        "a TTL over 100 years"
    );
    assert_eq!(
        code(client.expire("nx", limits::TTL_MS_MAX + 1)),
        Code::InvalidArgument
    );
    // A TTL of 0 ms on SET or CAS is refused with the engine's own status, code and message,
    // and writes nothing (EXPIRE 0, above, expires the key instead). Over gRPC, where ttl_ms = 0
    // means "no TTL", the client refuses it before sending.
    let zero_ttl = |result: Result<_, ClientError>| match result {
        Err(ClientError::Status(status)) => {
            assert_eq!(status, veddb_wire::Error::ttl_zero().status())
        }
        other => panic!("a TTL of 0 ms: {other:?}"),
    };
    let zero = opts(Some(0), SetCondition::Always, false);
    zero_ttl(client.set("zero", "v", zero).map(|_| ()));
    assert_eq!(
        client.get("zero").unwrap(),
        None,
        "the refused SET wrote nothing"
    );
    let version = client
        .set("zero", "v", SetOptions::default())
        .unwrap()
        .unwrap();
    zero_ttl(client.cas("zero", version, "w", Some(0)).map(|_| ()));
    assert_eq!(
        client.get("zero").unwrap(),
        Some((b("v"), version)),
        "the refused CAS changed nothing"
    );
    assert_eq!(client.ttl("zero").unwrap(), Ttl::Persistent);
    // Refused alone in a pipeline: the requests around it run.
    let answers = client
        .execute_many(vec![
            Request::Set {
                key: b("zero-before"),
                value: b("v"),
                options: SetOptions::default(),
            },
            Request::Set {
                key: b("zero-pipelined"),
                value: b("v"),
                options: zero,
            },
            Request::Exists {
                key: b("zero-before"),
            },
        ])
        .unwrap();
    assert_eq!(answers.len(), 3);
    let mut answers = answers.into_iter();
    assert!(matches!(
        answers.next().unwrap(),
        Ok(Response::Stored { .. })
    ));
    zero_ttl(answers.next().unwrap().map(|_| ()));
    assert_eq!(answers.next().unwrap().unwrap(), Response::Bool(true));
    assert_eq!(client.get("zero-pipelined").unwrap(), None);
}

/// EXISTS: present, absent, expired, deleted; pipelined; an empty key is refused. Over gRPC
/// also through the unary `Exists` method (the client's calls go through `Batch`), and through
/// `veddb-cli exists` on every transport.
fn exists_reports_presence(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    client.set("here", "v", SetOptions::default()).unwrap();
    assert!(client.exists("here").unwrap());
    assert!(!client.exists("absent").unwrap());
    assert_eq!(
        client.execute(Request::Exists { key: b("here") }).unwrap(),
        Response::Bool(true)
    );
    client
        .set("brief", "v", opts(Some(30), SetCondition::Always, false))
        .unwrap()
        .unwrap();
    eventually("a key with a 30 ms TTL stops existing", || {
        !client.exists("brief").unwrap()
    });
    assert!(client.delete("here").unwrap());
    assert!(!client.exists("here").unwrap());
    assert_eq!(
        code(client.exists("")),
        Code::InvalidArgument,
        "an empty key"
    );
    // Across cores, pipelined, each answer in its place.
    let keys = keys_across_cores(b"exists:", 8);
    for key in keys.iter().step_by(2) {
        client.set(key.clone(), "v", SetOptions::default()).unwrap();
    }
    let answers = client
        .execute_many(
            keys.iter()
                .map(|key| Request::Exists { key: key.clone() })
                .collect(),
        )
        .unwrap();
    let found: Vec<Response> = answers.into_iter().map(Result::unwrap).collect();
    let expected: Vec<Response> = (0..keys.len())
        .map(|i| Response::Bool(i % 2 == 0))
        .collect();
    assert_eq!(found, expected);
    client.ping().unwrap();

    if kind == Kind::Grpc {
        use prost::Message;
        use veddb_wire::proto::v1::{ExistsRequest, ExistsResponse};
        let transport = GrpcTransport::connect(&server.address).expect("connect");
        let unary = |key: &str| {
            let request = ExistsRequest { key: b(key) }.encode_to_vec();
            transport.block_on(
                transport
                    .connection()
                    .unary_raw("/veddb.v1.VedDb/Exists", request),
            )
        };
        let exists = |key: &str| {
            ExistsResponse::decode(unary(key).expect("Exists answers"))
                .expect("an ExistsResponse")
                .exists
        };
        client.set("unary", "v", SetOptions::default()).unwrap();
        assert!(exists("unary"));
        assert!(!exists("absent"));
        assert!(client.delete("unary").unwrap());
        assert!(!exists("unary"), "deleted");
        assert_eq!(code(unary("")), Code::InvalidArgument, "an empty key");
    }

    // veddb-cli: how many of the keys exist, exit status 1 when none does.
    client.set("cli", "v", SetOptions::default()).unwrap();
    let (status, stdout, stderr) = cli(&server, kind, &["exists", "cli", "absent", "cli"]);
    assert_eq!((status, stdout.as_slice()), (0, &b"2\n"[..]), "{stderr}");
    let (status, stdout, stderr) = cli(&server, kind, &["exists", "absent"]);
    assert_eq!((status, stdout.as_slice()), (1, &b"0\n"[..]), "{stderr}");
}

/// CAS on versions: 0 means only if absent, a match writes, a mismatch reports the current
/// version, an absent key is NOT_FOUND; the TTL is kept unless given.
fn cas_on_versions(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    let created = match client.cas("cas", 0, "one", None).unwrap() {
        CasOutcome::Stored { version } => version,
        other => panic!("CAS 0 on an absent key stores: {other:?}"),
    };
    let updated = match client.cas("cas", created, "two", None).unwrap() {
        CasOutcome::Stored { version } => version,
        other => panic!("CAS on the current version stores: {other:?}"),
    };
    assert!(updated > created);
    assert_eq!(
        client.cas("cas", created, "three", None).unwrap(),
        CasOutcome::VersionMismatch { current: updated }
    );
    assert_eq!(
        client.cas("cas", 0, "four", None).unwrap(),
        CasOutcome::VersionMismatch { current: updated },
        "CAS 0 means only if absent"
    );
    assert_eq!(
        client.cas("cas-absent", 7, "five", None).unwrap(),
        CasOutcome::NotFound
    );
    assert_eq!(client.get("cas-absent").unwrap(), None);
    assert_eq!(client.get("cas").unwrap(), Some((b("two"), updated)));
    // The version SET reports is the one CAS checks.
    let set = client
        .set("cas", "five", SetOptions::default())
        .unwrap()
        .unwrap();
    let with_ttl = match client.cas("cas", set, "six", Some(100_000)).unwrap() {
        CasOutcome::Stored { version } => version,
        other => panic!("{other:?}"),
    };
    assert!(remaining(client.ttl("cas").unwrap()) <= 100_000);
    assert!(matches!(
        client.cas("cas", with_ttl, "seven", None).unwrap(),
        CasOutcome::Stored { .. }
    ));
    assert!(
        remaining(client.ttl("cas").unwrap()) <= 100_000,
        "CAS without a TTL keeps the key's"
    );
    assert_eq!(client.get("cas").unwrap().unwrap().0, b("seven"));
}

/// INCR and DECR on decimal text; refused on other values and on overflow, which change
/// nothing.
fn incr_counts_and_refuses_non_integers(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    assert_eq!(client.incr("n", 5).unwrap(), 5, "a missing key counts as 0");
    assert_eq!(client.incr("n", -7).unwrap(), -2);
    assert_eq!(client.incr("n", 2).unwrap(), 0);
    assert_eq!(client.get("n").unwrap().unwrap().0, b("0"));
    client.set("text", "41", SetOptions::default()).unwrap();
    assert_eq!(client.incr("text", 1).unwrap(), 42);

    let before = client
        .set("word", "not a number", SetOptions::default())
        .unwrap()
        .unwrap();
    match client.incr("word", 1) {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::InvalidArgument, "{status}");
            assert!(status.message.contains("integer"), "{status}");
        }
        other => panic!("INCR on a non-integer: {other:?}"),
    }
    assert_eq!(
        client.get("word").unwrap(),
        Some((b("not a number"), before)),
        "unchanged"
    );
    client
        .set("max", i64::MAX.to_string(), SetOptions::default())
        .unwrap();
    assert_eq!(
        code(client.incr("max", 1)),
        Code::InvalidArgument,
        "overflow"
    );
    assert_eq!(
        client.get("max").unwrap().unwrap().0,
        b(&i64::MAX.to_string())
    );
    assert_eq!(client.incr("max", -1).unwrap(), i64::MAX - 1);
}

/// MSET and MGET over keys of both cores: values in request order, missing keys as `None`.
fn mget_mset_across_cores(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    let keys = keys_across_cores(b"multi\x00", 200);
    let pairs: Vec<(Bytes, Bytes)> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| (key.clone(), Bytes::from(vec![i as u8; i % 97])))
        .collect();
    client.mset(pairs.clone()).unwrap();
    let mut asked = keys.clone();
    asked.insert(100, b("multi-missing"));
    let values = client.mget(asked).unwrap();
    assert_eq!(values.len(), 201);
    assert_eq!(values[100], None, "a missing key in the middle");
    let found: Vec<_> = values[..100].iter().chain(&values[101..]).collect();
    for ((_, expected), got) in pairs.iter().zip(found) {
        let (value, version) = got.as_ref().expect("present");
        assert_eq!(value, expected);
        assert!(*version > 0);
    }
    let info = client.info().unwrap();
    assert_eq!(info.total().keys, 200, "{info:?}");
    assert!(info.shards.iter().all(|shard| shard.keys > 0), "{info:?}");
    // Overwrite every other key; each key's version moves on.
    let overwrite: Vec<(Bytes, Bytes)> = keys
        .iter()
        .step_by(2)
        .map(|k| (k.clone(), b("new")))
        .collect();
    client.mset(overwrite).unwrap();
    let again = client.mget(keys.clone()).unwrap();
    for (i, (got, before)) in again
        .iter()
        .zip(values.iter().filter(|v| v.is_some()))
        .enumerate()
    {
        let (value, version) = got.as_ref().unwrap();
        let (_, old_version) = before.as_ref().unwrap();
        if i % 2 == 0 {
            assert_eq!(value, &b("new"));
            assert!(version > old_version);
        } else {
            assert_eq!(value, &pairs[i].1);
            assert_eq!(version, old_version);
        }
    }
    assert_eq!(
        client.mget(Vec::new()).unwrap(),
        Vec::new(),
        "MGET of nothing"
    );
}

/// SCAN with a prefix, page by page, to completion: every key once, in byte order.
fn scan_pages_to_completion(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    let keys = keys_across_cores(b"scan\x00", 300);
    client
        .mset(keys.iter().map(|key| (key.clone(), b("v"))).collect())
        .unwrap();
    client
        .mset(
            keys_across_cores(b"other", 50)
                .into_iter()
                .map(|key| (key, b("v")))
                .collect(),
        )
        .unwrap();
    let mut scanned: Vec<Bytes> = Vec::new();
    let mut cursor = Bytes::new();
    let mut pages = 0;
    loop {
        let (page, next) = client.scan(cursor.clone(), &b"scan\x00"[..], 17).unwrap();
        assert!(page.len() <= 17, "a page holds at most count keys");
        scanned.extend(page);
        pages += 1;
        if next.is_empty() {
            break;
        }
        cursor = next;
        assert!(pages < 1000, "the scan never completes");
    }
    assert!(pages >= 300 / 17, "{pages} pages");
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(
        scanned, expected,
        "every key once, in byte order, none of another prefix"
    );
    let (page, _) = client.scan(Bytes::new(), Bytes::new(), 0).unwrap();
    assert!(!page.is_empty() && page.len() <= limits::SCAN_COUNT_DEFAULT as usize);
    assert_eq!(
        client.scan(Bytes::new(), "nothing", 10).unwrap(),
        (Vec::new(), Bytes::new()),
        "no key with this prefix: an empty, complete scan"
    );
    assert_eq!(
        code(client.scan(Bytes::new(), Bytes::new(), limits::SCAN_COUNT_MAX + 1)),
        Code::InvalidArgument
    );
}

/// Every limit is refused with the same status code whatever the transport (messages may
/// differ), and the connection goes on working.
fn limits_are_refused_with_the_same_codes(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    let long_key = Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]);
    let longest_key = Bytes::from(vec![b'k'; KEY_BYTES_MAX]);
    client
        .set(longest_key.clone(), "v", SetOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(client.get(longest_key).unwrap().unwrap().0, b("v"));
    let set = |key: Bytes, value: Bytes| client.set(key, value, SetOptions::default());
    assert_eq!(
        code(set(long_key.clone(), b("v"))),
        Code::ResourceExhausted,
        "SET, long key"
    );
    assert_eq!(
        code(client.get(long_key.clone())),
        Code::ResourceExhausted,
        "GET, long key"
    );
    assert_eq!(
        code(client.delete(long_key.clone())),
        Code::ResourceExhausted,
        "DEL"
    );
    assert_eq!(
        code(client.incr(long_key.clone(), 1)),
        Code::ResourceExhausted,
        "INCR"
    );
    assert_eq!(
        code(client.cas(long_key.clone(), 0, "v", None)),
        Code::ResourceExhausted,
        "CAS"
    );
    assert_eq!(
        code(client.publish(long_key.clone(), "m")),
        Code::ResourceExhausted,
        "topic"
    );
    assert_eq!(
        code(client.subscribe(long_key.clone())),
        Code::ResourceExhausted,
        "subscribe"
    );
    assert_eq!(
        code(set(Bytes::new(), b("v"))),
        Code::InvalidArgument,
        "empty key"
    );
    assert_eq!(
        code(client.get(Bytes::new())),
        Code::InvalidArgument,
        "GET, empty key"
    );

    let largest = Bytes::from(vec![7u8; VALUE_BYTES_MAX]);
    let too_large = Bytes::from(vec![7u8; VALUE_BYTES_MAX + 1]);
    set(b("large"), largest.clone()).unwrap().unwrap();
    assert_eq!(client.get("large").unwrap().unwrap().0, largest);
    assert_eq!(
        code(set(b("large"), too_large.clone())),
        Code::ResourceExhausted,
        "value"
    );
    assert_eq!(
        code(client.cas("large", 0, too_large.clone(), None)),
        Code::ResourceExhausted
    );
    assert_eq!(
        code(client.publish("topic", too_large)),
        Code::ResourceExhausted,
        "message"
    );
    assert_eq!(
        client.get("large").unwrap().unwrap().0,
        largest,
        "unchanged"
    );
    // A value larger than a ring's frame and than gRPC's message limit here (4 MiB, the least
    // --grpc-message-bytes-max follows --value-bytes-max to): refused for its size as the value
    // one byte over the limit is (uploaded through shared memory, refused at its first chunk),
    // and the connection stays usable.
    let huge = Bytes::from(vec![1u8; 5 << 20]);
    assert_eq!(
        code(set(b("huge"), huge)),
        Code::ResourceExhausted,
        "a 5 MiB request"
    );
    client.ping().unwrap();

    // Batches: exactly BATCH_KEYS_MAX keys pass, one more is refused (3-byte keys, so that the
    // request fits every transport's frames and the key limit is what is hit).
    let key = |i: usize| Bytes::copy_from_slice(&(i as u32).to_be_bytes()[1..]);
    let most: Vec<Bytes> = (0..limits::BATCH_KEYS_MAX).map(key).collect();
    let values = client.mget(most.clone()).unwrap();
    assert_eq!(values.len(), limits::BATCH_KEYS_MAX);
    assert!(values.iter().all(Option::is_none));
    let too_many: Vec<Bytes> = (0..=limits::BATCH_KEYS_MAX).map(key).collect();
    assert_eq!(
        code(client.mget(too_many.clone())),
        Code::InvalidArgument,
        "MGET"
    );
    let pairs = too_many
        .into_iter()
        .map(|key| (key, Bytes::new()))
        .collect();
    assert_eq!(code(client.mset(pairs)), Code::InvalidArgument, "MSET");
    assert_eq!(
        client.get(key(0)).unwrap(),
        None,
        "the refused MSET wrote nothing"
    );

    // In a pipeline, an error is that request's alone.
    client.set("text", "abc", SetOptions::default()).unwrap();
    let answers = client
        .execute_many(vec![
            Request::Set {
                key: b("p1"),
                value: b("1"),
                options: SetOptions::default(),
            },
            Request::Incr {
                key: b("text"),
                delta: 1,
            },
            Request::Get { key: b("p1") },
        ])
        .unwrap();
    assert!(
        matches!(answers[0], Ok(Response::Stored { .. })),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[1], Err(ClientError::Status(status)) if status.code == Code::InvalidArgument),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[2], Ok(Response::Value { value, .. }) if value == "1"),
        "{answers:?}"
    );
    client.ping().unwrap();
}

/// Pipelined requests over both cores: every answer to its request, in order.
fn pipelined_answers_arrive_in_order(kind: Kind) {
    let server = Server::start(&[]);
    let client = server.connect(kind);
    let requests: Vec<Request> = (0..200u32)
        .flat_map(|i| {
            let key = Bytes::from(format!("pipe-{i}"));
            [
                Request::Set {
                    key: key.clone(),
                    value: Bytes::from(i.to_le_bytes().to_vec()),
                    options: SetOptions::default(),
                },
                Request::Get { key },
                Request::Incr {
                    key: Bytes::from(format!("pipe-n-{}", i % 3)),
                    delta: 1,
                },
            ]
        })
        .collect();
    let answers = client.execute_many(requests).unwrap();
    assert_eq!(answers.len(), 600);
    let mut counts = [0i64; 3];
    for (i, chunk) in answers.chunks(3).enumerate() {
        let version = match &chunk[0] {
            Ok(Response::Stored { version }) => *version,
            other => panic!("pipelined SET {i}: {other:?}"),
        };
        match &chunk[1] {
            Ok(Response::Value {
                value,
                version: read,
            }) => {
                assert_eq!(&value[..], &(i as u32).to_le_bytes());
                assert_eq!(*read, version, "the GET after the SET sees it");
            }
            other => panic!("pipelined GET {i}: {other:?}"),
        }
        match &chunk[2] {
            Ok(Response::Integer { value, .. }) => {
                counts[i % 3] += 1;
                assert_eq!(*value, counts[i % 3], "INCRs of one key in order");
            }
            other => panic!("pipelined INCR {i}: {other:?}"),
        }
    }
}

/// Subscribe, publish, receive in order; fan-out to two subscribers; messages published through
/// any transport reach a subscriber of any other.
fn pubsub_delivers_in_order_and_fans_out(kind: Kind) {
    let server = Server::start(&[]);
    let first = server.connect(kind);
    let second = server.connect(kind);
    let publisher = server.connect(kind);
    let mut subscriptions = [
        first.subscribe("news\x00").unwrap(),
        second.subscribe("news\x00").unwrap(),
    ];
    for subscription in &mut subscriptions {
        assert_eq!(
            subscription.receive(Duration::ZERO).unwrap(),
            Received::Timeout
        );
        assert_eq!(subscription.receive(SILENCE).unwrap(), Received::Timeout);
    }
    for i in 0..100 {
        assert_eq!(
            publisher
                .publish("news\x00", numbered(i, 10 + i as usize))
                .unwrap(),
            2
        );
    }
    assert_eq!(publisher.publish("nobody listens", "x").unwrap(), 0);
    for subscription in &mut subscriptions {
        for i in 0..100 {
            assert_eq!(
                next_message(subscription),
                (numbered(i, 10 + i as usize), 0)
            );
        }
        assert_eq!(
            subscription.receive(SILENCE).unwrap(),
            Received::Timeout,
            "nothing more"
        );
    }
    // Through every transport to this one's subscribers.
    for (i, other) in Kind::ALL.into_iter().enumerate() {
        let message = format!("through {other:?}");
        assert_eq!(
            server
                .connect(other)
                .publish("news\x00", message.clone())
                .unwrap(),
            2
        );
        for subscription in &mut subscriptions {
            assert_eq!(next_message(subscription), (b(&message), 0), "message {i}");
        }
    }
    let info = publisher.info().unwrap().total();
    assert_eq!(info.subscribers, 2, "{info:?}");
    assert_eq!(info.topics, 1, "{info:?}");
    assert_eq!(info.messages_dropped, 0, "{info:?}");
    assert_eq!(
        info.messages_delivered,
        2 * (100 + Kind::ALL.len() as u64),
        "{info:?}"
    );
}

/// The slow-subscriber policy: a subscriber that does not read loses its oldest messages,
/// never the newest, and learns exactly how many (`dropped` before the next message it gets);
/// the publisher is never refused.
fn slow_subscriber_drops_oldest_and_counts(kind: Kind) {
    const QUEUE: u32 = limits::SUBSCRIBER_QUEUE_MESSAGES_DEFAULT as u32;
    // Three queues' worth of 1 KiB messages: more than a queue plus whatever a transport holds
    // in transit (gRPC: its 1 MiB stream window and a FETCH's worth on the server).
    const PUBLISHED: u32 = 3 * QUEUE;
    const LENGTH: usize = 1024;
    let server = Server::start(&[]);
    let subscriber = server.connect(kind);
    let publisher = server.connect(kind);
    let mut subscription = subscriber.subscribe("slow").unwrap();
    let requests: Vec<Request> = (0..PUBLISHED)
        .map(|i| Request::Publish {
            topic: b("slow"),
            message: numbered(i, LENGTH),
        })
        .collect();
    for chunk in requests.chunks(512) {
        for answer in publisher.execute_many(chunk.to_vec()).unwrap() {
            assert_eq!(answer.unwrap(), Response::Published { receivers: 1 });
        }
    }
    // Read everything: each message's number is the previous one's plus one plus what was
    // dropped in between, up to the last one published.
    let mut received = Vec::new();
    let mut dropped_total = 0;
    let mut last: Option<u32> = None;
    while last != Some(PUBLISHED - 1) {
        let (message, dropped) = next_message(&mut subscription);
        assert_eq!(message.len(), LENGTH);
        let number = number_of(&message);
        let expected = last.map_or(0, |last| last + 1) as u64 + dropped;
        assert_eq!(number as u64, expected, "after {last:?}, {dropped} dropped");
        assert_eq!(message, numbered(number, LENGTH), "message {number} intact");
        dropped_total += dropped;
        received.push(number);
        last = Some(number);
    }
    eprintln!(
        "{kind:?}: {PUBLISHED} published, {} received, {dropped_total} dropped",
        received.len()
    );
    assert_eq!(subscription.receive(SILENCE).unwrap(), Received::Timeout);
    assert_eq!(received.len() as u64 + dropped_total, PUBLISHED as u64);
    assert!(
        dropped_total > 0,
        "a subscriber that did not read lost messages"
    );
    // Drop oldest: the newest QUEUE messages all arrived.
    let newest: Vec<u32> = (PUBLISHED - QUEUE..PUBLISHED).collect();
    assert_eq!(received[received.len() - QUEUE as usize..], newest[..]);
    let info = publisher.info().unwrap().total();
    assert_eq!(
        info.messages_dropped, dropped_total,
        "INFO counts what subscribers were told"
    );
    assert_eq!(info.messages_published, PUBLISHED as u64, "{info:?}");
}

/// A message larger than what the subscriber's transport can carry (here: over the gRPC
/// message limit, published through shared memory) must arrive or be counted as dropped.
fn oversize_message_is_delivered_or_counted(kind: Kind) {
    const GRPC_MESSAGE_BYTES_MAX: usize = 16 * 1024;
    let server = Server::start(&[
        "--grpc-message-bytes-max",
        &GRPC_MESSAGE_BYTES_MAX.to_string(),
    ]);
    let subscriber = server.connect(kind);
    let mut subscription = subscriber.subscribe("large").unwrap();
    let publisher = server.connect(Kind::Local);
    let large = Bytes::from(vec![9u8; 2 * GRPC_MESSAGE_BYTES_MAX]);
    assert_eq!(publisher.publish("large", large.clone()).unwrap(), 1);
    assert_eq!(publisher.publish("large", "after").unwrap(), 1);
    match kind {
        // Shared memory has no per-message limit below --value-bytes-max: it is delivered.
        Kind::Local => {
            assert_eq!(next_message(&mut subscription), (large.clone(), 0));
            assert_eq!(next_message(&mut subscription), (b("after"), 0));
        }
        // --grpc-message-bytes-max is a limit of gRPC only: a Subscribe stream cannot carry the
        // message, so it is dropped for this subscriber and counted in the next message's
        // `dropped`, as the queue's own drops are.
        Kind::Grpc => assert_eq!(next_message(&mut subscription), (b("after"), 1)),
    }
    assert_eq!(subscription.receive(SILENCE).unwrap(), Received::Timeout);
    // A skipped message with none after it: its count is not sent alone (a message with only a
    // count would read as a published empty message) but waits for the next message, whichever
    // FETCH brings it, as over shared memory.
    assert_eq!(publisher.publish("large", large.clone()).unwrap(), 1);
    match kind {
        Kind::Local => assert_eq!(next_message(&mut subscription), (large.clone(), 0)),
        Kind::Grpc => assert_eq!(subscription.receive(SILENCE).unwrap(), Received::Timeout),
    }
    assert_eq!(publisher.publish("large", large.clone()).unwrap(), 1);
    assert_eq!(publisher.publish("large", "").unwrap(), 1);
    match kind {
        Kind::Local => {
            assert_eq!(next_message(&mut subscription), (large, 0));
            assert_eq!(next_message(&mut subscription), (Bytes::new(), 0));
        }
        Kind::Grpc => assert_eq!(next_message(&mut subscription), (Bytes::new(), 2)),
    }
    assert_eq!(subscription.receive(SILENCE).unwrap(), Received::Timeout);
    let info = publisher.info().unwrap().total();
    // INFO counts what the topic's queues dropped (the slow-subscriber policy), not what a
    // frontend could not send.
    assert_eq!(
        info.messages_dropped, 0,
        "the queue dropped nothing: {info:?}"
    );
}

/// A subscription dropped by its client, or left behind by a client that closed its
/// connection, is removed on the server: INFO's subscriber and topic counts go down and
/// publishes stop counting it.
fn dropped_subscriptions_are_removed(kind: Kind) {
    let server = Server::start(&[]);
    let observer = server.connect(kind);
    let subscribers = |observer: &Client| observer.info().unwrap().total().subscribers;
    let client = server.connect(kind);
    let kept = client.subscribe("cleanup").unwrap();
    let dropped = client.subscribe("cleanup").unwrap();
    let other_topic = client.subscribe("cleanup-2").unwrap();
    assert_eq!(subscribers(&observer), 3);
    assert_eq!(observer.info().unwrap().total().topics, 2);
    assert_eq!(observer.publish("cleanup", "m").unwrap(), 2);

    drop(dropped);
    eventually("a dropped subscription is removed", || {
        subscribers(&observer) == 2
    });
    assert_eq!(observer.publish("cleanup", "m").unwrap(), 1);
    drop(other_topic);
    eventually("the last subscriber of a topic removes the topic", || {
        observer.info().unwrap().total().topics == 1
    });

    // The client goes away without unsubscribing: closing its connection must be enough.
    std::mem::forget(kept);
    drop(client);
    eventually("a closed connection's subscription is removed", || {
        subscribers(&observer) == 0
    });
    assert_eq!(observer.publish("cleanup", "m").unwrap(), 0);
    assert_eq!(observer.info().unwrap().total().topics, 0);
}

/// A server that stops while clients are connected, one of them subscribed, exits cleanly; the
/// subscription and later calls fail (an error, not a hang and not a silent timeout).
fn a_stopped_server_fails_calls_and_subscriptions(kind: Kind) {
    let mut server = Server::start(&[]);
    let client = server.connect(kind);
    let mut subscription = client.subscribe("stop").unwrap();
    assert_eq!(client.publish("stop", "before").unwrap(), 1);
    assert_eq!(next_message(&mut subscription), (b("before"), 0));
    server.stop();
    match subscription.receive(MESSAGE_TIMEOUT) {
        Err(_) | Ok(Received::Ended) => {}
        other => panic!("a subscription to a stopped server: {other:?}"),
    }
    assert!(client.ping().is_err(), "a call to a stopped server fails");
}

/// `veddb-cli` (built beside `veddb-server`; built here when a run of this package alone did
/// not build it), with the transport of `kind`: exit code, stdout, stderr.
fn cli(server: &Server, kind: Kind, words: &[&str]) -> (i32, Vec<u8>, String) {
    let output = cli_command(server, kind)
        .args(words)
        .stdin(Stdio::null())
        .output()
        .expect("veddb-cli runs");
    (
        output.status.code().unwrap_or(-1),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `veddb-cli` command with the transport of `kind`, its arguments still to add.
fn cli_command(server: &Server, kind: Kind) -> Command {
    let binary = std::path::Path::new(SERVER).with_file_name("veddb-cli");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-p", "veddb-client", "--bin", "veddb-cli"])
            .status()
            .expect("cargo runs");
        assert!(built.success(), "cannot build veddb-cli");
    }
    let target: [&str; 2] = match kind {
        Kind::Local => ["--local", &server.name],
        Kind::Grpc => ["--grpc", &server.address],
    };
    let mut command = Command::new(binary);
    command.args(target);
    command
}

/// `veddb-cli` on every transport: every byte in through escapes and back with `--raw`; an
/// error names one status (the shared-memory path once printed
/// "RESOURCE_EXHAUSTED: INVALID_ARGUMENT: ..."); `subscribe --count`, and Ctrl-C (SIGINT) out
/// of `subscribe` with exit status 130, unsubscribed.
fn cli_commands_on_every_transport(kind: Kind) {
    use std::io::{BufRead, BufReader, Read};
    let server = Server::start(&[]);
    let client = server.connect(kind);
    let all: Vec<u8> = (0..=255u8).collect();
    let escaped: String = all.iter().map(|byte| format!("\\x{byte:02x}")).collect();
    let (status, _, stderr) = cli(&server, kind, &["set", "all", &escaped]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(client.get("all").unwrap().unwrap().0, all);
    let (status, stdout, stderr) = cli(&server, kind, &["--raw", "get", "all"]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(stdout, [&all[..], b"\n"].concat());

    // One status name per error, on every transport.
    for (words, start) in [
        (
            vec!["get".to_string(), "k".repeat(KEY_BYTES_MAX + 1)],
            format!(
                "veddb-cli: RESOURCE_EXHAUSTED: key of {} bytes",
                KEY_BYTES_MAX + 1
            ),
        ),
        (
            vec!["get".to_string(), String::new()],
            "veddb-cli: INVALID_ARGUMENT: empty key".to_string(),
        ),
    ] {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (status, _, stderr) = cli(&server, kind, &words);
        assert_eq!(status, 3, "{stderr}");
        assert!(stderr.starts_with(&start), "{stderr}");
        let names = ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"];
        let count: usize = names.iter().map(|name| stderr.matches(name).count()).sum();
        assert_eq!(count, 1, "one status name: {stderr}");
    }

    // subscribe: N messages, or until Ctrl-C.
    let spawn = |words: &[&str]| {
        cli_command(&server, kind)
            .args(words)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("veddb-cli runs")
    };
    let subscribed = |child: &mut Child| {
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with("subscribed to \"news\""), "{line}");
        stderr
    };
    let wait = |child: &mut Child| {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().expect("exited, not killed");
            }
            assert!(Instant::now() < deadline, "veddb-cli did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut counted = spawn(&["--raw", "subscribe", "news", "--count", "2"]);
    let _stderr = subscribed(&mut counted);
    assert_eq!(client.publish("news", "one").unwrap(), 1);
    assert_eq!(client.publish("news", "two").unwrap(), 1);
    assert_eq!(wait(&mut counted), 0);
    let mut stdout = String::new();
    counted
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(stdout, "one\ntwo\n");

    let mut endless = spawn(&["subscribe", "news"]);
    let mut stderr = subscribed(&mut endless);
    assert_eq!(client.publish("news", "three").unwrap(), 1);
    let mut stdout = BufReader::new(endless.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "\"three\"\n");
    let status = Command::new("kill")
        .args(["-INT", &endless.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(wait(&mut endless), 130);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "unsubscribed from \"news\"\n");
    eventually("the subscription is gone", || {
        client.publish("news", "late").unwrap() == 0
    });
}

/// Every value size up to `--value-bytes-max` (5 MiB here) through the Rust client and through
/// `veddb-cli --file`: 0 and 1 byte, around a shared-memory frame (the SET that fills a 1 MiB
/// ring's frame exactly) and an HTTP/2 frame (64 KiB), 1 MiB, the limit itself; one byte over
/// the limit is RESOURCE_EXHAUSTED naming it, on every transport, and nothing changes.
fn values_of_every_size_up_to_the_limit(kind: Kind) {
    const MAX: usize = 5 << 20;
    let server = Server::start_with(MAX, 128, &[]);
    let client = server.connect(kind);
    let key = "sized-value";
    // The SET whose request payload is exactly a ring frame: 23 bytes around key and value.
    let ring_frame = veddb_wire::shm::layout::ring::max_frame_payload(1 << 20) as usize;
    let ring_edge = ring_frame - 23 - key.len();
    let h2_frame = 1 << 16;
    let mut sizes = vec![0, 1, 1 << 20, MAX - 1, MAX];
    for edge in [ring_edge, h2_frame] {
        sizes.extend([edge - 1, edge, edge + 1]);
    }
    let value = |size: usize| {
        Bytes::from(
            (0..size)
                .map(|i| (i.wrapping_mul(31) ^ (i >> 11) ^ size) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    for &size in &sizes {
        let written = value(size);
        client
            .set(key, written.clone(), SetOptions::default())
            .unwrap_or_else(|error| panic!("SET of {size} bytes: {error}"))
            .unwrap();
        let (read, _) = client.get(key).unwrap().expect("just set");
        assert!(read == written, "GET of {size} bytes");
        let read = client.mget(vec![b(key), b("missing")]).unwrap();
        assert!(
            read[0].as_ref().is_some_and(|(v, _)| *v == written),
            "MGET of {size} bytes"
        );
    }
    let kept = client.get(key).unwrap().unwrap().0;
    let over = client.set(key, value(MAX + 1), SetOptions::default());
    let error = over.unwrap_err();
    assert!(
        matches!(&error, ClientError::Status(status) if status.code == Code::ResourceExhausted),
        "{error}"
    );
    assert!(error.to_string().contains(&MAX.to_string()), "{error}");
    assert!(client.get(key).unwrap().unwrap().0 == kept, "unchanged");

    // The same sizes through veddb-cli: a file in, a file out, byte for byte.
    let dir = common::TempDir::new(&format!("cli-{kind:?}"));
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    let (input_arg, output_arg) = (input.to_str().unwrap(), output.to_str().unwrap());
    for &size in &[0, 1, ring_edge + 1, 1 << 20, MAX] {
        let written = value(size);
        std::fs::write(&input, &written).unwrap();
        let (status, _, stderr) = cli(&server, kind, &["set", "cli-key", "--file", input_arg]);
        assert_eq!(status, 0, "veddb-cli set --file of {size} bytes: {stderr}");
        let (status, _, stderr) = cli(&server, kind, &["get", "cli-key", "--file", output_arg]);
        assert_eq!(status, 0, "veddb-cli get --file of {size} bytes: {stderr}");
        assert!(
            std::fs::read(&output).unwrap() == written,
            "{size} bytes through the CLI"
        );
    }
    std::fs::write(&input, value(MAX + 1)).unwrap();
    let (status, _, stderr) = cli(&server, kind, &["set", "cli-key", "--file", input_arg]);
    assert_eq!(
        status, 3,
        "one byte over the limit is the server's refusal: {stderr}"
    );
    assert!(
        stderr.contains("RESOURCE_EXHAUSTED") && stderr.contains(&MAX.to_string()),
        "{stderr}"
    );
    client.ping().unwrap();
}
