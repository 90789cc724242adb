//! The worker's side of a shared rate limit ([`crate::ratelimit`]): a
//! permit from the broker before each attempt starts, renewed with the
//! entry's lease and released when the attempt ends, however it ends.
//!
//! The worker reads first and asks for permits second: entries it read
//! wait in its hands (held, their leases renewed) until the broker grants
//! them permits, and it reads no more while any wait. Asking first would
//! put the read between grant and start: a blocking read of up to
//! [`WorkerOptions::block`](super::WorkerOptions::block) would let starts
//! bunch up after their grants, and permits asked for by idle workers would
//! sit unused in the window. Read first, each start follows its grant by
//! no broker call at all, and a worker holds at most its free slots'
//! worth of entries while it waits.
//!
//! Permits are released from a task of their own (a finished attempt's
//! guard queues it and wakes that task), so a peer waiting for running room
//! gets it within a round trip, whatever this worker's loop is doing.
//!
//! Two costs, both bounded by the lease: permits granted to a worker that
//! stops (or crashes) between the grant and the starts are never released,
//! and hold their running room until their lease ends (their starts stay in
//! the window); and entries still waiting for permits at a stop are left
//! pending, each delivered again later, which counts towards
//! [`WorkerOptions::max_deliveries`](super::WorkerOptions::max_deliveries)
//! as any hand-back does.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Broker, RateAcquire, RateGrant, RateKeys, RateLimit, Result};

use super::attempt::Shared;

/// How often a worker whose entries wait for running room held by others
/// asks again: the broker cannot say when a peer's run ends.
pub(crate) const RATE_POLL: Duration = Duration::from_millis(100);

/// One worker's link to its agent type's shared rate limit.
#[derive(Debug)]
pub(crate) struct RateGate {
    pub keys: RateKeys,
    pub limit: RateLimit,
    lease: Duration,
    /// Permits are `<consumer>/<n>`: unique across the agent type's workers
    /// (consumer names are), and across this consumer's restarts (`n`
    /// starts at a random value).
    prefix: String,
    next: AtomicU64,
    /// Permits of running attempts, renewed with their leases.
    held: Mutex<BTreeSet<String>>,
    /// Permits of ended attempts not yet released.
    ended: Mutex<Vec<String>>,
    wake: Notify,
}

impl RateGate {
    pub(crate) fn new(
        keys: RateKeys,
        limit: RateLimit,
        lease: Duration,
        consumer: &str,
        first: u64,
    ) -> Self {
        RateGate {
            keys,
            limit,
            lease,
            prefix: format!("{consumer}/"),
            next: AtomicU64::new(first),
            held: Mutex::default(),
            ended: Mutex::default(),
            wake: Notify::new(),
        }
    }

    /// Asks the broker for `want` permits; the granted ones are held.
    pub(crate) async fn acquire<B: Broker>(
        &self,
        broker: &B,
        want: usize,
    ) -> Result<(Vec<String>, RateGrant)> {
        let first = self.next.fetch_add(want as u64, Ordering::Relaxed);
        let permits: Vec<String> = (0..want as u64)
            .map(|i| format!("{}{:x}", self.prefix, first.wrapping_add(i)))
            .collect();
        let grant = broker
            .rate_acquire(RateAcquire {
                keys: self.keys.clone(),
                limit: self.limit,
                permits: permits.clone(),
                lease: self.lease,
            })
            .await?;
        let mut granted = permits;
        granted.truncate(grant.granted);
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(granted.iter().cloned());
        Ok((granted, grant))
    }

    /// An attempt holding `permit` ended: released soon, by `release_forever`.
    pub(crate) fn ended(&self, permit: String) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&permit);
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(permit);
        self.wake.notify_one();
    }

    /// Releases the permits of ended attempts; on a broker error they are
    /// kept for the next try (and expire with their lease meanwhile).
    pub(crate) async fn release_ended<B: Broker>(&self, broker: &B) {
        let ended = std::mem::take(&mut *self.ended.lock().unwrap_or_else(PoisonError::into_inner));
        if ended.is_empty() {
            return;
        }
        if let Err(err) = broker.rate_release(&self.keys, &ended, &[]).await {
            tracing::warn!(error = %err, n = ended.len(), "releasing rate permits failed; retrying");
            self.ended
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(ended);
        }
    }

    /// Gives back permits granted but never used: their starts leave the
    /// window too. Best effort: on an error they expire with their lease,
    /// and their starts with the window.
    pub(crate) async fn give_back<B: Broker>(&self, broker: &B, unused: Vec<String>) {
        if unused.is_empty() {
            return;
        }
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            for permit in &unused {
                held.remove(permit);
            }
        }
        if let Err(err) = broker.rate_release(&self.keys, &[], &unused).await {
            tracing::warn!(error = %err, n = unused.len(), "giving back unused rate permits failed; they expire with their lease");
        }
    }

    /// Extends the held permits' leases; those the broker no longer has
    /// (expired while renewals failed: a peer may have their room now) are
    /// dropped and logged, and their runs go on outside the limit.
    async fn renew<B: Broker>(&self, broker: &B) {
        let held: Vec<String> = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        if held.is_empty() {
            return;
        }
        match broker.rate_renew(&self.keys, &held, self.lease).await {
            Ok(renewed) if renewed.len() < held.len() => {
                let renewed: BTreeSet<&String> = renewed.iter().collect();
                let mut mine = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                // Not renewed and still running (an ended one was released
                // meanwhile, which is why it was not renewed).
                let lapsed = held
                    .iter()
                    .filter(|p| !renewed.contains(p) && mine.remove(*p))
                    .count();
                if lapsed > 0 {
                    tracing::warn!(
                        lapsed,
                        "rate permits expired before their runs ended; those runs go on outside the limit"
                    );
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "renewing rate permits failed"),
        }
    }
}

/// Releases ended attempts' permits as they end and renews running ones
/// every `renew_every`, until dropped with the worker's background tasks.
pub(crate) async fn release_forever<B: Broker, H>(shared: Arc<Shared<B, H>>) {
    let Some(gate) = shared.rate.as_deref() else {
        return;
    };
    let every = shared.options.renew_every;
    let mut next_renewal = Instant::now() + every;
    loop {
        tokio::select! {
            biased;
            () = gate.wake.notified() => {}
            () = tokio::time::sleep_until(next_renewal) => {
                gate.renew(&shared.broker).await;
                next_renewal = Instant::now() + every;
            }
        }
        gate.release_ended(&shared.broker).await;
    }
}

/// Queues its permit's release when the attempt holding it ends, however
/// it ends (a panic, a time-out, an abort at the grace's end). Empty (no
/// clone, nothing to do) for a worker without a rate limit.
pub(crate) struct Permit(pub Option<(Arc<RateGate>, String)>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((gate, permit)) = self.0.take() {
            gate.ended(permit);
        }
    }
}
