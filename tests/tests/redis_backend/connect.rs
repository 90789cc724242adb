//! Connecting while Redis is down or silent (finding 4): a waiting connect
//! keeps trying up to its bound, then fails with one clear error; it never
//! hangs past the bound.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crewq_core::{Broker, Error, ErrorKind};
use crewq_redis::RedisConfig;
use crewq_tests::redis_server::TestRedis;

use super::proxy::SilencingProxy;

/// The bound the tests wait for.
const BOUND: Duration = Duration::from_secs(1);

/// Far above the bound, far below redis-rs's own ~9.5 s of retries and a
/// hung handshake: a connect still running then did not honour its bound.
const GIVE_UP: Duration = Duration::from_secs(8);

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

async fn connect_waiting(url: &str) -> (Error, Duration) {
    let started = Instant::now();
    let connect = RedisConfig::new(url).wait_for_server(BOUND).connect();
    let result = tokio::time::timeout(GIVE_UP, connect)
        .await
        .expect("the connect honours its bound");
    let err = result.expect_err("nothing to connect to");
    (err, started.elapsed())
}

#[tokio::test]
async fn a_waiting_connect_to_a_closed_port_gives_up_at_its_bound() {
    let port = closed_port();
    let (err, took) = connect_waiting(&format!("redis://127.0.0.1:{port}/")).await;
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("bound 1s"), "{text}");
    assert!(took >= BOUND, "it kept trying until its bound: {took:?}");
}

#[tokio::test]
async fn a_waiting_connect_to_a_silent_server_gives_up_at_its_bound() {
    let silent = SilencingProxy::start(None);
    let (err, took) = connect_waiting(&silent.url()).await;
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.to_string().contains("bound 1s"), "{err}");
    assert!(took >= BOUND, "{took:?}");
}

/// A server that comes up while the connect waits is used.
#[tokio::test]
async fn a_waiting_connect_succeeds_once_the_server_is_up() {
    let server = TestRedis::start_with_args(&[]);
    let port = closed_port();
    let upstream = server.port();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        SilencingProxy::start_on(port, upstream)
    });
    let broker = RedisConfig::new(format!("redis://127.0.0.1:{port}/"))
        .wait_for_server(Duration::from_secs(30))
        .connect()
        .await
        .expect("connects once the server is up");
    let _proxy = late.join().expect("the proxy started");
    assert_eq!(broker.xlen("nothing").await.expect("xlen"), 0);
}
