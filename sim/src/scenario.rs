//! A [`Scenario`]: the workload, the crew's shape, its settings, and what
//! goes wrong ([`Faults`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crewq_core::RateLimit;
use rand::Rng;

use crewq_core::worker::Mutant;
use serde::Serialize;

use crate::plan::{FaultPlan, FaultRates, PlanShape, SlowDownAt};
use crate::seed::{Purpose, rng};

/// What a run does: the tasks, the agent types and their workers, the
/// workers' settings, the timeline, and the faults.
///
/// Times are virtual on the memory backend (a run of many seconds takes
/// milliseconds) and real on Redis. Task `i` goes to agent type
/// `agent_types[i % n]`; its id is `sim-<i>`. Worker slot `w` is the
/// `w % workers`th worker of agent type `w / workers`.
///
/// ```
/// use std::time::Duration;
/// use crewq_sim::{FaultRates, Faults, Scenario};
///
/// let scenario = Scenario::default()
///     .tasks(40)
///     .agent_types(["research", "report"])
///     .workers(2)
///     .lease(Duration::from_millis(500))
///     .faults(Faults::Rates(FaultRates::STANDARD));
/// assert_eq!(scenario.total_workers(), 4);
/// assert_eq!(scenario.agent_of(3), "report");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    /// Tasks dispatched.
    pub tasks: u32,
    /// Agent types, each with its own stream, group and workers.
    pub agent_types: Vec<String>,
    /// Workers per agent type.
    pub workers: u32,
    /// Tasks one worker runs at once.
    pub concurrency: usize,
    /// Failed attempts before a task is dead-lettered.
    pub max_retries: u32,
    /// The workers' lease.
    #[serde(serialize_with = "millis")]
    pub lease: Duration,
    /// A handler running longer fails its attempt.
    #[serde(serialize_with = "millis")]
    pub task_timeout: Duration,
    /// Tasks per supervisor fan-out.
    pub workflow_size: u32,
    /// The dispatches are spread over this long from the start.
    #[serde(serialize_with = "millis")]
    pub dispatch_window: Duration,
    /// Faults are on from the start for this long; then the drain begins.
    #[serde(serialize_with = "millis")]
    pub fault_window: Duration,
    /// The drain gives up after this long: what is unsettled then is stuck.
    #[serde(serialize_with = "millis")]
    pub drain_limit: Duration,
    /// The workers' size limit for a task entry; oversized poison exceeds
    /// it.
    pub worker_max_bytes: usize,
    /// What goes wrong.
    pub faults: Faults,
    /// A deliberately broken worker, to check the checker.
    #[serde(serialize_with = "mutant_name")]
    pub mutant: Option<Mutant>,
    /// Whether the producer and the supervisor trim with crewq's safe
    /// default retention (checked every few appends so that it fires in a
    /// short run) instead of never. The checker accounts from the journal
    /// of appends, so it copes either way. On by default, so campaigns run
    /// what users run. (It was off while a zombie whose entry a peer
    /// completed and retention then trimmed dead-lettered it beside its
    /// success, `crewq sim --seed 49`; a renewal now counts an entry as
    /// deleted only while it is still pending for its consumer.)
    pub safe_retention: bool,
    /// Whether agent types get shared rate limits drawn from the seed
    /// ([`Scenario::rate_limits_for`]): about a third of them do, so a
    /// campaign runs both. (Half was tried first: a running limit keeps
    /// most double runs from happening at all, and `no-renew-in-grace`
    /// was then caught in fewer seeds.) On by default.
    pub rate_limits: bool,
}

/// What goes wrong in a run.
// A scenario is made once per run and moved rarely: a plan held inline
// costs nothing that matters, and keeps `Faults::Plan(plan)` plain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Faults {
    /// Nothing.
    None,
    /// A plan drawn from these rates and the run's seed.
    Rates(FaultRates),
    /// Rates drawn per seed ([`FaultRates::swarm`]), then a plan from them.
    Swarm,
    /// Exactly this plan, whatever the seed.
    Plan(FaultPlan),
}

