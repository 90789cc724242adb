//! What goes wrong in a run: the [`FaultPlan`], and the [`FaultRates`] a
//! plan is drawn from.
//!
//! A plan is plain data (crashes, pauses, handler faults at given calls,
//! poison and failing tasks, broker fault rates), so a run is a function of
//! its scenario, its plan and its seed, and proptest can shrink a failing
//! plan element by element to a minimal one.

use std::fmt;

use rand::Rng;
use serde::Serialize;

use crate::seed::SimRng;

mod groups;
mod links;
mod priorities;
mod rollbacks;
mod scheduled;
mod stops;

pub use groups::{GroupDestroyAt, StreamDeleteAt};
pub use links::HalfOpenLink;
pub use priorities::{LaneSettings, TaskPriority};
pub(crate) use rollbacks::EARLIEST_SNAPSHOT_MS;
pub use rollbacks::{MAX_ROLLBACK_LAG_MS, Rollback};
pub use scheduled::ScheduledTask;
pub use stops::{GracefulStop, Outage};

/// Everything that goes wrong in one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultPlan {
    /// Faults of every broker call made by workers, producer and supervisor.
    pub broker: BrokerFaults,
    /// Workers killed mid-flight, and restarted later.
    pub crashes: Vec<Crash>,
    /// Workers frozen for longer than the lease: zombies.
    pub pauses: Vec<Pause>,
    /// A handler call going wrong, by task and call number.
    pub handler: Vec<HandlerFaultAt>,
    /// Tasks whose handler fails on every call (they end dead-lettered).
    pub failing: Vec<u32>,
    /// Tasks dispatched as entries no worker can run.
    pub poison: Vec<Poison>,
    /// One worker's link hanging until time-outs for a while.
    pub half_open: Vec<HalfOpenLink>,
    // --- state-level fault classes (issue 9) ---
    /// Trims of a task stream in the fault window, as an operator's `XTRIM`
    /// or an unsafe retention opt-in does: they cut pending (and maybe
    /// unread) entries.
    pub trims: Vec<TrimAt>,
    /// Workers asked to stop with a grace longer than the lease while long
    /// tasks run, restarted later.
    pub stops: Vec<GracefulStop>,
    /// Every actor's broker calls failing for a while.
    pub outages: Vec<Outage>,
    /// Worker groups destroyed in the fault window (`XGROUP DESTROY`).
    pub group_destroys: Vec<GroupDestroyAt>,
    /// The broker restored to an earlier state: writes lost, as AOF
    /// `everysec` or a failover to a lagging replica loses them.
    pub rollbacks: Vec<Rollback>,
    // --- scheduled dispatch (issue 12) ---
    /// Tasks dispatched for later, through the delayed set (not poison
    /// ones; not part of a workflow).
    pub scheduled: Vec<ScheduledTask>,
    /// Task streams deleted in the fault window (`DEL`).
    pub stream_deletes: Vec<StreamDeleteAt>,
    // --- slow-downs (issue 12) ---
    /// Handler calls that say "slow down" (an upstream's 429), in the
    /// fault window: see [`SlowDownAt`].
    pub slow_downs: Vec<SlowDownAt>,
    // --- priorities (issue 12) ---
    /// Tasks dispatched at a priority above 0 (the others are at 0).
    pub priorities: Vec<TaskPriority>,
    /// The crew's starvation bound and lane poll, in a run with
    /// priorities (`None`: the workers' defaults).
    pub lanes: Option<LaneSettings>,
}

/// A handler call that returns
/// [`SlowDown`](crewq_core::worker::SlowDown): its worker must pause the
/// whole agent type for `pause_ms` through the broker, and retry the task
/// after the pause without burning one of its retries.
///
/// Drawn from a generator of its own ([`Scenario::plan_for`]): for the
/// tasks of agent types with a shared rate limit (the workers honour a
/// pause only there), and in a third of the runs for every task; a call
/// with a slow-down planned says so instead of whatever handler fault it
/// has. Only while faults are on.
///
/// [`Scenario::plan_for`]: crate::Scenario::plan_for
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SlowDownAt {
    /// The task's index.
    pub task: u32,
    /// The call, counted from 1 over the whole crew.
    pub call: u32,
    /// The pause asked for, in ms (at most the workers' back-off max, which
    /// caps it).
    pub pause_ms: u64,
}

