//! [`ByteRing`]: a single-producer single-consumer ring of variable-length frames in a
//! [`Segment`], safe against a hostile peer.
//!
//! # Format (shared with the codec in `wire/src/shm.rs`)
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
//!   ring always takes it.
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

use crate::Segment;

/// Bytes of a frame header (u32 length + u32 flags).
pub const FRAME_HEADER_BYTES: usize = 8;
/// The length value of a wrap marker.
pub const WRAP_MARKER: u32 = u32::MAX;
/// The only valid flags word of a frame header (and of a wrap marker).
pub const FRAME_FLAGS: u32 = 0;

const ALIGN: u64 = 8;

/// A peer broke the ring protocol, or the ring's layout or a request to it is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The layout does not fit the segment or breaks a rule (see [`ByteRing::check`]).
    BadLayout(&'static str),
    /// The producer was asked for a payload larger than [`ByteRing::max_payload`].
    PayloadTooLarge { len: usize, max: usize },
    /// The peer's counter is not a multiple of 8.
    Misaligned { counter: u64 },
    /// The peer's counter moved backwards.
    WentBack { previous: u64, now: u64 },
    /// The counters are inconsistent: tail behind head, or more than `size` bytes ahead of it.
    OutOfRange { head: u64, tail: u64 },
    /// A frame header announces a payload larger than the ring's largest.
    FrameTooLarge { len: u32 },
    /// A frame extends past the published tail, or past the end of the data area.
    FrameOverrun { frame_end: u64, limit: u64 },
    /// A wrap marker where the producer could not have written one (at position 0, with at
    /// least `size / 2` bytes left to the end, or running past the tail).
    BadWrapMarker { position: u64 },
    /// A frame header whose flags word is not [`FRAME_FLAGS`].
    BadFlags { position: u64, flags: u32 },
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::BadLayout(why) => write!(f, "bad ring layout: {why}"),
            RingError::PayloadTooLarge { len, max } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the ring's largest ({max})"
                )
            }
            RingError::Misaligned { counter } => write!(f, "ring counter {counter} not 8-aligned"),
            RingError::WentBack { previous, now } => {
                write!(f, "ring counter went back from {previous} to {now}")
            }
            RingError::OutOfRange { head, tail } => {
                write!(f, "ring counters inconsistent: head {head}, tail {tail}")
            }
            RingError::FrameTooLarge { len } => write!(f, "frame length {len} too large"),
            RingError::FrameOverrun { frame_end, limit } => {
                write!(f, "frame ends at {frame_end}, beyond {limit}")
            }
            RingError::BadWrapMarker { position } => {
                write!(f, "impossible wrap marker at ring position {position}")
            }
            RingError::BadFlags { position, flags } => {
                write!(
                    f,
                    "frame at ring position {position} has flags {flags:#x}, not 0"
                )
            }
        }
    }
}

impl std::error::Error for RingError {}

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
    /// Bytes of the data area: a power of two, at least 32.
    pub size: usize,
}

/// Bytes a frame with a payload of `len` bytes occupies: header plus payload padded to 8.
pub(crate) const fn frame_bytes(len: usize) -> usize {
    FRAME_HEADER_BYTES + ((len + 7) & !7)
}

impl ByteRing {
    /// The largest payload: `size / 2 - 8`.
    pub const fn max_payload(&self) -> usize {
        self.size / 2 - FRAME_HEADER_BYTES
    }

    /// Bytes a frame with a payload of `len` bytes occupies (header plus padding to 8).
    pub const fn frame_bytes(len: usize) -> usize {
        frame_bytes(len)
    }

