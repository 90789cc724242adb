//! Cases for appends, lengths, ranges and deletes.

use std::ops::Bound::{Excluded, Included, Unbounded};
use std::time::Duration;

use crate::{Broker, ErrorKind, Fields, NewEntry, StreamId, Trim};

use super::Ctx;
use super::support::{all_ids, expect_kind, fields, id, seed};

/// `xadd`: automatic ids strictly increase and follow the broker's clock.
pub async fn xadd_auto_ids_strictly_increase(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let mut last = StreamId::ZERO;
    for n in 0..20 {
        let id = broker
            .xadd(NewEntry::new(&stream, fields(n)))
            .await
            .expect("xadd");
        assert!(id > last, "{id} after {last}");
        // Within one ms the sequence counts up from the last id.
        if id.ms == last.ms {
            assert_eq!(id.seq, last.seq + 1, "{id} after {last}");
        }
        last = id;
    }
    // The ms part is the clock: after a pause it has moved at least as far.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = broker
        .xadd(NewEntry::new(&stream, fields("later")))
        .await
        .expect("xadd");
    assert!(later.ms >= last.ms + 5, "{later} 5ms after {last}");
}

/// `xadd`: an automatic id after an explicit id ahead of the clock keeps that
/// id's ms and increments its seq.
pub async fn xadd_auto_id_after_future_explicit_id_increments_seq(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let now = broker
        .xadd(NewEntry::new(&stream, fields("now")))
        .await
        .expect("xadd");
    // An hour ahead of the broker's clock.
    let future = StreamId::new(now.ms + 3_600_000, 5);
    broker
        .xadd(NewEntry::new(&stream, fields("future")).with_id(future))
        .await
        .expect("xadd explicit future id");
    for seq in 6..9 {
        let auto = broker
            .xadd(NewEntry::new(&stream, fields(seq)))
            .await
            .expect("xadd after future id");
        assert_eq!(
            auto,
            StreamId::new(future.ms, seq),
            "auto id after {future}"
        );
    }
}

/// `xadd`: an explicit id must exceed the last id, even a deleted one; `0-0`
/// never works.
pub async fn xadd_explicit_id_must_exceed_top(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let add = |id: StreamId| broker.xadd(NewEntry::new(&stream, fields(id)).with_id(id));
    // 0-0 is refused on a missing key, and the key is not created.
    expect_kind(
        add(StreamId::ZERO).await,
        ErrorKind::IdTooSmall,
        "0-0 on a new stream",
    );
    expect_kind(
        broker.info_stream(&stream).await,
        ErrorKind::NoSuchKey,
        "stream after a refused xadd",
    );

    assert_eq!(add(id(5)).await.expect("xadd 5-0"), id(5));
    expect_kind(
        add(id(5)).await,
        ErrorKind::IdTooSmall,
        "equal to the top id",
    );
    expect_kind(
        add(StreamId::new(4, 9)).await,
        ErrorKind::IdTooSmall,
        "below the top id",
    );
    expect_kind(add(StreamId::ZERO).await, ErrorKind::IdTooSmall, "0-0");

    // Deleting the top entry does not lower the bar.
    assert_eq!(broker.xdel(&stream, &[id(5)]).await.expect("xdel"), 1);
    expect_kind(
        add(id(5)).await,
        ErrorKind::IdTooSmall,
        "equal to a deleted top id",
    );
    expect_kind(
        add(id(4)).await,
        ErrorKind::IdTooSmall,
        "below a deleted top id",
    );
    let next = StreamId::new(5, 1);
    assert_eq!(add(next).await.expect("xadd 5-1"), next);
    assert_eq!(
        all_ids(broker, &stream).await,
        vec![next],
        "refused ids were not added"
    );
}

/// `xadd`: fields are stored in order, with repeated names, binary-safe.
pub async fn xadd_stores_fields_in_order(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let fields = Fields::new()
        .with("b", "1")
        .with("a", "2")
        .with("b", "3")
        .with("empty", "")
        .with(&b"bin\x00\xff"[..], &b"\xfe\x00v"[..]);
    let id = broker
        .xadd(NewEntry::new(&stream, fields.clone()))
        .await
        .expect("xadd");
    let entries = broker
        .xrange(&stream, crate::ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].fields, fields, "fields as added, in order");
}

