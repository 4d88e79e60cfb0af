//! Persistence through the engine with real files: restarts under every fsync policy, versions
//! after a restart, SNAPSHOT and trimming, concurrent writes during snapshots, a changed core
//! count, the directory lock, a budget too small for the data. (Crashes with SIGKILL are tested
//! against the server binary in transport/server/tests.)

// Tests drive the engine from outside it: on the OS clocks and threads of their own.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use veddb_engine::persist::{Faults, PersistConfig};
use veddb_engine::{Engine, EngineConfig, FsyncPolicy, StartError};
use veddb_wire::{shard_for_key, Error, Request, Response, SetCondition, SetOptions, Ttl};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "veddb-persist-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, cores: usize, fsync: FsyncPolicy) -> EngineConfig {
    EngineConfig {
        cores,
        spin: Duration::from_micros(20),
        memory_bytes_limit: 256 << 20,
        persistence: Some(PersistConfig {
            fsync,
            snapshot_interval: None,
            ..PersistConfig::new(dir)
        }),
        ..EngineConfig::default()
    }
}

fn start(dir: &Path, cores: usize, fsync: FsyncPolicy) -> Engine {
    Engine::start(config(dir, cores, fsync)).expect("engine starts")
}

fn b(text: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(text.as_ref())
}

fn set(engine: &Engine, key: &str, value: &str) -> u64 {
    match engine.call(Request::Set {
        key: b(key),
        value: b(value),
        options: SetOptions::default(),
    }) {
        Response::Stored { version } => version,
        other => panic!("SET {key}: {other:?}"),
    }
}

fn get(engine: &Engine, key: &str) -> Response {
    engine.call(Request::Get { key: b(key) })
}

/// Every key named `prefix*` with its value and version.
fn contents(engine: &Engine, keys: &[String]) -> Vec<Response> {
    keys.iter().map(|key| get(engine, key)).collect()
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".snap"))
        .collect();
    names.sort();
    names
}

/// A mix of every logged command over 200 keys; returns the keys touched.
fn write_mix(engine: &Engine) -> Vec<String> {
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        set(engine, key, &format!("value-{i}"));
    }
    for key in keys.iter().step_by(7) {
        assert_eq!(
            engine.call(Request::Delete { key: b(key) }),
            Response::Bool(true)
        );
    }
    for key in keys.iter().skip(1).step_by(11) {
        engine.call(Request::Incr {
            key: b(format!("{key}-counter")),
            delta: 5,
        });
    }
    for key in keys.iter().skip(2).step_by(13) {
        engine.call(Request::Expire {
            key: b(key),
            ttl_ms: 3_600_000,
        });
    }
    // EXPIRE 0 deletes: it must stay deleted after a restart.
    engine.call(Request::Expire {
        key: b(&keys[3]),
        ttl_ms: 0,
    });
    let version = match get(engine, &keys[4]) {
        Response::Value { version, .. } => version,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        engine.call(Request::Cas {
            key: b(&keys[4]),
            expected_version: version,
            value: b("swapped"),
            ttl_ms: None,
        }),
        Response::Stored { .. }
    ));
    engine.call(Request::MSet {
        pairs: (0..50)
            .map(|i| (b(format!("mset-{i}")), b(format!("m{i}"))))
            .collect(),
    });
    engine.call(Request::Set {
        key: b(&keys[5]),
        value: b("nx"),
        options: SetOptions {
            condition: SetCondition::IfAbsent,
            ..SetOptions::default()
        },
    });
    let mut all = keys.clone();
    all.extend(
        keys.iter()
            .skip(1)
            .step_by(11)
            .map(|k| format!("{k}-counter")),
    );
    all.extend((0..50).map(|i| format!("mset-{i}")));
    all
}

#[test]
fn writes_survive_a_restart_under_every_policy() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No] {
        let dir = TempDir::new("policy");
        let engine = start(&dir.0, 2, fsync);
        let keys = write_mix(&engine);
        let before = contents(&engine, &keys);
        let ttl_key = "key-15"; // 2 + 13: has a TTL
        assert!(matches!(
            engine.call(Request::Ttl { key: b(ttl_key) }),
            Response::Ttl(Ttl::Remaining(_))
        ));
        engine.shutdown();

        let engine = start(&dir.0, 2, fsync);
        assert_eq!(contents(&engine, &keys), before, "{fsync:?}");
        assert!(matches!(
            engine.call(Request::Ttl { key: b(ttl_key) }),
            Response::Ttl(Ttl::Remaining(_))
        ));
        assert_eq!(get(&engine, "key-3"), Response::NotFound);
        // A key's version after the restart is above its version from before (each shard's
        // clock goes on from the largest version it recovered).
        for (i, key) in keys.iter().enumerate().take(20) {
            if let Response::Value { version, .. } = &before[i] {
                assert!(set(&engine, key, "after") > *version, "{fsync:?} {key}");
            }
        }
        engine.shutdown();
    }
}

