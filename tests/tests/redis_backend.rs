//! What only the Redis backend has: URLs with credentials, connections that
//! drop, blocking reads on connections of their own, error mapping of real
//! replies, and time-outs.

use std::time::{Duration, Instant};

use crewq_core::{Broker, Error, ErrorKind, Fields, GroupStart, NewEntry, ReadGroup, StreamId};
use crewq_redis::{RedisBroker, RedisConfig};
use crewq_tests::redis_server::TestRedis;

#[path = "redis_backend/auth.rs"]
mod auth;
#[path = "redis_backend/autoclaim_recorded.rs"]
mod autoclaim_recorded;
#[path = "redis_backend/blocking.rs"]
mod blocking;
#[path = "redis_backend/connect.rs"]
mod connect;
#[path = "redis_backend/failover.rs"]
mod failover;
#[path = "redis_backend/half_open.rs"]
mod half_open;
#[path = "redis_backend/proxy.rs"]
mod proxy;
#[path = "redis_backend/redirect.rs"]
mod redirect;
#[path = "redis_backend/settle_items.rs"]
mod settle_items;

pub(crate) fn entry(stream: &str, n: u32) -> NewEntry {
    NewEntry::new(stream, Fields::new().with("n", n.to_string()))
}

/// A server of this test's own, even when `CREWQ_REDIS_URL` names a shared
/// one: for tests that kill clients or read server-wide counters.
pub(crate) fn private_server() -> TestRedis {
    TestRedis::start_with_args(&[])
}

#[tokio::test]
async fn a_key_of_another_type_is_wrongtype() {
    let server = TestRedis::start();
    let key = format!("{}:plain", server.unique_prefix());
    let mut raw = server.raw_connection();
    redis::cmd("SET")
        .arg(&key)
        .arg("x")
        .exec(&mut raw)
        .expect("SET");
    let broker = server.broker().await;

    let err = broker.xadd(entry(&key, 1)).await.expect_err("not a stream");
    assert!(matches!(&err, Error::WrongType(k) if *k == key), "{err:?}");
    let err = broker.xlen(&key).await.expect_err("not a stream");
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err:?}");
    let results = broker
        .xadd_many(vec![entry(&key, 1), entry(&format!("{key}:ok"), 2)])
        .await
        .expect("the pipeline itself succeeds");
    assert_eq!(
        results[0].as_ref().map_err(Error::kind),
        Err(ErrorKind::WrongType)
    );
    assert!(results[1].is_ok(), "{:?}", results[1]);
}

/// Appends-once to one stream share a script call, yet each fails alone:
/// a marker key of another type fails its own entry, the others append.
#[tokio::test]
async fn an_append_once_fails_alone_within_its_script_call() {
    let server = TestRedis::start();
    let prefix = server.unique_prefix();
    let stream = format!("{prefix}:s");
    let mut raw = server.raw_connection();
    redis::cmd("HSET")
        .arg(format!("{prefix}:m2"))
        .arg("f")
        .arg("v")
        .exec(&mut raw)
        .expect("HSET");
    let broker = server.broker().await;
    let once = |marker: &str| {
        crewq_core::OnceEntry::new(
            entry(&stream, 1),
            format!("{prefix}:{marker}"),
            Duration::from_secs(60),
        )
    };
    let results = broker
        .xadd_once(vec![once("m1"), once("m2"), once("m3"), once("m1")])
        .await
        .expect("the call itself succeeds");
    let kinds: Vec<_> = results
        .iter()
        .map(|r| match r {
            Ok(crewq_core::AddedOnce::Added(_)) => "added",
            Ok(crewq_core::AddedOnce::Duplicate(_)) => "duplicate",
            Err(err) if err.kind() == ErrorKind::WrongType => "wrongtype",
            Err(_) => "other error",
        })
        .collect();
    assert_eq!(
        kinds,
        ["added", "wrongtype", "added", "duplicate"],
        "{results:?}"
    );
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 2);
}

