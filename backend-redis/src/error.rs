//! Turns redis-rs errors and Redis error replies into crewq's [`Error`] kinds.

use crewq_core::{Error, StreamId};
use redis::{ErrorKind as RedisKind, RedisError};

/// Error codes meaning "not now, nothing was applied": a server loading its
/// data set, a busy script, a cluster resharding or failing over, a node a
/// failover demoted to a replica (`READONLY`: the shared connection is then
/// replaced, see `shared.rs`), too few replicas for `min-replicas-to-write`,
/// or memory full under `noeviction` (`OOM`). Callers wait these out.
const UNAVAILABLE_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "NOREPLICAS",
    "OOM",
];

/// Error codes of a cluster redirect: the server is a Redis Cluster node and
/// the key lives on another one. This client speaks to a single node, so
/// retrying cannot help.
const REDIRECT_CODES: &[&str] = &["MOVED", "ASK"];

/// `ERR` texts of an argument Redis refused (`XAUTOCLAIM`'s `COUNT`).
const INVALID_ARGUMENT: &[&str] = &[
    "COUNT must be > 0",
    "Insufficient memory, failed allocating transient memory, COUNT too high",
];

/// Error codes of a refused identity or permission: retrying cannot help.
const AUTH_CODES: &[&str] = &["WRONGPASS", "NOAUTH", "NOPERM"];

/// `ERR` texts (prefixes of the detail after the code) and what they mean.
const ID_TOO_SMALL: &[&str] = &[
    "The ID specified in XADD is equal or smaller",
    "The ID specified in XADD must be greater than 0-0",
];
const NO_SUCH_KEY: &[&str] = &[
    "no such key",
    "The XGROUP subcommand requires the key to exist",
];
const ID_EXHAUSTED: &str = "exhausted the last possible ID";
const INVALID_ID: &[&str] = &[
    "Invalid stream ID",
    "invalid start ID for the interval",
    "invalid end ID for the interval",
];

/// What a failed command was about, to fill in the error's fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op<'a> {
    /// The command, for messages (`"XADD"`).
    pub name: &'static str,
    /// The stream key.
    pub stream: &'a str,
    /// The group, for `NOGROUP` and `BUSYGROUP`.
    pub group: &'a str,
    /// The explicit id of an `XADD`, for `IdTooSmall`.
    pub id: StreamId,
}

impl<'a> Op<'a> {
    /// A command on `stream`.
    pub fn new(name: &'static str, stream: &'a str) -> Self {
        Op {
            name,
            stream,
            group: "",
            id: StreamId::ZERO,
        }
    }

    /// A command on a group of `stream`.
    pub fn group(name: &'static str, stream: &'a str, group: &'a str) -> Self {
        Op {
            group,
            ..Op::new(name, stream)
        }
    }

    /// With the explicit id of an append.
    pub fn with_id(mut self, id: StreamId) -> Self {
        self.id = id;
        self
    }

    /// Maps an error of this command.
    pub fn error(&self, err: RedisError) -> Error {
        map_error(err, self)
    }

    /// A reply this client cannot read.
    pub fn protocol(&self, what: impl std::fmt::Display) -> Error {
        Error::Protocol(format!("{} on '{}': {what}", self.name, self.stream))
    }
}

/// Maps one redis-rs error, keeping it as the source where the kind has one.
pub(crate) fn map_error(err: RedisError, op: &Op<'_>) -> Error {
    if let Some(code) = err.code() {
        let detail = err.detail().unwrap_or("");
        if let Some(mapped) = map_server_error(code, detail, op) {
            return mapped;
        }
    }
    if err.kind() == RedisKind::AuthenticationFailed || tls_handshake_failed(&err) {
        return Error::Auth {
            message: format!("{} on '{}': {err}", op.name, op.stream),
            source: Some(Box::new(err)),
        };
    }
    if err.is_timeout() {
        return Error::Timeout(format!(
            "{} on '{}': no reply in time ({err})",
            op.name, op.stream
        ));
    }
    if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        return Error::Connection {
            message: format!("{} on '{}': {err}", op.name, op.stream),
            source: Some(Box::new(err)),
        };
    }
    match err.kind() {
        RedisKind::Parse | RedisKind::UnexpectedReturnType => op.protocol(format_args!("{err}")),
        _ => Error::Backend {
            message: format!("{} on '{}': {err}", op.name, op.stream),
            source: Some(Box::new(err)),
        },
    }
}

