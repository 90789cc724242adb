//! A private replica of a private [`TestRedis`]: a second redis-server
//! started with `--replicaof`, for tests of what replication acknowledges
//! (`WAIT`). Stopping it is dropping it.

use std::time::{Duration, Instant};

use crate::redis_server::TestRedis;

/// How long a fresh replica may take to finish its first sync.
const SYNC_BOUND: Duration = Duration::from_secs(30);

impl TestRedis {
    /// Starts a private replica of this server and waits until this server
    /// counts it as an online replica (its first sync done).
    ///
    /// # Panics
    ///
    /// When this server is not a private one (a `CREWQ_REDIS_URL` server is
    /// not ours to replicate), or the replica does not sync within 30 s.
    pub fn start_replica(&self) -> TestRedis {
        let Some(port) = self.port() else {
            panic!("start_replica needs a private server, not {}", self.url());
        };
        let before = self.online_replicas();
        // A diskless full sync waits 5 s by default for more replicas to
        // share it; one replica is all there is.
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0)
            .exec(&mut self.raw_connection())
            .unwrap_or_else(|err| panic!("CONFIG SET on {}: {err}", self.url()));
        let port = port.to_string();
        let replica = TestRedis::start_with_args(&["--replicaof", "127.0.0.1", &port]);
        self.wait_for_online_replicas(before + 1);
        replica
    }

    /// Waits until this server counts exactly `count` online replicas (after
    /// one was started, or stopped: a stopped one's link closes at once).
    ///
    /// # Panics
    ///
    /// When that does not happen within 30 s.
    pub fn wait_for_online_replicas(&self, count: usize) {
        let deadline = Instant::now() + SYNC_BOUND;
        while Instant::now() < deadline {
            if self.online_replicas() == count {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not count {count} online replicas within {SYNC_BOUND:?} (it counts {})",
            self.url(),
            self.online_replicas()
        );
    }

    /// How many replicas this server lists as `state=online`.
    fn online_replicas(&self) -> usize {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.raw_connection())
            .unwrap_or_else(|err| panic!("INFO replication on {}: {err}", self.url()));
        online_replicas_in(&info)
    }
}

/// The online replicas in `INFO replication` text (`slaveN:...,state=online,...`).
fn online_replicas_in(info: &str) -> usize {
    info.lines()
        .filter(|line| line.starts_with("slave") && line.contains("state=online"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_online_replicas_count() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                    slave0:ip=127.0.0.1,port=1,state=online,offset=10,lag=0\r\n\
                    slave1:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\n\
                    master_failover_state:no-failover\r\n";
        assert_eq!(online_replicas_in(info), 1);
    }
}