/// `xadd`: an entry without fields is `InvalidArgument` and creates nothing.
pub async fn xadd_rejects_empty_fields(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    expect_kind(
        broker.xadd(NewEntry::new(&stream, Fields::new())).await,
        ErrorKind::InvalidArgument,
        "xadd without fields",
    );
    expect_kind(
        broker
            .xadd(NewEntry::new(&stream, Fields::new()).with_trim(Trim::max_len(0)))
            .await,
        ErrorKind::InvalidArgument,
        "xadd without fields, with a trim",
    );
    expect_kind(
        broker.info_stream(&stream).await,
        ErrorKind::NoSuchKey,
        "a rejected xadd does not create the stream",
    );

    // On an existing stream, nothing is appended or trimmed either.
    seed(broker, &stream, 3).await;
    expect_kind(
        broker
            .xadd(NewEntry::new(&stream, Fields::new()).with_trim(Trim::max_len(1)))
            .await,
        ErrorKind::InvalidArgument,
        "xadd without fields on an existing stream",
    );
    assert_eq!(all_ids(broker, &stream).await, vec![id(1), id(2), id(3)]);
}

/// `xadd`: a trim in the same call keeps the newest entries, the new one
/// included.
pub async fn xadd_with_maxlen_trims_oldest(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    for ms in 1..=5 {
        broker
            .xadd(
                NewEntry::new(&stream, fields(ms))
                    .with_id(id(ms))
                    .with_trim(Trim::max_len(3)),
            )
            .await
            .expect("xadd with maxlen");
    }
    assert_eq!(all_ids(broker, &stream).await, vec![id(3), id(4), id(5)]);

    // MINID on xadd drops the smaller ids.
    broker
        .xadd(
            NewEntry::new(&stream, fields(6))
                .with_id(id(6))
                .with_trim(Trim::min_id(id(5))),
        )
        .await
        .expect("xadd with minid");
    assert_eq!(all_ids(broker, &stream).await, vec![id(5), id(6)]);

    // MAXLEN 0 trims the new entry too: Redis returns its id and keeps an
    // empty stream whose last id is that id.
    let gone = broker
        .xadd(
            NewEntry::new(&stream, fields(7))
                .with_id(id(7))
                .with_trim(Trim::max_len(0)),
        )
        .await
        .expect("xadd with maxlen 0");
    assert_eq!(gone, id(7));
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 0);
    let info = broker.info_stream(&stream).await.expect("info stream");
    assert_eq!((info.length, info.last_generated_id), (0, id(7)));
    assert_eq!(info.entries_added, 7);
}

/// `xadd_many`: one result per entry, in order; a failure stops nothing.
pub async fn xadd_many_returns_one_result_per_entry(broker: &dyn Broker, ctx: &Ctx) {
    let (a, b) = (ctx.key("a"), ctx.key("b"));
    let results = broker
        .xadd_many(vec![
            NewEntry::new(&a, fields(1)).with_id(id(10)),
            NewEntry::new(&b, fields(2)).with_id(id(20)),
            // Too small: 10-0 is a's top now.
            NewEntry::new(&a, fields(3)).with_id(id(10)),
            NewEntry::new(&a, fields(4)),
            NewEntry::new(&b, fields(5)).with_id(id(21)),
        ])
        .await
        .expect("xadd_many");
    assert_eq!(results.len(), 5, "one result per entry: {results:?}");
    assert_eq!(*results[0].as_ref().expect("first"), id(10));
    assert_eq!(*results[1].as_ref().expect("second"), id(20));
    let third = results[2].as_ref().expect_err("third has a too-small id");
    assert_eq!(third.kind(), ErrorKind::IdTooSmall, "{third}");
    let fourth = *results[3].as_ref().expect("fourth");
    assert!(fourth > id(10), "auto id {fourth} after 10-0");
    assert_eq!(*results[4].as_ref().expect("fifth"), id(21));

    assert_eq!(all_ids(broker, &a).await, vec![id(10), fourth]);
    assert_eq!(all_ids(broker, &b).await, vec![id(20), id(21)]);
    assert!(
        broker
            .xadd_many(Vec::new())
            .await
            .expect("empty batch")
            .is_empty(),
        "no entries, no results"
    );
}

