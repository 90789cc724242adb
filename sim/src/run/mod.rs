//! One run of a scenario: the real Producer, Supervisor and Workers over a
//! recording broker behind per-actor fault injection; the fault phase, the
//! drain with faults off, and the final state.
//!
//! The run is written once over any broker. On the memory backend it runs
//! on a current-thread runtime with paused time, so it is a function of the
//! scenario, the plan and the seed; on Redis it runs in real time.

mod brokers;
mod dispatch;
mod groups;
mod hits;
mod rollbacks;
mod slots;
pub(crate) mod state;
#[cfg(test)]
mod tests;
mod trims;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crewq_core::producer::{Producer, Retention};
use crewq_core::supervisor::{Supervisor, SupervisorOptions};
use crewq_core::worker::WorkerReport;
use crewq_core::{AgentKeys, AgentType, Broker, Clock, Keyspace};

use crate::crew::{Crew, HandlerFaults};
use crate::history::{Event, History, Recorder};
use crate::plan::FaultPlan;
use crate::recorder::RecordingBroker;
use crate::scenario::millis_of;
use crate::{Scenario, SimError};
use brokers::{Brokers, PRODUCER, SUPERVISOR};
use dispatch::{Dispatcher, Gathers};
pub(crate) use dispatch::{GatherOutcome, GatherRecord};
pub(crate) use hits::Hits;
use rollbacks::Rollbacks;
use slots::Crewing;
use state::FinalState;

/// Where a run happens.
pub(crate) struct Backend<B> {
    pub broker: B,
    /// Stamps results and dead letters; virtual on the memory backend.
    pub clock: Arc<dyn Clock>,
    pub keyspace: Keyspace,
    /// The broker again, where it can be rolled back and its streams
    /// deleted (the memory backend): the plan's rollbacks and stream
    /// deletions fire only there.
    pub rollback: Option<crewq_memory::MemoryBroker>,
}

/// Everything a run leaves for the checker.
#[derive(Debug)]
pub(crate) struct RunRecord {
    pub plan: FaultPlan,
    /// Whether the history lists the broker's writes in the order it
    /// applied them (the memory backend, under one lock, recorded on a
    /// current-thread runtime): what the priority checker relies on.
    pub applied_in_order: bool,
    pub history: History,
    pub state: FinalState,
    pub gathers: Vec<GatherRecord>,
    pub reports: Vec<WorkerReport>,
    /// Things that went wrong with the run itself (a worker that stopped
    /// with an error, a dispatch that failed for good).
    pub problems: Vec<String>,
    /// Whether the drain reached quiescence within its limit.
    pub drained: bool,
    /// Broker faults injected.
    pub injected: u64,
    /// How often each state-level fault class (poison kinds, trims, group
    /// destructions) fired,
    /// by class name; the checker adds them to the hits it counts from the
    /// history.
    pub hits: BTreeMap<&'static str, u64>,
    /// The appends a broker rollback forgot, in order (the history's
    /// `RolledBack` events list them too); the final state's outcomes and
    /// entries leave them out.
    pub forgotten: Vec<rollbacks::Append>,
    /// Each agent type's shared rate limit's log of starts (its key), as
    /// the history's rate events name it.
    pub rate_starts: BTreeMap<String, String>,
}

/// What a crash or a pause does, in timeline order.
#[derive(Clone, Copy, Debug)]
enum Action {
    Crash {
        worker: u32,
        down_ms: u64,
        rename: bool,
    },
    Restart {
        worker: u32,
    },
    Pause {
        worker: u32,
        for_ms: u64,
    },
    /// A graceful stop of a worker, back after the grace and `down_ms`.
    Stop {
        worker: u32,
        grace_ms: u64,
        down_ms: u64,
    },
    /// An injected trim of agent type `agent`'s task stream.
    Trim {
        agent: u32,
        cut: crate::plan::TrimCut,
    },
    /// An injected `XGROUP DESTROY` of agent type `agent`'s worker group.
    DestroyGroup {
        agent: u32,
    },
    /// An injected `DEL` of agent type `agent`'s task stream.
    DeleteStream {
        agent: u32,
    },
    /// The snapshot a planned rollback will restore.
    Snapshot {
        rollback: u32,
    },
    /// A planned rollback: its snapshot restored.
    Restore {
        rollback: u32,
    },
}

/// The workers' rollback window (see [`Crewing::rollback_window`]): the
/// longest lag of the plan's rollbacks, where they fire.
fn rollback_window(plan: &FaultPlan, rollbacks_fire: bool) -> Duration {
    let longest = plan.rollbacks.iter().map(|r| r.lag_ms).max();
    match longest {
        Some(ms) if rollbacks_fire => Duration::from_millis(ms),
        _ => Duration::ZERO,
    }
}