#[test]
fn snapshot_command_writes_snapshots_and_trims() {
    let dir = TempDir::new("snapshot");
    let engine = start(&dir.0, 2, FsyncPolicy::Always);
    let mut keys = Vec::new();
    for round in 0..4 {
        for i in 0..300 {
            let key = format!("r{round}-{i}");
            set(&engine, &key, &format!("v{round}-{i}"));
            keys.push(key);
        }
        // Overwrite part of the previous round too.
        for i in 0..100 {
            set(&engine, &format!("r0-{i}"), &format!("over-{round}"));
        }
        assert_eq!(engine.call(Request::Snapshot), Response::Ok);
        let snapshots = snapshot_files(&dir.0);
        // Per shard: the commit's snapshot and this round's, older ones trimmed beyond two.
        assert!(
            snapshots.len() <= 2 * 2,
            "round {round}: too many snapshots kept: {snapshots:?}"
        );
    }
    // A snapshot starts a new segment, so trimming deletes the segments the older kept
    // snapshot covers: per shard at most the segment between the two kept snapshots and the
    // current one remain.
    let segments = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".wal")
        })
        .count();
    assert!(
        segments <= 2 * 2,
        "{segments} segments left after 4 snapshots"
    );
    let first_segments: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with("-00000000000000000001.wal"))
        .collect();
    assert!(
        first_segments.is_empty(),
        "the segments before the older kept snapshot were not trimmed: {first_segments:?}"
    );
    let before = contents(&engine, &keys);
    engine.shutdown();
    let engine = start(&dir.0, 2, FsyncPolicy::Always);
    assert_eq!(contents(&engine, &keys), before);
    engine.shutdown();
}

