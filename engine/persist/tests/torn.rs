//! Exhaustive torn writes: one scripted life of a data directory (first start, log writes that
//! roll over to new segments, a snapshot and a trim, a change of shard count, more writes), and
//! a crash inside **every** storage write it makes, torn after **every** byte of that write
//! (0 ..= its length), with the rest of the write's extent holding nothing, zeros or garbage,
//! and with the directory's names either kept or back to their last fsync.
//!
//! Every file kind is torn this way where it is written: segment headers and records (a
//! segment's first write is its header and first record), snapshots being written (temporary
//! files), and layout markers being written (temporary files), on a first start and on a change
//! of shard count. After each crash recovery must succeed, hold exactly the records whose
//! writes landed whole (or, when names may be lost, a prefix that keeps every promise), and the
//! directory must take new writes that survive the next restart.
//!
//! A random test found the torn-segment-header defect once in many runs; this one visits every
//! tear point of every write of the script, so the space is covered, not sampled.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use support::*;
use veddb_persist::procedure::{commit_layout, recover, trim, Recovered};
use veddb_persist::recovery::{owner, StoredEntry};
use veddb_persist::storage::{CrashMode, MemoryStorage, TornFill};
use veddb_persist::writer::FsyncPolicy;
use veddb_persist::{EntryLimits, Record};

/// Shard counts of the script's two halves.
const SHARDS_BEFORE: u32 = 1;
const SHARDS_AFTER: u32 = 2;

/// What the script got done before the machine died (or the end).
struct Outcome {
    /// The logs of the part of the script that ran last (empty before the first start ended).
    logs: Vec<ShardLog>,
    /// The shard count recovery must be started with now.
    shard_count: u32,
}

/// The `i`-th record of the script: puts of five keys with versions that never repeat (so
/// every prefix gives another state), values of 10 to 190 bytes, and a delete of a key that
/// exists now and then.
fn record(i: u64, shard_count: u32, shard: u32) -> Record {
    let mut n = i;
    let key = loop {
        let key = format!("key:{}", n % 5);
        if owner(key.as_bytes(), shard_count) == shard {
            break key;
        }
        n += 1;
    };
    if i % 7 == 6 {
        return delete(&key);
    }
    Record::Put {
        key: Bytes::from(key),
        value: Bytes::from(vec![b'a' + (i % 26) as u8; 10 + (i as usize * 37) % 180]),
        version: 1_000 + i,
        expires_at_ms: 0,
    }
}

/// Recovers with `shard_count` shards and commits a new layout if needed; `None` if the
/// machine died on the way.
fn start(storage: &mut MemoryStorage, shard_count: u32) -> Option<Recovered> {
    let mut recovered = recover(storage, &options(shard_count)).ok()?;
    commit_layout(storage, &mut recovered, EntryLimits::default(), NOW_MS).ok()?;
    Some(recovered)
}

/// Appends `count` records spread over the logs' shards; false if the machine died.
fn write_records(
    storage: &mut MemoryStorage,
    logs: &mut [ShardLog],
    first: u64,
    count: u64,
) -> bool {
    let shard_count = logs.len() as u32;
    for i in first..first + count {
        let shard = (i % u64::from(shard_count)) as u32;
        let log = &mut logs[shard as usize];
        // A delete of a key that does not exist changes nothing: skip it, so that every
        // record changes the state.
        let record = record(i, shard_count, shard);
        if matches!(record, Record::Delete { .. })
            && !log
                .state_after(log.records.len())
                .contains_key(record.key())
        {
            continue;
        }
        log.write(storage, record, NOW_MS);
        if log.failed {
            return false;
        }
    }
    true
}

/// The script. Stops at the first write that fails (the machine died).
fn script(storage: &mut MemoryStorage, policy: FsyncPolicy) -> Outcome {
    let mut outcome = Outcome {
        logs: Vec::new(),
        shard_count: SHARDS_BEFORE,
    };
    // A first start: an empty snapshot per shard, then the layout marker.
    let Some(recovered) = start(storage, SHARDS_BEFORE) else {
        return outcome;
    };
    outcome.logs = open_logs(&recovered, policy);
    // Enough records for the log to roll over to new segments (1 KiB each).
    if !write_records(storage, &mut outcome.logs, 0, 14) {
        return outcome;
    }
    // A snapshot and a trim, then more records after it.
    let generation = recovered.layout.generation;
    if !outcome.logs[0].snapshot(storage, generation, 0, SHARDS_BEFORE) {
        return outcome;
    }
    trim(storage, 0).expect("trim");
    if !write_records(storage, &mut outcome.logs, 14, 4) {
        return outcome;
    }
    for log in &mut outcome.logs {
        log.writer.close();
        log.drive(storage, NOW_MS);
        if log.failed {
            return outcome;
        }
    }
    // A restart with another shard count: snapshots of the new generation, its layout marker,
    // the old generation's files removed.
    outcome.shard_count = SHARDS_AFTER;
    let Some(recovered) = start(storage, SHARDS_AFTER) else {
        return outcome;
    };
    outcome.logs = open_logs(&recovered, policy);
    write_records(storage, &mut outcome.logs, 18, 8);
    outcome
}

