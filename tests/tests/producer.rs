//! The producer on both backends: every case is written once and runs as
//! `memory::<case>` (a `MemoryBroker` on tokio's paused clock, so windows and
//! ages pass instantly and exactly) and `redis::<case>` (a private
//! redis-server, keys under a unique prefix, real sleeps).

use std::collections::BTreeMap;
use std::time::Duration;

use crewq_core::metrics::{AGENT_TYPE, DISPATCHED};
use crewq_core::producer::{DispatchError, Dispatched, Retention};
use crewq_core::{
    ALL_IDS, AgentType, Broker, Keyspace, StreamEntry, Task, Validators, WireCodec, WireError,
    task_from_fields,
};
use crewq_tests::backends::Backend;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};

/// What the cases look at on their backend (a [`Backend::producer`] makes
/// the producer).
trait Streams {
    /// Whether approximate trims are exact here. The memory backend trims
    /// exactly; Redis removes only whole internal nodes.
    fn trims_exactly(&self) -> bool;
    fn tasks(&self, agent: &str) -> String;
    async fn entries(&self, agent: &str) -> Vec<StreamEntry>;
    async fn len(&self, agent: &str) -> u64;
}

impl Streams for Backend {
    fn trims_exactly(&self) -> bool {
        self.is_memory()
    }

    fn tasks(&self, agent: &str) -> String {
        self.keyspace.tasks(&agent_type(agent))
    }

    async fn entries(&self, agent: &str) -> Vec<StreamEntry> {
        self.broker
            .xrange(&self.tasks(agent), ALL_IDS, None)
            .await
            .expect("xrange")
    }

    async fn len(&self, agent: &str) -> u64 {
        self.broker.xlen(&self.tasks(agent)).await.expect("xlen")
    }
}

fn agent_type(name: &str) -> AgentType {
    AgentType::new(name).expect("a valid agent type")
}

/// A task with a fixed id, trace id and time, so entries can be compared.
fn task(agent: &str, id: &str, payload: Value) -> Task {
    Task::new(agent, "analyze", payload)
        .task_id(id)
        .trace_id("wf-1")
        .created_at("2024-01-01T00:00:00+00:00")
        .build()
        .expect("a valid task")
}

/// A payload whose JSON is over the default 512 KiB limit.
fn oversized_payload() -> Value {
    json!({"text": "x".repeat(WireCodec::DEFAULT_MAX_BYTES + 1)})
}

fn ok(result: &Result<Dispatched, DispatchError>) -> &Dispatched {
    match result {
        Ok(dispatched) => dispatched,
        Err(err) => panic!("expected a dispatch, got {err}"),
    }
}

crewq_tests::on_both_backends!(
    Backend:
    dispatch_writes_one_seed_compatible_entry,
    dispatch_batch_appends_in_order_and_refused_tasks_fail_alone,
    retried_dispatch_within_the_window_is_a_duplicate,
    dispatch_after_the_window_appends_again,
    without_dedupe_every_dispatch_appends,
    oversized_payload_is_refused_and_nothing_written,
    validator_rejection_is_refused_and_nothing_written,
    invalid_agent_type_is_refused_and_nothing_written,
    max_len_even_unread_keeps_the_newest_entries,
    max_age_even_unread_drops_entries_older_than_the_age,
    dispatched_counter_counts_only_real_appends,
    cluster_layout_dispatches_to_the_hash_tagged_stream,
);

async fn dispatch_writes_one_seed_compatible_entry(ctx: Backend) {
    let producer = ctx.producer();
    let task = task("research", "t-1", json!({"repo": "crewq", "depth": 2}));
    let dispatched = producer.dispatch(&task).await.expect("dispatch");

    // The backend's layout: the seed's, or the cluster's on a cluster.
    let stream = ctx.tasks("research");
    assert_eq!(
        dispatched,
        Dispatched {
            task_id: "t-1".into(),
            agent_type: "research".into(),
            stream: stream.clone(),
            entry_id: dispatched.entry_id,
            duplicate: false,
        }
    );
    let entries = ctx.entries("research").await;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.id, dispatched.entry_id);
    // One field, `data`, holding the task's JSON as the seed writes it.
    let names: Vec<&[u8]> = entry.fields.iter().map(|(n, _)| n.as_ref()).collect();
    assert_eq!(names, [b"data".as_slice()]);
    let expected = serde_json::to_vec(&task).expect("json");
    assert_eq!(entry.fields.get("data").map(|d| d.to_vec()), Some(expected));
    let decoded: Task = task_from_fields(&entry.fields).expect("decodes");
    assert_eq!(decoded, task);
}

