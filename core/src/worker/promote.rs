//! Promotion of due delayed entries into the task stream, in a task of its
//! own beside the read loop.
//!
//! A failed attempt settles its retry into the agent type's delayed set
//! (see `attempt.rs`) and frees its slot at once. Every worker of the agent
//! type promotes what is due, every [`WorkerOptions::promote_every`]
//! (`options.rs`), and sooner when it scheduled something due sooner, or
//! when the broker says the next member is due sooner. The broker's clock
//! decides what is due and each member moves once whoever promotes it
//! ([`Broker::promote`]), so a worker that crashes after scheduling loses
//! nothing: any other worker, or itself once restarted, promotes it.
//!
//! [`WorkerOptions::promote_every`]: super::WorkerOptions::promote_every

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Broker;
use crate::metrics::{PROMOTED, count};

use super::attempt::Shared;

/// Members moved per [`Broker::promote`] call: one script on Redis holds
/// the server while it runs, so a large backlog goes in several calls.
pub(crate) const PROMOTE_BATCH: usize = 256;

/// The shortest wait between promotions, so a broker that keeps saying
/// "due now" cannot make a hot loop.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Asks the promoter to look sooner than its next turn.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    soonest: Mutex<Option<Instant>>,
    notify: Notify,
}

impl Wake {
    /// Has the promoter look at `at` at the latest (a retry is due then).
    pub(crate) fn at(&self, at: Instant) {
        let mut soonest = self.soonest.lock().unwrap_or_else(PoisonError::into_inner);
        if soonest.is_none_or(|s| at < s) {
            *soonest = Some(at);
        }
        drop(soonest);
        // A permit is kept if the promoter is not waiting now.
        self.notify.notify_one();
    }

    fn take(&self) -> Option<Instant> {
        self.soonest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Promotes due members of the worker's delayed set, at once on start
/// (a restart after a crash of every worker should not wait), then as
/// described in the module docs, until dropped.
pub(crate) async fn promote_forever<B: Broker, H>(shared: Arc<Shared<B, H>>) {
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = shared.wake.notify.notified() => {
                if let Some(at) = shared.wake.take() {
                    next = next.min(at);
                }
                continue;
            }
            () = tokio::time::sleep_until(next) => {}
        }
        next = Instant::now() + promote_due(&shared).await;
    }
}

/// Moves what is due now, batch after batch; returns how long to wait
/// before looking again.
async fn promote_due<B: Broker, H>(shared: &Shared<B, H>) -> Duration {
    let every = shared.options.promote_every;
    let keys = &shared.keys;
    loop {
        let promoted = shared
            .broker
            .promote(&keys.delayed, &keys.tasks, PROMOTE_BATCH)
            .await;
        match promoted {
            Ok(promoted) => {
                let n = promoted.entries.len();
                if n > 0 {
                    count(PROMOTED, &shared.agent_type, n as u64);
                    tracing::debug!(n, "promoted due delayed entries");
                }
                if n >= PROMOTE_BATCH {
                    continue;
                }
                let next = promoted.next_due_in.map_or(every, |due| due.min(every));
                return next.max(MIN_WAIT);
            }
            Err(err) => {
                tracing::warn!(error = %err, "promoting delayed entries failed; trying again later");
                return every;
            }
        }
    }
}
