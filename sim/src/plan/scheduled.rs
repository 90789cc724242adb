//! Scheduled dispatch (issue 12): a share of the workload dispatched with
//! [`Producer::dispatch_in`](crewq_core::producer::Producer::dispatch_in)
//! rather than at once. Not a fault: a workload the faults hit. A scheduled
//! task waits in its agent type's delayed set until due, and a worker
//! promotes it into the task stream; the checker proves it never starts
//! before its due time and is never lost.

use rand::Rng;
use serde::Serialize;

use super::{FaultPlan, FaultRates, PlanShape};
use crate::seed::SimRng;

/// A task dispatched for later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduledTask {
    /// The task's index.
    pub task: u32,
    /// Its delay in ms, counted from its dispatch (0: due at once, still
    /// through the delayed set).
    pub delay_ms: u64,
}

/// Draws the plan's scheduled tasks (after everything else, so the other
/// draws of a seed stay where they were): each task that is not poison with
/// chance `rates.scheduled`, a fifth of them due at once, the others after
/// up to three leases.
pub(super) fn draw(plan: &mut FaultPlan, rates: &FaultRates, shape: &PlanShape, rng: &mut SimRng) {
    let share = rates.scheduled.clamp(0.0, 1.0);
    if share == 0.0 {
        return;
    }
    let longest = shape.lease_ms.max(1) * 3;
    for task in 0..shape.tasks {
        if plan.poison_kind(task).is_some() || !rng.random_bool(share) {
            continue;
        }
        let delay_ms = if rng.random_bool(0.2) {
            0
        } else {
            rng.random_range(1..=longest)
        };
        plan.scheduled.push(ScheduledTask { task, delay_ms });
    }
}

/// The swarm's share of scheduled tasks: none in half of the swarms, up to
/// 30% in the others.
pub(super) fn swarm(rates: &mut FaultRates, rng: &mut SimRng) {
    rates.scheduled = if rng.random_bool(0.5) {
        rng.random_range(0.0..0.3)
    } else {
        0.0
    };
}
