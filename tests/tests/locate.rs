//! Finding a task (`crewq_core::locate`) on both backends: every case is
//! written once against `&dyn Broker` and runs on memory, a private Redis
//! and a private Redis Cluster.

use crewq_core::locate::{Locator, Place, Sighting, Wanted};
use crewq_core::producer::Producer;
use crewq_core::{
    AgentType, Broker, DeadLetter, DeadLetterReason, GroupStart, Keyspace, NewEntry, Priority,
    ReadGroup, StreamId, Task, TaskResult,
};
use serde_json::json;

crewq_tests::on_both_backends!(
    by_ref:
    a_task_is_found_waiting_pending_acknowledged_completed_or_dead_lettered,
    a_trace_finds_every_task_of_a_workflow_and_their_results,
    nothing_is_found_in_missing_streams,
    a_task_in_a_priority_lane_is_found_waiting_then_pending,
);

fn research() -> AgentType {
    AgentType::new("research").expect("a valid agent type")
}

fn task(id: &str, trace: &str) -> Task {
    Task::new("research", "analyze", json!({}))
        .task_id(id)
        .trace_id(trace)
        .build()
        .expect("a task")
}

/// t-0 acknowledged with a result, t-1 pending with w1, t-2 waiting, t-9
/// dead-lettered; all of trace wf-1 but t-2 (wf-2).
async fn a_crew(broker: &dyn Broker, keyspace: &Keyspace) -> Vec<StreamId> {
    let agent = research();
    let (stream, group) = (keyspace.tasks(&agent), keyspace.group(&agent));
    broker
        .group_create(&stream, &group, GroupStart::BEGINNING, true)
        .await
        .expect("group");
    let mut ids = Vec::new();
    for (id, trace) in [("t-0", "wf-1"), ("t-1", "wf-1"), ("t-2", "wf-2")] {
        let fields = task(id, trace).to_fields().expect("fields");
        ids.push(
            broker
                .xadd(NewEntry::new(&stream, fields))
                .await
                .expect("xadd"),
        );
    }
    broker
        .read_group(&ReadGroup::new(&stream, &group, "w1").count(2))
        .await
        .expect("read");
    broker.ack(&stream, &group, &ids[..1]).await.expect("ack");
    let result = TaskResult::success(&task("t-0", "wf-1"), json!({"found": 3}));
    let fields = crewq_core::result_to_fields(&result).expect("result fields");
    broker
        .xadd(NewEntry::new(keyspace.results(&agent), fields))
        .await
        .expect("xadd result");
    let letter = DeadLetter::new(
        serde_json::to_vec(&task("t-9", "wf-1")).expect("json"),
        "timeout",
        3,
    )
    .reason(DeadLetterReason::MaxRetries);
    ids.push(
        broker
            .xadd(NewEntry::new(keyspace.dlq(&agent), letter.to_fields()))
            .await
            .expect("xadd letter"),
    );
    ids
}

async fn find(locator: &Locator<&dyn Broker>, id: &str) -> Vec<Sighting> {
    locator
        .find(&[research()], &Wanted::TaskId(id.into()))
        .await
        .expect("find")
}

fn states(found: &[Sighting]) -> Vec<(String, &'static str)> {
    found
        .iter()
        .map(|s| {
            let state = match s.place {
                Place::Waiting { .. } => "waiting",
                Place::Pending { .. } => "pending",
                Place::Acknowledged { .. } => "acknowledged",
                Place::Completed { .. } => "completed",
                Place::Progress { .. } => "progress",
                Place::DeadLettered { .. } => "dead_lettered",
            };
            (s.task_id.clone(), state)
        })
        .collect()
}

async fn a_task_is_found_waiting_pending_acknowledged_completed_or_dead_lettered(
    broker: &dyn Broker,
    keyspace: &Keyspace,
) {
    let ids = a_crew(broker, keyspace).await;
    let locator = Locator::new(broker, keyspace.clone());

    let done = find(&locator, "t-0").await;
    assert_eq!(
        states(&done),
        [("t-0".into(), "acknowledged"), ("t-0".into(), "completed")]
    );
    assert!(
        matches!(&done[1].place, Place::Completed { status, output: Some(out), .. }
            if status == "success" && out["found"] == 3),
        "{done:?}"
    );

    let held = find(&locator, "t-1").await;
    match &held[..] {
        [
            Sighting {
                place:
                    Place::Pending {
                        entry_id,
                        consumer,
                        deliveries,
                        ..
                    },
                ..
            },
        ] => {
            assert_eq!(
                (*entry_id, consumer.as_str(), *deliveries),
                (ids[1], "w1", 1)
            );
        }
        other => panic!("t-1 pending with w1: {other:?}"),
    }
    assert_eq!(
        states(&find(&locator, "t-2").await),
        [("t-2".into(), "waiting")]
    );

    let dead = find(&locator, "t-9").await;
    match &dead[..] {
        [
            Sighting {
                place:
                    Place::DeadLettered {
                        entry_id,
                        reason,
                        retries,
                        ..
                    },
                ..
            },
        ] => {
            assert_eq!(
                (*entry_id, reason.as_deref(), *retries),
                (ids[3], Some("max_retries"), 3)
            );
        }
        other => panic!("t-9 dead-lettered: {other:?}"),
    }
    assert!(find(&locator, "t-404").await.is_empty());
}

