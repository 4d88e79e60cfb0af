//! Fault injection under the log and snapshot writers: each fault the issue lists ends as
//! documented, without a panic, and every acknowledged record survives a crash.

mod support;

use support::*;
use veddb_persist::procedure::{recover, recover_parallel, repair, trim, RepairAction, Warning};
use veddb_persist::recovery::{owner, RecoveryError};
use veddb_persist::segment::SEGMENT_HEADER_BYTES;
use veddb_persist::storage::{CrashMode, MemoryStorage, Storage, EIO, ENOSPC};
use veddb_persist::writer::{AppendError, FsyncPolicy};
use veddb_persist::Record;

fn value(i: u64) -> String {
    format!("value-{i}-{}", "x".repeat((i % 13) as usize))
}

/// Writes `count` puts (keys cycle over 7 names) through shard 0's log.
fn write_puts(log: &mut ShardLog, storage: &mut MemoryStorage, from: u64, count: u64) {
    for i in from..from + count {
        assert!(log.write(storage, put(&format!("k{}", i % 7), &value(i), i), NOW_MS));
    }
}

fn recovered_state(
    storage: &mut MemoryStorage,
) -> (
    Vec<Warning>,
    std::collections::BTreeMap<bytes::Bytes, veddb_persist::recovery::StoredEntry>,
) {
    let recovered = recover(storage, &options(1)).expect("recovery");
    (recovered.warnings.clone(), merged(&recovered.shards))
}

#[test]
fn torn_write_is_cut_with_a_warning_and_acknowledged_records_survive() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    write_puts(log, &mut storage, 1, 10);
    assert_eq!(log.acknowledged_count(), 10);
    // The next write gets 30 bytes into the file, then the machine dies.
    storage.torn_write(1, 30);
    assert!(log.write(&mut storage, put("k1", "lost", 11), NOW_MS));
    assert!(log.failed, "the interrupted write is not acknowledged");
    storage.crash(CrashMode::KeepEverything);

    let (warnings, state) = recovered_state(&mut storage);
    assert_eq!(state, log.state_after(10));
    let [Warning::TornTail(torn)] = warnings.as_slice() else {
        panic!("{warnings:?}")
    };
    assert!(!torn.remove_file);
    assert!(
        warnings[0].to_string().contains("torn write"),
        "{}",
        warnings[0]
    );
    // The tail was cut: a second recovery is clean.
    let (warnings, again) = recovered_state(&mut storage);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(again, state);
}

#[test]
fn torn_unsynced_tail_with_garbage_under_everysec_recovers_a_prefix() {
    for seed in [0, 1, 2, 3] {
        for keep in [0, 5, 17, 60, 200] {
            let mut storage = MemoryStorage::new();
            let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::EverySec);
            let log = &mut logs[0];
            write_puts(log, &mut storage, 1, 3);
            log.drive(&mut storage, NOW_MS + 5_000); // everything durable
            let durable = log.writer.durable_sequence();
            for i in 4..=9 {
                assert!(log.write(
                    &mut storage,
                    put(&format!("k{i}"), &value(i), i),
                    NOW_MS + 5_100
                ));
            }
            assert_eq!(
                log.acknowledged_count(),
                9,
                "acknowledged on write under everysec"
            );
            storage.crash(CrashMode::Torn {
                keep_bytes: keep,
                garbage_bytes: 64,
                seed,
            });
            let recovered = recover(&mut storage, &options(1)).expect("recovery");
            let state = merged(&recovered.shards);
            let kept = (0..=log.records.len())
                .find(|&count| log.state_after(count) == state)
                .unwrap_or_else(|| panic!("seed {seed} keep {keep}: not a prefix"));
            assert!(
                kept as u64 >= durable,
                "seed {seed} keep {keep}: lost fsynced records"
            );
        }
    }
}

#[test]
fn short_write_is_completed_and_survives() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    write_puts(log, &mut storage, 1, 4);
    storage.short_write(1, 7);
    storage.short_write(2, 1);
    write_puts(log, &mut storage, 5, 4);
    assert!(!log.failed);
    assert_eq!(log.acknowledged_count(), 8);
    storage.crash(CrashMode::LoseUnsynced);
    let (warnings, state) = recovered_state(&mut storage);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(state, log.state_after(8));
}

