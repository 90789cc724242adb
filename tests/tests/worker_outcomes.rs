//! The worker never loses an outcome (issue 9, findings 3, 5, 7, 10 and 1's
//! deleted-while-pending): each a named test on the memory backend (paused
//! time) and on a private Redis.

mod worker_common;

use std::sync::Arc;
use std::time::Duration;

use crewq_core::worker::{HandlerError, Health, Worker};
use crewq_core::{Broker, Fields, ReadGroup, Task, TaskStatus, Validators, task_to_fields};
use serde_json::{Value, json};
use worker_common::{Calls, Env, When, counting, dropped, task};

crewq_tests::on_both_backends!(
    Env:
    an_outcome_survives_an_outage_longer_than_the_settle_retries,
    a_settle_the_broker_refuses_is_retried_not_dropped,
    max_retries_zero_never_dead_letters_a_task_that_never_failed,
    a_crash_loop_is_dead_lettered_after_max_deliveries,
    a_grace_longer_than_the_lease_keeps_renewing,
    entries_with_impossible_attempt_counts_are_poison,
    a_panicking_validator_poisons_its_entry_instead_of_holding_it,
    tasks_are_validated_as_the_agent_type_of_their_stream,
    an_entry_deleted_while_pending_is_never_silent,
);

/// How long the broker is down: far past the old five settle tries.
fn outage(env: &Env) -> Duration {
    if env.memory {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(3)
    }
}

async fn an_outcome_survives_an_outage_longer_than_the_settle_retries(env: Env) {
    env.dispatch(&task(1, 0)).await;
    let calls = Calls::default();
    env.gate.fail("settle", When::Before, dropped);
    let worker = env.spawn("w1", counting(&calls, Duration::ZERO));
    tokio::time::sleep(outage(&env)).await;
    assert!(env.gate.failed("settle") > 5, "the settle kept trying");
    // Its reads succeed, but an outcome waits: the handle says so.
    assert!(
        matches!(worker.health(), Health::Degraded { ref error, .. } if error.is_transient()),
        "{:?}",
        worker.health()
    );
    env.gate.heal();
    env.settled(1).await;
    while !matches!(worker.health(), Health::Running) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.of("task-1"), 1, "run once: its outcome was kept");
    let results = env.results().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, TaskStatus::Success);
    assert!(
        env.dead_letters().await.is_empty(),
        "{:?}",
        env.reasons().await
    );
    assert_eq!(report.completed, 1, "{report:?}");
}

async fn a_settle_the_broker_refuses_is_retried_not_dropped(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let calls = Calls::default();
    env.gate
        .fail("settle", When::Before, || crewq_core::Error::Backend {
            message: "OOM command not allowed when used memory > 'maxmemory'".into(),
            source: None,
        });
    let worker = env.spawn("w1", counting(&calls, Duration::ZERO));
    // Several leases go by: the entry stays held, so nobody runs it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.gate.heal();
    env.settled(1).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.of("task-1"), 1, "{report:?}");
    assert_eq!((report.completed, report.unsettled), (1, 0), "{report:?}");
    assert_eq!(env.results().await.len(), 1);
}

async fn max_retries_zero_never_dead_letters_a_task_that_never_failed(env: Env) {
    env.dispatch(&task(1, 0)).await;
    let calls = Calls::default();
    let slow = env.spawn("w1", counting(&calls, Duration::from_secs(60)));
    while calls.of("task-1") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Handed back at shutdown: a delivery with no outcome, not a failure.
    let report = slow.shutdown(Duration::ZERO).await.expect("report");
    assert_eq!(report.handed_back, 1, "{report:?}");
    // The same consumer drains it on restart; another one reclaims it.
    for consumer in ["w1", "w2"] {
        let again = env.spawn(consumer, counting(&calls, Duration::from_secs(60)));
        while calls.of("task-1") < if consumer == "w1" { 2 } else { 3 } {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        again.shutdown(Duration::ZERO).await.expect("report");
    }
    let worker = env.spawn("w3", counting(&calls, Duration::ZERO));
    env.settled(1).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert!(
        env.dead_letters().await.is_empty(),
        "{:?}",
        env.reasons().await
    );
    let results = env.results().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, TaskStatus::Success);
}

