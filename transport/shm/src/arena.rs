//! [`Arena`]: the value allocator of one core's data segment, with epoch-based reclamation across
//! processes.
//!
//! # Layout in the segment
//!
//! The arena owns the region `[offset, offset + len)` of a [`Segment`] (`offset` 8-aligned). It
//! hands out blocks whose sizes are powers of two from [`MIN_BLOCK_BYTES`] (32) up to
//! `max_block`, each aligned to its size relative to the region start (as `wire::shm::layout::arena`
//! specifies). Blocks are named by their offset in the segment, never by a pointer, so every
//! process can follow them. A block is:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | u64 generation, incremented every time the block is handed out (1 the first time) |
//! | 8..12 | u32 value length |
//! | 12..16 | u32 size class: log2 of the block size (5 for 32 bytes) |
//! | 16.. | the value |
//!
//! The header words are written with atomic stores (native endianness, which is little-endian on
//! every target this crate builds for), so a reader in any process may load them atomically at
//! any time.
//!
//! # Allocation
//!
//! Free blocks sit in per-class free lists kept in the core's private memory (`Vec<u64>` of
//! offsets, not in shared memory); fresh blocks are carved from a bump pointer. When aligning the
//! bump pointer up for a large class leaves a gap, the gap is cut into the largest aligned blocks
//! that fit and put on their free lists, so alignment wastes nothing. Blocks never split, merge or
//! change class, and are never unmapped: a block's generation therefore only grows, and a reader
//! that checks it is never fooled by a block reused for another class.
//!
//! Fragmentation: a value of `n` bytes uses the next power of two of `n + 16` (at most 2× plus the
//! header). Memory freed in one class is not available to others: a workload that shifts from
//! small to large values can run out of fresh space while small blocks sit free. The caller
//! accounts [`ArenaStats`] against its budget and falls back to the heap when `alloc` says no.
//!
//! # Reclamation across processes
//!
//! A value may be read by other processes straight from the segment, so a block cannot be reused as
//! soon as the core drops the value. The segment holds a global epoch (an `AtomicU64` at
//! `epoch_offset`, starting at 1; 0 means "not pinned"). A reader pins the epoch it read before it
//! sends a request (in its own ring header), and unpins (0) when done. [`Arena::retire`] records a
//! block with the current epoch `e`; [`Arena::reclaim`] with the minimum of the active pins frees
//! it once `e < min_pin` (every active reader pinned after the epoch moved past `e`, that is,
//! after the block became unreachable), or at once if no reader is pinned. The core calls
//! [`Arena::advance_epoch`] regularly (for instance whenever it has retired blocks). What floor to
//! pass is the caller's policy: the local frontend derives it from its sessions' oldest and newest
//! pins and the view lease (`docs/shm-layout.md`, "View leases and epoch pins").
//!
//! [`ArenaValue`] is the owner type for `bytes::Bytes::from_owner`: a `Bytes` whose bytes live in
//! the segment, whose last drop (on any thread) retires the block through a mutex-protected pending
//! queue that the core drains in `reclaim`.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::Segment;

use veddb_wire::shm::layout::arena as layout;

/// Bytes of a block header (u64 generation, u32 length, u32 class): the layout's
/// [`layout::BLOCK_HEADER_BYTES`].
pub const BLOCK_HEADER_BYTES: usize = layout::BLOCK_HEADER_BYTES;
/// The smallest block: the layout's [`layout::MIN_BLOCK_BYTES`], as a `usize`.
pub const MIN_BLOCK_BYTES: usize = layout::MIN_BLOCK_BYTES as usize;
const MIN_LOG2: u32 = layout::MIN_SIZE_CLASS;
/// Where the block header's fields are (the layout's offsets).
const GENERATION_OFFSET: usize = layout::GENERATION_OFFSET;
const VALUE_LEN_OFFSET: usize = layout::VALUE_LEN_OFFSET;
const SIZE_CLASS_OFFSET: usize = layout::SIZE_CLASS_OFFSET;

/// Where an arena lives in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaLayout {
    /// Start of the block region (8-aligned); blocks are aligned relative to it.
    pub offset: usize,
    /// Bytes of the block region.
    pub len: usize,
    /// Offset of the global epoch `AtomicU64` (8-aligned, outside the region).
    pub epoch_offset: usize,
    /// The largest block: a power of two from 32 to 2^33 (a block of 2^33 bytes holds a value of
    /// `u32::MAX` bytes).
    pub max_block: usize,
}

