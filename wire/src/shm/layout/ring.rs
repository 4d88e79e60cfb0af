//! Byte rings of frames, one cache line per message: the consumer waits on the frame
//! header at its own head, never on a counter the producer keeps elsewhere.
//!
//! A frame is an 8-byte header (u32 payload length, u32 flags = [`FRAME_FLAGS`]) and
//! the payload, padded to a multiple of 64 ([`FRAME_ALIGN`]: a frame is whole cache lines,
//! and starts on one). A header word of zero ([`EMPTY_HEADER`]) means
//! "nothing published here yet". A frame never wraps: when the contiguous space before
//! the end is too small, the producer writes a header whose length is [`WRAP_MARKER`]
//! and goes on at position 0. Head (consumer) and tail (producer) are free-running u64
//! byte counters; a position is `counter & (size - 1)`. Only the head is shared: the
//! tail is the producer's own.
//!
//! The producer writes the payload, then an empty header right after the frame (the
//! terminator, where the next frame will go), then the frame's header with a Release
//! store: the header is the publication. A wrap marker is stored (Release) after the
//! frame at position 0 is complete. The consumer loads the header at its head with
//! Acquire: empty means nothing yet; a frame's header means the payload and the
//! terminator after it are visible. It publishes its head (Release) once it has copied
//! frames out; the producer reads it only when its cached copy shows no room, and keeps
//! one header's worth of room free so the terminator never lands on an unconsumed frame.

use std::fmt;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Frames start at multiples of this (a cache line); head and tail are always multiples
/// of it. A frame of up to 56 payload bytes is one line, and the consumer, waiting on the
/// header at its head, waits on the line the producer writes next.
pub const FRAME_ALIGN: usize = 64;
/// Header length meaning "the rest of the ring is padding; continue at 0".
pub const WRAP_MARKER: u32 = 0xFFFF_FFFF;
/// The only valid flags value of a published frame (or wrap marker): non-zero, so that
/// no published header is the empty header.
pub const FRAME_FLAGS: u32 = 1;
/// The header word of a position where nothing is published yet (a fresh ring is all
/// empty headers; the producer writes one after every frame).
pub const EMPTY_HEADER: u64 = 0;
/// Smallest ring.
pub const MIN_RING_BYTES: u32 = 4096;
/// Largest ring.
pub const MAX_RING_BYTES: u32 = 1 << 30;
/// Largest frame payload of the largest ring.
pub const MAX_FRAME_PAYLOAD: u32 = max_frame_payload(MAX_RING_BYTES);

/// Largest frame payload in a ring of `ring_bytes`: half the ring less a header. A frame
/// then takes at most half the ring, so that it and the terminator after it always fit
/// in an empty ring, even after a wrap marker (which, like the head, is at a multiple of
/// [`FRAME_ALIGN`], so at least a line from the frame's end).
pub const fn max_frame_payload(ring_bytes: u32) -> u32 {
    (ring_bytes / 2).saturating_sub(FRAME_HEADER_BYTES as u32)
}

/// Ring bytes a frame of `payload_len` takes: header plus payload, padded to a multiple of
/// [`FRAME_ALIGN`].
pub const fn frame_space(payload_len: usize) -> usize {
    // Saturates at the largest multiple of FRAME_ALIGN (never a real frame).
    payload_len
        .saturating_add(FRAME_HEADER_BYTES)
        .saturating_add(FRAME_ALIGN - 1)
        & !(FRAME_ALIGN - 1)
}

/// The smallest valid ring whose largest frame payload is at least `payload_len`.
pub const fn ring_bytes_for_payload(payload_len: usize) -> Option<u32> {
    let needed = frame_space(payload_len).saturating_mul(2);
    if needed > MAX_RING_BYTES as usize {
        return None;
    }
    let bytes = needed.next_power_of_two();
    Some(if bytes < MIN_RING_BYTES as usize {
        MIN_RING_BYTES
    } else {
        bytes as u32
    })
}

