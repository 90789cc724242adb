//! The one error type of the Broker contract, with kinds callers act on.

use crate::StreamId;

/// A boxed error from a backend, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A [`Broker`](crate::Broker) failure.
///
/// Each variant is one thing a caller can act on; [`Error::kind`] gives it as
/// a plain value for matching and comparison, [`Error::is_transient`] says
/// whether retrying the same call may succeed.
///
/// A variant that mirrors a Redis error reply displays as that reply does in
/// Redis 7.0 (its code and message, `ERR no such key`), with crewq's context
/// after it, so logs read the same on every backend. The others
/// ([`Error::InvalidArgument`] from crewq's own checks, [`Error::Connection`],
/// [`Error::Timeout`] ...) have no reply to follow; where one carries a
/// server's reply ([`Error::Unavailable`], [`Error::Unsupported`] for a
/// cluster redirect), its text holds it verbatim.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream key or the consumer group does not exist (`NOGROUP`).
    #[error("NOGROUP No such key '{stream}' or consumer group '{group}'")]
    NoGroup {
        /// The stream key.
        stream: String,
        /// The group.
        group: String,
    },
    /// A group of that name already exists on the stream (`BUSYGROUP`).
    #[error("BUSYGROUP Consumer Group name already exists (stream '{stream}', group '{group}')")]
    GroupExists {
        /// The stream key.
        stream: String,
        /// The group.
        group: String,
    },
    /// The command needs the key to exist (`XINFO`, `XGROUP` without MKSTREAM).
    #[error("ERR no such key '{0}'")]
    NoSuchKey(String),
    /// The key holds another type than a stream (`WRONGTYPE`).
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value ('{0}')")]
    WrongType(String),
    /// Text that is not a stream id, or a range end that leaves nothing to
    /// range over. Holds Redis's message (`invalid start ID for the
    /// interval`) or the text that is not an id.
    #[error("ERR {}", invalid_id_text(.0))]
    InvalidId(String),
    /// An explicit id not greater than the stream's top id (or `0-0`).
    #[error("ERR {} (stream '{stream}', id {id}, top {top})", id_too_small_text(*.id))]
    IdTooSmall {
        /// The stream key.
        stream: String,
        /// The rejected id.
        id: StreamId,
        /// The stream's last id at the time.
        top: StreamId,
    },
    /// The stream's last id is the largest possible; no automatic id is left.
    #[error("ERR The stream has exhausted the last possible ID, unable to add more items ('{0}')")]
    IdExhausted(String),
    /// A malformed request, caught before anything was applied.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend cannot do this; nothing was applied.
    #[error("unsupported by this backend: {0}")]
    Unsupported(String),
    /// The connection failed or dropped; the call may or may not have applied.
    #[error("connection error: {message}")]
    Connection {
        /// What happened.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
    /// No reply in time; the call may or may not have applied.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Authentication, authorization or the TLS handshake failed: a wrong
    /// user or password, a command the ACL user may not run, a server
    /// certificate not trusted, a client certificate missing or refused.
    /// The settings need fixing; retrying the same call will not help.
    #[error("authentication failed: {message}")]
    Auth {
        /// What happened.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The server cannot serve now (loading, busy script, cluster down,
    /// failover in progress) and said so before applying anything.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The write was applied on the primary, but fewer replicas than asked
    /// acknowledged it within the time allowed (Redis `WAIT`, asked for by
    /// the backend's opt-in, e.g. `RedisConfig::wait_for_replicas`). It is
    /// not lost yet, but a failover now could roll it back. Transient:
    /// sending the same call again is safe when it is idempotent (a
    /// dispatch with a dedupe window finds its marker and appends nothing
    /// twice), and its wait covers the first write too.
    #[error("not yet replicated: {0}")]
    NotReplicated(String),
    /// The server replied with something this client cannot read.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// Any other backend failure.
    #[error("backend error: {message}")]
    Backend {
        /// What happened.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
}

/// Redis's messages for an invalid id, as `ERR` replies carry them.
const INVALID_ID_MESSAGES: &[&str] = &[
    "Invalid stream ID specified as stream command argument",
    "invalid start ID for the interval",
    "invalid end ID for the interval",
];

/// [`Error::InvalidId`]'s message: Redis's own when the payload starts with
/// one, else Redis's generic one with the text that is not an id.
fn invalid_id_text(payload: &str) -> String {
    if INVALID_ID_MESSAGES
        .iter()
        .any(|message| payload.starts_with(message))
    {
        payload.to_owned()
    } else {
        format!("{}: {payload:?}", INVALID_ID_MESSAGES[0])
    }
}

/// Redis answers an explicit `0-0` apart from an id not above the top.
fn id_too_small_text(id: StreamId) -> &'static str {
    if id == StreamId::ZERO {
        "The ID specified in XADD must be greater than 0-0"
    } else {
        "The ID specified in XADD is equal or smaller than the target stream top item"
    }
}

/// The kind of an [`Error`], without its details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::NoGroup`].
    NoGroup,
    /// [`Error::GroupExists`].
    GroupExists,
    /// [`Error::NoSuchKey`].
    NoSuchKey,
    /// [`Error::WrongType`].
    WrongType,
    /// [`Error::InvalidId`].
    InvalidId,
    /// [`Error::IdTooSmall`].
    IdTooSmall,
    /// [`Error::IdExhausted`].
    IdExhausted,
    /// [`Error::InvalidArgument`].
    InvalidArgument,
    /// [`Error::Unsupported`].
    Unsupported,
    /// [`Error::Connection`].
    Connection,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Auth`].
    Auth,
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::NotReplicated`].
    NotReplicated,
    /// [`Error::Protocol`].
    Protocol,
    /// [`Error::Backend`].
    Backend,
}

