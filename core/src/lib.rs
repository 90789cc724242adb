//! crewq-core: the `Broker` contract crewq is written against.
//!
//! crewq puts a queue between AI agents: Redis Streams consumer groups. This
//! crate holds what every layer shares and no backend owns:
//!
//! - [`Broker`], the subset of Redis Streams consumer groups crewq uses, each
//!   method with a `# Behavior` list of the Redis semantics it promises;
//! - the stream types ([`StreamId`], [`Fields`], [`StreamEntry`],
//!   [`ReadGroup`], [`PendingEntry`] ...), one [`Error`] enum, and a
//!   [`Clock`] so that a backend can run on virtual time;
//! - with feature `conformance`, the cases that hold every backend to those
//!   `# Behavior` lists.
//!
//! Backends: `crewq-memory` (deterministic, in process) and `crewq-redis`.
//!
//! ```
//! # async fn demo(broker: &dyn crewq_core::Broker) -> crewq_core::Result<()> {
//! use crewq_core::{Fields, GroupStart, NewEntry, ReadGroup};
//! broker.group_create("tasks", "workers", GroupStart::BEGINNING, true).await?;
//! broker.xadd(NewEntry::new("tasks", Fields::new().with("data", "{}"))).await?;
//! let read = ReadGroup::new("tasks", "workers", "worker-1").count(10);
//! for entry in broker.read_group(&read).await? {
//!     broker.ack("tasks", "workers", &[entry.id]).await?;
//! }
//! # Ok(()) }
//! ```

mod atomic;
mod autoclaim;
mod broker;
mod clock;
mod delayed;
mod error;
mod fields;
mod group;
mod id;
mod info;
mod layer;
mod stream;
mod task;

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod dlq;
pub mod lanes;
pub mod locate;
pub mod metrics;
pub mod monitor;
pub mod producer;
pub mod ratelimit;
pub mod retention;
pub mod supervisor;
pub mod worker;

pub use atomic::{Ack, AckAndAdd, AckAndAddReply, Delete, Settle, SettleItem, Settled};
pub use autoclaim::{
    AutoClaim, AutoClaimedRecorded, DeletedRecord, validate_autoclaim_count,
    validate_autoclaim_recorded,
};
pub use broker::{
    Broker, validate_ack_and_add, validate_new_entry, validate_once_entry, validate_settle,
};
pub use bytes::Bytes;
pub use clock::{Clock, SystemClock, TokioClock};
pub use delayed::{
    Delay, DelayOnce, DelayedOnce, Promoted, decode_member, encode_member, promoted_fields,
    validate_delay, validate_delay_once,
};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use fields::Fields;
pub use group::{
    AutoClaimed, GroupStart, PendingEntry, PendingQuery, PendingSummary, ReadFrom, ReadGroup,
};
pub use id::StreamId;
pub use info::{ConsumerInfo, ConsumerPruned, GroupInfo, StreamInfo};
pub use lanes::{Lane, LanesRead, ReadLanes};
pub use layer::{BrokerCall, BrokerLayer, BrokerOp};
pub use ratelimit::{
    RateAcquire, RateGrant, RateKeys, RateLimit, RateState, validate_rate_acquire,
};
pub use stream::{
    ALL_IDS, AddId, AddedOnce, DeliveredEntry, IdRange, NewEntry, OnceEntry, StreamEntry, Trim,
    TrimStrategy,
};
pub use task::{
    AgentKeys, AgentType, DATA_FIELD, DEFAULT_MAX_RETRIES, DLQ_CONSUMER, DLQ_DEAD_LETTERED_AT,
    DLQ_ENTRY_ID, DLQ_ERROR, DLQ_GROUP, DLQ_ORIGIN_STREAM, DLQ_REASON, DLQ_RETRIES, DLQ_TASK,
    DeadLetter, DeadLetterReason, GroupNaming, InvalidName, Keyspace, Layout, MAX_TASK_TIMEOUT,
    Origin, Priority, PriorityOutOfRange, Rejected, TIMEOUT_FIELD, Task, TaskBuildError,
    TaskBuilder, TaskResult, TaskStatus, TimeoutOutOfRange, ValidateFn, Validators, WireCodec,
    WireError, WireErrorKind, check_timeout, now_isoformat, result_from_fields, result_to_fields,
    task_from_fields, task_to_fields, utc_isoformat,
};
