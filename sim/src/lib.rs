//! crewq-sim: deterministic simulation of crewq over the memory backend.
//!
//! Two pieces so far: [`memory_broker_on_virtual_time`] builds the broker a
//! simulation runs on, and [`FaultyBroker`] wraps any broker to inject
//! seeded faults (transient errors before or after a call is applied, and
//! latency) into the real worker, producer and supervisor code above it.
//! The scenario runner and the history checker are built on these.

mod faulty;

pub use faulty::{Fault, FaultConfig, FaultEvent, FaultLog, FaultyBroker, Op, OpSet};

use crewq_core::TokioClock;
use crewq_memory::MemoryBroker;

/// A memory broker whose clock is tokio's, for runs under paused time.
pub fn memory_broker_on_virtual_time() -> MemoryBroker {
    MemoryBroker::with_clock(TokioClock::default())
}
