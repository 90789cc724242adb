//! The monitor (`crewq_core::monitor`) on both backends: every case is
//! written once against `&dyn Broker` and runs as `memory::<case>` (a
//! `MemoryBroker` on tokio's paused clock, so sleeps are instant and exact)
//! and `redis::<case>` (a private redis-server, keys under a unique prefix,
//! real sleeps).

use std::time::Duration;

use crewq_core::monitor::{ConsumerStats, Monitor};
use crewq_core::producer::Producer;
use crewq_core::{
    AgentType, Broker, DeadLetter, Delay, Fields, GroupStart, Keyspace, NewEntry, Priority,
    ReadGroup, Settle, SettleItem, Settled, StreamId, Task,
};
use serde_json::json;

crewq_tests::on_both_backends!(
    by_ref:
    stats_after_a_known_sequence,
    a_group_created_at_the_end_has_no_lag,
    a_missing_stream_gives_zeros,
    a_stream_without_groups_has_no_group_stats,
    stats_count_the_delayed_set,
    stats_show_the_rate_limit_in_use,
    progress_is_the_newest_report_of_each_entry_asked,
    priority_lanes_are_in_the_totals_and_broken_down,
    a_lane_with_only_delayed_tasks_is_in_use,
);

/// Long enough to tell from zero on a real server too.
const PAUSE: Duration = Duration::from_millis(50);

fn agent(name: &str) -> AgentType {
    AgentType::new(name).expect("a valid agent type")
}

/// Appends `n` raw task entries (`data` = task JSON) to `agent`'s stream.
async fn dispatch(
    broker: &dyn Broker,
    keyspace: &Keyspace,
    agent: &AgentType,
    n: usize,
) -> Vec<StreamId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let data = format!(r#"{{"task_id":"t-{i}","agent_type":"{agent}","action":"a"}}"#);
        let entry = NewEntry::new(keyspace.tasks(agent), Fields::new().with("data", data));
        ids.push(broker.xadd(entry).await.expect("xadd"));
    }
    ids
}

async fn read(
    broker: &dyn Broker,
    stream: &str,
    group: &str,
    consumer: &str,
    n: usize,
) -> Vec<StreamId> {
    let read = ReadGroup::new(stream, group, consumer).count(n);
    let delivered = broker.read_group(&read).await.expect("read_group");
    delivered.into_iter().map(|e| e.id).collect()
}

async fn stats_after_a_known_sequence(broker: &dyn Broker, keyspace: &Keyspace) {
    let research = agent("research");
    let (tasks, group) = (keyspace.tasks(&research), keyspace.group(&research));
    broker
        .group_create(&tasks, &group, GroupStart::BEGINNING, true)
        .await
        .expect("group");
    let ids = dispatch(broker, keyspace, &research, 5).await;
    assert_eq!(read(broker, &tasks, &group, "w1", 2).await, ids[..2]);
    assert_eq!(read(broker, &tasks, &group, "w2", 1).await, ids[2..3]);
    let acked = broker.ack(&tasks, &group, &ids[..1]).await.expect("ack");
    assert_eq!(acked, 1);
    for n in 0..2 {
        let letter = DeadLetter::new(format!("{n}"), "e", 3).to_fields();
        broker
            .xadd(NewEntry::new(keyspace.dlq(&research), letter))
            .await
            .expect("xadd");
    }
    tokio::time::sleep(PAUSE).await;

    let monitor = Monitor::new(broker, keyspace.clone());
    let stats = monitor
        .stats(std::slice::from_ref(&research))
        .await
        .expect("stats");
    assert_eq!(stats.len(), 1);
    let stats = &stats[0];
    assert_eq!(stats.agent_type, research);
    assert_eq!(stats.tasks.stream, tasks);
    assert!(stats.tasks.exists);
    assert_eq!(stats.tasks.length, 5);
    assert_eq!(stats.tasks.last_id, ids[4]);
    assert_eq!(stats.tasks.entries_added, 5);
    assert_eq!(stats.dlq_stream, keyspace.dlq(&research));
    assert_eq!(stats.dlq_length, 2);

    assert_eq!(stats.groups.len(), 1);
    let g = &stats.groups[0];
    assert_eq!(g.name, group);
    assert_eq!(g.pending, 2, "3 read, 1 acknowledged");
    assert_eq!(g.lag, Some(2), "5 added, 3 read (what Redis 7 reports)");
    assert_eq!(g.last_delivered_id, ids[2]);
    assert_eq!(g.oldest_pending_id, Some(ids[1]));
    let idle = g.oldest_pending_idle.expect("an oldest pending entry");
    assert!(idle >= PAUSE, "{idle:?}");

    let consumers: Vec<(&str, u64)> = g
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(consumers, [("w1", 1), ("w2", 1)]);
    assert!(
        g.consumers.iter().all(|c| c.idle >= PAUSE),
        "{:?}",
        g.consumers
    );
    assert!(stats.lanes.is_empty(), "no lane above 0 in use");
}

