//! `autoclaim_recorded` on Redis where a write can fail: a record stream of
//! another type refuses the whole call before anything is claimed; a marker
//! of another type fails its own record only.

use std::time::Duration;

use crewq_core::{
    AddedOnce, AutoClaim, Broker, DeletedRecord, ErrorKind, Fields, GroupStart, NewEntry,
    PendingQuery, ReadGroup, StreamId,
};
use crewq_tests::redis_server::TestRedis;

/// `stream` with three entries read by `old`, the first two deleted.
async fn two_deleted(broker: &dyn Broker, stream: &str) -> Vec<StreamId> {
    broker
        .group_create(stream, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    for n in 0..3 {
        let fields = Fields::new().with("n", n.to_string());
        broker
            .xadd(NewEntry::new(stream, fields))
            .await
            .expect("xadd");
    }
    let read = ReadGroup::new(stream, "g", "old").count(3);
    let ids: Vec<StreamId> = broker
        .read_group(&read)
        .await
        .expect("read")
        .iter()
        .map(|e| e.id)
        .collect();
    broker.xdel(stream, &ids[..2]).await.expect("xdel");
    ids
}

fn record(stream: &str, markers: &str) -> DeletedRecord {
    let template = NewEntry::new(stream, Fields::new().with("reason", "gone"));
    DeletedRecord::new(template, "entry_id", markers, Duration::from_secs(60))
}

async fn pending_ids(broker: &dyn Broker, stream: &str) -> Vec<StreamId> {
    broker
        .pending(stream, "g", &PendingQuery::new(10))
        .await
        .expect("pending")
        .iter()
        .map(|row| row.id)
        .collect()
}

/// Nothing claimed and nothing dropped from the pending list when the
/// records could not be written at all: the deletions stay to be found.
#[tokio::test]
async fn a_record_stream_of_another_type_refuses_the_whole_call() {
    let server = TestRedis::start();
    let prefix = server.unique_prefix();
    let (stream, records) = (format!("{prefix}:s"), format!("{prefix}:records"));
    let mut raw = server.raw_connection();
    redis::cmd("SET")
        .arg(&records)
        .arg("x")
        .exec(&mut raw)
        .expect("SET");
    let broker = server.broker().await;
    let ids = two_deleted(&broker, &stream).await;
    let claim = AutoClaim::new(&stream, "g", "new").count(10);
    let err = broker
        .autoclaim_recorded(&claim, &record(&records, &format!("{prefix}:m:")))
        .await
        .expect_err("a string is no stream");
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err:?}");
    assert_eq!(pending_ids(&broker, &stream).await, ids, "nothing applied");
}

/// A marker key of another type fails its own record; the claim and the
/// other records apply. (The script cache is flushed first, as a restart
/// does: the call loads the script and runs it once.)
#[tokio::test]
async fn a_record_fails_alone() {
    let server = TestRedis::start();
    let prefix = server.unique_prefix();
    let (stream, records) = (format!("{prefix}:s"), format!("{prefix}:records"));
    let markers = format!("{prefix}:m:");
    let broker = server.broker().await;
    let ids = two_deleted(&broker, &stream).await;
    let mut raw = server.raw_connection();
    redis::cmd("HSET")
        .arg(format!("{markers}{}", ids[0]))
        .arg("f")
        .arg("v")
        .exec(&mut raw)
        .expect("HSET");
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec(&mut raw)
        .expect("SCRIPT FLUSH");
    let claim = AutoClaim::new(&stream, "g", "new").count(10);
    let reply = broker
        .autoclaim_recorded(&claim, &record(&records, &markers))
        .await
        .expect("the call succeeds");
    assert_eq!(reply.claim.deleted, ids[..2].to_vec());
    assert_eq!(reply.claim.claimed.len(), 1);
    assert!(
        matches!(&reply.records[0], Err(err) if err.kind() == ErrorKind::WrongType),
        "{:?}",
        reply.records
    );
    let written = broker
        .xrange(&records, crewq_core::ALL_IDS, None)
        .await
        .expect("xrange");
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(matches!(reply.records[1], Ok(AddedOnce::Added(id)) if id == written[0].id));
    assert_eq!(
        written[0].fields.get_str("entry_id"),
        Some(ids[1].to_string().as_str())
    );
    assert_eq!(pending_ids(&broker, &stream).await, vec![ids[2]]);
}
