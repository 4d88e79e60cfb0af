//! One write-ahead-log record, its encoding, and the decoder that reads records out of a segment.
//!
//! A record carries the *resulting state* of a key, never the operation: SET, CAS, INCR, the
//! parts of an MSET, EXPIRE and PERSIST all become a [`Record::Put`] of the key's whole new entry
//! (value, version, absolute expiry), and DEL (or EXPIRE 0) becomes a [`Record::Delete`]. Replaying
//! a record twice, or over a snapshot that already saw it, gives the same state: replay is
//! idempotent.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! offset  size  field
//! 0       4     length   L: bytes after the first 8 (so the record is 8 + L bytes)
//! 4       4     crc      CRC-32C of the L bytes after this field (offsets 8 .. 8+L)
//! 8       8     sequence per shard, per generation; 1, 2, 3, ... without gaps
//! 16      1     kind     1 = Put, 2 = Delete
//! 17      ...   fields of the kind:
//!   Put:    u64 version (>= 1), u64 expires_at_ms (0 = never), u32 key length K (>= 1),
//!           K key bytes, u32 value length V, V value bytes          L = 9 + 24 + K + V
//!   Delete: u32 key length K (>= 1), K key bytes                     L = 9 + 4 + K
//! ```
//!
//! # What the decoder reports
//!
//! [`RecordDecoder::next_step`] returns, at the current offset:
//! - [`Step::Record`]: a record whose checksum matches, whose fields are consistent, and whose
//!   sequence is the expected one;
//! - [`Step::End`]: the input ends exactly after the previous record;
//! - [`Step::TornTail`]: the bytes from here to the end are not a valid record (too short for a
//!   header, a length running past the end or impossible, a checksum mismatch) **and no valid
//!   record starts anywhere after them**: the remains of a write a crash interrupted. Recovery
//!   cuts the segment at this offset with a warning.
//! - [`Step::Corrupt`]: damaged bytes **followed by a valid record**, or a record whose checksum
//!   matches but whose content is impossible (unknown kind, bad field, wrong sequence). Something
//!   other than a crash changed the file; recovery stops and names the file and offset.
//!
//! "Followed by a valid record" is decided by searching every later offset for a record with a
//! plausible length, a sequence at or after the expected one and a matching checksum. This is
//! what makes a flipped bit in the length field of a record in the middle of a segment (which can
//! make the length run past the end of the file) come out as corruption, not as a torn tail that
//! would silently drop every record after it. The search is bounded by
//! [`TAIL_SCAN_CHECKSUM_BYTES_MAX`]; past it the decoder reports corruption, the safe side.

use bytes::Bytes;

use crate::bytes_io::{length_u32, put_u32, put_u64, u32_at, u64_at, Reader};
use crate::checksum;
use crate::limits::{EntryLimits, EntryProblem, ENTRY_BYTES_MAX_HARD, ENTRY_FIXED_BYTES};
use crate::snapshot::{SnapshotEntry, SnapshotEntryRef};

/// Bytes of the length and checksum fields that start every record.
pub const RECORD_PREFIX_BYTES: usize = 8;
/// Bytes before a record's kind-specific fields: length, checksum, sequence, kind.
pub const RECORD_HEADER_BYTES: usize = 17;
/// Bytes of a `Delete` besides its key: the key length.
pub const DELETE_FIXED_BYTES: usize = 4;
/// Kind byte of a [`Record::Put`].
pub const KIND_PUT: u8 = 1;
/// Kind byte of a [`Record::Delete`].
pub const KIND_DELETE: u8 = 2;
/// Smallest value of the length field: a `Delete` of a one-byte key.
pub const RECORD_LENGTH_MIN: usize =
    RECORD_HEADER_BYTES - RECORD_PREFIX_BYTES + DELETE_FIXED_BYTES + 1;
