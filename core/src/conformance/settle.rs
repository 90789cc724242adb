//! Cases for the ownership-guarded steps: `settle` and `renew`.

use crate::{Broker, ErrorKind, NewEntry, Settle, SettleItem, Settled, StreamId};

use super::Ctx;
use super::support::{
    IDLE_THRESHOLD, IDLE_WAIT, all_ids, expect_kind, fields, group_from_start, id, pending_owners,
    pending_row, read_new, seed,
};

/// Three entries delivered to `w`, on a stream `tasks` with group `g`.
async fn three_delivered(broker: &dyn Broker, ctx: &Ctx) -> String {
    let tasks = ctx.key("tasks");
    seed(broker, &tasks, 3).await;
    group_from_start(broker, &tasks, "g").await;
    read_new(broker, &tasks, "g", "w", 0).await;
    tasks
}

/// `settle`: an owned item gets its appends in order, then leaves the PEL;
/// the reply carries the appended ids.
pub async fn settle_writes_and_acks_owned_entries(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    let results = ctx.key("results");
    let settle = Settle::new(&tasks, "g", "w")
        .item(
            SettleItem::new(id(1))
                .append(NewEntry::new(&results, fields("first")))
                .append(NewEntry::new(&results, fields("second"))),
        )
        .item(SettleItem::new(id(2)));
    let outcomes = broker.settle(settle).await.expect("settle");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    let Settled::Done(appended) = &outcomes[0] else {
        panic!("1-0 is owned by w: {outcomes:?}");
    };
    assert_eq!(outcomes[1], Settled::Done(vec![]), "nothing to append");
    assert_eq!(&all_ids(broker, &results).await, appended);
    let stored = broker
        .xrange(&results, crate::ALL_IDS, None)
        .await
        .expect("xrange");
    let values: Vec<_> = stored.iter().map(|e| e.fields.get_str("n")).collect();
    assert_eq!(values, [Some("first"), Some("second")]);
    assert_eq!(
        pending_owners(broker, &tasks, "g").await,
        vec![(id(3), "w".to_owned(), 1)]
    );
}

/// `settle`: an item another consumer claimed stays pending under it and
/// appends nothing, while the caller's other items settle.
pub async fn settle_skips_entries_another_consumer_claimed(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    let results = ctx.key("results");
    // `w` stalls past its lease; `rescuer` takes 2-0 over.
    tokio::time::sleep(IDLE_WAIT).await;
    let taken = broker
        .claim(&tasks, "g", "rescuer", IDLE_THRESHOLD, &[id(2)])
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);

    let settle = Settle::new(&tasks, "g", "w")
        .item(SettleItem::new(id(1)).append(NewEntry::new(&results, fields("ok 1"))))
        .item(SettleItem::new(id(2)).append(NewEntry::new(&results, fields("zombie 2"))));
    let outcomes = broker.settle(settle).await.expect("settle");
    assert!(
        matches!(outcomes[0], Settled::Done(ref ids) if ids.len() == 1),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Settled::NotOwned);

    let stored = broker
        .xrange(&results, crate::ALL_IDS, None)
        .await
        .expect("xrange");
    let values: Vec<_> = stored.iter().map(|e| e.fields.get_str("n")).collect();
    assert_eq!(values, [Some("ok 1")], "the zombie wrote nothing");
    assert_eq!(
        pending_owners(broker, &tasks, "g").await,
        vec![(id(2), "rescuer".to_owned(), 2), (id(3), "w".to_owned(), 1)]
    );
}

/// `settle`: an item already acknowledged is `NotOwned` and appends nothing.
pub async fn settle_skips_entries_no_longer_pending(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    let results = ctx.key("results");
    assert_eq!(broker.ack(&tasks, "g", &[id(1)]).await.expect("ack"), 1);
    let never_delivered = StreamId::new(99, 0);
    let settle = Settle::new(&tasks, "g", "w")
        .item(SettleItem::new(id(1)).append(NewEntry::new(&results, fields("again"))))
        .item(SettleItem::new(never_delivered).append(NewEntry::new(&results, fields("ghost"))));
    let outcomes = broker.settle(settle).await.expect("settle");
    assert_eq!(outcomes, vec![Settled::NotOwned, Settled::NotOwned]);
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 0);
    assert_eq!(pending_owners(broker, &tasks, "g").await.len(), 2);
}

