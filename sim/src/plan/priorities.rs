//! Priorities (issue 12): in a share of the runs, tasks are dispatched at
//! drawn priorities, so several priority lanes of an agent type hold
//! backlogs at once, and the crew gets a drawn starvation bound (short in
//! virtual time, so a low priority's aging is exercised) and lane poll.
//! Not a fault: a workload the faults hit. The checker proves the order
//! rule ([`Invariant::PriorityOrderKept`](crate::Invariant)) and every
//! other invariant with the lanes on.

use rand::Rng;
use serde::Serialize;

use super::{FaultPlan, FaultRates, PlanShape};
use crate::seed::SimRng;

/// A task dispatched at a priority above 0 (the others are at 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TaskPriority {
    /// The task's index.
    pub task: u32,
    /// Its priority, `1..=10`.
    pub priority: u8,
}

/// The crew's priority settings in a run with priorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LaneSettings {
    /// Every worker's
    /// [`WorkerOptions::starvation_bound`](crewq_core::worker::WorkerOptions::starvation_bound),
    /// in ms.
    pub starvation_ms: u64,
    /// Every worker's
    /// [`WorkerOptions::lane_poll`](crewq_core::worker::WorkerOptions::lane_poll),
    /// in ms.
    pub lane_poll_ms: u64,
}

/// Draws the plan's priorities (after everything else, so the other draws
/// of a seed stay where they were): with chance `rates.priorities`, a
/// starvation bound of 50 to 2,000 ms and a lane poll of 5 to 250 ms, and
/// two to four priority levels in use besides 0; each task then at 0 with
/// odds 1 in 3, else at one of the levels (the higher ones rarer), so the
/// lanes hold backlogs together.
pub(super) fn draw(plan: &mut FaultPlan, rates: &FaultRates, shape: &PlanShape, rng: &mut SimRng) {
    let chance = rates.priorities.clamp(0.0, 1.0);
    if chance == 0.0 || !rng.random_bool(chance) {
        return;
    }
    plan.lanes = Some(LaneSettings {
        starvation_ms: rng.random_range(50..=2_000),
        lane_poll_ms: rng.random_range(5..=250),
    });
    let mut levels: Vec<u8> = Vec::new();
    let wanted = rng.random_range(2..=4);
    while levels.len() < wanted {
        let level = rng.random_range(1..=10u8);
        if !levels.contains(&level) {
            levels.push(level);
        }
    }
    levels.sort_unstable();
    for task in 0..shape.tasks {
        if rng.random_bool(1.0 / 3.0) {
            continue;
        }
        // Level i (lowest first) with weight levels.len() - i.
        let n = levels.len();
        let total = n * (n + 1) / 2;
        let mut pick = rng.random_range(0..total);
        let mut level = levels[0];
        for (i, &l) in levels.iter().enumerate() {
            let weight = n - i;
            if pick < weight {
                level = l;
                break;
            }
            pick -= weight;
        }
        plan.priorities.push(TaskPriority {
            task,
            priority: level,
        });
    }
}
