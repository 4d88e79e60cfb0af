//! Work a frontend brings into its core's one loop.

use std::task::{Context, Poll};

use super::CoreContext;

/// Something a core polls in its loop beside its own inbox: a frontend's shared-memory rings,
/// which no runtime can wait on. A frontend gives each core one source (through
/// [`CoreSetup`](crate::CoreSetup)); the core then has one loop, one spin window and one park
/// for everything it serves:
///
/// - every round of the loop calls [`poll`](Self::poll), which serves what waits, running
///   requests through the [`CoreContext`] it is given;
/// - while the core spins it asks [`has_work`](Self::has_work) (cheap, read-only);
/// - before it parks it calls [`prepare_park`](Self::prepare_park) (tell producers to ring),
///   asks `has_work` once more (a producer that published before it saw the flag is seen
///   here: the Dekker pattern of [`Doorbell`](crate::doorbell::Doorbell)), and while parked
///   polls [`poll_wake`](Self::poll_wake) beside its doorbell and its timers;
/// - awake again, it calls [`cancel_park`](Self::cancel_park);
/// - when the engine stops it calls [`stop`](Self::stop) once, after the last `poll`.
///
/// A source lives on its core's thread and is never shared: what it keeps needs no lock.
pub trait CoreSource {
    /// Serves what waits (bounded: a round, not until empty, so other work gets its turn);
    /// returns how many items it handled (0: nothing waited).
    fn poll(&mut self, context: &CoreContext) -> usize;

    /// Whether anything waits for `poll`. Called while the core spins and before it parks;
    /// must not block or write.
    fn has_work(&self) -> bool;

    /// Whether a client of this source waits on this core from the core's own CPU: one ran
    /// there when it sent the requests of the source's last round with work. The core then
    /// gives way while it waits for more (it yields the CPU between polls instead of spinning),
    /// so that the client it waits for can run. Asked while the core spins; cheap, no writes
    /// to shared memory. A source that cannot tell says `false`.
    fn client_shares_cpu(&self) -> bool {
        false
    }

    /// The longest the core may sleep before it polls this source again, even if no producer
    /// wakes it (for work that frees without a wake-up). `None`: no limit of its own.
    fn park_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// The core is about to park: make producers wake it from now on (then `has_work` is
    /// asked once more, after a SeqCst fence of the caller's).
    fn prepare_park(&mut self) {}

    /// The core is awake again (after `prepare_park`).
    fn cancel_park(&mut self) {}

    /// While the core is parked: `Ready` once a producer of this source woke it. Registers
    /// `cx`'s waker like any future; must never block (a descriptor a client can reach is
    /// read only after readiness, never with a blocking call).
    fn poll_wake(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }

    /// The engine is stopping: end what the source serves (its clients are told by the
    /// frontend). Called once, after the last `poll`.
    fn stop(&mut self, _context: &CoreContext) {}
}