async fn dispatch_batch_appends_in_order_and_refused_tasks_fail_alone(ctx: Backend) {
    let validators = Validators::new().with(agent_type("research"), |t| {
        if t.payload.get("forbidden").is_some() {
            Err("forbidden".into())
        } else {
            Ok(())
        }
    });
    let producer = ctx.producer().with_validators(validators);
    let mut bad_agent = task("research", "t-bad-agent", json!({}));
    bad_agent.agent_type = "re search".into();
    let tasks = vec![
        task("research", "t-1", json!({"n": 1})),
        task("research", "t-big", oversized_payload()),
        task("research", "t-2", json!({"n": 2})),
        task("research", "t-rejected", json!({"forbidden": true})),
        bad_agent,
        task("review", "t-3", json!({"n": 3})),
        task("research", "t-4", json!({"n": 4})),
    ];
    let results = producer.dispatch_batch(&tasks).await.expect("round trip");
    assert_eq!(results.len(), tasks.len());
    assert!(matches!(
        &results[1],
        Err(DispatchError::Encode(WireError::Oversized { .. }))
    ));
    assert!(matches!(&results[3], Err(DispatchError::Rejected(r)) if r.task_id == "t-rejected"));
    assert!(matches!(
        &results[4],
        Err(DispatchError::InvalidAgentType(_))
    ));

    // The others are in their streams, in order, each reporting its own id.
    let research = ctx.entries("research").await;
    let ids: Vec<_> = research.iter().map(|e| e.id).collect();
    let reported: Vec<_> = [0, 2, 6]
        .iter()
        .map(|&i| ok(&results[i]).entry_id)
        .collect();
    assert_eq!(ids, reported);
    let task_ids: Vec<String> = research
        .iter()
        .map(|e| {
            task_from_fields::<Value>(&e.fields)
                .expect("decodes")
                .task_id
        })
        .collect();
    assert_eq!(task_ids, ["t-1", "t-2", "t-4"]);
    let review = ctx.entries("review").await;
    assert_eq!(review.len(), 1);
    assert_eq!(ok(&results[5]).entry_id, review[0].id);
    assert_eq!(ok(&results[5]).stream, ctx.tasks("review"));
    assert!(results.iter().flatten().all(|d| !d.duplicate));

    // An empty batch is fine and touches nothing.
    let none: Vec<Task> = Vec::new();
    assert!(
        producer
            .dispatch_batch(&none)
            .await
            .expect("empty")
            .is_empty()
    );
}

async fn retried_dispatch_within_the_window_is_a_duplicate(ctx: Backend) {
    let producer = ctx.producer();
    let task = task("research", "t-1", json!({}));
    let first = producer.dispatch(&task).await.expect("dispatch");
    let again = producer.dispatch(&task).await.expect("retry");
    assert!(again.duplicate);
    assert_eq!(again.entry_id, first.entry_id);
    assert_eq!(again.stream, first.stream);
    assert_eq!(ctx.len("research").await, 1);

    // In a batch too: a retried task and one named twice in the batch.
    let other = self::task("research", "t-2", json!({}));
    let results = producer
        .dispatch_batch(&[task.clone(), other.clone(), other])
        .await
        .expect("batch");
    assert!(ok(&results[0]).duplicate);
    assert_eq!(ok(&results[0]).entry_id, first.entry_id);
    assert!(!ok(&results[1]).duplicate);
    assert!(ok(&results[2]).duplicate);
    assert_eq!(ok(&results[2]).entry_id, ok(&results[1]).entry_id);
    assert_eq!(ctx.len("research").await, 2);
}

async fn dispatch_after_the_window_appends_again(ctx: Backend) {
    let window = Duration::from_millis(300);
    let producer = ctx.producer().with_dedupe_window(Some(window));
    let task = task("research", "t-1", json!({}));
    let first = producer.dispatch(&task).await.expect("dispatch");
    tokio::time::sleep(window / 2).await;
    assert!(producer.dispatch(&task).await.expect("retry").duplicate);
    tokio::time::sleep(window).await;
    let later = producer.dispatch(&task).await.expect("after the window");
    assert!(!later.duplicate);
    assert!(later.entry_id > first.entry_id);
    assert_eq!(ctx.len("research").await, 2);
}

async fn without_dedupe_every_dispatch_appends(ctx: Backend) {
    let producer = ctx.producer().with_dedupe_window(None);
    let task = task("research", "t-1", json!({}));
    let first = producer.dispatch(&task).await.expect("dispatch");
    let second = producer.dispatch(&task).await.expect("dispatch");
    assert!(!first.duplicate && !second.duplicate);
    assert!(second.entry_id > first.entry_id);
    let results = producer
        .dispatch_batch(&[task.clone(), task])
        .await
        .expect("batch");
    assert!(results.iter().all(|r| !ok(r).duplicate));
    assert_eq!(ctx.len("research").await, 4);
}

