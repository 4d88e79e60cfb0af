//! The checks of the fuzz targets in `engine/persist/fuzz`, one function per target, kept here
//! so that the regression tests run exactly what the fuzzer ran: every input that once failed
//! is kept under `engine/persist/fuzz/regressions/<target>/` and replayed by
//! `tests/fuzz_regressions.rs`. Each function panics when a rule breaks (a panic inside a
//! decoder, a round trip that does not hold, a recovery that reads differently the second
//! time); none does I/O (recovery runs on [`crate::storage::MemoryStorage`]).

use std::collections::BTreeMap;

use crate::layout::{Layout, LAYOUT_BYTES};
use crate::procedure::{recover, RecoverOptions, Recovered, Warning};
use crate::record::{RecordDecoder, Step};
use crate::recovery::{DataFile, SegmentFile, ShardReplay, StoredEntry};
use crate::segment::{SegmentHeader, SegmentName, SEGMENT_HEADER_BYTES};
use crate::snapshot::{decode_snapshot, SnapshotHeader, SnapshotName, SNAPSHOT_HEADER_BYTES};
use crate::storage::{MemoryStorage, Storage};
use crate::{EntryLimits, Record};

fn name(selector: u8) -> String {
    let segment = |generation, shard, first_sequence| {
        SegmentName {
            generation,
            shard,
            first_sequence,
        }
        .to_string()
    };
    let snapshot = |generation, shard, sequence| SnapshotName {
        generation,
        shard,
        sequence,
    };
    let layout = |generation, shard_count| {
        Layout {
            generation,
            shard_count,
        }
        .file_name()
    };
    match selector % 20 {
        0 => layout(1, 1),
        1 => layout(1, 2),
        2 => layout(2, 1),
        3 => layout(2, 2) + ".tmp",
        4 => segment(1, 0, 1),
        5 => segment(1, 0, 3),
        6 => segment(1, 0, 6),
        7 => segment(1, 1, 1),
        8 => segment(2, 0, 1),
        9 => snapshot(1, 0, 0).to_string(),
        10 => snapshot(1, 0, 2).to_string(),
        11 => snapshot(1, 0, 5).to_string(),
        12 => snapshot(1, 1, 0).to_string(),
        13 => snapshot(1, 0, 5).temporary(),
        14 => snapshot(2, 0, 0).to_string(),
        15 => segment(1, 2, 1),
        16 => "notes.txt".to_owned(),
        17 => segment(1, 0, 2),
        18 => snapshot(1, 1, 3).to_string(),
        _ => segment(3, 0, 1),
    }
}

/// Contents that reach past the header checks: a valid segment header and records, then the
/// input's bytes.
fn segment_contents(name: &str, rest: &[u8]) -> Vec<u8> {
    let Some(parsed) = SegmentName::parse(name) else {
        return rest.to_vec();
    };
    let mut out = SegmentHeader {
        generation: parsed.generation,
        shard: parsed.shard,
        first_sequence: parsed.first_sequence,
    }
    .encode()
    .to_vec();
    let records = rest.first().copied().unwrap_or(0) % 4;
    for i in 0..u64::from(records) {
        let key = [b'k', rest.get(1 + i as usize).copied().unwrap_or(0) % 4];
        let record = if i % 3 == 2 {
            Record::Delete { key: &key[..] }
        } else {
            Record::Put {
                key: &key[..],
                value: &rest[..rest.len().min(8)],
                version: 1 + i,
                expires_at_ms: 0,
            }
        };
        record
            .encode(parsed.first_sequence + i, &EntryLimits::default(), &mut out)
            .expect("a small record encodes");
    }
    out.extend_from_slice(rest.get(1 + records as usize..).unwrap_or_default());
    out
}

fn state(recovered: &Recovered) -> BTreeMap<Vec<u8>, StoredEntry> {
    recovered
        .shards
        .iter()
        .flat_map(|image| {
            image
                .entries
                .iter()
                .map(|(key, entry)| (key.to_vec(), entry.clone()))
        })
        .collect()
}

/// File names and fixed headers: every data file's name (segment, snapshot, temporary files,
/// layout marker), the segment, snapshot and layout headers. A header that parses encodes back
/// to the same bytes; a name that parses formats back to the same name.
pub fn headers_and_names(data: &[u8]) {
    if let Ok(header) = SegmentHeader::parse(data) {
        assert_eq!(&header.encode()[..], &data[..SEGMENT_HEADER_BYTES]);
    }
    if let Ok(header) = SnapshotHeader::parse(data) {
        assert_eq!(&header.encode()[..], &data[..SNAPSHOT_HEADER_BYTES]);
    }
    if let Ok(layout) = Layout::parse(data) {
        assert_eq!(&layout.encode()[..], &data[..LAYOUT_BYTES]);
    }
    if let Ok(name) = std::str::from_utf8(data) {
        match DataFile::classify(name) {
            DataFile::Segment(segment) => {
                assert_eq!(segment.to_string(), name);
                assert_eq!(SegmentName::parse(name), Some(segment));
            }
            DataFile::Snapshot(snapshot) => assert_eq!(snapshot.to_string(), name),
            DataFile::TemporarySnapshot(snapshot) => assert_eq!(snapshot.temporary(), name),
            DataFile::Layout(layout) => assert_eq!(layout.file_name(), name),
            DataFile::TemporaryLayout(_) | DataFile::Unknown => {}
        }
        let _ = SnapshotName::parse(name);
    }
}

