//! State-level fault class of a plan: a task stream's consumer group
//! destroyed mid-run ([`GroupDestroyAt`]), as an operator's
//! `XGROUP DESTROY` does.

use rand::Rng;
use serde::Serialize;

use super::{FaultPlan, FaultRates, PlanShape};
use crate::seed::SimRng;

/// An `XGROUP DESTROY` of one agent type's worker group: its pending list
/// and its last-delivered id are gone, the stream's entries stay. The
/// workers must make it again where nothing it still needed is lost
/// (entries it had finished may run again: duplicates, counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GroupDestroyAt {
    /// The agent type's index in the scenario.
    pub agent: u32,
    /// When, in ms of virtual time from the start.
    pub at_ms: u64,
}

/// Draws the plan's group destructions (after everything else, so the
/// other draws of a seed stay where they were).
pub(super) fn draw(plan: &mut FaultPlan, rates: &FaultRates, shape: &PlanShape, rng: &mut SimRng) {
    let window = shape.fault_window_ms.max(1);
    plan.group_destroys = (0..rates.group_destroys)
        .map(|_| GroupDestroyAt {
            agent: rng.random_range(0..shape.agent_types.max(1)),
            at_ms: rng.random_range(0..window),
        })
        .collect();
}

/// Swarm intensity: on or off, up to twice [`FaultRates::STANDARD`].
pub(super) fn swarm(rates: &mut FaultRates, rng: &mut SimRng) {
    rates.group_destroys = if rng.random_bool(0.5) {
        rng.random_range(1..=2)
    } else {
        0
    };
}