/// Largest record any configuration can produce (hard key and value caps).
pub const RECORD_BYTES_MAX_HARD: usize = RECORD_HEADER_BYTES + ENTRY_BYTES_MAX_HARD;
/// Most bytes the decoder checksums while searching for a valid record after damaged bytes;
/// past it, it reports corruption (it cannot prove the damage is a torn tail).
pub const TAIL_SCAN_CHECKSUM_BYTES_MAX: usize = 256 * 1024 * 1024;
/// A candidate record found by that search must have a sequence in
/// `expected .. expected + TAIL_SCAN_SEQUENCE_WINDOW`; anything else is not one of this
/// segment's records.
pub const TAIL_SCAN_SEQUENCE_WINDOW: u64 = 1 << 32;

const _: () = assert!(RECORD_BYTES_MAX_HARD - RECORD_PREFIX_BYTES <= u32::MAX as usize);
const _: () = assert!(RECORD_LENGTH_MIN == 14);
const _: () = assert!(ENTRY_FIXED_BYTES == 24);

/// One log record. `B` is the byte container: [`Bytes`] for records being written,
/// `&[u8]` ([`RecordRef`]) for records decoded out of a segment without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<B = Bytes> {
    /// The key's whole entry after a write.
    Put {
        key: B,
        value: B,
        /// The key's version after the write (>= 1).
        version: u64,
        /// Milliseconds since the Unix epoch; 0 = never.
        expires_at_ms: u64,
    },
    /// The key no longer exists.
    Delete { key: B },
}

/// A record borrowed from a segment's bytes.
pub type RecordRef<'a> = Record<&'a [u8]>;

impl<B: AsRef<[u8]>> Record<B> {
    pub fn key(&self) -> &[u8] {
        match self {
            Record::Put { key, .. } | Record::Delete { key } => key.as_ref(),
        }
    }

    /// The record with borrowed bytes.
    pub fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Record::Put {
                key,
                value,
                version,
                expires_at_ms,
            } => Record::Put {
                key: key.as_ref(),
                value: value.as_ref(),
                version: *version,
                expires_at_ms: *expires_at_ms,
            },
            Record::Delete { key } => Record::Delete { key: key.as_ref() },
        }
    }

    /// The record with its bytes copied into exact-size [`Bytes`] (so a value loaded from a
    /// large segment buffer does not keep that buffer alive).
    pub fn to_owned_record(&self) -> Record {
        match self.as_ref() {
            Record::Put {
                key,
                value,
                version,
                expires_at_ms,
            } => Record::Put {
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
                version,
                expires_at_ms,
            },
            Record::Delete { key } => Record::Delete {
                key: Bytes::copy_from_slice(key),
            },
        }
    }

    /// Bytes the encoded record takes (8 + the length field).
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_BYTES
            + match self.as_ref() {
                Record::Put { key, value, .. } => ENTRY_FIXED_BYTES + key.len() + value.len(),
                Record::Delete { key } => DELETE_FIXED_BYTES + key.len(),
            }
    }

    /// Appends the encoded record with sequence `sequence` to `out`. Refuses (appending nothing)
    /// an empty key, a key or value over `limits`, and a `Put` with version 0.
    pub fn encode(
        &self,
        sequence: u64,
        limits: &EntryLimits,
        out: &mut Vec<u8>,
    ) -> Result<(), EntryProblem> {
        let record = self.as_ref();
        match record {
            Record::Put {
                key,
                value,
                version,
                ..
            } => {
                limits.check(key.len(), value.len())?;
                if version == 0 {
                    return Err(EntryProblem::ZeroVersion);
                }
            }
            Record::Delete { key } => limits.check(key.len(), 0)?,
        }
        let total = self.encoded_len();
        debug_assert!(total <= RECORD_BYTES_MAX_HARD);
        out.reserve(total);
        let start = out.len();
        put_u32(out, length_u32(total - RECORD_PREFIX_BYTES));
        put_u32(out, 0); // checksum, filled in below
        put_u64(out, sequence);
        match record {
            Record::Put {
                key,
                value,
                version,
                expires_at_ms,
            } => {
                out.push(KIND_PUT);
                put_entry(out, key, value, version, expires_at_ms);
            }
            Record::Delete { key } => {
                out.push(KIND_DELETE);
                put_u32(out, length_u32(key.len()));
                out.extend_from_slice(key);
            }
        }
        debug_assert_eq!(out.len() - start, total);
        let crc = checksum(&out[start + RECORD_PREFIX_BYTES..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }
}

/// A record read from a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    pub sequence: u64,
    /// Offset of the record's first byte in the decoder's input.
    pub offset: usize,
    /// Bytes the record takes.
    pub length: usize,
    pub record: RecordRef<'a>,
}