/// An `XTRIM` of one agent type's task stream.
///
/// On in [`FaultRates::STANDARD`] (one per run) and in half of the swarm
/// draws. They once lost about 5% of seeds' tasks silently: `XAUTOCLAIM`
/// dropped a trimmed entry from the pending list before the worker wrote
/// its dead letter, so a crash or a lost reply in between left no record
/// (`crewq sim --seed 30` with one trim). The worker now reclaims with
/// [`Broker::autoclaim_recorded`](crewq_core::Broker::autoclaim_recorded),
/// which writes the dead letter in the same atomic step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TrimAt {
    /// The agent type's index in the scenario.
    pub agent: u32,
    /// When, in ms of virtual time from the start.
    pub at_ms: u64,
    /// What it cuts.
    pub cut: TrimCut,
}

/// What an injected trim removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrimCut {
    /// Everything the group has delivered (`MINID` just past its last
    /// delivered id): finished entries and pending ones, never unread.
    Delivered,
    /// `MAXLEN` this many (exact): unread entries too, which are then lost
    /// to the trim (reported apart, not as violations).
    MaxLen(u64),
}

/// Faults of broker calls, drawn per call (see
/// [`FaultConfig`](crate::FaultConfig)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BrokerFaults {
    /// Chance a call fails before it applies.
    pub error_before: f64,
    /// Chance a call applies and its reply is lost.
    pub error_after: f64,
    /// Extra latency of every call, uniform in `0..=latency_ms` (0: none).
    pub latency_ms: u64,
    /// Chance a call is refused by the server (`READONLY`, `LOADING`,
    /// `OOM`, `NOSCRIPT`): nothing applied.
    pub refused: f64,
    /// Chance each item of a settle is refused on its own (`WRONGTYPE`,
    /// `OOM`) while the others settle.
    pub item_failure: f64,
}

/// A worker killed at an await point, restarted after a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Crash {
    /// The worker slot (see [`Scenario`](crate::Scenario): agent type
    /// `worker / workers`, its `worker % workers`th worker).
    pub worker: u32,
    /// When, in ms of virtual time from the start.
    pub at_ms: u64,
    /// How long it stays down.
    pub down_ms: u64,
    /// Whether it comes back under a new consumer name (a replaced pod),
    /// leaving its pending entries to be reclaimed by others.
    pub rename: bool,
}

/// A worker frozen: its broker calls and its handlers wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pause {
    /// The worker slot.
    pub worker: u32,
    /// When, in ms of virtual time from the start.
    pub at_ms: u64,
    /// For how long.
    pub for_ms: u64,
}

/// What a handler call does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlerFault {
    /// Returns an error.
    Error,
    /// Panics.
    Panic,
    /// Never returns: the worker's task time-out cuts it.
    Hang,
    /// Takes this much longer before doing its work.
    Slow {
        /// The extra time in ms.
        ms: u64,
    },
}

/// A handler fault at one call of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HandlerFaultAt {
    /// The task's index.
    pub task: u32,
    /// The call, counted from 1 over the whole crew.
    pub call: u32,
    /// What goes wrong.
    pub fault: HandlerFault,
}

/// A task dispatched as an entry no worker can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Poison {
    /// The task's index.
    pub task: u32,
    /// How it is broken.
    pub kind: PoisonKind,
}

