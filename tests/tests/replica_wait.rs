//! `RedisConfig::wait_for_replicas`: a dispatch that waits for a replica.
//!
//! On a private server with a private replica (`--replicaof`), the opt-in
//! succeeds and the replica holds the task when dispatch returns; with the
//! replica stopped, dispatch reports the transient `NotReplicated` (the
//! task is on the primary all the same, and dispatching it again appends
//! nothing twice); the default config never sends `WAIT`. On the private
//! cluster the `WAIT` reaches the master of the written stream's slot: a
//! master whose replica is stopped reports `NotReplicated`, the others not.

use std::time::Duration;

use crewq_core::producer::{DispatchError, Dispatched, Producer};
use crewq_core::{AgentType, Broker, ErrorKind, Keyspace, Task};
use crewq_redis::{RedisBroker, RedisConfig};
use crewq_tests::redis_cluster::TestCluster;
use crewq_tests::redis_server::TestRedis;
use serde_json::json;

/// Long enough for a loaded machine's replica to answer; a stopped one
/// costs each dispatch this much.
const WAIT: Duration = Duration::from_secs(2);

fn task(agent: &str, id: &str) -> Task {
    Task::new(agent, "analyze", json!({"q": id}))
        .task_id(id)
        .build()
        .expect("task")
}

async fn waiting_broker(url: &str) -> RedisBroker {
    RedisConfig::new(url)
        .wait_for_replicas(1, WAIT)
        .connect()
        .await
        .expect("connect")
}

fn producer(broker: RedisBroker, keyspace: &Keyspace) -> Producer<RedisBroker> {
    Producer::new(broker).with_keyspace(keyspace.clone())
}

fn keyspace(prefix: &str) -> Keyspace {
    Keyspace::default().with_prefix(prefix).expect("prefix")
}

fn stream(keyspace: &Keyspace, agent: &str) -> String {
    keyspace.tasks(&AgentType::new(agent).expect("agent type"))
}

/// How many times `server` ran `WAIT` (its `INFO commandstats`).
fn waits_run(server: &TestRedis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.raw_connection())
        .expect("INFO commandstats");
    calls_of(&info, "wait")
}

/// `calls=` of `cmdstat_<command>` in `INFO commandstats` text (0 when the
/// command never ran).
fn calls_of(info: &str, command: &str) -> u64 {
    let head = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&head))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

fn xlen(server: &TestRedis, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut server.raw_connection())
        .expect("XLEN")
}

fn not_replicated(result: Result<Dispatched, DispatchError>) -> bool {
    matches!(result, Err(DispatchError::Broker(err)) if err.kind() == ErrorKind::NotReplicated)
}

#[tokio::test]
async fn a_dispatch_that_waits_is_on_the_replica_when_it_returns() {
    let server = TestRedis::start_with_args(&[]);
    let replica = server.start_replica();
    let keyspace = keyspace(&server.unique_prefix());
    let producer = producer(waiting_broker(server.url()).await, &keyspace);

    let one = producer.dispatch(&task("research", "t-1")).await;
    assert!(one.is_ok(), "{one:?}");
    let batch = producer
        .dispatch_batch(&[task("research", "t-2"), task("review", "t-3")])
        .await
        .expect("batch");
    assert!(batch.iter().all(Result::is_ok), "{batch:?}");
    // WAIT 1 returned 1: the replica applied every append before dispatch
    // returned, so it is there to read at once.
    assert_eq!(xlen(&replica, &stream(&keyspace, "research")), 2);
    assert_eq!(xlen(&replica, &stream(&keyspace, "review")), 1);
    assert_eq!(waits_run(&server), 2, "one WAIT per round trip");
}

#[tokio::test]
async fn without_its_replica_a_dispatch_reports_not_replicated_and_a_retry_is_safe() {
    let server = TestRedis::start_with_args(&[]);
    let replica = server.start_replica();
    let keyspace = keyspace(&server.unique_prefix());
    let producer = producer(waiting_broker(server.url()).await, &keyspace);
    let research = stream(&keyspace, "research");
    drop(replica);

    let first = producer.dispatch(&task("research", "t-1")).await;
    assert!(
        not_replicated(first),
        "a stopped replica acknowledges nothing"
    );
    let err = producer
        .dispatch(&task("research", "t-1"))
        .await
        .expect_err("still no replica");
    assert!(err.is_transient(), "{err}");
    let batch = producer
        .dispatch_batch(&[task("research", "t-2")])
        .await
        .map(drop);
    assert!(
        matches!(&batch, Err(DispatchError::Broker(err)) if err.kind() == ErrorKind::NotReplicated),
        "{batch:?}"
    );
    // Applied on the primary, once per task id despite the retry.
    assert_eq!(xlen(&server, &research), 2);

    // A replica again: the retry finds the marker and appends nothing.
    let replica = server.start_replica();
    let again = producer
        .dispatch(&task("research", "t-1"))
        .await
        .expect("replicated now");
    assert!(again.duplicate, "{again:?}");
    assert_eq!(xlen(&server, &research), 2);
    assert_eq!(xlen(&replica, &research), 2);
}

