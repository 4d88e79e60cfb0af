//! The view lease under pressure (issue 13, item 4), with the real `veddb-server` binary and
//! the client library's zero-copy views (`LocalConnection::get_view`):
//!
//! - a view taken while an older one is held stays intact for its own full lease, after the
//!   older one's lease has ended (the client used to keep only the oldest pin, which the server
//!   then ignored, so the newer view's block was reused within its lease);
//! - a view held past its lease may see its block reused, and then reports it
//!   (`ValueView::is_current` is false after the read); a read it calls current is never wrong;
//! - the lease is real time: a pin taken before the core idled for longer than the lease no
//!   longer protects anything once the core runs again (it used to be counted in epochs, which
//!   only advance while the core runs).
//!
//! Each test runs a well-behaved client alongside, whose values must stay intact, and checks
//! that the server is still up and answering at the end. Content is checked, never timing:
//! where a check depends on being within a lease, the test measures the time *after* the read
//! and only asserts when the read was well inside it (a slow machine just checks less).
//!
//! One core (every key on it), 100-byte values (128-byte blocks): the churn writes fresh keys
//! of that size, so a block freed by the server is handed out again within a few writes (the
//! arena's free lists are LIFO), and its bytes change. Linux only (the local frontend is).
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use veddb_client::local::{GetResult, LocalConnection, ValueView};
use veddb_wire::{Request, Response, SetOptions};

mod common;
use common::{remove_instance_files, unique_name};

const SERVER: &str = env!("CARGO_BIN_EXE_veddb-server");
/// Generous: debug builds on small, busy machines.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of every value the tests view and churn: a 128-byte block (16-byte header).
const VALUE_BYTES: usize = 100;
/// How long a test waits for something the server must do "eventually" (a failure bound, not a
/// measurement: it happens within a lease and a few milliseconds).
const EVENTUALLY: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers: the server, values, views.

/// A `veddb-server --create --name NAME --port 0 --cores 1` this test started, with the given
/// view lease; killed (and its instance files removed) when dropped.
struct Server {
    name: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    fn start(lease: Duration) -> Server {
        let name = unique_name("hv");
        let mut child = Command::new(SERVER)
            .args(["--create", "--name", &name, "--port", "0", "--cores", "1"])
            .args(["--memory-mb", "256"])
            .args(["--shm-view-lease-ms", &lease.as_millis().to_string()])
            .env_remove("VEDDB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veddb-server");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        };
        let mut server = Server {
            name,
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
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                panic!(
                    "the server exited during start with {status}:\n{}",
                    self.log()
                );
            }
            if self.log().contains("local clients: shared memory ready") {
                if let Ok(connection) = LocalConnection::connect(&self.name) {
                    if connection.execute(Request::Ping).is_ok() {
                        return;
                    }
                }
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "the server was not ready within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> LocalConnection {
        LocalConnection::connect(&self.name).expect("attach to the local instance")
    }

    /// The server is still running and answers a new client.
    fn assert_serving(&mut self) {
        let exited = self.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none(),
            "the server exited: {exited:?}\n{}",
            self.log()
        );
        let connection = self.connect();
        assert_eq!(connection.execute(Request::Ping).unwrap(), Response::Pong);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("server {} log:\n{}", self.name, self.log());
            }
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        remove_instance_files(&self.name);
    }
}

/// A 100-byte value that names its key and a serial (so a reused block shows other bytes).
fn value(tag: &str, serial: u64) -> Bytes {
    let mut bytes = format!("{tag}#{serial}:").into_bytes();
    let mut filler = serial.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while bytes.len() < VALUE_BYTES {
        filler ^= filler << 13;
        filler ^= filler >> 7;
        filler ^= filler << 17;
        bytes.push(filler as u8);
    }
    Bytes::from(bytes)
}

fn set(connection: &LocalConnection, key: &str, value: Bytes) {
    let response = connection
        .execute(Request::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value,
            options: SetOptions::default(),
        })
        .unwrap();
    assert!(
        matches!(response, Response::Stored { .. }),
        "SET {key}: {response:?}"
    );
}

/// GET by copy.
fn get(connection: &LocalConnection, key: &str) -> Bytes {
    match connection
        .execute(Request::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
        })
        .unwrap()
    {
        Response::Value { value, .. } => value,
        other => panic!("GET {key}: {other:?}"),
    }
}

/// A zero-copy view of `key` (it must be in the arena).
fn view(connection: &LocalConnection, key: &str) -> ValueView {
    match connection
        .get_view(Bytes::copy_from_slice(key.as_bytes()))
        .unwrap()
    {
        GetResult::View(view) => view,
        other => panic!("expected a view of {key}, got {other:?}"),
    }
}