async fn a_group_created_at_the_end_has_no_lag(broker: &dyn Broker, keyspace: &Keyspace) {
    let research = agent("research");
    let tasks = keyspace.tasks(&research);
    let ids = dispatch(broker, keyspace, &research, 3).await;
    broker
        .group_create(&tasks, "auditors", GroupStart::Latest, false)
        .await
        .expect("group");
    broker
        .group_create(&tasks, "builders", GroupStart::BEGINNING, false)
        .await
        .expect("group");
    read(broker, &tasks, "builders", "b1", 10).await;

    let monitor = Monitor::new(broker, keyspace.clone());
    let stats = monitor.agent_stats(&research).await.expect("stats");
    let names: Vec<&str> = stats.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["auditors", "builders"], "ordered by name");
    let auditors = &stats.groups[0];
    assert_eq!(
        (auditors.pending, auditors.lag, auditors.last_delivered_id),
        (0, Some(0), ids[2])
    );
    assert_eq!(
        (auditors.oldest_pending_id, auditors.oldest_pending_idle),
        (None, None)
    );
    assert_eq!(auditors.consumers, Vec::<ConsumerStats>::new());
    let builders = &stats.groups[1];
    assert_eq!((builders.pending, builders.lag), (3, Some(0)));
    assert_eq!(builders.oldest_pending_id, Some(ids[0]));
}

async fn a_missing_stream_gives_zeros(broker: &dyn Broker, keyspace: &Keyspace) {
    let (nobody, research) = (agent("nobody"), agent("research"));
    dispatch(broker, keyspace, &research, 1).await;
    let monitor = Monitor::new(broker, keyspace.clone());
    let stats = monitor
        .stats(&[nobody.clone(), research.clone()])
        .await
        .expect("stats");
    let agents: Vec<&AgentType> = stats.iter().map(|s| &s.agent_type).collect();
    assert_eq!(agents, [&nobody, &research], "in the order asked");
    let missing = &stats[0];
    assert_eq!(missing.tasks.stream, keyspace.tasks(&nobody));
    assert!(!missing.tasks.exists);
    assert_eq!(
        (
            missing.tasks.length,
            missing.tasks.last_id,
            missing.tasks.entries_added
        ),
        (0, StreamId::ZERO, 0)
    );
    assert!(missing.groups.is_empty());
    assert_eq!(missing.dlq_length, 0);
    assert_eq!(stats[1].tasks.length, 1);
    assert!(monitor.stats(&[]).await.expect("stats").is_empty());
}

