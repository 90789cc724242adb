//! Which node serves a key, and a manual failover: the replica of a master
//! takes over (`CLUSTER FAILOVER`) while the old master stays up and
//! answers `MOVED` to what a client still sends it.
//!
//! For writes a failover loses, deterministically: [`TestCluster::cut_replication`]
//! stops a replica from receiving its master's writes (the master goes on
//! acknowledging them), and [`TestCluster::take_over`] then promotes that
//! replica without its master's agreement (`CLUSTER FAILOVER TAKEOVER`):
//! the old master becomes its replica, syncs from it, and every write made
//! after the cut is rolled back, as when a master dies with writes its
//! replica never received.

use std::time::{Duration, Instant};

use super::TestCluster;
use super::form::{cluster_nodes, connect};

/// How long a manual failover may take to be seen by both nodes.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

impl TestCluster {
    /// The `host:port` of the master serving `key` now.
    ///
    /// # Panics
    ///
    /// When no master answers for it.
    pub fn master_of(&self, key: &str) -> String {
        let masters = self.masters();
        for master in &masters {
            let Ok(mut conn) = connect(master) else {
                continue;
            };
            // A master answers for its own keys and redirects the others.
            let reply: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(key).query(&mut conn);
            if reply.is_ok() {
                return master.clone();
            }
        }
        panic!("no master of {masters:?} serves '{key}'");
    }

    /// The `host:port` of a live replica of `master`.
    ///
    /// # Panics
    ///
    /// When `master` does not answer `CLUSTER NODES` or has no replica.
    pub fn replica_of(&self, master: &str) -> String {
        let nodes = cluster_nodes(master).unwrap_or_else(|err| panic!("{master}: {err}"));
        replica_of(&nodes, master).unwrap_or_else(|| panic!("{master} has no replica:\n{nodes}"))
    }

    /// Stops `replica` from receiving its master's writes: its link to the
    /// master is closed, and it can no longer open one (it now
    /// authenticates with a password the master does not have, so every
    /// new sync fails). The master keeps acknowledging writes, which its
    /// replica never gets. Returns once the master counts no online replica.
    ///
    /// # Panics
    ///
    /// When the cluster is not a private one (a `CREWQ_REDIS_CLUSTER_URL`
    /// cluster is not ours to break), the replica or its master does not
    /// answer, or the master still counts an online replica after 30 s.
    pub fn cut_replication(&self, replica: &str) {
        self.must_be_private("cut_replication");
        let mut conn = connect(replica).unwrap_or_else(|err| panic!("{replica}: {err}"));
        let master: String = redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut conn)
            .ok()
            .and_then(|info| {
                let field = |name: &str| {
                    info.lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(|v| v.trim().to_owned())
                };
                Some(format!(
                    "{}:{}",
                    field("master_host:")?,
                    field("master_port:")?
                ))
            })
            .unwrap_or_else(|| panic!("{replica} is not a replica"));
        let cut: redis::RedisResult<()> = redis::cmd("CONFIG")
            .arg("SET")
            .arg("masterauth")
            .arg("not-the-masters-password")
            .exec(&mut conn)
            .and_then(|()| {
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("master")
                    .exec(&mut conn)
            });
        if let Err(err) = cut {
            panic!("cutting {replica} off its master {master}: {err}");
        }
        let deadline = Instant::now() + FAILOVER_BOUND;
        while Instant::now() < deadline {
            let online = connect(&master)
                .and_then(|mut conn| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut conn)
                })
                .map(|info| {
                    info.lines()
                        .any(|line| line.starts_with("slave") && line.contains("state=online"))
                });
            if matches!(online, Ok(false)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{master} still counts an online replica {FAILOVER_BOUND:?} after the cut");
    }

    /// Promotes `replica` with `CLUSTER FAILOVER TAKEOVER` (no agreement of
    /// its master needed: it works with the replication cut) and waits
    /// until every node sees it as the master and its old master as its
    /// replica; returns the old master's `host:port`.
    ///
    /// # Panics
    ///
    /// When the cluster is not a private one, `replica` is not a replica,
    /// or the takeover is not seen by every node within 30 s.
    pub fn take_over(&self, replica: &str) -> String {
        self.must_be_private("take_over");
        let nodes = cluster_nodes(replica).unwrap_or_else(|err| panic!("{replica}: {err}"));
        let Some(master) = master_of_replica(&nodes, replica) else {
            panic!("{replica} is not a replica:\n{nodes}");
        };
        let started: redis::RedisResult<String> = connect(replica).and_then(|mut conn| {
            redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .arg("TAKEOVER")
                .query(&mut conn)
        });
        if let Err(err) = started {
            panic!("CLUSTER FAILOVER TAKEOVER on {replica}: {err}");
        }
        self.wait_agreed(replica, &master, "takeover");
        master
    }

    /// Waits until every node sees `new_master` as a master and
    /// `old_master` as its replica: not only the two nodes' own views, since
    /// the next failover looks its replica up in whichever view it reads.
    fn wait_agreed(&self, new_master: &str, old_master: &str, what: &str) {
        let deadline = Instant::now() + FAILOVER_BOUND;
        while Instant::now() < deadline {
            if self
                .seeds
                .iter()
                .all(|seed| agrees(seed, new_master, old_master))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the {what} of {old_master} by {new_master} did not finish within {FAILOVER_BOUND:?}"
        );
    }

    /// Refuses to break a cluster this fixture did not start.
    fn must_be_private(&self, what: &str) {
        assert!(
            !self.nodes.is_empty(),
            "{what} needs a private cluster, not the shared {}",
            self.seeds()
        );
    }

    /// Promotes the replica of `master` with `CLUSTER FAILOVER` and waits
    /// until the replica calls itself master and `master` calls itself a
    /// replica; returns the promoted node's `host:port`. Nothing is killed:
    /// the old master keeps its connections and redirects their commands.
    ///
    /// # Panics
    ///
    /// When `master` has no replica, or the failover is not done within 30 s.
    pub fn fail_over(&self, master: &str) -> String {
        let nodes = cluster_nodes(master).unwrap_or_else(|err| panic!("{master}: {err}"));
        let Some(replica) = replica_of(&nodes, master) else {
            panic!("{master} has no replica:\n{nodes}");
        };
        let started: redis::RedisResult<String> = connect(&replica)
            .and_then(|mut conn| redis::cmd("CLUSTER").arg("FAILOVER").query(&mut conn));
        if let Err(err) = started {
            panic!("CLUSTER FAILOVER on {replica}: {err}");
        }
        self.wait_agreed(&replica, master, "failover");
        replica
    }
}

