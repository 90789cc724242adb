//! The worker's consumer group: created at the stream's start on first use,
//! and created again, loudly and where nothing is lost, if it goes missing
//! (an operator's `XGROUP DESTROY`, or the stream deleted with `DEL`).
//!
//! # Where a destroyed group comes back
//!
//! crewq is at-least-once: it prefers running a task twice to losing it.
//! A destroyed group takes with it its pending list (who holds what) and
//! its last-delivered id (what was read); the stream's entries stay. The
//! worker re-creating it therefore starts it at the oldest position that
//! anything of the old group could still need, as far as the worker knew:
//!
//! - the group's *floor* as last sampled (every `reclaim_every`: its oldest
//!   pending entry, or just after its last-delivered one when nothing was
//!   pending, the same floor the safe retention trims below). Every entry
//!   below a floor was delivered and acknowledged, so its outcome is
//!   recorded for good: a floor stays safe however old the sample, and
//!   through any number of destructions (each group made again below
//!   everything unfinished);
//! - just before the oldest entry this worker still holds;
//! - the stream's beginning when the stream is new (deleted and made
//!   again: its ids started over, so everything in it is unread).
//!
//! Every entry the old group had not delivered and acknowledged is then
//! delivered again; so are the finished entries above the floor. Those
//! the sample's pending list shows finished (between its oldest and its
//! newest entry, not on it) are acknowledged without running again; the
//! others run again: entries finished after the newest pending one, or
//! since the sample. Duplicates, the price of not losing.
//! Holders of entries pending in the old group find them no longer theirs
//! at their settle and record nothing: the re-delivery runs them again.
//!
//! What `DEL` of a task stream removes is gone by Redis's own semantics:
//! unread and pending entries with it. The group then comes back at the
//! new stream's beginning.
//!
//! # Rollbacks
//!
//! A broker rolled back (restarted from an AOF written `everysec`, failed
//! over to a replica that lagged) forgets the writes of its last moments:
//! acknowledgements among them, whose entries are pending again. A sample
//! taken in that moment (after the snapshot the broker went back to, before
//! the rollback) saw those entries finished: its floor may be above them
//! and its finished span may name them. Should the group then be destroyed
//! before the worker learns of the rollback, a re-creation trusting that
//! sample would never deliver them again, nor run them (the simulator found
//! this composing its rollback and group-destroy classes).
//!
//! So the worker keeps the samples of the last
//! [`WorkerOptions::rollback_window`](super::WorkerOptions::rollback_window)
//! (and the newest one older than that), and a re-creation uses the lowest
//! floor among them and only what every one of them shows finished. The
//! samples a rollback makes wrong were taken within its lag, so when the
//! lag is shorter than the window at least one kept sample is right: the
//! lowest floor is at or below its floor, and what it does not show
//! finished runs again. Until its samples span the window (a worker just
//! started), a worker re-creates the group at the stream's beginning. The
//! price is duplicates: entries finished within the window run again.
//!
//! One race is left: a sample reads the last-delivered id, then the
//! pending list; should a peer destroy and re-create the group between the
//! two calls and its new group have nothing pending, the sampled floor may
//! be above what the new group has not yet delivered.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{GROUP_RECREATED, count};
use crate::{Broker, Error, GroupStart, PendingQuery, Result, StreamId};

use super::attempt::Shared;
use super::finished::Finished;
use super::mutant::Mutant;

/// What the worker knows of its group: whether it exists, whether this run
/// saw it before (a group missing after that was destroyed under it), and
/// its floor as last sampled.
#[derive(Debug)]
pub(crate) struct GroupWatch {
    ready: bool,
    seen: bool,
    /// The samples of the last `rollback_window`, and the newest one before
    /// them, oldest first: a re-creation trusts only what all of them agree
    /// on (see the module doc's "Rollbacks").
    kept: VecDeque<Kept>,
    /// The last-delivered id of the last sample: a later one below it
    /// means the group was made again meanwhile, or the broker was rolled
    /// back.
    last_delivered: Option<StreamId>,
    /// The highest last-delivered id any sample showed: entries up to it
    /// existed. A stream whose top is below it lost entries it had, so
    /// the broker was rolled back (see [`GroupWatch::rolled_back`]).
    high_water: StreamId,
    /// What the kept samples agreed on when the group was found lost: the
    /// new group delivers again the entries they all show finished, and
    /// those are not run again.
    before_loss: Vec<Kept>,
    next_sample: Instant,
}

