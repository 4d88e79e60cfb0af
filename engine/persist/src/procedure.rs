//! The disk procedures, written once against [`Storage`]: recover, commit a layout, write a
//! snapshot, trim, repair, and a synchronous driver for [`LogWriter`].
//!
//! They are synchronous and single-threaded. The engine can run [`recover`], [`commit_layout`]
//! and [`repair`] at start-up over a `std::fs` implementation of [`Storage`] (before its cores
//! run), and must reproduce [`write_snapshot`] and [`drive_log`] with its runtime's file I/O;
//! the order of operations here (which fsync before which rename) is the contract.

use std::io;

use crate::layout::{Layout, LAYOUT_BYTES};
use crate::limits::EntryLimits;
use crate::recovery::{
    plan, rehash, DataFile, Plan, RecoveryError, SegmentFile, ShardImage, ShardPlan, ShardReplay,
    SnapshotFile, TornTail, TEMPORARY_SUFFIX,
};
use crate::segment::{SegmentName, SEGMENT_HEADER_BYTES};
use crate::snapshot::{
    Frame, SnapshotDecoder, SnapshotEncodeError, SnapshotEncoder, SnapshotEntryRef, SnapshotError,
    SnapshotHeader, SnapshotSummary, ENTRY_BYTES_MIN, FRAME_HEAD_BYTES, SNAPSHOT_BYTES_MIN,
    SNAPSHOT_HEADER_BYTES, TRAILER_BODY_BYTES,
};
use crate::storage::{read_all, write_all_at, Storage, StorageError};
use crate::writer::{LogWriter, Settled};
use crate::HeaderError;

/// Most backups of one file `repair` keeps side by side (`<file>.bak`, `<file>.bak.1`, ...).
pub const REPAIR_BACKUPS_MAX: u32 = 1000;
/// Bytes the snapshot writer hands to one storage write.
pub const SNAPSHOT_WRITE_BYTES: usize = 1024 * 1024;

/// What recovery needs to know of the run it recovers for.
#[derive(Clone, Copy, Debug)]
pub struct RecoverOptions {
    /// `--cores` of this run.
    pub shard_count: u32,
    /// Now, in milliseconds since the Unix epoch: entries expired by then are not loaded.
    pub now_ms: u64,
    pub limits: EntryLimits,
}

/// Something recovery handled and the operator should hear about (log each as a warning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// The newest segment ended in a torn write; it was cut (or removed).
    TornTail(TornTail),
    /// A snapshot could not be used; recovery fell back to an older one (or the log).
    SnapshotRefused { file: String, reason: String },
    /// A file this crate did not write; left alone.
    UnknownFile { file: String },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::TornTail(torn) if torn.remove_file => write!(
                f,
                "{} holds no complete record ({}); removed it (a write interrupted by a crash)",
                torn.file, torn.reason
            ),
            Warning::TornTail(torn) => write!(
                f,
                "{} ends in a torn write at offset {} ({}); cut it there (a write interrupted by a crash)",
                torn.file, torn.offset, torn.reason
            ),
            Warning::SnapshotRefused { file, reason } => {
                write!(f, "snapshot {file} is unusable ({reason}); using an older snapshot and the log")
            }
            Warning::UnknownFile { file } => write!(f, "{file} is not a VedDB file; left alone"),
        }
    }
}

/// The recovered state.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// The layout this run uses: the directory's, or a new generation when the directory was
    /// empty or `--cores` changed. Then [`Recovered::commit_needed`] is set.
    pub layout: Layout,
    /// [`commit_layout`] must run before the shards accept writes.
    pub commit_needed: bool,
    /// One image per shard of `layout`, expired entries dropped.
    pub shards: Vec<ShardImage>,
    /// Per shard of `layout`: the sequence its [`LogWriter`] starts at.
    pub next_sequences: Vec<u64>,
    pub warnings: Vec<Warning>,
    /// Obsolete files removed (temporary files, other generations).
    pub removed: Vec<String>,
}

