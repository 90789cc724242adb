//! The backlog a producer's default retention must keep: tasks dispatched
//! faster than workers take them (here, before any worker started) all wait
//! for a worker, however many there are. Both backends.
//!
//! Issue 9, finding 1: the old default (`MAXLEN ~ 100000` on every append)
//! silently removed 99,981 of 200,000 such tasks.

use std::sync::Arc;

use crewq_core::producer::Producer;
use crewq_core::{AgentType, Broker, GroupStart, ReadGroup, Task};
use crewq_tests::backends::Backend;
use serde_json::json;

/// More than the old default kept (100,000), in both halves together.
const BEFORE_GROUP: u64 = 60_000;
const AFTER_GROUP: u64 = 60_000;
const BATCH: u64 = 2_000;

crewq_tests::on_both_backends!(Backend: default_retention_keeps_a_backlog_beyond_the_old_max_len);

async fn dispatch(producer: &Producer<Arc<dyn Broker>>, from: u64, n: u64) {
    let mut next = from;
    while next < from + n {
        let tasks: Vec<Task> = (next..(next + BATCH).min(from + n))
            .map(|i| {
                Task::new("research", "analyze", json!({"n": i}))
                    .task_id(format!("t-{i}"))
                    .build()
                    .expect("a valid task")
            })
            .collect();
        next += tasks.len() as u64;
        for result in producer.dispatch_batch(&tasks).await.expect("round trip") {
            result.expect("dispatched");
        }
    }
}

async fn default_retention_keeps_a_backlog_beyond_the_old_max_len(ctx: Backend) {
    let agent = AgentType::new("research").expect("valid");
    let keys = ctx.keyspace.keys(&agent);
    let producer = ctx.producer();
    // No group yet: nobody has said what is safe to cut.
    dispatch(&producer, 0, BEFORE_GROUP).await;
    // The worker's group, created at the beginning as a worker does, has
    // read nothing yet.
    ctx.broker
        .group_create(&keys.tasks, &keys.group, GroupStart::BEGINNING, true)
        .await
        .expect("group");
    dispatch(&producer, BEFORE_GROUP, AFTER_GROUP).await;

    let total = BEFORE_GROUP + AFTER_GROUP;
    assert_eq!(ctx.broker.xlen(&keys.tasks).await.expect("xlen"), total);
    // A worker starting now gets every task, the oldest first.
    let read = ReadGroup::new(keys.tasks.as_str(), keys.group.as_str(), "w1").count(10);
    let first = ctx.broker.read_group(&read).await.expect("read");
    let task: Task = Task::from_fields(first[0].fields.as_ref().expect("fields")).expect("task");
    assert_eq!(task.task_id, "t-0");
}
