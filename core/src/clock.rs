//! Time sources: the wall clock, or tokio's clock, which tests and the
//! simulator pause and advance.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as a backend sees them.
///
/// The memory backend derives `*` ids and idle times from its clock, so with
/// a virtual clock a whole run is a function of its inputs.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time in ms since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 reads as the epoch rather than failing.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// tokio's clock, offset to a fixed epoch time.
///
/// Under `tokio::time::pause()` (or `#[tokio::test(start_paused = true)]`)
/// it moves only when the runtime advances it, so `tokio::time::sleep` in a
/// test moves the broker's time too, instantly and deterministically.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use crewq_core::{Clock, TokioClock};
/// let clock = TokioClock::starting_at(1_000);
/// tokio::time::sleep(Duration::from_millis(250)).await;
/// assert_eq!(clock.now_ms(), 1_250);
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    epoch_ms: u64,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `epoch_ms` now and moves with tokio's time.
    pub fn starting_at(epoch_ms: u64) -> Self {
        TokioClock {
            epoch_ms,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    /// Starts at 2024-01-01T00:00:00Z, so ids look like real ones.
    fn default() -> Self {
        TokioClock::starting_at(1_704_067_200_000)
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.epoch_ms.saturating_add(elapsed)
    }
}
