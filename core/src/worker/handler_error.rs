//! Handler errors the worker treats apart: [`NonRetryable`].

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
