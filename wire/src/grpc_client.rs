//! The client side of the gRPC mapping: engine requests to `veddb.v1` messages and answers back.
//! A client sends every key-value request as one `BatchRequest` on a `Batch` stream (pipelined,
//! in order), so one mapping serves single calls and batches alike.

use bytes::Bytes;
use prost::Message;

use crate::grpc::{Code, Status};
use crate::proto::v1 as pb;
use crate::{Error, Info, Request, Response, SetCondition, ShardStats, Ttl};

/// The engine's error for a request that `veddb.v1` cannot carry as it is, which a client
/// answers itself instead of sending it: a SET or CAS with a TTL of 0 ms. The engine refuses
/// that TTL ([`Error::ttl_zero`]), but on the wire `ttl_ms = 0` means "no TTL" (SET) or "keep
/// the expiry" (CAS), so sent as it is the request would succeed. `None` for every other
/// request (EXPIRE's `ttl_ms = 0` means "expire now" on the wire and in the engine alike).
pub fn refusal_before_sending(request: &Request) -> Option<Error> {
    match request {
        Request::Set { options, .. } if options.ttl_ms == Some(0) => Some(Error::ttl_zero()),
        Request::Cas {
            ttl_ms: Some(0), ..
        } => Some(Error::ttl_zero()),
        _ => None,
    }
}

/// Encodes `request` as a `BatchRequest`. INFO, SNAPSHOT, SUBSCRIBE, UNSUBSCRIBE and FETCH have
/// their own RPCs and are refused here (UNIMPLEMENTED), and so is a request the engine would
/// refuse that the wire cannot carry ([`refusal_before_sending`]: the engine's status).
pub fn encode_batch_request(request: &Request) -> Result<Vec<u8>, Status> {
    batch_request(request).map(|message| message.encode_to_vec())
}

/// Appends `request` to `out` as one framed `BatchRequest` (the 5-byte gRPC prefix, then the
/// message), encoded in place: many requests make one buffer with no copy in between.
pub fn encode_batch_request_framed(request: &Request, out: &mut Vec<u8>) -> Result<(), Status> {
    let message = batch_request(request)?;
    let length = message.encoded_len();
    let prefix = u32::try_from(length)
        .map_err(|_| Status::resource_exhausted("request over 4 GiB"))?
        .to_be_bytes();
    out.reserve(crate::grpc::FRAME_PREFIX_BYTES + length);
    out.push(0);
    out.extend_from_slice(&prefix);
    message
        .encode(out)
        .map_err(|error| Status::internal(error.to_string()))
}

fn batch_request(request: &Request) -> Result<pb::BatchRequest, Status> {
    use pb::batch_request::Op;
    if let Some(error) = refusal_before_sending(request) {
        return Err(error.status());
    }
    let op = match request.clone() {
        Request::Ping => Op::Ping(pb::PingRequest {}),
        Request::Get { key } => Op::Get(pb::GetRequest { key }),
        Request::Set {
            key,
            value,
            options,
        } => Op::Set(pb::SetRequest {
            key,
            value,
            ttl_ms: options.ttl_ms.unwrap_or(0),
            condition: match options.condition {
                SetCondition::Always => pb::SetCondition::Always,
                SetCondition::IfAbsent => pb::SetCondition::IfAbsent,
                SetCondition::IfPresent => pb::SetCondition::IfPresent,
            } as i32,
            keep_ttl: options.keep_ttl,
        }),
        Request::Delete { key } => Op::Delete(pb::DeleteRequest { key }),
        Request::Exists { key } => Op::Exists(pb::ExistsRequest { key }),
        Request::Cas {
            key,
            expected_version,
            value,
            ttl_ms,
        } => Op::Cas(pb::CasRequest {
            key,
            expected_version,
            value,
            ttl_ms: ttl_ms.unwrap_or(0),
        }),
        Request::Incr { key, delta } => Op::Incr(pb::IncrRequest { key, delta }),
        Request::Expire { key, ttl_ms } => Op::Expire(pb::ExpireRequest {
            key,
            ttl_ms,
            persist: false,
        }),
        Request::Persist { key } => Op::Expire(pb::ExpireRequest {
            key,
            ttl_ms: 0,
            persist: true,
        }),
        Request::Ttl { key } => Op::Ttl(pb::TtlRequest { key }),
        Request::MGet { keys } => Op::Mget(pb::MGetRequest { keys }),
        Request::MSet { pairs } => Op::Mset(pb::MSetRequest {
            pairs: pairs
                .into_iter()
                .map(|(key, value)| pb::KeyValue { key, value })
                .collect(),
        }),
        Request::Scan {
            cursor,
            prefix,
            count,
        } => Op::Scan(pb::ScanRequest {
            cursor,
            prefix,
            count,
        }),
        Request::Publish { topic, message } => Op::Publish(pb::PublishRequest { topic, message }),
        other @ (Request::Info
        | Request::Snapshot
        | Request::Subscribe { .. }
        | Request::Unsubscribe { .. }
        | Request::Fetch { .. }) => {
            return Err(Status::unimplemented(format!(
                "{} is not a batch operation",
                other.name()
            )))
        }
    };
    Ok(pb::BatchRequest { op: Some(op) })
}

