//! A worker never stops silently and never starves (issue 9, findings 2's
//! worker side, 4, 8, 12): each a named test on the memory backend (paused
//! time) and on a private Redis.

mod worker_common;

use std::time::Duration;

use crewq_core::worker::{Health, Worker, blocking};
use crewq_core::{ALL_IDS, Broker, Error, ErrorKind, PendingQuery, ReadGroup, Task};
use serde_json::{Value, json};
use worker_common::{Calls, Env, When, counting, dropped, task};

crewq_tests::on_both_backends!(
    Env:
    a_failing_reclaim_does_not_starve_new_work,
    a_failing_drain_does_not_starve_new_work,
    an_error_waiting_cannot_fix_stops_the_worker_visibly_after_the_grace,
    transient_errors_are_waited_out_and_shown_on_the_handle,
    a_transient_error_recreating_a_missing_group_is_waited_out,
    a_destroyed_group_is_recreated_without_rerunning_completed_tasks,
    a_group_destroyed_before_its_samples_span_the_rollback_window_runs_again_from_the_start,
    a_destroyed_group_is_recreated_below_what_other_consumers_held,
    a_group_destroyed_while_its_entries_run_is_made_again_and_they_run_again,
    what_finished_between_pending_entries_does_not_run_again_after_a_destroy,
    a_stream_deleted_under_running_tasks_dead_letters_them_with_their_data,
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
    // A floor sampled after task 1 finished: it does not run again.
    tokio::time::sleep(env.options().reclaim_every * 2).await;
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
    // The worker samples its group's floor every `reclaim_every` (half the
    // lease): what finished since the last sample would run again.
    tokio::time::sleep(env.options().reclaim_every * 2).await;
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

/// The default keeps the samples of the last `rollback_window` and trusts
/// them only once they span it (a rollback may have made the newest ones
/// wrong): a group destroyed sooner comes back at the stream's beginning,
/// and what finished runs again. Duplicates, never a loss.
async fn a_group_destroyed_before_its_samples_span_the_rollback_window_runs_again_from_the_start(
    env: Env,
) {
    for n in 0..5 {
        env.dispatch(&task(n, 3)).await;
    }
    let mut options = env.options();
    options.rollback_window = Duration::from_secs(60);
    let calls = Calls::default();
    let worker = env.spawn_with("w1", options.clone(), counting(&calls, Duration::ZERO));
    env.settled(5).await;
    tokio::time::sleep(options.reclaim_every * 2).await;
    let keys = env.keys();
    env.broker
        .group_destroy(&keys.tasks, &keys.group)
        .await
        .expect("destroy");
    env.dispatch(&task(5, 3)).await;
    // Every task again, and the new one: 11 runs (a wide margin to get there).
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while calls.total() < 11 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    env.settled(6).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let runs: Vec<u32> = (0..6).map(|n| calls.of(&format!("task-{n}"))).collect();
    assert_eq!(runs, [2, 2, 2, 2, 2, 1], "{report:?}");
    assert_eq!(env.pending().await, 0);
}

async fn a_destroyed_group_is_recreated_below_what_other_consumers_held(env: Env) {
    env.group().await;
    for n in 0..4 {
        env.dispatch(&task(n, 3)).await;
    }
    // A stalled peer holds tasks 0 and 1 when the group is destroyed: their
    // entries are older than anything the worker read or holds.
    let keys = env.keys();
    let held = env
        .broker
        .read_group(&ReadGroup::new(&keys.tasks, &keys.group, "peer").count(2))
        .await
        .expect("peer reads");
    assert_eq!(held.len(), 2);
    // A long lease: the peer's entries are not reclaimed before the
    // destruction, and the floor is sampled once, at the start.
    let options = env.options().lease(Duration::from_secs(20));
    let calls = Calls::default();
    let worker = env.spawn_with("w1", options, counting(&calls, Duration::ZERO));
    while env.results().await.len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.broker
        .group_destroy(&keys.tasks, &keys.group)
        .await
        .expect("destroy");
    env.dispatch(&task(4, 3)).await;
    env.settled(5).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    for n in 0..5 {
        let id = format!("task-{n}");
        assert!(calls.of(&id) >= 1, "{id} never ran: {report:?}");
    }
    let mut done: Vec<String> = env.results().await.into_iter().map(|r| r.task_id).collect();
    done.sort();
    done.dedup();
    assert_eq!(done.len(), 5, "every task has a result: {done:?}");
}

async fn a_group_destroyed_while_its_entries_run_is_made_again_and_they_run_again(env: Env) {
    for n in 0..2 {
        env.dispatch(&task(n, 3)).await;
    }
    // Every slot busy when the group goes: the settles find it missing.
    let mut options = env.options();
    options.concurrency = 2;
    let calls = Calls::default();
    let worker = env.spawn_with("w1", options, counting(&calls, Duration::from_millis(300)));
    while calls.total() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keys = env.keys();
    env.broker
        .group_destroy(&keys.tasks, &keys.group)
        .await
        .expect("destroy");
    env.settled(2).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let mut done: Vec<String> = env.results().await.into_iter().map(|r| r.task_id).collect();
    done.sort();
    assert_eq!(done, ["task-0", "task-1"], "{report:?}");
    assert_eq!(calls.total(), 4, "each ran again: {report:?}");
}

async fn what_finished_between_pending_entries_does_not_run_again_after_a_destroy(env: Env) {
    env.group().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(env.dispatch(&task(n, 3)).await);
    }
    // A peer read all five and finished tasks 1 to 3; it still holds 0
    // and 4 when the group is destroyed.
    let keys = env.keys();
    let read = env
        .broker
        .read_group(&ReadGroup::new(&keys.tasks, &keys.group, "peer").count(5))
        .await
        .expect("peer reads");
    assert_eq!(read.len(), 5);
    let acked = env
        .broker
        .ack(&keys.tasks, &keys.group, &ids[1..4])
        .await
        .expect("peer acks");
    assert_eq!(acked, 3);
    // The worker samples the group as it starts: 0 and 4 pending.
    let options = env.options().lease(Duration::from_secs(20));
    let calls = Calls::default();
    let worker = env.spawn_with("w1", options, counting(&calls, Duration::ZERO));
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.broker
        .group_destroy(&keys.tasks, &keys.group)
        .await
        .expect("destroy");
    env.settled(2).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let runs: Vec<u32> = (0..5).map(|n| calls.of(&format!("task-{n}"))).collect();
    assert_eq!(runs, [1, 0, 0, 0, 1], "{report:?}");
    assert_eq!(env.pending().await, 0);
}

