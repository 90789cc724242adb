//! The crew's worker slots: each one real [`Worker`](crewq_core::worker::Worker)
//! at a time, started, crashed, restarted (maybe under a new name) and
//! paused as the plan says.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crewq_core::producer::Retention;
use crewq_core::worker::{Backoff, WorkerHandle, WorkerOptions, WorkerReport};
use crewq_core::{AgentType, Broker, Clock, Keyspace, Validators, WireCodec};

use super::brokers::{Brokers, Handle, worker_stream};
use crate::crew::{CallContext, Crew, HandlerFaults};
use crate::history::{Event, Recorder};
use crate::seed::{Purpose, derive};
use crate::{Scenario, SimError};

/// The payload field that makes a task fail the workers' validation.
pub(crate) const POISON_FIELD: &str = "sim_poison";

/// The [`POISON_FIELD`] value that makes the validator panic: a panic
/// outside the handler.
pub(crate) const PANIC_IN_VALIDATOR: &str = "PanickingValidator";

/// The agent type a wrong-agent-type poison task claims: valid, served by
/// no worker, never its stream's.
pub(crate) const OTHER_AGENT_TYPE: &str = "sim-elsewhere";

/// One worker's place in the crew.
pub(crate) struct Slot<B> {
    worker: u32,
    agent: AgentType,
    /// The worker's number within its agent type.
    nth: u32,
    incarnation: u32,
    consumer: String,
    running: Option<(WorkerHandle, Handle<B>)>,
    /// Asked to stop and stopping: its shutdown, and its broker (to pause).
    stopping: Option<(JoinHandle<Ended>, Handle<B>)>,
    /// How its stopped incarnations ended.
    ended: Vec<Ended>,
    /// Down, and whether it comes back under a new name.
    down: Option<bool>,
}

/// How a worker's run ended: its report or its error.
pub(crate) type Ended = Result<WorkerReport, String>;

/// The attempts a stopped worker cut off and handed back (all it had
/// running, as far as the history can tell, if it ended with an error).
fn handed_back(ended: &Ended) -> u64 {
    ended.as_ref().map_or(u64::MAX, |report| report.handed_back)
}

/// What every worker of the run is built from.
pub(crate) struct Crewing<'a, B> {
    pub scenario: &'a Scenario,
    pub crew: &'a Crew,
    pub seed: u64,
    pub keyspace: &'a Keyspace,
    pub clock: Arc<dyn Clock>,
    pub brokers: &'a Brokers<B>,
    pub faults: Arc<HandlerFaults>,
    pub recorder: &'a Recorder,
    /// The workers' [`WorkerOptions::rollback_window`]: the plan's longest
    /// rollback lag, as an operator sets it to what their persistence
    /// setting can lose (exactly that, so the bound is tested where it is
    /// tight); zero when nothing is rolled back, so a destroyed group is
    /// made again from the newest sample, where the floor logic is sharpest.
    pub rollback_window: Duration,
    /// The plan's starvation bound and lane poll, in a run with priorities.
    pub lanes: Option<crate::plan::LaneSettings>,
}

impl<B: Broker + Clone + 'static> Crewing<'_, B> {
    /// Every slot of the crew, stopped.
    pub fn slots(&self) -> Result<Vec<Slot<B>>, SimError> {
        let scenario = self.scenario;
        let mut slots = Vec::new();
        for (a, name) in scenario.agent_types.iter().enumerate() {
            let agent = AgentType::new(name.as_str())
                .map_err(|e| SimError::Scenario(format!("agent type '{name}': {e}")))?;
            if !self.crew.handles(name) {
                return Err(SimError::Scenario(format!(
                    "the crew has no handler for agent type '{name}'"
                )));
            }
            for nth in 0..scenario.workers {
                slots.push(Slot {
                    worker: a as u32 * scenario.workers + nth,
                    agent: agent.clone(),
                    nth,
                    incarnation: 0,
                    consumer: format!("{name}-{nth}"),
                    running: None,
                    stopping: None,
                    ended: Vec::new(),
                    down: Some(false),
                });
            }
        }
        Ok(slots)
    }

    fn options(&self, slot: &Slot<B>) -> WorkerOptions {
        let scenario = self.scenario;
        let mut options = WorkerOptions::default()
            .lease(scenario.lease)
            .concurrency(scenario.concurrency);
        options.keyspace = self.keyspace.clone();
        options.codec = WireCodec::with_max_bytes(scenario.worker_max_bytes);
        options.validators = Validators::new().with(slot.agent.clone(), |task| {
            match task.payload.get(POISON_FIELD) {
                Some(kind) if kind == PANIC_IN_VALIDATOR => {
                    std::panic::panic_any(crate::crew::InjectedPanic)
                }
                Some(_) => Err("a poison task of the simulation".to_owned()),
                None => Ok(()),
            }
        });
        options.task_timeout = Some(scenario.task_timeout);
        options.backoff = Backoff {
            base: Duration::from_millis(10),
            max: (scenario.lease / 5).max(Duration::from_millis(10)),
        };
        options.seed = Some(derive(
            self.seed,
            Purpose::Worker,
            worker_stream(slot.worker, slot.incarnation),
        ));
        options.clock = Arc::clone(&self.clock);
        options.mutant = scenario.mutant;
        // The checker accounts for results and dead letters from the final
        // streams, so nothing of them is trimmed in a simulation.
        options.result_retention = Retention::None;
        options.dead_letter_retention = Retention::None;
        options.rollback_window = self.rollback_window;
        options.rate_limit = scenario
            .rate_limits_for(self.seed)
            .get(slot.agent.as_str())
            .copied();
        if let Some(lanes) = self.lanes {
            options.starvation_bound = Duration::from_millis(lanes.starvation_ms);
            options.lane_poll = Duration::from_millis(lanes.lane_poll_ms.max(1));
        }
        options
    }

