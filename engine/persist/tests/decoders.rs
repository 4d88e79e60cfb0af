//! Property tests of the decoders: arbitrary bytes never panic them, and damaged valid files are
//! classified as documented (a truncation is a torn tail; a flipped bit is corruption unless it
//! is in the last record).

use bytes::Bytes;
use proptest::prelude::*;
use veddb_persist::layout::Layout;
use veddb_persist::record::{RecordDecoder, Step};
use veddb_persist::segment::{SegmentHeader, SEGMENT_HEADER_BYTES};
use veddb_persist::snapshot::{
    decode_snapshot, encode_snapshot, Frame, SnapshotDecoder, SnapshotEntryRef, SnapshotHeader,
    FRAME_HEAD_BYTES,
};
use veddb_persist::{EntryLimits, Record};

fn record_strategy() -> impl Strategy<Value = Record> {
    let key = proptest::collection::vec(any::<u8>(), 1..12);
    let value = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        3 => (key.clone(), value, 1..u64::MAX, any::<u64>()).prop_map(|(key, value, version, expires_at_ms)| Record::Put {
            key: Bytes::from(key),
            value: Bytes::from(value),
            version,
            expires_at_ms,
        }),
        1 => key.prop_map(|key| Record::Delete { key: Bytes::from(key) }),
    ]
}

/// A segment (header and records) and the offset of each record.
fn segment(records: &[Record], first_sequence: u64) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = SegmentHeader {
        generation: 1,
        shard: 0,
        first_sequence,
    }
    .encode()
    .to_vec();
    let mut offsets = Vec::new();
    for (i, record) in records.iter().enumerate() {
        offsets.push(bytes.len());
        record
            .encode(
                first_sequence + i as u64,
                &EntryLimits::default(),
                &mut bytes,
            )
            .unwrap();
    }
    (bytes, offsets)
}

/// Decodes to the end: the records and the final step.
fn decode(bytes: &[u8], first_sequence: u64, limits: EntryLimits) -> (Vec<Record>, Step<'_>) {
    let mut decoder = RecordDecoder::new(bytes, SEGMENT_HEADER_BYTES, first_sequence, limits);
    let mut records = Vec::new();
    loop {
        match decoder.next_step() {
            Step::Record(decoded) => records.push(decoded.record.to_owned_record()),
            step => return (records, step),
        }
    }
}

fn entries_strategy() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>, u64, u64)>> {
    proptest::collection::btree_map(
        proptest::collection::vec(any::<u8>(), 1..10),
        (
            proptest::collection::vec(any::<u8>(), 0..30),
            1..u64::MAX,
            any::<u64>(),
        ),
        0..40,
    )
    .prop_map(|map| {
        map.into_iter()
            .map(|(key, (value, version, expires))| (key, value, version, expires))
            .collect()
    })
}