/// A block handed out by [`Arena::alloc`]. Not `Clone`: it is the right to retire the block,
/// exactly once.
#[derive(Debug, PartialEq, Eq)]
pub struct ArenaBlock {
    offset: u64,
    generation: u64,
    len: u32,
    class: u32,
}

impl ArenaBlock {
    /// Segment offset of the block (its header).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Segment offset of the value (after the 16-byte header).
    pub fn value_offset(&self) -> u64 {
        self.offset + BLOCK_HEADER_BYTES as u64
    }

    /// The generation the block was handed out with.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Value length.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size class: log2 of the block size.
    pub fn class(&self) -> u32 {
        self.class
    }

    /// Block size in bytes.
    pub fn block_bytes(&self) -> usize {
        1 << self.class
    }
}

/// What other threads need: the segment, where blocks may be, and the pending-retire queue.
#[derive(Debug)]
struct Shared {
    seg: Arc<Segment>,
    layout: ArenaLayout,
    max_log2: u32,
    /// The bump pointer as last published by the arena's core (Release after a carve): every
    /// block below it was carved, so its header is the arena's.
    carved: AtomicUsize,
    /// Blocks retired (with their retire epoch) and not yet seen by `reclaim`. Locked when a
    /// value's last `Bytes` drops (on whichever thread drops it) and when the core reclaims:
    /// never on the read path.
    pending: Mutex<Vec<(u64, ArenaBlock)>>,
}

impl Shared {
    /// See [`ArenaLocator::locate`].
    fn locate(&self, bytes: &Bytes) -> Option<(u64, u64)> {
        let seg = &self.seg;
        let l = &self.layout;
        let base = seg.as_ptr() as usize;
        let value_off = (bytes.as_ptr() as usize).checked_sub(base)?;
        let block_off = value_off.checked_sub(BLOCK_HEADER_BYTES)?;
        let rel = block_off.checked_sub(l.offset)?;
        let carved = self.carved.load(Ordering::Acquire);
        if rel >= carved || !rel.is_multiple_of(MIN_BLOCK_BYTES) {
            return None;
        }
        let class = seg.load_u32(block_off + SIZE_CLASS_OFFSET, Ordering::Acquire);
        if !(MIN_LOG2..=self.max_log2).contains(&class) || !rel.is_multiple_of(1usize << class) {
            return None;
        }
        let len = seg.load_u32(block_off + VALUE_LEN_OFFSET, Ordering::Acquire) as usize;
        if len != bytes.len() || BLOCK_HEADER_BYTES + len > 1usize << class {
            return None;
        }
        if rel + (1usize << class) > carved {
            return None;
        }
        let generation = seg.load_u64(block_off + GENERATION_OFFSET, Ordering::Acquire);
        Some((value_off as u64, generation))
    }

    fn epoch(&self) -> u64 {
        self.seg
            .load_u64(self.layout.epoch_offset, Ordering::Acquire)
    }

    #[track_caller]
    fn retire(&self, block: ArenaBlock) {
        let l = &self.layout;
        let off = block.offset as usize;
        assert!(
            off >= l.offset
                && off
                    .checked_add(block.block_bytes())
                    .is_some_and(|end| end <= l.offset + l.len),
            "retired block {off} not from this arena"
        );
        let epoch = self.epoch();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((epoch, block));
    }
}

/// A handle to retire blocks from any thread (the arena itself stays on its core).
#[derive(Clone, Debug)]
pub struct ArenaRetirer {
    shared: Arc<Shared>,
}

impl ArenaRetirer {
    /// As [`Arena::retire`].
    pub fn retire(&self, block: ArenaBlock) {
        self.shared.retire(block);
    }
}

/// Finds values in an arena from any thread, without touching the arena itself (which stays
/// on its core): a core answering with another core's value (a gathered MGET) asks that core's
/// locator. Lock-free: it reads the block headers, which the arena wrote before the value's
/// `Bytes` was handed out.
#[derive(Clone, Debug)]
pub struct ArenaLocator {
    shared: Arc<Shared>,
}

impl ArenaLocator {
    /// As [`Arena::locate`].
    pub fn locate(&self, bytes: &Bytes) -> Option<(u64, u64)> {
        self.shared.locate(bytes)
    }

