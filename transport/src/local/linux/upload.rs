//! Values larger than a ring's frames: a session sends each one ahead of the request that
//! uses it as UPLOAD frames (`codec::upload_chunk`), which its core copies straight from the
//! request ring into a block of its arena; the request then carries
//! `codec::UPLOADED_LENGTH` in the value's place, and the core puts the finished value there
//! (`codec::fill_uploaded_values`). One copy by the client (into the ring), one by the core
//! (out of it, to where the value stays): the shard keeps the arena block as the value.
//!
//! The rules (docs/shm-layout.md, "Large values"): per session and core, one value is being
//! received at a time and finished ones wait in order for the requests that name them; each
//! upload carries the id of its request, which takes only its own values (those of a request
//! that never came are dropped when a later one takes its own, or after [`WAIT_MAX_MS`]); a
//! chunk at offset 0 starts a new value (an unfinished one before it is abandoned); any other
//! chunk must continue the current value exactly. A value over `--value-bytes-max`, over the
//! session's or the core's upload budget, or a chunk out of order fails that upload: the
//! request that names it is answered with the error, the session goes on. What a session
//! holds is freed when it ends, however it ends.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use veddb_shm::{Arena, ArenaUpload};
use veddb_wire::shm::codec::UploadChunk;
use veddb_wire::Error;

/// Finished (or failed) uploads one session may have waiting on one core for the requests
/// that name them: as many as one MSET may name. More is a client that uploads without
/// sending the requests, and is disconnected.
pub(super) const WAITING_MAX: usize = veddb_wire::limits::BATCH_KEYS_MAX;

/// Least bytes one session may hold in uploads on one core (see [`UploadLimits::new`]).
const SESSION_BYTES_MIN: usize = 64 << 20;
/// What a waiting upload (or the error of a failed one) is charged at least, against the
/// budgets: its entry, an error's message, the smallest arena block.
const ENTRY_BYTES_MIN: usize = 1 << 10;
/// A finished upload no request took within this long (the client failed between its uploads
/// and its request, or never meant to send it) is dropped, and so is an upload that received
/// no chunk for this long: an honest client sends the request right after its uploads.
pub(super) const WAIT_MAX_MS: u64 = 10_000;

/// The upload budgets of one core.
#[derive(Clone, Copy, Debug)]
pub(super) struct UploadLimits {
    /// The largest value (`--value-bytes-max`).
    pub value_bytes_max: usize,
    /// Bytes one session may hold in uploads on this core (being received and waiting):
    /// the larger of `--value-bytes-max` and 64 MiB, within the core's budget.
    pub session_bytes_max: usize,
    /// Bytes all sessions together may hold in uploads on this core: half its arena, and
    /// at least one largest value.
    pub core_bytes_max: usize,
}

impl UploadLimits {
    pub fn new(value_bytes_max: usize, arena_bytes: usize) -> UploadLimits {
        let core_bytes_max = (arena_bytes / 2).max(value_bytes_max);
        UploadLimits {
            value_bytes_max,
            session_bytes_max: value_bytes_max.max(SESSION_BYTES_MIN).min(core_bytes_max),
            core_bytes_max,
        }
    }
}

/// Where an upload's bytes go: a block of the core's arena (the value then stays there), or
/// process memory when the arena has no block of that size free.
enum Target {
    Arena(ArenaUpload),
    Heap(Vec<u8>),
}

/// The value being received.
struct Receiving {
    /// The request it is for.
    request: u32,
    total: usize,
    received: usize,
    target: Target,
    /// What it is charged against the budgets.
    charge: usize,
    /// When its last chunk came (core clock, ms).
    last_ms: u64,
}

/// A finished (or failed) upload, waiting for its request.
struct Waiting {
    request: u32,
    outcome: Result<Bytes, Error>,
    charge: usize,
    since_ms: u64,
}

