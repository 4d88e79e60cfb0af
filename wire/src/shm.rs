//! The shared-memory path of local clients: the position-independent layout of every shared
//! region ([`layout`]) and the frame codec of the rings ([`codec`]).
//!
//! Everything here is shared by the server and the client library and is a pure function of
//! its arguments: integers are little-endian and fixed width, positions are byte offsets, and
//! nothing holds a pointer or a process-local handle. The code only encodes into and decodes
//! from byte slices; the mapping, the atomics and the futexes belong to the transport.
//!
//! `docs/shm-layout.md` describes the same layout byte by byte.

pub mod layout {
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
    pub const LAYOUT_VERSION: u16 = 1;
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

    pub mod instance {
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
    }

    pub mod ring_segment {
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

        /// u64, free-running request tail (client writes).
        pub const REQUEST_TAIL_OFFSET: usize = 0x040;
        /// u64, free-running request head (server writes).
        pub const REQUEST_HEAD_OFFSET: usize = 0x080;
        /// u64, free-running response tail (server writes).
        pub const RESPONSE_TAIL_OFFSET: usize = 0x0C0;
        /// u64, free-running response head (client writes).
        pub const RESPONSE_HEAD_OFFSET: usize = 0x100;
        /// u32 futex word: the client stores [`CLIENT_SLEEPING`] before it sleeps; the core,
        /// after publishing a response, swaps [`CLIENT_SLEEPING`] for [`CLIENT_AWAKE`] and wakes
        /// it (the only word both sides write).
        pub const CLIENT_WAIT_OFFSET: usize = 0x140;
        /// u64, the epoch the client reads in; [`EPOCH_PIN_NONE`] when it holds no view
        /// (client writes).
        pub const CLIENT_EPOCH_PIN_OFFSET: usize = 0x180;
        /// u64, the client's last sign of life in milliseconds since the Unix epoch (client
        /// writes).
        pub const CLIENT_HEARTBEAT_OFFSET: usize = 0x188;
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
            /// every live field zero (indices 0, client awake, no pin, attached). Panics if
            /// `out` is shorter than [`HEADER_BYTES`].
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
    }

    pub mod reason {
        //! Disconnect reason codes (the u32 at
        //! [`DISCONNECT_REASON_OFFSET`](super::ring_segment::DISCONNECT_REASON_OFFSET)).

        /// Not disconnected.
        pub const NONE: u32 = 0;
        /// A ring index written by the client was impossible (see
        /// [`validate_indices`](super::ring::validate_indices)).
        pub const BAD_INDICES: u32 = 1;
        /// A frame header or a request payload was malformed.
        pub const BAD_FRAME: u32 = 2;
        /// A frame longer than the ring's largest frame payload.
        pub const FRAME_TOO_LARGE: u32 = 3;
        /// No heartbeat for `--session-timeout`.
        pub const HEARTBEAT_TIMEOUT: u32 = 4;
        /// The server is stopping.
        pub const SERVER_STOPPING: u32 = 5;
        /// The client let too many responses pile up unread.
        pub const RESPONSE_BACKLOG: u32 = 6;

