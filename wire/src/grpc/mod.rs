//! The gRPC face of the model: status codes, method paths, the mapping between the protobuf
//! messages of [`crate::proto`] and [`Request`] / [`Response`], the length-prefixed message
//! framing, `grpc-message` percent-encoding and `grpc-timeout` parsing.
//!
//! Everything here is a pure function of its arguments: no I/O, no clock, no runtime. The
//! HTTP/2 server (in `veddb-transport`) calls these on each stream.

use crate::proto::health::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
};
use crate::proto::v1::{self as pb, batch_request, batch_response};
use crate::{Info, Request, Response, SetCondition, SetOptions, ShardStats, Ttl};
use bytes::{BufMut, Bytes};
use prost::Message;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// The fully qualified name of the VedDb service.
pub const SERVICE_NAME: &str = "veddb.v1.VedDb";
/// The fully qualified name of the standard health service.
pub const HEALTH_SERVICE_NAME: &str = "grpc.health.v1.Health";
/// The usual gRPC message limit, 4 MiB: the least a server's default limit is
/// ([`message_bytes_max_for`]), and the limit of a [`Deframer::default`].
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// Room a message needs beside its key and value bytes: what [`message_bytes_max_for`] adds.
///
/// Protobuf wraps a key and a value in little: a tag and a length varint (at most 6 bytes) per
/// bytes field, at most 11 bytes per integer field (version, TTL, condition, flags), the 1 to 6
/// bytes of a `BatchRequest`/`BatchResponse` oneof, and a `BatchResponse` status (a code and a
/// short message; a NOT_FOUND quotes at most 200 characters of its key, and carries no value).
/// Under 1 KiB in all for any single-key message; 64 KiB leaves room for fields added later and
/// is small next to the values the limit is sized for. The 5-byte gRPC prefix is not part of
/// a message's length.
pub const MESSAGE_FRAMING_BYTES: usize = 64 * 1024;
/// The longest message the 5-byte prefix can announce.
pub const MESSAGE_LENGTH_MAX: usize = u32::MAX as usize;

/// A server's gRPC message limit when `--grpc-message-bytes-max` is not given: the largest key
/// plus the largest value plus [`MESSAGE_FRAMING_BYTES`], so that every single-key request
/// (SET, CAS, PUBLISH) and answer (GET, a Subscribe message) the engine allows fits in one
/// message; never less than [`MESSAGE_BYTES_MAX_DEFAULT`], at most [`MESSAGE_LENGTH_MAX`].
/// Multi-key messages (MSET, MGET answers, SCAN pages) may still go over it.
pub const fn message_bytes_max_for(key_bytes_max: usize, value_bytes_max: usize) -> usize {
    let wanted = value_bytes_max
        .saturating_add(key_bytes_max)
        .saturating_add(MESSAGE_FRAMING_BYTES);
    if wanted > MESSAGE_LENGTH_MAX {
        MESSAGE_LENGTH_MAX
    } else if wanted < MESSAGE_BYTES_MAX_DEFAULT {
        MESSAGE_BYTES_MAX_DEFAULT
    } else {
        wanted
    }
}

const _: () = assert!(
    message_bytes_max_for(
        crate::limits::KEY_BYTES_MAX_DEFAULT,
        crate::limits::VALUE_BYTES_MAX_DEFAULT
    ) == 16 * 1024 * 1024 + 128 * 1024
);
const _: () = assert!(message_bytes_max_for(1024, 64 * 1024) == MESSAGE_BYTES_MAX_DEFAULT);
// The largest key and value a server accepts (1 GiB each) still fit the prefix.
const _: () = assert!(
    message_bytes_max_for(
        crate::limits::VALUE_BYTES_MAX_UPPER,
        crate::limits::VALUE_BYTES_MAX_UPPER
    ) < MESSAGE_LENGTH_MAX
);
/// Length of the prefix before every message: compressed flag (1 byte), length (4 bytes, big-endian).
pub const FRAME_PREFIX_BYTES: usize = 5;
/// Most bytes a [`Deframer`] reserves for a message before its bytes arrive.
pub const DEFRAMER_FIRST_CAPACITY_BYTES: usize = 64 * 1024;
/// Longest key text quoted in a NOT_FOUND message, in characters.
const KEY_QUOTE_CHARS_MAX: usize = 200;

