//! Forgetting workflows: by hand ([`Supervisor::forget`]) or when nobody
//! gathered them for [`SupervisorOptions::workflow_expiry`](super::SupervisorOptions::workflow_expiry),
//! so that fanning out without gathering does not grow memory for good.

use std::time::Duration;

use tokio::time::Instant;

use super::registry;
use super::{Inner, Supervisor, SupervisorError};
use crate::Broker;

impl<B: Broker> Supervisor<B> {
    /// Forgets workflow `trace_id`: its tasks' results are no longer
    /// awaited, and those already read for it are acknowledged. Results of
    /// its tasks read later are acknowledged as nobody's. Returns whether
    /// it was registered.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::AlreadyGathering`] while a gather of it runs
    /// (stop the gather first).
    pub async fn forget(&self, trace_id: &str) -> Result<bool, SupervisorError> {
        let (known, inbox) = registry::lock(&self.inner.registry).forget(trace_id)?;
        if !inbox.is_empty() {
            tracing::info!(
                trace_id,
                results = inbox.len(),
                "forgot a workflow; acknowledging the results read for it"
            );
            self.inner.ack_all(&inbox).await;
        }
        Ok(known)
    }

    /// How many workflows it holds: fanned out or being gathered, and
    /// neither finished, forgotten nor expired.
    pub fn workflows(&self) -> usize {
        registry::lock(&self.inner.registry).workflows()
    }

    /// How many distinct results it read and could not decode with its
    /// codec, left pending and unacknowledged.
    pub fn undecodable_results(&self) -> usize {
        registry::lock(&self.inner.registry).undecodable_count()
    }
}

impl<B: Broker> Inner<B> {
    /// Forgets the workflows nobody gathered within the expiry. The results
    /// they had read become unclaimed, acknowledged after the unclaimed
    /// grace unless a workflow claims them first.
    pub(super) async fn expire_workflows(&self) {
        let now = Instant::now();
        let Some(cutoff) = now.checked_sub(self.options.workflow_expiry) else {
            return;
        };
        // A look walks every workflow, so it happens at most once per
        // `every` (a quarter of the expiry, a second at most): an expiry
        // comes that much late at most.
        let every = (self.options.workflow_expiry / 4).min(Duration::from_secs(1));
        let expired = registry::lock(&self.registry).expire_workflows(cutoff, now, every);
        if !expired.is_empty() {
            tracing::info!(
                workflows = expired.len(),
                first = %expired[0],
                "forgot workflows nobody gathered within the expiry"
            );
        }
    }
}