#[tokio::test]
async fn the_default_config_never_sends_wait() {
    let server = TestRedis::start_with_args(&[]);
    let _replica = server.start_replica();
    let keyspace = keyspace(&server.unique_prefix());
    let broker = server.broker().await;
    let producer = producer(broker.clone(), &keyspace);
    producer
        .dispatch(&task("research", "t-1"))
        .await
        .expect("dispatch");
    let batch = producer
        .dispatch_batch(&[task("research", "t-2"), task("review", "t-3")])
        .await
        .expect("batch");
    assert!(batch.iter().all(Result::is_ok), "{batch:?}");
    let plain = Producer::new(broker)
        .with_keyspace(keyspace.clone())
        .with_dedupe_window(None);
    plain
        .dispatch(&task("research", "t-4"))
        .await
        .expect("plain dispatch");
    assert_eq!(xlen(&server, &stream(&keyspace, "research")), 3);
    assert_eq!(waits_run(&server), 0);

    // The same server counts a WAIT once a broker opts in: the count above
    // can see one.
    let waiting = waiting_broker(server.url()).await;
    waiting
        .xadd(crewq_core::NewEntry::new(
            stream(&keyspace, "research"),
            crewq_core::Fields::new().with("data", "{}"),
        ))
        .await
        .expect("xadd that waits");
    assert_eq!(waits_run(&server), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_wait_reaches_the_master_of_the_written_slot() {
    let mut cluster = TestCluster::start();
    let keyspace = Keyspace::cluster()
        .with_prefix(cluster.unique_prefix())
        .expect("prefix");
    // Two agent types whose streams two different masters serve.
    let agents: Vec<String> = (0..16).map(|n| format!("agent{n}")).collect();
    let first = agents[0].clone();
    let first_master = cluster.master_of(&stream(&keyspace, &first));
    let Some(other) = agents
        .iter()
        .find(|agent| cluster.master_of(&stream(&keyspace, agent)) != first_master)
        .cloned()
    else {
        panic!("16 agent types all on {first_master}");
    };
    let broker = RedisConfig::new(cluster.seeds())
        .cluster()
        .wait_for_replicas(1, WAIT)
        .connect()
        .await
        .expect("connect");
    let producer = producer(broker, &keyspace);

    let batch = producer
        .dispatch_batch(&[task(&first, "t-1"), task(&other, "t-2")])
        .await
        .expect("every master has its replica");
    assert!(batch.iter().all(Result::is_ok), "{batch:?}");

    let replica = cluster.replica_of(&first_master);
    assert!(cluster.kill_node(&replica), "{replica} is a private node");
    assert!(not_replicated(
        producer.dispatch(&task(&first, "t-3")).await
    ));
    let elsewhere = producer.dispatch(&task(&other, "t-4")).await;
    assert!(
        elsewhere.is_ok(),
        "{other}'s master still has its replica: {elsewhere:?}"
    );
    let both = producer
        .dispatch_batch(&[task(&first, "t-5"), task(&other, "t-6")])
        .await
        .map(drop);
    assert!(
        matches!(&both, Err(DispatchError::Broker(err)) if err.kind() == ErrorKind::NotReplicated),
        "{both:?}"
    );
}

#[test]
fn command_calls_are_read_from_commandstats() {
    let info = "# Commandstats\r\ncmdstat_xadd:calls=3,usec=9,usec_per_call=3.00\r\n\
                cmdstat_wait:calls=2,usec=4,usec_per_call=2.00\r\n";
    assert_eq!(calls_of(info, "wait"), 2);
    assert_eq!(calls_of(info, "xadd"), 3);
    assert_eq!(calls_of(info, "eval"), 0);
}
