//! [`Readiness`]: which of many descriptors need attention (`epoll`, level-triggered), so one
//! thread can watch thousands of sockets and sleep until one of them is readable, closed or a
//! deadline of its own comes. Linux.
//!
//! The attach thread of the local frontend uses it for the attach socket, every handshake in
//! progress and every attached session's socket: an idle session costs nothing, and a client
//! that dies is seen at once (its socket becomes readable with end-of-file).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Most events one [`Readiness::wait`] returns (more stay pending for the next call: the
/// registrations are level-triggered, so nothing is lost).
pub const READY_EVENTS_MAX: usize = 256;

/// What one watched descriptor reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyEvent {
    /// The token the descriptor was watched with.
    pub token: u64,
    /// Data (or end-of-file) is waiting to be read.
    pub readable: bool,
    /// The peer closed its side (`EPOLLRDHUP` / `EPOLLHUP`) or the descriptor has an error
    /// (`EPOLLERR`): a read says which.
    pub closed: bool,
}

/// An epoll instance (close-on-exec). Watching is level-triggered: a descriptor is reported by
/// every [`wait`](Self::wait) for as long as it stays readable.
///
/// A watched descriptor that is closed leaves the set by itself once no other descriptor
/// refers to its open file, so closing is enough to stop watching a socket nobody else holds;
/// a stale registration can only report a token its owner no longer knows (never anything
/// unsafe).
#[derive(Debug)]
pub struct Readiness {
    epoll: OwnedFd,
}

impl Readiness {
    /// A new, empty set.
    pub fn new() -> io::Result<Readiness> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Readiness { epoll })
    }

    /// Watches `fd` for readability and the peer's close, reported with `token`.
    pub fn watch_readable(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Stops watching `fd`.
    pub fn unwatch(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_DEL, fd, 0)
    }

    fn control(&self, operation: libc::c_int, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are live for the call; `event` is a live local the kernel
        // only reads (and ignores for EPOLL_CTL_DEL).
        let ret = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                operation,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sleeps until a watched descriptor is ready or `timeout` passes (`None`: no timeout),
    /// then replaces `events` with what is ready (at most [`READY_EVENTS_MAX`]; empty after a
    /// timeout or a signal). The timeout is rounded up to whole milliseconds, so a caller
    /// waiting for a deadline never wakes just before it.
    pub fn wait(&self, events: &mut Vec<ReadyEvent>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let timeout_ms: libc::c_int = match timeout {
            None => -1,
            Some(timeout) => {
                let ms = timeout.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; READY_EVENTS_MAX];
        // SAFETY: `raw` is a live local array of READY_EVENTS_MAX entries, the count passed;
        // the kernel writes at most that many.
        let count = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                raw.as_mut_ptr(),
                READY_EVENTS_MAX as libc::c_int,
                timeout_ms,
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(error),
            };
        }
        let closed_bits = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        events.extend(raw[..count as usize].iter().map(|event| {
            // Copies out of the (packed on x86_64) struct before use.
            let bits = event.events;
            let token = event.u64;
            ReadyEvent {
                token,
                readable: bits & libc::EPOLLIN as u32 != 0,
                closed: bits & closed_bits != 0,
            }
        }));
        Ok(())
    }
}
