//! [`Invariant::PriorityOrderKept`]: under a backlog a higher priority goes
//! first, and a lower one is taken before it only once it has starved
//! (issue 12).
//!
//! A worker's reads of new entries across its agent type's priority lanes
//! (`read_lanes`, recorded as [`Event::LanesRead`]) take, entry by entry,
//! the oldest entry that has waited the starvation bound, else the oldest of
//! the highest lane that has one. The checker replays each lane stream's
//! unread entries (its appends past the highest id delivered from it so
//! far: the group reads in order) and, at each read, for each entry `e` it
//! took from a lane, and each lane it read of a *higher* priority (the
//! lane's, from its stream name through the keyspace, never the priority
//! the request gave) holding an unread entry `h` at that moment (after the
//! read's earlier takes): `e` must have waited the plan's starvation bound
//! (`now_ms - e.ms`, on the broker's clock) and be no younger than `h`.
//!
//! The replay is sound where it is unsure: an entry counts as unread only
//! if it certainly is, so an event that may have removed unread entries
//! removes them from the replay:
//!
//! - an injected trim's `Cut` and a stream deletion remove what they cut
//!   (both target lane 0, the lowest lane, which is never the higher lane
//!   of a comparison anyway);
//! - a rollback removes the appends it forgot; what it made unread again
//!   (deliveries it forgot) stays delivered in the replay: fewer
//!   comparisons, none wrong;
//! - a group destroyed and made again restarts after a sample's floor, at
//!   or below its last-delivered id: entries become unread again, never
//!   fewer; a lane whose group a read found missing was not read
//!   (`LanesRead::lanes` leaves it out);
//! - retention trims (`Trimmed` without a `Cut`) remove only acknowledged
//!   entries, never unread ones, and are not followed.
//!
//! Not judged: a worker's plain `read_group` of lane 0 (its fast path while
//! no lane above 0 was in use at its last look, every `lane_poll`): a task
//! dispatched to a higher lane then may wait about one `lane_poll` (and a
//! call's latency) behind lane 0's. Nor lanes a read did not ask (not in
//! use at the worker's last look). Nor the Redis backend, whose history
//! does not list writes in the order the server applied them.

use std::collections::{BTreeMap, BTreeSet};

use crewq_core::StreamId;

use crate::history::Event;
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

/// The workers' default starvation bound (when the plan sets none).
const DEFAULT_STARVATION_MS: u64 = 60_000;

/// Violations reported per run at most (the first ones).
const MAX_REPORTED: usize = 5;

/// The violations of [`Invariant::PriorityOrderKept`] in `record`.
pub(super) fn check(record: &RunRecord) -> Vec<Violation> {
    if !record.applied_in_order || record.plan.priorities.is_empty() {
        return Vec::new();
    }
    let bound = record
        .plan
        .lanes
        .map_or(DEFAULT_STARVATION_MS, |l| l.starvation_ms);
    let entries = super::runs::entry_tasks(record);
    let lane = |stream: &str| {
        record
            .state
            .lane_of(stream)
            .map(|lane| (lane.agent, lane.priority))
    };
    let mut replay = Replay::default();
    let mut violations = Vec::new();
    for stamped in record.history.events() {
        match &stamped.event {
            Event::Appended { stream, id } if lane(stream).is_some() => {
                replay.appended(stream, *id);
            }
            Event::Delivered { stream, id, .. } => replay.delivered(stream, *id),
            Event::Cut {
                stream,
                pending,
                unread,
            } => replay.removed(stream, pending.iter().chain(unread)),
            Event::StreamDeleted { stream, .. } => {
                replay.unread.remove(stream);
            }
            Event::RolledBack { forgotten, .. } => {
                for (stream, id) in forgotten {
                    replay.removed(stream, std::iter::once(id));
                }
            }
            Event::LanesRead {
                consumer,
                now_ms,
                lanes,
                taken,
            } => {
                for (stream, e) in taken {
                    if let Some((agent, priority)) = lane(stream) {
                        let starving = now_ms.saturating_sub(e.ms) >= bound;
                        let passed = lanes
                            .iter()
                            .filter_map(|q| lane(q).map(|(a, p)| (q, a, p)))
                            .filter(|(_, a, p)| *a == agent && *p > priority)
                            .filter_map(|(q, _, p)| replay.head(q).map(|h| (q, p, h)))
                            .find(|(_, _, h)| !(starving && e.ms <= h.ms));
                        if let Some((q, p, h)) = passed
                            && violations.len() < MAX_REPORTED
                        {
                            let waited = now_ms.saturating_sub(e.ms);
                            violations.push(Violation {
                                invariant: Invariant::PriorityOrderKept,
                                task: entries.get(&(stream.clone(), *e)).copied(),
                                detail: format!(
                                    "{consumer}'s read at {} ms took entry {e} of {stream} \
                                     (priority {priority}, waited {waited} ms; starvation \
                                     bound {bound} ms) while {q} (priority {p}) held unread \
                                     entry {h}",
                                    stamped.at_ms
                                ),
                            });
                        }
                    }
                    replay.delivered(stream, *e);
                }
            }
            _ => {}
        }
    }
    violations
}

/// The reads across lanes that took entries in `history`.
pub(super) fn lanes_reads(history: &crate::history::History) -> u64 {
    history
        .events()
        .iter()
        .filter(|e| matches!(e.event, Event::LanesRead { .. }))
        .count() as u64
}

/// Each lane stream's unread entries, as far as the history shows for sure.
#[derive(Default)]
struct Replay {
    unread: BTreeMap<String, BTreeSet<StreamId>>,
    /// The highest id delivered from each stream so far.
    delivered: BTreeMap<String, StreamId>,
}

impl Replay {
    fn appended(&mut self, stream: &str, id: StreamId) {
        if self.delivered.get(stream).is_none_or(|&last| id > last) {
            self.unread.entry(stream.to_owned()).or_default().insert(id);
        }
    }

    fn delivered(&mut self, stream: &str, id: StreamId) {
        let last = self.delivered.entry(stream.to_owned()).or_insert(id);
        if id > *last {
            *last = id;
        }
        let last = *last;
        if let Some(unread) = self.unread.get_mut(stream) {
            while unread.first().is_some_and(|&u| u <= last) {
                unread.pop_first();
            }
        }
    }

    fn removed<'a>(&mut self, stream: &str, ids: impl Iterator<Item = &'a StreamId>) {
        if let Some(unread) = self.unread.get_mut(stream) {
            for id in ids {
                unread.remove(id);
            }
        }
    }

    /// The oldest unread entry of `stream`.
    fn head(&self, stream: &str) -> Option<StreamId> {
        self.unread.get(stream).and_then(|u| u.first().copied())
    }
}
