//! The layout marker: the file that commits a generation and its shard count.
//!
//! Every data file belongs to a *generation* (the first number of its name). A generation has
//! one shard count; it is committed by its layout marker
//! `<generation:010>-shards-<shard-count:05>.layout`, written (temporary file, fsync, rename,
//! directory fsync) only after every file the generation starts with is durable. Recovery uses
//! the newest generation that has a marker; files of older generations are superseded and files
//! of newer ones are the debris of a change of `--cores` that did not finish. This is what makes
//! changing the shard count crash-safe: the switch is one rename.
//!
//! # Content (integers little-endian)
//!
//! ```text
//! offset  size  field
//! 0       8     magic           b"VEDDBLAY"
//! 8       2     format version  1
//! 10      2     reserved        0
//! 12      4     generation
//! 16      4     shard count
//! 20      4     crc             CRC-32C of bytes 0..20
//! ```

use crate::bytes_io::{put_u16, put_u32, Reader};
use crate::{checksum, names, HeaderError, FORMAT_VERSION};

/// Magic bytes of a layout marker.
pub const LAYOUT_MAGIC: [u8; 8] = *b"VEDDBLAY";
/// Bytes of a layout marker.
pub const LAYOUT_BYTES: usize = 24;
/// File name extension of a layout marker.
pub const LAYOUT_EXTENSION: &str = "layout";

/// A generation and its shard count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Layout {
    pub generation: u32,
    pub shard_count: u32,
}

impl Layout {
    /// `<generation:010>-shards-<shard-count:05>.layout`.
    pub fn file_name(&self) -> String {
        format!(
            "{:010}-shards-{:05}.{LAYOUT_EXTENSION}",
            self.generation, self.shard_count
        )
    }

    /// Parses a layout marker's file name; `None` if `name` is not one.
    pub fn parse_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(LAYOUT_EXTENSION)?.strip_suffix('.')?;
        let (generation, shard_count) = stem.split_once("-shards-")?;
        let generation =
            u32::try_from(names::number(generation, names::GENERATION_DIGITS)?).ok()?;
        let shard_count = u32::try_from(names::number(shard_count, names::SHARD_DIGITS)?).ok()?;
        (1..=veddb_wire::limits::SHARDS_MAX)
            .contains(&shard_count)
            .then_some(Layout {
                generation,
                shard_count,
            })
    }

    pub fn encode(&self) -> [u8; LAYOUT_BYTES] {
        let mut out = Vec::with_capacity(LAYOUT_BYTES);
        out.extend_from_slice(&LAYOUT_MAGIC);
        put_u16(&mut out, FORMAT_VERSION);
        put_u16(&mut out, 0);
        put_u32(&mut out, self.generation);
        put_u32(&mut out, self.shard_count);
        let crc = checksum(&out);
        put_u32(&mut out, crc);
        let mut bytes = [0; LAYOUT_BYTES];
        bytes.copy_from_slice(&out);
        bytes
    }

    /// Parses a layout marker's content.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let header = crate::check_header(bytes, &LAYOUT_MAGIC, LAYOUT_BYTES)?;
        let mut reader = Reader::new(&header[10..LAYOUT_BYTES - 4]);
        match (reader.u16(), reader.u32(), reader.u32()) {
            (Some(0), Some(generation), Some(shard_count)) => Ok(Layout {
                generation,
                shard_count,
            }),
            _ => Err(HeaderError::ReservedNotZero),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_content_round_trip() {
        let layout = Layout {
            generation: 12,
            shard_count: 4,
        };
        assert_eq!(layout.file_name(), "0000000012-shards-00004.layout");
        assert_eq!(Layout::parse_name(&layout.file_name()), Some(layout));
        let bytes = layout.encode();
        assert_eq!(&bytes[..8], b"VEDDBLAY");
        assert_eq!(&bytes[12..16], &12u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &4u32.to_le_bytes());
        assert_eq!(Layout::parse(&bytes), Ok(layout));
        for byte in 0..LAYOUT_BYTES {
            let mut flipped = bytes;
            flipped[byte] ^= 1;
            assert!(Layout::parse(&flipped).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn odd_names_are_refused() {
        for name in [
            "0000000012-shards-00000.layout",
            "0000000012-shards-99999.layout",
            "0000000012-shards-0004.layout",
            "0000000012-shard-00004.layout",
            "0000000012-shards-00004.layout.tmp",
        ] {
            assert_eq!(Layout::parse_name(name), None, "{name}");
        }
    }
}