        /// A short description of a reason code, for logs and client errors.
        pub fn describe(code: u32) -> &'static str {
            match code {
                NONE => "not disconnected",
                BAD_INDICES => "bad ring indices",
                BAD_FRAME => "bad frame",
                FRAME_TOO_LARGE => "frame too large",
                HEARTBEAT_TIMEOUT => "heartbeat timeout",
                SERVER_STOPPING => "server stopping",
                RESPONSE_BACKLOG => "response backlog too large",
                _ => "unknown reason",
            }
        }
    }

    pub mod data_segment {
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
        /// Bytes from here to [`HEADER_BYTES`] are reserved zero.
        pub const RESERVED_TAIL_OFFSET: usize = 0x0C0;

        /// The arena's offset in the segment.
        pub const ARENA_OFFSET: u64 = HEADER_BYTES as u64;
        /// The first global epoch (0 is [`EPOCH_PIN_NONE`](super::ring_segment::EPOCH_PIN_NONE)).
        pub const EPOCH_FIRST: u64 = 1;
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
    }

    pub mod arena {
        //! Blocks of the arena of a data segment. Every block is a power of two of at least
        //! [`MIN_BLOCK_BYTES`], aligned to its size within the arena (offsets relative to the
        //! arena start), and starts with a 16-byte header followed by the value bytes.

        /// Block header: u64 generation, u32 value length, u32 size class.
        pub const BLOCK_HEADER_BYTES: usize = 16;
        /// u64, incremented every time the block is (re)allocated.
        pub const GENERATION_OFFSET: usize = 0;
        /// u32, bytes of the value.
        pub const VALUE_LEN_OFFSET: usize = 8;
        /// u32, the size class: log2 of the block's bytes.
        pub const SIZE_CLASS_OFFSET: usize = 12;
        /// Smallest block (a header and 16 value bytes).
        pub const MIN_BLOCK_BYTES: u64 = 32;
        /// Size class of the smallest block.
        pub const MIN_SIZE_CLASS: u32 = MIN_BLOCK_BYTES.trailing_zeros();
        /// Largest size class: a block holds a value of up to `u32::MAX` bytes.
        pub const MAX_SIZE_CLASS: u32 = 33;

        /// Bytes of a block of `size_class`, if the class is valid.
        pub const fn block_bytes(size_class: u32) -> Option<u64> {
            if size_class < MIN_SIZE_CLASS || size_class > MAX_SIZE_CLASS {
                None
            } else {
                Some(1u64 << size_class)
            }
        }

        /// The smallest size class that holds a value of `value_len` bytes.
        pub const fn size_class_for(value_len: u32) -> u32 {
            let needed = value_len as u64 + BLOCK_HEADER_BYTES as u64;
            let class = 64 - (needed - 1).leading_zeros();
            if class < MIN_SIZE_CLASS {
                MIN_SIZE_CLASS
            } else {
                class
            }
        }

        /// Where the value of the block at `block_offset` starts (both relative to the same
        /// origin: the arena or the segment).
        pub const fn value_offset(block_offset: u64) -> u64 {
            block_offset + BLOCK_HEADER_BYTES as u64
        }

        /// Checks a shared value reference against the block header read at
        /// `value_offset - 16` in the data segment (for the client, which must not trust the
        /// reference blindly either): the block lies in the arena, is aligned to its size
        /// class, holds the value, and the generation and length match the reference.
        ///
        /// `arena_offset`/`arena_bytes` come from the data segment header; `value_offset` is
        /// relative to the segment, as in a response.
        pub fn check_block(
            arena_offset: u64,
            arena_bytes: u64,
            value_offset: u64,
            value_len: u32,
            generation: u64,
            header: [u8; BLOCK_HEADER_BYTES],
        ) -> bool {
            let Some(block) = value_offset.checked_sub(BLOCK_HEADER_BYTES as u64) else {
                return false;
            };
            let Some(in_arena) = block.checked_sub(arena_offset) else {
                return false;
            };
            let word = |at: usize| {
                u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
            };
            let mut g = [0u8; 8];
            g.copy_from_slice(&header[GENERATION_OFFSET..GENERATION_OFFSET + 8]);
            let Some(size) = block_bytes(word(SIZE_CLASS_OFFSET)) else {
                return false;
            };
            u64::from_le_bytes(g) == generation
                && word(VALUE_LEN_OFFSET) == value_len
                && in_arena % size == 0
                && in_arena
                    .checked_add(size)
                    .is_some_and(|end| end <= arena_bytes)
                && BLOCK_HEADER_BYTES as u64 + u64::from(value_len) <= size
        }
    }

    pub mod ring {
        //! Byte rings of frames. A frame is an 8-byte header (u32 payload length, u32 flags =
        //! 0) and the payload, padded to a multiple of 8. A frame never wraps: when the
        //! contiguous space before the end is too small, the producer writes a header whose
        //! length is [`WRAP_MARKER`] and goes on at position 0. Head and tail are free-running
        //! u64 byte counters; a position is `counter & (size - 1)`.
        //!
        //! The producer publishes the tail after the frame bytes (release); the consumer
        //! publishes the head after it has copied the frame out (release).

        use std::fmt;

        /// Bytes of a frame header.
        pub const FRAME_HEADER_BYTES: usize = 8;
        /// Frames start at multiples of this; head and tail are always multiples of it.
        pub const FRAME_ALIGN: usize = 8;
        /// Header length meaning "the rest of the ring is padding; continue at 0".
        pub const WRAP_MARKER: u32 = 0xFFFF_FFFF;
        /// The only valid flags value.
        pub const FRAME_FLAGS: u32 = 0;
        /// Smallest ring.
        pub const MIN_RING_BYTES: u32 = 4096;
        /// Largest ring.
        pub const MAX_RING_BYTES: u32 = 1 << 30;
        /// Largest frame payload of the largest ring.
        pub const MAX_FRAME_PAYLOAD: u32 = max_frame_payload(MAX_RING_BYTES);

        /// Largest frame payload in a ring of `ring_bytes`: half the ring less a header, so
        /// that a frame always fits after a wrap marker.
        pub const fn max_frame_payload(ring_bytes: u32) -> u32 {
            (ring_bytes / 2).saturating_sub(FRAME_HEADER_BYTES as u32)
        }

        /// Ring bytes a frame of `payload_len` takes: header plus payload padded to 8.
        pub const fn frame_space(payload_len: usize) -> usize {
            // Saturates at the largest multiple of 8 (never a real frame).
            ((payload_len.saturating_add(FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1))
                .saturating_add(FRAME_HEADER_BYTES))
                & !(FRAME_ALIGN - 1)
        }

        /// The smallest valid ring whose largest frame payload is at least `payload_len`.
        pub const fn ring_bytes_for_payload(payload_len: usize) -> Option<u32> {
            let needed = frame_space(payload_len).saturating_mul(2);
            if needed > MAX_RING_BYTES as usize {
                return None;
            }
            let bytes = needed.next_power_of_two();
            Some(if bytes < MIN_RING_BYTES as usize {
                MIN_RING_BYTES
            } else {
                bytes as u32
            })
        }

        /// The 8 header bytes of a frame of `payload_len` (or of a wrap marker).
        pub const fn frame_header(payload_len: u32) -> [u8; FRAME_HEADER_BYTES] {
            let l = payload_len.to_le_bytes();
            let f = FRAME_FLAGS.to_le_bytes();
            [l[0], l[1], l[2], l[3], f[0], f[1], f[2], f[3]]
        }

        /// Largest counter value either end accepts: far beyond any ring's traffic (2^63
        /// bytes), and far enough from `u64::MAX` that no sum the ends compute
        /// (`tail + frame`, `head + skipped + frame`) can overflow.
        pub const COUNTER_MAX: u64 = 1 << 63;

        /// Why a ring is inconsistent (or a frame cannot be written). The one error of the
        /// ring protocol, for the pure checks here and the ring that moves the bytes
        /// (`veddb_shm::ByteRing`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum RingError {
            /// The ring size is not a power of two in
            /// [`MIN_RING_BYTES`]..=[`MAX_RING_BYTES`].
            BadSize { size: u64 },
            /// The ring's counters or data do not fit where the ring is placed (a local
            /// mistake, not a peer's).
            BadPlacement { why: &'static str },
            /// A head or tail that is not a multiple of [`FRAME_ALIGN`].
            Misaligned { index: &'static str, value: u64 },
            /// The head is past the tail.
            HeadPastTail { head: u64, tail: u64 },
            /// More bytes in use than the ring holds.
            Overfull { used: u64, size: u64 },
            /// A counter over [`COUNTER_MAX`].
            CounterTooLarge { index: &'static str, value: u64 },
            /// The peer's counter moved backwards.
            WentBack {
                index: &'static str,
                previous: u64,
                now: u64,
            },
            /// A frame header with non-zero flags.
            BadFlags { position: u64, flags: u32 },
            /// A frame or wrap marker that runs past the tail or the end of the ring, or a
            /// wrap marker at position 0.
            BadFrame {
                position: u64,
                length: u32,
                why: &'static str,
            },
            /// A frame payload longer than [`max_frame_payload`].
            FrameTooLarge { length: u64, max: u32 },
        }

        impl RingError {
            /// The disconnect [`reason`](super::reason) code of this error.
            pub fn reason(&self) -> u32 {
                match self {
                    RingError::BadSize { .. }
                    | RingError::BadPlacement { .. }
                    | RingError::Misaligned { .. }
                    | RingError::HeadPastTail { .. }
                    | RingError::Overfull { .. }
                    | RingError::CounterTooLarge { .. }
                    | RingError::WentBack { .. } => super::reason::BAD_INDICES,
                    RingError::BadFlags { .. } | RingError::BadFrame { .. } => {
                        super::reason::BAD_FRAME
                    }
                    RingError::FrameTooLarge { .. } => super::reason::FRAME_TOO_LARGE,
                }
            }
        }

        impl fmt::Display for RingError {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    RingError::BadSize { size } => write!(
                        f,
                        "ring of {size} bytes: sizes are powers of two from {MIN_RING_BYTES} to {MAX_RING_BYTES}"
                    ),
                    RingError::BadPlacement { why } => write!(f, "bad ring placement: {why}"),
                    RingError::Misaligned { index, value } => write!(
                        f,
                        "ring {index} {value} is not a multiple of {FRAME_ALIGN}"
                    ),
                    RingError::CounterTooLarge { index, value } => write!(
                        f,
                        "ring {index} {value} is over the largest counter ({COUNTER_MAX})"
                    ),
                    RingError::WentBack {
                        index,
                        previous,
                        now,
                    } => write!(f, "ring {index} went back from {previous} to {now}"),
                    RingError::HeadPastTail { head, tail } => {
                        write!(f, "ring head {head} is past the tail {tail}")
                    }
                    RingError::Overfull { used, size } => write!(
                        f,
                        "ring holds {used} bytes between head and tail, more than its {size} bytes"
                    ),
                    RingError::BadFlags { position, flags } => write!(
                        f,
                        "frame at ring position {position} has flags {flags:#x}, not 0"
                    ),
                    RingError::BadFrame {
                        position,
                        length,
                        why,
                    } => write!(
                        f,
                        "frame at ring position {position} (length word {length:#x}): {why}"
                    ),
                    RingError::FrameTooLarge { length, max } => write!(
                        f,
                        "frame payload of {length} bytes is over this ring's maximum of {max}"
                    ),
                }
            }
        }

        impl std::error::Error for RingError {}

        /// Checks a ring size: a power of two from [`MIN_RING_BYTES`] to [`MAX_RING_BYTES`].
        pub fn check_ring_bytes(size: u32) -> Result<(), RingError> {
            if size.is_power_of_two() && (MIN_RING_BYTES..=MAX_RING_BYTES).contains(&size) {
                Ok(())
            } else {
                Err(RingError::BadSize { size: size.into() })
            }
        }

        /// Checks a (head, tail) pair read from shared memory, either of which the other side
        /// may have written: the size is valid, both are multiples of [`FRAME_ALIGN`], the
        /// head is not past the tail, and at most `size` bytes lie between them.
        pub fn validate_indices(head: u64, tail: u64, size: u32) -> Result<(), RingError> {
            check_ring_bytes(size)?;
            let align = FRAME_ALIGN as u64;
            if !head.is_multiple_of(align) {
                return Err(RingError::Misaligned {
                    index: "head",
                    value: head,
                });
            }
            if !tail.is_multiple_of(align) {
                return Err(RingError::Misaligned {
                    index: "tail",
                    value: tail,
                });
            }
            if head > tail {
                return Err(RingError::HeadPastTail { head, tail });
            }
            if tail > COUNTER_MAX {
                return Err(RingError::CounterTooLarge {
                    index: "tail",
                    value: tail,
                });
            }
            let used = tail - head;
            if used > u64::from(size) {
                return Err(RingError::Overfull {
                    used,
                    size: size.into(),
                });
            }
            Ok(())
        }

        /// Checks that a peer's counter (`index`: "head" or "tail"), loaded again from shared
        /// memory, has not moved back from the value last accepted.
        pub fn check_advance(
            index: &'static str,
            previous: u64,
            now: u64,
        ) -> Result<(), RingError> {
            if now < previous {
                return Err(RingError::WentBack {
                    index,
                    previous,
                    now,
                });
            }
            Ok(())
        }

        /// What the consumer finds at its head.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum FrameStep {
            /// A wrap marker: set the head to `next_head` (the start of the ring) and look again.
            Wrap { next_head: u64 },
            /// A frame whose payload is `payload_len` bytes at ring position `payload_pos`;
            /// after copying it out, set the head to `next_head`.
            Frame {
                payload_pos: usize,
                payload_len: usize,
                next_head: u64,
            },
        }

        /// Checks the frame header the consumer read at position `head & (size - 1)`, with
        /// `head != tail` (at least one header is published). Everything is re-checked: the
        /// indices, the flags, that a frame is not larger than [`max_frame_payload`], does not
        /// run past the end of the ring nor past the tail, and that a wrap marker is not at
        /// position 0, leaves less than half the ring to the end and does not run past the
        /// tail. [`RingError::reason`] gives the
        /// disconnect code.
        pub fn check_frame(
            head: u64,
            tail: u64,
            size: u32,
            header: [u8; FRAME_HEADER_BYTES],
        ) -> Result<FrameStep, RingError> {
            validate_indices(head, tail, size)?;
            let available = tail - head;
            let position = head & (u64::from(size) - 1);
            let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let flags = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let bad = |why| RingError::BadFrame {
                position,
                length,
                why,
            };
            if available < FRAME_HEADER_BYTES as u64 {
                return Err(bad("the ring is empty (head == tail)"));
            }
            if flags != FRAME_FLAGS {
                return Err(RingError::BadFlags { position, flags });
            }
            let contiguous = u64::from(size) - position;
            if length == WRAP_MARKER {
                // A producer wraps only when a frame (at most half the ring) does not fit in
                // the contiguous rest: never at position 0, never with half the ring or more
                // left to the end.
                if position == 0 {
                    return Err(bad("wrap marker at position 0"));
                }
                if contiguous >= u64::from(size) / 2 {
                    return Err(bad(
                        "wrap marker with half the ring or more left to the end",
                    ));
                }
                if contiguous > available {
                    return Err(bad("wrap marker runs past the tail"));
                }
                return Ok(FrameStep::Wrap {
                    next_head: head + contiguous,
                });
            }
            let max = max_frame_payload(size);
            if length > max {
                return Err(RingError::FrameTooLarge {
                    length: length.into(),
                    max,
                });
            }
            let space = frame_space(length as usize) as u64;
            if space > contiguous {
                return Err(bad("frame runs past the end of the ring"));
            }
            if space > available {
                return Err(bad("frame runs past the tail"));
            }
            Ok(FrameStep::Frame {
                payload_pos: position as usize + FRAME_HEADER_BYTES,
                payload_len: length as usize,
                next_head: head + space,
            })
        }

        /// Where the producer writes a frame.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct WritePlan {
            /// Write a [`WRAP_MARKER`] header here first (the contiguous space was too small).
            pub wrap_at: Option<usize>,
            /// Write the frame header here; the payload follows it.
            pub frame_pos: usize,
            /// Publish this tail once the bytes are written.
            pub new_tail: u64,
        }

        /// Plans a frame of `payload_len` for a producer whose tail is `tail`, with the
        /// consumer's head `head` (read from shared memory, so validated here). `Ok(None)`:
        /// not enough free space now, retry once the consumer moves. Errors: bad indices, or
        /// a payload over [`max_frame_payload`] (that can never be written).
        pub fn plan_write(
            head: u64,
            tail: u64,
            size: u32,
            payload_len: usize,
        ) -> Result<Option<WritePlan>, RingError> {
            validate_indices(head, tail, size)?;
            let max = max_frame_payload(size);
            if payload_len > max as usize {
                return Err(RingError::FrameTooLarge {
                    length: payload_len as u64,
                    max,
                });
            }
            let space = frame_space(payload_len) as u64;
            let free = u64::from(size) - (tail - head);
            let position = tail & (u64::from(size) - 1);
            let contiguous = u64::from(size) - position;
            let (wrap_at, frame_pos, needed) = if space <= contiguous {
                (None, position, space)
            } else {
                (Some(position as usize), 0, contiguous + space)
            };
            if needed > free {
                return Ok(None);
            }
            Ok(Some(WritePlan {
                wrap_at,
                frame_pos: frame_pos as usize,
                new_tail: tail + needed,
            }))
        }
    }

    pub mod attach {
        //! The attach handshake on the instance's Unix socket: the client sends [`HELLO`]; the
        //! server answers with one [`AttachReply`] message of [`REPLY_BYTES`] carrying, as
        //! `SCM_RIGHTS`, the core count's data segments (read-only), then as many ring segments
        //! (read-write, this session's), then as many eventfds (to wake a parked core), in core
        //! order. Or, refusing, a reply whose magic is [`REFUSED_MAGIC`] followed by a UTF-8
        //! reason (no descriptors). The socket stays open for the session's life: its closing
        //! tells the server the client is gone.

        use super::{read_u32, read_u64, write, HeaderError, LAYOUT_VERSION};

        /// What a client sends first.
        pub const HELLO: &[u8; 16] = b"VEDDB-ATTACH v1\n";
        pub const MAGIC: [u8; 8] = *b"VEDDBATT";
        pub const REFUSED_MAGIC: [u8; 8] = *b"VEDDBNO!";
        /// 0 magic, 8 u16 version, 10 u16 reserved, 12 u32 core count, 16 u64 session id,
        /// 24 u64 instance id, 32 u32 request ring bytes, 36 u32 response ring bytes,
        /// 40 u64 data segment bytes, 48 u64 lease of a value view in milliseconds.
        pub const REPLY_BYTES: usize = 56;

        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct AttachReply {
            pub core_count: u32,
            pub session_id: u64,
            pub instance_id: u64,
            pub request_ring_bytes: u32,
            pub response_ring_bytes: u32,
            pub data_segment_bytes: u64,
            pub view_lease_ms: u64,
        }

        impl AttachReply {
            pub fn encode(&self) -> [u8; REPLY_BYTES] {
                let mut out = [0u8; REPLY_BYTES];
                write(&mut out, 0, &MAGIC);
                write(&mut out, 8, &LAYOUT_VERSION.to_le_bytes());
                write(&mut out, 12, &self.core_count.to_le_bytes());
                write(&mut out, 16, &self.session_id.to_le_bytes());
                write(&mut out, 24, &self.instance_id.to_le_bytes());
                write(&mut out, 32, &self.request_ring_bytes.to_le_bytes());
                write(&mut out, 36, &self.response_ring_bytes.to_le_bytes());
                write(&mut out, 40, &self.data_segment_bytes.to_le_bytes());
                write(&mut out, 48, &self.view_lease_ms.to_le_bytes());
                out
            }

            /// Reads a reply; `Err(Ok(reason))` when the server refused the attach.
            pub fn decode(bytes: &[u8]) -> Result<AttachReply, Result<String, HeaderError>> {
                if bytes.len() >= 8 && bytes[..8] == REFUSED_MAGIC {
                    return Err(Ok(String::from_utf8_lossy(&bytes[8..]).into_owned()));
                }
                if bytes.len() < REPLY_BYTES {
                    return Err(Err(HeaderError::Truncated {
                        region: "attach reply",
                        length: bytes.len(),
                        needed: REPLY_BYTES,
                    }));
                }
                if bytes[..8] != MAGIC {
                    let mut found = [0u8; 8];
                    found.copy_from_slice(&bytes[..8]);
                    return Err(Err(HeaderError::BadMagic {
                        region: "attach reply",
                        found,
                    }));
                }
                let version = u16::from_le_bytes([bytes[8], bytes[9]]);
                if version != LAYOUT_VERSION {
                    return Err(Err(HeaderError::BadVersion {
                        region: "attach reply",
                        found: version,
                    }));
                }
                Ok(AttachReply {
                    core_count: read_u32(bytes, 12),
                    session_id: read_u64(bytes, 16),
                    instance_id: read_u64(bytes, 24),
                    request_ring_bytes: read_u32(bytes, 32),
                    response_ring_bytes: read_u32(bytes, 36),
                    data_segment_bytes: read_u64(bytes, 40),
                    view_lease_ms: read_u64(bytes, 48),
                })
            }
        }
    }
}

