//! Priorities (issue 12): under a backlog a higher-priority task starts
//! before a lower one of the same agent type; a task that has waited the
//! starvation bound goes before every younger one; retries and scheduled
//! tasks keep their priority's lane; the lanes share the worker's slots.
//! Each a named test on the memory backend (paused time), a private Redis
//! and the cluster fixture.

mod worker_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crewq_core::producer::Producer;
use crewq_core::worker::{HandlerError, WorkerHandle, WorkerOptions};
use crewq_core::{Broker, Priority, Task};
use serde_json::{Value, json};
use worker_common::Env;

crewq_tests::on_both_backends!(
    Env:
    a_backlog_starts_the_highest_priority_first,
    a_task_that_waited_the_starvation_bound_goes_first,
    retries_and_scheduled_tasks_keep_their_priority,
    lanes_share_the_workers_slots,
);

/// Task `name` at `priority`, `max_retries` 2.
fn at(name: &str, priority: u8) -> Task<Value> {
    Task::new("research", "analyze", json!({ "name": name }))
        .task_id(name)
        .priority(priority)
        .max_retries(2)
        .build()
        .expect("task")
}

fn producer(env: &Env) -> Producer<Arc<dyn Broker>> {
    Producer::new(Arc::clone(&env.broker)).with_keyspace(env.keyspace.clone())
}

