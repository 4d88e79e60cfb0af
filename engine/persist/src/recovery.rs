//! Recovery as pure logic: from a data directory's file list to a plan, replay with sequence
//! checks, and re-hashing onto a new shard count.
//!
//! - [`plan`]: names and sizes in, a [`Plan`] out: the generation to load (the newest with a
//!   layout marker), per shard its snapshots (newest first) and segments (in sequence order),
//!   and the files that are debris (temporary snapshots, other generations).
//! - [`ShardPlan::segments_after`]: which segments to replay after a snapshot at sequence `S`:
//!   the last segment whose first sequence is at most `S + 1`, and every later one. A first
//!   segment that starts after `S + 1` means records are missing: an error naming the files.
//! - [`ShardReplay`]: replays segments in order, skipping records the snapshot already holds,
//!   checking that sequences continue without a gap from one segment to the next (a missing
//!   segment is an error naming the file before and after the gap), cutting a torn tail of the
//!   newest segment, and stopping on corruption with the file and offset.
//! - [`ShardImage`] and [`rehash`]: the state being rebuilt, and its redistribution with
//!   [`veddb_wire::shard_for_key`] over a new shard count, dropping entries that expired.

use bytes::Bytes;

use crate::layout::Layout;
use crate::limits::EntryLimits;
use crate::record::{Record, RecordDecoder, RecordRef, Step};
use crate::segment::{SegmentHeader, SegmentName, SEGMENT_HEADER_BYTES};
use crate::snapshot::{SnapshotEntryRef, SnapshotName, SNAPSHOT_BYTES_MIN};
use crate::storage::{FileInfo, StorageError};
use crate::HeaderError;

/// A segment file found in the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub name: SegmentName,
    pub file: String,
    pub size: u64,
}

/// A snapshot file found in the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub name: SnapshotName,
    pub file: String,
    pub size: u64,
}

/// What to load for one shard of the generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardPlan {
    pub shard: u32,
    /// Snapshots that may be complete, newest first. Try them in order; after the first that
    /// decodes, replay `segments_after(its sequence)`.
    pub snapshots: Vec<SnapshotFile>,
    /// Every segment, by first sequence.
    pub segments: Vec<SegmentFile>,
}

/// What the data directory holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The generation to load and its marker's file name; `None` when the directory holds no
    /// data at all (a first start).
    pub layout: Option<(Layout, String)>,
    /// One per shard of the layout, by shard index.
    pub shards: Vec<ShardPlan>,
    /// Files to delete once the load succeeded: temporary snapshots and layout markers, files
    /// of older generations (superseded) and of newer ones (an unfinished change of shard
    /// count), snapshots too short to be complete.
    pub obsolete: Vec<String>,
    /// Files this crate did not write (left alone; worth a warning).
    pub unknown: Vec<String>,
    /// Published snapshots of the loaded generation too short to be complete (the disk lost
    /// part of them), with their sizes: also in `obsolete`; worth a warning.
    pub short_snapshots: Vec<(String, u64)>,
}

/// What a file name says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataFile {
    Segment(SegmentName),
    Snapshot(SnapshotName),
    /// A snapshot being written, or whose writing was interrupted.
    TemporarySnapshot(SnapshotName),
    Layout(Layout),
    /// A layout marker being written.
    TemporaryLayout(Layout),
    Unknown,
}

/// Suffix of a temporary file (snapshot or layout marker being written).
pub const TEMPORARY_SUFFIX: &str = crate::snapshot::TEMPORARY_SUFFIX;