/// How a poison entry is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoisonKind {
    /// Its `data` is not JSON (written by a foreign producer).
    Undecodable,
    /// The agent type's validator refuses it.
    Rejected,
    /// Larger than the workers' size limit.
    Oversized,
    // --- malformed peer-written fields and panics outside the handler
    // (written raw, as a foreign producer would) ---
    /// The agent type's validator panics on it: a panic outside the
    /// handler, which must poison the entry, not hold it forever.
    PanickingValidator,
    /// Its `attempts` field is `"4294967295"`: more failed runs than any
    /// `max_retries` allows (an overflow if added to unchecked).
    AttemptsOverflow,
    /// Its `attempts` field is `"abc"`: not a count at all.
    AttemptsGarbage,
    /// Its `agent_type` names another type than its stream's.
    WrongAgentType,
}

impl PoisonKind {
    /// Every kind.
    pub const ALL: [PoisonKind; 7] = [
        PoisonKind::Undecodable,
        PoisonKind::Rejected,
        PoisonKind::Oversized,
        PoisonKind::PanickingValidator,
        PoisonKind::AttemptsOverflow,
        PoisonKind::AttemptsGarbage,
        PoisonKind::WrongAgentType,
    ];

    /// Its fault class name in the hit counts (`poison_<kind>`).
    pub fn class(self) -> &'static str {
        match self {
            PoisonKind::Undecodable => "poison_undecodable",
            PoisonKind::Rejected => "poison_rejected",
            PoisonKind::Oversized => "poison_oversized",
            PoisonKind::PanickingValidator => "poison_panicking_validator",
            PoisonKind::AttemptsOverflow => "poison_attempts_overflow",
            PoisonKind::AttemptsGarbage => "poison_attempts_garbage",
            PoisonKind::WrongAgentType => "poison_wrong_agent_type",
        }
    }
}

/// How often things go wrong; a [`FaultPlan`] is drawn from these and a seed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FaultRates {
    /// Chance a broker call fails before it applies.
    pub error_before: f64,
    /// Chance a broker call applies and its reply is lost.
    pub error_after: f64,
    /// Broker latency bound in ms (0: none).
    pub latency_ms: u64,
    /// Worker crashes in the fault window.
    pub crashes: u32,
    /// Chance a crashed worker comes back under a new name.
    pub rename: f64,
    /// Worker pauses past the lease in the fault window.
    pub pauses: u32,
    /// Chance a handler call goes wrong.
    pub handler: f64,
    /// Share of tasks that fail every call.
    pub failing: f64,
    /// Share of tasks that are poison.
    pub poison: f64,
    /// Chance a broker call is refused with a failover / restart / memory
    /// error reply.
    pub refused: f64,
    /// Chance a settle item is refused on its own.
    pub item_failure: f64,
    /// Half-open links (one worker's calls hang until time-outs) in the
    /// fault window.
    pub half_open: u32,
    // --- state-level fault classes (issue 9) ---
    /// Injected task-stream trims in the fault window.
    pub trims: u32,
    /// Graceful stops (grace longer than the lease) in the fault window.
    pub stops: u32,
    /// Outages of the broker for every actor in the fault window.
    pub outages: u32,
    /// Worker groups destroyed in the fault window.
    pub group_destroys: u32,
    /// Chance the broker is rolled back once in the fault window (see
    /// [`Rollback`]).
    pub rollback: f64,
    // --- scheduled dispatch (issue 12) ---
    /// Share of tasks (not poison) dispatched for later.
    pub scheduled: f64,
    /// Chance a task stream is deleted once in the fault window (see
    /// [`StreamDeleteAt`]).
    pub stream_delete: f64,
    // --- priorities (issue 12) ---
    /// Chance a run dispatches its tasks at drawn priorities (see
    /// [`TaskPriority`]).
    pub priorities: f64,
}

impl FaultRates {
    /// Nothing goes wrong.
    pub const NONE: FaultRates = FaultRates {
        error_before: 0.0,
        error_after: 0.0,
        latency_ms: 0,
        crashes: 0,
        rename: 0.0,
        pauses: 0,
        handler: 0.0,
        failing: 0.0,
        poison: 0.0,
        refused: 0.0,
        item_failure: 0.0,
        half_open: 0,
        trims: 0,
        stops: 0,
        outages: 0,
        group_destroys: 0,
        rollback: 0.0,
        scheduled: 0.0,
        stream_delete: 0.0,
        priorities: 0.0,
    };

