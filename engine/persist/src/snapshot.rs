//! Snapshot files: one shard's entries at a log sequence.
//!
//! A snapshot is named `<generation:010>-<shard:05>-<sequence:020>.snap` and is written as
//! `<same>.snap.tmp`, fsynced, renamed, and the directory fsynced: a `.snap` file is complete
//! unless the disk damaged it, and a `.snap.tmp` file is an interrupted snapshot to delete.
//!
//! `sequence` is the last log record the snapshot reflects: recovery loads the snapshot, then
//! replays the log records after `sequence`. Because records carry absolute state, a snapshot
//! may also reflect some records *after* `sequence` (a background snapshot that iterates the
//! keys while the shard keeps writing): replaying them again gives the same result.
//!
//! # Layout (integers little-endian)
//!
//! ```text
//! header, 64 bytes:
//! 0       8     magic            b"VEDDBSNP"
//! 8       2     format version   1
//! 10      2     reserved         0
//! 12      4     generation
//! 16      4     shard index
//! 20      4     shard count      of the generation
//! 24      8     sequence         last log record reflected
//! 32      8     version clock    the shard's version counter when the snapshot started
//! 40      8     created at       milliseconds since the Unix epoch (informational)
//! 48      12    reserved         0
//! 60      4     crc              CRC-32C of bytes 0..60
//!
//! then frames, each: 4-byte tag, u32 body length B, B body bytes
//!
//! chunk frame, tag b"CHNK" (one or more entries):
//!   body 0  4   crc          CRC-32C of body bytes 4..B
//!   body 4  4   entry count  >= 1
//!   body 8  ..  entries, each: u64 version (>= 1), u64 expires_at_ms (0 = never),
//!               u32 key length K (>= 1), K key bytes, u32 value length V, V value bytes
//!
//! trailer frame, tag b"TRLR", B = 20, the last bytes of the file:
//!   body 0  8   entry count  of the whole snapshot
//!   body 8  8   chunk count
//!   body 16 4   crc          CRC-32C of every byte of the file before this field
//! ```
//!
//! Keys are strictly increasing over the whole snapshot (the shard's byte-ordered index is the
//! natural way to iterate them), so a snapshot cannot hold a key twice. A snapshot without its
//! trailer, or with any count or checksum wrong, is refused as a whole; recovery then falls back
//! to the previous snapshot.

use bytes::Bytes;

use crate::bytes_io::{put_u16, put_u32, put_u64, u32_at, Reader};
use crate::limits::{EntryLimits, EntryProblem, ENTRY_FIXED_BYTES};
use crate::record::{parse_entry, put_entry};
use crate::{checksum, checksum_append, names, HeaderError, FORMAT_VERSION};

/// Magic bytes at the start of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"VEDDBSNP";
/// Bytes of a snapshot header.
pub const SNAPSHOT_HEADER_BYTES: usize = 64;
/// Bytes of a frame's tag and length.
pub const FRAME_HEAD_BYTES: usize = 8;
/// Tag of a chunk frame.
pub const CHUNK_TAG: [u8; 4] = *b"CHNK";
/// Tag of the trailer frame.
pub const TRAILER_TAG: [u8; 4] = *b"TRLR";
/// Bytes of a chunk body before its entries: checksum and entry count.
pub const CHUNK_PREFIX_BYTES: usize = 8;
/// Body bytes of the trailer frame.
pub const TRAILER_BODY_BYTES: usize = 20;
/// The encoder closes a chunk once its entries take this many bytes (a chunk holds at least one
/// entry, so one large entry makes a larger chunk). This bounds the encoder's buffer.
pub const SNAPSHOT_CHUNK_BYTES_TARGET: usize = 1024 * 1024;
/// Smallest file a complete snapshot can be: a header and a trailer (no entries).
pub const SNAPSHOT_BYTES_MIN: usize = SNAPSHOT_HEADER_BYTES + FRAME_HEAD_BYTES + TRAILER_BODY_BYTES;
/// File name extension of a snapshot.
pub const SNAPSHOT_EXTENSION: &str = "snap";
/// Suffix added to a snapshot's name while it is being written.
pub const TEMPORARY_SUFFIX: &str = ".tmp";

