//! Replies a server gives while it cannot serve (finding 4): a flushed
//! script cache, memory full, a failover that demoted it to a replica.
//! Each is waited out or handled, never a silent stop.

use std::time::Duration;

use crewq_core::{
    Broker, ErrorKind, Fields, GroupStart, NewEntry, OnceEntry, ReadGroup, Settle, SettleItem,
    Settled, StreamId,
};
use crewq_redis::RedisBroker;
use crewq_tests::redis_server::TestRedis;

fn entry(stream: &str, n: u32) -> NewEntry {
    NewEntry::new(stream, Fields::new().with("n", n.to_string()))
}

/// A group `g` on `stream` with `n` entries delivered to `w`; their ids.
async fn delivered(broker: &RedisBroker, stream: &str, n: u32) -> Vec<StreamId> {
    broker
        .group_create(stream, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    for i in 0..n {
        broker.xadd(entry(stream, i)).await.expect("xadd");
    }
    broker
        .read_group(&ReadGroup::new(stream, "g", "w"))
        .await
        .expect("read")
        .iter()
        .map(|e| e.id)
        .collect()
}

fn raw(server: &TestRedis, args: &[&str]) {
    let mut conn = server.raw_connection();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.exec(&mut conn)
        .unwrap_or_else(|err| panic!("{args:?}: {err}"));
}

/// `SCRIPT FLUSH` (or a restart) empties the script cache: settle, renew
/// and append-once reload their scripts themselves and succeed.
#[tokio::test]
async fn scripts_flushed_from_the_cache_are_reloaded_invisibly() {
    let server = TestRedis::start_with_args(&[]);
    let prefix = server.unique_prefix();
    let (stream, results) = (format!("{prefix}:s"), format!("{prefix}:r"));
    let broker = server.broker().await;
    let ids = delivered(&broker, &stream, 4).await;
    let settle_one =
        |id| Settle::new(&stream, "g", "w").item(SettleItem::new(id).append(entry(&results, 1)));
    for (round, &id) in ids.iter().take(3).enumerate() {
        raw(&server, &["SCRIPT", "FLUSH"]);
        let renewed = broker
            .renew(&stream, "g", "w", &[id])
            .await
            .unwrap_or_else(|err| panic!("renew after SCRIPT FLUSH ({round}): {err}"));
        assert_eq!(renewed, vec![id]);
        raw(&server, &["SCRIPT", "FLUSH"]);
        let outcomes = broker
            .settle(settle_one(id))
            .await
            .unwrap_or_else(|err| panic!("settle after SCRIPT FLUSH ({round}): {err}"));
        assert!(
            matches!(&outcomes[0], Settled::Done(a) if a.len() == 1),
            "{outcomes:?}"
        );
        raw(&server, &["SCRIPT", "FLUSH"]);
        let once = OnceEntry::new(
            entry(&results, 2),
            format!("{prefix}:m{round}"),
            Duration::from_secs(60),
        );
        let added = broker.xadd_once(vec![once]).await.expect("xadd_once");
        assert!(added[0].is_ok(), "{added:?}");
    }
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 6);
}

/// Memory full under `noeviction`: writes fail with a transient
/// `Unavailable` carrying the server's `OOM` text; a settle's items are
/// `Failed` and stay pending; once memory is free again, all succeed.
#[tokio::test]
async fn memory_full_under_noeviction_is_a_transient_oom() {
    let server = TestRedis::start_with_args(&[]);
    let prefix = server.unique_prefix();
    let (stream, results) = (format!("{prefix}:s"), format!("{prefix}:r"));
    let broker = server.broker().await;
    let ids = delivered(&broker, &stream, 2).await;
    raw(
        &server,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    );
    raw(&server, &["CONFIG", "SET", "maxmemory", "1"]);

    let err = broker
        .xadd(entry(&stream, 9))
        .await
        .expect_err("memory is full");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("OOM"), "{err}");
    let once = OnceEntry::new(
        entry(&results, 1),
        format!("{prefix}:m"),
        Duration::from_secs(60),
    );
    let added = broker
        .xadd_once(vec![once.clone()])
        .await
        .expect("the call");
    assert!(
        matches!(&added[0], Err(err) if err.kind() == ErrorKind::Unavailable),
        "{added:?}"
    );
    let settle =
        Settle::new(&stream, "g", "w").item(SettleItem::new(ids[0]).append(entry(&results, 1)));
    let outcomes = broker.settle(settle.clone()).await.expect("the call");
    assert!(
        matches!(&outcomes[0], Settled::Failed(why) if why.starts_with("OOM")),
        "{outcomes:?}"
    );
    assert_eq!(
        broker
            .pending_summary(&stream, "g")
            .await
            .expect("pending")
            .count,
        2
    );

    raw(&server, &["CONFIG", "SET", "maxmemory", "0"]);
    let outcomes = broker.settle(settle).await.expect("settle");
    assert!(
        matches!(&outcomes[0], Settled::Done(a) if a.len() == 1),
        "{outcomes:?}"
    );
    let added = broker.xadd_once(vec![once]).await.expect("the call");
    assert!(added[0].is_ok(), "{added:?}");
}