async fn a_crash_loop_is_dead_lettered_after_max_deliveries(env: Env) {
    env.dispatch(&task(1, 5)).await;
    let calls = Calls::default();
    let mut options = env.options();
    options.max_deliveries = 3;
    // Each delivery takes its worker down (aborted, as a crash would).
    for run in 1..=3 {
        let worker = env.spawn_with(
            "w1",
            options.clone(),
            counting(&calls, Duration::from_secs(60)),
        );
        while calls.of("task-1") < run {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worker.abort();
    }
    let worker = env.spawn_with("w1", options, counting(&calls, Duration::from_secs(60)));
    env.settled(2).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.of("task-1"), 3, "not run a fourth time");
    assert_eq!(env.reasons().await, ["max_deliveries"], "{report:?}");
    let letter = &env.dead_letters().await[0];
    assert_eq!(letter.retries, 0, "no run failed");
    assert!(letter.error.contains("3 deliveries"), "{}", letter.error);
}

async fn a_grace_longer_than_the_lease_keeps_renewing(env: Env) {
    env.group().await;
    env.dispatch(&task(1, 3)).await;
    let calls = Calls::default();
    // Runs for over three leases (600 ms) after the stop.
    let worker = env.spawn("w1", counting(&calls, Duration::from_secs(2)));
    while calls.of("task-1") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::spawn(worker.shutdown(Duration::from_secs(10)));
    // A peer looks for stale entries all along.
    let keys = env.keys();
    let mut taken = 0;
    while !stopping.is_finished() {
        let claimed = env
            .broker
            .autoclaim(
                &keys.tasks,
                &keys.group,
                "peer",
                Duration::from_millis(600),
                crewq_core::StreamId::ZERO,
                10,
            )
            .await
            .expect("autoclaim");
        taken += claimed.claimed.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = stopping.await.expect("join").expect("report");
    assert_eq!(taken, 0, "the lease was kept during the grace");
    assert_eq!((report.completed, report.zombies), (1, 0), "{report:?}");
    assert_eq!(env.results().await.len(), 1);
}

async fn entries_with_impossible_attempt_counts_are_poison(env: Env) {
    let data = task_to_fields(&task(1, 3)).expect("fields");
    for attempts in ["4294967295", "-1", "two", "4"] {
        env.xadd(
            data.clone()
                .with(crewq_core::worker::ATTEMPTS_FIELD, attempts),
        )
        .await;
    }
    let calls = Calls::default();
    let worker = env.spawn("w1", counting(&calls, Duration::ZERO));
    env.settled(4).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.total(), 0, "none ran");
    assert_eq!(
        env.reasons().await,
        ["poison:invalid_attempts"; 4],
        "{report:?}"
    );
    assert_eq!(env.pending().await, 0);
}

async fn a_panicking_validator_poisons_its_entry_instead_of_holding_it(env: Env) {
    env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    let calls = Calls::default();
    let mut options = env.options();
    options.validators = Validators::new().with(env.agent.clone(), |t: &Task<Value>| {
        assert_ne!(t.task_id, "task-1", "validator bug");
        Ok(())
    });
    let worker = env.spawn_with("w1", options, counting(&calls, Duration::ZERO));
    env.settled(2).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("the worker survived");
    assert_eq!((calls.of("task-1"), calls.of("task-2")), (0, 1));
    assert_eq!(env.reasons().await, ["poison:panicked"], "{report:?}");
    let letter = &env.dead_letters().await[0];
    assert!(letter.error.contains("validator bug"), "{}", letter.error);
    assert_eq!(env.pending().await, 0);
}

async fn tasks_are_validated_as_the_agent_type_of_their_stream(env: Env) {
    let base = serde_json::to_value(task(1, 3)).expect("json");
    for (n, agent_type) in [(1, "nonexistent"), (2, "report"), (3, "Not A Name!")] {
        let mut claimed = base.clone();
        claimed["task_id"] = json!(format!("task-{n}"));
        claimed["agent_type"] = json!(agent_type);
        env.xadd(Fields::new().with("data", claimed.to_string()))
            .await;
    }
    let calls = Calls::default();
    let mut options = env.options();
    options.validators = Validators::new().with(env.agent.clone(), |_: &Task<Value>| {
        Err("research's validator refuses everything".to_owned())
    });
    let worker = env.spawn_with("w1", options, counting(&calls, Duration::ZERO));
    env.settled(3).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.total(), 0, "{report:?}");
    assert_eq!(env.reasons().await, ["poison:wrong_agent_type"; 3]);
    assert!(
        env.results()
            .await
            .iter()
            .all(|r| r.status != TaskStatus::Success),
        "no success published under another type"
    );
}

