//! Writes the seed corpus of the fuzz targets in `engine/persist/fuzz` (valid segments,
//! snapshots, headers, names and whole data directories, so the fuzzer starts deep inside the
//! decoders): `cargo run -p veddb-persist --example persist_fuzz_seeds -- engine/persist/fuzz/corpus`.
//! The output is deterministic; the corpus is committed.

use std::path::{Path, PathBuf};

use veddb_persist::layout::Layout;
use veddb_persist::segment::{SegmentHeader, SegmentName};
use veddb_persist::snapshot::{encode_snapshot, SnapshotEntryRef, SnapshotHeader, SnapshotName};
use veddb_persist::{EntryLimits, Record};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let folder = dir.join(target);
    std::fs::create_dir_all(&folder).expect("create the corpus folder");
    std::fs::write(folder.join(name), bytes).expect("write a seed");
}

fn segment(first_sequence: u64, records: u64) -> Vec<u8> {
    let mut out = SegmentHeader {
        generation: 1,
        shard: 0,
        first_sequence,
    }
    .encode()
    .to_vec();
    for i in 0..records {
        let key = format!("key:{}", i % 3);
        let value = vec![b'v'; (i as usize * 13) % 40];
        let record = if i % 4 == 3 {
            Record::Delete {
                key: key.as_bytes(),
            }
        } else {
            Record::Put {
                key: key.as_bytes(),
                value: &value[..],
                version: first_sequence + i,
                expires_at_ms: if i % 5 == 4 { 2_000_000 } else { 0 },
            }
        };
        record
            .encode(first_sequence + i, &EntryLimits::default(), &mut out)
            .expect("encode a record");
    }
    out
}

fn snapshot(sequence: u64, entries: usize) -> Vec<u8> {
    let keys: Vec<String> = (0..entries).map(|i| format!("key:{i:03}")).collect();
    let header = SnapshotHeader {
        generation: 1,
        shard: 0,
        shard_count: 1,
        sequence,
        version_clock: 40,
        created_at_ms: 1_000_000,
    };
    encode_snapshot(
        &header,
        EntryLimits::default(),
        keys.iter().enumerate().map(|(i, key)| SnapshotEntryRef {
            key: key.as_bytes(),
            value: b"snapshot value",
            version: i as u64 + 1,
            expires_at_ms: 0,
        }),
    )
    .expect("encode a snapshot")
}

/// One file of the `recovery` target's input: the name selector (see its `name()`), the
/// length, the bytes.
fn file(selector: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "engine/persist/fuzz/corpus".to_owned()),
    );
    let mut count = 0;
    let mut seed = |target: &str, name: &str, bytes: &[u8]| {
        write(&dir, target, name, bytes);
        count += 1;
    };
    let full = segment(1, 8);
    seed("wal_segment", "eight-records", &full);
    seed("wal_segment", "torn-tail", &full[..full.len() - 5]);
    let mut torn_header = full.clone();
    torn_header[9] = 3;
    seed("wal_segment", "torn-header", &torn_header[..60]);
    seed("wal_segment", "header-only", &full[..32]);
    let mut flipped = full.clone();
    flipped[40] ^= 0x20;
    seed("wal_segment", "corrupt-middle", &flipped);
    seed("snapshot", "empty", &snapshot(0, 0));
    seed("snapshot", "twenty-entries", &snapshot(5, 20));
    let layout = Layout {
        generation: 1,
        shard_count: 1,
    };
    seed("headers_and_names", "layout", &layout.encode());
    seed("headers_and_names", "segment-header", &full[..32]);
    seed(
        "headers_and_names",
        "snapshot-header",
        &snapshot(5, 0)[..64],
    );
    seed(
        "headers_and_names",
        "segment-name",
        SegmentName {
            generation: 1,
            shard: 3,
            first_sequence: 77,
        }
        .to_string()
        .as_bytes(),
    );
    let snapshot_name = SnapshotName {
        generation: 2,
        shard: 0,
        sequence: 9,
    };
    seed(
        "headers_and_names",
        "snapshot-name",
        snapshot_name.to_string().as_bytes(),
    );
    seed(
        "headers_and_names",
        "temporary-snapshot-name",
        snapshot_name.temporary().as_bytes(),
    );
    seed(
        "headers_and_names",
        "layout-name",
        layout.file_name().as_bytes(),
    );
    // Whole directories for `recovery`: selector 0 is layout 1/1 shard, 4 and 17 segments
    // 1-0-1 and 1-0-2 (plus 128: a valid header and records built from the bytes), 10 the
    // snapshot 1-0-2, 13 a temporary snapshot, 16 a foreign file.
    let mut directory = vec![0u8];
    directory.extend(file(0, &layout.encode()));
    directory.extend(file(4, &segment(1, 5)));
    seed("recovery", "layout-and-log", &directory);
    let mut with_snapshot = vec![0u8];
    with_snapshot.extend(file(0, &layout.encode()));
    with_snapshot.extend(file(10, &snapshot(2, 6)));
    with_snapshot.extend(file(4, &segment(1, 5)));
    with_snapshot.extend(file(13, b"half a snapshot"));
    with_snapshot.extend(file(16, b"someone's notes"));
    seed("recovery", "snapshot-log-debris", &with_snapshot);
    let mut rehash = vec![1u8];
    rehash.extend(file(0, &layout.encode()));
    rehash.extend(file(4 + 128, &[3, 1, 2, 3, 4, 5, 6]));
    seed("recovery", "rehash-onto-two-shards", &rehash);
    let mut first_start = vec![0u8];
    first_start.extend(file(9, &snapshot(0, 0)));
    seed("recovery", "interrupted-first-start", &first_start);
    println!("wrote {count} seeds under {}", dir.display());
}
