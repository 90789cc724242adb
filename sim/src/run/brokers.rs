//! The broker handles of a run: one [`FaultyBroker`] per actor (each worker
//! incarnation, the producer, the supervisor), all over one recording
//! broker, each with its own fault stream, all switched off together.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crewq_core::Broker;

use crate::history::{Event, Recorder};
use crate::plan::{BrokerFaults, HalfOpenLink, Outage};
use crate::recorder::RecordingBroker;
use crate::seed::{Purpose, derive};
use crate::{FaultConfig, FaultyBroker, HalfOpen, Op, OpSet};

/// A fault-injecting handle over the run's recording broker.
pub(crate) type Handle<B> = FaultyBroker<RecordingBroker<B>>;

/// Stable indexes of the actors' fault streams.
pub(crate) const PRODUCER: u64 = 0;
pub(crate) const SUPERVISOR: u64 = 1;

/// The fault stream of worker slot `worker`'s `incarnation`th life.
pub(crate) fn worker_stream(worker: u32, incarnation: u32) -> u64 {
    2 + (u64::from(worker) << 20) + u64::from(incarnation)
}

/// Whether `stream` is a worker's (not the producer's or supervisor's).
fn is_worker(stream: u64) -> bool {
    stream >= 2
}

pub(crate) struct Brokers<B> {
    recorded: RecordingBroker<B>,
    faults: BrokerFaults,
    links: Vec<HalfOpenLink>,
    /// Outages of the broker: every handle's calls fail in them.
    outages: Vec<Outage>,
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
        links: Vec<HalfOpenLink>,
        outages: Vec<Outage>,
        seed: u64,
        recorder: Recorder,
    ) -> Self {
        Brokers {
            recorded,
            faults,
            links,
            outages,
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
            refused: self.faults.refused,
            item_failure: self.faults.item_failure,
            half_open: self.half_open_of(stream),
            outages: self
                .outages
                .iter()
                .map(|o| {
                    self.recorder.at(o.at_ms)..self.recorder.at(o.at_ms.saturating_add(o.for_ms))
                })
                .collect(),
        };
        let handle = FaultyBroker::new(self.recorded.clone(), config);
        let (recorder, name) = (self.recorder.clone(), actor.to_owned());
        handle.set_observer(Arc::new(move |event| {
            // Latency shows in the timestamps; only errors are events.
            if event.fault.is_error() {
                recorder.record(Event::Fault {
                    actor: name.clone(),
                    seq: event.seq,
                    op: event.op,
                    fault: event.fault,
                });
            }
        }));
        if is_worker(stream) {
            // What a worker read, and whether it failed: how the checker
            // sees that failing scans never starve reading new work.
            let (recorder, consumer) = (self.recorder.clone(), actor.to_owned());
            handle.set_call_observer(Arc::new(move |call| {
                if matches!(
                    call.op,
                    Op::ReadGroup | Op::ReadLanes | Op::Autoclaim | Op::AutoclaimRecorded
                ) {
                    recorder.record(Event::Read {
                        consumer: consumer.clone(),
                        op: call.op,
                        conn: call.conn,
                        ok: call.ok,
                    });
                }
            }));
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.off {
            handle.set_enabled(false);
        }
        state.handles.push(handle.clone());
        handle
    }

    /// The half-open links of the worker whose handle draws from `stream`
    /// (none for the producer and the supervisor): every incarnation of
    /// that worker slot shares its link's window.
    fn half_open_of(&self, stream: u64) -> Vec<HalfOpen> {
        if !is_worker(stream) {
            return Vec::new();
        }
        let worker = (stream - 2) >> 20;
        self.links
            .iter()
            .filter(|link| u64::from(link.worker) == worker)
            .map(|link| HalfOpen {
                from: self.recorder.at(link.at_ms),
                until: self.recorder.at(link.at_ms.saturating_add(link.for_ms)),
                timeout: Duration::from_millis(link.timeout_ms),
                flows: link.flows,
            })
            .collect()
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
