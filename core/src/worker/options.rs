//! How a worker runs: concurrency, leases, time-outs and retry back-off.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::mutant::Mutant;
use crate::producer::Retention;
use crate::{Clock, Keyspace, RateLimit, SystemClock, Validators, WireCodec};

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
    /// How often the worker moves due entries of its agent type's delayed
    /// set (retries waiting out their back-off, tasks dispatched for later)
    /// into the task stream, with [`Broker::promote`](crate::Broker::promote).
    /// Whichever worker gets there first moves an entry, exactly once; a
    /// worker that schedules a retry due sooner promotes at its due time
    /// too, so this bounds how late an entry starts when its own worker is
    /// gone. Default 1 s.
    pub promote_every: Duration,
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
    /// [`Trimmer`](crate::retention::Trimmer), which the worker runs after
    /// its settles (and supervisors after gathering).
    pub result_retention: Retention,
    /// How much of the dead-letter stream to keep. The default,
    /// [`Retention::DEAD_LETTERS`], keeps a dead letter about
    /// [`Retention::DEAD_LETTERS_AGE`] (no group reads a dead-letter stream:
    /// operators list and replay it by id); the worker trims it after its
    /// settles, through a [`Trimmer`](crate::retention::Trimmer).
    pub dead_letter_retention: Retention,
    /// An entry delivered this many times without any delivery ending in an
    /// outcome (its worker crashed, was killed, or handed it back at
    /// shutdown) is dead-lettered with reason `max_deliveries` at its next
    /// delivery instead of run again: the bound on a task that takes its
    /// worker down every time. Failed runs (an error, a panic, a time-out)
    /// are counted apart, against the task's `max_retries`; this limit is
    /// per entry (each retry is a new entry), so keep it well above the
    /// restarts and hand-backs a healthy task may see. Default 10.
    pub max_deliveries: u32,
    /// When the worker stops by itself, on a broker error that waiting cannot
    /// fix (see [`WorkerHandle::health`](super::WorkerHandle::health)),
    /// running attempts get this long to finish and record their outcomes
    /// (leases still renewed) before they are handed back. Default 30 s.
    pub stop_grace: Duration,
    /// The most a broker rollback may take back, in time: a Redis restarted
    /// from an AOF written with `appendfsync everysec` loses about a second
    /// of acknowledged writes (two when an fsync is slow); a failover to an
    /// asynchronous replica, what that replica lagged. A consumer group
    /// destroyed under the worker is made again where the samples of its
    /// floor taken over this long agree (see `worker/group.rs`), so that
    /// acknowledgements a rollback forgot just before the destruction
    /// are not taken for finished work: the entries run again instead of
    /// being lost. Longer costs duplicates after a destruction (entries
    /// finished within the window run again); zero trusts the newest sample
    /// alone, right for a broker that never loses an acknowledged write
    /// (`appendfsync always`, and [`WAIT`] on every write where replicas
    /// take over). Default 5 s.
    ///
    /// [`WAIT`]: https://redis.io/docs/latest/commands/wait/
    pub rollback_window: Duration,
    /// The agent type's shared rate limit (see [`crate::ratelimit`]): every
    /// attempt starts only with a permit from the broker, so all workers
    /// of the agent type share one budget; give them all the same limit
    /// (the broker keeps whichever asked last, for the monitor). A
    /// [`RateLimit`] with no limit of either kind still makes the worker
    /// wait out the pauses a [`SlowDown`](super::SlowDown) asks for. `None`,
    /// the default: no permits, no pauses honoured, no broker call added.
    pub rate_limit: Option<RateLimit>,
    /// Priorities (see [`crate::lanes`]): a task that has waited this long
    /// (from its append, by the broker's clock) is taken before every
    /// younger one, whatever their priorities, so a low priority never
    /// waits for ever behind a stream of higher ones. Give every worker of
    /// an agent type the same bound. Default 60 s.
    pub starvation_bound: Duration,
    /// Priorities: how often the worker looks for priority lanes it does
    /// not serve yet, and the longest a read waits on lane 0 while other
    /// lanes are in use, so a task dispatched at a priority above 0 to an
    /// idle worker waits at most about this long. Default 250 ms.
    pub lane_poll: Duration,
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
            promote_every: Duration::from_secs(1),
            task_timeout: Some(Duration::from_secs(300)),
            backoff: Backoff::default(),
            seed: None,
            clock: Arc::new(SystemClock),
            #[cfg(feature = "mutants")]
            mutant: None,
            settle_batch: 128,
            result_retention: Retention::RESULTS,
            dead_letter_retention: Retention::DEAD_LETTERS,
            max_deliveries: 10,
            stop_grace: Duration::from_secs(30),
            rollback_window: Duration::from_secs(5),
            rate_limit: None,
            starvation_bound: Duration::from_secs(60),
            lane_poll: Duration::from_millis(250),
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

    /// Shares `limit` with every worker of the agent type: see
    /// [`WorkerOptions::rate_limit`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use crewq_core::RateLimit;
    /// use crewq_core::worker::WorkerOptions;
    /// // At most 5 starts in any second and 3 running, across the crew.
    /// let options = WorkerOptions::default()
    ///     .rate_limit(RateLimit::new().starts(5, Duration::from_secs(1)).running(3));
    /// assert!(options.validate().is_ok());
    /// ```
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Tasks run at the same time (at least 1).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Checks that these options can run a worker that keeps its
    /// guarantees: [`Worker::spawn`](super::Worker::spawn) and
    /// [`Worker::run`](super::Worker::run) check them too.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`] naming the first setting that cannot work:
    /// `concurrency` 0 (the worker would never read), a zero `lease`,
    /// `renew_every`, `reclaim_every`, `promote_every` or `lane_poll` (a loop that never yields), a
    /// `renew_every` not shorter than the `lease` (leases would lapse between
    /// renewals and peers re-run live tasks), a zero `settle_batch` or
    /// `max_deliveries`, or a back-off whose `max` is zero (broker errors
    /// retried in a hot loop), or a `rate_limit` of 0 or with a window under
    /// 1 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use crewq_core::worker::WorkerOptions;
    /// assert!(WorkerOptions::default().validate().is_ok());
    /// let mut options = WorkerOptions::default();
    /// options.renew_every = Duration::from_secs(60);
    /// let err = options.validate().unwrap_err();
    /// assert!(err.to_string().contains("renew_every"));
    /// ```
    pub fn validate(&self) -> Result<(), InvalidOptions> {
        let fail = |message: String| Err(InvalidOptions(message));
        if self.concurrency == 0 {
            return fail("concurrency must be at least 1: with 0 the worker never reads".into());
        }
        for (name, value) in [
            ("lease", self.lease),
            ("renew_every", self.renew_every),
            ("reclaim_every", self.reclaim_every),
            ("promote_every", self.promote_every),
            ("backoff.max", self.backoff.max),
            ("lane_poll", self.lane_poll),
        ] {
            if value.is_zero() {
                return fail(format!("{name} must be longer than zero"));
            }
        }
        if self.renew_every >= self.lease {
            return fail(format!(
                "renew_every ({:?}) must be shorter than the lease ({:?}), or leases lapse between renewals",
                self.renew_every, self.lease
            ));
        }
        if self.settle_batch == 0 {
            return fail("settle_batch must be at least 1".into());
        }
        if self.max_deliveries == 0 {
            return fail("max_deliveries must be at least 1".into());
        }
        if let Some(limit) = self.rate_limit
            && let Err(err) = limit.validate()
        {
            return fail(format!("rate_limit: {err}"));
        }
        Ok(())
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

/// Why [`WorkerOptions`] cannot run a worker: see
/// [`WorkerOptions::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid worker options: {0}")]
pub struct InvalidOptions(pub String);

impl From<InvalidOptions> for crate::Error {
    fn from(err: InvalidOptions) -> Self {
        crate::Error::InvalidArgument(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn options_that_cannot_work_are_refused() {
        type Breaks = fn(&mut WorkerOptions);
        let broken: [(&str, Breaks); 7] = [
            ("rate_limit", |o| {
                o.rate_limit = Some(RateLimit::new().running(0))
            }),
            ("concurrency", |o| o.concurrency = 0),
            ("reclaim_every", |o| o.reclaim_every = Duration::ZERO),
            ("renew_every", |o| o.renew_every = o.lease),
            ("lease", |o| o.lease = Duration::ZERO),
            ("settle_batch", |o| o.settle_batch = 0),
            ("max_deliveries", |o| o.max_deliveries = 0),
        ];
        for (name, breaks) in broken {
            let mut options = WorkerOptions::default();
            breaks(&mut options);
            let err = options.validate().expect_err(name);
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        assert!(
            WorkerOptions::default()
                .lease(Duration::from_millis(3))
                .validate()
                .is_ok()
        );
    }

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
