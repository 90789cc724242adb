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
/// the key lives on another one. A single-node broker cannot follow it, so
/// retrying cannot help; the cluster client follows redirects itself.
const REDIRECT_CODES: &[&str] = &["MOVED", "ASK"];

/// Whether an error code is a cluster redirect (`MOVED`, `ASK`).
pub(crate) fn is_redirect(code: &str) -> bool {
    REDIRECT_CODES.contains(&code)
}

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
    if err.kind() == RedisKind::ClusterConnectionNotFound {
        // The cluster client has no connection to the slot's node yet (a
        // failover under way): as `CLUSTERDOWN`, wait it out.
        return Error::Unavailable(format!("{} on '{}': {err}", op.name, op.stream));
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

/// The text of Redis's `UNBLOCKED` reply to a read blocked on a stream
/// that was deleted.
const KEY_GONE: &str = "the stream key no longer exists";

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
        // A read blocked on a stream deleted meanwhile (`DEL`): the key,
        // and so its group, is gone, as `NOGROUP` says of the next read.
        "UNBLOCKED" if detail.contains(KEY_GONE) => Some(Error::NoGroup {
            stream,
            group: op.group.to_owned(),
        }),
        code if AUTH_CODES.contains(&code) => Some(Error::Auth {
            message: format!("{} on '{}': {code} {detail}", op.name, op.stream),
            source: None,
        }),
        code if UNAVAILABLE_CODES.contains(&code) => Some(Error::Unavailable(format!(
            "{} on '{}': {code} {detail}",
            op.name, op.stream
        ))),
        code if REDIRECT_CODES.contains(&code) => Some(Error::Unsupported(format!(
            "{} on '{}': {code} {detail}: the server is a Redis Cluster node; connect with \
             RedisConfig::cluster (crewq ... --cluster) and the cluster keyspace, or point \
             crewq at a standalone (or Sentinel-managed) server",
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
mod tests;
