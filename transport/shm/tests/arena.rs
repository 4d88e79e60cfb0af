//! Arena: allocation, generations, epoch-based reclamation with pins, exhaustion, Bytes owners.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use veddb_shm::{Arena, ArenaLayout, Segment, BLOCK_HEADER_BYTES};

const EPOCH: usize = 0;

fn arena(region: usize, max_block: usize) -> Arena {
    let seg = Arc::new(Segment::create("t-arena", 4096 + region).unwrap());
    let layout = ArenaLayout {
        offset: 4096,
        len: region,
        epoch_offset: EPOCH,
        max_block,
    };
    // SAFETY: nothing else writes the region of this fresh, private segment.
    unsafe { Arena::new(seg, layout) }
}

#[test]
fn alloc_writes_header_and_value() {
    let mut a = arena(1 << 16, 4096);
    assert_eq!(a.epoch(), 1, "epochs start at 1 (0 means not pinned)");
    let b = a.alloc(b"hello world").unwrap();
    assert_eq!(b.class(), 5, "11 + 16 bytes fit in 32");
    assert_eq!(b.generation(), 1);
    assert_eq!(b.len(), 11);
    assert_eq!(b.offset() % 32, 0);
    assert_eq!(a.value_offset(&b), b.offset() + BLOCK_HEADER_BYTES as u64);
    let seg = Arc::clone(a.segment());
    let off = b.offset() as usize;
    assert_eq!(seg.load_u64(off, Ordering::Acquire), 1);
    assert_eq!(seg.load_u32(off + 8, Ordering::Acquire), 11);
    assert_eq!(seg.load_u32(off + 12, Ordering::Acquire), 5);
    let mut v = [0u8; 11];
    seg.read_bytes(off + 16, &mut v);
    assert_eq!(&v, b"hello world");
    // Classes: 17 bytes need 33 -> 64; 4080 need 4096; 4081 need 8192 > max.
    assert_eq!(a.class_for(16), Some(5));
    assert_eq!(a.class_for(17), Some(6));
    assert_eq!(a.class_for(4080), Some(12));
    assert_eq!(a.class_for(4081), None);
    assert!(a.alloc(&[0; 4081]).is_none());
    let big = a.alloc(&[9; 4080]).unwrap();
    assert_eq!(big.offset() % 4096, 0, "blocks are aligned to their size");
    let s = a.stats();
    assert_eq!(s.bytes_in_use, 32 + 4096);
    assert_eq!(s.blocks_in_use[0], 1);
    assert_eq!(s.blocks_in_use[7], 1);
    a.retire(b);
    a.retire(big);
}

#[test]
fn alignment_gaps_become_free_blocks() {
    let mut a = arena(1 << 16, 1 << 14);
    let small = a.alloc(&[1; 10]).unwrap(); // 32 bytes at the region start
    let large = a.alloc(&[2; 8000]).unwrap(); // 8192 bytes, 8192-aligned in the region
    assert_eq!(small.offset(), 4096);
    assert_eq!(large.offset(), 4096 + 8192);
    let s = a.stats();
    // The gap 32..8192 (in the region) became free blocks of 32, 64, ..., 4096 bytes.
    assert_eq!(s.bytes_free, 8192 - 32);
    assert_eq!(s.blocks_free[..8], [1, 1, 1, 1, 1, 1, 1, 1]);
    assert_eq!(
        s.bytes_in_use + s.bytes_free + s.bytes_fresh,
        s.capacity_bytes
    );
    // They are used before fresh space.
    let mid = a.alloc(&[3; 1000]).unwrap();
    assert_eq!(mid.offset(), 4096 + 1024);
    for b in [small, large, mid] {
        a.retire(b);
    }
}

