//! A bounded single-producer single-consumer ring: the edge of the inbox mesh.
//!
//! One core owns the [`Producer`], one other core the [`Consumer`]. Each side keeps its own
//! index privately and a cached copy of the other side's, so a push or pop touches the shared
//! cache line of the other side only when its cache says the ring is full (or empty).
//!
//! Ordering: the producer writes the slot, then publishes `tail` with Release; the consumer
//! reads `tail` with Acquire before reading the slot (pair 1). The consumer moves the value
//! out, then publishes `head` with Release; the producer reads `head` with Acquire before
//! reusing the slot (pair 2). Model-checked with loom (`engine/tests/loom.rs`).

use std::mem::MaybeUninit;

use crate::sync::{Arc, AtomicUsize, CachePadded, Ordering, UnsafeCell};

struct Shared<T> {
    /// Next slot the consumer reads. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: values of T move from the producer's thread to the consumer's; each slot is accessed
// by one side at a time, as the head/tail protocol above guarantees.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above; the shared indices are atomics.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both handles are gone (we hold the last Arc): drop what is still queued.
        let mut head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        while head != tail {
            self.slots[head & self.mask].with_mut(|slot| {
                // SAFETY: slots in head..tail were written by the producer and not yet read.
                unsafe { (*slot).assume_init_drop() }
            });
            head = head.wrapping_add(1);
        }
    }
}

/// The writing end.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    head_cached: usize,
}

/// The reading end.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    tail_cached: usize,
}

/// A ring of `capacity` slots (a power of two, at least 1).
pub fn ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(
        capacity.is_power_of_two(),
        "ring capacity must be a power of two"
    );
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots,
        mask: capacity - 1,
    });
    (
        Producer {
            shared: shared.clone(),
            tail: 0,
            head_cached: 0,
        },
        Consumer {
            shared,
            head: 0,
            tail_cached: 0,
        },
    )
}

impl<T> Producer<T> {
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Appends `value`, or gives it back when the ring is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let capacity = self.capacity();
        if self.tail.wrapping_sub(self.head_cached) == capacity {
            // Acquire: pairs with the consumer's Release store of `head` (pair 2).
            self.head_cached = self.shared.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cached) == capacity {
                return Err(value);
            }
        }
        self.shared.slots[self.tail & self.shared.mask].with_mut(|slot| {
            // SAFETY: the slot is free: the consumer has moved past it (head > tail - capacity),
            // and only this producer writes slots.
            unsafe { (*slot).write(value) };
        });
        self.tail = self.tail.wrapping_add(1);
        // Release: pairs with the consumer's Acquire load of `tail` (pair 1).
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }
}

impl<T> Consumer<T> {
    /// Takes the oldest value, if any.
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail_cached {
            // Acquire: pairs with the producer's Release store of `tail` (pair 1).
            self.tail_cached = self.shared.tail.load(Ordering::Acquire);
            if self.head == self.tail_cached {
                return None;
            }
        }
        let value = self.shared.slots[self.head & self.shared.mask].with_mut(|slot| {
            // SAFETY: head < tail, so the producer wrote this slot and published it with the
            // Release store we acquired; nobody else reads it.
            unsafe { (*slot).assume_init_read() }
        });
        self.head = self.head.wrapping_add(1);
        // Release: pairs with the producer's Acquire load of `head` (pair 2).
        self.shared.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Whether a value is waiting. Reads the producer's index (SeqCst so it can take part in
    /// the park/wake handshake of [`crate::doorbell`]).
    pub fn has_items(&self) -> bool {
        self.head != self.tail_cached || self.shared.tail.load(Ordering::SeqCst) != self.head
    }
}

#[cfg(all(test, not(veddb_loom)))]
#[allow(clippy::disallowed_methods)] // a test of the ring alone: a producer thread of its own
mod tests {
    use super::*;

    #[test]
    fn fifo_and_bounded() {
        let (mut producer, mut consumer) = ring::<u32>(4);
        for i in 0..4 {
            producer.push(i).unwrap();
        }
        assert_eq!(
            producer.push(99),
            Err(99),
            "a full ring refuses, it does not grow"
        );
        assert!(consumer.has_items());
        assert_eq!(consumer.pop(), Some(0));
        producer.push(4).unwrap();
        for i in 1..5 {
            assert_eq!(consumer.pop(), Some(i));
        }
        assert_eq!(consumer.pop(), None);
        assert!(!consumer.has_items());
    }

    #[test]
    fn queued_values_are_dropped_with_the_ring() {
        let value = std::sync::Arc::new(());
        let (mut producer, consumer) = ring(2);
        producer.push(value.clone()).unwrap();
        drop(producer);
        drop(consumer);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }

    #[test]
    fn threads_lose_nothing() {
        let (mut producer, mut consumer) = ring::<u64>(64);
        let count = 200_000u64;
        let writer = std::thread::spawn(move || {
            for i in 0..count {
                let mut value = i;
                while let Err(back) = producer.push(value) {
                    value = back;
                    std::thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        while expected < count {
            match consumer.pop() {
                Some(value) => {
                    assert_eq!(value, expected);
                    expected += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        writer.join().unwrap();
    }
}
