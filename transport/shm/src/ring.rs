//! [`ByteRing`]: a single-producer single-consumer ring of variable-length frames in a
//! [`Segment`], safe against a hostile peer.
//!
//! # Format
//!
//! The protocol is defined once, in `veddb_wire::shm::layout::ring` (pure: every index rule,
//! frame check and write plan, the one [`RingError`]); this module only moves bytes and atomics
//! in a [`Segment`] and calls those functions to decide. What follows is a summary.
//!
//! - The data area is `size` bytes (a power of two) at `data_offset`. `head` (consumer) and `tail`
//!   (producer) are free-running u64 byte counters, each an `AtomicU64` at its own offset; the
//!   position of a counter is `counter & (size - 1)`. `tail - head` bytes are in use.
//! - A frame is an 8-byte header — u32 payload length `L`, little-endian, then u32 flags = 0
//!   (any other flags value is an error) — followed by `L` payload bytes, padded to a multiple
//!   of 8. Every frame starts 8-aligned.
//! - A frame never wraps: when the contiguous space from the tail's position to the end of the
//!   area is smaller than the frame, the producer writes a header with `L = 0xFFFF_FFFF` (the wrap
//!   marker) there and places the frame at position 0; the marker consumes the bytes to the end.
//! - The largest payload is `size / 2 - 8`, so a frame is at most `size / 2` bytes and an empty
//!   ring always takes it. Sizes are powers of two from 4 KiB to 1 GiB; counters stay at most
//!   2^63 ([`COUNTER_MAX`]) so that no sum of them can overflow.
//! - The producer writes the frame, then publishes it with a Release store of `tail`; the consumer
//!   loads `tail` with Acquire, reads, and frees the space with a Release store of `head`. This
//!   producer publishes a wrap marker together with the frame after it; the consumer also accepts
//!   a marker published alone.
//! - The counters are native-endian atomics, which is the layout's little-endian on every
//!   supported target (the crate refuses to build for big-endian ones).
//!
//! # Trust
//!
//! Each side keeps its own counter privately and never reads it back from shared memory; the
//! other side's counter is loaded once per refresh into a local, validated (8-aligned, never going
//! back, never more than `size` ahead), and every header is read once into locals and validated
//! against the published span before any payload byte is touched. An inconsistent peer yields a
//! [`RingError`] (disconnect it), never a panic or an access outside the data area.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use veddb_wire::shm::layout::ring::{
    check_advance, check_frame, check_ring_bytes, frame_space, max_frame_payload, plan_write,
    validate_indices, FrameStep,
};
pub use veddb_wire::shm::layout::ring::{
    RingError, COUNTER_MAX, FRAME_FLAGS, FRAME_HEADER_BYTES, WRAP_MARKER,
};

use crate::Segment;

/// The memory a ring lives in: a [`Segment`] shared between processes, or a model of one (the
/// loom model check in `tests/loom.rs`, whose memory records every access so that a byte read
/// before its write was published is reported). Counters are 8-aligned `u64`s accessed
/// atomically; bytes are copied in and out.
pub trait RingMemory {
    /// Bytes of the memory.
    fn bytes_len(&self) -> usize;
    /// Whether this process may write it.
    fn is_writable(&self) -> bool;
    /// Loads the counter at `offset`.
    fn load_counter(&self, offset: usize, order: Ordering) -> u64;
    /// Stores the counter at `offset`.
    fn store_counter(&self, offset: usize, value: u64, order: Ordering);
    /// Copies `out.len()` bytes at `offset` into `out`.
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copies `bytes` to `offset`.
    fn write_bytes(&self, offset: usize, bytes: &[u8]);
}

impl RingMemory for Segment {
    #[inline]
    fn bytes_len(&self) -> usize {
        Segment::len(self)
    }

    #[inline]
    fn is_writable(&self) -> bool {
        Segment::is_writable(self)
    }

    #[inline]
    fn load_counter(&self, offset: usize, order: Ordering) -> u64 {
        self.atomic_u64(offset).load(order)
    }

    #[inline]
    fn store_counter(&self, offset: usize, value: u64, order: Ordering) {
        self.atomic_u64(offset).store(value, order)
    }

    #[inline]
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        Segment::read_bytes(self, offset, out)
    }

    #[inline]
    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        Segment::write_bytes(self, offset, bytes)
    }
}

/// Where a ring lives in a segment. `Copy`: describe it once, then make a [`producer`](Self::producer)
/// in one process and a [`consumer`](Self::consumer) in the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRing {
    /// Offset of the consumer's `AtomicU64` head counter (8-aligned).
    pub head_offset: usize,
    /// Offset of the producer's `AtomicU64` tail counter (8-aligned).
    pub tail_offset: usize,
    /// Offset of the data area (8-aligned).
    pub data_offset: usize,
    /// Bytes of the data area: a power of two from 4 KiB to 1 GiB.
    pub size: usize,
}

