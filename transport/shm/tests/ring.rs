//! ByteRing: model-checked sequences, a two-thread stress run, and hostile peers.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use proptest::prelude::*;
use veddb_shm::{ByteRing, RingError, Segment, COUNTER_MAX, FRAME_HEADER_BYTES, WRAP_MARKER};
use veddb_wire::shm::layout::reason;

fn ring(size: usize) -> ByteRing {
    ByteRing {
        head_offset: 0,
        tail_offset: 64,
        data_offset: 128,
        size,
    }
}

fn segment_for(r: &ByteRing) -> Arc<Segment> {
    Arc::new(Segment::create("t-ring", r.data_offset + r.size).unwrap())
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq.wrapping_mul(31).wrapping_add(i as u64 * 7)) as u8)
        .collect()
}

#[test]
fn layout_checks() {
    let good = ring(4096);
    assert!(good.check(128 + 4096).is_ok());
    assert!(good.check(128 + 4095).is_err());
    for bad in [
        ByteRing { size: 100, ..good },
        ByteRing { size: 16, ..good },
        ByteRing { size: 2048, ..good },
        ByteRing {
            head_offset: 4,
            ..good
        },
        ByteRing {
            tail_offset: 0,
            ..good
        },
        ByteRing {
            head_offset: 136,
            ..good
        },
        ByteRing {
            data_offset: 132,
            ..good
        },
    ] {
        assert!(bad.check(1 << 16).is_err(), "{bad:?}");
    }
    assert_eq!(
        ByteRing { size: 2048, ..good }.check(1 << 16),
        Err(RingError::BadSize { size: 2048 })
    );
    assert_eq!(good.max_payload(), 2040);
    assert_eq!(ByteRing::frame_bytes(0), 8);
    assert_eq!(ByteRing::frame_bytes(1), 16);
    assert_eq!(ByteRing::frame_bytes(8), 16);
    assert_eq!(ByteRing::frame_bytes(9), 24);
}

