//! The Broker conformance suite: one `pub async fn` per `# Behavior` bullet
//! of [`Broker`](crate::Broker).
//!
//! A backend runs the suite by expanding [`conformance_cases!`](crate::conformance_cases)
//! into one named test per case:
//!
//! ```ignore
//! macro_rules! my_backend_cases {
//!     ($($case:ident),* $(,)?) => {$(
//!         #[tokio::test(start_paused = true)]
//!         async fn $case() {
//!             let broker = MyBroker::new();
//!             crewq_core::conformance::$case(&broker, &Ctx::new("t")).await;
//!         }
//!     )*};
//! }
//! crewq_core::conformance_cases!(my_backend_cases);
//! ```
//!
//! # Time
//!
//! Cases that need time to pass (idle times, blocking reads) call
//! `tokio::time::sleep`. A backend whose clock is tokio's (the memory broker
//! with [`TokioClock`](crate::TokioClock)) runs them on a paused runtime,
//! where those sleeps are instant and exact; a real server runs them on real
//! time, so the cases sleep a little longer than the thresholds they test.
//!
//! # Keys
//!
//! Every key a case touches comes from [`Ctx::key`], so cases can share a
//! server, run in parallel, and be cleaned up by prefix.

/// Where a case puts its keys.
#[derive(Clone, Debug)]
pub struct Ctx {
    prefix: String,
}

impl Ctx {
    /// Keys will start with `prefix` and a colon.
    pub fn new(prefix: impl Into<String>) -> Self {
        Ctx {
            prefix: prefix.into(),
        }
    }

    /// The key called `name` in this case's namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{}", self.prefix, name)
    }

    /// The prefix every key of this case starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Calls `$callback! { case, case, ... }` with the name of every
/// conformance case, so a backend's test file can expand each into a test.
#[macro_export]
macro_rules! conformance_cases {
    ($callback:ident) => {
        $callback! {
            xadd_auto_ids_strictly_increase,
        }
    };
}

/// The names of all cases, in the order of [`conformance_cases!`](crate::conformance_cases).
pub const CASES: &[&str] = {
    macro_rules! names {
        ($($case:ident),* $(,)?) => { &[$(stringify!($case)),*] };
    }
    conformance_cases!(names)
};

mod stream;
pub use stream::*;