impl DataFile {
    pub fn classify(name: &str) -> DataFile {
        if let Some(segment) = SegmentName::parse(name) {
            DataFile::Segment(segment)
        } else if let Some(snapshot) = SnapshotName::parse(name) {
            DataFile::Snapshot(snapshot)
        } else if let Some(snapshot) = SnapshotName::parse_temporary(name) {
            DataFile::TemporarySnapshot(snapshot)
        } else if let Some(layout) = Layout::parse_name(name) {
            DataFile::Layout(layout)
        } else if let Some(layout) = name
            .strip_suffix(TEMPORARY_SUFFIX)
            .and_then(Layout::parse_name)
        {
            DataFile::TemporaryLayout(layout)
        } else {
            DataFile::Unknown
        }
    }
}

/// Why recovery (or the plan) cannot go on. Every variant names the files involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryError {
    /// Segments or snapshots but no layout marker to say which generation and shard count
    /// they belong to.
    NoLayout { files: Vec<String> },
    /// Two layout markers for the same generation with different shard counts.
    ConflictingLayouts { files: Vec<String> },
    /// The layout marker's content is damaged or differs from its name.
    LayoutDamaged { file: String, problem: String },
    /// A file of the current generation for a shard the layout does not have.
    UnexpectedShard { file: String, shard_count: u32 },
    /// A file in a format version this build cannot read.
    UnsupportedVersion {
        file: String,
        found: u16,
        supported: u16,
    },
    /// A file damaged somewhere other than a torn tail of the newest segment.
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// Records `expected..found` of a shard are in no file.
    MissingSegment {
        shard: u32,
        /// What the records before the gap came from: a segment, a snapshot, or the start.
        after: String,
        /// The file that starts after the gap.
        file: String,
        expected: u64,
        found: u64,
    },
    /// An operation of the storage failed.
    Storage(StorageError),
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const REPAIR: &str = "run `veddb-server --repair` to cut the log at the first bad record \
                              (it backs up every file it changes), or restore the data directory";
        match self {
            RecoveryError::NoLayout { files } => write!(
                f,
                "the data directory holds VedDB files ({}) but no layout marker (*.layout); \
                 it is not a complete VedDB data directory",
                files.join(", ")
            ),
            RecoveryError::ConflictingLayouts { files } => write!(
                f,
                "conflicting layout markers for one generation: {}; remove the wrong one",
                files.join(", ")
            ),
            RecoveryError::LayoutDamaged { file, problem } => {
                write!(f, "layout marker {file} is damaged: {problem}")
            }
            RecoveryError::UnexpectedShard { file, shard_count } => write!(
                f,
                "{file} belongs to a shard the layout does not have (it has {shard_count} shards)"
            ),
            RecoveryError::UnsupportedVersion {
                file,
                found,
                supported,
            } => write!(
                f,
                "{file} has format version {found}; this build reads version {supported} only \
                 (was it written by a newer VedDB?)"
            ),
            RecoveryError::Corrupt {
                file,
                offset,
                reason,
            } => write!(f, "{file} is corrupt at offset {offset}: {reason}; {REPAIR}"),
            RecoveryError::MissingSegment {
                shard,
                after,
                file,
                expected,
                found,
            } => write!(
                f,
                "shard {shard}: the log has a gap: after {after} the next record should be {expected}, \
                 but {file} starts at {found}; a segment holding records {expected}..{} is missing; {REPAIR}",
                found - 1
            ),
            RecoveryError::Storage(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for RecoveryError {}

impl From<StorageError> for RecoveryError {
    fn from(error: StorageError) -> Self {
        RecoveryError::Storage(error)
    }
}

/// Builds the plan from the data directory's files.
pub fn plan(files: &[FileInfo]) -> Result<Plan, RecoveryError> {
    let mut plan = Plan::default();
    let classified: Vec<(&FileInfo, DataFile)> = files
        .iter()
        .map(|file| (file, DataFile::classify(&file.name)))
        .collect();
    let mut layouts: Vec<(Layout, &str)> = Vec::new();
    for (file, kind) in &classified {
        match kind {
            DataFile::Layout(layout) => layouts.push((*layout, &file.name)),
            DataFile::Unknown => plan.unknown.push(file.name.clone()),
            DataFile::TemporarySnapshot(_) | DataFile::TemporaryLayout(_) => {
                plan.obsolete.push(file.name.clone())
            }
            DataFile::Segment(_) | DataFile::Snapshot(_) => {}
        }
    }
    layouts.sort();
    let Some(&(layout, layout_file)) = layouts.last() else {
        let data: Vec<&FileInfo> = classified
            .iter()
            .filter(|(_, kind)| matches!(kind, DataFile::Segment(_) | DataFile::Snapshot(_)))
            .map(|(file, _)| *file)
            .collect();
        // A first start writes an empty snapshot per shard, then the first layout marker; a
        // crash between the two leaves only empty snapshots at sequence 0. They hold nothing:
        // debris of a start that did not finish, not data without a layout.
        let interrupted_first_start = data.iter().all(|file| {
            matches!(
                DataFile::classify(&file.name),
                DataFile::Snapshot(name) if name.sequence == 0
            ) && file.size <= SNAPSHOT_BYTES_MIN as u64
        });
        if interrupted_first_start {
            plan.obsolete
                .extend(data.iter().map(|file| file.name.clone()));
            plan.obsolete.sort();
            return Ok(plan);
        }
        return Err(RecoveryError::NoLayout {
            files: data.iter().map(|file| file.name.clone()).collect(),
        });
    };
    let same_generation: Vec<String> = layouts
        .iter()
        .filter(|(other, _)| other.generation == layout.generation)
        .map(|(_, file)| file.to_string())
        .collect();
    if same_generation.len() > 1 {
        return Err(RecoveryError::ConflictingLayouts {
            files: same_generation,
        });
    }
    for (other, file) in &layouts {
        if *other != layout {
            plan.obsolete.push(file.to_string());
        }
    }
    plan.shards = (0..layout.shard_count)
        .map(|shard| ShardPlan {
            shard,
            ..ShardPlan::default()
        })
        .collect();
    for (file, kind) in &classified {
        let (generation, shard) = match kind {
            DataFile::Segment(name) => (name.generation, name.shard),
            DataFile::Snapshot(name) => (name.generation, name.shard),
            _ => continue,
        };
        if generation != layout.generation {
            plan.obsolete.push(file.name.clone());
            continue;
        }
        let Some(shard_plan) = plan.shards.get_mut(shard as usize) else {
            return Err(RecoveryError::UnexpectedShard {
                file: file.name.clone(),
                shard_count: layout.shard_count,
            });
        };
        match kind {
            DataFile::Segment(name) => shard_plan.segments.push(SegmentFile {
                name: *name,
                file: file.name.clone(),
                size: file.size,
            }),
            // Too short to be complete (a rename only ever publishes a complete file, so the
            // disk lost part of it): recovery falls back to an older snapshot.
            DataFile::Snapshot(_) if file.size < SNAPSHOT_BYTES_MIN as u64 => {
                plan.obsolete.push(file.name.clone());
                plan.short_snapshots.push((file.name.clone(), file.size));
            }
            DataFile::Snapshot(name) => shard_plan.snapshots.push(SnapshotFile {
                name: *name,
                file: file.name.clone(),
                size: file.size,
            }),
            _ => {}
        }
    }
    for shard_plan in &mut plan.shards {
        shard_plan
            .segments
            .sort_by_key(|segment| segment.name.first_sequence);
        shard_plan
            .snapshots
            .sort_by_key(|snapshot| std::cmp::Reverse(snapshot.name.sequence));
    }
    plan.obsolete.sort();
    plan.layout = Some((layout, layout_file.to_owned()));
    Ok(plan)
}

impl ShardPlan {
    /// The segments to replay after a snapshot at `sequence` (0: no snapshot), in order.
    /// `after` names what the state before them came from, for the error message.
    pub fn segments_after(
        &self,
        sequence: u64,
        after: &str,
    ) -> Result<&[SegmentFile], RecoveryError> {
        let next = sequence.saturating_add(1);
        let start = self
            .segments
            .partition_point(|segment| segment.name.first_sequence <= next);
        match start.checked_sub(1) {
            Some(first) => Ok(&self.segments[first..]),
            None => match self.segments.first() {
                None => Ok(&[]),
                Some(segment) => Err(RecoveryError::MissingSegment {
                    shard: self.shard,
                    after: after.to_owned(),
                    file: segment.file.clone(),
                    expected: next,
                    found: segment.name.first_sequence,
                }),
            },
        }
    }

    /// The segments a snapshot at `sequence` makes unnecessary (every segment whose successor
    /// starts at or before `sequence + 1`). Never the last segment.
    pub fn segments_covered_by(&self, sequence: u64) -> Vec<&SegmentFile> {
        let next = sequence.saturating_add(1);
        self.segments
            .windows(2)
            .filter(|pair| pair[1].name.first_sequence <= next)
            .map(|pair| &pair[0])
            .collect()
    }
}

/// How many snapshots per shard trimming keeps. With two, a newest snapshot that turns out
/// damaged still leaves an older one and the log since it.
pub const SNAPSHOTS_KEPT: usize = 2;

impl ShardPlan {
    /// Files a trim may delete: snapshots beyond the newest [`SNAPSHOTS_KEPT`], and the segments
    /// the oldest kept snapshot covers. Nothing when fewer snapshots exist (the log since the
    /// start is then the fallback).
    pub fn trimmable(&self) -> Vec<String> {
        let Some(oldest_kept) = self.snapshots.get(SNAPSHOTS_KEPT - 1) else {
            return Vec::new();
        };
        let mut files: Vec<String> = self.snapshots[SNAPSHOTS_KEPT..]
            .iter()
            .map(|s| s.file.clone())
            .collect();
        files.extend(
            self.segments_covered_by(oldest_kept.name.sequence)
                .into_iter()
                .map(|segment| segment.file.clone()),
        );
        files
    }
}

/// A torn tail found (and to be cut) in the newest segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: String,
    /// Cut the file here.
    pub offset: u64,
    /// What the bytes from `offset` on are.
    pub reason: String,
    /// The segment holds no valid record at all: remove it rather than cut it (the next run's
    /// first segment may need its name).
    pub remove_file: bool,
}

/// What replaying one segment did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentReplay {
    /// Records applied (after the snapshot).
    pub applied: u64,
    /// Records skipped (the snapshot holds them).
    pub skipped: u64,
    pub torn_tail: Option<TornTail>,
}

