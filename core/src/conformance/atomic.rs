//! Cases for the atomic step that acknowledges and appends together.

use crate::{
    Ack, AckAndAdd, AckAndAddReply, Broker, Delete, ErrorKind, Fields, NewEntry, StreamId, Trim,
};

use super::Ctx;
use super::support::{
    all_ids, expect_kind, fields, group_from_start, id, pending_owners, read_new, seed,
};

/// `ack_and_add`: every ack and every append is applied; the reply has each
/// ack's count and each append's id.
pub async fn ack_and_add_applies_both(broker: &dyn Broker, ctx: &Ctx) {
    let (tasks, results, dlq) = (ctx.key("tasks"), ctx.key("results"), ctx.key("dlq"));
    seed(broker, &tasks, 3).await;
    group_from_start(broker, &tasks, "g").await;
    read_new(broker, &tasks, "g", "w", 0).await;
    let before = broker
        .xadd(NewEntry::new(&results, fields("earlier")))
        .await
        .expect("xadd");

    let step = AckAndAdd::new()
        .ack(Ack::new(&tasks, "g", vec![id(1), id(2)]))
        .append(NewEntry::new(&results, fields("ok")))
        .append(NewEntry::new(&dlq, fields("dead")).with_trim(Trim::max_len(10)))
        .append(NewEntry::new(&results, fields("ok again")));
    let reply = broker.ack_and_add(step).await.expect("ack_and_add");
    assert_eq!(reply.acked, vec![2]);
    assert_eq!(reply.ids.len(), 3, "{reply:?}");
    assert!(
        reply.ids[0] > before && reply.ids[2] > reply.ids[0],
        "{reply:?}"
    );

    assert_eq!(
        pending_owners(broker, &tasks, "g").await,
        vec![(id(3), "w".to_owned(), 1)]
    );
    let stored = broker
        .xrange(&results, crate::ALL_IDS, None)
        .await
        .expect("xrange results");
    let stored: Vec<_> = stored.into_iter().map(|e| (e.id, e.fields)).collect();
    assert_eq!(
        stored,
        vec![
            (before, fields("earlier")),
            (reply.ids[0], fields("ok")),
            (reply.ids[2], fields("ok again"))
        ]
    );
    let dead = broker
        .xrange(&dlq, crate::ALL_IDS, None)
        .await
        .expect("xrange dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id, &dead[0].fields),
        (reply.ids[1], &fields("dead"))
    );

    // An empty step does nothing and says so.
    assert_eq!(
        broker
            .ack_and_add(AckAndAdd::new())
            .await
            .expect("empty step"),
        AckAndAddReply::default()
    );
    // Acks alone, and appends alone, work too.
    let reply = broker
        .ack_and_add(AckAndAdd::new().ack(Ack::new(&tasks, "g", vec![id(3), id(3)])))
        .await
        .expect("acks only");
    assert_eq!((reply.acked, reply.ids), (vec![1], vec![]));
    let reply = broker
        .ack_and_add(AckAndAdd::new().append(NewEntry::new(&dlq, fields("more"))))
        .await
        .expect("appends only");
    assert_eq!(reply.acked, Vec::<u64>::new());
    assert_eq!(reply.ids.len(), 1);
    assert_eq!(broker.xlen(&dlq).await.expect("xlen"), 2);
}