/// `settle`: an explicit id or an append without fields is rejected before
/// anything is written or acknowledged.
pub async fn settle_rejects_malformed_steps_whole(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    let results = ctx.key("results");
    let malformed = [
        NewEntry::new(&results, fields("explicit")).with_id(StreamId::new(5, 0)),
        NewEntry::new(&results, crate::Fields::new()),
    ];
    for bad in malformed {
        let settle = Settle::new(&tasks, "g", "w")
            .item(SettleItem::new(id(1)).append(NewEntry::new(&results, fields("fine"))))
            .item(SettleItem::new(id(2)).append(bad));
        expect_kind(
            broker.settle(settle).await,
            ErrorKind::InvalidArgument,
            "malformed settle",
        );
    }
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 0);
    assert_eq!(pending_owners(broker, &tasks, "g").await.len(), 3);
}

/// `settle`: a missing key or group is `NoGroup`.
pub async fn settle_missing_group_is_nogroup(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    for (stream, group) in [(tasks.clone(), "nope"), (ctx.key("missing"), "g")] {
        let settle = Settle::new(&stream, group, "w").item(SettleItem::new(id(1)));
        expect_kind(broker.settle(settle).await, ErrorKind::NoGroup, "settle");
    }
}

/// A stream whose last id is the largest possible: every append to it fails
/// (`ERR The stream has exhausted the last possible ID`) on every backend.
async fn exhausted_stream(broker: &dyn Broker, ctx: &Ctx) -> String {
    let full = ctx.key("full");
    broker
        .xadd(NewEntry::new(&full, fields("last")).with_id(StreamId::MAX))
        .await
        .expect("xadd at the largest id");
    full
}

/// `settle`: an item whose append fails is `Failed` with the error's text
/// and stays pending; the items before and after it settle as usual. An
/// item's appends before the failing one stay written.
pub async fn settle_fails_an_item_alone(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    let results = ctx.key("results");
    let full = exhausted_stream(broker, ctx).await;
    let settle = Settle::new(&tasks, "g", "w")
        .item(SettleItem::new(id(1)).append(NewEntry::new(&results, fields("ok 1"))))
        .item(
            SettleItem::new(id(2))
                .append(NewEntry::new(&results, fields("written 2")))
                .append(NewEntry::new(&full, fields("fails 2"))),
        )
        .item(SettleItem::new(id(3)).append(NewEntry::new(&results, fields("ok 3"))));
    let outcomes = broker.settle(settle).await.expect("settle");
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(
        matches!(&outcomes[0], Settled::Done(ids) if ids.len() == 1),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[1], Settled::Failed(why) if why.contains("exhausted the last possible ID")),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[2], Settled::Done(ids) if ids.len() == 1),
        "{outcomes:?}"
    );
    let stored = broker
        .xrange(&results, crate::ALL_IDS, None)
        .await
        .expect("xrange");
    let values: Vec<_> = stored.iter().map(|e| e.fields.get_str("n")).collect();
    assert_eq!(values, [Some("ok 1"), Some("written 2"), Some("ok 3")]);
    assert_eq!(broker.xlen(&full).await.expect("xlen"), 1);
    assert_eq!(
        pending_owners(broker, &tasks, "g").await,
        vec![(id(2), "w".to_owned(), 1)],
        "only the failed item stays pending"
    );
}