#[test]
fn snapshots_during_concurrent_writes_recover_exactly() {
    let dir = TempDir::new("concurrent");
    let engine = Arc::new(start(&dir.0, 2, FsyncPolicy::No));
    let pairs: Vec<(Bytes, Bytes)> = (0..20_000)
        .map(|i| (b(format!("k{i:05}")), b(format!("initial-{i}"))))
        .collect();
    for chunk in pairs.chunks(1000) {
        assert_eq!(
            engine.call(Request::MSet {
                pairs: chunk.to_vec()
            }),
            Response::Ok
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (engine, stop, written) = (engine.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("k{:05}", (i * 7919 + w * 13) % 20_000);
                    match i % 5 {
                        0 => {
                            engine.call(Request::Delete { key: b(&key) });
                        }
                        _ => {
                            set(&engine, &key, &format!("w{w}-{i}"));
                        }
                    }
                    i += 1;
                    written.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for _ in 0..5 {
        assert_eq!(engine.call(Request::Snapshot), Response::Ok);
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    assert!(written.load(Ordering::Relaxed) > 0);
    let keys: Vec<String> = (0..20_000).map(|i| format!("k{i:05}")).collect();
    let before = contents(&engine, &keys);
    let Ok(engine) = Arc::try_unwrap(engine) else {
        panic!("engine still shared")
    };
    engine.shutdown();
    let engine = start(&dir.0, 2, FsyncPolicy::No);
    assert_eq!(contents(&engine, &keys), before);
    engine.shutdown();
}

#[test]
fn a_changed_core_count_rehashes_the_keys() {
    let dir = TempDir::new("rehash");
    let engine = start(&dir.0, 2, FsyncPolicy::Always);
    let keys: Vec<String> = (0..500).map(|i| format!("rehash-{i}")).collect();
    for key in &keys {
        set(&engine, key, key);
    }
    engine.shutdown();
    for cores in [1, 3, 2] {
        let engine = start(&dir.0, cores, FsyncPolicy::Always);
        for key in &keys {
            match get(&engine, key) {
                Response::Value { value, .. } => assert_eq!(value, b(key), "{cores} cores"),
                other => panic!("{key} with {cores} cores: {other:?}"),
            }
        }
        set(&engine, &format!("written-with-{cores}"), "x");
        engine.shutdown();
    }
    let engine = start(&dir.0, 2, FsyncPolicy::Always);
    for cores in [1, 3, 2] {
        assert!(matches!(
            get(&engine, &format!("written-with-{cores}")),
            Response::Value { .. }
        ));
    }
    engine.shutdown();
}

#[test]
fn snapshot_without_persistence_is_refused() {
    let engine = Engine::start(EngineConfig {
        cores: 2,
        spin: Duration::from_micros(20),
        ..EngineConfig::default()
    })
    .unwrap();
    assert_eq!(
        engine.call(Request::Snapshot),
        Response::Error(Error::PersistenceOff)
    );
    engine.shutdown();
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = TempDir::new("lock");
    let engine = start(&dir.0, 1, FsyncPolicy::Always);
    match Engine::start(config(&dir.0, 1, FsyncPolicy::Always)) {
        Err(StartError::Persistence(message)) => {
            assert!(message.contains("in use"), "{message}")
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a second engine started on a locked directory"),
    }
    engine.shutdown();
    // Released on shutdown.
    start(&dir.0, 1, FsyncPolicy::Always).shutdown();
}

#[test]
fn data_over_the_budget_refuses_to_start() {
    let dir = TempDir::new("budget");
    let engine = start(&dir.0, 1, FsyncPolicy::No);
    let value = "x".repeat(64 * 1024);
    for i in 0..64 {
        set(&engine, &format!("big-{i}"), &value);
    }
    engine.shutdown();
    let mut small = config(&dir.0, 1, FsyncPolicy::No);
    small.memory_bytes_limit = 1 << 20;
    match Engine::start(small) {
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("OUT_OF_MEMORY"), "{message}");
        }
        Ok(_) => panic!("4 MiB of data loaded into a 1 MiB budget"),
    }
    // Nothing was lost by the refused start.
    let engine = start(&dir.0, 1, FsyncPolicy::No);
    assert!(matches!(get(&engine, "big-63"), Response::Value { .. }));
    engine.shutdown();
}

// ---- faults injected under the running log and snapshot writers ------------------------------

fn start_with_faults(dir: &Path, faults: Faults) -> Engine {
    let mut config = config(dir, 2, FsyncPolicy::Always);
    config.persistence.as_mut().unwrap().faults = faults;
    Engine::start(config).expect("engine starts")
}

/// Keys owned by `shard` of 2.
fn keys_of_shard(shard: u32, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("fault-{i}"))
        .filter(|key| shard_for_key(key.as_bytes(), 2) == shard)
        .take(count)
        .collect()
}

/// SETs `keys` one by one; the keys acknowledged before the first failure, and that failure.
fn set_until_failure(engine: &Engine, keys: &[String]) -> (Vec<String>, Option<Error>) {
    let mut acknowledged = Vec::new();
    for key in keys {
        match engine.call(Request::Set {
            key: b(key),
            value: b(key),
            options: SetOptions::default(),
        }) {
            Response::Stored { .. } => acknowledged.push(key.clone()),
            Response::Error(error) => return (acknowledged, Some(error)),
            other => panic!("{other:?}"),
        }
    }
    (acknowledged, None)
}

fn assert_present(engine: &Engine, keys: &[String]) {
    for key in keys {
        match get(engine, key) {
            Response::Value { value, .. } if value == b(key) => {}
            other => panic!("{key} lost: {other:?}"),
        }
    }
}

#[test]
fn a_failed_fsync_fails_the_waiting_write_and_stops_only_that_shard() {
    let dir = TempDir::new("fsync-error");
    let engine = start_with_faults(
        &dir.0,
        Faults {
            fail_fsync: Some((4, 5)), // EIO
            shards: vec![0],
            ..Faults::default()
        },
    );
    let keys = keys_of_shard(0, 50);
    let (acknowledged, failure) = set_until_failure(&engine, &keys);
    let Some(Error::Storage(message)) = failure else {
        panic!("expected a storage error, got {failure:?}");
    };
    assert!(message.contains("fsync"), "{message}");
    assert!(!acknowledged.is_empty());
    // The shard refuses every later write with the same cause; reads go on.
    match engine.call(Request::Delete { key: b(&keys[0]) }) {
        Response::Error(Error::Storage(later)) => assert!(later.contains("fsync"), "{later}"),
        other => panic!("a write after a failed fsync: {other:?}"),
    }
    assert_present(&engine, &acknowledged);
    // The other shard is unaffected.
    let others = keys_of_shard(1, 20);
    assert_eq!(set_until_failure(&engine, &others), (others.clone(), None));
    engine.shutdown();

    let engine = start(&dir.0, 2, FsyncPolicy::Always);
    assert_present(&engine, &acknowledged);
    assert_present(&engine, &others);
    // After the restart the shard takes writes again.
    set(&engine, &keys[49], "again");
    engine.shutdown();
}

#[test]
fn a_full_disk_fails_writes_with_a_clear_error() {
    let dir = TempDir::new("enospc");
    let engine = start_with_faults(
        &dir.0,
        Faults {
            fail_write: Some((6, 28)), // ENOSPC
            shards: vec![1],
            ..Faults::default()
        },
    );
    let keys = keys_of_shard(1, 50);
    let (acknowledged, failure) = set_until_failure(&engine, &keys);
    let Some(Error::Storage(message)) = failure else {
        panic!("expected a storage error, got {failure:?}");
    };
    assert!(
        message.contains("write") && message.contains("space"),
        "{message}"
    );
    engine.shutdown();
    let engine = start(&dir.0, 2, FsyncPolicy::Always);
    assert_present(&engine, &acknowledged);
    engine.shutdown();
}

#[test]
fn short_writes_are_completed_before_anything_is_acknowledged() {
    let dir = TempDir::new("short");
    let engine = start_with_faults(
        &dir.0,
        Faults {
            short_write: Some((3, 7)),
            ..Faults::default()
        },
    );
    let keys: Vec<String> = (0..100).map(|i| format!("short-{i}")).collect();
    assert_eq!(set_until_failure(&engine, &keys), (keys.clone(), None));
    engine.shutdown();
    let engine = start(&dir.0, 2, FsyncPolicy::Always);
    assert_present(&engine, &keys);
    engine.shutdown();
}

#[test]
fn a_failed_snapshot_keeps_the_previous_one_and_the_log() {
    let dir = TempDir::new("snapshot-error");
    let engine = start_with_faults(
        &dir.0,
        Faults {
            fail_snapshot_write: Some(28),
            ..Faults::default()
        },
    );
    let keys: Vec<String> = (0..100).map(|i| format!("snap-{i}")).collect();
    assert_eq!(set_until_failure(&engine, &keys), (keys.clone(), None));
    let before = snapshot_files(&dir.0);
    match engine.call(Request::Snapshot) {
        Response::Error(Error::Storage(message)) => {
            assert!(message.contains("snapshot"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot_files(&dir.0), before);
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Writes go on.
    set(&engine, "after-failed-snapshot", "x");
    engine.shutdown();
    let engine = start(&dir.0, 2, FsyncPolicy::Always);
    assert_present(&engine, &keys);
    assert!(matches!(
        get(&engine, "after-failed-snapshot"),
        Response::Value { .. }
    ));
    engine.shutdown();
}

#[test]
fn versions_go_on_after_a_restart_even_when_every_key_was_deleted() {
    let dir = TempDir::new("clock");
    let engine = start(&dir.0, 1, FsyncPolicy::Always);
    let mut last = 0;
    for i in 0..10 {
        last = set(&engine, &format!("gone-{i}"), "x");
    }
    for i in 0..10 {
        engine.call(Request::Delete {
            key: b(format!("gone-{i}")),
        });
    }
    engine.shutdown();
    let engine = start(&dir.0, 1, FsyncPolicy::Always);
    assert!(set(&engine, "gone-0", "again") > last);
    engine.shutdown();
}

/// With persistence on, `try_execute_local` hands back every key-value command (its answer
/// waits for the log), and answers PING in place.
#[test]
fn try_execute_local_leaves_logged_commands_to_the_log() {
    let dir = TempDir::new("fast-path");
    let engine = start(&dir.0, 1, FsyncPolicy::Always);
    let (report, outcome) = std::sync::mpsc::channel();
    assert!(engine.run_on(0, move |context| {
        for request in [
            Request::Set {
                key: b("k"),
                value: b("v"),
                options: SetOptions::default(),
            },
            Request::Get { key: b("k") },
            Request::Delete { key: b("k") },
        ] {
            match context.try_execute_local(request.clone()) {
                Err(back) => assert_eq!(back, request),
                Ok(response) => panic!("{request:?} answered before the log: {response:?}"),
            }
        }
        report
            .send(format!("{:?}", context.try_execute_local(Request::Ping)))
            .unwrap();
    }));
    assert_eq!(
        outcome.recv_timeout(Duration::from_secs(60)).unwrap(),
        "Ok(Pong)"
    );
    engine.shutdown();
}
