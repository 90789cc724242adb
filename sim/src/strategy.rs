//! proptest strategies for scenarios and fault plans.
//!
//! A plan is plain data, so proptest shrinks a failing one element by
//! element (fewer crashes, fewer handler faults, lower rates) down to a
//! minimal plan that still fails:
//!
//! ```
//! use proptest::prelude::*;
//! use proptest::test_runner::{Config, TestRunner};
//! use crewq_sim::{Faults, Scenario, Simulation, strategy};
//!
//! let scenario = Scenario::default().tasks(10).workers(2);
//! let mut runner = TestRunner::new(Config { cases: 4, ..Config::default() });
//! runner
//!     .run(&strategy::fault_plan(&scenario), |plan| {
//!         let scenario = scenario.clone().faults(Faults::Plan(plan));
//!         let report = Simulation::standard(scenario).run(1).expect("runs");
//!         prop_assert!(report.passed(), "{report}");
//!         Ok(())
//!     })
//!     .expect("every plan passes");
//! ```

use proptest::prelude::*;

use crate::Flows;
use crate::plan::{
    BrokerFaults, Crash, FaultPlan, GroupDestroyAt, HalfOpenLink, HandlerFault, HandlerFaultAt,
    LaneSettings, MAX_ROLLBACK_LAG_MS, Pause, Poison, PoisonKind, Rollback, ScheduledTask,
    TaskPriority, TrimAt, TrimCut,
};
use crate::scenario::{Faults, Scenario};

