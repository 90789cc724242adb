//! crewq-sim: deterministic simulation of crewq with fault injection, and a
//! checker that proves from the recorded history that no task was lost and
//! dead letters were routed right.
//!
//! A [`Simulation`] runs the *real* [`Producer`](crewq_core::producer::Producer),
//! [`Supervisor`](crewq_core::supervisor::Supervisor) and
//! [`Worker`](crewq_core::worker::Worker) over the memory backend on a
//! current-thread tokio runtime with paused time, while a [`FaultPlan`]
//! drawn from one seed crashes and restarts workers, freezes them past
//! their lease (zombies), makes handler calls fail, panic, hang or crawl,
//! dispatches poison tasks, makes broker calls fail before or after they
//! apply, and slow, refuses them as a failing-over or restarting Redis does
//! (`READONLY`, `LOADING`, `OOM`, `NOSCRIPT`), refuses single items of a
//! settle (`WRONGTYPE`, `OOM`), and hangs one worker's calls until their
//! time-out for a while (a half-open link), asks a worker to stop with a
//! grace longer than the lease while long tasks run, and takes the broker
//! down for every actor for a while (an outage). Then faults go off, the crew drains, and the checker
//! classifies every task ([`Class`]) and holds the run to the invariants
//! ([`Invariant`]). The same seed gives the same history, byte for byte
//! ([`TraceHash`]); the same scenario also runs against a real Redis
//! ([`Simulation::run_on_redis`]).
//!
//! Pieces:
//! - [`Scenario`], [`Faults`], [`FaultPlan`], [`FaultRates`]: what runs and
//!   what goes wrong; [`strategy`] generates them for proptest, which
//!   shrinks a failing plan to a minimal one;
//! - [`Crew`]: your handlers per agent type (or [`Crew::standard`]);
//! - [`Simulation`]: runs a seed, twice to compare, or on Redis;
//! - [`run_campaign`], [`double_run_campaign`]: many seeds on every core;
//! - [`Report`]: counts, violations, the trace hash, and [`Hits`]: how
//!   often each fault class fired, summed over a campaign;
//! - [`FaultyBroker`]: the fault-injecting wrapper around any broker, usable
//!   on its own;
//! - [`Mutant`]: deliberately broken workers that the checker must catch.
//!
//! Test your own agents under faults:
//!
//! ```
//! use crewq_core::Task;
//! use crewq_core::worker::HandlerError;
//! use crewq_sim::{Crew, Scenario, Simulation};
//! use serde_json::{Value, json};
//!
//! let crew = Crew::new().agent("research", |task: Task<Value>| async move {
//!     Ok::<Value, HandlerError>(json!({ "echo": task.payload }))
//! });
//! let report = Simulation::new(Scenario::default().tasks(20), crew).run(7)?;
//! assert!(report.passed(), "{report}");
//! # Ok::<(), crewq_sim::SimError>(())
//! ```

mod campaign;
mod check;
mod crew;
mod faulty;
mod history;
mod hits;
mod plan;
mod recorder;
mod report;
mod run;
mod scenario;
mod seed;
mod simulation;
pub mod strategy;

pub use campaign::{Campaign, CampaignReport, KEPT_FAILURES, double_run_campaign, run_campaign};
pub use crew::{
    Crew, InjectedPanic, StandardAgent, TASK_ID_PREFIX, WorkloadFn, silence_injected_panics,
    task_id, task_index,
};
pub use crewq_core::worker::Mutant;
pub use faulty::{
    CallEnd, CallObserver, Conn, Fault, FaultConfig, FaultEvent, FaultLog, FaultObserver,
    FaultyBroker, Flows, HalfOpen, Op, OpSet, ServerError,
};
pub use history::{Divergence, Event, History, Stamped, TraceHash};
pub use hits::Hits;
pub use plan::{
    BrokerFaults, Crash, FaultPlan, FaultRates, GracefulStop, GroupDestroyAt, HalfOpenLink,
    HandlerFault, HandlerFaultAt, LaneSettings, Outage, Pause, Poison, PoisonKind, Rollback,
    SlowDownAt, StreamDeleteAt, TaskPriority, TrimAt, TrimCut,
};
pub use report::{Class, Counts, Invariant, Report, RunStats, Violation};
pub use scenario::{Faults, Scenario};
pub use seed::SimRng;
pub use simulation::{DoubleRun, SimError, Simulation};

use crewq_core::TokioClock;
use crewq_memory::MemoryBroker;

/// A memory broker whose clock is tokio's, for runs under paused time.
pub fn memory_broker_on_virtual_time() -> MemoryBroker {
    MemoryBroker::with_clock(TokioClock::default())
}
