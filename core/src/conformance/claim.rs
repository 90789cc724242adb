//! Cases for taking over pending entries: `XCLAIM` (with and without
//! `JUSTID`) and `XAUTOCLAIM`.

use std::time::Duration;

use crate::{Broker, ErrorKind, StreamEntry, StreamId};

use super::Ctx;
use super::support::{
    IDLE_THRESHOLD, IDLE_WAIT, NOT_IDLE_ENOUGH, expect_kind, fields, group_from_start, id,
    pending_owners, pending_row, read_new, seed,
};

/// The ids of claimed entries.
fn claimed_ids(entries: &[StreamEntry]) -> Vec<StreamId> {
    entries.iter().map(|e| e.id).collect()
}

/// `(name, pending)` of every consumer of `group`.
async fn consumer_counts(broker: &dyn Broker, stream: &str, group: &str) -> Vec<(String, u64)> {
    broker
        .info_consumers(stream, group)
        .await
        .expect("info consumers")
        .into_iter()
        .map(|c| (c.name, c.pending))
        .collect()
}

/// `claim`: moves ownership to the claimer (created if missing), counts a
/// delivery and resets idle.
pub async fn claim_moves_ownership_and_counts_a_delivery(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "old", 0).await;
    tokio::time::sleep(IDLE_WAIT).await;

    let claimed = broker
        .claim(&stream, group, "new", IDLE_THRESHOLD, &[id(2), id(1)])
        .await
        .expect("claim");
    // Returned in the order asked, with their fields.
    assert_eq!(claimed_ids(&claimed), vec![id(2), id(1)]);
    assert_eq!(claimed[0].fields, fields(2));
    let (old, new) = ("old".to_owned(), "new".to_owned());
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![
            (id(1), new.clone(), 2),
            (id(2), new.clone(), 2),
            (id(3), old.clone(), 1)
        ]
    );
    let row = pending_row(broker, &stream, group, id(1))
        .await
        .expect("1-0 pending");
    assert!(
        row.idle < IDLE_THRESHOLD,
        "claim resets idle: {:?}",
        row.idle
    );
    assert_eq!(
        consumer_counts(broker, &stream, group).await,
        vec![(new, 2), (old, 1)]
    );

    // Claiming again at once finds them not idle enough.
    let again = broker
        .claim(&stream, group, "third", IDLE_THRESHOLD, &[id(1)])
        .await
        .expect("claim again");
    assert!(again.is_empty(), "{again:?}");
    // With min_idle zero anyone may take them, counting another delivery.
    let taken = broker
        .claim(&stream, group, "third", Duration::ZERO, &[id(1)])
        .await
        .expect("claim with zero min_idle");
    assert_eq!(claimed_ids(&taken), vec![id(1)]);
    let row = pending_row(broker, &stream, group, id(1))
        .await
        .expect("1-0 pending");
    assert_eq!((row.consumer.as_str(), row.deliveries), ("third", 3));
}

/// `claim`: entries idle less than `min_idle` are left alone.
pub async fn claim_skips_entries_not_idle_enough(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 2).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "old", 1).await;
    tokio::time::sleep(IDLE_WAIT).await;
    read_new(broker, &stream, group, "old", 1).await;

    let claimed = broker
        .claim(&stream, group, "new", NOT_IDLE_ENOUGH, &[id(1), id(2)])
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "{claimed:?}");
    // Only the entry idle long enough moves.
    let claimed = broker
        .claim(&stream, group, "new", IDLE_THRESHOLD, &[id(1), id(2)])
        .await
        .expect("claim");
    assert_eq!(claimed_ids(&claimed), vec![id(1)]);
    let (old, new) = ("old".to_owned(), "new".to_owned());
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(1), new, 2), (id(2), old, 1)]
    );
    let row = pending_row(broker, &stream, group, id(2))
        .await
        .expect("2-0 pending");
    assert!(
        row.idle < IDLE_THRESHOLD,
        "a skipped entry keeps its idle: {:?}",
        row.idle
    );
}

/// `claim`: ids that are not pending are ignored.
pub async fn claim_ignores_ids_not_pending(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 3).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "old", 2).await;
    broker.ack(&stream, group, &[id(2)]).await.expect("ack");
    tokio::time::sleep(IDLE_WAIT).await;

    // 2-0 acknowledged, 3-0 never delivered, 9-0 no such entry.
    for ids in [vec![id(2)], vec![id(3)], vec![id(9)]] {
        let claimed = broker
            .claim(&stream, group, "new", Duration::ZERO, &ids)
            .await
            .expect("claim");
        assert!(claimed.is_empty(), "claim {ids:?}: {claimed:?}");
        let just = broker
            .claim_ids(&stream, group, "new", Duration::ZERO, &ids)
            .await
            .expect("claim_ids");
        assert!(just.is_empty(), "claim_ids {ids:?}: {just:?}");
    }
    let mixed = broker
        .claim(
            &stream,
            group,
            "new",
            IDLE_THRESHOLD,
            &[id(9), id(1), id(3)],
        )
        .await
        .expect("claim mixed");
    assert_eq!(claimed_ids(&mixed), vec![id(1)]);
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(1), "new".to_owned(), 2)],
        "nothing was added to the pending list"
    );
    // 3-0 is still new to the group.
    assert_eq!(
        super::support::ids_of(&read_new(broker, &stream, group, "old", 0).await),
        vec![id(3)]
    );
}