const _: () = {
    use layout::*;
    assert!(instance::RESERVED_TAIL_OFFSET <= instance::FILE_BYTES);
    assert!(ring_segment::STATIC_END_OFFSET <= ring_segment::REQUEST_TAIL_OFFSET);
    assert!(ring_segment::DISCONNECT_REASON_OFFSET + 4 <= ring_segment::RESERVED_TAIL_OFFSET);
    assert!(ring_segment::RESERVED_TAIL_OFFSET <= ring_segment::HEADER_BYTES);
    assert!(ring_segment::HEADER_BYTES.is_multiple_of(PAGE_BYTES));
    assert!(data_segment::CORE_PARKED_OFFSET + 4 <= data_segment::RESERVED_TAIL_OFFSET);
    assert!(data_segment::RESERVED_TAIL_OFFSET <= data_segment::HEADER_BYTES);
    assert!(data_segment::HEADER_BYTES.is_multiple_of(PAGE_BYTES));
    assert!(ring::MIN_RING_BYTES.is_power_of_two() && ring::MAX_RING_BYTES.is_power_of_two());
    assert!(ring::MIN_RING_BYTES as usize >= PAGE_BYTES);
    assert!(ring::MAX_FRAME_PAYLOAD < ring::WRAP_MARKER);
    assert!(arena::MIN_BLOCK_BYTES.is_power_of_two());
    assert!(arena::MIN_BLOCK_BYTES as usize > arena::BLOCK_HEADER_BYTES);
    assert!(arena::block_bytes(arena::MAX_SIZE_CLASS).is_some());
};

pub mod codec {
    //! The payloads of ring frames.
    //!
    //! A request payload is `u32 request id, u8 opcode` and the fields of the
    //! [`Request`] variant; a response payload is `u32 request id, u8 kind` and the fields of
    //! the [`Response`] variant. Byte strings are `u32 length` then the bytes; counts are u32;
    //! integers are little-endian; there is no padding. The encoding is canonical: every
    //! payload that decodes re-encodes to the same bytes (booleans are 0 or 1, reserved bits
    //! and absent optional fields are zero, and nothing may follow the last field).
    //!
    //! Values of [`Response::Value`] and [`Response::Values`] travel either inline or as a
    //! reference into a core's data segment ([`ValueRef`]).

    use crate::limits;
    use crate::{
        Error, Info, Request, Response, SetCondition, SetOptions, ShardStats, SubscriberId, Ttl,
    };
    use bytes::Bytes;
    use std::fmt;

    /// Request opcodes (the byte after the request id).
    pub mod opcode {
        pub const PING: u8 = 1;
        pub const GET: u8 = 2;
        pub const SET: u8 = 3;
        pub const DELETE: u8 = 4;
        pub const EXISTS: u8 = 5;
        pub const CAS: u8 = 6;
        pub const INCR: u8 = 7;
        pub const EXPIRE: u8 = 8;
        pub const TTL: u8 = 9;
        pub const PERSIST: u8 = 10;
        pub const MGET: u8 = 11;
        pub const MSET: u8 = 12;
        pub const SCAN: u8 = 13;
        pub const SUBSCRIBE: u8 = 14;
        pub const UNSUBSCRIBE: u8 = 15;
        pub const PUBLISH: u8 = 16;
        pub const FETCH: u8 = 17;
        pub const INFO: u8 = 18;
        pub const SNAPSHOT: u8 = 19;
    }

    /// Response kinds (the byte after the request id).
    pub mod kind {
        pub const PONG: u8 = 1;
        pub const VALUE: u8 = 2;
        pub const NOT_FOUND: u8 = 3;
        pub const STORED: u8 = 4;
        pub const NOT_STORED: u8 = 5;
        pub const VERSION_MISMATCH: u8 = 6;
        pub const INTEGER: u8 = 7;
        pub const BOOL: u8 = 8;
        pub const TTL: u8 = 9;
        pub const VALUES: u8 = 10;
        pub const OK: u8 = 11;
        pub const KEYS: u8 = 12;
        pub const SUBSCRIBED: u8 = 13;
        pub const PUBLISHED: u8 = 14;
        pub const MESSAGES: u8 = 15;
        pub const INFO: u8 = 16;
        pub const ERROR: u8 = 17;
    }