/// One session's uploads on one core.
pub(super) struct Uploads {
    receiving: Option<Receiving>,
    /// Finished uploads, oldest first; a failed one is the error its request gets.
    waiting: VecDeque<Waiting>,
    /// Bytes held: the value being received (all of its block, reserved at its start) and
    /// the finished ones waiting (each at least [`ENTRY_BYTES_MIN`]).
    bytes: usize,
    /// Bytes all sessions of this core hold (this session's included).
    core_bytes: Rc<Cell<usize>>,
}

/// Why a session is cut off for its uploads.
pub(super) struct TooManyWaiting;

impl Uploads {
    pub fn new(core_bytes: Rc<Cell<usize>>) -> Uploads {
        Uploads {
            receiving: None,
            waiting: VecDeque::new(),
            bytes: 0,
            core_bytes,
        }
    }

    fn hold(&mut self, bytes: usize) {
        self.bytes += bytes;
        self.core_bytes.set(self.core_bytes.get() + bytes);
    }

    fn release(&mut self, bytes: usize) {
        self.bytes -= bytes;
        self.core_bytes.set(self.core_bytes.get() - bytes);
    }

    /// Queues the outcome of an upload for request `request` (charged `charge`, already held).
    fn finish(
        &mut self,
        request: u32,
        outcome: Result<Bytes, Error>,
        charge: usize,
        now_ms: u64,
    ) -> Result<(), TooManyWaiting> {
        if self.waiting.len() >= WAITING_MAX {
            self.release(charge);
            return Err(TooManyWaiting);
        }
        self.waiting.push_back(Waiting {
            request,
            outcome,
            charge,
            since_ms: now_ms,
        });
        Ok(())
    }

    /// Queues a failed upload's error for request `request`, within the budgets like any entry.
    fn fail(&mut self, request: u32, error: Error, now_ms: u64) -> Result<(), TooManyWaiting> {
        self.hold(ENTRY_BYTES_MIN);
        self.finish(request, Err(error), ENTRY_BYTES_MIN, now_ms)
    }

    /// Drops the value being received, if any: its arena block goes straight back to the free
    /// list (it never was a value anyone could read).
    fn abandon(&mut self, arena: Option<&mut Arena>) {
        if let Some(receiving) = self.receiving.take() {
            self.release(receiving.charge);
            if let (Target::Arena(upload), Some(arena)) = (receiving.target, arena) {
                arena.free_unfinished(upload);
            }
        }
    }

    /// Whether the session holds anything here (checked every round: one field).
    pub fn holds(&self) -> bool {
        self.bytes > 0
    }

    /// Drops what waited too long for its request, and an upload that stopped coming
    /// ([`WAIT_MAX_MS`]).
    pub fn expire(&mut self, arena: &mut Arena, now_ms: u64) {
        let stale = |since: u64| now_ms.saturating_sub(since) >= WAIT_MAX_MS;
        if self.receiving.as_ref().is_some_and(|r| stale(r.last_ms)) {
            self.abandon(Some(arena));
        }
        while self.waiting.front().is_some_and(|w| stale(w.since_ms)) {
            let waiting = self.waiting.pop_front().expect("checked");
            self.release(waiting.charge);
        }
    }

