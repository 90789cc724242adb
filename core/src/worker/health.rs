//! What a running worker tells its handle at once: [`Health`].
//!
//! A worker that waits out broker errors, or stops on one that waiting
//! cannot fix, must not do so silently: the application sees it through
//! [`WorkerHandle::health`](super::WorkerHandle::health) and
//! [`WorkerHandle::closed`](super::WorkerHandle::closed) the moment it
//! happens, not when it next calls `shutdown`.

use std::sync::Arc;

use tokio::sync::watch;

use crate::{Error, ErrorKind};

/// A worker's state, as its handle sees it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Health {
    /// Reading and running tasks.
    Running,
    /// Its broker calls are failing and it is waiting them out (with a
    /// back-off capped at a few seconds), for as long as it takes: its reads
    /// fail, or outcomes wait to be recorded (kept, and retried, while their
    /// entries stay held). `failures` counts the failed calls in a row.
    Degraded {
        /// The last error.
        error: Arc<Error>,
        /// Failed calls in a row.
        failures: u32,
    },
    /// It hit an error waiting cannot fix (see [`stops_the_worker`]): it
    /// reads no more, and running attempts get the options' `stop_grace` to
    /// finish before it ends.
    Stopping {
        /// The error.
        error: Arc<Error>,
    },
    /// It ended: `error` is what stopped it by itself, `None` after
    /// [`WorkerHandle::shutdown`](super::WorkerHandle::shutdown).
    Stopped {
        /// What stopped it.
        error: Option<Arc<Error>>,
    },
}

impl Health {
    /// Whether the worker has ended.
    pub fn is_stopped(&self) -> bool {
        matches!(self, Health::Stopped { .. })
    }

    /// The error it is waiting out or stopped on, if any.
    pub fn error(&self) -> Option<&Arc<Error>> {
        match self {
            Health::Running | Health::Stopped { error: None } => None,
            Health::Degraded { error, .. }
            | Health::Stopping { error }
            | Health::Stopped { error: Some(error) } => Some(error),
        }
    }
}

/// Whether `err` stops the worker: waiting cannot fix it, an operator must.
///
/// These are: [`Error::Auth`] (a wrong password, an ACL refusing crewq's
/// commands), [`Error::WrongType`] (a crewq key holding another type),
/// [`Error::InvalidArgument`] and [`Error::Unsupported`] (a call this broker
/// will never accept). Every other error is waited out for as long as it
/// lasts: transient ones (connection, time-out, a server loading or failing
/// over), a missing group (created again), and unclassified backend or
/// protocol errors, which a restarted or upgraded server may well fix.
pub fn stops_the_worker(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Auth
            | ErrorKind::WrongType
            | ErrorKind::InvalidArgument
            | ErrorKind::Unsupported
    )
}

/// The worker's side: publishes its state.
#[derive(Clone)]
pub(crate) struct Reporter(Arc<watch::Sender<Health>>);

impl Reporter {
    pub(crate) fn new() -> (Reporter, watch::Receiver<Health>) {
        let (sender, receiver) = watch::channel(Health::Running);
        (Reporter(Arc::new(sender)), receiver)
    }

    pub(crate) fn set(&self, health: Health) {
        self.0.send_replace(health);
    }

    /// Back to [`Health::Running`] after a call succeeded, if it was
    /// degraded (a stopping worker stays stopping).
    pub(crate) fn recovered(&self) {
        self.0.send_if_modified(|health| {
            if matches!(health, Health::Degraded { .. }) {
                *health = Health::Running;
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn degraded(&self, error: Error, failures: u32) {
        self.0.send_if_modified(|health| {
            if matches!(health, Health::Running | Health::Degraded { .. }) {
                *health = Health::Degraded {
                    error: Arc::new(error),
                    failures,
                };
                true
            } else {
                false
            }
        });
    }
}

/// A copy of `err` of the same kind and text, for the handle and the
/// caller both (errors are not `Clone`: their sources are dropped).
pub(crate) fn duplicate(err: &Error) -> Error {
    let text = |message: &str| message.to_owned();
    match err {
        Error::NoGroup { stream, group } => Error::no_group(stream, group),
        Error::NoSuchKey(m) => Error::NoSuchKey(text(m)),
        Error::WrongType(m) => Error::WrongType(text(m)),
        Error::InvalidId(m) => Error::InvalidId(text(m)),
        Error::IdExhausted(m) => Error::IdExhausted(text(m)),
        Error::InvalidArgument(m) => Error::InvalidArgument(text(m)),
        Error::Unsupported(m) => Error::Unsupported(text(m)),
        Error::Connection { message, .. } => Error::Connection {
            message: text(message),
            source: None,
        },
        Error::Timeout(m) => Error::Timeout(text(m)),
        Error::Auth { message, .. } => Error::Auth {
            message: text(message),
            source: None,
        },
        Error::Unavailable(m) => Error::Unavailable(text(m)),
        Error::Protocol(m) => Error::Protocol(text(m)),
        other => Error::Backend {
            message: other.to_string(),
            source: None,
        },
    }
}
