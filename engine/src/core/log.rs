//! A core's persistence while it runs: its shard's write-ahead log, written and fsynced through
//! the core's own runtime (io_uring on Linux) with group commit, answers held until the log
//! covers them, and background snapshots.
//!
//! Order of events for a write on this core: the shard applies it; its changes become log
//! records (appended to the [`LogWriter`]'s buffer, in the same synchronous step, so the log
//! order is the apply order); the answer is held with the sequence of the last record
//! appended; the log task writes the buffer and fsyncs (every write that arrived meanwhile
//! shares that write and fsync: group commit); when the writer settles a range of sequences,
//! every held answer up to it is released. Any answer of a key-value command (reads too) is
//! held behind the records appended before it, so no client ever sees state that the fsync
//! policy does not yet cover.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use compio::buf::BufResult;
use compio::io::{AsyncWriteAt, AsyncWriteAtExt};
use futures_util::future::{select, Either};
use veddb_persist::procedure::SNAPSHOT_WRITE_BYTES;
use veddb_persist::record::Record;
use veddb_persist::snapshot::{SnapshotEncoder, SnapshotEntryRef, SnapshotHeader};
use veddb_persist::writer::{FsyncPolicy, LogConfig, LogWriter, Settled, WriteBatch};
use veddb_persist::EntryLimits;
use veddb_shard::{Change, Shard, StoredEntry};
use veddb_wire::{Error, Request, Response};

use super::{yield_now, CoreContext, ReplyTo};
use crate::persist::{sync_dir, Faults, FsStorage};

/// Entries a snapshot takes from the shard per step (between steps the core serves requests).
const SNAPSHOT_STEP_ENTRIES: usize = 256;
/// Longest the core waits for its log to drain when it stops.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of one core's persistence.
pub(crate) struct CoreLogConfig {
    pub dir: PathBuf,
    pub generation: u32,
    pub shard_count: u32,
    pub next_sequence: u64,
    pub policy: FsyncPolicy,
    pub limits: EntryLimits,
    pub snapshot_interval: Option<Duration>,
    pub faults: Faults,
}

