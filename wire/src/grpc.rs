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
use crate::{Error, Info, Request, Response, SetCondition, SetOptions, ShardStats, Ttl};
use bytes::{BufMut, Bytes};
use prost::Message;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// The fully qualified name of the VedDb service.
pub const SERVICE_NAME: &str = "veddb.v1.VedDb";
/// The fully qualified name of the standard health service.
pub const HEALTH_SERVICE_NAME: &str = "grpc.health.v1.Health";
/// Largest message accepted by default (the usual gRPC default, 4 MiB).
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// Length of the prefix before every message: compressed flag (1 byte), length (4 bytes, big-endian).
pub const FRAME_PREFIX_BYTES: usize = 5;
/// Most bytes a [`Deframer`] reserves for a message before its bytes arrive.
pub const DEFRAMER_FIRST_CAPACITY_BYTES: usize = 64 * 1024;
/// Longest key text quoted in a NOT_FOUND message, in characters.
const KEY_QUOTE_CHARS_MAX: usize = 200;

// ---------------------------------------------------------------------------------------------
// Status codes

/// The gRPC status codes (grpc/grpc doc/statuscodes.md); the numbers are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The wire number (the `grpc-status` value).
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code with this wire number, if any.
    pub fn from_i32(value: i32) -> Option<Code> {
        usize::try_from(value)
            .ok()
            .and_then(|index| Code::ALL.get(index).copied())
    }

    /// The canonical upper-case name, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A gRPC status: the code and the (not yet percent-encoded) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
    /// Code OK, empty message.
    pub fn ok() -> Status {
        Status::new(Code::Ok, String::new())
    }
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Status {
        Status::new(Code::FailedPrecondition, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }
    /// The `grpc-message` header value: the message percent-encoded.
    pub fn encoded_message(&self) -> String {
        percent_encode_message(&self.message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

/// The gRPC status for an engine error; the message is the error's `Display` text.
pub fn status_of_error(error: &Error) -> Status {
    let code = match error {
        // An empty key is a malformed argument, not a size limit.
        Error::KeyTooLarge { length: 0, .. } => Code::InvalidArgument,
        Error::OutOfMemory { .. }
        | Error::KeyTooLarge { .. }
        | Error::ValueTooLarge { .. }
        | Error::TooManySubscribers { .. } => Code::ResourceExhausted,
        Error::InvalidArgument(_) | Error::NotAnInteger | Error::Overflow => Code::InvalidArgument,
        Error::UnknownSubscriber(_) => Code::NotFound,
        Error::ShuttingDown | Error::Busy(_) => Code::Unavailable,
        Error::PersistenceOff => Code::FailedPrecondition,
        Error::Storage(_) => Code::Internal,
    };
    Status::new(code, error.to_string())
}

// ---------------------------------------------------------------------------------------------
// Methods

/// Every RPC the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Ping,
    Get,
    Set,
    Delete,
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
    pub const ALL: [Method; 18] = [
        Method::Ping,
        Method::Get,
        Method::Set,
        Method::Delete,
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

    /// One request message, one response message (the 14 unary VedDb methods and Health/Check).
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

// ---------------------------------------------------------------------------------------------
// Requests

fn decode<M: Message + Default>(message: Bytes, type_name: &str) -> Result<M, Status> {
    M::decode(message)
        .map_err(|error| Status::invalid_argument(format!("cannot decode {type_name}: {error}")))
}

fn set_request(m: pb::SetRequest) -> Result<Request, Status> {
    let condition = match pb::SetCondition::try_from(m.condition) {
        Ok(pb::SetCondition::Always) => SetCondition::Always,
        Ok(pb::SetCondition::IfAbsent) => SetCondition::IfAbsent,
        Ok(pb::SetCondition::IfPresent) => SetCondition::IfPresent,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown SetCondition value {} in veddb.v1.SetRequest.condition",
                m.condition
            )))
        }
    };
    Ok(Request::Set {
        key: m.key,
        value: m.value,
        options: SetOptions {
            ttl_ms: non_zero(m.ttl_ms),
            condition,
            keep_ttl: m.keep_ttl,
        },
    })
}

fn non_zero(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}

fn cas_request(m: pb::CasRequest) -> Request {
    Request::Cas {
        key: m.key,
        expected_version: m.expected_version,
        value: m.value,
        ttl_ms: non_zero(m.ttl_ms),
    }
}

fn expire_request(m: pb::ExpireRequest) -> Request {
    if m.persist {
        Request::Persist { key: m.key }
    } else {
        Request::Expire {
            key: m.key,
            ttl_ms: m.ttl_ms,
        }
    }
}

fn mset_request(m: pb::MSetRequest) -> Request {
    Request::MSet {
        pairs: m
            .pairs
            .into_iter()
            .map(|pair| (pair.key, pair.value))
            .collect(),
    }
}

fn scan_request(m: pb::ScanRequest) -> Request {
    Request::Scan {
        cursor: m.cursor,
        prefix: m.prefix,
        count: m.count,
    }
}

/// Decodes the request message of one of the 14 unary VedDb methods into a [`Request`].
///
/// An undecodable message or an unknown enum value is INVALID_ARGUMENT; a method that is not
/// a unary VedDb method (Batch, Subscribe, Health) is INTERNAL (the caller dispatched wrongly).
pub fn decode_unary(method: Method, message: Bytes) -> Result<Request, Status> {
    Ok(match method {
        Method::Ping => {
            decode::<pb::PingRequest>(message, "veddb.v1.PingRequest")?;
            Request::Ping
        }
        Method::Get => Request::Get {
            key: decode::<pb::GetRequest>(message, "veddb.v1.GetRequest")?.key,
        },
        Method::Set => set_request(decode(message, "veddb.v1.SetRequest")?)?,
        Method::Delete => Request::Delete {
            key: decode::<pb::DeleteRequest>(message, "veddb.v1.DeleteRequest")?.key,
        },
        Method::Cas => cas_request(decode(message, "veddb.v1.CasRequest")?),
        Method::Incr => {
            let m: pb::IncrRequest = decode(message, "veddb.v1.IncrRequest")?;
            Request::Incr {
                key: m.key,
                delta: m.delta,
            }
        }
        Method::Expire => expire_request(decode(message, "veddb.v1.ExpireRequest")?),
        Method::Ttl => Request::Ttl {
            key: decode::<pb::TtlRequest>(message, "veddb.v1.TtlRequest")?.key,
        },
        Method::MGet => Request::MGet {
            keys: decode::<pb::MGetRequest>(message, "veddb.v1.MGetRequest")?.keys,
        },
        Method::MSet => mset_request(decode(message, "veddb.v1.MSetRequest")?),
        Method::Scan => scan_request(decode(message, "veddb.v1.ScanRequest")?),
        Method::Publish => {
            let m: pb::PublishRequest = decode(message, "veddb.v1.PublishRequest")?;
            Request::Publish {
                topic: m.topic,
                message: m.message,
            }
        }
        Method::Info => {
            decode::<pb::InfoRequest>(message, "veddb.v1.InfoRequest")?;
            Request::Info
        }
        Method::Snapshot => {
            decode::<pb::SnapshotRequest>(message, "veddb.v1.SnapshotRequest")?;
            Request::Snapshot
        }
        Method::Batch | Method::Subscribe | Method::HealthCheck | Method::HealthWatch => {
            return Err(Status::internal(format!(
                "{method} is not a unary VedDb method"
            )))
        }
    })
}

/// Decodes one `BatchRequest`; the [`Method`] says which op it carried (pass it to
/// [`encode_batch`]). A message with no op is INVALID_ARGUMENT.
pub fn decode_batch(message: Bytes) -> Result<(Method, Request), Status> {
    let batch: pb::BatchRequest = decode(message, "veddb.v1.BatchRequest")?;
    Ok(match batch.op {
        None => {
            return Err(Status::invalid_argument(
                "veddb.v1.BatchRequest has no op set",
            ))
        }
        Some(batch_request::Op::Ping(_)) => (Method::Ping, Request::Ping),
        Some(batch_request::Op::Get(m)) => (Method::Get, Request::Get { key: m.key }),
        Some(batch_request::Op::Set(m)) => (Method::Set, set_request(m)?),
        Some(batch_request::Op::Delete(m)) => (Method::Delete, Request::Delete { key: m.key }),
        Some(batch_request::Op::Cas(m)) => (Method::Cas, cas_request(m)),
        Some(batch_request::Op::Incr(m)) => (
            Method::Incr,
            Request::Incr {
                key: m.key,
                delta: m.delta,
            },
        ),
        Some(batch_request::Op::Expire(m)) => (Method::Expire, expire_request(m)),
        Some(batch_request::Op::Ttl(m)) => (Method::Ttl, Request::Ttl { key: m.key }),
        Some(batch_request::Op::Mget(m)) => (Method::MGet, Request::MGet { keys: m.keys }),
        Some(batch_request::Op::Mset(m)) => (Method::MSet, mset_request(m)),
        Some(batch_request::Op::Scan(m)) => (Method::Scan, scan_request(m)),
        Some(batch_request::Op::Publish(m)) => (
            Method::Publish,
            Request::Publish {
                topic: m.topic,
                message: m.message,
            },
        ),
    })
}