pub const ENTRY_BYTES_MIN: usize = ENTRY_FIXED_BYTES + 1;

/// The name of a snapshot file, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName {
    pub generation: u32,
    pub shard: u32,
    pub sequence: u64,
}

impl SnapshotName {
    /// Parses a snapshot file name (not a temporary one); `None` if `name` is not one.
    pub fn parse(name: &str) -> Option<Self> {
        let (generation, shard, sequence) = names::parse(name, SNAPSHOT_EXTENSION)?;
        Some(SnapshotName {
            generation,
            shard,
            sequence,
        })
    }

    /// Parses the name of a snapshot being written (`….snap.tmp`).
    pub fn parse_temporary(name: &str) -> Option<Self> {
        SnapshotName::parse(name.strip_suffix(TEMPORARY_SUFFIX)?)
    }

    /// The name the snapshot has while it is being written.
    pub fn temporary(&self) -> String {
        format!("{self}{TEMPORARY_SUFFIX}")
    }
}

impl std::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&names::format(
            self.generation,
            self.shard,
            self.sequence,
            SNAPSHOT_EXTENSION,
        ))
    }
}

/// The fields of a snapshot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub generation: u32,
    pub shard: u32,
    pub shard_count: u32,
    /// The last log record the snapshot reflects.
    pub sequence: u64,
    /// The shard's version counter when the snapshot started (versions of deleted keys
    /// included, so none is handed out twice after a restart).
    pub version_clock: u64,
    pub created_at_ms: u64,
}

impl SnapshotHeader {
    /// The file name of the snapshot this header starts.
    pub fn name(&self) -> SnapshotName {
        SnapshotName {
            generation: self.generation,
            shard: self.shard,
            sequence: self.sequence,
        }
    }

    pub fn encode(&self) -> [u8; SNAPSHOT_HEADER_BYTES] {
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        put_u16(&mut out, FORMAT_VERSION);
        put_u16(&mut out, 0);
        put_u32(&mut out, self.generation);
        put_u32(&mut out, self.shard);
        put_u32(&mut out, self.shard_count);
        put_u64(&mut out, self.sequence);
        put_u64(&mut out, self.version_clock);
        put_u64(&mut out, self.created_at_ms);
        out.extend_from_slice(&[0; 12]);
        let crc = checksum(&out);
        put_u32(&mut out, crc);
        let mut header = [0; SNAPSHOT_HEADER_BYTES];
        header.copy_from_slice(&out);
        header
    }

    /// Parses the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let header = crate::check_header(bytes, &SNAPSHOT_MAGIC, SNAPSHOT_HEADER_BYTES)?;
        let mut reader = Reader::new(&header[10..SNAPSHOT_HEADER_BYTES - 4]);
        let reserved_a = reader.u16();
        let fields = (
            reader.u32(),
            reader.u32(),
            reader.u32(),
            reader.u64(),
            reader.u64(),
            reader.u64(),
        );
        let reserved_b = reader.array::<12>();
        let (
            Some(generation),
            Some(shard),
            Some(shard_count),
            Some(sequence),
            Some(version_clock),
            Some(created_at_ms),
        ) = fields
        else {
            return Err(HeaderError::TooShort {
                length: bytes.len(),
                needed: SNAPSHOT_HEADER_BYTES,
            });
        };
        if reserved_a != Some(0) || reserved_b != Some([0; 12]) {
            return Err(HeaderError::ReservedNotZero);
        }
        Ok(SnapshotHeader {
            generation,
            shard,
            shard_count,
            sequence,
            version_clock,
            created_at_ms,
        })
    }
}

/// One key's entry in a snapshot. `B` is [`Bytes`] or `&[u8]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry<B = Bytes> {
    pub key: B,
    pub value: B,
    /// >= 1.
    pub version: u64,
    /// Milliseconds since the Unix epoch; 0 = never.
    pub expires_at_ms: u64,
}