/// Why bytes at some offset are not a record (with no valid checksum to say otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Fewer bytes left than a record's length and checksum fields.
    TruncatedPrefix { available: usize },
    /// A length field outside `RECORD_LENGTH_MIN ..= ` the largest record the limits allow.
    ImpossibleLength { length: u32 },
    /// A plausible length that runs past the end of the input.
    PastEnd { length: u32, available: usize },
    /// The checksum does not match the bytes.
    ChecksumMismatch { stored: u32, computed: u32 },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::TruncatedPrefix { available } => {
                write!(f, "{available} bytes, too few for a record header")
            }
            Damage::ImpossibleLength { length } => {
                write!(f, "an impossible record length of {length} bytes")
            }
            Damage::PastEnd { length, available } => write!(
                f,
                "a record of {length} bytes after its header with only {available} bytes left"
            ),
            Damage::ChecksumMismatch { stored, computed } => write!(
                f,
                "a checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// Why a segment is corrupt at some offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// Damaged bytes, and a valid record starts later at `valid_record_at`: not a torn tail.
    DamageBeforeValidRecord {
        damage: Damage,
        valid_record_at: usize,
    },
    /// Damaged bytes too long to search for a following valid record within
    /// [`TAIL_SCAN_CHECKSUM_BYTES_MAX`].
    DamageUnverified { damage: Damage },
    /// A record whose checksum matches but whose kind byte is unknown.
    UnknownKind { kind: u8 },
    /// A record whose checksum matches but whose fields are impossible.
    BadEntry(EntryProblem),
    /// A record whose checksum matches but whose sequence is not the next one.
    SequenceMismatch { expected: u64, found: u64 },
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::DamageBeforeValidRecord {
                damage,
                valid_record_at,
            } => write!(
                f,
                "{damage}, followed by a valid record at offset {valid_record_at}"
            ),
            Corruption::DamageUnverified { damage } => write!(
                f,
                "{damage}, with too much data after it to prove it is only a torn tail"
            ),
            Corruption::UnknownKind { kind } => {
                write!(f, "a record with a valid checksum and unknown kind {kind}")
            }
            Corruption::BadEntry(problem) => {
                write!(f, "a record with a valid checksum and {problem}")
            }
            Corruption::SequenceMismatch { expected, found } => write!(
                f,
                "a record with sequence {found} where {expected} was expected"
            ),
        }
    }
}

/// One step of [`RecordDecoder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Record(DecodedRecord<'a>),
    /// The input ends exactly at `offset`, after the last record.
    End {
        offset: usize,
    },
    /// The bytes from `offset` to the end are the remains of an interrupted write; cut here.
    TornTail {
        offset: usize,
        damage: Damage,
    },
    /// The segment is corrupt at `offset`.
    Corrupt {
        offset: usize,
        corruption: Corruption,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Terminal {
    End {
        offset: usize,
    },
    TornTail {
        offset: usize,
        damage: Damage,
    },
    Corrupt {
        offset: usize,
        corruption: Corruption,
    },
}

impl Terminal {
    fn step<'a>(&self) -> Step<'a> {
        match self.clone() {
            Terminal::End { offset } => Step::End { offset },
            Terminal::TornTail { offset, damage } => Step::TornTail { offset, damage },
            Terminal::Corrupt { offset, corruption } => Step::Corrupt { offset, corruption },
        }
    }
}

enum Problem {
    /// The bytes are not intact: torn tail or corruption, depending on what follows.
    Damaged(Damage),
    /// The checksum matched: always corruption.
    Invalid(Corruption),
}

/// Reads records one by one out of a segment's bytes. Never panics, never allocates.
pub struct RecordDecoder<'a> {
    bytes: &'a [u8],
    offset: usize,
    expected_sequence: u64,
    limits: EntryLimits,
    terminal: Option<Terminal>,
}