#[test]
fn blocks_align_relative_to_the_region() {
    // A region that starts at an odd multiple of 8: blocks are aligned to their size relative
    // to its start, as the wire layout specifies (its `check_block` uses in-arena offsets).
    let seg = Arc::new(Segment::create("t-arena-rel", 1 << 16).unwrap());
    let layout = ArenaLayout {
        offset: 8 + 4096,
        len: 32768,
        epoch_offset: 0,
        max_block: 4096,
    };
    // SAFETY: nothing else writes the region of this fresh, private segment.
    let mut a = unsafe { Arena::new(seg, layout) };
    let x = a.alloc(&[1; 3]).unwrap();
    let y = a.alloc(&[2; 4000]).unwrap();
    assert_eq!(x.offset(), 8 + 4096);
    assert_eq!((y.offset() - layout.offset as u64) % 4096, 0);
    let v = a.alloc_value(&[3; 100]).unwrap().into_bytes();
    let (value_off, _) = a.locate(&v).unwrap();
    assert_eq!((value_off - 16 - layout.offset as u64) % 128, 0);
    for b in [x, y] {
        a.retire(b);
    }
}

#[test]
fn retired_block_waits_for_pins() {
    let mut a = arena(1 << 16, 4096);
    let b = a.alloc(b"old value").unwrap();
    let off = b.offset();
    let e = a.epoch();
    a.retire(b);
    assert_eq!(a.stats().retired_pending, 1);
    // A reader pinned at e (or earlier) may still read the block: not reused.
    assert_eq!(a.reclaim(Some(e)), 0);
    let other = a.alloc(b"new").unwrap();
    assert_ne!(other.offset(), off);
    a.advance_epoch();
    assert_eq!(a.reclaim(Some(e)), 0, "the pin <= e is still active");
    assert_eq!(a.stats().retired_pending, 1);
    // Every active pin is past e: reclaimed, and reused with the next generation.
    assert_eq!(a.reclaim(Some(e + 1)), 1);
    assert_eq!(a.stats().retired_pending, 0);
    let again = a.alloc(b"newer value").unwrap();
    assert_eq!(again.offset(), off);
    assert_eq!(again.generation(), 2);
    a.retire(again);
    a.retire(other);
    // No pin at all (None, or 0 which means "not pinned"): everything goes.
    assert_eq!(a.reclaim(Some(0)), 2);
    let s = a.stats();
    assert_eq!(s.bytes_in_use, 0);
    assert_eq!(s.blocks_in_use.iter().sum::<u64>(), 0);
}

#[test]
fn generation_increments_on_every_reuse() {
    let mut a = arena(4096, 64);
    let mut last = 0;
    let mut offset = None;
    for round in 1..=50u64 {
        let b = a.alloc(&round.to_le_bytes()).unwrap();
        assert_eq!(*offset.get_or_insert(b.offset()), b.offset());
        assert_eq!(b.generation(), last + 1);
        last = b.generation();
        a.retire(b);
        a.advance_epoch();
        assert_eq!(a.reclaim(None), 1);
    }
    assert_eq!(a.epoch(), 51);
}

#[test]
fn exhaustion_returns_none() {
    let mut a = arena(4096, 1024);
    let mut blocks = Vec::new();
    while let Some(b) = a.alloc(&[0; 1000]) {
        blocks.push(b);
    }
    assert_eq!(blocks.len(), 4);
    assert!(a.alloc(&[0; 1000]).is_none());
    // Small blocks are carved from nothing either; the region is full.
    assert!(a.alloc(b"x").is_none());
    let s = a.stats();
    assert_eq!(s.bytes_fresh, 0);
    assert_eq!(s.bytes_in_use, 4096);
    // Freed 1 KiB blocks serve 1 KiB requests again, not other classes.
    a.retire(blocks.pop().unwrap());
    a.reclaim(None);
    assert!(a.alloc(b"x").is_none());
    assert!(a.alloc(&[1; 600]).is_some());
}