    /// Checks the layout against a segment of `segment_len` bytes: size a power of two ≥ 32,
    /// offsets 8-aligned, everything in bounds, counters outside the data area and apart.
    pub fn check(&self, segment_len: usize) -> Result<(), RingError> {
        let in_bounds =
            |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= segment_len);
        let overlaps = |a: usize, alen: usize, b: usize, blen: usize| a < b + blen && b < a + alen;
        if !self.size.is_power_of_two() || self.size < 32 {
            return Err(RingError::BadLayout(
                "size must be a power of two of at least 32",
            ));
        }
        if self.size as u64 > u64::from(u32::MAX) + 1 {
            return Err(RingError::BadLayout("size must be at most 4 GiB"));
        }
        if !self.head_offset.is_multiple_of(8)
            || !self.tail_offset.is_multiple_of(8)
            || !self.data_offset.is_multiple_of(8)
        {
            return Err(RingError::BadLayout("offsets must be 8-aligned"));
        }
        if !in_bounds(self.head_offset, 8)
            || !in_bounds(self.tail_offset, 8)
            || !in_bounds(self.data_offset, self.size)
        {
            return Err(RingError::BadLayout("ring outside the segment"));
        }
        if self.head_offset == self.tail_offset
            || overlaps(self.head_offset, 8, self.data_offset, self.size)
            || overlaps(self.tail_offset, 8, self.data_offset, self.size)
        {
            return Err(RingError::BadLayout(
                "counters overlap each other or the data",
            ));
        }
        Ok(())
    }

    fn attach(&self, seg: &Segment) -> Result<(), RingError> {
        self.check(seg.len())?;
        if !seg.is_writable() {
            return Err(RingError::BadLayout(
                "both ends of a ring need a writable mapping",
            ));
        }
        Ok(())
    }

    /// The producing end. Reads both counters once to start from the ring's current state
    /// (zero for a fresh ring), and validates them.
    pub fn producer(&self, seg: Arc<Segment>) -> Result<RingProducer, RingError> {
        self.attach(&seg)?;
        let tail = seg.atomic_u64(self.tail_offset).load(Ordering::Acquire);
        let head = seg.atomic_u64(self.head_offset).load(Ordering::Acquire);
        validate_span(head, tail, self.size as u64)?;
        Ok(RingProducer {
            seg,
            ring: *self,
            tail,
            head_cache: head,
        })
    }

    /// The consuming end. Reads its own counter once to start from (zero for a fresh ring).
    pub fn consumer(&self, seg: Arc<Segment>) -> Result<RingConsumer, RingError> {
        self.attach(&seg)?;
        let head = seg.atomic_u64(self.head_offset).load(Ordering::Acquire);
        // The tail is validated against this head at every refresh; the head itself only
        // needs to be aligned and far from overflowing.
        validate_span(head, head, self.size as u64)?;
        Ok(RingConsumer {
            seg,
            ring: *self,
            head,
            tail_cache: head,
        })
    }
}

/// Largest counter value either end accepts from shared memory when it attaches: far beyond
/// any real ring's traffic (2^63 bytes), and far enough from `u64::MAX` that the sums the
/// ends compute (`tail + frame`, `head + skipped + frame`) cannot overflow.
pub const COUNTER_MAX: u64 = 1 << 63;

/// Checks the counters an end finds in shared memory when it attaches (the peer may have
/// written both): 8-aligned, the head not past the tail, at most `size` bytes apart, and at
/// most [`COUNTER_MAX`]. Plain (not wrapping) arithmetic: a head near `u64::MAX` with a tail
/// near 0 is not "8 bytes in use".
fn validate_span(head: u64, tail: u64, size: u64) -> Result<(), RingError> {
    if !head.is_multiple_of(ALIGN) {
        return Err(RingError::Misaligned { counter: head });
    }
    if !tail.is_multiple_of(ALIGN) {
        return Err(RingError::Misaligned { counter: tail });
    }
    if tail < head || tail - head > size || tail > COUNTER_MAX {
        return Err(RingError::OutOfRange { head, tail });
    }
    Ok(())
}

/// The producing end of a [`ByteRing`].
#[derive(Debug)]
pub struct RingProducer {
    seg: Arc<Segment>,
    ring: ByteRing,
    /// Our tail: private, authoritative (the shared copy is only ever written).
    tail: u64,
    /// The consumer's head as last loaded and validated.
    head_cache: u64,
}

impl RingProducer {
    /// The ring's layout.
    pub fn ring(&self) -> &ByteRing {
        &self.ring
    }

    /// Our tail counter (bytes ever published).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Loads the consumer's head once, validates it against what we know, caches it.
    fn refresh_head(&mut self) -> Result<u64, RingError> {
        let head = self
            .seg
            .atomic_u64(self.ring.head_offset)
            .load(Ordering::Acquire);
        if !head.is_multiple_of(ALIGN) {
            return Err(RingError::Misaligned { counter: head });
        }
        if head < self.head_cache {
            return Err(RingError::WentBack {
                previous: self.head_cache,
                now: head,
            });
        }
        if head > self.tail {
            return Err(RingError::OutOfRange {
                head,
                tail: self.tail,
            });
        }
        self.head_cache = head;
        Ok(head)
    }

    /// Reserves a frame for a payload of `len` bytes: `Ok(None)` when the ring has no room now
    /// (the consumer's head is only re-read then), an error when `len` is over
    /// [`ByteRing::max_payload`] or the consumer's head is inconsistent (disconnect it). Write the
    /// payload with [`FrameWriter::write_at`], then [`FrameWriter::commit`]; dropping the writer
    /// abandons the frame.
    pub fn try_reserve(&mut self, len: usize) -> Result<Option<FrameWriter<'_>>, RingError> {
        let max = self.ring.max_payload();
        if len > max {
            return Err(RingError::PayloadTooLarge { len, max });
        }
        let size = self.ring.size as u64;
        let frame = frame_bytes(len) as u64;
        let pos = self.tail & (size - 1);
        let contig = size - pos;
        let wrap = frame > contig;
        let need = if wrap { contig + frame } else { frame };
        // tail - head_cache <= size always holds (validated), so this cannot underflow.
        if size - (self.tail - self.head_cache) < need {
            self.refresh_head()?;
            if size - (self.tail - self.head_cache) < need {
                return Ok(None);
            }
        }
        let start = if wrap {
            // The bytes [pos, size) are free (counted in `need`); the marker takes them.
            self.write_header(pos, WRAP_MARKER, FRAME_FLAGS);
            0
        } else {
            pos
        };
        let new_tail = self.tail + need;
        Ok(Some(FrameWriter {
            producer: self,
            start: start as usize,
            len,
            new_tail,
        }))
    }

    fn write_header(&self, pos: u64, len: u32, flags: u32) {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&flags.to_le_bytes());
        self.seg
            .write_bytes(self.ring.data_offset + pos as usize, &header);
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
            .atomic_u64(self.ring.head_offset)
            .load(Ordering::Acquire);
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
pub struct FrameWriter<'a> {
    producer: &'a mut RingProducer,
    /// Position of the frame header in the data area.
    start: usize,
    len: usize,
    new_tail: u64,
}