/// The version a FAILED_PRECONDITION message names ("... the current version is N").
fn current_version(message: &str) -> u64 {
    message
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Decodes a `BatchResponse` to the answer of `request`. A status other than OK becomes the
/// matching answer where the model has one (NOT_FOUND, FAILED_PRECONDITION for CAS), else
/// `Err(status)`.
pub fn decode_batch_response(request: &Request, message: Bytes) -> Result<Response, Status> {
    use pb::batch_response::Op;
    let decoded = pb::BatchResponse::decode(message).map_err(|error| {
        Status::internal(format!("cannot decode veddb.v1.BatchResponse: {error}"))
    })?;
    let status = decoded.status.unwrap_or_default();
    if status.code != 0 {
        let code = Code::from_i32(status.code).unwrap_or(Code::Unknown);
        return match (code, request) {
            (Code::NotFound, _) => Ok(Response::NotFound),
            (Code::FailedPrecondition, Request::Cas { .. }) => Ok(Response::VersionMismatch {
                current: current_version(&status.message),
            }),
            _ => Err(Status::new(code, status.message)),
        };
    }
    let unexpected = || Status::internal(format!("unexpected answer to {}", request.name()));
    let op = decoded.op.ok_or_else(unexpected)?;
    Ok(match (request, op) {
        (Request::Ping, Op::Ping(_)) => Response::Pong,
        (Request::Get { .. }, Op::Get(get)) => Response::Value {
            value: get.value,
            version: get.version,
        },
        (Request::Set { .. }, Op::Set(set)) => {
            if set.stored {
                Response::Stored {
                    version: set.version,
                }
            } else {
                Response::NotStored
            }
        }
        (Request::Delete { .. }, Op::Delete(delete)) => Response::Bool(delete.existed),
        (Request::Exists { .. }, Op::Exists(exists)) => Response::Bool(exists.exists),
        (Request::Cas { .. }, Op::Cas(cas)) => Response::Stored {
            version: cas.version,
        },
        (Request::Incr { .. }, Op::Incr(incr)) => Response::Integer {
            value: incr.value,
            version: incr.version,
        },
        (Request::Expire { .. } | Request::Persist { .. }, Op::Expire(expire)) => {
            Response::Bool(expire.applied)
        }
        (Request::Ttl { .. }, Op::Ttl(ttl)) => Response::Ttl(if !ttl.exists {
            Ttl::Missing
        } else if ttl.persistent {
            Ttl::Persistent
        } else {
            Ttl::Remaining(ttl.remaining_ms)
        }),
        (Request::MGet { .. }, Op::Mget(mget)) => Response::Values(
            mget.values
                .into_iter()
                .map(|v| v.found.then_some((v.value, v.version)))
                .collect(),
        ),
        (Request::MSet { .. }, Op::Mset(_)) => Response::Ok,
        (Request::Scan { .. }, Op::Scan(scan)) => Response::Keys {
            keys: scan.keys,
            cursor: scan.cursor,
        },
        (Request::Publish { .. }, Op::Publish(publish)) => Response::Published {
            receivers: publish.receivers,
        },
        _ => return Err(unexpected()),
    })
}

/// Decodes an `InfoResponse`.
pub fn decode_info(message: Bytes) -> Result<Info, Status> {
    let info = pb::InfoResponse::decode(message).map_err(|error| {
        Status::internal(format!("cannot decode veddb.v1.InfoResponse: {error}"))
    })?;
    Ok(Info {
        shards: info
            .shards
            .into_iter()
            .map(|s| ShardStats {
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
            })
            .collect(),
    })
}

/// Encodes a `SnapshotRequest` (an empty message).
pub fn encode_snapshot_request() -> Vec<u8> {
    pb::SnapshotRequest {}.encode_to_vec()
}

/// Decodes a `SnapshotResponse`: the answer to SNAPSHOT, [`Response::Ok`] (the snapshot of
/// every shard is durable). Failures come as the call's status, not here.
pub fn decode_snapshot(message: Bytes) -> Result<Response, Status> {
    pb::SnapshotResponse::decode(message).map_err(|error| {
        Status::internal(format!("cannot decode veddb.v1.SnapshotResponse: {error}"))
    })?;
    Ok(Response::Ok)
}

/// Encodes a `SubscribeRequest`.
pub fn encode_subscribe_request(topic: Bytes) -> Vec<u8> {
    pb::SubscribeRequest { topic }.encode_to_vec()
}

/// One message of a Subscribe stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscribeEvent {
    /// The subscription is in place.
    Subscribed,
    /// A published message, and how many were lost before it to the slow-subscriber policy.
    Message { message: Bytes, dropped: u64 },
}

