//! The handler context (issue 12): attempt numbers, cancellation on
//! shutdown and on a lost lease, extending the lease, non-retryable errors
//! and per-task time-outs; each a named test on the memory backend (paused
//! time) and on a private Redis.

mod worker_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crewq_core::locate::{Locator, Place, Wanted};
use crewq_core::worker::{Context, HandlerError, NonRetryable, with_context};
use crewq_core::{Task, TaskStatus};
use serde_json::{Value, json};
use worker_common::{Calls, Env, When, counting, dropped, task};

crewq_tests::on_both_backends!(
    Env:
    a_handler_sees_its_attempt_and_deliveries,
    shutdown_cancels_running_handlers_and_hands_their_entries_back,
    a_lost_lease_cancels_the_handler_and_its_outcome_is_not_recorded,
    extend_lease_renews_the_entry_while_it_is_ours,
    a_non_retryable_error_dead_letters_at_once_with_its_reason,
    a_tasks_own_timeout_overrides_the_workers,
    progress_is_recorded_and_the_newest_report_is_shown,
);

/// Waits (virtual or real time) until `done`, or panics after 20 s.
async fn until(done: impl Fn() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not done after 20 s");
}

/// Records each call's (attempt, deliveries).
type Seen = Arc<Mutex<Vec<(u32, u64)>>>;

/// Records what `ctx` says of this call.
fn note(seen: &Seen, ctx: &Context) {
    let call = (ctx.attempt(), ctx.deliveries());
    seen.lock().expect("seen").push(call);
}

async fn a_handler_sees_its_attempt_and_deliveries(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    let worker = env.spawn(
        "w1",
        with_context(move |_: Task<Value>, ctx: Context| {
            note(&log, &ctx);
            let attempt = ctx.attempt();
            async move {
                if attempt < 3 {
                    return Err::<Value, HandlerError>("not yet".into());
                }
                Ok(json!({ "attempt": attempt }))
            }
        }),
    );
    env.settled(1).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    // Each retry is a new entry, read as new: delivered once.
    assert_eq!(*seen.lock().expect("seen"), vec![(1, 1), (2, 1), (3, 1)]);
    let results = env.results().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, TaskStatus::Success);
}

async fn shutdown_cancels_running_handlers_and_hands_their_entries_back(env: Env) {
    env.dispatch(&task(1, 0)).await;
    let started = Arc::new(AtomicBool::new(false));
    let wound_down = Arc::new(AtomicBool::new(false));
    let (flag, done) = (Arc::clone(&started), Arc::clone(&wound_down));
    let worker = env.spawn(
        "w1",
        with_context(move |_: Task<Value>, ctx: Context| {
            flag.store(true, Ordering::SeqCst);
            let done = Arc::clone(&done);
            async move {
                ctx.cancelled().await;
                done.store(true, Ordering::SeqCst);
                Err::<Value, HandlerError>("wound down".into())
            }
        }),
    );
    until(|| started.load(Ordering::SeqCst)).await;
    // A long grace: the handler ends at its start, not at its end.
    let report = worker
        .shutdown(Duration::from_secs(30))
        .await
        .expect("report");
    assert!(
        wound_down.load(Ordering::SeqCst),
        "cancelled at the start of the grace, not cut off at its end"
    );
    assert_eq!((report.cancelled, report.handed_back), (1, 0), "{report:?}");
    assert_eq!(report.retried + report.dead_lettered, 0, "{report:?}");
    assert!(env.results().await.is_empty(), "no failure recorded");
    assert!(
        env.dead_letters().await.is_empty(),
        "max_retries 0, yet not dead-lettered"
    );
    assert_eq!(env.pending().await, 1, "left pending for the next worker");
    // The next worker (the same consumer after a restart) runs it as its
    // first attempt, on its second delivery.
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    let worker = env.spawn(
        "w1",
        with_context(move |_: Task<Value>, ctx: Context| {
            note(&log, &ctx);
            async { Ok::<Value, HandlerError>(json!({})) }
        }),
    );
    env.settled(1).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(*seen.lock().expect("seen"), vec![(1, 2)]);
}

async fn a_lost_lease_cancels_the_handler_and_its_outcome_is_not_recorded(env: Env) {
    env.dispatch(&task(1, 3)).await;
    let cancelled = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (flag, start) = (Arc::clone(&cancelled), Arc::clone(&started));
    // w1 never scans for stale entries after its first: it must not take
    // its own entry back from itself while its renewals fail.
    let mut options = env.options();
    options.reclaim_every = Duration::from_secs(3600);
    let stalled = env.spawn_with(
        "w1",
        options,
        with_context(move |_: Task<Value>, ctx: Context| {
            let (flag, start) = (Arc::clone(&flag), Arc::clone(&start));
            async move {
                start.store(true, Ordering::SeqCst);
                ctx.cancelled().await;
                flag.store(true, Ordering::SeqCst);
                // Not ours any more: a late success is not recorded.
                assert_eq!(ctx.extend_lease().await.ok(), Some(false));
                Ok::<Value, HandlerError>(json!({ "by": "w1" }))
            }
        }),
    );
    until(|| started.load(Ordering::SeqCst)).await;
    // w1's renewals fail past the lease; w2 takes the entry over.
    env.gate.fail("renew", When::Before, dropped);
    let calls = Calls::default();
    let peer = env.spawn("w2", counting(&calls, Duration::ZERO));
    until(|| calls.of("task-1") > 0).await;
    env.gate.heal();
    env.settled(1).await;
    until(|| cancelled.load(Ordering::SeqCst)).await;
    let stalled = stalled
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    peer.shutdown(Duration::from_secs(5)).await.expect("report");
    assert_eq!(stalled.zombies, 1, "{stalled:?}");
    assert_eq!(stalled.completed, 0, "{stalled:?}");
    let results = env.results().await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].output, Some(json!({ "done": "task-1" })));
}

