//! Time, as the engine and its frontends see it.
//!
//! Nothing on a core reads the operating system's clocks directly: the core's loop reads its
//! [`Clock`] once a round into a coarse clock ([`CoreContext::now_ms`](crate::CoreContext::now_ms)),
//! and frontends ask their [`CoreContext`](crate::CoreContext) for time
//! ([`now_ms`](crate::CoreContext::now_ms), [`monotonic`](crate::CoreContext::monotonic)). A
//! test (or a deterministic simulation of several cores on one thread) passes its own clock in
//! [`EngineConfig::clock`](crate::EngineConfig::clock).

use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch (what expiry deadlines and TTLs are measured in).
    fn unix_ms(&self) -> u64;
    /// A monotonic instant (for intervals and deadlines that must not jump with the wall clock).
    fn monotonic(&self) -> Instant;
}

/// The operating system's clocks.
#[derive(Clone, Copy, Default)]
pub struct SystemClock;

/// The engine's default clock.
pub fn system_clock() -> std::sync::Arc<dyn Clock> {
    std::sync::Arc::new(SystemClock)
}

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
        let now = SystemTime::now();
        now.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn monotonic(&self) -> Instant {
        #[allow(clippy::disallowed_methods)] // the one place the monotonic clock is read
        Instant::now()
    }
}

impl fmt::Debug for SystemClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemClock")
    }
}