    /// The segment offset of `bytes` when it starts where a value of this arena's region can
    /// (after a block header, inside the region), from its address alone: no memory is read.
    /// For a value the caller knows to be a block's whole value (one [`Arena::locate`] found,
    /// or one it stored), with the block's generation noted then, this places it as `locate`
    /// does without reading the block's header.
    #[inline]
    pub fn value_offset(&self, bytes: &Bytes) -> Option<u64> {
        let l = &self.shared.layout;
        let value_off = (bytes.as_ptr() as usize).checked_sub(self.shared.seg.as_ptr() as usize)?;
        let rel = value_off
            .checked_sub(BLOCK_HEADER_BYTES)?
            .checked_sub(l.offset)?;
        (rel.is_multiple_of(MIN_BLOCK_BYTES) && rel + BLOCK_HEADER_BYTES + bytes.len() <= l.len)
            .then_some(value_off as u64)
    }

    /// Whether `bytes` points into this arena's segment at all (cheap: two comparisons).
    pub fn contains(&self, bytes: &Bytes) -> bool {
        let base = self.shared.seg.as_ptr() as usize;
        let address = bytes.as_ptr() as usize;
        address >= base && address < base + self.shared.seg.len()
    }
}

/// Counters of an arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaStats {
    /// The global epoch.
    pub epoch: u64,
    /// Bytes of the region.
    pub capacity_bytes: u64,
    /// Bytes of blocks handed out and not yet reclaimed (retired ones included).
    pub bytes_in_use: u64,
    /// Bytes of blocks on the free lists.
    pub bytes_free: u64,
    /// Bytes never carved (after the bump pointer).
    pub bytes_fresh: u64,
    /// Blocks handed out and not yet reclaimed, per class: index `i` is blocks of `32 << i` bytes.
    pub blocks_in_use: Vec<u64>,
    /// Blocks on the free lists, per class (same indexing).
    pub blocks_free: Vec<u64>,
    /// Blocks retired and not yet reusable (waiting for readers, or for `reclaim` to see them).
    pub retired_pending: u64,
}

/// One core's value allocator over a region of its data segment. See the module documentation.
///
/// `alloc`, `reclaim` and the stats belong to the core thread (`&mut self`); `retire` and the
/// epoch work from `&self`, and [`ArenaValue`] drops and [`ArenaRetirer`] retire from any thread.
#[derive(Debug)]
pub struct Arena {
    shared: Arc<Shared>,
    /// Start of the region (segment offset).
    base: usize,
    /// Next fresh byte, relative to `base` (a multiple of 32).
    bump: usize,
    /// Bytes of the region.
    end: usize,
    max_log2: u32,
    /// Free blocks per class (index `class - 5`), segment offsets.
    free: Vec<Vec<u64>>,
    /// Retired blocks waiting for readers to move past their epoch.
    retired: Vec<(u64, ArenaBlock)>,
    blocks_in_use: Vec<u64>,
    bytes_in_use: u64,
}

impl Arena {
    /// Creates an arena over `layout.offset .. layout.offset + layout.len` of `seg`, all of it
    /// fresh (zeroed, never handed out), and sets the epoch to 1 if it is 0.
    ///
    /// # Safety
    /// For as long as the arena or any [`ArenaValue`] made from it lives, nothing but this arena
    /// may write the region in this process (no other arena over it, no `Segment::write_bytes`,
    /// atomics or raw writes into it), and every other process must map the segment read-only
    /// (seal it with [`Segment::seal_read_only_for_others`] before handing it out): values are
    /// lent out as `&[u8]` that must not change underneath. The region must not have been handed
    /// out before by another arena whose values may still be read (generations restart from the
    /// headers found there, which must be zero or left by an earlier arena over the same region).
    ///
    /// # Panics
    /// If the segment is read-only or the layout is invalid (out of bounds, misaligned epoch, epoch
    /// inside the region, region offset not 8-aligned, `max_block` not a power of two in
    /// `32..=2^33`).
    pub unsafe fn new(seg: Arc<Segment>, layout: ArenaLayout) -> Arena {
        assert!(seg.is_writable(), "an arena needs a writable mapping");
        let end = layout
            .offset
            .checked_add(layout.len)
            .filter(|&end| end <= seg.len())
            .expect("arena region outside the segment");
        assert!(
            layout.max_block.is_power_of_two()
                && layout.max_block >= MIN_BLOCK_BYTES
                && layout.max_block as u64 <= 1 << 33,
            "max_block must be a power of two in 32..=2^33"
        );
        assert!(
            layout.offset.is_multiple_of(8),
            "the arena region must start 8-aligned"
        );
        assert!(
            layout.epoch_offset + 8 <= layout.offset || layout.epoch_offset >= end,
            "the epoch word must be outside the arena region"
        );
        let epoch = seg.atomic_u64(layout.epoch_offset);
        let _ = epoch.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
        let max_log2 = layout.max_block.trailing_zeros();
        let classes = (max_log2 - MIN_LOG2 + 1) as usize;
        Arena {
            shared: Arc::new(Shared {
                seg,
                layout,
                max_log2,
                carved: AtomicUsize::new(0),
                pending: Mutex::new(Vec::new()),
            }),
            base: layout.offset,
            bump: 0,
            end: layout.len,
            max_log2,
            free: vec![Vec::new(); classes],
            retired: Vec::new(),
            blocks_in_use: vec![0; classes],
            bytes_in_use: 0,
        }
    }

