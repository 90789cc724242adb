//! Writes a failover rolls back, made on purpose: what crewq does when the
//! promoted replica never got a dispatch, a delivery, a result or an ack
//! the old master acknowledged.
//!
//! The construction is deterministic: four tasks are dispatched (waiting
//! for the replica, so they are on it) and delivered to a worker whose
//! handler holds them, the deliveries replicated; the replica is then cut
//! off its master ([`TestCluster::cut_replication`]: the master goes on
//! acknowledging writes the replica never gets); two held tasks are
//! released, their results and acks written on the master only; one task
//! is dispatched without waiting (delivered and held on the master only)
//! and one with; the worker samples its group on the master; then the
//! replica takes over ([`TestCluster::take_over`]) and the old master, now
//! its replica, drops everything written after the cut.
//!
//! The defined behaviour, asserted here (and written down in
//! RELIABILITY.md):
//!
//! - a result and ack rolled back leave the entry pending (or unread, when
//!   its delivery was rolled back too): the task runs again and its result
//!   is written again. At least once; nothing lost.
//! - a dispatch acknowledged *without* waiting for a replica is gone: its
//!   entry is not on the promoted master, and it has no result
//!   (`RedisConfig::wait_for_replicas` is the opt-in against exactly this).
//! - a dispatch that waits is not acknowledged while its replica is cut
//!   off (`NotReplicated`); dispatched again until acknowledged, it ends
//!   completed.
//! - every acknowledged dispatch ends completed; nothing is dead-lettered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crewq_core::producer::{DispatchError, Producer};
use crewq_core::worker::{HandlerError, Worker, WorkerOptions};
use crewq_core::{AgentType, Broker, ErrorKind, Keyspace, Task};
use crewq_redis::RedisConfig;
use crewq_tests::redis_cluster::{TestCluster, task_ids};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The lease: a rolled-back ack leaves an entry pending, taken back after it.
const LEASE: Duration = Duration::from_secs(4);
/// How often the worker samples its group (and looks for entries to take
/// back): well under the lease, so the promoted master's group is sampled
/// before the entries whose acks it lost are idle for a lease.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How long everything may take to end after the takeover.
const DRAIN: Duration = Duration::from_secs(20);

/// What the handler saw: runs per task id, and which held tasks may end.
#[derive(Clone)]
struct Gate {
    runs: Arc<Mutex<BTreeMap<String, u32>>>,
    released: watch::Sender<BTreeSet<String>>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            runs: Arc::default(),
            released: watch::Sender::new(BTreeSet::new()),
        }
    }

    fn runs(&self, id: &str) -> u32 {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.get(id).copied().unwrap_or(0)
    }

    fn release(&self, id: &str) {
        self.released.send_modify(|ids| {
            ids.insert(id.to_owned());
        });
    }

    /// Runs a task: counts the run, then waits until its id is released.
    async fn run(self, task: Task<Value>) -> Result<Value, HandlerError> {
        let id = task.task_id.clone();
        *self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.clone())
            .or_default() += 1;
        let mut released = self.released.subscribe();
        if released.wait_for(|ids| ids.contains(&id)).await.is_err() {
            return Err("the test ended".into());
        }
        Ok(json!({ "task": id }))
    }
}

/// Waits until `done` holds, or panics after `bound` naming `what`.
async fn until(bound: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within {bound:?}: {what}");
}

/// Entries pending in `group` on the replica at `addr` (read there).
fn pending_on_replica(addr: &str, stream: &str, group: &str) -> u64 {
    let mut conn = redis::Client::open(format!("redis://{addr}/"))
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
        .unwrap_or_else(|err| panic!("{addr}: {err}"));
    redis::cmd("READONLY")
        .exec(&mut conn)
        .unwrap_or_else(|err| panic!("READONLY on {addr}: {err}"));
    let summary: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(&mut conn)
        .unwrap_or_default();
    match summary.first() {
        Some(redis::Value::Int(count)) => u64::try_from(*count).unwrap_or(0),
        _ => 0,
    }
}

