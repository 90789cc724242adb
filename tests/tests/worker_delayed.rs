//! Retries that free their slot (issue 12): a failed attempt's retry waits
//! in the agent type's delayed set, not in the worker's slot, and is
//! promoted into the task stream once due by whichever worker gets there
//! first. Each a named test on the memory backend (paused time), a private
//! Redis and the cluster fixture.

mod worker_common;

use std::time::Duration;

use crewq_core::producer::Producer;
use crewq_core::worker::{Backoff, HandlerError, RetryAfter};
use crewq_core::{Broker, StreamId, Task, TaskStatus};
use serde_json::{Value, json};
use worker_common::{Calls, Env, When, dropped, task};

crewq_tests::on_both_backends!(
    Env:
    a_failed_attempt_frees_its_slot_during_its_back_off,
    a_retry_scheduled_by_a_crashed_worker_runs_on_another,
    a_lost_promote_reply_runs_the_retry_once,
    a_task_dispatched_for_later_runs_once_due,
    dispatching_for_later_is_idempotent_by_task_id,
    a_retry_after_replaces_the_back_off,
);

/// A handler that fails the first attempt of `failing` and succeeds
/// otherwise, counting calls.
fn first_attempt_of(
    failing: &'static str,
    calls: &Calls,
) -> impl Fn(Task<Value>) -> std::future::Ready<Result<Value, HandlerError>>
+ Clone
+ Send
+ Sync
+ 'static {
    let calls = calls.clone();
    move |t: Task<Value>| {
        let attempt = calls.bump(&t.task_id);
        std::future::ready(if t.task_id == failing && attempt == 1 {
            Err("first attempt fails".into())
        } else {
            Ok(json!({ "done": t.task_id }))
        })
    }
}

