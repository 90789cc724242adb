//! Cases for `XINFO STREAM`, `XINFO GROUPS` and `XINFO CONSUMERS`.

use std::time::Duration;

use crate::{Broker, ErrorKind, GroupStart, StreamEntry, StreamId};

use super::Ctx;
use super::support::{
    IDLE_THRESHOLD, IDLE_WAIT, NOT_IDLE_ENOUGH, add_at, expect_kind, fields, group_from_start,
    group_info, id, read_history, read_new, seed,
};

/// `(entries_read, lag)` of `group`.
async fn progress(broker: &dyn Broker, stream: &str, group: &str) -> (Option<u64>, Option<u64>) {
    let info = group_info(broker, stream, group).await;
    (info.entries_read, info.lag)
}

/// The entry `<ms>-0` as [`super::support::seed`] writes it.
fn seeded(ms: u64) -> Option<StreamEntry> {
    Some(StreamEntry {
        id: id(ms),
        fields: fields(ms),
    })
}

/// `info_stream`: length, last generated id, max deleted id, entries added,
/// first id, group count, first and last entries.
pub async fn info_stream_reports_counters_and_edges(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, "g1").await;
    group_from_start(broker, &stream, "g2").await;
    let info = broker.info_stream(&stream).await.expect("info stream");
    assert_eq!(info.length, 3);
    assert_eq!(info.last_generated_id, id(3));
    assert_eq!(info.max_deleted_entry_id, StreamId::ZERO);
    assert_eq!(info.entries_added, 3);
    assert_eq!(info.recorded_first_entry_id, id(1));
    assert_eq!(info.groups, 2);
    assert_eq!((info.first_entry, info.last_entry), (seeded(1), seeded(3)));

    // Deleting the middle entry, then the last.
    broker.xdel(&stream, &[id(2)]).await.expect("xdel 2-0");
    let info = broker.info_stream(&stream).await.expect("info stream");
    assert_eq!((info.length, info.max_deleted_entry_id), (2, id(2)));
    assert_eq!((info.last_generated_id, info.entries_added), (id(3), 3));
    broker.xdel(&stream, &[id(3)]).await.expect("xdel 3-0");
    let info = broker.info_stream(&stream).await.expect("info stream");
    assert_eq!((info.length, info.max_deleted_entry_id), (1, id(3)));
    assert_eq!(
        info.last_generated_id,
        id(3),
        "the last id survives its entry"
    );
    assert_eq!((info.first_entry, info.last_entry), (seeded(1), seeded(1)));

    // Deleting the first entry moves the first id; emptying clears it.
    add_at(broker, &stream, 4).await;
    broker.xdel(&stream, &[id(1)]).await.expect("xdel 1-0");
    let info = broker.info_stream(&stream).await.expect("info stream");
    assert_eq!((info.length, info.recorded_first_entry_id), (1, id(4)));
    assert_eq!(
        info.max_deleted_entry_id,
        id(3),
        "the largest deleted id, not the latest"
    );
    assert_eq!(info.entries_added, 4);
    broker.xdel(&stream, &[id(4)]).await.expect("xdel 4-0");
    let info = broker
        .info_stream(&stream)
        .await
        .expect("info of an emptied stream");
    assert_eq!(info.length, 0);
    assert_eq!(info.recorded_first_entry_id, StreamId::ZERO);
    assert_eq!((info.first_entry, info.last_entry), (None, None));
    assert_eq!(
        (info.last_generated_id, info.max_deleted_entry_id),
        (id(4), id(4))
    );
    assert_eq!((info.entries_added, info.groups), (4, 2));
}

/// `info_stream` (and `info_groups`): a missing key is `NoSuchKey`.
pub async fn info_missing_key_fails(broker: &dyn Broker, ctx: &Ctx) {
    let missing = ctx.key("missing");
    expect_kind(
        broker.info_stream(&missing).await,
        ErrorKind::NoSuchKey,
        "XINFO STREAM",
    );
    // Redis answers `ERR no such key` to XINFO GROUPS and CONSUMERS too.
    expect_kind(
        broker.info_groups(&missing).await,
        ErrorKind::NoSuchKey,
        "XINFO GROUPS",
    );
    expect_kind(
        broker.info_consumers(&missing, "g").await,
        ErrorKind::NoSuchKey,
        "XINFO CONSUMERS",
    );
}