/// The settle script reads ownership once for the batch's id range; when
/// the consumer holds many more entries in that range than the read may
/// list, it looks items up one by one: the outcome is the same.
#[tokio::test]
async fn settle_is_exact_when_the_consumer_holds_many_entries_between_its_items() {
    let server = TestRedis::start();
    let prefix = server.unique_prefix();
    let stream = format!("{prefix}:s");
    let results = format!("{prefix}:results");
    let broker = server.broker().await;
    broker
        .group_create(&stream, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    for n in 0..100 {
        broker.xadd(entry(&stream, n)).await.expect("xadd");
    }
    let read = ReadGroup::new(&stream, "g", "me").count(100);
    let ids: Vec<_> = broker
        .read_group(&read)
        .await
        .expect("read")
        .iter()
        .map(|e| e.id)
        .collect();
    broker
        .claim_ids(&stream, "g", "other", Duration::ZERO, &ids[50..51])
        .await
        .expect("claim");
    let item = |id| {
        crewq_core::SettleItem::new(id)
            .append(NewEntry::new(&results, Fields::new().with("r", "1")))
    };
    let settle = crewq_core::Settle::new(&stream, "g", "me")
        .item(item(ids[0]))
        .item(item(ids[50]))
        .item(item(ids[99]));
    let outcomes = broker.settle(settle).await.expect("settle");
    let done: Vec<bool> = outcomes
        .iter()
        .map(|o| matches!(o, crewq_core::Settled::Done(ids) if ids.len() == 1))
        .collect();
    assert_eq!(done, [true, false, true], "{outcomes:?}");
    assert_eq!(broker.xlen(&results).await.expect("xlen"), 2);
    let summary = broker.pending_summary(&stream, "g").await.expect("pending");
    assert_eq!(summary.count, 98);
}

#[tokio::test]
async fn id_too_small_reports_the_top_id() {
    let server = TestRedis::start();
    let stream = format!("{}:s", server.unique_prefix());
    let broker = server.broker().await;
    broker
        .xadd(entry(&stream, 1).with_id(StreamId::new(5, 5)))
        .await
        .expect("xadd");
    let err = broker
        .xadd(entry(&stream, 2).with_id(StreamId::new(5, 1)))
        .await
        .expect_err("too small");
    assert!(
        matches!(err, Error::IdTooSmall { id, top, .. }
            if id == StreamId::new(5, 1) && top == StreamId::new(5, 5)),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_broker_recovers_after_the_server_drops_its_connections() {
    let server = private_server();
    let stream = format!("{}:s", server.unique_prefix());
    let broker = server.broker().await;
    broker.xadd(entry(&stream, 1)).await.expect("xadd");
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut server.raw_connection())
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the broker's connection was killed");

    // The command that finds the connection dead may fail, transiently;
    // the connection is re-opened behind it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let len = loop {
        match broker.xlen(&stream).await {
            Ok(len) => break len,
            Err(err) => {
                assert!(err.is_transient(), "{err:?}");
                assert!(Instant::now() < deadline, "no reconnection: {err:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(len, 1);
    broker
        .xadd(entry(&stream, 2))
        .await
        .expect("xadd after reconnecting");
}

#[tokio::test]
async fn a_slow_reply_is_a_timeout() {
    let server = TestRedis::start_with_args(&["--enable-debug-command", "local"]);
    let stream = format!("{}:s", server.unique_prefix());
    let broker = RedisConfig::new(server.url())
        .response_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect");
    let mut raw = server.raw_connection();
    let sleeper =
        std::thread::spawn(move || redis::cmd("DEBUG").arg("SLEEP").arg("1").exec(&mut raw));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = broker
        .xlen(&stream)
        .await
        .expect_err("the server is asleep");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.is_transient());
    sleeper.join().expect("thread").expect("DEBUG SLEEP");
    assert_eq!(broker.xlen(&stream).await.expect("awake again"), 0);
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_connection_error() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let err = RedisConfig::new(format!("redis://127.0.0.1:{port}"))
        .retries(0)
        .connection_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect_err("nothing listens");
    assert!(err.is_transient(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps its source: {err:?}"
    );
}

#[tokio::test]
async fn a_malformed_url_is_an_invalid_argument() {
    let err = RedisBroker::connect("http://user:hidden@example.invalid")
        .await
        .expect_err("not a Redis URL");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err:?}");
    assert!(!err.to_string().contains("hidden"), "{err}");
}

#[tokio::test]
async fn a_resp3_url_speaks_resp3() {
    let server = private_server();
    let broker = RedisBroker::connect(&format!("{}?protocol=resp3", server.url()))
        .await
        .expect("connect");
    broker.xlen("k").await.expect("xlen");
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.raw_connection())
        .expect("CLIENT LIST");
    assert!(clients.contains("resp=3"), "{clients}");
}

#[tokio::test]
async fn ack_and_add_reports_a_failure_inside_exec_which_redis_does_not_roll_back() {
    use crewq_core::{Ack, AckAndAdd};
    let server = TestRedis::start();
    let prefix = server.unique_prefix();
    let (stream, plain) = (format!("{prefix}:s"), format!("{prefix}:plain"));
    let broker = server.broker().await;
    broker
        .group_create(&stream, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    let id = broker.xadd(entry(&stream, 1)).await.expect("xadd");
    broker
        .read_group(&ReadGroup::new(&stream, "g", "c"))
        .await
        .expect("read");
    redis::cmd("SET")
        .arg(&plain)
        .arg("x")
        .exec(&mut server.raw_connection())
        .expect("SET");

    let step = AckAndAdd::new()
        .ack(Ack::new(&stream, "g", vec![id]))
        .append(entry(&plain, 2));
    let err = broker
        .ack_and_add(step)
        .await
        .expect_err("WRONGTYPE inside EXEC");
    assert!(
        matches!(&err, Error::WrongType(key) if *key == plain),
        "{err:?}"
    );
    // The ack after the failed append was applied all the same: the step
    // is atomic against other clients, not all-or-nothing against errors.
    let summary = broker.pending_summary(&stream, "g").await.expect("pending");
    assert_eq!(summary.count, 0);
}