/// `claim`: entries deleted from the stream leave the pending list and are
/// not returned.
pub async fn claim_drops_deleted_entries(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 4).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "old", 0).await;
    broker.xdel(&stream, &[id(1), id(3)]).await.expect("xdel");
    tokio::time::sleep(IDLE_WAIT).await;

    let claimed = broker
        .claim(&stream, group, "new", IDLE_THRESHOLD, &[id(1), id(2)])
        .await
        .expect("claim");
    assert_eq!(claimed_ids(&claimed), vec![id(2)]);
    // JUSTID drops them as well.
    let just = broker
        .claim_ids(&stream, group, "new", IDLE_THRESHOLD, &[id(3), id(4)])
        .await
        .expect("claim_ids");
    assert_eq!(just, vec![id(4)]);
    let new = "new".to_owned();
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(2), new.clone(), 2), (id(4), new.clone(), 1)]
    );
    assert_eq!(
        consumer_counts(broker, &stream, group).await,
        vec![(new, 2), ("old".to_owned(), 0)]
    );
}

/// `claim` and `claim_ids`: a missing key or group is `NoGroup`.
pub async fn claim_missing_group_is_nogroup(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let missing = ctx.key("missing");
    seed(broker, &stream, 1).await;
    for (key, group) in [(&missing, "g"), (&stream, "nogroup")] {
        expect_kind(
            broker
                .claim(key, group, "c", Duration::ZERO, &[id(1)])
                .await,
            ErrorKind::NoGroup,
            &format!("claim on {key} {group}"),
        );
        expect_kind(
            broker
                .claim_ids(key, group, "c", Duration::ZERO, &[id(1)])
                .await,
            ErrorKind::NoGroup,
            &format!("claim_ids on {key} {group}"),
        );
    }
}

/// `claim_ids`: resets idle and moves ownership without counting a delivery.
pub async fn claim_ids_resets_idle_without_counting_a_delivery(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 2).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "w", 0).await;
    tokio::time::sleep(IDLE_WAIT).await;

    // A worker refreshing its own lease.
    let ids = broker
        .claim_ids(&stream, group, "w", Duration::ZERO, &[id(1)])
        .await
        .expect("claim_ids");
    assert_eq!(ids, vec![id(1)]);
    let row = pending_row(broker, &stream, group, id(1))
        .await
        .expect("1-0 pending");
    assert_eq!((row.consumer.as_str(), row.deliveries), ("w", 1));
    assert!(row.idle < IDLE_THRESHOLD, "refreshed: idle {:?}", row.idle);
    let other = pending_row(broker, &stream, group, id(2))
        .await
        .expect("2-0 pending");
    assert!(
        other.idle >= IDLE_WAIT,
        "2-0 untouched: idle {:?}",
        other.idle
    );

    // Honours min_idle: the refreshed entry is no longer idle enough.
    let ids = broker
        .claim_ids(&stream, group, "thief", IDLE_THRESHOLD, &[id(1), id(2)])
        .await
        .expect("claim_ids");
    assert_eq!(ids, vec![id(2)]);
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(1), "w".to_owned(), 1), (id(2), "thief".to_owned(), 1)],
        "ownership moved, delivery counts kept"
    );
}

/// `autoclaim`: claims idle entries in id order with a cursor, `0-0` at the
/// end, counting a delivery.
pub async fn autoclaim_follows_its_cursor_to_the_end(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 5).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "old", 0).await;
    tokio::time::sleep(IDLE_WAIT).await;
    let auto = |start, count| broker.autoclaim(&stream, group, "new", IDLE_THRESHOLD, start, count);

    let first = auto(StreamId::ZERO, 2).await.expect("autoclaim");
    assert_eq!(claimed_ids(&first.claimed), vec![id(1), id(2)]);
    assert_eq!(first.claimed[0].fields, fields(1));
    assert_eq!((first.next, first.deleted.clone()), (id(3), vec![]));
    let second = auto(first.next, 2).await.expect("autoclaim");
    assert_eq!(claimed_ids(&second.claimed), vec![id(3), id(4)]);
    assert_eq!(second.next, id(5), "the start is inclusive");
    let third = auto(second.next, 2).await.expect("autoclaim");
    assert_eq!(claimed_ids(&third.claimed), vec![id(5)]);
    assert_eq!(third.next, StreamId::ZERO, "done");

    let new = "new".to_owned();
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        (1..=5)
            .map(|ms| (id(ms), new.clone(), 2))
            .collect::<Vec<_>>()
    );
    // Starting over finds nothing idle enough, and reaches the end.
    let again = auto(StreamId::ZERO, 10).await.expect("autoclaim again");
    assert!(
        again.claimed.is_empty() && again.deleted.is_empty(),
        "{again:?}"
    );
    assert_eq!(again.next, StreamId::ZERO);
    // A count that ends exactly at the last entry also finishes the scan.
    tokio::time::sleep(IDLE_WAIT).await;
    let exact = auto(id(4), 2).await.expect("autoclaim to the end");
    assert_eq!(claimed_ids(&exact.claimed), vec![id(4), id(5)]);
    assert_eq!(exact.next, StreamId::ZERO);
}