    /// The layout this arena was made with.
    pub fn layout(&self) -> &ArenaLayout {
        &self.shared.layout
    }

    /// The segment.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.shared.seg
    }

    /// The size class (log2 of the block size) a value of `len` bytes needs, or `None` when it
    /// needs a block larger than `max_block`.
    pub fn class_for(&self, len: usize) -> Option<u32> {
        let need = len
            .checked_add(BLOCK_HEADER_BYTES)?
            .checked_next_power_of_two()?;
        let log2 = need.trailing_zeros().max(MIN_LOG2);
        (log2 <= self.max_log2).then_some(log2)
    }

    /// Segment offset of a block's value.
    pub fn value_offset(&self, block: &ArenaBlock) -> u64 {
        block.value_offset()
    }

    /// Carves a fresh block of `1 << log2` bytes from the bump pointer; the alignment gap goes to
    /// the smaller free lists. Returns the block's segment offset.
    fn carve(&mut self, log2: u32) -> Option<u64> {
        let size = 1usize << log2;
        let start = self.bump.checked_next_multiple_of(size)?;
        if start.checked_add(size)? > self.end {
            return None;
        }
        let mut p = self.bump;
        while p < start {
            // The largest power of two that divides p and fits before `start` (p and start are
            // multiples of 32, so it is at least 32, and less than `size`).
            let mut b = 1usize << p.trailing_zeros().min(usize::BITS - 1);
            while p + b > start {
                b >>= 1;
            }
            self.free[(b.trailing_zeros() - MIN_LOG2) as usize].push((self.base + p) as u64);
            p += b;
        }
        self.bump = start + size;
        // The new block's header is written after this store, before its value is handed
        // out; a locator reads it only through a `Bytes` of that value (which carries the
        // happens-before), so Relaxed would do; Release keeps the bound monotonic to readers.
        self.shared.carved.store(self.bump, Ordering::Release);
        Some((self.base + start) as u64)
    }

    /// Copies `value` into a free block of the smallest class that holds it and returns the block:
    /// generation incremented, length and class set. `None` when the value needs a block larger
    /// than `max_block` or no block of its class is free and none can be carved (arena full for
    /// that class).
    pub fn alloc(&mut self, value: &[u8]) -> Option<ArenaBlock> {
        let block = self.alloc_block(value.len())?;
        self.shared
            .seg
            .write_bytes(block.value_offset() as usize, value);
        fence(Ordering::Release);
        Some(block)
    }

    /// A block for a value of `len` bytes written in parts ([`ArenaUpload::chunk_mut`]), then
    /// turned into an [`ArenaValue`] ([`ArenaUpload::finish`]); dropped unfinished, the block
    /// is retired. `None` as for [`alloc`](Self::alloc). Until finished, the block's contents
    /// are whatever it held before (never another process's secret: every process that may map
    /// the segment may read every value in it).
    pub fn alloc_upload(&mut self, len: usize) -> Option<ArenaUpload> {
        let block = self.alloc_block(len)?;
        Some(ArenaUpload {
            value: ArenaValue {
                shared: Arc::clone(&self.shared),
                block: Some(block),
            },
        })
    }

    /// Frees the block of an upload that was never finished, at once: it was never a value, so
    /// no reader can be using it (a reader reaches a block only through an answer naming it),
    /// and waiting out the epoch for it would let a client that abandons uploads one after
    /// another hold the arena's blocks for a lease.
    ///
    /// # Panics
    /// If the upload is from another arena.
    pub fn free_unfinished(&mut self, upload: ArenaUpload) {
        let mut value = upload.value;
        assert!(
            Arc::ptr_eq(&value.shared, &self.shared),
            "an upload of another arena"
        );
        let block = value.block.take().expect("an upload holds its block");
        let idx = (block.class - MIN_LOG2) as usize;
        self.free[idx].push(block.offset);
        self.blocks_in_use[idx] -= 1;
        self.bytes_in_use -= 1 << block.class;
    }

    /// Takes a block for `len` bytes and writes its header (generation, length, class); the
    /// caller writes the contents.
    fn alloc_block(&mut self, len: usize) -> Option<ArenaBlock> {
        let class = self.class_for(len)?;
        let len = u32::try_from(len).ok()?;
        let idx = (class - MIN_LOG2) as usize;
        let offset = match self.free[idx].pop() {
            Some(off) => off,
            None => self.carve(class)?,
        };
        let seg = &self.shared.seg;
        // The next block of this class to be handed out: its header's line is cold (freed a
        // while ago, maybe read by clients since); fetching it now overlaps that miss with the
        // work until the next write.
        if let Some(&next) = self.free[idx].last() {
            seg.prefetch(next as usize);
        }
        let off = offset as usize;
        let gen_word = seg.atomic_u64(off + GENERATION_OFFSET);
        let generation = gen_word.load(Ordering::Relaxed).wrapping_add(1);
        // Generation first, then the contents: a reader in another process that loads the
        // generation before and after copying the value sees the change if it raced with reuse.
        gen_word.store(generation, Ordering::Relaxed);
        fence(Ordering::Release);
        seg.atomic_u32(off + VALUE_LEN_OFFSET)
            .store(len, Ordering::Relaxed);
        seg.atomic_u32(off + SIZE_CLASS_OFFSET)
            .store(class, Ordering::Relaxed);
        self.blocks_in_use[idx] += 1;
        self.bytes_in_use += 1 << class;
        Some(ArenaBlock {
            offset,
            generation,
            len,
            class,
        })
    }

    /// [`alloc`](Self::alloc), wrapped in an owner whose drop retires the block: turn it into a
    /// `Bytes` with [`ArenaValue::into_bytes`] (`Bytes::from_owner`).
    pub fn alloc_value(&mut self, value: &[u8]) -> Option<ArenaValue> {
        let block = self.alloc(value)?;
        Some(ArenaValue {
            shared: Arc::clone(&self.shared),
            block: Some(block),
        })
    }

    /// Retires a block: it becomes reusable once readers moved past the current epoch (see
    /// [`reclaim`](Self::reclaim)).
    ///
    /// # Panics
    /// If the block is not from this arena's region.
    #[track_caller]
    pub fn retire(&self, block: ArenaBlock) {
        self.shared.retire(block);
    }

    /// A handle that retires blocks from other threads.
    pub fn retirer(&self) -> ArenaRetirer {
        ArenaRetirer {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The global epoch.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch()
    }

    /// Increments the global epoch; returns the new value.
    pub fn advance_epoch(&self) -> u64 {
        self.shared
            .seg
            .atomic_u64(self.shared.layout.epoch_offset)
            .fetch_add(1, Ordering::AcqRel)
            + 1
    }

    /// Moves retired blocks whose retire epoch is older than `min_active_pin` (the smallest epoch
    /// pinned by an active reader; `None` or `Some(0)`: no reader pinned) to the free lists.
    /// Returns how many blocks were freed.
    pub fn reclaim(&mut self, min_active_pin: Option<u64>) -> usize {
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.retired.append(&mut pending);
        }
        let pin = min_active_pin.filter(|&p| p != 0);
        let mut freed = 0;
        let mut i = 0;
        while i < self.retired.len() {
            if pin.is_none_or(|p| self.retired[i].0 < p) {
                let (_, block) = self.retired.swap_remove(i);
                let idx = (block.class - MIN_LOG2) as usize;
                self.free[idx].push(block.offset);
                self.blocks_in_use[idx] -= 1;
                self.bytes_in_use -= 1 << block.class;
                freed += 1;
            } else {
                i += 1;
            }
        }
        freed
    }

    /// Whether `bytes` is exactly the value of a block of this arena (its pointer is the value
    /// start of a block in the region and its length the block's value length): then the value's
    /// segment offset and the block's generation, for a reader in another process.
    pub fn locate(&self, bytes: &Bytes) -> Option<(u64, u64)> {
        self.shared.locate(bytes)
    }

    /// A handle that finds this arena's values from any thread (see [`ArenaLocator`]).
    pub fn locator(&self) -> ArenaLocator {
        ArenaLocator {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Counters: see [`ArenaStats`].
    pub fn stats(&self) -> ArenaStats {
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let blocks_free: Vec<u64> = self.free.iter().map(|f| f.len() as u64).collect();
        let bytes_free = blocks_free
            .iter()
            .enumerate()
            .map(|(i, n)| n << (i as u32 + MIN_LOG2))
            .sum();
        ArenaStats {
            epoch: self.epoch(),
            capacity_bytes: self.shared.layout.len as u64,
            bytes_in_use: self.bytes_in_use,
            bytes_free,
            bytes_fresh: (self.end - self.bump) as u64,
            blocks_in_use: self.blocks_in_use.clone(),
            blocks_free,
            retired_pending: (self.retired.len() + pending) as u64,
        }
    }
}

/// A value stored in an arena block, owned: `AsRef<[u8]> + Send + Sync + 'static`, so
/// `Bytes::from_owner(value)` is a `Bytes` whose bytes live in the segment. Dropping it (the last
/// `Bytes` clone, on any thread) retires the block. It keeps the segment mapped.
#[derive(Debug)]
pub struct ArenaValue {
    shared: Arc<Shared>,
    /// Always `Some` until drop takes it.
    block: Option<ArenaBlock>,
}

impl ArenaValue {
    /// The block (offset, generation, length, class).
    pub fn block(&self) -> &ArenaBlock {
        self.block
            .as_ref()
            .expect("ArenaValue block taken before drop")
    }

    /// `Bytes::from_owner(self)`.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

/// A block being written in parts (see [`Arena::alloc_upload`]): not a value yet, so nothing
/// reads it in this process; [`finish`](Self::finish) makes it one. Dropping it retires the
/// block.
#[derive(Debug)]
pub struct ArenaUpload {
    value: ArenaValue,
}

impl ArenaUpload {
    /// The value's length.
    pub fn len(&self) -> usize {
        self.value.block().len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block (offset, generation, length, class).
    pub fn block(&self) -> &ArenaBlock {
        self.value.block()
    }

    /// The bytes `at..at + len` of the value, to write.
    ///
    /// # Panics
    /// If the range is not within the value.
    pub fn chunk_mut(&mut self, at: usize, len: usize) -> &mut [u8] {
        let end = at.checked_add(len).expect("upload chunk range overflows");
        assert!(end <= self.len(), "upload chunk past the value's end");
        let seg = &self.value.shared.seg;
        let off = self.value.block().value_offset() as usize + at;
        assert!(off + len <= seg.len());
        // SAFETY: in bounds of the writable mapping (`Arena::new` asserted it writable), which
        // `seg` keeps alive. The block is this upload's alone: handed out to it, retired only by
        // its drop, and not a value yet, so no `&[u8]` of it exists in this process (`finish`
        // consumes `self`); other processes map the segment read-only, so they never write it.
        unsafe { std::slice::from_raw_parts_mut(seg.as_mut_ptr().add(off), len) }
    }

    /// The written value (what was not written holds the block's earlier bytes).
    pub fn finish(self) -> ArenaValue {
        // The contents before whatever publishes the value (as `Arena::alloc` does).
        fence(Ordering::Release);
        self.value
    }
}

impl AsRef<[u8]> for ArenaValue {
    fn as_ref(&self) -> &[u8] {
        let seg = &self.shared.seg;
        let block = self.block();
        let off = block.value_offset() as usize;
        let len = block.len();
        assert!(off + len <= seg.len());
        // SAFETY: the range is in bounds of the mapping, which `self.shared.seg` keeps alive. The
        // block stays allocated while this owner lives (it is retired only by our drop), the arena
        // writes a block only when handing it out, and `Arena::new`'s contract forbids any other
        // writer of the region, in this process or another.
        unsafe { std::slice::from_raw_parts(seg.as_ptr().add(off), len) }
    }
}

impl Drop for ArenaValue {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.shared.retire(block);
        }
    }
}
