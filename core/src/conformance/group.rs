//! Cases for creating and destroying groups and deleting consumers.

use crate::{Broker, ErrorKind, GroupStart, StreamId};

use super::Ctx;
use super::support::{
    expect_kind, group_from_start, id, ids_of, pending_owners, read_history, read_new, seed,
};

/// `group_create`: the start id decides which entries the group sees as new.
pub async fn group_create_start_decides_what_is_new(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 2).await;
    let create = |group: &'static str, start| broker.group_create(&stream, group, start, false);
    create("whole", GroupStart::BEGINNING)
        .await
        .expect("create at 0");
    create("latest", GroupStart::Latest)
        .await
        .expect("create at $");
    create("after-first", GroupStart::After(id(1)))
        .await
        .expect("create after 1-0");
    // An id between entries, and one past the end.
    create("between", GroupStart::After(StreamId::new(1, 5)))
        .await
        .expect("create after 1-5");
    create("ahead", GroupStart::After(id(3)))
        .await
        .expect("create after 3-0");

    let stream = stream.as_str();
    let read =
        |group: &'static str| async move { ids_of(&read_new(broker, stream, group, "c", 0).await) };
    assert_eq!(read("whole").await, vec![id(1), id(2)]);
    assert_eq!(read("latest").await, vec![]);
    assert_eq!(read("after-first").await, vec![id(2)]);
    assert_eq!(read("between").await, vec![id(2)]);
    assert_eq!(read("ahead").await, vec![]);

    // `$` was fixed at creation: a later entry is new to every group but
    // "ahead", whose start (3-0) is still above it.
    let third = StreamId::new(2, 1);
    broker
        .xadd(crate::NewEntry::new(stream, super::support::fields("late")).with_id(third))
        .await
        .expect("xadd");
    for group in ["whole", "latest", "after-first", "between"] {
        assert_eq!(read(group).await, vec![third], "group {group}");
    }
    assert_eq!(read("ahead").await, vec![], "group ahead");
    super::support::add_at(broker, stream, 4).await;
    assert_eq!(read("ahead").await, vec![id(4)], "group ahead, after 3-0");
}

/// `group_create`: a second group with the same name is `GroupExists`.
pub async fn group_create_twice_is_busygroup(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, "g").await;
    read_new(broker, &stream, "g", "c", 1).await;
    expect_kind(
        broker
            .group_create(&stream, "g", GroupStart::BEGINNING, false)
            .await,
        ErrorKind::GroupExists,
        "second create at 0",
    );
    expect_kind(
        broker
            .group_create(&stream, "g", GroupStart::Latest, true)
            .await,
        ErrorKind::GroupExists,
        "second create at $ with MKSTREAM",
    );
    // The existing group is left as it was.
    let info = super::support::group_info(broker, &stream, "g").await;
    assert_eq!((info.last_delivered_id, info.pending), (id(1), 1));
    // The same name on another stream is another group.
    broker
        .group_create(&ctx.key("other"), "g", GroupStart::BEGINNING, true)
        .await
        .expect("same name, other stream");
}

/// `group_create`: a missing key is `NoSuchKey` unless `mkstream`.
pub async fn group_create_requires_key_unless_mkstream(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    expect_kind(
        broker
            .group_create(&stream, "g", GroupStart::BEGINNING, false)
            .await,
        ErrorKind::NoSuchKey,
        "create on a missing key",
    );
    expect_kind(
        broker.info_stream(&stream).await,
        ErrorKind::NoSuchKey,
        "nothing was created",
    );
    broker
        .group_create(&stream, "g", GroupStart::Latest, true)
        .await
        .expect("create with MKSTREAM");
    let info = broker.info_stream(&stream).await.expect("info stream");
    assert_eq!((info.length, info.groups), (0, 1));
    assert_eq!(info.last_generated_id, StreamId::ZERO);
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 0);
    // The group works on the new stream.
    let added = super::support::add_at(broker, &stream, 1).await;
    assert_eq!(
        ids_of(&read_new(broker, &stream, "g", "c", 0).await),
        vec![added]
    );
}

/// `group_destroy`: `true` once then `false`, pending entries go with it;
/// a missing key is `NoSuchKey`.
pub async fn group_destroy_reports_existence(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, "g").await;
    group_from_start(broker, &stream, "kept").await;
    read_new(broker, &stream, "g", "c", 2).await;
    read_new(broker, &stream, "kept", "c", 1).await;

    assert!(broker.group_destroy(&stream, "g").await.expect("destroy"));
    assert!(
        !broker
            .group_destroy(&stream, "g")
            .await
            .expect("destroy again")
    );
    assert!(
        !broker
            .group_destroy(&stream, "never")
            .await
            .expect("destroy unknown")
    );
    expect_kind(
        broker.pending_summary(&stream, "g").await,
        ErrorKind::NoGroup,
        "pending of a destroyed group",
    );
    expect_kind(
        broker.group_destroy(&ctx.key("missing"), "g").await,
        ErrorKind::NoSuchKey,
        "destroy on a missing key",
    );
    // The stream and the other group are untouched.
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 3);
    let groups = broker.info_groups(&stream).await.expect("info groups");
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].name.as_str(), groups[0].pending), ("kept", 1));

    // A group created again with that name starts empty.
    group_from_start(broker, &stream, "g").await;
    let summary = broker.pending_summary(&stream, "g").await.expect("summary");
    assert_eq!(summary.count, 0);
    assert_eq!(
        broker
            .info_consumers(&stream, "g")
            .await
            .expect("consumers"),
        vec![]
    );
    assert_eq!(
        ids_of(&read_new(broker, &stream, "g", "c", 0).await),
        vec![id(1), id(2), id(3)]
    );
}

/// `consumer_delete`: returns the consumer's pending count and drops its
/// entries; unknown consumer 0; missing group `NoGroup`.
pub async fn consumer_delete_drops_its_pending_entries(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 4).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "c1", 2).await;
    read_new(broker, &stream, group, "c2", 1).await;

    assert_eq!(
        broker
            .consumer_delete(&stream, group, "c1")
            .await
            .expect("delete c1"),
        2
    );
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(3), "c2".to_owned(), 1)],
        "only c2's entry is left"
    );
    let consumers = broker
        .info_consumers(&stream, group)
        .await
        .expect("consumers");
    assert_eq!(
        consumers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["c2"]
    );
    // Its entries are not redelivered: they were delivered to the group.
    assert_eq!(
        ids_of(&read_new(broker, &stream, group, "c1", 0).await),
        vec![id(4)]
    );
    assert_eq!(
        read_history(broker, &stream, group, "c1", StreamId::ZERO)
            .await
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![id(4)],
        "a new c1 owns only what it read since"
    );

    assert_eq!(
        broker
            .consumer_delete(&stream, group, "nobody")
            .await
            .expect("delete unknown consumer"),
        0
    );
    // A consumer without pending entries is deleted with count 0.
    read_new(broker, &stream, group, "idle", 0).await;
    read_history(broker, &stream, group, "idle", StreamId::ZERO).await;
    assert_eq!(
        broker
            .consumer_delete(&stream, group, "idle")
            .await
            .expect("delete idle"),
        0
    );
    expect_kind(
        broker.consumer_delete(&stream, "nogroup", "c2").await,
        ErrorKind::NoGroup,
        "delete in a missing group",
    );
    // Redis: `ERR The XGROUP subcommand requires the key to exist`.
    expect_kind(
        broker
            .consumer_delete(&ctx.key("missing"), group, "c2")
            .await,
        ErrorKind::NoSuchKey,
        "delete on a missing key",
    );
}
