//! The same scenarios against a real Redis (a private redis-server, or
//! CREWQ_REDIS_URL): crashes, pauses, handler and broker faults injected
//! the same way, in real time, the same invariants.

use crewq_sim::{FaultPlan, Faults, Invariant, Mutant, Scenario, Simulation, SlowDownAt};
use crewq_tests::redis_server::TestRedis;

/// A short scenario: 30 tasks over 2 workers, 3 s of faults.
fn scenario() -> Scenario {
    Scenario::default().tasks(30).workers(2)
}

#[test]
fn a_scenario_on_redis_keeps_every_invariant_under_faults() {
    let redis = TestRedis::start();
    let simulation = Simulation::standard(scenario());
    let report = simulation
        .run_on_redis_under(redis.url(), &redis.unique_prefix(), 1)
        .expect("runs on Redis");
    assert!(report.passed(), "{report}");
    // A destroyed group may run tasks again: duplicates, or replays
    // counted apart.
    let c = report.counts;
    assert_eq!(
        c.ok + c.duplicated + c.dead_lettered + c.replayed,
        30,
        "{report}"
    );
    assert!(
        report.stats.broker_faults > 0,
        "faults were injected: {report:?}"
    );
    assert!(
        !report.plan.crashes.is_empty(),
        "a worker crashed: {}",
        report.plan
    );
}

#[test]
fn a_mutant_is_caught_on_redis_too() {
    let redis = TestRedis::start();
    // Two tasks that always fail: the mutant dead-letters them at once.
    let plan = FaultPlan {
        failing: vec![3, 11],
        ..scenario().plan_for(1)
    };
    let scenario = scenario()
        .faults(Faults::Plan(plan))
        .mutant(Some(Mutant::DlqOnFirstFailure));
    let report = Simulation::standard(scenario)
        .run_on_redis_under(redis.url(), &redis.unique_prefix(), 1)
        .expect("runs on Redis");
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.invariant == Invariant::DeadLetterRouting),
        "{report}"
    );
}

/// Slow-downs on Redis (issue 12): the plan of slow_downs.rs, on the first
/// seed whose agent type draws a rate limit: the slowed-down tasks are
/// retried without burning a retry, their agent type paused through Redis.
#[test]
fn slow_downs_pause_the_agent_type_on_redis() {
    let redis = TestRedis::start();
    let slow = |task, call| SlowDownAt {
        task,
        call,
        pause_ms: 150,
    };
    let plan = FaultPlan {
        failing: vec![4],
        slow_downs: vec![slow(4, 1), slow(4, 2), slow(6, 1)],
        ..FaultPlan::none()
    };
    let scenario = scenario().tasks(20).faults(Faults::Plan(plan));
    let seed = (1..)
        .find(|&seed| !scenario.rate_limits_for(seed).is_empty())
        .expect("a third of the seeds draw one");
    // A worker that does not pause the agent type is caught here too.
    let broken = Simulation::standard(scenario.clone().mutant(Some(Mutant::IgnoreSlowDown)))
        .run_on_redis_under(redis.url(), &redis.unique_prefix(), seed)
        .expect("runs on Redis");
    assert!(
        broken
            .violations
            .iter()
            .any(|v| v.invariant == Invariant::SlowDownHonoured),
        "{broken}"
    );
    let report = Simulation::standard(scenario)
        .run_on_redis_under(redis.url(), &redis.unique_prefix(), seed)
        .expect("runs on Redis");
    assert!(report.passed(), "{report}");
    assert_eq!(report.hits.get("slow_down"), Some(&3), "{:?}", report.hits);
    assert!(
        report.hits.get("rate_paused").is_some_and(|&n| n >= 3),
        "{:?}",
        report.hits
    );
    assert_eq!(
        (report.counts.ok, report.counts.dead_lettered),
        (19, 1),
        "{report}"
    );
}