/// Maps an error reply by its code and text; `None` for the ones that stay
/// backend errors.
fn map_server_error(code: &str, detail: &str, op: &Op<'_>) -> Option<Error> {
    let stream = op.stream.to_owned();
    match code {
        "NOGROUP" => Some(Error::NoGroup {
            stream,
            group: op.group.to_owned(),
        }),
        "BUSYGROUP" => Some(Error::GroupExists {
            stream,
            group: op.group.to_owned(),
        }),
        "WRONGTYPE" => Some(Error::WrongType(stream)),
        code if AUTH_CODES.contains(&code) => Some(Error::Auth {
            message: format!("{} on '{}': {code} {detail}", op.name, op.stream),
            source: None,
        }),
        code if UNAVAILABLE_CODES.contains(&code) => Some(Error::Unavailable(format!(
            "{} on '{}': {code} {detail}",
            op.name, op.stream
        ))),
        code if REDIRECT_CODES.contains(&code) => Some(Error::Unsupported(format!(
            "{} on '{}': {code} {detail}: the server is a Redis Cluster node and crewq-redis \
             speaks to a single node; point it at a standalone (or Sentinel-managed) server",
            op.name, op.stream
        ))),
        "ERR" => {
            if ID_TOO_SMALL.iter().any(|text| detail.starts_with(text)) {
                // Redis does not say what the top id is; the caller may
                // look it up (see `RedisBroker::with_top_id`).
                Some(Error::IdTooSmall {
                    stream,
                    id: op.id,
                    top: StreamId::ZERO,
                })
            } else if NO_SUCH_KEY.iter().any(|text| detail.starts_with(text)) {
                Some(Error::NoSuchKey(stream))
            } else if detail.contains(ID_EXHAUSTED) {
                Some(Error::IdExhausted(stream))
            } else if INVALID_ID.iter().any(|text| detail.starts_with(text)) {
                Some(Error::InvalidId(format!(
                    "{detail} ({} on '{}')",
                    op.name, op.stream
                )))
            } else if INVALID_ARGUMENT.iter().any(|text| detail.starts_with(text)) {
                Some(Error::InvalidArgument(format!(
                    "ERR {detail} ({} on '{}')",
                    op.name, op.stream
                )))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Whether the TLS handshake failed (an untrusted or refused certificate):
/// rustls's error arrives inside an `io::Error`, itself inside the `Arc`
/// redis-rs keeps as its source.
#[cfg(feature = "tls")]
fn tls_handshake_failed(err: &RedisError) -> bool {
    use std::error::Error as StdError;
    fn is_rustls(err: &(dyn StdError + 'static)) -> bool {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.get_ref().is_some_and(|inner| is_rustls(inner));
        }
        if let Some(shared) = err.downcast_ref::<std::sync::Arc<dyn StdError + Send + Sync>>() {
            return is_rustls(shared.as_ref());
        }
        false
    }
    let mut cause = err.source();
    while let Some(err) = cause {
        if is_rustls(err) {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Without TLS there is no handshake to fail.
#[cfg(not(feature = "tls"))]
fn tls_handshake_failed(_err: &RedisError) -> bool {
    false
}

/// Whether a failed command leaves its connection unusable for the next
/// command (as opposed to an error reply on a healthy connection).
pub(crate) fn breaks_connection(err: &RedisError) -> bool {
    !matches!(err.kind(), RedisKind::Server(_) | RedisKind::Extension)
}

/// Builds the [`RedisError`] of an error reply found inside a pipeline's
/// or transaction's results.
pub(crate) fn from_server_error(err: redis::ServerError) -> RedisError {
    RedisError::from(err)
}

#[cfg(test)]
mod tests {
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
}
