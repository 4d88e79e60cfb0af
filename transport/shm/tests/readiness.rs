//! The OS helpers of the attach thread: the epoll set ([`Readiness`]), the peer's groups
//! (`SO_PEERGROUPS`) and the descriptor limit.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use veddb_shm::{open_fd_count, peer_groups, raise_fd_limit, Readiness};

#[test]
fn readiness_reports_data_and_close_by_token() {
    let readiness = Readiness::new().unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let (c, d) = UnixStream::pair().unwrap();
    readiness.watch_readable(b.as_fd(), 7).unwrap();
    readiness.watch_readable(d.as_fd(), 9).unwrap();
    let mut events = Vec::new();

    // Nothing ready: the wait times out with no events.
    readiness
        .wait(&mut events, Some(Duration::from_millis(1)))
        .unwrap();
    assert!(events.is_empty(), "{events:?}");

    // Data on one: only its token, readable, not closed.
    (&a).write_all(b"x").unwrap();
    readiness
        .wait(&mut events, Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].token, 7);
    assert!(events[0].readable);
    assert!(!events[0].closed);

    // The peer of the other closes: readable (end of file) and closed.
    drop(c);
    readiness
        .wait(&mut events, Some(Duration::from_secs(30)))
        .unwrap();
    let closed = events
        .iter()
        .find(|event| event.token == 9)
        .expect("token 9");
    assert!(closed.closed && closed.readable, "{closed:?}");

    // Level-triggered: still reported until read; unwatched, never again.
    readiness.unwatch(b.as_fd()).unwrap();
    readiness.unwatch(d.as_fd()).unwrap();
    readiness
        .wait(&mut events, Some(Duration::from_millis(1)))
        .unwrap();
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn peer_groups_are_our_own_on_a_socket_pair() {
    let (a, _b) = UnixStream::pair().unwrap();
    let mut groups = peer_groups(&a).unwrap();
    let mut own = vec![0 as libc::gid_t; 65_536];
    // SAFETY: getgroups writes at most `own.len()` gids into a live buffer of that many.
    let count = unsafe { libc::getgroups(own.len() as libc::c_int, own.as_mut_ptr()) };
    assert!(count >= 0);
    own.truncate(count as usize);
    groups.sort_unstable();
    own.sort_unstable();
    groups.dedup();
    own.dedup();
    assert_eq!(groups, own);
}

#[test]
fn the_fd_limit_is_raised_to_the_hard_limit() {
    let limit = raise_fd_limit().unwrap();
    assert!(limit.now >= limit.before, "{limit:?}");
    // Raising again finds it raised.
    let again = raise_fd_limit().unwrap();
    assert_eq!(again.before, limit.now);
    assert_eq!(again.now, limit.now);
    let open = open_fd_count().unwrap();
    assert!(
        open >= 3 && open < limit.now,
        "{open} open of {}",
        limit.now
    );
}
