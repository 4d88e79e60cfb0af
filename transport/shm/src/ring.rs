//! [`ByteRing`]: a single-producer single-consumer ring of variable-length frames in a
//! [`Segment`], safe against a hostile peer.
//!
//! # Format
//!
//! The protocol is defined once, in `veddb_wire::shm::layout::ring` (pure: every index rule,
//! frame check and write plan, the one [`RingError`]); this module only moves bytes and atomics
//! in a [`Segment`] and calls those functions to decide. What follows is a summary.
//!
//! - The data area is `size` bytes (a power of two) at `data_offset`. `head` (consumer) and
//!   `tail` (producer) are free-running u64 byte counters; the position of a counter is
//!   `counter & (size - 1)`. Only the head is shared (an `AtomicU64` at `head_offset`): the
//!   producer keeps its tail to itself, and the consumer learns what is published from the
//!   frame headers, so a message costs one cache line (the one holding its header and, for a
//!   small frame, its payload) instead of a counter line plus the data.
//! - A frame is an 8-byte header — u32 payload length `L`, little-endian, then u32 flags =
//!   [`FRAME_FLAGS`] (any other non-empty header is an error) — followed by `L` payload bytes,
//!   padded to a multiple of 64 (`FRAME_ALIGN`): every frame starts on a cache line of the data
//!   area and is whole lines. A header word of zero
//!   ([`EMPTY_HEADER`]) means nothing is published there yet.
//! - A frame never wraps: when the contiguous space from the tail's position to the end of the
//!   area is smaller than the frame, the producer writes the frame at position 0 and then a
//!   header with `L = 0xFFFF_FFFF` (the wrap marker) at the old position; the marker consumes the
//!   bytes to the end.
//! - The largest payload is `size / 2 - 8`, so a frame and the empty header after it fit in an
//!   empty ring even after a wrap marker. Sizes are powers of two from 4 KiB to 1 GiB; counters
//!   stay at most 2^63 ([`COUNTER_MAX`]) so that no sum of them can overflow.
//! - The producer writes the payload, then an empty header right after the frame (the
//!   terminator: where the consumer will look next), then publishes with a Release store of the
//!   frame's header word (of the wrap marker, last, when it wrapped). The consumer loads the
//!   header word at its head with Acquire, reads, and frees the space with a Release store of
//!   the head. The producer always leaves room for the terminator, so it never lands on a frame
//!   the consumer has not taken.
//! - Counters and header words are native-endian atomics, which is the layout's little-endian
//!   on every supported target (the crate refuses to build for big-endian ones).
//!
//! # Trust
//!
//! Each side keeps its own counter privately and never reads it back from shared memory; the
//! consumer's head is loaded by the producer once per refresh into a local, validated
//! (a multiple of 64, never going back, never more than `size` behind the tail). Every header word is
//! loaded once into a local and validated before any payload byte is touched; a frame handed
//! out always lies inside the data area and within the size limit. An inconsistent peer yields
//! a [`RingError`] (disconnect it), never a panic or an access outside the data area.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use veddb_wire::shm::layout::ring::{
    check_advance, check_frame, check_ring_bytes, frame_space, header_word, max_frame_payload,
    plan_write_valid, validate_indices, FrameStep, FRAME_ALIGN,
};
pub use veddb_wire::shm::layout::ring::{
    RingError, COUNTER_MAX, EMPTY_HEADER, FRAME_FLAGS, FRAME_HEADER_BYTES, WRAP_MARKER,
};

use crate::Segment;

