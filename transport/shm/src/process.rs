//! Is a peer process still there, and is it still the same process?

/// Whether a process with this pid exists (`kill(pid, 0)`: `ESRCH` means gone; `EPERM` means it
/// exists under another user). Pids ≤ 0 name process groups, not processes: `false`.
///
/// Pids are reused: pair this with [`process_start_time`](crate::process_start_time) (Linux)
/// recorded at attach to tell the same process from a newcomer.
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission checks; nothing is sent.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The start time of a process, in clock ticks after boot (field 22, `starttime`, of
/// `/proc/<pid>/stat`). Constant for the life of a process: a different value for the same pid
/// means the pid was reused. Linux only.
#[cfg(target_os = "linux")]
pub fn process_start_time(pid: i32) -> std::io::Result<u64> {
    use std::io;
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pid must be positive",
        ));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/<pid>/stat"))
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so the fields are counted after the last `)`.
#[cfg(target_os = "linux")]
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the `)`: field 3 (state) is the first, so field 22 is the 20th (index 19).
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The process's descriptor limit (`RLIMIT_NOFILE`) before and after [`raise_fd_limit`].
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found.
    pub before: u64,
    /// The soft limit now in force.
    pub now: u64,
}

/// Raises the soft descriptor limit to the hard one (to `/proc/sys/fs/nr_open` when the hard
/// limit is unlimited), as a server holding a descriptor per client should. When the kernel
/// refuses, the soft limit stays as it was (`now == before`). Linux.
#[cfg(target_os = "linux")]
#[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on some Linux targets
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur as u64;
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20)
    } else {
        limit.rlim_max as u64
    };
    if before != libc::RLIM_INFINITY as u64 && before < target {
        let raised = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(FdLimit {
                before,
                now: target,
            });
        }
    }
    Ok(FdLimit {
        before,
        now: before,
    })
}

/// How many descriptors this process has open now (entries of `/proc/self/fd`, less the one
/// the count itself uses). Linux.
#[cfg(target_os = "linux")]
pub fn open_fd_count() -> std::io::Result<u64> {
    let entries = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(entries.saturating_sub(1))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_comm() {
        let line = "1234 (a) b (c) d) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_process() {
        let me = std::process::id() as i32;
        assert!(process_alive(me));
        let t1 = process_start_time(me).unwrap();
        let t2 = process_start_time(me).unwrap();
        assert_eq!(t1, t2);
        assert!(!process_alive(0));
        assert!(!process_alive(-1));
        // Above the kernel's pid_max (at most 2^22).
        assert!(!process_alive(i32::MAX));
        assert!(process_start_time(i32::MAX).is_err());
    }

    #[test]
    fn exited_child_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(process_alive(pid)); // a zombie until reaped
        child.wait().unwrap();
        // Reaped: the pid is free (reuse within this instant is practically impossible).
        assert!(!process_alive(pid));
        assert!(process_start_time(pid).is_err());
    }
}