    /// [`Error`] variant tags (the byte after [`kind::ERROR`]).
    pub mod error_tag {
        pub const OUT_OF_MEMORY: u8 = 1;
        pub const KEY_TOO_LARGE: u8 = 2;
        pub const VALUE_TOO_LARGE: u8 = 3;
        pub const NOT_AN_INTEGER: u8 = 4;
        pub const OVERFLOW: u8 = 5;
        pub const INVALID_ARGUMENT: u8 = 6;
        pub const UNKNOWN_SUBSCRIBER: u8 = 7;
        pub const TOO_MANY_SUBSCRIBERS: u8 = 8;
        pub const SHUTTING_DOWN: u8 = 9;
        pub const PERSISTENCE_OFF: u8 = 10;
        pub const STORAGE: u8 = 11;
        pub const BUSY: u8 = 12;
    }

    /// Forms of a value slot (the byte before a value in VALUE and VALUES).
    pub mod value_form {
        /// No value (a missing key in VALUES; invalid in VALUE).
        pub const MISSING: u8 = 0;
        /// u64 version, u32 length, the bytes.
        pub const INLINE: u8 = 1;
        /// u64 version, u32 core, u64 offset, u32 length, u64 generation.
        pub const SHARED: u8 = 2;
    }

    /// [`SetCondition`] bytes.
    pub mod condition {
        pub const ALWAYS: u8 = 0;
        pub const IF_ABSENT: u8 = 1;
        pub const IF_PRESENT: u8 = 2;
    }

    /// [`Ttl`] tags.
    pub mod ttl_tag {
        pub const MISSING: u8 = 0;
        pub const PERSISTENT: u8 = 1;
        pub const REMAINING: u8 = 2;
    }

    /// SET and CAS flags bit: a TTL is given (the u64 TTL field is zero otherwise).
    pub const FLAG_TTL: u8 = 0x01;
    /// SET flags bit: KEEPTTL.
    pub const FLAG_KEEP_TTL: u8 = 0x02;

    /// Bytes before the fields of every payload: request id and opcode (or kind).
    pub const PAYLOAD_HEADER_BYTES: usize = 5;
    /// Bytes of one [`ShardStats`] record in an INFO response.
    pub const SHARD_STATS_BYTES: usize = 4 + 15 * 8;
    /// Bytes of a shared value slot after its form byte.
    pub const SHARED_VALUE_BYTES: usize = 8 + 4 + 8 + 4 + 8;

    // -----------------------------------------------------------------------------------------
    // Errors