/// `DEL` of a task stream takes its entries and its group: nothing will
/// deliver the running tasks again. Their worker, learning the group is
/// gone (a renewal, a read, a settle), finds their entries gone too and
/// dead-letters them `deleted_while_pending` with their data, replayable,
/// instead of dropping them silently as an entry that runs again would be.
async fn a_stream_deleted_under_running_tasks_dead_letters_them_with_their_data(env: Env) {
    for n in 0..2 {
        env.dispatch(&task(n, 3)).await;
    }
    // Both slots busy when the stream goes, for longer than a renewal.
    let mut options = env.options();
    options.concurrency = 2;
    let calls = Calls::default();
    let worker = env.spawn_with("w1", options, counting(&calls, Duration::from_millis(500)));
    while calls.total() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keys = env.keys();
    assert!(
        env.deleter.delete_stream(&keys.tasks).await,
        "DEL found the stream"
    );
    env.settled(2).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(
        env.reasons().await,
        ["deleted_while_pending", "deleted_while_pending"],
        "{report:?}"
    );
    let mut kept: Vec<String> = env
        .dead_letters()
        .await
        .iter()
        .map(|l| {
            l.decode_task::<Value>()
                .expect("the letter has the task")
                .task_id
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["task-0", "task-1"],
        "each letter holds its task's data"
    );
    assert!(
        env.results().await.is_empty(),
        "nothing was recorded as done"
    );
    assert_eq!(calls.total(), 2, "nothing ran again: {report:?}");
    assert_eq!(report.vanished, 2, "{report:?}");
}

/// A handler that blocks its thread (issue 9, finding 3: renewals shared
/// its runtime, leases lapsed, peers ran the task again), written as
/// synchronous code under [`blocking`]: on the test's current-thread
/// runtime the worker's renewals go on while it blocks for three leases,
/// so the entry stays its own and fresh, and it runs once. Inline in an
/// async handler the same sleep stalls the whole runtime: nothing here
/// could even look (the test fails so).
async fn a_handler_blocking_its_thread_under_blocking_keeps_its_lease(env: Env) {
    env.dispatch(&task(0, 3)).await;
    let calls = Calls::default();
    let counted = calls.clone();
    let handler = blocking(move |t: Task<Value>| {
        counted.bump(&t.task_id);
        std::thread::sleep(Duration::from_millis(1_800));
        Ok(json!({ "done": t.task_id }))
    });
    let options = env.options();
    let lease = options.lease;
    let worker = env.spawn_with("w1", options, handler);
    while calls.total() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keys = env.keys();
    let query = PendingQuery::new(1).range(ALL_IDS);
    let mut fresh = 0;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rows = env
            .broker
            .pending(&keys.tasks, &keys.group, &query)
            .await
            .expect("pending");
        if let Some(row) = rows.first() {
            assert_eq!(row.consumer, "w1", "{row:?}");
            assert!(
                row.idle < lease,
                "the lease lapsed while it blocked: {row:?}"
            );
            fresh += 1;
        }
    }
    assert!(
        fresh >= 10,
        "looked at it pending only {fresh} times while it blocked"
    );
    env.settled(1).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.total(), 1, "{report:?}");
    assert_eq!(report.completed, 1, "{report:?}");
}

/// [`a_handler_blocking_its_thread_under_blocking_keeps_its_lease`] in real
/// time on every backend: paused time cannot wait for a real thread.
mod blocking_in_real_time {
    use super::{Env, a_handler_blocking_its_thread_under_blocking_keeps_its_lease as case};
    use crewq_tests::backends::Backend;

    #[tokio::test]
    async fn memory() {
        case(Env::from(Backend::memory())).await;
    }

    #[tokio::test]
    async fn redis() {
        case(Env::from(Backend::redis().await)).await;
    }

    #[tokio::test]
    async fn cluster() {
        case(Env::from(Backend::cluster().await)).await;
    }
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