/// What a read of a view found, the documented way: read the bytes, then ask whether the block
/// still holds the value (`is_current` after the read).
struct Read {
    bytes: Vec<u8>,
    current: bool,
}

fn read(view: &ValueView) -> Read {
    let bytes = view.bytes().to_vec();
    fence(Ordering::Acquire);
    Read {
        bytes,
        current: view.is_current(),
    }
}

/// Writes fresh keys of the viewed size: each takes the most recently freed 128-byte block,
/// if any (else a new one), so a freed block is reused at once.
struct Churn {
    next: u64,
}

impl Churn {
    fn new() -> Churn {
        Churn { next: 0 }
    }

    fn write(&mut self, connection: &LocalConnection) {
        let serial = self.next;
        self.next += 1;
        set(
            connection,
            &format!("churn-{serial}"),
            value("churn", serial),
        );
    }
}

/// A well-behaved client on a connection of its own: it stores its values once, then reads
/// them by copy and through views it checks at once; every value must stay intact.
struct Bystander {
    connection: LocalConnection,
    lease: Duration,
    next: usize,
    checks: u64,
}

const BYSTANDER_KEYS: usize = 16;

impl Bystander {
    fn start(server: &Server, lease: Duration) -> Bystander {
        let connection = server.connect();
        for k in 0..BYSTANDER_KEYS {
            set(&connection, &format!("calm-{k}"), value("calm", k as u64));
        }
        Bystander {
            connection,
            lease,
            next: 0,
            checks: 0,
        }
    }

    /// Checks one of its values by copy and by view.
    fn check(&mut self) {
        let k = self.next % BYSTANDER_KEYS;
        self.next += 1;
        let key = format!("calm-{k}");
        let expected = value("calm", k as u64);
        assert_eq!(get(&self.connection, &key), expected, "{key} by copy");
        let asked = Instant::now();
        let view = view(&self.connection, &key);
        let read = read(&view);
        if read.current {
            assert_eq!(
                read.bytes, expected,
                "{key}: a current view with other bytes"
            );
        } else {
            assert!(
                asked.elapsed() >= self.lease,
                "{key}: a fresh view was reused within its lease"
            );
        }
        self.checks += 1;
    }

