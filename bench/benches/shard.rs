//! `cargo bench`: in-process micro-benchmarks of the shard and of the inbox ring.
//! Prints the median of 5 runs of each, in nanoseconds per operation.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use veddb_engine::ring::ring;
use veddb_shard::{Config, Shard};
use veddb_wire::{Request, SetOptions};

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
}
