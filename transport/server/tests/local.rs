//! Acceptance tests of the shared-memory frontend with the real `veddb-server` binary
//! (`--create --name NAME`) and client **processes**: every command through the rings, eight
//! processes hammering overlapping keys, pub/sub fan-out to local subscribers, clients killed
//! mid-request or while holding a zero-copy view, clients writing garbage into their rings, a
//! second `--create` on a live name, and zero-copy views that are never torn.
//!
//! Client processes are this test binary run again (`role_entry`, a no-op unless
//! `VEDDB_LOCAL_ROLE` names a role). A child reports to the parent with stdout lines that start
//! with `@@`; the parent talks to it through its stdin. Every server and child is killed by a
//! guard when its test ends, also on a panic. Instance names are unique per test
//! (`t-<pid>-<n>`). Linux only (the local frontend is).
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use veddb_client::local::{GetResult, LocalConnection};
use veddb_client::{Client, ClientError};
use veddb_wire::grpc::Code;
use veddb_wire::grpc_client::SubscribeEvent;
use veddb_wire::shm::layout::{attach, instance, reason, ring as ring_format, ring_segment};
use veddb_wire::{Error, Request, Response, SetCondition, SetOptions, SubscriberId, Ttl};

mod common;
use common::{capture_stderr, listening_address, remove_instance_files, unique_name, Rng, TempDir};

const SERVER: &str = env!("CARGO_BIN_EXE_veddb-server");
/// The role a re-executed child plays; unset in the parent.
const ROLE_ENV: &str = "VEDDB_LOCAL_ROLE";
/// The child's arguments, separated by [`ARG_SEPARATOR`].
const ARGS_ENV: &str = "VEDDB_LOCAL_ARGS";
const ARG_SEPARATOR: char = '\u{1f}';
/// Generous: debug builds on small, busy machines.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const LINE_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// "Within a few seconds", generously: the server notices a dead client in milliseconds.
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);
/// A child that loops until killed gives up after this (so no child outlives a lost parent).
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// The parent's helpers: instance names, the server, child processes.

fn instance_files(name: &str) -> [String; 2] {
    [instance::path(name), instance::socket_path(name)]
}

/// Removes an instance's files when the test ends (a SIGKILLed server leaves them behind).
struct InstanceFiles(String);

impl Drop for InstanceFiles {
    fn drop(&mut self) {
        remove_instance_files(&self.0);
    }
}

/// A `veddb-server --create --name NAME` this test started; killed when dropped.
struct Server {
    name: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts `veddb-server --create --name NAME --port 0 --spin-us 0` plus `extra`.
    fn spawn(name: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(SERVER)
            .args(["--create", "--name", name, "--port", "0", "--spin-us", "0"])
            .args(extra)
            .env_remove("VEDDB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veddb-server");
        let (log, reader) = capture_stderr(&mut child);
        Server {
            name: name.to_string(),
            child: Some(child),
            log,
            reader: Some(reader),
        }
    }

