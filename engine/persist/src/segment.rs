//! Log segment files: names and the segment header.
//!
//! A shard's log is a series of segment files, each named after the generation, the shard and
//! the sequence of its first record: `<generation:010>-<shard:05>-<first-sequence:020>.wal`
//! (for example `0000000001-00003-00000000000000000001.wal`). A segment is a
//! [`SEGMENT_HEADER_BYTES`]-byte header followed by records ([`crate::record`]).
//!
//! # Header layout (integers little-endian)
//!
//! ```text
//! offset  size  field
//! 0       8     magic           b"VEDDBWAL"
//! 8       2     format version  1
//! 10      2     reserved        0
//! 12      4     generation
//! 16      4     shard index
//! 20      8     first sequence  the sequence of the segment's first record
//! 28      4     crc             CRC-32C of bytes 0..28
//! ```

use crate::bytes_io::{put_u16, put_u32, put_u64, Reader};
use crate::{checksum, names, HeaderError, FORMAT_VERSION};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VEDDBWAL";
/// Bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// File name extension of a segment.
pub const SEGMENT_EXTENSION: &str = "wal";

/// The name of a segment file, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    pub generation: u32,
    pub shard: u32,
    pub first_sequence: u64,
}

impl SegmentName {
    /// Parses a segment file name; `None` if `name` is not one.
    pub fn parse(name: &str) -> Option<Self> {
        let (generation, shard, first_sequence) = names::parse(name, SEGMENT_EXTENSION)?;
        Some(SegmentName {
            generation,
            shard,
            first_sequence,
        })
    }

    /// The header a segment with this name must start with.
    pub fn header(&self) -> SegmentHeader {
        SegmentHeader {
            generation: self.generation,
            shard: self.shard,
            first_sequence: self.first_sequence,
        }
    }
}

impl std::fmt::Display for SegmentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&names::format(
            self.generation,
            self.shard,
            self.first_sequence,
            SEGMENT_EXTENSION,
        ))
    }
}

/// The fields of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub generation: u32,
    pub shard: u32,
    pub first_sequence: u64,
}

impl SegmentHeader {
    /// The file name of the segment this header starts.
    pub fn name(&self) -> SegmentName {
        SegmentName {
            generation: self.generation,
            shard: self.shard,
            first_sequence: self.first_sequence,
        }
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES);
        out.extend_from_slice(&SEGMENT_MAGIC);
        put_u16(&mut out, FORMAT_VERSION);
        put_u16(&mut out, 0);
        put_u32(&mut out, self.generation);
        put_u32(&mut out, self.shard);
        put_u64(&mut out, self.first_sequence);
        let crc = checksum(&out);
        put_u32(&mut out, crc);
        let mut header = [0; SEGMENT_HEADER_BYTES];
        header.copy_from_slice(&out);
        header
    }

    /// Parses the header at the start of `bytes` (which may hold the rest of the segment too).
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let header = crate::check_header(bytes, &SEGMENT_MAGIC, SEGMENT_HEADER_BYTES)?;
        let mut reader = Reader::new(&header[10..SEGMENT_HEADER_BYTES - 4]);
        let reserved = reader.u16();
        let generation = reader.u32();
        let shard = reader.u32();
        let first_sequence = reader.u64();
        match (reserved, generation, shard, first_sequence) {
            (Some(0), Some(generation), Some(shard), Some(first_sequence)) => Ok(SegmentHeader {
                generation,
                shard,
                first_sequence,
            }),
            (Some(_), ..) => Err(HeaderError::ReservedNotZero),
            _ => Err(HeaderError::TooShort {
                length: bytes.len(),
                needed: SEGMENT_HEADER_BYTES,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_as_documented() {
        let header = SegmentHeader {
            generation: 3,
            shard: 7,
            first_sequence: 0x0102_0304_0506_0708,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[0..8], b"VEDDBWAL");
        assert_eq!(&bytes[8..10], &1u16.to_le_bytes());
        assert_eq!(&bytes[10..12], &[0, 0]);
        assert_eq!(&bytes[12..16], &3u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &7u32.to_le_bytes());
        assert_eq!(&bytes[20..28], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[28..32], &checksum(&bytes[..28]).to_le_bytes());
        assert_eq!(SegmentHeader::parse(&bytes), Ok(header));
        assert_eq!(header.name().header(), header);
        assert_eq!(
            header.name().to_string(),
            "0000000003-00007-00072623859790382856.wal"
        );
        assert_eq!(
            SegmentName::parse(&header.name().to_string()),
            Some(header.name())
        );
    }

    #[test]
    fn every_damage_is_reported() {
        let bytes = SegmentHeader {
            generation: 1,
            shard: 0,
            first_sequence: 1,
        }
        .encode();
        assert_eq!(
            SegmentHeader::parse(&bytes[..31]),
            Err(HeaderError::TooShort {
                length: 31,
                needed: 32
            })
        );
        let mut magic = bytes;
        magic[0] = b'X';
        assert!(matches!(
            SegmentHeader::parse(&magic),
            Err(HeaderError::BadMagic { .. })
        ));
        // A newer format: an intact header (its checksum holds) with another version.
        let mut version = bytes;
        version[8] = 2;
        let crc = checksum(&version[..28]);
        version[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::parse(&version),
            Err(HeaderError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
        // A torn header that kept the magic and one byte of the version (the recovery defect
        // of issue 11: read as "format version 769") is damage, not a newer format.
        let mut torn = bytes;
        torn[9] = 3;
        torn[10..].fill(0xA5);
        assert!(matches!(
            SegmentHeader::parse(&torn),
            Err(HeaderError::ChecksumMismatch { .. })
        ));
        for byte in 8..32 {
            let mut flipped = bytes;
            flipped[byte] ^= 0x10;
            assert!(
                matches!(
                    SegmentHeader::parse(&flipped),
                    Err(HeaderError::ChecksumMismatch { .. })
                ),
                "byte {byte}"
            );
        }
        let mut reserved = bytes;
        reserved[10] = 1;
        let crc = checksum(&reserved[..28]);
        reserved[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::parse(&reserved),
            Err(HeaderError::ReservedNotZero)
        );
    }
}