/// A failover demotes the server to a replica (`REPLICAOF` another private
/// server): writes fail with a transient `Unavailable` carrying `READONLY`,
/// and the shared connection is replaced, so the next call goes out on a
/// fresh one; once the server is a primary again, writes succeed.
#[tokio::test]
async fn a_demoted_server_answers_writes_with_a_transient_readonly() {
    let server = TestRedis::start_with_args(&[]);
    let primary = TestRedis::start_with_args(&[]);
    let prefix = server.unique_prefix();
    let stream = format!("{prefix}:s");
    let broker = server.broker().await;
    broker
        .xadd(entry(&stream, 1))
        .await
        .expect("a primary takes writes");
    assert_eq!(broker.connection_replacements(), 0);

    broker
        .group_create(&stream, "g", GroupStart::BEGINNING, false)
        .await
        .expect("group");
    let read = ReadGroup::new(&stream, "g", "w").block(Duration::from_millis(50));
    broker.read_group(&read).await.expect("a blocking read");
    assert_eq!(broker.idle_blocking_connections(), 1);

    let port = primary.port().expect("a private server").to_string();
    raw(&server, &["REPLICAOF", "127.0.0.1", &port]);
    // XREADGROUP is a write: a replica refuses it before looking at keys,
    // and the pooled blocking connections are closed.
    let err = broker.read_group(&read).await.expect_err("a replica");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("READONLY"), "{err}");
    assert_eq!(broker.idle_blocking_connections(), 0);
    let err = broker.xadd(entry(&stream, 2)).await.expect_err("a replica");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("READONLY"), "{err}");
    assert_eq!(broker.connection_replacements(), 1, "replaced once");
    let err = broker
        .xadd(entry(&stream, 3))
        .await
        .expect_err("still a replica");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        broker.connection_replacements(),
        2,
        "the fresh connection found a replica too"
    );

    raw(&server, &["REPLICAOF", "NO", "ONE"]);
    broker
        .xadd(entry(&stream, 4))
        .await
        .expect("a primary again takes writes");
}

/// Polls until `server`, a replica, has synced from its primary.
fn wait_synced(server: &TestRedis) {
    let mut conn = server.raw_connection();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .expect("INFO");
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never synced: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A failover demotes the server while it holds pending work (its data
/// now replicated from the new primary): a settle's items are `Failed` with
/// `READONLY` and stay pending, the connection is replaced, and once the
/// server is a primary again the same settle succeeds.
#[tokio::test]
async fn a_settle_on_a_demoted_server_fails_its_items_and_keeps_them_pending() {
    let server = TestRedis::start_with_args(&[]);
    let other = TestRedis::start_with_args(&[]);
    let prefix = server.unique_prefix();
    let (stream, results) = (format!("{prefix}:s"), format!("{prefix}:r"));
    let broker = server.broker().await;
    let ids = delivered(&broker, &stream, 2).await;
    let port_of = |s: &TestRedis| s.port().expect("a private server").to_string();
    // `other` takes a copy and becomes the primary; `server` follows it.
    raw(&other, &["REPLICAOF", "127.0.0.1", &port_of(&server)]);
    wait_synced(&other);
    raw(&other, &["REPLICAOF", "NO", "ONE"]);
    raw(&server, &["REPLICAOF", "127.0.0.1", &port_of(&other)]);
    wait_synced(&server);

    let settle =
        Settle::new(&stream, "g", "w").item(SettleItem::new(ids[0]).append(entry(&results, 1)));
    let outcomes = broker.settle(settle.clone()).await.expect("the call");
    assert!(
        matches!(&outcomes[0], Settled::Failed(why) if why.starts_with("READONLY")),
        "{outcomes:?}"
    );
    assert_eq!(broker.connection_replacements(), 1);
    assert_eq!(
        broker
            .pending_summary(&stream, "g")
            .await
            .expect("pending")
            .count,
        2
    );

    raw(&server, &["REPLICAOF", "NO", "ONE"]);
    let outcomes = broker.settle(settle).await.expect("settle");
    assert!(
        matches!(&outcomes[0], Settled::Done(a) if a.len() == 1),
        "{outcomes:?}"
    );
}
