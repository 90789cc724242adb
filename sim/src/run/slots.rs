//! The crew's worker slots: each one real [`Worker`](crewq_core::worker::Worker)
//! at a time, started, crashed, restarted (maybe under a new name) and
//! paused as the plan says.

use std::sync::Arc;
use std::time::Duration;

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
    /// Down, and whether it comes back under a new name.
    down: Option<bool>,
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

    /// Freezes the worker until `until_ms` (from the start).
    pub fn pause(&self, until_ms: u64, recorder: &Recorder) {
        if let Some((_, broker)) = &self.running {
            broker.pause_until(recorder.at(until_ms));
            recorder.record(Event::Paused {
                worker: self.worker,
                until_ms,
            });
        }
    }

    /// Stops the worker with `grace`, returning its report.
    pub async fn shutdown(&mut self, grace: Duration) -> Option<Result<WorkerReport, String>> {
        let (handle, _) = self.running.take()?;
        Some(handle.shutdown(grace).await.map_err(|e| e.to_string()))
    }
}