fn snapshot_bytes(entries: &[(Vec<u8>, Vec<u8>, u64, u64)]) -> Vec<u8> {
    let header = SnapshotHeader {
        generation: 1,
        shard: 0,
        shard_count: 1,
        sequence: 5,
        version_clock: 9,
        created_at_ms: 0,
    };
    encode_snapshot(
        &header,
        EntryLimits::default(),
        entries
            .iter()
            .map(|(key, value, version, expires_at_ms)| SnapshotEntryRef {
                key,
                value,
                version: *version,
                expires_at_ms: *expires_at_ms,
            }),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn record_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), start in 0usize..700, first in any::<u64>(), small in any::<bool>()) {
        let limits = if small { EntryLimits::new(4, 16) } else { EntryLimits::default() };
        let mut decoder = RecordDecoder::new(&bytes, start, first, limits);
        for _ in 0..=bytes.len() {
            match decoder.next_step() {
                Step::Record(record) => prop_assert!(record.offset + record.length <= bytes.len()),
                Step::End { offset } => { prop_assert_eq!(offset, bytes.len()); break }
                Step::TornTail { offset, .. } | Step::Corrupt { offset, .. } => { prop_assert!(offset <= bytes.len()); break }
            }
        }
    }

    #[test]
    fn record_decoder_never_panics_on_mutated_segments(records in proptest::collection::vec(record_strategy(), 0..8), noise in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let (mut bytes, _) = segment(&records, 1);
        for (at, byte) in noise {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        let _ = decode(&bytes, 1, EntryLimits::default());
    }

    #[test]
    fn headers_and_snapshots_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = SegmentHeader::parse(&bytes);
        let _ = Layout::parse(&bytes);
        let _ = decode_snapshot(&bytes, EntryLimits::default(), |_| {});
        if let Ok(mut decoder) = SnapshotDecoder::new(&bytes, EntryLimits::default()) {
            let _ = decoder.frame_head(&bytes[bytes.len().min(64)..]);
        }
    }

    #[test]
    fn snapshots_with_forged_headers_never_panic(entries in entries_strategy(), noise in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        // Mutate only after the header, so the frame decoder is reached.
        let mut bytes = snapshot_bytes(&entries);
        for (at, byte) in noise {
            let at = 64 + at % (bytes.len() - 64);
            bytes[at] = byte;
        }
        let _ = decode_snapshot(&bytes, EntryLimits::default(), |_| {});
        // Streaming with the frame API, as recovery reads it.
        let mut decoder = SnapshotDecoder::new(&bytes, EntryLimits::default()).unwrap();
        loop {
            let at = decoder.offset() as usize;
            let Ok(head) = decoder.frame_head(bytes.get(at..at + FRAME_HEAD_BYTES).unwrap_or_default()) else { break };
            let start = decoder.offset() as usize;
            let body = bytes.get(start..start + head.body_length()).unwrap_or_default();
            match decoder.frame(head, body) {
                Ok(Frame::Chunk(_)) => {}
                Ok(Frame::End(_)) | Err(_) => break,
            }
        }
    }

    #[test]
    fn segments_round_trip(records in proptest::collection::vec(record_strategy(), 0..12), first in 1u64..1_000_000) {
        let (bytes, _) = segment(&records, first);
        prop_assert_eq!(SegmentHeader::parse(&bytes).unwrap().first_sequence, first);
        let (decoded, step) = decode(&bytes, first, EntryLimits::default());
        prop_assert_eq!(decoded, records);
        prop_assert_eq!(step, Step::End { offset: bytes.len() });
    }

    #[test]
    fn a_truncated_segment_is_a_torn_tail(records in proptest::collection::vec(record_strategy(), 1..10), cut in any::<prop::sample::Index>()) {
        let (bytes, offsets) = segment(&records, 1);
        let cut = SEGMENT_HEADER_BYTES + cut.index(bytes.len() - SEGMENT_HEADER_BYTES);
        let (decoded, step) = decode(&bytes[..cut], 1, EntryLimits::default());
        let complete = offsets.iter().skip(1).chain([&bytes.len()]).filter(|&&end| end <= cut).count();
        prop_assert_eq!(&decoded[..], &records[..complete]);
        if offsets.contains(&cut) || cut == SEGMENT_HEADER_BYTES {
            prop_assert_eq!(step, Step::End { offset: cut });
        } else {
            let is_torn = matches!(step, Step::TornTail { offset, .. } if offset == offsets[complete]);
            prop_assert!(is_torn, "{:?}", step);
        }
    }

    #[test]
    fn a_flipped_bit_is_corruption_unless_in_the_last_record(records in proptest::collection::vec(record_strategy(), 1..10), position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (mut bytes, offsets) = segment(&records, 1);
        let at = SEGMENT_HEADER_BYTES + position.index(bytes.len() - SEGMENT_HEADER_BYTES);
        bytes[at] ^= 1 << bit;
        let damaged = offsets.iter().rposition(|&offset| offset <= at).unwrap();
        let (decoded, step) = decode(&bytes, 1, EntryLimits::default());
        prop_assert_eq!(&decoded[..], &records[..damaged]);
        if damaged + 1 == records.len() {
            let is_torn = matches!(step, Step::TornTail { offset, .. } if offset == offsets[damaged]);
            prop_assert!(is_torn, "{:?}", step);
        } else {
            let is_corrupt = matches!(step, Step::Corrupt { offset, .. } if offset == offsets[damaged]);
            prop_assert!(is_corrupt, "{:?}", step);
        }
    }

    #[test]
    fn a_flipped_bit_in_a_segment_header_is_refused(position in 0usize..SEGMENT_HEADER_BYTES, bit in 0u8..8, first in any::<u64>()) {
        let mut bytes = SegmentHeader { generation: 3, shard: 2, first_sequence: first }.encode();
        bytes[position] ^= 1 << bit;
        prop_assert!(SegmentHeader::parse(&bytes).is_err());
    }

    #[test]
    fn snapshots_round_trip(entries in entries_strategy()) {
        let bytes = snapshot_bytes(&entries);
        let mut decoded = Vec::new();
        let (_, summary) = decode_snapshot(&bytes, EntryLimits::default(), |entry| {
            decoded.push((entry.key.to_vec(), entry.value.to_vec(), entry.version, entry.expires_at_ms))
        }).unwrap();
        prop_assert_eq!(summary.entries, entries.len() as u64);
        prop_assert_eq!(decoded, entries);
    }

    #[test]
    fn a_damaged_snapshot_is_refused(entries in entries_strategy(), cut in any::<prop::sample::Index>(), position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let bytes = snapshot_bytes(&entries);
        let cut = cut.index(bytes.len());
        let truncated = decode_snapshot(&bytes[..cut], EntryLimits::default(), |_| ());
        prop_assert!(truncated.is_err());
        let mut flipped = bytes.clone();
        flipped[position.index(bytes.len())] ^= 1 << bit;
        let damaged = decode_snapshot(&flipped, EntryLimits::default(), |_| ());
        prop_assert!(damaged.is_err());
    }
}
