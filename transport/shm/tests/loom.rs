//! Model check of the ring that runs ([`ByteRing`]'s producer and consumer, the code the server
//! and the client use) under every interleaving loom explores, over a model of shared memory
//! whose every byte is a loom cell: a byte read before the write that published it (a missing
//! or misplaced Release/Acquire pair) is reported as a data race, and a frame that comes back
//! different or out of order fails the test.
//! Run with: `RUSTFLAGS="--cfg veddb_loom" cargo test -p veddb-shm --test loom --release`
#![cfg(veddb_loom)]

use std::sync::atomic::Ordering;
// The ring takes a std Arc; ownership is not what is checked here, the memory's accesses are.
use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU64;
use loom::thread;
use veddb_shm::{ByteRing, RingMemory};

const HEAD_OFFSET: usize = 0;
const DATA_OFFSET: usize = 8;
const SIZE: usize = 4096;

/// Shared memory as loom sees it: the head counter, an atomic word per 8-aligned place of the
/// data area (where header words are stored and loaded) and one cell per data byte (payloads).
/// The ring never accesses one place both ways in one lap, and a header word the consumer loads
/// that was not stored in this lap would be a stale one: a frame that comes back wrong.
struct ModelMemory {
    head: AtomicU64,
    words: Vec<AtomicU64>,
    data: Vec<UnsafeCell<u8>>,
}

impl ModelMemory {
    fn new() -> Self {
        ModelMemory {
            head: AtomicU64::new(0),
            words: (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect(),
            data: (0..SIZE).map(|_| UnsafeCell::new(0)).collect(),
        }
    }

    fn counter(&self, offset: usize) -> &AtomicU64 {
        match offset {
            HEAD_OFFSET => &self.head,
            _ if offset >= DATA_OFFSET && (offset - DATA_OFFSET).is_multiple_of(8) => {
                &self.words[(offset - DATA_OFFSET) / 8]
            }
            _ => panic!("no atomic word at {offset}"),
        }
    }
}

impl RingMemory for ModelMemory {
    fn bytes_len(&self) -> usize {
        DATA_OFFSET + SIZE
    }

    fn is_writable(&self) -> bool {
        true
    }

    fn load_counter(&self, offset: usize, order: Ordering) -> u64 {
        self.counter(offset).load(order)
    }

    fn store_counter(&self, offset: usize, value: u64, order: Ordering) {
        self.counter(offset).store(value, order)
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: loom checks that no write to this cell races with this read.
            *byte = self.data[offset - DATA_OFFSET + i].with(|cell| unsafe { *cell });
        }
    }

    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        for (i, &byte) in bytes.iter().enumerate() {
            // SAFETY: loom checks that no other access to this cell races with this write.
            self.data[offset - DATA_OFFSET + i].with_mut(|cell| unsafe { *cell = byte });
        }
    }
}

const RING: ByteRing = ByteRing {
    head_offset: HEAD_OFFSET,
    data_offset: DATA_OFFSET,
    size: SIZE,
};

/// Pushes frames of `lengths` (payload byte `i` of frame `n` is `n`) while the consumer takes
/// them, and checks each arrives whole and in order.
fn transfer(lengths: &'static [usize]) {
    let memory = Arc::new(ModelMemory::new());
    let mut producer = RING.producer(memory.clone()).unwrap();
    let mut consumer = RING.consumer(memory).unwrap();
    let writer = thread::spawn(move || {
        for (n, &length) in lengths.iter().enumerate() {
            let payload = vec![n as u8; length];
            while !producer.try_push(&payload).unwrap() {
                thread::yield_now();
            }
        }
    });
    let mut out = Vec::new();
    for (n, &length) in lengths.iter().enumerate() {
        let frame = loop {
            match consumer.peek().unwrap() {
                Some(frame) => break frame,
                None => thread::yield_now(),
            }
        };
        consumer.copy_payload(&frame, &mut out);
        assert_eq!(out.len(), length);
        assert!(out.iter().all(|&byte| byte == n as u8), "frame {n} torn");
        consumer.advance(frame);
    }
    writer.join().unwrap();
    assert!(consumer.peek().unwrap().is_none());
}

fn model(test: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Enough to cover a push racing a pop at every step of both; keeps the search finite.
    builder.preemption_bound = Some(3);
    builder.check(test);
}

/// Small frames: the ordinary path (header words and terminators), the producer's cached head.
#[test]
fn frames_arrive_whole_and_in_order() {
    model(|| transfer(&[3, 17, 0]));
}

/// Frames that fill the ring, so the producer must wait for the consumer's head, then a frame
/// that does not fit before the end: the frame at position 0, then the wrap marker.
#[test]
fn a_full_ring_and_a_wrap() {
    model(|| transfer(&[1520, 1520, 1600]));
}
