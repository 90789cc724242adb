//! Dead letters (`crewq_core::dlq`) on both backends: every case is written
//! once against `&dyn Broker` and runs as `memory::<case>` (a `MemoryBroker`
//! on tokio's paused clock) and `redis::<case>` (a private redis-server, keys
//! under a unique prefix).
//!
//! Dead letters are set up with `DeadLetter::to_fields` and `XADD`, as a
//! worker writes them.

use crewq_core::dlq::{DeadLetters, DlqError, DlqFilter, REPLAYED_AT, REPLAYED_FROM};
use crewq_core::metrics::{AGENT_TYPE, REPLAYED};
use crewq_core::{
    ALL_IDS, AgentType, Broker, DATA_FIELD, DeadLetter, DeadLetterReason, Fields, Keyspace,
    NewEntry, Origin, StreamEntry, StreamId, TokioClock, WireCodec, WireErrorKind,
    task_from_fields,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::Value;

crewq_tests::on_both_backends!(
    by_ref:
    list_returns_every_dead_letter_in_order,
    list_filters_by_reason_prefix,
    list_filters_by_trace_id_even_of_invalid_tasks,
    list_stops_at_the_limit_across_agent_types,
    list_reads_past_one_page,
    list_of_a_missing_stream_is_empty,
    inspect_finds_one_entry_or_none,
    replay_moves_exactly_one_entry_with_its_original_bytes,
    replay_refuses_poison_and_leaves_it,
    replay_refuses_tasks_over_the_size_limit,
    replay_of_an_unknown_id_is_not_found,
    replay_matching_replays_the_selected_and_skips_poison,
    replay_matching_skips_unreadable_entries,
    purge_deletes_what_the_filter_selects,
    purge_all_empties_the_stream,
    a_concurrent_replay_makes_a_reported_duplicate,
);

fn agent(name: &str) -> AgentType {
    AgentType::new(name).expect("a valid agent type")
}

fn task_json(task_id: &str, trace_id: &str) -> String {
    // Field order and spacing unlike serde_json's, so a re-encoded task
    // would not compare equal to the bytes dead-lettered.
    format!(
        r#"{{"agent_type": "research", "task_id": "{task_id}", "action": "analyze", "payload": {{"n": 1}}, "trace_id": "{trace_id}"}}"#
    )
}

/// What `seed` put in research's dead-letter stream, in order.
struct Seeded {
    /// t-1, trace wf-1, max_retries.
    t1: StreamId,
    /// t-2, trace wf-2, max_retries.
    t2: StreamId,
    /// Not JSON, poison:invalid_json.
    not_json: StreamId,
    /// Priority 11, trace wf-1, poison:invalid_task.
    bad_priority: StreamId,
    /// t-5, trace wf-2, written as the seed writes dead letters (no reason).
    seed_entry: StreamId,
}

impl Seeded {
    fn all(&self) -> Vec<StreamId> {
        vec![
            self.t1,
            self.t2,
            self.not_json,
            self.bad_priority,
            self.seed_entry,
        ]
    }
}

async fn add(broker: &dyn Broker, stream: &str, fields: Fields) -> StreamId {
    broker
        .xadd(NewEntry::new(stream, fields))
        .await
        .expect("xadd")
}

async fn seed(broker: &dyn Broker, keyspace: &Keyspace) -> Seeded {
    let research = agent("research");
    let dlq = keyspace.dlq(&research);
    let origin = |seq| Origin {
        stream: keyspace.tasks(&research),
        entry_id: StreamId::new(1_700_000_000_000, seq),
        group: keyspace.group(&research),
        consumer: "worker-1".into(),
    };
    let exhausted = |task: String, seq| {
        DeadLetter::new(task, "handler failed", 3)
            .reason(DeadLetterReason::MaxRetries)
            .origin(origin(seq))
            .dead_lettered_at("2024-01-01T00:00:00+00:00")
            .to_fields()
    };
    let t1 = add(broker, &dlq, exhausted(task_json("t-1", "wf-1"), 1)).await;
    let t2 = add(broker, &dlq, exhausted(task_json("t-2", "wf-2"), 2)).await;
    let not_json = DeadLetter::new("{not json", "invalid JSON", 0)
        .reason(DeadLetterReason::Poison(WireErrorKind::InvalidJson))
        .origin(origin(3));
    let not_json = add(broker, &dlq, not_json.to_fields()).await;
    let bad_priority = DeadLetter::new(
        r#"{"task_id":"t-4","agent_type":"research","action":"a","priority":11,"trace_id":"wf-1"}"#,
        "priority out of range",
        0,
    )
    .reason(DeadLetterReason::Poison(WireErrorKind::InvalidTask));
    let bad_priority = add(broker, &dlq, bad_priority.to_fields()).await;
    let seed_entry = DeadLetter::new(task_json("t-5", "wf-2"), "boom", 3).to_fields();
    let seed_entry = add(broker, &dlq, seed_entry).await;
    Seeded {
        t1,
        t2,
        not_json,
        bad_priority,
        seed_entry,
    }
}

fn dead_letters<'b>(broker: &'b dyn Broker, keyspace: &Keyspace) -> DeadLetters<&'b dyn Broker> {
    DeadLetters::new(broker, keyspace.clone())
}

