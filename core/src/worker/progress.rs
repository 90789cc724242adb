//! Progress a handler reports ([`Context::progress`]): one entry per report
//! in the agent type's progress stream ([`Keyspace::progress`]), which
//! `crewq task` and [`Locator`] read back.
//!
//! A stream, not a new broker operation: an append is what every backend
//! already does durably and atomically, the newest report of a task is the
//! last entry naming it, and a length cap (trimmed on every append) bounds
//! it however many tasks report.
//!
//! [`Context::progress`]: super::Context::progress
//! [`Keyspace::progress`]: crate::Keyspace::progress
//! [`Locator`]: crate::locate::Locator

use serde_json::Value;

use crate::{Broker, Fields, NewEntry, Result, StreamId, Trim};

use super::attempt::Shared;

/// Field: the task's id.
pub const PROGRESS_TASK_ID: &str = "task_id";
/// Field: the task entry's id in its stream.
pub const PROGRESS_ENTRY_ID: &str = "entry_id";
/// Field: the consumer running it.
pub const PROGRESS_CONSUMER: &str = "consumer";
/// Field: the attempt ([`Context::attempt`](super::Context::attempt)).
pub const PROGRESS_ATTEMPT: &str = "attempt";
/// Field: the handler's report, as JSON.
pub const PROGRESS_VALUE: &str = "progress";
/// Field: when, as Python's `isoformat()` of a UTC time.
pub const PROGRESS_AT: &str = "at";

/// Reports kept per agent type (about: the trim is approximate): the
/// newest report of every running task, many times over.
pub const PROGRESS_KEPT: u64 = 10_000;

/// One report, as the worker appends it.
pub(crate) struct Report<'a> {
    pub id: StreamId,
    pub task_id: &'a str,
    pub attempt: u32,
    pub value: &'a Value,
}

impl<B: Broker, H> Shared<B, H> {
    /// Appends a progress report to the agent type's progress stream.
    pub(crate) async fn append_progress(&self, report: Report<'_>) -> Result<()> {
        let fields = Fields::new()
            .with(PROGRESS_TASK_ID, report.task_id.to_owned())
            .with(PROGRESS_ENTRY_ID, report.id.to_string())
            .with(PROGRESS_CONSUMER, self.consumer.clone())
            .with(PROGRESS_ATTEMPT, report.attempt.to_string())
            .with(PROGRESS_VALUE, report.value.to_string())
            .with(PROGRESS_AT, self.now());
        let trim = Trim {
            approximate: true,
            ..Trim::max_len(PROGRESS_KEPT)
        };
        let entry = NewEntry::new(&self.progress, fields).with_trim(trim);
        self.broker.xadd(entry).await.map(|_| ())
    }
}
