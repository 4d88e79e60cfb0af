//! [`LogWriter`]: one shard's write-ahead log with group commit, as a pure state machine.
//!
//! The writer does no I/O. The core that owns the shard drives it:
//!
//! ```text
//!  after applying a mutation:   ticket = writer.append(&record)?      (answer waits on ticket)
//!  in the core loop:            while let Some(batch) = writer.poll_write() { submit write }
//!                               on completion: settled = writer.complete_write(batch, result)
//!                               if let Some(sync) = writer.poll_fsync(now_ms) { submit fsync }
//!                               on completion: settled = writer.complete_fsync(result)
//!                               answer every ticket in `settled` (ok or the failure)
//!                               park no longer than writer.next_deadline_ms()
//! ```
//!
//! **Group commit**: every record appended while a write or an fsync is in flight joins the
//! next batch, and one fsync acknowledges every record written before it was issued. At most
//! one write and one fsync are in flight at a time; a write may run while an fsync runs.
//!
//! **Policies** ([`FsyncPolicy`]):
//! - `Always`: a ticket is settled after an fsync that covers its record completed. An
//!   acknowledged write survives a power loss.
//! - `EverySec`: a ticket is settled when its record is written (in the OS page cache); an fsync
//!   is issued at most once per [`EVERYSEC_INTERVAL_MS`]. A process crash loses nothing
//!   acknowledged; a power loss loses at most about the last second (plus the fsync's duration).
//! - `No`: settled when written; fsync only when a segment is closed and on [`LogWriter::close`].
//!   A power loss loses what the OS had not written back (typically up to 30 s on Linux).
//!
//! **Segments**: a new segment starts when the current one holds at least
//! `segment_bytes_target` bytes. Before the first write into a new segment the old one is
//! fsynced (under every policy), so only the newest segment can ever have a torn tail. The
//! first fsync of a new segment also fsyncs the directory (`FsyncRequest::directory`), so its
//! name survives a crash before any record in it is acknowledged.
//!
//! **Failure**: after a failed write (ENOSPC, EIO, ...) or a failed fsync, the writer stops:
//! every ticket not yet settled is settled with [`LogFailure`], every later `append` fails with
//! it, and nothing more is written. An fsync is never retried: after a failed fsync Linux may
//! already have dropped the dirty pages and a second fsync would report success for data that
//! is gone. The shard must refuse writes until a restart, which recovers from the files.

use std::io;

use crate::limits::{EntryLimits, EntryProblem};
use crate::record::Record;
use crate::segment::{SegmentHeader, SegmentName, SEGMENT_HEADER_BYTES};

/// Interval between fsyncs under [`FsyncPolicy::EverySec`].
pub const EVERYSEC_INTERVAL_MS: u64 = 1000;
/// Default size at which a segment is closed and a new one started.
pub const SEGMENT_BYTES_TARGET_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest allowed `segment_bytes_target` (small values are for tests).
pub const SEGMENT_BYTES_TARGET_MIN: u64 = 1024;
/// Default bytes buffered (appended, not yet written) past which [`LogWriter::accepts_writes`]
/// says no, so the shard stops taking writes until the disk catches up.
pub const LOG_BUFFER_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_TARGET_MIN > SEGMENT_HEADER_BYTES as u64);
const _: () = assert!(SEGMENT_BYTES_TARGET_MIN <= SEGMENT_BYTES_TARGET_DEFAULT);

/// When an append is acknowledged and how often the log is fsynced (`--fsync`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge after fsync (group commit).
    #[default]
    Always,
    /// Acknowledge after write; fsync once a second.
    EverySec,
    /// Acknowledge after write; leave flushing to the OS.
    No,
}

/// Configuration of one shard's log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub generation: u32,
    pub shard: u32,
    pub policy: FsyncPolicy,
    /// A segment holding at least this many bytes is closed before the next write.
    pub segment_bytes_target: u64,
    /// Buffered bytes past which [`LogWriter::accepts_writes`] is false.
    pub buffer_bytes_max: usize,
    pub limits: EntryLimits,
}