pub(crate) async fn run<B: Broker + Clone + 'static>(
    scenario: &Scenario,
    crew: &Crew,
    seed: u64,
    plan: FaultPlan,
    backend: Backend<B>,
) -> Result<RunRecord, SimError> {
    if let Some(problem) = scenario.problem() {
        return Err(SimError::Scenario(problem));
    }
    let recorder = Recorder::new();
    let recorded = RecordingBroker::new(backend.broker.clone(), recorder.clone());
    let brokers = Brokers::new(
        recorded,
        plan.broker,
        plan.half_open.clone(),
        plan.outages.clone(),
        seed,
        recorder.clone(),
    );
    let handler_faults = Arc::new(HandlerFaults::new(&plan, recorder.clone()));
    let keyspace = backend.keyspace.clone();
    let crewing = Crewing {
        scenario,
        crew,
        seed,
        keyspace: &keyspace,
        clock: Arc::clone(&backend.clock),
        brokers: &brokers,
        faults: Arc::clone(&handler_faults),
        recorder: &recorder,
        rollback_window: rollback_window(&plan, backend.rollback.is_some()),
        lanes: plan.lanes,
    };
    let mut slots = crewing.slots()?;
    let agents: Vec<AgentKeys> = scenario
        .agent_types
        .iter()
        .filter_map(|a| AgentType::new(a.as_str()).ok())
        .map(|a| keyspace.keys(&a))
        .collect();
    // Every lane the plan's tasks use (issue 12), per agent type, lowest
    // first: the drain waits on them all and the final state reads them
    // all. The injected state faults (trims, group destroys, stream
    // deletes, a rollback's check that the groups exist) stay on lane 0,
    // the agent type's plain task stream, in `agents`.
    let lanes: Vec<state::LaneKeys> = scenario
        .agent_types
        .iter()
        .filter_map(|a| AgentType::new(a.as_str()).ok())
        .enumerate()
        .flat_map(|(agent, a)| {
            plan.priorities_in_use()
                .into_iter()
                .filter_map(|p| crewq_core::Priority::new(p).ok())
                .map(|p| state::LaneKeys {
                    agent,
                    priority: u8::from(p),
                    keys: keyspace.lane_keys(&a, p),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for slot in &mut slots {
        crewing.start(slot);
    }

    let hits = Hits::default();
    let mut rollbacks = Rollbacks::new(backend.rollback.clone());
    let gathers: Gathers = Arc::new(Mutex::new(Vec::new()));
    let producer = |actor: &str, stream| {
        Producer::new(brokers.handle(actor, stream))
            .with_keyspace(keyspace.clone())
            .with_clock(ClockRef(Arc::clone(&backend.clock)))
            // The safe default, checked often enough to fire in a short
            // run: the checker accounts from the journal of appends, not
            // the final streams.
            .with_retention(retention(scenario))
    };
    let supervisor = Supervisor::with_options(
        "sim-supervisor",
        producer("supervisor", SUPERVISOR),
        SupervisorOptions::default().poll(scenario.lease / 4),
    )
    .map_err(|e| SimError::Scenario(e.to_string()))?;
    let dispatcher = Dispatcher {
        scenario: scenario.clone(),
        crew: crew.clone(),
        plan: plan.clone(),
        keyspace: keyspace.clone(),
        // A producer's mutant (`schedule-at-once`) breaks its scheduled
        // dispatches; the worker's mutants leave it as it is.
        producer: producer("producer", PRODUCER).with_mutant(scenario.mutant),
        supervisor,
        raw: brokers.recorded().clone(),
        recorder: recorder.clone(),
        hits: hits.clone(),
        gathers: Arc::clone(&gathers),
        gather_timeout: scenario.fault_window + scenario.drain_limit + scenario.lease * 10,
    };
    let dispatching = tokio::spawn(dispatcher.run());

    // The fault phase: crashes, restarts and pauses in time order.
    let fault_end = millis_of(scenario.fault_window);
    let mut timeline = timeline(&plan);
    while let Some(((at, _), action)) = timeline.pop_first() {
        if at >= fault_end {
            break;
        }
        tokio::time::sleep_until(recorder.at(at)).await;
        if let Action::Trim { agent, cut } = action {
            if let Some(keys) = agents.get(agent as usize)
                && trims::trim(brokers.recorded(), keys, cut, &recorder).await > 0
            {
                hits.hit(TRIM_FAULT);
            }
            continue;
        }
        if let Action::DestroyGroup { agent } = action {
            if let Some(keys) = agents.get(agent as usize)
                && groups::destroy(brokers.recorded(), keys, &recorder).await
            {
                hits.hit(GROUP_DESTROYED);
            }
            continue;
        }
        if let Action::DeleteStream { agent } = action {
            if let (Some(keys), Some(memory)) = (agents.get(agent as usize), &backend.rollback)
                && groups::delete_stream(
                    memory,
                    brokers.recorded(),
                    keys,
                    &*backend.clock,
                    &recorder,
                )
                .await
            {
                hits.hit(STREAM_DELETED);
            }
            continue;
        }
        if rollbacks
            .act(action, at, brokers.recorded(), &agents, &recorder, &hits)
            .await
        {
            continue;
        }
        let Some(slot) = slots.get_mut(worker_of(action) as usize) else {
            continue;
        };
        match action {
            Action::Crash {
                worker,
                down_ms,
                rename,
            } => {
                if slot.crash(rename, &recorder) {
                    let back = (at + down_ms, u32::MAX - worker);
                    timeline.insert(back, Action::Restart { worker });
                }
            }
            Action::Restart { .. } => {
                slot.finish_stop().await;
                crewing.start(slot);
            }
            Action::Stop {
                worker,
                grace_ms,
                down_ms,
            } => {
                if slot.stop(Duration::from_millis(grace_ms), &recorder) {
                    let back = (at + grace_ms + down_ms, u32::MAX - worker);
                    timeline.insert(back, Action::Restart { worker });
                }
            }
            Action::Pause { for_ms, .. } => slot.pause(at + for_ms, &recorder),
            Action::Trim { .. }
            | Action::DestroyGroup { .. }
            | Action::DeleteStream { .. }
            | Action::Snapshot { .. }
            | Action::Restore { .. } => {}
        }
    }
    tokio::time::sleep_until(recorder.at(fault_end)).await;

    // The drain: no more faults, everyone back, until nothing is left.
    brokers.switch_off();
    handler_faults.switch_off();
    recorder.record(Event::FaultsOff);
    for slot in &mut slots {
        if !slot.is_stopping() {
            crewing.start(slot);
        }
    }
    for slot in &mut slots {
        // Back once its stop has ended (its grace bounds the wait).
        slot.finish_stop().await;
        crewing.start(slot);
    }
    let drained = drain(scenario, &backend.broker, &lanes, &dispatching, &recorder).await;
    let gathers = finish_gathers(&gathers, scenario.lease * 2, &recorder).await;
    let mut problems = Vec::new();
    let mut reports = Vec::new();
    for slot in &mut slots {
        let last = slot.shutdown(scenario.lease, &recorder).await;
        for ended in slot.take_ended().into_iter().chain(last) {
            match ended {
                Ok(report) => reports.push(report),
                Err(err) => problems.push(format!("a worker stopped with an error: {err}")),
            }
        }
    }
    if !dispatching.is_finished() {
        dispatching.abort();
        problems.push("the dispatcher had not finished when the drain ended".into());
    } else {
        match dispatching.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => problems.push(err.to_string()),
            Err(err) => problems.push(format!("the dispatcher panicked: {err}")),
        }
    }
    let fault_trims = hits.counts().get(TRIM_FAULT).copied().unwrap_or(0);
    let all_trims = recorder
        .history()
        .events()
        .iter()
        .filter(|e| matches!(e.event, Event::Trimmed { .. }))
        .count() as u64;
    for _ in fault_trims..all_trims {
        hits.hit(RETENTION_TRIM);
    }
    let (journal, forgotten) = rollbacks.split(brokers.recorded().journal());
    let mut state = state::read(&backend.broker, &lanes, &journal)
        .await
        .map_err(|e| SimError::Run(format!("reading the final state: {e}")))?;
    state.priorities = plan
        .priorities
        .iter()
        .map(|p| (p.task, p.priority))
        .collect();
    Ok(RunRecord {
        plan,
        history: recorder.history(),
        state,
        gathers,
        reports,
        problems,
        drained,
        injected: brokers.injected(),
        applied_in_order: backend.rollback.is_some(),
        hits: hits.counts(),
        forgotten,
        rate_starts: scenario
            .agent_types
            .iter()
            .filter_map(|a| crewq_core::AgentType::new(a.as_str()).ok())
            .map(|a| (a.as_str().to_owned(), keyspace.rate(&a).starts))
            .collect(),
    })
}

/// The plan's crashes and pauses, keyed by time and then plan order.
fn timeline(plan: &FaultPlan) -> BTreeMap<(u64, u32), Action> {
    let crashes = plan.crashes.iter().map(|c| {
        (
            c.at_ms,
            Action::Crash {
                worker: c.worker,
                down_ms: c.down_ms,
                rename: c.rename,
            },
        )
    });
    let pauses = plan.pauses.iter().map(|p| {
        (
            p.at_ms,
            Action::Pause {
                worker: p.worker,
                for_ms: p.for_ms,
            },
        )
    });
    let trims = plan.trims.iter().map(|t| {
        (
            t.at_ms,
            Action::Trim {
                agent: t.agent,
                cut: t.cut,
            },
        )
    });
    let stops = plan.stops.iter().map(|s| {
        (
            s.at_ms,
            Action::Stop {
                worker: s.worker,
                grace_ms: s.grace_ms,
                down_ms: s.down_ms,
            },
        )
    });
    let destroys = plan
        .group_destroys
        .iter()
        .map(|g| (g.at_ms, Action::DestroyGroup { agent: g.agent }));
    let deletes = plan
        .stream_deletes
        .iter()
        .map(|d| (d.at_ms, Action::DeleteStream { agent: d.agent }));
    crashes
        .chain(pauses)
        .chain(trims)
        .chain(stops)
        .chain(destroys)
        .chain(deletes)
        .chain(rollbacks::actions(plan))
        .enumerate()
        .map(|(n, (at, action))| ((at, n as u32), action))
        .collect()
}

fn worker_of(action: Action) -> u32 {
    match action {
        Action::Crash { worker, .. }
        | Action::Restart { worker }
        | Action::Pause { worker, .. }
        | Action::Stop { worker, .. } => worker,
        Action::Trim { .. }
        | Action::DestroyGroup { .. }
        | Action::DeleteStream { .. }
        | Action::Snapshot { .. }
        | Action::Restore { .. } => u32::MAX,
    }
}

/// Waits until the dispatcher is done and nothing is pending or unread,
/// or the drain limit passes. Returns whether it drained.
async fn drain<B: Broker, T>(
    scenario: &Scenario,
    broker: &B,
    agents: &[state::LaneKeys],
    dispatching: &tokio::task::JoinHandle<T>,
    recorder: &Recorder,
) -> bool {
    let deadline = tokio::time::Instant::now() + scenario.drain_limit;
    let poll = (scenario.lease / 4).max(Duration::from_millis(5));
    loop {
        if dispatching.is_finished() && state::quiescent(broker, agents).await {
            recorder.record(Event::Quiescent);
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            recorder.record(Event::DrainGaveUp);
            return false;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Gives the gathers `grace` to return, then abandons those still waiting.
async fn finish_gathers(
    gathers: &Gathers,
    grace: Duration,
    recorder: &Recorder,
) -> Vec<GatherRecord> {
    let deadline = tokio::time::Instant::now() + grace;
    let taken = std::mem::take(&mut *gathers.lock().unwrap_or_else(PoisonError::into_inner));
    let mut records = Vec::with_capacity(taken.len());
    for (workflow, tasks, mut handle) in taken {
        let outcome = match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(err)) => GatherOutcome::Failed(format!("the gather panicked: {err}")),
            Err(_) => {
                handle.abort();
                recorder.record(Event::GatherAbandoned { workflow });
                GatherOutcome::Abandoned
            }
        };
        records.push(GatherRecord {
            workflow,
            tasks,
            outcome,
        });
    }
    records
}

/// Hit count class of an injected trim that removed entries.
const TRIM_FAULT: &str = "trim_task_stream";
/// Hit count class of an injected `XGROUP DESTROY` of a worker group.
const GROUP_DESTROYED: &str = "group_destroyed";
/// Hit count class of an injected `DEL` of a task stream.
const STREAM_DELETED: &str = "stream_deleted";
/// Hit count class of a retention trim (producer, supervisor, workers)
/// that removed entries.
const RETENTION_TRIM: &str = "retention_trim";

/// The producer's task-stream retention: with
/// [`Scenario::safe_retention`], the safe default ([`Retention::DEFAULT`])
/// checked every few appends and leases so that it trims within a short
/// run; otherwise none.
fn retention(scenario: &Scenario) -> Retention {
    if !scenario.safe_retention {
        return Retention::None;
    }
    match Retention::DEFAULT {
        Retention::Acknowledged(ack) => {
            Retention::Acknowledged(ack.every_appends(8).every(scenario.lease))
        }
        other => other,
    }
}

/// A shared clock as a `Clock` value (the producer takes one by value).
#[derive(Debug, Clone)]
struct ClockRef(Arc<dyn Clock>);

impl Clock for ClockRef {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}
