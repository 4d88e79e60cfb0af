//! Model checks of the inbox ring and the doorbell under every interleaving loom explores.
//! Run with: `RUSTFLAGS="--cfg veddb_loom" cargo test -p veddb-engine --test loom --release`
#![cfg(veddb_loom)]
// Tests drive the engine from outside it: on the OS clocks and threads of their own.
#![allow(clippy::disallowed_methods)]

use std::future::poll_fn;
use std::task::Poll;

use loom::sync::Arc;
use loom::thread;
use veddb_engine::doorbell::Doorbell;
use veddb_engine::ring::ring;

#[test]
fn ring_delivers_everything_in_order_and_never_overfills() {
    loom::model(|| {
        let (mut producer, mut consumer) = ring::<u32>(2);
        let writer = thread::spawn(move || {
            let mut refused = 0;
            for value in 0..3 {
                let mut value = value;
                loop {
                    match producer.push(value) {
                        Ok(()) => break,
                        Err(back) => {
                            value = back;
                            refused += 1;
                            thread::yield_now();
                        }
                    }
                }
            }
            refused
        });
        let mut expected = 0;
        while expected < 3 {
            match consumer.pop() {
                Some(value) => {
                    assert_eq!(value, expected);
                    expected += 1;
                }
                None => thread::yield_now(),
            }
        }
        writer.join().unwrap();
        assert_eq!(consumer.pop(), None);
    });
}

#[test]
fn ring_drops_values_left_inside() {
    loom::model(|| {
        let value = Arc::new(());
        let (mut producer, consumer) = ring(2);
        let sent = value.clone();
        let writer = thread::spawn(move || {
            producer.push(sent).unwrap();
        });
        writer.join().unwrap();
        drop(consumer);
        assert_eq!(Arc::strong_count(&value), 1);
    });
}

/// A parked consumer is always woken by a producer that pushed: no lost wake-up. A lost
/// wake-up shows up as a deadlock, which loom reports.
#[test]
fn doorbell_never_loses_a_wake_up() {
    loom::model(|| {
        let (mut producer, mut consumer) = ring::<u32>(2);
        let doorbell = Arc::new(Doorbell::new());
        let bell = doorbell.clone();
        let writer = thread::spawn(move || {
            producer.push(7).unwrap();
            bell.ring();
        });
        let value = loom::future::block_on(poll_fn(|cx| {
            if let Some(value) = consumer.pop() {
                return Poll::Ready(value);
            }
            doorbell.prepare_park(cx.waker());
            if consumer.has_items() {
                doorbell.cancel_park();
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }));
        assert_eq!(value, 7);
        writer.join().unwrap();
    });
}
