//! Descriptor passing, peer credentials, and a cross-process run of segment + ring + futex +
//! eventfd (the test binary re-executes itself as the child).
#![cfg(target_os = "linux")]

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use veddb_shm::{
    futex_wait, futex_wake, peer_credentials, recv_with_fds, send_with_fds, ByteRing, EventFd,
    Segment,
};

#[test]
fn pass_memfd_over_socket_pair() {
    let (a, b) = UnixStream::pair().unwrap();
    let seg = Segment::create("t-pass", 4096).unwrap();
    seg.write_bytes(0, b"passed through SCM_RIGHTS");
    seg.seal_read_only_for_others().unwrap();
    let ev = EventFd::new_nonblocking().unwrap();
    send_with_fds(
        &a,
        b"attach",
        &[seg.fd().unwrap().as_raw_fd(), ev.as_raw_fd()],
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let (n, fds) = recv_with_fds(&b, &mut buf, 4).unwrap();
    assert_eq!(&buf[..n], b"attach");
    assert_eq!(fds.len(), 2);
    // Close-on-exec was set on receipt.
    // SAFETY: F_GETFD on a descriptor we own.
    let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
    // The received memfd is the same file: sealed, mappable read-only, shows the bytes.
    assert!(Segment::map_fd(fds[0].as_fd(), true).is_err());
    let ro = Segment::map_fd(fds[0].as_fd(), false).unwrap();
    let mut got = [0u8; 25];
    ro.read_bytes(0, &mut got);
    assert_eq!(&got, b"passed through SCM_RIGHTS");
    seg.write_bytes(0, b"P");
    ro.read_bytes(0, &mut got[..1]);
    assert_eq!(&got[..1], b"P");
    // The received eventfd is the same counter.
    let ev2 = EventFd::from_fd(fds.into_iter().nth(1).unwrap());
    ev2.write(1).unwrap();
    assert_eq!(ev.read().unwrap(), 1);
}

#[test]
fn plain_bytes_and_errors() {
    let (a, b) = UnixStream::pair().unwrap();
    send_with_fds(&a, b"no fds", &[]).unwrap();
    let mut buf = [0u8; 16];
    let (n, fds) = recv_with_fds(&b, &mut buf, 0).unwrap();
    assert_eq!((&buf[..n], fds.len()), (&b"no fds"[..], 0));
    // Descriptors need data to travel with.
    let ev = EventFd::new().unwrap();
    assert!(send_with_fds(&a, b"", &[ev.as_raw_fd()]).is_err());
    // More descriptors than the receiver accepts: an error, the extras are closed.
    let e1 = EventFd::new().unwrap();
    let e2 = EventFd::new().unwrap();
    send_with_fds(&a, b"two", &[e1.as_raw_fd(), e2.as_raw_fd()]).unwrap();
    let err = recv_with_fds(&b, &mut buf, 1).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    // A bad descriptor number is the kernel's EBADF, not undefined behavior.
    assert!(send_with_fds(&a, b"bad", &[-1]).is_err());
    // Peer gone: EOF on receive, EPIPE (not SIGPIPE) on send.
    drop(b);
    assert!(send_with_fds(&a, b"x", &[ev.as_raw_fd()]).is_err());
    let (c, d) = UnixStream::pair().unwrap();
    drop(c);
    assert_eq!(recv_with_fds(&d, &mut buf, 2).unwrap().0, 0);
}

#[test]
fn large_message_with_fds_arrives_whole() {
    let (a, b) = UnixStream::pair().unwrap();
    let seg = Segment::create("t-large", 4096).unwrap();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let sender = {
        let payload = payload.clone();
        let fd = seg.fd().unwrap().as_raw_fd();
        std::thread::spawn(move || send_with_fds(&a, &payload, &[fd]).unwrap())
    };
    let mut got = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < payload.len() {
        let (n, f) = recv_with_fds(&b, &mut buf, 1).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
        fds.extend(f);
    }
    sender.join().unwrap();
    assert_eq!(got, payload);
    assert_eq!(fds.len(), 1);
}

#[test]
fn peer_credentials_of_pair() {
    let (a, _b) = UnixStream::pair().unwrap();
    let cred = peer_credentials(&a).unwrap();
    assert_eq!(cred.pid, std::process::id() as i32);
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!((cred.uid, cred.gid), (uid, gid));
}

const CHILD_ENV: &str = "VEDDB_SHM_TEST_CHILD_SOCKET";
const RING: ByteRing = ByteRing {
    head_offset: 64,
    data_offset: 4096,
    size: 4096,
};
const WAKE_WORD: usize = 0;
const FRAMES: u32 = 20_000;

fn frame_payload(i: u32) -> Vec<u8> {
    let len = (i as usize * 7) % 300;
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..len).map(|j| (i as usize + j) as u8));
    v
}

