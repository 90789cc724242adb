//! The worker's loop: drain its own pending entries, then read new ones;
//! take over peers' stale entries; renew leases; stop with a grace period.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::de::DeserializeOwned;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::metrics::{RECLAIMED, count};
use crate::{Broker, DeliveredEntry, Error, GroupStart, ReadGroup, Result, StreamId};

use super::attempt::{Outcome, Shared, Source};
use super::mutant::Mutant;
use super::settler::Settler;
use super::{Handler, Worker, WorkerReport};

/// The worker's state between reads.
struct Loop<B, H> {
    shared: Arc<Shared<B, H>>,
    inflight: JoinSet<Outcome>,
    report: WorkerReport,
    /// `Some(after)` while draining this consumer's own pending entries.
    draining: Option<StreamId>,
    reclaim_cursor: StreamId,
    next_renew: Instant,
    next_reclaim: Instant,
    /// Broker failures in a row, for the back-off.
    failures: u32,
    /// Whether the consumer group is known to exist.
    group_ready: bool,
}

pub(crate) async fn run<B, P, H>(
    worker: Worker<B, P, H>,
    stop: impl Future<Output = Duration> + Send,
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
    let seed = options.seed.unwrap_or_else(rand::random);
    let keys = options.keyspace.keys(&agent);
    let (settler, settling) = Settler::new(
        broker.clone(),
        &keys.tasks,
        &keys.group,
        &consumer,
        options.settle_batch,
    );
    // The settler lives as long as this run: dropping the set (the run
    // ended, or was aborted like a crash) stops it with the attempts.
    let mut background = JoinSet::new();
    background.spawn(settling.run());
    let shared = Arc::new(Shared {
        keys,
        agent_type: agent.as_str().to_owned(),
        broker,
        handler,
        consumer,
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
        held: Mutex::new(BTreeSet::new()),
        settler,
        options,
    });
    let now = Instant::now();
    let mut state = Loop {
        next_renew: now + shared.options.renew_every,
        // Look for peers' stale entries at once: a restart after a crash of
        // the whole crew should not wait.
        next_reclaim: now,
        shared,
        inflight: JoinSet::new(),
        report: WorkerReport::default(),
        draining: Some(StreamId::ZERO),
        reclaim_cursor: StreamId::ZERO,
        failures: 0,
        group_ready: false,
    };
    tokio::pin!(stop);
    let grace = loop {
        tokio::select! {
            biased;
            grace = &mut stop => break grace,
            step = state.step::<P>() => step?,
        }
    };
    Ok(state.finish(grace).await)
}

