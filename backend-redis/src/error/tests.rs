//! Tests of the error mapping, on replies as redis-rs parses them.

use super::*;
use crewq_core::ErrorKind;

/// An error reply as redis-rs parses it off the wire, so known codes
/// (`LOADING`, `TRYAGAIN` ...) get redis-rs's own kinds.
fn reply(code: &str, detail: &str) -> RedisError {
    let wire = format!("-{code} {detail}\r\n");
    match redis::parse_redis_value(wire.as_bytes()) {
        Ok(redis::Value::ServerError(err)) => from_server_error(err),
        other => panic!("not an error reply: {other:?}"),
    }
}

fn kind_of(err: RedisError) -> ErrorKind {
    map_error(err, &Op::group("XADD", "s", "g")).kind()
}

#[test]
fn maps_stream_error_replies() {
    let cases = [
        (
            "NOGROUP",
            "No such key 's' or consumer group 'g'",
            ErrorKind::NoGroup,
        ),
        // A blocked read whose stream was deleted (Redis 7.0, seen).
        (
            "UNBLOCKED",
            "the stream key no longer exists",
            ErrorKind::NoGroup,
        ),
        (
            "BUSYGROUP",
            "Consumer Group name already exists",
            ErrorKind::GroupExists,
        ),
        (
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value",
            ErrorKind::WrongType,
        ),
        (
            "WRONGPASS",
            "invalid username-password pair or user is disabled.",
            ErrorKind::Auth,
        ),
        ("NOAUTH", "Authentication required.", ErrorKind::Auth),
        (
            "NOPERM",
            "this user has no permissions to run the 'xadd' command",
            ErrorKind::Auth,
        ),
        (
            "ERR",
            "The ID specified in XADD is equal or smaller than the target stream top item",
            ErrorKind::IdTooSmall,
        ),
        (
            "ERR",
            "The ID specified in XADD must be greater than 0-0",
            ErrorKind::IdTooSmall,
        ),
        ("ERR", "no such key", ErrorKind::NoSuchKey),
        (
            "ERR",
            "The XGROUP subcommand requires the key to exist. Note that ...",
            ErrorKind::NoSuchKey,
        ),
        (
            "ERR",
            "The stream has exhausted the last possible ID, unable to add more items",
            ErrorKind::IdExhausted,
        ),
        (
            "ERR",
            "Invalid stream ID specified as stream command argument",
            ErrorKind::InvalidId,
        ),
        (
            "ERR",
            "invalid start ID for the interval",
            ErrorKind::InvalidId,
        ),
        (
            "ERR",
            "invalid end ID for the interval",
            ErrorKind::InvalidId,
        ),
        (
            "LOADING",
            "Redis is loading the dataset in memory",
            ErrorKind::Unavailable,
        ),
        (
            "BUSY",
            "Redis is busy running a script.",
            ErrorKind::Unavailable,
        ),
        (
            "TRYAGAIN",
            "Multiple keys request during rehashing of slot",
            ErrorKind::Unavailable,
        ),
        ("CLUSTERDOWN", "The cluster is down", ErrorKind::Unavailable),
        (
            "MASTERDOWN",
            "Link with MASTER is down",
            ErrorKind::Unavailable,
        ),
        ("ERR", "syntax error", ErrorKind::Backend),
        (
            "READONLY",
            "You can't write against a read only replica.",
            ErrorKind::Unavailable,
        ),
        (
            "NOREPLICAS",
            "Not enough good replicas to write.",
            ErrorKind::Unavailable,
        ),
        (
            "OOM",
            "command not allowed when used memory > 'maxmemory'.",
            ErrorKind::Unavailable,
        ),
        ("MOVED", "3999 127.0.0.1:6381", ErrorKind::Unsupported),
        ("ASK", "3999 127.0.0.1:6381", ErrorKind::Unsupported),
        ("ERR", "COUNT must be > 0", ErrorKind::InvalidArgument),
        (
            "ERR",
            "Insufficient memory, failed allocating transient memory, COUNT too high.",
            ErrorKind::InvalidArgument,
        ),
    ];
    for (code, detail, kind) in cases {
        assert_eq!(kind_of(reply(code, detail)), kind, "{code} {detail}");
    }
}

/// Transient and refused replies keep the server's own text, and a
/// cluster redirect says what is wrong.
#[test]
fn texts_carry_the_servers_reply() {
    let op = Op::new("XADD", "s");
    let readonly = map_error(
        reply("READONLY", "You can't write against a read only replica."),
        &op,
    );
    assert!(readonly.is_transient());
    assert!(
        readonly
            .to_string()
            .contains("READONLY You can't write against a read only replica."),
        "{readonly}"
    );
    let moved = map_error(reply("MOVED", "3999 127.0.0.1:6381"), &op);
    assert!(!moved.is_transient());
    let text = moved.to_string();
    assert!(text.contains("MOVED 3999 127.0.0.1:6381"), "{text}");
    assert!(text.contains("Redis Cluster"), "{text}");
    let count = map_error(reply("ERR", "COUNT must be > 0"), &op);
    assert!(
        count.to_string().contains("ERR COUNT must be > 0"),
        "{count}"
    );
    let interval = map_error(reply("ERR", "invalid start ID for the interval"), &op);
    assert!(
        interval
            .to_string()
            .starts_with("ERR invalid start ID for the interval"),
        "{interval}"
    );
}

#[test]
fn fills_in_stream_and_group() {
    let err = map_error(
        reply("NOGROUP", "x"),
        &Op::group("XACK", "tasks", "workers"),
    );
    assert!(
        matches!(&err, Error::NoGroup { stream, group } if stream == "tasks" && group == "workers"),
        "{err:?}"
    );
    let err = map_error(
        reply("ERR", ID_TOO_SMALL[0]),
        &Op::new("XADD", "tasks").with_id(StreamId::new(5, 1)),
    );
    assert!(
        matches!(&err, Error::IdTooSmall { id, .. } if *id == StreamId::new(5, 1)),
        "{err:?}"
    );
}

#[test]
fn maps_transport_failures_as_transient_with_source() {
    use std::error::Error as _;
    let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    let err = map_error(dropped, &Op::new("XLEN", "s"));
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.source().is_some());
    let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(kind_of(refused), ErrorKind::Connection);
    let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
    assert_eq!(kind_of(timeout), ErrorKind::Timeout);
    assert!(
        map_error(
            RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)),
            &Op::new("XLEN", "s")
        )
        .is_transient()
    );
}

#[test]
fn a_cluster_node_not_connected_yet_is_waited_out() {
    let err = RedisError::from((
        redis::ErrorKind::ClusterConnectionNotFound,
        "connection to node in cluster not found",
    ));
    assert_eq!(kind_of(err), ErrorKind::Unavailable);
}