/// One sample (or the group's creation) as a re-creation may use it.
#[derive(Clone, Debug)]
struct Kept {
    /// When its first read was sent, and when its last reply came back:
    /// its reads happened in between.
    started: Instant,
    finished_at: Instant,
    /// The position to re-create the group after (see [`recreate_after`]).
    floor: StreamId,
    /// The entries the sample shows finished, besides those at or below
    /// its floor.
    finished: Finished,
}

impl Kept {
    /// Whether this sample shows `id` finished: at or below its floor (the
    /// group was created after it, or it was delivered and acknowledged),
    /// or in its finished span.
    fn shows_finished(&self, id: StreamId) -> bool {
        id <= self.floor || self.finished.contains(id)
    }
}

impl Default for GroupWatch {
    fn default() -> Self {
        GroupWatch {
            ready: false,
            seen: false,
            kept: VecDeque::new(),
            last_delivered: None,
            high_water: StreamId::ZERO,
            before_loss: Vec::new(),
            next_sample: Instant::now(),
        }
    }
}

impl GroupWatch {
    /// Makes sure the group exists: creates it at the stream's start on
    /// first use, or again where nothing is lost if it was destroyed; and
    /// samples its floor every `reclaim_every`.
    ///
    /// # Errors
    ///
    /// A broker error creating the group (or reading the stream's top
    /// before re-creating it); a failed sample keeps the last floor.
    pub async fn ensure<B: Broker, H>(&mut self, shared: &Shared<B, H>) -> Result<()> {
        let window = shared.rollback_window();
        if !self.ready {
            let after = if self.seen {
                let top = stream_top(shared).await?;
                if self.rolled_back(top) {
                    self.forget_rolled_back();
                }
                let after = recreate_after(self.trusted_floor(window), &shared.held_ids(), top);
                if after == StreamId::ZERO {
                    // Maybe a new stream, whose ids may repeat the old
                    // one's: nothing known of the old one applies.
                    self.kept.clear();
                    self.before_loss.clear();
                }
                after
            } else {
                StreamId::ZERO
            };
            let started = Instant::now();
            let created = ensure_group(shared, after, self.seen).await?;
            self.ready = true;
            self.seen = true;
            if created {
                // Exactly where it now stands.
                let creation = Kept {
                    started,
                    finished_at: Instant::now(),
                    floor: after,
                    finished: Finished::default(),
                };
                self.keep(creation, window);
                self.next_sample = Instant::now() + shared.options.reclaim_every;
            } else {
                // Made by someone else: the floors known here stay safe
                // (everything below them is finished for good), but learn
                // the new group's at once.
                self.next_sample = Instant::now();
            }
        }
        if Instant::now() >= self.next_sample {
            self.next_sample = Instant::now() + shared.options.reclaim_every;
            let started = Instant::now();
            match sample(shared).await {
                Ok(Some(sample)) => {
                    if let Some(before) = self
                        .last_delivered
                        .filter(|before| sample.last_delivered < *before)
                    {
                        // Made again by a peer since the last sample, or
                        // rolled back (a failover to a replica that missed
                        // the latest writes, a restart from an older AOF).
                        // The two look alike from here, and after a
                        // rollback the entries the last samples showed
                        // finished may have lost their results with their
                        // acks: what is delivered again runs again (a
                        // duplicate at worst), never acknowledged unrun.
                        tracing::warn!(
                            stream = %shared.keys.tasks,
                            group = %shared.keys.group,
                            %before,
                            now = %sample.last_delivered,
                            "the group's last-delivered id went back (re-created by a peer, \
                             or a failover or restart rolled it back): entries delivered \
                             again run again"
                        );
                        self.forget_finished();
                    }
                    self.high_water = self.high_water.max(sample.last_delivered);
                    self.last_delivered = Some(sample.last_delivered);
                    let kept = Kept {
                        started,
                        finished_at: Instant::now(),
                        floor: sample.after,
                        finished: sample.finished,
                    };
                    self.keep(kept, window);
                }
                // Missing: the next read finds out, and the samples from
                // before are what the re-creation needs.
                Ok(None) => {}
                Err(err) => tracing::debug!(error = %err, "could not sample the group's floor"),
            }
        }
        Ok(())
    }