#[test]
fn frame_format_on_the_wire() {
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    let mut c = r.consumer(Arc::clone(&seg)).unwrap();
    assert!(p.try_push(b"abc").unwrap());
    let mut raw = [0u8; 16];
    seg.read_bytes(r.data_offset, &mut raw);
    assert_eq!(&raw[..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&raw[8..11], b"abc");
    assert_eq!(seg.load_u64(r.tail_offset, Ordering::Acquire), 16);
    let f = c.peek().unwrap().unwrap();
    c.advance(f);
    assert_eq!(seg.load_u64(r.head_offset, Ordering::Acquire), 16);
    // Position 16 of 4096: a largest frame (2048 bytes) fits there...
    assert!(p.try_push(&[1; 2040]).unwrap());
    // ...position 2064: 2032 bytes to the end, too few for another: wrap marker, frame at 0.
    let f = c.peek().unwrap().unwrap();
    c.advance(f);
    assert!(p.try_push(&[2; 2040]).unwrap());
    seg.read_bytes(r.data_offset + 2064, &mut raw[..8]);
    assert_eq!(&raw[..8], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
    seg.read_bytes(r.data_offset, &mut raw[..8]);
    assert_eq!(&raw[..8], &[0xF8, 0x07, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        seg.load_u64(r.tail_offset, Ordering::Acquire),
        2064 + 2032 + 2048
    );
    let f = c.peek().unwrap().unwrap();
    assert_eq!(f.len(), 2040);
    assert_eq!(f.consumed_bytes(), 2032 + 2048);
    let mut out = Vec::new();
    c.copy_payload(&f, &mut out);
    assert_eq!(out, vec![2; 2040]);
    c.advance(f);
    assert!(c.peek().unwrap().is_none());
    assert!(c.is_empty() && p.is_empty());
}

#[test]
fn limits_and_writer_bounds() {
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    let mut c = r.consumer(Arc::clone(&seg)).unwrap();
    let error = p.try_reserve(2041).unwrap_err();
    assert_eq!(
        error,
        RingError::FrameTooLarge {
            length: 2041,
            max: 2040
        }
    );
    assert_eq!(error.reason(), reason::FRAME_TOO_LARGE);
    // Two largest frames fill the ring exactly.
    assert!(p.try_push(&[7; 2040]).unwrap());
    assert!(p.try_push(&[8; 2040]).unwrap());
    assert_eq!(p.free(), 0);
    assert!(p.try_reserve(0).unwrap().is_none());
    // An abandoned reservation publishes nothing.
    let f = c.peek().unwrap().unwrap();
    c.advance(f);
    let abandoned = p.try_reserve(10).unwrap().unwrap();
    assert_eq!(abandoned.len(), 10);
    let f = c.peek().unwrap().unwrap();
    assert_eq!(f.len(), 2040);
    c.advance(f);
    assert!(c.peek().unwrap().is_none());
    // Zero-length frames are frames.
    assert!(p.try_push(b"").unwrap());
    let f = c.peek().unwrap().unwrap();
    assert!(f.is_empty());
    c.advance(f);
}

#[test]
#[should_panic(expected = "beyond the reserved")]
fn write_at_beyond_reservation_panics() {
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(seg).unwrap();
    let mut w = p.try_reserve(10).unwrap().unwrap();
    w.write_at(5, &[0; 6]);
}

#[test]
fn batched_consume_then_publish() {
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    let mut c = r.consumer(Arc::clone(&seg)).unwrap();
    for i in 0..5u8 {
        assert!(p.try_push(&[i; 20]).unwrap());
    }
    let mut out = Vec::new();
    for i in 0..5u8 {
        let f = c.peek().unwrap().unwrap();
        c.copy_payload(&f, &mut out);
        assert_eq!(out, vec![i; 20]);
        c.consume(f);
    }
    assert_eq!(seg.load_u64(r.head_offset, Ordering::Acquire), 0);
    c.publish_head();
    assert_eq!(seg.load_u64(r.head_offset, Ordering::Acquire), 5 * 32);
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Pop,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0usize..=2040).prop_map(Op::Push),
            1 => (0usize..=8).prop_map(Op::Push),
            3 => Just(Op::Pop),
        ],
        1..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random pushes and pops against a model of the format: every frame comes back intact and in
    /// order, and a push fails exactly when the format says it cannot fit.
    #[test]
    fn matches_model(ops in ops(), size_log2 in 12u32..=14) {
        let r = ring(1 << size_log2);
        let size = r.size as u64;
        let seg = segment_for(&r);
        let mut p = r.producer(Arc::clone(&seg)).unwrap();
        let mut c = r.consumer(Arc::clone(&seg)).unwrap();
        let mut model: VecDeque<(u64, Vec<u8>, u64)> = VecDeque::new();
        let (mut m_head, mut m_tail) = (0u64, 0u64);
        let mut seq = 0u64;
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Push(len) => {
                    let len = len.min(r.max_payload());
                    let frame = ByteRing::frame_bytes(len) as u64;
                    let contig = size - (m_tail & (size - 1));
                    let need = if frame > contig { contig + frame } else { frame };
                    let fits = size - (m_tail - m_head) >= need;
                    let data = payload(seq, len);
                    let pushed = p.try_push(&data).unwrap();
                    prop_assert_eq!(pushed, fits);
                    if pushed {
                        m_tail += need;
                        model.push_back((seq, data, need));
                        seq += 1;
                    }
                }
                Op::Pop => {
                    let f = c.peek().unwrap();
                    match model.pop_front() {
                        None => prop_assert!(f.is_none()),
                        Some((_, data, need)) => {
                            let f = f.unwrap();
                            prop_assert_eq!(f.consumed_bytes(), need);
                            c.copy_payload(&f, &mut out);
                            prop_assert_eq!(&out, &data);
                            c.advance(f);
                            m_head += need;
                        }
                    }
                }
            }
            prop_assert_eq!(p.used() as u64, m_tail - m_head);
        }
        while let Some((_, data, _)) = model.pop_front() {
            let f = c.peek().unwrap().unwrap();
            c.copy_payload(&f, &mut out);
            prop_assert_eq!(&out, &data);
            c.advance(f);
        }
        prop_assert!(c.peek().unwrap().is_none());
    }

    /// Whatever the bytes of the ring's segment — counters and data — a consumer never panics
    /// and never reads outside the data area: it yields frames within bounds or an error.
    #[test]
    fn hostile_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 128 + 4096),
        tail in prop_oneof![any::<u64>(), 0u64..9600, (0u64..1280).prop_map(|x| x * 8)],
        head in prop_oneof![Just(0u64), any::<u64>(), (0u64..640).prop_map(|x| x * 8)],
        markers in prop::collection::vec((0usize..512, any::<bool>()), 0..8),
    ) {
        let r = ring(4096);
        let seg = segment_for(&r);
        seg.write_bytes(0, &bytes);
        // Sprinkle wrap markers and small plausible lengths at 8-aligned positions.
        for (slot, wrap) in markers {
            let len: u32 = if wrap { WRAP_MARKER } else { (slot as u32 * 13) % 2240 };
            seg.write_bytes(r.data_offset + slot * 8, &len.to_le_bytes());
        }
        seg.atomic_u64(r.head_offset).store(head, Ordering::Relaxed);
        seg.atomic_u64(r.tail_offset).store(tail, Ordering::Relaxed);
        let Ok(mut c) = r.consumer(Arc::clone(&seg)) else { return Ok(()); };
        let mut out = Vec::new();
        for _ in 0..100 {
            match c.peek() {
                Ok(Some(f)) => {
                    prop_assert!(f.len() <= r.max_payload());
                    c.copy_payload(&f, &mut out);
                    prop_assert_eq!(out.len(), f.len());
                    c.advance(f);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // The producer side facing a hostile head never panics either.
        if let Ok(mut p) = r.producer(Arc::clone(&seg)) {
            for len in [0usize, 1, 800, 2040] {
                if p.try_push(&vec![1; len]).is_err() {
                    break;
                }
            }
        }
    }
}

/// A consumer attached to a ring whose producer wrote `tail` and the given data.
fn hostile(tail: u64, frames: &[(usize, u32)]) -> Result<Option<usize>, RingError> {
    let r = ring(4096);
    let seg = segment_for(&r);
    for &(pos, len) in frames {
        seg.write_bytes(r.data_offset + pos, &len.to_le_bytes());
    }
    seg.atomic_u64(r.tail_offset).store(tail, Ordering::Release);
    let mut c = r.consumer(seg)?;
    c.peek().map(|f| f.map(|f| f.len()))
}

/// The error's text names the broken rule.
fn bad_frame(result: Result<Option<usize>, RingError>, why: &str) {
    match result {
        Err(error @ RingError::BadFrame { .. }) => {
            assert!(error.to_string().contains(why), "{error}");
            assert_eq!(error.reason(), reason::BAD_FRAME);
        }
        other => panic!("expected a bad frame ({why}), got {other:?}"),
    }
}

#[test]
fn hostile_counters() {
    assert_eq!(
        hostile(3, &[]),
        Err(RingError::Misaligned {
            index: "tail",
            value: 3
        })
    );
    assert_eq!(
        hostile(4096 + 8, &[]),
        Err(RingError::Overfull {
            used: 4096 + 8,
            size: 4096
        })
    );
    assert_eq!(
        hostile(u64::MAX - 7, &[]),
        Err(RingError::CounterTooLarge {
            index: "tail",
            value: u64::MAX - 7
        })
    );
    assert_eq!(hostile(16, &[(0, 8)]), Ok(Some(8)));
    assert_eq!(hostile(0, &[]), Ok(None));

    // Tail moving backwards after a frame was seen.
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    let mut c = r.consumer(Arc::clone(&seg)).unwrap();
    p.try_push(b"12345678").unwrap();
    let f = c.peek().unwrap().unwrap();
    c.advance(f);
    seg.atomic_u64(r.tail_offset).store(8, Ordering::Release);
    let error = c.peek().unwrap_err();
    assert_eq!(
        error,
        RingError::WentBack {
            index: "tail",
            previous: 16,
            now: 8
        }
    );
    assert_eq!(error.reason(), reason::BAD_INDICES);
}

#[test]
fn hostile_lengths() {
    // Larger than the ring's largest payload.
    assert_eq!(
        hostile(4096, &[(0, 2041)]),
        Err(RingError::FrameTooLarge {
            length: 2041,
            max: 2040
        })
    );
    assert_eq!(
        hostile(4096, &[(0, 0xFFFF_FFFE)]),
        Err(RingError::FrameTooLarge {
            length: 0xFFFF_FFFE,
            max: 2040
        })
    );
    // Larger than what was published.
    bad_frame(hostile(16, &[(0, 9)]), "past the tail");
}

/// A ring after two 1,528-byte payloads (1,536-byte frames) were pushed and consumed: the
/// consumer's head is at 3072, 1024 bytes from the end.
fn ring_at_3072() -> (
    ByteRing,
    Arc<Segment>,
    veddb_shm::RingProducer,
    veddb_shm::RingConsumer,
) {
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    let mut c = r.consumer(Arc::clone(&seg)).unwrap();
    p.try_push(&[0; 1528]).unwrap();
    p.try_push(&[0; 1528]).unwrap();
    for _ in 0..2 {
        let f = c.peek().unwrap().unwrap();
        c.advance(f);
    }
    (r, seg, p, c)
}

#[test]
fn hostile_wrap_markers() {
    // At position 0 of an empty-from-the-start ring: no frame could have failed to fit there.
    bad_frame(hostile(64, &[(0, WRAP_MARKER)]), "position 0");
    // Where at least size / 2 bytes remain to the end (any frame fits there).
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    let mut c = r.consumer(Arc::clone(&seg)).unwrap();
    p.try_push(&[0; 1016]).unwrap(); // 1024 bytes: position 1024, 3072 contiguous
    let f = c.peek().unwrap().unwrap();
    c.advance(f);
    seg.write_bytes(r.data_offset + 1024, &WRAP_MARKER.to_le_bytes());
    seg.atomic_u64(r.tail_offset)
        .store(1024 + 3072 + 16, Ordering::Release);
    bad_frame(c.peek().map(|f| f.map(|f| f.len())), "half the ring");

    // A marker running past the tail.
    let (r, seg, _p, mut c) = ring_at_3072();
    seg.write_bytes(r.data_offset + 3072, &WRAP_MARKER.to_le_bytes());
    seg.atomic_u64(r.tail_offset)
        .store(3072 + 896, Ordering::Release);
    bad_frame(c.peek().map(|f| f.map(|f| f.len())), "past the tail");

    // Two markers in a row.
    let (r, seg, _p, mut c) = ring_at_3072();
    seg.write_bytes(r.data_offset + 3072, &WRAP_MARKER.to_le_bytes());
    seg.write_bytes(r.data_offset, &WRAP_MARKER.to_le_bytes());
    seg.atomic_u64(r.tail_offset)
        .store(3072 + 1024 + 16, Ordering::Release);
    bad_frame(c.peek().map(|f| f.map(|f| f.len())), "position 0");

    // A frame that would run past the end of the data area instead of wrapping.
    let (r, seg, _p, mut c) = ring_at_3072();
    seg.write_bytes(r.data_offset + 3072, &1600u32.to_le_bytes());
    seg.atomic_u64(r.tail_offset)
        .store(3072 + 1608, Ordering::Release);
    bad_frame(c.peek().map(|f| f.map(|f| f.len())), "end of the ring");

    // A legitimate wrap is accepted.
    let (_r, _seg, mut p, mut c) = ring_at_3072();
    assert!(p.try_push(&[5; 1600]).unwrap());
    let f = c.peek().unwrap().unwrap();
    assert_eq!((f.len(), f.consumed_bytes()), (1600, 1024 + 1608));
}

#[test]
fn hostile_flags() {
    let r = ring(4096);
    let seg = segment_for(&r);
    seg.write_bytes(r.data_offset, &[8, 0, 0, 0, 1, 0, 0, 0]);
    seg.atomic_u64(r.tail_offset).store(16, Ordering::Release);
    let mut c = r.consumer(seg).unwrap();
    assert_eq!(
        c.peek(),
        Err(RingError::BadFlags {
            position: 0,
            flags: 1
        })
    );
}

/// A producer that publishes a wrap marker on its own, then the frame with a later tail.
#[test]
fn wrap_marker_published_alone() {
    let (r, seg, _p, mut c) = ring_at_3072();
    seg.write_bytes(r.data_offset + 3072, &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
    seg.atomic_u64(r.tail_offset).store(4096, Ordering::Release);
    assert_eq!(c.peek(), Ok(None));
    assert_eq!(c.head(), 4096, "stepped over the marker");
    seg.write_bytes(
        r.data_offset,
        &[5, 0, 0, 0, 0, 0, 0, 0, b'h', b'e', b'l', b'l', b'o'],
    );
    seg.atomic_u64(r.tail_offset)
        .store(4096 + 16, Ordering::Release);
    let f = c.peek().unwrap().unwrap();
    let mut out = Vec::new();
    c.copy_payload(&f, &mut out);
    assert_eq!(out, b"hello");
    c.advance(f);
    assert_eq!(seg.load_u64(r.head_offset, Ordering::Acquire), 4112);
}

#[test]
fn hostile_head_seen_by_producer() {
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    for _ in 0..2 {
        p.try_push(&[0; 2040]).unwrap();
    }
    // Head beyond our tail.
    seg.atomic_u64(r.head_offset)
        .store(16384, Ordering::Release);
    assert_eq!(
        p.try_push(b"x").unwrap_err(),
        RingError::HeadPastTail {
            head: 16384,
            tail: 4096
        }
    );
    // Misaligned.
    seg.atomic_u64(r.head_offset).store(5, Ordering::Release);
    assert_eq!(
        p.try_push(b"x").unwrap_err(),
        RingError::Misaligned {
            index: "head",
            value: 5
        }
    );
    // Backwards after a good value.
    seg.atomic_u64(r.head_offset).store(2048, Ordering::Release);
    assert!(p.try_push(b"x").unwrap());
    seg.atomic_u64(r.head_offset).store(0, Ordering::Release);
    for _ in 0..20 {
        match p.try_push(&[0; 1600]) {
            Ok(true) => continue,
            Ok(false) => panic!("should have re-read the head and failed"),
            Err(e) => {
                assert_eq!(
                    e,
                    RingError::WentBack {
                        index: "head",
                        previous: 2048,
                        now: 0
                    }
                );
                break;
            }
        }
    }
    // Inconsistent counters at attach.
    seg.atomic_u64(r.tail_offset)
        .store(65536, Ordering::Release);
    assert!(r.producer(Arc::clone(&seg)).is_err());
}

/// Counters a peer stored before the other end attached: a head near `u64::MAX` with a tail
/// near 0 is refused (a wrapping difference had called it 8 bytes in use, and the producer's
/// next push overflowed: found by the `ring_producer` fuzz target), and so are counters so
/// large that the ends' sums could overflow.
#[test]
fn hostile_counters_at_attach() {
    let r = ring(4096);
    for (head, tail) in [
        (u64::MAX - 7, 0),
        (u64::MAX - 7, u64::MAX - 7),
        (COUNTER_MAX + 8, COUNTER_MAX + 16),
        (16, 8),
    ] {
        let seg = segment_for(&r);
        seg.atomic_u64(r.head_offset).store(head, Ordering::Release);
        seg.atomic_u64(r.tail_offset).store(tail, Ordering::Release);
        match r.producer(Arc::clone(&seg)) {
            Err(error) => assert_eq!(error.reason(), reason::BAD_INDICES, "{error}"),
            Ok(_) => panic!("producer with head {head}, tail {tail}"),
        }
    }
    let seg = segment_for(&r);
    seg.atomic_u64(r.head_offset)
        .store(u64::MAX - 7, Ordering::Release);
    assert!(matches!(
        r.consumer(Arc::clone(&seg)),
        Err(RingError::CounterTooLarge { .. })
    ));
    // At the limit both ends still work.
    let seg = segment_for(&r);
    seg.atomic_u64(r.head_offset)
        .store(COUNTER_MAX - 4096, Ordering::Release);
    seg.atomic_u64(r.tail_offset)
        .store(COUNTER_MAX - 4096, Ordering::Release);
    let mut producer = r.producer(Arc::clone(&seg)).unwrap();
    let mut consumer = r.consumer(Arc::clone(&seg)).unwrap();
    assert!(producer.try_push(b"near the top").unwrap());
    let frame = consumer.peek().unwrap().unwrap();
    assert_eq!(frame.len(), 12);
    consumer.advance(frame);
}

/// Two threads, 1M frames of random sizes with a sequence number and a checksum each.
#[test]
fn two_threads_million_frames() {
    const N: u64 = 1_000_000;
    let r = ring(1 << 14);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    let mut c = r.consumer(Arc::clone(&seg)).unwrap();
    fn checksum(bytes: &[u8]) -> u32 {
        bytes.iter().fold(0x811C_9DC5u32, |h, &b| {
            (h ^ b as u32).wrapping_mul(0x0100_0193)
        })
    }
    let producer = std::thread::spawn(move || {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut body = Vec::new();
        for seq in 0..N {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = if rng.is_multiple_of(100) {
                (rng >> 8) as usize % 4000
            } else {
                (rng >> 8) as usize % 120
            };
            body.clear();
            body.extend((0..len).map(|i| (rng >> (i % 56)) as u8));
            let sum = checksum(&body);
            loop {
                match p.try_reserve(12 + len).unwrap() {
                    Some(mut w) => {
                        w.write_at(0, &seq.to_le_bytes());
                        w.write_at(8, &sum.to_le_bytes());
                        w.write_at(12, &body);
                        w.commit();
                        break;
                    }
                    None => std::thread::yield_now(),
                }
            }
        }
    });
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut since_publish = 0;
    while seq < N {
        match c.peek().unwrap() {
            Some(f) => {
                c.copy_payload(&f, &mut out);
                assert_eq!(u64::from_le_bytes(out[..8].try_into().unwrap()), seq);
                let sum = u32::from_le_bytes(out[8..12].try_into().unwrap());
                assert_eq!(checksum(&out[12..]), sum, "frame {seq} corrupted");
                c.consume(f);
                since_publish += 1;
                if since_publish == 8 {
                    c.publish_head();
                    since_publish = 0;
                }
                seq += 1;
            }
            None => {
                c.publish_head();
                std::thread::yield_now();
            }
        }
    }
    c.publish_head();
    producer.join().unwrap();
    assert!(c.peek().unwrap().is_none());
    assert_eq!(FRAME_HEADER_BYTES, 8);
}