/// Replays one shard's segments after its snapshot, checking sequences.
#[derive(Clone, Debug)]
pub struct ShardReplay {
    shard: u32,
    generation: u32,
    limits: EntryLimits,
    snapshot_sequence: u64,
    expected: u64,
    after: String,
    version_clock: u64,
}

impl ShardReplay {
    /// Replay for `shard` of `generation` after a snapshot at `snapshot_sequence` (0: none).
    /// `after` names the snapshot file (or says there was none) for error messages;
    /// `version_clock` is the snapshot's (header and entries).
    pub fn new(
        shard: u32,
        generation: u32,
        limits: EntryLimits,
        snapshot_sequence: u64,
        after: String,
        version_clock: u64,
    ) -> Self {
        ShardReplay {
            shard,
            generation,
            limits,
            snapshot_sequence,
            expected: snapshot_sequence.saturating_add(1),
            after,
            version_clock,
        }
    }

    /// The sequence the shard's log continues with.
    pub fn next_sequence(&self) -> u64 {
        self.expected
    }

    /// The largest version seen (snapshot and replayed records): the shard's version counter
    /// must start above it.
    pub fn version_clock(&self) -> u64 {
        self.version_clock
    }

    /// Replays the segment `segment` (whose whole content is `bytes`), handing every record
    /// after the snapshot to `apply`. `is_newest`: no later segment exists for this shard (only
    /// the newest segment may end in a torn tail).
    pub fn replay_segment<'a>(
        &mut self,
        segment: &SegmentFile,
        bytes: &'a [u8],
        is_newest: bool,
        mut apply: impl FnMut(u64, RecordRef<'a>),
    ) -> Result<SegmentReplay, RecoveryError> {
        let file = segment.file.clone();
        let corrupt = |offset: usize, reason: String| RecoveryError::Corrupt {
            file: file.clone(),
            offset: offset as u64,
            reason,
        };
        let mut replay = SegmentReplay::default();
        let header = match SegmentHeader::parse(bytes) {
            Ok(header) => header,
            Err(HeaderError::UnsupportedVersion { found, supported }) => {
                return Err(RecoveryError::UnsupportedVersion {
                    file: file.clone(),
                    found,
                    supported,
                })
            }
            Err(error) => {
                // A header is written with the segment's first records: if none of them is
                // valid either, this is an interrupted first write.
                let mut probe = RecordDecoder::new(
                    bytes,
                    SEGMENT_HEADER_BYTES,
                    segment.name.first_sequence,
                    self.limits,
                );
                let valid_record_follows =
                    matches!(probe.next_step(), Step::Record(_) | Step::Corrupt { .. });
                if is_newest && !valid_record_follows {
                    replay.torn_tail = Some(TornTail {
                        file: file.clone(),
                        offset: 0,
                        reason: format!(
                            "an incomplete segment header ({error}) and no record after it"
                        ),
                        remove_file: true,
                    });
                    return Ok(replay);
                }
                return Err(corrupt(0, format!("bad segment header: {error}")));
            }
        };
        if header != segment.name.header() {
            return Err(corrupt(
                0,
                format!("its header ({header:?}) does not match its name"),
            ));
        }
        if header.generation != self.generation || header.shard != self.shard {
            return Err(corrupt(
                0,
                format!(
                    "it does not belong to shard {} of generation {}",
                    self.shard, self.generation
                ),
            ));
        }
        if header.first_sequence > self.expected {
            return Err(RecoveryError::MissingSegment {
                shard: self.shard,
                after: self.after.clone(),
                file: file.clone(),
                expected: self.expected,
                found: header.first_sequence,
            });
        }
        let mut decoder = RecordDecoder::new(
            bytes,
            SEGMENT_HEADER_BYTES,
            header.first_sequence,
            self.limits,
        );
        let mut records_in_file = 0u64;
        loop {
            match decoder.next_step() {
                Step::Record(decoded) => {
                    records_in_file += 1;
                    if decoded.sequence < self.expected {
                        if decoded.sequence > self.snapshot_sequence {
                            return Err(corrupt(
                                decoded.offset,
                                format!(
                                    "record {} was already replayed from {} (segments overlap)",
                                    decoded.sequence, self.after
                                ),
                            ));
                        }
                        replay.skipped += 1;
                        continue;
                    }
                    debug_assert_eq!(decoded.sequence, self.expected);
                    if let Record::Put { version, .. } = decoded.record {
                        self.version_clock = self.version_clock.max(version);
                    }
                    apply(decoded.sequence, decoded.record);
                    self.expected = decoded.sequence + 1;
                    replay.applied += 1;
                }
                Step::End { .. } if records_in_file == 0 && is_newest => {
                    // A segment's first write holds its header and its first records; a header
                    // alone is that write torn right after it. Removed, since the next run's
                    // first segment needs the name.
                    replay.torn_tail = Some(TornTail {
                        file: file.clone(),
                        offset: SEGMENT_HEADER_BYTES as u64,
                        reason: "a segment header and no record after it".to_owned(),
                        remove_file: true,
                    });
                    break;
                }
                Step::End { .. } => break,
                Step::TornTail { offset, damage } => {
                    if !is_newest {
                        return Err(corrupt(
                            offset,
                            format!("{damage} at the end of a segment that is not the newest"),
                        ));
                    }
                    replay.torn_tail = Some(TornTail {
                        file: file.clone(),
                        offset: offset as u64,
                        reason: damage.to_string(),
                        remove_file: records_in_file == 0,
                    });
                    break;
                }
                Step::Corrupt { offset, corruption } => {
                    return Err(corrupt(offset, corruption.to_string()))
                }
            }
        }
        if records_in_file > 0 {
            self.after = file;
        }
        Ok(replay)
    }
}