async fn an_entry_deleted_while_pending_is_never_silent(env: Env) {
    env.group().await;
    let id = env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    let keys = env.keys();
    // A consumer that died holding both; task-1 is trimmed away meanwhile.
    let read = ReadGroup::new(&keys.tasks, &keys.group, "crashed");
    assert_eq!(env.broker.read_group(&read).await.expect("read").len(), 2);
    env.broker.xdel(&keys.tasks, &[id]).await.expect("xdel");
    // And task-3 is deleted while w1 runs it.
    let running = env.dispatch(&task(3, 3)).await;
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            calls.bump(&t.task_id);
            async move {
                if t.task_id == "task-3" {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Ok::<Value, HandlerError>(json!({}))
            }
        }
    };
    let worker = Worker::new(
        Arc::clone(&env.gate) as Arc<dyn Broker>,
        env.agent.clone(),
        "w1",
        handler,
    )
    .options(env.options())
    .spawn();
    while calls.of("task-3") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    env.broker
        .xdel(&keys.tasks, &[running])
        .await
        .expect("xdel");
    env.settled(3).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    // task-1, deleted while a crashed consumer held it, comes back from
    // XAUTOCLAIM as deleted: dead-lettered with what is known of it.
    assert_eq!(report.vanished, 2, "{report:?}");
    assert_eq!(env.reasons().await, ["deleted_while_pending"; 2]);
    let letters = env.dead_letters().await;
    assert!(
        letters
            .iter()
            .any(|l| l.origin.as_ref().map(|o| o.entry_id) == Some(id))
    );
    // task-3 is deleted while w1 runs it: a renewal cannot renew a deleted
    // entry (nor drops it), so once its lease lapses an XAUTOCLAIM reports
    // it deleted, and dead-letters it in the same atomic step with what the
    // broker knows (its id, stream, group, consumer; not its task). The
    // running attempt's own dead letter, with the task, finds that one's
    // marker and writes nothing twice.
    let kept: Vec<_> = letters
        .iter()
        .filter(|l| l.origin.as_ref().map(|o| o.entry_id) == Some(running))
        .collect();
    assert_eq!(kept.len(), 1, "{letters:?}");
    let origin = kept[0].origin.as_ref().expect("origin");
    assert_eq!((&origin.stream, &origin.group), (&keys.tasks, &keys.group));
    assert_eq!(env.pending().await, 0);
}

/// A handler that blocks its thread past the lease (which handlers must not
/// do) still keeps its lease when the worker runs on a multi-thread
/// runtime: renewals run in a task of their own, not behind the handler.
/// The worker gets a runtime of its own, so the test's checks do not wait
/// on the blocked thread. On Redis only: real time, and a lease that lapses
/// without renewals is reclaimed by the peer (seen failing with renewals
/// switched off).
async fn renewals_go_on_while_a_handler_blocks_its_thread(env: Env) {
    env.group().await;
    env.dispatch(&task(1, 3)).await;
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |t: Task<Value>| {
            calls.bump(&t.task_id);
            async move {
                std::thread::sleep(Duration::from_millis(2000));
                Ok::<Value, HandlerError>(json!({}))
            }
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let worker = {
        let _inside = runtime.enter();
        Worker::new(
            Arc::clone(&env.gate) as Arc<dyn Broker>,
            env.agent.clone(),
            "w1",
            handler,
        )
        .options(env.options())
        .spawn()
    };
    while calls.of("task-1") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keys = env.keys();
    let mut taken = 0;
    while env.results().await.is_empty() {
        let claimed = env
            .broker
            .autoclaim(
                &keys.tasks,
                &keys.group,
                "peer",
                Duration::from_millis(600),
                crewq_core::StreamId::ZERO,
                10,
            )
            .await
            .expect("autoclaim");
        taken += claimed.claimed.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = runtime
        .spawn(worker.shutdown(Duration::from_secs(5)))
        .await
        .expect("join")
        .expect("report");
    runtime.shutdown_background();
    assert_eq!(taken, 0, "the lease was renewed while the handler blocked");
    assert_eq!((report.completed, report.zombies), (1, 0), "{report:?}");
}

mod blocking {
    use super::*;
    use crewq_tests::backends::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn redis_renewals_go_on_while_a_handler_blocks_its_thread() {
        let backend = Backend::redis().await;
        renewals_go_on_while_a_handler_blocks_its_thread(Env::from(backend)).await;
    }
}