fn storage_error<'a>(
    file: &'a str,
    operation: &'static str,
) -> impl Fn(io::Error) -> StorageError + 'a {
    move |error| StorageError::new(file, operation, &error)
}

/// Loads the data directory: the layout, every shard's newest usable snapshot and the log after
/// it, re-hashed onto `options.shard_count` shards if that changed. Cuts torn tails and removes
/// obsolete files on the way (both with warnings); changes nothing else. On corruption it stops
/// with an error that names the file and offset (see [`repair`]).
pub fn recover<S: Storage>(
    storage: &mut S,
    options: &RecoverOptions,
) -> Result<Recovered, RecoveryError> {
    recover_with(storage, options, &mut |storage, shards, layout, options| {
        shards
            .iter()
            .map(|shard_plan| {
                let mut warnings = Vec::new();
                load_shard(storage, shard_plan, layout, options, &mut warnings)
                    .map(|(image, next)| (image, next, warnings))
            })
            .collect()
    })
}

/// [`recover`], loading the shards on up to `threads` threads at once, each through its own
/// storage from `fork` (the same directory). What it finds, and which error it reports first
/// (the lowest shard's), are the same as [`recover`]'s.
pub fn recover_parallel<S, F>(
    storage: &mut S,
    options: &RecoverOptions,
    threads: usize,
    fork: F,
) -> Result<Recovered, RecoveryError>
where
    S: Storage,
    F: Fn() -> Box<dyn Storage + Send> + Sync,
{
    recover_with(storage, options, &mut |_, shards, layout, options| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<ShardLoad>>> =
            shards.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..threads.clamp(1, shards.len().max(1)) {
                scope.spawn(|| {
                    let mut storage = fork();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(shard_plan) = shards.get(index) else {
                            break;
                        };
                        let mut warnings = Vec::new();
                        let loaded =
                            load_shard(&mut *storage, shard_plan, layout, options, &mut warnings)
                                .map(|(image, next)| (image, next, warnings));
                        let failed = loaded.is_err();
                        *results[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(loaded);
                        if failed {
                            // The others finish their shards; no new ones start.
                            next.store(shards.len(), std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        // Shards after a failure may not have run: the lowest failed shard decides, as in the
        // sequential order.
        let mut loaded = Vec::with_capacity(shards.len());
        for result in results {
            match result.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(Ok(shard)) => loaded.push(Ok(shard)),
                Some(Err(error)) => {
                    loaded.push(Err(error));
                    break;
                }
                None => break,
            }
        }
        loaded
    })
}

/// One shard's image, the sequence its log goes on at, and what recovery warned about.
type ShardLoad = Result<(ShardImage, u64, Vec<Warning>), RecoveryError>;
/// Loads the shards of a plan (in order, or not, but answering in shard order).
type LoadShards<'a, S> =
    dyn FnMut(&mut S, &[ShardPlan], Layout, &RecoverOptions) -> Vec<ShardLoad> + 'a;

fn recover_with<S: Storage>(
    storage: &mut S,
    options: &RecoverOptions,
    load_shards: &mut LoadShards<'_, S>,
) -> Result<Recovered, RecoveryError> {
    assert!(options.shard_count >= 1, "at least one shard");
    let files = storage
        .list()
        .map_err(storage_error("the data directory", "list"))?;
    let plan = plan(&files)?;
    let mut warnings: Vec<Warning> = plan
        .unknown
        .iter()
        .map(|file| Warning::UnknownFile { file: file.clone() })
        .collect();
    // Published snapshots too short to be complete: the disk lost part of them. The plan drops
    // them; the operator hears of it.
    warnings.extend(
        plan.short_snapshots
            .iter()
            .map(|(file, size)| Warning::SnapshotRefused {
                file: file.clone(),
                reason: format!(
                    "{size} bytes, shorter than any complete snapshot ({SNAPSHOT_BYTES_MIN})"
                ),
            }),
    );
    let mut recovered = match &plan.layout {
        None => Recovered {
            layout: Layout {
                generation: 1,
                shard_count: options.shard_count,
            },
            commit_needed: true,
            shards: vec![ShardImage::default(); options.shard_count as usize],
            next_sequences: vec![1; options.shard_count as usize],
            warnings: Vec::new(),
            removed: Vec::new(),
        },
        Some((layout, file)) => load_generation(
            storage,
            &plan,
            *layout,
            file,
            options,
            &mut warnings,
            load_shards,
        )?,
    };
    for file in &plan.obsolete {
        storage
            .remove(file)
            .map_err(storage_error(file, "remove"))?;
        recovered.removed.push(file.clone());
    }
    if !plan.obsolete.is_empty() {
        storage
            .fsync_dir()
            .map_err(storage_error("the data directory", "fsync"))?;
    }
    recovered.warnings.extend(warnings);
    Ok(recovered)
}

fn load_generation<S: Storage>(
    storage: &mut S,
    plan: &Plan,
    layout: Layout,
    layout_file: &str,
    options: &RecoverOptions,
    warnings: &mut Vec<Warning>,
    load_shards: &mut LoadShards<'_, S>,
) -> Result<Recovered, RecoveryError> {
    let content = read_all(storage, layout_file).map_err(storage_error(layout_file, "read"))?;
    let damaged = |problem: String| RecoveryError::LayoutDamaged {
        file: layout_file.to_owned(),
        problem,
    };
    match Layout::parse(&content) {
        Ok(parsed) if parsed == layout && content.len() == LAYOUT_BYTES => {}
        Ok(parsed) => {
            return Err(damaged(format!(
                "it holds {parsed:?}, its name says {layout:?}"
            )))
        }
        Err(HeaderError::UnsupportedVersion { found, supported }) => {
            return Err(RecoveryError::UnsupportedVersion {
                file: layout_file.to_owned(),
                found,
                supported,
            })
        }
        Err(error) => return Err(damaged(error.to_string())),
    }
    let mut images = Vec::with_capacity(plan.shards.len());
    let mut next_sequences = Vec::with_capacity(plan.shards.len());
    for loaded in load_shards(storage, &plan.shards, layout, options) {
        let (image, next_sequence, shard_warnings) = loaded?;
        warnings.extend(shard_warnings);
        images.push(image);
        next_sequences.push(next_sequence);
    }
    if layout.shard_count == options.shard_count {
        for image in &mut images {
            image
                .entries
                .retain(|_, entry| !entry.is_expired(options.now_ms));
        }
        return Ok(Recovered {
            layout,
            commit_needed: false,
            shards: images,
            next_sequences,
            warnings: Vec::new(),
            removed: Vec::new(),
        });
    }
    let generation = layout.generation.checked_add(1).ok_or_else(|| {
        damaged("the generation number is exhausted; start from a fresh data directory".to_owned())
    })?;
    Ok(Recovered {
        layout: Layout {
            generation,
            shard_count: options.shard_count,
        },
        commit_needed: true,
        shards: rehash(images, options.shard_count, options.now_ms),
        next_sequences: vec![1; options.shard_count as usize],
        warnings: Vec::new(),
        removed: Vec::new(),
    })
}

/// Loads one shard: its newest usable snapshot, then the log after it.
fn load_shard<S: Storage + ?Sized>(
    storage: &mut S,
    shard_plan: &ShardPlan,
    layout: Layout,
    options: &RecoverOptions,
    warnings: &mut Vec<Warning>,
) -> Result<(ShardImage, u64), RecoveryError> {
    let mut start = None;
    for snapshot in &shard_plan.snapshots {
        match load_snapshot(storage, snapshot, layout, options.limits)? {
            Ok((image, header)) => {
                start = Some((image, header, snapshot.file.clone()));
                break;
            }
            Err(error) => warnings.push(Warning::SnapshotRefused {
                file: snapshot.file.clone(),
                reason: error.to_string(),
            }),
        }
    }
    let (mut image, sequence, after) = match start {
        Some((image, header, file)) => (image, header.sequence, format!("snapshot {file}")),
        None if shard_plan.snapshots.is_empty() => {
            (ShardImage::default(), 0, "the start of the log".to_owned())
        }
        None => (
            ShardImage::default(),
            0,
            "the start of the log (every snapshot was unusable)".to_owned(),
        ),
    };
    let segments = shard_plan.segments_after(sequence, &after)?;
    let mut replay = ShardReplay::new(
        shard_plan.shard,
        layout.generation,
        options.limits,
        sequence,
        after,
        image.version_clock,
    );
    // Replay from the first segment the snapshot needs to the newest. The newest may turn out
    // to hold no record at all (a torn first write): it is removed, and the segment before it
    // becomes the newest, held to the same rules: removed too if it holds no record either
    // (the next run creates its first segment under the name of its next sequence), and
    // replayed if the snapshot seemed not to need it, since it may hold records after the
    // snapshot that the removed segment's name seemed to cover. The next recovery, which no
    // longer sees the removed files, must read the same data and find nothing left to cut.
    let all = &shard_plan.segments;
    let mut start = all.len() - segments.len();
    // Exclusive end of the segments still in the directory.
    let mut end = all.len();
    // Per replayed segment (from `start`): whether it holds a record.
    let mut holds_records: Vec<bool> = Vec::new();
    let mut index = start;
    while index < end {
        let segment = &all[index];
        let bytes =
            read_all(storage, &segment.file).map_err(storage_error(&segment.file, "read"))?;
        let is_newest = index + 1 == end;
        let result =
            replay.replay_segment(segment, &bytes, is_newest, |_, record| image.apply(record))?;
        holds_records.push(result.applied + result.skipped > 0);
        let Some(torn) = result.torn_tail else {
            index += 1;
            continue;
        };
        cut_torn_tail(storage, &torn)?;
        let removed = torn.remove_file;
        warnings.push(Warning::TornTail(torn));
        if !removed {
            break;
        }
        end = index;
        holds_records.pop();
        while end > start && !holds_records[end - 1 - start] {
            end -= 1;
            holds_records.pop();
            let torn = TornTail {
                file: all[end].file.clone(),
                offset: SEGMENT_HEADER_BYTES as u64,
                reason: "a segment header and no record after it, and no later segment".to_owned(),
                remove_file: true,
            };
            cut_torn_tail(storage, &torn)?;
            warnings.push(Warning::TornTail(torn));
        }
        if end == start && start > 0 {
            // Every segment replayed so far is gone: the one before them is the newest now.
            start -= 1;
            index = start;
            continue;
        }
        break;
    }
    image.version_clock = image.version_clock.max(replay.version_clock());
    Ok((image, replay.next_sequence()))
}

fn cut_torn_tail<S: Storage + ?Sized>(
    storage: &mut S,
    torn: &TornTail,
) -> Result<(), StorageError> {
    let file = torn.file.as_str();
    if torn.remove_file {
        storage
            .remove(file)
            .map_err(storage_error(file, "remove"))?;
        storage
            .fsync_dir()
            .map_err(storage_error("the data directory", "fsync"))
    } else {
        storage
            .truncate(file, torn.offset)
            .map_err(storage_error(file, "truncate"))?;
        storage.fsync(file).map_err(storage_error(file, "fsync"))
    }
}

/// Decodes a snapshot frame by frame into a fresh image. The outer error is fatal (storage,
/// unsupported version); the inner one makes recovery fall back to an older snapshot.
fn load_snapshot<S: Storage + ?Sized>(
    storage: &mut S,
    snapshot: &SnapshotFile,
    layout: Layout,
    limits: EntryLimits,
) -> Result<Result<(ShardImage, SnapshotHeader), SnapshotError>, RecoveryError> {
    let file = snapshot.file.as_str();
    let read = |storage: &mut S, offset: u64, length: usize| {
        storage
            .read_at(file, offset, length)
            .map_err(|error| RecoveryError::Storage(StorageError::new(file, "read", &error)))
    };
    let size = storage.open(file).map_err(storage_error(file, "open"))?;
    let header_bytes = read(storage, 0, SNAPSHOT_HEADER_BYTES)?;
    let mut decoder = match SnapshotDecoder::new(&header_bytes, limits) {
        Ok(decoder) => decoder,
        Err(SnapshotError::Header(HeaderError::UnsupportedVersion { found, supported })) => {
            return Err(RecoveryError::UnsupportedVersion {
                file: file.to_owned(),
                found,
                supported,
            })
        }
        Err(error) => return Ok(Err(error)),
    };
    let header = *decoder.header();
    if header.name() != snapshot.name || header.shard_count != layout.shard_count {
        return Ok(Err(SnapshotError::HeaderMismatch {
            detail: format!(
                "generation {}, shard {}, sequence {}, {} shards; its name and the layout say generation {}, shard {}, sequence {}, {} shards",
                header.generation,
                header.shard,
                header.sequence,
                header.shard_count,
                snapshot.name.generation,
                snapshot.name.shard,
                snapshot.name.sequence,
                layout.shard_count
            ),
        }));
    }
    let mut image = ShardImage {
        version_clock: header.version_clock,
        ..ShardImage::default()
    };
    // Room for every entry at once (growing the map step by step was a good part of a
    // restart): the trailer's entry count, only a hint here (checked at the end), bounded by
    // what the file's size can hold.
    if size >= SNAPSHOT_BYTES_MIN as u64 {
        let at = size - TRAILER_BODY_BYTES as u64;
        if let Ok(count) = read(storage, at, 8) {
            if let Ok(count) = <[u8; 8]>::try_from(count.as_slice()) {
                let bound = size / ENTRY_BYTES_MIN as u64;
                image
                    .entries
                    .reserve(u64::from_le_bytes(count).min(bound) as usize);
            }
        }
    }
    loop {
        let offset = decoder.offset();
        let head_bytes = read(storage, offset, FRAME_HEAD_BYTES)?;
        let head = match decoder.frame_head(&head_bytes) {
            Ok(head) => head,
            Err(error) => return Ok(Err(error)),
        };
        let body = read(storage, decoder.offset(), head.body_length())?;
        match decoder.frame(head, &body) {
            Ok(Frame::Chunk(entries)) => entries
                .into_iter()
                .for_each(|entry| image.insert_snapshot_entry(entry)),
            Ok(Frame::End(summary)) if summary.bytes == size => return Ok(Ok((image, header))),
            Ok(Frame::End(summary)) => {
                return Ok(Err(SnapshotError::TrailingBytes {
                    offset: summary.bytes,
                }))
            }
            Err(error) => return Ok(Err(error)),
        }
    }
}

/// Makes a new generation durable (after [`recover`] said `commit_needed`): a snapshot of every
/// shard at sequence 0 (written like [`write_snapshot`]), then the layout marker (temporary file,
/// fsync, rename, directory fsync), then the files of every other generation are removed. A
/// crash before the marker's rename leaves the old generation in force; after it, the new one.
pub fn commit_layout<S: Storage>(
    storage: &mut S,
    recovered: &mut Recovered,
    limits: EntryLimits,
    now_ms: u64,
) -> Result<(), SnapshotWriteError> {
    if !recovered.commit_needed {
        return Ok(());
    }
    let layout = recovered.layout;
    for (shard, image) in recovered.shards.iter().enumerate() {
        let header = SnapshotHeader {
            generation: layout.generation,
            shard: shard as u32,
            shard_count: layout.shard_count,
            sequence: 0,
            version_clock: image.version_clock,
            created_at_ms: now_ms,
        };
        // Snapshots hold their keys in order; the image has none.
        let mut sorted: Vec<(&bytes::Bytes, &crate::recovery::StoredEntry)> =
            image.entries.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let entries = sorted.into_iter().map(|(key, entry)| SnapshotEntryRef {
            key,
            value: &entry.value,
            version: entry.version,
            expires_at_ms: entry.expires_at_ms,
        });
        write_snapshot(storage, &header, limits, entries)?;
    }
    let marker = layout.file_name();
    let temporary = format!("{marker}{TEMPORARY_SUFFIX}");
    publish(storage, &temporary, &marker, &layout.encode())?;
    let files = storage
        .list()
        .map_err(storage_error("the data directory", "list"))?;
    let mut removed_any = false;
    for file in files {
        let generation = match DataFile::classify(&file.name) {
            DataFile::Segment(name) => name.generation,
            DataFile::Snapshot(name) | DataFile::TemporarySnapshot(name) => name.generation,
            DataFile::Layout(other) | DataFile::TemporaryLayout(other) => other.generation,
            DataFile::Unknown => continue,
        };
        if generation != layout.generation {
            storage
                .remove(&file.name)
                .map_err(storage_error(&file.name, "remove"))?;
            recovered.removed.push(file.name);
            removed_any = true;
        }
    }
    if removed_any {
        storage
            .fsync_dir()
            .map_err(storage_error("the data directory", "fsync"))?;
    }
    recovered.commit_needed = false;
    Ok(())
}

/// Writes a small file atomically: `temporary`, fsync, rename to `name`, directory fsync.
fn publish<S: Storage>(
    storage: &mut S,
    temporary: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let result = (|| {
        if storage.open(temporary).is_ok() {
            storage
                .remove(temporary)
                .map_err(storage_error(temporary, "remove"))?;
        }
        storage
            .create(temporary)
            .map_err(storage_error(temporary, "create"))?;
        write_all_at(storage, temporary, 0, bytes).map_err(storage_error(temporary, "write"))?;
        storage
            .fsync(temporary)
            .map_err(storage_error(temporary, "fsync"))?;
        storage
            .rename(temporary, name)
            .map_err(storage_error(temporary, "rename"))?;
        storage
            .fsync_dir()
            .map_err(storage_error("the data directory", "fsync"))
    })();
    if result.is_err() {
        let _ = storage.remove(temporary);
    }
    result
}

/// Why a snapshot could not be written. The temporary file is removed (best effort); the
/// previous snapshot stays in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotWriteError {
    Storage(StorageError),
    Entry(SnapshotEncodeError),
}

impl std::fmt::Display for SnapshotWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotWriteError::Storage(error) => write!(f, "snapshot not written: {error}"),
            SnapshotWriteError::Entry(error) => write!(f, "snapshot not written: {error}"),
        }
    }
}