async fn oversized_payload_is_refused_and_nothing_written(ctx: Backend) {
    let producer = ctx.producer();
    let big = task("research", "t-1", oversized_payload());
    let err = producer.dispatch(&big).await.expect_err("over 512 KiB");
    let DispatchError::Encode(WireError::Oversized { size, limit }) = &err else {
        panic!("expected Oversized, got {err}");
    };
    assert_eq!(*limit, 512 * 1024);
    assert!(*size > *limit);
    assert!(
        err.to_string().contains("over the limit of 524288 bytes"),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(ctx.len("research").await, 0);

    // The refusal set no marker: the same id dispatches once it fits.
    let fixed = task("research", "t-1", json!({"text": "short"}));
    assert!(!producer.dispatch(&fixed).await.expect("fits").duplicate);

    // The limit is the codec's.
    let small = ctx.producer().with_codec(WireCodec::with_max_bytes(64));
    let err = small
        .dispatch(&task("research", "t-2", json!({"text": "x".repeat(64)})))
        .await
        .expect_err("over 64 bytes");
    assert!(matches!(
        err,
        DispatchError::Encode(WireError::Oversized { limit: 64, .. })
    ));
    assert_eq!(ctx.len("research").await, 1);
}

async fn validator_rejection_is_refused_and_nothing_written(ctx: Backend) {
    #[derive(serde::Serialize)]
    struct Analyze {
        repo: String,
    }
    let validators = Validators::new().with(agent_type("research"), |t| {
        match t.payload.get("repo").and_then(Value::as_str) {
            Some("") | None => Err("needs a repo".into()),
            Some(_) => Ok(()),
        }
    });
    let producer = ctx.producer().with_validators(validators);
    let typed = |repo: &str, id: &str| {
        Task::new("research", "analyze", Analyze { repo: repo.into() })
            .task_id(id)
            .build()
            .expect("valid")
    };
    let err = producer
        .dispatch(&typed("", "t-1"))
        .await
        .expect_err("rejected");
    let DispatchError::Rejected(rejected) = &err else {
        panic!("expected Rejected, got {err}");
    };
    assert_eq!(rejected.task_id, "t-1");
    assert_eq!(rejected.reason, "needs a repo");
    assert_eq!(
        err.to_string(),
        "cannot dispatch: task t-1 rejected by the research validator: needs a repo"
    );
    assert_eq!(ctx.len("research").await, 0);

    // A typed payload is validated as the JSON a worker will see; agent
    // types without a validator accept everything.
    producer
        .dispatch(&typed("crewq", "t-2"))
        .await
        .expect("accepted");
    producer
        .dispatch(&task("review", "t-3", json!({})))
        .await
        .expect("no validator");
    assert_eq!(ctx.len("research").await, 1);
    assert_eq!(ctx.len("review").await, 1);
}

async fn invalid_agent_type_is_refused_and_nothing_written(ctx: Backend) {
    let producer = ctx.producer();
    for bad in ["", "re search", "a{b}"] {
        let mut task = task("research", "t-1", json!({}));
        task.agent_type = bad.into();
        let err = producer.dispatch(&task).await.expect_err(bad);
        assert!(
            matches!(&err, DispatchError::InvalidAgentType(e) if e.name == bad),
            "{err}"
        );
    }
    assert_eq!(ctx.len("research").await, 0);
}

async fn max_len_even_unread_keeps_the_newest_entries(ctx: Backend) {
    let producer = ctx.producer().with_retention(Retention::MaxLenEvenUnread {
        len: 3,
        approximate: false,
    });
    let mut ids = Vec::new();
    for n in 0..5 {
        let task = task("research", &format!("t-{n}"), json!({}));
        ids.push(producer.dispatch(&task).await.expect("dispatch").entry_id);
    }
    let batch: Vec<Task> = (5..7)
        .map(|n| task("research", &format!("t-{n}"), json!({})))
        .collect();
    for result in producer.dispatch_batch(&batch).await.expect("batch") {
        ids.push(ok(&result).entry_id);
    }
    let kept: Vec<_> = ctx.entries("research").await.iter().map(|e| e.id).collect();
    assert_eq!(kept, ids[4..]);
}

/// Proves on memory that exactly the entries older than the age go; on
/// Redis, where `MINID ~` drops only whole internal nodes (at most 4096
/// bytes each by default, so ~1 KiB entries fill one in a few), that the
/// fresh entry stays and most old ones go, not which.
async fn max_age_even_unread_drops_entries_older_than_the_age(ctx: Backend) {
    const OLD: usize = 20;
    let age = Duration::from_millis(500);
    let producer = ctx
        .producer()
        .with_retention(Retention::MaxAgeEvenUnread(age));
    let padding = "p".repeat(1024);
    let old: Vec<Task> = (0..OLD)
        .map(|n| task("research", &format!("old-{n}"), json!({"pad": padding})))
        .collect();
    for result in producer.dispatch_batch(&old).await.expect("batch") {
        ok(&result);
    }
    // Within the age nothing goes.
    tokio::time::sleep(age / 5).await;
    producer
        .dispatch(&task("research", "young", json!({})))
        .await
        .expect("dispatch");
    assert_eq!(ctx.len("research").await, OLD as u64 + 1);

    tokio::time::sleep(age + age / 5).await;
    let fresh = producer
        .dispatch(&task("research", "fresh", json!({})))
        .await
        .expect("dispatch");
    let kept: Vec<_> = ctx.entries("research").await.iter().map(|e| e.id).collect();
    assert_eq!(kept.last(), Some(&fresh.entry_id), "the fresh entry stays");
    if ctx.trims_exactly() {
        assert_eq!(kept, [fresh.entry_id]);
    } else {
        assert!(kept.len() < OLD / 2, "whole old nodes go: kept {kept:?}");
    }
}

/// `crewq_tasks_dispatched_total` per agent type since the last call, zeros
/// left out (the debugging snapshotter resets every counter as it reads).
fn dispatched_since(snapshotter: &Snapshotter) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != DISPATCHED {
            continue;
        }
        let DebugValue::Counter(n) = value else {
            panic!("{DISPATCHED} is a counter, got {value:?}");
        };
        let agent = key
            .key()
            .labels()
            .find(|l| l.key() == AGENT_TYPE)
            .map(|l| l.value().to_owned())
            .expect("every counter has an agent_type");
        if n > 0 {
            *counts.entry(agent).or_default() += n;
        }
    }
    counts
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(a, n)| (a.to_owned(), n)).collect()
}

