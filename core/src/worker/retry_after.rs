//! [`RetryAfter`]: a handler error that says when to try again, as an
//! upstream API's `Retry-After` does.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use super::HandlerError;

/// A failed attempt whose retry should wait `after` rather than the
/// worker's back-off: return it (boxed, as any [`HandlerError`]) when an
/// upstream API answers "429 Too Many Requests, retry after 20 s".
///
/// The attempt still counts against the task's `max_retries`; the wait is
/// taken as given, without jitter, capped at the back-off's `max` so a
/// wrong header cannot park a task for a day. The retry waits in the
/// delayed set, not in the worker's slot. Found by downcasting the
/// handler's error, so wrap nothing around it.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::worker::{HandlerError, RetryAfter};
/// let err: HandlerError = RetryAfter::new(Duration::from_secs(20), "429 from the LLM API").into();
/// assert_eq!(err.to_string(), "429 from the LLM API (retry after 20s)");
/// assert_eq!(RetryAfter::of(&err), Some(Duration::from_secs(20)));
/// ```
#[derive(Debug)]
pub struct RetryAfter {
    after: Duration,
    source: HandlerError,
}

impl RetryAfter {
    /// Fails the attempt with `source`, asking for the retry after `after`.
    pub fn new(after: Duration, source: impl Into<HandlerError>) -> Self {
        RetryAfter {
            after,
            source: source.into(),
        }
    }

    /// How long the retry should wait.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// The wait `err` asks for, if it is a [`RetryAfter`].
    pub fn of(err: &HandlerError) -> Option<Duration> {
        err.downcast_ref::<RetryAfter>().map(RetryAfter::after)
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (retry after {:?})", self.source, self.after)
    }
}

impl Error for RetryAfter {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}