fn task(agent: &str, id: &str) -> Task {
    Task::new(agent, "work", json!({}))
        .task_id(id)
        .build()
        .expect("task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_acks_a_failover_rolls_back_are_run_again_and_nothing_acknowledged_is_lost() {
    let cluster = TestCluster::start();
    let keyspace = Keyspace::cluster()
        .with_prefix(cluster.unique_prefix())
        .expect("prefix");
    let agent = AgentType::new("rollback").expect("agent type");
    let keys = keyspace.keys(&agent);
    let master = cluster.master_of(&keys.tasks);
    let replica = cluster.replica_of(&master);

    let broker = cluster.broker().await;
    let waiting = RedisConfig::new(cluster.seeds())
        .cluster()
        .wait_for_replicas(1, Duration::from_millis(500))
        .connect()
        .await
        .expect("connect");
    let producer = Producer::new(waiting).with_keyspace(keyspace.clone());
    let plain = Producer::new(broker.clone()).with_keyspace(keyspace.clone());

    // Four tasks, on the replica too (dispatch waited for it).
    for id in ["a", "b", "c", "d"] {
        producer
            .dispatch(&task(agent.as_str(), id))
            .await
            .expect("dispatch while replicated");
    }
    let gate = Gate::new();
    let mut options = WorkerOptions::default().lease(LEASE).concurrency(8);
    options.reclaim_every = SAMPLE_EVERY;
    options.keyspace = keyspace.clone();
    let worker = {
        let gate = gate.clone();
        Worker::new(broker.clone(), agent.clone(), "w1", move |task| {
            gate.clone().run(task)
        })
        .options(options)
        .spawn()
    };
    // All four run (held); their deliveries reach the replica.
    until(
        Duration::from_secs(30),
        "a, b, c and d delivered",
        async || ["a", "b", "c", "d"].iter().all(|id| gate.runs(id) == 1),
    )
    .await;
    until(
        Duration::from_secs(30),
        "the replica has the deliveries",
        async || pending_on_replica(&replica, &keys.tasks, &keys.group) == 4,
    )
    .await;

    cluster.cut_replication(&replica);
    // After the cut, on the master only: b's and d's results and acks.
    gate.release("b");
    gate.release("d");
    until(
        Duration::from_secs(30),
        "b and d finished on the master",
        async || {
            let done = task_ids(&broker, &keys.results, "data").await;
            done.contains("b") && done.contains("d")
        },
    )
    .await;
    // A dispatch acknowledged without waiting: on the master only, where
    // the worker reads it (and holds it).
    plain
        .dispatch(&task(agent.as_str(), "unwaited"))
        .await
        .expect("a plain dispatch is acknowledged by the master alone");
    until(Duration::from_secs(30), "unwaited delivered", async || {
        gate.runs("unwaited") == 1
    })
    .await;
    // A dispatch that waits is not acknowledged (it is on the master only).
    let refused = producer.dispatch(&task(agent.as_str(), "waited")).await;
    assert!(
        matches!(&refused, Err(DispatchError::Broker(err)) if err.kind() == ErrorKind::NotReplicated),
        "{refused:?}"
    );
    // Let the worker sample its group on the master as it stands after the
    // cut (a, c and unwaited pending; b and d between them finished), before
    // the replica takes over.
    tokio::time::sleep(SAMPLE_EVERY * 3).await;

    let old_master = cluster.take_over(&replica);
    assert_eq!(old_master, master);
    gate.release("a");
    gate.release("c");
    gate.release("unwaited");
    // The producer's way: dispatch again, same task id, until acknowledged.
    let deadline = Instant::now() + DRAIN;
    loop {
        match producer.dispatch(&task(agent.as_str(), "waited")).await {
            Ok(_) => break,
            Err(err) => {
                assert!(err.is_transient(), "{err}");
                assert!(Instant::now() < deadline, "never acknowledged: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    gate.release("waited");

    let acknowledged = ["a", "b", "c", "d", "waited"];
    let deadline = Instant::now() + DRAIN;
    loop {
        let done = task_ids(&broker, &keys.results, "data").await;
        let missing: Vec<&str> = acknowledged
            .into_iter()
            .filter(|id| !done.contains(*id))
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let pending = broker
                .pending_summary(&keys.tasks, &keys.group)
                .await
                .map(|summary| summary.count);
            let runs: Vec<(&str, u32)> =
                acknowledged.iter().map(|id| (*id, gate.runs(id))).collect();
            panic!(
                "after {DRAIN:?}, acknowledged dispatches without a result: {missing:?} \
                 (runs {runs:?}; pending on the new master: {pending:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = worker
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");

    // b's and d's results and acks were rolled back: each ran again.
    assert_eq!(
        gate.runs("b"),
        2,
        "b's rolled-back result was written again"
    );
    assert_eq!(
        gate.runs("d"),
        2,
        "d's rolled-back result was written again"
    );
    assert!(task_ids(&broker, &keys.dlq, "task").await.is_empty());
    assert_eq!(report.dead_lettered, 0);
    // The dispatch acknowledged without a replica is gone with the old
    // master's writes: not in the stream, and no result (a worker may have
    // read it from the old master and run it: that run's outcome is not
    // recorded, the entry being no one's on the new master).
    let queued = task_ids(&broker, &keys.tasks, "data").await;
    assert!(!queued.contains("unwaited"), "{queued:?}");
    let done = task_ids(&broker, &keys.results, "data").await;
    assert!(!done.contains("unwaited"), "{done:?}");
}