/// Polls `broker`'s delayed set until it holds `n` members, or panics after
/// 20 s (virtual or real).
async fn delayed_holds(env: &Env, n: u64) {
    let set = env.keys().delayed;
    for _ in 0..4000 {
        if env.broker.delayed_len(&set).await.expect("delayed_len") == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the delayed set never held {n}");
}

/// With one slot and a long back-off, a task dispatched after a failing one
/// completes while the failed one's retry waits in the delayed set: the
/// back-off no longer holds the slot. The retry stays scheduled through the
/// worker's shutdown.
async fn a_failed_attempt_frees_its_slot_during_its_back_off(env: Env) {
    env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    let mut options = env.options().concurrency(1);
    options.backoff = Backoff {
        base: Duration::from_secs(600),
        max: Duration::from_secs(600),
    };
    // Seed 7 draws a wait of minutes, far past this test's polling.
    let calls = Calls::default();
    let worker = env.spawn_with("w1", options, first_attempt_of("task-1", &calls));
    env.settled(1).await;
    let results = env.results().await;
    let ids: Vec<_> = results.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(
        ids,
        ["task-2"],
        "task-2 ran in the slot task-1's back-off would have held"
    );
    assert_eq!(
        env.broker
            .delayed_len(&env.keys().delayed)
            .await
            .expect("len"),
        1
    );
    assert_eq!((calls.of("task-1"), calls.of("task-2")), (1, 1));
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!((report.retried, report.completed), (1, 1), "{report:?}");
    assert_eq!(
        env.broker
            .delayed_len(&env.keys().delayed)
            .await
            .expect("len"),
        1,
        "the retry outlives the worker: it lives in the broker"
    );
}

/// A worker that scheduled a retry and died before promoting it loses
/// nothing: another worker promotes the retry once due and runs it, with
/// its failed attempt counted.
async fn a_retry_scheduled_by_a_crashed_worker_runs_on_another(env: Env) {
    env.dispatch(&task(1, 3)).await;
    // The doomed worker never gets to promote.
    env.gate.fail("promote", When::Before, dropped);
    let calls = Calls::default();
    let doomed = env.spawn("w1", first_attempt_of("task-1", &calls));
    delayed_holds(&env, 1).await;
    doomed.abort();
    env.gate.heal();
    assert_eq!(env.pending().await, 0, "the failed entry was acknowledged");
    let rescuer = env.spawn("w2", first_attempt_of("task-1", &calls));
    env.settled_either(1).await;
    let report = rescuer
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(calls.of("task-1"), 2, "one failed run, one retry");
    let results = env.results().await;
    assert_eq!(results[0].status, TaskStatus::Success);
    assert_eq!(env.attempt_counts().await, [None, Some("1".into())]);
    assert_eq!(
        env.broker
            .delayed_len(&env.keys().delayed)
            .await
            .expect("len"),
        0
    );
}

/// A promote that applied but whose reply was lost moved the retry once:
/// the worker, seeing an error, tries again later and finds nothing more to
/// move, so the retry runs once.
async fn a_lost_promote_reply_runs_the_retry_once(env: Env) {
    env.dispatch(&task(1, 3)).await;
    env.gate.fail("promote", When::After, dropped);
    let calls = Calls::default();
    let worker = env.spawn("w1", first_attempt_of("task-1", &calls));
    env.settled_either(1).await;
    assert!(env.gate.failed("promote") > 0, "promote replies were lost");
    env.gate.heal();
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!((report.retried, report.completed), (1, 1), "{report:?}");
    assert_eq!(calls.of("task-1"), 2);
    assert_eq!(env.results().await.len(), 1);
    assert_eq!(env.broker.xlen(&env.keys().tasks).await.expect("xlen"), 2);
}

fn producer(env: &Env) -> Producer<std::sync::Arc<dyn Broker>> {
    Producer::new(std::sync::Arc::clone(&env.broker)).with_keyspace(env.keyspace.clone())
}

/// A task dispatched for later waits in the delayed set, not in the
/// stream, and runs once due, promoted by a worker.
async fn a_task_dispatched_for_later_runs_once_due(env: Env) {
    env.group().await;
    let calls = Calls::default();
    let worker = env.spawn("w1", first_attempt_of("none", &calls));
    let delay = Duration::from_millis(1500);
    let sent = producer(&env)
        .dispatch_in(&task(1, 3), delay)
        .await
        .expect("dispatch_in");
    assert_eq!((sent.entry_id, sent.duplicate), (StreamId::ZERO, false));
    assert_eq!(env.broker.xlen(&env.keys().tasks).await.expect("xlen"), 0);
    assert_eq!(
        env.broker
            .delayed_len(&env.keys().delayed)
            .await
            .expect("len"),
        1
    );
    env.settled(1).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(calls.of("task-1"), 1);
    assert_eq!(
        env.attempt_counts().await,
        [None],
        "one entry, a first attempt"
    );
}

/// Dispatching the same task id again, for later or now, within the
/// dedupe window adds nothing: one member, no entry.
async fn dispatching_for_later_is_idempotent_by_task_id(env: Env) {
    let producer = producer(&env);
    let later = Duration::from_secs(3600);
    let first = producer
        .dispatch_in(&task(1, 3), later)
        .await
        .expect("first");
    let again = producer
        .dispatch_in(&task(1, 3), later)
        .await
        .expect("again");
    let now = producer.dispatch(&task(1, 3)).await.expect("now");
    assert!(!first.duplicate && again.duplicate && now.duplicate);
    assert_eq!(now.entry_id, StreamId::ZERO, "scheduled, not appended");
    assert_eq!(
        env.broker
            .delayed_len(&env.keys().delayed)
            .await
            .expect("len"),
        1
    );
    assert_eq!(env.broker.xlen(&env.keys().tasks).await.expect("xlen"), 0);
    // And the other way round: dispatched now, then for later.
    let two = producer.dispatch(&task(2, 3)).await.expect("two");
    let two_later = producer
        .dispatch_in(&task(2, 3), later)
        .await
        .expect("later");
    assert_eq!(
        (two_later.duplicate, two_later.entry_id),
        (true, two.entry_id)
    );
    assert_eq!(
        env.broker
            .delayed_len(&env.keys().delayed)
            .await
            .expect("len"),
        1
    );
}

/// A handler's [`RetryAfter`] sets its retry's wait instead of the
/// back-off (here ten minutes): the retry starts after the 300 ms asked
/// for, exactly on the memory backend's virtual clock.
async fn a_retry_after_replaces_the_back_off(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let mut options = env.options();
    options.backoff = Backoff {
        base: Duration::from_secs(600),
        max: Duration::from_secs(600),
    };
    let starts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler = {
        let starts = std::sync::Arc::clone(&starts);
        move |t: Task<Value>| {
            let mut starts = starts.lock().expect("starts");
            starts.push(tokio::time::Instant::now());
            let first = starts.len() == 1;
            std::future::ready(if first {
                Err::<Value, HandlerError>(
                    RetryAfter::new(Duration::from_millis(300), "429 slow down").into(),
                )
            } else {
                Ok(json!({ "done": t.task_id }))
            })
        }
    };
    let worker = env.spawn_with("w1", options, handler);
    env.settled(1).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!((report.retried, report.completed), (1, 1), "{report:?}");
    let starts = starts.lock().expect("starts").clone();
    assert_eq!(starts.len(), 2);
    if env.memory {
        let waited = starts[1] - starts[0];
        assert!(
            waited >= Duration::from_millis(300) && waited <= Duration::from_millis(310),
            "{waited:?}"
        );
    }
}
