//! The shared-memory layout and frame codec: round trips of every request and response,
//! hostile input, truncation, the layout constants and the ring index checks.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use proptest::prelude::*;
use veddb_wire::limits;
use veddb_wire::shm::codec::*;
use veddb_wire::shm::layout::*;
use veddb_wire::{
    Error, Info, Request, Response, SetCondition, SetOptions, ShardStats, SubscriberId, Ttl,
};

// ---------------------------------------------------------------------------------------------
// Strategies

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..24),
        1 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 200..3000),
    ]
    .prop_map(Bytes::from)
}

fn arb_ttl() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), Just(Some(0)), any::<u64>().prop_map(Some)]
}

fn arb_request() -> impl Strategy<Value = Request> {
    let condition = prop_oneof![
        Just(SetCondition::Always),
        Just(SetCondition::IfAbsent),
        Just(SetCondition::IfPresent)
    ];
    prop_oneof![
        Just(Request::Ping),
        Just(Request::Info),
        Just(Request::Snapshot),
        arb_bytes().prop_map(|key| Request::Get { key }),
        (
            arb_bytes(),
            arb_bytes(),
            arb_ttl(),
            condition,
            any::<bool>()
        )
            .prop_map(|(key, value, ttl_ms, condition, keep_ttl)| Request::Set {
                key,
                value,
                options: SetOptions {
                    ttl_ms,
                    condition,
                    keep_ttl
                },
            }),
        arb_bytes().prop_map(|key| Request::Delete { key }),
        arb_bytes().prop_map(|key| Request::Exists { key }),
        (arb_bytes(), any::<u64>(), arb_bytes(), arb_ttl()).prop_map(
            |(key, expected_version, value, ttl_ms)| Request::Cas {
                key,
                expected_version,
                value,
                ttl_ms,
            }
        ),
        (arb_bytes(), any::<i64>()).prop_map(|(key, delta)| Request::Incr { key, delta }),
        (arb_bytes(), any::<u64>()).prop_map(|(key, ttl_ms)| Request::Expire { key, ttl_ms }),
        arb_bytes().prop_map(|key| Request::Ttl { key }),
        arb_bytes().prop_map(|key| Request::Persist { key }),
        proptest::collection::vec(arb_bytes(), 0..12).prop_map(|keys| Request::MGet { keys }),
        proptest::collection::vec((arb_bytes(), arb_bytes()), 0..12)
            .prop_map(|pairs| Request::MSet { pairs }),
        (arb_bytes(), arb_bytes(), any::<u32>()).prop_map(|(cursor, prefix, count)| {
            Request::Scan {
                cursor,
                prefix,
                count,
            }
        }),
        arb_bytes().prop_map(|topic| Request::Subscribe { topic }),
        any::<u64>().prop_map(|id| Request::Unsubscribe {
            subscriber: SubscriberId(id)
        }),
        (arb_bytes(), arb_bytes()).prop_map(|(topic, message)| Request::Publish { topic, message }),
        (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(id, max, wait_ms)| {
            Request::Fetch {
                subscriber: SubscriberId(id),
                max,
                wait_ms,
            }
        }),
    ]
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), any::<String>(), "[a-z ]{0,300}"]
}

fn arb_error() -> impl Strategy<Value = Error> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(needed_bytes, limit_bytes)| Error::OutOfMemory {
            needed_bytes,
            limit_bytes
        }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(length, limit)| Error::KeyTooLarge { length, limit }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(length, limit)| Error::ValueTooLarge { length, limit }),
        Just(Error::NotAnInteger),
        Just(Error::Overflow),
        arb_text().prop_map(Error::InvalidArgument),
        any::<u64>().prop_map(|id| Error::UnknownSubscriber(SubscriberId(id))),
        any::<usize>().prop_map(|limit| Error::TooManySubscribers { limit }),
        Just(Error::ShuttingDown),
        Just(Error::PersistenceOff),
        arb_text().prop_map(Error::Storage),
        arb_text().prop_map(Error::Busy),
    ]
}

fn arb_shard_stats() -> impl Strategy<Value = ShardStats> {
    (any::<u32>(), proptest::collection::vec(any::<u64>(), 15)).prop_map(|(shard, v)| ShardStats {
        shard,
        ops: v[0],
        hits: v[1],
        misses: v[2],
        keys: v[3],
        memory_bytes_used: v[4],
        memory_bytes_limit: v[5],
        expired_keys: v[6],
        evicted_keys: v[7],
        out_of_memory_errors: v[8],
        topics: v[9],
        subscribers: v[10],
        messages_published: v[11],
        messages_delivered: v[12],
        messages_dropped: v[13],
        forwarded_in: v[14],
    })
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Pong),
        (arb_bytes(), any::<u64>()).prop_map(|(value, version)| Response::Value { value, version }),
        Just(Response::NotFound),
        any::<u64>().prop_map(|version| Response::Stored { version }),
        Just(Response::NotStored),
        any::<u64>().prop_map(|current| Response::VersionMismatch { current }),
        (any::<i64>(), any::<u64>())
            .prop_map(|(value, version)| Response::Integer { value, version }),
        any::<bool>().prop_map(Response::Bool),
        prop_oneof![
            Just(Ttl::Missing),
            Just(Ttl::Persistent),
            any::<u64>().prop_map(Ttl::Remaining)
        ]
        .prop_map(Response::Ttl),
        proptest::collection::vec(proptest::option::of((arb_bytes(), any::<u64>())), 0..12)
            .prop_map(Response::Values),
        Just(Response::Ok),
        (proptest::collection::vec(arb_bytes(), 0..12), arb_bytes())
            .prop_map(|(keys, cursor)| Response::Keys { keys, cursor }),
        any::<u64>().prop_map(|id| Response::Subscribed {
            subscriber: SubscriberId(id)
        }),
        any::<u32>().prop_map(|receivers| Response::Published { receivers }),
        (proptest::collection::vec(arb_bytes(), 0..12), any::<u64>())
            .prop_map(|(messages, dropped)| Response::Messages { messages, dropped }),
        proptest::collection::vec(arb_shard_stats(), 0..6)
            .prop_map(|shards| Response::Info(Info { shards })),
        arb_error().prop_map(Response::Error),
    ]
}

/// How the server places values in a test.
#[derive(Clone, Copy, Debug)]
enum Placement {
    Inline,
    Shared,
    /// Values of even length shared, odd inline.
    Mixed,
}

fn arb_placement() -> impl Strategy<Value = Placement> {
    prop_oneof![
        Just(Placement::Inline),
        Just(Placement::Shared),
        Just(Placement::Mixed)
    ]
}

/// A deterministic placement of a value: its core, offset and generation derive from its
/// content, so that the resolver below can find it again.
fn placement(mode: Placement) -> impl Fn(&Bytes) -> Option<(u32, u64, u64)> {
    move |value: &Bytes| {
        let shared = match mode {
            Placement::Inline => false,
            Placement::Shared => true,
            Placement::Mixed => value.len().is_multiple_of(2),
        };
        shared.then(|| {
            let h = veddb_wire::key_hash(value);
            (
                (h >> 48) as u32,
                0x1000 + 16 + (h & 0xFFFF_FFF0),
                h.rotate_left(7),
            )
        })
    }
}

/// A "data segment" holding every value of `response` where `placement` put it.
fn segment_of(
    response: &Response,
    place: &impl Fn(&Bytes) -> Option<(u32, u64, u64)>,
) -> HashMap<SharedValue, Bytes> {
    let mut segment = HashMap::new();
    let mut add = |value: &Bytes| {
        if let Some((core, offset, generation)) = place(value) {
            segment.insert(
                SharedValue {
                    core,
                    offset,
                    len: value.len() as u32,
                    generation,
                },
                value.clone(),
            );
        }
    };
    match response {
        Response::Value { value, .. } => add(value),
        Response::Values(values) => values.iter().flatten().for_each(|(v, _)| add(v)),
        _ => {}
    }
    segment
}

