//! Blocking reads on pooled connections of their own: killed or cancelled
//! ones cost one read at most, a long `BLOCK` is not cut short, a blocked
//! read stalls no other command, and `BLOCK 0` waits for an append.

use std::time::{Duration, Instant};

use crewq_core::{Broker, GroupStart, ReadGroup};
use crewq_tests::redis_server::TestRedis;

use super::{entry, private_server};

/// The value of one `INFO` field, such as `blocked_clients`.
fn info_field(conn: &mut redis::Connection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query(conn).expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO: {info}"))
}

/// Polls `condition` for up to two seconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pooled_blocking_connections_killed_by_the_server_fail_one_read_only() {
    let server = private_server();
    let stream = format!("{}:s", server.unique_prefix());
    let broker = server.broker().await;
    broker
        .group_create(&stream, "g", GroupStart::Latest, true)
        .await
        .expect("group");
    let read = ReadGroup::new(&stream, "g", "c").block(Duration::from_millis(50));
    let (a, b) = tokio::join!(broker.read_group(&read), broker.read_group(&read));
    a.expect("read");
    b.expect("read");
    assert_eq!(broker.idle_blocking_connections(), 2);

    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .exec(&mut server.raw_connection())
        .expect("CLIENT KILL");
    let err = broker
        .read_group(&read)
        .await
        .expect_err("a dead connection");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(
        broker.idle_blocking_connections(),
        0,
        "the other stale connection went too"
    );
    broker.read_group(&read).await.expect("a fresh connection");
}

#[tokio::test]
async fn a_cancelled_blocking_read_does_not_poison_the_pool() {
    let server = private_server();
    let stream = format!("{}:s", server.unique_prefix());
    let broker = server.broker().await;
    broker
        .group_create(&stream, "g", GroupStart::Latest, true)
        .await
        .expect("group");
    let mut raw = server.raw_connection();
    let read = ReadGroup::new(&stream, "g", "c").block(Duration::from_secs(30));

    let cancelled =
        tokio::time::timeout(Duration::from_millis(300), broker.read_group(&read)).await;
    assert!(
        cancelled.is_err(),
        "nothing to read: the read was still blocked"
    );
    assert_eq!(
        broker.idle_blocking_connections(),
        0,
        "a connection whose reply is still due went back to the pool"
    );
    // Closing that connection unblocks it on the server.
    eventually("the server no longer blocks on the dropped read", || {
        info_field(&mut raw, "blocked_clients") == 0
    })
    .await;

    broker.xadd(entry(&stream, 1)).await.expect("xadd");
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(5), broker.read_group(&read))
        .await
        .expect("not stuck behind the cancelled BLOCK")
        .expect("read");
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        broker.idle_blocking_connections(),
        1,
        "a finished read gives its connection back"
    );

    // Reads one after another reuse that one connection.
    let before = info_field(&mut raw, "connected_clients");
    for n in 0..5 {
        broker.xadd(entry(&stream, n)).await.expect("xadd");
        broker.read_group(&read).await.expect("read");
    }
    assert_eq!(info_field(&mut raw, "connected_clients"), before);
}

#[tokio::test]
async fn a_block_longer_than_redis_rs_default_timeout_is_not_cut_short() {
    let server = TestRedis::start();
    let stream = format!("{}:s", server.unique_prefix());
    let broker = server.broker().await;
    broker
        .group_create(&stream, "g", GroupStart::Latest, true)
        .await
        .expect("group");
    let block = Duration::from_millis(1_200);
    let started = Instant::now();
    let got = broker
        .read_group(&ReadGroup::new(&stream, "g", "c").block(block))
        .await
        .expect("a block that times out is an empty read, not an error");
    assert!(got.is_empty());
    assert!(
        started.elapsed() >= block,
        "returned after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_blocked_read_does_not_stall_other_commands() {
    let server = TestRedis::start();
    let stream = format!("{}:s", server.unique_prefix());
    let broker = server.broker().await;
    broker
        .group_create(&stream, "g", GroupStart::Latest, true)
        .await
        .expect("group");
    let read = ReadGroup::new(&stream, "g", "c").block(Duration::from_secs(2));
    let others = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        for _ in 0..10 {
            broker.xlen(&stream).await.expect("xlen");
        }
        started.elapsed()
    };
    let (blocked, others) = tokio::join!(broker.read_group(&read), others);
    assert!(blocked.expect("read").is_empty());
    assert!(
        others < Duration::from_millis(500),
        "stalled for {others:?}"
    );
}

#[tokio::test]
async fn block_zero_waits_until_an_append_and_sub_millisecond_blocks_do_not() {
    let server = TestRedis::start();
    let stream = format!("{}:s", server.unique_prefix());
    let broker = server.broker().await;
    broker
        .group_create(&stream, "g", GroupStart::Latest, true)
        .await
        .expect("group");

    // 1 µs must round up to BLOCK 1, not down to BLOCK 0 ("forever").
    let tiny = ReadGroup::new(&stream, "g", "c").block(Duration::from_micros(1));
    let got = tokio::time::timeout(Duration::from_secs(3), broker.read_group(&tiny))
        .await
        .expect("a sub-millisecond block returns")
        .expect("read");
    assert!(got.is_empty());

    let forever = ReadGroup::new(&stream, "g", "c").block(Duration::ZERO);
    let append = async {
        // Longer than redis-rs's default response time-out of 500 ms.
        tokio::time::sleep(Duration::from_millis(700)).await;
        broker.xadd(entry(&stream, 1)).await.expect("xadd")
    };
    let (got, id) = tokio::join!(broker.read_group(&forever), append);
    let got = got.expect("woken by the append");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
}