pub use crate::status::{Code, Status};

// ---------------------------------------------------------------------------------------------
// Methods

/// Every RPC the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Ping,
    Get,
    Set,
    Delete,
    Exists,
    Cas,
    Incr,
    Expire,
    Ttl,
    MGet,
    MSet,
    Scan,
    Publish,
    Info,
    Snapshot,
    Batch,
    Subscribe,
    HealthCheck,
    HealthWatch,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 19] = [
        Method::Ping,
        Method::Get,
        Method::Set,
        Method::Delete,
        Method::Exists,
        Method::Cas,
        Method::Incr,
        Method::Expire,
        Method::Ttl,
        Method::MGet,
        Method::MSet,
        Method::Scan,
        Method::Publish,
        Method::Info,
        Method::Snapshot,
        Method::Batch,
        Method::Subscribe,
        Method::HealthCheck,
        Method::HealthWatch,
    ];

    /// The method named by an HTTP/2 `:path`, e.g. `/veddb.v1.VedDb/Get` or
    /// `/grpc.health.v1.Health/Check`.
    pub fn from_path(path: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|method| method.path() == path)
    }

    /// The HTTP/2 `:path` of the method.
    pub fn path(self) -> &'static str {
        match self {
            Method::Ping => "/veddb.v1.VedDb/Ping",
            Method::Get => "/veddb.v1.VedDb/Get",
            Method::Set => "/veddb.v1.VedDb/Set",
            Method::Delete => "/veddb.v1.VedDb/Delete",
            Method::Exists => "/veddb.v1.VedDb/Exists",
            Method::Cas => "/veddb.v1.VedDb/Cas",
            Method::Incr => "/veddb.v1.VedDb/Incr",
            Method::Expire => "/veddb.v1.VedDb/Expire",
            Method::Ttl => "/veddb.v1.VedDb/Ttl",
            Method::MGet => "/veddb.v1.VedDb/MGet",
            Method::MSet => "/veddb.v1.VedDb/MSet",
            Method::Scan => "/veddb.v1.VedDb/Scan",
            Method::Publish => "/veddb.v1.VedDb/Publish",
            Method::Info => "/veddb.v1.VedDb/Info",
            Method::Snapshot => "/veddb.v1.VedDb/Snapshot",
            Method::Batch => "/veddb.v1.VedDb/Batch",
            Method::Subscribe => "/veddb.v1.VedDb/Subscribe",
            Method::HealthCheck => "/grpc.health.v1.Health/Check",
            Method::HealthWatch => "/grpc.health.v1.Health/Watch",
        }
    }

    /// The method's name within its service, e.g. `Get` or `Check`.
    pub fn name(self) -> &'static str {
        let path = self.path();
        path.rsplit('/').next().unwrap_or(path)
    }

    /// One request message, one response message (the 15 unary VedDb methods and Health/Check).
    pub fn is_unary(self) -> bool {
        !self.is_server_streaming() && !self.is_bidi()
    }

    /// One request message, a stream of responses (Subscribe, Health/Watch).
    pub fn is_server_streaming(self) -> bool {
        matches!(self, Method::Subscribe | Method::HealthWatch)
    }

    /// Streams both ways (Batch).
    pub fn is_bidi(self) -> bool {
        matches!(self, Method::Batch)
    }

    /// Whether the method belongs to the health service.
    pub fn is_health(self) -> bool {
        matches!(self, Method::HealthCheck | Method::HealthWatch)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

mod framing;
mod messages;
#[cfg(test)]
mod tests;
mod text;

pub use framing::*;
pub use messages::*;
pub use text::*;
