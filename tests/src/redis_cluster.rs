//! A private Redis Cluster per test (3 masters, 3 replicas), or a shared one
//! named by `CREWQ_REDIS_CLUSTER_URL`.
//!
//! [`TestCluster::start`] runs six `redis-server --cluster-enabled yes` on
//! free loopback ports (each also listens on its port + 10000 for the
//! cluster bus, so both must be free), forms them into a cluster with
//! `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, and
//! waits until every node reports `cluster_state:ok` and knows all six.
//! Every node runs in a temporary directory of its own (its `nodes.conf`
//! included) and is killed when the fixture is dropped, also when the test
//! panics. The node time-out is short, so a killed master's replica is
//! promoted within a few seconds.
//!
//! With `CREWQ_REDIS_CLUSTER_URL` (a comma-separated list of `host:port`
//! seed nodes) set, tests use that cluster instead: keys stay apart by
//! [`TestCluster::unique_prefix`], and drop deletes exactly the keys under
//! the prefixes handed out, on every master (never `FLUSHALL`).

use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::redis_server::{OwnedServer, find_binary, keys_matching};

mod failover;
mod form;
use form::{cluster_nodes, connect, form, nodes_with_role};

/// The environment variable naming an existing cluster to use instead.
pub const REDIS_CLUSTER_URL_VAR: &str = "CREWQ_REDIS_CLUSTER_URL";

/// Masters of a private cluster; each has one replica.
pub const MASTERS: usize = 3;

/// Nodes of a private cluster.
const NODES: usize = 2 * MASTERS;

/// How many times to try a whole start when a port was taken meanwhile.
const START_ATTEMPTS: usize = 4;

/// A Redis Cluster owned by one test, or the shared `CREWQ_REDIS_CLUSTER_URL`
/// one.
pub struct TestCluster {
    /// `host:port` of every node (private) or of the seeds (shared).
    seeds: Vec<String>,
    /// The nodes this process started, in `seeds` order; empty when shared.
    nodes: Vec<Option<OwnedServer>>,
    prefixes: Mutex<Vec<String>>,
}

impl TestCluster {
    /// Starts a private cluster (or uses `CREWQ_REDIS_CLUSTER_URL` when set).
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` cannot be found (with how to
    /// install them), or the cluster does not form.
    pub fn start() -> TestCluster {
        if let Ok(seeds) = std::env::var(REDIS_CLUSTER_URL_VAR)
            && !seeds.trim().is_empty()
        {
            return TestCluster {
                seeds: seeds.split(',').map(|s| s.trim().to_owned()).collect(),
                nodes: Vec::new(),
                prefixes: Mutex::new(Vec::new()),
            };
        }
        let server = find_binary("redis-server");
        let cli = find_binary("redis-cli");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match form(&server, &cli) {
                Ok(cluster) => return cluster,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "a Redis Cluster did not form after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// One cluster for every test of this test binary, started on first
    /// use: forming a cluster takes seconds, a test's keys take a prefix.
    ///
    /// A `static` is never dropped, so a private shared cluster is stopped
    /// by a watchdog (`sh`) that kills its nodes and removes their
    /// directories once this process has exited, however it exits.
    ///
    /// # Panics
    ///
    /// As [`TestCluster::start`].
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<TestCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = TestCluster::start();
            cluster.stop_when_this_process_exits();
            cluster
        })
    }

    /// A prefix of its own for one test, whose keys are deleted when the
    /// returned guard drops (on a shared external cluster; a private one
    /// goes whole).
    pub fn scoped_prefix(&'static self) -> ScopedPrefix {
        ScopedPrefix {
            prefix: self.unique_prefix(),
            cluster: self,
        }
    }

    /// The seed nodes as `host:port,host:port,...`, what
    /// `RedisConfig::cluster` and `crewq --cluster` take.
    pub fn seeds(&self) -> String {
        self.seeds.join(",")
    }

    /// `redis://<first seed>/`, a URL of one node.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.seeds.first().map_or("", String::as_str))
    }

    /// A key prefix no other user of this cluster has (unique per call;
    /// see `TestRedis::unique_prefix`).
    pub fn unique_prefix(&self) -> String {
        let prefix = crate::redis_server::next_unique_prefix();
        self.prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(prefix.clone());
        prefix
    }

    /// A cluster `RedisBroker` on it.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn broker(&self) -> crewq_redis::RedisBroker {
        match crewq_redis::RedisConfig::new(self.seeds())
            .cluster()
            .connect()
            .await
        {
            Ok(broker) => broker,
            Err(err) => panic!("cannot connect to the test cluster {}: {err}", self.seeds()),
        }
    }

    /// The `host:port` of every node that is a master now, as the first
    /// node that answers sees it.
    ///
    /// # Panics
    ///
    /// When no node answers `CLUSTER NODES`.
    pub fn masters(&self) -> Vec<String> {
        for seed in &self.seeds {
            if let Ok(text) = cluster_nodes(seed) {
                return nodes_with_role(&text, "master");
            }
        }
        panic!("no node of {} answers CLUSTER NODES", self.seeds());
    }

    /// Kills (`SIGKILL`) the private node listening on `addr`; `false` if
    /// this fixture did not start it.
    pub fn kill_node(&mut self, addr: &str) -> bool {
        let Some(index) = self.seeds.iter().position(|seed| seed == addr) else {
            return false;
        };
        match self.nodes.get_mut(index).and_then(Option::take) {
            Some(mut node) => {
                node.kill();
                true
            }
            None => false,
        }
    }

    /// Deletes every key under the prefixes handed out, on every master of
    /// a shared cluster.
    fn clean_prefixes(&self) -> redis::RedisResult<()> {
        let prefixes = std::mem::take(
            &mut *self
                .prefixes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.delete_keys_under(&prefixes)
    }

    /// Deletes every key holding one of `prefixes`, on every master (one
    /// `DEL` per key: keys of different slots). A key matches anywhere, so
    /// that `{<prefix>}:...` (a prefix made the hash tag) goes too.
    fn delete_keys_under(&self, prefixes: &[String]) -> redis::RedisResult<()> {
        if prefixes.is_empty() {
            return Ok(());
        }
        for master in self.masters() {
            let mut conn = connect(&master)?;
            for prefix in prefixes {
                let keys = keys_matching(&mut conn, &format!("*{prefix}*"))?;
                for key in keys {
                    redis::cmd("DEL").arg(key).exec(&mut conn)?;
                }
            }
        }
        Ok(())
    }
}

