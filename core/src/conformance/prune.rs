//! Cases for `consumer_delete_if_idle`: deleting a consumer that went away,
//! decided from its state at the call, never from an earlier look.

use std::time::Duration;

use super::Ctx;
use super::support::{
    IDLE_THRESHOLD, IDLE_WAIT, NOT_IDLE_ENOUGH, expect_kind, group_from_start, id, ids_of,
    pending_owners, read_history, read_new, seed,
};
use crate::{Broker, ConsumerInfo, ConsumerPruned, ErrorKind, StreamId};

/// The `XINFO CONSUMERS` row of `consumer`, if it exists.
async fn consumer_info(
    broker: &dyn Broker,
    stream: &str,
    group: &str,
    consumer: &str,
) -> Option<ConsumerInfo> {
    broker
        .info_consumers(stream, group)
        .await
        .unwrap_or_else(|e| panic!("info consumers {stream} {group}: {e}"))
        .into_iter()
        .find(|c| c.name == consumer)
}

/// Calls `consumer_delete_if_idle`, which must not fail.
async fn prune(
    broker: &dyn Broker,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
) -> ConsumerPruned {
    broker
        .consumer_delete_if_idle(stream, group, consumer, min_idle)
        .await
        .unwrap_or_else(|e| panic!("delete {consumer} if idle {min_idle:?}: {e}"))
}

/// `consumer_delete_if_idle`: a consumer holding nothing, idle long
/// enough, is deleted with its idle time; the others are untouched.
pub async fn consumer_delete_if_idle_deletes_an_idle_consumer_holding_nothing(
    broker: &dyn Broker,
    ctx: &Ctx,
) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, group).await;
    let done = ids_of(&read_new(broker, &stream, group, "gone", 1).await);
    broker.ack(&stream, group, &done).await.expect("ack");
    read_new(broker, &stream, group, "busy", 1).await;
    tokio::time::sleep(IDLE_WAIT).await;

    match prune(broker, &stream, group, "gone", IDLE_THRESHOLD).await {
        ConsumerPruned::Deleted { idle } => assert!(
            idle >= IDLE_WAIT && idle < NOT_IDLE_ENOUGH,
            "gone read {IDLE_WAIT:?} ago: {idle:?}"
        ),
        other => panic!("an idle consumer holding nothing: {other:?}"),
    }
    assert_eq!(consumer_info(broker, &stream, group, "gone").await, None);
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(2), "busy".to_owned(), 1)],
        "busy's entry is untouched"
    );
    assert_eq!(
        prune(broker, &stream, group, "gone", Duration::ZERO).await,
        ConsumerPruned::Missing,
        "deleted once"
    );
}

/// `consumer_delete_if_idle`: a consumer holding entries is `Busy` and
/// kept with them, even with `min_idle` zero.
pub async fn consumer_delete_if_idle_keeps_a_consumer_holding_entries(
    broker: &dyn Broker,
    ctx: &Ctx,
) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 2).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "holder", 2).await;
    tokio::time::sleep(IDLE_WAIT).await;

    for min_idle in [Duration::ZERO, IDLE_THRESHOLD] {
        assert_eq!(
            prune(broker, &stream, group, "holder", min_idle).await,
            ConsumerPruned::Busy { pending: 2 },
            "min_idle {min_idle:?}"
        );
    }
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![
            (id(1), "holder".to_owned(), 1),
            (id(2), "holder".to_owned(), 1)
        ]
    );
    let holder = consumer_info(broker, &stream, group, "holder").await;
    assert_eq!(holder.map(|c| c.pending), Some(2));
}

/// `consumer_delete_if_idle`: a consumer holding nothing that read or
/// claimed less than `min_idle` ago is `Active` and kept.
pub async fn consumer_delete_if_idle_keeps_a_recently_active_consumer(
    broker: &dyn Broker,
    ctx: &Ctx,
) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 1).await;
    group_from_start(broker, &stream, group).await;
    let done = ids_of(&read_new(broker, &stream, group, "fresh", 1).await);
    broker.ack(&stream, group, &done).await.expect("ack");

    match prune(broker, &stream, group, "fresh", NOT_IDLE_ENOUGH).await {
        ConsumerPruned::Active { idle } => {
            assert!(idle < IDLE_THRESHOLD, "fresh just read: {idle:?}");
        }
        other => panic!("a consumer that just read: {other:?}"),
    }
    assert!(
        consumer_info(broker, &stream, group, "fresh")
            .await
            .is_some(),
        "kept"
    );
}

/// `consumer_delete_if_idle`: a consumer found idle and empty by
/// `info_consumers` that reads before the call is kept, `Busy`, with what
/// it read still pending for it; one that only reads its (empty) history
/// is kept, `Active`. The reply comes from the consumer's state at the call.
pub async fn consumer_delete_if_idle_keeps_a_consumer_that_read_after_it_was_found_idle(
    broker: &dyn Broker,
    ctx: &Ctx,
) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 2).await;
    group_from_start(broker, &stream, group).await;
    let done = ids_of(&read_new(broker, &stream, group, "reader", 1).await);
    read_history(broker, &stream, group, "returner", StreamId::ZERO).await;
    broker.ack(&stream, group, &done).await.expect("ack");
    tokio::time::sleep(IDLE_WAIT).await;

    // An operator's look: both hold nothing and are idle enough to prune.
    for name in ["reader", "returner"] {
        let found = consumer_info(broker, &stream, group, name)
            .await
            .unwrap_or_else(|| panic!("{name} is a consumer"));
        assert_eq!(found.pending, 0, "{found:?}");
        assert!(found.idle >= IDLE_THRESHOLD, "{found:?}");
    }
    // Then they wake up: one reads the next task, one looks at its history.
    assert_eq!(
        ids_of(&read_new(broker, &stream, group, "reader", 1).await),
        vec![id(2)]
    );
    read_history(broker, &stream, group, "returner", StreamId::ZERO).await;

    assert_eq!(
        prune(broker, &stream, group, "reader", IDLE_THRESHOLD).await,
        ConsumerPruned::Busy { pending: 1 }
    );
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(2), "reader".to_owned(), 1)],
        "what it read stays pending for it"
    );
    match prune(broker, &stream, group, "returner", IDLE_THRESHOLD).await {
        ConsumerPruned::Active { idle } => {
            assert!(idle < IDLE_THRESHOLD, "returner just read: {idle:?}");
        }
        other => panic!("a consumer that came back: {other:?}"),
    }
    let names: Vec<String> = broker
        .info_consumers(&stream, group)
        .await
        .expect("consumers")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["reader", "returner"]);
}

/// `consumer_delete_if_idle`: an unknown consumer is `Missing`; a missing
/// key `NoSuchKey`, a missing group `NoGroup`.
pub async fn consumer_delete_if_idle_reports_missing_consumers_groups_and_keys(
    broker: &dyn Broker,
    ctx: &Ctx,
) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 1).await;
    group_from_start(broker, &stream, group).await;
    assert_eq!(
        prune(broker, &stream, group, "nobody", Duration::ZERO).await,
        ConsumerPruned::Missing
    );
    expect_kind(
        broker
            .consumer_delete_if_idle(&stream, "nogroup", "c", Duration::ZERO)
            .await,
        ErrorKind::NoGroup,
        "a missing group",
    );
    expect_kind(
        broker
            .consumer_delete_if_idle(&ctx.key("missing"), group, "c", Duration::ZERO)
            .await,
        ErrorKind::NoSuchKey,
        "a missing key",
    );
}
