//! Reclaiming: taking over entries whose lease lapsed, and recording the
//! ones found deleted from the stream (issue 9).

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use crate::metrics::{RECLAIMED, count};
use crate::{AutoClaim, AutoClaimedRecorded, Broker, DeliveredEntry, Result, StreamId};

use super::super::attempt::Source;
use super::super::mutant::Mutant;
use super::Loop;

impl<B, H> Loop<B, H>
where
    B: Broker + Clone + 'static,
    H: Send + Sync + 'static,
{
    /// Takes over peers' entries idle past the lease, from the scan's
    /// cursor; pending entries found deleted from the stream are
    /// dead-lettered in the same step.
    pub(super) async fn reclaim(&mut self, limit: usize) -> Result<Vec<(DeliveredEntry, Source)>> {
        let shared = &self.shared;
        let claim = AutoClaim::new(&shared.keys.tasks, &shared.keys.group, &shared.consumer)
            .min_idle(shared.options.lease)
            .start(self.reclaim_cursor)
            .count(limit);
        let (claimed, records) = if shared.options.is_mutant(Mutant::IgnoreDeleted) {
            // The old behaviour: a plain XAUTOCLAIM, whose deleted ids the
            // broker drops from the pending list and nothing records.
            let claimed = shared
                .broker
                .autoclaim(
                    &claim.stream,
                    &claim.group,
                    &claim.consumer,
                    claim.min_idle,
                    claim.start,
                    claim.count,
                )
                .await?;
            (claimed, Vec::new())
        } else {
            // Pending entries deleted from the stream leave the pending
            // list in this call: their dead letters are written in the same
            // atomic step, so neither a crash nor a lost reply after it can
            // make them vanish silently.
            let AutoClaimedRecorded { claim, records } = shared
                .broker
                .autoclaim_recorded(&claim, &shared.deleted_record())
                .await?;
            let records = claim.deleted.iter().copied().zip(records).collect();
            (claim, records)
        };
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
        for (id, record) in records {
            // Our own running attempt (its lease lapsed: a deleted entry
            // cannot be renewed) learns its entry is gone: its settle will
            // find it no longer pending.
            let held = shared.mark_deleted_if_held(id);
            match record {
                // The attempt counts it when its settle finds it gone.
                Ok(_) if held => {}
                Ok(_) => {
                    shared.found_deleted(id);
                    self.report.vanished += 1;
                }
                Err(err) => {
                    // The claim applied, its record did not: write it apart,
                    // retried until it is (once, under the same marker).
                    tracing::warn!(%id, error = %err, "a reclaim could not record a deleted entry; writing its dead letter apart");
                    let shared = Arc::clone(&self.shared);
                    self.inflight.spawn(async move {
                        shared.deleted_while_pending(id, Bytes::new(), false).await
                    });
                }
            }
        }
        Ok(claimed
            .claimed
            .into_iter()
            .map(|e| (e.into(), Source::Reclaimed))
            .collect())
    }
}
