//! Offsets, sizes, magics and the small pure checks on them.
//!
//! Three kinds of region exist per instance:
//!
//! - the **instance file** `/dev/shm/veddb-<name>` ([`instance`]), written by the server,
//!   read by clients to find the instance and its geometry;
//! - one **ring segment** per (session, core) ([`ring_segment`]), mapped read-write by the
//!   client and by that core: the core treats every byte of it as hostile;
//! - one **data segment** per core ([`data_segment`]), written only by that core and mapped
//!   read-only by clients: the [`arena`] of shared values lives there.
//!
//! Frames in the byte rings follow [`ring`]; the payloads inside follow
//! [`codec`](super::codec).

use std::fmt;

/// Version of this layout, stored after every magic.
pub const LAYOUT_VERSION: u16 = 5;
/// A cache line: fields written by different sides never share one.
pub const CACHE_LINE_BYTES: usize = 64;
/// A page: every header is one page, so the data after it is page-aligned.
pub const PAGE_BYTES: usize = 4096;

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}
fn write(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Why a header could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than the header.
    Truncated {
        region: &'static str,
        length: usize,
        needed: usize,
    },
    /// Not the magic of this region (not initialised yet, or something else).
    BadMagic {
        region: &'static str,
        found: [u8; 8],
    },
    /// A layout version this code does not know.
    BadVersion { region: &'static str, found: u16 },
    /// A field with a value the layout does not allow.
    BadField {
        region: &'static str,
        field: &'static str,
        offset: usize,
        value: u64,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated {
                region,
                length,
                needed,
            } => write!(
                f,
                "{region} header: {length} bytes, at least {needed} needed"
            ),
            HeaderError::BadMagic { region, found } => write!(
                f,
                "{region} header: bad magic {:?} (not a VedDB {region}, or not initialised yet)",
                String::from_utf8_lossy(found)
            ),
            HeaderError::BadVersion { region, found } => write!(
                f,
                "{region} header: layout version {found}, this build knows version {LAYOUT_VERSION}"
            ),
            HeaderError::BadField {
                region,
                field,
                offset,
                value,
            } => write!(
                f,
                "{region} header: {field} (offset {offset:#05x}) has the invalid value {value}"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

fn check_common(
    bytes: &[u8],
    region: &'static str,
    needed: usize,
    magic: &[u8; 8],
) -> Result<(), HeaderError> {
    if bytes.len() < needed {
        return Err(HeaderError::Truncated {
            region,
            length: bytes.len(),
            needed,
        });
    }
    let mut found = [0u8; 8];
    found.copy_from_slice(&bytes[..8]);
    if &found != magic {
        return Err(HeaderError::BadMagic { region, found });
    }
    let version = read_u16(bytes, 8);
    if version != LAYOUT_VERSION {
        return Err(HeaderError::BadVersion {
            region,
            found: version,
        });
    }
    Ok(())
}

pub mod instance;

pub mod ring_segment;

pub mod reason;

pub mod data_segment;

pub mod arena;

pub mod ring;

pub mod attach;
