//! Test support: a shard's log written through `LogWriter` onto `MemoryStorage`, with a model of
//! what was appended and acknowledged.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use veddb_persist::procedure::{commit_layout, drive_log, recover, RecoverOptions, Recovered};
use veddb_persist::recovery::{ShardImage, StoredEntry};
use veddb_persist::snapshot::{SnapshotEntryRef, SnapshotHeader};
use veddb_persist::storage::MemoryStorage;
use veddb_persist::writer::{FsyncPolicy, LogConfig, LogWriter, SEGMENT_BYTES_TARGET_MIN};
use veddb_persist::{EntryLimits, Record};

pub const NOW_MS: u64 = 1_000_000;

pub fn options(shard_count: u32) -> RecoverOptions {
    RecoverOptions {
        shard_count,
        now_ms: NOW_MS,
        limits: EntryLimits::default(),
    }
}

/// One shard's writer and everything it was asked to log.
pub struct ShardLog {
    pub writer: LogWriter,
    /// The image the log started from (recovered state).
    pub base: ShardImage,
    /// Records appended since, in sequence order, starting at `first_sequence`.
    pub records: Vec<Record>,
    pub first_sequence: u64,
    /// Every record up to this sequence was acknowledged.
    pub acknowledged_through: u64,
    pub failed: bool,
}

impl ShardLog {
    /// The state after the base and the first `count` records.
    pub fn state_after(&self, count: usize) -> BTreeMap<Bytes, StoredEntry> {
        let mut image = self.base.clone();
        for record in &self.records[..count] {
            image.apply(record.as_ref());
        }
        image.entries.retain(|_, entry| !entry.is_expired(NOW_MS));
        image.entries.into_iter().collect()
    }

    pub fn acknowledged_count(&self) -> usize {
        (self.acknowledged_through + 1 - self.first_sequence) as usize
    }

    /// Appends and drives the writer until idle or stopped; true if the log accepted it.
    pub fn write(&mut self, storage: &mut MemoryStorage, record: Record, now_ms: u64) -> bool {
        if self.writer.append(&record).is_err() {
            return false;
        }
        self.records.push(record);
        self.drive(storage, now_ms);
        true
    }

    pub fn drive(&mut self, storage: &mut MemoryStorage, now_ms: u64) {
        for settled in drive_log(&mut self.writer, storage, now_ms) {
            match settled.outcome {
                Ok(()) => {
                    assert_eq!(
                        settled.first,
                        self.acknowledged_through + 1,
                        "settled in order"
                    );
                    self.acknowledged_through = settled.end - 1;
                }
                Err(_) => self.failed = true,
            }
        }
    }

    /// Writes a snapshot of the state after every appended record; whether it was written.
    pub fn snapshot(
        &self,
        storage: &mut MemoryStorage,
        generation: u32,
        shard: u32,
        shard_count: u32,
    ) -> bool {
        let entries = self.state_after(self.records.len());
        let mut image = self.base.clone();
        for record in &self.records {
            image.apply(record.as_ref());
        }
        let header = SnapshotHeader {
            generation,
            shard,
            shard_count,
            sequence: self.writer.last_sequence(),
            version_clock: image.version_clock,
            created_at_ms: NOW_MS,
        };
        veddb_persist::procedure::write_snapshot(
            storage,
            &header,
            EntryLimits::default(),
            entries.iter().map(|(key, entry)| SnapshotEntryRef {
                key,
                value: &entry.value,
                version: entry.version,
                expires_at_ms: entry.expires_at_ms,
            }),
        )
        .is_ok()
    }
}

/// Recovers (committing a new layout when needed) and opens one writer per shard.
pub fn open(
    storage: &mut MemoryStorage,
    shard_count: u32,
    policy: FsyncPolicy,
) -> (Recovered, Vec<ShardLog>) {
    let mut recovered = recover(storage, &options(shard_count)).expect("recovery");
    commit_layout(storage, &mut recovered, EntryLimits::default(), NOW_MS).expect("commit layout");
    let logs = open_logs(&recovered, policy);
    (recovered, logs)
}

pub fn open_logs(recovered: &Recovered, policy: FsyncPolicy) -> Vec<ShardLog> {
    recovered
        .shards
        .iter()
        .enumerate()
        .map(|(shard, image)| {
            let next = recovered.next_sequences[shard];
            ShardLog {
                writer: LogWriter::new(
                    LogConfig {
                        segment_bytes_target: SEGMENT_BYTES_TARGET_MIN,
                        ..LogConfig::new(recovered.layout.generation, shard as u32, policy)
                    },
                    next,
                ),
                base: image.clone(),
                records: Vec::new(),
                first_sequence: next,
                acknowledged_through: next - 1,
                failed: false,
            }
        })
        .collect()
}

pub fn put(key: &str, value: &str, version: u64) -> Record {
    Record::Put {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        version,
        expires_at_ms: 0,
    }
}

pub fn delete(key: &str) -> Record {
    Record::Delete {
        key: Bytes::from(key.to_owned()),
    }
}

/// All entries of every shard in one map.
pub fn merged(images: &[ShardImage]) -> BTreeMap<Bytes, StoredEntry> {
    images
        .iter()
        .flat_map(|image| image.entries.clone())
        .collect()
}