    /// Starts `slot` if it is down (under a new name if it was to be
    /// renamed).
    pub fn start(&self, slot: &mut Slot<B>) {
        let Some(rename) = slot.down.take() else {
            return;
        };
        slot.incarnation += 1;
        if rename {
            slot.consumer = format!("{}-{}.{}", slot.agent.as_str(), slot.nth, slot.incarnation);
        }
        let broker = self
            .brokers
            .handle(&slot.consumer, worker_stream(slot.worker, slot.incarnation));
        let paused = broker.clone();
        let context = CallContext {
            faults: Arc::clone(&self.faults),
            consumer: slot.consumer.clone(),
            worker: slot.worker,
            paused_until: Arc::new(move || paused.paused_until()),
        };
        let options = self.options(slot);
        let handle = match self.crew.runner(slot.agent.as_str()) {
            Some(runner) => runner.spawn(
                Arc::new(broker.clone()),
                slot.agent.clone(),
                slot.consumer.clone(),
                options,
                context,
            ),
            // `slots` checked every agent type has a handler.
            None => return,
        };
        self.recorder.record(Event::Started {
            worker: slot.worker,
            consumer: slot.consumer.clone(),
        });
        slot.running = Some((handle, broker));
    }
}

impl<B: Broker + Clone + 'static> Slot<B> {
    /// Kills the worker at its next await point, as a crash would.
    pub fn crash(&mut self, rename: bool, recorder: &Recorder) -> bool {
        let Some((handle, _)) = self.running.take() else {
            return false;
        };
        handle.abort();
        recorder.record(Event::Crashed {
            worker: self.worker,
            consumer: self.consumer.clone(),
        });
        self.down = Some(rename);
        true
    }

    /// Asks the worker to stop with `grace` (its running tasks get that
    /// long to finish), as a rolling restart does; it is down from now on
    /// and comes back under its name.
    pub fn stop(&mut self, grace: Duration, recorder: &Recorder) -> bool {
        let Some((handle, broker)) = self.running.take() else {
            return false;
        };
        recorder.record(Event::StopRequested {
            worker: self.worker,
            consumer: self.consumer.clone(),
            grace_ms: crate::scenario::millis_of(grace),
        });
        let (worker, consumer, recorder) = (self.worker, self.consumer.clone(), recorder.clone());
        let stopping = tokio::spawn(async move {
            let ended = handle.shutdown(grace).await.map_err(|e| e.to_string());
            recorder.record(Event::Stopped {
                worker,
                consumer,
                handed_back: handed_back(&ended),
            });
            ended
        });
        self.stopping = Some((stopping, broker));
        self.down = Some(false);
        true
    }

    /// Waits until a stop under way has ended (its grace bounds the wait).
    pub async fn finish_stop(&mut self) {
        if let Some((stopping, _)) = self.stopping.take() {
            let ended = stopping
                .await
                .unwrap_or_else(|e| Err(format!("the stopping worker's task failed: {e}")));
            self.ended.push(ended);
        }
    }

    /// Whether a stop is under way.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// How its stopped incarnations ended, taken.
    pub fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }

    /// Freezes the worker until `until_ms` (from the start), also while it
    /// is stopping.
    pub fn pause(&self, until_ms: u64, recorder: &Recorder) {
        let broker = self.running.as_ref().map(|(_, b)| b);
        if let Some(broker) = broker.or(self.stopping.as_ref().map(|(_, b)| b)) {
            broker.pause_until(recorder.at(until_ms));
            recorder.record(Event::Paused {
                worker: self.worker,
                until_ms,
            });
        }
    }

    /// Stops the worker with `grace`, returning its report.
    /// The end of the run: its attempts still running at the end of the
    /// grace are cut off, which the history shows as `Stopped`.
    pub async fn shutdown(&mut self, grace: Duration, recorder: &Recorder) -> Option<Ended> {
        let (handle, _) = self.running.take()?;
        let ended = handle.shutdown(grace).await.map_err(|e| e.to_string());
        recorder.record(Event::Stopped {
            worker: self.worker,
            consumer: self.consumer.clone(),
            handed_back: handed_back(&ended),
        });
        Some(ended)
    }
}