/// The header word of a frame of `payload_len` (or of a wrap marker), as the producer
/// stores it atomically: the length in the low half, the flags in the high half (so
/// its little-endian bytes are the length, then the flags).
pub const fn header_word(payload_len: u32) -> u64 {
    (payload_len as u64) | ((FRAME_FLAGS as u64) << 32)
}

/// The 8 header bytes of a frame of `payload_len` (or of a wrap marker).
pub const fn frame_header(payload_len: u32) -> [u8; FRAME_HEADER_BYTES] {
    header_word(payload_len).to_le_bytes()
}

/// Largest counter value either end accepts: far beyond any ring's traffic (2^63
/// bytes), and far enough from `u64::MAX` that no sum the ends compute
/// (`tail + frame`, `head + skipped + frame`) can overflow.
pub const COUNTER_MAX: u64 = 1 << 63;
/// Why a ring is inconsistent (or a frame cannot be written). The one error of the
/// ring protocol, for the pure checks here and the ring that moves the bytes
/// (`veddb_shm::ByteRing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The ring size is not a power of two in
    /// [`MIN_RING_BYTES`]..=[`MAX_RING_BYTES`].
    BadSize { size: u64 },
    /// The ring's counters or data do not fit where the ring is placed (a local
    /// mistake, not a peer's).
    BadPlacement { why: &'static str },
    /// A head or tail that is not a multiple of [`FRAME_ALIGN`].
    Misaligned { index: &'static str, value: u64 },
    /// The head is past the tail.
    HeadPastTail { head: u64, tail: u64 },
    /// More bytes in use than the ring holds.
    Overfull { used: u64, size: u64 },
    /// A counter over [`COUNTER_MAX`].
    CounterTooLarge { index: &'static str, value: u64 },
    /// The peer's counter moved backwards.
    WentBack {
        index: &'static str,
        previous: u64,
        now: u64,
    },
    /// A frame header whose flags are not [`FRAME_FLAGS`] (and which is not empty).
    BadFlags { position: u64, flags: u32 },
    /// A frame that runs past the end of the ring, or a wrap marker at position 0 or
    /// with half the ring or more left to the end.
    BadFrame {
        position: u64,
        length: u32,
        why: &'static str,
    },
    /// A frame payload longer than [`max_frame_payload`].
    FrameTooLarge { length: u64, max: u32 },
}

impl RingError {
    /// The disconnect [`reason`](super::reason) code of this error.
    pub fn reason(&self) -> u32 {
        match self {
            RingError::BadSize { .. }
            | RingError::BadPlacement { .. }
            | RingError::Misaligned { .. }
            | RingError::HeadPastTail { .. }
            | RingError::Overfull { .. }
            | RingError::CounterTooLarge { .. }
            | RingError::WentBack { .. } => super::reason::BAD_INDICES,
            RingError::BadFlags { .. } | RingError::BadFrame { .. } => super::reason::BAD_FRAME,
            RingError::FrameTooLarge { .. } => super::reason::FRAME_TOO_LARGE,
        }
    }
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::BadSize { size } => write!(
                f,
                "ring of {size} bytes: sizes are powers of two from {MIN_RING_BYTES} to {MAX_RING_BYTES}"
            ),
            RingError::BadPlacement { why } => write!(f, "bad ring placement: {why}"),
            RingError::Misaligned { index, value } => write!(
                f,
                "ring {index} {value} is not a multiple of {FRAME_ALIGN}"
            ),
            RingError::CounterTooLarge { index, value } => write!(
                f,
                "ring {index} {value} is over the largest counter ({COUNTER_MAX})"
            ),
            RingError::WentBack {
                index,
                previous,
                now,
            } => write!(f, "ring {index} went back from {previous} to {now}"),
            RingError::HeadPastTail { head, tail } => {
                write!(f, "ring head {head} is past the tail {tail}")
            }
            RingError::Overfull { used, size } => write!(
                f,
                "ring holds {used} bytes between head and tail, more than its {size} bytes"
            ),
            RingError::BadFlags { position, flags } => write!(
                f,
                "frame at ring position {position} has flags {flags:#x}, not {FRAME_FLAGS}"
            ),
            RingError::BadFrame {
                position,
                length,
                why,
            } => write!(
                f,
                "frame at ring position {position} (length word {length:#x}): {why}"
            ),
            RingError::FrameTooLarge { length, max } => write!(
                f,
                "frame payload of {length} bytes is over this ring's maximum of {max}"
            ),
        }
    }
}

