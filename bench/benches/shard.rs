//! `cargo bench`: in-process micro-benchmarks of the shard, the inbox ring, and the frame and
//! message codecs (the shared-memory frames, the gRPC Batch messages).
//! Prints the median of 5 runs of each, in nanoseconds per operation.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use veddb_engine::ring::ring;
use veddb_shard::{Config, Shard};
use veddb_wire::shm::codec;
use veddb_wire::{grpc, grpc_client, Request, SetOptions};

fn median_ns_per_op(operations: u64, mut run: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_nanos() as f64 / operations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

fn main() {
    // `cargo test --benches` runs this with --test-like flags; keep it short then.
    let quick = std::env::args().any(|arg| arg == "--test");
    let operations: u64 = if quick { 10_000 } else { 2_000_000 };
    for keys in [1_000usize, 100_000] {
        let key_list: Vec<Bytes> = (0..keys)
            .map(|i| Bytes::from(format!("key:{i:012}")))
            .collect();
        let value = Bytes::from(vec![b'v'; 64]);
        let mut shard = Shard::new(
            0,
            Config {
                memory_bytes_limit: 1 << 30,
                ..Config::default()
            },
        );
        for key in &key_list {
            shard.handle(
                Request::Set {
                    key: key.clone(),
                    value: value.clone(),
                    options: SetOptions::default(),
                },
                1,
            );
        }
        let mut index = 0usize;
        let get = median_ns_per_op(operations, || {
            for _ in 0..operations {
                index = (index + 7919) % keys;
                black_box(shard.handle(
                    Request::Get {
                        key: key_list[index].clone(),
                    },
                    1,
                ));
            }
        });
        let set = median_ns_per_op(operations, || {
            for _ in 0..operations {
                index = (index + 7919) % keys;
                black_box(shard.handle(
                    Request::Set {
                        key: key_list[index].clone(),
                        value: value.clone(),
                        options: SetOptions::default(),
                    },
                    1,
                ));
            }
        });
        println!("shard {keys:>7} keys, 16 B keys, 64 B values: GET {get:6.1} ns/op  SET {set:6.1} ns/op");
    }
    let (mut producer, mut consumer) = ring::<u64>(256);
    let ring_op = median_ns_per_op(operations, || {
        for i in 0..operations {
            producer.push(i).expect("room");
            black_box(consumer.pop());
        }
    });
    println!("inbox ring push+pop on one thread: {ring_op:.1} ns/op");

    // Codecs: one SET request and one GET answer (16 B key, 64 B value), encoded and decoded.
    let request = Request::Set {
        key: Bytes::from_static(b"key:000000001234"),
        value: Bytes::from(vec![b'v'; 64]),
        options: SetOptions::default(),
    };
    let answer = veddb_wire::Response::Value {
        value: Bytes::from(vec![b'v'; 64]),
        version: 42,
    };
    let codec_ops = operations / 4;
    let shm_request = median_ns_per_op(codec_ops, || {
        for id in 0..codec_ops {
            let payload = codec::encode_request_vec(id as u32, &request);
            black_box(codec::decode_request(&payload).expect("decodes"));
        }
    });
    let shm_answer = median_ns_per_op(codec_ops, || {
        for id in 0..codec_ops {
            let payload = codec::encode_response_vec(id as u32, &answer, codec::all_inline);
            black_box(codec::decode_response(&payload).expect("decodes"));
        }
    });
    println!(
        "shared-memory frames: SET request encode+decode {shm_request:.1} ns/op, GET answer encode+decode {shm_answer:.1} ns/op"
    );
    let grpc_request = median_ns_per_op(codec_ops, || {
        for _ in 0..codec_ops {
            let message = grpc_client::encode_batch_request(&request).expect("encodes");
            black_box(grpc::decode_batch(Bytes::from(message)).expect("decodes"));
        }
    });
    let get = Request::Get {
        key: Bytes::from_static(b"key:000000001234"),
    };
    let grpc_answer = median_ns_per_op(codec_ops, || {
        for _ in 0..codec_ops {
            let message =
                grpc::encode_batch(grpc::Method::Get, b"key:000000001234", answer.clone());
            black_box(
                grpc_client::decode_batch_response(&get, Bytes::from(message)).expect("decodes"),
            );
        }
    });
    println!(
        "gRPC Batch messages: SET request encode+decode {grpc_request:.1} ns/op, GET answer encode+decode {grpc_answer:.1} ns/op"
    );
}