/// `xlen`: counts entries present after deletes and trims; 0 for a missing key.
pub async fn xlen_counts_present_entries(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    assert_eq!(broker.xlen(&stream).await.expect("xlen missing"), 0);
    seed(broker, &stream, 5).await;
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 5);
    broker.xdel(&stream, &[id(2)]).await.expect("xdel");
    assert_eq!(broker.xlen(&stream).await.expect("xlen after xdel"), 4);
    broker
        .xtrim(&stream, Trim::max_len(2))
        .await
        .expect("xtrim");
    assert_eq!(broker.xlen(&stream).await.expect("xlen after xtrim"), 2);
    broker.xdel(&stream, &[id(4), id(5)]).await.expect("xdel");
    assert_eq!(broker.xlen(&stream).await.expect("xlen when emptied"), 0);
}

/// `xrange`: inclusive, exclusive and open bounds, and `count`.
pub async fn xrange_honours_bounds_and_count(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 5).await;
    let stream = stream.as_str();
    let range = |lo, hi, count| async move {
        broker
            .xrange(stream, (lo, hi), count)
            .await
            .expect("xrange")
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    let all: Vec<_> = (1..=5).map(id).collect();
    assert_eq!(range(Unbounded, Unbounded, None).await, all);
    assert_eq!(
        range(Included(id(2)), Included(id(4)), None).await,
        vec![id(2), id(3), id(4)]
    );
    assert_eq!(
        range(Excluded(id(2)), Excluded(id(4)), None).await,
        vec![id(3)]
    );
    assert_eq!(range(Excluded(id(4)), Unbounded, None).await, vec![id(5)]);
    assert_eq!(range(Unbounded, Excluded(id(2)), None).await, vec![id(1)]);
    // Bounds between entries, and ranges with nothing in them.
    assert_eq!(
        range(
            Included(StreamId::new(1, 1)),
            Included(StreamId::new(3, 0)),
            None
        )
        .await,
        vec![id(2), id(3)]
    );
    assert_eq!(range(Excluded(id(3)), Excluded(id(4)), None).await, vec![]);
    assert_eq!(range(Included(id(4)), Included(id(2)), None).await, vec![]);
    // Count.
    assert_eq!(
        range(Unbounded, Unbounded, Some(2)).await,
        vec![id(1), id(2)]
    );
    assert_eq!(
        range(Excluded(id(1)), Unbounded, Some(2)).await,
        vec![id(2), id(3)]
    );
    assert_eq!(range(Unbounded, Unbounded, Some(10)).await, all);
    assert_eq!(
        range(Unbounded, Unbounded, Some(0)).await,
        vec![],
        "COUNT 0"
    );
    // Fields come back with the ids.
    let entries = broker
        .xrange(stream, (Included(id(3)), Included(id(3))), None)
        .await
        .expect("xrange one");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].fields, fields(3));
}

/// `xrange`: a missing key gives an empty list.
pub async fn xrange_missing_key_is_empty(broker: &dyn Broker, ctx: &Ctx) {
    let entries = broker
        .xrange(&ctx.key("missing"), crate::ALL_IDS, None)
        .await
        .expect("xrange on a missing key");
    assert!(entries.is_empty(), "{entries:?}");
    let entries = broker
        .xrange(&ctx.key("missing"), crate::ALL_IDS, Some(10))
        .await
        .expect("xrange with count on a missing key");
    assert!(entries.is_empty(), "{entries:?}");
}

/// `xdel`: counts ids that existed, once; never lowers the last id.
pub async fn xdel_counts_existing_ids_only(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    assert_eq!(
        broker
            .xdel(&stream, &[id(1)])
            .await
            .expect("xdel missing key"),
        0
    );
    seed(broker, &stream, 3).await;
    // A repeated id counts once; an id never added counts nothing.
    assert_eq!(
        broker
            .xdel(&stream, &[id(1), id(1), id(9)])
            .await
            .expect("xdel"),
        1
    );
    assert_eq!(broker.xdel(&stream, &[id(1)]).await.expect("xdel again"), 0);
    assert_eq!(all_ids(broker, &stream).await, vec![id(2), id(3)]);

    // Deleting the top entry keeps the stream's last id.
    assert_eq!(broker.xdel(&stream, &[id(3)]).await.expect("xdel top"), 1);
    let info = broker.info_stream(&stream).await.expect("info stream");
    assert_eq!(info.last_generated_id, id(3));
    assert_eq!(info.max_deleted_entry_id, id(3));
    let next = broker
        .xadd(NewEntry::new(&stream, fields("next")))
        .await
        .expect("xadd");
    assert!(next > id(3), "{next} after deleted top 3-0");
}
