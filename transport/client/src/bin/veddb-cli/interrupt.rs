//! Ctrl-C: what stops a command that runs until stopped (`subscribe`, `--latency`,
//! `--repeat -1`) without ending the program, so that the prompt can go on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::SIGINT;

/// How often a loop that runs until stopped looks whether Ctrl-C was pressed: the longest
/// a Ctrl-C waits to be noticed.
pub const POLL: Duration = Duration::from_millis(50);

/// Whether Ctrl-C was pressed since the flag was last cleared.
#[derive(Clone)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
}

impl Interrupt {
    /// Catches Ctrl-C (SIGINT) from now on: a first one sets the flag; a second one while the
    /// flag is still set (nothing noticed the first: a call that hangs) ends the program as
    /// Ctrl-C does by default. When the handler cannot be installed, Ctrl-C keeps its default
    /// action (the program ends) and the flag is never set.
    pub fn catch() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        // The order matters: the conditional default action looks at the flag before the
        // second handler sets it, so the first Ctrl-C only sets the flag.
        if signal_hook::flag::register_conditional_default(SIGINT, Arc::clone(&flag)).is_ok() {
            let _ = signal_hook::flag::register(SIGINT, Arc::clone(&flag));
        }
        Interrupt { flag }
    }

    /// A flag that nothing sets: Ctrl-C keeps its default action.
    pub fn never() -> Interrupt {
        Interrupt {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether Ctrl-C was pressed; clears the flag.
    pub fn take(&self) -> bool {
        // SeqCst, as signal-hook's handler stores it.
        self.flag.swap(false, Ordering::SeqCst)
    }

    /// Forgets a Ctrl-C that nothing was waiting for (pressed during a command that does not
    /// run until stopped), so that the next one is a first one again.
    pub fn clear(&self) {
        self.flag.store(false, Ordering::SeqCst);
    }

    /// Sleeps for `duration`, or until Ctrl-C: whether Ctrl-C cut it short (the flag cleared).
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.take() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }
}