    /// Every value, by copy.
    fn check_all(&mut self) {
        for k in 0..BYSTANDER_KEYS {
            let key = format!("calm-{k}");
            assert_eq!(
                get(&self.connection, &key),
                value("calm", k as u64),
                "{key}"
            );
        }
        self.checks += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// View A is taken, then (three quarters of a lease later, A still held) view B; both keys are
/// overwritten so their blocks are retired, and fresh writes reuse any block the server frees.
/// Until B's own lease ends, B must read its value: A's lease ending (which frees A's block)
/// must not free B's. On the old client (one pin, set when the first view was taken) the server
/// ignored the session's pin once A's lease ended, and B's block was reused within B's lease.
#[test]
fn a_newer_view_is_intact_for_its_whole_lease_after_an_older_view_expires() {
    let lease = Duration::from_millis(400);
    let mut server = Server::start(lease);
    let mut bystander = Bystander::start(&server, lease);
    let connection = server.connect();
    let mut churn = Churn::new();
    let (value_a, value_b) = (value("key-a", 0), value("key-b", 0));
    set(&connection, "key-a", value_a.clone());
    set(&connection, "key-b", value_b.clone());

    let taken_a = Instant::now();
    let view_a = view(&connection, "key-a");
    assert_eq!(view_a.bytes(), &value_a[..]);
    set(&connection, "key-a", value("key-a", 1));
    // Keep the core busy (fresh writes) until B is taken, A still held.
    let mut i = 0u64;
    while taken_a.elapsed() < lease * 3 / 4 {
        churn.write(&connection);
        if i.is_multiple_of(64) {
            bystander.check();
        }
        i += 1;
    }
    let taken_b = Instant::now();
    let view_b = view(&connection, "key-b");
    assert_eq!(view_b.bytes(), &value_b[..]);
    set(&connection, "key-b", value("key-b", 1));

    // Churn while B is within its lease (judged after each read), checking both views.
    let mut checks = 0u64;
    let mut checks_after_a_expired = 0u64;
    let mut a_reused = false;
    loop {
        churn.write(&connection);
        let read_b = read(&view_b);
        let read_a = read(&view_a);
        let since_b = taken_b.elapsed();
        if since_b >= lease {
            break;
        }
        assert_eq!(
            read_b.bytes,
            &value_b[..],
            "view B changed {since_b:?} into its {lease:?} lease (A was taken {:?} before B)",
            taken_b - taken_a
        );
        assert!(read_b.current, "view B's block was reused within its lease");
        if read_a.current {
            assert_eq!(
                read_a.bytes,
                &value_a[..],
                "a current view A with other bytes"
            );
        } else {
            a_reused = true;
        }
        checks += 1;
        if taken_a.elapsed() > lease {
            checks_after_a_expired += 1;
        }
        if i.is_multiple_of(64) {
            bystander.check();
        }
        i += 1;
    }
    eprintln!(
        "{checks} checks of B within its lease, {checks_after_a_expired} of them after A's \
         lease ended; A's block reused meanwhile: {a_reused}; {} fresh writes",
        churn.next
    );
    drop(view_a);
    drop(view_b);
    bystander.check_all();
    server.assert_serving();
}

/// A view held past its lease: the server may reuse its block (and, with writes going on, does
/// within a lease and a few milliseconds); the view then says so, and a read it calls current
/// always has the value.
#[test]
fn a_view_held_past_its_lease_reports_the_reuse_and_is_never_silently_wrong() {
    let lease = Duration::from_millis(300);
    let mut server = Server::start(lease);
    let mut bystander = Bystander::start(&server, lease);
    let connection = server.connect();
    let mut churn = Churn::new();
    let original = value("held", 0);
    set(&connection, "held", original.clone());
    let taken = Instant::now();
    let held = view(&connection, "held");
    set(&connection, "held", value("held", 1));

    let mut current_reads = 0u64;
    let mut i = 0u64;
    let reused_after = loop {
        churn.write(&connection);
        let read = read(&held);
        let since = taken.elapsed();
        if read.current {
            assert_eq!(read.bytes, &original[..], "a current view with other bytes");
            current_reads += 1;
        } else {
            assert!(
                since >= lease,
                "the block was reused {since:?} into a {lease:?} lease"
            );
            break since;
        }
        assert!(
            since < EVENTUALLY,
            "the block of a view held {since:?} past its {lease:?} lease was never reused \
             ({} writes): the lease is not enforced",
            churn.next
        );
        if i.is_multiple_of(64) {
            bystander.check();
        }
        i += 1;
    };
    // Stale for good: the generation only grows.
    assert!(!held.is_current());
    assert_eq!(held.bytes().len(), VALUE_BYTES, "still in bounds");
    eprintln!(
        "reused {reused_after:?} after the view was taken ({current_reads} current reads \
         before, {} fresh writes)",
        churn.next
    );
    drop(held);
    // The key itself has its latest value, in place and by copy.
    assert_eq!(view(&connection, "held").bytes(), &value("held", 1)[..]);
    assert_eq!(get(&connection, "held"), value("held", 1));
    bystander.check_all();
    server.assert_serving();
}

/// The lease is real time: a view is taken, its block retired, and then the core has nothing to
/// do for three leases (it parks, waking only for its timers). Within a few writes (each after
/// a short sleep, so the core parks and wakes between them) the block is reused. Counted in
/// epochs of a running core, as it used to be, the pin would still protect the block for a
/// whole lease of running (the idle core advanced its epoch a few dozen times).
#[test]
fn the_lease_is_real_time_even_while_the_core_idles() {
    let lease = Duration::from_millis(1000);
    let mut server = Server::start(lease);
    let mut bystander = Bystander::start(&server, lease);
    let connection = server.connect();
    let mut churn = Churn::new();
    let original = value("idle", 0);
    set(&connection, "idle", original.clone());
    let held = view(&connection, "idle");
    set(&connection, "idle", value("idle", 1));
    assert_eq!(read(&held).bytes, &original[..]);

    std::thread::sleep(lease * 3);
    // A generous bound: with the real-time lease the block is free by the first write (the
    // idle core's rounds already found the pin stale) or, at the latest, by the second.
    const WRITES_MAX: u64 = 64;
    let mut reused_at = None;
    for write in 0..WRITES_MAX {
        churn.write(&connection);
        let read = read(&held);
        if !read.current {
            reused_at = Some(write);
            break;
        }
        assert_eq!(read.bytes, &original[..], "a current view with other bytes");
        std::thread::sleep(Duration::from_millis(2));
    }
    let reused_at = reused_at.unwrap_or_else(|| {
        panic!(
            "{WRITES_MAX} writes after the core idled for {:?}, the block of a view whose \
             {lease:?} lease ended long ago was still kept: the lease does not count real time",
            lease * 3
        )
    });
    eprintln!("reused by write {reused_at} after the idle");
    drop(held);
    bystander.check();
    bystander.check_all();
    server.assert_serving();
}
