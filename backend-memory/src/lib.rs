//! crewq-memory: a deterministic in-memory [`Broker`](crewq_core::Broker)
//! with Redis Streams semantics.
//!
//! [`MemoryBroker`] keeps plain data (`BTreeMap`s behind one lock) and
//! reproduces what Redis 7.0 replies, command by command, so agent code tested
//! on it behaves the same on Redis. Where it copies a Redis rule, a comment
//! says which one. Its clock is pluggable: with
//! [`TokioClock`](crewq_core::TokioClock) under tokio's paused time, ids, idle
//! times and blocking reads follow virtual time, and the same calls at the
//! same virtual times give the same replies.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> crewq_core::Result<()> {
//! use std::time::Duration;
//! use crewq_core::{Broker, Fields, GroupStart, NewEntry, PendingQuery, ReadGroup, TokioClock};
//! use crewq_memory::MemoryBroker;
//!
//! let broker = MemoryBroker::with_clock(TokioClock::starting_at(1_000));
//! broker.group_create("tasks", "workers", GroupStart::BEGINNING, true).await?;
//! let id = broker.xadd(NewEntry::new("tasks", Fields::new().with("data", "{}"))).await?;
//! assert_eq!(id.to_string(), "1000-0");
//!
//! let read = ReadGroup::new("tasks", "workers", "w1").count(10);
//! assert_eq!(broker.read_group(&read).await?.len(), 1);
//! tokio::time::sleep(Duration::from_secs(30)).await; // instant: time is paused
//! let stale = broker
//!     .pending("tasks", "workers", &PendingQuery::new(10).min_idle(Duration::from_secs(30)))
//!     .await?;
//! assert_eq!(stale[0].idle, Duration::from_secs(30));
//! # Ok(()) }
//! ```
//!
//! # Differences from Redis
//!
//! - Approximate trims (`~`) trim exactly; Redis may keep more entries.
//! - Keys are streams only, so `WrongType` never happens here; an append
//!   can still fail (a stream whose last id is the largest), which is how a
//!   settle item fails alone here (`Settled::Failed`).
//! - Nothing is persisted or shared between processes; instead, for tests
//!   and simulations, [`MemoryBroker::snapshot`] and
//!   [`MemoryBroker::restore`] lose the latest writes as a restart from an
//!   AOF with `appendfsync everysec`, or a failover to an asynchronous
//!   replica, does.

mod broker;
mod delayed;
mod delete;
mod group;
mod lanes;
mod markers;
mod rate;
mod snapshot;
mod stream;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crewq_core::{Clock, Error, Result, SystemClock};

use crate::group::Group;
use crate::markers::Markers;
pub use crate::snapshot::Snapshot;
use crate::stream::Stream;

/// An in-memory broker. Clones share the same data.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    clock: Box<dyn Clock>,
}

/// Everything the broker holds, behind one lock.
#[derive(Clone, Debug, Default)]
struct State {
    streams: BTreeMap<String, Key>,
    /// Append-once markers: the id they recorded and when they expire.
    markers: Markers,
    /// Delayed sets by key: part of the state, so a snapshot and a restore
    /// (a rollback) cover them as Redis's AOF and replicas do.
    delayed: BTreeMap<String, crate::delayed::DelayedSet>,
    /// Shared rate limits' logs, pauses and limits: part of the state too,
    /// so a rollback forgets grants as Redis's would.
    rates: crate::rate::Rates,
}

/// What one stream key holds. Entries and groups are kept side by side so a
/// group can be changed while the entries are read.
#[derive(Clone, Debug, Default)]
struct Key {
    stream: Stream,
    groups: BTreeMap<String, Group>,
}

impl MemoryBroker {
    /// A broker on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// A broker on `clock`; use [`TokioClock`](crewq_core::TokioClock) for
    /// virtual time.
    pub fn with_clock(clock: impl Clock) -> Self {
        MemoryBroker {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                clock: Box::new(clock),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Runs `f` on the data under the lock. Every call is applied whole, so
    /// each Broker call is atomic, as a Redis command is.
    fn with_keys<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Key>) -> T) -> T {
        self.with_state(|state| f(&mut state.streams))
    }

    /// How many append-once markers are held (expired ones included until
    /// evicted): shown by `Debug`, and checked by the tests of the bound.
    pub(crate) fn held_markers(&self) -> usize {
        self.with_state(|state| state.markers.len())
    }

    /// Like [`MemoryBroker::with_keys`], with the append-once markers too.
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic under the lock can only come from a bug here; the data is
        // still the last complete state, so keep serving it.
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let streams = self.with_keys(|keys| keys.len());
        f.debug_struct("MemoryBroker")
            .field("streams", &streams)
            .field("markers", &self.held_markers())
            .field("clock", &self.inner.clock)
            .finish()
    }
}

/// The key and group a group command names, or Redis's `NOGROUP`.
fn group_mut<'a>(
    keys: &'a mut BTreeMap<String, Key>,
    stream: &str,
    group: &str,
) -> Result<(&'a Stream, &'a mut Group)> {
    let key = keys
        .get_mut(stream)
        .ok_or_else(|| Error::no_group(stream, group))?;
    let group = key
        .groups
        .get_mut(group)
        .ok_or_else(|| Error::no_group(stream, group))?;
    Ok((&key.stream, group))
}
