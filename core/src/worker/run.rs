//! The worker's loop: drain its own pending entries, then read new ones;
//! take over peers' stale entries; wait out broker errors; stop with a grace
//! period. Leases are renewed beside it (`renew.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{BROKER_ERRORS, count};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::{
    AgentType, Broker, DATA_FIELD, DeadLetterReason, DeliveredEntry, Error, Priority, ReadGroup,
    ReadLanes, Result, StreamId, Task,
};

use super::attempt::{Outcome, Shared, Source, panic_message};
use super::context::{Lease, WorkerLink};
use super::group::GroupWatch;
use super::health::{Health, Reporter, duplicate, stops_the_worker};
use super::held::Held;
use super::lanes::{Arbiter, Hub, LaneTasks, Mail};
use super::mutant::Mutant;
use super::promote::{Wake, promote_forever};
use super::rate::{Permit, RateGate, release_forever};
use super::record::RETRY_CAP;
use super::renew::renew_forever;
use super::settler::{Retained, Settler};
use super::{Handler, Worker, WorkerOptions, WorkerReport};

mod rated;
mod reclaim;

/// Which read a turn made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Drain,
    Reclaim,
    New,
}

/// The worker's state between reads.
pub(super) struct Loop<B, H> {
    shared: Arc<Shared<B, H>>,
    pub(super) inflight: JoinSet<Outcome>,
    pub(super) report: WorkerReport,
    /// `Some(after)` while draining this consumer's own pending entries.
    draining: Option<StreamId>,
    reclaim_cursor: StreamId,
    next_reclaim: Instant,
    /// Set after a failed drain or reclaim: the next turn reads new entries,
    /// so a failing scan never starves new work.
    read_new_next: bool,
    /// Broker failures in a row, for the back-off.
    failures: u32,
    /// What is known of the consumer group: whether it exists, and where
    /// to make it again should it be destroyed.
    group: GroupWatch,
    reporter: Reporter,
    /// With a rate limit: entries read (and held) waiting for permits, in
    /// read order; nothing more is read while any wait.
    waiting: VecDeque<Waiting>,
    /// What the worker's lanes share: its slots, and the arbiter's mail.
    hub: Arc<Hub>,
    /// The priority lane this loop serves.
    lane: Priority,
    /// Lane 0's: it reads new entries for every lane.
    arbiter: Option<Arbiter>,
    /// A slot taken while waiting for one, used by the next read.
    spare: Option<OwnedSemaphorePermit>,
}

/// An entry read and held, waiting for a rate-limit permit.
struct Waiting {
    entry: DeliveredEntry,
    source: Source,
    cancel: CancellationToken,
    slot: Option<OwnedSemaphorePermit>,
}

/// An entry read, ready to start: how it came, when the read that took it
/// was sent (its lease began then at the latest), and its slot.
type Taken = (
    DeliveredEntry,
    Source,
    Instant,
    Option<OwnedSemaphorePermit>,
);

/// What every lane of one worker is made from.
pub(crate) struct Setup<B, H> {
    pub broker: B,
    pub agent: AgentType,
    pub consumer: String,
    pub handler: Arc<H>,
    pub options: WorkerOptions,
    pub seed: u64,
    pub reporter: Reporter,
    pub hub: Arc<Hub>,
}

pub(crate) async fn run<B, P, H>(
    worker: Worker<B, P, H>,
    stop: impl Future<Output = Duration> + Send,
    reporter: Reporter,
    tasks: Arc<LaneTasks>,
) -> Result<WorkerReport>
where
    B: Broker + Clone + 'static,
    P: DeserializeOwned + Send + 'static,
    H: Handler<P>,
{
    let Worker {
        broker,
        agent,
        consumer,
        handler,
        options,
        ..
    } = worker;
    if let Err(invalid) = options.validate() {
        let err = Error::from(invalid);
        tracing::error!(error = %err, "the worker cannot start");
        reporter.set(Health::Stopped {
            error: Some(Arc::new(duplicate(&err))),
        });
        return Err(err);
    }
    let seed = options.seed.unwrap_or_else(rand::random);
    let (start, asked) = tokio::sync::mpsc::unbounded_channel();
    let hub = Arc::new(Hub::new(options.concurrency, start));
    let setup = Arc::new(Setup {
        broker,
        agent,
        consumer,
        handler: Arc::new(handler),
        options,
        seed,
        reporter: reporter.clone(),
        hub,
    });
    let ended = super::lanes::run_lanes::<B, P, H>(setup, asked, stop, tasks).await;
    match &ended {
        Ok(_) => reporter.set(Health::Stopped { error: None }),
        Err(err) => reporter.set(Health::Stopped {
            error: Some(Arc::new(duplicate(err))),
        }),
    }
    ended
}

