//! The broker handles of a run: one [`FaultyBroker`] per actor (each worker
//! incarnation, the producer, the supervisor), all over one recording
//! broker, each with its own fault stream, all switched off together.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crewq_core::Broker;

use crate::history::{Event, Recorder};
use crate::plan::BrokerFaults;
use crate::recorder::RecordingBroker;
use crate::seed::{Purpose, derive};
use crate::{Fault, FaultConfig, FaultyBroker, OpSet};

/// A fault-injecting handle over the run's recording broker.
pub(crate) type Handle<B> = FaultyBroker<RecordingBroker<B>>;

/// Stable indexes of the actors' fault streams.
pub(crate) const PRODUCER: u64 = 0;
pub(crate) const SUPERVISOR: u64 = 1;

/// The fault stream of worker slot `worker`'s `incarnation`th life.
pub(crate) fn worker_stream(worker: u32, incarnation: u32) -> u64 {
    2 + (u64::from(worker) << 20) + u64::from(incarnation)
}

pub(crate) struct Brokers<B> {
    recorded: RecordingBroker<B>,
    faults: BrokerFaults,
    seed: u64,
    recorder: Recorder,
    state: Mutex<Switch<B>>,
}

struct Switch<B> {
    off: bool,
    handles: Vec<Handle<B>>,
}

impl<B: Broker + Clone + 'static> Brokers<B> {
    pub fn new(
        recorded: RecordingBroker<B>,
        faults: BrokerFaults,
        seed: u64,
        recorder: Recorder,
    ) -> Self {
        Brokers {
            recorded,
            faults,
            seed,
            recorder,
            state: Mutex::new(Switch {
                off: false,
                handles: Vec::new(),
            }),
        }
    }

    /// The recording broker itself: what the run writes without faults
    /// (a foreign producer's poison entry).
    pub fn recorded(&self) -> &RecordingBroker<B> {
        &self.recorded
    }

    /// A new handle for `actor`, drawing its faults from `stream`.
    pub fn handle(&self, actor: &str, stream: u64) -> Handle<B> {
        let latency = (self.faults.latency_ms > 0).then(|| {
            (
                Duration::ZERO,
                Duration::from_millis(self.faults.latency_ms),
            )
        });
        let config = FaultConfig {
            seed: derive(self.seed, Purpose::Broker, stream),
            error_before: self.faults.error_before,
            error_after: self.faults.error_after,
            latency,
            ops: OpSet::all(),
        };
        let handle = FaultyBroker::new(self.recorded.clone(), config);
        let (recorder, actor) = (self.recorder.clone(), actor.to_owned());
        handle.set_observer(Arc::new(move |event| {
            // Latency shows in the timestamps; only errors are events.
            if matches!(event.fault, Fault::Before | Fault::After) {
                recorder.record(Event::Fault {
                    actor: actor.clone(),
                    seq: event.seq,
                    op: event.op,
                    fault: event.fault,
                });
            }
        }));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.off {
            handle.set_enabled(false);
        }
        state.handles.push(handle.clone());
        handle
    }

    /// Switches faults off for every handle, present and future, and ends
    /// every pause.
    pub fn switch_off(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.off = true;
        for handle in &state.handles {
            handle.set_enabled(false);
            handle.resume();
        }
    }

    /// Faults injected on every handle.
    pub fn injected(&self) -> u64 {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.handles.iter().map(FaultyBroker::injected).sum()
    }
}