fn ids(entries: &[crewq_core::dlq::DeadLetterEntry]) -> Vec<StreamId> {
    entries.iter().map(|e| e.entry_id).collect()
}

async fn entries(broker: &dyn Broker, stream: &str) -> Vec<StreamEntry> {
    broker.xrange(stream, ALL_IDS, None).await.expect("xrange")
}

async fn list_returns_every_dead_letter_in_order(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let research = agent("research");
    let listed = dead_letters(broker, keyspace)
        .list(&DlqFilter::new([research.clone()]))
        .await
        .expect("list");
    assert_eq!(ids(&listed), seeded.all());
    let first = &listed[0];
    assert_eq!(first.agent_type, research);
    assert_eq!(first.dlq_stream, keyspace.dlq(&research));
    assert_eq!(first.dead_letter.task, task_json("t-1", "wf-1").as_bytes());
    assert_eq!(first.dead_letter.retries, 3);
    assert_eq!(first.dead_letter.reason, Some(DeadLetterReason::MaxRetries));
    let task = first.task.as_ref().expect("a valid task");
    assert_eq!(
        (task.task_id.as_str(), task.trace_id.as_deref()),
        ("t-1", Some("wf-1"))
    );
    let valid: Vec<bool> = listed.iter().map(|e| e.task.is_some()).collect();
    assert_eq!(
        valid,
        [true, true, false, false, true],
        "poison has no task"
    );
    assert_eq!(
        listed[4].dead_letter.reason, None,
        "the seed writes no reason"
    );
}

async fn list_filters_by_reason_prefix(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let dl = dead_letters(broker, keyspace);
    let filter = DlqFilter::new([agent("research")]);
    let poison = dl
        .list(&filter.clone().reason("poison"))
        .await
        .expect("list");
    assert_eq!(ids(&poison), [seeded.not_json, seeded.bad_priority]);
    let exact = dl
        .list(&filter.clone().reason("poison:invalid_task"))
        .await
        .expect("list");
    assert_eq!(ids(&exact), [seeded.bad_priority]);
    let exhausted = dl.list(&filter.reason("max_retries")).await.expect("list");
    assert_eq!(ids(&exhausted), [seeded.t1, seeded.t2]);
}

async fn list_filters_by_trace_id_even_of_invalid_tasks(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let dl = dead_letters(broker, keyspace);
    let filter = DlqFilter::new([agent("research")]);
    let wf1 = dl
        .list(&filter.clone().trace_id("wf-1"))
        .await
        .expect("list");
    assert_eq!(ids(&wf1), [seeded.t1, seeded.bad_priority]);
    let wf2 = dl
        .list(&filter.clone().trace_id("wf-2").reason("max_retries"))
        .await
        .expect("list");
    assert_eq!(ids(&wf2), [seeded.t2], "both tests apply");
    let none = dl.list(&filter.trace_id("wf-9")).await.expect("list");
    assert!(none.is_empty());
}