impl Error {
    /// The kind, for matching without the details.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoGroup { .. } => ErrorKind::NoGroup,
            Error::GroupExists { .. } => ErrorKind::GroupExists,
            Error::NoSuchKey(_) => ErrorKind::NoSuchKey,
            Error::WrongType(_) => ErrorKind::WrongType,
            Error::InvalidId(_) => ErrorKind::InvalidId,
            Error::IdTooSmall { .. } => ErrorKind::IdTooSmall,
            Error::IdExhausted(_) => ErrorKind::IdExhausted,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Connection { .. } => ErrorKind::Connection,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::NotReplicated(_) => ErrorKind::NotReplicated,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// Whether the same call may succeed if retried after a pause.
    ///
    /// Connection failures and time-outs leave the outcome unknown: a retried
    /// append may then add a second entry, which is why crewq's worker is
    /// at-least-once and dispatch is idempotent by task id.
    ///
    /// ```
    /// use crewq_core::Error;
    /// assert!(Error::Timeout("read".into()).is_transient());
    /// assert!(!Error::NoSuchKey("s".into()).is_transient());
    /// let refused = Error::Auth { message: "WRONGPASS".into(), source: None };
    /// assert!(!refused.is_transient());
    /// assert!(Error::NotReplicated("0 of 1 replicas".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Connection
                | ErrorKind::Timeout
                | ErrorKind::Unavailable
                | ErrorKind::NotReplicated
        )
    }

    /// Shorthand for [`Error::NoGroup`].
    pub fn no_group(stream: &str, group: &str) -> Self {
        Error::NoGroup {
            stream: stream.to_owned(),
            group: group.to_owned(),
        }
    }
}

/// `Result` with the contract's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant that mirrors a Redis reply starts with Redis 7.0's text
    /// of that reply (as `redis-cli` prints it).
    #[test]
    fn texts_start_with_redis_replies() {
        let id = StreamId::new(5, 0);
        let cases = [
            (
                Error::no_group("s", "g"),
                "NOGROUP No such key 's' or consumer group 'g'",
            ),
            (
                Error::GroupExists {
                    stream: "s".into(),
                    group: "g".into(),
                },
                "BUSYGROUP Consumer Group name already exists",
            ),
            (Error::NoSuchKey("s".into()), "ERR no such key"),
            (
                Error::WrongType("s".into()),
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            (
                Error::InvalidId("abc".into()),
                "ERR Invalid stream ID specified as stream command argument",
            ),
            (
                Error::InvalidId("invalid start ID for the interval".into()),
                "ERR invalid start ID for the interval",
            ),
            (
                Error::InvalidId("invalid end ID for the interval (XRANGE on 's')".into()),
                "ERR invalid end ID for the interval",
            ),
            (
                Error::IdTooSmall {
                    stream: "s".into(),
                    id,
                    top: id,
                },
                "ERR The ID specified in XADD is equal or smaller than the target stream top item",
            ),
            (
                Error::IdTooSmall {
                    stream: "s".into(),
                    id: StreamId::ZERO,
                    top: StreamId::ZERO,
                },
                "ERR The ID specified in XADD must be greater than 0-0",
            ),
            (
                Error::IdExhausted("s".into()),
                "ERR The stream has exhausted the last possible ID, unable to add more items",
            ),
        ];
        for (err, reply) in cases {
            let text = err.to_string();
            assert!(
                text.starts_with(reply),
                "{text:?} should start with {reply:?}"
            );
        }
    }
}
