//! Fault classes of a plan around a worker's lifecycle and the broker's
//! availability: graceful stops with a grace longer than the lease while
//! long tasks run ([`GracefulStop`]), and outages in which every call of
//! every actor fails for longer than a settle's retries ([`Outage`]).

use rand::Rng;
use serde::Serialize;

use super::{FaultPlan, FaultRates, PlanShape};
use crate::seed::SimRng;

/// A worker asked to stop (`WorkerHandle::shutdown`) with a grace longer
/// than the lease, while tasks it started just before run long; restarted
/// under its name after the grace and `down_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GracefulStop {
    /// The worker slot.
    pub worker: u32,
    /// When the stop is asked for, in ms of virtual time from the start.
    pub at_ms: u64,
    /// The grace its running tasks get: longer than the lease.
    pub grace_ms: u64,
    /// Handler calls it starts in the quarter lease before the stop take
    /// this much longer: past the lease, so only renewals through the
    /// grace keep peers off them.
    pub long_ms: u64,
    /// How long after the grace it comes back.
    pub down_ms: u64,
}

/// The broker unreachable for everyone: every call of every actor fails
/// before it applies, for longer than the retries of a settle that gives
/// up (a Redis restart, a network partition of the whole crew).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// When it begins, in ms of virtual time from the start.
    pub at_ms: u64,
    /// How long it lasts.
    pub for_ms: u64,
}

impl GracefulStop {
    /// Whether a handler call of worker slot `worker` starting at `at_ms`
    /// runs long because of this stop.
    pub(crate) fn lengthens(&self, worker: u32, at_ms: u64) -> bool {
        let from = self.at_ms.saturating_sub(self.long_ms / 6);
        worker == self.worker && from <= at_ms && at_ms < self.at_ms
    }
}

/// Draws the plan's stops and outages (after every other class, so the
/// other draws of a seed stay where they were).
pub(super) fn draw(plan: &mut FaultPlan, rates: &FaultRates, shape: &PlanShape, rng: &mut SimRng) {
    let window = shape.fault_window_ms.max(2);
    let lease = shape.lease_ms.max(4);
    let workers = shape.workers.max(1);
    plan.stops = (0..rates.stops)
        .map(|_| GracefulStop {
            worker: rng.random_range(0..workers),
            // Late enough that the worker has work to be stopped in.
            at_ms: rng.random_range(window / 4..window),
            grace_ms: rng.random_range(lease * 5 / 4..=lease * 3),
            // Below the task time-out (twice the lease) with the handler's
            // own work added.
            long_ms: rng.random_range(lease * 3 / 2..=lease * 7 / 4),
            down_ms: rng.random_range(0..=lease),
        })
        .collect();
    plan.outages = (0..rates.outages)
        .map(|_| Outage {
            at_ms: rng.random_range(0..window),
            for_ms: rng.random_range(lease / 2..=lease * 3 / 2),
        })
        .collect();
}

/// Swarm intensities: each class on or off, up to twice
/// [`FaultRates::STANDARD`].
pub(super) fn swarm(rates: &mut FaultRates, rng: &mut SimRng) {
    let (stops, outages) = (rng.random_bool(0.5), rng.random_bool(0.5));
    rates.stops = if stops { rng.random_range(1..=2) } else { 0 };
    rates.outages = if outages { rng.random_range(1..=2) } else { 0 };
}