async fn extend_lease_renews_the_entry_while_it_is_ours(env: Env) {
    env.dispatch(&task(1, 0)).await;
    // w1 renews by itself only every 20 s; its peer takes over entries idle
    // for 600 ms: only the handler's own renewals keep the entry w1's.
    let mut slow = env.options().lease(Duration::from_secs(60));
    slow.reclaim_every = Duration::from_secs(30);
    let renewed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&renewed);
    let worker = env.spawn_with(
        "w1",
        slow,
        with_context(move |_: Task<Value>, ctx: Context| {
            let log = Arc::clone(&log);
            async move {
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let extended = ctx.extend_lease().await.ok();
                    log.lock().expect("log").push(extended);
                }
                Ok::<Value, HandlerError>(json!({ "by": "w1" }))
            }
        }),
    );
    for _ in 0..400 {
        if env.pending().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = Calls::default();
    let peer = env.spawn("w2", counting(&calls, Duration::ZERO));
    env.settled(1).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    peer.shutdown(Duration::from_secs(5)).await.expect("report");
    assert_eq!(calls.of("task-1"), 0, "the peer never took it over");
    let renewed = renewed.lock().expect("log").clone();
    assert_eq!(renewed, vec![Some(true); 20]);
    let results = env.results().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].output, Some(json!({ "by": "w1" })));
}

async fn a_non_retryable_error_dead_letters_at_once_with_its_reason(env: Env) {
    env.dispatch(&task(1, 5)).await;
    let calls = Calls::default();
    let count = calls.clone();
    let worker = env.spawn("w1", move |t: Task<Value>| {
        count.bump(&t.task_id);
        async { Err::<Value, HandlerError>(NonRetryable::new("no such repository").into()) }
    });
    env.settled_either(1).await;
    let report = worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(calls.of("task-1"), 1, "never retried");
    assert_eq!((report.dead_lettered, report.retried), (1, 0), "{report:?}");
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(env.reasons().await, vec!["non_retryable".to_owned()]);
    assert_eq!(letters[0].error, "no such repository");
    assert_eq!(letters[0].retries, 1);
    let results = env.results().await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, TaskStatus::Failure);
}

async fn a_tasks_own_timeout_overrides_the_workers(env: Env) {
    let short = Task::new("research", "analyze", json!({}))
        .task_id("short")
        .max_retries(0)
        .timeout(Duration::from_millis(200))
        .build()
        .expect("task");
    let long = Task::new("research", "analyze", json!({}))
        .task_id("long")
        .max_retries(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("task");
    env.dispatch(&short).await;
    env.dispatch(&long).await;
    let mut options = env.options();
    options.task_timeout = Some(Duration::from_millis(500));
    let worker = env.spawn_with("w1", options, |_: Task<Value>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<Value, HandlerError>(json!({}))
    });
    env.settled_either(2).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].error, "timed out after 200ms");
    let long = env
        .results()
        .await
        .into_iter()
        .find(|r| r.task_id == "long")
        .expect("long's result");
    assert_eq!(
        long.status,
        TaskStatus::Success,
        "its own 30 s beat the worker's 500 ms"
    );
}

async fn progress_is_recorded_and_the_newest_report_is_shown(env: Env) {
    env.dispatch(&task(1, 3)).await;
    env.dispatch(&task(2, 3)).await;
    let worker = env.spawn(
        "w1",
        with_context(move |_: Task<Value>, ctx: Context| async move {
            for done in 1..=3 {
                ctx.progress(json!({ "done": done, "of": 3 })).await?;
            }
            Ok::<Value, HandlerError>(json!({}))
        }),
    );
    env.settled(2).await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("report");
    let locator = Locator::new(Arc::clone(&env.broker), env.keyspace.clone());
    let found = locator
        .find(
            std::slice::from_ref(&env.agent),
            &Wanted::TaskId("task-2".into()),
        )
        .await
        .expect("find");
    let progress: Vec<_> = found
        .iter()
        .filter_map(|s| match &s.place {
            Place::Progress {
                progress,
                attempt,
                consumer,
                ..
            } => Some((
                s.task_id.as_str(),
                progress.clone(),
                *attempt,
                consumer.as_str(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        progress,
        vec![("task-2", json!({ "done": 3, "of": 3 }), 1, "w1")],
        "the newest report of task-2 alone: {found:?}"
    );
}