async fn list_stops_at_the_limit_across_agent_types(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let review = agent("review");
    let review_letter = DeadLetter::new(task_json("r-1", "wf-3"), "e", 3).to_fields();
    let r1 = add(broker, &keyspace.dlq(&review), review_letter).await;
    let dl = dead_letters(broker, keyspace);
    let both = DlqFilter::new([agent("research"), review.clone()]);
    let two = dl.list(&both.clone().limit(2)).await.expect("list");
    assert_eq!(ids(&two), [seeded.t1, seeded.t2]);
    let all = dl.list(&both.clone().limit(100)).await.expect("list");
    assert_eq!(all.len(), 6);
    assert_eq!(
        (all[5].entry_id, &all[5].agent_type),
        (r1, &review),
        "agent types in the filter's order"
    );
    let zero = dl.list(&both.limit(0)).await.expect("list");
    assert!(zero.is_empty());
}

async fn list_reads_past_one_page(broker: &dyn Broker, keyspace: &Keyspace) {
    let research = agent("research");
    let total = DlqFilter::PAGE_SIZE * 2 + 7;
    let letters: Vec<NewEntry> = (0..total)
        .map(|n| {
            let task = task_json(&format!("t-{n}"), if n % 2 == 0 { "even" } else { "odd" });
            NewEntry::new(
                keyspace.dlq(&research),
                DeadLetter::new(task, "e", 3).to_fields(),
            )
        })
        .collect();
    let added: Vec<StreamId> = broker
        .xadd_many(letters)
        .await
        .expect("xadd_many")
        .into_iter()
        .map(|r| r.expect("xadd"))
        .collect();
    let dl = dead_letters(broker, keyspace);
    let filter = DlqFilter::new([research]);
    let all = dl.list(&filter).await.expect("list");
    assert_eq!(ids(&all), added);
    let odd = dl
        .list(&filter.clone().trace_id("odd"))
        .await
        .expect("list");
    assert_eq!(odd.len(), total / 2);
    let limited = dl.list(&filter.limit(750)).await.expect("list");
    assert_eq!(ids(&limited), added[..750]);
}

async fn list_of_a_missing_stream_is_empty(broker: &dyn Broker, keyspace: &Keyspace) {
    let dl = dead_letters(broker, keyspace);
    let listed = dl
        .list(&DlqFilter::new([agent("nobody")]))
        .await
        .expect("list");
    assert!(listed.is_empty());
    let no_agents = dl.list(&DlqFilter::default()).await.expect("list");
    assert!(no_agents.is_empty());
}

async fn inspect_finds_one_entry_or_none(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let dl = dead_letters(broker, keyspace);
    let research = agent("research");
    let hit = dl
        .inspect(&research, seeded.t2)
        .await
        .expect("inspect")
        .expect("found");
    assert_eq!(hit.entry_id, seeded.t2);
    assert_eq!(hit.task.map(|t| t.task_id), Some("t-2".to_owned()));
    let origin = hit.dead_letter.origin.expect("an origin");
    assert_eq!(origin.consumer, "worker-1");
    let poison = dl
        .inspect(&research, seeded.not_json)
        .await
        .expect("inspect")
        .expect("found");
    assert_eq!(&poison.dead_letter.task[..], b"{not json");
    assert!(poison.task.is_none());
    let between = StreamId::new(seeded.t1.ms, seeded.t1.seq + 1000);
    assert_eq!(dl.inspect(&research, between).await.expect("inspect"), None);
    assert_eq!(
        dl.inspect(&agent("review"), seeded.t1)
            .await
            .expect("inspect"),
        None
    );
}

/// Sums `crewq_dead_letters_replayed_total{agent_type=agent}` since the last
/// call (the debugging snapshotter resets counters as it reads them).
fn replayed_since(snapshotter: &Snapshotter, agent: &str) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key().name() == REPLAYED
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == AGENT_TYPE && l.value() == agent)
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("{REPLAYED} is a counter, got {other:?}"),
        })
        .sum()
}

