//! The instance file `/dev/shm/veddb-<name>`: one page, written by the server.
//! Bytes 64..4096 are reserved and zero.

use super::{check_common, read_u32, read_u64, write, HeaderError, LAYOUT_VERSION};

/// Start of every instance file path; the instance name follows.
pub const PATH_PREFIX: &str = "/dev/shm/veddb-";
/// Suffix of the attach socket (a Unix stream socket) after the instance file path.
pub const SOCKET_SUFFIX: &str = ".sock";
/// Longest instance name in bytes (the socket path must fit `sun_path`, 108 bytes).
pub const NAME_BYTES_MAX: usize = 64;
/// Size of the instance file.
pub const FILE_BYTES: usize = 4096;
/// Default mode of the instance file and the socket.
pub const FILE_MODE_DEFAULT: u32 = 0o600;
/// Bytes 0..8.
pub const MAGIC: [u8; 8] = *b"VEDDBINS";

pub const MAGIC_OFFSET: usize = 0x00;
/// u16, [`LAYOUT_VERSION`].
pub const VERSION_OFFSET: usize = 0x08;
/// u16, zero.
pub const RESERVED_0A_OFFSET: usize = 0x0A;
/// u32, the number of cores (shards).
pub const CORE_COUNT_OFFSET: usize = 0x0C;
/// u64, the server's process id.
pub const SERVER_PID_OFFSET: usize = 0x10;
/// u64, when the server started, in milliseconds since the Unix epoch.
pub const START_TIME_MS_OFFSET: usize = 0x18;
/// u64, random per server start; repeated in every ring and data segment header.
pub const INSTANCE_ID_OFFSET: usize = 0x20;
/// u32, an [`InstanceState`].
pub const STATE_OFFSET: usize = 0x28;
/// u32, zero.
pub const RESERVED_2C_OFFSET: usize = 0x2C;
/// u32, bytes of each request ring (a power of two).
pub const REQUEST_RING_BYTES_OFFSET: usize = 0x30;
/// u32, bytes of each response ring (a power of two).
pub const RESPONSE_RING_BYTES_OFFSET: usize = 0x34;
/// u64, bytes of each core's data segment, header included.
pub const DATA_SEGMENT_BYTES_OFFSET: usize = 0x38;
/// Bytes from here to [`FILE_BYTES`] are reserved and zero.
pub const RESERVED_TAIL_OFFSET: usize = 0x40;

/// The life cycle of an instance (the u32 at [`STATE_OFFSET`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum InstanceState {
    /// The file exists; the cores are not serving yet.
    Starting = 1,
    /// Clients may attach.
    Ready = 2,
    /// The server stopped cleanly; a new server may take the name over.
    Stopped = 3,
}

impl InstanceState {
    /// The state with this number, if any.
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(InstanceState::Starting),
            2 => Some(InstanceState::Ready),
            3 => Some(InstanceState::Stopped),
            _ => None,
        }
    }
}

/// The path of the instance file of `name`.
pub fn path(name: &str) -> String {
    format!("{PATH_PREFIX}{name}")
}

/// The path of the attach socket of `name`.
pub fn socket_path(name: &str) -> String {
    format!("{PATH_PREFIX}{name}{SOCKET_SUFFIX}")
}

/// Checks an instance name: 1 to [`NAME_BYTES_MAX`] bytes of ASCII letters, digits,
/// `_`, `-` and `.`, not starting with `.`. The error says what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!(
            "instance name of {} bytes: names are 1 to {NAME_BYTES_MAX} bytes",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("instance name {name:?} starts with '.'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "instance name {name:?} contains {c:?}: use letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// The fields of the instance file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceHeader {
    pub core_count: u32,
    pub server_pid: u64,
    pub start_time_ms: u64,
    pub instance_id: u64,
    pub state: InstanceState,
    pub request_ring_bytes: u32,
    pub response_ring_bytes: u32,
    pub data_segment_bytes: u64,
}

impl InstanceHeader {
    /// Writes the whole header (magic and version included) into `out[..FILE_BYTES]`,
    /// reserved bytes zeroed. Panics if `out` is shorter than [`FILE_BYTES`].
    pub fn write_to(&self, out: &mut [u8]) {
        let out = &mut out[..FILE_BYTES];
        out.fill(0);
        write(out, MAGIC_OFFSET, &MAGIC);
        write(out, VERSION_OFFSET, &LAYOUT_VERSION.to_le_bytes());
        write(out, CORE_COUNT_OFFSET, &self.core_count.to_le_bytes());
        write(out, SERVER_PID_OFFSET, &self.server_pid.to_le_bytes());
        write(out, START_TIME_MS_OFFSET, &self.start_time_ms.to_le_bytes());
        write(out, INSTANCE_ID_OFFSET, &self.instance_id.to_le_bytes());
        write(out, STATE_OFFSET, &(self.state as u32).to_le_bytes());
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
        write(
            out,
            DATA_SEGMENT_BYTES_OFFSET,
            &self.data_segment_bytes.to_le_bytes(),
        );
    }

    /// Reads and checks a header: magic, version, state, core count (1 to
    /// [`SHARDS_MAX`](crate::limits::SHARDS_MAX)), ring sizes
    /// ([`check_ring_bytes`](super::ring::check_ring_bytes)) and a data segment
    /// larger than its header. Needs at least [`RESERVED_TAIL_OFFSET`] bytes.
    pub fn read(bytes: &[u8]) -> Result<Self, HeaderError> {
        const REGION: &str = "instance file";
        check_common(bytes, REGION, RESERVED_TAIL_OFFSET, &MAGIC)?;
        let bad = |field, offset, value| HeaderError::BadField {
            region: REGION,
            field,
            offset,
            value,
        };
        let core_count = read_u32(bytes, CORE_COUNT_OFFSET);
        if core_count == 0 || core_count > crate::limits::SHARDS_MAX {
            return Err(bad("core count", CORE_COUNT_OFFSET, core_count.into()));
        }
        let state_raw = read_u32(bytes, STATE_OFFSET);
        let state = InstanceState::from_u32(state_raw)
            .ok_or_else(|| bad("state", STATE_OFFSET, state_raw.into()))?;
        let request_ring_bytes = read_u32(bytes, REQUEST_RING_BYTES_OFFSET);
        if super::ring::check_ring_bytes(request_ring_bytes).is_err() {
            return Err(bad(
                "request ring bytes",
                REQUEST_RING_BYTES_OFFSET,
                request_ring_bytes.into(),
            ));
        }
        let response_ring_bytes = read_u32(bytes, RESPONSE_RING_BYTES_OFFSET);
        if super::ring::check_ring_bytes(response_ring_bytes).is_err() {
            return Err(bad(
                "response ring bytes",
                RESPONSE_RING_BYTES_OFFSET,
                response_ring_bytes.into(),
            ));
        }
        let data_segment_bytes = read_u64(bytes, DATA_SEGMENT_BYTES_OFFSET);
        if data_segment_bytes <= super::data_segment::HEADER_BYTES as u64 {
            return Err(bad(
                "data segment bytes",
                DATA_SEGMENT_BYTES_OFFSET,
                data_segment_bytes,
            ));
        }
        Ok(InstanceHeader {
            core_count,
            server_pid: read_u64(bytes, SERVER_PID_OFFSET),
            start_time_ms: read_u64(bytes, START_TIME_MS_OFFSET),
            instance_id: read_u64(bytes, INSTANCE_ID_OFFSET),
            state,
            request_ring_bytes,
            response_ring_bytes,
            data_segment_bytes,
        })
    }
}
