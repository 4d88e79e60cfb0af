//! One ring segment per (session, core): a 4096-byte header, the request ring at
//! [`REQUEST_RING_OFFSET`], the response ring right after it. Mapped read-write by the
//! client and by the core, so the core treats every byte as hostile: it keeps its own
//! copy of the sizes from attach time and never re-reads them from the segment.
//!
//! Bytes 0x000..0x040 are written by the server before the client maps the segment
//! and never change. Each live field after them sits on its own 64-byte line.

use super::{check_common, read_u32, read_u64, write, HeaderError, LAYOUT_VERSION};

/// Size of the header; the request ring starts here.
pub const HEADER_BYTES: usize = 0x1000;
/// Bytes 0..8.
pub const MAGIC: [u8; 8] = *b"VEDDBRNG";

pub const MAGIC_OFFSET: usize = 0x000;
/// u16, [`LAYOUT_VERSION`]; the u16 at 0x00A is reserved zero.
pub const VERSION_OFFSET: usize = 0x008;
/// u32, the core this segment talks to.
pub const CORE_OFFSET: usize = 0x00C;
/// u64, the session (one per attached client process).
pub const SESSION_ID_OFFSET: usize = 0x010;
/// u32, bytes of the request ring (a power of two).
pub const REQUEST_RING_BYTES_OFFSET: usize = 0x018;
/// u32, bytes of the response ring (a power of two).
pub const RESPONSE_RING_BYTES_OFFSET: usize = 0x01C;
/// u64, the instance id of the instance file.
pub const INSTANCE_ID_OFFSET: usize = 0x020;
/// Bytes 0x028..0x040 are reserved zero.
pub const STATIC_END_OFFSET: usize = 0x040;

// Bytes 0x040..0x080 and 0x0C0..0x100 are reserved zero (the rings' tails, before layout
// version 2: a consumer now learns what is published from the frame headers themselves).

/// u64, free-running request head (server writes; the client reads it only when the
/// request ring looks full).
pub const REQUEST_HEAD_OFFSET: usize = 0x080;
/// u64, free-running response head (client writes; the server reads it only when the
/// response ring looks full).
pub const RESPONSE_HEAD_OFFSET: usize = 0x100;
/// u32 futex word: the client stores [`CLIENT_SLEEPING`] before it sleeps; the core,
/// after publishing a response, swaps [`CLIENT_SLEEPING`] for [`CLIENT_AWAKE`] and wakes
/// it (the only word both sides write).
pub const CLIENT_WAIT_OFFSET: usize = 0x140;
/// u32, the CPU the client ran on when it last sent a request to this core, or
/// [`CPU_UNKNOWN`](super::data_segment::CPU_UNKNOWN) (client writes, when it changes). A core
/// that serves a client on its own CPU gives way while it waits for more work (yields the
/// CPU instead of spinning). Advisory: a wrong value costs speed, never correctness.
pub const CLIENT_CPU_OFFSET: usize = 0x144;
/// u64, the oldest epoch pin: the core's epoch as the client read it before the request of
/// its oldest live view (or request in flight) that may point into the arena;
/// [`EPOCH_PIN_NONE`] when it holds none (client writes). See `docs/shm-layout.md`, "View
/// leases and epoch pins".
pub const CLIENT_EPOCH_PIN_OFFSET: usize = 0x180;
/// u64, the client's last sign of life in milliseconds since the Unix epoch (client
/// writes).
pub const CLIENT_HEARTBEAT_OFFSET: usize = 0x188;
/// u64, the newest epoch pin: the same for its newest live view; [`EPOCH_PIN_NONE`] when
/// it holds none. The server reads a value below the oldest pin as the oldest pin (so a
/// client that writes only the oldest pin is served as one whose views all pinned it).
/// Shares the oldest pin's line (client writes).
pub const CLIENT_EPOCH_PIN_NEWEST_OFFSET: usize = 0x190;
/// u32, [`SERVER_ATTACHED`] or [`SERVER_DISCONNECTED`] (server writes).
pub const SERVER_STATUS_OFFSET: usize = 0x1C0;
/// u32, why the server disconnected the session: a [`reason`](super::reason) code
/// (server writes, before the status).
pub const DISCONNECT_REASON_OFFSET: usize = 0x1C4;
/// Bytes from here to [`HEADER_BYTES`] are reserved zero.
pub const RESERVED_TAIL_OFFSET: usize = 0x200;

