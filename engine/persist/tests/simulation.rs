//! Randomised runs (deterministic per proptest seed): writes through the log with group commit,
//! snapshots and trims, injected storage faults, a crash, recovery. After every crash the
//! recovered state must be the state after some prefix of the appended records, and that prefix
//! must include every record the policy promised (acknowledged under `always`, fsynced under
//! the others, everything written when only the process died).

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use support::*;
use veddb_persist::procedure::{recover, trim};
use veddb_persist::storage::{CrashMode, MemoryStorage};
use veddb_persist::writer::FsyncPolicy;
use veddb_persist::Record;

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: u8,
        value_length: u8,
        expires: Option<i8>,
    },
    Delete {
        key: u8,
    },
    /// Let time pass (drives `everysec`).
    Tick {
        ms: u16,
    },
    Snapshot,
    ShortWrite {
        bytes: u8,
    },
    FailWrite,
    FailFsync,
    TornWrite {
        bytes: u8,
    },
}

/// Cases per property: `default`, or `VEDDB_SIMULATION_CASES` for a long search (the README's
/// test command keeps the default; a search for rare failures sets thousands).
fn cases(default: u32) -> u32 {
    std::env::var("VEDDB_SIMULATION_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (any::<u8>(), any::<u8>(), proptest::option::of(any::<i8>())).prop_map(|(key, value_length, expires)| Op::Put { key: key % 24, value_length, expires }),
        5 => any::<u8>().prop_map(|key| Op::Delete { key: key % 24 }),
        4 => (0u16..1500).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::Snapshot),
        2 => any::<u8>().prop_map(|bytes| Op::ShortWrite { bytes }),
        1 => Just(Op::FailWrite),
        1 => Just(Op::FailFsync),
        1 => any::<u8>().prop_map(|bytes| Op::TornWrite { bytes }),
    ]
}

fn crash_strategy() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        Just(CrashMode::LoseUnsynced),
        Just(CrashMode::KeepEverything),
        (0usize..300, 0usize..80, any::<u64>()).prop_map(|(keep_bytes, garbage_bytes, seed)| {
            CrashMode::Torn {
                keep_bytes,
                garbage_bytes,
                seed,
            }
        }),
    ]
}

fn policy_strategy() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![
        Just(FsyncPolicy::Always),
        Just(FsyncPolicy::EverySec),
        Just(FsyncPolicy::No)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn every_crash_recovers_a_prefix_that_keeps_every_promise(
        runs in proptest::collection::vec((policy_strategy(), proptest::collection::vec(op_strategy(), 1..60), crash_strategy(), any::<bool>()), 1..4),
    ) {
        let mut storage = MemoryStorage::new();
        let mut now_ms = NOW_MS;
        for (run, (policy, ops, crash, keep_names)) in runs.into_iter().enumerate() {
            let (recovered, mut logs) = open(&mut storage, 1, policy);
            let generation = recovered.layout.generation;
            let log = &mut logs[0];
            let mut version = log.base.version_clock;
            for op in ops {
                match op {
                    Op::Put { key, value_length, expires } => {
                        version += 1;
                        let expires_at_ms = match expires {
                            None => 0,
                            // Some keys expire before the recovery's `now`, some after.
                            Some(delta) => (NOW_MS as i64 + i64::from(delta) * 10).max(1) as u64,
                        };
                        log.write(&mut storage, Record::Put {
                            key: Bytes::from(format!("key:{key}")),
                            value: Bytes::from(vec![key; value_length as usize]),
                            version,
                            expires_at_ms,
                        }, now_ms);
                    }
                    Op::Delete { key } => {
                        log.write(&mut storage, Record::Delete { key: Bytes::from(format!("key:{key}")) }, now_ms);
                    }
                    Op::Tick { ms } => {
                        now_ms += u64::from(ms);
                        log.drive(&mut storage, now_ms);
                    }
                    Op::Snapshot => {
                        // A snapshot that fails (an injected fault) is abandoned; the log goes on.
                        if !log.failed && log.snapshot(&mut storage, generation, 0, 1) {
                            trim(&mut storage, 0).unwrap();
                        }
                    }
                    Op::ShortWrite { bytes } => storage.short_write(1, usize::from(bytes) + 1),
                    Op::FailWrite => storage.fail_write(1),
                    Op::FailFsync => storage.fail_fsync(1),
                    Op::TornWrite { bytes } => storage.torn_write(1, usize::from(bytes)),
                }
                if log.failed {
                    break;
                }
            }
            let promised = match (policy, crash) {
                (_, CrashMode::KeepEverything) => log.records.len().min(written_count(log)),
                (FsyncPolicy::Always, _) => log.acknowledged_count(),
                _ => (log.writer.durable_sequence() + 1 - log.first_sequence) as usize,
            };
            prop_assert!(log.acknowledged_count() <= log.records.len());
            if keep_names {
                storage.crash_keeping_names(crash);
            } else {
                storage.crash(crash);
            }
            let recovered = recover(&mut storage, &options(1));
            let recovered = match recovered {
                Ok(recovered) => recovered,
                Err(error) => return Err(TestCaseError::fail(format!("run {run}: {error}"))),
            };
            let state = merged(&recovered.shards);
            let kept = (0..=log.records.len()).rev().find(|&count| log.state_after(count) == state);
            let Some(kept) = kept else {
                return Err(TestCaseError::fail(format!("run {run}: the recovered state is no prefix of the log")));
            };
            // Several prefixes can give the same state; the longest matching one is at least
            // the promised one only if some matching prefix reaches it.
            prop_assert!(
                (promised..=log.records.len()).any(|count| log.state_after(count) == state),
                "run {}: kept {} records, {} were promised (policy {:?}, crash {:?})", run, kept, promised, policy, crash
            );
        }
    }
}