impl LogConfig {
    pub fn new(generation: u32, shard: u32, policy: FsyncPolicy) -> Self {
        LogConfig {
            generation,
            shard,
            policy,
            segment_bytes_target: SEGMENT_BYTES_TARGET_DEFAULT,
            buffer_bytes_max: LOG_BUFFER_BYTES_MAX_DEFAULT,
            limits: EntryLimits::default(),
        }
    }
}

/// Stands for one appended record until it is settled; its value is the record's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// A write to submit: `bytes` at `offset` of `file` (creating the file first when `create`).
/// Hand it back to [`LogWriter::complete_write`] with the result (the buffer is reused).
#[derive(Debug)]
pub struct WriteBatch {
    pub file: String,
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// Create `file` (it must not exist) before writing.
    pub create: bool,
    last_sequence: u64,
}

/// An fsync to submit: `file`, then the directory when `directory`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsyncRequest {
    pub file: String,
    pub directory: bool,
}

/// Why the log stopped. Every later write on the shard fails with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFailure {
    pub shard: u32,
    /// `"write"` or `"fsync"`.
    pub operation: &'static str,
    pub file: String,
    pub kind: io::ErrorKind,
    pub os_error: Option<i32>,
    pub message: String,
}

impl std::fmt::Display for LogFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the write-ahead log of shard {} stopped: {} of {} failed: {}; this shard refuses writes \
             until the server is restarted (check the disk: space, errors in the kernel log)",
            self.shard, self.operation, self.file, self.message
        )
    }
}

impl std::error::Error for LogFailure {}

/// Why an append was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The log stopped earlier; the shard must refuse writes.
    Stopped(LogFailure),
    /// [`LogWriter::close`] was called.
    Closed,
    /// The record's key or value is refused by the limits.
    Entry(EntryProblem),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Stopped(failure) => failure.fmt(f),
            AppendError::Closed => {
                write!(f, "the write-ahead log is closed (the server is stopping)")
            }
            AppendError::Entry(problem) => write!(f, "record refused: {problem}"),
        }
    }
}

impl std::error::Error for AppendError {}

/// Tickets `first..end` (sequences) reached their outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub first: u64,
    pub end: u64,
    pub outcome: Result<(), LogFailure>,
}