#[test]
fn fsync_error_fails_waiting_writes_stops_the_shard_and_keeps_what_was_acknowledged() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    write_puts(log, &mut storage, 1, 5);
    storage.fail_fsync(1);
    assert!(log.write(&mut storage, put("a", "1", 6), NOW_MS));
    assert!(log.failed);
    assert_eq!(log.acknowledged_count(), 5);
    let failure = log.writer.failure().cloned().expect("stopped");
    assert_eq!(failure.os_error, Some(EIO));
    assert!(matches!(
        log.writer.append(&put("b", "2", 7)),
        Err(AppendError::Stopped(_))
    ));
    storage.crash(CrashMode::LoseUnsynced);
    let (warnings, state) = recovered_state(&mut storage);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(state, log.state_after(5));
}

#[test]
fn full_disk_fails_the_write_and_a_restart_continues_after_the_cut() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    write_puts(log, &mut storage, 1, 5);
    let used: u64 = storage.list().unwrap().iter().map(|file| file.size).sum();
    storage.set_capacity_bytes(Some(used + 20));
    assert!(log.write(&mut storage, put("big", &"y".repeat(100), 6), NOW_MS));
    assert!(log.failed);
    let failure = log.writer.failure().cloned().unwrap();
    assert_eq!(
        (failure.operation, failure.os_error),
        ("write", Some(ENOSPC))
    );
    // The process dies; the kernel keeps the 20 bytes that fit.
    storage.crash(CrashMode::KeepEverything);
    storage.set_capacity_bytes(None);

    let (recovered, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    assert!(
        matches!(recovered.warnings.as_slice(), [Warning::TornTail(_)]),
        "{:?}",
        recovered.warnings
    );
    assert_eq!(merged(&recovered.shards), log.state_after(5));
    assert_eq!(recovered.next_sequences, [6]);
    let next = &mut logs[0];
    assert!(next.write(&mut storage, put("after", "restart", 6), NOW_MS));
    assert_eq!(next.acknowledged_count(), 1);
    storage.crash(CrashMode::LoseUnsynced);
    let (warnings, state) = recovered_state(&mut storage);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(state, next.state_after(1));
}

#[test]
fn flipped_bit_mid_segment_stops_recovery_and_repair_cuts_there() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    write_puts(log, &mut storage, 1, 6);
    let segment = log.writer.current_segment().unwrap().to_string();
    // Find the offset of the fourth record, flip a bit inside its value.
    let bytes = storage.contents(&segment).unwrap().to_vec();
    let mut offset = SEGMENT_HEADER_BYTES;
    for _ in 0..3 {
        offset += 8 + u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
    }
    storage.flip_bit(&segment, (offset + 45) as u64, 2).unwrap();
    storage.crash(CrashMode::LoseUnsynced);

    let error = recover(&mut storage, &options(1)).unwrap_err();
    let RecoveryError::Corrupt {
        file, offset: at, ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!(file, &segment);
    assert_eq!(*at, offset as u64);
    let message = error.to_string();
    assert!(
        message.contains(&segment) && message.contains(&format!("offset {offset}")),
        "{message}"
    );
    assert!(message.contains("--repair"), "{message}");

    let (recovered, actions) = repair(&mut storage, &options(1)).unwrap();
    assert_eq!(
        actions,
        [
            RepairAction::BackedUp {
                file: segment.clone(),
                backup: format!("{segment}.bak")
            },
            RepairAction::Truncated {
                file: segment.clone(),
                offset: offset as u64
            }
        ]
    );
    assert_eq!(merged(&recovered.shards), log.state_after(3));
    assert_eq!(
        storage.contents(&format!("{segment}.bak")).unwrap(),
        bytes_with_flip(&bytes, offset + 45, 2)
    );
    // The backup is left alone by later starts, with a warning.
    let (warnings, _) = recovered_state(&mut storage);
    assert!(
        matches!(warnings.as_slice(), [Warning::UnknownFile { .. }]),
        "{warnings:?}"
    );
}