impl ByteRing {
    /// The largest payload: `size / 2 - 8`.
    pub const fn max_payload(&self) -> usize {
        max_frame_payload(self.size as u32) as usize
    }

    /// Bytes a frame with a payload of `len` bytes occupies (header plus padding to 8).
    pub const fn frame_bytes(len: usize) -> usize {
        frame_space(len)
    }

    /// The size as the protocol's functions take it (valid after [`check`](Self::check)).
    fn size_u32(&self) -> u32 {
        self.size as u32
    }

    /// Checks the layout against a segment of `segment_len` bytes: a valid ring size, offsets
    /// 8-aligned, everything in bounds, counters outside the data area and apart.
    pub fn check(&self, segment_len: usize) -> Result<(), RingError> {
        let in_bounds =
            |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= segment_len);
        let overlaps = |a: usize, alen: usize, b: usize, blen: usize| a < b + blen && b < a + alen;
        let size = u32::try_from(self.size).map_err(|_| RingError::BadSize {
            size: self.size as u64,
        })?;
        check_ring_bytes(size)?;
        if !self.head_offset.is_multiple_of(8)
            || !self.tail_offset.is_multiple_of(8)
            || !self.data_offset.is_multiple_of(8)
        {
            return Err(RingError::BadPlacement {
                why: "offsets must be 8-aligned",
            });
        }
        if !in_bounds(self.head_offset, 8)
            || !in_bounds(self.tail_offset, 8)
            || !in_bounds(self.data_offset, self.size)
        {
            return Err(RingError::BadPlacement {
                why: "ring outside the segment",
            });
        }
        if self.head_offset == self.tail_offset
            || overlaps(self.head_offset, 8, self.data_offset, self.size)
            || overlaps(self.tail_offset, 8, self.data_offset, self.size)
        {
            return Err(RingError::BadPlacement {
                why: "counters overlap each other or the data",
            });
        }
        Ok(())
    }

    fn attach<M: RingMemory>(&self, seg: &M) -> Result<(), RingError> {
        self.check(seg.bytes_len())?;
        if !seg.is_writable() {
            return Err(RingError::BadPlacement {
                why: "both ends of a ring need a writable mapping",
            });
        }
        Ok(())
    }

    /// The producing end. Reads both counters once to start from the ring's current state
    /// (zero for a fresh ring), and validates them.
    pub fn producer<M: RingMemory>(&self, seg: Arc<M>) -> Result<RingProducer<M>, RingError> {
        self.attach(&*seg)?;
        let tail = seg.load_counter(self.tail_offset, Ordering::Acquire);
        let head = seg.load_counter(self.head_offset, Ordering::Acquire);
        validate_indices(head, tail, self.size_u32())?;
        Ok(RingProducer {
            seg,
            ring: *self,
            tail,
            head_cache: head,
        })
    }

    /// The consuming end. Reads its own counter once to start from (zero for a fresh ring).
    pub fn consumer<M: RingMemory>(&self, seg: Arc<M>) -> Result<RingConsumer<M>, RingError> {
        self.attach(&*seg)?;
        let head = seg.load_counter(self.head_offset, Ordering::Acquire);
        // The tail is validated against this head at every refresh; the head itself must be
        // aligned and within COUNTER_MAX.
        validate_indices(head, head, self.size_u32())?;
        Ok(RingConsumer {
            seg,
            ring: *self,
            head,
            tail_cache: head,
        })
    }
}

/// The producing end of a [`ByteRing`].
#[derive(Debug)]
pub struct RingProducer<M: RingMemory = Segment> {
    seg: Arc<M>,
    ring: ByteRing,
    /// Our tail: private, authoritative (the shared copy is only ever written).
    tail: u64,
    /// The consumer's head as last loaded and validated.
    head_cache: u64,
}

impl<M: RingMemory> RingProducer<M> {
    /// The ring's layout.
    pub fn ring(&self) -> &ByteRing {
        &self.ring
    }

    /// Our tail counter (bytes ever published).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Loads the consumer's head once, validates it against what we know, caches it.
    fn refresh_head(&mut self) -> Result<(), RingError> {
        let head = self
            .seg
            .load_counter(self.ring.head_offset, Ordering::Acquire);
        check_advance("head", self.head_cache, head)?;
        validate_indices(head, self.tail, self.ring.size_u32())?;
        self.head_cache = head;
        Ok(())
    }