fn check_request_round_trip(id: u32, request: &Request) {
    let len = request_len(request);
    let payload = encode_request_vec(id, request);
    assert_eq!(payload.len(), len);
    // Writing into a larger buffer writes exactly `len` bytes.
    let mut big = vec![0xAA; len + 9];
    assert_eq!(encode_request(id, request, &mut big), len);
    assert_eq!(&big[..len], &payload[..]);
    assert!(big[len..].iter().all(|&b| b == 0xAA));
    assert_eq!(decode_request(&payload).unwrap(), (id, request.clone()));
    assert_eq!(
        decode_request_bytes(&Bytes::from(payload.clone())).unwrap(),
        (id, request.clone())
    );
    assert_eq!(payload_id(&payload), Some(id));
    // The server's stack-copy GET path agrees with the decoder, the client's encoder with
    // the general one.
    match request {
        Request::Get { key } => {
            assert_eq!(get_request(&payload), Some((id, &key[..])));
            let mut direct = vec![0x77; get_request_len(key.len()) + 5];
            assert_eq!(encode_get_request(id, key, &mut direct), len);
            assert_eq!(&direct[..len], &payload[..]);
            assert!(direct[len..].iter().all(|&b| b == 0x77));
        }
        _ => assert_eq!(get_request(&payload), None),
    }
    match request {
        Request::Set {
            key,
            value,
            options,
        } => assert_eq!(
            set_request(&payload),
            Some((id, &key[..], &value[..], *options))
        ),
        _ => assert_eq!(set_request(&payload), None),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn request_round_trip(id in any::<u32>(), request in arb_request()) {
        check_request_round_trip(id, &request);
    }

    #[test]
    fn response_round_trip(id in any::<u32>(), response in arb_response(), mode in arb_placement()) {
        let place = placement(mode);
        let len = response_len(&response, &place);
        let payload = encode_response_vec(id, &response, &place);
        prop_assert_eq!(payload.len(), len);
        let mut big = vec![0x55; len + 3];
        prop_assert_eq!(encode_response(id, &response, &place, &mut big), len);
        prop_assert_eq!(&big[..len], &payload[..]);

        // The answers a server writes without a `Response` are the same bytes.
        match &response {
            Response::Value { value, version } => {
                if let Some(at) = place(value) {
                    let mut answer = [0u8; SHARED_VALUE_ANSWER_BYTES];
                    encode_shared_value_answer(id, *version, at, value.len(), &mut answer);
                    prop_assert_eq!(&answer[..], &payload[..]);
                }
            }
            Response::NotFound => {
                prop_assert_eq!(&encode_not_found_answer(id)[..], &payload[..]);
            }
            Response::Stored { version } => {
                prop_assert_eq!(&encode_stored_answer(id, *version)[..], &payload[..]);
            }
            _ => {}
        }

        // The client's direct read of a STORED answer agrees with the decoder.
        match decode_response(&payload).unwrap() {
            (got_id, ResponseFrame::Other(Response::Stored { version })) => {
                prop_assert_eq!(stored_answer(&payload), Some((got_id, version)));
            }
            _ => prop_assert_eq!(stored_answer(&payload), None),
        }

        // The client's direct read of a shared value's answer agrees with the decoder.
        let direct = shared_value_answer(&payload);
        match decode_response(&payload).unwrap() {
            (got_id, ResponseFrame::Value { value: ValueRef::Shared { core, offset, len, generation }, version }) => {
                prop_assert_eq!(direct, Some((got_id, version, SharedValue { core, offset, len, generation })));
            }
            _ => prop_assert_eq!(direct, None),
        }

        let segment = segment_of(&response, &place);
        let (got_id, frame) = decode_response(&payload).unwrap();
        prop_assert_eq!(got_id, id);
        // Exactly the values the placement shared come back as references.
        let shared = frame.shared_values();
        prop_assert!(shared.iter().all(|s| segment.contains_key(s)));
        let back = frame
            .into_response(|s| segment.get(&s).cloned())
            .unwrap();
        prop_assert_eq!(back, response.clone());
        match mode {
            Placement::Inline => prop_assert!(shared.is_empty()),
            Placement::Shared => {
                let values = match &response {
                    Response::Value { .. } => 1,
                    Response::Values(v) => v.iter().flatten().count(),
                    _ => 0,
                };
                prop_assert_eq!(shared.len(), values);
            }
            Placement::Mixed => {}
        }
    }

    #[test]
    fn an_unresolvable_shared_value_is_reported(value in arb_bytes(), version in any::<u64>()) {
        let response = Response::Values(vec![None, Some((value, version))]);
        let place = placement(Placement::Shared);
        let payload = encode_response_vec(9, &response, &place);
        let (_, frame) = decode_response(&payload).unwrap();
        let expected = frame.shared_values()[0];
        prop_assert_eq!(frame.into_response(|_| None), Err(expected));
    }
}

#[test]
fn every_request_variant_round_trips() {
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let long = Bytes::from(vec![7u8; 100_000]);
    let requests = vec![
        Request::Ping,
        Request::Get { key: b("k") },
        Request::Get { key: Bytes::new() },
        Request::Get { key: long.clone() },
        Request::Set {
            key: b("k"),
            value: long.clone(),
            options: SetOptions {
                ttl_ms: Some(0),
                condition: SetCondition::IfAbsent,
                keep_ttl: true,
            },
        },
        Request::Set {
            key: b("k"),
            value: Bytes::new(),
            options: SetOptions::default(),
        },
        Request::Delete { key: b("k") },
        Request::Exists { key: b("k") },
        Request::Cas {
            key: b("k"),
            expected_version: 0,
            value: b("v"),
            ttl_ms: None,
        },
        Request::Cas {
            key: b("k"),
            expected_version: u64::MAX,
            value: b("v"),
            ttl_ms: Some(u64::MAX),
        },
        Request::Incr {
            key: b("n"),
            delta: i64::MIN,
        },
        Request::Expire {
            key: b("k"),
            ttl_ms: 0,
        },
        Request::Ttl { key: b("k") },
        Request::Persist { key: b("k") },
        Request::MGet { keys: vec![] },
        Request::MGet {
            keys: vec![Bytes::new(); limits::BATCH_KEYS_MAX],
        },
        Request::MSet {
            pairs: vec![(b("a"), b("1")), (Bytes::new(), Bytes::new())],
        },
        Request::Scan {
            cursor: Bytes::new(),
            prefix: b("p"),
            count: 0,
        },
        Request::Subscribe { topic: b("t") },
        Request::Unsubscribe {
            subscriber: SubscriberId::new(3, 9),
        },
        Request::Publish {
            topic: b("t"),
            message: long,
        },
        Request::Fetch {
            subscriber: SubscriberId(u64::MAX),
            max: u32::MAX,
            wait_ms: limits::FETCH_WAIT_MS_MAX,
        },
        Request::Info,
        Request::Snapshot,
    ];
    let mut opcodes = BTreeSet::new();
    for (i, request) in requests.iter().enumerate() {
        check_request_round_trip(i as u32, request);
        opcodes.insert(request_opcode(request));
    }
    assert_eq!(opcodes.len(), 19, "every opcode is exercised");
    assert_eq!(
        opcodes.iter().copied().collect::<Vec<_>>(),
        (1..=19).collect::<Vec<u8>>()
    );
}

#[test]
fn every_error_variant_round_trips_exactly() {
    let errors = [
        Error::OutOfMemory {
            needed_bytes: 1,
            limit_bytes: u64::MAX,
        },
        Error::KeyTooLarge {
            length: 0,
            limit: 65536,
        },
        Error::ValueTooLarge {
            length: usize::MAX,
            limit: 1,
        },
        Error::NotAnInteger,
        Error::Overflow,
        Error::InvalidArgument("TTL must be at least 1 ms — ünïcode".into()),
        Error::UnknownSubscriber(SubscriberId(42)),
        Error::TooManySubscribers { limit: 65536 },
        Error::ShuttingDown,
        Error::PersistenceOff,
        Error::Storage(String::new()),
        Error::Busy("log buffer full".into()),
    ];
    let mut tags = BTreeSet::new();
    for error in errors {
        let response = Response::Error(error.clone());
        let payload = encode_response_vec(5, &response, all_inline);
        tags.insert(payload[5]);
        let (id, frame) = decode_response(&payload).unwrap();
        assert_eq!(id, 5);
        let back = frame.into_response(|_| None).unwrap();
        assert_eq!(back, response);
        let Response::Error(got) = back else { panic!() };
        assert_eq!(got.to_string(), error.to_string());
        assert_eq!(got.status(), error.status());
    }
    assert_eq!(tags.len(), 12);
}

#[test]
fn info_with_several_shards_round_trips_every_field() {
    let shards: Vec<ShardStats> = (0..5u32)
        .map(|i| {
            let f = |n: u64| u64::from(i) * 1000 + n;
            ShardStats {
                shard: i,
                ops: f(1),
                hits: f(2),
                misses: f(3),
                keys: f(4),
                memory_bytes_used: f(5),
                memory_bytes_limit: f(6),
                expired_keys: f(7),
                evicted_keys: f(8),
                out_of_memory_errors: f(9),
                topics: f(10),
                subscribers: f(11),
                messages_published: f(12),
                messages_delivered: f(13),
                messages_dropped: f(14),
                forwarded_in: f(15),
            }
        })
        .collect();
    let response = Response::Info(Info { shards });
    let payload = encode_response_vec(1, &response, all_inline);
    assert_eq!(payload.len(), 5 + 4 + 5 * SHARD_STATS_BYTES);
    let (_, frame) = decode_response(&payload).unwrap();
    assert_eq!(frame, ResponseFrame::Other(response));
}

#[test]
fn shared_value_layout_is_as_documented() {
    let response = Response::Value {
        value: Bytes::from_static(b"abc"),
        version: 0x0102,
    };
    let payload = encode_response_vec(0xA0B0C0D0, &response, |_| Some((3, 0x1010, 77)));
    let mut expected = Vec::new();
    expected.extend_from_slice(&0xA0B0C0D0u32.to_le_bytes());
    expected.push(kind::VALUE);
    expected.push(value_form::SHARED);
    expected.extend_from_slice(&0x0102u64.to_le_bytes());
    expected.extend_from_slice(&3u32.to_le_bytes());
    expected.extend_from_slice(&0x1010u64.to_le_bytes());
    expected.extend_from_slice(&3u32.to_le_bytes());
    expected.extend_from_slice(&77u64.to_le_bytes());
    assert_eq!(payload, expected);
    let (_, frame) = decode_response(&payload).unwrap();
    assert_eq!(
        frame,
        ResponseFrame::Value {
            value: ValueRef::Shared {
                core: 3,
                offset: 0x1010,
                len: 3,
                generation: 77
            },
            version: 0x0102
        }
    );
}

#[test]
fn set_layout_is_as_documented() {
    let request = Request::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"vv"),
        options: SetOptions {
            ttl_ms: Some(500),
            condition: SetCondition::IfPresent,
            keep_ttl: true,
        },
    };
    let mut expected = vec![1, 0, 0, 0, opcode::SET, condition::IF_PRESENT, 0x03];
    expected.extend_from_slice(&500u64.to_le_bytes());
    expected.extend_from_slice(&[1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'v']);
    assert_eq!(encode_request_vec(1, &request), expected);
}

