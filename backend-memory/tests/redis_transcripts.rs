//! Replays of redis-cli sessions recorded on Redis 7.0.15, checked reply by
//! reply on the memory broker. They pin the rules that are easiest to get
//! subtly wrong: the XAUTOCLAIM cursor and Redis's lag estimation.

use std::time::Duration;

use crewq_core::{
    Broker, Fields, GroupStart, NewEntry, PendingQuery, ReadGroup, StreamId, TokioClock,
};
use crewq_memory::MemoryBroker;

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId::new(ms, seq)
}

async fn add(broker: &MemoryBroker, stream: &str, id: StreamId) {
    let entry = NewEntry::new(stream, Fields::new().with("f", id.to_string())).with_id(id);
    broker.xadd(entry).await.expect("xadd");
}

/// XADD a 1-0..6-0; XGROUP CREATE a g 0; XREADGROUP GROUP g c1 STREAMS a >;
/// XDEL a 2-0 3-0 5-0; XAUTOCLAIM a g c2 0 0 COUNT 2 -> 3-0, [1-0], [2-0];
/// XAUTOCLAIM a g c2 0 0 COUNT 10 -> 0-0, [1-0 4-0 6-0], [3-0 5-0].
#[tokio::test(start_paused = true)]
async fn autoclaim_cursor_and_deleted_ids_match_redis() {
    let broker = MemoryBroker::with_clock(TokioClock::default());
    for ms in 1..=6 {
        add(&broker, "a", id(ms, 0)).await;
    }
    broker
        .group_create("a", "g", GroupStart::BEGINNING, false)
        .await
        .expect("create");
    broker
        .read_group(&ReadGroup::new("a", "g", "c1"))
        .await
        .expect("read");
    assert_eq!(
        broker
            .xdel("a", &[id(2, 0), id(3, 0), id(5, 0)])
            .await
            .expect("xdel"),
        3
    );

    let first = broker
        .autoclaim("a", "g", "c2", Duration::ZERO, StreamId::ZERO, 2)
        .await
        .expect("autoclaim");
    assert_eq!(first.next, id(3, 0));
    assert_eq!(
        first.claimed.iter().map(|e| e.id).collect::<Vec<_>>(),
        [id(1, 0)]
    );
    assert_eq!(first.deleted, [id(2, 0)]);

    let rest = broker
        .autoclaim("a", "g", "c2", Duration::ZERO, StreamId::ZERO, 10)
        .await
        .expect("autoclaim");
    assert_eq!(rest.next, StreamId::ZERO);
    assert_eq!(
        rest.claimed.iter().map(|e| e.id).collect::<Vec<_>>(),
        [id(1, 0), id(4, 0), id(6, 0)]
    );
    assert_eq!(rest.deleted, [id(3, 0), id(5, 0)]);

    // XPENDING a g - + 10: 1-0 delivered three times, the others twice.
    let rows = broker
        .pending("a", "g", &PendingQuery::new(10))
        .await
        .expect("pending");
    let rows: Vec<_> = rows
        .iter()
        .map(|r| (r.id, r.consumer.as_str(), r.deliveries))
        .collect();
    assert_eq!(
        rows,
        [
            (id(1, 0), "c2", 3),
            (id(4, 0), "c2", 2),
            (id(6, 0), "c2", 2)
        ]
    );

    // XINFO GROUPS a: entries-read 6, lag 0 (the group read past the tombstones).
    let groups = broker.info_groups("a").await.expect("info");
    assert_eq!((groups[0].entries_read, groups[0].lag), (Some(6), Some(0)));
}

/// XADD c 1-0..25-0; read all as c1; XAUTOCLAIM c g c2 100000 0 COUNT 1
/// scans ten entries, claims none, and returns cursor 11-0.
#[tokio::test(start_paused = true)]
async fn autoclaim_stops_after_ten_times_count_like_redis() {
    let broker = MemoryBroker::with_clock(TokioClock::default());
    for ms in 1..=25 {
        add(&broker, "c", id(ms, 0)).await;
    }
    broker
        .group_create("c", "g", GroupStart::BEGINNING, false)
        .await
        .expect("create");
    broker
        .read_group(&ReadGroup::new("c", "g", "c1"))
        .await
        .expect("read");
    let reply = broker
        .autoclaim("c", "g", "c2", Duration::from_secs(100), StreamId::ZERO, 1)
        .await
        .expect("autoclaim");
    assert_eq!(
        (reply.next, reply.claimed.len(), reply.deleted.len()),
        (id(11, 0), 0, 0)
    );
}

/// XADD t 1-1, 2-1; XGROUP CREATE t g0 0 / g1 $ / g2 1-1;
/// XINFO GROUPS t: entries-read nil for all; lag 2, 0, 1.
#[tokio::test(start_paused = true)]
async fn lag_of_new_groups_is_estimated_like_redis() {
    let broker = MemoryBroker::with_clock(TokioClock::default());
    add(&broker, "t", id(1, 1)).await;
    add(&broker, "t", id(2, 1)).await;
    broker
        .group_create("t", "g0", GroupStart::BEGINNING, false)
        .await
        .expect("g0");
    broker
        .group_create("t", "g1", GroupStart::Latest, false)
        .await
        .expect("g1");
    broker
        .group_create("t", "g2", GroupStart::After(id(1, 1)), false)
        .await
        .expect("g2");
    let groups = broker.info_groups("t").await.expect("info");
    let seen: Vec<_> = groups
        .iter()
        .map(|g| (g.name.as_str(), g.entries_read, g.lag))
        .collect();
    assert_eq!(
        seen,
        [
            ("g0", None, Some(2)),
            ("g1", None, Some(0)),
            ("g2", None, Some(1))
        ]
    );
}

/// XADD s 1-0; XGROUP CREATE s g 0;
/// XREADGROUP GROUP g a STREAMS s 18446744073709551615-18446744073709551615
/// delivers 1-0 as `>` would: Redis encodes `>` as the largest id.
#[tokio::test(start_paused = true)]
async fn history_read_after_max_id_reads_like_new_as_in_redis() {
    let broker = MemoryBroker::with_clock(TokioClock::default());
    add(&broker, "s", id(1, 0)).await;
    broker
        .group_create("s", "g", GroupStart::BEGINNING, false)
        .await
        .expect("create");
    let read = ReadGroup::new("s", "g", "a").pending_after(StreamId::MAX);
    let delivered = broker.read_group(&read).await.expect("read");
    assert_eq!(
        delivered.iter().map(|e| e.id).collect::<Vec<_>>(),
        [id(1, 0)]
    );
    let rows = broker
        .pending("s", "g", &PendingQuery::new(10))
        .await
        .expect("pending");
    assert_eq!((rows[0].consumer.as_str(), rows[0].deliveries), ("a", 1));
}