async fn a_trace_finds_every_task_of_a_workflow_and_their_results(
    broker: &dyn Broker,
    keyspace: &Keyspace,
) {
    a_crew(broker, keyspace).await;
    let locator = Locator::new(broker, keyspace.clone());
    let agents = [research(), AgentType::new("review").expect("valid")];
    let found = locator
        .find(&agents, &Wanted::TraceId("wf-1".into()))
        .await
        .expect("find");
    assert_eq!(
        states(&found),
        [
            ("t-0".into(), "acknowledged"),
            ("t-1".into(), "pending"),
            ("t-9".into(), "dead_lettered"),
            ("t-0".into(), "completed"),
        ]
    );
    let json = serde_json::to_value(&found[1]).expect("serializes");
    assert_eq!(json["place"]["state"], "pending");
    assert_eq!(json["place"]["consumer"], "w1");
    assert!(json["place"].get("priority").is_none(), "lane 0: {json}");
}

async fn nothing_is_found_in_missing_streams(broker: &dyn Broker, keyspace: &Keyspace) {
    let locator = Locator::new(broker, keyspace.clone());
    let found = locator
        .find(&[research()], &Wanted::TaskId("t-0".into()))
        .await
        .expect("find");
    assert!(found.is_empty());
}

/// A task dispatched at priority 5 waits in lane 5's stream, is found there
/// waiting, then pending once read; a lane-0 task beside it is still
/// found where it was.
async fn a_task_in_a_priority_lane_is_found_waiting_then_pending(
    broker: &dyn Broker,
    keyspace: &Keyspace,
) {
    let ids = a_crew(broker, keyspace).await;
    let agent = research();
    let five = Priority::new(5).expect("in range");
    let lane = keyspace.lane(&agent, five);
    let group = keyspace.group(&agent);
    broker
        .group_create(&lane, &group, GroupStart::BEGINNING, true)
        .await
        .expect("group");
    let task = Task::new("research", "analyze", json!({}))
        .task_id("t-5")
        .trace_id("wf-1")
        .priority(5)
        .build()
        .expect("a task");
    let dispatched = Producer::new(broker)
        .with_keyspace(keyspace.clone())
        .dispatch(&task)
        .await
        .expect("dispatch");
    let locator = Locator::new(broker, keyspace.clone());

    let waiting = find(&locator, "t-5").await;
    assert!(
        matches!(&waiting[..], [Sighting { place: Place::Waiting { stream, priority: 5, entry_id }, .. }]
            if *stream == lane && *entry_id == dispatched.entry_id),
        "{waiting:?}"
    );
    let json = serde_json::to_value(&waiting[0]).expect("serializes");
    assert_eq!(json["place"]["priority"], 5);

    broker
        .read_group(&ReadGroup::new(&lane, &group, "w5").count(1))
        .await
        .expect("read");
    let held = find(&locator, "t-5").await;
    assert!(
        matches!(&held[..], [Sighting { place: Place::Pending { stream, priority: 5, consumer, deliveries: 1, .. }, .. }]
            if *stream == lane && consumer == "w5"),
        "{held:?}"
    );
    assert!(
        matches!(&find(&locator, "t-2").await[..], [Sighting { place: Place::Waiting { priority: 0, entry_id, .. }, .. }]
            if *entry_id == ids[2]),
        "lane 0's waiting task"
    );
    let trace = locator
        .find(&[agent], &Wanted::TraceId("wf-1".into()))
        .await
        .expect("find");
    assert_eq!(
        states(&trace),
        [
            ("t-0".into(), "acknowledged"),
            ("t-1".into(), "pending"),
            ("t-5".into(), "pending"),
            ("t-9".into(), "dead_lettered"),
            ("t-0".into(), "completed"),
        ]
    );
}