    /// Reserves a frame for a payload of `len` bytes: `Ok(None)` when the ring has no room now
    /// (the consumer's head is only re-read then), an error when `len` is over
    /// [`ByteRing::max_payload`] or the consumer's head is inconsistent (disconnect it). Write the
    /// payload with [`FrameWriter::write_at`], then [`FrameWriter::commit`]; dropping the writer
    /// abandons the frame.
    pub fn try_reserve(&mut self, len: usize) -> Result<Option<FrameWriter<'_, M>>, RingError> {
        let size = self.ring.size_u32();
        let plan = match plan_write(self.head_cache, self.tail, size, len)? {
            Some(plan) => plan,
            None => {
                self.refresh_head()?;
                match plan_write(self.head_cache, self.tail, size, len)? {
                    Some(plan) => plan,
                    None => return Ok(None),
                }
            }
        };
        if let Some(wrap_at) = plan.wrap_at {
            // The bytes from the marker to the end are free (counted in the plan's new tail).
            self.write_header(wrap_at, WRAP_MARKER);
        }
        Ok(Some(FrameWriter {
            producer: self,
            start: plan.frame_pos,
            len,
            new_tail: plan.new_tail,
        }))
    }

    fn write_header(&self, pos: usize, len: u32) {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&FRAME_FLAGS.to_le_bytes());
        self.seg.write_bytes(self.ring.data_offset + pos, &header);
    }

    /// Convenience: reserve, copy `payload`, commit. `Ok(false)` when the ring is full.
    pub fn try_push(&mut self, payload: &[u8]) -> Result<bool, RingError> {
        match self.try_reserve(payload.len())? {
            Some(mut w) => {
                w.write_at(0, payload);
                w.commit();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Bytes in use, from a fresh (unvalidated, clamped) load of the consumer's head: a hint.
    pub fn used(&self) -> usize {
        let head = self
            .seg
            .load_counter(self.ring.head_offset, Ordering::Acquire);
        self.tail.wrapping_sub(head).min(self.ring.size as u64) as usize
    }

    /// Bytes free (`size - used()`): a hint.
    pub fn free(&self) -> usize {
        self.ring.size - self.used()
    }

    /// Whether the consumer has taken everything we published: a hint.
    pub fn is_empty(&self) -> bool {
        self.used() == 0
    }
}

/// A reserved, unpublished frame. Write the payload, then [`commit`](Self::commit).
#[derive(Debug)]
pub struct FrameWriter<'a, M: RingMemory = Segment> {
    producer: &'a mut RingProducer<M>,
    /// Position of the frame header in the data area.
    start: usize,
    len: usize,
    new_tail: u64,
}

impl<M: RingMemory> FrameWriter<'_, M> {
    /// Payload bytes reserved.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `bytes` to `offset` of the payload.
    ///
    /// # Panics
    /// If `offset + bytes.len()` exceeds the reserved length.
    #[track_caller]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|end| end <= self.len),
            "FrameWriter::write_at({offset}, {} bytes) beyond the reserved {} bytes",
            bytes.len(),
            self.len
        );
        let p = &self.producer;
        p.seg.write_bytes(
            p.ring.data_offset + self.start + FRAME_HEADER_BYTES + offset,
            bytes,
        );
    }

    /// Writes the header and publishes the frame (Release store of the tail).
    pub fn commit(self) {
        let p = self.producer;
        p.write_header(self.start, self.len as u32);
        p.tail = self.new_tail;
        p.seg
            .store_counter(p.ring.tail_offset, p.tail, Ordering::Release);
    }
}

/// A validated frame found by [`RingConsumer::peek`]: plain numbers, no borrow of shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef {
    /// The consumer's head when the frame was peeked.
    head: u64,
    /// Position of the payload in the data area.
    payload_pos: usize,
    len: u32,
    /// The head after this frame (and the wrap marker before it, if any).
    next_head: u64,
}

impl FrameRef {
    /// Payload bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The header's flags word (always [`FRAME_FLAGS`]: others are rejected).
    pub fn flags(&self) -> u32 {
        FRAME_FLAGS
    }

    /// Bytes the frame frees when consumed (its padded size plus a skipped wrap marker's span).
    pub fn consumed_bytes(&self) -> u64 {
        self.next_head - self.head
    }
}

/// The consuming end of a [`ByteRing`].
#[derive(Debug)]
pub struct RingConsumer<M: RingMemory = Segment> {
    seg: Arc<M>,
    ring: ByteRing,
    /// Our head: private, authoritative (the shared copy is only ever written).
    head: u64,
    /// The producer's tail as last loaded and validated; `head <= tail_cache <= head + size`.
    tail_cache: u64,
}

impl<M: RingMemory> RingConsumer<M> {
    /// The ring's layout.
    pub fn ring(&self) -> &ByteRing {
        &self.ring
    }

    /// Our head counter (bytes ever consumed).
    pub fn head(&self) -> u64 {
        self.head
    }

