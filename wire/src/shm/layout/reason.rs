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