/// An entry borrowed from a snapshot's bytes.
pub type SnapshotEntryRef<'a> = SnapshotEntry<&'a [u8]>;

/// What a complete snapshot holds, from its trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub entries: u64,
    pub chunks: u64,
    /// Bytes of the whole file.
    pub bytes: u64,
    /// The largest version among the entries (0 if none).
    pub version_max: u64,
}

/// Why the encoder refused an entry (nothing was written for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotEncodeError {
    Entry(EntryProblem),
    /// Keys must be pushed in strictly increasing byte order.
    KeyOutOfOrder,
}

impl std::fmt::Display for SnapshotEncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotEncodeError::Entry(problem) => write!(f, "snapshot entry refused: {problem}"),
            SnapshotEncodeError::KeyOutOfOrder => {
                write!(
                    f,
                    "snapshot entries must come in strictly increasing key order"
                )
            }
        }
    }
}

impl std::error::Error for SnapshotEncodeError {}

/// Writes a snapshot incrementally: feed entries one by one; finished chunks are appended to the
/// caller's output buffer, which the caller writes out and clears. Memory: one chunk
/// ([`SNAPSHOT_CHUNK_BYTES_TARGET`] plus at most one entry) and the previous key.
pub struct SnapshotEncoder {
    limits: EntryLimits,
    chunk: Vec<u8>,
    chunk_entries: u32,
    file_crc: u32,
    bytes: u64,
    entries: u64,
    chunks: u64,
    version_max: u64,
    last_key: Option<Vec<u8>>,
}

impl SnapshotEncoder {
    /// Starts a snapshot: appends the header to `out`.
    pub fn new(header: &SnapshotHeader, limits: EntryLimits, out: &mut Vec<u8>) -> Self {
        let mut encoder = SnapshotEncoder {
            limits,
            chunk: Vec::new(),
            chunk_entries: 0,
            file_crc: 0,
            bytes: 0,
            entries: 0,
            chunks: 0,
            version_max: 0,
            last_key: None,
        };
        encoder.emit(out, &header.encode());
        encoder
    }

    /// Adds one entry; appends a finished chunk to `out` when the current one is full.
    pub fn push(
        &mut self,
        entry: SnapshotEntryRef<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), SnapshotEncodeError> {
        self.limits
            .check(entry.key.len(), entry.value.len())
            .map_err(SnapshotEncodeError::Entry)?;
        if entry.version == 0 {
            return Err(SnapshotEncodeError::Entry(EntryProblem::ZeroVersion));
        }
        match &mut self.last_key {
            Some(last) if last.as_slice() >= entry.key => {
                return Err(SnapshotEncodeError::KeyOutOfOrder)
            }
            Some(last) => {
                last.clear();
                last.extend_from_slice(entry.key);
            }
            None => self.last_key = Some(entry.key.to_vec()),
        }
        put_entry(
            &mut self.chunk,
            entry.key,
            entry.value,
            entry.version,
            entry.expires_at_ms,
        );
        self.chunk_entries += 1;
        self.entries += 1;
        self.version_max = self.version_max.max(entry.version);
        if self.chunk.len() >= SNAPSHOT_CHUNK_BYTES_TARGET {
            self.flush_chunk(out);
        }
        Ok(())
    }

    /// Bytes buffered in the current chunk.
    pub fn buffered_bytes(&self) -> usize {
        self.chunk.len()
    }

