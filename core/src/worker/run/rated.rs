//! Starting entries under a shared rate limit (`worker/rate.rs`): read
//! entries wait, held, until the broker grants them permits.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use serde::de::DeserializeOwned;

use crate::{Broker, DeliveredEntry, Result};

use super::super::Handler;
use super::super::attempt::Source;
use super::super::mutant::Mutant;
use super::super::rate::RATE_POLL;
use super::{Loop, Waiting};

impl<B, H> Loop<B, H>
where
    B: Broker + Clone + 'static,
    H: Send + Sync + 'static,
{
    /// Holds `entry` (its lease renewed from now on) until a permit lets it
    /// start.
    pub(super) fn wait_for_permit(
        &mut self,
        entry: DeliveredEntry,
        source: Source,
        leased_at: Instant,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let Some(cancel) = self.shared.hold(entry.id, leased_at) else {
            tracing::debug!(id = %entry.id, "already running; not starting a second attempt");
            return;
        };
        self.waiting.push_back(Waiting {
            entry,
            source,
            cancel,
            slot,
        });
    }

    /// Asks for permits for the waiting entries there are slots for and
    /// starts as many as were granted, in read order; then, with some left
    /// waiting, waits until asking again can help ([`Loop::wait_for_room`]).
    pub(super) async fn start_waiting<P>(&mut self) -> Result<()>
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        match self.grant_waiting::<P>().await? {
            Some(wait) => self.wait_for_room(wait).await,
            None => Ok(()),
        }
    }

    /// [`Loop::start_waiting`] without its wait: returns how long to wait
    /// before asking again, `None` when nothing waits (or an error was
    /// waited out already).
    pub(super) async fn grant_waiting<P>(&mut self) -> Result<Option<Duration>>
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        // An entry lost to another consumer while it waited: not ours to run.
        let (lost, kept): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.cancel.is_cancelled());
        self.waiting = kept.into();
        for waiting in lost {
            tracing::debug!(id = %waiting.entry.id, "taken over while waiting for a rate permit");
            self.shared.release(waiting.entry.id);
        }
        let Some(gate) = self.shared.rate.clone() else {
            return Ok(None);
        };
        // Each waiting entry holds its slot already.
        let want = self.waiting.len();
        if want == 0 {
            if let Some(done) = self.inflight.join_next().await {
                self.tally(done);
            }
            return Ok(None);
        }
        // Our own ended runs' room first: it may be what we wait for.
        gate.release_ended(&self.shared.broker).await;
        let (permits, grant) = match gate.acquire(&self.shared.broker, want).await {
            Ok(granted) => granted,
            Err(err) => return self.wait_out(err).await.map(|()| None),
        };
        let starting = if self.shared.options.is_mutant(Mutant::IgnoreRateLimit) {
            want
        } else {
            permits.len()
        };
        let mut permits = permits.into_iter();
        for _ in 0..starting {
            let Some(waiting) = self.waiting.pop_front() else {
                break;
            };
            self.launch::<P>(
                waiting.entry,
                waiting.source,
                waiting.cancel,
                permits.next(),
                waiting.slot,
            );
        }
        // Granted for entries that left meanwhile: their starts go back.
        gate.give_back(&self.shared.broker, permits.collect()).await;
        if self.waiting.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            grant
                .retry_in
                .unwrap_or(RATE_POLL)
                .max(Duration::from_millis(1)),
        ))
    }

    /// Waits, with entries waiting for permits, until asking again can
    /// help: `wait` (the window's next free time or the pause's end as the
    /// broker told it, or [`RATE_POLL`] for room held by peers), or an own
    /// attempt ending.
    pub(super) async fn wait_for_room(&mut self, wait: Duration) -> Result<()> {
        tracing::debug!(
            waiting = self.waiting.len(),
            ?wait,
            "waiting for rate permits"
        );
        tokio::select! {
            biased;
            Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => self.tally(done),
            () = tokio::time::sleep(wait) => {}
        }
        Ok(())
    }

    /// At a stop: entries still waiting for permits were never started;
    /// they stay pending (no longer renewed) for a successor or a peer.
    pub(super) fn hand_back_waiting(&mut self) {
        for waiting in std::mem::take(&mut self.waiting) {
            self.shared.release(waiting.entry.id);
        }
    }
}