fn bytes_with_flip(bytes: &[u8], offset: usize, bit: u8) -> &'static [u8] {
    let mut copy = bytes.to_vec();
    copy[offset] ^= 1 << bit;
    copy.leak()
}

#[test]
fn missing_segment_is_named_and_repair_keeps_what_comes_before_the_gap() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    let mut segments = Vec::new();
    let mut i = 1;
    while segments.len() < 4 {
        write_puts(log, &mut storage, i, 1);
        i += 1;
        let current = log.writer.current_segment().unwrap();
        if segments.last() != Some(&current) {
            segments.push(current);
        }
    }
    storage.drop_file(&segments[1].to_string()).unwrap();
    storage.crash(CrashMode::LoseUnsynced);

    let error = recover(&mut storage, &options(1)).unwrap_err();
    let RecoveryError::MissingSegment {
        after,
        file,
        expected,
        found,
        ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!(after, &segments[0].to_string());
    assert_eq!(file, &segments[2].to_string());
    assert_eq!(*expected, segments[1].first_sequence);
    assert_eq!(*found, segments[2].first_sequence);
    assert!(
        error.to_string().contains(&segments[2].to_string()),
        "{error}"
    );

    let (recovered, actions) = repair(&mut storage, &options(1)).unwrap();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions
        .iter()
        .all(|action| matches!(action, RepairAction::MovedAside { .. })));
    let kept = (segments[1].first_sequence - 1) as usize;
    assert_eq!(merged(&recovered.shards), log.state_after(kept));
    assert_eq!(recovered.next_sequences, [segments[1].first_sequence]);
}

