//! The checks of the fuzz targets in `wire/fuzz`, one function per target, kept here so that
//! the regression tests run exactly what the fuzzer ran: every input that once failed is kept
//! under `wire/fuzz/regressions/<target>/` and replayed by `tests/fuzz_regressions.rs`. Each
//! function panics when a decoder breaks a rule (a panic inside a decoder, a round trip that
//! does not hold, a limit not kept); none does I/O.

use crate::grpc::{
    decode_batch, decode_health, decode_subscribe, decode_unary, grpc_timeout,
    percent_decode_message, Method,
};
use crate::grpc::{whole_message, Deframer};
use crate::grpc_client::{
    decode_batch_response, decode_info, decode_snapshot, decode_subscribe_event,
};
use crate::shm::codec::{
    decode_request, decode_request_bytes, decode_response, delivery, delivery_part,
    encode_delivery_part_header, encode_delivery_vec, encode_push_subscribe_request,
    encode_request_vec, encode_upload_header, fill_uploaded_values, has_uploaded_values,
    payload_id, push_subscribe_request, upload_chunk, UPLOAD_HEADER_BYTES,
};
use crate::shm::layout::arena::{check_block, BLOCK_HEADER_BYTES};
use crate::shm::layout::attach::AttachReply;
use crate::shm::layout::data_segment::DataHeader;
use crate::shm::layout::instance::InstanceHeader;
use crate::shm::layout::ring_segment::RingHeader;
use crate::{Request, SetOptions, SubscriberId};
use bytes::Bytes;

fn requests() -> Vec<Request> {
    let key = Bytes::from_static(b"key");
    vec![
        Request::Ping,
        Request::Get { key: key.clone() },
        Request::Set {
            key: key.clone(),
            value: key.clone(),
            options: SetOptions::default(),
        },
        Request::Delete { key: key.clone() },
        Request::Exists { key: key.clone() },
        Request::Cas {
            key: key.clone(),
            expected_version: 1,
            value: key.clone(),
            ttl_ms: None,
        },
        Request::Incr {
            key: key.clone(),
            delta: 1,
        },
        Request::Expire {
            key: key.clone(),
            ttl_ms: 5,
        },
        Request::Ttl { key: key.clone() },
        Request::Persist { key: key.clone() },
        Request::MGet {
            keys: vec![key.clone(), key.clone()],
        },
        Request::MSet {
            pairs: vec![(key.clone(), key.clone())],
        },
        Request::Scan {
            cursor: Bytes::new(),
            prefix: Bytes::new(),
            count: 10,
        },
        Request::Subscribe { topic: key.clone() },
        Request::Unsubscribe {
            subscriber: SubscriberId(1),
        },
        Request::Publish {
            topic: key.clone(),
            message: key.clone(),
        },
        Request::Fetch {
            subscriber: SubscriberId(1),
            max: 1,
            wait_ms: 0,
        },
        Request::Info,
    ]
}

const PREFIX_BYTES: usize = 5;

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    for (i, byte) in word.iter_mut().enumerate() {
        *byte = bytes.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(word)
}

/// What the gRPC client decodes from a server: a Batch answer for each kind of request, INFO,
/// SNAPSHOT and subscription events. The first byte picks the decoder; none may panic.
pub fn grpc_client_messages(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let message = Bytes::copy_from_slice(rest);
    let requests = requests();
    match usize::from(selector) % (requests.len() + 3) {
        index if index < requests.len() => {
            let _ = decode_batch_response(&requests[index], message);
        }
        index if index == requests.len() => {
            let _ = decode_info(message);
        }
        index if index == requests.len() + 1 => {
            let _ = decode_snapshot(message);
        }
        _ => {
            let _ = decode_subscribe_event(message);
        }
    }
}