    /// Finishes the snapshot: appends the last chunk and the trailer to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> SnapshotSummary {
        self.flush_chunk(out);
        let mut trailer = Vec::with_capacity(FRAME_HEAD_BYTES + TRAILER_BODY_BYTES);
        trailer.extend_from_slice(&TRAILER_TAG);
        put_u32(&mut trailer, TRAILER_BODY_BYTES as u32);
        put_u64(&mut trailer, self.entries);
        put_u64(&mut trailer, self.chunks);
        self.emit(out, &trailer);
        let crc = self.file_crc;
        self.emit(out, &crc.to_le_bytes());
        SnapshotSummary {
            entries: self.entries,
            chunks: self.chunks,
            bytes: self.bytes,
            version_max: self.version_max,
        }
    }

    fn flush_chunk(&mut self, out: &mut Vec<u8>) {
        if self.chunk_entries == 0 {
            return;
        }
        let count = self.chunk_entries.to_le_bytes();
        let crc = checksum_append(checksum(&count), &self.chunk);
        let body_length = CHUNK_PREFIX_BYTES + self.chunk.len();
        let mut head = Vec::with_capacity(FRAME_HEAD_BYTES + CHUNK_PREFIX_BYTES);
        head.extend_from_slice(&CHUNK_TAG);
        put_u32(&mut head, crate::bytes_io::length_u32(body_length));
        put_u32(&mut head, crc);
        head.extend_from_slice(&count);
        self.emit(out, &head);
        let chunk = std::mem::take(&mut self.chunk);
        self.emit(out, &chunk);
        self.chunk = chunk;
        self.chunk.clear();
        self.chunk_entries = 0;
        self.chunks += 1;
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.file_crc = checksum_append(self.file_crc, bytes);
        self.bytes += bytes.len() as u64;
        out.extend_from_slice(bytes);
    }
}

/// Why a snapshot was refused. Offsets are file offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    Header(HeaderError),
    /// The file ends at `offset`, before its trailer.
    Truncated {
        offset: u64,
    },
    /// A frame whose tag is neither a chunk nor the trailer.
    UnknownFrame {
        offset: u64,
        tag: [u8; 4],
    },
    /// A frame whose body length is impossible.
    BadFrameLength {
        offset: u64,
        length: u32,
        limit: usize,
    },
    /// A chunk whose checksum does not match.
    ChunkChecksum {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    /// A chunk whose entry count does not match its entries (or is 0).
    ChunkEntryCount {
        offset: u64,
        stored: u32,
    },
    /// An entry (in a chunk with a valid checksum) that is impossible.
    BadEntry {
        offset: u64,
        problem: EntryProblem,
    },
    /// An entry whose key is not greater than the previous one.
    KeyOutOfOrder {
        offset: u64,
    },
    /// The trailer's counts differ from what the file holds.
    CountMismatch {
        entries_stored: u64,
        entries_found: u64,
        chunks_stored: u64,
        chunks_found: u64,
    },
    /// The whole-file checksum in the trailer does not match.
    FileChecksum {
        stored: u32,
        computed: u32,
    },
    /// Bytes after the trailer.
    TrailingBytes {
        offset: u64,
    },
    /// A header that does not fit the file's name or the layout (checked by recovery).
    HeaderMismatch {
        detail: String,
    },
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Header(error) => write!(f, "bad header: {error}"),
            SnapshotError::Truncated { offset } => {
                write!(f, "truncated at offset {offset}, before its trailer")
            }
            SnapshotError::UnknownFrame { offset, tag } => {
                write!(f, "unknown frame tag {tag:?} at offset {offset}")
            }
            SnapshotError::BadFrameLength {
                offset,
                length,
                limit,
            } => write!(
                f,
                "frame at offset {offset} claims {length} bytes (limit {limit})"
            ),
            SnapshotError::ChunkChecksum {
                offset,
                stored,
                computed,
            } => write!(
                f,
                "chunk at offset {offset} has a checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            SnapshotError::ChunkEntryCount { offset, stored } => write!(
                f,
                "chunk at offset {offset} claims {stored} entries, which its bytes do not hold"
            ),
            SnapshotError::BadEntry { offset, problem } => {
                write!(f, "entry at offset {offset} has {problem}")
            }
            SnapshotError::KeyOutOfOrder { offset } => write!(
                f,
                "entry at offset {offset} is not in increasing key order"
            ),
            SnapshotError::CountMismatch {
                entries_stored,
                entries_found,
                chunks_stored,
                chunks_found,
            } => write!(
                f,
                "trailer says {entries_stored} entries in {chunks_stored} chunks, the file holds {entries_found} in {chunks_found}"
            ),
            SnapshotError::FileChecksum { stored, computed } => write!(
                f,
                "whole-file checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            SnapshotError::TrailingBytes { offset } => {
                write!(f, "bytes after the trailer, from offset {offset}")
            }
            SnapshotError::HeaderMismatch { detail } => write!(f, "its header says {detail}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<HeaderError> for SnapshotError {
    fn from(error: HeaderError) -> Self {
        SnapshotError::Header(error)
    }
}

/// A frame whose head was read; pass it with its body to [`SnapshotDecoder::frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    tag: [u8; 4],
    body_length: usize,
    offset: u64,
}