/// The state after `counts[s]` records of each log `s`, all shards in one map.
fn state(logs: &[ShardLog], counts: &[usize]) -> BTreeMap<Bytes, StoredEntry> {
    logs.iter()
        .zip(counts)
        .flat_map(|(log, &count)| log.state_after(count))
        .collect()
}

/// Every combination of per-shard counts within `ranges`.
fn combinations(ranges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut all = vec![Vec::new()];
    for &(low, high) in ranges {
        all = all
            .into_iter()
            .flat_map(|prefix| {
                (low..=high).map(move |count| {
                    let mut next = prefix.clone();
                    next.push(count);
                    next
                })
            })
            .collect();
    }
    all
}

/// Per log: records that may have survived, as (promised, written). Records whose write
/// completed are "written"; the one in a torn write is written only if the tear kept all of it.
fn bounds(
    logs: &[ShardLog],
    policy: FsyncPolicy,
    names_kept: bool,
    torn_whole: bool,
) -> Vec<(usize, usize)> {
    logs.iter()
        .map(|log| {
            let appended = log.records.len();
            let completed = if log.failed { appended - 1 } else { appended };
            let written = if torn_whole { appended } else { completed };
            let promised = if names_kept {
                // Every byte that reached a file survives, names included: exactly what was
                // written is recovered.
                written
            } else {
                match policy {
                    FsyncPolicy::Always => log.acknowledged_count(),
                    _ => (log.writer.durable_sequence() + 1 - log.first_sequence) as usize,
                }
            };
            (promised.min(written), written)
        })
        .collect()
}

/// After recovery the directory takes new writes, and they survive the next restart.
fn goes_on(storage: &mut MemoryStorage, recovered: &mut Recovered, context: &str) {
    commit_layout(storage, recovered, EntryLimits::default(), NOW_MS)
        .unwrap_or_else(|error| panic!("{context}: commit after recovery: {error}"));
    let mut logs = open_logs(recovered, FsyncPolicy::Always);
    let record = put("after-the-crash", "still-writable", 1_000_000);
    let shard = owner(record.key(), recovered.layout.shard_count) as usize;
    assert!(
        logs[shard].write(storage, record, NOW_MS),
        "{context}: a write after recovery"
    );
    assert!(!logs[shard].failed, "{context}: the log after recovery");
    storage.crash(CrashMode::LoseUnsynced);
    let again = recover(storage, &options(recovered.layout.shard_count))
        .unwrap_or_else(|error| panic!("{context}: the second recovery: {error}"));
    let merged = merged(&again.shards);
    assert_eq!(
        merged
            .get(b"after-the-crash".as_slice())
            .map(|entry| entry.value.clone()),
        Some(Bytes::from_static(b"still-writable")),
        "{context}: the acknowledged write after recovery"
    );
}

fn tear_everywhere(policy: FsyncPolicy) -> usize {
    let mut dry = MemoryStorage::new();
    let full = script(&mut dry, policy);
    assert!(
        full.logs.iter().all(|log| !log.failed),
        "the script runs clean"
    );
    let lengths = dry.write_lengths().to_vec();
    let fills = [
        None,
        Some(TornFill::Zeros),
        Some(TornFill::Garbage { seed: 0x5EED }),
    ];
    let mut cases = 0;
    for (index, &length) in lengths.iter().enumerate() {
        let nth = index as u64 + 1;
        for keep in 0..=length {
            for fill in fills {
                for names_kept in [true, false] {
                    cases += 1;
                    let context = format!(
                        "{policy:?}: write {nth} of {} ({length} bytes) torn after {keep} bytes, \
                         fill {fill:?}, names kept {names_kept}",
                        lengths.len()
                    );
                    let mut storage = MemoryStorage::new();
                    match fill {
                        None => storage.torn_write(nth, keep),
                        Some(fill) => storage.torn_write_filled(nth, keep, fill),
                    }
                    let outcome = script(&mut storage, policy);
                    if names_kept {
                        storage.crash_keeping_names(CrashMode::KeepEverything);
                    } else {
                        storage.crash(CrashMode::KeepEverything);
                    }
                    let mut recovered = recover(&mut storage, &options(outcome.shard_count))
                        .unwrap_or_else(|error| panic!("{context}: recovery failed: {error}"));
                    let found = merged(&recovered.shards);
                    let ranges = bounds(&outcome.logs, policy, names_kept, keep >= length);
                    let matches = combinations(&ranges)
                        .into_iter()
                        .any(|counts| state(&outcome.logs, &counts) == found);
                    assert!(
                        matches,
                        "{context}: the recovered state ({} keys) is not the state after \
                         the records allowed per shard {ranges:?}",
                        found.len()
                    );
                    goes_on(&mut storage, &mut recovered, &context);
                }
            }
        }
    }
    println!(
        "{policy:?}: {cases} crashes over {} writes of {} bytes",
        lengths.len(),
        lengths.iter().sum::<usize>()
    );
    cases
}