async fn a_stream_without_groups_has_no_group_stats(broker: &dyn Broker, keyspace: &Keyspace) {
    let research = agent("research");
    let ids = dispatch(broker, keyspace, &research, 2).await;
    broker
        .xdel(&keyspace.tasks(&research), &ids[1..])
        .await
        .expect("xdel");
    let stats = Monitor::new(broker, keyspace.clone())
        .agent_stats(&research)
        .await
        .expect("stats");
    assert_eq!(
        (
            stats.tasks.length,
            stats.tasks.last_id,
            stats.tasks.entries_added
        ),
        (1, ids[1], 2),
        "the last id outlives its entry"
    );
    assert!(stats.groups.is_empty());
}

/// Retries settled into the delayed set are counted per agent type until
/// promoted; another agent type's set is not.
async fn stats_count_the_delayed_set(broker: &dyn Broker, keyspace: &Keyspace) {
    let research = agent("research");
    let (tasks, group) = (keyspace.tasks(&research), keyspace.group(&research));
    broker
        .group_create(&tasks, &group, GroupStart::BEGINNING, true)
        .await
        .expect("group");
    let ids = dispatch(broker, keyspace, &research, 3).await;
    read(broker, &tasks, &group, "w1", 3).await;
    let later = Duration::from_secs(3600);
    let mut settle = Settle::new(&tasks, &group, "w1");
    for (n, id) in ids.iter().enumerate() {
        // The first is due at once, the others in an hour.
        let after = if n == 0 { Duration::ZERO } else { later };
        let retry = Fields::new().with("data", "{}").with("attempts", "1");
        let delay = Delay::new(keyspace.delayed(&research), after, id.to_string(), retry);
        settle = settle.item(SettleItem::new(*id).delay(delay));
    }
    let settled = broker.settle(settle).await.expect("settle");
    assert!(
        settled.iter().all(|s| matches!(s, Settled::Done(_))),
        "{settled:?}"
    );
    let monitor = Monitor::new(broker, keyspace.clone());
    let review = agent("review");
    let stats = monitor
        .stats(&[research.clone(), review])
        .await
        .expect("stats");
    assert_eq!(stats[0].delayed_set, keyspace.delayed(&research));
    assert_eq!((stats[0].delayed_length, stats[1].delayed_length), (3, 0));
    broker
        .promote(&keyspace.delayed(&research), &tasks, 10)
        .await
        .expect("promote");
    let stats = monitor.agent_stats(&research).await.expect("stats");
    assert_eq!(stats.delayed_length, 2, "the due one was promoted");
}

/// An agent type's shared rate limit shows with what is in use: the limit
/// workers acquired with, the starts in the window, the running permits and
/// the pause left; an agent type without one shows none.
async fn stats_show_the_rate_limit_in_use(broker: &dyn Broker, keyspace: &Keyspace) {
    use crewq_core::{RateAcquire, RateLimit};
    let research = agent("research");
    let keys = keyspace.rate(&research);
    let limit = RateLimit::new()
        .starts(10, Duration::from_secs(60))
        .running(4);
    let acquire = RateAcquire {
        keys: keys.clone(),
        limit,
        permits: vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
        lease: Duration::from_secs(60),
    };
    assert_eq!(
        broker.rate_acquire(acquire).await.expect("acquire").granted,
        3
    );
    broker
        .rate_release(&keys, &["a".to_owned()], &[])
        .await
        .expect("release");
    broker
        .rate_pause(&keys, Duration::from_secs(30))
        .await
        .expect("pause");
    let monitor = Monitor::new(broker, keyspace.clone());
    let stats = monitor
        .stats(&[research, agent("review")])
        .await
        .expect("stats");
    let rate = stats[0].rate.clone().expect("a rate limit");
    assert_eq!(rate.limit, "10/60000ms, 4 running");
    assert_eq!(
        (rate.starts_limit, rate.window_ms, rate.running_limit),
        (Some(10), Some(60_000), Some(4))
    );
    assert_eq!((rate.starts_in_window, rate.running), (3, 2));
    assert!(rate.paused.is_some_and(|p| p > Duration::from_secs(29)));
    assert_eq!(stats[1].rate, None);
    let json = serde_json::to_value(&stats[0]).expect("json");
    assert_eq!(json["rate"]["running"], 2);
    assert!(
        serde_json::to_value(&stats[1])
            .expect("json")
            .get("rate")
            .is_none()
    );
}