impl FrameHead {
    /// Bytes of the body to read next.
    pub fn body_length(&self) -> usize {
        self.body_length
    }
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The entries of one chunk, in key order, all checked.
    Chunk(Vec<SnapshotEntryRef<'a>>),
    /// The trailer: the snapshot is complete and consistent (the caller checks that the file
    /// ends here).
    End(SnapshotSummary),
}

/// Reads a snapshot frame by frame, so that the I/O layer can read a large file in bounded
/// pieces: [`SnapshotDecoder::new`] with the first [`SNAPSHOT_HEADER_BYTES`], then repeatedly
/// [`SnapshotDecoder::frame_head`] with the next [`FRAME_HEAD_BYTES`] and
/// [`SnapshotDecoder::frame`] with the body it announces, until [`Frame::End`]. Entries of a
/// snapshot that later turns out bad must be discarded: load into staging. Never panics; checks
/// every length against the limits before the caller reads or allocates for it.
pub struct SnapshotDecoder {
    header: SnapshotHeader,
    limits: EntryLimits,
    offset: u64,
    file_crc: u32,
    entries: u64,
    chunks: u64,
    version_max: u64,
    last_key: Option<Vec<u8>>,
    done: bool,
}

impl SnapshotDecoder {
    /// Parses the header at the start of `bytes`.
    pub fn new(bytes: &[u8], limits: EntryLimits) -> Result<Self, SnapshotError> {
        let header = SnapshotHeader::parse(bytes)?;
        Ok(SnapshotDecoder {
            header,
            limits,
            offset: SNAPSHOT_HEADER_BYTES as u64,
            file_crc: checksum(&bytes[..SNAPSHOT_HEADER_BYTES]),
            entries: 0,
            chunks: 0,
            version_max: 0,
            last_key: None,
            done: false,
        })
    }

    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The file offset of the next byte the decoder expects.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The largest chunk body these limits allow.
    pub fn chunk_body_bytes_max(&self) -> usize {
        CHUNK_PREFIX_BYTES + SNAPSHOT_CHUNK_BYTES_TARGET - 1 + self.limits.entry_bytes_max()
    }

    /// Checks a frame head (the first [`FRAME_HEAD_BYTES`] of `bytes`): its tag, and its length
    /// against the limits.
    pub fn frame_head(&mut self, bytes: &[u8]) -> Result<FrameHead, SnapshotError> {
        let offset = self.offset;
        if self.done {
            return Err(SnapshotError::TrailingBytes { offset });
        }
        let (Some(tag), Some(length)) = (bytes.get(..4), u32_at(bytes, 4)) else {
            return Err(SnapshotError::Truncated { offset });
        };
        let tag: [u8; 4] = [tag[0], tag[1], tag[2], tag[3]];
        let (minimum, limit) = match tag {
            CHUNK_TAG => (
                CHUNK_PREFIX_BYTES + ENTRY_BYTES_MIN,
                self.chunk_body_bytes_max(),
            ),
            TRAILER_TAG => (TRAILER_BODY_BYTES, TRAILER_BODY_BYTES),
            tag => return Err(SnapshotError::UnknownFrame { offset, tag }),
        };
        if !(minimum..=limit).contains(&(length as usize)) {
            return Err(SnapshotError::BadFrameLength {
                offset,
                length,
                limit,
            });
        }
        self.file_crc = checksum_append(self.file_crc, &bytes[..FRAME_HEAD_BYTES]);
        self.offset += FRAME_HEAD_BYTES as u64;
        Ok(FrameHead {
            tag,
            body_length: length as usize,
            offset,
        })
    }

