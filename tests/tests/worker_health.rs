//! A worker never stops silently and never starves (issue 9, findings 2's
//! worker side, 4, 8, 12): each a named test on the memory backend (paused
//! time) and on a private Redis.

mod worker_common;

use std::time::Duration;

use crewq_core::worker::{Health, Worker};
use crewq_core::{Broker, Error, ErrorKind};
use worker_common::{Calls, Env, When, counting, dropped, task};

crewq_tests::on_both_backends!(
    Env:
    a_failing_reclaim_does_not_starve_new_work,
    a_failing_drain_does_not_starve_new_work,
    an_error_waiting_cannot_fix_stops_the_worker_visibly_after_the_grace,
    transient_errors_are_waited_out_and_shown_on_the_handle,
    a_transient_error_recreating_a_missing_group_is_waited_out,
    a_destroyed_group_is_recreated_without_rerunning_completed_tasks,
    options_that_cannot_work_are_refused_at_spawn,
);

fn refused() -> Error {
    Error::Auth {
        message: "NOPERM this user has no permissions to run the 'xreadgroup' command".into(),
        source: None,
    }
}

async fn a_failing_reclaim_does_not_starve_new_work(env: Env) {
    for n in 0..3 {
        env.dispatch(&task(n, 3)).await;
    }
    env.gate.fail("autoclaim_recorded", When::Before, dropped);
    let calls = Calls::default();
    let worker = env.spawn("w1", counting(&calls, Duration::ZERO));
    env.settled(3).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.completed, 3, "{report:?}");
    assert!(
        env.gate.failed("autoclaim_recorded") > 0,
        "the reclaim was tried"
    );
}

async fn a_failing_drain_does_not_starve_new_work(env: Env) {
    for n in 0..3 {
        env.dispatch(&task(n, 3)).await;
    }
    env.gate.fail("read_history", When::Before, dropped);
    let calls = Calls::default();
    let worker = env.spawn("w1", counting(&calls, Duration::ZERO));
    env.settled(3).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.completed, 3, "{report:?}");
    assert!(env.gate.failed("read_history") > 0, "the drain was tried");
}

async fn an_error_waiting_cannot_fix_stops_the_worker_visibly_after_the_grace(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let calls = Calls::default();
    let worker = env.spawn("w1", counting(&calls, Duration::from_secs(1)));
    while calls.of("task-1") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    env.gate.fail("read_group", When::Before, refused);
    // Shown at once, while the running task still has its grace.
    while matches!(worker.health(), Health::Running | Health::Degraded { .. }) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        matches!(worker.health(), Health::Stopping { ref error } if error.kind() == ErrorKind::Auth),
        "{:?}",
        worker.health()
    );
    assert!(env.results().await.is_empty(), "the task is still running");
    let error = worker.closed().await;
    assert_eq!(error.kind(), ErrorKind::Auth, "{error}");
    assert!(worker.health().is_stopped());
    // The running task finished within the grace and its outcome was kept.
    assert_eq!(env.results().await.len(), 1);
    assert_eq!(env.pending().await, 0);
    let ended = worker.shutdown(Duration::from_secs(5)).await;
    assert!(matches!(ended, Err(Error::Auth { .. })), "{ended:?}");
}

async fn transient_errors_are_waited_out_and_shown_on_the_handle(env: Env) {
    let calls = Calls::default();
    let worker = env.spawn("w1", counting(&calls, Duration::ZERO));
    env.gate.fail("read_group", When::Before, dropped);
    while !matches!(worker.health(), Health::Degraded { .. }) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outage = if env.memory { 600 } else { 3 };
    tokio::time::sleep(Duration::from_secs(outage)).await;
    match worker.health() {
        Health::Degraded { error, failures } => {
            assert_eq!(error.kind(), ErrorKind::Connection);
            assert!(failures > 1, "{failures}");
        }
        other => panic!("still waiting it out: {other:?}"),
    }
    env.gate.heal();
    env.dispatch(&task(1, 3)).await;
    env.settled(1).await;
    assert!(
        matches!(worker.health(), Health::Running),
        "{:?}",
        worker.health()
    );
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.completed, 1, "{report:?}");
}

async fn a_transient_error_recreating_a_missing_group_is_waited_out(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let calls = Calls::default();
    let worker = env.spawn("w1", counting(&calls, Duration::ZERO));
    env.settled(1).await;
    let keys = env.keys();
    env.gate.fail("group_create", When::Before, dropped);
    env.broker
        .group_destroy(&keys.tasks, &keys.group)
        .await
        .expect("destroy");
    while env.gate.failed("group_create") < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!worker.health().is_stopped(), "{:?}", worker.health());
    env.gate.heal();
    env.dispatch(&task(2, 3)).await;
    env.settled(2).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.completed, 2, "{report:?}");
}

async fn a_destroyed_group_is_recreated_without_rerunning_completed_tasks(env: Env) {
    for n in 0..5 {
        env.dispatch(&task(n, 3)).await;
    }
    let calls = Calls::default();
    let worker = env.spawn("w1", counting(&calls, Duration::ZERO));
    env.settled(5).await;
    let keys = env.keys();
    env.broker
        .group_destroy(&keys.tasks, &keys.group)
        .await
        .expect("destroy");
    for n in 5..7 {
        env.dispatch(&task(n, 3)).await;
    }
    env.settled(7).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.total(), 7, "each ran once: {report:?}");
    assert_eq!(env.results().await.len(), 7);
}

async fn options_that_cannot_work_are_refused_at_spawn(env: Env) {
    let calls = Calls::default();
    let mut options = env.options();
    options.concurrency = 0;
    let refused = Worker::new(
        std::sync::Arc::clone(&env.broker),
        env.agent.clone(),
        "w1",
        counting(&calls, Duration::ZERO),
    )
    .options(options)
    .try_spawn();
    let err = refused.map(|_| ()).expect_err("refused");
    assert!(err.to_string().contains("concurrency"), "{err}");
    // Spawned anyway: it stops at once, and says why.
    let mut options = env.options();
    options.renew_every = options.lease;
    let worker = env.spawn_with("w1", options, counting(&calls, Duration::ZERO));
    let error = worker.closed().await;
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(error.to_string().contains("renew_every"), "{error}");
}