impl<'a> RecordDecoder<'a> {
    /// A decoder over `bytes` (typically a whole segment file) starting at `start_offset` (the
    /// end of the segment header), expecting the first record to have sequence
    /// `first_sequence`. Offsets it reports are offsets into `bytes`.
    pub fn new(
        bytes: &'a [u8],
        start_offset: usize,
        first_sequence: u64,
        limits: EntryLimits,
    ) -> Self {
        RecordDecoder {
            bytes,
            offset: start_offset.min(bytes.len()),
            expected_sequence: first_sequence,
            limits,
            terminal: None,
        }
    }

    /// The offset just after the last valid record.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The sequence the next record must have.
    pub fn expected_sequence(&self) -> u64 {
        self.expected_sequence
    }

    /// The next record, or how the segment ends. After a step other than [`Step::Record`],
    /// every later call returns that same step.
    pub fn next_step(&mut self) -> Step<'a> {
        if let Some(terminal) = &self.terminal {
            return terminal.step();
        }
        let offset = self.offset;
        if offset == self.bytes.len() {
            return self.finish(Terminal::End { offset });
        }
        match self.record_at(offset) {
            Ok(decoded) => {
                self.offset += decoded.length;
                self.expected_sequence = self.expected_sequence.saturating_add(1);
                Step::Record(decoded)
            }
            Err(Problem::Invalid(corruption)) => {
                self.finish(Terminal::Corrupt { offset, corruption })
            }
            Err(Problem::Damaged(damage)) => match self.valid_record_after(offset) {
                Ok(None) => self.finish(Terminal::TornTail { offset, damage }),
                Ok(Some(valid_record_at)) => self.finish(Terminal::Corrupt {
                    offset,
                    corruption: Corruption::DamageBeforeValidRecord {
                        damage,
                        valid_record_at,
                    },
                }),
                Err(()) => self.finish(Terminal::Corrupt {
                    offset,
                    corruption: Corruption::DamageUnverified { damage },
                }),
            },
        }
    }

    fn finish(&mut self, terminal: Terminal) -> Step<'a> {
        let step = terminal.step();
        self.terminal = Some(terminal);
        step
    }

    /// Largest length field these limits allow.
    fn length_max(&self) -> usize {
        RECORD_HEADER_BYTES - RECORD_PREFIX_BYTES + self.limits.entry_bytes_max()
    }

    fn plausible_length(&self, length: u32) -> bool {
        let length = length as usize;
        (RECORD_LENGTH_MIN..=self.length_max()).contains(&length)
    }

    fn record_at(&self, offset: usize) -> Result<DecodedRecord<'a>, Problem> {
        let rest = &self.bytes[offset..];
        let (Some(length), Some(stored)) = (u32_at(rest, 0), u32_at(rest, 4)) else {
            return Err(Problem::Damaged(Damage::TruncatedPrefix {
                available: rest.len(),
            }));
        };
        if !self.plausible_length(length) {
            return Err(Problem::Damaged(Damage::ImpossibleLength { length }));
        }
        let available = rest.len() - RECORD_PREFIX_BYTES;
        let Some(covered) = rest.get(RECORD_PREFIX_BYTES..RECORD_PREFIX_BYTES + length as usize)
        else {
            return Err(Problem::Damaged(Damage::PastEnd { length, available }));
        };
        let computed = checksum(covered);
        if computed != stored {
            return Err(Problem::Damaged(Damage::ChecksumMismatch {
                stored,
                computed,
            }));
        }
        let (sequence, record) = parse_covered(covered, &self.limits).map_err(Problem::Invalid)?;
        if sequence != self.expected_sequence {
            return Err(Problem::Invalid(Corruption::SequenceMismatch {
                expected: self.expected_sequence,
                found: sequence,
            }));
        }
        Ok(DecodedRecord {
            sequence,
            offset,
            length: RECORD_PREFIX_BYTES + length as usize,
            record,
        })
    }

    /// The offset of the first valid record after the damaged bytes at `damaged_at`, if any.
    /// `Err(())` when the checksum budget ran out before the search finished.
    fn valid_record_after(&self, damaged_at: usize) -> Result<Option<usize>, ()> {
        let bytes = self.bytes;
        let mut budget = TAIL_SCAN_CHECKSUM_BYTES_MAX;
        let mut candidate = damaged_at + 1;
        while candidate + RECORD_HEADER_BYTES <= bytes.len() {
            let at = candidate;
            candidate += 1;
            let Some(length) = u32_at(bytes, at) else {
                break;
            };
            if !self.plausible_length(length) {
                continue;
            }
            let start = at + RECORD_PREFIX_BYTES;
            let end = start + length as usize;
            if end > bytes.len() {
                continue;
            }
            let Some(sequence) = u64_at(bytes, start) else {
                continue;
            };
            let in_window = sequence
                .checked_sub(self.expected_sequence)
                .is_some_and(|ahead| ahead < TAIL_SCAN_SEQUENCE_WINDOW);
            if !in_window {
                continue;
            }
            budget = budget.checked_sub(length as usize).ok_or(())?;
            if u32_at(bytes, at + 4) == Some(checksum(&bytes[start..end])) {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }
}

/// Parses the checksummed part of a record (sequence, kind, fields).
fn parse_covered<'a>(
    covered: &'a [u8],
    limits: &EntryLimits,
) -> Result<(u64, RecordRef<'a>), Corruption> {
    let mut reader = Reader::new(covered);
    let bad = Corruption::BadEntry(EntryProblem::LengthMismatch);
    let sequence = reader.u64().ok_or(bad.clone())?;
    let kind = reader.u8().ok_or(bad.clone())?;
    let record = match kind {
        KIND_PUT => {
            let entry = parse_entry(&mut reader, limits).map_err(Corruption::BadEntry)?;
            Record::Put {
                key: entry.key,
                value: entry.value,
                version: entry.version,
                expires_at_ms: entry.expires_at_ms,
            }
        }
        KIND_DELETE => {
            let key_length = reader.u32().ok_or(bad.clone())? as usize;
            limits.check(key_length, 0).map_err(Corruption::BadEntry)?;
            let key = reader.take(key_length).ok_or(bad.clone())?;
            Record::Delete { key }
        }
        kind => return Err(Corruption::UnknownKind { kind }),
    };
    if reader.remaining() != 0 {
        return Err(bad);
    }
    Ok((sequence, record))
}