    fn read_header(&self, head: u64) -> [u8; FRAME_HEADER_BYTES] {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let pos = (head & (self.ring.size as u64 - 1)) as usize;
        self.seg
            .read_bytes(self.ring.data_offset + pos, &mut header);
        header
    }

    /// Loads the producer's tail once (Acquire) and validates it.
    fn refresh_tail(&mut self) -> Result<(), RingError> {
        let tail = self
            .seg
            .load_counter(self.ring.tail_offset, Ordering::Acquire);
        check_advance("tail", self.tail_cache, tail)?;
        validate_indices(self.head, tail, self.ring.size_u32())?;
        self.tail_cache = tail;
        Ok(())
    }

    /// The next frame, if one is published: `Ok(None)` when the ring is empty, an error when the
    /// producer broke the protocol (disconnect it). The producer's tail is loaded only when the
    /// frames seen so far are used up, and once per call at most. Peeking does not consume: copy
    /// the payload out ([`copy_payload`](Self::copy_payload)), then [`advance`](Self::advance).
    pub fn peek(&mut self) -> Result<Option<FrameRef>, RingError> {
        if self.head == self.tail_cache {
            self.refresh_tail()?;
            if self.head == self.tail_cache {
                return Ok(None);
            }
        }
        let size = self.ring.size_u32();
        let mut at = self.head;
        // At most one wrap marker before a frame: check_frame refuses a marker at position 0,
        // where the step after a marker lands.
        let (payload_pos, payload_len, next_head) = loop {
            match check_frame(at, self.tail_cache, size, self.read_header(at))? {
                FrameStep::Frame {
                    payload_pos,
                    payload_len,
                    next_head,
                } => break (payload_pos, payload_len, next_head),
                FrameStep::Wrap { next_head } if next_head == self.tail_cache => {
                    // A marker published alone: step over it locally (the head is published
                    // with the next frame); its frame comes with a later tail.
                    self.head = next_head;
                    return Ok(None);
                }
                FrameStep::Wrap { next_head } => at = next_head,
            }
        };
        Ok(Some(FrameRef {
            head: self.head,
            payload_pos,
            len: payload_len as u32,
            next_head,
        }))
    }

    /// Replaces the contents of `out` with a private copy of the frame's payload (decode only
    /// this copy: the producer may rewrite the shared bytes at any time).
    ///
    /// # Panics
    /// If `frame` was not peeked from this ring (a misuse; bounds are checked regardless).
    pub fn copy_payload(&self, frame: &FrameRef, out: &mut Vec<u8>) {
        assert!(
            frame.payload_pos + frame.len as usize <= self.ring.size,
            "frame not from this ring"
        );
        out.clear();
        out.resize(frame.len as usize, 0);
        self.seg
            .read_bytes(self.ring.data_offset + frame.payload_pos, out);
    }

    /// Copies the payload into `out[..frame.len()]`.
    ///
    /// # Panics
    /// If `out` is shorter than the payload, or `frame` was not peeked from this ring.
    pub fn copy_payload_into(&self, frame: &FrameRef, out: &mut [u8]) {
        let len = frame.len as usize;
        assert!(
            frame.payload_pos + len <= self.ring.size,
            "frame not from this ring"
        );
        self.seg
            .read_bytes(self.ring.data_offset + frame.payload_pos, &mut out[..len]);
    }

    /// Consumes `frame` locally without publishing the head (batch several, then
    /// [`publish_head`](Self::publish_head)).
    ///
    /// # Panics
    /// If `frame` is not the frame at the current head (peek it again after consuming).
    #[track_caller]
    pub fn consume(&mut self, frame: FrameRef) {
        assert_eq!(
            frame.head, self.head,
            "RingConsumer: frame was not peeked at the current head"
        );
        self.head = frame.next_head;
    }

    /// Publishes our head (Release store): the producer may reuse everything before it.
    pub fn publish_head(&self) {
        self.seg
            .store_counter(self.ring.head_offset, self.head, Ordering::Release);
    }

    /// Consumes `frame` and publishes the head.
    ///
    /// # Panics
    /// As [`consume`](Self::consume).
    #[track_caller]
    pub fn advance(&mut self, frame: FrameRef) {
        self.consume(frame);
        self.publish_head();
    }

    /// Bytes published and not yet consumed, from a fresh (unvalidated, clamped) load of the
    /// tail: a hint.
    pub fn used(&self) -> usize {
        let tail = self
            .seg
            .load_counter(self.ring.tail_offset, Ordering::Acquire);
        tail.wrapping_sub(self.head).min(self.ring.size as u64) as usize
    }

    /// `size - used()`: a hint.
    pub fn free(&self) -> usize {
        self.ring.size - self.used()
    }

    /// Whether nothing is published beyond our head: a hint.
    pub fn is_empty(&self) -> bool {
        self.used() == 0
    }
}