/// The child half of `cross_process`: a no-op unless the parent set the environment variable.
#[test]
fn cross_process_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let sock = UnixStream::connect(path).unwrap();
    let mut buf = [0u8; 16];
    let (n, fds) = recv_with_fds(&sock, &mut buf, 3).unwrap();
    assert_eq!(&buf[..n], b"attach");
    let [data, ring, ev]: [_; 3] = fds.try_into().unwrap();
    // The data segment is sealed: read-only for us.
    assert!(Segment::map_fd(data.as_fd(), true).is_err());
    let data = Segment::map_fd(data.as_fd(), false).unwrap();
    let mut hello = [0u8; 5];
    data.read_bytes(0, &mut hello);
    assert_eq!(&hello, b"hello");
    let ring_seg = Arc::new(Segment::map_fd(ring.as_fd(), true).unwrap());
    let ev = EventFd::from_fd(ev);
    let mut producer = RING.producer(Arc::clone(&ring_seg)).unwrap();
    for i in 0..FRAMES {
        let p = frame_payload(i);
        while !producer.try_push(&p).unwrap() {
            std::hint::spin_loop();
        }
    }
    // Then wake the parent's futex waiter, and its eventfd.
    let word = ring_seg.atomic_u32(WAKE_WORD);
    word.store(1, Ordering::Release);
    futex_wake(word, 1);
    ev.write(1).unwrap();
    (&sock).write_all(b"done").unwrap();
}

#[test]
fn cross_process() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("veddb-shm-xproc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("sock");
    let listener = UnixListener::bind(&sock_path).unwrap();

    let data = Segment::create("t-xproc-data", 4096).unwrap();
    data.write_bytes(0, b"hello");
    data.seal_read_only_for_others().unwrap();
    let ring_seg = Arc::new(Segment::create("t-xproc-ring", 8192).unwrap());
    let ev = EventFd::new().unwrap();
    let mut consumer = RING.consumer(Arc::clone(&ring_seg)).unwrap();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "cross_process_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &sock_path)
        .spawn()
        .unwrap();
    let (sock, _) = listener.accept().unwrap();
    let cred = peer_credentials(&sock).unwrap();
    assert_eq!(cred.pid, child.id() as i32);
    assert!(veddb_shm::process_alive(cred.pid));
    let started = veddb_shm::process_start_time(cred.pid).unwrap();
    send_with_fds(
        &sock,
        b"attach",
        &[
            data.fd().unwrap().as_raw_fd(),
            ring_seg.fd().unwrap().as_raw_fd(),
            ev.as_raw_fd(),
        ],
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    for i in 0..FRAMES {
        let frame = loop {
            if let Some(f) = consumer.peek().unwrap() {
                break f;
            }
            assert!(Instant::now() < deadline, "child stalled at frame {i}");
            std::thread::yield_now();
        };
        consumer.copy_payload(&frame, &mut out);
        consumer.advance(frame);
        assert_eq!(out, frame_payload(i));
    }
    // The futex word is set (or is about to be) and woken across the processes.
    let word = ring_seg.atomic_u32(WAKE_WORD);
    while word.load(Ordering::Acquire) == 0 {
        assert!(Instant::now() < deadline);
        futex_wait(word, 0, Some(Duration::from_secs(5)));
    }
    assert_eq!(ev.read().unwrap(), 1);
    let mut done = [0u8; 4];
    let (n, _) = recv_with_fds(&sock, &mut done, 0).unwrap();
    assert_eq!(&done[..n], &b"done"[..n]);
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    assert!(!veddb_shm::process_alive(cred.pid));
    assert!(veddb_shm::process_start_time(cred.pid).map_or(true, |t| t != started));
    let _ = std::fs::remove_dir_all(&dir);
}
