//! Forming a private test cluster: six nodes on free port pairs, joined by
//! `redis-cli --cluster create`, and waiting until every node agrees; and
//! asking a node about the cluster.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use super::{MASTERS, NODES, TestCluster};
use crate::redis_server::spawn_plain_on;

/// Redis Cluster's bus listens on the client port plus this.
const BUS_PORT_OFFSET: u16 = 10_000;

/// Client ports are picked in `[FIRST_PORT, FIRST_PORT + PORT_SPAN)`: below
/// Linux's ephemeral range (32768 and up), where the bus ports land too.
const FIRST_PORT: u16 = 20_000;
const PORT_SPAN: u16 = 2_700;

/// `cluster-node-timeout`: how long a master may be unreachable before its
/// replica takes over. Short, so a failover test takes seconds; not so
/// short that a loaded test machine sees spurious failovers.
const NODE_TIMEOUT_MS: u64 = 2_000;

/// How long forming the cluster may take until every node says `ok`.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts six nodes and forms them into a cluster; `Err` says why not.
pub(super) fn form(server: &Path, cli: &Path) -> Result<TestCluster, String> {
    let ports = free_port_pairs(NODES)?;
    let node_timeout = NODE_TIMEOUT_MS.to_string();
    let mut nodes = Vec::with_capacity(NODES);
    for &port in &ports {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            &node_timeout,
            // A replica takes over however long it was cut off.
            "--cluster-replica-validity-factor",
            "0",
            // A replica's first sync starts at once, not after 5 s.
            "--repl-diskless-sync-delay",
            "0",
        ];
        nodes.push(Some(spawn_plain_on(server, port, &args)?));
    }
    let seeds: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let created = Command::new(cli)
        .arg("--cluster")
        .arg("create")
        .args(&seeds)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .map_err(|err| format!("run {}: {err}", cli.display()))?;
    if !created.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed ({}): {}{}",
            created.status,
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        ));
    }
    let cluster = TestCluster {
        seeds,
        nodes,
        prefixes: Mutex::new(Vec::new()),
    };
    wait_formed(&cluster.seeds)?;
    Ok(cluster)
}

/// Waits until every node says `cluster_state:ok`, knows all nodes, sees
/// every slot assigned and every master with its replica, and every
/// replica has its master's data (so that a failover can follow at once).
fn wait_formed(seeds: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        let mut pending = Vec::new();
        for seed in seeds {
            match node_view(seed) {
                Ok(None) => {}
                Ok(Some(why)) => pending.push(format!("{seed}: {why}")),
                Err(err) => pending.push(format!("{seed}: {err}")),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not formed within {FORM_TIMEOUT:?}: {}",
                pending.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a node still lacks before the cluster counts as formed (`None`:
/// nothing).
fn node_view(addr: &str) -> redis::RedisResult<Option<String>> {
    let info = cluster_info(addr)?;
    if !formed(&info) {
        return Ok(Some(info.replace("\r\n", " ")));
    }
    let nodes = cluster_nodes(addr)?;
    let replicas = nodes_with_role(&nodes, "slave").len();
    if replicas != MASTERS {
        return Ok(Some(format!("sees {replicas} replicas")));
    }
    let replication: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut connect(addr)?)?;
    if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
        return Ok(Some("replica not in sync yet".to_owned()));
    }
    Ok(None)
}

/// Whether a node's `CLUSTER INFO` says the whole cluster is up.
fn formed(info: &str) -> bool {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    field("cluster_state") == Some("ok")
        && field("cluster_slots_ok") == Some("16384")
        && field("cluster_known_nodes") == Some(&*NODES.to_string())
}

/// `count` client ports whose bus port (+10000) is free too.
fn free_port_pairs(count: usize) -> Result<Vec<u16>, String> {
    // Spread the starting point over processes so parallel test binaries
    // rarely try the same ports; a port taken meanwhile fails the start,
    // which is then tried again.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = u16::try_from(std::process::id() % u32::from(PORT_SPAN)).unwrap_or(0);
    let mut ports = Vec::with_capacity(count);
    for _ in 0..PORT_SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST_PORT + (offset.wrapping_add(step) % PORT_SPAN);
        if bindable(port) && bindable(port + BUS_PORT_OFFSET) {
            ports.push(port);
            if ports.len() == count {
                return Ok(ports);
            }
        }
    }
    Err(format!("fewer than {count} free port pairs"))
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub(super) fn connect(addr: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://{addr}/"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

fn cluster_info(addr: &str) -> redis::RedisResult<String> {
    redis::cmd("CLUSTER").arg("INFO").query(&mut connect(addr)?)
}

pub(super) fn cluster_nodes(addr: &str) -> redis::RedisResult<String> {
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut connect(addr)?)
}

/// The `host:port` of the nodes in `CLUSTER NODES` output whose flags
/// include `role` and not `fail`.
pub(super) fn nodes_with_role(text: &str, role: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _id = fields.next()?;
            let addr = fields.next()?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            (flags.contains(&role) && !flags.contains(&"fail"))
                .then(|| addr.split('@').next().unwrap_or(addr).to_owned())
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_output_names_the_live_masters() {
        let text = "a 127.0.0.1:1@11 myself,master - 0 0 1 connected 0-5460\n\
                    b 127.0.0.1:2@12 slave a 0 0 1 connected\n\
                    c 127.0.0.1:3@13 master,fail - 0 0 2 disconnected\n\
                    d 127.0.0.1:4@14 master - 0 0 3 connected 5461-16383\n";
        assert_eq!(
            nodes_with_role(text, "master"),
            vec!["127.0.0.1:1".to_owned(), "127.0.0.1:4".to_owned()]
        );
    }
}
