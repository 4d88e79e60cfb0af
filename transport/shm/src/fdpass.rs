//! Unix socket descriptor passing (`SCM_RIGHTS`) and peer credentials (`SO_PEERCRED`). Linux.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one message may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

const FD_BYTES: usize = std::mem::size_of::<RawFd>();

/// `CMSG_SPACE` for `n` descriptors, as a count of u64 words (the control buffer must be aligned
/// for `cmsghdr`, which u64 words are).
fn cmsg_words(n: usize) -> (usize, usize) {
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE((n * FD_BYTES) as libc::c_uint) } as usize;
    (space, space.div_ceil(8))
}

fn send_nosignal(sock: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: sends from a live slice on a descriptor borrowed for the call.
        let ret = unsafe {
            libc::send(
                sock.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        bytes = &bytes[ret as usize..];
    }
    Ok(())
}

/// Sends all of `bytes` with the descriptors `fds` attached (`sendmsg` + `SCM_RIGHTS`,
/// `MSG_NOSIGNAL`: a closed peer is an `EPIPE` error, not a signal). The descriptors travel with
/// the first byte of `bytes`, which must therefore not be empty when `fds` is not. The receiver
/// gets new descriptors for the same open files; ours stay open.
pub fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.is_empty() {
        return send_nosignal(sock, bytes);
    }
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors need at least one byte of data to travel with",
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let (space, words) = cmsg_words(fds.len());
    let mut control = vec![0u64; words];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes `control`, which is aligned for cmsghdr and CMSG_SPACE(n fds) long,
    // so the first header and its CMSG_LEN(n fds) bytes of data fit in it; the fds are copied
    // byte-wise because CMSG_DATA need not be aligned for i32.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        debug_assert!(!cmsg.is_null());
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * FD_BYTES) as libc::c_uint) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            fds.len() * FD_BYTES,
        );
    }
    let sent = loop {
        // SAFETY: `msg` points at `iov` (a live slice) and `control`, both alive for the call; the
        // kernel only reads them.
        let ret = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if ret >= 0 {
            break ret as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // A stream socket may take part of the data; the descriptors went with the first part.
    send_nosignal(sock, &bytes[sent..])
}

/// Receives up to `buf.len()` bytes and up to `max_fds` descriptors (`recvmsg` with
/// `MSG_CMSG_CLOEXEC`, so received descriptors are close-on-exec). Returns the byte count (0:
/// the peer closed) and the descriptors, owned.
///
/// Descriptors arrive with the bytes they were sent with; a stream socket may deliver those bytes
/// split over several calls, so frame your messages. If the peer sent more than `max_fds`, the
/// kernel closes the extra ones and this returns an `InvalidData` error (the descriptors that did
/// arrive are closed too): treat the peer as misbehaving.
pub fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let max_fds = max_fds.min(MAX_FDS);
    let (space, words) = if max_fds == 0 {
        (0, 0)
    } else {
        cmsg_words(max_fds)
    };
    let mut control = vec![0u64; words];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if space > 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
    }
    let received = loop {
        // SAFETY: `msg` points at `iov` (covering the live, exclusively borrowed `buf`) and at
        // `control` with its true length; the kernel writes at most those lengths.
        let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if ret >= 0 {
            break ret as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut fds = Vec::new();
    if space > 0 {
        // SAFETY: the kernel set `msg_controllen` to the bytes of `control` it filled; the CMSG
        // macros walk only headers inside that length, and each SCM_RIGHTS payload holds
        // (cmsg_len - CMSG_LEN(0)) / 4 descriptors that were just installed in this process and
        // are owned by nobody else. Reads are unaligned-safe.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let header = cmsg.read_unaligned();
                if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                    let data_len =
                        (header.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let data = libc::CMSG_DATA(cmsg);
                    for i in 0..data_len / FD_BYTES {
                        let raw = data.add(i * FD_BYTES).cast::<RawFd>().read_unaligned();
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
    // CMSG_SPACE rounds up, so the buffer may have held a few more than `max_fds`.
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > max_fds {
        drop(fds);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "peer sent more descriptors than expected",
        ));
    }
    Ok((received, fds))
}

/// The credentials of the process at the other end of a Unix socket, as the kernel recorded them
/// when the connection was made (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The peer's pid, uid and gid (`getsockopt(SO_PEERCRED)`).
pub fn peer_credentials(sock: &UnixStream) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live locals of the size the option writes.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// `SO_PEERGROUPS` (Linux 4.13), where its value is the asm-generic one (`libc` does not
/// export it); `None` on the architectures that number it differently.
const SO_PEERGROUPS: Option<libc::c_int> = if cfg!(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv32",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "mips",
    target_arch = "mips64"
)) {
    Some(59)
} else {
    None
};

/// Most supplementary groups asked for (the kernel's `NGROUPS_MAX`).
const PEER_GROUPS_MAX: usize = 65_536;

/// The peer's supplementary groups, as the kernel recorded them when the connection was made
/// (`getsockopt(SO_PEERGROUPS)`, Linux 4.13 and later; `Unsupported` where the option is not
/// known). With [`peer_credentials`]' gid these are every group the peer process had when it
/// connected, read from the socket: no later change of the process, or reuse of its pid, can
/// alter them (unlike `/proc/PID/status`).
pub fn peer_groups(sock: &UnixStream) -> io::Result<Vec<u32>> {
    let Some(option) = SO_PEERGROUPS else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_PEERGROUPS is not known on this architecture",
        ));
    };
    // Most processes have a few groups: start small, grow to what the kernel says it needs.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of `len` bytes; the kernel writes at most `len` bytes
        // into it, and the length it has (or needs) into `len`.
        let ret = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if ret == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE)
            || count <= groups.len()
            || count > PEER_GROUPS_MAX
        {
            return Err(error);
        }
        groups.resize(count, 0);
    }
}