/// One progress report of `entry`, with the fields a worker writes.
async fn report(broker: &dyn Broker, stream: &str, entry: StreamId, value: &str, attempt: u32) {
    use crewq_core::worker::{
        PROGRESS_AT, PROGRESS_ATTEMPT, PROGRESS_CONSUMER, PROGRESS_ENTRY_ID, PROGRESS_TASK_ID,
        PROGRESS_VALUE,
    };
    let fields = Fields::new()
        .with(PROGRESS_TASK_ID, "t")
        .with(PROGRESS_ENTRY_ID, entry.to_string())
        .with(PROGRESS_CONSUMER, "w1")
        .with(PROGRESS_ATTEMPT, attempt.to_string())
        .with(PROGRESS_VALUE, value.to_owned())
        .with(PROGRESS_AT, "2026-01-01T00:00:00+00:00");
    broker
        .xadd(NewEntry::new(stream, fields))
        .await
        .expect("xadd");
}

async fn progress_is_the_newest_report_of_each_entry_asked(
    broker: &dyn Broker,
    keyspace: &Keyspace,
) {
    let research = agent("research");
    let monitor = Monitor::new(broker, keyspace.clone());
    let (a, b, c, d) = (
        StreamId::new(1, 0),
        StreamId::new(2, 0),
        StreamId::new(3, 0),
        StreamId::new(4, 0),
    );
    // No progress stream yet: nothing, no error.
    let none = monitor.progress(&research, &[a]).await.expect("progress");
    assert!(none.is_empty(), "{none:?}");

    let stream = keyspace.progress(&research);
    report(broker, &stream, a, r#"{"step":1}"#, 1).await;
    report(broker, &stream, b, "not json", 2).await;
    report(broker, &stream, c, r#"{"step":9}"#, 1).await;
    report(broker, &stream, a, r#"{"step":2}"#, 1).await;
    let got = monitor
        .progress(&research, &[a, b, d])
        .await
        .expect("progress");
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [a, b], "{got:?}");
    assert_eq!(got[&a].value, serde_json::json!({ "step": 2 }));
    assert_eq!((got[&a].attempt, got[&a].consumer.as_str()), (1, "w1"));
    assert_eq!(got[&b].value, serde_json::json!("not json"));
    assert_eq!(got[&b].at, "2026-01-01T00:00:00+00:00");

    // Past the first page of the stream: a thousand reports of another
    // entry, then a's newest.
    for n in 0..1_000 {
        report(broker, &stream, c, &format!(r#"{{"step":{n}}}"#), 1).await;
    }
    report(broker, &stream, a, r#"{"step":3}"#, 2).await;
    let got = monitor.progress(&research, &[a]).await.expect("progress");
    assert_eq!(got[&a].value, serde_json::json!({ "step": 3 }));
    assert_eq!(got[&a].attempt, 2);
}

/// Tasks at priority 5 wait in lane 5's stream (and one scheduled for later
/// in its delayed set): the agent type's figures add up lanes 0 and 5, and
/// `lanes` shows each, highest first; a consumer reading both lanes is one
/// consumer holding both lanes' entries.
async fn priority_lanes_are_in_the_totals_and_broken_down(
    broker: &dyn Broker,
    keyspace: &Keyspace,
) {
    let research = agent("research");
    let five = Priority::new(5).expect("in range");
    let (zero_stream, five_stream) = (keyspace.tasks(&research), keyspace.lane(&research, five));
    let group = keyspace.group(&research);
    for stream in [&zero_stream, &five_stream] {
        broker
            .group_create(stream, &group, GroupStart::BEGINNING, true)
            .await
            .expect("group");
    }
    let producer = Producer::new(broker).with_keyspace(keyspace.clone());
    for (n, priority) in [0, 0, 5, 5, 5].into_iter().enumerate() {
        let task = Task::new("research", "a", json!({}))
            .task_id(format!("t-{n}"))
            .priority(priority)
            .build()
            .expect("task");
        producer.dispatch(&task).await.expect("dispatch");
    }
    let later = Task::new("research", "a", json!({}))
        .task_id("t-later")
        .priority(5)
        .build()
        .expect("task");
    producer
        .dispatch_in(&later, Duration::from_secs(3600))
        .await
        .expect("dispatch later");
    let five_ids = read(broker, &five_stream, &group, "w1", 1).await;
    let zero_ids = read(broker, &zero_stream, &group, "w1", 1).await;
    tokio::time::sleep(PAUSE).await;

    let stats = Monitor::new(broker, keyspace.clone())
        .agent_stats(&research)
        .await
        .expect("stats");
    assert_eq!(stats.tasks.stream, zero_stream);
    assert!(stats.tasks.exists);
    assert_eq!(
        (stats.tasks.length, stats.tasks.entries_added),
        (5, 5),
        "{stats:#?}"
    );
    let newest = stats.lanes.iter().map(|l| l.tasks.last_id).max();
    assert_eq!(
        Some(stats.tasks.last_id),
        newest,
        "the newest of both lanes"
    );
    assert_eq!(stats.delayed_set, keyspace.delayed(&research));
    assert_eq!(stats.delayed_length, 1, "lane 5's scheduled task");
    assert_eq!(stats.groups.len(), 1, "one group, read on two lanes");
    let g = &stats.groups[0];
    assert_eq!((g.pending, g.lag), (2, Some(3)), "{g:?}");
    assert_eq!(
        g.oldest_pending_id,
        Some(five_ids[0].min(zero_ids[0])),
        "the oldest of both lanes"
    );
    let consumers: Vec<(&str, u64)> = g
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(consumers, [("w1", 2)], "one worker across lanes");

    let lanes: Vec<(u8, u64, u64, Option<u64>, u64)> = stats
        .lanes
        .iter()
        .map(|l| {
            let pending = l.groups.iter().map(|g| g.pending).sum();
            let lag = l.groups.first().and_then(|g| g.lag);
            (l.priority, l.tasks.length, pending, lag, l.delayed_length)
        })
        .collect();
    assert_eq!(lanes, [(5, 3, 1, Some(2), 1), (0, 2, 1, Some(1), 0)]);
    assert_eq!(stats.lanes[0].tasks.stream, five_stream);
    assert_eq!(
        stats.lanes[0].delayed_set,
        keyspace.lane_delayed(&research, five)
    );
    assert_eq!(
        stats.lanes[0].groups[0].oldest_pending_id,
        Some(five_ids[0])
    );

    let json = serde_json::to_value(&stats).expect("serializes");
    assert_eq!(json["lanes"][0]["priority"], 5);
    assert_eq!(json["lanes"][1]["tasks"]["length"], 2);
}

/// A lane whose stream is missing but whose delayed set holds a task
/// dispatched for later is in use; the agent type's task stream is not.
async fn a_lane_with_only_delayed_tasks_is_in_use(broker: &dyn Broker, keyspace: &Keyspace) {
    let research = agent("research");
    let task = Task::new("research", "a", json!({}))
        .priority(7)
        .build()
        .expect("task");
    Producer::new(broker)
        .with_keyspace(keyspace.clone())
        .dispatch_in(&task, Duration::from_secs(3600))
        .await
        .expect("dispatch later");
    let stats = Monitor::new(broker, keyspace.clone())
        .agent_stats(&research)
        .await
        .expect("stats");
    assert!(!stats.tasks.exists);
    assert_eq!((stats.tasks.length, stats.delayed_length), (0, 1));
    let lanes: Vec<(u8, bool, u64)> = stats
        .lanes
        .iter()
        .map(|l| (l.priority, l.tasks.exists, l.delayed_length))
        .collect();
    assert_eq!(lanes, [(7, false, 1)]);
}

/// A real worker holds a priority-5 task (its handler waits): the monitor
/// shows it pending in lane 5 and in the totals, with the worker as its
/// consumer. Runs a worker, so it needs an owned broker.
mod held {
    use std::sync::Arc;
    use std::time::Duration;

    use crewq_core::locate::{Locator, Place, Wanted};
    use crewq_core::monitor::Monitor;
    use crewq_core::producer::Producer;
    use crewq_core::worker::{HandlerError, Worker, WorkerOptions};
    use crewq_core::{AgentType, Task};
    use crewq_tests::backends::Backend;
    use serde_json::{Value, json};
    use tokio::sync::Semaphore;

    crewq_tests::on_both_backends!(
        Backend:
        a_worker_holding_a_lane_task_shows_it_pending_in_its_lane,
    );

    async fn a_worker_holding_a_lane_task_shows_it_pending_in_its_lane(backend: Backend) {
        let research = AgentType::new("research").expect("agent");
        let keyspace = backend.keyspace.clone();
        let release = Arc::new(Semaphore::new(0));
        let gate = Arc::clone(&release);
        let handler = move |task: Task<Value>| {
            let gate = Arc::clone(&gate);
            async move {
                let _permit = gate.acquire().await;
                Ok::<Value, HandlerError>(json!({ "done": task.task_id }))
            }
        };
        let mut options = WorkerOptions::default().lease(Duration::from_secs(30));
        options.keyspace = keyspace.clone();
        options.lane_poll = Duration::from_millis(20);
        let worker = Worker::new(Arc::clone(&backend.broker), research.clone(), "w1", handler)
            .options(options)
            .spawn();
        let task = Task::new("research", "a", json!({}))
            .priority(5)
            .build()
            .expect("task");
        Producer::new(Arc::clone(&backend.broker))
            .with_keyspace(keyspace.clone())
            .dispatch(&task)
            .await
            .expect("dispatch");

        let monitor = Monitor::new(Arc::clone(&backend.broker), keyspace.clone());
        let mut stats = monitor.agent_stats(&research).await.expect("stats");
        for _ in 0..500 {
            if stats.groups.iter().map(|g| g.pending).sum::<u64>() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            stats = monitor.agent_stats(&research).await.expect("stats");
        }
        let pending: Vec<(u8, u64)> = stats
            .lanes
            .iter()
            .map(|l| (l.priority, l.groups.iter().map(|g| g.pending).sum()))
            .collect();
        assert_eq!(pending, [(5, 1), (0, 0)], "{stats:?}");
        assert_eq!(stats.groups.len(), 1, "{stats:?}");
        assert_eq!(stats.groups[0].pending, 1);
        let holders: Vec<(&str, u64)> = stats.groups[0]
            .consumers
            .iter()
            .filter(|c| c.pending > 0)
            .map(|c| (c.name.as_str(), c.pending))
            .collect();
        assert_eq!(holders, [("w1", 1)]);

        let found = Locator::new(Arc::clone(&backend.broker), keyspace.clone())
            .find(
                std::slice::from_ref(&research),
                &Wanted::TaskId(task.task_id.clone()),
            )
            .await
            .expect("find");
        assert!(
            matches!(&found[..], [s] if matches!(&s.place,
                Place::Pending { priority: 5, consumer, stream, .. }
                    if consumer == "w1" && *stream == keyspace.lane(&research, task.priority))),
            "{found:?}"
        );

        release.add_permits(1);
        let report = worker
            .shutdown(Duration::from_secs(10))
            .await
            .expect("report");
        assert_eq!(report.completed, 1, "{report:?}");
    }
}
