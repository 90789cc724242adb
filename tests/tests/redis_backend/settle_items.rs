//! Settles on Redis whose items fail alone: a destination of another type
//! fails its own item, never the whole batch.

use crewq_core::{Broker, Fields, GroupStart, NewEntry, ReadGroup, Settle, SettleItem, Settled};
use crewq_tests::redis_server::TestRedis;

/// An item appending to a key that holds a string is `Failed` with
/// `WRONGTYPE` and stays pending; the items around it settle. Before
/// finding 6 the script aborted at that write and acknowledged none.
#[tokio::test]
async fn a_wrongtype_destination_fails_only_its_own_settle_item() {
    let server = TestRedis::start();
    let prefix = server.unique_prefix();
    let (stream, results, plain) = (
        format!("{prefix}:s"),
        format!("{prefix}:results"),
        format!("{prefix}:plain"),
    );
    let mut raw = server.raw_connection();
    redis::cmd("SET")
        .arg(&plain)
        .arg("x")
        .exec(&mut raw)
        .expect("SET");
    let broker = server.broker().await;
    broker
        .group_create(&stream, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    for n in 0..3 {
        broker
            .xadd(NewEntry::new(
                &stream,
                Fields::new().with("n", n.to_string()),
            ))
            .await
            .expect("xadd");
    }
    let ids: Vec<_> = broker
        .read_group(&ReadGroup::new(&stream, "g", "w").count(3))
        .await
        .expect("read")
        .iter()
        .map(|e| e.id)
        .collect();
    let to = |key: &str| NewEntry::new(key, Fields::new().with("r", "1"));
    let settle = Settle::new(&stream, "g", "w")
        .item(SettleItem::new(ids[0]).append(to(&results)))
        .item(SettleItem::new(ids[1]).append(to(&plain)))
        .item(SettleItem::new(ids[2]).append(to(&results)));
    let outcomes = broker.settle(settle).await.expect("the call succeeds");
    assert!(
        matches!(&outcomes[0], Settled::Done(a) if a.len() == 1),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[1], Settled::Failed(why) if why.starts_with("WRONGTYPE")),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[2], Settled::Done(a) if a.len() == 1),
        "{outcomes:?}"
    );
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 2);
    let pending = broker.pending_summary(&stream, "g").await.expect("pending");
    assert_eq!(pending.count, 1, "only the failed item stays pending");
}
