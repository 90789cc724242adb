//! A master of a Redis Cluster is killed (`SIGKILL`) while a producer
//! dispatches and workers run: its replica is promoted, and the producer and
//! the workers carry on by themselves, with no restart and no help.
//!
//! Redis replication is asynchronous: the killed master may have
//! acknowledged writes its replica never received, and the promoted replica
//! does not have them. So the test accounts for every task whose dispatch
//! was acknowledged: it ends completed or dead-lettered, or its task entry
//! is gone from the promoted master's stream (a dispatch the failover
//! rolled back, counted and printed). A task whose entry survived and that
//! never ended would be a crewq bug, and fails the test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crewq_core::producer::Producer;
use crewq_core::worker::{HandlerError, Worker, WorkerOptions};
use crewq_core::{AgentType, Keyspace, Task};
use crewq_redis::RedisBroker;
use crewq_tests::redis_cluster::{TestCluster, task_ids};
use serde_json::{Value, json};

/// Agent types; the first one's master is killed.
const TYPES: usize = 3;
/// Tasks dispatched in all, one agent type after the other.
const TASKS: usize = 450;
/// The master dies after this many dispatches.
const KILL_AFTER: usize = 150;
/// Pause between dispatches: the run spans the failover.
const DISPATCH_EVERY: Duration = Duration::from_millis(4);
/// How long everything may take to settle after the last dispatch.
const DRAIN: Duration = Duration::from_secs(60);

fn agent(n: usize) -> AgentType {
    AgentType::new(format!("fo{n}")).expect("valid")
}

/// The acknowledged tasks (per agent type) that have not ended yet but are
/// still in their stream, and how many are gone from it (rolled back).
async fn account(
    broker: &RedisBroker,
    keyspace: &Keyspace,
    acknowledged: &[BTreeSet<String>],
) -> (Vec<String>, usize) {
    let (mut unfinished, mut rolled_back) = (Vec::new(), 0);
    for (n, sent) in acknowledged.iter().enumerate() {
        let done = task_ids(broker, &keyspace.results(&agent(n)), "data").await;
        let dead = task_ids(broker, &keyspace.dlq(&agent(n)), "task").await;
        let queued = task_ids(broker, &keyspace.tasks(&agent(n)), "data").await;
        for id in sent {
            if done.contains(id) || dead.contains(id) {
                continue;
            }
            if queued.contains(id) {
                unfinished.push(id.clone());
            } else {
                rolled_back += 1;
            }
        }
    }
    (unfinished, rolled_back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // the measured figures are this test's output
async fn workers_and_a_producer_ride_out_a_master_failover() {
    let mut cluster = TestCluster::start();
    let prefix = cluster.unique_prefix();
    let broker = cluster.broker().await;
    let keyspace = Keyspace::cluster().with_prefix(&prefix).expect("prefix");
    let victim = cluster.master_of(&keyspace.tasks(&agent(0)));

    let mut options = WorkerOptions::default().lease(Duration::from_secs(3));
    options.keyspace = keyspace.clone();
    options.block = Duration::from_millis(500);
    // Counts runs: a result and ack the failover rolled back come back as
    // the task's second run (at least once, never lost).
    let runs = Arc::new(AtomicU64::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        move |_task: Task<Value>| {
            runs.fetch_add(1, Ordering::Relaxed);
            async { Ok::<Value, HandlerError>(json!({"ok": true})) }
        }
    };
    let workers: Vec<_> = (0..TYPES)
        .map(|n| {
            Worker::new(broker.clone(), agent(n), format!("w{n}"), handler.clone())
                .options(options.clone())
                .spawn()
        })
        .collect();

    let producer = Arc::new(Producer::new(broker.clone()).with_keyspace(keyspace.clone()));
    let mut acknowledged: Vec<BTreeSet<String>> = vec![BTreeSet::new(); TYPES];
    let mut killed_at = None;
    let mut resumed_after = None;
    let mut dispatch_errors = 0u64;
    for n in 0..TASKS {
        if n == KILL_AFTER {
            assert!(cluster.kill_node(&victim), "{victim} is a private node");
            killed_at = Some(Instant::now());
        }
        let task = Task::new(agent(n % TYPES).as_str(), "work", json!({ "n": n }))
            .build()
            .expect("task");
        // Retried until acknowledged: the same task id, so a retry after a
        // lost reply appends nothing twice (the dedupe marker).
        loop {
            match producer.dispatch(&task).await {
                Ok(_) => break,
                Err(err) => {
                    assert!(err.is_transient(), "dispatch failed for good: {err}");
                    dispatch_errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        if n % TYPES == 0
            && let Some(at) = killed_at
            && resumed_after.is_none()
        {
            resumed_after = Some(at.elapsed());
        }
        acknowledged[n % TYPES].insert(task.task_id.clone());
        tokio::time::sleep(DISPATCH_EVERY).await;
    }

    // Drain: every acknowledged task ends, or is found rolled back.
    let deadline = Instant::now() + DRAIN;
    let (unfinished, rolled_back) = loop {
        let (unfinished, rolled_back) = account(&broker, &keyspace, &acknowledged).await;
        if unfinished.is_empty() || Instant::now() > deadline {
            break (unfinished, rolled_back);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for worker in workers {
        worker
            .shutdown(Duration::from_secs(5))
            .await
            .expect("the worker kept running through the failover");
    }
    eprintln!(
        "failover: {TASKS} tasks, killed {victim} after {KILL_AFTER}; dispatch resumed on its \
         slot after {resumed_after:?}; {dispatch_errors} transient dispatch errors; \
         {rolled_back} acknowledged dispatches rolled back by the failover; {} handler runs \
         for {} tasks ended",
        runs.load(Ordering::Relaxed),
        TASKS - rolled_back
    );
    assert!(
        unfinished.is_empty(),
        "{} tasks in their streams never ended: {unfinished:?}",
        unfinished.len()
    );
    assert!(resumed_after.is_some(), "dispatch never resumed");
    // Asynchronous replication loses at most the writes of the last moments
    // before the kill: a handful, never a whole stream.
    assert!(
        rolled_back * 10 < TASKS,
        "{rolled_back} of {TASKS} dispatches lost"
    );
}