impl<B, H> Loop<B, H>
where
    B: Broker + Clone + 'static,
{
    /// One turn: collect finished attempts, renew leases, then read (own
    /// history, peers' stale entries, or new entries) as far as there is room.
    async fn step<P>(&mut self) -> Result<()>
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        if !self.group_ready {
            match ensure_group(&self.shared).await {
                Ok(()) => self.group_ready = true,
                Err(err) => return self.wait_out(err).await,
            }
        }
        while let Some(done) = self.inflight.try_join_next() {
            self.tally(done);
        }
        if Instant::now() >= self.next_renew {
            self.renew().await;
            self.next_renew = Instant::now() + self.shared.options.renew_every;
        }
        let free = self
            .shared
            .options
            .concurrency
            .saturating_sub(self.inflight.len());
        if free == 0 {
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next() => self.tally(done),
                () = tokio::time::sleep_until(self.next_renew) => {}
            }
            return Ok(());
        }
        let read = if self.draining.is_some() {
            self.drain(free).await
        } else if Instant::now() >= self.next_reclaim
            && !self.shared.options.is_mutant(Mutant::NoReclaim)
        {
            self.reclaim(free).await
        } else {
            self.read_new(free).await
        };
        match read {
            Ok(batch) => {
                self.failures = 0;
                for (entry, source) in batch {
                    self.start::<P>(entry, source);
                }
                Ok(())
            }
            Err(err) => self.wait_out(err).await,
        }
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

    async fn reclaim(&mut self, limit: usize) -> Result<Vec<(DeliveredEntry, Source)>> {
        let shared = &self.shared;
        let claimed = shared
            .broker
            .autoclaim(
                &shared.keys.tasks,
                &shared.keys.group,
                &shared.consumer,
                shared.options.lease,
                self.reclaim_cursor,
                limit,
            )
            .await?;
        self.reclaim_cursor = claimed.next;
        if claimed.next == StreamId::ZERO {
            // The scan reached the end: look again after a while.
            self.next_reclaim = Instant::now() + shared.options.reclaim_every;
        }
        if !claimed.claimed.is_empty() {
            tracing::info!(n = claimed.claimed.len(), "took over stale entries");
            count(RECLAIMED, &shared.agent_type, claimed.claimed.len() as u64);
            self.report.reclaimed += claimed.claimed.len() as u64;
        }
        Ok(claimed
            .claimed
            .into_iter()
            .map(|e| (e.into(), Source::Reclaimed))
            .collect())
    }

    async fn read_new(&mut self, count: usize) -> Result<Vec<(DeliveredEntry, Source)>> {
        let shared = &self.shared;
        let now = Instant::now();
        // Wake for the next renewal or reclaim scan, whichever is first.
        let block = shared
            .options
            .effective_block()
            .min(self.next_renew.saturating_duration_since(now))
            .min(self.next_reclaim.saturating_duration_since(now))
            .max(Duration::from_millis(1));
        let read = ReadGroup::new(&shared.keys.tasks, &shared.keys.group, &shared.consumer)
            .count(count)
            .block(block);
        let entries = shared.broker.read_group(&read).await?;
        Ok(entries.into_iter().map(|e| (e, Source::New)).collect())
    }

    fn start<P>(&mut self, entry: DeliveredEntry, source: Source)
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let id = entry.id;
        if !shared.hold(id) {
            // Reclaimed from ourselves (its lease lapsed while renewals
            // failed): the attempt already running settles it.
            tracing::debug!(%id, "already running; not starting a second attempt");
            return;
        }
        self.inflight.spawn(async move {
            let outcome = shared.attempt::<P>(entry, source).await;
            shared.release(id);
            outcome
        });
    }

    /// Renews the leases of the entries being worked on.
    async fn renew(&self) {
        let held = self.shared.held_ids();
        if held.is_empty() {
            return;
        }
        let keys = &self.shared.keys;
        match self
            .shared
            .broker
            .renew(&keys.tasks, &keys.group, &self.shared.consumer, &held)
            .await
        {
            Ok(renewed) if renewed.len() < held.len() => {
                tracing::warn!(
                    lost = held.len() - renewed.len(),
                    "some running tasks were taken over by another consumer"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "renewing leases failed"),
        }
    }

    /// Waits out a failed read: back-off for transient errors, the group
    /// made again if it vanished; anything else ends the worker.
    async fn wait_out(&mut self, err: Error) -> Result<()> {
        self.failures = self.failures.saturating_add(1);
        let wait = self.shared.backoff_wait(self.failures);
        if matches!(err, Error::NoGroup { .. }) {
            tracing::warn!("the consumer group is missing; creating it");
            ensure_group(&self.shared).await?;
        } else if !err.is_transient() {
            return Err(err);
        }
        tracing::warn!(error = %err, ?wait, "broker read failed; waiting");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn tally(&mut self, done: std::result::Result<Outcome, JoinError>) {
        let report = &mut self.report;
        match done {
            Ok(Outcome::Completed) => report.completed += 1,
            Ok(Outcome::Retried) => report.retried += 1,
            Ok(Outcome::DeadLettered) => report.dead_lettered += 1,
            Ok(Outcome::Zombie) => report.zombies += 1,
            Ok(Outcome::Vanished) => report.vanished += 1,
            Ok(Outcome::Unsettled) => report.unsettled += 1,
            Err(err) => {
                // Handler panics are caught inside the attempt; this is a bug.
                tracing::error!(error = %err, "an attempt ended abnormally");
                report.unsettled += 1;
            }
        }
    }

    /// After the stop: no more reads; running attempts get `grace` to end.
    async fn finish(mut self, grace: Duration) -> WorkerReport {
        let deadline = Instant::now() + grace;
        loop {
            tokio::select! {
                biased;
                done = self.inflight.join_next() => match done {
                    Some(done) => self.tally(done),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => {
                    self.report.handed_back = self.inflight.len() as u64;
                    tracing::warn!(n = self.inflight.len(), "grace period over; handing running tasks back");
                    self.inflight.abort_all();
                    while self.inflight.join_next().await.is_some() {}
                    break;
                }
            }
        }
        self.report
    }
}

/// Creates the group at the stream's start (and the stream) unless it
/// exists.
pub(crate) async fn ensure_group<B: Broker, H>(shared: &Shared<B, H>) -> Result<()> {
    let keys = &shared.keys;
    match shared
        .broker
        .group_create(&keys.tasks, &keys.group, GroupStart::BEGINNING, true)
        .await
    {
        Ok(()) | Err(Error::GroupExists { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

impl<B, H> Shared<B, H> {
    /// Marks `id` as being worked on; false if it already was.
    fn hold(&self, id: StreamId) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    fn release(&self, id: StreamId) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn held_ids(&self) -> Vec<StreamId> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }
}