/// `ack_and_add`: acks of a missing group or key count 0 and the appends
/// still happen.
pub async fn ack_and_add_reports_each_ack(broker: &dyn Broker, ctx: &Ctx) {
    let (tasks, other, results) = (ctx.key("tasks"), ctx.key("other"), ctx.key("results"));
    seed(broker, &tasks, 2).await;
    seed(broker, &other, 2).await;
    group_from_start(broker, &tasks, "g").await;
    group_from_start(broker, &other, "g").await;
    read_new(broker, &tasks, "g", "w", 0).await;
    read_new(broker, &other, "g", "w", 1).await;

    let step = AckAndAdd::new()
        .ack(Ack::new(&tasks, "g", vec![id(1)]))
        .ack(Ack::new(&tasks, "nogroup", vec![id(2)]))
        .ack(Ack::new(ctx.key("missing"), "g", vec![id(1)]))
        // 2-0 of `other` was never delivered.
        .ack(Ack::new(&other, "g", vec![id(1), id(2)]))
        .ack(Ack::new(&tasks, "g", vec![id(1), id(2)]))
        .append(NewEntry::new(&results, fields("ok")));
    let reply = broker.ack_and_add(step).await.expect("ack_and_add");
    // Acks apply in order: 1-0 was already gone for the last one.
    assert_eq!(reply.acked, vec![1, 0, 0, 1, 1]);
    assert_eq!(reply.ids.len(), 1);
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 1);
    assert!(pending_owners(broker, &tasks, "g").await.is_empty());
    assert!(pending_owners(broker, &other, "g").await.is_empty());
    expect_kind(
        broker.info_stream(&ctx.key("missing")).await,
        ErrorKind::NoSuchKey,
        "an ack creates no key",
    );
}

/// `ack_and_add`: an explicit id or an entry without fields fails the whole
/// step with `InvalidArgument`, before anything applies.
pub async fn ack_and_add_rejects_malformed_steps_whole(broker: &dyn Broker, ctx: &Ctx) {
    let (tasks, results) = (ctx.key("tasks"), ctx.key("results"));
    seed(broker, &tasks, 2).await;
    group_from_start(broker, &tasks, "g").await;
    read_new(broker, &tasks, "g", "w", 0).await;
    let ack = || Ack::new(&tasks, "g", vec![id(1), id(2)]);
    let good = || NewEntry::new(&results, fields("ok"));

    let malformed = [
        // An explicit id, even one that would be accepted.
        AckAndAdd::new()
            .ack(ack())
            .append(good())
            .append(NewEntry::new(&results, fields("x")).with_id(StreamId::new(u64::MAX, 0))),
        // An explicit id first.
        AckAndAdd::new()
            .append(NewEntry::new(&results, fields("x")).with_id(id(1)))
            .ack(ack()),
        // An entry without fields, last.
        AckAndAdd::new()
            .ack(ack())
            .append(good())
            .append(NewEntry::new(&results, Fields::new())),
    ];
    for (n, step) in malformed.into_iter().enumerate() {
        expect_kind(
            broker.ack_and_add(step).await,
            ErrorKind::InvalidArgument,
            &format!("malformed step {n}"),
        );
        assert_eq!(
            pending_owners(broker, &tasks, "g").await,
            vec![(id(1), "w".to_owned(), 1), (id(2), "w".to_owned(), 1)],
            "step {n}: nothing acknowledged"
        );
        expect_kind(
            broker.info_stream(&results).await,
            ErrorKind::NoSuchKey,
            &format!("step {n}: nothing appended"),
        );
    }
    // The same step, well formed, applies.
    let reply = broker
        .ack_and_add(AckAndAdd::new().ack(ack()).append(good()))
        .await
        .expect("well-formed step");
    assert_eq!((reply.acked, reply.ids.len()), (vec![2], 1));
}

/// `ack_and_add`: deletions apply in the same step as the appends, as when a
/// dead letter is replayed to its stream; each deletion counts the entries
/// that existed.
pub async fn ack_and_add_deletes_in_the_same_step(broker: &dyn Broker, ctx: &Ctx) {
    let (tasks, dlq) = (ctx.key("tasks"), ctx.key("dlq"));
    seed(broker, &dlq, 3).await;
    let step = AckAndAdd::new()
        .append(NewEntry::new(&tasks, fields("replayed")))
        .delete(Delete::new(&dlq, vec![id(2), StreamId::new(99, 0)]))
        .delete(Delete::new(&dlq, vec![]));
    let reply = broker.ack_and_add(step).await.expect("ack_and_add");
    assert_eq!(reply.deleted, vec![1, 0], "{reply:?}");
    assert_eq!(reply.ids.len(), 1, "{reply:?}");
    assert_eq!(all_ids(broker, &dlq).await, vec![id(1), id(3)]);
    assert_eq!(all_ids(broker, &tasks).await, reply.ids);
}
