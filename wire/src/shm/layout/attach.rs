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
