//! Cases for consumer-group reads: new entries, own history, blocking.

use std::time::Duration;

use crate::{Broker, ErrorKind, NewEntry, ReadGroup, StreamId};

use super::Ctx;
use super::support::{
    IDLE_THRESHOLD, IDLE_WAIT, add_at, expect_kind, fields, group_from_start, group_info, id,
    ids_of, pending_owners, pending_row, read_history, read_new, seed,
};

/// `read_group`: `New` gives each entry to one consumer of a group; groups
/// are independent.
pub async fn read_new_delivers_each_entry_once_per_group(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 4).await;
    group_from_start(broker, &stream, "g1").await;
    group_from_start(broker, &stream, "g2").await;

    let c1 = read_new(broker, &stream, "g1", "c1", 2).await;
    let c2 = read_new(broker, &stream, "g1", "c2", 10).await;
    assert_eq!(ids_of(&c1), vec![id(1), id(2)]);
    assert_eq!(ids_of(&c2), vec![id(3), id(4)]);
    assert_eq!(c1[0].fields, Some(fields(1)), "new entries carry fields");
    assert!(read_new(broker, &stream, "g1", "c1", 10).await.is_empty());
    assert!(read_new(broker, &stream, "g1", "c3", 10).await.is_empty());

    // The other group still sees everything.
    assert_eq!(
        ids_of(&read_new(broker, &stream, "g2", "c1", 0).await),
        vec![id(1), id(2), id(3), id(4)]
    );
    // An entry added later goes to whichever consumer reads first, once.
    add_at(broker, &stream, 5).await;
    assert_eq!(
        ids_of(&read_new(broker, &stream, "g1", "c2", 10).await),
        vec![id(5)]
    );
    assert!(read_new(broker, &stream, "g1", "c1", 10).await.is_empty());
    assert_eq!(
        ids_of(&read_new(broker, &stream, "g2", "c9", 10).await),
        vec![id(5)]
    );
}

/// `read_group`: `New` adds the entries to the pending list, owned by the
/// reader with one delivery, and advances the last-delivered id.
pub async fn read_new_adds_to_pending_with_one_delivery(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, group).await;
    assert_eq!(
        group_info(broker, &stream, group).await.last_delivered_id,
        StreamId::ZERO
    );

    read_new(broker, &stream, group, "alice", 2).await;
    read_new(broker, &stream, group, "bob", 1).await;
    let (alice, bob) = ("alice".to_owned(), "bob".to_owned());
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![
            (id(1), alice.clone(), 1),
            (id(2), alice, 1),
            (id(3), bob, 1)
        ]
    );
    let info = group_info(broker, &stream, group).await;
    assert_eq!((info.last_delivered_id, info.pending), (id(3), 3));
}

/// `read_group`: `count` limits a read; `Some(0)` is no limit.
pub async fn read_honours_count(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 6).await;
    group_from_start(broker, &stream, group).await;
    assert_eq!(
        ids_of(&read_new(broker, &stream, group, "c", 2).await),
        vec![id(1), id(2)]
    );
    assert_eq!(
        ids_of(&read_new(broker, &stream, group, "c", 1).await),
        vec![id(3)]
    );
    assert_eq!(
        ids_of(&read_new(broker, &stream, group, "c", 0).await),
        vec![id(4), id(5), id(6)],
        "COUNT 0 is no limit"
    );
    // No count at all is no limit either.
    add_at(broker, &stream, 7).await;
    add_at(broker, &stream, 8).await;
    let all = broker
        .read_group(&ReadGroup::new(&stream, group, "c"))
        .await
        .expect("read without count");
    assert_eq!(ids_of(&all), vec![id(7), id(8)]);

    // Count applies to history reads too.
    let history = |count| {
        let read = ReadGroup::new(&stream, group, "c")
            .pending_after(StreamId::ZERO)
            .count(count);
        async move { broker.read_group(&read).await }
    };
    assert_eq!(
        ids_of(&history(3).await.expect("history count 3")),
        vec![id(1), id(2), id(3)]
    );
    assert_eq!(history(0).await.expect("history count 0").len(), 8);
}

