//! Futex waits and wakes through shared mappings; eventfds.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veddb_shm::{futex_wait, futex_wake, FutexWait, Segment};

#[test]
fn futex_mismatch_and_timeout() {
    let word = AtomicU32::new(5);
    assert_eq!(futex_wait(&word, 4, None), FutexWait::Mismatch);
    let t = Instant::now();
    let r = futex_wait(&word, 5, Some(Duration::from_millis(20)));
    assert!(
        matches!(r, FutexWait::TimedOut | FutexWait::Interrupted),
        "{r:?}"
    );
    if r == FutexWait::TimedOut {
        assert!(t.elapsed() >= Duration::from_millis(15));
    }
    assert_eq!(futex_wake(&word, 1), 0, "nobody waits");
}

/// A waiter on one thread, a waker on another, each through the segment (on Linux through two
/// distinct mappings of the same memfd, so only a process-shared futex can match them).
#[test]
fn futex_wake_across_threads_on_shared_mapping() {
    let seg = Arc::new(Segment::create("t-futex", 4096).unwrap());
    #[cfg(target_os = "linux")]
    let other = Arc::new(Segment::map_fd(seg.fd().unwrap(), true).unwrap());
    #[cfg(not(target_os = "linux"))]
    let other = Arc::clone(&seg);
    const WORD: usize = 64;
    for round in 0..20u32 {
        let waiter = {
            let other = Arc::clone(&other);
            std::thread::spawn(move || {
                let word = other.atomic_u32(WORD);
                let deadline = Instant::now() + Duration::from_secs(10);
                while word.load(Ordering::Acquire) == round {
                    assert!(Instant::now() < deadline, "never woken");
                    futex_wait(word, round, Some(Duration::from_secs(5)));
                }
                word.load(Ordering::Acquire)
            })
        };
        std::thread::sleep(Duration::from_millis(2));
        let word = seg.atomic_u32(WORD);
        word.store(round + 1, Ordering::Release);
        futex_wake(word, u32::MAX);
        assert_eq!(waiter.join().unwrap(), round + 1);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn futex_wake_counts_sleepers() {
    let seg = Arc::new(Segment::create("t-futex-count", 4096).unwrap());
    let other = Arc::new(Segment::map_fd(seg.fd().unwrap(), true).unwrap());
    let waiter = {
        let other = Arc::clone(&other);
        std::thread::spawn(move || {
            futex_wait(other.atomic_u32(0), 0, Some(Duration::from_secs(10)))
        })
    };
    // Wake until the waiter is actually asleep in the kernel and gets woken by us.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if futex_wake(seg.atomic_u32(0), 1) == 1 {
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(waiter.join().unwrap(), FutexWait::Woken);
}

#[cfg(target_os = "linux")]
#[test]
fn eventfd_counts_and_blocks() {
    use veddb_shm::EventFd;
    let e = EventFd::new().unwrap();
    e.write(1).unwrap();
    e.write(1).unwrap();
    assert_eq!(e.read().unwrap(), 2);
    let nb = EventFd::new_nonblocking().unwrap();
    assert_eq!(
        nb.read().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    nb.write(3).unwrap();
    assert_eq!(nb.read().unwrap(), 3);
    // A blocking read on one thread is released by a write from another (through a clone).
    let writer = e.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        writer.write(1).unwrap();
    });
    assert_eq!(e.read().unwrap(), 1);
    t.join().unwrap();
}
