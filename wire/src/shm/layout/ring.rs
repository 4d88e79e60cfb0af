//! Byte rings of frames. A frame is an 8-byte header (u32 payload length, u32 flags =
//! 0) and the payload, padded to a multiple of 8. A frame never wraps: when the
//! contiguous space before the end is too small, the producer writes a header whose
//! length is [`WRAP_MARKER`] and goes on at position 0. Head and tail are free-running
//! u64 byte counters; a position is `counter & (size - 1)`.
//!
//! The producer publishes the tail after the frame bytes (release); the consumer
//! publishes the head after it has copied the frame out (release).

use std::fmt;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Frames start at multiples of this; head and tail are always multiples of it.
pub const FRAME_ALIGN: usize = 8;
/// Header length meaning "the rest of the ring is padding; continue at 0".
pub const WRAP_MARKER: u32 = 0xFFFF_FFFF;
/// The only valid flags value.
pub const FRAME_FLAGS: u32 = 0;
/// Smallest ring.
pub const MIN_RING_BYTES: u32 = 4096;
/// Largest ring.
pub const MAX_RING_BYTES: u32 = 1 << 30;
/// Largest frame payload of the largest ring.
pub const MAX_FRAME_PAYLOAD: u32 = max_frame_payload(MAX_RING_BYTES);

/// Largest frame payload in a ring of `ring_bytes`: half the ring less a header, so
/// that a frame always fits after a wrap marker.
pub const fn max_frame_payload(ring_bytes: u32) -> u32 {
    (ring_bytes / 2).saturating_sub(FRAME_HEADER_BYTES as u32)
}

/// Ring bytes a frame of `payload_len` takes: header plus payload padded to 8.
pub const fn frame_space(payload_len: usize) -> usize {
    // Saturates at the largest multiple of 8 (never a real frame).
    ((payload_len.saturating_add(FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1))
        .saturating_add(FRAME_HEADER_BYTES))
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

/// The 8 header bytes of a frame of `payload_len` (or of a wrap marker).
pub const fn frame_header(payload_len: u32) -> [u8; FRAME_HEADER_BYTES] {
    let l = payload_len.to_le_bytes();
    let f = FRAME_FLAGS.to_le_bytes();
    [l[0], l[1], l[2], l[3], f[0], f[1], f[2], f[3]]
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
    /// A frame header with non-zero flags.
    BadFlags { position: u64, flags: u32 },
    /// A frame or wrap marker that runs past the tail or the end of the ring, or a
    /// wrap marker at position 0.
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
                "frame at ring position {position} has flags {flags:#x}, not 0"
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

/// Checks the frame header the consumer read at position `head & (size - 1)`, with
/// `head != tail` (at least one header is published). Everything is re-checked: the
/// indices, the flags, that a frame is not larger than [`max_frame_payload`], does not
/// run past the end of the ring nor past the tail, and that a wrap marker is not at
/// position 0, leaves less than half the ring to the end and does not run past the
/// tail. [`RingError::reason`] gives the
/// disconnect code.
#[inline]
pub fn check_frame(
    head: u64,
    tail: u64,
    size: u32,
    header: [u8; FRAME_HEADER_BYTES],
) -> Result<FrameStep, RingError> {
    validate_indices(head, tail, size)?;
    let available = tail - head;
    let position = head & (u64::from(size) - 1);
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let flags = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let bad = |why| RingError::BadFrame {
        position,
        length,
        why,
    };
    if available < FRAME_HEADER_BYTES as u64 {
        return Err(bad("the ring is empty (head == tail)"));
    }
    if flags != FRAME_FLAGS {
        return Err(RingError::BadFlags { position, flags });
    }
    let contiguous = u64::from(size) - position;
    if length == WRAP_MARKER {
        // A producer wraps only when a frame (at most half the ring) does not fit in
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
        if contiguous > available {
            return Err(bad("wrap marker runs past the tail"));
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
    if space > available {
        return Err(bad("frame runs past the tail"));
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
    /// Write a [`WRAP_MARKER`] header here first (the contiguous space was too small).
    pub wrap_at: Option<usize>,
    /// Write the frame header here; the payload follows it.
    pub frame_pos: usize,
    /// Publish this tail once the bytes are written.
    pub new_tail: u64,
}

/// Plans a frame of `payload_len` for a producer whose tail is `tail`, with the
/// consumer's head `head` (read from shared memory, so validated here). `Ok(None)`:
/// not enough free space now, retry once the consumer moves. Errors: bad indices, or
/// a payload over [`max_frame_payload`] (that can never be written).
#[inline]
pub fn plan_write(
    head: u64,
    tail: u64,
    size: u32,
    payload_len: usize,
) -> Result<Option<WritePlan>, RingError> {
    validate_indices(head, tail, size)?;
    let max = max_frame_payload(size);
    if payload_len > max as usize {
        return Err(RingError::FrameTooLarge {
            length: payload_len as u64,
            max,
        });
    }
    let space = frame_space(payload_len) as u64;
    let free = u64::from(size) - (tail - head);
    let position = tail & (u64::from(size) - 1);
    let contiguous = u64::from(size) - position;
    let (wrap_at, frame_pos, needed) = if space <= contiguous {
        (None, position, space)
    } else {
        (Some(position as usize), 0, contiguous + space)
    };
    if needed > free {
        return Ok(None);
    }
    Ok(Some(WritePlan {
        wrap_at,
        frame_pos: frame_pos as usize,
        new_tail: tail + needed,
    }))
}
