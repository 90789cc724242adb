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
