//! The Broker conformance suite on a real Redis: one test per case, each on
//! a private redis-server (or under its own key prefix on `CREWQ_REDIS_URL`).

use crewq_core::conformance::Ctx;
use crewq_tests::redis_server::TestRedis;

/// Expands every conformance case into a `#[tokio::test]` of the same name.
macro_rules! redis_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            let server = TestRedis::start();
            let broker = server.broker().await;
            crewq_core::conformance::$case(&broker, &Ctx::new(server.unique_prefix())).await;
        }
    )*};
}

crewq_core::conformance_cases!(redis_cases);
