//! The checks of the fuzz targets in `transport/shm/fuzz`, one function per target, kept here so
//! that the regression tests run exactly what the fuzzer ran: every input that once failed is
//! kept under `transport/shm/fuzz/regressions/<target>/` and replayed by
//! `tests/fuzz_regressions.rs`.
//!
//! They drive the [`ByteRing`] that runs (the core reading a client's request ring, the core
//! writing a client's response ring) against a peer that writes anything into the shared
//! memory it may write: its counter (a consumer's head) or header words and bytes anywhere in the
//! data area, before attach and between every step. The rules: no panic, no read or write
//! outside the data area, every frame handed out is within the ring's limits and the head moves
//! by exactly what it consumed, and the producer never publishes more than the peer's published
//! head leaves room for.

use std::cell::RefCell;
use std::sync::Arc;

use crate::{ByteRing, Segment};

/// Ring sizes the inputs pick from (from the smallest the layout allows).
const SIZES: [usize; 4] = [4096, 8192, 16384, 65536];
/// The head counter before the data area, on its own line as in the server's ring segments.
const HEAD_OFFSET: usize = 0;
const DATA_OFFSET: usize = 128;
/// Most steps one input drives (each step is bounded work).
const STEPS_MAX: usize = 4096;

thread_local! {
    /// One segment per size, reused by every input (creating a memfd per input is slow).
    static SEGMENTS: RefCell<Vec<Option<Arc<Segment>>>> = RefCell::new(vec![None; SIZES.len()]);
}

fn ring_and_segment(selector: u8) -> (ByteRing, Arc<Segment>) {
    let index = usize::from(selector) % SIZES.len();
    let ring = ByteRing {
        head_offset: HEAD_OFFSET,
        data_offset: DATA_OFFSET,
        size: SIZES[index],
    };
    let segment = SEGMENTS.with(|segments| {
        segments.borrow_mut()[index]
            .get_or_insert_with(|| {
                Arc::new(
                    Segment::create("veddb-fuzz-ring", DATA_OFFSET + ring.size)
                        .expect("a memfd for the fuzzed ring"),
                )
            })
            .clone()
    });
    // A clean start: zero counters and data.
    segment.write_bytes(0, &vec![0; DATA_OFFSET + ring.size]);
    (ring, segment)
}

/// Reads little-endian words off the input; zeros past its end.
struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8().unwrap_or(0)) | (u16::from(self.u8().unwrap_or(0)) << 8)
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |word, i| {
            word | (u64::from(self.u8().unwrap_or(0)) << (8 * i))
        })
    }

    fn take(&mut self, length: usize) -> &[u8] {
        let (taken, rest) = self.bytes.split_at(length.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }
}

/// A hostile peer's move on the shared memory: write bytes into the data area, store a header
/// word (a well-formed frame header, or any word) at a line start of it, where frames start, or
/// store a value in `counter` (a consumer's head, which it may set to anything; `None` for a
/// producer, which has no counter in shared memory).
fn peer_writes(input: &mut Input<'_>, ring: &ByteRing, segment: &Segment, counter: Option<usize>) {
    use std::sync::atomic::Ordering::Release;
    let word_at = |input: &mut Input<'_>| DATA_OFFSET + (usize::from(input.u16()) * 64) % ring.size;
    match input.u8().unwrap_or(0) % 4 {
        0 => {
            let at = usize::from(input.u16()) % ring.size;
            let length = (usize::from(input.u8().unwrap_or(0))).min(ring.size - at);
            let bytes = input.take(length).to_vec();
            segment.write_bytes(DATA_OFFSET + at, &bytes);
        }
        1 => {
            let at = word_at(input);
            let length = u32::from(input.u16());
            segment
                .atomic_u64(at)
                .store(veddb_wire::shm::layout::ring::header_word(length), Release);
        }
        2 => {
            let at = word_at(input);
            let value = input.u64();
            segment.atomic_u64(at).store(value, Release);
        }
        _ => {
            let value = input.u64();
            if let Some(counter) = counter {
                segment.atomic_u64(counter).store(value, Release);
            }
        }
    }
}

/// The core consuming a request ring whose producer (a client) is hostile: header words and
/// data from the input, changed again between steps.
pub fn ring_consumer(data: &[u8]) {
    let mut input = Input { bytes: data };
    let (ring, segment) = ring_and_segment(input.u8().unwrap_or(0));
    let head = input.u64();
    segment
        .atomic_u64(HEAD_OFFSET)
        .store(head, std::sync::atomic::Ordering::Release);
    let area = input.take(ring.size).to_vec();
    segment.write_bytes(DATA_OFFSET, &area);
    peer_writes(&mut input, &ring, &segment, None);
    let Ok(mut consumer) = ring.consumer(segment.clone()) else {
        return;
    };
    let mut payload = Vec::new();
    for _ in 0..STEPS_MAX {
        let before = consumer.head();
        match consumer.peek() {
            Ok(Some(frame)) => {
                assert!(
                    frame.len() <= ring.max_payload(),
                    "a frame over the largest payload"
                );
                consumer.copy_payload(&frame, &mut payload);
                assert_eq!(payload.len(), frame.len());
                let consumed = frame.consumed_bytes();
                assert!(
                    consumed >= ByteRing::frame_bytes(frame.len()) as u64
                        && consumed <= ring.size as u64,
                    "a frame of {} bytes consumed {consumed} bytes",
                    frame.len()
                );
                consumer.advance(frame);
                assert_eq!(consumer.head(), before + consumed);
            }
            Ok(None) => assert_eq!(consumer.head(), before, "an empty peek moved the head"),
            Err(_) => return,
        }
        if input.bytes.is_empty() {
            return;
        }
        peer_writes(&mut input, &ring, &segment, None);
    }
}

/// The core producing into a response ring whose consumer (a client) is hostile: the client's
/// head and the data area change between pushes.
pub fn ring_producer(data: &[u8]) {
    let mut input = Input { bytes: data };
    let (ring, segment) = ring_and_segment(input.u8().unwrap_or(0));
    peer_writes(&mut input, &ring, &segment, Some(HEAD_OFFSET));
    let Ok(mut producer) = ring.producer(segment.clone()) else {
        return;
    };
    for step in 0..STEPS_MAX {
        let Some(length) = input.u8() else {
            return;
        };
        let length = usize::from(length) * 7 % (ring.size / 2 + 8);
        let payload = vec![step as u8; length];
        let tail_before = producer.tail();
        match producer.try_push(&payload) {
            Ok(true) => {
                assert!(
                    producer.tail() <= veddb_wire::shm::layout::ring::COUNTER_MAX,
                    "a push took the tail past the largest counter"
                );
                let published = producer.tail() - tail_before;
                assert!(
                    published >= ByteRing::frame_bytes(length) as u64
                        && published + 8 <= ring.size as u64,
                    "one push published {published} bytes for a {length}-byte payload"
                );
            }
            Ok(false) => assert_eq!(
                producer.tail(),
                tail_before,
                "a refused push moved the tail"
            ),
            Err(_) => {
                if length > ring.max_payload() {
                    assert_eq!(producer.tail(), tail_before);
                    continue;
                }
                return;
            }
        }
        peer_writes(&mut input, &ring, &segment, Some(HEAD_OFFSET));
    }
}
