//! Cases for acknowledging entries and inspecting the pending list.

use std::ops::Bound::{Excluded, Included, Unbounded};
use std::time::Duration;

use crate::{Broker, ErrorKind, PendingQuery, PendingSummary, StreamId};

use super::Ctx;
use super::support::{
    IDLE_THRESHOLD, IDLE_WAIT, NOT_IDLE_ENOUGH, expect_kind, group_from_start, id, pending_owners,
    read_history, read_new, seed,
};

/// `ack`: counts ids that were pending, once each, whoever owned them.
pub async fn ack_counts_only_pending_ids(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 5).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "c1", 2).await;
    read_new(broker, &stream, group, "c2", 1).await;

    // 1-0 twice, 3-0 (another consumer's), 4-0 (never delivered), 9-0 (no
    // such entry): two were pending.
    let acked = broker
        .ack(&stream, group, &[id(1), id(1), id(3), id(4), id(9)])
        .await
        .expect("ack");
    assert_eq!(acked, 2);
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(2), "c1".to_owned(), 1)]
    );
    assert_eq!(
        broker
            .ack(&stream, group, &[id(1), id(3)])
            .await
            .expect("ack again"),
        0
    );
    assert_eq!(
        broker.ack(&stream, group, &[]).await.expect("ack nothing"),
        0
    );

    // An entry deleted from the stream can still be acknowledged.
    broker.xdel(&stream, &[id(2)]).await.expect("xdel");
    assert_eq!(
        broker
            .ack(&stream, group, &[id(2)])
            .await
            .expect("ack deleted"),
        1
    );
    // Acknowledged entries are not delivered again.
    assert!(
        read_history(broker, &stream, group, "c1", StreamId::ZERO)
            .await
            .is_empty()
    );
    assert_eq!(
        super::support::ids_of(&read_new(broker, &stream, group, "c1", 0).await),
        vec![id(4), id(5)]
    );
}

/// `ack`: a missing key or group acknowledges nothing, without an error.
pub async fn ack_missing_group_is_zero(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 1).await;
    assert_eq!(
        broker
            .ack(&ctx.key("missing"), "g", &[id(1)])
            .await
            .expect("ack on a missing key"),
        0
    );
    assert_eq!(
        broker
            .ack(&stream, "nogroup", &[id(1)])
            .await
            .expect("ack in a missing group"),
        0
    );
    expect_kind(
        broker.info_stream(&ctx.key("missing")).await,
        ErrorKind::NoSuchKey,
        "ack creates no key",
    );
}

/// `pending_summary`: an empty pending list is count 0 and no ids.
pub async fn pending_summary_of_empty_group(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    group_from_start(broker, &stream, group).await;
    let empty = PendingSummary::default();
    assert_eq!(
        broker
            .pending_summary(&stream, group)
            .await
            .expect("summary"),
        empty
    );

    // Emptied by acks, with consumers still in the group.
    seed(broker, &stream, 2).await;
    read_new(broker, &stream, group, "c", 0).await;
    broker
        .ack(&stream, group, &[id(1), id(2)])
        .await
        .expect("ack");
    assert_eq!(
        broker
            .pending_summary(&stream, group)
            .await
            .expect("summary after acks"),
        empty
    );
    assert!(
        broker
            .pending(&stream, group, &PendingQuery::new(10))
            .await
            .expect("pending")
            .is_empty()
    );
}

/// `pending_summary`: count, smallest and largest id, and per-consumer counts
/// ordered by name.
pub async fn pending_summary_counts_per_consumer(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 6).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "zed", 2).await;
    read_new(broker, &stream, group, "amy", 1).await;
    read_new(broker, &stream, group, "bob", 3).await;
    // bob's entries all acked: consumers with nothing pending are left out.
    broker
        .ack(&stream, group, &[id(4), id(5), id(6)])
        .await
        .expect("ack");
    // A consumer that never held anything is left out too.
    read_history(broker, &stream, group, "cat", StreamId::ZERO).await;

    let summary = broker
        .pending_summary(&stream, group)
        .await
        .expect("summary");
    assert_eq!(
        summary,
        PendingSummary {
            count: 3,
            min_id: Some(id(1)),
            max_id: Some(id(3)),
            consumers: vec![("amy".to_owned(), 1), ("zed".to_owned(), 2)],
        }
    );
    broker.ack(&stream, group, &[id(1)]).await.expect("ack 1-0");
    let summary = broker
        .pending_summary(&stream, group)
        .await
        .expect("summary");
    assert_eq!(
        (summary.count, summary.min_id, summary.max_id),
        (2, Some(id(2)), Some(id(3)))
    );
    assert_eq!(
        summary.consumers,
        vec![("amy".to_owned(), 1), ("zed".to_owned(), 1)]
    );
}

/// `pending_summary` and `pending`: a missing key or group is `NoGroup`.
pub async fn pending_missing_group_is_nogroup(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let missing = ctx.key("missing");
    seed(broker, &stream, 1).await;
    let query = PendingQuery::new(10);
    for (key, group) in [(&missing, "g"), (&stream, "nogroup")] {
        expect_kind(
            broker.pending_summary(key, group).await,
            ErrorKind::NoGroup,
            &format!("summary of {key} {group}"),
        );
        expect_kind(
            broker.pending(key, group, &query).await,
            ErrorKind::NoGroup,
            &format!("pending of {key} {group}"),
        );
    }
}

