//! Safe wrappers for the two places the shared-memory path lends out bytes: the server's data
//! segment (a sealed memfd with a header page and a value arena) and a client's view of one
//! value in it.

use std::io;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use veddb_wire::shm::layout::arena as arena_layout;

use crate::{Arena, ArenaLayout, Segment, BLOCK_HEADER_BYTES};

/// Creates one core's data segment: a fresh memfd of `header_bytes + arena_bytes` bytes,
/// `write_header` called on it, then sealed so that every other mapping of it is read-only
/// (Linux; elsewhere an unsealed file-backed mapping), and an arena over everything after the
/// header. The caller must not write the arena region itself (only the arena does); header
/// words outside it (the epoch, flags) are the caller's.
pub fn create_data_segment(
    name: &str,
    header_bytes: usize,
    arena_bytes: usize,
    epoch_offset: usize,
    max_block: usize,
    write_header: impl FnOnce(&Segment),
) -> io::Result<(Arc<Segment>, Arena)> {
    let size = header_bytes
        .checked_add(arena_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "segment size overflows"))?;
    let segment = Segment::create(name, size)?;
    write_header(&segment);
    #[cfg(target_os = "linux")]
    segment.seal_read_only_for_others()?;
    let segment = Arc::new(segment);
    let layout = ArenaLayout {
        offset: header_bytes,
        len: arena_bytes,
        epoch_offset,
        max_block,
    };
    // SAFETY: the segment was created just above and is fresh (all zero); nothing but this
    // arena writes its region in this process (documented contract of this function), and it
    // was sealed against writable mappings before anyone else could map it.
    let arena = unsafe { Arena::new(segment.clone(), layout) };
    Ok((segment, arena))
}

/// A value in another process's data segment, read in place: the bytes are never copied.
///
/// The server keeps a block unchanged while the client's epoch pin covers it; past its lease it
/// may reuse the block, which bumps the block's generation: [`SharedView::is_current`] then
/// says false, and the bytes must be treated as garbage (they are always inside the mapping,
/// so reading them is never out of bounds).
#[derive(Clone, Debug)]
pub struct SharedView {
    segment: Arc<Segment>,
    offset: usize,
    len: usize,
    generation: u64,
}

impl SharedView {
    /// The view of `len` bytes at `value_offset` of `segment` whose block had `generation`.
    /// `None` when that is outside the mapping, or the block header disagrees (already reused,
    /// or not a block at all).
    pub fn new(
        segment: Arc<Segment>,
        value_offset: u64,
        len: u32,
        generation: u64,
    ) -> Option<SharedView> {
        let offset = usize::try_from(value_offset).ok()?;
        let len = len as usize;
        let header = offset.checked_sub(BLOCK_HEADER_BYTES)?;
        if header % 8 != 0 || offset.checked_add(len)? > segment.len() {
            return None;
        }
        let view = SharedView {
            segment,
            offset,
            len,
            generation,
        };
        let stored_len = view
            .segment
            .load_u32(header + arena_layout::VALUE_LEN_OFFSET, Ordering::Acquire)
            as usize;
        (stored_len == len && view.is_current()).then_some(view)
    }

    /// The bytes, in the shared mapping.
    pub fn bytes(&self) -> &[u8] {
        if self.segment.is_writable() {
            // Only read-only mappings lend slices; a writable one (a test mapping the server's
            // own segment) gets an empty view rather than an aliasing reference.
            return &[];
        }
        // SAFETY: bounds were checked in `new` (the segment never shrinks: it is sealed and
        // mapped for the view's lifetime through the Arc); the mapping is read-only in this
        // process; the writer keeps the block unchanged while the reader's epoch pin covers it
        // (the lease), and after that the bytes may change but stay in bounds, which
        // `is_current` reports.
        unsafe { self.segment.slice(self.offset, self.len) }
    }

    /// Whether the block still holds the value it held when the view was made (its generation
    /// is unchanged). Check it after reading when a view is held longer than the server's lease:
    /// true means that what was read before this call was the value.
    pub fn is_current(&self) -> bool {
        // The reads of the bytes before this call happen before the generation load (the
        // read side of a seqlock; the arena bumps the generation, fences, then rewrites).
        fence(Ordering::Acquire);
        self.segment.load_u64(
            self.offset - BLOCK_HEADER_BYTES + arena_layout::GENERATION_OFFSET,
            Ordering::Acquire,
        ) == self.generation
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value's offset in the data segment.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the bytes are (to show that nothing was copied).
    pub fn as_ptr(&self) -> *const u8 {
        self.segment.as_ptr().wrapping_add(self.offset)
    }
}
