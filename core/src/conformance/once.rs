//! Cases for appends guarded by a marker: `xadd_once`.

use std::time::Duration;

use crate::{AddedOnce, Broker, ErrorKind, Fields, NewEntry, OnceEntry, Result};

use super::Ctx;
use super::support::{IDLE_WAIT, fields};

/// A window no case outlives.
const LONG: Duration = Duration::from_secs(3600);
/// A window [`IDLE_WAIT`] outlives.
const SHORT: Duration = Duration::from_millis(300);

fn once(stream: &str, marker: &str, value: &str, window: Duration) -> OnceEntry {
    OnceEntry::new(NewEntry::new(stream, fields(value)), marker, window)
}

fn added(results: Vec<Result<AddedOnce>>) -> Vec<AddedOnce> {
    results
        .into_iter()
        .map(|r| r.expect("xadd_once entry"))
        .collect()
}

/// `xadd_once`: a marker seen within its window appends nothing and gives
/// back the first id, within one call too; other markers append.
pub async fn xadd_once_appends_once_per_marker(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, a, b) = (ctx.key("tasks"), ctx.key("seen:a"), ctx.key("seen:b"));
    let first = added(
        broker
            .xadd_once(vec![
                once(&stream, &a, "a", LONG),
                once(&stream, &b, "b", LONG),
                once(&stream, &a, "a again", LONG),
            ])
            .await
            .expect("xadd_once"),
    );
    let (AddedOnce::Added(id_a), AddedOnce::Added(id_b)) = (first[0], first[1]) else {
        panic!("two new markers append: {first:?}");
    };
    assert!(id_b > id_a, "{first:?}");
    assert_eq!(first[2], AddedOnce::Duplicate(id_a));

    let retried = added(
        broker
            .xadd_once(vec![once(&stream, &a, "a retried", LONG)])
            .await
            .expect("xadd_once"),
    );
    assert_eq!(retried, vec![AddedOnce::Duplicate(id_a)]);
    assert_eq!(retried[0].id(), id_a);
    let stored = broker
        .xrange(&stream, crate::ALL_IDS, None)
        .await
        .expect("xrange");
    let values: Vec<_> = stored.iter().map(|e| e.fields.get_str("n")).collect();
    assert_eq!(values, [Some("a"), Some("b")]);
}

/// `xadd_once`: after the window the marker is forgotten and the entry is
/// appended again.
pub async fn xadd_once_forgets_after_the_window(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, marker) = (ctx.key("tasks"), ctx.key("seen"));
    let first = added(
        broker
            .xadd_once(vec![once(&stream, &marker, "1", SHORT)])
            .await
            .expect("xadd_once"),
    );
    tokio::time::sleep(IDLE_WAIT).await;
    let again = added(
        broker
            .xadd_once(vec![once(&stream, &marker, "2", SHORT)])
            .await
            .expect("xadd_once"),
    );
    let (AddedOnce::Added(before), AddedOnce::Added(after)) = (first[0], again[0]) else {
        panic!("both append: {first:?} {again:?}");
    };
    assert!(after > before);
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 2);
}

/// `xadd_once`: an entry without fields or a window under 1 ms fails alone
/// with `InvalidArgument`; the others append.
pub async fn xadd_once_rejects_malformed_entries(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, marker) = (ctx.key("tasks"), ctx.key("seen"));
    let results = broker
        .xadd_once(vec![
            OnceEntry::new(NewEntry::new(&stream, Fields::new()), ctx.key("m1"), LONG),
            once(&stream, &ctx.key("m2"), "no window", Duration::ZERO),
            once(&stream, &marker, "fine", LONG),
        ])
        .await
        .expect("xadd_once");
    let kinds: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map_err(crate::Error::kind).err())
        .collect();
    assert_eq!(
        kinds,
        [
            Some(ErrorKind::InvalidArgument),
            Some(ErrorKind::InvalidArgument),
            None
        ]
    );
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 1);
}