// ---------------------------------------------------------------------------------------------
// Hostile input

fn check_canonical_request(bytes: &[u8]) {
    // The server's stack-copy GET path accepts exactly the well-formed GETs, as decoded.
    if let Some((id, key)) = get_request(bytes) {
        assert_eq!(
            decode_request(bytes).unwrap(),
            (
                id,
                Request::Get {
                    key: Bytes::copy_from_slice(key)
                }
            )
        );
    }
    // The server's stack-copy SET path accepts exactly the well-formed SETs, as decoded.
    if let Some((id, key, value, options)) = set_request(bytes) {
        assert_eq!(
            decode_request(bytes).unwrap(),
            (
                id,
                Request::Set {
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::copy_from_slice(value),
                    options
                }
            )
        );
    } else if let Ok((_, request)) = decode_request(bytes) {
        assert!(!matches!(request, Request::Set { .. }), "{request:?}");
    }
    if let Ok((id, request)) = decode_request(bytes) {
        assert_eq!(encode_request_vec(id, &request), bytes, "{request:?}");
        assert_eq!(
            decode_request_bytes(&Bytes::copy_from_slice(bytes)).unwrap(),
            (id, request)
        );
    } else {
        assert!(decode_request_bytes(&Bytes::copy_from_slice(bytes)).is_err());
    }
}