    /// The group was found missing: make it again next turn. What the kept
    /// samples agree on, if they span `window`, says which entries the new
    /// group delivers again that are finished.
    pub fn lost(&mut self, window: Duration) {
        self.ready = false;
        self.before_loss = if self.spans(window) {
            self.kept.iter().cloned().collect()
        } else {
            Vec::new()
        };
    }

    /// Whether `id` is known finished (delivered and acknowledged) in an
    /// earlier life of the group: delivered again only because the group
    /// was destroyed, it is acknowledged without running again.
    ///
    /// Only the samples kept when this worker found the group missing
    /// count, and only if every one of them shows it finished (see the
    /// module doc's "Rollbacks"); never the current life's: within one life
    /// an acknowledged entry is delivered again only when the broker forgot
    /// the acknowledgement (a rollback: AOF `everysec`, a failover to a
    /// lagging replica), and then it must run again, or the task is lost
    /// with its entry still there (the simulator's rollback class found
    /// this: `remember-settled` is the same bug on purpose). Nor does a
    /// last-delivered id that went back count: a rollback does that too
    /// (a failover to a replica that missed the deliveries, acks and
    /// results after some point: `cluster_rollback` in crewq-tests).
    pub fn finished(&self, id: StreamId) -> bool {
        !self.before_loss.is_empty() && self.before_loss.iter().all(|kept| kept.shows_finished(id))
    }

    /// Adds a sample, then drops the oldest ones while the next oldest
    /// still spans `window` with the newest: the window stays covered.
    fn keep(&mut self, kept: Kept, window: Duration) {
        let newest = kept.started;
        self.kept.push_back(kept);
        while self
            .kept
            .get(1)
            .is_some_and(|next| newest.duration_since(next.finished_at) >= window)
        {
            self.kept.pop_front();
        }
    }

    /// Whether the kept samples span `window`: the oldest one's reads ended
    /// at least `window` before the newest one's began. A rollback back to
    /// a snapshot at most `window` old made wrong only samples that read
    /// after the snapshot and before the rollback; if the newest is one,
    /// the oldest read before the snapshot, so one kept sample is right.
    fn spans(&self, window: Duration) -> bool {
        match (self.kept.front(), self.kept.back()) {
            (Some(oldest), Some(newest)) => {
                newest.started.duration_since(oldest.finished_at) >= window
            }
            _ => false,
        }
    }

    /// Where a re-creation may start: the lowest kept floor, if the kept
    /// samples span `window`; else `None` (the stream's beginning).
    fn trusted_floor(&self, window: Duration) -> Option<StreamId> {
        if !self.spans(window) {
            return None;
        }
        self.kept.iter().map(|kept| kept.floor).min()
    }

    /// Whether the task stream's `top` (its last-generated id) is below
    /// an id a sample saw delivered: ids never go down in one stream, so
    /// the broker lost appends it had acknowledged (restarted from an AOF
    /// written `everysec`, failed over to a lagging replica), or the stream
    /// was deleted and made again.
    fn rolled_back(&self, top: Option<StreamId>) -> bool {
        top.is_none_or(|top| top < self.high_water)
    }

