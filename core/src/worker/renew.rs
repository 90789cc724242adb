//! Lease renewal, in a task of its own.
//!
//! Renewals run beside the read loop, not in it: a read that hangs, a
//! broker that is slow, a shutdown grace longer than the lease, or (on a
//! multi-thread runtime) a handler that blocks its thread must not let the
//! leases of running tasks lapse, or peers take those tasks over and run
//! them a second time.

use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::metrics::{DELETED_WHILE_PENDING, count};
use crate::{Broker, IdRange, PendingQuery, Result, StreamId};

use super::attempt::Shared;
use super::context::WorkerLink;
use super::progress::Report;

/// Renews the leases of the held entries every `renew_every`, until dropped.
pub(crate) async fn renew_forever<B: Broker, H>(shared: Arc<Shared<B, H>>) {
    loop {
        tokio::time::sleep(shared.options.renew_every).await;
        renew(&shared).await;
    }
}

/// Renews the leases of the entries being worked on once.
///
/// An id the renewal did not return was taken over (or acknowledged) by
/// another consumer, or deleted from the stream while still pending for
/// this one (a renewal leaves such an entry pending, unrenewed). The first
/// ends the attempt as a zombie when it settles. The second is logged,
/// counted and remembered; the attempt still settles its outcome under the
/// ownership guard. Being gone from the stream alone proves nothing: an
/// entry a peer took over and completed is trimmed by retention too, and a
/// zombie must not dead-letter it beside the peer's success (found by the
/// simulator with safe retention on, seed 49).
pub(crate) async fn renew<B: Broker, H>(shared: &Shared<B, H>) {
    let held = shared.held_ids();
    if held.is_empty() {
        return;
    }
    let keys = &shared.keys;
    let renewed = match shared
        .broker
        .renew(&keys.tasks, &keys.group, &shared.consumer, &held)
        .await
    {
        Ok(renewed) => renewed,
        Err(err) => {
            if matches!(err, crate::Error::NoGroup { .. }) {
                shared.saw_group_gone();
            }
            tracing::warn!(error = %err, "renewing leases failed");
            return;
        }
    };
    shared.renewed(&renewed);
    if renewed.len() >= held.len() {
        return;
    }
    let mut lost = 0usize;
    for id in held.into_iter().filter(|id| !renewed.contains(id)) {
        match deleted_but_mine(shared, id).await {
            Some(true) => {
                let first = shared
                    .deleted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id);
                if first {
                    tracing::error!(%id, stream = %keys.tasks, "a running task's entry was deleted from the stream while pending (trimmed or XDEL'd); its outcome is still recorded");
                    count(DELETED_WHILE_PENDING, &shared.agent_type, 1);
                }
            }
            Some(false) => {
                // Not pending for us: another consumer took it over (or a
                // reclaim dead-lettered it, found deleted). Its outcome will
                // not be recorded: its handler may stop (worker::Context).
                shared.cancel_lost(id);
                lost += 1;
            }
            None => lost += 1,
        }
    }
    if lost > 0 {
        tracing::warn!(
            lost,
            "some running tasks were taken over by another consumer"
        );
    }
}

/// A handler's own renewal of its entry ([`Context::extend_lease`]).
///
/// [`Context::extend_lease`]: super::Context::extend_lease
#[async_trait]
impl<B: Broker, H: Send + Sync + 'static> WorkerLink for Shared<B, H> {
    async fn extend(&self, id: StreamId, cancel: &CancellationToken) -> Result<bool> {
        let keys = &self.keys;
        let renewed = match self
            .broker
            .renew(&keys.tasks, &keys.group, &self.consumer, &[id])
            .await
        {
            Ok(renewed) => renewed,
            Err(err) => {
                if matches!(err, crate::Error::NoGroup { .. }) {
                    self.saw_group_gone();
                }
                return Err(err);
            }
        };
        if renewed.contains(&id) {
            self.renewed(&renewed);
            return Ok(true);
        }
        // Not pending for us: another consumer's, unless it was deleted
        // from the stream (then the attempt dead-letters it on settling).
        if self.gone_from_stream(id).await == Some(false) {
            cancel.cancel();
        }
        Ok(false)
    }

    async fn report(&self, report: Report<'_>) -> Result<()> {
        self.append_progress(report).await
    }
}

impl<B: Broker, H> Shared<B, H> {
    /// Whether entry `id`, found deleted by an earlier renewal, is still
    /// gone from the task stream; `true` when the broker cannot tell now.
    ///
    /// A broker rolled back to before the deletion (an AOF restart, a
    /// failover to a lagging replica) has the entry again, pending or
    /// delivered to someone else: it is then no `deleted_while_pending`
    /// dead letter but an ordinary entry taken over. When unsure, the dead
    /// letter is written: a letter too many is seen, a task never recorded
    /// is lost.
    pub(crate) async fn still_gone(&self, id: StreamId) -> bool {
        self.gone_from_stream(id).await.unwrap_or(true)
    }

    /// Whether entry `id` is missing from the task stream, asked until the
    /// broker answers (with the back-off capped at `RETRY_CAP`).
    pub(crate) async fn gone_for_sure(&self, id: StreamId) -> bool {
        let mut tries = 0u32;
        loop {
            if let Some(gone) = self.gone_from_stream(id).await {
                return gone;
            }
            tries = tries.saturating_add(1);
            let wait = self.backoff_wait(tries).min(super::record::RETRY_CAP);
            tracing::warn!(%id, ?wait, "cannot tell whether an entry is still in the stream; asking again");
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether entry `id` is missing from the task stream; `None` if the
    /// broker cannot tell now.
    async fn gone_from_stream(&self, id: StreamId) -> Option<bool> {
        let entries = self
            .broker
            .xrange(&self.keys.tasks, only(id), Some(1))
            .await
            .ok()?;
        Some(entries.is_empty())
    }
}

/// The id range holding `id` alone.
fn only(id: StreamId) -> IdRange {
    (std::ops::Bound::Included(id), std::ops::Bound::Included(id))
}

/// Whether entry `id` is gone from the task stream while still pending for
/// this consumer; `None` if the broker cannot tell now.
async fn deleted_but_mine<B: Broker, H>(shared: &Shared<B, H>, id: StreamId) -> Option<bool> {
    if !shared.gone_from_stream(id).await? {
        return Some(false);
    }
    let keys = &shared.keys;
    let query = PendingQuery::new(1)
        .range(only(id))
        .consumer(shared.consumer.clone());
    let mine = shared
        .broker
        .pending(&keys.tasks, &keys.group, &query)
        .await
        .ok()?;
    Some(!mine.is_empty())
}