async fn replay_moves_exactly_one_entry_with_its_original_bytes(
    broker: &dyn Broker,
    keyspace: &Keyspace,
) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The test runtime is single-threaded: the replay reports here.
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let seeded = seed(broker, keyspace).await;
    let research = agent("research");
    // 2026-11-22T08:00:00Z; on Redis tokio's clock runs, a few ms at most.
    let dl = dead_letters(broker, keyspace).with_clock(TokioClock::starting_at(1_795_334_400_000));

    let replayed = dl.replay(&research, seeded.t1).await.expect("replay");
    assert_eq!(replayed.task_id, "t-1");
    assert_eq!(replayed.trace_id.as_deref(), Some("wf-1"));
    assert_eq!(replayed.dlq_entry_id, seeded.t1);
    assert!(!replayed.duplicate);
    assert_eq!(replayed_since(&snapshotter, "research"), 1);

    let dlq = keyspace.dlq(&research);
    let tasks = entries(broker, &keyspace.tasks(&research)).await;
    assert_eq!(tasks.len(), 1, "exactly one entry appended");
    let fields = &tasks[0].fields;
    assert_eq!(tasks[0].id, replayed.new_entry_id);
    assert_eq!(
        fields.get(DATA_FIELD).map(|d| &d[..]),
        Some(task_json("t-1", "wf-1").as_bytes()),
        "the original bytes"
    );
    let from = format!("{dlq}:{}", seeded.t1);
    assert_eq!(fields.get_str(REPLAYED_FROM), Some(from.as_str()));
    let at = fields.get_str(REPLAYED_AT).expect("replayed_at");
    assert!(
        at.starts_with("2026-11-22T08:00:") && at.ends_with("+00:00"),
        "{at}"
    );
    assert_eq!(fields.len(), 3, "no attempt count: {fields:?}");
    let task = task_from_fields::<Value>(fields).expect("a valid task entry");
    assert_eq!(task.task_id, "t-1");

    let left: Vec<StreamId> = entries(broker, &dlq).await.iter().map(|e| e.id).collect();
    assert_eq!(
        left,
        [
            seeded.t2,
            seeded.not_json,
            seeded.bad_priority,
            seeded.seed_entry
        ]
    );

    // A seed-written dead letter replays as well.
    let seed_replay = dl
        .replay(&research, seeded.seed_entry)
        .await
        .expect("replay");
    assert_eq!(
        (
            seed_replay.task_id.as_str(),
            seed_replay.trace_id.as_deref()
        ),
        ("t-5", Some("wf-2"))
    );
    assert_eq!(broker.xlen(&dlq).await.expect("xlen"), 3);
    assert_eq!(replayed_since(&snapshotter, "research"), 1);
}

async fn replay_refuses_poison_and_leaves_it(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let research = agent("research");
    let dl = dead_letters(broker, keyspace);
    for id in [seeded.not_json, seeded.bad_priority] {
        match dl.replay(&research, id).await {
            Err(DlqError::NotReplayable { id: got, reason }) => {
                assert_eq!(got, id);
                assert!(!reason.is_empty());
            }
            other => panic!("poison {id} must not replay: {other:?}"),
        }
    }
    assert_eq!(
        broker.xlen(&keyspace.dlq(&research)).await.expect("xlen"),
        5
    );
    assert_eq!(
        broker.xlen(&keyspace.tasks(&research)).await.expect("xlen"),
        0
    );
}

async fn replay_refuses_tasks_over_the_size_limit(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let research = agent("research");
    let dl = dead_letters(broker, keyspace).with_codec(WireCodec::with_max_bytes(16));
    let err = dl
        .replay(&research, seeded.t1)
        .await
        .expect_err("too large");
    assert!(
        matches!(&err, DlqError::NotReplayable { reason, .. } if reason.contains("over the limit")),
        "{err:?}"
    );
    assert_eq!(
        broker.xlen(&keyspace.dlq(&research)).await.expect("xlen"),
        5
    );
}