    /// Starts a server and waits until a local client gets a PONG.
    fn start(name: &str, extra: &[&str]) -> Server {
        let mut server = Server::spawn(name, extra);
        server.wait_ready();
        server
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                self.join_reader();
                panic!(
                    "the server exited during start with {status}; its log:\n{}",
                    self.log()
                );
            }
            if self.log().contains("local clients: shared memory ready") {
                if let Ok(client) = Client::connect_local(&self.name) {
                    if client.ping().is_ok() {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server was not ready within {READY_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> Client {
        Client::connect_local(&self.name).expect("attach to the local instance")
    }

    /// Waits until a log line satisfies `found`; how long that took.
    fn wait_log(&self, what: &str, found: impl Fn(&str) -> bool) -> Duration {
        self.wait_log_within(LINE_TIMEOUT, what, found)
    }

    fn wait_log_within(
        &self,
        limit: Duration,
        what: &str,
        found: impl Fn(&str) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if self.log().lines().any(&found) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "the server never logged {what} within {limit:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the "local client detached" line of process `pid`.
    fn wait_detached(&self, pid: u32) -> Duration {
        let pid_field = format!("pid={pid}");
        self.wait_log_within(
            DETACH_TIMEOUT,
            &format!("the detach of pid {pid}"),
            |line| {
                line.contains("local client detached")
                    && line.split_whitespace().any(|word| word == pid_field)
            },
        )
    }

    /// SIGKILL, then reaps it (its instance files stay: a stale instance).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_reader();
    }

    /// Waits for the server to exit by itself.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                self.join_reader();
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "the server did not exit within {EXIT_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM: the server must exit cleanly and remove its instance file and socket.
    fn stop_cleanly(&mut self) {
        signal(self.pid(), "TERM");
        let status = self.wait_exit();
        assert!(
            status.success(),
            "SIGTERM must stop the server cleanly: {status}; its log:\n{}",
            self.log()
        );
        for path in instance_files(&self.name) {
            assert!(
                !Path::new(&path).exists(),
                "{path} must be removed by a clean stop; the log:\n{}",
                self.log()
            );
        }
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
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
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// A client process: this test binary running `role_entry` as `role`. Killed when dropped.
struct Proc {
    label: String,
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

fn spawn_role(role: &str, args: &[&str]) -> Proc {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "role_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_ENV, role)
        .env(ARGS_ENV, args.join(&ARG_SEPARATOR.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a client process");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(report) = line.strip_prefix("@@") {
                if sender.send(report.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    Proc {
        label: format!("{role} (pid {pid})"),
        stdin: child.stdin.take(),
        child: Some(child),
        pid,
        lines,
    }
}

impl Proc {
    /// The next report line, if one comes within `timeout`.
    fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for a report starting with `prefix` (other reports are skipped); its rest.
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {prefix:?} report within {LINE_TIMEOUT:?}",
                        self.label
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait();
                    panic!(
                        "{}: exited ({status}) before reporting {prefix:?}",
                        self.label
                    );
                }
            }
        }
    }

    /// As [`Proc::expect`], ignoring every report that arrived before this call.
    fn expect_fresh(&mut self, prefix: &str) -> String {
        while self.lines.try_recv().is_ok() {}
        self.expect(prefix)
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the client process");
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("not reaped yet");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!("{} did not exit within {EXIT_TIMEOUT:?}", self.label);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit, which must be a success (a failed assert in the child is not).
    fn finish(&mut self) {
        self.close_stdin();
        let status = self.wait();
        assert!(status.success(), "{} failed: {status}", self.label);
    }

    /// SIGKILL, then reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn status_code(error: &ClientError) -> Option<Code> {
    match error {
        ClientError::Status(status) => Some(status.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The child side: `role_entry` dispatches on VEDDB_LOCAL_ROLE.

/// A report line to the parent.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{line}").unwrap();
    out.flush().unwrap();
}

/// The next line the parent sends (`None` once it closed our stdin).
fn hear() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_string()),
    }
}

/// A flag that turns true when the parent sends "stop" or closes our stdin.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        while let Some(line) = hear() {
            if line == "stop" {
                break;
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

#[test]
fn role_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return; // The parent's run: nothing to do.
    };
    let args = std::env::var(ARGS_ENV).unwrap_or_default();
    let args: Vec<&str> = args.split(ARG_SEPARATOR).collect();
    match role.as_str() {
        "hammer" => role_hammer(&args),
        "subscriber" => role_subscriber(&args),
        "publisher" => role_publisher(&args),
        "looper" => role_looper(&args),
        "view_holder" => role_view_holder(&args),
        "worker" => role_worker(&args),
        "garbage" => role_garbage(&args),
        "overwriter" => role_overwriter(&args),
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Every command through shared memory.

fn opts(ttl_ms: Option<u64>, condition: SetCondition, keep_ttl: bool) -> SetOptions {
    SetOptions {
        ttl_ms,
        condition,
        keep_ttl,
    }
}

fn remaining(ttl: Ttl) -> u64 {
    match ttl {
        Ttl::Remaining(ms) => ms,
        other => panic!("expected a remaining TTL, got {other:?}"),
    }
}

#[test]
fn every_command_through_shared_memory() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(
        &name,
        &[
            "--cores",
            "2",
            "--key-bytes-max",
            "64",
            "--value-bytes-max",
            "65536",
        ],
    );
    let client = server.client();
    let local: &LocalConnection = client.local().expect("a local client");
    assert_eq!(local.core_count(), 2);

    // PING.
    client.ping().unwrap();
    assert_eq!(local.execute(Request::Ping).unwrap(), Response::Pong);

    // GET / SET with binary keys and values.
    let key = Bytes::from_static(b"bin\x00\xff\x01key");
    let value: Bytes = (0..=255u8)
        .chain((0..=255u8).rev())
        .collect::<Vec<u8>>()
        .into();
    assert_eq!(client.get(key.clone()).unwrap(), None);
    let v1 = client
        .set(key.clone(), value.clone(), SetOptions::default())
        .unwrap()
        .expect("stored");
    let (read, version) = client.get(key.clone()).unwrap().expect("found");
    assert_eq!(read, value);
    assert_eq!(version, v1);
    // An empty value is a value.
    client
        .set("empty", Bytes::new(), SetOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(client.get("empty").unwrap().unwrap().0.len(), 0);
    // The zero-copy read of the same value.
    match local.get_view(key.clone()).unwrap() {
        GetResult::View(view) => {
            assert!(view.mapping_contains(view.as_ptr()));
            assert_eq!(view.bytes(), &value[..]);
            assert_eq!(view.version(), v1);
            assert!(view.is_current());
        }
        other => panic!("expected a view, got {other:?}"),
    }
    assert!(matches!(
        local.get_view("no such key").unwrap(),
        GetResult::NotFound
    ));

    // SET with a TTL, NX, XX, KEEPTTL.
    client
        .set("ttl", "x", opts(Some(100_000), SetCondition::Always, false))
        .unwrap()
        .unwrap();
    let ms = remaining(client.ttl("ttl").unwrap());
    assert!(ms > 0 && ms <= 100_000, "{ms}");
    assert_eq!(
        client
            .set("ttl", "nx", opts(None, SetCondition::IfAbsent, false))
            .unwrap(),
        None,
        "NX on a present key"
    );
    assert!(client
        .set("fresh", "nx", opts(None, SetCondition::IfAbsent, false))
        .unwrap()
        .is_some());
    assert_eq!(
        client
            .set("absent", "xx", opts(None, SetCondition::IfPresent, false))
            .unwrap(),
        None,
        "XX on an absent key"
    );
    assert_eq!(client.get("absent").unwrap(), None);
    assert!(client
        .set("fresh", "xx", opts(None, SetCondition::IfPresent, false))
        .unwrap()
        .is_some());
    assert_eq!(&client.get("fresh").unwrap().unwrap().0[..], b"xx");
    client
        .set("ttl", "kept", opts(None, SetCondition::Always, true))
        .unwrap()
        .unwrap();
    assert!(remaining(client.ttl("ttl").unwrap()) <= 100_000);
    assert_eq!(&client.get("ttl").unwrap().unwrap().0[..], b"kept");
    client
        .set("ttl", "plain", SetOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(client.ttl("ttl").unwrap(), Ttl::Persistent);

    // DEL, EXISTS.
    assert_eq!(
        local.execute(Request::Exists { key: key.clone() }).unwrap(),
        Response::Bool(true)
    );
    assert!(client.delete(key.clone()).unwrap());
    assert!(!client.delete(key.clone()).unwrap());
    assert_eq!(
        local.execute(Request::Exists { key: key.clone() }).unwrap(),
        Response::Bool(false)
    );

    // CAS: absent, match, mismatch.
    let cas = |key: &str, expected_version: u64, value: &str| {
        local
            .execute(Request::Cas {
                key: Bytes::copy_from_slice(key.as_bytes()),
                expected_version,
                value: Bytes::copy_from_slice(value.as_bytes()),
                ttl_ms: None,
            })
            .unwrap()
    };
    let created = match cas("cas", 0, "one") {
        Response::Stored { version } => version,
        other => panic!("CAS 0 on an absent key stores: {other:?}"),
    };
    let updated = match cas("cas", created, "two") {
        Response::Stored { version } => version,
        other => panic!("CAS on the current version stores: {other:?}"),
    };
    assert!(updated > created);
    assert_eq!(
        cas("cas", created, "three"),
        Response::VersionMismatch { current: updated }
    );
    assert_eq!(
        cas("cas", 0, "four"),
        Response::VersionMismatch { current: updated },
        "CAS 0 means only if absent"
    );
    assert_eq!(cas("cas-absent", 7, "five"), Response::NotFound);
    assert_eq!(&client.get("cas").unwrap().unwrap().0[..], b"two");

    // INCR / DECR.
    assert_eq!(client.incr("n", 5).unwrap(), 5);
    assert_eq!(client.incr("n", -7).unwrap(), -2);
    assert_eq!(client.incr("n", 2).unwrap(), 0);
    assert_eq!(&client.get("n").unwrap().unwrap().0[..], b"0");

    // EXPIRE / TTL / PERSIST.
    assert_eq!(
        local
            .execute(Request::Expire {
                key: "n".into(),
                ttl_ms: 50_000
            })
            .unwrap(),
        Response::Bool(true)
    );
    assert!(remaining(client.ttl("n").unwrap()) <= 50_000);
    assert_eq!(
        local.execute(Request::Persist { key: "n".into() }).unwrap(),
        Response::Bool(true)
    );
    assert_eq!(client.ttl("n").unwrap(), Ttl::Persistent);
    assert_eq!(
        local.execute(Request::Persist { key: "n".into() }).unwrap(),
        Response::Bool(false)
    );
    assert_eq!(client.ttl("missing").unwrap(), Ttl::Missing);
    assert_eq!(
        local
            .execute(Request::Expire {
                key: "missing".into(),
                ttl_ms: 1000
            })
            .unwrap(),
        Response::Bool(false)
    );
    client
        .set(
            "short",
            "gone soon",
            opts(Some(30), SetCondition::Always, false),
        )
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("short").unwrap().is_some() {
        assert!(Instant::now() < deadline, "a 30 ms TTL never expired");
        std::thread::sleep(Duration::from_millis(10));
    }

    // MSET / MGET across both cores (binary keys and values).
    let pairs: Vec<(Bytes, Bytes)> = (0..200u32)
        .map(|i| {
            let mut key = b"multi\x00".to_vec();
            key.extend_from_slice(&i.to_le_bytes());
            let value: Vec<u8> = (0..(i % 97) as usize)
                .map(|j| (i as usize * 31 + j) as u8)
                .collect();
            (Bytes::from(key), Bytes::from(value))
        })
        .collect();
    let shards: std::collections::HashSet<u32> = pairs
        .iter()
        .map(|(key, _)| veddb_wire::shard_for_key(key, 2))
        .collect();
    assert_eq!(shards.len(), 2, "the keys span both cores");
    assert_eq!(
        local
            .execute(Request::MSet {
                pairs: pairs.clone()
            })
            .unwrap(),
        Response::Ok
    );
    let mut keys: Vec<Bytes> = pairs.iter().map(|(key, _)| key.clone()).collect();
    keys.push(Bytes::from_static(b"multi-missing"));
    match local.execute(Request::MGet { keys }).unwrap() {
        Response::Values(values) => {
            assert_eq!(values.len(), pairs.len() + 1);
            for ((_, expected), got) in pairs.iter().zip(&values) {
                assert_eq!(&got.as_ref().expect("present").0, expected);
            }
            assert_eq!(values[pairs.len()], None);
        }
        other => panic!("MGET: {other:?}"),
    }

    // SCAN with a prefix, page by page.
    let mut scanned: Vec<Bytes> = Vec::new();
    let mut cursor = Bytes::new();
    let mut pages = 0;
    loop {
        match local
            .execute(Request::Scan {
                cursor: cursor.clone(),
                prefix: Bytes::from_static(b"multi\x00"),
                count: 17,
            })
            .unwrap()
        {
            Response::Keys { keys, cursor: next } => {
                assert!(keys.len() <= 17, "a page holds at most count keys");
                scanned.extend(keys);
                pages += 1;
                if next.is_empty() {
                    break;
                }
                cursor = next;
            }
            other => panic!("SCAN: {other:?}"),
        }
        assert!(pages < 1000, "the scan never completes");
    }
    assert!(pages >= 200 / 17, "{pages} pages");
    assert!(
        scanned.windows(2).all(|pair| pair[0] < pair[1]),
        "keys in byte order, no repeats"
    );
    let mut expected: Vec<Bytes> = pairs.iter().map(|(key, _)| key.clone()).collect();
    expected.sort();
    assert_eq!(scanned, expected);

    // SUBSCRIBE / PUBLISH / FETCH / UNSUBSCRIBE.
    let subscriber = match local
        .execute(Request::Subscribe {
            topic: "news\x00".into(),
        })
        .unwrap()
    {
        Response::Subscribed { subscriber } => subscriber,
        other => panic!("SUBSCRIBE: {other:?}"),
    };
    assert_eq!(client.publish("news\x00", &b"\x00first"[..]).unwrap(), 1);
    assert_eq!(client.publish("news\x00", &b"second\xff"[..]).unwrap(), 1);
    assert_eq!(client.publish("nobody-listens", "x").unwrap(), 0);
    match local
        .execute(Request::Fetch {
            subscriber,
            max: 10,
            wait_ms: 1000,
        })
        .unwrap()
    {
        Response::Messages { messages, dropped } => {
            assert_eq!(dropped, 0);
            assert_eq!(
                messages,
                vec![
                    Bytes::from_static(b"\x00first"),
                    Bytes::from_static(b"second\xff")
                ]
            );
        }
        other => panic!("FETCH: {other:?}"),
    }
    assert_eq!(
        local.execute(Request::Unsubscribe { subscriber }).unwrap(),
        Response::Bool(true)
    );
    assert!(matches!(
        local
            .execute(Request::Fetch {
                subscriber,
                max: 1,
                wait_ms: 0
            })
            .unwrap(),
        Response::Error(Error::UnknownSubscriber(_))
    ));
    // A made-up subscriber id (its shard does not exist) is an error too, not a hang.
    assert!(matches!(
        local
            .execute(Request::Fetch {
                subscriber: SubscriberId(u64::MAX),
                max: 1,
                wait_ms: 0
            })
            .unwrap(),
        Response::Error(Error::UnknownSubscriber(_))
    ));
    // The typed subscription of the client library.
    {
        // In place once `subscribe` returns: the first event is the first message.
        let mut subscription = client.subscribe("typed").unwrap();
        assert_eq!(client.publish("typed", "hello").unwrap(), 1);
        match subscription.next() {
            Some(Ok(SubscribeEvent::Message { message, dropped })) => {
                assert_eq!(&message[..], b"hello");
                assert_eq!(dropped, 0);
            }
            other => panic!("subscription: {other:?}"),
        }
    }
    assert_eq!(
        client.publish("typed", "after").unwrap(),
        0,
        "dropping the subscription unsubscribes"
    );

    // INFO.
    let info = client.info().unwrap();
    assert_eq!(info.shards.len(), 2);
    let total = info.total();
    assert!(total.keys >= 200, "{total:?}");
    assert!(total.ops > 0 && total.messages_published >= 3, "{total:?}");

    // SNAPSHOT without --data-dir.
    assert_eq!(
        local.execute(Request::Snapshot).unwrap(),
        Response::Error(Error::PersistenceOff)
    );
    let error = client.snapshot().unwrap_err();
    assert_eq!(
        status_code(&error),
        Some(Code::FailedPrecondition),
        "{error}"
    );

    // Error statuses.
    let long_key = Bytes::from(vec![b'k'; 65]);
    assert_eq!(
        local
            .execute(Request::Set {
                key: long_key.clone(),
                value: "v".into(),
                options: SetOptions::default(),
            })
            .unwrap(),
        Response::Error(Error::KeyTooLarge {
            length: 65,
            limit: 64
        })
    );
    assert!(matches!(
        local.execute(Request::Get { key: long_key }).unwrap(),
        Response::Error(Error::KeyTooLarge { .. })
    ));
    assert!(matches!(
        local
            .execute(Request::Set {
                key: "big".into(),
                value: Bytes::from(vec![0u8; 65_537]),
                options: SetOptions::default(),
            })
            .unwrap(),
        Response::Error(Error::ValueTooLarge { .. })
    ));
    client
        .set("text", "not a number", SetOptions::default())
        .unwrap();
    assert_eq!(
        local
            .execute(Request::Incr {
                key: "text".into(),
                delta: 1
            })
            .unwrap(),
        Response::Error(Error::NotAnInteger)
    );
    let error = client.incr("text", 1).unwrap_err();
    assert_eq!(status_code(&error), Some(Code::InvalidArgument), "{error}");
    // Over the rings' frames without a value to upload (an MGET of 8,000 keys of 100 bytes):
    // RESOURCE_EXHAUSTED, and the message says so. A batch over the key limit is
    // INVALID_ARGUMENT whatever its size, as over gRPC.
    let keys = (0..8_000u32)
        .map(|i| Bytes::from(format!("{i:0100}")))
        .collect();
    let error = client.execute(Request::MGet { keys }).unwrap_err();
    assert_eq!(
        status_code(&error),
        Some(Code::ResourceExhausted),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("RESOURCE_EXHAUSTED: a request of"),
        "{error}"
    );
    let pairs = (0..=veddb_wire::limits::BATCH_KEYS_MAX as u32)
        .map(|i| (Bytes::from(i.to_le_bytes().to_vec()), Bytes::new()))
        .collect();
    let error = client.execute(Request::MSet { pairs }).unwrap_err();
    assert_eq!(status_code(&error), Some(Code::InvalidArgument), "{error}");
    assert!(error.to_string().contains("65537 keys"), "{error}");
    client
        .set("max", i64::MAX.to_string(), SetOptions::default())
        .unwrap();
    assert_eq!(
        local
            .execute(Request::Incr {
                key: "max".into(),
                delta: 1
            })
            .unwrap(),
        Response::Error(Error::Overflow)
    );

    // Pipelined: every answer to its request, in order, across cores.
    let requests: Vec<Request> = (0..100u32)
        .flat_map(|i| {
            let key = Bytes::from(format!("pipe-{i}"));
            [
                Request::Set {
                    key: key.clone(),
                    value: Bytes::from(i.to_le_bytes().to_vec()),
                    options: SetOptions::default(),
                },
                Request::Get { key: key.clone() },
                Request::Incr {
                    key: Bytes::from(format!("pipe-n-{}", i % 3)),
                    delta: 1,
                },
            ]
        })
        .collect();
    let answers = local.execute_many(&requests).unwrap();
    assert_eq!(answers.len(), requests.len());
    for (i, chunk) in answers.chunks(3).enumerate() {
        assert!(matches!(chunk[0], Response::Stored { .. }), "{chunk:?}");
        match &chunk[1] {
            Response::Value { value, .. } => assert_eq!(&value[..], &(i as u32).to_le_bytes()),
            other => panic!("pipelined GET: {other:?}"),
        }
        assert!(matches!(chunk[2], Response::Integer { .. }), "{chunk:?}");
    }
    let mut total = 0;
    for i in 0..3 {
        total += client.incr(format!("pipe-n-{i}"), 0).unwrap();
    }
    assert_eq!(total, 100);

    drop(client);
    server.stop_cleanly();
}

/// Values of every size up to `--value-bytes-max` through shared memory (`docs/shm-layout.md`,
/// "Large values"): those over a ring's frames go ahead as uploads, on both cores, by SET, CAS,
/// MSET and PUBLISH; reads stay zero-copy views; one byte over the limit is VALUE_TOO_LARGE.
#[test]
fn values_of_every_size_through_shared_memory() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    const MAX: usize = 5 << 20;
    let mut server = Server::start(
        &name,
        &["--cores", "2", "--value-bytes-max", &MAX.to_string()],
    );
    let local = LocalConnection::connect(&name).expect("attach");
    let client = Client::connect_local(&name).expect("attach");
    let mut rng = Rng::seeded(
        "VEDDB_TEST_SEED",
        "values_of_every_size_through_shared_memory",
    );
    let mut random = |len: usize| {
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes);
        Bytes::from(bytes)
    };
    // The SET whose request is exactly one frame: 23 bytes of fields around key and value.
    let frame = ring_format::max_frame_payload(1 << 20) as usize;
    let keys = [common::name_on(0, 2, "big"), common::name_on(1, 2, "big")];
    let edge = frame - 23 - keys[0].len();
    assert_eq!(keys[0].len(), keys[1].len());
    let sizes = [0, 1, edge - 1, edge, edge + 1, 1 << 20, MAX - 1, MAX];
    for key in &keys {
        for &size in &sizes {
            let value = random(size);
            let stored = local
                .execute(Request::Set {
                    key: Bytes::from(key.clone()),
                    value: value.clone(),
                    options: SetOptions::default(),
                })
                .unwrap();
            assert!(
                matches!(stored, Response::Stored { .. }),
                "{size}: {stored:?}"
            );
            match local.get_view(key.clone()).unwrap() {
                GetResult::View(view) => assert!(view.bytes() == &value[..], "view of {size}"),
                other => panic!("{size} bytes: not a view: {other:?}"),
            }
            assert_eq!(
                client.get(key.clone()).unwrap().map(|(v, _)| v),
                Some(value)
            );
        }
        // One byte over the limit: refused as on every transport, and the session goes on.
        let error = local
            .execute(Request::Set {
                key: Bytes::from(key.clone()),
                value: random(MAX + 1),
                options: SetOptions::default(),
            })
            .unwrap();
        assert_eq!(
            error,
            Response::Error(Error::ValueTooLarge {
                length: MAX + 1,
                limit: MAX
            })
        );
        assert!(!matches!(
            local.get_view(key.clone()).unwrap(),
            GetResult::NotFound
        ));
    }
    // CAS with a large value, then a large value under a condition.
    let (_, version) = client.get(keys[0].clone()).unwrap().unwrap();
    let value = random(2 << 20);
    let swapped = local
        .execute(Request::Cas {
            key: Bytes::from(keys[0].clone()),
            expected_version: version,
            value: value.clone(),
            ttl_ms: None,
        })
        .unwrap();
    assert!(matches!(swapped, Response::Stored { .. }), "{swapped:?}");
    assert_eq!(client.get(keys[0].clone()).unwrap().unwrap().0, value);
    let refused = local
        .execute(Request::Set {
            key: Bytes::from(keys[1].clone()),
            value: random(2 << 20),
            options: opts(None, SetCondition::IfAbsent, false),
        })
        .unwrap();
    assert_eq!(refused, Response::NotStored);
    // MSET of large values on both cores (one upload each, in order), MGET as views.
    let pairs: Vec<(Bytes, Bytes)> = (0..6u32)
        .map(|i| {
            let key = Bytes::from(common::name_on(i % 2, 2, &format!("mset{i}")));
            (key, random(700 << 10))
        })
        .collect();
    assert_eq!(
        local
            .execute(Request::MSet {
                pairs: pairs.clone()
            })
            .unwrap(),
        Response::Ok
    );
    let keys_of: Vec<Bytes> = pairs.iter().map(|(key, _)| key.clone()).collect();
    for ((_, value), got) in pairs.iter().zip(local.get_view_many(&keys_of).unwrap()) {
        match got {
            GetResult::View(view) => assert!(view.bytes() == &value[..]),
            other => panic!("MGET of a large value: {other:?}"),
        }
    }
    // Pipelined large SETs and small requests: every answer to its request.
    let requests: Vec<Request> = (0..8u32)
        .flat_map(|i| {
            let key = Bytes::from(format!("pipe-large-{i}"));
            [
                Request::Set {
                    key: key.clone(),
                    value: Bytes::from(vec![i as u8; (600 << 10) + i as usize]),
                    options: SetOptions::default(),
                },
                Request::Get { key },
            ]
        })
        .collect();
    let answers = local.execute_many(&requests).unwrap();
    for (i, pair) in answers.chunks(2).enumerate() {
        assert!(matches!(pair[0], Response::Stored { .. }), "{pair:?}");
        match &pair[1] {
            Response::Value { value, .. } => {
                assert_eq!(value.len(), (600 << 10) + i);
                assert!(value.iter().all(|&b| b == i as u8));
            }
            other => panic!("{other:?}"),
        }
    }
    drop(local);
    drop(client);
    server.stop_cleanly();
}

/// Large pushed messages (in parts) to a subscriber that does not read while its queue's limit
/// (8 MiB) drops the oldest, the one half delivered included: once it reads, every message it
/// receives is whole and in order, and the received plus the dropped are all that was
/// published.
#[test]
fn large_pushed_messages_dropped_halfway_are_never_received_torn() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(&name, &["--cores", "1"]);
    let subscriber = server.client();
    let publisher = server.client();
    let mut subscription = subscriber.subscribe("large").unwrap();
    let message = |i: u8| Bytes::from(vec![i; (3 << 20) + usize::from(i)]);
    const PUBLISHED: u8 = 12;
    for i in 0..PUBLISHED {
        assert_eq!(publisher.publish("large", message(i)).unwrap(), 1);
    }
    // Let the core write what the ring takes of the first message (and drop the oldest).
    std::thread::sleep(Duration::from_millis(200));
    let mut received = Vec::new();
    let mut dropped = 0;
    while (received.len() as u64 + dropped) < u64::from(PUBLISHED) {
        match subscription.receive(LINE_TIMEOUT).unwrap() {
            veddb_client::Received::Message {
                message: got,
                dropped: lost,
            } => {
                dropped += lost;
                let i = got[0];
                assert!(got == message(i), "message {i} torn or mixed");
                assert!(received.last().is_none_or(|&last| last < i), "out of order");
                received.push(i);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        dropped > 0,
        "the queue limit dropped nothing: the test tests nothing"
    );
    assert_eq!(
        received.last(),
        Some(&(PUBLISHED - 1)),
        "the newest arrives"
    );
    assert_eq!(received.len() as u64 + dropped, u64::from(PUBLISHED));
    drop(subscription);
    server.stop_cleanly();
}

/// GETs and SETs the core serves in place (from a copy of the frame in its scratch buffer,
/// the answer written straight into the response ring) have every outcome of the general
/// path: a value in the arena (a view), a value kept outside it (a copy), a missing key, a
/// refused key, SET's conditions and TTL, keys of both cores, and answers in request order when
/// they are pipelined with other requests.
#[test]
fn gets_and_sets_served_in_place_have_every_outcome() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(
        &name,
        &[
            "--cores",
            "2",
            "--memory-mb",
            "1",
            "--key-bytes-max",
            "64",
            "--shm-view-lease-ms",
            "600000",
        ],
    );
    let local = LocalConnection::connect(&name).expect("attach");
    let get = |key: &str| {
        local.execute(Request::Get {
            key: Bytes::from(key.to_owned()),
        })
    };

    // Missing, refused (a 65-byte key is over the limit, and small enough for the stack).
    assert_eq!(get("missing").unwrap(), Response::NotFound);
    assert!(matches!(
        local.get_view("missing").unwrap(),
        GetResult::NotFound
    ));
    assert_eq!(
        get(&"k".repeat(65)).unwrap(),
        Response::Error(Error::KeyTooLarge {
            length: 65,
            limit: 64
        })
    );

    // SET's outcomes: stored (with a TTL), NX and XX refused or applied, a refused key.
    let set = |key: &str, value: &str, options: SetOptions| {
        local.execute(Request::Set {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from(value.to_owned()),
            options,
        })
    };
    let stored = set(
        "cond",
        "one",
        opts(Some(100_000), SetCondition::Always, false),
    )
    .unwrap();
    assert!(matches!(stored, Response::Stored { .. }), "{stored:?}");
    let ttl_of = |key: &str| match local
        .execute(Request::Ttl {
            key: Bytes::from(key.to_owned()),
        })
        .unwrap()
    {
        Response::Ttl(ttl) => remaining(ttl),
        other => panic!("{other:?}"),
    };
    let ms = ttl_of("cond");
    assert!(ms > 0 && ms <= 100_000, "{ms}");
    assert_eq!(
        set("cond", "two", opts(None, SetCondition::IfAbsent, false)).unwrap(),
        Response::NotStored
    );
    assert_eq!(
        set("absent", "two", opts(None, SetCondition::IfPresent, false)).unwrap(),
        Response::NotStored
    );
    assert!(matches!(
        set("cond", "three", opts(None, SetCondition::IfPresent, true)).unwrap(),
        Response::Stored { .. }
    ));
    assert!(
        matches!(get("cond").unwrap(), Response::Value { value, .. } if value == "three"),
        "XX applied"
    );
    let ms = ttl_of("cond");
    assert!(ms > 0 && ms <= 100_000, "KEEPTTL kept the TTL: {ms}");
    assert_eq!(
        set(&"k".repeat(65), "v", SetOptions::default()).unwrap(),
        Response::Error(Error::KeyTooLarge {
            length: 65,
            limit: 64
        })
    );
    // Keys too long to be inline in their slot (over 30 bytes), written in place from a borrowed
    // slice: with a TTL, again without one, then a new one: each kept whole (the slot, the
    // expiry index, the ordered index SCAN walks).
    let long = format!("long:{}", "x".repeat(45));
    assert!(matches!(
        set(
            &long,
            "one",
            opts(Some(100_000), SetCondition::Always, false)
        )
        .unwrap(),
        Response::Stored { .. }
    ));
    let ms = ttl_of(&long);
    assert!(ms > 0 && ms <= 100_000, "{ms}");
    assert!(matches!(
        set(&long, "two", SetOptions::default()).unwrap(),
        Response::Stored { .. }
    ));
    assert!(matches!(get(&long).unwrap(), Response::Value { value, .. } if value == "two"));
    assert_eq!(
        local
            .execute(Request::Ttl {
                key: Bytes::from(long.clone()),
            })
            .unwrap(),
        Response::Ttl(Ttl::Persistent),
        "the TTL went with the second SET"
    );
    let longer = format!("long:{}", "y".repeat(50));
    assert!(matches!(
        set(&longer, "three", SetOptions::default()).unwrap(),
        Response::Stored { .. }
    ));
    match local
        .execute(Request::Scan {
            cursor: Bytes::new(),
            prefix: Bytes::from_static(b"long:"),
            count: 10,
        })
        .unwrap()
    {
        Response::Keys { keys, .. } => {
            assert_eq!(
                keys,
                vec![Bytes::from(long.clone()), Bytes::from(longer.clone())]
            )
        }
        other => panic!("{other:?}"),
    }

    // Keys of both cores, each read in place.
    let keys: Vec<String> = (0..64).map(|i| format!("place:{i}")).collect();
    for key in &keys {
        local
            .execute(Request::Set {
                key: Bytes::from(key.clone()),
                value: Bytes::from(format!("value of {key}")),
                options: SetOptions::default(),
            })
            .unwrap();
    }
    for key in &keys {
        match local.get_view(Bytes::from(key.clone())).unwrap() {
            GetResult::View(view) => assert_eq!(view.bytes(), format!("value of {key}").as_bytes()),
            other => panic!("{key}: expected a view, got {other:?}"),
        }
    }

    // Pipelined, read in place: every view to its key, a missing key in its place.
    let mut many: Vec<Bytes> = keys.iter().map(|key| Bytes::from(key.clone())).collect();
    many.insert(7, Bytes::from_static(b"missing"));
    let views = local.get_view_many(&many).unwrap();
    assert_eq!(views.len(), many.len());
    for (key, view) in many.iter().zip(&views) {
        match view {
            GetResult::NotFound => assert_eq!(&key[..], b"missing"),
            GetResult::View(view) => {
                assert_eq!(view.bytes(), [b"value of ", &key[..]].concat());
                assert!(view.is_current());
            }
            other => panic!("{key:?}: {other:?}"),
        }
    }
    drop(views);

    // A view whose answer is not the next in the ring: answers to requests submitted before
    // it (a value in shared memory, and a SET's) come first and wait in the stash; each
    // request still gets its own answer.
    let first = local
        .submit(Request::Get {
            key: Bytes::from(keys[1].clone()),
        })
        .unwrap();
    let second = local
        .submit(Request::Set {
            key: Bytes::from_static(b"stash:set"),
            value: Bytes::from_static(b"set while a view waited"),
            options: SetOptions::default(),
        })
        .unwrap();
    match local.get_view(Bytes::from(keys[3].clone())).unwrap() {
        GetResult::View(view) => {
            assert_eq!(view.bytes(), format!("value of {}", keys[3]).as_bytes())
        }
        other => panic!("{other:?}"),
    }
    let started = Instant::now();
    let (mut first_answer, mut second_answer) = (None, None);
    while first_answer.is_none() || second_answer.is_none() {
        assert!(
            started.elapsed() < LINE_TIMEOUT,
            "the submitted requests were answered"
        );
        if first_answer.is_none() {
            first_answer = local.try_complete(&first).unwrap();
        }
        if second_answer.is_none() {
            second_answer = local.try_complete(&second).unwrap();
        }
    }
    assert!(
        matches!(&first_answer, Some(Response::Value { value, .. }) if value == format!("value of {}", keys[1]).as_bytes()),
        "{first_answer:?}"
    );
    assert!(
        matches!(second_answer, Some(Response::Stored { .. })),
        "{second_answer:?}"
    );

    // Pipelined with writes: every answer to its request, in order.
    let mut batch = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        batch.push(Request::Get {
            key: Bytes::from(key.clone()),
        });
        if i % 3 == 0 {
            batch.push(Request::Set {
                key: Bytes::from(key.clone()),
                value: Bytes::from(format!("second value of {key}")),
                options: SetOptions::default(),
            });
            batch.push(Request::Get {
                key: Bytes::from(key.clone()),
            });
        }
    }
    let answers = local.execute_many(&batch).unwrap();
    let mut answers = answers.into_iter();
    for (i, key) in keys.iter().enumerate() {
        let value = |response: Response| match response {
            Response::Value { value, .. } => value,
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(
            value(answers.next().unwrap()),
            format!("value of {key}").as_bytes()
        );
        if i % 3 == 0 {
            assert!(matches!(answers.next().unwrap(), Response::Stored { .. }));
            assert_eq!(
                value(answers.next().unwrap()),
                format!("second value of {key}").as_bytes()
            );
        }
    }

    // A value kept outside the arena: a view held (for a long lease) keeps every block
    // retired after it, so overwriting a large value fills the arena (18 MiB for this 1 MiB
    // instance) and later versions are stored on the heap; each GET still reads the latest.
    let big = |i: u32| Bytes::from(vec![i as u8; 256 << 10]);
    local
        .execute(Request::Set {
            key: "big".into(),
            value: big(0),
            options: SetOptions::default(),
        })
        .unwrap();
    let held = local.get_view("big").unwrap();
    assert!(matches!(held, GetResult::View(_)), "{held:?}");
    let mut copied = false;
    for i in 1..=80 {
        local
            .execute(Request::Set {
                key: "big".into(),
                value: big(i),
                options: SetOptions::default(),
            })
            .unwrap();
        match local.get_view("big").unwrap() {
            GetResult::View(view) => assert_eq!(view.bytes(), &big(i)[..]),
            GetResult::Copied(value, _) => {
                assert_eq!(value, big(i));
                copied = true;
            }
            GetResult::NotFound => panic!("big is missing"),
        }
        assert!(
            matches!(get("big").unwrap(), Response::Value { value, .. } if value == big(i)),
            "GET of big, version {i}"
        );
    }
    assert!(
        copied,
        "the arena never filled: no GET answered a value kept outside it"
    );
    // Small SETs (served in place) overwriting one key while the view pins every retired
    // block: the arena runs out for them too, and the value is then kept on the heap.
    let mut copied = false;
    for i in 0..40_000u32 {
        let fill = (i % 251) as u8;
        local
            .execute(Request::Set {
                key: "small".into(),
                value: Bytes::from(vec![fill; 900]),
                options: SetOptions::default(),
            })
            .unwrap();
        match local.get_view("small").unwrap() {
            GetResult::View(view) => assert_eq!(view.bytes(), &vec![fill; 900][..]),
            GetResult::Copied(value, _) => {
                assert_eq!(value, vec![fill; 900]);
                copied = true;
                break;
            }
            GetResult::NotFound => panic!("small is missing"),
        }
    }
    assert!(copied, "small values never left the full arena");
    drop(held);
    server.stop_cleanly();
}

/// With persistence on, a SET through shared memory is answered only once the log has it
/// (never in place before it): every acknowledged write survives a SIGKILL of the server.
#[test]
fn acknowledged_local_writes_survive_a_kill() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let dir = TempDir::new(&name);
    let data_dir = dir.arg();
    let args = ["--cores", "2", "--data-dir", data_dir, "--fsync", "always"];
    let mut server = Server::start(&name, &args);
    let local = LocalConnection::connect(&name).expect("attach");
    let value = |i: u32| Bytes::from(format!("durable value {i}"));
    for i in 0..200u32 {
        let answer = local
            .execute(Request::Set {
                key: Bytes::from(format!("durable:{i}")),
                value: value(i),
                options: SetOptions::default(),
            })
            .unwrap();
        assert!(matches!(answer, Response::Stored { .. }), "{answer:?}");
    }
    // Pipelined too.
    let batch: Vec<Request> = (200..400u32)
        .map(|i| Request::Set {
            key: Bytes::from(format!("durable:{i}")),
            value: value(i),
            options: SetOptions::default(),
        })
        .collect();
    for answer in local.execute_many(&batch).unwrap() {
        assert!(matches!(answer, Response::Stored { .. }), "{answer:?}");
    }
    // Values larger than a frame (uploaded ahead of their SET) are logged like any other.
    let large = |i: u32| Bytes::from(vec![i as u8; (3 << 20) + i as usize]);
    for i in 0..4u32 {
        let answer = local
            .execute(Request::Set {
                key: Bytes::from(format!("durable-large:{i}")),
                value: large(i),
                options: SetOptions::default(),
            })
            .unwrap();
        assert!(matches!(answer, Response::Stored { .. }), "{answer:?}");
    }
    drop(local);
    server.kill();
    remove_instance_files(&name);

    let mut server = Server::start(&name, &args);
    let local = LocalConnection::connect(&name).expect("attach");
    for i in 0..400u32 {
        match local
            .execute(Request::Get {
                key: Bytes::from(format!("durable:{i}")),
            })
            .unwrap()
        {
            Response::Value { value: read, .. } => assert_eq!(read, value(i)),
            other => panic!("durable:{i} after the kill: {other:?}"),
        }
    }
    for i in 0..4u32 {
        match local.get_view(format!("durable-large:{i}")).unwrap() {
            GetResult::View(view) => assert!(view.bytes() == &large(i)[..]),
            other => panic!("durable-large:{i} after the kill: {other:?}"),
        }
    }
    drop(local);
    server.stop_cleanly();
}

/// With persistence on, a read must not show a write the log does not have yet: a GET that
/// sees a SET's value is answered only once that SET is acknowledged (its answer was released
/// first). One thread drives both sessions, so "acknowledged" is checked deterministically: the
/// core releases held answers in log order.
#[test]
fn a_read_never_shows_an_unacknowledged_local_write() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let dir = TempDir::new(&name);
    let data_dir = dir.arg();
    let mut server = Server::start(
        &name,
        &["--cores", "1", "--data-dir", data_dir, "--fsync", "always"],
    );
    let writer = LocalConnection::connect(&name).expect("attach");
    let reader = LocalConnection::connect(&name).expect("attach");
    for i in 0..100u32 {
        let key = Bytes::from(format!("pending:{i}"));
        let value = Bytes::from(format!("pending value {i}"));
        let submitted = writer
            .submit(Request::Set {
                key: key.clone(),
                value: value.clone(),
                options: SetOptions::default(),
            })
            .unwrap();
        let started = Instant::now();
        loop {
            match reader.execute(Request::Get { key: key.clone() }).unwrap() {
                Response::Value { value: read, .. } if read == value => break,
                Response::NotFound => {}
                other => panic!("{other:?}"),
            }
            assert!(
                started.elapsed() < LINE_TIMEOUT,
                "the SET never became visible"
            );
        }
        match writer.try_complete(&submitted).unwrap() {
            Some(Response::Stored { .. }) => {}
            None => panic!("write {i}: a GET showed it before it was acknowledged"),
            Some(other) => panic!("{other:?}"),
        }
    }
    drop((writer, reader));
    server.stop_cleanly();
}

/// A SET refused by its condition stores nothing, not even in the arena for a moment: refused
/// SETs while a view pins the arena's retired blocks do not fill it (later values still go to
/// the arena and are read in place).
#[test]
fn refused_local_sets_take_no_arena_space() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(
        &name,
        &[
            "--cores",
            "1",
            "--memory-mb",
            "1",
            "--shm-view-lease-ms",
            "600000",
        ],
    );
    let local = LocalConnection::connect(&name).expect("attach");
    let value = |fill: u8| Bytes::from(vec![fill; 900]);
    let set = |key: &str, fill: u8, condition: SetCondition| {
        local
            .execute(Request::Set {
                key: Bytes::from(key.to_owned()),
                value: value(fill),
                options: opts(None, condition, false),
            })
            .unwrap()
    };
    assert!(matches!(
        set("lock", 1, SetCondition::Always),
        Response::Stored { .. }
    ));
    let held = local.get_view("lock").unwrap();
    assert!(matches!(held, GetResult::View(_)), "{held:?}");
    // The arena of this instance is 18 MiB: 30,000 blocks of 1 KiB would not fit.
    for _ in 0..30_000 {
        assert_eq!(set("lock", 2, SetCondition::IfAbsent), Response::NotStored);
        assert_eq!(
            set("absent", 2, SetCondition::IfPresent),
            Response::NotStored
        );
    }
    assert!(matches!(
        set("fresh", 3, SetCondition::Always),
        Response::Stored { .. }
    ));
    match local.get_view("fresh").unwrap() {
        GetResult::View(view) => assert_eq!(view.bytes(), &value(3)[..]),
        GetResult::Copied(copy, _) => panic!(
            "refused SETs filled the arena: a fresh value of {} bytes was kept outside it",
            copy.len()
        ),
        GetResult::NotFound => panic!("fresh is missing"),
    }
    drop(held);
    drop(local);
    server.stop_cleanly();
}

/// `submit` / `try_complete` / `wait_for_answers`: one thread drives many sessions, each with
/// requests in flight, and every answer reaches the submission it belongs to.
#[test]
fn one_thread_drives_many_sessions() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(&name, &["--cores", "2"]);
    const SESSIONS: usize = 16;
    const ROUNDS: usize = 20;
    let sessions: Vec<LocalConnection> = (0..SESSIONS)
        .map(|_| LocalConnection::connect(&name).expect("attach"))
        .collect();
    // Each session counts its own key up, two INCRs in flight at a time.
    let mut pending: Vec<Vec<veddb_client::local::Submitted>> = Vec::new();
    for (index, session) in sessions.iter().enumerate() {
        let incr = || Request::Incr {
            key: Bytes::from(format!("many:{index}")),
            delta: 1,
        };
        pending.push(vec![
            session.submit(incr()).unwrap(),
            session.submit(incr()).unwrap(),
        ]);
    }
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(); SESSIONS];
    let started = Instant::now();
    while pending.iter().any(|queue| !queue.is_empty()) {
        assert!(
            started.elapsed() < LINE_TIMEOUT,
            "answers missing after {LINE_TIMEOUT:?}"
        );
        let mut progressed = false;
        for (index, session) in sessions.iter().enumerate() {
            let mut still = Vec::new();
            for submitted in pending[index].drain(..) {
                match session.try_complete(&submitted).unwrap() {
                    Some(Response::Integer { value, .. }) => {
                        progressed = true;
                        seen[index].push(value);
                        if seen[index].len() + 1 < ROUNDS {
                            still.push(
                                session
                                    .submit(Request::Incr {
                                        key: Bytes::from(format!("many:{index}")),
                                        delta: 1,
                                    })
                                    .unwrap(),
                            );
                        }
                    }
                    Some(other) => panic!("session {index}: unexpected answer {other:?}"),
                    None => still.push(submitted),
                }
            }
            pending[index] = still;
        }
        if !progressed {
            if let Some((index, first)) = pending
                .iter()
                .enumerate()
                .find_map(|(index, queue)| queue.first().map(|first| (index, first)))
            {
                sessions[index].wait_for_answers(first, Duration::from_millis(5));
            }
        }
    }
    for (index, values) in seen.iter_mut().enumerate() {
        values.sort_unstable();
        assert_eq!(
            *values,
            (1..=ROUNDS as i64).collect::<Vec<_>>(),
            "session {index} saw every INCR's own answer once"
        );
    }
    // A GET through submit copies the value out like execute.
    let session = &sessions[0];
    let submitted = session
        .submit(Request::Get {
            key: Bytes::from_static(b"many:3"),
        })
        .unwrap();
    let answer = loop {
        if let Some(answer) = session.try_complete(&submitted).unwrap() {
            break answer;
        }
        session.wait_for_answers(&submitted, Duration::from_millis(5));
    };
    match answer {
        Response::Value { value, .. } => assert_eq!(&value[..], ROUNDS.to_string().as_bytes()),
        other => panic!("unexpected answer {other:?}"),
    }
    drop(sessions);
    server.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// 2. Eight processes hammering overlapping keys.

const HAMMER_PROCESSES: usize = 8;
const HAMMER_OPS: usize = 2000;
/// 25 counters and 25 shared values: 50 keys every process uses.
const HAMMER_KEYS: usize = 25;

fn counter_key(k: usize) -> Bytes {
    Bytes::from(vec![b'c', 0xff, 0x00, k as u8])
}

fn shared_key(k: usize) -> Bytes {
    Bytes::from(vec![b's', 0x00, 0xfe, k as u8])
}

/// A value process `process` writes at step `step`: a tag, then a length, then a fill byte
/// repeated; [`check_tagged`] recognises every such value and nothing torn or mixed.
fn tagged(process: u8, step: u32) -> Vec<u8> {
    let len = (step as usize * 13 + process as usize * 101) % 1500;
    let fill = fill_byte(process, step);
    let mut value = vec![process];
    value.extend_from_slice(&step.to_le_bytes());
    value.extend_from_slice(&(len as u32).to_le_bytes());
    value.resize(9 + len, fill);
    value
}

fn fill_byte(process: u8, step: u32) -> u8 {
    ((process as u32 * 31 + step * 7) % 251) as u8
}

fn check_tagged(value: &[u8]) {
    assert!(value.len() >= 9, "a value no process wrote: {value:?}");
    let process = value[0];
    let step = u32::from_le_bytes(value[1..5].try_into().unwrap());
    let len = u32::from_le_bytes(value[5..9].try_into().unwrap()) as usize;
    assert!(
        (process as usize) < HAMMER_PROCESSES && value.len() == 9 + len,
        "a value no process wrote (process {process}, length {len}, {} bytes)",
        value.len()
    );
    assert_eq!(
        value,
        &tagged(process, step)[..],
        "a torn or mixed value (process {process}, step {step})"
    );
}

fn check_counter(value: &[u8]) {
    let text = std::str::from_utf8(value).expect("a counter is text");
    text.parse::<i64>().expect("a counter is an integer");
}

fn role_hammer(args: &[&str]) {
    let name = args[0];
    let process: u8 = args[1].parse().unwrap();
    let ops: usize = args[2].parse().unwrap();
    let mut rng = Rng::new(args[3].parse().unwrap());
    let client = Client::connect_local(name).unwrap();
    let local = client.local().unwrap();
    let mut totals = [0i64; HAMMER_KEYS];
    let mut step = 0u32;
    for _ in 0..ops {
        let k = rng.below(HAMMER_KEYS as u64) as usize;
        match rng.below(10) {
            0..=3 => {
                let delta = 1 + rng.below(3) as i64;
                client.incr(counter_key(k), delta).unwrap();
                totals[k] += delta;
            }
            4 | 5 => {
                step += 1;
                client
                    .set(shared_key(k), tagged(process, step), SetOptions::default())
                    .unwrap()
                    .expect("stored");
            }
            6 | 7 => {
                if let Some((value, _)) = client.get(shared_key(k)).unwrap() {
                    check_tagged(&value);
                }
            }
            8 => {
                let asked = Instant::now();
                match local.get_view(shared_key(k)).unwrap() {
                    GetResult::View(view) => {
                        assert!(view.mapping_contains(view.as_ptr()));
                        let bytes = view.bytes().to_vec();
                        fence(Ordering::Acquire);
                        if view.is_current() {
                            check_tagged(&bytes);
                        } else {
                            // Only possible past the view lease (10 s by default).
                            assert!(
                                asked.elapsed() > Duration::from_secs(5),
                                "a fresh view was reused within its lease"
                            );
                        }
                    }
                    GetResult::Copied(value, _) => check_tagged(&value),
                    GetResult::NotFound => {}
                }
            }
            _ => {
                step += 1;
                let delta = 1 + rng.below(3) as i64;
                let other = rng.below(HAMMER_KEYS as u64) as usize;
                let requests = vec![
                    Request::Incr {
                        key: counter_key(k),
                        delta,
                    },
                    Request::Set {
                        key: shared_key(other),
                        value: tagged(process, step).into(),
                        options: SetOptions::default(),
                    },
                    Request::Get { key: shared_key(k) },
                    Request::MGet {
                        keys: vec![shared_key(k), counter_key(other), shared_key(other)],
                    },
                ];
                let answers = local.execute_many(&requests).unwrap();
                totals[k] += delta;
                assert!(
                    matches!(answers[0], Response::Integer { .. }),
                    "{answers:?}"
                );
                assert!(matches!(answers[1], Response::Stored { .. }), "{answers:?}");
                match &answers[2] {
                    Response::Value { value, .. } => check_tagged(value),
                    Response::NotFound => {}
                    other => panic!("GET: {other:?}"),
                }
                match &answers[3] {
                    Response::Values(values) => {
                        assert_eq!(values.len(), 3);
                        if let Some((value, _)) = &values[0] {
                            check_tagged(value);
                        }
                        if let Some((value, _)) = &values[1] {
                            check_counter(value);
                        }
                        // (Our SET went to the key's core, this MGET to core 0: either order.)
                        if let Some((value, _)) = &values[2] {
                            check_tagged(value);
                        }
                    }
                    other => panic!("MGET: {other:?}"),
                }
            }
        }
    }
    let totals: Vec<String> = totals.iter().map(|t| t.to_string()).collect();
    say(&format!("TOTALS {}", totals.join(",")));
}

#[test]
fn eight_processes_hammer_overlapping_keys() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(&name, &["--cores", "2"]);
    let mut rng = Rng::seeded(
        "VEDDB_LOCAL_SEED",
        "eight_processes_hammer_overlapping_keys",
    );
    let started = Instant::now();
    let ops = HAMMER_OPS.to_string();
    let mut children: Vec<Proc> = (0..HAMMER_PROCESSES)
        .map(|process| {
            let seed = rng.next().to_string();
            spawn_role("hammer", &[&name, &process.to_string(), &ops, &seed])
        })
        .collect();
    let mut expected = [0i64; HAMMER_KEYS];
    for child in &mut children {
        let totals = child.expect("TOTALS ");
        for (k, total) in totals.split(',').enumerate() {
            expected[k] += total.parse::<i64>().unwrap();
        }
        child.finish();
    }
    eprintln!(
        "{HAMMER_PROCESSES} processes × {HAMMER_OPS} ops in {:?}",
        started.elapsed()
    );
    let client = server.client();
    for (k, expected) in expected.iter().enumerate() {
        let found = match client.get(counter_key(k)).unwrap() {
            Some((value, _)) => std::str::from_utf8(&value).unwrap().parse::<i64>().unwrap(),
            None => 0,
        };
        assert_eq!(found, *expected, "counter {k}: lost or doubled increments");
    }
    for k in 0..HAMMER_KEYS {
        if let Some((value, _)) = client.get(shared_key(k)).unwrap() {
            check_tagged(&value);
        }
    }
    assert_eq!(client.info().unwrap().shards.len(), 2);
    drop(client);
    server.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// 3. Pub/sub fan-out to local subscriber processes.

/// Below the per-subscriber queue (4096 messages, 8 MiB): nothing may be dropped.
const FAN_OUT_MESSAGES: usize = 2000;
const _: () = assert!(FAN_OUT_MESSAGES < veddb_wire::limits::SUBSCRIBER_QUEUE_MESSAGES_DEFAULT);

fn fan_out_message(i: usize) -> Vec<u8> {
    let mut message = (i as u32).to_le_bytes().to_vec();
    message.extend(std::iter::repeat_n((i % 251) as u8, i % 300));
    message
}

fn role_subscriber(args: &[&str]) {
    let (name, topic) = (args[0], args[1]);
    let count: usize = args[2].parse().unwrap();
    let client = Client::connect_local(name).unwrap();
    let mut subscription = client.subscribe(topic.to_string()).unwrap();
    say("READY");
    let deadline = Instant::now() + LINE_TIMEOUT;
    let mut received = 0;
    let mut dropped_total = 0;
    while received < count {
        assert!(
            Instant::now() < deadline,
            "only {received} of {count} messages"
        );
        match subscription.next() {
            Some(Ok(SubscribeEvent::Message { message, dropped })) => {
                dropped_total += dropped;
                assert_eq!(
                    message,
                    fan_out_message(received),
                    "message {received} out of order or damaged"
                );
                received += 1;
            }
            other => panic!("after {received} messages: {other:?}"),
        }
    }
    say(&format!("GOT {received} {dropped_total}"));
}

fn role_publisher(args: &[&str]) {
    let (name, topic) = (args[0], args[1]);
    let count: usize = args[2].parse().unwrap();
    let receivers: u32 = args[3].parse().unwrap();
    let client = Client::connect_local(name).unwrap();
    for i in 0..count {
        assert_eq!(
            client
                .publish(topic.to_string(), fan_out_message(i))
                .unwrap(),
            receivers,
            "message {i} reached the wrong number of subscribers"
        );
    }
    say("PUBLISHED");
}

#[test]
fn pubsub_fan_out_to_local_subscribers() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(&name, &["--cores", "2"]);
    let topic = "fan-out";
    let count = FAN_OUT_MESSAGES.to_string();
    let mut subscribers: Vec<Proc> = (0..4)
        .map(|_| spawn_role("subscriber", &[&name, topic, &count]))
        .collect();
    for subscriber in &mut subscribers {
        subscriber.expect("READY");
    }
    let started = Instant::now();
    let mut publisher = spawn_role("publisher", &[&name, topic, &count, "4"]);
    publisher.expect("PUBLISHED");
    publisher.finish();
    for subscriber in &mut subscribers {
        let got = subscriber.expect("GOT ");
        assert_eq!(
            got,
            format!("{FAN_OUT_MESSAGES} 0"),
            "{}: received, dropped",
            subscriber.label
        );
        subscriber.finish();
    }
    eprintln!(
        "{FAN_OUT_MESSAGES} messages to 4 subscriber processes in {:?}",
        started.elapsed()
    );
    let info = server.client().info().unwrap().total();
    assert_eq!(info.messages_dropped, 0, "{info:?}");
    assert!(
        info.messages_delivered >= 4 * FAN_OUT_MESSAGES as u64,
        "{info:?}"
    );
    server.stop_cleanly();
}

/// A topic (or key) owned by `core` of `cores`.
fn topic_on(core: u32, cores: u32, tag: &str) -> String {
    common::name_on(core, cores, tag)
}

/// The next message of a subscription, within [`LINE_TIMEOUT`].
fn pushed_message(subscription: &mut veddb_client::BlockingSubscription<'_>) -> (Bytes, u64) {
    match subscription.receive(LINE_TIMEOUT) {
        Ok(veddb_client::Received::Message { message, dropped }) => (message, dropped),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Pushed subscriptions (the core writes their messages into the subscriber's ring, unasked):
/// topics on both cores through one connection, deliveries that arrive while the same
/// connection waits for its own answers, in order and intact; messages larger than the
/// session's frames arrive whole, in parts, published locally (uploaded) or over gRPC, between
/// small ones; unsubscribing stops the pushes; a subscriber process
/// killed mid-stream leaves no subscription behind, and the server serves on.
#[test]
fn pushed_subscriptions_deliver_on_every_core() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(&name, &["--cores", "2"]);
    let topics = [topic_on(0, 2, "push"), topic_on(1, 2, "push")];
    let subscriber = server.client();
    let publisher = server.client();
    let mut subscriptions: Vec<_> = topics
        .iter()
        .map(|topic| subscriber.subscribe(topic.clone()).unwrap())
        .collect();
    let messages = 500;
    for i in 0..messages {
        for topic in &topics {
            assert_eq!(
                publisher
                    .publish(topic.clone(), fan_out_message(i))
                    .unwrap(),
                1
            );
        }
        // The subscriber's own requests, on both cores, while deliveries arrive there: the
        // deliveries read on the way to an answer wait for `receive`.
        if i % 50 == 0 {
            for core in 0..2 {
                let key = topic_on(core, 2, &format!("own-{i}"));
                subscriber
                    .set(key.clone(), "v", SetOptions::default())
                    .unwrap();
                assert_eq!(&subscriber.get(key).unwrap().unwrap().0[..], b"v");
            }
            assert_eq!(subscriber.publish(topics[1].clone(), "own").unwrap(), 1);
        }
    }
    for (t, subscription) in subscriptions.iter_mut().enumerate() {
        for i in 0..messages {
            if t == 1 && i % 50 == 1 {
                assert_eq!(pushed_message(subscription), (Bytes::from("own"), 0));
            }
            assert_eq!(
                pushed_message(subscription),
                (Bytes::from(fan_out_message(i)), 0),
                "topic {t}, message {i}"
            );
        }
        assert_eq!(
            subscription.receive(Duration::from_millis(50)).unwrap(),
            veddb_client::Received::Timeout
        );
    }

    // Larger than any frame of the session's 1 MiB rings: pushed in parts, whole and in
    // order with the small messages around them, on both cores; published over gRPC and
    // locally (where the message itself goes ahead as an upload).
    let grpc = Client::connect_grpc(&listening_address(&server.log()).expect("gRPC address"))
        .expect("gRPC connect");
    for (t, topic) in topics.iter().enumerate() {
        let mut rng = Rng::new(t as u64 + 7);
        let mut huge = vec![0u8; (600 << 10) + t];
        rng.fill(&mut huge);
        let mut larger = vec![0u8; (3 << 20) + 5];
        rng.fill(&mut larger);
        assert_eq!(grpc.publish(topic.clone(), huge.clone()).unwrap(), 1);
        assert_eq!(publisher.publish(topic.clone(), "between").unwrap(), 1);
        assert_eq!(publisher.publish(topic.clone(), larger.clone()).unwrap(), 1);
        assert_eq!(publisher.publish(topic.clone(), "after").unwrap(), 1);
        let subscription = &mut subscriptions[t];
        assert!(pushed_message(subscription) == (Bytes::from(huge), 0));
        assert_eq!(pushed_message(subscription), (Bytes::from("between"), 0));
        assert!(pushed_message(subscription) == (Bytes::from(larger), 0));
        assert_eq!(pushed_message(subscription), (Bytes::from("after"), 0));
    }
    // Below the frame limit, large messages arrive whole.
    let large = Bytes::from(vec![4u8; 300 << 10]);
    assert_eq!(
        publisher.publish(topics[0].clone(), large.clone()).unwrap(),
        1
    );
    assert_eq!(pushed_message(&mut subscriptions[0]), (large, 0));

    // Unsubscribed: no one receives.
    subscriptions.clear();
    for topic in &topics {
        assert_eq!(publisher.publish(topic.clone(), "gone").unwrap(), 0);
    }
    let info = publisher.info().unwrap().total();
    assert_eq!(info.subscribers, 0, "{info:?}");
    assert_eq!(info.messages_dropped, 0, "{info:?}");

    // A subscriber process killed while messages stream to it.
    let mut doomed = spawn_role("subscriber", &[&name, &topics[1], "1000000"]);
    doomed.expect("READY");
    for i in 0..200 {
        assert_eq!(
            publisher
                .publish(topics[1].clone(), fan_out_message(i))
                .unwrap(),
            1
        );
    }
    let pid = doomed.pid;
    doomed.kill();
    server.wait_detached(pid);
    let deadline = Instant::now() + DETACH_TIMEOUT;
    while publisher.publish(topics[1].clone(), "anyone?").unwrap() != 0 {
        assert!(
            Instant::now() < deadline,
            "the dead subscriber's subscription stayed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The server serves on: a new subscriber gets what is published next.
    let mut again = subscriber.subscribe(topics[1].clone()).unwrap();
    assert_eq!(publisher.publish(topics[1].clone(), "next").unwrap(), 1);
    assert_eq!(pushed_message(&mut again), (Bytes::from("next"), 0));
    drop(again);
    drop(subscriptions);
    drop((subscriber, publisher, grpc));
    server.stop_cleanly();
}

/// Deliveries a connection reads while it waits for its own answers wait in the subscription's
/// inbox in the client, which is bounded too (65,536 messages): a subscriber that keeps making
/// requests on the topic's core and never receives loses the oldest messages there, and is told
/// how many, exactly as by the server's queue.
#[test]
fn a_pushed_subscription_that_is_never_received_is_bounded_in_the_client() {
    const INBOX_MESSAGES_MAX: u64 = 65_536;
    const ROUNDS: u64 = 80;
    const PER_ROUND: u64 = 1000;
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(&name, &["--cores", "2"]);
    let topic = topic_on(1, 2, "inbox");
    let key = topic_on(1, 2, "inbox-key");
    let subscriber = server.client();
    let publisher = server.client();
    let mut subscription = subscriber.subscribe(topic.clone()).unwrap();
    subscriber
        .set(key.clone(), "v", SetOptions::default())
        .unwrap();
    for round in 0..ROUNDS {
        let requests: Vec<Request> = (0..PER_ROUND)
            .map(|i| Request::Publish {
                topic: Bytes::from(topic.clone()),
                message: Bytes::from((round * PER_ROUND + i).to_le_bytes().to_vec()),
            })
            .collect();
        for answer in publisher.execute_many(requests).unwrap() {
            assert_eq!(answer.unwrap(), Response::Published { receivers: 1 });
        }
        // Far fewer than the server's queue (4,096) wait there or in the ring: the GETs on the
        // topic's core read the deliveries before their answers into the inbox.
        for _ in 0..2 {
            assert_eq!(&subscriber.get(key.clone()).unwrap().unwrap().0[..], b"v");
        }
    }
    let published = ROUNDS * PER_ROUND;
    let mut received = Vec::new();
    let mut dropped_total = 0;
    while let Ok(veddb_client::Received::Message { message, dropped }) =
        subscription.receive(Duration::from_millis(200))
    {
        let number = u64::from_le_bytes(message[..].try_into().unwrap());
        if let Some(&last) = received.last() {
            assert_eq!(number, last + 1 + dropped, "the gap is told exactly");
        } else {
            assert_eq!(
                number, dropped,
                "the first message says how many went before it"
            );
        }
        dropped_total += dropped;
        received.push(number);
    }
    eprintln!(
        "{published} published, {} received, {dropped_total} dropped",
        received.len()
    );
    // All but the last round or so went through the inbox: at least 80,000 - 2,000 messages,
    // of which it held 65,536.
    assert!(dropped_total > 0, "the inbox dropped its oldest");
    assert!(
        received.len() as u64 <= INBOX_MESSAGES_MAX + 2 * PER_ROUND,
        "{} received: the inbox is not bounded",
        received.len()
    );
    assert_eq!(received.len() as u64 + dropped_total, published);
    assert_eq!(
        *received.last().unwrap(),
        published - 1,
        "the newest are kept"
    );
    let info = publisher.info().unwrap().total();
    assert_eq!(
        info.messages_dropped, 0,
        "the server's queue dropped none: {info:?}"
    );
    drop(subscription);
    drop((subscriber, publisher));
    server.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// 4. A client killed mid-request, or while it holds a zero-copy view.

fn role_looper(args: &[&str]) {
    let name = args[0];
    let client = Client::connect_local(name).unwrap();
    let local = client.local().unwrap();
    let me = std::process::id();
    let started = Instant::now();
    let mut i: u64 = 0;
    while started.elapsed() < CHILD_LIFETIME_MAX {
        let key = Bytes::from(format!("loop-{me}-{}", i % 16));
        let requests = [
            Request::Set {
                key: key.clone(),
                value: Bytes::from(vec![(i % 256) as u8; 1 + (i % 3000) as usize]),
                options: SetOptions::default(),
            },
            Request::Get { key: key.clone() },
            Request::Incr {
                key: "loop-counter".into(),
                delta: 1,
            },
            Request::MGet {
                keys: vec![key, "loop-counter".into()],
            },
        ];
        local.execute_many(&requests).unwrap();
        let _ = local
            .get_view(format!("loop-{me}-{}", (i + 1) % 16))
            .unwrap();
        i += 1;
        if i == 20 {
            say("LOOPING");
        }
    }
}

fn role_view_holder(args: &[&str]) {
    let (name, key) = (args[0], unhex(args[1]));
    let expected_len: usize = args[2].parse().unwrap();
    let client = Client::connect_local(name).unwrap();
    let view = match client.local().unwrap().get_view(key).unwrap() {
        GetResult::View(view) => view,
        other => panic!("expected a view, got {other:?}"),
    };
    assert!(view.mapping_contains(view.as_ptr()));
    assert_eq!(view.bytes().len(), expected_len);
    assert!(view.is_current());
    say("HOLDING");
    let started = Instant::now();
    while started.elapsed() < CHILD_LIFETIME_MAX {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(view);
}

/// Another client, in a thread of the test process, that must keep working throughout.
struct Bystander {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Bystander {
    fn start(name: &str) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let name = name.to_string();
        let thread = {
            let (stop, ops) = (stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let client = Client::connect_local(&name).unwrap();
                let mut i: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("bystander-{}", i % 8);
                    let value = i.to_le_bytes().repeat(1 + (i % 64) as usize);
                    client
                        .set(key.clone(), value.clone(), SetOptions::default())
                        .unwrap();
                    assert_eq!(&client.get(key).unwrap().unwrap().0[..], &value[..]);
                    assert_eq!(client.incr("bystander-n", 1).unwrap(), i as i64 + 1);
                    i += 1;
                    ops.store(i, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Bystander {
            stop,
            ops,
            thread: Some(thread),
        }
    }

    fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    /// Waits until it made `more` further rounds.
    fn wait_progress(&self, more: u64) {
        let target = self.ops() + more;
        let deadline = Instant::now() + LINE_TIMEOUT;
        while self.ops() < target {
            assert!(
                !self.thread.as_ref().unwrap().is_finished(),
                "the other client failed (its panic is above)"
            );
            assert!(Instant::now() < deadline, "the other client stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(panic) = self.thread.take().unwrap().join() {
            std::panic::resume_unwind(panic);
        }
        self.ops()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_client_killed_mid_request_leaves_others_served() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    // One core, a small budget (so a small arena: 2 × 4 MiB + 16 MiB) and a long view lease: a
    // pin of a dead client that were still honoured would fill the arena below.
    let mut server = Server::start(
        &name,
        &[
            "--cores",
            "1",
            "--memory-mb",
            "4",
            "--shm-view-lease-ms",
            "600000",
        ],
    );
    let bystander = Bystander::start(&name);
    bystander.wait_progress(5);

    // Clients in a tight, pipelined request loop, SIGKILLed one after the other.
    for round in 0..3 {
        let mut looper = spawn_role("looper", &[&name]);
        looper.expect("LOOPING");
        std::thread::sleep(Duration::from_millis(20 + 60 * round));
        let pid = looper.pid;
        looper.kill();
        let took = server.wait_detached(pid);
        eprintln!("looper {pid} SIGKILLed: detached after {took:?}");
        bystander.wait_progress(3);
    }

    // A client holding a zero-copy view of a 64 KiB value (a 128 KiB block).
    let client = server.client();
    let local = client.local().unwrap();
    let key = Bytes::from_static(b"viewed\x00key");
    let value_len = 64 << 10;
    client
        .set(key.clone(), vec![7u8; value_len], SetOptions::default())
        .unwrap();
    let mut holder = spawn_role("view_holder", &[&name, &hex(&key), &value_len.to_string()]);
    holder.expect("HOLDING");
    let pid = holder.pid;
    holder.kill();
    let took = server.wait_detached(pid);
    eprintln!("view holder {pid} SIGKILLed: detached after {took:?}");
    // Overwrites proceed, and the blocks they free are reused: with the dead client's pin
    // still honoured, 600 blocks of 128 KiB would not fit the 24 MiB arena and later values
    // would come back copied instead of in place.
    let mut places = std::collections::HashSet::new();
    for i in 0..600usize {
        let value = vec![(i % 251) as u8; value_len];
        client
            .set(key.clone(), value.clone(), SetOptions::default())
            .unwrap()
            .expect("stored");
        match local.get_view(key.clone()).unwrap() {
            GetResult::View(view) => {
                assert_eq!(view.bytes(), &value[..]);
                places.insert(view.as_ptr() as usize);
            }
            GetResult::Copied(..) => panic!(
                "overwrite {i}: the value no longer fits the arena (blocks not reclaimed after \
                 the view holder died)"
            ),
            GetResult::NotFound => panic!("overwrite {i}: the key vanished"),
        }
    }
    eprintln!("600 overwrites used {} distinct blocks", places.len());
    assert!(places.len() < 190, "{} blocks", places.len());
    let info = client.info().unwrap();
    assert_eq!(info.shards.len(), 1);
    assert_eq!(client.get(key.clone()).unwrap().unwrap().0.len(), value_len);
    client.set("after", "fine", SetOptions::default()).unwrap();
    assert_eq!(&client.get("after").unwrap().unwrap().0[..], b"fine");
    bystander.wait_progress(3);
    let ops = bystander.finish();
    eprintln!("the other client made {ops} rounds throughout");
    drop(client);
    server.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// 5. A client writing garbage into its rings.

/// A well-behaved client process: SET/GET/INCR until told to stop, reporting progress.
fn role_worker(args: &[&str]) {
    let name = args[0];
    let stop = stop_flag();
    let client = Client::connect_local(name).unwrap();
    let me = std::process::id();
    let mut i: u64 = 0;
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < CHILD_LIFETIME_MAX {
        let key = format!("worker-{me}-{}", i % 10);
        let value = format!("{i}-{}", "v".repeat((i % 200) as usize));
        client
            .set(key.clone(), value.clone(), SetOptions::default())
            .unwrap()
            .expect("stored");
        assert_eq!(&client.get(key).unwrap().unwrap().0[..], value.as_bytes());
        assert_eq!(
            client.incr(format!("worker-{me}-n"), 1).unwrap(),
            i as i64 + 1
        );
        i += 1;
        if i.is_multiple_of(50) {
            say(&format!("OPS {i}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    say(&format!("DONE {i}"));
}

/// Attaches by hand (no client library) and writes garbage into core 0's request ring:
/// `random` fills the ring where the server reads next (and somewhere else) with random bytes,
/// `aligned` the same with a plausible header word (the flags right, the length random) where
/// the server reads next, so the frames are what is wrong, `frame` writes one well-formed frame
/// whose payload is random. Reports what the server did, then stays attached until the parent
/// closes its stdin.
fn role_garbage(args: &[&str]) {
    use veddb_shm::{recv_with_fds, ByteRing, EventFd, Segment};
    let (name, mode) = (args[0], args[1]);
    let mut rng = Rng::new(args[2].parse().unwrap());
    let file = Segment::open_named(Path::new(&instance::path(name)), false).unwrap();
    let mut page = vec![0u8; instance::FILE_BYTES];
    file.read_bytes(0, &mut page);
    let header = instance::InstanceHeader::read(&page).unwrap();
    let cores = header.core_count as usize;
    let socket = std::os::unix::net::UnixStream::connect(instance::socket_path(name)).unwrap();
    (&socket).write_all(attach::HELLO).unwrap();
    let mut reply = vec![0u8; 4096];
    let (length, fds) = recv_with_fds(&socket, &mut reply, cores * 3).unwrap();
    let reply = attach::AttachReply::decode(&reply[..length]).expect("attached");
    assert_eq!(fds.len(), cores * 3);
    let ring = Arc::new(Segment::map_fd(fds[cores].as_fd(), true).unwrap());
    let wake = EventFd::from_fd(fds[2 * cores].try_clone().unwrap());
    let size = reply.request_ring_bytes as usize;
    let status = || ring.load_u32(ring_segment::SERVER_STATUS_OFFSET, Ordering::Acquire);
    let disconnected = || status() == ring_segment::SERVER_DISCONNECTED;
    let header_at = |position: usize| ring.atomic_u64(ring_segment::REQUEST_RING_OFFSET + position);
    let started = Instant::now();
    let mut outcome = None;
    match mode {
        "random" | "aligned" => {
            let mut chunk = vec![0u8; 4096];
            let mut rounds = 0;
            while !disconnected() && started.elapsed() < LINE_TIMEOUT {
                // Garbage where the server reads next, and somewhere else.
                let head = ring.load_u64(ring_segment::REQUEST_HEAD_OFFSET, Ordering::Acquire);
                for position in [head as usize % size, rng.below(size as u64) as usize] {
                    rng.fill(&mut chunk);
                    let position = position.min(size - chunk.len());
                    ring.write_bytes(ring_segment::REQUEST_RING_OFFSET + position, &chunk);
                }
                if mode == "aligned" {
                    // The flags right, the length anything: too large, past the end, or a
                    // frame of random bytes.
                    let length = match rounds % 2 {
                        0 => rng.next() as u32,
                        _ => rng.below(size as u64) as u32,
                    };
                    header_at(head as usize % size)
                        .store(ring_format::header_word(length), Ordering::Release);
                }
                let _ = wake.write(1);
                rounds += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        "frame" => {
            let payload_len = 64 + rng.below(200) as usize;
            let mut payload = vec![0u8; payload_len];
            // A payload that does not decode. Random bytes now and then make a well-formed
            // request, or one whose only fault is a count over a batch limit, which the server
            // answers with an error for that request (docs/shm-layout.md): draw again then.
            loop {
                rng.fill(&mut payload);
                match veddb_wire::shm::codec::decode_request(&payload) {
                    Err(error)
                        if !matches!(
                            error.kind,
                            veddb_wire::shm::codec::DecodeErrorKind::TooMany { .. }
                        ) =>
                    {
                        break
                    }
                    _ => {}
                }
            }
            ring.write_bytes(ring_segment::REQUEST_RING_OFFSET + 8, &payload);
            header_at(0).store(
                ring_format::header_word(payload_len as u32),
                Ordering::Release,
            );
            let _ = wake.write(1);
            let responses = ByteRing {
                head_offset: ring_segment::RESPONSE_HEAD_OFFSET,
                data_offset: ring_segment::response_ring_offset(reply.request_ring_bytes),
                size: reply.response_ring_bytes as usize,
            };
            let mut responses = responses.consumer(ring.clone()).unwrap();
            while !disconnected() && started.elapsed() < LINE_TIMEOUT {
                if let Ok(Some(frame)) = responses.peek() {
                    let mut answer = Vec::new();
                    responses.copy_payload(&frame, &mut answer);
                    let described = veddb_wire::shm::codec::decode_response(&answer)
                        .map(|(id, frame)| format!("request {id}: {frame:?}"))
                        .unwrap_or_else(|error| format!("undecodable: {error}"));
                    outcome = Some(format!("ANSWERED {}", described.replace('\n', " ")));
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        other => panic!("unknown garbage mode {other}"),
    }
    let outcome = outcome.unwrap_or_else(|| {
        if disconnected() {
            format!(
                "DISCONNECTED {}",
                ring.load_u32(ring_segment::DISCONNECT_REASON_OFFSET, Ordering::Acquire)
            )
        } else {
            "IGNORED".to_string()
        }
    });
    say(&format!("OUTCOME {outcome}"));
    // Stay attached (socket open) until the parent is done looking.
    while hear().is_some() {}
    drop(socket);
}

fn garbage_round(server: &Server, worker: &mut Proc, mode: &str, seed: u64) {
    worker.expect_fresh("OPS ");
    let mut garbage = spawn_role("garbage", &[&server.name, mode, &seed.to_string()]);
    let outcome = garbage.expect("OUTCOME ");
    let pid_field = format!("pid={}", garbage.pid);
    let code: Option<u32> = outcome
        .strip_prefix("DISCONNECTED ")
        .map(|code| code.parse().unwrap());
    let mut disconnect_line = String::new();
    if code.is_some() {
        // The session id of the garbage writer, from its attach line.
        server.wait_log("the attach line of the garbage writer", |line| {
            line.contains("local client attached")
                && line.split_whitespace().any(|word| word == pid_field)
        });
        let log = server.log();
        let session = log
            .lines()
            .find(|line| {
                line.contains("local client attached")
                    && line.split_whitespace().any(|word| word == pid_field)
            })
            .and_then(|line| {
                line.split_whitespace()
                    .find(|word| word.starts_with("session="))
            })
            .expect("an attach line")
            .to_string();
        server.wait_log("the disconnect of the garbage writer", |line| {
            line.contains("disconnecting a local client")
                && line.split_whitespace().any(|word| word == session)
        });
        disconnect_line = server
            .log()
            .lines()
            .find(|line| {
                line.contains("disconnecting a local client")
                    && line.split_whitespace().any(|word| word == session)
            })
            .unwrap()
            .to_string();
        // The session ends while the process still lives: because of the bad input.
        server.wait_log("the detach of the garbage writer", |line| {
            line.contains("local client detached: disconnected by a core (bad input)")
                && line.split_whitespace().any(|word| word == pid_field)
        });
    }
    // The well-behaved client is still served, during and after.
    worker.expect_fresh("OPS ");
    garbage.finish();
    worker.expect_fresh("OPS ");

    let Some(code) = code else {
        panic!(
            "{mode} garbage: the server did not disconnect the client, it {outcome}; the \
             log:\n{}",
            server.log()
        )
    };
    let allowed = match mode {
        // docs/shm-layout.md: "A decode error disconnects with reason 2".
        "frame" => &[reason::BAD_FRAME][..],
        // Frame errors: reason 2, or 3 for a length over the largest payload.
        // Anything else: frame errors too (the consumer of a request ring reads no counter of
        // the client's since layout version 2, only header words).
        _ => &[reason::BAD_FRAME, reason::FRAME_TOO_LARGE][..],
    };
    assert!(
        allowed.contains(&code),
        "{mode} garbage: disconnect reason {code} ({}) in the ring header; the server \
         logged:\n{disconnect_line}",
        reason::describe(code)
    );
    let described = format!("reason=\"{}\"", reason::describe(code));
    assert!(
        disconnect_line.contains(&described),
        "the log names the reason of the ring header ({described}): {disconnect_line}"
    );
}

#[test]
fn a_client_writing_garbage_is_disconnected_and_others_are_not() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(&name, &["--cores", "2"]);
    let mut rng = Rng::seeded(
        "VEDDB_LOCAL_SEED",
        "a_client_writing_garbage_is_disconnected_and_others_are_not",
    );
    let mut worker = spawn_role("worker", &[&name]);
    for mode in ["random", "aligned", "random", "aligned"] {
        garbage_round(&server, &mut worker, mode, rng.next());
    }
    finish_worker(&server, worker);
    server.stop_cleanly();
}

fn finish_worker(server: &Server, mut worker: Proc) {
    worker.send("stop");
    let done: u64 = worker.expect("DONE ").parse().unwrap();
    worker.finish();
    eprintln!("the well-behaved client made {done} rounds throughout");
    // And new clients still attach.
    let client = server.client();
    client.ping().unwrap();
}

/// The variant with a well-formed frame header and a garbage payload (an unknown opcode or
/// fields that do not decode).
#[test]
fn a_client_writing_a_garbage_payload_is_disconnected_and_others_are_not() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut server = Server::start(&name, &["--cores", "2"]);
    let mut rng = Rng::seeded(
        "VEDDB_LOCAL_SEED",
        "a_client_writing_a_garbage_payload_is_disconnected_and_others_are_not",
    );
    let mut worker = spawn_role("worker", &[&name]);
    garbage_round(&server, &mut worker, "frame", rng.next());
    finish_worker(&server, worker);
    server.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// 6. A second --create on a live name.

#[test]
fn a_second_create_on_a_live_name_is_refused() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let mut first = Server::start(&name, &["--cores", "1"]);
    let client = first.client();
    client.set("owner", "first", SetOptions::default()).unwrap();

    let mut second = Server::spawn(&name, &["--cores", "1"]);
    let status = second.wait_exit();
    assert!(
        !status.success(),
        "a second --create on a live name must fail; its log:\n{}",
        second.log()
    );
    assert!(
        second.log().contains("in use"),
        "the refusal says the name is in use:\n{}",
        second.log()
    );
    // The first server is untouched.
    assert_eq!(&client.get("owner").unwrap().unwrap().0[..], b"first");
    drop(client);

    // A crashed server leaves a stale instance, which the next --create replaces.
    first.kill();
    for path in instance_files(&name) {
        assert!(Path::new(&path).exists(), "{path} stays after a SIGKILL");
    }
    let mut third = Server::start(&name, &["--cores", "1"]);
    assert!(
        third.log().contains("replacing a stale instance"),
        "{}",
        third.log()
    );
    let client = third.client();
    assert_eq!(client.get("owner").unwrap(), None, "a new, empty instance");
    client.set("owner", "third", SetOptions::default()).unwrap();
    assert_eq!(&client.get("owner").unwrap().unwrap().0[..], b"third");
    drop(client);
    third.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// 7. Zero-copy views: never torn, stable within the lease.

const VIEW_VALUE_BYTES: usize = 4096;
const ORIGINAL_BYTE: u8 = 0xA5;

fn uniform(value: &[u8]) -> bool {
    value.len() == VIEW_VALUE_BYTES && value.iter().all(|&b| b == value[0])
}

/// Overwrites one key with 4 KiB values of one repeated byte until told to stop; every read
/// (copied or in place) must be one such value.
fn role_overwriter(args: &[&str]) {
    let (name, key) = (args[0], unhex(args[1]));
    let minimum: u64 = args[2].parse().unwrap();
    let client = Client::connect_local(name).unwrap();
    let local = client.local().unwrap();
    say("READY");
    assert_eq!(hear().as_deref(), Some("go"));
    let stop = stop_flag();
    let started = Instant::now();
    let mut i: u64 = 0;
    let mut views_current = 0u64;
    while (i < minimum || !stop.load(Ordering::SeqCst)) && started.elapsed() < CHILD_LIFETIME_MAX {
        let byte = match (i % 255) as u8 + 1 {
            ORIGINAL_BYTE => 0x5A,
            byte => byte,
        };
        client
            .set(
                key.clone(),
                vec![byte; VIEW_VALUE_BYTES],
                SetOptions::default(),
            )
            .unwrap()
            .expect("stored");
        if i == 0 {
            say("STARTED");
        }
        // A new key too: it takes a free block for good, so the blocks freed once the lease
        // passed get used up, the viewed one among them (freed blocks are reused last in,
        // first out).
        client
            .set(
                format!("fill-{i}"),
                vec![byte; VIEW_VALUE_BYTES],
                SetOptions::default(),
            )
            .unwrap();
        let (value, _) = client.get(key.clone()).unwrap().expect("present");
        assert!(uniform(&value), "a torn GET after {i} overwrites");
        if i.is_multiple_of(4) {
            match local.get_view(key.clone()).unwrap() {
                GetResult::View(view) => {
                    let bytes = view.bytes().to_vec();
                    fence(Ordering::Acquire);
                    if view.is_current() {
                        views_current += 1;
                        assert!(uniform(&bytes), "a torn view after {i} overwrites");
                    }
                }
                GetResult::Copied(value, _) => assert!(uniform(&value)),
                GetResult::NotFound => panic!("the key vanished"),
            }
        }
        i += 1;
    }
    say(&format!("OVERWROTE {i} {views_current}"));
}

#[test]
fn get_view_is_zero_copy_and_overwrites_are_never_torn() {
    let name = unique_name("t");
    let _files = InstanceFiles(name.clone());
    let lease = Duration::from_millis(300);
    let mut server = Server::start(
        &name,
        &[
            "--cores",
            "1",
            "--shm-view-lease-ms",
            &lease.as_millis().to_string(),
            "--memory-mb",
            "256",
        ],
    );
    let client = server.client();
    let local = client.local().unwrap();
    let key = Bytes::from_static(b"view\xffkey");
    let original = vec![ORIGINAL_BYTE; VIEW_VALUE_BYTES];
    client
        .set(key.clone(), original.clone(), SetOptions::default())
        .unwrap();
    let mut overwriter = spawn_role("overwriter", &[&name, &hex(&key), "2000"]);
    overwriter.expect("READY");

    // The view's epoch is pinned after this instant; the server advances epochs at most once a
    // millisecond, so the pin is honoured until at least `taken + lease`.
    let taken = Instant::now();
    let view = match local.get_view(key.clone()).unwrap() {
        GetResult::View(view) => view,
        other => panic!("expected a view, got {other:?}"),
    };
    assert!(view.mapping_contains(view.as_ptr()), "not in the mapping");
    assert_eq!(view.bytes(), &original[..]);
    assert!(view.is_current());
    let address = view.as_ptr();

    // Within the lease: the overwrites cannot touch the viewed block. Checked only while well
    // inside it (the first 100 ms of a 300 ms lease, whose epochs advance at most once per ms),
    // and only once an overwrite was acknowledged; a slow machine skips this part.
    overwriter.send("go");
    let window = Duration::from_millis(100);
    let started_in_window = overwriter
        .next_line(window.saturating_sub(taken.elapsed()))
        .is_some_and(|line| line == "STARTED");
    let mut checks_in_lease = 0;
    if started_in_window {
        loop {
            let bytes = view.bytes().to_vec();
            fence(Ordering::Acquire);
            let current = view.is_current();
            if taken.elapsed() >= window {
                break;
            }
            assert_eq!(bytes, original, "the view changed within its lease");
            assert!(current, "the block was reused within the lease");
            assert_eq!(view.as_ptr(), address);
            checks_in_lease += 1;
        }
        // The overwrites really happened meanwhile.
        assert_ne!(client.get(key.clone()).unwrap().unwrap().0, original);
    } else {
        eprintln!("slow machine: the in-lease checks were skipped");
    }

    // Past the lease the block may be reused (or not): a read is trusted only when the view is
    // still current after it.
    while taken.elapsed() < lease + Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut current_reads = 0;
    let mut stale_reads = 0;
    let checking = Instant::now();
    while checking.elapsed() < Duration::from_secs(5)
        && (stale_reads < 1000 || checking.elapsed() < Duration::from_secs(1))
    {
        let bytes = view.bytes().to_vec();
        fence(Ordering::Acquire);
        if view.is_current() {
            assert_eq!(bytes, original, "a current view with changed bytes (torn)");
            current_reads += 1;
        } else {
            stale_reads += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    overwriter.send("stop");
    let report = overwriter.expect("OVERWROTE ");
    overwriter.finish();
    eprintln!(
        "overwrites (in-place reads current): {report}; checks within the lease: \
         {checks_in_lease}; after it: {current_reads} current, {stale_reads} reused"
    );
    drop(view);
    // A fresh view sees the latest value, whole.
    match local.get_view(key.clone()).unwrap() {
        GetResult::View(view) => {
            assert!(uniform(view.bytes()));
            assert_ne!(view.bytes()[0], ORIGINAL_BYTE);
        }
        other => panic!("expected a view, got {other:?}"),
    }
    drop(client);
    server.stop_cleanly();
}