impl TestCluster {
    /// Starts the watchdog of [`TestCluster::shared`].
    fn stop_when_this_process_exits(&self) {
        let pids: Vec<String> = self
            .nodes
            .iter()
            .flatten()
            .map(|node| node.child.id().to_string())
            .collect();
        if pids.is_empty() {
            return;
        }
        let dirs: Vec<String> = self
            .nodes
            .iter()
            .flatten()
            .map(|node| format!("'{}'", node.dir.path().display()))
            .collect();
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -9 {pids} 2>/dev/null; \
             rm -rf {dirs}",
            me = std::process::id(),
            pids = pids.join(" "),
            dirs = dirs.join(" ")
        );
        let watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(err) = watchdog {
            panic!("cannot start the shared test cluster's watchdog: {err}");
        }
    }
}

/// A test's key prefix on a [`TestCluster::shared`] cluster; its keys go
/// when it drops (on an external cluster).
pub struct ScopedPrefix {
    prefix: String,
    cluster: &'static TestCluster,
}

impl ScopedPrefix {
    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.prefix
    }
}

impl Drop for ScopedPrefix {
    fn drop(&mut self) {
        if self.cluster.nodes.is_empty() {
            // Best effort: a failing clean-up must not fail a test.
            let _ = self
                .cluster
                .delete_keys_under(std::slice::from_ref(&self.prefix));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.nodes.is_empty() {
            // Best effort, as for a shared single server.
            let _ = self.clean_prefixes();
        }
        // Private nodes are killed by their own drop, directories with them.
    }
}

/// The task ids in the JSON of field `field` (`data` of task and result
/// entries, `task` of dead letters) of every entry of `stream`: what the
/// failover tests account tasks by. A stream that cannot be read counts as
/// empty.
pub async fn task_ids(
    broker: &impl crewq_core::Broker,
    stream: &str,
    field: &str,
) -> std::collections::BTreeSet<String> {
    let entries = broker
        .xrange(stream, crewq_core::ALL_IDS, None)
        .await
        .unwrap_or_default();
    entries
        .iter()
        .filter_map(|e| e.fields.get_str(field))
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .filter_map(|v| v["task_id"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_forms_and_every_node_is_stopped_on_drop() {
        let cluster = TestCluster::start();
        assert_eq!(cluster.masters().len(), MASTERS);
        let pids: Vec<u32> = cluster
            .nodes
            .iter()
            .flatten()
            .map(|node| node.child.id())
            .collect();
        let dirs: Vec<std::path::PathBuf> = cluster
            .nodes
            .iter()
            .flatten()
            .map(|node| node.dir.path().to_path_buf())
            .collect();
        assert_eq!(pids.len(), NODES);
        drop(cluster);
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "node {pid} still runs"
            );
        }
        for dir in dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }
}
