//! ByteRing: model-checked sequences, a two-thread stress run, and hostile peers.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use proptest::prelude::*;
use veddb_shm::{
    ByteRing, RingError, Segment, COUNTER_MAX, EMPTY_HEADER, FRAME_HEADER_BYTES, WRAP_MARKER,
};
use veddb_wire::shm::layout::reason;
use veddb_wire::shm::layout::ring::header_word;

fn ring(size: usize) -> ByteRing {
    ByteRing {
        head_offset: 0,
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

/// A fresh 4 KiB ring: its layout, its segment, and both ends.
fn fresh_ring() -> (
    ByteRing,
    Arc<Segment>,
    veddb_shm::RingProducer,
    veddb_shm::RingConsumer,
) {
    let r = ring(4096);
    let seg = segment_for(&r);
    let p = r.producer(Arc::clone(&seg)).unwrap();
    let c = r.consumer(Arc::clone(&seg)).unwrap();
    (r, seg, p, c)
}

/// `len` bytes at `offset` of the segment.
fn read_vec(seg: &Segment, offset: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    seg.read_bytes(offset, &mut out);
    out
}

/// The header word at ring position `pos`.
fn word_at(r: &ByteRing, seg: &Segment, pos: usize) -> u64 {
    seg.load_u64(r.data_offset + pos, Ordering::Acquire)
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
    // A frame is whole cache lines: up to 56 payload bytes take one.
    assert_eq!(ByteRing::frame_bytes(0), 64);
    assert_eq!(ByteRing::frame_bytes(1), 64);
    assert_eq!(ByteRing::frame_bytes(56), 64);
    assert_eq!(ByteRing::frame_bytes(57), 128);
    assert_eq!(ByteRing::frame_bytes(2040), 2048);
}

#[test]
fn frame_format_on_the_wire() {
    let (r, seg, mut p, mut c) = fresh_ring();
    assert!(c.is_empty());
    assert!(p.try_push(b"abc").unwrap());
    assert!(!c.is_empty());
    let mut raw = [0u8; 72];
    seg.read_bytes(r.data_offset, &mut raw);
    // Length 3, flags 1, the payload padded to a line, then the empty header (the terminator).
    assert_eq!(&raw[..8], &[3, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&raw[8..11], b"abc");
    assert_eq!(&raw[64..], &[0; 8]);
    assert_eq!(p.tail(), 64);
    let f = c.peek().unwrap().unwrap();
    c.advance(f);
    assert_eq!(seg.load_u64(r.head_offset, Ordering::Acquire), 64);
    assert!(c.is_empty() && c.peek().unwrap().is_none());
    // A 1984-byte frame at 64, then a one-line frame: position 2112, 1984 bytes to the end,
    // too few for a largest frame (2048 bytes).
    assert!(p.try_push(&[1; 1976]).unwrap());
    assert!(p.try_push(&[9; 8]).unwrap());
    for _ in 0..2 {
        let f = c.peek().unwrap().unwrap();
        c.advance(f);
    }
    assert!(p.try_push(&[2; 2040]).unwrap());
    // The frame at 0 (length 0x7F8), its terminator at 2048, the wrap marker at 2112.
    assert_eq!(word_at(&r, &seg, 0), header_word(2040));
    assert_eq!(
        read_vec(&seg, r.data_offset, 8),
        [0xF8, 0x07, 0, 0, 1, 0, 0, 0]
    );
    assert_eq!(word_at(&r, &seg, 2048), EMPTY_HEADER);
    assert_eq!(
        read_vec(&seg, r.data_offset + 2112, 8),
        [0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0]
    );
    assert_eq!(p.tail(), 2112 + 1984 + 2048);
    let f = c.peek().unwrap().unwrap();
    assert_eq!(f.len(), 2040);
    assert_eq!(f.consumed_bytes(), 1984 + 2048);
    let mut out = Vec::new();
    c.copy_payload(&f, &mut out);
    assert_eq!(out, vec![2; 2040]);
    c.advance(f);
    assert!(c.peek().unwrap().is_none());
    assert!(c.is_empty() && p.is_empty());
}

/// A frame that ends exactly at the end of the data area puts its terminator at position 0.
#[test]
fn a_frame_ending_at_the_end_leaves_its_terminator_at_zero() {
    let (r, seg, mut p, mut c) = fresh_ring();
    let mut out = Vec::new();
    for fill in [1u8, 2] {
        assert!(p.try_push(&[fill; 2040]).unwrap());
        if fill == 2 {
            // The first lap's header at 0 was replaced by the empty word.
            assert_eq!(word_at(&r, &seg, 0), EMPTY_HEADER);
        }
        let f = c.peek().unwrap().unwrap();
        c.copy_payload(&f, &mut out);
        assert_eq!(out, vec![fill; 2040]);
        assert_eq!(f.consumed_bytes(), 2048);
        c.advance(f);
    }
    assert_eq!(c.head(), 4096);
    assert!(c.peek().unwrap().is_none());
    assert!(p.try_push(&[3; 8]).unwrap());
    let f = c.peek().unwrap().unwrap();
    assert_eq!(f.len(), 8);
    c.advance(f);
    assert!(c.peek().unwrap().is_none());
}

/// Payload bytes of an earlier lap that look like a published header, at the place where a
/// frame boundary falls in the next lap, are never read as a frame: the producer wrote the
/// terminator there first.
#[test]
fn stale_bytes_of_an_earlier_lap_are_never_a_frame() {
    let (r, seg, mut p, mut c) = fresh_ring();
    // Lap 1: a frame at 0 whose payload holds a plausible header at ring position 1024.
    let mut decoy = vec![0u8; 2040];
    decoy[1016..1024].copy_from_slice(&header_word(5).to_le_bytes());
    for payload in [decoy, vec![7; 2040]] {
        assert!(p.try_push(&payload).unwrap());
        let f = c.peek().unwrap().unwrap();
        c.advance(f);
    }
    assert_eq!(c.head(), 4096);
    assert_eq!(word_at(&r, &seg, 1024), header_word(5));
    // Lap 2: a frame at 0 that ends at 1024.
    assert!(p.try_push(&[3; 1016]).unwrap());
    let f = c.peek().unwrap().unwrap();
    assert_eq!(f.len(), 1016);
    c.advance(f);
    assert_eq!(c.head(), 4096 + 1024);
    assert_eq!(c.peek(), Ok(None), "the decoy header was read as a frame");
}

#[test]
fn limits_and_writer_bounds() {
    let (_, _, mut p, mut c) = fresh_ring();
    let error = p.try_reserve(2041).unwrap_err();
    assert_eq!(
        error,
        RingError::FrameTooLarge {
            length: 2041,
            max: 2040
        }
    );
    assert_eq!(error.reason(), reason::FRAME_TOO_LARGE);
    // A largest frame leaves half the ring: not enough for another one and its terminator.
    assert!(p.try_push(&[7; 2040]).unwrap());
    assert_eq!(p.free(), 2048);
    assert!(!p.try_push(&[8; 2040]).unwrap());
    assert!(p.try_reserve(1977).unwrap().is_none());
    // An abandoned reservation publishes nothing.
    let abandoned = p.try_reserve(1976).unwrap().unwrap();
    assert_eq!(abandoned.len(), 1976);
    let f = c.peek().unwrap().unwrap();
    assert_eq!(f.len(), 2040);
    c.advance(f);
    assert!(c.peek().unwrap().is_none());
    // Zero-length frames are frames.
    assert!(p.try_push(b"").unwrap());
    let f = c.peek().unwrap().unwrap();
    assert!(f.is_empty());
    c.advance(f);
    assert!(c.peek().unwrap().is_none());
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
    let (r, seg, mut p, mut c) = fresh_ring();
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
    assert_eq!(seg.load_u64(r.head_offset, Ordering::Acquire), 5 * 64);
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Pop,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0usize..=2032).prop_map(Op::Push),
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
                    // The frame, a skipped wrap span and the terminator after the frame.
                    let fits = size - (m_tail - m_head) >= need + 8;
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

    /// Whatever the bytes of the ring's segment — the head counter, header words and data — a
    /// consumer never panics and never reads outside the data area: it yields frames within
    /// bounds or an error.
    #[test]
    fn hostile_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 128 + 4096),
        head in prop_oneof![Just(0u64), any::<u64>(), (0u64..640).prop_map(|x| x * 64)],
        words in prop::collection::vec((0usize..64, 0u8..3, any::<u32>()), 0..8),
    ) {
        let r = ring(4096);
        let seg = segment_for(&r);
        seg.write_bytes(0, &bytes);
        // Sprinkle wrap markers, plausible frame headers and raw words where frames start.
        for (slot, kind, raw) in words {
            let word = match kind {
                0 => header_word(WRAP_MARKER),
                1 => header_word((slot as u32 * 13) % 2240),
                _ => u64::from(raw) << (slot % 2 * 32),
            };
            seg.atomic_u64(r.data_offset + slot * 64).store(word, Ordering::Relaxed);
        }
        seg.atomic_u64(r.head_offset).store(head, Ordering::Relaxed);
        let Ok(mut c) = r.consumer(Arc::clone(&seg)) else { return Ok(()); };
        let mut out = Vec::new();
        for _ in 0..100 {
            let before = c.head();
            match c.peek() {
                Ok(Some(f)) => {
                    prop_assert!(f.len() <= r.max_payload());
                    prop_assert!(f.consumed_bytes() <= r.size as u64);
                    c.copy_payload(&f, &mut out);
                    prop_assert_eq!(out.len(), f.len());
                    c.advance(f);
                    prop_assert_eq!(c.head(), before + f.consumed_bytes());
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

/// A consumer whose head is `head`, attached to a ring where the producer stored the given
/// header words (at ring positions).
fn hostile(head: u64, words: &[(usize, u64)]) -> Result<Option<usize>, RingError> {
    let r = ring(4096);
    let seg = segment_for(&r);
    for &(pos, word) in words {
        seg.atomic_u64(r.data_offset + pos)
            .store(word, Ordering::Release);
    }
    seg.atomic_u64(r.head_offset).store(head, Ordering::Release);
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
            index: "head",
            value: 3
        })
    );
    assert_eq!(
        hostile(u64::MAX - 63, &[]),
        Err(RingError::CounterTooLarge {
            index: "tail",
            value: u64::MAX - 63
        })
    );
    assert_eq!(
        hostile(8, &[]),
        Err(RingError::Misaligned {
            index: "head",
            value: 8
        })
    );
    assert_eq!(hostile(0, &[(0, header_word(8))]), Ok(Some(8)));
    assert_eq!(hostile(4096 + 64, &[(64, header_word(8))]), Ok(Some(8)));
    assert_eq!(hostile(0, &[]), Ok(None));
    assert_eq!(hostile(0, &[(64, header_word(8))]), Ok(None));
}

#[test]
fn hostile_lengths() {
    // Larger than the ring's largest payload.
    assert_eq!(
        hostile(0, &[(0, header_word(2041))]),
        Err(RingError::FrameTooLarge {
            length: 2041,
            max: 2040
        })
    );
    assert_eq!(
        hostile(0, &[(0, header_word(0xFFFF_FFFE))]),
        Err(RingError::FrameTooLarge {
            length: 0xFFFF_FFFE,
            max: 2040
        })
    );
    // Running past the end of the data area instead of wrapping.
    bad_frame(hostile(4032, &[(4032, header_word(57))]), "end of the ring");
    assert_eq!(hostile(4032, &[(4032, header_word(56))]), Ok(Some(56)));
}

/// A ring after two 1,528-byte payloads (1,536-byte frames) were pushed and consumed: the
/// consumer's head is at 3072, 1024 bytes from the end.
fn ring_at_3072() -> (
    ByteRing,
    Arc<Segment>,
    veddb_shm::RingProducer,
    veddb_shm::RingConsumer,
) {
    let (r, seg, mut p, mut c) = fresh_ring();
    for _ in 0..2 {
        p.try_push(&[0; 1528]).unwrap();
        let f = c.peek().unwrap().unwrap();
        c.advance(f);
    }
    (r, seg, p, c)
}

#[test]
fn hostile_wrap_markers() {
    let marker = header_word(WRAP_MARKER);
    // At position 0: no frame could have failed to fit there.
    bad_frame(hostile(0, &[(0, marker)]), "position 0");
    // Where at least size / 2 bytes remain to the end (any frame fits there).
    bad_frame(hostile(1024, &[(1024, marker)]), "half the ring");
    bad_frame(hostile(2048, &[(2048, marker)]), "half the ring");
    // Two markers in a row.
    bad_frame(hostile(3072, &[(3072, marker), (0, marker)]), "position 0");
    // A marker leading to position 0 where nothing is published.
    bad_frame(hostile(3072, &[(3072, marker)]), "no frame is published");
    // A marker before a frame at 0.
    assert_eq!(
        hostile(3072, &[(3072, marker), (0, header_word(100))]),
        Ok(Some(100))
    );

    // A frame that would run past the end of the data area instead of wrapping.
    let (r, seg, _p, mut c) = ring_at_3072();
    seg.atomic_u64(r.data_offset + 3072)
        .store(header_word(1600), Ordering::Release);
    bad_frame(c.peek().map(|f| f.map(|f| f.len())), "end of the ring");

    // A legitimate wrap is accepted.
    let (_r, _seg, mut p, mut c) = ring_at_3072();
    assert!(p.try_push(&[5; 1600]).unwrap());
    let f = c.peek().unwrap().unwrap();
    assert_eq!((f.len(), f.consumed_bytes()), (1600, 1024 + 1664));
}

#[test]
fn hostile_flags() {
    // Flags other than 1, and the old format's flags 0 with a non-zero length.
    for (word, flags) in [
        (u64::from_le_bytes([8, 0, 0, 0, 2, 0, 0, 0]), 2),
        (u64::from_le_bytes([8, 0, 0, 0, 0, 0, 0, 0]), 0),
        (u64::from_le_bytes([0, 0, 0, 0, 0, 0, 0, 0x80]), 0x8000_0000),
    ] {
        let error = hostile(0, &[(0, word)]).unwrap_err();
        assert_eq!(error, RingError::BadFlags { position: 0, flags });
        assert_eq!(error.reason(), reason::BAD_FRAME);
    }
}

#[test]
fn hostile_head_seen_by_producer() {
    let r = ring(4096);
    let seg = segment_for(&r);
    let mut p = r.producer(Arc::clone(&seg)).unwrap();
    for _ in 0..2 {
        assert!(p.try_push(&[0; 1976]).unwrap());
    }
    // Head beyond our tail.
    seg.atomic_u64(r.head_offset)
        .store(16384, Ordering::Release);
    assert_eq!(
        p.try_push(&[0; 1000]).unwrap_err(),
        RingError::HeadPastTail {
            head: 16384,
            tail: 3968
        }
    );
    // Misaligned.
    seg.atomic_u64(r.head_offset).store(5, Ordering::Release);
    assert_eq!(
        p.try_push(&[0; 1000]).unwrap_err(),
        RingError::Misaligned {
            index: "head",
            value: 5
        }
    );
    // Backwards after a good value.
    seg.atomic_u64(r.head_offset).store(1984, Ordering::Release);
    assert!(p.try_push(&[0; 1000]).unwrap());
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
                        previous: 1984,
                        now: 0
                    }
                );
                break;
            }
        }
    }
}

