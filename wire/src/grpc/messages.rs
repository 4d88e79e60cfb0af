//! The mapping between the protobuf messages of [`crate::proto`] and [`Request`] / [`Response`]:
//! requests decoded, answers encoded (unary, `Batch`, `Subscribe`, health).

use super::*;

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

/// Decodes the request message of one of the 15 unary VedDb methods into a [`Request`].
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
        Method::Exists => Request::Exists {
            key: decode::<pb::ExistsRequest>(message, "veddb.v1.ExistsRequest")?.key,
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
        Some(batch_request::Op::Exists(m)) => (Method::Exists, Request::Exists { key: m.key }),
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
    Exists(pb::ExistsResponse),
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
            Reply::Exists(m) => frame_message(m, out),
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
            Reply::Exists(m) => m.encoded_len(),
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
            Reply::Exists(m) => m.encode_to_vec(),
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
            Reply::Exists(m) => batch_response::Op::Exists(m),
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
        (_, Response::Error(error)) => return Err(error.status()),
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
        (Method::Exists, Response::Bool(exists)) => Reply::Exists(pb::ExistsResponse { exists }),
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
        return Err(response_too_large(length, limit));
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
/// with no intermediate buffer. An answer longer than `limit` bytes is replaced by its
/// RESOURCE_EXHAUSTED status ([`response_too_large`]): that op's error alone, the stream goes on.
pub fn encode_batch_framed(
    method: Method,
    request_key: &[u8],
    response: Response,
    limit: usize,
    out: &mut impl BufMut,
) {
    let result = reply(method, request_key, response).and_then(|reply| {
        reply
            .into_batch_op()
            .ok_or_else(|| Status::internal(format!("{method} cannot be part of a batch")))
    });
    let message = batch_response(result);
    let length = message.encoded_len();
    if length > limit {
        frame_message(&batch_response(Err(response_too_large(length, limit))), out);
    } else {
        frame_message_of_length(&message, length, out);
    }
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
