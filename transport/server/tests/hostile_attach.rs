//! Hostile clients at the attach side of the shared-memory frontend, against the real
//! `veddb-server` binary (issue 13, items 5, 6 and 8): connections that never finish their
//! handshake, a client killed while attached, the instance file under `--shm-mode 660` and
//! truncated under the server, sessions past `--max-sessions`, bytes on the attach socket after
//! the hello.
//!
//! The attackers are raw sockets or separate processes (this test binary run again,
//! `role_entry`) written against the documented layout (docs/shm-layout.md, "Attach handshake":
//! `veddb_wire::shm::layout` constants, std, and `veddb_shm`'s descriptor passing), never
//! through `veddb-client`. Each test runs a well-behaved client (`Client::connect_local`) beside
//! them and checks that the server stays up and answers local and gRPC requests, that the good
//! client's values are intact, and that the attacker gets the documented outcome. One server
//! per test, with a unique `--name` and `--port 0`. Timeouts are generous and nothing asserts a
//! duration tighter than what the old design could not meet at all. Linux only.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use veddb_client::Client;
use veddb_wire::shm::layout::{attach, instance, reason, ring_segment};
use veddb_wire::SetOptions;

mod common;
use common::unique_name;

const SERVER: &str = env!("CARGO_BIN_EXE_veddb-server");
/// The role a re-executed child plays; unset in the parent.
const ROLE_ENV: &str = "VEDDB_HOSTILE_ATTACH_ROLE";
/// The instance name a child attaches to.
const NAME_ENV: &str = "VEDDB_HOSTILE_ATTACH_NAME";
/// Generous: debug builds on small, busy machines.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The server's handshake deadline (docs/shm-layout.md, "Limits: attaching and sessions").
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
/// A child that waits to be killed gives up after this (so no child outlives a lost parent).
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// The server.

/// A `veddb-server --create --name NAME --port 0` this test started; killed when dropped (and
/// its instance files removed).
struct Server {
    name: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    fn spawn(name: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(SERVER)
            .args(["--create", "--name", name, "--port", "0", "--cores", "2"])
            .args(["--spin-us", "0", "--memory-mb", "16"])
            .args(extra)
            .env_remove("VEDDB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veddb-server");
        let stderr = child.stderr.take().expect("stderr piped");
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
        Server {
            name: name.to_string(),
            child: Some(child),
            log,
            reader: Some(reader),
        }
    }