/// The key (or topic) a request names, for [`encode_unary`]'s NOT_FOUND message; empty for
/// requests without one. Cheap: `Bytes` clones share the buffer.
pub fn request_key(request: &Request) -> Bytes {
    request.key().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Responses

/// A successful answer of a unary method, as its protobuf message.
enum Reply {
    Ping(pb::PingResponse),
    Get(pb::GetResponse),
    Set(pb::SetResponse),
    Delete(pb::DeleteResponse),
    Cas(pb::CasResponse),
    Incr(pb::IncrResponse),
    Expire(pb::ExpireResponse),
    Ttl(pb::TtlResponse),
    MGet(pb::MGetResponse),
    MSet(pb::MSetResponse),
    Scan(pb::ScanResponse),
    Publish(pb::PublishResponse),
    Info(pb::InfoResponse),
    Snapshot(pb::SnapshotResponse),
}

impl Reply {
    fn encode_framed(&self, out: &mut impl BufMut) {
        match self {
            Reply::Ping(m) => frame_message(m, out),
            Reply::Get(m) => frame_message(m, out),
            Reply::Set(m) => frame_message(m, out),
            Reply::Delete(m) => frame_message(m, out),
            Reply::Cas(m) => frame_message(m, out),
            Reply::Incr(m) => frame_message(m, out),
            Reply::Expire(m) => frame_message(m, out),
            Reply::Ttl(m) => frame_message(m, out),
            Reply::MGet(m) => frame_message(m, out),
            Reply::MSet(m) => frame_message(m, out),
            Reply::Scan(m) => frame_message(m, out),
            Reply::Publish(m) => frame_message(m, out),
            Reply::Info(m) => frame_message(m, out),
            Reply::Snapshot(m) => frame_message(m, out),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Reply::Ping(m) => m.encoded_len(),
            Reply::Get(m) => m.encoded_len(),
            Reply::Set(m) => m.encoded_len(),
            Reply::Delete(m) => m.encoded_len(),
            Reply::Cas(m) => m.encoded_len(),
            Reply::Incr(m) => m.encoded_len(),
            Reply::Expire(m) => m.encoded_len(),
            Reply::Ttl(m) => m.encoded_len(),
            Reply::MGet(m) => m.encoded_len(),
            Reply::MSet(m) => m.encoded_len(),
            Reply::Scan(m) => m.encoded_len(),
            Reply::Publish(m) => m.encoded_len(),
            Reply::Info(m) => m.encoded_len(),
            Reply::Snapshot(m) => m.encoded_len(),
        }
    }

    fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Reply::Ping(m) => m.encode_to_vec(),
            Reply::Get(m) => m.encode_to_vec(),
            Reply::Set(m) => m.encode_to_vec(),
            Reply::Delete(m) => m.encode_to_vec(),
            Reply::Cas(m) => m.encode_to_vec(),
            Reply::Incr(m) => m.encode_to_vec(),
            Reply::Expire(m) => m.encode_to_vec(),
            Reply::Ttl(m) => m.encode_to_vec(),
            Reply::MGet(m) => m.encode_to_vec(),
            Reply::MSet(m) => m.encode_to_vec(),
            Reply::Scan(m) => m.encode_to_vec(),
            Reply::Publish(m) => m.encode_to_vec(),
            Reply::Info(m) => m.encode_to_vec(),
            Reply::Snapshot(m) => m.encode_to_vec(),
        }
    }

    fn into_batch_op(self) -> Option<batch_response::Op> {
        Some(match self {
            Reply::Ping(m) => batch_response::Op::Ping(m),
            Reply::Get(m) => batch_response::Op::Get(m),
            Reply::Set(m) => batch_response::Op::Set(m),
            Reply::Delete(m) => batch_response::Op::Delete(m),
            Reply::Cas(m) => batch_response::Op::Cas(m),
            Reply::Incr(m) => batch_response::Op::Incr(m),
            Reply::Expire(m) => batch_response::Op::Expire(m),
            Reply::Ttl(m) => batch_response::Op::Ttl(m),
            Reply::MGet(m) => batch_response::Op::Mget(m),
            Reply::MSet(m) => batch_response::Op::Mset(m),
            Reply::Scan(m) => batch_response::Op::Scan(m),
            Reply::Publish(m) => batch_response::Op::Publish(m),
            Reply::Info(_) | Reply::Snapshot(_) => return None,
        })
    }
}

fn key_not_found(request_key: &[u8]) -> Status {
    let key: String = String::from_utf8_lossy(request_key)
        .chars()
        .take(KEY_QUOTE_CHARS_MAX)
        .collect();
    Status::not_found(format!("key not found: {key}"))
}

fn shard_info(s: ShardStats) -> pb::ShardInfo {
    pb::ShardInfo {
        shard: s.shard,
        ops: s.ops,
        hits: s.hits,
        misses: s.misses,
        keys: s.keys,
        memory_bytes_used: s.memory_bytes_used,
        memory_bytes_limit: s.memory_bytes_limit,
        expired_keys: s.expired_keys,
        evicted_keys: s.evicted_keys,
        out_of_memory_errors: s.out_of_memory_errors,
        topics: s.topics,
        subscribers: s.subscribers,
        messages_published: s.messages_published,
        messages_delivered: s.messages_delivered,
        messages_dropped: s.messages_dropped,
        forwarded_in: s.forwarded_in,
    }
}

fn info_response(info: Info) -> pb::InfoResponse {
    pb::InfoResponse {
        shards: info.shards.into_iter().map(shard_info).collect(),
    }
}

fn reply(method: Method, request_key: &[u8], response: Response) -> Result<Reply, Status> {
    Ok(match (method, response) {
        (_, Response::Error(error)) => return Err(status_of_error(&error)),
        (_, Response::NotFound) => return Err(key_not_found(request_key)),
        (_, Response::VersionMismatch { current }) => {
            return Err(Status::failed_precondition(format!(
                "version mismatch: the current version is {current}"
            )))
        }
        (Method::Ping, Response::Pong) => Reply::Ping(pb::PingResponse {}),
        (Method::Get, Response::Value { value, version }) => {
            Reply::Get(pb::GetResponse { value, version })
        }
        (Method::Set, Response::Stored { version }) => Reply::Set(pb::SetResponse {
            stored: true,
            version,
        }),
        (Method::Set, Response::NotStored) => Reply::Set(pb::SetResponse {
            stored: false,
            version: 0,
        }),
        (Method::Delete, Response::Bool(existed)) => Reply::Delete(pb::DeleteResponse { existed }),
        (Method::Cas, Response::Stored { version }) => Reply::Cas(pb::CasResponse { version }),
        (Method::Incr, Response::Integer { value, version }) => {
            Reply::Incr(pb::IncrResponse { value, version })
        }
        (Method::Expire, Response::Bool(applied)) => Reply::Expire(pb::ExpireResponse { applied }),
        (Method::Ttl, Response::Ttl(ttl)) => Reply::Ttl(match ttl {
            Ttl::Missing => pb::TtlResponse {
                exists: false,
                persistent: false,
                remaining_ms: 0,
            },
            Ttl::Persistent => pb::TtlResponse {
                exists: true,
                persistent: true,
                remaining_ms: 0,
            },
            Ttl::Remaining(remaining_ms) => pb::TtlResponse {
                exists: true,
                persistent: false,
                remaining_ms,
            },
        }),
        (Method::MGet, Response::Values(values)) => Reply::MGet(pb::MGetResponse {
            values: values
                .into_iter()
                .map(|entry| match entry {
                    Some((value, version)) => pb::MaybeValue {
                        found: true,
                        value,
                        version,
                    },
                    None => pb::MaybeValue::default(),
                })
                .collect(),
        }),
        (Method::MSet, Response::Ok) => Reply::MSet(pb::MSetResponse {}),
        (Method::Scan, Response::Keys { keys, cursor }) => {
            Reply::Scan(pb::ScanResponse { keys, cursor })
        }
        (Method::Publish, Response::Published { receivers }) => {
            Reply::Publish(pb::PublishResponse { receivers })
        }
        (Method::Info, Response::Info(info)) => Reply::Info(info_response(info)),
        (Method::Snapshot, Response::Ok) => Reply::Snapshot(pb::SnapshotResponse {}),
        (method, response) => {
            return Err(Status::internal(format!(
                "the engine answered {method} with an unexpected {}",
                response_kind(&response)
            )))
        }
    })
}

fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::Pong => "Pong",
        Response::Value { .. } => "Value",
        Response::NotFound => "NotFound",
        Response::Stored { .. } => "Stored",
        Response::NotStored => "NotStored",
        Response::VersionMismatch { .. } => "VersionMismatch",
        Response::Integer { .. } => "Integer",
        Response::Bool(_) => "Bool",
        Response::Ttl(_) => "Ttl",
        Response::Values(_) => "Values",
        Response::Ok => "Ok",
        Response::Keys { .. } => "Keys",
        Response::Subscribed { .. } => "Subscribed",
        Response::Published { .. } => "Published",
        Response::Messages { .. } => "Messages",
        Response::Info(_) => "Info",
        Response::Error(_) => "Error",
    }
}

/// Encodes the engine's answer to a unary VedDb method as the method's response message, or
/// the gRPC status to end the call with.
///
/// `request_key` is the request's key (see [`request_key`]), quoted in NOT_FOUND messages.
pub fn encode_unary(
    method: Method,
    request_key: &[u8],
    response: Response,
) -> Result<Vec<u8>, Status> {
    reply(method, request_key, response).map(|reply| reply.encode_to_vec())
}

/// [`encode_unary`] with the message already framed (prefix included) in one buffer, or the
/// gRPC status to end the call with: `Err` also when the message would be longer than `limit`
/// bytes (RESOURCE_EXHAUSTED).
pub fn encode_unary_framed(
    method: Method,
    request_key: &[u8],
    response: Response,
    limit: usize,
) -> Result<Vec<u8>, Status> {
    let reply = reply(method, request_key, response)?;
    let length = reply.encoded_len();
    if length > limit {
        return Err(Status::resource_exhausted(format!(
            "response of {length} bytes is over the limit of {limit} bytes"
        )));
    }
    let mut out = Vec::with_capacity(FRAME_PREFIX_BYTES + length);
    reply.encode_framed(&mut out);
    Ok(out)
}