impl Default for Scenario {
    /// 100 tasks of one agent type (`research`), 4 workers running 4 tasks
    /// each, 3 retries, a 1 s lease, workflows of 10 dispatched over 2.5 s,
    /// faults at [`FaultRates::STANDARD`] for 3 s, then a drain of up to
    /// 30 s; the producer and supervisor trim with the safe default
    /// retention.
    fn default() -> Self {
        Scenario {
            tasks: 100,
            agent_types: vec!["research".to_owned()],
            workers: 4,
            concurrency: 4,
            max_retries: 3,
            lease: Duration::from_secs(1),
            task_timeout: Duration::from_secs(2),
            workflow_size: 10,
            dispatch_window: Duration::from_millis(2500),
            fault_window: Duration::from_secs(3),
            drain_limit: Duration::from_secs(30),
            worker_max_bytes: 16 * 1024,
            faults: Faults::Rates(FaultRates::STANDARD),
            mutant: None,
            safe_retention: true,
            rate_limits: true,
        }
    }
}

impl Scenario {
    /// Sets [`tasks`](Self::tasks).
    #[must_use]
    pub fn tasks(mut self, tasks: u32) -> Self {
        self.tasks = tasks;
        self
    }

    /// Sets [`agent_types`](Self::agent_types).
    #[must_use]
    pub fn agent_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.agent_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`workers`](Self::workers) per agent type.
    #[must_use]
    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// Sets [`max_retries`](Self::max_retries).
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets [`lease`](Self::lease), and the task time-out to twice it.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self.task_timeout = lease * 2;
        self
    }

    /// Sets [`faults`](Self::faults).
    #[must_use]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Sets [`mutant`](Self::mutant).
    #[must_use]
    pub fn mutant(mut self, mutant: Option<Mutant>) -> Self {
        self.mutant = mutant;
        self
    }

    /// Sets [`safe_retention`](Self::safe_retention).
    #[must_use]
    pub fn safe_retention(mut self, on: bool) -> Self {
        self.safe_retention = on;
        self
    }

    /// Sets [`rate_limits`](Self::rate_limits).
    #[must_use]
    pub fn rate_limits(mut self, on: bool) -> Self {
        self.rate_limits = on;
        self
    }

    /// The shared rate limit of each agent type that has one in a run of
    /// `seed`, from its own generator (so drawing it reshuffles nothing
    /// else): each agent type has one with odds 1 in 3, of 3 to 6 starts
    /// per 50 to 200 ms and, with odds 3 in 4, 2 to 6 running: tighter than
    /// the crew's slots, loose enough that a run drains.
    ///
    /// ```
    /// use crewq_sim::Scenario;
    /// let scenario = Scenario::default().agent_types(["a", "b", "c", "d"]);
    /// assert_eq!(scenario.rate_limits_for(5), scenario.rate_limits_for(5));
    /// assert!(scenario.clone().rate_limits(false).rate_limits_for(5).is_empty());
    /// ```
    pub fn rate_limits_for(&self, seed: u64) -> BTreeMap<String, RateLimit> {
        if !self.rate_limits {
            return BTreeMap::new();
        }
        let mut rng = rng(seed, Purpose::RateLimit, 0);
        let mut limits = BTreeMap::new();
        for agent in &self.agent_types {
            let (on, n, window, running, m) = (
                rng.random_bool(1.0 / 3.0),
                rng.random_range(3..=6),
                rng.random_range(50..=200),
                rng.random_bool(0.75),
                rng.random_range(2..=6),
            );
            if on {
                let mut limit = RateLimit::new().starts(n, Duration::from_millis(window));
                if running {
                    limit = limit.running(m);
                }
                limits.insert(agent.clone(), limit);
            }
        }
        limits
    }

    /// Workers of all agent types.
    pub fn total_workers(&self) -> u32 {
        self.workers.saturating_mul(self.agent_types.len() as u32)
    }

    /// The agent type of task `index`.
    pub fn agent_of(&self, index: u32) -> &str {
        let n = self.agent_types.len().max(1);
        self.agent_types
            .get(index as usize % n)
            .map_or("", String::as_str)
    }

    /// The plan a run of `seed` follows.
    pub fn plan_for(&self, seed: u64) -> FaultPlan {
        let mut rng = rng(seed, Purpose::Plan, 0);
        let rates = match &self.faults {
            Faults::None => return FaultPlan::none(),
            Faults::Plan(plan) => return plan.clone(),
            Faults::Rates(rates) => *rates,
            Faults::Swarm => FaultRates::swarm(&mut rng),
        };
        let mut plan = FaultPlan::draw(&rates, &self.shape(), &mut rng);
        plan.slow_downs = self.slow_downs_for(seed, &plan);
        plan
    }

    /// The handler calls of a run of `seed` that say "slow down"
    /// ([`SlowDownAt`]), from their own generator (so drawing them
    /// reshuffles nothing else): each of the first `max_retries + 1` calls
    /// of a task that is not poison, with odds 1 in 20, for the tasks of
    /// agent types with a shared rate limit, and in a third of the runs for
    /// every task; pauses of 10 ms up to the workers' back-off max (a fifth
    /// of the lease).
    ///
    /// ```
    /// use crewq_sim::Scenario;
    /// let scenario = Scenario::default();
    /// let drawn = (0..30).filter(|&s| !scenario.plan_for(s).slow_downs.is_empty()).count();
    /// assert!(drawn > 5 && drawn < 30, "{drawn}");
    /// assert_eq!(scenario.plan_for(7), scenario.plan_for(7));
    /// ```
    pub fn slow_downs_for(&self, seed: u64, plan: &FaultPlan) -> Vec<SlowDownAt> {
        let limits = self.rate_limits_for(seed);
        let mut rng = rng(seed, Purpose::SlowDown, 0);
        let every_task = rng.random_bool(1.0 / 3.0);
        let max_pause = millis_of(self.lease / 5).max(10);
        let mut slow_downs = Vec::new();
        for task in 0..self.tasks {
            let on = every_task || limits.contains_key(self.agent_of(task));
            if !on || plan.poison_kind(task).is_some() {
                continue;
            }
            for call in 1..=self.max_retries.saturating_add(1) {
                // Both drawn for every call, so a change of odds moves no
                // later draw.
                let (hit, pause_ms) = (rng.random_bool(0.05), rng.random_range(10..=max_pause));
                if hit {
                    slow_downs.push(SlowDownAt {
                        task,
                        call,
                        pause_ms,
                    });
                }
            }
        }
        slow_downs
    }

    pub(crate) fn shape(&self) -> PlanShape {
        PlanShape {
            tasks: self.tasks,
            workers: self.total_workers(),
            max_retries: self.max_retries,
            lease_ms: millis_of(self.lease),
            fault_window_ms: millis_of(self.fault_window),
            agent_types: self.agent_types.len() as u32,
        }
    }

    /// What is wrong with the scenario, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.agent_types.is_empty() {
            return Some("a scenario needs at least one agent type".into());
        }
        if self.workers == 0 {
            return Some("a scenario needs at least one worker per agent type".into());
        }
        if self.lease < Duration::from_millis(20) {
            return Some("the lease must be at least 20 ms".into());
        }
        None
    }
}

pub(crate) fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn millis<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(millis_of(*duration))
}

fn mutant_name<S: serde::Serializer>(mutant: &Option<Mutant>, s: S) -> Result<S::Ok, S::Error> {
    match mutant {
        Some(m) => s.serialize_some(m.name()),
        None => s.serialize_none(),
    }
}
