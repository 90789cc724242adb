//! A Redis Cluster node answers a key it does not serve with `MOVED`: this
//! single-node client cannot follow it, and says so (finding 4).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crewq_core::{Broker, ErrorKind, Fields, NewEntry};
use crewq_tests::redis_server::TestRedis;

/// A loopback port free now, for a cluster bus (`port + 10000` may not be).
fn free_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port().to_string()
}

fn cluster_node(bus_port: &str) -> TestRedis {
    TestRedis::start_with_args(&["--cluster-enabled", "yes", "--cluster-port", bus_port])
}

fn query(server: &TestRedis, args: &[&str]) -> String {
    let mut conn = server.raw_connection();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    match cmd.query::<redis::Value>(&mut conn) {
        Ok(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(other) => format!("{other:?}"),
        Err(err) => panic!("{args:?}: {err}"),
    }
}

/// Two cluster nodes, every slot on the first: the second answers `MOVED`,
/// which is a non-transient `Unsupported` naming the cluster.
#[tokio::test]
async fn a_moved_reply_says_the_server_is_a_cluster_node() {
    let (bus_a, bus_b) = (free_port(), free_port());
    let owner = cluster_node(&bus_a);
    let other = cluster_node(&bus_b);
    query(&owner, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    let owner_port = owner.port().expect("a private server").to_string();
    query(
        &other,
        &["CLUSTER", "MEET", "127.0.0.1", &owner_port, &bus_a],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = query(&other, &["CLUSTER", "INFO"]);
        if info.contains("cluster_state:ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never formed: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let broker = other.broker().await;
    let err = broker
        .xadd(NewEntry::new("tasks", Fields::new().with("n", "1")))
        .await
        .expect_err("another node serves the key");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("MOVED"), "{text}");
    assert!(text.contains("Redis Cluster"), "{text}");
}
