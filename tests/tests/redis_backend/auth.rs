//! Credentials in URLs: an ACL user or the default user's password
//! authenticates, and a password never shows in what the broker prints.

use crewq_core::{Broker, ErrorKind};
use crewq_redis::{RedisBroker, RedisConfig};
use crewq_tests::redis_server::TestRedis;

use super::entry;

/// An ACL user and the default user's password, for the auth tests.
const USER: &str = "alice";
const USER_PASSWORD: &str = "wonderland-7f3a";
const DEFAULT_PASSWORD: &str = "s3cret-default-91c2";

fn port_of(server: &TestRedis) -> u16 {
    server.port().expect("a private server")
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
