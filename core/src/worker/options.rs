//! How a worker runs: concurrency, leases, time-outs and retry back-off.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::mutant::Mutant;
use crate::producer::Retention;
use crate::{Clock, Keyspace, SystemClock, Validators, WireCodec};

/// Exponential back-off with full jitter between attempts of a failing task
/// (and between reads after a transient broker error).
///
/// The `n`th wait (from 1) is drawn uniformly from
/// `[0, min(max, base * 2^(n-1))]`, so retries of many failed tasks spread
/// out instead of arriving together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub base: Duration,
    /// No wait is longer than this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The ceiling of the `attempt`th wait (from 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    /// The `attempt`th wait, drawn with `rng`.
    pub fn wait(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

/// A worker's settings. [`WorkerOptions::default`] suits most agents; the
/// lease is the one to think about: longer than a normal pause of the
/// worker, much shorter than the time you accept a crashed worker's tasks to
/// wait.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Where the streams and the group are.
    pub keyspace: Keyspace,
    /// Decoding and its size limit.
    pub codec: WireCodec,
    /// Checks run on each task before its handler.
    pub validators: Validators,
    /// Tasks run at the same time.
    pub concurrency: usize,
    /// How long one read waits for new tasks. Kept below `renew_every`.
    pub block: Duration,
    /// An entry idle this long is taken over by another worker.
    pub lease: Duration,
    /// How often the leases of running tasks are renewed.
    pub renew_every: Duration,
    /// How often entries of crashed or stalled peers are looked for.
    pub reclaim_every: Duration,
    /// A handler running longer fails its attempt.
    pub task_timeout: Option<Duration>,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Seeds the jitter of the back-off, for reproducible runs; `None` draws
    /// a seed from the system.
    pub seed: Option<u64>,
    /// Stamps results and dead letters (`completed_at`, `dead_lettered_at`).
    pub clock: Arc<dyn Clock>,
    /// A deliberate bug to switch on, for testing a checker (feature
    /// `mutants`; see [`Mutant`]). `None`, the default, is the real worker.
    #[cfg(feature = "mutants")]
    pub mutant: Option<Mutant>,
    /// At most this many finished attempts are settled in one
    /// [`Broker::settle`](crate::Broker::settle) call (one Lua script on
    /// Redis). Attempts that finish while a settle is on its way wait for the
    /// next one, so under load one call records many outcomes; a lone
    /// attempt is settled at once.
    pub settle_batch: usize,
    /// How much of the results stream to keep. The default,
    /// [`Retention::RESULTS`], never cuts a result a supervisor's group has
    /// not gathered, and keeps about 100,000 results of a stream no group
    /// reads. Only the `EvenUnread` kinds trim in the append itself; the
    /// group-aware default trims through a
    /// [`Trimmer`](crate::retention::Trimmer), which supervisors run after
    /// gathering (the worker itself does not run one yet: a results stream
    /// no supervisor reads is not trimmed by the worker).
    pub result_retention: Retention,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            keyspace: Keyspace::default(),
            codec: WireCodec::default(),
            validators: Validators::default(),
            concurrency: 8,
            block: Duration::from_secs(2),
            lease: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
            reclaim_every: Duration::from_secs(5),
            task_timeout: Some(Duration::from_secs(300)),
            backoff: Backoff::default(),
            seed: None,
            clock: Arc::new(SystemClock),
            #[cfg(feature = "mutants")]
            mutant: None,
            settle_batch: 128,
            result_retention: Retention::RESULTS,
        }
    }
}

impl WorkerOptions {
    /// A lease of `lease`, renewed every third of it, peers' entries looked
    /// for every half of it, reads blocking at most a tenth of it.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self.renew_every = lease / 3;
        self.reclaim_every = lease / 2;
        self.block = self.block.min(lease / 10).max(Duration::from_millis(1));
        self
    }

    /// Tasks run at the same time (at least 1).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Whether `mutant` is switched on; always false without the feature.
    pub(crate) fn is_mutant(&self, mutant: Mutant) -> bool {
        #[cfg(feature = "mutants")]
        return self.mutant == Some(mutant);
        #[cfg(not(feature = "mutants"))]
        {
            let _ = mutant;
            false
        }
    }

    /// The read's block time (kept below the renewal interval).
    pub(crate) fn effective_block(&self) -> Duration {
        self.block
            .min(self.renew_every)
            .max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let ceilings: Vec<_> = (1..=6).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn backoff_waits_stay_under_the_ceiling_and_spread() {
        let backoff = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let waits: Vec<_> = (0..50).map(|_| backoff.wait(3, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= backoff.ceiling(3)));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 10, "jitter spreads waits: {distinct:?}");
    }
}