fn check_canonical_response(bytes: &[u8]) {
    // The client's direct read of a STORED answer accepts only what decodes as one.
    if let Some((id, version)) = stored_answer(bytes) {
        assert_eq!(
            decode_response(bytes)
                .ok()
                .map(|(id, frame)| (id, format!("{frame:?}"))),
            Some((
                id,
                format!("{:?}", ResponseFrame::Other(Response::Stored { version }))
            ))
        );
    }
    // The client's direct read of a shared value's answer accepts only what decodes as one.
    if let Some((id, version, shared)) = shared_value_answer(bytes) {
        match decode_response(bytes) {
            Ok((
                got_id,
                ResponseFrame::Value {
                    value:
                        ValueRef::Shared {
                            core,
                            offset,
                            len,
                            generation,
                        },
                    version: got_version,
                },
            )) => assert_eq!(
                (
                    got_id,
                    got_version,
                    SharedValue {
                        core,
                        offset,
                        len,
                        generation
                    }
                ),
                (id, version, shared)
            ),
            other => panic!("{other:?}"),
        }
    }
    if let Ok((id, frame)) = decode_response(bytes) {
        if frame.shared_values().is_empty() {
            let response = frame.into_response(|_| None).unwrap();
            assert_eq!(encode_response_vec(id, &response, all_inline), bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_canonical_request(&bytes);
        check_canonical_response(&bytes);
    }

    /// Arbitrary bytes after a valid id and opcode (or kind): reaches the field decoders.
    #[test]
    fn arbitrary_fields_never_panic(
        op in 0u8..24,
        fields in proptest::collection::vec(
            prop_oneof![4 => 0u8..4, 1 => any::<u8>()], 0..120)
    ) {
        let mut bytes = vec![1, 2, 3, 4, op];
        bytes.extend_from_slice(&fields);
        check_canonical_request(&bytes);
        check_canonical_response(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn every_truncation_of_a_request_is_an_error(request in arb_request()) {
        let payload = encode_request_vec(77, &request);
        for cut in 0..payload.len() {
            let err = decode_request(&payload[..cut]).unwrap_err();
            prop_assert!(err.offset <= cut, "{} > {}", err.offset, cut);
            if cut >= 4 {
                prop_assert_eq!(err.request_id, Some(77));
            } else {
                prop_assert_eq!(err.request_id, None);
            }
        }
        let mut longer = payload.clone();
        longer.push(0);
        let err = decode_request(&longer).unwrap_err();
        prop_assert_eq!(err.kind, DecodeErrorKind::TrailingBytes { count: 1 });
    }

    #[test]
    fn every_truncation_of_a_response_is_an_error(response in arb_response(), mode in arb_placement()) {
        let payload = encode_response_vec(78, &response, placement(mode));
        for cut in 0..payload.len() {
            let err = decode_response(&payload[..cut]).unwrap_err();
            prop_assert!(err.offset <= cut);
        }
        let mut longer = payload.clone();
        longer.extend_from_slice(&[0, 0]);
        prop_assert!(decode_response(&longer).is_err());
    }

    #[test]
    fn corrupted_frames_never_panic(
        request in arb_request(),
        response in arb_response(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut req = encode_request_vec(1, &request);
        let mut resp = encode_response_vec(1, &response, placement(Placement::Mixed));
        for (at, byte) in &flips {
            let i = at.index(req.len());
            req[i] = *byte;
            let i = at.index(resp.len());
            resp[i] = *byte;
        }
        check_canonical_request(&req);
        check_canonical_response(&resp);
    }
}

#[test]
fn counts_are_checked_before_anything_is_reserved() {
    // MGET claiming 65536 keys with no key bytes after it.
    let mut payload = vec![0, 0, 0, 0, opcode::MGET];
    payload.extend_from_slice(&(limits::BATCH_KEYS_MAX as u32).to_le_bytes());
    let err = decode_request(&payload).unwrap_err();
    assert_eq!(err.offset, 5);
    assert!(
        matches!(err.kind, DecodeErrorKind::CountPastEnd { count: 65536, .. }),
        "{err}"
    );
    // VALUES / KEYS / MESSAGES / INFO claiming u32::MAX entries.
    for k in [kind::VALUES, kind::KEYS, kind::INFO] {
        let mut payload = vec![0, 0, 0, 0, k];
        payload.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_response(&payload).is_err());
    }
    let mut payload = vec![0, 0, 0, 0, kind::MESSAGES];
    payload.extend_from_slice(&0u64.to_le_bytes());
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_response(&payload).is_err());
}

#[test]
fn batch_limits_are_enforced() {
    let over = Request::MGet {
        keys: vec![Bytes::new(); limits::BATCH_KEYS_MAX + 1],
    };
    let err = decode_request(&encode_request_vec(3, &over)).unwrap_err();
    assert_eq!(err.request_id, Some(3));
    assert_eq!(err.offset, 5);
    assert_eq!(
        err.kind,
        DecodeErrorKind::TooMany {
            what: "MGET keys",
            count: limits::BATCH_KEYS_MAX as u64 + 1,
            limit: limits::BATCH_KEYS_MAX as u64
        }
    );
    assert!(err.to_string().contains("65537 MGET keys"), "{err}");
    let over = Request::MSet {
        pairs: vec![(Bytes::new(), Bytes::new()); limits::BATCH_KEYS_MAX + 1],
    };
    assert!(matches!(
        decode_request(&encode_request_vec(3, &over))
            .unwrap_err()
            .kind,
        DecodeErrorKind::TooMany { .. }
    ));
    let at = Request::MSet {
        pairs: vec![(Bytes::new(), Bytes::new()); limits::BATCH_KEYS_MAX],
    };
    assert!(decode_request(&encode_request_vec(3, &at)).is_ok());
}

#[test]
fn non_canonical_bytes_are_refused() {
    let get = encode_request_vec(
        1,
        &Request::Get {
            key: Bytes::from_static(b"k"),
        },
    );
    // Unknown opcodes.
    for op in [0u8, 20, 255] {
        let mut p = get.clone();
        p[4] = op;
        let err = decode_request(&p).unwrap_err();
        assert_eq!(err.offset, 4);
        assert_eq!(err.kind, DecodeErrorKind::UnknownOpcode(op));
    }
    // A key length past the end.
    let mut p = get.clone();
    p[5] = 2;
    let err = decode_request(&p).unwrap_err();
    assert!(
        matches!(
            err.kind,
            DecodeErrorKind::LengthPastEnd {
                length: 2,
                remaining: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at byte 5"), "{err}");
    // SET: unknown condition, reserved flags, a TTL without its flag.
    let set = encode_request_vec(
        1,
        &Request::Set {
            key: Bytes::new(),
            value: Bytes::new(),
            options: SetOptions::default(),
        },
    );
    let mut p = set.clone();
    p[5] = 3;
    assert_eq!(decode_request(&p).unwrap_err().offset, 5);
    let mut p = set.clone();
    p[6] = 0x04;
    assert_eq!(decode_request(&p).unwrap_err().offset, 6);
    let mut p = set.clone();
    p[7] = 1;
    let err = decode_request(&p).unwrap_err();
    assert_eq!(err.offset, 7);
    assert!(matches!(
        err.kind,
        DecodeErrorKind::NonZero { value: 1, .. }
    ));
    // BOOL other than 0 or 1; TTL tag; non-zero TTL when not remaining; bad UTF-8.
    assert!(decode_response(&[0, 0, 0, 0, kind::BOOL, 2]).is_err());
    assert!(decode_response(&[0, 0, 0, 0, kind::BOOL, 1]).is_ok());
    let mut ttl = vec![0, 0, 0, 0, kind::TTL, ttl_tag::PERSISTENT];
    ttl.extend_from_slice(&5u64.to_le_bytes());
    assert!(decode_response(&ttl).is_err());
    ttl[5] = 3;
    assert!(decode_response(&ttl).is_err());
    let mut bad_text = vec![
        0,
        0,
        0,
        0,
        kind::ERROR,
        error_tag::BUSY,
        2,
        0,
        0,
        0,
        0xC3,
        0x28,
    ];
    let err = decode_response(&bad_text).unwrap_err();
    assert_eq!(err.offset, 10);
    assert!(matches!(err.kind, DecodeErrorKind::InvalidUtf8 { .. }));
    bad_text[5] = 0;
    assert_eq!(
        decode_response(&bad_text).unwrap_err().kind,
        DecodeErrorKind::UnknownErrorTag(0)
    );
    // VALUE without a value; unknown kind.
    assert!(decode_response(&[0, 0, 0, 0, kind::VALUE, value_form::MISSING]).is_err());
    assert_eq!(
        decode_response(&[0, 0, 0, 0, 99]).unwrap_err().kind,
        DecodeErrorKind::UnknownKind(99)
    );
    assert_eq!(decode_response(&[]).unwrap_err().request_id, None);
}

#[test]
#[should_panic(expected = "too short")]
fn encoding_into_a_short_buffer_panics() {
    let request = Request::Get {
        key: Bytes::from_static(b"key"),
    };
    let mut out = vec![0; request_len(&request) - 1];
    encode_request(1, &request, &mut out);
}

// ---------------------------------------------------------------------------------------------
// Layout constants

fn line(offset: usize) -> usize {
    offset / CACHE_LINE_BYTES
}

#[test]
fn instance_file_layout() {
    use instance::*;
    assert_eq!(FILE_BYTES, PAGE_BYTES);
    let fields = [
        (MAGIC_OFFSET, 8),
        (VERSION_OFFSET, 2),
        (RESERVED_0A_OFFSET, 2),
        (CORE_COUNT_OFFSET, 4),
        (SERVER_PID_OFFSET, 8),
        (START_TIME_MS_OFFSET, 8),
        (INSTANCE_ID_OFFSET, 8),
        (STATE_OFFSET, 4),
        (RESERVED_2C_OFFSET, 4),
        (REQUEST_RING_BYTES_OFFSET, 4),
        (RESPONSE_RING_BYTES_OFFSET, 4),
        (DATA_SEGMENT_BYTES_OFFSET, 8),
    ];
    check_contiguous(&fields, RESERVED_TAIL_OFFSET);
    assert_eq!(RESERVED_TAIL_OFFSET, 64);
    assert_eq!(&MAGIC, b"VEDDBINS");
    assert_eq!(path("veddb_main"), "/dev/shm/veddb-veddb_main");
    assert_eq!(socket_path("x"), "/dev/shm/veddb-x.sock");
    assert!(socket_path(&"n".repeat(NAME_BYTES_MAX)).len() < 108);
    assert!(check_name("veddb_main").is_ok());
    for bad in ["", ".hidden", "a/b", "a b", &"n".repeat(NAME_BYTES_MAX + 1)] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(FILE_MODE_DEFAULT, 0o600);
}

/// Fields (offset, width) in order: naturally aligned and gap-free up to `end`.
fn check_contiguous(fields: &[(usize, usize)], end: usize) {
    let mut at = 0;
    for &(offset, width) in fields {
        assert_eq!(offset, at, "field at {offset:#x}");
        assert_eq!(offset % width, 0, "field at {offset:#x} is not aligned");
        at += width;
    }
    assert_eq!(at, end);
}

#[test]
fn instance_header_round_trips_and_is_checked() {
    use instance::*;
    let header = InstanceHeader {
        core_count: 4,
        server_pid: 1234,
        start_time_ms: 1_700_000_000_000,
        instance_id: 0xDEAD_BEEF_0000_0001,
        state: InstanceState::Ready,
        request_ring_bytes: 1 << 20,
        response_ring_bytes: 1 << 21,
        data_segment_bytes: 64 << 20,
    };
    let mut page = vec![0xFF; FILE_BYTES];
    header.write_to(&mut page);
    assert!(page[RESERVED_TAIL_OFFSET..].iter().all(|&b| b == 0));
    assert_eq!(&page[STATE_OFFSET..STATE_OFFSET + 4], &2u32.to_le_bytes());
    assert_eq!(InstanceHeader::read(&page).unwrap(), header);
    assert_eq!(InstanceHeader::read(&page[..64]).unwrap(), header);
    assert!(matches!(
        InstanceHeader::read(&page[..63]),
        Err(HeaderError::Truncated { .. })
    ));
    let mut bad = page.clone();
    bad[0] = b'X';
    assert!(matches!(
        InstanceHeader::read(&bad),
        Err(HeaderError::BadMagic { .. })
    ));
    let mut bad = page.clone();
    // Version 1 (the rings with a separate tail counter), 2 (no pushed subscriptions), 3 (no
    // CPU words), 4 (no uploads) and any later one are refused.
    for version in [1u8, 2, 3, 4, 6] {
        bad[VERSION_OFFSET] = version;
        assert!(matches!(
            InstanceHeader::read(&bad),
            Err(HeaderError::BadVersion { found, .. }) if found == u16::from(version)
        ));
    }
    for (offset, value) in [
        (STATE_OFFSET, 0u32),
        (STATE_OFFSET, 4),
        (CORE_COUNT_OFFSET, 0),
        (REQUEST_RING_BYTES_OFFSET, 3000),
        (RESPONSE_RING_BYTES_OFFSET, 2048),
    ] {
        let mut bad = page.clone();
        bad[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        let err = InstanceHeader::read(&bad).unwrap_err();
        assert!(
            matches!(err, HeaderError::BadField { offset: o, .. } if o == offset),
            "{err}"
        );
    }
    assert_eq!(InstanceState::from_u32(1), Some(InstanceState::Starting));
    assert_eq!(InstanceState::from_u32(3), Some(InstanceState::Stopped));
}

#[test]
fn ring_segment_layout() {
    use ring_segment::*;
    assert_eq!(HEADER_BYTES, PAGE_BYTES);
    assert_eq!(&MAGIC, b"VEDDBRNG");
    let statics = [
        (MAGIC_OFFSET, 8),
        (VERSION_OFFSET, 2),
        (0x00A, 2),
        (CORE_OFFSET, 4),
        (SESSION_ID_OFFSET, 8),
        (REQUEST_RING_BYTES_OFFSET, 4),
        (RESPONSE_RING_BYTES_OFFSET, 4),
        (INSTANCE_ID_OFFSET, 8),
    ];
    check_contiguous(&statics, 0x028);
    const { assert!(0x028 <= STATIC_END_OFFSET && STATIC_END_OFFSET == 0x040) };
    // The live words, as listed, each on its own line (heartbeat shares the pin's line, the
    // reason the status's: both written by the same side).
    assert_eq!(REQUEST_HEAD_OFFSET, 0x080);
    assert_eq!(RESPONSE_HEAD_OFFSET, 0x100);
    assert_eq!(CLIENT_WAIT_OFFSET, 0x140);
    assert_eq!(CLIENT_EPOCH_PIN_OFFSET, 0x180);
    assert_eq!(CLIENT_HEARTBEAT_OFFSET, 0x188);
    assert_eq!(CLIENT_EPOCH_PIN_NEWEST_OFFSET, 0x190);
    assert_eq!(SERVER_STATUS_OFFSET, 0x1C0);
    assert_eq!(DISCONNECT_REASON_OFFSET, 0x1C4);
    let lines = [
        REQUEST_HEAD_OFFSET,
        RESPONSE_HEAD_OFFSET,
        CLIENT_WAIT_OFFSET,
        CLIENT_EPOCH_PIN_OFFSET,
        SERVER_STATUS_OFFSET,
    ];
    let distinct: BTreeSet<usize> = lines.iter().map(|&o| line(o)).collect();
    assert_eq!(distinct.len(), lines.len());
    assert!(lines.iter().all(|&o| o % CACHE_LINE_BYTES == 0));
    assert!(
        !distinct.contains(&line(MAGIC_OFFSET)),
        "not on the static line"
    );
    assert_eq!(line(CLIENT_HEARTBEAT_OFFSET), line(CLIENT_EPOCH_PIN_OFFSET));
    assert_eq!(line(DISCONNECT_REASON_OFFSET), line(SERVER_STATUS_OFFSET));
    assert_eq!(
        line(CLIENT_EPOCH_PIN_NEWEST_OFFSET),
        line(CLIENT_EPOCH_PIN_OFFSET)
    );
    assert_eq!(CLIENT_HEARTBEAT_OFFSET % 8, 0);
    assert_eq!(CLIENT_EPOCH_PIN_NEWEST_OFFSET % 8, 0);
    assert_eq!(DISCONNECT_REASON_OFFSET % 4, 0);
    const { assert!(DISCONNECT_REASON_OFFSET + 4 <= RESERVED_TAIL_OFFSET) };
    const { assert!(RESERVED_TAIL_OFFSET <= HEADER_BYTES) };
    // Rings after the header.
    assert_eq!(REQUEST_RING_OFFSET, 0x1000);
    assert_eq!(response_ring_offset(1 << 16), 0x1000 + (1 << 16));
    assert_eq!(
        segment_bytes(1 << 16, 1 << 17),
        0x1000 + (1 << 16) + (1 << 17)
    );
    assert_eq!(segment_bytes(4096, 4096) % PAGE_BYTES, 0);
    assert_eq!((CLIENT_AWAKE, CLIENT_SLEEPING), (0, 1));
    assert_eq!((SERVER_ATTACHED, SERVER_DISCONNECTED), (0, 1));
    assert_eq!(EPOCH_PIN_NONE, 0);
}

#[test]
fn ring_header_round_trips() {
    use ring_segment::*;
    let header = RingHeader {
        core: 3,
        session_id: 99,
        request_ring_bytes: 1 << 16,
        response_ring_bytes: 1 << 18,
        instance_id: 7,
    };
    let mut page = vec![0xEE; HEADER_BYTES + 10];
    header.write_to(&mut page);
    // Every live field zero, but the client's CPU: not known yet.
    assert_eq!(
        page[CLIENT_CPU_OFFSET..CLIENT_CPU_OFFSET + 4],
        data_segment::CPU_UNKNOWN.to_le_bytes()
    );
    assert!(page[STATIC_END_OFFSET..HEADER_BYTES]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == 0
            || (CLIENT_CPU_OFFSET..CLIENT_CPU_OFFSET + 4).contains(&(STATIC_END_OFFSET + i))));
    assert!(page[HEADER_BYTES..].iter().all(|&b| b == 0xEE));
    assert_eq!(RingHeader::read(&page).unwrap(), header);
    let mut bad = page.clone();
    bad[REQUEST_RING_BYTES_OFFSET..REQUEST_RING_BYTES_OFFSET + 4]
        .copy_from_slice(&(1u32 << 31).to_le_bytes());
    assert!(RingHeader::read(&bad).is_err());
}

#[test]
fn data_segment_layout() {
    use data_segment::*;
    assert_eq!(HEADER_BYTES, PAGE_BYTES);
    assert_eq!(&MAGIC, b"VEDDBDAT");
    let statics = [
        (MAGIC_OFFSET, 8),
        (VERSION_OFFSET, 2),
        (0x00A, 2),
        (CORE_OFFSET, 4),
        (INSTANCE_ID_OFFSET, 8),
        (ARENA_OFFSET_OFFSET, 8),
        (ARENA_BYTES_OFFSET, 8),
    ];
    check_contiguous(&statics, 0x028);
    assert_eq!(STATIC_END_OFFSET, 0x040);
    assert_eq!(GLOBAL_EPOCH_OFFSET, 0x040);
    assert_eq!(CORE_PARKED_OFFSET, 0x080);
    assert_ne!(line(GLOBAL_EPOCH_OFFSET), line(CORE_PARKED_OFFSET));
    assert_ne!(line(GLOBAL_EPOCH_OFFSET), line(MAGIC_OFFSET));
    const { assert!(RESERVED_TAIL_OFFSET <= HEADER_BYTES) };
    assert_eq!(ARENA_OFFSET, 0x1000);
    assert_eq!(EPOCH_FIRST, 1);

    let header = DataHeader::new(2, 5, 1 << 20);
    assert_eq!(header.arena_bytes, (1 << 20) - 0x1000);
    let mut page = vec![0xFF; HEADER_BYTES];
    header.write_to(&mut page);
    assert_eq!(
        &page[GLOBAL_EPOCH_OFFSET..GLOBAL_EPOCH_OFFSET + 8],
        &EPOCH_FIRST.to_le_bytes()
    );
    assert_eq!(DataHeader::read(&page, 1 << 20).unwrap(), header);
    // An arena larger than the mapping is refused.
    assert!(DataHeader::read(&page, (1 << 20) - 8).is_err());
}

#[test]
fn arena_blocks() {
    use arena::*;
    assert_eq!(BLOCK_HEADER_BYTES, 16);
    assert_eq!(
        (GENERATION_OFFSET, VALUE_LEN_OFFSET, SIZE_CLASS_OFFSET),
        (0, 8, 12)
    );
    assert_eq!(MIN_SIZE_CLASS, 5);
    assert_eq!(block_bytes(4), None);
    assert_eq!(block_bytes(5), Some(32));
    assert_eq!(block_bytes(MAX_SIZE_CLASS + 1), None);
    assert_eq!(size_class_for(0), 5);
    assert_eq!(size_class_for(16), 5);
    assert_eq!(size_class_for(17), 6);
    assert_eq!(size_class_for(48), 6);
    assert_eq!(size_class_for(49), 7);
    assert_eq!(size_class_for(u32::MAX), MAX_SIZE_CLASS);
    for len in [0u32, 1, 15, 16, 17, 1000, 1 << 20, u32::MAX] {
        let size = block_bytes(size_class_for(len)).unwrap();
        assert!(size.is_power_of_two() && size >= MIN_BLOCK_BYTES);
        assert!(16 + u64::from(len) <= size);
        assert!(size == MIN_BLOCK_BYTES || 16 + u64::from(len) > size / 2);
    }

    let arena_offset = 0x1000;
    let arena_bytes = 1 << 20;
    let header = |generation: u64, len: u32, class: u32| {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&generation.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..].copy_from_slice(&class.to_le_bytes());
        h
    };
    // A 64-byte block at arena offset 128 holding 40 bytes.
    let value_at = value_offset(arena_offset + 128);
    assert!(check_block(
        arena_offset,
        arena_bytes,
        value_at,
        40,
        9,
        header(9, 40, 6)
    ));
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        value_at,
        40,
        8,
        header(9, 40, 6)
    ));
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        value_at,
        41,
        9,
        header(9, 40, 6)
    ));
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        value_at,
        49,
        9,
        header(9, 49, 6)
    ));
    // Misaligned for its class.
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        value_at,
        40,
        9,
        header(9, 40, 8)
    ));
    // Before the arena, past the arena, bad classes.
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        8,
        0,
        9,
        header(9, 0, 5)
    ));
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        0x1000,
        0,
        9,
        header(9, 0, 5)
    ));
    let last = value_offset(arena_offset + arena_bytes - 32);
    assert!(check_block(
        arena_offset,
        arena_bytes,
        last,
        16,
        1,
        header(1, 16, 5)
    ));
    let past = value_offset(arena_offset + arena_bytes);
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        past,
        16,
        1,
        header(1, 16, 5)
    ));
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        value_at,
        0,
        9,
        header(9, 0, 4)
    ));
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        value_at,
        0,
        9,
        header(9, 0, 99)
    ));
    assert!(!check_block(
        arena_offset,
        arena_bytes,
        u64::MAX,
        0,
        9,
        header(9, 0, 5)
    ));
}