#[test]
fn damaged_newest_snapshot_falls_back_to_the_previous_one() {
    let mut storage = MemoryStorage::new();
    let (recovered, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let generation = recovered.layout.generation;
    let log = &mut logs[0];
    write_puts(log, &mut storage, 1, 30);
    assert!(log.snapshot(&mut storage, generation, 0, 1));
    trim(&mut storage, 0).unwrap();
    write_puts(log, &mut storage, 31, 30);
    assert!(log.snapshot(&mut storage, generation, 0, 1));
    let trimmed = trim(&mut storage, 0).unwrap();
    assert!(
        !trimmed.is_empty(),
        "two snapshots: the log before the older one goes"
    );
    write_puts(log, &mut storage, 61, 5);
    let newest = veddb_persist::snapshot::SnapshotName {
        generation,
        shard: 0,
        sequence: 60,
    }
    .to_string();
    let size = storage.open(&newest).unwrap();
    storage.truncate(&newest, size - 3).unwrap();
    storage.fsync(&newest).unwrap();
    storage.crash(CrashMode::LoseUnsynced);

    let recovered = recover(&mut storage, &options(1)).unwrap();
    assert!(
        matches!(recovered.warnings.as_slice(), [Warning::SnapshotRefused { file, .. }] if *file == newest),
        "{:?}",
        recovered.warnings
    );
    assert_eq!(merged(&recovered.shards), log.state_after(65));
}

#[test]
fn a_crash_while_writing_a_snapshot_leaves_the_old_state_and_a_temporary_file_to_remove() {
    let mut storage = MemoryStorage::new();
    let (recovered, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    write_puts(log, &mut storage, 1, 12);
    storage.torn_write(1, 40);
    let header = veddb_persist::snapshot::SnapshotHeader {
        generation: recovered.layout.generation,
        shard: 0,
        shard_count: 1,
        sequence: 12,
        version_clock: 12,
        created_at_ms: NOW_MS,
    };
    let result =
        veddb_persist::procedure::write_snapshot(&mut storage, &header, Default::default(), []);
    assert!(result.is_err());
    storage.crash_keeping_names(CrashMode::KeepEverything);
    assert!(storage
        .list()
        .unwrap()
        .iter()
        .any(|file| file.name.ends_with(".snap.tmp")));
    let recovered = recover(&mut storage, &options(1)).unwrap();
    assert_eq!(recovered.removed, [header.name().temporary()]);
    assert_eq!(merged(&recovered.shards), log.state_after(12));
}

#[test]
fn a_crash_before_the_first_record_is_durable_leaves_a_segment_that_is_removed() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    storage.torn_write(1, 10);
    assert!(log.write(&mut storage, put("a", "1", 1), NOW_MS));
    // The directory entry reached the disk, the write only partly.
    storage.crash_keeping_names(CrashMode::KeepEverything);
    let recovered = recover(&mut storage, &options(1)).unwrap();
    assert!(
        matches!(recovered.warnings.as_slice(), [Warning::TornTail(torn)] if torn.remove_file),
        "{:?}",
        recovered.warnings
    );
    assert_eq!(recovered.next_sequences, [1]);
    // The next run's first segment takes the same name without a clash.
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    assert!(logs[0].write(&mut storage, put("a", "2", 1), NOW_MS));
    assert!(!logs[0].failed);
}

#[test]
fn changing_the_shard_count_rehashes_and_survives_a_crash_midway() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 2, FsyncPolicy::Always);
    let mut model = std::collections::BTreeMap::new();
    for i in 1..=60u64 {
        let key = format!("key:{i}");
        let shard = owner(key.as_bytes(), 2) as usize;
        let version = i;
        assert!(logs[shard].write(&mut storage, put(&key, &value(i), version), NOW_MS));
        model.insert(key, value(i));
    }
    let expected = merged(&[logs[0].clone_state(), logs[1].clone_state()]);
    storage.crash(CrashMode::LoseUnsynced);

    // A change to 3 shards that crashes while writing the new generation's snapshots.
    let mut interrupted = storage.clone();
    let mut recovered = recover(&mut interrupted, &options(3)).unwrap();
    assert!(recovered.commit_needed);
    assert_eq!(recovered.layout.generation, 2);
    interrupted.torn_write(3, 10);
    assert!(veddb_persist::procedure::commit_layout(
        &mut interrupted,
        &mut recovered,
        Default::default(),
        NOW_MS
    )
    .is_err());
    interrupted.crash(CrashMode::KeepEverything);
    let old = recover(&mut interrupted, &options(2)).unwrap();
    assert_eq!(
        old.layout.generation, 1,
        "the old generation stays in force"
    );
    assert!(
        !old.removed.is_empty(),
        "the unfinished generation's files are removed"
    );
    assert_eq!(merged(&old.shards), expected);

    // The change done properly.
    let (recovered, mut logs) = open(&mut storage, 3, FsyncPolicy::Always);
    assert_eq!(recovered.layout.shard_count, 3);
    assert_eq!(merged(&recovered.shards), expected);
    for (shard, image) in recovered.shards.iter().enumerate() {
        for key in image.entries.keys() {
            assert_eq!(owner(key, 3) as usize, shard);
        }
        assert!(image.version_clock >= 60, "versions never go back");
    }
    let key = "key:new";
    let shard = owner(key.as_bytes(), 3) as usize;
    assert!(logs[shard].write(&mut storage, put(key, "v", 61), NOW_MS));
    storage.crash(CrashMode::LoseUnsynced);
    let again = recover(&mut storage, &options(3)).unwrap();
    assert!(!again.commit_needed);
    let state = merged(&again.shards);
    assert_eq!(state.len(), expected.len() + 1);
    // Only generation 2 files remain.
    for file in storage.list().unwrap() {
        assert!(file.name.starts_with("0000000002-"), "{}", file.name);
    }
    // And back to one shard.
    let (one, _) = open(&mut storage, 1, FsyncPolicy::Always);
    assert_eq!(merged(&one.shards), state);
}