/// `info_groups`: consumers, pending, last-delivered id, entries read and lag
/// follow reads and acks; groups ordered by name.
pub async fn info_groups_tracks_reads_and_lag(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 3).await;
    // Created out of name order.
    broker
        .group_create(&stream, "late", GroupStart::Latest, false)
        .await
        .expect("create at $");
    group_from_start(broker, &stream, "early").await;
    let names: Vec<_> = broker
        .info_groups(&stream)
        .await
        .expect("info groups")
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, vec!["early", "late"]);

    // Before any read: no read counter, lag estimated from the start id.
    let early = group_info(broker, &stream, "early").await;
    assert_eq!(
        (early.consumers, early.pending, early.last_delivered_id),
        (0, 0, StreamId::ZERO)
    );
    assert_eq!((early.entries_read, early.lag), (None, Some(3)));
    let late = group_info(broker, &stream, "late").await;
    assert_eq!(
        (late.last_delivered_id, late.entries_read, late.lag),
        (id(3), None, Some(0))
    );

    read_new(broker, &stream, "early", "a", 2).await;
    let early = group_info(broker, &stream, "early").await;
    assert_eq!(
        (early.consumers, early.pending, early.last_delivered_id),
        (1, 2, id(2))
    );
    assert_eq!((early.entries_read, early.lag), (Some(2), Some(1)));

    // Acks change pending, not progress; history reads change neither.
    broker.ack(&stream, "early", &[id(1)]).await.expect("ack");
    read_history(broker, &stream, "early", "b", StreamId::ZERO).await;
    let early = group_info(broker, &stream, "early").await;
    assert_eq!(
        (early.consumers, early.pending, early.last_delivered_id),
        (2, 1, id(2))
    );
    assert_eq!((early.entries_read, early.lag), (Some(2), Some(1)));

    read_new(broker, &stream, "early", "a", 0).await;
    assert_eq!(progress(broker, &stream, "early").await, (Some(3), Some(0)));
    add_at(broker, &stream, 4).await;
    add_at(broker, &stream, 5).await;
    assert_eq!(progress(broker, &stream, "early").await, (Some(3), Some(2)));
    // A group that never had a read counter (created at `$` here) can only
    // estimate one at the stream's first or last entry: Redis 7.0 reports
    // neither counter nor lag in between.
    assert_eq!(
        progress(broker, &stream, "late").await,
        (None, None),
        "late at 3-0"
    );
    read_new(broker, &stream, "late", "a", 1).await;
    assert_eq!(
        group_info(broker, &stream, "late").await.last_delivered_id,
        id(4)
    );
    assert_eq!(
        progress(broker, &stream, "late").await,
        (None, None),
        "late at 4-0"
    );
    read_new(broker, &stream, "late", "a", 1).await;
    assert_eq!(
        progress(broker, &stream, "late").await,
        (Some(5), Some(0)),
        "late at 5-0"
    );
}

/// `info_groups`: lag is `None` while a deletion lies in the unread part of
/// the stream, and known again once the group has read to the end.
pub async fn info_groups_lag_with_deletions(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 5).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "c", 1).await;
    assert_eq!(progress(broker, &stream, group).await, (Some(1), Some(4)));

    broker.xdel(&stream, &[id(3)]).await.expect("xdel 3-0");
    assert_eq!(
        progress(broker, &stream, group).await,
        (Some(1), None),
        "3-0 deleted ahead"
    );
    // Reading before the deletion loses the read counter too, and so does
    // reading past it: Redis 7.0 recovers it only at the stream's last entry.
    read_new(broker, &stream, group, "c", 1).await;
    assert_eq!(
        progress(broker, &stream, group).await,
        (None, None),
        "at 2-0"
    );
    read_new(broker, &stream, group, "c", 1).await;
    assert_eq!(
        group_info(broker, &stream, group).await.last_delivered_id,
        id(4)
    );
    assert_eq!(
        progress(broker, &stream, group).await,
        (None, None),
        "at 4-0"
    );
    read_new(broker, &stream, group, "c", 1).await;
    assert_eq!(
        progress(broker, &stream, group).await,
        (Some(5), Some(0)),
        "at the end"
    );
    add_at(broker, &stream, 6).await;
    assert_eq!(progress(broker, &stream, group).await, (Some(5), Some(1)));

    // A deletion before the first entry leaves nothing unread behind it:
    // lag stays known.
    let front = ctx.key("front");
    seed(broker, &front, 5).await;
    group_from_start(broker, &front, group).await;
    broker.xdel(&front, &[id(1)]).await.expect("xdel 1-0");
    assert_eq!(progress(broker, &front, group).await, (None, Some(4)));
    read_new(broker, &front, group, "c", 1).await;
    assert_eq!(progress(broker, &front, group).await, (Some(2), Some(3)));
}

/// `info_consumers`: each consumer's pending count and idle time since its
/// last read or claim, ordered by name.
pub async fn info_consumers_reports_pending_and_idle(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 4).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "zed", 2).await;
    tokio::time::sleep(IDLE_WAIT).await;
    read_new(broker, &stream, group, "amy", 1).await;

    let consumers = broker
        .info_consumers(&stream, group)
        .await
        .expect("info consumers");
    assert_eq!(consumers.len(), 2, "{consumers:?}");
    let (amy, zed) = (&consumers[0], &consumers[1]);
    assert_eq!((amy.name.as_str(), amy.pending), ("amy", 1));
    assert_eq!((zed.name.as_str(), zed.pending), ("zed", 2));
    assert!(amy.idle < IDLE_THRESHOLD, "amy just read: {:?}", amy.idle);
    assert!(
        zed.idle >= IDLE_WAIT && zed.idle < NOT_IDLE_ENOUGH,
        "zed read {IDLE_WAIT:?} ago: {:?}",
        zed.idle
    );

    // A claim refreshes the claimer, and moves the pending counts.
    tokio::time::sleep(IDLE_WAIT).await;
    broker
        .claim(&stream, group, "zed", Duration::ZERO, &[id(3)])
        .await
        .expect("claim");
    // An ack is neither a read nor a claim.
    broker.ack(&stream, group, &[id(1)]).await.expect("ack");
    let consumers = broker
        .info_consumers(&stream, group)
        .await
        .expect("info consumers");
    let (amy, zed) = (&consumers[0], &consumers[1]);
    assert_eq!((amy.pending, zed.pending), (0, 2));
    assert!(
        zed.idle < IDLE_THRESHOLD,
        "zed just claimed: {:?}",
        zed.idle
    );
    assert!(amy.idle >= IDLE_WAIT, "amy idle {:?}", amy.idle);
}

/// `info_consumers`: a missing group is `NoGroup`.
pub async fn info_consumers_missing_group_is_nogroup(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 1).await;
    group_from_start(broker, &stream, "g").await;
    expect_kind(
        broker.info_consumers(&stream, "nogroup").await,
        ErrorKind::NoGroup,
        "XINFO CONSUMERS of a missing group",
    );
    assert!(
        broker
            .info_consumers(&stream, "g")
            .await
            .expect("existing group")
            .is_empty(),
        "a group without consumers lists none"
    );
}
