//! Cases for `autoclaim_recorded`: `XAUTOCLAIM` with a record of each
//! deleted entry written in the same atomic step.

use std::time::Duration;

use crate::{
    AddedOnce, AutoClaim, Broker, DeletedRecord, ErrorKind, Fields, NewEntry, StreamEntry, StreamId,
};

use super::Ctx;
use super::support::{
    IDLE_THRESHOLD, IDLE_WAIT, expect_kind, group_from_start, id, pending_owners, read_new, seed,
};

/// How long a case's record markers live.
const WINDOW: Duration = Duration::from_secs(60);

/// The claim `new` makes of `stream`'s idle entries, from the start.
fn scan(stream: &str, count: usize) -> AutoClaim {
    AutoClaim::new(stream, "g", "new")
        .min_idle(IDLE_THRESHOLD)
        .count(count)
}

/// A record in `ctx`'s `records` stream: a `reason`, then the id in
/// `entry_id`.
fn record(ctx: &Ctx) -> DeletedRecord {
    let template = NewEntry::new(ctx.key("records"), Fields::new().with("reason", "deleted"));
    DeletedRecord::new(template, "entry_id", ctx.key("gone:"), WINDOW)
}

/// `stream` with entries `1-0` .. `4-0` read by `old`, `2-0` and `3-0`
/// deleted, and all of them idle.
async fn two_deleted(broker: &dyn Broker, stream: &str) {
    seed(broker, stream, 4).await;
    group_from_start(broker, stream, "g").await;
    read_new(broker, stream, "g", "old", 0).await;
    broker.xdel(stream, &[id(2), id(3)]).await.expect("xdel");
    tokio::time::sleep(IDLE_WAIT).await;
}

/// Every entry of `stream`.
async fn entries(broker: &dyn Broker, stream: &str) -> Vec<StreamEntry> {
    broker
        .xrange(stream, crate::ALL_IDS, None)
        .await
        .expect("xrange")
}

/// `autoclaim_recorded`: claims as `autoclaim` does, and appends one
/// record per deleted id, in order, each holding its id; the reply carries
/// the records' ids.
pub async fn autoclaim_recorded_claims_and_records_deleted_entries(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    two_deleted(broker, &stream).await;
    let reply = broker
        .autoclaim_recorded(&scan(&stream, 10), &record(ctx))
        .await
        .expect("autoclaim_recorded");
    let claimed: Vec<StreamId> = reply.claim.claimed.iter().map(|e| e.id).collect();
    assert_eq!(claimed, vec![id(1), id(4)]);
    assert_eq!(reply.claim.deleted, vec![id(2), id(3)]);
    assert_eq!(reply.claim.next, StreamId::ZERO);
    assert_eq!(
        pending_owners(broker, &stream, "g").await,
        vec![(id(1), "new".to_owned(), 2), (id(4), "new".to_owned(), 2)]
    );
    let records = entries(broker, &ctx.key("records")).await;
    let written: Vec<_> = records
        .iter()
        .map(|e| {
            let fields = e.fields.iter().map(|(name, value)| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                (text(name), text(value))
            });
            fields.collect::<Vec<_>>()
        })
        .collect();
    let expected = |entry: &str| {
        vec![
            ("reason".to_owned(), "deleted".to_owned()),
            ("entry_id".to_owned(), entry.to_owned()),
        ]
    };
    assert_eq!(written, vec![expected("2-0"), expected("3-0")]);
    let replied: Vec<AddedOnce> = reply
        .records
        .into_iter()
        .map(|r| r.expect("record appended"))
        .collect();
    let ids: Vec<AddedOnce> = records.iter().map(|e| AddedOnce::Added(e.id)).collect();
    assert_eq!(replied, ids);
}

/// `autoclaim_recorded`: a record whose marker is still set (by an earlier
/// call, or an append-once under the same marker) is not appended again.
pub async fn autoclaim_recorded_records_each_id_once(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    two_deleted(broker, &stream).await;
    let record = record(ctx);
    // 2-0's record was written before, by another path.
    let earlier = broker
        .xadd_once(vec![record.for_id(id(2))])
        .await
        .expect("xadd_once")
        .pop()
        .expect("one reply")
        .expect("appended")
        .id();
    let reply = broker
        .autoclaim_recorded(&scan(&stream, 10), &record)
        .await
        .expect("autoclaim_recorded");
    assert_eq!(reply.claim.deleted, vec![id(2), id(3)]);
    let records = entries(broker, &ctx.key("records")).await;
    assert_eq!(records.len(), 2, "one record per id: {records:?}");
    let replied: Vec<AddedOnce> = reply
        .records
        .into_iter()
        .map(|r| r.expect("record"))
        .collect();
    assert_eq!(
        replied,
        vec![
            AddedOnce::Duplicate(earlier),
            AddedOnce::Added(records[1].id)
        ]
    );
    assert_eq!(records[1].fields.get_str("entry_id"), Some("3-0"));
}

/// `autoclaim_recorded`: a call that finds nothing deleted appends
/// nothing.
pub async fn autoclaim_recorded_appends_nothing_without_deletions(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 2).await;
    group_from_start(broker, &stream, "g").await;
    read_new(broker, &stream, "g", "old", 0).await;
    tokio::time::sleep(IDLE_WAIT).await;
    let reply = broker
        .autoclaim_recorded(&scan(&stream, 10), &record(ctx))
        .await
        .expect("autoclaim_recorded");
    assert_eq!(reply.claim.claimed.len(), 2);
    assert!(reply.claim.deleted.is_empty() && reply.records.is_empty());
    assert_eq!(broker.xlen(&ctx.key("records")).await.expect("xlen"), 0);
}

/// `autoclaim_recorded`: a bad `count` or a malformed record fails with
/// `InvalidArgument` before anything applies; a missing key or group with
/// `NoGroup`.
pub async fn autoclaim_recorded_rejects_bad_calls_whole(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    two_deleted(broker, &stream).await;
    let good = record(ctx);
    let explicit = DeletedRecord {
        entry: good.entry.clone().with_id(id(9)),
        ..good.clone()
    };
    let fieldless = DeletedRecord {
        entry: NewEntry::new(ctx.key("records"), Fields::new()),
        ..good.clone()
    };
    let instant = DeletedRecord {
        window: Duration::ZERO,
        ..good.clone()
    };
    let bad = [
        ("count 0", scan(&stream, 0), &good),
        ("explicit id", scan(&stream, 10), &explicit),
        ("no fields", scan(&stream, 10), &fieldless),
        ("no window", scan(&stream, 10), &instant),
    ];
    for (what, claim, record) in bad {
        let result = broker.autoclaim_recorded(&claim, record).await;
        expect_kind(result, ErrorKind::InvalidArgument, what);
    }
    let untouched: Vec<_> = (1..=4).map(|ms| (id(ms), "old".to_owned(), 1)).collect();
    assert_eq!(pending_owners(broker, &stream, "g").await, untouched);
    assert_eq!(broker.xlen(&ctx.key("records")).await.expect("xlen"), 0);
    let missing = ctx.key("missing");
    for (key, group) in [(&missing, "g"), (&stream, "nogroup")] {
        let claim = AutoClaim {
            group: group.to_owned(),
            ..scan(key, 10)
        };
        let result = broker.autoclaim_recorded(&claim, &good).await;
        expect_kind(result, ErrorKind::NoGroup, &format!("on {key} {group}"));
    }
}