impl Settled {
    fn none() -> Self {
        Settled {
            first: 0,
            end: 0,
            outcome: Ok(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first >= self.end
    }

    pub fn contains(&self, ticket: Ticket) -> bool {
        (self.first..self.end).contains(&ticket.0)
    }

    pub fn tickets(&self) -> impl Iterator<Item = Ticket> {
        (self.first..self.end).map(Ticket)
    }
}

#[derive(Debug)]
struct OpenSegment {
    name: SegmentName,
    file: String,
    /// Bytes handed out in writes (written or in flight).
    size: u64,
    /// The write that creates the file completed (an fsync before that would find no file).
    created: bool,
    /// The directory was fsynced since the file was created.
    named_durably: bool,
}

#[derive(Debug)]
struct FsyncInFlight {
    covers: u64,
    directory: bool,
}

/// One shard's write-ahead log: see the module documentation.
#[derive(Debug)]
pub struct LogWriter {
    config: LogConfig,
    /// Sequence of the next appended record.
    next_sequence: u64,
    /// Encoded records appended and not yet handed to a write.
    buffer: Vec<u8>,
    /// Sequence of the first record in `buffer`.
    buffer_first_sequence: u64,
    segment: Option<OpenSegment>,
    /// The write in flight: its file, offset, length, last sequence.
    write_in_flight: Option<(String, u64, usize, u64)>,
    /// The rest of a short write, to write next.
    remainder: Option<WriteBatch>,
    /// Every record up to this sequence is fully written.
    written_through: u64,
    /// Every record up to this sequence is durable.
    synced_through: u64,
    fsync_in_flight: Option<FsyncInFlight>,
    /// Every ticket up to this sequence is settled.
    settled_through: u64,
    last_fsync_ms: Option<u64>,
    failure: Option<LogFailure>,
    closing: bool,
    /// Close the current segment before the next write, whatever its size (a snapshot began:
    /// the records before it then sit in segments a later trim can delete whole).
    rotate_requested: bool,
    spare: Vec<u8>,
}

impl LogWriter {
    /// A writer whose first record gets sequence `next_sequence` (from recovery; 1 for a new
    /// generation). It always starts a new segment: it never appends to a file written by an
    /// earlier run.
    pub fn new(config: LogConfig, next_sequence: u64) -> Self {
        assert!(next_sequence >= 1, "sequences start at 1");
        assert!(
            config.segment_bytes_target >= SEGMENT_BYTES_TARGET_MIN,
            "segment_bytes_target below {SEGMENT_BYTES_TARGET_MIN}"
        );
        let before = next_sequence - 1;
        LogWriter {
            config,
            next_sequence,
            buffer: Vec::new(),
            buffer_first_sequence: next_sequence,
            segment: None,
            write_in_flight: None,
            remainder: None,
            written_through: before,
            synced_through: before,
            fsync_in_flight: None,
            settled_through: before,
            last_fsync_ms: None,
            failure: None,
            closing: false,
            rotate_requested: false,
            spare: Vec::new(),
        }
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Whether the shard should take another write now: the log has not stopped, is not
    /// closing, and its buffer is below `buffer_bytes_max`. Check it *before* applying a
    /// mutation: [`LogWriter::append`] itself does not refuse a record for lack of room.
    pub fn accepts_writes(&self) -> bool {
        self.failure.is_none() && !self.closing && self.buffer.len() < self.config.buffer_bytes_max
    }

    /// Why the log stopped, if it did.
    pub fn failure(&self) -> Option<&LogFailure> {
        self.failure.as_ref()
    }

    /// Sequence of the last appended record (0 if none yet in this generation). A snapshot
    /// started now covers this sequence.
    pub fn last_sequence(&self) -> u64 {
        self.next_sequence - 1
    }

    /// Every record up to this sequence is durable.
    pub fn durable_sequence(&self) -> u64 {
        self.synced_through
    }

    /// The segment being written, if one was started.
    pub fn current_segment(&self) -> Option<SegmentName> {
        self.segment.as_ref().map(|segment| segment.name)
    }

    /// Bytes appended and not yet handed to a write.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Encodes `record` with the next sequence into the buffer. The ticket is settled by a
    /// later `complete_write` or `complete_fsync`, depending on the policy.
    pub fn append<B: AsRef<[u8]>>(&mut self, record: &Record<B>) -> Result<Ticket, AppendError> {
        if let Some(failure) = &self.failure {
            return Err(AppendError::Stopped(failure.clone()));
        }
        if self.closing {
            return Err(AppendError::Closed);
        }
        if self.buffer.is_empty() {
            self.buffer_first_sequence = self.next_sequence;
            if self.buffer.capacity() == 0 {
                self.buffer = std::mem::take(&mut self.spare);
            }
        }
        let sequence = self.next_sequence;
        record
            .encode(sequence, &self.config.limits, &mut self.buffer)
            .map_err(AppendError::Entry)?;
        self.next_sequence += 1;
        Ok(Ticket(sequence))
    }

    /// The next write to submit, if one is due: the rest of a short write, or everything
    /// appended since the last batch (after the segment header when it starts a new segment).
    pub fn poll_write(&mut self) -> Option<WriteBatch> {
        if self.failure.is_some() || self.write_in_flight.is_some() {
            return None;
        }
        if let Some(batch) = self.remainder.take() {
            self.write_in_flight = Some((
                batch.file.clone(),
                batch.offset,
                batch.bytes.len(),
                batch.last_sequence,
            ));
            return Some(batch);
        }
        if self.buffer.is_empty() {
            return None;
        }
        let rotate = self
            .segment
            .as_ref()
            .is_some_and(|segment| self.must_rotate(segment));
        if self.segment.is_none() {
            self.rotate_requested = false;
        }
        if rotate {
            // The old segment must be durable before anything is written into the next one.
            let named_durably = self
                .segment
                .as_ref()
                .is_some_and(|segment| segment.named_durably);
            if self.synced_through < self.written_through
                || self.fsync_in_flight.is_some()
                || !named_durably
            {
                return None;
            }
            self.segment = None;
            self.rotate_requested = false;
        }
        let last_sequence = self.next_sequence - 1;
        let batch = match &mut self.segment {
            Some(segment) => {
                let offset = segment.size;
                segment.size += self.buffer.len() as u64;
                WriteBatch {
                    file: segment.file.clone(),
                    offset,
                    bytes: std::mem::take(&mut self.buffer),
                    create: false,
                    last_sequence,
                }
            }
            None => {
                let header = SegmentHeader {
                    generation: self.config.generation,
                    shard: self.config.shard,
                    first_sequence: self.buffer_first_sequence,
                };
                let name = header.name();
                let mut bytes = Vec::with_capacity(SEGMENT_HEADER_BYTES + self.buffer.len());
                bytes.extend_from_slice(&header.encode());
                bytes.extend_from_slice(&self.buffer);
                self.buffer.clear();
                let file = name.to_string();
                self.segment = Some(OpenSegment {
                    name,
                    file: file.clone(),
                    size: bytes.len() as u64,
                    created: false,
                    named_durably: false,
                });
                WriteBatch {
                    file,
                    offset: 0,
                    bytes,
                    create: true,
                    last_sequence,
                }
            }
        };
        self.write_in_flight = Some((
            batch.file.clone(),
            batch.offset,
            batch.bytes.len(),
            last_sequence,
        ));
        Some(batch)
    }

    /// Reports how the write of `batch` ended: `Ok(n)` bytes written (fewer than the batch is a
    /// short write: the rest comes out of the next `poll_write`), or the error. Returns the
    /// tickets this settles (under `EverySec` and `No` a completed write acknowledges its
    /// records; an error fails every unsettled ticket).
    pub fn complete_write(&mut self, mut batch: WriteBatch, result: io::Result<usize>) -> Settled {
        let Some((file, offset, length, last_sequence)) = self.write_in_flight.take() else {
            debug_assert!(
                self.failure.is_some(),
                "complete_write without a write in flight"
            );
            return Settled::none();
        };
        debug_assert_eq!(
            (file.as_str(), offset, length),
            (batch.file.as_str(), batch.offset, batch.bytes.len())
        );
        if self.failure.is_some() {
            return Settled::none();
        }
        if batch.create && result.is_ok() {
            if let Some(segment) = self.segment.as_mut().filter(|segment| segment.file == file) {
                segment.created = true;
            }
        }
        let written = match result {
            Ok(0) if length > 0 => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the write made no progress",
            )),
            other => other,
        };
        match written {
            Err(error) => self.stop("write", file, &error),
            Ok(written) if written < length => {
                batch.bytes.drain(..written);
                batch.offset += written as u64;
                batch.create = false;
                self.remainder = Some(batch);
                Settled::none()
            }
            Ok(_) => {
                debug_assert!(last_sequence >= self.written_through);
                self.written_through = last_sequence;
                batch.bytes.clear();
                if self.spare.capacity() < batch.bytes.capacity()
                    && batch.bytes.capacity() <= self.config.buffer_bytes_max
                {
                    self.spare = batch.bytes;
                }
                if self.config.policy == FsyncPolicy::Always {
                    Settled::none()
                } else {
                    self.settle_through(self.written_through)
                }
            }
        }
    }

    /// The fsync to submit now, if one is due: under `Always` whenever written records are not
    /// durable; under `EverySec` when that has been so for [`EVERYSEC_INTERVAL_MS`]; under every
    /// policy before a segment is closed, for a new segment's name, and after `close`.
    pub fn poll_fsync(&mut self, now_ms: u64) -> Option<FsyncRequest> {
        if self.failure.is_some() || self.fsync_in_flight.is_some() {
            return None;
        }
        let segment = self.segment.as_ref().filter(|segment| segment.created)?;
        let unsynced = self.synced_through < self.written_through;
        if !unsynced && segment.named_durably {
            return None;
        }
        let rotating = !self.buffer.is_empty() && self.must_rotate(segment);
        let due = rotating
            || self.closing
            || match self.config.policy {
                FsyncPolicy::Always => true,
                FsyncPolicy::EverySec => self
                    .last_fsync_ms
                    .is_none_or(|last| now_ms >= last.saturating_add(EVERYSEC_INTERVAL_MS)),
                FsyncPolicy::No => false,
            };
        if !due {
            return None;
        }
        let directory = !segment.named_durably;
        let file = segment.file.clone();
        self.fsync_in_flight = Some(FsyncInFlight {
            covers: self.written_through,
            directory,
        });
        self.last_fsync_ms = Some(now_ms);
        Some(FsyncRequest { file, directory })
    }

    /// Reports how the fsync ended. Returns the tickets this settles: under `Always`, every
    /// record the fsync covered; on an error, every unsettled ticket (failed).
    pub fn complete_fsync(&mut self, result: io::Result<()>) -> Settled {
        let Some(in_flight) = self.fsync_in_flight.take() else {
            debug_assert!(
                self.failure.is_some(),
                "complete_fsync without an fsync in flight"
            );
            return Settled::none();
        };
        if self.failure.is_some() {
            return Settled::none();
        }
        if let Err(error) = result {
            let file = self
                .segment
                .as_ref()
                .map(|s| s.file.clone())
                .unwrap_or_default();
            return self.stop("fsync", file, &error);
        }
        self.synced_through = self.synced_through.max(in_flight.covers);
        if in_flight.directory {
            if let Some(segment) = &mut self.segment {
                segment.named_durably = true;
            }
        }
        if self.config.policy == FsyncPolicy::Always {
            self.settle_through(self.synced_through)
        } else {
            Settled::none()
        }
    }

    /// When the core must wake up for an fsync even if nothing else happens
    /// (`EverySec` with records written and not yet durable).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.failure.is_some() || self.fsync_in_flight.is_some() {
            return None;
        }
        if self.config.policy != FsyncPolicy::EverySec
            || self.synced_through >= self.written_through
        {
            return None;
        }
        Some(
            self.last_fsync_ms
                .map_or(0, |last| last.saturating_add(EVERYSEC_INTERVAL_MS)),
        )
    }

    /// Closes the current segment before the next write even if it is below the segment size
    /// (the engine asks when a snapshot begins, so that the records the snapshot covers end a
    /// segment and a later trim can delete it). A segment with no record is kept.
    pub fn rotate_at_next_write(&mut self) {
        self.rotate_requested = true;
    }

    fn must_rotate(&self, segment: &OpenSegment) -> bool {
        segment.size >= self.config.segment_bytes_target
            || (self.rotate_requested && segment.size > SEGMENT_HEADER_BYTES as u64)
    }

    /// Starts a clean stop: later appends fail with [`AppendError::Closed`]; what was appended is
    /// still written and fsynced (under every policy). Done when [`LogWriter::is_idle`].
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Nothing buffered, in flight, or written but not durable (or the log stopped).
    pub fn is_idle(&self) -> bool {
        self.failure.is_some()
            || (self.buffer.is_empty()
                && self.remainder.is_none()
                && self.write_in_flight.is_none()
                && self.fsync_in_flight.is_none()
                && self.synced_through == self.written_through
                && self
                    .segment
                    .as_ref()
                    .is_none_or(|segment| segment.named_durably))
    }

    fn settle_through(&mut self, sequence: u64) -> Settled {
        let first = self.settled_through + 1;
        let end = sequence + 1;
        if end <= first {
            return Settled::none();
        }
        self.settled_through = sequence;
        Settled {
            first,
            end,
            outcome: Ok(()),
        }
    }

    fn stop(&mut self, operation: &'static str, file: String, error: &io::Error) -> Settled {
        let failure = LogFailure {
            shard: self.config.shard,
            operation,
            file,
            kind: error.kind(),
            os_error: error.raw_os_error(),
            message: error.to_string(),
        };
        self.failure = Some(failure.clone());
        self.buffer = Vec::new();
        self.remainder = None;
        let first = self.settled_through + 1;
        let end = self.next_sequence;
        self.settled_through = end - 1;
        Settled {
            first,
            end,
            outcome: Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procedure::drive_log;
    use crate::record::{RecordDecoder, Step};
    use crate::storage::{MemoryStorage, Storage, EIO, ENOSPC};
    use bytes::Bytes;

    fn config(policy: FsyncPolicy) -> LogConfig {
        LogConfig {
            segment_bytes_target: SEGMENT_BYTES_TARGET_MIN,
            ..LogConfig::new(1, 0, policy)
        }
    }

    fn put(i: u64) -> Record {
        Record::Put {
            key: Bytes::from(format!("key:{i}")),
            value: Bytes::from(vec![b'v'; 40]),
            version: i,
            expires_at_ms: 0,
        }
    }

    fn perform(storage: &mut MemoryStorage, batch: &WriteBatch) -> io::Result<usize> {
        if batch.create {
            storage.create(&batch.file)?;
        }
        storage.write_at(&batch.file, batch.offset, &batch.bytes)
    }

    fn sync(storage: &mut MemoryStorage, request: &FsyncRequest) -> io::Result<()> {
        storage.fsync(&request.file)?;
        if request.directory {
            storage.fsync_dir()?;
        }
        Ok(())
    }

    fn sequences(bytes: &[u8], first: u64) -> Vec<u64> {
        let mut decoder =
            RecordDecoder::new(bytes, SEGMENT_HEADER_BYTES, first, EntryLimits::default());
        let mut found = Vec::new();
        while let Step::Record(record) = decoder.next_step() {
            found.push(record.sequence);
        }
        found
    }

    #[test]
    fn always_acknowledges_after_fsync_and_groups_commits() {
        let mut storage = MemoryStorage::new();
        let mut writer = LogWriter::new(config(FsyncPolicy::Always), 1);
        for i in 1..=3 {
            assert_eq!(writer.append(&put(i)).unwrap(), Ticket(i));
        }
        let batch = writer.poll_write().unwrap();
        assert!(batch.create);
        assert_eq!(batch.offset, 0);
        assert!(
            writer.poll_fsync(0).is_none(),
            "no fsync of a file whose creation is in flight"
        );
        assert_eq!(sequences(&batch.bytes, 1), [1, 2, 3]);
        assert!(
            writer.poll_write().is_none(),
            "one write in flight at a time"
        );
        // Appended while the write is in flight: next batch.
        writer.append(&put(4)).unwrap();
        let result = perform(&mut storage, &batch);
        assert!(
            writer.complete_write(batch, result).is_empty(),
            "not durable yet"
        );
        let request = writer.poll_fsync(0).unwrap();
        assert!(
            request.directory,
            "a new segment's name is made durable too"
        );
        // A write may run while the fsync runs.
        let batch = writer.poll_write().unwrap();
        assert!(!batch.create);
        let result = perform(&mut storage, &batch);
        assert!(writer.complete_write(batch, result).is_empty());
        assert!(
            writer.poll_fsync(0).is_none(),
            "one fsync in flight at a time"
        );
        let settled = writer.complete_fsync(sync(&mut storage, &request));
        assert_eq!(
            settled.tickets().collect::<Vec<_>>(),
            [Ticket(1), Ticket(2), Ticket(3)]
        );
        assert_eq!(settled.outcome, Ok(()));
        let request = writer.poll_fsync(0).unwrap();
        assert!(!request.directory);
        let settled = writer.complete_fsync(sync(&mut storage, &request));
        assert_eq!((settled.first, settled.end), (4, 5));
        assert!(writer.is_idle());
        assert_eq!(writer.durable_sequence(), 4);
    }

    #[test]
    fn everysec_acknowledges_after_write_and_fsyncs_once_a_second() {
        let mut storage = MemoryStorage::new();
        let mut writer = LogWriter::new(config(FsyncPolicy::EverySec), 1);
        writer.append(&put(1)).unwrap();
        let settled = drive_log(&mut writer, &mut storage, 10_000);
        assert_eq!((settled[0].first, settled[0].end), (1, 2));
        assert_eq!(storage.fsync_count(), 1, "the first fsync is due at once");
        writer.append(&put(2)).unwrap();
        let settled = drive_log(&mut writer, &mut storage, 10_500);
        assert_eq!((settled[0].first, settled[0].end), (2, 3));
        assert_eq!(storage.fsync_count(), 1, "not a second later yet");
        assert_eq!(writer.next_deadline_ms(), Some(11_000));
        assert!(drive_log(&mut writer, &mut storage, 11_000).is_empty());
        assert_eq!(storage.fsync_count(), 2);
        assert_eq!(writer.next_deadline_ms(), None);
        assert_eq!(writer.durable_sequence(), 2);
    }

    #[test]
    fn no_policy_fsyncs_only_to_close_a_segment_or_the_log() {
        let mut storage = MemoryStorage::new();
        let mut writer = LogWriter::new(config(FsyncPolicy::No), 1);
        writer.append(&put(1)).unwrap();
        let settled = drive_log(&mut writer, &mut storage, 0);
        assert_eq!(settled.len(), 1);
        assert_eq!(storage.fsync_count(), 0);
        assert_eq!(writer.next_deadline_ms(), None);
        assert!(!writer.is_idle());
        writer.close();
        assert_eq!(writer.append(&put(2)), Err(AppendError::Closed));
        drive_log(&mut writer, &mut storage, 0);
        assert_eq!(storage.fsync_count(), 1);
        assert!(writer.is_idle());
    }

    #[test]
    fn segments_rotate_after_the_old_one_is_durable() {
        let mut storage = MemoryStorage::new();
        let mut writer = LogWriter::new(config(FsyncPolicy::No), 1);
        let mut sequence = 1;
        let mut files = Vec::new();
        while files.len() < 3 {
            writer.append(&put(sequence)).unwrap();
            sequence += 1;
            let fsyncs = storage.fsync_count();
            drive_log(&mut writer, &mut storage, 0);
            let current = writer.current_segment().unwrap();
            if files.last() != Some(&current) {
                if !files.is_empty() {
                    assert_eq!(
                        storage.fsync_count(),
                        fsyncs + 1,
                        "old segment fsynced before rotating"
                    );
                }
                assert_eq!(current.first_sequence, sequence - 1);
                files.push(current);
            }
        }
        let mut next = 1;
        for (i, name) in files.iter().enumerate() {
            let bytes = storage.contents(&name.to_string()).unwrap();
            let found = sequences(bytes, name.first_sequence);
            assert_eq!(found.first(), Some(&next));
            next = found.last().unwrap() + 1;
            if i + 1 < files.len() {
                assert!(bytes.len() as u64 >= SEGMENT_BYTES_TARGET_MIN);
                assert_eq!(next, files[i + 1].first_sequence);
            }
        }
    }

    #[test]
    fn a_requested_rotation_starts_the_next_segment_at_the_next_record() {
        for policy in [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No] {
            let mut storage = MemoryStorage::new();
            let mut writer = LogWriter::new(config(policy), 1);
            for sequence in 1..=5 {
                writer.append(&put(sequence)).unwrap();
            }
            drive_log(&mut writer, &mut storage, 0);
            let first = writer.current_segment().unwrap();
            // Nothing appended since: the request waits for the next write.
            writer.rotate_at_next_write();
            drive_log(&mut writer, &mut storage, 0);
            assert_eq!(writer.current_segment(), Some(first));
            let fsyncs = storage.fsync_count();
            writer.append(&put(6)).unwrap();
            drive_log(&mut writer, &mut storage, 5_000);
            let second = writer.current_segment().unwrap();
            assert_ne!(second, first, "{policy:?}");
            assert_eq!(second.first_sequence, 6);
            assert!(storage.fsync_count() > fsyncs, "old segment fsynced first");
            assert_eq!(
                sequences(storage.contents(&first.to_string()).unwrap(), 1),
                vec![1, 2, 3, 4, 5]
            );
            // One request, one rotation.
            writer.append(&put(7)).unwrap();
            drive_log(&mut writer, &mut storage, 10_000);
            assert_eq!(writer.current_segment(), Some(second));
        }
    }

    #[test]
    fn a_short_write_is_finished_before_anything_is_acknowledged() {
        let mut storage = MemoryStorage::new();
        let mut writer = LogWriter::new(config(FsyncPolicy::Always), 1);
        writer.append(&put(1)).unwrap();
        writer.append(&put(2)).unwrap();
        storage.short_write(1, 50);
        let batch = writer.poll_write().unwrap();
        let length = batch.bytes.len();
        let result = perform(&mut storage, &batch);
        assert!(writer.complete_write(batch, result).is_empty());
        // Only the directory entry may be synced meanwhile; nothing is acknowledged.
        if let Some(request) = writer.poll_fsync(0) {
            assert!(writer
                .complete_fsync(sync(&mut storage, &request))
                .is_empty());
        }
        let rest = writer.poll_write().unwrap();
        assert!(!rest.create);
        assert_eq!(rest.offset, 50);
        assert_eq!(rest.bytes.len(), length - 50);
        let result = perform(&mut storage, &rest);
        assert!(writer.complete_write(rest, result).is_empty());
        let settled = drive_log(&mut writer, &mut storage, 0);
        assert_eq!((settled[0].first, settled[0].end), (1, 3));
        let name = writer.current_segment().unwrap().to_string();
        assert_eq!(sequences(storage.contents(&name).unwrap(), 1), [1, 2]);
    }

    #[test]
    fn a_failed_fsync_fails_every_waiting_and_later_write() {
        let mut storage = MemoryStorage::new();
        let mut writer = LogWriter::new(config(FsyncPolicy::Always), 1);
        writer.append(&put(1)).unwrap();
        drive_log(&mut writer, &mut storage, 0);
        writer.append(&put(2)).unwrap();
        writer.append(&put(3)).unwrap();
        storage.fail_fsync(1);
        let settled = drive_log(&mut writer, &mut storage, 0);
        assert_eq!(settled.len(), 1);
        assert_eq!((settled[0].first, settled[0].end), (2, 4));
        let failure = settled[0].outcome.clone().unwrap_err();
        assert_eq!(failure.operation, "fsync");
        assert_eq!(failure.os_error, Some(EIO));
        assert!(failure.to_string().contains("refuses writes"), "{failure}");
        assert_eq!(writer.append(&put(4)), Err(AppendError::Stopped(failure)));
        assert!(!writer.accepts_writes());
        assert!(writer.poll_write().is_none());
        assert!(writer.poll_fsync(0).is_none());
        assert!(writer.is_idle());
        // The fsync is never retried, so the second (lying) fsync of Linux cannot mislead it.
        assert_eq!(storage.fsync_count(), 2);
    }

    #[test]
    fn a_failed_write_under_everysec_fails_only_what_was_not_acknowledged() {
        let mut storage = MemoryStorage::new();
        let mut writer = LogWriter::new(config(FsyncPolicy::EverySec), 1);
        writer.append(&put(1)).unwrap();
        assert_eq!(drive_log(&mut writer, &mut storage, 0)[0].outcome, Ok(()));
        writer.append(&put(2)).unwrap();
        storage.fail_write(1);
        let settled = drive_log(&mut writer, &mut storage, 100);
        assert_eq!((settled[0].first, settled[0].end), (2, 3));
        let failure = settled[0].outcome.clone().unwrap_err();
        assert_eq!(
            (failure.operation, failure.os_error),
            ("write", Some(ENOSPC))
        );
    }

    #[test]
    fn back_pressure_past_the_buffer_limit() {
        let mut writer = LogWriter::new(
            LogConfig {
                buffer_bytes_max: 200,
                ..config(FsyncPolicy::Always)
            },
            1,
        );
        let mut appended = 0;
        while writer.accepts_writes() {
            writer.append(&put(appended + 1)).unwrap();
            appended += 1;
        }
        assert!(appended >= 2);
        assert!(writer.buffered_bytes() >= 200);
        let batch = writer.poll_write().unwrap();
        assert!(writer.accepts_writes(), "the buffer was handed to a write");
        drop(batch);
    }

    #[test]
    fn a_refused_record_uses_no_sequence() {
        let mut writer = LogWriter::new(config(FsyncPolicy::Always), 7);
        let empty_key: Record = Record::Delete { key: Bytes::new() };
        assert_eq!(
            writer.append(&empty_key),
            Err(AppendError::Entry(EntryProblem::EmptyKey))
        );
        assert_eq!(writer.append(&put(1)), Ok(Ticket(7)));
        assert_eq!(writer.last_sequence(), 7);
    }
}