impl std::error::Error for RingError {}

/// Checks a ring size: a power of two from [`MIN_RING_BYTES`] to [`MAX_RING_BYTES`].
#[inline]
pub fn check_ring_bytes(size: u32) -> Result<(), RingError> {
    if size.is_power_of_two() && (MIN_RING_BYTES..=MAX_RING_BYTES).contains(&size) {
        Ok(())
    } else {
        Err(RingError::BadSize { size: size.into() })
    }
}

/// Checks a (head, tail) pair read from shared memory, either of which the other side
/// may have written: the size is valid, both are multiples of [`FRAME_ALIGN`], the
/// head is not past the tail, and at most `size` bytes lie between them.
#[inline]
pub fn validate_indices(head: u64, tail: u64, size: u32) -> Result<(), RingError> {
    check_ring_bytes(size)?;
    let align = FRAME_ALIGN as u64;
    if !head.is_multiple_of(align) {
        return Err(RingError::Misaligned {
            index: "head",
            value: head,
        });
    }
    if !tail.is_multiple_of(align) {
        return Err(RingError::Misaligned {
            index: "tail",
            value: tail,
        });
    }
    if head > tail {
        return Err(RingError::HeadPastTail { head, tail });
    }
    if tail > COUNTER_MAX {
        return Err(RingError::CounterTooLarge {
            index: "tail",
            value: tail,
        });
    }
    let used = tail - head;
    if used > u64::from(size) {
        return Err(RingError::Overfull {
            used,
            size: size.into(),
        });
    }
    Ok(())
}

/// Checks that a peer's counter (`index`: "head" or "tail"), loaded again from shared
/// memory, has not moved back from the value last accepted.
#[inline]
pub fn check_advance(index: &'static str, previous: u64, now: u64) -> Result<(), RingError> {
    if now < previous {
        return Err(RingError::WentBack {
            index,
            previous,
            now,
        });
    }
    Ok(())
}

/// What the consumer finds at its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameStep {
    /// An empty header: nothing is published here yet.
    Empty,
    /// A wrap marker: set the head to `next_head` (the start of the ring) and look again.
    Wrap { next_head: u64 },
    /// A frame whose payload is `payload_len` bytes at ring position `payload_pos`;
    /// after copying it out, set the head to `next_head`.
    Frame {
        payload_pos: usize,
        payload_len: usize,
        next_head: u64,
    },
}

