//! The view lease, in real time: which retired arena blocks a core keeps for its sessions'
//! epoch pins. This is the server's half of "View leases and epoch pins" in
//! `docs/shm-layout.md`; the client library keeps the other half.
//!
//! A client pins the epoch it read before each request whose answer may point into the arena,
//! and its ring header carries the **oldest** and the **newest** epoch its live views pinned.
//! The core keeps [`EpochStarts`], a small bounded record of when its epochs began on the
//! engine's monotonic clock, and asks it which epochs ended a lease or more ago: a pin of such
//! an epoch was read more than a lease ago, so its view's lease has ended. [`pin_floor`] then
//! says what a session's pins keep.
//!
//! Pure: time comes in as an argument; nothing here reads a clock or shared memory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use veddb_wire::shm::layout::ring_segment::EPOCH_PIN_NONE;

/// Epoch starts kept per lease: every epoch that lasted at least `lease / STARTS_PER_LEASE`
/// (the spacing), and otherwise one start per spacing. A pin is then known to be stale at most
/// two spacings after its lease ended (one sixteenth of the lease).
pub(crate) const STARTS_PER_LEASE: u32 = 32;
/// The least spacing between kept starts (epochs advance about once a millisecond anyway).
pub(crate) const SPACING_MIN: Duration = Duration::from_millis(1);
/// Most earlier starts kept. Two kept starts less than a spacing apart are each followed by an
/// epoch that lasted at least a spacing, and no start older than the lease is kept but the
/// newest such one, so at most `2 × (STARTS_PER_LEASE + 2)` are ever kept. Past this bound the
/// oldest would be dropped, which can only make pins look stale later, never earlier.
pub(crate) const STARTS_MAX: usize = 128;
const _: () = assert!(STARTS_MAX >= 2 * (STARTS_PER_LEASE as usize + 2));

/// When one core's epochs began: the current epoch's start, and a thinned, bounded record of
/// earlier ones (see [`STARTS_PER_LEASE`], [`STARTS_MAX`]).
#[derive(Debug)]
pub(crate) struct EpochStarts {
    lease: Duration,
    spacing: Duration,
    /// The current epoch and when it began.
    current: (u64, Instant),
    /// Earlier epochs and when they began, oldest first.
    earlier: VecDeque<(u64, Instant)>,
}

impl EpochStarts {
    /// A record for `lease`, whose current epoch `epoch` began at `now`.
    pub(crate) fn new(lease: Duration, epoch: u64, now: Instant) -> EpochStarts {
        EpochStarts {
            lease,
            spacing: (lease / STARTS_PER_LEASE).max(SPACING_MIN),
            current: (epoch, now),
            earlier: VecDeque::with_capacity(STARTS_MAX),
        }
    }

    /// The core moved on to `epoch` at `now`. `now` must be read from the clock **after** the
    /// epoch word changed: then no client read the previous epoch after `now`.
    pub(crate) fn began(&mut self, epoch: u64, now: Instant) {
        debug_assert!(epoch > self.current.0, "epochs only grow");
        let (previous, start) = self.current;
        let lasted = now.saturating_duration_since(start);
        let apart = self
            .earlier
            .back()
            .is_none_or(|&(_, kept)| start.saturating_duration_since(kept) >= self.spacing);
        if lasted >= self.spacing || apart {
            if self.earlier.len() == STARTS_MAX {
                debug_assert!(false, "more epoch starts than a lease can need");
                self.earlier.pop_front();
            }
            self.earlier.push_back((previous, start));
        }
        self.current = (epoch, now);
    }

    /// The newest epoch known to have begun a lease or more before `now`, or 0 if none. Every
    /// epoch below it ended a lease or more before `now`, so a pin below it was read more than
    /// a lease ago. Forgets the starts that no later call needs (`now` never goes back).
    pub(crate) fn stale_below(&mut self, now: Instant) -> u64 {
        let Some(horizon) = now.checked_sub(self.lease) else {
            return 0;
        };
        if self.current.1 <= horizon {
            self.earlier.clear();
            return self.current.0;
        }
        while self
            .earlier
            .get(1)
            .is_some_and(|&(_, start)| start <= horizon)
        {
            self.earlier.pop_front();
        }
        match self.earlier.front() {
            Some(&(epoch, start)) if start <= horizon => epoch,
            _ => 0,
        }
    }

    /// Earlier starts kept now (for tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.earlier.len()
    }
}