    /// After a rollback nothing sampled before it holds: acknowledgements
    /// below the floor, or of entries known finished, may be forgotten, and
    /// those entries pending again. The group, made again, starts at the
    /// stream's beginning, and what is delivered again runs again.
    fn forget_rolled_back(&mut self) {
        tracing::warn!(
            delivered_up_to = %self.high_water,
            "the task stream lost entries its group had delivered: the broker was rolled \
             back; making the group again at the stream's beginning"
        );
        self.kept.clear();
        self.before_loss.clear();
        self.high_water = StreamId::ZERO;
        self.last_delivered = None;
    }

    /// Forgets which entries the samples showed finished in their spans.
    /// Their floors stay: each kept sample taken after the rollback shows
    /// what the rollback made pending again above its floor.
    fn forget_finished(&mut self) {
        for kept in &mut self.kept {
            kept.finished = Finished::default();
        }
        self.before_loss.clear();
    }
}

/// What one look at the group shows.
struct Sample {
    /// The position to re-create the group after: just before its oldest
    /// pending entry, else its last-delivered id.
    after: StreamId,
    last_delivered: StreamId,
    finished: Finished,
}

/// Pending entries a sample lists at most: the span it knows finished
/// ends at the last one listed.
const SAMPLE_PENDING: usize = 1000;