    /// Decodes the body of the frame `head` announced (`body` must be exactly that long; a
    /// shorter one means the file ended).
    pub fn frame<'a>(
        &mut self,
        head: FrameHead,
        body: &'a [u8],
    ) -> Result<Frame<'a>, SnapshotError> {
        if body.len() != head.body_length {
            return Err(SnapshotError::Truncated {
                offset: self.offset + body.len() as u64,
            });
        }
        let frame = if head.tag == TRAILER_TAG {
            self.trailer(body)?
        } else {
            self.chunk(head.offset, body)?
        };
        self.offset += body.len() as u64;
        Ok(frame)
    }

    fn trailer<'a>(&mut self, body: &'a [u8]) -> Result<Frame<'a>, SnapshotError> {
        let mut reader = Reader::new(body);
        let (Some(entries), Some(chunks), Some(stored)) =
            (reader.u64(), reader.u64(), reader.u32())
        else {
            return Err(SnapshotError::Truncated {
                offset: self.offset,
            });
        };
        let computed = checksum_append(self.file_crc, &body[..16]);
        if stored != computed {
            return Err(SnapshotError::FileChecksum { stored, computed });
        }
        if entries != self.entries || chunks != self.chunks {
            return Err(SnapshotError::CountMismatch {
                entries_stored: entries,
                entries_found: self.entries,
                chunks_stored: chunks,
                chunks_found: self.chunks,
            });
        }
        self.done = true;
        Ok(Frame::End(SnapshotSummary {
            entries,
            chunks,
            bytes: self.offset + body.len() as u64,
            version_max: self.version_max,
        }))
    }

    fn chunk<'a>(&mut self, frame_offset: u64, body: &'a [u8]) -> Result<Frame<'a>, SnapshotError> {
        let stored = u32_at(body, 0).unwrap_or(0);
        let computed = checksum(body.get(4..).unwrap_or_default());
        if stored != computed {
            return Err(SnapshotError::ChunkChecksum {
                offset: frame_offset,
                stored,
                computed,
            });
        }
        let mut reader = Reader::new(body);
        reader.u32();
        let count = reader.u32().unwrap_or(0);
        // Every entry takes at least ENTRY_BYTES_MIN bytes: a count the body cannot hold is
        // refused before anything is allocated for it.
        if count == 0 || count as usize > reader.remaining() / ENTRY_BYTES_MIN {
            return Err(SnapshotError::ChunkEntryCount {
                offset: frame_offset,
                stored: count,
            });
        }
        let body_offset = self.offset;
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let offset = body_offset + reader.position() as u64;
            let entry = parse_entry(&mut reader, &self.limits)
                .map_err(|problem| SnapshotError::BadEntry { offset, problem })?;
            let key = entry.key;
            match &mut self.last_key {
                Some(last) if last.as_slice() >= key => {
                    return Err(SnapshotError::KeyOutOfOrder { offset })
                }
                Some(last) => {
                    last.clear();
                    last.extend_from_slice(key);
                }
                None => self.last_key = Some(key.to_vec()),
            }
            self.version_max = self.version_max.max(entry.version);
            entries.push(entry);
        }
        if reader.remaining() != 0 {
            return Err(SnapshotError::ChunkEntryCount {
                offset: frame_offset,
                stored: count,
            });
        }
        self.file_crc = checksum_append(self.file_crc, body);
        self.entries += u64::from(count);
        self.chunks += 1;
        Ok(Frame::Chunk(entries))
    }
}

