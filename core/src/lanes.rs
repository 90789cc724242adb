//! Priority lanes: one task stream per priority in use, read in one atomic
//! step that takes the highest priority first and lets no lane starve
//! ([`Broker::read_lanes`](crate::Broker::read_lanes)).
//!
//! A Redis stream is read in order; a task appended behind a backlog cannot
//! jump it. So each priority above 0 has a stream of its own (a *lane*:
//! [`Keyspace::lane`](crate::Keyspace::lane)), beside the agent type's task
//! stream, which is lane 0 and keeps the first seed's key. A read across
//! lanes takes, entry by entry:
//!
//! 1. if some lane's oldest unread entry has waited at least the starvation
//!    bound (its id's time against the broker's clock), the oldest such
//!    entry, whatever its priority (ties: the higher priority);
//! 2. otherwise the oldest unread entry of the highest-priority lane that
//!    has one.
//!
//! So under a backlog a higher-priority task is taken before a lower one,
//! and a task that has waited the bound is taken before every younger one:
//! a lower-priority task is never taken before a waiting higher one unless
//! it has waited at least the bound, and longer than that one.

use std::time::Duration;

use crate::{DeliveredEntry, Error, Result};

/// One lane of a [`ReadLanes`]: a task stream, the priority of its
/// entries, and the delayed set whose entries are promoted into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lane {
    /// The stream key.
    pub stream: String,
    /// The priority its entries are taken at, `0..=10`.
    pub priority: u8,
    /// The lane's delayed set, if it has one: only looked at, to report the
    /// lane present ([`LanesRead::present`]) while its stream is missing.
    pub delayed: Option<String>,
    /// Create the group, delivering the whole stream, if the stream exists
    /// without it, and read it in the same step: for a lane the reader has
    /// never served (its first read would create it so anyway). A lane
    /// without this flag and without the group is reported in
    /// [`LanesRead::no_group`].
    pub create_group: bool,
}

impl Lane {
    /// The lane `stream` at `priority`, without a delayed set.
    pub fn new(stream: impl Into<String>, priority: u8) -> Self {
        Lane {
            stream: stream.into(),
            priority,
            delayed: None,
            create_group: false,
        }
    }

    /// Creates the group of a lane never served yet: see
    /// [`Lane::create_group`].
    #[must_use]
    pub fn create_group(mut self) -> Self {
        self.create_group = true;
        self
    }

    /// The lane's delayed set.
    #[must_use]
    pub fn delayed(mut self, set: impl Into<String>) -> Self {
        self.delayed = Some(set.into());
        self
    }
}

/// A read of new entries across lanes, highest priority first
/// ([`Broker::read_lanes`](crate::Broker::read_lanes)).
///
/// ```
/// use std::time::Duration;
/// use crewq_core::{Lane, ReadLanes};
/// let read = ReadLanes::new("research-workers", "worker-1", 8, Duration::from_secs(60))
///     .lane(Lane::new("agent:tasks@5:research", 5))
///     .lane(Lane::new("agent:tasks:research", 0));
/// assert_eq!(read.lanes.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadLanes {
    /// The lanes, each a stream read in the same group.
    pub lanes: Vec<Lane>,
    /// The consumer group, the same name on every lane.
    pub group: String,
    /// The reading consumer; created in a lane's group when it delivers.
    pub consumer: String,
    /// At most this many entries in all; at least 1.
    pub count: usize,
    /// An unread entry this old (by its id's time against the broker's
    /// clock) is starving: taken before every younger one, whatever their
    /// priorities.
    pub starvation: Duration,
}

impl ReadLanes {
    /// A read of at most `count` entries with no lanes yet.
    pub fn new(
        group: impl Into<String>,
        consumer: impl Into<String>,
        count: usize,
        starvation: Duration,
    ) -> Self {
        ReadLanes {
            lanes: Vec::new(),
            group: group.into(),
            consumer: consumer.into(),
            count,
            starvation,
        }
    }

    /// Adds a lane.
    #[must_use]
    pub fn lane(mut self, lane: Lane) -> Self {
        self.lanes.push(lane);
        self
    }
}

