//! The Broker conformance suite on a real Redis: one test per case, each on
//! a private redis-server (or under its own key prefix on `CREWQ_REDIS_URL`),
//! once speaking RESP2 (the default) and once RESP3, whose replies have
//! other shapes (maps instead of flat arrays), and once with every append
//! waiting for a replica.

use crewq_core::conformance::Ctx;
use crewq_tests::redis_server::TestRedis;

/// The server's URL asking for RESP3.
fn resp3_url(server: &TestRedis) -> String {
    let separator = if server.url().contains('?') { '&' } else { '?' };
    format!("{}{separator}protocol=resp3", server.url())
}

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

/// The same cases over RESP3.
mod resp3 {
    use super::*;

    macro_rules! redis_resp3_cases {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $case() {
                let server = TestRedis::start();
                let broker = crewq_redis::RedisBroker::connect(&resp3_url(&server))
                    .await
                    .expect("connect with RESP3");
                crewq_core::conformance::$case(&broker, &Ctx::new(server.unique_prefix())).await;
            }
        )*};
    }

    crewq_core::conformance_cases!(redis_resp3_cases);
}

/// The same cases with every append waiting for a replica
/// (`RedisConfig::wait_for_replicas`): each on a private server with a
/// private replica, so the opt-in changes no reply, only when it comes.
mod waiting_for_a_replica {
    use super::*;

    macro_rules! redis_waiting_cases {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $case() {
                let server = TestRedis::start_with_args(&[]);
                let _replica = server.start_replica();
                let broker = crewq_redis::RedisConfig::new(server.url())
                    .wait_for_replicas(1, std::time::Duration::from_secs(5))
                    .connect()
                    .await
                    .expect("connect");
                crewq_core::conformance::$case(&broker, &Ctx::new(server.unique_prefix())).await;
            }
        )*};
    }

    crewq_core::conformance_cases!(redis_waiting_cases);
}
