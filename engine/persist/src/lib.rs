//! `veddb-persist`: the durable formats of VedDB and the rules around them, with no I/O.
//!
//! This crate owns what a shard's data looks like on disk and how it is read back:
//!
//! - [`record`]: one write-ahead-log record (a `Put` of a key's whole resulting entry, or a
//!   `Delete`), its byte layout, and a [`record::RecordDecoder`] that tells a valid record, a
//!   clean end, a torn tail (cut it off) and corruption in the middle (stop) apart.
//! - [`segment`]: log segment files: names, the segment header.
//! - [`snapshot`]: snapshot files: a header, checksummed chunks of entries, a trailer; an
//!   incremental encoder (bounded memory) and a decoder.
//! - [`layout`]: the layout marker that commits a generation (a shard count).
//! - [`recovery`]: from a data directory's file list to a plan (which snapshot, which segments, in
//!   which order), replay with sequence checks, re-hashing onto a new shard count, expiry on load.
//! - [`writer`]: [`writer::LogWriter`], group commit as a pure state machine (`append`,
//!   `poll_write`, `complete_write`, `poll_fsync`, `complete_fsync`) under the three fsync policies.
//! - [`storage`]: the [`storage::Storage`] seam under the log and snapshot writers, and
//!   [`storage::MemoryStorage`], an in-memory implementation with fault injection and crashes.
//! - [`procedure`]: recovery, repair, snapshot writing and log trimming written once against
//!   [`storage::Storage`].
//!
//! Like `veddb-shard` it is sans-IO: no runtime, no thread, no clock (time is an argument), no
//! file system. The engine drives it with real files; the tests drive it with
//! [`storage::MemoryStorage`]. It must not depend on `veddb-engine`, `veddb-shard`, any async
//! runtime or the operating system. The formats are described byte by byte in `docs/persistence.md`.
#![forbid(unsafe_code)]

pub mod fuzzing;
pub mod layout;
pub mod limits;
pub mod procedure;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod storage;
pub mod writer;

mod bytes_io;
mod names;

pub use limits::EntryLimits;
pub use record::{Record, RecordRef};

/// The format version written into every segment, snapshot and layout file. A reader refuses any
/// other version with an error that names the file.
pub const FORMAT_VERSION: u16 = 1;

/// CRC-32C (Castagnoli) of `bytes`, the checksum of every format in this crate.
#[inline]
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues a CRC-32C over more bytes: `checksum_append(checksum(a), b) == checksum(a ‖ b)`.
#[inline]
pub fn checksum_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// Why the fixed header of a segment, snapshot or layout file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The file is shorter than its header.
    TooShort { length: usize, needed: usize },
    /// The file does not start with the expected magic bytes: not a file of this kind.
    BadMagic { found: Vec<u8> },
    /// A format version this build cannot read (written by a newer VedDB?).
    UnsupportedVersion { found: u16, supported: u16 },
    /// The header's checksum does not match its bytes.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// A reserved field is not zero.
    ReservedNotZero,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooShort { length, needed } => {
                write!(f, "{length} bytes, shorter than its {needed}-byte header")
            }
            HeaderError::BadMagic { found } => {
                write!(
                    f,
                    "unexpected magic bytes {:?}",
                    String::from_utf8_lossy(found)
                )
            }
            HeaderError::UnsupportedVersion { found, supported } => write!(
                f,
                "format version {found}, but this build reads version {supported} only"
            ),
            HeaderError::ChecksumMismatch { stored, computed } => write!(
                f,
                "a header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            HeaderError::ReservedNotZero => write!(f, "a reserved header field that is not zero"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Checks the parts every header shares: at least `length` bytes, a CRC-32C of bytes
/// `0..length-4` in the last four, the magic at 0..8 and the format version at 8..10. Returns the
/// header's bytes.
///
/// Nothing in a header is trusted before its checksum holds: a header torn by a crash can keep
/// the magic and tear the version (a version of 769 is one byte of 1 and one of garbage), and
/// must then read as damaged, never as "written by a newer VedDB". So a checksum mismatch is
/// [`HeaderError::ChecksumMismatch`] (or [`HeaderError::BadMagic`] when the magic is wrong too:
/// not a file of this kind), and [`HeaderError::UnsupportedVersion`] needs an intact header.
/// Every later format version keeps each kind's header length, magic, version field and
/// checksum position, so that this build can tell it apart from damage.
pub(crate) fn check_header<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    length: usize,
) -> Result<&'a [u8], HeaderError> {
    debug_assert!(length >= 14, "magic, version and checksum fit");
    let Some(header) = bytes.get(..length) else {
        return Err(HeaderError::TooShort {
            length: bytes.len(),
            needed: length,
        });
    };
    let (covered, stored) = header.split_at(length - 4);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = checksum(covered);
    let magic_holds = &header[..8] == magic;
    if stored != computed {
        if !magic_holds {
            return Err(HeaderError::BadMagic {
                found: header[..8].to_vec(),
            });
        }
        return Err(HeaderError::ChecksumMismatch { stored, computed });
    }
    if !magic_holds {
        return Err(HeaderError::BadMagic {
            found: header[..8].to_vec(),
        });
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_crc32c() {
        // The check value of CRC-32C (RFC 3720 appendix B.4): "123456789" -> 0xE3069283.
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
        assert_eq!(checksum_append(checksum(b"12345"), b"6789"), 0xE306_9283);
        assert_eq!(checksum(b""), 0);
    }
}