/// Plans for `scenario`'s shape: up to 3 crashes and 2 pauses in its fault
/// window, up to 12 handler faults, 3 failing and 3 poison tasks (of every
/// kind), broker errors up to 15% before and 10% after, latency up to 5 ms,
/// failover refusals up to 6% and refused settle items up to 20%, up to 2
/// half-open links and 2 trims of a task stream, up to one destroyed
/// worker group and at most one broker rollback, and up to 4 tasks
/// dispatched for later (up to three leases; a poison task drawn as
/// scheduled is dispatched as poison): every fault class a campaign draws
/// but graceful stops and outages.
pub fn fault_plan(scenario: &Scenario) -> impl Strategy<Value = FaultPlan> + use<> {
    let shape = scenario.shape();
    let tasks = shape.tasks.max(1);
    let workers = shape.workers.max(1);
    let window = shape.fault_window_ms.max(1);
    let lease = shape.lease_ms.max(20);
    let calls = shape.max_retries + 1;
    let broker = (
        0.0..0.15f64,
        0.0..0.10f64,
        0..=5u64,
        0.0..0.06f64,
        0.0..0.2f64,
    )
        .prop_map(
            |(before, after, latency, refused, item_failure)| BrokerFaults {
                error_before: before,
                error_after: after,
                latency_ms: latency,
                refused,
                item_failure,
            },
        );
    let crash = (
        0..workers,
        0..window,
        lease / 20..=lease * 3 / 2,
        any::<bool>(),
    )
        .prop_map(|(worker, at_ms, down_ms, rename)| Crash {
            worker,
            at_ms,
            down_ms,
            rename,
        });
    let pause =
        (0..workers, 0..window, lease * 6 / 5..=lease * 3).prop_map(|(worker, at_ms, for_ms)| {
            Pause {
                worker,
                at_ms,
                for_ms,
            }
        });
    let fault = prop_oneof![
        Just(HandlerFault::Error),
        Just(HandlerFault::Panic),
        Just(HandlerFault::Hang),
        (lease / 2..=lease * 2).prop_map(|ms| HandlerFault::Slow { ms }),
    ];
    let handler = (0..tasks, 1..=calls, fault).prop_map(|(task, call, fault)| HandlerFaultAt {
        task,
        call,
        fault,
    });
    let kind = prop::sample::select(PoisonKind::ALL.to_vec());
    let poison = (0..tasks, kind).prop_map(|(task, kind)| Poison { task, kind });
    let cut = prop_oneof![
        3 => Just(TrimCut::Delivered),
        1 => (0..=10u64).prop_map(TrimCut::MaxLen),
    ];
    let agents = shape.agent_types.max(1);
    let trim =
        (0..agents, 0..window, cut).prop_map(|(agent, at_ms, cut)| TrimAt { agent, at_ms, cut });
    let link = (
        0..workers,
        0..window,
        lease / 2..=lease * 3,
        (lease / 10).max(1)..=lease,
        prop::sample::select(Flows::ALL.to_vec()),
    )
        .prop_map(|(worker, at_ms, for_ms, timeout_ms, flows)| HalfOpenLink {
            worker,
            at_ms,
            for_ms,
            timeout_ms,
            flows,
        });
    let destroy = (0..agents, 0..window).prop_map(|(agent, at_ms)| GroupDestroyAt { agent, at_ms });
    // Snapshots no earlier than the draws from rates take them.
    let earliest = crate::plan::EARLIEST_SNAPSHOT_MS;
    let rollback = (
        earliest + 1..window.max(earliest + 2),
        1..=MAX_ROLLBACK_LAG_MS,
    )
        .prop_map(move |(at_ms, lag_ms)| Rollback {
            at_ms,
            lag_ms: lag_ms.min(at_ms - earliest),
        });
    let scheduled = (0..tasks, prop_oneof![1 => Just(0u64), 4 => 1..=lease * 3])
        .prop_map(|(task, delay_ms)| ScheduledTask { task, delay_ms });
    // Priorities in a quarter of the plans: a starvation bound, a lane
    // poll, and tasks at priorities above 0.
    let lanes = prop::option::weighted(
        0.25,
        (
            50..=2_000u64,
            5..=250u64,
            prop::collection::vec((0..tasks, 1..=10u8), 0..=tasks as usize),
        ),
    );
    (
        broker,
        prop::collection::vec(crash, 0..=3),
        prop::collection::vec(pause, 0..=2),
        prop::collection::vec(handler, 0..=12),
        prop::collection::vec(0..tasks, 0..=3),
        prop::collection::vec(poison, 0..=3),
        prop::collection::vec(link, 0..=2),
        prop::collection::vec(trim, 0..=2),
        prop::collection::vec(destroy, 0..=1),
        prop::collection::vec(rollback, 0..=1),
        prop::collection::vec(scheduled, 0..=4),
        lanes,
    )
        .prop_map(
            |(
                broker,
                crashes,
                pauses,
                handler,
                failing,
                poison,
                half_open,
                trims,
                group_destroys,
                rollbacks,
                scheduled,
                lanes,
            )| {
                let (lanes, mut priorities) = match lanes {
                    Some((starvation_ms, lane_poll_ms, priorities)) => (
                        Some(LaneSettings {
                            starvation_ms,
                            lane_poll_ms,
                        }),
                        priorities
                            .into_iter()
                            .map(|(task, priority)| TaskPriority { task, priority })
                            .collect(),
                    ),
                    None => (None, Vec::new()),
                };
                // One priority per task: its first.
                let mut seen = std::collections::BTreeSet::new();
                priorities.retain(|p: &TaskPriority| seen.insert(p.task));
                FaultPlan {
                    broker,
                    crashes,
                    pauses,
                    handler,
                    failing,
                    poison,
                    half_open,
                    trims,
                    stops: Vec::new(),
                    outages: Vec::new(),
                    group_destroys,
                    rollbacks,
                    scheduled,
                    stream_deletes: Vec::new(),
                    slow_downs: Vec::new(),
                    priorities,
                    lanes,
                }
            },
        )
}

/// Small scenarios (5 to 40 tasks, 1 or 2 agent types, 1 to 3 workers
/// each, 0 to 3 retries, leases of 200 ms to 2 s), each with a plan from
/// [`fault_plan`].
pub fn scenario() -> impl Strategy<Value = Scenario> {
    (5..=40u32, 1..=2usize, 1..=3u32, 0..=3u32, 200..=2000u64)
        .prop_map(|(tasks, agents, workers, max_retries, lease_ms)| {
            Scenario::default()
                .tasks(tasks)
                .agent_types(["research", "report"].into_iter().take(agents))
                .workers(workers)
                .max_retries(max_retries)
                .lease(std::time::Duration::from_millis(lease_ms))
        })
        .prop_flat_map(|scenario| {
            let plans = fault_plan(&scenario);
            (Just(scenario), plans).prop_map(|(scenario, plan)| scenario.faults(Faults::Plan(plan)))
        })
}