#[test]
fn bytes_from_owner_round_trip_and_locate() {
    let mut a = arena(1 << 16, 4096);
    let v = a.alloc_value(b"zero-copy value").unwrap();
    let (block_off, generation) = (v.block().offset(), v.block().generation());
    let bytes: Bytes = v.into_bytes();
    assert_eq!(&bytes[..], b"zero-copy value");
    let base = a.segment().as_ptr() as usize;
    assert_eq!(bytes.as_ptr() as usize, base + block_off as usize + 16);
    assert_eq!(a.locate(&bytes), Some((block_off + 16, generation)));
    // Slices, copies and other Bytes are not values of this arena.
    assert_eq!(a.locate(&bytes.slice(1..)), None);
    assert_eq!(a.locate(&bytes.slice(..3)), None);
    assert_eq!(a.locate(&Bytes::copy_from_slice(&bytes)), None);
    assert_eq!(a.locate(&Bytes::from_static(b"zero-copy value")), None);
    assert_eq!(a.locate(&Bytes::new()), None);
    // Empty values are values too.
    let empty = a.alloc_value(b"").unwrap().into_bytes();
    assert!(a.locate(&empty).is_some());
    // Clones share the block; the block is retired when the last one goes.
    let clone = bytes.clone();
    drop(bytes);
    assert_eq!(a.stats().retired_pending, 0);
    drop(clone);
    drop(empty);
    assert_eq!(a.stats().retired_pending, 2);
    assert_eq!(a.reclaim(None), 2);
}

#[test]
fn drop_on_another_thread_retires() {
    let mut a = arena(1 << 16, 4096);
    let bytes = a.alloc_value(&[7; 500]).unwrap().into_bytes();
    let off = a.locate(&bytes).unwrap().0 - 16;
    let retire_epoch = a.advance_epoch();
    std::thread::spawn(move || {
        assert_eq!(bytes.len(), 500);
        drop(bytes);
    })
    .join()
    .unwrap();
    assert_eq!(a.stats().retired_pending, 1);
    assert_eq!(a.reclaim(Some(retire_epoch)), 0);
    assert_eq!(a.reclaim(Some(retire_epoch + 1)), 1);
    assert_eq!(a.alloc(&[8; 500]).unwrap().offset(), off);
    // A retirer handle works from other threads too.
    let b = a.alloc(b"via retirer").unwrap();
    let r = a.retirer();
    std::thread::spawn(move || r.retire(b)).join().unwrap();
    assert_eq!(a.reclaim(None), 1);
}

#[test]
fn values_outlive_the_arena() {
    let mut a = arena(1 << 16, 4096);
    let bytes = a.alloc_value(b"still mapped").unwrap().into_bytes();
    drop(a);
    assert_eq!(&bytes[..], b"still mapped");
}

#[test]
#[should_panic(expected = "not from this arena")]
fn retiring_a_foreign_block_panics() {
    let mut a = arena(1 << 16, 4096);
    let b = arena(1 << 20, 4096);
    let mut c = arena(1 << 20, 4096);
    let _held: Vec<_> = (0..100).map(|_| c.alloc(&[0; 1000]).unwrap()).collect();
    let foreign = c.alloc(&[0; 10]).unwrap();
    assert!(foreign.offset() > 4096 + (1 << 16));
    let _ = a.alloc(b"x");
    drop(b);
    a.retire(foreign);
}

