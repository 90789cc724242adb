//! Handler errors the worker treats apart: [`NonRetryable`] and [`SlowDown`].

use super::HandlerError;

/// A handler error that no retry can fix (an input the handler refuses, a
/// resource that does not exist): the task is dead-lettered at once with
/// reason `non_retryable` and this error's message, whatever retries its
/// `max_retries` leaves.
///
/// The worker finds it by downcasting the [`HandlerError`] (or any error in
/// its [`source`](std::error::Error::source) chain), so it can be returned
/// as it is or wrapped.
///
/// ```
/// use crewq_core::worker::{HandlerError, NonRetryable};
/// use serde_json::Value;
///
/// fn check(repo: &str) -> Result<Value, HandlerError> {
///     if repo.is_empty() {
///         return Err(NonRetryable::new("no repository named").into());
///     }
///     Ok(Value::Null)
/// }
/// let err = check("").unwrap_err();
/// assert!(NonRetryable::find(&*err).is_some());
/// assert_eq!(err.to_string(), "no repository named");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NonRetryable {
    message: String,
    #[source]
    source: Option<HandlerError>,
}

impl NonRetryable {
    /// A permanent failure, saying why.
    pub fn new(message: impl Into<String>) -> Self {
        NonRetryable {
            message: message.into(),
            source: None,
        }
    }

    /// A permanent failure caused by `source`.
    pub fn with_source(message: impl Into<String>, source: impl Into<HandlerError>) -> Self {
        NonRetryable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The [`NonRetryable`] in `error` or its source chain, if any.
    pub fn find<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e NonRetryable> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<NonRetryable>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }
}

/// A handler error that says the upstream is over its budget ("429 Too
/// Many Requests, retry after 20 s"): the worker pauses its whole agent
/// type for `pause` through the broker ([`Broker::rate_pause`]: every
/// worker with a [`rate_limit`](super::WorkerOptions::rate_limit) starts
/// nothing until it ends; the later end wins when several ask) and retries
/// the task after the pause.
///
/// A slow-down is the upstream's budget, not the task's fault, so it does
/// not burn one of the task's `max_retries`: the retry carries the same
/// count of failed runs, and its own count of slow-downs
/// ([`SLOWED_FIELD`](super::SLOWED_FIELD)). So that a task cannot loop for
/// ever on an upstream that always says "slow down", its slow-downs past
/// [`MAX_SLOW_DOWNS`](super::MAX_SLOW_DOWNS) count as failed runs (and the
/// pause still applies). The pause is capped at the back-off's `max`, as a
/// [`RetryAfter`](super::RetryAfter)'s wait is. Found by downcasting the
/// handler's error or any error in its source chain.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::worker::{HandlerError, SlowDown};
/// let err: HandlerError = SlowDown::new(Duration::from_secs(20), "429 from the LLM API").into();
/// assert_eq!(SlowDown::find(&*err).map(SlowDown::pause), Some(Duration::from_secs(20)));
/// assert_eq!(err.to_string(), "429 from the LLM API (slow down for 20s)");
/// ```
///
/// [`Broker::rate_pause`]: crate::Broker::rate_pause
#[derive(Debug, thiserror::Error)]
#[error("{message} (slow down for {pause:?})")]
pub struct SlowDown {
    pause: std::time::Duration,
    message: String,
}

impl SlowDown {
    /// Pauses the agent type for `pause`, saying why.
    pub fn new(pause: std::time::Duration, message: impl Into<String>) -> Self {
        SlowDown {
            pause,
            message: message.into(),
        }
    }

    /// How long the agent type should pause.
    pub fn pause(&self) -> std::time::Duration {
        self.pause
    }

    /// The [`SlowDown`] in `error` or its source chain, if any.
    pub fn find<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e SlowDown> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<SlowDown>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }
}
