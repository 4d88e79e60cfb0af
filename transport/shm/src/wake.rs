//! Waking a thread of another process: process-shared futexes and (Linux) eventfds.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

#[cfg(target_os = "linux")]
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// How a [`futex_wait`] ended. Every outcome may be spurious: re-check the word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FutexWait {
    /// Woken by [`futex_wake`] (or spuriously).
    Woken,
    /// The word did not hold `expected` when the wait began (`EAGAIN`).
    Mismatch,
    /// The timeout passed.
    TimedOut,
    /// A signal interrupted the wait (`EINTR`).
    Interrupted,
}

/// Sleeps while `word` holds `expected`, until [`futex_wake`] on the same word (from any process
/// mapping it: the futex is not `FUTEX_PRIVATE_FLAG`), the timeout, or a signal.
///
/// Portable fallback (not Linux): polls the word with short sleeps (growing from 1 µs to 1 ms)
/// and returns `Woken` once it no longer holds `expected`; [`futex_wake`] does nothing there, so a
/// waker must change the word before waking (the usual futex protocol anyway).
#[cfg(target_os = "linux")]
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> FutexWait {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word` (valid for the call) and the optional
    // relative timespec (a live local or null); the unused uaddr2/val3 arguments are null/0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if ret == 0 {
        return FutexWait::Woken;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => FutexWait::Mismatch,
        Some(libc::ETIMEDOUT) => FutexWait::TimedOut,
        Some(libc::EINTR) => FutexWait::Interrupted,
        // EFAULT/EINVAL/ENOSYS cannot happen with a valid reference and timeout; report a
        // (spurious) wake so the caller re-checks its condition.
        _ => FutexWait::Woken,
    }
}

/// Wakes up to `n` waiters of `word` in any process; returns how many were woken.
/// (Portable fallback: does nothing and returns 0; waiters poll.)
#[cfg(target_os = "linux")]
pub fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key (valid for the call); the
    // remaining arguments are unused.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    usize::try_from(ret).unwrap_or(0)
}

/// See the Linux documentation of this function: this is the polling fallback.
#[cfg(not(target_os = "linux"))]
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> FutexWait {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    if word.load(Ordering::Acquire) != expected {
        return FutexWait::Mismatch;
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut nap = Duration::from_micros(1);
    loop {
        let now = Instant::now();
        let step = match deadline {
            Some(d) if now >= d => return FutexWait::TimedOut,
            Some(d) => nap.min(d - now),
            None => nap,
        };
        std::thread::sleep(step);
        if word.load(Ordering::Acquire) != expected {
            return FutexWait::Woken;
        }
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}

/// Polling fallback: nothing to do (waiters notice the word change themselves).
#[cfg(not(target_os = "linux"))]
pub fn futex_wake(_word: &AtomicU32, _n: u32) -> usize {
    0
}

/// An eventfd: a kernel counter a client increments ([`write`](Self::write)) to wake a core that
/// waits on the descriptor (through io_uring or poll); [`read`](Self::read) returns and resets the
/// count. Linux only. Hand it to another process with [`send_with_fds`](crate::send_with_fds)
/// and rebuild it there with [`from_fd`](Self::from_fd).
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

#[cfg(target_os = "linux")]
impl EventFd {
    fn with_flags(flags: libc::c_int) -> io::Result<Self> {
        // SAFETY: eventfd takes plain integers and returns a new descriptor or -1.
        let raw = unsafe { libc::eventfd(0, flags) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd { fd })
    }

    /// A blocking eventfd (`EFD_CLOEXEC`) with count 0: `read` sleeps until a `write`.
    pub fn new() -> io::Result<Self> {
        Self::with_flags(libc::EFD_CLOEXEC)
    }

    /// A non-blocking eventfd (`EFD_CLOEXEC | EFD_NONBLOCK`): `read` of a zero count fails with
    /// `WouldBlock`.
    pub fn new_nonblocking() -> io::Result<Self> {
        Self::with_flags(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)
    }

    /// Wraps a received eventfd descriptor (not checked to be an eventfd: a wrong descriptor
    /// makes `read`/`write` fail with `EINVAL` or read other data, never anything unsafe).
    pub fn from_fd(fd: OwnedFd) -> Self {
        EventFd { fd }
    }

    /// Adds `n` to the counter (`n` = 1 to signal); `n` must not be `u64::MAX`. A blocking
    /// eventfd would block only if the counter were about to overflow.
    pub fn write(&self, n: u64) -> io::Result<()> {
        let buf = n.to_ne_bytes();
        loop {
            // SAFETY: writes 8 bytes from a live local buffer to a descriptor we own.
            let ret = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), 8) };
            if ret == 8 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if ret < 0 && err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(if ret < 0 {
                err
            } else {
                io::Error::other("short eventfd write")
            });
        }
    }

    /// Returns the counter and resets it to 0; blocks while it is 0 (or fails with `WouldBlock`
    /// for a non-blocking eventfd).
    pub fn read(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        loop {
            // SAFETY: reads at most 8 bytes into a live local buffer from a descriptor we own.
            let ret = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            if ret == 8 {
                return Ok(u64::from_ne_bytes(buf));
            }
            let err = io::Error::last_os_error();
            if ret < 0 && err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(if ret < 0 {
                err
            } else {
                io::Error::other("short eventfd read")
            });
        }
    }

    /// A second descriptor for the same eventfd (`F_DUPFD_CLOEXEC`).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(EventFd {
            fd: self.fd.try_clone()?,
        })
    }
}

#[cfg(target_os = "linux")]
impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(target_os = "linux")]
impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(target_os = "linux")]
impl IntoRawFd for EventFd {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

#[cfg(target_os = "linux")]
impl From<EventFd> for OwnedFd {
    fn from(e: EventFd) -> OwnedFd {
        e.fd
    }
}