    /// A bit of everything: 5% of broker calls fail before they apply, 3%
    /// after, up to 3 ms latency, 2 crashes (half of them renamed), 1 pause,
    /// 10% of handler calls go wrong, 3% of tasks always fail, 3% are
    /// poison; 2% of broker calls refused by a failing-over server, 5% of
    /// settle items refused, 1 half-open link, 1 trim of a task stream;
    /// 1 graceful stop with a grace longer than the lease, 1 outage of the
    /// broker for everyone, 1 worker group destroyed, or, in a quarter of
    /// the runs, instead of that destroy, the broker rolled back once,
    /// losing up to 2 s of writes; 10% of the tasks dispatched for later.
    /// losing up to 2 s of writes; and in a fifth of the runs a task stream
    /// deleted; in a quarter of the runs the tasks at drawn priorities.
    pub const STANDARD: FaultRates = FaultRates {
        error_before: 0.05,
        error_after: 0.03,
        latency_ms: 3,
        crashes: 2,
        rename: 0.5,
        pauses: 1,
        handler: 0.1,
        failing: 0.03,
        poison: 0.03,
        refused: 0.02,
        item_failure: 0.05,
        half_open: 1,
        trims: 1,
        stops: 1,
        outages: 1,
        group_destroys: 1,
        // A quarter of the runs are rolled back once (see
        // `plan/rollbacks.rs`), as well as their group destroy.
        rollback: 0.25,
        scheduled: 0.1,
        stream_delete: 0.2,
        // A quarter of the runs dispatch at drawn priorities (see
        // `plan/priorities.rs`).
        priorities: 0.25,
    };

    /// Only rollbacks: [`FaultRates::STANDARD`]'s broker and handler
    /// faults with a quarter of the runs rolled back once (losing up to
    /// 2 s of writes), without the other state-level classes.
    pub const ROLLBACK: FaultRates = FaultRates {
        trims: 0,
        group_destroys: 0,
        stream_delete: 0.0,
        stops: 0,
        outages: 0,
        ..FaultRates::STANDARD
    };

    /// Swarm testing: each kind of fault is switched on or off at random,
    /// and those on get a random intensity up to about twice
    /// [`FaultRates::STANDARD`], so some seeds stress one thing hard and
    /// others mix.
    pub fn swarm(rng: &mut SimRng) -> FaultRates {
        let mut on = |p: f64| rng.random_bool(p);
        let (before, after, latency, crashes, pauses, handler, failing, poison) = (
            on(0.5),
            on(0.5),
            on(0.5),
            on(0.5),
            on(0.5),
            on(0.5),
            on(0.5),
            on(0.5),
        );
        // Up to 3 trims racing the readers, in half of the swarms.
        let trims = if on(0.5) { rng.random_range(1..=3) } else { 0 };
        let mut upto = |on: bool, max: f64| {
            if on { rng.random_range(0.0..max) } else { 0.0 }
        };
        let mut rates = FaultRates {
            error_before: upto(before, 0.12),
            error_after: upto(after, 0.08),
            latency_ms: upto(latency, 8.0) as u64,
            crashes: upto(crashes, 5.0) as u32,
            rename: upto(crashes, 1.0),
            pauses: upto(pauses, 3.0) as u32,
            handler: upto(handler, 0.25),
            failing: upto(failing, 0.08),
            poison: upto(poison, 0.08),
            trims,
            ..FaultRates::NONE
        };
        links::swarm(&mut rates, rng);
        stops::swarm(&mut rates, rng);
        groups::swarm(&mut rates, rng);
        // A rollback in half of the swarms (see `plan/rollbacks.rs`).
        rates.rollback = if rng.random_bool(0.5) { 0.5 } else { 0.0 };
        scheduled::swarm(&mut rates, rng);
        groups::swarm_deletes(&mut rates, rng);
        // Priorities in a quarter of the swarms, decided in the plan's
        // draw (a constant here: the swarm's other draws stay put).
        rates.priorities = 0.25;
        rates
    }
}