#[test]
fn a_crash_torn_at_every_byte_of_every_write_recovers_always() {
    let cases = tear_everywhere(FsyncPolicy::Always);
    assert!(cases > 1_000, "{cases} cases");
}

#[test]
fn a_crash_torn_at_every_byte_of_every_write_recovers_everysec() {
    let cases = tear_everywhere(FsyncPolicy::EverySec);
    assert!(cases > 1_000, "{cases} cases");
}

#[test]
fn a_crash_torn_at_every_byte_of_every_write_recovers_no_fsync() {
    let cases = tear_everywhere(FsyncPolicy::No);
    assert!(cases > 1_000, "{cases} cases");
}

/// A directory after the first half of the script, stopped cleanly: one shard, a snapshot of
/// the first 14 records (no trim: the log since the start is still there), 4 records after it.
fn directory_with_a_snapshot() -> (MemoryStorage, ShardLog, String) {
    use veddb_persist::storage::Storage;
    let mut storage = MemoryStorage::new();
    let recovered = start(&mut storage, SHARDS_BEFORE).expect("first start");
    let mut logs = open_logs(&recovered, FsyncPolicy::Always);
    assert!(write_records(&mut storage, &mut logs, 0, 14));
    assert!(logs[0].snapshot(&mut storage, recovered.layout.generation, 0, SHARDS_BEFORE));
    assert!(write_records(&mut storage, &mut logs, 14, 4));
    let snapshot = storage
        .list()
        .unwrap()
        .into_iter()
        .map(|file| file.name)
        .find(|name| name.ends_with(".snap") && !name.contains("-00000000000000000000."))
        .expect("the snapshot after 14 records");
    let log = logs.pop().unwrap();
    (storage, log, snapshot)
}

/// Replaces a file's content durably, as a disk that lost part of it would.
fn damage(storage: &mut MemoryStorage, file: &str, keep: usize, fill: Option<TornFill>) {
    use veddb_persist::storage::Storage;
    let length = storage.contents(file).unwrap().len();
    storage.truncate(file, keep as u64).unwrap();
    if let Some(fill) = fill {
        storage
            .write_at(file, keep as u64, &fill.bytes(length - keep))
            .unwrap();
    }
    storage.fsync(file).unwrap();
}

/// Snapshots and layout markers are published complete (written, fsynced, renamed), so a crash
/// cannot tear them; a disk that loses part of one afterwards can. A snapshot cut or filled at
/// any byte is refused with a warning and recovery falls back to the log (or an older
/// snapshot) and loses nothing.
#[test]
fn a_published_snapshot_damaged_at_every_byte_falls_back_to_the_log() {
    let (clean, log, snapshot) = directory_with_a_snapshot();
    let length = clean.contents(&snapshot).unwrap().len();
    let expected = log.state_after(log.records.len());
    for keep in 0..length {
        for fill in [
            None,
            Some(TornFill::Zeros),
            Some(TornFill::Garbage { seed: 7 }),
        ] {
            let context = format!("{snapshot} ({length} bytes) cut after {keep}, fill {fill:?}");
            let mut storage = clean.clone();
            damage(&mut storage, &snapshot, keep, fill);
            let recovered = recover(&mut storage, &options(SHARDS_BEFORE))
                .unwrap_or_else(|error| panic!("{context}: {error}"));
            assert_eq!(merged(&recovered.shards), expected, "{context}");
            assert!(
                recovered.warnings.iter().any(|warning| matches!(
                    warning,
                    veddb_persist::procedure::Warning::SnapshotRefused { file, .. } if *file == snapshot
                )),
                "{context}: no warning about the snapshot: {:?}",
                recovered.warnings
            );
        }
    }
}

/// The layout marker is the commit point of a generation: a damaged one is refused with an
/// error that names it (never read as another layout, never a panic).
#[test]
fn a_published_layout_marker_damaged_at_every_byte_is_refused_by_name() {
    let (clean, _, _) = directory_with_a_snapshot();
    let marker = veddb_persist::layout::Layout {
        generation: 1,
        shard_count: SHARDS_BEFORE,
    }
    .file_name();
    let length = clean.contents(&marker).unwrap().len();
    for keep in 0..length {
        for fill in [
            None,
            Some(TornFill::Zeros),
            Some(TornFill::Garbage { seed: 9 }),
        ] {
            let mut storage = clean.clone();
            damage(&mut storage, &marker, keep, fill);
            match recover(&mut storage, &options(SHARDS_BEFORE)) {
                Err(veddb_persist::recovery::RecoveryError::LayoutDamaged { file, .. }) => {
                    assert_eq!(file, marker)
                }
                other => panic!("{marker} cut after {keep}, fill {fill:?}: {other:?}"),
            }
        }
    }
}