/// `read_group`: `PendingAfter(id)` returns the reader's own pending entries
/// after `id`.
pub async fn read_history_returns_own_pending_after_id(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 5).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "c1", 3).await;
    read_new(broker, &stream, group, "c2", 1).await;
    broker.ack(&stream, group, &[id(2)]).await.expect("ack 2-0");

    let own = |consumer: &'static str, after| read_history(broker, &stream, group, consumer, after);
    let c1 = own("c1", StreamId::ZERO).await;
    assert_eq!(ids_of(&c1), vec![id(1), id(3)], "own, unacknowledged");
    assert_eq!(c1[0].fields, Some(fields(1)), "history carries fields");
    assert_eq!(
        ids_of(&own("c1", id(1)).await),
        vec![id(3)],
        "exclusive of the id"
    );
    assert_eq!(ids_of(&own("c1", StreamId::new(1, 1)).await), vec![id(3)]);
    assert!(own("c1", id(3)).await.is_empty(), "nothing after the last");
    assert_eq!(ids_of(&own("c2", StreamId::ZERO).await), vec![id(4)]);
    assert!(
        own("c3", StreamId::ZERO).await.is_empty(),
        "a new consumer owns nothing"
    );
    // History reads never deliver new entries: 5-0 is still undelivered.
    assert_eq!(
        ids_of(&read_new(broker, &stream, group, "c3", 0).await),
        vec![id(5)]
    );
}

/// `read_group`: reading history counts a delivery and resets idle time.
pub async fn read_history_counts_a_delivery(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 2).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "c", 0).await;
    tokio::time::sleep(IDLE_WAIT).await;

    let before = pending_row(broker, &stream, group, id(1))
        .await
        .expect("pending 1-0");
    assert!(
        before.idle >= IDLE_WAIT,
        "idle {:?} after {IDLE_WAIT:?}",
        before.idle
    );
    // Only entries after 1-0 are re-read: 2-0 counts a delivery, 1-0 not.
    read_history(broker, &stream, group, "c", id(1)).await;
    let first = pending_row(broker, &stream, group, id(1))
        .await
        .expect("pending 1-0");
    let second = pending_row(broker, &stream, group, id(2))
        .await
        .expect("pending 2-0");
    assert_eq!((first.deliveries, second.deliveries), (1, 2));
    assert!(
        first.idle >= IDLE_WAIT,
        "1-0 was not re-read: idle {:?}",
        first.idle
    );
    assert!(
        second.idle < IDLE_THRESHOLD,
        "re-read resets idle: {:?}",
        second.idle
    );

    read_history(broker, &stream, group, "c", StreamId::ZERO).await;
    read_history(broker, &stream, group, "c", StreamId::ZERO).await;
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(1), "c".to_owned(), 3), (id(2), "c".to_owned(), 4)]
    );
}

/// `read_group`: deleted history entries come back with `fields: None` and
/// their delivery count unchanged.
pub async fn read_history_returns_deleted_entries_without_fields(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "c", 0).await;
    broker.xdel(&stream, &[id(2)]).await.expect("xdel");

    let history = read_history(broker, &stream, group, "c", StreamId::ZERO).await;
    assert_eq!(ids_of(&history), vec![id(1), id(2), id(3)]);
    assert_eq!(history[0].fields, Some(fields(1)));
    assert_eq!(history[1].fields, None, "2-0 was deleted");
    assert_eq!(history[2].fields, Some(fields(3)));
    let c = "c".to_owned();
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(1), c.clone(), 2), (id(2), c.clone(), 1), (id(3), c, 2)],
        "the deleted entry stays pending, its count unchanged"
    );
}

/// `read_group`: history reads return at once, even with `block`.
pub async fn read_history_ignores_block(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 1).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "c", 0).await;
    let history = |consumer: &str, after| {
        ReadGroup::new(&stream, group, consumer)
            .pending_after(after)
            .block(Duration::from_secs(5))
    };

    // A blocking read would take 5s (virtual or real); these return at once.
    let start = tokio::time::Instant::now();
    let own = broker
        .read_group(&history("c", StreamId::ZERO))
        .await
        .expect("history with block");
    assert_eq!(ids_of(&own), vec![id(1)]);
    let nothing = broker
        .read_group(&history("c", id(1)))
        .await
        .expect("empty history with block");
    assert!(nothing.is_empty(), "{nothing:?}");
    let stranger = broker
        .read_group(&history("other", StreamId::ZERO))
        .await
        .expect("stranger's history with block");
    assert!(stranger.is_empty(), "{stranger:?}");
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "history reads blocked for {elapsed:?}"
    );
}