/// The memory a ring lives in: a [`Segment`] shared between processes, or a model of one (the
/// loom model check in `tests/loom.rs`, whose memory records every access so that a byte read
/// before its write was published is reported). Counters and header words are 8-aligned `u64`s
/// accessed atomically; payload bytes are copied in and out.
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
    /// Copies `out.len()` bytes at `offset` into `out`, which need not be initialized (every
    /// byte of it is afterwards).
    fn read_bytes_uninit(&self, offset: usize, out: &mut [std::mem::MaybeUninit<u8>]) {
        let mut bytes = vec![0; out.len()];
        self.read_bytes(offset, &mut bytes);
        for (slot, byte) in out.iter_mut().zip(bytes) {
            slot.write(byte);
        }
    }
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
    fn read_bytes_uninit(&self, offset: usize, out: &mut [std::mem::MaybeUninit<u8>]) {
        Segment::read_bytes_uninit(self, offset, out)
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
    /// Offset of the consumer's `AtomicU64` head counter (8-aligned; best on a cache line of its
    /// own, since only the producer reads it, and only when the ring looks full).
    pub head_offset: usize,
    /// Offset of the data area (8-aligned; 64-aligned for a frame to be its own cache lines).
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
    /// 8-aligned, everything in bounds, the counter outside the data area.
    pub fn check(&self, segment_len: usize) -> Result<(), RingError> {
        let in_bounds =
            |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= segment_len);
        let overlaps = |a: usize, alen: usize, b: usize, blen: usize| a < b + blen && b < a + alen;
        let size = u32::try_from(self.size).map_err(|_| RingError::BadSize {
            size: self.size as u64,
        })?;
        check_ring_bytes(size)?;
        if !self.head_offset.is_multiple_of(8) || !self.data_offset.is_multiple_of(8) {
            return Err(RingError::BadPlacement {
                why: "offsets must be 8-aligned",
            });
        }
        if !in_bounds(self.head_offset, 8) || !in_bounds(self.data_offset, self.size) {
            return Err(RingError::BadPlacement {
                why: "ring outside the segment",
            });
        }
        if overlaps(self.head_offset, 8, self.data_offset, self.size) {
            return Err(RingError::BadPlacement {
                why: "the head counter overlaps the data",
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

    /// The producing end of a fresh ring (or of one whose every frame was consumed): starts at
    /// the consumer's published head, which it validates. The header word there must be empty
    /// (a fresh ring's data area is zero).
    pub fn producer<M: RingMemory>(&self, seg: Arc<M>) -> Result<RingProducer<M>, RingError> {
        self.attach(&*seg)?;
        let head = seg.load_counter(self.head_offset, Ordering::Acquire);
        validate_indices(head, head, self.size_u32())?;
        Ok(RingProducer {
            seg,
            ring: *self,
            tail: head,
            head_cache: head,
            cleared: head,
        })
    }

    /// The consuming end. Reads its own counter once to start from (zero for a fresh ring).
    pub fn consumer<M: RingMemory>(&self, seg: Arc<M>) -> Result<RingConsumer<M>, RingError> {
        self.attach(&*seg)?;
        let head = seg.load_counter(self.head_offset, Ordering::Acquire);
        // The head must be aligned and within COUNTER_MAX.
        validate_indices(head, head, self.size_u32())?;
        Ok(RingConsumer {
            seg,
            ring: *self,
            head,
        })
    }
}

/// The producing end of a [`ByteRing`].
#[derive(Debug)]
pub struct RingProducer<M: RingMemory = Segment> {
    seg: Arc<M>,
    ring: ByteRing,
    /// Our tail: private (never in shared memory).
    tail: u64,
    /// The consumer's head as last loaded and validated.
    head_cache: u64,
    /// Every frame-aligned counter from `tail` up to this one has the empty header word at its
    /// position: cleared ahead of time, after earlier publications, so that publishing a frame
    /// usually finds its terminator in place and writes only the frame's own lines (a store to
    /// another line before the header's would delay the header: stores become visible in order).
    cleared: u64,
}

/// How far ahead of its tail the producer keeps header words cleared: four lines, so that a
/// run of small frames finds each terminator in place.
const CLEAR_AHEAD: u64 = 4 * FRAME_ALIGN as u64;

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
    /// abandons the frame (nothing was published).
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<Option<FrameWriter<'_, M>>, RingError> {
        let size = self.ring.size_u32();
        // Both indices were validated together when the head was loaded (`refresh_head`); the
        // tail has only moved within the room that head left.
        let plan = match plan_write_valid(self.head_cache, self.tail, size, len)? {
            Some(plan) => plan,
            None => {
                self.refresh_head()?;
                match plan_write_valid(self.head_cache, self.tail, size, len)? {
                    Some(plan) => plan,
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(FrameWriter {
            producer: self,
            wrap_at: plan.wrap_at,
            start: plan.frame_pos,
            terminator: plan.terminator_pos,
            len,
            new_tail: plan.new_tail,
        }))
    }

    /// Stores the header word at `pos` of the data area.
    #[inline]
    fn store_header(&self, pos: usize, word: u64, order: Ordering) {
        self.seg
            .store_counter(self.ring.data_offset + pos, word, order);
    }

    /// Clears the header words at frame-aligned counters from `cleared` up to `CLEAR_AHEAD`
    /// past the tail, never beyond the free space (a counter `c` is free while
    /// `c < head + size`): done after a publication, off its critical path.
    #[inline]
    fn clear_ahead(&mut self) {
        let limit = (self.tail + CLEAR_AHEAD).min(self.head_cache + self.ring.size as u64);
        let mask = self.ring.size as u64 - 1;
        while self.cleared < limit {
            self.store_header(
                (self.cleared & mask) as usize,
                EMPTY_HEADER,
                Ordering::Relaxed,
            );
            self.cleared += FRAME_ALIGN as u64;
        }
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
    /// Where to store the wrap marker, last, when the frame wrapped to position 0.
    wrap_at: Option<usize>,
    /// Position of the frame header in the data area.
    start: usize,
    /// Position of the empty header after the frame.
    terminator: usize,
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
    #[inline]
    #[track_caller]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            write_beyond_reservation(offset, bytes.len(), self.len);
        }
        let p = &self.producer;
        p.seg.write_bytes(
            p.ring.data_offset + self.start + FRAME_HEADER_BYTES + offset,
            bytes,
        );
    }

    /// Publishes the frame: makes sure the header word after it is empty (usually cleared
    /// ahead of time already), stores its header word (Release), then, when it wrapped, the
    /// wrap marker (Release) that leads the consumer to it; then clears words ahead.
    #[inline]
    pub fn commit(self) {
        let p = self.producer;
        if p.cleared <= self.new_tail {
            p.store_header(self.terminator, EMPTY_HEADER, Ordering::Relaxed);
            p.cleared = self.new_tail + FRAME_ALIGN as u64;
        }
        p.store_header(self.start, header_word(self.len as u32), Ordering::Release);
        if let Some(wrap_at) = self.wrap_at {
            p.store_header(wrap_at, header_word(WRAP_MARKER), Ordering::Release);
        }
        p.tail = self.new_tail;
        p.clear_ahead();
    }
}

#[cold]
#[track_caller]
fn write_beyond_reservation(offset: usize, len: usize, reserved: usize) -> ! {
    panic!("FrameWriter::write_at({offset}, {len} bytes) beyond the reserved {reserved} bytes")
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

    /// Loads the header word at counter `at` (Acquire: a published header makes its frame's
    /// bytes visible).
    #[inline]
    fn load_header(&self, at: u64) -> u64 {
        let pos = (at & (self.ring.size as u64 - 1)) as usize;
        self.seg
            .load_counter(self.ring.data_offset + pos, Ordering::Acquire)
    }

    /// The next frame, if one is published: `Ok(None)` when the header at the head is empty, an
    /// error when the producer broke the protocol (disconnect it). Loads the header word at the
    /// head (and, after a wrap marker, the one at position 0): one cache line, the frame's own.
    /// Peeking does not consume: copy the payload out ([`copy_payload`](Self::copy_payload)),
    /// then [`advance`](Self::advance).
    #[inline]
    pub fn peek(&mut self) -> Result<Option<FrameRef>, RingError> {
        let size = self.ring.size_u32();
        let mut at = self.head;
        // At most one wrap marker before a frame: check_frame refuses a marker at position 0,
        // where the step after a marker lands.
        let (payload_pos, payload_len, next_head) = loop {
            match check_frame(at, size, self.load_header(at))? {
                FrameStep::Frame {
                    payload_pos,
                    payload_len,
                    next_head,
                } => break (payload_pos, payload_len, next_head),
                FrameStep::Empty if at == self.head => return Ok(None),
                FrameStep::Empty => return Err(marker_before_nothing()),
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
    #[inline]
    pub fn copy_payload_into(&self, frame: &FrameRef, out: &mut [u8]) {
        let len = frame.len as usize;
        assert!(
            frame.payload_pos + len <= self.ring.size,
            "frame not from this ring"
        );
        self.seg
            .read_bytes(self.ring.data_offset + frame.payload_pos, &mut out[..len]);
    }

    /// Copies the payload's bytes `start..start + out.len()` into `out` (a part of a large
    /// frame read straight to where it goes, such as an upload's chunk).
    ///
    /// # Panics
    /// If the range is not within the payload, or `frame` was not peeked from this ring.
    #[inline]
    pub fn copy_payload_range(&self, frame: &FrameRef, start: usize, out: &mut [u8]) {
        assert!(
            start
                .checked_add(out.len())
                .is_some_and(|end| end <= frame.len as usize),
            "range past the frame's payload"
        );
        assert!(
            frame.payload_pos + frame.len as usize <= self.ring.size,
            "frame not from this ring"
        );
        self.seg
            .read_bytes(self.ring.data_offset + frame.payload_pos + start, out);
    }

    /// Appends the payload to `out` (no zeroing of the room first).
    ///
    /// # Panics
    /// If `frame` was not peeked from this ring.
    #[inline]
    pub fn append_payload(&self, frame: &FrameRef, out: &mut bytes::BytesMut) {
        let len = frame.len as usize;
        assert!(
            frame.payload_pos + len <= self.ring.size,
            "frame not from this ring"
        );
        out.reserve(len);
        let start = out.len();
        self.seg.read_bytes_uninit(
            self.ring.data_offset + frame.payload_pos,
            &mut out.spare_capacity_mut()[..len],
        );
        // SAFETY: `reserve` made room for `len` more bytes, and `read_bytes_uninit` initialized
        // every one of them.
        unsafe { out.set_len(start + len) }
    }

    /// Consumes `frame` locally without publishing the head (batch several, then
    /// [`publish_head`](Self::publish_head)).
    ///
    /// # Panics
    /// If `frame` is not the frame at the current head (peek it again after consuming).
    #[inline]
    #[track_caller]
    pub fn consume(&mut self, frame: FrameRef) {
        assert_eq!(
            frame.head, self.head,
            "RingConsumer: frame was not peeked at the current head"
        );
        self.head = frame.next_head;
    }

    /// Publishes our head (Release store): the producer may reuse everything before it.
    #[inline]
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

    /// Whether nothing is published at our head (the header word there is empty), from a fresh
    /// load: a hint, for deciding to sleep.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.load_header(self.head) == EMPTY_HEADER
    }
}

/// A wrap marker whose frame at position 0 is not published: an honest producer stores the
/// marker only after that frame.
#[cold]
fn marker_before_nothing() -> RingError {
    RingError::BadFrame {
        position: 0,
        length: 0,
        why: "a wrap marker leads to position 0, where no frame is published",
    }
}
