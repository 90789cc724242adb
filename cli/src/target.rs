//! Where a command's streams are: the Redis URL, `--cluster` and the key
//! prefix, as one set of flags every operator command shares.

use std::error::Error;
use std::time::Duration;

use crewq_core::{AgentType, Keyspace, Result};
use crewq_redis::{RedisBroker, RedisConfig};

/// The help text of every `--cluster` flag.
pub const CLUSTER_HELP: &str = "The Redis URL is a Redis Cluster's: one node's URL, or a \
     comma-separated list of host:port seed nodes. Keys then use the cluster layout \
     (<prefix>:{<agent_type>}:tasks ...), every agent type's keys in one hash slot";

/// The flags that name a crew's streams: shared by every operator command.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The Redis the crew runs on (redis://host:port/db).
    #[arg(long, value_name = "URL")]
    pub redis: String,
    #[arg(long, help = CLUSTER_HELP)]
    pub cluster: bool,
    /// The prefix of every key: the seed's `agent` (`agent:tasks:<type>` ...)
    /// unless the crew was configured with another.
    #[arg(long, value_name = "P", default_value = Keyspace::SEED_PREFIX)]
    pub key_prefix: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Give up connecting after this long (a Redis that refuses, or that
    /// accepts and never answers), with one error naming the address.
    #[arg(long, value_name = "D", value_parser = crate::duration::parse, default_value = "5s")]
    pub connect_timeout: Duration,
}

impl Target {
    /// Connects, and names the keys as the flags say.
    pub async fn open(&self) -> std::result::Result<(RedisBroker, Keyspace), Box<dyn Error>> {
        let keyspace = layout(self.cluster).with_prefix(&self.key_prefix)?;
        let config = RedisConfig::new(&self.redis)
            // No one attempt may outlast the whole bound.
            .connection_timeout(
                self.connect_timeout
                    .min(RedisConfig::DEFAULT_CONNECTION_TIMEOUT),
            )
            .wait_for_server(self.connect_timeout);
        let config = if self.cluster {
            config.cluster()
        } else {
            config
        };
        Ok((config.connect().await?, keyspace))
    }
}

/// `--wait-replicas` and `--wait-timeout`: the replica-wait opt-in of the
/// Redis backend (`RedisConfig::wait_for_replicas`), shared by the commands
/// that dispatch.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicaWait {
    /// Each dispatch waits (Redis WAIT, on the master of the written
    /// stream) until this many replicas acknowledged its appends, and
    /// fails as not yet replicated (transient; the task is on the master)
    /// when fewer did within --wait-timeout. Off by default.
    #[arg(long, value_name = "N")]
    pub wait_replicas: Option<u32>,
    /// How long a dispatch waits for the --wait-replicas replicas.
    #[arg(
        long,
        value_name = "D",
        value_parser = crate::duration::parse,
        default_value = "1s",
        requires = "wait_replicas"
    )]
    pub wait_timeout: Duration,
}

impl ReplicaWait {
    /// `config` with the opt-in when the flags ask for it.
    pub fn apply(&self, config: RedisConfig) -> RedisConfig {
        match self.wait_replicas {
            Some(replicas) => config.wait_for_replicas(replicas, self.wait_timeout),
            None => config,
        }
    }
}

/// Parses agent types given on the command line.
pub fn agent_types(names: &[String]) -> std::result::Result<Vec<AgentType>, Box<dyn Error>> {
    names
        .iter()
        .map(|name| AgentType::new(name.as_str()).map_err(Into::into))
        .collect()
}

/// Connects to `url`: a Redis Cluster's seeds when `cluster`, else one
/// server; dispatches wait for replicas as `wait` says.
pub async fn connect(url: &str, cluster: bool, wait: &ReplicaWait) -> Result<RedisBroker> {
    let config = wait.apply(RedisConfig::new(url));
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