/// `settle`: a batch larger than a backend's chunk (Redis sends at most 128
/// items per script call) settles exactly, item by item, in order.
pub async fn settle_settles_large_batches_exactly(broker: &dyn Broker, ctx: &Ctx) {
    const ITEMS: u64 = 300;
    let tasks = ctx.key("tasks");
    let results = ctx.key("results");
    seed(broker, &tasks, ITEMS).await;
    group_from_start(broker, &tasks, "g").await;
    read_new(broker, &tasks, "g", "w", 0).await;
    // Items at the chunk edges are not owned any more.
    let acked = [id(128), id(129), id(257)];
    assert_eq!(broker.ack(&tasks, "g", &acked).await.expect("ack"), 3);
    let mut settle = Settle::new(&tasks, "g", "w");
    for ms in 1..=ITEMS {
        settle = settle.item(SettleItem::new(id(ms)).append(NewEntry::new(&results, fields(ms))));
    }
    let outcomes = broker.settle(settle).await.expect("settle");
    assert_eq!(outcomes.len(), 300);
    for (ms, outcome) in (1..=ITEMS).zip(&outcomes) {
        if acked.contains(&id(ms)) {
            assert_eq!(outcome, &Settled::NotOwned, "{ms}");
        } else {
            assert!(
                matches!(outcome, Settled::Done(ids) if ids.len() == 1),
                "{ms}: {outcome:?}"
            );
        }
    }
    let stored = broker
        .xrange(&results, crate::ALL_IDS, None)
        .await
        .expect("xrange");
    let values: Vec<u64> = stored
        .iter()
        .filter_map(|e| e.fields.get_str("n")?.parse().ok())
        .collect();
    let expected: Vec<u64> = (1..=ITEMS).filter(|ms| !acked.contains(&id(*ms))).collect();
    assert_eq!(values, expected);
    assert!(pending_owners(broker, &tasks, "g").await.is_empty());
}

/// `renew`: the consumer's own entries get their idle time reset, their
/// delivery count unchanged.
pub async fn renew_resets_idle_of_own_entries(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    tokio::time::sleep(IDLE_WAIT).await;
    let renewed = broker
        .renew(&tasks, "g", "w", &[id(1), id(3)])
        .await
        .expect("renew");
    assert_eq!(renewed, vec![id(1), id(3)]);
    for (entry, renewed) in [(id(1), true), (id(2), false), (id(3), true)] {
        let row = pending_row(broker, &tasks, "g", entry)
            .await
            .expect("still pending");
        assert_eq!((row.consumer.as_str(), row.deliveries), ("w", 1));
        assert_eq!(row.idle < IDLE_THRESHOLD, renewed, "{entry}: {row:?}");
    }
}

/// `renew`: entries of other consumers, ids not pending and deleted entries
/// are not renewed, and their owners stay as they were.
pub async fn renew_never_takes_entries_of_others(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    tokio::time::sleep(IDLE_WAIT).await;
    broker
        .claim(&tasks, "g", "rescuer", IDLE_THRESHOLD, &[id(1)])
        .await
        .expect("claim");
    broker.ack(&tasks, "g", &[id(2)]).await.expect("ack");
    broker.xdel(&tasks, &[id(3)]).await.expect("xdel");
    let renewed = broker
        .renew(
            &tasks,
            "g",
            "w",
            &[id(1), id(2), id(3), StreamId::new(99, 0)],
        )
        .await
        .expect("renew");
    assert_eq!(renewed, Vec::<StreamId>::new());
    let owners = pending_owners(broker, &tasks, "g").await;
    assert_eq!(owners.first(), Some(&(id(1), "rescuer".to_owned(), 2)));
}

/// `renew`: a deleted entry of the consumer's stays pending for it.
pub async fn renew_leaves_deleted_entries_pending(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = three_delivered(broker, ctx).await;
    broker.xdel(&tasks, &[id(2)]).await.expect("xdel");
    let renewed = broker
        .renew(&tasks, "g", "w", &[id(1), id(2)])
        .await
        .expect("renew");
    assert_eq!(renewed, vec![id(1)]);
    let owners = pending_owners(broker, &tasks, "g").await;
    assert!(
        owners
            .iter()
            .any(|(pending, owner, _)| *pending == id(2) && owner == "w"),
        "the deleted entry stays pending for its consumer: {owners:?}"
    );
}
