//! Writes the seed corpus of the fuzz targets in `wire/fuzz` (valid inputs of every decoder,
//! so the fuzzer starts deep inside them): `cargo run -p veddb-wire --example wire_fuzz_seeds --
//! wire/fuzz/corpus`. The output is deterministic; the corpus is committed.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use veddb_wire::grpc::{encode_batch, encode_unary, frame, Method};
use veddb_wire::grpc_client::{encode_batch_request, encode_subscribe_request};
use veddb_wire::shm::codec::{all_inline, encode_request_vec, encode_response_vec};
use veddb_wire::shm::layout::attach::AttachReply;
use veddb_wire::shm::layout::data_segment::{self, DataHeader};
use veddb_wire::shm::layout::instance::{self, InstanceHeader, InstanceState};
use veddb_wire::shm::layout::ring_segment::{self, RingHeader};
use veddb_wire::{
    Error, Info, Request, Response, SetCondition, SetOptions, ShardStats, SubscriberId, Ttl,
};

fn requests() -> Vec<Request> {
    let key = Bytes::from_static(b"user:42");
    let value = Bytes::from_static(b"a value of some bytes");
    vec![
        Request::Ping,
        Request::Get { key: key.clone() },
        Request::Set {
            key: key.clone(),
            value: value.clone(),
            options: SetOptions::default(),
        },
        Request::Set {
            key: key.clone(),
            value: value.clone(),
            options: SetOptions {
                ttl_ms: Some(60_000),
                condition: SetCondition::IfAbsent,
                keep_ttl: false,
            },
        },
        Request::Delete { key: key.clone() },
        Request::Exists { key: key.clone() },
        Request::Cas {
            key: key.clone(),
            expected_version: 7,
            value: value.clone(),
            ttl_ms: Some(5),
        },
        Request::Incr {
            key: key.clone(),
            delta: -3,
        },
        Request::Expire {
            key: key.clone(),
            ttl_ms: 1000,
        },
        Request::Ttl { key: key.clone() },
        Request::Persist { key: key.clone() },
        Request::MGet {
            keys: vec![key.clone(), Bytes::from_static(b"other")],
        },
        Request::MSet {
            pairs: vec![
                (key.clone(), value.clone()),
                (Bytes::from_static(b"b"), value.clone()),
            ],
        },
        Request::Scan {
            cursor: Bytes::from_static(b"user:"),
            prefix: Bytes::from_static(b"user"),
            count: 100,
        },
        Request::Subscribe {
            topic: Bytes::from_static(b"news"),
        },
        Request::Unsubscribe {
            subscriber: SubscriberId(0x0001_0000_0000_0005),
        },
        Request::Publish {
            topic: Bytes::from_static(b"news"),
            message: value.clone(),
        },
        Request::Fetch {
            subscriber: SubscriberId(3),
            max: 16,
            wait_ms: 100,
        },
        Request::Info,
        Request::Snapshot,
    ]
}

