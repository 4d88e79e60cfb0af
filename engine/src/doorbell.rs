//! Park and wake a core without losing a wake-up and without a syscall while it is busy.
//!
//! A core that finds no work calls [`Doorbell::prepare_park`] (registers its waker, sets
//! `parked`, SeqCst fence), then looks at its inbound rings once more: if something arrived it
//! calls [`Doorbell::cancel_park`] and carries on; otherwise it returns `Pending` and its
//! runtime blocks in io_uring (still serving sockets and timers).
//!
//! A producer pushes into a ring, then calls [`Doorbell::ring`] (SeqCst fence, then reads
//! `parked`). The two fences order "consumer sets parked / producer publishes tail" so that at
//! least one side sees the other: either the producer sees `parked` and wakes, or the
//! consumer's re-check sees the item (the Dekker pattern). While the core is busy, `parked`
//! is false and ringing costs one fence and one load.

use std::task::Waker;

use crate::sync::{fence, AtomicBool, AtomicWaker, Ordering};

#[derive(Default)]
pub struct Doorbell {
    parked: AtomicBool,
    waker: AtomicWaker,
}

impl Doorbell {
    pub fn new() -> Self {
        Doorbell {
            parked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Consumer: about to sleep. Re-check the inbound queues after this.
    pub fn prepare_park(&self, waker: &Waker) {
        #[cfg(veddb_loom)]
        self.waker.register_by_ref(waker);
        #[cfg(not(veddb_loom))]
        self.waker.register(waker);
        self.parked.store(true, Ordering::SeqCst);
        // SeqCst fence: pairs with the fence in `ring` (Dekker: store parked / load tail).
        fence(Ordering::SeqCst);
    }

    /// Consumer: found work after `prepare_park`; stay awake.
    pub fn cancel_park(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Whether the core is parked (or about to).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    /// Producer: call after publishing work. Wakes the consumer if it is parked.
    pub fn ring(&self) {
        // SeqCst fence: pairs with the fence in `prepare_park` (Dekker: store tail / load parked).
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}