/// The order handlers started in, and the most running at once.
#[derive(Clone, Default)]
struct Starts {
    order: Arc<Mutex<Vec<String>>>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Starts {
    /// A handler that notes its start, runs `sleep`, and fails the first
    /// run of a task named `fail-*`.
    fn handler(&self, sleep: Duration) -> impl crewq_core::worker::Handler<Value> + use<> {
        // Tasks named `low-*` run 20 times longer: a slow backlog.
        let slow = sleep * 20;
        let starts = self.clone();
        move |t: Task<Value>| {
            let starts = starts.clone();
            async move {
                let first = {
                    let mut order = starts.order.lock().expect("order");
                    let first = !order.contains(&t.task_id);
                    order.push(t.task_id.clone());
                    first
                };
                let now = starts.running.fetch_add(1, Ordering::SeqCst) + 1;
                starts.most.fetch_max(now, Ordering::SeqCst);
                let sleep = if t.task_id.starts_with("low-") {
                    slow
                } else {
                    sleep
                };
                tokio::time::sleep(sleep).await;
                starts.running.fetch_sub(1, Ordering::SeqCst);
                if first && t.task_id.starts_with("fail-") {
                    return Err::<Value, HandlerError>("fails once".into());
                }
                Ok(json!({ "done": t.task_id }))
            }
        }
    }

    fn order(&self) -> Vec<String> {
        self.order.lock().expect("order").clone()
    }
}

/// Waits until `n` results are recorded, or panics after 20 s.
async fn results(env: &Env, n: usize) {
    for _ in 0..400 {
        if env.results().await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {} results of {n}", env.results().await.len());
}

async fn shutdown(worker: WorkerHandle) -> crewq_core::worker::WorkerReport {
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report")
}

fn one_at_a_time(env: &Env, starvation: Duration) -> WorkerOptions {
    let mut options = env.options().concurrency(1);
    options.starvation_bound = starvation;
    options
}

/// Six tasks at priority 0, then three at 9 and three at 5, all waiting
/// before the worker starts: it runs the 9s, then the 5s, then the 0s,
/// each lane in dispatch order.
async fn a_backlog_starts_the_highest_priority_first(env: Env) {
    let producer = producer(&env);
    let mut names = Vec::new();
    for (prefix, priority, n) in [("low", 0, 6), ("high", 9, 3), ("mid", 5, 3)] {
        for i in 1..=n {
            let name = format!("{prefix}-{i}");
            producer
                .dispatch(&at(&name, priority))
                .await
                .expect("dispatch");
            names.push(name);
        }
    }
    let starts = Starts::default();
    let options = one_at_a_time(&env, Duration::from_secs(3600));
    let worker = env.spawn_with("w1", options, starts.handler(Duration::from_millis(5)));
    results(&env, 12).await;
    let report = shutdown(worker).await;
    assert_eq!(report.completed, 12, "{report:?}");
    let expected: Vec<String> = [
        "high-1", "high-2", "high-3", "mid-1", "mid-2", "mid-3", "low-1", "low-2", "low-3",
        "low-4", "low-5", "low-6",
    ]
    .map(str::to_owned)
    .to_vec();
    assert_eq!(starts.order(), expected);
}

/// A task at priority 0 that has waited the starvation bound starts before
/// priority-9 tasks dispatched after it; the bound not reached, it waits.
async fn a_task_that_waited_the_starvation_bound_goes_first(env: Env) {
    let producer = producer(&env);
    producer
        .dispatch(&at("old-low", 0))
        .await
        .expect("dispatch");
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in 1..=2 {
        producer
            .dispatch(&at(&format!("high-{i}"), 9))
            .await
            .expect("dispatch");
    }
    producer
        .dispatch(&at("new-low", 0))
        .await
        .expect("dispatch");
    let starts = Starts::default();
    let options = one_at_a_time(&env, Duration::from_millis(400));
    let worker = env.spawn_with("w1", options, starts.handler(Duration::from_millis(5)));
    results(&env, 4).await;
    shutdown(worker).await;
    let order = starts.order();
    assert_eq!(order[0], "old-low", "{order:?}");
    // new-low has not waited the bound when the 9s are taken (5 ms each).
    assert_eq!(order[1..3], ["high-1", "high-2"], "{order:?}");
    assert_eq!(order[3], "new-low", "{order:?}");
}

/// A priority-7 task that fails once is retried in lane 7 (its delayed
/// set, then its stream) and completes; a priority-5 task dispatched for
/// later, into a lane that did not exist yet, starts once due; both start
/// before a priority-0 backlog dispatched after them.
async fn retries_and_scheduled_tasks_keep_their_priority(env: Env) {
    let producer = producer(&env);
    let seven = Priority::new(7).expect("priority");
    let five = Priority::new(5).expect("priority");
    producer.dispatch(&at("fail-7", 7)).await.expect("dispatch");
    producer
        .dispatch_in(&at("later-5", 5), Duration::from_millis(300))
        .await
        .expect("dispatch_in");
    let starts = Starts::default();
    let options = one_at_a_time(&env, Duration::from_secs(3600));
    let worker = env.spawn_with("w1", options, starts.handler(Duration::from_millis(5)));
    // The retry waits out its back-off (10..40 ms) in lane 7's delayed
    // set; a backlog of lane 0 arrives meanwhile, slow to run.
    for i in 1..=4 {
        producer
            .dispatch(&at(&format!("low-{i}"), 0))
            .await
            .expect("dispatch");
    }
    results(&env, 6).await;
    let report = shutdown(worker).await;
    assert_eq!((report.completed, report.retried), (6, 1), "{report:?}");
    let order = starts.order();
    let position = |name: &str| order.iter().rposition(|n| n == name).expect(name);
    assert!(
        position("fail-7") < position("low-2"),
        "the retry waited behind lane 0: {order:?}"
    );
    let lane7 = env.keyspace.lane(&env.agent, seven);
    let entries = env
        .broker
        .xrange(&lane7, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(
        entries.len(),
        2,
        "the first run and its retry, both in lane 7"
    );
    let lane5 = env.keyspace.lane(&env.agent, five);
    let scheduled = env
        .broker
        .xrange(&lane5, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(
        scheduled.len(),
        1,
        "the scheduled task was promoted into lane 5"
    );
    assert_eq!(
        env.results()
            .await
            .iter()
            .filter(|r| r.task_id == "later-5")
            .count(),
        1
    );
}

/// Two slots, tasks in three lanes, each run 50 ms: never more than two
/// run at once, and every task completes once.
async fn lanes_share_the_workers_slots(env: Env) {
    let producer = producer(&env);
    for (prefix, priority) in [("a", 0), ("b", 3), ("c", 9)] {
        for i in 1..=4 {
            producer
                .dispatch(&at(&format!("{prefix}-{i}"), priority))
                .await
                .expect("dispatch");
        }
    }
    let starts = Starts::default();
    let options = env.options().concurrency(2);
    let worker = env.spawn_with("w1", options, starts.handler(Duration::from_millis(50)));
    results(&env, 12).await;
    let report = shutdown(worker).await;
    assert_eq!(report.completed, 12, "{report:?}");
    assert!(
        starts.most.load(Ordering::SeqCst) <= 2,
        "more than two at once"
    );
    let mut order = starts.order();
    order.sort();
    order.dedup();
    assert_eq!(order.len(), 12, "every task ran once");
}
