//! How the worker's loop ends: finished attempts tallied, and running ones
//! given their grace (leases still renewed, outcomes still settled) before
//! they are handed back.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinError;
use tokio::time::Instant;

use super::WorkerReport;
use super::attempt::Outcome;
use super::run::Loop;

impl<B, H> Loop<B, H> {
    pub(super) fn tally(&mut self, done: std::result::Result<Outcome, JoinError>) {
        let report = &mut self.report;
        match done {
            Ok(Outcome::Completed) => report.completed += 1,
            Ok(Outcome::Retried) => report.retried += 1,
            Ok(Outcome::DeadLettered) => report.dead_lettered += 1,
            Ok(Outcome::Zombie) => report.zombies += 1,
            Ok(Outcome::Vanished) => report.vanished += 1,
            Ok(Outcome::Unsettled) => report.unsettled += 1,
            Ok(Outcome::Cancelled) => report.cancelled += 1,
            Ok(Outcome::SlowedDown) => report.slowed_down += 1,
            Err(err) => {
                // Panics are caught inside the attempt; this is a bug.
                tracing::error!(error = %err, "an attempt ended abnormally");
                report.unsettled += 1;
            }
        }
    }

    /// After the stop: no more reads; running attempts have until `deadline`
    /// to end (renewals and settles go on meanwhile), cut short by a
    /// shorter grace sent on `graces` meanwhile.
    pub(super) async fn finish(
        mut self,
        mut deadline: Instant,
        mut graces: watch::Receiver<Option<Duration>>,
    ) -> WorkerReport {
        // The grace already known counts as seen; only later ones cut.
        graces.mark_unchanged();
        let mut watching = true;
        loop {
            tokio::select! {
                biased;
                done = self.inflight.join_next() => match done {
                    Some(done) => self.tally(done),
                    None => break,
                },
                changed = graces.changed(), if watching => match changed {
                    Ok(()) => {
                        if let Some(grace) = *graces.borrow_and_update() {
                            deadline = deadline.min(Instant::now() + grace);
                        }
                    }
                    // The worker is gone: nothing more will come.
                    Err(_) => watching = false,
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