impl std::error::Error for SnapshotWriteError {}

impl From<StorageError> for SnapshotWriteError {
    fn from(error: StorageError) -> Self {
        SnapshotWriteError::Storage(error)
    }
}

/// Writes a snapshot: to `<name>.snap.tmp` in pieces of about [`SNAPSHOT_WRITE_BYTES`] (bounded
/// memory), fsync, rename to `<name>.snap`, directory fsync. Entries must come in increasing key
/// order. Then the caller may [`trim`].
pub fn write_snapshot<'a, S: Storage>(
    storage: &mut S,
    header: &SnapshotHeader,
    limits: EntryLimits,
    entries: impl IntoIterator<Item = SnapshotEntryRef<'a>>,
) -> Result<SnapshotSummary, SnapshotWriteError> {
    let name = header.name();
    let temporary = name.temporary();
    let final_name = name.to_string();
    let result = (|| {
        if storage.open(&temporary).is_ok() {
            storage
                .remove(&temporary)
                .map_err(storage_error(&temporary, "remove"))?;
        }
        storage
            .create(&temporary)
            .map_err(storage_error(&temporary, "create"))?;
        let mut out = Vec::with_capacity(SNAPSHOT_WRITE_BYTES);
        let mut offset = 0u64;
        let mut encoder = SnapshotEncoder::new(header, limits, &mut out);
        for entry in entries {
            encoder
                .push(entry, &mut out)
                .map_err(SnapshotWriteError::Entry)?;
            if out.len() >= SNAPSHOT_WRITE_BYTES {
                write_all_at(storage, &temporary, offset, &out)
                    .map_err(storage_error(&temporary, "write"))?;
                offset += out.len() as u64;
                out.clear();
            }
        }
        let summary = encoder.finish(&mut out);
        write_all_at(storage, &temporary, offset, &out)
            .map_err(storage_error(&temporary, "write"))?;
        storage
            .fsync(&temporary)
            .map_err(storage_error(&temporary, "fsync"))?;
        storage
            .rename(&temporary, &final_name)
            .map_err(storage_error(&temporary, "rename"))?;
        storage
            .fsync_dir()
            .map_err(storage_error("the data directory", "fsync"))?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = storage.remove(&temporary);
    }
    result
}

/// Deletes what the snapshots of `shard` make unnecessary ([`ShardPlan::trimmable`]: snapshots
/// beyond the newest two, segments older than the older of those), then fsyncs the directory.
/// The names of the deleted files.
pub fn trim<S: Storage>(storage: &mut S, shard: u32) -> Result<Vec<String>, RecoveryError> {
    let files = storage
        .list()
        .map_err(storage_error("the data directory", "list"))?;
    let plan = plan(&files)?;
    let Some(shard_plan) = plan.shards.get(shard as usize) else {
        return Ok(Vec::new());
    };
    let trimmable = shard_plan.trimmable();
    for file in &trimmable {
        storage
            .remove(file)
            .map_err(storage_error(file, "remove"))?;
    }
    if !trimmable.is_empty() {
        storage
            .fsync_dir()
            .map_err(storage_error("the data directory", "fsync"))?;
    }
    Ok(trimmable)
}

/// One change `repair` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairAction {
    /// `file` was copied to `backup` before being changed.
    BackedUp { file: String, backup: String },
    /// `file` was cut at `offset` (the first bad record).
    Truncated { file: String, offset: u64 },
    /// `file` (a segment after the cut, or one with no valid record) was moved to `backup`.
    MovedAside { file: String, backup: String },
}