/// One key's state while recovering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub value: Bytes,
    pub version: u64,
    /// Milliseconds since the Unix epoch; 0 = never.
    pub expires_at_ms: u64,
}

impl StoredEntry {
    /// Whether the entry has expired at `now_ms` (the shard's rule: a deadline at or before
    /// now has passed).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

/// The keys of a [`ShardImage`]: a hash map (recovery inserts every key of a snapshot and of
/// the log after it, so an ordered map's comparisons were most of a restart), seeded per process.
pub type ImageEntries = hashbrown::HashMap<Bytes, StoredEntry, foldhash::fast::RandomState>;

/// A shard's state being rebuilt from a snapshot and log records. Keys and values are copied
/// out of the file buffers into exact-size [`Bytes`]. No order: whoever needs one sorts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardImage {
    pub entries: ImageEntries,
    /// The shard's version counter must start above this.
    pub version_clock: u64,
}

impl ShardImage {
    pub fn insert_snapshot_entry(&mut self, entry: SnapshotEntryRef<'_>) {
        self.version_clock = self.version_clock.max(entry.version);
        self.entries.insert(
            Bytes::copy_from_slice(entry.key),
            StoredEntry {
                value: Bytes::copy_from_slice(entry.value),
                version: entry.version,
                expires_at_ms: entry.expires_at_ms,
            },
        );
    }

