//! What only the Redis backend has: URLs with credentials, connections that
//! drop, blocking reads on connections of their own, error mapping of real
//! replies, and time-outs.

use std::time::{Duration, Instant};

use crewq_core::{Broker, Error, ErrorKind, Fields, GroupStart, NewEntry, ReadGroup, StreamId};
use crewq_redis::{RedisBroker, RedisConfig};
use crewq_tests::redis_server::TestRedis;

#[path = "redis_backend/autoclaim_recorded.rs"]
mod autoclaim_recorded;
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

/// An ACL user and the default user's password, for the auth tests.
const USER: &str = "alice";
const USER_PASSWORD: &str = "wonderland-7f3a";
const DEFAULT_PASSWORD: &str = "s3cret-default-91c2";

fn entry(stream: &str, n: u32) -> NewEntry {
    NewEntry::new(stream, Fields::new().with("n", n.to_string()))
}

fn port_of(server: &TestRedis) -> u16 {
    server.port().expect("a private server")
}

/// A server of this test's own, even when `CREWQ_REDIS_URL` names a shared
/// one: for tests that kill clients or read server-wide counters.
fn private_server() -> TestRedis {
    TestRedis::start_with_args(&[])
}

/// A server that needs a password, with an ACL user besides the default one.
fn server_with_auth() -> TestRedis {
    let user_rule = format!(">{USER_PASSWORD}");
    TestRedis::start_with_args(&[
        "--requirepass",
        DEFAULT_PASSWORD,
        "--user",
        USER,
        "on",
        &user_rule,
        "~*",
        "&*",
        "+@all",
    ])
}

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
async fn acl_user_and_password_from_the_url_authenticate() {
    let server = server_with_auth();
    let url = format!(
        "redis://{USER}:{USER_PASSWORD}@127.0.0.1:{}/0",
        port_of(&server)
    );
    let broker = RedisBroker::connect(&url).await.expect("authenticated");
    broker.xadd(entry("s", 1)).await.expect("xadd");
    assert_eq!(broker.xlen("s").await.expect("xlen"), 1);

    let whoami: String = {
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut conn = client.get_connection().expect("raw connection");
        redis::cmd("ACL")
            .arg("WHOAMI")
            .query(&mut conn)
            .expect("whoami")
    };
    assert_eq!(whoami, USER);
}

#[tokio::test]
async fn default_user_password_from_the_url_authenticates() {
    let server = server_with_auth();
    let url = format!("redis://:{DEFAULT_PASSWORD}@127.0.0.1:{}", port_of(&server));
    let broker = RedisBroker::connect(&url).await.expect("authenticated");
    assert_eq!(broker.xlen("missing").await.expect("xlen"), 0);
}

#[tokio::test]
async fn the_password_never_shows_in_debug_display_or_errors() {
    let server = server_with_auth();
    let port = port_of(&server);
    let url = format!("redis://{USER}:{USER_PASSWORD}@127.0.0.1:{port}/0");
    let broker = RedisBroker::connect(&url).await.expect("authenticated");
    let shown = [
        format!("{broker:?}"),
        format!("{broker}"),
        broker.redacted_url().to_owned(),
        format!("{:?}", RedisConfig::new(url.as_str())),
    ];
    for text in &shown {
        assert!(!text.contains(USER_PASSWORD), "password shown: {text}");
    }
    assert_eq!(
        broker.redacted_url(),
        format!("redis://{USER}:***@127.0.0.1:{port}/0")
    );

    let wrong = format!("redis://{USER}:not-{USER_PASSWORD}@127.0.0.1:{port}/0");
    let err = RedisConfig::new(wrong.as_str())
        .connect()
        .await
        .expect_err("wrong password");
    assert_eq!(err.kind(), ErrorKind::Auth, "{err:?}");
    assert!(!err.is_transient(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(USER_PASSWORD), "{err:?}");
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