impl std::fmt::Display for RepairAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepairAction::BackedUp { file, backup } => write!(f, "copied {file} to {backup}"),
            RepairAction::Truncated { file, offset } => write!(f, "cut {file} at offset {offset}"),
            RepairAction::MovedAside { file, backup } => write!(f, "moved {file} to {backup}"),
        }
    }
}

/// `veddb-server --repair`: runs recovery and, while it stops on a corrupt segment or a missing
/// one, cuts that shard's log at the first bad record (the file copied to a backup first; later
/// segments of the shard moved aside, since they would follow a gap), then tries again. Records
/// after the cut are lost; everything before it is kept. Errors it cannot repair (layout
/// markers, versions, storage, a gap right after the snapshot, which would leave none of the
/// log) are returned as they are. Backups are named `<file>.bak[.N]`, which
/// recovery leaves alone.
pub fn repair<S: Storage>(
    storage: &mut S,
    options: &RecoverOptions,
) -> Result<(Recovered, Vec<RepairAction>), RecoveryError> {
    let mut actions = Vec::new();
    let rounds_max = storage
        .list()
        .map_err(storage_error("the data directory", "list"))?
        .len()
        + 1;
    for _ in 0..rounds_max {
        let (file, cut_at) = match recover(storage, options) {
            Ok(recovered) => return Ok((recovered, actions)),
            Err(RecoveryError::Corrupt { file, offset, .. }) => (file, Some(offset)),
            // A gap after a segment: keep the log up to it. A gap right after the snapshot (or
            // the start) would leave nothing of the log: not repaired automatically.
            Err(RecoveryError::MissingSegment { file, after, .. })
                if SegmentName::parse(&after).is_some() =>
            {
                (file, None)
            }
            Err(error) => return Err(error),
        };
        let Some(DataFile::Segment(bad)) = Some(DataFile::classify(&file)) else {
            return Err(RecoveryError::Corrupt {
                file,
                offset: cut_at.unwrap_or(0),
                reason: "not a segment: repair cuts logs only".to_owned(),
            });
        };
        let files = storage
            .list()
            .map_err(storage_error("the data directory", "list"))?;
        let mut later: Vec<SegmentFile> = files
            .iter()
            .filter_map(|info| match DataFile::classify(&info.name) {
                DataFile::Segment(name)
                    if name.generation == bad.generation
                        && name.shard == bad.shard
                        && name.first_sequence > bad.first_sequence =>
                {
                    Some(SegmentFile {
                        name,
                        file: info.name.clone(),
                        size: info.size,
                    })
                }
                _ => None,
            })
            .collect();
        later.sort_by_key(|segment| segment.name.first_sequence);
        match cut_at {
            Some(offset) if offset > SEGMENT_HEADER_BYTES as u64 => {
                let backup = free_backup_name(storage, &file)?;
                let bytes = read_all(storage, &file).map_err(storage_error(&file, "read"))?;
                publish(
                    storage,
                    &format!("{backup}{TEMPORARY_SUFFIX}"),
                    &backup,
                    &bytes,
                )?;
                actions.push(RepairAction::BackedUp {
                    file: file.clone(),
                    backup,
                });
                storage
                    .truncate(&file, offset)
                    .map_err(storage_error(&file, "truncate"))?;
                storage
                    .fsync(&file)
                    .map_err(storage_error(&file, "fsync"))?;
                actions.push(RepairAction::Truncated { file, offset });
            }
            _ => later.insert(
                0,
                SegmentFile {
                    name: bad,
                    file,
                    size: 0,
                },
            ),
        }
        for segment in later {
            let backup = free_backup_name(storage, &segment.file)?;
            storage
                .rename(&segment.file, &backup)
                .map_err(storage_error(&segment.file, "rename"))?;
            actions.push(RepairAction::MovedAside {
                file: segment.file,
                backup,
            });
        }
        storage
            .fsync_dir()
            .map_err(storage_error("the data directory", "fsync"))?;
    }
    recover(storage, options).map(|recovered| (recovered, actions))
}