/// A wake-up flag for one task.
#[derive(Default)]
struct Kick {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick {
    fn kick(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits until kicked (returns at once if it was kicked since the last wait).
    async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A core's persistence state (lives in its `State`).
pub(crate) struct CoreLog {
    dir: PathBuf,
    shard: u32,
    generation: u32,
    shard_count: u32,
    limits: EntryLimits,
    snapshot_interval: Option<Duration>,
    writer: RefCell<LogWriter>,
    /// Answers waiting for the log to settle through their sequence, in sequence order.
    held: RefCell<VecDeque<(u64, ReplyTo, Response)>>,
    /// Every sequence up to this one is settled (acknowledged or failed).
    settled_through: Cell<u64>,
    log_task: Kick,
    snapshot_task: Kick,
    /// SNAPSHOT commands waiting for the next snapshot to complete.
    snapshot_waiters: RefCell<Vec<ReplyTo>>,
    /// The log sequence of the last snapshot written (or the start).
    snapshot_sequence: Cell<u64>,
    /// The core is stopping: the log task drains and ends.
    closing: Cell<bool>,
    log_task_done: Cell<bool>,
    /// The test seam (see [`Faults`]): empty in production.
    faults: Faults,
    writes: Cell<u64>,
    fsyncs: Cell<u64>,
}

impl CoreLog {
    pub fn new(shard: u32, config: CoreLogConfig) -> CoreLog {
        let mut log_config = LogConfig::new(config.generation, shard, config.policy);
        log_config.limits = config.limits;
        let before = config.next_sequence - 1;
        CoreLog {
            dir: config.dir,
            shard,
            generation: config.generation,
            shard_count: config.shard_count,
            limits: config.limits,
            snapshot_interval: config.snapshot_interval,
            writer: RefCell::new(LogWriter::new(log_config, config.next_sequence)),
            held: RefCell::new(VecDeque::new()),
            settled_through: Cell::new(before),
            log_task: Kick::default(),
            snapshot_task: Kick::default(),
            snapshot_waiters: RefCell::new(Vec::new()),
            snapshot_sequence: Cell::new(before),
            closing: Cell::new(false),
            log_task_done: Cell::new(false),
            faults: if config.faults.shards.is_empty() || config.faults.shards.contains(&shard) {
                config.faults
            } else {
                Faults::default()
            },
            writes: Cell::new(0),
            fsyncs: Cell::new(0),
        }
    }
}

/// Commands that change keys: refused once the log has stopped, or while its buffer is full.
fn is_write(request: &Request) -> bool {
    matches!(
        request,
        Request::Set { .. }
            | Request::Delete { .. }
            | Request::Cas { .. }
            | Request::Incr { .. }
            | Request::Expire { .. }
            | Request::Persist { .. }
            | Request::MSet { .. }
    )
}

/// Commands whose answers depend on no key (topics live only in memory): never held.
pub(super) fn is_unlogged(request: &Request) -> bool {
    matches!(
        request,
        Request::Ping
            | Request::Subscribe { .. }
            | Request::Unsubscribe { .. }
            | Request::Publish { .. }
            | Request::Fetch { .. }
    )
}

fn record_of(change: &Change) -> Record<&[u8]> {
    match change {
        Change::Put(entry) => Record::Put {
            key: &entry.key,
            value: &entry.value,
            version: entry.version,
            expires_at_ms: entry.expires_at_ms,
        },
        Change::Delete(key) => Record::Delete { key },
    }
}

impl CoreContext {
    fn log(&self) -> &CoreLog {
        self.0.log.as_ref().expect("persistence is on")
    }

    /// Applies `request` to the shard with persistence on: logs its changes and answers once
    /// the log covers them (see the module documentation).
    pub(super) fn serve_logged(&self, request: Request, reply: ReplyTo, now: u64) {
        let log = self.log();
        if matches!(request, Request::Snapshot) {
            log.snapshot_waiters.borrow_mut().push(reply);
            log.snapshot_task.kick();
            return;
        }
        if is_write(&request) {
            let writer = log.writer.borrow();
            if let Some(failure) = writer.failure() {
                let error = Error::Storage(failure.to_string());
                drop(writer);
                self.reply(reply, Response::Error(error));
                return;
            }
            if !writer.accepts_writes() {
                drop(writer);
                self.reply(
                    reply,
                    Response::Error(Error::Busy(format!(
                        "the write-ahead log of shard {} has {} bytes waiting for the disk",
                        log.shard,
                        log.writer.borrow().buffered_bytes()
                    ))),
                );
                return;
            }
        }
        let unlogged = is_unlogged(&request);
        let response = self.0.shard.borrow_mut().handle(request, now);
        if let Err(error) = self.append_changes() {
            self.reply(reply, Response::Error(error));
            return;
        }
        let last = log.writer.borrow().last_sequence();
        if unlogged || last <= log.settled_through.get() {
            self.reply(reply, response);
        } else {
            log.held.borrow_mut().push_back((last, reply, response));
        }
    }

    /// Turns the shard's journal into log records.
    fn append_changes(&self) -> Result<(), Error> {
        let log = self.log();
        let mut shard = self.0.shard.borrow_mut();
        if !shard.has_changes() {
            return Ok(());
        }
        let mut writer = log.writer.borrow_mut();
        let mut result = Ok(());
        for change in shard.drain_changes() {
            if let Err(error) = writer.append(&record_of(&change)) {
                // The change is applied in memory but not logged: say so to the client and in
                // the server log. (Only a stopped log gets here: the limits are the shard's.)
                tracing::error!(shard = log.shard, "{error}");
                result = Err(Error::Storage(error.to_string()));
            }
        }
        drop(writer);
        log.log_task.kick();
        result
    }

    /// Releases the held answers a settled range covers.
    fn settle(&self, settled: Settled) {
        if settled.is_empty() && settled.outcome.is_ok() {
            return;
        }
        let log = self.log();
        let through = settled.end.saturating_sub(1);
        if through > log.settled_through.get() {
            log.settled_through.set(through);
        }
        if let Err(failure) = &settled.outcome {
            tracing::error!(shard = log.shard, "{failure}");
        }
        loop {
            let next = {
                let mut held = log.held.borrow_mut();
                match held.front() {
                    Some((sequence, _, _)) if *sequence < settled.end => held.pop_front(),
                    _ => None,
                }
            };
            let Some((_, reply, response)) = next else {
                break;
            };
            let response = match &settled.outcome {
                Ok(()) => response,
                Err(failure) => Response::Error(Error::Storage(failure.to_string())),
            };
            self.reply(reply, response);
        }
    }

    /// The log task: performs the writer's writes and fsyncs through the runtime until the
    /// core stops and the log is drained.
    pub(super) async fn run_log(self) {
        let log = self.log();
        let mut files: HashMap<String, Rc<compio::fs::File>> = HashMap::new();
        let mut last_file = String::new();
        loop {
            let mut progressed = false;
            let batch = log.writer.borrow_mut().poll_write();
            if let Some(mut batch) = batch {
                let result = self.perform_write(&mut files, &mut batch).await;
                last_file.clone_from(&batch.file);
                let settled = log.writer.borrow_mut().complete_write(batch, result);
                self.settle(settled);
                progressed = true;
            }
            let request = log.writer.borrow_mut().poll_fsync(self.0.clock.unix_ms());
            if let Some(request) = request {
                log.fsyncs.set(log.fsyncs.get() + 1);
                let injected = match log.faults.fail_fsync {
                    Some((nth, errno)) if nth == log.fsyncs.get() => Some(errno),
                    _ => None,
                };
                let result = async {
                    if let Some(errno) = injected {
                        return Err(std::io::Error::from_raw_os_error(errno));
                    }
                    let file = match files.get(&request.file) {
                        Some(file) => file.clone(),
                        None => Rc::new(
                            compio::fs::OpenOptions::new()
                                .write(true)
                                .open(log.dir.join(&request.file))
                                .await?,
                        ),
                    };
                    file.sync_data().await?;
                    if request.file != last_file {
                        files.remove(&request.file);
                    }
                    if request.directory {
                        compio::fs::File::open(&log.dir).await?.sync_all().await?;
                    }
                    Ok(())
                }
                .await;
                let settled = log.writer.borrow_mut().complete_fsync(result);
                self.settle(settled);
                progressed = true;
            }
            if progressed {
                continue;
            }
            let (idle, deadline) = {
                let writer = log.writer.borrow();
                (writer.is_idle(), writer.next_deadline_ms())
            };
            if log.closing.get() && idle {
                break;
            }
            if log.closing.get() && log.writer.borrow().failure().is_some() {
                break;
            }
            match deadline {
                Some(at) => {
                    let timeout =
                        Duration::from_millis(at.saturating_sub(self.0.clock.unix_ms()).max(1));
                    let sleep = std::pin::pin!(compio::time::sleep(timeout));
                    let kicked = std::pin::pin!(log.log_task.wait());
                    let _ = select(kicked, sleep).await;
                }
                None => log.log_task.wait().await,
            }
        }
        log.log_task_done.set(true);
    }

    async fn perform_write(
        &self,
        files: &mut HashMap<String, Rc<compio::fs::File>>,
        batch: &mut WriteBatch,
    ) -> std::io::Result<usize> {
        let log = self.log();
        if batch.create {
            let file = compio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(log.dir.join(&batch.file))
                .await?;
            files.insert(batch.file.clone(), Rc::new(file));
        }
        let file = match files.get(&batch.file) {
            Some(file) => file.clone(),
            None => {
                let file = Rc::new(
                    compio::fs::OpenOptions::new()
                        .write(true)
                        .open(log.dir.join(&batch.file))
                        .await?,
                );
                files.insert(batch.file.clone(), file.clone());
                file
            }
        };
        log.writes.set(log.writes.get() + 1);
        if let Some((nth, errno)) = log.faults.fail_write {
            if nth == log.writes.get() {
                return Err(std::io::Error::from_raw_os_error(errno));
            }
        }
        let mut bytes = std::mem::take(&mut batch.bytes);
        // A short write (test seam): write only a prefix, then hand the whole buffer back.
        let short = match log.faults.short_write {
            Some((nth, length)) if nth == log.writes.get() && length < bytes.len() => {
                Some(bytes.split_off(length))
            }
            _ => None,
        };
        let mut handle: &compio::fs::File = &file;
        let BufResult(result, mut bytes) = handle.write_at(bytes, batch.offset).await;
        if let Some(rest) = short {
            bytes.extend_from_slice(&rest);
        }
        batch.bytes = bytes;
        result
    }

    /// Called by the core loop when it stops: closes the log and waits (bounded) until every
    /// appended record is written and fsynced, then answers what is still held.
    pub(super) async fn close_log(&self) {
        let log = self.log();
        log.closing.set(true);
        log.writer.borrow_mut().close();
        log.log_task.kick();
        log.snapshot_task.kick();
        let started = self.monotonic();
        while !log.log_task_done.get() && self.monotonic().duration_since(started) < CLOSE_TIMEOUT {
            compio::time::sleep(Duration::from_millis(1)).await;
        }
        if !log.log_task_done.get() {
            tracing::error!(
                shard = log.shard,
                "the write-ahead log did not drain within {CLOSE_TIMEOUT:?}; unacknowledged writes may be lost"
            );
        }
        let held: Vec<_> = log.held.borrow_mut().drain(..).collect();
        for (_, reply, _) in held {
            self.reply(reply, Response::Error(Error::ShuttingDown));
        }
        let waiters: Vec<_> = log.snapshot_waiters.borrow_mut().drain(..).collect();
        for reply in waiters {
            self.reply(reply, Response::Error(Error::ShuttingDown));
        }
    }

    /// The snapshot task: a snapshot on every SNAPSHOT command, and every
    /// `--snapshot-interval` when the log grew since the last one.
    pub(super) async fn run_snapshots(self) {
        let log = self.log();
        // A kill between a snapshot's rename and the trim after it leaves one snapshot (and
        // the segments it covers) too many; kills at that moment, run after run, would let
        // them pile up. Trimmed at the start, the directory holds what a trim leaves.
        self.trim();
        let mut last = self.monotonic();
        loop {
            match log.snapshot_interval {
                Some(interval) => {
                    let due = interval.saturating_sub(self.monotonic().duration_since(last));
                    let sleep = std::pin::pin!(compio::time::sleep(due));
                    let kicked = std::pin::pin!(log.snapshot_task.wait());
                    if let Either::Right(_) = select(kicked, sleep).await {
                        last = self.monotonic();
                        let grew =
                            log.writer.borrow().last_sequence() > log.snapshot_sequence.get();
                        if !grew || log.closing.get() {
                            continue;
                        }
                    }
                }
                None => log.snapshot_task.wait().await,
            }
            if log.closing.get() {
                return;
            }
            let waiters: Vec<ReplyTo> = log.snapshot_waiters.borrow_mut().drain(..).collect();
            let started = self.monotonic();
            let result = self.write_snapshot().await;
            last = self.monotonic();
            let response = match result {
                Ok((sequence, entries, bytes)) => {
                    tracing::info!(
                        shard = log.shard,
                        sequence,
                        entries,
                        bytes,
                        elapsed_ms = self.monotonic().duration_since(started).as_millis() as u64,
                        "snapshot written"
                    );
                    log.snapshot_sequence.set(sequence);
                    self.trim();
                    Response::Ok
                }
                Err(error) => {
                    tracing::error!(shard = log.shard, "snapshot failed: {error}");
                    Response::Error(Error::Storage(format!(
                        "snapshot of shard {} failed: {error}",
                        log.shard
                    )))
                }
            };
            for reply in waiters {
                self.reply(reply, response.clone());
            }
        }
    }

    /// Removes the log segments and snapshots the new snapshot makes unnecessary.
    fn trim(&self) {
        let log = self.log();
        let mut storage = FsStorage::unlocked(&log.dir);
        match veddb_persist::procedure::trim(&mut storage, log.shard) {
            Ok(removed) if !removed.is_empty() => {
                tracing::debug!(shard = log.shard, ?removed, "trimmed the log")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(shard = log.shard, "log trimming failed: {error}"),
        }
    }

    /// Writes one point-in-time snapshot of the shard without stopping it: entries are taken
    /// in small steps between which the core serves requests (the shard keeps the old entry
    /// of any key written before the snapshot reaches it). Temporary file, fsync, rename,
    /// directory fsync. Returns the sequence it reflects, its entries and bytes.
    async fn write_snapshot(&self) -> Result<(u64, u64, u64), String> {
        let log = self.log();
        let (sequence, version_clock) = {
            let mut shard = self.0.shard.borrow_mut();
            if !shard.begin_snapshot() {
                return Err("a snapshot is already running".into());
            }
            let version_clock = shard.snapshot_version_clock().unwrap_or(0);
            // The records this snapshot covers end their segment: once a newer snapshot
            // exists, trimming deletes that segment whole.
            let mut writer = log.writer.borrow_mut();
            writer.rotate_at_next_write();
            (writer.last_sequence(), version_clock)
        };
        let header = SnapshotHeader {
            generation: log.generation,
            shard: log.shard,
            shard_count: log.shard_count,
            sequence,
            version_clock,
            created_at_ms: self.0.clock.unix_ms(),
        };
        let name = header.name();
        let temporary = log.dir.join(name.temporary());
        let result = self.write_snapshot_file(&header, &temporary).await;
        let result = match result {
            Ok(summary) => {
                async {
                    compio::fs::rename(&temporary, log.dir.join(name.to_string()))
                        .await
                        .map_err(|error| {
                            format!("rename of {} failed: {error}", temporary.display())
                        })?;
                    sync_dir(&log.dir).map_err(|error| {
                        format!("fsync of {} failed: {error}", log.dir.display())
                    })?;
                    Ok(summary)
                }
                .await
            }
            Err(error) => Err(error),
        };
        if result.is_err() {
            self.0.shard.borrow_mut().abort_snapshot();
            let _ = std::fs::remove_file(&temporary);
        }
        result.map(|(entries, bytes)| (sequence, entries, bytes))
    }

    async fn write_snapshot_file(
        &self,
        header: &SnapshotHeader,
        path: &std::path::Path,
    ) -> Result<(u64, u64), String> {
        let failed = |operation: &str, error: std::io::Error| {
            format!("{operation} of {} failed: {error}", path.display())
        };
        let log = self.log();
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(failed("removal", error)),
        }
        let file = compio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await
            .map_err(|error| failed("creation", error))?;
        let mut out = Vec::with_capacity(SNAPSHOT_WRITE_BYTES + 64 * 1024);
        let mut encoder = SnapshotEncoder::new(header, log.limits, &mut out);
        let mut entries: Vec<StoredEntry> = Vec::with_capacity(SNAPSHOT_STEP_ENTRIES);
        let mut offset = 0u64;
        let mut handle: &compio::fs::File = &file;
        if let Some(errno) = log.faults.fail_snapshot_write {
            return Err(failed("write", std::io::Error::from_raw_os_error(errno)));
        }
        loop {
            entries.clear();
            let more = self
                .0
                .shard
                .borrow_mut()
                .snapshot_next(SNAPSHOT_STEP_ENTRIES, &mut entries);
            for entry in &entries {
                encoder
                    .push(
                        SnapshotEntryRef {
                            key: &entry.key,
                            value: &entry.value,
                            version: entry.version,
                            expires_at_ms: entry.expires_at_ms,
                        },
                        &mut out,
                    )
                    .map_err(|error| error.to_string())?;
            }
            if out.len() >= SNAPSHOT_WRITE_BYTES {
                let length = out.len() as u64;
                let BufResult(result, buffer) = handle.write_all_at(out, offset).await;
                out = buffer;
                result.map_err(|error| failed("write", error))?;
                offset += length;
                out.clear();
            }
            if !more {
                break;
            }
            // Let the core serve between steps.
            yield_now().await;
        }
        let summary = encoder.finish(&mut out);
        let length = out.len() as u64;
        let BufResult(result, _) = handle.write_all_at(out, offset).await;
        result.map_err(|error| failed("write", error))?;
        file.sync_all()
            .await
            .map_err(|error| failed("fsync", error))?;
        Ok((summary.entries, offset + length))
    }
}

/// Loads a recovered image into a fresh shard (start-up, on the core's own thread) and turns
/// its journal on.
pub(crate) fn restore_shard(
    shard: &mut Shard,
    image: veddb_persist::recovery::ShardImage,
) -> Result<(), String> {
    let clock = image.version_clock;
    let count = image.entries.len();
    // Also when every key was deleted: versions must go on from the recovered clock.
    shard.restore_version_clock(clock);
    let entries = image.entries.into_iter().map(|(key, entry)| StoredEntry {
        key,
        value: entry.value,
        version: entry.version,
        expires_at_ms: entry.expires_at_ms,
    });
    shard.restore_all(entries, clock).map_err(|error| {
        format!(
            "shard {} cannot load its {count} recovered keys: {error}",
            shard.index()
        )
    })?;
    shard.set_journal(true);
    Ok(())
}
