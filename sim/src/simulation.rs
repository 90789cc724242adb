//! [`Simulation`]: a scenario and a crew, run from a seed and checked.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crewq_core::{Keyspace, SystemClock, TokioClock};
use crewq_memory::MemoryBroker;
use crewq_redis::RedisConfig;

use crate::Scenario;
use crate::check::check;
use crate::crew::{Crew, silence_injected_panics};
use crate::history::{Divergence, History, TraceHash};
use crate::report::Report;
use crate::run::{self, Backend, RunRecord};

/// Why a simulation could not run (as opposed to a run that broke an
/// invariant, which is a [`Report`] with violations).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario or the crew cannot run (no handler for an agent type,
    /// a lease under 20 ms ...).
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// The run could not go on (the final state could not be read ...).
    #[error("the run failed: {0}")]
    Run(String),
    /// No tokio runtime could be built.
    #[error("cannot build a runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Redis could not be reached.
    #[error("redis: {0}")]
    Redis(#[source] crewq_core::Error),
}

/// What two runs of one seed gave: each checked, and their histories
/// compared.
#[derive(Clone, Debug, PartialEq)]
pub struct DoubleRun {
    /// The first run's report, or the second's when only the second broke
    /// an invariant.
    pub report: Report,
    /// The history's hash when both runs recorded the same one, else where
    /// they part.
    pub repeat: Result<TraceHash, Divergence>,
}

impl DoubleRun {
    /// Whether every invariant held in both runs and the histories are the
    /// same.
    pub fn passed(&self) -> bool {
        self.report.passed() && self.repeat.is_ok()
    }
}

/// A scenario run by a crew: the real Producer, Supervisor and Workers,
/// the fault plan drawn from a seed, the history checked.
///
/// [`Simulation::run`] runs on the memory backend on paused time: a run of
/// many virtual seconds takes milliseconds, and the same seed gives the
/// same history, byte for byte. Call it from plain (not async) code: it
/// builds its own runtime.
///
/// ```
/// use crewq_core::Task;
/// use crewq_core::worker::HandlerError;
/// use crewq_sim::{Crew, FaultRates, Faults, Scenario, Simulation};
/// use serde_json::{Value, json};
///
/// // Your agent's handler, as your workers run it.
/// let summarize = |task: Task<Value>| async move {
///     let n = task.payload["n"].as_u64().unwrap_or(0);
///     Ok::<Value, HandlerError>(json!({ "summary": format!("item {n}") }))
/// };
/// let crew = Crew::new().agent("summarizer", summarize);
/// let scenario = Scenario::default()
///     .tasks(30)
///     .agent_types(["summarizer"])
///     .workers(3)
///     .faults(Faults::Rates(FaultRates::STANDARD));
///
/// let simulation = Simulation::new(scenario, crew);
/// let report = simulation.run(42)?;
/// assert!(report.passed(), "{report}");
/// // Every task ended: once, or more often where the destroyed worker
/// // group (one of the standard faults) made finished tasks run again.
/// let c = report.counts;
/// assert_eq!(c.ok + c.duplicated + c.dead_lettered + c.replayed, 30);
/// // The same seed, the same history.
/// assert_eq!(simulation.run(42)?.trace_hash, report.trace_hash);
/// # Ok::<(), crewq_sim::SimError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Simulation {
    scenario: Scenario,
    crew: Crew,
}

impl Simulation {
    /// A simulation of `scenario` run by `crew`.
    pub fn new(scenario: Scenario, crew: Crew) -> Self {
        Simulation { scenario, crew }
    }