/// The shape of the run a plan is drawn for.
pub(crate) struct PlanShape {
    pub tasks: u32,
    pub workers: u32,
    pub max_retries: u32,
    pub lease_ms: u64,
    pub fault_window_ms: u64,
    pub agent_types: u32,
}

impl FaultPlan {
    /// A plan in which nothing goes wrong.
    pub fn none() -> FaultPlan {
        FaultPlan::default()
    }

    /// Draws a plan for `shape` at `rates`.
    pub(crate) fn draw(rates: &FaultRates, shape: &PlanShape, rng: &mut SimRng) -> FaultPlan {
        let window = shape.fault_window_ms.max(1);
        let lease = shape.lease_ms.max(1);
        let workers = shape.workers.max(1);
        let crashes = (0..rates.crashes)
            .map(|_| Crash {
                worker: rng.random_range(0..workers),
                at_ms: rng.random_range(0..window),
                down_ms: rng.random_range(lease / 20..=lease * 3 / 2),
                rename: rng.random_bool(rates.rename.clamp(0.0, 1.0)),
            })
            .collect();
        let pauses = (0..rates.pauses)
            .map(|_| Pause {
                worker: rng.random_range(0..workers),
                at_ms: rng.random_range(0..window),
                for_ms: rng.random_range(lease * 6 / 5..=lease * 3),
            })
            .collect();
        let mut plan = FaultPlan {
            broker: BrokerFaults {
                error_before: rates.error_before,
                error_after: rates.error_after,
                latency_ms: rates.latency_ms,
                ..BrokerFaults::default()
            },
            crashes,
            pauses,
            ..FaultPlan::default()
        };
        plan.trims = (0..rates.trims)
            .map(|_| TrimAt {
                agent: rng.random_range(0..shape.agent_types.max(1)),
                at_ms: rng.random_range(0..window),
                cut: if rng.random_bool(0.75) {
                    TrimCut::Delivered
                } else {
                    TrimCut::MaxLen(rng.random_range(0..=10))
                },
            })
            .collect();
        for task in 0..shape.tasks {
            if rng.random_bool(rates.poison.clamp(0.0, 1.0)) {
                let kind = PoisonKind::ALL[rng.random_range(0..PoisonKind::ALL.len())];
                plan.poison.push(Poison { task, kind });
                continue;
            }
            if rng.random_bool(rates.failing.clamp(0.0, 1.0)) {
                plan.failing.push(task);
            }
            for call in 1..=shape.max_retries.saturating_add(1) {
                if rng.random_bool(rates.handler.clamp(0.0, 1.0)) {
                    let fault = match rng.random_range(0..20) {
                        0..8 => HandlerFault::Error,
                        8..12 => HandlerFault::Panic,
                        12..15 => HandlerFault::Hang,
                        _ => HandlerFault::Slow {
                            ms: rng.random_range(lease / 2..=lease * 2),
                        },
                    };
                    plan.handler.push(HandlerFaultAt { task, call, fault });
                }
            }
        }
        links::draw(&mut plan, rates, shape, rng);
        stops::draw(&mut plan, rates, shape, rng);
        groups::draw(&mut plan, rates, shape, rng);
        rollbacks::draw(&mut plan, rates, shape, rng);
        scheduled::draw(&mut plan, rates, shape, rng);
        groups::draw_deletes(&mut plan, rates, shape, rng);
        priorities::draw(&mut plan, rates, shape, rng);
        plan
    }

    /// The poison kind of `task`, if it is poison.
    pub fn poison_kind(&self, task: u32) -> Option<PoisonKind> {
        self.poison.iter().find(|p| p.task == task).map(|p| p.kind)
    }

    /// The delay of `task` in ms, if it is dispatched for later.
    pub fn scheduled_delay(&self, task: u32) -> Option<u64> {
        self.scheduled
            .iter()
            .find(|s| s.task == task)
            .map(|s| s.delay_ms)
    }

