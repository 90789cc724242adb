//! Delayed sets: Redis sorted sets of encoded entries scored by due time,
//! as much of `ZADD`/`ZRANGEBYSCORE`/`ZREM` as promote and settle need.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crewq_core::{
    Bytes, DelayOnce, DelayedOnce, NewEntry, Promoted, Result, StreamEntry, StreamId,
    promoted_fields,
};

use crate::State;
use crate::write::add;

/// One sorted set. Members order by score, then by their bytes, as Redis
/// orders equal scores.
#[derive(Clone, Debug, Default)]
pub(crate) struct DelayedSet {
    by_due: BTreeSet<(u64, Bytes)>,
    score: BTreeMap<Bytes, u64>,
}

impl DelayedSet {
    /// `ZADD`: a member already there takes the new score, as in Redis.
    pub(crate) fn add(&mut self, due_ms: u64, member: Bytes) {
        if let Some(old) = self.score.insert(member.clone(), due_ms) {
            self.by_due.remove(&(old, member.clone()));
        }
        self.by_due.insert((due_ms, member));
    }

    pub(crate) fn len(&self) -> usize {
        self.score.len()
    }

    fn remove_first(&mut self) -> Option<(u64, Bytes)> {
        let first = self.by_due.pop_first()?;
        self.score.remove(&first.1);
        Some(first)
    }

    fn first_due(&self) -> Option<u64> {
        self.by_due.first().map(|(due, _)| *due)
    }
}

/// One schedule-once on the locked data: nothing if the marker is live,
/// else the delay joins its set and the marker records `0-0`.
pub(crate) fn delay_once_locked(state: &mut State, once: DelayOnce, now_ms: u64) -> DelayedOnce {
    if let Some(id) = state.markers.live(&once.marker, now_ms) {
        return DelayedOnce::Duplicate(id);
    }
    let due = now_ms.saturating_add(once.delay.after_ms());
    let member = once.delay.member();
    state
        .delayed
        .entry(once.delay.set)
        .or_default()
        .add(due, member);
    let window = u64::try_from(once.window.as_millis()).unwrap_or(u64::MAX);
    state
        .markers
        .set(once.marker, StreamId::ZERO, now_ms.saturating_add(window));
    DelayedOnce::Scheduled
}

/// The body of [`Broker::promote`](crewq_core::Broker::promote), under the
/// lock. Each member is appended, then removed, one by one as the Redis
/// script does: an append that fails stops the call with the members
/// before it promoted and it and those after it still in the set.
pub(crate) fn promote_locked(
    state: &mut State,
    set: &str,
    stream: &str,
    count: usize,
    now_ms: u64,
) -> Result<Promoted> {
    let mut promoted = Promoted::default();
    while promoted.entries.len() < count {
        let Some(members) = state.delayed.get_mut(set) else {
            break;
        };
        match members.first_due() {
            Some(due) if due <= now_ms => {}
            _ => break,
        }
        let Some((due, member)) = members.remove_first() else {
            break;
        };
        let fields = promoted_fields(&member);
        let entry = NewEntry::new(stream, fields.clone());
        match add(&mut state.streams, entry, now_ms) {
            Ok(id) => promoted.entries.push(StreamEntry { id, fields }),
            Err(err) => {
                // Put it back: nothing of a failed step is lost.
                if let Some(members) = state.delayed.get_mut(set) {
                    members.add(due, member);
                }
                return Err(err);
            }
        }
    }
    // Redis deletes a sorted set with its last member.
    if state.delayed.get(set).is_some_and(|m| m.len() == 0) {
        state.delayed.remove(set);
    }
    promoted.next_due_in = state
        .delayed
        .get(set)
        .and_then(DelayedSet::first_due)
        .map(|due| Duration::from_millis(due.saturating_sub(now_ms)));
    Ok(promoted)
}