/// Decodes a whole snapshot held in memory, handing each entry to `each` (in key order; discard
/// them all if this returns an error).
pub fn decode_snapshot<'a>(
    bytes: &'a [u8],
    limits: EntryLimits,
    mut each: impl FnMut(SnapshotEntryRef<'a>),
) -> Result<(SnapshotHeader, SnapshotSummary), SnapshotError> {
    let mut decoder = SnapshotDecoder::new(bytes, limits)?;
    loop {
        let at = decoder.offset() as usize;
        let head = decoder.frame_head(bytes.get(at..).unwrap_or_default())?;
        let start = decoder.offset() as usize;
        let end = start.saturating_add(head.body_length()).min(bytes.len());
        match decoder.frame(head, &bytes[start..end])? {
            Frame::Chunk(entries) => entries.into_iter().for_each(&mut each),
            Frame::End(summary) => {
                if summary.bytes != bytes.len() as u64 {
                    return Err(SnapshotError::TrailingBytes {
                        offset: summary.bytes,
                    });
                }
                return Ok((*decoder.header(), summary));
            }
        }
    }
}

/// Encodes a whole snapshot in memory (tests, small shards).
pub fn encode_snapshot<'a>(
    header: &SnapshotHeader,
    limits: EntryLimits,
    entries: impl IntoIterator<Item = SnapshotEntryRef<'a>>,
) -> Result<Vec<u8>, SnapshotEncodeError> {
    let mut out = Vec::new();
    let mut encoder = SnapshotEncoder::new(header, limits, &mut out);
    for entry in entries {
        encoder.push(entry, &mut out)?;
    }
    encoder.finish(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            generation: 2,
            shard: 1,
            shard_count: 4,
            sequence: 99,
            version_clock: 120,
            created_at_ms: 1_700_000_000_000,
        }
    }

    fn entry(key: &[u8], version: u64) -> SnapshotEntry<Vec<u8>> {
        SnapshotEntry {
            key: key.to_vec(),
            value: vec![version as u8; (version % 7) as usize],
            version,
            expires_at_ms: version * 3,
        }
    }

    fn as_ref(entry: &SnapshotEntry<Vec<u8>>) -> SnapshotEntryRef<'_> {
        SnapshotEntry {
            key: &entry.key,
            value: &entry.value,
            version: entry.version,
            expires_at_ms: entry.expires_at_ms,
        }
    }

    #[test]
    fn header_layout_is_as_documented() {
        let bytes = header().encode();
        assert_eq!(&bytes[0..8], b"VEDDBSNP");
        assert_eq!(&bytes[8..10], &1u16.to_le_bytes());
        assert_eq!(&bytes[12..16], &2u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &1u32.to_le_bytes());
        assert_eq!(&bytes[20..24], &4u32.to_le_bytes());
        assert_eq!(&bytes[24..32], &99u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &120u64.to_le_bytes());
        assert_eq!(&bytes[40..48], &1_700_000_000_000u64.to_le_bytes());
        assert_eq!(&bytes[48..60], &[0; 12]);
        assert_eq!(&bytes[60..64], &checksum(&bytes[..60]).to_le_bytes());
        assert_eq!(SnapshotHeader::parse(&bytes), Ok(header()));
        let name = header().name();
        assert_eq!(
            name.to_string(),
            "0000000002-00001-00000000000000000099.snap"
        );
        assert_eq!(SnapshotName::parse(&name.to_string()), Some(name));
        assert_eq!(SnapshotName::parse_temporary(&name.temporary()), Some(name));
        assert_eq!(SnapshotName::parse(&name.temporary()), None);
    }

    #[test]
    fn empty_snapshot_is_header_and_trailer() {
        let bytes = encode_snapshot(&header(), EntryLimits::default(), []).unwrap();
        assert_eq!(bytes.len(), SNAPSHOT_BYTES_MIN);
        assert_eq!(&bytes[64..68], b"TRLR");
        assert_eq!(&bytes[68..72], &20u32.to_le_bytes());
        assert_eq!(&bytes[72..88], &[0; 16]);
        assert_eq!(&bytes[88..92], &checksum(&bytes[..88]).to_le_bytes());
        let (parsed, summary) =
            decode_snapshot(&bytes, EntryLimits::default(), |_| panic!()).unwrap();
        assert_eq!(parsed, header());
        assert_eq!(summary.entries, 0);
        assert_eq!(summary.bytes, bytes.len() as u64);
    }

    #[test]
    fn round_trip_across_many_chunks() {
        let entries: Vec<_> = (1..=3000u64)
            .map(|i| SnapshotEntry {
                key: format!("key:{i:08}").into_bytes(),
                value: vec![i as u8; 1000],
                version: i,
                expires_at_ms: 0,
            })
            .collect();
        let bytes = encode_snapshot(
            &header(),
            EntryLimits::default(),
            entries.iter().map(as_ref),
        )
        .unwrap();
        let mut decoded = Vec::new();
        let (_, summary) =
            decode_snapshot(&bytes, EntryLimits::default(), |e| decoded.push(e.clone())).unwrap();
        assert_eq!(summary.entries, 3000);
        assert!(summary.chunks >= 2, "{summary:?}");
        assert_eq!(summary.version_max, 3000);
        assert_eq!(decoded.len(), entries.len());
        for (a, b) in decoded.iter().zip(&entries) {
            assert_eq!(*a, as_ref(b));
        }
    }

    #[test]
    fn encoder_refuses_out_of_order_and_bad_entries() {
        let mut out = Vec::new();
        let mut encoder = SnapshotEncoder::new(&header(), EntryLimits::new(4, 4), &mut out);
        encoder.push(as_ref(&entry(b"b", 1)), &mut out).unwrap();
        assert_eq!(
            encoder.push(as_ref(&entry(b"b", 2)), &mut out),
            Err(SnapshotEncodeError::KeyOutOfOrder)
        );
        assert_eq!(
            encoder.push(as_ref(&entry(b"a", 2)), &mut out),
            Err(SnapshotEncodeError::KeyOutOfOrder)
        );
        assert_eq!(
            encoder.push(as_ref(&entry(b"abcde", 2)), &mut out),
            Err(SnapshotEncodeError::Entry(EntryProblem::KeyTooLarge {
                length: 5,
                limit: 4
            }))
        );
        assert_eq!(
            encoder.push(as_ref(&entry(b"c", 0)), &mut out),
            Err(SnapshotEncodeError::Entry(EntryProblem::ZeroVersion))
        );
        encoder.push(as_ref(&entry(b"c", 3)), &mut out).unwrap();
        encoder.finish(&mut out);
        let (_, summary) = decode_snapshot(&out, EntryLimits::new(4, 4), |_| {}).unwrap();
        assert_eq!(summary.entries, 2);
    }

    #[test]
    fn every_truncation_is_refused() {
        let entries: Vec<_> = (1..=20u64)
            .map(|i| entry(format!("k{i:02}").as_bytes(), i))
            .collect();
        let bytes = encode_snapshot(
            &header(),
            EntryLimits::default(),
            entries.iter().map(as_ref),
        )
        .unwrap();
        for cut in 0..bytes.len() {
            let result = decode_snapshot(&bytes[..cut], EntryLimits::default(), |_| {});
            assert!(result.is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_snapshot(&longer, EntryLimits::default(), |_| {}),
            Err(SnapshotError::TrailingBytes {
                offset: bytes.len() as u64
            })
        );
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let entries: Vec<_> = (1..=5u64)
            .map(|i| entry(format!("k{i}").as_bytes(), i))
            .collect();
        let bytes = encode_snapshot(
            &header(),
            EntryLimits::default(),
            entries.iter().map(as_ref),
        )
        .unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_snapshot(&flipped, EntryLimits::default(), |_| {}).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn a_huge_claimed_length_is_refused_before_reading() {
        let bytes =
            encode_snapshot(&header(), EntryLimits::default(), [as_ref(&entry(b"k", 1))]).unwrap();
        let mut decoder = SnapshotDecoder::new(&bytes, EntryLimits::default()).unwrap();
        let mut head = bytes[64..72].to_vec();
        head[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decoder.frame_head(&head),
            Err(SnapshotError::BadFrameLength { offset: 64, .. })
        ));
    }
}
