//! Broker rollbacks (issue 9, a state-level fault class): the broker
//! restored to its state of some milliseconds earlier, as a Redis restarted
//! from an AOF written with `appendfsync everysec`, or a failover to an
//! asynchronous replica that lagged, loses the writes it acknowledged last.

use rand::Rng;
use serde::Serialize;

use super::{FaultPlan, FaultRates, PlanShape};
use crate::seed::SimRng;

/// The longest rollback drawn: `appendfsync everysec` loses about a
/// second of writes (Redis's persistence docs), or two when a slow fsync
/// delays the next one.
pub const MAX_ROLLBACK_LAG_MS: u64 = 2_000;

/// The earliest snapshot a rollback restores: the workers have usually
/// created their groups by then. A rollback never restores a broker
/// without a worker group (a group destroyed mid-run is a fault class of
/// its own): when one is still missing at the snapshot's time (its only
/// worker crashed at the start), the rollback does not fire.
pub(crate) const EARLIEST_SNAPSHOT_MS: u64 = 100;

/// The broker rolled back: at `at_ms` it is restored to its state at
/// `at_ms - lag_ms`; every write applied in between is forgotten. Only the
/// memory backend can be rolled back; on Redis the rollback does not fire,
/// nor where a worker group did not exist yet at the snapshot's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rollback {
    /// When, in ms of virtual time from the start.
    pub at_ms: u64,
    /// How much is lost, in ms: the snapshot is taken this long before.
    pub lag_ms: u64,
}

impl Rollback {
    /// When its snapshot is taken, in ms from the start.
    pub fn snapshot_ms(&self) -> u64 {
        self.at_ms.saturating_sub(self.lag_ms)
    }
}

/// Draws the plan's rollbacks (after everything else, so the other draws
/// of a seed stay where they were): one with chance `rates.rollback`, in
/// the fault window, losing up to [`MAX_ROLLBACK_LAG_MS`] (and never more
/// than the window allows).
pub(super) fn draw(plan: &mut FaultPlan, rates: &FaultRates, shape: &PlanShape, rng: &mut SimRng) {
    if !rng.random_bool(rates.rollback.clamp(0.0, 1.0)) {
        return;
    }
    let window = shape.fault_window_ms;
    if window <= EARLIEST_SNAPSHOT_MS + 1 {
        return;
    }
    let at_ms = rng.random_range(EARLIEST_SNAPSHOT_MS + 1..window);
    let longest = (at_ms - EARLIEST_SNAPSHOT_MS).min(MAX_ROLLBACK_LAG_MS);
    let lag_ms = rng.random_range(1..=longest);
    plan.rollbacks.push(Rollback { at_ms, lag_ms });
}
