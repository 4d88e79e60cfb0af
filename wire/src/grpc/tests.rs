use super::*;
use crate::Error;
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
        "/veddb.v1.VedDb/exists",
        "/veddb.v1.VedDb/snapshot",
        "veddb.v1.VedDb/Get",
        "/veddb.v1.VedDb/Get/",
    ] {
        assert_eq!(Method::from_path(unknown), None, "{unknown:?}");
    }
    assert_eq!(
        Method::from_path("/veddb.v1.VedDb/Exists"),
        Some(Method::Exists)
    );
    assert_eq!(Method::ALL.iter().filter(|m| m.is_unary()).count(), 16);
    assert!(Method::Snapshot.is_unary() && !Method::Snapshot.is_health());
    assert!(Method::Subscribe.is_server_streaming() && Method::HealthWatch.is_server_streaming());
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
            Method::Exists,
            enc(&pb::ExistsRequest { key: b("e") }),
            Request::Exists { key: b("e") },
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
    for exists in [true, false] {
        assert_eq!(
            dec::<pb::ExistsResponse>(&ok(Method::Exists, Response::Bool(exists))),
            pb::ExistsResponse { exists }
        );
    }
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
    let status = encode_unary(Method::Get, "ключ ☺".as_bytes(), Response::NotFound).unwrap_err();
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
        assert_eq!(error.status(), expected);
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
        encode_batch_framed(method, b"key", response, usize::MAX, &mut batch);
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
    let refused = encode_unary_framed(Method::Get, b"k", big.clone(), 50).unwrap_err();
    assert_eq!(refused.code, Code::ResourceExhausted);
    assert_eq!(
        refused.message,
        "a response message of 104 bytes is over this server's limit of 50 bytes \
         (--grpc-message-bytes-max); ask for less in one call"
    );
    // In a batch, the answer is replaced by that status, framed in its place.
    let mut out = bytes::BytesMut::new();
    encode_batch_framed(Method::Get, b"k", big.clone(), 50, &mut out);
    let mut deframer = Deframer::default();
    deframer.push(&out);
    let only = deframer.next().unwrap().expect("one message");
    assert_eq!(deframer.next(), Ok(None));
    let answer: pb::BatchResponse = dec(&only);
    assert_eq!(answer.op, None);
    let status = answer.status.expect("a status");
    assert_eq!(status.code, Code::ResourceExhausted.as_i32());
    assert!(
        status.message.contains("limit of 50 bytes"),
        "{}",
        status.message
    );
    // Exactly at the limit it is sent as it is.
    let exact = encode_batch(Method::Get, b"k", big.clone()).len();
    let mut out = bytes::BytesMut::new();
    encode_batch_framed(Method::Get, b"k", big.clone(), exact, &mut out);
    assert_eq!(&out[..], &framed(encode_batch(Method::Get, b"k", big))[..]);
}

#[test]
fn the_default_message_limit_follows_the_value_limit() {
    // Default flags: 64 KiB keys, 16 MiB values.
    assert_eq!(
        message_bytes_max_for(
            crate::limits::KEY_BYTES_MAX_DEFAULT,
            crate::limits::VALUE_BYTES_MAX_DEFAULT
        ),
        (16 << 20) + (64 << 10) + MESSAGE_FRAMING_BYTES
    );
    // Small limits: never under the usual 4 MiB.
    assert_eq!(message_bytes_max_for(1, 1), MESSAGE_BYTES_MAX_DEFAULT);
    assert_eq!(
        message_bytes_max_for(1024, 5 << 20),
        (5 << 20) + 1024 + MESSAGE_FRAMING_BYTES
    );
    // At most what the prefix can announce.
    assert_eq!(
        message_bytes_max_for(usize::MAX, usize::MAX),
        MESSAGE_LENGTH_MAX
    );
    // The largest SET, CAS, PUBLISH request and GET answer of the largest key and value fit.
    let (key_bytes_max, value_bytes_max) = (1000, 3 << 20);
    let limit = message_bytes_max_for(key_bytes_max, value_bytes_max);
    let key = Bytes::from(vec![1; key_bytes_max]);
    let value = Bytes::from(vec![2; value_bytes_max]);
    let set = pb::SetRequest {
        key: key.clone(),
        value: value.clone(),
        ttl_ms: u64::MAX,
        condition: pb::SetCondition::IfPresent as i32,
        keep_ttl: true,
    };
    let cas = pb::CasRequest {
        key: key.clone(),
        expected_version: u64::MAX,
        value: value.clone(),
        ttl_ms: u64::MAX,
    };
    let publish = pb::PublishRequest {
        topic: key.clone(),
        message: value.clone(),
    };
    let batch = pb::BatchRequest {
        op: Some(batch_request::Op::Set(set.clone())),
    };
    for length in [
        set.encoded_len(),
        cas.encoded_len(),
        publish.encoded_len(),
        batch.encoded_len(),
        encode_batch(
            Method::Get,
            &key,
            Response::Value {
                value: value.clone(),
                version: u64::MAX,
            },
        )
        .len(),
    ] {
        assert!(length <= limit, "{length} > {limit}");
        assert!(length < key_bytes_max + value_bytes_max + 1024, "{length}");
    }
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
            batch_request::Op::Exists(pb::ExistsRequest { key: b("k") }),
            Method::Exists,
            Request::Exists { key: b("k") },
            Response::Bool(false),
            batch_response::Op::Exists(pb::ExistsResponse { exists: false }),
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
    // A server's status names the limit as its own, and the flag that sets it.
    let refused = FrameError::TooLarge {
        length: 6_000_013,
        limit: 4_194_304,
    }
    .request_status();
    assert_eq!(refused.code, Code::ResourceExhausted);
    assert_eq!(
        refused.message,
        "a request message of 6000013 bytes is over this server's limit of 4194304 bytes \
         (--grpc-message-bytes-max)"
    );
    assert_eq!(
        FrameError::Truncated.request_status(),
        FrameError::Truncated.status()
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

    // Growing, the buffer never goes past the announced length (no doubling beyond it).
    let length = 3 * DEFRAMER_FIRST_CAPACITY_BYTES + 17;
    let mut deframer = Deframer::new(length);
    let mut stream = Vec::new();
    frame(&vec![5; length], &mut stream);
    for chunk in stream[..stream.len() - 1].chunks(1000) {
        deframer.push(chunk);
        let capacity = deframer.body.as_ref().map_or(0, Vec::capacity);
        assert!(capacity <= length, "{capacity} > {length}");
    }
    deframer.push(&stream[stream.len() - 1..]);
    assert_eq!(deframer.next().unwrap().map(|m| m.len()), Some(length));

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