fn free_backup_name<S: Storage>(storage: &mut S, file: &str) -> Result<String, StorageError> {
    for n in 0..REPAIR_BACKUPS_MAX {
        let name = if n == 0 {
            format!("{file}.bak")
        } else {
            format!("{file}.bak.{n}")
        };
        if storage.open(&name).is_err() {
            return Ok(name);
        }
    }
    Err(StorageError {
        file: file.to_owned(),
        operation: "back up",
        kind: io::ErrorKind::AlreadyExists,
        os_error: None,
        message: format!("{REPAIR_BACKUPS_MAX} backups exist already; remove old ones"),
    })
}

/// Runs `writer` against `storage` until it has nothing to do now: every due write and fsync is
/// performed synchronously, in the order the writer asks. The tickets settled on the way, in
/// order. The engine's core loop does the same with its runtime's asynchronous file I/O
/// (a write may then run while an fsync runs).
pub fn drive_log<S: Storage>(writer: &mut LogWriter, storage: &mut S, now_ms: u64) -> Vec<Settled> {
    let mut settled = Vec::new();
    loop {
        let mut progressed = false;
        if let Some(batch) = writer.poll_write() {
            let result = if batch.create {
                storage.create(&batch.file)
            } else {
                Ok(())
            }
            .and_then(|()| storage.write_at(&batch.file, batch.offset, &batch.bytes));
            settled.push(writer.complete_write(batch, result));
            progressed = true;
        }
        if let Some(request) = writer.poll_fsync(now_ms) {
            let result = storage.fsync(&request.file).and_then(|()| {
                if request.directory {
                    storage.fsync_dir()
                } else {
                    Ok(())
                }
            });
            settled.push(writer.complete_fsync(result));
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    settled.retain(|settled| !settled.is_empty() || settled.outcome.is_err());
    settled
}