    /// Applies a log record (replacing whatever the key held).
    pub fn apply(&mut self, record: RecordRef<'_>) {
        match record {
            Record::Put {
                key,
                value,
                version,
                expires_at_ms,
            } => {
                self.version_clock = self.version_clock.max(version);
                self.entries.insert(
                    Bytes::copy_from_slice(key),
                    StoredEntry {
                        value: Bytes::copy_from_slice(value),
                        version,
                        expires_at_ms,
                    },
                );
            }
            Record::Delete { key } => {
                self.entries.remove(key);
            }
        }
    }
}

/// The shard that owns `key` among `shard_count` shards.
pub fn owner(key: &[u8], shard_count: u32) -> u32 {
    veddb_wire::shard_for_key(key, shard_count)
}

/// Redistributes the shards of an old layout onto `new_shard_count` shards by
/// [`veddb_wire::shard_for_key`], dropping entries expired at `now_ms`. Every new shard's version
/// clock is the largest old one, so no version is handed out twice for a key.
pub fn rehash(old: Vec<ShardImage>, new_shard_count: u32, now_ms: u64) -> Vec<ShardImage> {
    assert!(new_shard_count >= 1, "at least one shard");
    let version_clock = old
        .iter()
        .map(|image| image.version_clock)
        .max()
        .unwrap_or(0);
    let mut new: Vec<ShardImage> = (0..new_shard_count)
        .map(|_| ShardImage {
            entries: ImageEntries::default(),
            version_clock,
        })
        .collect();
    for image in old {
        for (key, entry) in image.entries {
            if entry.is_expired(now_ms) {
                continue;
            }
            let shard = owner(&key, new_shard_count) as usize;
            new[shard].entries.insert(key, entry);
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: String, size: u64) -> FileInfo {
        FileInfo { name, size }
    }

    fn segment(generation: u32, shard: u32, first: u64) -> String {
        SegmentName {
            generation,
            shard,
            first_sequence: first,
        }
        .to_string()
    }

    fn snapshot(generation: u32, shard: u32, sequence: u64) -> String {
        SnapshotName {
            generation,
            shard,
            sequence,
        }
        .to_string()
    }

    #[test]
    fn an_empty_directory_is_a_first_start() {
        assert_eq!(plan(&[]).unwrap(), Plan::default());
        let only_foreign = plan(&[info("notes.txt".into(), 3)]).unwrap();
        assert_eq!(only_foreign.layout, None);
        assert_eq!(only_foreign.unknown, ["notes.txt"]);
    }

    #[test]
    fn data_without_a_layout_is_refused() {
        let error = plan(&[info(segment(1, 0, 1), 100)]).unwrap_err();
        assert!(matches!(error, RecoveryError::NoLayout { .. }), "{error}");
        // A snapshot with entries is data, even at sequence 0 (a change of shard count whose
        // old layout marker was lost).
        let min = SNAPSHOT_BYTES_MIN as u64;
        let error = plan(&[info(snapshot(2, 0, 0), min + 40)]).unwrap_err();
        assert!(matches!(error, RecoveryError::NoLayout { .. }), "{error}");
        let error =
            plan(&[info(snapshot(1, 0, 0), min), info(snapshot(1, 1, 7), min)]).unwrap_err();
        assert!(matches!(error, RecoveryError::NoLayout { .. }), "{error}");
    }

    #[test]
    fn empty_snapshots_without_a_layout_are_an_interrupted_first_start() {
        let min = SNAPSHOT_BYTES_MIN as u64;
        let files = [
            info(snapshot(1, 0, 0), min),
            info(snapshot(1, 1, 0), min - 20),
            info(snapshot(1, 2, 0) + ".tmp", 10),
        ];
        let plan = plan(&files).unwrap();
        assert_eq!(plan.layout, None);
        let mut expected = vec![
            snapshot(1, 0, 0),
            snapshot(1, 1, 0),
            snapshot(1, 2, 0) + ".tmp",
        ];
        expected.sort();
        assert_eq!(plan.obsolete, expected);
    }

    #[test]
    fn the_newest_layout_wins_and_the_rest_is_obsolete() {
        let old = Layout {
            generation: 1,
            shard_count: 2,
        };
        let new = Layout {
            generation: 2,
            shard_count: 3,
        };
        let unfinished = 3;
        let files = vec![
            info(old.file_name(), 24),
            info(new.file_name(), 24),
            info(segment(1, 1, 1), 100),
            info(snapshot(1, 0, 5), 100),
            info(snapshot(2, 2, 0), 100),
            info(snapshot(2, 2, 9), 10), // too short to be complete
            info(segment(2, 2, 1), 100),
            info(segment(2, 2, 40), 100),
            info(segment(2, 0, 1), 100),
            info(segment(unfinished, 0, 1), 100),
            info(snapshot(2, 1, 3) + ".tmp", 100),
            info("lost+found".into(), 0),
        ];
        let plan = plan(&files).unwrap();
        assert_eq!(plan.layout, Some((new, new.file_name())));
        assert_eq!(plan.shards.len(), 3);
        assert_eq!(plan.shards[2].snapshots.len(), 1);
        assert_eq!(plan.shards[2].segments.len(), 2);
        assert_eq!(plan.shards[0].segments.len(), 1);
        assert!(plan.shards[1].segments.is_empty());
        let mut expected_obsolete = vec![
            old.file_name(),
            segment(1, 1, 1),
            snapshot(1, 0, 5),
            snapshot(2, 2, 9),
            segment(unfinished, 0, 1),
            snapshot(2, 1, 3) + ".tmp",
        ];
        expected_obsolete.sort();
        assert_eq!(plan.obsolete, expected_obsolete);
        assert_eq!(plan.unknown, ["lost+found"]);
    }

    #[test]
    fn a_file_for_a_shard_the_layout_lacks_is_refused() {
        let layout = Layout {
            generation: 1,
            shard_count: 2,
        };
        let error = plan(&[info(layout.file_name(), 24), info(segment(1, 2, 1), 50)]).unwrap_err();
        assert_eq!(
            error,
            RecoveryError::UnexpectedShard {
                file: segment(1, 2, 1),
                shard_count: 2
            }
        );
    }

    #[test]
    fn two_layouts_for_one_generation_conflict() {
        let a = Layout {
            generation: 1,
            shard_count: 2,
        };
        let b = Layout {
            generation: 1,
            shard_count: 3,
        };
        let error = plan(&[info(a.file_name(), 24), info(b.file_name(), 24)]).unwrap_err();
        assert!(matches!(error, RecoveryError::ConflictingLayouts { .. }));
    }

    fn shard_plan(firsts: &[u64]) -> ShardPlan {
        ShardPlan {
            shard: 0,
            snapshots: vec![],
            segments: firsts
                .iter()
                .map(|&first| SegmentFile {
                    name: SegmentName {
                        generation: 1,
                        shard: 0,
                        first_sequence: first,
                    },
                    file: segment(1, 0, first),
                    size: 100,
                })
                .collect(),
        }
    }

    #[test]
    fn segments_after_a_snapshot() {
        let plan = shard_plan(&[1, 100, 200]);
        let firsts = |sequence| -> Vec<u64> {
            plan.segments_after(sequence, "x")
                .unwrap()
                .iter()
                .map(|s| s.name.first_sequence)
                .collect()
        };
        assert_eq!(firsts(0), [1, 100, 200]);
        assert_eq!(firsts(98), [1, 100, 200]);
        assert_eq!(firsts(99), [100, 200]);
        assert_eq!(firsts(150), [100, 200]);
        assert_eq!(firsts(199), [200]);
        assert_eq!(firsts(10_000), [200]);
        let trimmed = shard_plan(&[100, 200]);
        let error = trimmed.segments_after(50, "snapshot s").unwrap_err();
        assert_eq!(
            error,
            RecoveryError::MissingSegment {
                shard: 0,
                after: "snapshot s".into(),
                file: segment(1, 0, 100),
                expected: 51,
                found: 100
            }
        );
        assert!(error.to_string().contains("51..99"), "{error}");
        assert!(shard_plan(&[]).segments_after(7, "x").unwrap().is_empty());
    }

    #[test]
    fn segments_covered_by_a_snapshot() {
        let plan = shard_plan(&[1, 100, 200]);
        let covered = |sequence| -> Vec<u64> {
            plan.segments_covered_by(sequence)
                .iter()
                .map(|s| s.name.first_sequence)
                .collect()
        };
        assert!(covered(0).is_empty());
        assert!(covered(98).is_empty());
        assert_eq!(covered(99), [1]);
        assert_eq!(covered(199), [1, 100]);
        assert_eq!(covered(u64::MAX), [1, 100]);
    }

    #[test]
    fn rehash_routes_by_the_wire_hash_and_drops_expired() {
        let mut a = ShardImage::default();
        let mut b = ShardImage::default();
        for i in 0..200u64 {
            let image = if i % 2 == 0 { &mut a } else { &mut b };
            image.apply(Record::Put {
                key: format!("key:{i}").as_bytes(),
                value: b"v",
                version: i + 1,
                expires_at_ms: if i % 10 == 0 {
                    500
                } else if i % 10 == 1 {
                    1500
                } else {
                    0
                },
            });
        }
        a.version_clock = 1_000;
        let new = rehash(vec![a, b], 3, 1000);
        let total: usize = new.iter().map(|image| image.entries.len()).sum();
        assert_eq!(total, 200 - 20);
        for (shard, image) in new.iter().enumerate() {
            assert_eq!(image.version_clock, 1_000);
            for (key, entry) in &image.entries {
                assert_eq!(veddb_wire::shard_for_key(key, 3) as usize, shard);
                assert!(!entry.is_expired(1000));
            }
        }
    }
}