/// The request ring's data.
pub const REQUEST_RING_OFFSET: usize = HEADER_BYTES;

/// Value of the client wait word while the client is not asleep.
pub const CLIENT_AWAKE: u32 = 0;
/// Value of the client wait word while the client sleeps (or is about to).
pub const CLIENT_SLEEPING: u32 = 1;
/// Client epoch pin meaning "no view held".
pub const EPOCH_PIN_NONE: u64 = 0;
/// Server status: the session is served.
pub const SERVER_ATTACHED: u32 = 0;
/// Server status: the server dropped the session (the reason word says why).
pub const SERVER_DISCONNECTED: u32 = 1;

/// Where the response ring starts.
pub const fn response_ring_offset(request_ring_bytes: u32) -> usize {
    REQUEST_RING_OFFSET + request_ring_bytes as usize
}

/// Size of a whole ring segment.
pub const fn segment_bytes(request_ring_bytes: u32, response_ring_bytes: u32) -> usize {
    response_ring_offset(request_ring_bytes) + response_ring_bytes as usize
}

/// The static part of a ring segment header (0x000..0x040).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingHeader {
    pub core: u32,
    pub session_id: u64,
    pub request_ring_bytes: u32,
    pub response_ring_bytes: u32,
    pub instance_id: u64,
}

impl RingHeader {
    /// Writes the whole header page into `out[..HEADER_BYTES]`: the static fields,
    /// every live field zero (indices 0, client awake, no pin, attached) but the client's
    /// CPU, unknown. Panics if `out` is shorter than [`HEADER_BYTES`].
    pub fn write_to(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_BYTES];
        out.fill(0);
        write(out, MAGIC_OFFSET, &MAGIC);
        write(out, VERSION_OFFSET, &LAYOUT_VERSION.to_le_bytes());
        write(out, CORE_OFFSET, &self.core.to_le_bytes());
        write(out, SESSION_ID_OFFSET, &self.session_id.to_le_bytes());
        write(
            out,
            REQUEST_RING_BYTES_OFFSET,
            &self.request_ring_bytes.to_le_bytes(),
        );
        write(
            out,
            RESPONSE_RING_BYTES_OFFSET,
            &self.response_ring_bytes.to_le_bytes(),
        );
        write(out, INSTANCE_ID_OFFSET, &self.instance_id.to_le_bytes());
        write(
            out,
            CLIENT_CPU_OFFSET,
            &super::data_segment::CPU_UNKNOWN.to_le_bytes(),
        );
    }

    /// Reads and checks the static part (for the client; the server never reads it
    /// back). Needs at least [`STATIC_END_OFFSET`] bytes.
    pub fn read(bytes: &[u8]) -> Result<Self, HeaderError> {
        const REGION: &str = "ring segment";
        check_common(bytes, REGION, STATIC_END_OFFSET, &MAGIC)?;
        let request_ring_bytes = read_u32(bytes, REQUEST_RING_BYTES_OFFSET);
        let response_ring_bytes = read_u32(bytes, RESPONSE_RING_BYTES_OFFSET);
        for (field, offset, value) in [
            (
                "request ring bytes",
                REQUEST_RING_BYTES_OFFSET,
                request_ring_bytes,
            ),
            (
                "response ring bytes",
                RESPONSE_RING_BYTES_OFFSET,
                response_ring_bytes,
            ),
        ] {
            if super::ring::check_ring_bytes(value).is_err() {
                return Err(HeaderError::BadField {
                    region: REGION,
                    field,
                    offset,
                    value: value.into(),
                });
            }
        }
        Ok(RingHeader {
            core: read_u32(bytes, CORE_OFFSET),
            session_id: read_u64(bytes, SESSION_ID_OFFSET),
            request_ring_bytes,
            response_ring_bytes,
            instance_id: read_u64(bytes, INSTANCE_ID_OFFSET),
        })
    }
}