async fn replay_of_an_unknown_id_is_not_found(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let research = agent("research");
    let dl = dead_letters(broker, keyspace);
    let unknown = StreamId::new(1, 1);
    match dl.replay(&research, unknown).await {
        Err(DlqError::NotFound { stream, id }) => {
            assert_eq!((stream, id), (keyspace.dlq(&research), unknown));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    dl.replay(&research, seeded.t1).await.expect("replay");
    let again = dl.replay(&research, seeded.t1).await;
    assert!(matches!(again, Err(DlqError::NotFound { .. })), "{again:?}");
    assert_eq!(
        broker.xlen(&keyspace.tasks(&research)).await.expect("xlen"),
        1,
        "replayed once"
    );
}

async fn replay_matching_replays_the_selected_and_skips_poison(
    broker: &dyn Broker,
    keyspace: &Keyspace,
) {
    let seeded = seed(broker, keyspace).await;
    let research = agent("research");
    let dl = dead_letters(broker, keyspace);
    let report = dl
        .replay_matching(&DlqFilter::new([research.clone()]).trace_id("wf-1"))
        .await
        .expect("replay");
    let replayed: Vec<&str> = report.replayed.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(replayed, ["t-1"]);
    let skipped: Vec<StreamId> = report.skipped.iter().map(|s| s.entry_id).collect();
    assert_eq!(skipped, [seeded.bad_priority]);
    assert!(
        report.skipped[0].reason.contains("cannot be replayed"),
        "{:?}",
        report.skipped
    );

    let report = dl
        .replay_matching(&DlqFilter::new([research.clone()]))
        .await
        .expect("replay");
    let replayed: Vec<(StreamId, &str)> = report
        .replayed
        .iter()
        .map(|r| (r.dlq_entry_id, r.task_id.as_str()))
        .collect();
    assert_eq!(replayed, [(seeded.t2, "t-2"), (seeded.seed_entry, "t-5")]);
    assert_eq!(report.skipped.len(), 2, "both poison entries");

    let tasks = entries(broker, &keyspace.tasks(&research)).await;
    let task_ids: Vec<String> = tasks
        .iter()
        .map(|e| task_from_fields::<Value>(&e.fields).expect("task").task_id)
        .collect();
    assert_eq!(task_ids, ["t-1", "t-2", "t-5"]);
    let left: Vec<StreamId> = entries(broker, &keyspace.dlq(&research))
        .await
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [seeded.not_json, seeded.bad_priority]);
}

async fn replay_matching_skips_unreadable_entries(broker: &dyn Broker, keyspace: &Keyspace) {
    let research = agent("research");
    let dlq = keyspace.dlq(&research);
    let foreign = add(
        broker,
        &dlq,
        Fields::new().with("note", "not a dead letter"),
    )
    .await;
    let good = add(
        broker,
        &dlq,
        DeadLetter::new(task_json("t-1", "wf-1"), "e", 3).to_fields(),
    )
    .await;
    let dl = dead_letters(broker, keyspace);
    let filter = DlqFilter::new([research.clone()]);
    let err = dl.list(&filter).await.expect_err("unreadable");
    assert!(
        matches!(&err, DlqError::Decode { id, .. } if *id == foreign),
        "{err:?}"
    );
    assert!(matches!(
        dl.inspect(&research, foreign).await,
        Err(DlqError::Decode { .. })
    ));
    let report = dl.replay_matching(&filter).await.expect("replay");
    assert_eq!(
        report
            .replayed
            .iter()
            .map(|r| r.dlq_entry_id)
            .collect::<Vec<_>>(),
        [good]
    );
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].entry_id, foreign);
    assert_eq!(
        dl.purge(&filter).await.expect("purge"),
        1,
        "purge needs no decoding"
    );
    assert_eq!(broker.xlen(&dlq).await.expect("xlen"), 0);
}