/// One line of `CLUSTER NODES`: `<id> <host:port@bus> <flags> <master id> ...`.
struct NodeLine<'a> {
    id: &'a str,
    /// `host:port`, without the bus port.
    addr: &'a str,
    flags: Vec<&'a str>,
    /// The master's id for a replica, `-` for a master.
    master_id: &'a str,
}

impl NodeLine<'_> {
    fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }
}

/// The lines of `CLUSTER NODES` output (a line too short is left out).
fn node_lines(text: &str) -> Vec<NodeLine<'_>> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?;
            let addr = fields.next()?;
            let flags = fields.next()?.split(',').collect();
            let master_id = fields.next()?;
            Some(NodeLine {
                id,
                addr: addr.split('@').next().unwrap_or(addr),
                flags,
                master_id,
            })
        })
        .collect()
}

/// Whether the node at `seed` sees `new_master` as a master and
/// `old_master` as its replica (a node that does not answer has no say).
fn agrees(seed: &str, new_master: &str, old_master: &str) -> bool {
    let Ok(text) = cluster_nodes(seed) else {
        return true;
    };
    let lines = node_lines(&text);
    let find = |addr: &str| lines.iter().find(|line| line.addr == addr);
    let (Some(new), Some(old)) = (find(new_master), find(old_master)) else {
        return false;
    };
    new.has("master") && old.has("slave") && old.master_id == new.id
}

/// The `host:port` of the master of the node at `replica` in `CLUSTER
/// NODES` output.
fn master_of_replica(text: &str, replica: &str) -> Option<String> {
    let lines = node_lines(text);
    let master_id = lines.iter().find(|line| line.addr == replica)?.master_id;
    lines
        .iter()
        .find(|line| line.id == master_id)
        .map(|line| line.addr.to_owned())
}

/// The `host:port` of a live replica of the node at `master` in `CLUSTER
/// NODES` output.
fn replica_of(text: &str, master: &str) -> Option<String> {
    let lines = node_lines(text);
    let master_id = lines.iter().find(|line| line.addr == master)?.id;
    lines
        .iter()
        .find(|line| line.has("slave") && !line.has("fail") && line.master_id == master_id)
        .map(|line| line.addr.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_of_a_master_is_found_by_its_master_id() {
        let text = "a 127.0.0.1:1@11 myself,master - 0 0 1 connected 0-5460\n\
                    b 127.0.0.1:2@12 slave d 0 0 1 connected\n\
                    c 127.0.0.1:3@13 slave a 0 0 2 connected\n\
                    d 127.0.0.1:4@14 master - 0 0 3 connected 5461-16383\n";
        assert_eq!(
            replica_of(text, "127.0.0.1:1").as_deref(),
            Some("127.0.0.1:3")
        );
        assert_eq!(
            replica_of(text, "127.0.0.1:4").as_deref(),
            Some("127.0.0.1:2")
        );
        assert_eq!(replica_of(text, "127.0.0.1:3"), None);
        assert_eq!(
            master_of_replica(text, "127.0.0.1:3").as_deref(),
            Some("127.0.0.1:1")
        );
        assert_eq!(master_of_replica(text, "127.0.0.1:1"), None);
    }
}
