//! One data segment per core (a sealed memfd): written only by that core, mapped
//! read-only by clients. A 4096-byte header, then the [`arena`](super::arena).

use super::{check_common, read_u32, read_u64, write, HeaderError, LAYOUT_VERSION};

/// Size of the header; the arena starts here.
pub const HEADER_BYTES: usize = 0x1000;
/// Bytes 0..8.
pub const MAGIC: [u8; 8] = *b"VEDDBDAT";

pub const MAGIC_OFFSET: usize = 0x000;
/// u16, [`LAYOUT_VERSION`]; the u16 at 0x00A is reserved zero.
pub const VERSION_OFFSET: usize = 0x008;
/// u32, the core that owns the segment.
pub const CORE_OFFSET: usize = 0x00C;
/// u64, the instance id of the instance file.
pub const INSTANCE_ID_OFFSET: usize = 0x010;
/// u64, where the arena starts ([`ARENA_OFFSET`]).
pub const ARENA_OFFSET_OFFSET: usize = 0x018;
/// u64, bytes of the arena.
pub const ARENA_BYTES_OFFSET: usize = 0x020;
/// Bytes 0x028..0x040 are reserved zero.
pub const STATIC_END_OFFSET: usize = 0x040;
/// u64, the core's global epoch (starts at [`EPOCH_FIRST`]; core writes).
pub const GLOBAL_EPOCH_OFFSET: usize = 0x040;
/// u32, [`CORE_PARKED`] while the core sleeps or is about to (core writes).
pub const CORE_PARKED_OFFSET: usize = 0x080;
/// u32, the CPU the core's thread runs on, or [`CPU_UNKNOWN`] (core writes, when it changes).
/// A client that runs on the same CPU waits for that core's answers by yielding the CPU, not
/// by spinning (see `docs/shm-layout.md`, "Sharing a CPU"). In the parked flag's line, which
/// a client reads after every request anyway.
pub const CORE_CPU_OFFSET: usize = 0x084;
/// Bytes from here to [`HEADER_BYTES`] are reserved zero.
pub const RESERVED_TAIL_OFFSET: usize = 0x0C0;

/// The arena's offset in the segment.
pub const ARENA_OFFSET: u64 = HEADER_BYTES as u64;
/// The first global epoch (0 is [`EPOCH_PIN_NONE`](super::ring_segment::EPOCH_PIN_NONE)).
pub const EPOCH_FIRST: u64 = 1;
/// A CPU number that names none: not known (yet).
pub const CPU_UNKNOWN: u32 = u32::MAX;
/// Parked flag: the core is running (polling its rings).
pub const CORE_RUNNING: u32 = 0;
/// Parked flag: the core sleeps; a client that publishes a request and then sees this
/// writes 1 to the core's eventfd.
pub const CORE_PARKED: u32 = 1;

/// The static part of a data segment header (0x000..0x040).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub core: u32,
    pub instance_id: u64,
    pub arena_offset: u64,
    pub arena_bytes: u64,
}

impl DataHeader {
    /// The header of a segment of `segment_bytes` (the instance file's data segment
    /// bytes): arena at [`ARENA_OFFSET`], to the end of the segment.
    pub fn new(core: u32, instance_id: u64, segment_bytes: u64) -> Self {
        DataHeader {
            core,
            instance_id,
            arena_offset: ARENA_OFFSET,
            arena_bytes: segment_bytes.saturating_sub(ARENA_OFFSET),
        }
    }

    /// Writes the header page into `out[..HEADER_BYTES]`: the static fields, global
    /// epoch [`EPOCH_FIRST`], core running. Panics if `out` is shorter than
    /// [`HEADER_BYTES`].
    pub fn write_to(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_BYTES];
        out.fill(0);
        write(out, MAGIC_OFFSET, &MAGIC);
        write(out, VERSION_OFFSET, &LAYOUT_VERSION.to_le_bytes());
        write(out, CORE_OFFSET, &self.core.to_le_bytes());
        write(out, INSTANCE_ID_OFFSET, &self.instance_id.to_le_bytes());
        write(out, ARENA_OFFSET_OFFSET, &self.arena_offset.to_le_bytes());
        write(out, ARENA_BYTES_OFFSET, &self.arena_bytes.to_le_bytes());
        write(out, GLOBAL_EPOCH_OFFSET, &EPOCH_FIRST.to_le_bytes());
        write(out, CORE_CPU_OFFSET, &CPU_UNKNOWN.to_le_bytes());
    }

    /// Reads and checks the static part: the arena must start at [`ARENA_OFFSET`]
    /// and fit in `segment_bytes` (the mapped size). Needs at least
    /// [`STATIC_END_OFFSET`] bytes.
    pub fn read(bytes: &[u8], segment_bytes: u64) -> Result<Self, HeaderError> {
        const REGION: &str = "data segment";
        check_common(bytes, REGION, STATIC_END_OFFSET, &MAGIC)?;
        let arena_offset = read_u64(bytes, ARENA_OFFSET_OFFSET);
        if arena_offset != ARENA_OFFSET {
            return Err(HeaderError::BadField {
                region: REGION,
                field: "arena offset",
                offset: ARENA_OFFSET_OFFSET,
                value: arena_offset,
            });
        }
        let arena_bytes = read_u64(bytes, ARENA_BYTES_OFFSET);
        if arena_bytes > segment_bytes.saturating_sub(ARENA_OFFSET) {
            return Err(HeaderError::BadField {
                region: REGION,
                field: "arena bytes",
                offset: ARENA_BYTES_OFFSET,
                value: arena_bytes,
            });
        }
        Ok(DataHeader {
            core: read_u32(bytes, CORE_OFFSET),
            instance_id: read_u64(bytes, INSTANCE_ID_OFFSET),
            arena_offset,
            arena_bytes,
        })
    }
}
