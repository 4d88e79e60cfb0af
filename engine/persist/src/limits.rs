//! Size limits of keys and values in durable files, and the hard caps no configuration can
//! raise.
//!
//! A decoder checks every length it reads against these before it trusts it, so a damaged
//! length field can neither make it allocate more than the caps nor read past its input.

use veddb_wire::limits as wire;

/// Largest key any durable file may hold, whatever `--key-bytes-max` says. The server refuses a
/// `--key-bytes-max` above `--value-bytes-max`, itself at most 1 GiB.
pub const KEY_BYTES_MAX_HARD: usize = 1 << 30;
/// Largest value any durable file may hold, whatever `--value-bytes-max` says (the server
/// refuses more than 1 GiB).
pub const VALUE_BYTES_MAX_HARD: usize = 1 << 30;

/// Bytes of an entry besides its key and value: version (8), expiry (8), key length (4), value
/// length (4). The same layout serves a log `Put` and a snapshot entry.
pub const ENTRY_FIXED_BYTES: usize = 24;

/// The largest encoded entry under the hard caps; fits a `u32` length field with room to spare.
pub const ENTRY_BYTES_MAX_HARD: usize =
    ENTRY_FIXED_BYTES + KEY_BYTES_MAX_HARD + VALUE_BYTES_MAX_HARD;

const _: () = assert!(KEY_BYTES_MAX_HARD <= VALUE_BYTES_MAX_HARD);
const _: () = assert!(ENTRY_BYTES_MAX_HARD + 64 <= u32::MAX as usize);
const _: () = assert!(wire::KEY_BYTES_MAX_DEFAULT <= KEY_BYTES_MAX_HARD);
const _: () = assert!(wire::VALUE_BYTES_MAX_DEFAULT <= VALUE_BYTES_MAX_HARD);

/// The key and value sizes a decoder accepts and an encoder writes. Pass the server's
/// `--key-bytes-max` and `--value-bytes-max`; if a file holds a larger key or value (the limits
/// were lowered between runs), decoding reports it as an inconsistency that names the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLimits {
    key_bytes_max: usize,
    value_bytes_max: usize,
}

impl Default for EntryLimits {
    /// 64 KiB keys and 16 MiB values, the server's defaults.
    fn default() -> Self {
        EntryLimits {
            key_bytes_max: wire::KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: wire::VALUE_BYTES_MAX_DEFAULT,
        }
    }
}

impl EntryLimits {
    /// Limits clamped to `1..=KEY_BYTES_MAX_HARD` and `0..=VALUE_BYTES_MAX_HARD`.
    pub fn new(key_bytes_max: usize, value_bytes_max: usize) -> Self {
        EntryLimits {
            key_bytes_max: key_bytes_max.clamp(1, KEY_BYTES_MAX_HARD),
            value_bytes_max: value_bytes_max.min(VALUE_BYTES_MAX_HARD),
        }
    }

    /// The largest hard caps: what a repair tool uses to read files written under any
    /// configuration.
    pub fn hard() -> Self {
        EntryLimits::new(KEY_BYTES_MAX_HARD, VALUE_BYTES_MAX_HARD)
    }

    pub fn key_bytes_max(&self) -> usize {
        self.key_bytes_max
    }

    pub fn value_bytes_max(&self) -> usize {
        self.value_bytes_max
    }

    /// The largest encoded entry (fixed fields, key and value) under these limits.
    pub fn entry_bytes_max(&self) -> usize {
        ENTRY_FIXED_BYTES + self.key_bytes_max + self.value_bytes_max
    }

    /// Checks one entry's sizes.
    pub(crate) fn check(&self, key_length: usize, value_length: usize) -> Result<(), EntryProblem> {
        if key_length == 0 {
            return Err(EntryProblem::EmptyKey);
        }
        if key_length > self.key_bytes_max {
            return Err(EntryProblem::KeyTooLarge {
                length: key_length,
                limit: self.key_bytes_max,
            });
        }
        if value_length > self.value_bytes_max {
            return Err(EntryProblem::ValueTooLarge {
                length: value_length,
                limit: self.value_bytes_max,
            });
        }
        Ok(())
    }
}

/// What is wrong with one entry (a log `Put`/`Delete` or a snapshot entry) whose bytes were
/// intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    /// A key of length 0: keys are at least one byte.
    EmptyKey,
    /// A key over `--key-bytes-max` (lowered since the file was written?).
    KeyTooLarge { length: usize, limit: usize },
    /// A value over `--value-bytes-max` (lowered since the file was written?).
    ValueTooLarge { length: usize, limit: usize },
    /// Version 0: every stored entry has a version of at least 1.
    ZeroVersion,
    /// The fields do not fill the space their container gives them exactly.
    LengthMismatch,
}

impl std::fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryProblem::EmptyKey => write!(f, "an empty key"),
            EntryProblem::KeyTooLarge { length, limit } => write!(
                f,
                "a key of {length} bytes, over the {limit}-byte limit (was --key-bytes-max lowered?)"
            ),
            EntryProblem::ValueTooLarge { length, limit } => write!(
                f,
                "a value of {length} bytes, over the {limit}-byte limit (was --value-bytes-max lowered?)"
            ),
            EntryProblem::ZeroVersion => write!(f, "version 0"),
            EntryProblem::LengthMismatch => write!(f, "field lengths that do not add up"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_clamp_to_the_hard_caps() {
        let limits = EntryLimits::new(usize::MAX, usize::MAX);
        assert_eq!(limits.key_bytes_max(), KEY_BYTES_MAX_HARD);
        assert_eq!(limits.value_bytes_max(), VALUE_BYTES_MAX_HARD);
        assert_eq!(EntryLimits::new(0, 0).key_bytes_max(), 1);
        assert_eq!(limits, EntryLimits::hard());
    }

    #[test]
    fn check_names_the_problem() {
        let limits = EntryLimits::new(4, 8);
        assert_eq!(limits.check(0, 0), Err(EntryProblem::EmptyKey));
        assert_eq!(
            limits.check(5, 0),
            Err(EntryProblem::KeyTooLarge {
                length: 5,
                limit: 4
            })
        );
        assert_eq!(
            limits.check(4, 9),
            Err(EntryProblem::ValueTooLarge {
                length: 9,
                limit: 8
            })
        );
        assert_eq!(limits.check(4, 8), Ok(()));
    }
}