async fn purge_deletes_what_the_filter_selects(broker: &dyn Broker, keyspace: &Keyspace) {
    let seeded = seed(broker, keyspace).await;
    let research = agent("research");
    let dl = dead_letters(broker, keyspace);
    let filter = DlqFilter::new([research.clone()]);
    assert_eq!(
        dl.purge(&filter.clone().reason("poison"))
            .await
            .expect("purge"),
        2
    );
    let left = ids(&dl.list(&filter).await.expect("list"));
    assert_eq!(left, [seeded.t1, seeded.t2, seeded.seed_entry]);
    assert_eq!(dl.purge(&filter.clone().limit(1)).await.expect("purge"), 1);
    let left = ids(&dl.list(&filter).await.expect("list"));
    assert_eq!(left, [seeded.t2, seeded.seed_entry]);
    assert_eq!(
        dl.purge(&filter.clone().trace_id("wf-9"))
            .await
            .expect("purge"),
        0
    );
    assert_eq!(dl.purge(&filter).await.expect("purge"), 2);
    assert_eq!(
        broker.xlen(&keyspace.dlq(&research)).await.expect("xlen"),
        0
    );
    assert_eq!(
        dl.purge(&DlqFilter::new([agent("nobody")]))
            .await
            .expect("purge"),
        0
    );
}

async fn purge_all_empties_the_stream(broker: &dyn Broker, keyspace: &Keyspace) {
    seed(broker, keyspace).await;
    let research = agent("research");
    let dl = dead_letters(broker, keyspace);
    assert_eq!(dl.purge_all(&research).await.expect("purge"), 5);
    assert_eq!(
        broker.xlen(&keyspace.dlq(&research)).await.expect("xlen"),
        0
    );
    assert_eq!(dl.purge_all(&research).await.expect("purge"), 0);
    assert_eq!(dl.purge_all(&agent("nobody")).await.expect("purge"), 0);
}

async fn a_concurrent_replay_makes_a_reported_duplicate(broker: &dyn Broker, keyspace: &Keyspace) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let seeded = seed(broker, keyspace).await;
    let research = agent("research");
    let racing = LosesEveryReplayRace { inner: broker };
    let dl = DeadLetters::new(&racing as &dyn Broker, keyspace.clone());

    let replayed = dl.replay(&research, seeded.t1).await.expect("replay");
    assert!(replayed.duplicate, "the dead letter was already gone");
    assert_eq!(replayed.task_id, "t-1");
    assert_eq!(
        replayed_since(&snapshotter, "research"),
        0,
        "not counted twice"
    );

    let report = dl
        .replay_matching(&DlqFilter::new([research.clone()]).reason("max_retries"))
        .await
        .expect("replay");
    assert!(report.replayed.is_empty());
    let skipped: Vec<StreamId> = report.skipped.iter().map(|s| s.entry_id).collect();
    assert_eq!(skipped, [seeded.t2]);
    assert!(
        report.skipped[0].reason.starts_with("already gone"),
        "{:?}",
        report.skipped
    );
    // Never a loss: both tasks are on their stream (the simulated winner
    // only deleted; a real one would have appended a second copy).
    let tasks = entries(broker, &keyspace.tasks(&research)).await;
    assert_eq!(tasks.len(), 2);
}

/// A broker on which every replay loses a race: just before an
/// `ack_and_add` step, the entries it deletes are deleted, as by a
/// concurrent replay of the same dead letter that committed first.
struct LosesEveryReplayRace<'b> {
    inner: &'b dyn Broker,
}

#[async_trait::async_trait]
impl<'b> crewq_core::BrokerLayer for LosesEveryReplayRace<'b> {
    type Inner = dyn Broker + 'b;

    fn inner(&self) -> &Self::Inner {
        self.inner
    }

    async fn ack_and_add(
        &self,
        step: crewq_core::AckAndAdd,
    ) -> crewq_core::Result<crewq_core::AckAndAddReply> {
        for delete in &step.deletes {
            self.inner.xdel(&delete.stream, &delete.ids).await?;
        }
        self.inner.ack_and_add(step).await
    }
}