/// Parses `version, expires_at_ms, key, value` (the layout a `Put` and a snapshot entry share),
/// checking lengths against `limits` before taking the bytes.
pub(crate) fn parse_entry<'a>(
    reader: &mut Reader<'a>,
    limits: &EntryLimits,
) -> Result<SnapshotEntryRef<'a>, EntryProblem> {
    let short = EntryProblem::LengthMismatch;
    let version = reader.u64().ok_or(short.clone())?;
    let expires_at_ms = reader.u64().ok_or(short.clone())?;
    let key_length = reader.u32().ok_or(short.clone())? as usize;
    limits.check(key_length, 0)?;
    let key = reader.take(key_length).ok_or(short.clone())?;
    let value_length = reader.u32().ok_or(short.clone())? as usize;
    limits.check(key_length, value_length)?;
    let value = reader.take(value_length).ok_or(short)?;
    if version == 0 {
        return Err(EntryProblem::ZeroVersion);
    }
    Ok(SnapshotEntry {
        key,
        value,
        version,
        expires_at_ms,
    })
}

/// Appends `version, expires_at_ms, key, value` in the shared entry layout. The caller checked
/// the sizes.
pub(crate) fn put_entry(
    out: &mut Vec<u8>,
    key: &[u8],
    value: &[u8],
    version: u64,
    expires_at_ms: u64,
) {
    put_u64(out, version);
    put_u64(out, expires_at_ms);
    put_u32(out, length_u32(key.len()));
    out.extend_from_slice(key);
    put_u32(out, length_u32(value.len()));
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &'static [u8], value: &'static [u8], version: u64) -> Record {
        Record::Put {
            key: Bytes::from_static(key),
            value: Bytes::from_static(value),
            version,
            expires_at_ms: 0,
        }
    }

    fn encode_all(records: &[Record], first_sequence: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for (i, record) in records.iter().enumerate() {
            offsets.push(out.len());
            record
                .encode(first_sequence + i as u64, &EntryLimits::default(), &mut out)
                .unwrap();
        }
        (out, offsets)
    }

    fn decode_all(bytes: &[u8], first_sequence: u64) -> (Vec<Record>, Step<'_>) {
        let mut decoder = RecordDecoder::new(bytes, 0, first_sequence, EntryLimits::default());
        let mut records = Vec::new();
        loop {
            match decoder.next_step() {
                Step::Record(decoded) => records.push(decoded.record.to_owned_record()),
                other => return (records, other),
            }
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let mut out = Vec::new();
        let record = Record::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"vv"),
            version: 7,
            expires_at_ms: 9,
        };
        record.encode(5, &EntryLimits::default(), &mut out).unwrap();
        assert_eq!(out.len(), record.encoded_len());
        assert_eq!(out.len(), 17 + 24 + 1 + 2);
        assert_eq!(&out[0..4], &(out.len() as u32 - 8).to_le_bytes());
        assert_eq!(&out[4..8], &checksum(&out[8..]).to_le_bytes());
        assert_eq!(&out[8..16], &5u64.to_le_bytes());
        assert_eq!(out[16], KIND_PUT);
        assert_eq!(&out[17..25], &7u64.to_le_bytes());
        assert_eq!(&out[25..33], &9u64.to_le_bytes());
        assert_eq!(&out[33..37], &1u32.to_le_bytes());
        assert_eq!(out[37], b'k');
        assert_eq!(&out[38..42], &2u32.to_le_bytes());
        assert_eq!(&out[42..44], b"vv");

        let mut out = Vec::new();
        Record::<Bytes>::Delete {
            key: Bytes::from_static(b"k"),
        }
        .encode(1, &EntryLimits::default(), &mut out)
        .unwrap();
        assert_eq!(out.len(), RECORD_PREFIX_BYTES + RECORD_LENGTH_MIN);
        assert_eq!(out[16], KIND_DELETE);
        assert_eq!(&out[17..21], &1u32.to_le_bytes());
    }

    #[test]
    fn round_trip() {
        let records = vec![
            put(b"a", b"1", 1),
            Record::Delete {
                key: Bytes::from_static(b"a"),
            },
            Record::Put {
                key: Bytes::from_static(b"b"),
                value: Bytes::new(),
                version: u64::MAX,
                expires_at_ms: u64::MAX,
            },
        ];
        let (bytes, offsets) = encode_all(&records, 10);
        let mut decoder = RecordDecoder::new(&bytes, 0, 10, EntryLimits::default());
        for (i, record) in records.iter().enumerate() {
            let Step::Record(decoded) = decoder.next_step() else {
                panic!("record {i} missing")
            };
            assert_eq!(decoded.sequence, 10 + i as u64);
            assert_eq!(decoded.offset, offsets[i]);
            assert_eq!(decoded.record, record.as_ref());
        }
        assert_eq!(
            decoder.next_step(),
            Step::End {
                offset: bytes.len()
            }
        );
        assert_eq!(
            decoder.next_step(),
            Step::End {
                offset: bytes.len()
            }
        );
        assert_eq!(decoder.expected_sequence(), 13);
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let limits = EntryLimits::new(2, 2);
        let mut out = Vec::new();
        let too_long = put(b"abc", b"", 1);
        assert_eq!(
            too_long.encode(1, &limits, &mut out),
            Err(EntryProblem::KeyTooLarge {
                length: 3,
                limit: 2
            })
        );
        assert_eq!(
            put(b"ab", b"", 0).encode(1, &limits, &mut out),
            Err(EntryProblem::ZeroVersion)
        );
        assert_eq!(
            put(b"", b"", 1).encode(1, &limits, &mut out),
            Err(EntryProblem::EmptyKey)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn truncation_is_a_torn_tail() {
        let records = vec![
            put(b"a", b"1", 1),
            put(b"b", b"22", 2),
            put(b"c", b"333", 3),
        ];
        let (bytes, offsets) = encode_all(&records, 1);
        let ends: Vec<usize> = offsets[1..].iter().copied().chain([bytes.len()]).collect();
        for cut in 0..=bytes.len() {
            let (decoded, step) = decode_all(&bytes[..cut], 1);
            let complete = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(decoded.len(), complete, "cut at {cut}");
            if cut == 0 || ends.contains(&cut) {
                assert_eq!(step, Step::End { offset: cut });
            } else {
                let Step::TornTail { offset, .. } = step else {
                    panic!("cut at {cut}: {step:?}")
                };
                assert_eq!(offset, offsets[complete]);
            }
        }
    }

    #[test]
    fn a_damaged_length_in_the_middle_is_corruption_not_a_torn_tail() {
        let records = vec![
            put(b"a", b"1", 1),
            put(b"b", b"22", 2),
            put(b"c", b"333", 3),
        ];
        let (mut bytes, offsets) = encode_all(&records, 1);
        // Make the first record's length run past the end of the file.
        bytes[offsets[0] + 3] = 0x00;
        bytes[offsets[0] + 2] = 0x01;
        let (decoded, step) = decode_all(&bytes, 1);
        assert!(decoded.is_empty());
        let Step::Corrupt { offset, corruption } = step else {
            panic!("{step:?}")
        };
        assert_eq!(offset, 0);
        assert_eq!(
            corruption,
            Corruption::DamageBeforeValidRecord {
                damage: Damage::PastEnd {
                    length: 0x0001_0000 + (offsets[1] as u32 - 8),
                    available: bytes.len() - 8
                },
                valid_record_at: offsets[1],
            }
        );
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let (mut bytes, _) = encode_all(&[put(b"a", b"1", 1)], 1);
        let end = bytes.len();
        bytes.extend_from_slice(&[0; 4096]);
        let (decoded, step) = decode_all(&bytes, 1);
        assert_eq!(decoded.len(), 1);
        assert_eq!(
            step,
            Step::TornTail {
                offset: end,
                damage: Damage::ImpossibleLength { length: 0 }
            }
        );
    }

    #[test]
    fn a_valid_checksum_with_bad_content_is_corruption_even_at_the_end() {
        let mut bytes = Vec::new();
        put(b"a", b"1", 1)
            .encode(1, &EntryLimits::default(), &mut bytes)
            .unwrap();
        bytes[16] = 9; // unknown kind
        let crc = checksum(&bytes[8..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_all(&bytes, 1).1,
            Step::Corrupt {
                offset: 0,
                corruption: Corruption::UnknownKind { kind: 9 }
            }
        );
        // A sequence other than the expected one.
        let (bytes, _) = encode_all(&[put(b"a", b"1", 1)], 4);
        assert_eq!(
            decode_all(&bytes, 3).1,
            Step::Corrupt {
                offset: 0,
                corruption: Corruption::SequenceMismatch {
                    expected: 3,
                    found: 4
                }
            }
        );
    }

    #[test]
    fn lowered_limits_name_the_flag() {
        let (bytes, _) = encode_all(&[put(b"abc", b"1", 1)], 1);
        let mut decoder = RecordDecoder::new(&bytes, 0, 1, EntryLimits::new(2, 16));
        let Step::Corrupt { offset, corruption } = decoder.next_step() else {
            panic!("expected corruption")
        };
        assert_eq!(offset, 0);
        assert_eq!(
            corruption,
            Corruption::BadEntry(EntryProblem::KeyTooLarge {
                length: 3,
                limit: 2
            })
        );
        assert!(
            corruption.to_string().contains("--key-bytes-max"),
            "{corruption}"
        );
    }
}