    /// Starts a server and waits until a local client gets a PONG.
    fn start(extra: &[&str]) -> Server {
        let server = Server::spawn(&unique_name("ha"), extra);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut server = server;
        loop {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                server.child = None;
                server.join_reader();
                panic!(
                    "the server exited during start with {status}; its log:\n{}",
                    server.log()
                );
            }
            let log = server.log();
            if log.contains("local clients: shared memory ready") && log.contains("gRPC listening")
            {
                if let Ok(client) = Client::connect_local(&server.name) {
                    if client.ping().is_ok() {
                        // The probe's session ends before the test counts sessions.
                        drop(client);
                        server.wait_log_lines("the probe's detach", 1, |line| {
                            line.contains("local client detached")
                        });
                        return server;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server was not ready within {READY_TIMEOUT:?}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn client(&self) -> Client {
        Client::connect_local(&self.name).expect("attach to the local instance")
    }

    /// A gRPC client, on the address the server logged.
    fn grpc(&self) -> Client {
        let log = self.log();
        let line = log
            .lines()
            .find(|line| line.contains("gRPC listening"))
            .expect("the gRPC address was logged");
        let address = line[line.find("address=").expect("address=") + "address=".len()..]
            .split_whitespace()
            .next()
            .expect("an address");
        Client::connect_grpc(address).expect("connect over gRPC")
    }

    /// Waits until `count` log lines satisfy `found`; those lines.
    fn wait_log_lines(
        &self,
        what: &str,
        count: usize,
        found: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let started = Instant::now();
        loop {
            let lines: Vec<String> = self
                .log()
                .lines()
                .filter(|line| found(line))
                .map(str::to_string)
                .collect();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                started.elapsed() < LOG_TIMEOUT,
                "the server logged {} of {count} × {what} within {LOG_TIMEOUT:?}; its log:\n{}",
                lines.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The "local client detached" line of process `pid`.
    fn wait_detached(&self, pid: u32) -> String {
        let pid_field = format!("pid={pid}");
        self.wait_log_lines(&format!("the detach of pid {pid}"), 1, |line| {
            line.contains("local client detached")
                && line.split_whitespace().any(|word| word == pid_field)
        })
        .remove(0)
    }

    /// The server is up and serves both ways: a PONG over shared memory (a fresh attach) and
    /// over gRPC.
    fn assert_serving(&self) {
        assert!(
            self.child.as_ref().is_some(),
            "the server is gone; its log:\n{}",
            self.log()
        );
        self.client()
            .ping()
            .expect("a fresh local client is served");
        self.grpc().ping().expect("a gRPC client is served");
    }

    /// SIGTERM: the server must exit with 0, log "stopped" and remove its files.
    fn stop_cleanly(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM");
        let status = self.wait_exit();
        let log = self.log();
        assert!(
            status.success(),
            "SIGTERM must stop the server cleanly, not {status}; its log:\n{log}"
        );
        assert!(
            log.lines().any(|line| line.contains("stopped")),
            "the server must log that it stopped; its log:\n{log}"
        );
        for path in [
            instance::path(&self.name),
            instance::socket_path(&self.name),
        ] {
            assert!(
                !Path::new(&path).exists(),
                "{path} must be removed by a clean stop; the log:\n{log}"
            );
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                self.join_reader();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {EXIT_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
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
        for path in [
            instance::path(&self.name),
            instance::socket_path(&self.name),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Values the good client writes first and checks at the end, over both transports.
fn write_values(client: &Client, tag: &str) -> Vec<(String, String)> {
    let values: Vec<(String, String)> = (0..16)
        .map(|i| {
            (
                format!("{tag}-key-{i}"),
                format!("{tag}-value-{i}-{}", "x".repeat(i * 7)),
            )
        })
        .collect();
    for (key, value) in &values {
        client
            .set(key.clone(), value.clone(), SetOptions::default())
            .expect("the good client's SET");
    }
    values
}

fn assert_values(server: &Server, good: &Client, values: &[(String, String)]) {
    let grpc = server.grpc();
    for (key, value) in values {
        for (transport, client) in [("local", good), ("gRPC", &grpc)] {
            let got = client
                .get(key.clone())
                .unwrap_or_else(|error| panic!("{transport} GET {key}: {error}"));
            assert_eq!(
                got.map(|(bytes, _)| bytes.to_vec()),
                Some(value.as_bytes().to_vec()),
                "{transport} GET {key}: the good client's value must be intact"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The attacker's side: the handshake by hand, from docs/shm-layout.md.

/// Connects to the attach socket and sends nothing.
fn raw_connect(name: &str) -> UnixStream {
    UnixStream::connect(instance::socket_path(name)).expect("connect to the attach socket")
}

/// The server's whole answer on a connection (until it closes it), within a generous limit.
fn read_until_closed(stream: &mut UnixStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(LOG_TIMEOUT))
        .expect("set a read timeout");
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("the server answers and closes the connection");
    bytes
}

/// The reason of a refusal (`VEDDBNO!` then UTF-8), or a panic naming what came instead.
fn refusal_reason(bytes: &[u8]) -> String {
    match attach::AttachReply::decode(bytes) {
        Err(Ok(reason_text)) => reason_text,
        Ok(reply) => panic!("expected a refusal, got an attach reply {reply:?}"),
        Err(Err(error)) => panic!("expected a refusal, got {} bytes: {error}", bytes.len()),
    }
}

/// A raw attach: hello, then the reply with its descriptors.
struct RawSession {
    stream: UnixStream,
    reply: attach::AttachReply,
    fds: Vec<std::os::fd::OwnedFd>,
}

/// Attaches by hand; `Err(reason)` when the server refuses.
fn raw_attach(name: &str) -> Result<RawSession, String> {
    let stream = raw_connect(name);
    stream
        .set_read_timeout(Some(LOG_TIMEOUT))
        .expect("set a read timeout");
    (&stream).write_all(attach::HELLO).expect("send the hello");
    let mut bytes = vec![0u8; 4096];
    // The core count is at most 2 here (--cores 2): 3 descriptors per core.
    let (length, fds) =
        veddb_shm::recv_with_fds(&stream, &mut bytes, 3 * 2).expect("the attach reply");
    match attach::AttachReply::decode(&bytes[..length]) {
        Ok(reply) => {
            assert_eq!(
                fds.len(),
                3 * reply.core_count as usize,
                "the reply carries 3 descriptors per core"
            );
            Ok(RawSession { stream, reply, fds })
        }
        Err(Ok(reason_text)) => {
            assert!(fds.is_empty(), "a refusal carries no descriptors");
            Err(reason_text)
        }
        Err(Err(error)) => panic!("a bad attach reply: {error}"),
    }
}

/// `sessions=N` of a log line.
fn sessions_field(line: &str) -> usize {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("sessions="))
        .unwrap_or_else(|| panic!("no sessions= in {line:?}"))
        .parse()
        .expect("a session count")
}

// ---------------------------------------------------------------------------------------------
// The child side.

#[test]
fn role_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return; // The parent's run: nothing to do.
    };
    let name = std::env::var(NAME_ENV).expect("the instance name");
    match role.as_str() {
        // Attaches by hand, reports its session, then waits to be killed.
        "attached" => {
            let session = raw_attach(&name).expect("attached");
            let mut out = std::io::stdout().lock();
            writeln!(out, "@@ATTACHED {}", session.reply.session_id).unwrap();
            out.flush().unwrap();
            std::thread::sleep(CHILD_LIFETIME_MAX);
            drop(session);
        }
        other => panic!("unknown role {other}"),
    }
}

/// This test binary as a child playing `role` against instance `name`; its first report.
fn spawn_role(role: &str, name: &str) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "role_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_ENV, role)
        .env(NAME_ENV, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a child process");
    let stdout = child.stdout.take().expect("piped");
    // The child reports within moments or exits (its stdout then closes); it never lives
    // longer than CHILD_LIFETIME_MAX.
    let report = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("@@").map(str::to_string))
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "the {role} child exited without reporting: {:?}",
                child.wait()
            );
        });
    (child, report)
}

// ---------------------------------------------------------------------------------------------
// 5. The handshake cannot be held.

/// Ten silent connections (and one that sends half its hello, one with a bad hello) while a
/// legit client attaches: it is attached at once, not after the silent ones' deadlines (one
/// thread reading each handshake with a 2 s timeout per read took 10 × 2 s, longer than the
/// client's own 10 s wait), and every silent connection is told why and closed by the server
/// after its deadline.
#[test]
fn silent_connections_delay_no_attach() {
    let server = Server::start(&[]);
    let good = server.client();
    let values = write_values(&good, "silent");

    let mut silent: Vec<UnixStream> = (0..10).map(|_| raw_connect(&server.name)).collect();
    let mut half = raw_connect(&server.name);
    half.write_all(&attach::HELLO[..7]).unwrap();
    let connected = Instant::now();

    // A legit attach while all of them hold their handshakes.
    let started = Instant::now();
    let late = Client::connect_local(&server.name)
        .expect("a legit attach succeeds while silent connections hold handshakes");
    let attach_took = started.elapsed();
    late.ping().expect("the new client is served");
    // No tight timing: only what the old design could never do (it served the silent
    // connections first, 2 s each).
    assert!(
        attach_took < HANDSHAKE_DEADLINE * 10,
        "the legit attach took {attach_took:?}: the silent connections held it"
    );
    eprintln!("legit attach beside 11 silent connections took {attach_took:?}");

    // A bad hello is refused with its reason.
    let mut bad = raw_connect(&server.name);
    bad.write_all(b"VEDDB-ATTACH v9\n").unwrap();
    let bad_reason = refusal_reason(&read_until_closed(&mut bad));
    assert!(bad_reason.contains("bad hello"), "{bad_reason}");

    // Every silent connection is refused and closed by the server, after its deadline.
    for stream in silent.iter_mut().chain(std::iter::once(&mut half)) {
        let answer = read_until_closed(stream);
        let reason_text = refusal_reason(&answer);
        assert!(
            reason_text.contains("no hello within the handshake deadline"),
            "{reason_text}"
        );
    }
    assert!(
        connected.elapsed() >= HANDSHAKE_DEADLINE,
        "silent connections must be given their whole deadline"
    );
    server.wait_log_lines("a handshake timeout", 11, |line| {
        line.contains("attach refused: no hello within the handshake deadline")
    });

    assert_values(&server, &good, &values);
    assert_values(&server, &late, &values);
    server.assert_serving();
}

/// A client killed while attached (with silent connections holding handshakes meanwhile) is
/// detached at once: its socket closes, the session count goes down, the good client goes on.
#[test]
fn a_killed_client_is_detached_at_once() {
    // A heartbeat timeout far beyond the test: only the closed socket can explain the detach.
    let server = Server::start(&["--session-timeout", "600"]);
    let good = server.client();
    let values = write_values(&good, "killed");
    let _silent: Vec<UnixStream> = (0..5).map(|_| raw_connect(&server.name)).collect();

    let (mut child, report) = spawn_role("attached", &server.name);
    assert!(report.starts_with("ATTACHED "), "{report}");
    let pid = child.id();
    let attached = server.wait_log_lines("the child's attach", 1, |line| {
        line.contains("local client attached")
            && line
                .split_whitespace()
                .any(|word| word == format!("pid={pid}"))
    });
    let before = sessions_field(&attached[0]);
    assert!(
        before >= 2,
        "the good client and the child: {}",
        attached[0]
    );

    let killed = Instant::now();
    child.kill().expect("SIGKILL the attached child");
    child.wait().expect("reap it");
    let line = server.wait_detached(pid);
    eprintln!("detached {:?} after the kill: {line}", killed.elapsed());
    assert!(line.contains("closed its socket or exited"), "{line}");
    assert_eq!(
        sessions_field(&line),
        before - 1,
        "the session count goes down by the killed one: {line}"
    );

    assert_values(&server, &good, &values);
    server.assert_serving();
}

/// Anything on the attach socket after the hello breaks the protocol: that session is detached
/// with reason 2 in its rings; the good client goes on.
#[test]
fn bytes_after_the_hello_detach_that_session_only() {
    let server = Server::start(&[]);
    let good = server.client();
    let values = write_values(&good, "chatty");

    let mut session = raw_attach(&server.name).expect("attached");
    let cores = session.reply.core_count as usize;
    let ring = veddb_shm::Segment::map_fd(session.fds[cores].as_fd(), true).expect("map a ring");
    session.stream.write_all(b"unexpected").unwrap();
    let closed = read_until_closed(&mut session.stream);
    assert!(closed.is_empty(), "nothing follows the attach reply");
    assert_eq!(
        ring.load_u32(ring_segment::SERVER_STATUS_OFFSET, Ordering::Acquire),
        ring_segment::SERVER_DISCONNECTED
    );
    assert_eq!(
        ring.load_u32(ring_segment::DISCONNECT_REASON_OFFSET, Ordering::Acquire),
        reason::BAD_FRAME
    );
    server.wait_log_lines("the detach", 1, |line| {
        line.contains("local client detached")
            && line.contains(&format!("session={}", session.reply.session_id))
            && line.contains("after the handshake")
    });

    assert_values(&server, &good, &values);
    server.assert_serving();
}

// ---------------------------------------------------------------------------------------------
// 6. The instance file.

/// Under `--shm-mode 660` the socket is group-writable (the group may attach) but the
/// instance file only group-readable. Truncated under the server (by its owner, since tests
/// run as one user), it faults nothing: attached and new clients are served, gRPC too, and
/// SIGTERM still stops the server cleanly.
#[test]
fn the_instance_file_is_only_the_servers_and_truncating_it_crashes_nothing() {
    let mut server = Server::start(&["--shm-mode", "660"]);
    let path = instance::path(&server.name);
    let mode = |path: &str| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o640, "the instance file: owner rw, group r");
    assert_eq!(
        mode(&instance::socket_path(&server.name)),
        0o660,
        "the socket: the group may connect"
    );

    let good = server.client();
    let values = write_values(&good, "truncated");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open the instance file as its owner")
        .set_len(0)
        .expect("truncate it");

    // The server does not need the file to attach: a raw attach still works.
    let session = raw_attach(&server.name).expect("attached after the truncation");
    assert_eq!(session.reply.core_count, 2);
    drop(session);
    assert_values(&server, &good, &values);
    server.grpc().ping().expect("gRPC is served");

    server.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// 8. The session limit.

/// `--max-sessions 3`: the fourth attach is refused with the documented reason (raw and
/// through the library) while the three go on; a slot freed by a detach is taken again.
#[test]
fn max_sessions_refuses_past_the_limit_and_frees_slots() {
    let server = Server::start(&["--max-sessions", "3"]);
    let log = server.log();
    assert!(
        log.lines()
            .any(|line| line.contains("session limit") && line.contains("sessions_max=3")),
        "the limit is logged; the log:\n{log}"
    );
    let clients: Vec<Client> = (0..3).map(|_| server.client()).collect();
    let mut values = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        values.push(write_values(client, &format!("slot{i}")));
    }

    let refused = match raw_attach(&server.name) {
        Ok(session) => panic!("a fourth session attached: {:?}", session.reply),
        Err(reason_text) => reason_text,
    };
    assert!(
        refused.contains("too many sessions") && refused.contains("--max-sessions"),
        "{refused}"
    );
    let error = match Client::connect_local(&server.name) {
        Ok(_) => panic!("a fourth client attached"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("too many sessions"), "{error}");
    server.wait_log_lines("the refusals", 2, |line| {
        line.contains("attach refused: too many sessions")
    });
    for (client, values) in clients.iter().zip(&values) {
        assert_values(&server, client, values);
    }
    server.grpc().ping().expect("gRPC is served");

    // Free a slot: the next attach gets it (the detach is asynchronous: retry until then).
    let mut clients = clients;
    drop(clients.pop());
    let deadline = Instant::now() + LOG_TIMEOUT;
    let fourth = loop {
        match Client::connect_local(&server.name) {
            Ok(client) => break client,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "no slot was freed within {LOG_TIMEOUT:?}: {error}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    fourth
        .ping()
        .expect("the client in the freed slot is served");
    for (client, values) in clients.iter().zip(&values) {
        assert_values(&server, client, values);
    }
    assert_values(&server, &fourth, &values[2]);
}

/// A `--max-sessions` the descriptor limit cannot hold is refused at start, saying why; 0 is
/// not a limit.
#[test]
fn an_impossible_max_sessions_is_refused_at_start() {
    let mut server = Server::spawn(&unique_name("ha"), &["--max-sessions", "1000000000"]);
    let status = server.wait_exit();
    let log = server.log();
    assert!(!status.success(), "{status}; the log:\n{log}");
    assert!(
        log.contains("--max-sessions 1000000000 needs") && log.contains("raise the limit"),
        "the log:\n{log}"
    );
    assert!(
        !Path::new(&instance::path(&server.name)).exists(),
        "a server that did not start leaves no instance file"
    );

    let mut zero = Server::spawn(&unique_name("ha"), &["--max-sessions", "0"]);
    let status = zero.wait_exit();
    assert_eq!(status.code(), Some(2), "a bad flag: {}", zero.log());
    assert!(zero.log().contains("--max-sessions must be at least 1"));
}