async fn dispatched_counter_counts_only_real_appends(ctx: Backend) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The test runtime is single-threaded, so every dispatch runs on this
    // thread and reports to this recorder, across awaits.
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let validators = Validators::new().with(agent_type("research"), |t| {
        if t.action == "forbidden" {
            Err("no".into())
        } else {
            Ok(())
        }
    });
    let producer = ctx.producer().with_validators(validators);
    let a = task("research", "t-a", json!({}));
    producer.dispatch(&a).await.expect("dispatch");
    assert_eq!(dispatched_since(&snapshotter), counts(&[("research", 1)]));

    producer.dispatch(&a).await.expect("duplicate");
    let mut forbidden = task("research", "t-f", json!({}));
    forbidden.action = "forbidden".into();
    producer.dispatch(&forbidden).await.expect_err("rejected");
    producer
        .dispatch(&task("research", "t-big", oversized_payload()))
        .await
        .expect_err("oversized");
    assert_eq!(dispatched_since(&snapshotter), counts(&[]));

    let results = producer
        .dispatch_batch(&[
            a.clone(),
            task("research", "t-b", json!({})),
            task("review", "t-c", json!({})),
            forbidden,
        ])
        .await
        .expect("batch");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    assert_eq!(
        dispatched_since(&snapshotter),
        counts(&[("research", 1), ("review", 1)])
    );

    let plain = ctx.producer().with_dedupe_window(None);
    plain.dispatch(&a).await.expect("dispatch");
    plain.dispatch(&a).await.expect("dispatch");
    assert_eq!(dispatched_since(&snapshotter), counts(&[("research", 2)]));
}

async fn cluster_layout_dispatches_to_the_hash_tagged_stream(ctx: Backend) {
    let keyspace = Keyspace::cluster()
        .with_prefix(ctx.keyspace.prefix())
        .expect("valid prefix");
    let producer = ctx.producer().with_keyspace(keyspace.clone());
    let task = task("research", "t-1", json!({}));
    let first = producer.dispatch(&task).await.expect("dispatch");
    let stream = format!("{}:{{research}}:tasks", ctx.keyspace.prefix());
    assert_eq!(first.stream, stream);
    assert_eq!(producer.keyspace(), &keyspace);
    assert!(producer.dispatch(&task).await.expect("retry").duplicate);
    assert_eq!(producer.broker().xlen(&stream).await.expect("xlen"), 1);
    // Nothing went to the seed layout's stream.
    let seed = Keyspace::seed()
        .with_prefix(ctx.keyspace.prefix())
        .expect("valid prefix");
    let seed_stream = seed.tasks(&agent_type("research"));
    assert_eq!(producer.broker().xlen(&seed_stream).await.expect("xlen"), 0);
}
