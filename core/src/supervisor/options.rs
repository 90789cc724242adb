//! [`SupervisorOptions`]: how a supervisor reads and waits.

use std::time::Duration;

/// The shortest `BLOCK` sent: Redis reads `BLOCK 0` as "forever".
pub(super) const MIN_BLOCK: Duration = Duration::from_millis(1);

/// How a [`Supervisor`](super::Supervisor) reads and waits.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::supervisor::SupervisorOptions;
/// let options = SupervisorOptions::default().workflow_timeout(Duration::from_secs(30));
/// assert_eq!(options.poll, Duration::from_secs(1));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupervisorOptions {
    /// The longest one blocking read waits (default 1 s). A result on a
    /// results stream wakes the read of that stream at once, so with one
    /// stream (the seed layout) this only bounds how long another gather
    /// waits for its turn to read. With several (the cluster layout and
    /// several agent types) the reads of all of them are awaited together,
    /// and a result may wait up to this long.
    pub poll: Duration,
    /// How long [`Supervisor::run_pipeline`](super::Supervisor::run_pipeline) gathers (default 120 s, the
    /// seed's).
    pub workflow_timeout: Duration,
    /// The most entries one read returns (default 100).
    pub batch: usize,
    /// How long results found in the pending list after a restart wait for
    /// a workflow to claim them before they are dropped (default 10 min).
    pub unclaimed_grace: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            poll: Duration::from_secs(1),
            workflow_timeout: Duration::from_secs(120),
            batch: 100,
            unclaimed_grace: Duration::from_secs(600),
        }
    }
}

impl SupervisorOptions {
    /// Sets [`poll`](Self::poll) (at least 1 ms).
    #[must_use]
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll.max(MIN_BLOCK);
        self
    }

    /// Sets [`workflow_timeout`](Self::workflow_timeout).
    #[must_use]
    pub fn workflow_timeout(mut self, timeout: Duration) -> Self {
        self.workflow_timeout = timeout;
        self
    }

    /// Sets [`batch`](Self::batch) (at least 1).
    #[must_use]
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Sets [`unclaimed_grace`](Self::unclaimed_grace).
    #[must_use]
    pub fn unclaimed_grace(mut self, grace: Duration) -> Self {
        self.unclaimed_grace = grace;
        self
    }
}