/// `pending`: honours the id range, count and consumer filter.
pub async fn pending_extended_filters_range_count_consumer(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 6).await;
    group_from_start(broker, &stream, group).await;
    // a: 1-0, 2-0, 5-0; b: 3-0, 4-0; 6-0 never delivered.
    read_new(broker, &stream, group, "a", 2).await;
    read_new(broker, &stream, group, "b", 2).await;
    read_new(broker, &stream, group, "a", 1).await;

    let stream = stream.as_str();
    let ids = |query: PendingQuery| async move {
        broker
            .pending(stream, group, &query)
            .await
            .expect("pending")
            .into_iter()
            .map(|row| row.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(PendingQuery::new(10)).await,
        (1..=5).map(id).collect::<Vec<_>>()
    );
    assert_eq!(ids(PendingQuery::new(2)).await, vec![id(1), id(2)]);
    assert_eq!(ids(PendingQuery::new(0)).await, vec![], "COUNT 0");
    assert_eq!(
        ids(PendingQuery::new(10).range((Included(id(2)), Included(id(4))))).await,
        vec![id(2), id(3), id(4)]
    );
    assert_eq!(
        ids(PendingQuery::new(10).range((Excluded(id(2)), Excluded(id(4))))).await,
        vec![id(3)]
    );
    assert_eq!(
        ids(PendingQuery::new(10).range((Excluded(id(3)), Unbounded))).await,
        vec![id(4), id(5)]
    );
    assert_eq!(
        ids(PendingQuery::new(10).range((Included(id(6)), Unbounded))).await,
        vec![],
        "6-0 is in the stream, not pending"
    );
    assert_eq!(
        ids(PendingQuery::new(10).consumer("a")).await,
        vec![id(1), id(2), id(5)]
    );
    assert_eq!(
        ids(PendingQuery::new(10).consumer("b")).await,
        vec![id(3), id(4)]
    );
    assert_eq!(ids(PendingQuery::new(10).consumer("nobody")).await, vec![]);
    // All three at once: a's entries after 1-0, at most 1.
    assert_eq!(
        ids(PendingQuery::new(1)
            .consumer("a")
            .range((Excluded(id(1)), Unbounded)))
        .await,
        vec![id(2)]
    );
    assert_eq!(
        ids(PendingQuery::new(5)
            .consumer("a")
            .range((Included(id(3)), Included(id(5)))))
        .await,
        vec![id(5)]
    );
}

/// `pending`: `min_idle` keeps only entries idle at least that long.
pub async fn pending_extended_filters_min_idle(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "a", 2).await;
    tokio::time::sleep(IDLE_WAIT).await;
    read_new(broker, &stream, group, "b", 1).await;

    let stream = stream.as_str();
    let ids = |query: PendingQuery| async move {
        broker
            .pending(stream, group, &query)
            .await
            .expect("pending")
            .into_iter()
            .map(|row| row.id)
            .collect::<Vec<_>>()
    };
    let idle = |min| PendingQuery::new(10).min_idle(min);
    assert_eq!(ids(idle(IDLE_THRESHOLD)).await, vec![id(1), id(2)]);
    assert_eq!(ids(idle(NOT_IDLE_ENOUGH)).await, vec![]);
    assert_eq!(ids(idle(Duration::ZERO)).await, vec![id(1), id(2), id(3)]);
    // Combined with the other filters.
    assert_eq!(
        ids(PendingQuery {
            count: 1,
            ..idle(IDLE_THRESHOLD)
        })
        .await,
        vec![id(1)]
    );
    assert_eq!(ids(idle(IDLE_THRESHOLD).consumer("b")).await, vec![]);
    assert_eq!(
        ids(idle(IDLE_THRESHOLD).range((Excluded(id(1)), Unbounded))).await,
        vec![id(2)]
    );
}

/// `pending`: rows carry the owner, idle time and delivery count.
pub async fn pending_extended_reports_owner_idle_and_deliveries(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 2).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "a", 1).await;
    read_new(broker, &stream, group, "b", 1).await;
    tokio::time::sleep(IDLE_WAIT).await;
    read_history(broker, &stream, group, "b", StreamId::ZERO).await;
    read_history(broker, &stream, group, "b", StreamId::ZERO).await;

    let rows = broker
        .pending(&stream, group, &PendingQuery::new(10))
        .await
        .expect("pending");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].id, rows[0].consumer.as_str(), rows[0].deliveries),
        (id(1), "a", 1)
    );
    assert!(rows[0].idle >= IDLE_WAIT, "1-0 idle {:?}", rows[0].idle);
    assert!(
        rows[0].idle < NOT_IDLE_ENOUGH,
        "1-0 idle {:?}",
        rows[0].idle
    );
    assert_eq!(
        (rows[1].id, rows[1].consumer.as_str(), rows[1].deliveries),
        (id(2), "b", 3)
    );
    assert!(
        rows[1].idle < IDLE_THRESHOLD,
        "2-0 was just re-read: idle {:?}",
        rows[1].idle
    );
}
