//! Crash tests with the real `veddb-server` binary and `--data-dir`: SIGKILL during writes and
//! during snapshots (every acknowledged write survives, nothing unacknowledged appears out of
//! order), restarts with another `--cores`, and a corrupt log that stops the start until
//! `--repair` cuts it.
//!
//! Reproduce a failing run with the seed it printed: `VEDDB_CRASH_SEED=... cargo test -p
//! veddb-server --test crash -- --nocapture`; `VEDDB_CRASH_ITERATIONS=N` changes the number of
//! kills. A failing test keeps its data directory (the path is printed) for inspection.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use veddb_client::{Client, ClientError};
use veddb_wire::grpc::Code;
use veddb_wire::{Request, Response, SetOptions};

mod common;
use common::{capture_stderr, listening_address, Rng, TempDir};

const SERVER: &str = env!("CARGO_BIN_EXE_veddb-server");
/// Generous: this runs on small, noisy machines, in debug builds.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys per MGET / MSET call.
const CHUNK: usize = 2000;

// ---------------------------------------------------------------------------------------------
// Helpers: server process, random numbers (the temporary directory is `common::TempDir`).

/// A `veddb-server` this test started. Dropping it (also when the test panics) kills it.
struct Server {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    address: Option<String>,
}

impl Server {
    /// Starts `veddb-server --data-dir DIR --cores N --port 0 --spin-us 0` plus `extra`.
    fn start(dir: &Path, cores: usize, extra: &[&str]) -> Server {
        let mut command = Command::new(SERVER);
        command
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--cores",
                &cores.to_string(),
                "--port",
                "0",
                "--spin-us",
                "0",
            ])
            .args(extra)
            .env_remove("VEDDB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start veddb-server");
        let (log, reader) = capture_stderr(&mut child);
        Server {
            child: Some(child),
            log,
            reader: Some(reader),
            address: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the gRPC port is logged and answers a PING; the address.
    fn wait_ready(&mut self) -> String {
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
            if self.address.is_none() {
                self.address = listening_address(&self.log());
            }
            if let Some(address) = &self.address {
                if let Ok(client) = Client::connect_grpc(address) {
                    if client.ping().is_ok() {
                        return address.clone();
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

    fn client(&mut self) -> Client {
        let address = self.wait_ready();
        Client::connect_grpc(&address).expect("connect")
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_reader();
    }

    /// SIGTERM and waits for the exit, which must be clean.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.wait_exit();
        assert!(
            status.success(),
            "SIGTERM must stop the server cleanly: {status}; its log:\n{}",
            self.log()
        );
    }

    /// Waits (at most [`STOP_TIMEOUT`]) for the server to exit by itself.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                self.join_reader();
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "the server did not exit within {STOP_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
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
                eprintln!("server log:\n{}", self.log());
            }
        }
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("VEDDB_CRASH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn is_unavailable(error: &ClientError) -> bool {
    matches!(error, ClientError::Status(status) if status.code == Code::Unavailable)
}

/// MGET of `keys` in chunks; one answer per key.
fn mget(client: &Client, keys: &[String]) -> Vec<Option<Bytes>> {
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(CHUNK) {
        let keys = chunk.iter().map(|key| Bytes::from(key.clone())).collect();
        match client.execute(Request::MGet { keys }).expect("MGET") {
            Response::Values(answers) => {
                assert_eq!(answers.len(), chunk.len());
                values.extend(answers.into_iter().map(|v| v.map(|(value, _)| value)));
            }
            other => panic!("MGET answered {other:?}"),
        }
    }
    values
}

/// MSET of `pairs` in chunks.
fn mset(client: &Client, pairs: &[(String, String)]) {
    for chunk in pairs.chunks(CHUNK) {
        let pairs = chunk
            .iter()
            .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
            .collect();
        match client.execute(Request::MSet { pairs }).expect("MSET") {
            Response::Ok => {}
            other => panic!("MSET answered {other:?}"),
        }
    }
}

/// Asserts that every pair is present with its value.
fn assert_all_present(client: &Client, pairs: &[(String, String)], context: &str) {
    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let values = mget(client, &keys);
    let mut missing = Vec::new();
    for ((key, expected), value) in pairs.iter().zip(values) {
        match value {
            Some(value) if value == expected.as_bytes() => {}
            other => missing.push(format!("{key}: expected {expected:?}, found {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{context}: {} of {} keys wrong, first ones: {:?}",
        missing.len(),
        pairs.len(),
        &missing[..missing.len().min(10)]
    );
}

/// The data directory's files, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// SIGKILL during writes.

/// What the writers had acknowledged, per writer: the last unique key index (`w{w}-{i}`) and
/// the last hot-key value (`hot{w}`); 0 = none yet. Indices start at 1. `hot_sending` is the
/// hot-key value last sent, acknowledged or not (after a kill it may or may not be durable; it
/// is not always `hot + 1`: a round starts after the unique keys, which may be ahead).
struct Acked {
    unique: Vec<AtomicU64>,
    hot: Vec<AtomicU64>,
    hot_sending: Vec<AtomicU64>,
}

impl Acked {
    fn new(writers: usize) -> Acked {
        let zeros = || (0..writers).map(|_| AtomicU64::new(0)).collect();
        Acked {
            unique: zeros(),
            hot: zeros(),
            hot_sending: zeros(),
        }
    }
}

/// One writer: SET `w{w}-{i}` = i, then SET `hot{w}` = i, for i = first, first + 1, ...,
/// recording each acknowledgment, until a call fails after `killed` was raised. The number of
/// SETs acknowledged.
fn writer(
    w: usize,
    address: String,
    first: u64,
    acked: Arc<Acked>,
    killed: Arc<AtomicBool>,
) -> Result<u64, String> {
    let client = match Client::connect_grpc(&address) {
        Ok(client) => client,
        Err(_) if killed.load(Ordering::SeqCst) => return Ok(0),
        Err(error) => return Err(format!("writer {w}: cannot connect: {error}")),
    };
    // Ok(true): acknowledged; Ok(false): failed after the kill.
    let set = |key: String, i: u64| -> Result<bool, String> {
        loop {
            match client.set(key.clone(), i.to_string(), SetOptions::default()) {
                Ok(Some(_)) => return Ok(true),
                Ok(None) => return Err(format!("writer {w}: SET {key} not stored")),
                Err(_) if killed.load(Ordering::SeqCst) => return Ok(false),
                // Refused before it was applied (log buffer full): try again.
                Err(error) if is_unavailable(&error) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(error) => return Err(format!("writer {w}: SET {key} = {i}: {error}")),
            }
        }
    };
    let mut writes = 0;
    for i in first.. {
        if !set(format!("w{w}-{i}"), i)? {
            break;
        }
        acked.unique[w].store(i, Ordering::SeqCst);
        writes += 1;
        acked.hot_sending[w].store(i, Ordering::SeqCst);
        if !set(format!("hot{w}"), i)? {
            break;
        }
        acked.hot[w].store(i, Ordering::SeqCst);
        writes += 1;
    }
    Ok(writes)
}

/// SNAPSHOT in a loop until a call fails after `killed` was raised; how many succeeded.
fn snapshotter(address: String, killed: Arc<AtomicBool>) -> Result<u64, String> {
    let client = match Client::connect_grpc(&address) {
        Ok(client) => client,
        Err(_) if killed.load(Ordering::SeqCst) => return Ok(0),
        Err(error) => return Err(format!("snapshotter: cannot connect: {error}")),
    };
    let mut done = 0;
    loop {
        match client.execute(Request::Snapshot) {
            Ok(Response::Ok) => done += 1,
            Ok(other) => return Err(format!("SNAPSHOT answered {other:?}")),
            Err(_) if killed.load(Ordering::SeqCst) => return Ok(done),
            Err(error) if is_unavailable(&error) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => return Err(format!("SNAPSHOT: {error}")),
        }
    }
}

/// Checks, after a restart, every writer's keys against what was acknowledged; then takes
/// what the restart shows as durable as acknowledged (an in-flight write that made it), so the
/// next round continues from there. Returns the number of unique keys checked.
fn check_writers(client: &Client, acked: &Acked, context: &str) -> u64 {
    let mut checked = 0;
    for w in 0..acked.unique.len() {
        let unique = acked.unique[w].load(Ordering::SeqCst);
        let hot = acked.hot[w].load(Ordering::SeqCst);
        let hot_sending = acked.hot_sending[w].load(Ordering::SeqCst);
        // Every acknowledged key, the one that may have been in flight, and a few after it.
        let keys: Vec<String> = (1..=unique + 5).map(|i| format!("w{w}-{i}")).collect();
        let values = mget(client, &keys);
        let mut wrong = Vec::new();
        for (i, value) in (1..).zip(&values) {
            let value = value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let ok = if i <= unique {
                value.as_deref() == Some(i.to_string().as_str())
            } else if i == unique + 1 {
                value.is_none() || value.as_deref() == Some(i.to_string().as_str())
            } else {
                value.is_none()
            };
            if !ok {
                wrong.push(format!("w{w}-{i} = {value:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{context}: writer {w} (last acknowledged unique key w{w}-{unique}, hot{w} = {hot}): \
             {} wrong keys (acknowledged ones must be present with their value, at most \
             w{w}-{} may appear beyond): {:?}",
            wrong.len(),
            unique + 1,
            &wrong[..wrong.len().min(10)]
        );
        let unique_now = if values[unique as usize].is_some() {
            unique + 1
        } else {
            unique
        };
        let hot_value = client
            .get(format!("hot{w}"))
            .expect("GET")
            .map(|(value, _)| {
                String::from_utf8_lossy(&value)
                    .parse::<u64>()
                    .expect("a number")
            });
        match hot_value {
            None => assert_eq!(
                hot, 0,
                "{context}: hot{w} is missing; {hot} was acknowledged"
            ),
            Some(value) => {
                assert!(
                    value == hot || value == hot_sending,
                    "{context}: hot{w} = {value}, but {hot} was the last acknowledged value \
                     (only {hot} or the in-flight {hot_sending} are possible)"
                );
                // hot{w} = i is only sent after w{w}-{i} was acknowledged.
                assert!(
                    value <= unique_now,
                    "{context}: hot{w} = {value} but w{w}-{value} is missing"
                );
                acked.hot[w].store(value, Ordering::SeqCst);
                acked.hot_sending[w].store(value, Ordering::SeqCst);
            }
        }
        acked.unique[w].store(unique_now, Ordering::SeqCst);
        checked += unique;
    }
    checked
}

/// Number of `.snap` files per shard and of `.tmp` files.
fn snapshot_files(dir: &Path) -> (BTreeMap<String, usize>, usize) {
    let mut per_shard = BTreeMap::new();
    let mut temporary = 0;
    for name in files(dir) {
        if name.ends_with(".tmp") {
            temporary += 1;
        } else if name.ends_with(".snap") {
            // <generation>-<shard>-<sequence>.snap
            let shard = name.split('-').nth(1).unwrap_or("?").to_string();
            *per_shard.entry(shard).or_insert(0) += 1;
        }
    }
    (per_shard, temporary)
}

/// The kill loop of the first two tests.
fn kill_loop(test: &str, iterations: usize, preload: usize, snapshots: bool) {
    const WRITERS: usize = 4;
    const CORES: usize = 2;
    let args = ["--fsync", "always", "--snapshot-interval", "0"];
    let started = Instant::now();
    let mut rng = Rng::seeded("VEDDB_CRASH_SEED", test);
    let dir = TempDir::new(test);
    let acked = Arc::new(Acked::new(WRITERS));

    let mut server = Server::start(dir.path(), CORES, &args);
    let preloaded: Vec<(String, String)> = (0..preload)
        .map(|i| (format!("pre-{i:06}"), format!("{i:06}-{}", "p".repeat(120))))
        .collect();
    if preload > 0 {
        mset(&server.client(), &preloaded);
    }

    let mut total_writes = 0;
    let mut total_snapshots = 0;
    let mut kills_during_snapshot = 0;
    for iteration in 1..=iterations {
        let address = server.wait_ready();
        let killed = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let first = acked.unique[w].load(Ordering::SeqCst) + 1;
                let (address, acked, killed) = (address.clone(), acked.clone(), killed.clone());
                std::thread::spawn(move || writer(w, address, first, acked, killed))
            })
            .collect();
        let snapshot_thread = snapshots.then(|| {
            let (address, killed) = (address.clone(), killed.clone());
            std::thread::spawn(move || snapshotter(address, killed))
        });

        let run_ms = rng.between(50, 400);
        std::thread::sleep(Duration::from_millis(run_ms));
        killed.store(true, Ordering::SeqCst);
        let killed_pid = server.pid();
        server.kill();
        let killed_log = server.log();
        // A snapshot being written when the kill landed leaves its .tmp behind.
        let (_, tmp_at_kill) = snapshot_files(dir.path());
        kills_during_snapshot += usize::from(tmp_at_kill > 0);

        let mut writes = 0;
        for handle in writers {
            writes += handle
                .join()
                .expect("writer thread")
                .unwrap_or_else(|error| {
                    panic!("iteration {iteration}: {error}; server log:\n{killed_log}")
                });
        }
        let snapshots_done = snapshot_thread.map_or(0, |handle| {
            handle
                .join()
                .expect("snapshot thread")
                .unwrap_or_else(|error| {
                    panic!("iteration {iteration}: {error}; server log:\n{killed_log}")
                })
        });
        total_writes += writes;
        total_snapshots += snapshots_done;

        // Restart on the same directory and check everything acknowledged so far.
        server = Server::start(dir.path(), CORES, &args);
        let client = server.client();
        let killed_tail: Vec<&str> = killed_log.lines().rev().take(20).collect();
        let context = format!(
            "{test} iteration {iteration} (killed pid {killed_pid} after {run_ms} ms; \
             restarted pid {}; the killed server's last log lines:\n{}\n)",
            server.pid(),
            killed_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        let (snaps, temporary) = snapshot_files(dir.path());
        assert!(
            snaps.values().all(|&count| count <= 3) && snaps.len() <= CORES,
            "{context}: too many snapshots (trimming keeps 2 per shard): {snaps:?} in {:?}",
            files(dir.path())
        );
        assert_eq!(
            temporary,
            0,
            "{context}: the start must delete temporary files: {:?}",
            files(dir.path())
        );
        let checked = check_writers(&client, &acked, &context);
        if preload > 0 {
            assert_all_present(&client, &preloaded, &context);
        }
        let wal = files(dir.path())
            .iter()
            .filter(|n| n.ends_with(".wal"))
            .count();
        eprintln!(
            "{test} {iteration}/{iterations}: killed after {run_ms} ms, {writes} SETs \
             acknowledged ({total_writes} in all), {snapshots_done} snapshots{}; after restart \
             {checked} unique keys + {} preloaded verified; files: {wal} .wal, .snap per shard \
             {snaps:?}; {:.1} s so far",
            if tmp_at_kill > 0 {
                " (killed during a snapshot write)"
            } else {
                ""
            },
            preloaded.len(),
            started.elapsed().as_secs_f64()
        );
    }
    server.terminate();
    assert!(total_writes > 0, "no write was ever acknowledged");
    if snapshots {
        assert!(total_snapshots > 0, "no snapshot ever completed");
    }
    eprintln!(
        "{test}: {iterations} kills ({kills_during_snapshot} during a snapshot write), \
         {total_writes} acknowledged SETs, {total_snapshots} snapshots, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    kill_loop(
        "acknowledged_writes_survive_sigkill",
        iterations(50),
        0,
        false,
    );
}

#[test]
fn acknowledged_writes_survive_sigkill_during_snapshots() {
    kill_loop(
        "acknowledged_writes_survive_sigkill_during_snapshots",
        iterations(50),
        20_000,
        true,
    );
}

// ---------------------------------------------------------------------------------------------
// Another --cores.

#[test]
fn restart_with_another_core_count_rehashes() {
    let dir = TempDir::new("rehash");
    let mut expected: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("key-{i}"), format!("value-{i}")))
        .collect();
    let layouts = |dir: &Path| -> Vec<String> {
        files(dir)
            .into_iter()
            .filter(|name| name.ends_with(".layout"))
            .collect()
    };

    let mut server = Server::start(dir.path(), 2, &[]);
    let client = server.client();
    mset(&client, &expected);
    // Single writes, an overwrite and a delete, so the log holds more than MSET records.
    for i in 0..50 {
        client
            .set(
                format!("single-{i}"),
                format!("s{i}"),
                SetOptions::default(),
            )
            .unwrap();
        expected.push((format!("single-{i}"), format!("s{i}")));
    }
    client.set("key-7", "seven", SetOptions::default()).unwrap();
    expected[7].1 = "seven".into();
    assert!(client.delete("key-8").unwrap());
    expected.remove(8);
    drop(client);
    server.terminate();

    for cores in [1, 3] {
        let mut server = Server::start(dir.path(), cores, &[]);
        let client = server.client();
        let context = format!("after a restart with --cores {cores}");
        assert_all_present(&client, &expected, &context);
        assert_eq!(client.get("key-8").unwrap(), None, "{context}: deleted key");
        let layouts = layouts(dir.path());
        assert_eq!(
            layouts.len(),
            1,
            "{context}: one layout marker: {:?}",
            files(dir.path())
        );
        assert!(
            layouts[0].ends_with(&format!("-shards-{cores:05}.layout")),
            "{context}: {layouts:?}"
        );
        // Writes into the new generation survive the next change too.
        let key = format!("written-with-{cores}-cores");
        client
            .set(key.clone(), "yes", SetOptions::default())
            .unwrap();
        expected.push((key, "yes".into()));
        drop(client);
        server.terminate();
        eprintln!(
            "--cores {cores}: {} keys verified; files {:?}",
            expected.len(),
            files(dir.path())
        );
    }

    let mut server = Server::start(dir.path(), 2, &[]);
    assert_all_present(&server.client(), &expected, "back to --cores 2");
    server.terminate();
}

// ---------------------------------------------------------------------------------------------
// Corruption in the middle of a segment.

/// A log record's place and key (engine/persist/FORMAT.md, "Record").
struct RecordAt {
    offset: usize,
    len: usize,
    key: String,
}

fn parse_segment(bytes: &[u8]) -> Vec<RecordAt> {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let mut records = Vec::new();
    let mut at = 32;
    while at + 8 <= bytes.len() {
        let len = 8 + u32_at(at);
        assert!(at + len <= bytes.len(), "record at {at} runs past the end");
        let kind = bytes[at + 16];
        let key_at = match kind {
            1 => at + 17 + 16,
            2 => at + 17,
            other => panic!("record kind {other} at {at}"),
        };
        let key_len = u32_at(key_at);
        let key = String::from_utf8_lossy(&bytes[key_at + 4..key_at + 4 + key_len]).into_owned();
        records.push(RecordAt {
            offset: at,
            len,
            key,
        });
        at += len;
    }
    assert_eq!(at, bytes.len(), "the segment ends after a whole record");
    records
}

#[test]
fn corruption_in_the_middle_stops_start_and_repair_fixes_it() {
    let dir = TempDir::new("corruption");
    let args = ["--snapshot-interval", "0"];
    let pairs: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("k{i:05}"), format!("v{i:05}-{}", "x".repeat(20))))
        .collect();
    let mut server = Server::start(dir.path(), 1, &args);
    let client = server.client();
    for chunk in pairs.chunks(100) {
        mset(&client, chunk);
    }
    drop(client);
    server.terminate();

    let names = files(dir.path());
    let segments: Vec<&String> = names.iter().filter(|n| n.ends_with(".wal")).collect();
    assert_eq!(segments.len(), 1, "one segment: {names:?}");
    // The first start writes an empty snapshot at sequence 0; a later one would hold records.
    let has_snapshot = names.iter().any(|n| {
        n.strip_suffix(".snap")
            .and_then(|n| n.rsplit('-').next())
            .is_some_and(|sequence| sequence.parse::<u64>().unwrap() > 0)
    });
    assert!(!has_snapshot, "no snapshot of records was taken: {names:?}");
    let segment = segments[0].clone();
    let path = dir.path().join(&segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let records = parse_segment(&bytes);
    assert_eq!(records.len(), pairs.len(), "one record per key");

    // Flip a byte in the middle of the file, inside a record's key or value (not its length,
    // so the decoder finds the records after it and calls it corruption in the middle).
    let middle = bytes.len() / 2;
    let damaged = records
        .iter()
        .position(|r| r.offset <= middle && middle < r.offset + r.len)
        .unwrap();
    let record = &records[damaged];
    let flip_at = (record.offset + record.len - 3).max(middle);
    bytes[flip_at] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    eprintln!(
        "flipped byte {flip_at} of {segment} ({} bytes), in record {damaged} at offset {} (key {})",
        bytes.len(),
        record.offset,
        record.key
    );

    // The start stops, naming the file and the offset and pointing at --repair.
    let mut server = Server::start(dir.path(), 1, &args);
    let status = server.wait_exit();
    let log = server.log();
    assert!(
        !status.success(),
        "the start must fail: {status}; log:\n{log}"
    );
    assert!(
        log.contains(&segment),
        "the message names {segment}:\n{log}"
    );
    assert!(
        log.contains(&format!("offset {}", record.offset)),
        "the message names offset {}:\n{log}",
        record.offset
    );
    assert!(
        log.contains("--repair"),
        "the message mentions --repair:\n{log}"
    );
    eprintln!(
        "start refused ({status}): {}",
        log.lines().find(|l| l.contains("corrupt")).unwrap_or("")
    );

    // --repair cuts the log at the damaged record, after a backup.
    let output = Command::new(SERVER)
        .arg("--repair")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--cores", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "--repair: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(&segment),
        "--repair says what it did to {segment}:\n{stdout}\n{stderr}"
    );
    eprintln!("--repair printed:\n{stdout}");
    let backups: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|n| n.contains(".bak"))
        .collect();
    assert!(
        backups.contains(&format!("{segment}.bak")),
        "a backup of {segment}: {:?}",
        files(dir.path())
    );

    // The start works again; everything before the damage is there, nothing after it (the
    // records after the cut are lost; no snapshot holds them).
    let mut server = Server::start(dir.path(), 1, &args);
    let client = server.client();
    let values: std::collections::HashMap<&String, &String> =
        pairs.iter().map(|(k, v)| (k, v)).collect();
    let before: Vec<(String, String)> = records[..damaged]
        .iter()
        .map(|r| (r.key.clone(), values[&r.key].clone()))
        .collect();
    assert_all_present(&client, &before, "after --repair");
    let after: Vec<String> = records[damaged..].iter().map(|r| r.key.clone()).collect();
    let found = mget(&client, &after).iter().filter(|v| v.is_some()).count();
    assert_eq!(found, 0, "records from the damaged one on were cut");
    // And it keeps working: a write after the repair survives a restart.
    client
        .set("after-repair", "yes", SetOptions::default())
        .unwrap();
    drop(client);
    server.terminate();
    let mut server = Server::start(dir.path(), 1, &args);
    let client = server.client();
    assert_all_present(&client, &before, "second start after --repair");
    assert_eq!(
        client.get("after-repair").unwrap().map(|(v, _)| v),
        Some(Bytes::from("yes"))
    );
    drop(client);
    server.terminate();
    eprintln!(
        "{} keys before the damaged record present after --repair; files {:?}",
        before.len(),
        files(dir.path())
    );
}