/// `read_group`: a missing key or group is `NoGroup`, for every kind of read.
pub async fn read_missing_group_is_nogroup(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let missing = ctx.key("missing");
    seed(broker, &stream, 1).await;
    group_from_start(broker, &stream, "g").await;
    let reads = [
        ReadGroup::new(&missing, "g", "c"),
        ReadGroup::new(&stream, "nogroup", "c"),
        ReadGroup::new(&stream, "nogroup", "c").pending_after(StreamId::ZERO),
        ReadGroup::new(&missing, "g", "c").pending_after(StreamId::ZERO),
        // Redis answers NOGROUP at once rather than blocking.
        ReadGroup::new(&stream, "nogroup", "c").block(Duration::from_secs(5)),
        ReadGroup::new(&missing, "g", "c").block(Duration::from_secs(5)),
    ];
    for read in &reads {
        expect_kind(
            broker.read_group(read).await,
            ErrorKind::NoGroup,
            &format!("{read:?}"),
        );
    }
    // Reads of a group never create the key.
    expect_kind(
        broker.info_stream(&missing).await,
        ErrorKind::NoSuchKey,
        "missing key",
    );
}

/// `read_group`: a blocking read with nothing new times out empty.
pub async fn read_block_times_out_empty(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    group_from_start(broker, &stream, group).await;
    let block = Duration::from_millis(100);
    let start = tokio::time::Instant::now();
    let got = broker
        .read_group(&ReadGroup::new(&stream, group, "c").count(10).block(block))
        .await
        .expect("blocking read");
    assert!(got.is_empty(), "{got:?}");
    // It did wait (on paused time, the clock moved by the timeout).
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(90),
        "returned after {waited:?}"
    );

    // Entries already delivered do not wake it either.
    add_at(broker, &stream, 1).await;
    read_new(broker, &stream, group, "other", 0).await;
    let got = broker
        .read_group(&ReadGroup::new(&stream, group, "c").block(block))
        .await
        .expect("blocking read");
    assert!(got.is_empty(), "{got:?}");
}

/// `read_group`: a blocked read is woken by an append to its stream.
pub async fn read_block_is_woken_by_append(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    let other = ctx.key("other");
    group_from_start(broker, &stream, group).await;
    let read = ReadGroup::new(&stream, group, "c")
        .count(10)
        .block(Duration::from_secs(5));
    let append = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // An append to another stream must not wake the reader.
        broker
            .xadd(NewEntry::new(&other, fields("elsewhere")))
            .await
            .expect("xadd elsewhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
        broker
            .xadd(NewEntry::new(&stream, fields("wake")))
            .await
            .expect("xadd")
    };
    let (got, added) = tokio::join!(broker.read_group(&read), append);
    let got = got.expect("blocking read");
    assert_eq!(
        ids_of(&got),
        vec![added],
        "the read returned the appended entry"
    );
    assert_eq!(got[0].fields, Some(fields("wake")));
    // It was delivered the usual way: pending, owned by the reader.
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(added, "c".to_owned(), 1)]
    );
    assert_eq!(
        group_info(broker, &stream, group).await.last_delivered_id,
        added
    );
}

/// `read_group`: reading creates the consumer and resets its idle time.
pub async fn read_creates_the_consumer(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 2).await;
    group_from_start(broker, &stream, group).await;
    let consumers = || async {
        broker
            .info_consumers(&stream, group)
            .await
            .expect("info consumers")
            .into_iter()
            .map(|c| (c.name, c.pending, c.idle))
            .collect::<Vec<_>>()
    };
    assert!(consumers().await.is_empty(), "a new group has no consumers");

    // A read that delivers creates its reader.
    read_new(broker, &stream, group, "reader", 1).await;
    // So does a history read, even one that returns nothing.
    read_history(broker, &stream, group, "historian", StreamId::ZERO).await;
    let now = consumers().await;
    let names: Vec<_> = now.iter().map(|(n, p, _)| (n.as_str(), *p)).collect();
    assert_eq!(names, vec![("historian", 0), ("reader", 1)]);
    assert_eq!(group_info(broker, &stream, group).await.consumers, 2);

    // Reading again resets idle time.
    tokio::time::sleep(IDLE_WAIT).await;
    read_new(broker, &stream, group, "reader", 1).await;
    read_history(broker, &stream, group, "historian", StreamId::ZERO).await;
    for (name, _, idle) in consumers().await {
        assert!(idle < IDLE_THRESHOLD, "{name} read just now, idle {idle:?}");
    }
}