/// Runs the loop of lane `lane` until `stop` resolves to a grace period, or
/// until an error it cannot wait out; then lets its running attempts
/// finish within the grace.
pub(crate) async fn run_lane<B, P, H>(
    setup: Arc<Setup<B, H>>,
    lane: Priority,
    mut graces: watch::Receiver<Option<Duration>>,
) -> Result<WorkerReport>
where
    B: Broker + Clone + 'static,
    P: DeserializeOwned + Send + 'static,
    H: Handler<P>,
{
    let options = setup.options.clone();
    let agent = &setup.agent;
    let consumer = setup.consumer.clone();
    let reporter = setup.reporter.clone();
    // Lane 0 keeps the worker's seed: a worker whose tasks all have
    // priority 0 draws as it did before lanes.
    let seed = setup
        .seed
        .wrapping_add(u64::from(u8::from(lane)).rotate_left(32));
    let keys = options.keyspace.lane_keys(agent, lane);
    let (settler, settling) = Settler::new(
        setup.broker.clone(),
        &keys.tasks,
        &keys.group,
        &consumer,
        options.settle_batch,
        Retained::new(
            &keys.results,
            options.result_retention,
            &keys.dlq,
            options.dead_letter_retention,
            Arc::clone(&options.clock),
        ),
    );
    let rate_keys = options.keyspace.rate(agent);
    let rate = options.rate_limit.map(|limit| {
        Arc::new(RateGate::new(
            rate_keys.clone(),
            limit,
            options.lease,
            &consumer,
            seed.rotate_left(17),
        ))
    });
    let shared = Arc::new(Shared {
        rate,
        rate_keys,
        keys,
        agent_type: agent.as_str().to_owned(),
        broker: setup.broker.clone(),
        handler: Arc::clone(&setup.handler),
        consumer,
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
        progress: options.keyspace.progress(agent),
        held: Mutex::new(BTreeMap::new()),
        stopping: AtomicBool::new(false),
        deleted: Mutex::new(BTreeSet::new()),
        settler,
        reporter: reporter.clone(),
        failing: AtomicUsize::new(0),
        settled_ids: Default::default(),
        wake: Wake::default(),
        options,
    });
    // The settler and the renewals live as long as this run, through the
    // grace period: dropping the set (the run ended, or was aborted like a
    // crash) stops them with the attempts.
    let mut background = JoinSet::new();
    background.spawn(settling.run());
    let renewing = background.spawn(renew_forever(Arc::clone(&shared)));
    background.spawn(promote_forever(Arc::clone(&shared)));
    background.spawn(release_forever(Arc::clone(&shared)));
    let mut state = Loop {
        // Look for peers' stale entries at once: a restart after a crash of
        // the whole crew should not wait.
        next_reclaim: Instant::now(),
        shared,
        inflight: JoinSet::new(),
        report: WorkerReport::default(),
        draining: Some(StreamId::ZERO),
        reclaim_cursor: StreamId::ZERO,
        read_new_next: false,
        failures: 0,
        group: GroupWatch::default(),
        reporter: reporter.clone(),
        waiting: VecDeque::new(),
        hub: Arc::clone(&setup.hub),
        lane,
        arbiter: (lane == Priority::MIN).then(|| Arbiter::new(&setup.options.keyspace, agent)),
        spare: None,
    };
    let ended = {
        // Made once, not at every step: a turn of the loop is the worker's
        // per-read cost, and a watch's wait registers with its notifier.
        let stop = graces.wait_for(Option::is_some);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                grace = &mut stop => break Ok(grace.ok().and_then(|grace| *grace).unwrap_or_default()),
                step = state.step::<P>() => if let Err(err) = step { break Err(err) },
            }
        }
    };
    match ended {
        Ok(grace) => {
            if state.shared.options.is_mutant(Mutant::NoRenewInGrace) {
                renewing.abort();
            }
            // Handlers wind down within the grace (worker::Context).
            state.shared.cancel_all();
            state.hand_back_waiting();
            Ok(state.finish(Instant::now() + grace, graces).await)
        }
        Err(err) => {
            tracing::error!(error = %err, "the worker stops: an error waiting cannot fix; running tasks get their grace");
            let shown = Arc::new(duplicate(&err));
            reporter.set(Health::Stopping {
                error: Arc::clone(&shown),
            });
            let deadline = Instant::now() + state.shared.options.stop_grace;
            state.shared.cancel_all();
            state.hand_back_waiting();
            let report = state.finish(deadline, graces).await;
            tracing::error!(?report, error = %err, "the worker stopped");
            Err(err)
        }
    }
}