    /// The priority of `task` (0 unless the plan gives it one).
    pub fn priority_of(&self, task: u32) -> u8 {
        self.priorities
            .iter()
            .find(|p| p.task == task)
            .map_or(0, |p| p.priority)
    }

    /// The priorities the plan's tasks are dispatched at, 0 always
    /// included, ascending.
    pub fn priorities_in_use(&self) -> Vec<u8> {
        let mut levels: Vec<u8> = std::iter::once(0)
            .chain(self.priorities.iter().map(|p| p.priority))
            .collect();
        levels.sort_unstable();
        levels.dedup();
        levels
    }
}

impl fmt::Display for FaultPlan {
    /// One line: what goes wrong, element by element.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.broker;
        write!(
            f,
            "broker errors {:.1}% before / {:.1}% after, latency <= {} ms",
            b.error_before * 100.0,
            b.error_after * 100.0,
            b.latency_ms
        )?;
        for c in &self.crashes {
            let renamed = if c.rename { ", renamed" } else { "" };
            write!(
                f,
                "; crash w{} at {} ms for {} ms{renamed}",
                c.worker, c.at_ms, c.down_ms
            )?;
        }
        for p in &self.pauses {
            write!(
                f,
                "; pause w{} at {} ms for {} ms",
                p.worker, p.at_ms, p.for_ms
            )?;
        }
        for h in &self.handler {
            write!(f, "; task {} call {}: {:?}", h.task, h.call, h.fault)?;
        }
        if !self.failing.is_empty() {
            write!(f, "; failing tasks {:?}", self.failing)?;
        }
        for p in &self.poison {
            write!(f, "; task {} poison ({:?})", p.task, p.kind)?;
        }
        if b.refused > 0.0 || b.item_failure > 0.0 {
            write!(
                f,
                "; refused {:.1}%, settle items refused {:.1}%",
                b.refused * 100.0,
                b.item_failure * 100.0
            )?;
        }
        for h in &self.half_open {
            write!(
                f,
                "; half-open w{} {:?} at {} ms for {} ms (time-out {} ms)",
                h.worker, h.flows, h.at_ms, h.for_ms, h.timeout_ms
            )?;
        }
        for t in &self.trims {
            write!(
                f,
                "; trim agent {} at {} ms ({:?})",
                t.agent, t.at_ms, t.cut
            )?;
        }
        for s in &self.stops {
            write!(
                f,
                "; stop w{} at {} ms, grace {} ms, runs {} ms longer, back {} ms later",
                s.worker, s.at_ms, s.grace_ms, s.long_ms, s.down_ms
            )?;
        }
        for o in &self.outages {
            write!(f, "; outage at {} ms for {} ms", o.at_ms, o.for_ms)?;
        }
        for g in &self.group_destroys {
            write!(
                f,
                "; group of agent {} destroyed at {} ms",
                g.agent, g.at_ms
            )?;
        }
        for r in &self.rollbacks {
            write!(
                f,
                "; rollback at {} ms to {} ms ({} ms lost)",
                r.at_ms,
                r.snapshot_ms(),
                r.lag_ms
            )?;
        }
        for s in &self.scheduled {
            write!(f, "; task {} scheduled in {} ms", s.task, s.delay_ms)?;
        }
        for d in &self.stream_deletes {
            write!(
                f,
                "; task stream of agent {} deleted at {} ms",
                d.agent, d.at_ms
            )?;
        }
        for s in &self.slow_downs {
            write!(
                f,
                "; task {} call {}: slow down {} ms",
                s.task, s.call, s.pause_ms
            )?;
        }
        if let Some(lanes) = &self.lanes {
            write!(
                f,
                "; priorities (starvation bound {} ms, lane poll {} ms)",
                lanes.starvation_ms, lanes.lane_poll_ms
            )?;
        }
        for p in &self.priorities {
            write!(f, "; task {} at priority {}", p.task, p.priority)?;
        }
        Ok(())
    }
}
