//! Broker-level fault classes of a plan: failover refusals, refused settle
//! items (rates in [`BrokerFaults`](super::BrokerFaults)), and half-open
//! links on one worker's connection ([`HalfOpenLink`]).

use rand::Rng;
use serde::Serialize;

use super::{FaultPlan, FaultRates, PlanShape};
use crate::Flows;
use crate::seed::SimRng;

/// One worker's link gone silent for a while on some of its connections:
/// calls on a silent connection hang until the time-out, then fail (applied
/// or not), until the worker's client replaces the connection (see
/// [`HalfOpen`](crate::HalfOpen)); the other actors are unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HalfOpenLink {
    /// The worker slot whose connection hangs.
    pub worker: u32,
    /// When it goes silent, in ms of virtual time from the start.
    pub at_ms: u64,
    /// For how long.
    pub for_ms: u64,
    /// How long each call hangs before it times out (the Redis backend's
    /// response time-out).
    pub timeout_ms: u64,
    /// Which of the worker's connections go silent.
    pub flows: Flows,
}

/// Draws the plan's broker-level classes (after everything else, so the
/// other draws of a seed stay where they were).
pub(super) fn draw(plan: &mut FaultPlan, rates: &FaultRates, shape: &PlanShape, rng: &mut SimRng) {
    let window = shape.fault_window_ms.max(1);
    let lease = shape.lease_ms.max(1);
    let workers = shape.workers.max(1);
    plan.broker.refused = rates.refused;
    plan.broker.item_failure = rates.item_failure;
    plan.half_open = (0..rates.half_open)
        .map(|_| HalfOpenLink {
            worker: rng.random_range(0..workers),
            at_ms: rng.random_range(0..window),
            for_ms: rng.random_range(lease / 2..=lease * 3),
            timeout_ms: rng.random_range(lease / 10..=lease).max(1),
            flows: Flows::ALL[rng.random_range(0..Flows::ALL.len())],
        })
        .collect();
}

/// Swarm intensities of the broker-level classes: each on or off, up to
/// about twice [`FaultRates::STANDARD`].
pub(super) fn swarm(rates: &mut FaultRates, rng: &mut SimRng) {
    let (refused, items, links) = (
        rng.random_bool(0.5),
        rng.random_bool(0.5),
        rng.random_bool(0.5),
    );
    rates.refused = if refused {
        rng.random_range(0.0..0.06)
    } else {
        0.0
    };
    rates.item_failure = if items {
        rng.random_range(0.0..0.2)
    } else {
        0.0
    };
    rates.half_open = if links { rng.random_range(1..=3) } else { 0 };
}