    /// Takes in one UPLOAD frame's chunk: `copy` writes the chunk's bytes into the slice it is
    /// given (exactly `chunk.len` bytes). An error only when the session must be cut off.
    pub fn receive(
        &mut self,
        chunk: UploadChunk,
        arena: &mut Arena,
        limits: &UploadLimits,
        now_ms: u64,
        copy: impl FnOnce(&mut [u8]),
    ) -> Result<(), TooManyWaiting> {
        if chunk.offset == 0 {
            if let Some(receiving) = &self.receiving {
                let error = Error::InvalidArgument(format!(
                    "an upload of {} bytes was abandoned after {} bytes (a new one started)",
                    receiving.total, receiving.received
                ));
                let request = receiving.request;
                self.abandon(Some(arena));
                self.fail(request, error, now_ms)?;
            }
            if let Err(error) = self.start(chunk, arena, limits, now_ms) {
                return self.fail(chunk.request, error, now_ms);
            }
        }
        let Some(receiving) = self.receiving.as_mut() else {
            // A part of an upload that failed at its start (its request gets that error).
            return Ok(());
        };
        let offset = chunk.offset as usize;
        if chunk.request != receiving.request
            || chunk.total != receiving.total as u64
            || offset != receiving.received
        {
            let error = Error::InvalidArgument(format!(
                "an upload chunk for bytes {offset}.. of a {}-byte value (request {}) arrived \
                 where bytes {}.. of a {}-byte value (request {}) were due",
                chunk.total, chunk.request, receiving.received, receiving.total, receiving.request
            ));
            let request = receiving.request;
            self.abandon(Some(arena));
            return self.fail(request, error, now_ms);
        }
        let len = chunk.len as usize;
        match &mut receiving.target {
            Target::Arena(upload) => copy(upload.chunk_mut(offset, len)),
            Target::Heap(bytes) => copy(&mut bytes[offset..offset + len]),
        }
        receiving.received += len;
        receiving.last_ms = now_ms;
        if receiving.received == receiving.total {
            let receiving = self.receiving.take().expect("receiving");
            let value = match receiving.target {
                Target::Arena(upload) => upload.finish().into_bytes(),
                Target::Heap(bytes) => Bytes::from(bytes),
            };
            // Still held (as a waiting value) until its request takes it.
            return self.finish(receiving.request, Ok(value), receiving.charge, now_ms);
        }
        Ok(())
    }

    /// Starts receiving the value `chunk` begins, within the limits.
    fn start(
        &mut self,
        chunk: UploadChunk,
        arena: &mut Arena,
        limits: &UploadLimits,
        now_ms: u64,
    ) -> Result<(), Error> {
        let total = usize::try_from(chunk.total).unwrap_or(usize::MAX);
        if total > limits.value_bytes_max {
            return Err(Error::ValueTooLarge {
                length: total,
                limit: limits.value_bytes_max,
            });
        }
        // Charged for the block it takes (a power of two in the arena), at least an entry.
        let charge = arena
            .class_for(total)
            .map_or(total, |class| 1usize << class)
            .max(ENTRY_BYTES_MIN);
        if self.bytes + charge > limits.session_bytes_max {
            return Err(Error::Busy(format!(
                "this session already holds {} bytes of uploaded values on this core, and \
                 {charge} more would pass its limit of {}: send the requests that use them first",
                self.bytes, limits.session_bytes_max
            )));
        }
        if self.core_bytes.get() + charge > limits.core_bytes_max {
            return Err(Error::Busy(format!(
                "the sessions of this core hold {} bytes of uploaded values, and {charge} more \
                 would pass the core's limit of {}: retry",
                self.core_bytes.get(),
                limits.core_bytes_max
            )));
        }
        let target = match arena.alloc_upload(total) {
            Some(upload) => Target::Arena(upload),
            None => Target::Heap(vec![0; total]),
        };
        self.hold(charge);
        self.receiving = Some(Receiving {
            request: chunk.request,
            total,
            received: 0,
            target,
            charge,
            last_ms: now_ms,
        });
        Ok(())
    }

    /// Frees everything the session holds (it ended).
    pub fn clear(&mut self, arena: Option<&mut Arena>) {
        self.abandon(arena);
        while let Some(waiting) = self.waiting.pop_front() {
            self.release(waiting.charge);
        }
    }

    /// The oldest finished upload of request `request`, for a value field that names one: its
    /// value, or why it failed (also when none is waiting). Uploads of other requests waiting
    /// before it are dropped: their requests never came (ids are taken in order, so no request
    /// still to come can name them).
    pub fn take(&mut self, request: u32) -> Result<Bytes, Error> {
        while self.waiting.front().is_some_and(|w| w.request != request) {
            let stale = self.waiting.pop_front().expect("checked");
            self.release(stale.charge);
        }
        match self.waiting.pop_front() {
            Some(waiting) => {
                self.release(waiting.charge);
                waiting.outcome
            }
            None => Err(Error::InvalidArgument(format!(
                "request {request} names an uploaded value, but no upload for it finished before it"
            ))),
        }
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        self.core_bytes.set(self.core_bytes.get() - self.bytes);
    }
}
