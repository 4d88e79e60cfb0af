//! The key-to-shard hash. Every client library computes exactly this; changing it is a
//! breaking change of the protocol.
//!
//! - `key_hash(key) = XXH3-64(key, seed = 0)` (the XXH3 64-bit hash from the xxHash family,
//!   available in every language: Python `xxhash.xxh3_64_intdigest`, Go `github.com/zeebo/xxh3`,
//!   Node `xxhash-wasm`'s `h64`/`xxh3`, C `XXH3_64bits`).
//! - `shard_for_key(key, n) = (key_hash(key) as u128 * n as u128) >> 64`, i.e. the hash scaled
//!   onto `0..n` (Lemire's multiply-shift range reduction: no division, no modulo bias worth naming).
//!
//! Topics are placed by the same function applied to the topic name.

use xxhash_rust::xxh3::xxh3_64;

/// XXH3-64 of `key` with seed 0.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The shard (core index) that owns `key` in an instance of `shard_count` shards.
///
/// # Panics
/// Debug builds assert `shard_count > 0`.
#[inline]
pub fn shard_for_key(key: &[u8], shard_count: u32) -> u32 {
    debug_assert!(shard_count > 0);
    shard_for_hash(key_hash(key), shard_count)
}

/// The shard for an already computed [`key_hash`].
#[inline]
pub fn shard_for_hash(hash: u64, shard_count: u32) -> u32 {
    ((u128::from(hash) * u128::from(shard_count)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_documented_xxh3() {
        // Reference values of XXH3_64bits(seed 0), as printed by the C library and by
        // Python's `xxhash.xxh3_64_intdigest`.
        assert_eq!(key_hash(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(key_hash(b"a"), 0xE6C6_32B6_1E96_4E1F);
    }

    #[test]
    fn one_shard_owns_everything() {
        for key in [&b""[..], b"a", b"key:1", &[0xff; 100]] {
            assert_eq!(shard_for_key(key, 1), 0);
        }
    }

    #[test]
    fn shards_are_in_range_and_spread() {
        for shard_count in [2u32, 3, 4, 7, 64] {
            let mut seen = vec![0u32; shard_count as usize];
            for i in 0..10_000u32 {
                let shard = shard_for_key(format!("key:{i}").as_bytes(), shard_count);
                assert!(shard < shard_count);
                seen[shard as usize] += 1;
            }
            let expected = 10_000 / shard_count;
            for count in seen {
                assert!(count > expected / 2, "uneven spread: {count} vs {expected}");
            }
        }
    }
}