/// Creates the group (and the stream) after `after` unless it exists;
/// returns whether it created it. `recreating` says it existed before in
/// this run and was destroyed: that is logged as a warning and counted
/// ([`GROUP_RECREATED`]).
async fn ensure_group<B: Broker, H>(
    shared: &Shared<B, H>,
    after: StreamId,
    recreating: bool,
) -> Result<bool> {
    let keys = &shared.keys;
    let start = if recreating && shared.options.is_mutant(Mutant::RecreateGroupAtEnd) {
        // `$`: what was unread or pending when the group was destroyed,
        // and what was appended since, is never delivered.
        GroupStart::Latest
    } else {
        GroupStart::After(after)
    };
    match shared
        .broker
        .group_create(&keys.tasks, &keys.group, start, true)
        .await
    {
        Ok(()) => {
            if recreating {
                tracing::warn!(
                    stream = %keys.tasks,
                    group = %keys.group,
                    %after,
                    "the consumer group had been destroyed; created it again \
                     where nothing it needed is lost (entries after it are delivered again)"
                );
                count(GROUP_RECREATED, &shared.agent_type, 1);
            }
            Ok(true)
        }
        Err(Error::GroupExists { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

/// The group's floor (see the module doc) and the entries its pending
/// list shows finished. `Ok(None)` when the group or the stream is missing
/// (nothing learnt).
///
/// The last-delivered id is read first, then the pending list, as
/// [`safe_floor`](crate::retention::safe_floor) does: an entry delivered
/// in between is above that id, pending or not.
///
/// # Errors
///
/// A broker error of `XINFO GROUPS` or `XPENDING`.
async fn sample<B: Broker, H>(shared: &Shared<B, H>) -> Result<Option<Sample>> {
    let keys = &shared.keys;
    let groups = match shared.broker.info_groups(&keys.tasks).await {
        Ok(groups) => groups,
        Err(Error::NoSuchKey(_) | Error::NoGroup { .. }) => return Ok(None),
        Err(err) => return Err(err),
    };
    let Some(group) = groups.iter().find(|g| g.name == keys.group) else {
        return Ok(None);
    };
    let pending = match shared
        .broker
        .pending(&keys.tasks, &keys.group, &PendingQuery::new(SAMPLE_PENDING))
        .await
    {
        Ok(pending) => pending,
        Err(Error::NoSuchKey(_) | Error::NoGroup { .. }) => return Ok(None),
        Err(err) => return Err(err),
    };
    let pending: BTreeSet<StreamId> = pending.into_iter().map(|p| p.id).collect();
    let after = pending
        .first()
        .map_or(group.last_delivered_id, |oldest| predecessor(*oldest));
    Ok(Some(Sample {
        after,
        last_delivered: group.last_delivered_id,
        finished: Finished::from_pending(pending),
    }))
}

/// The top id of the task stream (`XINFO STREAM`'s last-generated id), or
/// `None` when the stream does not exist.
///
/// # Errors
///
/// A broker error other than a missing key.
async fn stream_top<B: Broker, H>(shared: &Shared<B, H>) -> Result<Option<StreamId>> {
    match shared.broker.info_stream(&shared.keys.tasks).await {
        Ok(info) => Ok(Some(info.last_generated_id)),
        Err(Error::NoSuchKey(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Where a destroyed group is created again: the lowest of `floor` (the
/// position last sampled by [`sample`]; `0` if none was), and just
/// before the oldest entry in `held`; `0` when the stream is missing or new
/// (`top`, its last-generated id, below that position: ids never go down in
/// one stream, so it was deleted and made again).
///
/// Never `$`: entries unread when the group was destroyed, or appended
/// since, would never be delivered. Not the newest entry this worker read:
/// entries other workers held below it would never be delivered again.
fn recreate_after(floor: Option<StreamId>, held: &[StreamId], top: Option<StreamId>) -> StreamId {
    let known = floor.unwrap_or(StreamId::ZERO);
    let after = match held.iter().min() {
        Some(oldest) => known.min(predecessor(*oldest)),
        None => known,
    };
    match top {
        Some(top) if top >= after => after,
        _ => StreamId::ZERO,
    }
}

/// The id just before `id` (`0-0` stays `0-0`).
fn predecessor(id: StreamId) -> StreamId {
    if id.seq > 0 {
        StreamId::new(id.ms, id.seq - 1)
    } else if id.ms > 0 {
        StreamId::new(id.ms - 1, u64::MAX)
    } else {
        StreamId::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: Option<StreamId> = Some(StreamId::new(100, 0));

    #[test]
    fn a_destroyed_group_is_recreated_at_the_lowest_of_its_floor_and_what_is_held() {
        let held = [StreamId::new(5, 0), StreamId::new(3, 2)];
        // The floor sampled before the destruction is lower: other workers'
        // pending entries may sit between it and what this worker holds.
        assert_eq!(
            recreate_after(Some(StreamId::new(2, 0)), &held, TOP),
            StreamId::new(2, 0)
        );
        // This worker holds something older than the floor last sampled
        // (the sample is stale, or it failed).
        assert_eq!(
            recreate_after(Some(StreamId::new(9, 0)), &held, TOP),
            StreamId::new(3, 1)
        );
        assert_eq!(
            recreate_after(Some(StreamId::new(9, 0)), &[StreamId::new(4, 0)], TOP),
            StreamId::new(3, u64::MAX)
        );
        assert_eq!(
            recreate_after(Some(StreamId::new(9, 0)), &[], TOP),
            StreamId::new(9, 0)
        );
        assert_eq!(recreate_after(None, &[StreamId::ZERO], TOP), StreamId::ZERO);
    }

    #[test]
    fn a_stream_top_below_an_id_seen_delivered_means_a_rollback() {
        let mut watch = GroupWatch {
            high_water: StreamId::new(900, 9),
            ..GroupWatch::default()
        };
        let window = Duration::from_secs(5);
        let start = Instant::now();
        for (secs, floor) in [(0, 600), (6, 700)] {
            let at = start + Duration::from_secs(secs);
            let finished = Finished::default();
            let floor = StreamId::new(floor, 0);
            let kept = Kept {
                started: at,
                finished_at: at,
                floor,
                finished,
            };
            watch.keep(kept, window);
        }
        assert_eq!(watch.trusted_floor(window), Some(StreamId::new(600, 0)));
        // Appends since the id seen delivered: nothing lost.
        assert!(!watch.rolled_back(Some(StreamId::new(900, 9))));
        assert!(!watch.rolled_back(Some(StreamId::new(950, 0))));
        // Below it: the broker lost appends it had acknowledged.
        assert!(watch.rolled_back(Some(StreamId::new(620, 3))));
        assert!(watch.rolled_back(None));
        watch.forget_rolled_back();
        assert_eq!(
            watch.trusted_floor(window),
            None,
            "the group is made again at the beginning"
        );
        assert_eq!(
            recreate_after(
                watch.trusted_floor(window),
                &[],
                Some(StreamId::new(620, 3))
            ),
            StreamId::ZERO
        );
    }

    /// Samples 0 s, 2 s, ... apart, with these floors and pending lists.
    fn sampled(window: Duration, samples: &[(u64, &[u64])]) -> GroupWatch {
        let mut watch = GroupWatch::default();
        let start = Instant::now();
        for (n, (floor, pending)) in samples.iter().enumerate() {
            let at = start + Duration::from_secs(2 * n as u64);
            let pending = pending.iter().map(|ms| StreamId::new(*ms, 0)).collect();
            let kept = Kept {
                started: at,
                finished_at: at,
                floor: StreamId::new(*floor, 0),
                finished: Finished::from_pending(pending),
            };
            watch.keep(kept, window);
        }
        watch
    }

    #[test]
    fn a_recreation_trusts_only_what_every_sample_of_the_rollback_window_agrees_on() {
        let window = Duration::from_secs(3);
        let id = |ms| StreamId::new(ms, 0);
        // The last sample ran ahead of the others: taken after a rollback's
        // snapshot, it saw entries 10..=12 acknowledged that the rollback
        // then made pending again. Its floor is not trusted, nor its span.
        let mut watch = sampled(window, &[(1, &[2, 9]), (3, &[4, 10]), (12, &[13, 20])]);
        assert_eq!(
            watch.kept.len(),
            3,
            "the 4 s old sample is the one before the window"
        );
        assert_eq!(watch.trusted_floor(window), Some(id(1)));
        watch.lost(window);
        // What every sample shows finished: at or below its floor, or
        // between pending entries and not pending. Not 4 (pending in the
        // second), nor 10..=12 (the third alone).
        let finished: Vec<u64> = (0..22).filter(|ms| watch.finished(id(*ms))).collect();
        assert_eq!(finished, [0, 1, 3, 5, 6, 7, 8]);
        // Older samples than the window's are dropped once a newer one is
        // at least the window before the newest.
        let watch = sampled(window, &[(1, &[]), (2, &[]), (3, &[]), (4, &[]), (5, &[])]);
        assert_eq!(watch.trusted_floor(window), Some(id(3)));
    }

    #[test]
    fn samples_that_do_not_span_the_rollback_window_are_not_trusted() {
        let window = Duration::from_secs(5);
        let mut watch = sampled(window, &[(7, &[8, 11]), (9, &[10, 12])]);
        assert_eq!(
            watch.trusted_floor(window),
            None,
            "2 s of samples, a 5 s window"
        );
        watch.lost(window);
        assert!(!watch.finished(StreamId::new(9, 0)));
        // No window: the newest sample alone, as before rollbacks were known.
        let watch = sampled(Duration::ZERO, &[(7, &[8, 11]), (9, &[10, 12])]);
        assert_eq!(
            watch.trusted_floor(Duration::ZERO),
            Some(StreamId::new(9, 0))
        );
    }

    #[test]
    fn with_no_floor_sampled_a_destroyed_group_is_recreated_at_the_beginning() {
        // Duplicates, not losses: nothing is known of what others held.
        assert_eq!(
            recreate_after(None, &[StreamId::new(5, 0)], TOP),
            StreamId::ZERO
        );
        assert_eq!(recreate_after(None, &[], TOP), StreamId::ZERO);
    }

    #[test]
    fn a_deleted_stream_gets_its_group_back_at_the_beginning() {
        let floor = Some(StreamId::new(50, 3));
        // Gone: whatever is appended to the new stream is unread.
        assert_eq!(recreate_after(floor, &[], None), StreamId::ZERO);
        // Made again with ids below the old floor: all of it is unread.
        assert_eq!(
            recreate_after(floor, &[], Some(StreamId::new(40, 0))),
            StreamId::ZERO
        );
        // The same stream, its top at the floor: the floor stands.
        assert_eq!(
            recreate_after(floor, &[], Some(StreamId::new(50, 3))),
            StreamId::new(50, 3)
        );
    }
}