#[cfg(target_os = "linux")]
#[test]
fn reader_in_read_only_mapping_checks_generation() {
    let mut a = arena(1 << 16, 4096);
    a.segment().seal_read_only_for_others().unwrap();
    let reader = Segment::map_fd(a.segment().fd().unwrap(), false).unwrap();
    let v = a.alloc_value(b"published").unwrap().into_bytes();
    let (value_off, generation) = a.locate(&v).unwrap();
    let block = value_off as usize - 16;
    let read = |reader: &Segment| {
        let g1 = reader.load_u64(block, Ordering::Acquire);
        let len = reader.load_u32(block + 8, Ordering::Acquire) as usize;
        let mut out = vec![0u8; len];
        reader.read_bytes(value_off as usize, &mut out);
        let g2 = reader.load_u64(block, Ordering::Acquire);
        (g1 == g2).then_some((g1, out))
    };
    assert_eq!(read(&reader), Some((generation, b"published".to_vec())));
    drop(v);
    a.reclaim(None);
    let _reused = a.alloc(b"replaced!").unwrap();
    let (g, out) = read(&reader).unwrap();
    assert_ne!(g, generation, "the reader sees that its block was reused");
    assert_eq!(out, b"replaced!");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random allocations, drops, epoch advances and reclaims with pins: live values never
    /// overlap and keep their bytes; nothing retired at or after a pin is reused; the accounting
    /// adds up.
    #[test]
    fn random_workload(ops in prop::collection::vec((0u8..4, 0usize..700, any::<u8>()), 1..300)) {
        let mut a = arena(1 << 15, 1024);
        let mut live: Vec<(Bytes, Vec<u8>)> = Vec::new();
        let mut pin: Option<u64> = None;
        // Offsets retired (with their epoch) and not yet freed by a reclaim whose pin was past
        // their epoch (or absent): they must not be handed out.
        let mut protected: BTreeMap<u64, u64> = BTreeMap::new();
        for (op, len, fill) in ops {
            match op {
                0 | 1 => {
                    let data = vec![fill; len];
                    if let Some(v) = a.alloc_value(&data) {
                        let off = v.block().offset();
                        prop_assert!(
                            !protected.contains_key(&off),
                            "block {} retired at {:?} reused under pin {:?}", off, protected.get(&off), pin
                        );
                        live.push((v.into_bytes(), data));
                    }
                }
                2 if !live.is_empty() => {
                    let (b, _) = live.swap_remove(len % live.len());
                    let off = a.locate(&b).unwrap().0 - 16;
                    protected.insert(off, a.epoch());
                    drop(b);
                }
                _ => {
                    match fill % 3 {
                        0 => { a.advance_epoch(); }
                        1 => pin = Some(a.epoch().saturating_sub(u64::from(fill % 2))),
                        _ => pin = None,
                    }
                    a.reclaim(pin);
                    // Pin 0 means "not pinned".
                    let active = pin.filter(|&p| p != 0);
                    protected.retain(|_, e| active.is_some_and(|p| *e >= p));
                }
            }
            // Live values keep their bytes and never overlap.
            let mut ranges: Vec<(usize, usize)> = Vec::new();
            for (b, data) in &live {
                prop_assert_eq!(&b[..], &data[..]);
                let (off, _) = a.locate(b).unwrap();
                let block = off as usize - 16;
                let class = a.segment().load_u32(block + 12, Ordering::Acquire);
                ranges.push((block, block + (1usize << class)));
            }
            ranges.sort();
            for w in ranges.windows(2) {
                prop_assert!(w[0].1 <= w[1].0, "overlap {:?}", w);
            }
            let s = a.stats();
            prop_assert_eq!(s.bytes_in_use + s.bytes_free + s.bytes_fresh, s.capacity_bytes);
        }
    }
}

/// A value written in parts: its bytes are what the parts wrote, it is a value like any other
/// once finished (retired on drop), and an unfinished one goes back to the free list at once,
/// even while a reader holds a pin (it was never a value anyone could be reading).
#[test]
fn uploads_are_written_in_parts_and_unfinished_ones_free_at_once() {
    let mut a = arena(1 << 16, 4096);
    let mut upload = a.alloc_upload(100).unwrap();
    assert_eq!(upload.len(), 100);
    upload.chunk_mut(0, 60).fill(1);
    upload.chunk_mut(60, 40).fill(2);
    let value = upload.finish().into_bytes();
    assert_eq!(&value[..60], &[1; 60][..]);
    assert_eq!(&value[60..], &[2; 40][..]);
    assert!(
        a.locate(&value).is_some(),
        "a finished upload is an arena value"
    );

    let pinned = a.epoch();
    let unfinished = a.alloc_upload(3000).unwrap();
    let offset = unfinished.block().offset();
    let before = a.stats().bytes_in_use;
    a.free_unfinished(unfinished);
    assert_eq!(a.stats().bytes_in_use, before - 4096);
    assert_eq!(a.stats().retired_pending, 0, "not retired: freed");
    // Even with every reader pinned at the current epoch, the next block of that class is it.
    a.reclaim(Some(pinned));
    let again = a.alloc(&[3; 3000]).unwrap();
    assert_eq!(again.offset(), offset);
    drop(value);
    a.retire(again);
}

#[test]
#[should_panic(expected = "past the value's end")]
fn an_upload_chunk_past_the_value_panics() {
    let mut a = arena(1 << 16, 4096);
    let mut upload = a.alloc_upload(10).unwrap();
    upload.chunk_mut(5, 6);
}