/// Recovery as a whole over a data directory of arbitrary files: names from a set that covers
/// every kind (layout markers, segments, snapshots, temporary files, other generations, other
/// shards, foreign files) and arbitrary contents, often built from valid pieces. Recovery may
/// refuse with an error but never panics, and when it succeeds, it has left the directory in a
/// state that a second recovery reads to the same data with no further repair.
pub fn recovery(data: &[u8]) {
    let Some((&shards, mut rest)) = data.split_first() else {
        return;
    };
    let options = RecoverOptions {
        shard_count: u32::from(shards % 3) + 1,
        now_ms: 1_000_000,
        limits: EntryLimits::new(256, 4096),
    };
    let mut storage = MemoryStorage::new();
    while rest.len() >= 3 {
        let file = name(rest[0]);
        let valid_start = rest[0] >= 128;
        let length = usize::from(u16::from_le_bytes([rest[1], rest[2]])) % 1024;
        rest = &rest[3..];
        let raw = &rest[..length.min(rest.len())];
        rest = &rest[raw.len()..];
        let contents = if valid_start {
            segment_contents(&file, raw)
        } else {
            raw.to_vec()
        };
        if storage.create(&file).is_err() {
            continue;
        }
        storage.write_at(&file, 0, &contents).expect("memory write");
        storage.fsync(&file).expect("memory fsync");
    }
    storage.fsync_dir().expect("memory fsync_dir");
    let Ok(first) = recover(&mut storage, &options) else {
        return;
    };
    let second = recover(&mut storage, &options)
        .expect("a directory recovery accepted once is accepted again");
    assert_eq!(
        state(&first),
        state(&second),
        "the same data the second time"
    );
    assert!(
        second
            .warnings
            .iter()
            .all(|warning| !matches!(warning, Warning::TornTail(_))),
        "the first recovery cut every torn tail: {:?}",
        second.warnings
    );
}

/// A snapshot file as recovery reads it, whole and frame by frame: never a panic, no
/// allocation beyond what the input's size justifies, and a snapshot that decodes holds
/// entries in strictly increasing key order, as many as its trailer says.
pub fn snapshot(data: &[u8]) {
    let limits = EntryLimits::new(256, 4096);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    if let Ok((_, summary)) = decode_snapshot(data, limits, |entry| keys.push(entry.key.to_vec())) {
        assert_eq!(summary.entries, keys.len() as u64);
        assert!(
            keys.windows(2).all(|pair| pair[0] < pair[1]),
            "keys in order"
        );
        assert_eq!(summary.bytes, data.len() as u64);
    }
}

/// A log segment file as recovery reads it: the header, then records until the end, a torn
/// tail or corruption. Never a panic; the decoder always makes progress and ends; every record
/// it returns encodes back to exactly the bytes it was read from; and replay (the recovery
/// step over one segment, newest or not) agrees with the decoder.
pub fn wal_segment(data: &[u8]) {
    let limits = EntryLimits::new(256, 4096);
    let (start, first_sequence) = match SegmentHeader::parse(data) {
        Ok(header) => (SEGMENT_HEADER_BYTES, header.first_sequence),
        Err(_) => (0, 1),
    };
    let mut decoder = RecordDecoder::new(data, start, first_sequence, limits);
    let mut records = 0u64;
    let mut previous_offset = None;
    loop {
        match decoder.next_step() {
            Step::Record(decoded) => {
                assert!(
                    previous_offset.is_none_or(|at| decoded.offset > at),
                    "progress"
                );
                previous_offset = Some(decoded.offset);
                assert_eq!(decoded.sequence, first_sequence + records);
                let mut again = Vec::new();
                decoded
                    .record
                    .encode(decoded.sequence, &limits, &mut again)
                    .expect("a decoded record encodes");
                assert_eq!(
                    &again[..],
                    &data[decoded.offset..decoded.offset + decoded.length]
                );
                records += 1;
                assert!(records as usize <= data.len(), "more records than bytes");
            }
            Step::End { offset } => {
                assert_eq!(offset, data.len());
                break;
            }
            Step::TornTail { offset, .. } | Step::Corrupt { offset, .. } => {
                assert!(offset <= data.len());
                break;
            }
        }
    }
    if let Ok(header) = SegmentHeader::parse(data) {
        let segment = SegmentFile {
            name: header.name(),
            file: header.name().to_string(),
            size: data.len() as u64,
        };
        for is_newest in [true, false] {
            let mut replay = ShardReplay::new(
                header.shard,
                header.generation,
                limits,
                header.first_sequence.saturating_sub(1),
                "the fuzz input".to_owned(),
                0,
            );
            let mut applied = 0u64;
            if let Ok(result) =
                replay.replay_segment(&segment, data, is_newest, |_, _| applied += 1)
            {
                assert_eq!(result.applied, applied);
                assert!(applied <= records);
            }
        }
    }
}
