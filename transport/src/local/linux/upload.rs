//! Values larger than a ring's frames: a session sends each one ahead of the request that
//! uses it as UPLOAD frames (`codec::upload_chunk`), which its core copies straight from the
//! request ring into a block of its arena; the request then carries
//! `codec::UPLOADED_LENGTH` in the value's place, and the core puts the finished value there
//! (`codec::fill_uploaded_values`). One copy by the client (into the ring), one by the core
//! (out of it, to where the value stays): the shard keeps the arena block as the value.
//!
//! The rules (docs/shm-layout.md, "Large values"): per session and core, one value is being
//! received at a time and finished ones wait in order for the requests that name them; a
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
    total: usize,
    received: usize,
    target: Target,
}

/// One session's uploads on one core.
pub(super) struct Uploads {
    receiving: Option<Receiving>,
    /// Finished uploads, oldest first; a failed one is the error its request gets.
    waiting: VecDeque<Result<Bytes, Error>>,
    /// Bytes held: the value being received (all of its length, reserved at its start) and
    /// the finished ones waiting.
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

    /// Queues the outcome of an upload for the request that names it.
    fn finish(&mut self, outcome: Result<Bytes, Error>) -> Result<(), TooManyWaiting> {
        if self.waiting.len() >= WAITING_MAX {
            return Err(TooManyWaiting);
        }
        self.waiting.push_back(outcome);
        Ok(())
    }

    /// Drops the value being received, if any; whether there was one.
    fn abandon(&mut self) -> bool {
        match self.receiving.take() {
            Some(receiving) => {
                self.release(receiving.total);
                true
            }
            None => false,
        }
    }

    /// Takes in one UPLOAD frame's chunk: `copy` writes the chunk's bytes into the slice it is
    /// given (exactly `chunk.len` bytes). An error only when the session must be cut off.
    pub fn receive(
        &mut self,
        chunk: UploadChunk,
        arena: &mut Arena,
        limits: &UploadLimits,
        copy: impl FnOnce(&mut [u8]),
    ) -> Result<(), TooManyWaiting> {
        if chunk.offset == 0 {
            if let Some(receiving) = &self.receiving {
                let error = Error::InvalidArgument(format!(
                    "an upload of {} bytes was abandoned after {} bytes (a new one started)",
                    receiving.total, receiving.received
                ));
                self.abandon();
                self.finish(Err(error))?;
            }
            if let Err(error) = self.start(chunk.total, arena, limits) {
                return self.finish(Err(error));
            }
        }
        let Some(receiving) = self.receiving.as_mut() else {
            // A part of an upload that failed at its start (its request gets that error).
            return Ok(());
        };
        let offset = chunk.offset as usize;
        if chunk.total != receiving.total as u64 || offset != receiving.received {
            let error = Error::InvalidArgument(format!(
                "an upload chunk for bytes {offset}.. of a {}-byte value arrived where bytes \
                 {}.. of a {}-byte value were due",
                chunk.total, receiving.received, receiving.total
            ));
            self.abandon();
            return self.finish(Err(error));
        }
        let len = chunk.len as usize;
        match &mut receiving.target {
            Target::Arena(upload) => copy(upload.chunk_mut(offset, len)),
            Target::Heap(bytes) => copy(&mut bytes[offset..offset + len]),
        }
        receiving.received += len;
        if receiving.received == receiving.total {
            let receiving = self.receiving.take().expect("receiving");
            let value = match receiving.target {
                Target::Arena(upload) => upload.finish().into_bytes(),
                Target::Heap(bytes) => Bytes::from(bytes),
            };
            // Still held (as a waiting value) until a request takes it.
            return self.finish(Ok(value));
        }
        Ok(())
    }

    /// Starts receiving a value of `total` bytes, within the limits.
    fn start(&mut self, total: u64, arena: &mut Arena, limits: &UploadLimits) -> Result<(), Error> {
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if total > limits.value_bytes_max {
            return Err(Error::ValueTooLarge {
                length: total,
                limit: limits.value_bytes_max,
            });
        }
        if self.bytes + total > limits.session_bytes_max {
            return Err(Error::Busy(format!(
                "this session already holds {} bytes of uploaded values on this core, and \
                 {total} more would pass its limit of {}: send the requests that use them first",
                self.bytes, limits.session_bytes_max
            )));
        }
        if self.core_bytes.get() + total > limits.core_bytes_max {
            return Err(Error::Busy(format!(
                "the sessions of this core hold {} bytes of uploaded values, and {total} more \
                 would pass the core's limit of {}: retry",
                self.core_bytes.get(),
                limits.core_bytes_max
            )));
        }
        let target = match arena.alloc_upload(total) {
            Some(upload) => Target::Arena(upload),
            None => Target::Heap(vec![0; total]),
        };
        self.hold(total);
        self.receiving = Some(Receiving {
            total,
            received: 0,
            target,
        });
        Ok(())
    }

    /// Frees everything the session holds (it ended).
    pub fn clear(&mut self) {
        self.abandon();
        while let Some(outcome) = self.waiting.pop_front() {
            if let Ok(value) = outcome {
                self.release(value.len());
            }
        }
    }

    /// The oldest finished upload, for a request that names one: its value, or why it failed
    /// (also when none is waiting).
    pub fn take(&mut self) -> Result<Bytes, Error> {
        match self.waiting.pop_front() {
            Some(Ok(value)) => {
                self.release(value.len());
                Ok(value)
            }
            Some(Err(error)) => Err(error),
            None => Err(Error::InvalidArgument(
                "the request names an uploaded value, but no upload finished before it".into(),
            )),
        }
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        self.core_bytes.set(self.core_bytes.get() - self.bytes);
    }
}