/// Encodes the engine's answer to one batch op (`method` from [`decode_batch`]) as a
/// `BatchResponse`: status `{0, ""}` and the op's response on success, else the error's
/// code and message and no op.
pub fn encode_batch(method: Method, request_key: &[u8], response: Response) -> Vec<u8> {
    let result = reply(method, request_key, response).and_then(|reply| {
        reply
            .into_batch_op()
            .ok_or_else(|| Status::internal(format!("{method} cannot be part of a batch")))
    });
    encode_batch_result(result)
}

/// [`encode_batch`], appended to `out` already framed: the 5-byte prefix, then the message,
/// with no intermediate buffer.
pub fn encode_batch_framed(
    method: Method,
    request_key: &[u8],
    response: Response,
    out: &mut impl BufMut,
) {
    let result = reply(method, request_key, response).and_then(|reply| {
        reply
            .into_batch_op()
            .ok_or_else(|| Status::internal(format!("{method} cannot be part of a batch")))
    });
    frame_message(&batch_response(result), out);
}

/// [`encode_batch_error`], appended to `out` already framed.
pub fn encode_batch_error_framed(status: &Status, out: &mut impl BufMut) {
    frame_message(&batch_response(Err(status.clone())), out);
}

/// Encodes a `BatchResponse` that carries only a status (e.g. a [`decode_batch`] failure).
pub fn encode_batch_error(status: &Status) -> Vec<u8> {
    encode_batch_result(Err(status.clone()))
}

fn encode_batch_result(result: Result<batch_response::Op, Status>) -> Vec<u8> {
    batch_response(result).encode_to_vec()
}

fn batch_response(result: Result<batch_response::Op, Status>) -> pb::BatchResponse {
    let (status, op) = match result {
        Ok(op) => (Status::ok(), Some(op)),
        Err(status) => (status, None),
    };
    pb::BatchResponse {
        status: Some(pb::BatchStatus {
            code: status.code.as_i32(),
            message: status.message,
        }),
        op,
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribe

/// Decodes a `SubscribeRequest` into its topic.
pub fn decode_subscribe(message: Bytes) -> Result<Bytes, Status> {
    Ok(decode::<pb::SubscribeRequest>(message, "veddb.v1.SubscribeRequest")?.topic)
}

/// The first `SubscribeResponse` of a stream: `subscribed = true`.
pub fn encode_subscribed() -> Vec<u8> {
    pb::SubscribeResponse {
        subscribed: true,
        message: Bytes::new(),
        dropped: 0,
    }
    .encode_to_vec()
}

/// A `SubscribeResponse` carrying one published message; `dropped` counts messages lost to
/// the slow-subscriber policy since the previous one.
pub fn encode_message(message: Bytes, dropped: u64) -> Vec<u8> {
    pb::SubscribeResponse {
        subscribed: false,
        message,
        dropped,
    }
    .encode_to_vec()
}

// ---------------------------------------------------------------------------------------------
// Health

/// Decodes a `HealthCheckRequest` into its service name.
pub fn decode_health(message: Bytes) -> Result<String, Status> {
    Ok(decode::<HealthCheckRequest>(message, "grpc.health.v1.HealthCheckRequest")?.service)
}

/// Whether the health service reports on this service name: `""` (the whole server) and
/// `veddb.v1.VedDb`. Check answers NOT_FOUND for others; Watch sends SERVICE_UNKNOWN.
pub fn health_service_known(service: &str) -> bool {
    service.is_empty() || service == SERVICE_NAME
}

/// What the health service reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    Serving,
    NotServing,
    /// The service name is not known (Watch only; Check answers NOT_FOUND).
    ServiceUnknown,
}

/// A `HealthCheckResponse`: SERVING or NOT_SERVING.
pub fn encode_health(serving: bool) -> Vec<u8> {
    encode_health_state(if serving {
        HealthState::Serving
    } else {
        HealthState::NotServing
    })
}

/// A `HealthCheckResponse` with any state.
pub fn encode_health_state(state: HealthState) -> Vec<u8> {
    let status = match state {
        HealthState::Serving => ServingStatus::Serving,
        HealthState::NotServing => ServingStatus::NotServing,
        HealthState::ServiceUnknown => ServingStatus::ServiceUnknown,
    };
    HealthCheckResponse {
        status: status as i32,
    }
    .encode_to_vec()
}

// ---------------------------------------------------------------------------------------------
// Framing

/// Appends one length-prefixed message: compressed flag 0, big-endian `u32` length, the bytes.
///
/// # Panics
/// If the message is longer than `u32::MAX` bytes (the framing cannot express it).
pub fn frame(message: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(message.len()).expect("a gRPC message is at most u32::MAX bytes");
    out.reserve(FRAME_PREFIX_BYTES + message.len());
    out.push(0);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(message);
}

/// Appends `message` encoded and framed to `out`: the prefix is written first, from the
/// message's encoded length, then the message straight after it (no intermediate buffer).
///
/// # Panics
/// If the message is longer than `u32::MAX` bytes (the framing cannot express it).
pub fn frame_message(message: &impl Message, out: &mut impl BufMut) {
    let length = message.encoded_len();
    let prefix = u32::try_from(length).expect("a gRPC message is at most u32::MAX bytes");
    out.put_u8(0);
    out.put_u32(prefix);
    message.encode_raw(out);
}

/// Why a stream of length-prefixed messages cannot be read further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Compressed flag 1: only the identity encoding is supported.
    Compressed,
    /// A compressed flag other than 0 or 1.
    BadFlag(u8),
    /// The prefix announces a message longer than the limit.
    TooLarge { length: u64, limit: usize },
    /// The stream ended inside a message.
    Truncated,
}