/// What a [`ReadLanes`] delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LanesRead {
    /// The entries taken, each with the index of its lane in
    /// [`ReadLanes::lanes`], in the order they were taken.
    pub entries: Vec<(usize, DeliveredEntry)>,
    /// Lanes whose stream exists without the group (nothing was read from
    /// them): `NOGROUP` for a plain read.
    pub no_group: Vec<usize>,
    /// Lanes that still hold unread entries after the read.
    pub left: Vec<usize>,
    /// Lanes whose stream or delayed set exists: the ones a worker must
    /// serve (its reclaims, its promotions), whatever they hold unread.
    pub present: Vec<usize>,
    /// The broker's clock at the read, in ms since the epoch.
    pub now_ms: u64,
}

/// Checks a [`ReadLanes`] before anything is read: a count of at least 1,
/// at least one lane, priorities in `0..=10`.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming what is wrong.
pub fn validate_read_lanes(read: &ReadLanes) -> Result<()> {
    if read.count == 0 {
        return Err(Error::InvalidArgument(
            "read_lanes needs a count of at least 1".into(),
        ));
    }
    if read.lanes.is_empty() {
        return Err(Error::InvalidArgument(
            "read_lanes needs at least one lane".into(),
        ));
    }
    if let Some(lane) = read.lanes.iter().find(|lane| lane.priority > 10) {
        return Err(Error::InvalidArgument(format!(
            "lane {} has priority {}, out of range 0..=10",
            lane.stream, lane.priority
        )));
    }
    Ok(())
}

/// The order a read takes lanes' oldest unread entries in: the index, in
/// `heads`, of the one to take next. `heads` holds, per lane, its priority
/// and the time (ms) of its oldest unread entry, if it has one. Shared by
/// the backends that decide in Rust and by tests; the Redis script
/// implements the same rule.
///
/// ```
/// use crewq_core::lanes::next_lane;
/// // Priority 5 waited 10 ms, priority 0 waited 100 ms: 5 first...
/// assert_eq!(next_lane(&[(5, Some(990)), (0, Some(900))], 1_000, 60_000), Some(0));
/// // ...unless 0 has waited the bound (60 s).
/// assert_eq!(next_lane(&[(5, Some(990)), (0, Some(900))], 60_900, 60_000), Some(1));
/// assert_eq!(next_lane(&[(5, None), (0, None)], 1_000, 60_000), None);
/// ```
pub fn next_lane(heads: &[(u8, Option<u64>)], now_ms: u64, starvation_ms: u64) -> Option<usize> {
    let starving = heads
        .iter()
        .enumerate()
        .filter_map(|(i, (priority, head))| head.map(|ms| (i, *priority, ms)))
        .filter(|(_, _, ms)| now_ms.saturating_sub(*ms) >= starvation_ms)
        // Oldest first; ties: higher priority, then the earlier lane.
        .min_by_key(|(i, priority, ms)| (*ms, std::cmp::Reverse(*priority), *i));
    if let Some((i, _, _)) = starving {
        return Some(i);
    }
    heads
        .iter()
        .enumerate()
        .filter(|(_, (_, head))| head.is_some())
        .min_by_key(|(i, (priority, _))| (std::cmp::Reverse(*priority), *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::next_lane;

    #[test]
    fn highest_priority_first_then_the_oldest_starving() {
        let heads = [(0, Some(100)), (3, Some(500)), (9, Some(900))];
        assert_eq!(next_lane(&heads, 1_000, 5_000), Some(2));
        // At 5_100, lane 0 (waited 5_000) starves.
        assert_eq!(next_lane(&heads, 5_100, 5_000), Some(0));
        // At 5_600 lanes 0 and 1 starve: the oldest, lane 0.
        assert_eq!(next_lane(&heads, 5_600, 5_000), Some(0));
        // Equal times: the higher priority.
        let tied = [(2, Some(100)), (7, Some(100))];
        assert_eq!(next_lane(&tied, 10_000, 5_000), Some(1));
        // A bound of 0: plain oldest first.
        assert_eq!(next_lane(&heads, 1_000, 0), Some(0));
    }
}