impl<B, H> Loop<B, H>
where
    B: Broker + Clone + 'static,
    H: Send + Sync + 'static,
{
    /// One turn: collect finished attempts, then read (own history, peers'
    /// stale entries, or new entries) as far as there is room.
    ///
    /// # Errors
    ///
    /// Only an error that stops the worker ([`stops_the_worker`]); every
    /// other one is waited out here.
    async fn step<P>(&mut self) -> Result<()>
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        if let Err(err) = self.group.ensure(&self.shared).await {
            return self.wait_out(err).await;
        }
        while let Some(done) = self.inflight.try_join_next() {
            self.tally(done);
        }
        if self.arbiter.is_none() {
            // What lane 0's read took for this lane, each with its slot.
            let (mail, no_group) = self.hub.take(self.lane);
            if no_group {
                self.group_missing();
            }
            if !mail.is_empty() {
                let batch = mail
                    .into_iter()
                    .map(|m| (m.entry, Source::New, m.sent, m.slot))
                    .collect();
                return self.take_batch::<P>(batch).await;
            }
        }
        if !self.waiting.is_empty() {
            return self.start_waiting::<P>().await;
        }
        let Some(mut slots) = self.hub.reserve(self.spare.take()) else {
            self.wait_for_slot().await;
            return Ok(());
        };
        let free = slots.num_permits();
        // The leases of what this read brings began when it was sent, at
        // the latest (a reply may come back late: the worker frozen
        // meanwhile).
        let sent = Instant::now();
        let kind = if std::mem::take(&mut self.read_new_next) {
            Read::New
        } else if self.draining.is_some() {
            Read::Drain
        } else if sent >= self.next_reclaim {
            if self.shared.options.is_mutant(Mutant::NoReclaim) {
                // The broken worker skips its scan but waits as if it had
                // made it: a lane's wait for mail, bounded by the next scan,
                // must not spin on one overdue (a hang under paused time).
                self.next_reclaim = Instant::now() + self.shared.options.reclaim_every;
                Read::New
            } else {
                Read::Reclaim
            }
        } else {
            Read::New
        };
        if kind == Read::New && self.arbiter.is_none() {
            // New entries of this lane come by mail from lane 0's reads.
            drop(slots);
            self.wait_for_mail().await;
            return Ok(());
        }
        let read = match kind {
            Read::Drain => self.drain(free).await,
            Read::Reclaim => self.reclaim(free).await,
            Read::New => self.read_new(free, &mut slots, sent).await,
        };
        match read {
            Ok(batch) => {
                let batch = batch
                    .into_iter()
                    .map(|(entry, source)| (entry, source, sent, slots.split(1)))
                    .collect();
                // Slots read for and not used go back now.
                drop(slots);
                self.take_batch::<P>(batch).await
            }
            Err(err) => {
                let starve = kind == Read::Reclaim
                    && self
                        .shared
                        .options
                        .is_mutant(Mutant::ReclaimFailureStarvesRead);
                if kind == Read::Reclaim && !starve {
                    // Look again after the usual interval, not at once: a
                    // failing scan must not keep the worker from new work.
                    self.next_reclaim = Instant::now() + self.shared.options.reclaim_every;
                }
                self.read_new_next = kind != Read::New && !starve;
                self.wait_out(err).await
            }
        }
    }

    /// Starts what a read took (or waits it for rate permits), each entry
    /// with its slot.
    async fn take_batch<P>(&mut self, batch: Vec<Taken>) -> Result<()>
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        self.failures = 0;
        if self.shared.failing.load(Ordering::SeqCst) == 0 {
            self.reporter.recovered();
        }
        let mut finished = Vec::new();
        for (entry, source, sent, slot) in batch {
            if self.group.finished(entry.id) {
                finished.push(entry.id);
            } else if self.shared.rate.is_some() {
                self.wait_for_permit(entry, source, sent, slot);
            } else {
                self.start::<P>(entry, source, sent, slot);
            }
        }
        // Start first, then acknowledge what the group's replay
        // delivered again, as without a rate limit: the simulator
        // ties a run to the first entry of its delivery not started
        // yet, and a finished entry is never started.
        let wait = if self.waiting.is_empty() {
            None
        } else {
            self.grant_waiting::<P>().await?
        };
        self.ack_finished(finished).await;
        match wait {
            Some(wait) => self.wait_for_room(wait).await,
            None => Ok(()),
        }
    }

    /// With every slot taken: waits for one (kept for the next read), an
    /// own attempt to end, or mail from lane 0.
    async fn wait_for_slot(&mut self) {
        let hub = Arc::clone(&self.hub);
        let slots = Arc::clone(&hub.slots);
        let mail = self.arbiter.is_none();
        tokio::select! {
            biased;
            Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => self.tally(done),
            () = hub.posted(self.lane), if mail => {}
            slot = slots.acquire_owned() => self.spare = slot.ok(),
        }
    }

    /// A lane above 0 with room: waits for mail from lane 0's reads, until
    /// its next reclaim scan at the latest.
    async fn wait_for_mail(&mut self) {
        let hub = Arc::clone(&self.hub);
        let until = self
            .next_reclaim
            .min(Instant::now() + self.shared.options.effective_block());
        tokio::select! {
            biased;
            () = hub.posted(self.lane) => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }

    /// A read found the group missing: held entries may be gone with it
    /// (issue 9), and the group is made again next turn.
    fn group_missing(&mut self) {
        self.shared.saw_group_gone();
        tracing::warn!(stream = %self.shared.keys.tasks, "the consumer group is missing; creating it again");
        self.group.lost(self.shared.rollback_window());
    }

    async fn drain(&mut self, count: usize) -> Result<Vec<(DeliveredEntry, Source)>> {
        let after = self.draining.unwrap_or(StreamId::ZERO);
        let keys = &self.shared.keys;
        let read = ReadGroup::new(&keys.tasks, &keys.group, &self.shared.consumer)
            .pending_after(after)
            .count(count);
        let entries = self.shared.broker.read_group(&read).await?;
        self.draining = entries.last().map(|entry| entry.id);
        if self.draining.is_none() {
            tracing::debug!("own pending entries drained");
        }
        Ok(entries.into_iter().map(|e| (e, Source::Drained)).collect())
    }

    /// Lane 0 reads new entries for every lane in use (see `lanes.rs`):
    /// its own are returned, the others posted to their lanes with a slot
    /// each, taken from `slots`.
    async fn read_new(
        &mut self,
        count: usize,
        slots: &mut OwnedSemaphorePermit,
        sent: Instant,
    ) -> Result<Vec<(DeliveredEntry, Source)>> {
        let shared = Arc::clone(&self.shared);
        let options = &shared.options;
        // The step's one clock read.
        let now = sent;
        let until_reclaim = self.next_reclaim.saturating_duration_since(now);
        let Some(arbiter) = self.arbiter.as_mut() else {
            return Ok(Vec::new());
        };
        let look = now >= arbiter.next_look;
        if !look && arbiter.present.is_empty() {
            // Only lane 0 in use: a plain blocking read, until the next
            // look at the latest.
            let block = until_reclaim.min(arbiter.next_look.saturating_duration_since(now));
            return self.read_lane_zero(count, block).await;
        }
        // A lane no loop of this worker served yet gets its group now,
        // delivering the whole stream, as its loop's first turn would make
        // it: so its backlog is weighed in this very read.
        let (mut priorities, lanes) = arbiter.lanes(look, &self.hub);
        let mut read = ReadLanes::new(
            &shared.keys.group,
            &shared.consumer,
            count,
            options.starvation_bound,
        );
        read.lanes = lanes;
        if options.is_mutant(Mutant::IgnorePriority) {
            // Lowest first: what a worker without lanes would do to them.
            read.lanes.reverse();
            priorities.reverse();
            for lane in &mut read.lanes {
                lane.priority = 0;
            }
        }
        let got = shared.broker.read_lanes(&read).await?;
        let priority_of = |i: usize| priorities.get(i).copied().unwrap_or(Priority::MIN);
        if look {
            arbiter.present = got
                .present
                .iter()
                .map(|&i| priority_of(i))
                .filter(|&p| p != Priority::MIN)
                .collect();
            arbiter.present.sort_unstable_by(|a, b| b.cmp(a));
            arbiter.next_look = now + options.lane_poll;
            for &priority in &arbiter.present {
                self.hub.serve(priority);
            }
        }
        let others_in_use = !arbiter.present.is_empty();
        let next_look = arbiter.next_look;
        let mut mine = Vec::new();
        let mut lane_zero_missing = false;
        for &i in &got.no_group {
            match priority_of(i) {
                Priority::MIN => lane_zero_missing = true,
                priority => self.hub.no_group(priority),
            }
        }
        let took_any = !got.entries.is_empty();
        for (i, entry) in got.entries {
            match priority_of(i) {
                Priority::MIN => mine.push((entry, Source::New)),
                priority => {
                    let slot = slots.split(1);
                    self.hub.post(priority, Mail { entry, sent, slot });
                }
            }
        }
        if lane_zero_missing {
            return Err(Error::no_group(&shared.keys.tasks, &shared.keys.group));
        }
        if took_any {
            return Ok(mine);
        }
        // Nothing unread in any lane: wait on lane 0, and look again soon
        // while other lanes are in use (a read cannot wait on them all).
        let block = if others_in_use {
            until_reclaim.min(options.lane_poll)
        } else {
            until_reclaim.min(next_look.saturating_duration_since(now))
        };
        self.read_lane_zero(slots.num_permits(), block).await
    }

    /// A group read of lane 0 waiting up to `block` (at most the worker's
    /// block time).
    async fn read_lane_zero(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<(DeliveredEntry, Source)>> {
        let shared = &self.shared;
        let block = shared
            .options
            .effective_block()
            .min(block)
            .max(Duration::from_millis(1));
        let read = ReadGroup::new(&shared.keys.tasks, &shared.keys.group, &shared.consumer)
            .count(count)
            .block(block);
        let entries = shared.broker.read_group(&read).await?;
        Ok(entries.into_iter().map(|e| (e, Source::New)).collect())
    }

    /// Starts an attempt at `entry`, the whole of it under `catch_unwind`
    /// and its entry held (leases renewed) until it ends, however it ends.
    fn start<P>(
        &mut self,
        entry: DeliveredEntry,
        source: Source,
        leased_at: Instant,
        slot: Option<OwnedSemaphorePermit>,
    ) where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        let id = entry.id;
        let Some(cancel) = self.shared.hold(id, leased_at) else {
            // Reclaimed from ourselves (its lease lapsed while renewals
            // failed): the attempt already running settles it.
            tracing::debug!(%id, "already running; not starting a second attempt");
            return;
        };
        self.launch::<P>(entry, source, cancel, None, slot);
    }

    /// Starts an attempt at `entry`, held already with `cancel`, holding
    /// `permit` (released when it ends) if the worker has a rate limit, and
    /// its `slot` of the worker's concurrency until it ends.
    fn launch<P>(
        &mut self,
        entry: DeliveredEntry,
        source: Source,
        cancel: CancellationToken,
        permit: Option<String>,
        slot: Option<OwnedSemaphorePermit>,
    ) where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let id = entry.id;
        let worker: Arc<dyn WorkerLink> = Arc::clone(&shared) as Arc<dyn WorkerLink>;
        let lease = Lease {
            id,
            cancel,
            worker,
            permit: permit.as_deref().map(Arc::from),
        };
        let permit = Permit(
            shared
                .rate
                .as_ref()
                .zip(permit)
                .map(|(gate, permit)| (Arc::clone(gate), permit)),
        );
        let data = entry
            .fields
            .as_ref()
            .and_then(|fields| fields.get(DATA_FIELD).cloned())
            .unwrap_or_default();
        let attempt = async move {
            // Released on every path: an attempt that ends, panics, or is
            // aborted at the grace's end.
            let _held = Held(&shared, id);
            let _permit = permit;
            let _slot = slot;
            if shared.skips_remembered(id).await {
                return Outcome::Completed;
            }
            let attempt =
                AssertUnwindSafe(shared.attempt::<P>(entry, source, lease)).catch_unwind();
            let outcome = match attempt.await {
                Ok(outcome) => outcome,
                Err(panic) => {
                    // Not the handler (its panics fail its run): a validator,
                    // a decoder, arithmetic on peer-written fields. The entry
                    // is poison: running it again panics again.
                    let error = format!("panicked outside the handler: {}", panic_message(&*panic));
                    tracing::error!(%id, %error, "an attempt panicked; dead-lettering its entry");
                    shared
                        .dead_letter(
                            id,
                            data.clone(),
                            None::<&Task>,
                            DeadLetterReason::Panicked,
                            error,
                            0,
                        )
                        .await
                }
            };
            shared.remember_settled(id, outcome);
            // Found deleted by a renewal (when unsure whether it is still
            // gone, dead-lettered: a letter too many beats a task lost), or
            // the group seen gone meanwhile and the entry with it (asked
            // until the broker answers: nothing else said it was deleted).
            // Either way it will never be delivered again.
            let deleted = outcome == Outcome::Zombie && shared.was_deleted(id);
            let gone = if deleted {
                shared.still_gone(id).await
            } else {
                matches!(outcome, Outcome::Zombie | Outcome::Cancelled)
                    && shared.group_gone_while_held(id)
                    && shared.gone_for_sure(id).await
            };
            if gone {
                return shared.deleted_while_pending(id, data, false).await;
            }
            outcome
        };
        // Boxed: the attempt's state machine is several kilobytes, and the
        // runtime moves a spawned future by value (into its task cell, then
        // through its stages); a box is moved as one pointer.
        self.inflight.spawn(Box::pin(attempt));
    }

    /// Acknowledges entries delivered again only because the group was
    /// destroyed and made again below them, whose outcomes are recorded
    /// already ([`GroupWatch::finished`]). Should that fail, they stay
    /// pending and are reclaimed after the lease, and maybe run again.
    async fn ack_finished(&self, ids: Vec<StreamId>) {
        if ids.is_empty() {
            return;
        }
        let keys = &self.shared.keys;
        match self.shared.broker.ack(&keys.tasks, &keys.group, &ids).await {
            Ok(acked) => tracing::info!(
                acked,
                "entries finished before the group was destroyed were delivered again; acknowledged, not run again"
            ),
            Err(err) => {
                tracing::warn!(error = %err, n = ids.len(), "could not acknowledge entries finished before the group was destroyed")
            }
        }
    }

    /// Waits out a failed read with a back-off capped at [`RETRY_CAP`],
    /// shown on the handle; a missing group is made again next turn. An
    /// error that stops the worker is returned.
    async fn wait_out(&mut self, err: Error) -> Result<()> {
        self.failures = self.failures.saturating_add(1);
        count(BROKER_ERRORS, &self.shared.agent_type, 1);
        let unavailable = err.kind() == crate::ErrorKind::Unavailable;
        if stops_the_worker(&err)
            || (unavailable && self.shared.options.is_mutant(Mutant::FatalOnUnavailable))
        {
            return Err(err);
        }
        if matches!(err, Error::NoGroup { .. }) {
            self.group_missing();
        }
        let wait = self.shared.backoff_wait(self.failures).min(RETRY_CAP);
        tracing::warn!(error = %err, ?wait, failures = self.failures, "broker call failed; waiting");
        self.reporter.degraded(duplicate(&err), self.failures);
        tokio::time::sleep(wait).await;
        Ok(())
    }
}