pub fn decode_subscribe_event(message: Bytes) -> Result<SubscribeEvent, Status> {
    let event = pb::SubscribeResponse::decode(message).map_err(|error| {
        Status::internal(format!("cannot decode veddb.v1.SubscribeResponse: {error}"))
    })?;
    Ok(if event.subscribed {
        SubscribeEvent::Subscribed
    } else {
        SubscribeEvent::Message {
            message: event.message,
            dropped: event.dropped,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::{decode_batch, encode_batch, request_key};
    use crate::SetOptions;

    /// Client encoding → server decoding → server encoding → client decoding is the identity.
    #[test]
    fn every_batch_operation_round_trips() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let cases = vec![
            (Request::Ping, Response::Pong),
            (
                Request::Get { key: b("k") },
                Response::Value {
                    value: b("v"),
                    version: 7,
                },
            ),
            (Request::Get { key: b("k") }, Response::NotFound),
            (
                Request::Set {
                    key: b("k"),
                    value: b("v"),
                    options: SetOptions {
                        ttl_ms: Some(5),
                        condition: SetCondition::IfAbsent,
                        keep_ttl: false,
                    },
                },
                Response::Stored { version: 3 },
            ),
            (
                Request::Set {
                    key: b("k"),
                    value: b("v"),
                    options: SetOptions::default(),
                },
                Response::NotStored,
            ),
            (Request::Delete { key: b("k") }, Response::Bool(true)),
            (Request::Exists { key: b("k") }, Response::Bool(true)),
            (Request::Exists { key: b("k") }, Response::Bool(false)),
            (
                Request::Cas {
                    key: b("k"),
                    expected_version: 2,
                    value: b("v"),
                    ttl_ms: None,
                },
                Response::Stored { version: 9 },
            ),
            (
                Request::Cas {
                    key: b("k"),
                    expected_version: 2,
                    value: b("v"),
                    ttl_ms: None,
                },
                Response::VersionMismatch { current: 41 },
            ),
            (
                Request::Incr {
                    key: b("k"),
                    delta: -3,
                },
                Response::Integer {
                    value: -3,
                    version: 1,
                },
            ),
            (
                Request::Expire {
                    key: b("k"),
                    ttl_ms: 10,
                },
                Response::Bool(true),
            ),
            (Request::Persist { key: b("k") }, Response::Bool(false)),
            (
                Request::Ttl { key: b("k") },
                Response::Ttl(Ttl::Remaining(99)),
            ),
            (Request::Ttl { key: b("k") }, Response::Ttl(Ttl::Persistent)),
            (Request::Ttl { key: b("k") }, Response::Ttl(Ttl::Missing)),
            (
                Request::MGet {
                    keys: vec![b("a"), b("b")],
                },
                Response::Values(vec![Some((b("1"), 1)), None]),
            ),
            (
                Request::MSet {
                    pairs: vec![(b("a"), b("1"))],
                },
                Response::Ok,
            ),
            (
                Request::Scan {
                    cursor: b(""),
                    prefix: b("a"),
                    count: 3,
                },
                Response::Keys {
                    keys: vec![b("a1")],
                    cursor: b("a1"),
                },
            ),
            (
                Request::Publish {
                    topic: b("t"),
                    message: b("m"),
                },
                Response::Published { receivers: 2 },
            ),
        ];
        let mut all_framed = Vec::new();
        for (request, _) in &cases {
            encode_batch_request_framed(request, &mut all_framed).unwrap();
        }
        // The framed encoder writes, back to back, exactly the framed messages.
        let mut deframer = crate::grpc::Deframer::new(1 << 20);
        deframer.push_bytes(&Bytes::from(all_framed));
        for (request, _) in &cases {
            let message = deframer.next().unwrap().expect("one message per request");
            assert_eq!(message, encode_batch_request(request).unwrap());
        }
        assert_eq!(deframer.next().unwrap(), None);
        for (request, response) in cases {
            let encoded = encode_batch_request(&request).unwrap();
            let (method, decoded) = decode_batch(Bytes::from(encoded)).unwrap();
            assert_eq!(decoded, request);
            let answer = encode_batch(method, &request_key(&request), response.clone());
            assert_eq!(
                decode_batch_response(&request, Bytes::from(answer)).unwrap(),
                response,
                "{request:?}"
            );
        }
    }

    #[test]
    fn errors_come_back_as_statuses() {
        let request = Request::Incr {
            key: Bytes::from_static(b"k"),
            delta: 1,
        };
        let answer = encode_batch(
            crate::grpc::Method::Incr,
            b"k",
            Response::Error(crate::Error::NotAnInteger),
        );
        let status = decode_batch_response(&request, Bytes::from(answer)).unwrap_err();
        assert_eq!(status.code, Code::InvalidArgument);
        assert!(status.message.contains("integer"));
        assert!(encode_batch_request(&Request::Info).is_err());
        let mut out = Vec::new();
        assert!(encode_batch_request_framed(&Request::Info, &mut out).is_err());
        assert!(out.is_empty(), "nothing written for a refused request");
        let status = encode_batch_request(&Request::Snapshot).unwrap_err();
        assert_eq!(status.code, Code::Unimplemented);
        assert_eq!(status.message, "SNAPSHOT is not a batch operation");
    }

    /// A TTL of 0 ms on SET or CAS cannot be sent (the wire reads 0 as "no TTL" or "keep the
    /// expiry"): refused before sending with the status the engine gives it, nothing written.
    /// EXPIRE 0 means "expire now" on the wire too, and is sent.
    #[test]
    fn a_ttl_of_zero_is_refused_with_the_engines_status() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let engine = crate::Error::ttl_zero().status();
        assert_eq!(engine.code, Code::InvalidArgument);
        let refused = [
            Request::Set {
                key: b("k"),
                value: b("v"),
                options: SetOptions {
                    ttl_ms: Some(0),
                    ..SetOptions::default()
                },
            },
            Request::Cas {
                key: b("k"),
                expected_version: 1,
                value: b("v"),
                ttl_ms: Some(0),
            },
        ];
        for request in &refused {
            assert_eq!(
                refusal_before_sending(request).map(|error| error.status()),
                Some(engine.clone()),
                "{request:?}"
            );
            assert_eq!(encode_batch_request(request).unwrap_err(), engine);
            let mut out = Vec::new();
            assert_eq!(
                encode_batch_request_framed(request, &mut out).unwrap_err(),
                engine
            );
            assert!(out.is_empty(), "nothing written for {request:?}");
        }
        let sent = [
            Request::Set {
                key: b("k"),
                value: b("v"),
                options: SetOptions::default(),
            },
            Request::Cas {
                key: b("k"),
                expected_version: 1,
                value: b("v"),
                ttl_ms: None,
            },
            Request::Expire {
                key: b("k"),
                ttl_ms: 0,
            },
        ];
        for request in &sent {
            assert_eq!(refusal_before_sending(request), None, "{request:?}");
            let encoded = encode_batch_request(request).unwrap();
            let (_, decoded) = decode_batch(Bytes::from(encoded)).unwrap();
            assert_eq!(&decoded, request);
        }
    }

    /// The client's SNAPSHOT request is what the server decodes, and the server's answer
    /// decodes back to `Response::Ok`.
    #[test]
    fn snapshot_round_trips() {
        use crate::grpc::{decode_unary, encode_unary, Method};
        let request = decode_unary(Method::Snapshot, Bytes::from(encode_snapshot_request()));
        assert_eq!(request, Ok(Request::Snapshot));
        let answer = encode_unary(Method::Snapshot, b"", Response::Ok).unwrap();
        assert_eq!(decode_snapshot(Bytes::from(answer)), Ok(Response::Ok));
        assert_eq!(
            decode_snapshot(Bytes::from_static(b"\x0a\x05"))
                .unwrap_err()
                .code,
            Code::Internal
        );
    }
}
