//! Retention that never cuts unfinished work: the floor over every group,
//! the producer's periodic trims to it, and the count-based opt-in that
//! still cuts. Each case on both backends (`memory::<case>` on tokio's paused
//! clock, `redis::<case>` on a private redis-server).
//!
//! Redis trims `MINID ~` by whole internal nodes (100 entries by default), so
//! on Redis the cases assert what must stay exactly and what must go only
//! in bulk; the memory backend trims exactly.

use std::sync::Arc;
use std::time::Duration;

use crewq_core::producer::{Producer, Retention};
use crewq_core::retention::{Acknowledged, Trimmer, WithoutGroup, safe_floor};
use crewq_core::{
    ALL_IDS, AgentType, Broker, Fields, GroupStart, NewEntry, ReadGroup, StreamId, Task,
};
use crewq_tests::backends::Backend;
use serde_json::json;

/// Checks after every 10 appends: small enough for a test to cross often.
fn often() -> Retention {
    Retention::Acknowledged(Acknowledged::default().every_appends(10))
}

/// What the cases do on their backend's `research` task stream.
trait Research {
    /// A producer on the backend with `retention` and no dedupe.
    fn producer_with(&self, retention: Retention) -> Producer<Arc<dyn Broker>>;
    fn tasks(&self) -> String;
    async fn group(&self, group: &str);
    /// Reads `n` new entries as `group`'s consumer `c`.
    async fn read(&self, group: &str, n: usize) -> Vec<StreamId>;
    async fn ack(&self, group: &str, ids: &[StreamId]);
    async fn kept(&self) -> Vec<StreamId>;
}

impl Research for Backend {
    fn producer_with(&self, retention: Retention) -> Producer<Arc<dyn Broker>> {
        self.producer()
            .with_dedupe_window(None)
            .with_retention(retention)
    }

    fn tasks(&self) -> String {
        self.keyspace
            .tasks(&AgentType::new("research").expect("valid"))
    }

    async fn group(&self, group: &str) {
        self.broker
            .group_create(&self.tasks(), group, GroupStart::BEGINNING, true)
            .await
            .expect("group");
    }

    async fn read(&self, group: &str, n: usize) -> Vec<StreamId> {
        let stream = self.tasks();
        let read = ReadGroup::new(stream.as_str(), group, "c").count(n);
        let entries = self.broker.read_group(&read).await.expect("read");
        entries.iter().map(|e| e.id).collect()
    }

    async fn ack(&self, group: &str, ids: &[StreamId]) {
        self.broker
            .ack(&self.tasks(), group, ids)
            .await
            .expect("ack");
    }

    async fn kept(&self) -> Vec<StreamId> {
        let entries = self
            .broker
            .xrange(&self.tasks(), ALL_IDS, None)
            .await
            .expect("xrange");
        entries.iter().map(|e| e.id).collect()
    }
}

/// Dispatches `n` tasks one batch of 10 at a time; returns their ids.
async fn dispatch(producer: &Producer<Arc<dyn Broker>>, from: usize, n: usize) -> Vec<StreamId> {
    let mut ids = Vec::new();
    let tasks: Vec<Task> = (from..from + n)
        .map(|i| {
            Task::new(
                "research",
                "analyze",
                json!({"n": i, "pad": "p".repeat(200)}),
            )
            .task_id(format!("t-{i}"))
            .build()
            .expect("a valid task")
        })
        .collect();
    for chunk in tasks.chunks(10) {
        for result in producer.dispatch_batch(chunk).await.expect("round trip") {
            ids.push(result.expect("dispatched").entry_id);
        }
    }
    ids
}

crewq_tests::on_both_backends!(
    Backend:
    pending_entries_of_a_slow_worker_are_never_trimmed,
    acknowledged_entries_are_trimmed,
    unsafe_max_len_still_cuts_unread_entries,
    floor_is_the_minimum_over_groups_at_different_positions,
    stream_without_a_group_keeps_its_bound,
);

async fn pending_entries_of_a_slow_worker_are_never_trimmed(ctx: Backend) {
    let producer = ctx.producer_with(often());
    ctx.group("workers").await;
    let ids = dispatch(&producer, 0, 300).await;
    // A slow worker: it took 250 and finished all but one, the 20th.
    let read = ctx.read("workers", 250).await;
    assert_eq!(read, ids[..250]);
    let done: Vec<StreamId> = read.iter().copied().filter(|id| *id != ids[20]).collect();
    ctx.ack("workers", &done).await;
    let more = dispatch(&producer, 300, 300).await;

    let kept = ctx.kept().await;
    // The pending entry, everything after it, and what is unread, all stay.
    let first_kept = kept.iter().position(|id| *id == ids[20]);
    let first_kept = first_kept.expect("the pending entry stays");
    assert_eq!(kept[first_kept..], [&ids[20..], &more[..]].concat());
    if ctx.is_memory() {
        assert_eq!(first_kept, 0, "exactly what was finished goes");
    }
    // It can still be settled: it is in the stream with its fields.
    let stream = ctx.tasks();
    let history = ReadGroup::new(stream.as_str(), "workers", "c").pending_after(StreamId::ZERO);
    let pending = ctx.broker.read_group(&history).await.expect("history");
    assert_eq!(pending.len(), 1);
    assert!(pending[0].fields.is_some(), "the pending entry was trimmed");
}

