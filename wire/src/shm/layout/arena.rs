//! Blocks of the arena of a data segment. Every block is a power of two of at least
//! [`MIN_BLOCK_BYTES`], aligned to its size within the arena (offsets relative to the
//! arena start), and starts with a 16-byte header followed by the value bytes.

/// Block header: u64 generation, u32 value length, u32 size class.
pub const BLOCK_HEADER_BYTES: usize = 16;
/// u64, incremented every time the block is (re)allocated.
pub const GENERATION_OFFSET: usize = 0;
/// u32, bytes of the value.
pub const VALUE_LEN_OFFSET: usize = 8;
/// u32, the size class: log2 of the block's bytes.
pub const SIZE_CLASS_OFFSET: usize = 12;
/// Smallest block (a header and 16 value bytes).
pub const MIN_BLOCK_BYTES: u64 = 32;
/// Size class of the smallest block.
pub const MIN_SIZE_CLASS: u32 = MIN_BLOCK_BYTES.trailing_zeros();
/// Largest size class: a block holds a value of up to `u32::MAX` bytes.
pub const MAX_SIZE_CLASS: u32 = 33;

/// Bytes of a block of `size_class`, if the class is valid.
pub const fn block_bytes(size_class: u32) -> Option<u64> {
    if size_class < MIN_SIZE_CLASS || size_class > MAX_SIZE_CLASS {
        None
    } else {
        Some(1u64 << size_class)
    }
}

/// The smallest size class that holds a value of `value_len` bytes.
pub const fn size_class_for(value_len: u32) -> u32 {
    let needed = value_len as u64 + BLOCK_HEADER_BYTES as u64;
    let class = 64 - (needed - 1).leading_zeros();
    if class < MIN_SIZE_CLASS {
        MIN_SIZE_CLASS
    } else {
        class
    }
}

/// Where the value of the block at `block_offset` starts (both relative to the same
/// origin: the arena or the segment).
pub const fn value_offset(block_offset: u64) -> u64 {
    block_offset + BLOCK_HEADER_BYTES as u64
}

/// Checks a shared value reference against the block header read at
/// `value_offset - 16` in the data segment (for the client, which must not trust the
/// reference blindly either): the block lies in the arena, is aligned to its size
/// class, holds the value, and the generation and length match the reference.
///
/// `arena_offset`/`arena_bytes` come from the data segment header; `value_offset` is
/// relative to the segment, as in a response.
pub fn check_block(
    arena_offset: u64,
    arena_bytes: u64,
    value_offset: u64,
    value_len: u32,
    generation: u64,
    header: [u8; BLOCK_HEADER_BYTES],
) -> bool {
    let Some(block) = value_offset.checked_sub(BLOCK_HEADER_BYTES as u64) else {
        return false;
    };
    let Some(in_arena) = block.checked_sub(arena_offset) else {
        return false;
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let mut g = [0u8; 8];
    g.copy_from_slice(&header[GENERATION_OFFSET..GENERATION_OFFSET + 8]);
    let Some(size) = block_bytes(word(SIZE_CLASS_OFFSET)) else {
        return false;
    };
    u64::from_le_bytes(g) == generation
        && word(VALUE_LEN_OFFSET) == value_len
        && in_arena % size == 0
        && in_arena
            .checked_add(size)
            .is_some_and(|end| end <= arena_bytes)
        && BLOCK_HEADER_BYTES as u64 + u64::from(value_len) <= size
}