/// Records whose bytes reached the storage (written, not necessarily durable): acknowledged
/// ones under `everysec`/`no`; under `always`, the writer's written mark is not public, so use
/// the acknowledged count (a lower bound).
fn written_count(log: &ShardLog) -> usize {
    log.acknowledged_count()
}

#[derive(Clone, Debug)]
enum Step {
    Append { key: u8 },
    SubmitWrite,
    SubmitFsync,
    CompleteWrite,
    CompleteFsync,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<u8>().prop_map(|key| Step::Append { key: key % 16 }),
        2 => Just(Step::SubmitWrite),
        2 => Just(Step::SubmitFsync),
        2 => Just(Step::CompleteWrite),
        2 => Just(Step::CompleteFsync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    /// The engine drives the writer asynchronously: a write may be in flight while an fsync is,
    /// and completions come in any order. Operations take effect when they complete. Whatever
    /// the interleaving, under `always` every acknowledged record survives a power loss.
    #[test]
    fn asynchronous_interleavings_keep_acknowledged_records(steps in proptest::collection::vec(step_strategy(), 1..200)) {
        use veddb_persist::storage::Storage;
        use veddb_persist::writer::{FsyncRequest, WriteBatch};

        let mut storage = MemoryStorage::new();
        let (_, mut logs) = open(&mut storage, 1, FsyncPolicy::Always);
        let log = &mut logs[0];
        let mut write: Option<WriteBatch> = None;
        let mut fsync: Option<FsyncRequest> = None;
        let mut version = 0;
        let settle = |log: &mut ShardLog, settled: veddb_persist::writer::Settled| {
            if settled.is_empty() {
                return;
            }
            assert_eq!(settled.outcome, Ok(()));
            assert_eq!(settled.first, log.acknowledged_through + 1);
            log.acknowledged_through = settled.end - 1;
        };
        let perform_write = |storage: &mut MemoryStorage, batch: &WriteBatch| {
            if batch.create { storage.create(&batch.file)?; }
            storage.write_at(&batch.file, batch.offset, &batch.bytes)
        };
        let perform_fsync = |storage: &mut MemoryStorage, request: &FsyncRequest| {
            storage.fsync(&request.file)?;
            if request.directory { storage.fsync_dir()?; }
            Ok(())
        };
        for step in steps {
            match step {
                Step::Append { key } => {
                    version += 1;
                    let record = Record::Put { key: Bytes::from(format!("key:{key}")), value: Bytes::from(vec![key; 20]), version, expires_at_ms: 0 };
                    log.writer.append(&record).unwrap();
                    log.records.push(record);
                }
                Step::SubmitWrite if write.is_none() => write = log.writer.poll_write(),
                Step::SubmitFsync if fsync.is_none() => fsync = log.writer.poll_fsync(NOW_MS),
                Step::CompleteWrite => if let Some(batch) = write.take() {
                    let result = perform_write(&mut storage, &batch);
                    let settled = log.writer.complete_write(batch, result);
                    settle(log, settled);
                },
                Step::CompleteFsync => if let Some(request) = fsync.take() {
                    let result = perform_fsync(&mut storage, &request);
                    let settled = log.writer.complete_fsync(result);
                    settle(log, settled);
                },
                _ => {}
            }
        }
        prop_assert!(log.writer.failure().is_none(), "{:?}", log.writer.failure());
        let acknowledged = log.acknowledged_count();
        storage.crash(CrashMode::LoseUnsynced);
        let recovered = recover(&mut storage, &options(1)).map_err(|error| TestCaseError::fail(error.to_string()))?;
        let state = merged(&recovered.shards);
        prop_assert!(
            (acknowledged..=log.records.len()).any(|count| log.state_after(count) == state),
            "{} records acknowledged, the recovered state is not a prefix that holds them", acknowledged
        );
    }
}