fn responses() -> Vec<Response> {
    let value = Bytes::from_static(b"a value");
    vec![
        Response::Pong,
        Response::Value {
            value: value.clone(),
            version: 3,
        },
        Response::NotFound,
        Response::Stored { version: 9 },
        Response::NotStored,
        Response::VersionMismatch { current: 4 },
        Response::Integer {
            value: -12,
            version: 2,
        },
        Response::Bool(true),
        Response::Ttl(Ttl::Remaining(1500)),
        Response::Ttl(Ttl::Persistent),
        Response::Values(vec![Some((value.clone(), 1)), None]),
        Response::Ok,
        Response::Keys {
            keys: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            cursor: Bytes::from_static(b"b"),
        },
        Response::Subscribed {
            subscriber: SubscriberId(5),
        },
        Response::Published { receivers: 2 },
        Response::Messages {
            messages: vec![value.clone(), Bytes::from_static(b"second")],
            dropped: 1,
        },
        Response::Info(Info {
            shards: vec![ShardStats::default(), ShardStats::default()],
        }),
        Response::Error(Error::NotAnInteger),
        Response::Error(Error::KeyTooLarge {
            length: 70_000,
            limit: 65_536,
        }),
    ]
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let folder = dir.join(target);
    std::fs::create_dir_all(&folder).expect("create the corpus folder");
    std::fs::write(folder.join(name), bytes).expect("write a seed");
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "wire/fuzz/corpus".to_owned()),
    );
    let mut count = 0;
    let mut seed = |target: &str, name: String, bytes: &[u8]| {
        write(&dir, target, &name, bytes);
        count += 1;
    };
    for (i, request) in requests().iter().enumerate() {
        let payload = encode_request_vec(i as u32 + 1, request);
        seed("shm_request", format!("request-{i:02}"), &payload);
        if let Ok(message) = encode_batch_request(request) {
            let mut with_selector = vec![Method::ALL.len() as u8];
            with_selector.extend_from_slice(&message);
            seed(
                "grpc_server_messages",
                format!("batch-{i:02}"),
                &with_selector,
            );
            let mut framed = Vec::new();
            frame(&message, &mut framed);
            frame(&message, &mut framed);
            let mut chunks = vec![4u8];
            for piece in framed.chunks(7) {
                chunks.extend_from_slice(&(piece.len() as u16).to_le_bytes());
                chunks.extend_from_slice(piece);
            }
            seed("grpc_deframer", format!("two-messages-{i:02}"), &chunks);
        }
    }
    // The rings' pushed subscriptions: SUBSCRIBE_PUSH and a DELIVERY of two messages.
    let mut push = Vec::new();
    veddb_wire::shm::codec::encode_push_subscribe_request(7, b"news", &mut push);
    seed("shm_request", "subscribe-push".to_owned(), &push);
    let delivery = veddb_wire::shm::codec::encode_delivery_vec(
        veddb_wire::SubscriberId(1 << 48 | 7),
        2,
        [&b"abc"[..], b""].into_iter(),
    );
    seed("shm_response", "delivery".to_owned(), &delivery);
    let mut subscribe = vec![Method::ALL.len() as u8 + 1];
    subscribe.extend_from_slice(&encode_subscribe_request(Bytes::from_static(b"news")));
    seed("grpc_server_messages", "subscribe".to_owned(), &subscribe);
    seed(
        "grpc_server_messages",
        "timeout".to_owned(),
        &[Method::ALL.len() as u8 + 3, b'1', b'0', b'0', b'm'],
    );
    for (i, response) in responses().iter().enumerate() {
        let payload = encode_response_vec(i as u32 + 1, response, all_inline);
        seed("shm_response", format!("response-{i:02}"), &payload);
        for (m, method) in Method::ALL.iter().enumerate() {
            if !method.is_unary() || method.is_health() {
                continue;
            }
            if let Ok(message) = encode_unary(*method, b"key", response.clone()) {
                let mut with_selector = vec![m as u8];
                with_selector.extend_from_slice(&message);
                seed(
                    "grpc_server_messages",
                    format!("unary-{m:02}-{i:02}"),
                    &with_selector,
                );
            }
            let batch = encode_batch(*method, b"key", response.clone());
            let mut with_selector = vec![m as u8];
            with_selector.extend_from_slice(&batch);
            seed(
                "grpc_client_messages",
                format!("batch-{m:02}-{i:02}"),
                &with_selector,
            );
        }
    }
    let reply = AttachReply {
        core_count: 2,
        session_id: 77,
        instance_id: 0xDEAD_BEEF,
        request_ring_bytes: 1 << 16,
        response_ring_bytes: 1 << 16,
        data_segment_bytes: 1 << 24,
        view_lease_ms: 10_000,
    };
    let mut attach = vec![0u8];
    attach.extend_from_slice(&reply.encode());
    seed("shm_headers", "attach-reply".to_owned(), &attach);
    let mut refused = vec![0u8];
    refused.extend_from_slice(b"VEDDBNO!the instance is stopping");
    seed("shm_headers", "attach-refused".to_owned(), &refused);
    let mut page = vec![1u8; instance::FILE_BYTES + 1];
    InstanceHeader {
        core_count: 2,
        server_pid: 1234,
        start_time_ms: 1_700_000_000_000,
        instance_id: 0xDEAD_BEEF,
        state: InstanceState::Ready,
        request_ring_bytes: 1 << 16,
        response_ring_bytes: 1 << 16,
        data_segment_bytes: 1 << 24,
    }
    .write_to(&mut page[1..]);
    seed("shm_headers", "instance".to_owned(), &page);
    let mut ring = vec![2u8; ring_segment::HEADER_BYTES + 1];
    RingHeader {
        core: 1,
        session_id: 77,
        request_ring_bytes: 1 << 16,
        response_ring_bytes: 1 << 16,
        instance_id: 0xDEAD_BEEF,
    }
    .write_to(&mut ring[1..]);
    seed("shm_headers", "ring-segment".to_owned(), &ring);
    let segment_bytes: u64 = 1 << 24;
    let mut data = vec![3u8];
    data.extend_from_slice(&segment_bytes.to_le_bytes());
    let start = data.len();
    data.resize(start + data_segment::HEADER_BYTES, 0);
    DataHeader::new(0, 0xDEAD_BEEF, segment_bytes).write_to(&mut data[start..]);
    seed("shm_headers", "data-segment".to_owned(), &data);
    println!("wrote {count} seeds under {}", dir.display());
}