/// gRPC length-prefixed messages as they arrive in HTTP/2 DATA frames, cut at arbitrary places:
/// the deframer must never panic, never hold more than its limit plus one frame prefix, give
/// every message whole, and end with a clear error for a message over the limit or cut short.
/// The input's first byte picks the limit, each later pair of bytes the length of the next
/// chunk.
pub fn grpc_deframer(data: &[u8]) {
    let Some((&limit_selector, mut rest)) = data.split_first() else {
        return;
    };
    let limit = [0usize, 1, 16, 300, 4096, 1 << 20][usize::from(limit_selector) % 6];
    let mut deframer = Deframer::new(limit);
    let mut shared = Deframer::new(limit);
    let mut messages = 0usize;
    while rest.len() >= 2 {
        let length = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % 512;
        rest = &rest[2..];
        let chunk = &rest[..length.min(rest.len())];
        rest = &rest[chunk.len()..];
        let _ = whole_message(&Bytes::copy_from_slice(chunk), limit);
        deframer.push(chunk);
        shared.push_bytes(&Bytes::copy_from_slice(chunk));
        loop {
            let (a, b) = (deframer.next(), shared.next());
            assert_eq!(a, b, "both ways of pushing give the same messages");
            match a {
                Ok(Some(message)) => {
                    assert!(
                        message.len() <= limit,
                        "a message over the limit was handed out"
                    );
                    messages += 1;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            deframer.buffered() <= limit + PREFIX_BYTES + chunk.len(),
            "buffered {} with limit {limit}",
            deframer.buffered()
        );
    }
    let _ = deframer.finish();
    let _ = messages;
}

/// What a gRPC server decodes from a client: every method's request message, a Batch stream's
/// request, Subscribe and health requests, the grpc-timeout header and percent-encoded text.
/// The first byte picks the method; none may panic.
pub fn grpc_server_messages(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let message = Bytes::copy_from_slice(rest);
    let methods = Method::ALL;
    match usize::from(selector) % (methods.len() + 4) {
        index if index < methods.len() => {
            let method = methods[index];
            if method.is_unary() && !method.is_health() {
                let _ = decode_unary(method, message);
            }
        }
        index if index == methods.len() => {
            let _ = decode_batch(message);
        }
        index if index == methods.len() + 1 => {
            let _ = decode_subscribe(message);
        }
        index if index == methods.len() + 2 => {
            let _ = decode_health(message);
        }
        _ => {
            let _ = percent_decode_message(rest);
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = grpc_timeout(text);
            }
        }
    }
}

/// What a process reads from files and messages another process wrote: the attach reply on
/// the instance's socket, the instance file, a ring segment's and a data segment's headers,
/// and the header of an arena block a zero-copy view points at. The first byte picks the
/// decoder; none may panic.
pub fn shm_headers(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            if let Ok(reply) = AttachReply::decode(rest) {
                assert_eq!(AttachReply::decode(&reply.encode()), Ok(reply));
            }
        }
        1 => {
            let _ = InstanceHeader::read(rest);
        }
        2 => {
            let _ = RingHeader::read(rest);
        }
        3 => {
            let segment_bytes = u64_at(rest, 0);
            let _ = DataHeader::read(rest.get(8..).unwrap_or_default(), segment_bytes);
        }
        _ => {
            let mut header = [0u8; BLOCK_HEADER_BYTES];
            for (i, byte) in header.iter_mut().enumerate() {
                *byte = rest.get(36 + i).copied().unwrap_or(0);
            }
            let value_len = u64_at(rest, 24) as u32;
            let _ = check_block(
                u64_at(rest, 0),
                u64_at(rest, 8),
                u64_at(rest, 16),
                value_len,
                u64_at(rest, 28),
                header,
            );
        }
    }
}

