//! The shared shape of data-file names: `<generation:010>-<shard:05>-<sequence:020>.<extension>`,
//! fixed-width decimal so that names sort like their numbers and parse back unambiguously.

/// Digits of the generation in a file name (a `u32`).
pub(crate) const GENERATION_DIGITS: usize = 10;
/// Digits of the shard index in a file name (below 65,536).
pub(crate) const SHARD_DIGITS: usize = 5;
/// Digits of a sequence number in a file name (a `u64`).
pub(crate) const SEQUENCE_DIGITS: usize = 20;

pub(crate) fn format(generation: u32, shard: u32, sequence: u64, extension: &str) -> String {
    format!("{generation:010}-{shard:05}-{sequence:020}.{extension}")
}

/// Parses a name made by [`format`] with this extension; `None` for anything else.
pub(crate) fn parse(name: &str, extension: &str) -> Option<(u32, u32, u64)> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    let mut parts = stem.split('-');
    let generation = number(parts.next()?, GENERATION_DIGITS)?;
    let shard = number(parts.next()?, SHARD_DIGITS)?;
    let sequence = number(parts.next()?, SEQUENCE_DIGITS)?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        u32::try_from(generation).ok()?,
        u32::try_from(shard).ok()?,
        sequence,
    ))
}

/// A fixed-width run of ASCII digits.
pub(crate) fn number(text: &str, digits: usize) -> Option<u64> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_like_numbers() {
        let a = format(1, 2, 3, "wal");
        assert_eq!(a, "0000000001-00002-00000000000000000003.wal");
        assert_eq!(parse(&a, "wal"), Some((1, 2, 3)));
        let big = format(u32::MAX, 65_535, u64::MAX, "snap");
        assert_eq!(parse(&big, "snap"), Some((u32::MAX, 65_535, u64::MAX)));
        assert!(format(1, 2, 9, "wal") < format(1, 2, 10, "wal"));
    }

    #[test]
    fn anything_else_is_refused() {
        for name in [
            "0000000001-00002-00000000000000000003.snap",
            "0000000001-00002-0000000000000000003.wal",
            "000000001-00002-00000000000000000003.wal",
            "0000000001-00002-00000000000000000003-1.wal",
            "0000000001-0000a-00000000000000000003.wal",
            "9999999999-00002-00000000000000000003.wal",
            "0000000001-00002-99999999999999999999.wal",
            "0000000001-00002-00000000000000000003wal",
            "",
            "+000000001-00002-00000000000000000003.wal",
        ] {
            assert_eq!(parse(name, "wal"), None, "{name}");
        }
    }
}