/// Checks the header word the consumer loaded at position `head & (size - 1)`. The
/// head (the consumer's own) must be a multiple of [`FRAME_ALIGN`] and at most [`COUNTER_MAX`]; the header
/// must be empty, or carry [`FRAME_FLAGS`] and either a wrap marker that is not at
/// position 0 and leaves less than half the ring to the end, or a frame no larger than
/// [`max_frame_payload`] that does not run past the end of the ring.
/// [`RingError::reason`] gives the disconnect code.
#[inline]
pub fn check_frame(head: u64, size: u32, header: u64) -> Result<FrameStep, RingError> {
    check_ring_bytes(size)?;
    if !head.is_multiple_of(FRAME_ALIGN as u64) {
        return Err(RingError::Misaligned {
            index: "head",
            value: head,
        });
    }
    if head > COUNTER_MAX {
        return Err(RingError::CounterTooLarge {
            index: "head",
            value: head,
        });
    }
    if header == EMPTY_HEADER {
        return Ok(FrameStep::Empty);
    }
    let position = head & (u64::from(size) - 1);
    let length = header as u32;
    let flags = (header >> 32) as u32;
    let bad = |why| RingError::BadFrame {
        position,
        length,
        why,
    };
    if flags != FRAME_FLAGS {
        return Err(RingError::BadFlags { position, flags });
    }
    let contiguous = u64::from(size) - position;
    if length == WRAP_MARKER {
        // A producer wraps only when a frame (less than half the ring) does not fit in
        // the contiguous rest: never at position 0, never with half the ring or more
        // left to the end.
        if position == 0 {
            return Err(bad("wrap marker at position 0"));
        }
        if contiguous >= u64::from(size) / 2 {
            return Err(bad(
                "wrap marker with half the ring or more left to the end",
            ));
        }
        return Ok(FrameStep::Wrap {
            next_head: head + contiguous,
        });
    }
    let max = max_frame_payload(size);
    if length > max {
        return Err(RingError::FrameTooLarge {
            length: length.into(),
            max,
        });
    }
    let space = frame_space(length as usize) as u64;
    if space > contiguous {
        return Err(bad("frame runs past the end of the ring"));
    }
    Ok(FrameStep::Frame {
        payload_pos: position as usize + FRAME_HEADER_BYTES,
        payload_len: length as usize,
        next_head: head + space,
    })
}

/// Where the producer writes a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritePlan {
    /// Store a [`WRAP_MARKER`] header here last (the contiguous space was too small).
    pub wrap_at: Option<usize>,
    /// Write the frame header here; the payload follows it.
    pub frame_pos: usize,
    /// Write an empty header here (right after the frame) before publishing.
    pub terminator_pos: usize,
    /// The producer's tail once the frame is published.
    pub new_tail: u64,
}

/// Plans a frame of `payload_len` for a producer whose tail is `tail`, with the
/// consumer's head `head` (read from shared memory, so validated here). The frame, a
/// skipped wrap span and the terminator after the frame must all fit in the free
/// space. `Ok(None)`: not enough free space now, retry once the consumer moves. Errors:
/// bad indices, or a payload over [`max_frame_payload`] (that can never be written).
#[inline]
pub fn plan_write(
    head: u64,
    tail: u64,
    size: u32,
    payload_len: usize,
) -> Result<Option<WritePlan>, RingError> {
    validate_indices(head, tail, size)?;
    plan_write_valid(head, tail, size, payload_len)
}

/// [`plan_write`] for indices that are known valid: the producer's own tail, and a head it
/// validated against that tail when it loaded it (the tail has only moved within the room
/// that head left since). The ring's hot path; everything else is as in [`plan_write`].
#[inline]
pub fn plan_write_valid(
    head: u64,
    tail: u64,
    size: u32,
    payload_len: usize,
) -> Result<Option<WritePlan>, RingError> {
    debug_assert!(validate_indices(head, tail, size).is_ok());
    let max = max_frame_payload(size);
    if payload_len > max as usize {
        return Err(RingError::FrameTooLarge {
            length: payload_len as u64,
            max,
        });
    }
    let space = frame_space(payload_len) as u64;
    let free = u64::from(size) - (tail - head);
    let mask = u64::from(size) - 1;
    let position = tail & mask;
    let contiguous = u64::from(size) - position;
    let (wrap_at, frame_pos, needed) = if space <= contiguous {
        (None, position, space)
    } else {
        (Some(position as usize), 0, contiguous + space)
    };
    if needed + FRAME_HEADER_BYTES as u64 > free {
        return Ok(None);
    }
    let new_tail = tail + needed;
    if new_tail > COUNTER_MAX {
        // Only reachable when the consumer set its head near the limit before the producer
        // attached (the producer starts from that head): the ring is spent, never wrapped.
        return Err(RingError::CounterTooLarge {
            index: "tail",
            value: new_tail,
        });
    }
    Ok(Some(WritePlan {
        wrap_at,
        frame_pos: frame_pos as usize,
        terminator_pos: (new_tail & mask) as usize,
        new_tail,
    }))
}
