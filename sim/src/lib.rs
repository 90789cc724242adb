//! crewq-sim: deterministic simulation of crewq over the memory backend.
//!
//! It starts small: [`memory_broker_on_virtual_time`] builds the broker a
//! simulation runs on. Fault injection and the history checker come with the
//! coordination layer they exercise.

use crewq_core::TokioClock;
use crewq_memory::MemoryBroker;

/// A memory broker whose clock is tokio's, for runs under paused time.
pub fn memory_broker_on_virtual_time() -> MemoryBroker {
    MemoryBroker::with_clock(TokioClock::default())
}
