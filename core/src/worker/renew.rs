//! Lease renewal, in a task of its own.
//!
//! Renewals run beside the read loop, not in it: a read that hangs, a
//! broker that is slow, a shutdown grace longer than the lease, or (on a
//! multi-thread runtime) a handler that blocks its thread must not let the
//! leases of running tasks lapse, or peers take those tasks over and run
//! them a second time.

use std::sync::{Arc, PoisonError};

use crate::{Broker, IdRange, StreamId};

use super::attempt::Shared;
use super::mutant::Mutant;

/// Renews the leases of the held entries every `renew_every`, until dropped.
pub(crate) async fn renew_forever<B: Broker, H>(shared: Arc<Shared<B, H>>) {
    loop {
        tokio::time::sleep(shared.options.renew_every).await;
        renew(&shared).await;
    }
}

/// Renews the leases of the entries being worked on once.
///
/// An id the renewal did not return was taken over by another consumer or
/// deleted from the stream. The first ends the attempt as a zombie when it
/// settles; the second is remembered, so the attempt dead-letters the entry
/// as `deleted_while_pending` instead of discarding its outcome.
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
            tracing::warn!(error = %err, "renewing leases failed");
            return;
        }
    };
    if renewed.len() >= held.len() {
        return;
    }
    let mut lost = 0usize;
    for id in held.into_iter().filter(|id| !renewed.contains(id)) {
        match exists(shared, id).await {
            Some(false) if !shared.options.is_mutant(Mutant::IgnoreDeleted) => {
                shared
                    .deleted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id);
            }
            _ => lost += 1,
        }
    }
    if lost > 0 {
        tracing::warn!(
            lost,
            "some running tasks were taken over by another consumer"
        );
    }
}

/// Whether entry `id` is still in the task stream; `None` if the broker
/// cannot tell now.
async fn exists<B: Broker, H>(shared: &Shared<B, H>, id: StreamId) -> Option<bool> {
    let range: IdRange = (std::ops::Bound::Included(id), std::ops::Bound::Included(id));
    match shared
        .broker
        .xrange(&shared.keys.tasks, range, Some(1))
        .await
    {
        Ok(entries) => Some(!entries.is_empty()),
        Err(_) => None,
    }
}
