//! The Broker conformance suite on the in-memory backend: one test per case,
//! each on a fresh `MemoryBroker` whose clock is tokio's paused clock, so
//! the cases' sleeps are instant and exact.

use crewq_core::TokioClock;
use crewq_core::conformance::Ctx;
use crewq_memory::MemoryBroker;

/// Expands every conformance case into a `#[tokio::test]` of the same name.
macro_rules! memory_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $case() {
            let broker = MemoryBroker::with_clock(TokioClock::default());
            crewq_core::conformance::$case(&broker, &Ctx::new("t")).await;
        }
    )*};
}

crewq_core::conformance_cases!(memory_cases);
