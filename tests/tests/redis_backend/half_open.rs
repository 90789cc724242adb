//! Half-open links (finding 2): connections that go silent (no FIN, no RST)
//! are given up after one response time-out, and the next calls go out on
//! fresh ones, for the shared connection and for blocking reads.

use std::time::Duration;

use crewq_core::{Broker, ErrorKind, Fields, GroupStart, NewEntry, ReadGroup};
use crewq_redis::{RedisBroker, RedisConfig};
use crewq_tests::redis_server::TestRedis;

use super::proxy::SilencingProxy;

/// Short, so a silent link costs the test little; still far above a
/// loopback round trip.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(400);

async fn broker_via(proxy: &SilencingProxy) -> RedisBroker {
    RedisConfig::new(proxy.url())
        .response_timeout(RESPONSE_TIMEOUT)
        .block_margin(RESPONSE_TIMEOUT)
        .connect()
        .await
        .expect("connect through the proxy")
}

fn entry(stream: &str) -> NewEntry {
    NewEntry::new(stream, Fields::new().with("n", "1"))
}

/// Commands work, the link goes silent, the next command times out, and
/// the following ones succeed on a new connection.
#[tokio::test]
async fn a_silent_shared_connection_is_replaced_after_a_response_timeout() {
    let server = TestRedis::start_with_args(&[]);
    let proxy = SilencingProxy::start(server.port());
    let broker = broker_via(&proxy).await;
    let stream = format!("{}:s", server.unique_prefix());
    broker
        .xadd(entry(&stream))
        .await
        .expect("through the proxy");

    proxy.silence_existing();
    let err = broker
        .xadd(entry(&stream))
        .await
        .expect_err("a silent link");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let mut failures = Vec::new();
    for _ in 0..3 {
        match broker.xadd(entry(&stream)).await {
            Ok(_) => break,
            Err(err) => failures.push(err.to_string()),
        }
    }
    assert!(failures.len() < 3, "never recovered: {failures:?}");
    assert!(broker.connection_replacements() >= 1);
    assert_eq!(broker.xlen(&stream).await.expect("xlen"), 2);
    // A second silence is survived the same way.
    proxy.silence_existing();
    let err = broker.xlen(&stream).await.expect_err("silent again");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(broker.xlen(&stream).await.expect("a fresh link"), 2);
}

/// A pooled blocking-read connection that went silent is given up at its
/// deadline with its idle siblings, so the next read opens a fresh one
/// instead of waiting out another silent link.
#[tokio::test]
async fn silent_blocking_read_connections_are_not_reused() {
    let server = TestRedis::start_with_args(&[]);
    let proxy = SilencingProxy::start(server.port());
    let broker = broker_via(&proxy).await;
    let stream = format!("{}:s", server.unique_prefix());
    broker
        .group_create(&stream, "g", GroupStart::BEGINNING, true)
        .await
        .expect("group");
    let read = ReadGroup::new(&stream, "g", "w").block(Duration::from_millis(100));
    // Two reads at once leave two connections in the pool.
    let (a, b) = tokio::join!(broker.read_group(&read), broker.read_group(&read));
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert_eq!(broker.idle_blocking_connections(), 2);

    proxy.silence_existing();
    let err = broker.read_group(&read).await.expect_err("a silent link");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let entries = broker
        .read_group(&read)
        .await
        .expect("the next read goes out on a fresh connection");
    assert!(entries.is_empty());
}