/// A head a peer stored before the other end attached: refused when misaligned or so large
/// that the ends' sums could overflow (a head near `u64::MAX` once made the producer's next
/// push overflow: found by the `ring_producer` fuzz target).
#[test]
fn hostile_counters_at_attach() {
    let r = ring(4096);
    for head in [u64::MAX - 7, COUNTER_MAX + 8, 5] {
        let seg = segment_for(&r);
        seg.atomic_u64(r.head_offset).store(head, Ordering::Release);
        match r.producer(Arc::clone(&seg)) {
            Err(error) => assert_eq!(error.reason(), reason::BAD_INDICES, "{error}"),
            Ok(_) => panic!("producer with head {head}"),
        }
        assert!(
            r.consumer(Arc::clone(&seg)).is_err(),
            "consumer with head {head}"
        );
    }
    // At the limit both ends still work.
    let seg = segment_for(&r);
    seg.atomic_u64(r.head_offset)
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

/// `append_payload` appends exactly the frame's payload, after what the buffer held.
#[test]
fn append_payload_appends_the_payload() {
    let (_, _, mut p, mut c) = fresh_ring();
    for len in [0usize, 1, 56, 57, 1000] {
        let data = payload(len as u64, len);
        assert!(p.try_push(&data).unwrap());
        let f = c.peek().unwrap().unwrap();
        let mut out = bytes::BytesMut::from(&b"kept:"[..]);
        c.append_payload(&f, &mut out);
        assert_eq!(&out[..5], b"kept:");
        assert_eq!(&out[5..], &data[..]);
        c.advance(f);
    }
}