#[test]
fn expired_keys_stay_expired_and_versions_are_not_reused() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
    let log = &mut logs[0];
    assert!(log.write(&mut storage, put("ttl", "1", 1), NOW_MS));
    assert!(log.write(
        &mut storage,
        Record::Put {
            key: "ttl".into(),
            value: "1".into(),
            version: 2,
            expires_at_ms: NOW_MS - 1,
        },
        NOW_MS
    ));
    assert!(log.write(
        &mut storage,
        Record::Put {
            key: "later".into(),
            value: "2".into(),
            version: 3,
            expires_at_ms: NOW_MS + 1,
        },
        NOW_MS
    ));
    assert!(log.write(&mut storage, put("gone", "3", 9), NOW_MS));
    assert!(log.write(&mut storage, delete("gone"), NOW_MS));
    storage.crash(CrashMode::LoseUnsynced);
    let recovered = recover(&mut storage, &options(1)).unwrap();
    let keys: Vec<_> = recovered.shards[0].entries.keys().cloned().collect();
    assert_eq!(keys, ["later"]);
    assert_eq!(
        recovered.shards[0].version_clock, 9,
        "the deleted key's version is not handed out again"
    );
}

trait CloneState {
    fn clone_state(&self) -> veddb_persist::recovery::ShardImage;
}

impl CloneState for ShardLog {
    fn clone_state(&self) -> veddb_persist::recovery::ShardImage {
        veddb_persist::recovery::ShardImage {
            entries: self.state_after(self.records.len()).into_iter().collect(),
            version_clock: 0,
        }
    }
}

/// Writes `count` puts to every shard of `logs`, keys owned by that shard.
fn write_each_shard(logs: &mut [ShardLog], storage: &mut MemoryStorage, count: u64) {
    let shards = logs.len() as u32;
    for (shard, log) in logs.iter_mut().enumerate() {
        let mut written = 0;
        let mut i = 0u64;
        while written < count {
            i += 1;
            let key = format!("s{shard}-{i}");
            if owner(key.as_bytes(), shards) as usize != shard {
                continue;
            }
            written += 1;
            assert!(log.write(storage, put(&key, &value(i), written), NOW_MS));
        }
    }
}

#[test]
fn parallel_recovery_finds_what_sequential_recovery_finds() {
    let mut storage = MemoryStorage::new();
    let (_, mut logs) = open(&mut storage, 4, FsyncPolicy::Always);
    write_each_shard(&mut logs, &mut storage, 40);
    storage.crash(CrashMode::LoseUnsynced);
    let fork_of = |storage: &MemoryStorage| {
        let copy = storage.clone();
        move || Box::new(copy.clone()) as Box<dyn Storage + Send>
    };
    let parallel = |storage: &MemoryStorage, shards: u32, threads: usize| {
        recover_parallel(
            &mut storage.clone(),
            &options(shards),
            threads,
            fork_of(storage),
        )
    };
    let sequential = recover(&mut storage.clone(), &options(4)).expect("recovery");
    for threads in [1, 2, 3, 8] {
        let parallel4 = parallel(&storage, 4, threads).expect("parallel recovery");
        assert_eq!(parallel4.shards, sequential.shards, "{threads} threads");
        assert_eq!(parallel4.next_sequences, sequential.next_sequences);
        assert_eq!(parallel4.layout, sequential.layout);
        assert_eq!(parallel4.warnings, sequential.warnings);
        // Into 3 shards: re-hashed alike.
        let sequential3 = recover(&mut storage.clone(), &options(3)).unwrap();
        let parallel3 = parallel(&storage, 3, threads).unwrap();
        assert_eq!(parallel3.shards, sequential3.shards);
    }
    assert_eq!(merged(&sequential.shards).len(), 160);

    // Corruption in shards 1 and 3: both report shard 1's, whatever finished first.
    for shard in [1, 3] {
        let segment = logs[shard].writer.current_segment().unwrap().to_string();
        storage
            .flip_bit(&segment, (SEGMENT_HEADER_BYTES + 20) as u64, 1)
            .unwrap();
    }
    let sequential = recover(&mut storage.clone(), &options(4)).unwrap_err();
    let first = logs[1].writer.current_segment().unwrap().to_string();
    assert!(sequential.to_string().contains(&first), "{sequential}");
    for threads in [1, 2, 4] {
        for _ in 0..5 {
            let error = parallel(&storage, 4, threads).unwrap_err();
            assert_eq!(error, sequential, "{threads} threads");
        }
    }
}
