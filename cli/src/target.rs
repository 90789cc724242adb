//! `--cluster`: whether a command's Redis URL names one server or a Redis
//! Cluster, and the key layout that goes with it.

use crewq_core::{Keyspace, Result};
use crewq_redis::{RedisBroker, RedisConfig};

/// The help text of every `--cluster` flag.
pub const CLUSTER_HELP: &str = "The Redis URL is a Redis Cluster's: one node's URL, or a \
     comma-separated list of host:port seed nodes. Keys then use the cluster layout \
     (<prefix>:{<agent_type>}:tasks ...), every agent type's keys in one hash slot";

/// Connects to `url`: a Redis Cluster's seeds when `cluster`, else one
/// server.
pub async fn connect(url: &str, cluster: bool) -> Result<RedisBroker> {
    let config = RedisConfig::new(url);
    let config = if cluster { config.cluster() } else { config };
    config.connect().await
}

/// The key layout for a run on Redis: the cluster's when `cluster`, else
/// the seed's.
pub fn layout(cluster: bool) -> Keyspace {
    if cluster {
        Keyspace::cluster()
    } else {
        Keyspace::default()
    }
}