/// A request frame's payload as a core reads it from a client's ring: decoding must never
/// panic, and whatever decodes must encode back to a payload that decodes to the same request.
pub fn shm_request(data: &[u8]) {
    let borrowed = decode_request(data);
    let shared = decode_request_bytes(&Bytes::copy_from_slice(data));
    assert_eq!(borrowed.is_ok(), shared.is_ok(), "both decoders agree");
    if let Ok((id, request)) = borrowed {
        assert_eq!(payload_id(data), Some(id));
        assert_eq!(shared.ok(), Some((id, request.clone())));
        let encoded = encode_request_vec(id, &request);
        let (again_id, again) = decode_request(&encoded).expect("an encoded request decodes");
        assert_eq!(again_id, id);
        assert_eq!(again, request);
    }
    // An UPLOAD (rings only, never a `Request`): its header re-encodes to the same bytes, and
    // its chunk fits the frame and the value's length.
    if let Some(Ok(chunk)) = upload_chunk(data, data.len()) {
        assert!(decode_request(data).is_err(), "UPLOAD is no `Request`");
        assert_eq!(
            encode_upload_header(chunk)[..],
            data[..UPLOAD_HEADER_BYTES],
            "UPLOAD is canonical"
        );
        assert_eq!(UPLOAD_HEADER_BYTES + chunk.len as usize, data.len());
        assert!(chunk.offset + u64::from(chunk.len) <= chunk.total);
    }
    // A request that names uploaded values: the server fills each, in order.
    if let Ok((_, mut request)) = decode_request(data) {
        let marked = has_uploaded_values(&request);
        let mut taken = 0;
        let filled = fill_uploaded_values(&mut request, || {
            taken += 1;
            Bytes::from(vec![taken as u8; 3])
        });
        assert_eq!(filled, taken);
        assert_eq!(marked, filled > 0);
        assert!(!has_uploaded_values(&request));
    }
    // The one request the rings have beyond `Request`, read first by the core.
    if let Some((id, topic)) = push_subscribe_request(data) {
        assert!(
            decode_request(data).is_err(),
            "SUBSCRIBE_PUSH is no `Request`"
        );
        let mut encoded = Vec::new();
        encode_push_subscribe_request(id, topic, &mut encoded);
        assert_eq!(encoded, data, "SUBSCRIBE_PUSH is canonical");
    }
}

/// An answer frame's payload as a client reads it from its response ring (the server wrote it,
/// but a client must survive a damaged or foreign ring): decoding must never panic.
pub fn shm_response(data: &[u8]) {
    if let Ok((_, frame)) = decode_response(data) {
        // Every reference into a data segment the frame names can be listed.
        let _ = frame.shared_values();
    }
    // A delivery (request id 0, kind DELIVERY) is never an answer; what decodes is canonical.
    if let Ok(Some(delivery)) = delivery(data) {
        assert!(decode_response(data).is_err(), "a delivery is no answer");
        let messages: Vec<&[u8]> = delivery.messages().map(|range| &data[range]).collect();
        let encoded =
            encode_delivery_vec(delivery.subscriber, delivery.dropped, messages.into_iter());
        assert_eq!(encoded, data, "a delivery is canonical");
    }
    // A part of a large pushed message: never an answer, canonical, its chunk within it.
    if let Ok(Some((part, chunk))) = delivery_part(data) {
        assert!(
            decode_response(data).is_err(),
            "a delivery part is no answer"
        );
        assert_eq!(chunk.len(), part.len as usize);
        assert!(part.offset + u64::from(part.len) <= part.total);
        let mut encoded = encode_delivery_part_header(part).to_vec();
        encoded.extend_from_slice(&data[chunk]);
        assert_eq!(encoded, data, "a delivery part is canonical");
    }
}

/// One fuzz target's check: panics when the input breaks a rule.
pub type FuzzCheck = fn(&[u8]);

/// Replays every kept input of one fuzz target through its check: the seed corpus
/// (`<fuzz_dir>/corpus/<target>/`) and every input that once failed
/// (`<fuzz_dir>/regressions/<target>/`). Panics naming the first input whose check fails; the
/// number of inputs replayed. For the `fuzz_regressions` tests of every crate with fuzz targets.
pub fn replay_kept_inputs(fuzz_dir: &std::path::Path, target: &str, check: FuzzCheck) -> usize {
    let mut inputs = 0;
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir.join(folder).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|entry| entry.expect("a corpus folder entry").path())
            .collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("a kept fuzz input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            inputs += 1;
        }
    }
    inputs
}
