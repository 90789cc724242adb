//! The Broker conformance suite on a Redis Cluster (3 masters, 3 replicas):
//! one test per case, all on one private cluster per run of this binary (or
//! `CREWQ_REDIS_CLUSTER_URL`), once over RESP2 and once over RESP3.
//!
//! Each case's keys share one hash tag, its prefix (`{crewqtest-...}:a`):
//! the cases' atomic steps write several keys, and on a cluster those must
//! live in one slot, as the cluster keyspace keeps an agent type's keys.
//! The cases spread over the masters by their prefixes.

use crewq_core::conformance::Ctx;
use crewq_tests::redis_cluster::TestCluster;

/// The case's context: its keys under the hash tag `{<prefix>}`.
fn tagged(prefix: &str) -> Ctx {
    Ctx::new(format!("{{{prefix}}}"))
}

/// Expands every conformance case into a `#[tokio::test]` of the same name.
macro_rules! cluster_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            let cluster = TestCluster::shared();
            let prefix = cluster.scoped_prefix();
            let broker = cluster.broker().await;
            crewq_core::conformance::$case(&broker, &tagged(prefix.as_str())).await;
        }
    )*};
}

crewq_core::conformance_cases!(cluster_cases);

/// The same cases over RESP3.
mod resp3 {
    use super::*;

    macro_rules! cluster_resp3_cases {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $case() {
                let cluster = TestCluster::shared();
                let prefix = cluster.scoped_prefix();
                let broker = crewq_redis::RedisConfig::new(format!("{}?protocol=resp3", cluster.url()))
                    .cluster()
                    .connect()
                    .await
                    .expect("connect to the cluster with RESP3");
                crewq_core::conformance::$case(&broker, &tagged(prefix.as_str())).await;
            }
        )*};
    }

    crewq_core::conformance_cases!(cluster_resp3_cases);
}
