//! [`SupervisorOptions`]: how a supervisor reads and waits.

use std::time::Duration;

use crate::WireCodec;
use crate::retention::Retention;

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
    /// Decodes results, with its size limit (default [`WireCodec::default`],
    /// the workers' default, 512 KiB). Give the supervisor the codec its
    /// workers encode with: a result it cannot decode is never
    /// acknowledged (see [`Supervisor`](super::Supervisor), "Undecodable
    /// results").
    pub codec: WireCodec,
    /// A workflow nobody gathers for this long (since its fan-out, or its
    /// last gather stopped) is forgotten (default 1 h,
    /// [`SupervisorOptions::DEFAULT_WORKFLOW_EXPIRY`]), as
    /// [`Supervisor::forget`](super::Supervisor::forget) would, except that
    /// results it had already read go to the unclaimed results (kept for
    /// [`unclaimed_grace`](Self::unclaimed_grace) more). Without it, a
    /// workflow fanned out and never gathered stays in memory for good.
    pub workflow_expiry: Duration,
    /// How much of the results streams to keep: this supervisor trims them
    /// after acknowledging results (default [`Retention::RESULTS`], which
    /// never cuts a result some supervisor's group has not gathered).
    pub result_retention: Retention,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            poll: Duration::from_secs(1),
            workflow_timeout: Duration::from_secs(120),
            batch: 100,
            unclaimed_grace: Duration::from_secs(600),
            codec: WireCodec::default(),
            workflow_expiry: SupervisorOptions::DEFAULT_WORKFLOW_EXPIRY,
            result_retention: Retention::RESULTS,
        }
    }
}

impl SupervisorOptions {
    /// The default [`workflow_expiry`](Self::workflow_expiry): 1 hour.
    pub const DEFAULT_WORKFLOW_EXPIRY: Duration = Duration::from_secs(60 * 60);

    /// Sets [`codec`](Self::codec).
    #[must_use]
    pub fn codec(mut self, codec: WireCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets [`workflow_expiry`](Self::workflow_expiry).
    #[must_use]
    pub fn workflow_expiry(mut self, expiry: Duration) -> Self {
        self.workflow_expiry = expiry;
        self
    }

    /// Sets [`result_retention`](Self::result_retention).
    #[must_use]
    pub fn result_retention(mut self, retention: Retention) -> Self {
        self.result_retention = retention;
        self
    }

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
