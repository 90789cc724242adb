//! Helpers the cases share: seeding streams, reading, and asserting errors.

use std::time::Duration;

use crate::{
    Broker, DeliveredEntry, ErrorKind, Fields, GroupInfo, GroupStart, NewEntry, PendingEntry,
    PendingQuery, ReadGroup, Result, StreamId,
};

/// How long a case waits for entries to become idle. Longer than
/// [`IDLE_THRESHOLD`] by a margin, so that on real time an entry that was
/// touched just now (a claim, a read) stays below the threshold while one
/// left alone for `IDLE_WAIT` is above it, even on a loaded machine.
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(600);

/// The `min_idle` an entry left alone for [`IDLE_WAIT`] passes and a freshly
/// touched one does not.
pub(crate) const IDLE_THRESHOLD: Duration = Duration::from_millis(500);

/// A `min_idle` no entry in a case reaches.
pub(crate) const NOT_IDLE_ENOUGH: Duration = Duration::from_secs(10);

/// One field `n` = `value`.
pub(crate) fn fields(value: impl ToString) -> Fields {
    Fields::new().with("n", value.to_string())
}

/// The id `<ms>-0`.
pub(crate) const fn id(ms: u64) -> StreamId {
    StreamId::new(ms, 0)
}

/// Appends `n` = `ms` at the explicit id `<ms>-0`.
pub(crate) async fn add_at(broker: &dyn Broker, stream: &str, ms: u64) -> StreamId {
    broker
        .xadd(NewEntry::new(stream, fields(ms)).with_id(id(ms)))
        .await
        .unwrap_or_else(|e| panic!("xadd {stream} {ms}-0: {e}"))
}

/// Appends entries `1-0` .. `<n>-0` (field `n` = their ms).
pub(crate) async fn seed(broker: &dyn Broker, stream: &str, n: u64) -> Vec<StreamId> {
    let mut ids = Vec::new();
    for ms in 1..=n {
        ids.push(add_at(broker, stream, ms).await);
    }
    ids
}

/// Creates `group` on `stream` delivering the whole stream (`0`, MKSTREAM).
pub(crate) async fn group_from_start(broker: &dyn Broker, stream: &str, group: &str) {
    broker
        .group_create(stream, group, GroupStart::BEGINNING, true)
        .await
        .unwrap_or_else(|e| panic!("group create {stream} {group}: {e}"));
}

/// Reads up to `count` new entries (`>`) as `consumer`, without blocking.
pub(crate) async fn read_new(
    broker: &dyn Broker,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) -> Vec<DeliveredEntry> {
    broker
        .read_group(&ReadGroup::new(stream, group, consumer).count(count))
        .await
        .unwrap_or_else(|e| panic!("read {stream} {group} {consumer}: {e}"))
}

/// Reads `consumer`'s own pending entries after `after`.
pub(crate) async fn read_history(
    broker: &dyn Broker,
    stream: &str,
    group: &str,
    consumer: &str,
    after: StreamId,
) -> Vec<DeliveredEntry> {
    broker
        .read_group(&ReadGroup::new(stream, group, consumer).pending_after(after))
        .await
        .unwrap_or_else(|e| panic!("history read {stream} {group} {consumer}: {e}"))
}

/// The ids of delivered entries.
pub(crate) fn ids_of(entries: &[DeliveredEntry]) -> Vec<StreamId> {
    entries.iter().map(|e| e.id).collect()
}

/// The whole pending list of `group`, by id.
pub(crate) async fn pending_all(
    broker: &dyn Broker,
    stream: &str,
    group: &str,
) -> Vec<PendingEntry> {
    broker
        .pending(stream, group, &PendingQuery::new(1000))
        .await
        .unwrap_or_else(|e| panic!("pending {stream} {group}: {e}"))
}

/// The pending row of `id`, if it is pending.
pub(crate) async fn pending_row(
    broker: &dyn Broker,
    stream: &str,
    group: &str,
    id: StreamId,
) -> Option<PendingEntry> {
    pending_all(broker, stream, group)
        .await
        .into_iter()
        .find(|row| row.id == id)
}

/// `(id, owner, deliveries)` of each pending row, for whole-list comparisons.
pub(crate) async fn pending_owners(
    broker: &dyn Broker,
    stream: &str,
    group: &str,
) -> Vec<(StreamId, String, u64)> {
    pending_all(broker, stream, group)
        .await
        .into_iter()
        .map(|row| (row.id, row.consumer, row.deliveries))
        .collect()
}

/// The `XINFO GROUPS` row of `group`.
pub(crate) async fn group_info(broker: &dyn Broker, stream: &str, group: &str) -> GroupInfo {
    broker
        .info_groups(stream)
        .await
        .unwrap_or_else(|e| panic!("info groups {stream}: {e}"))
        .into_iter()
        .find(|g| g.name == group)
        .unwrap_or_else(|| panic!("group {group} missing from XINFO GROUPS {stream}"))
}

/// Asserts that `result` failed with `kind`.
pub(crate) fn expect_kind<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Ok(value) => panic!("{what}: expected a {kind:?} error, got Ok({value:?})"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error kind ({e})"),
    }
}

/// The ids of a whole stream, oldest first.
pub(crate) async fn all_ids(broker: &dyn Broker, stream: &str) -> Vec<StreamId> {
    broker
        .xrange(stream, crate::ALL_IDS, None)
        .await
        .expect("xrange")
        .into_iter()
        .map(|e| e.id)
        .collect()
}