impl FrameWriter<'_> {
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
        p.write_header(self.start as u64, self.len as u32, FRAME_FLAGS);
        p.tail = self.new_tail;
        p.seg
            .atomic_u64(p.ring.tail_offset)
            .store(p.tail, Ordering::Release);
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
    flags: u32,
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
        self.flags
    }

    /// Bytes the frame frees when consumed (its padded size plus a skipped wrap marker's span).
    pub fn consumed_bytes(&self) -> u64 {
        self.next_head - self.head
    }
}

/// The consuming end of a [`ByteRing`].
#[derive(Debug)]
pub struct RingConsumer {
    seg: Arc<Segment>,
    ring: ByteRing,
    /// Our head: private, authoritative (the shared copy is only ever written).
    head: u64,
    /// The producer's tail as last loaded and validated; `head <= tail_cache <= head + size`.
    tail_cache: u64,
}

impl RingConsumer {
    /// The ring's layout.
    pub fn ring(&self) -> &ByteRing {
        &self.ring
    }

    /// Our head counter (bytes ever consumed).
    pub fn head(&self) -> u64 {
        self.head
    }

    fn read_header(&self, pos: u64) -> (u32, u32) {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.seg
            .read_bytes(self.ring.data_offset + pos as usize, &mut header);
        (
            u32::from_le_bytes([header[0], header[1], header[2], header[3]]),
            u32::from_le_bytes([header[4], header[5], header[6], header[7]]),
        )
    }

    /// Loads the producer's tail once (Acquire) and validates it.
    fn refresh_tail(&mut self) -> Result<(), RingError> {
        let tail = self
            .seg
            .atomic_u64(self.ring.tail_offset)
            .load(Ordering::Acquire);
        if !tail.is_multiple_of(ALIGN) {
            return Err(RingError::Misaligned { counter: tail });
        }
        if tail < self.tail_cache {
            return Err(RingError::WentBack {
                previous: self.tail_cache,
                now: tail,
            });
        }
        if tail - self.head > self.ring.size as u64 {
            return Err(RingError::OutOfRange {
                head: self.head,
                tail,
            });
        }
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
        let size = self.ring.size as u64;
        // Both 8-aligned, tail > head: at least one header's worth is published.
        let mut avail = self.tail_cache - self.head;
        let mut pos = self.head & (size - 1);
        let mut contig = size - pos;
        let mut skipped = 0;
        let (mut len, mut flags) = self.read_header(pos);
        if flags != FRAME_FLAGS {
            return Err(RingError::BadFlags {
                position: pos,
                flags,
            });
        }
        if len == WRAP_MARKER {
            // The producer wraps only when a frame (at most size / 2 bytes) does not fit in the
            // contiguous rest: never at position 0, never with size / 2 or more left; and the
            // marker spans exactly the rest, which must be published.
            if contig >= size / 2 || contig > avail {
                return Err(RingError::BadWrapMarker { position: pos });
            }
            if contig == avail {
                // A marker published alone: step over it locally (the head is published with the
                // next frame); its frame comes with a later tail.
                self.head += contig;
                return Ok(None);
            }
            skipped = contig;
            avail -= contig;
            pos = 0;
            contig = size;
            (len, flags) = self.read_header(0);
            if flags != FRAME_FLAGS {
                return Err(RingError::BadFlags { position: 0, flags });
            }
            if len == WRAP_MARKER {
                return Err(RingError::BadWrapMarker { position: 0 });
            }
        }
        if len as usize > self.ring.max_payload() {
            return Err(RingError::FrameTooLarge { len });
        }
        let frame = frame_bytes(len as usize) as u64;
        if frame > avail {
            return Err(RingError::FrameOverrun {
                frame_end: self.head + skipped + frame,
                limit: self.tail_cache,
            });
        }
        if frame > contig {
            return Err(RingError::FrameOverrun {
                frame_end: pos + frame,
                limit: size,
            });
        }
        Ok(Some(FrameRef {
            head: self.head,
            payload_pos: (pos as usize) + FRAME_HEADER_BYTES,
            len,
            flags,
            next_head: self.head + skipped + frame,
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
            .atomic_u64(self.ring.head_offset)
            .store(self.head, Ordering::Release);
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
            .atomic_u64(self.ring.tail_offset)
            .load(Ordering::Acquire);
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