    /// crewq's own: `scenario` run by [`Crew::standard`].
    pub fn standard(scenario: Scenario) -> Self {
        Simulation::new(scenario, Crew::standard())
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Runs `seed` on the memory backend and checks it.
    ///
    /// # Errors
    ///
    /// [`SimError`] when the run cannot happen; a broken invariant is a
    /// report with violations.
    pub fn run(&self, seed: u64) -> Result<Report, SimError> {
        self.run_recorded(seed).map(|(report, _)| report)
    }

    /// Like [`Simulation::run`], with the history.
    ///
    /// # Errors
    ///
    /// As [`Simulation::run`].
    pub fn run_recorded(&self, seed: u64) -> Result<(Report, History), SimError> {
        let record = self.record(seed)?;
        let report = check(&self.scenario, seed, &record);
        Ok((report, record.history))
    }

    /// Runs `seed` on the memory backend: what the checker judges.
    pub(crate) fn record(&self, seed: u64) -> Result<RunRecord, SimError> {
        silence_injected_panics();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(SimError::Runtime)?;
        let plan = self.scenario.plan_for(seed);
        runtime.block_on(async {
            // Created inside the runtime: virtual time starts now.
            let clock = TokioClock::default();
            let broker = MemoryBroker::with_clock(clock);
            let backend = Backend {
                broker: broker.clone(),
                clock: Arc::new(clock),
                keyspace: Keyspace::default(),
                rollback: Some(broker),
            };
            run::run(&self.scenario, &self.crew, seed, plan, backend).await
        })
    }

    /// Runs `seed` twice, checks each run and compares the histories.
    ///
    /// # Errors
    ///
    /// As [`Simulation::run`].
    pub fn double_run(&self, seed: u64) -> Result<DoubleRun, SimError> {
        let (first, first_history) = self.run_recorded(seed)?;
        let (second, second_history) = self.run_recorded(seed)?;
        let repeat = match first_history.first_difference(&second_history) {
            None => Ok(first_history.hash()),
            Some(divergence) => Err(divergence),
        };
        // Both runs are judged: a run that repeats its history but breaks
        // an invariant fails the seed as a single run would.
        let report = if first.passed() && !second.passed() {
            second
        } else {
            first
        };
        Ok(DoubleRun { report, repeat })
    }

    /// Checks the scenario before any seed runs, so that a caller can tell
    /// a scenario that cannot run from a run that broke an invariant.
    ///
    /// # Errors
    ///
    /// [`SimError::Scenario`] saying what is wrong.
    pub fn validate(&self) -> Result<(), SimError> {
        match self.scenario.problem() {
            Some(problem) => Err(SimError::Scenario(problem)),
            None => Ok(()),
        }
    }

    /// Runs `seed`'s scenario against the Redis at `url`, in real time:
    /// crashes, pauses, handler and broker faults injected the same way,
    /// the same invariants checked. Keys go under a fresh
    /// `crewq-sim-<seed>-<time>` prefix and are left there.
    ///
    /// # Errors
    ///
    /// [`SimError::Redis`] when Redis cannot be reached, else as
    /// [`Simulation::run`].
    pub fn run_on_redis(&self, url: &str, seed: u64) -> Result<Report, SimError> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        self.run_on_redis_under(url, &format!("crewq-sim-{seed}-{stamp}"), seed)
    }

    /// Like [`Simulation::run_on_redis`], with every key under `prefix`
    /// (which should be fresh: the run expects empty streams), for a
    /// caller that cleans up after itself.
    ///
    /// # Errors
    ///
    /// As [`Simulation::run_on_redis`], and [`SimError::Scenario`] for a
    /// prefix that cannot name keys.
    pub fn run_on_redis_under(
        &self,
        url: &str,
        prefix: &str,
        seed: u64,
    ) -> Result<Report, SimError> {
        let keyspace = Keyspace::default()
            .with_prefix(prefix)
            .map_err(|e| SimError::Scenario(e.to_string()))?;
        self.run_on_redis_with(RedisConfig::new(url), keyspace, seed)
    }

    /// Like [`Simulation::run_on_redis_under`], connecting with `config`
    /// (a Redis Cluster's, with [`RedisConfig::cluster`]) and keeping every
    /// key in `keyspace` (which should be fresh; on a cluster, the cluster
    /// layout).
    ///
    /// # Errors
    ///
    /// As [`Simulation::run_on_redis`].
    pub fn run_on_redis_with(
        &self,
        config: RedisConfig,
        keyspace: Keyspace,
        seed: u64,
    ) -> Result<Report, SimError> {
        silence_injected_panics();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SimError::Runtime)?;
        let plan = self.scenario.plan_for(seed);
        let record = runtime.block_on(async {
            let broker = config.connect().await.map_err(SimError::Redis)?;
            let backend = Backend {
                broker,
                clock: Arc::new(SystemClock),
                keyspace,
                rollback: None,
            };
            run::run(&self.scenario, &self.crew, seed, plan, backend).await
        })?;
        Ok(check(&self.scenario, seed, &record))
    }
}
