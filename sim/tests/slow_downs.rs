//! Slow-downs (issue 12): a handler that says "slow down" (an upstream's
//! 429) pauses its agent type through the broker, and its task is retried
//! after the pause without burning a retry. A plan made for it, on paused
//! time; the same plan on Redis is in redis.rs.

use crewq_sim::{FaultPlan, Faults, Scenario, Simulation, SlowDownAt};

/// The first seed whose agent type draws a shared rate limit (the workers
/// honour a pause only there).
fn rate_limited_seed(scenario: &Scenario) -> u64 {
    (1..)
        .find(|&seed| !scenario.rate_limits_for(seed).is_empty())
        .expect("a third of the seeds draw one")
}

/// Task 4 fails every call (an ordinary error) and says "slow down" on its
/// first two; task 6 says so once, then succeeds.
fn slowed_plan() -> FaultPlan {
    let slow = |task, call| SlowDownAt {
        task,
        call,
        pause_ms: 150,
    };
    FaultPlan {
        failing: vec![4],
        slow_downs: vec![slow(4, 1), slow(4, 2), slow(6, 1)],
        ..FaultPlan::none()
    }
}

#[test]
fn slowed_down_tasks_are_retried_without_burning_a_retry_and_pause_their_agent_type() {
    let scenario = Scenario::default()
        .tasks(20)
        .faults(Faults::Plan(slowed_plan()));
    let seed = rate_limited_seed(&scenario);
    let report = Simulation::standard(scenario).run(seed).expect("runs");
    assert!(report.passed(), "{report}");
    assert_eq!(report.hits.get("slow_down"), Some(&3), "{:?}", report.hits);
    assert!(
        report.hits.get("rate_paused").is_some_and(|&n| n >= 3),
        "{:?}",
        report.hits
    );
    // Task 4: two slow-downs, then max_retries + 1 failed runs.
    assert_eq!(report.counts.dead_lettered, 1, "{report}");
    assert_eq!(report.counts.ok, 19, "{report}");
    assert_eq!(report.stats.handler_calls, 19 + 2 + 4 + 1, "{report}");
    assert_eq!(report.counts.lost, 0, "{report}");
}
