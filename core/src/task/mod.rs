//! The task wire layer: tasks, results and dead letters as stream entries,
//! and where their streams live.
//!
//! Everything here keeps the wire format of the first seed (a Python agent
//! queue over Redis Streams), so its agents and crewq's share streams:
//!
//! - [`Task`] and [`TaskResult`] serialize to exactly the JSON of the seed's
//!   pydantic `AgentTask` and `TaskResult`, with the same defaults and
//!   validation rules; a task or result entry has one field `data` holding
//!   that JSON ([`WireCodec`], [`task_to_fields`], [`task_from_fields`]);
//! - decoding fails with a [`WireError`] whose [`kind`](WireError::kind)
//!   tells a worker what kind of poison entry it holds;
//! - [`DeadLetter`] is a dead-letter entry: the seed's `task`, `error`,
//!   `retries`, plus crewq's `reason`, origin and time;
//! - [`Keyspace`] names the streams and groups of each [`AgentType`], in the
//!   seed's layout or a Redis Cluster one;
//! - [`Validators`] holds an optional check per agent type.
//!
//! The compatibility is pinned by `core/tests/wire_compat.rs` against
//! fixtures that the seed's own models emitted
//! (`scripts/gen_seed_fixtures.py`).

mod dead_letter;
mod keyspace;
mod model;
mod result;
mod shape;
mod time;
mod timeout;
mod validators;
mod wire;

pub use dead_letter::{
    DLQ_CONSUMER, DLQ_DEAD_LETTERED_AT, DLQ_ENTRY_ID, DLQ_ERROR, DLQ_GROUP, DLQ_ORIGIN_STREAM,
    DLQ_REASON, DLQ_RETRIES, DLQ_TASK, DeadLetter, DeadLetterReason, Origin,
};
pub use keyspace::{AgentKeys, AgentType, GroupNaming, InvalidName, Keyspace, Layout};
pub use model::{
    DEFAULT_MAX_RETRIES, Priority, PriorityOutOfRange, Task, TaskBuildError, TaskBuilder,
};
pub use result::{TaskResult, TaskStatus};
pub use time::{now_isoformat, utc_isoformat};
pub use timeout::{MAX_TASK_TIMEOUT, TIMEOUT_FIELD, TimeoutOutOfRange, check_timeout};
pub use validators::{Rejected, ValidateFn, Validators};
pub use wire::{
    DATA_FIELD, WireCodec, WireError, WireErrorKind, result_from_fields, result_to_fields,
    task_from_fields, task_to_fields,
};
