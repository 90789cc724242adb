//! A broker for one test on any backend, and
//! [`on_both_backends!`](crate::on_both_backends), which runs each case on
//! memory, one Redis and a Redis Cluster.

use std::sync::Arc;

use crewq_core::producer::Producer;
use crewq_core::{Broker, Clock, Keyspace, SystemClock, TokioClock};
use crewq_memory::MemoryBroker;

use crate::redis_cluster::{ScopedPrefix, TestCluster};
use crate::redis_server::TestRedis;

/// What one test runs against.
pub struct Backend {
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// The seed layout under [`Backend::prefix`].
    pub keyspace: Keyspace,
    /// A key prefix no other test shares on this server.
    pub prefix: String,
    /// The memory broker's clock (tokio's, paused in tests), for components
    /// that need the broker's time; `None` on Redis, whose ids come from
    /// its own clock.
    pub clock: Option<TokioClock>,
    /// Keeps a private redis-server running for the test (or deletes the
    /// test's keys from a `CREWQ_REDIS_URL` server) when dropped.
    pub server: Option<TestRedis>,
    /// On the shared test cluster, the test's prefix (its keys deleted from
    /// a `CREWQ_REDIS_CLUSTER_URL` cluster when dropped).
    pub cluster_prefix: Option<ScopedPrefix>,
    /// Deletes keys (`DEL`), which the [`Broker`] contract cannot.
    pub deleter: Deleter,
}

/// `DEL` on the backend's own terms: an operator deleting a key under
/// running workers.
#[derive(Clone)]
pub enum Deleter {
    /// [`MemoryBroker::delete_stream`].
    Memory(MemoryBroker),
    /// [`crewq_redis::RedisBroker::delete_keys`], on one server or a cluster.
    Redis(crewq_redis::RedisBroker),
}

impl Deleter {
    /// Deletes the stream `key` with its groups; returns whether it existed.
    pub async fn delete_stream(&self, key: &str) -> bool {
        match self {
            Deleter::Memory(broker) => broker.delete_stream(key),
            Deleter::Redis(broker) => {
                let deleted = broker
                    .delete_keys(&[key.to_owned()])
                    .await
                    .unwrap_or_else(|e| panic!("DEL {key}: {e}"));
                deleted > 0
            }
        }
    }
}

impl Backend {
    /// A fresh memory broker on tokio's clock.
    pub fn memory() -> Backend {
        let clock = TokioClock::default();
        let prefix = Keyspace::SEED_PREFIX.to_owned();
        let broker = MemoryBroker::with_clock(clock);
        Backend {
            deleter: Deleter::Memory(broker.clone()),
            broker: Arc::new(broker),
            keyspace: Keyspace::default(),
            prefix,
            clock: Some(clock),
            server: None,
            cluster_prefix: None,
        }
    }

    /// A private redis-server (or `CREWQ_REDIS_URL`) and a unique prefix.
    pub async fn redis() -> Backend {
        let server = TestRedis::start();
        let prefix = server.unique_prefix();
        let broker = server.broker().await;
        Backend {
            deleter: Deleter::Redis(broker.clone()),
            broker: Arc::new(broker),
            keyspace: Keyspace::default()
                .with_prefix(&prefix)
                .unwrap_or_else(|e| panic!("a test prefix is a valid key prefix: {e}")),
            prefix,
            clock: None,
            server: Some(server),
            cluster_prefix: None,
        }
    }

    /// The test binary's shared Redis Cluster (or
    /// `CREWQ_REDIS_CLUSTER_URL`), the cluster keyspace under a unique
    /// prefix: an agent type's keys in one slot, agent types spread over
    /// the masters.
    pub async fn cluster() -> Backend {
        let cluster = TestCluster::shared();
        let prefix = cluster.scoped_prefix();
        let broker = cluster.broker().await;
        Backend {
            deleter: Deleter::Redis(broker.clone()),
            broker: Arc::new(broker),
            keyspace: Keyspace::cluster()
                .with_prefix(prefix.as_str())
                .unwrap_or_else(|e| panic!("a test prefix is a valid key prefix: {e}")),
            prefix: prefix.as_str().to_owned(),
            clock: None,
            server: None,
            cluster_prefix: Some(prefix),
        }
    }

    /// Whether this is the memory backend (the only one on tokio's clock).
    pub fn is_memory(&self) -> bool {
        self.clock.is_some()
    }

    /// A producer with crewq's defaults on this backend's keys and clock:
    /// on the memory backend it must share the broker's clock; Redis takes
    /// ids from its own clock, the producer from the system's.
    pub fn producer(&self) -> Producer<Arc<dyn Broker>> {
        let producer = Producer::new(Arc::clone(&self.broker)).with_keyspace(self.keyspace.clone());
        match self.clock {
            Some(clock) => producer.with_clock(clock),
            None => producer,
        }
    }

    /// The broker's time in ms: the memory backend's clock, else the
    /// system's.
    pub fn now_ms(&self) -> u64 {
        match self.clock {
            Some(clock) => clock.now_ms(),
            None => SystemClock.now_ms(),
        }
    }
}

/// Expands each case into `memory::<case>` (a [`Backend::memory`] on
/// tokio's paused clock, so sleeps are instant and exact),
/// `redis::<case>` (a [`Backend::redis`], real time) and `cluster::<case>`
/// (a [`Backend::cluster`]: the cluster keyspace on a Redis Cluster).
///
/// - `on_both_backends!(by_ref: a, b)` for cases
///   `async fn a(broker: &dyn Broker, keyspace: &Keyspace)`;
/// - `on_both_backends!(Ctx: a, b)` for cases `async fn a(ctx: Ctx)` where
///   `Ctx: From<Backend>`.
#[macro_export]
macro_rules! on_both_backends {
    (by_ref: $($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    let backend = $crate::backends::Backend::memory();
                    super::$case(&*backend.broker, &backend.keyspace).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = $crate::backends::Backend::redis().await;
                    super::$case(&*backend.broker, &backend.keyspace).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = $crate::backends::Backend::cluster().await;
                    super::$case(&*backend.broker, &backend.keyspace).await;
                }
            )*
        }
    };
    ($ctx:ident: $($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::$case(super::$ctx::from($crate::backends::Backend::memory())).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = $crate::backends::Backend::redis().await;
                    super::$case(super::$ctx::from(backend)).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = $crate::backends::Backend::cluster().await;
                    super::$case(super::$ctx::from(backend)).await;
                }
            )*
        }
    };
}