    /// Why a payload could not be decoded.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct DecodeError {
        /// Byte offset in the payload where the problem starts.
        pub offset: usize,
        /// The request id, when the payload was long enough to hold one (the server may
        /// answer a [`DecodeErrorKind::TooMany`] with an error to it instead of disconnecting).
        pub request_id: Option<u32>,
        pub kind: DecodeErrorKind,
    }

    /// What was wrong.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum DecodeErrorKind {
        /// The payload ends inside a fixed-width field.
        Truncated {
            what: &'static str,
            needed: usize,
            available: usize,
        },
        /// A byte-string length runs past the end of the payload.
        LengthPastEnd {
            what: &'static str,
            length: u64,
            remaining: usize,
        },
        /// A count whose items cannot fit in the rest of the payload.
        CountPastEnd {
            what: &'static str,
            count: u64,
            min_bytes: u64,
            remaining: usize,
        },
        /// A count over its protocol limit.
        TooMany {
            what: &'static str,
            count: u64,
            limit: u64,
        },
        UnknownOpcode(u8),
        UnknownKind(u8),
        UnknownErrorTag(u8),
        /// A tag, flag or boolean byte with a value the format does not allow.
        BadByte {
            what: &'static str,
            value: u8,
        },
        /// A field that must be zero is not.
        NonZero {
            what: &'static str,
            value: u64,
        },
        /// A string that is not UTF-8.
        InvalidUtf8 {
            what: &'static str,
        },
        /// A number too large for this platform's `usize`.
        Unrepresentable {
            what: &'static str,
            value: u64,
        },
        /// Bytes after the last field.
        TrailingBytes {
            count: usize,
        },
    }

    impl fmt::Display for DecodeErrorKind {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                DecodeErrorKind::Truncated {
                    what,
                    needed,
                    available,
                } => write!(
                    f,
                    "payload ends inside {what}: {needed} bytes needed, {available} left"
                ),
                DecodeErrorKind::LengthPastEnd {
                    what,
                    length,
                    remaining,
                } => write!(
                    f,
                    "{what} of {length} bytes runs past the end of the payload ({remaining} bytes left)"
                ),
                DecodeErrorKind::CountPastEnd {
                    what,
                    count,
                    min_bytes,
                    remaining,
                } => write!(
                    f,
                    "{count} {what} need at least {min_bytes} bytes, only {remaining} left in the payload"
                ),
                DecodeErrorKind::TooMany { what, count, limit } => {
                    write!(f, "{count} {what}: the maximum is {limit}")
                }
                DecodeErrorKind::UnknownOpcode(op) => write!(f, "unknown request opcode {op}"),
                DecodeErrorKind::UnknownKind(k) => write!(f, "unknown response kind {k}"),
                DecodeErrorKind::UnknownErrorTag(t) => write!(f, "unknown error tag {t}"),
                DecodeErrorKind::BadByte { what, value } => {
                    write!(f, "invalid {what} byte {value:#04x}")
                }
                DecodeErrorKind::NonZero { what, value } => {
                    write!(f, "{what} must be zero, found {value}")
                }
                DecodeErrorKind::InvalidUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
                DecodeErrorKind::Unrepresentable { what, value } => {
                    write!(f, "{what} {value} does not fit this platform's usize")
                }
                DecodeErrorKind::TrailingBytes { count } => {
                    write!(f, "{count} unexpected bytes after the last field")
                }
            }
        }
    }

    impl fmt::Display for DecodeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "bad shm payload at byte {}: {}", self.offset, self.kind)?;
            if let Some(id) = self.request_id {
                write!(f, " (request id {id})")?;
            }
            Ok(())
        }
    }

    impl std::error::Error for DecodeError {}

    // -----------------------------------------------------------------------------------------
    // Writer and reader

    /// Writes into a slice; panics when it is too short (the documented contract of the
    /// `encode_*` functions).
    struct Writer<'a> {
        out: &'a mut [u8],
        pos: usize,
    }

    impl Writer<'_> {
        fn put(&mut self, bytes: &[u8]) {
            let end = self.pos + bytes.len();
            assert!(
                end <= self.out.len(),
                "shm codec: output buffer of {} bytes is too short (encode into at least the *_len bytes)",
                self.out.len()
            );
            self.out[self.pos..end].copy_from_slice(bytes);
            self.pos = end;
        }
        fn u8(&mut self, v: u8) {
            self.put(&[v]);
        }
        fn u32(&mut self, v: u32) {
            self.put(&v.to_le_bytes());
        }
        fn u64(&mut self, v: u64) {
            self.put(&v.to_le_bytes());
        }
        fn i64(&mut self, v: i64) {
            self.put(&v.to_le_bytes());
        }
        fn len32(&mut self, len: usize) {
            let len = u32::try_from(len)
                .unwrap_or_else(|_| panic!("shm codec: length {len} does not fit in a u32"));
            self.u32(len);
        }
        fn bytes(&mut self, b: &[u8]) {
            self.len32(b.len());
            self.put(b);
        }
    }

    /// Reads from a payload; every read is bounds-checked and reports its offset.
    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
        /// When decoding from a `Bytes`, byte strings are slices of it instead of copies.
        owner: Option<&'a Bytes>,
        request_id: Option<u32>,
    }

    type Result<T> = std::result::Result<T, DecodeError>;

    impl<'a> Reader<'a> {
        fn new(buf: &'a [u8], owner: Option<&'a Bytes>) -> Self {
            Reader {
                buf,
                pos: 0,
                owner,
                request_id: None,
            }
        }
        fn remaining(&self) -> usize {
            self.buf.len() - self.pos
        }
        fn error(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
            DecodeError {
                offset,
                request_id: self.request_id,
                kind,
            }
        }
        fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
            if n > self.remaining() {
                return Err(self.error(
                    self.pos,
                    DecodeErrorKind::Truncated {
                        what,
                        needed: n,
                        available: self.remaining(),
                    },
                ));
            }
            let s = &self.buf[self.pos..self.pos + n];
            self.pos += n;
            Ok(s)
        }
        fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
            let mut a = [0u8; N];
            a.copy_from_slice(self.take(N, what)?);
            Ok(a)
        }
        fn u8(&mut self, what: &'static str) -> Result<u8> {
            Ok(self.array::<1>(what)?[0])
        }
        fn u32(&mut self, what: &'static str) -> Result<u32> {
            Ok(u32::from_le_bytes(self.array(what)?))
        }
        fn u64(&mut self, what: &'static str) -> Result<u64> {
            Ok(u64::from_le_bytes(self.array(what)?))
        }
        fn i64(&mut self, what: &'static str) -> Result<i64> {
            Ok(i64::from_le_bytes(self.array(what)?))
        }
        fn bool(&mut self, what: &'static str) -> Result<bool> {
            let at = self.pos;
            match self.u8(what)? {
                0 => Ok(false),
                1 => Ok(true),
                value => Err(self.error(at, DecodeErrorKind::BadByte { what, value })),
            }
        }
        fn usize(&mut self, what: &'static str) -> Result<usize> {
            let at = self.pos;
            let value = self.u64(what)?;
            usize::try_from(value)
                .map_err(|_| self.error(at, DecodeErrorKind::Unrepresentable { what, value }))
        }
        /// A u64 field that must be zero.
        fn zero_u64(&mut self, what: &'static str) -> Result<()> {
            let at = self.pos;
            match self.u64(what)? {
                0 => Ok(()),
                value => Err(self.error(at, DecodeErrorKind::NonZero { what, value })),
            }
        }
        /// A u32 length and that many bytes, borrowed.
        fn slice(&mut self, what: &'static str) -> Result<(usize, &'a [u8])> {
            let at = self.pos;
            let length = self.u32(what)?;
            if length as usize > self.remaining() {
                return Err(self.error(
                    at,
                    DecodeErrorKind::LengthPastEnd {
                        what,
                        length: length.into(),
                        remaining: self.remaining(),
                    },
                ));
            }
            let start = self.pos;
            Ok((start, self.take(length as usize, what)?))
        }
        /// A u32 length and that many bytes, as `Bytes` (a slice of the owner, or a copy).
        fn bytes(&mut self, what: &'static str) -> Result<Bytes> {
            let (start, s) = self.slice(what)?;
            Ok(match self.owner {
                Some(owner) => owner.slice(start..start + s.len()),
                None => Bytes::copy_from_slice(s),
            })
        }
        fn string(&mut self, what: &'static str) -> Result<String> {
            let (start, s) = self.slice(what)?;
            match std::str::from_utf8(s) {
                Ok(text) => Ok(text.to_owned()),
                Err(_) => Err(self.error(start, DecodeErrorKind::InvalidUtf8 { what })),
            }
        }
        /// A u32 count of items of at least `min_item_bytes` each, checked against `limit`
        /// and against the bytes left, so that a capacity of `count` is safe to reserve.
        fn count(
            &mut self,
            what: &'static str,
            min_item_bytes: usize,
            limit: Option<usize>,
        ) -> Result<usize> {
            let at = self.pos;
            let count = self.u32(what)? as usize;
            if let Some(limit) = limit {
                if count > limit {
                    return Err(self.error(
                        at,
                        DecodeErrorKind::TooMany {
                            what,
                            count: count as u64,
                            limit: limit as u64,
                        },
                    ));
                }
            }
            let min_bytes = (count as u64).saturating_mul(min_item_bytes as u64);
            if min_bytes > self.remaining() as u64 {
                return Err(self.error(
                    at,
                    DecodeErrorKind::CountPastEnd {
                        what,
                        count: count as u64,
                        min_bytes,
                        remaining: self.remaining(),
                    },
                ));
            }
            Ok(count)
        }
        fn finish(&self) -> Result<()> {
            if self.remaining() != 0 {
                return Err(self.error(
                    self.pos,
                    DecodeErrorKind::TrailingBytes {
                        count: self.remaining(),
                    },
                ));
            }
            Ok(())
        }
    }

    /// Bytes of a length-prefixed byte string.
    const fn lp(len: usize) -> usize {
        4 + len
    }

    // -----------------------------------------------------------------------------------------
    // Requests

    /// Bytes [`encode_request`] writes for `request`.
    pub fn request_len(request: &Request) -> usize {
        PAYLOAD_HEADER_BYTES
            + match request {
                Request::Ping | Request::Info | Request::Snapshot => 0,
                Request::Get { key }
                | Request::Delete { key }
                | Request::Exists { key }
                | Request::Ttl { key }
                | Request::Persist { key } => lp(key.len()),
                Request::Set { key, value, .. } => 1 + 1 + 8 + lp(key.len()) + lp(value.len()),
                Request::Cas { key, value, .. } => 8 + 1 + 8 + lp(key.len()) + lp(value.len()),
                Request::Incr { key, .. } | Request::Expire { key, .. } => 8 + lp(key.len()),
                Request::MGet { keys } => 4 + keys.iter().map(|k| lp(k.len())).sum::<usize>(),
                Request::MSet { pairs } => {
                    4 + pairs
                        .iter()
                        .map(|(k, v)| lp(k.len()) + lp(v.len()))
                        .sum::<usize>()
                }
                Request::Scan { cursor, prefix, .. } => 4 + lp(cursor.len()) + lp(prefix.len()),
                Request::Subscribe { topic } => lp(topic.len()),
                Request::Unsubscribe { .. } => 8,
                Request::Publish { topic, message } => lp(topic.len()) + lp(message.len()),
                Request::Fetch { .. } => 8 + 4 + 8,
            }
    }

    /// The opcode of a request.
    pub fn request_opcode(request: &Request) -> u8 {
        match request {
            Request::Ping => opcode::PING,
            Request::Get { .. } => opcode::GET,
            Request::Set { .. } => opcode::SET,
            Request::Delete { .. } => opcode::DELETE,
            Request::Exists { .. } => opcode::EXISTS,
            Request::Cas { .. } => opcode::CAS,
            Request::Incr { .. } => opcode::INCR,
            Request::Expire { .. } => opcode::EXPIRE,
            Request::Ttl { .. } => opcode::TTL,
            Request::Persist { .. } => opcode::PERSIST,
            Request::MGet { .. } => opcode::MGET,
            Request::MSet { .. } => opcode::MSET,
            Request::Scan { .. } => opcode::SCAN,
            Request::Subscribe { .. } => opcode::SUBSCRIBE,
            Request::Unsubscribe { .. } => opcode::UNSUBSCRIBE,
            Request::Publish { .. } => opcode::PUBLISH,
            Request::Fetch { .. } => opcode::FETCH,
            Request::Info => opcode::INFO,
            Request::Snapshot => opcode::SNAPSHOT,
        }
    }

    /// Encodes `request` with `id` into the start of `out` and returns the bytes written,
    /// always exactly [`request_len`].
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`request_len`], or if a key, value or count does not fit in
    /// a u32 (impossible for a request whose [`request_len`] is at most
    /// [`MAX_FRAME_PAYLOAD`](super::layout::ring::MAX_FRAME_PAYLOAD), which the caller must
    /// check anyway before writing it into a ring).
    pub fn encode_request(id: u32, request: &Request, out: &mut [u8]) -> usize {
        let mut w = Writer { out, pos: 0 };
        w.u32(id);
        w.u8(request_opcode(request));
        match request {
            Request::Ping | Request::Info | Request::Snapshot => {}
            Request::Get { key }
            | Request::Delete { key }
            | Request::Exists { key }
            | Request::Ttl { key }
            | Request::Persist { key } => w.bytes(key),
            Request::Set {
                key,
                value,
                options:
                    SetOptions {
                        ttl_ms,
                        condition: cond,
                        keep_ttl,
                    },
            } => {
                w.u8(match cond {
                    SetCondition::Always => condition::ALWAYS,
                    SetCondition::IfAbsent => condition::IF_ABSENT,
                    SetCondition::IfPresent => condition::IF_PRESENT,
                });
                let mut flags = 0;
                if ttl_ms.is_some() {
                    flags |= FLAG_TTL;
                }
                if *keep_ttl {
                    flags |= FLAG_KEEP_TTL;
                }
                w.u8(flags);
                w.u64(ttl_ms.unwrap_or(0));
                w.bytes(key);
                w.bytes(value);
            }
            Request::Cas {
                key,
                expected_version,
                value,
                ttl_ms,
            } => {
                w.u64(*expected_version);
                w.u8(if ttl_ms.is_some() { FLAG_TTL } else { 0 });
                w.u64(ttl_ms.unwrap_or(0));
                w.bytes(key);
                w.bytes(value);
            }
            Request::Incr { key, delta } => {
                w.i64(*delta);
                w.bytes(key);
            }
            Request::Expire { key, ttl_ms } => {
                w.u64(*ttl_ms);
                w.bytes(key);
            }
            Request::MGet { keys } => {
                w.len32(keys.len());
                for key in keys {
                    w.bytes(key);
                }
            }
            Request::MSet { pairs } => {
                w.len32(pairs.len());
                for (key, value) in pairs {
                    w.bytes(key);
                    w.bytes(value);
                }
            }
            Request::Scan {
                cursor,
                prefix,
                count,
            } => {
                w.u32(*count);
                w.bytes(cursor);
                w.bytes(prefix);
            }
            Request::Subscribe { topic } => w.bytes(topic),
            Request::Unsubscribe { subscriber } => w.u64(subscriber.0),
            Request::Publish { topic, message } => {
                w.bytes(topic);
                w.bytes(message);
            }
            Request::Fetch {
                subscriber,
                max,
                wait_ms,
            } => {
                w.u64(subscriber.0);
                w.u32(*max);
                w.u64(*wait_ms);
            }
        }
        w.pos
    }

    /// [`encode_request`] into a new vector of exactly [`request_len`] bytes.
    pub fn encode_request_vec(id: u32, request: &Request) -> Vec<u8> {
        let mut out = vec![0; request_len(request)];
        let n = encode_request(id, request, &mut out);
        debug_assert_eq!(n, out.len());
        out
    }

    /// Decodes a request payload (copied out of the ring first: never decode from the shared
    /// mapping, whose bytes the client may change underneath). Keys and values are copied
    /// into new `Bytes`; see [`decode_request_bytes`] to slice them instead.
    ///
    /// Never panics. Refuses truncated payloads, lengths and counts beyond the payload,
    /// unknown opcodes and tags, non-canonical bytes, trailing bytes, and MGET/MSET with more
    /// than [`BATCH_KEYS_MAX`](limits::BATCH_KEYS_MAX) keys. Key and value sizes, TTLs, SCAN
    /// counts and FETCH limits are left to the shard, which answers them with the same
    /// errors as on every other transport.
    pub fn decode_request(payload: &[u8]) -> std::result::Result<(u32, Request), DecodeError> {
        decode_request_from(Reader::new(payload, None))
    }

    /// [`decode_request`] from a `Bytes` holding the payload: keys and values are slices of
    /// it (no copy).
    pub fn decode_request_bytes(
        payload: &Bytes,
    ) -> std::result::Result<(u32, Request), DecodeError> {
        decode_request_from(Reader::new(payload, Some(payload)))
    }

    /// The request id of a payload, if it is long enough to hold one.
    pub fn payload_id(payload: &[u8]) -> Option<u32> {
        payload
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn decode_request_from(mut r: Reader<'_>) -> Result<(u32, Request)> {
        let id = r.u32("request id")?;
        r.request_id = Some(id);
        let op_at = r.pos;
        let op = r.u8("opcode")?;
        let request = match op {
            opcode::PING => Request::Ping,
            opcode::INFO => Request::Info,
            opcode::SNAPSHOT => Request::Snapshot,
            opcode::GET => Request::Get {
                key: r.bytes("key")?,
            },
            opcode::DELETE => Request::Delete {
                key: r.bytes("key")?,
            },
            opcode::EXISTS => Request::Exists {
                key: r.bytes("key")?,
            },
            opcode::TTL => Request::Ttl {
                key: r.bytes("key")?,
            },
            opcode::PERSIST => Request::Persist {
                key: r.bytes("key")?,
            },
            opcode::SET => {
                let at = r.pos;
                let cond = match r.u8("SET condition")? {
                    condition::ALWAYS => SetCondition::Always,
                    condition::IF_ABSENT => SetCondition::IfAbsent,
                    condition::IF_PRESENT => SetCondition::IfPresent,
                    value => {
                        return Err(r.error(
                            at,
                            DecodeErrorKind::BadByte {
                                what: "SET condition",
                                value,
                            },
                        ))
                    }
                };
                let at = r.pos;
                let flags = r.u8("SET flags")?;
                if flags & !(FLAG_TTL | FLAG_KEEP_TTL) != 0 {
                    return Err(r.error(
                        at,
                        DecodeErrorKind::BadByte {
                            what: "SET flags",
                            value: flags,
                        },
                    ));
                }
                let ttl_ms = optional_ttl(&mut r, flags & FLAG_TTL != 0)?;
                let key = r.bytes("key")?;
                let value = r.bytes("value")?;
                Request::Set {
                    key,
                    value,
                    options: SetOptions {
                        ttl_ms,
                        condition: cond,
                        keep_ttl: flags & FLAG_KEEP_TTL != 0,
                    },
                }
            }
            opcode::CAS => {
                let expected_version = r.u64("expected version")?;
                let at = r.pos;
                let flags = r.u8("CAS flags")?;
                if flags & !FLAG_TTL != 0 {
                    return Err(r.error(
                        at,
                        DecodeErrorKind::BadByte {
                            what: "CAS flags",
                            value: flags,
                        },
                    ));
                }
                let ttl_ms = optional_ttl(&mut r, flags & FLAG_TTL != 0)?;
                let key = r.bytes("key")?;
                let value = r.bytes("value")?;
                Request::Cas {
                    key,
                    expected_version,
                    value,
                    ttl_ms,
                }
            }
            opcode::INCR => {
                let delta = r.i64("delta")?;
                Request::Incr {
                    key: r.bytes("key")?,
                    delta,
                }
            }
            opcode::EXPIRE => {
                let ttl_ms = r.u64("TTL")?;
                Request::Expire {
                    key: r.bytes("key")?,
                    ttl_ms,
                }
            }
            opcode::MGET => {
                let n = r.count("MGET keys", 4, Some(limits::BATCH_KEYS_MAX))?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.bytes("key")?);
                }
                Request::MGet { keys }
            }
            opcode::MSET => {
                let n = r.count("MSET pairs", 8, Some(limits::BATCH_KEYS_MAX))?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = r.bytes("key")?;
                    let value = r.bytes("value")?;
                    pairs.push((key, value));
                }
                Request::MSet { pairs }
            }
            opcode::SCAN => {
                let count = r.u32("SCAN count")?;
                let cursor = r.bytes("cursor")?;
                let prefix = r.bytes("prefix")?;
                Request::Scan {
                    cursor,
                    prefix,
                    count,
                }
            }
            opcode::SUBSCRIBE => Request::Subscribe {
                topic: r.bytes("topic")?,
            },
            opcode::UNSUBSCRIBE => Request::Unsubscribe {
                subscriber: SubscriberId(r.u64("subscriber id")?),
            },
            opcode::PUBLISH => {
                let topic = r.bytes("topic")?;
                let message = r.bytes("message")?;
                Request::Publish { topic, message }
            }
            opcode::FETCH => {
                let subscriber = SubscriberId(r.u64("subscriber id")?);
                let max = r.u32("FETCH max")?;
                let wait_ms = r.u64("FETCH wait")?;
                Request::Fetch {
                    subscriber,
                    max,
                    wait_ms,
                }
            }
            other => return Err(r.error(op_at, DecodeErrorKind::UnknownOpcode(other))),
        };
        r.finish()?;
        Ok((id, request))
    }

    fn optional_ttl(r: &mut Reader<'_>, present: bool) -> Result<Option<u64>> {
        if present {
            Ok(Some(r.u64("TTL")?))
        } else {
            r.zero_u64("TTL (no TTL flag)")?;
            Ok(None)
        }
    }

    // -----------------------------------------------------------------------------------------
    // Responses

    /// Where the server placed a value: `(core, offset of the value bytes in that core's data
    /// segment, block generation)`, or `None` to send it inline.
    pub type SharedPlacement = Option<(u32, u64, u64)>;

    /// The placement callback that sends every value inline.
    pub fn all_inline(_: &Bytes) -> SharedPlacement {
        None
    }

    /// A value in a decoded response.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ValueRef<'a> {
        /// The value bytes, borrowed from the payload.
        Inline(&'a [u8]),
        /// The value lives in the data segment of `core`, `len` bytes at `offset` (from the
        /// start of the segment), in a block of generation `generation`.
        Shared {
            core: u32,
            offset: u64,
            len: u32,
            generation: u64,
        },
    }

    /// The fields of [`ValueRef::Shared`], as one value (what the resolver receives).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SharedValue {
        pub core: u32,
        pub offset: u64,
        pub len: u32,
        pub generation: u64,
    }

    impl ValueRef<'_> {
        /// Length of the value in bytes.
        pub fn len(&self) -> usize {
            match self {
                ValueRef::Inline(bytes) => bytes.len(),
                ValueRef::Shared { len, .. } => *len as usize,
            }
        }

        /// Whether the value is empty.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// The shared reference, if the value is shared.
        pub fn shared(&self) -> Option<SharedValue> {
            match *self {
                ValueRef::Inline(_) => None,
                ValueRef::Shared {
                    core,
                    offset,
                    len,
                    generation,
                } => Some(SharedValue {
                    core,
                    offset,
                    len,
                    generation,
                }),
            }
        }

        /// The value as `Bytes`: inline bytes are copied, shared ones asked of `resolve`;
        /// the error is the shared value it could not resolve.
        pub fn resolve(
            &self,
            resolve: &mut impl FnMut(SharedValue) -> Option<Bytes>,
        ) -> std::result::Result<Bytes, SharedValue> {
            match *self {
                ValueRef::Inline(bytes) => Ok(Bytes::copy_from_slice(bytes)),
                ValueRef::Shared {
                    core,
                    offset,
                    len,
                    generation,
                } => {
                    let shared = SharedValue {
                        core,
                        offset,
                        len,
                        generation,
                    };
                    resolve(shared).ok_or(shared)
                }
            }
        }
    }

    /// A decoded response: like [`Response`], but the values of VALUE and VALUES may be
    /// references into a data segment.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ResponseFrame<'a> {
        /// [`Response::Value`].
        Value { value: ValueRef<'a>, version: u64 },
        /// [`Response::Values`].
        Values(Vec<Option<(ValueRef<'a>, u64)>>),
        /// Every other response (never `Value` or `Values`), decoded in full.
        Other(Response),
    }

    impl ResponseFrame<'_> {
        /// Every shared value the frame refers to, in order.
        pub fn shared_values(&self) -> Vec<SharedValue> {
            match self {
                ResponseFrame::Value { value, .. } => value.shared().into_iter().collect(),
                ResponseFrame::Values(values) => values
                    .iter()
                    .flatten()
                    .filter_map(|(value, _)| value.shared())
                    .collect(),
                ResponseFrame::Other(_) => Vec::new(),
            }
        }

        /// Builds the owned [`Response`]: inline values are copied, shared ones are asked of
        /// `resolve` (which copies them out of the data segment, or builds a zero-copy
        /// `Bytes` over a guard). Fails with the first shared value `resolve` could not give.
        pub fn into_response(
            self,
            mut resolve: impl FnMut(SharedValue) -> Option<Bytes>,
        ) -> std::result::Result<Response, SharedValue> {
            match self {
                ResponseFrame::Value { value, version } => Ok(Response::Value {
                    value: value.resolve(&mut resolve)?,
                    version,
                }),
                ResponseFrame::Values(values) => {
                    let mut out = Vec::with_capacity(values.len());
                    for slot in values {
                        out.push(match slot {
                            None => None,
                            Some((value, version)) => Some((value.resolve(&mut resolve)?, version)),
                        });
                    }
                    Ok(Response::Values(out))
                }
                ResponseFrame::Other(response) => Ok(response),
            }
        }
    }

    fn value_slot_len(value: &Bytes, shared: &impl Fn(&Bytes) -> SharedPlacement) -> usize {
        1 + match shared(value) {
            Some(_) => SHARED_VALUE_BYTES,
            None => 8 + lp(value.len()),
        }
    }

    /// Bytes [`encode_response`] writes for `response` with the same `shared` decisions.
    pub fn response_len(response: &Response, shared: impl Fn(&Bytes) -> SharedPlacement) -> usize {
        PAYLOAD_HEADER_BYTES
            + match response {
                Response::Pong | Response::NotFound | Response::NotStored | Response::Ok => 0,
                Response::Value { value, .. } => value_slot_len(value, &shared),
                Response::Stored { .. } | Response::VersionMismatch { .. } => 8,
                Response::Integer { .. } => 16,
                Response::Bool(_) => 1,
                Response::Ttl(_) => 9,
                Response::Values(values) => {
                    4 + values
                        .iter()
                        .map(|slot| match slot {
                            None => 1,
                            Some((value, _)) => value_slot_len(value, &shared),
                        })
                        .sum::<usize>()
                }
                Response::Keys { keys, cursor } => {
                    4 + keys.iter().map(|k| lp(k.len())).sum::<usize>() + lp(cursor.len())
                }
                Response::Subscribed { .. } => 8,
                Response::Published { .. } => 4,
                Response::Messages { messages, .. } => {
                    8 + 4 + messages.iter().map(|m| lp(m.len())).sum::<usize>()
                }
                Response::Info(info) => 4 + info.shards.len() * SHARD_STATS_BYTES,
                Response::Error(error) => 1 + error_len(error),
            }
    }

    fn error_len(error: &Error) -> usize {
        match error {
            Error::OutOfMemory { .. } | Error::KeyTooLarge { .. } | Error::ValueTooLarge { .. } => {
                16
            }
            Error::NotAnInteger | Error::Overflow | Error::ShuttingDown | Error::PersistenceOff => {
                0
            }
            Error::InvalidArgument(text) | Error::Storage(text) | Error::Busy(text) => {
                lp(text.len())
            }
            Error::UnknownSubscriber(_) | Error::TooManySubscribers { .. } => 8,
        }
    }

    /// The kind byte of a response.
    pub fn response_kind(response: &Response) -> u8 {
        match response {
            Response::Pong => kind::PONG,
            Response::Value { .. } => kind::VALUE,
            Response::NotFound => kind::NOT_FOUND,
            Response::Stored { .. } => kind::STORED,
            Response::NotStored => kind::NOT_STORED,
            Response::VersionMismatch { .. } => kind::VERSION_MISMATCH,
            Response::Integer { .. } => kind::INTEGER,
            Response::Bool(_) => kind::BOOL,
            Response::Ttl(_) => kind::TTL,
            Response::Values(_) => kind::VALUES,
            Response::Ok => kind::OK,
            Response::Keys { .. } => kind::KEYS,
            Response::Subscribed { .. } => kind::SUBSCRIBED,
            Response::Published { .. } => kind::PUBLISHED,
            Response::Messages { .. } => kind::MESSAGES,
            Response::Info(_) => kind::INFO,
            Response::Error(_) => kind::ERROR,
        }
    }

    fn put_value(
        w: &mut Writer<'_>,
        value: &Bytes,
        version: u64,
        shared: &impl Fn(&Bytes) -> SharedPlacement,
    ) {
        match shared(value) {
            Some((core, offset, generation)) => {
                w.u8(value_form::SHARED);
                w.u64(version);
                w.u32(core);
                w.u64(offset);
                w.len32(value.len());
                w.u64(generation);
            }
            None => {
                w.u8(value_form::INLINE);
                w.u64(version);
                w.bytes(value);
            }
        }
    }

    /// Encodes `response` to request `id` into the start of `out` and returns the bytes
    /// written, exactly [`response_len`] with the same `shared`. `shared` decides per value
    /// of VALUE and VALUES whether it goes inline (`None`) or as a reference to where the
    /// server holds it; it must answer the same for the same value in both calls.
    ///
    /// # Panics
    ///
    /// If `out` is shorter than the encoding, or a length or count does not fit in a u32
    /// (impossible for a response whose [`response_len`] is at most
    /// [`MAX_FRAME_PAYLOAD`](super::layout::ring::MAX_FRAME_PAYLOAD)).
    pub fn encode_response(
        id: u32,
        response: &Response,
        shared: impl Fn(&Bytes) -> SharedPlacement,
        out: &mut [u8],
    ) -> usize {
        let mut w = Writer { out, pos: 0 };
        w.u32(id);
        w.u8(response_kind(response));
        match response {
            Response::Pong | Response::NotFound | Response::NotStored | Response::Ok => {}
            Response::Value { value, version } => put_value(&mut w, value, *version, &shared),
            Response::Stored { version } => w.u64(*version),
            Response::VersionMismatch { current } => w.u64(*current),
            Response::Integer { value, version } => {
                w.i64(*value);
                w.u64(*version);
            }
            Response::Bool(b) => w.u8(u8::from(*b)),
            Response::Ttl(ttl) => {
                let (tag, ms) = match ttl {
                    Ttl::Missing => (ttl_tag::MISSING, 0),
                    Ttl::Persistent => (ttl_tag::PERSISTENT, 0),
                    Ttl::Remaining(ms) => (ttl_tag::REMAINING, *ms),
                };
                w.u8(tag);
                w.u64(ms);
            }
            Response::Values(values) => {
                w.len32(values.len());
                for slot in values {
                    match slot {
                        None => w.u8(value_form::MISSING),
                        Some((value, version)) => put_value(&mut w, value, *version, &shared),
                    }
                }
            }
            Response::Keys { keys, cursor } => {
                w.len32(keys.len());
                for key in keys {
                    w.bytes(key);
                }
                w.bytes(cursor);
            }
            Response::Subscribed { subscriber } => w.u64(subscriber.0),
            Response::Published { receivers } => w.u32(*receivers),
            Response::Messages { messages, dropped } => {
                w.u64(*dropped);
                w.len32(messages.len());
                for message in messages {
                    w.bytes(message);
                }
            }
            Response::Info(Info { shards }) => {
                w.len32(shards.len());
                for s in shards {
                    put_shard_stats(&mut w, s);
                }
            }
            Response::Error(error) => put_error(&mut w, error),
        }
        w.pos
    }

    /// [`encode_response`] into a new vector of exactly [`response_len`] bytes.
    pub fn encode_response_vec(
        id: u32,
        response: &Response,
        shared: impl Fn(&Bytes) -> SharedPlacement,
    ) -> Vec<u8> {
        let mut out = vec![0; response_len(response, &shared)];
        let n = encode_response(id, response, &shared, &mut out);
        assert_eq!(
            n,
            out.len(),
            "shm codec: the shared callback answered differently in response_len and encode_response"
        );
        out
    }

    fn put_shard_stats(w: &mut Writer<'_>, s: &ShardStats) {
        // Destructured so that a new field fails to compile until it has a place here.
        let ShardStats {
            shard,
            ops,
            hits,
            misses,
            keys,
            memory_bytes_used,
            memory_bytes_limit,
            expired_keys,
            evicted_keys,
            out_of_memory_errors,
            topics,
            subscribers,
            messages_published,
            messages_delivered,
            messages_dropped,
            forwarded_in,
        } = s;
        w.u32(*shard);
        for v in [
            ops,
            hits,
            misses,
            keys,
            memory_bytes_used,
            memory_bytes_limit,
            expired_keys,
            evicted_keys,
            out_of_memory_errors,
            topics,
            subscribers,
            messages_published,
            messages_delivered,
            messages_dropped,
            forwarded_in,
        ] {
            w.u64(*v);
        }
    }

    fn put_error(w: &mut Writer<'_>, error: &Error) {
        match error {
            Error::OutOfMemory {
                needed_bytes,
                limit_bytes,
            } => {
                w.u8(error_tag::OUT_OF_MEMORY);
                w.u64(*needed_bytes);
                w.u64(*limit_bytes);
            }
            Error::KeyTooLarge { length, limit } => {
                w.u8(error_tag::KEY_TOO_LARGE);
                w.u64(*length as u64);
                w.u64(*limit as u64);
            }
            Error::ValueTooLarge { length, limit } => {
                w.u8(error_tag::VALUE_TOO_LARGE);
                w.u64(*length as u64);
                w.u64(*limit as u64);
            }
            Error::NotAnInteger => w.u8(error_tag::NOT_AN_INTEGER),
            Error::Overflow => w.u8(error_tag::OVERFLOW),
            Error::InvalidArgument(text) => {
                w.u8(error_tag::INVALID_ARGUMENT);
                w.bytes(text.as_bytes());
            }
            Error::UnknownSubscriber(id) => {
                w.u8(error_tag::UNKNOWN_SUBSCRIBER);
                w.u64(id.0);
            }
            Error::TooManySubscribers { limit } => {
                w.u8(error_tag::TOO_MANY_SUBSCRIBERS);
                w.u64(*limit as u64);
            }
            Error::ShuttingDown => w.u8(error_tag::SHUTTING_DOWN),
            Error::PersistenceOff => w.u8(error_tag::PERSISTENCE_OFF),
            Error::Storage(text) => {
                w.u8(error_tag::STORAGE);
                w.bytes(text.as_bytes());
            }
            Error::Busy(text) => {
                w.u8(error_tag::BUSY);
                w.bytes(text.as_bytes());
            }
        }
    }

    /// Decodes a response payload. Inline values borrow from `payload`; the byte strings of
    /// every other response are copied. Never panics; refuses truncated payloads, lengths and
    /// counts beyond the payload, unknown kinds and tags, non-canonical bytes and trailing
    /// bytes. Shared references are not checked here: the client checks them against the
    /// data segment ([`check_block`](super::layout::arena::check_block)).
    pub fn decode_response(
        payload: &[u8],
    ) -> std::result::Result<(u32, ResponseFrame<'_>), DecodeError> {
        let mut r = Reader::new(payload, None);
        let id = r.u32("request id")?;
        r.request_id = Some(id);
        let kind_at = r.pos;
        let k = r.u8("kind")?;
        let frame = match k {
            kind::VALUE => {
                let at = r.pos;
                match value_slot(&mut r)? {
                    Some((value, version)) => ResponseFrame::Value { value, version },
                    None => {
                        return Err(r.error(
                            at,
                            DecodeErrorKind::BadByte {
                                what: "VALUE form",
                                value: value_form::MISSING,
                            },
                        ))
                    }
                }
            }
            kind::VALUES => {
                let n = r.count("VALUES entries", 1, None)?;
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(value_slot(&mut r)?);
                }
                ResponseFrame::Values(values)
            }
            kind::PONG => ResponseFrame::Other(Response::Pong),
            kind::NOT_FOUND => ResponseFrame::Other(Response::NotFound),
            kind::NOT_STORED => ResponseFrame::Other(Response::NotStored),
            kind::OK => ResponseFrame::Other(Response::Ok),
            kind::STORED => ResponseFrame::Other(Response::Stored {
                version: r.u64("version")?,
            }),
            kind::VERSION_MISMATCH => ResponseFrame::Other(Response::VersionMismatch {
                current: r.u64("current version")?,
            }),
            kind::INTEGER => {
                let value = r.i64("integer")?;
                let version = r.u64("version")?;
                ResponseFrame::Other(Response::Integer { value, version })
            }
            kind::BOOL => ResponseFrame::Other(Response::Bool(r.bool("BOOL")?)),
            kind::TTL => {
                let at = r.pos;
                let tag = r.u8("TTL tag")?;
                let ttl = match tag {
                    ttl_tag::MISSING => Ttl::Missing,
                    ttl_tag::PERSISTENT => Ttl::Persistent,
                    ttl_tag::REMAINING => Ttl::Remaining(r.u64("TTL")?),
                    value => {
                        return Err(r.error(
                            at,
                            DecodeErrorKind::BadByte {
                                what: "TTL tag",
                                value,
                            },
                        ))
                    }
                };
                if tag != ttl_tag::REMAINING {
                    r.zero_u64("TTL (not remaining)")?;
                }
                ResponseFrame::Other(Response::Ttl(ttl))
            }
            kind::KEYS => {
                let n = r.count("SCAN keys", 4, None)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.bytes("key")?);
                }
                let cursor = r.bytes("cursor")?;
                ResponseFrame::Other(Response::Keys { keys, cursor })
            }
            kind::SUBSCRIBED => ResponseFrame::Other(Response::Subscribed {
                subscriber: SubscriberId(r.u64("subscriber id")?),
            }),
            kind::PUBLISHED => ResponseFrame::Other(Response::Published {
                receivers: r.u32("receivers")?,
            }),
            kind::MESSAGES => {
                let dropped = r.u64("dropped")?;
                let n = r.count("messages", 4, None)?;
                let mut messages = Vec::with_capacity(n);
                for _ in 0..n {
                    messages.push(r.bytes("message")?);
                }
                ResponseFrame::Other(Response::Messages { messages, dropped })
            }
            kind::INFO => {
                let n = r.count(
                    "INFO shards",
                    SHARD_STATS_BYTES,
                    Some(limits::SHARDS_MAX as usize),
                )?;
                let mut shards = Vec::with_capacity(n);
                for _ in 0..n {
                    shards.push(shard_stats(&mut r)?);
                }
                ResponseFrame::Other(Response::Info(Info { shards }))
            }
            kind::ERROR => ResponseFrame::Other(Response::Error(error(&mut r)?)),
            other => return Err(r.error(kind_at, DecodeErrorKind::UnknownKind(other))),
        };
        r.finish()?;
        Ok((id, frame))
    }

    fn value_slot<'a>(r: &mut Reader<'a>) -> Result<Option<(ValueRef<'a>, u64)>> {
        let at = r.pos;
        match r.u8("value form")? {
            value_form::MISSING => Ok(None),
            value_form::INLINE => {
                let version = r.u64("version")?;
                let (_, bytes) = r.slice("value")?;
                Ok(Some((ValueRef::Inline(bytes), version)))
            }
            value_form::SHARED => {
                let version = r.u64("version")?;
                let core = r.u32("core")?;
                let offset = r.u64("offset")?;
                let len = r.u32("length")?;
                let generation = r.u64("generation")?;
                Ok(Some((
                    ValueRef::Shared {
                        core,
                        offset,
                        len,
                        generation,
                    },
                    version,
                )))
            }
            value => Err(r.error(
                at,
                DecodeErrorKind::BadByte {
                    what: "value form",
                    value,
                },
            )),
        }
    }

    fn shard_stats(r: &mut Reader<'_>) -> Result<ShardStats> {
        Ok(ShardStats {
            shard: r.u32("shard")?,
            ops: r.u64("ops")?,
            hits: r.u64("hits")?,
            misses: r.u64("misses")?,
            keys: r.u64("keys")?,
            memory_bytes_used: r.u64("memory bytes used")?,
            memory_bytes_limit: r.u64("memory bytes limit")?,
            expired_keys: r.u64("expired keys")?,
            evicted_keys: r.u64("evicted keys")?,
            out_of_memory_errors: r.u64("out of memory errors")?,
            topics: r.u64("topics")?,
            subscribers: r.u64("subscribers")?,
            messages_published: r.u64("messages published")?,
            messages_delivered: r.u64("messages delivered")?,
            messages_dropped: r.u64("messages dropped")?,
            forwarded_in: r.u64("forwarded in")?,
        })
    }

    fn error(r: &mut Reader<'_>) -> Result<Error> {
        let at = r.pos;
        Ok(match r.u8("error tag")? {
            error_tag::OUT_OF_MEMORY => Error::OutOfMemory {
                needed_bytes: r.u64("needed bytes")?,
                limit_bytes: r.u64("limit bytes")?,
            },
            error_tag::KEY_TOO_LARGE => Error::KeyTooLarge {
                length: r.usize("length")?,
                limit: r.usize("limit")?,
            },
            error_tag::VALUE_TOO_LARGE => Error::ValueTooLarge {
                length: r.usize("length")?,
                limit: r.usize("limit")?,
            },
            error_tag::NOT_AN_INTEGER => Error::NotAnInteger,
            error_tag::OVERFLOW => Error::Overflow,
            error_tag::INVALID_ARGUMENT => Error::InvalidArgument(r.string("error text")?),
            error_tag::UNKNOWN_SUBSCRIBER => {
                Error::UnknownSubscriber(SubscriberId(r.u64("subscriber id")?))
            }
            error_tag::TOO_MANY_SUBSCRIBERS => Error::TooManySubscribers {
                limit: r.usize("limit")?,
            },
            error_tag::SHUTTING_DOWN => Error::ShuttingDown,
            error_tag::PERSISTENCE_OFF => Error::PersistenceOff,
            error_tag::STORAGE => Error::Storage(r.string("error text")?),
            error_tag::BUSY => Error::Busy(r.string("error text")?),
            other => return Err(r.error(at, DecodeErrorKind::UnknownErrorTag(other))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::codec::*;
    use super::layout::*;
    use crate::{Request, Response};
    use bytes::Bytes;

    #[test]
    fn ring_segment_lines_are_distinct() {
        use ring_segment::*;
        let live = [
            REQUEST_TAIL_OFFSET,
            REQUEST_HEAD_OFFSET,
            RESPONSE_TAIL_OFFSET,
            RESPONSE_HEAD_OFFSET,
            CLIENT_WAIT_OFFSET,
            CLIENT_EPOCH_PIN_OFFSET,
            SERVER_STATUS_OFFSET,
        ];
        let lines: std::collections::BTreeSet<usize> =
            live.iter().map(|o| o / CACHE_LINE_BYTES).collect();
        assert_eq!(lines.len(), live.len());
        assert!(live.iter().all(|o| o % CACHE_LINE_BYTES == 0));
        assert_eq!(
            CLIENT_HEARTBEAT_OFFSET / CACHE_LINE_BYTES,
            CLIENT_EPOCH_PIN_OFFSET / CACHE_LINE_BYTES
        );
    }

    #[test]
    fn frame_space_rounds_to_eight() {
        assert_eq!(ring::frame_space(0), 8);
        assert_eq!(ring::frame_space(1), 16);
        assert_eq!(ring::frame_space(8), 16);
        assert_eq!(ring::frame_space(9), 24);
    }

    #[test]
    fn truncated_request_reports_offset_and_id() {
        let bytes = encode_request_vec(
            7,
            &Request::Get {
                key: Bytes::from_static(b"abc"),
            },
        );
        let err = decode_request(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(err.request_id, Some(7));
        assert_eq!(err.offset, 5);
        assert!(err.to_string().contains("key"), "{err}");
    }

    #[test]
    fn inline_value_borrows_the_payload() {
        let payload = encode_response_vec(
            1,
            &Response::Value {
                value: Bytes::from_static(b"hello"),
                version: 3,
            },
            all_inline,
        );
        let (id, frame) = decode_response(&payload).unwrap();
        assert_eq!(id, 1);
        match frame {
            ResponseFrame::Value {
                value: ValueRef::Inline(bytes),
                version: 3,
            } => {
                assert_eq!(bytes, b"hello");
                assert!(std::ptr::eq(
                    bytes.as_ptr(),
                    payload[payload.len() - 5..].as_ptr()
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_request_bytes_slices_without_copy() {
        let payload = Bytes::from(encode_request_vec(
            2,
            &Request::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"value"),
                options: Default::default(),
            },
        ));
        let (_, request) = decode_request_bytes(&payload).unwrap();
        let Request::Set { value, .. } = request else {
            panic!()
        };
        let end = payload.as_ptr() as usize + payload.len();
        assert_eq!(value.as_ptr() as usize + value.len(), end);
    }
}
