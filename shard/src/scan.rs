//! SCAN pages and how pages from several shards merge into one consistent page.
//!
//! A cursor is the last key a page covered (keys are visited in byte order), so every key that
//! exists for the whole scan is returned exactly once, whatever is written meanwhile, and the
//! cursor means the same thing on every shard.

use bytes::Bytes;
use veddb_wire::{limits, Error};

/// One shard's page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Live keys, ascending.
    pub keys: Vec<Bytes>,
    /// `Some(k)`: the shard may have more keys after `k`, and every live matching key up to and
    /// including `k` is in `keys`. `None`: this shard has nothing more after the page.
    pub resume: Option<Bytes>,
}

pub(crate) fn effective_count(count: u32) -> Result<usize, Error> {
    match count {
        0 => Ok(limits::SCAN_COUNT_DEFAULT as usize),
        n if n > limits::SCAN_COUNT_MAX => Err(Error::InvalidArgument(format!(
            "SCAN count {n} is over the maximum of {}",
            limits::SCAN_COUNT_MAX
        ))),
        n => Ok(n as usize),
    }
}

/// Merges the pages that every shard returned for the same `(cursor, prefix, count)` into one
/// page of at most `count` keys whose `resume` is safe for all shards: the smallest key up to
/// which every shard has reported everything.
pub fn merge_scan_pages(pages: Vec<ScanPage>, count: u32) -> ScanPage {
    let count = effective_count(count).unwrap_or(limits::SCAN_COUNT_MAX as usize);
    let bound: Option<Bytes> = pages.iter().filter_map(|page| page.resume.clone()).min();
    let mut keys: Vec<Bytes> = pages
        .into_iter()
        .flat_map(|page| page.keys)
        .filter(|key| bound.as_ref().is_none_or(|bound| key <= bound))
        .collect();
    keys.sort_unstable();
    if keys.len() > count {
        keys.truncate(count);
        let resume = keys.last().cloned();
        return ScanPage { keys, resume };
    }
    ScanPage {
        keys,
        resume: bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[&str], resume: Option<&str>) -> ScanPage {
        ScanPage {
            keys: keys
                .iter()
                .map(|k| Bytes::copy_from_slice(k.as_bytes()))
                .collect(),
            resume: resume.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        }
    }

    #[test]
    fn merge_respects_the_smallest_resume_point() {
        let merged = merge_scan_pages(
            vec![page(&["a", "c"], Some("c")), page(&["b", "d", "e"], None)],
            10,
        );
        assert_eq!(merged, page(&["a", "b", "c"], Some("c")));
    }

    #[test]
    fn merge_truncates_to_count() {
        let merged = merge_scan_pages(vec![page(&["a", "c"], None), page(&["b", "d"], None)], 3);
        assert_eq!(merged, page(&["a", "b", "c"], Some("c")));
    }

    #[test]
    fn merge_of_finished_shards_is_finished() {
        let merged = merge_scan_pages(vec![page(&["a"], None), page(&[], None)], 3);
        assert_eq!(merged, page(&["a"], None));
    }
}