async fn acknowledged_entries_are_trimmed(ctx: Backend) {
    let producer = ctx.producer_with(often());
    ctx.group("workers").await;
    let mut all = Vec::new();
    for round in 0..20 {
        all.extend(dispatch(&producer, round * 100, 100).await);
        let read = ctx.read("workers", 100).await;
        ctx.ack("workers", &read).await;
    }
    // A last append lets the producer see the final acknowledgements.
    let last = dispatch(&producer, 2000, 10).await;
    let kept = ctx.kept().await;
    assert!(kept.ends_with(&last), "unread entries stay");
    if ctx.is_memory() {
        assert_eq!(kept, last, "everything finished goes");
    } else {
        // Whole nodes of 100 entries go; 2,000 finished entries leave a
        // few partial nodes at most.
        assert!(kept.len() < 500, "kept {} of 2010", kept.len());
    }
}

async fn unsafe_max_len_still_cuts_unread_entries(ctx: Backend) {
    let producer = ctx.producer_with(Retention::MaxLenEvenUnread {
        len: 10,
        approximate: false,
    });
    ctx.group("workers").await;
    let ids = dispatch(&producer, 0, 50).await;
    // Nobody read anything, and still only the newest 10 are left.
    assert_eq!(ctx.kept().await, ids[40..]);
    assert_eq!(
        Retention::unsafe_max_len(7),
        Retention::MaxLenEvenUnread {
            len: 7,
            approximate: true
        }
    );
}

async fn floor_is_the_minimum_over_groups_at_different_positions(ctx: Backend) {
    let stream = ctx.tasks();
    let producer = ctx.producer_with(Retention::None);
    assert_eq!(
        safe_floor(&*ctx.broker, &stream).await.expect("floor"),
        None,
        "no stream"
    );
    let ids = dispatch(&producer, 0, 30).await;
    assert_eq!(
        safe_floor(&*ctx.broker, &stream).await.expect("floor"),
        None,
        "no group"
    );

    // Group `ahead` read 20 and finished them all: it needs ids[20] on.
    ctx.group("ahead").await;
    let read = ctx.read("ahead", 20).await;
    ctx.ack("ahead", &read).await;
    let floor = safe_floor(&*ctx.broker, &stream).await.expect("floor");
    assert_eq!(floor, ids[19].successor());
    assert!(floor.is_some_and(|f| f > ids[19] && f <= ids[20]));

    // Group `behind` read 10 and finished all but the 4th: it needs ids[3].
    ctx.group("behind").await;
    let read = ctx.read("behind", 10).await;
    let done: Vec<StreamId> = read.iter().copied().filter(|id| *id != ids[3]).collect();
    ctx.ack("behind", &done).await;
    assert_eq!(
        safe_floor(&*ctx.broker, &stream).await.expect("floor"),
        Some(ids[3])
    );

    // `behind` finishes it: now it needs what it has not read, ids[10] on.
    ctx.ack("behind", &[ids[3]]).await;
    assert_eq!(
        safe_floor(&*ctx.broker, &stream).await.expect("floor"),
        ids[9].successor()
    );

    // A new group at the beginning needs everything.
    ctx.group("new").await;
    let floor = safe_floor(&*ctx.broker, &stream).await.expect("floor");
    assert!(floor.is_some_and(|f| f <= ids[0]), "{floor:?}");

    // Trimming to the floor the groups gave keeps what each needs.
    ctx.broker
        .group_destroy(&stream, "new")
        .await
        .expect("destroy");
    let trimmer = Trimmer::new(often());
    trimmer.check(&*ctx.broker, &stream).await.expect("check");
    let kept = ctx.kept().await;
    assert!(kept.ends_with(&ids[10..]));
    if ctx.is_memory() {
        assert_eq!(kept, ids[10..]);
    }
}

async fn stream_without_a_group_keeps_its_bound(ctx: Backend) {
    let stream = ctx.tasks();
    let producer = ctx.producer_with(often());
    let ids = dispatch(&producer, 0, 300).await;
    assert_eq!(
        ctx.kept().await,
        ids,
        "a task stream with no group keeps all"
    );

    // A results stream no supervisor reads is bounded by length.
    let bounded = Retention::Acknowledged(
        Acknowledged::default()
            .every_appends(10)
            .without_group(WithoutGroup::MaxLen(50)),
    );
    let trimmer = Trimmer::new(bounded);
    let results = format!("{stream}:results-test");
    for i in 0..300u32 {
        let fields = Fields::new().with(
            "data",
            format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(200)),
        );
        ctx.broker
            .xadd(NewEntry::new(results.as_str(), fields))
            .await
            .expect("xadd");
        trimmer
            .appended(&*ctx.broker, &results, 1, ctx.now_ms())
            .await;
    }
    let len = ctx.broker.xlen(&results).await.expect("xlen");
    if ctx.is_memory() {
        assert!((50..=60).contains(&len), "kept {len}");
    } else {
        assert!((50..=160).contains(&len), "kept {len}");
    }
    // With an age bound, entries older than the age go.
    let aged = Trimmer::new(Retention::Acknowledged(
        Acknowledged::default().without_group(WithoutGroup::MaxAge(Duration::from_millis(200))),
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh = ctx
        .broker
        .xadd(NewEntry::new(
            results.as_str(),
            Fields::new().with("data", "{}"),
        ))
        .await
        .expect("xadd");
    aged.check(&*ctx.broker, &results).await.expect("check");
    let kept = ctx
        .broker
        .xrange(&results, ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(kept.last().map(|e| e.id), Some(fresh));
    if ctx.is_memory() {
        assert_eq!(kept.len(), 1);
    } else {
        assert!(kept.len() <= 101, "whole old nodes go: kept {}", kept.len());
    }
}
