//! crewq-chaos: crewq run as a user runs it — worker processes, a producer
//! and a real redis-server — under real faults, with every task accounted
//! for from Redis itself.
//!
//! The runner (`crewq-chaos all`, `crewq-chaos scenario NAME`) starts a
//! private redis-server per scenario on a free loopback port, a crew of
//! `crewq-chaos worker` processes (the real `Worker` over the real
//! `RedisBroker`), and a producer in process; it injects the scenario's
//! faults (SIGKILLed workers, a SIGKILLed or stopped Redis, a proxy that
//! delays, resets, refuses and stalls, poison entries, a backlog beyond the
//! retention), lets the crew drain, and then reads the task, result and
//! dead-letter streams and the pending list to classify every task
//! ([`accounting`]). A scenario fails when a task is lost, stuck, or
//! dead-lettered although a run of it succeeded or although it did not fail
//! `1 + max_retries` times. RELIABILITY.md at the repository root has the
//! figures.

pub mod accounting;
pub mod crew;
pub mod dispatch;
pub mod gather;
pub mod harness;
pub mod proxy;
pub mod scenarios;
pub mod server;
pub mod worker;