impl FrameError {
    /// The status to end the call with.
    pub fn status(&self) -> Status {
        let code = match self {
            FrameError::Compressed => Code::Unimplemented,
            FrameError::TooLarge { .. } => Code::ResourceExhausted,
            FrameError::BadFlag(_) | FrameError::Truncated => Code::Internal,
        };
        Status::new(code, self.to_string())
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Compressed => f.write_str(
                "compressed messages are not supported: send with grpc-encoding identity (no compression)",
            ),
            FrameError::BadFlag(flag) => write!(f, "invalid compressed-flag byte {flag} in a message prefix"),
            FrameError::TooLarge { length, limit } => write!(
                f,
                "message of {length} bytes is over the {limit}-byte limit (--grpc-message-bytes-max)"
            ),
            FrameError::Truncated => f.write_str("the stream ended inside a message"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for Status {
    fn from(error: FrameError) -> Status {
        error.status()
    }
}

/// The message of `chunk` when it holds exactly one whole, uncompressed message within `limit`
/// (prefix included), as a slice of it: no copy. `None` for anything else (part of a message,
/// several, a compressed or bad flag, over the limit), which a [`Deframer`] then takes apart or
/// refuses. The common unary request arrives this way, in one DATA frame.
pub fn whole_message(chunk: &Bytes, limit: usize) -> Option<Bytes> {
    (whole_message_length(chunk, limit)? + FRAME_PREFIX_BYTES == chunk.len())
        .then(|| chunk.slice(FRAME_PREFIX_BYTES..))
}

/// The length of the message `bytes` starts with, when it is whole there, uncompressed and
/// within `limit`; `None` for anything else (left to the [`Deframer`]'s general path).
fn whole_message_length(bytes: &[u8], limit: usize) -> Option<usize> {
    let (&[flag, l0, l1, l2, l3], rest) = bytes.split_first_chunk::<FRAME_PREFIX_BYTES>()?;
    let length = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).ok()?;
    (flag == 0 && length <= limit && rest.len() >= length).then_some(length)
}

/// Splits a byte stream (HTTP/2 DATA payloads) into messages.
///
/// Feed each chunk to [`push`](Deframer::push), then take messages with
/// [`next`](Deframer::next) until it returns `Ok(None)`; at the end of the stream call
/// [`finish`](Deframer::finish). A message's announced length is checked against the limit
/// before anything is reserved for it; its buffer then starts at no more than
/// [`DEFRAMER_FIRST_CAPACITY_BYTES`] and grows as its bytes arrive: one message never takes more
/// than about `limit + 5` bytes, and a prefix alone reserves little. After an error, further input is ignored and the error is sticky (it is
/// reported after the messages completed before it).
#[derive(Debug)]
pub struct Deframer {
    limit: usize,
    prefix: [u8; FRAME_PREFIX_BYTES],
    prefix_len: usize,
    /// The message being received.
    body: Option<Vec<u8>>,
    /// The announced length of the message being received.
    body_length: usize,
    ready: VecDeque<Bytes>,
    failed: Option<FrameError>,
}

impl Default for Deframer {
    fn default() -> Self {
        Deframer::new(MESSAGE_BYTES_MAX_DEFAULT)
    }
}

impl Deframer {
    /// A deframer that refuses messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Deframer {
        Deframer {
            limit,
            prefix: [0; FRAME_PREFIX_BYTES],
            prefix_len: 0,
            body: None,
            body_length: 0,
            ready: VecDeque::new(),
            failed: None,
        }
    }

    /// The message size limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held: completed messages not yet taken plus the partial message.
    pub fn buffered(&self) -> usize {
        self.ready.iter().map(Bytes::len).sum::<usize>()
            + self.prefix_len
            + self.body.as_ref().map_or(0, Vec::len)
    }

    /// Appends received bytes.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.failed.is_none() {
            match &mut self.body {
                None => {
                    let take = (FRAME_PREFIX_BYTES - self.prefix_len).min(chunk.len());
                    self.prefix[self.prefix_len..self.prefix_len + take]
                        .copy_from_slice(&chunk[..take]);
                    self.prefix_len += take;
                    chunk = &chunk[take..];
                    if self.prefix_len == FRAME_PREFIX_BYTES {
                        self.start_message();
                    }
                }
                Some(body) => {
                    let take = (self.body_length - body.len()).min(chunk.len());
                    body.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if body.len() == self.body_length {
                        self.complete_message();
                    }
                }
            }
        }
    }

    /// Appends a received chunk, taking each whole message inside it as a slice of it (no
    /// copy, no allocation); only a message cut across chunks is assembled in its own buffer,
    /// as [`push`](Deframer::push) does. Same messages and errors as `push`. A slice keeps its
    /// chunk (one HTTP/2 DATA frame, at most 16 MiB by the protocol and 64 KiB as VedDB sets
    /// it) alive while it is held.
    pub fn push_bytes(&mut self, chunk: &Bytes) {
        let mut at = 0;
        while self.failed.is_none() && self.prefix_len == 0 && self.body.is_none() {
            // Anything unusual (a flag, over the limit, cut short) goes the general way.
            let Some(length) = whole_message_length(&chunk[at..], self.limit) else {
                break;
            };
            let start = at + FRAME_PREFIX_BYTES;
            self.ready.push_back(chunk.slice(start..start + length));
            at = start + length;
        }
        self.push(&chunk[at..]);
    }

    /// Called with a full prefix: checks it and starts the body (or completes an empty message).
    fn start_message(&mut self) {
        let [flag, l0, l1, l2, l3] = self.prefix;
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        let error = match flag {
            0 => None,
            1 => Some(FrameError::Compressed),
            other => Some(FrameError::BadFlag(other)),
        };
        if let Some(error) = error {
            self.fail(error);
            return;
        }
        match usize::try_from(length) {
            Ok(length) if length <= self.limit => {
                // Room for what a prefix claims is taken as the bytes arrive: a peer that
                // sends only prefixes claiming large messages holds no more memory than it sent
                // (plus this first step).
                self.body = Some(Vec::with_capacity(
                    length.min(DEFRAMER_FIRST_CAPACITY_BYTES),
                ));
                self.body_length = length;
                if length == 0 {
                    self.complete_message();
                }
            }
            _ => self.fail(FrameError::TooLarge {
                length: u64::from(length),
                limit: self.limit,
            }),
        }
    }

    /// Stops the stream: the partial message is dropped and later input ignored.
    fn fail(&mut self, error: FrameError) {
        self.prefix_len = 0;
        self.body = None;
        self.failed = Some(error);
    }

    fn complete_message(&mut self) {
        if let Some(body) = self.body.take() {
            self.ready.push_back(Bytes::from(body));
        }
        self.prefix_len = 0;
    }

    /// The next complete message, `Ok(None)` when more bytes are needed, or the error that
    /// ended the stream (once every message completed before it was taken).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(message) = self.ready.pop_front() {
            return Ok(Some(message));
        }
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(None),
        }
    }

    /// To call at the end of the stream: [`FrameError::Truncated`] when it ended inside a
    /// message (or the error that stopped the stream earlier).
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.prefix_len > 0 || self.body.is_some() {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Headers

/// Percent-encodes a status message for the `grpc-message` header (grpc/grpc
/// doc/PROTOCOL-HTTP2.md): the UTF-8 bytes outside `0x20..=0x7E`, and `%`, become `%XX`
/// (upper-case hex).
pub fn percent_encode_message(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if (0x20..=0x7E).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    out
}

/// Decodes a `grpc-message` header value: `%XX` becomes the byte, anything else (a malformed
/// escape included) is kept as it is, and the bytes are read as UTF-8 (invalid sequences
/// become U+FFFD), as the protocol asks of receivers.
pub fn percent_decode_message(value: &[u8]) -> String {
    fn hex(digit: u8) -> Option<u8> {
        char::from(digit)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' && i + 2 < value.len() {
            if let (Some(high), Some(low)) = (hex(value[i + 1]), hex(value[i + 2])) {
                bytes.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        bytes.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parses a `grpc-timeout` header: 1 to 8 ASCII digits and a unit, `H` hours, `M` minutes,
/// `S` seconds, `m` milliseconds, `u` microseconds or `n` nanoseconds. `None` when malformed.
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (&unit, digits) = value.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits
        .iter()
        .fold(0_u64, |total, digit| total * 10 + u64::from(digit - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` header value for a duration: the finest unit whose amount fits
/// in 8 digits, rounded up so the deadline is never shorter than asked (saturating at
/// 99999999 hours).
pub fn grpc_timeout_value(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per_unit, unit) in units {
        let amount = nanos.div_ceil(per_unit);
        if amount <= MAX {
            return format!("{amount}{unit}");
        }
    }
    format!("{MAX}H")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SubscriberId;
    use proptest::prelude::*;

    fn b(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    fn enc<M: Message>(m: &M) -> Bytes {
        Bytes::from(m.encode_to_vec())
    }

    fn dec<M: Message + Default>(bytes: &[u8]) -> M {
        M::decode(bytes).expect("decodes")
    }

    #[test]
    fn codes_have_their_numbers_and_names() {
        for (number, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(code.as_i32(), number as i32);
            assert_eq!(Code::from_i32(number as i32), Some(code));
        }
        assert_eq!(Code::from_i32(17), None);
        assert_eq!(Code::from_i32(-1), None);
        assert_eq!(Code::NotFound.as_i32(), 5);
        assert_eq!(Code::FailedPrecondition.as_i32(), 9);
        assert_eq!(Code::Unauthenticated.as_i32(), 16);
        assert_eq!(Code::ResourceExhausted.to_string(), "RESOURCE_EXHAUSTED");
        assert_eq!(Status::not_found("x").to_string(), "NOT_FOUND: x");
        assert_eq!(Status::ok(), Status::new(Code::Ok, ""));
    }

    #[test]
    fn methods_come_from_their_paths() {
        for method in Method::ALL {
            assert_eq!(Method::from_path(method.path()), Some(method));
            let kinds = [
                method.is_unary(),
                method.is_server_streaming(),
                method.is_bidi(),
            ];
            assert_eq!(kinds.iter().filter(|k| **k).count(), 1, "{method}");
        }
        assert_eq!(Method::from_path("/veddb.v1.VedDb/Get"), Some(Method::Get));
        assert_eq!(
            Method::from_path("/veddb.v1.VedDb/MGet"),
            Some(Method::MGet)
        );
        assert_eq!(
            Method::from_path("/veddb.v1.VedDb/Snapshot"),
            Some(Method::Snapshot)
        );
        assert_eq!(
            Method::from_path("/grpc.health.v1.Health/Check"),
            Some(Method::HealthCheck)
        );
        assert_eq!(
            Method::from_path("/grpc.health.v1.Health/Watch"),
            Some(Method::HealthWatch)
        );
        for unknown in [
            "",
            "/",
            "/veddb.v1.VedDb/get",
            "/veddb.v1.VedDb/Exists",
            "/veddb.v1.VedDb/snapshot",
            "veddb.v1.VedDb/Get",
            "/veddb.v1.VedDb/Get/",
        ] {
            assert_eq!(Method::from_path(unknown), None, "{unknown:?}");
        }
        assert_eq!(Method::ALL.iter().filter(|m| m.is_unary()).count(), 15);
        assert!(Method::Snapshot.is_unary() && !Method::Snapshot.is_health());
        assert!(
            Method::Subscribe.is_server_streaming() && Method::HealthWatch.is_server_streaming()
        );
        assert!(Method::Batch.is_bidi());
        assert!(Method::HealthCheck.is_unary() && Method::HealthCheck.is_health());
        assert_eq!(Method::MSet.name(), "MSet");
        assert_eq!(Method::Snapshot.name(), "Snapshot");
        assert_eq!(Method::HealthCheck.name(), "Check");
    }

    #[test]
    fn every_unary_request_decodes() {
        let cases: Vec<(Method, Bytes, Request)> = vec![
            (Method::Ping, enc(&pb::PingRequest {}), Request::Ping),
            (
                Method::Get,
                enc(&pb::GetRequest { key: b("k") }),
                Request::Get { key: b("k") },
            ),
            (
                Method::Set,
                enc(&pb::SetRequest {
                    key: b("k"),
                    value: b("v"),
                    ttl_ms: 0,
                    condition: 0,
                    keep_ttl: false,
                }),
                Request::Set {
                    key: b("k"),
                    value: b("v"),
                    options: SetOptions::default(),
                },
            ),
            (
                Method::Set,
                enc(&pb::SetRequest {
                    key: b("k"),
                    value: b("v"),
                    ttl_ms: 1500,
                    condition: pb::SetCondition::IfAbsent as i32,
                    keep_ttl: false,
                }),
                Request::Set {
                    key: b("k"),
                    value: b("v"),
                    options: SetOptions {
                        ttl_ms: Some(1500),
                        condition: SetCondition::IfAbsent,
                        keep_ttl: false,
                    },
                },
            ),
            (
                Method::Set,
                enc(&pb::SetRequest {
                    key: b("k"),
                    value: Bytes::new(),
                    ttl_ms: 0,
                    condition: pb::SetCondition::IfPresent as i32,
                    keep_ttl: true,
                }),
                Request::Set {
                    key: b("k"),
                    value: Bytes::new(),
                    options: SetOptions {
                        ttl_ms: None,
                        condition: SetCondition::IfPresent,
                        keep_ttl: true,
                    },
                },
            ),
            (
                Method::Delete,
                enc(&pb::DeleteRequest { key: b("d") }),
                Request::Delete { key: b("d") },
            ),
            (
                Method::Cas,
                enc(&pb::CasRequest {
                    key: b("k"),
                    expected_version: 7,
                    value: b("v"),
                    ttl_ms: 0,
                }),
                Request::Cas {
                    key: b("k"),
                    expected_version: 7,
                    value: b("v"),
                    ttl_ms: None,
                },
            ),
            (
                Method::Cas,
                enc(&pb::CasRequest {
                    key: b("k"),
                    expected_version: 0,
                    value: b("v"),
                    ttl_ms: 10,
                }),
                Request::Cas {
                    key: b("k"),
                    expected_version: 0,
                    value: b("v"),
                    ttl_ms: Some(10),
                },
            ),
            (
                Method::Incr,
                enc(&pb::IncrRequest {
                    key: b("n"),
                    delta: -3,
                }),
                Request::Incr {
                    key: b("n"),
                    delta: -3,
                },
            ),
            (
                Method::Expire,
                enc(&pb::ExpireRequest {
                    key: b("k"),
                    ttl_ms: 0,
                    persist: false,
                }),
                Request::Expire {
                    key: b("k"),
                    ttl_ms: 0,
                },
            ),
            (
                Method::Expire,
                enc(&pb::ExpireRequest {
                    key: b("k"),
                    ttl_ms: 99,
                    persist: true,
                }),
                Request::Persist { key: b("k") },
            ),
            (
                Method::Ttl,
                enc(&pb::TtlRequest { key: b("t") }),
                Request::Ttl { key: b("t") },
            ),
            (
                Method::MGet,
                enc(&pb::MGetRequest {
                    keys: vec![b("a"), Bytes::new(), b("c")],
                }),
                Request::MGet {
                    keys: vec![b("a"), Bytes::new(), b("c")],
                },
            ),
            (
                Method::MSet,
                enc(&pb::MSetRequest {
                    pairs: vec![
                        pb::KeyValue {
                            key: b("a"),
                            value: b("1"),
                        },
                        pb::KeyValue {
                            key: b("b"),
                            value: b("2"),
                        },
                    ],
                }),
                Request::MSet {
                    pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
                },
            ),
            (
                Method::Scan,
                enc(&pb::ScanRequest {
                    cursor: b("c"),
                    prefix: b("p"),
                    count: 5,
                }),
                Request::Scan {
                    cursor: b("c"),
                    prefix: b("p"),
                    count: 5,
                },
            ),
            (
                Method::Publish,
                enc(&pb::PublishRequest {
                    topic: b("t"),
                    message: b("m"),
                }),
                Request::Publish {
                    topic: b("t"),
                    message: b("m"),
                },
            ),
            (Method::Info, enc(&pb::InfoRequest {}), Request::Info),
            (
                Method::Snapshot,
                enc(&pb::SnapshotRequest {}),
                Request::Snapshot,
            ),
        ];
        for (method, message, expected) in cases {
            assert_eq!(decode_unary(method, message), Ok(expected), "{method}");
        }
        // An empty message is every field's default.
        assert_eq!(
            decode_unary(Method::Get, Bytes::new()),
            Ok(Request::Get { key: Bytes::new() })
        );
        assert_eq!(
            decode_unary(Method::Snapshot, Bytes::new()),
            Ok(Request::Snapshot)
        );
        // Unknown fields (from a newer client) are skipped, as protobuf wants.
        assert_eq!(
            decode_unary(Method::Snapshot, Bytes::from_static(b"\x08\x01")),
            Ok(Request::Snapshot)
        );
        assert_eq!(request_key(&Request::Snapshot), Bytes::new());
    }

    #[test]
    fn bad_requests_are_invalid_argument() {
        let garbage = Bytes::from_static(b"\x0a\x05ab");
        let status = decode_unary(Method::Get, garbage.clone()).unwrap_err();
        assert_eq!(status.code, Code::InvalidArgument);
        assert!(
            status
                .message
                .starts_with("cannot decode veddb.v1.GetRequest: "),
            "{}",
            status.message
        );
        for method in Method::ALL
            .into_iter()
            .filter(|m| m.is_unary() && !m.is_health())
        {
            assert_eq!(
                decode_unary(method, garbage.clone()).unwrap_err().code,
                Code::InvalidArgument
            );
        }
        let bad_condition = enc(&pb::SetRequest {
            key: b("k"),
            condition: 3,
            ..Default::default()
        });
        let status = decode_unary(Method::Set, bad_condition.clone()).unwrap_err();
        assert_eq!(status.code, Code::InvalidArgument);
        assert!(
            status.message.contains("SetCondition value 3"),
            "{}",
            status.message
        );
        let in_batch = enc(&pb::BatchRequest {
            op: Some(batch_request::Op::Set(pb::SetRequest {
                condition: -1,
                ..Default::default()
            })),
        });
        assert_eq!(
            decode_batch(in_batch).unwrap_err().code,
            Code::InvalidArgument
        );
        for method in [
            Method::Batch,
            Method::Subscribe,
            Method::HealthCheck,
            Method::HealthWatch,
        ] {
            assert_eq!(
                decode_unary(method, Bytes::new()).unwrap_err().code,
                Code::Internal
            );
        }
    }

    #[test]
    fn unary_responses_encode() {
        let ok = |method, response| encode_unary(method, b"k", response).expect("encodes");
        assert_eq!(
            dec::<pb::PingResponse>(&ok(Method::Ping, Response::Pong)),
            pb::PingResponse {}
        );
        assert_eq!(
            dec::<pb::GetResponse>(&ok(
                Method::Get,
                Response::Value {
                    value: b("v"),
                    version: 3
                }
            )),
            pb::GetResponse {
                value: b("v"),
                version: 3
            }
        );
        assert_eq!(
            dec::<pb::SetResponse>(&ok(Method::Set, Response::Stored { version: 4 })),
            pb::SetResponse {
                stored: true,
                version: 4
            }
        );
        assert_eq!(
            dec::<pb::SetResponse>(&ok(Method::Set, Response::NotStored)),
            pb::SetResponse {
                stored: false,
                version: 0
            }
        );
        assert_eq!(
            dec::<pb::DeleteResponse>(&ok(Method::Delete, Response::Bool(true))),
            pb::DeleteResponse { existed: true }
        );
        assert_eq!(
            dec::<pb::CasResponse>(&ok(Method::Cas, Response::Stored { version: 9 })),
            pb::CasResponse { version: 9 }
        );
        assert_eq!(
            dec::<pb::IncrResponse>(&ok(
                Method::Incr,
                Response::Integer {
                    value: -5,
                    version: 2
                }
            )),
            pb::IncrResponse {
                value: -5,
                version: 2
            }
        );
        assert_eq!(
            dec::<pb::ExpireResponse>(&ok(Method::Expire, Response::Bool(false))),
            pb::ExpireResponse { applied: false }
        );
        let ttl = |t| dec::<pb::TtlResponse>(&ok(Method::Ttl, Response::Ttl(t)));
        assert_eq!(
            ttl(Ttl::Missing),
            pb::TtlResponse {
                exists: false,
                persistent: false,
                remaining_ms: 0
            }
        );
        assert_eq!(
            ttl(Ttl::Persistent),
            pb::TtlResponse {
                exists: true,
                persistent: true,
                remaining_ms: 0
            }
        );
        assert_eq!(
            ttl(Ttl::Remaining(1234)),
            pb::TtlResponse {
                exists: true,
                persistent: false,
                remaining_ms: 1234
            }
        );
        assert_eq!(
            dec::<pb::MGetResponse>(&ok(
                Method::MGet,
                Response::Values(vec![Some((b("x"), 1)), None])
            )),
            pb::MGetResponse {
                values: vec![
                    pb::MaybeValue {
                        found: true,
                        value: b("x"),
                        version: 1
                    },
                    pb::MaybeValue {
                        found: false,
                        value: Bytes::new(),
                        version: 0
                    },
                ]
            }
        );
        assert_eq!(
            dec::<pb::MSetResponse>(&ok(Method::MSet, Response::Ok)),
            pb::MSetResponse {}
        );
        let snapshot = ok(Method::Snapshot, Response::Ok);
        assert!(snapshot.is_empty(), "an empty message encodes to no bytes");
        assert_eq!(
            dec::<pb::SnapshotResponse>(&snapshot),
            pb::SnapshotResponse {}
        );
        assert_eq!(
            dec::<pb::ScanResponse>(&ok(
                Method::Scan,
                Response::Keys {
                    keys: vec![b("a"), b("b")],
                    cursor: b("b")
                }
            )),
            pb::ScanResponse {
                keys: vec![b("a"), b("b")],
                cursor: b("b")
            }
        );
        assert_eq!(
            dec::<pb::PublishResponse>(&ok(Method::Publish, Response::Published { receivers: 3 })),
            pb::PublishResponse { receivers: 3 }
        );
        let stats = ShardStats {
            shard: 1,
            ops: 2,
            hits: 3,
            misses: 4,
            keys: 5,
            memory_bytes_used: 6,
            memory_bytes_limit: 7,
            expired_keys: 8,
            evicted_keys: 9,
            out_of_memory_errors: 10,
            topics: 11,
            subscribers: 12,
            messages_published: 13,
            messages_delivered: 14,
            messages_dropped: 15,
            forwarded_in: 16,
        };
        let info = dec::<pb::InfoResponse>(&ok(
            Method::Info,
            Response::Info(Info {
                shards: vec![ShardStats::default(), stats],
            }),
        ));
        assert_eq!(
            info.shards,
            vec![
                pb::ShardInfo::default(),
                pb::ShardInfo {
                    shard: 1,
                    ops: 2,
                    hits: 3,
                    misses: 4,
                    keys: 5,
                    memory_bytes_used: 6,
                    memory_bytes_limit: 7,
                    expired_keys: 8,
                    evicted_keys: 9,
                    out_of_memory_errors: 10,
                    topics: 11,
                    subscribers: 12,
                    messages_published: 13,
                    messages_delivered: 14,
                    messages_dropped: 15,
                    forwarded_in: 16,
                }
            ]
        );
    }

    #[test]
    fn failures_map_to_statuses() {
        let status =
            encode_unary(Method::Get, "ключ ☺".as_bytes(), Response::NotFound).unwrap_err();
        assert_eq!(status, Status::not_found("key not found: ключ ☺"));
        let long = "é".repeat(300);
        let status = encode_unary(Method::Get, long.as_bytes(), Response::NotFound).unwrap_err();
        assert_eq!(
            status.message,
            format!("key not found: {}", "é".repeat(200))
        );
        let status = encode_unary(Method::Cas, b"a\xffb", Response::NotFound).unwrap_err();
        assert_eq!(status.message, "key not found: a\u{FFFD}b");
        let status =
            encode_unary(Method::Cas, b"k", Response::VersionMismatch { current: 42 }).unwrap_err();
        assert_eq!(
            status,
            Status::failed_precondition("version mismatch: the current version is 42")
        );

        let cases = [
            (
                Error::OutOfMemory {
                    needed_bytes: 10,
                    limit_bytes: 5,
                },
                Code::ResourceExhausted,
            ),
            (
                Error::KeyTooLarge {
                    length: 70_000,
                    limit: 65_536,
                },
                Code::ResourceExhausted,
            ),
            (
                Error::KeyTooLarge {
                    length: 0,
                    limit: 65_536,
                },
                Code::InvalidArgument,
            ),
            (
                Error::ValueTooLarge {
                    length: 9,
                    limit: 8,
                },
                Code::ResourceExhausted,
            ),
            (
                Error::TooManySubscribers { limit: 1 },
                Code::ResourceExhausted,
            ),
            (
                Error::InvalidArgument("count".into()),
                Code::InvalidArgument,
            ),
            (Error::NotAnInteger, Code::InvalidArgument),
            (Error::Overflow, Code::InvalidArgument),
            (Error::UnknownSubscriber(SubscriberId(7)), Code::NotFound),
            (Error::ShuttingDown, Code::Unavailable),
            (Error::Busy("log buffer full".into()), Code::Unavailable),
            (Error::PersistenceOff, Code::FailedPrecondition),
            (Error::Storage("fsync failed".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let expected = Status::new(code, error.to_string());
            assert_eq!(status_of_error(&error), expected);
            assert_eq!(
                encode_unary(Method::Incr, b"k", Response::Error(error.clone())),
                Err(expected.clone())
            );
            let batch =
                dec::<pb::BatchResponse>(&encode_batch(Method::Incr, b"k", Response::Error(error)));
            assert_eq!(batch.op, None);
            let batch_status = batch.status.expect("status");
            assert_eq!(
                (batch_status.code, batch_status.message),
                (code.as_i32(), expected.message)
            );
        }

        // SNAPSHOT's own failures.
        let off = encode_unary(
            Method::Snapshot,
            b"",
            Response::Error(Error::PersistenceOff),
        )
        .unwrap_err();
        assert_eq!(off.code, Code::FailedPrecondition);
        assert!(off.message.contains("--data-dir"), "{}", off.message);
        let storage = encode_unary(
            Method::Snapshot,
            b"",
            Response::Error(Error::Storage("cannot sync shard-0.snap".into())),
        )
        .unwrap_err();
        assert_eq!(storage.code, Code::Internal);
        assert!(
            storage.message.contains("shard-0.snap"),
            "{}",
            storage.message
        );
        let busy = encode_unary(
            Method::Snapshot,
            b"",
            Response::Error(Error::Busy("a snapshot is being written".into())),
        )
        .unwrap_err();
        assert_eq!(busy.code, Code::Unavailable);

        // Answers that do not fit the method.
        for (method, response) in [
            (Method::Get, Response::Pong),
            (Method::Cas, Response::NotStored),
            (Method::Delete, Response::Ok),
            (
                Method::Ping,
                Response::Subscribed {
                    subscriber: SubscriberId(1),
                },
            ),
            (Method::Batch, Response::Ok),
            (Method::Snapshot, Response::Pong),
            (Method::Snapshot, Response::NotStored),
        ] {
            assert_eq!(
                encode_unary(method, b"k", response).unwrap_err().code,
                Code::Internal
            );
        }
    }

    #[test]
    fn framed_encodings_equal_encode_then_frame() {
        let framed = |message: Vec<u8>| {
            let mut out = Vec::new();
            frame(&message, &mut out);
            out
        };
        let answers = [
            (
                Method::Get,
                Response::Value {
                    value: b("v"),
                    version: 7,
                },
            ),
            (Method::Get, Response::NotFound),
            (Method::Set, Response::Stored { version: 3 }),
            (Method::Ping, Response::Pong),
            (
                Method::MGet,
                Response::Values(vec![None, Some((b("x"), 1))]),
            ),
            (Method::Snapshot, Response::Ok),
            (
                Method::Get,
                Response::Error(Error::OutOfMemory {
                    needed_bytes: 9,
                    limit_bytes: 8,
                }),
            ),
            (Method::Incr, Response::Pong),
        ];
        let mut batch = bytes::BytesMut::new();
        let mut expected = Vec::new();
        for (method, response) in answers {
            let unary = encode_unary(method, b"key", response.clone()).map(framed);
            assert_eq!(
                encode_unary_framed(method, b"key", response.clone(), usize::MAX),
                unary
            );
            expected.extend(framed(encode_batch(method, b"key", response.clone())));
            encode_batch_framed(method, b"key", response, &mut batch);
        }
        let error = Status::invalid_argument("no op");
        expected.extend(framed(encode_batch_error(&error)));
        encode_batch_error_framed(&error, &mut batch);
        assert_eq!(&batch[..], &expected[..]);
        // Over the limit: RESOURCE_EXHAUSTED instead of the message.
        let big = Response::Value {
            value: Bytes::from(vec![0; 100]),
            version: 1,
        };
        let refused = encode_unary_framed(Method::Get, b"k", big, 50).unwrap_err();
        assert_eq!(refused.code, Code::ResourceExhausted);
    }

    #[test]
    fn batch_round_trips() {
        let ops: Vec<(
            batch_request::Op,
            Method,
            Request,
            Response,
            batch_response::Op,
        )> = vec![
            (
                batch_request::Op::Ping(pb::PingRequest {}),
                Method::Ping,
                Request::Ping,
                Response::Pong,
                batch_response::Op::Ping(pb::PingResponse {}),
            ),
            (
                batch_request::Op::Get(pb::GetRequest { key: b("k") }),
                Method::Get,
                Request::Get { key: b("k") },
                Response::Value {
                    value: b("v"),
                    version: 1,
                },
                batch_response::Op::Get(pb::GetResponse {
                    value: b("v"),
                    version: 1,
                }),
            ),
            (
                batch_request::Op::Set(pb::SetRequest {
                    key: b("k"),
                    value: b("v"),
                    ttl_ms: 5,
                    condition: 1,
                    keep_ttl: false,
                }),
                Method::Set,
                Request::Set {
                    key: b("k"),
                    value: b("v"),
                    options: SetOptions {
                        ttl_ms: Some(5),
                        condition: SetCondition::IfAbsent,
                        keep_ttl: false,
                    },
                },
                Response::NotStored,
                batch_response::Op::Set(pb::SetResponse {
                    stored: false,
                    version: 0,
                }),
            ),
            (
                batch_request::Op::Delete(pb::DeleteRequest { key: b("k") }),
                Method::Delete,
                Request::Delete { key: b("k") },
                Response::Bool(true),
                batch_response::Op::Delete(pb::DeleteResponse { existed: true }),
            ),
            (
                batch_request::Op::Cas(pb::CasRequest {
                    key: b("k"),
                    expected_version: 2,
                    value: b("v"),
                    ttl_ms: 0,
                }),
                Method::Cas,
                Request::Cas {
                    key: b("k"),
                    expected_version: 2,
                    value: b("v"),
                    ttl_ms: None,
                },
                Response::Stored { version: 3 },
                batch_response::Op::Cas(pb::CasResponse { version: 3 }),
            ),
            (
                batch_request::Op::Incr(pb::IncrRequest {
                    key: b("n"),
                    delta: 2,
                }),
                Method::Incr,
                Request::Incr {
                    key: b("n"),
                    delta: 2,
                },
                Response::Integer {
                    value: 2,
                    version: 1,
                },
                batch_response::Op::Incr(pb::IncrResponse {
                    value: 2,
                    version: 1,
                }),
            ),
            (
                batch_request::Op::Expire(pb::ExpireRequest {
                    key: b("k"),
                    ttl_ms: 0,
                    persist: true,
                }),
                Method::Expire,
                Request::Persist { key: b("k") },
                Response::Bool(true),
                batch_response::Op::Expire(pb::ExpireResponse { applied: true }),
            ),
            (
                batch_request::Op::Ttl(pb::TtlRequest { key: b("k") }),
                Method::Ttl,
                Request::Ttl { key: b("k") },
                Response::Ttl(Ttl::Remaining(7)),
                batch_response::Op::Ttl(pb::TtlResponse {
                    exists: true,
                    persistent: false,
                    remaining_ms: 7,
                }),
            ),
            (
                batch_request::Op::Mget(pb::MGetRequest { keys: vec![b("a")] }),
                Method::MGet,
                Request::MGet { keys: vec![b("a")] },
                Response::Values(vec![None]),
                batch_response::Op::Mget(pb::MGetResponse {
                    values: vec![pb::MaybeValue::default()],
                }),
            ),
            (
                batch_request::Op::Mset(pb::MSetRequest {
                    pairs: vec![pb::KeyValue {
                        key: b("a"),
                        value: b("1"),
                    }],
                }),
                Method::MSet,
                Request::MSet {
                    pairs: vec![(b("a"), b("1"))],
                },
                Response::Ok,
                batch_response::Op::Mset(pb::MSetResponse {}),
            ),
            (
                batch_request::Op::Scan(pb::ScanRequest {
                    cursor: Bytes::new(),
                    prefix: b("p"),
                    count: 0,
                }),
                Method::Scan,
                Request::Scan {
                    cursor: Bytes::new(),
                    prefix: b("p"),
                    count: 0,
                },
                Response::Keys {
                    keys: vec![b("pa")],
                    cursor: Bytes::new(),
                },
                batch_response::Op::Scan(pb::ScanResponse {
                    keys: vec![b("pa")],
                    cursor: Bytes::new(),
                }),
            ),
            (
                batch_request::Op::Publish(pb::PublishRequest {
                    topic: b("t"),
                    message: b("m"),
                }),
                Method::Publish,
                Request::Publish {
                    topic: b("t"),
                    message: b("m"),
                },
                Response::Published { receivers: 0 },
                batch_response::Op::Publish(pb::PublishResponse { receivers: 0 }),
            ),
        ];
        for (op, method, request, response, answer) in ops {
            let message = enc(&pb::BatchRequest { op: Some(op) });
            assert_eq!(decode_batch(message), Ok((method, request.clone())));
            let key = request_key(&request);
            let batch = dec::<pb::BatchResponse>(&encode_batch(method, &key, response));
            assert_eq!(
                batch,
                pb::BatchResponse {
                    status: Some(pb::BatchStatus {
                        code: 0,
                        message: String::new()
                    }),
                    op: Some(answer),
                }
            );
        }

        let status = decode_batch(enc(&pb::BatchRequest { op: None })).unwrap_err();
        assert_eq!(status.code, Code::InvalidArgument);
        assert_eq!(
            decode_batch(Bytes::from_static(b"\xff")).unwrap_err().code,
            Code::InvalidArgument
        );

        let not_found =
            dec::<pb::BatchResponse>(&encode_batch(Method::Get, b"gone", Response::NotFound));
        assert_eq!(
            not_found,
            pb::BatchResponse {
                status: Some(pb::BatchStatus {
                    code: 5,
                    message: "key not found: gone".into()
                }),
                op: None,
            }
        );
        let mismatch = dec::<pb::BatchResponse>(&encode_batch(
            Method::Cas,
            b"k",
            Response::VersionMismatch { current: 8 },
        ));
        assert_eq!(mismatch.status.map(|s| s.code), Some(9));
        let info = dec::<pb::BatchResponse>(&encode_batch(
            Method::Info,
            b"",
            Response::Info(Info::default()),
        ));
        assert_eq!(info.status.map(|s| s.code), Some(Code::Internal.as_i32()));
        // SNAPSHOT is not a batch op either.
        let snapshot = dec::<pb::BatchResponse>(&encode_batch(Method::Snapshot, b"", Response::Ok));
        assert_eq!(snapshot.op, None);
        assert_eq!(
            snapshot.status.map(|s| (s.code, s.message)),
            Some((
                Code::Internal.as_i32(),
                "/veddb.v1.VedDb/Snapshot cannot be part of a batch".into()
            ))
        );
        let only_status =
            dec::<pb::BatchResponse>(&encode_batch_error(&Status::invalid_argument("bad")));
        assert_eq!(
            only_status.status.map(|s| (s.code, s.message)),
            Some((3, "bad".into()))
        );
    }

    #[test]
    fn request_keys() {
        assert_eq!(request_key(&Request::Get { key: b("k") }), b("k"));
        assert_eq!(
            request_key(&Request::Publish {
                topic: b("t"),
                message: b("m")
            }),
            b("t")
        );
        assert_eq!(request_key(&Request::Ping), Bytes::new());
    }

    #[test]
    fn subscribe_and_health_messages() {
        assert_eq!(
            decode_subscribe(enc(&pb::SubscribeRequest { topic: b("news") })),
            Ok(b("news"))
        );
        assert_eq!(
            decode_subscribe(b("\x0a\x09")).unwrap_err().code,
            Code::InvalidArgument
        );
        assert_eq!(
            dec::<pb::SubscribeResponse>(&encode_subscribed()),
            pb::SubscribeResponse {
                subscribed: true,
                message: Bytes::new(),
                dropped: 0
            }
        );
        assert_eq!(
            dec::<pb::SubscribeResponse>(&encode_message(b("hello"), 3)),
            pb::SubscribeResponse {
                subscribed: false,
                message: b("hello"),
                dropped: 3
            }
        );

        let request = HealthCheckRequest {
            service: "veddb.v1.VedDb".into(),
        };
        assert_eq!(
            decode_health(enc(&request)),
            Ok("veddb.v1.VedDb".to_string())
        );
        assert_eq!(decode_health(Bytes::new()), Ok(String::new()));
        // Field 1 holding invalid UTF-8.
        assert_eq!(
            decode_health(Bytes::from_static(b"\x0a\x01\xff"))
                .unwrap_err()
                .code,
            Code::InvalidArgument
        );
        assert_eq!(
            dec::<HealthCheckResponse>(&encode_health(true)).status,
            ServingStatus::Serving as i32
        );
        assert_eq!(dec::<HealthCheckResponse>(&encode_health(false)).status, 2);
        assert_eq!(
            dec::<HealthCheckResponse>(&encode_health_state(HealthState::ServiceUnknown)).status,
            3
        );
        assert!(health_service_known(""));
        assert!(health_service_known("veddb.v1.VedDb"));
        assert!(!health_service_known("veddb.v1.Other"));
        assert!(!health_service_known("grpc.health.v1.Health"));
    }

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for message in messages {
            frame(message, &mut out);
        }
        out
    }

    fn drain(deframer: &mut Deframer) -> Result<Vec<Bytes>, FrameError> {
        let mut out = Vec::new();
        while let Some(message) = deframer.next()? {
            out.push(message);
        }
        Ok(out)
    }

    #[test]
    fn frames_have_a_five_byte_prefix() {
        let mut out = vec![9];
        frame(b"abc", &mut out);
        assert_eq!(out, [9, 0, 0, 0, 0, 3, b'a', b'b', b'c']);
        let mut out = Vec::new();
        frame(&[7; 300], &mut out);
        assert_eq!(&out[..5], &[0, 0, 0, 1, 44]);
        assert_eq!(out.len(), 305);
    }

    #[test]
    fn whole_message_takes_exactly_one_message_and_nothing_else() {
        let mut framed = Vec::new();
        frame(b"hello", &mut framed);
        let framed = Bytes::from(framed);
        assert_eq!(whole_message(&framed, 5).as_deref(), Some(&b"hello"[..]));
        // Over the limit, a partial message, two messages, compressed: left to the Deframer.
        assert_eq!(whole_message(&framed, 4), None);
        assert_eq!(whole_message(&framed.slice(..framed.len() - 1), 100), None);
        assert_eq!(whole_message(&framed.slice(..3), 100), None);
        let mut two = framed.to_vec();
        two.extend_from_slice(&framed);
        assert_eq!(whole_message(&Bytes::from(two), 100), None);
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert_eq!(whole_message(&Bytes::from(compressed), 100), None);
        let mut empty = Vec::new();
        frame(b"", &mut empty);
        assert_eq!(
            whole_message(&Bytes::from(empty), 0).as_deref(),
            Some(&b""[..])
        );
    }

    #[test]
    fn deframer_reads_whole_and_byte_by_byte() {
        let messages: [&[u8]; 4] = [b"first", b"", &[0xAB; 1000], b"last"];
        let stream = framed(&messages);
        let expected: Vec<Bytes> = messages.iter().map(|m| Bytes::copy_from_slice(m)).collect();

        let mut whole = Deframer::default();
        whole.push(&stream);
        assert_eq!(drain(&mut whole), Ok(expected.clone()));
        assert_eq!(whole.finish(), Ok(()));
        assert_eq!(whole.buffered(), 0);

        let mut bytewise = Deframer::new(1000);
        let mut got = Vec::new();
        for byte in &stream {
            bytewise.push(std::slice::from_ref(byte));
            got.extend(drain(&mut bytewise).expect("no error"));
        }
        assert_eq!(got, expected);
        assert_eq!(bytewise.finish(), Ok(()));
        assert_eq!(bytewise.next(), Ok(None));
    }

    #[test]
    fn deframer_rejects_oversize_compressed_and_bad_flags() {
        // The prefix alone is enough to refuse a message over the limit; nothing is allocated.
        let mut deframer = Deframer::new(10);
        deframer.push(&[0, 0xFF, 0xFF, 0xFF, 0xFF]);
        let too_large = FrameError::TooLarge {
            length: u64::from(u32::MAX),
            limit: 10,
        };
        assert_eq!(deframer.next(), Err(too_large.clone()));
        assert!(deframer.body.is_none());
        deframer.push(&[0; 100]);
        assert_eq!(deframer.buffered(), 0);
        assert_eq!(deframer.next(), Err(too_large.clone()));
        assert_eq!(deframer.finish(), Err(too_large));
        assert_eq!(
            FrameError::TooLarge {
                length: 11,
                limit: 10
            }
            .status()
            .code,
            Code::ResourceExhausted
        );

        // Exactly the limit is fine, one more is not; messages before the error still come out.
        let mut deframer = Deframer::new(10);
        let mut stream = framed(&[&[1; 10]]);
        stream.extend_from_slice(&[0, 0, 0, 0, 11]);
        deframer.push(&stream);
        assert_eq!(deframer.next(), Ok(Some(Bytes::from(vec![1; 10]))));
        assert_eq!(
            deframer.next(),
            Err(FrameError::TooLarge {
                length: 11,
                limit: 10
            })
        );

        // A body buffer is allocated at the announced length when that is small.
        let mut deframer = Deframer::new(MESSAGE_BYTES_MAX_DEFAULT);
        deframer.push(&[0, 0, 1, 0, 0, 1, 2, 3]);
        assert_eq!(deframer.body.as_ref().map(Vec::capacity), Some(65_536));
        assert_eq!(deframer.next(), Ok(None));
        assert_eq!(deframer.buffered(), 8);

        // A prefix claiming 4 MiB reserves at most DEFRAMER_FIRST_CAPACITY_BYTES up front.
        let mut deframer = Deframer::new(MESSAGE_BYTES_MAX_DEFAULT);
        deframer.push(&[0, 0, 0x40, 0, 0]);
        let reserved = deframer.body.as_ref().map_or(0, Vec::capacity);
        assert!(reserved <= DEFRAMER_FIRST_CAPACITY_BYTES, "{reserved}");

        // A message longer than that first step still arrives whole, cut anywhere, both ways.
        let message: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut framed = Vec::new();
        frame(&message, &mut framed);
        frame(b"next", &mut framed);
        for chunk_bytes in [1, 7_000, 65_536, 65_541, 200_000] {
            let mut copied = Deframer::new(MESSAGE_BYTES_MAX_DEFAULT);
            let mut sliced = Deframer::new(MESSAGE_BYTES_MAX_DEFAULT);
            for chunk in framed.chunks(chunk_bytes) {
                copied.push(chunk);
                sliced.push_bytes(&Bytes::copy_from_slice(chunk));
            }
            for deframer in [&mut copied, &mut sliced] {
                let messages = drain(deframer).unwrap();
                assert_eq!(messages.len(), 2, "chunks of {chunk_bytes}");
                assert_eq!(&messages[0][..], &message[..], "chunks of {chunk_bytes}");
                assert_eq!(&messages[1][..], b"next");
            }
        }

        let mut deframer = Deframer::default();
        deframer.push(&[1, 0, 0, 0, 1, 0]);
        assert_eq!(deframer.next(), Err(FrameError::Compressed));
        assert_eq!(FrameError::Compressed.status().code, Code::Unimplemented);

        let mut deframer = Deframer::default();
        deframer.push(&[2, 0, 0, 0, 0]);
        assert_eq!(deframer.next(), Err(FrameError::BadFlag(2)));
        assert_eq!(Status::from(FrameError::BadFlag(2)).code, Code::Internal);
    }

    #[test]
    fn deframer_detects_truncation() {
        let mut deframer = Deframer::default();
        assert_eq!(deframer.finish(), Ok(()));
        deframer.push(&[0, 0]);
        assert_eq!(deframer.next(), Ok(None));
        assert_eq!(deframer.finish(), Err(FrameError::Truncated));

        let mut deframer = Deframer::default();
        deframer.push(&[0, 0, 0, 0, 4, b'a', b'b']);
        assert_eq!(deframer.next(), Ok(None));
        assert_eq!(deframer.finish(), Err(FrameError::Truncated));
        deframer.push(b"cd");
        assert_eq!(deframer.next(), Ok(Some(b("abcd"))));
        assert_eq!(deframer.finish(), Ok(()));
        assert_eq!(FrameError::Truncated.status().code, Code::Internal);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        let text = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        let encoded = percent_encode_message(text);
        assert_eq!(
            encoded,
            "%09%0Atest with whitespace%0D%0Aand Unicode BMP %E2%98%BA and non-BMP %F0%9F%98%88%09%0A"
        );
        assert_eq!(percent_decode_message(encoded.as_bytes()), text);
        assert_eq!(percent_encode_message("100% ~ok"), "100%25 ~ok");
        assert_eq!(percent_encode_message("\x7f"), "%7F");
        assert_eq!(Status::not_found("a\nb").encoded_message(), "a%0Ab");
        // Receivers keep malformed escapes as they are.
        assert_eq!(percent_decode_message(b"50% off %zz %4"), "50% off %zz %4");
        assert_eq!(percent_decode_message(b"%e2%98%ba"), "☺");
        assert_eq!(percent_decode_message(b"%FF"), "\u{FFFD}");
    }

    #[test]
    fn grpc_timeout_parses() {
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(grpc_timeout("0m"), Some(Duration::ZERO));
        assert_eq!(
            grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(grpc_timeout("00000001S"), Some(Duration::from_secs(1)));
        for bad in [
            "",
            "S",
            "m",
            "123456789S",
            "10",
            "10s",
            "10 S",
            " 10S",
            "-1S",
            "+1S",
            "1.5S",
            "10SS",
            "１S",
            "10Ś",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(grpc_timeout_value(Duration::from_millis(99)), "99000000n");
        assert_eq!(grpc_timeout_value(Duration::from_millis(100)), "100000u");
        assert_eq!(grpc_timeout_value(Duration::from_secs(1)), "1000000u");
        assert_eq!(grpc_timeout_value(Duration::from_secs(3600)), "3600000m");
        assert_eq!(
            grpc_timeout_value(Duration::from_nanos(100_000_001)),
            "100001u"
        );
        assert_eq!(grpc_timeout_value(Duration::MAX), "99999999H");
        for duration in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(86_400 * 365),
        ] {
            let parsed = grpc_timeout(&grpc_timeout_value(duration)).expect("parses");
            assert!(parsed >= duration);
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(message in proptest::collection::vec(any::<u8>(), 0..256)) {
            let message = Bytes::from(message);
            for method in Method::ALL {
                let _ = decode_unary(method, message.clone());
            }
            let _ = decode_batch(message.clone());
            let _ = decode_subscribe(message.clone());
            let _ = decode_health(message.clone());
            let _ = percent_decode_message(&message);
        }

        #[test]
        fn deframer_never_panics_and_chunking_does_not_matter(
            stream in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(0_usize..512, 0..16),
            limit in 0_usize..64,
            by_bytes in any::<bool>(),
        ) {
            let mut whole = Deframer::new(limit);
            whole.push(&stream);
            let whole_result = drain(&mut whole);
            let whole_finish = whole.finish();

            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= stream.len()).collect();
            cuts.sort_unstable();
            let mut pieces = Deframer::new(limit);
            let mut got = Vec::new();
            let mut error = None;
            let mut start = 0;
            for end in cuts.into_iter().chain([stream.len()]) {
                if by_bytes {
                    pieces.push_bytes(&Bytes::copy_from_slice(&stream[start..end]));
                } else {
                    pieces.push(&stream[start..end]);
                }
                start = end;
                loop {
                    match pieces.next() {
                        Ok(Some(message)) => {
                            prop_assert!(message.len() <= limit);
                            got.push(message);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                if error.is_some() {
                    break;
                }
            }
            match (whole_result, error) {
                (Ok(all), None) => prop_assert_eq!(all, got),
                (Err(a), Some(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "whole {:?} vs pieces {:?}", a, b),
            }
            prop_assert_eq!(whole_finish, pieces.finish());
        }

        #[test]
        fn framed_messages_come_back(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..8),
            chunk in 1_usize..400,
            by_bytes in any::<bool>(),
        ) {
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let stream = framed(&refs);
            let mut deframer = Deframer::new(100);
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                if by_bytes {
                    deframer.push_bytes(&Bytes::copy_from_slice(piece));
                } else {
                    deframer.push(piece);
                }
                got.extend(drain(&mut deframer).expect("no error"));
            }
            prop_assert_eq!(deframer.finish(), Ok(()));
            let got: Vec<Vec<u8>> = got.into_iter().map(|m| m.to_vec()).collect();
            prop_assert_eq!(got, messages);
        }

        #[test]
        fn percent_encoding_round_trips(text in any::<String>()) {
            let encoded = percent_encode_message(&text);
            prop_assert!(encoded.bytes().all(|b| (0x20..=0x7E).contains(&b)));
            prop_assert_eq!(percent_decode_message(encoded.as_bytes()), text);
        }

        #[test]
        fn grpc_timeout_never_panics(value in any::<String>()) {
            let _ = grpc_timeout(&value);
        }

        #[test]
        fn batch_encoding_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..300),
            method_index in 0_usize..Method::ALL.len(),
        ) {
            let method = Method::ALL[method_index];
            for response in [Response::NotFound, Response::Pong, Response::Ok, Response::Bool(true)] {
                let _ = encode_unary(method, &key, response.clone());
                let batch = dec::<pb::BatchResponse>(&encode_batch(method, &key, response));
                prop_assert!(batch.status.is_some());
            }
        }
    }
}