#[test]
fn ring_constants() {
    use ring::*;
    assert_eq!(FRAME_HEADER_BYTES, 8);
    assert_eq!(FRAME_ALIGN, 64);
    assert_eq!(WRAP_MARKER, 0xFFFF_FFFF);
    assert!(MIN_RING_BYTES.is_power_of_two() && MAX_RING_BYTES.is_power_of_two());
    assert_eq!(max_frame_payload(4096), 2040);
    assert_eq!(max_frame_payload(MAX_RING_BYTES), MAX_FRAME_PAYLOAD);
    const { assert!(MAX_FRAME_PAYLOAD < WRAP_MARKER) };
    // Frames are whole cache lines.
    assert_eq!(frame_space(0), 64);
    assert_eq!(frame_space(56), 64);
    assert_eq!(frame_space(57), 128);
    assert_eq!(frame_space(2040), 2048);
    assert_eq!(frame_space(usize::MAX) % 64, 0);
    assert_eq!(frame_header(5), [5, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(
        frame_header(WRAP_MARKER),
        [0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0]
    );
    assert_eq!(u64::from_le_bytes(frame_header(5)), header_word(5));
    assert_ne!(
        header_word(0),
        EMPTY_HEADER,
        "an empty frame is not an empty header"
    );
    for payload in [
        0usize,
        1,
        2040,
        2041,
        1 << 20,
        limits::VALUE_BYTES_MAX_DEFAULT + 100,
    ] {
        let bytes = ring_bytes_for_payload(payload).unwrap();
        assert!(check_ring_bytes(bytes).is_ok());
        assert!(max_frame_payload(bytes) as usize >= payload);
        assert!(bytes == MIN_RING_BYTES || (max_frame_payload(bytes / 2) as usize) < payload);
    }
    assert_eq!(
        ring_bytes_for_payload(MAX_FRAME_PAYLOAD as usize),
        Some(MAX_RING_BYTES)
    );
    assert_eq!(ring_bytes_for_payload(MAX_FRAME_PAYLOAD as usize + 1), None);
    // Every header fits: a payload header within any frame.
    assert!(PAYLOAD_HEADER_BYTES <= max_frame_payload(MIN_RING_BYTES) as usize);
}

#[test]
fn reason_codes() {
    use reason::*;
    assert_eq!(
        [
            NONE,
            BAD_INDICES,
            BAD_FRAME,
            FRAME_TOO_LARGE,
            HEARTBEAT_TIMEOUT,
            SERVER_STOPPING,
            RESPONSE_BACKLOG
        ],
        [0, 1, 2, 3, 4, 5, 6]
    );
    let names: BTreeSet<&str> = (0..=6).map(describe).collect();
    assert_eq!(names.len(), 7);
    assert_eq!(describe(7), "unknown reason");
}

// ---------------------------------------------------------------------------------------------
// Ring indices

#[test]
fn validate_indices_edge_cases() {
    use ring::*;
    let size = 4096u32;
    assert_eq!(validate_indices(0, 0, size), Ok(()));
    assert_eq!(validate_indices(0, 4096, size), Ok(()));
    assert_eq!(validate_indices(64, 4160, size), Ok(()));
    assert_eq!(
        validate_indices(0, 4160, size),
        Err(RingError::Overfull {
            used: 4160,
            size: 4096
        })
    );
    assert_eq!(
        validate_indices(128, 64, size),
        Err(RingError::HeadPastTail {
            head: 128,
            tail: 64
        })
    );
    // Counters are multiples of a line (FRAME_ALIGN).
    for (head, tail, index, value) in [(4, 64, "head", 4), (8, 64, "head", 8), (64, 72, "tail", 72)]
    {
        assert_eq!(
            validate_indices(head, tail, size),
            Err(RingError::Misaligned { index, value })
        );
    }
    // Counters far along (free-running), up to COUNTER_MAX (2^63), so that no sum the ends
    // compute can overflow; past it, refused.
    let top = COUNTER_MAX;
    assert_eq!(validate_indices(top - 4096, top, size), Ok(()));
    assert_eq!(validate_indices(top, top, size), Ok(()));
    assert!(validate_indices(0, top, size).is_err());
    assert!(validate_indices(top, 0, size).is_err());
    assert_eq!(
        validate_indices(top, top + 64, size),
        Err(RingError::CounterTooLarge {
            index: "tail",
            value: top + 64
        })
    );
    assert!(validate_indices(u64::MAX - 7, u64::MAX - 7, size).is_err());
    assert!(validate_indices(u64::MAX - 7, 0, size).is_err());
    assert!(validate_indices(u64::MAX, u64::MAX, size).is_err());
    // Bad sizes.
    for bad in [0u32, 8, 2048, 3000, 4097, 1 << 31, u32::MAX] {
        assert_eq!(
            validate_indices(0, 0, bad),
            Err(RingError::BadSize { size: bad.into() }),
            "{bad}"
        );
    }
    assert!(validate_indices(0, 0, MAX_RING_BYTES).is_ok());
    // Reason codes.
    assert_eq!(
        validate_indices(4, 8, size).unwrap_err().reason(),
        reason::BAD_INDICES
    );
    assert!(validate_indices(128, 64, size)
        .unwrap_err()
        .to_string()
        .contains("past the tail"));
}

#[test]
fn check_frame_refuses_hostile_headers() {
    use ring::*;
    let size = 4096u32;
    let frame = |len: u32, flags: u32| u64::from(len) | (u64::from(flags) << 32);
    assert_eq!(check_frame(0, size, EMPTY_HEADER), Ok(FrameStep::Empty));
    assert_eq!(
        check_frame(0, size, frame(3, FRAME_FLAGS)),
        Ok(FrameStep::Frame {
            payload_pos: 8,
            payload_len: 3,
            next_head: 64
        })
    );
    assert_eq!(
        check_frame(4096 * 3 + 64, size, frame(0, FRAME_FLAGS)),
        Ok(FrameStep::Frame {
            payload_pos: 72,
            payload_len: 0,
            next_head: 4096 * 3 + 128
        })
    );
    // Flags, too large, past the end.
    for flags in [0, 2, u32::MAX] {
        let err = check_frame(0, size, frame(3, flags)).unwrap_err();
        assert_eq!(err, RingError::BadFlags { position: 0, flags });
        assert_eq!(err.reason(), reason::BAD_FRAME);
    }
    let err = check_frame(0, size, frame(2041, FRAME_FLAGS)).unwrap_err();
    assert_eq!(err.reason(), reason::FRAME_TOO_LARGE);
    assert_eq!(
        check_frame(0, size, frame(2040, FRAME_FLAGS)).unwrap(),
        FrameStep::Frame {
            payload_pos: 8,
            payload_len: 2040,
            next_head: 2048
        }
    );
    let err = check_frame(4032, size, frame(57, FRAME_FLAGS)).unwrap_err();
    assert!(err.to_string().contains("end of the ring"), "{err}");
    assert!(check_frame(4032, size, frame(56, FRAME_FLAGS)).is_ok());
    // Wrap markers: fine near the end, never at 0...
    assert_eq!(
        check_frame(4032, size, header_word(WRAP_MARKER)),
        Ok(FrameStep::Wrap { next_head: 4096 })
    );
    assert!(check_frame(4096, size, header_word(WRAP_MARKER)).is_err());
    // ... and never with half the ring or more left to the end (a frame is less than half the
    // ring, so the producer would have placed it there).
    let err = check_frame(1024, size, header_word(WRAP_MARKER)).unwrap_err();
    assert!(err.to_string().contains("half the ring"), "{err}");
    assert!(check_frame(2048, size, header_word(WRAP_MARKER)).is_err());
    assert_eq!(
        check_frame(2112, size, header_word(WRAP_MARKER)),
        Ok(FrameStep::Wrap { next_head: 4096 })
    );
    // A bad head is reported as bad indices, even before an empty header.
    for head in [3, 8, COUNTER_MAX + 64] {
        assert_eq!(
            check_frame(head, size, EMPTY_HEADER).unwrap_err().reason(),
            reason::BAD_INDICES
        );
    }
    assert!(check_frame(0, 2048, EMPTY_HEADER).is_err());
}

/// A consumer can set its head to the largest counter before the producer attaches (the
/// producer starts from that head): the first frame that would take the tail past it is an
/// error, never a tail the next check rejects (a fuzzer's find).
#[test]
fn plan_write_never_takes_the_tail_past_the_largest_counter() {
    use ring::*;
    let size = 4096u32;
    assert!(matches!(
        plan_write(COUNTER_MAX, COUNTER_MAX, size, 10),
        Err(RingError::CounterTooLarge { index: "tail", .. })
    ));
    assert_eq!(
        plan_write(COUNTER_MAX - 64, COUNTER_MAX - 64, size, 56)
            .unwrap()
            .map(|plan| plan.new_tail),
        Some(COUNTER_MAX)
    );
    assert!(plan_write(COUNTER_MAX - 64, COUNTER_MAX - 64, size, 57).is_err());
}

#[test]
fn plan_write_wraps_and_waits() {
    use ring::*;
    let size = 4096u32;
    assert_eq!(
        plan_write(0, 0, size, 10),
        Ok(Some(WritePlan {
            wrap_at: None,
            frame_pos: 0,
            terminator_pos: 64,
            new_tail: 64
        }))
    );
    // 64 bytes left before the end: a 60-byte payload needs 128, so wrap.
    assert_eq!(
        plan_write(3968, 4032, size, 60),
        Ok(Some(WritePlan {
            wrap_at: Some(4032),
            frame_pos: 0,
            terminator_pos: 128,
            new_tail: 4096 + 128
        }))
    );
    // Exactly the contiguous space left: no wrap, the terminator at position 0.
    assert_eq!(
        plan_write(3968, 4032, size, 56),
        Ok(Some(WritePlan {
            wrap_at: None,
            frame_pos: 4032,
            terminator_pos: 0,
            new_tail: 4096
        }))
    );
    // Full: wait. The terminator needs room too: one free line takes nothing.
    assert_eq!(plan_write(0, 4096, size, 0), Ok(None));
    assert_eq!(plan_write(0, 4032, size, 0), Ok(None));
    assert!(plan_write(0, 3968, size, 0).unwrap().is_some());
    assert_eq!(plan_write(0, 3968, size, 57), Ok(None));
    // The wrap's padding counts: head at 128 leaves 64 + 128 free, but wrapping a two-line
    // frame needs 64 + 128 and the terminator.
    assert_eq!(plan_write(128, 4032, size, 60), Ok(None));
    assert!(plan_write(192, 4032, size, 60).unwrap().is_some());
    // Too large is an error, bad head too.
    assert!(matches!(
        plan_write(0, 0, size, 2041),
        Err(RingError::FrameTooLarge {
            length: 2041,
            max: 2040
        })
    ));
    assert!(plan_write(0, 0, size, 2040).unwrap().is_some());
    // An empty ring takes a largest frame wherever its head is.
    for head in (0..8192u64).step_by(64) {
        assert!(
            plan_write(head, head, size, 2040).unwrap().is_some(),
            "{head}"
        );
    }
    assert!(plan_write(128, 64, size, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A producer and a consumer driven by plan_write and check_frame over one byte ring, in
    /// the order the ring publishes (payload, terminator, header, then a wrap marker): every
    /// frame arrives once, in order, intact; the consumer finds an empty header exactly when
    /// everything sent was taken; and the indices always validate.
    #[test]
    fn ring_helpers_carry_frames_in_order(
        size_shift in 12u32..14,
        ops in proptest::collection::vec((any::<bool>(), 0usize..3000), 1..300),
    ) {
        use ring::*;
        let size = 1u32 << size_shift;
        let mask = u64::from(size) - 1;
        let mut ring = vec![0u8; size as usize];
        let (mut head, mut tail) = (0u64, 0u64);
        let mut sent = std::collections::VecDeque::new();
        let mut next = 0u32;
        let word = |ring: &[u8], at: u64| {
            let pos = (at & mask) as usize;
            u64::from_le_bytes(ring[pos..pos + 8].try_into().unwrap())
        };
        for (produce, len) in ops {
            let len = len % (max_frame_payload(size) as usize + 1);
            if produce {
                if let Some(plan) = plan_write(head, tail, size, len).unwrap() {
                    let payload: Vec<u8> = (0..len).map(|i| (next as usize + i) as u8).collect();
                    let at = plan.frame_pos;
                    ring[at + 8..at + 8 + len].copy_from_slice(&payload);
                    let t = plan.terminator_pos;
                    ring[t..t + 8].copy_from_slice(&EMPTY_HEADER.to_le_bytes());
                    ring[at..at + 8].copy_from_slice(&frame_header(len as u32));
                    if let Some(at) = plan.wrap_at {
                        ring[at..at + 8].copy_from_slice(&frame_header(WRAP_MARKER));
                    }
                    prop_assert_eq!(plan.new_tail % FRAME_ALIGN as u64, 0);
                    prop_assert_eq!(plan.terminator_pos as u64, plan.new_tail & mask);
                    tail = plan.new_tail;
                    sent.push_back(payload);
                    next += 1;
                }
            } else {
                loop {
                    match check_frame(head, size, word(&ring, head)).unwrap() {
                        FrameStep::Empty => {
                            prop_assert!(sent.is_empty() && head == tail);
                            break;
                        }
                        FrameStep::Wrap { next_head } => head = next_head,
                        FrameStep::Frame { payload_pos, payload_len, next_head } => {
                            let expected = sent.pop_front().unwrap();
                            prop_assert_eq!(&ring[payload_pos..payload_pos + payload_len], &expected[..]);
                            head = next_head;
                            break;
                        }
                    }
                }
            }
            prop_assert!(validate_indices(head, tail, size).is_ok());
        }
        // Drain.
        loop {
            match check_frame(head, size, word(&ring, head)).unwrap() {
                FrameStep::Empty => break,
                FrameStep::Wrap { next_head } => head = next_head,
                FrameStep::Frame { payload_pos, payload_len, next_head } => {
                    let expected = sent.pop_front().unwrap();
                    prop_assert_eq!(&ring[payload_pos..payload_pos + payload_len], &expected[..]);
                    head = next_head;
                }
            }
        }
        prop_assert!(sent.is_empty());
        prop_assert_eq!(head, tail);
    }

    /// check_frame on arbitrary heads and header words never panics, and anything it accepts
    /// stays inside the ring.
    #[test]
    fn check_frame_never_panics(head in any::<u64>(), size_shift in 0u32..32, header in any::<u64>()) {
        use ring::*;
        let size = 1u32.checked_shl(size_shift).unwrap_or(0);
        match check_frame(head, size, header) {
            Ok(FrameStep::Frame { payload_pos, payload_len, next_head }) => {
                prop_assert!(payload_pos + payload_len <= size as usize);
                prop_assert!(next_head - head <= u64::from(size) / 2);
            }
            Ok(FrameStep::Wrap { next_head }) => {
                prop_assert!(next_head - head < u64::from(size) / 2);
                prop_assert_eq!(next_head & (u64::from(size) - 1), 0);
            }
            Ok(FrameStep::Empty) => prop_assert_eq!(header, EMPTY_HEADER),
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pushed subscriptions: SUBSCRIBE_PUSH and DELIVERY frames

/// A delivery frame as the server writes it: the header, then each message's length and bytes.
fn encode_delivery(subscriber: SubscriberId, dropped: u64, messages: &[Vec<u8>]) -> Vec<u8> {
    encode_delivery_vec(subscriber, dropped, messages.iter())
}

/// Whatever `delivery` accepts re-encodes to the same bytes (canonical), and never panics.
fn check_canonical_delivery(bytes: &[u8]) {
    if let Ok(Some(delivery)) = delivery(bytes) {
        let messages: Vec<Vec<u8>> = delivery.messages().map(|r| bytes[r].to_vec()).collect();
        assert_eq!(messages.len(), delivery.len());
        assert_eq!(
            encode_delivery(delivery.subscriber, delivery.dropped, &messages),
            bytes
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn delivery_round_trip(
        subscriber in any::<u64>(),
        dropped in any::<u64>(),
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
    ) {
        let bytes = encode_delivery(SubscriberId(subscriber), dropped, &messages);
        prop_assert_eq!(payload_id(&bytes), Some(DELIVERY_ID));
        let decoded = delivery(&bytes).unwrap().expect("a delivery");
        prop_assert_eq!(decoded.subscriber, SubscriberId(subscriber));
        prop_assert_eq!(decoded.dropped, dropped);
        prop_assert_eq!(decoded.len(), messages.len());
        let back: Vec<Vec<u8>> = decoded.messages().map(|r| bytes[r].to_vec()).collect();
        prop_assert_eq!(&back, &messages);
        // Not an answer to anything: the response decoder does not take it.
        prop_assert!(decode_response(&bytes).is_err());
        // Every truncation, and any byte more, is an error (past the id and kind).
        for cut in 5..bytes.len() {
            prop_assert!(delivery(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(delivery(&longer).is_err());
    }

    #[test]
    fn push_subscribe_round_trip(id in 1u32.., topic in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut bytes = Vec::new();
        encode_push_subscribe_request(id, &topic, &mut bytes);
        prop_assert_eq!(bytes.len(), push_subscribe_request_len(topic.len()));
        prop_assert_eq!(push_subscribe_request(&bytes), Some((id, &topic[..])));
        // Not a `Request`: the general decoder refuses it (the local frontend reads it first).
        prop_assert!(decode_request(&bytes).is_err());
        for cut in 0..bytes.len() {
            prop_assert_eq!(push_subscribe_request(&bytes[..cut]), None);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(push_subscribe_request(&longer), None);
    }

    #[test]
    fn arbitrary_deliveries_never_panic(
        fields in proptest::collection::vec(prop_oneof![4 => 0u8..4, 1 => any::<u8>()], 0..120)
    ) {
        let mut bytes = vec![0, 0, 0, 0, kind::DELIVERY];
        bytes.extend_from_slice(&fields);
        check_canonical_delivery(&bytes);
        bytes[4] = opcode::SUBSCRIBE_PUSH;
        let _ = push_subscribe_request(&bytes);
    }
}

#[test]
fn delivery_layout_is_as_documented() {
    let bytes = encode_delivery(
        SubscriberId(0x0001_0000_0000_0007),
        3,
        &[b"ab".to_vec(), Vec::new()],
    );
    let mut expected = vec![0, 0, 0, 0, 18];
    expected.extend_from_slice(&0x0001_0000_0000_0007u64.to_le_bytes());
    expected.extend_from_slice(&3u64.to_le_bytes());
    expected.extend_from_slice(&2u32.to_le_bytes());
    expected.extend_from_slice(&[2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
    assert_eq!(bytes, expected);
    assert_eq!(DELIVERY_HEADER_BYTES, 25);
    // An answer to a request (id 1) with the DELIVERY kind is not a delivery.
    let mut answer = bytes.clone();
    answer[0] = 1;
    assert_eq!(delivery(&answer), Ok(None));
    // A count larger than the bytes could hold is refused before anything is read.
    let mut lying = bytes.clone();
    lying[21..25].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(delivery(&lying).is_err());
    let mut request = Vec::new();
    encode_push_subscribe_request(7, b"t", &mut request);
    assert_eq!(request, [7, 0, 0, 0, 20, 1, 0, 0, 0, b't']);
}