/// What one session's pins keep: every block retired in this epoch or later (`None`: nothing).
///
/// `oldest` and `newest` are the session's two pin words as read from its ring header (hostile:
/// any values), `epoch` the core's current epoch, `stale_below` from
/// [`EpochStarts::stale_below`]. The client keeps `oldest` at most, and `newest` at least, the
/// epoch of each of its live views, so:
///
/// - no pin (`oldest` is 0), or an epoch the client cannot have read (`oldest > epoch`):
///   nothing;
/// - `max(oldest, newest) < stale_below`: every live view's lease has ended: nothing;
/// - otherwise the blocks retired at `max(oldest, stale_below)` or later: a view whose lease
///   has not ended pinned at least that much (at least `oldest`, and not below `stale_below`),
///   and its block was retired in that epoch or later (it was live when the core answered).
///
/// Whatever a client writes, a session never keeps a block retired before `stale_below`: a
/// retired block is reused at most a lease (and two spacings) after the epoch it was retired in
/// ended.
pub(crate) fn pin_floor(oldest: u64, newest: u64, epoch: u64, stale_below: u64) -> Option<u64> {
    if oldest == EPOCH_PIN_NONE || oldest > epoch {
        return None;
    }
    if newest.max(oldest) < stale_below {
        return None;
    }
    Some(oldest.max(stale_below))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(320);
    const MS: Duration = Duration::from_millis(1);

    /// Any instant: time then moves only as the tests say.
    fn origin() -> Instant {
        use veddb_engine::Clock;
        veddb_engine::SystemClock.monotonic()
    }

    /// A core that advances every millisecond for `ms` milliseconds from `epoch`.
    fn run(starts: &mut EpochStarts, now: &mut Instant, epoch: &mut u64, ms: u32) {
        for _ in 0..ms {
            *now += MS;
            *epoch += 1;
            starts.began(*epoch, *now);
            starts.stale_below(*now);
        }
    }

    #[test]
    fn nothing_is_stale_within_the_first_lease() {
        let origin = origin();
        let mut starts = EpochStarts::new(LEASE, 1, origin);
        let (mut now, mut epoch) = (origin, 1);
        run(&mut starts, &mut now, &mut epoch, 300);
        assert_eq!(starts.stale_below(now), 0);
    }

    #[test]
    fn a_running_core_knows_epochs_stale_within_two_spacings() {
        let origin = origin();
        let mut starts = EpochStarts::new(LEASE, 1, origin);
        let (mut now, mut epoch) = (origin, 1);
        let spacing = LEASE / STARTS_PER_LEASE;
        run(&mut starts, &mut now, &mut epoch, 5_000);
        let stale = starts.stale_below(now);
        // Epoch e began at origin + (e - 1) ms: the exact answer is the epoch current a lease
        // ago; the record may be up to two spacings behind it, never ahead.
        let exact = epoch - LEASE.as_millis() as u64;
        assert!(
            stale <= exact,
            "{stale} > {exact}: a pin judged stale too early"
        );
        assert!(
            exact - stale <= 2 * spacing.as_millis() as u64,
            "{stale} lags {exact} by more than two spacings"
        );
        assert!(starts.kept() <= 2 * (STARTS_PER_LEASE as usize + 2));
    }

    #[test]
    fn a_long_epoch_is_remembered_so_idle_time_counts() {
        let origin = origin();
        let mut starts = EpochStarts::new(LEASE, 1, origin);
        let (mut now, mut epoch) = (origin, 1);
        run(&mut starts, &mut now, &mut epoch, 1_000);
        // A view is taken in the current epoch; the core parks (the epoch moves on as it
        // parks) and sleeps three leases; then it runs again.
        let pinned = epoch;
        now += MS / 10;
        epoch += 1;
        starts.began(epoch, now);
        assert!(starts.stale_below(now) < pinned);
        now += LEASE * 3;
        epoch += 1;
        starts.began(epoch, now);
        let stale = starts.stale_below(now);
        assert!(
            stale > pinned,
            "the pin of {pinned} is not stale ({stale}) after the idle"
        );
        assert_eq!(pin_floor(pinned, pinned, epoch, stale), None);
    }

    #[test]
    fn the_record_is_bounded_whatever_the_rhythm() {
        let origin = origin();
        let mut starts = EpochStarts::new(LEASE, 1, origin);
        let (mut now, mut epoch) = (origin, 1);
        // Alternating short and long epochs, the worst case for the thinning.
        let spacing = LEASE / STARTS_PER_LEASE;
        for i in 0..10_000u32 {
            now += if i % 2 == 0 { spacing } else { MS / 100 };
            epoch += 1;
            starts.began(epoch, now);
            starts.stale_below(now);
            assert!(starts.kept() <= 2 * (STARTS_PER_LEASE as usize + 2));
        }
    }

    #[test]
    fn a_session_keeps_what_its_live_views_need_and_no_more() {
        // No pin, or a pin the client cannot have read.
        assert_eq!(pin_floor(EPOCH_PIN_NONE, 0, 100, 0), None);
        assert_eq!(pin_floor(EPOCH_PIN_NONE, 90, 100, 0), None);
        assert_eq!(pin_floor(101, 101, 100, 0), None);
        // One view, within its lease.
        assert_eq!(pin_floor(80, 80, 100, 50), Some(80));
        // Only the oldest pin written (an older client): taken as the newest too.
        assert_eq!(pin_floor(80, 0, 100, 50), Some(80));
        // An old view past its lease and a newer one within it: the newer one's blocks stay,
        // nothing retired before the stale bound does.
        assert_eq!(pin_floor(10, 90, 100, 50), Some(50));
        // Every view past its lease.
        assert_eq!(pin_floor(10, 40, 100, 50), None);
        assert_eq!(pin_floor(10, 0, 100, 50), None);
        // Hostile values keep nothing before the stale bound.
        for (oldest, newest) in [(1, u64::MAX), (u64::MAX, u64::MAX), (100, 1), (1, 1)] {
            if let Some(floor) = pin_floor(oldest, newest, 100, 50) {
                assert!(floor >= 50, "({oldest}, {newest}) keeps from {floor}");
            }
        }
    }
}