/// `autoclaim`: deleted pending entries are removed and reported, and count
/// towards `count`.
pub async fn autoclaim_reports_and_removes_deleted_entries(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 4).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "old", 0).await;
    broker.xdel(&stream, &[id(2), id(3)]).await.expect("xdel");
    tokio::time::sleep(IDLE_WAIT).await;

    let first = broker
        .autoclaim(&stream, group, "new", IDLE_THRESHOLD, StreamId::ZERO, 2)
        .await
        .expect("autoclaim");
    assert_eq!(claimed_ids(&first.claimed), vec![id(1)]);
    assert_eq!(first.deleted, vec![id(2)]);
    assert_eq!(first.next, id(3), "1-0 and 2-0 used up the count");
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![
            (id(1), "new".to_owned(), 2),
            (id(3), "old".to_owned(), 1),
            (id(4), "old".to_owned(), 1)
        ]
    );

    // From the start again: 1-0 (just claimed) is skipped, 3-0 reported,
    // 4-0 claimed.
    let second = broker
        .autoclaim(&stream, group, "new", IDLE_THRESHOLD, StreamId::ZERO, 2)
        .await
        .expect("autoclaim");
    assert_eq!(claimed_ids(&second.claimed), vec![id(4)]);
    assert_eq!(second.deleted, vec![id(3)]);
    assert_eq!(second.next, StreamId::ZERO);
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![(id(1), "new".to_owned(), 2), (id(4), "new".to_owned(), 2)]
    );
    assert_eq!(
        consumer_counts(broker, &stream, group).await,
        vec![("new".to_owned(), 2), ("old".to_owned(), 0)]
    );
}

/// `autoclaim`: one call scans at most `count * 10` pending entries.
pub async fn autoclaim_scans_at_most_ten_times_count(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 25).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "old", 0).await;
    tokio::time::sleep(IDLE_WAIT).await;
    // Refresh 1-0 .. 21-0: only 22-0 .. 25-0 stay idle.
    let fresh: Vec<_> = (1..=21).map(id).collect();
    let refreshed = broker
        .claim_ids(&stream, group, "old", Duration::ZERO, &fresh)
        .await
        .expect("claim_ids");
    assert_eq!(refreshed, fresh);

    let auto = |start| broker.autoclaim(&stream, group, "new", IDLE_THRESHOLD, start, 2);
    // COUNT 2 scans 20 entries, 1-0 .. 20-0, none idle: the cursor is 21-0.
    let first = auto(StreamId::ZERO).await.expect("autoclaim");
    assert!(
        first.claimed.is_empty() && first.deleted.is_empty(),
        "{first:?}"
    );
    assert_eq!(first.next, id(21));
    let second = auto(first.next).await.expect("autoclaim");
    assert_eq!(claimed_ids(&second.claimed), vec![id(22), id(23)]);
    assert_eq!(second.next, id(24));
    let third = auto(second.next).await.expect("autoclaim");
    assert_eq!(claimed_ids(&third.claimed), vec![id(24), id(25)]);
    assert_eq!(third.next, StreamId::ZERO);
}

/// `autoclaim`: a missing key or group is `NoGroup`.
pub async fn autoclaim_missing_group_is_nogroup(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let missing = ctx.key("missing");
    seed(broker, &stream, 1).await;
    for (key, group) in [(&missing, "g"), (&stream, "nogroup")] {
        expect_kind(
            broker
                .autoclaim(key, group, "c", Duration::ZERO, StreamId::ZERO, 10)
                .await,
            ErrorKind::NoGroup,
            &format!("autoclaim on {key} {group}"),
        );
    }
}

/// `autoclaim`: a COUNT of 0 or above Redis 7.0's bound (`LONG_MAX / 16`)
/// fails with `InvalidArgument` and Redis's text.
pub async fn autoclaim_rejects_count_out_of_range(broker: &dyn Broker, ctx: &Ctx) {
    let tasks = ctx.key("tasks");
    seed(broker, &tasks, 1).await;
    group_from_start(broker, &tasks, "g").await;
    let above = usize::try_from(i64::MAX.unsigned_abs() / 16 + 1).unwrap_or(usize::MAX);
    for count in [0, above, usize::MAX] {
        let result = broker
            .autoclaim(&tasks, "g", "c", Duration::ZERO, StreamId::ZERO, count)
            .await;
        match result {
            Err(err) if err.kind() == ErrorKind::InvalidArgument => assert!(
                err.to_string().contains("ERR COUNT must be > 0"),
                "{count}: {err}"
            ),
            other => panic!("COUNT {count}: expected InvalidArgument, got {other:?}"),
        }
    }
}
